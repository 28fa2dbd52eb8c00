//! The BLE connector against the in-process radio (`tbgw_connectors::ble::fake::FakeCentral`):
//! this machine has no Bluetooth, so GATT (read, notify, write, scan) is exercised here only.
//! Advertisement scanning is also tested against a mocked BlueZ D-Bus API in
//! `ble_bluez.rs`.
#![cfg(feature = "ble")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::config::ConnectorSpec;
use tbgw::connector::ConnectorFactory;
use tbgw::model::Value;
use tbgw::test_util::harness::forward_up;
use tbgw::test_util::{TestRun, Up};
use tbgw_connectors::ble::central::{Mac, ScanMode};
use tbgw_connectors::ble::fake::FakeCentral;
use tbgw_connectors::ble::BleFactory;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
const SENSOR: &str = "4C:65:A8:DF:85:C0";
const SVC: &str = "0000180f-0000-1000-8000-00805f9b34fb";
const TEMP: &str = "226caa55-6476-4566-7562-66734470666d";
const NAME_CHAR: &str = "00002a00-0000-1000-8000-00805f9b34fb";

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}
fn uuid(s: &str) -> Uuid {
    s.parse().unwrap()
}

fn spec(config: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "BLE".into(),
        connector_type: "ble".into(),
        file: Path::new("ble.json").to_path_buf(),
        config: config.into(),
    }
}

/// The running connector; what it sent arrives in order, stores acknowledged at once.
type Running = TestRun<Up>;

fn start(radio: &FakeCentral, config: Json) -> Running {
    let mut ignored = Vec::new();
    let connector = BleFactory::with_central(Arc::new(radio.clone()))
        .build(&spec(config), &mut ignored)
        .unwrap_or_else(|e| panic!("{e}"));
    TestRun::start("BLE", connector, WAIT, |uplink, tx| {
        forward_up(uplink, tx, true)
    })
}

/// A sensor with a notifying temperature characteristic and a readable, writable name.
fn sensor(radio: &FakeCentral) {
    let m = mac(SENSOR);
    radio.add_device(m, Some("LYWSD03MMC"));
    radio.add_characteristic(m, uuid(SVC), uuid(TEMP), &["notify", "read"], &[0, 0, 0]);
    radio.add_characteristic(m, uuid(SVC), uuid(NAME_CHAR), &["read", "write"], b"Te");
    radio.advertise(m, |a| a.rssi = Some(-60));
}

fn gatt_config() -> Json {
    json!({
        "name": "BLE Connector",
        "passiveScanMode": true,
        "scanner": {"timeout": 10000},
        "devices": [{
            "name": "Temperature and humidity sensor",
            "MACAddress": "4c:65:a8:df:85:c0",
            "pollPeriod": 100,
            "timeout": 1000,
            "connectRetry": 2,
            "connectRetryInSeconds": 0,
            "waitAfterConnectRetries": 0,
            "telemetry": [
                {"key": "temperature", "method": "notify", "characteristicUUID": "226CAA55-6476-4566-7562-66734470666D", "valueExpression": "[2]"},
                {"key": "humidity", "method": "notify", "characteristicUUID": "226CAA55-6476-4566-7562-66734470666D", "valueExpression": "[0]"}
            ],
            "attributes": [
                {"key": "name", "method": "read", "characteristicUUID": "00002A00-0000-1000-8000-00805F9B34FB", "valueExpression": "[0:2]cm [2:]A"},
                {"key": "values", "method": "read", "characteristicUUID": "2A00", "valueExpression": "All values: [:]"}
            ],
            "attributeUpdates": [
                {"attributeOnThingsBoard": "sharedName", "characteristicUUID": "00002A00-0000-1000-8000-00805F9B34FB"}
            ],
            "serverSideRpc": [
                {"methodRPC": "rpcMethod1", "withResponse": true, "characteristicUUID": "00002A00-0000-1000-8000-00805F9B34FB", "methodProcessing": "read"},
                {"methodRPC": "rpcMethod2", "withResponse": true, "characteristicUUID": "00002A00-0000-1000-8000-00805F9B34FB", "methodProcessing": "write"},
                {"methodRPC": "rpcMethod3", "withResponse": true, "methodProcessing": "scan"},
                {"methodRPC": "quiet", "withResponse": false, "characteristicUUID": "2A00", "methodProcessing": "write"}
            ]
        }]
    })
}

const DEV: &str = "Temperature and humidity sensor";

