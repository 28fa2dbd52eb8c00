//! The MQTT connector's run loop.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use serde_json::{json, Value as Json};
use tbgw::backoff::Backoff;
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::convert::{
    self, ConvertError, Converter, ConverterRegistry, UplinkConverter, UplinkInput,
};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest, RpcResponder};
use tbgw::log_once::LogOnce;
use tbgw::model::now_millis;
use tbgw::report::{self, ReportOverrides};
use tbgw::uplink::{StoreOutcome, StoreReceipt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::{BrokerConfig, Datapoints, MqttConnectorConfig};
use super::publish::PublishTracker;
use super::requests::{AskedAttributes, RenderedRpc, Requests, RpcSpec};
use tbgw::topic;

/// Most distinct error keys logged per connector run; after that errors are only counted.
const MAX_LOGGED_ERRORS: usize = 1000;
/// How long an attribute request waits for ThingsBoard's answer.
const ATTRIBUTE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Mapping {
    filter: String,
    qos: u8,
    /// `None`: a custom converter that nobody registered; messages are counted and dropped.
    converter: Option<Converter>,
    /// Report strategy overrides attached to records that come without any (those of a
    /// custom converter; the json and bytes converters attach their own).
    report: Option<Arc<ReportOverrides>>,
}

/// A running MQTT connector. Build it with [`MqttFactory`](super::MqttFactory).
pub struct MqttConnector {
    name: String,
    broker: BrokerConfig,
    mappings: Vec<Mapping>,
    requests: Requests,
    /// Error keys already logged (mapping or handler plus datapoint key).
    logged: LogOnce,
}

impl std::fmt::Debug for MqttConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConnector")
            .field("name", &self.name)
            .field(
                "broker",
                &format_args!("{}:{}", self.broker.host, self.broker.port),
            )
            .field("mappings", &self.mappings.len())
            .finish()
    }
}

/// An incoming publish, whichever protocol version.
enum SourcePublish {
    V4(rumqttc::Publish),
    V5(rumqttc::v5::mqttbytes::v5::Publish),
}

#[derive(Clone)]
enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

// Consumed as soon as it is produced, one at a time: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum SourceEvent {
    Connected {
        session_present: bool,
    },
    Message {
        topic: String,
        payload: Bytes,
        qos: u8,
        publish: SourcePublish,
    },
    /// One of our publishes was written with this packet id.
    Sent(u16),
    /// The broker confirmed one of our publishes.
    Acked(u16),
    Other,
}

impl EventLoop {
    async fn poll(&mut self) -> Result<SourceEvent, String> {
        use rumqttc::Outgoing;
        match self {
            EventLoop::V4(ev) => match ev.poll().await.map_err(|e| e.to_string())? {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c)) => {
                    Ok(SourceEvent::Connected {
                        session_present: c.session_present,
                    })
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(mut p)) => {
                    // The packet is kept until its PUBACK is due; keep only what the PUBACK
                    // needs, so it does not pin rumqttc's whole read buffer (the payload is a
                    // slice of it) while storage makes the data durable.
                    let topic = std::mem::take(&mut p.topic);
                    let payload = std::mem::take(&mut p.payload);
                    Ok(SourceEvent::Message {
                        topic,
                        payload,
                        qos: p.qos as u8,
                        publish: SourcePublish::V4(p),
                    })
                }
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) => {
                    Ok(SourceEvent::Acked(a.pkid))
                }
                rumqttc::Event::Incoming(rumqttc::Packet::PubRec(a)) => {
                    Ok(SourceEvent::Acked(a.pkid))
                }
                rumqttc::Event::Outgoing(Outgoing::Publish(pkid)) => Ok(SourceEvent::Sent(pkid)),
                _ => Ok(SourceEvent::Other),
            },
            EventLoop::V5(ev) => match ev.poll().await.map_err(|e| e.to_string())? {
                rumqttc::v5::Event::Incoming(Packet5::ConnAck(c)) => Ok(SourceEvent::Connected {
                    session_present: c.session_present,
                }),
                rumqttc::v5::Event::Incoming(Packet5::Publish(mut p)) => {
                    // As above: the kept packet must not pin the read buffer.
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let payload = std::mem::take(&mut p.payload);
                    p.topic = Bytes::new();
                    p.properties = None;
                    Ok(SourceEvent::Message {
                        topic,
                        payload,
                        qos: p.qos as u8,
                        publish: SourcePublish::V5(p),
                    })
                }
                rumqttc::v5::Event::Incoming(Packet5::PubAck(a)) => Ok(SourceEvent::Acked(a.pkid)),
                rumqttc::v5::Event::Incoming(Packet5::PubRec(a)) => Ok(SourceEvent::Acked(a.pkid)),
                rumqttc::v5::Event::Outgoing(Outgoing::Publish(pkid)) => {
                    Ok(SourceEvent::Sent(pkid))
                }
                _ => Ok(SourceEvent::Other),
            },
        }
    }
}

