//! Load benchmark of the OCPP connector: many charge points connected at once, each sending a
//! BootNotification, then MeterValues every period and a Heartbeat every heartbeat period, with
//! the central system measured as its own process.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features ocpp --example ocpp_load -- 60
//! cargo run --release -p tbgw-connectors --no-default-features --features ocpp --example ocpp_load -- 60 1000 10 60
//! ```
//!
//! Arguments: seconds measured (default 60), charge points (default 1000), MeterValues period
//! in seconds (default 10), Heartbeat period in seconds (default 60). The charge points speak
//! OCPP 2.1, 2.0.1 and 1.6J in turn.
//!
//! Two processes:
//!
//! * a copy of this binary started with `--connector <port>` runs the OCPP connector alone on
//!   a multi-threaded runtime, counts every record that reaches its uplink and prints the count
//!   twice a second;
//! * this one (the harness) connects the charge points (tokio-tungstenite clients on one
//!   thread, start times spread over the period) and checks every answer, then reads the
//!   connector process's CPU time (user+sys, `/proc/<pid>/stat`) over the measured window and
//!   its resident memory (`VmRSS`, peak `VmHWM`).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::free_tcp_port;
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::ocpp::OcppFactory;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn connector(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let spec = ConnectorSpec {
        name: "OCPP".into(),
        connector_type: "ocpp".into(),
        file: "ocpp.json".into(),
        config: json!({
            "centralSystem": {"host": "127.0.0.1", "port": port},
            "chargePoints": [{
                "idRegexpPattern": "ocpp/",
                "deviceNameExpression": "${ChargePointId}",
                "timeseries": [
                    {"messageTypeFilter": "MeterValues", "key": "energy", "value": "${meter_value[:].sampled_value[:].value}"},
                    {"messageTypeFilter": "MeterValues", "key": "soc", "value": "${soc}"},
                    {"messageTypeFilter": "Heartbeat", "key": "heartbeat", "value": "${current_time}"}
                ]
            }]
        })
        .into(),
    };
    let mut c = OcppFactory::new().build(&spec, &mut Vec::new())?;
    let (mut cx, mut ends) = ConnectorContext::for_test("OCPP");
    let stats = cx.stats().clone();
    tokio::spawn(async move { c.run(&mut cx).await });
    let mut records = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            m = ends.uplink.recv() => match m {
                Some(UplinkMessage::Data { data, .. }) => records += data.len() as u64,
                Some(_) => {}
                None => return Ok(()),
            },
            _ = tick.tick() => {
                println!("count {records} errors {}", stats.convert_errors());
            }
        }
    }
}

