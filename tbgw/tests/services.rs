//! Gateway services against mosquitto and the ThingsBoard stand-in, through a configuration
//! directory in upstream's format: service RPCs, renaming and deletion, device filtering,
//! statistics and Prometheus, inactivity, shared-attribute sync, hot reload and remote
//! configuration with a broken configuration that must roll back, remote logging, restart.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tbgw::config::ConfigError;
use tbgw::connector::{
    Connector, ConnectorContext, ConnectorError, ConnectorFactory, ConnectorSpec,
};
use tbgw::downlink::Downlink;
use tbgw::model::{now_millis, DeviceData, Value};
use tbgw::service::remote_log::{remote_logging, RemoteLogHandle};
use tbgw::test_util::{free_tcp_port, Mosquitto, TbStandIn};
use tbgw::Gateway;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(15);

/// Config of the test connector: which devices it reports, a tag sent with every reading (to
/// see which configuration runs), devices reported only once, and a connector that fails.
#[derive(Debug, Clone, Deserialize)]
struct TestConfig {
    devices: Vec<String>,
    #[serde(default)]
    once: Vec<String>,
    tag: String,
    #[serde(default)]
    fail: bool,
    #[serde(default)]
    sync_keys: Vec<String>,
}

struct TestConnector(TestConfig);

#[async_trait]
impl Connector for TestConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        if self.0.fail {
            return Err(ConnectorError::Other("configured to fail".into()));
        }
        for d in &self.0.once {
            let mut data = DeviceData::new(d.clone(), "tester");
            data.push_telemetry(now_millis(), "tag", Value::from(self.0.tag.clone()));
            cx.uplink()
                .send(data)
                .await
                .map_err(|_| ConnectorError::Closed)?;
        }
        let cancel = cx.cancellation().clone();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    cx.stats().add_messages_received(1);
                    for d in &self.0.devices {
                        let mut data = DeviceData::new(d.clone(), "tester");
                        data.push_telemetry(now_millis(), "tag", Value::from(self.0.tag.clone()));
                        cx.uplink().send(data).await.map_err(|_| ConnectorError::Closed)?;
                    }
                }
                dl = cx.recv_downlink() => match dl {
                    Some(Downlink::Rpc(rpc)) => rpc.responder.ok(json!({"device": rpc.device, "method": rpc.method})),
                    Some(Downlink::AttributeUpdate(u)) => {
                        // Reported back as telemetry so the test sees it.
                        let mut data = DeviceData::new(u.device.clone(), "tester");
                        data.push_telemetry(now_millis(), "synced", Value::Json(Json::Object(u.values)));
                        cx.uplink().send(data).await.map_err(|_| ConnectorError::Closed)?;
                    }
                    Some(_) => {}
                    None => return Ok(()),
                },
            }
        }
    }

    fn shared_attribute_keys(&self) -> Vec<String> {
        self.0.sync_keys.clone()
    }
}

struct TestFactory;

impl ConnectorFactory for TestFactory {
    fn connector_type(&self) -> &'static str {
        "test"
    }
    fn build(
        &self,
        spec: &ConnectorSpec,
        _ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: TestConfig = serde_json::from_value(spec.config.clone().into_value())
            .map_err(|e| ConfigError::new(&spec.file, "", e.to_string()))?;
        Ok(Box::new(TestConnector(cfg)))
    }
}

struct Running {
    _broker: Mosquitto,
    tb: TbStandIn,
    dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    gateway: tokio::task::JoinHandle<tbgw::ShutdownReport>,
    stats: std::sync::Arc<tbgw::stats::GatewayStats>,
}

impl Running {
    async fn rpc(&self, id: u64, method: &str, params: Json) -> Json {
        self.tb.send_gateway_rpc(id, method, params).await.unwrap();
        let topic = format!("v1/devices/me/rpc/response/{id}");
        self.tb
            .wait_for(WAIT, |m| m.topic == topic)
            .await
            .unwrap_or_else(|| panic!("no reply to {method}"))
            .json
            .unwrap_or(Json::Null)
    }

