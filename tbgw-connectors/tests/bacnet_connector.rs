//! The BACnet connector against real bacpypes3 devices (tests/peers/bacnet_device.py), each
//! on its own loopback UDP port: discovery by directed Who-Is, typed values from
//! ReadPropertyMultiple, several devices at once with a dead one and a restarted one, the
//! gateway answering Who-Is, WriteProperty with priority by attribute update and RPC,
//! reserved get/set, `"*"` object discovery, and COV subscriptions (confirmed and
//! unconfirmed) delivering changes between polls.

#![cfg_attr(not(feature = "bacnet"), allow(missing_docs))]
#![cfg(feature = "bacnet")]

use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest, RpcResponder};
use tbgw::model::DeviceData;
use tbgw::test_util::{free_udp_port, PythonPeer};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::bacnet::BacnetFactory;

const WAIT: Duration = Duration::from_secs(30);
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/bacnet_device.py");

/// A bacpypes3 device on 127.0.0.1:`port`.
async fn device(name: &str, instance: u32, port: u16) -> PythonPeer {
    let mut p = PythonPeer::spawn([
        PEER.to_string(),
        "--name".into(),
        name.into(),
        "--instance".into(),
        instance.to_string(),
        "--address".into(),
        format!("127.0.0.1/8:{port}"),
    ])
    .expect("python runs");
    p.wait_output("bacnet device up", WAIT)
        .await
        .expect("bacpypes3 device starts");
    p
}

fn spec(config: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "BACnet".into(),
        connector_type: "bacnet".into(),
        file: "bacnet.json".into(),
        config: config.into(),
    }
}

fn gateway(port: u16, devices: Vec<Json>) -> Json {
    json!({
        "application": {
            "objectName": "TB_gateway", "host": "127.0.0.1", "port": port, "mask": "8",
            "objectIdentifier": 599, "maxApduLengthAccepted": 1476,
            "segmentationSupported": "segmentedBoth", "vendorIdentifier": 15,
            "apduTimeout": 500, "numberOfApduRetries": 0
        },
        "devicesDiscoverPeriodSeconds": 1,
        "devices": devices
    })
}

/// A device entry as upstream's sample writes it (host + port as a string + mask).
fn device_entry(port: u16, extra: Json) -> Json {
    let mut d = json!({
        "deviceInfo": {
            "deviceNameExpression": "BACnet Device ${objectName}",
            "deviceProfileExpression": "default",
            "deviceNameExpressionSource": "expression",
            "deviceProfileExpressionSource": "constant"
        },
        "altResponsesAddresses": [],
        "host": "127.0.0.1", "port": port.to_string(), "mask": "8",
        "pollPeriod": 200,
        "attributes": [
            {"key": "temperature", "objectType": "analogValue", "objectId": 1, "propertyId": "presentValue"},
            {"key": "flags", "objectType": "analogValue", "objectId": 1, "propertyId": "statusFlags"},
            {"key": "${objectName}", "objectType": "multiStateValue", "objectId": 1, "propertyId": "presentValue"}
        ],
        "timeseries": [
            {"key": "state", "objectType": "binaryValue", "objectId": 1, "propertyId": "presentValue"},
            {"key": "setpoint", "objectType": "analogOutput", "objectId": "1", "propertyId": "presentValue"},
            {"key": "name", "objectType": "device", "propertyId": "objectName"}
        ],
        "attributeUpdates": [
            {"key": "brightness", "objectType": "analogOutput", "objectId": 1, "propertyId": "presentValue", "priority": 8}
        ],
        "serverSideRpc": [
            {"method": "set_setpoint", "requestType": "writeProperty", "requestTimeout": 5000,
             "objectType": "analogOutput", "objectId": 1, "propertyId": "presentValue", "priority": 10},
            {"method": "get_temp", "requestType": "readProperty", "requestTimeout": 5000,
             "objectType": "analogValue", "objectId": 1, "propertyId": "presentValue"}
        ]
    });
    if let (Some(d), Some(e)) = (d.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    d
}

fn start(config: Json) -> (tokio::task::JoinHandle<()>, TestEnds) {
    let mut ignored = Vec::new();
    let mut connector = BacnetFactory::new()
        .build(&spec(config), &mut ignored)
        .expect("config is valid");
    let (mut cx, ends) = ConnectorContext::for_test("BACnet");
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends)
}

