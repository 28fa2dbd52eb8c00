//! The Socket connector against real peers on loopback: socat playing devices (TCP and UDP,
//! bound to 127.0.0.2.. so several devices are told apart by address, and listening for client
//! mode), and plain sockets where a test needs bytes socat cannot send on cue.
#![cfg_attr(not(feature = "socket"), allow(missing_docs))]
#![cfg(feature = "socket")]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcRequest, RpcResponder};
use tbgw::model::{DeviceData, Value};
use tbgw::stats::ConnectorCounters;
use tbgw::test_util::{free_tcp_port, free_udp_port};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::socket::SocketFactory;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(10);

fn spec(config: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "Socket".into(),
        connector_type: "socket".into(),
        file: "socket.json".into(),
        config: config.into(),
    }
}

fn start(config: Json) -> (tokio::task::JoinHandle<()>, TestEnds, ConnectorCounters) {
    let mut connector = SocketFactory::new()
        .build(&spec(config), &mut Vec::new())
        .expect("config is valid");
    let (mut cx, ends) = ConnectorContext::for_test("Socket");
    let stats = cx.stats().clone();
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends, stats)
}

/// Waits until the connector's TCP listener accepts (probing from 127.0.0.1, which no test
/// device pattern matches).
async fn wait_listening(port: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "not listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next data record (device events are skipped).
async fn next_data(ends: &mut TestEnds) -> DeviceData {
    loop {
        match tokio::time::timeout(WAIT, ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Data { mut data, .. })) => return data.remove(0),
            Ok(Some(_)) => continue,
            other => panic!("no data: {other:?}"),
        }
    }
}

