//! `xmpp.json`: the XMPP connector's configuration in upstream's format (`server`,
//! `devices[]`), plus tbgw's own keys, and the checks `tbgw check` reports with the file and
//! key path.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tbgw::config::ConfigError;
use tbgw::expr::Template;
use tokio_xmpp::jid::Jid;

use super::downlink::{AttributeUpdate, Rpc};
use super::uplink::{Device, Point};

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct XmppFileConfig {
    /// The gateway's own XMPP account and how to reach its server.
    pub server: ServerConfig,
    /// The devices, matched by the sender's JID.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// `server`, with upstream's (snake_case) keys.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    /// The gateway's JID (`gateway@example.com`, a resource is optional).
    pub jid: String,
    /// Its password.
    pub password: String,
    /// The server's host name or address (default: the JID's domain).
    pub host: Option<String>,
    /// The server's port (default 5222).
    pub port: Option<u16>,
    /// Direct TLS (XMPP over TLS from the first byte, usually port 5223) instead of STARTTLS.
    #[serde(default)]
    pub use_ssl: bool,
    /// Plain TCP without TLS: allowed only to a loopback host (127.0.0.0/8, ::1, localhost).
    #[serde(default)]
    pub disable_starttls: bool,
    /// Accepted for upstream's files: STARTTLS is always required unless `disable_starttls`.
    pub force_starttls: Option<bool>,
    /// Accepted, not used: tbgw negotiates SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN as the server
    /// offers, and never sends PLAIN unencrypted except on loopback.
    pub unencrypted_plain_auth: Option<bool>,
    /// Milliseconds to wait for the session to come online before logging that it is not
    /// (default 10000). Upstream passes it to slixmpp's `process`, which ignores it.
    pub timeout: Option<u64>,
    /// Accepted, not used (upstream loads XEP-0030/0323/0325 and never uses them).
    pub plugins: Option<Vec<String>>,
    /// tbgw: how long a two-way RPC waits for the device's answer, in milliseconds (default
    /// 10000).
    #[serde(rename = "rpcTimeoutMs")]
    pub rpc_timeout_ms: Option<u64>,
    /// tbgw: a PEM file of CA certificates the server's certificate must chain to, instead of
    /// the system's trusted roots (a private CA). Relative to the connector file.
    #[serde(alias = "caCert")]
    pub ca_cert: Option<String>,
}

/// `devices[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// The device's JID: a full JID (`device@host/resource`) matches that sender only, as
    /// upstream; a bare JID matches any of its resources.
    pub jid: String,
    /// Upstream's converter class; only the built-in `XmppUplinkConverter` exists.
    pub converter: Option<String>,
    /// The device name, a `${…}` template over the JSON body.
    pub device_name_expression: String,
    /// The device type (default `default`).
    pub device_type_expression: Option<String>,
    /// Client attributes.
    #[serde(default)]
    pub attributes: Vec<PointConfig>,
    /// Time series.
    #[serde(default)]
    pub timeseries: Vec<PointConfig>,
    /// Shared attributes sent to the device.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// RPCs sent to the device.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
}

/// `attributes[]` / `timeseries[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct PointConfig {
    /// The key.
    pub key: String,
    /// The value template (`"${temp}"`).
    pub value: String,
}

/// `attributeUpdates[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateConfig {
    /// The shared attribute's key.
    pub attribute_on_things_board: String,
    /// The body sent: `${attributeKey}` and `${attributeValue}` are replaced.
    pub value_expression: String,
}

/// `serverSideRpc[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// The RPC method.
    #[serde(rename = "methodRPC", alias = "method")]
    pub method_rpc: String,
    /// Wait for the device's answer (default true).
    pub with_response: Option<bool>,
    /// The body sent, a template over `{"params", "method"}` (default `${params}`).
    pub value_expression: Option<String>,
}

/// How the connector reaches its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP, then STARTTLS (required).
    StartTls,
    /// TLS from the first byte (`use_ssl`).
    DirectTls,
    /// Plain TCP (`disable_starttls`, loopback only).
    Plain,
}

/// Checked, compiled settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The gateway's JID.
    pub jid: Jid,
    /// Its password.
    pub password: String,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// TLS or not.
    pub transport: Transport,
    /// CA file the server's certificate is checked against (`None`: the system's roots).
    pub ca_cert: Option<PathBuf>,
    /// How long the session may take to come online before it is logged.
    pub online_timeout: Duration,
    /// How long a two-way RPC waits.
    pub rpc_timeout: Duration,
    /// The devices.
    pub devices: Vec<DeviceSettings>,
}

