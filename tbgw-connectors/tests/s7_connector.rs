//! The S7 connector against a real S7 server: python-snap7 2.1.0's server (the Snap7 C
//! library its wheel ships) on a free loopback port, with DB1, DB2 and the markers filled
//! with known values by `tests/peers/s7_server.py`. What the connector wrote is read back
//! with python-snap7's client.
#![cfg(feature = "s7")]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::config::ConnectorSpec;
use tbgw::connector::ConnectorFactory;
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::harness::forward_data;
use tbgw::test_util::{free_tcp_port, peers_python, PythonPeer, TestRun};
use tbgw_connectors::s7::S7Factory;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/s7_server.py").to_string()
}

/// The python-snap7 server on `port`.
struct S7Server {
    peer: PythonPeer,
    port: u16,
}

impl S7Server {
    async fn start(port: u16) -> S7Server {
        let mut peer = PythonPeer::spawn([script(), "serve".into(), port.to_string()])
            .expect("the S7 server starts");
        peer.wait_output("ready", WAIT).await.expect("ready");
        peer.wait_tcp(port, WAIT).await.expect("listens");
        S7Server { peer, port }
    }

    /// `size` bytes of DB `db` from `start`, read with python-snap7's client.
    async fn read(&self, db: u16, start: u32, size: u32) -> Vec<u8> {
        let out = tokio::process::Command::new(peers_python())
            .args([
                script(),
                "read".into(),
                self.port.to_string(),
                db.to_string(),
                start.to_string(),
                size.to_string(),
            ])
            .output()
            .await
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hex = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    async fn stop(&mut self) {
        self.peer.stop().await;
    }
}

fn spec(config: Json, file: &Path) -> ConnectorSpec {
    ConnectorSpec {
        name: "S7".into(),
        connector_type: "s7".into(),
        file: file.to_path_buf(),
        config: config.into(),
    }
}

/// The running connector, its data and its other ends.
type Running = TestRun<DeviceData>;

fn start(config: Json) -> Running {
    let mut ignored = Vec::new();
    let connector = S7Factory::new()
        .build(&spec(config, Path::new("s7.json")), &mut ignored)
        .unwrap_or_else(|e| panic!("{e}"));
    TestRun::start("S7", connector, WAIT, forward_data)
}

/// The next record of `device`.
async fn next_of(r: &mut Running, device: &str) -> DeviceData {
    r.recv_until(|d| (d.device_name == device).then_some(d))
        .await
        .unwrap_or_else(|| panic!("no record of {device}"))
}

fn plc(port: u16, poll_ms: u64) -> Json {
    json!({
        "type": "PLC", "address": "127.0.0.1", "port": port, "rack": 0, "slot": 1,
        "deviceName": "S7 PLC", "deviceProfileName": "plc",
        "autoReconnect": true, "maxRetries": 3, "retryDelay": 0.1, "maxDelay": 0.5,
        "heartbeatInterval": 0, "pollPeriod": poll_ms,
        "attributes": [
            {"type": "tag", "key": "power", "tag": "DB1.DBD204:REAL"},
            {"type": "tag", "key": "frequency", "tag": "DB1.DBD200:REAL"},
            {"type": "tag", "key": "name", "tag": "DB1.DBB100:STRING[20]"}
        ],
        "timeseries": [
            {"type": "data", "key": "temperature", "dataType": "real", "dbNumber": 1, "start": 50, "size": 4},
            {"type": "data", "key": "humidity", "dataType": "lreal", "dbNumber": 1, "start": 54, "size": 8},
            {"type": "data", "key": "relay", "dataType": "bool", "dbNumber": 1, "start": 0, "size": 1, "bit": 0},
            {"type": "tag", "key": "bit1", "tag": "DB1.DBX0.1:BOOL"},
            {"type": "tag", "key": "int", "tag": "DB1.DBW2:INT"},
            {"type": "tag", "key": "dint", "tag": "DB1.DBD4:DINT"},
            {"type": "tag", "key": "real", "tag": "DB1.DBD8:REAL"},
            {"type": "tag", "key": "word", "tag": "DB1.DBW12:WORD"},
            {"type": "tag", "key": "byte", "tag": "DB1.DBB14:BYTE"},
            {"type": "tag", "key": "marker", "tag": "MW10:INT"}
        ],
        "attributeUpdates": [
            {"type": "tag", "key": "relay", "tag": "DB1.DBX0.0:BOOL"},
            {"type": "data", "key": "setpoint", "dataType": "real", "dbNumber": 1, "start": 20, "size": 4}
        ],
        "serverSideRpc": [
            {"method": "getRelay", "requestType": "read", "type": "data", "dataType": "bool",
             "dbNumber": 1, "start": 0, "size": 1, "bit": 0},
            {"method": "setRelay", "requestType": "write", "type": "data", "dataType": "bool",
             "dbNumber": 1, "start": 0, "size": 1, "bit": 0},
            {"method": "getInt", "requestType": "read", "type": "tag", "tag": "DB1.DBW2:INT"}
        ]
    })
}

fn logo(port: u16) -> Json {
    json!({
        "type": "LOGO", "address": "127.0.0.1", "port": port, "tsapSnap7": "0x0100",
        "tsapLogo": 0x0200, "deviceName": "LOGO", "deviceProfileName": "logo", "pollPeriod": 200,
        "retryDelay": 0.1, "maxDelay": 0.5,
        "timeseries": [{"type": "vm", "key": "level", "vmAddress": "VW30"},
                       {"type": "vm", "key": "bit2", "vmAddress": "V0.2"}],
        "attributeUpdates": [{"type": "vm", "key": "lightLevel", "vmAddress": "VW30"}],
        "serverSideRpc": [{"method": "getLight", "requestType": "read", "type": "vm", "vmAddress": "VW30"},
                          {"method": "setLight", "requestType": "write", "type": "vm", "vmAddress": "VW30"}]
    })
}

#[tokio::test]
async fn every_address_form_is_read_and_typed() {
    let port = free_tcp_port();
    let _server = S7Server::start(port).await;
    let mut c = start(json!({"devices": [plc(port, 200), logo(port)]}));
    let d = next_of(&mut c, "S7 PLC").await;
    assert_eq!(d.device_type, "plc");
    assert_eq!(d.value("power"), Some(Value::Float(1500.5)));
    assert_eq!(d.value("frequency"), Some(Value::Float(50.0)));
    assert_eq!(d.value("name"), Some(Value::String("hello".into())));
    let Some(Value::Float(t)) = d.value("temperature") else {
        panic!("{d:?}")
    };
    assert!((t - 36.6).abs() < 1e-5, "{t}");
    assert_eq!(d.value("humidity"), Some(Value::Float(55.25)));
    assert_eq!(d.value("relay"), Some(Value::Bool(false)));
    assert_eq!(d.value("bit1"), Some(Value::Bool(true)));
    assert_eq!(d.value("int"), Some(Value::Int(-1234)));
    assert_eq!(d.value("dint"), Some(Value::Int(123_456_789)));
    assert_eq!(d.value("real"), Some(Value::Float(21.5)));
    assert_eq!(d.value("word"), Some(Value::Int(65000)));
    assert_eq!(d.value("byte"), Some(Value::Int(200)));
    assert_eq!(d.value("marker"), Some(Value::Int(0)));
    let l = next_of(&mut c, "LOGO").await;
    assert_eq!(l.value("level"), Some(Value::Int(300)));
    assert_eq!(l.value("bit2"), Some(Value::Bool(true)));
    assert_eq!(c.stats.stats().convert_errors(), 0);
    c.stop().await;
}

#[tokio::test]
async fn a_thousand_tags_take_a_few_requests_per_poll() {
    let port = free_tcp_port();
    let _server = S7Server::start(port).await;
    let tags: Vec<Json> = (0..1000)
        .map(|i| json!({"type": "tag", "key": format!("t{i}"), "tag": format!("DB2.DBD{}:REAL", 4 * i)}))
        .collect();
    let mut c = start(json!({"devices": [{
        "type": "PLC", "address": "127.0.0.1", "port": port, "rack": 0, "slot": 2,
        "deviceName": "big", "deviceProfileName": "default", "pollPeriod": 60000,
        "timeseries": tags
    }]}));
    let d = next_of(&mut c, "big").await;
    assert_eq!(d.value("t0"), Some(Value::Float(0.0)));
    assert_eq!(d.value("t999"), Some(Value::Float(999.0)));
    assert_eq!(
        d.telemetry.iter().map(|e| e.values.len()).sum::<usize>(),
        1000
    );
    // 4,000 bytes: 9 requests with a 480-byte PDU, 5 with 960 (upstream: 1,000).
    let requests = c.stats.stats().messages_received();
    assert!((1..=9).contains(&requests), "{requests} requests");
    c.stop().await;
}

#[tokio::test]
async fn writes_change_only_their_bytes_and_bits_and_are_read_back() {
    let port = free_tcp_port();
    let server = S7Server::start(port).await;
    let mut c = start(json!({"devices": [plc(port, 200), logo(port)]}));
    next_of(&mut c, "S7 PLC").await;
    next_of(&mut c, "LOGO").await;

    // A BOOL RPC write sets bit 0 and keeps bits 1 and 2 (upstream clears them).
    let r = c.rpc(Some("S7 PLC"), "setRelay", json!(true)).await;
    assert_eq!(
        r,
        json!({"result": "Successfully wrote value true to device S7 PLC for RPC method setRelay"})
    );
    assert_eq!(server.read(1, 0, 1).await, vec![0b0000_0111]);
    assert_eq!(
        c.rpc(Some("S7 PLC"), "getRelay", Json::Null).await,
        json!({"result": true})
    );
    // Attribute updates: a BOOL tag back to false, a REAL by the data form.
    c.update("S7 PLC", "relay", json!(false)).await;
    c.update("S7 PLC", "setpoint", json!(42.5)).await;
    c.update("S7 PLC", "unmapped", json!(1)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.read(1, 20, 4).await != 42.5f32.to_be_bytes()
        || server.read(1, 0, 1).await != [0b110]
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "attribute updates not written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Reserved get/set in the three forms.
    assert_eq!(
        c.rpc(
            Some("S7 PLC"),
            "set",
            json!("type=tag;tag=DB1.DBW2:INT;value=-77;")
        )
        .await["result"],
        json!("Successfully wrote value -77 to device S7 PLC for RPC method set")
    );
    assert_eq!(server.read(1, 2, 2).await, (-77i16).to_be_bytes());
    assert_eq!(
        c.rpc(Some("S7 PLC"), "get", json!("type=tag;tag=DB1.DBW2:INT;"))
            .await,
        json!({"result": -77})
    );
    assert_eq!(
        c.rpc(Some("S7 PLC"), "getInt", Json::Null).await,
        json!({"result": -77})
    );
    c.rpc(
        Some("S7 PLC"),
        "set",
        json!("type=data;dbNumber=1;start=4;dataType=dint;size=4;value=99;"),
    )
    .await;
    assert_eq!(server.read(1, 4, 4).await, 99i32.to_be_bytes());
    assert_eq!(
        c.rpc(
            Some("S7 PLC"),
            "get",
            json!("type=data;dbNumber=1;start=4;dataType=dint;size=4;")
        )
        .await,
        json!({"result": 99})
    );
    c.rpc(
        Some("LOGO"),
        "set",
        json!("type=vm;vmAddress=VW30;value=1234;"),
    )
    .await;
    assert_eq!(server.read(1, 30, 2).await, 1234i16.to_be_bytes());
    assert_eq!(
        c.rpc(Some("LOGO"), "getLight", Json::Null).await,
        json!({"result": 1234})
    );
    c.update("LOGO", "lightLevel", json!(-5)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.read(1, 30, 2).await != (-5i16).to_be_bytes() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lightLevel not written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.rpc(Some("LOGO"), "setLight", json!(7)).await;
    assert_eq!(server.read(1, 30, 2).await, 7i16.to_be_bytes());
    // A connector RPC names the device and the address in its params.
    assert_eq!(
        c.rpc(
            None,
            "read",
            json!({"deviceName": "S7 PLC", "requestType": "read", "type": "tag", "tag": "DB1.DBD8:REAL"})
        )
        .await,
        json!({"result": 21.5})
    );
    // Errors: schema mismatch, unknown method, a value of the wrong type, no such DB.
    let r = c.rpc(Some("S7 PLC"), "get", json!("type=tag;")).await;
    assert_eq!(r["code"], json!(400), "{r}");
    assert!(r["error"]
        .as_str()
        .unwrap()
        .contains("does not match with the schema"));
    assert_eq!(
        c.rpc(Some("S7 PLC"), "nope", Json::Null).await["code"],
        json!(404)
    );
    assert_eq!(
        c.rpc(
            Some("S7 PLC"),
            "set",
            json!("type=tag;tag=DB1.DBW2:INT;value=x;")
        )
        .await["code"],
        json!(400)
    );
    assert_eq!(
        c.rpc(Some("S7 PLC"), "get", json!("type=tag;tag=DB9.DBW2:INT;"))
            .await["code"],
        json!(500)
    );
    // The polled values follow (records polled before the writes may still be queued).
    loop {
        let d = next_of(&mut c, "S7 PLC").await;
        if d.value("int") == Some(Value::Int(-77)) {
            assert_eq!(d.value("bit1"), Some(Value::Bool(true)));
            assert_eq!(d.value("relay"), Some(Value::Bool(false)));
            break;
        }
    }
    c.stop().await;
}

#[tokio::test]
async fn the_server_restarted() {
    let port = free_tcp_port();
    let mut server = S7Server::start(port).await;
    let mut c = start(json!({"devices": [plc(port, 100)]}));
    next_of(&mut c, "S7 PLC").await;
    server.stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = c.rpc(Some("S7 PLC"), "getRelay", Json::Null).await;
        if r["code"] == json!(503) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no 503: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.stats.stats().errors() >= 1);
    while c.up.try_recv().is_ok() {}
    let _server = S7Server::start(port).await;
    let d = next_of(&mut c, "S7 PLC").await;
    assert_eq!(d.value("int"), Some(Value::Int(-1234)));
    c.stop().await;
}

async fn read_frame(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4];
    s.read_exact(&mut buf).await.ok()?;
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]])).max(4);
    buf.resize(len, 0);
    s.read_exact(&mut buf[4..]).await.ok()?;
    Some(buf)
}