fn telemetry(d: &DeviceData, key: &str) -> Option<Value> {
    d.telemetry
        .iter()
        .flat_map(|e| e.values.iter())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// socat connecting from `bind` to `target` (`TCP:...` or `UDP:...`): the test writes what the
/// device sends to its stdin and reads what the device receives from its stdout.
struct Socat {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Socat {
    fn spawn(address: String) -> Socat {
        let mut child = Command::new("socat")
            .arg("-b65536")
            .arg("STDIO")
            .arg(address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("socat is installed (.ci/apt.txt)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        Socat {
            child,
            stdin,
            stdout,
        }
    }

    /// A device on `bind` connected to the connector's TCP port.
    fn tcp(port: u16, bind: &str) -> Socat {
        Socat::spawn(format!("TCP:127.0.0.1:{port},bind={bind}"))
    }

    /// A device on `bind` sending datagrams to the connector's UDP port.
    fn udp(port: u16, bind: &str) -> Socat {
        Socat::spawn(format!("UDP:127.0.0.1:{port},bind={bind}"))
    }

    async fn send(&mut self, b: &[u8]) {
        self.stdin.write_all(b).await.expect("write to socat");
        self.stdin.flush().await.expect("flush");
    }

    /// Reads what the device received until `want` has arrived.
    async fn expect(&mut self, want: &[u8]) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + WAIT;
        while !got.windows(want.len()).any(|w| w == want) {
            match tokio::time::timeout_at(deadline, self.stdout.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                other => panic!(
                    "device did not receive {:?} (got {:?}): {other:?}",
                    String::from_utf8_lossy(want),
                    String::from_utf8_lossy(&got)
                ),
            }
        }
    }
}

fn devices() -> Json {
    json!([
        {"address": "127.0.0.2:*", "deviceName": "Boiler", "deviceType": "boiler",
         "telemetry": [{"key": "temp", "byteFrom": 0, "byteTo": -1}],
         "attributes": [{"key": "model", "byteFrom": 0, "byteTo": 2}],
         "attributeRequests": [{"type": "shared", "requestExpression": "${[0:3]==atr}",
                                "attributeNameExpression": "[3:]"}],
         "attributeUpdates": [{"attributeOnThingsBoard": "setpoint"}],
         "serverSideRpc": [{"methodRPC": "reset", "withResponse": true, "methodProcessing": "write"}]},
        {"addressFilter": "127.0.0.3:*", "deviceName": "Pump",
         "encoding": "hex",
         "telemetry": [{"key": "raw", "byteFrom": 0, "byteTo": -1},
                       {"key": "rpm", "byteFrom": 0, "byteTo": 2, "type": "uint16"}],
         "attributeUpdates": [{"attributeOnThingsBoard": "mode", "encoding": "utf-8"}]}
    ])
}

fn rpc(device: Option<&str>, method: &str, params: Json) -> (Downlink, tbgw::downlink::RpcAnswer) {
    let (responder, answer) = RpcResponder::new();
    (
        Downlink::Rpc(RpcRequest {
            device: device.map(str::to_string),
            id: 1,
            method: method.into(),
            params,
            responder,
        }),
        answer,
    )
}

#[tokio::test]
async fn tcp_devices_are_told_apart_by_address_and_get_their_own_downlink() {
    let port = free_tcp_port();
    let (task, mut ends, stats) = start(json!({
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": port, "bufferSize": 1024},
        "devices": devices()
    }));
    wait_listening(port).await;

    let mut boiler = Socat::tcp(port, "127.0.0.2");
    boiler.send(b"21.5").await;
    let d = next_data(&mut ends).await;
    assert_eq!(d.device_name, "Boiler");
    assert_eq!(d.device_type, "boiler");
    assert_eq!(telemetry(&d, "temp"), Some(Value::String("21.5".into())));
    assert_eq!(
        d.attributes,
        vec![("model".into(), Value::String("21".into()))]
    );

    let mut pump = Socat::tcp(port, "127.0.0.3");
    pump.send(b"\x0b\xb8").await;
    let d = next_data(&mut ends).await;
    assert_eq!(d.device_name, "Pump");
    assert_eq!(telemetry(&d, "raw"), Some(Value::String("0bb8".into())));
    assert_eq!(telemetry(&d, "rpm"), Some(Value::Int(3000)));

    // Attribute updates go to each device's own connection, in its encoding.
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Boiler".into(),
            values: json!({"setpoint": 60, "other": 1})
                .as_object()
                .unwrap()
                .clone(),
        }))
        .await
        .unwrap();
    boiler.expect(b"60").await;
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Pump".into(),
            values: json!({"mode": "eco"}).as_object().unwrap().clone(),
        }))
        .await
        .unwrap();
    pump.expect(b"eco").await;

    // A configured RPC is written to the device and answered.
    let (dl, answer) = rpc(Some("Boiler"), "reset", json!("now"));
    ends.downlink.send(dl).await.unwrap();
    boiler.expect(b"now").await;
    assert_eq!(answer.reply().await.unwrap(), json!({"result": "ok"}));
    // An unknown method is a 404, not a write.
    let (dl, answer) = rpc(Some("Boiler"), "nope", json!(1));
    ends.downlink.send(dl).await.unwrap();
    let reply = answer.reply().await.unwrap();
    assert_eq!(reply["code"], 404, "{reply}");

    // An attribute request is answered on the device's connection.
    boiler.send(b"atrsetpoint").await;
    let req = loop {
        match tokio::time::timeout(WAIT, ends.uplink.recv()).await {
            Ok(Some(m @ UplinkMessage::AttributeRequest { .. })) => break m,
            Ok(Some(UplinkMessage::Data { data, .. })) => panic!("converted: {data:?}"),
            Ok(Some(_)) => continue,
            other => panic!("no request: {other:?}"),
        }
    };
    let UplinkMessage::AttributeRequest {
        device,
        client,
        keys,
        reply,
    } = req
    else {
        unreachable!()
    };
    assert_eq!((device.as_str(), client), ("Boiler", false));
    assert_eq!(keys, vec!["setpoint".to_string()]);
    // ThingsBoard's answer to one key is `{"id", "device", "value"}`; the device gets the
    // value as JSON, as upstream writes `dumps(value or values)`.
    reply
        .send(json!({"id": 1, "device": "Boiler", "value": 65.5}))
        .unwrap();
    boiler.expect(b"65.5").await;

    // The device goes away: it is disconnected, and an RPC for it is a 503 at once.
    drop(boiler);
    loop {
        match tokio::time::timeout(WAIT, ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Disconnect { device, .. })) if device == "Boiler" => break,
            Ok(Some(_)) => continue,
            other => panic!("no disconnect: {other:?}"),
        }
    }
    let (dl, answer) = rpc(Some("Boiler"), "reset", json!("x"));
    ends.downlink.send(dl).await.unwrap();
    assert_eq!(answer.reply().await.unwrap()["code"], 503);
    // An attribute update while it is away waits for it (the latest value per key).
    for v in [70, 71] {
        ends.downlink
            .send(Downlink::AttributeUpdate(AttributeUpdate {
                device: "Boiler".into(),
                values: json!({"setpoint": v}).as_object().unwrap().clone(),
            }))
            .await
            .unwrap();
    }
    let mut boiler = Socat::tcp(port, "127.0.0.2");
    boiler.send(b"22").await;
    assert_eq!(next_data(&mut ends).await.device_name, "Boiler");
    boiler.expect(b"71").await;
    assert!(stats.messages_received() >= 3);
    assert_eq!(stats.convert_errors(), 0);
    ends.cancel.cancel();
    task.await.unwrap();
    drop(pump);
}