    /// Waits for telemetry of `device` with `tag` received after `since`.
    async fn telemetry(&self, device: &str, tag: &str, since: std::time::Instant) -> bool {
        self.tb
            .wait_for(WAIT, |m| {
                m.topic == "v1/gateway/telemetry"
                    && m.received_at >= since
                    && m.json
                        .as_ref()
                        .and_then(|j| j.get(device))
                        .is_some_and(|e| {
                            e.as_array()
                                .is_some_and(|a| a.iter().any(|x| x["values"]["tag"] == json!(tag)))
                        })
            })
            .await
            .is_some()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write_json(path: &Path, v: &Json) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

async fn start(thingsboard: Json, connector: Json, remote_log: Option<RemoteLogHandle>) -> Running {
    start_with(thingsboard, connector, remote_log, &[]).await
}

async fn start_with(
    thingsboard: Json,
    connector: Json,
    remote_log: Option<RemoteLogHandle>,
    files: &[(&str, Json)],
) -> Running {
    let broker = Mosquitto::start().await.expect("mosquitto starts");
    let tb = TbStandIn::connect(broker.port()).await.expect("stand-in");
    let dir = TempDir::new().unwrap();
    let mut tbc = json!({
        "host": "127.0.0.1",
        "port": broker.port(),
        "security": {"type": "accessToken", "accessToken": "gw"},
        "sessionLimitsTimeoutMs": 500,
    });
    for (k, v) in thingsboard.as_object().unwrap() {
        tbc[k] = v.clone();
    }
    write_json(
        &dir.path().join("tb_gateway.json"),
        &json!({
            "thingsboard": tbc,
            "storage": {"type": "memory"},
            "connectors": [{"type": "test", "name": "Test", "configuration": "test.json"}],
        }),
    );
    write_json(&dir.path().join("test.json"), &connector);
    for (name, v) in files {
        write_json(&dir.path().join(name), v);
    }
    let loaded = tbgw::config::load(&dir.path().join("tb_gateway.json"))
        .unwrap_or_else(|e| panic!("config loads: {e}"));
    let mut b = Gateway::builder()
        .factory(Box::new(TestFactory))
        .config(loaded);
    if let Some(h) = remote_log {
        b = b.remote_logging(h);
    }
    let gateway = b.build().expect("gateway builds");
    let stats = gateway.stats();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let gateway = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    Running {
        _broker: broker,
        tb,
        dir,
        stop: Some(stop),
        gateway,
        stats,
    }
}

async fn http_get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics endpoint");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn service_rpcs_renaming_deletion_filtering_statistics_and_prometheus() {
    let metrics_port = free_tcp_port();
    let mut r = start_with(
        json!({
            "statistics": {"enable": true, "statsSendPeriodInSeconds": 1,
                           "prometheusAddress": format!("127.0.0.1:{metrics_port}")},
            "deviceFiltering": {"enable": true, "filterFile": "list.json"},
        }),
        json!({"devices": ["d1", "secret-1"], "tag": "t"}),
        None,
        &[("list.json", json!({"deny": {"Test": ["secret-.*"]}}))],
    )
    .await;
    let stats = r.stats.clone();
    let t0 = std::time::Instant::now();
    assert!(r.telemetry("d1", "t", t0).await, "d1 data arrives");

    // Filtering: the denied device never reaches ThingsBoard.
    assert!(stats.devices_filtered() > 0);
    assert!(r
        .tb
        .messages_on("v1/gateway/#")
        .iter()
        .all(|m| !m.text().contains("secret-1")));

    // Service RPCs.
    let devices = r.rpc(1, "gateway_devices", json!({})).await;
    assert_eq!(devices, json!({"code": 200, "resp": {"d1": "Test"}}));
    let version = r.rpc(2, "gateway_version", json!({})).await;
    assert_eq!(
        version["resp"]["current_version"],
        json!(env!("CARGO_PKG_VERSION"))
    );
    // gateway_stats as upstream replies it: flat, per connector what it received and sent.
    let st = r.rpc(3, "gateway_stats", json!({})).await;
    assert!(st.get("code").is_none() && st.get("resp").is_none(), "{st}");
    assert!(st["TestEventsProduced"].as_u64().unwrap() > 0, "{st}");
    assert!(st["TestEventsSent"].as_u64().unwrap() > 0, "{st}");
    assert!(st["eventsSent"].as_u64().unwrap() >= st["TestEventsSent"].as_u64().unwrap());
    let reboot = r.rpc(4, "gateway_reboot", json!({})).await;
    assert_eq!(
        reboot["code"],
        json!(403),
        "reboot is off unless allowed: {reboot}"
    );
    let shell = r
        .rpc(5, "gateway_sendCommand", json!({"command": "echo hi"}))
        .await;
    assert_eq!(
        shell["code"],
        json!(404),
        "remote shell is off by default: {shell}"
    );

    // Renaming: data goes out under the new name, RPCs to the new name reach the connector
    // under the original one, and the reply carries the new name.
    let renamed = r
        .rpc(6, "gateway_device_renamed", json!({"d1": "d1-new"}))
        .await;
    assert_eq!(renamed, json!({"success": true}));
    let t1 = std::time::Instant::now();
    assert!(
        r.telemetry("d1-new", "t", t1).await,
        "data under the new name"
    );
    r.tb.send_rpc("d1-new", 77, "hello", json!({}))
        .await
        .unwrap();
    let reply =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/gateway/rpc" && m.json.as_ref().is_some_and(|j| j["id"] == json!(77))
        })
        .await
        .expect("rpc reply");
    let reply = reply.json.unwrap();
    assert_eq!(reply["device"], json!("d1-new"));
    assert_eq!(reply["data"]["result"]["device"], json!("d1"), "{reply}");
    let reg = std::fs::read_to_string(r.path("connected_devices.json")).unwrap();
    assert!(reg.contains("d1-new"), "rename persisted: {reg}");

    // Deletion: forgotten, announced again under its own name with its next data.
    let deleted = r.rpc(8, "gateway_device_deleted", json!("d1-new")).await;
    assert_eq!(deleted, json!({"success": true}));
    let t2 = std::time::Instant::now();
    assert!(
        r.telemetry("d1", "t", t2).await,
        "data under the original name again"
    );
    assert!(r
        .tb
        .wait_for(WAIT, |m| m.topic == "v1/gateway/connect"
            && m.received_at >= t2
            && m.json.as_ref().is_some_and(|j| j["device"] == json!("d1")))
        .await
        .is_some());

    // Statistics telemetry and machine attributes of the gateway device.
    let s =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/devices/me/telemetry"
                && m.json
                    .as_ref()
                    .is_some_and(|j| j.get("machineStats").is_some())
        })
        .await
        .expect("statistics telemetry");
    let s = s.json.unwrap();
    // Upstream's keys and units: percentages, "71.1G"-style strings, psutil's memory info;
    // exact bytes under keys of our own.
    let m = &s["machineStats"];
    let pct = |v: &Json| v.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p));
    assert!(
        pct(&m["gwMemory"]) && pct(&m["freeMemory"]) && pct(&m["diskUsage"]),
        "{m}"
    );
    assert!(m["gwMemory"].as_f64().unwrap() < 100.0, "{m}");
    let human = |v: &Json| {
        v.as_str()
            .is_some_and(|t| t.ends_with(['B', 'K', 'M', 'G', 'T', 'P']) && t.contains('.'))
    };
    assert!(human(&m["freeDisk"]), "{m}");
    assert!(m["gwMemoryBytes"].as_u64().unwrap() > 100_000, "{m}");
    assert!(m["freeDiskBytes"].as_u64().is_some(), "{m}");
    assert!(
        m["gwProcessMemoryFullInfo"]["rss"].as_u64().unwrap() > 0,
        "{m}"
    );
    assert!(
        s["serviceStats"]["platformTsProduced"].as_u64().is_some(),
        "{s}"
    );
    assert!(
        s["serviceStats"]["platformAttrProduced"].as_u64().is_some(),
        "{s}"
    );
    let c = &s["connectorsStats"]["Test"];
    for k in [
        "connectorBytesReceived",
        "convertersTsProduced",
        "convertersAttrProduced",
        "convertersMsgProcessed",
        "convertersMsgDropped",
    ] {
        assert!(c[k].as_u64().is_some(), "{k}: {s}");
    }
    // Upstream's place for the converter counters: `<connector>_converter`.
    for k in [
        "convertersTsProduced",
        "convertersAttrProduced",
        "convertersMsgProcessed",
        "convertersMsgDropped",
    ] {
        assert!(
            s["connectorsStats"]["Test_converter"][k].as_u64().is_some(),
            "{k}: {s}"
        );
    }
    assert_eq!(
        s["connectorsStats"]["Test"]["devicesConnected"],
        json!(1),
        "{s}"
    );
    assert_eq!(
        s["serviceStats"]["thingsboardConnected"],
        json!(true),
        "{s}"
    );
    let attrs =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/devices/me/attributes"
                && m.json
                    .as_ref()
                    .is_some_and(|j| j.get("totalMemory").is_some())
        })
        .await
        .expect("machine attributes")
        .json
        .unwrap();
    assert!(
        human(&attrs["totalMemory"]) && human(&attrs["totalDisk"]),
        "{attrs}"
    );
    assert!(
        attrs["totalMemoryBytes"].as_u64().unwrap() > 1_000_000,
        "{attrs}"
    );

    // Prometheus.
    let body = http_get(metrics_port, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("tbgw_stored_total "), "{body}");
    assert!(body.contains("tbgw_thingsboard_connected 1"), "{body}");
    assert!(body.contains("tbgw_connector_messages_received_total{connector=\"Test\"}"));
    assert!(http_get(metrics_port, "/other")
        .await
        .starts_with("HTTP/1.1 404"));

    let _ = r.stop.take().map(|s| s.send(()));
    let report = (&mut r.gateway).await.unwrap();
    assert!(report.clean && !report.restart_requested, "{report:?}");
}

