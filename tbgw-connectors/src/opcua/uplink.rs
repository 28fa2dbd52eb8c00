//! Rendering OPC-UA values the way upstream's `OpcUaUplinkConverter` does: numbers and booleans
//! as JSON numbers and booleans, DateTime as an ISO 8601 string, NodeId / QualifiedName /
//! LocalizedText / Guid as strings, ByteString as lower-case hex, arrays as lists of strings,
//! and a bad status as the status name (so the failure is visible in ThingsBoard instead of the
//! data point silently missing).

use opcua::types::{DataValue, Variant};
use tbgw::model::{now_millis, Value};

/// Where a data point's timestamp comes from (`timestampLocation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampLocation {
    /// The gateway's clock when the value arrived.
    #[default]
    Gateway,
    /// The value's source timestamp (falls back to the gateway clock).
    Source,
    /// The server timestamp (falls back to the gateway clock).
    Server,
}

impl TimestampLocation {
    /// Parses upstream's names (`gateway`, `source`/`sourceTimestamp`, `server`/`serverTimestamp`).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "gateway" => Some(Self::Gateway),
            "source" | "sourcetimestamp" => Some(Self::Source),
            "server" | "servertimestamp" => Some(Self::Server),
            _ => None,
        }
    }
}

/// Renders a variant.
pub fn render(v: &Variant) -> Value {
    match v {
        Variant::Empty => Value::Json(serde_json::Value::Null),
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::Int(i64::from(*x)),
        Variant::Byte(x) => Value::Int(i64::from(*x)),
        Variant::Int16(x) => Value::Int(i64::from(*x)),
        Variant::UInt16(x) => Value::Int(i64::from(*x)),
        Variant::Int32(x) => Value::Int(i64::from(*x)),
        Variant::UInt32(x) => Value::Int(i64::from(*x)),
        Variant::Int64(x) => Value::Int(*x),
        Variant::UInt64(x) => match i64::try_from(*x) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::String(x.to_string()),
        },
        Variant::Float(x) => Value::Float(f64::from(*x)),
        Variant::Double(x) => Value::Float(*x),
        Variant::String(s) => Value::String(s.value().clone().unwrap_or_default()),
        Variant::DateTime(d) => Value::String(d.as_chrono().to_rfc3339()),
        Variant::ByteString(b) => Value::String(hex(b.value.as_deref().unwrap_or_default())),
        Variant::LocalizedText(t) => Value::String(t.text.value().clone().unwrap_or_default()),
        Variant::QualifiedName(q) => Value::String(q.to_string()),
        Variant::Array(a) => Value::Json(serde_json::Value::Array(
            a.values
                .iter()
                .map(|v| serde_json::Value::String(render(v).to_string()))
                .collect(),
        )),
        Variant::Variant(inner) => render(inner),
        other => Value::String(display(other)),
    }
}

fn display(v: &Variant) -> String {
    match v {
        Variant::Guid(g) => g.to_string(),
        Variant::NodeId(n) => n.to_string(),
        Variant::ExpandedNodeId(n) => n.to_string(),
        Variant::StatusCode(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Renders a data value: the value, or the status name when the status is bad. Returns the
/// timestamp chosen by `loc` and whether the status was bad.
pub fn render_data_value(dv: &DataValue, loc: TimestampLocation) -> (i64, Value, bool) {
    let ts = match loc {
        TimestampLocation::Gateway => None,
        TimestampLocation::Source => dv.source_timestamp.as_ref(),
        TimestampLocation::Server => dv.server_timestamp.as_ref(),
    }
    .map(|d| d.as_chrono().timestamp_millis())
    .filter(|ms| *ms > 0)
    .unwrap_or_else(now_millis);
    match dv.status {
        Some(s) if s.is_bad() => (ts, Value::String(s.to_string()), true),
        _ => (
            ts,
            dv.value
                .as_ref()
                .map(render)
                .unwrap_or(Value::Json(serde_json::Value::Null)),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{ByteString, DateTime, StatusCode};

    #[test]
    fn variants_render_like_upstream() {
        assert_eq!(render(&Variant::Int16(-3)), Value::Int(-3));
        assert_eq!(
            render(&Variant::UInt64(u64::MAX)),
            Value::String(u64::MAX.to_string())
        );
        assert_eq!(render(&Variant::Float(1.5)), Value::Float(1.5));
        assert_eq!(render(&Variant::from("x")), Value::String("x".into()));
        assert_eq!(
            render(&Variant::ByteString(ByteString::from(vec![1u8, 0xab]))),
            Value::String("01ab".into())
        );
        let dt = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z").unwrap();
        assert!(render(&Variant::from(dt))
            .to_string()
            .starts_with("2024-05-06T07:08:09"));
        assert_eq!(
            render(&Variant::from(vec![1i32, 2])),
            Value::Json(serde_json::json!(["1", "2"]))
        );
    }

    #[test]
    fn a_bad_status_is_reported_as_its_name() {
        let dv = DataValue {
            value: Some(Variant::Double(0.0)),
            status: Some(StatusCode::BadSensorFailure),
            ..Default::default()
        };
        let (_, v, bad) = render_data_value(&dv, TimestampLocation::Gateway);
        assert!(bad);
        assert_eq!(v, Value::String("BadSensorFailure".into()));
    }
}