fn value(d: &DeviceData, key: &str) -> Option<Json> {
    d.value(key).map(|v| v.to_json())
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

#[tokio::test]
async fn two_devices_typed_values_and_a_dead_one() {
    let (p1, p2, dead, gw) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let _d1 = device("dev1", 1001, p1).await;
    let _d2 = device("dev2", 1002, p2).await;
    let (task, mut ends) = start(gateway(
        gw,
        vec![
            device_entry(dead, json!({})),
            device_entry(p1, json!({})),
            device_entry(
                p2,
                json!({"address": format!("127.0.0.1:{p2}"), "deviceId": 1002,
                       "deviceInfo": {
                           "deviceNameExpression": "BACnet Device ${objectName}",
                           "deviceProfileExpression": "vendor-${vendorId}",
                           "deviceNameExpressionSource": "expression",
                           "deviceProfileExpressionSource": "expression"}}),
            ),
        ],
    ));
    for (dev, inst, profile) in [
        ("BACnet Device dev1", 1001, "default"),
        // bacpypes3's default vendor id, from its I-Am.
        ("BACnet Device dev2", 1002, "vendor-999"),
    ] {
        let d = next_data(&mut ends, dev, |d| value(d, "temperature").is_some()).await;
        assert_eq!(d.device_type, profile);
        assert_eq!(
            value(&d, "temperature"),
            Some(json!(21.5)),
            "REAL is a float"
        );
        assert_eq!(
            value(&d, "flags"),
            Some(json!([false, false, false, false])),
            "bit string"
        );
        assert_eq!(
            value(&d, "mode"),
            Some(json!(2)),
            "key from ${{objectName}}, unsigned"
        );
        let t = next_data(&mut ends, dev, |d| value(d, "state").is_some()).await;
        assert_eq!(
            value(&t, "state"),
            Some(json!(0)),
            "enumerated is an integer"
        );
        assert_eq!(value(&t, "setpoint"), Some(json!(20.0)));
        assert_eq!(
            value(&t, "name"),
            Some(json!(format!("dev{}", inst - 1000))),
            "the device object's objectName"
        );
    }
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn restarted_device_comes_back_and_the_other_keeps_flowing() {
    let (p1, p2, gw) = (free_udp_port(), free_udp_port(), free_udp_port());
    let d1 = device("dev1", 1001, p1).await;
    let _d2 = device("dev2", 1002, p2).await;
    let (task, mut ends) = start(gateway(
        gw,
        vec![device_entry(p1, json!({})), device_entry(p2, json!({}))],
    ));
    next_data(&mut ends, "BACnet Device dev1", |_| true).await;
    next_data(&mut ends, "BACnet Device dev2", |_| true).await;
    drop(d1);
    next_message(
        &mut ends,
        |m| matches!(m, UplinkMessage::Disconnect { device, .. } if device == "BACnet Device dev1"),
    )
    .await;
    // dev1 is away; dev2 is still read, several times.
    for _ in 0..3 {
        next_data(&mut ends, "BACnet Device dev2", |d| {
            value(d, "state").is_some()
        })
        .await;
    }
    let _d1 = device("dev1", 1001, p1).await;
    next_message(
        &mut ends,
        |m| matches!(m, UplinkMessage::Connect { device, .. } if device == "BACnet Device dev1"),
    )
    .await;
    let d = next_data(&mut ends, "BACnet Device dev1", |d| {
        value(d, "temperature").is_some()
    })
    .await;
    assert_eq!(value(&d, "temperature"), Some(json!(21.5)));
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn gateway_answers_who_is_with_i_am() {
    let gw = free_udp_port();
    let (task, ends) = start(gateway(gw, vec![]));
    let client = free_udp_port();
    let mut found = false;
    // The connector binds its socket as it starts: ask until it answers.
    for _ in 0..5 {
        let mut p = PythonPeer::spawn([
            PEER.to_string(),
            "whois".into(),
            format!("127.0.0.1:{gw}"),
            "--address".into(),
            format!("127.0.0.1/8:{client}"),
            "--instance".into(),
            "998".into(),
        ])
        .unwrap();
        p.wait_output("whois done", WAIT).await.unwrap();
        if p.log().contains("iam 599") {
            found = true;
            break;
        }
    }
    assert!(found, "bacpypes3 saw the gateway's I-Am");
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn rpc_and_attribute_updates_write_with_priority() {
    let (p1, gw) = (free_udp_port(), free_udp_port());
    let _d1 = device("dev1", 1001, p1).await;
    let (task, mut ends) = start(gateway(gw, vec![device_entry(p1, json!({}))]));
    let dev = "BACnet Device dev1";
    next_data(&mut ends, dev, |_| true).await;
    assert_eq!(
        rpc(&ends, dev, "get_temp", Json::Null).await.unwrap(),
        json!({"result": {"value": 21.5}})
    );
    assert_eq!(
        rpc(&ends, dev, "set_setpoint", json!(7.75)).await.unwrap(),
        json!({"result": {"value": 7.75}})
    );
    next_data(&mut ends, dev, |d| {
        value(d, "setpoint") == Some(json!(7.75))
    })
    .await;
    let get_pv = "objectType=analogOutput;objectId=1;propertyId=presentValue;";
    assert_eq!(
        rpc(&ends, dev, "get", json!(get_pv)).await.unwrap(),
        json!({"result": {"value": 7.75}})
    );
    // Priority 8 wins over the RPC's priority 10.
    let set = "objectType=analogOutput;objectId=1;propertyId=presentValue;priority=8;value=30;";
    assert_eq!(
        rpc(&ends, dev, "set", json!(set)).await.unwrap(),
        json!({"result": {"value": 30}})
    );
    next_data(&mut ends, dev, |d| {
        value(d, "setpoint") == Some(json!(30.0))
    })
    .await;
    let pa = rpc(
        &ends,
        dev,
        "get",
        json!("objectType=analogOutput;objectId=1;propertyId=priorityArray;"),
    )
    .await
    .unwrap();
    let arr = pa["result"]["value"]
        .as_array()
        .expect("priority array")
        .clone();
    assert_eq!(arr.len(), 16);
    assert!(
        arr[7].to_string().contains("30"),
        "priority 8 holds 30: {arr:?}"
    );
    assert!(
        arr[9].to_string().contains("7.75"),
        "priority 10 holds 7.75: {arr:?}"
    );
    // Attribute update, configured priority 8.
    let mut values = serde_json::Map::new();
    values.insert("brightness".into(), json!(12.5));
    values.insert("unrelated".into(), json!(1));
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: dev.into(),
            values,
        }))
        .await
        .unwrap();
    next_data(&mut ends, dev, |d| {
        value(d, "setpoint") == Some(json!(12.5))
    })
    .await;
    // Errors.
    assert!(matches!(
        rpc(&ends, dev, "nope", Json::Null).await,
        Err(RpcError::NotFound(_))
    ));
    assert!(matches!(
        rpc(&ends, dev, "get", json!("objectType=analogOutput;")).await,
        Err(RpcError::BadRequest(_))
    ));
    assert!(matches!(
        rpc(
            &ends,
            dev,
            "get",
            json!("objectType=analogOutput;objectId=9;propertyId=presentValue;")
        )
        .await,
        Err(RpcError::Device(_))
    ));
    assert!(matches!(
        rpc(&ends, "no such device", "get_temp", Json::Null).await,
        Err(RpcError::Unreachable(_))
    ));
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn star_discovers_every_object() {
    let (p1, gw) = (free_udp_port(), free_udp_port());
    let _d1 = device("dev1", 1001, p1).await;
    let (task, mut ends) = start(gateway(
        gw,
        vec![device_entry(
            p1,
            json!({"attributes": [], "timeseries": "*", "pollPeriod": 300,
                   "deviceInfo": {"deviceNameExpression": "plant-${objectId}"}}),
        )],
    ));
    let d = next_data(&mut ends, "plant-1001", |d| value(d, "temp").is_some()).await;
    assert_eq!(value(&d, "temp"), Some(json!(21.5)));
    assert_eq!(value(&d, "relay"), Some(json!(0)));
    assert_eq!(value(&d, "setpoint"), Some(json!(20.0)));
    assert_eq!(value(&d, "mode"), Some(json!(2)));
    assert!(value(&d, "counter").is_some());
    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn cov_delivers_changes_between_polls() {
    let (p1, p2, gw) = (free_udp_port(), free_udp_port(), free_udp_port());
    let _d1 = device("dev1", 1001, p1).await;
    let _d2 = device("dev2", 1002, p2).await;
    let cov = |port: u16, confirmed: bool| {
        device_entry(
            port,
            json!({"attributes": [], "pollPeriod": 600_000, "subscribeCov": true,
                   "covConfirmed": confirmed, "covLifetime": 60,
                   "timeseries": [{"key": "counter", "objectType": "analogValue", "objectId": 2,
                                   "propertyId": "presentValue"}]}),
        )
    };
    let (task, mut ends) = start(gateway(gw, vec![cov(p1, false), cov(p2, true)]));
    // The poll period is ten minutes: every value after the first comes by COV.
    for dev in ["BACnet Device dev1", "BACnet Device dev2"] {
        let mut seen = std::collections::HashSet::new();
        while seen.len() < 4 {
            let d = next_data(&mut ends, dev, |d| value(d, "counter").is_some()).await;
            seen.insert(value(&d, "counter").unwrap().to_string());
        }
    }
    ends.cancel.cancel();
    task.await.unwrap();
}

#[test]
fn config_errors_name_the_key() {
    let bad = [
        (json!({"devices": []}), "application"),
        (
            json!({"application": {"host": "127.0.0.1", "port": 1}}),
            "application.objectIdentifier",
        ),
        (
            json!({"application": {"host": "nope", "objectIdentifier": 1}}),
            "application.host",
        ),
        (
            json!({"application": {"objectIdentifier": 1}, "devices": [{"pollPeriod": 1}]}),
            "devices[0].address",
        ),
        (
            json!({"application": {"objectIdentifier": 1}, "devices": [{"address": "1.2.3.4",
                "timeseries": [{"key": "k", "objectType": "bogusType", "objectId": 1}]}]}),
            "devices[0].timeseries[0].objectType",
        ),
        (
            json!({"application": {"objectIdentifier": 1}, "devices": [{"address": "1.2.3.4",
                "serverSideRpc": [{"method": "m", "requestType": "readSomething",
                    "objectType": "analogValue", "objectId": 1}]}]}),
            "devices[0].serverSideRpc[0].requestType",
        ),
        (
            json!({"application": {"objectIdentifier": 1}, "devices": [{"address": "1.2.3.4",
                "attributeUpdates": [{"key": "k", "objectType": "analogValue", "objectId": 1,
                    "priority": 17}]}]}),
            "devices[0].attributeUpdates[0].priority",
        ),
    ];
    for (cfg, key) in bad {
        let mut ignored = Vec::new();
        let err = BacnetFactory::new()
            .build(&spec(cfg), &mut ignored)
            .err()
            .expect("invalid config is refused")
            .to_string();
        assert!(err.contains(key), "{err} names {key}");
        assert!(err.contains("bacnet.json"), "{err} names the file");
    }
}

#[test]
fn upstream_sample_builds() {
    let Some(path) = tbgw::test_util::upstream_sample("bacnet.json") else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    let cfg: Json = serde_json::from_str(&text).unwrap();
    let mut ignored = Vec::new();
    BacnetFactory::new()
        .build(&spec(cfg), &mut ignored)
        .expect("upstream's sample is accepted");
}

/// A network namespace joined to this one by a veth pair (10.213.N.1/24 here, .2 there),
/// deleted on drop.
struct Netns {
    name: String,
    link: String,
    net: String,
}

impl Netns {
    /// Creates it, or prints why not and returns None.
    fn create() -> Option<Netns> {
        let id = std::process::id() % 200 + 20;
        let n = Netns {
            name: format!("tbgwbn{id}"),
            link: format!("tbgwbn{id}a"),
            net: format!("10.213.{id}"),
        };
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| e.to_string())
                .and_then(|o| {
                    if o.status.success() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&o.stderr).into_owned())
                    }
                })
        };
        let peer = format!("tbgwbn{id}b");
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), n.name.clone()],
            vec![
                "link".into(),
                "add".into(),
                n.link.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                peer.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                peer.clone(),
                "netns".into(),
                n.name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{}.1/24", n.net),
                "dev".into(),
                n.link.clone(),
            ],
            vec!["link".into(), "set".into(), n.link.clone(), "up".into()],
            vec![
                "-n".into(),
                n.name.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                n.name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}.2/24", n.net),
                "dev".into(),
                peer.clone(),
            ],
            vec![
                "-n".into(),
                n.name.clone(),
                "link".into(),
                "set".into(),
                peer,
                "up".into(),
            ],
        ];
        for s in steps {
            let args: Vec<&str> = s.iter().map(|a| a.as_str()).collect();
            if let Err(e) = ip(&args) {
                eprintln!(
                    "skipped: cannot create a network namespace with a veth pair (ip {}: {})",
                    s.join(" "),
                    e.trim()
                );
                drop(n);
                return None;
            }
        }
        Some(n)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[tokio::test]
