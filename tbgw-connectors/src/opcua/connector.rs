//! The OPC-UA connector's build step and run loop.
//!
//! One connection at a time. Each connection: connect (GetEndpoints, then a session on the
//! endpoint matching the configured policy and mode), read the server's operation limits,
//! browse the device nodes of every mapping, resolve each data point to a node id (batched),
//! then either create one subscription with a monitored item per data point or poll them with
//! batched Read requests. Devices are browsed again every `scanPeriodInMillis`; new devices are
//! added and vanished ones removed without a reconnect. When the connection is lost, every
//! device is reported disconnected and the connector reconnects with exponential backoff.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{FuturesUnordered, StreamExt};
use opcua::client::{
    ClientBuilder, IdentityToken, MonitoredItemMap, OnSubscriptionNotificationCore, Session,
    SessionPollResult,
};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    AttributeId, DataChangeNotification, DataValue, EndpointDescription, MessageSecurityMode,
    MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId, NotificationMessage,
    ObjectId, ReadValueId, StatusChangeNotification, TimestampsToReturn, UserTokenPolicy,
    VariableId,
};
use tbgw::backoff::Backoff;
use tbgw::config::{resolve_beside, ConfigError};
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{Downlink, RpcError};
use tbgw::model::{now_millis, DeviceData, Value};
use tokio::sync::{mpsc, Notify};

use super::browse::Browser;
use super::config::{MappingConfig, OpcUaConnectorConfig, RpcMethodConfig, ServerConfig};
use super::downlink;
use super::nodes::{self, NodeRef, TemplatePart};
use super::uplink::{render, render_data_value, TimestampLocation};

/// Default operation limit when the server publishes none (0 = "no limit").
const DEFAULT_LIMIT: usize = 1000;
/// Hard bound of the subscription buffer (values waiting to be converted); beyond it the oldest
/// values are dropped and counted, so a stalled storage cannot grow memory without bound.
const MAX_BUFFERED_VALUES: usize = 200_000;
/// Queue size of each monitored item on the server: several changes within one publishing
/// interval are all delivered.
const MONITORED_QUEUE_SIZE: u32 = 10;
/// Most elements of one array in a response (Publish responses carry one per sample).
const MAX_ARRAY_LENGTH: usize = 1_000_000;
/// Most chunks of one response (of 64 KiB each, so 64 MiB).
const MAX_CHUNK_COUNT: usize = 1024;
/// Largest response accepted.
const MAX_MESSAGE_SIZE: usize = 64 << 20;
/// Capacity of the session-event channel (connection lost / connected); events are rare.
const EVENT_CAPACITY: usize = 16;
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How a mapping finds its device nodes.
#[derive(Debug, Clone)]
pub(crate) enum DeviceSource {
    /// Browse-path regex, one regex per segment (the first may match `Root`).
    Path(Vec<SegmentMatcher>),
    /// A fixed node id.
    Id(NodeId),
}

/// One segment of a device pattern.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMatcher {
    ns: Option<u16>,
    re: fancy_regex::Regex,
}

impl SegmentMatcher {
    fn matches(&self, ns: u16, name: &str) -> bool {
        self.ns.is_none_or(|n| n == ns) && self.re.is_match(name).unwrap_or(false)
    }
}

/// A device name or profile expression.
#[derive(Debug, Clone)]
pub(crate) enum NameExpr {
    Constant(String),
    Template(Vec<TemplatePart>),
}

/// What a data point reads.
#[derive(Debug, Clone)]
pub(crate) enum PointKind {
    Node(NodeRef),
    Constant(Value),
}

/// A configured data point.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub key: String,
    pub attribute: bool,
    pub kind: PointKind,
    pub ts: TimestampLocation,
}

/// A validated mapping.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    pub source: DeviceSource,
    pub name: NameExpr,
    pub profile: NameExpr,
    pub points: Vec<Point>,
    pub rpc: Vec<RpcMethodConfig>,
    pub updates: Vec<(String, NodeRef)>,
    /// Device and datapoint report strategies, attached to every record of these devices.
    pub report: Option<Arc<tbgw::report::ReportOverrides>>,
}

/// Client identity.
#[derive(Debug, Clone)]
enum Identity {
    Anonymous,
    User(String, String),
}

/// A running OPC-UA connector. Build it with [`OpcUaFactory`](super::OpcUaFactory).
#[derive(Debug)]
pub struct OpcUaConnector {
    name: String,
    server: ServerConfig,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
    identity: Identity,
    pki_dir: PathBuf,
    own_cert: Option<(PathBuf, PathBuf)>,
    ca_cert: Option<PathBuf>,
    mappings: Arc<Vec<Mapping>>,
}

fn name_expr(file: &Path, key: &str, text: &str, source: &str) -> Result<NameExpr, ConfigError> {
    match source {
        "constant" => Ok(NameExpr::Constant(text.to_string())),
        "path" | "identifier" => nodes::parse_template(text)
            .map(NameExpr::Template)
            .map_err(|e| ConfigError::new(file, key, e)),
        other => Err(ConfigError::new(
            file,
            format!("{key}Source"),
            format!("unknown source {other:?}; expected constant, path or identifier"),
        )),
    }
}

