//! The REST connector against a real HTTP client (`curl`) over http and https: request data
//! merged from path, query, JSON, form, multipart and text bodies; every error status
//! (400, 401, 404, 405, 413, 503, 504) with the server still serving afterwards; held
//! `responseExpected` requests answered by an RPC or an attribute update; attribute requests
//! that wait for ThingsBoard; outgoing RPCs and attribute updates to a real HTTP server
//! (`peers/request_server.py`); and end to end through the `Gateway`, mosquitto and the
//! ThingsBoard stand-in.

#![cfg_attr(not(feature = "rest"), allow(missing_docs))]
#![cfg(feature = "rest")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::convert::{ConvertError, ConverterRegistry, UplinkConverter, UplinkInput};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcRequest, RpcResponder};
use tbgw::model::{DeviceData, Value};
use tbgw::stats::ConnectorCounters;
use tbgw::test_util::{free_tcp_port, Mosquitto, TbStandIn};
use tbgw::uplink::{StoreOutcome, UplinkMessage};
use tbgw::{Gateway, TbOptions};
use tbgw_connectors::rest::RestFactory;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(10);

fn spec(config: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "REST".into(),
        connector_type: "rest".into(),
        file: "rest.json".into(),
        config: config.into(),
    }
}

/// An attribute request the connector made: (device, client, keys, reply).
type AttrReq = (String, bool, Vec<String>, oneshot::Sender<Json>);

/// A running connector plus the gateway's side: data that storage "stored" (acknowledged
/// while `store` is set), attribute requests, downlink, cancel.
struct Running {
    port: u16,
    task: tokio::task::JoinHandle<()>,
    data: mpsc::UnboundedReceiver<DeviceData>,
    attr_requests: mpsc::UnboundedReceiver<AttrReq>,
    downlink: mpsc::Sender<Downlink>,
    cancel: tokio_util::sync::CancellationToken,
    store: Arc<AtomicBool>,
    stats: ConnectorCounters,
}

async fn start(config: Json) -> Running {
    start_with(RestFactory::new(), config, false).await
}

/// Starts a connector built by `factory`; `supervised`: under the gateway's supervisor
/// (restarted after a failure) instead of one bare run.
async fn start_with(factory: RestFactory, mut config: Json, supervised: bool) -> Running {
    let port = free_tcp_port();
    config["server"]["port"] = json!(port.to_string());
    config["server"]["host"] = json!("127.0.0.1");
    let mut connector = factory
        .build(&spec(config), &mut Vec::new())
        .expect("config is valid");
    let (mut cx, mut ends) = ConnectorContext::for_test("REST");
    let stats = cx.stats().clone();
    let task = if supervised {
        tokio::spawn(cx.supervise(connector))
    } else {
        tokio::spawn(async move {
            connector
                .run(&mut cx)
                .await
                .expect("connector ends cleanly");
        })
    };
    let store = Arc::new(AtomicBool::new(true));
    let (dtx, data) = mpsc::unbounded_channel();
    let (atx, attr_requests) = mpsc::unbounded_channel();
    let storing = store.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(m) = ends.uplink.recv().await {
            match m {
                UplinkMessage::Data { data, ack, .. } => {
                    if storing.load(Ordering::SeqCst) {
                        for d in data {
                            let _ = dtx.send(d);
                        }
                        if let Some(a) = ack {
                            let _ = a.send(StoreOutcome::Stored);
                        }
                    } else {
                        held.push(ack);
                    }
                }
                UplinkMessage::AttributeRequest {
                    device,
                    client,
                    keys,
                    reply,
                    ..
                } => {
                    let _ = atx.send((device, client, keys, reply));
                }
                _ => {}
            }
        }
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running {
        port,
        task,
        data,
        attr_requests,
        downlink: ends.downlink,
        cancel: ends.cancel,
        store,
        stats,
    }
}

