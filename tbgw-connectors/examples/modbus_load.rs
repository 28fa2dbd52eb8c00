//! Load benchmark of the Modbus connector, with the gateway measured as its own process.
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
//! Two processes:
//!
//! * this one (the harness) serves the devices with tbgw's slave mode, runs a local mosquitto
//!   and a ThingsBoard stand-in on it, and writes the gateway's configuration files
//!   (`tb_gateway.json` with memory storage, `modbus.json`) into a temporary directory;
//! * a copy of this binary started with `--gateway <tb_gateway.json>` is the gateway alone,
//!   loaded and run the way `tbgw run --config` does it (same loader, same connector
//!   factories, same runtime: multi-threaded with one worker per core).
//!
//! The harness reads the gateway's CPU time (user+sys, `/proc/<pid>/stat`) over the measured
//! window and its peak resident memory (`VmHWM` in `/proc/<pid>/status`, whole life of the
//! process). The gateway reports its poll-start lateness (jitter) for the same window over its
//! stdout when asked on its stdin.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::test_util::{Mosquitto, TbStandIn};
use tbgw::Gateway;
use tbgw_connectors::modbus::master::late_quantile_of;
use tbgw_connectors::modbus::{poll_metrics, ModbusFactory};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn spec(config: serde_json::Value) -> ConnectorSpec {
    ConnectorSpec {
        name: "Modbus".into(),
        connector_type: "modbus".into(),
        file: "modbus.json".into(),
        config: config.into(),
    }
}

/// The two scenarios: (devices, poll period in ms, datapoints of each device).
fn scenario(mode: &str) -> (u16, u64, Vec<serde_json::Value>) {
    match mode {
        "b3" => (
            500,
            1000,
            (0..30)
                .map(|a| json!({"tag": format!("r{a}"), "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": a}))
                .collect(),
        ),
        _ => (
            1,
            100,
            (0..500)
                .map(|a| json!({"tag": format!("u{a}"), "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": a}))
                .chain((0..250).map(|k| json!({"tag": format!("f{k}"), "type": "32float", "functionCode": 3, "objectsCount": 2, "address": 500 + 2 * k})))
                .collect(),
        ),
    }
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Harness: serve `n` slaves on consecutive ports from `base`, with tbgw's slave mode.
fn serve(base: u16, n: u16) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let cfg = json!({"slave": {"type": "tcp", "host": "127.0.0.1", "port": base + i, "unitId": 0,
                "deviceName": format!("sim{i}"), "values": {"holding_registers": {"timeseries": [
                    {"tag": "seed", "type": "16uint", "address": 0, "objectsCount": 1, "value": 1}]}}}});
            let mut ignored = Vec::new();
            let mut c = ModbusFactory::new()
                .build(&spec(cfg), &mut ignored)
                .expect("valid");
            let (mut cx, ends) = ConnectorContext::for_test("sim");
            tokio::spawn(async move {
                let _keep = ends;
                let _ = c.run(&mut cx).await;
            })
        })
        .collect()
}

/// A base port with `n` free consecutive TCP ports after it.
fn free_port_range(n: u16) -> u16 {
    let mut base = 20000 + (std::process::id() % 2000) as u16 * 16;
    'search: loop {
        for i in 0..n {
            if std::net::TcpListener::bind(("127.0.0.1", base + i)).is_err() {
                base = base.wrapping_add(n + 1).max(20000);
                if base > 60000 - n {
                    base = 20000;
                }
                continue 'search;
            }
        }
        return base;
    }
}

/// The configuration files of the gateway under test: `tb_gateway.json` (ThingsBoard on the
/// local mosquitto, memory storage) and `modbus.json` (one master slave per device).
fn write_config(
    dir: &std::path::Path,
    mode: &str,
    broker_port: u16,
    base: u16,
) -> anyhow::Result<std::path::PathBuf> {
    let (devices, period, points) = scenario(mode);
    let slaves: Vec<serde_json::Value> = (0..devices)
        .map(|i| json!({"type": "tcp", "host": "127.0.0.1", "port": base + i, "unitId": 1, "deviceName": format!("dev{i}"),
            "pollPeriod": period, "timeout": 1, "timeseries": points}))
        .collect();
    std::fs::write(
        dir.join("modbus.json"),
        serde_json::to_vec_pretty(&json!({"master": {"slaves": slaves}}))?,
    )?;
    let main = dir.join("tb_gateway.json");
    std::fs::write(
        &main,
        serde_json::to_vec_pretty(&json!({
            "thingsboard": {"host": "127.0.0.1", "port": broker_port, "qos": 1,
                "security": {"type": "accessToken", "accessToken": "token"},
                "sessionLimitsTimeoutMs": 500},
            "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
            "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
        }))?,
    )?;
    Ok(main)
}