async fn broadcast_discovery_across_a_veth_pair() {
    let Some(ns) = Netns::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("device.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(tbgw::test_util::peers_python())
        .args([PEER, "--name", "far", "--instance", "4242", "--address"])
        .arg(format!("{}.2/24", ns.net))
        .env("PYTHONUNBUFFERED", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("ip netns exec runs");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("bacnet device up")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "device in the namespace did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut config = gateway(0, vec![device_entry(0, json!({}))]);
    config["application"]["host"] = json!(format!("{}.1", ns.net));
    config["application"]["port"] = json!(free_udp_port());
    config["application"]["mask"] = json!("24");
    let dev = &mut config["devices"][0];
    for k in ["host", "port", "mask"] {
        dev.as_object_mut().unwrap().remove(k);
    }
    dev["address"] = json!(format!("{}.X", ns.net));
    let (task, mut ends) = start(config);
    let d = next_data(&mut ends, "BACnet Device far", |d| {
        value(d, "temperature").is_some()
    })
    .await;
    assert_eq!(value(&d, "temperature"), Some(json!(21.5)));
    ends.cancel.cancel();
    task.await.unwrap();
    let _ = child.kill().await;
    drop(ns);
}

/// EDE import: `edeFilePath` (relative to the connector file) replaces `devices[]`; the
/// device, given by instance only, is found by a broadcast Who-Is, so it listens on the
/// standard port 47808 (bacpypes3 also binds 127.255.255.255 there). Skipped, with the reason
/// printed, where that port is taken.
#[tokio::test]
async fn ede_file_import() {
    if std::net::UdpSocket::bind("127.0.0.1:47808").is_err() {
        eprintln!("skipped: UDP port 47808 is in use, the EDE device cannot be found by broadcast");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plant.ede.csv"),
        "#Engineering-Data-Exchange - B.A.C.n.e.t EDE 2.0;;;;;\n\
         PROJECT_NAME;Plant\n\
         # keyname;device obj.-instance;object-name;object-type;object-instance;description\n\
         AHU-1;1401;EDE ahu;8;1401;\n\
         AHU-1.temp;1401;supply temp;2;1;\n\
         AHU-1.relay;1401;fan relay;5;1;\n\
         AHU-1.cal;1401;calendar;6;1;\n",
    )
    .unwrap();
    let _d = device("ede", 1401, 47808).await;
    let gw = free_udp_port();
    let mut cfg = gateway(gw, vec![device_entry(free_udp_port(), json!({}))]);
    cfg["edeFilePath"] = json!("plant.ede.csv");
    let mut ignored = Vec::new();
    let mut connector = BacnetFactory::new()
        .build(
            &ConnectorSpec {
                name: "BACnet".into(),
                connector_type: "bacnet".into(),
                file: dir.path().join("bacnet.json"),
                config: cfg.into(),
            },
            &mut ignored,
        )
        .expect("config is valid");
    assert!(
        ignored.iter().any(|i| i.starts_with("devices (replaced")),
        "{ignored:?}"
    );
    let (mut cx, mut ends) = ConnectorContext::for_test("BACnet");
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    let d = next_data(&mut ends, "EDE ahu", |d| {
        value(d, "supply temp").is_some() && value(d, "fan relay").is_some()
    })
    .await;
    assert_eq!(value(&d, "supply temp"), Some(json!(21.5)));
    assert_eq!(value(&d, "fan relay"), Some(json!(0)));
    assert_eq!(value(&d, "calendar"), None, "object type 6 is not imported");
    ends.cancel.cancel();
    task.await.unwrap();

    // A missing file is a configuration error naming the key.
    let mut cfg = gateway(gw, vec![]);
    cfg["edeFilePath"] = json!("/nonexistent/plant.csv");
    let e = BacnetFactory::new()
        .build(&spec(cfg), &mut Vec::new())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("edeFilePath"), "{e}");
}

/// Segmentation: a gateway accepting APDUs of 206 bytes reads the object list of a device
/// with 600 objects (over 3,000 bytes) in one ReadProperty, answered in segmented
/// ComplexACKs that the endpoint acknowledges window by window and reassembles; and a
/// ReadPropertyMultiple of every object's name, likewise segmented.
#[tokio::test]
async fn segmented_answers_are_reassembled() {
    use tbgw_connectors::bacnet::client::{Endpoint, LocalDevice, Peer};
    use tbgw_connectors::bacnet::proto::services::PropRef;
    use tbgw_connectors::bacnet::proto::{AppValue, ObjectId};

    let port = free_udp_port();
    let mut p = PythonPeer::spawn([
        PEER.to_string(),
        "--name".into(),
        "big".into(),
        "--instance".into(),
        "1501".into(),
        "--address".into(),
        format!("127.0.0.1/8:{port}"),
        "--points".into(),
        "595".into(),
    ])
    .expect("python runs");
    p.wait_output("bacnet device up", WAIT)
        .await
        .expect("bacpypes3 device starts");
    let local = LocalDevice {
        instance: 598,
        name: "gw".into(),
        max_apdu: 206,
        segmentation: 0,
        vendor: 15,
    };
    let ep = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        local,
        Duration::from_secs(3),
        1,
    )
    .await
    .unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let rx_task = tokio::spawn(ep.clone().receive(tx));
    let peer = Peer {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        remote: None,
    };
    let list = ep
        .read_property(
            &peer,
            ObjectId::new(8, 1501),
            PropRef {
                property: 76,
                index: None,
            },
            None,
        )
        .await
        .expect("the whole object list, segmented");
    let AppValue::List(objects) = list else {
        panic!("not a list: {list:?}")
    };
    let points = objects
        .iter()
        .filter(|o| matches!(o, AppValue::Object(o) if o.kind == 2 && o.instance >= 1000))
        .count();
    assert_eq!(points, 595, "every point in the list of {}", objects.len());
    let items: Vec<(ObjectId, Vec<PropRef>)> = (0..595)
        .map(|i| {
            (
                ObjectId::new(2, 1000 + i),
                vec![PropRef {
                    property: 77,
                    index: None,
                }],
            )
        })
        .collect();
    let names = ep
        .read_multiple(&peer, &items[..200])
        .await
        .expect("200 names in one ReadPropertyMultiple, segmented");
    assert_eq!(names.len(), 200);
    assert_eq!(ep.malformed.load(std::sync::atomic::Ordering::Relaxed), 0);
    rx_task.abort();
    p.stop().await;
}

