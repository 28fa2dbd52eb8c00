//! End-to-end throughput benchmark: devices → mosquitto → tbgw → mosquitto → a counter.
//!
//! ```sh
//! cargo run --release -p tbgw-benches --bin e2e -- [--devices 20] [--rate 40000] [--seconds 10]
//!                                                   [--storage memory|file] [--payload 100]
//! ```
//!
//! N simulated devices publish ~100-byte JSON with QoS 1 to a local mosquitto at the offered
//! rate; the gateway (the release `tbgw` binary, run as its own process) forwards to a second
//! local mosquitto standing in for ThingsBoard, where a counter receives. The same harness then
//! runs a bare forwarder (subscribe, republish, nothing else; this binary with `forwarder`) as
//! the physical limit of the machine. For each it prints messages per second, CPU time per
//! message of the forwarding process (user + sys from /proc), its peak RSS, p50/p99 latency from
//! device to ThingsBoard, and lost and duplicated messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use tbgw::test_util::Mosquitto;
use tokio::process::{Child, Command};

#[derive(Debug, Clone)]
struct Args {
    devices: usize,
    rate: u64,
    seconds: u64,
    storage: String,
    payload: usize,
    /// ThingsBoard is away for the whole publishing phase (0: no outage).
    outage: bool,
}

