//! Load benchmark of the BLE connector's advertisement mode: many beacons through the
//! connector's scan → latest-advertisement → decode → uplink path.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features ble --example ble_load -- [beacons] [adverts_per_s] [seconds] [poll_ms]
//! ```
//!
//! There is no Bluetooth here, so the beacons are the in-process radio
//! (`tbgw_connectors::ble::fake::FakeCentral`): a task makes every beacon advertise in turn,
//! `adverts_per_s` advertisements a second in total, each with new manufacturer and service
//! data. The connector has one advertisement device matched by service UUID and named
//! `${MACAddress}`, so each beacon is its own ThingsBoard device, with four keys (two
//! manufacturer-data slices, service data, RSSI). Its uplink is drained and counted. After a
//! 2-second warm-up it reports, over the measured window, this process's CPU time (user+sys
//! from `/proc/self/stat`, which includes the fake radio producing the advertisements) as a
//! percentage of one core, resident memory (`VmRSS`, peak `VmHWM`), advertisements offered,
//! records and values sent, and the beacons reported. It then times the decode path alone
//! (matching and decoding one advertisement, `AdvertisementDecoder`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::ble::central::{Advertisement, Mac};
use tbgw_connectors::ble::fake::FakeCentral;
use tbgw_connectors::ble::{AdvertisementDecoder, BleConnectorConfig, BleFactory};
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let beacons = arg(0, 1000).clamp(1, 60_000) as usize;
    let rate = arg(1, 1000).max(1);
    let secs = arg(2, 20).max(1);
    let poll = arg(3, 1000).max(50);

    let config = json!({
        "scannerTimeout": 10000,
        "devices": [{
            "name": "Beacon ${MACAddress}", "serviceUUID": "FEAA", "pollPeriod": poll,
            "telemetry": [
                {"key": "temperature", "dataSourceType": "advertisement", "valueExpression": "[0:2]", "compute": "value / 100"},
                {"key": "battery", "dataSourceType": "advertisement", "valueExpression": "[2]"},
                {"key": "count", "dataSourceType": "advertisement", "advertisementField": "serviceData", "valueExpression": "[0:4]"},
                {"key": "rssi", "dataSourceType": "advertisement", "advertisementField": "rssi"}
            ]
        }]
    });
    let radio = FakeCentral::new();
    let macs: Vec<Mac> = (0..beacons)
        .map(|i| Mac([0x40, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]))
        .collect();
    for m in &macs {
        radio.add_device(*m, None);
    }
    let spec = ConnectorSpec {
        name: "BLE".into(),
        connector_type: "ble".into(),
        file: "ble.json".into(),
        config: config.clone().into(),
    };
    let mut connector =
        BleFactory::with_central(Arc::new(radio.clone())).build(&spec, &mut Vec::new())?;
    let (mut cx, ends) = ConnectorContext::for_test("BLE");
    let mut uplink = ends.uplink;
    let cancel = ends.cancel;
    let counts = Arc::new(std::sync::Mutex::new((
        0u64,
        0u64,
        HashSet::<String>::new(),
    )));
    let c2 = counts.clone();
    tokio::spawn(async move {
        while let Some(m) = uplink.recv().await {
            if let UplinkMessage::Data { data, .. } = m {
                let mut c = c2.lock().unwrap_or_else(|p| p.into_inner());
                for d in data {
                    c.0 += 1;
                    c.1 += d.datapoints() as u64;
                    c.2.insert(d.device_name);
                }
            }
        }
    });
    tokio::spawn(async move {
        let _ = connector.run(&mut cx).await;
    });
    while radio.scans() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The beacons: `rate` advertisements a second, in batches every 10 ms.
    let svc = Uuid::from_u128(0x0000_feaa_0000_1000_8000_0080_5f9b_34fb);
    let offered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (r2, o2) = (radio.clone(), offered.clone());
    let macs2 = macs.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let start = Instant::now();
        let mut sent = 0u64;
        let mut k = 0usize;
        loop {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                let m = macs2[k % macs2.len()];
                let n = sent as u32;
                r2.advertise(m, |a| {
                    a.rssi = Some(-40 - (n % 50) as i16);
                    a.manufacturer_data
                        .insert(0x0499, vec![(n >> 8) as u8, n as u8, 90]);
                    a.service_data.insert(svc, n.to_be_bytes().to_vec());
                });
                sent += 1;
                k += 1;
            }
            o2.store(sent, std::sync::atomic::Ordering::Relaxed);
        }
    });

    let me = std::process::id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t0, c0, o0) = (
        Instant::now(),
        cpu_ticks(me),
        offered.load(std::sync::atomic::Ordering::Relaxed),
    );
    let (r0, v0) = {
        let c = counts.lock().unwrap_or_else(|p| p.into_inner());
        (c.0, c.1)
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let el = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(me) - c0) as f64 / 100.0;
    let o1 = offered.load(std::sync::atomic::Ordering::Relaxed);
    let (r1, v1, reported) = {
        let c = counts.lock().unwrap_or_else(|p| p.into_inner());
        (c.0, c.1, c.2.len())
    };
    cancel.cancel();
    println!(
        "ble_load: {beacons} beacons, {:.0} advertisements/s offered, pollPeriod {poll} ms, {secs} s measured",
        (o1 - o0) as f64 / el
    );
    println!(
        "  sent {:.0} records/s, {:.0} values/s; {reported} of {beacons} beacons reported",
        (r1 - r0) as f64 / el,
        (v1 - v0) as f64 / el
    );
    println!(
        "  CPU {:.1} % of one core (incl. the fake radio); RSS {} kB, peak {} kB",
        100.0 * cpu / el,
        status_kb(me, "VmRSS"),
        status_kb(me, "VmHWM")
    );

    // The decode path alone.
    let cfg: BleConnectorConfig = serde_json::from_value(config)?;
    let decoder = AdvertisementDecoder::new(cfg)?;
    let mut adv = Advertisement {
        address: macs[0],
        rssi: Some(-50),
        ..Advertisement::default()
    };
    adv.manufacturer_data.insert(0x0499, vec![8, 52, 90]);
    adv.service_data.insert(svc, vec![0, 0, 1, 2]);
    let n = 200_000u32;
    let t = Instant::now();
    let mut values = 0usize;
    for i in 0..n {
        adv.rssi = Some(-((i % 90) as i16));
        let (out, _) = decoder.decode(&adv);
        values += out.iter().map(|d| d.datapoints()).sum::<usize>();
    }
    let per = t.elapsed().as_secs_f64() / f64::from(n);
    println!(
        "  decode path: {:.2} µs per advertisement ({:.0} advertisements/s on one core, {values} values)",
        per * 1e6,
        1.0 / per
    );
    Ok(())
}