struct Counters {
    connected: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

/// One charge point: connect, boot, then MeterValues and Heartbeats forever.
async fn charge_point(
    port: u16,
    n: usize,
    delay: Duration,
    period: Duration,
    heartbeat: Duration,
    c: Arc<Counters>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tokio::time::sleep(delay).await;
    let (sub, v2) = match n % 3 {
        0 => ("ocpp2.1", true),
        1 => ("ocpp2.0.1", true),
        _ => ("ocpp1.6", false),
    };
    let mut req = format!("ws://127.0.0.1:{port}/ocpp/CP_{n}").into_client_request()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", sub.parse()?);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    c.connected.fetch_add(1, Relaxed);
    let boot = if v2 {
        json!({"chargingStation": {"vendorName": "Load", "model": "L"}, "reason": "PowerUp"})
    } else {
        json!({"chargePointVendor": "Load", "chargePointModel": "L"})
    };
    let mut id = 0u64;
    let mut call = |action: &str, payload: serde_json::Value| {
        id += 1;
        Message::text(json!([2, id.to_string(), action, payload]).to_string())
    };
    let mut frames = vec![call("BootNotification", boot)];
    let mut next_hb = Instant::now() + heartbeat;
    let mut tick = tokio::time::interval(period);
    let mut value = 0.0f64;
    loop {
        for f in frames.drain(..) {
            ws.send(f).await?;
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().starts_with("[3,") => {
                    c.answered.fetch_add(1, Relaxed);
                }
                other => {
                    c.failed.fetch_add(1, Relaxed);
                    return Err(format!("unexpected answer {other:?}").into());
                }
            }
        }
        tick.tick().await;
        value += 1.5;
        let sv = json!([{"value": value, "measurand": "Energy.Active.Import.Register"},
                        {"value": 50, "measurand": "SoC"}]);
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mv = if v2 {
            json!({"evseId": 1, "meterValue": [{"timestamp": ts, "sampledValue": sv}]})
        } else {
            json!({"connectorId": 1, "meterValue": [{"timestamp": ts, "sampledValue": sv}]})
        };
        frames.push(call("MeterValues", mv));
        if Instant::now() >= next_hb {
            next_hb += heartbeat;
            frames.push(call("Heartbeat", json!({})));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--connector") {
        let port: u16 = args.get(1).ok_or("port")?.parse()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(connector(port));
    }
    let num = |i: usize, d: u64| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(args.get(i).map(|s| s.parse()).transpose()?.unwrap_or(d))
    };
    let secs = num(0, 60)?;
    let cps = num(1, 1000)? as usize;
    let period = Duration::from_secs(num(2, 10)?.max(1));
    let heartbeat = Duration::from_secs(num(3, 60)?.max(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let port = free_tcp_port();
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--connector", &port.to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("no pid")?;
        let mut lines = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                return Err("the connector did not listen".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let c = Arc::new(Counters {
            connected: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        // Start times spread over one period, so the load is even.
        let tasks: Vec<_> = (0..cps)
            .map(|n| {
                let delay = period.mul_f64(n as f64 / cps as f64);
                let c = c.clone();
                tokio::spawn(async move {
                    if let Err(e) = charge_point(port, n, delay, period, heartbeat, c).await {
                        eprintln!("charge point {n}: {e}");
                    }
                })
            })
            .collect();
        let latest = |line: &str| -> Option<(u64, u64)> {
            let mut w = line.split_whitespace();
            let c = w.nth(1)?.parse().ok()?;
            let e = w.nth(1)?.parse().ok()?;
            Some((c, e))
        };
        let mut last = (0, 0);
        // Warm up: every charge point connected and one period run.
        let t_warm = Instant::now() + period + Duration::from_secs(2);
        while Instant::now() < t_warm {
            if let Some(l) = lines.next_line().await? {
                last = latest(&l).unwrap_or(last);
            }
        }
        let (c0, a0, cpu0, t0) = (last.0, c.answered.load(Relaxed), cpu_ticks(pid), Instant::now());
        let stop = t0 + Duration::from_secs(secs);
        while Instant::now() < stop {
            if let Some(l) = lines.next_line().await? {
                last = latest(&l).unwrap_or(last);
            }
        }
        let (c1, a1, cpu1, t1) = (last.0, c.answered.load(Relaxed), cpu_ticks(pid), Instant::now());
        let rss = status_kb(pid, "VmRSS");
        let hwm = status_kb(pid, "VmHWM");
        for t in &tasks {
            t.abort();
        }
        let window = (t1 - t0).as_secs_f64();
        let cpu = (cpu1 - cpu0) as f64 / 100.0;
        println!(
            "ocpp_load: {cps} charge points ({} connected, {} failed), MeterValues every {period:?}, Heartbeat every {heartbeat:?}, {window:.1} s measured",
            c.connected.load(Relaxed),
            c.failed.load(Relaxed)
        );
        println!(
            "calls answered: {:.0}/s; records into the uplink: {:.0}/s ({} conversion errors)",
            (a1 - a0) as f64 / window,
            (c1 - c0) as f64 / window,
            last.1
        );
        println!(
            "connector process CPU: {cpu:.2} s over {window:.1} s = {:.1} % of one core",
            cpu / window * 100.0
        );
        println!("connector process RSS: now {rss} KB, peak (VmHWM) {hwm} KB");
        child.kill().await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
