//! The S7 connector's build step and run loop: one task per device owns its connection,
//! polls on `pollPeriod`, reconnects with backoff, checks an idle connection every
//! `heartbeatInterval`, and runs that device's reads and writes for RPCs and attribute
//! updates between polls (one request at a time on the one connection).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value as Json};
use tbgw::backoff::Backoff;
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest, RpcResponder};
use tbgw::log_once::LogOnce;
use tbgw::model::{now_millis, DeviceData, Value};
use tbgw::report::ReportOverrides;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::address::Address;
use super::client::{Client, ClientError};
use super::config::{DeviceConfig, PointConfig, S7ConnectorConfig};
use super::downlink;
use super::plan::{Plan, Span};
use super::proto::{self, Range, WriteItem, LOCAL_TSAP_PG};

/// Shortest `pollPeriod` accepted.
const MIN_POLL_PERIOD: Duration = Duration::from_millis(10);
/// Distinct errors logged per device before they are only counted.
const LOG_ONCE_CAP: usize = 64;
/// Downlink jobs waiting per device; more are refused (503).
const JOB_QUEUE: usize = 256;

/// One polled value.
#[derive(Debug, Clone)]
struct Point {
    key: String,
    attribute: bool,
    addr: Address,
}

/// One configured RPC method.
#[derive(Debug, Clone)]
struct Method {
    name: String,
    write: bool,
    addr: Address,
}

/// One device, validated.
#[derive(Debug)]
struct Device {
    name: String,
    profile: String,
    host: String,
    port: u16,
    local_tsap: u16,
    remote_tsap: u16,
    period: Duration,
    timeout: Duration,
    auto_reconnect: bool,
    max_retries: u32,
    retry_delay: Duration,
    max_delay: Duration,
    heartbeat: Option<Duration>,
    points: Vec<Point>,
    updates: Vec<(String, Address)>,
    methods: Vec<Method>,
    report: Option<Arc<ReportOverrides>>,
}

/// The S7 connector. Build it with [`S7Factory`](super::S7Factory).
#[derive(Debug)]
pub struct S7Connector {
    name: String,
    devices: Vec<Arc<Device>>,
}

fn secs(file: &Path, path: String, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if s.is_finite() && (0.0..=86_400.0).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(ConfigError::new(
            file,
            path,
            format!("{s} is not a number of seconds (0 ..= 86400)"),
        ))
    }
}

/// A TSAP: a number, or text `0x0100`, `0100` (hex) or `01.00` (Siemens' notation).
fn tsap(file: &Path, path: String, v: Option<&Json>) -> Result<u16, ConfigError> {
    let err = |why: String| ConfigError::new(file, path.clone(), why);
    match v {
        None => Err(err("missing; a LOGO needs tsapSnap7 and tsapLogo".into())),
        Some(Json::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| err(format!("{n} is not a TSAP (0 ..= 65535)"))),
        Some(Json::String(s)) => {
            let t = s.trim();
            let parsed = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                u16::from_str_radix(h, 16).ok()
            } else if let Some((hi, lo)) = t.split_once('.') {
                match (u8::from_str_radix(hi, 16), u8::from_str_radix(lo, 16)) {
                    (Ok(h), Ok(l)) => Some(u16::from_be_bytes([h, l])),
                    _ => None,
                }
            } else {
                t.parse::<u16>().ok()
            };
            parsed.ok_or_else(|| err(format!("{s:?} is not a TSAP (a number, 0x1000 or 10.00)")))
        }
        Some(other) => Err(err(format!("{other} is not a TSAP"))),
    }
}