#[tokio::test]
async fn gatt_reads_are_polled_and_notifications_forwarded() {
    let radio = FakeCentral::new();
    sensor(&radio);
    let mut r = start(&radio, gatt_config());
    r.wait_for(|e| matches!(e, Up::Connect(d) if d == DEV))
        .await;
    // Upstream's text rendering: decimal bytes in the text.
    assert_eq!(
        r.value_of(DEV, "name").await,
        Value::String("84101cm A".into())
    );
    assert_eq!(
        r.value_of(DEV, "values").await,
        Value::String("All values: 84101".into())
    );
    // Subscribed before the first notification.
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.subscribers(mac(SENSOR), uuid(TEMP)) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    radio.notify(mac(SENSOR), uuid(TEMP), &[55, 0, 21]);
    r.wait_value(DEV, "temperature", Value::String("21".into()))
        .await;
    radio.notify(mac(SENSOR), uuid(TEMP), &[56, 0, 21]);
    r.wait_value(DEV, "humidity", Value::String("56".into()))
        .await;
    radio.set_value(mac(SENSOR), uuid(NAME_CHAR), b"Ab12");
    r.wait_value(DEV, "name", Value::String("6598cm 4950A".into()))
        .await;
    assert!(r.stats.messages_received() > 0);
    r.stop().await;
}

#[tokio::test]
async fn a_device_that_disappears_is_reconnected_when_it_comes_back() {
    let radio = FakeCentral::new();
    sensor(&radio);
    let mut r = start(&radio, gatt_config());
    r.wait_for(|e| matches!(e, Up::Connect(d) if d == DEV))
        .await;
    r.value_of(DEV, "name").await;
    radio.set_present(mac(SENSOR), false);
    r.wait_for(|e| matches!(e, Up::Disconnect(d) if d == DEV))
        .await;
    // While it is away: RPCs are answered at once as unreachable.
    let reply = r.rpc(DEV, "rpcMethod1", Json::Null).await;
    assert_eq!(reply["code"], 503, "{reply}");
    // Several failed attempts (connectRetry 2), then it is back.
    let deadline = tokio::time::Instant::now() + WAIT;
    while r.stats.errors() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect attempts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    radio.set_present(mac(SENSOR), true);
    radio.advertise(mac(SENSOR), |a| a.rssi = Some(-70));
    r.wait_for(|e| matches!(e, Up::Connect(d) if d == DEV))
        .await;
    radio.set_value(mac(SENSOR), uuid(NAME_CHAR), b"OK");
    r.wait_value(DEV, "name", Value::String("7975cm A".into()))
        .await;
    assert_eq!(radio.connects(mac(SENSOR)), 2);
    // Subscribed again on the new connection.
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.subscribers(mac(SENSOR), uuid(TEMP)) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never subscribed again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    radio.notify(mac(SENSOR), uuid(TEMP), &[1, 2, 3]);
    r.wait_value(DEV, "temperature", Value::String("3".into()))
        .await;
    r.stop().await;
}

#[tokio::test]
async fn a_slow_device_holds_up_no_other_device() {
    let radio = FakeCentral::new();
    sensor(&radio);
    let slow = mac("11:22:33:44:55:66");
    radio.add_device(slow, Some("slow"));
    radio.add_characteristic(slow, uuid(SVC), uuid(NAME_CHAR), &["read"], b"zz");
    radio.set_read_delay(slow, Duration::from_secs(3600));
    radio.advertise(slow, |_| {});
    let mut cfg = gatt_config();
    cfg["devices"].as_array_mut().unwrap().push(json!({
        "name": "Slow", "MACAddress": "11:22:33:44:55:66", "pollPeriod": 100, "timeout": 300,
        "attributes": [{"key": "name", "method": "read", "characteristicUUID": "2A00"}]
    }));
    let mut r = start(&radio, cfg);
    r.wait_for(|e| matches!(e, Up::Connect(d) if d == "Slow"))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.subscribers(mac(SENSOR), uuid(TEMP)) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..5u8 {
        radio.notify(mac(SENSOR), uuid(TEMP), &[0, 0, i]);
        r.wait_value(DEV, "temperature", Value::String(i.to_string()))
            .await;
    }
    // A read that takes longer than the device's `timeout` drops its connection.
    r.wait_for(|e| matches!(e, Up::Disconnect(d) if d == "Slow"))
        .await;
    r.stop().await;
}

