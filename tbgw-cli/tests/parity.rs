//! Differential conformance with the Python gateway (thingsboard-gateway 3.8.5).
//!
//! Each scenario runs the same configuration folder and the same device input through upstream
//! (`python -m thingsboard_gateway.tb_gateway` from the virtualenv `.ci/install` creates) and
//! through the `tbgw` binary, side by side: each gateway gets a mosquitto of its own, where a
//! ThingsBoard stand-in records what the gateway publishes and the devices talk to the
//! gateway's connector. What ThingsBoard receives (device connects and disconnects, telemetry,
//! attributes, attribute requests, RPC replies) and what the devices receive is normalised
//! (timestamps, order and packing into publishes do not count) and must be equal.
//!
//! Deliberate differences are listed in `docs/COMPATIBILITY.md`; the few a scenario meets are
//! named in [`KNOWN`] and left out of the comparison.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use tbgw::test_util::{Mosquitto, TbStandIn};
use tempfile::TempDir;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(30);

/// Upstream's Python: `$TBGW_UPSTREAM_VENV/bin/python`, default `~/.cache/tbgw-upstream`.
fn upstream_python() -> PathBuf {
    let venv = std::env::var_os("TBGW_UPSTREAM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".cache/tbgw-upstream")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "upstream thingsboard-gateway is not installed at {}; run `bash .ci/install` first",
        venv.display()
    );
    py
}

/// Which gateway a side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Upstream,
    Tbgw,
}

/// Upstream's logging: everything to stdout (the side's log file).
fn logs_json() -> Value {
    json!({
        "version": 1,
        "disable_existing_loggers": false,
        "formatters": {"f": {"format": "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"}},
        "handlers": {"consoleHandler": {"class": "logging.StreamHandler", "formatter": "f",
                                        "level": 0, "stream": "ext://sys.stdout"}},
        "root": {"level": "INFO", "handlers": ["consoleHandler"]}
    })
}

/// One gateway with its broker, stand-in and devices.
struct Side {
    which: Impl,
    broker: Mosquitto,
    tb: TbStandIn,
    child: Child,
    dir: TempDir,
    log: PathBuf,
    device: Option<Dev>,
    /// A free port of this side's own (e.g. the REST connector's server).
    spare: u16,
    /// Facts a scenario observed itself (what an HTTP device received, HTTP answers), compared
    /// with the rest.
    notes: Mutex<BTreeSet<String>>,
}

