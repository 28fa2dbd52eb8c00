//! A tiny in-process MQTT 5 broker, used only by `tbgw demo` so that users
//! without a ThingsBoard installation can watch the gateway work.
//!
//! It supports what a gateway and a couple of demo clients need: CONNECT,
//! SUBSCRIBE/UNSUBSCRIBE with `+`/`#` wildcards and the `nolocal` option,
//! PUBLISH with QoS 0 and 1 (QoS 2 is accepted but delivered as QoS 1),
//! PINGREQ and DISCONNECT. There are no retained messages, no persistent
//! sessions, no will messages, no authentication and no retransmission.
//! MQTT 3.1.1 clients are refused with reason `UnsupportedProtocolVersion`.
//!
//! Every connection has a reader task and a writer task fed by a bounded
//! queue. QoS 0 messages for a subscriber whose queue is full are dropped
//! (see [`DemoBroker::dropped_messages`]); for QoS 1 the publisher waits up
//! to a few seconds for room, then the slow subscriber is disconnected, so a
//! stuck client cannot block the broker forever.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnAckProperties, Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode,
    Packet, PingResp, PubAck, PubComp, PubRec, Publish, PublishProperties, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe,
};
use rumqttc::v5::mqttbytes::{valid_filter, valid_topic, Error as CodecError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::timeout;

/// Capacity of each client's outgoing queue (packets).
const CLIENT_QUEUE: usize = 1024;
/// How long a QoS 1 publisher waits for room in a subscriber's full queue
/// before that subscriber is disconnected as too slow.
const SLOW_SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest packet accepted from clients (also announced in CONNACK).
const MAX_PACKET_SIZE: u32 = 8 * 1024 * 1024;
/// How many unacknowledged QoS 1 publishes a client may send (CONNACK).
const RECEIVE_MAXIMUM: u16 = 1024;
/// Time allowed between TCP accept and a complete CONNECT packet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a writer to flush after its connection ended.
const WRITER_LINGER: Duration = Duration::from_secs(2);
/// Flush the write buffer once it holds this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// A running demo broker. Dropping it (or calling
/// [`shutdown`](Self::shutdown)) stops accepting connections and closes the
/// existing ones.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let broker = DemoBroker::start("127.0.0.1:0".parse().expect("valid")).await?;
/// let port = broker.local_addr().port();
/// // ... point the gateway and demo devices at 127.0.0.1:port ...
/// broker.shutdown();
/// # let _ = port;
/// # Ok(()) }
/// ```
pub struct DemoBroker {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    inner: Arc<Inner>,
}

impl fmt::Debug for DemoBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoBroker")
            .field("local_addr", &self.local_addr)
            .field("clients", &self.client_count())
            .field("dropped_messages", &self.dropped_messages())
            .finish()
    }
}

impl DemoBroker {
    /// Binds `addr` (use port 0 for any free port; the demo uses
    /// `127.0.0.1`) and starts serving in spawned tokio tasks.
    pub async fn start(addr: SocketAddr) -> io::Result<DemoBroker> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner::default());
        tokio::spawn(accept_loop(listener, inner.clone(), shutdown_rx));
        tracing::info!("demo MQTT broker listening on {local_addr}");
        Ok(DemoBroker {
            local_addr,
            shutdown,
            inner,
        })
    }

    /// The address the broker listens on (with the actual port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and disconnects all clients (with
    /// reason `ServerShuttingDown`). Returns immediately; the tasks finish
    /// in the background.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// How many messages were not delivered because a subscriber's queue was
    /// full (QoS 0) or the subscriber was disconnected as too slow (QoS 1).
    pub fn dropped_messages(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// How many clients are currently connected.
    pub fn client_count(&self) -> usize {
        self.inner.clients().len()
    }
}

impl Drop for DemoBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What a connection's writer task is asked to do.
enum Outbound {
    /// Write this packet as is.
    Packet(Packet),
    /// Deliver this publish; the writer assigns the packet id for QoS 1.
    Deliver(Publish),
    /// Write a DISCONNECT with this reason code. Encoded by hand: rumqttc
    /// 0.25.1's `Disconnect::write` emits a property-length byte that its
    /// remaining length does not count, and its decoder needs the property
    /// length to be present (it cannot read remaining length 0 or 1).
    Disconnect(DisconnectReasonCode),
    /// Flush and close the connection.
    Close,
}

