//! The `s7_response` fuzz target without libFuzzer, on stable Rust: random inputs (most of
//! them mutated well-formed ReadVar, WriteVar and setup answers) for a number of seconds, or
//! replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin s7_response_stable -- 60
//! cargo run --release --no-default-features --bin s7_response_stable -- artifacts/s7_response/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

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
                d.extend((0..len).map(|_| rng.next_u64() as u8));
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
    let mut input = vec![n as u8 | ((rng.next_u64() as u8) & 0xe0)];
    input.extend_from_slice(&f);
    rng.cut(&mut input, 3, 0);
    rng.flip(&mut input, 1, 3);
    input
}

fn main() {
    run("s7_response", tbgw_fuzz::s7_response, |rng| {
        rng.mix(3, 4, mutated_answer, 300)
    });
}
