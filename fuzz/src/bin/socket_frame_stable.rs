//! The `socket_frame` fuzz target without libFuzzer, on stable Rust: random inputs (half of
//! them mutated well-formed streams) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin socket_frame_stable -- 60
//! cargo run --release --no-default-features --bin socket_frame_stable -- artifacts/socket_frame/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

/// Messages a device could send (text, numbers, attribute requests, binary), framed by the
/// framing byte 0 selects, then cut and bit-flipped.
fn mutated_stream(rng: &mut Rng) -> Vec<u8> {
    let f = rng.next_u64() as u8;
    let mut input = vec![f, rng.next_u64() as u8, rng.next_u64() as u8];
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
    rng.cut(&mut input, 2, 3);
    rng.flip(&mut input, 3, 3);
    input
}

fn main() {
    run("socket_frame", tbgw_fuzz::socket_frame, |rng| {
        rng.mix(1, 2, mutated_stream, 300)
    });
}
