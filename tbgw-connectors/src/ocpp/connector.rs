//! The running central system: one WebSocket listener (plain or TLS), a task per charge
//! point that answers its calls and sends it the gateway's calls one at a time, and the
//! downlink loop that routes RPCs and attribute updates to the charge point's task.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError, TaskSpawner};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest};
use tbgw::log_once::LogOnce;
use tbgw::model::now_millis;
use tbgw::stats::ConnectorCounters;
use tbgw::tls;
use tbgw::uplink::UplinkSender;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::config::{OcppFileConfig, Settings};
use super::downlink::{attribute_call, reserved_call, rpc_call, OutCall};
use super::frame::{call_error, decode, encode, negotiate, Frame, Version};
use super::messages::{self, Decision};
use super::uplink;

/// How long a TLS + WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The WebSocket read buffer of one connection.
const READ_BUFFER: usize = 4096;
/// Calls queued for one charge point.
const CALL_QUEUE: usize = 16;

/// The OCPP connector (`"type": "ocpp"`). See the [module docs](super).
#[derive(Debug)]
pub struct OcppConnector {
    settings: Arc<Settings>,
    memory: Arc<Mutex<Memory>>,
}

/// What survives reconnects and restarts of `run`: charge points' identities (a charger that
/// reconnects without a new BootNotification keeps its device) and id-token lists from
/// shared attributes.
#[derive(Debug, Default)]
struct Memory {
    /// Charge point id → (profile, device name, device type).
    known: HashMap<String, (Json, String, String)>,
    /// Device name → id tokens set by its `idTokensAttribute`.
    id_tokens: HashMap<String, HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OcppConnector {
    /// Checks and compiles a parsed connector file (no I/O).
    pub fn build(
        file: &Path,
        cfg: OcppFileConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        Ok(OcppConnector::new(Settings::build(file, cfg, ignored)?))
    }

    /// A connector for checked settings.
    pub fn new(settings: Settings) -> Self {
        OcppConnector {
            settings: Arc::new(settings),
            memory: Arc::default(),
        }
    }

    /// The compiled settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// What a charge point answered to a call.
#[derive(Debug)]
enum Answer {
    Result(Json),
    Error(String, String),
}

type Outgoing = (OutCall, oneshot::Sender<Answer>);

/// A connected charge point, as the downlink side sees it.
#[derive(Debug, Clone)]
struct Session {
    conn: u64,
    version: Version,
    cp: usize,
    calls: mpsc::Sender<Outgoing>,
    /// OCPP allows one outstanding call per direction: calls wait here for their turn.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Session {
    async fn call(&self, c: OutCall) -> Result<Json, RpcError> {
        let _turn = self.turn.lock().await;
        let timeout = c.timeout;
        let action = c.action.clone();
        let (tx, rx) = oneshot::channel();
        self.calls
            .send((c, tx))
            .await
            .map_err(|_| RpcError::Unreachable("the charge point disconnected".into()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Answer::Result(v))) => Ok(v),
            Ok(Ok(Answer::Error(code, text))) => Err(RpcError::Device(format!(
                "the charge point answered {action} with {code}: {text}"
            ))),
            Ok(Err(_)) => Err(RpcError::Unreachable(
                "the charge point disconnected before answering".into(),
            )),
            Err(_) => Err(RpcError::Timeout(format!(
                "no answer to {action} within {timeout:?}"
            ))),
        }
    }
}

struct Shared {
    settings: Arc<Settings>,
    memory: Arc<Mutex<Memory>>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    logged: Mutex<LogOnce>,
    /// Device name → its charge point's session.
    sessions: Mutex<HashMap<String, Session>>,
    connections: AtomicUsize,
    next_conn: AtomicU64,
    next_transaction: AtomicI64,
}

impl Shared {
    fn log_once(&self, key: &str) -> bool {
        lock(&self.logged).first(key)
    }

    fn session(&self, device: &str) -> Option<Session> {
        lock(&self.sessions).get(device).cloned()
    }

