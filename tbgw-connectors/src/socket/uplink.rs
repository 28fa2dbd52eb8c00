//! Device bytes to gateway data, pure and synchronous: cutting a stream into messages
//! ([`Framer`]), matching a peer address to devices ([`AddressPattern`]), and turning one
//! message into [`DeviceData`] or an attribute request ([`Device::convert`]).

use std::sync::Arc;

use tbgw::convert::{ConvertError, UplinkConverter, UplinkInput};
use tbgw::model::{DeviceData, Value};
use tbgw::report::ReportOverrides;

/// How text is read from and written to device bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8.
    Utf8,
    /// 7-bit ASCII.
    Ascii,
    /// ISO 8859-1: one byte, one character.
    Latin1,
    /// UTF-16 with a byte order mark (little endian without one, and when writing, as
    /// Python's `utf-16`).
    Utf16,
    /// UTF-16 little endian, no mark.
    Utf16Le,
    /// UTF-16 big endian, no mark.
    Utf16Be,
    /// Bytes as lower-case hex digits (and hex digits to bytes when writing).
    Hex,
}

impl Encoding {
    /// The encoding a name means (Python codec spellings, any case), if it is one of ours.
    pub fn parse(name: &str) -> Option<Encoding> {
        let n = name.trim().to_ascii_lowercase().replace('_', "-");
        Some(match n.as_str() {
            "utf-8" | "utf8" | "u8" => Encoding::Utf8,
            "ascii" | "us-ascii" => Encoding::Ascii,
            "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" | "l1" => Encoding::Latin1,
            "utf-16" | "utf16" => Encoding::Utf16,
            "utf-16-le" | "utf-16le" => Encoding::Utf16Le,
            "utf-16-be" | "utf-16be" => Encoding::Utf16Be,
            "hex" => Encoding::Hex,
            _ => return None,
        })
    }

    /// Text from device bytes. NULs are removed (as upstream does). Errors name the problem.
    pub fn decode(self, b: &[u8]) -> Result<String, String> {
        let s = match self {
            Encoding::Hex => return Ok(hex(b)),
            Encoding::Utf8 => std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|e| format!("not UTF-8 ({e})"))?,
            Encoding::Ascii => {
                if let Some(i) = b.iter().position(|c| !c.is_ascii()) {
                    return Err(format!("not ASCII (byte {:#04x} at {i})", b[i]));
                }
                String::from_utf8_lossy(b).into_owned()
            }
            Encoding::Latin1 => b.iter().map(|&c| char::from(c)).collect(),
            Encoding::Utf16 | Encoding::Utf16Le | Encoding::Utf16Be => {
                let (mut body, mut big) = (b, self == Encoding::Utf16Be);
                if self == Encoding::Utf16 {
                    match b {
                        [0xFF, 0xFE, rest @ ..] => body = rest,
                        [0xFE, 0xFF, rest @ ..] => (body, big) = (rest, true),
                        _ => {}
                    }
                }
                if body.len() % 2 != 0 {
                    return Err(format!("odd length {} for UTF-16", body.len()));
                }
                let units = body.chunks_exact(2).map(|c| {
                    if big {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                });
                char::decode_utf16(units)
                    .collect::<Result<String, _>>()
                    .map_err(|e| format!("not UTF-16 ({e})"))?
            }
        };
        Ok(if s.contains('\0') {
            s.replace('\0', "")
        } else {
            s
        })
    }

    /// Device bytes for text. `hex` reads hex digits; ASCII and Latin-1 refuse characters they
    /// cannot hold.
    pub fn encode(self, s: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Utf8 => Ok(s.as_bytes().to_vec()),
            Encoding::Ascii => {
                if s.is_ascii() {
                    Ok(s.as_bytes().to_vec())
                } else {
                    Err("the value is not ASCII".into())
                }
            }
            Encoding::Latin1 => s
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| format!("{c:?} is not Latin-1")))
                .collect(),
            Encoding::Utf16 => {
                let mut v = vec![0xFF, 0xFE];
                s.encode_utf16().for_each(|u| v.extend(u.to_le_bytes()));
                Ok(v)
            }
            Encoding::Utf16Le => Ok(s.encode_utf16().flat_map(u16::to_le_bytes).collect()),
            Encoding::Utf16Be => Ok(s.encode_utf16().flat_map(u16::to_be_bytes).collect()),
            Encoding::Hex => unhex(s),
        }
    }
}

