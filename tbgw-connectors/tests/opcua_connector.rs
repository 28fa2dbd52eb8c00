//! The OPC-UA connector against a real asyncua server (tests/peers/opcua_server.py): every
//! common variant type by subscription and by polling, a bad status reported, a device added
//! while running, RPC method calls, reserved get/set, attribute-update writes, a server restart
//! mid-stream, Basic256Sha256 SignAndEncrypt with a user name, and the upstream sample config.
//! The end-to-end test runs the connector inside a `Gateway` against mosquitto and the
//! ThingsBoard stand-in.

#![cfg_attr(not(feature = "opcua"), allow(missing_docs))]
#![cfg(feature = "opcua")]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest, RpcResponder};
use tbgw::model::Value;
use tbgw::test_util::{free_tcp_port, Mosquitto, PythonPeer, TbStandIn};
use tbgw::uplink::UplinkMessage;
use tbgw::{Gateway, TbOptions};
use tbgw_connectors::opcua::OpcUaFactory;

const WAIT: Duration = Duration::from_secs(20);
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/opcua_server.py");

async fn start_peer(port: u16, extra: &[&str]) -> PythonPeer {
    let mut args = vec![PEER.to_string(), "--port".into(), port.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut peer = PythonPeer::spawn(args).expect("peer starts");
    peer.wait_output("ready", Duration::from_secs(60))
        .await
        .expect("peer ready");
    peer.wait_tcp(port, Duration::from_secs(10))
        .await
        .expect("peer listens");
    peer
}

fn url(port: u16) -> String {
    format!("opc.tcp://127.0.0.1:{port}/tbgw/")
}

fn all_types_mapping() -> Json {
    json!({
        "deviceNodeSource": "path",
        "deviceNodePattern": "Root\\.Objects\\.Device\\d+",
        "deviceInfo": {
            "deviceNameExpression": "${DeviceName}",
            "deviceNameExpressionSource": "path",
            "deviceProfileExpression": "opc-device",
            "deviceProfileExpressionSource": "constant"
        },
        "attributes": [
            {"key": "model", "type": "constant", "value": "tbgw-sim"},
            {"key": "dt", "type": "path", "value": "${DateTimeVar}"}
        ],
        "timeseries": [
            {"key": "temperature", "type": "path", "value": "${Temperature}", "timestampLocation": "source"},
            {"key": "humidity", "type": "path", "value": "${2:Humidity}"},
            {"key": "counter", "type": "path", "value": "${Counter}", "timestampLocation": "server"},
            {"key": "relay", "type": "path", "value": "${Relay}"},
            {"key": "i16", "type": "path", "value": "${Int16Var}"},
            {"key": "i64", "type": "path", "value": "${Int64Var}"},
            {"key": "u16", "type": "path", "value": "${UInt16Var}"},
            {"key": "u32", "type": "path", "value": "${UInt32Var}"},
            {"key": "u64", "type": "path", "value": "${UInt64Var}"},
            {"key": "byte", "type": "path", "value": "${ByteVar}"},
            {"key": "sbyte", "type": "path", "value": "${SByteVar}"},
            {"key": "text", "type": "path", "value": "${StringVar}"},
            {"key": "bytes", "type": "path", "value": "${ByteStringVar}"},
            {"key": "guid", "type": "path", "value": "${GuidVar}"},
            {"key": "array", "type": "path", "value": "${ArrayVar}"},
            {"key": "broken", "type": "path", "value": "${Broken}"},
            {"key": "inner", "type": "path", "value": "${Sub\\.Inner}"},
            {"key": "abs", "type": "path", "value": "${Root\\.Objects\\.Device1\\.Int16Var}"},
            {"key": "special_s", "type": "identifier", "value": "${ns=2;s=Device1.Special}"},
            {"key": "special_g", "type": "identifier", "value": "${ns=2;g=0d4a6b3e-8c2f-4a59-9f00-5b2f0c1e7a11}"},
            {"key": "special_b", "type": "identifier", "value": "${ns=2;b=yv4=}"},
            {"key": "missing", "type": "path", "value": "${NoSuchNode}"}
        ],
        "rpc_methods": [
            {"method": "multiply", "arguments": [{"type": "integer", "value": 2}, {"type": "integer", "value": 4}]},
            {"method": "get_relay", "arguments": []},
            {"method": "set_relay", "arguments": []}
        ],
        "attributes_updates": [
            {"key": "relay", "type": "path", "value": "${Relay}"},
            {"key": "i16", "type": "path", "value": "Int16Var"}
        ]
    })
}

fn spec(server: Json, mapping: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "OPC-UA".into(),
        connector_type: "opcua".into(),
        file: std::env::temp_dir().join("tbgw-opcua-test/opcua.json"),
        config: json!({"server": server, "mapping": [mapping]}).into(),
    }
}

