//! Points and values: expanding upstream's `attributes`/`timeseries` entries (object types,
//! ids as number/list/range/`"*"`, properties as one or a list, `${property}` keys) into
//! what is read, and turning read values into typed ThingsBoard values. Pure: no I/O.

use std::collections::HashMap;

use serde_json::{json, Value as Json};
use tbgw::model::{DeviceData, Value};

use super::proto::ids;
use super::proto::services::PropResult;
use super::proto::{AppValue, ObjectId};

/// Which objects a point names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Objects {
    /// One object.
    One(ObjectId),
    /// Every object of these types (`objectId: "*"`); empty = every type.
    AllOf(Vec<u16>),
    /// The device's own device object.
    Device,
}

/// One configured point (after expanding lists and ranges of ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The key expression.
    pub key: String,
    /// Attribute (else time series).
    pub attribute: bool,
    /// The objects.
    pub objects: Objects,
    /// Properties read (incl. those named by `${…}` in the key).
    pub props: Vec<u32>,
}

/// A point resolved to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPoint {
    /// The key expression.
    pub key: String,
    /// Attribute (else time series).
    pub attribute: bool,
    /// The object.
    pub object: ObjectId,
    /// Properties read.
    pub props: Vec<u32>,
}

fn list_of_text(v: &Json) -> Vec<String> {
    match v {
        Json::Array(a) => a.iter().filter_map(super::address::json_text).collect(),
        other => super::address::json_text(other).into_iter().collect(),
    }
}

/// `${name}` tags of a key.
pub fn key_tags(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = key;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else { break };
        out.push(after[..j].to_string());
        rest = &after[j + 1..];
    }
    out
}

fn ids_of(v: &Json) -> Result<Option<Vec<u32>>, String> {
    fn one(s: &str, out: &mut Vec<u32>) -> Result<(), String> {
        let s = s.trim();
        match s.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not a range"))?;
                let b: u32 = b
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not a range"))?;
                if b < a || b - a > 100_000 {
                    return Err(format!("{s:?} is not a range of at most 100000 ids"));
                }
                out.extend(a..=b);
            }
            None => out.push(
                s.parse()
                    .map_err(|_| format!("{s:?} is not an object id"))?,
            ),
        }
        Ok(())
    }
    let mut out = Vec::new();
    match v {
        Json::String(s) if s.trim() == "*" => return Ok(None),
        Json::String(s) => one(s, &mut out)?,
        Json::Number(n) => out.push(
            n.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("{n} is not an object id"))?,
        ),
        Json::Array(a) => {
            for i in a {
                match i {
                    Json::String(s) => one(s, &mut out)?,
                    Json::Number(n) => out.push(
                        n.as_u64()
                            .and_then(|v| u32::try_from(v).ok())
                            .ok_or_else(|| format!("{n} is not an object id"))?,
                    ),
                    other => return Err(format!("{other} is not an object id")),
                }
            }
        }
        other => return Err(format!("{other} is not an object id")),
    }
    Ok(Some(out))
}

/// Expands one `attributes`/`timeseries` entry. Errors are `(key, reason)`.
pub fn expand(
    key: &str,
    object_type: Option<&Json>,
    object_id: Option<&Json>,
    property_id: Option<&Json>,
    attribute: bool,
) -> Result<Vec<Point>, (String, String)> {
    let types_txt = object_type
        .map(list_of_text)
        .ok_or_else(|| ("objectType".to_string(), "missing".to_string()))?;
    let any_type = types_txt.iter().any(|t| t == "*");
    let mut types = Vec::new();
    if !any_type {
        for t in &types_txt {
            types.push(ids::object_type(t).ok_or_else(|| {
                (
                    "objectType".to_string(),
                    format!("unknown object type {t:?}"),
                )
            })?);
        }
    }
    let mut props = Vec::new();
    for p in property_id
        .map(list_of_text)
        .unwrap_or_else(|| vec!["presentValue".into()])
    {
        let id = ids::property(&p)
            .ok_or_else(|| ("propertyId".to_string(), format!("unknown property {p:?}")))?;
        if !props.contains(&id) {
            props.push(id);
        }
    }
    for t in key_tags(key) {
        if let Some(id) = ids::property(&t) {
            if !props.contains(&id) {
                props.push(id);
            }
        }
    }
    if props.is_empty() {
        return Err(("propertyId".into(), "empty".into()));
    }
    let idv = object_id.cloned().unwrap_or(Json::Null);
    let instances = if idv.is_null() {
        if types == [ids::DEVICE] {
            return Ok(vec![Point {
                key: key.into(),
                attribute,
                objects: Objects::Device,
                props,
            }]);
        }
        return Err(("objectId".into(), "missing".into()));
    } else {
        ids_of(&idv).map_err(|e| ("objectId".to_string(), e))?
    };
    let Some(instances) = instances else {
        return Ok(vec![Point {
            key: key.into(),
            attribute,
            objects: Objects::AllOf(types),
            props,
        }]);
    };
    if any_type {
        return Err(("objectType".into(), "\"*\" needs objectId \"*\"".into()));
    }
    if types.len() > 1 {
        return Err((
            "objectType".into(),
            "a list of object types needs objectId \"*\"".into(),
        ));
    }
    let kind = types[0];
    Ok(instances
        .into_iter()
        .map(|i| Point {
            key: key.into(),
            attribute,
            objects: if kind == ids::DEVICE {
                Objects::Device
            } else {
                Objects::One(ObjectId::new(kind, i))
            },
            props: props.clone(),
        })
        .collect())
}

