//! The `can_frame` fuzz target without libFuzzer, on stable Rust: random inputs (most of them
//! frames on the routed ids with random data, some value descriptions as text) for a number
//! of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin can_frame_stable -- 60
//! cargo run --release --no-default-features --bin can_frame_stable -- artifacts/can_frame/crash-*
//! ```

use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A selector byte and data of a random length (0..=70), or value-description-like text.
fn input(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![rng.next() as u8];
    match rng.below(5) {
        4 => {
            // A J1939 broadcast (announce + packets) for the reassembler, sometimes broken.
            let size = 9 + rng.below(60);
            let packets = size.div_ceil(7);
            let pgn = [65260u32, 61444, 65262][rng.below(3)].to_le_bytes();
            let declared = if rng.below(8) == 0 {
                rng.next() as u8
            } else {
                packets as u8
            };
            v.extend_from_slice(&[0, 32, size as u8, 0, declared, 0xFF, pgn[0], pgn[1], pgn[2]]);
            for n in 1..=packets {
                let seq = if rng.below(20) == 0 {
                    rng.next() as u8
                } else {
                    n as u8
                };
                v.extend_from_slice(&[1, seq]);
                v.extend((0..7).map(|_| rng.next() as u8));
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
            v.extend((0..len).map(|_| rng.next() as u8));
        }
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(secs) = args.first().and_then(|a| a.parse::<u64>().ok()) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
        let end = Instant::now() + Duration::from_secs(secs);
        let mut runs = 0u64;
        while Instant::now() < end {
            for _ in 0..1000 {
                tbgw_fuzz::can_frame(&input(&mut rng));
                runs += 1;
            }
        }
        println!("can_frame: {runs} inputs in {secs} s, no failure");
        return;
    }
    for path in &args {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        tbgw_fuzz::can_frame(&data);
        println!("{path}: ok");
    }
}