fn start(
    spec: &ConnectorSpec,
) -> (
    tokio::task::JoinHandle<()>,
    TestEnds,
    tbgw::stats::ConnectorCounters,
) {
    let mut ignored = Vec::new();
    let mut connector = OpcUaFactory::new()
        .build(spec, &mut ignored)
        .expect("config is valid");
    let (mut cx, ends) = ConnectorContext::for_test("OPC-UA");
    let stats = cx.stats().clone();
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends, stats)
}

/// Latest values seen per device and key, plus connect/disconnect events.
#[derive(Default)]
struct Seen {
    values: HashMap<(String, String), Vec<Value>>,
    connected: Vec<String>,
    disconnected: Vec<String>,
}

impl Seen {
    fn last(&self, dev: &str, key: &str) -> Option<&Value> {
        self.values
            .get(&(dev.into(), key.into()))
            .and_then(|v| v.last())
    }
}

/// Drains the uplink into `seen` until `done(seen)` or the timeout.
async fn collect_until(
    ends: &mut TestEnds,
    seen: &mut Seen,
    mut done: impl FnMut(&Seen) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(seen) {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ends.uplink.recv()).await else {
            return false;
        };
        match msg {
            UplinkMessage::Data { data, ack, .. } => {
                for d in data {
                    for (k, v) in d.attributes.iter() {
                        seen.values
                            .entry((d.device_name.clone(), k.clone()))
                            .or_default()
                            .push(v.clone());
                    }
                    for e in &d.telemetry {
                        for (k, v) in &e.values {
                            seen.values
                                .entry((d.device_name.clone(), k.clone()))
                                .or_default()
                                .push(v.clone());
                        }
                    }
                }
                if let Some(a) = ack {
                    let _ = a.send(tbgw::uplink::StoreOutcome::Stored);
                }
            }
            UplinkMessage::Connect { device, .. } => seen.connected.push(device),
            UplinkMessage::Disconnect { device, .. } => seen.disconnected.push(device),
            _ => {}
        }
    }
    true
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