/// The address of a point in any of the three forms; errors are `(key, reason)`.
pub(crate) fn address(p: &PointConfig) -> Result<Address, (String, String)> {
    let kind = match p.kind.as_deref().map(str::trim) {
        Some(k) => k.to_ascii_lowercase(),
        None if p.tag.is_some() => "tag".into(),
        None if p.vm_address.is_some() => "vm".into(),
        None if p.db_number.is_some() => "data".into(),
        None => return Err(("type".into(), "missing; expected tag, data or vm".into())),
    };
    let addr = match kind.as_str() {
        "tag" => {
            let t = p
                .tag
                .as_deref()
                .ok_or_else(|| ("tag".to_string(), "missing".to_string()))?;
            Address::from_tag(t).map_err(|e| ("tag".into(), format!("{t:?}: {e}")))
        }
        "vm" => {
            let v = p
                .vm_address
                .as_deref()
                .ok_or_else(|| ("vmAddress".to_string(), "missing".to_string()))?;
            Address::from_vm(v).map_err(|e| ("vmAddress".into(), e))
        }
        "data" => {
            let db = p
                .db_number
                .ok_or_else(|| ("dbNumber".to_string(), "missing".to_string()))?;
            let start = p
                .start
                .ok_or_else(|| ("start".to_string(), "missing".to_string()))?;
            let start = start.saturating_add(p.offset.unwrap_or(0));
            let size = match (p.max_length, p.size) {
                (Some(m), _) => Some(m.saturating_add(2)),
                (None, s) => s,
            };
            Address::from_data(db, start, size, p.data_type.as_deref(), p.bit)
                .map_err(|e| ("dataType".into(), e))
        }
        other => Err((
            "type".into(),
            format!("unknown type {other:?}; expected tag, data or vm"),
        )),
    };
    addr.and_then(|a| {
        // Bit addresses on the wire have 24 bits.
        if u64::from(a.start) + u64::from(a.len) > 0x20_0000 {
            Err((
                "start".into(),
                format!("byte {} is beyond the S7 address space (2 MiB)", a.start),
            ))
        } else {
            Ok(a)
        }
    })
}

