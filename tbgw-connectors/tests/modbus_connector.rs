//! The Modbus connector against real peers: pymodbus as the server over TCP, UDP and serial
//! lines (RTU and ASCII over socat PTY pairs), pymodbus as the client of slave mode (TCP, UDP,
//! RTU and ASCII), and misbehaving devices (silent, late, exceptions, dropped connections).

#![cfg_attr(not(feature = "modbus"), allow(missing_docs))]
#![cfg(feature = "modbus")]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::downlink::{Downlink, RpcError, RpcRequest, RpcResponder};
use tbgw::model::DeviceData;
use tbgw::stats::ConnectorCounters;
use tbgw::test_util::{free_tcp_port, free_udp_port, PythonPeer};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::modbus::ModbusFactory;

const WAIT: Duration = Duration::from_secs(15);

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers")).join(name)
}

async fn server(kind: &str, where_: &str, values: &Json, late: bool) -> PythonPeer {
    let mut args = vec![
        peer_script("modbus_server.py").display().to_string(),
        kind.to_string(),
        where_.to_string(),
        values.to_string(),
    ];
    if late {
        args.push("late".into());
    }
    let mut p = PythonPeer::spawn(args).expect("pymodbus starts");
    p.wait_output("READY", WAIT).await.expect("pymodbus ready");
    if kind == "tcp" {
        p.wait_tcp(where_.parse().expect("port"), WAIT)
            .await
            .expect("pymodbus listens");
    } else {
        // UDP and serial servers have no connect-level readiness; the connector retries.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    p
}

/// A socat PTY pair: (process, device A, device B), removed on drop.
struct Pty {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    a: String,
    b: String,
}

async fn pty() -> Pty {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("ttyA").display().to_string();
    let b = dir.path().join("ttyB").display().to_string();
    let child = tokio::process::Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={a}"))
        .arg(format!("pty,raw,echo=0,link={b}"))
        .kill_on_drop(true)
        .spawn()
        .expect("socat is installed (.ci/apt.txt)");
    for _ in 0..100 {
        if std::path::Path::new(&a).exists() && std::path::Path::new(&b).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Pty {
        child,
        _dir: dir,
        a,
        b,
    }
}

fn spec(config: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "Modbus".into(),
        connector_type: "modbus".into(),
        file: "modbus.json".into(),
        config: config.into(),
    }
}

fn start(config: Json) -> (tokio::task::JoinHandle<()>, TestEnds, ConnectorCounters) {
    let mut ignored = Vec::new();
    let mut conn = ModbusFactory::new()
        .build(&spec(config), &mut ignored)
        .expect("config is valid");
    let (mut cx, ends): (ConnectorContext, TestEnds) = ConnectorContext::for_test("Modbus");
    let stats = cx.stats().clone();
    let h = tokio::spawn(async move {
        let _ = conn.run(&mut cx).await;
    });
    (h, ends, stats)
}

async fn next_data(ends: &mut TestEnds, device: &str) -> DeviceData {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, ends.uplink.recv())
            .await
            .unwrap_or_else(|_| panic!("no data for {device} in time"))
            .expect("channel open");
        if let UplinkMessage::Data { data, .. } = m {
            if let Some(d) = data.into_iter().find(|d| d.device_name == device) {
                return d;
            }
        }
    }
}

async fn next_event(ends: &mut TestEnds, pred: impl Fn(&UplinkMessage) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, ends.uplink.recv()).await {
        if pred(&m) {
            return true;
        }
    }
    false
}

fn values(d: &DeviceData) -> serde_json::Map<String, Json> {
    let mut m = serde_json::Map::new();
    for e in &d.telemetry {
        for (k, v) in &e.values {
            m.insert(k.clone(), v.to_json());
        }
    }
    for (k, v) in &d.attributes {
        m.insert(format!("attr:{k}"), v.to_json());
    }
    m
}

async fn rpc(
    ends: &TestEnds,
    device: Option<&str>,
    method: &str,
    params: Json,
) -> Result<Json, RpcError> {
    let (responder, rx) = RpcResponder::new();
    ends.downlink
        .send(Downlink::Rpc(RpcRequest {
            device: device.map(str::to_string),
            id: 1,
            method: method.into(),
            params,
            responder,
        }))
        .await
        .expect("connector listens");
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("answer in time")
        .expect("answered")
}

/// Register contents for the type table: (address, registers).
fn type_table_values() -> Json {
    let f32b = 1.5f32.to_bits();
    let f64b = (-2.25f64).to_bits();
    json!({
        "hr": {
            "0": 0xFFFE, "1": 0x3C00,
            // 32int -3, word order LITTLE (low word first)
            "2": 0xFFFD, "3": 0xFFFF,
            // 32float 1.5, word order BIG
            "4": (f32b >> 16), "5": (f32b & 0xFFFF),
            // 64float -2.25, BIG/BIG
            "6": (f64b >> 48) & 0xFFFF, "7": (f64b >> 32) & 0xFFFF, "8": (f64b >> 16) & 0xFFFF, "9": f64b & 0xFFFF,
            // "ON" + "OK"
            "10": 0x4F4E, "11": 0x4F4B,
            // 16uint byte order LITTLE: 0x3412 -> 0x1234
            "12": 0x3412,
            // bits 0 and 2 set
            "13": 5,
            // 8int -1 in the low byte
            "14": 0x00FF,
            // divider and multiplier
            "15": 215, "16": 7,
            // variants
            "17": 2,
            // 64uint 2^40, LITTLE word order
            "18": 0, "19": 0, "20": 256, "21": 0
        },
        "ir": {"0": 42, "1": 43},
        "co": {"1": 1, "3": 1},
        "di": {"0": 1}
    })
}

