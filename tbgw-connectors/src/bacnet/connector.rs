//! The BACnet connector's build step and run loop: the gateway's device on one UDP socket,
//! periodic directed Who-Is, one task per discovered device (polling on its own
//! `pollPeriod`, COV subscriptions), and downlink requests each in a task of their own.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value as Json};
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError, TaskSpawner};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest};
use tbgw::log_once::LogOnce;
use tbgw::model::{now_millis, DeviceData};
use tbgw::report::ReportOverrides;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::address::{self, AddrSpec};
use super::client::{self, ClientError, Endpoint, Event, LocalDevice, Peer};
use super::config::{BacnetConfig, DeviceConfig};
use super::downlink;
use super::proto::frame::{self, bvlc};
use super::proto::services::{CovNotification, PropRef, PropResult};
use super::proto::{ids, AppValue, ObjectId};
use super::uplink::{self, Objects, Point, ResolvedPoint};

/// Downlink requests handled at the same time.
const MAX_CONCURRENT_DOWNLINK: usize = 64;
/// Shortest `pollPeriod` accepted.
const MIN_POLL_PERIOD: Duration = Duration::from_millis(50);
/// Distinct errors logged per device before they are only counted.
const LOG_ONCE_CAP: usize = 64;
/// Events (I-Am, COV) queued between the socket and the connector.
const EVENT_QUEUE: usize = 1024;
/// Properties per ReadPropertyMultiple: the device's max APDU divided by this (upstream's
/// rule: 1476 → 56).
const BYTES_PER_PROPERTY: usize = 26;
/// Largest object list read.
const MAX_OBJECTS: u64 = 100_000;

/// A value to write: object (None = the device object), property, priority.
#[derive(Debug, Clone)]
struct WriteTarget {
    key: String,
    kind: u16,
    object: Option<u32>,
    property: u32,
    priority: Option<u8>,
}

#[derive(Debug, Clone)]
struct RpcSpec {
    method: String,
    read: Option<bool>,
    target: WriteTarget,
    timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct CovSpec {
    lifetime: u32,
    confirmed: bool,
}

/// One `devices[]` entry, validated.
#[derive(Debug)]
struct DeviceSpec {
    index: usize,
    address: Option<AddrSpec>,
    address_text: String,
    alt: Vec<AddrSpec>,
    device_id: Option<Json>,
    name_expr: String,
    name_constant: bool,
    profile_expr: String,
    profile_constant: bool,
    poll: Duration,
    points: Vec<Point>,
    updates: Vec<WriteTarget>,
    rpcs: Vec<RpcSpec>,
    report: Option<Arc<ReportOverrides>>,
    cov: Option<CovSpec>,
    rescan: Duration,
}

impl DeviceSpec {
    fn matches(&self, peer: &Peer, instance: u32) -> bool {
        let id_ok = self
            .device_id
            .as_ref()
            .is_none_or(|p| address::device_id_matches(p, instance));
        let addr_ok = match &self.address {
            None => self.device_id.is_some(),
            Some(a) => a.matches(peer) || self.alt.iter().any(|a| a.matches(peer)),
        };
        id_ok && addr_ok
    }
}

/// The BACnet connector. Build it with [`BacnetFactory`](super::BacnetFactory).
#[derive(Debug)]
pub struct BacnetConnector {
    name: String,
    bind: SocketAddr,
    broadcast: Ipv4Addr,
    local: LocalDevice,
    timeout: Duration,
    retries: u32,
    discover_period: Duration,
    foreign: Option<(SocketAddrV4, u16)>,
    devices: Vec<Arc<DeviceSpec>>,
}

fn port_of(file: &Path, path: &str, v: Option<&Json>, default: u16) -> Result<u16, ConfigError> {
    match v {
        None | Some(Json::Null) => Ok(default),
        Some(v) => address::json_text(v)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| ConfigError::new(file, path, format!("{v} is not a UDP port"))),
    }
}

fn prefix_of(v: Option<&Json>) -> u8 {
    let Some(t) = v.and_then(address::json_text) else {
        return 24;
    };
    if let Ok(n) = t.parse::<u8>() {
        return if n <= 32 { n } else { 24 };
    }
    match t.parse::<Ipv4Addr>() {
        Ok(m) => u32::from(m).leading_ones() as u8,
        Err(_) => 24,
    }
}

fn target(
    file: &Path,
    p: &str,
    object_type: Option<&Json>,
    object_id: Option<&Json>,
    property_id: Option<&Json>,
    priority: Option<&Json>,
    key: String,
) -> Result<WriteTarget, ConfigError> {
    let t = object_type
        .and_then(address::json_text)
        .ok_or_else(|| ConfigError::new(file, format!("{p}.objectType"), "missing"))?;
    let kind = ids::object_type(&t).ok_or_else(|| {
        ConfigError::new(
            file,
            format!("{p}.objectType"),
            format!("unknown object type {t:?}"),
        )
    })?;
    let object = match object_id {
        None | Some(Json::Null) if kind == ids::DEVICE => None,
        Some(v) => Some(
            address::json_text(v)
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| {
                    ConfigError::new(
                        file,
                        format!("{p}.objectId"),
                        format!("{v} is not one object id"),
                    )
                })?,
        ),
        None => return Err(ConfigError::new(file, format!("{p}.objectId"), "missing")),
    };
    let prop = property_id
        .and_then(address::json_text)
        .unwrap_or_else(|| "presentValue".into());
    let property = ids::property(&prop).ok_or_else(|| {
        ConfigError::new(
            file,
            format!("{p}.propertyId"),
            format!("unknown property {prop:?}"),
        )
    })?;
    let priority = downlink::priority(priority)
        .map_err(|e| ConfigError::new(file, format!("{p}.priority"), e))?;
    Ok(WriteTarget {
        key,
        kind,
        object,
        property,
        priority,
    })
}