#[tokio::test]
async fn hot_reload_and_remote_configuration_roll_back_broken_configurations() {
    let mut r = start(
        json!({"remoteConfiguration": true, "checkConnectorsConfigurationInSeconds": 1}),
        json!({"devices": ["d1"], "tag": "v1"}),
        None,
    )
    .await;
    let t0 = std::time::Instant::now();
    assert!(r.telemetry("d1", "v1", t0).await);
    // The running configuration is reported as client attributes.
    let reported =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/devices/me/attributes"
                && m.json
                    .as_ref()
                    .is_some_and(|j| j.get("active_connectors").is_some())
        })
        .await
        .expect("reported configuration")
        .json
        .unwrap();
    assert_eq!(reported["active_connectors"], json!(["Test"]));
    assert_eq!(reported["Test"]["configurationJson"]["tag"], json!("v1"));
    assert!(r
        .tb
        .wait_for(WAIT, |m| m
            .topic
            .starts_with("v1/devices/me/attributes/request/"))
        .await
        .is_some());

    // Hot reload: a changed file restarts the connector with the new configuration.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a distinct mtime
    write_json(
        &r.path("test.json"),
        &json!({"devices": ["d1"], "tag": "v2"}),
    );
    let t1 = std::time::Instant::now();
    assert!(r.telemetry("d1", "v2", t1).await, "hot reload applied");

    // A broken file is rejected; the connector keeps running as before.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(r.path("test.json"), "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let t2 = std::time::Instant::now();
    assert!(
        r.telemetry("d1", "v2", t2).await,
        "still v2 after a broken file"
    );

    // Remote configuration: a new connector configuration is applied and written to disk.
    let desired = json!({"Test": {"name": "Test", "type": "test", "configuration": "test.json",
        "configurationJson": {"devices": ["d1"], "tag": "v3"}}});
    r.tb.send_gateway_attributes(desired).await.unwrap();
    let t3 = std::time::Instant::now();
    assert!(
        r.telemetry("d1", "v3", t3).await,
        "remote configuration applied"
    );
    // Once it survived probation it is saved and echoed.
    assert!(r
        .tb
        .wait_for(WAIT, |m| m.topic == "v1/devices/me/attributes"
            && m.received_at >= t3
            && m.json
                .as_ref()
                .is_some_and(
                    |j| j["Test"]["configurationJson"]["tag"] == json!("v3")
                ))
        .await
        .is_some());
    let on_disk: Json =
        serde_json::from_str(&std::fs::read_to_string(r.path("test.json")).unwrap()).unwrap();
    assert_eq!(on_disk["tag"], json!("v3"));
    assert!(
        r.path("backup").read_dir().unwrap().count() >= 1,
        "backup kept"
    );

    // A configuration whose connector fails is rolled back: v3 keeps running, the file is
    // untouched, and the error is reported.
    let broken = json!({"Test": {"name": "Test", "type": "test",
        "configurationJson": {"devices": ["d1"], "tag": "v4", "fail": true}}});
    r.tb.send_gateway_attributes(broken).await.unwrap();
    let err =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/devices/me/attributes"
                && m.json
                    .as_ref()
                    .is_some_and(|j| j.get("remoteConfigurationError").is_some())
        })
        .await
        .expect("error reported");
    assert!(err.text().contains("failed"), "{}", err.text());
    let t4 = std::time::Instant::now();
    assert!(r.telemetry("d1", "v3", t4).await, "rolled back to v3");
    let on_disk: Json =
        serde_json::from_str(&std::fs::read_to_string(r.path("test.json")).unwrap()).unwrap();
    assert_eq!(
        on_disk["tag"],
        json!("v3"),
        "a failed configuration is not saved"
    );

    // A configuration that does not validate is rejected before anything stops.
    let invalid = json!({"Test": {"name": "Test", "type": "test",
        "configurationJson": {"devices": 5, "tag": "v5"}}});
    let t_invalid = std::time::Instant::now();
    r.tb.send_gateway_attributes(invalid).await.unwrap();
    let rejected =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/devices/me/attributes"
                && m.received_at >= t_invalid
                && m.json.as_ref().is_some_and(|j| {
                    j["remoteConfigurationError"]
                        .as_str()
                        .is_some_and(|e| e.contains("invalid type"))
                })
        })
        .await;
    assert!(rejected.is_some(), "validation error reported");
    let t_after = std::time::Instant::now();
    assert!(r.telemetry("d1", "v3", t_after).await, "v3 still runs");

    // active_connectors: stop (its device is disconnected), then start again.
    r.tb.send_gateway_attributes(json!({"active_connectors": []}))
        .await
        .unwrap();
    assert!(r
        .tb
        .wait_for(WAIT, |m| m.topic == "v1/gateway/disconnect"
            && m.json.as_ref().is_some_and(|j| j["device"] == json!("d1")))
        .await
        .is_some());
    r.tb.send_gateway_attributes(json!({"active_connectors": ["Test"]}))
        .await
        .unwrap();
    let t5 = std::time::Instant::now();
    assert!(r.telemetry("d1", "v3", t5).await, "started again");

    let _ = r.stop.take().map(|s| s.send(()));
    let report = (&mut r.gateway).await.unwrap();
    assert!(report.clean, "{report:?}");
}