fn type_table_slave(conn: Json) -> Json {
    let mut slave = json!({
        "unitId": 1, "deviceName": "Types", "deviceType": "meter", "pollPeriod": 200, "timeout": 2,
        "byteOrder": "BIG", "wordOrder": "LITTLE",
        "attributes": [
            {"tag": "serial", "type": "string", "functionCode": 3, "objectsCount": 2, "address": 10}
        ],
        "timeseries": [
            {"tag": "i16", "type": "16int", "functionCode": 3, "objectsCount": 1, "address": 0},
            {"tag": "f16", "type": "16float", "functionCode": 3, "objectsCount": 1, "address": 1},
            {"tag": "i32", "type": "32int", "functionCode": 3, "objectsCount": 2, "address": 2},
            {"tag": "f32", "type": "32float", "functionCode": 3, "objectsCount": 2, "address": 4, "wordOrder": "BIG"},
            {"tag": "f64", "type": "64float", "functionCode": 3, "objectsCount": 4, "address": 6, "wordOrder": "BIG"},
            {"tag": "u16le", "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": 12, "byteOrder": "LITTLE"},
            {"tag": "bit2", "type": "bits", "functionCode": 3, "objectsCount": 1, "address": 13, "bit": 2},
            {"tag": "i8", "type": "8int", "functionCode": 3, "objectsCount": 1, "address": 14},
            {"tag": "div", "type": "16int", "functionCode": 3, "objectsCount": 1, "address": 15, "divider": 10},
            {"tag": "mul", "type": "16int", "functionCode": 3, "objectsCount": 1, "address": 16, "multiplier": 3},
            {"tag": "mode", "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": 17, "variants": {"1": "idle", "2": "run"}},
            {"tag": "u64", "type": "64uint", "functionCode": 3, "objectsCount": 4, "address": 18},
            {"tag": "bytes", "type": "bytes", "functionCode": 3, "objectsCount": 1, "address": 12},
            {"tag": "ir_${address}", "type": "16uint", "functionCode": 4, "objectsCount": 1, "address": "0-1"},
            {"tag": "coils", "type": "bits", "functionCode": 1, "objectsCount": 4, "address": 0, "bitTargetType": "int"},
            {"tag": "coil1", "type": "bits", "functionCode": 1, "objectsCount": 1, "address": 1},
            {"tag": "di0", "type": "bits", "functionCode": 2, "objectsCount": 1, "address": 0}
        ],
        "rpc": [
            {"tag": "getSetpoint", "type": "32float", "functionCode": 3, "objectsCount": 2, "address": 30},
            {"tag": "setSetpoint", "type": "32float", "functionCode": 16, "objectsCount": 2, "address": 30},
            {"tag": "setRelay", "type": "bits", "functionCode": 5, "objectsCount": 1, "address": 7},
            {"tag": "setLevel", "type": "16int", "functionCode": 6, "objectsCount": 1, "address": 32}
        ],
        "attributeUpdates": [
            {"tag": "limit", "type": "32int", "functionCode": 6, "objectsCount": 2, "address": 40}
        ]
    });
    for (k, v) in conn.as_object().expect("object") {
        slave[k] = v.clone();
    }
    json!({"master": {"slaves": [slave]}})
}

fn expected_types() -> Json {
    json!({
        "attr:serial": "ONOK",
        "i16": -2, "f16": 1.0, "i32": -3, "f32": 1.5, "f64": -2.25, "u16le": 0x1234,
        "bit2": 1, "i8": -1, "div": 21.5, "mul": 21, "mode": "run", "u64": 1u64 << 40,
        "bytes": "3412", "ir_0": 42, "ir_1": 43, "coils": [0, 1, 0, 1], "coil1": true, "di0": true
    })
}

async fn check_types(conn: Json, mut peer: PythonPeer) {
    let (h, mut ends, stats) = start(type_table_slave(conn));
    let d = next_data(&mut ends, "Types").await;
    assert_eq!(
        Json::Object(values(&d)),
        expected_types(),
        "peer log:\n{}",
        peer.log()
    );
    assert_eq!(d.device_type, "meter");
    // Neighbouring registers were coalesced: holding 0..21 (with 1 gap) + input + coils + di.
    assert!(stats.messages_received() >= 4);
    h.abort();
    peer.stop().await;
}

#[tokio::test]
async fn every_type_and_order_decodes_from_pymodbus_over_tcp() {
    let port = free_tcp_port();
    let peer = server("tcp", &port.to_string(), &type_table_values(), false).await;
    check_types(
        json!({"type": "tcp", "host": "127.0.0.1", "port": port, "method": "socket"}),
        peer,
    )
    .await;
}

#[tokio::test]
async fn every_type_and_order_decodes_from_pymodbus_over_udp() {
    let port = free_udp_port();
    let peer = server("udp", &port.to_string(), &type_table_values(), false).await;
    check_types(
        json!({"type": "udp", "host": "127.0.0.1", "port": port}),
        peer,
    )
    .await;
}

#[tokio::test]
async fn every_type_and_order_decodes_from_pymodbus_over_serial_rtu() {
    let line = pty().await;
    let peer = server("rtu", &line.a, &type_table_values(), false).await;
    check_types(
        json!({"type": "serial", "method": "rtu", "port": line.b, "baudrate": 19200}),
        peer,
    )
    .await;
    drop(line.child);
}