fn points_of(
    file: &Path,
    p: &str,
    section: &str,
    v: Option<&Json>,
    attribute: bool,
    overrides: &mut ReportOverrides,
    ignored: &mut Vec<String>,
) -> Result<Vec<Point>, ConfigError> {
    let mut out = Vec::new();
    match v {
        None | Some(Json::Null) => {}
        Some(Json::String(s)) if s.trim() == "*" => out.push(uplink::discover_all(attribute)),
        Some(Json::Array(items)) => {
            for (j, item) in items.iter().enumerate() {
                let kp = format!("{p}.{section}[{j}]");
                let key = item
                    .get("key")
                    .and_then(|k| k.as_str())
                    .ok_or_else(|| ConfigError::new(file, format!("{kp}.key"), "missing"))?;
                let pts = uplink::expand(
                    key,
                    item.get("objectType"),
                    item.get("objectId"),
                    item.get("propertyId"),
                    attribute,
                )
                .map_err(|(k, why)| ConfigError::new(file, format!("{kp}.{k}"), why))?;
                if let Some(rs) = item.get("reportStrategy") {
                    if let Some(s) = tbgw::report::parse_strategy(
                        rs,
                        file,
                        &format!("{kp}.reportStrategy"),
                        ignored,
                    )? {
                        overrides.keys.entry(key.to_string()).or_insert(s);
                    }
                }
                if let Some(o) = item.as_object() {
                    for k in o.keys() {
                        if ![
                            "key",
                            "objectType",
                            "objectId",
                            "propertyId",
                            "reportStrategy",
                        ]
                        .contains(&k.as_str())
                        {
                            ignored.push(format!("{kp}.{k}"));
                        }
                    }
                }
                out.extend(pts);
            }
        }
        Some(other) => {
            return Err(ConfigError::new(
                file,
                format!("{p}.{section}"),
                format!("{other} is neither a list of points nor \"*\""),
            ))
        }
    }
    Ok(out)
}

fn device_spec(
    file: &Path,
    i: usize,
    d: &DeviceConfig,
    rescan: Duration,
    ignored: &mut Vec<String>,
) -> Result<DeviceSpec, ConfigError> {
    let p = format!("devices[{i}]");
    if d.uplink_converter.is_some() {
        ignored.push(format!(
            "{p}.uplinkConverter (custom Python converters are not run; the built-in conversion is used)"
        ));
    }
    let address_text = address::merge(
        d.address.as_deref(),
        d.host.as_deref(),
        d.port.as_ref(),
        d.mask.as_ref(),
    )
    .unwrap_or_default();
    let address = if address_text.is_empty() {
        if d.device_id.is_none() {
            return Err(ConfigError::new(
                file,
                format!("{p}.address"),
                "missing; give address (or host and port) or deviceId",
            ));
        }
        None
    } else {
        Some(
            address::parse(&address_text)
                .map_err(|e| ConfigError::new(file, format!("{p}.address"), e))?,
        )
    };
    let mut alt = Vec::new();
    for (j, a) in d.alt_responses_addresses.iter().enumerate() {
        alt.push(
            address::parse(a).map_err(|e| {
                ConfigError::new(file, format!("{p}.altResponsesAddresses[{j}]"), e)
            })?,
        );
    }
    if let Some(id) = &d.device_id {
        let ok = match id {
            Json::Number(n) => n.as_u64().is_some(),
            Json::String(_) | Json::Array(_) => true,
            _ => false,
        };
        if !ok {
            return Err(ConfigError::new(
                file,
                format!("{p}.deviceId"),
                format!("{id} is not a device instance, list, range or \"*\""),
            ));
        }
    }
    let info = d.device_info.clone().unwrap_or_default();
    let mut overrides = ReportOverrides::default();
    if let Some(v) = &d.report_strategy {
        overrides.device =
            tbgw::report::parse_strategy(v, file, &format!("{p}.reportStrategy"), ignored)?;
    }
    let mut points = points_of(
        file,
        &p,
        "attributes",
        d.attributes.as_ref(),
        true,
        &mut overrides,
        ignored,
    )?;
    points.extend(points_of(
        file,
        &p,
        "timeseries",
        d.timeseries.as_ref(),
        false,
        &mut overrides,
        ignored,
    )?);
    let mut updates = Vec::new();
    for (j, u) in d.attribute_updates.iter().enumerate() {
        let up = format!("{p}.attributeUpdates[{j}]");
        if u.key.is_empty() {
            return Err(ConfigError::new(file, format!("{up}.key"), "missing"));
        }
        updates.push(target(
            file,
            &up,
            u.object_type.as_ref(),
            u.object_id.as_ref(),
            u.property_id.as_ref(),
            u.priority.as_ref(),
            u.key.clone(),
        )?);
    }
    let mut rpcs = Vec::new();
    for (j, r) in d.server_side_rpc.iter().enumerate() {
        let rp = format!("{p}.serverSideRpc[{j}]");
        if r.method.is_empty() {
            return Err(ConfigError::new(file, format!("{rp}.method"), "missing"));
        }
        let read = match r.request_type.as_deref() {
            None => None,
            Some("readProperty") => Some(true),
            Some("writeProperty") => Some(false),
            Some(other) => {
                return Err(ConfigError::new(
                    file,
                    format!("{rp}.requestType"),
                    format!("{other:?}; expected readProperty or writeProperty"),
                ))
            }
        };
        let timeout = match r.request_timeout {
            Some(ms) if ms.is_finite() && ms > 0.0 => {
                Some(Duration::from_millis(ms.min(3.6e6) as u64))
            }
            _ => None,
        };
        rpcs.push(RpcSpec {
            method: r.method.clone(),
            read,
            target: target(
                file,
                &rp,
                r.object_type.as_ref(),
                r.object_id.as_ref(),
                r.property_id.as_ref(),
                r.priority.as_ref(),
                r.method.clone(),
            )?,
            timeout,
        });
    }
    let poll_ms = d.poll_period.unwrap_or(10_000.0);
    if !poll_ms.is_finite() || poll_ms <= 0.0 {
        return Err(ConfigError::new(
            file,
            format!("{p}.pollPeriod"),
            format!("{poll_ms} is not a period in milliseconds"),
        ));
    }
    let cov = d.subscribe_cov.unwrap_or(false).then(|| CovSpec {
        lifetime: d.cov_lifetime.unwrap_or(300).clamp(10, 86_400),
        confirmed: d.cov_confirmed.unwrap_or(false),
    });
    Ok(DeviceSpec {
        index: i,
        address,
        address_text,
        alt,
        device_id: d.device_id.clone(),
        name_expr: info
            .device_name_expression
            .unwrap_or_else(|| "BACnet Device ${objectName}".into()),
        name_constant: info.device_name_expression_source.as_deref() == Some("constant"),
        profile_expr: info
            .device_profile_expression
            .unwrap_or_else(|| "default".into()),
        profile_constant: info.device_profile_expression_source.as_deref() == Some("constant"),
        poll: Duration::from_millis(poll_ms.min(8.64e7) as u64).max(MIN_POLL_PERIOD),
        points,
        updates,
        rpcs,
        report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
        cov,
        rescan: d
            .devices_rescan_objects_period_seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(rescan),
    })
}

