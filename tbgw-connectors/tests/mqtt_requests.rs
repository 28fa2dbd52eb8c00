//! The MQTT connector end to end: a mosquitto for the devices, a second mosquitto with the
//! ThingsBoard stand-in, and the gateway between them. Covers `requestsMapping` (connect,
//! disconnect, attribute requests, attribute updates, two-way / one-way / reserved /
//! connector RPCs), several mappings for one message, shared subscriptions, TLS with
//! generated certificates, back-pressure from a blocking storage, and upstream's sample file.

#![cfg_attr(not(feature = "mqtt"), allow(missing_docs))]
#![cfg(feature = "mqtt")]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use tbgw::connector::{ConnectorFactory, ConnectorSpec};
use tbgw::storage::{FullPolicy, MemoryStorage};
use tbgw::test_util::{Mosquitto, TbStandIn};
use tbgw::{Gateway, TbOptions};
use tbgw_connectors::mqtt::MqttFactory;
use tokio::sync::{mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(15);

/// A device-side client: publishes, and forwards what it receives on its subscriptions.
struct Device {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Bytes)>,
}

impl Device {
    async fn connect(port: u16, id: &str, subscriptions: &[&str]) -> Device {
        let (client, mut ev) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 10_000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let subs: Vec<String> = subscriptions.iter().map(|s| s.to_string()).collect();
        let c = client.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for s in &subs {
                            let _ = c.subscribe(s.clone(), QoS::AtLeastOnce).await;
                        }
                        if subs.is_empty() {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        if tx.send((topic, p.payload)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("device client ready in time")
            .expect("device client task alive");
        Device { client, rx }
    }

    async fn publish(&self, topic: &str, payload: impl Into<Bytes>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish queued");
    }

    /// The next message on `topic` (others are skipped).
    async fn expect(&mut self, topic: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (t, p) = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing on `{topic}` in time"))
                .expect("device channel open");
            if t == topic {
                return String::from_utf8_lossy(&p).into_owned();
            }
        }
    }

    /// Nothing arrives on `topic` for `d`.
    async fn expect_none(&mut self, topic: &str, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some((t, p))) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            assert_ne!(t, topic, "unexpected message on {topic}: {p:?}");
        }
    }
}

struct Rig {
    devices: Mosquitto,
    tb_broker: Mosquitto,
    tb: TbStandIn,
    gateway: Option<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<tbgw::ShutdownReport>>,
}

fn spec(config: Value) -> ConnectorSpec {
    ConnectorSpec {
        name: "MQTT".into(),
        connector_type: "mqtt".into(),
        file: "mqtt.json".into(),
        config: config.into(),
    }
}

fn tb_options(port: u16) -> TbOptions {
    let mut opts = TbOptions::access_token("127.0.0.1", port, "token");
    opts.session_limits_timeout = Duration::from_millis(300);
    opts.reconnect_max = Duration::from_secs(1);
    opts
}

impl Rig {
    /// Brokers and stand-in; `config` builds the connector (gets the device broker's port).
    async fn new(config: impl FnOnce(u16) -> Value) -> Rig {
        let devices = Mosquitto::start().await.expect("device mosquitto");
        let tb_broker = Mosquitto::start().await.expect("ThingsBoard mosquitto");
        Self::with(devices, tb_broker, config, None).await
    }

    async fn with(
        devices: Mosquitto,
        tb_broker: Mosquitto,
        config: impl FnOnce(u16) -> Value,
        storage: Option<Arc<MemoryStorage>>,
    ) -> Rig {
        let tb = TbStandIn::connect(tb_broker.port())
            .await
            .expect("stand-in connects");
        let mut ignored = Vec::new();
        let connector = MqttFactory::new()
            .build(&spec(config(devices.port())), &mut ignored)
            .expect("config is valid");
        assert!(ignored.is_empty(), "every key is used: {ignored:?}");
        let mut b = Gateway::builder()
            .thingsboard(tb_options(tb_broker.port()))
            .connector("MQTT", "mqtt", connector);
        if let Some(s) = storage {
            b = b.storage(s);
        }
        let gateway = b.build().expect("gateway builds");
        Rig {
            devices,
            tb_broker,
            tb,
            gateway: Some(gateway),
            stop: None,
            task: None,
        }
    }

