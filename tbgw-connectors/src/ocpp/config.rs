//! `ocpp.json`: the OCPP connector's configuration in upstream's format (`centralSystem`,
//! `chargePoints[]`), plus tbgw's own keys, compiled into [`Settings`] with the checks
//! `tbgw check` reports by file and key path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fancy_regex::Regex;
use serde::Deserialize;
use tbgw::config::{resolve_beside, ConfigError};
use tbgw::expr::Template;

use super::frame::Version;

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OcppFileConfig {
    /// The WebSocket server charge points connect to.
    pub central_system: CentralSystemConfig,
    /// Which charge points are accepted and how their messages become data.
    #[serde(default)]
    pub charge_points: Vec<ChargePointConfig>,
}

/// `centralSystem`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CentralSystemConfig {
    /// A name for the logs (upstream's `name`).
    pub name: Option<String>,
    /// The address to bind (default `0.0.0.0`).
    pub host: Option<String>,
    /// The port (default 9000).
    pub port: Option<u16>,
    /// `insecure` (default) or `tls`.
    pub connection: Option<ConnectionConfig>,
    /// Accepted credentials; none (or an empty list) accepts every charge point.
    pub security: Option<Vec<SecurityConfig>>,
    /// tbgw: the OCPP versions offered (`ocpp1.6`, `ocpp2.0.1`, `ocpp2.1`), default all three.
    pub subprotocols: Option<Vec<String>>,
    /// tbgw: the heartbeat interval BootNotification hands out, seconds (default 10, as
    /// upstream).
    pub heartbeat_interval: Option<u64>,
    /// tbgw: the longest WebSocket message accepted, bytes (default 65536).
    pub max_message_bytes: Option<usize>,
    /// tbgw: charge points connected at once (default 10000); more are refused.
    pub max_charge_points: Option<usize>,
}

/// `centralSystem.connection`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionConfig {
    /// `insecure` or `tls` (any case).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// TLS: the server certificate chain (PEM).
    pub cert: Option<String>,
    /// TLS: its private key (PEM).
    pub key: Option<String>,
    /// TLS: the password of an encrypted (PKCS#8) key; a plain key ignores it.
    pub password: Option<String>,
    /// tbgw (security profile 3): CA certificates that charge points' client certificates must
    /// chain to; with it, a charge point without a valid certificate is refused.
    pub ca_cert: Option<String>,
}

/// One `centralSystem.security[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityConfig {
    /// `token` or `basic`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `token`: accepted `Authorization` header values (`Bearer ACCESS_TOKEN`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// `basic`: accepted user names and passwords (OCPP security profiles 1 and 2: the user
    /// name is the charge point's id).
    #[serde(default)]
    pub credentials: Vec<Credential>,
}

/// A user name and password.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Credential {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// One `chargePoints[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargePointConfig {
    /// Regular expression matched at the start of the URL path (without its leading `/`).
    pub id_regexp_pattern: String,
    /// Optional regular expression on the charge point's IP address.
    pub host: Option<String>,
    /// Optional regular expression on its TCP port.
    pub port: Option<String>,
    /// The device name, over the BootNotification (`${Vendor} ${Model}`).
    pub device_name_expression: Option<String>,
    /// The device type (default `default`).
    pub device_type_expression: Option<String>,
    /// The uplink converter; only upstream's `OcppUplinkConverter` exists.
    pub extension: Option<String>,
    /// Attributes from messages.
    #[serde(default)]
    pub attributes: Vec<DatapointConfig>,
    /// Time series from messages.
    #[serde(default)]
    pub timeseries: Vec<DatapointConfig>,
    /// Shared attributes sent to the charge point.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// RPC methods sent to the charge point.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
    /// tbgw: the id tokens (1.6J idTags) accepted by Authorize and transactions; without it
    /// (and without `idTokensAttribute`) every token is accepted, as upstream.
    pub id_tokens: Option<Vec<String>>,
    /// tbgw: a shared attribute of the device holding the accepted id tokens (a JSON array or
    /// comma-separated text); an update replaces the list.
    pub id_tokens_attribute: Option<String>,
}