/// The parts of a connected client that publishers need.
struct ClientHandle {
    conn_id: u64,
    client_id: String,
    tx: mpsc::Sender<Outbound>,
    /// Wakes the reader to end the connection (takeover, slow client,
    /// writer failure).
    kick: Notify,
    dropped: AtomicU64,
}

struct Subscription {
    filter: String,
    qos: QoS,
    nolocal: bool,
}

struct ClientEntry {
    handle: Arc<ClientHandle>,
    subs: Vec<Subscription>,
}

#[derive(Default)]
struct Inner {
    clients: Mutex<HashMap<u64, ClientEntry>>,
    next_conn_id: AtomicU64,
    dropped: AtomicU64,
}

impl Inner {
    fn clients(&self) -> MutexGuard<'_, HashMap<u64, ClientEntry>> {
        // The map stays consistent even if a holder panicked.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes a client and wakes its reader so the connection ends.
    fn kick(&self, conn_id: u64) {
        if let Some(entry) = self.clients().remove(&conn_id) {
            entry.handle.kick.notify_one();
        }
    }

    /// Delivers `publish` (from connection `from`) to every matching
    /// subscriber, at most once per subscriber, with QoS
    /// min(subscription QoS, `qos`).
    async fn route(&self, from: u64, publish: &Publish, qos: QoS) {
        let topic = String::from_utf8_lossy(&publish.topic);
        let targets: Vec<(Arc<ClientHandle>, QoS)> = {
            let clients = self.clients();
            clients
                .iter()
                .filter_map(|(id, entry)| {
                    let best = entry
                        .subs
                        .iter()
                        .filter(|s| !(s.nolocal && *id == from))
                        .filter(|s| tbgw::topic::matches(&s.filter, &topic))
                        .map(|s| s.qos)
                        .reduce(max_qos)?;
                    Some((entry.handle.clone(), min_qos(best, qos)))
                })
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let properties = forwarded_properties(publish.properties.as_ref());
        for (target, qos) in targets {
            let message = Outbound::Deliver(Publish {
                dup: false,
                qos,
                retain: false,
                topic: publish.topic.clone(),
                pkid: 0,
                payload: publish.payload.clone(),
                properties: properties.clone(),
            });
            let message = match target.tx.try_send(message) {
                Ok(()) | Err(TrySendError::Closed(_)) => continue,
                Err(TrySendError::Full(message)) => message,
            };
            if qos == QoS::AtMostOnce {
                self.count_drop(&target);
                continue;
            }
            match target
                .tx
                .send_timeout(message, SLOW_SUBSCRIBER_TIMEOUT)
                .await
            {
                Ok(()) | Err(SendTimeoutError::Closed(_)) => {}
                Err(SendTimeoutError::Timeout(_)) => {
                    self.count_drop(&target);
                    tracing::warn!(
                        "demo broker: disconnecting client {:?}: it does not keep up",
                        target.client_id
                    );
                    self.kick(target.conn_id);
                }
            }
        }
    }

    fn count_drop(&self, target: &ClientHandle) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let before = target.dropped.fetch_add(1, Ordering::Relaxed);
        // Log the 1st, 2nd, 4th, 8th, ... drop.
        if (before + 1).is_power_of_two() {
            tracing::warn!(
                "demo broker: client {:?} is too slow; {} message(s) dropped",
                target.client_id,
                before + 1
            );
        }
    }
}

/// Publish properties passed on to subscribers (no topic alias, no
/// subscription identifiers).
fn forwarded_properties(props: Option<&PublishProperties>) -> Option<PublishProperties> {
    let p = props?;
    let out = PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: None,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        subscription_identifiers: Vec::new(),
        content_type: p.content_type.clone(),
    };
    let empty = out.payload_format_indicator.is_none()
        && out.message_expiry_interval.is_none()
        && out.response_topic.is_none()
        && out.correlation_data.is_none()
        && out.user_properties.is_empty()
        && out.content_type.is_none();
    (!empty).then_some(out)
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) {
        a
    } else {
        b
    }
}