#[tokio::test]
async fn every_type_and_order_decodes_from_pymodbus_over_serial_ascii() {
    let line = pty().await;
    let peer = server("ascii", &line.a, &type_table_values(), false).await;
    check_types(
        json!({"type": "serial", "method": "ascii", "port": line.b, "baudrate": 19200}),
        peer,
    )
    .await;
    drop(line.child);
}

#[tokio::test]
async fn rpcs_write_and_read_pymodbus_and_tell_exceptions_from_unreachable() {
    let port = free_tcp_port();
    let mut peer = server("tcp", &port.to_string(), &json!({}), false).await;
    let (h, mut ends, _) = start(type_table_slave(
        json!({"type": "tcp", "host": "127.0.0.1", "port": port}),
    ));
    let _ = next_data(&mut ends, "Types").await;

    // Configured methods: FC 16 write, FC 3 read back, FC 5, FC 6.
    assert_eq!(
        rpc(&ends, Some("Types"), "setSetpoint", json!(12.5)).await,
        Ok(json!({"result": {"value": 12.5}}))
    );
    assert_eq!(
        rpc(&ends, Some("Types"), "getSetpoint", json!({})).await,
        Ok(json!({"result": {"value": 12.5}}))
    );
    assert_eq!(
        rpc(&ends, Some("Types"), "setRelay", json!({"value": true})).await,
        Ok(json!({"result": {"value": {"value": true}}}))
    );
    assert_eq!(
        rpc(&ends, Some("Types"), "setLevel", json!(-7)).await,
        Ok(json!({"result": {"value": -7}}))
    );
    // Reserved get/set with the key=value syntax, FC 15 and FC 1.
    assert_eq!(
        rpc(
            &ends,
            Some("Types"),
            "set",
            json!("type=bits;functionCode=15;objectsCount=3;address=50;value=[true,false,true];")
        )
        .await,
        Ok(json!({"result": {"value": [true, false, true]}}))
    );
    assert_eq!(
        rpc(
            &ends,
            Some("Types"),
            "get",
            json!("type=bits;functionCode=1;objectsCount=3;address=50;")
        )
        .await,
        Ok(json!({"result": {"value": [true, false, true]}}))
    );
    assert_eq!(
        rpc(
            &ends,
            Some("Types"),
            "get",
            json!("type=bits;functionCode=1;objectsCount=1;address=7;")
        )
        .await,
        Ok(json!({"result": {"value": true}}))
    );
    assert_eq!(
        rpc(
            &ends,
            Some("Types"),
            "get",
            json!("type=16int;functionCode=3;objectsCount=1;address=32;")
        )
        .await,
        Ok(json!({"result": {"value": -7}}))
    );
    // Attribute update: 32int over FC 6 takes two single-register writes.
    ends.downlink
        .send(Downlink::AttributeUpdate(tbgw::downlink::AttributeUpdate {
            device: "Types".into(),
            values: json!({"limit": -100000})
                .as_object()
                .cloned()
                .expect("object"),
        }))
        .await
        .expect("sent");
    let mut got = Json::Null;
    for _ in 0..50 {
        got = rpc(
            &ends,
            Some("Types"),
            "get",
            json!("type=32int;functionCode=3;objectsCount=2;address=40;"),
        )
        .await
        .expect("read");
        if got == json!({"result": {"value": -100000}}) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, json!({"result": {"value": -100000}}));
    // Connector RPC on every slave.
    assert_eq!(
        rpc(
            &ends,
            None,
            "get",
            json!("type=16int;functionCode=3;objectsCount=1;address=32;")
        )
        .await,
        Ok(json!({"Types": {"result": -7}}))
    );
    // Connector RPC on an ad-hoc slave described in params.
    assert_eq!(
        rpc(&ends, None, "get", json!({"host": "127.0.0.1", "port": port, "unitId": 1, "type": "16int", "functionCode": 3, "address": 32})).await,
        Ok(json!(-7))
    );
    // pymodbus serves 200 addresses: beyond them it answers with an exception (500) ...
    let e = rpc(
        &ends,
        Some("Types"),
        "get",
        json!("type=16int;functionCode=3;objectsCount=1;address=500;"),
    )
    .await;
    assert!(matches!(e, Err(RpcError::Device(_))), "{e:?}");
    // ... bad params are the caller's fault (400), unknown methods 404 ...
    assert!(matches!(
        rpc(
            &ends,
            Some("Types"),
            "set",
            json!("type=16int;functionCode=6;address=1;")
        )
        .await,
        Err(RpcError::BadRequest(_))
    ));
    assert!(matches!(
        rpc(&ends, Some("Types"), "nope", json!({})).await,
        Err(RpcError::NotFound(_))
    ));
    // ... and a device that is gone is unreachable (503).
    peer.stop().await;
    let e = rpc(&ends, Some("Types"), "getSetpoint", json!({})).await;
    assert!(matches!(e, Err(RpcError::Unreachable(_))), "{e:?}");
    h.abort();
}

