//! The `thingsboard` section of `tb_gateway.json`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::services::{
    DeviceActivityConfig, DeviceFilteringConfig, ProvisioningConfig, ReportStrategyConfig,
    StatisticsConfig,
};
use super::ConfigError;

/// The `thingsboard` section: where ThingsBoard is and how to talk to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingsBoardConfig {
    /// Host name or address of ThingsBoard's MQTT transport.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port (1883; 8883 turns TLS on).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Credentials of the gateway device.
    #[serde(default)]
    pub security: SecurityConfig,
    /// QoS of telemetry, attributes and device connect/disconnect: 0 or 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Largest payload the gateway publishes. Upstream reads this key but ignores it; tbgw honours
    /// it (and the smaller limit ThingsBoard announces in its session limits).
    #[serde(default = "default_max_payload", rename = "maxPayloadSizeBytes")]
    pub max_payload_size_bytes: usize,
    /// Upstream's sleep of the send loop when storage is empty. Accepted and not used: tbgw
    /// sends as soon as data is stored instead of polling, so `tbgw check` reports the key as
    /// ignored ([`ThingsBoardConfig::unused_keys`]).
    #[serde(default = "default_min_pack_delay", rename = "minPackSendDelayMS")]
    pub min_pack_send_delay_ms: u64,
    /// MQTT keep-alive in seconds (upstream's undocumented `keep_alive`).
    #[serde(default = "default_keep_alive", rename = "keep_alive")]
    pub keep_alive: u64,
    /// tbgw extension: how long to wait for the answer to `getSessionLimits` before going on
    /// with defaults (milliseconds).
    #[serde(default = "default_session_limits_timeout")]
    pub session_limits_timeout_ms: u64,
    /// tbgw extension: most QoS 1 publishes waiting for their PUBACK at once (further capped by
    /// ThingsBoard's `maxInflightMessages`).
    #[serde(default = "default_inflight")]
    pub max_inflight_messages: usize,
    /// General report strategy (`ON_RECEIVED` when absent).
    #[serde(default)]
    pub report_strategy: Option<ReportStrategyConfig>,
    /// Statistics published to the gateway device.
    #[serde(default)]
    pub statistics: StatisticsConfig,
    /// Allow and deny lists of device names per connector.
    #[serde(default)]
    pub device_filtering: DeviceFilteringConfig,
    /// Disconnecting idle devices.
    #[serde(default)]
    pub checking_device_activity: DeviceActivityConfig,
    /// Accept configuration from ThingsBoard's shared attributes (default false here; upstream's
    /// sample turns it on).
    #[serde(default)]
    pub remote_configuration: bool,
    /// tbgw extension: how long new connection settings from remote configuration get to
    /// connect before the previous ones are restored, in seconds (default 30, as upstream).
    #[serde(default = "default_trial")]
    pub remote_configuration_trial_seconds: u64,
    /// Remote shell RPCs. Off unless `true`: they run any command as the gateway's user.
    #[serde(default)]
    pub remote_shell: bool,
    /// tbgw extension: allow the `gateway_reboot` RPC to reboot the machine (default false).
    #[serde(default)]
    pub allow_reboot: bool,
    /// Apply ThingsBoard's `gateway_device_renamed` notifications (default true). Upstream
    /// reads this key from the wrong level, so it is always on there; tbgw honours it here.
    #[serde(default = "yes")]
    pub handle_device_renaming: bool,
    /// Request a device's shared attributes when it connects and hand them to its connector
    /// (default true).
    #[serde(default = "yes")]
    pub sync_devices_shared_attributes_on_connect: bool,
    /// How often connector files are checked for changes, in seconds (default 60; 0: never).
    #[serde(default = "default_check_connectors")]
    pub check_connectors_configuration_in_seconds: u64,
    /// Client-side limit of the gateway's own non-telemetry messages (`"10:1,300:60"`).
    #[serde(default)]
    pub messages_rate_limits: Option<String>,
    /// Client-side limit of the gateway's own telemetry messages.
    #[serde(default)]
    pub rate_limits: Option<String>,
    /// Client-side limit of the gateway's own telemetry datapoints.
    #[serde(default)]
    pub dp_rate_limits: Option<String>,
    /// Client-side limit of devices' non-telemetry messages.
    #[serde(default)]
    pub device_messages_rate_limits: Option<String>,
    /// Client-side limit of devices' telemetry and attribute messages.
    #[serde(default)]
    pub device_rate_limits: Option<String>,
    /// Client-side limit of devices' datapoints.
    #[serde(default)]
    pub device_dp_rate_limits: Option<String>,
    /// Device-key provisioning, used when no `security` section is given.
    #[serde(default)]
    pub provisioning: Option<ProvisioningConfig>,
}

