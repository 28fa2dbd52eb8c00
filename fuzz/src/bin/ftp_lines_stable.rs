//! The `ftp_lines` fuzz target without libFuzzer, on stable Rust: random inputs (most of them
//! mutated valid files) for a number of seconds, or replay of files (a corpus, a crash).
//!
//! ```text
//! cargo run --release --no-default-features --bin ftp_lines_stable -- 60
//! cargo run --release --no-default-features --bin ftp_lines_stable -- artifacts/ftp_lines/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

const SEEDS: [&str; 3] = [
    "name;a;b;c;d;e\r\ndev;1;2;3.5;true;1700000000\nx;;;;\n;;;;;;;\ndev;\u{e9};-7;1e400;maybe;2024-01-15T10:30:00Z\n",
    "1234567890abc\n\u{1F600}\u{1F600}12\n\n9\r\n-1,2,3\n",
    "[{\"name\": \"n\", \"k\": \"key\", \"v\": {\"x\": [1]}, \"a\": {\"b\": [\"2.5\"]}, \"u\": \"yes\", \"ts\": 1700000000}, {\"name\": 5}, 3, null]",
];

/// Bytes that mean something to one of the three converters.
const INSERTS: &[u8] = b";,\n\r[]{}:\"$0123456789-.";

/// A seed file with bytes flipped, inserted, removed or cut, led by its selector byte.
fn mutated(rng: &mut Rng) -> Vec<u8> {
    let sel = rng.below(3);
    let mut v = SEEDS[sel].as_bytes().to_vec();
    for _ in 0..rng.below(6) {
        let i = rng.below(v.len() + 1);
        match rng.below(4) {
            0 if i < v.len() => v[i] ^= 1 << rng.below(8),
            1 => v.insert(i, INSERTS[rng.below(INSERTS.len())]),
            2 if i < v.len() => {
                v.remove(i);
            }
            _ => v.truncate(i),
        }
    }
    let mut input = vec![sel as u8 + 3 * rng.below(80) as u8];
    input.extend_from_slice(&v);
    input
}

fn main() {
    run("ftp_lines", tbgw_fuzz::ftp_lines, |rng| {
        rng.mix(3, 4, mutated, 400)
    });
}
