//! RPC / attribute update -> SNMP SET values, pure and synchronous: upstream's `type` names,
//! `mappings` with `${…}` templates, and the reserved `get`/`set` params.

use std::net::Ipv4Addr;

use serde_json::{Map, Value as Json};
use tbgw::expr::{Encoding, Template};

/// The SNMP types a SET writes (upstream's names and aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetType {
    /// INTEGER, INT.
    Integer,
    /// COUNTER, COUNTER32.
    Counter32,
    /// COUNTER64.
    Counter64,
    /// GAUGE, GAUGE32.
    Gauge32,
    /// TIMETICKS.
    Timeticks,
    /// OCTETSTRING, STRING, STR (the default).
    OctetString,
    /// IPADDRESS.
    IpAddress,
}

impl SetType {
    /// Parses a type name, case-insensitively.
    pub fn parse(s: &str) -> Option<SetType> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "INTEGER" | "INT" => SetType::Integer,
            "COUNTER" | "COUNTER32" => SetType::Counter32,
            "COUNTER64" => SetType::Counter64,
            "GAUGE" | "GAUGE32" => SetType::Gauge32,
            "TIMETICKS" => SetType::Timeticks,
            "OCTETSTRING" | "STRING" | "STR" => SetType::OctetString,
            "IPADDRESS" => SetType::IpAddress,
            _ => return None,
        })
    }
}

/// A value ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetValue {
    /// INTEGER.
    Integer(i64),
    /// Counter32.
    Counter32(u32),
    /// Counter64.
    Counter64(u64),
    /// Gauge32.
    Gauge32(u32),
    /// TimeTicks.
    Timeticks(u32),
    /// OCTET STRING.
    OctetString(Vec<u8>),
    /// IpAddress.
    IpAddress([u8; 4]),
}

impl SetValue {
    /// As snmp2's value (borrowing the bytes).
    pub fn as_snmp(&self) -> snmp2::Value<'_> {
        match self {
            SetValue::Integer(i) => snmp2::Value::Integer(*i),
            SetValue::Counter32(n) => snmp2::Value::Counter32(*n),
            SetValue::Counter64(n) => snmp2::Value::Counter64(*n),
            SetValue::Gauge32(n) => snmp2::Value::Unsigned32(*n),
            SetValue::Timeticks(n) => snmp2::Value::Timeticks(*n),
            SetValue::OctetString(b) => snmp2::Value::OctetString(b),
            SetValue::IpAddress(a) => snmp2::Value::IpAddress(*a),
        }
    }
}

/// Text of a JSON value: a string as is, anything else as JSON.
fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Converts a JSON value to `ty`; the error says why.
pub fn convert(v: &Json, ty: SetType) -> Result<SetValue, String> {
    let t = text(v);
    let int = || -> Result<i128, String> {
        match v {
            Json::Number(n) if n.is_i64() || n.is_u64() => Ok(n
                .as_i64()
                .map(i128::from)
                .unwrap_or_else(|| i128::from(n.as_u64().unwrap_or_default()))),
            Json::Bool(b) => Ok(i128::from(*b)),
            _ => t
                .trim()
                .parse::<i128>()
                .map_err(|_| format!("cannot convert {v} to an integer")),
        }
    };
    let range = |n: i128, name: &str| format!("{n} is out of range for {name}");
    Ok(match ty {
        SetType::OctetString => SetValue::OctetString(t.into_bytes()),
        SetType::Integer => {
            let n = int()?;
            SetValue::Integer(i64::try_from(n).map_err(|_| range(n, "INTEGER"))?)
        }
        SetType::Counter32 => {
            let n = int()?;
            SetValue::Counter32(u32::try_from(n).map_err(|_| range(n, "COUNTER32"))?)
        }
        SetType::Gauge32 => {
            let n = int()?;
            SetValue::Gauge32(u32::try_from(n).map_err(|_| range(n, "GAUGE32"))?)
        }
        SetType::Timeticks => {
            let n = int()?;
            SetValue::Timeticks(u32::try_from(n).map_err(|_| range(n, "TIMETICKS"))?)
        }
        SetType::Counter64 => {
            let n = int()?;
            SetValue::Counter64(u64::try_from(n).map_err(|_| range(n, "COUNTER64"))?)
        }
        SetType::IpAddress => SetValue::IpAddress(
            t.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("{t:?} is not an IPv4 address"))?
                .octets(),
        ),
    })
}