    fn start(&mut self) {
        let gw = self.gateway.take().expect("not started yet");
        let (stop, rx) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(gw.run(async move {
            let _ = rx.await;
        })));
    }

    /// Stops the gateway; returns the brokers for reuse.
    async fn shutdown(mut self) -> (Mosquitto, Mosquitto) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, t).await;
        }
        (self.devices, self.tb_broker)
    }

    /// Publishes `payload` on `topic` every 200 ms until ThingsBoard sees a message `pred`
    /// accepts (the connector subscribes asynchronously).
    async fn publish_until(
        &self,
        dev: &Device,
        topic: &str,
        payload: &str,
        pred: impl Fn(&tbgw::test_util::Received) -> bool,
    ) -> tbgw::test_util::Received {
        for _ in 0..75 {
            dev.publish(topic, payload.to_string()).await;
            if let Some(m) = self.tb.wait_for(Duration::from_millis(200), &pred).await {
                return m;
            }
        }
        panic!(
            "ThingsBoard never saw the effect of `{topic}`; device broker log:\n{}",
            self.devices.log()
        );
    }
}

async fn rpc_reply(tb: &TbStandIn, id: u64) -> Value {
    let m = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/rpc" && m.get("id") == Some(&json!(id))
        })
        .await
        .unwrap_or_else(|| panic!("no reply to RPC {id}"));
    m.json.expect("JSON reply")["data"].clone()
}

fn requests_config(port: u16) -> Value {
    json!({
        "broker": {"host": "127.0.0.1", "port": port, "clientId": "tbgw-requests", "version": 5,
                   "security": {"type": "anonymous"}},
        "mapping": [{
            "topicFilter": "data/+",
            "converter": {
                "type": "json",
                "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "data/(.+)"},
                "timeseries": [{"type": "integer", "key": "v", "value": "${v}"}]
            }
        }],
        "requestsMapping": {
            "connectRequests": [{
                "topicFilter": "sensor/+/connect",
                "deviceInfo": {
                    "deviceNameExpressionSource": "topic",
                    "deviceNameExpression": "(?<=sensor/)(.*?)(?=/connect)",
                    "deviceProfileExpressionSource": "constant",
                    "deviceProfileExpression": "thermo"
                }
            }],
            "disconnectRequests": [{
                "topicFilter": "sensor/+/disconnect",
                "deviceInfo": {
                    "deviceNameExpressionSource": "topic",
                    "deviceNameExpression": "(?<=sensor/)(.*?)(?=/disconnect)"
                }
            }],
            "attributeRequests": [{
                "topicFilter": "sensor/+/attrs/request",
                "deviceInfo": {
                    "deviceNameExpressionSource": "topic",
                    "deviceNameExpression": "(?<=sensor/)(.*?)(?=/attrs)"
                },
                "attributeNameExpressionSource": "message",
                "attributeNameExpression": "${key}",
                "topicExpression": "sensor/${deviceName}/attrs/${attributeKey}",
                "valueExpression": "{\"value\": ${attributeValue}}"
            }],
            "attributeUpdates": [{
                "deviceNameFilter": "SN-.*",
                "attributeFilter": "fw.*",
                "topicExpression": "sensor/${deviceName}/update/${attributeKey}",
                "valueExpression": "${attributeValue}"
            }],
            "serverSideRpc": [
                {
                    "type": "twoWay",
                    "deviceNameFilter": ".*",
                    "methodFilter": "getTemp",
                    "requestTopicExpression": "sensor/${deviceName}/request/${methodName}/${requestId}",
                    "responseTopicExpression": "sensor/${deviceName}/response/${methodName}/${requestId}",
                    "responseTimeout": 5000,
                    "valueExpression": "${params}"
                },
                {
                    "type": "twoWay",
                    "deviceNameFilter": ".*",
                    "methodFilter": "slow",
                    "requestTopicExpression": "sensor/${deviceName}/request/slow",
                    "responseTopicExpression": "sensor/${deviceName}/response/slow",
                    "responseTimeout": 300,
                    "valueExpression": "{}"
                },
                {
                    "type": "oneWay",
                    "deviceNameFilter": "SN-.*",
                    "methodFilter": "setRelay",
                    "requestTopicExpression": "sensor/${deviceName}/relay",
                    "valueExpression": "{\"on\": ${params.on}}",
                    "qos": 1
                }
            ]
        }
    })
}

