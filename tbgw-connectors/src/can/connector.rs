//! The CAN connector's run loop: open the bus (kernel filters from the routes), announce the
//! devices, send the polls, decode every frame, answer RPCs and attribute updates on the same
//! bus; on a bus error close it, tell ThingsBoard the devices are gone, and reopen it after
//! `reconnectPeriod` (at most `reconnectCount` times in a row), answering RPCs with 503 in
//! between. Nothing here depends on the ThingsBoard connection, so a ThingsBoard reconnect
//! never touches the bus (upstream #2102).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value as Json};
use tbgw::backoff::Backoff;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest};
use tbgw::log_once::LogOnce;
use tbgw::model::{now_millis, DeviceData, Value};
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::time::Instant;

use super::bus::{BusError, BusSpec, CanBus, CanBusOpener, CanFrame};
use super::decode::{down_from, merge_rpc, DecodeError, Down, Plan};
use super::j1939::Reassembler;

/// Distinct errors logged before they are only counted.
const LOG_ONCE_CAP: usize = 128;
/// Frames already waiting that are decoded together and sent to the gateway in one message.
const BATCH: usize = 256;
/// Batches closer together than this mean a busy bus ...
const BUSY: Duration = Duration::from_millis(2);
/// ... on which reading pauses this long after each batch (the added latency, at most).
const COALESCE: Duration = Duration::from_millis(5);

/// The CAN connector. Build it with [`CanFactory`](super::CanFactory), or with
/// [`CanConnector::with_opener`] to run it on another bus (the fake one in tests).
#[derive(Debug)]
pub struct CanConnector {
    name: String,
    plan: Arc<Plan>,
    opener: Arc<dyn CanBusOpener>,
}

/// Why a bus session ended.
enum End {
    Cancelled,
    Bus(BusError),
}

impl CanConnector {
    pub(super) fn new(name: &str, plan: Plan, opener: Arc<dyn CanBusOpener>) -> Self {
        CanConnector {
            name: name.to_string(),
            plan: Arc::new(plan),
            opener,
        }
    }

    /// The same connector on buses from `opener`.
    pub fn with_opener(mut self, opener: Arc<dyn CanBusOpener>) -> Self {
        self.opener = opener;
        self
    }

    /// The validated configuration.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

struct Run {
    connector: Arc<str>,
    plan: Arc<Plan>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    once: LogOnce,
    announced: bool,
    /// Attribute updates that arrived while the bus was closed (the latest per device and
    /// key; only configured keys, so bounded by the configuration), written when it is back.
    pending: Vec<(String, String, Json)>,
    /// J1939 multi-packet broadcasts in progress (when the configuration has PGNs).
    tp: Option<Reassembler>,
}

impl Run {
    fn warn_once(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self.once.first(&format!("{what}: {e}")) {
            tracing::warn!(connector = %self.connector, channel = %self.plan.channel, error = %e, "{what} (each distinct error is logged once; all are counted)");
        }
    }

    async fn announce(&mut self) {
        if self.announced {
            return;
        }
        self.announced = true;
        for d in &self.plan.decoder.devices {
            let _ = self
                .uplink
                .connect_device(d.name.clone(), d.profile.clone())
                .await;
            if !d.units.is_empty() {
                let mut data = DeviceData::new(d.name.clone(), d.profile.clone());
                for (key, unit) in &d.units {
                    data.push_attribute(format!("{key}_unit"), Value::String(unit.clone()));
                }
                let _ = self.uplink.send(data).await;
            }
        }
    }

    async fn withdraw(&mut self) {
        if !self.announced {
            return;
        }
        self.announced = false;
        for d in &self.plan.decoder.devices {
            let _ = self.uplink.disconnect_device(d.name.clone()).await;
        }
    }