impl BacnetConnector {
    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: BacnetConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let a = &cfg.application;
        let (host, port, prefix) = match a.address.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(addr) => {
                let s = addr.trim();
                let (hm, port) = match s.rsplit_once(':') {
                    Some((h, p)) => (h, Some(Json::String(p.into()))),
                    None => (s, None),
                };
                let (h, m) = match hm.split_once('/') {
                    Some((h, m)) => (h, Some(Json::String(m.into()))),
                    None => (hm, a.mask.clone()),
                };
                (h.to_string(), port.or(a.port.clone()), m)
            }
            None => (
                a.host.clone().unwrap_or_else(|| "0.0.0.0".into()),
                a.port.clone(),
                a.mask.clone(),
            ),
        };
        let ip: Ipv4Addr = host.trim().parse().map_err(|_| {
            ConfigError::new(
                file,
                "application.host",
                format!("{host:?} is not an IPv4 address"),
            )
        })?;
        let port = port_of(
            file,
            "application.port",
            port.as_ref(),
            address::DEFAULT_PORT,
        )?;
        let prefix = prefix_of(prefix.as_ref());
        let instance = a
            .object_identifier
            .ok_or_else(|| ConfigError::new(file, "application.objectIdentifier", "missing"))?;
        if instance >= 4_194_303 {
            return Err(ConfigError::new(
                file,
                "application.objectIdentifier",
                format!("{instance} is not a device instance (0..4194302)"),
            ));
        }
        let max_apdu = match a.max_apdu_length_accepted.unwrap_or(1476) {
            v @ (50 | 128 | 206 | 480 | 1024 | 1476) => v as u16,
            other => {
                ignored.push(format!(
                    "application.maxApduLengthAccepted ({other} is not 50, 128, 206, 480, 1024 or 1476; 1476 is used)"
                ));
                1476
            }
        };
        let segmentation = match a.segmentation_supported.as_deref() {
            None | Some("segmentedBoth") => 0,
            Some("segmentedTransmit") => 1,
            Some("segmentedReceive") => 2,
            Some("noSegmentation") => 3,
            Some(other) => {
                return Err(ConfigError::new(
                    file,
                    "application.segmentationSupported",
                    format!("{other:?}; expected segmentedBoth, segmentedTransmit, segmentedReceive or noSegmentation"),
                ))
            }
        };
        // `loadProprietaryDevices`: the names of upstream's bundled proprietary module are
        // always known (`ids::PROPRIETARY_PROPERTIES`); nothing to load.
        // EDE import replaces devices[], as upstream's does; the file path wins.
        let ede_devices = match (
            cfg.ede_file_path
                .as_deref()
                .filter(|p| !p.trim().is_empty()),
            &cfg.ede_config,
        ) {
            (Some(path), _) => {
                let at = tbgw::config::resolve_beside(file, path.trim());
                let text = std::fs::read_to_string(&at).map_err(|e| {
                    ConfigError::new(file, "edeFilePath", format!("{}: {e}", at.display()))
                })?;
                Some(super::ede::devices(&text, ';').map_err(|e| {
                    ConfigError::new(file, "edeFilePath", format!("{}: {e}", at.display()))
                })?)
            }
            (None, Some(Json::String(b64))) if !b64.trim().is_empty() => Some(
                super::ede::devices_from_base64(b64)
                    .map_err(|e| ConfigError::new(file, "edeConfig", e.to_string()))?,
            ),
            (None, Some(Json::String(_)) | Some(Json::Null) | None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    file,
                    "edeConfig",
                    "not a string (the EDE file in base64)",
                ))
            }
        };
        let foreign = match &cfg.foreign_device {
            Some(f) => match f.address.as_deref().map(str::trim) {
                None | Some("") | Some("0.0.0.0") => None,
                Some(s) => {
                    let spec = address::parse(s)
                        .map_err(|e| ConfigError::new(file, "foreignDevice.address", e))?;
                    let AddrSpec::Ip(bbmd) = spec else {
                        return Err(ConfigError::new(
                            file,
                            "foreignDevice.address",
                            "not an IPv4 address[:port]",
                        ));
                    };
                    let ttl = f
                        .ttl
                        .as_ref()
                        .and_then(address::json_text)
                        .and_then(|t| t.parse::<u16>().ok())
                        .unwrap_or(900)
                        .max(30);
                    Some((bbmd, ttl))
                }
            },
            None => None,
        };
        let discover = cfg
            .devices_discover_period_seconds
            .or(a.devices_discover_period_seconds)
            .unwrap_or(30.0);
        if !discover.is_finite() || discover <= 0.0 {
            return Err(ConfigError::new(
                file,
                "devicesDiscoverPeriodSeconds",
                format!("{discover} is not a period in seconds"),
            ));
        }
        let rescan = a
            .devices_rescan_objects_period_seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(60.0);
        let mut devices = Vec::new();
        let (configured, from_ede) = match &ede_devices {
            Some(d) => (d, true),
            None => (&cfg.devices, false),
        };
        if from_ede && !cfg.devices.is_empty() {
            ignored.push(
                "devices (replaced by the devices of edeFilePath/edeConfig, as upstream does)"
                    .into(),
            );
        }
        for (i, d) in configured.iter().enumerate() {
            devices.push(Arc::new(device_spec(
                file,
                i,
                d,
                Duration::from_secs_f64(rescan.min(8.64e4)),
                ignored,
            )?));
        }
        Ok(BacnetConnector {
            name: name.to_string(),
            bind: SocketAddr::new(IpAddr::V4(ip), port),
            broadcast: client::broadcast_of(ip, prefix),
            local: LocalDevice {
                instance,
                name: a.object_name.clone().unwrap_or_else(|| "Gateway".into()),
                max_apdu,
                segmentation,
                vendor: a.vendor_identifier.unwrap_or(15),
            },
            timeout: Duration::from_millis(a.apdu_timeout.unwrap_or(3000).clamp(50, 60_000)),
            retries: a.number_of_apdu_retries.unwrap_or(1).min(10),
            discover_period: Duration::from_secs_f64(discover.min(8.64e4)),
            foreign,
            devices,
        })
    }
}