impl OpcUaConnector {
    /// An empty record of `dev`, carrying its mapping's report strategies.
    fn device_data(&self, dev: &Device) -> DeviceData {
        let mut d = DeviceData::new(dev.name.to_string(), dev.profile.clone());
        d.report = self
            .mappings
            .get(dev.mapping)
            .and_then(|m| m.report.clone());
        d
    }

    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: OpcUaConnectorConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let s = &cfg.server;
        if !s.url.starts_with("opc.tcp://") {
            return Err(ConfigError::new(
                file,
                "server.url",
                format!("{:?} is not an opc.tcp:// URL", s.url),
            ));
        }
        for (key, v) in [
            ("server.timeoutInMillis", s.timeout_in_millis),
            ("server.pollPeriodInMillis", s.poll_period_in_millis),
            ("server.scanPeriodInMillis", s.scan_period_in_millis),
            (
                "server.subCheckPeriodInMillis",
                s.sub_check_period_in_millis,
            ),
            (
                "server.subDataMinBatchCreationTimeMs",
                s.sub_data_min_batch_creation_time_ms,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::new(file, key, "must be greater than 0"));
            }
        }
        if s.reconnect_backoff_initial_delay < 0.0 || s.reconnect_backoff_factor < 1.0 {
            return Err(ConfigError::new(
                file,
                "server.reconnectBackoffFactor",
                "the initial delay must be >= 0 and the factor >= 1",
            ));
        }
        let id = &s.identity;
        let mode = match id.mode.as_deref() {
            None => None,
            Some("None") => Some(MessageSecurityMode::None),
            Some("Sign") => Some(MessageSecurityMode::Sign),
            Some("SignAndEncrypt") => Some(MessageSecurityMode::SignAndEncrypt),
            Some(other) => {
                return Err(ConfigError::new(
                    file,
                    "server.identity.mode",
                    format!("unknown mode {other:?}; expected None, Sign or SignAndEncrypt"),
                ))
            }
        };
        let identity = match id.kind.as_str() {
            "anonymous" => Identity::Anonymous,
            "username" => Identity::User(
                id.username.clone().ok_or_else(|| {
                    ConfigError::new(
                        file,
                        "server.identity.username",
                        "missing; required by username identity",
                    )
                })?,
                id.password.clone().unwrap_or_default(),
            ),
            "certificates" | "cert.PEM" => Identity::Anonymous,
            other => {
                return Err(ConfigError::new(
                    file,
                    "server.identity.type",
                    format!(
                        "unknown identity {other:?}; expected anonymous, username or certificates"
                    ),
                ))
            }
        };
        let certificate_identity = matches!(id.kind.as_str(), "certificates" | "cert.PEM");
        // Upstream applies the security policy only with certificate identity (mode defaults to
        // SignAndEncrypt there); any identity may set `mode` explicitly here.
        let mode = mode.unwrap_or(if certificate_identity {
            MessageSecurityMode::SignAndEncrypt
        } else {
            MessageSecurityMode::None
        });
        let policy = if mode == MessageSecurityMode::None {
            if s.security.as_deref().is_some_and(|p| p != "None") {
                ignored.push("server.security".into());
            }
            SecurityPolicy::None
        } else {
            let text = s.security.as_deref().unwrap_or("Basic256Sha256");
            let p = parse_policy(text).ok_or_else(|| {
                ConfigError::new(
                    file,
                    "server.security",
                    format!(
                        "unknown security policy {text:?}; expected Basic128Rsa15, Basic256, \
                         Basic256Sha256, Aes128Sha256RsaOaep or Aes256Sha256RsaPss"
                    ),
                )
            })?;
            if p == SecurityPolicy::None {
                return Err(ConfigError::new(
                    file,
                    "server.security",
                    "policy None cannot be used with mode Sign or SignAndEncrypt",
                ));
            }
            p
        };
        let own_cert = match (&id.cert, &id.private_key) {
            (Some(c), Some(k)) => Some((resolve_beside(file, c), resolve_beside(file, k))),
            (None, None) => None,
            _ => {
                return Err(ConfigError::new(
                    file,
                    "server.identity.cert",
                    "cert and privateKey must be given together",
                ))
            }
        };
        let ca_cert = id.ca_cert.as_deref().map(|c| resolve_beside(file, c));
        let pki_dir = match &s.pki_dir {
            Some(d) => resolve_beside(file, d),
            None => resolve_beside(file, "opcua-pki"),
        };
        if s.sub_keep_alive_period_in_seconds > 0 && !s.enable_subscriptions {
            ignored.push("server.subKeepAlivePeriodInSeconds".into());
        }

        let mut mappings = Vec::new();
        for (i, m) in cfg.mapping.iter().enumerate() {
            mappings.push(build_mapping(file, &format!("mapping[{i}]"), m)?);
        }
        Ok(OpcUaConnector {
            name: name.to_string(),
            server: cfg.server,
            policy,
            mode,
            identity,
            pki_dir,
            own_cert,
            ca_cert,
            mappings: Arc::new(mappings),
        })
    }
}

fn parse_policy(text: &str) -> Option<SecurityPolicy> {
    let p = match text {
        "None" => SecurityPolicy::None,
        "Basic128Rsa15" => SecurityPolicy::Basic128Rsa15,
        "Basic256" => SecurityPolicy::Basic256,
        "Basic256Sha256" => SecurityPolicy::Basic256Sha256,
        "Aes128Sha256RsaOaep" | "Aes128_Sha256_RsaOaep" | "Aes128-Sha256-RsaOaep" => {
            SecurityPolicy::Aes128Sha256RsaOaep
        }
        "Aes256Sha256RsaPss" | "Aes256_Sha256_RsaPss" | "Aes256-Sha256-RsaPss" => {
            SecurityPolicy::Aes256Sha256RsaPss
        }
        _ => return None,
    };
    Some(p)
}

