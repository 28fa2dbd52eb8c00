//! The SNMP connector against a real Debian `snmpd` on a loopback UDP port
//! (`tbgw::test_util::Snmpd`): every upstream method with upstream's result shapes and its
//! bugs fixed, SET by attribute update and RPC, the agent going away and coming back, an
//! unreachable agent that delays nobody, a timed-out OID that does not drop the rest,
//! malformed answers counted and logged once, SNMPv3 (authNoPriv, authPriv SHA/AES), and
//! v1/v2c traps and informs sent by `snmptrap`/`snmpinform`.

#![cfg_attr(not(feature = "snmp"), allow(missing_docs))]
#![cfg(feature = "snmp")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest, RpcResponder};
use tbgw::model::DeviceData;
use tbgw::stats::ConnectorCounters;
use tbgw::test_util::{free_udp_port, Snmpd};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::snmp::SnmpFactory;

const WAIT: Duration = Duration::from_secs(20);
const SYS_DESCR: &str = "1.3.6.1.2.1.1.1.0";
const SYS_OBJECT_ID: &str = "1.3.6.1.2.1.1.2.0";
const SYS_CONTACT: &str = "1.3.6.1.2.1.1.4.0";
const SYS_NAME: &str = "1.3.6.1.2.1.1.5.0";
const IF_TABLE: &str = "1.3.6.1.2.1.2.2";

fn spec(config: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "SNMP".into(),
        connector_type: "snmp".into(),
        file: "snmp.json".into(),
        config: config.into(),
    }
}

fn start(config: Json) -> (tokio::task::JoinHandle<()>, TestEnds, ConnectorCounters) {
    let mut ignored = Vec::new();
    let mut connector = SnmpFactory::new()
        .build(&spec(config), &mut ignored)
        .expect("config is valid");
    let (mut cx, ends) = ConnectorContext::for_test("SNMP");
    let stats = cx.stats().clone();
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends, stats)
}

fn device(name: &str, port: u16, extra: Json) -> Json {
    let mut d = json!({"deviceName": name, "deviceType": "snmp", "ip": "127.0.0.1", "port": port,
        "pollPeriod": 200, "community": "public", "version": "v2c", "timeout": 2});
    if let (Some(d), Some(e)) = (d.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    d
}

/// The next data of `device` for which `pred` holds.
async fn next_data(
    ends: &mut TestEnds,
    device: &str,
    pred: impl Fn(&DeviceData) -> bool,
) -> DeviceData {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Data { data, .. })) => {
                if let Some(d) = data
                    .into_iter()
                    .find(|d| d.device_name == device && pred(d))
                {
                    return d;
                }
            }
            Ok(Some(_)) => {}
            _ => panic!("no matching data of {device} in time"),
        }
    }
}

/// Waits for an uplink message matching `pred` (connect, disconnect, data).
async fn next_message(ends: &mut TestEnds, pred: impl Fn(&UplinkMessage) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ends.uplink.recv()).await {
            Ok(Some(m)) if pred(&m) => return,
            Ok(Some(_)) => {}
            _ => panic!("no matching uplink message in time"),
        }
    }
}

fn value(d: &DeviceData, key: &str) -> Option<Json> {
    d.value(key).map(|v| v.to_json())
}

async fn rpc(ends: &TestEnds, device: &str, method: &str, params: Json) -> Result<Json, RpcError> {
    let (responder, rx) = RpcResponder::new();
    let r = RpcRequest {
        device: Some(device.into()),
        id: 1,
        method: method.into(),
        params,
        responder,
    };
    ends.downlink.send(Downlink::Rpc(r)).await.unwrap();
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("answer in time")
        .expect("answered")
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A log capture for the current thread (the tests run on a current-thread runtime).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || me.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(sub)
    }
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