/// A device found and being served.
#[derive(Debug)]
struct Live {
    spec: Arc<DeviceSpec>,
    peer: Peer,
    instance: u32,
    /// The vendor id of its I-Am (`${vendorId}`).
    vendor: u32,
}

#[derive(Default)]
struct Registry {
    /// Device name → the device.
    by_name: HashMap<String, Arc<Live>>,
    /// (peer, instance, spec) already being served.
    known: HashSet<(Peer, u32, usize)>,
    /// (peer, process id) → where its COV notifications go.
    cov: HashMap<(SocketAddr, u32), mpsc::Sender<CovNotification>>,
    next_process: u32,
}

struct Shared {
    connector: Arc<str>,
    ep: Arc<Endpoint>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    cancel: CancellationToken,
    registry: Mutex<Registry>,
}

impl Shared {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Connector for BacnetConnector {
    /// The `attributeUpdates` keys: their current values are requested from ThingsBoard when a
    /// device connects (`syncDevicesSharedAttributesOnConnect`), as upstream does.
    fn shared_attribute_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .devices
            .iter()
            .flat_map(|d| d.updates.iter().map(|t| t.key.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let ep = Endpoint::bind(self.bind, self.local.clone(), self.timeout, self.retries)
            .await
            .map_err(|e| {
                ConnectorError::Connection(format!("cannot bind UDP {}: {e}", self.bind))
            })?;
        tracing::info!(connector = %self.name, bind = %self.bind, instance = self.local.instance, "BACnet device of the gateway is up.");
        let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let receiver = ep.clone();
        cx.spawn("bacnet receiver", async move {
            receiver
                .receive(events_tx)
                .await
                .map_err(|e| ConnectorError::Connection(format!("UDP receive failed: {e}")))
        });
        let shared = Arc::new(Shared {
            connector: Arc::from(self.name.as_str()),
            ep: ep.clone(),
            uplink: cx.uplink().clone(),
            stats: cx.stats().clone(),
            cancel: cx.cancellation().child_token(),
            registry: Mutex::new(Registry::default()),
        });
        // Foreign device registration, renewed at half its time-to-live.
        if let Some((bbmd, ttl)) = self.foreign {
            let ep = ep.clone();
            let cancel = shared.cancel.clone();
            cx.spawn("bacnet foreign device registration", async move {
                loop {
                    if let Err(e) = ep
                        .send_raw(SocketAddr::V4(bbmd), &frame::register_foreign_device(ttl))
                        .await
                    {
                        tracing::warn!(%bbmd, error = %e, "Foreign device registration failed.");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(u64::from(ttl / 2).max(15))) => {}
                    }
                }
            });
        }
        // Periodic Who-Is.
        {
            let ep = ep.clone();
            let cancel = shared.cancel.clone();
            let specs = self.devices.clone();
            let period = self.discover_period;
            let broadcast = self.broadcast;
            let foreign = self.foreign.map(|f| f.0);
            let name = shared.connector.clone();
            cx.spawn("bacnet discovery", async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    discover(&name, &ep, &specs, broadcast, foreign).await;
                }
            });
        }
        let downlink_slots = Arc::new(Semaphore::new(MAX_CONCURRENT_DOWNLINK));
        let spawner = cx.spawner();
        let cancel = cx.cancellation().clone();
        let result = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ok(()),
                ev = events.recv() => match ev {
                    Some(Event::IAm(peer, i_am)) => self.on_i_am(&shared, &spawner, peer, i_am),
                    Some(Event::Cov(peer, n)) => {
                        let tx = shared.registry().cov.get(&(peer.addr, n.process)).cloned();
                        match tx {
                            Some(tx) => { let _ = tx.try_send(n); }
                            None => tracing::debug!(connector = %self.name, %peer, process = n.process, "COV notification for no subscription ignored."),
                        }
                    }
                    None => break Err(ConnectorError::Connection("the UDP receiver ended".into())),
                },
                d = cx.recv_downlink() => {
                    let Some(d) = d else { break Ok(()) };
                    shared.stats.add_downlink(1);
                    let Ok(permit) = downlink_slots.clone().acquire_owned().await else { break Ok(()) };
                    let sh = shared.clone();
                    spawner.spawn("bacnet downlink", async move {
                        match d {
                            Downlink::AttributeUpdate(u) => attribute_update(&sh, u).await,
                            Downlink::Rpc(r) => rpc(&sh, r).await,
                            _ => {}
                        }
                        drop(permit);
                        Ok(())
                    });
                }
            }
        };
        shared.cancel.cancel();
        result
    }
}