fn build_mapping(file: &Path, key: &str, m: &MappingConfig) -> Result<Mapping, ConfigError> {
    let source = match m.device_node_source.as_str() {
        "path" => {
            let mut segs = Vec::new();
            for part in nodes::split_path(&m.device_node_pattern) {
                let seg = nodes::segment(&part);
                let re = fancy_regex::Regex::new(&format!("^(?:{})$", seg.name)).map_err(|e| {
                    ConfigError::new(
                        file,
                        format!("{key}.deviceNodePattern"),
                        format!("segment {part:?} is not a valid regex: {e}"),
                    )
                })?;
                segs.push(SegmentMatcher { ns: seg.ns, re });
            }
            DeviceSource::Path(segs)
        }
        "identifier" => DeviceSource::Id(
            nodes::parse_node_id(nodes::strip_placeholder(&m.device_node_pattern)).ok_or_else(
                || {
                    ConfigError::new(
                        file,
                        format!("{key}.deviceNodePattern"),
                        format!("{:?} is not a node id", m.device_node_pattern),
                    )
                },
            )?,
        ),
        other => {
            return Err(ConfigError::new(
                file,
                format!("{key}.deviceNodeSource"),
                format!("unknown source {other:?}; expected path or identifier"),
            ))
        }
    };
    let di = &m.device_info;
    let name = name_expr(
        file,
        &format!("{key}.deviceInfo.deviceNameExpression"),
        &di.device_name_expression,
        &di.device_name_expression_source,
    )?;
    let profile = name_expr(
        file,
        &format!("{key}.deviceInfo.deviceProfileExpression"),
        di.device_profile_expression.as_deref().unwrap_or("default"),
        &di.device_profile_expression_source,
    )?;
    let mut points = Vec::new();
    let mut overrides = tbgw::report::ReportOverrides::default();
    let mut unused = Vec::new();
    if let Some(v) = &m.report_strategy {
        overrides.device =
            tbgw::report::parse_strategy(v, file, &format!("{key}.reportStrategy"), &mut unused)?;
    }
    for (section, list, attribute) in [
        ("attributes", &m.attributes, true),
        ("timeseries", &m.timeseries, false),
    ] {
        for (j, p) in list.iter().enumerate() {
            let pkey = format!("{key}.{section}[{j}]");
            if let Some(v) = &p.report_strategy {
                if let Some(st) = tbgw::report::parse_strategy(
                    v,
                    file,
                    &format!("{pkey}.reportStrategy"),
                    &mut unused,
                )? {
                    overrides.keys.entry(p.key.clone()).or_insert(st);
                }
            }
            let ts = match p.timestamp_location.as_deref() {
                None => TimestampLocation::Gateway,
                Some(t) => TimestampLocation::parse(t).ok_or_else(|| {
                    ConfigError::new(
                        file,
                        format!("{pkey}.timestampLocation"),
                        format!("unknown location {t:?}; expected gateway, source or server"),
                    )
                })?,
            };
            let kind = match p.kind.as_str() {
                "constant" => PointKind::Constant(Value::from_json(p.value.clone())),
                "path" | "identifier" => {
                    let text = p.value.as_str().ok_or_else(|| {
                        ConfigError::new(file, format!("{pkey}.value"), "must be a string")
                    })?;
                    PointKind::Node(
                        nodes::parse_node_ref(text)
                            .map_err(|e| ConfigError::new(file, format!("{pkey}.value"), e))?,
                    )
                }
                other => {
                    return Err(ConfigError::new(
                        file,
                        format!("{pkey}.type"),
                        format!("unknown type {other:?}; expected path, identifier or constant"),
                    ))
                }
            };
            points.push(Point {
                key: p.key.clone(),
                attribute,
                kind,
                ts,
            });
        }
    }
    let mut updates = Vec::new();
    for (j, u) in m.attributes_updates.iter().enumerate() {
        let node = nodes::parse_node_ref(&u.value).map_err(|e| {
            ConfigError::new(file, format!("{key}.attributes_updates[{j}].value"), e)
        })?;
        updates.push((u.key.clone(), node));
    }
    Ok(Mapping {
        source,
        name,
        profile,
        points,
        rpc: m.rpc_methods.clone(),
        updates,
        report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
    })
}

/// A device found on the server.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub name: Arc<str>,
    pub profile: String,
    pub node: NodeId,
    pub mapping: usize,
    handles: Vec<u32>,
    constants: Vec<(String, bool, Value)>,
}

/// A data point bound to a node.
#[derive(Debug)]
struct Tag {
    device: (usize, NodeId),
    key: String,
    attribute: bool,
    ts: TimestampLocation,
    node: NodeId,
    monitored: Option<u32>,
}

/// Operation limits of the server.
#[derive(Debug, Clone, Copy)]
struct Limits {
    read: usize,
    browse: usize,
    monitored: usize,
}

/// What the session event loop tells the run loop.
#[derive(Debug)]
enum LoopEvent {
    Connected,
    Lost(String),
}

/// Values from the subscription, waiting to be converted.
#[derive(Default)]
struct SubBuffer {
    values: Vec<(u32, DataValue)>,
}

/// The subscription callback: moves whole notification messages into the shared buffer.
struct Collector {
    buffer: Arc<Mutex<SubBuffer>>,
    notify: Arc<Notify>,
    last_message: Arc<AtomicI64>,
    dropped: Arc<AtomicU64>,
    batch: usize,
}

impl OnSubscriptionNotificationCore for Collector {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        self.last_message.store(now_millis(), Ordering::Relaxed);
        let Some(data) = notification.notification_data else {
            return;
        };
        for obj in data {
            if let Some(dcn) = obj.inner_as::<DataChangeNotification>() {
                let items = dcn.monitored_items.as_deref().unwrap_or_default();
                let Ok(mut buf) = self.buffer.lock() else {
                    return;
                };
                if buf.values.len() + items.len() > MAX_BUFFERED_VALUES {
                    let excess = (buf.values.len() + items.len() - MAX_BUFFERED_VALUES)
                        .min(buf.values.len());
                    buf.values.drain(..excess);
                    self.dropped.fetch_add(excess as u64, Ordering::Relaxed);
                }
                buf.values
                    .extend(items.iter().map(|i| (i.client_handle, i.value.clone())));
                if buf.values.len() >= self.batch {
                    self.notify.notify_one();
                }
            } else if let Some(s) = obj.inner_as::<StatusChangeNotification>() {
                tracing::warn!(status = %s.status, "Subscription status changed.");
            }
        }
    }
}

