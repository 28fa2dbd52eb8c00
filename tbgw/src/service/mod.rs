//! Gateway services: what makes tbgw a ThingsBoard gateway rather than a forwarder.
//!
//! One task (`Services::run`) owns them and talks to the ThingsBoard client through its
//! control channel:
//! * statistics telemetry of the gateway device every `statsSendPeriodInSeconds`, machine
//!   attributes after each connect, and the Prometheus endpoint (`prometheus`);
//! * service RPCs to the gateway device (`gateway_devices`, `gateway_stats`, `gateway_version`,
//!   `gateway_restart`, `gateway_reboot`, `gateway_device_renamed`, `gateway_device_deleted`,
//!   remote shell when enabled);
//! * device inactivity, shared-attribute sync on connect;
//! * hot reload of connector files and remote configuration (`manager`, `remote_config`);
//! * remote logging ([`remote_log`]) and upstream's `ALL_ERRORS_COUNT` /
//!   `<logger>_ERRORS_COUNT` telemetry (ERROR records counted by its layer).
//!
//! Device filtering (`filter`) runs in the ingest task, on the data path.

pub mod control;
mod custom_stats;
pub(crate) mod filter;
pub(crate) mod machine;
pub(crate) mod manager;
pub(crate) mod prometheus;
pub(crate) mod remote_config;
pub mod remote_log;
mod shell;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value as Json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::ThingsBoardConfig;
use crate::downlink::{AttributeUpdate, Downlink};
use crate::stats::{ConnectorStats, GatewayStats};
use crate::storage::EventStorage;
use crate::tb::{topic, Control, Shared};
use manager::Manager;
use remote_log::RemoteLogHandle;

pub(crate) use crate::messages::ServiceEvent;

/// Settings and handles the service task needs.
pub(crate) struct Services {
    pub cfg: ThingsBoardConfig,
    /// The main config file and directory (None when built without a config).
    pub config_file: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub shared: Arc<Shared>,
    pub control: mpsc::Sender<Control>,
    pub events: mpsc::Receiver<ServiceEvent>,
    pub storage: Arc<dyn EventStorage>,
    pub stats: Arc<GatewayStats>,
    pub connector_stats: Vec<(String, Arc<ConnectorStats>)>,
    pub manager: Manager,
    /// Shared attribute keys each connector wants synced on connect (`*` = all).
    pub shared_keys: HashMap<Arc<str>, Vec<String>>,
    pub remote_log: Option<RemoteLogHandle>,
    /// Cancelled to stop the gateway for `gateway_restart`.
    pub restart: CancellationToken,
    pub restart_requested: Arc<AtomicBool>,
    pub cancel: CancellationToken,
    /// The client's current connection settings (remote configuration compares against them).
    pub tb_options: crate::TbOptions,
    /// Set by remote configuration: timers are rebuilt from `cfg`.
    pub reconfigure: bool,
    /// A storage that buffered records move into during the restart that applies a remote
    /// storage configuration.
    pub migrate_to: Arc<std::sync::Mutex<Option<Arc<dyn EventStorage>>>>,
    /// The host process's handle: reload requests in, connector states out.
    pub host: control::GatewayControl,
}

