//! Slave mode: the gateway serves register tables to a Modbus master over TCP, UDP or a
//! serial line. Writes from the master to registers that back `attributes` or `timeseries`
//! entries are reported to ThingsBoard; shared attribute updates and RPCs from ThingsBoard
//! change the served values.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value as Json;
use tbgw::backoff::Backoff;
use tbgw::config::ConfigError;
use tbgw::connector::TaskSpawner;
use tbgw::downlink::{Downlink, RpcError};
use tbgw::model::{now_millis, DeviceData};
use tbgw::uplink::UplinkSender;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Direction, Framing, Order, Request, Response, ValueType};
use super::config::{IdentityConfig, SlaveBlock, SlaveServerConfig};
use super::plan::{self, Datapoint, Section, Use};
use super::tls;
use super::transport::{open_serial, Endpoint};

/// Which register table an entry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Coils (read 1, write 5/15).
    Coils,
    /// Discrete inputs (read 2).
    DiscreteInputs,
    /// Holding registers (read 3, write 6/16).
    Holding,
    /// Input registers (read 4).
    Input,
}

/// What an entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reported to ThingsBoard when a master writes it.
    Report(Section),
    /// Set by a shared attribute update.
    AttributeUpdate,
    /// Set (or read) by an RPC.
    Rpc,
}

/// One configured value of the slave.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The table.
    pub table: Table,
    /// What it is for.
    pub role: Role,
    /// Key, address, type.
    pub point: Datapoint,
}

/// The validated `slave` section.
#[derive(Debug, Clone)]
pub struct SlaveServerPlan {
    /// Where to listen.
    pub endpoint: Endpoint,
    /// Framing.
    pub framing: Framing,
    /// TLS server settings (Modbus/TCP over TLS), from `slave.security`.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Read Device Identification objects (id, value), sorted by id.
    pub identity: Vec<(u8, Vec<u8>)>,
    /// Unit id answered (0: every unit id).
    pub unit: u8,
    /// Device name in ThingsBoard.
    pub device: String,
    /// Device profile.
    pub device_type: String,
    /// Period of the full report when `send_data` is on.
    pub poll: Duration,
    /// `sendDataToThingsBoard`.
    pub send_data: bool,
    /// The entries.
    pub entries: Vec<Entry>,
    /// Most masters connected at once over TCP/TLS (`slave.maxConnections`).
    pub max_connections: usize,
    initial: Vec<(usize, Json)>,
}

/// Default `slave.maxConnections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// A written range: table, first address, count.
type Written = (Table, u16, u16);

/// The served tables.
#[derive(Debug)]
pub struct Store {
    coils: Vec<bool>,
    discrete: Vec<bool>,
    holding: Vec<u16>,
    input: Vec<u16>,
}

impl Store {
    fn new() -> Self {
        Store {
            coils: vec![false; 65536],
            discrete: vec![false; 65536],
            holding: vec![0; 65536],
            input: vec![0; 65536],
        }
    }

    /// Applies one request; returns the answer and, for writes, the written table and range.
    fn apply(&mut self, req: &Request) -> (Result<Response, u8>, Option<Written>) {
        let range = |a: u16, n: u16| {
            let (a, n) = (a as usize, n as usize);
            if a + n > 65536 {
                None
            } else {
                Some(a..a + n)
            }
        };
        match req {
            Request::Read { fc, address, count } => {
                let Some(r) = range(*address, *count) else {
                    return (Err(codec::ILLEGAL_DATA_ADDRESS), None);
                };
                let resp = match fc {
                    1 => Response::Bits(self.coils[r].to_vec()),
                    2 => Response::Bits(self.discrete[r].to_vec()),
                    3 => Response::Registers(self.holding[r].to_vec()),
                    _ => Response::Registers(self.input[r].to_vec()),
                };
                (Ok(resp), None)
            }
            Request::WriteSingleCoil { address, value } => {
                self.coils[*address as usize] = *value;
                (Ok(Response::Written), Some((Table::Coils, *address, 1)))
            }
            Request::WriteSingleRegister { address, value } => {
                self.holding[*address as usize] = *value;
                (Ok(Response::Written), Some((Table::Holding, *address, 1)))
            }
            Request::WriteMultipleCoils { address, values } => {
                let Some(r) = range(*address, values.len() as u16) else {
                    return (Err(codec::ILLEGAL_DATA_ADDRESS), None);
                };
                self.coils[r].copy_from_slice(values);
                (
                    Ok(Response::Written),
                    Some((Table::Coils, *address, values.len() as u16)),
                )
            }
            Request::WriteMultipleRegisters { address, values } => {
                let Some(r) = range(*address, values.len() as u16) else {
                    return (Err(codec::ILLEGAL_DATA_ADDRESS), None);
                };
                self.holding[r].copy_from_slice(values);
                (
                    Ok(Response::Written),
                    Some((Table::Holding, *address, values.len() as u16)),
                )
            }
        }
    }