impl Running {
    async fn next_data(&mut self) -> DeviceData {
        tokio::time::timeout(WAIT, self.data.recv())
            .await
            .expect("data in time")
            .expect("channel open")
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

/// Runs curl; returns (status, body).
async fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn data_mapping(endpoint: &str, extra: Json) -> Json {
    let mut m = json!({
        "endpoint": endpoint,
        "HTTPMethods": ["POST", "PUT"],
        "security": {"type": "anonymous"},
        "response": {"responseExpected": false, "timeout": 5},
        "converter": {
            "type": "json",
            "deviceInfo": {"deviceNameExpressionSource": "request", "deviceNameExpression": "${sensorName}",
                           "deviceProfileExpressionSource": "request", "deviceProfileExpression": "${sensorType}"},
            "attributes": [{"type": "string", "key": "model", "value": "${sensorModel}"}],
            "timeseries": [{"type": "double", "key": "temperature", "value": "${temp}"},
                           {"type": "double", "key": "humidity", "value": "${hum}"}]
        }
    });
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

#[tokio::test]
async fn request_data_is_merged_from_path_query_and_every_body_kind() {
    let mut r = start(json!({
        "server": {},
        "mapping": [
            data_mapping("/my_devices", json!({})),
            data_mapping("/dev/{sensorName}", json!({})),
            {"endpoint": "/text/{sensorName}", "HTTPMethods": ["POST"],
             "converter": {"deviceInfo": {"deviceNameExpressionSource": "request", "deviceNameExpression": "${sensorName}"},
                           "timeseries": [{"type": "string", "key": "line", "value": "${text}"}]}}
        ]
    }))
    .await;
    let base = format!("http://127.0.0.1:{}", r.port);

    let (status, body) = curl(&[
        "-X", "POST", "-H", "Content-Type: application/json",
        "-d", r#"{"sensorName": "SN-1", "sensorType": "thermo", "sensorModel": "T1", "temp": 21.5, "hum": "40"}"#,
        &format!("{base}/my_devices"),
    ])
    .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let d = r.next_data().await;
    assert_eq!(
        (d.device_name.as_str(), d.device_type.as_str()),
        ("SN-1", "thermo")
    );
    assert_eq!(d.value("model"), Some(Value::from("T1")));
    assert_eq!(d.value("temperature"), Some(Value::Float(21.5)));
    assert_eq!(d.value("humidity"), Some(Value::Float(40.0)));

    // Path parameter + query string + form body; PUT is also listed.
    let (status, _) = curl(&[
        "-X",
        "PUT",
        "-d",
        "temp=3.5&hum=1",
        &format!("{base}/dev/SN%202?sensorType=q&sensorModel=M"),
    ])
    .await;
    assert_eq!(status, 200);
    let d = r.next_data().await;
    assert_eq!(
        (d.device_name.as_str(), d.device_type.as_str()),
        ("SN 2", "q")
    );
    assert_eq!(d.value("temperature"), Some(Value::Float(3.5)));
    assert_eq!(d.value("model"), Some(Value::from("M")));

    // Multipart text fields; a JSON array's first element.
    let (status, _) = curl(&[
        "-F",
        "temp=7",
        "-F",
        "sensorType=mp",
        &format!("{base}/dev/SN-3"),
    ])
    .await;
    assert_eq!(status, 200);
    let d = r.next_data().await;
    assert_eq!(d.value("temperature"), Some(Value::Float(7.0)));
    assert_eq!(d.device_type, "mp");
    let (status, _) = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"[{"sensorName": "SN-4", "temp": 1}, {"sensorName": "ignored"}]"#,
        &format!("{base}/my_devices"),
    ])
    .await;
    assert_eq!(status, 200);
    assert_eq!(r.next_data().await.device_name, "SN-4");

    // Plain text lands in `text`.
    let (status, _) = curl(&[
        "-H",
        "Content-Type: text/plain",
        "-d",
        "hello there",
        &format!("{base}/text/SN-5"),
    ])
    .await;
    assert_eq!(status, 200);
    let d = r.next_data().await;
    assert_eq!(d.value("line"), Some(Value::from("hello there")));
    r.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_the_server_keeps_serving() {
    let mut r = start(json!({
        "server": {"maxRequestBodySize": 1000},
        "mapping": [
            data_mapping("/open", json!({"response": {"timeout": 0.5, "successResponse": "{\"ok\":true}", "unsuccessfulResponse": "busy"}})),
            data_mapping("/secret", json!({"HTTPMethods": ["POST"], "security": {"type": "basic", "username": "user", "password": "pa:ss"}}))
        ]
    }))
    .await;
    let base = format!("http://127.0.0.1:{}", r.port);
    let good = r#"{"sensorName": "A", "temp": 1}"#;
    let json_ct = "Content-Type: application/json";

    assert_eq!(curl(&["-d", good, &format!("{base}/nowhere")]).await.0, 404);
    let out = Command::new("curl")
        .args(["-s", "-i", "-X", "GET", &format!("{base}/secret")])
        .output()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert!(head.contains("allow: post"), "{head}");
    assert_eq!(
        curl(&["-H", json_ct, "-d", good, &format!("{base}/secret")])
            .await
            .0,
        401
    );
    assert_eq!(
        curl(&[
            "-u",
            "user:wrong",
            "-H",
            json_ct,
            "-d",
            good,
            &format!("{base}/secret")
        ])
        .await
        .0,
        401
    );
    assert_eq!(
        curl(&[
            "-u",
            "user:pa:ss",
            "-H",
            json_ct,
            "-d",
            good,
            &format!("{base}/secret")
        ])
        .await
        .0,
        200
    );
    r.next_data().await;
    let (status, body) = curl(&["-H", json_ct, "-d", "{broken", &format!("{base}/open")]).await;
    assert_eq!(status, 400, "{body}");
    // No device name in the data.
    assert_eq!(
        curl(&[
            "-H",
            json_ct,
            "-d",
            r#"{"temp": 1}"#,
            &format!("{base}/open")
        ])
        .await
        .0,
        400
    );
    let big = format!(r#"{{"sensorName": "A", "pad": "{}"}}"#, "x".repeat(2000));
    assert_eq!(
        curl(&["-H", json_ct, "-d", &big, &format!("{base}/open")])
            .await
            .0,
        413
    );
    // Chunked (no Content-Length) bodies are limited too.
    assert_eq!(
        curl(&[
            "-H",
            json_ct,
            "-H",
            "Transfer-Encoding: chunked",
            "-d",
            &big,
            &format!("{base}/open")
        ])
        .await
        .0,
        413
    );
    // Garbage instead of HTTP is refused by the protocol layer.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
            .await
            .unwrap();
        s.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
        assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"));
    }

    // Storage that does not take the data in time: 503 with the failure body.
    r.store.store(false, Ordering::SeqCst);
    let (status, body) = curl(&["-H", json_ct, "-d", good, &format!("{base}/open")]).await;
    assert_eq!((status, body.as_str()), (503, "busy"));
    r.store.store(true, Ordering::SeqCst);

    // Still serving.
    let (status, body) = curl(&["-H", json_ct, "-d", good, &format!("{base}/open")]).await;
    assert_eq!((status, body.as_str()), (200, "{\"ok\":true}"));
    assert!(r.stats.convert_errors() >= 2);
    r.stop().await;
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.crt",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    (dir.join("srv.crt"), dir.join("srv.key"))
}

#[tokio::test]
async fn https_server_with_basic_auth_serves_curl() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let mut r = start(json!({
        "server": {"SSL": true, "security": {"cert": cert, "key": key}},
        "mapping": [data_mapping("/tls", json!({"security": {"type": "basic", "username": "u", "password": "p"}}))]
    }))
    .await;
    let url = format!("https://127.0.0.1:{}/tls", r.port);
    let ca = cert.to_string_lossy().into_owned();
    let (status, body) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "u:p",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"sensorName": "TLS-1", "temp": 2}"#,
        &url,
    ])
    .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    assert_eq!(r.next_data().await.device_name, "TLS-1");
    assert_eq!(curl(&["--cacert", &ca, "-d", "{}", &url]).await.0, 401);
    // Plain HTTP to the TLS port gets no HTTP answer, and the server goes on.
    assert_eq!(
        curl(&["-d", "{}", &url.replace("https", "http")]).await.0,
        0
    );
    assert_eq!(
        curl(&[
            "--cacert",
            &ca,
            "-u",
            "u:p",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"sensorName": "TLS-2"}"#,
            &url
        ])
        .await
        .0,
        200
    );
    r.stop().await;
}