#[tokio::test]
async fn udp_uplink_and_downlink_to_the_device_address() {
    let port = free_udp_port();
    let (task, mut ends, _stats) = start(json!({
        "socket": {"type": "udp", "address": "127.0.0.1", "port": port, "buffer_size": 512},
        "devices": devices()
    }));
    let mut pump = Socat::udp(port, "127.0.0.3");
    // The listener may not be bound yet: send until a datagram arrives.
    let d = loop {
        pump.send(b"\x00\x07").await;
        match tokio::time::timeout(Duration::from_millis(300), ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Data { mut data, .. })) => break data.remove(0),
            Ok(Some(_)) | Err(_) => continue,
            Ok(None) => panic!("connector gone"),
        }
    };
    assert_eq!(d.device_name, "Pump");
    assert_eq!(telemetry(&d, "rpm"), Some(Value::Int(7)));
    // Written back over UDP to the address the device sent from (upstream: over TCP).
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Pump".into(),
            values: json!({"mode": "off"}).as_object().unwrap().clone(),
        }))
        .await
        .unwrap();
    pump.expect(b"off").await;
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn framing_and_typed_values_over_tcp() {
    let port = free_tcp_port();
    let (task, mut ends, stats) = start(json!({
        "socket": {"type": "TCP", "port": port,
                   "framing": {"type": "delimiter", "delimiter": "\n", "maxFrameBytes": 16}},
        "devices": [{"address": "*", "deviceName": "Meter",
                     "telemetry": [{"key": "kwh", "type": "double"}]}]
    }));
    wait_listening(port).await;
    let mut dev = Socat::tcp(port, "127.0.0.4");
    // Three messages in one write, one split over two writes, one too long.
    dev.send(b"1.5\n2\n3.25\n4").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(telemetry(&next_data(&mut ends).await, "kwh").unwrap());
    }
    assert_eq!(
        got,
        vec![Value::Float(1.5), Value::Float(2.0), Value::Float(3.25)]
    );
    dev.send(b".5\n0123456789abcdefXYZ\n7\n").await;
    assert_eq!(
        telemetry(&next_data(&mut ends).await, "kwh"),
        Some(Value::Float(4.5))
    );
    assert_eq!(
        telemetry(&next_data(&mut ends).await, "kwh"),
        Some(Value::Float(7.0))
    );
    assert_eq!(stats.convert_errors(), 1, "the long message is counted");
    ends.cancel.cancel();
    task.await.unwrap();
}

/// A `tracing` writer into a buffer, to count log lines.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

