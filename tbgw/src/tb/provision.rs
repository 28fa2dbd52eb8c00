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
//! `ACCESS_TOKEN` (a random 20-character token is asked for when none is configured),
//! `MQTT_BASIC` and `X509_CERTIFICATE` are supported. For `X509_CERTIFICATE` the gateway
//! generates an EC P-256 key and a self-signed certificate (common name = the device name,
//! valid one year, client authentication), sends the certificate as `hash`, and on success
//! writes `cert.pem` and `key.pem` (mode 0600) beside `.credentials`, which also records
//! `caCert`; later sessions use mutual TLS with them. Fixed relative to upstream: the request
//! itself goes over TLS with `caCert` (upstream sends it in plain text to the port it then uses
//! for TLS, which cannot work against one listener), a missing `caCert` is a config error
//! instead of a crash, the key file is not world-readable, and nothing is written when
//! ThingsBoard refuses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value as Json};

#[cfg(test)]
use crate::config::provision::{saved_credentials, validate};
use crate::config::provision::{Saved, CERT_FILE, CREDENTIALS_FILE, KEY_FILE};
use crate::config::{Credentials, ProvisioningConfig};

/// How long to wait for ThingsBoard's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A new EC P-256 key and a self-signed client certificate for `device_name`, valid from a day
/// ago for a year: (certificate PEM, private key PEM).
#[cfg(feature = "tls")]
fn generate_certificate(device_name: &str) -> Result<(String, String), String> {
    use rcgen::{
        date_time_ymd, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        KeyPair, PKCS_ECDSA_P256_SHA256,
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate a key: {e}"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, device_name);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let day = Duration::from_secs(86_400);
    params.not_before = date_time_ymd(1970, 1, 1) + now.saturating_sub(day);
    params.not_after = date_time_ymd(1970, 1, 1) + now + day * 365;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot create a certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(not(feature = "tls"))]
fn generate_certificate(_device_name: &str) -> Result<(String, String), String> {
    Err("X509_CERTIFICATE provisioning needs the `tls` feature".into())
}

fn save(dir: &Path, saved: &Saved) -> std::io::Result<PathBuf> {
    let text = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    write_private(dir, CREDENTIALS_FILE, &text)
}

/// Writes `dir/name` readable by the owner only, atomically (temporary file, fsync, rename).
fn write_private(dir: &Path, name: &str, text: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        o.mode(0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(text)?;
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

/// The request body for `p`; `cert` is the PEM certificate for X509_CERTIFICATE.
fn request(p: &ProvisioningConfig, device_name: &str, cert: Option<&str>) -> Json {
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
        "X509_CERTIFICATE" => {
            r["hash"] = json!(cert.unwrap_or_default());
        }
        _ => {
            r["token"] = json!(p.access_token.clone().unwrap_or_else(random_token));
        }
    }
    r
}

/// TLS with `ca_cert` (resolved in `dir`) and no client certificate, for the request of
/// X509_CERTIFICATE provisioning.
#[cfg(feature = "tls")]
fn tls_transport(dir: &Path, ca_cert: &str) -> Result<rumqttc::Transport, String> {
    let path = crate::config::resolve_path(dir, ca_cert);
    let roots = crate::tls::load_roots(&path).map_err(|e| format!("caCert: {e}"))?;
    let config = crate::tls::client_config(crate::tls::Verify::Roots(roots), None)
        .map_err(|e| e.to_string())?;
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(config)),
    ))
}

#[cfg(not(feature = "tls"))]
fn tls_transport(_dir: &Path, _ca_cert: &str) -> Result<rumqttc::Transport, String> {
    Err("X509_CERTIFICATE provisioning needs the `tls` feature".into())
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
    let x509 = p.credentials_type.as_deref() == Some("X509_CERTIFICATE");
    let generated = if x509 {
        Some(generate_certificate(&device_name)?)
    } else {
        None
    };
    let mut o = MqttOptions::new(
        format!("tbgw-provision-{:08x}", fastrand::u32(..)),
        host,
        port,
    );
    o.set_credentials("provision", "");
    o.set_keep_alive(Duration::from_secs(30));
    if x509 {
        o.set_transport(tls_transport(
            dir,
            p.ca_cert.as_deref().unwrap_or_default(),
        )?);
    }
    let (client, mut ev) = AsyncClient::new(o, 16);
    let body = request(p, &device_name, generated.as_ref().map(|(c, _)| c.as_str()));
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
        ca_cert: p.ca_cert.clone().filter(|_| x509),
    };
    if saved.credentials_type == "X509_CERTIFICATE" {
        let (cert, key) = generated.as_ref().ok_or_else(|| {
            format!("X509_CERTIFICATE credentials that were not asked for: {answer}")
        })?;
        // The key first: a certificate without its key is useless, the reverse is harmless.
        write_private(dir, KEY_FILE, key.as_bytes())
            .and_then(|_| write_private(dir, CERT_FILE, cert.as_bytes()))
            .map_err(|e| {
                format!(
                    "provisioned, but the certificate cannot be saved in {}: {e}",
                    dir.display()
                )
            })?;
    }
    let creds = saved
        .credentials(dir)
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
        let r = request(&p, "gw", None);
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
                ca_cert: None,
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