#[tokio::test]
async fn requests_mapping_connects_answers_updates_and_carries_rpcs() {
    let mut rig = Rig::new(requests_config).await;
    let mut dev = Device::connect(rig.devices.port(), "device-sn1", &["sensor/#"]).await;
    rig.start();

    // Connect request.
    let c = rig
        .publish_until(&dev, "sensor/SN-1/connect", "", |m| {
            m.topic == "v1/gateway/connect"
        })
        .await;
    assert_eq!(c.json, Some(json!({"device": "SN-1", "type": "thermo"})));

    // Attribute request: ThingsBoard answers, the answer goes to the rendered topic.
    rig.tb.set_responder(|m| {
        if m.topic != "v1/gateway/attributes/request" {
            return Vec::new();
        }
        let req = m.json.clone().unwrap_or_default();
        let body = json!({"id": req["id"], "device": req["device"], "value": "1.2"});
        vec![(
            "v1/gateway/attributes/response".to_string(),
            Bytes::from(body.to_string()),
        )]
    });
    dev.publish("sensor/SN-1/attrs/request", r#"{"key": "fw"}"#)
        .await;
    let req = rig
        .tb
        .wait_for(WAIT, |m| m.topic == "v1/gateway/attributes/request")
        .await
        .expect("attribute request reaches ThingsBoard");
    let req = req.json.unwrap();
    assert_eq!(
        (&req["device"], &req["keys"], &req["client"]),
        (&json!("SN-1"), &json!(["fw"]), &json!(false))
    );
    assert_eq!(
        dev.expect("sensor/SN-1/attrs/fw").await,
        r#"{"value": "1.2"}"#
    );

    // Attribute update: only keys matching attributeFilter are published.
    rig.tb
        .send_attribute_update("SN-1", json!({"fw_version": "2.0", "other": 1}))
        .await
        .unwrap();
    assert_eq!(dev.expect("sensor/SN-1/update/fw_version").await, "2.0");
    dev.expect_none("sensor/SN-1/update/other", Duration::from_millis(300))
        .await;

    // Two-way RPC: the request is published, the device's reply goes back to ThingsBoard
    // unchanged, as the Python gateway forwards it.
    rig.tb
        .send_rpc("SN-1", 11, "getTemp", json!({"unit": "C"}))
        .await
        .unwrap();
    let body = dev.expect("sensor/SN-1/request/getTemp/11").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"unit": "C"})
    );
    dev.publish(
        "sensor/SN-1/response/getTemp/11",
        r#"{"temp": 21.5, "source": "device"}"#,
    )
    .await;
    assert_eq!(
        rpc_reply(&rig.tb, 11).await,
        json!({"temp": 21.5, "source": "device"})
    );

    // Two-way RPC without a reply: a timeout error, after responseTimeout.
    rig.tb
        .send_rpc("SN-1", 12, "slow", json!({}))
        .await
        .unwrap();
    dev.expect("sensor/SN-1/request/slow").await;
    assert_eq!(rpc_reply(&rig.tb, 12).await["code"], json!(408));
    // The reply topic was unsubscribed: a late reply is not taken by anyone.
    dev.publish("sensor/SN-1/response/slow", "late").await;

    // One-way RPC: success once the broker acknowledged the publish.
    rig.tb
        .send_rpc("SN-1", 13, "setRelay", json!({"on": true}))
        .await
        .unwrap();
    assert_eq!(dev.expect("sensor/SN-1/relay").await, r#"{"on": true}"#);
    assert_eq!(rpc_reply(&rig.tb, 13).await, json!({"success": true}));

    // Reserved set and get.
    rig.tb
        .send_rpc(
            "SN-1",
            14,
            "set",
            json!("requestTopicExpression=sensor/${deviceName}/raw;value=42;"),
        )
        .await
        .unwrap();
    assert_eq!(dev.expect("sensor/SN-1/raw").await, "42");
    assert_eq!(rpc_reply(&rig.tb, 14).await, json!({"success": true}));
    rig.tb
        .send_rpc(
            "SN-1",
            15,
            "get",
            json!("requestTopicExpression=sensor/${deviceName}/get;responseTopicExpression=sensor/${deviceName}/got;responseTimeout=3000;valueExpression={\"q\": 1};"),
        )
        .await
        .unwrap();
    assert_eq!(dev.expect("sensor/SN-1/get").await, r#"{"q": 1}"#);
    dev.publish("sensor/SN-1/got", "7").await;
    assert_eq!(rpc_reply(&rig.tb, 15).await, json!(7));

    // No entry for the method: 404.
    rig.tb
        .send_rpc("SN-1", 16, "nothing", json!({}))
        .await
        .unwrap();
    assert_eq!(rpc_reply(&rig.tb, 16).await["code"], json!(404));

    // Connector RPC to the gateway device: `mqtt_<name>` with the entry in its params.
    rig.tb
        .send_gateway_rpc(
            20,
            "mqtt_publish",
            json!({"requestTopicExpression": "sensor/gw/cmd", "valueExpression": "${params.x}", "x": 5}),
        )
        .await
        .unwrap();
    assert_eq!(dev.expect("sensor/gw/cmd").await, "5");
    let r = rig
        .tb
        .wait_for(WAIT, |m| m.topic == "v1/devices/me/rpc/response/20")
        .await
        .expect("connector RPC reply");
    assert_eq!(r.json.unwrap()["success"], json!(true));

    // Disconnect request.
    dev.publish("sensor/SN-1/disconnect", "").await;
    let d = rig
        .tb
        .wait_for(WAIT, |m| m.topic == "v1/gateway/disconnect")
        .await
        .expect("disconnect reaches ThingsBoard");
    assert_eq!(d.json, Some(json!({"device": "SN-1"})));
    rig.shutdown().await;
}

#[tokio::test]
async fn one_message_feeds_every_matching_mapping_and_shared_subscriptions_work() {
    let mut rig = Rig::new(|port| {
        json!({
            "broker": {"host": "127.0.0.1", "port": port, "version": 5},
            "mapping": [
                {
                    "topicFilter": "plant/+/line/#",
                    "converter": {
                        "type": "json",
                        "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "${id}"},
                        "timeseries": [{"type": "double", "key": "temp", "value": "${t}"}]
                    }
                },
                {
                    "topicFilter": "plant/a/#",
                    "converter": {
                        "type": "json",
                        "deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "Plant A"},
                        "attributes": [{"type": "string", "key": "last", "value": "${id}"}]
                    }
                },
                {
                    "topicFilter": "$share/tbgw/shared/+",
                    "converter": {
                        "type": "json",
                        "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "shared/(.+)"},
                        "timeseries": [{"type": "integer", "key": "n", "value": "${n}"}]
                    }
                }
            ]
        })
    })
    .await;
    let dev = Device::connect(rig.devices.port(), "device-multi", &[]).await;
    rig.start();

    // Both mappings convert the one message.
    rig.publish_until(&dev, "plant/a/line/1", r#"{"id": "L1", "t": 20.5}"#, |m| {
        m.topic == "v1/gateway/attributes" && m.text().contains("\"last\"")
    })
    .await;
    let attrs = rig.tb.messages_on("v1/gateway/attributes");
    assert!(
        attrs
            .iter()
            .any(|m| m.json == Some(json!({"Plant A": {"last": "L1"}}))),
        "{attrs:?}"
    );
    let tele = rig
        .tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/telemetry" && m.get("L1").is_some()
        })
        .await
        .expect("telemetry of the first mapping");
    assert_eq!(tele.json.unwrap()["L1"][0]["values"], json!({"temp": 20.5}));

    // A shared subscription receives and is matched on its topic part.
    let m = rig
        .publish_until(&dev, "shared/s1", r#"{"n": 3}"#, |m| {
            m.topic == "v1/gateway/telemetry" && m.get("s1").is_some()
        })
        .await;
    assert_eq!(m.json.unwrap()["s1"][0]["values"], json!({"n": 3}));
    rig.shutdown().await;
}

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