impl Client {
    fn subscribe(&self, filters: &[(String, u8)]) -> Result<(), String> {
        if filters.is_empty() {
            return Ok(());
        }
        match self {
            Client::V4(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos4(*q))),
                )
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::v5::mqttbytes::v5::Filter::new(f.clone(), qos5(*q))),
                )
                .map_err(|e| e.to_string()),
        }
    }

    fn unsubscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_unsubscribe(filter).map_err(|e| e.to_string()),
            Client::V5(c) => c.try_unsubscribe(filter).map_err(|e| e.to_string()),
        }
    }

    fn publish(&self, topic: &str, payload: String, qos: u8, retain: bool) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, qos4(qos), retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(topic, qos5(qos), retain, payload)
                .map_err(|e| e.to_string()),
        }
    }

    fn ack(&self, p: &SourcePublish) -> Result<(), String> {
        match (self, p) {
            (Client::V4(c), SourcePublish::V4(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            (Client::V5(c), SourcePublish::V5(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }

    fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Capacity of the request channel to rumqttc: acks, subscriptions and downlink publishes.
/// rumqttc writes one request per poll while it may read ten messages, so under overload
/// PUBACKs queue here; when it is full they wait in the connector's `unsent` queue, which the
/// in-flight bound cannot stop from growing (the loop must poll to flush them). A deep channel
/// (a few MB at most) keeps that rare: at 80,000 msg/s offered with file storage peak RSS went
/// from 39–98 MB with 8,192 to 22–31 MB.
const REQUEST_CAPACITY: usize = 65_536;
/// MQTT 5 Receive Maximum we announce: how many QoS 1 messages the broker may send before our
/// first PUBACK.
const RECEIVE_MAXIMUM: u16 = 4000;
/// Most received QoS 1 messages waiting for storage before the connector stops reading from
/// the broker. The broker's own limit is not enough: MQTT 3.1.1 has no Receive Maximum, and
/// in overload runs against mosquitto 2.0.11 the connector held tens of thousands of
/// unacknowledged messages although it announces this one (cause not found; the same broker
/// keeps it for a raw-socket client). So the connector enforces it itself: past this many it
/// only completes receipts and sends PUBACKs until the count drops, and the backlog stays in
/// the broker.
const MAX_PENDING_ACKS: usize = RECEIVE_MAXIMUM as usize;
/// Most of our own QoS 1 publishes (RPC requests, attribute answers) in flight at once.
const OUTGOING_INFLIGHT: u16 = 100;

impl MqttConnector {
    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: MqttConnectorConfig,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let b = &cfg.broker;
        if b.host.trim().is_empty() {
            return Err(ConfigError::new(file, "broker.host", "must not be empty"));
        }
        if !matches!(b.version, 3..=5) {
            return Err(ConfigError::new(
                file,
                "broker.version",
                format!("unsupported MQTT version {}; expected 3, 4 or 5", b.version),
            ));
        }
        let sec = &b.security;
        match sec.kind.as_str() {
            "anonymous" => {}
            "basic" => {
                if sec.username.is_none() {
                    return Err(ConfigError::new(
                        file,
                        "broker.security.username",
                        "missing; required by basic security",
                    ));
                }
            }
            "certificates" => match (&sec.path_to_client_cert, &sec.path_to_private_key) {
                (Some(_), None) => {
                    return Err(ConfigError::new(
                        file,
                        "broker.security.pathToPrivateKey",
                        "missing; pathToClientCert needs the matching private key",
                    ))
                }
                (None, Some(_)) => {
                    return Err(ConfigError::new(
                        file,
                        "broker.security.pathToClientCert",
                        "missing; pathToPrivateKey needs the matching client certificate",
                    ))
                }
                _ => {}
            },
            other => {
                return Err(ConfigError::new(
                    file,
                    "broker.security.type",
                    format!(
                        "unknown security type `{other}`; expected anonymous, basic or certificates"
                    ),
                ))
            }
        }
        if sec.kind != "certificates"
            && (sec.path_to_ca_cert.is_some()
                || sec.path_to_client_cert.is_some()
                || sec.path_to_private_key.is_some()
                || sec.insecure)
        {
            ignored.push(format!(
                "broker.security (certificate keys are used only with \"type\": \"certificates\", not `{}`)",
                sec.kind
            ));
        }
        if b.version == 3 {
            ignored.push(
                "broker.version (3 = MQTT 3.1 is served as MQTT 3.1.1, which every 3.1 broker in use accepts)"
                    .into(),
            );
        }
        let mut mappings = Vec::new();
        for (i, m) in cfg.mapping.iter().enumerate() {
            let prefix = format!("mapping[{i}]");
            if m.topic_filter.is_empty() {
                return Err(ConfigError::new(
                    file,
                    format!("{prefix}.topicFilter"),
                    "must not be empty",
                ));
            }
            if m.subscription_qos > 2 {
                return Err(ConfigError::new(
                    file,
                    format!("{prefix}.subscriptionQos"),
                    "must be 0, 1 or 2",
                ));
            }
            let (mapping_level, converter_level) = mapping_report(file, &prefix, m, ignored)?;
            let mut report = None;
            let converter = Converter::build(
                file,
                &format!("{prefix}.converter"),
                &m.converter,
                &super::DIALECT,
                converters,
                ignored,
            )?
            .map(|c| c.with_mapping_strategy(mapping_level.clone()));
            match &converter {
                Some(Converter::Json(_) | Converter::Bytes(_)) => {
                    note_report_conflicts(&prefix, m, converter.as_ref(), ignored)
                }
                _ => {
                    report = converter_level.or(mapping_level).map(|s| {
                        Arc::new(ReportOverrides {
                            device: Some(s),
                            keys: HashMap::new(),
                        })
                    })
                }
            }
            mappings.push(Mapping {
                filter: m.topic_filter.clone(),
                qos: m.subscription_qos,
                converter,
                report,
            });
        }
        let requests = Requests::build(file, &cfg, ignored)?;
        Ok(MqttConnector {
            name: name.to_string(),
            broker: super::tls::with_resolved_paths(file, cfg.broker),
            mappings,
            requests,
            logged: LogOnce::new(MAX_LOGGED_ERRORS),
        })
    }

    fn client(&self) -> Result<(Client, EventLoop), ConnectorError> {
        let b = &self.broker;
        let id = b
            .client_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                format!(
                    "tbgw-{}-{:08x}",
                    self.name.replace(' ', "_"),
                    fastrand::u32(..)
                )
            });
        let keep_alive = Duration::from_secs(b.keep_alive.max(5));
        let credentials = match (&b.security.username, b.security.kind.as_str()) {
            (Some(u), "basic" | "certificates") => {
                Some((u.clone(), b.security.password.clone().unwrap_or_default()))
            }
            _ => None,
        };
        let transport = if b.security.kind == "certificates" {
            let config = super::tls::client_config(&b.security).map_err(|e| {
                ConnectorError::Connection(format!("TLS to {}:{}: {e}", b.host, b.port))
            })?;
            Some(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
            ))
        } else {
            None
        };
        if b.version == 5 {
            let mut o = rumqttc::v5::MqttOptions::new(id, b.host.clone(), b.port);
            o.set_keep_alive(keep_alive);
            o.set_clean_start(b.clean_start);
            if b.session_expiry_interval > 0 {
                o.set_session_expiry_interval(Some(b.session_expiry_interval));
            }
            o.set_manual_acks(true);
            o.set_receive_maximum(Some(RECEIVE_MAXIMUM));
            o.set_max_packet_size(Some(16 * 1024 * 1024));
            // rumqttc sizes its table of our own in-flight publishes by this (u16::MAX slots,
            // ~13 MB, when unset); the connector only publishes requests to devices.
            o.set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT);
            if let Some((u, p)) = credentials {
                o.set_credentials(u, p);
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (c, e) = rumqttc::v5::AsyncClient::new(o, REQUEST_CAPACITY);
            Ok((Client::V5(c), EventLoop::V5(Box::new(e))))
        } else {
            let mut o = rumqttc::MqttOptions::new(id, b.host.clone(), b.port);
            o.set_keep_alive(keep_alive);
            o.set_clean_session(b.clean_session);
            o.set_manual_acks(true);
            o.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
            if let Some((u, p)) = credentials {
                o.set_credentials(u, p);
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (c, e) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
            Ok((Client::V4(c), EventLoop::V4(Box::new(e))))
        }
    }

    /// Logs an error the first time its key (mapping or handler, plus datapoint key) is seen;
    /// every occurrence is counted by the caller.
    fn log_once(&mut self, key: String, text: &str) {
        if self.logged.first(&key) {
            tracing::warn!(connector = %self.name, error = %text, "Cannot handle a message (logged once per mapping and key; all are counted).");
        }
    }

    /// Converts one message with every mapping whose filter matches its topic.
    fn convert(
        &mut self,
        cx: &ConnectorContext,
        topic: &str,
        payload: &[u8],
    ) -> (bool, Vec<tbgw::model::DeviceData>) {
        let input = UplinkInput {
            source: topic,
            payload,
            received_ts: now_millis(),
        };
        let mut out = Vec::new();
        let mut problems: Vec<(usize, ConvertError)> = Vec::new();
        let mut matched = false;
        for (i, m) in self.mappings.iter().enumerate() {
            if !topic::matches(&m.filter, topic) {
                continue;
            }
            matched = true;
            let Some(conv) = &m.converter else { continue };
            let mut errors = Vec::new();
            match conv.convert(input, &mut errors) {
                Ok(mut data) => {
                    if let Some(r) = &m.report {
                        for d in data.iter_mut().filter(|d| d.report.is_none()) {
                            d.report = Some(r.clone());
                        }
                    }
                    out.extend(data)
                }
                Err(e) => errors.push(e),
            }
            problems.extend(errors.into_iter().map(|e| (i, e)));
        }
        if !problems.is_empty() {
            cx.stats().add_convert_errors(problems.len() as u64);
        }
        for (i, e) in problems {
            let key = match &e {
                ConvertError::Value { key, .. } => format!("mapping[{i}] key {key}"),
                ConvertError::Malformed(_) => format!("mapping[{i}] malformed"),
                ConvertError::NoDeviceName(_) => format!("mapping[{i}] device name"),
                _ => format!("mapping[{i}] other"),
            };
            self.log_once(key, &format!("mapping[{i}] ({topic}): {e}"));
        }
        (matched, out)
    }
}

/// A message whose PUBACK waits for storage: (connection epoch, publish, storage receipt).
type PendingAck = (u64, SourcePublish, StoreOutcome);

/// A two-way RPC waiting for its reply.
struct RpcWait {
    topic: String,
    responder: RpcResponder,
    deadline: Instant,
    /// The reply topic was subscribed for this call (not a mapping's filter).
    dynamic: bool,
}

/// What a sub-task hands back to the run loop.
enum TaskDone {
    Attributes {
        handler: usize,
        asked: AskedAttributes,
        answer: Result<Json, String>,
    },
}

/// The state of one run: connection, downlink bookkeeping.
struct Session {
    client: Client,
    connected: bool,
    /// Permanent subscriptions: mappings and request handlers.
    filters: Vec<(String, u8)>,
    /// Reply topics subscribed for RPCs in progress, with how many calls wait on each.
    rpc_subs: HashMap<String, (u8, usize)>,
    rpc_waits: Vec<RpcWait>,
    publishes: PublishTracker<RpcResponder>,
    /// Where sub-tasks ([`ConnectorContext::spawn`]) hand back their results.
    done: mpsc::UnboundedSender<TaskDone>,
}

impl Session {
    fn publish(
        &mut self,
        topic: &str,
        payload: String,
        qos: u8,
        retain: bool,
        waiter: Option<RpcResponder>,
    ) -> Result<(), (String, Option<RpcResponder>)> {
        if !self.connected {
            return Err(("the MQTT broker is not connected".into(), waiter));
        }
        match self.client.publish(topic, payload, qos, retain) {
            Ok(()) => {
                self.publishes.queued(qos, waiter);
                Ok(())
            }
            Err(e) => Err((e, waiter)),
        }
    }

    /// Subscribes to an RPC reply topic unless a permanent subscription covers it.
    fn acquire_reply_topic(&mut self, topic: &str, qos: u8) -> bool {
        if self.filters.iter().any(|(f, _)| f == topic) {
            return false;
        }
        let entry = self.rpc_subs.entry(topic.to_string()).or_insert((qos, 0));
        entry.1 += 1;
        if entry.1 == 1 {
            let _ = self.client.subscribe(&[(topic.to_string(), qos)]);
        }
        true
    }

    fn release_reply_topic(&mut self, topic: &str) {
        if let Some(entry) = self.rpc_subs.get_mut(topic) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                self.rpc_subs.remove(topic);
                if self.connected {
                    let _ = self.client.unsubscribe(topic);
                }
            }
        }
    }

    /// Hands a message on an RPC reply topic to the oldest call waiting on it.
    fn take_reply(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some(i) = self
            .rpc_waits
            .iter()
            .position(|w| w.topic == topic || topic::matches(&w.topic, topic))
        else {
            return false;
        };
        let w = self.rpc_waits.remove(i);
        // As the Python gateway: the device's answer as JSON (single quotes read as double
        // ones), or as text when it is not JSON.
        let text = String::from_utf8_lossy(payload);
        let reply = serde_json::from_str::<Json>(&text)
            .or_else(|_| serde_json::from_str::<Json>(&text.replace('\'', "\"")))
            .unwrap_or_else(|_| Json::String(text.into_owned()));
        w.responder.verbatim(reply);
        if w.dynamic {
            self.release_reply_topic(&w.topic);
        }
        true
    }

    fn expire_rpcs(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.rpc_waits.len() {
            if self.rpc_waits[i].deadline <= now {
                let w = self.rpc_waits.remove(i);
                w.responder.err(RpcError::Timeout(format!(
                    "no reply on `{}` within the response timeout",
                    w.topic
                )));
                if w.dynamic {
                    self.release_reply_topic(&w.topic);
                }
            } else {
                i += 1;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.rpc_waits.iter().map(|w| w.deadline).min()
    }

    fn lost(&mut self) {
        self.connected = false;
        for r in self.publishes.lost() {
            r.err(RpcError::Unreachable(
                "the connection to the MQTT broker was lost before it confirmed the request".into(),
            ));
        }
    }
}

impl MqttConnector {
    fn handle_rpc(&mut self, cx: &ConnectorContext, s: &mut Session, rpc: RpcRequest) {
        cx.stats().add_downlink(1);
        let reserved = matches!(rpc.method.as_str(), "get" | "set");
        let adhoc;
        let spec: &RpcSpec = match &rpc.device {
            Some(device) if !reserved => match self.requests.route_rpc(device, &rpc.method) {
                Some(spec) => spec,
                None => {
                    rpc.responder.err(RpcError::NotFound(format!(
                        "method `{}`: no serverSideRpc entry of the MQTT connector matches device `{device}`",
                        rpc.method
                    )));
                    return;
                }
            },
            // Reserved get/set for a device, and connector RPCs (`mqtt_<name>`): the params
            // carry the entry.
            _ => match RpcSpec::from_params(&rpc.params) {
                Ok(spec) => {
                    adhoc = spec;
                    &adhoc
                }
                Err(e) => {
                    rpc.responder.err(RpcError::BadRequest(e));
                    return;
                }
            },
        };
        let mut scope = serde_json::Map::new();
        if let Some(d) = &rpc.device {
            scope.insert("deviceName".into(), Json::String(d.clone()));
        }
        scope.insert("methodName".into(), Json::String(rpc.method.clone()));
        scope.insert("requestId".into(), Json::from(rpc.id));
        scope.insert("params".into(), rpc.params.clone());
        let rendered: RenderedRpc = match spec.render(&Json::Object(scope)) {
            Ok(r) => r,
            Err(e) => {
                rpc.responder.err(RpcError::BadRequest(e));
                return;
            }
        };
        if !s.connected {
            rpc.responder.err(RpcError::Unreachable(
                "the MQTT broker is not connected".into(),
            ));
            return;
        }
        match rendered.response {
            Some((reply_topic, reply_qos, timeout)) => {
                // The SUBSCRIBE is queued before the PUBLISH on the same connection, so the
                // broker has the subscription before the device can see the request.
                let dynamic = s.acquire_reply_topic(&reply_topic, reply_qos);
                if let Err((e, _)) = s.publish(
                    &rendered.request_topic,
                    rendered.payload,
                    rendered.qos,
                    rendered.retain,
                    None,
                ) {
                    if dynamic {
                        s.release_reply_topic(&reply_topic);
                    }
                    rpc.responder.err(RpcError::Unreachable(e));
                    return;
                }
                s.rpc_waits.push(RpcWait {
                    topic: reply_topic,
                    responder: rpc.responder,
                    deadline: Instant::now() + timeout,
                    dynamic,
                });
            }
            None => {
                if let Err((e, Some(r))) = s.publish(
                    &rendered.request_topic,
                    rendered.payload,
                    rendered.qos,
                    rendered.retain,
                    Some(rpc.responder),
                ) {
                    r.err(RpcError::Unreachable(e));
                }
            }
        }
    }

    fn handle_attribute_update(
        &mut self,
        cx: &ConnectorContext,
        s: &mut Session,
        u: AttributeUpdate,
    ) {
        cx.stats().add_downlink(1);
        let mut out = Vec::new();
        let mut handled = false;
        for (i, h) in self.requests.updates.iter().enumerate() {
            if !h.for_device(&u.device) {
                continue;
            }
            handled = true;
            for r in h.publishes(&u.device, &u.values) {
                out.push((i, r, h.qos, h.retain));
            }
        }
        if !handled {
            tracing::debug!(connector = %self.name, device = %u.device, "Attribute update received; no attributeUpdates entry matches the device.");
        }
        for (i, r, qos, retain) in out {
            match r {
                Ok((topic, payload)) => {
                    if let Err((e, _)) = s.publish(&topic, payload, qos, retain, None) {
                        cx.stats().add_errors(1);
                        tracing::warn!(connector = %self.name, device = %u.device, topic = %topic, error = %e, "Cannot publish an attribute update to the device.");
                    }
                }
                Err(e) => {
                    cx.stats().add_errors(1);
                    self.log_once(format!("attributeUpdates[{i}]"), &e);
                }
            }
        }
    }

    /// Connect, disconnect and attribute requests on `topic`. True when a handler matched.
    async fn handle_requests(
        &mut self,
        cx: &ConnectorContext,
        s: &mut Session,
        topic: &str,
        payload: &[u8],
    ) -> Result<bool, ConnectorError> {
        let r = &self.requests;
        let any = r.filters().any(|(f, _)| topic::matches(f, topic));
        if !any {
            return Ok(false);
        }
        let content: Json = serde_json::from_slice(payload)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(payload).into_owned()));
        let mut problems = Vec::new();
        let mut connects = Vec::new();
        let mut disconnects = Vec::new();
        for (i, h) in r.connect.iter().enumerate() {
            if topic::matches(&h.filter, topic) {
                match h.device(topic, &content, payload) {
                    Some(d) => connects.push(d),
                    None => problems.push((
                        format!("connectRequests[{i}]"),
                        "the device name expression has no match".to_string(),
                    )),
                }
            }
        }
        for (i, h) in r.disconnect.iter().enumerate() {
            if topic::matches(&h.filter, topic) {
                match h.device(topic, &content, payload) {
                    Some((d, _)) => disconnects.push(d),
                    None => problems.push((
                        format!("disconnectRequests[{i}]"),
                        "the device name expression has no match".to_string(),
                    )),
                }
            }
        }
        for (i, h) in r.attribute.iter().enumerate() {
            if !topic::matches(&h.filter, topic) {
                continue;
            }
            match h.asked(topic, &content, payload) {
                Ok(asked) => {
                    let uplink = cx.uplink().clone();
                    let done = s.done.clone();
                    cx.spawn(
                        format!("attribute request of {}", asked.device),
                        async move {
                            let answer = uplink
                                .request_attributes(
                                    asked.device.clone(),
                                    asked.client,
                                    asked.keys.clone(),
                                    ATTRIBUTE_REQUEST_TIMEOUT,
                                )
                                .await
                                .map_err(|e| e.to_string());
                            // The receiver is gone only when the run has ended.
                            let _ = done.send(TaskDone::Attributes {
                                handler: i,
                                asked,
                                answer,
                            });
                            Ok(())
                        },
                    );
                }
                Err(e) => problems.push((format!("attributeRequests[{i}]"), e)),
            }
        }
        for (device, profile) in connects {
            tracing::debug!(connector = %self.name, device = %device, "Device connect request.");
            cx.uplink()
                .connect_device(device, profile)
                .await
                .map_err(|_| ConnectorError::Closed)?;
        }
        for device in disconnects {
            tracing::debug!(connector = %self.name, device = %device, "Device disconnect request.");
            cx.uplink()
                .disconnect_device(device)
                .await
                .map_err(|_| ConnectorError::Closed)?;
        }
        if !problems.is_empty() {
            cx.stats().add_convert_errors(problems.len() as u64);
        }
        for (key, e) in problems {
            self.log_once(key.clone(), &format!("{key} ({topic}): {e}"));
        }
        Ok(true)
    }

    fn task_done(&mut self, cx: &ConnectorContext, s: &mut Session, done: TaskDone) {
        match done {
            TaskDone::Attributes {
                handler,
                asked,
                answer,
            } => {
                let value = match answer {
                    Ok(Json::Null) => {
                        tracing::debug!(connector = %self.name, device = %asked.device, keys = ?asked.keys, "ThingsBoard has no value for the requested attributes.");
                        return;
                    }
                    Ok(v) => v,
                    Err(e) => {
                        cx.stats().add_errors(1);
                        tracing::warn!(connector = %self.name, device = %asked.device, keys = ?asked.keys, error = %e, "Attribute request to ThingsBoard failed.");
                        return;
                    }
                };
                let Some(h) = self.requests.attribute.get(handler) else {
                    return;
                };
                let (retain, qos) = (h.retain, h.out_qos);
                match h.answer(&asked, &value) {
                    Ok((topic, payload)) => {
                        if let Err((e, _)) = s.publish(&topic, payload, qos, retain, None) {
                            cx.stats().add_errors(1);
                            tracing::warn!(connector = %self.name, device = %asked.device, topic = %topic, error = %e, "Cannot publish the attribute answer to the device.");
                        }
                    }
                    Err(e) => {
                        cx.stats().add_errors(1);
                        self.log_once(format!("attributeRequests[{handler}] answer"), &e);
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Connector for MqttConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let (client, mut events) = self.client()?;
        let mut filters: Vec<(String, u8)> = Vec::new();
        let all = self
            .mappings
            .iter()
            .map(|m| (m.filter.as_str(), m.qos))
            .chain(self.requests.filters());
        for (f, q) in all {
            if !filters.iter().any(|(g, _)| g == f) {
                filters.push((f.to_string(), q));
            }
        }
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut s = Session {
            client,
            connected: false,
            filters,
            rpc_subs: HashMap::new(),
            rpc_waits: Vec::new(),
            publishes: PublishTracker::default(),
            done: done_tx,
        };
        // Acks are sent in arrival order once storage has the data. Each connection has an
        // epoch: a PUBACK for a message of an earlier connection is never sent on a later one
        // (its packet id may belong to another message there).
        let mut epoch = 0u64;
        let mut pending: FuturesOrdered<
            std::pin::Pin<Box<dyn std::future::Future<Output = PendingAck> + Send>>,
        > = FuturesOrdered::new();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let cancel = cx.cancellation().clone();
        // PUBACKs due but not yet handed to rumqttc because its request channel was full.
        // Only the event loop drains that channel, so while this backlog exists the loop below
        // stops taking new receipts and polls the event loop instead; no PUBACK is dropped.
        let mut unsent: std::collections::VecDeque<SourcePublish> =
            std::collections::VecDeque::new();
        loop {
            while let Some(p) = unsent.front() {
                if s.client.ack(p).is_err() {
                    break;
                }
                unsent.pop_front();
            }
            let deadline = s.next_deadline();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    // Give storage a moment to confirm what is already sent, then acknowledge it.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while let Ok(Some((e, p, outcome))) = tokio::time::timeout_at(deadline, pending.next()).await {
                        if e == epoch && outcome != StoreOutcome::Failed {
                            let _ = s.client.ack(&p);
                        }
                    }
                    s.client.disconnect();
                    let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
                    return Ok(());
                }
                Some((e, p, outcome)) = pending.next(), if !pending.is_empty() && unsent.is_empty() => {
                    // A failed store is not acknowledged: the broker redelivers it on reconnect
                    // (persistent sessions) and the connector restarts to get there.
                    if outcome == StoreOutcome::Failed {
                        return Err(ConnectorError::Other("storage failed; reconnecting so the broker redelivers".into()));
                    }
                    if e == epoch && s.client.ack(&p).is_err() {
                        unsent.push_back(p);
                    }
                }
                // Past MAX_PENDING_ACKS the event loop is only polled to flush PUBACKs that
                // rumqttc's request channel could not take (`unsent`); otherwise a stalled
                // receipt would stop both branches.
                ev = events.poll(), if pending.len() < MAX_PENDING_ACKS || !unsent.is_empty() => match ev {
                    Ok(SourceEvent::Connected { session_present }) => {
                        epoch += 1;
                        // PUBACKs of the previous connection must not go out on this one.
                        unsent.clear();
                        backoff.succeeded();
                        s.connected = true;
                        s.publishes.connected(session_present);
                        tracing::info!(connector = %self.name, host = %self.broker.host, port = self.broker.port, "Connected to the MQTT broker.");
                        let mut subs = s.filters.clone();
                        subs.extend(s.rpc_subs.iter().map(|(t, (q, _))| (t.clone(), *q)));
                        if let Err(e) = s.client.subscribe(&subs) {
                            return Err(ConnectorError::Connection(format!("subscribe failed: {e}")));
                        }
                    }
                    Ok(SourceEvent::Message { topic, payload, qos, publish }) => {
                        cx.stats().add_messages_received(1);
                        cx.stats().add_bytes_received(payload.len() as u64);
                        let reply = s.take_reply(&topic, &payload);
                        let (mapped, data) = self.convert(cx, &topic, &payload);
                        let request = self.handle_requests(cx, &mut s, &topic, &payload).await?;
                        if !mapped && !request && !reply {
                            tracing::debug!(connector = %self.name, topic, "Message on a topic no mapping or request matches.");
                        }
                        let receipt: Option<StoreReceipt> = if data.is_empty() {
                            None
                        } else {
                            Some(cx.uplink().send_acked(data).await.map_err(|_| ConnectorError::Closed)?)
                        };
                        if qos > 0 {
                            let e = epoch;
                            pending.push_back(Box::pin(async move {
                                let outcome = match receipt {
                                    Some(r) => r.wait().await,
                                    None => StoreOutcome::Stored,
                                };
                                (e, publish, outcome)
                            }));
                        }
                    }
                    Ok(SourceEvent::Sent(pkid)) => {
                        if let Some(r) = s.publishes.sent(pkid) {
                            r.ok(json!({"success": true}));
                        }
                    }
                    Ok(SourceEvent::Acked(pkid)) => {
                        if let Some(r) = s.publishes.acked(pkid) {
                            r.ok(json!({"success": true}));
                        }
                    }
                    Ok(SourceEvent::Other) => {}
                    Err(e) => {
                        cx.stats().add_errors(1);
                        s.lost();
                        let delay = backoff.next_delay();
                        tracing::warn!(connector = %self.name, host = %self.broker.host, port = self.broker.port, error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT broker connection failed; retrying.");
                        tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    s.expire_rpcs();
                }
                Some(done) = done_rx.recv() => self.task_done(cx, &mut s, done),
                Some(dl) = cx.recv_downlink() => match dl {
                    Downlink::Rpc(rpc) => self.handle_rpc(cx, &mut s, rpc),
                    Downlink::AttributeUpdate(u) => self.handle_attribute_update(cx, &mut s, u),
                    _ => {}
                },
            }
        }
    }
}

/// Reads the report strategies of `mapping[i]` (`prefix`): returns the mapping level
/// (`mapping[i].reportStrategy`) and the converter level (`converter.reportStrategy`, or
/// `ON_CHANGE` for the legacy `converter.sendDataOnlyOnChange: true`), checks every
/// datapoint's, and lists unused keys inside them. The converter level wins; a mapping
/// level it hides is reported as ignored.
fn mapping_report(
    file: &Path,
    prefix: &str,
    m: &super::config::MappingConfig,
    ignored: &mut Vec<String>,
) -> Result<
    (
        Option<tbgw::config::ReportStrategyConfig>,
        Option<tbgw::config::ReportStrategyConfig>,
    ),
    ConfigError,
> {
    let mapping_level = match &m.report_strategy {
        Some(v) => report::parse_strategy(v, file, &format!("{prefix}.reportStrategy"), ignored)?,
        None => None,
    };
    let converter_level =
        convert::device_strategy(file, &format!("{prefix}.converter"), &m.converter, ignored)?;
    if mapping_level.is_some() && converter_level.is_some() {
        ignored.push(format!(
            "{prefix}.reportStrategy (converter.reportStrategy or converter.sendDataOnlyOnChange takes precedence)"
        ));
    }
    for (section, points) in [
        ("attributes", &m.converter.attributes),
        ("timeseries", &m.converter.timeseries),
    ] {
        if let Datapoints::List(list) = points {
            for (j, p) in list.iter().enumerate() {
                if let Some(v) = &p.report_strategy {
                    let path = format!("{prefix}.converter.{section}[{j}].reportStrategy");
                    report::parse_strategy(v, file, &path, ignored)?;
                }
            }
        }
    }
    Ok((mapping_level, converter_level))
}

/// A constant key listed in both `attributes` and `timeseries` with different strategies:
/// the overrides hold one strategy per name (the first listed), so the other is reported.
fn note_report_conflicts(
    prefix: &str,
    m: &super::config::MappingConfig,
    c: Option<&Converter>,
    ignored: &mut Vec<String>,
) {
    let Some(o) = c.and_then(Converter::report_overrides) else {
        return;
    };
    for (section, points) in [
        ("attributes", &m.converter.attributes),
        ("timeseries", &m.converter.timeseries),
    ] {
        let Datapoints::List(list) = points else {
            continue;
        };
        for (j, p) in list.iter().enumerate() {
            let Some(v) = &p.report_strategy else {
                continue;
            };
            let Ok(Some(s)) = report::parse_strategy(v, Path::new(""), "", &mut Vec::new()) else {
                continue;
            };
            if o.keys.get(&p.key).is_some_and(|kept| *kept != s) {
                ignored.push(format!(
                    "{prefix}.converter.{section}[{j}].reportStrategy (another datapoint named `{}` \
                     comes first; one strategy per key name)",
                    p.key
                ));
            }
        }
    }
}