    fn read(&self, e: &Entry) -> Result<tbgw::model::Value, codec::CodecError> {
        let p = &e.point;
        let a = p.address as usize;
        let n = p.span() as usize;
        let end = (a + n).min(65536);
        match e.table {
            Table::Coils | Table::DiscreteInputs => {
                let t = if e.table == Table::Coils {
                    &self.coils
                } else {
                    &self.discrete
                };
                if p.spec.ty == ValueType::Bits {
                    codec::decode_bits(&t[a..end], &p.spec)
                } else {
                    let regs: Vec<u16> = t[a..end]
                        .chunks(16)
                        .map(|c| {
                            c.iter()
                                .enumerate()
                                .fold(0u16, |acc, (i, &b)| acc | (u16::from(b) << i))
                        })
                        .collect();
                    codec::decode_registers(&regs, &p.spec)
                }
            }
            Table::Holding | Table::Input => {
                let t = if e.table == Table::Holding {
                    &self.holding
                } else {
                    &self.input
                };
                codec::decode_registers(&t[a..end], &p.spec)
            }
        }
    }

    fn write(&mut self, e: &Entry, value: &Json) -> Result<(), codec::CodecError> {
        let p = &e.point;
        let a = p.address as usize;
        match e.table {
            Table::Coils | Table::DiscreteInputs => {
                let bits = if p.spec.ty == ValueType::Bits {
                    codec::encode_bits(value, &p.spec)?
                } else {
                    codec::encode_registers(value, &p.spec)?
                        .iter()
                        .flat_map(|r| (0..16).map(move |i| r & (1 << i) != 0))
                        .collect()
                };
                let t = if e.table == Table::Coils {
                    &mut self.coils
                } else {
                    &mut self.discrete
                };
                for (i, b) in bits.into_iter().enumerate() {
                    if let Some(slot) = t.get_mut(a + i) {
                        *slot = b;
                    }
                }
            }
            Table::Holding | Table::Input => {
                let regs = codec::encode_registers(value, &p.spec)?;
                let t = if e.table == Table::Holding {
                    &mut self.holding
                } else {
                    &mut self.input
                };
                for (i, r) in regs.into_iter().enumerate() {
                    if let Some(slot) = t.get_mut(a + i) {
                        *slot = r;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The identification objects of `slave.identity`: the three basic ones always (the revision
/// defaults to tbgw's version), the regular ones when set.
fn identity_objects(
    file: &Path,
    identity: Option<&IdentityConfig>,
) -> Result<Vec<(u8, Vec<u8>)>, ConfigError> {
    let default = IdentityConfig::default();
    let i = identity.unwrap_or(&default);
    let version = Json::String(env!("CARGO_PKG_VERSION").into());
    let fields: [(u8, &str, Option<&Json>); 7] = [
        (0, "vendorName", i.vendor_name.as_ref()),
        (1, "productCode", i.product_code.as_ref()),
        (
            2,
            "majorMinorRevision",
            i.major_minor_revision.as_ref().or(Some(&version)),
        ),
        (3, "vendorUrl", i.vendor_url.as_ref()),
        (4, "productName", i.product_name.as_ref()),
        (5, "modelName", i.model_name.as_ref()),
        (6, "userApplicationName", i.user_application_name.as_ref()),
    ];
    let mut out = Vec::new();
    for (id, key, v) in fields {
        let text = match v {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(v @ (Json::Number(_) | Json::Bool(_))) => Some(v.to_string()),
            Some(_) => {
                return Err(ConfigError::new(
                    file,
                    format!("slave.identity.{key}"),
                    "expected text",
                ))
            }
        };
        if text
            .as_ref()
            .is_some_and(|t| t.len() > codec::MAX_DEVICE_ID_OBJECT)
        {
            return Err(ConfigError::new(
                file,
                format!("slave.identity.{key}"),
                format!("longer than {} bytes", codec::MAX_DEVICE_ID_OBJECT),
            ));
        }
        match text {
            Some(t) => out.push((id, t.into_bytes())),
            // The basic objects are mandatory.
            None if id <= 2 => out.push((id, Vec::new())),
            None => {}
        }
    }
    Ok(out)
}

/// Validates the `slave` section.
pub fn build_plan(file: &Path, s: &SlaveServerConfig) -> Result<SlaveServerPlan, ConfigError> {
    let c = &s.connection;
    let max_connections = s.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(ConfigError::new(
            file,
            "slave.maxConnections",
            "must be at least 1",
        ));
    }
    let (endpoint, framing) = plan::endpoint(file, "slave", c)?;
    let tls =
        match plan::tls_section(file, "slave", "security", c, &endpoint, s.security.as_ref())? {
            Some(t) => Some(tls::server(plan::config_dir(file), &t).map_err(|e| {
                ConfigError::new(file, format!("slave.security.{}", e.key), e.reason)
            })?),
            None => None,
        };
    let identity = identity_objects(file, s.identity.as_ref())?;
    let unit = c.unit_id.unwrap_or(0);
    let orders = (
        plan::order(file, "slave.byteOrder", c.byte_order.as_deref(), Order::Big)?,
        plan::order(
            file,
            "slave.wordOrder",
            c.word_order.as_deref(),
            Order::Little,
        )?,
    );
    let mut entries = Vec::new();
    let mut initial = Vec::new();
    let blocks: [(&str, Table, &Option<SlaveBlock>); 4] = [
        (
            "holding_registers",
            Table::Holding,
            &s.values.holding_registers,
        ),
        (
            "coils_initializer",
            Table::Coils,
            &s.values.coils_initializer,
        ),
        ("input_registers", Table::Input, &s.values.input_registers),
        (
            "discrete_inputs",
            Table::DiscreteInputs,
            &s.values.discrete_inputs,
        ),
    ];
    for (name, table, block) in blocks {
        let Some(block) = block else { continue };
        for (section, list, role) in [
            (
                "attributes",
                &block.attributes,
                Role::Report(Section::Attribute),
            ),
            (
                "timeseries",
                &block.timeseries,
                Role::Report(Section::Telemetry),
            ),
            (
                "attributeUpdates",
                &block.attribute_updates,
                Role::AttributeUpdate,
            ),
            ("rpc", &block.rpc, Role::Rpc),
        ] {
            for (j, d) in list.iter().enumerate() {
                let key = format!("slave.values.{name}.{section}[{j}]");
                for mut p in plan::datapoints(file, &key, d, orders, unit, Use::Slave)? {
                    // In the served tables the function code follows from the table.
                    p.fc = match table {
                        Table::Coils => 1,
                        Table::DiscreteInputs => 2,
                        Table::Holding => 3,
                        Table::Input => 4,
                    };
                    let entry = Entry {
                        table,
                        role,
                        point: p,
                    };
                    if let Some(v) = &d.value {
                        let mut probe = Store::new();
                        probe.write(&entry, v).map_err(|e| {
                            ConfigError::new(file, format!("{key}.value"), e.to_string())
                        })?;
                        initial.push((entries.len(), v.clone()));
                    }
                    entries.push(entry);
                }
            }
        }
    }
    Ok(SlaveServerPlan {
        endpoint,
        framing,
        tls,
        identity,
        unit,
        device: c
            .device_name
            .clone()
            .unwrap_or_else(|| "Modbus Slave".into()),
        device_type: c.device_type.clone().unwrap_or_else(|| "default".into()),
        poll: Duration::from_millis(c.poll_period.unwrap_or(5000).max(1)),
        send_data: s.send_data_to_thingsboard.unwrap_or(false),
        entries,
        max_connections,
        initial,
    })
}

/// The running server.
#[derive(Debug)]
pub struct SlaveServer {
    plan: Arc<SlaveServerPlan>,
    store: Arc<Mutex<Store>>,
    uplink: UplinkSender,
    connector: Arc<str>,
    stats: Option<tbgw::stats::ConnectorCounters>,
}

/// Time a master has to finish the TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Rate limit of the "too many masters" warning.
static REFUSED_LOG: tbgw::stats::LogThrottle =
    tbgw::stats::LogThrottle::new(tbgw::stats::DROP_LOG_INTERVAL);

/// Written ranges waiting to be reported; when full, further reports are dropped (logged).
const WRITE_REPORTS: usize = 1024;

type Writes = mpsc::Sender<(Table, u16, u16)>;

impl SlaveServer {
    /// A server with its tables set to the initial values.
    pub fn new(plan: SlaveServerPlan, uplink: UplinkSender, connector: Arc<str>) -> Self {
        let mut store = Store::new();
        for (i, v) in &plan.initial {
            // Checked while building the plan.
            let _ = store.write(&plan.entries[*i], v);
        }
        SlaveServer {
            plan: Arc::new(plan),
            store: Arc::new(Mutex::new(store)),
            uplink,
            connector,
            stats: None,
        }
    }

    /// Counts refused connections in the connector's `errors`.
    pub fn with_stats(mut self, stats: tbgw::stats::ConnectorCounters) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The device name of the slave.
    pub fn device(&self) -> &str {
        &self.plan.device
    }

    /// Serves until cancelled; `downlink` carries requests for the slave's device.
    pub async fn run(
        self,
        cancel: CancellationToken,
        mut downlink: mpsc::Receiver<Downlink>,
        tasks: TaskSpawner,
    ) {
        let _ = self
            .uplink
            .connect_device(self.plan.device.clone(), self.plan.device_type.clone())
            .await;
        let (wtx, mut wrx) = mpsc::channel::<(Table, u16, u16)>(WRITE_REPORTS);
        let serve = self.serve(wtx, cancel.clone(), &tasks);
        tokio::pin!(serve);
        let mut tick = tokio::time::interval(self.plan.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Cancellation first; the server future runs until cancelled; reports of written
            // values and downlink requests are handled between requests of the master.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = &mut serve => return,
                Some((table, a, n)) = wrx.recv() => self.report_written(table, a, n).await,
                Some(dl) = downlink.recv() => self.downlink(dl),
                _ = tick.tick(), if self.plan.send_data => self.report_all().await,
            }
        }
    }

    async fn report_written(&self, table: Table, a: u16, n: u16) {
        let (start, end) = (u32::from(a), u32::from(a) + u32::from(n));
        let hit: Vec<&Entry> = self
            .plan
            .entries
            .iter()
            .filter(|e| {
                e.table == table
                    && matches!(e.role, Role::Report(_))
                    && u32::from(e.point.address) < end
                    && u32::from(e.point.address) + u32::from(e.point.span()) > start
            })
            .collect();
        self.report(&hit).await;
    }

    async fn report_all(&self) {
        let all: Vec<&Entry> = self
            .plan
            .entries
            .iter()
            .filter(|e| matches!(e.role, Role::Report(_)))
            .collect();
        self.report(&all).await;
    }

    async fn report(&self, entries: &[&Entry]) {
        if entries.is_empty() {
            return;
        }
        let ts = now_millis();
        let mut data = DeviceData::new(self.plan.device.clone(), self.plan.device_type.clone());
        {
            let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            for e in entries {
                match (store.read(e), e.role) {
                    (Ok(v), Role::Report(Section::Telemetry)) => {
                        data.push_telemetry(ts, e.point.key.clone(), v)
                    }
                    (Ok(v), _) => data.push_attribute(e.point.key.clone(), v),
                    (Err(err), _) => {
                        tracing::warn!(connector = %self.connector, key = %e.point.key, error = %err, "Cannot decode a served value.")
                    }
                }
            }
        }
        let _ = self.uplink.send(data).await;
    }

    fn downlink(&self, dl: Downlink) {
        match dl {
            Downlink::AttributeUpdate(u) => {
                let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
                for (k, v) in &u.values {
                    for e in self
                        .plan
                        .entries
                        .iter()
                        .filter(|e| e.role == Role::AttributeUpdate && &e.point.key == k)
                    {
                        if let Err(err) = store.write(e, v) {
                            tracing::warn!(connector = %self.connector, attribute = %k, error = %err, "Cannot store an attribute update in the served registers.");
                        }
                    }
                }
            }
            Downlink::Rpc(rpc) => {
                let Some(e) = self
                    .plan
                    .entries
                    .iter()
                    .find(|e| e.role == Role::Rpc && e.point.key == rpc.method)
                else {
                    rpc.responder.err(RpcError::NotFound(format!(
                        "method `{}` is not in the slave's rpc lists",
                        rpc.method
                    )));
                    return;
                };
                let value = match &rpc.params {
                    Json::Object(m) => m.get("value").cloned(),
                    Json::Null => None,
                    other => Some(other.clone()),
                };
                let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
                let result = match value {
                    Some(v) => store.write(e, &v).map(|_| Json::Null),
                    None => store.read(e).map(|v| v.to_json()),
                };
                rpc.responder
                    .send(result.map_err(|err| RpcError::BadRequest(err.to_string())));
            }
            _ => {}
        }
    }

    /// Answers one framed request; `None` when it is not for this unit.
    fn answer(&self, frame: &codec::Frame, writes: &Writes) -> Option<Vec<u8>> {
        if self.plan.unit != 0 && frame.unit != self.plan.unit {
            return None;
        }
        if frame.pdu.first() == Some(&codec::FC_ENCAPSULATED) {
            let pdu = codec::read_device_identification(&frame.pdu, &self.plan.identity)
                .unwrap_or_else(|code| vec![codec::FC_ENCAPSULATED | 0x80, code]);
            let mut out = Vec::with_capacity(pdu.len() + 10);
            codec::encode_frame(
                self.plan.framing,
                frame.transaction,
                frame.unit,
                &pdu,
                &mut out,
            );
            return Some(out);
        }
        let (req, resp) = match Request::decode(&frame.pdu) {
            Ok(req) => {
                let (resp, written) = self
                    .store
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(&req);
                if let Some(w) = written {
                    if writes.try_send(w).is_err() {
                        tracing::warn!(connector = %self.connector, "Too many unreported writes from the Modbus master; one report dropped.");
                    }
                }
                (req, resp)
            }
            Err(code) => {
                let fc = frame.pdu.first().copied().unwrap_or(0) & 0x7F;
                let mut out = Vec::new();
                codec::encode_frame(
                    self.plan.framing,
                    frame.transaction,
                    frame.unit,
                    &[fc | 0x80, code],
                    &mut out,
                );
                return Some(out);
            }
        };
        let mut pdu = Vec::with_capacity(260);
        codec::encode_response(&req, &resp, &mut pdu);
        let mut out = Vec::with_capacity(pdu.len() + 10);
        codec::encode_frame(
            self.plan.framing,
            frame.transaction,
            frame.unit,
            &pdu,
            &mut out,
        );
        Some(out)
    }

    async fn serve(&self, writes: Writes, cancel: CancellationToken, tasks: &TaskSpawner) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            backoff.succeeded();
            let r = match &self.plan.endpoint {
                Endpoint::Tcp { host, port } => {
                    self.serve_tcp(host, *port, writes.clone(), cancel.clone(), tasks)
                        .await
                }
                Endpoint::Udp { host, port } => self.serve_udp(host, *port, writes.clone()).await,
                // Slave mode keeps `Tcp` and carries its TLS settings in the plan.
                Endpoint::Tls { host, port, .. } => {
                    self.serve_tcp(host, *port, writes.clone(), cancel.clone(), tasks)
                        .await
                }
                Endpoint::Serial(s) => match open_serial(s) {
                    Ok(port) => self.serve_stream(port, writes.clone()).await,
                    Err(e) => Err(e),
                },
            };
            if cancel.is_cancelled() {
                return;
            }
            let wait = backoff.next_delay();
            if let Err(e) = r {
                tracing::warn!(connector = %self.connector, endpoint = %self.plan.endpoint, error = %e, retry_in_ms = wait.as_millis() as u64, "Modbus slave server failed; restarting it.");
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn serve_tcp(
        &self,
        host: &str,
        port: u16,
        writes: Writes,
        cancel: CancellationToken,
        tasks: &TaskSpawner,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind((host, port)).await?;
        tracing::info!(connector = %self.connector, endpoint = %self.plan.endpoint, "Modbus slave server listening.");
        let slots = Arc::new(tokio::sync::Semaphore::new(self.plan.max_connections));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                acc = listener.accept() => {
                    let (stream, peer) = acc?;
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        // Over the limit: closed at once, nothing read or kept.
                        drop(stream);
                        if let Some(s) = &self.stats {
                            s.add_errors(1);
                        }
                        if REFUSED_LOG.allow() {
                            tracing::warn!(connector = %self.connector, %peer, max_connections = self.plan.max_connections, "Modbus master refused: slave.maxConnections masters are connected (logged at most every 10 s; counted in errors).");
                        }
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let me = SlaveServer { plan: self.plan.clone(), store: self.store.clone(), uplink: self.uplink.clone(), connector: self.connector.clone(), stats: self.stats.clone() };
                    let w = writes.clone();
                    let tls = self.plan.tls.clone();
                    tasks.spawn("slave client", async move {
                        let _slot = slot;
                        match tls {
                            None => {
                                let _ = me.serve_stream(stream, w).await;
                            }
                            Some(cfg) => {
                                // The handshake runs in the client's task, so a slow or
                                // failing client does not hold up the others.
                                let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                                match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => {
                                        let _ = me.serve_stream(s, w).await;
                                    }
                                    Ok(Err(e)) => tracing::warn!(connector = %me.connector, error = %e, "TLS handshake with a Modbus master failed."),
                                    Err(_) => tracing::warn!(connector = %me.connector, "TLS handshake with a Modbus master timed out."),
                                }
                            }
                        }
                        Ok(())
                    });
                }
            }
        }
    }

    async fn serve_udp(&self, host: &str, port: u16, writes: Writes) -> std::io::Result<()> {
        let sock = tokio::net::UdpSocket::bind((host, port)).await?;
        let mut buf = vec![0u8; 1024];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await?;
            if let Ok(Some(frame)) =
                codec::decode_frame(self.plan.framing, Direction::Request, &buf[..n])
            {
                if let Some(out) = self.answer(&frame, &writes) {
                    let _ = sock.send_to(&out, from).await;
                }
            }
        }
    }

    async fn serve_stream<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        &self,
        mut s: S,
        writes: Writes,
    ) -> std::io::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(512);
        let mut tmp = [0u8; 512];
        loop {
            let n = s.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
            loop {
                match codec::decode_frame(self.plan.framing, Direction::Request, &buf) {
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        buf.drain(..frame.len);
                        if let Some(out) = self.answer(&frame, &writes) {
                            s.write_all(&out).await?;
                            // TLS streams hold the record until flushed.
                            s.flush().await?;
                        }
                    }
                    Err(_) => {
                        buf.clear();
                        break;
                    }
                }
            }
        }
    }
}