/// A CA plus a certificate signed by it for `name` with the given subjectAltName.
fn make_cert(dir: &Path, name: &str, san: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
    let (key, csr, crt, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("/CN={name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=tbgw mqtt test CA",
        ],
    );
    make_cert(dir, "server", "IP:127.0.0.1,DNS:localhost");
    make_cert(dir, "wrongname", "DNS:not-this-host.example");
    make_cert(dir, "client", "DNS:client");
}

/// A device broker whose main listener is TLS with `server` (requiring client certificates),
/// plus a plain listener for the test's device client.
async fn tls_devices(dir: &Path, server: &str) -> (Mosquitto, u16) {
    let plain = tbgw::test_util::free_tcp_port();
    let d = dir.display();
    let extra = format!(
        "cafile {d}/ca.crt\ncertfile {d}/{server}.crt\nkeyfile {d}/{server}.key\nrequire_certificate true\nlistener {plain} 127.0.0.1\n"
    );
    (
        Mosquitto::start_with(&extra).await.expect("TLS mosquitto"),
        plain,
    )
}

fn tls_config(port: u16, dir: &Path, insecure: bool) -> Value {
    let d = dir.display();
    json!({
        "broker": {
            "host": "127.0.0.1", "port": port, "version": 4,
            "security": {
                "type": "certificates",
                "pathToCACert": format!("{d}/ca.crt"),
                "pathToClientCert": format!("{d}/client.crt"),
                "pathToPrivateKey": format!("{d}/client.key"),
                "insecure": insecure
            }
        },
        "mapping": [{
            "topicFilter": "tls/+",
            "converter": {
                "type": "json",
                "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "tls/(.+)"},
                "timeseries": [{"type": "integer", "key": "v", "value": "${v}"}]
            }
        }]
    })
}

