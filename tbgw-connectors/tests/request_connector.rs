//! The Request connector against a real HTTP(S) server on loopback (`peers/request_server.py`,
//! Python standard library): polling and conversion, failures that are counted and survived,
//! slow endpoints that neither pile up nor delay other mappings, https with and without
//! verification, and downlink as HTTP requests; end to end through the `Gateway`, mosquitto and
//! the ThingsBoard stand-in.

#![cfg_attr(not(feature = "request"), allow(missing_docs))]
#![cfg(feature = "request")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::convert::{ConvertError, ConverterRegistry, UplinkConverter, UplinkInput};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest, RpcResponder};
use tbgw::model::{DeviceData, Value};
use tbgw::stats::ConnectorCounters;
use tbgw::test_util::{free_tcp_port, Mosquitto, TbStandIn};
use tbgw::uplink::UplinkMessage;
use tbgw::{Gateway, TbOptions};
use tbgw_connectors::request::RequestFactory;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(10);

/// The test peer: `request_server.py` on a free port, killed on drop.
struct Peer {
    _child: Child,
    port: u16,
    https: bool,
}

impl Peer {
    async fn start(tls: Option<(&Path, &Path)>) -> Peer {
        let port = free_tcp_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/request_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(port.to_string());
        if let Some((c, k)) = tls {
            cmd.arg(c).arg(k);
        }
        let child = cmd
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
        Peer {
            _child: child,
            port,
            https: tls.is_some(),
        }
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// GET a JSON document from the peer with curl.
    fn get(&self, path: &str) -> Json {
        let out = std::process::Command::new("curl")
            .args(["-sk", &format!("{}{path}", self.url())])
            .output()
            .expect("curl runs");
        serde_json::from_slice(&out.stdout).expect("peer answers JSON")
    }
}

fn spec(config: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "Request".into(),
        connector_type: "request".into(),
        file: "request.json".into(),
        config: config.into(),
    }
}

fn start(spec: &ConnectorSpec) -> (tokio::task::JoinHandle<()>, TestEnds, ConnectorCounters) {
    let mut ignored = Vec::new();
    let mut connector = RequestFactory::new()
        .build(spec, &mut ignored)
        .expect("config is valid");
    let (mut cx, ends) = ConnectorContext::for_test("Request");
    let stats = cx.stats().clone();
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends, stats)
}

/// Collects data until every named device has arrived.
async fn collect(ends: &mut TestEnds, devices: &[&str]) -> Vec<DeviceData> {
    let mut got: Vec<DeviceData> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !devices
        .iter()
        .all(|d| got.iter().any(|g| g.device_name == *d))
    {
        match tokio::time::timeout_at(deadline, ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Data { data, .. })) => got.extend(data),
            Ok(Some(_)) => {}
            _ => panic!(
                "devices {devices:?} not all received; got {:?}",
                got.iter().map(|g| &g.device_name).collect::<Vec<_>>()
            ),
        }
    }
    got
}