impl BacnetConnector {
    fn on_i_am(
        &self,
        shared: &Arc<Shared>,
        spawner: &TaskSpawner,
        peer: Peer,
        i_am: super::proto::services::IAm,
    ) {
        if i_am.device.kind != ids::DEVICE {
            return;
        }
        let instance = i_am.device.instance;
        if instance == self.local.instance && ep_is(&shared.ep, &peer) {
            return;
        }
        for spec in self.devices.iter().filter(|s| s.matches(&peer, instance)) {
            let key = (peer.clone(), instance, spec.index);
            if !shared.registry().known.insert(key) {
                continue;
            }
            tracing::info!(connector = %self.name, %peer, instance, config = spec.index, "BACnet device found.");
            let live = Arc::new(Live {
                spec: spec.clone(),
                peer: peer.clone(),
                instance,
                vendor: i_am.vendor,
            });
            let max_apdu = i_am.max_apdu.clamp(50, 1476) as usize;
            let sh = shared.clone();
            spawner.spawn(format!("bacnet device {peer} #{instance}"), async move {
                serve_device(sh, live, max_apdu).await;
                Ok(())
            });
        }
    }
}

fn ep_is(ep: &Endpoint, peer: &Peer) -> bool {
    peer.remote.is_none() && ep.local_addr().is_ok_and(|a| a == peer.addr)
}

/// Sends one Who-Is per configured device: unicast to an exact address (with the
/// instance range of `deviceId` when it names one), broadcast for patterns and routed
/// devices without a router address.
async fn discover(
    connector: &str,
    ep: &Endpoint,
    specs: &[Arc<DeviceSpec>],
    broadcast: Ipv4Addr,
    foreign: Option<SocketAddrV4>,
) {
    let mut sent = HashSet::new();
    for s in specs {
        let range = s.device_id.as_ref().and_then(address::device_id_range);
        let (to, port, dest) = match &s.address {
            Some(a) => a.who_is_target(),
            None => (None, address::DEFAULT_PORT, None),
        };
        let (addr, is_broadcast) = match to {
            Some(a) => (SocketAddr::V4(a), false),
            None => (SocketAddr::V4(SocketAddrV4::new(broadcast, port)), true),
        };
        if !sent.insert((addr, range, dest.clone())) {
            continue;
        }
        let r = match (is_broadcast, foreign) {
            (true, Some(bbmd)) => {
                let d = frame::encode(
                    bvlc::DISTRIBUTE_BROADCAST,
                    dest.as_ref(),
                    false,
                    &frame::Apdu::Unconfirmed {
                        service: super::proto::services::unconfirmed::WHO_IS,
                        data: super::proto::services::who_is(range),
                    },
                );
                ep.send_raw(SocketAddr::V4(bbmd), &d).await
            }
            _ => ep.who_is(addr, is_broadcast, dest.as_ref(), range).await,
        };
        match r {
            Ok(()) => {
                tracing::debug!(connector, to = %addr, address = %s.address_text, "Who-Is sent.")
            }
            Err(e) => {
                tracing::warn!(connector, to = %addr, error = %e, "Who-Is could not be sent.")
            }
        }
    }
}

/// The device's object list: whole, or element by element when it does not fit.
async fn object_list(
    ep: &Endpoint,
    peer: &Peer,
    instance: u32,
) -> Result<Vec<ObjectId>, ClientError> {
    let dev = ObjectId::new(ids::DEVICE, instance);
    let whole = PropRef {
        property: ids::OBJECT_LIST,
        index: None,
    };
    match ep.read_property(peer, dev, whole, None).await {
        Ok(v) => Ok(objects_in(&v)),
        Err(ClientError::Timeout(t)) => Err(ClientError::Timeout(t)),
        Err(_) => {
            let n = match ep
                .read_property(
                    peer,
                    dev,
                    PropRef {
                        property: ids::OBJECT_LIST,
                        index: Some(0),
                    },
                    None,
                )
                .await?
            {
                AppValue::Unsigned(n) => n.min(MAX_OBJECTS),
                other => {
                    return Err(ClientError::Malformed(format!(
                        "objectList length is {other:?}"
                    )))
                }
            };
            let mut out = Vec::new();
            for i in 1..=n {
                let v = ep
                    .read_property(
                        peer,
                        dev,
                        PropRef {
                            property: ids::OBJECT_LIST,
                            index: Some(i as u32),
                        },
                        None,
                    )
                    .await?;
                out.extend(objects_in(&v));
            }
            Ok(out)
        }
    }
}

fn objects_in(v: &AppValue) -> Vec<ObjectId> {
    match v {
        AppValue::Object(o) => vec![*o],
        AppValue::List(items) => items.iter().flat_map(objects_in).collect(),
        _ => vec![],
    }
}

/// How a device is read: ReadPropertyMultiple chunk size, or ReadProperty only.
struct ReadPlan {
    per_request: usize,
    rpm: bool,
}