/// One device's compiled settings.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// Matching and uplink conversion.
    pub device: Device,
    /// `attributeUpdates[]`.
    pub attribute_updates: Vec<AttributeUpdate>,
    /// `serverSideRpc[]`.
    pub rpcs: Vec<Rpc>,
}

/// Whether `host` is a loopback host.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|a| a.is_loopback())
            .unwrap_or(false)
}

fn template(file: &Path, key: String, src: &str) -> Result<Template, ConfigError> {
    Template::parse(src).map_err(|e| ConfigError::new(file, key, e.to_string()))
}

impl Settings {
    /// Checks a parsed file and compiles it (no I/O). Keys accepted but not acted on are
    /// pushed to `ignored`.
    pub fn build(
        file: &Path,
        cfg: XmppFileConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Settings, ConfigError> {
        let s = cfg.server;
        let jid = Jid::new(&s.jid)
            .map_err(|e| ConfigError::new(file, "server.jid", format!("not a JID: {e}")))?;
        if jid.node().is_none() {
            return Err(ConfigError::new(
                file,
                "server.jid",
                "the gateway's JID needs a user part (user@domain)",
            ));
        }
        if s.use_ssl && s.disable_starttls {
            return Err(ConfigError::new(
                file,
                "server.disable_starttls",
                "use_ssl and disable_starttls cannot both be true",
            ));
        }
        let host = s
            .host
            .clone()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| jid.domain().to_string());
        let transport = if s.use_ssl {
            Transport::DirectTls
        } else if s.disable_starttls {
            if !is_loopback(&host) {
                return Err(ConfigError::new(
                    file,
                    "server.disable_starttls",
                    format!("plain XMPP without TLS is allowed only to a loopback host, not {host:?}; the password and all data would cross the network in clear text"),
                ));
            }
            Transport::Plain
        } else {
            Transport::StartTls
        };
        if s.port == Some(0) {
            return Err(ConfigError::new(file, "server.port", "must be 1..65535"));
        }
        if s.plugins.is_some() {
            ignored.push("server.plugins".into());
        }
        let ca_cert = match s.ca_cert.as_deref().filter(|p| !p.trim().is_empty()) {
            Some(_) if transport == Transport::Plain => {
                ignored.push("server.ca_cert".into());
                None
            }
            Some(p) => Some(tbgw::config::resolve_beside(file, p)),
            None => None,
        };
        if s.unencrypted_plain_auth.is_some() {
            ignored.push("server.unencrypted_plain_auth".into());
        }
        let mut devices = Vec::with_capacity(cfg.devices.len());
        for (i, d) in cfg.devices.into_iter().enumerate() {
            let at = |k: &str| format!("devices[{i}].{k}");
            let djid = Jid::new(&d.jid)
                .map_err(|e| ConfigError::new(file, at("jid"), format!("not a JID: {e}")))?;
            if let Some(c) = &d.converter {
                if c != "XmppUplinkConverter" {
                    return Err(ConfigError::new(
                        file,
                        at("converter"),
                        format!(
                            "unknown converter {c:?}; the XMPP connector has XmppUplinkConverter"
                        ),
                    ));
                }
            }
            let points = |list: Vec<PointConfig>, name: &str| {
                list.into_iter()
                    .enumerate()
                    .map(|(j, p)| {
                        Ok(Point {
                            key: template(file, format!("devices[{i}].{name}[{j}].key"), &p.key)?,
                            value: template(
                                file,
                                format!("devices[{i}].{name}[{j}].value"),
                                &p.value,
                            )?,
                        })
                    })
                    .collect::<Result<Vec<_>, ConfigError>>()
            };
            let attributes = points(d.attributes, "attributes")?;
            let timeseries = points(d.timeseries, "timeseries")?;
            let rpcs = d
                .server_side_rpc
                .into_iter()
                .enumerate()
                .map(|(j, r)| {
                    Ok(Rpc {
                        method: r.method_rpc,
                        with_response: r.with_response.unwrap_or(true),
                        value: template(
                            file,
                            format!("devices[{i}].serverSideRpc[{j}].valueExpression"),
                            r.value_expression.as_deref().unwrap_or("${params}"),
                        )?,
                    })
                })
                .collect::<Result<Vec<_>, ConfigError>>()?;
            devices.push(DeviceSettings {
                device: Device {
                    jid: djid,
                    name: template(file, at("deviceNameExpression"), &d.device_name_expression)?,
                    device_type: template(
                        file,
                        at("deviceTypeExpression"),
                        d.device_type_expression.as_deref().unwrap_or("default"),
                    )?,
                    attributes,
                    timeseries,
                },
                attribute_updates: d
                    .attribute_updates
                    .into_iter()
                    .map(|a| AttributeUpdate {
                        key: a.attribute_on_things_board,
                        expression: a.value_expression,
                    })
                    .collect(),
                rpcs,
            });
        }
        Ok(Settings {
            jid,
            password: s.password,
            host,
            port: s.port.unwrap_or(5222),
            transport,
            ca_cert,
            online_timeout: Duration::from_millis(s.timeout.unwrap_or(10_000).max(1)),
            rpc_timeout: Duration::from_millis(s.rpc_timeout_ms.unwrap_or(10_000).max(1)),
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(v: serde_json::Value) -> Result<Settings, ConfigError> {
        let cfg: XmppFileConfig = serde_json::from_value(v).unwrap();
        Settings::build(Path::new("xmpp.json"), cfg, &mut Vec::new())
    }

    fn server(extra: serde_json::Value) -> serde_json::Value {
        let mut s =
            json!({"jid": "gw@localhost", "password": "p", "host": "127.0.0.1", "port": 5222});
        if let (Some(m), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        s
    }

    #[test]
    fn defaults_and_transports() {
        let s = build(json!({"server": server(json!({}))})).unwrap();
        assert_eq!(s.transport, Transport::StartTls);
        assert_eq!(s.rpc_timeout, Duration::from_secs(10));
        let s = build(json!({"server": server(json!({"use_ssl": true}))})).unwrap();
        assert_eq!(s.transport, Transport::DirectTls);
        let s = build(json!({"server": server(json!({"disable_starttls": true}))})).unwrap();
        assert_eq!(s.transport, Transport::Plain);
        let s = build(json!({"server": {"jid": "gw@example.com", "password": "p"}})).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("example.com", 5222));
        assert_eq!(s.ca_cert, None);
        // `ca_cert` (or `caCert`) beside the connector file; plain TCP has no use for it.
        let s = build(json!({"server": server(json!({"ca_cert": "ca.pem"}))})).unwrap();
        assert_eq!(s.ca_cert, Some(PathBuf::from("ca.pem")));
        let cfg: XmppFileConfig = serde_json::from_value(json!({"server": server(
            json!({"caCert": "/etc/ca.pem", "disable_starttls": true}))}))
        .unwrap();
        let mut ignored = Vec::new();
        let s = Settings::build(Path::new("/etc/tbgw/xmpp.json"), cfg, &mut ignored).unwrap();
        assert_eq!(s.ca_cert, None);
        assert_eq!(ignored, vec!["server.ca_cert".to_string()]);
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            build(json!({"server": server(json!({"disable_starttls": true, "host": "10.0.0.1"}))}))
                .unwrap_err()
                .to_string();
        assert!(e.contains("server.disable_starttls"), "{e}");
        let e = build(json!({"server": server(json!({"jid": "localhost"}))}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.jid"), "{e}");
        let e = build(json!({"server": server(json!({})), "devices": [
            {"jid": "d@localhost", "deviceNameExpression": "${x"}]}))
        .unwrap_err()
        .to_string();
        assert!(e.contains("devices[0].deviceNameExpression"), "{e}");
        let e = build(json!({"server": server(json!({})), "devices": [
            {"jid": "d@localhost", "deviceNameExpression": "x", "converter": "Mine"}]}))
        .unwrap_err()
        .to_string();
        assert!(e.contains("devices[0].converter"), "{e}");
    }

    #[test]
    fn upstream_sample_is_accepted() {
        let Some(p) = tbgw::test_util::upstream_sample("xmpp.json") else {
            return;
        };
        let text = std::fs::read_to_string(&p).unwrap();
        let cfg: XmppFileConfig = serde_json::from_str(&text).unwrap();
        let mut ignored = Vec::new();
        let s = Settings::build(&p, cfg, &mut ignored).unwrap();
        assert_eq!(s.transport, Transport::StartTls);
        assert_eq!((s.host.as_str(), s.port), ("localhost", 5222));
        assert_eq!(ignored, vec!["server.plugins".to_string()]);
        assert_eq!(s.devices.len(), 1);
        assert_eq!(s.devices[0].rpcs[0].method, "rpc1");
        assert!(s.devices[0].rpcs[0].with_response);
    }
}
