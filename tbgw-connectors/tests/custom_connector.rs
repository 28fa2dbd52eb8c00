//! Python custom connectors (a `connectors[]` entry with a `class`): the host package
//! (`python/tbgw_custom`) started by tbgw as a supervised child process runs an upstream-style
//! connector class (`tests/peers/custom_extensions/probe/probe_connector.py`) that calls every
//! method of the gateway object; everything it does arrives at the gateway, and RPCs and
//! attribute updates reach its callbacks. Run with the peers' Python (grpcio only: upstream's
//! older dict data format) and with upstream's virtualenv (its `Connector` base class,
//! `init_logger` and `ConvertedData`).
#![cfg_attr(not(feature = "grpc"), allow(missing_docs))]
#![cfg(feature = "grpc")]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::downlink::{AttributeUpdate, Downlink};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{free_tcp_port, harness};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::grpc::{GrpcFactory, GrpcMainConfig};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn extensions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/custom_extensions")
}

fn upstream_python() -> Option<PathBuf> {
    let venv = std::env::var_os("TBGW_UPSTREAM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tbgw-upstream")
        });
    let py = venv.join("bin/python");
    py.exists().then_some(py)
}

struct Harness {
    ends: TestEnds,
    stats: tbgw::stats::ConnectorCounters,
    server_stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

async fn harness(python: PathBuf) -> Harness {
    harness_with(python, "ProbeConnector").await
}

async fn harness_with(python: PathBuf, class: &str) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("probe.json");
    let config = json!({"custom": "value", "logLevel": "INFO"});
    std::fs::write(&file, config.to_string()).expect("write");
    let port = free_tcp_port();
    let main = json!({
        "grpc": {"enabled": true, "serverPort": port, "serverHost": "127.0.0.1"},
        "connectors": [{"type": "Probe", "name": "Probe Connector", "configuration": "probe.json",
                        "class": class, "python": python.display().to_string(),
                        "extensionsPath": extensions_dir().display().to_string()}]
    });
    let cfg =
        GrpcMainConfig::from_value(&dir.path().join("tb_gateway.json"), dir.path(), &main, true)
            .expect("valid main file");
    let factory = GrpcFactory::new(cfg);
    let server = factory.server().await.expect("enabled").expect("binds");
    let server_stop = CancellationToken::new();
    tokio::spawn(server.run(server_stop.clone()));
    let customs = factory.custom_factories();
    assert_eq!(customs.len(), 1);
    assert_eq!(customs[0].connector_type(), "Probe");
    let spec = ConnectorSpec {
        name: "Probe Connector".into(),
        connector_type: "Probe".into(),
        file,
        config: json!({"custom": "value"}).into(),
    };
    let mut connector = customs[0].build(&spec, &mut Vec::new()).expect("builds");
    let (mut cx, ends) = ConnectorContext::for_test("Probe Connector");
    let stats = cx.stats().clone();
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    Harness {
        ends,
        stats,
        server_stop,
        task,
        dir,
    }
}

impl Harness {
    async fn next(&mut self) -> UplinkMessage {
        tokio::time::timeout(WAIT, self.ends.uplink.recv())
            .await
            .expect("uplink in time")
            .expect("uplink open")
    }

    /// The next data message of the probe's `_report` carrying `key`.
    async fn report(&mut self, key: &str) -> DeviceData {
        loop {
            if let UplinkMessage::Data { mut data, .. } = self.next().await {
                let d = data.remove(0);
                if d.telemetry
                    .iter()
                    .any(|t| t.values.iter().any(|(k, _)| k == key))
                {
                    return d;
                }
            }
        }
    }

    async fn rpc(&self, device: Option<&str>, id: i64, method: &str, params: Json) -> Json {
        harness::rpc(&self.ends.downlink, device, id, method, params, WAIT).await
    }