/// Counter values at the last statistics message, for per-period deltas.
#[derive(Default)]
struct Last {
    gateway: HashMap<&'static str, u64>,
    connectors: HashMap<(String, &'static str), u64>,
    cpu: Option<f64>,
    machine_cpu: Option<(u64, u64)>,
    /// The first statistics message of the process went out.
    sent: bool,
    errors: ErrorCounts,
}

/// How often the error counts are checked (and sent when they changed), as upstream.
const ERRORS_PERIOD: Duration = Duration::from_secs(5);
/// Error counts restart every this many checks (60 s), as upstream's.
const ERRORS_WINDOW_TICKS: u64 = 12;

/// Upstream's `ALL_ERRORS_COUNT` and `<logger>_ERRORS_COUNT` telemetry: ERROR records logged
/// in the current minute, in total and per logger (a connector's name, `service`,
/// `tb_connection`, `storage`), sent when they changed.
#[derive(Debug, Default)]
struct ErrorCounts {
    /// A session with ThingsBoard was ready once (upstream sends only when connected).
    connected: bool,
    ticks: u64,
    window: std::collections::BTreeMap<String, u64>,
    previous: Option<Map<String, Json>>,
}

impl ErrorCounts {
    /// Adds the errors counted since the last tick; returns the telemetry to send, if it
    /// changed. Every running connector has its key (0 until it logs an error; upstream lists
    /// a connector once it logged one), the other loggers once they logged one.
    fn tick(
        &mut self,
        new: std::collections::BTreeMap<String, u64>,
        connectors: &[String],
    ) -> Option<Json> {
        if self.ticks.is_multiple_of(ERRORS_WINDOW_TICKS) {
            self.window.values_mut().for_each(|v| *v = 0);
        }
        self.ticks += 1;
        for (k, n) in new {
            *self.window.entry(k).or_default() += n;
        }
        for c in connectors {
            self.window.entry(c.clone()).or_default();
        }
        let mut batch: Map<String, Json> = self
            .window
            .iter()
            .map(|(k, v)| (format!("{k}_ERRORS_COUNT"), json!(v)))
            .collect();
        batch.insert(
            "ALL_ERRORS_COUNT".into(),
            json!(self.window.values().sum::<u64>()),
        );
        if self.previous.as_ref() == Some(&batch) {
            return None;
        }
        self.previous = Some(batch.clone());
        Some(Json::Object(batch))
    }
}

impl Services {
    pub(crate) async fn run(mut self) {
        let mut remote = remote_config::RemoteConfig::default();
        let mut shell = shell::Shell::default();
        let mut last = Last::default();
        while self
            .run_with_settings(&mut remote, &mut shell, &mut last)
            .await
        {}
    }

    /// Runs with the timers of the current settings; returns true when remote configuration
    /// changed them (run again), false at shutdown.
    async fn run_with_settings(
        &mut self,
        remote: &mut remote_config::RemoteConfig,
        shell: &mut shell::Shell,
        last: &mut Last,
    ) -> bool {
        self.reconfigure = false;
        let stats_cfg = self.cfg.statistics.clone();
        let mut stats_tick = tokio::time::interval(Duration::from_secs(
            stats_cfg.stats_send_period_in_seconds.max(1),
        ));
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        stats_tick.reset();
        let activity = self.cfg.checking_device_activity.clone();
        let mut activity_tick = tokio::time::interval(Duration::from_secs(
            activity.inactivity_check_period_seconds.max(1),
        ));
        activity_tick.reset();
        let reload_period = self.cfg.check_connectors_configuration_in_seconds;
        let mut reload_tick = tokio::time::interval(Duration::from_secs(reload_period.max(1)));
        reload_tick.reset();
        let mut log_tick = tokio::time::interval(Duration::from_secs(1));
        let mut errors_tick = tokio::time::interval(ERRORS_PERIOD);
        let custom = self.custom_statistics();
        let mut custom_tick = tokio::time::interval(Duration::from_secs(
            stats_cfg.custom_stats_send_period_in_seconds.max(1),
        ));
        loop {
            if self.reconfigure {
                return true;
            }
            self.host.set_connectors(
                self.manager
                    .handles
                    .iter()
                    .map(|h| (h.name.to_string(), h.connector_type.to_string(), h.running))
                    .collect(),
            );
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = self.host.reload_requested() => {
                    tracing::info!("Reload requested: applying changed connector files.");
                    let (ok, bad) = self.manager.reload_changed().await;
                    if ok + bad > 0 {
                        self.stats.add_remote_config_applied(ok as u64);
                        self.stats.add_remote_config_rejected(bad as u64);
                    }
                    tracing::info!(applied = ok, rejected = bad, "Reload done.");
                }
                ev = self.events.recv() => match ev {
                    None => return false,
                    Some(ev) => {
                        let ready = matches!(ev, ServiceEvent::Ready);
                        last.errors.connected |= ready;
                        self.on_event(ev, remote, shell).await;
                        // As upstream: the first statistics go out as soon as the gateway is
                        // connected, then every period.
                        if ready && stats_cfg.enable && !last.sent {
                            last.sent = true;
                            let payload = self.statistics(last);
                            self.publish(topic::ME_TELEMETRY, payload);
                            stats_tick.reset();
                        }
                    }
                },
                _ = stats_tick.tick(), if stats_cfg.enable => {
                    let payload = self.statistics(last);
                    self.publish(topic::ME_TELEMETRY, payload);
                }
                _ = activity_tick.tick(), if activity.check_device_inactivity => {
                    self.check_inactivity(activity.inactivity_timeout_seconds);
                }
                _ = reload_tick.tick(), if reload_period > 0 => {
                    let (ok, bad) = self.manager.reload_changed().await;
                    if ok + bad > 0 {
                        self.stats.add_remote_config_applied(ok as u64);
                        self.stats.add_remote_config_rejected(bad as u64);
                    }
                }
                _ = log_tick.tick(), if self.remote_log.is_some() => self.flush_remote_logs(),
                _ = errors_tick.tick(), if self.remote_log.is_some() && last.errors.connected => {
                    let new = self.remote_log.as_ref().map(|h| h.take_errors()).unwrap_or_default();
                    let names: Vec<String> =
                        self.manager.handles.iter().map(|h| h.name.to_string()).collect();
                    if let Some(batch) = last.errors.tick(new, &names) {
                        self.publish(topic::ME_TELEMETRY, batch);
                    }
                }
                _ = custom_tick.tick(), if !custom.is_empty() => {
                    let values = custom_stats::collect(&custom).await;
                    if values.as_object().is_some_and(|m| !m.is_empty()) {
                        self.publish(topic::ME_TELEMETRY, values);
                    }
                }
            }
        }
    }