    fn authorized(&self, cp: usize, device: &str, token: Option<&str>) -> bool {
        let Some(token) = token else { return true };
        if let Some(list) = lock(&self.memory).id_tokens.get(device) {
            return list.contains(token);
        }
        match &self.settings.charge_points[cp].id_tokens {
            Some(list) => list.contains(token),
            None => true,
        }
    }

    async fn rpc(&self, req: RpcRequest) {
        let RpcRequest {
            device,
            id,
            method,
            params,
            responder,
        } = req;
        self.stats.add_downlink(1);
        let Some(device) = device else {
            responder.err(RpcError::NotFound(format!(
                "the OCPP connector has no connector RPC {method}"
            )));
            return;
        };
        let Some(session) = self.session(&device) else {
            responder.err(RpcError::Unreachable(format!(
                "charge point {device} is not connected"
            )));
            return;
        };
        let cp = &self.settings.charge_points[session.cp];
        let configured = cp.rpcs.iter().find(|r| r.name == method);
        let default_timeout = configured
            .map(|r| r.timeout)
            .unwrap_or(Duration::from_secs(5));
        let (call, with_response) =
            match reserved_call(session.version, &method, &params, default_timeout) {
                Some(r) => (r, true),
                None => match configured {
                    Some(dl) => (rpc_call(dl, &method, &params, id), dl.with_response),
                    None => {
                        responder.err(RpcError::NotFound(format!(
                            "method {method} is not in serverSideRpc of {device}"
                        )));
                        return;
                    }
                },
            };
        let call = match call {
            Ok(c) => c,
            Err(e) => {
                responder.err(e);
                return;
            }
        };
        if !with_response {
            responder.ok(Json::Null);
            if let Err(e) = session.call(call).await {
                tracing::warn!(device = %device, method = %method, error = ?e, "RPC call to the charge point failed.");
            }
            return;
        }
        match session.call(call).await {
            Ok(v) => responder.verbatim(json!({ "result": v })),
            Err(e) => {
                self.stats.add_errors(1);
                responder.err(e)
            }
        }
    }

    async fn attribute_update(&self, u: AttributeUpdate) {
        self.stats.add_downlink(1);
        let session = self.session(&u.device);
        let cp_index = session.as_ref().map(|s| s.cp).or_else(|| {
            let mem = lock(&self.memory);
            let cp_id = mem
                .known
                .iter()
                .find(|(_, (_, name, _))| *name == u.device)
                .map(|(id, _)| id.clone())?;
            self.settings.charge_point_for(&cp_id, "", 0)
        });
        let Some(cp_index) = cp_index else { return };
        let cp = &self.settings.charge_points[cp_index];
        for (key, value) in &u.values {
            if cp.id_tokens_attribute.as_deref() == Some(key.as_str()) {
                let list: HashSet<String> = match value {
                    Json::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    Json::String(s) => s
                        .split(',')
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty())
                        .collect(),
                    _ => HashSet::new(),
                };
                tracing::info!(device = %u.device, tokens = list.len(), "Id-token list updated from a shared attribute.");
                lock(&self.memory).id_tokens.insert(u.device.clone(), list);
            }
            for dl in cp.attribute_updates.iter().filter(|d| d.name == *key) {
                let Some(session) = &session else {
                    tracing::debug!(device = %u.device, key = %key, "Attribute update for a charge point that is not connected.");
                    continue;
                };
                match attribute_call(dl, key, value) {
                    Ok(call) => {
                        if let Err(e) = session.call(call).await {
                            self.stats.add_errors(1);
                            tracing::warn!(device = %u.device, key = %key, error = ?e, "Attribute update to the charge point failed.");
                        }
                    }
                    Err(e) => {
                        self.stats.add_convert_errors(1);
                        tracing::warn!(device = %u.device, key = %key, error = %e, "Cannot build the attribute update's call.");
                    }
                }
            }
        }
    }
}

