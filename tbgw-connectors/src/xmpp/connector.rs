//! The running connector: one XMPP session (tokio-xmpp's `StanzaStream`), initial presence on
//! every (re)connect, device messages converted and sent, downlink as chat messages, two-way
//! RPCs matched to the device's answer by the message's `<thread/>`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{json, Value as Json};
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{Downlink, RpcError, RpcRequest, RpcResponder};
use tbgw::log_once::LogOnce;
use tbgw::model::now_millis;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::time::Instant;
use tokio_xmpp::connect::{
    DirectTlsServerConnector, DnsConfig, StartTlsServerConnector, TcpServerConnector,
};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType, Thread};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::Stanza;

use super::config::{Settings, Transport, XmppFileConfig};
use super::downlink::{answer_value, attribute_body, rpc_body, set_body};
use super::tls::CaTlsConnector;

/// Stanzas tokio-xmpp queues for sending.
const SEND_QUEUE: usize = 256;
/// How long closing the stream may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The XMPP connector (`"type": "xmpp"`). See the [module docs](super).
#[derive(Debug)]
pub struct XmppConnector {
    settings: Arc<Settings>,
}

impl XmppConnector {
    /// A connector for validated settings.
    pub fn new(settings: Settings) -> Self {
        XmppConnector {
            settings: Arc::new(settings),
        }
    }

    /// Checks and compiles a parsed connector file (what the factory calls; no I/O).
    pub fn build(
        file: &Path,
        cfg: XmppFileConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        Ok(XmppConnector::new(Settings::build(file, cfg, ignored)?))
    }

