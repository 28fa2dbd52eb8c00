//! RPCs and shared-attribute updates → the OCPP call sent to the charge point. Pure.
//!
//! * `serverSideRpc[]`: `valueExpression` rendered over the RPC (`${params}`, `${params.x}`,
//!   `${method}`, values inserted as JSON as upstream does); with `action` the result is that
//!   call's JSON payload, without it the text is DataTransfer's `data` (vendorId `"1"`).
//! * reserved `get`/`set`: `component=…;variable=…[;value=…]` (or the same as a JSON object)
//!   → GetVariables/SetVariables for 2.x as upstream 3.8.5; for 1.6J `key=…[;value=…]` (or
//!   `variable=…`) → GetConfiguration/ChangeConfiguration.
//! * `attributeUpdates[]`: `${attributeKey}`/`${attributeValue}` substituted, sent like an RPC.

use std::time::Duration;

use serde_json::{json, Map, Value as Json};
use tbgw::downlink::RpcError;
use tbgw::expr::Encoding;

use super::config::Downlink;
use super::frame::Version;

/// An OCPP call to send: action, payload and how long to wait.
#[derive(Debug, Clone, PartialEq)]
pub struct OutCall {
    /// The action.
    pub action: String,
    /// The payload.
    pub payload: Json,
    /// The answer timeout.
    pub timeout: Duration,
}

/// Upstream's default vendor id of the DataTransfer it sends.
const VENDOR_ID: &str = "1";

fn finish(dl: &Downlink, text: Option<String>, fallback: &Json) -> Result<OutCall, String> {
    let payload = match (&dl.action, text) {
        (Some(_), Some(t)) => {
            let v: Json = serde_json::from_str(&t)
                .map_err(|e| format!("the valueExpression is not a JSON object: {e}: {t}"))?;
            if !v.is_object() {
                return Err(format!("the valueExpression is not a JSON object: {t}"));
            }
            v
        }
        (Some(_), None) if fallback.is_object() => fallback.clone(),
        (Some(_), None) => json!({}),
        (None, Some(t)) => json!({"vendorId": VENDOR_ID, "data": t}),
        (None, None) => json!({"vendorId": VENDOR_ID, "data": fallback.to_string()}),
    };
    Ok(OutCall {
        action: dl.action.clone().unwrap_or_else(|| "DataTransfer".into()),
        payload,
        timeout: dl.timeout,
    })
}

/// The call for a configured RPC method. Without `valueExpression` the params are the payload
/// (with `action`) or DataTransfer's data.
pub fn rpc_call(dl: &Downlink, method: &str, params: &Json, id: i64) -> Result<OutCall, RpcError> {
    let scope = json!({"method": method, "params": params, "id": id});
    let text = match &dl.value {
        Some(t) => Some(t.render_scope(&scope, Encoding::Json).ok_or_else(|| {
            RpcError::BadRequest(format!(
                "the RPC has nothing for valueExpression {}",
                t.source()
            ))
        })?),
        None => None,
    };
    finish(dl, text, params).map_err(RpcError::BadRequest)
}

/// The call for a shared attribute update.
pub fn attribute_call(dl: &Downlink, key: &str, value: &Json) -> Result<OutCall, String> {
    let text = match &dl.value {
        Some(t) => Some(
            t.render_with(|expr| match expr {
                "attributeKey" => Some(key.to_owned()),
                "attributeValue" => Some(match value {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "valueExpression {} has placeholders other than attributeKey/attributeValue",
                    t.source()
                )
            })?,
        ),
        None => None,
    };
    finish(dl, text, &json!({ key: value }))
}

/// Reserved-RPC params: `k=v;k=v` text or a JSON object, as text values.
fn params_map(params: &Json) -> Map<String, Json> {
    match params {
        Json::Object(m) => m.clone(),
        Json::String(s) => s
            .split(';')
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let (k, v) = (k.trim(), v.trim());
                (!k.is_empty() && !v.is_empty()).then(|| (k.to_owned(), Json::String(v.to_owned())))
            })
            .collect(),
        _ => Map::new(),
    }
}

fn text(m: &Map<String, Json>, k: &str) -> Option<String> {
    match m.get(k)? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Null | Json::String(_) => None,
        other => Some(other.to_string()),
    }
}

