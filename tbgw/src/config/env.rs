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

/// The `provisioning` section `TB_GW_PROVISIONING_DEVICE_*` describe, as upstream builds it:
/// only when both `..._KEY` and `..._SECRET` are set; the type is ACCESS_TOKEN when
/// `..._ACCESS_TOKEN` is set, else MQTT_BASIC when any of `..._USERNAME` / `..._PASSWORD` /
/// `..._CLIENT_ID` is, else X509_CERTIFICATE when `..._CA_CERT_FILENAME` is, else the default
/// (ACCESS_TOKEN with a random token). It replaces the file's section.
fn provisioning_from_env(env: &HashMap<String, String>) -> Option<Value> {
    let var = |k: &str| env.get(&format!("TB_GW_PROVISIONING_DEVICE_{k}")).cloned();
    let mut p = Map::new();
    p.insert("provisionDeviceKey".into(), var("KEY")?.into());
    p.insert("provisionDeviceSecret".into(), var("SECRET")?.into());
    if let Some(n) = var("NAME") {
        p.insert("deviceName".into(), n.into());
    }
    let basic = [
        ("USERNAME", "username"),
        ("PASSWORD", "password"),
        ("CLIENT_ID", "clientId"),
    ];
    if let Some(t) = var("ACCESS_TOKEN") {
        p.insert("type".into(), "ACCESS_TOKEN".into());
        p.insert("accessToken".into(), t.into());
    } else if basic.iter().any(|(v, _)| var(v).is_some()) {
        p.insert("type".into(), "MQTT_BASIC".into());
        for (v, k) in basic {
            if let Some(x) = var(v) {
                p.insert(k.into(), x.into());
            }
        }
    } else if let Some(ca) = var("CA_CERT_FILENAME") {
        p.insert("type".into(), "X509_CERTIFICATE".into());
        p.insert("caCert".into(), ca.into());
    }
    Some(Value::Object(p))
}

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
    if let Some(p) = provisioning_from_env(env) {
        tb.insert("provisioning".into(), p);
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