/// One `mappings` entry, parsed at build time.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The OID written.
    pub oid: Vec<u64>,
    /// The value: a template over `{attribute, params, <params' keys>}`, or a constant.
    pub value: MappingValue,
    /// Its type.
    pub ty: SetType,
}

/// The value of a mapping.
#[derive(Debug, Clone)]
pub enum MappingValue {
    /// A `${…}` template (a string without placeholders is a constant).
    Template(Template),
    /// A JSON constant that is not a string.
    Constant(Json),
}

/// Parses `mappings` (an object OID → value or `{value, type}`, or a list of `{oid, value,
/// type}`). Errors are `(key path suffix, reason)`.
pub fn parse_mappings(m: &Json, default: SetType) -> Result<Vec<Mapping>, (String, String)> {
    let mut out = Vec::new();
    let one = |oid: &str, value: Option<&Json>, ty: Option<&Json>, at: String| {
        let oid = super::uplink::parse_oid(oid)
            .ok_or_else(|| (at.clone(), format!("{oid:?} is not an OID")))?;
        let ty = match ty {
            None | Some(Json::Null) => default,
            Some(Json::String(s)) => SetType::parse(s)
                .ok_or_else(|| (format!("{at}.type"), format!("unknown SNMP type {s:?}")))?,
            Some(other) => {
                return Err((format!("{at}.type"), format!("{other} is not a type name")))
            }
        };
        let value = match value {
            Some(Json::String(s)) => {
                MappingValue::Template(Template::parse(s).map_err(|e| (at.clone(), e.to_string()))?)
            }
            Some(v) => MappingValue::Constant(v.clone()),
            None => MappingValue::Constant(Json::Null),
        };
        Ok::<_, (String, String)>(Mapping { oid, value, ty })
    };
    match m {
        Json::Object(map) => {
            for (oid, v) in map {
                let at = format!("mappings.{oid}");
                out.push(match v {
                    Json::Object(o) => one(oid, o.get("value"), o.get("type"), at)?,
                    other => one(oid, Some(other), None, at)?,
                });
            }
        }
        Json::Array(list) => {
            for (i, item) in list.iter().enumerate() {
                let at = format!("mappings[{i}]");
                let oid = item
                    .get("oid")
                    .and_then(Json::as_str)
                    .ok_or_else(|| (format!("{at}.oid"), "missing".to_string()))?;
                out.push(one(oid, item.get("value"), item.get("type"), at)?);
            }
        }
        other => {
            return Err((
                "mappings".into(),
                format!("{other} is neither an object nor a list"),
            ))
        }
    }
    Ok(out)
}

/// The scope `${…}` templates are rendered in: `attribute` and `params` are the written value,
/// and an object's keys are also reachable directly.
pub fn scope(value: &Json) -> Json {
    let mut m = Map::new();
    if let Json::Object(o) = value {
        m.extend(o.clone());
    }
    m.insert("attribute".into(), value.clone());
    m.insert("params".into(), value.clone());
    Json::Object(m)
}

