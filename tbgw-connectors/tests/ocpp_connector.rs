//! The OCPP connector against charge point simulators of the PyPI `ocpp` package
//! (`tests/peers/ocpp_cp.py`), which validates every message against the official JSON
//! schemas of OCPP 1.6J, 2.0.1 and 2.1 in both directions: a schema-invalid answer or call
//! from the central system fails the simulator's step.
#![cfg_attr(not(feature = "ocpp"), allow(missing_docs))]
#![cfg(feature = "ocpp")]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::downlink::{AttributeUpdate, Downlink};
use tbgw::model::{DeviceData, Value};
use tbgw::stats::ConnectorCounters;
use tbgw::test_util::{free_tcp_port, harness, PythonPeer};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::ocpp::OcppFactory;

const WAIT: Duration = Duration::from_secs(20);

fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/ocpp_cp.py"
    ))
}

fn start(config: Json) -> (tokio::task::JoinHandle<()>, TestEnds, ConnectorCounters) {
    let spec = ConnectorSpec {
        name: "OCPP".into(),
        connector_type: "ocpp".into(),
        file: "ocpp.json".into(),
        config: config.into(),
    };
    let mut connector = OcppFactory::new()
        .build(&spec, &mut Vec::new())
        .expect("config is valid");
    let (mut cx, ends) = ConnectorContext::for_test("OCPP");
    let stats = cx.stats().clone();
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends, stats)
}

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

/// A simulator with the given options (see the script's docstring).
fn sim(opts: Json) -> PythonPeer {
    PythonPeer::spawn([script().into_os_string(), opts.to_string().into()]).expect("python runs")
}

async fn wait(p: &mut PythonPeer, text: &str) {
    if let Err(e) = p.wait_output(text, WAIT).await {
        panic!("{e}");
    }
}

/// The line of the simulator's log that starts with `prefix`.
fn line(p: &PythonPeer, prefix: &str) -> String {
    p.log()
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{}", p.log()))
        .to_owned()
}

/// Everything the connector sent, by device: latest value of each key, plus connect events.
#[derive(Debug, Default)]
struct Seen {
    values: HashMap<String, HashMap<String, Value>>,
    connected: HashMap<String, String>,
    disconnected: Vec<String>,
}

impl Seen {
    fn add(&mut self, d: DeviceData) {
        let m = self.values.entry(d.device_name.clone()).or_default();
        for (k, v) in d.attributes {
            m.insert(k, v);
        }
        for e in d.telemetry {
            for (k, v) in e.values {
                m.insert(k, v);
            }
        }
    }

    fn get(&self, device: &str, key: &str) -> Option<&Value> {
        self.values.get(device)?.get(key)
    }

    /// Reads uplink until `done` holds.
    async fn until(&mut self, ends: &mut TestEnds, done: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, ends.uplink.recv()).await {
                Ok(Some(UplinkMessage::Data { data, .. })) => {
                    data.into_iter().for_each(|d| self.add(d))
                }
                Ok(Some(UplinkMessage::Connect {
                    device,
                    device_type,
                    ..
                })) => {
                    self.connected.insert(device, device_type);
                }
                Ok(Some(UplinkMessage::Disconnect { device, .. })) => {
                    self.disconnected.push(device)
                }
                Ok(Some(_)) => {}
                other => panic!("uplink ended or timed out ({other:?}); seen so far: {self:#?}"),
            }
        }
    }
}

async fn rpc(ends: &TestEnds, device: &str, method: &str, params: Json) -> Json {
    harness::rpc(&ends.downlink, Some(device), 1, method, params, WAIT).await
}