#[tokio::test]
async fn every_method_reads_snmpd_in_upstreams_shapes_without_its_bugs() {
    let agent = Snmpd::start().await.expect("snmpd starts");
    let (task, mut ends, stats) = start(json!({"devices": [device("router", agent.port(), json!({
    "attributes": [
        {"key": "descr", "method": "get", "oid": SYS_DESCR},
        {"key": "multi", "method": "multiget", "oid": [SYS_DESCR, SYS_OBJECT_ID]},
        {"key": "next", "method": "getnext", "oid": SYS_DESCR},
        {"key": "bulk", "method": "bulkget", "scalarOid": [SYS_DESCR], "repeatingOid": [SYS_OBJECT_ID], "maxListSize": 2}
    ],
    "telemetry": [
        {"key": "walk", "method": "walk", "oid": "1.3.6.1.2.1.1"},
        {"key": "walkScalar", "method": "walk", "oid": SYS_DESCR},
        {"key": "multiwalk", "method": "multiwalk", "oid": ["1.3.6.1.2.1.1.1", "1.3.6.1.2.1.1.5"]},
        {"key": "bulkwalk", "method": "bulkwalk", "oid": ["1.3.6.1.2.1.1"], "bulkSize": 3},
        {"key": "table", "method": "table", "oid": IF_TABLE},
        {"key": "bulktable", "method": "bulktable", "oid": IF_TABLE},
        {"key": "missing", "method": "get", "oid": "1.3.6.1.2.1.1.99.0"},
        {"key": "uptime", "method": "get", "oid": "1.3.6.1.2.1.1.3.0"}
    ]}))]}));
    let d = next_data(&mut ends, "router", |d| d.datapoints() > 5).await;
    let descr = value(&d, "descr").expect("get");
    let descr = descr.as_str().expect("an OCTET STRING is text");
    assert!(descr.starts_with("Linux"), "{descr}");
    // Upstream drops a multiget of OCTET STRINGs; here it is the values joined by commas.
    let multi = value(&d, "multi").expect("multiget is sent");
    assert_eq!(
        multi.as_str().unwrap(),
        format!("{descr},1.3.6.1.4.1.8072.3.2.10")
    );
    assert_eq!(
        value(&d, "next").unwrap(),
        json!({SYS_OBJECT_ID: "1.3.6.1.4.1.8072.3.2.10"})
    );
    // GETBULK reads the *next* OIDs: sysObjectID for the scalar, sysUpTime and sysContact
    // for two repetitions after sysObjectID; upstream keeps only the scalar.
    let bulk = value(&d, "bulk").unwrap();
    assert_eq!(
        bulk[SYS_OBJECT_ID],
        json!("1.3.6.1.4.1.8072.3.2.10"),
        "{bulk}"
    );
    assert!(bulk.get("1.3.6.1.2.1.1.3.0").is_some(), "{bulk}");
    assert!(bulk.get(SYS_CONTACT).is_some(), "{bulk}");
    // A walk is one OID -> text map; upstream writes OCTET STRINGs as "b'...'".
    let walk = value(&d, "walk").unwrap();
    assert_eq!(walk[SYS_DESCR], json!(descr));
    assert!(walk.as_object().unwrap().len() > 5, "{walk}");
    assert!(!walk.to_string().contains("b'"), "{walk}");
    assert_eq!(value(&d, "walkScalar").unwrap(), json!({SYS_DESCR: descr}));
    let mw = value(&d, "multiwalk").unwrap();
    assert_eq!(mw.as_object().unwrap().len(), 2, "{mw}");
    let keys = |j: &Json| j.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&value(&d, "bulkwalk").unwrap()), keys(&walk));
    // Every row of ifTable, not only the last (upstream merges them).
    let table = value(&d, "table").unwrap();
    assert_eq!(table["1"]["2"], json!("lo"), "{table}");
    assert!(table.as_object().unwrap().len() >= 2, "{table}");
    let bulktable = value(&d, "bulktable").unwrap();
    assert_eq!(keys(&bulktable), keys(&table));
    assert_eq!(bulktable["1"]["2"], json!("lo"));
    assert!(
        value(&d, "uptime").unwrap().is_f64(),
        "TimeTicks are seconds"
    );
    assert_eq!(value(&d, "missing"), None);
    assert!(stats.convert_errors() >= 1, "no such object is counted");
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn attribute_updates_and_rpcs_write_with_set() {
    let agent = Snmpd::start().await.expect("snmpd starts");
    let (task, mut ends, _stats) = start(json!({"devices": [device("router", agent.port(), json!({
    "telemetry": [
        {"key": "contact", "method": "get", "oid": SYS_CONTACT},
        {"key": "name", "method": "get", "oid": SYS_NAME}
    ],
    "attributeUpdateRequests": [
        {"attributeFilter": "^contact$", "method": "set", "oid": SYS_CONTACT, "community": "private"},
        {"attributeFilter": "^both$", "method": "multiset", "community": "private",
         "mappings": {SYS_CONTACT: "${attribute}", SYS_NAME: "name-${attribute}"}}
    ],
    "serverSideRpcRequests": [
        {"requestFilter": "^setName$", "method": "set", "oid": SYS_NAME, "community": "private"},
        {"requestFilter": "^walkSystem$", "method": "walk", "oid": "1.3.6.1.2.1.1.5"},
        {"requestFilter": "^denied$", "method": "set", "oid": SYS_NAME}
    ]}))]}));
    let mut values = serde_json::Map::new();
    values.insert("contact".into(), json!("ops@example.com"));
    values.insert("unrelated".into(), json!(1));
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "router".into(),
            values,
        }))
        .await
        .unwrap();
    next_data(&mut ends, "router", |d| {
        value(d, "contact") == Some(json!("ops@example.com"))
    })
    .await;

    assert_eq!(
        rpc(&ends, "router", "setName", json!("edge-1")).await,
        Ok(json!({"result": "edge-1"}))
    );
    next_data(&mut ends, "router", |d| {
        value(d, "name") == Some(json!("edge-1"))
    })
    .await;
    assert_eq!(
        rpc(&ends, "router", "walkSystem", json!(null)).await,
        Ok(json!({"result": {SYS_NAME: "edge-1"}}))
    );
    // Reserved get/set with upstream's `key=value;` params.
    assert_eq!(
        rpc(
            &ends,
            "router",
            "get",
            json!(format!("method=get;oid={SYS_NAME}"))
        )
        .await,
        Ok(json!({"result": "edge-1"}))
    );
    let e = rpc(&ends, "router", "denied", json!("x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), 500, "public cannot write: {e:?}");
    assert!(matches!(
        rpc(&ends, "router", "nope", json!(null)).await,
        Err(RpcError::NotFound(_))
    ));
    let e = rpc(&ends, "router", "get", json!("method=get;oid=not.an.oid"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), 400);

    let mut values = serde_json::Map::new();
    values.insert("both".into(), json!("x"));
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "router".into(),
            values,
        }))
        .await
        .unwrap();
    next_data(&mut ends, "router", |d| {
        value(d, "contact") == Some(json!("x")) && value(d, "name") == Some(json!("name-x"))
    })
    .await;
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn agent_going_away_is_counted_and_polling_resumes_when_it_is_back() {
    let logs = Logs::default();
    let _guard = logs.install();
    let mut agent = Snmpd::start().await.expect("snmpd starts");
    let (task, mut ends, stats) = start(json!({"devices": [device("router", agent.port(), json!({
        "timeout": 0.3, "retries": 0,
        "telemetry": [{"key": "name", "method": "get", "oid": SYS_NAME}]}))]}));
    next_message(
        &mut ends,
        |m| matches!(m, UplinkMessage::Connect { device, .. } if device == "router"),
    )
    .await;
    next_data(&mut ends, "router", |d| value(d, "name").is_some()).await;
    agent.stop().await.unwrap();
    next_message(
        &mut ends,
        |m| matches!(m, UplinkMessage::Disconnect { device, .. } if device == "router"),
    )
    .await;
    let errors = stats.errors();
    wait_until(|| stats.errors() >= errors + 3).await;
    agent.restart().await.unwrap();
    next_message(
        &mut ends,
        |m| matches!(m, UplinkMessage::Connect { device, .. } if device == "router"),
    )
    .await;
    next_data(&mut ends, "router", |d| value(d, "name").is_some()).await;
    // A request in flight when the agent died times out, the next ones find the port
    // closed: at most these two distinct errors are logged, however many were counted.
    let logged = logs.count("SNMP request failed");
    assert!((1..=2).contains(&logged), "logged {logged} times");
    assert!(stats.errors() >= errors + 3);
    assert_eq!(logs.count("answers every key again"), 1);
    ends.cancel.cancel();
    task.await.unwrap();
}

