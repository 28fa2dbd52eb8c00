//! The `tbgw` binary end to end, with an upstream-format config: devices publish to a real
//! mosquitto, the gateway forwards to a second mosquitto where a ThingsBoard stand-in records
//! what arrives.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use serde_json::{json, Value};
use tbgw::test_util::{Mosquitto, TbStandIn};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(15);

/// A running `tbgw run` process; killed on drop. Its stderr goes to a file for diagnostics.
struct GatewayProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn terminate(mut self) -> (Option<i32>, String) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("gateway exits after SIGTERM");
        (status.ok().and_then(|s| s.code()), self.log())
    }
}

/// The mqtt.json used by these tests: `sensor/<serial>/data` JSON messages.
fn mqtt_config(device_port: u16) -> Value {
    json!({
        "broker": {"host": "127.0.0.1", "port": device_port, "clientId": "tbgw-e2e", "version": 5,
                   "security": {"type": "anonymous"}},
        "mapping": [{
            "topicFilter": "sensor/+/data",
            "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {
                    "deviceNameExpressionSource": "topic",
                    "deviceNameExpression": "(?<=sensor/)(.*?)(?=/data)",
                    "deviceProfileExpressionSource": "constant",
                    "deviceProfileExpression": "thermometer"
                },
                "attributes": [{"type": "string", "key": "model", "value": "${model}"}],
                "timeseries": [
                    {"type": "double", "key": "temperature", "value": "${temp}"},
                    {"type": "integer", "key": "seq", "value": "${seq}"},
                    {"type": "boolean", "key": "relay", "value": "${relay}"}
                ]
            }
        }]
    })
}

fn write_config(dir: &Path, tb_port: u16, device_port: u16) -> PathBuf {
    let main = json!({
        "thingsboard": {
            "host": "127.0.0.1", "port": tb_port, "qos": 1,
            "security": {"type": "accessToken", "accessToken": "GW_TOKEN"},
            "remoteShell": false,
            "sessionLimitsTimeoutMs": 1000
        },
        "storage": {"type": "memory", "max_records_count": 100000, "read_records_count": 100},
        "connectors": [{"type": "mqtt", "name": "MQTT Broker Connector", "configuration": "mqtt.json"}]
    });
    std::fs::write(
        dir.join("tb_gateway.json"),
        serde_json::to_vec_pretty(&main).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("mqtt.json"),
        serde_json::to_vec_pretty(&mqtt_config(device_port)).unwrap(),
    )
    .unwrap();
    dir.join("tb_gateway.json")
}

fn start_gateway(tb_port: u16, device_port: u16) -> GatewayProcess {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), tb_port, device_port);
    let log = dir.path().join("gateway.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tbgw"))
        .args(["run", "-c"])
        .arg(&config)
        .arg("--log-level")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("tbgw starts");
    GatewayProcess {
        child,
        log,
        _dir: dir,
    }
}

/// A device-side MQTT client.
async fn device(port: u16) -> AsyncClient {
    let mut o = MqttOptions::new(format!("device-{}", fastrand::u32(..)), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 10_000);
    tokio::spawn(async move {
        loop {
            if ev.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    client
}

/// Waits until the gateway's connector has subscribed on the device broker, by publishing a
/// probe until its data shows up at the stand-in.
async fn wait_until_flowing(dev: &AsyncClient, tb: &TbStandIn) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        dev.publish(
            "sensor/probe/data",
            QoS::AtLeastOnce,
            false,
            json!({"seq": -1, "temp": 0, "relay": false, "model": "probe"}).to_string(),
        )
        .await
        .unwrap();
        if tb
            .wait_for(Duration::from_millis(300), |m| {
                m.topic == "v1/gateway/telemetry" && m.text().contains("probe")
            })
            .await
            .is_some()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never started forwarding"
        );
    }
}

/// Every `seq` value the stand-in received in telemetry, by device.
fn received_seqs(tb: &TbStandIn, device: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for m in tb.messages_on("v1/gateway/telemetry") {
        let Some(entries) = m
            .json
            .as_ref()
            .and_then(|j| j.get(device))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for e in entries {
            if let Some(s) = e["values"]["seq"].as_i64() {
                out.push(s);
            }
        }
    }
    out
}

#[tokio::test]
async fn device_json_reaches_thingsboard_with_names_types_and_timestamps() {
    let devices = Mosquitto::start().await.unwrap();
    let tbb = Mosquitto::start().await.unwrap();
    let tb = TbStandIn::connect(tbb.port()).await.unwrap();
    let gw = start_gateway(tbb.port(), devices.port());
    let dev = device(devices.port()).await;
    wait_until_flowing(&dev, &tb).await;

    let msg = json!({"temp": "21.5", "seq": 7, "relay": "on", "model": "T-1000", "ts": 1_700_000_000_123i64});
    dev.publish(
        "sensor/SN-001/data",
        QoS::AtLeastOnce,
        false,
        msg.to_string(),
    )
    .await
    .unwrap();

    let connect = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/connect" && m.text().contains("SN-001")
        })
        .await
        .unwrap_or_else(|| panic!("connect; log:\n{}", gw.log()));
    assert_eq!(
        connect.json,
        Some(json!({"device": "SN-001", "type": "thermometer"}))
    );
    let tele = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/telemetry" && m.text().contains("SN-001")
        })
        .await
        .expect("telemetry");
    assert_eq!(
        tele.json.unwrap()["SN-001"],
        json!([{"ts": 1_700_000_000_123i64, "values": {"temperature": 21.5, "seq": 7, "relay": true}}])
    );
    let attrs = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/attributes"
                && m.text().contains("SN-001")
                && m.text().contains("\"model\"")
        })
        .await
        .expect("attributes");
    assert_eq!(attrs.json.unwrap()["SN-001"], json!({"model": "T-1000"}));

    // The device registry is persisted beside the config, in upstream's format.
    // It is written in the background, off the ingest path: wait for it.
    let file = gw._dir.path().join("connected_devices.json");
    let deadline = std::time::Instant::now() + WAIT;
    let registry: Value = loop {
        if let Some(v) = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(|v| v.get("SN-001").is_some())
        {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connected_devices.json was not written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        registry["SN-001"]["connectorName"],
        json!("MQTT Broker Connector")
    );
    assert_eq!(registry["SN-001"]["deviceType"], json!("thermometer"));
    let (code, log) = gw.terminate().await;
    assert_eq!(code, Some(0), "graceful exit; log:\n{log}");
}