/// One live connection.
struct Live {
    session: Arc<Session>,
    events: mpsc::Receiver<LoopEvent>,
    /// Stops the session's event task (a sub-task of the run) when the connection is dropped.
    _event_task: tokio_util::sync::DropGuard,
    limits: Limits,
    devices: HashMap<(usize, NodeId), Device>,
    tags: HashMap<u32, Tag>,
    next_handle: u32,
    subscription: Option<u32>,
    buffer: Arc<Mutex<SubBuffer>>,
    notify: Arc<Notify>,
    last_message: Arc<AtomicI64>,
    dropped: Arc<AtomicU64>,
    reported_dropped: u64,
    bad_logged: HashSet<u32>,
}

/// Why a connection ended.
enum End {
    Cancelled,
    Lost(String),
}

fn err_text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[async_trait]
impl Connector for OpcUaConnector {
    /// As upstream: a device's `attributes_updates` keys are synced when it connects (the keys
    /// of every mapping; ThingsBoard answers those a device has).
    fn shared_attribute_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .mappings
            .iter()
            .flat_map(|m| m.updates.iter().map(|(k, _)| k.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let mut failures: u32 = 0;
        // `reconnectBackoffInitialDelay` (s) multiplied by `reconnectBackoffFactor` after each
        // failed attempt, at most MAX_BACKOFF; a connection starts from the initial delay again.
        let initial = self
            .server
            .reconnect_backoff_initial_delay
            .clamp(0.0, MAX_BACKOFF.as_secs_f64());
        let mut backoff = Backoff::new(Duration::from_secs_f64(initial), MAX_BACKOFF)
            .with_factor(self.server.reconnect_backoff_factor);
        loop {
            if cx.cancellation().is_cancelled() {
                return Ok(());
            }
            match self.connect(cx).await {
                Ok(mut live) => {
                    failures = 0;
                    backoff.reset();
                    tracing::info!(connector = %self.name, url = %self.server.url, "Connected to the OPC-UA server.");
                    let end = self.serve(cx, &mut live).await;
                    let names: Vec<Arc<str>> =
                        live.devices.values().map(|d| d.name.clone()).collect();
                    match end {
                        End::Cancelled => {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(self.server.timeout_in_millis),
                                live.session.disconnect(),
                            )
                            .await;
                            return Ok(());
                        }
                        End::Lost(reason) => {
                            cx.stats().add_errors(1);
                            tracing::warn!(connector = %self.name, error = %reason, "Lost the OPC-UA connection; reconnecting.");
                            for n in names {
                                cx.uplink()
                                    .disconnect_device(n.to_string())
                                    .await
                                    .map_err(|_| ConnectorError::Closed)?;
                            }
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    cx.stats().add_errors(1);
                    tracing::warn!(connector = %self.name, url = %self.server.url, attempt = failures, error = %e, "Could not connect to the OPC-UA server.");
                    if failures > self.server.reconnect_retries_count {
                        return Err(ConnectorError::Connection(format!(
                            "{} attempts to connect to {} failed; last error: {e}",
                            failures, self.server.url
                        )));
                    }
                }
            }
            if !self.wait_answering(cx, backoff.next_delay()).await {
                return Ok(());
            }
        }
    }
}

impl OpcUaConnector {
    /// Sleeps for `delay` while answering downlink requests as unreachable. `false` when
    /// cancelled.
    async fn wait_answering(&self, cx: &mut ConnectorContext, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let cancel = cx.cancellation().clone();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return false,
                _ = &mut sleep => return true,
                dl = cx.recv_downlink() => match dl {
                    Some(Downlink::Rpc(rpc)) => rpc.responder.err(RpcError::Unreachable(format!(
                        "not connected to the OPC-UA server {}", self.server.url
                    ))),
                    Some(Downlink::AttributeUpdate(u)) => tracing::warn!(
                        connector = %self.name, device = %u.device,
                        "Attribute update dropped: not connected to the OPC-UA server."),
                    Some(_) => {}
                    None => return false,
                },
            }
        }
    }

