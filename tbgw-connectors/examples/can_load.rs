//! Load benchmark of the CAN connector: frames decoded per second and the connector's CPU.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features can --example can_load -- [frames_per_s] [seconds] [devices] [tick_us]
//! ```
//!
//! The bus is the in-process fake network (this machine has no kernel CAN). `devices` ECUs
//! (default 100, standard ids 0x100..) each send a frame carrying four values (an int with an
//! expression, a signed little-endian int, a bool, raw hex) behind a `command` filter, paced
//! to `frames_per_s` in total (default 10,000) from a thread of their own, in bursts every
//! `tick_us` microseconds (default 1000: ten frames per burst at 10,000 frames/s; the
//! connector decodes the frames waiting at each wake-up together, so longer bursts cost less). The connector runs
//! alone on another thread (a current-thread runtime), and its uplink is drained on the main
//! thread as the gateway's storage would take it. After a 3-second warm-up it reports, over
//! the measured window, the CPU time of the connector's thread (user+sys from
//! `/proc/<tid>/stat`) as a percentage of one core, frames and values per second, frames
//! lost, and the process's resident memory (`VmRSS`, peak `VmHWM`).
//!
//! On a real interface each frame also costs the connector one `recvmsg` on its SocketCAN
//! socket, which this fake does not.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{Connector, ConnectorContext, ConnectorSpec};
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::can::fake::FakeCan;
use tbgw_connectors::can::{CanBus, CanFactory, CanFrame};

fn thread_id() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()?.parse().ok()))
        .unwrap_or(0)
}

/// Counters at the start of the measured window.
struct Snapshot {
    at: Instant,
    ticks: u64,
    run_ns: u64,
    wakeups: u64,
    records: u64,
    values: u64,
    frames: u64,
    sent: u64,
}

