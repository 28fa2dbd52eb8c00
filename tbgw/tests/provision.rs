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
use tbgw::test_util::{Mosquitto, TbStandIn};
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
                let answer = if req["provisionDeviceSecret"] == json!("secret") {
                    json!({"status": "SUCCESS", "credentialsType": "ACCESS_TOKEN",
                           "credentialsValue": req["token"]})
                } else {
                    json!({"status": "FAILURE", "errorMsg": "bad secret"})
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
    assert!(
        tb.wait_for(Duration::from_secs(20), |m| m.topic
            == "v1/gateway/telemetry"
            && m.received_at >= since)
            .await
            .is_some(),
        "data flows with the provisioned credentials"
    );
    let _ = stop.send(());
    let _ = task.await;
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

#[test]
fn x509_provisioning_and_missing_keys_are_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tb_gateway.json");
    std::fs::write(
        &file,
        json!({"thingsboard": {"host": "h", "provisioning": {"provisionDeviceKey": "k",
            "provisionDeviceSecret": "s", "type": "X509_CERTIFICATE"}}})
        .to_string(),
    )
    .unwrap();
    let e = tbgw::config::load(&file)
        .expect_err("x509 refused")
        .to_string();
    assert!(e.contains("thingsboard.provisioning.type"), "{e}");
}
