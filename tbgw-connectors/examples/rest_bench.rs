//! REST connector throughput: requests per second with a ~100 byte JSON body, all the way to
//! a ThingsBoard stand-in over a real mosquitto, with CPU per request and RSS.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features rest \
//!     --example rest_bench -- [seconds=10] [connections=64] [storage capacity=10000]
//! ```
//!
//! Storage is memory storage with the `block` policy and by default the gateway's default
//! capacity of 10,000 records, so the REST intake is held to what ThingsBoard confirms
//! (back-pressure); a larger capacity lets the intake run ahead of delivery, which shows up as
//! storage backlog and RSS.
//!
//! The gateway (REST server, storage, ThingsBoard client) and the ThingsBoard stand-in's MQTT
//! client run in this process; the HTTP load generator (hyper client, one keep-alive
//! connection per task) runs in a child process (this same binary with `--load`), so the CPU
//! figures are apart: CPU per request is user+system time from `/proc/self/stat` divided by
//! the requests answered, for the gateway process and for the load generator. Mosquitto is a
//! child process too (its CPU is not counted). The stand-in's MQTT client (receiving and
//! parsing every publish) is counted with the gateway. Needs `mosquitto` on the PATH.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tbgw::connector::{ConnectorFactory, ConnectorSpec};
use tbgw::storage::{FullPolicy, MemoryStorage};
use tbgw::test_util::{free_tcp_port, Mosquitto, TbStandIn};
use tbgw::{Gateway, TbOptions};
use tbgw_connectors::rest::RestFactory;

