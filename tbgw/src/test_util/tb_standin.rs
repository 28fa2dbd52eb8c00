//! A ThingsBoard stand-in: an MQTT 5 client that plays the server side of
//! the ThingsBoard gateway MQTT API against a broker (usually
//! [`Mosquitto`](super::Mosquitto)).

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ClientError, Event, EventLoop, MqttOptions};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout_at, Instant};

/// Topic on which ThingsBoard sends device RPC requests to the gateway.
pub const GATEWAY_RPC_TOPIC: &str = "v1/gateway/rpc";
/// Topic on which ThingsBoard sends device attribute updates to the gateway.
pub const GATEWAY_ATTRIBUTES_TOPIC: &str = "v1/gateway/attributes";
/// Topic on which ThingsBoard sends shared-attribute updates of the gateway
/// device itself.
pub const ME_ATTRIBUTES_TOPIC: &str = "v1/devices/me/attributes";
/// Prefix of topics carrying RPC requests to/from the gateway device itself
/// (`v1/devices/me/rpc/request/<id>`).
pub const ME_RPC_REQUEST_PREFIX: &str = "v1/devices/me/rpc/request/";
/// Prefix of topics carrying RPC responses to/from the gateway device itself
/// (`v1/devices/me/rpc/response/<id>`).
pub const ME_RPC_RESPONSE_PREFIX: &str = "v1/devices/me/rpc/response/";

/// The filters the stand-in subscribes to (with `nolocal`, QoS 1).
const SUBSCRIPTIONS: [&str; 2] = ["v1/gateway/#", "v1/devices/me/#"];
/// Time allowed for connecting and subscribing in the constructors.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between reconnection attempts after an event-loop error.
/// Short, so that after a broker restart the stand-in is usually subscribed
/// again before the gateway (which backs off longer) reconnects and publishes.
const RETRY_DELAY: Duration = Duration::from_millis(25);
/// Largest packet the stand-in accepts (rumqttc's default is only 10 KiB).
const MAX_PACKET_SIZE: u32 = 64 * 1024 * 1024;

/// The answer ThingsBoard gives to the gateway's `getSessionLimits` RPC by
/// default: 64 KiB payloads, 100 in-flight messages, no rate limits.
pub fn default_session_limits() -> Value {
    json!({
        "maxPayloadSize": 65536,
        "maxInflightMessages": 100,
        "rateLimits": {
            "messages": "0:0,",
            "telemetryMessages": "0:0,",
            "telemetryDataPoints": "0:0,"
        },
        "gatewayRateLimits": {
            "messages": "0:0,",
            "telemetryMessages": "0:0,",
            "telemetryDataPoints": "0:0,"
        }
    })
}

/// Whether MQTT topic filter `filter` (may contain `+` and `#`) matches the topic name
/// `topic`: [`crate::topic::matches`].
pub use crate::topic::matches as topic_matches;

/// One message the stand-in received, as ThingsBoard would see it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The topic it was published on.
    pub topic: String,
    /// The raw payload.
    pub payload: Bytes,
    /// The payload parsed as JSON, if it is valid JSON.
    pub json: Option<Value>,
    /// The QoS it was delivered with (at most 1: the stand-in subscribes
    /// with QoS 1).
    pub qos: QoS,
    /// When the stand-in's event loop received it.
    pub received_at: std::time::Instant,
}

impl Received {
    /// The payload as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// `json[key]`, if the payload is a JSON object with that key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json.as_ref().and_then(|j| j.get(key))
    }
}

/// Computes extra replies to a received message: `(topic, payload)` pairs
/// that the stand-in publishes (QoS 1) after recording the message.
pub type Responder = Arc<dyn Fn(&Received) -> Vec<(String, Bytes)> + Send + Sync>;

