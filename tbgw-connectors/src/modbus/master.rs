//! One task per connection: polls its slaves in configuration order on their own schedules,
//! executes downlink writes and reads between polls, and reconnects with backoff.
//!
//! Isolation: every connection (host:port or serial line) has its own task, so a slow or
//! silent device delays only the slaves that share its wire. On a shared wire, a slave that
//! stops answering is put on hold after `connectAttemptCount` failed polls for
//! `waitAfterFailedAttemptsMs`, then probed with one request per period, so it costs the others
//! at most one timeout per probe.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::backoff::Backoff;
use tbgw::downlink::{RpcError, RpcResponder};
use tbgw::log_once::LogOnce;
use tbgw::model::{now_millis, DeviceData, Value};
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{self, exception_text, Request, Response, ValueSpec, ValueType};
use super::plan::{ConnectionPlan, Datapoint, Section, SlavePlan};
use super::transport::{Transport, TransportError};

/// Buckets of the lateness histogram (see [`late_bucket`]).
pub const LATE_BUCKETS: usize = 256;

/// The histogram bucket of a lateness of `us` microseconds: exact below 8 µs, then eight
/// buckets per power of two (at most 12.5 % wide); the last bucket takes everything above
/// about 2.4 hours.
pub fn late_bucket(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // 2^e <= us, e >= 3
    let sub = ((us >> (e - 3)) & 7) as usize;
    ((e - 2) * 8 + sub).min(LATE_BUCKETS - 1)
}

/// The largest lateness (µs) that falls into bucket `i` of [`late_bucket`].
pub fn late_bucket_upper_us(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let (e, sub) = (i / 8 + 2, (i % 8) as u64);
    ((9 + sub) << (e - 3)) - 1
}

/// Upper bound (µs) of the `q` quantile (0..1) of a lateness histogram with
/// [`LATE_BUCKETS`] buckets; 0 when it is empty.
pub fn late_quantile_of(hist: &[u64], q: f64) -> u64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let target = ((total as f64 * q).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in hist.iter().enumerate() {
        seen += c;
        if seen >= target {
            return late_bucket_upper_us(i);
        }
    }
    0
}

/// Lateness of poll starts against their schedule, for all connections of the process.
#[derive(Debug)]
pub struct PollMetrics {
    /// Poll cycles started.
    pub polls: AtomicU64,
    /// Poll cycles skipped because the previous one overran.
    pub missed: AtomicU64,
    /// Read requests sent.
    pub requests: AtomicU64,
    /// Sum of lateness in microseconds.
    pub late_sum_us: AtomicU64,
    /// Largest lateness in microseconds.
    pub late_max_us: AtomicU64,
    /// Histogram of lateness, bucketed by [`late_bucket`].
    pub late_hist: [AtomicU64; LATE_BUCKETS],
}

