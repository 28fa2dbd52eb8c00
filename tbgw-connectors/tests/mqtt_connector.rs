//! The MQTT connector against a real mosquitto: the source broker is acknowledged only once
//! storage has the data, malformed payloads are counted, and the connector survives a broker
//! restart.

#![cfg_attr(not(feature = "mqtt"), allow(missing_docs))]
#![cfg(feature = "mqtt")]

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::model::DeviceData;
use tbgw::stats::ConnectorCounters;
use tbgw::test_util::Mosquitto;
use tbgw::uplink::{StoreOutcome, UplinkMessage};
use tbgw_connectors::mqtt::MqttFactory;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(10);

type Received = (Vec<DeviceData>, Option<oneshot::Sender<StoreOutcome>>);

fn spec(port: u16, persistent: bool) -> ConnectorSpec {
    ConnectorSpec {
        name: "MQTT".into(),
        connector_type: "mqtt".into(),
        file: "mqtt.json".into(),
        config: json!({
            "broker": {"host": "127.0.0.1", "port": port, "clientId": "tbgw-ack-test", "version": 5,
                       "cleanStart": !persistent, "sessionExpiryInterval": if persistent { 300 } else { 0 }},
            "mapping": [{
                "topicFilter": "t/+",
                "subscriptionQos": 1,
                "converter": {
                    "type": "json",
                    "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "t/(.+)"},
                    "timeseries": [{"type": "integer", "key": "v", "value": "${v}"}]
                }
            }]
        }).into(),
    }
}

/// Starts a connector built from `spec`; returns its task and the gateway-side channel ends.
fn start(spec: &ConnectorSpec) -> (tokio::task::JoinHandle<()>, TestEnds, ConnectorCounters) {
    let mut ignored = Vec::new();
    let mut connector = MqttFactory::new()
        .build(spec, &mut ignored)
        .expect("config is valid");
    let (mut cx, ends) = ConnectorContext::for_test("MQTT");
    let stats = cx.stats().clone();
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends, stats)
}

