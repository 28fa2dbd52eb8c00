//! The REST connector under slow clients: `clients` connections each send a request's headers
//! (`Content-Length: 1000`) and then trickle the body one byte a second, while a normal client
//! posts a reading now and then; prints the gateway process's RSS over time, how long the
//! normal requests took and what became of the slow ones.
//!
//! ```text
//! ulimit -n 20000
//! cargo run --release -p tbgw-connectors --no-default-features --features rest \
//!     --example rest_slow_clients -- [clients=1000] [seconds=45]
//! ```
//!
//! The gateway (REST server with its default settings, memory storage; ThingsBoard is not
//! reachable, so the data stays in storage) runs in this process; the slow clients run in a
//! child process (this same binary with `--slow`), so the RSS is the gateway's alone. Every
//! connection is to 127.0.0.1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorFactory, ConnectorSpec};
use tbgw::storage::{FullPolicy, MemoryStorage};
use tbgw::test_util::free_tcp_port;
use tbgw::test_util::process::status_kb;
use tbgw::{Gateway, TbOptions};
use tbgw_connectors::rest::RestFactory;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: usize = 1000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    if args.get(1).map(String::as_str) == Some("--slow") {
        return rt.block_on(slow(num(2, 0) as u16, num(3, 1000) as usize, num(4, 45)));
    }
    rt.block_on(run(num(1, 1000) as usize, num(2, 45)))
}

/// The slow clients (child process): prints `UP <connected>` once all are connected and
/// `DONE <answered> <closed without answer> <still open> <first answer>` at the end.
async fn slow(port: u16, clients: usize, seconds: u64) -> anyhow::Result<()> {
    let answered = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut first_answer = String::new();
    let (first_tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for _ in 0..clients {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        let head = format!(
            "POST /data HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await?;
        let (answered, closed, first_tx) = (answered.clone(), closed.clone(), first_tx.clone());
        tasks.push(tokio::spawn(async move {
            let (mut rd, mut wr) = s.into_split();
            let trickle = async {
                for _ in 0..BODY {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if wr.write_all(b" ").await.is_err() {
                        break;
                    }
                }
                std::future::pending::<()>().await;
            };
            let mut buf = vec![0u8; 256];
            let read = tokio::time::timeout_at(until.into(), async {
                tokio::select! {
                    _ = trickle => 0,
                    n = rd.read(&mut buf) => n.unwrap_or(0),
                }
            })
            .await;
            match read {
                Ok(0) => {
                    closed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(n) => {
                    answered.fetch_add(1, Ordering::Relaxed);
                    let line = String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let _ = first_tx.send(line);
                }
                Err(_) => {}
            }
        }));
    }
    println!("UP {clients}");
    for t in tasks {
        let _ = t.await;
    }
    if let Ok(l) = first_rx.try_recv() {
        first_answer = l;
    }
    let a = answered.load(Ordering::Relaxed);
    let c = closed.load(Ordering::Relaxed);
    println!("DONE {a} {c} {} {first_answer}", clients as u64 - a - c);
    Ok(())
}

/// One normal request on a new connection: (status line, time to the answer).
async fn normal(port: u16, n: u64) -> (String, Duration) {
    let t0 = Instant::now();
    let body = json!({"sensorName": "normal", "temp": n}).to_string();
    let req = format!(
        "POST /data HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(
            String::from_utf8_lossy(&out)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        )
    };
    let status = match tokio::time::timeout(Duration::from_secs(60), answer).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "no answer within 60 s".into(),
    };
    (status, t0.elapsed())
}

async fn run(clients: usize, seconds: u64) -> anyhow::Result<()> {
    let port = free_tcp_port();
    let spec = ConnectorSpec {
        name: "REST".into(),
        connector_type: "rest".into(),
        file: "rest.json".into(),
        config: json!({
            "server": {"host": "127.0.0.1", "port": port},
            "mapping": [{
                "endpoint": "/data", "HTTPMethods": ["POST"],
                "security": {"type": "anonymous"},
                "response": {"responseExpected": false, "timeout": 10},
                "converter": {"type": "json",
                    "deviceInfo": {"deviceNameExpressionSource": "request", "deviceNameExpression": "${sensorName}",
                                   "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "thermo"},
                    "attributes": [],
                    "timeseries": [{"type": "double", "key": "temperature", "value": "${temp}"}]}
            }]
        }).into(),
    };
    let connector = RestFactory::new()
        .build(&spec, &mut Vec::new())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // ThingsBoard is not reachable: the port of a listener just closed.
    let tb_port = free_tcp_port();
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", tb_port, "slow"))
        .storage(Arc::new(MemoryStorage::new(
            10_000,
            1000,
            FullPolicy::Block,
        )))
        .connector("REST", "rest", connector)
        .build()?;
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gw = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the REST server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let me = std::process::id();
    let rss = || status_kb(me, "VmRSS");
    let (status, took) = normal(port, 0).await;
    println!(
        "idle: RSS {} kB; a normal request: {status} in {took:?}",
        rss()
    );

    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--slow",
            &port.to_string(),
            &clients.to_string(),
            &seconds.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = lines.next_line().await?.unwrap_or_default();
    println!("{clients} slow clients: {first}");
    let t0 = Instant::now();
    let mut n = 0;
    let reader = tokio::spawn(async move {
        let mut last = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            last = l;
        }
        last
    });
    let mut worst = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        n += 1;
        let (status, took) = normal(port, n).await;
        worst = worst.max(took);
        println!(
            "t={:>3} s: RSS {:>7} kB, peak {:>7} kB; normal request: {status} in {took:?}",
            t0.elapsed().as_secs(),
            rss(),
            status_kb(me, "VmHWM")
        );
    }
    let done = reader.await.unwrap_or_default();
    child.wait().await?;
    println!("slow clients: {done} (DONE answered closed-without-answer still-open first-answer)");
    println!(
        "peak RSS {} kB; slowest normal request {worst:?}",
        status_kb(me, "VmHWM")
    );
    let _ = stop.send(());
    let _ = gw.await;
    Ok(())
}
