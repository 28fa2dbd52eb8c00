//! tbgw downlink → service messages for the connector, and the connector's answers (pure).

use serde_json::Value as Json;

use super::pb::{
    AttributeUpdateNotificationMsg, ConnectorConfigurationMsg, FromConnectorMessage,
    FromServiceMessage, GatewayAttributeResponseMsg, GatewayAttributeUpdateNotificationMsg,
    GatewayAttributesResponseMsg, GatewayDeviceRpcRequestMsg, KeyValueProto, KeyValueType,
    RegisterConnectorMsg, Response, ResponseStatus, ToDeviceRpcRequestMsg, TsKvProto,
    UnregisterConnectorMsg,
};

/// A JSON value as a `KeyValueProto`: booleans as `BOOLEAN_V` (upstream names a type that
/// does not exist and fails), integers as `LONG_V` (beyond `i64` as `DOUBLE_V`), other numbers
/// as `DOUBLE_V`, strings as `STRING_V`, objects, arrays and null as `JSON_V` text.
pub fn kv_proto(key: &str, value: &Json) -> KeyValueProto {
    let mut kv = KeyValueProto {
        key: key.to_string(),
        ..Default::default()
    };
    match value {
        Json::Bool(b) => {
            kv.r#type = KeyValueType::BooleanV as i32;
            kv.bool_v = *b;
        }
        Json::Number(n) => match n.as_i64() {
            Some(i) => {
                kv.r#type = KeyValueType::LongV as i32;
                kv.long_v = i;
            }
            None => {
                kv.r#type = KeyValueType::DoubleV as i32;
                kv.double_v = n.as_f64().unwrap_or(f64::NAN);
            }
        },
        Json::String(s) => {
            kv.r#type = KeyValueType::StringV as i32;
            kv.string_v = s.clone();
        }
        other => {
            kv.r#type = KeyValueType::JsonV as i32;
            kv.json_v = other.to_string();
        }
    }
    kv
}

/// A response with a status and, as upstream does, the connector message it answers.
pub fn response(
    status: ResponseStatus,
    answers: Option<FromConnectorMessage>,
) -> FromServiceMessage {
    FromServiceMessage {
        response: Some(Box::new(Response {
            status: status as i32,
            service_message: None,
            connector_message: answers.map(Box::new),
        })),
        ..Default::default()
    }
}

/// The empty `response` a poll gets when nothing is queued (what upstream's client treats as
/// "nothing new").
pub fn idle() -> FromServiceMessage {
    FromServiceMessage {
        response: Some(Box::default()),
        ..Default::default()
    }
}

/// The answer to a registration: `SUCCESS` with the connector's name, id and configuration
/// (upstream sends both in one message), or `NOT_FOUND` / `FAILURE`.
pub fn registration(
    status: ResponseStatus,
    config: Option<ConnectorConfigurationMsg>,
) -> FromServiceMessage {
    let mut m = response(
        status,
        Some(FromConnectorMessage {
            register_connector_msg: Some(RegisterConnectorMsg::default()),
            ..Default::default()
        }),
    );
    m.connector_configuration_msg = config;
    m
}

/// The answer to an unregistration.
pub fn unregistration(status: ResponseStatus) -> FromServiceMessage {
    response(
        status,
        Some(FromConnectorMessage {
            unregister_connector_msg: Some(UnregisterConnectorMsg::default()),
            ..Default::default()
        }),
    )
}

/// Tells a connector it is no longer registered (the gateway stops the connector, or another
/// process registered with its key).
pub fn unregistered() -> FromServiceMessage {
    FromServiceMessage {
        unregister_connector_msg: Some(UnregisterConnectorMsg::default()),
        ..Default::default()
    }
}

/// A shared-attribute update. Upstream's special case is kept: an update that is only
/// `{"deleted": [keys]}` lists the keys in `sharedDeleted`.
pub fn attribute_update(
    device: &str,
    values: &serde_json::Map<String, Json>,
    ts: i64,
) -> FromServiceMessage {
    let mut n = AttributeUpdateNotificationMsg::default();
    match values.get("deleted") {
        Some(Json::Array(keys)) if values.len() == 1 => {
            n.shared_deleted = keys
                .iter()
                .map(|k| {
                    k.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| k.to_string())
                })
                .collect();
        }
        _ => {
            n.shared_updated = values
                .iter()
                .map(|(k, v)| TsKvProto {
                    ts,
                    kv: Some(kv_proto(k, v)),
                })
                .collect();
        }
    }
    FromServiceMessage {
        gateway_attribute_update_notification_msg: Some(GatewayAttributeUpdateNotificationMsg {
            device_name: device.to_string(),
            notification_msg: Some(n),
        }),
        ..Default::default()
    }
}