impl S7Connector {
    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: S7ConnectorConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let mut devices = Vec::new();
        for (i, d) in cfg.devices.iter().enumerate() {
            devices.push(Arc::new(Self::device(
                file,
                &format!("devices[{i}]"),
                d,
                ignored,
            )?));
        }
        if devices.is_empty() {
            return Err(ConfigError::new(file, "devices", "no device configured"));
        }
        Ok(S7Connector {
            name: name.to_string(),
            devices,
        })
    }

    fn device(
        file: &Path,
        p: &str,
        d: &DeviceConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Device, ConfigError> {
        for (k, v) in [
            ("uplinkConverter", &d.uplink_converter),
            ("downlinkConverter", &d.downlink_converter),
        ] {
            if v.is_some() {
                ignored.push(format!(
                    "{p}.{k} (custom Python converters are not run; the built-in conversion is used)"
                ));
            }
        }
        if d.address.trim().is_empty() {
            return Err(ConfigError::new(file, format!("{p}.address"), "empty"));
        }
        if d.device_name.trim().is_empty() {
            return Err(ConfigError::new(file, format!("{p}.deviceName"), "empty"));
        }
        let (local_tsap, remote_tsap) = match d.kind.trim().to_ascii_uppercase().as_str() {
            "PLC" => {
                let rack = d.rack.ok_or_else(|| {
                    ConfigError::new(
                        file,
                        format!("{p}.rack"),
                        "missing; a PLC needs rack and slot",
                    )
                })?;
                let slot = d.slot.ok_or_else(|| {
                    ConfigError::new(
                        file,
                        format!("{p}.slot"),
                        "missing; a PLC needs rack and slot",
                    )
                })?;
                if rack > 7 || slot > 31 {
                    return Err(ConfigError::new(
                        file,
                        format!("{p}.rack"),
                        format!("rack {rack}, slot {slot}: rack is 0..7 and slot 0..31"),
                    ));
                }
                (LOCAL_TSAP_PG, proto::remote_tsap(rack, slot))
            }
            "LOGO" => (
                tsap(file, format!("{p}.tsapSnap7"), d.tsap_snap7.as_ref())?,
                tsap(file, format!("{p}.tsapLogo"), d.tsap_logo.as_ref())?,
            ),
            other => {
                return Err(ConfigError::new(
                    file,
                    format!("{p}.type"),
                    format!("unknown device type {other:?}; expected PLC or LOGO"),
                ))
            }
        };
        let period_ms = d.poll_period.unwrap_or(10_000.0);
        let period = if period_ms.is_finite() && period_ms > 0.0 && period_ms < 86_400_000.0 {
            Duration::from_secs_f64(period_ms / 1000.0).max(MIN_POLL_PERIOD)
        } else {
            // Upstream falls back to the default, with a warning.
            tracing::warn!(file = %file.display(), key = %format!("{p}.pollPeriod"), "pollPeriod {period_ms} is not a positive number of milliseconds; using 10000");
            Duration::from_secs(10)
        };
        let timeout =
            secs(file, format!("{p}.timeout"), d.timeout, 5.0)?.max(Duration::from_millis(10));
        let retry_delay = secs(file, format!("{p}.retryDelay"), d.retry_delay, 1.0)?
            .max(Duration::from_millis(10));
        let max_delay = secs(file, format!("{p}.maxDelay"), d.max_delay, 30.0)?.max(retry_delay);
        let heartbeat = secs(
            file,
            format!("{p}.heartbeatInterval"),
            d.heartbeat_interval,
            0.0,
        )?;
        let mut overrides = ReportOverrides::default();
        let mut unused = Vec::new();
        if let Some(v) = &d.report_strategy {
            overrides.device =
                tbgw::report::parse_strategy(v, file, &format!("{p}.reportStrategy"), &mut unused)?;
        }
        let point_err = |path: String| {
            move |(k, why): (String, String)| ConfigError::new(file, format!("{path}.{k}"), why)
        };
        let mut points = Vec::new();
        for (section, list, attribute) in [
            ("attributes", &d.attributes, true),
            ("timeseries", &d.timeseries, false),
        ] {
            for (j, pc) in list.iter().enumerate() {
                let kp = format!("{p}.{section}[{j}]");
                let key = pc
                    .key
                    .clone()
                    .ok_or_else(|| ConfigError::new(file, format!("{kp}.key"), "missing"))?;
                let addr = address(pc).map_err(point_err(kp.clone()))?;
                if let Some(v) = &pc.report_strategy {
                    if let Some(s) = tbgw::report::parse_strategy(
                        v,
                        file,
                        &format!("{kp}.reportStrategy"),
                        &mut unused,
                    )? {
                        overrides.keys.entry(key.clone()).or_insert(s);
                    }
                }
                points.push(Point {
                    key,
                    attribute,
                    addr,
                });
            }
        }
        ignored.extend(unused);
        let mut updates = Vec::new();
        for (j, pc) in d.attribute_updates.iter().enumerate() {
            let kp = format!("{p}.attributeUpdates[{j}]");
            let key = pc
                .key
                .clone()
                .ok_or_else(|| ConfigError::new(file, format!("{kp}.key"), "missing"))?;
            updates.push((key, address(pc).map_err(point_err(kp))?));
        }
        let mut methods = Vec::new();
        for (j, pc) in d.server_side_rpc.iter().enumerate() {
            let kp = format!("{p}.serverSideRpc[{j}]");
            let name = pc
                .method
                .clone()
                .ok_or_else(|| ConfigError::new(file, format!("{kp}.method"), "missing"))?;
            let write = match pc.request_type.as_deref().map(str::trim) {
                Some("read") => false,
                Some("write") => true,
                other => {
                    return Err(ConfigError::new(
                        file,
                        format!("{kp}.requestType"),
                        format!("{other:?}: expected read or write"),
                    ))
                }
            };
            methods.push(Method {
                name,
                write,
                addr: address(pc).map_err(point_err(kp))?,
            });
        }
        Ok(Device {
            name: d.device_name.clone(),
            profile: d.device_profile_name.clone(),
            host: d
                .address
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: d.port,
            local_tsap,
            remote_tsap,
            period,
            timeout,
            auto_reconnect: d.auto_reconnect.unwrap_or(true),
            max_retries: d.max_retries.unwrap_or(3),
            retry_delay,
            max_delay,
            heartbeat: (!heartbeat.is_zero()).then_some(heartbeat),
            points,
            updates,
            methods,
            report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
        })
    }
}

/// Why a device job failed.
#[derive(Debug)]
enum JobError {
    Unreachable(String),
    Device(String),
    BadValue(String),
}

impl From<JobError> for RpcError {
    fn from(e: JobError) -> RpcError {
        match e {
            JobError::Unreachable(s) => RpcError::Unreachable(s),
            JobError::Device(s) => RpcError::Device(s),
            JobError::BadValue(s) => RpcError::BadRequest(s),
        }
    }
}

