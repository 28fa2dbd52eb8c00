//! The `xmpp_body` fuzz target without libFuzzer, on stable Rust: random inputs (half of them
//! mutated JSON bodies) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin xmpp_body_stable -- 60
//! cargo run --release --no-default-features --bin xmpp_body_stable -- artifacts/xmpp_body/crash-*
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
    let mut input = vec![rng.next() as u8];
    input.extend_from_slice(s.as_bytes());
    if rng.below(3) == 0 && input.len() > 1 {
        let keep = 1 + rng.below(input.len() - 1);
        input.truncate(keep);
    }
    for _ in 0..rng.below(3) {
        if input.len() > 1 {
            let i = 1 + rng.below(input.len() - 1);
            input[i] ^= 1 << rng.below(8);
        }
    }
    input
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(secs) = args.first().and_then(|a| a.parse::<u64>().ok()) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
        let end = Instant::now() + Duration::from_secs(secs);
        let mut runs = 0u64;
        while Instant::now() < end {
            for _ in 0..1000 {
                let input = if rng.below(2) == 0 {
                    mutated_body(&mut rng)
                } else {
                    (0..rng.below(300)).map(|_| rng.next() as u8).collect()
                };
                tbgw_fuzz::xmpp_body(&input);
                runs += 1;
            }
        }
        println!("xmpp_body: {runs} inputs in {secs} s, no failure");
        return;
    }
    for path in &args {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        tbgw_fuzz::xmpp_body(&data);
        println!("{path}: ok");
    }
}