    async fn connect(&self, cx: &mut ConnectorContext) -> Result<Live, String> {
        let timeout = Duration::from_millis(self.server.timeout_in_millis);
        let uri = self
            .server
            .uri
            .clone()
            .unwrap_or_else(|| "urn:tbgw:opcua:client".to_string());
        let mut builder = ClientBuilder::new()
            .application_name("tbgw OPC-UA connector")
            .application_uri(uri.clone())
            .product_uri(uri)
            .pki_dir(self.pki_dir.clone())
            .session_retry_limit(0)
            .session_timeout(self.server.session_timeout_in_millis.min(u32::MAX as u64) as u32)
            .request_timeout(timeout)
            .keep_alive_interval(Duration::from_secs(5))
            .max_failed_keep_alive_count(3)
            .recreate_subscriptions(false)
            .trust_server_certs(self.ca_cert.is_none())
            .verify_server_certs(false)
            // async-opcua's defaults (1,000 array elements, 5 chunks per message) are below
            // what one Publish response carries for a subscription of 1,000 tags with queued
            // samples; the session was dropped with BadDecodingError and nothing was delivered.
            .max_array_length(MAX_ARRAY_LENGTH)
            .max_chunk_count(MAX_CHUNK_COUNT)
            .max_message_size(MAX_MESSAGE_SIZE);
        builder = match &self.own_cert {
            Some((cert, key)) => builder
                .certificate_path(cert.clone())
                .private_key_path(key.clone())
                .create_sample_keypair(false),
            // Also without security: the client then has an application instance
            // certificate like every OPC-UA application (created once in the PKI folder), and
            // async-opcua does not log errors about a missing one on every connect.
            None => builder.create_sample_keypair(true),
        };
        let mut client = builder.client().map_err(|e| e.join("; "))?;
        if let Some(ca) = &self.ca_cert {
            let cert = opcua::crypto::CertificateStore::read_cert(ca)
                .map_err(|e| format!("cannot read caCert {}: {e}", ca.display()))?;
            let store = client.certificate_store().clone();
            let guard = store.write();
            guard.ensure_pki_path()?;
            let path = guard
                .trusted_certs_dir()
                .join(opcua::crypto::CertificateStore::cert_file_name(&cert));
            let der = cert
                .to_der()
                .map_err(|e| format!("cannot encode caCert {}: {e}", ca.display()))?;
            std::fs::write(&path, der)
                .map_err(|e| format!("cannot trust caCert {}: {e}", ca.display()))?;
        }
        let token = match &self.identity {
            Identity::Anonymous => IdentityToken::Anonymous,
            Identity::User(u, p) => IdentityToken::new_user_name(u.clone(), p.clone()),
        };
        let endpoint: EndpointDescription = (
            self.server.url.as_str(),
            self.policy.to_uri(),
            self.mode,
            UserTokenPolicy::anonymous(),
        )
            .into();
        let (session, event_loop) = tokio::time::timeout(
            timeout,
            client.connect_to_matching_endpoint(endpoint, token),
        )
        .await
        .map_err(|_| format!("no answer to GetEndpoints within {timeout:?}"))?
        .map_err(err_text)?;
        let (tx, mut events) = mpsc::channel(EVENT_CAPACITY);
        let stream = event_loop.enter();
        let stop = cx.cancellation().child_token();
        let stopped = stop.clone();
        cx.spawn("OPC-UA session events", async move {
            tokio::pin!(stream);
            let reason = loop {
                let next = tokio::select! {
                    _ = stopped.cancelled() => return Ok(()),
                    next = stream.next() => next,
                };
                match next {
                    Some(Ok(SessionPollResult::Reconnected(_))) => {
                        let _ = tx.send(LoopEvent::Connected).await;
                    }
                    Some(Ok(SessionPollResult::ConnectionLost(code))) => {
                        break format!("connection lost: {code}")
                    }
                    Some(Ok(_)) => {}
                    Some(Err(code)) => break format!("session failed: {code}"),
                    None => break "session closed".to_string(),
                }
            };
            let _ = tx.send(LoopEvent::Lost(reason)).await;
            Ok(())
        });
        let guard = Live {
            session: session.clone(),
            events: mpsc::channel(1).1,
            _event_task: stop.drop_guard(),
            limits: Limits {
                read: DEFAULT_LIMIT,
                browse: DEFAULT_LIMIT,
                monitored: DEFAULT_LIMIT,
            },
            devices: HashMap::new(),
            tags: HashMap::new(),
            next_handle: 1,
            subscription: None,
            buffer: Arc::default(),
            notify: Arc::default(),
            last_message: Arc::new(AtomicI64::new(now_millis())),
            dropped: Arc::default(),
            reported_dropped: 0,
            bad_logged: HashSet::new(),
        };
        match tokio::time::timeout(timeout * 2, events.recv()).await {
            Ok(Some(LoopEvent::Connected)) => {}
            Ok(Some(LoopEvent::Lost(r))) => return Err(r),
            Ok(None) => return Err("session closed".into()),
            Err(_) => return Err(format!("no session within {:?}", timeout * 2)),
        }
        let mut live = guard;
        live.events = events;
        live.limits = read_limits(&session).await;
        if self.server.enable_subscriptions {
            let collector = Collector {
                buffer: live.buffer.clone(),
                notify: live.notify.clone(),
                last_message: live.last_message.clone(),
                dropped: live.dropped.clone(),
                batch: self.server.sub_data_max_batch_size.max(1),
            };
            let interval = self.server.sub_check_period_in_millis;
            let keep_alive = (10_000 / interval).clamp(1, 1000) as u32;
            let id = session
                .create_subscription(
                    Duration::from_millis(interval),
                    keep_alive * 3,
                    keep_alive,
                    0,
                    0,
                    true,
                    collector,
                )
                .await
                .map_err(|e| format!("cannot create a subscription: {e}"))?;
            live.subscription = Some(id);
        }
        self.scan(cx, &mut live).await?;
        Ok(live)
    }

