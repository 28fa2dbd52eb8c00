//! Gateway requests to device bytes, pure and synchronous: what an attribute update, an RPC,
//! an attribute-request answer or the reserved `set` writes to the device.

use serde_json::Value as Json;
use tbgw::downlink::RpcError;

use super::uplink::Encoding;

/// The text written for a value: a string as it is, anything else as JSON (`21.5`, `true`,
/// `{"a":1}`). Upstream writes Python's `str()` (`True`, `{'a': 1}`); see the docs page.
pub fn value_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The bytes written for an attribute update's value or an RPC's params.
pub fn value_bytes(v: &Json, enc: Encoding) -> Result<Vec<u8>, String> {
    enc.encode(&value_text(v))
}

/// The answer to an attribute request as upstream writes it: JSON with Python's separators
/// (`{"a": 1, "b": [1, 2]}`), UTF-8.
pub fn attribute_answer(v: &Json) -> Vec<u8> {
    let mut s = String::new();
    py_json(v, &mut s);
    s.into_bytes()
}

fn py_json(v: &Json, out: &mut String) {
    match v {
        Json::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_json(x, out);
            }
            out.push(']');
        }
        Json::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push_str(": ");
                py_json(x, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The reserved `set` (and connector RPC `socket_set`): where to write what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRequest {
    /// The host.
    pub address: String,
    /// The port.
    pub port: u16,
    /// The text written.
    pub value: String,
}

/// Reads `address=…;port=…;value=…` (upstream's form; `value` may hold `=`) or a JSON object
/// with those keys. Answers upstream's messages for missing keys and a bad port.
pub fn parse_set(params: &Json) -> Result<SetRequest, RpcError> {
    let (mut address, mut port, mut value) = (None, None, None);
    match params {
        Json::String(s) => {
            for part in s.split(';') {
                let Some((k, v)) = part.split_once('=') else {
                    continue;
                };
                let (k, v) = (k.trim(), v);
                if k.is_empty() || v.is_empty() {
                    continue;
                }
                match k {
                    "address" => address = Some(v.trim().to_string()),
                    "port" => port = Some(Json::String(v.trim().to_string())),
                    "value" => value = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        Json::Object(o) => {
            address = o.get("address").and_then(Json::as_str).map(str::to_string);
            port = o.get("port").cloned();
            value = o.get("value").map(value_text);
        }
        _ => {}
    }
    let (Some(address), Some(port), Some(value)) = (address, port, value) else {
        return Err(RpcError::BadRequest("Not enough params".into()));
    };
    let port = match &port {
        Json::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| RpcError::BadRequest("Param \"port\" have to be int type".into()))?;
    Ok(SetRequest {
        address,
        port,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_and_answers() {
        assert_eq!(value_text(&json!("on")), "on");
        assert_eq!(value_text(&json!(21.5)), "21.5");
        assert_eq!(value_text(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(
            value_bytes(&json!("hi"), Encoding::Utf16).unwrap(),
            b"\xff\xfeh\x00i\x00"
        );
        assert_eq!(
            attribute_answer(&json!({"a": 1, "b": [1, "x"]})),
            b"{\"a\": 1, \"b\": [1, \"x\"]}"
        );
        assert_eq!(attribute_answer(&json!("v")), b"\"v\"");
    }

    #[test]
    fn reserved_set_params() {
        assert_eq!(
            parse_set(&json!("address=127.0.0.1;port=5000;value=a=b")).unwrap(),
            SetRequest {
                address: "127.0.0.1".into(),
                port: 5000,
                value: "a=b".into()
            }
        );
        assert_eq!(
            parse_set(&json!({"address": "::1", "port": 7, "value": 3})).unwrap(),
            SetRequest {
                address: "::1".into(),
                port: 7,
                value: "3".into()
            }
        );
        assert_eq!(
            parse_set(&json!("address=h;value=v")),
            Err(RpcError::BadRequest("Not enough params".into()))
        );
        assert!(matches!(
            parse_set(&json!("address=h;port=x;value=v")),
            Err(RpcError::BadRequest(m)) if m.contains("int")
        ));
    }
}