    /// The custom statistics commands, when enabled (a bad file is logged and skipped).
    fn custom_statistics(&self) -> Vec<custom_stats::CustomStat> {
        let st = &self.cfg.statistics;
        if !st.enable_custom {
            return Vec::new();
        }
        let Some(name) = &st.configuration else {
            tracing::warn!("statistics.enableCustom is set without statistics.configuration; no custom statistics.");
            return Vec::new();
        };
        let dir = self
            .config_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        match custom_stats::load(&crate::config::resolve_path(&dir, name)) {
            Ok(list) => list,
            Err(e) => {
                tracing::error!(error = %e, "Custom statistics file rejected; no custom statistics.");
                Vec::new()
            }
        }
    }

    fn publish(&self, topic: &str, payload: Json) {
        if self
            .control
            .try_send(Control::MePublish {
                topic: topic.to_string(),
                payload,
            })
            .is_err()
        {
            self.stats.queue_full("control", "gateway device message");
        }
    }

    fn reply(&self, id: i64, data: Json) {
        if self
            .control
            .try_send(Control::RpcReply {
                device: None,
                id,
                data,
            })
            .is_err()
        {
            self.stats.queue_full("control", "service RPC reply");
        }
    }

    async fn on_event(
        &mut self,
        ev: ServiceEvent,
        remote: &mut remote_config::RemoteConfig,
        shell: &mut shell::Shell,
    ) {
        match ev {
            ServiceEvent::Ready => {
                self.publish(topic::ME_ATTRIBUTES, self.machine_attributes());
                if self.cfg.remote_configuration {
                    remote.on_ready(self).await;
                }
            }
            ServiceEvent::Rpc { id, method, params } => {
                self.stats.add_service_rpcs(1);
                let reply = self.rpc(&method, params, shell).await;
                self.reply(id, reply);
            }
            ServiceEvent::SharedAttributes(j) => {
                if let Some(level) = j.get("RemoteLoggingLevel").and_then(Json::as_str) {
                    self.set_remote_log_level(level);
                }
                if self.cfg.remote_configuration {
                    remote.on_shared(self, &j).await;
                }
            }
            ServiceEvent::AttributesResponse(j) => {
                let shared = j.get("shared").cloned().unwrap_or(Json::Null);
                if let Some(level) = shared.get("RemoteLoggingLevel").and_then(Json::as_str) {
                    self.set_remote_log_level(level);
                }
                if self.cfg.remote_configuration && shared.is_object() {
                    remote.on_shared(self, &shared).await;
                }
            }
            ServiceEvent::DeviceConnected { device, connector } => {
                self.sync_shared_attributes(device, connector);
            }
        }
    }

