//! The `knx_frame` fuzz target without libFuzzer, on stable Rust: random inputs (most of
//! them mutated well-formed tunnelling requests, routing indications and other KNXnet/IP
//! frames) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin knx_frame_stable -- 60
//! cargo run --release --no-default-features --bin knx_frame_stable -- artifacts/knx_frame/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

/// A well-formed frame (a tunnelling request or routing indication with a group telegram,
/// a connect response, an ack, a search response), then cut, bit-flipped or with a length
/// changed.
fn mutated_frame(rng: &mut Rng) -> Vec<u8> {
    let mut cemi = vec![
        [0x29u8, 0x2E, 0x11][rng.below(3)],
        0,
        0xBC,
        0xE0,
        0x11,
        0x01,
        rng.next_u64() as u8,
        rng.next_u64() as u8,
    ];
    let data_len = rng.below(16);
    cemi.push((1 + data_len) as u8);
    cemi.push(0);
    cemi.push([0x00u8, 0x40, 0x80][rng.below(3)] | (rng.next_u64() as u8 & 0x3F));
    cemi.extend((0..data_len).map(|_| rng.next_u64() as u8));
    let (service, body): (u16, Vec<u8>) = match rng.below(5) {
        0 => {
            let mut b = vec![4, 1, rng.next_u64() as u8, 0];
            b.extend_from_slice(&cemi);
            (0x0420, b)
        }
        1 => (0x0530, cemi.clone()),
        2 => (
            0x0206,
            vec![1, 0, 8, 1, 127, 0, 0, 1, 0x0e, 0x57, 4, 4, 0x11, 0x0a],
        ),
        3 => (0x0421, vec![4, 1, rng.next_u64() as u8, 0]),
        _ => {
            let mut b = vec![8, 1, 127, 0, 0, 1, 0x0e, 0x57, 54, 1, 2, 0, 0x11, 0];
            b.extend(std::iter::repeat_n(0u8, 18));
            b.extend(b"knxd".iter().copied().chain(std::iter::repeat_n(0u8, 26)));
            b.extend_from_slice(&[6, 2, 2, 1, 4, 1]);
            (0x0202, b)
        }
    };
    let total = 6 + body.len();
    let mut input = vec![rng.next_u64() as u8 & 0xFE];
    input.extend_from_slice(&[6, 0x10]);
    input.extend_from_slice(&service.to_be_bytes());
    input.extend_from_slice(&(total as u16).to_be_bytes());
    input.extend_from_slice(&body);
    if rng.below(8) == 0 {
        // The bare cEMI instead.
        input = vec![1];
        input.extend_from_slice(&cemi);
    }
    rng.cut(&mut input, 3, 0);
    rng.flip(&mut input, 1, 3);
    input
}

fn main() {
    run("knx_frame", tbgw_fuzz::knx_frame, |rng| {
        rng.mix(3, 4, mutated_frame, 100)
    });
}