#[tokio::test]
async fn a_dropped_connection_disconnects_the_device_and_polling_resumes_after_restart() {
    let port = free_tcp_port();
    let vals = json!({"hr": {"0": 11}});
    let mut peer = server("tcp", &port.to_string(), &vals, false).await;
    let cfg = json!({"master": {"slaves": [{
        "type": "tcp", "host": "127.0.0.1", "port": port, "unitId": 1, "deviceName": "D", "pollPeriod": 100, "timeout": 1,
        "connectAttemptTimeMs": 500, "connectAttemptCount": 2, "waitAfterFailedAttemptsMs": 500,
        "timeseries": [{"tag": "v", "type": "16int", "functionCode": 3, "objectsCount": 1, "address": 0}]
    }]}});
    let (h, mut ends, stats) = start(cfg);
    assert!(
        next_event(
            &mut ends,
            |m| matches!(m, UplinkMessage::Connect { device, .. } if device == "D")
        )
        .await
    );
    let d = next_data(&mut ends, "D").await;
    assert_eq!(values(&d)["v"], json!(11));
    peer.stop().await;
    assert!(
        next_event(
            &mut ends,
            |m| matches!(m, UplinkMessage::Disconnect { device, .. } if device == "D")
        )
        .await
    );
    let errors_while_down = stats.errors();
    assert!(errors_while_down >= 1);
    let _peer = server("tcp", &port.to_string(), &json!({"hr": {"0": 12}}), false).await;
    assert!(
        next_event(
            &mut ends,
            |m| matches!(m, UplinkMessage::Connect { device, .. } if device == "D")
        )
        .await
    );
    let d = next_data(&mut ends, "D").await;
    assert_eq!(values(&d)["v"], json!(12));
    h.abort();
}

/// A TCP device that accepts connections and never answers.
async fn silent_device() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (port, h)
}

#[tokio::test]
async fn silent_and_late_devices_do_not_delay_a_healthy_one() {
    let good = free_tcp_port();
    let slow = free_tcp_port();
    let _g = server("tcp", &good.to_string(), &json!({"hr": {"0": 1}}), false).await;
    // Holding registers from 0 answer 1.5 s late on this one.
    let _s = server("tcp", &slow.to_string(), &json!({"hr": {"0": 2}}), true).await;
    let (silent, silent_task) = silent_device().await;
    let dp =
        json!([{"tag": "v", "type": "16int", "functionCode": 3, "objectsCount": 1, "address": 0}]);
    let cfg = json!({"master": {"slaves": [
        {"type": "tcp", "host": "127.0.0.1", "port": silent, "unitId": 1, "deviceName": "Silent", "pollPeriod": 100, "timeout": 1, "retries": 2, "timeseries": dp},
        {"type": "tcp", "host": "127.0.0.1", "port": slow, "unitId": 1, "deviceName": "Late", "pollPeriod": 100, "timeout": 0.5, "retries": 0, "timeseries": dp},
        {"type": "tcp", "host": "127.0.0.1", "port": good, "unitId": 1, "deviceName": "Good", "pollPeriod": 100, "timeout": 1, "timeseries": dp}
    ]}});
    let (h, mut ends, stats) = start(cfg);
    // Count Good's samples over 2 s: at a 100 ms period that is about 20.
    let _ = next_data(&mut ends, "Good").await;
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut good_samples = 0;
    let mut late_samples = 0;
    while let Ok(Some(m)) = tokio::time::timeout_at(until, ends.uplink.recv()).await {
        if let UplinkMessage::Data { data, .. } = m {
            for d in data {
                match d.device_name.as_str() {
                    "Good" => good_samples += 1,
                    "Late" => late_samples += 1,
                    other => panic!("unexpected data from {other}"),
                }
            }
        }
    }
    assert!(
        good_samples >= 15,
        "Good polled only {good_samples} times in 2 s"
    );
    // Answers that arrive after the timeout are never taken for a later request's answer.
    assert_eq!(late_samples, 0);
    assert!(stats.errors() >= 2);
    h.abort();
    silent_task.abort();
}