#[tokio::test]
async fn polls_are_converted_with_unpacking_sub_requests_redirects_and_basic_auth() {
    let peer = Peer::start(None).await;
    let spec = spec(json!({
        "host": peer.url(),
        "security": {"type": "basic", "username": "user", "password": "password"},
        "mapping": [
            {"url": "data", "scanPeriod": 0.2, "timeout": 2,
             "converter": {"type": "json", "deviceNameJsonExpression": "SD8500", "deviceTypeJsonExpression": "SD",
                "attributes": [{"key": "serialNumber", "type": "string", "value": "${serial}"}],
                "telemetry": [{"key": "Maintainer", "type": "string", "value": "${Developer}"},
                              {"key": "combine", "type": "string", "value": "${Developer}:${hum}"}]}},
            {"url": "/devices", "scanPeriod": 0.2, "dataUnpackExpression": "items",
             "subRequests": {"hist": {"url": "/hist/${id}"}},
             "converter": {"deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "${id}-${type}",
                                          "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "GridVis"},
                "telemetry": [{"key": "cumPwr", "type": "double", "value": "${hist.values[0].avg}"}]}},
            {"url": "/auth", "scanPeriod": 0.2,
             "converter": {"deviceNameExpression": "${serial}", "timeseries": [{"key": "temp", "type": "int", "value": "${temp}"}]}},
            {"url": "/redirect", "scanPeriod": 0.2, "allowRedirects": true,
             "converter": {"deviceNameJsonExpression": "redirected", "telemetry": [{"key": "t", "type": "double", "value": "${temp}"}]}}
        ]
    }));
    let (task, mut ends, stats) = start(&spec);
    let got = collect(
        &mut ends,
        &["SD8500", "1-GV", "2-GV", "AUTH-1", "redirected"],
    )
    .await;
    let by = |n: &str| got.iter().find(|d| d.device_name == n).unwrap();
    let sd = by("SD8500");
    assert_eq!(sd.device_type, "SD");
    assert_eq!(sd.value("serialNumber"), Some(Value::from("SN-1")));
    assert_eq!(sd.value("Maintainer"), Some(Value::from("ann")));
    assert_eq!(sd.value("combine"), Some(Value::from("ann:40")));
    assert_eq!(by("1-GV").device_type, "GridVis");
    assert_eq!(by("1-GV").value("cumPwr"), Some(Value::Float(1000.0)));
    assert_eq!(by("2-GV").value("cumPwr"), Some(Value::Float(2000.0)));
    assert_eq!(by("AUTH-1").value("temp"), Some(Value::Int(5)));
    assert_eq!(by("redirected").value("t"), Some(Value::Float(21.5)));
    assert!(stats.messages_received() >= 4);
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn failures_are_counted_and_polling_goes_on() {
    let peer = Peer::start(None).await;
    let dead = free_tcp_port();
    let conv = json!({"deviceNameJsonExpression": "ok", "telemetry": [{"key": "t", "type": "double", "value": "${temp}"}]});
    let spec = spec(json!({
        "host": peer.url(),
        "mapping": [
            {"url": "/fail", "scanPeriod": 0.05, "converter": conv},
            {"url": "/malformed", "scanPeriod": 0.05, "converter": conv},
            {"url": "/status/404", "scanPeriod": 0.05, "converter": conv},
            {"url": format!("http://127.0.0.1:{dead}/x"), "scanPeriod": 0.05, "converter": conv},
            {"url": "/slow?ms=2000", "scanPeriod": 0.05, "timeout": 0.1, "converter": conv},
            {"url": "/data", "scanPeriod": 0.05, "converter": conv}
        ]
    }));
    let (task, mut ends, stats) = start(&spec);
    // Good data keeps coming while the broken mappings fail over and over.
    for _ in 0..5 {
        collect(&mut ends, &["ok"]).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.errors() < 10 {
        assert!(tokio::time::Instant::now() < deadline, "errors not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stats.convert_errors() >= 1, "malformed JSON counted");
    assert!(!task.is_finished());
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_slow_endpoint_neither_piles_up_nor_delays_other_mappings() {
    let peer = Peer::start(None).await;
    let spec = spec(json!({
        "host": peer.url(),
        "mapping": [
            {"url": "/slow?ms=600", "scanPeriod": 0.1, "timeout": 5,
             "converter": {"deviceNameJsonExpression": "slow", "telemetry": [{"key": "v", "type": "int", "value": "${v}"}]}},
            {"url": "/data", "scanPeriod": 0.1,
             "converter": {"deviceNameJsonExpression": "fast", "telemetry": [{"key": "t", "type": "double", "value": "${temp}"}]}}
        ]
    }));
    let (task, mut ends, _) = start(&spec);
    // Wait for three slow polls to complete.
    let mut slow = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while slow < 3 {
        match tokio::time::timeout_at(deadline, ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Data { data, .. })) => {
                slow += data.iter().filter(|d| d.device_name == "slow").count();
            }
            Ok(Some(_)) => {}
            _ => panic!("slow polls did not complete"),
        }
    }
    ends.cancel.cancel();
    task.await.unwrap();
    let stats = peer.get("/_stats");
    // Never two polls of one mapping at once, and no burst of catch-up polls: every slow
    // poll started only after the previous one ended.
    assert_eq!(stats["max_in_flight"]["/slow"], 1, "{stats}");
    let times: Vec<f64> = serde_json::from_value(stats["times"]["/slow"].clone()).unwrap();
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= 0.59,
            "slow polls overlapped or burst: {times:?}"
        );
    }
    // The fast mapping kept its own schedule meanwhile: several polls per slow poll.
    let fast = stats["counts"]["/data"].as_u64().unwrap();
    let slow_n = stats["counts"]["/slow"].as_u64().unwrap();
    assert!(fast >= 2 * slow_n, "fast {fast} vs slow {slow_n}");
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

/// A self-signed certificate for 127.0.0.1: (cert, key).
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
async fn https_polls_without_verification_and_refuses_an_untrusted_certificate_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let peer = Peer::start(Some((&cert, &key))).await;
    let mapping = json!([{"url": "/data", "scanPeriod": 0.1,
        "converter": {"deviceNameJsonExpression": "${serial}", "telemetry": [{"key": "t", "type": "double", "value": "${temp}"}]}}]);

    let (task, mut ends, _) = start(&spec(
        json!({"host": peer.url(), "SSLVerify": false, "mapping": mapping}),
    ));
    let got = collect(&mut ends, &["SN-1"]).await;
    assert_eq!(got[0].value("t"), Some(Value::Float(21.5)));
    ends.cancel.cancel();
    task.await.unwrap();

    let (task, mut ends, stats) = start(&spec(
        json!({"host": peer.url(), "SSLVerify": true, "mapping": mapping}),
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.errors() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "TLS failure not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ends.uplink.try_recv().is_err(),
        "no data from an untrusted server"
    );
    ends.cancel.cancel();
    task.await.unwrap();
}

async fn rpc(
    ends: &TestEnds,
    device: Option<&str>,
    method: &str,
    params: Json,
) -> Result<Json, RpcError> {
    let (responder, rx) = RpcResponder::new();
    let mut r = RpcRequest {
        device: device.map(str::to_string),
        id: 7,
        method: method.into(),
        params,
        responder,
    };
    r.id = 7;
    ends.downlink.send(Downlink::Rpc(r)).await.unwrap();
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("answer in time")
        .expect("answered")
}

#[tokio::test]
async fn attribute_updates_and_rpcs_become_http_requests() {
    let peer = Peer::start(None).await;
    let dead = free_tcp_port();
    let spec = spec(json!({
        "host": peer.url(),
        "attributeUpdates": [{
            "httpMethod": "POST", "deviceNameFilter": "SD.*", "attributeFilter": "send_data",
            "requestUrlExpression": "sensor/${deviceName}/${attributeKey}",
            "requestValueExpression": "{\"${attributeKey}\":\"${attributeValue}\"}", "tries": 2, "timeout": 1
        }],
        "serverSideRpc": [
            {"deviceNameFilter": ".*", "methodFilter": "echo", "httpMethod": "GET",
             "requestUrlExpression": "sensor/${deviceName}/request/${methodName}/${requestId}",
             "responseValueExpression": "${temp}", "timeout": 1, "tries": 3},
            {"deviceNameFilter": ".*", "methodFilter": "post", "httpMethod": "POST",
             "requestUrlExpression": "/sensor/${deviceName}/post", "requestValueExpression": "${params}"},
            {"deviceNameFilter": ".*", "methodFilter": "missing", "httpMethod": "GET",
             "requestUrlExpression": "/status/404"},
            {"deviceNameFilter": ".*", "methodFilter": "dead", "httpMethod": "GET",
             "requestUrlExpression": format!("http://127.0.0.1:{dead}/x")}
        ]
    }));
    let (task, ends, _) = start(&spec);

    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "SD-1".into(),
            values: serde_json::from_value(json!({"send_data": 5, "other": 1})).unwrap(),
        }))
        .await
        .unwrap();
    // As upstream: a device RPC's answer is `{"result": {"value": <answer>}}`.
    let r = rpc(&ends, Some("SD-1"), "echo", json!({})).await.unwrap();
    assert_eq!(r, json!({"result": {"value": 22.5}}));
    let r = rpc(&ends, Some("SD-1"), "post", json!({"a": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(r["result"]["value"]["echo"], json!({"a": [1, 2]}));
    let r = rpc(&ends, Some("SD-1"), "missing", json!({}))
        .await
        .unwrap();
    assert_eq!(r["code"], 404);
    assert_eq!(r["result"], "status 404");
    let e = rpc(&ends, Some("SD-1"), "dead", json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), 503);
    let e = rpc(&ends, Some("SD-1"), "nothing", json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), 404);

    // Reserved get/set and a connector RPC (no device).
    let r = rpc(
        &ends,
        Some("SD-1"),
        "get",
        json!(
            "requestUrlExpression=sensor/${deviceName}/get;httpMethod=GET;valueExpression=${temp};"
        ),
    )
    .await
    .unwrap();
    assert_eq!(r, json!({"result": {"value": 22.5}}));
    let r = rpc(
        &ends,
        None,
        "set",
        json!("requestUrlExpression=sensor/gw/set;value={\"v\": ${params}};"),
    )
    .await;
    // `${params}` is the params string itself, so the body is not JSON: the peer echoes text.
    assert!(r.unwrap()["result"].get("value").is_some());
    let e = rpc(&ends, Some("SD-1"), "get", json!("nonsense"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), 400);

    // The attribute update went out once, only for the filtered key.
    let log = peer.get("/_log");
    let updates: Vec<&Json> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .unwrap()
                .starts_with("/sensor/SD-1/send_data")
        })
        .collect();
    assert_eq!(updates.len(), 1, "{log}");
    assert_eq!(updates[0]["method"], "POST");
    assert_eq!(updates[0]["body"], "{\"send_data\":\"5\"}");
    assert!(log
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"] == "/sensor/SD-1/request/echo/7" && e["method"] == "GET"));
    assert!(!log
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"].as_str().unwrap().contains("other")));
    ends.cancel.cancel();
    task.await.unwrap();
}

#[test]
fn upstream_sample_builds_and_bad_configs_name_the_key() {
    let Some(path) = tbgw::test_util::upstream_sample("request.json") else {
        return;
    };
    let config: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut ignored = Vec::new();
    RequestFactory::new()
        .build(&spec(config.clone()), &mut ignored)
        .expect("upstream's sample builds");
    assert!(
        ignored.iter().any(|k| k.contains("processingFunction")),
        "{ignored:?}"
    );
    assert!(
        ignored
            .iter()
            .any(|k| k.starts_with("mapping[1].converter")),
        "{ignored:?}"
    );

    let mut bad = config.clone();
    bad["host"] = json!("127.0.0.1:5000");
    let e = RequestFactory::new()
        .build(&spec(bad), &mut Vec::new())
        .err()
        .unwrap();
    assert_eq!(e.key, "host");
    let mut bad = config.clone();
    bad["serverSideRpc"][0]["methodFilter"] = json!("(");
    let e = RequestFactory::new()
        .build(&spec(bad), &mut Vec::new())
        .err()
        .unwrap();
    assert_eq!(e.key, "serverSideRpc[0].methodFilter");
    let mut bad = config;
    bad["mapping"][0]["converter"]["telemetry"][0]["type"] = json!("complex");
    let e = RequestFactory::new()
        .build(&spec(bad), &mut Vec::new())
        .err()
        .unwrap();
    assert_eq!(e.key, "mapping[0].converter.telemetry[0].type");
}

/// End to end: the gateway with the Request connector, mosquitto and the ThingsBoard
/// stand-in. Polled data arrives as telemetry; an RPC from ThingsBoard becomes an HTTP request
/// to the peer and the reply carries the peer's answer.
#[tokio::test]
async fn end_to_end_polled_data_reaches_thingsboard_and_rpc_replies_carry_the_response() {
    let peer = Peer::start(None).await;
    let broker = Mosquitto::start().await.expect("mosquitto starts");
    let tb = TbStandIn::connect(broker.port()).await.expect("stand-in");
    let config = json!({
        "host": peer.url(),
        "mapping": [{"url": "/data", "scanPeriod": 0.2,
            "converter": {"deviceNameJsonExpression": "SD8500", "deviceTypeJsonExpression": "SD",
                          "telemetry": [{"key": "temp", "type": "double", "value": "${temp}"}]}}],
        "serverSideRpc": [{"deviceNameFilter": "SD.*", "methodFilter": "echo", "httpMethod": "GET",
            "requestUrlExpression": "sensor/${deviceName}/request/${methodName}/${requestId}",
            "responseValueExpression": "${temp}", "timeout": 2}]
    });
    let connector = RequestFactory::new()
        .build(&spec(config), &mut Vec::new())
        .unwrap();
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", broker.port(), "token"))
        .connector("Request", "request", connector)
        .build()
        .expect("gateway builds");
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    let tele = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/telemetry" && m.get("SD8500").is_some()
        })
        .await
        .expect("telemetry reaches ThingsBoard");
    assert_eq!(
        tele.get("SD8500").unwrap()[0]["values"],
        json!({"temp": 21.5})
    );
    tb.send_rpc("SD8500", 11, "echo", json!({})).await.unwrap();
    let reply = tb
        .wait_for(WAIT, |m| {
            m.topic == "v1/gateway/rpc" && m.get("id") == Some(&json!(11))
        })
        .await
        .expect("RPC reply");
    assert_eq!(
        reply.json,
        Some(json!({"device": "SD8500", "id": 11, "data": {"result": {"value": 22.5}}}))
    );
    let _ = stop.send(());
    run.await.unwrap();
}