#[tokio::test]
async fn inactivity_disconnects_idle_devices_only_and_shared_attributes_sync_on_connect() {
    let mut r = start(
        json!({"checkingDeviceActivity": {"checkDeviceInactivity": true,
            "inactivityTimeoutSeconds": 2, "inactivityCheckPeriodSeconds": 1}}),
        json!({"devices": ["busy"], "once": ["quiet"], "tag": "t", "sync_keys": ["target"]}),
        None,
    )
    .await;
    // The stand-in answers device attribute requests like ThingsBoard.
    r.tb.set_responder(|m| {
        if m.topic != "v1/gateway/attributes/request" {
            return Vec::new();
        }
        let Some(j) = &m.json else { return Vec::new() };
        let body = json!({"id": j["id"], "device": j["device"], "values": {"target": 42}});
        vec![(
            "v1/gateway/attributes/response".to_string(),
            body.to_string().into(),
        )]
    });
    let t0 = std::time::Instant::now();
    assert!(r.telemetry("busy", "t", t0).await);
    let gone =
        r.tb.wait_for(WAIT, |m| m.topic == "v1/gateway/disconnect")
            .await
            .expect("an idle device is disconnected");
    assert_eq!(gone.json.unwrap()["device"], json!("quiet"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        r.tb.messages_on("v1/gateway/disconnect")
            .iter()
            .all(|m| !m.text().contains("busy")),
        "a device that keeps sending is never disconnected"
    );
    // Shared attributes requested when `busy` connected were handed to the connector.
    let synced =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/gateway/telemetry" && m.text().contains("synced")
        })
        .await
        .expect("shared attributes synced on connect");
    assert!(synced.text().contains("42"), "{}", synced.text());
    let _ = r.stop.take().map(|s| s.send(()));
    let _ = (&mut r.gateway).await.unwrap();
}