/// A read or a write for a device's task.
enum Job {
    Read(Address, oneshot::Sender<Result<Json, JobError>>),
    Write(Address, Json, oneshot::Sender<Result<(), JobError>>),
}

/// What a device task keeps.
struct DeviceTask {
    connector: Arc<str>,
    d: Arc<Device>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    client: Option<Client>,
    plan: Option<(u16, Arc<Plan>)>,
    announced: bool,
    once: LogOnce,
    backoff: Backoff,
    failures: u32,
    next_connect: Instant,
    last_io: Instant,
}

impl DeviceTask {
    fn spans(&self) -> Vec<Span> {
        self.d
            .points
            .iter()
            .map(|p| Span {
                area: p.addr.area,
                db: p.addr.db,
                start: p.addr.start,
                len: p.addr.len,
            })
            .collect()
    }

    fn warn_once(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self.once.first(&format!("{what}: {e}")) {
            tracing::warn!(connector = %self.connector, device = %self.d.name, host = %self.d.host, port = self.d.port, error = %e, "{what} (each distinct error is logged once; all are counted)");
        }
    }

    async fn connect(&mut self) -> bool {
        let d = self.d.clone();
        match Client::connect(&d.host, d.port, d.local_tsap, d.remote_tsap, d.timeout).await {
            Ok(c) => {
                tracing::info!(connector = %self.connector, device = %d.name, host = %d.host, port = d.port, pdu = c.pdu_size(), "Connected to the S7 device.");
                let pdu = c.pdu_size();
                if self.plan.as_ref().is_none_or(|(p, _)| *p != pdu) {
                    let plan = Plan::new(&self.spans(), pdu);
                    tracing::debug!(connector = %self.connector, device = %d.name, requests = plan.request_count(), tags = d.points.len(), "Read plan.");
                    self.plan = Some((pdu, Arc::new(plan)));
                }
                self.client = Some(c);
                self.failures = 0;
                self.backoff.succeeded();
                self.last_io = Instant::now();
                self.once.clear();
                if !self.announced {
                    self.announced = true;
                    let _ = self
                        .uplink
                        .connect_device(d.name.clone(), d.profile.clone())
                        .await;
                }
                true
            }
            Err(e) => {
                self.stats.add_errors(1);
                self.failures = self.failures.saturating_add(1);
                let delay = if self.failures > self.d.max_retries {
                    if self.failures == self.d.max_retries + 1 {
                        tracing::error!(connector = %self.connector, device = %d.name, retries = self.d.max_retries, "The S7 device did not answer {} attempts; trying again every maxDelay.", self.d.max_retries + 1);
                    }
                    d.max_delay
                } else {
                    self.backoff.next_delay()
                };
                self.next_connect = Instant::now() + delay;
                self.warn_once("Cannot connect to the S7 device", &e);
                false
            }
        }
    }

    async fn lost(&mut self, e: &ClientError) {
        self.client = None;
        self.stats.add_errors(1);
        self.warn_once("Lost the S7 device", e);
        self.next_connect = Instant::now() + self.backoff.next_delay();
        if self.announced {
            self.announced = false;
            let _ = self.uplink.disconnect_device(self.d.name.clone()).await;
        }
    }

    /// Handles a failed request: a malformed answer or a broken link drops the connection
    /// (the stream may be out of step); a refusal is the device's answer.
    async fn failed(&mut self, e: ClientError) -> String {
        let text = e.to_string();
        match &e {
            ClientError::Proto(proto::ProtoError::Refused { .. }) => {
                self.stats.add_errors(1);
                self.warn_once("The S7 device refused a request", &e);
            }
            _ => {
                if e.is_malformed() {
                    self.stats.add_convert_errors(1);
                }
                self.lost(&e).await;
            }
        }
        text
    }

