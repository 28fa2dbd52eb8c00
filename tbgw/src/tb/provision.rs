//! Device-key provisioning of the gateway device (`thingsboard.provisioning`, used when the
//! main file has no `security` credentials).
//!
//! As upstream: connect with user name `provision`, publish `/provision/request`
//! `{provisionDeviceKey, provisionDeviceSecret, deviceName, gateway: true, credentialsType,
//! token | clientId/username/password}`, wait up to 60 s for `/provision/response`, and on
//! `"status": "SUCCESS"` use the credentials it carries. They are saved to
//! `<config dir>/.credentials` (mode 0600) and reused on every later start, so provisioning
//! happens once; `gateway_remove_provisioned_credentials` deletes the file.
//!
//! `ACCESS_TOKEN` (a random 20-character token is asked for when none is configured) and
//! `MQTT_BASIC` are supported. `X509_CERTIFICATE` is rejected at load: it needs a certificate
//! and key generated on the gateway, which tbgw does not do yet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::config::{ConfigError, Credentials, ProvisioningConfig};

/// The file provisioned credentials are saved to, in the config directory.
pub const CREDENTIALS_FILE: &str = ".credentials";
/// How long to wait for ThingsBoard's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Saved credentials (upstream keeps the response's `credentialsType` / `credentialsValue`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    credentials_type: String,
    credentials_value: Json,
}

impl Saved {
    fn credentials(&self) -> Option<Credentials> {
        match self.credentials_type.as_str() {
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
        "X509_CERTIFICATE" => Err(ConfigError::new(
            file,
            key("type"),
            "X509_CERTIFICATE provisioning is not supported by tbgw yet; use ACCESS_TOKEN or MQTT_BASIC, or provision the certificate yourself and use security.type x509Certificate",
        )),
        other => Err(ConfigError::new(
            file,
            key("type"),
            format!("unknown credentials type `{other}`; expected ACCESS_TOKEN or MQTT_BASIC"),
        )),
    }
}

/// Credentials saved by an earlier provisioning in `dir`, if any.
pub fn saved_credentials(dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(dir.join(CREDENTIALS_FILE)).ok()?;
    let saved: Saved = serde_json::from_str(&text).ok()?;
    saved.credentials()
}

fn save(dir: &Path, saved: &Saved) -> std::io::Result<PathBuf> {
    let path = dir.join(CREDENTIALS_FILE);
    let tmp = dir.join(".credentials.tmp");
    let text = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        o.mode(0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn random_token() -> String {
    (0..20)
        .map(|_| fastrand::alphanumeric())
        .collect::<String>()
}

/// The request body for `p`.
fn request(p: &ProvisioningConfig, device_name: &str) -> Json {
    let kind = p.credentials_type.as_deref().unwrap_or("ACCESS_TOKEN");
    let mut r = json!({
        "provisionDeviceKey": p.provision_device_key,
        "provisionDeviceSecret": p.provision_device_secret,
        "deviceName": device_name,
        "gateway": true,
        "credentialsType": kind,
    });
    match kind {
        "MQTT_BASIC" => {
            r["clientId"] = json!(p.client_id.clone().unwrap_or_else(random_token));
            r["username"] = json!(p.username.clone().unwrap_or_else(random_token));
            r["password"] = json!(p.password.clone().unwrap_or_else(random_token));
        }
        _ => {
            r["token"] = json!(p.access_token.clone().unwrap_or_else(random_token));
        }
    }
    r
}

/// Provisions the gateway device at `host:port` and saves the credentials in `dir`.
pub(crate) async fn provision(
    host: &str,
    port: u16,
    p: &ProvisioningConfig,
    dir: &Path,
) -> Result<Credentials, String> {
    let device_name = p
        .device_name
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "tbgw".into());
    let mut o = MqttOptions::new(
        format!("tbgw-provision-{:08x}", fastrand::u32(..)),
        host,
        port,
    );
    o.set_credentials("provision", "");
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 16);
    let body = request(p, &device_name);
    let run = async {
        loop {
            match ev.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_)) => {
                    client
                        .try_subscribe("/provision/response", QoS::AtLeastOnce)
                        .map_err(|e| e.to_string())?;
                }
                Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_)) => {
                    client
                        .try_publish(
                            "/provision/request",
                            QoS::AtLeastOnce,
                            false,
                            body.to_string(),
                        )
                        .map_err(|e| e.to_string())?;
                }
                Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(m))
                    if &m.topic[..] == b"/provision/response" =>
                {
                    let answer: Json = serde_json::from_slice(&m.payload)
                        .map_err(|e| format!("invalid provisioning answer: {e}"))?;
                    return Ok::<Json, String>(answer);
                }
                _ => {}
            }
        }
    };
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, run)
        .await
        .map_err(|_| "no provisioning answer within 60 s".to_string())??;
    let _ = client.try_disconnect();
    if answer.get("status").and_then(Json::as_str) != Some("SUCCESS") {
        return Err(format!("provisioning refused: {answer}"));
    }
    let saved = Saved {
        credentials_type: answer
            .get("credentialsType")
            .and_then(Json::as_str)
            .unwrap_or("ACCESS_TOKEN")
            .to_string(),
        credentials_value: answer
            .get("credentialsValue")
            .cloned()
            .unwrap_or(Json::Null),
    };
    let creds = saved
        .credentials()
        .ok_or_else(|| format!("unusable provisioning answer: {answer}"))?;
    match save(dir, &saved) {
        Ok(path) => {
            tracing::info!(file = %path.display(), device = %device_name, "Gateway provisioned; credentials saved.")
        }
        Err(e) => {
            tracing::error!(error = %e, "Gateway provisioned but the credentials cannot be saved; it will provision again at the next start.")
        }
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_saved_answers_round_trip() {
        let p = ProvisioningConfig {
            provision_device_key: Some("k".into()),
            provision_device_secret: Some("s".into()),
            credentials_type: Some("MQTT_BASIC".into()),
            username: Some("u".into()),
            ..Default::default()
        };
        let r = request(&p, "gw");
        assert_eq!(r["gateway"], json!(true));
        assert_eq!(r["username"], json!("u"));
        assert_eq!(r["password"].as_str().map(str::len), Some(20));
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(saved_credentials(dir.path()).is_none());
        save(
            dir.path(),
            &Saved {
                credentials_type: "MQTT_BASIC".into(),
                credentials_value: json!({"clientId": "c", "userName": "u", "password": "p"}),
            },
        )
        .expect("save");
        let c = saved_credentials(dir.path()).expect("saved");
        assert_eq!(
            (
                c.client_id.as_str(),
                c.username.as_deref(),
                c.password.as_deref()
            ),
            ("c", Some("u"), Some("p"))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CREDENTIALS_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let bad = ProvisioningConfig {
            provision_device_key: Some("k".into()),
            ..Default::default()
        };
        let e = validate(&bad, Path::new("tb_gateway.json")).expect_err("no secret");
        assert!(e
            .to_string()
            .contains("thingsboard.provisioning.provisionDeviceSecret"));
    }
}