#[tokio::test]
async fn rpcs_and_attribute_updates_write_and_read_characteristics() {
    let radio = FakeCentral::new();
    sensor(&radio);
    let mut r = start(&radio, gatt_config());
    r.wait_for(|e| matches!(e, Up::Connect(d) if d == DEV))
        .await;
    // Read: the text, read back as JSON when it is JSON (upstream's gateway does that).
    assert_eq!(r.rpc(DEV, "rpcMethod1", Json::Null).await, json!("Te"));
    radio.set_value(mac(SENSOR), uuid(NAME_CHAR), b"25");
    assert_eq!(r.rpc(DEV, "rpcMethod1", Json::Null).await, json!(25));
    // Write: str(params), answered "Ok".
    assert_eq!(r.rpc(DEV, "rpcMethod2", json!("hello")).await, json!("Ok"));
    assert_eq!(
        r.rpc(DEV, "quiet", json!(7)).await,
        json!({"success": true})
    );
    assert_eq!(
        radio.written(mac(SENSOR), uuid(NAME_CHAR)),
        vec![b"hello".to_vec(), b"7".to_vec()]
    );
    // Reserved get/set.
    assert_eq!(
        r.rpc(
            DEV,
            "set",
            json!("characteristicUUID=00002A00-0000-1000-8000-00805F9B34FB;value=a=b")
        )
        .await,
        json!("Ok")
    );
    assert_eq!(
        r.rpc(
            DEV,
            "get",
            json!("characteristicUUID=00002A00-0000-1000-8000-00805F9B34FB")
        )
        .await,
        json!("a=b")
    );
    let e = r
        .rpc(
            DEV,
            "get",
            json!("characteristicUUID=0000ffff-0000-1000-8000-00805f9b34fb"),
        )
        .await;
    assert_eq!(e["code"], 404, "{e}");
    let e = r.rpc(DEV, "get", json!("value=1")).await;
    assert_eq!(e["code"], 400, "{e}");
    // Scan: the GATT map.
    let map = r.rpc(DEV, "rpcMethod3", Json::Null).await;
    let chars = map["services"][0]["characteristics"].as_array().unwrap();
    assert!(
        chars
            .iter()
            .any(|c| c["uuid"] == NAME_CHAR && c["value"] == "613d62"),
        "{map}"
    );
    // Unknown method, unknown device.
    assert_eq!(r.rpc(DEV, "nope", Json::Null).await["code"], 404);
    assert_eq!(r.rpc("other", "get", Json::Null).await["code"], 404);
    // Attribute update: str(value) written.
    r.update(DEV, "sharedName", json!(true)).await;
    r.update(DEV, "unrelated", json!(1)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.written(mac(SENSOR), uuid(NAME_CHAR)).len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "attribute not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        radio.written(mac(SENSOR), uuid(NAME_CHAR)).last().unwrap(),
        b"True"
    );
    r.stop().await;
}

fn beacon_config() -> Json {
    json!({
        "name": "BLE Connector",
        "passiveScanMode": false,
        "scannerTimeout": 3000,
        "devices": [
            {
                "name": "Beacon", "MACAddress": "aa:bb:cc:dd:ee:01", "pollPeriod": 100,
                "telemetry": [
                    {"key": "t", "dataSourceType": "advertisement", "valueExpression": "[0:2]"},
                    {"key": "b", "dataSourceType": "advertisement", "valueExpression": "[2]"},
                    {"key": "scaled", "dataSourceType": "advertisement", "valueExpression": "[0:2]", "compute": "value / 10"},
                    {"key": "svc", "dataSourceType": "advertisement", "advertisementField": "serviceData", "valueExpression": "[1:]"},
                    {"key": "rssi", "dataSourceType": "advertisement", "advertisementField": "rssi"}
                ],
                "attributes": [
                    {"key": "localName", "dataSourceType": "advertisement", "advertisementField": "localName"}
                ]
            },
            {
                "name": "Tag ${MACAddress}", "localName": "tag", "pollPeriod": 100,
                "telemetry": [
                    {"key": "v", "dataSourceType": "advertisement", "advertisementField": "manufacturerData", "companyId": "0x0059", "valueExpression": "[0]"}
                ]
            },
            {
                "name": "ESS ${localName}", "serviceUUID": "181A", "pollPeriod": 100,
                "telemetry": [
                    {"key": "raw", "dataSourceType": "advertisement", "advertisementField": "serviceData", "serviceDataUUID": "181a", "valueExpression": "[0:2]"}
                ]
            }
        ]
    })
}

