//! The `modbus_response` fuzz target without libFuzzer, on stable Rust: random inputs (half of
//! them mutated valid frames) for a number of seconds, or replay of files (a corpus, a crash).
//!
//! ```text
//! cargo run --release --no-default-features --bin modbus_response_stable -- 60
//! cargo run --release --no-default-features --bin modbus_response_stable -- artifacts/modbus_response/crash-*
//! ```

use tbgw_connectors::modbus::codec::{encode_frame, encode_response, Framing, Request, Response};
use tbgw_fuzz::stable::{run, Rng};

/// A valid answer to a random request, framed, then cut and bit-flipped.
fn mutated_frame(rng: &mut Rng) -> Vec<u8> {
    let sel = rng.next_u64() as u8;
    let fc_sel = rng.next_u64() as u8 % 8;
    let (address, n) = (rng.next_u64() as u16, rng.next_u64() as u16);
    let mut input = vec![sel, fc_sel];
    input.extend_from_slice(&address.to_be_bytes());
    input.extend_from_slice(&n.to_be_bytes());
    let req = tbgw_fuzz::request(&input[1..]);
    let resp = match &req {
        Request::Read { fc, count, .. } if *fc <= 2 => Ok(Response::Bits(
            (0..*count).map(|_| rng.next_u64() & 1 == 1).collect(),
        )),
        Request::Read { count, .. } => Ok(Response::Registers(
            (0..*count).map(|_| rng.next_u64() as u16).collect(),
        )),
        _ if rng.below(4) == 0 => Err(2),
        _ => Ok(Response::Written),
    };
    let mut pdu = Vec::new();
    encode_response(&req, &resp, &mut pdu);
    let framing = [Framing::Mbap, Framing::Rtu, Framing::Ascii][usize::from(sel % 3)];
    let mut wire = Vec::new();
    for _ in 0..=rng.below(2) {
        encode_frame(framing, rng.next_u64() as u16, 1, &pdu, &mut wire);
    }
    rng.cut(&mut wire, 2, 0);
    rng.flip(&mut wire, 0, 3);
    input.extend_from_slice(&wire);
    input
}

fn main() {
    run("modbus_response", tbgw_fuzz::modbus_response, |rng| {
        rng.mix(1, 2, mutated_frame, 600)
    });
}
