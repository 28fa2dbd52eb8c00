//! Table tests of the pure codec, plus a deterministic fuzz test of every decoder.

use super::*;
use serde_json::json;

fn spec(ty: &str, count: u16, byte: Order, word: Order) -> ValueSpec {
    let mut s = ValueSpec::new(ValueType::parse(ty, count).expect("known type"), count);
    s.byte_order = byte;
    s.word_order = word;
    s
}

#[test]
fn request_pdus_match_the_modbus_specification() {
    let cases: Vec<(Request, Vec<u8>)> = vec![
        (
            Request::Read {
                fc: 1,
                address: 0x13,
                count: 0x13,
            },
            vec![0x01, 0x00, 0x13, 0x00, 0x13],
        ),
        (
            Request::Read {
                fc: 3,
                address: 0x6B,
                count: 3,
            },
            vec![0x03, 0x00, 0x6B, 0x00, 0x03],
        ),
        (
            Request::WriteSingleCoil {
                address: 0xAC,
                value: true,
            },
            vec![0x05, 0x00, 0xAC, 0xFF, 0x00],
        ),
        (
            Request::WriteSingleRegister {
                address: 1,
                value: 3,
            },
            vec![0x06, 0x00, 0x01, 0x00, 0x03],
        ),
        (
            Request::WriteMultipleCoils {
                address: 0x13,
                values: vec![
                    true, false, true, true, false, false, true, true, true, false,
                ],
            },
            vec![0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01],
        ),
        (
            Request::WriteMultipleRegisters {
                address: 1,
                values: vec![0x000A, 0x0102],
            },
            vec![0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02],
        ),
    ];
    for (req, bytes) in cases {
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(out, bytes, "{req:?}");
        assert_eq!(Request::decode(&bytes), Ok(req.clone()), "decode {bytes:?}");
    }
}

#[test]
fn responses_decode_values_exceptions_and_reject_mismatches() {
    let read_coils = Request::Read {
        fc: 1,
        address: 0,
        count: 10,
    };
    assert_eq!(
        decode_response(&read_coils, &[0x01, 0x02, 0xCD, 0x01]),
        Ok(Ok(Response::Bits(vec![
            true, false, true, true, false, false, true, true, true, false
        ])))
    );
    let read_regs = Request::Read {
        fc: 3,
        address: 0,
        count: 2,
    };
    assert_eq!(
        decode_response(&read_regs, &[0x03, 0x04, 0x02, 0x2B, 0x00, 0x64]),
        Ok(Ok(Response::Registers(vec![0x022B, 0x0064])))
    );
    assert_eq!(decode_response(&read_regs, &[0x83, 0x02]), Ok(Err(2)));
    assert!(matches!(
        decode_response(&read_regs, &[0x04, 0x04, 0, 0, 0, 0]),
        Err(CodecError::Malformed { .. })
    ));
    assert!(matches!(
        decode_response(&read_regs, &[0x03, 0x02, 0, 0]),
        Err(CodecError::Malformed { .. })
    ));
    assert_eq!(
        decode_response(&read_regs, &[0x03, 0x04, 0, 0]),
        Err(CodecError::Truncated("read response"))
    );
    let write = Request::WriteSingleRegister {
        address: 7,
        value: 1,
    };
    assert_eq!(
        decode_response(&write, &[0x06, 0x00, 0x07, 0x00, 0x01]),
        Ok(Ok(Response::Written))
    );
    assert!(decode_response(&write, &[0x06, 0x00, 0x08, 0x00, 0x01]).is_err());
}