/// One `attributes[]` / `timeseries[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapointConfig {
    /// Comma-separated actions the entry applies to (`MeterValues,`).
    pub message_type_filter: String,
    /// The key (may hold `${…}`).
    pub key: String,
    /// The value: a `${…}` expression over the message.
    pub value: String,
}

/// One `attributeUpdates[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateConfig {
    /// The shared attribute's key.
    pub attribute_on_things_board: String,
    /// The DataTransfer `data` (or, with `action`, the call's JSON payload), with
    /// `${attributeKey}` and `${attributeValue}`.
    pub value_expression: String,
    /// Seconds to wait for the answer (default 5).
    pub timeout: Option<f64>,
    /// tbgw: the OCPP action to send instead of DataTransfer.
    pub action: Option<String>,
}

/// One `serverSideRpc[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// The RPC method.
    #[serde(rename = "methodRPC")]
    pub method_rpc: String,
    /// Answer ThingsBoard with the charge point's answer (default true).
    pub with_response: Option<bool>,
    /// The payload (DataTransfer `data`, or the action's JSON payload), with `${params}`,
    /// `${params.x}`... (values inserted as JSON).
    pub value_expression: Option<String>,
    /// The OCPP action (default DataTransfer).
    pub action: Option<String>,
    /// Seconds to wait for the answer (default 5).
    pub timeout: Option<f64>,
}

/// How charge points are checked when they connect.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Accepted `Authorization` header values, exactly.
    pub tokens: Vec<String>,
    /// Accepted basic credentials.
    pub basic: Vec<(String, String)>,
}

impl Auth {
    /// True when no security is configured.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty() && self.basic.is_empty()
    }
}

/// TLS settings.
#[derive(Clone)]
pub struct TlsSettings {
    /// The certificate chain file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// The key's password (upstream's `connection.password`), for an encrypted key.
    pub password: Option<String>,
    /// CA file for client certificates (profile 3).
    pub ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// A compiled datapoint.
#[derive(Debug, Clone)]
pub struct Datapoint {
    /// The actions it applies to.
    pub filter: Vec<String>,
    /// The key template.
    pub key: Template,
    /// The value template.
    pub value: Template,
}

/// A compiled downlink (RPC or attribute update).
#[derive(Debug, Clone)]
pub struct Downlink {
    /// The RPC method or attribute key.
    pub name: String,
    /// The payload template.
    pub value: Option<Template>,
    /// The action; None = DataTransfer with the rendered text as `data`.
    pub action: Option<String>,
    /// How long to wait for the charge point.
    pub timeout: Duration,
    /// Whether ThingsBoard gets the answer.
    pub with_response: bool,
}

/// A compiled `chargePoints[]` entry.
#[derive(Debug, Clone)]
pub struct ChargePoint {
    /// The path pattern, anchored at the start.
    pub pattern: Regex,
    /// Optional address patterns.
    pub host: Option<Regex>,
    /// Optional port pattern.
    pub port: Option<Regex>,
    /// Device name template.
    pub name: Option<Template>,
    /// Device type template.
    pub device_type: Option<Template>,
    /// Attributes.
    pub attributes: Vec<Datapoint>,
    /// Time series.
    pub timeseries: Vec<Datapoint>,
    /// Attribute updates.
    pub attribute_updates: Vec<Downlink>,
    /// RPC methods.
    pub rpcs: Vec<Downlink>,
    /// Accepted id tokens from the config (None = any, unless an attribute sets a list).
    pub id_tokens: Option<HashSet<String>>,
    /// The shared attribute with accepted id tokens.
    pub id_tokens_attribute: Option<String>,
}

/// Everything the connector needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The connector file (for messages).
    pub file: PathBuf,
    /// Bind host.
    pub host: String,
    /// Bind port.
    pub port: u16,
    /// TLS, when `connection.type` is `tls`.
    pub tls: Option<TlsSettings>,
    /// Connection-level security.
    pub auth: Auth,
    /// Offered versions, preferred first.
    pub versions: Vec<Version>,
    /// BootNotification's interval.
    pub heartbeat_interval: u64,
    /// Largest message.
    pub max_message_bytes: usize,
    /// Connection limit.
    pub max_charge_points: usize,
    /// Charge point entries.
    pub charge_points: Vec<ChargePoint>,
}