    async fn poll(&mut self) {
        let (Some((_, plan)), Some(_)) = (self.plan.clone(), self.client.as_ref()) else {
            return;
        };
        let mut bufs = plan.buffers();
        for (i, items) in plan.requests().enumerate() {
            let Some(c) = self.client.as_mut() else {
                return;
            };
            match c.read(&items).await {
                Ok(answer) => {
                    self.stats.add_messages_received(1);
                    plan.store(&mut bufs, i, Ok(&answer));
                }
                Err(e) => {
                    let refused =
                        matches!(e, ClientError::Proto(proto::ProtoError::Refused { .. }));
                    let text = self.failed(e).await;
                    if !refused {
                        return;
                    }
                    plan.store(&mut bufs, i, Err(text));
                }
            }
        }
        self.last_io = Instant::now();
        let d = self.d.clone();
        let ts = now_millis();
        let mut data = DeviceData::new(d.name.clone(), d.profile.clone());
        data.report = d.report.clone();
        for (i, p) in d.points.iter().enumerate() {
            let v = plan.tag(&bufs, i).and_then(|b| p.addr.decode(b));
            match v {
                Ok(v) => {
                    let v = Value::from_json(v);
                    if p.attribute {
                        data.push_attribute(p.key.clone(), v);
                    } else {
                        data.push_telemetry(ts, p.key.clone(), v);
                    }
                }
                Err(e) => {
                    self.stats.add_convert_errors(1);
                    let what = format!("Cannot read key {}", p.key);
                    self.warn_once(&what, &e);
                }
            }
        }
        if !data.is_empty() {
            let _ = self.uplink.send(data).await;
        }
    }

    async fn heartbeat(&mut self) {
        // A one-byte read of the first polled tag, or of DB1.
        let r = self.d.points.first().map_or(
            Range {
                area: proto::Area::Db,
                db: 1,
                start: 0,
                len: 1,
            },
            |p| Range {
                area: p.addr.area,
                db: p.addr.db,
                start: p.addr.start,
                len: 1,
            },
        );
        let Some(c) = self.client.as_mut() else {
            return;
        };
        match c.read(&[r]).await {
            Ok(_) => self.last_io = Instant::now(),
            Err(e) => {
                self.failed(e).await;
            }
        }
    }

    async fn job(&mut self, job: Job) {
        let offline = format!("the S7 device {} is not connected", self.d.name);
        let unreachable = || JobError::Unreachable(offline.clone());
        match job {
            Job::Read(addr, tx) => {
                let Some(c) = self.client.as_mut() else {
                    let _ = tx.send(Err(unreachable()));
                    return;
                };
                let range = Range {
                    area: addr.area,
                    db: addr.db,
                    start: addr.start,
                    len: addr.len,
                };
                let r = match c.read_bytes(range).await {
                    Ok(b) => {
                        self.stats.add_messages_received(1);
                        addr.decode(&b).map_err(|e| {
                            self.stats.add_convert_errors(1);
                            JobError::Device(e)
                        })
                    }
                    Err(ClientError::Item(e)) => Err(JobError::Device(e.to_string())),
                    Err(e) => {
                        let unreachable_now =
                            !matches!(e, ClientError::Proto(proto::ProtoError::Refused { .. }));
                        let text = self.failed(e).await;
                        Err(if unreachable_now {
                            JobError::Unreachable(text)
                        } else {
                            JobError::Device(text)
                        })
                    }
                };
                self.last_io = Instant::now();
                let _ = tx.send(r);
            }
            Job::Write(addr, value, tx) => {
                let item = match addr.write_item(&value) {
                    Ok(i) => i,
                    Err(e) => {
                        let _ = tx.send(Err(JobError::BadValue(e)));
                        return;
                    }
                };
                let Some(c) = self.client.as_mut() else {
                    let _ = tx.send(Err(unreachable()));
                    return;
                };
                let max = c.max_write().max(2);
                let items: Vec<WriteItem> = match item {
                    WriteItem::Bytes {
                        area,
                        db,
                        start,
                        data,
                    } if data.len() > max => data
                        .chunks(max & !1)
                        .enumerate()
                        .map(|(k, ch)| WriteItem::Bytes {
                            area,
                            db,
                            start: start + (k * (max & !1)) as u32,
                            data: ch.to_vec(),
                        })
                        .collect(),
                    other => vec![other],
                };
                let mut result = Ok(());
                for it in items {
                    let Some(c) = self.client.as_mut() else {
                        result = Err(unreachable());
                        break;
                    };
                    match c.write(std::slice::from_ref(&it)).await {
                        Ok(r) => {
                            self.stats.add_messages_received(1);
                            if let Some(Err(e)) = r.into_iter().next() {
                                result = Err(JobError::Device(e.to_string()));
                                break;
                            }
                        }
                        Err(e) => {
                            let text = self.failed(e).await;
                            result = Err(JobError::Unreachable(text));
                            break;
                        }
                    }
                }
                self.last_io = Instant::now();
                let _ = tx.send(result);
            }
        }
    }

    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.d.period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let far = Duration::from_secs(86_400 * 365);
        loop {
            let reconnect = self.client.is_none() && self.d.auto_reconnect;
            let hb_at = match (self.d.heartbeat, self.client.is_some()) {
                (Some(h), true) => self.last_io + h,
                _ => Instant::now() + far,
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                j = jobs.recv() => match j {
                    Some(j) => self.job(j).await,
                    None => return,
                },
                _ = tokio::time::sleep_until(self.next_connect), if reconnect => {
                    self.connect().await;
                }
                _ = ticker.tick() => {
                    if self.client.is_none() && !self.d.auto_reconnect {
                        // Without autoReconnect: one attempt per poll.
                        self.connect().await;
                    }
                    if self.client.is_some() && !self.d.points.is_empty() {
                        self.poll().await;
                    }
                }
                _ = tokio::time::sleep_until(hb_at) => self.heartbeat().await,
            }
        }
    }
}

