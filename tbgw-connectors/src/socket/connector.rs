//! The running connector: listen (TCP or UDP) or connect (client mode, with reconnect), cut
//! what arrives into messages, convert them, and write downlink back to the device's own
//! connection or address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value as Json};
use tbgw::backoff::Backoff;
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::convert::ConverterRegistry;
use tbgw::downlink::{Downlink, RpcError, RpcRequest};
use tbgw::log_once::LogOnce;
use tbgw::model::now_millis;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::config::{Mode, Settings, SocketFileConfig};
use super::downlink::{attribute_answer, parse_set, value_bytes, SetRequest};
use super::uplink::{peer_text, Frame, Framer, Message};

/// How long a write to a device (or a connection for the reserved `set`) may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes queued for one TCP connection.
const WRITE_QUEUE: usize = 64;

/// The Socket connector (`"type": "socket"`). See the [module docs](super).
#[derive(Debug)]
pub struct SocketConnector {
    settings: Arc<Settings>,
    /// Attribute updates for devices not reachable yet: device index → key → value; kept
    /// across restarts of `run`.
    pending: Arc<Mutex<Vec<Map<String, Json>>>>,
}

impl SocketConnector {
    /// A connector for validated settings.
    pub fn new(settings: Settings) -> Self {
        let n = settings.devices.len();
        SocketConnector {
            settings: Arc::new(settings),
            pending: Arc::new(Mutex::new(vec![Map::new(); n])),
        }
    }

    /// Checks and compiles a parsed connector file (what the factory calls; no I/O).
    pub fn build(
        file: &Path,
        cfg: SocketFileConfig,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        Ok(SocketConnector::new(Settings::build(
            file, cfg, converters, ignored,
        )?))
    }

    /// The compiled settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// A write queued for a TCP connection, with where to report its outcome.
type Outgoing = (Vec<u8>, oneshot::Sender<std::io::Result<()>>);

#[derive(Debug, Default)]
struct State {
    /// Device index → the peer it was last heard from (upstream's `device['address']`).
    last_peer: Vec<Option<SocketAddr>>,
    /// Open TCP connections by peer.
    conns: HashMap<SocketAddr, mpsc::Sender<Outgoing>>,
}

/// What every task of one run shares.
struct Shared {
    settings: Arc<Settings>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    logged: Mutex<LogOnce>,
    state: Mutex<State>,
    pending: Arc<Mutex<Vec<Map<String, Json>>>>,
    udp: Option<Arc<UdpSocket>>,
    spawner: tbgw::connector::TaskSpawner,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn log_once(&self, key: &str) -> bool {
        lock(&self.logged).first(key)
    }

    /// One message from `peer`: matched to devices, converted, sent.
    async fn on_message(
        self: &Arc<Self>,
        peer: SocketAddr,
        msg: &[u8],
    ) -> Result<(), ConnectorError> {
        self.stats.add_messages_received(1);
        self.stats.add_bytes_received(msg.len() as u64);
        let text = peer_text(peer);
        let ts = now_millis();
        let mut matched = false;
        for (i, dev) in self.settings.devices.iter().enumerate() {
            if !dev.pattern.matches(&text) {
                continue;
            }
            matched = true;
            let first = {
                let mut st = lock(&self.state);
                let was = st.last_peer[i].replace(peer);
                was.is_none()
            };
            if first {
                self.uplink
                    .connect_device(&dev.name, &dev.device_type)
                    .await?;
            }
            self.flush_pending(i);
            let mut errors = Vec::new();
            match dev.convert(&text, msg, ts, &mut errors) {
                Message::Data(records) => {
                    for d in records {
                        self.uplink.send(d).await?;
                    }
                }
                Message::AttributeRequest(client, keys) => self.attribute_request(i, client, keys),
                Message::Nothing => {}
            }
            if !errors.is_empty() {
                self.stats.add_convert_errors(errors.len() as u64);
                for e in errors {
                    let e = format!("{}: {e}", dev.name);
                    if self.log_once(&e) {
                        tracing::warn!(peer = %text, error = %e, "Cannot convert a message (each distinct error is logged once).");
                    }
                }
            }
        }
        if !matched && self.log_once(&format!("no device: {text}")) {
            tracing::warn!(peer = %text, "No device's address matches this peer; its messages are dropped (logged once per peer).");
        }
        Ok(())
    }

    /// Attribute updates that waited for the device: written now it is heard from, by a
    /// sub-task (the write goes through the connection task that is calling this).
    fn flush_pending(self: &Arc<Self>, i: usize) {
        let values = {
            let mut p = lock(&self.pending);
            match p.get_mut(i) {
                Some(m) if !m.is_empty() => std::mem::take(m),
                _ => return,
            }
        };
        let me = self.clone();
        let name = &self.settings.devices[i].name;
        self.spawner
            .spawn(format!("pending attribute updates of {name}"), async move {
                me.attribute_update(i, values).await;
                Ok(())
            });
    }

