//! Load benchmark of the Modbus connector.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features modbus --example modbus_load -- b2 30
//! cargo run --release -p tbgw-connectors --no-default-features --features modbus --example modbus_load -- b3 30
//! ```
//!
//! * `b2`: one Modbus TCP device, 1,000 holding registers (500 `16uint` + 250 `32float`)
//!   polled every 100 ms.
//! * `b3`: 500 Modbus TCP devices (one connection each) with 30 registers each, polled every
//!   second.
//!
//! The devices are served by a child process (this binary with `--serve`), running tbgw's
//! slave mode, so the figures below belong to the gateway alone: a real `Gateway` with the
//! connector, memory storage and a ThingsBoard stand-in on a local mosquitto. Prints the
//! gateway process's CPU (user+sys from /proc/self/stat), RSS and poll-start lateness.

use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::{Mosquitto, TbStandIn};
use tbgw::{Gateway, TbOptions};
use tbgw_connectors::modbus::{poll_metrics, ModbusFactory};

fn spec(config: serde_json::Value) -> ConnectorSpec {
    ConnectorSpec {
        name: "Modbus".into(),
        connector_type: "modbus".into(),
        file: "modbus.json".into(),
        config,
    }
}

fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12) // utime + stime (fields 14 and 15)
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Child mode: serve `n` slaves on consecutive ports.
async fn serve(base: u16, n: u16) {
    let mut handles = Vec::new();
    for i in 0..n {
        let cfg = json!({"slave": {"type": "tcp", "host": "127.0.0.1", "port": base + i, "unitId": 0,
            "deviceName": format!("sim{i}"), "values": {"holding_registers": {"timeseries": [
                {"tag": "seed", "type": "16uint", "address": 0, "objectsCount": 1, "value": 1}]}}}});
        let mut ignored = Vec::new();
        let mut c = ModbusFactory::new()
            .build(&spec(cfg), &mut ignored)
            .expect("valid");
        let (mut cx, ends) = ConnectorContext::for_test("sim");
        handles.push(tokio::spawn(async move {
            let _keep = ends;
            let _ = c.run(&mut cx).await;
        }));
    }
    futures_util::future::join_all(handles).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        serve(args[2].parse()?, args[3].parse()?).await;
        return Ok(());
    }
    let mode = args.get(1).cloned().unwrap_or_else(|| "b2".into());
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let (devices, period, points): (u16, u64, Vec<serde_json::Value>) = match mode.as_str() {
        "b3" => (500, 1000, (0..30).map(|a| json!({"tag": format!("r{a}"), "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": a})).collect()),
        _ => (1, 100, (0..500).map(|a| json!({"tag": format!("u{a}"), "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": a}))
            .chain((0..250).map(|k| json!({"tag": format!("f{k}"), "type": "32float", "functionCode": 3, "objectsCount": 2, "address": 500 + 2 * k})))
            .collect()),
    };
    let base = 31000 + (std::process::id() % 1000) as u16 * 20;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--serve", &base.to_string(), &devices.to_string()])
        .kill_on_drop(true)
        .spawn()?;
    for i in 0..devices {
        while tokio::net::TcpStream::connect(("127.0.0.1", base + i))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let broker = Mosquitto::start().await?;
    let tb = TbStandIn::connect(broker.port()).await?;
    let slaves: Vec<serde_json::Value> = (0..devices)
        .map(|i| json!({"type": "tcp", "host": "127.0.0.1", "port": base + i, "unitId": 1, "deviceName": format!("dev{i}"),
            "pollPeriod": period, "timeout": 1, "timeseries": points}))
        .collect();
    let mut ignored = Vec::new();
    let conn = ModbusFactory::new()
        .build(&spec(json!({"master": {"slaves": slaves}})), &mut ignored)
        .expect("valid");
    let mut opts = TbOptions::access_token("127.0.0.1", broker.port(), "token");
    opts.session_limits_timeout = Duration::from_millis(500);
    let gw = Gateway::builder()
        .thingsboard(opts)
        .connector("Modbus", "modbus", conn)
        .build()?;
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(gw.run(async move {
        let _ = stop_rx.await;
    }));
    // Warm-up: every device connected and polled, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = poll_metrics();
    let (polls0, req0, missed0) = (
        m.polls.load(std::sync::atomic::Ordering::Relaxed),
        m.requests.load(std::sync::atomic::Ordering::Relaxed),
        m.missed.load(std::sync::atomic::Ordering::Relaxed),
    );
    let t0 = Instant::now();
    let c0 = cpu_ticks();
    let mut rss_max = 0;
    // The stand-in records every message it receives; count and forget them as we go so its
    // memory does not count as the gateway's.
    let mut tele = 0;
    tb.clear();
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tele += tb.messages_on("v1/gateway/telemetry").len();
        tb.clear();
        rss_max = rss_max.max(rss_kb());
    }
    let cpu_s = (cpu_ticks() - c0) as f64 / 100.0;
    let wall = t0.elapsed().as_secs_f64();
    let polls = m.polls.load(std::sync::atomic::Ordering::Relaxed) - polls0;
    let reqs = m.requests.load(std::sync::atomic::Ordering::Relaxed) - req0;
    let missed = m.missed.load(std::sync::atomic::Ordering::Relaxed) - missed0;
    println!("mode {mode}: {devices} device(s), {} registers each, period {period} ms, {wall:.1} s measured", if mode == "b3" { 30 } else { 1000 });
    println!(
        "gateway CPU: {:.2} % of one core ({cpu_s:.2} s user+sys)",
        100.0 * cpu_s / wall
    );
    println!("gateway RSS: {} KB now, {} KB max", rss_kb(), rss_max);
    println!(
        "polls: {polls} ({:.1}/s), read requests: {reqs} ({:.1} per poll), missed cycles: {missed}",
        polls as f64 / wall,
        reqs as f64 / polls.max(1) as f64
    );
    println!(
        "poll-start lateness (whole run): mean {} us, p50 <= {} us, p99 <= {} us, max {} us",
        m.late_sum_us.load(std::sync::atomic::Ordering::Relaxed)
            / m.polls.load(std::sync::atomic::Ordering::Relaxed).max(1),
        m.late_quantile_us(0.5),
        m.late_quantile_us(0.99),
        m.late_max_us.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("telemetry publishes seen by the ThingsBoard stand-in: {tele}");
    let _ = stop.send(());
    let _ = run.await;
    let _ = child.kill().await;
    Ok(())
}
