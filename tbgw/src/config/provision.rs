//! What provisioning keeps on disk and what the configuration checks of it: the
//! `thingsboard.provisioning` section and the credentials an earlier provisioning saved in the
//! config directory. The exchange with ThingsBoard itself is the ThingsBoard client's.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{resolve_path, ConfigError, Credentials, ProvisioningConfig, TlsFiles};

/// The file provisioned credentials are saved to, in the config directory.
pub const CREDENTIALS_FILE: &str = ".credentials";
/// The client certificate of `X509_CERTIFICATE` provisioning, in the config directory (the
/// name upstream uses, so a config directory it provisioned works unchanged).
pub const CERT_FILE: &str = "cert.pem";
/// The private key of `X509_CERTIFICATE` provisioning, in the config directory.
pub const KEY_FILE: &str = "key.pem";
/// Saved credentials (upstream keeps the response's `credentialsType` / `credentialsValue`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Saved {
    pub credentials_type: String,
    pub credentials_value: Json,
    /// The CA certificate for TLS (X509_CERTIFICATE), as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
}

impl Saved {
    /// The credentials these stand for; certificate files are resolved in `dir`.
    pub(crate) fn credentials(&self, dir: &Path) -> Option<Credentials> {
        match self.credentials_type.as_str() {
            "X509_CERTIFICATE" => Some(Credentials {
                client_id: String::new(),
                username: None,
                password: None,
                tls: Some(TlsFiles {
                    ca_cert: resolve_path(dir, self.ca_cert.as_deref()?),
                    client: Some((dir.join(CERT_FILE), dir.join(KEY_FILE))),
                }),
            }),
            "ACCESS_TOKEN" => Some(Credentials {
                client_id: String::new(),
                username: Some(self.credentials_value.as_str()?.to_string()),
                password: None,
                tls: None,
            }),
            "MQTT_BASIC" => {
                let v = &self.credentials_value;
                let s = |k: &str| v.get(k).and_then(Json::as_str).map(str::to_string);
                Some(Credentials {
                    client_id: s("clientId").unwrap_or_default(),
                    username: s("userName").or_else(|| s("username")),
                    password: s("password"),
                    tls: None,
                })
            }
            _ => None,
        }
    }
}

/// Checks the section at load. Errors name `thingsboard.provisioning.<key>`.
pub fn validate(p: &ProvisioningConfig, file: &Path) -> Result<(), ConfigError> {
    let key = |k: &str| format!("thingsboard.provisioning.{k}");
    if p.provision_device_key.as_deref().is_none_or(str::is_empty) {
        return Err(ConfigError::new(file, key("provisionDeviceKey"), "missing"));
    }
    if p.provision_device_secret
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return Err(ConfigError::new(
            file,
            key("provisionDeviceSecret"),
            "missing",
        ));
    }
    match p.credentials_type.as_deref().unwrap_or("ACCESS_TOKEN") {
        "ACCESS_TOKEN" | "MQTT_BASIC" => Ok(()),
        "X509_CERTIFICATE" if !cfg!(feature = "tls") => Err(ConfigError::new(
            file,
            key("type"),
            "X509_CERTIFICATE provisioning needs TLS, and tbgw was built without the `tls` feature",
        )),
        "X509_CERTIFICATE" if p.ca_cert.as_deref().is_none_or(str::is_empty) => Err(
            ConfigError::new(
                file,
                key("caCert"),
                "missing; X509_CERTIFICATE provisioning connects with TLS and needs the CA certificate of ThingsBoard's MQTT server",
            ),
        ),
        "X509_CERTIFICATE" => Ok(()),
        other => Err(ConfigError::new(
            file,
            key("type"),
            format!("unknown credentials type `{other}`; expected ACCESS_TOKEN, MQTT_BASIC or X509_CERTIFICATE"),
        )),
    }
}

/// Credentials saved by an earlier provisioning in `dir`, if any.
pub fn saved_credentials(dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(dir.join(CREDENTIALS_FILE)).ok()?;
    let saved: Saved = serde_json::from_str(&text).ok()?;
    saved.credentials(dir)
}