/// Nanoseconds a thread has run (`/proc/<tid>/schedstat`, the scheduler's own account; the
/// tick-sampled user+sys of `/proc/<tid>/stat` overcharges a thread woken by timers).
fn run_ns(tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let rate = arg(0, 10_000);
    let secs = arg(1, 20);
    let devices = arg(2, 100).clamp(1, 1000) as u32;
    let tick_us = arg(3, 1000).max(100);

    let net = FakeCan::new();
    net.add_interface("can0", false);
    let list: Vec<serde_json::Value> = (0..devices)
        .map(|i| {
            json!({"name": format!("ECU {i}"), "timeseries": [
                {"key": "speed", "nodeId": 0x100 + i, "command": "0:1:big:1", "value": "1:2:big:int", "expression": "value / 4"},
                {"key": "temp", "nodeId": 0x100 + i, "command": "0:1:big:1", "value": "3:2:little:int:signed"},
                {"key": "on", "nodeId": 0x100 + i, "command": "0:1:big:1", "value": "5:1:bool"},
                {"key": "raw", "nodeId": 0x100 + i, "command": "0:1:big:1", "value": "6:2:raw"}
            ]})
        })
        .collect();
    let spec = ConnectorSpec {
        name: "CAN".into(),
        connector_type: "can".into(),
        file: "can.json".into(),
        config: json!({"channel": "can0", "devices": list}).into(),
    };
    let mut connector = CanFactory::new()
        .build_can(&spec, &mut Vec::new())?
        .with_opener(Arc::new(net.clone()));

    // The decoder alone (no bus, no threads): one million frames.
    let decoder = connector.plan().decoder.clone();
    let frames: Vec<CanFrame> = (0..devices)
        .map(|d| {
            CanFrame::new(
                0x100 + d,
                false,
                false,
                false,
                vec![1, 2, 3, 4, 5, 1, 0xAB, 0xCD],
            )
            .expect("frame")
        })
        .collect();
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let t = Instant::now();
    let n = 1_000_000;
    for i in 0..n {
        decoder.decode(&frames[i % frames.len()], 1, &mut out, &mut errors);
        out.clear();
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "decoder alone: {:.2} µs per frame ({:.2} % of one core at {rate} frames/s)",
        per * 1e6,
        per * rate as f64 * 100.0
    );
    let (mut cx, mut ends) = ConnectorContext::for_test("CAN");
    let stats = cx.stats().clone();

    // The connector, alone on its thread.
    let tid = Arc::new(AtomicU32::new(0));
    let t = tid.clone();
    let cancel = ends.cancel.clone();
    let connector_thread =
        std::thread::Builder::new()
            .name("connector".into())
            .spawn(move || {
                t.store(thread_id(), Ordering::SeqCst);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move { connector.run(&mut cx).await })
            })?;

    // The ECUs: one socket, frames paced every 10 ms.
    let sent = Arc::new(AtomicU64::new(0));
    let s = sent.clone();
    let net2 = net.clone();
    let stop_ecus = ends.cancel.clone();
    let ecu_thread = std::thread::Builder::new()
        .name("ecus".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut sock = net2.socket("can0", false).expect("can0");
                let mut tick = tokio::time::interval(Duration::from_micros(tick_us));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let per_tick = (rate * tick_us / 1_000_000).max(1);
                let mut n: u64 = 0;
                while !stop_ecus.is_cancelled() {
                    tick.tick().await;
                    for _ in 0..per_tick {
                        let dev = (n % u64::from(devices)) as u32;
                        let v = (n as u16).to_be_bytes();
                        let f = CanFrame::new(
                            0x100 + dev,
                            false,
                            false,
                            false,
                            vec![1, v[0], v[1], v[1], v[0], (n & 1) as u8, 0xAB, 0xCD],
                        )
                        .expect("frame");
                        if sock.send(&f).await.is_err() {
                            return;
                        }
                        n += 1;
                        s.store(n, Ordering::Relaxed);
                    }
                }
            });
        })?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let me = std::process::id();
    let (records, values) = rt.block_on(async {
        let mut records = 0u64;
        let mut values = 0u64;
        let warmup = Instant::now() + Duration::from_secs(3);
        let end = warmup + Duration::from_secs(secs);
        let mut window: Option<Snapshot> = None;
        let mut result = (0, 0);
        loop {
            let now = Instant::now();
            if window.is_none() && now >= warmup {
                let t = tid.load(Ordering::SeqCst);
                window = Some(Snapshot {
                    at: now,
                    ticks: cpu_ticks(t),
                    run_ns: run_ns(t),
                    wakeups: status_kb(t, "voluntary_ctxt_switches"),
                    records,
                    values,
                    frames: stats.stats().messages_received(),
                    sent: sent.load(Ordering::Relaxed),
                });
            }
            if now >= end {
                let Snapshot {
                    at: t0,
                    ticks: c0,
                    run_ns: n0,
                    wakeups: w0,
                    records: r0,
                    values: v0,
                    frames: m0,
                    sent: s0,
                } = window.expect("window");
                let dt = t0.elapsed().as_secs_f64();
                let cpu = (cpu_ticks(tid.load(Ordering::SeqCst)) - c0) as f64 / 100.0;
                let frames = stats.stats().messages_received() - m0;
                let offered = sent.load(Ordering::Relaxed) - s0;
                println!(
                    "offered {:.0} frames/s, decoded {:.0} frames/s, {:.0} records/s, {:.0} values/s",
                    offered as f64 / dt,
                    frames as f64 / dt,
                    (records - r0) as f64 / dt,
                    (values - v0) as f64 / dt
                );
                println!(
                    "connector thread CPU (user+sys ticks) {:.2} % of one core ({:.2} µs per frame); conversion errors {}; lost {:?}",
                    100.0 * cpu / dt,
                    1e6 * cpu / frames.max(1) as f64,
                    stats.stats().convert_errors(),
                    net.lost("can0")
                );
                let ns = (run_ns(tid.load(Ordering::SeqCst)) - n0) as f64 / 1e9;
                println!(
                    "connector thread run time (schedstat) {:.2} % of one core ({:.2} µs per frame)",
                    100.0 * ns / dt,
                    1e6 * ns / frames.max(1) as f64
                );
                println!(
                    "connector thread wake-ups {:.0}/s",
                    (status_kb(tid.load(Ordering::SeqCst), "voluntary_ctxt_switches") - w0) as f64 / dt
                );
                println!(
                    "process RSS {} kB (peak {} kB)",
                    status_kb(me, "VmRSS"),
                    status_kb(me, "VmHWM")
                );
                result = (records, values);
                break;
            }
            match tokio::time::timeout(Duration::from_millis(100), ends.uplink.recv()).await {
                Ok(Some(UplinkMessage::Data { data, .. })) => {
                    for d in data {
                        records += 1;
                        values += d.datapoints() as u64;
                    }
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            }
        }
        result
    });
    let _ = (records, values);
    ends.cancel.cancel();
    cancel.cancel();
    // Drain so the connector is not stuck on a full uplink while it stops.
    rt.block_on(async {
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(200), ends.uplink.recv()).await
        {}
    });
    let _ = ecu_thread.join();
    let _ = connector_thread.join();
    Ok(())
}