    /// The compiled settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// The stanza stream for the configured transport. tokio-xmpp connects in the background and
/// reconnects by itself (1 s doubling to 30 s) whenever the connection is lost.
fn open_stream(s: &Settings) -> Result<StanzaStream, ConnectorError> {
    let dns = match s.host.parse::<IpAddr>() {
        Ok(ip) => DnsConfig::addr(&SocketAddr::new(ip, s.port).to_string()),
        Err(_) => DnsConfig::no_srv(&s.host, s.port),
    };
    let jid = s.jid.clone();
    let pw = s.password.clone();
    let t = Timeouts::tight();
    if s.transport != Transport::Plain {
        // tokio-xmpp builds its rustls config with the process default provider; make sure
        // it is the one the rest of tbgw uses (an error means one is installed already).
        let _ = tokio_xmpp::rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    if let (Some(ca), true) = (&s.ca_cert, s.transport != Transport::Plain) {
        let roots = tbgw::tls::load_roots(ca).map_err(|e| ConnectorError::Other(e.to_string()))?;
        let config = tbgw::tls::client_config(tbgw::tls::Verify::Roots(roots), None)
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        let direct = s.transport == Transport::DirectTls;
        let connector = CaTlsConnector::new(dns, Arc::new(config), direct);
        return Ok(StanzaStream::new_c2s(connector, jid, pw, t, SEND_QUEUE));
    }
    Ok(match s.transport {
        Transport::Plain => {
            StanzaStream::new_c2s(TcpServerConnector::from(dns), jid, pw, t, SEND_QUEUE)
        }
        Transport::StartTls => {
            StanzaStream::new_c2s(StartTlsServerConnector::from(dns), jid, pw, t, SEND_QUEUE)
        }
        Transport::DirectTls => {
            StanzaStream::new_c2s(DirectTlsServerConnector::from(dns), jid, pw, t, SEND_QUEUE)
        }
    })
}

/// A two-way RPC waiting for its device's answer.
struct Pending {
    from: BareJid,
    device: String,
    responder: RpcResponder,
    deadline: Instant,
}

/// State of one run.
struct Session {
    settings: Arc<Settings>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    logged: LogOnce,
    online: bool,
    /// Device name → (device index, the JID it last wrote from).
    heard: HashMap<String, (usize, Jid)>,
    /// `<thread/>` id → waiting RPC.
    pending: HashMap<String, Pending>,
    seq: u64,
}

impl Session {
    fn log_once(&mut self, key: &str) -> bool {
        self.logged.first(key)
    }

    async fn send_chat(
        &self,
        stream: &StanzaStream,
        to: Jid,
        body: String,
        thread: Option<String>,
    ) {
        let mut m = Message::chat(Some(to)).with_body(Lang::default(), body);
        if let Some(id) = thread {
            m.thread = Some(Thread { parent: None, id });
        }
        stream.send(Box::new(Stanza::Message(m))).await;
    }

    /// One incoming message stanza.
    async fn on_message(&mut self, m: Message) -> Result<(), ConnectorError> {
        if m.type_ == MessageType::Error {
            tracing::debug!(from = ?m.from, "A message bounced.");
            return Ok(());
        }
        let Some(from) = m.from.clone() else {
            return Ok(());
        };
        let Some((_, body)) = m.get_best_body(vec![]) else {
            // Chat states, receipts and other bodiless messages.
            return Ok(());
        };
        self.stats.add_messages_received(1);
        self.stats.add_bytes_received(body.len() as u64);
        if let Some(th) = &m.thread {
            if let Some(p) = self.pending.remove(&th.id) {
                if p.from == from.to_bare() {
                    tracing::debug!(device = %p.device, "RPC answered.");
                    p.responder.ok(answer_value(body));
                    return Ok(());
                }
                self.pending.insert(th.id.clone(), p);
            }
        }
        let settings = self.settings.clone();
        let Some(i) = settings
            .devices
            .iter()
            .position(|d| d.device.matches(&from))
        else {
            if self.log_once(&format!("no device: {from}")) {
                tracing::info!(from = %from, "No device is configured for this JID; its messages are dropped (logged once per JID).");
            }
            return Ok(());
        };
        match settings.devices[i].device.convert(body, now_millis()) {
            Ok(Some(d)) => {
                match self.heard.get_mut(&d.device_name) {
                    Some(e) if e.0 == i && e.1 == from => {}
                    _ => {
                        self.heard.insert(d.device_name.clone(), (i, from.clone()));
                    }
                }
                self.uplink.send(d).await?;
            }
            Ok(None) => {}
            Err(e) => {
                self.stats.add_convert_errors(1);
                let text = e.to_string();
                let key: String = format!("{from}: {}", text.chars().take(80).collect::<String>());
                if self.log_once(&key) {
                    tracing::warn!(from = %from, error = %text, "Cannot convert a message body (each distinct error is logged once).");
                }
            }
        }
        Ok(())
    }

    /// The device `name` addressed by downlink: (index, JID to write to).
    fn target(&self, name: &str) -> Result<(usize, Jid), RpcError> {
        if let Some((i, jid)) = self.heard.get(name) {
            return Ok((*i, jid.clone()));
        }
        // A device with a constant name is known before it writes.
        self.settings
            .devices
            .iter()
            .position(|d| d.device.name.is_constant() && d.device.name.source() == name)
            .map(|i| (i, self.settings.devices[i].device.jid.clone()))
            .ok_or_else(|| {
                RpcError::NotFound(format!(
                    "no XMPP device named {name} has sent a message yet"
                ))
            })
    }

    async fn downlink(&mut self, stream: &StanzaStream, dl: Downlink) {
        match dl {
            Downlink::AttributeUpdate(u) => {
                let Ok((i, jid)) = self.target(&u.device) else {
                    return;
                };
                if !self.online {
                    self.stats.add_errors(1);
                    tracing::warn!(device = %u.device, "Not connected to the XMPP server; the attribute update is dropped.");
                    return;
                }
                let settings = self.settings.clone();
                for a in &settings.devices[i].attribute_updates {
                    if let Some(v) = u.values.get(&a.key) {
                        let body = attribute_body(&a.expression, &a.key, v);
                        self.send_chat(stream, jid.clone(), body, None).await;
                    }
                }
            }
            Downlink::Rpc(rpc) => self.rpc(stream, rpc).await,
            _ => {}
        }
    }

    async fn rpc(&mut self, stream: &StanzaStream, rpc: RpcRequest) {
        let RpcRequest {
            device,
            id,
            method,
            params,
            responder,
            ..
        } = rpc;
        let Some(name) = device else {
            responder.err(RpcError::NotFound(format!(
                "unknown connector RPC xmpp_{method}; the XMPP connector has none"
            )));
            return;
        };
        let (i, jid) = match self.target(&name) {
            Ok(t) => t,
            Err(e) => return responder.err(e),
        };
        if !self.online {
            return responder.err(RpcError::Unreachable(
                "not connected to the XMPP server".into(),
            ));
        }
        if method == "set" {
            match set_body(&params) {
                Ok(body) => {
                    self.send_chat(stream, jid, body, None).await;
                    responder.ok(json!({"result": {"success": true}}));
                }
                Err(e) => responder.err(RpcError::BadRequest(e)),
            }
            return;
        }
        let settings = self.settings.clone();
        let Some(r) = settings.devices[i].rpcs.iter().find(|r| r.method == method) else {
            return responder.err(RpcError::NotFound(format!(
                "method {method} is not in serverSideRpc of {name}"
            )));
        };
        let Some(body) = rpc_body(&r.value, &method, &params) else {
            return responder.err(RpcError::BadRequest(format!(
                "valueExpression {} has no match in the request",
                r.value.source()
            )));
        };
        if !r.with_response {
            self.send_chat(stream, jid, body, None).await;
            return responder.ok(Json::Null);
        }
        self.seq += 1;
        let thread = format!("tbgw-rpc-{id}-{}", self.seq);
        self.send_chat(stream, jid.clone(), body, Some(thread.clone()))
            .await;
        self.pending.insert(
            thread,
            Pending {
                from: jid.to_bare(),
                device: name,
                responder,
                deadline: Instant::now() + self.settings.rpc_timeout,
            },
        );
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    fn expire(&mut self, now: Instant) {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(p) = self.pending.remove(&k) {
                p.responder.err(RpcError::Timeout(format!(
                    "device {} did not answer within {:?}",
                    p.device, self.settings.rpc_timeout
                )));
            }
        }
    }

    fn fail_pending(&mut self, why: &str) {
        for (_, p) in self.pending.drain() {
            p.responder.err(RpcError::Unreachable(why.to_string()));
        }
    }
}

#[async_trait]
impl Connector for XmppConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let s = self.settings.clone();
        let cancel = cx.cancellation().clone();
        let mut stream = open_stream(&s)?;
        tracing::info!(jid = %s.jid, host = %s.host, port = s.port, transport = ?s.transport, "Connecting to the XMPP server.");
        let mut session = Session {
            settings: s.clone(),
            uplink: cx.uplink().clone(),
            stats: cx.stats().clone(),
            logged: LogOnce::new(100),
            online: false,
            heard: HashMap::new(),
            pending: HashMap::new(),
            seq: 0,
        };
        let mut online_deadline = Some(Instant::now() + s.online_timeout);
        let far = Duration::from_secs(3600);
        let end = loop {
            let rpc_deadline = session
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + far);
            let not_online = online_deadline.unwrap_or_else(|| Instant::now() + far);
            tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                ev = stream.next() => match ev {
                    None => break Err(ConnectorError::Connection("the XMPP stream ended".into())),
                    Some(Event::Stream(StreamEvent::Reset { bound_jid, .. })) => {
                        // A new session (first connect or after a lost connection): the
                        // server forgot our presence, so announce it again.
                        stream.send(Box::new(Stanza::Presence(Presence::available()))).await;
                        session.online = true;
                        online_deadline = None;
                        tracing::info!(jid = %bound_jid, "Online on the XMPP server.");
                    }
                    Some(Event::Stream(StreamEvent::Resumed)) => {
                        session.online = true;
                        online_deadline = None;
                    }
                    Some(Event::Stream(StreamEvent::Suspended)) => {
                        session.online = false;
                        session.stats.add_errors(1);
                        session.fail_pending("the connection to the XMPP server was lost");
                        online_deadline = Some(Instant::now() + s.online_timeout);
                        tracing::warn!(host = %s.host, port = s.port, "Lost the connection to the XMPP server; reconnecting.");
                    }
                    Some(Event::Stanza(Stanza::Message(m))) => {
                        if let Err(e) = session.on_message(m).await { break Err(e) }
                    }
                    Some(Event::Stanza(_)) => {}
                },
                dl = cx.recv_downlink() => match dl {
                    Some(dl) => {
                        session.stats.add_downlink(1);
                        session.downlink(&stream, dl).await;
                    }
                    None => break Ok(()),
                },
                _ = tokio::time::sleep_until(rpc_deadline) => session.expire(Instant::now()),
                _ = tokio::time::sleep_until(not_online) => {
                    session.stats.add_errors(1);
                    online_deadline = Some(Instant::now() + s.online_timeout);
                    tracing::warn!(host = %s.host, port = s.port, timeout = ?s.online_timeout, "Not online on the XMPP server yet (still trying; check host, port, TLS and credentials).");
                }
            }
        };
        session.fail_pending("the XMPP connector stopped");
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.close()).await;
        end
    }

    fn shared_attribute_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .settings
            .devices
            .iter()
            .flat_map(|d| d.attribute_updates.iter().map(|a| a.key.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}
