//! Fuzzed entry points of tbgw, shared by the libFuzzer targets (`fuzz_targets/`) and the
//! stable-Rust drivers (`src/bin/`, with what they share in [`stable`]).

pub mod stable;

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

pub use socket::socket_frame;

/// The Socket connector's frame -> converter path.
mod socket {
    use tbgw_connectors::socket::uplink::{
        AddressPattern, AttrRequest, Device, Encoding, Frame, Framer, Framing, Message, Order,
        Point, Slice, ValueKind,
    };

    const ENCODINGS: [Encoding; 7] = [
        Encoding::Utf8,
        Encoding::Ascii,
        Encoding::Latin1,
        Encoding::Utf16,
        Encoding::Utf16Le,
        Encoding::Utf16Be,
        Encoding::Hex,
    ];

    /// A device with a key of every value type over slices picked by `sel`.
    fn socket_device(sel: u8) -> Device {
        let order = if sel & 1 == 0 {
            Order::Big
        } else {
            Order::Little
        };
        let kinds = [
            ValueKind::String,
            ValueKind::Int,
            ValueKind::Double,
            ValueKind::Bool,
            ValueKind::Json,
            ValueKind::BinInt(1, order),
            ValueKind::BinUInt(2, order),
            ValueKind::BinInt(4, order),
            ValueKind::BinUInt(8, order),
            ValueKind::BinFloat(4, order),
            ValueKind::BinFloat(8, order),
        ];
        let s = i64::from(sel);
        let slices = [
            Slice::Range(Some(0), None),
            Slice::Range(Some(s % 7), Some(s % 11)),
            Slice::Range(Some(-(s % 5)), None),
            Slice::Range(None, Some(-(s % 3))),
            Slice::Index(s % 9 - 4),
        ];
        let points = kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| Point {
                key: format!("k{i}"),
                attribute: i % 3 == 0,
                slice: slices[(i + usize::from(sel)) % slices.len()],
                kind,
            })
            .collect();
        let attr = AttrRequest::parse(sel & 2 == 0, "${[0:2]==ar}", "[2:5][6:]");
        Device {
            name: "D".into(),
            device_type: "default".into(),
            pattern: AddressPattern::new("127.0.0.*:*"),
            encoding: ENCODINGS[usize::from(sel >> 4) % ENCODINGS.len()],
            points,
            attr_requests: attr.into_iter().collect(),
            attribute_updates: vec![],
            rpcs: vec![],
            converter: None,
            report: None,
        }
    }

    /// One fuzz input: byte 0 picks the framing, byte 1 the device's encoding, types and slices,
    /// byte 2 the read size; the rest is the TCP stream, pushed read by read into the framer and
    /// every message converted. Panics (the fuzzer's finding) when a frame breaks the framer's
    /// contract (longer than the limit, a fixed frame of another length) or a conversion panics.
    pub fn socket_frame(data: &[u8]) {
        let [f, sel, chunk, wire @ ..] = data else {
            return;
        };
        const MAX: usize = 64;
        let framing = match f % 8 {
            0 => Framing::None,
            1 => Framing::Delimiter(vec![b'\n'], f & 8 != 0),
            2 => Framing::Delimiter(b"\r\n".to_vec(), f & 8 != 0),
            3 => Framing::Fixed(usize::from(f >> 3) % MAX + 1),
            k => Framing::LengthPrefix {
                bytes: [1, 2, 4, 1][usize::from(k - 4)],
                order: if f & 8 == 0 {
                    Order::Big
                } else {
                    Order::Little
                },
                includes_prefix: f & 16 != 0,
                keep_prefix: f & 32 != 0,
            },
        };
        let device = socket_device(*sel);
        let mut framer = Framer::new(framing.clone(), MAX);
        let step = usize::from(*chunk % 32) + 1;
        for read in wire.chunks(step) {
            framer.push(read);
            while let Some(frame) = framer.next_frame() {
                match frame {
                    Frame::Message(m) => {
                        match &framing {
                            Framing::None => assert_eq!(m, read, "a read is one message"),
                            Framing::Fixed(n) => assert_eq!(m.len(), *n, "fixed length"),
                            Framing::Delimiter(d, keep) => {
                                assert!(
                                    m.len() <= MAX + d.len(),
                                    "{} bytes over the limit",
                                    m.len()
                                );
                                let body = if *keep {
                                    assert!(m.ends_with(d), "the kept delimiter");
                                    &m[..m.len() - d.len()]
                                } else {
                                    &m[..]
                                };
                                assert!(
                                    !body.windows(d.len()).any(|w| w == d.as_slice()),
                                    "a delimiter inside a message"
                                );
                            }
                            Framing::LengthPrefix { bytes, .. } => {
                                assert!(m.len() <= MAX + bytes, "{} bytes over the limit", m.len())
                            }
                        }
                        let mut errors = Vec::new();
                        match device.convert("127.0.0.2:5000", &m, 1, &mut errors) {
                            Message::Data(v) => assert!(v.iter().all(|d| !d.is_empty())),
                            Message::AttributeRequest(_, keys) => assert!(keys.len() == 2),
                            Message::Nothing => {}
                        }
                    }
                    Frame::TooLong(n) => assert!(n > MAX, "skipped {n} bytes, under the limit"),
                    Frame::Broken(_) => return,
                }
            }
        }
    }
}

