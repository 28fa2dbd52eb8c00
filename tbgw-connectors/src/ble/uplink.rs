//! `valueExpression`: bytes (a characteristic's value, manufacturer or service data) to a
//! value, pure and synchronous.
//!
//! An expression is text with slices in it: `[i]` one byte, `[a:b]` bytes `a` up to `b`
//! (either end may be left out; negative numbers count from the end, as in Python). A slice is
//! found where upstream's converters find one: `[`, one non-space character, then digits and
//! colons up to `]`. Two renderings, as upstream's two converters:
//!
//! * [`Render::Text`] (upstream's `BytesBLEUplinkConverter`, the default for characteristics):
//!   each slice is replaced by the decimal numbers of its bytes written one after the other,
//!   the rest of the text is kept: `"[0]°C"` of `[21]` is `"21°C"`. The value is a string.
//! * [`Render::Int`] (upstream's `HexBytesBLEUplinkConverter`, the default for advertisement
//!   data): the value is the last slice read as a big-endian unsigned integer (`[i]` is one
//!   byte), the text around it is ignored. Slices of more than 8 bytes become a string of hex
//!   digits. An expression without a slice is its own text.
//!
//! An optional `compute` expression (tbgw's safe Python subset, [`tbgw::eval`]) then maps
//! `value`.

use serde_json::Value as Json;
use tbgw::eval::{Expr, Val};
use tbgw::model::Value;

/// One piece of a `valueExpression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text kept as it is.
    Lit(String),
    /// `[i]`.
    Index(i64),
    /// `[a:b]`.
    Slice(Option<i64>, Option<i64>),
}

/// How slices become a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// Decimal bytes in the text (a string).
    Text,
    /// The last slice as a big-endian unsigned integer.
    Int,
}

/// Why bytes could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `[i]` beyond the data.
    #[error("byte {index} is beyond the {len} bytes received")]
    Index {
        /// The index.
        index: i64,
        /// Bytes received.
        len: usize,
    },
    /// An integer slice selected nothing.
    #[error("slice [{0}] selects no bytes of the {1} received")]
    Empty(String, usize),
    /// `compute` failed.
    #[error("compute: {0}")]
    Compute(String),
}

/// A parsed `valueExpression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueExpr {
    parts: Vec<Part>,
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    Some(if neg { -v } else { v })
}

fn slice_bound(s: &str) -> Result<Option<i64>, String> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse_int(s)
            .map(Some)
            .ok_or_else(|| format!("{s:?} is not a byte index"))
    }
}

impl ValueExpr {
    /// Parses an expression; slices that look like upstream's but are not numbers (`[x]`,
    /// `[1:2:3]`) are errors (upstream fails on them each time a value arrives).
    pub fn parse(src: &str) -> Result<ValueExpr, String> {
        let b = src.as_bytes();
        let mut parts = Vec::new();
        let mut lit_start = 0;
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'[' && i + 1 < b.len() {
                // One non-space character (any UTF-8 character), then [0-9:]*, then `]`.
                let c = src[i + 1..].chars().next().unwrap_or(' ');
                if !c.is_whitespace() {
                    let mut j = i + 1 + c.len_utf8();
                    while j < b.len() && (b[j].is_ascii_digit() || b[j] == b':') {
                        j += 1;
                    }
                    if j < b.len() && b[j] == b']' {
                        if lit_start < i {
                            parts.push(Part::Lit(src[lit_start..i].to_string()));
                        }
                        let inner = &src[i + 1..j];
                        let pieces: Vec<&str> = inner.split(':').collect();
                        let part = match pieces.as_slice() {
                            [one] => Part::Index(parse_int(one).ok_or_else(|| {
                                format!("[{inner}] at {i}: {one:?} is not a byte index")
                            })?),
                            [a, z] => Part::Slice(
                                slice_bound(a).map_err(|e| format!("[{inner}] at {i}: {e}"))?,
                                slice_bound(z).map_err(|e| format!("[{inner}] at {i}: {e}"))?,
                            ),
                            _ => {
                                return Err(format!(
                                    "[{inner}] at {i}: expected [i], [a:b], [a:] or [:b]"
                                ))
                            }
                        };
                        parts.push(part);
                        i = j + 1;
                        lit_start = i;
                        continue;
                    }
                }
            }
            i += 1;
        }
        if lit_start < b.len() {
            parts.push(Part::Lit(src[lit_start..].to_string()));
        }
        Ok(ValueExpr { parts })
    }

    /// The pieces.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether there is at least one slice.
    pub fn has_slice(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Lit(_)))
    }

    /// Renders `data`.
    pub fn render(&self, data: &[u8], how: Render) -> Result<Value, DecodeError> {
        match how {
            Render::Text => self.text(data).map(Value::String),
            Render::Int => self.int(data),
        }
    }

    fn text(&self, data: &[u8]) -> Result<String, DecodeError> {
        use std::fmt::Write;
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Index(i) => {
                    let _ = write!(out, "{}", byte_at(data, *i)?);
                }
                Part::Slice(a, z) => {
                    for b in slice(data, *a, *z) {
                        let _ = write!(out, "{b}");
                    }
                }
            }
        }
        Ok(out)
    }

    fn int(&self, data: &[u8]) -> Result<Value, DecodeError> {
        let mut last = None;
        for p in &self.parts {
            match p {
                Part::Lit(_) => {}
                Part::Index(i) => last = Some(Value::Int(i64::from(byte_at(data, *i)?))),
                Part::Slice(a, z) => {
                    let s = slice(data, *a, *z);
                    if s.is_empty() {
                        let show = |v: &Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
                        return Err(DecodeError::Empty(
                            format!("{}:{}", show(a), show(z)),
                            data.len(),
                        ));
                    }
                    last = Some(be_unsigned(s));
                }
            }
        }
        Ok(last.unwrap_or_else(|| {
            Value::String(
                self.parts
                    .iter()
                    .map(|p| match p {
                        Part::Lit(s) => s.as_str(),
                        _ => "",
                    })
                    .collect(),
            )
        }))
    }
}

