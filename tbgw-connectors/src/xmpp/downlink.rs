//! Attribute updates, RPCs and the reserved `set` → chat message bodies, and a device's answer
//! → the RPC result: pure and synchronous.

use serde_json::{json, Map, Value as Json};
use tbgw::expr::{Encoding, Template};

/// One `attributeUpdates[]` entry.
#[derive(Debug, Clone)]
pub struct AttributeUpdate {
    /// `attributeOnThingsBoard`: the shared attribute's key.
    pub key: String,
    /// `valueExpression`: `${attributeKey}` and `${attributeValue}` are replaced.
    pub expression: String,
}

/// One `serverSideRpc[]` entry.
#[derive(Debug, Clone)]
pub struct Rpc {
    /// `methodRPC`.
    pub method: String,
    /// `withResponse` (default true): wait for the device's answer.
    pub with_response: bool,
    /// `valueExpression` over `{"params": …, "method": …}`; values are written as JSON.
    pub value: Template,
}

/// The body sent for a shared attribute: `${attributeKey}` becomes the key, `${attributeValue}`
/// the value (a string as is, anything else as compact JSON), as upstream's text replacement.
pub fn attribute_body(expression: &str, key: &str, value: &Json) -> String {
    let value = match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    expression
        .replace("${attributeKey}", key)
        .replace("${attributeValue}", &value)
}

/// The body sent for an RPC: the value expression with `${params}`, `${params.x}` and
/// `${method}` written as JSON (upstream's `dumps(value)`). None when a placeholder has no
/// match in the request.
pub fn rpc_body(value: &Template, method: &str, params: &Json) -> Option<String> {
    value.render_scope(
        &json!({ "params": params, "method": method }),
        Encoding::Json,
    )
}

/// The body of the reserved `set`: `"key=value;key2=value2"` (upstream's format) or an object
/// of params, sent as a JSON object. Parts without exactly one `=` or with an empty side are
/// skipped, as upstream does; an empty result is an error.
pub fn set_body(params: &Json) -> Result<String, String> {
    const EXPECTED: &str = "RPC params are empty, expected format: set value={value};";
    let map = match params {
        Json::String(s) => {
            let mut m = Map::new();
            for part in s.split(';') {
                let mut it = part.split('=');
                if let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) {
                    if !k.is_empty() && !v.is_empty() {
                        m.insert(k.to_string(), Json::String(v.to_string()));
                    }
                }
            }
            m
        }
        Json::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if map.is_empty() {
        return Err(EXPECTED.to_string());
    }
    Ok(Json::Object(map).to_string())
}

/// A device's answer body as the RPC result: JSON when it parses, else the text.
pub fn answer_value(body: &str) -> Json {
    serde_json::from_str(body.trim()).unwrap_or_else(|_| Json::String(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_body_as_upstream_sample() {
        let e = r#"{"${attributeKey}":"${attributeValue}"}"#;
        assert_eq!(
            attribute_body(e, "shared", &json!("on")),
            r#"{"shared":"on"}"#
        );
        assert_eq!(attribute_body(e, "shared", &json!(5)), r#"{"shared":"5"}"#);
        assert_eq!(
            attribute_body("${attributeValue}", "k", &json!(true)),
            "true"
        );
    }

    #[test]
    fn rpc_body_writes_json() {
        let t = Template::parse("${params}").unwrap();
        assert_eq!(
            rpc_body(&t, "rpc1", &json!({"a": 1})).as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(rpc_body(&t, "rpc1", &json!("x")).as_deref(), Some(r#""x""#));
        let t = Template::parse(r#"{"m":${method},"v":${params.v}}"#).unwrap();
        assert_eq!(
            rpc_body(&t, "go", &json!({"v": [1]})).as_deref(),
            Some(r#"{"m":"go","v":[1]}"#)
        );
        assert_eq!(rpc_body(&t, "go", &json!({})), None);
    }

    #[test]
    fn set_params() {
        let body = set_body(&json!("value=1;mode=auto;bad;x=y=z;=v")).unwrap();
        assert_eq!(
            serde_json::from_str::<Json>(&body).unwrap(),
            json!({"value": "1", "mode": "auto"})
        );
        assert_eq!(set_body(&json!({"v": 2})).unwrap(), r#"{"v":2}"#);
        assert!(set_body(&json!("")).is_err());
        assert!(set_body(&json!(null)).is_err());
        assert!(set_body(&json!(5)).is_err());
    }

    #[test]
    fn answers() {
        assert_eq!(answer_value(r#"{"ok":1}"#), json!({"ok": 1}));
        assert_eq!(answer_value("done"), json!("done"));
        assert_eq!(answer_value(" 42 "), json!(42));
    }
}
