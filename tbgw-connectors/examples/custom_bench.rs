//! Throughput of a Python custom connector (an upstream-style class hosted by `tbgw_custom`
//! in a child process) into the gateway, and the RPC round trip through its
//! `server_side_rpc_handler`.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --example custom_bench --features grpc [-- MESSAGES VALUES]
//! ```
//!
//! The gateway side is the gRPC server and the custom connector (`type: bench`,
//! `class: BenchConnector`, `tests/peers/custom_extensions/bench/`), started by tbgw as it
//! starts any custom connector; its uplink is drained and counted (storage and ThingsBoard are
//! measured by the other benchmarks). The class calls `gateway.send_to_storage` in a loop, one
//! device, VALUES values (default 10) per call: with the peers' Python in upstream's older dict
//! format, and with upstream's virtualenv as `ConvertedData`. The rate is taken at the gateway,
//! from the first message received to the last.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::downlink::{Downlink, RpcRequest, RpcResponder};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::grpc::{GrpcFactory, GrpcMainConfig};
use tokio_util::sync::CancellationToken;

struct Run {
    received: Arc<AtomicU64>,
    first: Arc<std::sync::Mutex<Option<Instant>>>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
    downlink: tokio::sync::mpsc::Sender<Downlink>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start(python: &std::path::Path, config: serde_json::Value) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bench.json");
    std::fs::write(&file, config.to_string()).expect("write");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let ext = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/custom_extensions");
    let main = json!({
        "grpc": {"enabled": true, "serverPort": port, "serverHost": "127.0.0.1"},
        "connectors": [{"type": "bench", "name": "Bench", "configuration": "bench.json",
                        "class": "BenchConnector", "python": python.display().to_string(),
                        "extensionsPath": ext.display().to_string()}]
    });
    let factory = GrpcFactory::new(
        GrpcMainConfig::from_value(
            &dir.path().join("tb_gateway.json"),
            dir.path(),
            &main,
            false,
        )
        .expect("config"),
    );
    let server = factory.server().await.expect("enabled").expect("binds");
    tokio::spawn(server.run(CancellationToken::new()));
    let spec = ConnectorSpec {
        name: "Bench".into(),
        connector_type: "bench".into(),
        file,
        config: config.into(),
    };
    let mut connector = factory.custom_factories()[0]
        .build(&spec, &mut Vec::new())
        .expect("builds");
    let (mut cx, mut ends) = ConnectorContext::for_test("Bench");
    tokio::spawn(async move {
        let _ = connector.run(&mut cx).await;
    });
    let received = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::Mutex::new(None));
    let last = Arc::new(std::sync::Mutex::new(None));
    let (r, f, l) = (received.clone(), first.clone(), last.clone());
    tokio::spawn(async move {
        while let Some(m) = ends.uplink.recv().await {
            if let UplinkMessage::Data { .. } = m {
                let now = Instant::now();
                f.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(now);
                *l.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                r.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Run {
        received,
        first,
        last,
        downlink: ends.downlink,
        cancel: ends.cancel,
        _dir: dir,
    }
}

async fn throughput(label: &str, python: &std::path::Path, n: usize, values: usize, format: &str) {
    let run = start(
        python,
        json!({"messages": n, "values": values, "format": format}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while run.received.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = run.received.load(Ordering::Relaxed);
    let first = *run.first.lock().unwrap_or_else(|p| p.into_inner());
    let last = *run.last.lock().unwrap_or_else(|p| p.into_inner());
    let secs = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64().max(1e-6),
        _ => f64::NAN,
    };
    println!(
        "{label:<40} {got:>8} msgs  {:>9.0} msgs/s  {:>10.0} values/s",
        got as f64 / secs,
        (got as usize * values) as f64 / secs
    );
    run.cancel.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn rpc_latency(python: &std::path::Path, n: usize) {
    let run = start(python, json!({"messages": 1, "values": 1})).await;
    while run.received.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let (responder, answer) = RpcResponder::new();
        let start = Instant::now();
        run.downlink
            .send(Downlink::Rpc(RpcRequest {
                device: Some("BenchDev".into()),
                id: i as i64 + 1,
                method: "echo".into(),
                params: json!({"i": i}),
                responder,
            }))
            .await
            .expect("downlink");
        let _ = answer.await;
        times.push(start.elapsed());
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!(
        "{:<40} {n} RPCs  p50 {:?}  p99 {:?}  max {:?}",
        "RPC round trip through the class",
        p(0.5),
        p(0.99),
        times[times.len() - 1]
    );
    run.cancel.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let values: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let peers = tbgw::test_util::peers_python();
    println!("one Python custom connector class, {values} values per send_to_storage");
    throughput(
        "peers' Python (grpcio), dict data",
        &peers,
        n,
        values,
        "dict",
    )
    .await;
    let upstream = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/tbgw-upstream/bin/python");
    if upstream.exists() {
        throughput(
            "upstream's venv, ConvertedData",
            &upstream,
            n,
            values,
            "converted",
        )
        .await;
    }
    rpc_latency(&peers, 1000).await;
}