/// Lower-case hex digits of `b`.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        s.push(char::from(D[usize::from(c >> 4)]));
        s.push(char::from(D[usize::from(c & 15)]));
    }
    s
}

/// Bytes from hex digits (white space ignored).
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    digits
        .chunks_exact(2)
        .map(|p| {
            let d = |c: u8| char::from(c).to_digit(16);
            match (d(p[0]), d(p[1])) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err(format!("{:?} is not hex", String::from_utf8_lossy(p))),
            }
        })
        .collect()
}

/// A slice of a message, with Python's rules: negative bounds count from the end, bounds past
/// the end are clamped, an empty range is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    /// `[from:to]`; `None` is the start or the end.
    Range(Option<i64>, Option<i64>),
    /// `[i]`: one byte.
    Index(i64),
}

impl Slice {
    /// The bytes of `data` this slice selects; `None` for an index out of range.
    pub fn apply(self, data: &[u8]) -> Option<&[u8]> {
        let len = data.len() as i64;
        let at = |i: i64| if i < 0 { (i + len).max(0) } else { i.min(len) };
        match self {
            Slice::Range(from, to) => {
                let f = from.map_or(0, at);
                let t = to.map_or(len, at);
                if f >= t {
                    Some(&data[0..0])
                } else {
                    data.get(f as usize..t as usize)
                }
            }
            Slice::Index(i) => {
                let i = if i < 0 { i + len } else { i };
                if i < 0 || i >= len {
                    None
                } else {
                    data.get(i as usize..i as usize + 1)
                }
            }
        }
    }

    /// Parses `[from:to]`, `[from:]`, `[:to]`, `[:]` or `[i]` (brackets included).
    pub fn parse(s: &str) -> Option<Slice> {
        let inner = s.trim().strip_prefix('[')?.strip_suffix(']')?;
        let num = |t: &str| -> Option<Option<i64>> {
            let t = t.trim();
            if t.is_empty() {
                Some(None)
            } else {
                t.parse().ok().map(Some)
            }
        };
        match inner.split_once(':') {
            Some((a, b)) => Some(Slice::Range(num(a)?, num(b)?)),
            None => Some(Slice::Index(inner.trim().parse().ok()?)),
        }
    }

    /// Every `[...]` slice in an expression such as `[3:]` or `[0:2][4:6]`.
    pub fn all_in(expr: &str) -> Option<Vec<Slice>> {
        let mut out = Vec::new();
        let mut rest = expr;
        while let Some(open) = rest.find('[') {
            let close = rest[open..].find(']')? + open;
            out.push(Slice::parse(&rest[open..=close])?);
            rest = &rest[close + 1..];
        }
        Some(out)
    }
}

/// Byte order of the binary value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Most significant byte first.
    Big,
    /// Least significant byte first.
    Little,
}

/// What a slice's value becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// The decoded text (upstream's only kind).
    String,
    /// The text as an integer (hex digits for the `hex` encoding).
    Int,
    /// The text as a floating-point number.
    Double,
    /// `true`/`false`/`1`/`0` (any case).
    Bool,
    /// The text parsed as JSON.
    Json,
    /// A binary signed integer of 1, 2, 4 or 8 bytes.
    BinInt(usize, Order),
    /// A binary unsigned integer of 1, 2, 4 or 8 bytes.
    BinUInt(usize, Order),
    /// A binary IEEE 754 float of 4 or 8 bytes.
    BinFloat(usize, Order),
}

