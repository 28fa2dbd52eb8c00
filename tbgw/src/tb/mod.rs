//! The ThingsBoard client: one MQTT 5 session to ThingsBoard, speaking the gateway API.
//!
//! # What it does
//! * Connects as the gateway device (access token, user name and password, TLS with a CA,
//!   mutual TLS). A failed TLS handshake is an error and is retried as TLS; it never falls back
//!   to plain text (upstream does).
//! * After every connect: subscribes (with MQTT 5 *no local*, so a plain broker standing in
//!   for ThingsBoard does not echo the gateway's own publishes back), asks for
//!   `getSessionLimits` and waits for the answer for `sessionLimitsTimeoutMs` before going on
//!   with defaults, announces every known device again, and rewinds storage so that everything
//!   not yet confirmed is published again.
//! * Reads batches from storage, packs them into `v1/gateway/telemetry` and
//!   `v1/gateway/attributes` payloads of at most the payload limit, publishes them with the
//!   configured QoS and acknowledges the batch to storage only when every PUBACK of it (and of
//!   every batch before it) has arrived ([`tracker`]).
//! * Routes shared-attribute updates and RPCs to the connector that owns the device; publishes
//!   RPC replies, device connect/disconnect and attribute requests.
//! * Reconnects with exponential backoff and jitter.

mod incoming;
pub mod pack;
pub mod provision;
pub(crate) use crate::throttle;
mod tracker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Filter, Packet, PubAckReason};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::Outgoing;
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::{Credentials, ThingsBoardConfig};
use crate::downlink::Downlink;
use crate::registry::DeviceRegistry;
use crate::stats::GatewayStats;
use crate::storage::EventStorage;
use tracker::{Token, Tracker};

/// Topics.
pub(crate) mod topic {
    pub const CONNECT: &str = "v1/gateway/connect";
    pub const DISCONNECT: &str = "v1/gateway/disconnect";
    pub const TELEMETRY: &str = "v1/gateway/telemetry";
    pub const ATTRIBUTES: &str = "v1/gateway/attributes";
    pub const ATTRIBUTES_REQUEST: &str = "v1/gateway/attributes/request";
    pub const ATTRIBUTES_RESPONSE: &str = "v1/gateway/attributes/response";
    pub const RPC: &str = "v1/gateway/rpc";
    pub const ME_ATTRIBUTES: &str = "v1/devices/me/attributes";
    pub const ME_ATTRIBUTES_RESPONSE: &str = "v1/devices/me/attributes/response/";
    pub const ME_RPC_REQUEST: &str = "v1/devices/me/rpc/request/";
    pub const ME_RPC_RESPONSE: &str = "v1/devices/me/rpc/response/";
    pub const ME_TELEMETRY: &str = "v1/devices/me/telemetry";
    pub const ME_ATTRIBUTES_REQUEST: &str = "v1/devices/me/attributes/request/";
}

/// Settings of the ThingsBoard client, from the `thingsboard` section.
#[derive(Debug, Clone, PartialEq)]
pub struct TbOptions {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Credentials and TLS.
    pub credentials: Credentials,
    /// QoS for telemetry, attributes, connect and disconnect.
    pub qos: u8,
    /// Payload limit in bytes.
    pub max_payload: usize,
    /// Keep-alive (at least 5 s).
    pub keep_alive: Duration,
    /// How long to wait for `getSessionLimits`.
    pub session_limits_timeout: Duration,
    /// Most unconfirmed publishes at once.
    pub max_inflight: usize,
    /// First delay between connection attempts; it doubles up to `reconnect_max`, with up to
    /// 30 % jitter, and starts here again after a connection that lasted a minute
    /// ([`Backoff`](crate::backoff::Backoff)).
    pub reconnect_min: Duration,
    /// Upper bound of the backoff.
    pub reconnect_max: Duration,
    /// How long new settings from remote configuration get to connect.
    pub switch_trial: Duration,
    /// The six client-side rate limit strings.
    pub rate_limits: throttle::LimitStrings,
    /// Provision the gateway device first (no credentials yet): the section and the config
    /// directory the credentials are saved in.
    pub provisioning: Option<(crate::config::ProvisioningConfig, std::path::PathBuf)>,
}