/// A custom converter: the body's length as telemetry of the device its `extension-config`
/// names.
struct LengthConverter {
    device: String,
}

impl UplinkConverter for LengthConverter {
    fn convert(
        &self,
        input: tbgw::convert::UplinkInput<'_>,
        _errors: &mut Vec<tbgw::convert::ConvertError>,
    ) -> Result<Vec<DeviceData>, tbgw::convert::ConvertError> {
        let mut d = DeviceData::new(self.device.clone(), "bytes");
        d.push_telemetry(
            input.received_ts,
            "len",
            Value::Int(input.payload.len() as i64),
        );
        d.push_attribute("source", Value::from(input.source));
        Ok(vec![d])
    }
}

#[tokio::test]
async fn a_registered_custom_converter_gets_its_extension_config_and_the_raw_body() {
    let peer = Peer::start(None).await;
    let spec = spec(json!({
        "host": peer.url(),
        "mapping": [{"url": "/malformed", "scanPeriod": 0.1,
            "converter": {"type": "custom", "extension": "Length", "extension-config": {"device": "raw"}}}]
    }));
    let mut ignored = Vec::new();
    let converters = ConverterRegistry::new().with_factory("Length", |cfg| {
        let device = cfg["device"].as_str().ok_or("`device` is missing")?;
        Ok(Arc::new(LengthConverter {
            device: device.to_string(),
        }) as Arc<dyn UplinkConverter>)
    });
    let mut connector = RequestFactory::new()
        .with_converters(converters)
        .build(&spec, &mut ignored)
        .expect("config is valid");
    assert!(ignored.is_empty(), "{ignored:?}");
    let (mut cx, mut ends) = ConnectorContext::for_test("Request");
    let task = tokio::spawn(async move { connector.run(&mut cx).await.unwrap() });
    let got = collect(&mut ends, &["raw"]).await;
    assert_eq!(got[0].value("len"), Some(Value::Int(9)));
    assert_eq!(
        got[0].value("source"),
        Some(Value::from(format!("{}/malformed", peer.url())))
    );
    ends.cancel.cancel();
    task.await.unwrap();
}