    /// Asks ThingsBoard for attributes and writes the answer to the device (a sub-task, so the
    /// device's next messages are not held up).
    fn attribute_request(self: &Arc<Self>, i: usize, client: bool, keys: Vec<String>) {
        let me = self.clone();
        let name = self.settings.devices[i].name.clone();
        self.spawner
            .spawn(format!("attribute request of {name}"), async move {
                let timeout = me.settings.attribute_request_timeout;
                match me
                    .uplink
                    .request_attributes(&name, client, keys, timeout)
                    .await
                {
                    Ok(v) => {
                        if let Err(e) = me.write_device(i, attribute_answer(&v)).await {
                            tracing::warn!(device = %name, error = ?e, "Cannot write the attribute request's answer.");
                        }
                    }
                    Err(e) => {
                        me.stats.add_errors(1);
                        tracing::warn!(device = %name, error = %e, "Attribute request failed.");
                    }
                }
                Ok(())
            });
    }

    /// Writes to the peer device `i` was last heard from: its TCP connection, or its UDP
    /// address from the listening socket.
    async fn write_device(&self, i: usize, bytes: Vec<u8>) -> Result<(), RpcError> {
        let name = &self.settings.devices[i].name;
        let peer = lock(&self.state).last_peer.get(i).copied().flatten();
        let Some(peer) = peer else {
            return Err(RpcError::Unreachable(format!(
                "device {name} has not been heard from yet"
            )));
        };
        self.write_peer(peer, bytes, false).await
    }