pub use ocpp::ocpp_frame;

mod ocpp {
    use serde_json::Value as Json;
    use tbgw_connectors::ocpp::frame::{decode, encode, Frame, Version};
    use tbgw_connectors::ocpp::messages::{answer, check, snake_case_keys, Decision};
    use tbgw_connectors::ocpp::uplink::{message, profile};

    /// The OCPP connector's path for one WebSocket text message: frame decoding, and for a
    /// CALL the schema check, the answer, the converter's message and the profile, under each
    /// version. Panics (the fuzzer's finding) when a decoded frame does not survive an
    /// encode/decode round trip, or any step panics.
    pub fn ocpp_frame(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let Ok(frame) = decode(&text) else {
            return;
        };
        let again = decode(&encode(&frame)).expect("an encoded frame decodes");
        let head = |f: &Frame| match f {
            Frame::Call { id, action, .. } => (2, id.clone(), action.clone()),
            Frame::CallResult { id, .. } => (3, id.clone(), String::new()),
            Frame::CallError { id, code, .. } => (4, id.clone(), code.clone()),
            Frame::Send { id, action, .. } => (6, id.clone(), action.clone()),
        };
        // Payload floats may move by one ULP through serde_json's fast parser; ids and
        // actions must survive exactly.
        assert_eq!(head(&again), head(&frame), "round trip");
        if let Frame::Call {
            action, payload, ..
        } = &frame
        {
            let _ = snake_case_keys(payload);
            for v in [Version::V16, Version::V201, Version::V21] {
                if check(v, action, payload).is_ok() {
                    let d = Decision {
                        now: "2026-01-01T00:00:00.000Z",
                        heartbeat_interval: 10,
                        authorized: true,
                        transaction_id: 1,
                    };
                    let a = answer(v, action, payload, &d);
                    assert!(a.is_object(), "answers are objects");
                    let (m, _) = message(action, payload, "now");
                    assert!(matches!(m, Json::Object(_)));
                    let _ = profile("cp", payload);
                }
            }
        }
    }
}

/// The safe expression language (`tbgw::eval`, ODBC and CAN expressions): any text is parsed
/// and, when it parses, evaluated against a few variables of every type; neither may panic,
/// overflow the stack or grow without bound.
pub fn eval_expr(data: &[u8]) {
    use tbgw::eval::{Expr, Val};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = Expr::parse(text) else {
        return;
    };
    let vars = |name: &str| -> Option<Val> {
        Some(match name {
            "i" => Val::Int(i64::MAX),
            "n" => Val::Int(-7),
            "f" => Val::Float(2.5),
            "s" => Val::Str("héllo".into()),
            "b" => Val::Bool(true),
            "l" => Val::List(vec![Val::Int(1), Val::None, Val::Str("x".into())]),
            "z" => Val::None,
            _ => return None,
        })
    };
    if let Ok(v) = e.eval(&vars) {
        let _ = v.to_py_string();
        let _ = v.into_value();
    }
    let _ = e.names();
}