/// A big-endian unsigned integer: an integer up to 8 bytes, hex digits beyond.
pub fn be_unsigned(s: &[u8]) -> Value {
    if s.len() <= 8 {
        let v = s.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Json(Json::from(v)),
        }
    } else {
        Value::String(hex(s))
    }
}

/// Lowercase hex digits.
pub fn hex(s: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() * 2);
    for b in s {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn byte_at(data: &[u8], i: i64) -> Result<u8, DecodeError> {
    let len = data.len() as i64;
    let k = if i < 0 { len + i } else { i };
    if (0..len).contains(&k) {
        Ok(data[k as usize])
    } else {
        Err(DecodeError::Index {
            index: i,
            len: data.len(),
        })
    }
}

/// Python's slice `data[a:z]` (bounds clamped, negative from the end).
fn slice(data: &[u8], a: Option<i64>, z: Option<i64>) -> &[u8] {
    let len = data.len() as i64;
    let fix = |v: i64| -> i64 {
        if v < 0 {
            (len + v).max(0)
        } else {
            v.min(len)
        }
    };
    let from = a.map_or(0, fix);
    let to = z.map_or(len, fix);
    if from >= to {
        &[]
    } else {
        &data[from as usize..to as usize]
    }
}

/// Applies a `compute` expression to `value` (an integer, a string...).
pub fn compute(expr: &Expr, value: Value) -> Result<Value, DecodeError> {
    let v = Val::from_value(&value);
    let vars = std::collections::HashMap::from([("value".to_string(), v)]);
    let out = expr
        .eval(&vars)
        .map_err(|e| DecodeError::Compute(e.to_string()))?;
    out.into_value()
        .ok_or_else(|| DecodeError::Compute("the result is None".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: &str, d: &[u8]) -> Result<Value, DecodeError> {
        ValueExpr::parse(e).unwrap().render(d, Render::Text)
    }
    fn int(e: &str, d: &[u8]) -> Result<Value, DecodeError> {
        ValueExpr::parse(e).unwrap().render(d, Render::Int)
    }

    #[test]
    fn text_rendering_is_upstreams_decimal_concatenation() {
        let d = [0x54, 0x65, 0x73, 0x74];
        assert_eq!(
            text("[0:2]cm [2:]A", &d).unwrap(),
            Value::String("84101cm 115116A".into())
        );
        assert_eq!(
            text("All values: [:]", &d).unwrap(),
            Value::String("All values: 84101115116".into())
        );
        assert_eq!(text("[2]", &d).unwrap(), Value::String("115".into()));
        assert_eq!(text("[-1]", &d).unwrap(), Value::String("116".into()));
        assert_eq!(text("[9:]", &d).unwrap(), Value::String("".into()));
        assert!(matches!(
            text("[4]", &d),
            Err(DecodeError::Index { index: 4, len: 4 })
        ));
        // Not slices: a space after `[`, no closing bracket, letters after the first.
        assert_eq!(text("[ 1]", &d).unwrap(), Value::String("[ 1]".into()));
        assert_eq!(text("a[1", &d).unwrap(), Value::String("a[1".into()));
        assert_eq!(text("[1a]", &d).unwrap(), Value::String("[1a]".into()));
    }

    #[test]
    fn int_rendering_reads_big_endian_unsigned() {
        let d = [0x01, 0x02, 0xff, 0x10];
        assert_eq!(int("[0:2]", &d).unwrap(), Value::Int(0x0102));
        assert_eq!(int("[2]", &d).unwrap(), Value::Int(0xff));
        assert_eq!(int("[1:]", &d).unwrap(), Value::Int(0x02ff10));
        assert_eq!(int("[:2]", &d).unwrap(), Value::Int(0x0102));
        assert_eq!(int("[-2:]", &d).unwrap(), Value::Int(0xff10));
        assert_eq!(int("t [0] then [3]", &d).unwrap(), Value::Int(0x10));
        assert_eq!(int("plain", &d).unwrap(), Value::String("plain".into()));
        assert!(matches!(int("[4:]", &d), Err(DecodeError::Empty(..))));
        assert_eq!(
            int("[:]", &[0xff; 8]).unwrap(),
            Value::Json(Json::from(u64::MAX))
        );
        assert_eq!(
            int("[:]", &[0xab; 9]).unwrap(),
            Value::String("ababababababababab".into())
        );
    }

    #[test]
    fn malformed_slices_are_config_errors() {
        assert!(ValueExpr::parse("[x]").is_err());
        assert!(ValueExpr::parse("[1:2:3]").is_err());
        assert!(ValueExpr::parse("[-]").is_err());
        assert!(ValueExpr::parse("[]]").is_err());
        assert!(ValueExpr::parse("[0:2]cm [2:]A").is_ok());
        assert!(ValueExpr::parse("é[é]").is_err());
        assert!(ValueExpr::parse("[").is_ok());
    }

    #[test]
    fn compute_maps_the_value() {
        let e = Expr::parse("value / 10").unwrap();
        assert_eq!(compute(&e, Value::Int(215)).unwrap(), Value::Float(21.5));
        let e = Expr::parse("nope").unwrap();
        assert!(compute(&e, Value::Int(1)).is_err());
    }
}