#[tokio::test]
async fn tls_with_a_ca_client_certificate_and_insecure_host_names() {
    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().to_path_buf();
    make_pki(&dir);

    // CA + mutual TLS, the certificate names the host.
    let (devices, plain) = tls_devices(&dir, "server").await;
    let tb_broker = Mosquitto::start().await.unwrap();
    let cfg = tls_config(devices.port(), &dir, false);
    let mut rig = Rig::with(devices, tb_broker, move |_| cfg, None).await;
    let dev = Device::connect(plain, "tls-device", &[]).await;
    rig.start();
    rig.publish_until(&dev, "tls/d1", r#"{"v": 1}"#, |m| {
        m.topic == "v1/gateway/telemetry" && m.get("d1").is_some()
    })
    .await;
    rig.shutdown().await;

    // The broker's certificate names another host: refused without `insecure`...
    let (devices, plain) = tls_devices(&dir, "wrongname").await;
    let tb_broker = Mosquitto::start().await.unwrap();
    let cfg = tls_config(devices.port(), &dir, false);
    let mut rig = Rig::with(devices, tb_broker, move |_| cfg, None).await;
    let dev = Device::connect(plain, "tls-device-2", &[]).await;
    rig.start();
    for _ in 0..10 {
        dev.publish("tls/d2", r#"{"v": 2}"#).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rig.tb
            .wait_for(Duration::from_millis(500), |m| m.topic
                == "v1/gateway/telemetry")
            .await
            .is_none(),
        "a certificate for another host must be refused"
    );
    let (devices, tb_broker) = rig.shutdown().await;

    // ... and accepted with `insecure: true` (the chain is still checked against the CA).
    let cfg = tls_config(devices.port(), &dir, true);
    let mut rig = Rig::with(devices, tb_broker, move |_| cfg, None).await;
    rig.start();
    rig.publish_until(&dev, "tls/d3", r#"{"v": 3}"#, |m| {
        m.topic == "v1/gateway/telemetry" && m.get("d3").is_some()
    })
    .await;
    rig.shutdown().await;
}