#[tokio::test]
async fn advertisements_are_decoded_and_a_silent_device_gets_nothing() {
    let radio = FakeCentral::new();
    let b = mac("AA:BB:CC:DD:EE:01");
    radio.add_device(b, Some("beacon"));
    let mut r = start(&radio, beacon_config());
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.scans() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no scan");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(radio.scan_modes(), vec![ScanMode::Active]);
    radio.advertise(b, |a| {
        a.rssi = Some(-42);
        a.manufacturer_data.insert(0x0499, vec![0x01, 0x02, 0xff]);
        a.service_data
            .insert(uuid("0000fe95-0000-1000-8000-00805f9b34fb"), vec![9, 0, 5]);
    });
    r.wait_for(|e| matches!(e, Up::Connect(d) if d == "Beacon"))
        .await;
    let d = r.record("Beacon").await;
    assert_eq!(d.value("t"), Some(Value::Int(0x0102)));
    assert_eq!(d.value("b"), Some(Value::Int(0xff)));
    assert_eq!(d.value("scaled"), Some(Value::Float(25.8)));
    assert_eq!(d.value("svc"), Some(Value::Int(5)));
    assert_eq!(d.value("rssi"), Some(Value::Int(-42)));
    assert_eq!(d.value("localName"), Some(Value::String("beacon".into())));
    // A change arrives.
    radio.advertise(b, |a| {
        a.manufacturer_data.insert(0x0499, vec![0x00, 0x10, 0x07]);
    });
    r.wait_value("Beacon", "t", Value::Int(0x10)).await;
    // Silence: disconnected, then nothing more.
    r.wait_for(|e| matches!(e, Up::Disconnect(d) if d == "Beacon"))
        .await;
    let after = r.drain_for(Duration::from_millis(1500)).await;
    assert!(
        !after
            .iter()
            .any(|e| matches!(e, Up::Data(d) if d.device_name == "Beacon")),
        "data for a device no longer heard: {after:?}"
    );
    // Heard again: reported again.
    radio.advertise(b, |a| a.rssi = Some(-50));
    r.wait_value("Beacon", "rssi", Value::Int(-50)).await;
    r.stop().await;
}

#[tokio::test]
async fn devices_are_matched_by_name_and_service() {
    let radio = FakeCentral::new();
    let t1 = mac("10:00:00:00:00:01");
    let t2 = mac("10:00:00:00:00:02");
    let e1 = mac("20:00:00:00:00:01");
    for (m, n) in [(t1, "tag"), (t2, "tag"), (e1, "env")] {
        radio.add_device(m, Some(n));
    }
    let mut r = start(&radio, beacon_config());
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.scans() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no scan");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    radio.advertise(t1, |a| {
        a.manufacturer_data.insert(0x0001, vec![1]);
        a.manufacturer_data.insert(0x0059, vec![11]);
    });
    radio.advertise(t2, |a| {
        a.manufacturer_data.insert(0x0059, vec![22]);
    });
    radio.advertise(e1, |a| {
        a.service_data.insert(
            uuid("0000181a-0000-1000-8000-00805f9b34fb"),
            vec![0x01, 0x00],
        );
    });
    r.wait_value("Tag 10:00:00:00:00:01", "v", Value::Int(11))
        .await;
    r.wait_value("Tag 10:00:00:00:00:02", "v", Value::Int(22))
        .await;
    r.wait_value("ESS env", "raw", Value::Int(256)).await;
    r.stop().await;
}

#[tokio::test]
async fn scanning_recovers_when_the_adapter_comes_back() {
    let radio = FakeCentral::new();
    let b = mac("AA:BB:CC:DD:EE:01");
    radio.add_device(b, None);
    let mut r = start(&radio, beacon_config());
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.scans() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no scan");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    radio.advertise(b, |a| {
        a.manufacturer_data.insert(1, vec![0, 1, 2]);
    });
    r.wait_value("Beacon", "t", Value::Int(1)).await;
    radio.set_adapter(false);
    r.wait_for(|e| matches!(e, Up::Disconnect(d) if d == "Beacon"))
        .await;
    radio.set_adapter(true);
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.scans() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no new scan");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    radio.advertise(b, |a| {
        a.manufacturer_data.insert(1, vec![0, 9, 2]);
    });
    r.wait_value("Beacon", "t", Value::Int(9)).await;
    assert!(r.stats.errors() >= 1);
    r.stop().await;
}