    /// Writes to `peer`: over its open TCP connection, or (UDP) from the listening socket;
    /// with `dial`, a TCP peer without a connection gets a new one for this write (the
    /// reserved `set`).
    async fn write_peer(
        &self,
        peer: SocketAddr,
        bytes: Vec<u8>,
        dial: bool,
    ) -> Result<(), RpcError> {
        let unreachable = |e: String| RpcError::Unreachable(format!("{}: {e}", peer_text(peer)));
        if let Some(sock) = &self.udp {
            return match tokio::time::timeout(WRITE_TIMEOUT, sock.send_to(&bytes, peer)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(unreachable(e.to_string())),
                Err(_) => Err(unreachable("write timed out".into())),
            };
        }
        let conn = lock(&self.state).conns.get(&peer).cloned();
        match conn {
            Some(tx) => {
                let (done, result) = oneshot::channel();
                let write = async {
                    tx.send((bytes, done))
                        .await
                        .map_err(|_| "the connection closed".to_string())?;
                    match result.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the connection closed".to_string()),
                    }
                };
                match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                    Ok(r) => r.map_err(unreachable),
                    Err(_) => Err(unreachable("write timed out".into())),
                }
            }
            None if dial => {
                let write = async {
                    let mut s = TcpStream::connect(peer).await?;
                    s.write_all(&bytes).await?;
                    s.shutdown().await
                };
                match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                    Ok(r) => r.map_err(|e| unreachable(e.to_string())),
                    Err(_) => Err(unreachable("connect timed out".into())),
                }
            }
            None => Err(unreachable("not connected".into())),
        }
    }

    /// Shared attributes for device `i`: the configured keys are written, each in its
    /// encoding; those that cannot be written now wait for the device.
    async fn attribute_update(&self, i: usize, values: Map<String, Json>) {
        let dev = &self.settings.devices[i];
        for (key, enc) in &dev.attribute_updates {
            let Some(v) = values.get(key) else { continue };
            let bytes = match value_bytes(v, *enc) {
                Ok(b) => b,
                Err(e) => {
                    self.stats.add_errors(1);
                    tracing::warn!(device = %dev.name, key = %key, error = %e, "Cannot encode an attribute update.");
                    continue;
                }
            };
            if let Err(e) = self.write_device(i, bytes).await {
                tracing::info!(device = %dev.name, key = %key, reason = ?e, "The attribute update waits until the device is heard from.");
                if let Some(m) = lock(&self.pending).get_mut(i) {
                    m.insert(key.clone(), v.clone());
                }
            }
        }
    }

    async fn set(&self, r: SetRequest) -> Result<(), RpcError> {
        let addr = tokio::net::lookup_host((r.address.as_str(), r.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| RpcError::BadRequest(format!("cannot resolve {}", r.address)))?;
        self.write_peer(addr, r.value.into_bytes(), true).await
    }

    async fn downlink(&self, dl: Downlink) {
        match dl {
            Downlink::AttributeUpdate(u) => {
                if let Some(i) = self
                    .settings
                    .devices
                    .iter()
                    .position(|d| d.name == u.device)
                {
                    self.attribute_update(i, u.values).await;
                }
            }
            Downlink::Rpc(rpc) => {
                let RpcRequest {
                    device,
                    method,
                    params,
                    responder,
                    ..
                } = rpc;
                let result = match device {
                    None if method == "set" => self.set_params(&params).await,
                    None => Err(RpcError::NotFound(format!(
                        "unknown connector RPC socket_{method}; the Socket connector has socket_set"
                    ))),
                    Some(name) => self.device_rpc(&name, &method, &params).await,
                };
                match result {
                    Ok(()) => responder.ok(json!("ok")),
                    Err(e) => responder.err(e),
                }
            }
            _ => {}
        }
    }

    async fn set_params(&self, params: &Json) -> Result<(), RpcError> {
        let r = parse_set(params)?;
        self.set(r).await
    }

    async fn device_rpc(&self, name: &str, method: &str, params: &Json) -> Result<(), RpcError> {
        let Some(i) = self.settings.devices.iter().position(|d| d.name == name) else {
            return Err(RpcError::NotFound(format!("no device {name}")));
        };
        if method == "set" {
            return self.set_params(params).await;
        }
        let dev = &self.settings.devices[i];
        let Some((_, enc, _)) = dev.rpcs.iter().find(|(m, _, _)| m == method) else {
            return Err(RpcError::NotFound(format!(
                "method {method} is not in serverSideRpc of {name}"
            )));
        };
        let bytes = value_bytes(params, *enc).map_err(RpcError::BadRequest)?;
        self.write_device(i, bytes).await
    }

    /// A TCP connection (accepted, or made in client mode) until it closes or the run ends.
    async fn serve(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        cancel: CancellationToken,
    ) -> Result<(), ConnectorError> {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Outgoing>(WRITE_QUEUE);
        lock(&self.state).conns.insert(peer, tx);
        let s = &self.settings;
        let mut framer = Framer::new(s.framing.clone(), s.max_frame_bytes);
        let mut buf = vec![0u8; s.buffer_size];
        let text = peer_text(peer);
        tracing::debug!(peer = %text, "Connection opened.");
        let result = 'conn: loop {
            tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                out = rx.recv() => {
                    let Some((bytes, done)) = out else { break Ok(()) };
                    let r = wr.write_all(&bytes).await;
                    let failed = r.is_err();
                    let _ = done.send(r);
                    if failed { break Ok(()) }
                }
                n = rd.read(&mut buf) => {
                    let n = match n {
                        Ok(0) => break Ok(()),
                        Ok(n) => n,
                        Err(e) => {
                            tracing::debug!(peer = %text, error = %e, "Read failed.");
                            break Ok(());
                        }
                    };
                    let chunk = buf.get(..n).unwrap_or_default();
                    if framer.is_passthrough() {
                        if let Err(e) = self.on_message(peer, chunk).await { break Err(e) }
                        continue;
                    }
                    framer.push(chunk);
                    while let Some(f) = framer.next_frame() {
                        match f {
                            Frame::Message(m) => {
                                if let Err(e) = self.on_message(peer, &m).await { break 'conn Err(e) }
                            }
                            Frame::TooLong(len) => {
                                self.stats.add_convert_errors(1);
                                if self.log_once(&format!("too long: {text}")) {
                                    tracing::warn!(peer = %text, bytes = len, max = s.max_frame_bytes, "Skipped a message longer than maxFrameBytes (logged once per peer).");
                                }
                            }
                            Frame::Broken(why) => {
                                self.stats.add_convert_errors(1);
                                self.stats.add_errors(1);
                                if self.log_once(&format!("broken: {text}: {why}")) {
                                    tracing::warn!(peer = %text, reason = %why, "Closing a connection whose stream cannot be framed.");
                                }
                                break 'conn Ok(());
                            }
                        }
                    }
                }
            }
        };
        // The connection is gone: its devices are disconnected (they may come back from
        // another connection).
        let gone: Vec<usize> = {
            let mut st = lock(&self.state);
            st.conns.remove(&peer);
            let mut gone = Vec::new();
            for (i, p) in st.last_peer.iter_mut().enumerate() {
                if *p == Some(peer) {
                    *p = None;
                    gone.push(i);
                }
            }
            gone
        };
        tracing::debug!(peer = %text, "Connection closed.");
        for i in gone {
            if self
                .uplink
                .disconnect_device(&self.settings.devices[i].name)
                .await
                .is_err()
            {
                break;
            }
        }
        result
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ConnectorError> {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let open = lock(&shared.state).conns.len();
                if open >= shared.settings.max_connections {
                    shared.stats.add_errors(1);
                    if shared.log_once("connection limit") {
                        tracing::warn!(peer = %peer_text(peer), max = shared.settings.max_connections, "Refused a connection over maxConnections (logged once).");
                    }
                    drop(stream);
                    continue;
                }
                let me = shared.clone();
                let cancel = cancel.clone();
                shared
                    .spawner
                    .spawn(format!("connection {}", peer_text(peer)), async move {
                        me.serve(stream, peer, cancel).await
                    });
            }
            Err(e) => {
                shared.stats.add_errors(1);
                tracing::warn!(error = %e, "Accepting a connection failed.");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

async fn udp_loop(
    shared: Arc<Shared>,
    sock: Arc<UdpSocket>,
    cancel: CancellationToken,
) -> Result<(), ConnectorError> {
    let mut buf = vec![0u8; shared.settings.buffer_size];
    loop {
        let r = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = sock.recv_from(&mut buf) => r,
        };
        match r {
            Ok((n, peer)) => {
                shared
                    .on_message(peer, buf.get(..n).unwrap_or_default())
                    .await?
            }
            // ICMP errors of earlier sends; nothing to do.
            Err(e) => tracing::debug!(error = %e, "UDP receive error."),
        }
    }
}

async fn client_loop(shared: Arc<Shared>, cancel: CancellationToken) -> Result<(), ConnectorError> {
    let s = shared.settings.clone();
    let target = format!("{}:{}", s.address, s.port);
    let mut backoff = Backoff::new(s.reconnect.0, s.reconnect.1);
    loop {
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect((s.address.as_str(), s.port)),
        );
        let r = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = connect => r,
        };
        match r {
            Ok(Ok(stream)) => {
                let peer = stream
                    .peer_addr()
                    .map_err(|e| ConnectorError::Connection(e.to_string()))?;
                tracing::info!(device = %target, "Connected to the device.");
                backoff.succeeded();
                shared.serve(stream, peer, cancel.clone()).await?;
                if cancel.is_cancelled() {
                    return Ok(());
                }
                shared.stats.add_errors(1);
                tracing::warn!(device = %target, "Lost the connection to the device; reconnecting.");
            }
            Ok(Err(e)) => {
                shared.stats.add_errors(1);
                tracing::warn!(device = %target, error = %e, "Cannot connect to the device.");
            }
            Err(_) => {
                shared.stats.add_errors(1);
                tracing::warn!(device = %target, "Connecting to the device timed out.");
            }
        }
        if !backoff.wait(&cancel).await {
            return Ok(());
        }
    }
}

