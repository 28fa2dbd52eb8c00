//! The gRPC server's state: one slot per connector key, holding who is registered with it
//! (the *owner* session), the downlink waiting for it, the RPCs not answered yet and the link to
//! the running tbgw connector. Downlink belongs to the slot, not to a session, so a connector
//! process that dies and registers again (a new session) gets what was queued meanwhile, and
//! the RPCs it had received but not answered are sent again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tbgw::downlink::RpcResponder;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::sync::Notify;

use super::downlink;
use super::pb::{ConnectorConfigurationMsg, FromServiceMessage, ResponseStatus};

/// Downlink messages kept per connector while it is not there to take them; beyond, the
/// oldest is dropped (and counted in `queue_dropped`).
pub const MAX_OUTBOX: usize = 10_000;
/// How long a connector's message waits for its tbgw connector to run before it is refused.
pub const LINK_WAIT: Duration = Duration::from_secs(10);
/// Answers (acknowledgements) kept for a connector that sends without reading; beyond, the
/// oldest is dropped.
pub const MAX_REPLIES: usize = 1_000;
/// RPCs kept waiting for an answer per connector; beyond, the oldest is answered with an error.
pub const MAX_PENDING_RPCS: usize = 1_000;
/// An RPC not answered within this time is forgotten (the gateway has long answered it with a
/// timeout by then).
pub const PENDING_RPC_MAX_AGE: Duration = Duration::from_secs(3600);

/// Who is talking to the server: a unary caller by its `identifier` metadata (upstream's
/// client), or one `session` stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionId {
    /// `stream` calls carrying this `identifier`.
    Unary(String),
    /// One `session` call.
    Stream(u64),
}

/// The running tbgw connector a slot hands uplink to.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub uplink: UplinkSender,
    pub stats: ConnectorCounters,
}

#[derive(Debug)]
struct PendingRpc {
    device: String,
    id: i32,
    msg: FromServiceMessage,
    responder: RpcResponder,
    delivered: bool,
    since: Instant,
}

#[derive(Debug, Default)]
struct SlotState {
    owner: Option<SessionId>,
    /// Answers to the owner's own messages (registration first): sent before the outbox.
    replies: VecDeque<FromServiceMessage>,
    outbox: VecDeque<FromServiceMessage>,
    pending: VecDeque<PendingRpc>,
    /// Devices the connector announced: name → type.
    devices: HashMap<String, String>,
    link: Option<Link>,
    /// What a registration answers with (set when the connector is built, refreshed from its
    /// file when it runs).
    configuration: ConnectorConfigurationMsg,
}

/// One configured `type: grpc` connector, by key.
#[derive(Debug)]
pub struct Slot {
    key: String,
    name: String,
    state: Mutex<SlotState>,
    notify: Notify,
}

