//! The `modbus_response` fuzz target without libFuzzer, on stable Rust: random inputs (half of
//! them mutated valid frames) for a number of seconds, or replay of files (a corpus, a crash).
//!
//! ```text
//! cargo run --release --no-default-features --bin modbus_response_stable -- 60
//! cargo run --release --no-default-features --bin modbus_response_stable -- artifacts/modbus_response/crash-*
//! ```

use std::time::{Duration, Instant};

use tbgw_connectors::modbus::codec::{encode_frame, encode_response, Framing, Request, Response};

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

/// A valid answer to a random request, framed, then cut and bit-flipped.
fn mutated_frame(rng: &mut Rng) -> Vec<u8> {
    let sel = rng.next() as u8;
    let fc_sel = rng.next() as u8 % 8;
    let (address, n) = (rng.next() as u16, rng.next() as u16);
    let mut input = vec![sel, fc_sel];
    input.extend_from_slice(&address.to_be_bytes());
    input.extend_from_slice(&n.to_be_bytes());
    let req = tbgw_fuzz::request(&input[1..]);
    let resp = match &req {
        Request::Read { fc, count, .. } if *fc <= 2 => Ok(Response::Bits(
            (0..*count).map(|_| rng.next() & 1 == 1).collect(),
        )),
        Request::Read { count, .. } => Ok(Response::Registers(
            (0..*count).map(|_| rng.next() as u16).collect(),
        )),
        _ if rng.below(4) == 0 => Err(2),
        _ => Ok(Response::Written),
    };
    let mut pdu = Vec::new();
    encode_response(&req, &resp, &mut pdu);
    let framing = [Framing::Mbap, Framing::Rtu, Framing::Ascii][usize::from(sel % 3)];
    let mut wire = Vec::new();
    for _ in 0..=rng.below(2) {
        encode_frame(framing, rng.next() as u16, 1, &pdu, &mut wire);
    }
    if rng.below(2) == 0 {
        wire.truncate(rng.below(wire.len() + 1));
    }
    for _ in 0..rng.below(3) {
        if !wire.is_empty() {
            let i = rng.below(wire.len());
            wire[i] ^= 1 << rng.below(8);
        }
    }
    input.extend_from_slice(&wire);
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
                    mutated_frame(&mut rng)
                } else {
                    (0..rng.below(600)).map(|_| rng.next() as u8).collect()
                };
                tbgw_fuzz::modbus_response(&input);
                runs += 1;
            }
        }
        println!("modbus_response: {runs} inputs in {secs} s, no failure");
        return;
    }
    for path in &args {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        tbgw_fuzz::modbus_response(&data);
        println!("{path}: ok");
    }
}
