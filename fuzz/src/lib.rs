//! Fuzzed entry points of tbgw, shared by the libFuzzer targets (`fuzz_targets/`) and the
//! stable-Rust driver (`src/bin/`).

use tbgw_connectors::modbus::codec::{
    decode_bits, decode_frame, decode_registers, decode_response, Direction, Framing, Order,
    Request, Response, ValueSpec, ValueType,
};

/// Every value type, with a register count that suits it.
const TYPES: [(ValueType, u16); 14] = [
    (ValueType::Bits, 1),
    (ValueType::Bits, 20),
    (ValueType::String, 3),
    (ValueType::Bytes, 2),
    (ValueType::Int(8), 1),
    (ValueType::UInt(8), 1),
    (ValueType::Int(16), 1),
    (ValueType::UInt(16), 1),
    (ValueType::Float(16), 1),
    (ValueType::Int(32), 2),
    (ValueType::Float(32), 2),
    (ValueType::Int(64), 4),
    (ValueType::UInt(64), 4),
    (ValueType::Float(64), 4),
];

/// The request a response answers, built from (up to) five input bytes: function code
/// selector, address, count or value.
pub fn request(b: &[u8]) -> Request {
    let byte = |i: usize| b.get(i).copied().unwrap_or(0);
    let address = u16::from_be_bytes([byte(1), byte(2)]);
    let n = u16::from_be_bytes([byte(3), byte(4)]);
    match byte(0) % 8 {
        k @ 0..=3 => Request::Read {
            fc: k + 1,
            address,
            // Counts a master really sends (1..=2000 bits, 1..=125 registers).
            count: if k < 2 { n % 2000 + 1 } else { n % 125 + 1 },
        },
        4 => Request::WriteSingleCoil {
            address,
            value: n & 1 == 1,
        },
        5 => Request::WriteSingleRegister { address, value: n },
        6 => Request::WriteMultipleCoils {
            address,
            values: vec![true; usize::from(n % 64) + 1],
        },
        _ => Request::WriteMultipleRegisters {
            address,
            values: vec![n; usize::from(n % 16) + 1],
        },
    }
}

/// Decodes every value type, in every order, from what a device answered.
fn decode_values(resp: &Response, scale: u8) {
    for (ty, count) in TYPES {
        for (byte_order, word_order) in [(Order::Big, Order::Little), (Order::Little, Order::Big)] {
            let mut spec = ValueSpec::new(ty, count);
            spec.byte_order = byte_order;
            spec.word_order = word_order;
            spec.bit = (scale & 0x80 != 0).then_some(u16::from(scale & 0x3F));
            spec.bits_as_int = scale & 1 == 1;
            spec.divider = (scale & 2 != 0).then_some(f64::from(scale));
            spec.multiplier = (scale & 4 != 0).then_some(-f64::from(scale));
            match resp {
                Response::Registers(r) => {
                    let _ = decode_registers(r, &spec);
                }
                Response::Bits(b) => {
                    let _ = decode_bits(b, &spec);
                }
                Response::Written => {}
            }
        }
    }
}

/// One fuzz input: byte 0 picks the framing and the value options, bytes 1..6 the request, the
/// rest is what arrived on the wire. Frames are decoded one after the other as the master's
/// transport does, each PDU as the answer to the request and each answer into values. Panics
/// (the fuzzer's finding) when a decoder panics or breaks its documented contract.
pub fn modbus_response(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let framing = [Framing::Mbap, Framing::Rtu, Framing::Ascii][usize::from(sel % 3)];
    let (req, wire) = rest.split_at(rest.len().min(5));
    let req = request(req);
    // The PDU decoder alone on raw bytes.
    check(&req, decode_response(&req, wire), sel);
    let mut buf = wire;
    while !buf.is_empty() {
        match decode_frame(framing, Direction::Response, buf) {
            Ok(Some(frame)) => {
                assert!(
                    frame.len > 0 && frame.len <= buf.len(),
                    "frame length {} out of a {}-byte buffer",
                    frame.len,
                    buf.len()
                );
                check(&req, decode_response(&req, &frame.pdu), sel);
                buf = &buf[frame.len..];
            }
            Ok(None) => break,
            // The transport drops what it cannot decode; go on after one byte to reach more.
            Err(_) => buf = &buf[1..],
        }
    }
}