/// A custom converter with a bug: it panics on the reading `{"v": 1}`, converts others.
#[derive(Debug)]
struct PanicsOnFirstReading;

impl UplinkConverter for PanicsOnFirstReading {
    fn convert(
        &self,
        input: UplinkInput<'_>,
        _errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError> {
        let v: Json = serde_json::from_slice(input.payload).unwrap_or_default();
        let v = v["v"].as_i64().unwrap_or(-1);
        if v == 1 {
            panic!("converter bug on reading 1");
        }
        let mut d = DeviceData::new("counter", "default");
        d.push_telemetry(input.received_ts, "v", Value::Int(v));
        Ok(vec![d])
    }
}

#[tokio::test]
async fn a_panicking_converter_in_a_poll_task_is_counted_and_the_connector_recovers() {
    let peer = Peer::start(None).await;
    // `/slow?ms=0` answers `{"v": n}`, n counting its requests: the first reading trips the
    // converter inside the mapping's poll task.
    let spec = spec(json!({
        "host": peer.url(),
        "mapping": [{"url": "/slow?ms=0", "scanPeriod": 0.05,
                     "converter": {"type": "custom", "extension": "Buggy"}}]
    }));
    let connector = RequestFactory::new()
        .with_converters(ConverterRegistry::new().with("Buggy", Arc::new(PanicsOnFirstReading)))
        .build(&spec, &mut Vec::new())
        .expect("config is valid");
    let (cx, mut ends) = ConnectorContext::for_test("Request");
    let stats = cx.stats().clone();
    let task = tokio::spawn(cx.supervise(connector));
    // Readings flow again after the supervisor restarted the connector.
    let data = collect(&mut ends, &["counter"]).await;
    let v = data.iter().find_map(|d| d.value("v"));
    assert!(matches!(v, Some(Value::Int(n)) if n >= 2), "{v:?}");
    assert_eq!(stats.task_failures(), 1);
    assert_eq!(stats.restarts(), 1);
    ends.cancel.cancel();
    task.await.unwrap();
}