#[tokio::test]
async fn malformed_messages_are_counted_every_time_and_logged_once() {
    let log = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let port = free_tcp_port();
    let (task, mut ends, stats) = start(json!({
        "socket": {"port": port, "framing": {"type": "delimiter", "delimiter": ";"}},
        "devices": [{"address": "127.0.0.5", "deviceName": "Probe",
                     "telemetry": [{"key": "t"}, {"key": "n", "type": "int"}]}]
    }));
    wait_listening(port).await;
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.5:0".parse().unwrap()).unwrap();
    let mut conn = s
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    // Not UTF-8 (both keys fail), twice; then a good message is still converted.
    conn.write_all(b"\xff\xfe;\xff\xfe;12;").await.unwrap();
    let d = next_data(&mut ends).await;
    assert_eq!(telemetry(&d, "n"), Some(Value::Int(12)));
    assert_eq!(stats.messages_received(), 3);
    assert_eq!(stats.convert_errors(), 4, "two keys in two messages");
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("Probe: key `t`: not UTF-8").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("Probe: key `n`").count(), 1, "{text}");
    drop(conn);
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn client_mode_reconnects_when_the_device_comes_back() {
    let port = free_tcp_port();
    // Swap the roles: socat listens, its stdio is the device.
    let spawn = |port: u16| {
        let mut child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
            .arg("STDIO")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("socat");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        Socat {
            child,
            stdin,
            stdout,
        }
    };
    let mut dev = spawn(port);
    let (task, mut ends, stats) = start(json!({
        "socket": {"type": "TCP", "mode": "client", "address": "127.0.0.1", "port": port,
                   "reconnectDelayMs": 50, "maxReconnectDelayMs": 200,
                   "framing": {"type": "lengthPrefix", "prefixBytes": 1}},
        "devices": [{"address": "*:*", "deviceName": "Gateway-side device",
                     "telemetry": [{"key": "v"}],
                     "serverSideRpc": [{"methodRPC": "ping", "withResponse": true}]}]
    }));
    dev.send(b"\x02hi").await;
    assert_eq!(
        telemetry(&next_data(&mut ends).await, "v"),
        Some(Value::String("hi".into()))
    );
    let (dl, answer) = rpc(Some("Gateway-side device"), "ping", json!("PING"));
    ends.downlink.send(dl).await.unwrap();
    dev.expect(b"PING").await;
    assert_eq!(answer.reply().await.unwrap(), json!({"result": "ok"}));

    // The device goes away and comes back on the same port.
    dev.child.kill().await.unwrap();
    drop(dev);
    loop {
        match tokio::time::timeout(WAIT, ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Disconnect { .. })) => break,
            Ok(Some(_)) => continue,
            other => panic!("no disconnect: {other:?}"),
        }
    }
    let mut dev = spawn(port);
    dev.send(b"\x05again").await;
    assert_eq!(
        telemetry(&next_data(&mut ends).await, "v"),
        Some(Value::String("again".into()))
    );
    assert!(stats.errors() >= 1, "the lost connection is counted");
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn reserved_set_and_connector_rpc_write_to_any_address() {
    let port = free_tcp_port();
    let (task, ends, _stats) = start(json!({
        "socket": {"port": port},
        "devices": devices()
    }));
    wait_listening(port).await;
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tport = target.local_addr().unwrap().port();
    let read_one = async {
        let (mut s, _) = target.accept().await.unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).await.unwrap();
        v
    };
    let (dl, answer) = rpc(
        None,
        "set",
        json!(format!("address=127.0.0.1;port={tport};value=hello")),
    );
    ends.downlink.send(dl).await.unwrap();
    assert_eq!(read_one.await, b"hello");
    assert_eq!(answer.reply().await.unwrap(), json!({"result": "ok"}));
    let (dl, answer) = rpc(Some("Boiler"), "set", json!("address=127.0.0.1;value=x"));
    ends.downlink.send(dl).await.unwrap();
    assert_eq!(answer.reply().await.unwrap()["code"], 400);
    ends.cancel.cancel();
    task.await.unwrap();
}

#[test]
fn upstream_sample_builds_and_bad_configs_name_the_file_and_key() {
    let Some(path) = tbgw::test_util::upstream_sample("socket.json") else {
        return;
    };
    let config: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    SocketFactory::new()
        .build(&spec(config.clone()), &mut Vec::new())
        .expect("upstream's sample builds");
    for (pointer, value, key) in [
        ("/socket/type", json!("SCTP"), "socket.type"),
        ("/socket/bufferSize", json!(0), "socket.bufferSize"),
        (
            "/devices/0/encoding",
            json!("ebcdic"),
            "devices[0].encoding",
        ),
        (
            "/devices/0/telemetry/1/type",
            json!("int128"),
            "devices[0].telemetry[1].type",
        ),
        (
            "/devices/0/attributeRequests/0/requestExpression",
            json!("${0:3==atr}"),
            "devices[0].attributeRequests[0].requestExpression",
        ),
        (
            "/devices/0/serverSideRpc/0/methodProcessing",
            json!("read"),
            "devices[0].serverSideRpc[0].methodProcessing",
        ),
        ("/socket/port", json!("fifty"), "socket.port"),
    ] {
        let mut bad = config.clone();
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        bad.pointer_mut(parent).unwrap()[last] = value;
        let e = SocketFactory::new()
            .build(&spec(bad), &mut Vec::new())
            .err()
            .unwrap_or_else(|| panic!("{pointer} accepted"));
        assert_eq!(e.key, key);
        assert!(e.to_string().contains("socket.json"), "{e}");
    }
}