fn check_types(seen: &Seen) {
    let d = "Device 1";
    assert!(matches!(seen.last(d, "temperature"), Some(Value::Float(_))));
    assert!(matches!(seen.last(d, "humidity"), Some(Value::Float(_))));
    assert!(matches!(seen.last(d, "counter"), Some(Value::Int(_))));
    assert_eq!(seen.last(d, "relay"), Some(&Value::Bool(false)));
    assert_eq!(seen.last(d, "i16"), Some(&Value::Int(-16)));
    assert_eq!(seen.last(d, "i64"), Some(&Value::Int(-(1 << 40))));
    assert_eq!(seen.last(d, "u16"), Some(&Value::Int(16)));
    assert_eq!(seen.last(d, "u32"), Some(&Value::Int(1 << 31)));
    assert_eq!(seen.last(d, "u64"), Some(&Value::Int(1 << 40)));
    assert_eq!(seen.last(d, "byte"), Some(&Value::Int(200)));
    assert_eq!(seen.last(d, "sbyte"), Some(&Value::Int(-5)));
    assert_eq!(seen.last(d, "text"), Some(&Value::String("hello".into())));
    assert_eq!(seen.last(d, "bytes"), Some(&Value::String("0102ab".into())));
    assert_eq!(
        seen.last(d, "guid").map(|v| v.to_string().to_lowercase()),
        Some("72962b91-fa75-4ae6-8d28-b404dc7daf63".into())
    );
    assert_eq!(
        seen.last(d, "array"),
        Some(&Value::Json(json!(["1", "2", "3"])))
    );
    assert_eq!(
        seen.last(d, "broken"),
        Some(&Value::String("BadSensorFailure".into()))
    );
    assert_eq!(seen.last(d, "inner"), Some(&Value::Float(1.5)));
    assert_eq!(seen.last(d, "abs"), Some(&Value::Int(-16)));
    assert_eq!(seen.last(d, "special_s"), Some(&Value::Int(7)));
    assert_eq!(seen.last(d, "special_g"), Some(&Value::Int(8)));
    assert_eq!(seen.last(d, "special_b"), Some(&Value::Int(9)));
    assert_eq!(
        seen.last(d, "model"),
        Some(&Value::String("tbgw-sim".into()))
    );
    assert!(seen
        .last(d, "dt")
        .is_some_and(|v| v.to_string().starts_with("2024-05-06T07:08:09")));
    assert!(seen.last(d, "missing").is_none());
    // Device 2 has no Special nodes: only the identifier nodes of Device1 (shared) appear.
    assert_eq!(seen.last("Device 2", "i16"), Some(&Value::Int(-16)));
}

#[tokio::test]
async fn subscriptions_deliver_every_type_and_new_devices_appear_without_restart() {
    let port = free_tcp_port();
    let mut peer = start_peer(
        port,
        &[
            "--devices",
            "2",
            "--period",
            "0.1",
            "--add-device-after",
            "6",
        ],
    )
    .await;
    let spec = spec(
        json!({"url": url(port), "enableSubscriptions": true, "scanPeriodInMillis": 1000,
               "subCheckPeriodInMillis": 100, "subDataMinBatchCreationTimeMs": 50}),
        all_types_mapping(),
    );
    let (task, mut ends, stats) = start(&spec);
    let mut seen = Seen::default();
    let ok = collect_until(&mut ends, &mut seen, |s| {
        s.last("Device 1", "special_b").is_some()
            && s.last("Device 2", "i16").is_some()
            && s.values
                .get(&("Device 1".into(), "counter".into()))
                .is_some_and(|v| v.len() >= 5)
    })
    .await;
    assert!(
        ok,
        "values by subscription: {:?}\n{}",
        seen.values.keys().collect::<Vec<_>>(),
        peer.log()
    );
    check_types(&seen);
    // Counter changes every 100 ms; the subscription delivers each change in order.
    let counters: Vec<i64> = seen.values[&("Device 1".to_string(), "counter".to_string())]
        .iter()
        .filter_map(|v| {
            if let Value::Int(i) = v {
                Some(*i)
            } else {
                None
            }
        })
        .collect();
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "{counters:?}");
    assert!(
        stats.convert_errors() >= 2,
        "missing node and bad status are counted"
    );
    // A device added on the server appears at the next scan.
    let ok = collect_until(&mut ends, &mut seen, |s| {
        s.last("Device 3", "temperature").is_some()
    })
    .await;
    assert!(ok, "the added device reports values: {:?}", seen.connected);
    assert!(seen.connected.contains(&"Device 3".to_string()));
    ends.cancel.cancel();
    task.await.unwrap();
    peer.stop().await;
}