fn config(port: u16) -> Json {
    json!({
        "centralSystem": {"name": "CS", "host": "127.0.0.1", "port": port,
                          "connection": {"type": "insecure"}},
        "chargePoints": [{
            "idRegexpPattern": "ocpp/CP_",
            "deviceNameExpression": "${Vendor} ${Model}",
            "deviceTypeExpression": "charger",
            "idTokens": ["GOOD"],
            "attributes": [
                {"messageTypeFilter": "BootNotification", "key": "serial", "value": "${serial_number}"},
                {"messageTypeFilter": "BootNotification", "key": "serial", "value": "${charge_point_serial_number}"}
            ],
            "timeseries": [
                {"messageTypeFilter": "MeterValues,", "key": "energy", "value": "${meter_value[:].sampled_value[:].value}"},
                {"messageTypeFilter": "MeterValues", "key": "soc", "value": "${soc}"},
                {"messageTypeFilter": "StatusNotification", "key": "status", "value": "${status}"},
                {"messageTypeFilter": "StatusNotification", "key": "status", "value": "${connector_status}"},
                {"messageTypeFilter": "TransactionEvent", "key": "power", "value": "${power_active_import}"},
                {"messageTypeFilter": "StartTransaction", "key": "meterStart", "value": "${meterStart}"},
                {"messageTypeFilter": "StopTransaction", "key": "meterStop", "value": "${meter_stop}"},
                {"messageTypeFilter": "DataTransfer,", "key": "temp", "value": "${data.temp}"},
                {"messageTypeFilter": "Heartbeat", "key": "heartbeat", "value": "${current_time}"}
            ],
            "attributeUpdates": [
                {"attributeOnThingsBoard": "shared", "valueExpression": "{\"${attributeKey}\":\"${attributeValue}\"}"}
            ],
            "serverSideRpc": [
                {"methodRPC": "rpc1", "withResponse": true, "valueExpression": "${params}"},
                {"methodRPC": "reset", "action": "Reset", "valueExpression": "{\"type\": ${params.type}}", "timeout": 5}
            ]
        }]
    })
}

fn ws(port: u16, id: &str) -> String {
    format!("ws://127.0.0.1:{port}/ocpp/{id}")
}

#[tokio::test]
async fn three_versions_on_one_port_answered_converted_and_commanded() {
    let port = free_tcp_port();
    let (task, mut ends, stats) = start(config(port));
    wait_listening(port).await;
    let mut sims: Vec<(PythonPeer, &str, &str)> = [
        ("1.6", "V16"),
        ("2.0.1", "V201"),
        ("2.1", "V21"),
    ]
    .into_iter()
    .map(|(v, vendor)| {
        let p =
            sim(json!({"url": ws(port, &format!("CP_{vendor}")), "version": v, "vendor": vendor}));
        (p, v, vendor)
    })
    .collect();
    for (p, v, _) in &mut sims {
        wait(p, "UPLINK DONE").await;
        let sub = match *v {
            "1.6" => "ocpp1.6",
            "2.0.1" => "ocpp2.0.1",
            _ => "ocpp2.1",
        };
        assert_eq!(line(p, "CONNECTED"), format!("CONNECTED {sub}"));
        assert!(
            line(p, "RESULT BootNotification").contains("\"Accepted\""),
            "{}",
            p.log()
        );
        let good = line(p, "RESULT AuthorizeGood");
        let bad = line(p, "RESULT AuthorizeBad");
        assert!(good.contains("\"status\": \"Accepted\""), "{good}");
        assert!(bad.contains("\"status\": \"Invalid\""), "{bad}");
        assert!(line(p, "RESULT DataTransfer").contains("Accepted"));
    }
    let names = ["V16 Sim", "V201 Sim", "V21 Sim"];
    let mut seen = Seen::default();
    seen.until(&mut ends, |s| {
        names
            .iter()
            .all(|n| s.get(n, "temp").is_some() && s.get(n, "status").is_some())
    })
    .await;
    for n in names {
        assert_eq!(
            seen.connected.get(n).map(String::as_str),
            Some("charger"),
            "{seen:#?}"
        );
        assert_eq!(seen.get(n, "temp"), Some(&Value::Float(21.5)), "{n}");
        assert_eq!(
            seen.get(n, "status"),
            Some(&Value::String("Available".into())),
            "{n}"
        );
        assert!(seen.get(n, "heartbeat").is_some(), "{n}");
        assert!(seen.get(n, "serial").is_some(), "{n}: {seen:#?}");
    }
    assert_eq!(
        seen.get("V16 Sim", "energy"),
        Some(&Value::String("12.5".into()))
    );
    assert_eq!(seen.get("V21 Sim", "energy"), Some(&Value::Float(12.5)));
    assert_eq!(seen.get("V201 Sim", "soc"), Some(&Value::Int(48)));
    assert_eq!(seen.get("V16 Sim", "meterStart"), Some(&Value::Int(100)));
    assert_eq!(seen.get("V16 Sim", "meterStop"), Some(&Value::Int(200)));
    assert_eq!(seen.get("V21 Sim", "power"), Some(&Value::Float(5.5)));

    // Reserved get/set: GetVariables/SetVariables on 2.x, Get/ChangeConfiguration on 1.6J.
    let r = rpc(
        &ends,
        "V21 Sim",
        "set",
        json!("component=OCPPCommCtrlr;variable=HeartbeatInterval;value=30"),
    )
    .await;
    assert_eq!(
        r["result"]["setVariableResult"][0]["attributeStatus"],
        json!("Accepted"),
        "{r}"
    );
    let r = rpc(
        &ends,
        "V201 Sim",
        "get",
        json!("component=OCPPCommCtrlr;variable=HeartbeatInterval"),
    )
    .await;
    assert_eq!(
        r["result"]["getVariableResult"][0]["attributeValue"],
        json!("30"),
        "{r}"
    );
    let r = rpc(&ends, "V16 Sim", "get", json!("key=HeartbeatInterval")).await;
    assert_eq!(
        r["result"]["configurationKey"][0]["key"],
        json!("HeartbeatInterval"),
        "{r}"
    );
    let r = rpc(
        &ends,
        "V16 Sim",
        "set",
        json!("key=HeartbeatInterval;value=30"),
    )
    .await;
    assert_eq!(r, json!({"result": {"status": "Accepted"}}));
    // A configured action, per version's own enum values.
    let r = rpc(&ends, "V16 Sim", "reset", json!({"type": "Soft"})).await;
    assert_eq!(r, json!({"result": {"status": "Accepted"}}));
    let r = rpc(&ends, "V21 Sim", "reset", json!({"type": "Immediate"})).await;
    assert_eq!(r, json!({"result": {"status": "Accepted"}}));
    // A value the charge point's schema refuses comes back as the charge point's CALLERROR.
    let r = rpc(&ends, "V201 Sim", "reset", json!({"type": "Soft"})).await;
    assert_eq!(r["code"], json!(500), "{r}");
    // upstream's default: DataTransfer with the rendered expression as data.
    let r = rpc(&ends, "V201 Sim", "rpc1", json!({"a": 1})).await;
    assert_eq!(r, json!({"result": {"status": "Accepted", "data": "pong"}}));
    let r = rpc(&ends, "V201 Sim", "nope", json!({})).await;
    assert_eq!(r["code"], json!(404));
    let r = rpc(&ends, "Nobody", "rpc1", json!({})).await;
    assert_eq!(r["code"], json!(503));
    // Attribute update → DataTransfer.
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "V16 Sim".into(),
            values: json!({"shared": 42})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }))
        .await
        .expect("connector takes downlink");
    let (p16, _, _) = &mut sims[0];
    wait(p16, "GOT DataTransfer").await;
    assert!(
        line(p16, "GOT DataTransfer").contains(r#""data": "{\"shared\":\"42\"}""#),
        "{}",
        p16.log()
    );
    for (p, _, _) in &sims {
        assert!(!p.log().contains("ERROR"), "{}", p.log());
    }
    assert!(stats.stats().messages_received() >= 27);
    ends.cancel.cancel();
    task.await.expect("connector task");
}