impl ValueKind {
    /// The kind a `type` name means, if any.
    pub fn parse(name: &str, order: Order) -> Option<ValueKind> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "string" | "str" | "text" => ValueKind::String,
            "int" | "integer" | "long" => ValueKind::Int,
            "double" | "float" | "number" => ValueKind::Double,
            "bool" | "boolean" => ValueKind::Bool,
            "json" => ValueKind::Json,
            "int8" => ValueKind::BinInt(1, order),
            "uint8" => ValueKind::BinUInt(1, order),
            "int16" => ValueKind::BinInt(2, order),
            "uint16" => ValueKind::BinUInt(2, order),
            "int32" => ValueKind::BinInt(4, order),
            "uint32" => ValueKind::BinUInt(4, order),
            "int64" => ValueKind::BinInt(8, order),
            "uint64" => ValueKind::BinUInt(8, order),
            "float32" => ValueKind::BinFloat(4, order),
            "float64" => ValueKind::BinFloat(8, order),
            _ => return None,
        })
    }

    fn value(self, raw: &[u8], enc: Encoding) -> Result<Value, String> {
        let text = || enc.decode(raw);
        match self {
            ValueKind::String => text().map(Value::String),
            ValueKind::Int => {
                let t = text()?;
                let t = t.trim();
                let r = if enc == Encoding::Hex {
                    i64::from_str_radix(t, 16)
                } else {
                    t.parse()
                };
                r.map(Value::Int)
                    .map_err(|_| format!("{t:?} is not an integer"))
            }
            ValueKind::Double => {
                let t = text()?;
                t.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::Float)
                    .ok_or_else(|| format!("{:?} is not a number", t.trim()))
            }
            ValueKind::Bool => {
                let t = text()?;
                match t.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(Value::Bool(true)),
                    "false" | "0" => Ok(Value::Bool(false)),
                    other => Err(format!("{other:?} is not a boolean")),
                }
            }
            ValueKind::Json => {
                let t = text()?;
                serde_json::from_str(&t)
                    .map(Value::from_json)
                    .map_err(|e| format!("not JSON ({e})"))
            }
            ValueKind::BinInt(n, o) | ValueKind::BinUInt(n, o) | ValueKind::BinFloat(n, o) => {
                if raw.len() != n {
                    return Err(format!("{} bytes where {n} are needed", raw.len()));
                }
                let mut b = [0u8; 8];
                match o {
                    Order::Big => b[8 - n..].copy_from_slice(raw),
                    Order::Little => {
                        b[8 - n..].copy_from_slice(raw);
                        b[8 - n..].reverse();
                    }
                }
                let u = u64::from_be_bytes(b);
                Ok(match self {
                    ValueKind::BinUInt(..) => match i64::try_from(u) {
                        Ok(i) => Value::Int(i),
                        Err(_) => Value::Float(u as f64),
                    },
                    ValueKind::BinInt(..) => {
                        let shift = 64 - 8 * n as u32;
                        Value::Int(((u << shift) as i64) >> shift)
                    }
                    _ => {
                        let f = if n == 4 {
                            f64::from(f32::from_bits(u as u32))
                        } else {
                            f64::from_bits(u)
                        };
                        if !f.is_finite() {
                            return Err("not a finite number".into());
                        }
                        Value::Float(f)
                    }
                })
            }
        }
    }
}

/// One key read from a slice of the message.
#[derive(Debug, Clone)]
pub struct Point {
    /// The key in ThingsBoard.
    pub key: String,
    /// A client attribute (`attributes[]`) rather than time series.
    pub attribute: bool,
    /// The bytes it is read from.
    pub slice: Slice,
    /// What the bytes become.
    pub kind: ValueKind,
}

/// An `attributeRequests[]` entry.
#[derive(Debug, Clone)]
pub struct AttrRequest {
    /// Client (`true`) or shared attributes.
    pub client: bool,
    /// The slice compared with `equals`; `None`: the whole message.
    pub slice: Option<Slice>,
    /// What the slice must be (as UTF-8 text).
    pub equals: String,
    /// The slices naming the requested attributes.
    pub names: Vec<Slice>,
}