/// A UDP socket that reads requests and never answers, or answers garbage.
async fn fake_agent(garbage: bool) -> (u16, tokio::task::JoinHandle<()>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((_, from)) = sock.recv_from(&mut buf).await {
            if garbage {
                let _ = sock
                    .send_to(&[0x30, 0x05, 0x02, 0x01, 0x01, 0xff, 0x00], from)
                    .await;
            }
        }
    });
    (port, h)
}

#[tokio::test]
async fn a_silent_or_absent_agent_delays_no_other_device() {
    let agent = Snmpd::start().await.expect("snmpd starts");
    let (silent, h) = fake_agent(false).await;
    let closed = free_udp_port();
    let key = json!([{"key": "name", "method": "get", "oid": SYS_NAME}]);
    let (task, mut ends, stats) = start(json!({"devices": [
        device("silent", silent, json!({"timeout": 5, "retries": 3, "telemetry": key.clone()})),
        device("closed", closed, json!({"telemetry": key.clone()})),
        device("router", agent.port(), json!({"telemetry": key.clone()}))
    ]}));
    // The healthy agent is read again and again while the silent one is still waiting for
    // its first answer (5 s, 4 tries): devices are polled concurrently.
    for _ in 0..5 {
        next_data(&mut ends, "router", |d| value(d, "name").is_some()).await;
    }
    assert!(stats.errors() >= 1, "the closed port is counted");
    ends.cancel.cancel();
    task.await.unwrap();
    h.abort();
}