impl Default for PollMetrics {
    fn default() -> Self {
        PollMetrics {
            polls: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            late_sum_us: AtomicU64::new(0),
            late_max_us: AtomicU64::new(0),
            late_hist: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl PollMetrics {
    fn record(&self, late: Duration) {
        let us = late.as_micros().min(u128::from(u64::MAX)) as u64;
        self.polls.fetch_add(1, Relaxed);
        self.late_sum_us.fetch_add(us, Relaxed);
        self.late_max_us.fetch_max(us, Relaxed);
        self.late_hist[late_bucket(us)].fetch_add(1, Relaxed);
    }

    /// A snapshot of the lateness histogram.
    pub fn late_histogram(&self) -> Vec<u64> {
        self.late_hist.iter().map(|c| c.load(Relaxed)).collect()
    }

    /// An upper bound (within 12.5 %) of the `q` quantile (0..1) of lateness, in microseconds.
    pub fn late_quantile_us(&self, q: f64) -> u64 {
        late_quantile_of(&self.late_histogram(), q)
    }
}

/// The process-wide poll metrics (read by the load example and by operators' tooling).
pub fn poll_metrics() -> &'static PollMetrics {
    static METRICS: std::sync::OnceLock<PollMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(PollMetrics::default)
}

/// One operation of a downlink request.
#[derive(Debug, Clone)]
pub struct Op {
    /// Function code.
    pub fc: u8,
    /// Address.
    pub address: u16,
    /// Type and count.
    pub spec: ValueSpec,
    /// The value to write (write function codes).
    pub value: Option<Json>,
}

/// Where the answer to a [`Command`] goes.
#[derive(Debug)]
pub enum Reply {
    /// An RPC.
    Rpc(RpcResponder),
    /// A device RPC (an `rpc` entry or reserved `get`/`set`), answered as the Python gateway
    /// does: `{"result": {"value": v}}` with the value read, or for a write `echo` (what the
    /// request asked to write).
    DeviceRpc {
        /// Where the answer goes.
        responder: RpcResponder,
        /// For a write: the value echoed in the reply.
        echo: Option<Json>,
    },
    /// An attribute update: failures are logged under this key.
    Log(String),
}

/// A downlink request for one slave of a connection.
#[derive(Debug)]
pub struct Command {
    /// Index of the slave in the connection's plan.
    pub slave: usize,
    /// What to do.
    pub op: Op,
    /// Where the answer goes.
    pub reply: Reply,
}

struct SlaveState {
    next_due: Instant,
    online: bool,
    failures: u32,
    hold_until: Option<Instant>,
    /// Read errors already logged (distinct texts, at most [`MAX_LOGGED_ERRORS`]).
    logged: LogOnce,
}

/// Most distinct read errors logged per slave; after that they are only counted.
const MAX_LOGGED_ERRORS: usize = 100;

/// The queue of one connection's downlink requests. Boxed: a channel allocates its first
/// block of 32 slots when it is created, and a slot of an unboxed [`Command`] is about
/// 120 bytes (4 KB per connection, 2 MB for 500 devices, while nothing is sent).
pub type CommandSender = mpsc::Sender<Box<Command>>;

/// Runs one connection until cancelled.
#[derive(Debug)]
pub struct ConnectionTask {
    /// The connection and its slaves.
    pub plan: ConnectionPlan,
    /// Uplink.
    pub uplink: UplinkSender,
    /// Counters.
    pub stats: ConnectorCounters,
    /// Stop signal.
    pub cancel: CancellationToken,
    /// Downlink requests for this connection's slaves.
    pub commands: mpsc::Receiver<Box<Command>>,
    /// Connector name for logs.
    pub connector: Arc<str>,
}

/// How an attempt to reach a slave ended.
enum Outcome {
    Answered,
    Silent,
    Broken,
}

impl ConnectionTask {
    /// The task body.
    pub async fn run(mut self) {
        let start = Instant::now();
        let mut states: Vec<SlaveState> = self
            .plan
            .slaves
            .iter()
            .map(|_| SlaveState {
                next_due: start,
                online: false,
                failures: 0,
                hold_until: None,
                logged: LogOnce::new(MAX_LOGGED_ERRORS),
            })
            .collect();
        let mut transport: Option<Transport> = None;
        let mut connect_failures: u32 = 0;
        let mut next_connect = start;
        let attempt_time = self
            .plan
            .slaves
            .iter()
            .map(|s| s.connect_attempt_time)
            .max()
            .unwrap_or(Duration::from_secs(5));
        let attempt_count = self
            .plan
            .slaves
            .iter()
            .map(|s| s.connect_attempt_count)
            .min()
            .unwrap_or(5);
        let long_wait = self
            .plan
            .slaves
            .iter()
            .map(|s| s.wait_after_failed)
            .min()
            .unwrap_or(Duration::from_secs(30));
        // Between failed connects: 250 ms doubling up to the attempt time; after every
        // `connectAttemptCount` failures in a row, `waitAfterFailedAttemptsMs` instead.
        let mut backoff = Backoff::new(Duration::from_millis(250).min(attempt_time), attempt_time);
        loop {
            if transport.is_none() && Instant::now() >= next_connect {
                match tokio::time::timeout(
                    attempt_time,
                    Transport::connect(&self.plan.endpoint, self.plan.framing),
                )
                .await
                {
                    Ok(Ok(t)) => {
                        if connect_failures > 0 {
                            tracing::info!(connector = %self.connector, endpoint = %self.plan.endpoint, "Modbus connection re-established.");
                        }
                        transport = Some(t);
                        connect_failures = 0;
                        backoff.succeeded();
                    }
                    res => {
                        let error = match res {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no connection within {attempt_time:?}"),
                        };
                        connect_failures += 1;
                        self.stats.add_errors(1);
                        let wait = if connect_failures.is_multiple_of(attempt_count) {
                            long_wait
                        } else {
                            backoff.next_delay()
                        };
                        if connect_failures == 1 || connect_failures.is_multiple_of(attempt_count) {
                            tracing::warn!(connector = %self.connector, endpoint = %self.plan.endpoint, error = %error, attempts = connect_failures, retry_in_ms = wait.as_millis() as u64, "Cannot connect to the Modbus device.");
                        }
                        next_connect = Instant::now() + wait;
                        self.all_offline(&mut states).await;
                    }
                }
            }
            let wake = if transport.is_none() {
                next_connect
            } else {
                states
                    .iter()
                    .map(|s| s.next_due)
                    .min()
                    .unwrap_or(next_connect)
            };
            // Cancellation first; then downlink requests (they run between polls, never in the
            // middle of one); then the schedule.
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    self.all_offline(&mut states).await;
                    return;
                }
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.execute(&mut transport, *cmd).await;
                }
                _ = tokio::time::sleep_until(wake) => {
                    let Some(t) = transport.as_mut() else { continue };
                    let now = Instant::now();
                    for i in 0..states.len() {
                        if states[i].next_due > now {
                            continue;
                        }
                        let period = self.plan.slaves[i].poll;
                        poll_metrics().record(Instant::now().saturating_duration_since(states[i].next_due));
                        // Next start on the fixed grid; cycles that already passed are skipped.
                        let mut next = states[i].next_due + period;
                        let after = Instant::now();
                        while next <= after {
                            next += period;
                            poll_metrics().missed.fetch_add(1, Relaxed);
                        }
                        states[i].next_due = next;
                        if let Some(until) = states[i].hold_until {
                            if after < until {
                                continue;
                            }
                        }
                        match self.poll_slave(t, i, &mut states[i]).await {
                            Outcome::Answered => {
                                states[i].failures = 0;
                                states[i].hold_until = None;
                            }
                            Outcome::Silent => {
                                let s = &mut states[i];
                                s.failures += 1;
                                let slave = &self.plan.slaves[i];
                                if s.failures >= slave.connect_attempt_count {
                                    s.hold_until = Some(Instant::now() + slave.wait_after_failed);
                                    s.failures = 0;
                                }
                            }
                            Outcome::Broken => {
                                transport = None;
                                next_connect = Instant::now() + backoff.next_delay();
                                self.all_offline(&mut states).await;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn all_offline(&self, states: &mut [SlaveState]) {
        for (i, s) in states.iter_mut().enumerate() {
            if s.online {
                s.online = false;
                let _ = self
                    .uplink
                    .disconnect_device(self.plan.slaves[i].device.clone())
                    .await;
            }
        }
    }

    async fn set_online(&self, slave: &SlavePlan, state: &mut SlaveState, online: bool) {
        if state.online == online {
            return;
        }
        state.online = online;
        if online {
            tracing::info!(connector = %self.connector, device = %slave.device, "Modbus device answers; connected.");
            let _ = self
                .uplink
                .connect_device(slave.device.clone(), slave.device_type.clone())
                .await;
        } else {
            tracing::warn!(connector = %self.connector, device = %slave.device, "Modbus device stopped answering; disconnected.");
            let _ = self.uplink.disconnect_device(slave.device.clone()).await;
        }
    }

    fn log_once(&self, state: &mut SlaveState, text: String) {
        if state.logged.first(&text) {
            tracing::warn!(connector = %self.connector, error = %text, "Modbus read failed (logged once per distinct error; all are counted).");
        }
    }

    /// Sends one request with the slave's retry policy.
    async fn call(
        t: &mut Transport,
        slave: &SlavePlan,
        req: &Request,
    ) -> Result<Result<Response, u8>, TransportError> {
        let mut tries = 0;
        loop {
            let r = t.call(slave.unit, req, slave.timeout).await;
            let retry = match &r {
                Err(TransportError::Timeout(_)) => slave.retry_on_empty,
                Err(TransportError::Invalid(_)) => slave.retry_on_invalid,
                _ => false,
            };
            if !retry || tries >= slave.retries {
                return r;
            }
            tries += 1;
        }
    }

    async fn poll_slave(&self, t: &mut Transport, i: usize, state: &mut SlaveState) -> Outcome {
        let slave = &self.plan.slaves[i];
        let ts = now_millis();
        let mut data = DeviceData::new(slave.device.clone(), slave.device_type.clone());
        data.report = slave.report.clone();
        let mut answered = false;
        for (n, block) in slave.blocks.iter().enumerate() {
            if n > 0 && !slave.delay_between.is_zero() {
                tokio::time::sleep(slave.delay_between).await;
            }
            let req = Request::Read {
                fc: block.fc,
                address: block.address,
                count: block.count,
            };
            poll_metrics().requests.fetch_add(1, Relaxed);
            match Self::call(t, slave, &req).await {
                Ok(Ok(resp)) => {
                    answered = true;
                    self.stats.add_messages_received(1);
                    for &m in &block.members {
                        let (section, p) = &slave.reads[m];
                        let offset = p.address - block.address;
                        let decoded = match &resp {
                            Response::Registers(r) => codec::decode_registers(
                                r.get(offset as usize..).unwrap_or(&[]),
                                &p.spec,
                            ),
                            Response::Bits(b) => {
                                codec::decode_bits(b.get(offset as usize..).unwrap_or(&[]), &p.spec)
                            }
                            Response::Written => continue,
                        };
                        match decoded {
                            Ok(v) => {
                                let v = apply_variants(v, p);
                                match section {
                                    Section::Telemetry => data.push_telemetry(ts, p.key.clone(), v),
                                    Section::Attribute => data.push_attribute(p.key.clone(), v),
                                }
                            }
                            Err(e) => {
                                self.stats.add_convert_errors(1);
                                self.log_once(state, format!("{}: {}: {e}", slave.device, p.key));
                            }
                        }
                    }
                }
                Ok(Err(code)) => {
                    answered = true;
                    self.stats.add_errors(1);
                    self.log_once(
                        state,
                        format!(
                            "{}: function code {} at {} (+{}): exception {code} ({})",
                            slave.device,
                            block.fc,
                            block.address,
                            block.count,
                            exception_text(code)
                        ),
                    );
                }
                Err(e) => {
                    self.stats.add_errors(1);
                    let fatal = e.is_fatal();
                    self.log_once(state, format!("{}: {e}", slave.device));
                    if fatal {
                        return Outcome::Broken;
                    }
                    if matches!(e, TransportError::Timeout(_)) {
                        // A silent device: do not spend the other blocks' timeouts on it.
                        if !answered {
                            self.set_online(slave, state, false).await;
                            return Outcome::Silent;
                        }
                        break;
                    }
                }
            }
        }
        if answered {
            self.set_online(slave, state, true).await;
            if !data.is_empty() {
                let _ = self.uplink.send(data).await;
            }
            Outcome::Answered
        } else if slave.blocks.is_empty() {
            Outcome::Answered
        } else {
            Outcome::Silent
        }
    }

    async fn execute(&self, transport: &mut Option<Transport>, cmd: Command) {
        let Some(slave) = self.plan.slaves.get(cmd.slave) else {
            finish(
                cmd.reply,
                Err(RpcError::NotFound("no such slave".into())),
                &self.connector,
            );
            return;
        };
        self.stats.add_downlink(1);
        let result = match transport.as_mut() {
            None => Err(RpcError::Unreachable(format!(
                "{}: no connection to {}",
                slave.device, self.plan.endpoint
            ))),
            Some(t) => {
                let r = run_op(t, slave, &cmd.op).await;
                if let Err(OpError::Transport(e)) = &r {
                    if e.is_fatal() {
                        *transport = None;
                    }
                }
                r.map_err(|e| e.into_rpc(&slave.device))
            }
        };
        finish(cmd.reply, result, &self.connector);
    }
}

fn finish(reply: Reply, result: Result<Json, RpcError>, connector: &str) {
    match reply {
        Reply::Rpc(r) => r.send(result),
        Reply::DeviceRpc { responder, echo } => match result {
            Ok(v) => responder.verbatim(json!({"result": {"value": echo.unwrap_or(v)}})),
            Err(e) => responder.err(e),
        },
        Reply::Log(key) => {
            if let Err(e) = result {
                tracing::warn!(connector = %connector, attribute = %key, error = %e.to_json(), "Cannot write an attribute update to the Modbus device.");
            }
        }
    }
}

fn apply_variants(v: Value, p: &Datapoint) -> Value {
    if let Some(map) = &p.variants {
        if let Some(label) = map.get(&v.to_string()) {
            return Value::from_json(label.clone());
        }
    }
    v
}

/// Why a downlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Transport failure: the device is unreachable.
    #[error("{0}")]
    Transport(TransportError),
    /// The device answered with an exception.
    #[error("Modbus exception {0} ({txt})", txt = exception_text(*.0))]
    Exception(u8),
    /// The request itself is wrong.
    #[error("{0}")]
    Bad(String),
}

impl OpError {
    fn into_rpc(self, device: &str) -> RpcError {
        match self {
            OpError::Transport(e) => RpcError::Unreachable(format!("{device}: {e}")),
            OpError::Exception(_) => RpcError::Device(format!("{device}: {self}")),
            OpError::Bad(s) => RpcError::BadRequest(s),
        }
    }
}

/// Executes one read or write on a slave; a read returns the decoded value, a write `null`.
pub async fn run_op(t: &mut Transport, slave: &SlavePlan, op: &Op) -> Result<Json, OpError> {
    let bad = |e: codec::CodecError| OpError::Bad(e.to_string());
    let requests: Vec<Request> = match op.fc {
        1..=4 => {
            let count = Datapoint {
                key: String::new(),
                fc: op.fc,
                address: op.address,
                spec: op.spec.clone(),
                variants: None,
                max_per_request: None,
            }
            .span();
            vec![Request::Read {
                fc: op.fc,
                address: op.address,
                count,
            }]
        }
        5 | 15 => {
            let value = op
                .value
                .as_ref()
                .ok_or_else(|| OpError::Bad("a write needs a value".into()))?;
            let bits = if op.spec.ty == ValueType::Bits {
                codec::encode_bits(value, &op.spec).map_err(bad)?
            } else {
                codec::unpack_bits(
                    &registers_to_bytes(&codec::encode_registers(value, &op.spec).map_err(bad)?),
                    op.spec.count as usize * 16,
                )
            };
            if op.fc == 5 {
                // Function code 5 writes one coil: the first value.
                vec![Request::WriteSingleCoil {
                    address: op.address,
                    value: bits.first().copied().unwrap_or(false),
                }]
            } else {
                vec![Request::WriteMultipleCoils {
                    address: op.address,
                    values: bits,
                }]
            }
        }
        6 | 16 => {
            let value = op
                .value
                .as_ref()
                .ok_or_else(|| OpError::Bad("a write needs a value".into()))?;
            let regs = codec::encode_registers(value, &op.spec).map_err(bad)?;
            if op.fc == 16 {
                vec![Request::WriteMultipleRegisters {
                    address: op.address,
                    values: regs,
                }]
            } else {
                // Function code 6 writes one register; a wider value takes one request per register.
                regs.iter()
                    .enumerate()
                    .map(|(k, &r)| Request::WriteSingleRegister {
                        address: op.address.wrapping_add(k as u16),
                        value: r,
                    })
                    .collect()
            }
        }
        other => return Err(OpError::Bad(format!("unsupported function code {other}"))),
    };
    let mut result = Json::Null;
    for req in &requests {
        match ConnectionTask::call(t, slave, req).await {
            Err(e) => return Err(OpError::Transport(e)),
            Ok(Err(code)) => return Err(OpError::Exception(code)),
            Ok(Ok(Response::Registers(r))) => {
                result = codec::decode_registers(&r, &op.spec)
                    .map_err(bad)?
                    .to_json();
            }
            Ok(Ok(Response::Bits(b))) => {
                result = codec::decode_bits(&b, &op.spec).map_err(bad)?.to_json();
            }
            Ok(Ok(Response::Written)) => {}
        }
    }
    Ok(result)
}

fn registers_to_bytes(regs: &[u16]) -> Vec<u8> {
    regs.iter().flat_map(|r| r.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_buckets_bound_every_value_within_an_eighth() {
        let mut us = 0u64;
        while us < 1 << 33 {
            let b = late_bucket(us);
            let upper = late_bucket_upper_us(b);
            assert!(upper >= us, "{us} in bucket {b} with upper bound {upper}");
            assert!(
                b == 0 || late_bucket_upper_us(b - 1) < us,
                "{us}: bucket {b} too high"
            );
            assert!(upper - us <= us / 8, "{us}: bound {upper} too loose");
            us = us * 17 / 16 + 1;
        }
        assert_eq!(late_bucket(u64::MAX), LATE_BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_histogram() {
        let mut hist = vec![0u64; LATE_BUCKETS];
        assert_eq!(late_quantile_of(&hist, 0.5), 0);
        for us in [100u64, 100, 100, 1000] {
            hist[late_bucket(us)] += 1;
        }
        assert_eq!(
            late_quantile_of(&hist, 0.5),
            late_bucket_upper_us(late_bucket(100))
        );
        assert_eq!(
            late_quantile_of(&hist, 0.99),
            late_bucket_upper_us(late_bucket(1000))
        );
    }
}
