//! Frame bytes to values and values to frame bytes, pure and synchronous: upstream's `value`
//! slices (`"start:length:[byteorder:]type[:signed|encoding]"` or the object form), `command`
//! filters (`"start:length:[byteorder:]value"`), `dataInHex`, and the downlink converter
//! (`dataInHex`, `dataBefore` + value + `dataAfter`, `dataLength`/`dataByteorder`/`dataSigned`,
//! `dataEncoding`, `dataExpression`).
//!
//! Unlike upstream (Python slices that quietly come out short), a slice beyond the frame's
//! data is an error, so a short frame is counted as a conversion error instead of becoming
//! a wrong value.

use serde_json::Value as Json;
use tbgw::eval::{Expr, Val};

/// The longest message a value can be read from: a J1939 multi-packet message (a CAN FD
/// frame has 64 bytes, a classic one 8); a slice beyond a frame's data is a conversion error.
pub const MAX_MESSAGE: usize = 1785;

/// Byte order of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Most significant byte first (upstream's default).
    Big,
    /// Least significant byte first.
    Little,
}

impl Order {
    fn parse(s: &str) -> Result<Order, String> {
        match s {
            "big" | "" => Ok(Order::Big),
            "little" => Ok(Order::Little),
            other => Err(format!("byte order {other:?}: expected big or little")),
        }
    }
}

/// Text encodings a `string` value or a string RPC value may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// 7-bit ASCII (upstream's default).
    Ascii,
    /// UTF-8.
    Utf8,
    /// ISO 8859-1.
    Latin1,
}

impl Encoding {
    /// Python's codec names for the three.
    pub fn parse(s: &str) -> Result<Encoding, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "" | "ascii" | "us-ascii" => Ok(Encoding::Ascii),
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" => Ok(Encoding::Latin1),
            other => Err(format!(
                "encoding {other:?}: tbgw knows ascii, utf-8 and latin-1"
            )),
        }
    }

    fn decode(self, b: &[u8]) -> Result<String, String> {
        match self {
            Encoding::Ascii if b.is_ascii() => Ok(b.iter().map(|&c| c as char).collect()),
            Encoding::Ascii => Err("bytes are not ASCII".into()),
            Encoding::Utf8 => std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|e| format!("not UTF-8: {e}")),
            Encoding::Latin1 => Ok(b.iter().map(|&c| c as char).collect()),
        }
    }

    fn encode(self, s: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Ascii if s.is_ascii() => Ok(s.as_bytes().to_vec()),
            Encoding::Ascii => Err(format!("{s:?} is not ASCII")),
            Encoding::Utf8 => Ok(s.as_bytes().to_vec()),
            Encoding::Latin1 => s
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| format!("{c:?} is not Latin-1")))
                .collect(),
        }
    }
}

/// The type a slice is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first byte, non-zero is true.
    Bool,
    /// An integer of up to 8 bytes.
    Int {
        /// Two's complement.
        signed: bool,
    },
    /// IEEE 754 single (the first 4 bytes).
    Float,
    /// IEEE 754 double (the first 8 bytes).
    Double,
    /// Text.
    Str(Encoding),
    /// Lower-case hex of the bytes.
    Raw,
}

/// Where a value is in the frame and how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// First byte.
    pub start: usize,
    /// Bytes; `None` (upstream's `-1`): to the end of the frame.
    pub len: Option<usize>,
    /// Byte order.
    pub order: Order,
    /// Type.
    pub kind: Kind,
}

fn num(s: &str, what: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .map_err(|_| format!("{what} {s:?} is not a number"))
}

impl Slice {
    /// Reads upstream's `value`: a string `"4:2:big:int"`, `"0:-1:string:utf-8"`, or an object
    /// `{start, length, byteorder, type, signed, encoding}`.
    pub fn parse(v: &Json) -> Result<Slice, String> {
        match v {
            Json::String(s) => Slice::parse_str(s),
            Json::Object(o) => {
                let int = |k: &str| -> Result<i64, String> {
                    match o.get(k) {
                        Some(Json::Number(n)) => n
                            .as_i64()
                            .ok_or_else(|| format!("{k}: {n} is not an integer")),
                        Some(Json::String(s)) => s
                            .trim()
                            .parse()
                            .map_err(|_| format!("{k}: {s:?} is not an integer")),
                        Some(other) => Err(format!("{k}: {other} is not an integer")),
                        None => Err(format!("{k} is missing")),
                    }
                };
                let start =
                    usize::try_from(int("start")?).map_err(|_| "start is negative".to_string())?;
                let len = int("length")?;
                let order = Order::parse(o.get("byteorder").and_then(Json::as_str).unwrap_or(""))?;
                let ty = o
                    .get("type")
                    .and_then(Json::as_str)
                    .ok_or("type is missing")?;
                let extra = if ty.starts_with('i') || ty.starts_with('l') {
                    match o.get("signed") {
                        Some(Json::Bool(true)) => "signed",
                        _ => "",
                    }
                } else {
                    o.get("encoding").and_then(Json::as_str).unwrap_or("")
                };
                Slice::build(start, len, order, ty, extra)
            }
            other => Err(format!(
                "{other} is not a value description (a string like \"0:2:big:int\" or an object)"
            )),
        }
    }