/// The BACnet/IP decoders: BVLC, NPDU, APDU and the service data of every service the
/// connector decodes, plus the value conversion of whatever decoded.
pub fn bacnet_apdu(data: &[u8]) {
    use tbgw_connectors::bacnet::proto::{self, frame, services, tags};
    let _ = proto::decode_all(data);
    // The bytes as bare service data and tag streams too (most inputs fail the BVLC check).
    let _ = frame::decode_apdu(data);
    let _ = services::decode_rpm_ack(data);
    let _ = services::decode_read_property_ack(data);
    let _ = services::decode_cov_notification(data);
    let _ = services::decode_i_am(data);
    let mut r = tags::Reader::new(data);
    while !r.is_empty() {
        match r.app_value() {
            Ok(v) => {
                let _ = tbgw_connectors::bacnet::uplink::to_value(&v).to_json();
            }
            Err(_) => break,
        }
    }
    let mut r = tags::Reader::new(data);
    while !r.is_empty() && r.skip().is_ok() {}
    // The same bytes as an EDE table and as base64 `edeConfig`.
    let text = String::from_utf8_lossy(data);
    let _ = tbgw_connectors::bacnet::ede::devices(&text, ';');
    let _ = tbgw_connectors::bacnet::ede::devices_from_base64(&text);
}

pub use s7::s7_response;

/// The S7 connector's answer parsing and value decoding.
mod s7 {
    use tbgw_connectors::s7::address::{Address, DataType};
    use tbgw_connectors::s7::proto;

    const TYPES: [DataType; 20] = [
        DataType::Bool,
        DataType::Byte,
        DataType::SInt,
        DataType::Int,
        DataType::UInt,
        DataType::DInt,
        DataType::UDInt,
        DataType::LInt,
        DataType::ULInt,
        DataType::Real,
        DataType::LReal,
        DataType::Char,
        DataType::WChar,
        DataType::String(4),
        DataType::FString(3),
        DataType::Time,
        DataType::LTime,
        DataType::Tod,
        DataType::Date,
        DataType::Raw(5),
    ];

    /// One fuzz input: byte 0 picks the item count expected and the bit; the rest is a
    /// frame as a PLC would send it (TPKT header first). Every parser runs on it; the items
    /// of a ReadVar answer are decoded as every data type. Also parsed as a tag and a VM
    /// address. Panics only if a parser or decoder panics.
    pub fn s7_response(data: &[u8]) {
        let [sel, frame @ ..] = data else {
            return;
        };
        proto::parse_any(frame);
        let n = usize::from(sel % 21);
        if let Ok(items) = proto::parse_read_response(frame, 1, n) {
            assert_eq!(items.len(), n);
            for b in items.iter().flatten() {
                assert!(b.len() <= proto::MAX_FRAME);
                for t in TYPES {
                    let _ = t.decode(b, sel >> 5);
                }
            }
        }
        if let Ok(w) = proto::parse_write_response(frame, 1, n) {
            assert_eq!(w.len(), n);
        }
        if let Ok(pdu) = proto::parse_setup_response(frame, 1) {
            assert!(pdu >= 64);
        }
        let text = String::from_utf8_lossy(frame);
        if let Ok(a) = Address::from_tag(&text) {
            let _ = a.decode(frame);
            let _ = a.write_item(&serde_json::json!(text));
        }
        let _ = Address::from_vm(&text);
    }
}

pub use xmpp::xmpp_body;

mod xmpp {
    use serde_json::json;
    use tbgw::expr::Template;
    use tbgw_connectors::xmpp::downlink::{answer_value, attribute_body, rpc_body, set_body};
    use tbgw_connectors::xmpp::uplink::{Device, Point, MAX_BODY_BYTES};
    use tbgw_connectors::xmpp::Jid;

    // `[0:4]`, `[4:]`, `[-1]`: byte slices, so text bodies are read too.
    const NAMES: [&str; 5] = [
        "${serialNumber}",
        "Dev ${id}",
        "${a.b[0]}",
        "fixed",
        "[0:4]",
    ];
    const VALUES: [&str; 7] = [
        "${temp}",
        "${temp}:${hum}",
        "${list[1:3]}",
        "${a..b}",
        "x",
        "[4:]",
        "[-1]°",
    ];

    fn t(s: &str) -> Template {
        Template::parse(s).expect("the fuzz templates are valid")
    }

    fn device(sel: u8) -> Device {
        let v = |i: usize| t(VALUES[(usize::from(sel) + i) % VALUES.len()]);
        Device {
            jid: Jid::new("device@localhost/r").expect("a valid JID"),
            name: t(NAMES[usize::from(sel) % NAMES.len()]),
            device_type: t(if sel & 8 == 0 { "default" } else { "${type}" }),
            attributes: vec![Point {
                key: t("k"),
                value: v(0),
            }],
            timeseries: vec![
                Point {
                    key: t("${key}"),
                    value: v(1),
                },
                Point {
                    key: t("h"),
                    value: v(2),
                },
            ],
        }
    }