async fn accept_loop(
    listener: TcpListener,
    inner: Arc<Inner>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve(stream, peer, inner.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // E.g. too many open files: back off instead of spinning.
                    tracing::warn!("demo broker: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    tracing::debug!("demo broker: stopped listening");
}

/// Why reading a packet failed.
enum ReadError {
    Io(io::Error),
    Codec(CodecError),
}

/// Reads the next packet; `Ok(None)` on a clean end of stream. Cancel-safe:
/// partial data stays in `buf`.
async fn read_packet(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> Result<Option<Packet>, ReadError> {
    loop {
        if !buf.is_empty() {
            let first_byte = buf[0];
            match Packet::read(buf, Some(MAX_PACKET_SIZE)) {
                Ok(packet) => return Ok(Some(packet)),
                Err(CodecError::InsufficientBytes(_)) => {}
                // rumqttc's codec rejects a DISCONNECT without reason code
                // (remaining length 0), which MQTT 5 allows: it means
                // "normal disconnection".
                Err(CodecError::PayloadRequired) if first_byte >> 4 == 14 => {
                    return Ok(Some(Packet::Disconnect(Disconnect::new(
                        DisconnectReasonCode::NormalDisconnection,
                    ))));
                }
                Err(e) => return Err(ReadError::Codec(e)),
            }
        }
        if rd.read_buf(buf).await.map_err(ReadError::Io)? == 0 {
            return Ok(None);
        }
    }
}

/// Serves one TCP connection until it ends.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    inner: Arc<Inner>,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = serve_inner(stream, peer, inner, shutdown).await {
        tracing::debug!("demo broker: connection from {peer}: {e}");
    }
}

async fn serve_inner(
    stream: TcpStream,
    peer: SocketAddr,
    inner: Arc<Inner>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);

    let first = match timeout(CONNECT_TIMEOUT, read_packet(&mut rd, &mut buf)).await {
        Ok(first) => first,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no CONNECT received",
            ))
        }
    };
    let connect = match first {
        Ok(Some(Packet::Connect(connect, _will, _login))) => connect,
        Err(ReadError::Codec(
            CodecError::InvalidProtocolLevel(_) | CodecError::InvalidProtocol,
        )) => {
            tracing::info!("demo broker: refusing {peer}: only MQTT 5 is supported");
            let connack = connack(ConnectReturnCode::UnsupportedProtocolVersion, None);
            let mut out = BytesMut::new();
            encode(&Packet::ConnAck(connack), &mut out, None);
            wr.write_all(&out).await?;
            wr.shutdown().await?;
            return Ok(());
        }
        Ok(Some(other)) => {
            return Err(io::Error::other(format!("expected CONNECT, got {other:?}")));
        }
        Ok(None) => return Ok(()),
        Err(ReadError::Io(e)) => return Err(e),
        Err(ReadError::Codec(e)) => return Err(io::Error::other(format!("bad CONNECT: {e}"))),
    };
    let Connect {
        keep_alive,
        client_id,
        properties,
        ..
    } = connect;

    let conn_id = inner.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let (client_id, assigned) = if client_id.is_empty() {
        let id = format!("demo-client-{conn_id}");
        (id.clone(), Some(id))
    } else {
        (client_id, None)
    };
    let client_max_packet = properties.as_ref().and_then(|p| p.max_packet_size);
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    let handle = Arc::new(ClientHandle {
        conn_id,
        client_id: client_id.clone(),
        tx: tx.clone(),
        kick: Notify::new(),
        dropped: AtomicU64::new(0),
    });

    // Register, taking over a connection with the same client id.
    let taken_over = {
        let mut clients = inner.clients();
        let old = clients
            .iter()
            .find(|(_, e)| e.handle.client_id == client_id)
            .map(|(id, _)| *id);
        let old = old.and_then(|id| clients.remove(&id));
        clients.insert(
            conn_id,
            ClientEntry {
                handle: handle.clone(),
                subs: Vec::new(),
            },
        );
        old
    };
    if let Some(old) = taken_over {
        let _ = old
            .handle
            .tx
            .try_send(Outbound::Disconnect(DisconnectReasonCode::SessionTakenOver));
        old.handle.kick.notify_one();
    }

    let writer = tokio::spawn(write_loop(wr, rx, client_max_packet, handle.clone()));
    tracing::debug!("demo broker: client {client_id:?} connected from {peer}");

    let _ = tx
        .send(Outbound::Packet(Packet::ConnAck(connack(
            ConnectReturnCode::Success,
            assigned,
        ))))
        .await;

    // MQTT: disconnect after 1.5 × keep-alive without any packet.
    let idle_limit = if keep_alive == 0 {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        Duration::from_millis(u64::from(keep_alive) * 1500)
    };
    let mut session = Session {
        inner: &inner,
        handle: &handle,
        tx: &tx,
        warned_qos2: false,
    };
    let result = loop {
        let packet = tokio::select! {
            read = timeout(idle_limit, read_packet(&mut rd, &mut buf)) => match read {
                Ok(Ok(Some(packet))) => packet,
                Ok(Ok(None)) => break Ok(()),
                Ok(Err(ReadError::Io(e))) => break Err(e),
                Ok(Err(ReadError::Codec(e))) => {
                    session.disconnect(DisconnectReasonCode::MalformedPacket);
                    break Err(io::Error::other(format!("malformed packet: {e}")));
                }
                Err(_) => {
                    session.disconnect(DisconnectReasonCode::KeepAliveTimeout);
                    break Err(io::Error::new(io::ErrorKind::TimedOut, "keep-alive timeout"));
                }
            },
            _ = handle.kick.notified() => break Ok(()),
            _ = shutdown.changed() => {
                session.disconnect(DisconnectReasonCode::ServerShuttingDown);
                break Ok(());
            }
        };
        match session.handle_packet(packet).await {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };

    // Unregister (unless a takeover already removed us), let the writer
    // flush, and make sure it does not linger on a stuck socket.
    inner.clients().remove(&conn_id);
    let _ = tx.try_send(Outbound::Close);
    drop(tx);
    drop(handle);
    let abort = writer.abort_handle();
    if timeout(WRITER_LINGER, writer).await.is_err() {
        abort.abort();
    }
    tracing::debug!("demo broker: client {client_id:?} disconnected");
    result
}