    fn set_remote_log_level(&self, level: &str) {
        match &self.remote_log {
            Some(h) => {
                if h.set_level(level) {
                    tracing::info!(level, "Remote logging level set by ThingsBoard.");
                } else {
                    tracing::warn!(level, "Unknown RemoteLoggingLevel; ignored.");
                }
            }
            None => {
                tracing::debug!("RemoteLoggingLevel received but remote logging is not installed.")
            }
        }
    }

    fn flush_remote_logs(&self) {
        let Some(h) = &self.remote_log else { return };
        for _ in 0..10 {
            let batch = h.drain(remote_log::BATCH);
            if batch.is_empty() {
                break;
            }
            self.stats.add_remote_log_records(batch.len() as u64);
            self.publish(topic::ME_TELEMETRY, remote_log::payload(&batch));
        }
        let dropped = h.dropped();
        let seen = self.stats.remote_log_dropped.load(Ordering::Relaxed);
        if dropped > seen {
            self.stats.add_remote_log_dropped(dropped - seen);
        }
    }

    /// Requests a newly connected device's shared attributes and hands them to its connector
    /// as an attribute update (`syncDevicesSharedAttributesOnConnect`).
    fn sync_shared_attributes(&self, device: String, connector: Arc<str>) {
        if !self.cfg.sync_devices_shared_attributes_on_connect {
            return;
        }
        let Some(keys) = self.shared_keys.get(&connector).filter(|k| !k.is_empty()) else {
            return;
        };
        let Some(route) = self.shared.routes.get(&connector).map(|r| r.1) else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        let keys: Vec<String> = keys.iter().filter(|k| *k != "*").cloned().collect();
        if self
            .control
            .try_send(Control::AttributeRequest {
                device: device.clone(),
                client: false,
                keys: keys.clone(),
                reply: tx,
            })
            .is_err()
        {
            self.stats
                .queue_full("control", "shared attribute sync request");
            return;
        }
        tokio::spawn(async move {
            let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(20), rx).await else {
                tracing::debug!(device, "No answer to the shared attribute sync request.");
                return;
            };
            let values = match (answer.get("values"), answer.get("value"), keys.as_slice()) {
                (Some(Json::Object(m)), _, _) => m.clone(),
                // A single-key answer carries only the value.
                (None, Some(v), [key]) if !v.is_null() => {
                    let mut m = serde_json::Map::new();
                    m.insert(key.clone(), v.clone());
                    m
                }
                _ => return,
            };
            if values.is_empty() {
                return;
            }
            let _ = route
                .send(Downlink::AttributeUpdate(AttributeUpdate {
                    device,
                    values,
                }))
                .await;
        });
    }

    fn check_inactivity(&self, timeout_s: u64) {
        let timeout_ms = i64::try_from(timeout_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let cutoff = crate::model::now_millis().saturating_sub(timeout_ms);
        let idle = {
            let mut reg = self.shared.registry();
            let idle = reg.idle_since(cutoff);
            let mut out = Vec::new();
            for d in idle {
                reg.set_disconnected(&d);
                out.push(reg.tb_name(&d).to_string());
            }
            if reg.is_dirty() {
                self.shared.registry_saver.changed();
            }
            out
        };
        for device in idle {
            self.stats.add_inactivity_disconnects(1);
            tracing::info!(
                device,
                timeout_s,
                "Device inactive; disconnected in ThingsBoard."
            );
            if self
                .control
                .try_send(Control::Disconnect { device })
                .is_err()
            {
                self.stats.queue_full("control", "device disconnect");
            }
        }
    }

    fn machine_attributes(&self) -> Json {
        let dir = self
            .config_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        let mut m = Map::new();
        // Upstream's keys hold psutil's human-readable strings ("15.5G"); the exact figures
        // go under keys of our own.
        if let Some(t) = machine::meminfo("MemTotal") {
            m.insert("totalMemory".into(), machine::bytes_to_human(t).into());
            m.insert("totalMemoryBytes".into(), t.into());
        }
        if let Some((total, _)) = machine::disk(&dir) {
            m.insert("totalDisk".into(), machine::bytes_to_human(total).into());
            m.insert("totalDiskBytes".into(), total.into());
        }
        m.insert("cpuCount".into(), machine::cpu_count().into());
        m.insert("Version".into(), env!("CARGO_PKG_VERSION").into());
        m.insert("gatewayImplementation".into(), "tbgw".into());
        Json::Object(m)
    }

    /// The statistics telemetry message (upstream's shape; counters are per period, as
    /// upstream resets them after each send).
    fn statistics(&self, last: &mut Last) -> Json {
        let period = self.cfg.statistics.stats_send_period_in_seconds.max(1) as f64;
        let mut delta = |k: &'static str, v: u64| {
            let prev = last.gateway.insert(k, v).unwrap_or(0);
            v.saturating_sub(prev)
        };
        let g: HashMap<&'static str, u64> = self.stats.values().into_iter().collect();
        let get = |k: &str| g.get(k).copied().unwrap_or(0);
        let sent = delta("publishes", get("publishes"));
        let received = delta("downlink_received", get("downlink_received"));
        let stored = delta("stored", get("stored"));
        let delivered = delta("delivered", get("delivered"));
        let dropped = delta("storage_dropped", get("storage_dropped"));
        let queue_dropped = delta("queue_dropped", get("queue_dropped"));
        let cpu = machine::process_cpu_seconds();
        let gw_cpu = match (cpu, last.cpu) {
            (Some(now), Some(before)) => (now - before) / period * 100.0,
            _ => 0.0,
        };
        last.cpu = cpu;
        let mcpu = machine::machine_cpu_ticks();
        let total_cpu = match (mcpu, last.machine_cpu) {
            (Some((b1, t1)), Some((b0, t0))) if t1 > t0 => {
                (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0
            }
            _ => 0.0,
        };
        last.machine_cpu = mcpu;
        let dir = self
            .config_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        let (disk_total, disk_free) = machine::disk(&dir).unwrap_or((0, 0));
        let mem_total = machine::meminfo("MemTotal").unwrap_or(0);
        let mem_available = machine::meminfo("MemAvailable").unwrap_or(0);
        let rss = machine::process_memory("VmRSS").unwrap_or(0);
        let percent = |part: u64, whole: u64| {
            if whole > 0 {
                (part as f64 / whole as f64 * 1000.0).round() / 10.0
            } else {
                0.0
            }
        };
        // Upstream's keys and units (psutil's): `freeMemory` is the memory *used* in percent,
        // `gwMemory` this process's share of memory in percent, `freeDisk` a string like
        // "71.1G". Exact byte figures go under keys of our own (`...Bytes`).
        let machine = json!({
            "totalCpuUsage": round2(total_cpu),
            "gwProcessCpuUsage": round2(gw_cpu),
            "gwMemory": percent(rss, mem_total),
            "gwMemoryBytes": rss,
            "gwProcessMemoryFullInfo": machine::process_memory_full_info().map(Json::Object).unwrap_or(Json::Null),
            "freeMemory": percent(mem_total.saturating_sub(mem_available), mem_total),
            "freeMemoryBytes": mem_available,
            "diskUsage": percent(disk_total.saturating_sub(disk_free), disk_total),
            "freeDisk": machine::bytes_to_human(disk_free),
            "freeDiskBytes": disk_free,
            "msgsSentToPlatform": sent,
            "msgsReceivedFromPlatform": received,
        });
        let service = json!({
            "storageMsgPushed": stored,
            "storageMsgPulled": delivered,
            "storageMsgCount": self.storage.stats().len,
            "storageMsgDropped": dropped,
            "queueMsgDropped": queue_dropped,
            "platformMsgPushed": sent,
            "platformAttrProduced": delta("platform_attr_produced", get("platform_attr_produced")),
            "platformTsProduced": delta("platform_ts_produced", get("platform_ts_produced")),
            "thingsboardConnected": get("thingsboard_connected") == 1,
        });
        let mut connectors = Map::new();
        let devices: HashMap<String, (u64, u64)> = {
            let reg = self.shared.registry();
            let mut m: HashMap<String, (u64, u64)> = HashMap::new();
            for (name, owner) in reg.owners() {
                let e = m.entry(owner.to_string()).or_default();
                e.0 += 1;
                if reg
                    .get(reg.original_name(&name))
                    .is_some_and(|d| !d.disconnected)
                {
                    e.1 += 1;
                }
            }
            m
        };
        for (name, cs) in &self.connector_stats {
            let (known, online) = devices.get(name).copied().unwrap_or((0, 0));
            let vals: HashMap<&'static str, u64> = cs.values().into_iter().collect();
            let mut d = |k: &'static str| {
                let v = vals.get(k).copied().unwrap_or(0);
                let prev = last.connectors.insert((name.clone(), k), v).unwrap_or(0);
                v.saturating_sub(prev)
            };
            // Upstream counts converted and dropped messages per converter; here a record
            // handed to storage was converted, a conversion error dropped its message.
            let pushed = d("sent_to_storage");
            let convert_errors = d("convert_errors");
            let ts_produced = d("ts_produced");
            let attr_produced = d("attr_produced");
            connectors.insert(
                name.clone(),
                json!({
                    "connectorMsgsReceived": d("messages_received"),
                    "connectorBytesReceived": d("bytes_received"),
                    "convertersTsProduced": ts_produced,
                    "convertersAttrProduced": attr_produced,
                    "convertersMsgProcessed": pushed,
                    "convertersMsgDropped": convert_errors,
                    "storageMsgPushed": pushed,
                    "convertersErrors": convert_errors,
                    "connectorsErrors": d("errors"),
                    "connectorRestarts": d("restarts"),
                    "connectorTaskFailures": d("task_failures"),
                    "devices": known,
                    "devicesConnected": online,
                }),
            );
            // Upstream counts its converters under the converter's logger name,
            // `<connector>_converter`, where its dashboards read them; the same figures.
            connectors.insert(
                format!("{name}_converter"),
                json!({
                    "convertersTsProduced": ts_produced,
                    "convertersAttrProduced": attr_produced,
                    "convertersMsgProcessed": pushed,
                    "convertersMsgDropped": convert_errors,
                }),
            );
        }
        json!({
            "machineStats": machine,
            "serviceStats": service,
            "connectorsStats": connectors,
        })
    }

    async fn rpc(&mut self, method: &str, params: Json, shell: &mut shell::Shell) -> Json {
        match method {
            "devices" => {
                let owners = self.shared.registry().owners();
                let resp: Map<String, Json> = owners
                    .into_iter()
                    .map(|(d, c)| (d, Json::String(c.to_string())))
                    .collect();
                json!({"code": 200, "resp": resp})
            }
            "stats" => {
                // Upstream's shape: flat, connector names without spaces, what each connector
                // received (`EventsProduced`) and handed on (`EventsSent`), and the sums.
                let mut resp = Map::new();
                let (mut produced, mut sent) = (0, 0);
                for (name, cs) in &self.connector_stats {
                    let key = name.replace(' ', "");
                    let p = ConnectorStats::get(&cs.messages_received);
                    let s = ConnectorStats::get(&cs.sent_to_storage);
                    produced += p;
                    sent += s;
                    resp.insert(format!("{key}EventsProduced"), p.into());
                    resp.insert(format!("{key}EventsSent"), s.into());
                }
                resp.insert("eventsProduced".into(), produced.into());
                resp.insert("eventsSent".into(), sent.into());
                Json::Object(resp)
            }
            "version" => json!({"code": 200, "resp": {
                "current_version": env!("CARGO_PKG_VERSION"),
                "latest_version": env!("CARGO_PKG_VERSION"),
            }}),
            "restart" => {
                let delay = match delay_param(&params) {
                    Ok(d) => d,
                    Err(e) => return json!({"error": e, "code": 400}),
                };
                let secs = delay.as_secs_f64();
                let token = self.restart.clone();
                let flag = self.restart_requested.clone();
                tracing::warn!(seconds = secs, "Restart requested by ThingsBoard.");
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    flag.store(true, Ordering::SeqCst);
                    token.cancel();
                });
                json!({"success": true})
            }
            "reboot" => {
                if !self.cfg.allow_reboot {
                    return json!({"error": "reboot is disabled; set thingsboard.allowReboot to true to allow it", "code": 403});
                }
                let delay = match delay_param(&params) {
                    Ok(d) => d,
                    Err(e) => return json!({"error": e, "code": 400}),
                };
                let secs = delay.as_secs_f64();
                tracing::warn!(seconds = secs, "Machine reboot requested by ThingsBoard.");
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    match tokio::process::Command::new("shutdown")
                        .args(["-r", "now"])
                        .status()
                        .await
                    {
                        Ok(s) if s.success() => {}
                        other => tracing::error!(result = ?other, "Reboot command failed."),
                    }
                });
                json!({"success": true})
            }
            "device_renamed" => {
                if !self.cfg.handle_device_renaming {
                    return json!({"success": false, "error": "device renaming is disabled (thingsboard.handleDeviceRenaming)"});
                }
                let Some(map) = params.as_object() else {
                    return json!({"error": "params must be {\"<old name>\": \"<new name>\"}", "code": 400});
                };
                {
                    let mut reg = self.shared.registry();
                    for (old, new) in map {
                        if let Some(new) = new.as_str() {
                            // The old name is announced again if data ever goes out under it.
                            if self
                                .control
                                .try_send(Control::Forget {
                                    device: old.clone(),
                                })
                                .is_err()
                            {
                                self.stats.queue_full("control", "forget renamed device");
                            }
                            let original = reg.rename(old, new);
                            tracing::info!(old = %old, new, original, "Device renamed in ThingsBoard.");
                        }
                    }
                }
                // Saved before the reply, off the async threads.
                self.shared.registry_saver.save(&self.shared.registry).await;
                json!({"success": true})
            }
            "device_deleted" => {
                let Some(name) = params.as_str().map(str::to_string) else {
                    return json!({"error": "params must be the device name", "code": 400});
                };
                let found = self.shared.registry().remove(&name);
                self.shared.registry_saver.save(&self.shared.registry).await;
                if self
                    .control
                    .try_send(Control::Forget {
                        device: name.clone(),
                    })
                    .is_err()
                {
                    self.stats.queue_full("control", "forget deleted device");
                }
                tracing::info!(device = %name, found, "Device deleted in ThingsBoard; forgotten.");
                json!({"success": true})
            }
            "remove_provisioned_credentials" => remove_credentials(self.config_dir.as_deref()),
            m @ ("getTermInfo" | "sendCommand" | "getCommandStatus" | "terminateCommand") => {
                if !self.cfg.remote_shell {
                    return json!({"error": "Method not found", "code": 404});
                }
                shell.rpc(m, &params).await
            }
            _ => json!({"error": "Method not found", "code": 404}),
        }
    }
}