    /// Decodes one frame into `out` (not sent yet).
    fn frame(
        &mut self,
        f: &CanFrame,
        ts: i64,
        out: &mut Vec<DeviceData>,
        errors: &mut Vec<DecodeError>,
    ) {
        self.stats.add_messages_received(1);
        self.stats.add_bytes_received(f.data.len() as u64);
        errors.clear();
        self.plan.decoder.decode(f, ts, out, errors);
        if let Some(tp) = self.tp.as_mut() {
            match tp.feed(f) {
                Ok(Some(message)) => self.plan.decoder.decode(&message, ts, out, errors),
                Ok(None) => {}
                Err(e) => {
                    self.stats.add_convert_errors(1);
                    let what = e.to_string();
                    self.warn_once("Broken J1939 multi-packet transfer", &what);
                }
            }
        }
        if !errors.is_empty() {
            self.stats.add_convert_errors(errors.len() as u64);
            for e in errors.drain(..) {
                if self
                    .once
                    .first(&format!("{}/{}: {}", e.device, e.key, e.reason))
                {
                    tracing::warn!(connector = %self.connector, device = %e.device, key = %e.key, frame = %f, error = %e.reason, "Cannot convert a CAN frame (each distinct error is logged once; all are counted).");
                }
            }
        }
    }

    /// Sends what the frames of one wake-up gave, in one message to the gateway.
    async fn flush(&mut self, out: &mut Vec<DeviceData>) {
        match out.len() {
            0 => {}
            1 => {
                if let Some(d) = out.pop() {
                    let _ = self.uplink.send(d).await;
                }
            }
            // The receipt is not needed: a bus cannot be asked to send a frame again.
            _ => drop(self.uplink.send_acked(std::mem::take(out)).await),
        }
    }

    /// The frame `first` and every frame already waiting (up to [`BATCH`]), decoded and sent
    /// together; a fatal error after the batch is returned.
    async fn frames(
        &mut self,
        bus: &mut dyn CanBus,
        first: CanFrame,
        out: &mut Vec<DeviceData>,
        errors: &mut Vec<DecodeError>,
    ) -> Result<(), BusError> {
        let now = now_millis();
        let ts = |f: &CanFrame| if f.ts > 0 { f.ts } else { now };
        self.frame(&first, ts(&first), out, errors);
        let mut result = Ok(());
        for _ in 1..BATCH {
            match bus.try_recv() {
                None => break,
                Some(Ok(f)) => self.frame(&f, ts(&f), out, errors),
                Some(Err(e)) if e.is_fatal() => {
                    result = Err(e);
                    break;
                }
                Some(Err(e)) => self.warn_once("CAN receive error", &e),
            }
        }
        self.flush(out).await;
        result
    }

    /// One bus session.
    async fn session(&mut self, mut bus: Box<dyn CanBus>, cx: &mut ConnectorContext) -> End {
        let cancel = cx.cancellation().clone();
        let plan = self.plan.clone();
        // Polls: `once` at the start of every session (as upstream's poller), `always` now
        // and then every period.
        let mut due: Vec<Instant> = Vec::with_capacity(plan.polls.len());
        for p in &plan.polls {
            if let Err(e) = bus.send(&p.frame).await {
                self.stats.add_errors(1);
                if e.is_fatal() {
                    return End::Bus(e);
                }
                self.warn_once(&format!("Cannot send the poll of {}", p.key), &e);
            }
            due.push(Instant::now() + p.period);
        }
        self.announce().await;
        self.once.clear();
        for (device, key, value) in std::mem::take(&mut self.pending) {
            let mut values = Map::new();
            values.insert(key, value);
            let u = AttributeUpdate { device, values };
            if let Err(e) = self.attribute_update(Some(bus.as_mut()), u).await {
                return End::Bus(e);
            }
        }
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut downlink_open = true;
        // On a busy bus, reading pauses briefly after each batch so that the frames of the
        // next COALESCE arrive together: one wake-up and one message to the gateway for many
        // frames instead of one per frame.
        let mut hold: Option<Instant> = None;
        let mut last_batch = Instant::now();
        loop {
            let next_poll = plan
                .polls
                .iter()
                .zip(&due)
                .filter(|(p, _)| !p.once)
                .map(|(_, t)| *t)
                .min()
                .unwrap_or(far);
            let wake = hold.map_or(next_poll, |h| h.min(next_poll));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return End::Cancelled,
                r = bus.recv(), if hold.is_none() => match r {
                    Ok(f) => {
                        if let Err(e) = self.frames(bus.as_mut(), f, &mut out, &mut errors).await {
                            return End::Bus(e);
                        }
                        let now = Instant::now();
                        if now.duration_since(last_batch) < BUSY {
                            hold = Some(now + COALESCE);
                        }
                        last_batch = now;
                    }
                    Err(e) if e.is_fatal() => return End::Bus(e),
                    Err(e) => self.warn_once("CAN receive error", &e),
                },
                dl = cx.recv_downlink(), if downlink_open => {
                    let Some(dl) = dl else {
                        // No downlink any more (the gateway is stopping): keep reading.
                        downlink_open = false;
                        continue;
                    };
                    self.stats.add_downlink(1);
                    if let Err(e) = self.downlink(Some(bus.as_mut()), dl).await {
                        return End::Bus(e);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if hold.is_some_and(|h| h <= now) {
                        hold = None;
                    }
                    for (i, p) in plan.polls.iter().enumerate() {
                        if p.once || due[i] > now {
                            continue;
                        }
                        due[i] = now + p.period;
                        if let Err(e) = bus.send(&p.frame).await {
                            self.stats.add_errors(1);
                            if e.is_fatal() {
                                return End::Bus(e);
                            }
                            self.warn_once(&format!("Cannot send the poll of {}", p.key), &e);
                        }
                    }
                }
            }
        }
    }