#[tokio::test]
async fn a_thousand_beacons_are_all_reported() {
    let radio = FakeCentral::new();
    let n = 1000u16;
    let cfg = json!({
        "scannerTimeout": 60000,
        "devices": [{
            "name": "B ${MACAddress}", "serviceUUID": "FEAA", "pollPeriod": 200,
            "telemetry": [{"key": "n", "dataSourceType": "advertisement", "advertisementField": "serviceData", "valueExpression": "[0:2]"}]
        }]
    });
    let macs: Vec<Mac> = (0..n)
        .map(|i| Mac([0x30, 0, 0, 0, (i >> 8) as u8, i as u8]))
        .collect();
    for m in &macs {
        radio.add_device(*m, None);
    }
    let mut r = start(&radio, cfg);
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.scans() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no scan");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let svc = uuid("0000feaa-0000-1000-8000-00805f9b34fb");
    for round in 0..3u16 {
        for (i, m) in macs.iter().enumerate() {
            let v = (i as u16).wrapping_add(round * 1000);
            radio.advertise(*m, |a| {
                a.service_data.insert(svc, v.to_be_bytes().to_vec());
            });
        }
    }
    let mut seen = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < n as usize || seen.values().any(|v: &i64| *v < 2000) {
        let e = tokio::time::timeout_at(deadline, r.up.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} beacons reported", seen.len()))
            .unwrap();
        if let Up::Data(d) = e {
            if let Some(Value::Int(v)) = d.value("n") {
                seen.insert(d.device_name.clone(), v);
            }
        }
    }
    r.stop().await;
}

#[test]
fn config_errors_name_the_key() {
    let radio = FakeCentral::new();
    let bad = |device: Json| {
        let cfg = json!({"devices": [device]});
        match BleFactory::with_central(Arc::new(radio.clone())).build(&spec(cfg), &mut Vec::new()) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    };
    let e = bad(json!({"name": "x", "MACAddress": "4C:65:A8"}));
    assert!(e.contains("devices[0].MACAddress"), "{e}");
    let e = bad(json!({"name": "x"}));
    assert!(e.contains("devices[0].MACAddress"), "{e}");
    let e = bad(json!({"name": "x", "MACAddress": "4C:65:A8:DF:85:C0",
        "telemetry": [{"key": "k", "method": "read", "characteristicUUID": "2A00", "valueExpression": "[x]"}]}));
    assert!(e.contains("devices[0].telemetry[0].valueExpression"), "{e}");
    let e = bad(json!({"name": "x", "MACAddress": "4C:65:A8:DF:85:C0",
        "telemetry": [{"key": "k", "method": "poll", "characteristicUUID": "2A00"}]}));
    assert!(e.contains("devices[0].telemetry[0].method"), "{e}");
    let e = bad(json!({"name": "x", "MACAddress": "4C:65:A8:DF:85:C0",
        "telemetry": [{"key": "k", "method": "read", "characteristicUUID": "not-a-uuid"}]}));
    assert!(e.contains("characteristicUUID"), "{e}");
    let e = bad(json!({"name": "x", "MACAddress": "4C:65:A8:DF:85:C0",
        "serverSideRpc": [{"methodRPC": "m", "methodProcessing": "erase"}]}));
    assert!(
        e.contains("devices[0].serverSideRpc[0].methodProcessing"),
        "{e}"
    );
    let e = bad(json!({"name": "x", "MACAddress": "4C:65:A8:DF:85:C0",
        "telemetry": [{"key": "k", "dataSourceType": "advertisement", "compute": "import os"}]}));
    assert!(e.contains("devices[0].telemetry[0].compute"), "{e}");
    let e = bad(json!({"name": "T ${MACAddress}", "localName": "t",
        "attributes": [{"key": "k", "method": "read", "characteristicUUID": "2A00"}]}));
    assert!(e.contains("devices[0].name"), "{e}");
}