#[tokio::test]
async fn a_charge_point_that_drops_and_reconnects_keeps_its_device() {
    let port = free_tcp_port();
    let (task, mut ends, _) = start(config(port));
    wait_listening(port).await;
    let mut p =
        sim(json!({"url": ws(port, "CP_R"), "version": "2.1", "vendor": "R", "mode": "drop"}));
    wait(&mut p, "RECONNECTED").await;
    let mut seen = Seen::default();
    seen.until(&mut ends, |s| {
        s.get("R Sim", "energy") == Some(&Value::Float(99.0))
    })
    .await;
    assert!(p.log().contains("DROPPED"));
    // The reconnected charge point (no new BootNotification) still takes RPCs by its name.
    let r = rpc(&ends, "R Sim", "rpc1", json!("x")).await;
    assert_eq!(r["result"]["status"], json!("Accepted"), "{r}");
    p.stop().await;
    // Once the connection is gone, RPCs are refused at once as unreachable.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = rpc(&ends, "R Sim", "rpc1", json!("x")).await;
        if r["code"] == json!(503) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still reachable: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.until(&mut ends, |s| s.disconnected.iter().any(|d| d == "R Sim"))
        .await;
    ends.cancel.cancel();
    task.await.expect("connector task");
}

#[tokio::test]
async fn malformed_frames_get_callerrors_and_the_connection_survives() {
    let port = free_tcp_port();
    let (task, _ends, stats) = start(config(port));
    wait_listening(port).await;
    let frames = [
        "not json",
        r#"[2,"m1","BootNotification",{"chargePointVendor":"x"}]"#,
        r#"[2,"m2","NoSuchAction",{}]"#,
        r#"[2,"m3","MeterValues",{"connectorId":"one","meterValue":[]}]"#,
        r#"[2,"m4","Heartbeat",[]]"#,
        r#"[2,"m5"]"#,
        r#"[2,"m6","Heartbeat",{}]"#,
    ];
    let p =
        sim(json!({"url": ws(port, "CP_RAW"), "version": "1.6", "mode": "raw", "frames": frames}));
    for _ in 0..50 {
        if p.log().lines().filter(|l| l.starts_with("ANSWER")).count() == frames.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers: Vec<Json> = p
        .log()
        .lines()
        .filter_map(|l| l.strip_prefix("ANSWER "))
        .map(|a| serde_json::from_str(a).expect("answers are JSON"))
        .collect();
    assert_eq!(answers.len(), frames.len(), "{}", p.log());
    let head = |a: &Json| {
        a.as_array()
            .map(|v| v.iter().take(3).cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(answers[0][0], json!(4));
    assert_eq!(answers[0][1], json!("-1"));
    assert_eq!(answers[0][2], json!("ProtocolError"));
    assert_eq!(
        head(&answers[1]),
        vec![json!(4), json!("m1"), json!("OccurenceConstraintViolation")]
    );
    assert_eq!(
        head(&answers[2]),
        vec![json!(4), json!("m2"), json!("NotImplemented")]
    );
    assert_eq!(
        head(&answers[3]),
        vec![json!(4), json!("m3"), json!("TypeConstraintViolation")]
    );
    assert_eq!(
        head(&answers[4]),
        vec![json!(4), json!("m4"), json!("FormationViolation")]
    );
    assert_eq!(
        head(&answers[5]),
        vec![json!(4), json!("m5"), json!("ProtocolError")]
    );
    assert_eq!(answers[6][0], json!(3));
    assert_eq!(answers[6][1], json!("m6"));
    assert!(answers[6][2]["currentTime"].is_string());
    assert!(stats.stats().convert_errors() >= 6);
    drop(p);
    task.abort();
}

#[tokio::test]
async fn a_charge_point_offering_no_known_subprotocol_is_refused() {
    let port = free_tcp_port();
    let mut cfg = config(port);
    cfg["centralSystem"]["subprotocols"] = json!(["ocpp2.1", "ocpp1.6"]);
    let (task, _ends, _) = start(cfg);
    wait_listening(port).await;
    for offer in [
        json!(["ocpp1.5", "ocpp2.0"]),
        Json::Null,
        json!(["ocpp2.0.1"]),
    ] {
        let p = sim(json!({"url": ws(port, "CP_X"), "mode": "offer", "subprotocols": offer}));
        let deadline = tokio::time::Instant::now() + WAIT;
        while !p.log().contains("CLOSED") && !p.log().contains("REFUSED") {
            assert!(tokio::time::Instant::now() < deadline, "{}", p.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(p.log().contains("CONNECTED None"), "{offer}: {}", p.log());
        assert!(p.log().contains("CLOSED 1002"), "{offer}: {}", p.log());
    }
    // The same port still serves a version it speaks.
    let mut p = sim(
        json!({"url": ws(port, "CP_Y"), "mode": "offer", "subprotocols": ["ocpp1.2", "ocpp1.6"]}),
    );
    wait(&mut p, "CONNECTED").await;
    assert_eq!(line(&p, "CONNECTED"), "CONNECTED ocpp1.6");
    task.abort();
}

#[tokio::test]
async fn security_profiles_basic_token_and_tls_with_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = tbgw::test_util::Pki::generate(dir.path(), "");
    let port = free_tcp_port();
    let mut cfg = config(port);
    cfg["centralSystem"]["security"] = json!([
        {"type": "token", "tokens": ["Bearer ACCESS_TOKEN"]},
        {"type": "basic", "credentials": [{"username": "CP_S", "password": "s3cret-passw0rd"}]}
    ]);
    cfg["centralSystem"]["connection"] = json!({"type": "tls",
        "cert": pki.server_cert(), "key": pki.server_key()});
    let (task, mut ends, _) = start(cfg);
    wait_listening(port).await;
    let url = format!("wss://127.0.0.1:{port}/ocpp/CP_S");
    let ca = pki.ca_cert();
    let mut ok = sim(
        json!({"url": url, "version": "2.0.1", "vendor": "S", "cafile": ca,
                            "auth": ["CP_S", "s3cret-passw0rd"]}),
    );
    let mut tok = sim(
        json!({"url": format!("wss://127.0.0.1:{port}/ocpp/CP_T"), "version": "1.6",
                             "vendor": "T", "cafile": ca, "token": "Bearer ACCESS_TOKEN"}),
    );
    wait(&mut ok, "UPLINK DONE").await;
    wait(&mut tok, "UPLINK DONE").await;
    let mut bad = sim(
        json!({"url": url, "mode": "offer", "subprotocols": ["ocpp2.1"], "cafile": ca,
                             "auth": ["CP_S", "wrong"]}),
    );
    wait(&mut bad, "REFUSED").await;
    assert!(bad.log().contains("401"), "{}", bad.log());
    let mut none =
        sim(json!({"url": url, "mode": "offer", "subprotocols": ["ocpp2.1"], "cafile": ca}));
    wait(&mut none, "REFUSED").await;
    let mut seen = Seen::default();
    seen.until(&mut ends, |s| {
        s.get("S Sim", "temp").is_some() && s.get("T Sim", "temp").is_some()
    })
    .await;
    ends.cancel.cancel();
    task.await.expect("connector task");

    // Profile 3: client certificates required; the server key encrypted (PKCS#8, AES-256-CBC)
    // with upstream's `password`.
    let encrypted = dir.path().join("server-encrypted.key");
    let out = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:k3y-pass",
            "-in",
        ])
        .arg(pki.server_key())
        .arg("-out")
        .arg(&encrypted)
        .output()
        .expect("openssl runs (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_tcp_port();
    let mut cfg = config(port);
    cfg["centralSystem"]["connection"] = json!({"type": "tls",
        "cert": pki.server_cert(), "key": encrypted, "password": "k3y-pass",
        "caCert": pki.ca_cert()});
    let (task, _ends, _) = start(cfg);
    wait_listening(port).await;
    let url = format!("wss://127.0.0.1:{port}/ocpp/CP_C");
    let mut with = sim(json!({"url": url, "version": "2.1", "cafile": ca,
                              "certfile": pki.client_cert(), "keyfile": pki.client_key()}));
    wait(&mut with, "UPLINK DONE").await;
    let without =
        sim(json!({"url": url, "mode": "offer", "subprotocols": ["ocpp2.1"], "cafile": ca}));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !without.log().contains("REFUSED") && !without.log().contains("CLOSED") {
        assert!(tokio::time::Instant::now() < deadline, "{}", without.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !without.log().contains("CONNECTED ocpp2.1"),
        "{}",
        without.log()
    );
    task.abort();
}

#[tokio::test]
async fn id_tokens_from_a_shared_attribute_replace_the_list() {
    let port = free_tcp_port();
    let mut cfg = config(port);
    cfg["chargePoints"][0]["idTokensAttribute"] = json!("allowedTokens");
    let (task, ends, _) = start(cfg);
    wait_listening(port).await;
    // Known before it connects (a gateway restart with the attribute synced).
    let mut p = sim(json!({"url": ws(port, "CP_A"), "version": "2.1", "vendor": "A"}));
    wait(&mut p, "UPLINK DONE").await;
    assert!(line(&p, "RESULT AuthorizeBad").contains("Invalid"));
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "A Sim".into(),
            values: json!({"allowedTokens": ["BAD"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }))
        .await
        .expect("downlink");
    p.stop().await;
    let mut p = sim(json!({"url": ws(port, "CP_A"), "version": "2.1", "vendor": "A"}));
    wait(&mut p, "UPLINK DONE").await;
    assert!(
        line(&p, "RESULT AuthorizeBad").contains("Accepted"),
        "{}",
        p.log()
    );
    assert!(
        line(&p, "RESULT AuthorizeGood").contains("Invalid"),
        "{}",
        p.log()
    );
    task.abort();
}

#[test]
fn upstreams_sample_builds() {
    let Some(path) = tbgw::test_util::upstream_sample("ocpp.json") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("sample readable");
    let config: Json = serde_json::from_str(&text).expect("sample is JSON");
    let spec = ConnectorSpec {
        name: "OCPP".into(),
        connector_type: "ocpp".into(),
        file: path,
        config: config.into(),
    };
    let mut ignored = Vec::new();
    OcppFactory::new()
        .build(&spec, &mut ignored)
        .expect("upstream's sample is valid");
    assert!(ignored.is_empty(), "{ignored:?}");
}