/// A fake PLC that accepts the connection and answers every ReadVar with a frame whose item
/// count is wrong.
#[tokio::test]
async fn a_malformed_answer_is_counted_and_the_connection_renewed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let _ = accepted_tx.send(());
            tokio::spawn(async move {
                let _ = read_frame(&mut s).await;
                s.write_all(&[3, 0, 0, 11, 6, 0xd0, 0, 1, 0, 1, 0])
                    .await
                    .unwrap();
                let Some(f) = read_frame(&mut s).await else {
                    return;
                };
                let r = [f[11], f[12]];
                s.write_all(&[
                    3, 0, 0, 27, 2, 0xf0, 0x80, 0x32, 3, 0, 0, r[0], r[1], 0, 8, 0, 0, 0, 0, 0xf0,
                    0, 0, 1, 0, 1, 0, 240,
                ])
                .await
                .unwrap();
                while let Some(f) = read_frame(&mut s).await {
                    let r = [f[11], f[12]];
                    // ReadVar answer claiming 3 items, with one.
                    let _ = s
                        .write_all(&[
                            3, 0, 0, 25, 2, 0xf0, 0x80, 0x32, 3, 0, 0, r[0], r[1], 0, 2, 0, 4, 0,
                            0, 4, 3, 0xff, 4, 0, 0,
                        ])
                        .await;
                }
            });
        }
    });
    let c = start(json!({"devices": [plc(port, 50)]}));
    for _ in 0..2 {
        tokio::time::timeout(WAIT, accepted.recv())
            .await
            .expect("a connection")
            .unwrap();
    }
    assert!(c.stats.stats().convert_errors() >= 1);
    c.stop().await;
}

