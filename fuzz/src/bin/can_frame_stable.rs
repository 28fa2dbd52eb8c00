//! The `can_frame` fuzz target without libFuzzer, on stable Rust: random inputs (most of them
//! frames on the routed ids with random data, some value descriptions as text) for a number
//! of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin can_frame_stable -- 60
//! cargo run --release --no-default-features --bin can_frame_stable -- artifacts/can_frame/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

/// A selector byte and data of a random length (0..=70), or value-description-like text.
fn input(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![rng.next_u64() as u8];
    match rng.below(5) {
        4 => {
            // A J1939 broadcast (announce + packets) for the reassembler, sometimes broken.
            let size = 9 + rng.below(60);
            let packets = size.div_ceil(7);
            let pgn = [65260u32, 61444, 65262][rng.below(3)].to_le_bytes();
            let declared = if rng.below(8) == 0 {
                rng.next_u64() as u8
            } else {
                packets as u8
            };
            v.extend_from_slice(&[0, 32, size as u8, 0, declared, 0xFF, pgn[0], pgn[1], pgn[2]]);
            for n in 1..=packets {
                let seq = if rng.below(20) == 0 {
                    rng.next_u64() as u8
                } else {
                    n as u8
                };
                v.extend_from_slice(&[1, seq]);
                v.extend((0..7).map(|_| rng.next_u64() as u8));
            }
        }
        0 => {
            const PARTS: [&str; 14] = [
                "0", "1", "2", "-1", "64", "big", "little", "int", "float", "string", "raw",
                "signed", "utf-8", "48059",
            ];
            let n = 2 + rng.below(4);
            let text: Vec<&str> = (0..n).map(|_| PARTS[rng.below(PARTS.len())]).collect();
            v.extend(text.join(":").bytes());
        }
        _ => {
            let len = rng.below(71);
            v.extend((0..len).map(|_| rng.next_u64() as u8));
        }
    }
    v
}

fn main() {
    run("can_frame", tbgw_fuzz::can_frame, input);
}