/// The point of a section given as `"*"`: every object's presentValue, keyed by its name.
pub fn discover_all(attribute: bool) -> Point {
    Point {
        key: "${objectName}".into(),
        attribute,
        objects: Objects::AllOf(vec![]),
        props: vec![ids::PRESENT_VALUE, ids::OBJECT_NAME],
    }
}

/// Resolves points against the device's instance and object list.
pub fn resolve(points: &[Point], device: u32, objects: &[ObjectId]) -> Vec<ResolvedPoint> {
    let mut out = Vec::new();
    for p in points {
        match &p.objects {
            Objects::One(o) => out.push(ResolvedPoint {
                key: p.key.clone(),
                attribute: p.attribute,
                object: *o,
                props: p.props.clone(),
            }),
            Objects::Device => out.push(ResolvedPoint {
                key: p.key.clone(),
                attribute: p.attribute,
                object: ObjectId::new(ids::DEVICE, device),
                props: p.props.clone(),
            }),
            Objects::AllOf(types) => {
                for o in objects {
                    if o.kind == ids::DEVICE && types.is_empty() {
                        continue;
                    }
                    if types.is_empty() || types.contains(&o.kind) {
                        out.push(ResolvedPoint {
                            key: p.key.clone(),
                            attribute: p.attribute,
                            object: *o,
                            props: p.props.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

fn real(f: f32) -> Value {
    // The shortest decimal that reads back as the same f32: 0.1f32 is 0.1, not
    // 0.10000000149011612.
    let v = format!("{f}").parse::<f64>().unwrap_or(f64::from(f));
    Value::Float(v)
}

/// A BACnet value as a typed ThingsBoard value: REAL and Double → float, Unsigned, Signed
/// and Enumerated → integer, Boolean → bool, strings → string, bit strings → an array of
/// booleans, dates and times → ISO text, object ids → `type,instance`, arrays → JSON arrays.
pub fn to_value(v: &AppValue) -> Value {
    match v {
        AppValue::Null => Value::Json(Json::Null),
        AppValue::Bool(b) => Value::Bool(*b),
        AppValue::Unsigned(u) => match i64::try_from(*u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(*u as f64),
        },
        AppValue::Signed(i) => Value::Int(*i),
        AppValue::Real(f) => real(*f),
        AppValue::Double(d) => Value::Float(*d),
        AppValue::Octets(o) => Value::String(o.iter().map(|b| format!("{b:02x}")).collect()),
        AppValue::Text(s) => Value::String(s.clone()),
        AppValue::Bits(b) => Value::Json(Json::Array(b.iter().map(|x| Json::Bool(*x)).collect())),
        AppValue::Enumerated(e) => Value::Int(i64::from(*e)),
        AppValue::Date(y, m, d, _) => Value::String(if *y == 255 || *m > 12 || *d > 31 {
            format!("{y}-{m}-{d}")
        } else {
            format!("{y:04}-{m:02}-{d:02}")
        }),
        AppValue::Time(h, m, s, c) => Value::String(format!("{h:02}:{m:02}:{s:02}.{c:02}")),
        AppValue::Object(o) => Value::String(o.to_string()),
        AppValue::List(items) => Value::Json(Json::Array(
            items.iter().map(|i| to_value(i).to_json()).collect(),
        )),
        AppValue::Context(n, b) => Value::Json(
            json!({ "tag": n, "data": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
        ),
        AppValue::Constructed(n, inner) => {
            Value::Json(json!({ "tag": n, "value": to_value(inner).to_json() }))
        }
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_json().to_string(),
    }
}

/// Builds the keys and values of one resolved point from what was read (upstream's key
/// rule: a property named by `${prop}` in the key fills it in; if one property is left,
/// it is the key's value; if several are left, each is `key.property`).
pub fn point_values(
    p: &ResolvedPoint,
    read: &HashMap<(ObjectId, u32), PropResult>,
) -> Vec<(String, Value)> {
    let mut key = p.key.clone();
    let mut unused = Vec::new();
    for prop in &p.props {
        let Some(Ok(v)) = read.get(&(p.object, *prop)) else {
            continue;
        };
        let v = to_value(v);
        let name = ids::property_name(*prop);
        let tag = format!("${{{name}}}");
        if key.contains(&tag) {
            key = key.replace(&tag, &text_of(&v));
        } else {
            unused.push((name, v));
        }
    }
    if unused.len() == 1 {
        let (_, v) = unused.remove(0);
        vec![(key, v)]
    } else {
        unused
            .into_iter()
            .map(|(n, v)| (format!("{key}.{n}"), v))
            .collect()
    }
}

/// Adds one poll's values of every point to `data`.
pub fn fill(
    data: &mut DeviceData,
    ts: i64,
    points: &[ResolvedPoint],
    read: &HashMap<(ObjectId, u32), PropResult>,
) {
    for p in points {
        for (k, v) in point_values(p, read) {
            if p.attribute {
                data.push_attribute(k, v);
            } else {
                data.push_telemetry(ts, k, v);
            }
        }
    }
}

/// Expands `${objectName}`, `${address}`, `${objectId}`, `${vendorId}` in a device name or
/// profile expression.
pub fn device_expression(expr: &str, vars: &[(&str, String)]) -> String {
    let mut s = expr.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("${{{k}}}"), v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const AV1: ObjectId = ObjectId {
        kind: 2,
        instance: 1,
    };

    #[test]
    fn expansion() {
        let p = expand(
            "t",
            Some(&json!("analogValue")),
            Some(&json!("1-3")),
            None,
            false,
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].objects, Objects::One(ObjectId::new(2, 3)));
        assert_eq!(p[0].props, vec![85]);
        let p = expand(
            "${objectName}",
            Some(&json!("binaryValue")),
            Some(&json!([1, "4-5"])),
            Some(&json!(["presentValue", "statusFlags"])),
            true,
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].props, vec![85, 111, 77]);
        let p = expand(
            "x",
            Some(&json!(["analogInput", "analogValue"])),
            Some(&json!("*")),
            None,
            true,
        )
        .unwrap();
        assert_eq!(p[0].objects, Objects::AllOf(vec![0, 2]));
        assert!(expand(
            "x",
            Some(&json!(["analogInput", "analogValue"])),
            Some(&json!(1)),
            None,
            true
        )
        .is_err());
        assert!(expand("x", Some(&json!("nope")), Some(&json!(1)), None, true).is_err());
        assert!(expand(
            "x",
            Some(&json!("analogValue")),
            Some(&json!("5-1")),
            None,
            true
        )
        .is_err());
        assert!(expand(
            "x",
            Some(&json!("analogValue")),
            Some(&json!(1)),
            Some(&json!("bogus")),
            true
        )
        .is_err());
        let d = expand(
            "fw",
            Some(&json!("device")),
            None,
            Some(&json!("firmwareRevision")),
            true,
        )
        .unwrap();
        assert_eq!(d[0].objects, Objects::Device);
    }

    #[test]
    fn typed_values() {
        assert_eq!(to_value(&AppValue::Real(0.1)), Value::Float(0.1));
        assert_eq!(to_value(&AppValue::Real(21.5)), Value::Float(21.5));
        assert_eq!(to_value(&AppValue::Enumerated(1)), Value::Int(1));
        assert_eq!(to_value(&AppValue::Unsigned(7)), Value::Int(7));
        assert_eq!(to_value(&AppValue::Signed(-7)), Value::Int(-7));
        assert_eq!(to_value(&AppValue::Bool(true)), Value::Bool(true));
        assert_eq!(
            to_value(&AppValue::Text("a".into())),
            Value::String("a".into())
        );
        assert_eq!(
            to_value(&AppValue::Bits(vec![false, true])),
            Value::Json(json!([false, true]))
        );
        assert_eq!(
            to_value(&AppValue::Date(2026, 12, 3, 4)),
            Value::String("2026-12-03".into())
        );
        assert_eq!(
            to_value(&AppValue::Object(AV1)),
            Value::String("analogValue,1".into())
        );
        assert_eq!(
            to_value(&AppValue::List(vec![AppValue::Null, AppValue::Real(2.0)])),
            Value::Json(json!([null, 2.0]))
        );
    }

    #[test]
    fn key_rules() {
        let mut read = HashMap::new();
        read.insert((AV1, 85), Ok(AppValue::Real(21.5)));
        read.insert((AV1, 77), Ok(AppValue::Text("temp".into())));
        read.insert((AV1, 111), Ok(AppValue::Bits(vec![false; 4])));
        read.insert((AV1, 117), Err((2, 32)));
        let p = ResolvedPoint {
            key: "${objectName}".into(),
            attribute: false,
            object: AV1,
            props: vec![85, 77],
        };
        assert_eq!(
            point_values(&p, &read),
            vec![("temp".to_string(), Value::Float(21.5))]
        );
        let p = ResolvedPoint {
            key: "t".into(),
            attribute: false,
            object: AV1,
            props: vec![85, 111, 117],
        };
        let v = point_values(&p, &read);
        assert_eq!(v[0].0, "t.presentValue");
        assert_eq!(v[1].0, "t.statusFlags");
        assert_eq!(v.len(), 2);
        let all = resolve(&[discover_all(true)], 9, &[ObjectId::new(8, 9), AV1]);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].object, AV1);
        assert_eq!(
            device_expression(
                "BACnet Device ${objectName}",
                &[("objectName", "dev".into())]
            ),
            "BACnet Device dev"
        );
    }
}