    /// One fuzz input: byte 0 picks the device's expressions; the rest is a chat message body
    /// (lossy UTF-8, as XML text always is), converted to data, and also used as the params of
    /// an RPC and `set`, an attribute value and a device's answer. Panics (the fuzzer's
    /// finding) when a conversion panics or yields a record without a name or with an empty key.
    pub fn xmpp_body(data: &[u8]) {
        let [sel, body @ ..] = data else {
            return;
        };
        let body = String::from_utf8_lossy(body);
        if let Ok(Some(d)) = device(*sel).convert(&body, 0) {
            assert!(!d.device_name.is_empty(), "a device name");
            assert!(!d.is_empty(), "Some only with datapoints");
            assert!(d.attributes.iter().all(|(k, _)| !k.is_empty()));
            assert!(d
                .telemetry
                .iter()
                .flat_map(|e| &e.values)
                .all(|(k, _)| !k.is_empty()));
            assert!(body.len() <= MAX_BODY_BYTES);
        }
        let answer = answer_value(&body);
        let _ = set_body(&answer);
        let _ = set_body(&json!(body));
        let _ = rpc_body(&t("${params}"), "m", &answer);
        let _ = rpc_body(&t("{\"v\": ${params.v}}"), "m", &answer);
        let _ = attribute_body("{\"${attributeKey}\":\"${attributeValue}\"}", "k", &answer);
    }
}

pub use ble::ble_advertisement;

/// The BLE connector's `valueExpression` parsing and decoding, and its advertisement path.
mod ble {
    use std::sync::OnceLock;

    use tbgw_connectors::ble::central::Advertisement;
    use tbgw_connectors::ble::uplink::{Render, ValueExpr};
    use tbgw_connectors::ble::{AdvertisementDecoder, BleConnectorConfig};

    fn decoder() -> &'static AdvertisementDecoder {
        static D: OnceLock<AdvertisementDecoder> = OnceLock::new();
        D.get_or_init(|| {
            let cfg: BleConnectorConfig = serde_json::from_value(serde_json::json!({
                "devices": [{
                    "name": "B ${MACAddress} ${localName}", "localName": "b",
                    "telemetry": [
                        {"key": "a", "dataSourceType": "advertisement", "valueExpression": "[0:2]"},
                        {"key": "b", "dataSourceType": "advertisement", "valueExpression": "[-1]", "compute": "value * 2 - 1"},
                        {"key": "c", "dataSourceType": "advertisement", "advertisementField": "serviceData", "valueExpression": "x [1:] y [:3]"},
                        {"key": "d", "dataSourceType": "advertisement", "advertisementField": "rssi"}
                    ],
                    "attributes": [
                        {"key": "e", "dataSourceType": "advertisement", "valueExpression": "[:]", "compute": "str(value)[:4]"}
                    ]
                }]
            }))
            .expect("a valid config");
            AdvertisementDecoder::new(cfg).expect("a valid config")
        })
    }

    /// Input: a `valueExpression`, a 0 byte, then the advertised bytes.
    pub fn ble_advertisement(data: &[u8]) {
        let (expr, bytes) = match data.iter().position(|b| *b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (&data[..0], data),
        };
        let text = String::from_utf8_lossy(expr);
        if let Ok(e) = ValueExpr::parse(&text) {
            if let Ok(tbgw::model::Value::String(s)) = e.render(bytes, Render::Text) {
                // Each slice writes at most three digits per byte.
                assert!(s.len() <= text.len() + 3 * bytes.len() * e.parts().len().max(1));
            }
            let _ = e.render(bytes, Render::Int);
        }
        let mut adv = Advertisement {
            local_name: Some("b".into()),
            rssi: Some(-40),
            ..Advertisement::default()
        };
        adv.manufacturer_data.insert(0x0499, bytes.to_vec());
        adv.service_data.insert(Default::default(), bytes.to_vec());
        let (out, _) = decoder().decode(&adv);
        assert_eq!(out.len(), 1);
    }
}

pub use knx::knx_frame;

/// The KNX connector's frame parsing and datapoint decoding.
mod knx {
    use tbgw_connectors::knx::dpt::Dpt;
    use tbgw_connectors::knx::frame::{self, Cemi, Frame};

    const TYPES: [&str; 16] = [
        "",
        "switch",
        "character",
        "percent",
        "angle",
        "percentU8",
        "percentV8",
        "pulse_2byte",
        "2byte_signed",
        "temperature",
        "4byte_unsigned",
        "4byte_signed",
        "power",
        "string",
        "latin_1",
        "8byte_signed",
    ];

