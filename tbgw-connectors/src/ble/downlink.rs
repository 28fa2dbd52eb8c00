//! RPCs and attribute updates to device bytes and back, pure and synchronous: Python's `str()`
//! of what ThingsBoard sends (what upstream writes to a characteristic), the reserved
//! `get`/`set` params, and how upstream's gateway reads a device's answer back.

use std::collections::HashMap;

use serde_json::Value as Json;

/// Python's `str(value)` for what ThingsBoard sends: text as is, `True`/`False`, `None`,
/// numbers as JSON writes them, anything else as JSON.
pub fn py_str(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Null => "None".into(),
        other => other.to_string(),
    }
}

/// Upstream answers with `str(result)`, which its gateway reads back as JSON when it can.
pub fn as_reply(text: String) -> Json {
    serde_json::from_str(&text).unwrap_or(Json::String(text))
}

/// `characteristicUUID=…;value=…` (each part split at its first `=`), or the same keys in a
/// JSON object.
pub fn reserved_params(params: &Json) -> HashMap<String, String> {
    let mut out = HashMap::new();
    match params {
        Json::String(s) => {
            for part in s.split(';') {
                if let Some((k, v)) = part.split_once('=') {
                    let (k, v) = (k.trim(), v.trim());
                    if !k.is_empty() && !v.is_empty() {
                        out.insert(k.to_string(), v.to_string());
                    }
                }
            }
        }
        Json::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone(), py_str(v));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_str_of_attribute_values() {
        assert_eq!(py_str(&json!("on")), "on");
        assert_eq!(py_str(&json!(true)), "True");
        assert_eq!(py_str(&json!(25)), "25");
        assert_eq!(py_str(&json!(2.5)), "2.5");
        assert_eq!(py_str(&Json::Null), "None");
    }

    #[test]
    fn reserved_params_split_at_the_first_equals() {
        let p = reserved_params(&json!("characteristicUUID=2A00;value=a=b"));
        assert_eq!(p["characteristicUUID"], "2A00");
        assert_eq!(p["value"], "a=b");
        let p = reserved_params(&json!({"characteristicUUID": "2A00", "value": 5}));
        assert_eq!(p["value"], "5");
    }
}
