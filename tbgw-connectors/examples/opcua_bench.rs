//! OPC-UA connector benchmark: N tags on one asyncua server (tests/peers/opcua_server.py), all
//! changing every `period` seconds, collected by subscription and delivered through mosquitto
//! to a ThingsBoard stand-in; prints delivered values/s against the values the server changed,
//! and the gateway's CPU and RSS.
//!
//! ```text
//! bash .ci/install   # once: the asyncua peer venv and mosquitto
//! cargo run --release -p tbgw-connectors --no-default-features --features opcua \
//!     --example opcua_bench -- [tags=1000] [period=0.1] [seconds=30]
//! ```
//!
//! Three processes: the Python server, this process (the gateway only: OPC-UA client,
//! storage, MQTT client to mosquitto), and a copy of this program in `--standin` mode playing
//! ThingsBoard and counting the values it receives. CPU and RSS are this process's own
//! (`/proc/self/stat`, `/proc/self/status`), so neither the server nor the stand-in is counted.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorFactory, ConnectorSpec};
use tbgw::test_util::{free_tcp_port, Mosquitto, PythonPeer, TbStandIn};
use tbgw::{Gateway, TbOptions};
use tbgw_connectors::opcua::OpcUaFactory;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/opcua_server.py");

/// (user + system CPU seconds, RSS kB, peak RSS kB) of this process.
fn usage() -> (f64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3; utime and stime are fields 14 and 15.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let cpu = (ticks(11) + ticks(12)) as f64 / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (cpu, kb("VmRSS:"), kb("VmHWM:"))
}

/// Stand-in mode: counts telemetry values and prints the running total every 200 ms.
async fn standin(port: u16) -> anyhow::Result<()> {
    let tb = TbStandIn::connect(port).await?;
    println!("standin ready");
    let mut total = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for m in tb.messages_on("v1/gateway/telemetry") {
            let body: Json = serde_json::from_str(&m.text()).unwrap_or(Json::Null);
            if let Some(devs) = body.as_object() {
                for entries in devs.values() {
                    for e in entries.as_array().into_iter().flatten() {
                        total += e["values"].as_object().map_or(0, |v| v.len() as u64);
                    }
                }
            }
        }
        tb.clear();
        println!("delivered {total}");
    }
}

/// The server's latest tick (printed every 10 ticks).
fn ticks(peer: &PythonPeer) -> u64 {
    peer.log()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("tick ").and_then(|t| t.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--standin") {
        return standin(args[2].parse()?).await;
    }
    let tags: usize = args.get(1).map_or(Ok(1000), |a| a.parse())?;
    let period: f64 = args.get(2).map_or(Ok(0.1), |a| a.parse())?;
    let seconds: u64 = args.get(3).map_or(Ok(30), |a| a.parse())?;

    let port = free_tcp_port();
    let mut peer = PythonPeer::spawn([
        PEER.to_string(),
        "--port".into(),
        port.to_string(),
        "--devices".into(),
        "1".into(),
        "--tags".into(),
        tags.to_string(),
        "--period".into(),
        period.to_string(),
    ])?;
    peer.wait_output("ready", Duration::from_secs(120)).await?;
    let broker = Mosquitto::start().await?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--standin", &broker.port().to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let delivered = Arc::new(AtomicU64::new(0));
    let out = child.stdout.take().expect("piped");
    let d = delivered.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line == "standin ready" {
                let _ = ready_tx.send(());
            } else if let Some(n) = line.strip_prefix("delivered ") {
                d.store(n.parse().unwrap_or(0), Ordering::Relaxed);
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(15))?;

    let timeseries: Vec<Json> = (0..tags)
        .map(|t| json!({"key": format!("tag{t}"), "type": "path", "value": format!("${{Tag{t}}}")}))
        .collect();
    let spec = ConnectorSpec {
        name: "OPC-UA".into(),
        connector_type: "opcua".into(),
        file: std::env::temp_dir().join("tbgw-opcua-bench/opcua.json"),
        config: json!({
            "server": {"url": format!("opc.tcp://127.0.0.1:{port}/tbgw/"), "enableSubscriptions": true,
                       "subCheckPeriodInMillis": 100, "timeoutInMillis": 10000},
            "mapping": [{
                "deviceNodePattern": "Root\\.Objects\\.Device1",
                "deviceInfo": {"deviceNameExpression": "Bench Device", "deviceNameExpressionSource": "constant"},
                "timeseries": timeseries
            }]
        }),
    };
    let mut ignored = Vec::new();
    let connector = OpcUaFactory::new().build(&spec, &mut ignored)?;
    let dir = tempfile::tempdir()?;
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", broker.port(), "token"))
        .registry_dir(dir.path())
        .connector("OPC-UA", "opcua", connector)
        .build()?;
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gw = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));

    // Warm up: wait for the first values, then 3 s more.
    let start = Instant::now();
    while delivered.load(Ordering::Relaxed) == 0 {
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("no values delivered within 60 s:\n{}", peer.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, _, _) = usage();
    let (d0, t0, w0) = (
        delivered.load(Ordering::Relaxed),
        ticks(&peer),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, rss, hwm) = usage();
    let (d1, t1, wall) = (
        delivered.load(Ordering::Relaxed),
        ticks(&peer),
        w0.elapsed().as_secs_f64(),
    );
    let got = (d1 - d0) as f64;
    let changed = ((t1 - t0) * tags as u64) as f64;
    println!("tags {tags}, server period {period} s, measured {wall:.1} s");
    println!(
        "server changed   {:.0} values/s ({} ticks, {:.1} Hz)",
        changed / wall,
        t1 - t0,
        (t1 - t0) as f64 / wall
    );
    println!(
        "delivered to TB  {:.0} values/s ({:.1} % of the changes; the window edges are ±1 tick)",
        got / wall,
        100.0 * got / changed.max(1.0)
    );
    println!(
        "gateway CPU      {:.2} % of one core",
        100.0 * (cpu1 - cpu0) / wall
    );
    println!("gateway RSS      {} kB (peak {} kB)", rss, hwm);
    let _ = stop.send(());
    let _ = gw.await;
    let _ = child.kill();
    let _ = child.wait();
    peer.stop().await;
    Ok(())
}
