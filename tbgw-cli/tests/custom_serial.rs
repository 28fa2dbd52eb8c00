//! Upstream's own custom connector example, unchanged: its `SerialConnector` class
//! (`thingsboard_gateway/extensions/serial/`, from the upstream virtualenv's installed
//! package) with a `custom_serial.json` like upstream's, run by the `tbgw` binary as a Python
//! custom connector over a socat PTY pair, with mosquitto as ThingsBoard: serial lines become
//! telemetry and attributes, an RPC and an attribute update are written to the serial line,
//! and the connector process killed is restarted and carries on.
#![cfg(feature = "grpc")]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::GatewayProcess;
use serde_json::{json, Value};
use tbgw::test_util::{free_tcp_port, Mosquitto, TbStandIn};

const WAIT: Duration = Duration::from_secs(30);

fn upstream_python() -> Option<PathBuf> {
    let venv = std::env::var_os("TBGW_UPSTREAM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tbgw-upstream")
        });
    let py = venv.join("bin/python");
    py.exists().then_some(py)
}

/// A socat PTY pair; `a` is the connector's port, the test is the device on `b`.
struct Pty {
    _socat: tokio::process::Child,
    a: String,
    device: std::fs::File,
    received: Arc<Mutex<Vec<u8>>>,
}

async fn pty(dir: &Path) -> Pty {
    let a = dir.join("ttyA").display().to_string();
    let b = dir.join("ttyB").display().to_string();
    let socat = tokio::process::Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={a}"))
        .arg(format!("pty,raw,echo=0,link={b}"))
        .kill_on_drop(true)
        .spawn()
        .expect("socat is installed (.ci/apt.txt)");
    for _ in 0..250 {
        if Path::new(&a).exists() && Path::new(&b).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&b)
        .expect("open the device end");
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut reader = device.try_clone().expect("clone");
    let sink = received.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    Pty {
        _socat: socat,
        a,
        device,
        received,
    }
}

impl Pty {
    fn send_line(&mut self, line: &[u8]) {
        self.device
            .write_all(line)
            .expect("write to the serial line");
    }

    async fn wait_received(&self, text: &[u8]) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self
                .received
                .lock()
                .expect("lock")
                .windows(text.len())
                .any(|w| w == text)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the serial line never got {:?}; got {:?}",
                String::from_utf8_lossy(text),
                String::from_utf8_lossy(&self.received.lock().expect("lock"))
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A connector file in the shape of upstream's `custom_serial.json` example.
fn custom_serial(port: &str) -> Value {
    json!({
        "name": "Custom serial connector",
        "logLevel": "INFO",
        "uplinkQueueSize": 100000,
        "devices": [{
            "name": "SerialDevice1",
            "type": "default",
            "port": port,
            "baudrate": 9600,
            "converter": "SerialUplinkConverter",
            "downlink_converter": "SerialDownlinkConverter",
            "telemetry": [{"type": "float", "key": "humidity", "untilDelimiter": "\r"}],
            "attributes": [{"key": "SerialNumber", "type": "string", "fromByte": 4, "toByte": -1}],
            "attributeUpdates": [{"attributeOnPlatform": "attr1", "stringToDevice": "value = ${attr1}\n"}],
            "serverSideRpc": [
                {"method": "setValue", "type": "int", "withResponse": true, "responseType": "string",
                 "responseUntilDelimiter": "\r", "responseTimeoutSec": 5},
                {"method": "getValue", "type": "string", "withResponse": false}
            ]
        }]
    })
}

/// Sends `line` until ThingsBoard has telemetry with `humidity == value` from the device.
async fn line_reaches_thingsboard(
    pty: &mut Pty,
    tb: &TbStandIn,
    line: &[u8],
    value: f64,
    gw: &mut GatewayProcess,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        pty.send_line(line);
        let got = tb
            .wait_for(Duration::from_millis(500), |m| {
                m.topic == "v1/gateway/telemetry"
                    && m.json.as_ref().is_some_and(|j| {
                        j["SerialDevice1"].as_array().is_some_and(|a| {
                            a.iter().any(|e| e["values"]["humidity"] == json!(value))
                        })
                    })
            })
            .await;
        if got.is_some() {
            return;
        }
        if let Ok(Some(status)) = gw.child.try_wait() {
            panic!("the gateway exited ({status}); log:\n{}", gw.log());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no humidity {value} at ThingsBoard; gateway log:\n{}",
            gw.log()
        );
    }
}