const fn yes() -> bool {
    true
}
const fn default_trial() -> u64 {
    30
}
const fn default_check_connectors() -> u64 {
    60
}

fn default_host() -> String {
    "thingsboard.cloud".into()
}
const fn default_port() -> u16 {
    1883
}
const fn default_qos() -> u8 {
    1
}
const fn default_max_payload() -> usize {
    8196
}
const fn default_min_pack_delay() -> u64 {
    50
}
const fn default_keep_alive() -> u64 {
    120
}
const fn default_session_limits_timeout() -> u64 {
    5000
}
const fn default_inflight() -> usize {
    100
}

impl Default for ThingsBoardConfig {
    fn default() -> Self {
        ThingsBoardConfig {
            host: default_host(),
            port: default_port(),
            security: SecurityConfig::default(),
            qos: default_qos(),
            max_payload_size_bytes: default_max_payload(),
            min_pack_send_delay_ms: default_min_pack_delay(),
            keep_alive: default_keep_alive(),
            session_limits_timeout_ms: default_session_limits_timeout(),
            max_inflight_messages: default_inflight(),
            report_strategy: None,
            statistics: StatisticsConfig::default(),
            device_filtering: DeviceFilteringConfig::default(),
            checking_device_activity: DeviceActivityConfig::default(),
            remote_configuration: false,
            remote_configuration_trial_seconds: default_trial(),
            remote_shell: false,
            allow_reboot: false,
            handle_device_renaming: true,
            sync_devices_shared_attributes_on_connect: true,
            check_connectors_configuration_in_seconds: default_check_connectors(),
            messages_rate_limits: None,
            rate_limits: None,
            dp_rate_limits: None,
            device_messages_rate_limits: None,
            device_rate_limits: None,
            device_dp_rate_limits: None,
            provisioning: None,
        }
    }
}

/// `thingsboard.security` as written in the file. [`SecurityConfig::resolve`] turns it into
/// [`Credentials`] and checks that the keys its `type` needs are there.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityConfig {
    /// `accessToken`, `tlsAccessToken`, `usernamePassword` or `x509Certificate`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The gateway device's access token.
    pub access_token: Option<String>,
    /// MQTT client id.
    pub client_id: Option<String>,
    /// MQTT user name.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
    /// CA certificate file (PEM) that signs ThingsBoard's certificate.
    pub ca_cert: Option<String>,
    /// Client certificate file (PEM), for mutual TLS.
    pub cert: Option<String>,
    /// Client private key file (PEM), for mutual TLS.
    pub private_key: Option<String>,
    /// Force TLS on.
    pub tls: Option<bool>,
}

/// How the gateway authenticates to ThingsBoard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// MQTT client id (empty: tbgw picks one).
    pub client_id: String,
    /// MQTT user name (the access token for token auth).
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
    /// TLS settings, when TLS is on.
    pub tls: Option<TlsFiles>,
}