/// Upstream's sample `ble.json` (3.8.5), as it ships.
fn upstream_sample() -> Json {
    json!({
      "name": "BLE Connector", "passiveScanMode": true, "showMap": false,
      "scanner": {"timeout": 10000, "deviceName": "Device name"},
      "devices": [{
          "name": "Temperature and humidity sensor", "MACAddress": "4C:65:A8:DF:85:C0",
          "pollPeriod": 500000, "showMap": false, "timeout": 10000, "connectRetry": 5,
          "connectRetryInSeconds": 0, "waitAfterConnectRetries": 10,
          "telemetry": [
            {"key": "temperature", "method": "notify", "characteristicUUID": "226CAA55-6476-4566-7562-66734470666D", "valueExpression": "[2]"},
            {"key": "humidity", "method": "notify", "characteristicUUID": "226CAA55-6476-4566-7562-66734470666D", "valueExpression": "[0]"}
          ],
          "attributes": [
            {"key": "name", "method": "read", "characteristicUUID": "00002A00-0000-1000-8000-00805F9B34FB", "valueExpression": "[0:2]cm [2:]A"},
            {"key": "values", "method": "read", "characteristicUUID": "00002A00-0000-1000-8000-00805F9B34FB", "valueExpression": "All values: [:]"}
          ],
          "attributeUpdates": [{"attributeOnThingsBoard": "sharedName", "characteristicUUID": "00002A00-0000-1000-8000-00805F9B34FB"}],
          "serverSideRpc": [
            {"methodRPC": "rpcMethod1", "withResponse": true, "characteristicUUID": "00002A00-0000-1000-8000-00805F9B34FB", "methodProcessing": "read"},
            {"methodRPC": "rpcMethod2", "withResponse": true, "characteristicUUID": "00002A00-0000-1000-8000-00805F9B34FB", "methodProcessing": "write"},
            {"methodRPC": "rpcMethod3", "withResponse": true, "methodProcessing": "scan"}
          ]
      }]
    })
}

#[test]
fn upstreams_sample_is_accepted() {
    let mut ignored = Vec::new();
    BleFactory::new()
        .build(&spec(upstream_sample()), &mut ignored)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ignored.is_empty(), "{ignored:?}");
    if let Some(path) = tbgw::test_util::upstream_sample("ble.json") {
        let v: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        BleFactory::new()
            .build(&spec(v), &mut Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn a_connected_device_that_stops_advertising_stays_connected() {
    // Peripherals often stop advertising once connected: the advertisement keys then stop,
    // the GATT connection (and the device in ThingsBoard) stays.
    let radio = FakeCentral::new();
    sensor(&radio);
    let cfg = json!({
        "scannerTimeout": 300,
        "devices": [{
            "name": DEV, "MACAddress": SENSOR, "pollPeriod": 100,
            "telemetry": [
                {"key": "temperature", "method": "notify", "characteristicUUID": TEMP, "valueExpression": "[2]"},
                {"key": "adv", "dataSourceType": "advertisement", "valueExpression": "[0:2]"}
            ]
        }]
    });
    let mut r = start(&radio, cfg);
    r.wait_for(|e| matches!(e, Up::Connect(d) if d == DEV))
        .await;
    radio.advertise(mac(SENSOR), |a| {
        a.manufacturer_data.insert(0x0499, vec![0, 42]);
    });
    r.wait_value(DEV, "adv", Value::Int(42)).await;
    // Not heard for longer than the window (300 ms), but connected: no disconnect.
    let quiet = r.drain_for(Duration::from_millis(1500)).await;
    assert!(
        !quiet
            .iter()
            .any(|e| matches!(e, Up::Disconnect(d) if d == DEV)),
        "{quiet:?}"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.subscribers(mac(SENSOR), uuid(TEMP)) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    radio.notify(mac(SENSOR), uuid(TEMP), &[0, 0, 33]);
    r.wait_value(DEV, "temperature", Value::String("33".into()))
        .await;
    r.stop().await;
}

#[tokio::test]
async fn type_switches_between_upstreams_two_renderings() {
    // `type: hex`: characteristics as big-endian integers; `type: bytes`: advertisement data as
    // upstream's decimal text.
    let radio = FakeCentral::new();
    sensor(&radio);
    let b = mac("AA:BB:CC:DD:EE:02");
    radio.add_device(b, None);
    let cfg = json!({
        "scannerTimeout": 5000,
        "devices": [
            {"name": "Hex", "MACAddress": SENSOR, "type": "hex", "pollPeriod": 100,
             "attributes": [{"key": "n", "method": "read", "characteristicUUID": "2A00", "valueExpression": "[0:2]"}]},
            {"name": "Text", "MACAddress": "aa:bb:cc:dd:ee:02", "type": "bytes", "pollPeriod": 100,
             "telemetry": [{"key": "t", "dataSourceType": "advertisement", "valueExpression": "v=[0]/[1:]"}]}
        ]
    });
    let mut r = start(&radio, cfg);
    r.wait_value("Hex", "n", Value::Int(0x5465)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while radio.scans() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no scan");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    radio.advertise(b, |a| {
        a.manufacturer_data.insert(7, vec![1, 2, 3]);
    });
    r.wait_value("Text", "t", Value::String("v=1/23".into()))
        .await;
    r.stop().await;
}