    fn parse_str(s: &str) -> Result<Slice, String> {
        let shape = "expected \"start:length:[big|little:]type[:signed|encoding]\"";
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() < 3 || parts.len() > 5 {
            return Err(format!("{s:?}: {shape}"));
        }
        let start = num(parts[0], "start")?;
        let len: i64 = parts[1]
            .parse()
            .map_err(|_| format!("{s:?}: length {:?} is not a number; {shape}", parts[1]))?;
        let (order, ty, extra) = match parts.len() {
            3 => (Order::Big, parts[2], ""),
            4 if matches!(parts[2], "big" | "little") => (Order::parse(parts[2])?, parts[3], ""),
            4 => (Order::Big, parts[2], parts[3]),
            _ => (
                Order::parse(parts[2]).map_err(|e| format!("{s:?}: {e}"))?,
                parts[3],
                parts[4],
            ),
        };
        Slice::build(start, len, order, ty, extra).map_err(|e| format!("{s:?}: {e}"))
    }

    fn build(start: usize, len: i64, order: Order, ty: &str, extra: &str) -> Result<Slice, String> {
        if start >= MAX_MESSAGE {
            return Err(format!(
                "start {start} is beyond the {MAX_MESSAGE} bytes of the longest message (a J1939 multi-packet message; a CAN FD frame has 64)"
            ));
        }
        let len = match len {
            -1 => None,
            0..=1785 => Some(len as usize),
            _ => {
                return Err(format!(
                    "length {len}: expected 1 ..= {MAX_MESSAGE}, or -1 for the rest of the frame"
                ))
            }
        };
        let kind = match ty {
            "bool" | "boolean" => Kind::Bool,
            "int" | "long" => Kind::Int {
                signed: extra == "signed",
            },
            "float" => Kind::Float,
            "double" => Kind::Double,
            "string" => Kind::Str(Encoding::parse(extra)?),
            "raw" => Kind::Raw,
            other => {
                return Err(format!(
                "type {other:?}: expected bool, boolean, int, long, float, double, string or raw"
            ))
            }
        };
        if let (Kind::Int { .. }, Some(l)) = (kind, len) {
            if l > 8 {
                return Err(format!("an int of {l} bytes does not fit 64 bits"));
            }
        }
        Ok(Slice {
            start,
            len,
            order,
            kind,
        })
    }

    /// The value in `data`.
    pub fn decode(&self, data: &[u8]) -> Result<Val, String> {
        let end = match self.len {
            Some(l) => self.start + l,
            None => data.len().max(self.start),
        };
        let Some(b) = data.get(self.start..end) else {
            return Err(format!(
                "bytes {}..{end} are beyond the frame's {} data bytes",
                self.start,
                data.len()
            ));
        };
        Ok(match self.kind {
            Kind::Bool => Val::Bool(*b.first().ok_or("no byte for a bool")? != 0),
            Kind::Int { signed } => {
                if b.len() > 8 {
                    return Err(format!("an int of {} bytes does not fit 64 bits", b.len()));
                }
                let u = uint(b, self.order);
                if signed && !b.is_empty() {
                    let shift = 64 - 8 * b.len() as u32;
                    Val::Int(((u << shift) as i64) >> shift)
                } else if let Ok(i) = i64::try_from(u) {
                    Val::Int(i)
                } else {
                    Val::Float(u as f64)
                }
            }
            Kind::Float => {
                let w: [u8; 4] = b
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or("a float needs 4 bytes")?;
                let f = match self.order {
                    Order::Big => f32::from_be_bytes(w),
                    Order::Little => f32::from_le_bytes(w),
                };
                Val::Float(f64::from(f))
            }
            Kind::Double => {
                let w: [u8; 8] = b
                    .get(..8)
                    .and_then(|s| s.try_into().ok())
                    .ok_or("a double needs 8 bytes")?;
                Val::Float(match self.order {
                    Order::Big => f64::from_be_bytes(w),
                    Order::Little => f64::from_le_bytes(w),
                })
            }
            Kind::Str(e) => Val::Str(e.decode(b)?),
            Kind::Raw => Val::Str(hex_lower(b)),
        })
    }
}