/// Renders the mappings for `value`.
pub fn render_mappings(
    mappings: &[Mapping],
    value: &Json,
) -> Result<Vec<(Vec<u64>, SetValue)>, String> {
    let scope = scope(value);
    mappings
        .iter()
        .map(|m| {
            let v = match &m.value {
                MappingValue::Constant(c) => c.clone(),
                MappingValue::Template(t) if t.is_single() => t
                    .resolve(&scope)
                    .map(|c| c.into_owned())
                    .ok_or_else(|| format!("{:?} has no value in {value}", t.source()))?,
                MappingValue::Template(t) => Json::String(
                    t.render_scope(&scope, Encoding::Text)
                        .ok_or_else(|| format!("{:?} has no value in {value}", t.source()))?,
                ),
            };
            Ok((m.oid.clone(), convert(&v, m.ty)?))
        })
        .collect()
}

/// The params of a reserved `get`/`set` RPC: upstream's `key=value;key=value` text (`method`,
/// `oid`, `value`, and ours: `type`), or the same keys in an object.
pub fn reserved_params(params: &Json) -> Result<Map<String, Json>, String> {
    match params {
        Json::Object(m) => Ok(m.clone()),
        Json::String(s) => {
            let mut m = Map::new();
            for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                // Split on the first `=` only (upstream drops a pair with two).
                let Some((k, v)) = part.split_once('=') else {
                    continue;
                };
                let (k, v) = (k.trim(), v.trim());
                if !k.is_empty() && !v.is_empty() {
                    m.insert(k.to_string(), Json::String(v.to_string()));
                }
            }
            Ok(m)
        }
        other => Err(format!(
            "params {other} are neither `key=value;` text nor an object"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_convert_to_every_type() {
        assert_eq!(
            convert(&json!("5"), SetType::Integer),
            Ok(SetValue::Integer(5))
        );
        assert_eq!(
            convert(&json!(7), SetType::Gauge32),
            Ok(SetValue::Gauge32(7))
        );
        assert_eq!(
            convert(&json!(12), SetType::OctetString),
            Ok(SetValue::OctetString(b"12".to_vec()))
        );
        assert_eq!(
            convert(&json!("10.1.2.3"), SetType::IpAddress),
            Ok(SetValue::IpAddress([10, 1, 2, 3]))
        );
        assert!(convert(&json!(-1), SetType::Counter32).is_err());
        assert!(convert(&json!("x"), SetType::Integer).is_err());
        assert!(convert(&json!("1.2.3"), SetType::IpAddress).is_err());
        assert_eq!(SetType::parse("str"), Some(SetType::OctetString));
        assert_eq!(SetType::parse("FLOAT"), None);
    }

    #[test]
    fn mappings_render_templates_and_constants() {
        let m = parse_mappings(
            &json!({"1.3.6.1.2.1.1.4.0": "10", "1.3.6.1.2.1.1.5.0": "${attribute}",
                    "1.3.6.1.2.1.1.6.0": {"value": "${params.n}", "type": "INTEGER"}}),
            SetType::OctetString,
        )
        .expect("valid");
        let out = render_mappings(&m, &json!({"n": 3})).expect("renders");
        assert_eq!(out[0].1, SetValue::OctetString(b"10".to_vec()));
        assert_eq!(out[1].1, SetValue::OctetString(br#"{"n":3}"#.to_vec()));
        assert_eq!(out[2].1, SetValue::Integer(3));
        assert!(parse_mappings(&json!({"not-an-oid": "1"}), SetType::Integer).is_err());
        assert!(parse_mappings(
            &json!([{"oid": "1.3.6", "type": "FLOAT"}]),
            SetType::Integer
        )
        .is_err());
    }

    #[test]
    fn reserved_params_read_upstream_text() {
        let p = reserved_params(&json!("method=get;oid=1.3.6.1.2.1.1.1.0;")).expect("text");
        assert_eq!(p["method"], json!("get"));
        assert_eq!(p["oid"], json!("1.3.6.1.2.1.1.1.0"));
        let p =
            reserved_params(&json!("oid=1.3.6.1.2.1.1.4.0;value=a=b;type=STRING")).expect("text");
        assert_eq!(p["value"], json!("a=b"));
        assert!(reserved_params(&json!(5)).is_err());
    }
}
