//! Load benchmark of the BACnet connector: bacpypes3 devices with many analog values
//! polled every second, and the time from a change to its COV notification reaching the
//! uplink.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features bacnet --example bacnet_load -- [devices] [points] [seconds]
//! ```
//!
//! Each device is `tests/peers/bacnet_device.py --points N` (bacpypes3, on its own loopback
//! port) with `points` analog values, all read as time series every second (ReadPropertyMultiple,
//! 56 properties per request for a 1476-byte max APDU). One more device subscribes to COV of
//! its `setpoint`: every second the benchmark writes a new setpoint with an RPC and measures
//! until the COV notification's value reaches the uplink (write + notification).
//!
//! This process runs only the connector (its uplink is drained and counted, as the gateway's
//! storage would take it); the devices are other processes. After a warm-up it reports, over
//! the measured window, its own CPU time as a percentage of one core, its resident memory
//! (`VmRSS`, peak `VmHWM`), the values received per second and the COV latencies.

use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::downlink::{Downlink, RpcRequest, RpcResponder};
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::test_util::{free_udp_port, PythonPeer};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::bacnet::BacnetFactory;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/bacnet_device.py");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let n_devices = arg(0, 1) as usize;
    let points = arg(1, 5000) as usize;
    let secs = arg(2, 20);

    let mut peers = Vec::new();
    let mut devices = Vec::new();
    for i in 0..n_devices {
        let port = free_udp_port();
        let mut p = PythonPeer::spawn([
            PEER.to_string(),
            "--name".into(),
            format!("load{i}"),
            "--instance".into(),
            (2000 + i).to_string(),
            "--address".into(),
            format!("127.0.0.1/8:{port}"),
            "--points".into(),
            points.to_string(),
        ])?;
        p.wait_output("bacnet device up", Duration::from_secs(120))
            .await?;
        peers.push(p);
        devices.push(json!({
            "deviceInfo": {"deviceNameExpression": "load${objectId}"},
            "address": format!("127.0.0.1:{port}"), "pollPeriod": 1000,
            "timeseries": [{"key": "p", "objectType": "analogValue",
                            "objectId": format!("1000-{}", 1000 + points - 1),
                            "propertyId": "presentValue"}]
        }));
    }
    let cov_port = free_udp_port();
    let mut p = PythonPeer::spawn([
        PEER.to_string(),
        "--name".into(),
        "cov".into(),
        "--instance".into(),
        "3000".into(),
        "--address".into(),
        format!("127.0.0.1/8:{cov_port}"),
    ])?;
    p.wait_output("bacnet device up", Duration::from_secs(60))
        .await?;
    peers.push(p);
    devices.push(json!({
        "deviceInfo": {"deviceNameExpression": "cov"},
        "address": format!("127.0.0.1:{cov_port}"), "pollPeriod": 3_600_000,
        "subscribeCov": true,
        "timeseries": [{"key": "setpoint", "objectType": "analogOutput", "objectId": 1}],
        "serverSideRpc": [{"method": "write_setpoint", "requestType": "writeProperty", "objectType": "analogOutput",
                           "objectId": 1, "propertyId": "presentValue", "priority": 8}]
    }));
    let spec = ConnectorSpec {
        name: "BACnet".into(),
        connector_type: "bacnet".into(),
        file: "bacnet.json".into(),
        config: json!({
            "application": {"host": "127.0.0.1", "port": free_udp_port(), "objectIdentifier": 599},
            "devicesDiscoverPeriodSeconds": 5,
            "devices": devices
        })
        .into(),
    };
    let mut connector = BacnetFactory::new().build(&spec, &mut Vec::new())?;
    let (mut cx, mut ends) = ConnectorContext::for_test("BACnet");
    let stats = cx.stats().clone();
    let run = tokio::spawn(async move { connector.run(&mut cx).await });

    let me = std::process::id();
    let mut values = 0u64;
    let warmup = Instant::now() + Duration::from_secs(8);
    let mut window: Option<(Instant, u64, u64)> = None;
    let end = warmup + Duration::from_secs(secs);
    let mut next_write = warmup;
    let mut written: Option<(f64, Instant)> = None;
    let mut latencies = Vec::new();
    let mut setpoint = 100.0;
    loop {
        let now = Instant::now();
        if window.is_none() && now >= warmup {
            window = Some((now, cpu_ticks(me), values));
        }
        if now >= end {
            break;
        }
        if now >= next_write && written.is_none() {
            setpoint += 1.0;
            let (responder, _rx) = RpcResponder::new();
            ends.downlink
                .send(Downlink::Rpc(RpcRequest {
                    device: Some("cov".into()),
                    id: 1,
                    method: "write_setpoint".into(),
                    params: json!(setpoint),
                    responder,
                }))
                .await?;
            written = Some((setpoint, Instant::now()));
            next_write = now + Duration::from_secs(1);
        }
        match tokio::time::timeout(Duration::from_millis(20), ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Data { data, .. })) => {
                for d in data {
                    values += d.datapoints() as u64;
                    if d.device_name == "cov" {
                        let v = d
                            .telemetry
                            .iter()
                            .flat_map(|e| e.values.iter())
                            .find(|(k, _)| k == "setpoint")
                            .map(|(_, v)| v.to_json());
                        if let (Some(v), Some((want, t))) = (v, written) {
                            if v.as_f64() == Some(want) {
                                latencies.push(t.elapsed());
                                written = None;
                            }
                        }
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {}
        }
        if let Some((_, t)) = written {
            if t.elapsed() > Duration::from_secs(5) {
                written = None;
            }
        }
    }
    let (t0, cpu0, values0) = window.ok_or("no measured window")?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(me) - cpu0) as f64 / 100.0 / elapsed * 100.0;
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bacnet_load: {n_devices} device(s) x {points} points every 1 s, {elapsed:.1} s measured"
    );
    println!(
        "  values/s {:.0} (expected {})",
        (values - values0) as f64 / elapsed,
        n_devices * points
    );
    println!(
        "  CPU {cpu:.1} % of one core, RSS {} kB (peak {} kB)",
        status_kb(me, "VmRSS"),
        status_kb(me, "VmHWM")
    );
    if !latencies.is_empty() {
        println!(
            "  write -> COV notification -> uplink: {} samples, median {:.1} ms, max {:.1} ms",
            latencies.len(),
            ms(latencies[latencies.len() / 2]),
            ms(latencies[latencies.len() - 1])
        );
    }
    println!(
        "  polls answered {}, errors {}, convert errors {}",
        stats.messages_received(),
        stats.errors(),
        stats.convert_errors()
    );
    ends.cancel.cancel();
    let _ = run.await;
    drop(peers);
    Ok(())
}
