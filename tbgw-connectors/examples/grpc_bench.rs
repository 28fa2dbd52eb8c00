//! Throughput of one out-of-process connector through the gRPC connector API, unary (as
//! upstream's client calls it) and streaming side by side, and the RPC round-trip latency.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --example grpc_bench --features grpc-bench [-- MESSAGES VALUES]
//! ```
//!
//! The gateway side is the gRPC server and a `type: grpc` connector whose uplink is drained
//! and counted (storage and ThingsBoard are measured by the other benchmarks). The connector
//! is a separate process: this example run as `client` (Rust, tonic) and
//! `tests/peers/grpc_client.py` (Python, grpcio). Each message is one `gatewayTelemetryMsg`
//! for one device with VALUES values (default 10). The rate is taken at the gateway: from the
//! first message received to the last.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::downlink::{Downlink, RpcRequest, RpcResponder};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::grpc::pb::tb_gateway_proto_service_client::TbGatewayProtoServiceClient;
use tbgw_connectors::grpc::pb::{
    FromConnectorMessage, GatewayTelemetryMsg, KeyValueProto, KeyValueType, PostTelemetryMsg,
    RegisterConnectorMsg, TelemetryMsg, TsKvListProto,
};
use tbgw_connectors::grpc::{GrpcFactory, GrpcMainConfig};
use tokio_util::sync::CancellationToken;

const KEY: &str = "bench-key";

fn telemetry(i: usize, values: usize) -> FromConnectorMessage {
    FromConnectorMessage {
        gateway_telemetry_msg: Some(GatewayTelemetryMsg {
            msg: vec![TelemetryMsg {
                device_name: "BenchDev".into(),
                msg: Some(PostTelemetryMsg {
                    ts_kv_list: vec![TsKvListProto {
                        ts: 1_700_000_000_000 + i as i64,
                        kv: (0..values)
                            .map(|k| KeyValueProto {
                                key: format!("k{k}"),
                                r#type: KeyValueType::LongV as i32,
                                long_v: (i + k) as i64,
                                ..Default::default()
                            })
                            .collect(),
                    }],
                }),
            }],
        }),
        ..Default::default()
    }
}

fn register() -> FromConnectorMessage {
    FromConnectorMessage {
        register_connector_msg: Some(RegisterConnectorMsg {
            connector_key: KEY.into(),
        }),
        ..Default::default()
    }
}

/// The Rust connector process: `grpc_bench client PORT unary|stream MESSAGES VALUES`.
async fn client(
    port: u16,
    mode: &str,
    n: usize,
    values: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    let mut c = TbGatewayProtoServiceClient::new(channel);
    if mode == "unary" {
        let mut req = tonic::Request::new(register());
        req.metadata_mut()
            .insert("identifier", "bench-unary".parse()?);
        c.stream(req).await?;
        for i in 0..n {
            let mut req = tonic::Request::new(telemetry(i, values));
            req.metadata_mut()
                .insert("identifier", "bench-unary".parse()?);
            c.stream(req).await?;
        }
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut replies = c
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        tx.send(register()).await?;
        replies.message().await?;
        for i in 0..n {
            tx.send(telemetry(i, values)).await?;
        }
        // Keep the stream open until the gateway has read everything (it kills us then).
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    Ok(())
}

struct Gateway {
    port: u16,
    received: Arc<AtomicU64>,
    first: Arc<std::sync::Mutex<Option<Instant>>>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
    downlink: tokio::sync::mpsc::Sender<Downlink>,
    _dir: tempfile::TempDir,
}

async fn gateway() -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("b.json"), "{}").expect("write");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let main = json!({
        "grpc": {"enabled": true, "serverPort": port, "serverHost": "127.0.0.1"},
        "connectors": [{"type": "grpc", "name": "Bench", "configuration": "b.json", "key": KEY}]
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
        connector_type: "grpc".into(),
        file: dir.path().join("b.json"),
        config: json!({}).into(),
    };
    let mut connector = factory.build(&spec, &mut Vec::new()).expect("builds");
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
    Gateway {
        port,
        received,
        first,
        last,
        downlink: ends.downlink,
        _dir: dir,
    }
}

fn python_client(port: u16, mode: &str, script: &[String]) -> tokio::process::Child {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    tokio::process::Command::new(tbgw::test_util::peers_python())
        .arg(root.join("tests/peers/grpc_client.py"))
        .arg(root.join("src/grpc/proto"))
        .arg(port.to_string())
        .arg(KEY)
        .arg(mode)
        .args(script)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python client starts")
}

async fn throughput(
    label: &str,
    n: usize,
    values: usize,
    spawn: impl FnOnce(u16) -> tokio::process::Child,
) {
    let gw = gateway().await;
    let mut child = spawn(gw.port);
    let deadline = Instant::now() + Duration::from_secs(600);
    while gw.received.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            if !status.success() {
                println!("{label}: client failed ({status})");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill().await;
    let got = gw.received.load(Ordering::Relaxed);
    let first = *gw.first.lock().unwrap_or_else(|p| p.into_inner());
    let last = *gw.last.lock().unwrap_or_else(|p| p.into_inner());
    let secs = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64().max(1e-6),
        _ => f64::NAN,
    };
    println!(
        "{label:<28} {got:>8} msgs  {:>9.0} msgs/s  {:>10.0} values/s",
        got as f64 / secs,
        (got as usize * values) as f64 / secs
    );
}

async fn rpc_latency(label: &str, mode: &str, n: usize) {
    let gw = gateway().await;
    let _child = python_client(gw.port, mode, &["basic".into()]);
    // Wait for the client's data: it is registered then.
    while gw.received.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let (responder, answer) = RpcResponder::new();
        let start = Instant::now();
        gw.downlink
            .send(Downlink::Rpc(RpcRequest {
                device: Some("Dev1".into()),
                id: i as i64 + 1,
                method: "ping".into(),
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
        "{label:<28} {n} RPCs  p50 {:?}  p99 {:?}  max {:?}",
        p(0.5),
        p(0.99),
        times[times.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        let port = args[2].parse().expect("port");
        let n = args[4].parse().expect("messages");
        let values = args[5].parse().expect("values");
        if let Err(e) = client(port, &args[3], n, values).await {
            eprintln!("client: {e}");
            std::process::exit(1);
        }
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let values: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let me = std::env::current_exe().expect("own path");
    println!("one out-of-process connector, {values} values per message");
    for mode in ["stream", "unary"] {
        let count = if mode == "unary" { n / 10 } else { n };
        let me = me.clone();
        throughput(
            &format!("Rust client, {mode}"),
            count,
            values,
            move |port| {
                tokio::process::Command::new(&me)
                    .args([
                        "client",
                        &port.to_string(),
                        mode,
                        &count.to_string(),
                        &values.to_string(),
                    ])
                    .kill_on_drop(true)
                    .spawn()
                    .expect("client starts")
            },
        )
        .await;
    }
    for mode in ["stream", "unary"] {
        let count = if mode == "unary" { n / 20 } else { n / 4 };
        throughput(
            &format!("Python grpcio client, {mode}"),
            count,
            values,
            move |port| {
                python_client(
                    port,
                    mode,
                    &["bench".into(), count.to_string(), values.to_string()],
                )
            },
        )
        .await;
    }
    rpc_latency("RPC round trip, stream", "stream", 1000).await;
    rpc_latency("RPC round trip, unary (poll)", "unary", 200).await;
}
