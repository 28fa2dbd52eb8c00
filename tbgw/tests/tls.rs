//! TLS to ThingsBoard against mosquitto with certificates generated for the test: server
//! verification with a CA, mutual TLS with a client certificate, and no plain-text fallback
//! when the handshake fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use async_trait::async_trait;
use tbgw::config::TlsFiles;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{Mosquitto, TbStandIn};
use tbgw::{Gateway, TbOptions};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256.
fn make_pki(dir: &Path, prefix: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_key = format!("{prefix}ca.key");
    let ca_crt = format!("{prefix}ca.crt");
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_crt,
        "-days",
        "2",
        "-subj",
        "/CN=tbgw test CA",
    ]);
    openssl(dir, &a);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    for name in ["server", "client"] {
        let key = format!("{prefix}{name}.key");
        let csr = format!("{prefix}{name}.csr");
        let crt = format!("{prefix}{name}.crt");
        let subj = format!("/CN={name}");
        let mut r = vec!["req"];
        r.extend(ec);
        r.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &r);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let plain = free_port();
    let d = dir.display();
    let extra = format!(
        "cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\nrequire_certificate {require_client_cert}\nlistener {plain} 127.0.0.1\n"
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
    make_pki(dir.path(), "");
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
    make_pki(&dir, "other-");
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