/// Runs `modbus_client.py WHERE ARGS...` until it succeeds (the server may not be up yet) and
/// returns its JSON output.
async fn pymodbus_client(where_: String, args: Vec<String>) -> Json {
    let mut full = vec![
        peer_script("modbus_client.py").display().to_string(),
        where_,
    ];
    full.extend(args);
    let mut last = String::new();
    for _ in 0..50 {
        let out = tokio::process::Command::new(tbgw::test_util::peers_python())
            .args(&full)
            .output()
            .await
            .expect("python runs");
        if out.status.success() {
            return serde_json::from_slice::<Json>(&out.stdout).expect("json");
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pymodbus client failed: {full:?}\n{last}");
}

#[tokio::test]
async fn slave_mode_serves_pymodbus_and_reports_its_writes() {
    let port = free_tcp_port();
    let cfg = json!({"slave": {
        "type": "tcp", "host": "127.0.0.1", "port": port, "method": "socket", "unitId": 0,
        "deviceName": "Gateway Slave", "deviceType": "plc", "pollPeriod": 5000, "sendDataToThingsBoard": false,
        "byteOrder": "BIG", "wordOrder": "LITTLE",
        "identity": {},
        "values": {
            "holding_registers": {
                "attributes": [{"address": 1, "type": "string", "tag": "sm", "objectsCount": 1, "value": "ON"}],
                "timeseries": [{"address": 2, "type": "16int", "tag": "smm", "objectsCount": 1, "value": 12334}],
                "attributeUpdates": [{"tag": "shared", "type": "32int", "objectsCount": 2, "address": 29, "value": 1243}],
                "rpc": [{"tag": "setValue", "type": "16int", "address": 31, "objectsCount": 1, "value": 22}]
            },
            "coils_initializer": {
                "attributes": [{"address": 5, "type": "bits", "tag": "coil", "objectsCount": 1, "value": true}]
            }
        }
    }});
    let (h, mut ends, _) = start(cfg);
    assert!(
        next_event(
            &mut ends,
            |m| matches!(m, UplinkMessage::Connect { device, .. } if device == "Gateway Slave")
        )
        .await
    );
    let where_ = port.to_string();
    let client = |args: Vec<String>| pymodbus_client(where_.clone(), args);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Initial values: "ON", 12334, 1243 as 32int low word first, 22.
    assert_eq!(
        client(s(&["read-hr", "1", "2"])).await,
        json!([0x4F4E, 12334])
    );
    assert_eq!(
        client(s(&["read-hr", "29", "3"])).await,
        json!([1243, 0, 22])
    );
    assert_eq!(client(s(&["read-co", "5", "1"])).await, json!([true]));
    // A master's write becomes telemetry.
    assert_eq!(client(s(&["write-hr", "2", "777"])).await, json!(true));
    let d = next_data(&mut ends, "Gateway Slave").await;
    assert_eq!(values(&d)["smm"], json!(777));
    assert_eq!(client(s(&["write-co", "5", "0"])).await, json!(true));
    let d = next_data(&mut ends, "Gateway Slave").await;
    assert_eq!(values(&d)["attr:coil"], json!(false));
    // ThingsBoard's attribute update and RPC change the served registers.
    ends.downlink
        .send(Downlink::AttributeUpdate(tbgw::downlink::AttributeUpdate {
            device: "Gateway Slave".into(),
            values: json!({"shared": 70000})
                .as_object()
                .cloned()
                .expect("object"),
        }))
        .await
        .expect("sent");
    assert_eq!(
        rpc(&ends, Some("Gateway Slave"), "setValue", json!(-5)).await,
        Ok(Json::Null)
    );
    assert_eq!(
        rpc(&ends, Some("Gateway Slave"), "setValue", Json::Null).await,
        Ok(json!(-5))
    );
    assert_eq!(
        client(s(&["read-hr", "29", "3"])).await,
        json!([70000 & 0xFFFF, 70000 >> 16, 0xFFFB])
    );
    h.abort();
}

/// Slave mode over one transport: every table read by pymodbus, a register write reported.
async fn check_slave_transport(conn: Json, where_: String) {
    let mut slave = json!({
        "unitId": 1, "deviceName": "Slave", "deviceType": "plc", "pollPeriod": 5000,
        "byteOrder": "BIG", "wordOrder": "LITTLE",
        // Upstream's keys (sic: `ModelName`).
        "identity": {"vendorName": "ThingsBoard", "productCode": 42, "vendorUrl": "https://thingsboard.io",
                     "productName": "tbgw", "ModelName": "Modbus slave"},
        "values": {
            "holding_registers": {
                "timeseries": [{"address": 2, "type": "16int", "tag": "level", "objectsCount": 1, "value": -7}]
            },
            "input_registers": {
                "attributes": [{"address": 0, "type": "32uint", "tag": "serial", "objectsCount": 2, "value": 70000}]
            },
            "coils_initializer": {
                "attributes": [{"address": 5, "type": "bits", "tag": "relay", "objectsCount": 1, "value": true}]
            },
            "discrete_inputs": {
                "attributes": [{"address": 1, "type": "bits", "tag": "door", "objectsCount": 1, "value": true}]
            }
        }
    });
    for (k, v) in conn.as_object().expect("object") {
        slave[k] = v.clone();
    }
    let (h, mut ends, _) = start(json!({ "slave": slave }));
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let client = |args: Vec<String>| pymodbus_client(where_.clone(), args);
    assert_eq!(client(s(&["read-hr", "2", "1"])).await, json!([0xFFF9]));
    assert_eq!(
        client(s(&["read-ir", "0", "2"])).await,
        json!([70000 & 0xFFFF, 70000 >> 16])
    );
    assert_eq!(
        client(s(&["read-co", "4", "2"])).await,
        json!([false, true])
    );
    assert_eq!(client(s(&["read-di", "1", "1"])).await, json!([true]));
    // Read Device Identification (function code 43 / MEI 14): basic, then regular objects.
    let revision = env!("CARGO_PKG_VERSION");
    assert_eq!(
        client(s(&["device-id", "1"])).await,
        json!({"0": "ThingsBoard", "1": "42", "2": revision})
    );
    assert_eq!(
        client(s(&["device-id", "2"])).await,
        json!({"0": "ThingsBoard", "1": "42", "2": revision, "3": "https://thingsboard.io",
               "4": "tbgw", "5": "Modbus slave"})
    );
    assert_eq!(client(s(&["write-hr", "2", "321"])).await, json!(true));
    let d = next_data(&mut ends, "Slave").await;
    assert_eq!(values(&d)["level"], json!(321));
    h.abort();
}

#[tokio::test]
async fn slave_mode_serves_every_table_and_device_identification_over_tcp() {
    let port = free_tcp_port();
    check_slave_transport(
        json!({"type": "tcp", "host": "127.0.0.1", "port": port}),
        format!("tcp:{port}"),
    )
    .await;
}

#[tokio::test]
async fn slave_mode_serves_pymodbus_over_udp() {
    let port = free_udp_port();
    check_slave_transport(
        json!({"type": "udp", "host": "127.0.0.1", "port": port}),
        format!("udp:{port}"),
    )
    .await;
}

#[tokio::test]
async fn slave_mode_serves_pymodbus_over_serial_rtu() {
    let line = pty().await;
    check_slave_transport(
        json!({"type": "serial", "port": line.a, "method": "rtu", "baudrate": 19200}),
        format!("rtu:{}", line.b),
    )
    .await;
    drop(line);
}

#[tokio::test]
async fn slave_mode_serves_pymodbus_over_serial_ascii() {
    let line = pty().await;
    check_slave_transport(
        json!({"type": "serial", "port": line.a, "method": "ascii", "baudrate": 19200}),
        format!("ascii:{}", line.b),
    )
    .await;
    drop(line);
}

/// pymodbus's Modbus/TCP-over-TLS server with certificates from a test CA.
async fn tls_server(
    pki: &tbgw::test_util::Pki,
    port: u16,
    values: &Json,
    client_ca: bool,
) -> PythonPeer {
    let mut where_ = format!(
        "{port}:{}:{}",
        pki.server_cert().display(),
        pki.server_key().display()
    );
    if client_ca {
        where_.push_str(&format!(":{}", pki.ca_cert().display()));
    }
    let mut p = PythonPeer::spawn([
        peer_script("modbus_server.py").display().to_string(),
        "tls".into(),
        where_,
        values.to_string(),
    ])
    .expect("pymodbus starts");
    p.wait_output("READY", WAIT).await.expect("pymodbus ready");
    p.wait_tcp(port, WAIT).await.expect("pymodbus listens");
    p
}

#[tokio::test]
async fn master_polls_pymodbus_over_mutual_tls_and_refuses_a_wrong_server_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = tbgw::test_util::Pki::generate(dir.path(), "");
    let port = free_tcp_port();
    let mut peer = tls_server(&pki, port, &json!({"hr": {"0": 1234, "1": 0xFFFF}}), true).await;
    let tls = json!({
        "certfile": pki.client_cert(), "keyfile": pki.client_key(), "cafile": pki.ca_cert()
    });
    let mut wrong = tls.clone();
    wrong["serverHostname"] = json!("not-the-server.example");
    let points = json!([
        {"tag": "a", "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": 0},
        {"tag": "b", "type": "16int", "functionCode": 3, "objectsCount": 1, "address": 1}
    ]);
    let (h, mut ends, _) = start(json!({"master": {"slaves": [
        {"type": "tcp", "method": "tls", "host": "127.0.0.1", "port": port, "unitId": 1,
         "deviceName": "Secure", "pollPeriod": 100, "timeout": 2, "tls": tls, "timeseries": points},
        // Same server, a name its certificate does not carry: the handshake must fail.
        {"type": "tcp", "method": "tls", "host": "127.0.0.1", "port": port, "unitId": 1,
         "deviceName": "Impostor", "pollPeriod": 100, "timeout": 2, "tls": wrong, "timeseries": points},
        // Without `cafile` the server's certificate is not checked, as upstream does.
        {"type": "tcp", "method": "tls", "host": "127.0.0.1", "port": port, "unitId": 1,
         "deviceName": "Unchecked", "pollPeriod": 100, "timeout": 2,
         "tls": {"certfile": pki.client_cert(), "keyfile": pki.client_key(), "serverHostname": "any.example"},
         "timeseries": points}
    ]}}));
    // Several polls of the good devices, and never a value from the impostor.
    let (mut secure, mut unchecked) = (0, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while secure < 5 || unchecked < 1 {
        let m = tokio::time::timeout_at(deadline, ends.uplink.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not enough data over TLS ({secure}, {unchecked}); peer log:\n{}",
                    peer.log()
                )
            })
            .expect("channel open");
        match m {
            UplinkMessage::Data { data, .. } => {
                for d in &data {
                    assert_ne!(
                        d.device_name, "Impostor",
                        "data from a server with the wrong name"
                    );
                    assert_eq!(Json::Object(values(d)), json!({"a": 1234, "b": -1}));
                    secure += usize::from(d.device_name == "Secure");
                    unchecked += usize::from(d.device_name == "Unchecked");
                }
            }
            UplinkMessage::Connect { device, .. } => assert_ne!(device, "Impostor"),
            _ => {}
        }
    }
    h.abort();
    peer.stop().await;
}