/// What the handshake decided.
#[derive(Debug, Default)]
struct Handshake {
    path: String,
    version: Option<Version>,
    cp: Option<usize>,
    offered: String,
}

fn refuse(status: StatusCode, text: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(text.to_owned()));
    *r.status_mut() = status;
    r
}

/// Basic-auth header value for a user name and password.
fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!("Basic {}", base64(raw.as_bytes()))
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Shared {
    /// The handshake callback's decision: path → `chargePoints[]`, credentials, subprotocol.
    #[allow(clippy::result_large_err)] // the signature of tungstenite's `Callback`
    fn handshake(
        &self,
        peer: SocketAddr,
        req: &Request,
        mut resp: Response,
        out: &mut Handshake,
    ) -> Result<Response, ErrorResponse> {
        let path = req.uri().path();
        let path = percent_decode(path.trim_matches('/'));
        out.path = path.clone();
        let auth = &self.settings.auth;
        if !auth.is_open() {
            let given = req
                .headers()
                .get("authorization")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let ok = auth.tokens.iter().any(|t| t == given)
                || auth.basic.iter().any(|(u, p)| basic(u, p) == given);
            if !ok {
                tracing::warn!(peer = %peer, path = %path, "Charge point refused: no valid Authorization header.");
                let mut r = refuse(StatusCode::UNAUTHORIZED, "not authorized");
                r.headers_mut().insert(
                    "www-authenticate",
                    HeaderValue::from_static("Basic realm=\"OCPP\""),
                );
                return Err(r);
            }
        }
        let Some(cp) = self
            .settings
            .charge_point_for(&path, &peer.ip().to_string(), peer.port())
        else {
            tracing::warn!(peer = %peer, path = %path, "Charge point refused: no chargePoints[] idRegexpPattern matches its path.");
            return Err(refuse(StatusCode::NOT_FOUND, "unknown charge point"));
        };
        out.cp = Some(cp);
        let offered: Vec<&str> = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|h| h.to_str().ok())
            .collect();
        out.offered = offered.join(", ");
        out.version = negotiate(offered, &self.settings.versions);
        if let Some(v) = out.version {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(v.subprotocol()),
            );
        }
        Ok(resp)
    }

    /// One TCP (or TLS) connection, from the WebSocket handshake to its end.
    #[allow(clippy::result_large_err)] // the handshake closure has tungstenite's signature
    async fn serve<S>(self: &Arc<Self>, stream: S, peer: SocketAddr, cancel: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut hs = Handshake::default();
        let max = self.settings.max_message_bytes;
        // Small buffers: OCPP messages are small and a central system holds thousands of
        // connections (tungstenite's defaults are 128 KiB each way).
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let accepted = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_tungstenite::accept_hdr_async_with_config(
                stream,
                |req: &Request, resp: Response| self.handshake(peer, req, resp, &mut hs),
                Some(config),
            ),
        )
        .await;
        let mut ws = match accepted {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "WebSocket handshake failed.");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "WebSocket handshake timed out.");
                return;
            }
        };
        let (Some(version), Some(cp)) = (hs.version, hs.cp) else {
            // OCPP: complete the handshake without a subprotocol, then close at once.
            tracing::warn!(peer = %peer, path = %hs.path, offered = %hs.offered, "Charge point refused: it offers none of the OCPP subprotocols this central system speaks.");
            let reason = format!(
                "offer one of: {}",
                self.settings
                    .versions
                    .iter()
                    .map(|v| v.subprotocol())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::Protocol,
                    reason: reason.into(),
                }))
                .await;
            return;
        };
        let cp_id = hs.path;
        tracing::info!(peer = %peer, charge_point = %cp_id, version = %version, "Charge point connected.");
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel::<Outgoing>(CALL_QUEUE);
        let session = Session {
            conn,
            version,
            cp,
            calls: tx,
            turn: Arc::default(),
        };
        let mut st = CpState {
            cp_id: cp_id.clone(),
            cp,
            version,
            device: None,
            session,
        };
        let known = lock(&self.memory).known.get(&cp_id).cloned();
        if let Some((_, name, ty)) = known {
            if self.set_device(&mut st, name, ty).await.is_err() {
                return;
            }
        }
        let mut outstanding: Option<(String, oneshot::Sender<Answer>)> = None;
        let mut next_id: u64 = 1;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = ws.close(None).await;
                    break;
                }
                out = rx.recv() => {
                    let Some((call, done)) = out else { break };
                    let id = format!("tbgw-{next_id}");
                    next_id += 1;
                    let text = encode(&Frame::Call { id: id.clone(), action: call.action, payload: call.payload });
                    if ws.send(Message::text(text)).await.is_err() {
                        break;
                    }
                    outstanding = Some((id, done));
                }
                msg = ws.next() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::debug!(charge_point = %cp_id, error = %e, "WebSocket read failed.");
                            if matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)) {
                                self.stats.add_convert_errors(1);
                            }
                            break;
                        }
                        None => break,
                    };
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Close(_) => break,
                        Message::Binary(_) => {
                            self.stats.add_convert_errors(1);
                            if self.log_once(&format!("binary: {cp_id}")) {
                                tracing::warn!(charge_point = %cp_id, "Ignoring a binary WebSocket message (OCPP-J is text; logged once per charge point).");
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    self.stats.add_messages_received(1);
                    self.stats.add_bytes_received(text.len() as u64);
                    let reply = match self.on_text(&mut st, text.as_str(), &mut outstanding).await {
                        Ok(r) => r,
                        Err(_) => break,
                    };
                    if let Some(reply) = reply {
                        if ws.send(Message::text(encode(&reply))).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        tracing::info!(charge_point = %cp_id, "Charge point disconnected.");
        if let Some((name, _)) = &st.device {
            let mine = {
                let mut s = lock(&self.sessions);
                if s.get(name).is_some_and(|x| x.conn == conn) {
                    s.remove(name);
                    true
                } else {
                    false
                }
            };
            if mine {
                let _ = self.uplink.disconnect_device(name.clone()).await;
            }
        }
    }

    /// Makes `name` the charge point's device: registered for downlink, announced.
    async fn set_device(
        &self,
        st: &mut CpState,
        name: String,
        ty: String,
    ) -> Result<(), ConnectorError> {
        if st
            .device
            .as_ref()
            .is_some_and(|(n, t)| *n == name && *t == ty)
        {
            return Ok(());
        }
        {
            let mut s = lock(&self.sessions);
            if let Some((old, _)) = &st.device {
                if s.get(old).is_some_and(|x| x.conn == st.session.conn) {
                    s.remove(old);
                }
            }
            s.insert(name.clone(), st.session.clone());
        }
        self.uplink.connect_device(&name, &ty).await?;
        st.device = Some((name, ty));
        Ok(())
    }

    /// One text message from a charge point; the frame to send back, if any.
    async fn on_text(
        &self,
        st: &mut CpState,
        text: &str,
        outstanding: &mut Option<(String, oneshot::Sender<Answer>)>,
    ) -> Result<Option<Frame>, ConnectorError> {
        let frame = match decode(text) {
            Ok(f) => f,
            Err(e) => {
                self.stats.add_convert_errors(1);
                if self.log_once(&format!("frame: {}: {e}", st.cp_id)) {
                    tracing::warn!(charge_point = %st.cp_id, error = %e, "Malformed OCPP frame (each distinct error is logged once).");
                }
                return Ok(e.is_call.then(|| {
                    call_error(
                        e.id.as_deref().unwrap_or("-1"),
                        st.version.framework_error(),
                        &e.reason,
                    )
                }));
            }
        };
        match frame {
            Frame::Call {
                id,
                action,
                payload,
            } => {
                if let Err(r) = messages::check(st.version, &action, &payload) {
                    self.stats.add_convert_errors(1);
                    if self.log_once(&format!("call: {}: {action}: {}", st.cp_id, r.description)) {
                        tracing::warn!(charge_point = %st.cp_id, action = %action, code = r.code, reason = %r.description, "Refused a call (each distinct error is logged once).");
                    }
                    return Ok(Some(call_error(&id, r.code, &r.description)));
                }
                let answer = self.on_call(st, &action, &payload).await?;
                Ok(Some(Frame::CallResult {
                    id,
                    payload: answer,
                }))
            }
            Frame::Send {
                action, payload, ..
            } => {
                if messages::check(st.version, &action, &payload).is_ok() {
                    self.on_call(st, &action, &payload).await?;
                } else {
                    self.stats.add_convert_errors(1);
                }
                Ok(None)
            }
            Frame::CallResult { id, payload } => {
                self.resolve(st, outstanding, &id, Answer::Result(payload));
                Ok(None)
            }
            Frame::CallError {
                id,
                code,
                description,
                ..
            } => {
                self.resolve(st, outstanding, &id, Answer::Error(code, description));
                Ok(None)
            }
        }
    }

    fn resolve(
        &self,
        st: &CpState,
        outstanding: &mut Option<(String, oneshot::Sender<Answer>)>,
        id: &str,
        a: Answer,
    ) {
        match outstanding.take() {
            Some((want, done)) if want == id => {
                let _ = done.send(a);
            }
            other => {
                *outstanding = other;
                tracing::debug!(charge_point = %st.cp_id, id = %id, "An answer to no outstanding call (late, after its timeout?).");
            }
        }
    }

    /// A checked call: data to ThingsBoard, the answer's payload back.
    async fn on_call(
        &self,
        st: &mut CpState,
        action: &str,
        payload: &Json,
    ) -> Result<Json, ConnectorError> {
        let cp = &self.settings.charge_points[st.cp];
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if action == "BootNotification" {
            let profile = uplink::profile(&st.cp_id, payload);
            let (name, ty) = uplink::device_identity(cp, &profile);
            lock(&self.memory)
                .known
                .insert(st.cp_id.clone(), (profile, name.clone(), ty.clone()));
            self.set_device(st, name, ty).await?;
        }
        if st.device.is_none() {
            // Data before any BootNotification: the device is named after the charge point.
            let profile = uplink::profile(&st.cp_id, &Json::Null);
            let name = st.cp_id.clone();
            let ty = uplink::device_identity(cp, &profile).1;
            self.set_device(st, name, ty).await?;
        }
        let (name, ty) = st.device.clone().unwrap_or_default();
        let (msg, ts) = uplink::message(action, payload, &now);
        let data = uplink::convert(
            cp,
            (&name, &ty),
            action,
            &msg,
            payload,
            ts.unwrap_or_else(now_millis),
        );
        if !data.is_empty() {
            self.uplink.send(data).await?;
        }
        let token = messages::id_token(st.version, payload);
        let authorized = self.authorized(st.cp, &name, token);
        let transaction_id = if action == "StartTransaction" {
            self.next_transaction.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        Ok(messages::answer(
            st.version,
            action,
            payload,
            &Decision {
                now: &now,
                heartbeat_interval: self.settings.heartbeat_interval,
                authorized,
                transaction_id,
            },
        ))
    }
}

/// One charge point's connection state.
struct CpState {
    cp_id: String,
    cp: usize,
    version: Version,
    device: Option<(String, String)>,
    session: Session,
}

/// `%XX` escapes of a URL path decoded (invalid escapes kept as written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn tls_acceptor(settings: &Settings) -> Result<Option<tokio_rustls::TlsAcceptor>, ConnectorError> {
    let Some(t) = &settings.tls else {
        return Ok(None);
    };
    let identity = tls::Identity::load_with_password(&t.cert, &t.key, t.password.as_deref())
        .map_err(|e| ConnectorError::Other(e.to_string()))?;
    let roots = t
        .ca_cert
        .as_deref()
        .map(tls::load_roots)
        .transpose()
        .map_err(|e| ConnectorError::Other(e.to_string()))?;
    let cfg =
        tls::server_config(identity, roots).map_err(|e| ConnectorError::Other(e.to_string()))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
}

#[async_trait]
impl Connector for OcppConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let s = self.settings.clone();
        let acceptor = tls_acceptor(&s)?;
        let listener = TcpListener::bind((s.host.as_str(), s.port))
            .await
            .map_err(|e| {
                ConnectorError::Connection(format!("cannot listen on {}:{}: {e}", s.host, s.port))
            })?;
        tracing::info!(host = %s.host, port = s.port, tls = acceptor.is_some(), versions = ?s.versions.iter().map(|v| v.subprotocol()).collect::<Vec<_>>(), "OCPP central system listening.");
        let shared = Arc::new(Shared {
            settings: s.clone(),
            memory: self.memory.clone(),
            uplink: cx.uplink().clone(),
            stats: cx.stats().clone(),
            logged: Mutex::new(LogOnce::new(1024)),
            sessions: Mutex::default(),
            connections: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            next_transaction: AtomicI64::new(now_millis() % 1_000_000_000),
        });
        let cancel = cx.cancellation().child_token();
        let spawner = cx.spawner();
        let mut downlink_open = true;
        let result = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                d = cx.recv_downlink(), if downlink_open => {
                    let Some(d) = d else {
                        downlink_open = false;
                        continue;
                    };
                    downlink(&shared, &spawner, d);
                }
                a = listener.accept() => {
                    let (tcp, peer) = match a {
                        Ok(x) => x,
                        Err(e) => {
                            shared.stats.add_errors(1);
                            tracing::warn!(error = %e, "Accept failed.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    if shared.connections.load(Ordering::Relaxed) >= s.max_charge_points {
                        shared.stats.add_errors(1);
                        if shared.log_once("too many") {
                            tracing::warn!(max = s.max_charge_points, "Refusing a connection: maxChargePoints reached (logged once).");
                        }
                        drop(tcp);
                        continue;
                    }
                    let _ = tcp.set_nodelay(true);
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let me = shared.clone();
                    let acceptor = acceptor.clone();
                    let cancel = cancel.clone();
                    spawner.spawn(format!("charge point {peer}"), async move {
                        match acceptor {
                            Some(acc) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(tcp)).await {
                                Ok(Ok(tls)) => me.serve(tls, peer, cancel).await,
                                Ok(Err(e)) => {
                                    me.stats.add_errors(1);
                                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed.");
                                }
                                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out."),
                            },
                            None => me.serve(tcp, peer, cancel).await,
                        }
                        me.connections.fetch_sub(1, Ordering::Relaxed);
                        Ok(())
                    });
                }
            }
        };
        cancel.cancel();
        result
    }

    fn shared_attribute_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for cp in &self.settings.charge_points {
            keys.extend(cp.id_tokens_attribute.iter().cloned());
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

fn downlink(shared: &Arc<Shared>, spawner: &TaskSpawner, d: Downlink) {
    let me = shared.clone();
    match d {
        Downlink::Rpc(req) => {
            let name = format!(
                "RPC {} to {}",
                req.method,
                req.device.as_deref().unwrap_or("-")
            );
            spawner.spawn(name, async move {
                me.rpc(req).await;
                Ok(())
            });
        }
        Downlink::AttributeUpdate(u) => {
            let name = format!("attribute update of {}", u.device);
            spawner.spawn(name, async move {
                me.attribute_update(u).await;
                Ok(())
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_and_path_decoding() {
        assert_eq!(basic("admin", "admin"), "Basic YWRtaW46YWRtaW4=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
        assert_eq!(percent_decode("CP%201/x%zz"), "CP 1/x%zz");
    }

    #[test]
    fn version_codes() {
        assert_eq!(Version::V16.framework_error(), "ProtocolError");
        assert_eq!(Version::V201.format_violation(), "FormatViolation");
    }
}