/// The longest delay `gateway_restart` / `gateway_reboot` accept: one week.
const MAX_RPC_DELAY_SECS: f64 = 7.0 * 86_400.0;

/// The delay of `gateway_restart` / `gateway_reboot`: `params` is a number of seconds (or a
/// string holding one); none, `null` or `{}` is upstream's default, and anything below 1 s is
/// 1 s (upstream's `max(n, 1)`). Not-a-number, infinite or longer than a week is an error for
/// the RPC reply rather than a panic in the timer task.
fn delay_param(params: &Json) -> Result<Duration, String> {
    let secs = match params {
        Json::Null => 0.0,
        Json::Object(m) if m.is_empty() => 0.0,
        Json::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Json::String(t) => t.trim().parse::<f64>().unwrap_or(f64::NAN),
        _ => f64::NAN,
    };
    if secs.is_nan() || secs > MAX_RPC_DELAY_SECS {
        return Err(format!(
            "params must be a number of seconds, at most {MAX_RPC_DELAY_SECS}; got {params}"
        ));
    }
    Duration::try_from_secs_f64(secs.max(1.0)).map_err(|e| e.to_string())
}

fn remove_credentials(dir: Option<&std::path::Path>) -> Json {
    let Some(dir) = dir else {
        return json!({"code": 404, "error": "no configuration directory"});
    };
    let file = dir.join(".credentials");
    match std::fs::remove_file(&file) {
        Ok(()) => {
            json!({"code": 200, "resp": "removed; they are requested again at the next start"})
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            json!({"code": 404, "error": "no provisioned credentials"})
        }
        Err(e) => json!({"code": 500, "error": e.to_string()}),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_counts_are_sent_when_they_change_and_restart_every_minute() {
        let mut e = ErrorCounts::default();
        let names = ["MQTT A".to_string()];
        let counted = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        // The first check sends zeros for every connector and the total.
        assert_eq!(
            e.tick(counted(&[]), &names),
            Some(json!({"ALL_ERRORS_COUNT": 0, "MQTT A_ERRORS_COUNT": 0}))
        );
        assert_eq!(e.tick(counted(&[]), &names), None, "unchanged: not sent");
        assert_eq!(
            e.tick(counted(&[("MQTT A", 2), ("storage", 1)]), &names),
            Some(json!({"ALL_ERRORS_COUNT": 3, "MQTT A_ERRORS_COUNT": 2,
                        "storage_ERRORS_COUNT": 1}))
        );
        assert_eq!(
            e.tick(counted(&[("MQTT A", 1)]), &names),
            Some(json!({"ALL_ERRORS_COUNT": 4, "MQTT A_ERRORS_COUNT": 3,
                        "storage_ERRORS_COUNT": 1}))
        );
        for _ in 4..ERRORS_WINDOW_TICKS {
            assert_eq!(e.tick(counted(&[]), &names), None);
        }
        // A new minute: the counts restart, the keys stay.
        assert_eq!(
            e.tick(counted(&[]), &names),
            Some(json!({"ALL_ERRORS_COUNT": 0, "MQTT A_ERRORS_COUNT": 0,
                        "storage_ERRORS_COUNT": 0}))
        );
    }

    #[test]
    fn restart_delay_is_checked_instead_of_panicking() {
        let ok = |p: Json| delay_param(&p).unwrap();
        assert_eq!(ok(Json::Null), Duration::from_secs(1));
        assert_eq!(ok(json!({})), Duration::from_secs(1));
        assert_eq!(ok(json!(-5)), Duration::from_secs(1));
        assert_eq!(ok(json!(0.2)), Duration::from_secs(1));
        assert_eq!(ok(json!(2.5)), Duration::from_millis(2500));
        assert_eq!(ok(json!("30")), Duration::from_secs(30));
        assert_eq!(ok(json!("-inf")), Duration::from_secs(1));
        for bad in [
            json!(1e20),
            json!(f64::MAX),
            json!("NaN"),
            json!("inf"),
            json!("soon"),
            json!([1]),
            json!({"seconds": 5}),
        ] {
            let e = delay_param(&bad).expect_err("must be refused");
            assert!(e.contains("number of seconds"), "{e}");
        }
    }
}
