//! Connector messages → tbgw data (pure): telemetry and attributes of every `KeyValueType`.

use std::collections::HashMap;

use tbgw::model::{now_millis, DeviceData, Value};

use super::pb::{GatewayAttributesMsg, GatewayTelemetryMsg, KeyValueProto, KeyValueType};

/// Why a key/value could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The `type` is not one of `KeyValueType`'s values.
    #[error("key `{key}`: unknown value type {ty}")]
    UnknownType {
        /// The key.
        key: String,
        /// The type number sent.
        ty: i32,
    },
    /// The key is empty.
    #[error("a value without a key")]
    EmptyKey,
}

/// The typed value of one `KeyValueProto`. `JSON_V` text is parsed (upstream forwards it as a
/// string); text that is not JSON stays a string.
pub fn kv_value(kv: &KeyValueProto) -> Result<Value, KvError> {
    if kv.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(match KeyValueType::try_from(kv.r#type) {
        Ok(KeyValueType::BooleanV) => Value::Bool(kv.bool_v),
        Ok(KeyValueType::LongV) => Value::Int(kv.long_v),
        Ok(KeyValueType::DoubleV) => Value::Float(kv.double_v),
        Ok(KeyValueType::StringV) => Value::String(kv.string_v.clone()),
        Ok(KeyValueType::JsonV) => match serde_json::from_str::<serde_json::Value>(&kv.json_v) {
            Ok(v) => Value::Json(v),
            Err(_) => Value::String(kv.json_v.clone()),
        },
        Err(_) => {
            return Err(KvError::UnknownType {
                key: kv.key.clone(),
                ty: kv.r#type,
            })
        }
    })
}

/// The device type recorded for `name` (from its `connectMsg`), else `default`.
fn device_type(types: &HashMap<String, String>, name: &str) -> String {
    types
        .get(name)
        .cloned()
        .unwrap_or_else(|| "default".to_string())
}

/// A `gatewayTelemetryMsg` as data, one [`DeviceData`] per device entry. A `ts` of 0 means
/// now. Values that cannot be converted are left out and returned as errors.
pub fn telemetry(
    msg: &GatewayTelemetryMsg,
    types: &HashMap<String, String>,
    errors: &mut Vec<KvError>,
) -> Vec<DeviceData> {
    let mut out = Vec::with_capacity(msg.msg.len());
    for t in &msg.msg {
        if t.device_name.is_empty() {
            continue;
        }
        let mut d = DeviceData::new(t.device_name.clone(), device_type(types, &t.device_name));
        if let Some(post) = &t.msg {
            for list in &post.ts_kv_list {
                let ts = if list.ts > 0 { list.ts } else { now_millis() };
                for kv in &list.kv {
                    match kv_value(kv) {
                        Ok(v) => d.push_telemetry(ts, kv.key.clone(), v),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        out.push(d);
    }
    out
}

/// A `gatewayAttributesMsg` as data, one [`DeviceData`] per device entry.
pub fn attributes(
    msg: &GatewayAttributesMsg,
    types: &HashMap<String, String>,
    errors: &mut Vec<KvError>,
) -> Vec<DeviceData> {
    let mut out = Vec::with_capacity(msg.msg.len());
    for a in &msg.msg {
        if a.device_name.is_empty() {
            continue;
        }
        let mut d = DeviceData::new(a.device_name.clone(), device_type(types, &a.device_name));
        if let Some(post) = &a.msg {
            for kv in &post.kv {
                match kv_value(kv) {
                    Ok(v) => d.push_attribute(kv.key.clone(), v),
                    Err(e) => errors.push(e),
                }
            }
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::pb::{
        AttributesMsg, PostAttributeMsg, PostTelemetryMsg, TelemetryMsg, TsKvListProto,
    };
    use super::*;

    fn kv(key: &str, ty: KeyValueType) -> KeyValueProto {
        KeyValueProto {
            key: key.into(),
            r#type: ty as i32,
            ..Default::default()
        }
    }

    #[test]
    fn every_value_type_converts() {
        let mut b = kv("b", KeyValueType::BooleanV);
        b.bool_v = true;
        let mut l = kv("l", KeyValueType::LongV);
        l.long_v = -7;
        let mut f = kv("f", KeyValueType::DoubleV);
        f.double_v = 2.5;
        let mut s = kv("s", KeyValueType::StringV);
        s.string_v = "x".into();
        let mut j = kv("j", KeyValueType::JsonV);
        j.json_v = r#"{"a":[1,2]}"#.into();
        let mut bad_json = kv("t", KeyValueType::JsonV);
        bad_json.json_v = "not json".into();
        assert_eq!(kv_value(&b), Ok(Value::Bool(true)));
        assert_eq!(kv_value(&l), Ok(Value::Int(-7)));
        assert_eq!(kv_value(&f), Ok(Value::Float(2.5)));
        assert_eq!(kv_value(&s), Ok(Value::String("x".into())));
        assert_eq!(
            kv_value(&j),
            Ok(Value::Json(serde_json::json!({"a": [1, 2]})))
        );
        assert_eq!(kv_value(&bad_json), Ok(Value::String("not json".into())));
        let mut unknown = kv("u", KeyValueType::BooleanV);
        unknown.r#type = 9;
        assert!(matches!(
            kv_value(&unknown),
            Err(KvError::UnknownType { ty: 9, .. })
        ));
        assert_eq!(
            kv_value(&kv("", KeyValueType::LongV)),
            Err(KvError::EmptyKey)
        );
    }

    #[test]
    fn telemetry_and_attributes_keep_devices_timestamps_and_types() {
        let mut l = kv("l", KeyValueType::LongV);
        l.long_v = 1;
        let mut bad = kv("bad", KeyValueType::LongV);
        bad.r#type = 42;
        let msg = GatewayTelemetryMsg {
            msg: vec![TelemetryMsg {
                device_name: "D".into(),
                msg: Some(PostTelemetryMsg {
                    ts_kv_list: vec![
                        TsKvListProto {
                            ts: 1000,
                            kv: vec![l.clone(), bad],
                        },
                        TsKvListProto {
                            ts: 0,
                            kv: vec![l.clone()],
                        },
                    ],
                }),
            }],
        };
        let types = HashMap::from([("D".to_string(), "thermo".to_string())]);
        let mut errors = Vec::new();
        let data = telemetry(&msg, &types, &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].device_type, "thermo");
        assert_eq!(data[0].telemetry[0].ts, 1000);
        assert!(data[0].telemetry[1].ts > 1000);
        let attrs = attributes(
            &GatewayAttributesMsg {
                msg: vec![AttributesMsg {
                    device_name: "E".into(),
                    msg: Some(PostAttributeMsg { kv: vec![l] }),
                }],
            },
            &types,
            &mut errors,
        );
        assert_eq!(attrs[0].device_type, "default");
        assert_eq!(attrs[0].attributes, vec![("l".to_string(), Value::Int(1))]);
    }
}