/// An unsigned integer of up to 8 bytes.
pub fn uint(b: &[u8], order: Order) -> u64 {
    let mut u = 0u64;
    match order {
        Order::Big => b.iter().for_each(|&x| u = (u << 8) | u64::from(x)),
        Order::Little => b.iter().rev().for_each(|&x| u = (u << 8) | u64::from(x)),
    }
    u
}

/// Lower-case hex without separators.
pub fn hex_lower(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[usize::from(x >> 4)] as char);
        s.push(H[usize::from(x & 15)] as char);
    }
    s
}

/// Python's `bytearray.fromhex`: pairs of hex digits, whitespace allowed between pairs.
pub fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 2);
    let mut hi: Option<u8> = None;
    for (i, c) in s.char_indices() {
        if hi.is_none() && c.is_ascii_whitespace() {
            continue;
        }
        let d = c.to_digit(16).ok_or_else(|| {
            format!("{s:?} is not hex: non-hexadecimal number found at position {i}")
        })? as u8;
        match hi.take() {
            None => hi = Some(d),
            Some(h) => out.push((h << 4) | d),
        }
    }
    if hi.is_some() {
        return Err(format!("{s:?} is not hex: an odd number of digits"));
    }
    Ok(out)
}

/// A `command` filter: the frame's bytes `start..start+len` read as an unsigned integer must
/// equal `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// First byte.
    pub start: usize,
    /// Bytes (1 ..= 8).
    pub len: usize,
    /// Byte order.
    pub order: Order,
    /// The value that selects the entry.
    pub value: u64,
}

impl Command {
    /// Reads `"2:2:big:48059"` or `{start, length, byteorder, value}`.
    pub fn parse(v: &Json) -> Result<Command, String> {
        let (start, len, order, value) = match v {
            Json::String(s) => {
                let shape = "expected \"start:length:[big|little:]value\"";
                let p: Vec<&str> = s.split(':').collect();
                let (start, len, order, value) = match p.as_slice() {
                    [a, b, v] => (*a, *b, "big", *v),
                    [a, b, o, v] => (*a, *b, *o, *v),
                    _ => return Err(format!("{s:?}: {shape}")),
                };
                (
                    num(start, "start")?,
                    num(len, "length")?,
                    Order::parse(order)?,
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("{s:?}: value {value:?} is not a number; {shape}"))?,
                )
            }
            Json::Object(o) => {
                let n = |k: &str| {
                    o.get(k)
                        .and_then(|v| {
                            v.as_u64()
                                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        })
                        .ok_or_else(|| format!("{k} is missing or not a number"))
                };
                (
                    n("start")? as usize,
                    n("length")? as usize,
                    Order::parse(o.get("byteorder").and_then(Json::as_str).unwrap_or(""))?,
                    n("value")?,
                )
            }
            other => return Err(format!("{other} is not a command")),
        };
        if !(1..=8).contains(&len) || start >= MAX_MESSAGE {
            return Err(format!(
                "start {start}, length {len}: the length is 1 ..= 8 bytes within {MAX_MESSAGE}"
            ));
        }
        Ok(Command {
            start,
            len,
            order,
            value,
        })
    }

    /// Does `data` carry this command?
    pub fn matches(&self, data: &[u8]) -> bool {
        data.get(self.start..self.start + self.len)
            .is_some_and(|b| uint(b, self.order) == self.value)
    }
}

/// How a value from ThingsBoard becomes frame data (an `attributeUpdates` or `serverSideRpc`
/// entry, after `overrideRpcConfig` merged the RPC's params in).
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    /// Fixed data; wins over everything else. `Err`: the configured text is not hex (the
    /// request answers that error).
    pub in_hex: Option<Result<Vec<u8>, String>>,
    /// Computes the value from the params (attribute updates: from `value`).
    pub expr: Option<Expr>,
    /// Bytes of an integer value (default 1).
    pub length: usize,
    /// Byte order of a number (default big).
    pub order: Option<Order>,
    /// Integers are written signed (negative values always are).
    pub signed: bool,
    /// Encoding of a string value (default ascii).
    pub encoding: Option<Encoding>,
    /// Bytes before the value.
    pub before: Vec<u8>,
    /// Bytes after the value.
    pub after: Vec<u8>,
}

