//! A compact binary encoding of [`DeviceData`] for the durable storages.
//!
//! Layout (little endian): `u16` name length + name, `u16` type length + type, `u32` entry
//! count, then per entry `i64` ts, `u32` value count and the values; `u32` attribute count and
//! the attributes. A key is `u16` length + UTF-8; a value is a tag byte followed by `u8` (bool),
//! `i64` (int), `f64` (float), or `u32` length + UTF-8 (string, JSON text). Decoding checks every
//! length against the input and never panics.

use crate::model::{DeviceData, KeyValues, TelemetryEntry, Value};

/// A record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt record: {0}")]
pub struct CodecError(&'static str);

const TAG_BOOL: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_FLOAT: u8 = 2;
const TAG_STRING: u8 = 3;
const TAG_JSON: u8 = 4;

/// Appends the encoding of `d` to `out`.
pub fn encode(d: &DeviceData, out: &mut Vec<u8>) {
    put_str16(out, &d.device_name);
    put_str16(out, &d.device_type);
    out.extend_from_slice(&(d.telemetry.len() as u32).to_le_bytes());
    for e in &d.telemetry {
        out.extend_from_slice(&e.ts.to_le_bytes());
        put_kvs(out, &e.values);
    }
    put_kvs(out, &d.attributes);
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    // Names and keys longer than 64 KiB are cut at a character boundary (ThingsBoard rejects
    // such keys anyway).
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_str32(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_kvs(out: &mut Vec<u8>, kvs: &KeyValues) {
    out.extend_from_slice(&(kvs.len() as u32).to_le_bytes());
    for (k, v) in kvs {
        put_str16(out, k);
        match v {
            Value::Bool(b) => {
                out.push(TAG_BOOL);
                out.push(u8::from(*b));
            }
            Value::Int(i) => {
                out.push(TAG_INT);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Float(f) => {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::String(s) => {
                out.push(TAG_STRING);
                put_str32(out, s);
            }
            Value::Json(j) => {
                out.push(TAG_JSON);
                put_str32(out, &j.to_string());
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError("truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self, n: usize) -> Result<String, CodecError> {
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| CodecError("invalid UTF-8"))
    }
    /// A count that must fit in the remaining input at `min` bytes per item.
    fn count(&mut self, min: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.buf.len() {
            return Err(CodecError("count larger than the record"));
        }
        Ok(n)
    }
    fn kvs(&mut self) -> Result<KeyValues, CodecError> {
        let n = self.count(4)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let klen = self.u16()? as usize;
            let k = self.str(klen)?;
            let val = match self.u8()? {
                TAG_BOOL => Value::Bool(self.u8()? != 0),
                TAG_INT => Value::Int(self.u64()? as i64),
                TAG_FLOAT => Value::Float(f64::from_bits(self.u64()?)),
                TAG_STRING => {
                    let n = self.u32()? as usize;
                    Value::String(self.str(n)?)
                }
                TAG_JSON => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    Value::Json(
                        serde_json::from_slice(b).map_err(|_| CodecError("invalid JSON value"))?,
                    )
                }
                _ => return Err(CodecError("unknown value tag")),
            };
            v.push((k, val));
        }
        Ok(v)
    }
}

/// Decodes one record; the whole input must be consumed.
pub fn decode(buf: &[u8]) -> Result<DeviceData, CodecError> {
    let mut r = Reader { buf };
    let n = r.u16()? as usize;
    let device_name = r.str(n)?;
    let n = r.u16()? as usize;
    let device_type = r.str(n)?;
    let entries = r.count(12)?;
    let mut telemetry = Vec::with_capacity(entries);
    for _ in 0..entries {
        let ts = r.u64()? as i64;
        telemetry.push(TelemetryEntry {
            ts,
            values: r.kvs()?,
        });
    }
    let attributes = r.kvs()?;
    if !r.buf.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(DeviceData {
        device_name,
        device_type,
        telemetry,
        attributes,
        report: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeviceData {
        let mut d = DeviceData::new("Dévice 1", "thermo");
        d.push_telemetry(1_700_000_000_000, "t", Value::Float(21.5));
        d.push_telemetry(1_700_000_000_000, "on", Value::Bool(true));
        d.push_telemetry(-5, "n", Value::Int(-42));
        d.push_attribute("fw", Value::String("1.0 ✓".into()));
        d.push_attribute("cfg", Value::Json(serde_json::json!({"a": [1, 2]})));
        d
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        assert_eq!(decode(&buf).unwrap(), sample());
    }

    #[test]
    fn every_truncation_and_many_bit_flips_are_errors_or_values_never_panics() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err(), "truncated at {n}");
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = buf.clone();
            let i = (seed as usize) % b.len();
            b[i] ^= 1 << ((seed >> 32) % 8);
            let _ = decode(&b);
        }
    }
}