/// Mutable state shared with the event-loop task.
struct State {
    messages: Vec<Received>,
    connected: bool,
    subscribed: bool,
    ready_count: u64,
    session_limits: Option<Value>,
    responder: Option<Responder>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped after every state change; waiters watch it.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent in a
        // way that matters to tests, so recover from poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Plays ThingsBoard's side of the gateway MQTT API on a broker.
///
/// It subscribes (QoS 1, `nolocal`) to `v1/gateway/#` and `v1/devices/me/#`,
/// records every message in arrival order, answers the gateway's
/// `getSessionLimits` RPC (unless created with
/// [`connect_silent`](Self::connect_silent)), and can send what ThingsBoard
/// sends (RPCs, attribute updates). Its event loop runs in a spawned task
/// that reconnects and resubscribes when the broker restarts; the task is
/// aborted when the stand-in is dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use std::time::Duration;
/// use tbgw::test_util::{Mosquitto, TbStandIn};
/// let broker = Mosquitto::start().await?;
/// let tb = TbStandIn::connect(broker.port()).await?;
/// // ... start the gateway against broker.port() ...
/// let msgs = tb.wait_count(Duration::from_secs(5), "v1/gateway/telemetry", 1).await;
/// assert_eq!(msgs.len(), 1);
/// tb.send_rpc("dev1", 1, "setValue", serde_json::json!({"v": 1})).await.unwrap();
/// # Ok(()) }
/// ```
pub struct TbStandIn {
    client: AsyncClient,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for TbStandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("TbStandIn")
            .field("connected", &st.connected)
            .field("subscribed", &st.subscribed)
            .field("ready_count", &st.ready_count)
            .field("messages", &st.messages.len())
            .field("answers_session_limits", &st.session_limits.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for TbStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TbStandIn {
    /// Connects to the broker at `127.0.0.1:port`, subscribes, and returns
    /// once the subscription is acknowledged (error after 10 s). Answers
    /// `getSessionLimits` with [`default_session_limits`].
    pub async fn connect(port: u16) -> io::Result<TbStandIn> {
        Self::connect_with("127.0.0.1", port, Some(default_session_limits())).await
    }

    /// Like [`connect`](Self::connect) but never answers `getSessionLimits`
    /// (for testing the gateway's fallback when ThingsBoard does not reply).
    pub async fn connect_silent(port: u16) -> io::Result<TbStandIn> {
        Self::connect_with("127.0.0.1", port, None).await
    }

    /// Connects to `host:port`; `session_limits` is the JSON answered to
    /// `getSessionLimits` (`None`: never answer).
    pub async fn connect_with(
        host: &str,
        port: u16,
        session_limits: Option<Value>,
    ) -> io::Result<TbStandIn> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client_id = format!("tb-standin-{}-{n}", std::process::id());
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(Duration::from_secs(10))
            .set_clean_start(true)
            .set_max_packet_size(Some(MAX_PACKET_SIZE));
        let (client, eventloop) = AsyncClient::new(options, 1000);
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                messages: Vec::new(),
                connected: false,
                subscribed: false,
                ready_count: 0,
                session_limits,
                responder: None,
            }),
            changed,
        });
        let task = tokio::spawn(run_event_loop(eventloop, client.clone(), shared.clone()));
        let standin = TbStandIn {
            client,
            shared,
            task,
        };
        if !standin.wait_ready(CONNECT_TIMEOUT).await {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "ThingsBoard stand-in could not connect and subscribe to {host}:{port} \
                     within {CONNECT_TIMEOUT:?}"
                ),
            ));
        }
        Ok(standin)
    }

    /// The underlying rumqttc client, for anything the helpers do not cover.
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Sets the JSON answered to `getSessionLimits`; `None` stops answering.
    pub fn set_session_limits(&self, limits: Option<Value>) {
        self.shared.update(|s| s.session_limits = limits);
    }

    /// Installs a hook called for every received message (after recording
    /// it); the returned `(topic, payload)` pairs are published with QoS 1.
    /// Use it for request/response exchanges such as attribute requests.
    pub fn set_responder<F>(&self, responder: F)
    where
        F: Fn(&Received) -> Vec<(String, Bytes)> + Send + Sync + 'static,
    {
        self.shared
            .update(|s| s.responder = Some(Arc::new(responder)));
    }

    /// Removes the hook installed by [`set_responder`](Self::set_responder).
    pub fn clear_responder(&self) {
        self.shared.update(|s| s.responder = None);
    }

    /// Sends a device RPC request the way ThingsBoard does:
    /// `{"device":device,"data":{"id":id,"method":method,"params":params}}`
    /// on `v1/gateway/rpc`. Returns once the message is queued.
    pub async fn send_rpc(
        &self,
        device: &str,
        id: u64,
        method: &str,
        params: Value,
    ) -> Result<(), ClientError> {
        let body =
            json!({"device": device, "data": {"id": id, "method": method, "params": params}});
        self.publish_json(GATEWAY_RPC_TOPIC, &body).await
    }

    /// Sends a device attribute update: `{"device":device,"data":data}` on
    /// `v1/gateway/attributes`.
    pub async fn send_attribute_update(
        &self,
        device: &str,
        data: Value,
    ) -> Result<(), ClientError> {
        let body = json!({"device": device, "data": data});
        self.publish_json(GATEWAY_ATTRIBUTES_TOPIC, &body).await
    }

    /// Sends an RPC request to the gateway device itself:
    /// `{"method":method,"params":params}` on `v1/devices/me/rpc/request/<id>`.
    pub async fn send_gateway_rpc(
        &self,
        id: u64,
        method: &str,
        params: Value,
    ) -> Result<(), ClientError> {
        let body = json!({"method": method, "params": params});
        self.publish_json(&format!("{ME_RPC_REQUEST_PREFIX}{id}"), &body)
            .await
    }

    /// Sends a shared-attribute update of the gateway device itself (`data`
    /// as is) on `v1/devices/me/attributes`.
    pub async fn send_gateway_attributes(&self, data: Value) -> Result<(), ClientError> {
        self.publish_json(ME_ATTRIBUTES_TOPIC, &data).await
    }

    /// Publishes arbitrary bytes (QoS 1, not retained) on `topic`.
    pub async fn publish_raw(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        self.client
            .publish_bytes(topic, QoS::AtLeastOnce, false, payload.into())
            .await
    }

    async fn publish_json(&self, topic: &str, body: &Value) -> Result<(), ClientError> {
        self.publish_raw(topic, body.to_string()).await
    }

    /// A snapshot of all messages recorded so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.lock().messages.clone()
    }

    /// Recorded messages whose topic matches `filter` (an exact topic or an
    /// MQTT filter with `+`/`#`), in arrival order.
    pub fn messages_on(&self, filter: &str) -> Vec<Received> {
        self.shared
            .lock()
            .messages
            .iter()
            .filter(|m| topic_matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    /// Forgets all recorded messages.
    pub fn clear(&self) {
        self.shared.update(|s| s.messages.clear());
    }

    /// Waits until a recorded message (already recorded ones included; call
    /// [`clear`](Self::clear) first to ignore them) satisfies `pred`, and
    /// returns the first such message; `None` on timeout.
    pub async fn wait_for<F>(&self, timeout: Duration, mut pred: F) -> Option<Received>
    where
        F: FnMut(&Received) -> bool,
    {
        self.wait_until(timeout, |s| s.messages.iter().find(|m| pred(m)).cloned())
            .await
    }

    /// Waits until at least `n` messages matching `filter` (exact topic or
    /// MQTT filter) are recorded. Returns all recorded messages matching it;
    /// fewer than `n` means the wait timed out.
    pub async fn wait_count(&self, timeout: Duration, filter: &str, n: usize) -> Vec<Received> {
        let matching = |s: &State| -> Vec<Received> {
            s.messages
                .iter()
                .filter(|m| topic_matches(filter, &m.topic))
                .cloned()
                .collect()
        };
        match self
            .wait_until(timeout, |s| {
                let count = s
                    .messages
                    .iter()
                    .filter(|m| topic_matches(filter, &m.topic))
                    .count();
                (count >= n).then(|| matching(s))
            })
            .await
        {
            Some(found) => found,
            None => matching(&self.shared.lock()),
        }
    }

    /// Whether the stand-in is connected and its subscriptions are active.
    pub fn is_ready(&self) -> bool {
        let s = self.shared.lock();
        s.connected && s.subscribed
    }

    /// How many times the stand-in has (re)subscribed successfully: 1 after
    /// the constructor, +1 after each reconnect.
    pub fn ready_count(&self) -> u64 {
        self.shared.lock().ready_count
    }

    /// Waits until the stand-in is connected and subscribed; `false` on
    /// timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| (s.connected && s.subscribed).then_some(()))
            .await
            .is_some()
    }

    /// Waits until the stand-in is not connected (e.g. after the broker was
    /// stopped); `false` on timeout.
    pub async fn wait_disconnected(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| (!s.connected).then_some(()))
            .await
            .is_some()
    }

    /// Waits until [`ready_count`](Self::ready_count) reaches `n` and the
    /// stand-in is ready (e.g. `n = before + 1` after a broker restart);
    /// `false` on timeout.
    pub async fn wait_ready_count(&self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| {
            (s.ready_count >= n && s.connected && s.subscribed).then_some(())
        })
        .await
        .is_some()
    }

    /// Re-evaluates `check` after every state change until it yields a value
    /// or `timeout` passes.
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(found) = check(&self.shared.lock()) {
                return Some(found);
            }
            match timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `self.shared`, so it cannot be gone;
                // treat it like a timeout anyway.
                Ok(Err(_)) | Err(_) => return check(&self.shared.lock()),
            }
        }
    }
}

