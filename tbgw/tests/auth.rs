//! Username/password authentication to ThingsBoard, against mosquitto with a password file:
//! the right credentials deliver, wrong ones are refused, counted and retried.

use std::time::Duration;

use async_trait::async_trait;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{Mosquitto, TbStandIn};
use tbgw::{Gateway, TbOptions};

struct OneShot;

#[async_trait]
impl Connector for OneShot {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let mut d = DeviceData::new("auth-dev", "default");
        d.push_telemetry(1, "x", Value::Int(1));
        cx.uplink()
            .send(d)
            .await
            .map_err(|_| ConnectorError::Closed)?;
        cx.cancellation().cancelled().await;
        Ok(())
    }
}

async fn attempt(
    port: u16,
    user: &str,
    password: &str,
    tb: &TbStandIn,
    within: Duration,
) -> (bool, u64) {
    let mut opts = TbOptions::access_token("127.0.0.1", port, user);
    opts.credentials.password = Some(password.to_string());
    opts.credentials.client_id = format!("gw-{user}-{password}");
    opts.session_limits_timeout = Duration::from_millis(300);
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
    tb.clear();
    (got, stats.snapshot().connection_errors)
}

#[tokio::test]
async fn username_and_password_are_sent_and_a_refusal_is_retried_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let out = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["gateway", "s3cret"])
        .output()
        .expect("mosquitto_passwd runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Anonymous clients (the stand-in) are allowed; a client that sends a user name must match
    // the password file.
    let broker = Mosquitto::start_with(&format!("password_file {}\n", pw.display()))
        .await
        .unwrap();
    let tb = TbStandIn::connect(broker.port()).await.unwrap();

    let (ok, _) = attempt(
        broker.port(),
        "gateway",
        "s3cret",
        &tb,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        ok,
        "the right credentials deliver; broker log:\n{}",
        broker.log()
    );

    let (ok, errors) = attempt(
        broker.port(),
        "gateway",
        "wrong",
        &tb,
        Duration::from_secs(3),
    )
    .await;
    assert!(!ok, "wrong credentials deliver nothing");
    assert!(errors > 0, "the refusal is counted");
}