    /// The connected run loop.
    async fn serve(&self, cx: &mut ConnectorContext, live: &mut Live) -> End {
        let s = &self.server;
        let subs = s.enable_subscriptions;
        let mut flush =
            tokio::time::interval(Duration::from_millis(s.sub_data_min_batch_creation_time_ms));
        let mut poll = tokio::time::interval(Duration::from_millis(s.poll_period_in_millis));
        let scan_period = Duration::from_millis(s.scan_period_in_millis);
        let mut scan =
            tokio::time::interval_at(tokio::time::Instant::now() + scan_period, scan_period);
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        for t in [&mut flush, &mut poll, &mut scan, &mut watchdog] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let keep_alive_ms = (s.sub_keep_alive_period_in_seconds * 1000) as i64;
        let mut pending = FuturesUnordered::new();
        let cancel = cx.cancellation().clone();
        let notify = live.notify.clone();
        loop {
            // In-flight downlink futures live in `pending` and are dropped (their responders
            // answer with an error) when the loop ends; buffered subscription values are
            // flushed before returning on cancel.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let _ = self.flush(cx, live).await;
                    return End::Cancelled;
                }
                ev = live.events.recv() => match ev {
                    Some(LoopEvent::Connected) => {}
                    Some(LoopEvent::Lost(r)) => return End::Lost(r),
                    None => return End::Lost("session event loop ended".into()),
                },
                _ = notify.notified(), if subs => {
                    if self.flush(cx, live).await.is_err() { return End::Cancelled; }
                }
                _ = flush.tick(), if subs => {
                    if self.flush(cx, live).await.is_err() { return End::Cancelled; }
                }
                _ = poll.tick(), if !subs => {
                    match self.poll(cx, live).await {
                        Ok(()) => {}
                        Err(PollError::Closed) => return End::Cancelled,
                        Err(PollError::Failed(e)) => return End::Lost(e),
                    }
                }
                _ = scan.tick() => {
                    if let Err(e) = self.scan(cx, live).await {
                        return End::Lost(format!("scan failed: {e}"));
                    }
                }
                _ = watchdog.tick(), if subs && keep_alive_ms > 0 => {
                    let age = now_millis() - live.last_message.load(Ordering::Relaxed);
                    if age > keep_alive_ms {
                        return End::Lost(format!("no subscription message for {age} ms"));
                    }
                }
                dl = cx.recv_downlink() => match dl {
                    Some(dl) => {
                        cx.stats().add_downlink(1);
                        let devices: Vec<Device> = live.devices.values().cloned().collect();
                        pending.push(downlink::handle(
                            dl,
                            live.session.clone(),
                            devices,
                            self.mappings.clone(),
                            live.limits.browse,
                            cx.stats().clone(),
                        ));
                    }
                    None => return End::Cancelled,
                },
                Some(()) = pending.next(), if !pending.is_empty() => {}
            }
        }
    }

    /// Converts and sends buffered subscription values. `Err` when the gateway is closing.
    async fn flush(&self, cx: &ConnectorContext, live: &mut Live) -> Result<(), ()> {
        let values = match live.buffer.lock() {
            Ok(mut b) => std::mem::take(&mut b.values),
            Err(_) => return Ok(()),
        };
        let dropped = live.dropped.load(Ordering::Relaxed);
        if dropped > live.reported_dropped {
            cx.stats().add_errors(dropped - live.reported_dropped);
            tracing::warn!(connector = %self.name, dropped = dropped - live.reported_dropped, "Subscription values dropped: the gateway could not keep up.");
            live.reported_dropped = dropped;
        }
        if values.is_empty() {
            return Ok(());
        }
        cx.stats().add_messages_received(values.len() as u64);
        let mut out: HashMap<(usize, NodeId), DeviceData> = HashMap::new();
        let mut count = 0usize;
        for (handle, dv) in values {
            self.add_value(cx, live, &mut out, handle, &dv);
            count += 1;
            if count >= self.server.sub_data_max_batch_size.max(1) {
                count = 0;
                send_all(cx, &mut out).await?;
            }
        }
        send_all(cx, &mut out).await
    }

    fn add_value(
        &self,
        cx: &ConnectorContext,
        live: &mut Live,
        out: &mut HashMap<(usize, NodeId), DeviceData>,
        handle: u32,
        dv: &DataValue,
    ) {
        let Some(tag) = live.tags.get(&handle) else {
            return;
        };
        let Some(dev) = live.devices.get(&tag.device) else {
            return;
        };
        let (ts, value, bad) = render_data_value(dv, tag.ts);
        if bad {
            cx.stats().add_convert_errors(1);
            if live.bad_logged.insert(handle) {
                tracing::warn!(connector = %self.name, device = %dev.name, key = %tag.key, node = %tag.node, status = %value, "Node reported a bad status; sending the status as the value.");
            }
        } else if !live.bad_logged.is_empty() {
            live.bad_logged.remove(&handle);
        }
        let d = out
            .entry(tag.device.clone())
            .or_insert_with(|| self.device_data(dev));
        if tag.attribute {
            d.push_attribute(tag.key.clone(), value);
        } else {
            d.push_telemetry(ts, tag.key.clone(), value);
        }
    }

    /// Reads every tag once, in batches within the server's read limit, and sends the values.
    async fn poll(&self, cx: &ConnectorContext, live: &mut Live) -> Result<(), PollError> {
        let mut handles: Vec<(u32, NodeId)> = live
            .tags
            .iter()
            .map(|(h, t)| (*h, t.node.clone()))
            .collect();
        handles.sort_by_key(|(h, _)| *h);
        let mut out: HashMap<(usize, NodeId), DeviceData> = HashMap::new();
        for chunk in handles.chunks(live.limits.read.max(1)) {
            let req: Vec<ReadValueId> = chunk
                .iter()
                .map(|(_, n)| ReadValueId {
                    node_id: n.clone(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                })
                .collect();
            let values = live
                .session
                .read(&req, TimestampsToReturn::Both, 0.0)
                .await
                .map_err(|e| PollError::Failed(format!("read failed: {e}")))?;
            cx.stats().add_messages_received(values.len() as u64);
            for ((h, _), dv) in chunk.iter().zip(values) {
                self.add_value(cx, live, &mut out, *h, &dv);
            }
        }
        let now = now_millis();
        for (key, dev) in &live.devices {
            if dev.constants.is_empty() {
                continue;
            }
            let d = out
                .entry(key.clone())
                .or_insert_with(|| self.device_data(dev));
            push_constants(d, dev, now);
        }
        send_all(cx, &mut out).await.map_err(|_| PollError::Closed)
    }

    /// Finds device nodes, adds new devices (resolving their data points and creating
    /// monitored items), removes vanished ones.
    async fn scan(&self, cx: &ConnectorContext, live: &mut Live) -> Result<(), String> {
        let session = live.session.clone();
        let mut browser = Browser::new(&session, live.limits.browse);
        let mut found: HashSet<(usize, NodeId)> = HashSet::new();
        let mut new_devices = Vec::new();
        for (mi, m) in self.mappings.iter().enumerate() {
            let nodes = match &m.source {
                DeviceSource::Id(id) => vec![id.clone()],
                DeviceSource::Path(segs) => find_devices(&mut browser, segs)
                    .await
                    .map_err(|e| format!("browse failed: {e}"))?,
            };
            for n in nodes {
                let key = (mi, n.clone());
                found.insert(key.clone());
                if !live.devices.contains_key(&key) {
                    new_devices.push(key);
                }
            }
        }
        // Vanished devices.
        let gone: Vec<(usize, NodeId)> = live
            .devices
            .keys()
            .filter(|k| !found.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(dev) = live.devices.remove(&key) {
                let mut items = Vec::new();
                for h in &dev.handles {
                    if let Some(t) = live.tags.remove(h) {
                        items.extend(t.monitored);
                    }
                }
                if let (Some(sub), false) = (live.subscription, items.is_empty()) {
                    if let Err(e) = session.delete_monitored_items(sub, &items).await {
                        tracing::warn!(connector = %self.name, error = %e, "Could not delete monitored items.");
                    }
                }
                tracing::info!(connector = %self.name, device = %dev.name, "Device node is gone.");
                cx.uplink()
                    .disconnect_device(dev.name.to_string())
                    .await
                    .map_err(|_| "gateway closed".to_string())?;
            }
        }
        if new_devices.is_empty() {
            return Ok(());
        }
        let mut new_handles = Vec::new();
        for key in new_devices {
            let m = &self.mappings[key.0];
            let name = match self
                .render_name(&session, &mut browser, &key.1, &m.name)
                .await
            {
                Some(n) if !n.is_empty() => n,
                _ => {
                    cx.stats().add_convert_errors(1);
                    tracing::warn!(connector = %self.name, node = %key.1, "Could not render the device name; device skipped until the next scan.");
                    continue;
                }
            };
            let profile = self
                .render_name(&session, &mut browser, &key.1, &m.profile)
                .await
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "default".into());
            // Resolve the data points.
            let mut paths = Vec::new();
            let mut which = Vec::new();
            let mut constants = Vec::new();
            let mut direct = Vec::new();
            for (pi, p) in m.points.iter().enumerate() {
                match &p.kind {
                    PointKind::Constant(v) => {
                        constants.push((p.key.clone(), p.attribute, v.clone()))
                    }
                    PointKind::Node(NodeRef::Id(id)) => direct.push((pi, id.clone())),
                    PointKind::Node(NodeRef::Relative(segs)) => {
                        paths.push((key.1.clone(), segs.clone()));
                        which.push(pi);
                    }
                    PointKind::Node(NodeRef::Absolute(segs)) => {
                        paths.push((ObjectId::RootFolder.into(), segs.clone()));
                        which.push(pi);
                    }
                }
            }
            let resolved = browser
                .resolve(&paths)
                .await
                .map_err(|e| format!("browse failed: {e}"))?;
            let mut bound = direct;
            for (pi, r) in which.into_iter().zip(resolved) {
                match r {
                    Some(n) => bound.push((pi, n)),
                    None => {
                        cx.stats().add_convert_errors(1);
                        if let PointKind::Node(nr) = &m.points[pi].kind {
                            tracing::warn!(connector = %self.name, device = %name, key = %m.points[pi].key, path = %nr, "Node not found; the data point is skipped.");
                        }
                    }
                }
            }
            let name: Arc<str> = Arc::from(name.as_str());
            let mut handles = Vec::new();
            for (pi, node) in bound {
                let p = &m.points[pi];
                let h = live.next_handle;
                live.next_handle += 1;
                if self.server.show_map {
                    tracing::info!(connector = %self.name, device = %name, key = %p.key, node = %node, "Mapped data point.");
                }
                live.tags.insert(
                    h,
                    Tag {
                        device: key.clone(),
                        key: p.key.clone(),
                        attribute: p.attribute,
                        ts: p.ts,
                        node,
                        monitored: None,
                    },
                );
                handles.push(h);
            }
            new_handles.extend(handles.iter().copied());
            tracing::info!(connector = %self.name, device = %name, node = %key.1, points = handles.len(), "Device found.");
            cx.uplink()
                .connect_device(name.to_string(), profile.clone())
                .await
                .map_err(|_| "gateway closed".to_string())?;
            let dev = Device {
                name,
                profile,
                node: key.1.clone(),
                mapping: key.0,
                handles,
                constants,
            };
            if !dev.constants.is_empty() {
                let mut d = self.device_data(&dev);
                push_constants(&mut d, &dev, now_millis());
                cx.uplink()
                    .send(d)
                    .await
                    .map_err(|_| "gateway closed".to_string())?;
            }
            live.devices.insert(key, dev);
        }
        if let Some(sub) = live.subscription {
            self.monitor(live, sub, &new_handles).await?;
        }
        Ok(())
    }

    /// Creates monitored items for `handles`, in batches.
    async fn monitor(&self, live: &mut Live, sub: u32, handles: &[u32]) -> Result<(), String> {
        let batch = self
            .server
            .subscription_process_batch_size
            .min(live.limits.monitored)
            .max(1);
        for chunk in handles.chunks(batch) {
            let req: Vec<MonitoredItemCreateRequest> = chunk
                .iter()
                .filter_map(|h| live.tags.get(h).map(|t| (h, t)))
                .map(|(h, t)| MonitoredItemCreateRequest {
                    item_to_monitor: ReadValueId {
                        node_id: t.node.clone(),
                        attribute_id: AttributeId::Value as u32,
                        ..Default::default()
                    },
                    monitoring_mode: MonitoringMode::Reporting,
                    requested_parameters: MonitoringParameters {
                        client_handle: *h,
                        sampling_interval: 0.0,
                        queue_size: MONITORED_QUEUE_SIZE,
                        discard_oldest: true,
                        ..Default::default()
                    },
                })
                .collect();
            let results = live
                .session
                .create_monitored_items(sub, TimestampsToReturn::Both, req)
                .await
                .map_err(|e| format!("cannot create monitored items: {e}"))?;
            for (h, r) in chunk.iter().zip(results) {
                if let Some(t) = live.tags.get_mut(h) {
                    if r.result.status_code.is_good() {
                        t.monitored = Some(r.result.monitored_item_id);
                    } else {
                        tracing::warn!(connector = %self.name, key = %t.key, node = %t.node, status = %r.result.status_code, "Server refused a monitored item.");
                    }
                }
            }
        }
        Ok(())
    }

    /// Renders a device name or profile expression against the device node.
    async fn render_name(
        &self,
        session: &Session,
        browser: &mut Browser<'_>,
        device: &NodeId,
        expr: &NameExpr,
    ) -> Option<String> {
        let parts = match expr {
            NameExpr::Constant(s) => return Some(s.clone()),
            NameExpr::Template(parts) => parts,
        };
        let mut out = String::new();
        for part in parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Node(r) => {
                    let node = resolve_one(browser, device, r).await?;
                    let dv = session
                        .read(
                            &[ReadValueId {
                                node_id: node,
                                attribute_id: AttributeId::Value as u32,
                                ..Default::default()
                            }],
                            TimestampsToReturn::Neither,
                            0.0,
                        )
                        .await
                        .ok()?
                        .into_iter()
                        .next()?;
                    if dv.status.is_some_and(|s| s.is_bad()) {
                        return None;
                    }
                    out.push_str(&render(dv.value.as_ref()?).to_string());
                }
            }
        }
        Some(out)
    }
}