impl AttrRequest {
    /// Parses upstream's `requestExpression` (`${[0:3]==atr}`; without `${…}` the whole message
    /// must equal the text) and `attributeNameExpression` (`[3:]`).
    pub fn parse(client: bool, request: &str, names: &str) -> Result<AttrRequest, String> {
        let names = Slice::all_in(names)
            .filter(|v| !v.is_empty())
            .ok_or("expected one or more slices such as `[3:]` or `[2:5]`")?;
        let t = request.trim();
        if t.is_empty() {
            return Err("must not be empty".into());
        }
        let (slice, equals) = match t.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            Some(inner) => {
                let (lhs, rhs) = inner
                    .split_once("==")
                    .ok_or("expected `${[from:to]==text}`")?;
                let slice = Slice::parse(lhs).ok_or("expected `${[from:to]==text}`")?;
                (Some(slice), rhs.to_string())
            }
            None => (None, t.to_string()),
        };
        Ok(AttrRequest {
            client,
            slice,
            equals,
            names,
        })
    }

    /// The attribute names this message asks for, when it is such a request.
    pub fn matches(&self, msg: &[u8]) -> Option<Result<Vec<String>, String>> {
        let part = match self.slice {
            Some(s) => s.apply(msg)?,
            None => msg,
        };
        if part != self.equals.as_bytes() {
            return None;
        }
        Some(
            self.names
                .iter()
                .map(|s| {
                    let b = s
                        .apply(msg)
                        .ok_or("attributeNameExpression: index past the end of the message")?;
                    String::from_utf8(b.to_vec())
                        .map_err(|_| "attributeNameExpression: the name is not UTF-8".to_string())
                })
                .collect(),
        )
    }
}

/// A peer address pattern: `*` matches any run of characters, everything else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPattern(String);

impl AddressPattern {
    /// A pattern from a config value: `ip:port`, an IPv4 address or host pattern alone (any
    /// port), `[v6]:port`, or a bare IPv6 address (any port).
    pub fn new(p: &str) -> AddressPattern {
        let p = p.trim();
        let colons = p.matches(':').count();
        let full = if p.starts_with('[') {
            if p.contains("]:") {
                p.to_string()
            } else {
                format!("{p}:*")
            }
        } else if colons == 0 {
            format!("{p}:*")
        } else if colons > 1 {
            // A bare IPv6 address, or a pattern like `*`-ed v6 without port.
            format!("[{p}]:*")
        } else {
            p.to_string()
        };
        AddressPattern(full)
    }

    /// Whether `peer` (`ip:port`, or `[v6]:port`) matches.
    pub fn matches(&self, peer: &str) -> bool {
        glob(self.0.as_bytes(), peer.as_bytes())
    }
}

/// `*`-only glob matching, linear time.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The text form of a peer address used for matching: `ip:port`, IPv6 in brackets, IPv4
/// mapped IPv6 addresses as IPv4.
pub fn peer_text(addr: std::net::SocketAddr) -> String {
    match addr {
        std::net::SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => format!("[{}]:{}", v6.ip(), v6.port()),
        },
        v4 => v4.to_string(),
    }
}

/// One configured device, compiled.
#[derive(Clone)]
pub struct Device {
    /// Its name in ThingsBoard.
    pub name: String,
    /// Its profile.
    pub device_type: String,
    /// Which peers it is.
    pub pattern: AddressPattern,
    /// How its bytes become text.
    pub encoding: Encoding,
    /// Its keys.
    pub points: Vec<Point>,
    /// Its attribute requests.
    pub attr_requests: Vec<AttrRequest>,
    /// Shared attributes written to it, with their encoding.
    pub attribute_updates: Vec<(String, Encoding)>,
    /// RPC methods written to it: method, encoding, with response.
    pub rpcs: Vec<(String, Encoding, bool)>,
    /// A custom converter in place of the byte slices.
    pub converter: Option<Arc<dyn UplinkConverter>>,
    /// Report strategies of the device and its keys.
    pub report: Option<Arc<ReportOverrides>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("pattern", &self.pattern)
            .field("points", &self.points.len())
            .field("custom_converter", &self.converter.is_some())
            .finish()
    }
}

/// What one message from a device is.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Data for ThingsBoard (possibly several records from a custom converter).
    Data(Vec<DeviceData>),
    /// An attribute request: client (`true`) or shared, and the keys.
    AttributeRequest(bool, Vec<String>),
    /// Nothing to send (every key failed or none is configured).
    Nothing,
}