    /// One fuzz input: byte 0 picks what the rest is: a KNXnet/IP frame as a gateway sends
    /// it (the cEMI inside a tunnelling request or routing indication is parsed too), or a
    /// bare cEMI frame. The value of every group telegram is decoded as every datapoint type
    /// and a decoded value encoded again. Panics only if a parser or codec panics.
    pub fn knx_frame(data: &[u8]) {
        let [sel, rest @ ..] = data else {
            return;
        };
        let cemi = if sel & 1 == 0 {
            let _ = frame::frame_len(rest);
            match frame::parse_frame(rest) {
                Ok(Frame::TunnelRequest { cemi, .. }) | Ok(Frame::RoutingIndication(cemi)) => cemi,
                Ok(f) => {
                    let _ = frame::parse_frame(&f.to_bytes());
                    return;
                }
                Err(_) => return,
            }
        } else {
            rest.to_vec()
        };
        if let Ok(Cemi::Group(t)) = frame::parse_cemi(&cemi) {
            for name in TYPES {
                let Ok(d) = Dpt::parse(name) else { continue };
                if let Ok(v) = d.decode(&t.payload) {
                    if let Ok(p) = d.encode(&v) {
                        let _ = d.decode(&p);
                    }
                }
            }
            let again = frame::parse_cemi(&t.to_cemi());
            assert!(again.is_ok(), "{t:?} does not parse again: {again:?}");
        }
        if let Ok(s) = std::str::from_utf8(rest) {
            let _ = Dpt::parse(s);
            let _ = frame::GroupAddress::parse(s);
            let _ = frame::IndividualAddress::parse(s);
        }
    }
}

pub use can::can_frame;

/// The CAN connector's frame decoding.
mod can {
    use std::path::Path;
    use std::sync::OnceLock;

    use serde_json::json;
    use tbgw_connectors::can::codec::{from_hex, Command, Slice};
    use tbgw_connectors::can::config::CanConnectorConfig;
    use tbgw_connectors::can::j1939::Reassembler;
    use tbgw_connectors::can::{dbc, decode, CanFrame, Decoder};

    const DBC: &str = r#"VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 2364540158 EEC1: 8 ECU
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX
 SG_ Torque : 8|8@1- (1,-125) [-125|125] "%" Vector__XXX

BO_ 256 Moto: 64 ECU
 SG_ Temp : 7|12@0+ (0.1,-40) [-40|200] "degC" Vector__XXX
 SG_ Wide : 500|64@0- (1,0) [0|0] "" Vector__XXX

BO_ 512 Muxed: 8 ECU
 SG_ Page M : 0|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ A m0 : 8|16@1+ (1,0) [0|65535] "" Vector__XXX
 SG_ B m1 : 8|56@1- (1,0) [0|0] "" Vector__XXX

BO_ 513 Floats: 16 ECU
 SG_ F : 0|32@1- (1,0) [0|0] "V" Vector__XXX
 SG_ D : 64|64@1- (1,0) [0|0] "V" Vector__XXX

SIG_VALTYPE_ 513 F : 1;
SIG_VALTYPE_ 513 D : 2;
"#;