/// Upstream's RPC_DEFAULT_TIMEOUT, seconds.
const DEFAULT_TIMEOUT_S: f64 = 5.0;

fn regex(file: &Path, key: &str, src: &str, anchored: bool) -> Result<Regex, ConfigError> {
    let text = if anchored {
        format!("^(?:{src})")
    } else {
        src.to_owned()
    };
    Regex::new(&text)
        .map_err(|e| ConfigError::new(file, key, format!("invalid regular expression: {e}")))
}

fn template(file: &Path, key: &str, src: &str) -> Result<Template, ConfigError> {
    Template::parse(src).map_err(|e| ConfigError::new(file, key, e.to_string()))
}

fn timeout(file: &Path, key: &str, t: Option<f64>) -> Result<Duration, ConfigError> {
    let t = t.unwrap_or(DEFAULT_TIMEOUT_S);
    if !(t.is_finite() && t > 0.0 && t <= 3600.0) {
        return Err(ConfigError::new(
            file,
            key,
            "must be a number of seconds above 0 and at most 3600",
        ));
    }
    Ok(Duration::from_secs_f64(t))
}

impl Settings {
    /// Checks and compiles a parsed file.
    pub fn build(
        file: &Path,
        cfg: OcppFileConfig,
        _ignored: &mut Vec<String>,
    ) -> Result<Settings, ConfigError> {
        let cs = cfg.central_system;
        let tls = match &cs.connection {
            Some(c)
                if c.kind
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("tls")) =>
            {
                let cert = c.cert.as_deref().ok_or_else(|| {
                    ConfigError::new(file, "centralSystem.connection.cert", "required for TLS")
                })?;
                let key = c.key.as_deref().ok_or_else(|| {
                    ConfigError::new(file, "centralSystem.connection.key", "required for TLS")
                })?;
                Some(TlsSettings {
                    cert: resolve_beside(file, cert),
                    key: resolve_beside(file, key),
                    password: c.password.clone().filter(|p| !p.is_empty()),
                    ca_cert: c.ca_cert.as_deref().map(|p| resolve_beside(file, p)),
                })
            }
            Some(c)
                if c.kind
                    .as_deref()
                    .is_some_and(|k| !k.eq_ignore_ascii_case("insecure")) =>
            {
                return Err(ConfigError::new(
                    file,
                    "centralSystem.connection.type",
                    "must be `insecure` or `tls`",
                ))
            }
            _ => None,
        };
        let mut auth = Auth::default();
        for (i, s) in cs.security.unwrap_or_default().into_iter().enumerate() {
            match s.kind.to_ascii_lowercase().as_str() {
                "token" => auth.tokens.extend(s.tokens),
                "basic" => auth
                    .basic
                    .extend(s.credentials.into_iter().map(|c| (c.username, c.password))),
                _ => {
                    return Err(ConfigError::new(
                        file,
                        format!("centralSystem.security[{i}].type"),
                        "must be `token` or `basic`",
                    ))
                }
            }
        }
        let versions = match cs.subprotocols {
            None => Version::ALL.to_vec(),
            Some(list) => {
                let mut v = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    let ver = Version::from_subprotocol(s).ok_or_else(|| {
                        ConfigError::new(
                            file,
                            format!("centralSystem.subprotocols[{i}]"),
                            "must be `ocpp1.6`, `ocpp2.0.1` or `ocpp2.1`",
                        )
                    })?;
                    v.push(ver);
                }
                if v.is_empty() {
                    return Err(ConfigError::new(
                        file,
                        "centralSystem.subprotocols",
                        "must not be empty",
                    ));
                }
                v
            }
        };
        let max_message_bytes = cs.max_message_bytes.unwrap_or(65536);
        if max_message_bytes < 1024 {
            return Err(ConfigError::new(
                file,
                "centralSystem.maxMessageBytes",
                "must be at least 1024",
            ));
        }
        let max_charge_points = cs.max_charge_points.unwrap_or(10_000).max(1);
        let mut charge_points = Vec::new();
        for (i, cp) in cfg.charge_points.into_iter().enumerate() {
            let at = |k: &str| format!("chargePoints[{i}].{k}");
            if let Some(ext) = cp.extension.as_deref() {
                if ext != "OcppUplinkConverter" {
                    return Err(ConfigError::new(
                        file,
                        at("extension"),
                        "only the built-in `OcppUplinkConverter` exists in tbgw",
                    ));
                }
            }
            let datapoints = |list: Vec<DatapointConfig>, what: &str| {
                list.into_iter()
                    .enumerate()
                    .map(|(j, d)| {
                        Ok(Datapoint {
                            filter: d
                                .message_type_filter
                                .split(',')
                                .map(|s| s.trim().to_owned())
                                .filter(|s| !s.is_empty())
                                .collect(),
                            key: template(file, &at(&format!("{what}[{j}].key")), &d.key)?,
                            value: template(file, &at(&format!("{what}[{j}].value")), &d.value)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ConfigError>>()
            };
            let mut attribute_updates = Vec::new();
            for (j, a) in cp.attribute_updates.into_iter().enumerate() {
                let k = at(&format!("attributeUpdates[{j}]"));
                attribute_updates.push(Downlink {
                    name: a.attribute_on_things_board,
                    value: Some(template(
                        file,
                        &format!("{k}.valueExpression"),
                        &a.value_expression,
                    )?),
                    action: a.action,
                    timeout: timeout(file, &format!("{k}.timeout"), a.timeout)?,
                    with_response: true,
                });
            }
            let mut rpcs = Vec::new();
            for (j, r) in cp.server_side_rpc.into_iter().enumerate() {
                let k = at(&format!("serverSideRpc[{j}]"));
                rpcs.push(Downlink {
                    name: r.method_rpc,
                    value: r
                        .value_expression
                        .as_deref()
                        .map(|v| template(file, &format!("{k}.valueExpression"), v))
                        .transpose()?,
                    action: r.action.filter(|a| !a.is_empty()),
                    timeout: timeout(file, &format!("{k}.timeout"), r.timeout)?,
                    with_response: r.with_response.unwrap_or(true),
                });
            }
            charge_points.push(ChargePoint {
                pattern: regex(file, &at("idRegexpPattern"), &cp.id_regexp_pattern, true)?,
                host: cp
                    .host
                    .as_deref()
                    .map(|h| regex(file, &at("host"), h, true))
                    .transpose()?,
                port: cp
                    .port
                    .as_deref()
                    .map(|p| regex(file, &at("port"), p, true))
                    .transpose()?,
                name: cp
                    .device_name_expression
                    .as_deref()
                    .map(|t| template(file, &at("deviceNameExpression"), t))
                    .transpose()?,
                device_type: cp
                    .device_type_expression
                    .as_deref()
                    .map(|t| template(file, &at("deviceTypeExpression"), t))
                    .transpose()?,
                attributes: datapoints(cp.attributes, "attributes")?,
                timeseries: datapoints(cp.timeseries, "timeseries")?,
                attribute_updates,
                rpcs,
                id_tokens: cp.id_tokens.map(|v| v.into_iter().collect()),
                id_tokens_attribute: cp.id_tokens_attribute,
            });
        }
        Ok(Settings {
            file: file.to_path_buf(),
            host: cs.host.unwrap_or_else(|| "0.0.0.0".into()),
            port: cs.port.unwrap_or(9000),
            tls,
            auth,
            versions,
            heartbeat_interval: cs.heartbeat_interval.unwrap_or(10),
            max_message_bytes,
            max_charge_points,
            charge_points,
        })
    }

    /// The first `chargePoints[]` entry for a charge point id (URL path without the leading
    /// `/`) connecting from `ip`:`port`.
    pub fn charge_point_for(&self, id: &str, ip: &str, port: u16) -> Option<usize> {
        let port = port.to_string();
        self.charge_points.iter().position(|cp| {
            let hit = |r: &Regex, s: &str| r.is_match(s).unwrap_or(false);
            hit(&cp.pattern, id)
                && cp.host.as_ref().is_none_or(|h| hit(h, ip))
                && cp.port.as_ref().is_none_or(|p| hit(p, &port))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(v: serde_json::Value) -> Result<Settings, ConfigError> {
        let cfg: OcppFileConfig = serde_json::from_value(v).expect("parses");
        Settings::build(Path::new("ocpp.json"), cfg, &mut Vec::new())
    }

    #[test]
    fn reads_upstreams_sample_shape() {
        let s = build(json!({
            "centralSystem": {"name": "CS", "host": "127.0.0.1", "port": 9000,
                "connection": {"type": "insecure"},
                "security": [{"type": "token", "tokens": ["Bearer T"]},
                             {"type": "basic", "credentials": [{"username": "a", "password": "b"}]}]},
            "chargePoints": [{"idRegexpPattern": "bidon/hello/CP_1",
                "deviceNameExpression": "${Vendor} ${Model}", "deviceTypeExpression": "default",
                "attributes": [{"messageTypeFilter": "MeterValues,", "key": "temp1",
                                "value": "${meter_value[:].sampled_value[:].value}"}],
                "attributeUpdates": [{"attributeOnThingsBoard": "shared",
                                      "valueExpression": "{\"${attributeKey}\":\"${attributeValue}\"}"}],
                "serverSideRpc": [{"methodRPC": "rpc1", "withResponse": true, "valueExpression": "${params}"}]}]
        }))
        .expect("valid");
        assert_eq!(s.port, 9000);
        assert_eq!(s.auth.tokens, vec!["Bearer T".to_owned()]);
        assert_eq!(s.versions, Version::ALL.to_vec());
        assert_eq!(
            s.charge_points[0].attributes[0].filter,
            vec!["MeterValues".to_owned()]
        );
        assert_eq!(
            s.charge_point_for("bidon/hello/CP_1", "127.0.0.1", 1),
            Some(0)
        );
        assert_eq!(
            s.charge_point_for("bidon/hello/CP_12", "127.0.0.1", 1),
            Some(0)
        );
        assert_eq!(
            s.charge_point_for("x/bidon/hello/CP_1", "127.0.0.1", 1),
            None
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = build(json!({"centralSystem": {}, "chargePoints": [{"idRegexpPattern": "("}]}))
            .unwrap_err();
        assert_eq!(e.key, "chargePoints[0].idRegexpPattern");
        let e = build(json!({"centralSystem": {"subprotocols": ["ocpp1.5"]}})).unwrap_err();
        assert_eq!(e.key, "centralSystem.subprotocols[0]");
        let e = build(json!({"centralSystem": {"connection": {"type": "tls"}}})).unwrap_err();
        assert_eq!(e.key, "centralSystem.connection.cert");
        let e = build(
            json!({"centralSystem": {}, "chargePoints": [{"idRegexpPattern": "x",
            "serverSideRpc": [{"methodRPC": "m", "timeout": 0}]}]}),
        )
        .unwrap_err();
        assert_eq!(e.key, "chargePoints[0].serverSideRpc[0].timeout");
        let e = build(json!({"centralSystem": {"security": [{"type": "x"}]}})).unwrap_err();
        assert_eq!(e.key, "centralSystem.security[0].type");
    }
}
