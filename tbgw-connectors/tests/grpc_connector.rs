//! The gRPC connector API against out-of-process connectors written with grpcio
//! (`tests/peers/grpc_client.py`, speaking the messages as upstream's client does): the unary
//! `stream` method polled as upstream's client polls it, and tbgw's bidirectional `session`.
#![cfg_attr(not(feature = "grpc"), allow(missing_docs))]
#![cfg(feature = "grpc")]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcRequest, RpcResponder};
use tbgw::model::Value;
use tbgw::test_util::{free_tcp_port, PythonPeer};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::grpc::{GrpcFactory, GrpcMainConfig};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/grpc/proto")
}

fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/grpc_client.py")
}

/// A gateway-less gRPC server with one `type: grpc` connector `Ext` of key `key`, run with a
/// test context.
struct Harness {
    ends: TestEnds,
    port: u16,
    server_stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    not_started: Option<(Box<dyn tbgw::connector::Connector>, ConnectorContext)>,
    dir: tempfile::TempDir,
}

async fn harness(key: &str, command: Option<Vec<String>>) -> Harness {
    let mut h = harness_not_started(key, command).await;
    h.start();
    h
}

/// The server runs, the connector is built but does not run until [`Harness::start`].
async fn harness_not_started(key: &str, command: Option<Vec<String>>) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ext.json");
    std::fs::write(
        &file,
        r#"{"id": "ext-id-1", "devices": [{"name": "Dev1"}]}"#,
    )
    .expect("write");
    let port = free_tcp_port();
    let main = json!({
        "grpc": {"enabled": true, "serverPort": port, "serverHost": "127.0.0.1", "keepAliveTimeMs": 10000},
        "connectors": [{"type": "grpc", "name": "Ext", "configuration": "ext.json", "key": key, "command": command}]
    });
    let cfg =
        GrpcMainConfig::from_value(&dir.path().join("tb_gateway.json"), dir.path(), &main, true)
            .expect("valid main file");
    let factory = GrpcFactory::new(cfg);
    let server = factory.server().await.expect("enabled").expect("binds");
    let server_stop = CancellationToken::new();
    tokio::spawn(server.run(server_stop.clone()));
    let spec = ConnectorSpec {
        name: "Ext".into(),
        connector_type: "grpc".into(),
        file: file.clone(),
        config: json!({"devices": [{"name": "Dev1"}]}).into(),
    };
    let connector = factory.build(&spec, &mut Vec::new()).expect("builds");
    let (cx, ends) = ConnectorContext::for_test("Ext");
    Harness {
        ends,
        port,
        server_stop,
        task: None,
        not_started: Some((connector, cx)),
        dir,
    }
}

impl Harness {
    fn start(&mut self) {
        if let Some((mut connector, mut cx)) = self.not_started.take() {
            self.task = Some(tokio::spawn(async move {
                connector
                    .run(&mut cx)
                    .await
                    .expect("connector ends cleanly");
            }));
        }
    }

    fn client(&self, key: &str, mode: &str, script: &str) -> PythonPeer {
        PythonPeer::spawn([
            client_script().display().to_string(),
            proto_dir().display().to_string(),
            self.port.to_string(),
            key.to_string(),
            mode.to_string(),
            script.to_string(),
        ])
        .expect("python starts")
    }