impl Encoder {
    /// The frame data for `params` (an RPC's params, or `{"value": v}` for an attribute
    /// update).
    pub fn encode(&self, params: &Json) -> Result<Vec<u8>, String> {
        if let Some(h) = &self.in_hex {
            return h.clone();
        }
        let obj = match params {
            Json::Object(o) if !o.is_empty() => Some(o),
            _ => None,
        };
        if let Some(h) = obj
            .and_then(|o| o.get("dataInHex"))
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
        {
            return from_hex(h).map_err(|e| format!("params.dataInHex: {e}"));
        }
        let value = if let Some(e) = &self.expr {
            let lookup = |name: &str| -> Option<Val> {
                match obj {
                    Some(o) => o.get(name).map(Val::from_json),
                    None if name == "value" && !params.is_object() => Some(Val::from_json(params)),
                    None => None,
                }
            };
            e.eval(&lookup)
                .map_err(|err| format!("dataExpression {:?}: {err}", e.source()))?
        } else if let Some(v) = obj.and_then(|o| o.get("value")) {
            Val::from_json(v)
        } else if !params.is_null() && !params.is_object() {
            // Beyond upstream: a bare value as params.
            Val::from_json(params)
        } else {
            return Err("no `value` in the params and no dataExpression".into());
        };
        let mut out = self.before.clone();
        let order = self.order.unwrap_or(Order::Big);
        match value {
            Val::Bool(b) => out.push(u8::from(b)),
            Val::Int(i) => {
                let len = self.length.max(1);
                if len > 8 {
                    return Err(format!(
                        "dataLength {len}: integers are written with at most 8 bytes"
                    ));
                }
                let signed = self.signed || i < 0;
                let fits = if len == 8 {
                    signed || i >= 0
                } else if signed {
                    let half = 1i64 << (8 * len - 1);
                    (-half..half).contains(&i)
                } else {
                    i >= 0 && i < (1i64 << (8 * len))
                };
                if !fits {
                    return Err(format!(
                        "{i} does not fit {len} byte(s){}",
                        if signed { " signed" } else { "" }
                    ));
                }
                let be = i.to_be_bytes();
                let bytes = &be[8 - len..];
                match order {
                    Order::Big => out.extend_from_slice(bytes),
                    Order::Little => out.extend(bytes.iter().rev()),
                }
            }
            Val::Float(f) => {
                let f = f as f32;
                out.extend_from_slice(&match order {
                    Order::Big => f.to_be_bytes(),
                    Order::Little => f.to_le_bytes(),
                });
            }
            Val::Str(s) => out.extend(self.encoding.unwrap_or(Encoding::Ascii).encode(&s)?),
            // Upstream writes nothing for other types.
            Val::None | Val::List(_) => {}
        }
        out.extend_from_slice(&self.after);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(s: &str) -> Slice {
        Slice::parse(&json!(s)).unwrap()
    }

    #[test]
    fn value_slices_read_every_type_and_order() {
        let d = [0x00, 0x01, 0x21, 0x0B, 0x34, 0x12, 0xFF, 0xFE];
        assert_eq!(slice("4:2:big:int").decode(&d), Ok(Val::Int(0x3412)));
        assert_eq!(slice("4:2:little:int").decode(&d), Ok(Val::Int(0x1234)));
        assert_eq!(slice("6:2:big:int:signed").decode(&d), Ok(Val::Int(-2)));
        assert_eq!(slice("6:2:int").decode(&d), Ok(Val::Int(0xFFFE)));
        assert_eq!(slice("4:1:int").decode(&d), Ok(Val::Int(0x34)));
        assert_eq!(slice("1:1:bool").decode(&d), Ok(Val::Bool(true)));
        assert_eq!(slice("0:1:boolean").decode(&d), Ok(Val::Bool(false)));
        assert_eq!(slice("2:2:raw").decode(&d), Ok(Val::Str("210b".into())));
        assert_eq!(
            slice("0:-1:raw").decode(&d),
            Ok(Val::Str("0001210b3412fffe".into()))
        );
        assert_eq!(
            slice("0:8:long").decode(&[0xFF; 8]),
            Ok(Val::Float(u64::MAX as f64))
        );
        let f = 12.5f32.to_le_bytes();
        assert_eq!(slice("0:4:little:float").decode(&f), Ok(Val::Float(12.5)));
        let dd = (-3.25f64).to_be_bytes();
        assert_eq!(slice("0:8:double").decode(&dd), Ok(Val::Float(-3.25)));
        assert_eq!(slice("0:2:string").decode(b"OK"), Ok(Val::Str("OK".into())));
        assert_eq!(
            slice("0:-1:string:utf-8").decode("é".as_bytes()),
            Ok(Val::Str("é".into()))
        );
        assert!(slice("0:1:string").decode(&[0xE9]).is_err());
        // Beyond the frame: an error, not a short value.
        assert!(slice("6:4:int").decode(&d).is_err());
        assert!(slice("0:4:float").decode(&[1, 2]).is_err());
        let o = Slice::parse(
            &json!({"start": 1, "length": 2, "byteorder": "little", "type": "int", "signed": true}),
        )
        .unwrap();
        assert_eq!(o.decode(&[0, 0xFE, 0xFF]), Ok(Val::Int(-2)));
    }

    #[test]
    fn bad_value_descriptions_are_named() {
        for bad in [
            "4:int",
            "x:1:int",
            "0:9:int",
            "0:1:bits",
            "0:1:middle:int",
            "1785:1:int",
            "0::int",
        ] {
            assert!(Slice::parse(&json!(bad)).is_err(), "{bad}");
        }
        assert!(Slice::parse(&json!(5)).is_err());
    }

    #[test]
    fn commands_filter_frames() {
        let c = Command::parse(&json!("2:2:big:48059")).unwrap();
        assert!(c.matches(&[0, 0, 0xBB, 0xBB, 1]));
        assert!(!c.matches(&[0, 0, 0xBB, 0xBA]));
        assert!(!c.matches(&[0, 0, 0xBB]));
        let c = Command::parse(&json!("0:2:little:1")).unwrap();
        assert!(c.matches(&[1, 0]));
        let c = Command::parse(&json!({"start": 0, "length": 1, "value": 7})).unwrap();
        assert!(c.matches(&[7]));
        assert!(Command::parse(&json!("0:0:1")).is_err());
        assert!(Command::parse(&json!("0:1:big:x")).is_err());
    }

    #[test]
    fn hex_is_read_like_python() {
        assert_eq!(from_hex("AB CD ab cd"), Ok(vec![0xAB, 0xCD, 0xAB, 0xCD]));
        assert_eq!(from_hex("aaaa bbbb"), Ok(vec![0xAA, 0xAA, 0xBB, 0xBB]));
        assert_eq!(from_hex(""), Ok(vec![]));
        let e = from_hex("aa bb cc d ee ff").unwrap_err();
        assert!(e.contains("position 10"), "{e}");
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn downlink_data_is_built_like_upstream() {
        let e = Encoder {
            length: 4,
            order: Some(Order::Little),
            expr: Some(Expr::parse("value + 5").unwrap()),
            ..Encoder::default()
        };
        assert_eq!(e.encode(&json!({"value": 1})), Ok(vec![6, 0, 0, 0]));
        let e = Encoder {
            length: 2,
            order: Some(Order::Little),
            before: vec![0x00, 0xAA],
            ..Encoder::default()
        };
        assert_eq!(
            e.encode(&json!({"value": 0x1234})),
            Ok(vec![0, 0xAA, 0x34, 0x12])
        );
        assert_eq!(e.encode(&json!(7)), Ok(vec![0, 0xAA, 7, 0]));
        assert!(e.encode(&json!({"value": 70000})).is_err());
        assert_eq!(
            e.encode(&json!({"value": -1})),
            Ok(vec![0, 0xAA, 0xFF, 0xFF])
        );
        let e = Encoder {
            after: vec![1, 2],
            expr: Some(
                Expr::parse("userSpeed if maxAllowedSpeed > userSpeed else maxAllowedSpeed")
                    .unwrap(),
            ),
            length: 1,
            ..Encoder::default()
        };
        assert_eq!(
            e.encode(&json!({"userSpeed": 50, "maxAllowedSpeed": 40})),
            Ok(vec![40, 1, 2])
        );
        assert!(e
            .encode(&json!({"userSpeed": 50}))
            .unwrap_err()
            .contains("maxAllowedSpeed"));
        assert_eq!(
            Encoder::default().encode(&json!({"value": true})),
            Ok(vec![1])
        );
        assert_eq!(
            Encoder::default().encode(&json!({"value": "Hi"})),
            Ok(b"Hi".to_vec())
        );
        assert_eq!(
            Encoder::default().encode(&json!({"value": 1.5})),
            Ok(1.5f32.to_be_bytes().to_vec())
        );
        assert_eq!(
            Encoder::default().encode(&json!({"dataInHex": "0102"})),
            Ok(vec![1, 2])
        );
        assert!(Encoder::default().encode(&json!({})).is_err());
        let bad = Encoder {
            in_hex: Some(from_hex("cc d ee")),
            ..Encoder::default()
        };
        assert!(bad.encode(&json!({})).unwrap_err().contains("not hex"));
    }
}