/// Gateway mode: what `tbgw run --config <file>` does (same loading, same runtime: one worker
/// thread per core), plus a small command loop on stdin for the harness.
fn gateway_main(config: &std::path::Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let loaded = tbgw::config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let gw = Gateway::builder()
            .factories(tbgw_connectors::factories())
            .config(loaded)
            .build()?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(gw.run(async move {
            let _ = stop_rx.await;
        }));
        // Commands from the harness: `mark` starts the window, `report` prints it, EOF stops.
        let m = poll_metrics();
        let snap = || {
            (
                m.polls.load(Relaxed),
                m.requests.load(Relaxed),
                m.missed.load(Relaxed),
                m.late_sum_us.load(Relaxed),
                m.late_histogram(),
            )
        };
        let mut mark = snap();
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut out = tokio::io::stdout();
        while let Ok(Some(line)) = lines.next_line().await {
            match line.trim() {
                "mark" => mark = snap(),
                "report" => {
                    let now = snap();
                    let hist: Vec<u64> = now.4.iter().zip(&mark.4).map(|(a, b)| a - b).collect();
                    let polls = now.0 - mark.0;
                    let report = json!({
                        "polls": polls,
                        "requests": now.1 - mark.1,
                        "missed": now.2 - mark.2,
                        "late_mean_us": (now.3 - mark.3) / polls.max(1),
                        "late_p50_us": late_quantile_of(&hist, 0.5),
                        "late_p99_us": late_quantile_of(&hist, 0.99),
                        "late_max_us": m.late_max_us.load(Relaxed),
                    });
                    out.write_all(format!("{report}\n").as_bytes()).await?;
                    out.flush().await?;
                }
                _ => break,
            }
        }
        let _ = stop.send(());
        let _ = run.await;
        Ok(())
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn harness(mode: String, secs: u64) -> anyhow::Result<()> {
    let (devices, period, _) = scenario(&mode);
    let base = free_port_range(devices);
    let servers = serve(base, devices);
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
    // `MODBUS_LOAD_WRAPPER="heaptrack -o /tmp/gw"` runs the gateway under a profiler (the
    // figures then include the wrapper's process, not the gateway's).
    let exe = std::env::current_exe()?;
    let wrapper: Vec<String> = std::env::var("MODBUS_LOAD_WRAPPER")
        .map(|w| w.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mut cmd = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = tokio::process::Command::new(prog);
            c.args(args).arg(&exe);
            c
        }
        None => tokio::process::Command::new(&exe),
    };
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), &mode, broker.port(), base)?;
    let mut child = cmd
        .arg("--gateway")
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("gateway exited"))?;
    let mut to_gw = child.stdin.take().expect("piped");
    let mut from_gw = BufReader::new(child.stdout.take().expect("piped")).lines();

    // Warm-up: every device connected and polled, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    to_gw.write_all(b"mark\n").await?;
    to_gw.flush().await?;
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    let mut rss_max = 0;
    // The stand-in records every message it receives; count and forget them as we go.
    let mut tele = 0;
    tb.clear();
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tele += tb.messages_on("v1/gateway/telemetry").len();
        tb.clear();
        rss_max = rss_max.max(status_kb(pid, "VmRSS"));
    }
    let cpu_s = (cpu_ticks(pid) - c0) as f64 / 100.0;
    let wall = t0.elapsed().as_secs_f64();
    let (hwm, rss, anon, nthreads) = (
        status_kb(pid, "VmHWM"),
        status_kb(pid, "VmRSS"),
        status_kb(pid, "RssAnon"),
        threads(pid),
    );
    to_gw.write_all(b"report\n").await?;
    to_gw.flush().await?;
    // The report is the first JSON object line (a wrapper may print its own lines).
    let report: serde_json::Value = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(l)) = from_gw.next_line().await {
            if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(&l) {
                return Some(v);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| anyhow::anyhow!("the gateway process did not report"))?;
    drop(to_gw);
    let _ = tokio::time::timeout(Duration::from_secs(12), child.wait()).await;
    let _ = child.kill().await;
    for s in servers {
        s.abort();
    }

    let polls = report["polls"].as_u64().unwrap_or(0);
    let reqs = report["requests"].as_u64().unwrap_or(0);
    println!(
        "mode {mode}: {devices} device(s), {} registers each, period {period} ms, {wall:.1} s measured",
        if mode == "b3" { 30 } else { 1000 }
    );
    println!(
        "gateway process (pid {pid}, {nthreads} threads): CPU {:.2} % of one core ({cpu_s:.2} s user+sys)",
        100.0 * cpu_s / wall
    );
    println!(
        "gateway RSS: peak (VmHWM) {hwm} KB, now {rss} KB (anonymous {anon} KB), max sampled {rss_max} KB"
    );
    println!(
        "polls: {polls} ({:.1}/s), read requests: {reqs} ({:.1} per poll), missed cycles: {}",
        polls as f64 / wall,
        reqs as f64 / polls.max(1) as f64,
        report["missed"]
    );
    println!(
        "poll-start lateness (measured window): mean {} us, p50 <= {} us, p99 <= {} us; max (whole run) {} us",
        report["late_mean_us"], report["late_p50_us"], report["late_p99_us"], report["late_max_us"]
    );
    println!("telemetry publishes seen by the ThingsBoard stand-in: {tele}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--gateway") {
        let config = args
            .get(2)
            .cloned()
            .unwrap_or_else(|| "tb_gateway.json".into());
        return gateway_main(std::path::Path::new(&config));
    }
    let mode = args.get(1).cloned().unwrap_or_else(|| "b2".into());
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    harness(mode, secs)
}