#[test]
fn server_side_requests_out_of_spec_get_the_right_exception() {
    assert_eq!(
        Request::decode(&[0x03, 0, 0, 0, 0]),
        Err(ILLEGAL_DATA_VALUE)
    );
    assert_eq!(
        Request::decode(&[0x03, 0, 0, 0, 126]),
        Err(ILLEGAL_DATA_VALUE)
    );
    assert_eq!(Request::decode(&[0x2B, 0x0E]), Err(ILLEGAL_FUNCTION));
    assert_eq!(
        Request::decode(&[0x05, 0, 1, 0x12, 0x34]),
        Err(ILLEGAL_DATA_VALUE)
    );
    assert_eq!(
        Request::decode(&[0x10, 0, 1, 0, 2, 3, 0, 1, 2]),
        Err(ILLEGAL_DATA_VALUE)
    );
    let req = Request::Read {
        fc: 3,
        address: 0,
        count: 1,
    };
    let mut out = Vec::new();
    encode_response(&req, &Err(2), &mut out);
    assert_eq!(out, vec![0x83, 0x02]);
    let w = Request::WriteMultipleRegisters {
        address: 5,
        values: vec![1, 2],
    };
    let mut out = Vec::new();
    encode_response(&w, &Ok(Response::Written), &mut out);
    assert_eq!(out, vec![0x10, 0x00, 0x05, 0x00, 0x02]);
}