static REMOTE_LOG: OnceLock<RemoteLogHandle> = OnceLock::new();

fn remote_log_handle() -> RemoteLogHandle {
    REMOTE_LOG
        .get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let (layer, handle) = remote_logging();
            let _ =
                tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
            handle
        })
        .clone()
}

#[tokio::test]
async fn remote_logging_level_shell_and_restart() {
    let handle = remote_log_handle();
    let mut r = start(
        json!({"remoteShell": true}),
        json!({"devices": ["d1"], "tag": "t"}),
        Some(handle.clone()),
    )
    .await;
    let t0 = std::time::Instant::now();
    assert!(r.telemetry("d1", "t", t0).await);
    // Off until ThingsBoard sets a level.
    assert!(r
        .tb
        .messages_on("v1/devices/me/telemetry")
        .iter()
        .all(|m| !m.text().contains("LOGS")));
    r.tb.send_gateway_attributes(json!({"RemoteLoggingLevel": "INFO"}))
        .await
        .unwrap();
    let logs =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/devices/me/telemetry" && m.text().contains("LOGS")
        })
        .await
        .expect("log records sent to ThingsBoard");
    assert!(
        logs.text().contains("Remote logging level set"),
        "{}",
        logs.text()
    );
    assert_eq!(handle.level(), "INFO");

    // Remote shell, explicitly enabled here.
    let ok = r
        .rpc(
            1,
            "gateway_sendCommand",
            json!({"command": "echo remote-shell-works"}),
        )
        .await;
    assert_eq!(ok["ok"], json!(true), "{ok}");
    let mut out = String::new();
    for i in 0..50 {
        let st = r.rpc(100 + i, "gateway_getCommandStatus", json!({})).await;
        out.push_str(&st["data"].to_string());
        if st["done"] == json!(true) && out.contains("remote-shell-works") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(out.contains("remote-shell-works"), "{out}");
    handle.set_level("NONE");

    // A delay that does not fit a timer is refused with a reason (it used to be accepted and
    // panic the timer task, so no restart ever came); the gateway goes on.
    for (id, bad) in [(3, json!(1e20)), (4, json!("NaN")), (5, json!("inf"))] {
        let rs = r.rpc(id, "gateway_restart", bad.clone()).await;
        assert_eq!(rs["code"], json!(400), "{bad}: {rs}");
        assert!(
            rs["error"].as_str().unwrap().contains("number of seconds"),
            "{rs}"
        );
    }
    let t1 = std::time::Instant::now();
    assert!(r.telemetry("d1", "t", t1).await, "still running");

    // Restart: the gateway stops and says a restart was asked for.
    let rs = r.rpc(2, "gateway_restart", json!(0)).await;
    assert_eq!(rs, json!({"success": true}));
    let report = tokio::time::timeout(WAIT, &mut r.gateway)
        .await
        .expect("stops for the restart")
        .unwrap();
    assert!(report.restart_requested, "{report:?}");
}