#[tokio::test]
async fn polling_reads_all_types_and_rpcs_call_methods_and_write_nodes() {
    let port = free_tcp_port();
    let mut peer = start_peer(port, &["--devices", "2"]).await;
    let spec = spec(
        json!({"url": url(port), "enableSubscriptions": false, "pollPeriodInMillis": 300}),
        all_types_mapping(),
    );
    let (task, mut ends, _) = start(&spec);
    let mut seen = Seen::default();
    let ok = collect_until(&mut ends, &mut seen, |s| {
        s.last("Device 1", "special_b").is_some() && s.last("Device 2", "i16").is_some()
    })
    .await;
    assert!(ok, "values by polling:\n{}", peer.log());
    check_types(&seen);

    // A configured method with the config's default arguments, then with params.
    assert_eq!(
        rpc(&ends, Some("Device 1"), "multiply", Json::Null)
            .await
            .unwrap(),
        json!({"result": {"result": 8}})
    );
    assert_eq!(
        rpc(&ends, Some("Device 1"), "multiply", json!([6, 7]))
            .await
            .unwrap(),
        json!({"result": {"result": 42}})
    );
    assert_eq!(
        rpc(&ends, Some("Device 2"), "set_relay", json!(true))
            .await
            .unwrap(),
        json!({"result": {"result": true}})
    );
    assert_eq!(
        rpc(&ends, Some("Device 2"), "get_relay", Json::Null)
            .await
            .unwrap(),
        json!({"result": {"result": true}})
    );
    // Reserved get / set, relative path and node id.
    assert_eq!(
        rpc(&ends, Some("Device 1"), "get", json!("Int16Var"))
            .await
            .unwrap(),
        json!({"result": {"value": -16}})
    );
    assert_eq!(
        rpc(&ends, Some("Device 1"), "set", json!("Int16Var; 123"))
            .await
            .unwrap(),
        json!({"result": {"value": 123}})
    );
    assert_eq!(
        rpc(&ends, Some("Device 1"), "get", json!("Int16Var"))
            .await
            .unwrap(),
        json!({"result": {"value": 123}})
    );
    rpc(
        &ends,
        Some("Device 1"),
        "set",
        json!("ns=2;s=Device1.Special; 70"),
    )
    .await
    .unwrap();
    assert_eq!(
        rpc(
            &ends,
            Some("Device 1"),
            "get",
            json!("${ns=2;s=Device1.Special}")
        )
        .await
        .unwrap(),
        json!({"result": {"value": 70}})
    );
    // Errors: an unknown method is not found, a bad value is a bad request, an unknown device
    // is unreachable.
    assert_eq!(
        rpc(&ends, Some("Device 1"), "nope", Json::Null)
            .await
            .unwrap_err()
            .code(),
        404
    );
    assert_eq!(
        rpc(&ends, Some("Device 1"), "set", json!("Int16Var; abc"))
            .await
            .unwrap_err()
            .code(),
        400
    );
    assert_eq!(
        rpc(&ends, Some("Device 9"), "get", json!("Int16Var"))
            .await
            .unwrap_err()
            .code(),
        503
    );
    // Connector RPC opcua_multiply: every device.
    let all = rpc(&ends, None, "multiply", json!([3, 3])).await.unwrap();
    assert_eq!(
        all,
        json!({"result": {"Device 1": {"result": 9}, "Device 2": {"result": 9}}})
    );
    // Connector get of an absolute path.
    assert_eq!(
        rpc(
            &ends,
            None,
            "get",
            json!("Root\\.Objects\\.Device2\\.StringVar")
        )
        .await
        .unwrap(),
        json!({"result": "hello"})
    );

    // Attribute updates write the nodes (cast to Boolean and Int16); polling shows them.
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Device 1".into(),
            values: json!({"relay": "on", "i16": 77})
                .as_object()
                .unwrap()
                .clone(),
        }))
        .await
        .unwrap();
    let ok = collect_until(&mut ends, &mut seen, |s| {
        s.last("Device 1", "relay") == Some(&Value::Bool(true))
            && s.last("Device 1", "i16") == Some(&Value::Int(77))
    })
    .await;
    assert!(
        ok,
        "written values are read back: relay={:?} i16={:?}",
        seen.last("Device 1", "relay"),
        seen.last("Device 1", "i16")
    );
    ends.cancel.cancel();
    task.await.unwrap();
    peer.stop().await;
}