/// Reads every (object, property), filling `out`. Fails only when the device does not
/// answer at all.
async fn read_all(
    ep: &Endpoint,
    peer: &Peer,
    wanted: &[(ObjectId, u32)],
    plan: &mut ReadPlan,
    out: &mut HashMap<(ObjectId, u32), PropResult>,
) -> Result<usize, ClientError> {
    let mut i = 0;
    let mut answered = 0;
    while i < wanted.len() {
        if plan.rpm {
            let end = (i + plan.per_request).min(wanted.len());
            let mut items: Vec<(ObjectId, Vec<PropRef>)> = Vec::new();
            for (o, p) in &wanted[i..end] {
                let r = PropRef {
                    property: *p,
                    index: None,
                };
                match items.last_mut() {
                    Some((lo, props)) if lo == o => props.push(r),
                    _ => items.push((*o, vec![r])),
                }
            }
            match ep.read_multiple(peer, &items).await {
                Ok(results) => {
                    answered += 1;
                    for (o, p, r) in results {
                        if p.index.is_none() {
                            out.insert((o, p.property), r);
                        }
                    }
                    i = end;
                }
                Err(ClientError::Abort(_)) | Err(ClientError::Malformed(_))
                    if plan.per_request > 1 =>
                {
                    plan.per_request = (plan.per_request / 2).max(1);
                }
                Err(ClientError::Abort(_)) | Err(ClientError::Malformed(_)) => plan.rpm = false,
                // Reject (unrecognized service) or Error(services, ...): no RPM here.
                Err(ClientError::Reject(_)) | Err(ClientError::Error(5, _)) => plan.rpm = false,
                // One unknown object fails a whole RPM on some devices: read this chunk
                // property by property.
                Err(ClientError::Error(..)) => {
                    for (o, p) in &wanted[i..end] {
                        answered += read_one(ep, peer, *o, *p, out).await?;
                    }
                    i = end;
                }
                Err(e) => return Err(e),
            }
        } else {
            let (o, p) = wanted[i];
            answered += read_one(ep, peer, o, p, out).await?;
            i += 1;
        }
    }
    Ok(answered)
}

async fn read_one(
    ep: &Endpoint,
    peer: &Peer,
    o: ObjectId,
    p: u32,
    out: &mut HashMap<(ObjectId, u32), PropResult>,
) -> Result<usize, ClientError> {
    let r = PropRef {
        property: p,
        index: None,
    };
    match ep.read_property(peer, o, r, None).await {
        Ok(v) => {
            out.insert((o, p), Ok(v));
            Ok(1)
        }
        Err(ClientError::Error(c, k)) => {
            out.insert((o, p), Err((c, k)));
            Ok(1)
        }
        Err(ClientError::Reject(_)) | Err(ClientError::Abort(_)) => {
            out.insert((o, p), Err((5, 0)));
            Ok(1)
        }
        Err(e) => Err(e),
    }
}

fn wanted_of(points: &[ResolvedPoint], skip: &HashSet<ObjectId>) -> Vec<(ObjectId, u32)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in points {
        if skip.contains(&p.object) {
            continue;
        }
        for prop in &p.props {
            if seen.insert((p.object, *prop)) {
                out.push((p.object, *prop));
            }
        }
    }
    out
}