/// An RPC for a device (`device` empty for a connector RPC). Parameters are sent as JSON
/// text; a string parameter as the string itself (as upstream's `str(params)`).
pub fn rpc_request(device: &str, id: i32, method: &str, params: &Json) -> FromServiceMessage {
    let params = match params {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    FromServiceMessage {
        gateway_device_rpc_request_msg: Some(GatewayDeviceRpcRequestMsg {
            device_name: device.to_string(),
            rpc_request_msg: Some(ToDeviceRpcRequestMsg {
                request_id: id,
                method_name: method.to_string(),
                params,
            }),
        }),
        ..Default::default()
    }
}

/// ThingsBoard's answer to an attribute request (`{"value": v}` for one key, `{"values":
/// {..}}` for several) as a `gatewayAttributeResponseMsg`; `error` when it did not answer.
pub fn attribute_response(
    device: &str,
    request_id: i32,
    client: bool,
    keys: &[String],
    answer: Result<&Json, String>,
) -> FromServiceMessage {
    let mut r = GatewayAttributesResponseMsg {
        request_id,
        ..Default::default()
    };
    match answer {
        Ok(answer) => {
            let mut list = Vec::new();
            if let Some(Json::Object(values)) = answer.get("values") {
                list.extend(values.iter().map(|(k, v)| kv_proto(k, v)));
            } else if let (Some(v), [key]) = (answer.get("value"), keys) {
                list.push(kv_proto(key, v));
            }
            if client {
                r.client_attribute_list = list;
            } else {
                r.shared_attribute_list = list;
            }
        }
        Err(e) => r.error = e,
    }
    FromServiceMessage {
        gateway_attribute_response_msg: Some(GatewayAttributeResponseMsg {
            device_name: device.to_string(),
            response_msg: Some(r),
        }),
        ..Default::default()
    }
}

/// The body of a connector's RPC answer (`gatewayRpcResponseMsg.data`) as sent to
/// ThingsBoard: JSON text is sent as that JSON (as upstream, which parses it), other text as a
/// string.
pub fn rpc_answer(data: &str) -> Json {
    serde_json::from_str(data).unwrap_or_else(|_| Json::String(data.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_values_get_their_proto_types() {
        assert_eq!(
            kv_proto("b", &json!(true)).r#type,
            KeyValueType::BooleanV as i32
        );
        assert!(kv_proto("b", &json!(true)).bool_v);
        assert_eq!(kv_proto("l", &json!(5)).long_v, 5);
        assert_eq!(
            kv_proto("l", &json!(u64::MAX)).r#type,
            KeyValueType::DoubleV as i32
        );
        assert_eq!(kv_proto("d", &json!(1.5)).double_v, 1.5);
        assert_eq!(kv_proto("s", &json!("x")).string_v, "x");
        let j = kv_proto("j", &json!({"a": [1]}));
        assert_eq!(j.r#type, KeyValueType::JsonV as i32);
        assert_eq!(j.json_v, r#"{"a":[1]}"#);
        assert_eq!(kv_proto("n", &json!([1, 2])).json_v, "[1,2]");
    }

    #[test]
    fn attribute_updates_and_deletions() {
        let m = attribute_update("D", json!({"a": 1, "b": false}).as_object().unwrap(), 7);
        let n = m.gateway_attribute_update_notification_msg.unwrap();
        assert_eq!(n.device_name, "D");
        let n = n.notification_msg.unwrap();
        assert_eq!(n.shared_updated.len(), 2);
        assert_eq!(n.shared_updated[0].ts, 7);
        let m = attribute_update("D", json!({"deleted": ["a", "b"]}).as_object().unwrap(), 7);
        let n = m
            .gateway_attribute_update_notification_msg
            .unwrap()
            .notification_msg
            .unwrap();
        assert_eq!(n.shared_deleted, vec!["a", "b"]);
        assert!(n.shared_updated.is_empty());
    }

    #[test]
    fn rpc_params_and_answers() {
        let m = rpc_request("D", 3, "set", &json!({"v": 1}));
        let r = m
            .gateway_device_rpc_request_msg
            .unwrap()
            .rpc_request_msg
            .unwrap();
        assert_eq!(
            (r.request_id, r.method_name.as_str(), r.params.as_str()),
            (3, "set", r#"{"v":1}"#)
        );
        let m = rpc_request("D", 3, "echo", &json!("plain"));
        assert_eq!(
            m.gateway_device_rpc_request_msg
                .unwrap()
                .rpc_request_msg
                .unwrap()
                .params,
            "plain"
        );
        assert_eq!(rpc_answer(r#"{"success": true}"#), json!({"success": true}));
        assert_eq!(rpc_answer("done"), json!("done"));
    }

    #[test]
    fn attribute_responses_for_one_and_several_keys() {
        let one = attribute_response("D", 1, false, &["k".into()], Ok(&json!({"value": 3})));
        let r = one
            .gateway_attribute_response_msg
            .unwrap()
            .response_msg
            .unwrap();
        assert_eq!(r.shared_attribute_list[0].key, "k");
        assert_eq!(r.shared_attribute_list[0].long_v, 3);
        let many = attribute_response(
            "D",
            2,
            true,
            &["a".into(), "b".into()],
            Ok(&json!({"values": {"a": "x", "b": true}})),
        );
        let r = many
            .gateway_attribute_response_msg
            .unwrap()
            .response_msg
            .unwrap();
        assert_eq!(r.client_attribute_list.len(), 2);
        let err = attribute_response("D", 3, true, &[], Err("timeout".into()));
        assert_eq!(
            err.gateway_attribute_response_msg
                .unwrap()
                .response_msg
                .unwrap()
                .error,
            "timeout"
        );
    }
}