impl Side {
    /// Writes the configuration folder (`tb_gateway.json` with `connectors`, plus the files
    /// `files` returns for the broker's port) and starts the gateway.
    async fn start(
        which: Impl,
        connectors: Value,
        files: &(dyn Fn(u16, u16, Impl) -> Vec<(&'static str, Value)> + Sync),
    ) -> Side {
        let broker = Mosquitto::start().await.expect("mosquitto starts");
        let tb = TbStandIn::connect(broker.port()).await.expect("stand-in");
        let dir = TempDir::new().expect("tempdir");
        let main = json!({
            "thingsboard": {
                "host": "127.0.0.1", "port": broker.port(), "qos": 1,
                "remoteShell": false, "remoteConfiguration": false,
                "statistics": {"enable": false, "statsSendPeriodInSeconds": 3600},
                "checkConnectorsConfigurationInSeconds": 0,
                "handleDeviceRenaming": false,
                "minPackSendDelayMS": 50,
                "security": {"type": "accessToken", "accessToken": "gw"}
            },
            "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
            "grpc": {"enabled": false},
            "connectors": connectors
        });
        let write = |name: &str, v: &Value| {
            std::fs::write(
                dir.path().join(name),
                serde_json::to_vec_pretty(v).expect("json"),
            )
            .expect("write config");
        };
        write("tb_gateway.json", &main);
        write("logs.json", &logs_json());
        let spare = tbgw::test_util::free_tcp_port();
        for (name, v) in files(broker.port(), spare, which) {
            write(name, &v);
        }
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).expect("run dir");
        let log = dir.path().join("gateway.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = match which {
            Impl::Upstream => {
                let mut c = Command::new(upstream_python());
                c.args(["-m", "thingsboard_gateway.tb_gateway"])
                    .env("TB_GW_CONFIG_DIR", dir.path());
                c
            }
            Impl::Tbgw => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_tbgw"));
                c.args(["run", "--log-level", "info", "-c"])
                    .arg(dir.path().join("tb_gateway.json"));
                c
            }
        };
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TB_GW_") && which == Impl::Tbgw {
                cmd.env_remove(&k);
            }
        }
        cmd.envs(side_env(&connectors));
        let child = cmd
            .current_dir(&run)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("gateway starts");
        Side {
            which,
            broker,
            tb,
            child,
            dir,
            log,
            device: None,
            spare,
            notes: Mutex::new(BTreeSet::new()),
        }
    }

    fn log(&self) -> String {
        format!(
            "--- {:?} log ({}) ---\n{}",
            self.which,
            self.dir.path().display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Adds a fact of the scenario's own to the comparison.
    fn note(&self, fact: String) {
        if let Ok(mut n) = self.notes.lock() {
            n.insert(fact);
        }
    }

    fn dev(&self) -> &Dev {
        self.device.as_ref().expect("device connected")
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A device-side MQTT client that records what it receives.
struct Dev {
    client: AsyncClient,
    got: Arc<Mutex<Vec<(String, Bytes)>>>,
}

impl Dev {
    async fn connect(port: u16, subscriptions: &[&str]) -> Dev {
        let mut o = MqttOptions::new(format!("device-{port}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut ev) = AsyncClient::new(o, 1000);
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let (subscribed_tx, mut subscribed) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        if let Ok(mut v) = g.lock() {
                            v.push((topic, p.payload.clone()));
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(true);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for s in subscriptions {
            client
                .subscribe(*s, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        if !subscriptions.is_empty() {
            let _ = tokio::time::timeout(WAIT, subscribed.wait_for(|s| *s)).await;
        }
        Dev { client, got }
    }

    async fn publish(&self, topic: &str, payload: impl Into<Bytes>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }

    /// Waits for a message on `topic`; returns its payload.
    async fn wait(&self, topic: &str) -> Option<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some((_, p)) = self
                .got
                .lock()
                .ok()
                .and_then(|g| g.iter().find(|(t, _)| t == topic).cloned())
            {
                return Some(String::from_utf8_lossy(&p).into_owned());
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the device received, normalised: (topic, payload as JSON when it is JSON).
    fn received(&self) -> BTreeSet<String> {
        self.got
            .lock()
            .map(|g| {
                g.iter()
                    .map(|(t, p)| {
                        let text = String::from_utf8_lossy(p).into_owned();
                        let body = serde_json::from_str::<Value>(&text)
                            .map(|v| v.to_string())
                            .unwrap_or(text);
                        format!("device got {t} {body}")
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What ThingsBoard received from a gateway, as a set of facts independent of timestamps,
/// order and packing: `connect <device> <type>`, `disconnect <device>`,
/// `telemetry <device> <key> <value>`, `attribute <device> <key> <value>`,
/// `attribute request <device> <client?> <keys>`, `rpc reply <device> <id> <body>`,
/// `gateway rpc reply <id> <body>`. Devices named `probe` are left out.
fn facts(tb: &TbStandIn) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in tb.messages() {
        let Some(j) = m.json.clone() else { continue };
        match m.topic.as_str() {
            "v1/gateway/connect" => {
                out.insert(format!("connect {} {}", j["device"], j["type"]));
            }
            "v1/gateway/disconnect" => {
                out.insert(format!("disconnect {}", j["device"]));
            }
            "v1/gateway/telemetry" => {
                for (device, entries) in j.as_object().into_iter().flatten() {
                    let entries = match entries {
                        Value::Array(a) => a.clone(),
                        other => vec![other.clone()],
                    };
                    for e in entries {
                        let values = e.get("values").cloned().unwrap_or(e.clone());
                        for (k, v) in values.as_object().into_iter().flatten() {
                            out.insert(format!("telemetry {device:?} {k} {v}"));
                        }
                    }
                }
            }
            "v1/gateway/attributes" => {
                for (device, values) in j.as_object().into_iter().flatten() {
                    for (k, v) in values.as_object().into_iter().flatten() {
                        out.insert(format!("attribute {device:?} {k} {v}"));
                    }
                }
            }
            "v1/gateway/attributes/request" => {
                let keys = j
                    .get("keys")
                    .cloned()
                    .or_else(|| j.get("key").map(|k| json!([k])))
                    .unwrap_or(Value::Null);
                out.insert(format!(
                    "attribute request {} client={} {keys}",
                    j["device"], j["client"]
                ));
            }
            // The stand-in's broker echoes the gateway's own RPC replies on `v1/gateway/rpc`
            // (real ThingsBoard does not); upstream takes them for requests and answers them
            // with an id of null.
            "v1/gateway/rpc" if j["id"].is_null() => {}
            "v1/gateway/rpc" => {
                out.insert(format!(
                    "rpc reply {} {} {}",
                    j["device"], j["id"], j["data"]
                ));
            }
            t if t.starts_with("v1/devices/me/rpc/response/") => {
                let id = t.rsplit('/').next().unwrap_or_default();
                // The stand-in's own answer to getSessionLimits is not the gateway's.
                if j.get("maxPayloadSize").is_none() {
                    out.insert(format!("gateway rpc reply {id} {j}"));
                }
            }
            _ => {}
        }
    }
    out.retain(|f| !f.contains("\"probe\""));
    out
}

/// Differences met by these scenarios that are deliberate (docs/COMPATIBILITY.md): in
/// upstream's facts the first text is replaced by the second (what tbgw sends instead) before
/// comparing, so tbgw's side is still checked. An empty first text adds the second to
/// upstream's facts (tbgw sends something upstream does not); an empty second one drops
/// upstream's fact. Scenarios add their own.
const KNOWN: &[(&str, &str)] = &[
    // Upstream double-encodes the ack of a one-way RPC and of a reserved `set` (a JSON string
    // holding `{"success": true}`); tbgw sends the object.
    (r#""{\"success\": true}""#, r#"{"success":true}"#),
    // Modbus `bits` with `bit` on a register: upstream reads the high byte's bits first and
    // keeps only `objectsCount` of them (with 1, always bit 8); tbgw takes bit `bit` of the
    // register value (0 = least significant). Register 6 holds 0b100, `bit` is 2.
    ("telemetry \"Meter\" bit2 0", "telemetry \"Meter\" bit2 1"),
];

/// Runs a scenario on both gateways at once and compares what ThingsBoard and the devices saw.
async fn differential<F, Fut>(
    connectors: Value,
    files: impl Fn(u16, u16, Impl) -> Vec<(&'static str, Value)> + Sync,
    device_subscriptions: &[&str],
    known: &[(&str, &str)],
    scenario: F,
) where
    F: Fn(Arc<Side>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let (mut up, mut ours) = tokio::join!(
        Side::start(Impl::Upstream, connectors.clone(), &files),
        Side::start(Impl::Tbgw, connectors.clone(), &files)
    );
    // The devices connect while the gateways start; their subscriptions see what the
    // gateways send them.
    up.device = Some(Dev::connect(up.broker.port(), device_subscriptions).await);
    ours.device = Some(Dev::connect(ours.broker.port(), device_subscriptions).await);
    let (up, ours) = (Arc::new(up), Arc::new(ours));
    let (r_up, r_ours) = tokio::join!(scenario(up.clone()), scenario(ours.clone()));
    let logs = format!("{}\n{}", up.log(), ours.log());
    if let Err(e) = r_up {
        panic!("upstream: {e}\n{logs}");
    }
    if let Err(e) = r_ours {
        panic!("tbgw: {e}\n{logs}");
    }
    let mut f_up = unwrap_upstream_attributes(facts(&up.tb));
    let mut f_ours = facts(&ours.tb);
    if let (Some(a), Some(b)) = (&up.device, &ours.device) {
        f_up.extend(a.received());
        f_ours.extend(b.received());
    }
    for (f, s) in [(&mut f_up, &up), (&mut f_ours, &ours)] {
        if let Ok(n) = s.notes.lock() {
            f.extend(n.iter().cloned());
        }
    }
    let known: Vec<(&str, &str)> = KNOWN.iter().chain(known).copied().collect();
    let mut f_up: BTreeSet<String> = f_up
        .into_iter()
        .map(|f| {
            known
                .iter()
                .filter(|(theirs, _)| !theirs.is_empty())
                .fold(f, |f, (theirs, ours)| f.replace(theirs, ours))
        })
        .filter(|f| !f.is_empty())
        .collect();
    for (theirs, ours) in &known {
        if theirs.is_empty() {
            f_up.insert(ours.to_string());
        }
    }
    let only_up: Vec<&String> = f_up.difference(&f_ours).collect();
    let only_ours: Vec<&String> = f_ours.difference(&f_up).collect();
    let up = Arc::try_unwrap(up).ok();
    let ours = Arc::try_unwrap(ours).ok();
    for s in [up, ours].into_iter().flatten() {
        s.stop().await;
    }
    assert!(
        only_up.is_empty() && only_ours.is_empty(),
        "ThingsBoard and the devices saw different things.\nonly upstream:\n  {}\nonly tbgw:\n  {}\n{logs}",
        only_up
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        only_ours
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
    );
}

/// Upstream's BACnet and ODBC connectors send attributes wrapped as `{"ts": …, "values": {…}}`
/// (docs/COMPATIBILITY.md): in upstream's facts, `attribute D ts N` is dropped and
/// `attribute D values {"ts":N,"k":v}` becomes `attribute D k v`, so the values themselves are
/// still compared with tbgw's plain attributes.
fn unwrap_upstream_attributes(facts: BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in facts {
        let Some(rest) = f.strip_prefix("attribute \"") else {
            out.insert(f);
            continue;
        };
        let Some(end) = rest.find("\" ") else {
            out.insert(f);
            continue;
        };
        let (device, tail) = (&rest[..end], &rest[end + 2..]);
        if let Some(ts) = tail.strip_prefix("ts ") {
            if ts.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
        }
        if let Some(Ok(Value::Object(values))) = tail
            .strip_prefix("values ")
            .map(serde_json::from_str::<Value>)
        {
            for (k, v) in values.iter().filter(|(k, _)| k.as_str() != "ts") {
                out.insert(format!("attribute \"{device}\" {k} {v}"));
            }
            continue;
        }
        out.insert(f);
    }
    out
}

/// Waits until `pred` holds for what the stand-in received.
async fn until(
    tb: &TbStandIn,
    what: &str,
    pred: impl Fn(&BTreeSet<String>) -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let f = facts(tb);
        if pred(&f) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "timed out waiting for {what}; ThingsBoard saw:\n{f:#?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has(f: &BTreeSet<String>, prefix: &str) -> bool {
    f.iter().any(|x| x.starts_with(prefix))
}

// ---------------------------------------------------------------------------------------------
// MQTT

fn mqtt_json(port: u16) -> Value {
    json!({
        "broker": {"host": "127.0.0.1", "port": port, "clientId": format!("gw-src-{port}"), "version": 5,
                   "maxNumberOfWorkers": 1, "maxMessageNumberPerWorker": 10,
                   "security": {"type": "anonymous"}},
        "mapping": [{
            "topicFilter": "sensor/data",
            "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {
                    "deviceNameExpressionSource": "message", "deviceNameExpression": "${serialNumber}",
                    "deviceProfileExpressionSource": "message", "deviceProfileExpression": "${sensorType}"
                },
                "sendDataOnlyOnChange": false,
                "attributes": [
                    {"type": "string", "key": "model", "value": "${sensorModel}"},
                    {"type": "integer", "key": "fwBuild", "value": "${build}"}
                ],
                "timeseries": [
                    {"type": "double", "key": "temperature", "value": "${temp}"},
                    {"type": "integer", "key": "count", "value": "${count}"},
                    {"type": "bool", "key": "on", "value": "${on}"},
                    {"type": "string", "key": "label", "value": "${label}"},
                    {"type": "string", "key": "combined", "value": "${label}:${count}"}
                ]
            }
        }, {
            "topicFilter": "sensor/+/raw",
            "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {
                    "deviceNameExpressionSource": "topic", "deviceNameExpression": "(?<=sensor/)(.*?)(?=/raw)",
                    "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "Raw"
                },
                "timeseries": [{"type": "double", "key": "level", "value": "${level}"}]
            }
        }],
        "requestsMapping": {
            "connectRequests": [{"topicFilter": "sensor/connect", "deviceInfo": {
                "deviceNameExpressionSource": "message", "deviceNameExpression": "${serialNumber}",
                "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "Thermo"}}],
            "disconnectRequests": [{"topicFilter": "sensor/disconnect", "deviceInfo": {
                "deviceNameExpressionSource": "message", "deviceNameExpression": "${serialNumber}"}}],
            "attributeRequests": [{"retain": false, "topicFilter": "sensor/attr/request",
                "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "${serialNumber}"},
                "attributeNameExpressionSource": "message", "attributeNameExpression": "${versionAttribute}",
                "topicExpression": "devices/${deviceName}/attrs", "valueExpression": "${attributeKey}: ${attributeValue}"}],
            "attributeUpdates": [{"retain": false, "deviceNameFilter": ".*", "attributeFilter": ".*",
                "topicExpression": "sensor/${deviceName}/${attributeKey}",
                "valueExpression": "{\"${attributeKey}\":\"${attributeValue}\"}"}],
            "serverSideRpc": [
                {"type": "twoWay", "deviceNameFilter": ".*", "methodFilter": "echo",
                 "requestTopicExpression": "sensor/${deviceName}/request/${methodName}/${requestId}",
                 "responseTopicExpression": "sensor/${deviceName}/response/${methodName}/${requestId}",
                 "responseTopicQoS": 1, "responseTimeout": 10000, "valueExpression": "${params}"},
                {"type": "twoWay", "deviceNameFilter": ".*", "methodFilter": "slow",
                 "requestTopicExpression": "sensor/${deviceName}/request/${methodName}/${requestId}",
                 "responseTopicExpression": "sensor/${deviceName}/response/${methodName}/${requestId}",
                 "responseTopicQoS": 1, "responseTimeout": 1000, "valueExpression": "${params}"},
                {"type": "oneWay", "deviceNameFilter": ".*", "methodFilter": "no-reply",
                 "requestTopicExpression": "sensor/${deviceName}/request/${methodName}/${requestId}",
                 "valueExpression": "${params}"}
            ]
        }
    })
}

/// Publishes probe data until it reaches ThingsBoard: the connector is subscribed.
async fn mqtt_probe(s: &Side) -> Result<(), String> {
    let dev = s.dev();
    for _ in 0..120 {
        dev.publish(
            "sensor/data",
            json!({"serialNumber": "probe", "sensorType": "probe", "temp": 1}).to_string(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if facts_all(&s.tb).iter().any(|f| f.contains("\"probe\"")) {
            // Every subscription of the connector is made in the same session; give the
            // last ones a moment.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(());
        }
    }
    Err("the connector never forwarded the probe".into())
}

/// Like [`facts`] with the probe device kept.
fn facts_all(tb: &TbStandIn) -> Vec<String> {
    tb.messages_on("v1/gateway/#")
        .iter()
        .map(|m| format!("{} {}", m.topic, m.text()))
        .collect()
}

/// The stand-in answers attribute requests as ThingsBoard does: `fw` is "2.0", `n` is 5.
fn answer_attribute_requests(tb: &TbStandIn) {
    tb.set_responder(|m| {
        if m.topic != "v1/gateway/attributes/request" {
            return Vec::new();
        }
        let Some(j) = m.json.as_ref() else {
            return Vec::new();
        };
        let value = |k: &str| match k {
            "fw" => json!("2.0"),
            "n" => json!(5),
            _ => Value::Null,
        };
        let body = match (j.get("key").and_then(Value::as_str), j.get("keys")) {
            (Some(k), _) => json!({"id": j["id"], "device": j["device"], "value": value(k)}),
            (None, Some(Value::Array(keys))) => {
                let values: serde_json::Map<String, Value> = keys
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|k| (k.to_string(), value(k)))
                    .collect();
                json!({"id": j["id"], "device": j["device"], "values": values})
            }
            _ => return Vec::new(),
        };
        vec![(
            "v1/gateway/attributes/response".to_string(),
            Bytes::from(body.to_string()),
        )]
    });
}

async fn rpc(s: &Side, id: u64, method: &str, params: Value) -> Result<(), String> {
    s.tb.send_rpc("SN-1", id, method, params)
        .await
        .map_err(|e| format!("send rpc: {e}"))
}

async fn rpc_replied(s: &Side, id: u64) -> Result<(), String> {
    let prefix = format!("rpc reply \"SN-1\" {id} ");
    until(&s.tb, &format!("the reply to RPC {id}"), |f| {
        has(f, &prefix)
    })
    .await
}

/// Sends an RPC to `device` and waits up to `secs` for its reply; a gateway that never
/// answers is no failure here (the comparison shows the reply only the other one sent).
async fn rpc_lenient(
    s: &Side,
    device: &str,
    id: u64,
    method: &str,
    params: Value,
    secs: u64,
) -> Result<(), String> {
    s.tb.send_rpc(device, id, method, params)
        .await
        .map_err(|e| format!("send rpc: {e}"))?;
    let prefix = format!("rpc reply {device:?} {id} ");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline && !has(&facts(&s.tb), &prefix) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn mqtt_connector_matches_upstream() {
    let connectors = json!([{"type": "mqtt", "name": "MQTT", "configuration": "mqtt.json"}]);
    differential(
        connectors,
        |port, _, _| vec![("mqtt.json", mqtt_json(port))],
        &["sensor/+/#", "devices/#"],
        // Upstream answers a connector RPC twice: `{"success": false}` at once (its MQTT
        // connector's handler returns nothing), then the real acknowledgement.
        &[
            ("gateway rpc reply 20 {\"success\":false}", ""),
            // A two-way RPC the device never answers.
            (
                // (upstream double-encodes it, as its acknowledgements)
                "rpc reply \"SN-1\" 16 \"{\\\"success\\\": false}\"",
                "rpc reply \"SN-1\" 16 {\"code\":408,\"error\":\"no reply on `sensor/SN-1/response/slow/16` within the response timeout\"}",
            ),
        ],
        |s: Arc<Side>| async move {
            mqtt_probe(&s).await?;
            let dev = s.dev();
            // Telemetry and attributes of every value type, as given and as text to convert;
            // device names and types from the message, the topic and a constant.
            dev.publish(
                "sensor/data",
                json!({"serialNumber": "SN-1", "sensorType": "Thermo", "sensorModel": "T1000",
                       "build": "42", "temp": 21.5, "count": 7, "on": true, "label": "hi"})
                .to_string(),
            )
            .await;
            dev.publish(
                "sensor/data",
                json!({"serialNumber": "SN-2", "sensorType": "Hygro", "sensorModel": 5,
                       "build": 3.0, "temp": "22", "count": "8", "on": "false", "label": 3.5})
                .to_string(),
            )
            .await;
            dev.publish("sensor/SN-4/raw", json!({"level": 3}).to_string())
                .await;
            dev.publish("sensor/connect", json!({"serialNumber": "SN-3"}).to_string())
                .await;
            until(&s.tb, "data and the connect request", |f| {
                has(f, "telemetry \"SN-1\"")
                    && has(f, "telemetry \"SN-2\"")
                    && has(f, "telemetry \"SN-4\"")
                    && has(f, "connect \"SN-3\"")
            })
            .await?;
            dev.publish("sensor/disconnect", json!({"serialNumber": "SN-3"}).to_string())
                .await;
            until(&s.tb, "the disconnect request", |f| {
                has(f, "disconnect \"SN-3\"")
            })
            .await?;

            // Attribute updates reach the device.
            s.tb.send_attribute_update("SN-1", json!({"fw": "2.0"}))
                .await
                .map_err(|e| e.to_string())?;
            dev.wait("sensor/SN-1/fw")
                .await
                .ok_or("the attribute update did not reach the device")?;
            s.tb.send_attribute_update("SN-1", json!({"n": 5, "b": true, "o": {"x": 1}}))
                .await
                .map_err(|e| e.to_string())?;
            for t in ["sensor/SN-1/n", "sensor/SN-1/b", "sensor/SN-1/o"] {
                dev.wait(t)
                    .await
                    .ok_or_else(|| format!("nothing on {t}"))?;
            }

            // An attribute request from the device, answered by ThingsBoard.
            answer_attribute_requests(&s.tb);
            dev.publish(
                "sensor/attr/request",
                json!({"serialNumber": "SN-1", "versionAttribute": "fw"}).to_string(),
            )
            .await;
            dev.wait("devices/SN-1/attrs")
                .await
                .ok_or("the attribute response did not reach the device")?;

            // Two-way RPC: a JSON answer and a text answer.
            rpc(&s, 11, "echo", json!({"a": 1})).await?;
            dev.wait("sensor/SN-1/request/echo/11")
                .await
                .ok_or("RPC 11 did not reach the device")?;
            dev.publish(
                "sensor/SN-1/response/echo/11",
                r#"{"relay": true, "source": "device"}"#,
            )
            .await;
            rpc_replied(&s, 11).await?;
            rpc(&s, 12, "echo", json!(5)).await?;
            dev.wait("sensor/SN-1/request/echo/12")
                .await
                .ok_or("RPC 12 did not reach the device")?;
            dev.publish("sensor/SN-1/response/echo/12", "done").await;
            rpc_replied(&s, 12).await?;
            // One-way RPC.
            rpc(&s, 13, "no-reply", json!({"on": true})).await?;
            rpc_replied(&s, 13).await?;
            // Reserved set and get.
            rpc(
                &s,
                14,
                "set",
                json!("requestTopicExpression=sensor/${deviceName}/setraw;value=42;"),
            )
            .await?;
            rpc_replied(&s, 14).await?;
            rpc(
                &s,
                15,
                "get",
                json!("requestTopicExpression=sensor/${deviceName}/getraw;responseTopicExpression=sensor/${deviceName}/gotraw;responseTimeout=10000;value=1;"),
            )
            .await?;
            dev.wait("sensor/SN-1/getraw")
                .await
                .ok_or("RPC 15 did not reach the device")?;
            dev.publish("sensor/SN-1/gotraw", "7").await;
            rpc_replied(&s, 15).await?;
            // A two-way RPC the device does not answer: the timeout reply.
            rpc(&s, 16, "slow", json!({})).await?;
            rpc_replied(&s, 16).await?;
            // A connector RPC to the gateway device: `mqtt_<method>` with the entry in params.
            s.tb.send_gateway_rpc(
                20,
                "mqtt_publish",
                json!({"requestTopicExpression": "sensor/gw/cmd", "valueExpression": "${params.x}", "x": 5}),
            )
            .await
            .map_err(|e| e.to_string())?;
            dev.wait("sensor/gw/cmd")
                .await
                .ok_or("the connector RPC did not reach the device")?;
            until(&s.tb, "the reply to connector RPC 20", |f| {
                has(f, "gateway rpc reply 20 ")
            })
            .await?;
            Ok(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Modbus

/// pymodbus (from the test peers' virtualenv) serving `values` on a TCP port.
async fn pymodbus(port: u16, values: &Value) -> tbgw::test_util::PythonPeer {
    pymodbus_with(port, values, &[]).await
}

/// [`pymodbus`] with the script's extra arguments (`late`: every answer 1.5 s late).
async fn pymodbus_with(port: u16, values: &Value, extra: &[&str]) -> tbgw::test_util::PythonPeer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tbgw-connectors/tests/peers/modbus_server.py");
    let mut args = vec![
        script.display().to_string(),
        "tcp".into(),
        port.to_string(),
        values.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut p = tbgw::test_util::PythonPeer::spawn(args).expect("pymodbus starts");
    p.wait_output("READY", WAIT).await.expect("pymodbus ready");
    p.wait_tcp(port, WAIT).await.expect("pymodbus listens");
    p
}

fn modbus_json(port: u16, offline: u16) -> Value {
    let dp = |tag: &str, ty: &str, fc: u8, count: u16, address: u16| json!({"tag": tag, "type": ty, "functionCode": fc, "objectsCount": count, "address": address});
    let mut bit2 = dp("bit2", "bits", 3, 1, 6);
    bit2["bit"] = json!(2);
    let mut bit_int = dp("bitsInt", "bits", 1, 1, 2);
    bit_int["bitTargetType"] = json!("int");
    let mut div = dp("div", "16int", 3, 1, 7);
    div["divider"] = json!(10);
    let mut mul = dp("mul", "16int", 3, 1, 8);
    mul["multiplier"] = json!(3);
    json!({"master": {"slaves": [{
        "host": "127.0.0.1", "port": port, "type": "tcp", "method": "socket", "timeout": 35,
        "byteOrder": "BIG", "wordOrder": "BIG", "retries": true, "retryOnEmpty": true,
        "retryOnInvalid": true, "pollPeriod": 500, "unitId": 1,
        "deviceName": "Meter", "deviceType": "meter", "sendDataOnlyOnChange": false,
        "connectAttemptTimeMs": 5000, "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 300000,
        "attributes": [dp("serial", "string", 3, 2, 10), dp("model", "16uint", 3, 1, 12)],
        "timeseries": [
            dp("i16", "16int", 3, 1, 0), dp("u16", "16uint", 3, 1, 1), dp("i32", "32int", 3, 2, 2),
            dp("f32", "32float", 3, 2, 4), bit2, div, mul,
            dp("coils", "bits", 1, 4, 0), dp("coil1", "bits", 1, 1, 1), bit_int,
            dp("di0", "bits", 2, 1, 0), dp("ir0", "16int", 4, 1, 0)
        ],
        "attributeUpdates": [dp("limit", "16int", 6, 1, 20)],
        "rpc": [dp("getI16", "16int", 3, 1, 0), dp("setLevel", "16int", 6, 1, 21),
                dp("setRelay", "bits", 5, 1, 5),
                // Outside the slave's 200 registers: "illegal data address" exceptions.
                dp("getBad", "16int", 3, 1, 500), dp("setBad", "16int", 6, 1, 500)]
    }, {
        // Nothing listens on its port.
        "host": "127.0.0.1", "port": offline, "type": "tcp", "method": "socket", "timeout": 1,
        "byteOrder": "BIG", "wordOrder": "BIG", "pollPeriod": 500, "unitId": 1,
        "deviceName": "Offline", "deviceType": "meter",
        "timeseries": [dp("i16", "16int", 3, 1, 0)],
        "rpc": [dp("getI16", "16int", 3, 1, 0)]
    }, {
        // The same registers with upstream's default byte and word orders.
        "host": "127.0.0.1", "port": port, "type": "tcp", "method": "socket", "timeout": 35,
        "pollPeriod": 500, "unitId": 1, "deviceName": "Meter Defaults", "deviceType": "meter",
        "timeseries": [dp("i16", "16int", 3, 1, 0), dp("i32", "32int", 3, 2, 2),
                       dp("f32", "32float", 3, 2, 4), dp("u32", "32uint", 3, 2, 10)]
    }]}})
}

#[tokio::test]
async fn modbus_connector_matches_upstream() {
    let port = tbgw::test_util::free_tcp_port();
    let f32b = 1.5f32.to_bits();
    let values = json!({
        "hr": {"0": 65535, "1": 65000, "2": 0xFFFF, "3": 0xFFFD, "4": f32b >> 16, "5": f32b & 0xFFFF,
               "6": 0b100, "7": 215, "8": 7, "10": 0x4142, "11": 0x4344, "12": 3},
        "co": {"1": 1, "3": 1},
        "di": {"0": 1},
        "ir": {"0": 42}
    });
    let _peer = pymodbus(port, &values).await;
    let offline = tbgw::test_util::free_tcp_port();
    let connectors = json!([{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]);
    differential(
        connectors,
        move |_, _, _| vec![("modbus.json", modbus_json(port, offline))],
        &[],
        &[
            // Upstream echoes a reserved set's value as text.
            (
                "rpc reply \"Meter\" 26 {\"result\":{\"value\":\"9\"}}",
                "rpc reply \"Meter\" 26 {\"result\":{\"value\":9}}",
            ),
            // Without `byteOrder` upstream swaps the bytes of every register (its default is
            // LITTLE); tbgw reads them as the Modbus specification sends them (BIG). Both
            // default `wordOrder` to LITTLE. Registers 2-3 hold 0xFFFF 0xFFFD, 4-5 the float
            // 1.5, 10-11 0x4142 0x4344.
            (
                "\"Meter Defaults\" i32 -33554433",
                "\"Meter Defaults\" i32 -131073",
            ),
            (
                "\"Meter Defaults\" u32 1145258561",
                "\"Meter Defaults\" u32 1128546626",
            ),
            (
                "\"Meter Defaults\" f32 0.0",
                "\"Meter Defaults\" f32 2.2869190937781015e-41",
            ),
            // The attribute-update keys synced on connect are the connector's.
            (
                "",
                "attribute request \"Meter Defaults\" client=false [\"limit\"]",
            ),
            // Errors are `{"error", "code"}`, not results (upstream wraps them in `result`,
            // a failed read even in `result.value`).
            (
                r#"{"result":{"error":"Method not found for noSuchMethod"}}"#,
                r#"{"code":404,"error":"method `noSuchMethod` is not in the rpc list of `Meter`"}"#,
            ),
            (
                r#"{"result":{"value":{"error":"ExceptionResponse(dev_id=1, function_code=131, exception_code=2)"}}}"#,
                r#"{"code":500,"error":"Meter: Modbus exception 2 (illegal data address)"}"#,
            ),
            // A write the slave refuses: upstream cannot serialise pymodbus' exception
            // response and never answers.
            (
                "",
                r#"rpc reply "Meter" 29 {"code":500,"error":"Meter: Modbus exception 2 (illegal data address)"}"#,
            ),
            (
                "",
                r#"rpc reply "Meter" 31 {"code":500,"error":"Meter: Modbus exception 2 (illegal data address)"}"#,
            ),
            // A slave nothing listens for is never announced; upstream keeps the RPC until its
            // timeout (5 s), tbgw answers at once.
            (
                r#"rpc reply "Offline" 32 {"code":408,"error":"Request timeout"}"#,
                r#"rpc reply "Offline" 32 {"code":404,"error":"device `Offline` is not known to the gateway"}"#,
            ),
        ],
        |s: Arc<Side>| async move {
            until(&s.tb, "every polled value", |f| {
                [
                    "i16", "u16", "i32", "f32", "bit2", "div", "mul", "coils", "coil1", "bitsInt",
                    "di0", "ir0",
                ]
                .iter()
                .all(|k| has(f, &format!("telemetry \"Meter\" {k} ")))
                    && has(f, "attribute \"Meter\" serial ")
                    && has(f, "telemetry \"Meter Defaults\" u32 ")
            })
            .await?;
            let rpc = |id: u64, method: &'static str, params: Value| {
                let s = s.clone();
                async move {
                    s.tb.send_rpc("Meter", id, method, params)
                        .await
                        .map_err(|e| e.to_string())?;
                    let prefix = format!("rpc reply \"Meter\" {id} ");
                    until(&s.tb, &format!("the reply to RPC {id}"), |f| {
                        has(f, &prefix)
                    })
                    .await
                }
            };
            // Device RPC entries: a read, register and coil writes.
            rpc(21, "getI16", json!({})).await?;
            rpc(22, "setLevel", json!(5)).await?;
            rpc(23, "setRelay", json!(true)).await?;
            // Reserved get.
            rpc(
                24,
                "get",
                json!("type=16int;functionCode=3;objectsCount=1;address=1;"),
            )
            .await?;
            // An attribute update writes a register (read back through an RPC).
            s.tb.send_attribute_update("Meter", json!({"limit": -3}))
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            rpc(
                25,
                "get",
                json!("type=16int;functionCode=3;objectsCount=1;address=20;"),
            )
            .await?;
            // Reserved set.
            rpc(
                26,
                "set",
                json!("type=16int;functionCode=6;objectsCount=1;address=22;value=9;"),
            )
            .await?;
            // Errors: a method no `rpc` entry has, reads and writes the slave refuses
            // (exception "illegal data address"), reserved ones too, a slave nothing listens
            // for.
            for (id, device, method, params) in [
                (27, "Meter", "noSuchMethod", json!({})),
                (28, "Meter", "getBad", json!({})),
                (29, "Meter", "setBad", json!(5)),
                (
                    30,
                    "Meter",
                    "get",
                    json!("type=16int;functionCode=3;objectsCount=1;address=500;"),
                ),
                (
                    31,
                    "Meter",
                    "set",
                    json!("type=16int;functionCode=6;objectsCount=1;address=500;value=1;"),
                ),
                (32, "Offline", "getI16", json!({})),
            ] {
                rpc_lenient(&s, device, id, method, params, 8).await?;
            }
            Ok(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// OPC-UA

fn opcua_json(port: u16) -> Value {
    json!({
        "server": {
            "url": format!("opc.tcp://127.0.0.1:{port}/tbgw/"),
            "timeoutInMillis": 5000, "scanPeriodInMillis": 3600000, "pollPeriodInMillis": 500,
            "enableSubscriptions": false, "subCheckPeriodInMillis": 100, "showMap": false,
            "security": "Basic128Rsa15", "identity": {"type": "anonymous"}
        },
        "mapping": [{
            "deviceNodeSource": "path",
            "deviceNodePattern": "Root\\.Objects\\.Device1",
            "deviceInfo": {
                "deviceNameExpression": "${DeviceName}", "deviceNameExpressionSource": "path",
                "deviceProfileExpression": "opc-device", "deviceProfileExpressionSource": "constant"
            },
            "attributes": [
                {"key": "model", "type": "constant", "value": "tbgw-sim"},
                {"key": "text", "type": "path", "value": "${StringVar}"}
            ],
            "timeseries": [
                {"key": "relay", "type": "path", "value": "${Relay}"},
                {"key": "i16", "type": "path", "value": "${Int16Var}"},
                {"key": "i64", "type": "path", "value": "${Int64Var}"},
                {"key": "u16", "type": "path", "value": "${UInt16Var}"},
                {"key": "byte", "type": "path", "value": "${ByteVar}"},
                {"key": "inner", "type": "path", "value": "${Sub\\.Inner}"},
                {"key": "special_s", "type": "identifier", "value": "${ns=2;s=Device1.Special}"}
            ],
            "rpc_methods": [
                {"method": "multiply", "arguments": [{"type": "integer", "value": 2}, {"type": "integer", "value": 4}]},
                {"method": "get_relay", "arguments": []},
                {"method": "set_relay", "arguments": [{"type": "boolean", "value": true}]}
            ],
            "attributes_updates": [{"key": "i16", "type": "path", "value": "${Int16Var}"}]
        }]
    })
}

/// asyncua (from the test peers' virtualenv) with one device, values that do not change.
async fn asyncua(port: u16) -> tbgw::test_util::PythonPeer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tbgw-connectors/tests/peers/opcua_server.py");
    let mut peer = tbgw::test_util::PythonPeer::spawn([
        script.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--devices".into(),
        "1".into(),
        "--period".into(),
        "3600".into(),
    ])
    .expect("asyncua starts");
    peer.wait_output("ready", Duration::from_secs(60))
        .await
        .expect("asyncua ready");
    peer.wait_tcp(port, WAIT).await.expect("asyncua listens");
    peer
}

#[tokio::test]
async fn opcua_connector_matches_upstream() {
    // A server per gateway: the scenario writes nodes.
    let (p_up, p_ours) = (
        tbgw::test_util::free_tcp_port(),
        tbgw::test_util::free_tcp_port(),
    );
    let (_a, _b) = tokio::join!(asyncua(p_up), asyncua(p_ours));
    let connectors = json!([{"type": "opcua", "name": "OPC-UA", "configuration": "opcua.json"}]);
    differential(
        connectors,
        move |_, _, which| {
            let port = if which == Impl::Upstream {
                p_up
            } else {
                p_ours
            };
            vec![("opcua.json", opcua_json(port))]
        },
        &[],
        &[
            // Upstream 3.8.5 sends nothing for a `constant` datapoint.
            ("", "attribute \"Device 1\" model \"tbgw-sim\""),
            // Upstream's polling (converting every few milliseconds) does not reliably deliver
            // the values written by the attribute update and RPCs 34 and 35 within the
            // scenario; tbgw's does (waited for below), and both read them back through `get`.
            ("", "telemetry \"Device 1\" i16 77"),
            ("", "telemetry \"Device 1\" i16 78"),
            ("", "telemetry \"Device 1\" relay true"),
            // Errors are `{"error", "code"}`. Upstream wraps them in `result`, and for a
            // failure inside the connector it answers twice: first a JSON string holding
            // `{"error", "success": false}`, then `{"result": {"error"}}`.
            (
                r#"rpc reply "Device 1" 38 {"result":{"error":"Requested rpc method is not found in config"}}"#,
                r#"rpc reply "Device 1" 38 {"code":404,"error":"method noSuchMethod not found on ns=2;i=1"}"#,
            ),
            (
                r#"rpc reply "Device 1" 39 "{\"error\": \"An unexpected error occurred.(BadUnexpectedError)\", \"success\": false}""#,
                "",
            ),
            (
                r#"rpc reply "Device 1" 39 {"result":{"error":"An unexpected error occurred.(BadUnexpectedError)"}}"#,
                r#"rpc reply "Device 1" 39 {"code":400,"error":"value \"a\" cannot be converted to Int64"}"#,
            ),
            (
                r#"rpc reply "Device 1" 40 "{\"error\": \"argument to node must be a NodeId object or a string defining a nodeid found None of type <class 'NoneType'>\", \"success\": false}""#,
                "",
            ),
            (
                r#"rpc reply "Device 1" 40 {"result":{"error":"argument to node must be a NodeId object or a string defining a nodeid found None of type <class 'NoneType'>"}}"#,
                r#"rpc reply "Device 1" 40 {"code":404,"error":"node NoSuchVar not found"}"#,
            ),
            (
                r#"rpc reply "Device 1" 41 {"result":"The arguments must be specified in the square quotes []"}"#,
                r#"rpc reply "Device 1" 41 {"code":400,"error":"value {\"a\":1} cannot be converted to Int64"}"#,
            ),
            (
                r#"rpc reply "Device 1" 42 "{\"error\": \"'NoneType' object has no attribute 'write_value'\", \"success\": false}""#,
                "",
            ),
            (
                r#"rpc reply "Device 1" 42 {"result":{"error":"'NoneType' object has no attribute 'write_value'"}}"#,
                r#"rpc reply "Device 1" 42 {"code":404,"error":"node NoSuchVar not found"}"#,
            ),
        ],
        |s: Arc<Side>| async move {
            until(&s.tb, "every polled value", |f| {
                ["relay", "i16", "i64", "u16", "byte", "inner", "special_s"]
                    .iter()
                    .all(|k| has(f, &format!("telemetry \"Device 1\" {k} ")))
                    && has(f, "attribute \"Device 1\" text ")
            })
            .await?;
            let rpc = |id: u64, method: &'static str, params: Value| {
                let s = s.clone();
                async move {
                    s.tb.send_rpc("Device 1", id, method, params)
                        .await
                        .map_err(|e| e.to_string())?;
                    let prefix = format!("rpc reply \"Device 1\" {id} ");
                    until(&s.tb, &format!("the reply to RPC {id}"), |f| {
                        has(f, &prefix)
                    })
                    .await
                }
            };
            // Methods with the configured arguments and with params.
            rpc(31, "multiply", Value::Null).await?;
            rpc(32, "multiply", json!([6, 7])).await?;
            // Reserved get of a node by its path below the device.
            rpc(33, "get", json!("Int16Var")).await?;
            // An attribute update writes the node; polling sends the new value.
            s.tb.send_attribute_update("Device 1", json!({"i16": 77}))
                .await
                .map_err(|e| e.to_string())?;
            if s.which == Impl::Tbgw {
                until(&s.tb, "the written value", |f| {
                    has(f, "telemetry \"Device 1\" i16 77")
                })
                .await?;
            } else {
                // Upstream's polled values lag (see KNOWN); the node is read back below.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            rpc(43, "get", json!("Int16Var")).await?;
            // Writes: a method that writes a node, with the configured argument and with
            // params; a reserved set by path (polling sends the written value).
            rpc(34, "set_relay", json!([true])).await?;
            rpc(35, "set", json!("Int16Var; 78")).await?;
            // Read back (upstream's polling, converting every few milliseconds, does not
            // always send a changed value in time).
            rpc(36, "get", json!("Int16Var")).await?;
            rpc(37, "get", json!("Relay")).await?;
            if s.which == Impl::Tbgw {
                until(&s.tb, "the written values polled", |f| {
                    has(f, "telemetry \"Device 1\" i16 78")
                        && has(f, "telemetry \"Device 1\" relay true")
                })
                .await?;
            }
            // Errors: a method no `rpc_methods` entry has, a method the server refuses (wrong
            // argument types), a node that does not exist, params in the wrong shape.
            for (id, method, params) in [
                (38, "noSuchMethod", json!({})),
                (39, "multiply", json!(["a", "b"])),
                (40, "get", json!("NoSuchVar")),
                (41, "multiply", json!({"a": 1})),
                (42, "set", json!("NoSuchVar; 1")),
            ] {
                rpc_lenient(&s, "Device 1", id, method, params, 8).await?;
            }
            Ok(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Request

fn request_json(port: u16) -> Value {
    json!({
        "host": format!("http://127.0.0.1:{port}"),
        "SSLVerify": false,
        "security": {"type": "anonymous"},
        "mapping": [{
            "url": "data", "httpMethod": "GET", "httpHeaders": {"ACCEPT": "application/json"},
            "allowRedirects": true, "timeout": 2, "scanPeriod": 0.5,
            "converter": {
                "type": "json",
                "deviceNameJsonExpression": "${serial}",
                "deviceTypeJsonExpression": "http-sensor",
                "attributes": [{"key": "developer", "type": "string", "value": "${Developer}"}],
                "telemetry": [
                    {"key": "temperature", "type": "double", "value": "${temp}"},
                    {"key": "humidity", "type": "integer", "value": "${hum}"},
                    {"key": "both", "type": "string", "value": "${temp}/${hum}"}
                ]
            }
        }],
        "attributeUpdates": [{
            "httpMethod": "POST", "httpHeaders": {"Content-Type": "application/json"},
            "timeout": 2, "tries": 1, "allowRedirects": true,
            "deviceNameFilter": ".*", "attributeFilter": ".*",
            "requestUrlExpression": "sensor/${deviceName}/${attributeKey}",
            "requestValueExpression": "{\"${attributeKey}\":\"${attributeValue}\"}"
        }],
        "serverSideRpc": [{
            "deviceNameFilter": ".*", "methodFilter": "echo",
            "requestUrlExpression": "sensor/${deviceName}/echo",
            "responseTimeout": 2, "httpMethod": "POST", "requestValueExpression": "${params}",
            "timeout": 2, "tries": 1, "httpHeaders": {"Content-Type": "application/json"}
        }, {
            "deviceNameFilter": ".*", "methodFilter": "temp",
            "requestUrlExpression": "sensor/${deviceName}/request/${methodName}/${requestId}",
            "responseTimeout": 2, "httpMethod": "GET", "responseValueExpression": "${temp}",
            "timeout": 2, "tries": 1, "httpHeaders": {"Content-Type": "application/json"}
        }, {
            "deviceNameFilter": ".*", "methodFilter": "temp2",
            "requestUrlExpression": "sensor/${deviceName}/request/${methodName}/${requestId}",
            "responseTimeout": 2, "httpMethod": "GET", "responseValueExpression": "${temp}",
            "requestValueExpression": "${params}",
            "timeout": 2, "tries": 1, "httpHeaders": {"Content-Type": "application/json"}
        }, {
            "deviceNameFilter": ".*", "methodFilter": "fail",
            "requestUrlExpression": "status/500",
            "responseTimeout": 2, "httpMethod": "GET", "requestValueExpression": "${params}",
            "timeout": 2, "tries": 1, "httpHeaders": {"Content-Type": "application/json"}
        }, {
            "deviceNameFilter": ".*", "methodFilter": "slow",
            "requestUrlExpression": "slow?ms=4000",
            "responseTimeout": 1, "httpMethod": "GET", "requestValueExpression": "${params}",
            // One try may take longer than the whole RPC (upstream's answer depends on which
            // ends first when both are equal).
            "timeout": 3, "tries": 1, "httpHeaders": {"Content-Type": "application/json"}
        }]
    })
}

/// request_server.py (see tbgw-connectors/tests/peers) on a free port.
async fn http_peer() -> (u16, Child) {
    let port = tbgw::test_util::free_tcp_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tbgw-connectors/tests/peers/request_server.py");
    let mut peer = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("request_server.py starts");
    {
        use tokio::io::AsyncBufReadExt;
        let out = peer.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(out).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if l.contains("READY") {
                break;
            }
        }
    }
    (port, peer)
}

/// One HTTP/1.1 request; the whole response (status line, headers, body).
async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to {port}: {e}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write to {port}: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .map_err(|e| format!("read from {port}: {e}"))?;
    Ok(out)
}

/// The body of an HTTP response, as compact JSON when it is JSON.
fn http_body(response: &str) -> String {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str::<Value>(body)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| body.to_string())
}

/// What request_server.py's `/sensor/...` paths received, as facts
/// (`device got <METHOD> <path> <body>`); waits until `want` of them arrived.
async fn http_received(port: u16, want: usize) -> Result<BTreeSet<String>, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = http(port, "GET", "/_log", None).await?;
        let log: Value = serde_json::from_str(&http_body(&log)).unwrap_or(Value::Null);
        let got: BTreeSet<String> = log
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let text = r["body"].as_str().unwrap_or_default();
                let body = serde_json::from_str::<Value>(text)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| text.to_string());
                format!(
                    "device got {} {} {body}",
                    r["method"].as_str().unwrap_or_default(),
                    r["path"].as_str().unwrap_or_default()
                )
            })
            .collect();
        if got.len() >= want || tokio::time::Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn request_connector_matches_upstream() {
    // A server per gateway: what each gateway sends its device is compared.
    let ((p_up, _a), (p_ours, _b)) = tokio::join!(http_peer(), http_peer());
    let connectors =
        json!([{"type": "request", "name": "Request", "configuration": "request.json"}]);
    differential(
        connectors,
        move |_, _, which| {
            let port = if which == Impl::Upstream { p_up } else { p_ours };
            vec![("request.json", request_json(port))]
        },
        &[],
        &[
            // A reserved `get` without `value`: upstream sends the RPC's params text as the
            // request body; tbgw sends none.
            (
                "device got GET /sensor/SN-1/get requestUrlExpression=sensor/${deviceName}/get;httpMethod=GET;",
                "device got GET /sensor/SN-1/get ",
            ),
            (
                r#""echo":"requestUrlExpression=sensor/${deviceName}/get;httpMethod=GET;""#,
                r#""echo":null"#,
            ),
            // An entry without `requestValueExpression` (as upstream's own sample `echo`):
            // upstream fails on it and answers, double-encoded, that no entry matches.
            (
                r#"rpc reply "SN-1" 42 "{\"error\": \"No matching RPC request configuration found for this RPC. Please check your\"}""#,
                r#"rpc reply "SN-1" 42 {"result":{"value":22.5}}"#,
            ),
            ("", "device got GET /sensor/SN-1/request/temp/42 "),
            // `responseValueExpression`: upstream renders the value as text.
            (
                r#"rpc reply "SN-1" 48 {"result":{"value":"22.5"}}"#,
                r#"rpc reply "SN-1" 48 {"result":{"value":22.5}}"#,
            ),
            // No entry for the method: upstream answers double-encoded; tbgw 404.
            (
                r#"rpc reply "SN-1" 45 "{\"error\": \"No matching RPC request configuration found for this RPC. Please check your\"}""#,
                r#"rpc reply "SN-1" 45 {"code":404,"error":"method `noSuchMethod`: no serverSideRpc entry matches"}"#,
            ),
            // An HTTP error status is an error (upstream: a value), a timeout has its code.
            (
                r#"{"result":{"value":"status 500"}}"#,
                r#"{"code":500,"error":"HTTP status 500","result":"status 500"}"#,
            ),
            (
                r#"{"result":{"error":"Rpc timeout"}}"#,
                r#"{"code":408,"error":"no response within 1s"}"#,
            ),
        ],
        move |s: Arc<Side>| async move {
            let port = if s.which == Impl::Upstream { p_up } else { p_ours };
            until(&s.tb, "the polled reading", |f| {
                ["temperature", "humidity", "both"]
                    .iter()
                    .all(|k| has(f, &format!("telemetry \"SN-1\" {k} ")))
                    && has(f, "attribute \"SN-1\" developer ")
            })
            .await?;
            // Device RPC entries: the response body, a `responseValueExpression`.
            rpc(&s, 41, "echo", json!({"x": 1})).await?;
            rpc_replied(&s, 41).await?;
            rpc(&s, 42, "temp", json!({})).await?;
            rpc_replied(&s, 42).await?;
            rpc(&s, 48, "temp2", json!({})).await?;
            rpc_replied(&s, 48).await?;
            // Reserved get and set.
            rpc(
                &s,
                43,
                "get",
                json!("requestUrlExpression=sensor/${deviceName}/get;httpMethod=GET;"),
            )
            .await?;
            rpc_replied(&s, 43).await?;
            rpc(
                &s,
                44,
                "set",
                json!("requestUrlExpression=sensor/${deviceName}/set;httpMethod=POST;value=42;"),
            )
            .await?;
            rpc_replied(&s, 44).await?;
            // Attribute updates reach the device.
            s.tb.send_attribute_update("SN-1", json!({"fw": "2.0"}))
                .await
                .map_err(|e| e.to_string())?;
            s.tb.send_attribute_update("SN-1", json!({"n": 5}))
                .await
                .map_err(|e| e.to_string())?;
            // Errors: no entry for the method, an HTTP error status, no answer in time.
            for (id, method) in [(45, "noSuchMethod"), (46, "fail"), (47, "slow")] {
                rpc_lenient(&s, "SN-1", id, method, json!({"y": 2}), 8).await?;
            }
            for f in http_received(port, 7).await? {
                s.note(f);
            }
            Ok(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// REST

fn rest_json(port: u16, device: u16) -> Value {
    let url = |path: &str| format!("http://127.0.0.1:{device}/{path}");
    json!({
        "server": {"host": "127.0.0.1", "port": port.to_string(), "SSL": false},
        "mapping": [{
            "endpoint": "/my_devices", "HTTPMethods": ["POST"],
            "response": {"responseExpected": false, "timeout": 120},
            "security": {"type": "anonymous"},
            "converter": {
                "type": "json",
                "deviceInfo": {
                    "deviceNameExpressionSource": "request", "deviceNameExpression": "${sensorName}",
                    "deviceProfileExpressionSource": "request", "deviceProfileExpression": "${sensorType}"
                },
                "attributes": [{"type": "string", "key": "model", "value": "${sensorModel}"}],
                "timeseries": [
                    {"type": "double", "key": "temperature", "value": "${temp}"},
                    {"type": "integer", "key": "count", "value": "${count}"},
                    {"type": "boolean", "key": "on", "value": "${on}"},
                    {"type": "string", "key": "label", "value": "${label}"}
                ]
            }
        }],
        "requestsMapping": {
            "attributeRequests": [{
                "endpoint": "/sharedAttributes", "type": "shared", "HTTPMethods": ["POST"],
                "security": {"type": "anonymous"}, "timeout": 10,
                "deviceNameExpression": "${deviceName}",
                "attributeNameExpression": "${attribute}${attribute1}"
            }],
            "attributeUpdates": [{
                "HTTPMethod": "POST", "SSLVerify": false,
                "httpHeaders": {"Content-Type": "application/json"},
                "security": {"type": "anonymous"}, "timeout": 2, "tries": 1, "allowRedirects": true,
                "deviceNameFilter": "R.*", "attributeFilter": ".*",
                "requestUrlExpression": url("sensor/${deviceName}/${attributeKey}"),
                "valueExpression": "{\"deviceName\":\"${deviceName}\",\"${attributeKey}\":\"${attributeValue}\"}"
            }],
            "serverSideRpc": [{
                "deviceNameFilter": ".*", "methodFilter": "echo",
                "requestUrlExpression": url("sensor/${deviceName}/echo"),
                "responseTimeout": 2, "HTTPMethod": "POST", "valueExpression": "${params}",
                "timeout": 2, "tries": 1, "httpHeaders": {"Content-Type": "application/json"},
                "security": {"type": "anonymous"}
            }, {
                "deviceNameFilter": ".*", "methodFilter": "fail",
                "requestUrlExpression": url("status/500"),
                "responseTimeout": 2, "HTTPMethod": "GET", "valueExpression": "${params}",
                "timeout": 2, "tries": 1, "httpHeaders": {"Content-Type": "application/json"},
                "security": {"type": "anonymous"}
            }, {
                "deviceNameFilter": ".*", "methodFilter": "slow",
                "requestUrlExpression": url("slow?ms=4000"),
                "responseTimeout": 1, "HTTPMethod": "GET", "valueExpression": "${params}",
                "timeout": 1, "tries": 1, "httpHeaders": {"Content-Type": "application/json"},
                "security": {"type": "anonymous"}
            }]
        }
    })
}

/// POSTs JSON to the side's REST server until it answers (it starts with the gateway).
async fn post(port: u16, path: &str, body: &Value) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut out = String::new();
                if s.read_to_string(&mut out).await.is_ok() && out.starts_with("HTTP/1.1 2") {
                    return Ok(out);
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the REST server on {port} never accepted {path}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn rest_connector_matches_upstream() {
    // A device server per gateway: what each gateway sends its device is compared.
    let ((p_up, _a), (p_ours, _b)) = tokio::join!(http_peer(), http_peer());
    let connectors = json!([{"type": "rest", "name": "REST", "configuration": "rest.json"}]);
    differential(
        connectors,
        move |_, spare, which| {
            let device = if which == Impl::Upstream { p_up } else { p_ours };
            vec![("rest.json", rest_json(spare, device))]
        },
        &[],
        // Upstream's REST connector sends every value as text (booleans as Python writes
        // them); tbgw sends the configured types.
        &[
            ("\"R-1\" count \"3\"", "\"R-1\" count 3"),
            ("\"R-1\" on \"True\"", "\"R-1\" on true"),
            ("\"R-1\" temperature \"21.5\"", "\"R-1\" temperature 21.5"),
            ("\"R-2\" count \"4\"", "\"R-2\" count 4"),
            ("\"R-2\" on \"false\"", "\"R-2\" on false"),
            ("\"R-2\" temperature \"22\"", "\"R-2\" temperature 22.0"),
            // No entry for the method: upstream never answers; tbgw 404.
            (
                "",
                r#"rpc reply "R-1" 54 {"code":404,"error":"method `noSuchMethod`: no request is waiting for this device and no serverSideRpc entry matches"}"#,
            ),
            // An HTTP error status and a timeout are errors with their code (upstream puts
            // them under `result`).
            (
                r#"{"result":{"code":500,"error":"Internal Server Error"}}"#,
                r#"{"code":500,"error":"HTTP status 500","result":"status 500"}"#,
            ),
            (
                r#"{"result":{"code":408,"error":"Timeout"}}"#,
                r#"{"code":408,"error":"no response within 1s"}"#,
            ),
            // A reserved `get` without `value`: upstream fails (no body template) and never
            // answers; tbgw sends the request without a body.
            ("", "device got GET /sensor/R-1/get2 "),
            (
                "",
                r#"rpc reply "R-1" 57 {"result":{"echo":null,"temp":22.5}}"#,
            ),
        ],
        move |s: Arc<Side>| async move {
            let device = if s.which == Impl::Upstream { p_up } else { p_ours };
            post(
                s.spare,
                "/my_devices",
                &json!({"sensorName": "R-1", "sensorType": "rest-sensor", "sensorModel": "X1",
                        "temp": 21.5, "count": 3, "on": true, "label": "a"}),
            )
            .await?;
            post(
                s.spare,
                "/my_devices",
                &json!({"sensorName": "R-2", "sensorType": "rest-sensor", "sensorModel": 7,
                        "temp": "22", "count": "4", "on": "false", "label": 1.5}),
            )
            .await?;
            until(&s.tb, "both devices' data", |f| {
                has(f, "telemetry \"R-1\" label") && has(f, "telemetry \"R-2\" label")
            })
            .await?;
            // An attribute request: ThingsBoard's answer is the HTTP response.
            answer_attribute_requests(&s.tb);
            let answer = http(
                s.spare,
                "POST",
                "/sharedAttributes",
                Some(&json!({"deviceName": "R-1", "attribute": "fw", "attribute1": "n"})),
            )
            .await?;
            // `id` is each gateway's own request number.
            let mut body: Value = serde_json::from_str(&http_body(&answer)).unwrap_or(Value::Null);
            if body.get("id").is_some_and(Value::is_number) {
                body["id"] = json!("<id>");
            }
            s.note(format!(
                "http answer {} {body}",
                answer.lines().next().unwrap_or_default(),
            ));
            // Attribute updates reach the device.
            s.tb.send_attribute_update("R-1", json!({"fw": "2.0"}))
                .await
                .map_err(|e| e.to_string())?;
            s.tb.send_attribute_update("R-1", json!({"n": 5}))
                .await
                .map_err(|e| e.to_string())?;
            // Device RPC entries, reserved get and set, errors.
            let url = |path: &str| format!("http://127.0.0.1:{device}/{path}");
            for (id, method, params) in [
                (51, "echo", json!({"x": 1})),
                (
                    52,
                    "get",
                    json!(format!(
                        "requestUrlExpression={};HTTPMethod=GET;value=1;",
                        url("sensor/R-1/get")
                    )),
                ),
                (
                    57,
                    "get",
                    json!(format!(
                        "requestUrlExpression={};HTTPMethod=GET;",
                        url("sensor/R-1/get2")
                    )),
                ),
                (
                    53,
                    "set",
                    json!(format!(
                        "requestUrlExpression={};HTTPMethod=POST;value=42;",
                        url("sensor/R-1/set")
                    )),
                ),
                (54, "noSuchMethod", json!({})),
                (55, "fail", json!({})),
                (56, "slow", json!({})),
            ] {
                rpc_lenient(&s, "R-1", id, method, params, 8).await?;
            }
            for f in http_received(device, 6).await? {
                s.note(f);
            }
            Ok(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Modbus serial (RTU over a socat PTY pair)

/// A socat PTY pair (`a` for the gateway, `b` for the slave) and a pymodbus RTU slave on `b`.
struct SerialSlave {
    _socat: Child,
    _slave: tbgw::test_util::PythonPeer,
    _dir: TempDir,
    a: String,
}

async fn serial_slave(values: &Value) -> SerialSlave {
    let dir = TempDir::new().expect("tempdir");
    let a = dir.path().join("ttyA").display().to_string();
    let b = dir.path().join("ttyB").display().to_string();
    let socat = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={a}"))
        .arg(format!("pty,raw,echo=0,link={b}"))
        .kill_on_drop(true)
        .spawn()
        .expect("socat is installed (.ci/install)");
    for _ in 0..250 {
        if Path::new(&a).exists() && Path::new(&b).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tbgw-connectors/tests/peers/modbus_server.py");
    let mut slave = tbgw::test_util::PythonPeer::spawn([
        script.display().to_string(),
        "rtu".into(),
        b,
        values.to_string(),
    ])
    .expect("pymodbus starts");
    slave
        .wait_output("READY", WAIT)
        .await
        .expect("pymodbus ready");
    SerialSlave {
        _socat: socat,
        _slave: slave,
        _dir: dir,
        a,
    }
}

fn modbus_serial_json(port: &str) -> Value {
    let dp = |tag: &str, ty: &str, fc: u8, count: u16, address: u16| json!({"tag": tag, "type": ty, "functionCode": fc, "objectsCount": count, "address": address});
    json!({"master": {"slaves": [{
        "type": "serial", "method": "rtu", "port": port, "baudrate": 19200, "timeout": 1,
        "stopbits": 1, "bytesize": 8, "parity": "N", "byteOrder": "BIG", "wordOrder": "BIG",
        "retries": true, "retryOnEmpty": true, "retryOnInvalid": true, "pollPeriod": 500,
        "unitId": 1, "deviceName": "Serial Meter", "deviceType": "serial-meter",
        "sendDataOnlyOnChange": false, "connectAttemptTimeMs": 5000, "connectAttemptCount": 5,
        "waitAfterFailedAttemptsMs": 300000,
        "attributes": [dp("serial", "string", 3, 2, 10)],
        "timeseries": [dp("i16", "16int", 3, 1, 0), dp("u16", "16uint", 3, 1, 1),
                       dp("f32", "32float", 3, 2, 4), dp("coils", "bits", 1, 4, 0)],
        "attributeUpdates": [dp("limit", "16int", 6, 1, 20)],
        "rpc": [dp("getI16", "16int", 3, 1, 0), dp("setLevel", "16int", 6, 1, 21),
                dp("getBad", "16int", 3, 1, 500)]
    }]}})
}

#[tokio::test]
async fn modbus_serial_connector_matches_upstream() {
    let f32b = 1.5f32.to_bits();
    let values = json!({
        "hr": {"0": 65535, "1": 65000, "4": f32b >> 16, "5": f32b & 0xFFFF, "10": 0x4142, "11": 0x4344},
        "co": {"1": 1, "3": 1}
    });
    // A serial line has one master: a line and a slave per gateway.
    let (up, ours) = tokio::join!(serial_slave(&values), serial_slave(&values));
    let (tty_up, tty_ours) = (up.a.clone(), ours.a.clone());
    let connectors =
        json!([{"type": "modbus", "name": "Modbus Serial", "configuration": "modbus_serial.json"}]);
    differential(
        connectors,
        move |_, _, which| {
            let tty = if which == Impl::Upstream {
                &tty_up
            } else {
                &tty_ours
            };
            vec![("modbus_serial.json", modbus_serial_json(tty))]
        },
        &[],
        &[
            // The attribute-update keys synced on connect are the connector's (as over TCP).
            (
                "",
                "attribute request \"Serial Meter\" client=false [\"limit\"]",
            ),
            // A refused read is an error, not a value (as over TCP).
            (
                r#"{"result":{"value":{"error":"ExceptionResponse(dev_id=1, function_code=131, exception_code=2)"}}}"#,
                r#"{"code":500,"error":"Serial Meter: Modbus exception 2 (illegal data address)"}"#,
            ),
        ],
        |s: Arc<Side>| async move {
            until(&s.tb, "every polled value", |f| {
                ["i16", "u16", "f32", "coils"]
                    .iter()
                    .all(|k| has(f, &format!("telemetry \"Serial Meter\" {k} ")))
                    && has(f, "attribute \"Serial Meter\" serial ")
            })
            .await?;
            let d = "Serial Meter";
            rpc_lenient(&s, d, 61, "getI16", json!({}), 15).await?;
            rpc_lenient(&s, d, 62, "setLevel", json!(5), 15).await?;
            s.tb.send_attribute_update(d, json!({"limit": -3}))
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            for (id, method, params) in [
                (
                    63,
                    "get",
                    json!("type=16int;functionCode=3;objectsCount=1;address=20;"),
                ),
                (
                    64,
                    "get",
                    json!("type=16int;functionCode=3;objectsCount=1;address=21;"),
                ),
                (65, "getBad", json!({})),
            ] {
                rpc_lenient(&s, d, id, method, params, 15).await?;
            }
            Ok(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// The gateway device's own reports: connector client attributes (remote configuration) and
// statistics telemetry

/// `key type` facts of a JSON value, objects flattened to `depth` levels (`a.b`); deeper
/// objects and arrays count as one value of their type. Values themselves are not compared
/// (timestamps, memory figures, paths of the temporary folders differ between the runs).
fn shapes(prefix: &str, v: &Value, depth: usize, out: &mut BTreeSet<String>) {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(o) if depth > 0 => {
            for (k, x) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                shapes(&key, x, depth - 1, out);
            }
            return;
        }
        Value::Object(_) => "object",
    };
    out.insert(format!("{prefix} {kind}"));
}

/// What the gateway device published about itself: `gateway attribute <key> <type>` and
/// `gateway telemetry <key> <type>`.
fn gateway_reports(tb: &TbStandIn) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in tb.messages() {
        let Some(j) = m.json.clone() else { continue };
        match m.topic.as_str() {
            "v1/devices/me/attributes" => {
                let mut s = BTreeSet::new();
                shapes("", &j, 2, &mut s);
                out.extend(s.into_iter().map(|f| format!("gateway attribute {f}")));
            }
            "v1/devices/me/telemetry" => {
                let entries = match j {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                for e in entries {
                    let values = e.get("values").cloned().unwrap_or(e);
                    let mut s = BTreeSet::new();
                    shapes("", &values, 3, &mut s);
                    out.extend(s.into_iter().map(|f| format!("gateway telemetry {f}")));
                }
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn gateway_reports_match_upstream() {
    let connectors = json!([{"type": "mqtt", "name": "MQTT Levels", "configuration": "mqtt.json"}]);
    let main = move |port: u16| {
        json!({
            "thingsboard": {
                "host": "127.0.0.1", "port": port, "qos": 1,
                "remoteShell": false, "remoteConfiguration": true,
                "statistics": {"enable": true, "statsSendPeriodInSeconds": 3600,
                               "customStatsSendPeriodInSeconds": 3600},
                "checkConnectorsConfigurationInSeconds": 0,
                "handleDeviceRenaming": false,
                "minPackSendDelayMS": 50,
                "security": {"type": "accessToken", "accessToken": "gw"}
            },
            "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
            "grpc": {"enabled": false},
            "connectors": [{"type": "mqtt", "name": "MQTT Levels", "configuration": "mqtt.json"}]
        })
    };
    differential(
        connectors,
        // The main file is written again with remote configuration and statistics on.
        move |port, _, _| {
            vec![
                ("tb_gateway.json", main(port)),
                ("mqtt.json", mqtt_json(port)),
            ]
        },
        &["sensor/+/#"],
        &[
            // Upstream sends a connector's `_ERRORS_COUNT` only once the connector logged an
            // error (in this scenario: some runs); tbgw sends it for every running connector
            // from the first check (docs/COMPATIBILITY.md).
            ("gateway telemetry MQTT Levels_ERRORS_COUNT integer", ""),
            ("", "gateway telemetry MQTT Levels_ERRORS_COUNT integer"),
            // Upstream's own errors: its remote configurator fails on the stand-in's `probe`
            // attribute (no `name`) and on a `logs_configuration` without `loggers`.
            ("gateway telemetry service_ERRORS_COUNT integer", ""),
            // tbgw's own keys (docs/SERVICES.md, **Ext:**).
            ("", "gateway attribute gatewayImplementation string"),
            ("", "gateway attribute totalDiskBytes integer"),
            ("", "gateway attribute totalMemoryBytes integer"),
            ("", "gateway telemetry machineStats.freeDiskBytes integer"),
            ("", "gateway telemetry machineStats.freeMemoryBytes integer"),
            ("", "gateway telemetry machineStats.gwMemoryBytes integer"),
            ("", "gateway telemetry serviceStats.queueMsgDropped integer"),
            ("", "gateway telemetry serviceStats.storageMsgDropped integer"),
            ("", "gateway telemetry serviceStats.storageMsgPushed integer"),
            ("", "gateway telemetry serviceStats.thingsboardConnected boolean"),
            // Upstream lists a connector counter only once something counted it in the
            // period; tbgw sends every counter. Upstream's must be among tbgw's.
            ("", "gateway telemetry connectorsStats.MQTT Levels.connectorBytesReceived integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.connectorMsgsReceived integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.connectorRestarts integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.connectorTaskFailures integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.connectorsErrors integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.convertersAttrProduced integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.convertersErrors integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.convertersMsgDropped integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.convertersMsgProcessed integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.convertersTsProduced integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.devices integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.devicesConnected integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels.storageMsgPushed integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels_converter.convertersAttrProduced integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels_converter.convertersMsgDropped integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels_converter.convertersMsgProcessed integer"),
            ("", "gateway telemetry connectorsStats.MQTT Levels_converter.convertersTsProduced integer"),
        ],
        |s: Arc<Side>| async move {
            mqtt_probe(&s).await?;
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let r = gateway_reports(&s.tb);
                let has = |p: &str| r.iter().any(|f| f.starts_with(p));
                // (Upstream's connector counters appear only once something counted them.)
                if has("gateway attribute MQTT Levels.") && has("gateway telemetry machineStats.")
                {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("no connector attribute or statistics: {r:#?}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Whatever else arrives at once (the statistics of the first period).
            tokio::time::sleep(Duration::from_secs(2)).await;
            for f in gateway_reports(&s.tb) {
                s.note(f);
            }
            Ok(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// SNMP

fn snmp_json(port: u16) -> Value {
    json!({"devices": [{
        "deviceName": "SNMP router", "deviceType": "snmp", "ip": "127.0.0.1", "port": port,
        "pollPeriod": 1000, "community": "public", "version": "v2c",
        "attributes": [{"key": "location", "method": "get", "oid": "1.3.6.1.2.1.1.6.0"}],
        "telemetry": [
            {"key": "services", "method": "get", "oid": "1.3.6.1.2.1.1.7.0"},
            {"key": "multi", "method": "multiget", "oid": ["1.3.6.1.2.1.1.6.0", "1.3.6.1.2.1.1.4.0"]},
            {"key": "walk", "method": "walk", "oid": "1.3.6.1.2.1.1.6"}
        ],
        "attributeUpdateRequests": [],
        "serverSideRpcRequests": [
            {"requestFilter": "getContact", "method": "get", "oid": "1.3.6.1.2.1.1.4.0"}
        ]
    }]})
}

#[tokio::test]
async fn snmp_connector_matches_upstream() {
    // One snmpd for both gateways; sysLocation, sysContact and sysServices fixed by its config.
    let agent = tbgw::test_util::Snmpd::start_with(
        "rocommunity public 127.0.0.1\nsysLocation lab\nsysContact ops\nsysServices 72\n",
    )
    .await
    .expect("snmpd starts (apt-get install -y snmpd)");
    let port = agent.port();
    let connectors = json!([{"type": "snmp", "name": "SNMP", "configuration": "snmp.json"}]);
    differential(
        connectors,
        move |_, _, _| vec![("snmp.json", snmp_json(port))],
        &[],
        &[
            // Upstream drops a multiget of OCTET STRINGs (bytes are not `str`).
            ("", "telemetry \"SNMP router\" multi \"lab,ops\""),
            // Upstream writes walk values with Python's `str()` of bytes.
            ("\"b'lab'\"", "\"lab\""),
        ],
        |s: Arc<Side>| async move {
            until(&s.tb, "the polled values", |f| {
                has(f, "attribute \"SNMP router\" location ")
                    && has(f, "telemetry \"SNMP router\" services ")
                    && has(f, "telemetry \"SNMP router\" walk ")
            })
            .await?;
            s.tb.send_rpc("SNMP router", 51, "getContact", json!(null))
                .await
                .map_err(|e| e.to_string())?;
            until(&s.tb, "the reply to RPC 51", |f| {
                has(f, "rpc reply \"SNMP router\" 51 ")
            })
            .await?;
            // One RPC only: the stand-in's broker echoes the gateway's reply on
            // v1/gateway/rpc, and upstream's RPC thread dies on that echo (`KeyError:
            // 'method'`), so it never answers a second one.
            Ok(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// FTP

fn ftp_json(port: u16) -> Value {
    json!({
        "parameters": {
            "host": "127.0.0.1", "port": port, "TLSSupport": false,
            "security": {"type": "basic", "username": "tb", "password": "tbpass"}
        },
        "paths": [{
            "path": "data/*.csv", "devicePatternName": "${name}", "devicePatternType": "meter",
            "delimiter": ",", "readMode": "FULL", "maxFileSize": 5, "pollPeriod": 1,
            "txtFileDataView": "TABLE", "withSortingFiles": true,
            "attributes": [{"key": "model", "value": "${model}"}],
            "timeseries": [
                {"key": "temp", "type": "double", "value": "${temp}"},
                {"key": "count", "type": "integer", "value": "${count}"}
            ]
        }],
        "requestsMapping": {"attributeUpdates": [], "serverSideRpc": []}
    })
}

#[tokio::test]
async fn ftp_connector_matches_upstream() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(root.path().join("data")).expect("data dir");
    std::fs::write(
        root.path().join("data/a.csv"),
        "name,model,temp,count\nmeter1,M1,21.5,7\nmeter2,M2,19.5,3\n",
    )
    .expect("csv");
    let port = tbgw::test_util::free_tcp_port();
    let mut peer = tbgw::test_util::PythonPeer::spawn([
        "-m".to_string(),
        "pyftpdlib".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-d".into(),
        root.path().display().to_string(),
        "-u".into(),
        "tb".into(),
        "-P".into(),
        "tbpass".into(),
    ])
    .expect("pyftpdlib starts");
    peer.wait_tcp(port, WAIT).await.expect("pyftpdlib listens");
    let connectors = json!([{"type": "ftp", "name": "FTP", "configuration": "ftp.json"}]);
    // Upstream sends every value as a string whatever `type` says; tbgw honours `type`.
    let known = [
        (
            "telemetry \"meter1\" temp \"21.5\"",
            "telemetry \"meter1\" temp 21.5",
        ),
        (
            "telemetry \"meter1\" count \"7\"",
            "telemetry \"meter1\" count 7",
        ),
        (
            "telemetry \"meter2\" temp \"19.5\"",
            "telemetry \"meter2\" temp 19.5",
        ),
        (
            "telemetry \"meter2\" count \"3\"",
            "telemetry \"meter2\" count 3",
        ),
        // Upstream double-encodes a read's answer (a JSON string holding the content as JSON
        // text); tbgw sends the content as the JSON string.
        (
            r##"rpc reply "meter1" 41 "\"name,model,temp,count\\nmeter1,M1,21.5,7\\nmeter2,M2,19.5,3\\n\"""##,
            r##"rpc reply "meter1" 41 "name,model,temp,count\nmeter1,M1,21.5,7\nmeter2,M2,19.5,3\n""##,
        ),
    ];
    differential(
        connectors,
        move |_, _, _| vec![("ftp.json", ftp_json(port))],
        &[],
        &known,
        |s: Arc<Side>| async move {
            until(&s.tb, "both rows", |f| {
                has(f, "telemetry \"meter1\" temp ")
                    && has(f, "telemetry \"meter2\" count ")
                    && has(f, "attribute \"meter2\" model ")
            })
            .await?;
            // Reserved `get` answers the file's content alone.
            s.tb.send_rpc("meter1", 41, "get", json!("filePath=data/a.csv"))
                .await
                .map_err(|e| e.to_string())?;
            until(&s.tb, "the reply to RPC 41", |f| {
                has(f, "rpc reply \"meter1\" 41 ")
            })
            .await?;
            Ok(())
        },
    )
    .await;
    peer.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Socket

fn socket_json(port: u16) -> Value {
    json!({
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": port, "bufferSize": 1024},
        "devices": [
            {"address": "127.0.0.2:*", "deviceName": "S-1", "deviceType": "socket-sensor",
             "encoding": "utf-8",
             "telemetry": [{"key": "temp", "byteFrom": 0, "byteTo": -1},
                           {"key": "head", "byteFrom": 0, "byteTo": 2}],
             "attributes": [{"key": "tail", "byteFrom": 2, "byteTo": 4}]},
            {"address": "127.0.0.3:*", "deviceName": "S-2", "encoding": "hex",
             "telemetry": [{"key": "raw", "byteFrom": 0, "byteTo": -1}]}
        ]
    })
}

/// Connects from `bind` to the side's Socket connector, retrying until it listens.
async fn socket_device(bind: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        s.bind(format!("{bind}:0").parse().map_err(|e| format!("{e}"))?)
            .map_err(|e| e.to_string())?;
        match s.connect(([127, 0, 0, 1], port).into()).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(format!(
                    "the Socket connector on {port} never accepted: {e}"
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn socket_connector_matches_upstream() {
    use tokio::io::AsyncWriteExt;
    let connectors = json!([{"type": "socket", "name": "Socket", "configuration": "socket.json"}]);
    differential(
        connectors,
        |_, spare, _| vec![("socket.json", socket_json(spare))],
        &[],
        &[],
        |s: Arc<Side>| async move {
            let mut one = socket_device("127.0.0.2", s.spare).await?;
            let mut two = socket_device("127.0.0.3", s.spare).await?;
            // Upstream converts one message every 0.2 s and treats every read as a message:
            // frames go at least 0.4 s apart so each is read and converted on its own, and
            // each waits for the previous one at ThingsBoard (upstream merges the attributes of
            // records stored before it is connected, so an earlier value would be lost).
            for (first, frame, fact) in [
                (true, &b"21.5"[..], "telemetry \"S-1\" temp \"21.5\""),
                (false, &b"\x0b\xb8"[..], "telemetry \"S-2\" raw \"0bb8\""),
                (true, &b"-3.25"[..], "telemetry \"S-1\" temp \"-3.25\""),
                (
                    false,
                    &b"\x00\x01\xff"[..],
                    "telemetry \"S-2\" raw \"0001ff\"",
                ),
            ] {
                let dev = if first { &mut one } else { &mut two };
                dev.write_all(frame).await.map_err(|e| e.to_string())?;
                until(&s.tb, fact, |f| has(f, fact)).await?;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            // tbgw reports a TCP device as disconnected when its connection closes; upstream
            // does not: keep the connections open until the gateways stop.
            std::mem::forget(one);
            std::mem::forget(two);
            Ok(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// S7

fn s7_json(port: u16) -> Value {
    json!({"devices": [{
        "type": "PLC", "address": "127.0.0.1", "port": port, "rack": 0, "slot": 1,
        "deviceName": "S7 PLC", "deviceProfileName": "plc",
        "autoReconnect": true, "maxRetries": 3, "retryDelay": 1.0, "maxDelay": 5.0,
        "heartbeatInterval": 0, "pollPeriod": 500,
        "attributes": [
            {"type": "tag", "key": "power", "tag": "DB1.DBD204:REAL"},
            {"type": "tag", "key": "name", "tag": "DB1.DBB100:STRING[20]"}
        ],
        "timeseries": [
            {"type": "data", "key": "temperature", "dataType": "real", "dbNumber": 1, "start": 50, "size": 4},
            {"type": "data", "key": "humidity", "dataType": "lreal", "dbNumber": 1, "start": 54, "size": 8},
            {"type": "data", "key": "word", "dataType": "word", "dbNumber": 1, "start": 12, "size": 2},
            {"type": "tag", "key": "int", "tag": "DB1.DBW2:INT"},
            {"type": "tag", "key": "bit1", "tag": "DB1.DBX0.1:BOOL"}
        ],
        "attributeUpdates": [],
        "serverSideRpc": [
            {"method": "getInt", "requestType": "read", "type": "tag", "tag": "DB1.DBW2:INT"},
            {"method": "setRelay", "requestType": "write", "type": "data", "dataType": "bool",
             "dbNumber": 1, "start": 0, "size": 1, "bit": 0}
        ]
    }]})
}

/// The python-snap7 server of `tbgw-connectors/tests/peers/s7_server.py` on a free port.
async fn s7_server() -> (u16, tbgw::test_util::PythonPeer) {
    let port = tbgw::test_util::free_tcp_port();
    let mut peer =
        tbgw::test_util::PythonPeer::spawn([s7_script(), "serve".into(), port.to_string()])
            .expect("the S7 server starts (pip install python-snap7==2.1.0)");
    peer.wait_output("ready", WAIT)
        .await
        .expect("the S7 server is ready");
    (port, peer)
}

fn s7_script() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tbgw-connectors/tests/peers/s7_server.py"
    )
    .into()
}

#[tokio::test]
async fn s7_connector_matches_upstream() {
    // One server per side: the scenario writes.
    let ((up_port, mut up_peer), (our_port, mut our_peer)) = tokio::join!(s7_server(), s7_server());
    let port_of = move |which: Impl| match which {
        Impl::Upstream => up_port,
        Impl::Tbgw => our_port,
    };
    let connectors = json!([{"type": "s7", "name": "S7", "configuration": "s7.json"}]);
    differential(
        connectors,
        move |_, _, which| vec![("s7.json", s7_json(port_of(which)))],
        &[],
        &[
            // A write's answer names the value written: upstream as Python's repr of the bytes.
            (r"bytearray(b'\\x01')", "true"),
            // A `data`-form BOOL write: upstream writes the whole byte from zeros (bits 1 and 2
            // are cleared), tbgw writes the bit.
            (
                "DB1 byte 0 after setRelay: 01",
                "DB1 byte 0 after setRelay: 07",
            ),
            (
                "telemetry \"S7 PLC\" bit1 false",
                "telemetry \"S7 PLC\" bit1 true",
            ),
        ],
        |s: Arc<Side>| async move {
            until(&s.tb, "the polled values", |f| {
                has(f, "attribute \"S7 PLC\" power ")
                    && has(f, "attribute \"S7 PLC\" name ")
                    && has(f, "telemetry \"S7 PLC\" temperature ")
                    && has(f, "telemetry \"S7 PLC\" humidity ")
                    && has(f, "telemetry \"S7 PLC\" int ")
                    && has(f, "telemetry \"S7 PLC\" bit1 ")
            })
            .await?;
            for (id, method, params) in [
                (61, "getInt", json!(null)),
                (62, "get", json!("type=tag;tag=DB1.DBD8:REAL;")),
                (63, "setRelay", json!(true)),
            ] {
                s.tb.send_rpc("S7 PLC", id, method, params)
                    .await
                    .map_err(|e| e.to_string())?;
                let want = format!("rpc reply \"S7 PLC\" {id} ");
                until(&s.tb, &want, |f| has(f, &want)).await?;
            }
            let out = tokio::process::Command::new(tbgw::test_util::peers_python())
                .args([
                    s7_script(),
                    "read".into(),
                    port_of(s.which).to_string(),
                    "1".into(),
                    "0".into(),
                    "1".into(),
                ])
                .output()
                .await
                .map_err(|e| e.to_string())?;
            s.note(format!(
                "DB1 byte 0 after setRelay: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ));
            // The poll after the write.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(())
        },
    )
    .await;
    up_peer.stop().await;
    our_peer.stop().await;
}

// ---------------------------------------------------------------------------------------------
// BACnet

/// `bacnet.json` for a gateway on 127.0.0.1:`gateway` polling the bacpypes3 device on
/// 127.0.0.1:`device` (the `address` form: upstream never matches the replies of a device given
/// as host + port + mask, the form of its own sample).
fn bacnet_json(gateway: u16, device: u16) -> Value {
    json!({
        "application": {
            "objectName": "TB_gateway", "host": "127.0.0.1", "port": gateway, "mask": "8",
            "objectIdentifier": 599, "maxApduLengthAccepted": 1476,
            "segmentationSupported": "segmentedBoth", "vendorIdentifier": 15
        },
        "devicesDiscoverPeriodSeconds": 5,
        "devices": [{
            "deviceInfo": {
                "deviceNameExpression": "BACnet ${objectName}",
                "deviceProfileExpression": "bacnet",
                "deviceNameExpressionSource": "expression",
                "deviceProfileExpressionSource": "constant"
            },
            "altResponsesAddresses": [],
            "address": format!("127.0.0.1:{device}"),
            "pollPeriod": 1000,
            "attributes": [
                {"key": "units", "objectType": "analogValue", "objectId": 1, "propertyId": "units"}
            ],
            "timeseries": [
                {"key": "temperature", "objectType": "analogValue", "objectId": 1, "propertyId": "presentValue"},
                {"key": "relay", "objectType": "binaryValue", "objectId": 1, "propertyId": "presentValue"},
                {"key": "mode", "objectType": "multiStateValue", "objectId": 1, "propertyId": "presentValue"},
                {"key": "outputName", "objectType": "analogOutput", "objectId": 1, "propertyId": "objectName"}
            ],
            "attributeUpdates": [
                {"key": "setpoint", "objectType": "analogOutput", "objectId": 1,
                 "propertyId": "presentValue", "priority": 8}
            ],
            "serverSideRpc": [
                {"method": "getSetpoint", "requestType": "readProperty", "requestTimeout": 5000,
                 "objectType": "analogOutput", "objectId": 1, "propertyId": "presentValue"},
                {"method": "setSetpoint", "requestType": "writeProperty", "requestTimeout": 5000,
                 "objectType": "analogOutput", "objectId": 1, "propertyId": "presentValue",
                 "priority": 8}
            ]
        }]
    })
}

/// The bacpypes3 device of `tbgw-connectors/tests/peers/bacnet_device.py` on a free UDP port.
async fn bacnet_device() -> (u16, tbgw::test_util::PythonPeer) {
    let port = tbgw::test_util::free_udp_port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tbgw-connectors/tests/peers/bacnet_device.py"
    );
    let mut peer = tbgw::test_util::PythonPeer::spawn([
        script.to_string(),
        "--name".into(),
        "dev1".into(),
        "--instance".into(),
        "1001".into(),
        "--address".into(),
        format!("127.0.0.1/8:{port}"),
    ])
    .expect("the BACnet device starts (pip install bacpypes3)");
    peer.wait_output("bacnet device up", WAIT)
        .await
        .expect("the BACnet device is ready");
    (port, peer)
}

#[tokio::test]
async fn bacnet_connector_matches_upstream() {
    // One device per side: the scenario writes.
    let ((up_dev, mut up_peer), (our_dev, mut our_peer)) =
        tokio::join!(bacnet_device(), bacnet_device());
    let (up_gw, our_gw) = (
        tbgw::test_util::free_udp_port(),
        tbgw::test_util::free_udp_port(),
    );
    let ports = move |which: Impl| match which {
        Impl::Upstream => (up_gw, up_dev),
        Impl::Tbgw => (our_gw, our_dev),
    };
    let connectors = json!([{"type": "bacnet", "name": "BACnet", "configuration": "bacnet.json"}]);
    differential(
        connectors,
        move |_, _, which| {
            let (gw, dev) = ports(which);
            vec![("bacnet.json", bacnet_json(gw, dev))]
        },
        &[],
        &[
            // Upstream sends every value that is not a REAL as a string; tbgw types it as
            // BACnet encodes it (enumerations and unsigned as integers, names as strings).
            ("mode \"2\"", "mode 2"),
            ("relay \"0\"", "relay 0"),
            ("units \"degrees-celsius\"", "units 62"),
            // Upstream's RPC replies are Python's repr of a dict, its values strings but for
            // a write; tbgw answers JSON.
            (r#""{'value': '20.0'}""#, r#"{"value":20.0}"#),
            (r#""{'value': 23.5}""#, r#"{"value":23.5}"#),
            (r#""{'value': '23.5'}""#, r#"{"value":23.5}"#),
            (r#""{'value': '21.5'}""#, r#"{"value":21.5}"#),
            (r#""{'value': '24.25'}""#, r#"{"value":24.25}"#),
        ],
        |s: Arc<Side>| async move {
            until(&s.tb, "the polled values", |f| {
                let f = unwrap_upstream_attributes(f.clone());
                has(&f, "attribute \"BACnet dev1\" units ")
                    && has(&f, "telemetry \"BACnet dev1\" temperature ")
                    && has(&f, "telemetry \"BACnet dev1\" relay ")
                    && has(&f, "telemetry \"BACnet dev1\" mode ")
                    && has(&f, "telemetry \"BACnet dev1\" outputName ")
            })
            .await?;
            for (id, method, params) in [
                (71, "getSetpoint", json!(null)),
                (72, "setSetpoint", json!(23.5)),
                (73, "getSetpoint", json!(null)),
                (
                    74,
                    "get",
                    json!("objectType=analogValue;objectId=1;propertyId=presentValue;"),
                ),
            ] {
                s.tb.send_rpc("BACnet dev1", id, method, params)
                    .await
                    .map_err(|e| e.to_string())?;
                let want = format!("rpc reply \"BACnet dev1\" {id} ");
                until(&s.tb, &want, |f| has(f, &want)).await?;
            }
            s.tb.send_attribute_update("BACnet dev1", json!({"setpoint": 24.25}))
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            s.tb.send_rpc("BACnet dev1", 75, "getSetpoint", json!(null))
                .await
                .map_err(|e| e.to_string())?;
            until(&s.tb, "the reply to RPC 75", |f| {
                has(f, "rpc reply \"BACnet dev1\" 75 ")
            })
            .await?;
            Ok(())
        },
    )
    .await;
    up_peer.stop().await;
    our_peer.stop().await;
}

// ---------------------------------------------------------------------------------------------
// BLE (advertisement mode through python-dbusmock's BlueZ; GATT cannot be mocked that way)

/// The private system bus of the BLE scenario, for the gateways whose connectors include `ble`.
static BLE_BUS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Environment a side's gateway gets: `DBUS_SYSTEM_BUS_ADDRESS` of the mocked BlueZ when one
/// of its connectors is `ble` (not set process-wide: the other scenarios run alongside).
fn side_env(connectors: &Value) -> Vec<(String, String)> {
    let ble = connectors
        .as_array()
        .is_some_and(|a| a.iter().any(|c| c["type"] == "ble"));
    match (ble, BLE_BUS.get()) {
        (true, Some(bus)) => vec![("DBUS_SYSTEM_BUS_ADDRESS".to_string(), bus.clone())],
        _ => Vec::new(),
    }
}

#[cfg(feature = "ble")]
fn ble_json() -> Value {
    json!({
        "name": "BLE Connector",
        "passiveScanMode": true,
        "scannerTimeout": 3000,
        "devices": [{
            "name": "Sensor", "MACAddress": "4c:65:a8:df:85:c0", "pollPeriod": 1000,
            "telemetry": [
                {"key": "temperature", "dataSourceType": "advertisement", "valueExpression": "[0:2]"},
                {"key": "middle", "dataSourceType": "advertisement", "valueExpression": "[1:3]"},
                {"key": "battery", "dataSourceType": "advertisement", "valueExpression": "[2]"}
            ],
            "attributes": [
                {"key": "all", "dataSourceType": "advertisement", "valueExpression": "[0:]"}
            ]
        }]
    })
}

#[cfg(feature = "ble")]
#[tokio::test]
async fn ble_connector_matches_upstream() {
    if let Some(why) = tbgw::test_util::BluezMock::unavailable() {
        eprintln!("SKIPPED ble_connector_matches_upstream: {why}");
        return;
    }
    // One mocked bluetoothd that both gateways scan.
    let bluez = Arc::new(tokio::sync::Mutex::new(
        tbgw::test_util::BluezMock::start()
            .await
            .expect("the mocked BlueZ starts"),
    ));
    {
        let mut b = bluez.lock().await;
        let _ = BLE_BUS.set(b.bus_address());
        b.add_device("4C:65:A8:DF:85:C0", "LYWSD03MMC")
            .await
            .expect("device");
        b.add_device("11:22:33:44:55:66", "other")
            .await
            .expect("device");
        b.set_manufacturer_data("4C:65:A8:DF:85:C0", 0x0499, &[0x01, 0x02, 0xff])
            .await
            .expect("data");
        b.set_manufacturer_data("11:22:33:44:55:66", 0x0499, &[9, 9, 9])
            .await
            .expect("data");
    }
    let connectors = json!([{"type": "ble", "name": "BLE", "configuration": "ble.json"}]);
    let changed = Arc::new(tokio::sync::Notify::new());
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (b2, c2, r2) = (bluez.clone(), changed.clone(), ready.clone());
    differential(
        connectors,
        |_, _, _| vec![("ble.json", ble_json())],
        &[],
        &[
            // `[i]` in advertisement mode: upstream fails (`str += int`); tbgw sends the byte.
            ("", "telemetry \"Sensor\" battery 255"),
            ("", "telemetry \"Sensor\" battery 7"),
        ],
        move |s: Arc<Side>| {
            let (bluez, changed, ready) = (b2.clone(), c2.clone(), r2.clone());
            async move {
                // By MAC (configured in lower case), slices as big-endian integers.
                until(&s.tb, "the first advertisement", |f| {
                    f.contains("telemetry \"Sensor\" temperature 258")
                        && f.contains("telemetry \"Sensor\" middle 767")
                        && f.contains("attribute \"Sensor\" all 66303")
                })
                .await?;
                // Both sides have the first data: the device changes what it advertises.
                if ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                    bluez
                        .lock()
                        .await
                        .set_manufacturer_data("4C:65:A8:DF:85:C0", 0x0499, &[0x00, 0xfa, 0x07])
                        .await
                        .map_err(|e| e.to_string())?;
                    changed.notify_waiters();
                    changed.notify_one();
                } else {
                    changed.notified().await;
                }
                until(&s.tb, "the changed advertisement", |f| {
                    f.contains("telemetry \"Sensor\" temperature 250")
                        && f.contains("telemetry \"Sensor\" middle 64007")
                        && f.contains("attribute \"Sensor\" all 64007")
                })
                .await?;
                Ok(())
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// KNX

/// The KNX scenario: one knxd (Debian, a tunnelling server with a dummy bus) and one xknx bus
/// member (`tbgw-connectors/tests/peers/knx_member.py`) per side; upstream needs xknx in its
/// virtualenv (`.ci/upstream/requirements.txt`).
#[cfg(feature = "knx")]
mod knx_parity {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn knx_json(port: u16) -> Value {
        json!({
            "client": {"type": "TUNNELING", "gatewayIp": "127.0.0.1", "gatewayPort": port,
                       "localIp": "127.0.0.1", "rateLimit": 0, "autoReconnect": true,
                       "autoReconnectWait": 1},
            "devices": [{
                "deviceInfo": {"deviceNameDataType": "string", "deviceNameExpressionSource": "expression",
                               "deviceNameExpression": "Device ${1/0/5}", "deviceProfileDataType": "none",
                               "deviceProfileExpressionSource": "constant",
                               "deviceProfileNameExpression": "knx"},
                "pollPeriod": 1000,
                "attributes": [{"type": "temperature", "key": "temperature", "groupAddress": "1/0/6"}],
                "timeseries": [
                    {"type": "humidity", "key": "humidity", "groupAddress": "1/0/7"},
                    {"type": "bool", "key": "light", "groupAddress": "1/0/1"},
                    {"type": "percent", "key": "dimmer", "groupAddress": "1/0/2"},
                    {"type": "pulse_2byte", "key": "pulses", "groupAddress": "1/0/3"},
                    {"type": "active_energy", "key": "energy", "groupAddress": "1/0/8"},
                    {"type": "power", "key": "power", "groupAddress": "1/0/9"}
                ]
            }],
            "attributeUpdates": [
                {"deviceNameFilter": ".*", "dataType": "percentU8", "groupAddress": "1/1/0", "key": "brightness"}
            ],
            "serverSideRpc": [
                {"requestType": "read", "deviceNameFilter": ".*", "method": "get_name", "dataType": "string", "groupAddress": "1/0/5"},
                {"requestType": "write", "deviceNameFilter": ".*", "method": "set_label", "dataType": "string", "groupAddress": "1/1/1"}
            ]
        })
    }

    fn member_script() -> String {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tbgw-connectors/tests/peers/knx_member.py"
        )
        .into()
    }

    struct Bus {
        knxd: tbgw::test_util::Knxd,
        member: tbgw::test_util::PythonPeer,
        control: u16,
    }

    async fn bus() -> Bus {
        let knxd = tbgw::test_util::Knxd::start()
            .await
            .expect("knxd starts (apt-get install knxd)");
        let control = tbgw::test_util::free_tcp_port();
        let values = json!({
            "1/0/5": ["string", "Boiler"], "1/0/6": ["temperature", 21.5],
            "1/0/7": ["humidity", 55.2], "1/0/1": ["bool", true], "1/0/2": ["percent", 50],
            "1/0/3": ["pulse_2byte", 1234], "1/0/8": ["active_energy", -123456],
            "1/0/9": ["power", 1500.5], "1/1/0": ["percentU8", 0], "1/1/1": ["string", "none"]
        });
        let mut member = tbgw::test_util::PythonPeer::spawn([
            member_script(),
            knxd.port().to_string(),
            control.to_string(),
            values.to_string(),
        ])
        .expect("the xknx member starts (pip install xknx)");
        member
            .wait_output("ready", WAIT)
            .await
            .expect("the xknx member is ready");
        Bus {
            knxd,
            member,
            control,
        }
    }

    async fn tell(control: u16, cmd: Value) -> Result<(), String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", control))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn member_saw(bus_log: impl Fn() -> String, line: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !bus_log().contains(line) {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "the bus member did not see {line:?}:\n{}",
                    bus_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn knx_connector_matches_upstream() {
        let (up_bus, our_bus) = tokio::join!(bus(), bus());
        let (up_port, our_port) = (up_bus.knxd.port(), our_bus.knxd.port());
        let (up_control, our_control) = (up_bus.control, our_bus.control);
        let buses = Arc::new([up_bus, our_bus]);
        let connectors = json!([{"type": "knx", "name": "KNX", "configuration": "knx.json"}]);
        let b = buses.clone();
        differential(
            connectors,
            move |_, _, which| {
                let port = match which {
                    Impl::Upstream => up_port,
                    Impl::Tbgw => our_port,
                };
                vec![("knx.json", knx_json(port))]
            },
            &[],
            &[
                // RPC replies: upstream sends Python's repr of its result dict as text.
                (r#""{'value': 'Boiler'}""#, r#"{"value":"Boiler"}"#),
                (r#""{'value': 'Kitchen'}""#, r#"{"value":"Kitchen"}"#),
                // The light was switched off and on again between two polls: tbgw listens to
                // the bus and sends both; upstream's polls see it on.
                ("", "telemetry \"Device Boiler\" light false"),
            ],
            move |s: Arc<Side>| {
                let b = b.clone();
                async move {
                    let (i, control) = match s.which {
                        Impl::Upstream => (0, up_control),
                        Impl::Tbgw => (1, our_control),
                    };
                    let log = || b[i].member.log();
                    until(&s.tb, "the polled values", |f| {
                        has(f, "attribute \"Device Boiler\" temperature 21.5")
                            && has(f, "telemetry \"Device Boiler\" humidity 55.2")
                            && has(f, "telemetry \"Device Boiler\" light true")
                            && has(f, "telemetry \"Device Boiler\" dimmer 50")
                            && has(f, "telemetry \"Device Boiler\" pulses 1234")
                            && has(f, "telemetry \"Device Boiler\" energy -123456")
                            && has(f, "telemetry \"Device Boiler\" power 1500.5")
                    })
                    .await?;
                    s.tb.send_attribute_update("Device Boiler", json!({"brightness": 200}))
                        .await
                        .map_err(|e| e.to_string())?;
                    member_saw(log, "WRITE 1/1/0 200").await?;
                    s.note("bus member saw brightness 200".into());
                    for (id, method, params) in [
                        (71, "set_label", json!("Kitchen")),
                        (72, "get_name", json!(null)),
                    ] {
                        s.tb.send_rpc("Device Boiler", id, method, params)
                            .await
                            .map_err(|e| e.to_string())?;
                        let want = format!("rpc reply \"Device Boiler\" {id} ");
                        until(&s.tb, &want, |f| has(f, &want)).await?;
                    }
                    member_saw(log, "WRITE 1/1/1 \"Kitchen\"").await?;
                    s.note("bus member saw set_label Kitchen".into());
                    // Off and on again at once, between two polls.
                    tell(control, json!({"write": "1/0/1", "value": false})).await?;
                    tell(control, json!({"write": "1/0/1", "value": true})).await?;
                    // Two polls after the press.
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    Ok(())
                }
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Python custom connector: upstream's own `SerialConnector` example (`extensions/serial`, a
// `class` entry), run in upstream's process by upstream and in tbgw's Python host by tbgw,
// over a socat PTY pair each. Feature `grpc` (the host speaks the gRPC connector API).

#[cfg(feature = "grpc")]
mod custom_serial_parity {
    use super::*;
    use std::io::{Read, Write};

    /// A socat PTY pair: `a` for the gateway, the test is the device on `b`.
    struct Line {
        _socat: Child,
        _dir: TempDir,
        a: String,
        device: std::fs::File,
        received: Arc<Mutex<Vec<u8>>>,
    }

    async fn line() -> Line {
        let dir = TempDir::new().expect("tempdir");
        let a = dir.path().join("ttyA").display().to_string();
        let b = dir.path().join("ttyB").display().to_string();
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={a}"))
            .arg(format!("pty,raw,echo=0,link={b}"))
            .kill_on_drop(true)
            .spawn()
            .expect("socat is installed (.ci/install)");
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
                if let Ok(mut s) = sink.lock() {
                    s.extend_from_slice(&buf[..n]);
                }
            }
        });
        Line {
            _socat: socat,
            _dir: dir,
            a,
            device,
            received,
        }
    }

    fn custom_serial_json(port: &str) -> Value {
        json!({
            "name": "Custom serial connector",
            "logLevel": "INFO",
            "uplinkQueueSize": 100000,
            "devices": [{
                "name": "SerialDevice1", "type": "default", "port": port, "baudrate": 9600,
                "converter": "SerialUplinkConverter", "downlink_converter": "SerialDownlinkConverter",
                "telemetry": [{"type": "float", "key": "humidity", "untilDelimiter": "\r"}],
                "attributes": [{"key": "SerialNumber", "type": "string", "fromByte": 4, "toByte": -1}],
                "attributeUpdates": [{"attributeOnPlatform": "attr1", "stringToDevice": "value = ${attr1}\n"}],
                "serverSideRpc": [{"method": "getValue", "type": "string", "withResponse": false}]
            }]
        })
    }

    /// tbgw's main file: the shared one with the gRPC server on (upstream's stays off: its
    /// server does not start).
    fn tbgw_main(broker: u16, grpc_port: u16, connectors: &Value) -> Value {
        json!({
            "thingsboard": {
                "host": "127.0.0.1", "port": broker, "qos": 1,
                "remoteShell": false, "remoteConfiguration": false,
                "statistics": {"enable": false, "statsSendPeriodInSeconds": 3600},
                "checkConnectorsConfigurationInSeconds": 0,
                "handleDeviceRenaming": false,
                "minPackSendDelayMS": 50,
                "security": {"type": "accessToken", "accessToken": "gw"}
            },
            "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
            "grpc": {"enabled": true, "serverPort": grpc_port, "serverHost": "127.0.0.1"},
            "connectors": connectors
        })
    }

    async fn serial_got(l: &Mutex<Vec<u8>>, text: &[u8]) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = l.lock().map(|g| g.clone()).unwrap_or_default();
            if got.windows(text.len()).any(|w| w == text) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "the serial line never got {:?}; got {:?}",
                    String::from_utf8_lossy(text),
                    String::from_utf8_lossy(&got)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn custom_serial_connector_matches_upstream() {
        let (up, ours) = tokio::join!(line(), line());
        let (tty_up, tty_ours) = (up.a.clone(), ours.a.clone());
        let python = upstream_python().display().to_string();
        let connectors = json!([{"type": "serial", "name": "Custom serial connector",
                                 "configuration": "custom_serial.json", "class": "SerialConnector",
                                 "python": python}]);
        let c = connectors.clone();
        let (up_line, ours_line) = (Arc::new(Mutex::new(up)), Arc::new(Mutex::new(ours)));
        let by_side = {
            let (u, o) = (up_line.clone(), ours_line.clone());
            move |which: Impl| {
                if which == Impl::Upstream {
                    u.clone()
                } else {
                    o.clone()
                }
            }
        };
        differential(
            connectors,
            move |broker, _, which| {
                let tty = if which == Impl::Upstream {
                    &tty_up
                } else {
                    &tty_ours
                };
                let mut files = vec![("custom_serial.json", custom_serial_json(tty))];
                if which == Impl::Tbgw {
                    let grpc = tbgw::test_util::free_tcp_port();
                    files.push(("tb_gateway.json", tbgw_main(broker, grpc, &c)));
                }
                files
            },
            &[],
            &[],
            move |s: Arc<Side>| {
                let l = by_side(s.which);
                async move {
                    let (mut device, received) = {
                        let g = l.lock().map_err(|e| e.to_string())?;
                        (
                            g.device.try_clone().map_err(|e| e.to_string())?,
                            g.received.clone(),
                        )
                    };
                    // Lines until the connector has opened the port and the data arrived.
                    let fact = "telemetry \"SerialDevice1\" humidity 45.5";
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                    while !has(&facts(&s.tb), fact) {
                        device
                            .write_all(b"45.5\rSN-0042\n")
                            .map_err(|e| e.to_string())?;
                        if tokio::time::Instant::now() > deadline {
                            return Err(format!("no {fact}"));
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    until(&s.tb, "the serial number", |f| {
                        has(f, "attribute \"SerialDevice1\" SerialNumber ")
                    })
                    .await?;
                    rpc_lenient(&s, "SerialDevice1", 71, "getValue", json!("ping-71"), 15).await?;
                    serial_got(&received, b"ping-71").await?;
                    s.tb.send_attribute_update("SerialDevice1", json!({"attr1": 17}))
                        .await
                        .map_err(|e| e.to_string())?;
                    serial_got(&received, b"value = 17\n").await?;
                    let got = received.lock().map(|g| g.clone()).unwrap_or_default();
                    s.note(format!(
                        "serial line got {:?}",
                        String::from_utf8_lossy(&got)
                    ));
                    Ok(())
                }
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// OCPP

fn ocpp_json(port: u16) -> Value {
    json!({
        "centralSystem": {
            "name": "Central System", "host": "127.0.0.1", "port": port,
            "connection": {"type": "insecure"},
            "security": [{"type": "basic", "credentials": [{"username": "cp", "password": "secret"}]}]
        },
        "chargePoints": [{
            "idRegexpPattern": "ocpp/CP_",
            "deviceNameExpression": "${Vendor} ${Model}",
            "deviceTypeExpression": "charger",
            "attributes": [
                {"messageTypeFilter": "BootNotification", "key": "serial", "value": "${serial_number}"}
            ],
            "timeseries": [
                {"messageTypeFilter": "MeterValues,", "key": "energy", "value": "${meter_value[:].sampled_value[:].value}"},
                {"messageTypeFilter": "MeterValues", "key": "soc", "value": "${soc}"},
                {"messageTypeFilter": "StatusNotification", "key": "status", "value": "${connector_status}"},
                {"messageTypeFilter": "TransactionEvent", "key": "power", "value": "${power_active_import}"},
                {"messageTypeFilter": "DataTransfer,", "key": "temp", "value": "${data.temp}"}
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

fn ocpp_script() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tbgw-connectors/tests/peers/ocpp_cp.py"
    )
    .into()
}

/// An OCPP 2.1 charge point of the PyPI `ocpp` package (`tbgw-connectors/tests/peers/ocpp_cp.py`)
/// that runs its uplink scenario and then sends a Heartbeat every second.
fn ocpp_charge_point(
    port: u16,
    id: &str,
    vendor: &str,
) -> Result<tbgw::test_util::PythonPeer, String> {
    let opts = json!({
        "url": format!("ws://127.0.0.1:{port}/ocpp/{id}"), "version": "2.1",
        "vendor": vendor, "auth": ["cp", "secret"], "keepalive": 1
    });
    tbgw::test_util::PythonPeer::spawn([ocpp_script(), opts.to_string()])
        .map_err(|e| format!("the ocpp simulator starts (pip install ocpp==2.1.0): {e}"))
}

/// What a charge point saw, as facts: the central system's calls (`GOT …`) and its answers to
/// the charge point's calls (`RESULT …`) without their clock fields.
fn ocpp_seen(vendor: &str, log: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in log.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(kind @ ("GOT" | "RESULT")), Some(action), Some(body)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(mut v) = serde_json::from_str::<Value>(body) else {
            out.push(format!("charge point {vendor} {kind} {action} {body}"));
            continue;
        };
        if let Some(o) = v.as_object_mut() {
            o.remove("current_time");
            if action == "Heartbeat" {
                continue;
            }
        }
        out.push(format!("charge point {vendor} {kind} {action} {v}"));
    }
    out
}

#[tokio::test]
async fn ocpp_connector_matches_upstream() {
    let (up_port, our_port) = (
        tbgw::test_util::free_tcp_port(),
        tbgw::test_util::free_tcp_port(),
    );
    let port_of = move |which: Impl| match which {
        Impl::Upstream => up_port,
        Impl::Tbgw => our_port,
    };
    // The charge points live until the comparison is done (a drop would disconnect them).
    let peers: Arc<Mutex<Vec<tbgw::test_util::PythonPeer>>> = Arc::default();
    let keep = peers.clone();
    let connectors = json!([{"type": "ocpp", "name": "OCPP", "configuration": "ocpp.json"}]);
    differential(
        connectors,
        move |_, _, which| vec![("ocpp.json", ocpp_json(port_of(which)))],
        &[],
        &[
            // Upstream sends every value as Python's `str()`; tbgw keeps the JSON types.
            ("energy \"12.5\"", "energy 12.5"),
            ("power \"5.5\"", "power 5.5"),
            ("soc \"48\"", "soc 48"),
            ("temp \"21.5\"", "temp 21.5"),
            // RPC answers: upstream's are Python's repr of the `ocpp` call result, tbgw's the
            // charge point's JSON answer.
            (
                r#"{"result":"DataTransfer(status='Accepted', custom_data=None, data='pong', status_info=None)"}"#,
                r#"{"result":{"data":"pong","status":"Accepted"}}"#,
            ),
            (
                r#"{"result":"Reset(status='Accepted', custom_data=None, status_info=None)"}"#,
                r#"{"result":{"status":"Accepted"}}"#,
            ),
            (
                r#"{"result":"GetVariables(get_variable_result=[{'attribute_status': 'Accepted', 'attribute_value': '30', 'component': {'name': 'OCPPCommCtrlr'}, 'variable': {'name': 'HeartbeatInterval'}}], custom_data=None)"}"#,
                r#"{"result":{"getVariableResult":[{"attributeStatus":"Accepted","attributeValue":"30","component":{"name":"OCPPCommCtrlr"},"variable":{"name":"HeartbeatInterval"}}]}}"#,
            ),
            (
                r#"{"result":"SetVariables(set_variable_result=[{'attribute_status': 'Accepted', 'component': {'name': 'OCPPCommCtrlr'}, 'variable': {'name': 'HeartbeatInterval'}}], custom_data=None)"}"#,
                r#"{"result":{"setVariableResult":[{"attributeStatus":"Accepted","component":{"name":"OCPPCommCtrlr"},"variable":{"name":"HeartbeatInterval"}}]}}"#,
            ),
            // `${params}` is inserted as compact JSON (upstream: simplejson's `", "`/`": "`).
            (r#""{\"a\": 1}""#, r#""{\"a\":1}""#),
            // A TransactionEvent with an idToken is answered with its idTokenInfo, as OCPP 2.x
            // requires; upstream answers `{}`.
            (
                r#""id_token_info":null"#,
                r#""id_token_info":{"status":"Accepted"}"#,
            ),
        ],
        move |s: Arc<Side>| {
            let keep = keep.clone();
            async move {
                let port = port_of(s.which);
                let deadline = tokio::time::Instant::now() + WAIT;
                while tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_err()
                {
                    if tokio::time::Instant::now() > deadline {
                        return Err("the central system does not listen".into());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let mut cps = Vec::new();
                for (id, vendor) in [("CP_A", "Alpha"), ("CP_B", "Beta")] {
                    let mut p = ocpp_charge_point(port, id, vendor)?;
                    p.wait_output("UPLINK DONE", WAIT)
                        .await
                        .map_err(|e| format!("charge point {id}: {e}"))?;
                    cps.push((vendor, p));
                }
                until(&s.tb, "both charge points' data", |f| {
                    ["Alpha Sim", "Beta Sim"].iter().all(|d| {
                        has(f, &format!("telemetry \"{d}\" temp "))
                            && has(f, &format!("telemetry \"{d}\" status "))
                            && has(f, &format!("telemetry \"{d}\" power "))
                            && has(f, &format!("attribute \"{d}\" serial "))
                    })
                })
                .await?;
                for (id, method, params) in [
                    (71, "rpc1", json!({"a": 1})),
                    (72, "reset", json!({"type": "Immediate"})),
                    (73, "get", json!("component=OCPPCommCtrlr;variable=HeartbeatInterval")),
                    (
                        74,
                        "set",
                        json!("component=OCPPCommCtrlr;variable=HeartbeatInterval;value=30"),
                    ),
                ] {
                    rpc_lenient(&s, "Alpha Sim", id, method, params, 15).await?;
                }
                s.tb.send_attribute_update("Beta Sim", json!({"shared": 42}))
                    .await
                    .map_err(|e| e.to_string())?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
                while tokio::time::Instant::now() < deadline
                    && !cps[1].1.log().contains("GOT DataTransfer")
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                for (vendor, p) in &cps {
                    for f in ocpp_seen(vendor, &p.log()) {
                        s.note(f);
                    }
                }
                if let Ok(mut k) = keep.lock() {
                    k.extend(cps.into_iter().map(|(_, p)| p));
                }
                Ok(())
            }
        },
    )
    .await;
    drop(peers);
}

// ---------------------------------------------------------------------------------------------
// ODBC

fn odbc_json(db: &Path) -> Value {
    json!({
        "connection": {
            "str": format!("Driver=SQLite3;Database={}", db.display()),
            "attributes": {"autocommit": true, "timeout": 0},
            "reconnect": true, "reconnectPeriod": 1
        },
        "polling": {
            "query": "SELECT id, dev, temp, n, note, ts FROM t WHERE id > ? ORDER BY id",
            "period": 1,
            "iterator": {"column": "id", "query": "SELECT MIN(id) - 1 FROM t", "persistent": false}
        },
        "mapping": {
            // Upstream evaluates `type` as Python too: a bare word would be a NameError.
            "device": {"name": "'ODBC ' + dev", "type": "'meters'"},
            "attributes": [{"name": "note", "column": "note"}],
            "timeseries": [
                {"name": "temp", "column": "temp"},
                {"nameExpression": "'twice_' + dev", "value": "n * 2"},
                {"name": "label", "value": "str(n) + '/' + dev.upper()"},
                {"name": "first", "value": "[i for i in [temp, n] if i is not None][0]"}
            ]
        },
        "serverSideRpc": {
            "enableUnknownRpc": false,
            "overrideRpcConfig": true,
            "methods": [
                {"name": "setNote", "query": "UPDATE t SET note = ? WHERE id = ?", "args": ["x", 1]},
                {"name": "count", "query": "SELECT COUNT(*) AS c, MAX(id) AS m FROM t", "result": true}
            ]
        }
    })
}

/// Runs SQL on a SQLite file with Python's sqlite3 (the peers' Python).
fn sqlite(db: &Path, sql: &str) -> Result<(), String> {
    let out = std::process::Command::new(tbgw::test_util::peers_python())
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sqlite3 {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn odbc_rows(from: i64, to: i64) -> String {
    let rows: Vec<String> = (from..=to)
        .map(|i| {
            let temp = if i % 5 == 0 {
                "NULL".to_string()
            } else {
                format!("{i}.5")
            };
            let dev = if i % 2 == 0 { "a" } else { "b" };
            // One second apart: rows of one device without their own time stamps would share
            // one, and ThingsBoard keeps one value per key and time stamp.
            let ts = 1_700_000_000_000_i64 + i * 1000;
            // The note (an attribute) is the same for every row of a device: ThingsBoard keeps
            // only the latest attribute value, and which intermediate values reach it depends
            // on how a gateway packs rows into publishes (upstream under load: sometimes one
            // row alone, sometimes several merged).
            format!("({i}, '{dev}', {temp}, {i}, 'note of {dev}', {ts})")
        })
        .collect();
    format!(
        "INSERT INTO t (id, dev, temp, n, note, ts) VALUES {};",
        rows.join(", ")
    )
}

fn odbc_row_query(db: &Path, sql: &str) -> String {
    std::process::Command::new(tbgw::test_util::peers_python())
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall())",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn odbc_connector_matches_upstream() {
    // A SQLite file per side (the RPCs write), through unixODBC's SQLite3 driver
    // (libsqliteodbc) for both gateways.
    let dir = TempDir::new().expect("tempdir");
    let db_of = {
        let up = dir.path().join("up.db");
        let ours = dir.path().join("ours.db");
        move |which: Impl| match which {
            Impl::Upstream => up.clone(),
            Impl::Tbgw => ours.clone(),
        }
    };
    for which in [Impl::Upstream, Impl::Tbgw] {
        // BIGINT: libsqliteodbc reports INTEGER as 32-bit.
        sqlite(
            &db_of(which),
            &format!(
                "CREATE TABLE t (id BIGINT PRIMARY KEY, dev VARCHAR(16), temp DOUBLE, n BIGINT, note VARCHAR(64), ts BIGINT); {}",
                odbc_rows(1, 5)
            ),
        )
        .expect("the SQLite database is written");
    }
    let connectors = json!([{"type": "odbc", "name": "ODBC", "configuration": "odbc.json"}]);
    let files_db = db_of.clone();
    differential(
        connectors,
        move |_, _, which| vec![("odbc.json", odbc_json(&files_db(which)))],
        &[],
        &[
            // A NULL column: upstream sends `null`, tbgw skips the value (and counts it).
            ("telemetry \"ODBC b\" temp null", ""),
            // Reserved `get`/`set`: upstream answers twice, the second time `{"success":
            // false}` (its generic handler's `finally` runs after the reserved branch returns).
            ("rpc reply \"ODBC a\" 83 {\"success\":false}", ""),
            // An unknown method: upstream answers `{"success": false}`, tbgw an RPC error.
            (
                "rpc reply \"ODBC a\" 84 {\"success\":false}",
                "rpc reply \"ODBC a\" 84 {\"code\":404,\"error\":\"unknown RPC method \\\"nope\\\"\"}",
            ),
        ],
        move |s: Arc<Side>| {
            let db = db_of(s.which);
            async move {
                until(&s.tb, "rows 1 to 5", |f| {
                    has(f, "telemetry \"ODBC b\" label \"5/B\"")
                })
                .await?;
                // Rows written while the gateway runs.
                sqlite(&db, &odbc_rows(6, 8))?;
                until(&s.tb, "rows 6 to 8", |f| {
                    has(f, "telemetry \"ODBC a\" label \"8/A\"")
                })
                .await?;
                // All RPCs in one burst: the stand-in's broker echoes the gateway's replies on
                // v1/gateway/rpc, and upstream's RPC thread dies on the first echo (a request
                // without `data.method`), so later requests would never be answered.
                for (id, method, params) in [
                    (81, "setNote", json!({"args": ["changed", 2]})),
                    (82, "count", json!({})),
                    (83, "get", json!("query=SELECT note FROM t WHERE id > 7;with_result=true")),
                    (84, "nope", json!({})),
                ] {
                    s.tb.send_rpc("ODBC a", id, method, params)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                for id in [81, 82, 83, 84] {
                    let want = format!("rpc reply \"ODBC a\" {id} ");
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while tokio::time::Instant::now() < deadline && !has(&facts(&s.tb), &want) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                s.note(format!(
                    "notes after the RPCs: {}",
                    odbc_row_query(&db, "SELECT id, note FROM t WHERE id <= 2 ORDER BY id")
                ));
                Ok(())
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// XMPP

fn xmpp_json(port: u16) -> Value {
    json!({
        "server": {"jid": "gw@localhost", "password": "gwpass", "host": "127.0.0.1", "port": port,
                   "use_ssl": false, "disable_starttls": true, "force_starttls": false,
                   "unencrypted_plain_auth": true, "timeout": 10000},
        "devices": [{
            "jid": "dev1@localhost/TMP_1101",
            "deviceNameExpression": "${serialNumber}",
            "deviceTypeExpression": "thermo",
            "attributes": [{"key": "temperature", "value": "${temp}"}],
            "timeseries": [{"key": "humidity", "value": "${hum}"}],
            "attributeUpdates": [
                {"attributeOnThingsBoard": "shared", "valueExpression": "{\"${attributeKey}\":\"${attributeValue}\"}"}
            ],
            "serverSideRpc": [
                {"methodRPC": "rpc1", "withResponse": false, "valueExpression": "${params}"},
                {"methodRPC": "rpc2", "withResponse": true, "valueExpression": "{\"ask\": ${params.q}}"}
            ]
        }, {
            // Text bodies read with slices (upstream's text converter).
            "jid": "dev2@localhost/TXT",
            "deviceNameExpression": "[0:4]",
            "deviceTypeExpression": "text",
            "timeseries": [{"key": "temp", "value": "[4:]"}]
        }]
    })
}

/// A Prosody of its own per gateway (each logs in as `gw`), with the device's account.
async fn xmpp_server() -> tbgw::test_util::Prosody {
    tbgw::test_util::Prosody::start(&[("gw", "gwpass"), ("dev1", "dev1pass"), ("dev2", "dev2pass")])
        .await
        .expect("prosody starts (apt-get install -y prosody)")
}

#[tokio::test]
async fn xmpp_connector_matches_upstream() {
    let (up_server, our_server) = tokio::join!(xmpp_server(), xmpp_server());
    let (up_port, our_port) = (up_server.port(), our_server.port());
    let port_of = move |which: Impl| match which {
        Impl::Upstream => up_port,
        Impl::Tbgw => our_port,
    };
    let peers: Arc<Mutex<Vec<tbgw::test_util::PythonPeer>>> = Arc::default();
    let keep = peers.clone();
    let connectors = json!([{"type": "xmpp", "name": "XMPP", "configuration": "xmpp.json"}]);
    differential(
        connectors,
        move |_, _, which| vec![("xmpp.json", xmpp_json(port_of(which)))],
        &[],
        &[
            // Upstream sends every value as Python's `str()`; tbgw keeps the JSON types.
            ("temperature \"21.5\"", "temperature 21.5"),
            ("humidity \"40\"", "humidity 40"),
            // A one-way RPC: upstream never answers it; tbgw answers once it is sent.
            ("", "rpc reply \"SN-1\" 91 {\"success\":true}"),
            // A two-way RPC: upstream answers at once without reading the device's answer;
            // tbgw answers with it.
            (
                "rpc reply \"SN-1\" 92 {\"success\":true}",
                "rpc reply \"SN-1\" 92 {\"result\":{\"ok\":true}}",
            ),
            // The attribute-update keys synced on connect (upstream's XMPP connector has no
            // `get_device_shared_attributes_keys`, so upstream requests nothing).
            ("", "attribute request \"SN-1\" client=false [\"shared\"]"),
            ("", "attribute request \"AB12\" client=false [\"shared\"]"),
        ],
        move |s: Arc<Side>| {
            let keep = keep.clone();
            async move {
                let opts = json!({
                    "jid": "dev1@localhost/TMP_1101", "password": "dev1pass",
                    "host": "127.0.0.1", "port": port_of(s.which), "to": "gw@localhost",
                    "bodies": [r#"{"serialNumber": "SN-1", "temp": 21.5, "hum": 40}"#],
                    "answer": r#"{"ok": true}"#
                });
                let script: String = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../tbgw-connectors/tests/peers/xmpp_device.py"
                )
                .into();
                let mut dev =
                    tbgw::test_util::PythonPeer::spawn([script.clone(), opts.to_string()])
                        .map_err(|e| {
                            format!("the XMPP device starts (pip install slixmpp==1.8.6): {e}")
                        })?;
                dev.wait_output("ONLINE", WAIT)
                    .await
                    .map_err(|e| format!("XMPP device: {e}"))?;
                let text_opts = json!({
                    "jid": "dev2@localhost/TXT", "password": "dev2pass",
                    "host": "127.0.0.1", "port": port_of(s.which), "to": "gw@localhost",
                    "bodies": ["AB1221.5"]
                });
                let mut text_dev =
                    tbgw::test_util::PythonPeer::spawn([script, text_opts.to_string()])
                        .map_err(|e| format!("the XMPP text device starts: {e}"))?;
                text_dev
                    .wait_output("ONLINE", WAIT)
                    .await
                    .map_err(|e| format!("XMPP text device: {e}"))?;
                until(&s.tb, "the devices' data", |f| {
                    has(f, "telemetry \"SN-1\" humidity ")
                        && has(f, "attribute \"SN-1\" temperature ")
                        && has(f, "telemetry \"AB12\" temp ")
                })
                .await?;
                s.tb.send_attribute_update("SN-1", json!({"shared": "on"}))
                    .await
                    .map_err(|e| e.to_string())?;
                // RPCs one at a time: upstream's RPC thread may die on the stand-in's echo of a
                // reply, so the two-way one (answered) goes last.
                rpc_lenient(&s, "SN-1", 91, "rpc1", json!({"a": 1}), 10).await?;
                rpc_lenient(&s, "SN-1", 92, "rpc2", json!({"q": "temp"}), 10).await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while tokio::time::Instant::now() < deadline
                    && dev.log().matches("GOT ").count() < 3
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                for line in dev.log().lines() {
                    if let Some(body) = line.strip_prefix("GOT ") {
                        let body = serde_json::from_str::<Value>(body)
                            .map(|v| v.to_string())
                            .unwrap_or_else(|_| body.to_string());
                        s.note(format!("xmpp device got {body}"));
                    }
                }
                if let Ok(mut k) = keep.lock() {
                    k.push(dev);
                    k.push(text_dev);
                }
                Ok(())
            }
        },
    )
    .await;
    drop(peers);
    drop((up_server, our_server));
}