#[tokio::test]
async fn a_server_restart_mid_stream_disconnects_devices_and_resumes() {
    let port = free_tcp_port();
    let mut peer = start_peer(port, &["--devices", "1", "--period", "0.1"]).await;
    let spec = spec(
        json!({"url": url(port), "enableSubscriptions": true, "timeoutInMillis": 2000,
               "reconnectBackoffInitialDelay": 0.2, "reconnectBackoffFactor": 1.5, "reconnectRetriesCount": 100}),
        all_types_mapping(),
    );
    let (task, mut ends, stats) = start(&spec);
    let mut seen = Seen::default();
    assert!(
        collect_until(&mut ends, &mut seen, |s| s
            .last("Device 1", "counter")
            .is_some())
        .await
    );
    peer.stop().await;
    assert!(
        collect_until(&mut ends, &mut seen, |s| s
            .disconnected
            .contains(&"Device 1".to_string()))
        .await,
        "the device is reported disconnected while the server is down"
    );
    let before = seen.connected.len();
    let mut peer = start_peer(port, &["--devices", "1", "--period", "0.1"]).await;
    seen.values.clear();
    assert!(
        collect_until(&mut ends, &mut seen, |s| s
            .last("Device 1", "counter")
            .is_some()
            && s.connected.len() > before)
        .await,
        "values flow again after the restart:\n{}",
        peer.log()
    );
    assert!(stats.errors() >= 1);
    ends.cancel.cancel();
    task.await.unwrap();
    peer.stop().await;
}

/// One Publish response for 1,500 changing tags carries more than async-opcua's default
/// limit of 1,000 array elements; the session used to fail with BadDecodingError and reconnect
/// forever without delivering a value.
#[tokio::test]
async fn a_publish_with_more_than_a_thousand_values_is_decoded() {
    const TAGS: usize = 1500;
    let port = free_tcp_port();
    let mut peer = start_peer(
        port,
        &[
            "--devices",
            "1",
            "--tags",
            &TAGS.to_string(),
            "--period",
            "0.2",
        ],
    )
    .await;
    let timeseries: Vec<Json> = (0..TAGS)
        .map(|t| json!({"key": format!("tag{t}"), "type": "path", "value": format!("${{Tag{t}}}")}))
        .collect();
    let spec = spec(
        json!({"url": url(port), "enableSubscriptions": true,
               // One publish a second: every tag has changed several times in between.
               "subCheckPeriodInMillis": 1000}),
        json!({"deviceNodeSource": "path",
               "deviceNodePattern": "Root\\.Objects\\.Device1",
               "deviceInfo": {"deviceNameExpression": "Device 1",
                              "deviceNameExpressionSource": "constant"},
               "timeseries": timeseries}),
    );
    let (task, mut ends, stats) = start(&spec);
    let mut seen = Seen::default();
    let every_tag_twice = |s: &Seen| {
        (0..TAGS).all(|t| {
            s.values
                .get(&("Device 1".to_string(), format!("tag{t}")))
                .is_some_and(|v| v.len() >= 2)
        })
    };
    let ok = collect_until(&mut ends, &mut seen, every_tag_twice).await;
    assert!(
        ok,
        "{} of {TAGS} tags delivered twice; errors {}\n{}",
        (0..TAGS)
            .filter(|t| seen
                .values
                .get(&("Device 1".to_string(), format!("tag{t}")))
                .is_some_and(|v| v.len() >= 2))
            .count(),
        stats.errors(),
        peer.log()
    );
    assert!(seen.disconnected.is_empty(), "the session was never lost");
    ends.cancel.cancel();
    task.await.unwrap();
    peer.stop().await;
}