#[tokio::test]
async fn remote_general_configuration_applies_or_rolls_back_and_storage_change_restarts() {
    let mut r = start(
        json!({"remoteConfiguration": true, "remoteConfigurationTrialSeconds": 2}),
        json!({"devices": ["d1"], "tag": "t"}),
        None,
    )
    .await;
    let t0 = std::time::Instant::now();
    assert!(r.telemetry("d1", "t", t0).await);
    let main = |r: &Running| -> Json {
        serde_json::from_str(&std::fs::read_to_string(r.path("tb_gateway.json")).unwrap()).unwrap()
    };
    let current = main(&r)["thingsboard"].clone();

    // New settings that cannot connect (nothing listens on that port): tried for 2 s, then
    // the old ones are restored, the file is untouched and the error is reported.
    let mut bad = current.clone();
    bad["port"] = json!(free_tcp_port());
    let t1 = std::time::Instant::now();
    r.tb.send_gateway_attributes(json!({"general_configuration": bad}))
        .await
        .unwrap();
    let err =
        r.tb.wait_for(Duration::from_secs(30), |m| {
            m.topic == "v1/devices/me/attributes"
                && m.received_at >= t1
                && m.json.as_ref().is_some_and(|j| {
                    j["remoteConfigurationError"]
                        .as_str()
                        .is_some_and(|e| e.contains("general_configuration"))
                })
        })
        .await;
    assert!(err.is_some(), "rollback reported");
    assert_eq!(main(&r)["thingsboard"], current, "file untouched");
    let t2 = std::time::Instant::now();
    assert!(
        r.telemetry("d1", "t", t2).await,
        "data flows with the old settings"
    );

    // Settings that work (another client id, statistics on a short period): applied, saved.
    let mut good = current.clone();
    good["security"]["clientId"] = json!("tbgw-remote");
    good["statistics"] = json!({"enable": true, "statsSendPeriodInSeconds": 1});
    let t3 = std::time::Instant::now();
    r.tb.send_gateway_attributes(json!({"general_configuration": good.clone()}))
        .await
        .unwrap();
    let stats =
        r.tb.wait_for(Duration::from_secs(30), |m| {
            m.topic == "v1/devices/me/telemetry"
                && m.received_at >= t3
                && m.json
                    .as_ref()
                    .is_some_and(|j| j.get("machineStats").is_some())
        })
        .await;
    assert!(stats.is_some(), "new statistics settings applied");
    assert_eq!(main(&r)["thingsboard"], good, "saved once it worked");
    assert!(r.path("backup").read_dir().unwrap().count() >= 1);

    // A storage change is saved and applied by a restart.
    let storage = json!({"type": "file", "data_folder_path": "./data/"});
    r.tb.send_gateway_attributes(json!({"storage_configuration": storage.clone()}))
        .await
        .unwrap();
    let report = tokio::time::timeout(WAIT, &mut r.gateway)
        .await
        .expect("restarts")
        .unwrap();
    assert!(report.restart_requested, "{report:?}");
    assert_eq!(main(&r)["storage"], storage);
}

/// Telemetry entries ThingsBoard received for `device`.
fn entries(r: &Running, device: &str) -> Vec<Json> {
    r.tb.messages_on("v1/gateway/telemetry")
        .iter()
        .filter_map(|m| m.json.as_ref()?.get(device)?.as_array().cloned())
        .flatten()
        .collect()
}

