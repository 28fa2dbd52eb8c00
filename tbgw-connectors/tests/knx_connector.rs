//! The KNX connector against a real KNXnet/IP server: Debian's `knxd` with a dummy bus
//! (`tbgw::test_util::Knxd`), and an xknx 4.0 script (`tests/peers/knx_member.py`) as a
//! second tunnel client playing the bus member: it answers GroupValueRead, prints the
//! GroupValueWrites it sees and sends writes when told to.
#![cfg(feature = "knx")]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::config::ConnectorSpec;
use tbgw::connector::ConnectorFactory;
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::harness::forward_data;
use tbgw::test_util::{free_tcp_port, Knxd, PythonPeer, TestRun};
use tbgw_connectors::knx::KnxFactory;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(20);

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/knx_member.py").to_string()
}

fn values() -> Json {
    json!({
        "1/0/5": ["string", "Boiler"],
        "1/0/6": ["temperature", 21.5],
        "1/0/7": ["humidity", 55.2],
        "1/0/1": ["switch", true],
        "1/0/2": ["percent", 50],
        "1/0/3": ["pulse_2byte", 1234],
        "1/0/4": ["4byte_unsigned", 4000000000u64],
        "1/0/8": ["active_energy", -123456],
        "1/0/9": ["power", 1500.5],
        "1/1/0": ["percentU8", 0],
        "1/1/1": ["string", "none"]
    })
}

/// The xknx bus member.
struct Member {
    peer: PythonPeer,
    control: u16,
}

impl Member {
    async fn start(knxd: &Knxd) -> Member {
        let control = free_tcp_port();
        let mut peer = PythonPeer::spawn([
            script(),
            knxd.port().to_string(),
            control.to_string(),
            values().to_string(),
        ])
        .expect("the xknx member starts");
        peer.wait_output("ready", WAIT).await.expect("ready");
        Member { peer, control }
    }