/// `foreignDevice`: the gateway registers with a bacpypes3 BBMD (on its own port, so a
/// broadcast Who-Is to the standard port never reaches it) and finds a device given by
/// `deviceId` only through the BBMD's Distribute-Broadcast-To-Network; here the device is the
/// BBMD itself.
#[tokio::test]
async fn foreign_device_registration_with_a_bbmd() {
    let (pb, gw) = (free_udp_port(), free_udp_port());
    let mut bbmd = PythonPeer::spawn([
        PEER.to_string(),
        "--name".into(),
        "bbmd".into(),
        "--instance".into(),
        "1601".into(),
        "--address".into(),
        format!("127.0.0.1/8:{pb}"),
        "--bbmd".into(),
        format!("127.0.0.1/8:{pb}"),
    ])
    .expect("python runs");
    bbmd.wait_output("bacnet device up", WAIT)
        .await
        .expect("bacpypes3 BBMD starts");
    let mut entry = device_entry(pb, json!({"deviceId": 1601}));
    if let Some(o) = entry.as_object_mut() {
        for k in ["host", "port", "mask"] {
            o.remove(k);
        }
    }
    let mut cfg = gateway(gw, vec![entry]);
    cfg["foreignDevice"] = json!({"address": format!("127.0.0.1:{pb}"), "ttl": 60});
    let (task, mut ends) = start(cfg);
    let d = next_data(&mut ends, "BACnet Device bbmd", |d| {
        value(d, "temperature").is_some()
    })
    .await;
    assert_eq!(value(&d, "temperature"), Some(json!(21.5)));
    ends.cancel.cancel();
    task.await.unwrap();
    bbmd.stop().await;
}