/// Per-connection packet handling.
struct Session<'a> {
    inner: &'a Inner,
    handle: &'a Arc<ClientHandle>,
    tx: &'a mpsc::Sender<Outbound>,
    warned_qos2: bool,
}

impl Session<'_> {
    /// Queues a packet for the client. Control packets wait for room in the
    /// queue (the client must read to get them).
    async fn send(&self, packet: Packet) {
        let _ = self.tx.send(Outbound::Packet(packet)).await;
    }

    /// Queues a DISCONNECT (best effort: skipped if the queue is full).
    fn disconnect(&self, reason: DisconnectReasonCode) {
        let _ = self.tx.try_send(Outbound::Disconnect(reason));
    }

    /// Handles one packet; `Ok(false)` ends the connection normally.
    async fn handle_packet(&mut self, packet: Packet) -> io::Result<bool> {
        match packet {
            Packet::Publish(publish) => self.publish(publish).await,
            Packet::PubRel(rel) => {
                self.send(Packet::PubComp(PubComp::new(rel.pkid, None)))
                    .await;
                Ok(true)
            }
            // We do not retransmit, so acknowledgements need no bookkeeping.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => Ok(true),
            Packet::Subscribe(subscribe) => {
                self.subscribe(subscribe).await;
                Ok(true)
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.unsubscribe(unsubscribe).await;
                Ok(true)
            }
            Packet::PingReq(_) => {
                self.send(Packet::PingResp(PingResp)).await;
                Ok(true)
            }
            Packet::Disconnect(_) => Ok(false),
            other => {
                self.disconnect(DisconnectReasonCode::ProtocolError);
                Err(io::Error::other(format!("unexpected packet {other:?}")))
            }
        }
    }

    async fn publish(&mut self, publish: Publish) -> io::Result<bool> {
        let topic_ok = std::str::from_utf8(&publish.topic)
            .map(|t| !t.is_empty() && valid_topic(t))
            .unwrap_or(false);
        if !topic_ok {
            // Includes topic aliases, which we do not offer.
            self.disconnect(DisconnectReasonCode::TopicNameInvalid);
            return Err(io::Error::other(format!(
                "invalid topic name {:?}",
                String::from_utf8_lossy(&publish.topic)
            )));
        }
        let qos = match publish.qos {
            QoS::ExactlyOnce => {
                if !self.warned_qos2 {
                    self.warned_qos2 = true;
                    tracing::info!(
                        "demo broker: client {:?} publishes with QoS 2; delivering as QoS 1",
                        self.handle.client_id
                    );
                }
                QoS::AtLeastOnce
            }
            qos => qos,
        };
        self.inner.route(self.handle.conn_id, &publish, qos).await;
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.send(Packet::PubAck(PubAck::new(publish.pkid, None)))
                    .await
            }
            QoS::ExactlyOnce => {
                self.send(Packet::PubRec(PubRec::new(publish.pkid, None)))
                    .await
            }
        }
        Ok(true)
    }

    async fn subscribe(&self, subscribe: Subscribe) {
        let mut return_codes = Vec::with_capacity(subscribe.filters.len());
        {
            let mut clients = self.inner.clients();
            let Some(entry) = clients.get_mut(&self.handle.conn_id) else {
                return; // being kicked
            };
            for filter in subscribe.filters {
                let code = if filter.path.starts_with("$share/") {
                    SubscribeReasonCode::SharedSubscriptionsNotSupported
                } else if !valid_filter(&filter.path) {
                    SubscribeReasonCode::TopicFilterInvalid
                } else {
                    let qos = min_qos(filter.qos, QoS::AtLeastOnce);
                    let sub = Subscription {
                        filter: filter.path,
                        qos,
                        nolocal: filter.nolocal,
                    };
                    match entry.subs.iter_mut().find(|s| s.filter == sub.filter) {
                        Some(existing) => *existing = sub,
                        None => entry.subs.push(sub),
                    }
                    SubscribeReasonCode::Success(qos)
                };
                return_codes.push(code);
            }
        }
        self.send(Packet::SubAck(SubAck {
            pkid: subscribe.pkid,
            return_codes,
            properties: None,
        }))
        .await;
    }

    async fn unsubscribe(&self, unsubscribe: Unsubscribe) {
        let reasons = {
            let mut clients = self.inner.clients();
            let Some(entry) = clients.get_mut(&self.handle.conn_id) else {
                return;
            };
            unsubscribe
                .filters
                .iter()
                .map(|filter| {
                    let before = entry.subs.len();
                    entry.subs.retain(|s| &s.filter != filter);
                    if entry.subs.len() < before {
                        UnsubAckReason::Success
                    } else {
                        UnsubAckReason::NoSubscriptionExisted
                    }
                })
                .collect()
        };
        self.send(Packet::UnsubAck(UnsubAck {
            pkid: unsubscribe.pkid,
            reasons,
            properties: None,
        }))
        .await;
    }
}