    async fn stop(self) {
        self.ends.cancel.cancel();
        if let Some(task) = self.task {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
        self.server_stop.cancel();
    }

    async fn next(&mut self) -> UplinkMessage {
        tokio::time::timeout(WAIT, self.ends.uplink.recv())
            .await
            .expect("uplink in time")
            .expect("uplink open")
    }

    async fn rpc(
        &self,
        device: &str,
        id: i64,
        method: &str,
        params: Json,
    ) -> tbgw::downlink::RpcAnswer {
        let (responder, answer) = RpcResponder::new();
        self.ends
            .downlink
            .send(Downlink::Rpc(RpcRequest {
                device: Some(device.to_string()),
                id,
                method: method.to_string(),
                params,
                responder,
            }))
            .await
            .expect("connector takes downlink");
        answer
    }
}

fn value(d: &[(String, Value)], key: &str) -> Option<Value> {
    d.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn all_types() -> Vec<(&'static str, Value)> {
    vec![
        ("b", Value::Bool(true)),
        ("l", Value::Int(42)),
        ("d", Value::Float(2.5)),
        ("s", Value::String("text".into())),
        ("j", Value::Json(json!({"k": [1, 2]}))),
    ]
}

/// Registration, devices, telemetry and attributes of every type, an attribute request, an RPC
/// round trip with its request id and attribute updates, in one mode.
async fn full_round(mode: &str) {
    let mut h = harness("secret-1", None).await;
    let mut client = h.client("secret-1", mode, "basic");
    client
        .wait_output("REGISTERED Ext", WAIT)
        .await
        .expect("registered");
    // The connector file is the configuration the connector receives.
    assert!(
        client.log().contains(r#""id": "ext-id-1""#),
        "{}",
        client.log()
    );

    let mut connects = Vec::new();
    let mut disconnects = Vec::new();
    let mut telemetry = None;
    let mut attributes = None;
    while telemetry.is_none() || attributes.is_none() || disconnects.is_empty() {
        match h.next().await {
            UplinkMessage::Connect {
                device,
                device_type,
                ..
            } => connects.push((device, device_type)),
            UplinkMessage::Disconnect { device, .. } => disconnects.push(device),
            UplinkMessage::Data { mut data, .. } => {
                let d = data.remove(0);
                assert_eq!(d.device_name, "Dev1");
                assert_eq!(d.device_type, "thermo", "the type of its connectMsg");
                if d.telemetry.is_empty() {
                    attributes = Some(d);
                } else {
                    telemetry = Some(d);
                }
            }
            UplinkMessage::AttributeRequest { .. } => panic!("attribute request before the data"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        connects,
        vec![
            ("Dev1".to_string(), "thermo".to_string()),
            ("Dev2".to_string(), "other".to_string())
        ]
    );
    assert_eq!(disconnects, vec!["Dev2".to_string()]);
    let t = telemetry.expect("telemetry");
    assert_eq!(t.telemetry[0].ts, 1_700_000_000_000);
    let a = attributes.expect("attributes");
    for (k, v) in all_types() {
        assert_eq!(
            value(&t.telemetry[0].values, k),
            Some(v.clone()),
            "telemetry {k}"
        );
        assert_eq!(value(&a.attributes, k), Some(v), "attribute {k}");
    }

    // The attribute request reaches ThingsBoard's side; its answer reaches the connector.
    match h.next().await {
        UplinkMessage::AttributeRequest {
            device,
            client: is_client,
            keys,
            reply,
        } => {
            assert_eq!(
                (device.as_str(), is_client, keys),
                ("Dev1", false, vec!["sk".to_string()])
            );
            reply
                .send(json!({"id": 1, "device": "Dev1", "value": "shared-value"}))
                .expect("request waits");
        }
        other => panic!("expected an attribute request, got {other:?}"),
    }
    client
        .wait_output(r#"ATTRRESP 7 {"sk": "shared-value"}"#, WAIT)
        .await
        .expect("attribute response");

    // RPC round trip: the request id and params reach the connector, its answer comes back.
    let answer = h.rpc("Dev1", 31, "setValue", json!({"v": 5})).await;
    client
        .wait_output(r#"RPC Dev1 31 setValue {"v":5}"#, WAIT)
        .await
        .expect("rpc delivered");
    let body = tokio::time::timeout(WAIT, answer.reply())
        .await
        .expect("answered")
        .expect("answer");
    assert_eq!(
        body,
        json!({"success": true, "method": "setValue", "echo": {"v": 5}})
    );

    // Shared attribute updates of every type, and a deletion.
    let values = json!({"b": false, "l": 7, "d": 0.5, "s": "x", "j": {"a": 1}});
    h.ends
        .downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Dev1".into(),
            values: values.as_object().cloned().expect("object"),
        }))
        .await
        .expect("downlink");
    client
        .wait_output(
            r#"ATTRUPDATE Dev1 {"b": ["BOOLEAN_V", false], "d": ["DOUBLE_V", 0.5], "j": ["JSON_V", "{\"a\":1}"], "l": ["LONG_V", 7], "s": ["STRING_V", "x"]}"#,
            WAIT,
        )
        .await
        .expect("attribute update");
    h.ends
        .downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Dev1".into(),
            values: json!({"deleted": ["s"]})
                .as_object()
                .cloned()
                .expect("object"),
        }))
        .await
        .expect("downlink");
    client
        .wait_output(r#"DELETED Dev1 ["s"]"#, WAIT)
        .await
        .expect("deletion");

    // Stopping the connector tells the process it is no longer registered.
    h.ends.cancel.cancel();
    client
        .wait_output("UNREGISTERED", WAIT)
        .await
        .expect("told on stop");
    client.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_style_polling_client_does_everything() {
    full_round("unary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_client_does_everything() {
    full_round("stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused() {
    let h = harness("right-key", None).await;
    for mode in ["unary", "stream"] {
        let mut client = h.client("wrong-key", mode, "basic");
        client
            .wait_output("REFUSED NOT_FOUND", WAIT)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(!client.log().contains("REGISTERED"), "{}", client.log());
        client.stop().await;
    }
    h.stop().await;
}

/// A connector killed with an RPC in hand and another queued while it is away: the restarted
/// process (a new session) gets both, answers, and the gateway gets the answers.
async fn killed_and_restarted(mode: &str) {
    let mut h = harness("k", None).await;
    let mut first = h.client("k", mode, "noanswer");
    first
        .wait_output("REGISTERED Ext", WAIT)
        .await
        .expect("registered");
    let a1 = h.rpc("Dev1", 1, "first", json!(1)).await;
    first
        .wait_output("RPC Dev1 1 first 1", WAIT)
        .await
        .expect("first process got it");
    first.stop().await;
    let a2 = h.rpc("Dev1", 2, "second", json!("two")).await;

    let mut second = h.client("k", mode, "basic");
    second
        .wait_output("REGISTERED Ext", WAIT)
        .await
        .expect("registered again");
    second
        .wait_output("RPC Dev1 1 first 1", WAIT)
        .await
        .expect("unanswered RPC sent again");
    second
        .wait_output("RPC Dev1 2 second two", WAIT)
        .await
        .expect("queued RPC delivered");
    let b1 = tokio::time::timeout(WAIT, a1.reply())
        .await
        .expect("answered")
        .expect("answer");
    let b2 = tokio::time::timeout(WAIT, a2.reply())
        .await
        .expect("answered")
        .expect("answer");
    assert_eq!(b1["echo"], json!(1));
    assert_eq!(b2["echo"], json!("two"));
    // The restarted connector's data still flows.
    loop {
        if let UplinkMessage::Data { data, .. } = h.next().await {
            if data[0].device_name == "Dev1" {
                break;
            }
        }
    }
    second.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_connector_killed_and_restarted_loses_no_downlink() {
    killed_and_restarted("unary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_connector_killed_and_restarted_loses_no_downlink() {
    killed_and_restarted("stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_command_is_started_restarted_when_it_exits_and_serves_the_connector() {
    let python = tbgw::test_util::peers_python().display().to_string();
    // The supervised process gets upstream's two extra arguments (settings JSON, config
    // dir). This wrapper exits at once the first time (leaving a mark in the config dir), so
    // only the restarted process runs the test client with the port and key of the JSON.
    let wrapper = format!(
        "import json,os,subprocess,sys; s=json.loads(sys.argv[1]); mark=sys.argv[2]+'started-once'\n\
         if not os.path.exists(mark):\n    open(mark,'w').close(); sys.exit(1)\n\
         sys.exit(subprocess.call([{python:?}, {script:?}, {proto:?}, str(s['gateway']['port']), s['grpc_key'], 'stream', 'basic']))",
        script = client_script().display().to_string(),
        proto = proto_dir().display().to_string(),
    );
    let mut h = harness("cmd-key", Some(vec![python, "-c".into(), wrapper])).await;
    // The process registers and sends its data without the test starting anything, after
    // one restart.
    let mut seen = 0;
    while seen < 1 {
        if let UplinkMessage::Data { data, .. } = h.next().await {
            assert_eq!(data[0].device_name, "Dev1");
            seen += 1;
        }
    }
    let answer = h.rpc("Dev1", 5, "ping", json!({})).await;
    let body = tokio::time::timeout(WAIT, answer.reply())
        .await
        .expect("answered")
        .expect("answer");
    assert_eq!(body["method"], json!("ping"));
    assert!(h.dir.path().join("started-once").exists());
    h.stop().await;
}

/// A connector process that registers and sends before its tbgw connector runs (the server
/// starts first): its data waits for the connector instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_before_the_connector_runs_wait_for_it() {
    let mut h = harness_not_started("early", None).await;
    let mut client = h.client("early", "stream", "basic");
    client
        .wait_output("SENT", WAIT)
        .await
        .expect("registered and sent");
    assert!(
        h.ends.uplink.try_recv().is_err(),
        "nothing can arrive before the connector runs"
    );
    h.start();
    let mut got_data = false;
    while !got_data {
        got_data = matches!(h.next().await, UplinkMessage::Data { .. });
    }
    assert!(!client.log().contains("FAILURE"), "{}", client.log());
    client.stop().await;
    h.stop().await;
}

/// Our `messages.proto` against the descriptor upstream's package ships
/// (`thingsboard_gateway/gateway/proto/messages_pb2.py`): every message and enum the same
/// (names, numbers, types, labels), and upstream's `stream` method unchanged. Skipped when
/// upstream's virtualenv (`.ci/install`) is not there.
#[test]
fn messages_proto_is_upstreams_on_the_wire() {
    let venv = std::env::var_os("TBGW_UPSTREAM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tbgw-upstream")
        });
    let upstream_python = venv.join("bin/python");
    if !upstream_python.exists() {
        eprintln!("skipped: no upstream virtualenv at {}", venv.display());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let set = dir.path().join("ours.pb");
    let st = std::process::Command::new(tbgw::test_util::peers_python())
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_dir().display()))
        .arg(format!("--descriptor_set_out={}", set.display()))
        .arg(proto_dir().join("messages.proto"))
        .status()
        .expect("protoc runs");
    assert!(st.success());
    let script = r#"
import sys
from google.protobuf import descriptor_pb2
import thingsboard_gateway.gateway.proto.messages_pb2 as m
up = descriptor_pb2.FileDescriptorProto()
m.DESCRIPTOR.CopyToProto(up)
fs = descriptor_pb2.FileDescriptorSet()
fs.ParseFromString(open(sys.argv[1], 'rb').read())
ours = fs.file[0]
for fd in (up, ours):
    for msg in fd.message_type:
        for f in msg.field:
            f.ClearField('json_name')
assert up.package == ours.package, (up.package, ours.package)
assert list(up.message_type) == list(ours.message_type), 'messages differ'
assert list(up.enum_type) == list(ours.enum_type), 'enums differ'
svc = {s.name: s for s in ours.service}
for s in up.service:
    mine = {x.name: x for x in svc[s.name].method}
    for meth in s.method:
        assert mine[meth.name] == meth, meth.name
print('SAME', len(up.message_type), 'messages', len(up.enum_type), 'enums')
"#;
    let out = std::process::Command::new(&upstream_python)
        .args(["-c", script])
        .arg(&set)
        .output()
        .expect("upstream python runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("SAME 36 messages 2 enums"),
        "{text}"
    );
}

/// A supervised process whose output is not UTF-8 (and more of it than a pipe holds) is read
/// on: it does not block on a full pipe, registers and serves the connector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_printing_bytes_that_are_not_utf8_is_not_blocked() {
    let python = tbgw::test_util::peers_python().display().to_string();
    let wrapper = format!(
        "import json,os,sys; s=json.loads(sys.argv[1])\n\
         sys.stdout.buffer.write(b'\\xff\\xfe not text\\n' * 20000); sys.stdout.flush()\n\
         os.execv({python:?}, [{python:?}, {script:?}, {proto:?}, str(s['gateway']['port']), s['grpc_key'], 'stream', 'basic'])",
        script = client_script().display().to_string(),
        proto = proto_dir().display().to_string(),
    );
    let mut h = harness("bytes-key", Some(vec![python, "-c".into(), wrapper])).await;
    loop {
        if let UplinkMessage::Data { data, .. } = h.next().await {
            assert_eq!(data[0].device_name, "Dev1");
            break;
        }
    }
    h.stop().await;
}
