//! Downlink, pure: the BACnet type of a value to write (by object type and property, as a
//! device expects it), and upstream's reserved `get`/`set` parameter strings.

use serde_json::Value as Json;

use super::proto::{ids, AppValue};

fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        Json::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn binary(v: &Json) -> Option<u32> {
    match v {
        Json::Bool(b) => Some(u32::from(*b)),
        Json::Number(n) => match n.as_f64() {
            Some(x) if x.abs() < f64::EPSILON => Some(0),
            Some(x) if (x - 1.0).abs() < f64::EPSILON => Some(1),
            _ => None,
        },
        Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "active" | "true" | "1" | "on" => Some(1),
            "inactive" | "false" | "0" | "off" => Some(0),
            _ => None,
        },
        _ => None,
    }
}

fn unsigned(v: &Json) -> Option<u64> {
    let f = number(v)?;
    (f >= 0.0 && f.fract() == 0.0 && f < 1.8e19).then_some(f as u64)
}

/// The value to write to `property` of an object of type `kind`. `null` writes Null (a
/// relinquish at the given priority).
pub fn write_value(kind: u16, property: u32, v: &Json) -> Result<AppValue, String> {
    if v.is_null() {
        return Ok(AppValue::Null);
    }
    let bad = || {
        format!(
            "{v} cannot be written to {} of a {}",
            ids::property_name(property),
            ids::object_type_name(kind)
        )
    };
    let commandable = matches!(property, 85 | 104 | 40 | 6);
    if commandable {
        return match kind {
            0..=2 => number(v).map(|f| AppValue::Real(f as f32)).ok_or_else(bad),
            46 => number(v).map(AppValue::Double).ok_or_else(bad),
            3..=5 | 55 => binary(v).map(AppValue::Enumerated).ok_or_else(bad),
            13 | 14 | 19 | 48 => unsigned(v).map(AppValue::Unsigned).ok_or_else(bad),
            45 => number(v)
                .filter(|f| f.fract() == 0.0)
                .map(|f| AppValue::Signed(f as i64))
                .ok_or_else(bad),
            40 => Ok(AppValue::Text(match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })),
            _ => Ok(infer(v)),
        };
    }
    match property {
        // covIncrement, deadband, highLimit, lowLimit, minPresValue, maxPresValue, resolution
        22 | 25 | 45 | 59 | 65 | 69 | 106 => {
            number(v).map(|f| AppValue::Real(f as f32)).ok_or_else(bad)
        }
        // outOfService
        81 => binary(v).map(|b| AppValue::Bool(b == 1)).ok_or_else(bad),
        // objectName, description, location, activeText, inactiveText
        77 | 28 | 58 | 4 | 46 => Ok(AppValue::Text(match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })),
        _ => Ok(infer(v)),
    }
}

fn infer(v: &Json) -> AppValue {
    match v {
        Json::Bool(b) => AppValue::Bool(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                AppValue::Unsigned(u)
            } else if let Some(i) = n.as_i64() {
                AppValue::Signed(i)
            } else {
                AppValue::Real(n.as_f64().unwrap_or(0.0) as f32)
            }
        }
        Json::String(s) => AppValue::Text(s.clone()),
        other => AppValue::Text(other.to_string()),
    }
}

/// A reserved `get`/`set` request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserved {
    /// Object type name.
    pub object_type: String,
    /// Object instance.
    pub object_id: u32,
    /// Property name.
    pub property_id: String,
    /// Priority (set).
    pub priority: Option<u8>,
    /// Value (set), as JSON when it parses as JSON, else a string.
    pub value: Option<Json>,
}

/// The schemas upstream names in its error replies.
pub const GET_SCHEMA: &str =
    "get objectType=<objectType>;objectId=<objectId>;propertyId=<propertyId>;";
/// See [`GET_SCHEMA`].
pub const SET_SCHEMA: &str = "set objectType=<objectType>;objectId=<objectId>;propertyId=<propertyId>;priority=<priority>;value=<value>;";

