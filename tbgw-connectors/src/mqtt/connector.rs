//! The MQTT connector's run loop.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::convert::{UplinkConverter, UplinkInput};
use tbgw::downlink::{Downlink, RpcError};
use tbgw::model::now_millis;
use tbgw::uplink::{StoreOutcome, StoreReceipt};

use super::config::{BrokerConfig, MqttConnectorConfig};
use super::topic;
use super::uplink::MqttUplinkConverter;

/// Most distinct error texts logged per connector run; after that they are only counted.
const MAX_LOGGED_ERRORS: usize = 1000;

struct Mapping {
    filter: String,
    qos: u8,
    /// `None`: a custom converter that nobody registered; messages are counted and dropped.
    converter: Option<Arc<dyn UplinkConverter>>,
}

/// A running MQTT connector. Build it with [`MqttFactory`](super::MqttFactory).
pub struct MqttConnector {
    name: String,
    broker: BrokerConfig,
    mappings: Vec<Mapping>,
    logged: HashSet<String>,
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

enum Client {
    V4(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
    V5(rumqttc::v5::AsyncClient, Box<rumqttc::v5::EventLoop>),
}

// Consumed as soon as it is produced, one at a time: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum SourceEvent {
    Connected,
    Message {
        topic: String,
        payload: Bytes,
        qos: u8,
        publish: SourcePublish,
    },
    Other,
}

impl Client {
    async fn poll(&mut self) -> Result<SourceEvent, String> {
        match self {
            Client::V4(_, ev) => match ev.poll().await.map_err(|e| e.to_string())? {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) => Ok(SourceEvent::Connected),
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Ok(SourceEvent::Message {
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                    qos: p.qos as u8,
                    publish: SourcePublish::V4(p),
                }),
                _ => Ok(SourceEvent::Other),
            },
            Client::V5(_, ev) => match ev.poll().await.map_err(|e| e.to_string())? {
                rumqttc::v5::Event::Incoming(Packet5::ConnAck(_)) => Ok(SourceEvent::Connected),
                rumqttc::v5::Event::Incoming(Packet5::Publish(p)) => Ok(SourceEvent::Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.clone(),
                    qos: p.qos as u8,
                    publish: SourcePublish::V5(p),
                }),
                _ => Ok(SourceEvent::Other),
            },
        }
    }

    fn subscribe(&self, filters: &[(String, u8)]) -> Result<(), String> {
        match self {
            Client::V4(c, _) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos4(*q))),
                )
                .map_err(|e| e.to_string()),
            Client::V5(c, _) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::v5::mqttbytes::v5::Filter::new(f.clone(), qos5(*q))),
                )
                .map_err(|e| e.to_string()),
        }
    }

    fn ack(&self, p: &SourcePublish) -> Result<(), String> {
        match (self, p) {
            (Client::V4(c, _), SourcePublish::V4(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            (Client::V5(c, _), SourcePublish::V5(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }

    fn disconnect(&self) {
        let _ = match self {
            Client::V4(c, _) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c, _) => c.try_disconnect().map_err(|e| e.to_string()),
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

/// Capacity of the request channel to rumqttc: acks and subscriptions; must exceed the most
/// messages the broker can have unacknowledged with us.
const REQUEST_CAPACITY: usize = 8192;
/// MQTT 5 Receive Maximum we announce: how many QoS 1 messages the broker may send before our
/// first PUBACK.
const RECEIVE_MAXIMUM: u16 = 1000;

impl MqttConnector {
    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: MqttConnectorConfig,
        custom: &HashMap<String, Arc<dyn UplinkConverter>>,
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
        match b.security.kind.as_str() {
            "anonymous" => {}
            "basic" => {
                if b.security.username.is_none() {
                    return Err(ConfigError::new(
                        file,
                        "broker.security.username",
                        "missing; required by basic security",
                    ));
                }
            }
            "certificates" => {
                return Err(ConfigError::new(
                    file,
                    "broker.security.type",
                    "certificate security is not available in this version of tbgw yet",
                ))
            }
            other => {
                return Err(ConfigError::new(
                    file,
                    "broker.security.type",
                    format!("unknown security type `{other}`; expected anonymous or basic"),
                ))
            }
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
            let converter: Option<Arc<dyn UplinkConverter>> = match m.converter.kind.as_str() {
                "custom" => {
                    let ext = m.converter.extension.clone().unwrap_or_default();
                    match custom.get(&ext) {
                        Some(c) => Some(c.clone()),
                        None => {
                            ignored.push(format!("{prefix}.converter (custom converter `{ext}` is not registered; this mapping is inactive)"));
                            None
                        }
                    }
                }
                "json" | "bytes" => Some(Arc::new(MqttUplinkConverter::build(
                    file,
                    &format!("{prefix}.converter"),
                    &m.converter,
                )?)),
                other => {
                    return Err(ConfigError::new(
                        file,
                        format!("{prefix}.converter.type"),
                        format!("unknown converter type `{other}`; expected json, bytes or custom"),
                    ))
                }
            };
            mappings.push(Mapping {
                filter: m.topic_filter.clone(),
                qos: m.subscription_qos,
                converter,
            });
        }
        Ok(MqttConnector {
            name: name.to_string(),
            broker: cfg.broker,
            mappings,
            logged: HashSet::new(),
        })
    }

    fn client(&self) -> Client {
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
            if let (Some(u), "basic") = (&b.security.username, b.security.kind.as_str()) {
                o.set_credentials(u.clone(), b.security.password.clone().unwrap_or_default());
            }
            let (c, e) = rumqttc::v5::AsyncClient::new(o, REQUEST_CAPACITY);
            Client::V5(c, Box::new(e))
        } else {
            let mut o = rumqttc::MqttOptions::new(id, b.host.clone(), b.port);
            o.set_keep_alive(keep_alive);
            o.set_clean_session(b.clean_session);
            o.set_manual_acks(true);
            o.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
            if let (Some(u), "basic") = (&b.security.username, b.security.kind.as_str()) {
                o.set_credentials(u.clone(), b.security.password.clone().unwrap_or_default());
            }
            let (c, e) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
            Client::V4(c, Box::new(e))
        }
    }

    fn log_error(&mut self, text: String) {
        if self.logged.len() < MAX_LOGGED_ERRORS && self.logged.insert(text.clone()) {
            tracing::warn!(connector = %self.name, error = %text, "Cannot convert a message (logged once per distinct error; all are counted).");
        }
    }

    /// Converts one message with every mapping whose filter matches its topic.
    fn convert(
        &mut self,
        cx: &ConnectorContext,
        topic: &str,
        payload: &[u8],
    ) -> Vec<tbgw::model::DeviceData> {
        let input = UplinkInput {
            source: topic,
            payload,
            received_ts: now_millis(),
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut failures = Vec::new();
        let mut matched = false;
        for m in &self.mappings {
            if !topic::matches(&m.filter, topic) {
                continue;
            }
            matched = true;
            let Some(conv) = &m.converter else { continue };
            match conv.convert(input, &mut errors) {
                Ok(data) => out.extend(data),
                Err(e) => failures.push(format!("{topic}: {e}")),
            }
        }
        if !matched {
            tracing::debug!(connector = %self.name, topic, "Message on a topic no mapping matches.");
        }
        if !failures.is_empty() {
            cx.stats().add_convert_errors(1);
        }
        for f in failures {
            self.log_error(f);
        }
        for e in errors {
            cx.stats().add_convert_errors(1);
            self.log_error(format!("{topic}: {e}"));
        }
        out
    }
}

/// A message whose PUBACK waits for storage: (connection epoch, publish, storage receipt).
type PendingAck = (u64, SourcePublish, StoreOutcome);

#[async_trait]
impl Connector for MqttConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let mut client = self.client();
        let mut filters: Vec<(String, u8)> = Vec::new();
        for m in &self.mappings {
            if !filters.iter().any(|(f, _)| f == &m.filter) {
                filters.push((m.filter.clone(), m.qos));
            }
        }
        // Acks are sent in arrival order once storage has the data. Each connection has an
        // epoch: a PUBACK for a message of an earlier connection is never sent on a later one
        // (its packet id may belong to another message there).
        let mut epoch = 0u64;
        let mut pending: FuturesOrdered<
            std::pin::Pin<Box<dyn std::future::Future<Output = PendingAck> + Send>>,
        > = FuturesOrdered::new();
        let mut delay = Duration::from_millis(500);
        let cancel = cx.cancellation().clone();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    // Give storage a moment to confirm what is already sent, then acknowledge it.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while let Ok(Some((e, p, outcome))) = tokio::time::timeout_at(deadline, pending.next()).await {
                        if e == epoch && outcome != StoreOutcome::Failed {
                            let _ = client.ack(&p);
                        }
                    }
                    client.disconnect();
                    let _ = tokio::time::timeout(Duration::from_millis(200), client.poll()).await;
                    return Ok(());
                }
                Some((e, p, outcome)) = pending.next(), if !pending.is_empty() => {
                    // A failed store is not acknowledged: the broker redelivers it on reconnect
                    // (persistent sessions) and the connector restarts to get there.
                    if outcome == StoreOutcome::Failed {
                        return Err(ConnectorError::Other("storage failed; reconnecting so the broker redelivers".into()));
                    }
                    if e == epoch {
                        if let Err(err) = client.ack(&p) {
                            tracing::warn!(connector = %self.name, error = %err, "Cannot queue a PUBACK to the broker.");
                        }
                    }
                }
                ev = client.poll() => match ev {
                    Ok(SourceEvent::Connected) => {
                        epoch += 1;
                        delay = Duration::from_millis(500);
                        tracing::info!(connector = %self.name, host = %self.broker.host, port = self.broker.port, "Connected to the MQTT broker.");
                        if let Err(e) = client.subscribe(&filters) {
                            return Err(ConnectorError::Connection(format!("subscribe failed: {e}")));
                        }
                    }
                    Ok(SourceEvent::Message { topic, payload, qos, publish }) => {
                        cx.stats().add_messages_received(1);
                        let data = self.convert(cx, &topic, &payload);
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
                    Ok(SourceEvent::Other) => {}
                    Err(e) => {
                        cx.stats().add_errors(1);
                        tracing::warn!(connector = %self.name, host = %self.broker.host, port = self.broker.port, error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT broker connection failed; retrying.");
                        tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                },
                Some(dl) = cx.recv_downlink() => match dl {
                    Downlink::Rpc(rpc) => {
                        rpc.responder.err(RpcError::NotFound(format!("method `{}`: the MQTT connector has no RPC mapping for it", rpc.method)));
                    }
                    Downlink::AttributeUpdate(u) => {
                        tracing::debug!(connector = %self.name, device = %u.device, "Attribute update received; no attributeUpdates mapping applies.");
                    }
                    _ => {}
                },
            }
        }
    }
}
