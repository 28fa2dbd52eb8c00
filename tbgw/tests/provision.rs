//! Device-key provisioning against mosquitto: a task plays ThingsBoard's provisioning
//! endpoint; the gateway provisions once, saves the credentials, connects with them, and on
//! the next start reuses them without asking again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value as Json};
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{free_tcp_port, Mosquitto, Pki, TbStandIn};
use tbgw::Gateway;
use tokio::sync::oneshot;

struct One;

#[async_trait]
impl Connector for One {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let mut d = DeviceData::new("prov-dev", "t");
        d.push_telemetry(1_700_000_000_000, "v", Value::Int(1));
        cx.uplink()
            .send(d)
            .await
            .map_err(|_| ConnectorError::Closed)?;
        cx.cancellation().cancelled().await;
        Ok(())
    }
}

/// Answers provisioning requests like ThingsBoard; counts them and keeps the last one.
async fn provisioning_endpoint(
    port: u16,
    requests: Arc<AtomicUsize>,
    last: Arc<std::sync::Mutex<Json>>,
) {
    let mut o = MqttOptions::new("tb-provisioning", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 16);
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.try_subscribe("/provision/request", QoS::AtLeastOnce);
            }
            Ok(Event::Incoming(Packet::Publish(m))) => {
                requests.fetch_add(1, Ordering::SeqCst);
                let req: Json = serde_json::from_slice(&m.payload).unwrap_or(Json::Null);
                *last.lock().unwrap() = req.clone();
                let answer = if req["provisionDeviceSecret"] != json!("secret") {
                    json!({"status": "FAILURE", "errorMsg": "bad secret"})
                } else if req["credentialsType"] == json!("X509_CERTIFICATE") {
                    json!({"status": "SUCCESS", "credentialsType": "X509_CERTIFICATE",
                           "credentialsValue": req["hash"]})
                } else {
                    json!({"status": "SUCCESS", "credentialsType": "ACCESS_TOKEN",
                           "credentialsValue": req["token"]})
                };
                let _ = client.try_publish(
                    "/provision/response",
                    QoS::AtLeastOnce,
                    false,
                    answer.to_string(),
                );
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn run_once(dir: &std::path::Path, tb: &TbStandIn) {
    assert!(
        delivers(dir, tb, Duration::from_secs(20)).await,
        "data flows with the provisioned credentials"
    );
}

/// Runs the gateway of `dir` until its telemetry reaches `tb` or `within` passes.
async fn delivers(dir: &std::path::Path, tb: &TbStandIn, within: Duration) -> bool {
    let loaded = tbgw::config::load(&dir.join("tb_gateway.json")).unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::builder()
        .config(loaded)
        .connector("One", "one", Box::new(One))
        .build()
        .expect("builds");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(gw.run(async move {
        let _ = stop_rx.await;
    }));
    let since = std::time::Instant::now();
    let got = tb
        .wait_for(within, |m| {
            m.topic == "v1/gateway/telemetry" && m.received_at >= since
        })
        .await
        .is_some();
    let _ = stop.send(());
    let _ = task.await;
    got
}

#[tokio::test]
async fn provisions_once_saves_the_token_and_reuses_it() {
    let broker = Mosquitto::start().await.expect("mosquitto");
    let tb = TbStandIn::connect(broker.port()).await.expect("stand-in");
    let requests = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(std::sync::Mutex::new(Json::Null));
    tokio::spawn(provisioning_endpoint(
        broker.port(),
        requests.clone(),
        last.clone(),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("tb_gateway.json"),
        json!({
            "thingsboard": {
                "host": "127.0.0.1", "port": broker.port(), "sessionLimitsTimeoutMs": 300,
                "provisioning": {"provisionDeviceKey": "key", "provisionDeviceSecret": "secret",
                                 "deviceName": "my-gateway", "type": "ACCESS_TOKEN",
                                 "accessToken": "tok-xyz"}
            },
            "storage": {"type": "memory"},
            "connectors": []
        })
        .to_string(),
    )
    .unwrap();
    run_once(dir.path(), &tb).await;
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    let req = last.lock().unwrap().clone();
    assert_eq!(req["deviceName"], json!("my-gateway"));
    assert_eq!(req["gateway"], json!(true));
    let saved = std::fs::read_to_string(dir.path().join(".credentials")).expect("saved");
    assert!(saved.contains("tok-xyz"), "{saved}");
    assert!(
        broker.log().contains("u'tok-xyz'"),
        "connected with the token:\n{}",
        broker.log()
    );

    // Second start: the saved credentials are used, nothing is requested again.
    run_once(dir.path(), &tb).await;
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

/// mosquitto with a TLS listener (server certificate of `pki`, client certificates checked
/// against `client_ca` when given) on its main port and a plain one for the stand-in and the
/// provisioning endpoint.
async fn tls_broker(pki: &Pki, client_ca: Option<&std::path::Path>) -> (Mosquitto, u16) {
    let plain = free_tcp_port();
    let tls = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
        client_ca.unwrap_or(&pki.ca_cert()).display(),
        pki.server_cert().display(),
        pki.server_key().display(),
        client_ca.is_some()
    );
    let broker = Mosquitto::start_with(&format!("{tls}listener {plain} 127.0.0.1\n"))
        .await
        .expect("mosquitto with TLS");
    (broker, plain)
}

/// A [`tls_broker`], the stand-in on its plain port, and the gateway's X.509 provisioning
/// config in `dir` pointing at its TLS port. Returns the plain port too.
async fn x509_setup(
    pki: &Pki,
    client_ca: Option<&std::path::Path>,
    dir: &std::path::Path,
) -> (Mosquitto, u16, TbStandIn) {
    let (broker, plain) = tls_broker(pki, client_ca).await;
    let tb = TbStandIn::connect(plain).await.expect("stand-in");
    write_x509_config(dir, broker.port());
    (broker, plain, tb)
}

fn write_x509_config(dir: &std::path::Path, port: u16) {
    std::fs::write(
        dir.join("tb_gateway.json"),
        json!({
            "thingsboard": {
                "host": "127.0.0.1", "port": port, "sessionLimitsTimeoutMs": 300,
                "provisioning": {"provisionDeviceKey": "key", "provisionDeviceSecret": "secret",
                                 "deviceName": "x509-gateway", "type": "X509_CERTIFICATE",
                                 "caCert": "ca.pem"}
            },
            "storage": {"type": "memory"},
            "connectors": []
        })
        .to_string(),
    )
    .unwrap();
}

#[tokio::test]
async fn x509_provisioning_generates_a_certificate_and_connects_with_mutual_tls() {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(pki_dir.path(), "");
    let dir = tempfile::tempdir().expect("tempdir");
    // `caCert` is a file name in the config directory, as upstream resolves it.
    std::fs::copy(pki.ca_cert(), dir.path().join("ca.pem")).unwrap();

    // Provisioning goes over TLS (server verified with caCert, no client certificate yet).
    let (broker, plain, tb) = x509_setup(&pki, None, dir.path()).await;
    let requests = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(std::sync::Mutex::new(Json::Null));
    let endpoint = tokio::spawn(provisioning_endpoint(plain, requests.clone(), last.clone()));
    assert!(
        delivers(dir.path(), &tb, Duration::from_secs(20)).await,
        "provisioned and delivering over TLS; broker log:\n{}",
        broker.log()
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    let req = last.lock().unwrap().clone();
    assert_eq!(req["credentialsType"], json!("X509_CERTIFICATE"));
    let cert = std::fs::read_to_string(dir.path().join("cert.pem")).expect("cert.pem saved");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert_eq!(
        req["hash"],
        json!(cert),
        "the request carries the saved certificate"
    );
    let key = std::fs::metadata(dir.path().join("key.pem")).expect("key.pem saved");
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    let saved = std::fs::read_to_string(dir.path().join(".credentials")).expect("saved");
    assert!(
        saved.contains("X509_CERTIFICATE") && saved.contains("ca.pem"),
        "{saved}"
    );
    endpoint.abort();
    drop(tb);
    drop(broker);

    // The next start reuses the certificate: a broker that only admits clients with exactly
    // that certificate lets the gateway in, without a new provisioning request.
    let (broker, _, tb) = x509_setup(&pki, Some(&dir.path().join("cert.pem")), dir.path()).await;
    assert!(
        delivers(dir.path(), &tb, Duration::from_secs(20)).await,
        "mutual TLS with the provisioned certificate; broker log:\n{}",
        broker.log()
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    drop(tb);
    drop(broker);

    // Control: a broker that admits only another client certificate keeps the gateway out,
    // so the certificate above was really checked.
    let (_broker, _, tb) = x509_setup(&pki, Some(&pki.client_cert()), dir.path()).await;
    assert!(
        !delivers(dir.path(), &tb, Duration::from_secs(3)).await,
        "a certificate the broker does not trust is refused"
    );
}

#[test]
fn x509_provisioning_without_a_ca_and_unknown_types_are_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tb_gateway.json");
    for (kind, key) in [
        ("X509_CERTIFICATE", "thingsboard.provisioning.caCert"),
        ("PSK", "thingsboard.provisioning.type"),
    ] {
        std::fs::write(
            &file,
            json!({"thingsboard": {"host": "h", "provisioning": {"provisionDeviceKey": "k",
                "provisionDeviceSecret": "s", "type": kind}}})
            .to_string(),
        )
        .unwrap();
        let e = tbgw::config::load(&file).expect_err("refused").to_string();
        assert!(e.contains(key), "{kind}: {e}");
    }
}