/// Certificate files for TLS to ThingsBoard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// Client certificate and key (PEM), for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl SecurityConfig {
    /// Checks the section and resolves certificate paths relative to `dir` (the directory of
    /// `tb_gateway.json`) by [`resolve_path`]'s rule.
    pub fn resolve(&self, file: &Path, dir: &Path, port: u16) -> Result<Credentials, ConfigError> {
        let key = |k: &str| format!("thingsboard.security.{k}");
        let kind = self
            .kind
            .as_deref()
            .unwrap_or(if self.access_token.is_some() {
                "accessToken"
            } else if self.cert.is_some() {
                "x509Certificate"
            } else if self.username.is_some() {
                "usernamePassword"
            } else {
                "accessToken"
            });
        let path = |k: &str, v: &Option<String>| -> Result<PathBuf, ConfigError> {
            let v = v.as_deref().ok_or_else(|| {
                ConfigError::new(file, key(k), "missing; required by this security type")
            })?;
            Ok(resolve_path(dir, v))
        };
        let mut creds = Credentials {
            client_id: self.client_id.clone().unwrap_or_default(),
            username: None,
            password: None,
            tls: None,
        };
        let want_tls = port == 8883 || self.tls == Some(true) || self.ca_cert.is_some();
        match kind {
            "accessToken" | "tlsAccessToken" => {
                let token = self.access_token.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| {
                    ConfigError::new(file, key("accessToken"), "missing; required by this security type")
                })?;
                creds.username = Some(token.to_string());
                if kind == "tlsAccessToken" || want_tls {
                    creds.tls = Some(TlsFiles {
                        ca_cert: path("caCert", &self.ca_cert)?,
                        client: None,
                    });
                }
            }
            "usernamePassword" => {
                if self.username.is_none() && self.client_id.is_none() {
                    return Err(ConfigError::new(
                        file,
                        key("username"),
                        "missing; usernamePassword needs a username or a clientId",
                    ));
                }
                creds.username = self.username.clone();
                creds.password = self.password.clone();
                if want_tls {
                    creds.tls = Some(TlsFiles {
                        ca_cert: path("caCert", &self.ca_cert)?,
                        client: None,
                    });
                }
            }
            "x509Certificate" => {
                creds.tls = Some(TlsFiles {
                    ca_cert: path("caCert", &self.ca_cert)?,
                    client: Some((path("cert", &self.cert)?, path("privateKey", &self.private_key)?)),
                });
            }
            other => {
                return Err(ConfigError::new(
                    file,
                    key("type"),
                    format!(
                        "unknown security type `{other}`; expected accessToken, tlsAccessToken, usernamePassword or x509Certificate"
                    ),
                ))
            }
        }
        Ok(creds)
    }
}

/// A path named in a configuration file, resolved by tbgw's one rule: absolute as written;
/// `~` or a leading `~/` is the home directory (`$HOME`); anything else is relative to `dir`,
/// the directory of the file that names the path. The working directory never matters.
///
/// Certificates and keys (`tb_gateway.json` and every connector file), the device filter list
/// and custom statistics commands all follow it; see [`crate::tls`] and
/// `docs/COMPATIBILITY.md` for how upstream differs.
pub fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").filter(|h| !h.is_empty());
    if p == "~" {
        if let Some(h) = home() {
            return PathBuf::from(h);
        }
    }
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(h) = home() {
            return Path::new(&h).join(rest);
        }
    }
    dir.join(p)
}

/// [`resolve_path`] for a path named in `file`: relative paths are taken from `file`'s
/// directory (the working directory when `file` has no directory part).
pub fn resolve_beside(file: &Path, p: &str) -> PathBuf {
    resolve_path(file.parent().unwrap_or(Path::new("")), p)
}

impl ThingsBoardConfig {
    /// Keys of the `thingsboard` section in `raw` that are accepted but not used (reported as
    /// ignored): `minPackSendDelayMS` (tbgw does not poll storage).
    pub fn unused_keys(raw: Option<&serde_json::Value>) -> Vec<String> {
        const ACCEPTED_UNUSED: &[&str] = &["minPackSendDelayMS"];
        raw.and_then(|v| v.as_object())
            .map(|m| {
                ACCEPTED_UNUSED
                    .iter()
                    .filter(|k| m.contains_key(**k))
                    .map(|k| format!("thingsboard.{k}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks values serde cannot check.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        if self.qos > 1 {
            return Err(ConfigError::new(file, "thingsboard.qos", "must be 0 or 1"));
        }
        if self.host.trim().is_empty() {
            return Err(ConfigError::new(
                file,
                "thingsboard.host",
                "must not be empty",
            ));
        }
        for (key, v) in [
            ("messagesRateLimits", &self.messages_rate_limits),
            ("rateLimits", &self.rate_limits),
            ("dpRateLimits", &self.dp_rate_limits),
            (
                "deviceMessagesRateLimits",
                &self.device_messages_rate_limits,
            ),
            ("deviceRateLimits", &self.device_rate_limits),
            ("deviceDpRateLimits", &self.device_dp_rate_limits),
        ] {
            if let Some(v) = v {
                crate::throttle::validate(file, key, v)?;
            }
        }
        if let Some(rs) = &self.report_strategy {
            super::report::validate(rs, file, "thingsboard.reportStrategy")?;
        }
        if self.max_payload_size_bytes < 256 {
            return Err(ConfigError::new(
                file,
                "thingsboard.maxPayloadSizeBytes",
                "must be at least 256",
            ));
        }
        Ok(())
    }
}
