//! The `ble_advertisement` fuzz target without libFuzzer, on stable Rust: random inputs (most
//! of them a mutated `valueExpression` and advertisement bytes) for a number of seconds, or
//! replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin ble_advertisement_stable -- 60
//! cargo run --release --no-default-features --bin ble_advertisement_stable -- artifacts/ble_advertisement/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

const PIECES: [&str; 16] = [
    "[", "]", ":", "-", "0", "1", "2", "9", "[0:2]", "[2]", "[:]", "[-1]", "[3:]", " ", "x", "é",
];

/// A `valueExpression` of likely pieces, a 0 byte, then random bytes.
fn input(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..rng.below(12) {
        v.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
    }
    if rng.below(8) == 0 {
        v.extend_from_slice(b"99999999999999999999");
    }
    v.push(0);
    v.extend((0..rng.below(40)).map(|_| rng.next_u64() as u8));
    v
}

fn main() {
    run("ble_advertisement", tbgw_fuzz::ble_advertisement, |rng| {
        rng.mix(3, 4, input, 100)
    });
}
