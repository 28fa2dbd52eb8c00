//! The `snmp_message` fuzz target without libFuzzer, on stable Rust: random inputs (half of
//! them mutated valid SNMP messages: v2c answers, v2c traps and informs, v1 traps) for a number
//! of seconds, or replay of files (a corpus, a crash).
//!
//! ```text
//! cargo run --release --no-default-features --bin snmp_message_stable -- 60
//! cargo run --release --no-default-features --bin snmp_message_stable -- artifacts/snmp_message/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

/// A BER tag-length-value (definite lengths, short or long form).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn int(tag: u8, v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    tlv(tag, &bytes[start..])
}

fn oid(parts: &[u64]) -> Vec<u8> {
    let mut body = vec![(parts[0] * 40 + parts[1]) as u8];
    for &p in &parts[2..] {
        let mut chunk = vec![(p & 0x7f) as u8];
        let mut rest = p >> 7;
        while rest > 0 {
            chunk.push(((rest & 0x7f) as u8) | 0x80);
            rest >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    tlv(0x06, &body)
}

/// A random value of one of the SNMP types.
fn value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(9) {
        0 => int(0x02, rng.next_u64() as i64 >> rng.below(64)),
        1 => tlv(
            0x04,
            &(0..rng.below(40))
                .map(|_| rng.next_u64() as u8)
                .collect::<Vec<_>>(),
        ),
        2 => oid(&[1, 3, 6, 1, rng.next_u64() % 300, rng.next_u64() % 5]),
        3 => tlv(0x40, &[10, 0, 0, rng.next_u64() as u8]),
        4 => int(0x41, (rng.next_u64() % (1 << 32)) as i64),
        5 => int(0x43, (rng.next_u64() % (1 << 32)) as i64),
        6 => int(0x46, (rng.next_u64() >> 1) as i64),
        7 => tlv(0x80 + rng.below(3) as u8, &[]),
        _ => tlv(0x05, &[]),
    }
}

/// A valid message (answer, v2c trap or inform, v1 trap), then cut and bit-flipped.
fn mutated_message(rng: &mut Rng) -> Vec<u8> {
    let mut binds = Vec::new();
    for i in 0..rng.below(12) {
        let mut vb = oid(&[1, 3, 6, 1, 2, 1, 2, 2, 1, 1 + rng.next_u64() % 4, i as u64]);
        vb.extend(value(rng));
        binds.extend(tlv(0x30, &vb));
    }
    let binds = tlv(0x30, &binds);
    let kind = rng.below(4);
    let pdu = if kind == 3 {
        let mut body = oid(&[1, 3, 6, 1, 4, 1, 8072, 2, 3]);
        body.extend(tlv(0x40, &[127, 0, 0, 1]));
        body.extend(int(0x02, rng.below(7) as i64));
        body.extend(int(0x02, rng.below(100) as i64));
        body.extend(int(0x43, rng.below(100_000) as i64));
        body.extend(binds);
        tlv(0xa4, &body)
    } else {
        let mut body = int(0x02, rng.next_u64() as i32 as i64);
        body.extend(int(0x02, rng.below(3) as i64));
        body.extend(int(0x02, rng.below(3) as i64));
        body.extend(binds);
        tlv([0xa2, 0xa7, 0xa6][kind], &body)
    };
    let mut msg = int(0x02, if kind == 3 { 0 } else { 1 });
    msg.extend(tlv(0x04, b"public"));
    msg.extend(pdu);
    let mut wire = tlv(0x30, &msg);
    rng.cut(&mut wire, 2, 0);
    rng.flip(&mut wire, 0, 3);
    wire
}

fn main() {
    run("snmp_message", tbgw_fuzz::snmp_message, |rng| {
        rng.mix(1, 2, mutated_message, 600)
    });
}
