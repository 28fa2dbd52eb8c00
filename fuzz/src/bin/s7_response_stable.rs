//! The `s7_response` fuzz target without libFuzzer, on stable Rust: random inputs (most of
//! them mutated well-formed ReadVar, WriteVar and setup answers) for a number of seconds, or
//! replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin s7_response_stable -- 60
//! cargo run --release --no-default-features --bin s7_response_stable -- artifacts/s7_response/crash-*
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

/// A well-formed acknowledgement to request 1 (setup, ReadVar with items, or WriteVar), then
/// cut, bit-flipped or with a length field changed.
fn mutated_answer(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(5);
    let (params, data): (Vec<u8>, Vec<u8>) = match rng.below(3) {
        0 => (vec![0xf0, 0, 0, 1, 0, 1, 1, 0xe0], vec![]),
        1 => {
            let mut d = Vec::new();
            for i in 0..n {
                let len = rng.below(12);
                let ts = [3u8, 4, 5, 7, 9][rng.below(5)];
                let bits = if matches!(ts, 7 | 9) { len } else { len * 8 };
                d.extend_from_slice(&[0xff, ts, (bits >> 8) as u8, bits as u8]);
                d.extend((0..len).map(|_| rng.next() as u8));
                if len % 2 == 1 && i + 1 < n {
                    d.push(0);
                }
            }
            (vec![4, n as u8], d)
        }
        _ => (vec![5, n as u8], (0..n).map(|_| 0xff).collect()),
    };
    let s7_len = 12 + params.len() + data.len();
    let total = 7 + s7_len;
    let mut f = vec![
        3,
        0,
        (total >> 8) as u8,
        total as u8,
        2,
        0xf0,
        0x80,
        0x32,
        3,
        0,
        0,
        0,
        1,
    ];
    f.extend_from_slice(&(params.len() as u16).to_be_bytes());
    f.extend_from_slice(&(data.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&params);
    f.extend_from_slice(&data);
    let mut input = vec![n as u8 | ((rng.next() as u8) & 0xe0)];
    input.extend_from_slice(&f);
    if rng.below(3) == 0 {
        let keep = rng.below(input.len() + 1);
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
                let input = if rng.below(4) != 0 {
                    mutated_answer(&mut rng)
                } else {
                    (0..rng.below(300)).map(|_| rng.next() as u8).collect()
                };
                tbgw_fuzz::s7_response(&input);
                runs += 1;
            }
        }
        println!("s7_response: {runs} inputs in {secs} s, no failure");
        return;
    }
    for path in &args {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        tbgw_fuzz::s7_response(&data);
        println!("{path}: ok");
    }
}