/// The call for the reserved `get`/`set` RPC (None for other methods).
pub fn reserved_call(
    version: Version,
    method: &str,
    params: &Json,
    default_timeout: Duration,
) -> Option<Result<OutCall, RpcError>> {
    if method != "get" && method != "set" {
        return None;
    }
    let m = params_map(params);
    let timeout = text(&m, "timeout")
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t > 0.0 && *t <= 3600.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(default_timeout);
    let set = method == "set";
    let value = text(&m, "value");
    if set && value.is_none() {
        return Some(Err(RpcError::BadRequest(
            "set needs a value (e.g. `component=OCPPCommCtrlr;variable=HeartbeatInterval;value=30`)"
                .into(),
        )));
    }
    let r = if version.is_2x() {
        let (Some(component), Some(variable)) = (text(&m, "component"), text(&m, "variable"))
        else {
            return Some(Err(RpcError::BadRequest(format!(
                "reserved RPC '{method}' requires 'component' and 'variable' params (e.g. 'component=OCPPCommCtrlr;variable=HeartbeatInterval;value=30')"
            ))));
        };
        let mut comp = json!({ "name": component });
        if let Some(i) = text(&m, "componentInstance") {
            comp["instance"] = Json::String(i);
        }
        if let Some(e) = text(&m, "evseId") {
            let Ok(id) = e.parse::<i64>() else {
                return Some(Err(RpcError::BadRequest(format!(
                    "evseId {e:?} is not an integer"
                ))));
            };
            comp["evse"] = json!({ "id": id });
        }
        let mut var = json!({ "name": variable });
        if let Some(i) = text(&m, "variableInstance") {
            var["instance"] = Json::String(i);
        }
        if set {
            OutCall {
                action: "SetVariables".into(),
                payload: json!({"setVariableData": [{"attributeValue": value, "component": comp, "variable": var}]}),
                timeout,
            }
        } else {
            OutCall {
                action: "GetVariables".into(),
                payload: json!({"getVariableData": [{"component": comp, "variable": var}]}),
                timeout,
            }
        }
    } else {
        let key = text(&m, "key").or_else(|| text(&m, "variable"));
        match (set, key) {
            (true, Some(key)) => OutCall {
                action: "ChangeConfiguration".into(),
                payload: json!({"key": key, "value": value}),
                timeout,
            },
            (true, None) => {
                return Some(Err(RpcError::BadRequest(
                    "set needs a key (e.g. `key=HeartbeatInterval;value=30`)".into(),
                )))
            }
            (false, Some(key)) => OutCall {
                action: "GetConfiguration".into(),
                payload: json!({"key": [key]}),
                timeout,
            },
            (false, None) => OutCall {
                action: "GetConfiguration".into(),
                payload: json!({}),
                timeout,
            },
        }
    };
    Some(Ok(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tbgw::expr::Template;

    fn dl(value: Option<&str>, action: Option<&str>) -> Downlink {
        Downlink {
            name: "m".into(),
            value: value.map(|v| Template::parse(v).expect("template")),
            action: action.map(str::to_owned),
            timeout: Duration::from_secs(5),
            with_response: true,
        }
    }

    #[test]
    fn rpc_with_and_without_action() {
        let c = rpc_call(&dl(Some("${params}"), None), "m", &json!({"a": 1}), 3).expect("ok");
        assert_eq!(c.action, "DataTransfer");
        assert_eq!(c.payload, json!({"vendorId": "1", "data": "{\"a\":1}"}));
        let c = rpc_call(
            &dl(Some("{\"type\": ${params.type}}"), Some("Reset")),
            "m",
            &json!({"type": "Soft"}),
            3,
        )
        .expect("ok");
        assert_eq!(
            (c.action.as_str(), c.payload),
            ("Reset", json!({"type": "Soft"}))
        );
        let c = rpc_call(
            &dl(None, Some("RemoteStartTransaction")),
            "m",
            &json!({"idTag": "A"}),
            3,
        )
        .expect("ok");
        assert_eq!(c.payload, json!({"idTag": "A"}));
        assert!(rpc_call(&dl(Some("${params.x}"), None), "m", &json!({}), 3).is_err());
        assert!(rpc_call(&dl(Some("not json"), Some("Reset")), "m", &json!({}), 3).is_err());
    }

    #[test]
    fn attribute_updates() {
        let c = attribute_call(
            &dl(Some("{\"${attributeKey}\":\"${attributeValue}\"}"), None),
            "shared",
            &json!(5),
        )
        .expect("ok");
        assert_eq!(
            c.payload,
            json!({"vendorId": "1", "data": "{\"shared\":\"5\"}"})
        );
        assert!(attribute_call(&dl(Some("${other}"), None), "k", &json!(1)).is_err());
    }

    #[test]
    fn reserved_get_set_per_version() {
        let t = Duration::from_secs(5);
        let c = reserved_call(
            Version::V21,
            "set",
            &json!("component=OCPPCommCtrlr;variable=HeartbeatInterval;value=30;evseId=1"),
            t,
        )
        .expect("reserved")
        .expect("ok");
        assert_eq!(c.action, "SetVariables");
        assert_eq!(
            c.payload,
            json!({"setVariableData": [{"attributeValue": "30",
                "component": {"name": "OCPPCommCtrlr", "evse": {"id": 1}},
                "variable": {"name": "HeartbeatInterval"}}]})
        );
        let c = reserved_call(
            Version::V201,
            "get",
            &json!({"component": "C", "variable": "V", "timeout": 2}),
            t,
        )
        .expect("reserved")
        .expect("ok");
        assert_eq!(
            (c.action.as_str(), c.timeout),
            ("GetVariables", Duration::from_secs(2))
        );
        assert!(reserved_call(Version::V21, "get", &json!("variable=V"), t)
            .expect("reserved")
            .is_err());
        let c = reserved_call(Version::V16, "get", &json!("key=HeartbeatInterval"), t)
            .expect("reserved")
            .expect("ok");
        assert_eq!(c.payload, json!({"key": ["HeartbeatInterval"]}));
        let c = reserved_call(
            Version::V16,
            "set",
            &json!("variable=HeartbeatInterval;value=30"),
            t,
        )
        .expect("reserved")
        .expect("ok");
        assert_eq!(
            (c.action.as_str(), c.payload),
            (
                "ChangeConfiguration",
                json!({"key": "HeartbeatInterval", "value": "30"})
            )
        );
        assert!(reserved_call(Version::V16, "set", &json!("key=a"), t)
            .expect("reserved")
            .is_err());
        assert!(reserved_call(Version::V16, "reboot", &json!({}), t).is_none());
    }
}
