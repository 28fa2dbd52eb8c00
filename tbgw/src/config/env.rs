//! `TB_GW_*` environment overrides of the `thingsboard` section (upstream section 1.6).

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Environment variable → key under `thingsboard` (a `/` separates nested keys).
const OVERRIDES: &[(&str, &str)] = &[
    ("TB_GW_HOST", "host"),
    ("TB_GW_PORT", "port"),
    ("TB_GW_PROXY_HOST", "proxy_host"),
    ("TB_GW_PROXY_PORT", "proxy_port"),
    ("TB_GW_SECURITY_TYPE", "security/type"),
    ("TB_GW_ACCESS_TOKEN", "security/accessToken"),
    ("TB_GW_CA_CERT", "security/caCert"),
    ("TB_GW_PRIVATE_KEY", "security/privateKey"),
    ("TB_GW_CERT", "security/cert"),
    ("TB_GW_CLIENT_ID", "security/clientId"),
    ("TB_GW_USERNAME", "security/username"),
    ("TB_GW_PASSWORD", "security/password"),
    ("TB_GW_DP_RATE_LIMITS", "dpRateLimits"),
    ("TB_GW_MESSAGES_RATE_LIMITS", "messagesRateLimits"),
    (
        "TB_GW_DEVICE_MESSAGES_RATE_LIMIT",
        "deviceMessagesRateLimits",
    ),
    ("TB_GW_DEVICE_RATE_LIMITS", "deviceRateLimits"),
    ("TB_GW_DEVICE_DP_RATE_LIMITS", "deviceDpRateLimits"),
];

/// Applies the `TB_GW_*` variables in `env` to the raw main file. Numbers (`TB_GW_PORT`,
/// `TB_GW_PROXY_PORT`) are stored as JSON numbers when they parse. `TB_GW_RATE_LIMITS` sets
/// every message and telemetry limit, as upstream does. When a credential variable is set and
/// `TB_GW_SECURITY_TYPE` is not, the security section is replaced rather than merged, so a
/// token from the environment is not mixed with certificate keys from the file.
pub fn apply_env_overrides(raw: &mut Value, env: &HashMap<String, String>) {
    let Some(root) = raw.as_object_mut() else {
        return;
    };
    let tb = root
        .entry("thingsboard")
        .or_insert_with(|| Value::Object(Map::new()));
    if !tb.is_object() {
        *tb = Value::Object(Map::new());
    }
    let Some(tb) = tb.as_object_mut() else {
        return;
    };
    if env.contains_key("TB_GW_ACCESS_TOKEN") && !env.contains_key("TB_GW_SECURITY_TYPE") {
        let mut sec = Map::new();
        sec.insert("type".into(), Value::from("accessToken"));
        tb.insert("security".into(), Value::Object(sec));
    }
    if let Some(v) = env.get("TB_GW_RATE_LIMITS") {
        for key in [
            "rateLimits",
            "messagesRateLimits",
            "deviceRateLimits",
            "deviceMessagesRateLimits",
        ] {
            tb.insert(key.into(), Value::from(v.as_str()));
        }
    }
    for (var, key) in OVERRIDES {
        let Some(v) = env.get(*var) else { continue };
        let value = if key.ends_with("port") {
            v.parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(v.as_str()))
        } else {
            Value::from(v.as_str())
        };
        match key.split_once('/') {
            Some((section, k)) => {
                let s = tb
                    .entry(section)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !s.is_object() {
                    *s = Value::Object(Map::new());
                }
                if let Some(s) = s.as_object_mut() {
                    s.insert(k.into(), value);
                }
            }
            None => {
                tb.insert((*key).into(), value);
            }
        }
    }
}