#[tokio::test]
async fn a_timed_out_oid_does_not_drop_the_rest_of_the_poll() {
    // A `pass` script that answers after 1.5 s: the key's timeout is 0.3 s.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("slow.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nsleep 1.5\necho .1.3.6.1.4.1.424242.1.0\necho integer\necho 7\n",
    )
    .unwrap();
    let conf = format!(
        "{}pass .1.3.6.1.4.1.424242 /bin/sh {}\n",
        tbgw::test_util::SNMPD_COMMUNITIES,
        script.display()
    );
    let agent = Snmpd::start_with(&conf).await.expect("snmpd starts");
    let (task, mut ends, stats) = start(json!({"devices": [device("router", agent.port(), json!({
    "pollPeriod": 3000, "retries": 0,
    "telemetry": [
        {"key": "slow", "method": "get", "oid": "1.3.6.1.4.1.424242.1.0", "timeout": 0.3},
        {"key": "name", "method": "get", "oid": SYS_NAME, "timeout": 5}
    ]}))]}));
    let d = next_data(&mut ends, "router", |_| true).await;
    assert!(value(&d, "name").is_some(), "{d:?}");
    assert_eq!(value(&d, "slow"), None);
    assert!(stats.errors() >= 1);
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn malformed_answers_are_counted_and_logged_once() {
    let logs = Logs::default();
    let _guard = logs.install();
    let (port, h) = fake_agent(true).await;
    let (task, _ends, stats) = start(json!({"devices": [device("bad", port, json!({
        "pollPeriod": 50, "timeout": 0.5, "retries": 0,
        "telemetry": [{"key": "name", "method": "get", "oid": SYS_NAME}]}))]}));
    wait_until(|| stats.convert_errors() >= 3).await;
    assert_eq!(
        logs.count("malformed answer"),
        1,
        "logged once, counted every time"
    );
    _ends.cancel.cancel();
    task.await.unwrap();
    h.abort();
}