#[tokio::test]
async fn slave_mode_serves_pymodbus_over_tls_and_requires_a_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = tbgw::test_util::Pki::generate(dir.path(), "");
    let port = free_tcp_port();
    let (h, mut ends, _) = start(json!({"slave": {
        "type": "tcp", "method": "socket", "host": "127.0.0.1", "port": port, "unitId": 1,
        "deviceName": "Secure Slave",
        "security": {"certfile": pki.server_cert(), "keyfile": pki.server_key(), "cafile": pki.ca_cert()},
        "values": {"holding_registers": {
            "timeseries": [{"address": 3, "type": "16uint", "tag": "level", "objectsCount": 1, "value": 4321}]
        }}
    }}));
    let with_cert = format!(
        "tls:{port}:{}:{}:{}",
        pki.ca_cert().display(),
        pki.client_cert().display(),
        pki.client_key().display()
    );
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        pymodbus_client(with_cert.clone(), s(&["read-hr", "3", "1"])).await,
        json!([4321])
    );
    assert_eq!(
        pymodbus_client(with_cert, s(&["write-hr", "3", "5"])).await,
        json!(true)
    );
    let d = next_data(&mut ends, "Secure Slave").await;
    assert_eq!(values(&d)["level"], json!(5));
    // The server is up; a client without a certificate is turned away.
    let out = tokio::process::Command::new(tbgw::test_util::peers_python())
        .arg(peer_script("modbus_client.py"))
        .arg(format!("tls:{port}:{}", pki.ca_cert().display()))
        .args(["read-hr", "3", "1"])
        .output()
        .await
        .expect("python runs");
    assert!(
        !out.status.success(),
        "a client without a certificate was served: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    h.abort();
}