fn check(
    req: &Request,
    r: Result<Result<Response, u8>, tbgw_connectors::modbus::codec::CodecError>,
    sel: u8,
) {
    let Ok(Ok(resp)) = r else { return };
    match (req, &resp) {
        (Request::Read { fc, count, .. }, Response::Bits(b)) => {
            assert!(*fc <= 2, "bits answer a function code {fc} read");
            assert_eq!(b.len(), usize::from(*count), "bit count");
        }
        (Request::Read { fc, count, .. }, Response::Registers(r)) => {
            assert!(*fc >= 3, "registers answer a function code {fc} read");
            assert_eq!(r.len(), usize::from(*count), "register count");
        }
        (Request::Read { .. }, Response::Written) => panic!("a read answered as a write"),
        (_, Response::Written) => {}
        (_, other) => panic!("a write answered with {other:?}"),
    }
    decode_values(&resp, sel);
}

/// One fuzz input: an SNMP datagram as an agent's answer or a trap arrives. It is decoded as
/// the poller and the trap listener do, and every result shape (scalar, list, map, table at
/// several base lengths) is rendered. Panics (the fuzzer's finding) only when a decoder does.
/// Returns the size of what was rendered (0: nothing decoded).
pub fn snmp_message(data: &[u8]) -> usize {
    tbgw_connectors::snmp::uplink::decode_any(data)
}

/// The FTP connector's three converters, compiled once: a TABLE csv path, a SLICED txt path
/// and a json path, each with every value type and a `ts` key.
fn ftp_specs() -> &'static [tbgw_connectors::ftp::uplink::PathSpec; 3] {
    use std::sync::OnceLock;
    use tbgw_connectors::ftp::config::PathConfig;
    use tbgw_connectors::ftp::uplink::PathSpec;
    static SPECS: OnceLock<[PathSpec; 3]> = OnceLock::new();
    SPECS.get_or_init(|| {
        let build = |v: serde_json::Value| {
            let p: PathConfig = serde_json::from_value(v).expect("a valid path");
            PathSpec::build(&p).expect("a valid path")
        };
        [
            build(serde_json::json!({
                "path": "d/*.csv", "devicePatternName": "${name}-${b}", "delimiter": ";",
                "attributes": [{"key": "a_${a}", "value": "${a}"}],
                "timeseries": [
                    {"key": "b", "value": "${b}", "type": "int"},
                    {"key": "c", "value": "x${c}y", "type": "double"},
                    {"key": "d", "value": "${d}", "type": "bool"},
                    {"key": "ts", "value": "${e}"}
                ]
            })),
            build(serde_json::json!({
                "path": "d/*.txt", "devicePatternName": "[0:3]", "txtFileDataView": "SLICED",
                "attributes": [{"key": "[1:2]", "value": "[-3:]"}],
                "timeseries": [
                    {"key": "v", "value": "[2:6]", "type": "integer"},
                    {"key": "w", "value": "[::2]", "type": "float"},
                    {"key": "ts", "value": "[0:10]"}
                ]
            })),
            build(serde_json::json!({
                "path": "d/*.json", "devicePatternName": "${name}",
                "attributes": [{"key": "${k}", "value": "${v}", "type": "json"}],
                "timeseries": [
                    {"key": "t", "value": "${a.b[0]}", "type": "double"},
                    {"key": "u", "value": "${u}", "type": "boolean"}
                ]
            })),
        ]
    })
}

/// One fuzz input for the FTP connector's file → values path: byte 0 picks the view (TABLE
/// csv, SLICED txt, json), the rest is the file's content. For csv the first line is the
/// header and every other line a row. Panics (the fuzzer's finding) when a converter panics
/// or returns a record without data.
pub fn ftp_lines(data: &[u8]) {
    let Some((&sel, content)) = data.split_first() else {
        return;
    };
    let specs = ftp_specs();
    let mut errors = Vec::new();
    let check = |d: &tbgw::model::DeviceData| {
        assert!(!d.is_empty(), "a record without data: {d:?}");
    };
    match sel % 3 {
        0 | 1 => {
            let spec = &specs[usize::from(sel % 3)];
            let text = String::from_utf8_lossy(content);
            let mut lines = text.split_inclusive('\n');
            let layout = if sel % 3 == 0 {
                lines.next().map(|h| spec.layout(h).0)
            } else {
                None
            };
            for line in lines {
                let d = match &layout {
                    Some(l) => spec.convert_row(l, line, 1, &mut errors),
                    None => spec.convert_sliced(line, 1, &mut errors),
                };
                if let Some(d) = d {
                    check(&d);
                }
            }
        }
        _ => {
            if let Ok(records) = specs[2].convert_json(content, 1, &mut errors) {
                records.iter().for_each(check);
            }
        }
    }
}
