//! Advertisement mode end to end through the real BlueZ D-Bus API: btleplug (the connector's
//! `BluezCentral`) against python-dbusmock's `bluez5` template on a private system bus
//! (`tbgw::test_util::BluezMock`). GATT cannot be mocked this way (btleplug cannot connect to
//! the template, nor parse dbusmock's introspection of GATT objects); it is tested against the
//! in-process radio in `ble_connector.rs`.
//!
//! `DBUS_SYSTEM_BUS_ADDRESS` is process-wide, so this file is a test binary of its own with one
//! test, run on a current-thread runtime created after the variable is set.
#![cfg(feature = "ble")]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::config::ConnectorSpec;
use tbgw::connector::{ConnectorContext, ConnectorFactory, TestEnds};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::BluezMock;
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::ble::BleFactory;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(40);
const SENSOR: &str = "4C:65:A8:DF:85:C0";
const OTHER: &str = "11:22:33:44:55:66";

#[derive(Debug)]
enum Event {
    Data(DeviceData),
    Disconnect(String),
}

fn config() -> Json {
    json!({
        "name": "BLE Connector",
        "passiveScanMode": false,
        "scannerTimeout": 3000,
        "devices": [
            {
                "name": "Sensor", "MACAddress": "4c:65:a8:df:85:c0", "pollPeriod": 200,
                "telemetry": [
                    {"key": "temperature", "dataSourceType": "advertisement", "valueExpression": "[0:2]"},
                    {"key": "battery", "dataSourceType": "advertisement", "valueExpression": "[2]"},
                    {"key": "rssi", "dataSourceType": "advertisement", "advertisementField": "rssi"}
                ],
                "attributes": [
                    {"key": "name", "dataSourceType": "advertisement", "advertisementField": "localName"}
                ]
            },
            {
                "name": "Env ${localName}", "serviceUUID": "181A", "pollPeriod": 200,
                "telemetry": [
                    {"key": "humidity", "dataSourceType": "advertisement", "advertisementField": "serviceData", "valueExpression": "[0:2]"}
                ]
            }
        ]
    })
}

struct Run {
    events: mpsc::UnboundedReceiver<Event>,
}

impl Run {
    async fn record(&mut self, device: &str, key: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Data(d))) if d.device_name == device => {
                    if let Some(v) = d.value(key) {
                        return v;
                    }
                }
                Ok(Some(_)) => {}
                _ => panic!("no {key} of {device}"),
            }
        }
    }

    async fn wait_value(&mut self, device: &str, key: &str, want: Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = tokio::time::timeout_at(deadline, self.record(device, key))
                .await
                .unwrap_or_else(|_| panic!("{device}/{key} never became {want:?}"));
            if v == want {
                return;
            }
        }
    }

    async fn wait_disconnect(&mut self, device: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Disconnect(d))) if d == device => return,
                Ok(Some(_)) => {}
                _ => panic!("{device} was never disconnected"),
            }
        }
    }

    async fn drain_for(&mut self, d: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            out.push(e);
        }
        out
    }
}

#[test]
fn advertisements_through_a_mocked_bluez() {
    if let Some(why) = BluezMock::unavailable() {
        eprintln!("SKIPPED advertisements_through_a_mocked_bluez: {why}");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut bluez = BluezMock::start().await.expect("the mocked BlueZ starts");
        // Only this test runs in this binary, on this thread: nothing reads the environment
        // concurrently, and the BLE stack connects to the bus only after this.
        std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", bluez.bus_address());
        bluez.add_device(SENSOR, "LYWSD03MMC").await.unwrap();
        bluez
            .set_manufacturer_data(SENSOR, 0x0499, &[0x01, 0x02, 0xff])
            .await
            .unwrap();

        let spec = ConnectorSpec {
            name: "BLE".into(),
            connector_type: "ble".into(),
            file: Path::new("ble.json").to_path_buf(),
            config: config().into(),
        };
        let mut connector = BleFactory::new()
            .build(&spec, &mut Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut cx, ends) = ConnectorContext::for_test("BLE");
        let TestEnds {
            mut uplink, cancel, ..
        } = ends;
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(m) = uplink.recv().await {
                let e = match m {
                    UplinkMessage::Data { data, .. } => {
                        for d in data {
                            let _ = tx.send(Event::Data(d));
                        }
                        continue;
                    }
                    UplinkMessage::Disconnect { device, .. } => Event::Disconnect(device),
                    _ => continue,
                };
                let _ = tx.send(e);
            }
        });
        let task = tokio::spawn(async move {
            connector.run(&mut cx).await.expect("ends cleanly");
        });
        let mut run = Run { events };

        // By MAC (configured in lower case), slices as JSON integers, name and RSSI.
        run.wait_value("Sensor", "temperature", Value::Int(0x0102))
            .await;
        run.wait_value("Sensor", "battery", Value::Int(0xff)).await;
        run.wait_value("Sensor", "name", Value::String("LYWSD03MMC".into()))
            .await;
        assert!(matches!(
            run.record("Sensor", "rssi").await,
            Value::Int(r) if (-70..=-60).contains(&r)
        ));

        // A change of the advertised data arrives.
        bluez
            .set_manufacturer_data(SENSOR, 0x0499, &[0x00, 0xfa, 0x07])
            .await
            .unwrap();
        run.wait_value("Sensor", "temperature", Value::Int(250))
            .await;

        // Matched by service, named by local name, service data decoded.
        bluez.add_device(OTHER, "env1").await.unwrap();
        bluez
            .set_service_data(OTHER, "0000181a-0000-1000-8000-00805f9b34fb", &[0x12, 0x34])
            .await
            .unwrap();
        run.wait_value("Env env1", "humidity", Value::Int(0x1234))
            .await;

        // A device no longer heard: disconnected, and sent nothing more.
        bluez.set_heard(SENSOR, false).await.unwrap();
        run.wait_disconnect("Sensor").await;
        let after = run.drain_for(Duration::from_secs(2)).await;
        assert!(
            !after
                .iter()
                .any(|e| matches!(e, Event::Data(d) if d.device_name == "Sensor")),
            "data for a device no longer heard: {after:?}"
        );
        bluez.set_heard(SENSOR, true).await.unwrap();
        run.wait_value("Sensor", "temperature", Value::Int(250))
            .await;

        // bluetoothd goes away and comes back: scanning resumes by itself.
        bluez.stop_bluetoothd().await.unwrap();
        run.wait_disconnect("Sensor").await;
        bluez.start_bluetoothd().await.unwrap();
        bluez.add_device(SENSOR, "LYWSD03MMC").await.unwrap();
        bluez
            .set_manufacturer_data(SENSOR, 0x0499, &[0x00, 0x10, 0x01])
            .await
            .unwrap();
        run.wait_value("Sensor", "temperature", Value::Int(16))
            .await;

        cancel.cancel();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .unwrap();
    });
}
