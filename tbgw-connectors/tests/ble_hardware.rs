//! The BLE radio layer against a real adapter, when the machine has one (`/sys/class/bluetooth`
//! lists it) and BlueZ runs; otherwise the test says it skipped. CI machines have no Bluetooth.
//!
//! ```text
//! cargo test -p tbgw-connectors --no-default-features --features ble --test ble_hardware -- --nocapture
//! TBGW_BLE_DEVICE=4C:65:A8:DF:85:C0 TBGW_BLE_READ=00002a00-0000-1000-8000-00805f9b34fb \
//!   cargo test -p tbgw-connectors --no-default-features --features ble --test ble_hardware -- --nocapture
//! ```
//!
//! It scans for `TBGW_BLE_SCAN_SECS` (default 10) seconds and prints what it heard; with
//! `TBGW_BLE_DEVICE` it must hear that device, connect to it and print its GATT services;
//! with `TBGW_BLE_READ` it also reads that characteristic.
#![cfg(feature = "ble")]

use std::time::Duration;

use tbgw_connectors::ble::bluez::BluezCentral;
use tbgw_connectors::ble::central::{BleCentral, Mac, ScanMode};

fn adapters() -> usize {
    std::fs::read_dir("/sys/class/bluetooth").map_or(0, |d| d.count())
}

#[test]
fn a_real_adapter_scans_and_connects() {
    if adapters() == 0 {
        eprintln!(
            "SKIPPED a_real_adapter_scans_and_connects: no Bluetooth adapter on this machine \
             (/sys/class/bluetooth is empty or missing)"
        );
        return;
    }
    let secs: u64 = std::env::var("TBGW_BLE_SCAN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let want: Option<Mac> = std::env::var("TBGW_BLE_DEVICE")
        .ok()
        .map(|s| s.parse().expect("TBGW_BLE_DEVICE is a MAC address"));
    let read = std::env::var("TBGW_BLE_READ")
        .ok()
        .map(|s| uuid::Uuid::parse_str(&s).expect("TBGW_BLE_READ is a UUID"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let central = BluezCentral::new(std::env::var("TBGW_BLE_ADAPTER").ok());
        let mut scan = central
            .scan(ScanMode::Active, Duration::from_secs(5))
            .await
            .expect("scanning starts (is bluetoothd running and the adapter powered?)");
        let mut heard = std::collections::BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while let Ok(r) = tokio::time::timeout_at(deadline, scan.next()).await {
            let a = r.expect("the scan keeps running");
            heard.insert(a.address, a);
        }
        println!("heard {} device(s) in {secs} s:", heard.len());
        for a in heard.values() {
            println!(
                "  {} name={:?} rssi={:?} manufacturer={:?} services={:?}",
                a.address,
                a.local_name,
                a.rssi,
                a.manufacturer_data.keys().collect::<Vec<_>>(),
                a.services
            );
        }
        let Some(mac) = want else {
            return;
        };
        assert!(heard.contains_key(&mac), "{mac} was not heard");
        let link = central
            .connect(mac, Duration::from_secs(20))
            .await
            .expect("connects");
        let services = link.discover().await.expect("discovers");
        for s in &services {
            println!("service {}", s.uuid);
            for c in &s.characteristics {
                println!("  characteristic {} {:?}", c.uuid, c.properties);
            }
        }
        if let Some(u) = read {
            let v = link.read(u).await.expect("reads");
            println!("{u}: {v:02x?}");
        }
        link.disconnect().await;
    });
}