#[tokio::test]
async fn held_requests_are_answered_by_an_rpc_or_an_attribute_update() {
    let mut r = start(json!({
        "server": {},
        "mapping": [
            data_mapping("/wait_rpc", json!({"response": {"responseExpected": true, "timeout": 5}})),
            data_mapping("/wait_attr", json!({"response": {"responseExpected": true, "timeout": 5, "responseAttribute": "setpoint"}})),
            data_mapping("/wait_short", json!({"response": {"responseExpected": true, "timeout": 0.3, "unsuccessfulResponse": "no answer"}}))
        ]
    }))
    .await;
    let base = format!("http://127.0.0.1:{}", r.port);
    let ct = "Content-Type: application/json";

    let url = format!("{base}/wait_rpc");
    let held = tokio::spawn(async move {
        curl(&["-H", ct, "-d", r#"{"sensorName": "H-1", "temp": 1}"#, &url]).await
    });
    assert_eq!(r.next_data().await.device_name, "H-1");
    let (responder, rx) = RpcResponder::new();
    r.downlink
        .send(Downlink::Rpc(RpcRequest {
            device: Some("H-1".into()),
            id: 5,
            method: "setMode".into(),
            params: json!({"mode": "eco"}),
            responder,
        }))
        .await
        .unwrap();
    assert_eq!(rx.await.unwrap().unwrap(), json!({"success": true}));
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Json>(&body).unwrap(),
        json!({"id": 5, "method": "setMode", "params": {"mode": "eco"}})
    );

    let url = format!("{base}/wait_attr");
    let held = tokio::spawn(async move {
        curl(&["-H", ct, "-d", r#"{"sensorName": "H-2", "temp": 1}"#, &url]).await
    });
    assert_eq!(r.next_data().await.device_name, "H-2");
    r.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "H-2".into(),
            values: serde_json::from_value(json!({"setpoint": 21})).unwrap(),
        }))
        .await
        .unwrap();
    let (status, body) = held.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "21"));

    let (status, body) = curl(&[
        "-H",
        ct,
        "-d",
        r#"{"sensorName": "H-3", "temp": 1}"#,
        &format!("{base}/wait_short"),
    ])
    .await;
    assert_eq!((status, body.as_str()), (504, "no answer"));
    r.stop().await;
}