/// A device's job queue.
struct Handle {
    d: Arc<Device>,
    tx: mpsc::Sender<Job>,
}

impl Handle {
    async fn read(&self, addr: Address) -> Result<Json, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Job::Read(addr, tx))
            .map_err(|_| RpcError::Unreachable(format!("device {} is busy", self.d.name)))?;
        rx.await
            .map_err(|_| RpcError::Unreachable("the connector is stopping".into()))?
            .map_err(RpcError::from)
    }

    async fn write(&self, addr: Address, v: Json) -> Result<(), RpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Job::Write(addr, v, tx))
            .map_err(|_| RpcError::Unreachable(format!("device {} is busy", self.d.name)))?;
        rx.await
            .map_err(|_| RpcError::Unreachable("the connector is stopping".into()))?
            .map_err(RpcError::from)
    }
}

/// Writes each updated attribute that has an `attributeUpdates` entry.
async fn handle_attribute_update(
    connector: &str,
    handles: &[Handle],
    u: AttributeUpdate,
    stats: &ConnectorCounters,
) {
    let Some(h) = handles.iter().find(|h| h.d.name == u.device) else {
        return;
    };
    for (key, value) in &u.values {
        for (_, addr) in h.d.updates.iter().filter(|(k, _)| k == key) {
            match h.write(addr.clone(), value.clone()).await {
                Ok(()) => {
                    tracing::debug!(connector, device = %h.d.name, attribute = %key, "Attribute written.")
                }
                Err(e) => {
                    stats.add_errors(1);
                    tracing::warn!(connector, device = %h.d.name, attribute = %key, error = ?e, "Attribute update failed.");
                }
            }
        }
    }
}

/// Runs one read or write and answers in upstream's shape: `{"result": value}` for a read,
/// `{"result": "Successfully wrote value …"}` for a write.
async fn answer(
    h: &Handle,
    method: &str,
    write: bool,
    addr: Address,
    value: Option<Json>,
    responder: RpcResponder,
) {
    if write {
        let Some(v) = value.filter(|v| !v.is_null()) else {
            return responder.err(RpcError::BadRequest(format!(
                "No 'params' found in RPC request for method {method}"
            )));
        };
        let shown = match &v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        match h.write(addr, v).await {
            Ok(()) => responder.verbatim(json!({
                "result": format!("Successfully wrote value {shown} to device {} for RPC method {method}", h.d.name)
            })),
            Err(e) => responder.err(e),
        }
    } else {
        match h.read(addr).await {
            Ok(v) => responder.verbatim(json!({ "result": v })),
            Err(e) => responder.err(e),
        }
    }
}