#[test]
fn upstream_sample_builds() {
    if let Some(path) = tbgw::test_util::upstream_sample("s7.json") {
        let config: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut ignored = Vec::new();
        S7Factory::new()
            .build(&spec(config, &path), &mut ignored)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ignored.is_empty(), "{ignored:?}");
    }
}

#[test]
fn config_errors_name_the_key_path() {
    let cases = [
        (json!({"devices": []}), "devices"),
        (
            json!({"devices": [{"type": "PLC", "address": "h", "deviceName": "d", "slot": 1}]}),
            "devices[0].rack",
        ),
        (
            json!({"devices": [{"type": "X", "address": "h", "deviceName": "d"}]}),
            "devices[0].type",
        ),
        (
            json!({"devices": [{"type": "LOGO", "address": "h", "deviceName": "d", "tsapSnap7": "zz", "tsapLogo": 1}]}),
            "devices[0].tsapSnap7",
        ),
        (
            json!({"devices": [{"type": "PLC", "address": "h", "deviceName": "d", "rack": 0, "slot": 1,
            "timeseries": [{"type": "tag", "key": "k", "tag": "DB1.DBQ2:INT"}]}]}),
            "devices[0].timeseries[0].tag",
        ),
        (
            json!({"devices": [{"type": "PLC", "address": "h", "deviceName": "d", "rack": 0, "slot": 1,
            "attributes": [{"type": "data", "key": "k", "dbNumber": 1, "dataType": "real"}]}]}),
            "devices[0].attributes[0].start",
        ),
        (
            json!({"devices": [{"type": "PLC", "address": "h", "deviceName": "d", "rack": 0, "slot": 1,
            "serverSideRpc": [{"method": "m", "requestType": "poke", "type": "vm", "vmAddress": "VW0"}]}]}),
            "devices[0].serverSideRpc[0].requestType",
        ),
        (
            json!({"devices": [{"type": "PLC", "address": "h", "deviceName": "d", "rack": 0, "slot": 1, "retryDelay": -1}]}),
            "devices[0].retryDelay",
        ),
    ];
    for (config, key) in cases {
        let mut ignored = Vec::new();
        let e = match S7Factory::new()
            .build(&spec(config.clone(), Path::new("s7.json")), &mut ignored)
        {
            Ok(_) => panic!("{config} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("s7.json") && e.contains(key), "{key}: {e}");
    }
}