#[tokio::test]
async fn attribute_requests_wait_for_thingsboard() {
    let mut r = start(json!({
        "server": {},
        "requestsMapping": {"attributeRequests": [{
            "endpoint": "/sharedAttributes", "type": "shared", "HTTPMethods": ["POST", "GET"],
            "security": {"type": "anonymous"}, "timeout": 0.5,
            "deviceNameExpression": "${deviceName}", "attributeNameExpression": "${attribute}${attribute1}"
        }]}
    }))
    .await;
    let base = format!("http://127.0.0.1:{}", r.port);
    let url = format!("{base}/sharedAttributes?deviceName=D1&attribute=a&attribute1=b");
    let req = tokio::spawn(async move { curl(&["-X", "GET", &url]).await });
    let (device, client, keys, reply) = tokio::time::timeout(WAIT, r.attr_requests.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (device.as_str(), client, keys),
        ("D1", false, vec!["a".to_string(), "b".to_string()])
    );
    let answer = json!({"id": 7, "device": "D1", "values": {"a": 1, "b": "x"}});
    reply.send(answer.clone()).unwrap();
    let (status, body) = req.await.unwrap();
    assert_eq!(status, 200);
    // ThingsBoard's answer as it came, as upstream forwards it.
    assert_eq!(serde_json::from_str::<Json>(&body).unwrap(), answer);
    // No answer from ThingsBoard in time: 504; no device name: 400.
    let (status, _) = curl(&[
        "-X",
        "GET",
        &format!("{base}/sharedAttributes?deviceName=D1&attribute=a"),
    ])
    .await;
    assert_eq!(status, 504);
    let (status, _) = curl(&["-X", "GET", &format!("{base}/sharedAttributes?attribute=a")]).await;
    assert_eq!(status, 400);
    r.stop().await;
}