impl TbOptions {
    /// Options for a plain-TCP connection authenticated by the gateway device's access token,
    /// with every other setting at its default.
    pub fn access_token(host: impl Into<String>, port: u16, token: impl Into<String>) -> Self {
        let cfg = ThingsBoardConfig {
            host: host.into(),
            port,
            ..ThingsBoardConfig::default()
        };
        let credentials = Credentials {
            client_id: String::new(),
            username: Some(token.into()),
            password: None,
            tls: None,
        };
        TbOptions::new(&cfg, credentials)
    }

    /// Options from the `thingsboard` section and resolved credentials.
    pub fn new(cfg: &ThingsBoardConfig, credentials: Credentials) -> Self {
        TbOptions {
            host: cfg.host.clone(),
            port: cfg.port,
            credentials,
            qos: cfg.qos,
            max_payload: cfg.max_payload_size_bytes,
            keep_alive: Duration::from_secs(cfg.keep_alive.max(5)),
            session_limits_timeout: Duration::from_millis(cfg.session_limits_timeout_ms),
            max_inflight: cfg.max_inflight_messages.max(1),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            switch_trial: Duration::from_secs(cfg.remote_configuration_trial_seconds.max(1)),
            rate_limits: throttle::LimitStrings {
                messages: cfg.messages_rate_limits.clone(),
                telemetry: cfg.rate_limits.clone(),
                datapoints: cfg.dp_rate_limits.clone(),
                device_messages: cfg.device_messages_rate_limits.clone(),
                device_telemetry: cfg.device_rate_limits.clone(),
                device_datapoints: cfg.device_dp_rate_limits.clone(),
            },
            provisioning: None,
        }
    }
}

/// Requests to the client from the rest of the gateway.
#[derive(Debug)]
pub(crate) enum Control {
    Connect {
        device: String,
        device_type: String,
    },
    Disconnect {
        device: String,
    },
    RpcReply {
        device: Option<String>,
        id: i64,
        data: Json,
    },
    AttributeRequest {
        device: String,
        client: bool,
        keys: Vec<String>,
        reply: oneshot::Sender<Json>,
    },
    /// A message of the gateway device itself (statistics, client attributes, logs, its own
    /// attribute requests). Dropped while ThingsBoard is not connected.
    MePublish {
        topic: String,
        payload: Json,
    },
    /// ThingsBoard deleted the device: announce it again when it next sends data.
    Forget {
        device: String,
    },
    /// Remote configuration: connect with these settings instead; answered `Ok` once a session
    /// with them is ready, or `Err` after their `switch_trial` without one (the old settings
    /// are then restored).
    Switch {
        opts: Box<TbOptions>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// New connection settings being tried.
#[derive(Debug)]
pub(crate) struct Trial {
    old: TbOptions,
    deadline: Instant,
    trial: Duration,
    reply: oneshot::Sender<Result<(), String>>,
}

/// A connector's downlink route: (type, sender).
pub(crate) type Route = (Arc<str>, mpsc::Sender<Downlink>);

/// Where downlink requests go: connector name → (type, sender). Connectors added or removed
/// by remote configuration change it while the gateway runs.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    by_name: std::sync::RwLock<HashMap<Arc<str>, Route>>,
}

impl Routes {
    /// Adds (or replaces) a connector's route.
    pub(crate) fn insert(&self, name: Arc<str>, route: Route) {
        if let Ok(mut m) = self.by_name.write() {
            m.insert(name, route);
        }
    }

    /// Removes a connector's route.
    pub(crate) fn remove(&self, name: &str) {
        if let Ok(mut m) = self.by_name.write() {
            m.remove(name);
        }
    }