async fn publisher(port: u16, id: &str) -> AsyncClient {
    let (client, mut ev) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 100);
    tokio::spawn(async move {
        loop {
            if ev.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    client
}

/// The next data message, with its store-ack sender.
async fn next_data(ends: &mut TestEnds) -> Received {
    loop {
        let msg = tokio::time::timeout(WAIT, ends.uplink.recv())
            .await
            .expect("data in time")
            .expect("channel open");
        if let UplinkMessage::Data { data, ack, .. } = msg {
            return (data, ack);
        }
    }
}

/// Publishes `payload` until the connector has subscribed and something arrives.
async fn publish_until_received(
    p: &AsyncClient,
    ends: &mut TestEnds,
    topic: &str,
    payload: &str,
) -> Received {
    for _ in 0..50 {
        p.publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
        if let Ok(Some(UplinkMessage::Data { data, ack, .. })) =
            tokio::time::timeout(Duration::from_millis(200), ends.uplink.recv()).await
        {
            return (data, ack);
        }
    }
    panic!("the connector never received a message");
}

#[tokio::test]
async fn the_source_broker_is_acknowledged_only_after_storage_has_the_data() {
    let broker = Mosquitto::start().await.unwrap();
    let spec = spec(broker.port(), true);
    let p = publisher(broker.port(), "ack-publisher").await;

    // Run 1: the message arrives, storage never confirms it, the connector stops.
    let (task, mut ends, _) = start(&spec);
    let (data, ack) = publish_until_received(&p, &mut ends, "t/dev", r#"{"v": 1}"#).await;
    assert_eq!(data[0].device_name, "dev");
    let held = ack.expect("the connector asked for a store receipt");
    ends.cancel.cancel();
    task.await.unwrap();
    drop(held);
    drop(ends);

    // Run 2 (same client id, persistent session): the broker redelivers the unacknowledged
    // message. This time storage confirms it (and any duplicate).
    let (task, mut ends, _) = start(&spec);
    let (data, ack) = next_data(&mut ends).await;
    assert_eq!(data[0].device_name, "dev");
    ack.expect("receipt").send(StoreOutcome::Stored).unwrap();
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(500), ends.uplink.recv()).await
    {
        if let UplinkMessage::Data { ack: Some(a), .. } = m {
            let _ = a.send(StoreOutcome::Stored);
        }
    }
    ends.cancel.cancel();
    task.await.unwrap();

    // Run 3: nothing comes back, because the PUBACK went out after the store.
    let (task, mut ends, _) = start(&spec);
    let again = tokio::time::timeout(Duration::from_secs(2), ends.uplink.recv()).await;
    assert!(
        again.is_err(),
        "an acknowledged message must not be redelivered: {again:?}"
    );
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn malformed_payloads_are_counted_and_the_connector_survives_a_broker_restart() {
    let mut broker = Mosquitto::start().await.unwrap();
    let spec = spec(broker.port(), false);
    let p = publisher(broker.port(), "bad-publisher").await;
    let (task, mut ends, stats) = start(&spec);
    let (_, ack) = publish_until_received(&p, &mut ends, "t/ok", r#"{"v": 1}"#).await;
    if let Some(a) = ack {
        let _ = a.send(StoreOutcome::Stored);
    }
    let errors_before = stats.convert_errors();
    p.publish("t/bad", QoS::AtLeastOnce, false, "{oops")
        .await
        .unwrap();
    p.publish("t/bad", QoS::AtLeastOnce, false, r#"{"v": "not a number"}"#)
        .await
        .unwrap();
    p.publish("t/good", QoS::AtLeastOnce, false, r#"{"v": 2}"#)
        .await
        .unwrap();
    loop {
        let (data, ack) = next_data(&mut ends).await;
        if let Some(a) = ack {
            let _ = a.send(StoreOutcome::Stored);
        }
        if data.iter().any(|d| d.device_name == "good") {
            break;
        }
    }
    assert!(
        stats.convert_errors() >= errors_before + 2,
        "both bad payloads are counted"
    );

    // The broker restarts: the connector reconnects and subscribes again by itself.
    broker.restart().await.unwrap();
    let (data, _) = publish_until_received(&p, &mut ends, "t/after", r#"{"v": 3}"#).await;
    assert!(!data.is_empty());
    assert!(stats.errors() >= 1, "the lost connection is counted");
    ends.cancel.cancel();
    task.await.unwrap();
}

/// A broker that sends without limit (MQTT 3.1.1 has no Receive Maximum and this mosquitto
/// allows unlimited in-flight messages) while storage confirms nothing: the connector stops
/// taking messages at its own bound, the rest waits in the broker, and once storage catches up
/// every message arrives.
#[tokio::test]
async fn unconfirmed_messages_are_bounded_even_when_the_broker_sends_without_limit() {
    const SENT: usize = 10_000;
    const BOUND: usize = 4_000; // MAX_PENDING_ACKS in the connector
    let broker = Mosquitto::start_with("max_inflight_messages 0\nmax_queued_messages 0\n")
        .await
        .unwrap();
    let mut spec = spec(broker.port(), false);
    spec.config.value_mut()["broker"]["version"] = json!(4);
    spec.config.value_mut()["broker"]["clientId"] = json!("tbgw-bound-test");
    let p = publisher(broker.port(), "bound-publisher").await;
    let (task, mut ends, _) = start(&spec);
    let (_, first) = publish_until_received(&p, &mut ends, "t/dev", r#"{"v": 0}"#).await;
    let mut held: Vec<oneshot::Sender<StoreOutcome>> = first.into_iter().collect();
    let mut received = 1;
    for v in 1..SENT {
        p.publish("t/dev", QoS::AtLeastOnce, false, format!(r#"{{"v": {v}}}"#))
            .await
            .unwrap();
    }
    // Take what the connector hands over without confirming any of it.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), ends.uplink.recv()).await {
        if let UplinkMessage::Data { data, ack, .. } = m {
            received += data.len();
            held.extend(ack);
        }
    }
    assert!(
        (BOUND / 2..=BOUND + 1).contains(&received),
        "{received} messages taken while storage confirmed none"
    );
    // Storage catches up: everything else arrives.
    for a in held.drain(..) {
        let _ = a.send(StoreOutcome::Stored);
    }
    while received < SENT {
        let Ok(Some(m)) = tokio::time::timeout(WAIT, ends.uplink.recv()).await else {
            panic!("only {received} of {SENT} messages arrived");
        };
        if let UplinkMessage::Data { data, ack, .. } = m {
            received += data.len();
            if let Some(a) = ack {
                let _ = a.send(StoreOutcome::Stored);
            }
        }
    }
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_panicking_attribute_request_task_is_counted_and_the_connector_recovers() {
    let broker = Mosquitto::start().await.expect("mosquitto starts");
    let mut spec = spec(broker.port(), false);
    spec.config.value_mut()["broker"]["clientId"] = json!("tbgw-task-test");
    spec.config.value_mut()["requestsMapping"] = json!({
        "attributeRequests": [{
            "topicFilter": "sensor/+/attrs/request",
            "deviceInfo": {"deviceNameExpressionSource": "topic",
                           "deviceNameExpression": "(?<=sensor/)(.*?)(?=/attrs)"},
            "attributeNameExpressionSource": "message",
            "attributeNameExpression": "${key}",
            "topicExpression": "sensor/${deviceName}/attrs/${attributeKey}",
            "valueExpression": "{\"value\": ${attributeValue}}"
        }]
    });
    let connector = MqttFactory::new()
        .build(&spec, &mut Vec::new())
        .expect("config is valid");
    let (cx, mut ends) = ConnectorContext::for_test("MQTT");
    let stats = cx.stats().clone();
    let task = tokio::spawn(cx.supervise(connector));
    let p = publisher(broker.port(), "task-test-pub").await;
    let (_, ack) = publish_until_received(&p, &mut ends, "t/a", r#"{"v": 1}"#).await;
    let _ = ack
        .expect("QoS 1 asks for a receipt")
        .send(StoreOutcome::Stored);
    // An attribute request is answered by a sub-task of the run; no payload makes that
    // task fail for real, so the test-only fault hook makes it panic.
    ends.fail_next_task("attribute request");
    p.publish(
        "sensor/SN-1/attrs/request",
        QoS::AtLeastOnce,
        false,
        r#"{"key": "fw"}"#,
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.restarts() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.task_failures(), 1);
    // The restarted connector subscribes again and receives data.
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(100), ends.uplink.recv()).await
    {
        if let UplinkMessage::Data { ack: Some(a), .. } = m {
            let _ = a.send(StoreOutcome::Stored);
        }
    }
    let (data, ack) = publish_until_received(&p, &mut ends, "t/b", r#"{"v": 2}"#).await;
    if let Some(a) = ack {
        let _ = a.send(StoreOutcome::Stored);
    }
    assert_eq!(data[0].device_name, "b");
    assert_eq!(stats.restarts(), 1);
    ends.cancel.cancel();
    task.await.unwrap();
}
