//! OPC-UA connector benchmark: 1,000 tags on one OPC-UA server, every tag changing every
//! 100 ms, collected by subscription and delivered through mosquitto to a ThingsBoard stand-in
//! that checks that every change arrived exactly once. The gateway runs in its own process and
//! is measured alone.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features opcua-bench-server \
//!     --example opcua_bench -- [tags=1000] [period_ms=100] [seconds=30] [devices=10] [storage=memory|file]
//! ```
//!
//! Three processes, all this binary:
//!
//! * `--server <port> <devices> <tags> <period_ms>`: an OPC-UA server built on async-opcua's
//!   server (the asyncua Python peer cannot change 1,000 values at 10 Hz). It has `devices`
//!   objects `BenchDevice<d>` under `Objects`, each with a `DeviceName` and `tags / devices`
//!   Int64 variables `Tag<t>`. At tick `n` (every `period_ms`) every tag is set to `n`, with the
//!   source timestamp `start + n × period` exactly, so every change is distinct and the
//!   server's 100 ms minimum sampling interval never holds one back. It prints `tick <n>`.
//! * `--gateway <tb_gateway.json>`: the gateway alone, loaded and run the way
//!   `tbgw run --config` does it (same loader, connector factories, multi-threaded runtime with
//!   one worker per core). `RUST_LOG` applies to it (logs on stderr). EOF on stdin stops it.
//! * the harness (no flag): starts the other two, a mosquitto and the ThingsBoard stand-in,
//!   counts every value the stand-in receives per tag and tick, and reads the gateway's CPU time
//!   (user+sys, `/proc/<pid>/stat`) over the measured window and its peak resident memory
//!   (`VmHWM`, whole life of the process).
//!
//! Measured window: from the first tick after the warm-up (every tag delivered once, then 2 s)
//! to the last tick `seconds` later. A change is one (tag, tick) pair of that window; after the
//! window the harness waits up to 10 s for the last values, then reports changes produced,
//! values delivered, missing and duplicated (tag, tick) pairs, the latency from the source
//! timestamp to the stand-in, and the gateway's CPU and RSS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::test_util::{free_tcp_port, Mosquitto, TbStandIn};
use tbgw::Gateway;
use tokio::io::{AsyncBufReadExt, BufReader};

const NS: &str = "urn:tbgw:bench";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------