#[tokio::test]
async fn report_strategies_from_the_general_and_connector_levels_apply_on_the_data_path() {
    // General ON_CHANGE: a device sending the same value every 100 ms is reported once.
    let r = start(
        json!({"reportStrategy": {"type": "ON_CHANGE"}}),
        json!({"devices": ["d1"], "tag": "same"}),
        None,
    )
    .await;
    let t0 = std::time::Instant::now();
    assert!(r.telemetry("d1", "same", t0).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(entries(&r, "d1").len(), 1, "{:?}", entries(&r, "d1"));
    assert!(r.stats.report_suppressed() >= 5);
    drop(r);

    // Connector level ON_REPORT_PERIOD overrides the general one: the latest value is
    // re-sent every period with the report time.
    let r = start(
        json!({"reportStrategy": {"type": "ON_CHANGE"}}),
        json!({"devices": ["d1"], "tag": "same",
               "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 300}}),
        None,
    )
    .await;
    assert!(r.telemetry("d1", "same", std::time::Instant::now()).await);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let e = entries(&r, "d1");
    assert!(e.len() >= 3, "re-sent every period: {e:?}");
    let ts: Vec<i64> = e.iter().filter_map(|x| x["ts"].as_i64()).collect();
    assert!(
        ts.windows(2).all(|w| w[1] > w[0]),
        "report times advance: {ts:?}"
    );
    assert!(r.stats.report_periodic() >= 3);
}

/// Waits for a gateway client attribute message with `key` after `since` matching `pred`.
async fn reported(
    r: &Running,
    since: std::time::Instant,
    key: &str,
    pred: impl Fn(&Json) -> bool,
) -> Option<Json> {
    r.tb.wait_for(WAIT, |m| {
        m.topic == "v1/devices/me/attributes"
            && m.received_at >= since
            && m.json.as_ref().and_then(|j| j.get(key)).is_some_and(&pred)
    })
    .await
    .and_then(|m| m.json)
    .and_then(|j| j.get(key).cloned())
}

fn main_connector_names(r: &Running) -> Vec<String> {
    let main: Json =
        serde_json::from_str(&std::fs::read_to_string(r.path("tb_gateway.json")).unwrap()).unwrap();
    main["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn connectors_added_renamed_changed_and_removed_from_the_ui_as_upstreams() {
    let t_start = std::time::Instant::now();
    let mut r = start(
        json!({"remoteConfiguration": true}),
        json!({"devices": ["d1"], "tag": "v1", "id": "id-test"}),
        None,
    )
    .await;
    let t0 = std::time::Instant::now();
    assert!(r.telemetry("d1", "v1", t0).await);
    // The running connector is reported in upstream's shape, with a `ts`.
    let test = reported(&r, t_start, "Test", |_| true)
        .await
        .expect("connector reported");
    assert!(test["ts"].as_i64().is_some_and(|t| t > 0), "{test}");
    assert_eq!(test["logLevel"], json!("INFO"));
    assert_eq!(test["id"], json!("id-test"));
    assert_eq!(test["configuration"], json!("test.json"));
    assert_eq!(test["configurationJson"]["tag"], json!("v1"));

    // A change from the UI is applied and reported back with its own ts.
    let ts = now_millis() + 1000;
    let t1 = std::time::Instant::now();
    r.tb.send_gateway_attributes(json!({"Test": {"name": "Test", "type": "test",
        "configuration": "test.json", "logLevel": "DEBUG", "ts": ts,
        "configurationJson": {"devices": ["d1"], "tag": "v2", "id": "id-test"}}}))
        .await
        .unwrap();
    assert!(r.telemetry("d1", "v2", t1).await, "change applied");
    let echo = reported(&r, t1, "Test", |v| {
        v["configurationJson"]["tag"] == json!("v2")
    })
    .await
    .expect("applied change reported");
    assert_eq!(echo["ts"], json!(ts), "{echo}");

    // A connector added from the UI: its attribute and active_connectors naming it.
    let ts_new = now_millis();
    let t2 = std::time::Instant::now();
    r.tb.send_gateway_attributes(json!({
        "Other Conn": {"name": "Other Conn", "type": "test", "logLevel": "INFO", "ts": ts_new,
            "configurationJson": {"devices": ["n1"], "tag": "n", "id": "id-new"}},
        "active_connectors": ["Test", "Other Conn"]
    }))
    .await
    .unwrap();
    assert!(r.telemetry("n1", "n", t2).await, "added connector runs");
    let echo = reported(&r, t2, "Other Conn", |_| true)
        .await
        .expect("added connector reported");
    assert_eq!(echo["ts"], json!(ts_new));
    let active = reported(&r, t2, "active_connectors", |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert!(
        active.is_some(),
        "active_connectors lists the new connector"
    );
    let file: Json =
        serde_json::from_str(&std::fs::read_to_string(r.path("other_conn.json")).unwrap()).unwrap();
    assert_eq!(file["tag"], json!("n"));
    assert_eq!(main_connector_names(&r), vec!["Test", "Other Conn"]);

    // Renamed from the UI: same id, new name.
    let t3 = std::time::Instant::now();
    r.tb.send_gateway_attributes(json!({
        "Renamed": {"name": "Renamed", "type": "test", "configuration": "other_conn.json",
            "ts": now_millis(),
            "configurationJson": {"devices": ["n1"], "tag": "renamed", "id": "id-new"}},
        "active_connectors": ["Test", "Renamed"]
    }))
    .await
    .unwrap();
    assert!(
        r.telemetry("n1", "renamed", t3).await,
        "renamed connector runs"
    );
    let active = reported(&r, t3, "active_connectors", |v| {
        v == &json!(["Test", "Renamed"])
    })
    .await;
    assert!(active.is_some(), "the old name is gone");
    assert_eq!(main_connector_names(&r), vec!["Test", "Renamed"]);

    // Removed from the UI: its devices are disconnected and it leaves the main file.
    r.tb.send_gateway_attributes(json!({"active_connectors": ["Test"]}))
        .await
        .unwrap();
    assert!(r
        .tb
        .wait_for(WAIT, |m| m.topic == "v1/gateway/disconnect"
            && m.json.as_ref().is_some_and(|j| j["device"] == json!("n1")))
        .await
        .is_some());
    assert_eq!(main_connector_names(&r), vec!["Test"]);

    let _ = r.stop.take().map(|s| s.send(()));
    let report = (&mut r.gateway).await.unwrap();
    assert!(report.clean, "{report:?}");
}

#[tokio::test]
async fn first_statistics_are_sent_once_connected_not_after_a_period() {
    // Upstream sends its first statistics at start, then every period.
    let mut r = start(
        json!({"statistics": {"enable": true, "statsSendPeriodInSeconds": 3600}}),
        json!({"devices": ["d1"], "tag": "t"}),
        None,
    )
    .await;
    let stats =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/devices/me/telemetry"
                && m.json
                    .as_ref()
                    .is_some_and(|j| j.get("machineStats").is_some())
        })
        .await;
    assert!(
        stats.is_some(),
        "no statistics before the first period ended"
    );
    let _ = r.stop.take().map(|s| s.send(()));
    let _ = (&mut r.gateway).await.unwrap();
}

#[tokio::test]
async fn a_single_shared_attribute_synced_on_connect_reaches_the_connector() {
    // ThingsBoard answers a request for one key with `value`, not `values`.
    let mut r = start(
        json!({}),
        json!({"devices": ["busy"], "tag": "t", "sync_keys": ["target"]}),
        None,
    )
    .await;
    r.tb.set_responder(|m| {
        if m.topic != "v1/gateway/attributes/request" {
            return Vec::new();
        }
        let Some(j) = &m.json else { return Vec::new() };
        let body = json!({"id": j["id"], "device": j["device"], "value": 43});
        vec![(
            "v1/gateway/attributes/response".to_string(),
            body.to_string().into(),
        )]
    });
    let synced =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/gateway/telemetry" && m.text().contains("synced")
        })
        .await
        .expect("a single shared attribute synced on connect");
    assert!(synced.text().contains("43"), "{}", synced.text());
    let _ = r.stop.take().map(|s| s.send(()));
    let _ = (&mut r.gateway).await.unwrap();
}

#[tokio::test]
async fn client_attributes_carry_upstreams_keys_and_an_unchanged_section_is_not_applied() {
    let t_start = std::time::Instant::now();
    let logs = json!({"version": 1, "disable_existing_loggers": false, "formatters": {},
                      "handlers": {}, "root": {"level": "ERROR", "handlers": []}});
    let mut r = start_with(
        json!({"remoteConfiguration": true}),
        json!({"devices": ["d1"], "tag": "t"}),
        Some(remote_log_handle()),
        &[("logs.json", logs.clone())],
    )
    .await;
    assert!(r.telemetry("d1", "t", t_start).await);
    // The connector: an id (none in the file: a UUID, the same at every start), a null
    // configVersion and grpc_key, the id in configurationJson too.
    let test = reported(&r, t_start, "Test", |_| true)
        .await
        .expect("connector reported");
    let id = test["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 36, "{test}");
    assert_eq!(test["configurationJson"]["id"], json!(id));
    assert!(
        test.get("configVersion").is_some_and(Json::is_null),
        "{test}"
    );
    assert!(test.get("grpc_key").is_some_and(Json::is_null), "{test}");
    let file: Json =
        serde_json::from_str(&std::fs::read_to_string(r.path("test.json")).unwrap()).unwrap();
    assert!(file.get("id").is_none(), "the file is not rewritten");
    // The sections, each with a ts; grpc absent from the main file: `{ts}`; logs.json as is.
    let ts_of = |v: &Json| v["ts"].as_i64().unwrap_or(0);
    let general = reported(&r, t_start, "general_configuration", |_| true)
        .await
        .expect("general_configuration");
    assert!(ts_of(&general) > 0, "{general}");
    assert_eq!(general["host"], json!("127.0.0.1"));
    let storage = reported(&r, t_start, "storage_configuration", |_| true)
        .await
        .expect("storage_configuration");
    assert!(ts_of(&storage) > 0, "{storage}");
    assert_eq!(storage["type"], json!("memory"));
    let grpc = reported(&r, t_start, "grpc_configuration", |_| true)
        .await
        .expect("grpc_configuration");
    assert_eq!(grpc, json!({"ts": ts_of(&grpc)}));
    assert!(ts_of(&grpc) > 0);
    let mut got_logs = reported(&r, t_start, "logs_configuration", |_| true)
        .await
        .expect("logs_configuration");
    assert!(ts_of(&got_logs) > 0);
    got_logs.as_object_mut().unwrap().remove("ts");
    assert_eq!(got_logs, logs);
    // Errors logged: in total and per connector, integers.
    let errors =
        r.tb.wait_for(WAIT, |m| {
            m.topic == "v1/devices/me/telemetry"
                && m.json.as_ref().is_some_and(|j| {
                    j["ALL_ERRORS_COUNT"].is_u64() && j["Test_ERRORS_COUNT"].is_u64()
                })
        })
        .await;
    assert!(errors.is_some(), "ERRORS_COUNT telemetry");

    // ThingsBoard sends back what was reported, with its ts: nothing to apply.
    let backups = r.path("backup");
    r.tb.send_gateway_attributes(json!({"general_configuration": general,
                                         "storage_configuration": storage}))
        .await
        .unwrap();
    // Handled in order: once this reply is in, the attributes were.
    let _ = r.rpc(7, "gateway_version", json!({})).await;
    assert_eq!(r.stats.remote_config_applied(), 0);
    assert_eq!(r.stats.remote_config_rejected(), 0);
    assert!(!backups.exists(), "nothing written");
    let main: Json =
        serde_json::from_str(&std::fs::read_to_string(r.path("tb_gateway.json")).unwrap()).unwrap();
    assert!(main["thingsboard"].get("ts").is_none(), "{main}");

    // Renamed from the UI with the id it was reported with (none in its file): the old
    // connector goes (no `active_connectors` needed to stop it).
    let t1 = std::time::Instant::now();
    r.tb.send_gateway_attributes(json!({
        "Renamed": {"name": "Renamed", "type": "test", "configuration": "test.json",
            "ts": now_millis(),
            "configurationJson": {"devices": ["d1"], "tag": "renamed", "id": id}}
    }))
    .await
    .unwrap();
    assert!(r.telemetry("d1", "renamed", t1).await, "renamed runs");
    let active = reported(&r, t1, "active_connectors", |v| v == &json!(["Renamed"])).await;
    assert!(active.is_some(), "the old name is gone");
    let _ = r.stop.take().map(|s| s.send(()));
    let report = (&mut r.gateway).await.unwrap();
    assert!(report.clean, "{report:?}");
}