#[test]
fn upstream_sample_configs_build() {
    for name in ["modbus.json", "modbus_serial.json"] {
        let Some(path) = tbgw::test_util::upstream_sample(name) else {
            return;
        };
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let config: Json = serde_json::from_str(&text).expect("json");
        let mut ignored = Vec::new();
        let spec = ConnectorSpec {
            name: "Modbus".into(),
            connector_type: "modbus".into(),
            file: path.clone(),
            config: config.into(),
        };
        ModbusFactory::new()
            .build(&spec, &mut ignored)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The slave's `sendDataOnlyOnChange` is its device-level report strategy now.
        assert!(
            !ignored.iter().any(|k| k.contains("sendDataOnlyOnChange")),
            "{ignored:?}"
        );
    }
}

#[test]
fn config_errors_name_the_key_path() {
    let cases = [
        (
            json!({"master": {"slaves": [{"type": "tcp", "port": 1, "timeseries": [{"tag": "t", "type": "16nope", "functionCode": 3, "address": 0}]}]}}),
            "master.slaves[0].timeseries[0].type",
        ),
        (
            json!({"master": {"slaves": [{"type": "tcp", "port": 1, "timeseries": [{"tag": "t", "type": "16int", "functionCode": 5, "address": 0}]}]}}),
            "master.slaves[0].timeseries[0].functionCode",
        ),
        (
            json!({"master": {"slaves": [{"type": "serial", "timeseries": []}]}}),
            "master.slaves[0].port",
        ),
        (
            json!({"master": {"slaves": [{"type": "udp", "port": 1, "method": "tls"}]}}),
            "master.slaves[0].method",
        ),
        (
            json!({"master": {"slaves": [{"type": "tcp", "port": 1, "method": "tls", "tls": {"certfile": "/nonexistent/c.pem", "keyfile": "/nonexistent/k.pem"}}]}}),
            "master.slaves[0].tls.certfile",
        ),
        (
            json!({"master": {"slaves": [{"type": "serial", "port": "/dev/null", "tls": {"cafile": "/nonexistent/ca.pem"}}]}}),
            "master.slaves[0].tls",
        ),
        (
            json!({"slave": {"type": "tcp", "port": 1, "identity": {"VendorName": {"a": 1}}}}),
            "slave.identity.vendorName",
        ),
        (
            json!({"slave": {"type": "tcp", "port": 1, "method": "tls"}}),
            "slave.security.certfile",
        ),
        (
            json!({"slave": {"type": "tcp", "port": 1, "security": {"certfile": "/nonexistent/c.pem"}}}),
            "slave.security.keyfile",
        ),
        (
            json!({"master": {"slaves": [{"type": "tcp", "port": 1, "byteOrder": "MIDDLE"}]}}),
            "master.slaves[0].byteOrder",
        ),
        (
            json!({"master": {"slaves": [{"type": "tcp", "port": 1, "attributes": [{"tag": "a", "type": "string", "functionCode": 3, "address": "9-2"}]}]}}),
            "master.slaves[0].attributes[0].address",
        ),
        (
            json!({"slave": {"type": "tcp", "port": 1, "values": {"holding_registers": {"timeseries": [{"tag": "x", "type": "16int", "address": 1, "value": 99999}]}}}}),
            "slave.values.holding_registers.timeseries[0].value",
        ),
    ];
    for (config, key) in cases {
        let mut ignored = Vec::new();
        let Err(e) = ModbusFactory::new().build(&spec(config), &mut ignored) else {
            panic!("{key}: accepted");
        };
        assert_eq!(e.key, key, "{e}");
    }
}

#[tokio::test]
async fn end_to_end_registers_reach_thingsboard_and_an_rpc_writes_pymodbus() {
    use tbgw::test_util::{Mosquitto, TbStandIn};
    use tbgw::{Gateway, TbOptions};
    let port = free_tcp_port();
    let _peer = server("tcp", &port.to_string(), &json!({"hr": {"0": 215}}), false).await;
    let broker = Mosquitto::start().await.expect("mosquitto starts");
    let tb = TbStandIn::connect(broker.port())
        .await
        .expect("stand-in connects");
    let cfg = json!({"master": {"slaves": [{
        "type": "tcp", "host": "127.0.0.1", "port": port, "unitId": 1, "deviceName": "Meter 1", "deviceType": "meter",
        "pollPeriod": 200, "timeout": 2,
        "timeseries": [{"tag": "temperature", "type": "16int", "functionCode": 3, "objectsCount": 1, "address": 0, "divider": 10}],
        "rpc": [{"tag": "setLevel", "type": "16int", "functionCode": 6, "objectsCount": 1, "address": 5}]
    }]}});
    let mut ignored = Vec::new();
    let conn = ModbusFactory::new()
        .build(&spec(cfg), &mut ignored)
        .expect("valid");
    let mut opts = TbOptions::access_token("127.0.0.1", broker.port(), "token");
    opts.session_limits_timeout = Duration::from_millis(500);
    let gateway = Gateway::builder()
        .thingsboard(opts)
        .connector("Modbus", "modbus", conn)
        .build()
        .expect("gateway builds");
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gw = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    let connect = tb
        .wait_for(WAIT, |m| m.topic == "v1/gateway/connect")
        .await
        .expect("device announced");
    assert_eq!(
        connect.json,
        Some(json!({"device": "Meter 1", "type": "meter"}))
    );
    let tele = tb
        .wait_for(WAIT, |m| m.topic == "v1/gateway/telemetry")
        .await
        .expect("telemetry");
    let json = tele.json.expect("json");
    assert_eq!(
        json["Meter 1"][0]["values"]["temperature"],
        json!(21.5),
        "{json}"
    );

    tb.send_rpc("Meter 1", 77, "setLevel", json!(-42))
        .await
        .expect("rpc sent");
    let reply = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/rpc" && m.get("id") == Some(&json!(77))
        })
        .await
        .expect("rpc reply");
    // As the Python gateway: a write echoes the value written.
    assert_eq!(
        reply.json.expect("json")["data"],
        json!({"result": {"value": -42}})
    );
    // pymodbus now holds the value: read it back with pymodbus's own client.
    let out = tokio::process::Command::new(tbgw::test_util::peers_python())
        .arg("-c")
        .arg(format!(
            "from pymodbus.client import ModbusTcpClient as C; c=C('127.0.0.1', port={port}); c.connect(); print(c.read_holding_registers(5, count=1, device_id=1).registers[0])"
        ))
        .output()
        .await
        .expect("python runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        ((-42i16) as u16).to_string()
    );
    let _ = stop.send(());
    let _ = gw.await;
}

