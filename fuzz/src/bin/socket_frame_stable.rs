//! The `socket_frame` fuzz target without libFuzzer, on stable Rust: random inputs (half of
//! them mutated well-formed streams) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin socket_frame_stable -- 60
//! cargo run --release --no-default-features --bin socket_frame_stable -- artifacts/socket_frame/crash-*
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

/// Messages a device could send (text, numbers, attribute requests, binary), framed by the
/// framing byte 0 selects, then cut and bit-flipped.
fn mutated_stream(rng: &mut Rng) -> Vec<u8> {
    let f = rng.next() as u8;
    let mut input = vec![f, rng.next() as u8, rng.next() as u8];
    let words: [&[u8]; 8] = [
        b"21.5",
        b"true",
        b"arname,x",
        b"{\"a\":1}",
        b"\x00\x01\x02\x03\x04\x05\x06\x07",
        b"ff00",
        "h\u{e9}".as_bytes(),
        b"\xff\xfe",
    ];
    for _ in 0..rng.below(6) {
        let w = words[rng.below(words.len())];
        match f % 8 {
            1 => {
                input.extend_from_slice(w);
                input.push(b'\n');
            }
            2 => {
                input.extend_from_slice(w);
                input.extend_from_slice(b"\r\n");
            }
            k @ 4..=7 => {
                let bytes = [1, 2, 4, 1][usize::from(k - 4)];
                let len = (w.len() + if f & 16 != 0 { bytes } else { 0 }) as u64;
                let be = len.to_be_bytes();
                let mut p = be[8 - bytes..].to_vec();
                if f & 8 != 0 {
                    p.reverse();
                }
                input.extend_from_slice(&p);
                input.extend_from_slice(w);
            }
            _ => input.extend_from_slice(w),
        }
    }
    if rng.below(2) == 0 && input.len() > 3 {
        let keep = 3 + rng.below(input.len() - 3);
        input.truncate(keep);
    }
    for _ in 0..rng.below(3) {
        if input.len() > 3 {
            let i = 3 + rng.below(input.len() - 3);
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
                    mutated_stream(&mut rng)
                } else {
                    (0..rng.below(300)).map(|_| rng.next() as u8).collect()
                };
                tbgw_fuzz::socket_frame(&input);
                runs += 1;
            }
        }
        println!("socket_frame: {runs} inputs in {secs} s, no failure");
        return;
    }
    for path in &args {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        tbgw_fuzz::socket_frame(&data);
        println!("{path}: ok");
    }
}