/// Serves one device until the connector stops: name, object discovery, COV, polling.
async fn serve_device(sh: Arc<Shared>, live: Arc<Live>, max_apdu: usize) {
    let spec = &live.spec;
    let peer = &live.peer;
    let connector = sh.connector.clone();
    let mut once = LogOnce::new(LOG_ONCE_CAP);
    let mut backoff = tbgw::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    // The device's name, which may need its objectName.
    let needs_name = [
        (&spec.name_expr, spec.name_constant),
        (&spec.profile_expr, spec.profile_constant),
    ]
    .iter()
    .any(|(e, c)| !c && e.contains("${objectName}"));
    let object_name = if needs_name {
        loop {
            let r = sh
                .ep
                .read_property(
                    peer,
                    ObjectId::new(ids::DEVICE, live.instance),
                    PropRef {
                        property: ids::OBJECT_NAME,
                        index: None,
                    },
                    None,
                )
                .await;
            match r {
                Ok(AppValue::Text(s)) => break s,
                Ok(_) => break live.instance.to_string(),
                Err(e) => {
                    sh.stats.add_errors(1);
                    if once.first(&e.to_string()) {
                        tracing::warn!(connector = %connector, %peer, error = %e, "Cannot read the device's objectName; retrying.");
                    }
                    tokio::select! {
                        _ = sh.cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    } else {
        live.instance.to_string()
    };
    let vars = [
        ("objectName", object_name),
        ("objectId", live.instance.to_string()),
        ("address", peer.to_string()),
        ("vendorId", live.vendor.to_string()),
    ];
    let expr = |e: &str, constant: bool| {
        if constant {
            e.to_string()
        } else {
            uplink::device_expression(e, &vars)
        }
    };
    let name = expr(&spec.name_expr, spec.name_constant);
    let profile = expr(&spec.profile_expr, spec.profile_constant);
    {
        let mut reg = sh.registry();
        if reg.by_name.contains_key(&name) {
            tracing::warn!(connector = %connector, device = %name, %peer, "Another BACnet device already has this name; the newer one is served under it.");
        }
        reg.by_name.insert(name.clone(), live.clone());
    }
    if sh
        .uplink
        .connect_device(name.clone(), profile.clone())
        .await
        .is_err()
    {
        return;
    }
    let mut online = true;
    let discovering = spec
        .points
        .iter()
        .any(|p| matches!(p.objects, Objects::AllOf(_)));
    let mut objects: Vec<ObjectId> = Vec::new();
    let mut points: Vec<ResolvedPoint> = uplink::resolve(&spec.points, live.instance, &objects);
    let mut next_rescan = Instant::now();
    let mut plan = ReadPlan {
        per_request: (max_apdu / BYTES_PER_PROPERTY).max(1),
        rpm: true,
    };
    let mut values: HashMap<(ObjectId, u32), PropResult> = HashMap::new();
    // COV
    let (cov_tx, mut cov_rx) = mpsc::channel::<CovNotification>(256);
    let process = {
        let mut reg = sh.registry();
        reg.next_process = reg.next_process.wrapping_add(1);
        let p = reg.next_process;
        reg.cov.insert((peer.addr, p), cov_tx);
        p
    };
    let mut covered: HashSet<ObjectId> = HashSet::new();
    let mut cov_renew = Instant::now();
    let mut first_poll = true;
    let mut tick = tokio::time::interval(spec.poll);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = sh.cancel.cancelled() => break,
            n = cov_rx.recv() => {
                let Some(n) = n else { break };
                sh.stats.add_messages_received(1);
                let ts = now_millis();
                for (p, v) in n.values {
                    if p.index.is_none() {
                        values.insert((n.object, p.property), Ok(v));
                    }
                }
                let pts: Vec<ResolvedPoint> = points.iter().filter(|p| p.object == n.object).cloned().collect();
                let mut data = DeviceData::new(name.clone(), profile.clone());
                data.report = spec.report.clone();
                uplink::fill(&mut data, ts, &pts, &values);
                if !data.is_empty() && sh.uplink.send(data).await.is_err() {
                    break;
                }
                continue;
            }
            _ = tokio::time::sleep_until(cov_renew), if spec.cov.is_some() && !first_poll && online => {
                if let Some(cov) = spec.cov {
                    covered = subscribe_all(&sh, &live, &name, process, cov, &points, &mut once).await;
                    cov_renew = Instant::now() + Duration::from_secs(u64::from(cov.lifetime / 2).max(5));
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        // Object discovery for `objectId: "*"` and `"*"` sections.
        if discovering && Instant::now() >= next_rescan {
            match object_list(&sh.ep, peer, live.instance).await {
                Ok(list) => {
                    if list != objects {
                        objects = list;
                        points = uplink::resolve(&spec.points, live.instance, &objects);
                        tracing::info!(connector = %connector, device = %name, objects = objects.len(), points = points.len(), "Device objects discovered.");
                    }
                    next_rescan = Instant::now() + spec.rescan;
                }
                Err(e) => {
                    sh.stats.add_errors(1);
                    if once.first(&format!("objectList: {e}")) {
                        tracing::warn!(connector = %connector, device = %name, error = %e, "Cannot read the device's object list.");
                    }
                }
            }
        }
        // Poll what COV does not cover (everything on the first poll, to learn the
        // properties a key expression needs). When COV covers every object, everything is
        // still polled: that is how a device that went away (and lost its subscriptions)
        // is noticed.
        let mut skip = if first_poll {
            HashSet::new()
        } else {
            covered.clone()
        };
        let mut wanted = wanted_of(&points, &skip);
        if wanted.is_empty() && !skip.is_empty() {
            skip.clear();
            wanted = wanted_of(&points, &skip);
        }
        if wanted.is_empty() {
            first_poll = false;
            continue;
        }
        let ts = now_millis();
        let mut read = HashMap::new();
        let r = tokio::select! {
            _ = sh.cancel.cancelled() => break,
            r = read_all(&sh.ep, peer, &wanted, &mut plan, &mut read) => r,
        };
        match r {
            Ok(_) => {
                first_poll = false;
                sh.stats.add_messages_received(1);
                for ((o, p), v) in &read {
                    if let Err((c, k)) = v {
                        let why = format!(
                            "{o} {}: {}",
                            ids::property_name(*p),
                            super::proto::services::error_text(*c, *k)
                        );
                        if once.first(&why) {
                            tracing::warn!(connector = %connector, device = %name, error = %why, "The device answered a read with an error (logged once; counted).");
                        }
                        sh.stats.add_convert_errors(1);
                    }
                }
                values.extend(read.iter().map(|(k, v)| (*k, v.clone())));
                if !online {
                    online = true;
                    once.clear();
                    tracing::info!(connector = %connector, device = %name, "The device answers again.");
                    if sh
                        .uplink
                        .connect_device(name.clone(), profile.clone())
                        .await
                        .is_err()
                    {
                        break;
                    }
                    // Subscriptions were lost with a restart: renew now.
                    cov_renew = Instant::now();
                }
                if let Some(cov) = spec.cov {
                    if Instant::now() >= cov_renew {
                        covered =
                            subscribe_all(&sh, &live, &name, process, cov, &points, &mut once)
                                .await;
                        cov_renew = Instant::now()
                            + Duration::from_secs(u64::from(cov.lifetime / 2).max(5));
                    }
                }
                let polled: Vec<ResolvedPoint> = points
                    .iter()
                    .filter(|p| !skip.contains(&p.object))
                    .cloned()
                    .collect();
                let mut data = DeviceData::new(name.clone(), profile.clone());
                data.report = spec.report.clone();
                uplink::fill(&mut data, ts, &polled, &values);
                if !data.is_empty() && sh.uplink.send(data).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                sh.stats.add_errors(1);
                if once.first(&e.to_string()) {
                    tracing::warn!(connector = %connector, device = %name, %peer, error = %e, "Poll failed; the other devices are not affected.");
                }
                if online && e.is_timeout() {
                    online = false;
                    covered.clear();
                    if sh.uplink.disconnect_device(name.clone()).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    let mut reg = sh.registry();
    reg.cov.remove(&(peer.addr, process));
}

/// Subscribes to COV of every point object with presentValue; returns those accepted.
async fn subscribe_all(
    sh: &Shared,
    live: &Live,
    name: &str,
    process: u32,
    cov: CovSpec,
    points: &[ResolvedPoint],
    once: &mut LogOnce,
) -> HashSet<ObjectId> {
    let mut objs: Vec<ObjectId> = points
        .iter()
        .filter(|p| p.props.contains(&ids::PRESENT_VALUE) && p.object.kind != ids::DEVICE)
        .map(|p| p.object)
        .collect();
    objs.sort();
    objs.dedup();
    let mut covered = HashSet::new();
    for o in objs {
        match sh
            .ep
            .subscribe_cov(&live.peer, process, o, cov.confirmed, cov.lifetime)
            .await
        {
            Ok(()) => {
                covered.insert(o);
            }
            Err(e) => {
                if once.first(&format!("cov {o}: {e}")) {
                    tracing::info!(connector = %sh.connector, device = %name, object = %o, error = %e, "SubscribeCOV refused; this object is polled.");
                }
                if e.is_timeout() {
                    break;
                }
            }
        }
    }
    tracing::debug!(connector = %sh.connector, device = %name, subscribed = covered.len(), "COV subscriptions made.");
    covered
}

fn live_by_name(sh: &Shared, name: &str) -> Option<Arc<Live>> {
    sh.registry().by_name.get(name).cloned()
}

fn object_of(live: &Live, t: &WriteTarget) -> ObjectId {
    ObjectId::new(t.kind, t.object.unwrap_or(live.instance))
}

async fn attribute_update(sh: &Shared, u: AttributeUpdate) {
    let Some(live) = live_by_name(sh, &u.device) else {
        tracing::debug!(connector = %sh.connector, device = %u.device, "Attribute update for a device not found (yet); ignored.");
        return;
    };
    for t in &live.spec.updates {
        let Some(v) = u.values.get(&t.key) else {
            continue;
        };
        let value = match downlink::write_value(t.kind, t.property, v) {
            Ok(v) => v,
            Err(e) => {
                sh.stats.add_errors(1);
                tracing::warn!(connector = %sh.connector, device = %u.device, key = %t.key, error = %e, "Attribute update not written.");
                continue;
            }
        };
        let o = object_of(&live, t);
        let p = PropRef {
            property: t.property,
            index: None,
        };
        match sh
            .ep
            .write_property(&live.peer, o, p, &value, t.priority, None)
            .await
        {
            Ok(()) => {
                tracing::debug!(connector = %sh.connector, device = %u.device, key = %t.key, "Attribute written.")
            }
            Err(e) => {
                sh.stats.add_errors(1);
                tracing::warn!(connector = %sh.connector, device = %u.device, key = %t.key, object = %o, error = %e, "Attribute update failed.");
            }
        }
    }
}

fn rpc_error(e: ClientError) -> RpcError {
    match e {
        ClientError::Timeout(_) => RpcError::Timeout(e.to_string()),
        ClientError::Io(_) => RpcError::Unreachable(e.to_string()),
        _ => RpcError::Device(e.to_string()),
    }
}

async fn rpc(sh: &Shared, r: RpcRequest) {
    let RpcRequest {
        device,
        method,
        params,
        responder,
        ..
    } = r;
    let Some(name) = device else {
        return responder.err(RpcError::NotFound(format!(
            "the BACnet connector has no connector RPC `{method}`"
        )));
    };
    let Some(live) = live_by_name(sh, &name) else {
        return responder.err(RpcError::Unreachable(format!(
            "BACnet device `{name}` has not been found (yet)"
        )));
    };
    let (t, read, value, timeout) = if method == "get" || method == "set" {
        let set = method == "set";
        let Some(text) = params.as_str() else {
            return responder.err(RpcError::BadRequest(
                "No params section found in RPC request".into(),
            ));
        };
        let req = match downlink::parse_reserved(text, set) {
            Ok(r) => r,
            Err(e) => return responder.err(RpcError::BadRequest(e)),
        };
        let Some(kind) = ids::object_type(&req.object_type) else {
            return responder.err(RpcError::BadRequest(format!(
                "unknown objectType {:?}",
                req.object_type
            )));
        };
        let Some(property) = ids::property(&req.property_id) else {
            return responder.err(RpcError::BadRequest(format!(
                "unknown propertyId {:?}",
                req.property_id
            )));
        };
        (
            WriteTarget {
                key: method.clone(),
                kind,
                object: Some(req.object_id),
                property,
                priority: req.priority,
            },
            !set,
            req.value.unwrap_or(Json::Null),
            None,
        )
    } else {
        let Some(spec) = live.spec.rpcs.iter().find(|s| s.method == method) else {
            return responder.err(RpcError::NotFound(format!(
                "Neither of configured device rpc methods match with {method}"
            )));
        };
        let read = spec
            .read
            .unwrap_or(params.is_null() && spec.target.priority.is_none());
        (spec.target.clone(), read, params, spec.timeout)
    };
    let o = object_of(&live, &t);
    let p = PropRef {
        property: t.property,
        index: None,
    };
    if read {
        match sh.ep.read_property(&live.peer, o, p, timeout).await {
            Ok(v) => {
                responder.verbatim(json!({"result": {"value": uplink::to_value(&v).to_json()}}))
            }
            Err(e) => responder.err(rpc_error(e)),
        }
    } else {
        let av = match downlink::write_value(t.kind, t.property, &value) {
            Ok(v) => v,
            Err(e) => return responder.err(RpcError::BadRequest(e)),
        };
        match sh
            .ep
            .write_property(&live.peer, o, p, &av, t.priority, timeout)
            .await
        {
            Ok(()) => responder.verbatim(json!({"result": {"value": value}})),
            Err(e) => responder.err(rpc_error(e)),
        }
    }
}