#[tokio::test]
async fn a_blocking_storage_holds_the_source_broker_back_and_nothing_is_lost() {
    const N: usize = 1000;
    let devices = Mosquitto::start_with("max_queued_messages 0\n")
        .await
        .unwrap();
    // ThingsBoard is down at first: its broker's port is reserved, the broker stopped.
    let mut tb_broker = Mosquitto::start().await.unwrap();
    let tb_port = tb_broker.port();
    tb_broker.stop().await.unwrap();

    let storage = Arc::new(MemoryStorage::new(10, 10, FullPolicy::Block));
    let config = json!({
        "broker": {"host": "127.0.0.1", "port": devices.port(), "version": 4, "clientId": "tbgw-bp"},
        "mapping": [{
            "topicFilter": "bp/+",
            "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "bp/(.+)"},
                "timeseries": [{"type": "integer", "key": "n", "value": "${n}"}]
            }
        }]
    });
    let mut ignored = Vec::new();
    let connector = MqttFactory::new()
        .build(&spec(config), &mut ignored)
        .unwrap();
    let gw = Gateway::builder()
        .thingsboard(tb_options(tb_port))
        .storage(storage)
        .connector("MQTT", "mqtt", connector)
        .build()
        .unwrap();
    let stats = gw.connector_stats("MQTT").expect("connector stats");
    let gstats = gw.stats();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(gw.run(async move {
        let _ = rx.await;
    }));

    let dev = Device::connect(devices.port(), "bp-device", &[]).await;
    // Wait until the connector's subscription is live.
    let mut probe = 0;
    while stats.messages_received() == 0 {
        assert!(probe < 100, "the connector never subscribed");
        dev.publish("bp/warmup", r#"{"n": -1}"#).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        probe += 1;
    }
    let warmup = stats.messages_received() as usize;
    for i in 0..N {
        dev.publish("bp/dev", format!(r#"{{"n": {i}}}"#)).await;
    }
    // The connector takes what the broker's in-flight window allows, then stops receiving.
    let mut last = 0;
    let mut stable = 0;
    while stable < 10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = stats.messages_received();
        if now == last {
            stable += 1;
        } else {
            stable = 0;
            last = now;
        }
    }
    let received = last as usize;
    assert!(
        received < warmup + N / 2,
        "the source must be held back, yet the connector received {received} of {}",
        warmup + N
    );
    assert_eq!(gstats.snapshot().storage_dropped, 0, "nothing is dropped");

    // ThingsBoard comes up: everything arrives.
    tb_broker.restart().await.unwrap();
    let tb = TbStandIn::connect(tb_port).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < N && tokio::time::Instant::now() < deadline {
        for m in tb.messages_on("v1/gateway/telemetry") {
            if let Some(entries) = m.get("dev").and_then(Value::as_array) {
                for e in entries {
                    if let Some(n) = e["values"]["n"].as_i64() {
                        seen.insert(n);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen.len(),
        N,
        "every message is delivered once ThingsBoard is back"
    );
    assert_eq!(gstats.snapshot().storage_dropped, 0);
    let _ = stop.send(());
    let _ = tokio::time::timeout(WAIT, task).await;
}

#[test]
fn the_upstream_sample_config_is_accepted() {
    let Some(path) = tbgw::test_util::upstream_sample("mqtt.json") else {
        return;
    };
    let text = std::fs::read_to_string(path).expect("upstream sample present");
    let config: Value = serde_json::from_str(&text).unwrap();
    let mut ignored = Vec::new();
    MqttFactory::new()
        .build(&spec(config), &mut ignored)
        .unwrap_or_else(|e| panic!("the upstream sample must build: {e}"));
    // Only the worker knobs and the unregistered custom converter are reported, and
    // nothing of requestsMapping.
    assert!(
        ignored.iter().all(|k| !k.starts_with("requestsMapping")),
        "{ignored:?}"
    );
}