/// `request_server.py` on a free port, killed on drop.
async fn peer() -> (Child, u16) {
    peer_with(&[]).await
}

/// `request_server.py` on a free port with extra arguments (https: cert, key, client CA).
async fn peer_with(extra: &[&Path]) -> (Child, u16) {
    let port = free_tcp_port();
    let child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/request_server.py"
        ))
        .arg(port.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the peer");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "peer never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, port)
}

#[tokio::test]
async fn rpcs_and_attribute_updates_go_out_as_http_requests() {
    let (_peer, pport) = peer().await;
    let r = start(json!({
        "server": {},
        "requestsMapping": {
            "attributeUpdates": [{
                "HTTPMethod": "POST", "SSLVerify": false, "security": {"type": "basic", "username": "u", "password": "p"},
                "timeout": 1, "tries": 2, "deviceNameFilter": "SN.*", "attributeFilter": ".*",
                "requestUrlExpression": format!("http://127.0.0.1:{pport}/sensor/attr"),
                "valueExpression": "{\"deviceName\":\"${deviceName}\",\"${attributeKey}\":\"${attributeValue}\"}"
            }],
            "serverSideRpc": [{
                "deviceNameFilter": ".*", "methodFilter": "echo",
                "requestUrlExpression": format!("http://127.0.0.1:{pport}/sensor/${{deviceName}}"),
                "responseTimeout": 2, "HTTPMethod": "POST", "valueExpression": "${params}", "timeout": 1, "tries": 3
            }]
        }
    }))
    .await;
    r.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "SN-9".into(),
            values: serde_json::from_value(json!({"relay": true})).unwrap(),
        }))
        .await
        .unwrap();
    let (responder, rx) = RpcResponder::new();
    r.downlink
        .send(Downlink::Rpc(RpcRequest {
            device: Some("SN-9".into()),
            id: 1,
            method: "echo".into(),
            params: json!({"x": 1}),
            responder,
        }))
        .await
        .unwrap();
    let reply = tokio::time::timeout(WAIT, rx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, json!({"result": {"temp": 22.5, "echo": {"x": 1}}}));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = curl(&[&format!("http://127.0.0.1:{pport}/_log")]).await;
        let log: Json = serde_json::from_str(&body).unwrap();
        if let Some(e) = log
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "/sensor/attr")
        {
            assert_eq!(e["body"], "{\"deviceName\":\"SN-9\",\"relay\":\"true\"}");
            assert_eq!(e["authorization"], "Basic dTpw");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "attribute update never arrived: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.stop().await;
}