#[test]
fn old_flat_config_is_read_as_upstream_converts_it() {
    let mut ignored = Vec::new();
    let old = json!({
        "type": "UDP", "address": "127.0.0.1", "port": 50001, "bufferSize": 256,
        "devices": [{"addressFilter": "*:*", "deviceName": "Old",
                     "telemetry": [{"key": "k", "byteFrom": 0, "byteTo": -1}],
                     "attributeRequests": [{"type": "client", "requestExpression": "${[0:1]==r}",
                                            "attributeNameExpression": "[1:]",
                                            "requestExpressionSource": "expression",
                                            "attributeNameExpressionSource": "expression"}]}]
    });
    let built = SocketFactory::new()
        .build(&spec(old), &mut ignored)
        .expect("old layout builds");
    drop(built);
    assert!(ignored.is_empty(), "{ignored:?}");
    let s = tbgw_connectors::socket::SocketConnector::build(
        "socket.json".as_ref(),
        serde_json::from_value(
            json!({"type": "UDP", "port": 50001, "bufferSize": 256, "devices": []}),
        )
        .unwrap(),
        &Default::default(),
        &mut Vec::new(),
    )
    .unwrap();
    assert!(s.settings().udp);
    assert_eq!(s.settings().buffer_size, 256);
}

#[test]
fn buffer_size_keys_and_mode_checks() {
    let build = |socket: Json| {
        tbgw_connectors::socket::SocketConnector::build(
            "socket.json".as_ref(),
            serde_json::from_value(json!({"socket": socket, "devices": []})).unwrap(),
            &Default::default(),
            &mut Vec::new(),
        )
    };
    // Upstream's code reads `buffer_size`; the documented `bufferSize` is read too.
    let s = build(json!({"bufferSize": 100})).unwrap();
    assert_eq!(s.settings().buffer_size, 100);
    let s = build(json!({"bufferSize": 100, "buffer_size": 300})).unwrap();
    assert_eq!(s.settings().buffer_size, 300);
    let s = build(json!({})).unwrap();
    assert_eq!(s.settings().buffer_size, 1024);
    let e = build(json!({"type": "UDP", "mode": "client"}))
        .err()
        .unwrap();
    assert_eq!(e.key, "socket.mode");
    let e = build(json!({"framing": {"type": "fixed"}})).err().unwrap();
    assert_eq!(e.key, "socket.framing.length");
    let e = build(json!({"framing": {"type": "lengthPrefix", "prefixBytes": 3}}))
        .err()
        .unwrap();
    assert_eq!(e.key, "socket.framing.prefixBytes");
}

#[tokio::test]
async fn ipv6_listener_and_patterns() {
    let port = free_tcp_port();
    let (task, mut ends, _stats) = start(json!({
        "socket": {"address": "::1", "port": port},
        "devices": [{"address": "[::1]:*", "deviceName": "V6",
                     "telemetry": [{"key": "v", "type": "int"}],
                     "attributeUpdates": [{"attributeOnThingsBoard": "a"}]}]
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut conn = loop {
        match tokio::net::TcpStream::connect(("::1", port)).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "not listening: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    conn.write_all(b"42").await.unwrap();
    let d = next_data(&mut ends).await;
    assert_eq!(d.device_name, "V6");
    assert_eq!(telemetry(&d, "v"), Some(Value::Int(42)));
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "V6".into(),
            values: json!({"a": "six"}).as_object().unwrap().clone(),
        }))
        .await
        .unwrap();
    let mut got = [0u8; 3];
    tokio::time::timeout(WAIT, conn.read_exact(&mut got))
        .await
        .expect("written back")
        .unwrap();
    assert_eq!(&got, b"six");
    ends.cancel.cancel();
    task.await.unwrap();
}