fn server_main(port: u16, devices: usize, tags: usize, period_ms: u64) -> anyhow::Result<()> {
    use opcua::nodes::{ObjectBuilder, VariableBuilder};
    use opcua::server::diagnostics::NamespaceMetadata;
    use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
    use opcua::server::ServerBuilder;
    use opcua::types::{DataTypeId, DataValue, DateTime, NodeId, ObjectId, QualifiedName, Variant};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let pki = tempfile::tempdir()?;
        let mut builder = ServerBuilder::new_anonymous("tbgw OPC-UA bench server")
            .application_uri("urn:tbgw:bench:server")
            .product_uri("urn:tbgw:bench:server")
            .host("127.0.0.1")
            .port(port)
            .pki_dir(pki.path())
            .with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: NS.into(),
                    ..Default::default()
                },
                "bench",
            ));
        // The default allows 1,000 monitored items per subscription; the connector uses one
        // subscription for all of them.
        builder
            .limits_mut()
            .subscriptions
            .max_monitored_items_per_sub = 1_000_000;
        let (server, handle) = builder.build().map_err(anyhow::Error::msg)?;
        let nm = handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .ok_or_else(|| anyhow::anyhow!("no simple node manager"))?;
        let ns = handle
            .get_namespace_index(NS)
            .ok_or_else(|| anyhow::anyhow!("namespace not registered"))?;
        let per_device = tags / devices.max(1);
        let mut ids = Vec::new();
        {
            let mut space = nm.address_space().write();
            for d in 1..=devices {
                let name = format!("BenchDevice{d}");
                let dev = NodeId::new(ns, name.clone());
                ObjectBuilder::new(&dev, QualifiedName::new(ns, name.as_str()), name.as_str())
                    .organized_by(ObjectId::ObjectsFolder)
                    .insert(&mut *space);
                VariableBuilder::new(
                    &NodeId::new(ns, format!("{name}.DeviceName")),
                    QualifiedName::new(ns, "DeviceName"),
                    "DeviceName",
                )
                .data_type(DataTypeId::String)
                .value(format!("Bench Device {d}"))
                .component_of(dev.clone())
                .insert(&mut *space);
                for t in 0..per_device {
                    let id = NodeId::new(ns, format!("{name}.Tag{t}"));
                    let tag = format!("Tag{t}");
                    VariableBuilder::new(&id, QualifiedName::new(ns, tag.as_str()), tag.as_str())
                        .data_type(DataTypeId::Int64)
                        .value(0i64)
                        .component_of(dev.clone())
                        .insert(&mut *space);
                    ids.push(id);
                }
            }
        }
        let subscriptions = handle.subscriptions().clone();
        let ticker = tokio::spawn(async move {
            // Ticks from the start; the harness measures a window after its warm-up.
            let start = DateTime::now().ticks();
            let mut interval = tokio::time::interval(Duration::from_millis(period_ms));
            interval.tick().await;
            for n in 1i64.. {
                interval.tick().await;
                let ts = DateTime::from(start + n * period_ms as i64 * 10_000);
                let now = DateTime::now();
                let value = DataValue {
                    value: Some(Variant::Int64(n)),
                    status: None,
                    source_timestamp: Some(ts),
                    source_picoseconds: None,
                    server_timestamp: Some(now),
                    server_picoseconds: None,
                };
                if let Err(e) = nm.set_values(
                    &subscriptions,
                    ids.iter().map(|id| (id, None, value.clone())),
                ) {
                    eprintln!("set_values failed: {e}");
                }
                println!("tick {n}");
            }
        });
        println!("ready");
        let r = server.run().await;
        ticker.abort();
        r.map_err(anyhow::Error::msg)
    })
}

// ---------------------------------------------------------------------------------------------
// Gateway process
// ---------------------------------------------------------------------------------------------

/// What `tbgw run --config <file>` does, until EOF on stdin.
fn gateway_main(config: &std::path::Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
        let _ = stop.send(());
        let _ = run.await;
        Ok(())
    })
}