#[test]
fn upstream_sample_builds_and_bad_configs_name_the_key() {
    let Some(path) = tbgw::test_util::upstream_sample("rest.json") else {
        return;
    };
    let config: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut ignored = Vec::new();
    RestFactory::new()
        .build(&spec(config.clone()), &mut ignored)
        .expect("upstream's sample builds");
    assert!(
        ignored
            .iter()
            .any(|k| k.starts_with("mapping[2].converter")),
        "{ignored:?}"
    );
    let mut bad = config.clone();
    bad["server"]["port"] = json!("http");
    let e = RestFactory::new()
        .build(&spec(bad), &mut Vec::new())
        .err()
        .unwrap();
    assert_eq!(e.key, "server.port");
    let mut bad = config.clone();
    bad["mapping"][0]["security"] = json!({"type": "basic"});
    let e = RestFactory::new()
        .build(&spec(bad), &mut Vec::new())
        .err()
        .unwrap();
    assert_eq!(e.key, "mapping[0].security.username");
    let mut bad = config;
    bad["server"]["SSL"] = json!(true);
    bad["server"]["security"] = json!({});
    let e = RestFactory::new()
        .build(&spec(bad), &mut Vec::new())
        .err()
        .unwrap();
    assert_eq!(e.key, "server.security");
}

/// End to end: a POSTed JSON reaches the ThingsBoard stand-in as telemetry and attributes,
/// through the gateway's storage, over mosquitto.
#[tokio::test]
async fn end_to_end_a_posted_json_reaches_thingsboard() {
    let broker = Mosquitto::start().await.expect("mosquitto starts");
    let tb = TbStandIn::connect(broker.port()).await.expect("stand-in");
    let port = free_tcp_port();
    let config = json!({
        "server": {"host": "127.0.0.1", "port": port},
        "mapping": [data_mapping("/my_devices", json!({}))]
    });
    let connector = RestFactory::new()
        .build(&spec(config), &mut Vec::new())
        .unwrap();
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", broker.port(), "token"))
        .connector("REST", "rest", connector)
        .build()
        .expect("gateway builds");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    let url = format!("http://127.0.0.1:{port}/my_devices");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = curl(&[
            "-H", "Content-Type: application/json",
            "-d", r#"{"sensorName": "E2E-1", "sensorType": "thermo", "sensorModel": "T9", "temp": 19.5, "hum": 33}"#,
            &url,
        ])
        .await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tele = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/telemetry" && m.get("E2E-1").is_some()
        })
        .await
        .expect("telemetry reaches ThingsBoard");
    assert_eq!(
        tele.get("E2E-1").unwrap()[0]["values"],
        json!({"temperature": 19.5, "humidity": 33.0})
    );
    let attrs = tb
        .wait_for(WAIT, |m| {
            // (The device's connectorName/connectorType attributes come first.)
            m.topic == "v1/gateway/attributes" && m.text().contains("\"model\"")
        })
        .await
        .expect("attributes reach ThingsBoard");
    assert_eq!(attrs.get("E2E-1").unwrap(), &json!({"model": "T9"}));
    let _ = stop.send(());
    run.await.unwrap();
}

#[tokio::test]
async fn outgoing_requests_can_authenticate_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (srv_cert, srv_key) = self_signed(dir.path());
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    ]);
    openssl(dir.path(), &a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "cli.key",
        "-out",
        "cli.csr",
        "-subj",
        "/CN=gateway",
    ]);
    openssl(dir.path(), &a);
    // Extensions make it an X.509 v3 certificate (webpki refuses v1).
    std::fs::write(
        dir.path().join("cli.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "cli.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "cli.ext",
            "-out",
            "cli.crt",
            "-days",
            "2",
        ],
    );
    let ca = dir.path().join("ca.crt");
    let (_peer, pport) = peer_with(&[&srv_cert, &srv_key, &ca]).await;
    let rule = |security: Json| {
        json!({
            "deviceNameFilter": ".*", "methodFilter": "echo", "HTTPMethod": "POST", "SSLVerify": false,
            "requestUrlExpression": format!("https://127.0.0.1:{pport}/sensor/${{deviceName}}"),
            "valueExpression": "${params}", "timeout": 2, "security": security
        })
    };
    let mut with_cert = rule(
        json!({"type": "cert", "cert": dir.path().join("cli.crt"), "key": dir.path().join("cli.key")}),
    );
    with_cert["methodFilter"] = json!("echo");
    let mut without = rule(json!({"type": "anonymous"}));
    without["methodFilter"] = json!("plain");
    let r = start(json!({
        "server": {},
        "requestsMapping": {"serverSideRpc": [with_cert, without]}
    }))
    .await;
    let call = |method: &'static str| {
        let downlink = r.downlink.clone();
        async move {
            let (responder, rx) = RpcResponder::new();
            downlink
                .send(Downlink::Rpc(RpcRequest {
                    device: Some("M-1".into()),
                    id: 3,
                    method: method.into(),
                    params: json!({"v": 1}),
                    responder,
                }))
                .await
                .unwrap();
            tokio::time::timeout(WAIT, rx).await.unwrap().unwrap()
        }
    };
    let ok = call("echo").await.unwrap();
    assert!(ok.get("error").is_none(), "{ok}");
    assert_eq!(ok["result"]["echo"], json!({"v": 1}));
    // Without the certificate the server refuses the handshake: unreachable.
    let e = call("plain").await.unwrap_err();
    assert_eq!(e.code(), 503, "{e:?}");
    r.stop().await;
}