#[tokio::test]
async fn snmpv3_auth_no_priv_and_auth_priv_with_sha_and_aes() {
    let agent = Snmpd::start_with(
        "createUser authonly SHA \"authpass1\"\nrouser authonly auth\n\
         createUser secret SHA \"authpass2\" AES \"privpass2\"\nrouser secret priv\n",
    )
    .await
    .expect("snmpd starts");
    let key = json!([{"key": "descr", "method": "get", "oid": SYS_DESCR},
                     {"key": "walk", "method": "bulkwalk", "oid": ["1.3.6.1.2.1.1.5"]}]);
    let (task, mut ends, _stats) = start(json!({"devices": [
        device("auth", agent.port(), json!({"version": "v3", "username": "authonly",
            "authenticationProtocol": "SHA", "authenticationPassphrase": "authpass1",
            "telemetry": key.clone()})),
        device("priv", agent.port(), json!({"version": "v3", "username": "secret",
            "authenticationProtocol": "SHA_1", "authenticationPassphrase": "authpass2",
            "privacyProtocol": "AES_128", "privacyPassphrase": "privpass2",
            "telemetry": key.clone()}))
    ]}));
    for name in ["auth", "priv"] {
        let d = next_data(&mut ends, name, |d| value(d, "descr").is_some()).await;
        assert!(value(&d, "descr")
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("Linux"));
        assert!(value(&d, "walk").unwrap().get(SYS_NAME).is_some());
    }
    ends.cancel.cancel();
    task.await.unwrap();
}

/// Runs a net-snmp command without blocking the runtime (the connector answers informs on it).
async fn snmp_cmd(bin: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(bin)
        .env("MIBS", "")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{bin} runs (apt-get install -y snmp): {e}"))
}