#[tokio::test]
async fn a_panicking_connection_task_is_counted_and_the_connector_recovers() {
    let port = free_tcp_port();
    let _peer = server("tcp", &port.to_string(), &json!({"hr": {"0": 11}}), false).await;
    let cfg = json!({"master": {"slaves": [{
        "type": "tcp", "host": "127.0.0.1", "port": port, "unitId": 1, "deviceName": "D", "pollPeriod": 100, "timeout": 1,
        "timeseries": [{"tag": "v", "type": "16int", "functionCode": 3, "objectsCount": 1, "address": 0}]
    }]}});
    let conn = ModbusFactory::new()
        .build(&spec(cfg), &mut Vec::new())
        .expect("config is valid");
    let (cx, mut ends) = ConnectorContext::for_test("Modbus");
    let stats = cx.stats().clone();
    // No device input makes a connection task panic any more (the hex bytes one below was
    // the last), so the test-only fault hook makes the first run's connection task panic.
    ends.fail_next_task("connection");
    let h = tokio::spawn(cx.supervise(conn));
    let d = next_data(&mut ends, "D").await;
    assert_eq!(values(&d)["v"], json!(11));
    assert_eq!(stats.task_failures(), 1);
    assert_eq!(stats.restarts(), 1);

    // A `bytes` value with a non-ASCII character used to panic in the connection task (a
    // `str` sliced off a char boundary); now the RPC gets a clear error and polling goes on.
    let r = rpc(
        &ends,
        Some("D"),
        "set",
        json!("type=bytes;functionCode=16;objectsCount=2;address=10;value=aé0;"),
    )
    .await;
    assert!(
        matches!(&r, Err(e) if e.to_json().to_string().contains("not a hex digit")),
        "{r:?}"
    );
    let _ = next_data(&mut ends, "D").await;
    let _ = next_data(&mut ends, "D").await;
    assert_eq!(stats.task_failures(), 1);
    assert_eq!(stats.restarts(), 1);
    ends.cancel.cancel();
    h.await.unwrap();
}

/// Reads holding register 1 over an open Modbus/TCP connection: `Some(answer)` or `None`
/// when the server closed the connection.
async fn read_hr1(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = [0u8, 1, 0, 0, 0, 6, 0, 3, 0, 1, 0, 1];
    if s.write_all(&req).await.is_err() {
        return None;
    }
    let mut answer = vec![0u8; 11];
    match tokio::time::timeout(WAIT, s.read_exact(&mut answer)).await {
        Ok(Ok(_)) => Some(answer),
        Ok(Err(_)) => None,
        Err(_) => panic!("neither an answer nor a close"),
    }
}

#[tokio::test]
async fn slave_mode_closes_masters_above_max_connections() {
    let port = free_tcp_port();
    let cfg = json!({"slave": {
        "type": "tcp", "host": "127.0.0.1", "port": port, "method": "socket", "unitId": 0,
        "deviceName": "Limited Slave", "deviceType": "plc", "maxConnections": 2,
        "values": {"holding_registers": {
            "attributes": [{"address": 1, "type": "16int", "tag": "v", "objectsCount": 1, "value": 42}]
        }}
    }});
    let (h, mut ends, stats) = start(cfg);
    assert!(
        next_event(
            &mut ends,
            |m| matches!(m, UplinkMessage::Connect { device, .. } if device == "Limited Slave")
        )
        .await
    );
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", port));
    let mut first = connect().await.expect("connects");
    let mut second = connect().await.expect("connects");
    let served = [0u8, 1, 0, 0, 0, 5, 0, 3, 2, 0, 42];
    assert_eq!(read_hr1(&mut first).await.as_deref(), Some(&served[..]));
    assert_eq!(read_hr1(&mut second).await.as_deref(), Some(&served[..]));
    // A third master is closed at once, its request unanswered.
    let mut third = connect().await.expect("the listener accepts");
    assert_eq!(read_hr1(&mut third).await, None, "over the limit");
    assert!(stats.errors() >= 1);
    // The two are still served, and a freed slot is taken by the next master.
    assert_eq!(read_hr1(&mut second).await.as_deref(), Some(&served[..]));
    drop(first);
    let mut answered = false;
    for _ in 0..100 {
        let mut next = connect().await.expect("connects");
        if read_hr1(&mut next).await.as_deref() == Some(&served[..]) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "a freed slot is used again");
    h.abort();
}