fn parse_args() -> anyhow::Result<(Option<(u16, u16)>, Args)> {
    let mut a = Args {
        devices: 20,
        rate: 40_000,
        seconds: 10,
        storage: "memory".into(),
        payload: 100,
        outage: false,
    };
    let mut it = std::env::args().skip(1);
    let mut forwarder = None;
    while let Some(k) = it.next() {
        let mut v = || it.next().context("missing value");
        match k.as_str() {
            "forwarder" => {
                let from = v()?.parse()?;
                let to = v()?.parse()?;
                forwarder = Some((from, to));
            }
            "--devices" => a.devices = v()?.parse()?,
            "--rate" => a.rate = v()?.parse()?,
            "--seconds" => a.seconds = v()?.parse()?,
            "--storage" => a.storage = v()?,
            "--payload" => a.payload = v()?.parse()?,
            "--outage" => a.outage = true,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok((forwarder, a))
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// user + sys CPU seconds and peak RSS (kB) of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, u64) {
    let ticks = 100.0; // USER_HZ on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let cpu = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu / ticks, hwm)
}

fn client(id: &str, port: u16, cap: usize) -> (AsyncClient, rumqttc::v5::EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(Some(16 * 1024 * 1024));
    AsyncClient::new(o, cap)
}

/// What the counter saw.
#[derive(Default)]
struct Tally {
    seen: HashMap<(u32, u64), u32>,
    latencies_us: Vec<i64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Tally {
    fn record(&mut self, dev: u32, seq: u64, sent: i64, now: i64, at: Instant) {
        let n = self.seen.entry((dev, seq)).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.latencies_us.push(now - sent);
            self.first.get_or_insert(at);
            self.last = Some(at);
        }
    }
}

/// Subscribes on the ThingsBoard broker and counts (device, seq) in gateway payloads
/// (`{"dev-N": [{"ts", "values": {"seq", "sent"}}]}`) or raw device payloads (forwarder).
async fn counter(port: u16, tally: Arc<Mutex<Tally>>, ready: tokio::sync::oneshot::Sender<()>) {
    let (c, mut ev) = client("bench-counter", port, 1000);
    let mut ready = Some(ready);
    loop {
        match ev.poll().await {
            // (Re)subscribe on every connection: ThingsBoard may restart (--outage).
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ =
                    c.try_subscribe_many([Filter::new("v1/gateway/telemetry", QoS::AtLeastOnce)]);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let now = now_us();
                let at = Instant::now();
                let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                if let (Some(dev), Some(seq), Some(sent)) =
                    (v["dev"].as_u64(), v["seq"].as_u64(), v["sent"].as_i64())
                {
                    t.record(dev as u32, seq, sent, now, at);
                    continue;
                }
                if let Some(obj) = v.as_object() {
                    for (name, entries) in obj {
                        let dev: u32 = name.trim_start_matches("dev-").parse().unwrap_or(u32::MAX);
                        for e in entries.as_array().into_iter().flatten() {
                            let vals = &e["values"];
                            if let (Some(seq), Some(sent)) =
                                (vals["seq"].as_u64(), vals["sent"].as_i64())
                            {
                                t.record(dev, seq, sent, now, at);
                            }
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Devices publishing at `rate` messages per second in total for `seconds`; returns how many
/// each device published.
async fn devices(port: u16, a: &Args) -> Vec<u64> {
    let per_device = a.rate as f64 / a.devices as f64;
    let pad = "x".repeat(a.payload.saturating_sub(70));
    let mut tasks = Vec::new();
    for d in 0..a.devices {
        let (c, mut ev) = client(&format!("bench-dev-{d}"), port, 10_000);
        tokio::spawn(async move {
            loop {
                if ev.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        let seconds = a.seconds;
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while start.elapsed() < Duration::from_secs(seconds) {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * per_device) as u64;
                while seq < due {
                    let msg =
                        json!({"dev": d, "seq": seq, "sent": now_us(), "temp": 21.5, "pad": pad});
                    if c.publish(
                        format!("bench/dev-{d}/data"),
                        QoS::AtLeastOnce,
                        false,
                        msg.to_string(),
                    )
                    .await
                    .is_err()
                    {
                        break;
                    }
                    seq += 1;
                }
            }
            seq
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or(0));
    }
    out
}

fn gateway_config(
    dir: &Path,
    dev_port: u16,
    tb_port: u16,
    storage: &str,
) -> anyhow::Result<PathBuf> {
    let storage = match storage {
        "file" => {
            json!({"type": "file", "data_folder_path": "./data/", "max_records_per_file": 100000,
                          "max_file_count": 100, "max_read_records_count": 1000, "full_policy": "block"})
        }
        _ => {
            json!({"type": "memory", "max_records_count": 200000, "read_records_count": 1000, "full_policy": "block"})
        }
    };
    // Extra storage keys for experiments, e.g. TBGW_E2E_STORAGE='{"max_records_between_fsync": 1000}'.
    let mut storage = storage;
    if let Ok(extra) = std::env::var("TBGW_E2E_STORAGE") {
        let extra: serde_json::Value = serde_json::from_str(&extra)?;
        if let (Some(s), Some(e)) = (storage.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
    }
    let main = json!({
        "thingsboard": {"host": "127.0.0.1", "port": tb_port, "security": {"type": "accessToken", "accessToken": "bench"},
                         "maxPayloadSizeBytes": 65536, "sessionLimitsTimeoutMs": 200, "maxInflightMessages": 100},
        "storage": storage,
        "connectors": [{"type": "mqtt", "name": "Bench", "configuration": "mqtt.json"}]
    });
    let mqtt = json!({
        "broker": {"host": "127.0.0.1", "port": dev_port, "clientId": "tbgw-bench", "version": 5},
        "mapping": [{
            "topicFilter": "bench/+/data",
            "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "bench/([^/]+)/data",
                               "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "bench"},
                "timeseries": [
                    {"type": "integer", "key": "seq", "value": "${seq}"},
                    {"type": "integer", "key": "sent", "value": "${sent}"},
                    {"type": "double", "key": "temp", "value": "${temp}"}
                ]
            }
        }]
    });
    std::fs::write(
        dir.join("tb_gateway.json"),
        serde_json::to_vec_pretty(&main)?,
    )?;
    std::fs::write(dir.join("mqtt.json"), serde_json::to_vec_pretty(&mqtt)?)?;
    Ok(dir.join("tb_gateway.json"))
}

/// The `tbgw` binary next to this one (built on demand with the same profile).
fn tbgw_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("exe dir")?;
    let bin = dir.join("tbgw");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = dir.ends_with("release");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "tbgw-cli", "--bin", "tbgw"]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status()?;
        if !st.success() || !bin.exists() {
            bail!("cannot build the tbgw binary at {}", bin.display());
        }
    }
    Ok(bin)
}

struct Result1 {
    name: String,
    offered: u64,
    delivered: usize,
    dups: u64,
    secs: f64,
    cpu: f64,
    rss_kb: u64,
    p50: f64,
    p99: f64,
}

async fn run_case(
    name: &str,
    a: &Args,
    spawn: impl FnOnce(u16, u16, &Path) -> anyhow::Result<Child>,
) -> anyhow::Result<Result1> {
    let dev = Mosquitto::start_with("max_inflight_messages 1000\nmax_queued_messages 0\n").await?;
    let mut tb =
        Mosquitto::start_with("max_inflight_messages 1000\nmax_queued_messages 0\n").await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (rtx, rrx) = tokio::sync::oneshot::channel();
    let counter_task = tokio::spawn(counter(tb.port(), tally.clone(), rtx));
    let _ = tokio::time::timeout(Duration::from_secs(5), rrx).await;
    let dir = tempfile::tempdir()?;
    let mut child = spawn(dev.port(), tb.port(), dir.path())?;
    let pid = child.id().context("forwarder pid")?;
    // Warm-up: wait until one message goes through.
    let (wc, mut wev) = client("bench-warmup", dev.port(), 100);
    tokio::spawn(async move { while wev.poll().await.is_ok() {} });
    let t0 = Instant::now();
    loop {
        let msg = json!({"dev": 9999, "seq": 0, "sent": now_us(), "temp": 1.0});
        wc.publish(
            "bench/dev-9999/data",
            QoS::AtLeastOnce,
            false,
            msg.to_string(),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .is_empty()
        {
            break;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("{name}: nothing forwarded after 20 s");
        }
    }
    *tally.lock().unwrap_or_else(|e| e.into_inner()) = Tally::default();
    let (cpu0, _) = proc_usage(pid);
    let started = Instant::now();
    if a.outage {
        tb.stop().await?;
    }
    // During an outage, sample the forwarder's RSS as the backlog grows.
    let samples = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let samples2 = samples.clone();
    let tally2 = tally.clone();
    let sampler = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss: u64 = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let seen = tally2.lock().unwrap_or_else(|e| e.into_inner()).seen.len() as u64;
            samples2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((rss, seen));
        }
    });
    let published = devices(dev.port(), a).await;
    let offered: u64 = published.iter().sum();
    let mut drain_secs = None;
    if a.outage {
        sampler.abort();
        let sm = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let at = |i: usize| sm.get(i).map(|x| x.0 as f64 / 1024.0).unwrap_or(f64::NAN);
        println!(
            "  RSS during the outage: {:.1} MB after 1 s, {:.1} MB after {} s (backlog growing at the offered rate)",
            at(0),
            at(sm.len().saturating_sub(1)),
            sm.len()
        );
        let up = Instant::now();
        tb.restart().await?;
        // Drained when everything arrived.
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tally.lock().unwrap_or_else(|e| e.into_inner()).seen.len() as u64 >= offered {
                drain_secs = Some(up.elapsed().as_secs_f64());
                break;
            }
            if up.elapsed() > Duration::from_secs(300) {
                break;
            }
        }
        println!(
            "  outage of {:.1} s: backlog {} messages; drained in {:.1} s ({:.0} msg/s, produced at {:.0} msg/s)",
            started.elapsed().as_secs_f64() - up.elapsed().as_secs_f64(),
            offered,
            drain_secs.unwrap_or(f64::NAN),
            offered as f64 / drain_secs.unwrap_or(f64::NAN),
            offered as f64 / a.seconds as f64
        );
    } else {
        sampler.abort();
    }
    // Drain: wait until everything arrived or nothing moved for 3 s.
    let mut last = 0;
    let mut still = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = tally.lock().unwrap_or_else(|e| e.into_inner()).seen.len();
        if n as u64 >= offered {
            break;
        }
        if n != last {
            last = n;
            still = Instant::now();
        } else if still.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let (cpu1, rss) = proc_usage(pid);
    let _ = child.kill().await;
    counter_task.abort();
    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let delivered = t.seen.len();
    let dups: u64 = t.seen.values().map(|n| u64::from(n - 1)).sum();
    let secs = match (t.first, t.last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64().max(1e-3),
        _ => 1.0,
    };
    let mut lat = t.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .map(|v| *v as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    };
    Ok(Result1 {
        name: name.into(),
        offered,
        delivered,
        dups,
        secs,
        cpu: cpu1 - cpu0,
        rss_kb: rss,
        p50: pct(0.5),
        p99: pct(0.99),
    })
}

/// The bare forwarder: subscribe on one broker, republish on the other, nothing else.
async fn forwarder(from: u16, to: u16) -> anyhow::Result<()> {
    let (out, mut out_ev) = client("bench-forwarder-out", to, 100_000);
    tokio::spawn(async move {
        loop {
            if out_ev.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let (inp, mut in_ev) = client("bench-forwarder-in", from, 1000);
    inp.subscribe_many([Filter::new("bench/+/data", QoS::AtLeastOnce)])
        .await?;
    let n = AtomicU64::new(0);
    loop {
        match in_ev.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                out.publish(
                    "v1/gateway/telemetry",
                    QoS::AtLeastOnce,
                    false,
                    p.payload.to_vec(),
                )
                .await?;
                n.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                inp.subscribe_many([Filter::new("bench/+/data", QoS::AtLeastOnce)])
                    .await?;
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn print(r: &Result1) {
    let lost = r.offered.saturating_sub(r.delivered as u64);
    println!(
        "{:<22} offered {:>8}  delivered {:>8}  lost {:>6}  dup {:>6}  {:>8.0} msg/s  CPU {:>6.2} us/msg  peak RSS {:>6.1} MB  latency p50 {:>7.1} ms  p99 {:>7.1} ms",
        r.name,
        r.offered,
        r.delivered,
        lost,
        r.dups,
        r.delivered as f64 / r.secs,
        r.cpu * 1e6 / (r.delivered.max(1) as f64),
        r.rss_kb as f64 / 1024.0,
        r.p50,
        r.p99
    );
}

fn main() -> anyhow::Result<()> {
    let (fwd, a) = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some((from, to)) = fwd {
        return rt.block_on(forwarder(from, to));
    }
    rt.block_on(async {
        let bin = tbgw_binary()?;
        println!(
            "e2e: {} devices, {} msg/s offered for {} s, ~{} B payloads, storage {}",
            a.devices, a.rate, a.seconds, a.payload, a.storage
        );
        let storage = a.storage.clone();
        let gw = run_case(&format!("tbgw ({storage})"), &a, |dev, tb, dir| {
            let cfg = gateway_config(dir, dev, tb, &storage)?;
            // TBGW_E2E_WRAPPER="heaptrack -o /tmp/tbgw" runs the gateway under a profiler
            // (the CPU and RSS figures are then the wrapper's).
            let wrapper = std::env::var("TBGW_E2E_WRAPPER").unwrap_or_default();
            let mut words = wrapper.split_whitespace();
            let mut cmd = match words.next() {
                Some(w) => {
                    let mut c = Command::new(w);
                    c.args(words).arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            Ok(cmd
                .args(["run", "--log-level", "warn", "-c"])
                .arg(cfg)
                .kill_on_drop(true)
                .spawn()?)
        })
        .await?;
        print(&gw);
        let me = std::env::current_exe()?;
        let fw = run_case("bare forwarder", &a, |dev, tb, _| {
            Ok(Command::new(&me)
                .args(["forwarder", &dev.to_string(), &tb.to_string()])
                .kill_on_drop(true)
                .spawn()?)
        })
        .await?;
        print(&fw);
        let ratio = (gw.delivered as f64 / gw.secs) / (fw.delivered as f64 / fw.secs);
        println!(
            "tbgw throughput = {:.0} % of the bare forwarder in this run",
            ratio * 100.0
        );
        Ok(())
    })
}