#[async_trait]
impl Connector for SocketConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let s = self.settings.clone();
        let cancel = cx.cancellation().child_token();
        let bind = (s.address.as_str(), s.port);
        let (listener, udp) = match (s.mode, s.udp) {
            (Mode::Server, false) => (
                Some(TcpListener::bind(bind).await.map_err(|e| {
                    ConnectorError::Connection(format!(
                        "cannot listen on TCP {}:{}: {e}",
                        s.address, s.port
                    ))
                })?),
                None,
            ),
            (Mode::Server, true) => (
                None,
                Some(Arc::new(UdpSocket::bind(bind).await.map_err(|e| {
                    ConnectorError::Connection(format!(
                        "cannot bind UDP {}:{}: {e}",
                        s.address, s.port
                    ))
                })?)),
            ),
            (Mode::Client, _) => (None, None),
        };
        let shared = Arc::new(Shared {
            settings: s.clone(),
            uplink: cx.uplink().clone(),
            stats: cx.stats().clone(),
            logged: Mutex::new(LogOnce::new(100)),
            state: Mutex::new(State {
                last_peer: vec![None; s.devices.len()],
                conns: HashMap::new(),
            }),
            pending: self.pending.clone(),
            udp: udp.clone(),
            spawner: cx.spawner(),
        });
        match (listener, udp) {
            (Some(l), _) => {
                tracing::info!(address = %s.address, port = l.local_addr().map(|a| a.port()).unwrap_or(s.port), "TCP socket is up.");
                cx.spawn("accept", accept_loop(shared.clone(), l, cancel.clone()));
            }
            (None, Some(u)) => {
                tracing::info!(address = %s.address, port = u.local_addr().map(|a| a.port()).unwrap_or(s.port), "UDP socket is up.");
                cx.spawn("udp", udp_loop(shared.clone(), u, cancel.clone()));
            }
            (None, None) => cx.spawn(
                format!("client {}:{}", s.address, s.port),
                client_loop(shared.clone(), cancel.clone()),
            ),
        }
        let end = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                dl = cx.recv_downlink() => match dl {
                    Some(dl) => {
                        cx.stats().add_downlink(1);
                        shared.downlink(dl).await;
                    }
                    None => break Ok(()),
                },
            }
        };
        cancel.cancel();
        cx.finish_tasks(Duration::from_secs(1)).await;
        end
    }

    fn shared_attribute_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .settings
            .devices
            .iter()
            .flat_map(|d| d.attribute_updates.iter().map(|(k, _)| k.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}