/// End to end: with ThingsBoard unreachable and a full memory storage (block policy), a POST
/// is answered 503 after the endpoint's timeout instead of hanging or being dropped.
#[tokio::test]
async fn end_to_end_a_full_blocking_storage_gives_503() {
    let port = free_tcp_port();
    let config = json!({
        "server": {"host": "127.0.0.1", "port": port},
        "mapping": [data_mapping("/my_devices", json!({"response": {"timeout": 0.5, "unsuccessfulResponse": "storage full"}}))]
    });
    let connector = RestFactory::new()
        .build(&spec(config), &mut Vec::new())
        .unwrap();
    let dead_tb = free_tcp_port();
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", dead_tb, "token"))
        .storage(Arc::new(tbgw::storage::MemoryStorage::new(
            2,
            10,
            tbgw::storage::FullPolicy::Block,
        )))
        .connector("REST", "rest", connector)
        // Storage stays blocked at shutdown: do not wait long for it.
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .expect("gateway builds");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    let url = format!("http://127.0.0.1:{port}/my_devices");
    let post = |n: u32| {
        let url = url.clone();
        async move {
            curl(&[
                "-H",
                "Content-Type: application/json",
                "-d",
                &format!(r#"{{"sensorName": "F-{n}", "temp": {n}}}"#),
                &url,
            ])
            .await
        }
    };
    // Wait for the server, then fill the storage.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    let (status, body) = loop {
        n += 1;
        let (status, body) = post(n).await;
        if status == 503 {
            break (status, body);
        }
        assert!(
            status == 200 || status == 0,
            "unexpected status {status}: {body}"
        );
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        if status == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!((status, body.as_str()), (503, "storage full"));
    assert!(n >= 3, "two records fit before the storage is full");
    let _ = stop.send(());
    run.await.unwrap();
}

/// A custom converter with a bug: it panics on the body `boom`; other bodies are a number.
#[derive(Debug)]
struct PanicsOnBoom;

impl UplinkConverter for PanicsOnBoom {
    fn convert(
        &self,
        input: UplinkInput<'_>,
        _errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError> {
        if input.payload == b"boom" {
            panic!("converter bug on `boom`");
        }
        let n = String::from_utf8_lossy(input.payload)
            .trim()
            .parse()
            .unwrap_or(-1);
        let mut d = DeviceData::new("meter", "default");
        d.push_telemetry(input.received_ts, "n", Value::Int(n));
        Ok(vec![d])
    }
}

#[tokio::test]
async fn a_panicking_converter_in_a_client_task_is_counted_and_the_connector_recovers() {
    let factory = RestFactory::new()
        .with_converters(ConverterRegistry::new().with("Buggy", Arc::new(PanicsOnBoom)));
    let mut r = start_with(
        factory,
        json!({
            "server": {},
            "mapping": [{"endpoint": "/meter", "HTTPMethods": ["POST"],
                         "converter": {"type": "custom", "extension": "Buggy"}}]
        }),
        true,
    )
    .await;
    let url = format!("http://127.0.0.1:{}/meter", r.port);
    // The client's connection task panics: no answer for this request.
    let (status, _) = curl(&["-X", "POST", "--data-binary", "boom", &url]).await;
    assert_ne!(status, 200);
    // After the restart the same endpoint converts again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = curl(&["-X", "POST", "--data-binary", "5", &url]).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not served again: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = r.next_data().await;
    assert_eq!(d.value("n"), Some(Value::Int(5)));
    assert_eq!(r.stats.task_failures(), 1);
    assert_eq!(r.stats.restarts(), 1);
    r.stop().await;
}

/// A request's headers and the first byte of a `length`-byte JSON body, sent over raw TCP.
async fn slow_request(port: u16, length: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let head = format!(
        "POST /t HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.expect("headers sent");
    s
}

/// Everything the server sends until it closes the connection (or `WAIT` passes).
async fn read_to_close(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn clients_that_trickle_their_body_are_cut_off_and_others_are_served() {
    let mut r = start(json!({
        "server": {"readTimeout": 1},
        "mapping": [data_mapping("/t", json!({}))]
    }))
    .await;
    // Five clients send their headers, then one byte of body every 100 ms (of 10,000).
    let mut slow = Vec::new();
    for _ in 0..5 {
        let s = slow_request(r.port, 10_000).await;
        let (mut rd, mut wr) = s.into_split();
        let trickle = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..10_000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if wr.write_all(b" ").await.is_err() {
                    break;
                }
            }
        });
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(WAIT, rd.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        });
        slow.push((trickle, reader));
    }
    // A normal client is served meanwhile.
    let (code, _) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"sensorName": "n1", "sensorType": "t", "temp": 1}"#,
        &format!("http://127.0.0.1:{}/t", r.port),
    ])
    .await;
    assert_eq!(code, 200);
    assert_eq!(r.next_data().await.device_name, "n1");
    // The slow ones are answered 408 and disconnected.
    for (trickle, reader) in slow {
        let answer = reader.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a trickling client is cut off: {answer:?}"
        );
        trickle.abort();
    }
    assert!(r.stats.errors() >= 5);
    r.stop().await;
}