#[tokio::test]
async fn every_security_policy_and_mode_with_a_user_name() {
    let port = free_tcp_port();
    let dir = tempfile::tempdir().unwrap();
    let mut peer = start_peer(
        port,
        &[
            "--devices",
            "1",
            "--security",
            "all",
            "--user",
            "tb:secret",
            "--cert-dir",
            dir.path().to_str().unwrap(),
        ],
    )
    .await;
    let server = |policy: &str, mode: &str, password: &str| {
        json!({"url": url(port), "enableSubscriptions": true, "security": policy,
               "timeoutInMillis": 3000, "reconnectRetriesCount": 0,
               "pkiDir": dir.path().join("client-pki").to_str().unwrap(),
               "identity": {"type": "username", "username": "tb", "password": password, "mode": mode,
                            "caCert": dir.path().join("server_cert.der").to_str().unwrap()}})
    };
    for (policy, mode) in [
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Basic256Sha256", "Sign"),
        ("Aes128Sha256RsaOaep", "SignAndEncrypt"),
        ("Aes128Sha256RsaOaep", "Sign"),
        ("Aes256Sha256RsaPss", "SignAndEncrypt"),
        ("Aes256Sha256RsaPss", "Sign"),
        ("Basic256", "SignAndEncrypt"),
        ("Basic128Rsa15", "SignAndEncrypt"),
    ] {
        let (task, mut ends, _) = start(&spec(server(policy, mode, "secret"), all_types_mapping()));
        let mut seen = Seen::default();
        assert!(
            collect_until(&mut ends, &mut seen, |s| s
                .last("Device 1", "i16")
                .is_some())
            .await,
            "values over {policy} {mode}:\n{}",
            peer.log()
        );
        ends.cancel.cancel();
        task.await.unwrap();
    }
    // A wrong password: the connector gives up after its retries and reports the failure.
    let mut ignored = Vec::new();
    let mut connector = OpcUaFactory::new()
        .build(
            &spec(
                server("Basic256Sha256", "SignAndEncrypt", "wrong"),
                all_types_mapping(),
            ),
            &mut ignored,
        )
        .unwrap();
    let (mut cx, _ends) = ConnectorContext::for_test("OPC-UA");
    let r = tokio::time::timeout(WAIT, connector.run(&mut cx))
        .await
        .expect("gives up in time");
    assert!(r.is_err(), "a rejected identity is a connector failure");
    peer.stop().await;
}

#[test]
fn the_upstream_sample_config_builds() {
    let Some(path) = tbgw::test_util::upstream_sample("opcua.json") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("upstream sample present");
    let config: Json = serde_json::from_str(&text).unwrap();
    let spec = ConnectorSpec {
        name: "OPC-UA Connector".into(),
        connector_type: "opcua".into(),
        file: path,
        config: config.into(),
    };
    let mut ignored = Vec::new();
    OpcUaFactory::new()
        .build(&spec, &mut ignored)
        .expect("upstream sample builds");
    // Anonymous identity without a mode: upstream ignores the policy, and so do we, visibly.
    assert!(
        ignored.contains(&"server.security".to_string()),
        "{ignored:?}"
    );
    assert!(
        !ignored
            .iter()
            .any(|k| k.contains("rpc_methods") || k.contains("attributes_updates")),
        "{ignored:?}"
    );
}

#[test]
fn config_errors_name_the_key() {
    let build = |server: Json, mapping: Json| {
        let mut ignored = Vec::new();
        OpcUaFactory::new()
            .build(&spec(server, mapping), &mut ignored)
            .err()
            .expect("rejected")
    };
    let ok_server = json!({"url": "opc.tcp://127.0.0.1:4840/"});
    let e = build(json!({"url": "http://x"}), all_types_mapping());
    assert_eq!(e.key, "server.url");
    let mut m = all_types_mapping();
    m["deviceNodePattern"] = json!("Root\\.Objects\\.Dev(");
    assert_eq!(
        build(ok_server.clone(), m).key,
        "mapping[0].deviceNodePattern"
    );
    let mut m = all_types_mapping();
    m["timeseries"][0]["value"] = json!("${ns=x;i=1}");
    assert_eq!(
        build(ok_server.clone(), m).key,
        "mapping[0].timeseries[0].value"
    );
    let mut m = all_types_mapping();
    m["timeseries"][0]["timestampLocation"] = json!("later");
    assert_eq!(
        build(ok_server.clone(), m).key,
        "mapping[0].timeseries[0].timestampLocation"
    );
    let e = build(
        json!({"url": "opc.tcp://h/", "security": "Rot13", "identity": {"type": "anonymous", "mode": "Sign"}}),
        all_types_mapping(),
    );
    assert_eq!(e.key, "server.security");
    let e = build(
        json!({"url": "opc.tcp://h/", "identity": {"type": "username"}}),
        all_types_mapping(),
    );
    assert_eq!(e.key, "server.identity.username");
}

