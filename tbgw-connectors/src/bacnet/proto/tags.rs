//! BACnet tags and application values (ASHRAE 135 clause 20.2): the tag header (number,
//! class, length/value/type), opening and closing tags, and the thirteen application data
//! types. Decoding never panics: every read is bounds-checked and a short or malformed
//! buffer is a [`DecodeError`].

use std::fmt;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub(crate) fn new(s: impl Into<String>) -> Self {
        DecodeError(s.into())
    }
}

/// Longest value length accepted in a tag (a UDP datagram is shorter anyway).
const MAX_LEN: usize = 65_535;

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    /// The unread rest.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| DecodeError::new("truncated"))?;
        self.pos += 1;
        Ok(b)
    }
    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| DecodeError::new("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// The next tag header without consuming it.
    pub fn peek_tag(&self) -> Result<Tag, DecodeError> {
        self.clone().tag()
    }
    /// Reads a tag header.
    pub fn tag(&mut self) -> Result<Tag, DecodeError> {
        let first = self.u8()?;
        let mut number = first >> 4;
        let context = first & 0x08 != 0;
        if number == 0x0f {
            number = self.u8()?;
        }
        let lvt = first & 0x07;
        if context && lvt == 6 {
            return Ok(Tag {
                number,
                kind: TagKind::Open,
            });
        }
        if context && lvt == 7 {
            return Ok(Tag {
                number,
                kind: TagKind::Close,
            });
        }
        let len = if lvt == 5 {
            match self.u8()? {
                254 => self.u16()? as usize,
                255 => {
                    let b = self.take(4)?;
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
                }
                n => n as usize,
            }
        } else {
            lvt as usize
        };
        if len > MAX_LEN {
            return Err(DecodeError::new(format!("tag length {len} too large")));
        }
        Ok(Tag {
            number,
            kind: if context {
                TagKind::Context(len)
            } else {
                TagKind::Application(len)
            },
        })
    }
    /// Expects an opening tag `n`.
    pub fn open(&mut self, n: u8) -> Result<(), DecodeError> {
        match self.tag()? {
            Tag {
                number,
                kind: TagKind::Open,
            } if number == n => Ok(()),
            t => Err(DecodeError::new(format!(
                "expected opening tag {n}, got {t:?}"
            ))),
        }
    }
    /// Expects a closing tag `n`.
    pub fn close(&mut self, n: u8) -> Result<(), DecodeError> {
        match self.tag()? {
            Tag {
                number,
                kind: TagKind::Close,
            } if number == n => Ok(()),
            t => Err(DecodeError::new(format!(
                "expected closing tag {n}, got {t:?}"
            ))),
        }
    }
    /// True when the next tag is context tag `n` (primitive, opening or closing).
    pub fn next_is_context(&self, n: u8) -> bool {
        matches!(self.peek_tag(), Ok(Tag { number, kind: TagKind::Context(_) }) if number == n)
    }
    /// True when the next tag is opening tag `n`.
    pub fn next_is_open(&self, n: u8) -> bool {
        matches!(self.peek_tag(), Ok(Tag { number, kind: TagKind::Open }) if number == n)
    }
    /// True when the next tag is closing tag `n`.
    pub fn next_is_close(&self, n: u8) -> bool {
        matches!(self.peek_tag(), Ok(Tag { number, kind: TagKind::Close }) if number == n)
    }
    /// Reads context tag `n` and returns its contents.
    pub fn context(&mut self, n: u8) -> Result<&'a [u8], DecodeError> {
        match self.tag()? {
            Tag {
                number,
                kind: TagKind::Context(len),
            } if number == n => self.take(len),
            t => Err(DecodeError::new(format!(
                "expected context tag {n}, got {t:?}"
            ))),
        }
    }
    /// Context tag `n` as an unsigned.
    pub fn context_unsigned(&mut self, n: u8) -> Result<u64, DecodeError> {
        unsigned(self.context(n)?)
    }
    /// Context tag `n` as an object identifier.
    pub fn context_object(&mut self, n: u8) -> Result<ObjectId, DecodeError> {
        object_id(self.context(n)?)
    }
    /// Reads one application-tagged value.
    pub fn app_value(&mut self) -> Result<AppValue, DecodeError> {
        let t = self.tag()?;
        let TagKind::Application(len) = t.kind else {
            return Err(DecodeError::new(format!(
                "expected an application tag, got {t:?}"
            )));
        };
        if t.number == 1 {
            // Boolean: the value is in the length field.
            return Ok(AppValue::Bool(len != 0));
        }
        let b = self.take(len)?;
        decode_app(t.number, b)
    }
    /// Skips one element (a primitive tag, or an opening tag up to its closing tag).
    pub fn skip(&mut self) -> Result<(), DecodeError> {
        let t = self.tag()?;
        match t.kind {
            TagKind::Application(len) => {
                if t.number != 1 {
                    self.take(len)?;
                }
            }
            TagKind::Context(len) => {
                self.take(len)?;
            }
            TagKind::Open => {
                let mut depth = 1usize;
                while depth > 0 {
                    let t = self.tag()?;
                    match t.kind {
                        TagKind::Open => depth += 1,
                        TagKind::Close => depth -= 1,
                        TagKind::Application(len) => {
                            if t.number != 1 {
                                self.take(len)?;
                            }
                        }
                        TagKind::Context(len) => {
                            self.take(len)?;
                        }
                    }
                }
            }
            TagKind::Close => return Err(DecodeError::new("unexpected closing tag")),
        }
        Ok(())
    }
    /// Reads the values between the current position and closing tag `n` (consumed), as a
    /// property value: one value, a list of values, or (for constructed data with context
    /// tags) a nested structure.
    pub fn value_until_close(&mut self, n: u8) -> Result<AppValue, DecodeError> {
        let mut items = Vec::new();
        loop {
            if self.next_is_close(n) {
                self.tag()?;
                break;
            }
            items.push(self.element()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(AppValue::Null)
        } else {
            AppValue::List(items)
        })
    }
    /// One element of constructed data.
    fn element(&mut self) -> Result<AppValue, DecodeError> {
        let t = self.peek_tag()?;
        match t.kind {
            TagKind::Application(_) => self.app_value(),
            TagKind::Context(len) => {
                self.tag()?;
                let b = self.take(len)?;
                Ok(AppValue::Context(t.number, b.to_vec()))
            }
            TagKind::Open => {
                self.tag()?;
                let inner = self.value_until_close(t.number)?;
                Ok(AppValue::Constructed(t.number, Box::new(inner)))
            }
            TagKind::Close => Err(DecodeError::new("unexpected closing tag")),
        }
    }
}