/// The pids of the host processes that started the class, from the gateway's log (the host
/// logs `[tbgw_custom] SerialConnector of serial running as connector ..., pid N`).
fn host_pids(log: &str) -> Vec<u32> {
    log.lines()
        .filter(|l| l.contains("[tbgw_custom] SerialConnector of serial running"))
        .filter_map(|l| l.split_once(", pid "))
        .filter_map(|(_, p)| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_custom_serial_connector_runs_unchanged() {
    let Some(python) = upstream_python() else {
        eprintln!("skipped: no upstream virtualenv with its package and pyserial (.ci/install)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pty = pty(dir.path()).await;
    let tbb = Mosquitto::start().await.expect("mosquitto");
    let tb = TbStandIn::connect(tbb.port()).await.expect("stand-in");
    let grpc_port = free_tcp_port();
    let main = json!({
        "thingsboard": {"host": "127.0.0.1", "port": tbb.port(), "qos": 1,
                        "security": {"type": "accessToken", "accessToken": "GW_TOKEN"},
                        "remoteShell": false},
        "storage": {"type": "memory", "max_records_count": 100000, "read_records_count": 100},
        "grpc": {"enabled": true, "serverPort": grpc_port, "serverHost": "127.0.0.1"},
        "connectors": [{"type": "serial", "name": "Custom serial connector",
                        "configuration": "custom_serial.json", "class": "SerialConnector",
                        "python": python.display().to_string()}]
    });
    std::fs::write(dir.path().join("tb_gateway.json"), main.to_string()).expect("write");
    std::fs::write(
        dir.path().join("custom_serial.json"),
        custom_serial(&pty.a).to_string(),
    )
    .expect("write");
    let mut gw = GatewayProcess::start(
        &dir.path().join("tb_gateway.json"),
        &dir.path().join("gateway.log"),
    );

    // A serial line: humidity until `\r`, the serial number from byte 4 on.
    line_reaches_thingsboard(&mut pty, &tb, b"45.5\rSN-0042\n", 45.5, &mut gw).await;
    let attrs = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/attributes" && m.text().contains("SerialNumber")
        })
        .await
        .unwrap_or_else(|| panic!("attributes; log:\n{}", gw.log()));
    assert_eq!(
        attrs.json.expect("json")["SerialDevice1"]["SerialNumber"],
        json!("SN-0042")
    );
    let connect = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/connect" && m.text().contains("SerialDevice1")
        })
        .await
        .expect("connect");
    assert_eq!(
        connect.json,
        Some(json!({"device": "SerialDevice1", "type": "default"}))
    );

    // An RPC: its parameter is written to the serial line, the answer reaches ThingsBoard.
    tb.send_rpc("SerialDevice1", 41, "getValue", json!("ping-41"))
        .await
        .expect("rpc sent");
    pty.wait_received(b"ping-41").await;
    let reply = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/rpc" && m.json.as_ref().is_some_and(|j| j["id"] == json!(41))
        })
        .await
        .unwrap_or_else(|| panic!("rpc reply; log:\n{}", gw.log()));
    let reply = reply.json.expect("json");
    assert_eq!(reply["device"], json!("SerialDevice1"));
    assert_eq!(reply["data"]["success"], json!(true), "{reply}");

    // A shared attribute update, written with the entry's `stringToDevice` template.
    tb.send_attribute_update("SerialDevice1", json!({"attr1": 17}))
        .await
        .expect("update sent");
    pty.wait_received(b"value = 17\n").await;

    // The connector process killed: tbgw starts it again, and it carries on both ways.
    let pids = host_pids(&gw.log());
    assert_eq!(pids.len(), 1, "one host process; log:\n{}", gw.log());
    let _ = std::process::Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status();
    let deadline = tokio::time::Instant::now() + WAIT;
    while host_pids(&gw.log()).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not restarted; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    line_reaches_thingsboard(&mut pty, &tb, b"51.25\rSN-0042\n", 51.25, &mut gw).await;
    tb.send_rpc("SerialDevice1", 42, "getValue", json!("ping-42"))
        .await
        .expect("rpc sent");
    pty.wait_received(b"ping-42").await;
    tb.wait_for(WAIT, |m| {
        m.topic == "v1/gateway/rpc" && m.json.as_ref().is_some_and(|j| j["id"] == json!(42))
    })
    .await
    .unwrap_or_else(|| panic!("rpc reply after the restart; log:\n{}", gw.log()));

    let (_, log) = gw.terminate().await;
    assert!(
        !log.contains("panicked"),
        "the gateway panicked; log:\n{log}"
    );
}