/// What [`Slot::pop_for`] found.
#[derive(Debug)]
pub(crate) enum Pop {
    Msg(Box<FromServiceMessage>),
    Empty,
    NotOwner,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connector's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn link(&self) -> Option<Link> {
        self.lock().link.clone()
    }

    pub(crate) fn attach(&self, link: Link) {
        self.lock().link = Some(link);
        self.notify.notify_waiters();
    }

    /// The link, waiting up to `timeout` for the tbgw connector to run (at start-up the
    /// server may take a connector's messages before its connector runs; after a restart of
    /// the connector, for the supervisor's backoff).
    pub(crate) async fn wait_link(&self, timeout: Duration) -> Option<Link> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(l) = self.link() {
                return Some(l);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.link(),
            }
        }
    }

    pub(crate) fn set_configuration(&self, configuration: ConnectorConfigurationMsg) {
        self.lock().configuration = configuration;
    }

    /// The tbgw connector stopped; with `stopping`, the registered process is told it is no
    /// longer registered (as upstream's `close()`).
    pub(crate) fn detach(&self, stopping: bool) {
        let mut s = self.lock();
        s.link = None;
        if stopping && s.owner.is_some() {
            // The owner keeps the slot until it has taken this message (see `pop_for`).
            s.replies.clear();
            s.replies.push_back(downlink::unregistered());
        }
        drop(s);
        self.notify.notify_waiters();
    }

    pub(crate) fn device_types(&self) -> HashMap<String, String> {
        self.lock().devices.clone()
    }

    pub(crate) fn devices_add(&self, name: &str, ty: &str) {
        self.lock().devices.insert(name.to_string(), ty.to_string());
    }

    /// Makes `session` the owner; returns the previous owner. The registration answer goes
    /// first in the owner's queue; RPCs an earlier owner received and did not answer are sent
    /// again.
    pub(crate) fn take_over(&self, session: &SessionId) -> Option<SessionId> {
        let mut s = self.lock();
        let previous = s.owner.replace(session.clone());
        s.replies.clear();
        let config = s.configuration.clone();
        s.replies.push_back(downlink::registration(
            ResponseStatus::Success,
            Some(config),
        ));
        let resend: Vec<FromServiceMessage> = s
            .pending
            .iter_mut()
            .filter(|p| p.delivered)
            .map(|p| {
                p.delivered = false;
                p.msg.clone()
            })
            .collect();
        for m in resend.into_iter().rev() {
            s.outbox.push_front(m);
        }
        drop(s);
        self.notify.notify_waiters();
        previous.filter(|p| p != session)
    }

    /// Ends `session`'s ownership; false if it was not the owner.
    pub(crate) fn release(&self, session: &SessionId) -> bool {
        let mut s = self.lock();
        if s.owner.as_ref() == Some(session) {
            s.owner = None;
            s.replies.clear();
            drop(s);
            self.notify.notify_waiters();
            true
        } else {
            false
        }
    }

    pub(crate) fn is_owner(&self, session: &SessionId) -> bool {
        self.lock().owner.as_ref() == Some(session)
    }

    /// Queues an answer for the owner `session` (dropped if it is not the owner any more).
    pub(crate) fn push_reply(&self, session: &SessionId, msg: FromServiceMessage) {
        let mut s = self.lock();
        if s.owner.as_ref() == Some(session) {
            // A client that sends without reading: its oldest answers go first.
            while s.replies.len() >= MAX_REPLIES {
                s.replies.pop_front();
            }
            s.replies.push_back(msg);
            drop(s);
            self.notify.notify_waiters();
        }
    }

    /// Queues downlink for whoever is (or will be) registered; returns how many old messages
    /// were dropped to make room.
    pub(crate) fn push_downlink(&self, msg: FromServiceMessage) -> u64 {
        let mut s = self.lock();
        let mut dropped = 0;
        while s.outbox.len() >= MAX_OUTBOX {
            s.outbox.pop_front();
            dropped += 1;
        }
        s.outbox.push_back(msg);
        drop(s);
        self.notify.notify_waiters();
        dropped
    }

    /// Queues an RPC and keeps its responder until the connector answers.
    pub(crate) fn push_rpc(
        &self,
        device: &str,
        id: i32,
        msg: FromServiceMessage,
        responder: RpcResponder,
    ) -> u64 {
        {
            let mut s = self.lock();
            let now = Instant::now();
            while s
                .pending
                .front()
                .is_some_and(|p| now.duration_since(p.since) > PENDING_RPC_MAX_AGE)
            {
                s.pending.pop_front();
            }
            if s.pending.len() >= MAX_PENDING_RPCS {
                if let Some(old) = s.pending.pop_front() {
                    old.responder.err(tbgw::downlink::RpcError::Unreachable(
                        "too many RPCs waiting for the gRPC connector".into(),
                    ));
                }
            }
            s.pending.push_back(PendingRpc {
                device: device.to_string(),
                id,
                msg: msg.clone(),
                responder,
                delivered: false,
                since: now,
            });
        }
        self.push_downlink(msg)
    }

    /// Hands the connector's answer to RPC `id` of `device` to the gateway; false if no such
    /// RPC is waiting.
    pub(crate) fn answer_rpc(&self, device: &str, id: i32, body: serde_json::Value) -> bool {
        let found = {
            let mut s = self.lock();
            s.pending
                .iter()
                .position(|p| p.id == id && p.device == device)
                .and_then(|i| s.pending.remove(i))
        };
        match found {
            Some(p) => {
                p.responder.verbatim(body);
                true
            }
            None => false,
        }
    }

    /// The next message for `session`: its answers first, then downlink.
    pub(crate) fn pop_for(&self, session: &SessionId) -> Pop {
        let mut s = self.lock();
        if s.owner.as_ref() != Some(session) {
            return Pop::NotOwner;
        }
        if let Some(m) = s.replies.pop_front() {
            if m.unregister_connector_msg.is_some() {
                // Told it is no longer registered: the session owns nothing any more.
                s.owner = None;
            }
            return Pop::Msg(Box::new(m));
        }
        let Some(m) = s.outbox.pop_front() else {
            return Pop::Empty;
        };
        if let Some(rpc) = &m.gateway_device_rpc_request_msg {
            let id = rpc.rpc_request_msg.as_ref().map(|r| r.request_id);
            if let Some(p) = s
                .pending
                .iter_mut()
                .find(|p| Some(p.id) == id && p.device == rpc.device_name)
            {
                p.delivered = true;
            }
        }
        Pop::Msg(Box::new(m))
    }

    /// Waits until something may have changed for this slot's sessions.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// Every configured gRPC connector by key, and which session owns which.
#[derive(Debug, Default)]
pub struct GrpcHub {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    sessions: Mutex<HashMap<SessionId, Arc<Slot>>>,
    next_stream: AtomicU64,
}

impl GrpcHub {
    /// An empty hub: every key is refused until a slot is added.
    pub fn new() -> Arc<Self> {
        Arc::new(GrpcHub::default())
    }

    /// The slot of `key` for connector `name`, created when missing.
    pub fn slot(&self, key: &str, name: &str) -> Arc<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    key: key.to_string(),
                    name: name.to_string(),
                    state: Mutex::new(SlotState::default()),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    pub(crate) fn find(&self, key: &str) -> Option<Arc<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    pub(crate) fn new_stream_id(&self) -> SessionId {
        SessionId::Stream(self.next_stream.fetch_add(1, Ordering::Relaxed))
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Slot>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot `session` owns.
    pub(crate) fn slot_of(&self, session: &SessionId) -> Option<Arc<Slot>> {
        let slot = self.sessions().get(session).cloned()?;
        if slot.is_owner(session) {
            Some(slot)
        } else {
            self.sessions().remove(session);
            None
        }
    }

    pub(crate) fn set_owner(
        &self,
        session: &SessionId,
        slot: &Arc<Slot>,
        previous: Option<SessionId>,
    ) {
        let mut s = self.sessions();
        if let Some(p) = previous {
            s.remove(&p);
        }
        s.insert(session.clone(), slot.clone());
    }

    /// `session` is gone (its stream ended) or unregistered.
    pub(crate) fn session_ended(&self, session: &SessionId) -> bool {
        let slot = self.sessions().remove(session);
        slot.is_some_and(|s| s.release(session))
    }
}