/// `tb_gateway.json` (ThingsBoard on the local mosquitto, memory storage) and `opcua.json`.
fn write_config(
    dir: &std::path::Path,
    broker_port: u16,
    opcua_port: u16,
    tags: usize,
    devices: usize,
    storage: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let per_device = tags / devices.max(1);
    let timeseries: Vec<Json> = (0..per_device)
        .map(|t| {
            json!({"key": format!("tag{t}"), "type": "path", "value": format!("${{Tag{t}}}"),
                        "timestampLocation": "source"})
        })
        .collect();
    std::fs::write(
        dir.join("opcua.json"),
        serde_json::to_vec_pretty(&json!({
            "server": {"url": format!("opc.tcp://127.0.0.1:{opcua_port}/"), "enableSubscriptions": true,
                       "subCheckPeriodInMillis": 100, "timeoutInMillis": 10000,
                       "pkiDir": dir.join("opcua-pki")},
            "mapping": [{
                "deviceNodePattern": "Root\\.Objects\\.BenchDevice\\d+",
                "deviceInfo": {"deviceNameExpression": "${DeviceName}", "deviceNameExpressionSource": "path"},
                "timeseries": timeseries
            }]
        }))?,
    )?;
    let storage = match storage {
        "file" => json!({"type": "file", "data_folder_path": dir.join("data")}),
        "memory" => {
            json!({"type": "memory", "read_records_count": 100, "max_records_count": 100000})
        }
        other => anyhow::bail!("storage must be memory or file, not {other}"),
    };
    let main = dir.join("tb_gateway.json");
    std::fs::write(
        &main,
        serde_json::to_vec_pretty(&json!({
            "thingsboard": {"host": "127.0.0.1", "port": broker_port, "qos": 1,
                "security": {"type": "accessToken", "accessToken": "token"},
                "sessionLimitsTimeoutMs": 500},
            "storage": storage,
            "connectors": [{"type": "opcua", "name": "OPC-UA", "configuration": "opcua.json"}]
        }))?,
    )?;
    Ok(main)
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Values received by the stand-in: per tag, how often each tick value arrived.
#[derive(Default)]
struct Tally {
    /// (device name, key) → index into `counts`.
    index: HashMap<(String, String), usize>,
    /// counts[tag][tick] = how often (tag, tick) arrived.
    counts: Vec<Vec<u16>>,
    /// (receive time − source timestamp) in ms of every value, with its tick.
    latency: Vec<(u64, i64)>,
    /// Values that were not a tick number of a known tag.
    foreign: u64,
}

impl Tally {
    fn new(devices: usize, per_device: usize) -> Tally {
        let mut t = Tally::default();
        for d in 1..=devices {
            for k in 0..per_device {
                let i = t.counts.len();
                t.index
                    .insert((format!("Bench Device {d}"), format!("tag{k}")), i);
                t.counts.push(Vec::new());
            }
        }
        t
    }

    fn add(&mut self, body: &[u8]) {
        let now = now_ms();
        let Ok(Json::Object(devs)) = serde_json::from_slice::<Json>(body) else {
            self.foreign += 1;
            return;
        };
        for (dev, entries) in devs {
            for e in entries.as_array().into_iter().flatten() {
                let ts = e["ts"].as_i64().unwrap_or(0);
                for (k, v) in e["values"].as_object().into_iter().flatten() {
                    let (Some(&i), Some(tick)) =
                        (self.index.get(&(dev.clone(), k.clone())), v.as_u64())
                    else {
                        self.foreign += 1;
                        continue;
                    };
                    let c = &mut self.counts[i];
                    if c.len() <= tick as usize {
                        c.resize(tick as usize + 1, 0);
                    }
                    c[tick as usize] = c[tick as usize].saturating_add(1);
                    self.latency.push((tick, now - ts));
                }
            }
        }
    }

    /// Tags that have received at least one value.
    fn tags_seen(&self) -> usize {
        self.counts
            .iter()
            .filter(|c| c.iter().any(|&n| n > 0))
            .count()
    }

    /// (delivered, missing, duplicated) over ticks `t0..=t1`.
    fn window(&self, t0: u64, t1: u64) -> (u64, u64, u64) {
        let (mut delivered, mut missing, mut dup) = (0, 0, 0);
        for c in &self.counts {
            for tick in t0..=t1 {
                let n = c.get(tick as usize).copied().unwrap_or(0) as u64;
                delivered += n;
                if n == 0 {
                    missing += 1;
                } else {
                    dup += n - 1;
                }
            }
        }
        (delivered, missing, dup)
    }
}

fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn harness(
    tags: usize,
    period_ms: u64,
    secs: u64,
    devices: usize,
    storage: String,
) -> anyhow::Result<()> {
    let per_device = tags / devices.max(1);
    let tags = per_device * devices;
    let exe = std::env::current_exe()?;

    // The OPC-UA server.
    let opcua_port = free_tcp_port();
    let mut server = tokio::process::Command::new(&exe)
        .args([
            "--server".to_string(),
            opcua_port.to_string(),
            devices.to_string(),
            tags.to_string(),
            period_ms.to_string(),
        ])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut from_server = BufReader::new(server.stdout.take().expect("piped")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = from_server.next_line().await {
            if l == "ready" {
                return true;
            }
        }
        false
    })
    .await;
    anyhow::ensure!(ready == Ok(true), "the OPC-UA server did not start");
    let tick = Arc::new(AtomicU64::new(0));
    let tick_w = tick.clone();
    tokio::spawn(async move {
        while let Ok(Some(l)) = from_server.next_line().await {
            if let Some(n) = l.strip_prefix("tick ").and_then(|n| n.parse().ok()) {
                tick_w.store(n, Relaxed);
            }
        }
    });

    // mosquitto and the stand-in, counting every telemetry value as it arrives.
    let broker = Mosquitto::start().await?;
    let tb = TbStandIn::connect(broker.port()).await?;
    let tally = Arc::new(Mutex::new(Tally::new(devices, per_device)));
    let t = tally.clone();
    tb.set_responder(move |m| {
        if m.topic == "v1/gateway/telemetry" {
            if let Ok(mut t) = t.lock() {
                t.add(&m.payload);
            }
        }
        Vec::new()
    });

    // The gateway.
    let dir = tempfile::tempdir()?;
    let config = write_config(
        dir.path(),
        broker.port(),
        opcua_port,
        tags,
        devices,
        &storage,
    )?;
    let mut gateway = tokio::process::Command::new(&exe)
        .arg("--gateway")
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = gateway
        .id()
        .ok_or_else(|| anyhow::anyhow!("gateway exited"))?;
    let to_gw = gateway.stdin.take().expect("piped");

    // Warm-up: every tag delivered once, then 2 s more.
    let started = Instant::now();
    loop {
        tb.clear();
        let seen = tally.lock().map(|t| t.tags_seen()).unwrap_or(0);
        if seen == tags {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "only {seen} of {tags} tags delivered within 60 s (run with RUST_LOG=debug)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warmup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let t0 = tick.load(Relaxed) + 1;
    let w0 = Instant::now();
    let c0 = cpu_ticks(pid);
    while w0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tb.clear();
    }
    let t1 = tick.load(Relaxed);
    let cpu_s = (cpu_ticks(pid) - c0) as f64 / 100.0;
    let wall = w0.elapsed().as_secs_f64();
    let (hwm, rss) = (status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS"));

    // Drain: wait up to 10 s for the values of the last ticks.
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(10) {
        tb.clear();
        if tally
            .lock()
            .map(|t| t.window(t0, t1).1 == 0)
            .unwrap_or(true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(to_gw);
    let _ = tokio::time::timeout(Duration::from_secs(12), gateway.wait()).await;
    let _ = gateway.kill().await;
    let _ = server.kill().await;

    let t = tally
        .lock()
        .map_err(|_| anyhow::anyhow!("tally poisoned"))?;
    let (delivered, missing, dup) = t.window(t0, t1);
    let changes = (t1 + 1 - t0) * tags as u64;
    let mut lat: Vec<i64> = t
        .latency
        .iter()
        .filter(|(tick, _)| (t0..=t1).contains(tick))
        .map(|(_, l)| *l)
        .collect();
    lat.sort_unstable();
    println!(
        "{tags} tags on {devices} device object(s), every tag changes every {period_ms} ms, \
         {storage} storage; measured {wall:.1} s (ticks {t0}..={t1}), warm-up {:.1} s",
        warmup.as_secs_f64()
    );
    println!(
        "changes produced: {changes} ({:.0}/s)",
        changes as f64 / wall
    );
    println!(
        "values delivered: {delivered} ({:.0}/s); missing {missing}; duplicated {dup}; \
         other values {}",
        delivered as f64 / wall,
        t.foreign
    );
    println!(
        "latency source timestamp -> stand-in: p50 {} ms, p99 {} ms, max {} ms",
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    println!(
        "gateway process (pid {pid}): CPU {:.2} % of one core ({cpu_s:.2} s user+sys); \
         RSS peak (VmHWM) {hwm} kB, at the end {rss} kB",
        100.0 * cpu_s / wall
    );
    if missing > 0 || dup > 0 {
        println!("NOT every change was delivered exactly once");
    } else {
        println!("every change delivered exactly once");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(match args.get(i) {
            Some(a) => a.parse()?,
            None => default,
        })
    };
    match args.get(1).map(String::as_str) {
        Some("--server") => server_main(
            num(2, 0)? as u16,
            num(3, 10)? as usize,
            num(4, 1000)? as usize,
            num(5, 100)?,
        ),
        Some("--gateway") => gateway_main(std::path::Path::new(
            args.get(2).map_or("tb_gateway.json", String::as_str),
        )),
        _ => harness(
            num(1, 1000)? as usize,
            num(2, 100)?,
            num(3, 30)?,
            num(4, 10)?.max(1) as usize,
            args.get(5).cloned().unwrap_or_else(|| "memory".into()),
        ),
    }
}
