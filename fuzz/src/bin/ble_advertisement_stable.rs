//! The `ble_advertisement` fuzz target without libFuzzer, on stable Rust: random inputs (most
//! of them a mutated `valueExpression` and advertisement bytes) for a number of seconds, or
//! replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin ble_advertisement_stable -- 60
//! cargo run --release --no-default-features --bin ble_advertisement_stable -- artifacts/ble_advertisement/crash-*
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
    v.extend((0..rng.below(40)).map(|_| rng.next() as u8));
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
                let data = if rng.below(4) != 0 {
                    input(&mut rng)
                } else {
                    (0..rng.below(100)).map(|_| rng.next() as u8).collect()
                };
                tbgw_fuzz::ble_advertisement(&data);
                runs += 1;
            }
        }
        println!("ble_advertisement: {runs} inputs in {secs} s, no failure");
        return;
    }
    for path in &args {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        tbgw_fuzz::ble_advertisement(&data);
        println!("{path}: ok");
    }
}