fn connack(code: ConnectReturnCode, assigned_client_id: Option<String>) -> ConnAck {
    let properties = (code == ConnectReturnCode::Success).then(|| ConnAckProperties {
        session_expiry_interval: None,
        receive_max: Some(RECEIVE_MAXIMUM),
        max_qos: None,
        retain_available: Some(0),
        max_packet_size: Some(MAX_PACKET_SIZE),
        assigned_client_identifier: assigned_client_id,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: Some(1),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    });
    ConnAck {
        session_present: false,
        code,
        properties,
    }
}

/// Appends `packet` to `out`; returns false (leaving `out` unchanged) if it
/// cannot be encoded, e.g. because it exceeds the client's `max_size`.
fn encode(packet: &Packet, out: &mut BytesMut, max_size: Option<u32>) -> bool {
    let before = out.len();
    match packet.write(out, max_size) {
        Ok(_) => true,
        Err(e) => {
            out.truncate(before);
            tracing::debug!("demo broker: not sending packet: {e}");
            false
        }
    }
}

/// Writes queued packets to the client, batching whatever is queued.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outbound>,
    client_max_packet: Option<u32>,
    handle: Arc<ClientHandle>,
) {
    let mut out = BytesMut::with_capacity(8 * 1024);
    let mut last_pkid: u16 = 0;
    let mut closing = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outbound::Packet(packet) => {
                    encode(&packet, &mut out, None);
                }
                Outbound::Deliver(mut publish) => {
                    if publish.qos != QoS::AtMostOnce {
                        last_pkid = last_pkid.checked_add(1).unwrap_or(1);
                        publish.pkid = last_pkid;
                    }
                    encode(&Packet::Publish(publish), &mut out, client_max_packet);
                }
                Outbound::Disconnect(reason) => {
                    // Remaining length 2: reason code, empty properties.
                    out.extend_from_slice(&[0xE0, 0x02, reason as u8, 0x00]);
                }
                Outbound::Close => {
                    closing = true;
                    break;
                }
            }
            if out.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        if closing {
            break;
        }
    }
    let _ = wr.shutdown().await;
    // If the writer ends first (write error), end the reader too.
    handle.kick.notify_one();
}