    /// The route of a connector.
    pub(crate) fn get(&self, name: &str) -> Option<Route> {
        self.by_name.read().ok()?.get(name).cloned()
    }

    /// The route of the first connector of a type.
    pub(crate) fn of_type(&self, ty: &str) -> Option<Route> {
        self.by_name
            .read()
            .ok()?
            .values()
            .find(|(t, _)| &**t == ty)
            .cloned()
    }
}

/// State shared between the ingest task, the client and the router.
#[derive(Debug)]
pub(crate) struct Shared {
    pub registry: Mutex<DeviceRegistry>,
    /// Writes `registry` to its file in the background.
    pub registry_saver: crate::registry::Saver,
    pub routes: Routes,
    pub stats: Arc<GatewayStats>,
    /// How long a connector gets to answer an RPC.
    pub rpc_timeout: Duration,
    /// The gateway services task (service RPCs, gateway shared attributes, session ready).
    pub service: Option<mpsc::Sender<crate::messages::ServiceEvent>>,
}

impl Shared {
    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, DeviceRegistry> {
        // The registry holds no invariant that a panic elsewhere could break.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum SessionEnd {
    Cancelled,
    Lost(String),
}

/// The client task. See the [module docs](self).
pub(crate) struct TbClient {
    pub opts: TbOptions,
    pub storage: Arc<dyn EventStorage>,
    pub shared: Arc<Shared>,
    pub control_rx: mpsc::Receiver<Control>,
    pub control_tx: mpsc::Sender<Control>,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    /// New settings on trial (remote configuration).
    pub trial: Option<Trial>,
    /// End the current session and connect again at once (a switch began).
    pub reconnect_now: bool,
    /// A failed trial, answered when the restored settings are connected.
    pub reverted: Option<(oneshot::Sender<Result<(), String>>, String)>,
    /// Client-side rate limits (configured, replaced by the session limits).
    pub limits: throttle::Limits,
    /// Most datapoints per record in the last batch (0: none read yet), to size batches so
    /// they fit the datapoint window.
    pub dp_per_record: usize,
}

/// Per-session state.
struct Session {
    client: AsyncClient,
    tracker: Tracker,
    announced: HashSet<String>,
    ready: bool,
    limits_id: u64,
    payload_limit: usize,
    window: usize,
    pending_attr: HashMap<i64, oneshot::Sender<Json>>,
    next_attr_id: i64,
    qos: QoS,
}

impl TbClient {
    pub(crate) async fn run(mut self) {
        let mut backoff = self.backoff();
        while let Some((p, dir)) = self.opts.provisioning.clone() {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = provision::provision(&self.opts.host, self.opts.port, &p, &dir) => match r {
                    Ok(c) => {
                        self.opts.credentials = c;
                        self.opts.provisioning = None;
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Provisioning the gateway device failed; retrying.");
                        tokio::select! {
                            _ = self.cancel.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                },
            }
        }
        backoff = self.backoff();
        self.limits = throttle::Limits::from_config(&self.opts.rate_limits, &self.opts.host);
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            backoff.succeeded();
            let end = self.session().await;
            self.shared
                .stats
                .thingsboard_connected
                .store(0, std::sync::atomic::Ordering::Relaxed);
            match end {
                SessionEnd::Cancelled => break,
                SessionEnd::Lost(reason) => {
                    if std::mem::take(&mut self.reconnect_now) {
                        backoff = self.backoff();
                        continue;
                    }
                    if self
                        .trial
                        .as_ref()
                        .is_some_and(|t| Instant::now() >= t.deadline)
                    {
                        if let Some(t) = self.trial.take() {
                            tracing::error!(error = %reason, "The new ThingsBoard connection settings did not connect; restoring the previous ones.");
                            self.opts = t.old;
                            // Answered once the old settings are connected again, so the
                            // error can be reported to ThingsBoard.
                            self.reverted = Some((
                                t.reply,
                                format!(
                                    "no connection with the new settings within {} s: {reason}",
                                    t.trial.as_secs()
                                ),
                            ));
                            backoff = self.backoff();
                            continue;
                        }
                    }
                    self.shared.stats.add_connection_errors(1);
                    let wait = backoff.next_delay();
                    tracing::warn!(host = %self.opts.host, port = self.opts.port, error = %reason, retry_in_ms = wait.as_millis() as u64, "ThingsBoard connection lost or refused; retrying.");
                    let deadline = Instant::now() + wait;
                    // While offline, keep consuming control requests so no producer blocks:
                    // connects are re-sent from the registry after reconnect, RPC replies and
                    // attribute requests cannot be delivered (ThingsBoard times them out).
                    loop {
                        tokio::select! {
                            biased;
                            _ = self.cancel.cancelled() => return,
                            _ = tokio::time::sleep_until(deadline) => break,
                            Some(c) = self.control_rx.recv() => match c {
                                Control::RpcReply { id, .. } => {
                                    tracing::warn!(id, "Dropping an RPC reply: ThingsBoard is not connected.");
                                }
                                Control::Switch { opts, reply } => {
                                    self.begin_trial(*opts, reply);
                                    self.reconnect_now = false;
                                    break;
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
    }

    /// The reconnect backoff of the current settings (`reconnect_min` → `reconnect_max`).
    fn backoff(&self) -> Backoff {
        Backoff::new(self.opts.reconnect_min, self.opts.reconnect_max)
    }

    fn mqtt_options(&self) -> MqttOptions {
        let o = &self.opts;
        let client_id = if o.credentials.client_id.is_empty() {
            format!("tbgw-{:08x}", fastrand::u32(..))
        } else {
            o.credentials.client_id.clone()
        };
        let mut m = MqttOptions::new(client_id, o.host.clone(), o.port);
        m.set_keep_alive(o.keep_alive.max(Duration::from_secs(5)));
        m.set_clean_start(true);
        m.set_connection_timeout(10);
        m.set_max_packet_size(Some(16 * 1024 * 1024));
        // rumqttc sizes a table of in-flight publishes by this limit (u16::MAX slots, ~13 MB,
        // when unset); the gateway never has more in flight than its window.
        m.set_outgoing_inflight_upper_limit(o.max_inflight.clamp(1, u16::MAX as usize) as u16);
        if let Some(u) = &o.credentials.username {
            m.set_credentials(
                u.clone(),
                o.credentials.password.clone().unwrap_or_default(),
            );
        }
        m
    }

    #[cfg(feature = "tls")]
    fn transport(&self) -> Result<Option<rumqttc::Transport>, String> {
        let Some(tls) = &self.opts.credentials.tls else {
            return Ok(None);
        };
        let roots = crate::tls::load_roots(&tls.ca_cert).map_err(|e| e.to_string())?;
        let identity = match &tls.client {
            Some((cert, key)) => {
                Some(crate::tls::Identity::load(cert, key).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let config = crate::tls::client_config(crate::tls::Verify::Roots(roots), identity)
            .map_err(|e| e.to_string())?;
        Ok(Some(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(config)),
        )))
    }

    #[cfg(not(feature = "tls"))]
    fn transport(&self) -> Result<Option<rumqttc::Transport>, String> {
        match &self.opts.credentials.tls {
            Some(_) => Err("TLS is configured but tbgw was built without the `tls` feature".into()),
            None => Ok(None),
        }
    }

    async fn session(&mut self) -> SessionEnd {
        let mut mopts = self.mqtt_options();
        match self.transport() {
            Ok(Some(t)) => {
                mopts.set_transport(t);
            }
            Ok(None) => {}
            Err(e) => return SessionEnd::Lost(e),
        }
        let window = self.opts.max_inflight;
        let (client, mut ev) = AsyncClient::new(mopts, window * 2 + 1024);

        // Wait for CONNACK.
        let connack = loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                e = ev.poll() => match e {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => break ack,
                    Ok(_) => continue,
                    Err(e) => return SessionEnd::Lost(e.to_string()),
                },
            }
        };
        if connack.code != ConnectReturnCode::Success {
            return SessionEnd::Lost(format!("connection refused: {:?}", connack.code));
        }
        self.shared.stats.add_connects(1);
        let mut s = Session {
            client,
            tracker: Tracker::default(),
            announced: HashSet::new(),
            ready: false,
            limits_id: 0,
            payload_limit: self.opts.max_payload,
            window,
            pending_attr: HashMap::new(),
            next_attr_id: 1,
            qos: if self.opts.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
        };
        if let Some(p) = &connack.properties {
            if let Some(rm) = p.receive_max {
                s.window = s.window.min(usize::from(rm).max(1));
            }
            if let Some(mp) = p.max_packet_size {
                // Leave room for the fixed header, topic and properties.
                s.payload_limit = s
                    .payload_limit
                    .min((mp as usize).saturating_sub(128).max(256));
            }
        }
        tracing::info!(host = %self.opts.host, port = self.opts.port, "Connected to ThingsBoard.");

        let filters = [
            topic::ME_ATTRIBUTES.to_string(),
            format!("{}+", topic::ME_ATTRIBUTES_RESPONSE),
            format!("{}+", topic::ME_RPC_REQUEST),
            format!("{}+", topic::ME_RPC_RESPONSE),
            topic::ATTRIBUTES.to_string(),
            topic::ATTRIBUTES_RESPONSE.to_string(),
            topic::RPC.to_string(),
            topic::DISCONNECT.to_string(),
        ]
        .into_iter()
        .map(|path| {
            let mut f = Filter::new(path, QoS::AtLeastOnce);
            f.nolocal = true;
            f
        });
        if let Err(e) = s.client.try_subscribe_many(filters) {
            return SessionEnd::Lost(format!("subscribe failed: {e}"));
        }
        s.limits_id = u64::from(fastrand::u32(1_000_000..u32::MAX));
        let req = json!({"method": "getSessionLimits", "params": {"timeout": self.opts.session_limits_timeout.as_millis() as u64}});
        let limits_topic = format!("{}{}", topic::ME_RPC_REQUEST, s.limits_id);
        if let Err(e) = self.publish(
            &mut s,
            limits_topic,
            req.to_string().into_bytes(),
            QoS::AtLeastOnce,
            Token::Other,
        ) {
            return SessionEnd::Lost(e);
        }
        let limits_deadline = Instant::now() + self.opts.session_limits_timeout;
        let mut drain_deadline: Option<Instant> = None;

        loop {
            let batch_size = match self.limits.max_batch() {
                // Under a datapoint limit: one record first, then as many as fit the window.
                Some(m) => match self.dp_per_record {
                    0 => 1,
                    k => self.storage.read_batch_size().min((m / k).max(1)),
                },
                None => self.storage.read_batch_size(),
            };
            let throttle = self.limits.data_wait(Instant::now());
            let can_read = s.ready
                && drain_deadline.is_none()
                && throttle.is_zero()
                && s.tracker.pending() < s.window
                && s.tracker.pending_batches() < 4;
            tokio::select! {
                biased;
                _ = self.cancel.cancelled(), if drain_deadline.is_none() => {
                    // Stop reading new batches; wait (bounded) for the PUBACKs of what is in flight
                    // so storage can be acknowledged.
                    drain_deadline = Some(Instant::now() + Duration::from_secs(3));
                }
                _ = tokio::time::sleep_until(drain_deadline.unwrap_or_else(Instant::now)), if drain_deadline.is_some() => {
                    tracing::warn!(unconfirmed = s.tracker.pending(), "Shutting down with publishes still unconfirmed; they stay in storage.");
                    let _ = s.client.try_disconnect();
                    return SessionEnd::Cancelled;
                }
                e = ev.poll() => match e {
                    Ok(event) => {
                        if let Err(reason) = self.on_event(&mut s, event).await {
                            return SessionEnd::Lost(reason);
                        }
                    }
                    Err(e) => return SessionEnd::Lost(e.to_string()),
                },
                Some(c) = self.control_rx.recv() => {
                    if let Err(reason) = self.on_control(&mut s, c) {
                        return SessionEnd::Lost(reason);
                    }
                }
                _ = tokio::time::sleep_until(limits_deadline), if !s.ready => {
                    tracing::info!(timeout_ms = self.opts.session_limits_timeout.as_millis() as u64, "No answer to getSessionLimits; going on with the configured limits.");
                    if let Err(reason) = self.become_ready(&mut s) {
                        return SessionEnd::Lost(reason);
                    }
                }
                _ = tokio::time::sleep(throttle), if !throttle.is_zero() && s.ready && drain_deadline.is_none() => {
                    self.shared.stats.add_rate_limited(1);
                }
                r = self.storage.read(batch_size), if can_read => match r {
                    Ok(batch) => {
                        if let Err(reason) = self.publish_batch(&mut s, batch).await {
                            return SessionEnd::Lost(reason);
                        }
                    }
                    Err(e) => {
                        self.shared.stats.add_storage_errors(1);
                        tracing::error!(error = %e, "Reading from storage failed.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
            if drain_deadline.is_some() && s.tracker.pending() == 0 {
                let _ = s.client.try_disconnect();
                // Let the DISCONNECT go out.
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    while ev.poll().await.is_ok() {}
                })
                .await;
                return SessionEnd::Cancelled;
            }
        }
    }

    /// Session limits received or timed out: announce devices and start draining storage.
    /// Starts trying new connection settings (remote configuration).
    fn begin_trial(&mut self, opts: TbOptions, reply: oneshot::Sender<Result<(), String>>) {
        tracing::info!(host = %opts.host, port = opts.port, "Trying new ThingsBoard connection settings.");
        let old = std::mem::replace(&mut self.opts, opts);
        // A trial already running keeps the settings it would restore.
        let old = match self.trial.take() {
            Some(t) => {
                let _ = t.reply.send(Err("superseded by newer settings".into()));
                t.old
            }
            None => old,
        };
        let trial = self.opts.switch_trial;
        self.trial = Some(Trial {
            old,
            deadline: Instant::now() + trial,
            trial,
            reply,
        });
        self.reconnect_now = true;
    }

    fn become_ready(&mut self, s: &mut Session) -> Result<(), String> {
        s.ready = true;
        self.shared
            .stats
            .thingsboard_connected
            .store(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.trial.take() {
            tracing::info!("New ThingsBoard connection settings work; keeping them.");
            let _ = t.reply.send(Ok(()));
        }
        if let Some((reply, reason)) = self.reverted.take() {
            let _ = reply.send(Err(reason));
        }
        self.to_service(crate::messages::ServiceEvent::Ready);
        self.storage.rewind();
        let devices = self.shared.registry().connected();
        for (device, device_type) in devices {
            self.announce(s, &device, &device_type)?;
        }
        Ok(())
    }

    fn announce(&mut self, s: &mut Session, device: &str, device_type: &str) -> Result<(), String> {
        self.limits.took_control(Instant::now());
        let payload = json!({"device": device, "type": device_type})
            .to_string()
            .into_bytes();
        let qos = s.qos;
        self.publish(s, topic::CONNECT.to_string(), payload, qos, Token::Other)?;
        s.announced.insert(device.to_string());
        // As upstream: which connector serves the device, as its client attributes.
        let owner = {
            let reg = self.shared.registry();
            reg.owner(reg.original_name(device)).cloned()
        };
        if let Some(name) = owner {
            let ty = self
                .shared
                .routes
                .get(&name)
                .map(|r| r.0.to_string())
                .unwrap_or_default();
            let payload = json!({ device: {"connectorType": ty, "connectorName": &*name} })
                .to_string()
                .into_bytes();
            self.limits.took_control(Instant::now());
            self.publish(s, topic::ATTRIBUTES.to_string(), payload, qos, Token::Other)?;
        }
        Ok(())
    }

    fn publish(
        &mut self,
        s: &mut Session,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        token: Token,
    ) -> Result<(), String> {
        s.client
            .try_publish(topic, qos, false, payload)
            .map_err(|e| format!("cannot queue a publish: {e}"))?;
        s.tracker.queued(token);
        self.shared.stats.add_publishes(1);
        Ok(())
    }

    async fn publish_batch(
        &mut self,
        s: &mut Session,
        batch: crate::storage::Batch,
    ) -> Result<(), String> {
        let batch = self.renamed(batch);
        // Devices seen for the first time in this session are announced first; MQTT keeps the
        // order of publishes on one connection, so ThingsBoard knows the device before its data.
        for r in &batch.records {
            if !s.announced.contains(&r.device_name) {
                let t = if r.device_type.is_empty() {
                    "default"
                } else {
                    r.device_type.as_str()
                };
                let (d, t) = (r.device_name.clone(), t.to_string());
                self.announce(s, &d, &t)?;
            }
        }
        let packed = pack::pack(&batch.records, s.payload_limit);
        if packed.oversized > 0 {
            tracing::warn!(
                items = packed.oversized,
                limit = s.payload_limit,
                "Items larger than the payload limit are sent alone; ThingsBoard may reject them."
            );
        }
        let n = packed.telemetry.len() + packed.attributes.len();
        let datapoints: usize = batch.records.iter().map(|r| r.datapoints()).sum();
        let attrs: usize = batch.records.iter().map(|r| r.attributes.len()).sum();
        self.shared.stats.add_platform_attr_produced(attrs as u64);
        self.shared
            .stats
            .add_platform_ts_produced((datapoints - attrs) as u64);
        self.dp_per_record = batch
            .records
            .iter()
            .map(|r| r.datapoints())
            .max()
            .unwrap_or(1)
            .max(1);
        self.limits.took_data(n, datapoints, Instant::now());
        let id = s
            .tracker
            .begin_batch(batch.last_seq(), batch.records.len(), n);
        let qos = s.qos;
        for p in packed.telemetry {
            self.publish(s, topic::TELEMETRY.to_string(), p, qos, Token::Batch(id))?;
        }
        for p in packed.attributes {
            self.publish(s, topic::ATTRIBUTES.to_string(), p, qos, Token::Batch(id))?;
        }
        let done = s.tracker.drain_empty();
        self.ack_storage(done).await;
        Ok(())
    }

    /// Records of renamed devices carry the name ThingsBoard knows them by.
    fn renamed(&self, mut batch: crate::storage::Batch) -> crate::storage::Batch {
        let reg = self.shared.registry();
        if reg.has_renames() {
            for r in &mut batch.records {
                let n = reg.tb_name(&r.device_name);
                if n != r.device_name {
                    let n = n.to_string();
                    std::sync::Arc::make_mut(r).device_name = n;
                }
            }
        }
        batch
    }

    /// Hands an event to the services task (dropped if it is busy).
    pub(crate) fn to_service(&self, ev: crate::messages::ServiceEvent) {
        if let Some(tx) = &self.shared.service {
            if tx.try_send(ev).is_err() {
                self.shared.stats.queue_full("service", "client event");
            }
        }
    }

    async fn ack_storage(&self, done: Vec<tracker::Completed>) {
        let Some(last) = done.last() else { return };
        let records: usize = done.iter().map(|c| c.records).sum();
        match self.storage.ack(last.last_seq).await {
            Ok(()) => self.shared.stats.add_delivered(records as u64),
            Err(e) => {
                self.shared.stats.add_storage_errors(1);
                tracing::error!(error = %e, "Acknowledging delivered records to storage failed; they may be sent again.");
            }
        }
    }

    async fn on_event(&mut self, s: &mut Session, event: Event) -> Result<(), String> {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let done = s.tracker.on_outgoing(pkid);
                self.ack_storage(done).await;
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {}
                    PubAckReason::QuotaExceeded => {
                        // Throttled by ThingsBoard: pause device data, reconnect after a
                        // backoff and send again (the batch is not acknowledged, so nothing
                        // is lost).
                        self.shared.stats.add_server_throttled(1);
                        self.limits.server_throttled(Instant::now());
                        return Err("ThingsBoard rejected a publish: quota exceeded".into());
                    }
                    other => {
                        tracing::error!(reason = ?other, "ThingsBoard rejected a publish; it is not sent again.");
                    }
                }
                let done = s.tracker.on_puback(ack.pkid);
                self.ack_storage(done).await;
            }
            Event::Incoming(Packet::Publish(p)) => {
                self.shared.stats.add_downlink_received(1);
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                self.on_publish(s, &topic, &p.payload)?;
            }
            Event::Incoming(Packet::Disconnect(d)) => {
                return Err(format!(
                    "ThingsBoard disconnected the gateway: {:?}",
                    d.reason_code
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn on_control(&mut self, s: &mut Session, c: Control) -> Result<(), String> {
        match c {
            Control::Connect {
                device,
                device_type,
            } => {
                let device = self.shared.registry().tb_name(&device).to_string();
                if s.ready {
                    self.announce(s, &device, &device_type)?;
                }
            }
            Control::Disconnect { device } => {
                let device = self.shared.registry().tb_name(&device).to_string();
                if s.ready {
                    let payload = json!({ "device": device }).to_string().into_bytes();
                    let qos = s.qos;
                    self.publish(s, topic::DISCONNECT.to_string(), payload, qos, Token::Other)?;
                }
                s.announced.remove(&device);
            }
            Control::RpcReply { device, id, data } => {
                let device = device.map(|d| self.shared.registry().tb_name(&d).to_string());
                let (topic, payload) = match device {
                    Some(device) => (
                        topic::RPC.to_string(),
                        json!({"device": device, "id": id, "data": data}),
                    ),
                    None => (format!("{}{}", topic::ME_RPC_RESPONSE, id), data),
                };
                self.publish(
                    s,
                    topic,
                    payload.to_string().into_bytes(),
                    QoS::AtLeastOnce,
                    Token::Other,
                )?;
            }
            Control::AttributeRequest {
                device,
                client,
                keys,
                reply,
            } => {
                let id = s.next_attr_id;
                s.next_attr_id += 1;
                s.pending_attr.retain(|_, tx| !tx.is_closed());
                s.pending_attr.insert(id, reply);
                let device = self.shared.registry().tb_name(&device).to_string();
                let payload = json!({"id": id, "device": device, "client": client, "keys": keys});
                self.publish(
                    s,
                    topic::ATTRIBUTES_REQUEST.to_string(),
                    payload.to_string().into_bytes(),
                    QoS::AtLeastOnce,
                    Token::Other,
                )?;
            }
            Control::MePublish { topic, payload } => {
                if s.ready {
                    self.limits.took_own(Instant::now());
                    let qos = s.qos;
                    self.publish(
                        s,
                        topic,
                        payload.to_string().into_bytes(),
                        qos,
                        Token::Other,
                    )?;
                }
            }
            Control::Forget { device } => {
                s.announced.remove(&device);
            }
            Control::Switch { opts, reply } => {
                self.begin_trial(*opts, reply);
                let _ = s.client.try_disconnect();
                return Err("switching to new ThingsBoard connection settings".into());
            }
        }
        Ok(())
    }
}