/// (user + system CPU seconds, RSS kB, peak RSS kB) of this process.
fn usage() -> (f64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are fields 14 and 15 (1-based).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // `after` starts at field 3 (state), so field n is at index n - 3.
    let cpu = (ticks(11) + ticks(12)) as f64 / clock_ticks();
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

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

async fn client(
    port: u16,
    id: usize,
    until: Instant,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        // ~100 bytes: {"sensorName":"dev-NN","temp":21.5,"hum":40,"seq":N,"model":"T1000-ABCDEFGH"}
        let body = format!(
            r#"{{"sensorName":"dev-{:02}","temp":21.5,"hum":40,"seq":{n},"model":"T1000-ABCDEFGHIJ"}}"#,
            id % 100
        );
        let req = Request::post("/telemetry")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        if status.is_success() {
            ok.fetch_add(1, Ordering::Relaxed);
        } else {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.get(1).map(String::as_str) == Some("--load") {
        let num = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        return rt.block_on(load(num(2) as u16, num(3), num(4) as usize));
    }
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let connections: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let capacity: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    rt.block_on(run(seconds, connections, capacity))
}

/// The load generator (child process): one second of warm-up, then `seconds` measured; prints
/// `START` after the warm-up and `DONE <ok> <failed> <cpu seconds> <elapsed seconds>`.
async fn load(port: u16, seconds: u64, connections: usize) -> anyhow::Result<()> {
    let warm_ok = Arc::new(AtomicU64::new(0));
    let warm_failed = Arc::new(AtomicU64::new(0));
    let warm = Instant::now() + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for i in 0..connections {
        tasks.push(tokio::spawn(client(
            port,
            i,
            warm,
            warm_ok.clone(),
            warm_failed.clone(),
        )));
    }
    for t in tasks.drain(..) {
        t.await??;
    }
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    println!("START");
    let (cpu0, _, _) = usage();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(seconds);
    for i in 0..connections {
        tasks.push(tokio::spawn(client(
            port,
            i,
            until,
            ok.clone(),
            failed.clone(),
        )));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, _, _) = usage();
    println!(
        "DONE {} {} {} {}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        cpu1 - cpu0,
        elapsed
    );
    Ok(())
}

async fn run(seconds: u64, connections: usize, capacity: usize) -> anyhow::Result<()> {
    let broker = Mosquitto::start().await?;
    let tb = TbStandIn::connect_silent(broker.port()).await?;
    let port = free_tcp_port();
    let spec = ConnectorSpec {
        name: "REST".into(),
        connector_type: "rest".into(),
        file: "rest.json".into(),
        config: json!({
            "server": {"host": "127.0.0.1", "port": port},
            "mapping": [{
                "endpoint": "/telemetry", "HTTPMethods": ["POST"],
                "security": {"type": "anonymous"},
                "response": {"responseExpected": false, "timeout": 10},
                "converter": {"type": "json",
                    "deviceInfo": {"deviceNameExpressionSource": "request", "deviceNameExpression": "${sensorName}",
                                   "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "thermo"},
                    "attributes": [{"type": "string", "key": "model", "value": "${model}"}],
                    "timeseries": [{"type": "double", "key": "temperature", "value": "${temp}"},
                                   {"type": "double", "key": "humidity", "value": "${hum}"},
                                   {"type": "integer", "key": "seq", "value": "${seq}"}]}
            }]
        }).into(),
    };
    let connector = RestFactory::new()
        .build(&spec, &mut Vec::new())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", broker.port(), "bench"))
        .storage(Arc::new(MemoryStorage::new(
            capacity,
            1000,
            FullPolicy::Block,
        )))
        .connector("REST", "rest", connector)
        .build()?;
    let gstats = gateway.stats();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gw = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    // Wait for the server and ThingsBoard session.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "the REST server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tb.wait_ready(Duration::from_secs(10)).await;
    // The stand-in keeps every message it receives; drop them as they come so its memory does
    // not count as the gateway's.
    let tb = Arc::new(tb);
    let cleaner = {
        let tb = tb.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tb.clear();
            }
        })
    };

    let (_, idle_rss, _) = usage();
    // The largest backlog in storage (stored, not yet confirmed by ThingsBoard) during the run.
    let backlog = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (gstats, backlog) = (gstats.clone(), backlog.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let b = gstats.stored().saturating_sub(gstats.delivered());
                backlog.fetch_max(b, Ordering::Relaxed);
            }
        })
    };
    // The load generator: this binary with `--load`, in its own process.
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--load",
            &port.to_string(),
            &seconds.to_string(),
            &connections.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut cpu0 = 0.0;
    let mut done = None;
    while let Some(line) = lines.next_line().await? {
        if line == "START" {
            cpu0 = usage().0;
        } else if let Some(rest) = line.strip_prefix("DONE ") {
            let f: Vec<f64> = rest.split(' ').filter_map(|v| v.parse().ok()).collect();
            done = Some((usage(), f));
        }
    }
    child.wait().await?;
    let ((cpu1, rss, peak), f) =
        done.ok_or_else(|| anyhow::anyhow!("the load generator failed"))?;
    anyhow::ensure!(f.len() == 4, "unexpected load generator output");
    let (n, bad, client_cpu, elapsed) = (f[0] as u64, f[1] as u64, f[2], f[3]);
    // Let the gateway deliver what is stored.
    let stored = gstats.stored();
    let drain_start = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while gstats.delivered() < gstats.stored() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain = drain_start.elapsed().as_secs_f64();
    println!("REST connector benchmark: {connections} keep-alive connections, {seconds} s, ~100 byte JSON bodies, storage capacity {capacity}");
    println!(
        "  requests answered 200: {n} ({:.0} requests/s)",
        n as f64 / elapsed
    );
    println!("  requests answered otherwise: {bad}");
    println!(
        "  gateway process CPU: {:.2} s user+system = {:.1} µs per request ({:.0} % of one core)",
        cpu1 - cpu0,
        (cpu1 - cpu0) * 1e6 / n.max(1) as f64,
        (cpu1 - cpu0) * 100.0 / elapsed
    );
    println!(
        "  load generator CPU: {:.2} s = {:.1} µs per request",
        client_cpu,
        client_cpu * 1e6 / n.max(1) as f64
    );
    println!(
        "  gateway process RSS: {idle_rss} kB before the load, {rss} kB at the end of the run, {peak} kB peak"
    );
    println!(
        "  gateway: {} records stored in total, {} delivered to the ThingsBoard stand-in (QoS 1)",
        stored.max(gstats.stored()),
        gstats.delivered()
    );
    println!(
        "  delivery finished {drain:.1} s after the load stopped: {:.0} records/s delivered end to end",
        gstats.delivered() as f64 / (elapsed + drain)
    );
    cleaner.abort();
    sampler.abort();
    println!(
        "  largest storage backlog (stored, not yet confirmed by ThingsBoard): {} records",
        backlog.load(Ordering::Relaxed)
    );
    let _ = stop.send(());
    let _ = gw.await;
    Ok(())
}