impl Device {
    /// Converts one message received at `ts` from `peer`. Problems with single keys go to
    /// `errors` while the other keys are converted, as upstream does.
    pub fn convert(
        &self,
        peer: &str,
        msg: &[u8],
        ts: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Message {
        for r in &self.attr_requests {
            match r.matches(msg) {
                None => continue,
                Some(Ok(keys)) => return Message::AttributeRequest(r.client, keys),
                Some(Err(e)) => {
                    errors.push(ConvertError::Malformed(e));
                    return Message::Nothing;
                }
            }
        }
        if let Some(c) = &self.converter {
            let input = UplinkInput {
                source: peer,
                payload: msg,
                received_ts: ts,
            };
            return match c.convert(input, errors) {
                Ok(v) if !v.is_empty() => Message::Data(v),
                Ok(_) => Message::Nothing,
                Err(e) => {
                    errors.push(e);
                    Message::Nothing
                }
            };
        }
        let mut d = DeviceData::new(&self.name, &self.device_type);
        for p in &self.points {
            let v = p
                .slice
                .apply(msg)
                .ok_or_else(|| "the slice is past the end of the message".to_string())
                .and_then(|raw| p.kind.value(raw, self.encoding));
            match v {
                Ok(v) if p.attribute => d.push_attribute(&p.key, v),
                Ok(v) => d.push_telemetry(ts, &p.key, v),
                Err(reason) => errors.push(ConvertError::Value {
                    key: p.key.clone(),
                    reason,
                }),
            }
        }
        if d.is_empty() {
            return Message::Nothing;
        }
        d.report = self.report.clone();
        Message::Data(vec![d])
    }
}

/// How a byte stream is cut into messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Every read is one message (upstream's behaviour).
    None,
    /// Messages end with these bytes; keep them in the message or not.
    Delimiter(Vec<u8>, bool),
    /// Every message has this many bytes.
    Fixed(usize),
    /// A length field of 1, 2 or 4 bytes comes first.
    LengthPrefix {
        /// Bytes of the length field.
        bytes: usize,
        /// Its byte order.
        order: Order,
        /// The length counts the field itself.
        includes_prefix: bool,
        /// Hand the field to the converter with the message.
        keep_prefix: bool,
    },
}

/// What [`Framer::next_frame`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message.
    Message(Vec<u8>),
    /// A message longer than the limit was skipped (delimiter framing; reading goes on).
    TooLong(usize),
    /// The stream cannot be cut any more (a length prefix over the limit or too small): the
    /// connection should be closed.
    Broken(String),
}

/// Cuts a byte stream into messages, never holding more than the limit plus one read.
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    max: usize,
    buf: Vec<u8>,
    start: usize,
    /// Delimiter framing: bytes being skipped until the next delimiter, and how many.
    skipping: Option<usize>,
}

impl Framer {
    /// A framer for `framing`, with messages of at most `max` bytes.
    pub fn new(framing: Framing, max: usize) -> Framer {
        Framer {
            framing,
            max: max.max(1),
            buf: Vec::new(),
            start: 0,
            skipping: None,
        }
    }

