//! The `bacnet_apdu` fuzz target without libFuzzer, on stable Rust: random inputs (half of
//! them mutated well-formed datagrams) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin bacnet_apdu_stable -- 60
//! cargo run --release --no-default-features --bin bacnet_apdu_stable -- artifacts/bacnet_apdu/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

/// Well-formed datagrams: an I-Am, a ReadProperty ack, a ReadPropertyMultiple ack with an
/// error, a COV notification, a routed Who-Is, an Error PDU.
const SEEDS: &[&[u8]] = &[
    &[
        0x81, 0x0b, 0, 20, 1, 0, 0x10, 0x00, 0xc4, 0x02, 0, 0x03, 0xe9, 0x22, 0x05, 0xc4, 0x91, 0,
        0x21, 15,
    ],
    &[
        0x81, 0x0a, 0, 23, 1, 0, 0x30, 1, 12, 0x0c, 0x00, 0x80, 0, 1, 0x19, 0x55, 0x3e, 0x44, 0x41,
        0xac, 0, 0, 0x3f,
    ],
    &[
        0x81, 0x0a, 0, 34, 1, 0, 0x30, 2, 14, 0x0c, 0x00, 0x80, 0, 1, 0x1e, 0x29, 0x55, 0x4e, 0x44,
        0x3f, 0xc0, 0, 0, 0x4f, 0x2a, 0x27, 0x0f, 0x5e, 0x91, 2, 0x91, 32, 0x5f, 0x1f,
    ],
    &[
        0x81, 0x0a, 0, 37, 1, 0, 0x10, 0x02, 0x09, 1, 0x1c, 0x02, 0, 0x03, 0xe9, 0x2c, 0x00, 0x80,
        0, 2, 0x39, 60, 0x4e, 0x09, 0x55, 0x2e, 0x44, 0x40, 0xa0, 0, 0, 0x2f, 0x09, 0x6f, 0x2e,
        0x82, 0x04, 0x00, 0x2f, 0x4f,
    ],
    &[
        0x81, 0x0b, 0, 16, 1, 0x28, 0, 2, 1, 5, 0x08, 0, 3, 1, 0x21, 0xff,
    ],
    &[0x81, 0x0a, 0, 11, 1, 0, 0x50, 3, 12, 0x91, 2],
];

fn mutated(rng: &mut Rng) -> Vec<u8> {
    let mut input = SEEDS[rng.below(SEEDS.len())].to_vec();
    if rng.cut(&mut input, 3, 4) {
        let l = input.len() as u16;
        input[2..4].copy_from_slice(&l.to_be_bytes());
    }
    rng.flip(&mut input, 4, 4);
    input
}

fn main() {
    run("bacnet_apdu", tbgw_fuzz::bacnet_apdu, |rng| {
        rng.mix(1, 2, mutated, 300)
    });
}