/// Polls the rumqttc event loop forever, reconnecting after errors.
async fn run_event_loop(mut eventloop: EventLoop, client: AsyncClient, shared: Arc<Shared>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                shared.update(|s| {
                    s.connected = true;
                    s.subscribed = false;
                });
                // rumqttc does not restore subscriptions after a clean-start
                // reconnect, so subscribe on every CONNACK. The request must
                // not be awaited here: only this loop drains the channel.
                let client = client.clone();
                tokio::spawn(async move {
                    let filters = SUBSCRIPTIONS.iter().map(|path| Filter {
                        nolocal: true,
                        ..Filter::new(*path, QoS::AtLeastOnce)
                    });
                    if let Err(e) = client.subscribe_many(filters).await {
                        tracing::warn!("ThingsBoard stand-in: subscribe failed: {e}");
                    }
                });
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let ok = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                if ok {
                    shared.update(|s| {
                        s.subscribed = true;
                        s.ready_count += 1;
                    });
                } else {
                    tracing::warn!("ThingsBoard stand-in: subscription refused: {ack:?}");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                handle_publish(&client, &shared, publish);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("ThingsBoard stand-in: connection error: {e}; reconnecting");
                shared.update(|s| {
                    s.connected = false;
                    s.subscribed = false;
                });
                sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// Records a received message and publishes any automatic answers.
fn handle_publish(client: &AsyncClient, shared: &Shared, publish: Publish) {
    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
    let json = serde_json::from_slice::<Value>(&publish.payload).ok();
    let received = Received {
        topic,
        payload: publish.payload,
        json,
        qos: publish.qos,
        received_at: std::time::Instant::now(),
    };

    let (limits, responder) = {
        let s = shared.lock();
        (s.session_limits.clone(), s.responder.clone())
    };
    let mut replies = Vec::new();
    if let (Some(limits), Some(id)) = (limits, received.topic.strip_prefix(ME_RPC_REQUEST_PREFIX)) {
        let method = received.get("method").and_then(Value::as_str);
        if method == Some("getSessionLimits") {
            replies.push((
                format!("{ME_RPC_RESPONSE_PREFIX}{id}"),
                Bytes::from(limits.to_string()),
            ));
        }
    }
    if let Some(responder) = responder {
        replies.extend(responder(&received));
    }

    // Record first, so that a test seeing a reply also sees the request.
    shared.update(|s| s.messages.push(received));

    if !replies.is_empty() {
        let client = client.clone();
        tokio::spawn(async move {
            for (topic, payload) in replies {
                if let Err(e) = client
                    .publish_bytes(topic, QoS::AtLeastOnce, false, payload)
                    .await
                {
                    tracing::warn!("ThingsBoard stand-in: reply failed: {e}");
                }
            }
        });
    }
}
