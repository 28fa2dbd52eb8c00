//! Load benchmark of the Socket connector: 100 TCP devices sending frames at a given rate (or
//! as fast as the connector takes them), with the connector measured as its own process.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features socket --example socket_load -- 20
//! cargo run --release -p tbgw-connectors --no-default-features --features socket --example socket_load -- 20 100 delimiter 0
//! cargo run --release -p tbgw-connectors --no-default-features --features socket --example socket_load -- 20 100 none
//! ```
//!
//! Arguments: seconds measured (default 20), devices (default 100), framing (`delimiter`,
//! the default, `23.5\n` frames; or `none`, upstream's every-read-is-a-message, each device
//! writing one frame every 10 ms), and the offered rate in frames per second for all devices
//! (default 30000, sent in batches every 10 ms; 0: as fast as the connections take them).
//!
//! Two processes:
//!
//! * a copy of this binary started with `--connector <port>` runs the Socket connector alone
//!   (server mode, TCP, the given port, one device pattern `*:*` with a `double` key) on a
//!   multi-threaded runtime with one worker per core, counts every record that reaches its
//!   uplink, and prints the count twice a second;
//! * this one (the harness) connects the devices from 127.0.0.1 and sends frames, then reads
//!   the connector process's CPU time (user+sys, `/proc/<pid>/stat`) over the measured window
//!   and its peak resident memory (`VmHWM`).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::free_tcp_port;
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::socket::SocketFactory;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn connector(port: u16, framing: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut socket =
        json!({"type": "TCP", "address": "127.0.0.1", "port": port, "bufferSize": 8192});
    if framing != "none" {
        socket["framing"] = json!({"type": "delimiter", "delimiter": "\n"});
    }
    let spec = ConnectorSpec {
        name: "Socket".into(),
        connector_type: "socket".into(),
        file: "socket.json".into(),
        config: json!({
            "socket": socket,
            "devices": [{"address": "*:*", "deviceName": "Load", "telemetry": [{"key": "t", "type": "double"}]}]
        }).into(),
    };
    let mut c = SocketFactory::new().build(&spec, &mut Vec::new())?;
    let (mut cx, mut ends) = ConnectorContext::for_test("Socket");
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

/// One device: `per_tick` frames every 10 ms (0: as fast as the connection takes them).
async fn device(
    port: u16,
    framing: &'static str,
    per_tick: usize,
    sent: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    if framing == "none" {
        // Upstream's framing: one frame per write, so no two frames share a read.
        loop {
            tick.tick().await;
            s.write_all(b"23.5").await?;
            sent.fetch_add(1, Relaxed);
        }
    }
    let batch = b"23.5\n".repeat(per_tick.max(1));
    loop {
        if per_tick > 0 {
            tick.tick().await;
        }
        s.write_all(&batch).await?;
        sent.fetch_add(per_tick.max(1) as u64, Relaxed);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--connector") {
        let port: u16 = args.get(1).ok_or("port")?.parse()?;
        let framing = args.get(2).cloned().unwrap_or_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(connector(port, &framing));
    }
    let secs: u64 = args.first().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let devices: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let framing: &'static str = match args.get(2).map(String::as_str) {
        Some("none") => "none",
        _ => "delimiter",
    };
    // Offered frames per second in all (0: as fast as the connections take them).
    let rate: usize = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(30_000);
    let per_tick = if rate == 0 {
        0
    } else {
        (rate / devices / 100).max(1)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let port = free_tcp_port();
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--connector", &port.to_string(), framing])
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
        // Warm up 2 s, then measure `secs`.
        let warm = Duration::from_secs(2);
        let stop = Instant::now() + warm + Duration::from_secs(secs);
        let sent = Arc::new(AtomicU64::new(0));
        let senders: Vec<_> = (0..devices)
            .map(|_| tokio::spawn(device(port, framing, per_tick, sent.clone())))
            .collect();
        let latest = |line: &str| -> Option<(u64, u64)> {
            let mut w = line.split_whitespace();
            let c = w.nth(1)?.parse().ok()?;
            let e = w.nth(1)?.parse().ok()?;
            Some((c, e))
        };
        let mut last = (0, 0);
        let t_warm = Instant::now() + warm;
        while Instant::now() < t_warm {
            if let Some(l) = lines.next_line().await? {
                last = latest(&l).unwrap_or(last);
            }
        }
        let (c0, cpu0, t0) = (last.0, cpu_ticks(pid), Instant::now());
        while Instant::now() < stop {
            if let Some(l) = lines.next_line().await? {
                last = latest(&l).unwrap_or(last);
            }
        }
        let (c1, cpu1, t1) = (last.0, cpu_ticks(pid), Instant::now());
        for s in &senders {
            s.abort();
        }
        let sent = sent.load(Relaxed);
        let window = (t1 - t0).as_secs_f64();
        let cpu = (cpu1 - cpu0) as f64 / 100.0;
        println!(
            "socket_load: {devices} TCP devices, framing {framing}, offered {} frames/s, {window:.1} s measured",
            if framing == "none" { devices * 100 } else if rate == 0 { 0 } else { per_tick * devices * 100 }
        );
        println!(
            "frames into the uplink: {:.0}/s ({} in the window; {sent} sent in all, {} conversion errors)",
            (c1 - c0) as f64 / window,
            c1 - c0,
            last.1
        );
        println!(
            "connector process CPU: {cpu:.2} s over {window:.1} s = {:.0} % of one core",
            cpu / window * 100.0
        );
        println!(
            "connector process RSS: peak (VmHWM) {} KB, now {} KB",
            status_kb(pid, "VmHWM"),
            status_kb(pid, "VmRSS")
        );
        child.kill().await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