#[tokio::test]
async fn gateway_delivers_asyncua_values_and_rpc_calls_the_method() {
    let port = free_tcp_port();
    let mut peer = start_peer(port, &["--devices", "1", "--period", "0.2"]).await;
    let broker = Mosquitto::start().await.expect("mosquitto starts");
    let tb = TbStandIn::connect(broker.port())
        .await
        .expect("stand-in connects");
    let spec = spec(
        json!({"url": url(port), "enableSubscriptions": true}),
        all_types_mapping(),
    );
    let mut ignored = Vec::new();
    let connector = OpcUaFactory::new().build(&spec, &mut ignored).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", broker.port(), "token"))
        .registry_dir(dir.path())
        .connector("OPC-UA", "opcua", connector)
        .build()
        .expect("gateway builds");
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gw = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    let telemetry = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/telemetry"
                && m.text().contains("Device 1")
                && m.text().contains("counter")
        })
        .await;
    assert!(
        telemetry.is_some(),
        "asyncua values reach ThingsBoard:\n{}",
        peer.log()
    );
    tb.send_rpc("Device 1", 7, "multiply", json!([5, 6]))
        .await
        .unwrap();
    let reply = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/rpc" && m.text().contains("\"id\":7")
        })
        .await
        .expect("RPC reply");
    let body: Json = serde_json::from_str(&reply.text()).unwrap();
    // As the Python gateway: the method's output under `result.result`.
    assert_eq!(body["data"], json!({"result": {"result": 30}}), "{body}");
    tb.send_rpc("Device 1", 8, "set", json!("StringVar; written"))
        .await
        .unwrap();
    tb.wait_for(WAIT, |m| {
        m.topic == "v1/gateway/rpc" && m.text().contains("\"id\":8")
    })
    .await
    .expect("set reply");
    tb.send_rpc("Device 1", 9, "get", json!("StringVar"))
        .await
        .unwrap();
    let reply = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/rpc" && m.text().contains("\"id\":9")
        })
        .await
        .expect("get reply");
    assert!(reply.text().contains("written"), "{}", reply.text());
    let _ = stop.send(());
    gw.await.unwrap();
    peer.stop().await;
}

#[tokio::test]
async fn a_panicking_session_event_task_is_counted_and_the_connector_recovers() {
    let port = free_tcp_port();
    let mut peer = start_peer(port, &["--devices", "1", "--period", "0.1"]).await;
    let spec = spec(
        json!({"url": url(port), "enableSubscriptions": true, "timeoutInMillis": 2000}),
        all_types_mapping(),
    );
    let connector = OpcUaFactory::new()
        .build(&spec, &mut Vec::new())
        .expect("config is valid");
    let (cx, mut ends) = ConnectorContext::for_test("OPC-UA");
    let stats = cx.stats().clone();
    // The session's event task only forwards what async-opcua reports, so no server input
    // makes it fail: the test-only fault hook makes the first one panic.
    ends.fail_next_task("OPC-UA session events");
    let task = tokio::spawn(cx.supervise(connector));
    let mut seen = Seen::default();
    assert!(
        collect_until(&mut ends, &mut seen, |s| s
            .last("Device 1", "counter")
            .is_some())
        .await,
        "values flow after the restart:\n{}",
        peer.log()
    );
    let failures = stats.task_failures();
    let restarts = stats.restarts();
    assert_eq!((failures, restarts), (1, 1));
    ends.cancel.cancel();
    task.await.unwrap();
    peer.stop().await;
}