    /// Whether every read is a message (no buffering).
    pub fn is_passthrough(&self) -> bool {
        self.framing == Framing::None
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next message in what was pushed, if a whole one is there. Call until `None`.
    pub fn next_frame(&mut self) -> Option<Frame> {
        let avail = &self.buf[self.start..];
        match &self.framing {
            Framing::None => {
                if avail.is_empty() {
                    return None;
                }
                let m = avail.to_vec();
                self.buf.clear();
                self.start = 0;
                Some(Frame::Message(m))
            }
            Framing::Fixed(n) => {
                let n = *n;
                if avail.len() < n {
                    return None;
                }
                let m = avail[..n].to_vec();
                self.start += n;
                Some(Frame::Message(m))
            }
            Framing::Delimiter(d, keep) => {
                let pos = find(avail, d);
                match (pos, self.skipping) {
                    (Some(i), Some(skipped)) => {
                        self.start += i + d.len();
                        self.skipping = None;
                        Some(Frame::TooLong(skipped + i))
                    }
                    (Some(i), None) if i > self.max => {
                        self.start += i + d.len();
                        Some(Frame::TooLong(i))
                    }
                    (Some(i), None) => {
                        let end = if *keep { i + d.len() } else { i };
                        let m = avail[..end].to_vec();
                        self.start += i + d.len();
                        Some(Frame::Message(m))
                    }
                    (None, skipping) => {
                        // Keep only what could still start a delimiter.
                        let keep_tail = d.len().saturating_sub(1);
                        if skipping.is_some() || avail.len() > self.max + keep_tail {
                            let drop = avail.len().saturating_sub(keep_tail);
                            self.skipping = Some(skipping.unwrap_or(0) + drop);
                            self.start += drop;
                        }
                        None
                    }
                }
            }
            Framing::LengthPrefix {
                bytes,
                order,
                includes_prefix,
                keep_prefix,
            } => {
                let n = *bytes;
                if avail.len() < n {
                    return None;
                }
                let mut b = [0u8; 8];
                b[8 - n..].copy_from_slice(&avail[..n]);
                if *order == Order::Little {
                    b[8 - n..].reverse();
                }
                let len = u64::from_be_bytes(b);
                let body = if *includes_prefix {
                    match len.checked_sub(n as u64) {
                        Some(l) => l,
                        None => {
                            return Some(Frame::Broken(format!(
                                "length prefix {len} is shorter than the prefix itself"
                            )))
                        }
                    }
                } else {
                    len
                };
                if body > self.max as u64 {
                    return Some(Frame::Broken(format!(
                        "length prefix {body} is over the limit of {} bytes",
                        self.max
                    )));
                }
                let body = body as usize;
                if avail.len() < n + body {
                    return None;
                }
                let from = if *keep_prefix { 0 } else { n };
                let m = avail[from..n + body].to_vec();
                self.start += n + body;
                Some(Frame::Message(m))
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    if needle.len() == 1 {
        return hay.iter().position(|&b| b == needle[0]);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(points: Vec<Point>, enc: Encoding) -> Device {
        Device {
            name: "D".into(),
            device_type: "default".into(),
            pattern: AddressPattern::new("*:*"),
            encoding: enc,
            points,
            attr_requests: vec![],
            attribute_updates: vec![],
            rpcs: vec![],
            converter: None,
            report: None,
        }
    }

    fn pt(key: &str, attribute: bool, slice: Slice, kind: ValueKind) -> Point {
        Point {
            key: key.into(),
            attribute,
            slice,
            kind,
        }
    }

    #[test]
    fn slices_follow_python() {
        let d = b"abcdef";
        assert_eq!(Slice::Range(Some(0), None).apply(d), Some(&d[..]));
        assert_eq!(Slice::Range(Some(0), Some(2)).apply(d), Some(&b"ab"[..]));
        assert_eq!(
            Slice::Range(Some(2), Some(100)).apply(d),
            Some(&b"cdef"[..])
        );
        assert_eq!(Slice::Range(Some(-2), None).apply(d), Some(&b"ef"[..]));
        assert_eq!(Slice::Range(Some(4), Some(2)).apply(d), Some(&b""[..]));
        assert_eq!(Slice::Range(Some(10), Some(20)).apply(d), Some(&b""[..]));
        assert_eq!(Slice::Index(1).apply(d), Some(&b"b"[..]));
        assert_eq!(Slice::Index(6).apply(d), None);
        assert_eq!(Slice::Index(-1).apply(d), Some(&b"f"[..]));
        assert_eq!(Slice::parse("[3:]"), Some(Slice::Range(Some(3), None)));
        assert_eq!(Slice::parse("[:-1]"), Some(Slice::Range(None, Some(-1))));
        assert_eq!(Slice::parse("[2]"), Some(Slice::Index(2)));
        assert_eq!(Slice::parse("[x:]"), None);
        assert_eq!(
            Slice::all_in("[0:2][4:]"),
            Some(vec![
                Slice::Range(Some(0), Some(2)),
                Slice::Range(Some(4), None)
            ])
        );
    }

    #[test]
    fn upstream_sample_keys_convert_as_strings() {
        // temp [0:-1 → end], hum [0:2], name attribute [0:end], num attribute [2:4]
        let d = device(
            vec![
                pt(
                    "temp",
                    false,
                    Slice::Range(Some(0), None),
                    ValueKind::String,
                ),
                pt(
                    "hum",
                    false,
                    Slice::Range(Some(0), Some(2)),
                    ValueKind::String,
                ),
                pt("name", true, Slice::Range(Some(0), None), ValueKind::String),
                pt(
                    "num",
                    true,
                    Slice::Range(Some(2), Some(4)),
                    ValueKind::String,
                ),
            ],
            Encoding::Utf8,
        );
        let mut errors = vec![];
        let Message::Data(v) = d.convert("127.0.0.1:1", b"21.5\0", 7, &mut errors) else {
            panic!()
        };
        assert!(errors.is_empty());
        let t = &v[0].telemetry[0];
        assert_eq!(t.ts, 7);
        assert_eq!(t.values[0], ("temp".into(), Value::String("21.5".into())));
        assert_eq!(t.values[1], ("hum".into(), Value::String("21".into())));
        assert_eq!(
            v[0].attributes[1],
            ("num".into(), Value::String(".5".into()))
        );
    }

    #[test]
    fn typed_values_and_errors_per_key() {
        let d = device(
            vec![
                pt("i", false, Slice::Range(Some(0), Some(2)), ValueKind::Int),
                pt(
                    "f",
                    false,
                    Slice::Range(Some(0), Some(4)),
                    ValueKind::Double,
                ),
                pt(
                    "u16",
                    false,
                    Slice::Range(Some(4), Some(6)),
                    ValueKind::BinUInt(2, Order::Big),
                ),
                pt(
                    "i16le",
                    false,
                    Slice::Range(Some(4), Some(6)),
                    ValueKind::BinInt(2, Order::Little),
                ),
                pt(
                    "short",
                    false,
                    Slice::Range(Some(5), Some(6)),
                    ValueKind::BinInt(2, Order::Big),
                ),
                pt("b", true, Slice::Index(6), ValueKind::Bool),
            ],
            Encoding::Latin1,
        );
        let mut errors = vec![];
        let Message::Data(v) = d.convert("p", b"12.5\xff\x01", 1, &mut errors) else {
            panic!()
        };
        let vals = &v[0].telemetry[0].values;
        assert_eq!(vals[0].1, Value::Int(12) /* "12" */);
        assert_eq!(vals[1].1, Value::Float(12.5));
        assert_eq!(vals[2].1, Value::Int(0xff01));
        assert_eq!(vals[3].1, Value::Int(0x01ff));
        assert_eq!(errors.len(), 2, "{errors:?}"); // short (1 byte) and b (index past end)
        let mut errors = vec![];
        assert_eq!(
            device(
                vec![pt("t", false, Slice::Range(None, None), ValueKind::String)],
                Encoding::Utf8
            )
            .convert("p", b"\xff\xfe", 1, &mut errors),
            Message::Nothing
        );
        assert!(matches!(&errors[0], ConvertError::Value { key, .. } if key == "t"));
    }

    #[test]
    fn encodings_round_trip() {
        assert_eq!(Encoding::Hex.decode(b"\x01\xab").unwrap(), "01ab");
        assert_eq!(Encoding::Hex.encode("01ab").unwrap(), b"\x01\xab");
        assert!(Encoding::Hex.encode("0g").is_err());
        let u16 = Encoding::Utf16.encode("hé").unwrap();
        assert_eq!(u16, b"\xff\xfeh\x00\xe9\x00");
        assert_eq!(Encoding::Utf16.decode(&u16).unwrap(), "hé");
        assert_eq!(Encoding::Utf16Be.decode(b"\x00h").unwrap(), "h");
        assert_eq!(Encoding::Latin1.decode(b"\xe9").unwrap(), "é");
        assert!(Encoding::Ascii.decode(b"\xe9").is_err());
        assert_eq!(Encoding::Utf8.decode(b"a\0b").unwrap(), "ab");
        assert_eq!(Encoding::parse("UTF_8"), Some(Encoding::Utf8));
        assert_eq!(Encoding::parse("cp1252"), None);
    }

    #[test]
    fn address_patterns() {
        let p = AddressPattern::new("*:*");
        assert!(p.matches("127.0.0.2:5000"));
        assert!(p.matches("[::1]:5000"));
        let p = AddressPattern::new("127.0.0.2");
        assert!(p.matches("127.0.0.2:5000"));
        assert!(!p.matches("127.0.0.20:5000"));
        let p = AddressPattern::new("127.0.0.*:5001");
        assert!(p.matches("127.0.0.9:5001"));
        assert!(!p.matches("127.0.0.9:5002"));
        let p = AddressPattern::new("::1");
        assert!(p.matches("[::1]:7"));
        let p = AddressPattern::new("[::1]:*");
        assert!(p.matches("[::1]:7"));
        assert!(!p.matches("127.0.0.1:7"));
        let v4mapped: std::net::SocketAddr = "[::ffff:127.0.0.3]:9".parse().unwrap();
        assert_eq!(peer_text(v4mapped), "127.0.0.3:9");
    }

    #[test]
    fn attribute_requests_as_upstream() {
        let r = AttrRequest::parse(false, "${[0:3]==atr}", "[3:]").unwrap();
        assert_eq!(r.matches(b"atrfw"), Some(Ok(vec!["fw".to_string()])));
        assert_eq!(r.matches(b"tempfw"), None);
        assert_eq!(r.matches(b"at"), None);
        let r = AttrRequest::parse(true, "GET", "[0:1][1:3]").unwrap();
        assert_eq!(r.matches(b"GET"), Some(Ok(vec!["G".into(), "ET".into()])));
        assert!(AttrRequest::parse(true, "${0:3==x}", "[3:]").is_err());
        assert!(AttrRequest::parse(true, "${[0:3]==x}", "3:").is_err());
        let mut d = device(vec![], Encoding::Utf8);
        d.attr_requests
            .push(AttrRequest::parse(false, "${[0:3]==atr}", "[3:]").unwrap());
        assert_eq!(
            d.convert("p", b"atrsharedName", 1, &mut vec![]),
            Message::AttributeRequest(false, vec!["sharedName".into()])
        );
    }

    #[test]
    fn delimiter_framing_splits_joins_and_skips_long_messages() {
        let mut f = Framer::new(Framing::Delimiter(b"\r\n".to_vec(), false), 8);
        f.push(b"ab\r\ncd\r");
        assert_eq!(f.next_frame(), Some(Frame::Message(b"ab".to_vec())));
        assert_eq!(f.next_frame(), None);
        f.push(b"\n0123456789");
        assert_eq!(f.next_frame(), Some(Frame::Message(b"cd".to_vec())));
        assert_eq!(f.next_frame(), None);
        f.push(b"abcdef\r\nok\r\n");
        assert_eq!(f.next_frame(), Some(Frame::TooLong(16)));
        assert_eq!(f.next_frame(), Some(Frame::Message(b"ok".to_vec())));
        assert_eq!(f.next_frame(), None);
        assert!(f.buf.len() <= 8 + 12 + 2);
    }

    #[test]
    fn fixed_and_length_prefix_framing() {
        let mut f = Framer::new(Framing::Fixed(3), 100);
        f.push(b"abcde");
        assert_eq!(f.next_frame(), Some(Frame::Message(b"abc".to_vec())));
        assert_eq!(f.next_frame(), None);
        f.push(b"f");
        assert_eq!(f.next_frame(), Some(Frame::Message(b"def".to_vec())));
        let lp = |inc, keep| Framing::LengthPrefix {
            bytes: 2,
            order: Order::Big,
            includes_prefix: inc,
            keep_prefix: keep,
        };
        let mut f = Framer::new(lp(false, false), 10);
        f.push(b"\x00\x02hi\x00");
        assert_eq!(f.next_frame(), Some(Frame::Message(b"hi".to_vec())));
        assert_eq!(f.next_frame(), None);
        f.push(b"\x01x");
        assert_eq!(f.next_frame(), Some(Frame::Message(b"x".to_vec())));
        f.push(b"\x00\x0b");
        assert!(matches!(f.next_frame(), Some(Frame::Broken(_))));
        let mut f = Framer::new(lp(true, true), 10);
        f.push(b"\x00\x03z");
        assert_eq!(f.next_frame(), Some(Frame::Message(b"\x00\x03z".to_vec())));
        f.push(b"\x00\x01");
        assert!(matches!(f.next_frame(), Some(Frame::Broken(_))));
    }
}