/// Parses `objectType=…;objectId=…;propertyId=…;[priority=…;][value=…;]`.
pub fn parse_reserved(params: &str, set: bool) -> Result<Reserved, String> {
    let schema = if set { SET_SCHEMA } else { GET_SCHEMA };
    let err = || format!("The requested RPC does not match with the schema: {schema}");
    let mut m = std::collections::HashMap::new();
    for part in params.split(';') {
        if let Some((k, v)) = part.split_once('=') {
            if !k.trim().is_empty() && !v.is_empty() {
                m.insert(k.trim().to_string(), v.to_string());
            }
        }
    }
    let object_type = m.get("objectType").cloned().ok_or_else(err)?;
    let object_id = m
        .get("objectId")
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(err)?;
    let property_id = m.get("propertyId").cloned().ok_or_else(err)?;
    let priority = match m.get("priority") {
        Some(p) => Some(
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=16).contains(p))
                .ok_or_else(|| format!("priority {p:?} is not 1..16"))?,
        ),
        None => None,
    };
    let value = m
        .get("value")
        .map(|s| serde_json::from_str(s.trim()).unwrap_or_else(|_| Json::String(s.clone())));
    if set && value.is_none() {
        return Err(err());
    }
    Ok(Reserved {
        object_type,
        object_id,
        property_id,
        priority,
        value,
    })
}

/// A priority from config or params: 1..16.
pub fn priority(v: Option<&Json>) -> Result<Option<u8>, String> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(p) => {
            let n = number(p).ok_or_else(|| format!("priority {p} is not a number"))?;
            if (1.0..=16.0).contains(&n) && n.fract() == 0.0 {
                Ok(Some(n as u8))
            } else {
                Err(format!("priority {p} is not 1..16"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_writes() {
        assert_eq!(
            write_value(1, 85, &json!(7.75)).unwrap(),
            AppValue::Real(7.75)
        );
        assert_eq!(
            write_value(1, 85, &json!("7.5")).unwrap(),
            AppValue::Real(7.5)
        );
        assert_eq!(
            write_value(4, 85, &json!(true)).unwrap(),
            AppValue::Enumerated(1)
        );
        assert_eq!(
            write_value(5, 85, &json!("inactive")).unwrap(),
            AppValue::Enumerated(0)
        );
        assert_eq!(
            write_value(19, 85, &json!(3)).unwrap(),
            AppValue::Unsigned(3)
        );
        assert_eq!(write_value(2, 85, &Json::Null).unwrap(), AppValue::Null);
        assert_eq!(
            write_value(2, 77, &json!("n")).unwrap(),
            AppValue::Text("n".into())
        );
        assert_eq!(
            write_value(2, 81, &json!(true)).unwrap(),
            AppValue::Bool(true)
        );
        assert!(write_value(4, 85, &json!(5)).is_err());
        assert!(write_value(1, 85, &json!("x")).is_err());
        assert_eq!(
            write_value(99, 512, &json!(-3)).unwrap(),
            AppValue::Signed(-3)
        );
    }

    #[test]
    fn reserved() {
        let r = parse_reserved(
            "objectType=analogValue;objectId=1;propertyId=presentValue;",
            false,
        )
        .unwrap();
        assert_eq!(r.object_id, 1);
        assert_eq!(r.value, None);
        let r = parse_reserved(
            "objectType=analogOutput;objectId=1;propertyId=presentValue;priority=8;value=7.75;",
            true,
        )
        .unwrap();
        assert_eq!((r.priority, r.value), (Some(8), Some(json!(7.75))));
        assert!(parse_reserved(
            "objectType=analogOutput;objectId=1;propertyId=presentValue;",
            true
        )
        .is_err());
        assert!(parse_reserved(
            "objectType=analogOutput;objectId=x;propertyId=presentValue;",
            false
        )
        .is_err());
        assert!(parse_reserved(
            "objectType=a;objectId=1;propertyId=p;priority=17;value=1;",
            true
        )
        .is_err());
        assert_eq!(priority(Some(&json!("8"))).unwrap(), Some(8));
        assert!(priority(Some(&json!(0))).is_err());
    }
}