#[tokio::test]
async fn v1_and_v2c_traps_and_informs_become_telemetry_of_their_device() {
    let port = free_udp_port();
    let (task, mut ends, stats) = start(json!({
        "traps": {"host": "127.0.0.1", "port": port, "communities": ["public"]},
        "devices": [device("switch", 161, json!({
            "trapKeys": [{"oid": "1.3.6.1.2.1.2.2.1.1", "key": "ifIndex"}]}))]}));
    // The listener binds in its own task: resend until the first trap arrives.
    let target = format!("127.0.0.1:{port}");
    let mut got = None;
    for _ in 0..50 {
        let out = snmp_cmd(
            "snmptrap",
            &[
                "-v2c",
                "-c",
                "public",
                &target,
                "",
                "1.3.6.1.6.3.1.1.5.3",
                "1.3.6.1.2.1.2.2.1.1.2",
                "i",
                "2",
                "1.3.6.1.2.1.1.5.0",
                "s",
                "edge",
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Ok(Some(UplinkMessage::Data { data, .. })) =
            tokio::time::timeout(Duration::from_millis(200), ends.uplink.recv()).await
        {
            got = data.into_iter().next();
            break;
        }
    }
    let d = got.expect("a v2c trap arrives");
    assert_eq!(d.device_name, "switch");
    assert_eq!(value(&d, "trapOid"), Some(json!("1.3.6.1.6.3.1.1.5.3")));
    assert_eq!(value(&d, "ifIndex"), Some(json!(2)));
    assert_eq!(value(&d, SYS_NAME), Some(json!("edge")));

    let out = snmp_cmd(
        "snmptrap",
        &[
            "-v1",
            "-c",
            "public",
            &target,
            "1.3.6.1.4.1.8072.2.3",
            "127.0.0.1",
            "6",
            "17",
            "",
            "1.3.6.1.2.1.1.4.0",
            "s",
            "v1!",
        ],
    )
    .await;
    assert!(out.status.success());
    let d = next_data(&mut ends, "switch", |d| value(d, SYS_CONTACT).is_some()).await;
    assert_eq!(
        value(&d, "trapOid"),
        Some(json!("1.3.6.1.4.1.8072.2.3.0.17"))
    );
    assert_eq!(value(&d, SYS_CONTACT), Some(json!("v1!")));

    // An inform is acknowledged: snmpinform exits 0 only with an answer.
    let out = snmp_cmd(
        "snmpinform",
        &[
            "-v2c",
            "-c",
            "public",
            "-t",
            "2",
            "-r",
            "1",
            &target,
            "",
            "1.3.6.1.6.3.1.1.5.4",
            "1.3.6.1.2.1.2.2.1.1.3",
            "i",
            "3",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "inform acknowledged: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    next_data(&mut ends, "switch", |d| {
        value(d, "ifIndex") == Some(json!(3))
    })
    .await;

    // A wrong community and garbage are counted, not sent.
    let before = stats.convert_errors();
    let out = snmp_cmd(
        "snmptrap",
        &["-v2c", "-c", "wrong", &target, "", "1.3.6.1.6.3.1.1.5.3"],
    )
    .await;
    assert!(out.status.success());
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"\x30\x02\x05\x00garbage", &target).unwrap();
    wait_until(|| stats.convert_errors() >= before + 2).await;
    ends.cancel.cancel();
    task.await.unwrap();
}

#[test]
fn upstream_sample_is_accepted() {
    let Some(path) = tbgw::test_util::upstream_sample("snmp.json") else {
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let config: Json = serde_json::from_str(&text).unwrap();
    let mut ignored = Vec::new();
    SnmpFactory::new()
        .build(&spec(config), &mut ignored)
        .expect("upstream's snmp.json is accepted");
    assert!(
        ignored.iter().any(|i| i.contains("converter")),
        "{ignored:?}"
    );
}

#[test]
fn config_errors_name_the_key() {
    let bad = |d: Json| {
        let Err(e) = SnmpFactory::new().build(&spec(json!({"devices": [d]})), &mut Vec::new())
        else {
            panic!("invalid config accepted")
        };
        e.key
    };
    let tele = |t: Json| device("d", 161, json!({"telemetry": [t]}));
    assert_eq!(
        bad(tele(
            json!({"key": "k", "method": "fetch", "oid": SYS_NAME})
        )),
        "devices[0].telemetry[0].method"
    );
    assert_eq!(
        bad(tele(json!({"key": "k", "method": "get", "oid": "x.y"}))),
        "devices[0].telemetry[0].oid"
    );
    assert_eq!(
        bad(tele(json!({"key": "k", "method": "set", "oid": SYS_NAME}))),
        "devices[0].telemetry[0].method"
    );
    assert_eq!(
        bad(device("d", 161, json!({"version": "v4"}))),
        "devices[0].version"
    );
    assert_eq!(
        bad(device("d", 161, json!({"version": "v3"}))),
        "devices[0].username"
    );
    assert_eq!(
        bad(device(
            "d",
            161,
            json!({"version": "v3", "username": "u", "authenticationPassphrase": "longenough", "privacyProtocol": "ROT13", "privacyPassphrase": "longenough"})
        )),
        "devices[0].privacyProtocol"
    );
    assert_eq!(
        bad(device(
            "d",
            161,
            json!({"attributeUpdateRequests": [{"attributeFilter": "(", "method": "set", "oid": SYS_NAME}]})
        )),
        "devices[0].attributeUpdateRequests[0].attributeFilter"
    );
}