#[tokio::test]
async fn connections_above_max_connections_are_answered_503_and_closed() {
    let r = start(json!({
        "server": {"maxConnections": 2, "readTimeout": 60},
        "mapping": [data_mapping("/t", json!({}))]
    }))
    .await;
    let url = format!("http://127.0.0.1:{}/t", r.port);
    // Two connections hold both slots (headers sent, body pending).
    let held1 = slow_request(r.port, 100).await;
    let held2 = slow_request(r.port, 100).await;
    // A third, complete request is refused at once, without being read.
    let mut third = slow_request(r.port, 1).await;
    let answer = read_to_close(&mut third).await;
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "over the limit: {answer:?}"
    );
    assert!(answer.contains("Too many connections"), "{answer:?}");
    // A slot freed by a client going away is used again.
    drop(held1);
    let mut code = 0;
    for _ in 0..100 {
        code = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"sensorName": "n2", "sensorType": "t", "temp": 2}"#,
            &url,
        ])
        .await
        .0;
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, 200, "served once a slot is free");
    drop(held2);
    r.stop().await;
}

#[test]
fn connection_limit_and_read_timeout_are_checked() {
    for (server, key) in [
        (json!({"maxConnections": 0}), "server.maxConnections"),
        (json!({"readTimeout": 0}), "server.readTimeout"),
        (json!({"readTimeout": 1e20}), "server.readTimeout"),
    ] {
        let e = RestFactory::new()
            .build(
                &spec(json!({"server": server, "mapping": [data_mapping("/t", json!({}))]})),
                &mut Vec::new(),
            )
            .err()
            .expect("refused");
        assert_eq!(e.key, key);
    }
}