    /// Handles one downlink request; `bus` is `None` while the bus is closed. Returns a fatal
    /// bus error (the session ends) after answering the request.
    async fn downlink(
        &mut self,
        bus: Option<&mut dyn CanBus>,
        dl: Downlink,
    ) -> Result<(), BusError> {
        match dl {
            Downlink::Rpc(rpc) => self.rpc(bus, rpc).await,
            Downlink::AttributeUpdate(u) => self.attribute_update(bus, u).await,
            _ => Ok(()),
        }
    }

    fn device_index(&self, name: &str) -> Option<usize> {
        self.plan
            .decoder
            .devices
            .iter()
            .position(|d| d.name == name)
    }

    /// Keeps an attribute update for when the bus is back (replacing an older one).
    fn keep(&mut self, device: &str, key: &str, value: &Json) {
        self.pending.retain(|(d, k, _)| !(d == device && k == key));
        self.pending
            .push((device.to_string(), key.to_string(), value.clone()));
    }

    async fn attribute_update(
        &mut self,
        mut bus: Option<&mut dyn CanBus>,
        u: AttributeUpdate,
    ) -> Result<(), BusError> {
        let Some(i) = self.device_index(&u.device) else {
            return Ok(());
        };
        let plan = self.plan.clone();
        for (key, value) in &u.values {
            for (_, down) in plan.down[i].updates.iter().filter(|(k, _)| k == key) {
                let r = match build_frame(down, &json!({ "value": value })) {
                    Err(e) => Err(e),
                    Ok(f) => match bus.as_deref_mut() {
                        None => {
                            self.keep(&u.device, key, value);
                            tracing::debug!(connector = %self.connector, device = %u.device, attribute = %key, "The CAN bus is closed; the attribute update is written when it is back.");
                            continue;
                        }
                        Some(b) => match b.send(&f).await {
                            Ok(()) => Ok(()),
                            Err(e) if e.is_fatal() => {
                                self.stats.add_errors(1);
                                self.keep(&u.device, key, value);
                                tracing::warn!(connector = %self.connector, device = %u.device, attribute = %key, error = %e, "Cannot write the attribute update to the CAN bus; it is written when the bus is back.");
                                return Err(e);
                            }
                            Err(e) => Err(RpcError::Device(e.to_string())),
                        },
                    },
                };
                match r {
                    Ok(()) => {
                        tracing::debug!(connector = %self.connector, device = %u.device, attribute = %key, "Attribute update sent.")
                    }
                    Err(e) => {
                        self.stats.add_errors(1);
                        tracing::warn!(connector = %self.connector, device = %u.device, attribute = %key, error = ?e, "Cannot write the attribute update to the CAN bus.");
                    }
                }
            }
        }
        Ok(())
    }