/// Answers an RPC: a connector RPC `s7_<read|write|…>` (params name the device and the
/// address), reserved `get`/`set`, or a `serverSideRpc` method.
async fn handle_rpc(handles: &[Handle], rpc: RpcRequest) {
    let RpcRequest {
        device,
        method,
        params,
        responder,
        ..
    } = rpc;
    let connector_rpc = device.is_none();
    let name = match device {
        Some(n) => n,
        None => match params.get("deviceName").and_then(Json::as_str) {
            Some(n) => n.to_string(),
            None => {
                return responder.err(RpcError::BadRequest(format!(
                    "connector RPC s7_{method}: params.deviceName is missing"
                )))
            }
        },
    };
    let Some(h) = handles.iter().find(|h| h.d.name == name) else {
        return responder.err(RpcError::NotFound(format!("no S7 device `{name}`")));
    };
    if connector_rpc {
        let pc: PointConfig = match serde_json::from_value(params.clone()) {
            Ok(p) => p,
            Err(e) => return responder.err(RpcError::BadRequest(format!("params: {e}"))),
        };
        let write = match pc.request_type.as_deref() {
            Some("write") => true,
            Some("read") => false,
            other => {
                return responder.err(RpcError::BadRequest(format!(
                    "Unsupported requestType {other:?} for RPC method s7_{method}"
                )))
            }
        };
        let addr = match address(&pc) {
            Ok(a) => a,
            Err((k, why)) => {
                return responder.err(RpcError::BadRequest(format!("params.{k}: {why}")))
            }
        };
        return answer(
            h,
            &method,
            write,
            addr,
            params.get("value").cloned(),
            responder,
        )
        .await;
    }
    if method == "get" || method == "set" {
        let r = match downlink::reserved(&method, &params) {
            Ok(r) => r,
            Err(e) => return responder.err(RpcError::BadRequest(e)),
        };
        let addr = match address(&r.point) {
            Ok(a) => a,
            Err((k, why)) => return responder.err(RpcError::BadRequest(format!("{k}: {why}"))),
        };
        return answer(h, &method, method == "set", addr, r.value, responder).await;
    }
    let Some(m) = h.d.methods.iter().find(|m| m.name == method) else {
        return responder.err(RpcError::NotFound(format!(
            "Neither of configured device rpc methods match with {method}"
        )));
    };
    answer(h, &method, m.write, m.addr.clone(), Some(params), responder).await;
}

#[async_trait]
impl Connector for S7Connector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let cancel = cx.cancellation().clone();
        let name: Arc<str> = Arc::from(self.name.as_str());
        let mut handles = Vec::new();
        for d in &self.devices {
            let (tx, rx) = mpsc::channel(JOB_QUEUE);
            let task = DeviceTask {
                connector: name.clone(),
                d: d.clone(),
                uplink: cx.uplink().clone(),
                stats: cx.stats().clone(),
                client: None,
                plan: None,
                announced: false,
                once: LogOnce::new(LOG_ONCE_CAP),
                backoff: Backoff::new(d.retry_delay, d.max_delay),
                failures: 0,
                next_connect: Instant::now(),
                last_io: Instant::now(),
            };
            let c = cancel.clone();
            cx.spawn(
                format!("device {} ({}:{})", d.name, d.host, d.port),
                async move {
                    task.run(rx, c).await;
                    Ok(())
                },
            );
            handles.push(Handle { d: d.clone(), tx });
        }
        let handles: Arc<[Handle]> = handles.into();
        let mut downlink_open = true;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                dl = cx.recv_downlink(), if downlink_open => {
                    let Some(dl) = dl else {
                        downlink_open = false;
                        continue;
                    };
                    cx.stats().add_downlink(1);
                    let handles = handles.clone();
                    let stats = cx.stats().clone();
                    let name = name.clone();
                    cx.spawn("downlink request", async move {
                        match dl {
                            Downlink::Rpc(rpc) => handle_rpc(&handles, rpc).await,
                            Downlink::AttributeUpdate(u) => handle_attribute_update(&name, &handles, u, &stats).await,
                            _ => {}
                        }
                        Ok(())
                    });
                }
            }
        }
        cx.finish_tasks(Duration::ZERO).await;
        Ok(())
    }
}