    async fn send(&self, cmd: Json) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.control))
            .await
            .expect("control port");
        s.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        assert_eq!(line.trim(), "ok");
    }

    async fn wait_write(&mut self, line: &str) {
        self.peer
            .wait_output(line, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn spec(config: Json, file: &Path) -> ConnectorSpec {
    ConnectorSpec {
        name: "KNX".into(),
        connector_type: "knx".into(),
        file: file.to_path_buf(),
        config: config.into(),
    }
}

type Running = TestRun<DeviceData>;

fn start(config: Json) -> Running {
    let mut ignored = Vec::new();
    let connector = KnxFactory::new()
        .build(&spec(config, Path::new("knx.json")), &mut ignored)
        .unwrap_or_else(|e| panic!("{e}"));
    TestRun::start("KNX", connector, WAIT, forward_data)
}

/// The next record of `device` that has `key`.
async fn next_with(r: &mut Running, device: &str, key: &str) -> DeviceData {
    r.recv_until(|d| (d.device_name == device && d.value(key).is_some()).then_some(d))
        .await
        .unwrap_or_else(|| panic!("no record of {device} with {key}"))
}

fn config(port: u16, poll_ms: u64) -> Json {
    json!({
        "client": {"type": "TUNNELING", "gatewayIP": "127.0.0.1", "gatewayPort": port,
                   "localIp": "127.0.0.1", "autoReconnectWait": 0.2, "readTimeout": 2},
        "devices": [{
            "deviceInfo": {"deviceNameExpressionSource": "expression",
                           "deviceNameExpression": "Device ${1/0/5}", "deviceNameDataType": "string",
                           "deviceProfileExpressionSource": "constant",
                           "deviceProfileNameExpression": "knx"},
            "pollPeriod": poll_ms,
            "attributes": [{"type": "temperature", "key": "temperature", "groupAddress": "1/0/6"},
                           {"type": "string", "key": "label", "groupAddress": "1/0/5"}],
            "timeseries": [{"type": "humidity", "key": "humidity", "groupAddress": "1/0/7"},
                           {"type": "switch", "key": "switch", "groupAddress": "1/0/1"},
                           {"type": "percent", "key": "percent", "groupAddress": "1/0/2"},
                           {"type": "pulse_2byte", "key": "pulses", "groupAddress": "1/0/3"},
                           {"type": "4byte_unsigned", "key": "u32", "groupAddress": "1/0/4"},
                           {"type": "active_energy", "key": "energy", "groupAddress": "1/0/8"},
                           {"type": "power", "key": "power", "groupAddress": "1/0/9"}]
        }],
        "attributeUpdates": [
            {"deviceNameFilter": ".*", "dataType": "precent_U8", "groupAddress": "1/1/0", "key": "brightness"}
        ],
        "serverSideRpc": [
            {"requestType": "read", "deviceNameFilter": ".*", "method": "get_name", "dataType": "string", "groupAddress": "1/0/5"},
            {"requestType": "write", "deviceNameFilter": ".*", "method": "set_label", "dataType": "string", "groupAddress": "1/1/1"},
            {"requestType": "read", "deviceNameFilter": "Nobody", "method": "hidden", "dataType": "string", "groupAddress": "1/0/5"}
        ]
    })
}

#[tokio::test]
async fn values_and_types_are_polled_and_the_name_read_from_the_bus() {
    let knxd = Knxd::start().await.expect("knxd");
    let _member = Member::start(&knxd).await;
    let mut c = start(config(knxd.port(), 300));
    let d = next_with(&mut c, "Device Boiler", "power").await;
    assert_eq!(d.device_type, "knx");
    assert_eq!(d.value("temperature"), Some(Value::Float(21.5)));
    assert_eq!(d.value("label"), Some(Value::String("Boiler".into())));
    assert_eq!(d.value("humidity"), Some(Value::Float(55.2)));
    assert_eq!(d.value("switch"), Some(Value::Bool(true)));
    assert_eq!(d.value("percent"), Some(Value::Int(50)));
    assert_eq!(d.value("pulses"), Some(Value::Int(1234)));
    assert_eq!(d.value("u32"), Some(Value::Int(4_000_000_000)));
    assert_eq!(d.value("energy"), Some(Value::Int(-123456)));
    assert_eq!(d.value("power"), Some(Value::Float(1500.5)));
    assert!(c.stats.stats().messages_received() >= 9);
    c.stop().await;
}

#[tokio::test]
async fn writes_and_reads_reach_the_bus_member() {
    let knxd = Knxd::start().await.expect("knxd");
    let mut member = Member::start(&knxd).await;
    let mut c = start(config(knxd.port(), 60_000));
    next_with(&mut c, "Device Boiler", "power").await;
    // Attribute update through upstream's misspelt type name.
    c.update("Device Boiler", "brightness", json!(200)).await;
    member.wait_write("WRITE 1/1/0 200").await;
    // A configured write RPC, then read back with reserved get.
    let r = c.rpc("Device Boiler", "set_label", json!("Kitchen")).await;
    assert_eq!(r, json!({"result": {"value": "Kitchen"}}));
    member.wait_write("WRITE 1/1/1 \"Kitchen\"").await;
    let r = c
        .rpc(
            "Device Boiler",
            "get",
            json!("groupAddress=1/1/1;dataType=string"),
        )
        .await;
    assert_eq!(r, json!({"result": {"value": "Kitchen"}}));
    // Reserved set and a configured read.
    let r = c
        .rpc(
            "Device Boiler",
            "set",
            json!("groupAddress=1/0/6;dataType=temperature;value=19.5"),
        )
        .await;
    assert_eq!(r, json!({"result": {"value": "19.5"}}));
    member.wait_write("WRITE 1/0/6 19.5").await;
    let r = c.rpc("Device Boiler", "get_name", json!({})).await;
    assert_eq!(r, json!({"result": {"value": "Boiler"}}));
    // No member answers 2/0/0: a timeout, code 408.
    let r = c
        .rpc(
            "Device Boiler",
            "get",
            json!("groupAddress=2/0/0;dataType=switch"),
        )
        .await;
    assert_eq!(r["code"], json!(408), "{r}");
    // The filter does not match this device; unknown methods; bad values.
    let r = c.rpc("Device Boiler", "hidden", json!({})).await;
    assert_eq!(r["code"], json!(404), "{r}");
    let r = c
        .rpc(
            "Device Boiler",
            "set",
            json!("groupAddress=1/0/6;dataType=temperature;value=warm"),
        )
        .await;
    assert_eq!(r["code"], json!(400), "{r}");
    c.stop().await;
}

#[tokio::test]
async fn a_switch_pressed_between_polls_arrives() {
    let knxd = Knxd::start().await.expect("knxd");
    let member = Member::start(&knxd).await;
    // One poll at start, the next in an hour.
    let mut c = start(config(knxd.port(), 3_600_000));
    let d = next_with(&mut c, "Device Boiler", "switch").await;
    assert_eq!(d.value("switch"), Some(Value::Bool(true)));
    member.send(json!({"write": "1/0/1", "value": false})).await;
    let d = next_with(&mut c, "Device Boiler", "switch").await;
    assert_eq!(d.value("switch"), Some(Value::Bool(false)));
    member.send(json!({"write": "1/0/6", "value": 23.5})).await;
    let d = next_with(&mut c, "Device Boiler", "temperature").await;
    assert_eq!(d.value("temperature"), Some(Value::Float(23.5)));
    // A new name on the bus renames the device.
    member
        .send(json!({"write": "1/0/5", "value": "Heater"}))
        .await;
    member.send(json!({"write": "1/0/1", "value": true})).await;
    let d = next_with(&mut c, "Device Heater", "switch").await;
    assert_eq!(d.value("switch"), Some(Value::Bool(true)));
    c.stop().await;
}

#[tokio::test]
async fn knxd_restarted() {
    let mut knxd = Knxd::start().await.expect("knxd");
    let member = Member::start(&knxd).await;
    let mut c = start(config(knxd.port(), 200));
    next_with(&mut c, "Device Boiler", "power").await;
    drop(member);
    knxd.restart().await.expect("knxd again");
    let _member = Member::start(&knxd).await;
    // Records polled before the restart may still be queued: wait for the reconnect.
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.stats.stats().errors() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lost tunnel was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while c.up.try_recv().is_ok() {}
    let d = next_with(&mut c, "Device Boiler", "power").await;
    assert_eq!(d.value("power"), Some(Value::Float(1500.5)));
    c.stop().await;
}

/// A `tracing` writer into a buffer, to count log lines.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

#[tokio::test]
async fn a_malformed_value_is_counted_and_the_connector_goes_on() {
    let log = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    // The test's runtime has one thread: the connector's tasks log here too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let knxd = Knxd::start().await.expect("knxd");
    let member = Member::start(&knxd).await;
    let mut c = start(config(knxd.port(), 3_600_000));
    next_with(&mut c, "Device Boiler", "power").await;
    // One octet for a 2-octet float, twice; then a good value.
    for _ in 0..2 {
        member.send(json!({"raw": "1/0/6", "bytes": [7]})).await;
    }
    member.send(json!({"write": "1/0/6", "value": 18.0})).await;
    let d = next_with(&mut c, "Device Boiler", "temperature").await;
    assert_eq!(d.value("temperature"), Some(Value::Float(18.0)));
    assert_eq!(c.stats.stats().convert_errors(), 2);
    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert_eq!(
        text.matches("Cannot decode temperature").count(),
        1,
        "logged once:\n{text}"
    );
    c.stop().await;
}

/// A copy of upstream's sample `knx.json` (3.8.5), as a fixture of our own.
fn upstream_like_sample() -> Json {
    json!({
      "logLevel": "INFO",
      "client": {"type": "AUTOMATIC", "addressFormat": "LONG", "localIp": "0.0.0.0", "localPort": 3671,
                 "gatewayIP": "192.168.1.160", "gatewayPort": 3671, "individualAddress": "1.0.10",
                 "rateLimit": 0, "autoReconnect": true, "autoReconnectWait": 3,
                 "gatewaysScanner": {"enabled": false, "scanPeriod": 3, "stopOnFound": false}},
      "devices": [{
          "deviceInfo": {"deviceNameDataType": "string", "deviceNameExpressionSource": "expression",
                         "deviceNameExpression": "Device ${1/0/5}", "deviceProfileDataType": "none",
                         "deviceProfileExpressionSource": "constant", "deviceProfileNameExpression": "default"},
          "pollPeriod": 5000,
          "attributes": [{"type": "temperature", "key": "temperature", "groupAddress": "1/0/6"}],
          "timeseries": [{"type": "humidity", "key": "humidity", "groupAddress": "1/0/7"}]
      }],
      "attributeUpdates": [{"deviceNameFilter": ".*", "dataType": "precent_U8", "groupAddress": "1/0/9", "key": "brightness"}],
      "serverSideRpc": [
          {"requestType": "read", "deviceNameFilter": ".*", "method": "get_name", "dataType": "string", "groupAddress": "1/0/5"},
          {"requestType": "write", "deviceNameFilter": ".*", "method": "set_name", "dataType": "string", "groupAddress": "1/0/5"}
      ]
    })
}

#[test]
fn upstream_sample_builds() {
    let mut samples = vec![(upstream_like_sample(), Path::new("knx.json").to_path_buf())];
    if let Some(path) = tbgw::test_util::upstream_sample("knx.json") {
        let config: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        samples.push((config, path));
    }
    for (config, path) in samples {
        let mut ignored = Vec::new();
        KnxFactory::new()
            .build(&spec(config, &path), &mut ignored)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ignored.iter().all(|i| i.contains("logLevel")),
            "{ignored:?}"
        );
    }
}

#[test]
fn config_errors_name_the_key_path() {
    let dev = |extra: Json| {
        let mut d = json!({"deviceInfo": {"deviceNameExpression": "D"}});
        if let (Some(d), Json::Object(e)) = (d.as_object_mut(), extra) {
            d.extend(e);
        }
        json!({"client": {"type": "TUNNELING", "gatewayIp": "127.0.0.1"}, "devices": [d]})
    };
    let cases = [
        (json!({"client": {"type": "TUNNELING"}}), "client.gatewayIp"),
        (json!({"client": {"type": "ROUTING_SECURE"}}), "client.type"),
        (json!({"client": {"type": "CARRIER_PIGEON"}}), "client.type"),
        (
            json!({"client": {"individualAddress": "1.2"}}),
            "client.individualAddress",
        ),
        (json!({"client": {"localIp": "here"}}), "client.localIp"),
        (json!({"client": {"rateLimit": -1}}), "client.rateLimit"),
        (
            json!({"client": {"multicastGroup": "10.0.0.1"}}),
            "client.multicastGroup",
        ),
        (
            dev(
                json!({"timeseries": [{"key": "k", "type": "temperature", "groupAddress": "32/0/0"}]}),
            ),
            "devices[0].timeseries[0].groupAddress",
        ),
        (
            dev(json!({"attributes": [{"key": "k", "type": "wobble", "groupAddress": "1/0/0"}]})),
            "devices[0].attributes[0].type",
        ),
        (
            dev(json!({"attributes": [{"type": "switch", "groupAddress": "1/0/0"}]})),
            "devices[0].attributes[0].key",
        ),
        (dev(json!({"pollPeriod": 0})), "devices[0].pollPeriod"),
        (
            json!({"devices": [{"deviceInfo": {"deviceNameExpressionSource": "expression",
                   "deviceNameExpression": "D ${1/0/x}"}}]}),
            "devices[0].deviceInfo.deviceNameExpression",
        ),
        (
            json!({"attributeUpdates": [{"key": "k", "dataType": "switch", "groupAddress": "1/0/0",
                   "deviceNameFilter": "("}]}),
            "attributeUpdates[0].deviceNameFilter",
        ),
        (
            json!({"serverSideRpc": [{"method": "m", "requestType": "poke", "groupAddress": "1/0/0"}]}),
            "serverSideRpc[0].requestType",
        ),
        (
            json!({"serverSideRpc": [{"method": "m", "requestType": "read", "dataType": "10.001", "groupAddress": "1/0/0"}]}),
            "serverSideRpc[0].dataType",
        ),
    ];
    for (config, key) in cases {
        let mut ignored = Vec::new();
        let e = match KnxFactory::new()
            .build(&spec(config.clone(), Path::new("knx.json")), &mut ignored)
        {
            Ok(_) => panic!("{config} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("knx.json") && e.contains(key), "{key}: {e}");
    }
}

#[test]
fn secure_is_reported_as_not_supported() {
    let mut ignored = Vec::new();
    KnxFactory::new()
        .build(
            &spec(
                json!({"client": {"type": "ROUTING", "security": {"backboneKey": "00"}}}),
                Path::new("knx.json"),
            ),
            &mut ignored,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ignored
            .iter()
            .any(|i| i.contains("security") && i.contains("not supported")),
        "{ignored:?}"
    );
}

#[tokio::test]
async fn automatic_reads_the_samples_gateway_key_and_the_scanner_finds_knxd() {
    let knxd = Knxd::start_discoverable().await.expect("knxd");
    let found = tbgw_connectors::knx::link::scan(
        std::net::Ipv4Addr::LOCALHOST,
        "224.0.23.12:3671".parse().unwrap(),
        Some(knxd.addr()),
        Duration::from_secs(3),
        true,
    )
    .await
    .expect("a search");
    let g = found.first().expect("knxd answers the search");
    assert!(g.tunnelling, "{g:?}");
    assert_eq!(g.control.addr.port(), knxd.port(), "{g:?}");
    let _member = Member::start(&knxd).await;
    let mut cfg = config(knxd.port(), 300);
    cfg["client"]["type"] = json!("AUTOMATIC");
    cfg["client"]["gatewaysScanner"] =
        json!({"enabled": true, "scanPeriod": 0.5, "stopOnFound": true});
    let mut c = start(cfg);
    let d = next_with(&mut c, "Device Boiler", "temperature").await;
    assert_eq!(d.value("temperature"), Some(Value::Float(21.5)));
    c.stop().await;
}

/// ROUTING with xknx as the other KNXnet/IP router (multicast on the loopback interface).
#[tokio::test]
async fn routing_with_an_xknx_router() {
    let port = tbgw::test_util::free_udp_port();
    let control = free_tcp_port();
    let mut peer = PythonPeer::spawn([
        script(),
        format!("routing:{port}"),
        control.to_string(),
        values().to_string(),
    ])
    .expect("the xknx router starts");
    peer.wait_output("ready", WAIT).await.expect("ready");
    let mut member = Member { peer, control };
    let mut cfg = config(0, 300);
    cfg["client"] = json!({"type": "ROUTING", "localIp": "127.0.0.1", "multicastPort": port,
                           "individualAddress": "1.1.240"});
    let mut c = start(cfg);
    let d = next_with(&mut c, "Device Boiler", "power").await;
    assert_eq!(d.value("temperature"), Some(Value::Float(21.5)));
    assert_eq!(d.value("switch"), Some(Value::Bool(true)));
    member.send(json!({"write": "1/0/1", "value": false})).await;
    let d = next_with(&mut c, "Device Boiler", "switch").await;
    assert_eq!(d.value("switch"), Some(Value::Bool(false)));
    c.update("Device Boiler", "brightness", json!(77)).await;
    member.wait_write("WRITE 1/1/0 77").await;
    c.stop().await;
}