    async fn rpc(&mut self, bus: Option<&mut dyn CanBus>, rpc: RpcRequest) -> Result<(), BusError> {
        let RpcRequest {
            device,
            method,
            params,
            responder,
            ..
        } = rpc;
        let Some(device) = device else {
            responder.err(RpcError::NotFound(format!(
                "the CAN connector has no connector RPC {method}"
            )));
            return Ok(());
        };
        let Some(i) = self.device_index(&device) else {
            responder.err(RpcError::NotFound(format!("no CAN device {device}")));
            return Ok(());
        };
        let plan = self.plan.clone();
        let dd = &plan.down[i];
        let (frame, reserved) = if method == "set" {
            (reserved_set(&params), true)
        } else {
            let configured = dd.methods.get(&method);
            let down = match configured {
                None if !dd.unknown_rpc => {
                    responder.err(RpcError::NotFound(format!(
                        "no serverSideRpc method {method} for CAN device {device} (enableUnknownRpc is off)"
                    )));
                    return Ok(());
                }
                _ if dd.override_rpc => {
                    let merged = merge_rpc(&params, configured.map(|m| &m.raw));
                    match down_from(&merged, &mut Vec::new()) {
                        Ok(d) => Ok(d),
                        Err((k, why)) => Err(RpcError::BadRequest(format!("{k}: {why}"))),
                    }
                }
                // Invariant: `None` with unknown RPCs enabled means override is on (upstream).
                Some(m) => Ok(m.down.clone()),
                None => Err(RpcError::NotFound(format!(
                    "no serverSideRpc method {method}"
                ))),
            };
            (
                down.and_then(|d| {
                    build_frame(&d, &params).map_err(|e| match e {
                        RpcError::BadRequest(s) => {
                            RpcError::BadRequest(format!("serverSideRpc {method}: {s}"))
                        }
                        other => other,
                    })
                }),
                false,
            )
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                self.stats.add_errors(1);
                tracing::warn!(connector = %self.connector, device = %device, method = %method, error = ?e, "RPC not sent.");
                responder.err(e);
                return Ok(());
            }
        };
        let Some(bus) = bus else {
            responder.err(RpcError::Unreachable(format!(
                "the CAN bus {} is not open",
                plan.channel
            )));
            return Ok(());
        };
        match bus.send(&frame).await {
            Ok(()) => {
                tracing::debug!(connector = %self.connector, device = %device, method = %method, frame = %frame, "RPC frame sent.");
                responder.verbatim(if reserved {
                    json!({"result": {"success": true}})
                } else {
                    json!({"success": true})
                });
                Ok(())
            }
            Err(e) => {
                self.stats.add_errors(1);
                let fatal = e.is_fatal();
                responder.err(if fatal {
                    RpcError::Unreachable(e.to_string())
                } else {
                    RpcError::Device(e.to_string())
                });
                if fatal {
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// A frame for `down` with `params`; errors are the RPC's answer.
fn build_frame(down: &Down, params: &Json) -> Result<CanFrame, RpcError> {
    let (id, extended) = down
        .node
        .ok_or_else(|| RpcError::BadRequest("nodeId is missing".into()))?;
    let data = down.encoder.encode(params).map_err(RpcError::BadRequest)?;
    CanFrame::new(id, extended, down.fd, down.brs, data)
        .map_err(|e| RpcError::BadRequest(e.to_string()))
}

/// Reserved `set`: params `"nodeId=5;value=12;dataLength=2"` (upstream's text form) or an
/// object with the same keys; the frame is described by them alone.
fn reserved_set(params: &Json) -> Result<CanFrame, RpcError> {
    let obj: Map<String, Json> = match params {
        Json::Object(o) => o.clone(),
        Json::String(s) => s
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
            .map(|(k, v)| {
                let v = v.trim();
                let j = if let Ok(i) = v.parse::<i64>() {
                    Json::from(i)
                } else if let Some(i) = v
                    .strip_prefix("0x")
                    .and_then(|h| i64::from_str_radix(h, 16).ok())
                {
                    Json::from(i)
                } else if let Ok(f) = v.parse::<f64>() {
                    Json::from(f)
                } else if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
                    Json::Bool(v.eq_ignore_ascii_case("true"))
                } else {
                    Json::from(v)
                };
                (k.trim().to_string(), j)
            })
            .collect(),
        _ => Map::new(),
    };
    if obj.is_empty() {
        return Err(RpcError::BadRequest(
            "RPC params are empty; expected \"nodeId=<id>;value=<v>[;dataLength=..]\"".into(),
        ));
    }
    let down = down_from(&obj, &mut Vec::new())
        .map_err(|(k, why)| RpcError::BadRequest(format!("{k}: {why}")))?;
    build_frame(&down, &Json::Object(obj))
}

#[async_trait]
impl Connector for CanConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let cancel = cx.cancellation().clone();
        let plan = self.plan.clone();
        let mut run = Run {
            connector: Arc::from(self.name.as_str()),
            plan: plan.clone(),
            uplink: cx.uplink().clone(),
            stats: cx.stats().clone(),
            once: LogOnce::new(LOG_ONCE_CAP),
            announced: false,
            pending: Vec::new(),
            tp: plan.decoder.has_pgns().then(Reassembler::new),
        };
        let spec = BusSpec {
            interface: plan.interface.clone(),
            channel: plan.channel.clone(),
            fd: plan.fd,
            filters: plan.decoder.filters(),
        };
        // Upstream waits `reconnectPeriod` between attempts; a little jitter keeps gateways
        // on one bus from retrying in step.
        let mut backoff = Backoff::new(plan.reconnect_period, plan.reconnect_period)
            .with_factor(1.0)
            .with_jitter(0.1);
        let mut failures: u64 = 0;
        let mut gave_up = false;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if !gave_up {
                match self.opener.open(&spec) {
                    Ok(bus) => {
                        tracing::info!(connector = %run.connector, interface = %plan.interface, channel = %plan.channel, fd = plan.fd, "Connected to the CAN bus.");
                        failures = 0;
                        backoff.succeeded();
                        match run.session(bus, cx).await {
                            End::Cancelled => break,
                            End::Bus(e) => {
                                run.stats.add_errors(1);
                                tracing::warn!(connector = %run.connector, channel = %plan.channel, error = %e, "Lost the CAN bus; reopening after reconnectPeriod.");
                            }
                        }
                    }
                    Err(e) => {
                        run.stats.add_errors(1);
                        run.warn_once("Cannot open the CAN bus", &e);
                    }
                }
                run.withdraw().await;
                failures += 1;
                if !plan.reconnect || plan.reconnect_count.is_some_and(|n| failures > n) {
                    gave_up = true;
                    tracing::error!(connector = %run.connector, channel = %plan.channel, attempts = failures, "Last attempt to open the CAN bus failed; the connector stays idle (reconnect/reconnectCount).");
                }
            }
            let wait = if gave_up {
                Duration::from_secs(86_400 * 365)
            } else {
                backoff.next_delay()
            };
            let until = Instant::now() + wait;
            loop {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(until) => break,
                    dl = cx.recv_downlink() => match dl {
                        Some(dl) => {
                            run.stats.add_downlink(1);
                            let _ = run.downlink(None, dl).await;
                        }
                        None => {
                            cancel.cancelled().await;
                            break;
                        }
                    },
                }
            }
        }
        run.withdraw().await;
        cx.finish_tasks(Duration::ZERO).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_set_reads_upstreams_text_form() {
        let f = reserved_set(&json!(
            "nodeId=0x10;value=258;dataLength=2;dataByteorder=little"
        ))
        .unwrap();
        assert_eq!((f.id, f.extended, f.data.clone()), (16, false, vec![2, 1]));
        let f = reserved_set(&json!({"nodeId": 300, "isExtendedId": true, "dataInHex": "0102"}))
            .unwrap();
        assert_eq!((f.id, f.extended, f.data.clone()), (300, true, vec![1, 2]));
        assert!(matches!(
            reserved_set(&json!("")),
            Err(RpcError::BadRequest(_))
        ));
        assert!(
            matches!(reserved_set(&json!("value=1")), Err(RpcError::BadRequest(s)) if s.contains("nodeId"))
        );
    }
}
