//! TLS to ThingsBoard against mosquitto with certificates generated for the test: server
//! verification with a CA, mutual TLS with a client certificate, and no plain-text fallback
//! when the handshake fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tbgw::config::TlsFiles;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{free_tcp_port, Mosquitto, Pki, TbStandIn};
use tbgw::{Gateway, TbOptions};

/// Sends one reading for `tls-dev`.
struct OneShot;

#[async_trait]
impl Connector for OneShot {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let mut d = DeviceData::new("tls-dev", "default");
        d.push_telemetry(1, "x", Value::Int(1));
        cx.uplink()
            .send(d)
            .await
            .map_err(|_| ConnectorError::Closed)?;
        cx.cancellation().cancelled().await;
        Ok(())
    }
}

/// mosquitto with a TLS listener on its main port and a plain listener for the stand-in.
async fn tls_broker(dir: &Path, require_client_cert: bool) -> (Mosquitto, u16) {
    let plain = free_tcp_port();
    let pki = Pki::existing(dir, "");
    let extra = format!(
        "{}listener {plain} 127.0.0.1\n",
        pki.mosquitto_tls(require_client_cert)
    );
    (
        Mosquitto::start_with(&extra)
            .await
            .expect("mosquitto with TLS starts"),
        plain,
    )
}

fn options(port: u16, tls: TlsFiles) -> TbOptions {
    let mut o = TbOptions::access_token("127.0.0.1", port, "token");
    o.session_limits_timeout = Duration::from_millis(300);
    o.credentials.tls = Some(tls);
    o
}

async fn delivered(opts: TbOptions, tb: &TbStandIn, within: Duration) -> (bool, u64) {
    let gw = Gateway::builder()
        .thingsboard(opts)
        .connector("One", "test", Box::new(OneShot))
        .build()
        .unwrap();
    let stats = gw.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(gw.run(async move {
        let _ = rx.await;
    }));
    let got = tb
        .wait_for(within, |m| m.topic == "v1/gateway/telemetry")
        .await
        .is_some();
    let _ = tx.send(());
    let _ = run.await;
    (got, stats.snapshot().connection_errors)
}

fn pki() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    Pki::generate(dir.path(), "");
    let p = dir.path().to_path_buf();
    (dir, p)
}

#[tokio::test]
async fn tls_with_a_ca_and_mutual_tls_deliver() {
    let (_keep, dir) = pki();
    // Server verification only.
    let (broker, plain) = tls_broker(&dir, false).await;
    let tb = TbStandIn::connect(plain).await.unwrap();
    let (ok, _) = delivered(
        options(
            broker.port(),
            TlsFiles {
                ca_cert: dir.join("ca.crt"),
                client: None,
            },
        ),
        &tb,
        Duration::from_secs(10),
    )
    .await;
    assert!(ok, "delivered over TLS; broker log:\n{}", broker.log());
    drop(tb);
    drop(broker);

    // Mutual TLS.
    let (broker, plain) = tls_broker(&dir, true).await;
    let tb = TbStandIn::connect(plain).await.unwrap();
    let tls = TlsFiles {
        ca_cert: dir.join("ca.crt"),
        client: Some((dir.join("client.crt"), dir.join("client.key"))),
    };
    let (ok, _) = delivered(options(broker.port(), tls), &tb, Duration::from_secs(10)).await;
    assert!(
        ok,
        "delivered over mutual TLS; broker log:\n{}",
        broker.log()
    );
}

#[tokio::test]
async fn a_failed_handshake_never_falls_back_to_plain_text() {
    let (_keep, dir) = pki();
    // A second, unrelated CA: the server's certificate does not verify.
    Pki::generate(&dir, "other-");
    let (broker, plain) = tls_broker(&dir, false).await;
    let tb = TbStandIn::connect(plain).await.unwrap();
    let wrong_ca = TlsFiles {
        ca_cert: dir.join("other-ca.crt"),
        client: None,
    };
    let (ok, errors) = delivered(
        options(broker.port(), wrong_ca),
        &tb,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        !ok,
        "nothing may be delivered when the server certificate does not verify"
    );
    assert!(errors > 0, "the failed handshake is counted");

    // TLS configured, but the port speaks plain MQTT: no connection, no plain-text fallback.
    let good_ca = TlsFiles {
        ca_cert: dir.join("ca.crt"),
        client: None,
    };
    let (ok, errors) = delivered(options(plain, good_ca), &tb, Duration::from_secs(3)).await;
    assert!(!ok, "a TLS client must not talk plain MQTT");
    assert!(errors > 0);
}