#[test]
fn frames_round_trip_in_all_three_framings() {
    let pdu = [0x03, 0x00, 0x00, 0x00, 0x0A];
    // Known vectors: RTU `01 03 00 00 00 0A C5 CD`; ASCII `:010300000001FB`.
    let mut rtu = Vec::new();
    encode_frame(Framing::Rtu, 0, 1, &pdu, &mut rtu);
    assert_eq!(rtu, vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]);
    let mut ascii = Vec::new();
    encode_frame(Framing::Ascii, 0, 1, &[0x03, 0, 0, 0, 1], &mut ascii);
    assert_eq!(ascii, b":010300000001FB\r\n".to_vec());
    let mut mbap = Vec::new();
    encode_frame(Framing::Mbap, 0x1234, 7, &pdu, &mut mbap);
    assert_eq!(mbap, vec![0x12, 0x34, 0, 0, 0, 6, 7, 0x03, 0, 0, 0, 0x0A]);

    for (framing, bytes) in [
        (Framing::Rtu, rtu),
        (Framing::Ascii, ascii),
        (Framing::Mbap, mbap),
    ] {
        let f = decode_frame(framing, Direction::Request, &bytes)
            .expect("valid")
            .expect("complete");
        assert_eq!(f.len, bytes.len(), "{framing:?}");
        // Every strict prefix asks for more bytes instead of failing.
        for cut in 0..bytes.len() {
            assert_eq!(
                decode_frame(framing, Direction::Request, &bytes[..cut]),
                Ok(None),
                "{framing:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn corrupted_frames_fail_their_checksum() {
    let mut rtu = Vec::new();
    encode_frame(Framing::Rtu, 0, 1, &[0x03, 0x02, 0x00, 0x05], &mut rtu);
    rtu[3] ^= 1;
    assert_eq!(
        decode_frame(Framing::Rtu, Direction::Response, &rtu),
        Err(CodecError::Checksum("RTU CRC"))
    );
    assert_eq!(
        decode_frame(Framing::Ascii, Direction::Response, b":010300000001FC\r\n"),
        Err(CodecError::Checksum("ASCII LRC"))
    );
    assert!(decode_frame(
        Framing::Mbap,
        Direction::Response,
        &[0, 1, 0, 9, 0, 3, 1, 3, 0]
    )
    .is_err());
}

#[test]
fn rtu_response_lengths_follow_the_function_code() {
    for (pdu, unit) in [
        (vec![0x83u8, 0x02], 1u8),
        (vec![0x01, 0x01, 0x05], 2),
        (vec![0x04, 0x02, 0x00, 0x07], 3),
        (vec![0x0F, 0x00, 0x01, 0x00, 0x08], 4),
    ] {
        let mut f = Vec::new();
        encode_frame(Framing::Rtu, 0, unit, &pdu, &mut f);
        // A trailing byte of the next frame must not be swallowed.
        f.push(0xAA);
        let got = decode_frame(Framing::Rtu, Direction::Response, &f)
            .expect("valid")
            .expect("complete");
        assert_eq!((got.unit, got.pdu, got.len), (unit, pdu, f.len() - 1));
    }
}

/// (type, objects count, byte order, word order, registers, expected value).
type DecodeCase = (&'static str, u16, Order, Order, Vec<u16>, Value);

#[test]
fn register_values_decode_for_every_type_and_order() {
    use Order::{Big as B, Little as L};
    let f32_bits = 1.5f32.to_bits();
    let (hi, lo) = ((f32_bits >> 16) as u16, f32_bits as u16);
    let cases: Vec<DecodeCase> = vec![
        ("16int", 1, B, L, vec![0xFFFE], Value::Int(-2)),
        ("16uint", 1, B, L, vec![0xFFFE], Value::Int(65534)),
        ("16int", 1, L, L, vec![0x0100], Value::Int(1)),
        ("8int", 1, B, B, vec![0x00FF], Value::Int(-1)),
        ("8uint", 1, B, B, vec![0x00FF], Value::Int(255)),
        ("8uint", 1, L, B, vec![0x1200], Value::Int(0x12)),
        ("32int", 2, B, B, vec![0xFFFF, 0xFFFD], Value::Int(-3)),
        ("32int", 2, B, L, vec![0xFFFD, 0xFFFF], Value::Int(-3)),
        ("32uint", 2, B, B, vec![0x0001, 0x0000], Value::Int(65536)),
        ("32uint", 2, L, B, vec![0x0100, 0x0000], Value::Int(65536)),
        ("32float", 2, B, B, vec![hi, lo], Value::Float(1.5)),
        ("32float", 2, B, L, vec![lo, hi], Value::Float(1.5)),
        (
            "32float",
            2,
            L,
            B,
            vec![hi.swap_bytes(), lo.swap_bytes()],
            Value::Float(1.5),
        ),
        (
            "float",
            2,
            L,
            L,
            vec![lo.swap_bytes(), hi.swap_bytes()],
            Value::Float(1.5),
        ),
        ("16float", 1, B, L, vec![0x3C00], Value::Float(1.0)),
        ("16float", 1, B, L, vec![0xC000], Value::Float(-2.0)),
        (
            "64int",
            4,
            B,
            B,
            vec![0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
            Value::Int(-2),
        ),
        ("64uint", 4, B, L, vec![0x0002, 0, 0, 0], Value::Int(2)),
        (
            "64float",
            4,
            B,
            B,
            2.25f64
                .to_bits()
                .to_be_bytes()
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect(),
            Value::Float(2.25),
        ),
        ("int", 1, B, L, vec![0x8000], Value::Int(-32768)),
        ("uint", 2, B, B, vec![0, 7], Value::Int(7)),
        ("long", 4, B, B, vec![0, 0, 0, 9], Value::Int(9)),
        (
            "string",
            2,
            B,
            L,
            vec![0x4F4E, 0x0000],
            Value::String("ON".into()),
        ),
        (
            "string",
            2,
            L,
            L,
            vec![0x4E4F, 0x4B4F],
            Value::String("ONOK".into()),
        ),
        (
            "bytes",
            2,
            B,
            L,
            vec![0xDEAD, 0xBEEF],
            Value::String("deadbeef".into()),
        ),
    ];
    for (ty, count, b, w, regs, want) in cases {
        let s = spec(ty, count, b, w);
        assert_eq!(
            decode_registers(&regs, &s),
            Ok(want.clone()),
            "{ty} {b:?} {w:?} {regs:x?}"
        );
        // Encoding the decoded value gives the registers back.
        let enc = encode_registers(&want.to_json(), &s).expect("encodes");
        assert_eq!(enc, regs, "encode {ty} {b:?} {w:?} {want:?}");
    }
}

#[test]
fn bits_and_scaling_follow_the_datapoint_options() {
    let mut s = spec("bits", 1, Order::Big, Order::Little);
    assert_eq!(decode_bits(&[true], &s), Ok(Value::Bool(true)));
    s.bits_as_int = true;
    assert_eq!(decode_bits(&[true], &s), Ok(Value::Int(1)));
    let s3 = spec("bits", 3, Order::Big, Order::Little);
    assert_eq!(
        decode_bits(&[true, false, true], &s3),
        Ok(Value::Json(json!([true, false, true])))
    );
    let mut reg_bit = spec("bits", 1, Order::Big, Order::Little);
    reg_bit.bit = Some(2);
    // As the Python gateway: with `bit`, an integer whatever `bitTargetType` says.
    assert_eq!(decode_registers(&[0b100], &reg_bit), Ok(Value::Int(1)));
    reg_bit.bit = Some(1);
    assert_eq!(decode_registers(&[0b100], &reg_bit), Ok(Value::Int(0)));
    reg_bit.bits_as_int = true;
    assert_eq!(decode_registers(&[0b100], &reg_bit), Ok(Value::Int(0)));
    let mut coil_bit = spec("bits", 3, Order::Big, Order::Little);
    coil_bit.bit = Some(1);
    assert_eq!(
        decode_bits(&[false, true, false], &coil_bit),
        Ok(Value::Int(1))
    );
    // An index past the end takes the last bit.
    coil_bit.bit = Some(9);
    assert_eq!(
        decode_bits(&[false, false, true], &coil_bit),
        Ok(Value::Int(1))
    );
    // A numeric type over coils reads the packed bits.
    let coil_u16 = spec("16uint", 1, Order::Big, Order::Little);
    let mut bits = vec![false; 16];
    bits[0] = true; // first byte 0x01 -> high byte of the register
    assert_eq!(decode_bits(&bits, &coil_u16), Ok(Value::Int(0x0100)));

    let mut div = spec("16int", 1, Order::Big, Order::Little);
    div.divider = Some(10.0);
    assert_eq!(decode_registers(&[215], &div), Ok(Value::Float(21.5)));
    assert_eq!(encode_registers(&json!(21.5), &div), Ok(vec![215]));
    let mut mul = spec("16int", 1, Order::Big, Order::Little);
    mul.multiplier = Some(3.0);
    assert_eq!(decode_registers(&[5], &mul), Ok(Value::Int(15)));
    mul.multiplier = Some(0.5);
    assert_eq!(decode_registers(&[5], &mul), Ok(Value::Float(2.5)));
    assert_eq!(encode_registers(&json!(2.5), &mul), Ok(vec![5]));
}

#[test]
fn encoding_rejects_values_that_do_not_fit() {
    let s = spec("16int", 1, Order::Big, Order::Little);
    assert!(encode_registers(&json!(40000), &s).is_err());
    assert!(encode_registers(&json!("abc"), &s).is_err());
    let u = spec("16uint", 1, Order::Big, Order::Little);
    assert!(encode_registers(&json!(-1), &u).is_err());
    assert_eq!(encode_registers(&json!("12"), &u), Ok(vec![12]));
    let st = spec("string", 1, Order::Big, Order::Little);
    assert!(encode_registers(&json!("too long"), &st).is_err());
    let b = spec("bits", 2, Order::Big, Order::Little);
    assert_eq!(encode_bits(&json!(true), &b), Ok(vec![true, true]));
    assert_eq!(
        encode_bits(&json!([1, 0, "on"]), &b),
        Ok(vec![true, false, true])
    );
    assert!(encode_bits(&json!("maybe"), &b).is_err());
    let big = spec("64uint", 4, Order::Big, Order::Big);
    assert_eq!(
        decode_registers(&[0xFFFF; 4], &big),
        Ok(Value::Float(u64::MAX as f64))
    );
    // Only the low byte of a register carries an 8-bit value.
    let u8s = spec("8uint", 1, Order::Big, Order::Big);
    assert_eq!(decode_registers(&[0x12FF], &u8s), Ok(Value::Int(255)));
    assert_eq!(
        encode_registers(&json!(u64::MAX), &big),
        Ok(vec![0xFFFF; 4])
    );
}

#[test]
fn bytes_values_with_non_ascii_or_signed_digits_are_errors_not_panics() {
    let b = spec("bytes", 2, Order::Big, Order::Big);
    // "aé0" has four UTF-8 bytes: byte-index slicing cut `é` in half and panicked.
    for bad in ["aé0", "éé", "0é", "dead bee€", "+f00", "-f00", "0x0f"] {
        let e = encode_registers(&json!(bad), &b).expect_err(bad);
        assert!(e.to_string().contains(bad), "{bad}: {e}");
    }
    assert_eq!(
        encode_registers(&json!("de ad\tbe ef"), &b),
        Ok(vec![0xDEAD, 0xBEEF])
    );
    assert_eq!(encode_registers(&json!("DEAD"), &b), Ok(vec![0xDEAD, 0]));
    assert!(
        encode_registers(&json!("abc"), &b).is_err(),
        "odd digit count"
    );
    assert!(
        encode_registers(&json!("0011223344"), &b).is_err(),
        "too long"
    );
}

#[test]
fn half_floats_round_trip() {
    for (x, h) in [
        (1.0, 0x3C00u16),
        (-2.0, 0xC000),
        (65504.0, 0x7BFF),
        (0.5, 0x3800),
        (0.0, 0),
    ] {
        assert_eq!(f64_to_f16(x), h, "{x}");
        assert_eq!(f16_to_f64(h), x, "{h:x}");
    }
    assert_eq!(f64_to_f16(1e6), 0x7C00);
    assert!(f16_to_f64(0x7E00).is_nan());
}

/// xorshift64*: a deterministic PRNG so the fuzz test is reproducible without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() % (max as u64 + 1)) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn fuzz_decoders_never_panic_on_random_or_truncated_input() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let requests = [
        Request::Read {
            fc: 1,
            address: 0,
            count: 17,
        },
        Request::Read {
            fc: 3,
            address: 0,
            count: 3,
        },
        Request::Read {
            fc: 4,
            address: 9,
            count: 125,
        },
        Request::WriteSingleCoil {
            address: 1,
            value: true,
        },
        Request::WriteMultipleRegisters {
            address: 1,
            values: vec![1, 2],
        },
    ];
    let types = [
        "bits", "string", "bytes", "8int", "16uint", "16float", "32float", "64int", "64uint",
    ];
    for round in 0..50_000u32 {
        let mut buf = rng.bytes(300);
        // Seed some rounds with valid frames so truncation and bit flips reach deep code.
        if round % 3 == 0 {
            let req = &requests[(rng.next() % requests.len() as u64) as usize];
            let mut pdu = Vec::new();
            req.encode(&mut pdu);
            let framing = [Framing::Mbap, Framing::Rtu, Framing::Ascii][round as usize % 3];
            buf.clear();
            encode_frame(framing, round as u16, 1, &pdu, &mut buf);
            let cut = (rng.next() % (buf.len() as u64 + 1)) as usize;
            buf.truncate(cut);
            if let Some(b) = buf.get_mut((rng.next() % 8) as usize) {
                *b ^= rng.next() as u8;
            }
        }
        for framing in [Framing::Mbap, Framing::Rtu, Framing::Ascii] {
            for dir in [Direction::Request, Direction::Response] {
                if let Ok(Some(f)) = decode_frame(framing, dir, &buf) {
                    assert!(f.len <= buf.len());
                }
            }
        }
        let _ = Request::decode(&buf);
        for req in &requests {
            let _ = decode_response(req, &buf);
        }
        let regs: Vec<u16> = buf.chunks(2).map(|c| u16::from(c[0]) << 8).collect();
        let bits: Vec<bool> = buf.iter().map(|b| b & 1 == 1).collect();
        let ty = types[round as usize % types.len()];
        let count = (rng.next() % 6) as u16;
        if let Some(t) = ValueType::parse(ty, count) {
            let mut s = ValueSpec::new(t, count);
            s.bit = (round % 5 == 0).then_some((rng.next() % 40) as u16);
            let _ = decode_registers(&regs, &s);
            let _ = decode_bits(&bits, &s);
        }
    }
}

#[test]
fn device_identification_answers_follow_the_specification() {
    let objects: Vec<(u8, Vec<u8>)> = vec![
        (0, b"ACME".to_vec()),
        (1, b"P1".to_vec()),
        (2, b"1.0".to_vec()),
        (4, b"Gw".to_vec()),
    ];
    let head = |code: u8, more: u8, next: u8, n: u8| vec![0x2B, 0x0E, code, 0x82, more, next, n];
    let cat = |parts: &[&[u8]]| parts.concat();
    let basic = cat(&[
        &head(1, 0, 0, 3),
        &[0, 4],
        b"ACME",
        &[1, 2],
        b"P1",
        &[2, 3],
        b"1.0",
    ]);
    type Case = (Vec<u8>, Result<Vec<u8>, u8>);
    let cases: Vec<Case> = vec![
        // Basic stream from object 0.
        (vec![0x2B, 0x0E, 1, 0], Ok(basic.clone())),
        // An unknown start object starts over at 0.
        (vec![0x2B, 0x0E, 1, 0x33], Ok(basic)),
        // Regular stream from object 2.
        (
            vec![0x2B, 0x0E, 2, 2],
            Ok(cat(&[&head(2, 0, 0, 2), &[2, 3], b"1.0", &[4, 2], b"Gw"])),
        ),
        // One object.
        (
            vec![0x2B, 0x0E, 4, 4],
            Ok(cat(&[&head(4, 0, 0, 1), &[4, 2], b"Gw"])),
        ),
        (vec![0x2B, 0x0E, 4, 3], Err(ILLEGAL_DATA_ADDRESS)),
        (vec![0x2B, 0x0E, 5, 0], Err(ILLEGAL_DATA_VALUE)),
        (vec![0x2B, 0x0E, 0, 0], Err(ILLEGAL_DATA_VALUE)),
        (vec![0x2B, 0x0E, 1], Err(ILLEGAL_DATA_VALUE)),
        (vec![0x2B, 0x0D, 1, 0], Err(ILLEGAL_DATA_VALUE)),
    ];
    for (req, want) in cases {
        assert_eq!(
            read_device_identification(&req, &objects),
            want,
            "{req:02X?}"
        );
    }
}

#[test]
fn device_identification_splits_long_streams_with_more_follows() {
    let objects: Vec<(u8, Vec<u8>)> = (0..7u8).map(|id| (id, vec![b'a' + id; 100])).collect();
    let first = read_device_identification(&[0x2B, 0x0E, 2, 0], &objects).expect("answer");
    // Two 100-byte objects fit in 253 bytes, a third does not.
    assert_eq!(&first[..7], &[0x2B, 0x0E, 2, 0x82, 0xFF, 2, 2]);
    assert!(first.len() <= MAX_PDU);
    let next = read_device_identification(&[0x2B, 0x0E, 2, 2], &objects).expect("answer");
    assert_eq!(&next[..7], &[0x2B, 0x0E, 2, 0x82, 0xFF, 4, 2]);
    let last = read_device_identification(&[0x2B, 0x0E, 2, 6], &objects).expect("answer");
    assert_eq!(&last[..7], &[0x2B, 0x0E, 2, 0x82, 0, 0, 1]);
    // An oversized object is cut so that it always fits alone.
    let huge = vec![(0u8, vec![b'x'; 1000])];
    let a = read_device_identification(&[0x2B, 0x0E, 4, 0], &huge).expect("answer");
    assert_eq!(a.len(), MAX_PDU);
}
