//! The data model shared by connectors, converters, storage and the ThingsBoard client.
//!
//! A connector turns what a device sends into [`DeviceData`]: the device's name and type
//! (ThingsBoard calls the type a *device profile*), zero or more [`TelemetryEntry`]s, each a
//! timestamp plus typed key/value pairs, and client-side attributes. This is the unit that is
//! stored, packed and published on `v1/gateway/telemetry` and `v1/gateway/attributes`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A typed value of a telemetry key or an attribute.
///
/// It serializes to the JSON ThingsBoard expects: `true`, `42`, `21.5`, `"text"` or any JSON
/// object or array for [`Value::Json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float. Non-finite floats are published as `null` by JSON encoders.
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// Any JSON value (objects and arrays are published as JSON, ThingsBoard stores them as JSON).
    Json(serde_json::Value),
}

impl Value {
    /// Converts a JSON value into the closest typed value: booleans, integers, floats and
    /// strings map to their variant, everything else (null, objects, arrays) stays JSON.
    pub fn from_json(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::String(s),
            other => Value::Json(other),
        }
    }

    /// Converts this value into a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Json(j) => j.clone(),
        }
    }
}

impl fmt::Display for Value {
    /// Formats the value as text: strings without quotes, everything else as JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::String(s) => f.write_str(s),
            Value::Json(j) => write!(f, "{j}"),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

/// An ordered list of key/value pairs. Order is kept so payloads are deterministic; when a key
/// appears twice the later value wins on publish.
pub type KeyValues = Vec<(String, Value)>;

/// One telemetry sample: a timestamp in milliseconds since the Unix epoch and its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryEntry {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// The values sampled at `ts`.
    pub values: KeyValues,
}

impl TelemetryEntry {
    /// A telemetry entry at `ts` (milliseconds since the Unix epoch).
    pub fn new(ts: i64, values: KeyValues) -> Self {
        TelemetryEntry { ts, values }
    }
}

/// Everything one conversion produced for one device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceData {
    /// The device name as ThingsBoard knows it.
    pub device_name: String,
    /// The device profile (`type` in `v1/gateway/connect`); `default` when unknown.
    pub device_type: String,
    /// Time series samples.
    pub telemetry: Vec<TelemetryEntry>,
    /// Client-side attributes.
    pub attributes: KeyValues,
    /// The device and datapoint levels of the report strategy, set by the connector that
    /// produced the data (shared by every record of a device or mapping). The gateway's
    /// [`ReportFilter`](crate::report::ReportFilter) reads and removes it before storage;
    /// storage does not keep it.
    #[serde(skip)]
    pub report: Option<std::sync::Arc<crate::config::ReportOverrides>>,
}

impl DeviceData {
    /// Empty data for a device of the given name and profile.
    pub fn new(device_name: impl Into<String>, device_type: impl Into<String>) -> Self {
        DeviceData {
            device_name: device_name.into(),
            device_type: device_type.into(),
            telemetry: Vec::new(),
            attributes: Vec::new(),
            report: None,
        }
    }

    /// True when there is nothing to send (no telemetry value and no attribute).
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.telemetry.iter().all(|e| e.values.is_empty())
    }

    /// Adds a telemetry value at `ts`, merging it into an existing entry with the same
    /// timestamp.
    pub fn push_telemetry(&mut self, ts: i64, key: impl Into<String>, value: Value) {
        match self.telemetry.iter_mut().find(|e| e.ts == ts) {
            Some(entry) => entry.values.push((key.into(), value)),
            None => self
                .telemetry
                .push(TelemetryEntry::new(ts, vec![(key.into(), value)])),
        }
    }

    /// Adds a client-side attribute.
    pub fn push_attribute(&mut self, key: impl Into<String>, value: Value) {
        self.attributes.push((key.into(), value));
    }

    /// The first value of `key`: in the telemetry entries in order, then in the attributes.
    pub fn value(&self, key: &str) -> Option<Value> {
        self.telemetry
            .iter()
            .flat_map(|e| e.values.iter())
            .chain(self.attributes.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Number of data points (telemetry values plus attributes).
    pub fn datapoints(&self) -> usize {
        self.attributes.len() + self.telemetry.iter().map(|e| e.values.len()).sum::<usize>()
    }

    /// Appends another conversion result for the same device. Report overrides: the first
    /// that is set is kept.
    pub fn merge(&mut self, other: DeviceData) {
        if self.report.is_none() {
            self.report = other.report;
        }
        for entry in other.telemetry {
            match self.telemetry.iter_mut().find(|e| e.ts == entry.ts) {
                Some(existing) => existing.values.extend(entry.values),
                None => self.telemetry.push(entry),
            }
        }
        self.attributes.extend(other.attributes);
    }
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_with_equal_timestamps_is_merged() {
        let mut d = DeviceData::new("a", "default");
        d.push_telemetry(1, "x", Value::Int(1));
        d.push_telemetry(1, "y", Value::Bool(true));
        d.push_telemetry(2, "x", Value::Int(2));
        assert_eq!(d.telemetry.len(), 2);
        assert_eq!(d.telemetry[0].values.len(), 2);
        assert_eq!(d.datapoints(), 3);
    }

    #[test]
    fn json_numbers_keep_integer_or_float_type() {
        assert_eq!(Value::from_json(serde_json::json!(3)), Value::Int(3));
        assert_eq!(Value::from_json(serde_json::json!(3.5)), Value::Float(3.5));
        assert_eq!(Value::from_json(serde_json::json!("s")), Value::from("s"));
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::Value::Null);
    }
}
