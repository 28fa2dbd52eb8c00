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
use tbgw::connector::ConnectorFactory;
use tbgw::model::Value;
use tbgw::test_util::harness::forward_up;
use tbgw::test_util::{BluezMock, TestRun, Up};
use tbgw_connectors::ble::BleFactory;

const WAIT: Duration = Duration::from_secs(40);
const SENSOR: &str = "4C:65:A8:DF:85:C0";
const OTHER: &str = "11:22:33:44:55:66";

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
        let connector = BleFactory::new()
            .build(&spec, &mut Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut run = TestRun::start("BLE", connector, WAIT, |uplink, tx| {
            forward_up(uplink, tx, false)
        });

        // By MAC (configured in lower case), slices as JSON integers, name and RSSI.
        run.wait_value("Sensor", "temperature", Value::Int(0x0102))
            .await;
        run.wait_value("Sensor", "battery", Value::Int(0xff)).await;
        run.wait_value("Sensor", "name", Value::String("LYWSD03MMC".into()))
            .await;
        assert!(matches!(
            run.value_of("Sensor", "rssi").await,
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
        run.wait_for(|u| matches!(u, Up::Disconnect(d) if d == "Sensor"))
            .await;
        let after = run.drain_for(Duration::from_secs(2)).await;
        assert!(
            !after
                .iter()
                .any(|e| matches!(e, Up::Data(d) if d.device_name == "Sensor")),
            "data for a device no longer heard: {after:?}"
        );
        bluez.set_heard(SENSOR, true).await.unwrap();
        run.wait_value("Sensor", "temperature", Value::Int(250))
            .await;

        // bluetoothd goes away and comes back: scanning resumes by itself.
        bluez.stop_bluetoothd().await.unwrap();
        run.wait_for(|u| matches!(u, Up::Disconnect(d) if d == "Sensor"))
            .await;
        bluez.start_bluetoothd().await.unwrap();
        bluez.add_device(SENSOR, "LYWSD03MMC").await.unwrap();
        bluez
            .set_manufacturer_data(SENSOR, 0x0499, &[0x00, 0x10, 0x01])
            .await
            .unwrap();
        run.wait_value("Sensor", "temperature", Value::Int(16))
            .await;

        run.stop().await;
    });
}
