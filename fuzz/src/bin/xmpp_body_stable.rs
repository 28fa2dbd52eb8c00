//! The `xmpp_body` fuzz target without libFuzzer, on stable Rust: random inputs (half of them
//! mutated JSON bodies) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin xmpp_body_stable -- 60
//! cargo run --release --no-default-features --bin xmpp_body_stable -- artifacts/xmpp_body/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

/// A JSON body a device could send, then cut and bit-flipped.
fn mutated_body(rng: &mut Rng) -> Vec<u8> {
    let keys = [
        "serialNumber",
        "id",
        "temp",
        "hum",
        "ts",
        "type",
        "key",
        "list",
        "a",
        "v",
        "b",
    ];
    let values = [
        "\"SN-1\"",
        "21.5",
        "true",
        "null",
        "[1,2,3]",
        "{\"b\":[\"x\"]}",
        "1700000000000",
        "\"\"",
        "-1e400",
        "\"h\\u00e9\"",
    ];
    let mut s = String::from("{");
    for i in 0..rng.below(7) {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "\"{}\":{}",
            keys[rng.below(keys.len())],
            values[rng.below(values.len())]
        ));
    }
    s.push('}');
    let mut input = vec![rng.next_u64() as u8];
    input.extend_from_slice(s.as_bytes());
    rng.cut(&mut input, 3, 1);
    rng.flip(&mut input, 1, 3);
    input
}

fn main() {
    run("xmpp_body", tbgw_fuzz::xmpp_body, |rng| {
        rng.mix(1, 2, mutated_body, 300)
    });
}