/// Resolves one node expression relative to `device`.
pub(crate) async fn resolve_one(
    browser: &mut Browser<'_>,
    device: &NodeId,
    r: &NodeRef,
) -> Option<NodeId> {
    match r {
        NodeRef::Id(id) => Some(id.clone()),
        NodeRef::Relative(segs) => browser
            .resolve(&[(device.clone(), segs.clone())])
            .await
            .ok()?
            .pop()
            .flatten(),
        NodeRef::Absolute(segs) => browser
            .resolve(&[(ObjectId::RootFolder.into(), segs.clone())])
            .await
            .ok()?
            .pop()
            .flatten(),
    }
}

enum PollError {
    Closed,
    Failed(String),
}

fn push_constants(d: &mut DeviceData, dev: &Device, ts: i64) {
    for (k, attr, v) in &dev.constants {
        if *attr {
            d.push_attribute(k.clone(), v.clone());
        } else {
            d.push_telemetry(ts, k.clone(), v.clone());
        }
    }
}

async fn send_all(
    cx: &ConnectorContext,
    out: &mut HashMap<(usize, NodeId), DeviceData>,
) -> Result<(), ()> {
    for (_, d) in out.drain() {
        cx.uplink().send(d).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Browses level by level for nodes whose browse path matches the pattern.
async fn find_devices(
    browser: &mut Browser<'_>,
    segs: &[SegmentMatcher],
) -> Result<Vec<NodeId>, opcua::types::StatusCode> {
    let (mut current, rest): (Vec<NodeId>, &[SegmentMatcher]) = match segs.first() {
        Some(first) if first.matches(0, "Root") => (vec![ObjectId::RootFolder.into()], &segs[1..]),
        _ => (vec![ObjectId::ObjectsFolder.into()], segs),
    };
    for seg in rest {
        browser.fetch(&current).await?;
        let mut next = Vec::new();
        for n in &current {
            for c in browser.children(n).iter() {
                if seg.matches(c.ns, &c.name) && !next.contains(&c.node) {
                    next.push(c.node.clone());
                }
            }
        }
        current = next;
        if current.is_empty() {
            break;
        }
    }
    Ok(current)
}

/// Reads the server's operation limits (0 or unreadable = [`DEFAULT_LIMIT`]).
async fn read_limits(session: &Session) -> Limits {
    let ids = [
        VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
        VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
        VariableId::Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    ];
    let req: Vec<ReadValueId> = ids
        .iter()
        .map(|id| ReadValueId {
            node_id: (*id).into(),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        })
        .collect();
    let vals = session
        .read(&req, TimestampsToReturn::Neither, 0.0)
        .await
        .unwrap_or_default();
    let get = |i: usize| -> usize {
        vals.get(i)
            .and_then(|dv| dv.value.as_ref())
            .and_then(|v| match render(v) {
                Value::Int(n) if n > 0 => Some(n as usize),
                _ => None,
            })
            .unwrap_or(DEFAULT_LIMIT)
    };
    Limits {
        read: get(0),
        browse: get(1),
        monitored: get(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(v: serde_json::Value) -> Result<Mapping, ConfigError> {
        let m: MappingConfig = serde_json::from_value(v).expect("mapping parses");
        build_mapping(Path::new("opcua.json"), "mapping[0]", &m)
    }

    #[test]
    fn device_and_datapoint_report_strategies_are_attached_to_the_mapping() {
        let m = mapping(serde_json::json!({
            "deviceNodePattern": "Root\\.Objects\\.Device1",
            "deviceInfo": {"deviceNameExpression": "Device 1"},
            "reportStrategy": {"type": "ON_CHANGE"},
            "timeseries": [
                {"key": "t", "type": "path", "value": "${Temperature}",
                 "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 500}},
                {"key": "h", "type": "path", "value": "${Humidity}"}
            ]
        }))
        .expect("builds");
        let r = m.report.expect("overrides");
        assert_eq!(
            r.device.as_ref().map(|s| s.kind),
            Some(tbgw::config::ReportType::OnChange)
        );
        assert_eq!(r.keys["t"].report_period, 500);
        assert!(!r.keys.contains_key("h"));

        let none = mapping(serde_json::json!({
            "deviceNodePattern": "Root\\.Objects\\.Device1",
            "deviceInfo": {"deviceNameExpression": "Device 1"},
        }))
        .expect("builds");
        assert!(none.report.is_none());

        let Err(e) = mapping(serde_json::json!({
            "deviceNodePattern": "Root\\.Objects\\.Device1",
            "deviceInfo": {"deviceNameExpression": "Device 1"},
            "timeseries": [{"key": "t", "value": "${T}", "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 0}}]
        })) else {
            panic!("period 0 is an error");
        };
        assert!(
            e.to_string()
                .contains("mapping[0].timeseries[0].reportStrategy"),
            "{e}"
        );
    }
}