    /// Stops the connector; the class's `close()` has run by then.
    async fn stop(self) {
        self.ends.cancel.cancel();
        let _ = tokio::time::timeout(WAIT, self.task).await;
        self.server_stop.cancel();
        assert_eq!(
            std::fs::read_to_string(self.dir.path().join("probe-closed")).ok(),
            Some("closed".to_string()),
            "close() ran when the connector stopped"
        );
    }
}

fn value(d: &[(String, Value)], key: &str) -> Option<Value> {
    d.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn text(d: &DeviceData, key: &str) -> String {
    match d
        .telemetry
        .iter()
        .find_map(|t| value(&t.values, key))
        .unwrap_or_else(|| panic!("{key} in {d:?}"))
    {
        Value::String(s) => s,
        other => panic!("{key} is {other:?}"),
    }
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

async fn every_gateway_method(python: PathBuf, upstream: bool) {
    let mut h = harness(python).await;
    // add_device, del_device, send_to_storage (upstream's older dict format)
    let mut connects = Vec::new();
    let mut disconnects = Vec::new();
    let mut telemetry = None;
    let mut attributes = None;
    while telemetry.is_none() || attributes.is_none() {
        match h.next().await {
            UplinkMessage::Connect {
                device,
                device_type,
                ..
            } => connects.push((device, device_type)),
            UplinkMessage::Disconnect { device, .. } => disconnects.push(device),
            UplinkMessage::Data { mut data, .. } => {
                let d = data.remove(0);
                assert_eq!(
                    (d.device_name.as_str(), d.device_type.as_str()),
                    ("Probe1", "probe")
                );
                if d.telemetry.is_empty() {
                    attributes = Some(d);
                } else {
                    telemetry = Some(d);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        connects,
        vec![
            ("Probe1".to_string(), "probe".to_string()),
            ("Probe2".to_string(), "other".to_string())
        ]
    );
    assert_eq!(disconnects, vec!["Probe2".to_string()]);
    let (t, a) = (
        telemetry.expect("telemetry"),
        attributes.expect("attributes"),
    );
    assert_eq!(t.telemetry[0].ts, 1_700_000_000_000);
    for (k, v) in all_types() {
        assert_eq!(
            value(&t.telemetry[0].values, k),
            Some(v.clone()),
            "telemetry {k}"
        );
        assert_eq!(value(&a.attributes, k), Some(v), "attribute {k}");
    }
    if upstream {
        // upstream's ConvertedData with DatapointKey keys and a TelemetryEntry
        let c = h.report("cd_t").await;
        assert_eq!(c.telemetry[0].ts, 1_700_000_000_001);
        assert_eq!(value(&c.telemetry[0].values, "cd_t"), Some(Value::Int(7)));
        loop {
            if let UplinkMessage::Data { data, .. } = h.next().await {
                if let Some(v) = value(&data[0].attributes, "cd_a") {
                    assert_eq!(v, Value::String("converted".into()));
                    break;
                }
            }
        }
    }
    // get_devices, get_config_path, the configuration and type the class got
    let r = h.report("devices").await;
    let devices = r
        .telemetry
        .iter()
        .find_map(|t| value(&t.values, "devices"))
        .expect("devices");
    assert_eq!(devices, Value::Json(json!(["Probe1"])));
    assert!(text(&r, "config_path").ends_with('/'), "{r:?}");
    assert_eq!(
        text(&r, "config_type"),
        "probe",
        "the folder: the type lower-cased"
    );
    assert_eq!(text(&r, "config_name"), "Probe Connector");
    assert_eq!(text(&r, "config_custom"), "value");
    assert_eq!(
        r.telemetry
            .iter()
            .find_map(|t| value(&t.values, "upstream")),
        Some(Value::Bool(upstream))
    );

    // tb_client.client.gw_request_shared_attributes: the request reaches ThingsBoard's side,
    // the answer the callback.
    loop {
        match h.next().await {
            UplinkMessage::AttributeRequest {
                device,
                client,
                keys,
                reply,
            } => {
                assert_eq!(
                    (device.as_str(), client, keys),
                    ("Probe1", false, vec!["sk".to_string()])
                );
                reply
                    .send(json!({"id": 1, "device": "Probe1", "value": "shared-value"}))
                    .expect("request waits");
                break;
            }
            UplinkMessage::Data { .. } => {}
            other => panic!("expected an attribute request, got {other:?}"),
        }
    }
    let a = h.report("attr_answer").await;
    let answer: Json = serde_json::from_str(&text(&a, "attr_answer")).expect("json");
    assert_eq!(answer["device"], json!("Probe1"));
    assert_eq!(answer["value"], json!("shared-value"));
    assert_eq!(text(&a, "attr_error"), "None");

    // server_side_rpc_handler and send_rpc_reply, the ways upstream's connectors answer
    assert_eq!(
        h.rpc(Some("Probe1"), 11, "echo", json!({"v": 5})).await,
        json!({"echo": {"v": 5}})
    );
    assert_eq!(
        h.rpc(Some("Probe1"), 12, "ok", json!(null)).await,
        json!({"success": true})
    );
    let fail = h.rpc(Some("Probe1"), 13, "fail", json!(1)).await;
    assert_eq!(fail["error"], json!("failed on purpose"), "{fail}");
    assert_eq!(fail["success"], json!(false), "{fail}");
    let crash = h.rpc(Some("Probe1"), 14, "crash", json!(1)).await;
    assert_eq!(crash["error"], json!("crashed on purpose"), "{crash}");
    // a connector RPC (`probe_ping` at ThingsBoard): the method as upstream hands it over
    let pong = h.rpc(None, 15, "ping", json!({"x": 1})).await;
    assert_eq!(pong["pong"], json!({"x": 1}), "{pong}");
    assert_eq!(pong["method"], json!("probe_ping"), "{pong}");

    // on_attributes_update, with values of every type and a deletion
    h.ends
        .downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Probe1".into(),
            values: json!({"b": false, "l": 7, "d": 0.5, "s": "x", "j": {"a": 1}})
                .as_object()
                .cloned()
                .expect("object"),
        }))
        .await
        .expect("downlink");
    let u = h.report("attr_update").await;
    let update: Json = serde_json::from_str(&text(&u, "attr_update")).expect("json");
    assert_eq!(
        update,
        json!({"device": "Probe1", "data": {"b": false, "l": 7, "d": 0.5, "s": "x", "j": {"a": 1}}})
    );
    h.ends
        .downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "Probe1".into(),
            values: json!({"deleted": ["s"]})
                .as_object()
                .cloned()
                .expect("object"),
        }))
        .await
        .expect("downlink");
    let u = h.report("attr_update").await;
    let update: Json = serde_json::from_str(&text(&u, "attr_update")).expect("json");
    assert_eq!(
        update,
        json!({"device": "Probe1", "data": {"deleted": ["s"]}})
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_class_uses_every_gateway_method_with_grpcio_only() {
    every_gateway_method(tbgw::test_util::peers_python(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_class_uses_every_gateway_method_with_upstreams_package() {
    let Some(python) = upstream_python() else {
        eprintln!("skipped: no upstream virtualenv (.ci/install)");
        return;
    };
    every_gateway_method(python, true).await;
}

/// A class that is not there: the host exits with an error (naming the class and the folders
/// searched, in the gateway's log), tbgw counts it and starts the host again with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_class_is_an_error_and_the_host_is_retried() {
    let mut h = harness_with(tbgw::test_util::peers_python(), "NoSuchConnector").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.stats.errors() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the host's exits are counted and it is started again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        h.ends.uplink.try_recv().is_err(),
        "nothing reaches the gateway"
    );
    h.ends.cancel.cancel();
    let _ = tokio::time::timeout(WAIT, h.task).await;
    h.server_stop.cancel();
}
