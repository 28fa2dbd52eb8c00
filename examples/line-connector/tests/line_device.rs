//! The example connector against a real TCP peer: socat serving a small scripted device.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tbgw::connector::{Connector, ConnectorContext};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcRequest, RpcResponder};
use tbgw::model::Value;
use tbgw::test_util::free_tcp_port;
use tbgw::uplink::{StoreOutcome, UplinkMessage};
use tbgw_example_line::{LineConfig, LineConnector};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// socat listening on `port`, forking `device.sh` per connection.
struct Peer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Peer {
    async fn start(port: u16, log: &Path, count: u32) -> Peer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peer/device.sh");
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!(
                "EXEC:bash {} {} {count}",
                script.display(),
                log.display()
            ))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("socat is installed (.ci/install)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "socat did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Peer {
            child,
            port,
            log: log.to_path_buf(),
        }
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
        // Forked children serve open connections; kill them too.
        let _ = Command::new("pkill")
            .args(["-f", &format!("device.sh {}", self.log.display())])
            .status()
            .await;
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.received().contains(text) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the device never got {text:?}; it got:\n{}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn config(port: u16) -> LineConfig {
    serde_json::from_value(json!({
        "host": "127.0.0.1",
        "port": port,
        "deviceName": "Boiler 1",
        "deviceType": "boiler",
        "attributes": ["firmware"],
        "attributeUpdates": ["setpoint"],
        "serverSideRpc": ["echo", "fail", "silent"],
        "responseTimeoutMs": 500,
        "reconnectDelayMs": 50,
        "maxReconnectDelayMs": 200
    }))
    .unwrap()
}

async fn next(rx: &mut mpsc::Receiver<UplinkMessage>) -> UplinkMessage {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the connector sent nothing within 10 s")
        .expect("uplink open")
}

async fn rpc(
    down: &mpsc::Sender<Downlink>,
    method: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value, tbgw::downlink::RpcError> {
    let (responder, answer) = RpcResponder::new();
    down.send(Downlink::Rpc(RpcRequest {
        device: Some("Boiler 1".into()),
        id: 1,
        method: method.into(),
        params,
        responder,
    }))
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("answered")
        .expect("responder kept")
}

#[tokio::test]
async fn readings_commands_acks_and_reconnect_against_a_socat_device() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("device.log");
    let port = free_tcp_port();
    let mut peer = Peer::start(port, &log, 3).await;

    let (mut cx, mut ends): (ConnectorContext, _) = ConnectorContext::for_test("Boiler");
    let mut connector = LineConnector::new(config(peer.port));
    let task = tokio::spawn(async move { connector.run(&mut cx).await });

    // Connect, then three numbered readings; each is acknowledged only once stored.
    match next(&mut ends.uplink).await {
        UplinkMessage::Connect {
            device,
            device_type,
            ..
        } => {
            assert_eq!(
                (device.as_str(), device_type.as_str()),
                ("Boiler 1", "boiler")
            )
        }
        other => panic!("expected a connect, got {other:?}"),
    }
    let mut held = Vec::new();
    for n in 1..=3 {
        match next(&mut ends.uplink).await {
            UplinkMessage::Data { data, ack, .. } => {
                let d = &data[0];
                assert_eq!(d.device_name, "Boiler 1");
                let temperature = d.telemetry[0]
                    .values
                    .iter()
                    .find(|(k, _)| &**k == "temperature")
                    .map(|(_, v)| v.clone());
                let expected: f64 = format!("2{n}.5").parse().unwrap();
                assert_eq!(temperature, Some(Value::Float(expected)));
                assert_eq!(d.attributes.len(), 1, "firmware is an attribute");
                held.push(ack.expect("numbered readings ask for a receipt"));
            }
            other => panic!("expected data, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !peer.received().contains("ACK"),
        "no ACK before storage has the data"
    );
    for a in held {
        let _ = a.send(StoreOutcome::Stored);
    }
    peer.wait_for("ACK 3").await;
    assert!(peer.received().contains("ACK 1\nACK 2\nACK 3"));

    // RPCs: an answer, a device error, a timeout, and a method that is not configured.
    assert_eq!(
        rpc(&ends.downlink, "echo", json!({"a": 1})).await.unwrap(),
        json!({"echo": "{\"a\":1}"})
    );
    assert!(
        matches!(rpc(&ends.downlink, "fail", json!(null)).await, Err(tbgw::downlink::RpcError::Device(t)) if t == "broken")
    );
    assert!(matches!(
        rpc(&ends.downlink, "silent", json!(null)).await,
        Err(tbgw::downlink::RpcError::Timeout(_))
    ));
    assert!(matches!(
        rpc(&ends.downlink, "nope", json!(null)).await,
        Err(tbgw::downlink::RpcError::NotFound(_))
    ));

    // An attribute update reaches the device; a key that is not configured does not.
    let mut values = serde_json::Map::new();
    values.insert("setpoint".into(), json!(21.5));
    values.insert("other".into(), json!(1));
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Boiler 1".into(),
            values,
        }))
        .await
        .unwrap();
    peer.wait_for("setpoint 21.5").await;
    assert!(!peer.received().contains("other"));

    // The device goes away: disconnect; an RPC meanwhile is answered 503 at once and an
    // attribute update is kept for the device's return.
    peer.stop().await;
    loop {
        match next(&mut ends.uplink).await {
            UplinkMessage::Disconnect { device, .. } => {
                assert_eq!(device, "Boiler 1");
                break;
            }
            UplinkMessage::Data { .. } => {}
            other => panic!("expected a disconnect, got {other:?}"),
        }
    }
    assert!(matches!(
        rpc(&ends.downlink, "echo", json!(1)).await,
        Err(tbgw::downlink::RpcError::Unreachable(_))
    ));
    let mut values = serde_json::Map::new();
    values.insert("setpoint".into(), json!(19));
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Boiler 1".into(),
            values,
        }))
        .await
        .unwrap();

    // Back again: the connector reconnects by itself, sends the kept update, and data flows.
    let _ = std::fs::remove_file(&log);
    let mut peer = Peer::start(port, &log, 1).await;
    loop {
        if let UplinkMessage::Connect { .. } = next(&mut ends.uplink).await {
            break;
        }
    }
    match next(&mut ends.uplink).await {
        UplinkMessage::Data { ack, .. } => {
            let _ = ack.expect("receipt").send(StoreOutcome::Stored);
        }
        other => panic!("expected data, got {other:?}"),
    }
    peer.wait_for("setpoint 19").await;
    peer.wait_for("ACK 1").await;

    ends.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the connector stops when cancelled")
        .unwrap()
        .unwrap();
    peer.stop().await;
}

#[tokio::test]
async fn malformed_and_overlong_lines_are_counted_not_fatal() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = config(port);
    cfg.max_line_bytes = 64;
    let (mut cx, mut ends) = ConnectorContext::for_test("Boiler");
    let stats = cx.stats().clone();
    let mut connector = LineConnector::new(cfg);
    let task = tokio::spawn(async move { connector.run(&mut cx).await });
    let (mut sock, _) = listener.accept().await.unwrap();
    let long = "x".repeat(10_000);
    sock.write_all(format!("=bad\n{long}\n\u{ff}\u{fe}=\"\n#x a=1\nt=1\n").as_bytes())
        .await
        .unwrap();
    let _ = next(&mut ends.uplink).await; // connect
    match next(&mut ends.uplink).await {
        UplinkMessage::Data { data, .. } => assert_eq!(data[0].datapoints(), 1),
        other => panic!("expected data, got {other:?}"),
    }
    assert_eq!(
        stats
            .values()
            .iter()
            .find(|(k, _)| *k == "convert_errors")
            .unwrap()
            .1,
        4
    );
    ends.cancel.cancel();
    let _ = task.await;
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest).await;
}
