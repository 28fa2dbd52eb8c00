//! Packing stored records into gateway-API payloads no larger than the payload limit.
//!
//! Telemetry of many devices goes into one `v1/gateway/telemetry` payload,
//! `{"dev A": [{"ts": .., "values": {..}}, ..], "dev B": [..]}`, and attributes into one
//! `v1/gateway/attributes` payload, `{"dev A": {..}, ..}`. Records of one device are grouped.
//! When the next item would push a payload over the limit, the payload is closed and a new one
//! begins; a telemetry entry that is too large on its own is split key by key into entries with
//! the same timestamp. A single value larger than the limit is sent alone (and counted by the
//! caller as oversized), since dropping it silently would lose data.

use std::collections::HashMap;
use std::io::Write;

use crate::model::{KeyValues, Value};
use crate::storage::Record;

/// Payloads built from one batch of records.
#[derive(Debug, Default)]
pub struct Packed {
    /// `v1/gateway/telemetry` payloads.
    pub telemetry: Vec<Vec<u8>>,
    /// `v1/gateway/attributes` payloads.
    pub attributes: Vec<Vec<u8>>,
    /// Items that exceed the limit on their own.
    pub oversized: usize,
}

/// Packs `records` into payloads of at most `limit` bytes.
pub fn pack(records: &[Record], limit: usize) -> Packed {
    // Group by device, in order of first appearance.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut groups: Vec<(&str, Vec<&Record>)> = Vec::new();
    for r in records {
        let i = *index.entry(r.device_name.as_str()).or_insert_with(|| {
            groups.push((r.device_name.as_str(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(r);
    }

    let mut tele = Builder::new(limit, b'[', b']');
    let mut attrs = Builder::new(limit, b'{', b'}');
    let mut item = Vec::with_capacity(256);
    for (device, recs) in &groups {
        let key = json_string(device);
        for r in recs {
            for entry in &r.telemetry {
                if entry.values.is_empty() {
                    continue;
                }
                item.clear();
                write_entry(&mut item, entry.ts, &entry.values);
                if item.len() + key.len() + 6 <= limit {
                    tele.add(&key, &item);
                } else {
                    // Split key by key into entries with the same timestamp.
                    let mut chunk: KeyValues = Vec::new();
                    for kv in &entry.values {
                        chunk.push(kv.clone());
                        item.clear();
                        write_entry(&mut item, entry.ts, &chunk);
                        if item.len() + key.len() + 6 > limit && chunk.len() > 1 {
                            let last = chunk.pop().expect("len > 1");
                            item.clear();
                            write_entry(&mut item, entry.ts, &chunk);
                            tele.add(&key, &item);
                            chunk.clear();
                            chunk.push(last);
                        }
                    }
                    if !chunk.is_empty() {
                        item.clear();
                        write_entry(&mut item, entry.ts, &chunk);
                        if item.len() + key.len() + 6 > limit {
                            tele.oversized += 1;
                        }
                        tele.add(&key, &item);
                    }
                }
            }
            for (k, v) in &r.attributes {
                item.clear();
                write_pair(&mut item, k, v);
                if item.len() + key.len() + 6 > limit {
                    attrs.oversized += 1;
                }
                attrs.add(&key, &item);
            }
        }
    }
    let oversized = tele.oversized + attrs.oversized;
    Packed {
        telemetry: tele.finish(),
        attributes: attrs.finish(),
        oversized,
    }
}

/// Builds payloads `{"dev": <open> item, item <close>, ...}`.
struct Builder {
    limit: usize,
    open: u8,
    close: u8,
    out: Vec<Vec<u8>>,
    cur: Vec<u8>,
    /// The device whose section is open in `cur`, as its JSON key.
    section: Option<Vec<u8>>,
    oversized: usize,
}

impl Builder {
    fn new(limit: usize, open: u8, close: u8) -> Self {
        Builder {
            limit,
            open,
            close,
            out: Vec::new(),
            cur: Vec::new(),
            section: None,
            oversized: 0,
        }
    }

    fn add(&mut self, key: &[u8], item: &[u8]) {
        let same = self.section.as_deref() == Some(key);
        // Bytes this item adds, plus the two closing bytes (section and payload).
        let grow = if same {
            1 + item.len()
        } else {
            usize::from(!self.cur.is_empty())
                + key.len()
                + 2
                + item.len()
                + usize::from(self.section.is_some())
        };
        if !self.cur.is_empty() && self.cur.len() + grow + 2 > self.limit {
            self.flush();
        }
        if self.cur.is_empty() {
            self.cur.push(b'{');
            self.open_section(key);
        } else if self.section.as_deref() == Some(key) {
            self.cur.push(b',');
        } else {
            self.cur.push(self.close);
            self.cur.push(b',');
            self.open_section(key);
        }
        self.cur.extend_from_slice(item);
    }

    fn open_section(&mut self, key: &[u8]) {
        self.cur.extend_from_slice(key);
        self.cur.push(b':');
        self.cur.push(self.open);
        self.section = Some(key.to_vec());
    }

    fn flush(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        self.cur.push(self.close);
        self.cur.push(b'}');
        self.out.push(std::mem::take(&mut self.cur));
        self.section = None;
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.flush();
        self.out
    }
}

fn json_string(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut v, s);
    v
}

fn write_entry(out: &mut Vec<u8>, ts: i64, values: &KeyValues) {
    let _ = write!(out, "{{\"ts\":{ts},\"values\":{{");
    for (i, (k, v)) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_pair(out, k, v);
    }
    out.extend_from_slice(b"}}");
}

fn write_pair(out: &mut Vec<u8>, k: &str, v: &Value) {
    let _ = serde_json::to_writer(&mut *out, k);
    out.push(b':');
    write_value(out, v);
}

/// Writes a value as JSON. Non-finite floats become `null`.
pub(crate) fn write_value(out: &mut Vec<u8>, v: &Value) {
    let _ = match v {
        Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Int(i) => write!(out, "{i}"),
        Value::Float(f) if f.is_finite() => {
            serde_json::to_writer(&mut *out, f).map_err(std::io::Error::other)
        }
        Value::Float(_) => out.write_all(b"null"),
        Value::String(s) => serde_json::to_writer(&mut *out, s).map_err(std::io::Error::other),
        Value::Json(j) => serde_json::to_writer(&mut *out, j).map_err(std::io::Error::other),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeviceData;
    use serde_json::json;
    use std::sync::Arc;

    fn rec(dev: &str, ts: i64, n: usize) -> Record {
        let mut d = DeviceData::new(dev, "default");
        for i in 0..n {
            d.push_telemetry(ts, format!("k{i}"), Value::Float(i as f64 + 0.5));
        }
        d.push_attribute("fw", "1.0".into());
        Arc::new(d)
    }

    fn parse(p: &[u8]) -> serde_json::Value {
        serde_json::from_slice(p).expect("payload is valid JSON")
    }

    #[test]
    fn devices_are_packed_together_and_grouped() {
        let recs = vec![rec("a", 1, 1), rec("b", 2, 1), rec("a", 3, 1)];
        let p = pack(&recs, 8196);
        assert_eq!(p.telemetry.len(), 1);
        assert_eq!(
            parse(&p.telemetry[0]),
            json!({"a": [{"ts":1,"values":{"k0":0.5}}, {"ts":3,"values":{"k0":0.5}}], "b": [{"ts":2,"values":{"k0":0.5}}]})
        );
        assert_eq!(
            parse(&p.attributes[0]),
            json!({"a": {"fw": "1.0"}, "b": {"fw": "1.0"}})
        );
    }

    #[test]
    fn payloads_never_exceed_the_limit_and_lose_nothing() {
        let recs: Vec<Record> = (0..200)
            .map(|i| rec(&format!("dev{}", i % 7), i, 3))
            .collect();
        for limit in [256usize, 300, 1000, 4096] {
            let p = pack(&recs, limit);
            let mut values = 0;
            for payload in &p.telemetry {
                assert!(payload.len() <= limit, "{} > {limit}", payload.len());
                let v = parse(payload);
                for (_, entries) in v.as_object().unwrap() {
                    for e in entries.as_array().unwrap() {
                        values += e["values"].as_object().unwrap().len();
                    }
                }
            }
            assert_eq!(values, 600);
            assert_eq!(p.oversized, 0);
        }
    }

    #[test]
    fn a_large_entry_is_split_key_by_key() {
        let recs = vec![rec("big", 7, 100)];
        let p = pack(&recs, 300);
        assert!(p.telemetry.len() > 1);
        let mut keys = 0;
        for payload in &p.telemetry {
            assert!(payload.len() <= 300);
            let v = parse(payload);
            for e in v["big"].as_array().unwrap() {
                assert_eq!(e["ts"], 7);
                keys += e["values"].as_object().unwrap().len();
            }
        }
        assert_eq!(keys, 100);
    }

    #[test]
    fn names_and_strings_are_escaped() {
        let mut d = DeviceData::new("we\"ird\\name", "default");
        d.push_telemetry(1, "k\"ey", Value::String("va\"lue\n".into()));
        d.push_telemetry(1, "nan", Value::Float(f64::NAN));
        let p = pack(&[Arc::new(d)], 1000);
        assert_eq!(
            parse(&p.telemetry[0]),
            json!({"we\"ird\\name": [{"ts":1,"values":{"k\"ey":"va\"lue\n","nan":null}}]})
        );
    }
}