/// A tag header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The tag number.
    pub number: u8,
    /// Its class and length.
    pub kind: TagKind,
}

/// Class and length of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// An application tag with its length (for a boolean, its value).
    Application(usize),
    /// A context tag with its length.
    Context(usize),
    /// An opening tag.
    Open,
    /// A closing tag.
    Close,
}

/// A BACnet object identifier: type and instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// The object type (0..1023).
    pub kind: u16,
    /// The instance (0..4194303).
    pub instance: u32,
}

impl ObjectId {
    /// An object identifier.
    pub fn new(kind: u16, instance: u32) -> Self {
        ObjectId { kind, instance }
    }
    /// The 32-bit encoding.
    pub fn to_u32(self) -> u32 {
        (u32::from(self.kind & 0x3ff) << 22) | (self.instance & 0x3f_ffff)
    }
    /// From the 32-bit encoding.
    pub fn from_u32(v: u32) -> Self {
        ObjectId {
            kind: (v >> 22) as u16,
            instance: v & 0x3f_ffff,
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{}",
            super::ids::object_type_name(self.kind),
            self.instance
        )
    }
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum AppValue {
    /// Null.
    Null,
    /// Boolean.
    Bool(bool),
    /// Unsigned integer.
    Unsigned(u64),
    /// Signed integer.
    Signed(i64),
    /// REAL (single precision).
    Real(f32),
    /// Double.
    Double(f64),
    /// Octet string.
    Octets(Vec<u8>),
    /// Character string (decoded to UTF-8).
    Text(String),
    /// Bit string, first bit first.
    Bits(Vec<bool>),
    /// Enumerated.
    Enumerated(u32),
    /// Date: year, month, day, weekday (255 = unspecified).
    Date(u16, u8, u8, u8),
    /// Time: hour, minute, second, hundredths (255 = unspecified).
    Time(u8, u8, u8, u8),
    /// Object identifier.
    Object(ObjectId),
    /// Several values (an array or list).
    List(Vec<AppValue>),
    /// A context-tagged primitive inside constructed data: tag number and bytes.
    Context(u8, Vec<u8>),
    /// A context-tagged constructed element: tag number and contents.
    Constructed(u8, Box<AppValue>),
}

/// Unsigned from 1..8 big-endian bytes.
pub fn unsigned(b: &[u8]) -> Result<u64, DecodeError> {
    if b.is_empty() || b.len() > 8 {
        return Err(DecodeError::new(format!("unsigned of {} bytes", b.len())));
    }
    Ok(b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
}

fn signed(b: &[u8]) -> Result<i64, DecodeError> {
    if b.is_empty() || b.len() > 8 {
        return Err(DecodeError::new(format!("signed of {} bytes", b.len())));
    }
    let neg = b[0] & 0x80 != 0;
    let mut v: i64 = if neg { -1 } else { 0 };
    for x in b {
        v = (v << 8) | i64::from(*x);
    }
    Ok(v)
}

fn object_id(b: &[u8]) -> Result<ObjectId, DecodeError> {
    if b.len() != 4 {
        return Err(DecodeError::new("object identifier is not 4 bytes"));
    }
    Ok(ObjectId::from_u32(u32::from_be_bytes([
        b[0], b[1], b[2], b[3],
    ])))
}

/// Decodes the contents of application tag `number`.
pub fn decode_app(number: u8, b: &[u8]) -> Result<AppValue, DecodeError> {
    Ok(match number {
        0 => AppValue::Null,
        1 => AppValue::Bool(b.first().copied().unwrap_or(0) != 0),
        2 => AppValue::Unsigned(unsigned(b)?),
        3 => AppValue::Signed(signed(b)?),
        4 => {
            let a: [u8; 4] = b
                .try_into()
                .map_err(|_| DecodeError::new("REAL is not 4 bytes"))?;
            AppValue::Real(f32::from_be_bytes(a))
        }
        5 => {
            let a: [u8; 8] = b
                .try_into()
                .map_err(|_| DecodeError::new("Double is not 8 bytes"))?;
            AppValue::Double(f64::from_be_bytes(a))
        }
        6 => AppValue::Octets(b.to_vec()),
        7 => {
            let (&charset, s) = b
                .split_first()
                .ok_or_else(|| DecodeError::new("empty character string"))?;
            let text = match charset {
                0 => String::from_utf8_lossy(s).into_owned(),
                // ISO 8859-1
                5 => s.iter().map(|c| char::from(*c)).collect(),
                // UCS-2 big-endian
                4 => {
                    let units: Vec<u16> = s
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect();
                    String::from_utf16_lossy(&units)
                }
                other => {
                    return Err(DecodeError::new(format!(
                        "character set {other} is not supported"
                    )))
                }
            };
            AppValue::Text(text)
        }
        8 => {
            let (&unused, bits) = b
                .split_first()
                .ok_or_else(|| DecodeError::new("empty bit string"))?;
            if unused > 7 || (bits.is_empty() && unused != 0) {
                return Err(DecodeError::new("bad bit string"));
            }
            let n = bits.len() * 8 - unused as usize;
            AppValue::Bits(
                (0..n)
                    .map(|i| bits[i / 8] & (0x80 >> (i % 8)) != 0)
                    .collect(),
            )
        }
        9 => {
            let v = unsigned(b)?;
            AppValue::Enumerated(
                u32::try_from(v).map_err(|_| DecodeError::new("enumerated too large"))?,
            )
        }
        10 => {
            let a: [u8; 4] = b
                .try_into()
                .map_err(|_| DecodeError::new("Date is not 4 bytes"))?;
            let year = if a[0] == 255 {
                255
            } else {
                1900 + u16::from(a[0])
            };
            AppValue::Date(year, a[1], a[2], a[3])
        }
        11 => {
            let a: [u8; 4] = b
                .try_into()
                .map_err(|_| DecodeError::new("Time is not 4 bytes"))?;
            AppValue::Time(a[0], a[1], a[2], a[3])
        }
        12 => AppValue::Object(object_id(b)?),
        n => return Err(DecodeError::new(format!("reserved application tag {n}"))),
    })
}

/// Writes tag headers and values.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    /// The bytes written.
    pub buf: Vec<u8>,
}

fn minimal_be(v: u64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take(7).take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

fn minimal_signed(v: i64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut i = 0;
    while i < 7 {
        let (x, next) = (b[i], b[i + 1]);
        if (x == 0 && next & 0x80 == 0) || (x == 0xff && next & 0x80 != 0) {
            i += 1;
        } else {
            break;
        }
    }
    b[i..].to_vec()
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }
    fn header(&mut self, number: u8, context: bool, len: usize) {
        let class = if context { 0x08 } else { 0 };
        let (n_hi, ext) = if number >= 15 {
            (0xf0, Some(number))
        } else {
            (number << 4, None)
        };
        if len < 5 {
            self.buf.push(n_hi | class | len as u8);
        } else {
            self.buf.push(n_hi | class | 5);
        }
        if let Some(e) = ext {
            self.buf.push(e);
        }
        if len >= 5 {
            if len < 254 {
                self.buf.push(len as u8);
            } else if len <= 0xffff {
                self.buf.push(254);
                self.buf.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                self.buf.push(255);
                self.buf.extend_from_slice(&(len as u32).to_be_bytes());
            }
        }
    }
    /// An opening tag.
    pub fn open(&mut self, n: u8) {
        if n >= 15 {
            self.buf.extend_from_slice(&[0xfe, n]);
        } else {
            self.buf.push((n << 4) | 0x0e);
        }
    }
    /// A closing tag.
    pub fn close(&mut self, n: u8) {
        if n >= 15 {
            self.buf.extend_from_slice(&[0xff, n]);
        } else {
            self.buf.push((n << 4) | 0x0f);
        }
    }
    /// A context-tagged unsigned (also used for enumerations).
    pub fn context_unsigned(&mut self, n: u8, v: u64) {
        let b = minimal_be(v);
        self.header(n, true, b.len());
        self.buf.extend_from_slice(&b);
    }
    /// A context-tagged boolean.
    pub fn context_bool(&mut self, n: u8, v: bool) {
        self.header(n, true, 1);
        self.buf.push(u8::from(v));
    }
    /// A context-tagged object identifier.
    pub fn context_object(&mut self, n: u8, o: ObjectId) {
        self.header(n, true, 4);
        self.buf.extend_from_slice(&o.to_u32().to_be_bytes());
    }
    /// An application-tagged value. Lists are written element by element; context
    /// elements are written back as they were read.
    pub fn app(&mut self, v: &AppValue) {
        match v {
            AppValue::Null => self.header(0, false, 0),
            AppValue::Bool(b) => self.header(1, false, usize::from(*b)),
            AppValue::Unsigned(u) => {
                let b = minimal_be(*u);
                self.header(2, false, b.len());
                self.buf.extend_from_slice(&b);
            }
            AppValue::Signed(s) => {
                let b = minimal_signed(*s);
                self.header(3, false, b.len());
                self.buf.extend_from_slice(&b);
            }
            AppValue::Real(r) => {
                self.header(4, false, 4);
                self.buf.extend_from_slice(&r.to_be_bytes());
            }
            AppValue::Double(d) => {
                self.header(5, false, 8);
                self.buf.extend_from_slice(&d.to_be_bytes());
            }
            AppValue::Octets(o) => {
                self.header(6, false, o.len());
                self.buf.extend_from_slice(o);
            }
            AppValue::Text(s) => {
                self.header(7, false, s.len() + 1);
                self.buf.push(0);
                self.buf.extend_from_slice(s.as_bytes());
            }
            AppValue::Bits(bits) => {
                let bytes = bits.len().div_ceil(8);
                let unused = (bytes * 8 - bits.len()) as u8;
                let mut out = vec![0u8; bytes];
                for (i, b) in bits.iter().enumerate() {
                    if *b {
                        out[i / 8] |= 0x80 >> (i % 8);
                    }
                }
                self.header(8, false, bytes + 1);
                self.buf.push(unused);
                self.buf.extend_from_slice(&out);
            }
            AppValue::Enumerated(e) => {
                let b = minimal_be(u64::from(*e));
                self.header(9, false, b.len());
                self.buf.extend_from_slice(&b);
            }
            AppValue::Date(y, m, d, w) => {
                self.header(10, false, 4);
                let y = if *y == 255 {
                    255
                } else {
                    y.saturating_sub(1900).min(254) as u8
                };
                self.buf.extend_from_slice(&[y, *m, *d, *w]);
            }
            AppValue::Time(h, m, s, c) => {
                self.header(11, false, 4);
                self.buf.extend_from_slice(&[*h, *m, *s, *c]);
            }
            AppValue::Object(o) => {
                self.header(12, false, 4);
                self.buf.extend_from_slice(&o.to_u32().to_be_bytes());
            }
            AppValue::List(items) => {
                for i in items {
                    self.app(i);
                }
            }
            AppValue::Context(n, b) => {
                self.header(*n, true, b.len());
                self.buf.extend_from_slice(b);
            }
            AppValue::Constructed(n, inner) => {
                self.open(*n);
                self.app(inner);
                self.close(*n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(v: AppValue) {
        let mut w = Writer::new();
        w.app(&v);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.app_value().unwrap(), v);
        assert!(r.is_empty());
    }

    #[test]
    fn app_values_round_trip() {
        round(AppValue::Null);
        round(AppValue::Bool(true));
        round(AppValue::Bool(false));
        round(AppValue::Unsigned(0));
        round(AppValue::Unsigned(300));
        round(AppValue::Unsigned(u64::MAX));
        round(AppValue::Signed(-1));
        round(AppValue::Signed(-129));
        round(AppValue::Signed(127));
        round(AppValue::Signed(128));
        round(AppValue::Signed(i64::MIN));
        round(AppValue::Real(21.5));
        round(AppValue::Double(-1.25));
        round(AppValue::Octets(vec![1, 2, 3, 4, 5, 6]));
        round(AppValue::Text(
            "héllo, a longer string over 254 bytes? no".into(),
        ));
        round(AppValue::Text("x".repeat(300)));
        round(AppValue::Bits(vec![false, true, false, false]));
        round(AppValue::Bits(vec![true; 9]));
        round(AppValue::Enumerated(1));
        round(AppValue::Date(2026, 12, 3, 4));
        round(AppValue::Time(6, 30, 0, 0));
        round(AppValue::Object(ObjectId::new(2, 1)));
    }

    #[test]
    fn known_encodings() {
        // REAL 21.5 = 0x44 41ac0000; unsigned 1476 = 0x22 05c4; object (analog-value,1).
        let mut w = Writer::new();
        w.app(&AppValue::Real(21.5));
        w.app(&AppValue::Unsigned(1476));
        w.app(&AppValue::Object(ObjectId::new(2, 1)));
        assert_eq!(
            w.buf,
            [0x44, 0x41, 0xac, 0, 0, 0x22, 0x05, 0xc4, 0xc4, 0x00, 0x80, 0, 1]
        );
        // Context tag 1 with enumerated 85 (presentValue): 0x19 0x55.
        let mut w = Writer::new();
        w.context_unsigned(1, 85);
        assert_eq!(w.buf, [0x19, 0x55]);
        w.open(3);
        w.close(3);
        assert_eq!(w.buf, [0x19, 0x55, 0x3e, 0x3f]);
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in [
            &[0x44, 0x41][..],
            &[0x75],
            &[0x75, 0x10, 0],
            &[0x81, 0x09],
            &[0xd1, 0],
            &[0x25, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x91, 0],
        ] {
            let mut r = Reader::new(bad);
            let _ = r.app_value();
            let mut r = Reader::new(bad);
            let _ = r.skip();
        }
        assert!(Reader::new(&[0x44, 0x41]).app_value().is_err());
        assert!(Reader::new(&[0x81, 0x09]).app_value().is_err());
    }

    #[test]
    fn constructed_values() {
        // A priority array fragment: Null, Real 5.0, and a context-tagged element.
        let mut w = Writer::new();
        w.open(3);
        w.app(&AppValue::Null);
        w.app(&AppValue::Real(5.0));
        w.open(0);
        w.context_unsigned(1, 7);
        w.close(0);
        w.close(3);
        let mut r = Reader::new(&w.buf);
        r.open(3).unwrap();
        let v = r.value_until_close(3).unwrap();
        assert_eq!(
            v,
            AppValue::List(vec![
                AppValue::Null,
                AppValue::Real(5.0),
                AppValue::Constructed(0, Box::new(AppValue::Context(1, vec![7]))),
            ])
        );
        assert!(r.is_empty());
        let mut r = Reader::new(&w.buf);
        r.skip().unwrap();
        assert!(r.is_empty());
    }
}