    /// Every value type, byte order, command filter, expression (with `can_data`), FD lengths,
    /// DBC signals (both bit orders, multiplexed, float) and J1939 PGNs, on ids 1..=4, the
    /// DBC messages' ids and PGN 61444.
    fn decoder() -> &'static Decoder {
        static D: OnceLock<Decoder> = OnceLock::new();
        D.get_or_init(|| {
            let v = |key: &str, node: u32, value: &str| json!({"key": key, "nodeId": node, "value": value});
            let mut ts = vec![
                v("b", 1, "0:1:bool"), v("i", 1, "1:2:int"), v("il", 1, "1:3:little:int:signed"),
                v("l", 1, "0:8:long"), v("f", 1, "2:4:float"), v("d", 1, "0:8:little:double"),
                v("s", 1, "3:-1:string"), v("u", 1, "0:-1:string:utf-8"), v("r", 1, "5:-1:raw"),
                v("lat", 2, "0:-1:string:latin-1"), v("fd", 3, "40:8:big:long:signed"),
                json!({"key": "cmd", "nodeId": 2, "command": "0:2:little:513", "value": "2:2:int",
                       "expression": "value / 0 if value == 7 else value * 2 + can_data[-1]"}),
                json!({"key": "x", "nodeId": 4, "isExtendedId": true, "value": "0:1:int",
                       "expression": "[b for b in can_data if b > value][0] if len(can_data) > 2 else None"}),
                json!({"key": "pgn", "pgn": 61444, "value": "3:2:little:int", "expression": "value * 0.125"}),
                json!({"key": "pgnsa", "pgn": 65262, "sourceAddress": 0, "value": "0:1:int"}),
                json!({"key": "speed", "signal": "EngineSpeed"}),
                json!({"key": "wide", "signal": "Wide"}),
            ];
            ts.push(json!({"key": "temp", "signal": "Temp", "message": 256}));
            let cfg: CanConnectorConfig = serde_json::from_value(json!({
                "devices": [
                    {"name": "A", "dbcFile": "x.dbc", "dbcMessages": ["Muxed", "Floats"], "timeseries": ts},
                    {"name": "B", "attributes": [{"key": "b2", "nodeId": 1, "value": "7:1:int"}]}
                ]
            }))
            .expect("config");
            let load = |_: &Path| dbc::parse(DBC);
            decode::plan_with(Path::new("can.json"), &cfg, &mut Vec::new(), &load)
                .expect("plan")
                .decoder
        })
    }

    /// One fuzz input: byte 0 picks the id (one of the routed ids, or any) and the frame kind;
    /// the rest is the frame data (cut to 64 bytes). Also fed to the value, command and hex
    /// parsers as text, and to the bit extraction. Panics (the fuzzer's finding) when decoding
    /// panics or yields a record without values.
    pub fn can_frame(data: &[u8]) {
        let [sel, rest @ ..] = data else {
            return;
        };
        let ids = [
            1u32,
            2,
            3,
            4,
            0x0CF0_04FE,
            256,
            512,
            513,
            0x18F0_0401,
            0x18FE_EE00,
        ];
        let (id, extended) = match usize::from(sel & 0x0F) {
            i if i < ids.len() => (ids[i], ids[i] > 0x7FF || i == 3),
            _ => {
                let raw = rest
                    .iter()
                    .take(4)
                    .fold(0u32, |a, &b| (a << 8) | u32::from(b));
                (raw & 0x1FFF_FFFF, sel & 0x40 != 0)
            }
        };
        let fd = sel & 0x80 != 0;
        let mut payload: Vec<u8> = rest.iter().copied().take(if fd { 64 } else { 8 }).collect();
        if !fd {
            payload.truncate(8);
        }
        let id = if extended { id } else { id & 0x7FF };
        if let Ok(frame) = CanFrame::new(id, extended, fd, false, payload) {
            let (mut out, mut errors) = (Vec::new(), Vec::new());
            decoder().decode(&frame, 0, &mut out, &mut errors);
            for d in &out {
                assert!(!d.is_empty(), "a record has values");
            }
            let _ = decoder().wants(&frame);
        }
        // The input as a sequence of J1939 frames (9 bytes each: which id, then 8 data
        // bytes) through the multi-packet reassembler; completed messages are decoded.
        let mut tp = Reassembler::new();
        for chunk in rest.chunks(9) {
            let [which, data @ ..] = chunk else { continue };
            let id = match which % 4 {
                0 => 0x18EC_FF00,
                1 => 0x1CEB_FF00,
                2 => 0x18EC_FF01,
                _ => 0x1CEB_FF01,
            };
            let Ok(f) = CanFrame::new(id, true, false, false, data.to_vec()) else {
                continue;
            };
            if let Ok(Some(m)) = tp.feed(&f) {
                assert!(
                    m.data.len() <= 1785,
                    "a J1939 message holds at most 1785 bytes"
                );
                let (mut out, mut errors) = (Vec::new(), Vec::new());
                decoder().decode(&m, 0, &mut out, &mut errors);
            }
        }
        let text = String::from_utf8_lossy(rest);
        let _ = from_hex(&text);
        if let Ok(s) = Slice::parse(&json!(text)) {
            let _ = s.decode(rest);
        }
        if let Ok(c) = Command::parse(&json!(text)) {
            let _ = c.matches(rest);
        }
        let start = u32::from(rest.first().copied().unwrap_or(0)) * 2;
        let size = u32::from(rest.get(1).copied().unwrap_or(0)) % 70;
        let _ = dbc::raw_bits(rest, start, size, sel & 0x20 != 0);
    }
}