#[tokio::test]
async fn malformed_device_payloads_are_logged_and_the_gateway_goes_on() {
    let devices = Mosquitto::start().await.unwrap();
    let tbb = Mosquitto::start().await.unwrap();
    let tb = TbStandIn::connect(tbb.port()).await.unwrap();
    let gw = start_gateway(tbb.port(), devices.port());
    let dev = device(devices.port()).await;
    wait_until_flowing(&dev, &tb).await;

    dev.publish("sensor/bad/data", QoS::AtLeastOnce, false, "{not json")
        .await
        .unwrap();
    dev.publish(
        "sensor/bad/data",
        QoS::AtLeastOnce,
        false,
        json!({"temp": "warm", "seq": 1}).to_string(),
    )
    .await
    .unwrap();
    dev.publish(
        "sensor/good/data",
        QoS::AtLeastOnce,
        false,
        json!({"temp": 20, "seq": 2}).to_string(),
    )
    .await
    .unwrap();
    let good = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/telemetry" && m.text().contains("good")
        })
        .await;
    assert!(
        good.is_some(),
        "valid data after bad data still arrives; log:\n{}",
        gw.log()
    );
    // The half-valid message keeps its valid key.
    let bad = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/telemetry" && m.text().contains("\"bad\"")
        })
        .await;
    assert_eq!(
        bad.unwrap().json.unwrap()["bad"][0]["values"],
        json!({"seq": 1})
    );
    let (code, log) = gw.terminate().await;
    assert_eq!(code, Some(0));
    assert!(
        log.contains("not valid JSON"),
        "malformed JSON is logged:\n{log}"
    );
    assert!(log.contains("warm"), "the bad value is logged:\n{log}");
}

#[tokio::test]
async fn a_thingsboard_outage_loses_no_accepted_message() {
    let devices = Mosquitto::start().await.unwrap();
    let mut tbb = Mosquitto::start().await.unwrap();
    let tb = TbStandIn::connect(tbb.port()).await.unwrap();
    let gw = start_gateway(tbb.port(), devices.port());
    let dev = device(devices.port()).await;
    wait_until_flowing(&dev, &tb).await;
    let connects_before = tb.messages_on("v1/gateway/connect").len();

    const N: i64 = 600;
    for seq in 0..N {
        if seq == 200 {
            tbb.stop().await.unwrap();
        }
        if seq == 400 {
            tbb.restart().await.unwrap();
        }
        dev.publish(
            "sensor/outage/data",
            QoS::AtLeastOnce,
            false,
            json!({"temp": 1.5, "seq": seq}).to_string(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut got = received_seqs(&tb, "outage");
        got.sort_unstable();
        got.dedup();
        if got.len() as i64 == N {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<i64> = (0..N)
                .filter(|s| got.binary_search(s).is_err())
                .take(20)
                .collect();
            panic!(
                "{} of {N} arrived; first missing {missing:?}\nlog:\n{}",
                got.len(),
                gw.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Devices are announced again after the reconnect.
    assert!(
        tb.messages_on("v1/gateway/connect").len() > connects_before,
        "devices re-announced"
    );
    let (code, log) = gw.terminate().await;
    assert_eq!(code, Some(0), "log:\n{log}");
    assert!(log.contains("retrying"), "the outage is logged:\n{log}");
}

#[tokio::test]
async fn an_unreachable_thingsboard_at_start_is_retried_until_it_appears() {
    let devices = Mosquitto::start().await.unwrap();
    let mut tbb = Mosquitto::start().await.unwrap();
    tbb.stop().await.unwrap();
    let gw = start_gateway(tbb.port(), devices.port());
    let dev = device(devices.port()).await;
    // Give the connector time to subscribe, then publish while ThingsBoard is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for seq in 0..50 {
        dev.publish(
            "sensor/late/data",
            QoS::AtLeastOnce,
            false,
            json!({"seq": seq}).to_string(),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tbb.restart().await.unwrap();
    let tb = TbStandIn::connect(tbb.port()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let mut got = received_seqs(&tb, "late");
        got.sort_unstable();
        got.dedup();
        if got.len() == 50 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 50 arrived; log:\n{}",
            got.len(),
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, log) = gw.terminate().await;
    assert_eq!(code, Some(0));
    assert!(
        log.contains("ThingsBoard connection lost or refused"),
        "{log}"
    );
}
