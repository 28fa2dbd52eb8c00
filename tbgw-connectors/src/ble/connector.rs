//! The BLE connector's build step and run loop.
//!
//! Three kinds of task:
//!
//! * the **scanner** owns the scan: every advertisement heard is remembered (for devices
//!   matched by name or service, and `showMap`) and stored as the latest advertisement of each
//!   configured device it matches: a map update, no decoding, so thousands of beacons a second
//!   do not hold anything up. A lost adapter (bluetoothd gone) ends the scan; a new one starts
//!   with backoff.
//! * the **reporter** sends, every `pollPeriod`, the decoded latest advertisement of each
//!   device heard within the scan window (`scannerTimeout`, default 10 s); a device not heard
//!   for that long is sent nothing and is disconnected in ThingsBoard.
//! * one **device task** per device with GATT work (`read`/`notify` keys, `showMap`) keeps a
//!   connection, reconnecting by upstream's `connectRetry` settings, polls `read`
//!   characteristics, forwards notifications, and runs RPC and attribute-update reads and
//!   writes between polls. A device with only advertisement keys connects for an RPC or an
//!   attribute update only, and disconnects after it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt};
use serde_json::{json, Value as Json};
use tbgw::backoff::Backoff;
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest};
use tbgw::eval::Expr;
use tbgw::log_once::LogOnce;
use tbgw::model::{now_millis, DeviceData};
use tbgw::report::ReportOverrides;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::central::{
    Advertisement, BleCentral, BleError, BlePeripheral, GattService, Mac, Notification, ScanMode,
};
use super::config::{BleConnectorConfig, DeviceConfig, ItemConfig};
use super::downlink::{as_reply, py_str, reserved_params};
use super::uplink::{self, Render, ValueExpr};

/// Shortest `pollPeriod` accepted.
const MIN_POLL_PERIOD: Duration = Duration::from_millis(50);
/// Distinct errors logged per task before they are only counted.
const LOG_ONCE_CAP: usize = 64;
/// Downlink jobs waiting per device; more are refused (503).
const JOB_QUEUE: usize = 64;
/// Devices remembered from scanning (for name and service matching and `showMap`).
const SEEN_CAP: usize = 10_000;
/// Advertising ThingsBoard devices reported at once (heard within one scan window); more are
/// not added until others fall silent, and counted as dropped.
const TARGET_CAP: usize = 20_000;

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    /// A characteristic, polled (`read`) or subscribed (`notify`).
    Char { uuid: Uuid, notify: bool },
    /// Manufacturer data (of a company id, or the first).
    Manufacturer(Option<u16>),
    /// Service data (of a service, or the first).
    ServiceData(Option<Uuid>),
    /// The advertised local name.
    LocalName,
    /// The signal strength.
    Rssi,
    /// The advertised transmit power.
    TxPower,
}

/// One telemetry key or attribute.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) key: String,
    pub(crate) attribute: bool,
    pub(crate) source: Source,
    pub(crate) expr: ValueExpr,
    pub(crate) render: Render,
    pub(crate) compute: Option<Expr>,
}

/// What an RPC method does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Processing {
    Read,
    Write,
    Scan,
}

#[derive(Debug, Clone)]
struct Method {
    name: String,
    with_response: bool,
    uuid: Option<Uuid>,
    processing: Processing,
}

/// How a configured device is recognised.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matcher {
    pub(crate) mac: Option<Mac>,
    pub(crate) local_name: Option<String>,
    pub(crate) service: Option<Uuid>,
}

impl Matcher {
    pub(crate) fn matches(&self, a: &Advertisement) -> bool {
        self.mac.is_none_or(|m| m == a.address)
            && self
                .local_name
                .as_ref()
                .is_none_or(|n| a.local_name.as_deref() == Some(n.as_str()))
            && self
                .service
                .is_none_or(|s| a.services.contains(&s) || a.service_data.contains_key(&s))
    }
}

/// One device, validated.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) name: String,
    pub(crate) profile: String,
    pub(crate) matcher: Matcher,
    pub(crate) period: Duration,
    timeout: Duration,
    connect_retry: u32,
    retry_delay: Duration,
    wait_after: Duration,
    show_map: bool,
    pub(crate) char_items: Vec<Item>,
    pub(crate) adv_items: Vec<Item>,
    updates: Vec<(String, Uuid)>,
    methods: Vec<Method>,
    pub(crate) report: Option<Arc<ReportOverrides>>,
}

impl Device {
    /// Keeps a connection (has `read`/`notify` keys or `showMap`).
    fn persistent(&self) -> bool {
        !self.char_items.is_empty() || self.show_map
    }
    /// Has any GATT work at all.
    fn gatt(&self) -> bool {
        self.persistent() || !self.updates.is_empty() || !self.methods.is_empty()
    }
    /// The ThingsBoard name for an advertiser (`${MACAddress}`, `${localName}` replaced).
    pub(crate) fn name_for(&self, a: &Advertisement) -> String {
        if !self.name.contains("${") {
            return self.name.clone();
        }
        self.name
            .replace("${MACAddress}", &a.address.to_string())
            .replace("${localName}", a.local_name.as_deref().unwrap_or(""))
    }
}

/// The BLE connector. Build it with [`BleFactory`](super::BleFactory).
#[derive(Debug)]
pub struct BleConnector {
    name: String,
    central: Arc<dyn BleCentral>,
    mode: ScanMode,
    window: Duration,
    show_map: bool,
    map_filter: Option<String>,
    devices: Vec<Arc<Device>>,
}

fn ms(file: &Path, path: String, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if s.is_finite() && (0.0..=86_400_000.0).contains(&s) {
        Ok(Duration::from_secs_f64(s / 1000.0))
    } else {
        Err(ConfigError::new(
            file,
            path,
            format!("{s} is not a number of milliseconds (0 ..= 86400000)"),
        ))
    }
}

fn secs(file: &Path, path: String, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    ms(file, path, v.map(|s| s * 1000.0), default * 1000.0)
}

fn uuid(file: &Path, path: String, s: &str) -> Result<Uuid, ConfigError> {
    parse_uuid(s).ok_or_else(|| ConfigError::new(file, path, format!("{s:?} is not a UUID")))
}

/// A UUID in full form, or a 16/32-bit Bluetooth short form (`2A00`, `0x2a00`).
pub(crate) fn parse_uuid(s: &str) -> Option<Uuid> {
    let t = s.trim();
    if let Ok(u) = Uuid::parse_str(t) {
        return Some(u);
    }
    let h = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if (h.len() == 4 || h.len() == 8) && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        let short = u32::from_str_radix(h, 16).ok()?;
        return Some(Uuid::from_u128(
            (u128::from(short) << 96) | 0x0000_0000_0000_1000_8000_0080_5f9b_34fb,
        ));
    }
    None
}

impl BleConnector {
    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: BleConnectorConfig,
        central: Arc<dyn BleCentral>,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let window_ms = cfg
            .scanner_timeout
            .or_else(|| cfg.scanner.as_ref().and_then(|s| s.timeout));
        let window =
            ms(file, "scannerTimeout".into(), window_ms, 10_000.0)?.max(Duration::from_millis(100));
        if cfg.scanner_poll_period.is_some() {
            ignored.push(
                "scannerPollPeriod (tbgw scans continuously; see docs/connectors/ble.md)".into(),
            );
        }
        let mut devices = Vec::new();
        for (i, d) in cfg.devices.iter().enumerate() {
            devices.push(Arc::new(Self::device(
                file,
                &format!("devices[{i}]"),
                d,
                ignored,
            )?));
        }
        for (i, d) in devices.iter().enumerate() {
            if devices[..i].iter().any(|o| o.name == d.name) && d.gatt() {
                return Err(ConfigError::new(
                    file,
                    format!("devices[{i}].name"),
                    format!("{:?} is used by another device", d.name),
                ));
            }
        }
        Ok(BleConnector {
            name: name.to_string(),
            central,
            mode: if cfg.passive_scan_mode.unwrap_or(true) {
                ScanMode::Passive
            } else {
                ScanMode::Active
            },
            window,
            show_map: cfg.show_map.unwrap_or(false),
            map_filter: cfg.scanner.and_then(|s| s.device_name),
            devices,
        })
    }

    fn item(
        file: &Path,
        kp: &str,
        it: &ItemConfig,
        attribute: bool,
        kind: Option<&str>,
    ) -> Result<Item, ConfigError> {
        let key = it
            .key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ConfigError::new(file, format!("{kp}.key"), "missing"))?;
        let adv = match it.data_source_type.as_deref().map(str::trim) {
            None | Some("characteristic") => false,
            Some("advertisement") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    file,
                    format!("{kp}.dataSourceType"),
                    format!("{other:?}: expected characteristic or advertisement"),
                ))
            }
        };
        let source = if adv {
            match it.advertisement_field.as_deref().map(str::trim) {
                None | Some("manufacturerData") => {
                    let id = match &it.company_id {
                        None => None,
                        Some(Json::Number(n)) => Some(
                            n.as_u64()
                                .and_then(|v| u16::try_from(v).ok())
                                .ok_or_else(|| {
                                    ConfigError::new(
                                        file,
                                        format!("{kp}.companyId"),
                                        format!("{n} is not a company id (0 ..= 65535)"),
                                    )
                                })?,
                        ),
                        Some(Json::String(s)) => {
                            let t = s.trim();
                            let h = t
                                .strip_prefix("0x")
                                .or_else(|| t.strip_prefix("0X"))
                                .unwrap_or(t);
                            Some(u16::from_str_radix(h, 16).map_err(|_| {
                                ConfigError::new(
                                    file,
                                    format!("{kp}.companyId"),
                                    format!("{s:?} is not a company id (a number or hex text)"),
                                )
                            })?)
                        }
                        Some(other) => {
                            return Err(ConfigError::new(
                                file,
                                format!("{kp}.companyId"),
                                format!("{other} is not a company id"),
                            ))
                        }
                    };
                    Source::Manufacturer(id)
                }
                Some("serviceData") => Source::ServiceData(match &it.service_data_uuid {
                    Some(s) => Some(uuid(file, format!("{kp}.serviceDataUUID"), s)?),
                    None => None,
                }),
                Some("localName") => Source::LocalName,
                Some("rssi") => Source::Rssi,
                Some("txPower") => Source::TxPower,
                Some(other) => return Err(ConfigError::new(
                    file,
                    format!("{kp}.advertisementField"),
                    format!(
                        "{other:?}: expected manufacturerData, serviceData, localName, rssi or txPower"
                    ),
                )),
            }
        } else {
            let c = it.characteristic_uuid.as_deref().ok_or_else(|| {
                ConfigError::new(
                    file,
                    format!("{kp}.characteristicUUID"),
                    "missing (or set dataSourceType to advertisement)",
                )
            })?;
            let uuid = uuid(file, format!("{kp}.characteristicUUID"), c)?;
            let notify = match it.method.as_deref().map(str::trim) {
                Some("read") | None => false,
                Some("notify") => true,
                Some(other) => {
                    return Err(ConfigError::new(
                        file,
                        format!("{kp}.method"),
                        format!("{other:?}: expected read or notify"),
                    ))
                }
            };
            Source::Char { uuid, notify }
        };
        let src = it.value_expression.as_deref().unwrap_or("[:]");
        let expr = ValueExpr::parse(src)
            .map_err(|e| ConfigError::new(file, format!("{kp}.valueExpression"), e))?;
        // Upstream: `type` (default `bytes`) picks the characteristic converter, and the
        // advertisement converter is the hex one unless `type` is `bytes`.
        let render = match (adv, kind) {
            (false, Some("hex")) => Render::Int,
            (false, _) => Render::Text,
            (true, Some("bytes")) => Render::Text,
            (true, _) => Render::Int,
        };
        let compute = match &it.compute {
            Some(c) => Some(
                Expr::parse(c)
                    .map_err(|e| ConfigError::new(file, format!("{kp}.compute"), e.to_string()))?,
            ),
            None => None,
        };
        Ok(Item {
            key,
            attribute,
            source,
            expr,
            render,
            compute,
        })
    }

    fn device(
        file: &Path,
        p: &str,
        d: &DeviceConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Device, ConfigError> {
        if d.extension.is_some() {
            ignored.push(format!(
                "{p}.extension (custom Python converters are not run; the built-in conversion is used)"
            ));
        }
        if d.name.trim().is_empty() {
            return Err(ConfigError::new(file, format!("{p}.name"), "empty"));
        }
        let mac = match &d.mac_address {
            Some(m) => Some(
                m.parse::<Mac>()
                    .map_err(|e| ConfigError::new(file, format!("{p}.MACAddress"), e))?,
            ),
            None => None,
        };
        let service = match &d.service_uuid {
            Some(s) => Some(uuid(file, format!("{p}.serviceUUID"), s)?),
            None => None,
        };
        let matcher = Matcher {
            mac,
            local_name: d.local_name.clone(),
            service,
        };
        if matcher.mac.is_none() && matcher.local_name.is_none() && matcher.service.is_none() {
            return Err(ConfigError::new(
                file,
                format!("{p}.MACAddress"),
                "missing; a device needs MACAddress, localName or serviceUUID",
            ));
        }
        let kind = d.kind.as_deref().map(str::trim);
        if let Some(k) = kind {
            if k != "bytes" && k != "hex" {
                return Err(ConfigError::new(
                    file,
                    format!("{p}.type"),
                    format!("{k:?}: expected bytes or hex"),
                ));
            }
        }
        let period =
            ms(file, format!("{p}.pollPeriod"), d.poll_period, 5000.0)?.max(MIN_POLL_PERIOD);
        let timeout =
            ms(file, format!("{p}.timeout"), d.timeout, 10_000.0)?.max(Duration::from_millis(100));
        let retry_delay = secs(
            file,
            format!("{p}.connectRetryInSeconds"),
            d.connect_retry_in_seconds,
            0.0,
        )?
        .max(Duration::from_secs(1));
        let wait_after = secs(
            file,
            format!("{p}.waitAfterConnectRetries"),
            d.wait_after_connect_retries,
            0.0,
        )?;
        let mut overrides = ReportOverrides::default();
        let mut unused = Vec::new();
        if let Some(v) = &d.report_strategy {
            overrides.device =
                tbgw::report::parse_strategy(v, file, &format!("{p}.reportStrategy"), &mut unused)?;
        }
        let mut char_items = Vec::new();
        let mut adv_items = Vec::new();
        for (section, list, attribute) in [
            ("telemetry", &d.telemetry, false),
            ("attributes", &d.attributes, true),
        ] {
            for (j, it) in list.iter().enumerate() {
                let kp = format!("{p}.{section}[{j}]");
                let item = Self::item(file, &kp, it, attribute, kind)?;
                if let Some(v) = &it.report_strategy {
                    if let Some(s) = tbgw::report::parse_strategy(
                        v,
                        file,
                        &format!("{kp}.reportStrategy"),
                        &mut unused,
                    )? {
                        overrides.keys.entry(item.key.clone()).or_insert(s);
                    }
                }
                if matches!(item.source, Source::Char { .. }) {
                    char_items.push(item);
                } else {
                    adv_items.push(item);
                }
            }
        }
        ignored.extend(unused);
        let mut updates = Vec::new();
        for (j, u) in d.attribute_updates.iter().enumerate() {
            updates.push((
                u.attribute_on_things_board.clone(),
                uuid(
                    file,
                    format!("{p}.attributeUpdates[{j}].characteristicUUID"),
                    &u.characteristic_uuid,
                )?,
            ));
        }
        let mut methods = Vec::new();
        for (j, r) in d.server_side_rpc.iter().enumerate() {
            let kp = format!("{p}.serverSideRpc[{j}]");
            let processing = match r.method_processing.trim().to_ascii_lowercase().as_str() {
                "read" => Processing::Read,
                "write" => Processing::Write,
                "scan" => Processing::Scan,
                other => {
                    return Err(ConfigError::new(
                        file,
                        format!("{kp}.methodProcessing"),
                        format!("{other:?}: expected read, write or scan"),
                    ))
                }
            };
            let u = match (&r.characteristic_uuid, processing) {
                (Some(c), _) => Some(uuid(file, format!("{kp}.characteristicUUID"), c)?),
                (None, Processing::Scan) => None,
                (None, _) => {
                    return Err(ConfigError::new(
                        file,
                        format!("{kp}.characteristicUUID"),
                        "missing",
                    ))
                }
            };
            methods.push(Method {
                name: r.method_rpc.clone(),
                with_response: r.with_response.unwrap_or(true),
                uuid: u,
                processing,
            });
        }
        let dev = Device {
            name: d.name.clone(),
            profile: d.device_type.clone(),
            matcher,
            period,
            timeout,
            connect_retry: d.connect_retry.unwrap_or(5).max(1),
            retry_delay,
            wait_after,
            show_map: d.show_map.unwrap_or(false),
            char_items,
            adv_items,
            updates,
            methods,
            report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
        };
        if dev.gatt() && dev.name.contains("${") {
            return Err(ConfigError::new(
                file,
                format!("{p}.name"),
                "`${…}` names are for advertisement-only devices; a device with GATT keys, attributeUpdates or serverSideRpc needs a fixed name",
            ));
        }
        Ok(dev)
    }
}

impl BleConnector {
    /// Matches and decodes one advertisement without a radio (see
    /// [`AdvertisementDecoder`](super::AdvertisementDecoder)).
    pub(crate) fn decode(&self, adv: &Advertisement) -> (Vec<DeviceData>, usize) {
        let ts = now_millis();
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for d in self.devices.iter().filter(|d| !d.adv_items.is_empty()) {
            if d.matcher.matches(adv) {
                let mut data = DeviceData::new(d.name_for(adv), d.profile.clone());
                decode_items(
                    d.adv_items.iter(),
                    Some(adv),
                    None,
                    ts,
                    &mut data,
                    &mut errors,
                );
                out.push(data);
            }
        }
        (out, errors.len())
    }
}

/// Decodes the items of one source into `data`; errors are `(key, reason)`.
pub(crate) fn decode_items<'a>(
    items: impl Iterator<Item = &'a Item>,
    adv: Option<&Advertisement>,
    chars: Option<&Notification>,
    ts: i64,
    data: &mut DeviceData,
    errors: &mut Vec<(String, String)>,
) {
    for it in items {
        let bytes: Option<&[u8]> = match (&it.source, adv, chars) {
            (Source::Char { uuid, .. }, _, Some(n)) if *uuid == n.uuid => Some(&n.value),
            (Source::Char { .. }, _, _) => continue,
            (Source::Manufacturer(id), Some(a), _) => match id {
                Some(id) => a.manufacturer_data.get(id).map(Vec::as_slice),
                None => a.manufacturer_data.values().next().map(Vec::as_slice),
            },
            (Source::ServiceData(id), Some(a), _) => match id {
                Some(id) => a.service_data.get(id).map(Vec::as_slice),
                None => a.service_data.values().next().map(Vec::as_slice),
            },
            (Source::LocalName, Some(a), _) => {
                if let Some(n) = &a.local_name {
                    push(data, it, ts, tbgw::model::Value::String(n.clone()), errors);
                }
                continue;
            }
            (Source::Rssi, Some(a), _) => {
                if let Some(r) = a.rssi {
                    push(data, it, ts, tbgw::model::Value::Int(i64::from(r)), errors);
                }
                continue;
            }
            (Source::TxPower, Some(a), _) => {
                if let Some(r) = a.tx_power {
                    push(data, it, ts, tbgw::model::Value::Int(i64::from(r)), errors);
                }
                continue;
            }
            _ => continue,
        };
        let Some(bytes) = bytes else {
            errors.push((
                it.key.clone(),
                "the advertisement carries no such data".into(),
            ));
            continue;
        };
        match it.expr.render(bytes, it.render) {
            Ok(v) => push(data, it, ts, v, errors),
            Err(e) => errors.push((it.key.clone(), e.to_string())),
        }
    }
}

fn push(
    data: &mut DeviceData,
    it: &Item,
    ts: i64,
    v: tbgw::model::Value,
    errors: &mut Vec<(String, String)>,
) {
    let v = match &it.compute {
        Some(c) => match uplink::compute(c, v) {
            Ok(v) => v,
            Err(e) => {
                errors.push((it.key.clone(), e.to_string()));
                return;
            }
        },
        None => v,
    };
    if it.attribute {
        data.push_attribute(it.key.clone(), v);
    } else {
        data.push_telemetry(ts, it.key.clone(), v);
    }
}

/// The latest advertisement of one ThingsBoard device.
#[derive(Debug)]
struct Target {
    device: usize,
    adv: Arc<Advertisement>,
    heard: Instant,
    next_send: Instant,
    announced: bool,
}

/// What the scanner shares with the reporter and the device tasks.
#[derive(Debug, Default)]
struct Heard {
    seen: HashMap<Mac, (Arc<Advertisement>, Instant)>,
    targets: HashMap<String, Target>,
}

type Shared = Arc<Mutex<Heard>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Heard> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stores an advertisement: remembered, and the latest of every device it matches. Returns
/// the names of matching devices that could not be added ([`TARGET_CAP`]).
fn hear(
    shared: &Shared,
    devices: &[Arc<Device>],
    adv_devices: &[usize],
    adv: Advertisement,
) -> Vec<String> {
    let now = Instant::now();
    let mut refused = Vec::new();
    let adv = Arc::new(adv);
    let mut h = lock(shared);
    for &i in adv_devices {
        let d = &devices[i];
        if d.matcher.matches(&adv) {
            let name = d.name_for(&adv);
            let full = h.targets.len() >= TARGET_CAP;
            match h.targets.get_mut(&name) {
                Some(t) => {
                    t.adv = adv.clone();
                    t.heard = now;
                    t.device = i;
                }
                None if full => refused.push(name),
                None => {
                    h.targets.insert(
                        name,
                        Target {
                            device: i,
                            adv: adv.clone(),
                            heard: now,
                            next_send: now,
                            announced: false,
                        },
                    );
                }
            }
        }
    }
    if h.seen.len() >= SEEN_CAP && !h.seen.contains_key(&adv.address) {
        let window = Duration::from_secs(60);
        h.seen.retain(|_, (_, t)| t.elapsed() < window);
        if h.seen.len() >= SEEN_CAP {
            h.seen.clear();
        }
    }
    h.seen.insert(adv.address, (adv, now));
    refused
}

struct Scanner {
    connector: Arc<str>,
    central: Arc<dyn BleCentral>,
    mode: ScanMode,
    refresh: Duration,
    devices: Arc<[Arc<Device>]>,
    adv_devices: Vec<usize>,
    shared: Shared,
    stats: ConnectorCounters,
}

impl Scanner {
    async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut once = LogOnce::new(LOG_ONCE_CAP);
        loop {
            let mut scan = match self.central.scan(self.mode, self.refresh).await {
                Ok(s) => s,
                Err(e) => {
                    self.stats.add_errors(1);
                    if once.first(&e.to_string()) {
                        tracing::warn!(connector = %self.connector, error = %e, "Cannot scan for BLE devices; trying again (each distinct error is logged once).");
                    }
                    if !backoff.wait(&cancel).await {
                        return;
                    }
                    continue;
                }
            };
            tracing::info!(connector = %self.connector, "Scanning for BLE devices.");
            once.clear();
            let started = Instant::now();
            loop {
                let r = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    r = scan.next() => r,
                };
                match r {
                    Ok(adv) => {
                        self.stats.add_messages_received(1);
                        for name in hear(&self.shared, &self.devices, &self.adv_devices, adv) {
                            self.stats.add_queue_dropped(1);
                            if once.first("target cap") {
                                tracing::warn!(connector = %self.connector, device = %name, cap = TARGET_CAP, "Too many advertising devices heard within one scan window; new ones are not reported until others fall silent (logged once; all are counted as dropped).");
                            }
                        }
                    }
                    Err(e) => {
                        self.stats.add_errors(1);
                        tracing::warn!(connector = %self.connector, error = %e, "BLE scanning stopped; starting again.");
                        break;
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                backoff.succeeded();
            }
            if !backoff.wait(&cancel).await {
                return;
            }
        }
    }
}

struct Reporter {
    connector: Arc<str>,
    devices: Arc<[Arc<Device>]>,
    window: Duration,
    show_map: bool,
    map_filter: Option<String>,
    shared: Shared,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    tick: Duration,
}

impl Reporter {
    async fn run(self, cancel: CancellationToken) {
        let mut once = LogOnce::new(LOG_ONCE_CAP);
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let map_at = Instant::now() + self.window;
        let mut map_done = !self.show_map;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = Instant::now();
            if !map_done && now >= map_at {
                map_done = true;
                self.log_map();
            }
            let mut due = Vec::new();
            let mut lost = Vec::new();
            {
                let mut h = lock(&self.shared);
                h.targets.retain(|name, t| {
                    if now.duration_since(t.heard) > self.window {
                        // A device with a GATT connection is announced by its own task
                        // (peripherals often stop advertising once connected).
                        if t.announced && !self.devices[t.device].persistent() {
                            lost.push(name.clone());
                        }
                        return false;
                    }
                    if now >= t.next_send {
                        let d = &self.devices[t.device];
                        // On the device's own grid, so a tick that comes a little early
                        // does not skip a period; after a stall, from now.
                        t.next_send = (t.next_send + d.period).max(now);
                        let announce = !t.announced && !d.persistent();
                        due.push((name.clone(), t.device, t.adv.clone(), announce));
                        t.announced = true;
                    }
                    true
                });
            }
            for name in lost {
                tracing::info!(connector = %self.connector, device = %name, "BLE device no longer heard.");
                let _ = self.uplink.disconnect_device(name).await;
            }
            let ts = now_millis();
            for (name, i, adv, announce) in due {
                let d = &self.devices[i];
                if announce {
                    let _ = self
                        .uplink
                        .connect_device(name.clone(), d.profile.clone())
                        .await;
                }
                let mut data = DeviceData::new(name.clone(), d.profile.clone());
                data.report = d.report.clone();
                let mut errors = Vec::new();
                decode_items(
                    d.adv_items.iter(),
                    Some(&adv),
                    None,
                    ts,
                    &mut data,
                    &mut errors,
                );
                for (key, why) in errors {
                    self.stats.add_convert_errors(1);
                    if once.first(&format!("{name}/{key}: {why}")) {
                        tracing::warn!(connector = %self.connector, device = %name, key = %key, error = %why, "Cannot convert advertisement data (each distinct error is logged once; all are counted).");
                    }
                }
                if !data.is_empty() && self.uplink.send(data).await.is_err() {
                    return;
                }
            }
        }
    }

    fn log_map(&self) {
        let h = lock(&self.shared);
        let mut found: Vec<(String, String)> = h
            .seen
            .values()
            .filter(|(a, _)| {
                self.map_filter
                    .as_ref()
                    .is_none_or(|n| a.local_name.as_deref() == Some(n.as_str()))
            })
            .map(|(a, _)| {
                (
                    a.address.to_string(),
                    a.local_name.clone().unwrap_or_default(),
                )
            })
            .collect();
        found.sort();
        let map: serde_json::Map<String, Json> = found
            .into_iter()
            .map(|(m, n)| (m, Json::String(n)))
            .collect();
        tracing::info!(connector = %self.connector, devices = %Json::Object(map), "BLE devices heard (MAC: name).");
    }
}

/// Why a device job failed.
fn rpc_err(e: BleError) -> RpcError {
    match e {
        BleError::Adapter(_)
        | BleError::Connect(_)
        | BleError::Disconnected(_)
        | BleError::Timeout(_) => RpcError::Unreachable(e.to_string()),
        BleError::NoCharacteristic(_) => RpcError::NotFound(e.to_string()),
        BleError::NotSupported(_) | BleError::Other(_) => RpcError::Device(e.to_string()),
    }
}

/// A read, a write or a GATT map for a device's task.
enum Job {
    Read(Uuid, oneshot::Sender<Result<Vec<u8>, RpcError>>),
    Write(Uuid, Vec<u8>, bool, oneshot::Sender<Result<(), RpcError>>),
    Map(oneshot::Sender<Result<Json, RpcError>>),
}

struct DeviceTask {
    connector: Arc<str>,
    d: Arc<Device>,
    central: Arc<dyn BleCentral>,
    shared: Shared,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    link: Option<Box<dyn BlePeripheral>>,
    services: Vec<GattService>,
    announced: bool,
    once: LogOnce,
    failures: u32,
    next_connect: Instant,
}

impl DeviceTask {
    fn warn_once(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self.once.first(&format!("{what}: {e}")) {
            tracing::warn!(connector = %self.connector, device = %self.d.name, error = %e, "{what} (each distinct error is logged once; all are counted)");
        }
    }

    /// The address to connect to: the configured MAC, or the latest device heard that matches.
    fn address(&self) -> Option<Mac> {
        if let Some(m) = self.d.matcher.mac {
            return Some(m);
        }
        let h = lock(&self.shared);
        h.seen
            .values()
            .filter(|(a, _)| self.d.matcher.matches(a))
            .max_by_key(|(_, t)| *t)
            .map(|(a, _)| a.address)
    }

    async fn open(&mut self) -> Result<Box<dyn BlePeripheral>, BleError> {
        let addr = self.address().ok_or_else(|| {
            BleError::Connect("no matching device has been heard yet".to_string())
        })?;
        tracing::debug!(connector = %self.connector, device = %self.d.name, address = %addr, "Connecting.");
        let link = timed(
            self.d.timeout * 2,
            "connecting",
            self.central.connect(addr, self.d.timeout),
        )
        .await?;
        match timed(self.d.timeout, "service discovery", link.discover()).await {
            Ok(s) => self.services = s,
            Err(e) => {
                link.disconnect().await;
                return Err(e);
            }
        }
        Ok(link)
    }

    /// Connects, subscribes to the `notify` characteristics and returns their stream.
    async fn connect(&mut self) -> Option<BoxStream<'static, Notification>> {
        let link = match self.open().await {
            Ok(l) => l,
            Err(e) => {
                self.stats.add_errors(1);
                self.failures = self.failures.saturating_add(1);
                let mut delay = self.d.retry_delay;
                if self.failures.is_multiple_of(self.d.connect_retry) {
                    delay += self.d.wait_after;
                }
                self.next_connect = Instant::now() + delay;
                self.warn_once("Cannot connect to the BLE device", &e);
                return None;
            }
        };
        let mut notify: Vec<Uuid> = Vec::new();
        for it in &self.d.char_items {
            if let Source::Char { uuid, notify: true } = it.source {
                if !notify.contains(&uuid) {
                    notify.push(uuid);
                }
            }
        }
        let stream = if notify.is_empty() {
            None
        } else {
            let s = match timed(self.d.timeout, "notifications", link.notifications()).await {
                Ok(s) => s,
                Err(e) => {
                    link.disconnect().await;
                    self.lost(&e).await;
                    return None;
                }
            };
            for u in notify {
                if let Err(e) = timed(self.d.timeout, "subscribing", link.subscribe(u)).await {
                    if e.is_per_characteristic() {
                        self.stats.add_errors(1);
                        self.warn_once("Cannot subscribe", &e);
                    } else {
                        link.disconnect().await;
                        self.lost(&e).await;
                        return None;
                    }
                }
            }
            Some(s)
        };
        tracing::info!(connector = %self.connector, device = %self.d.name, "Connected to the BLE device.");
        self.failures = 0;
        self.once.clear();
        self.link = Some(link);
        if self.d.show_map {
            let map = self.map().await;
            tracing::info!(connector = %self.connector, device = %self.d.name, map = %map, "GATT map.");
        }
        if !self.announced {
            self.announced = true;
            let _ = self
                .uplink
                .connect_device(self.d.name.clone(), self.d.profile.clone())
                .await;
        }
        stream.or_else(|| Some(futures_util::stream::pending().boxed()))
    }

    async fn lost(&mut self, e: &BleError) {
        if let Some(l) = self.link.take() {
            l.disconnect().await;
        }
        self.stats.add_errors(1);
        self.warn_once("Lost the BLE device", e);
        self.next_connect = Instant::now() + self.d.retry_delay;
        if self.announced {
            self.announced = false;
            let _ = self.uplink.disconnect_device(self.d.name.clone()).await;
        }
    }

    async fn poll(&mut self) {
        let ts = now_millis();
        let mut data = DeviceData::new(self.d.name.clone(), self.d.profile.clone());
        data.report = self.d.report.clone();
        let d = self.d.clone();
        let mut read: HashMap<Uuid, Vec<u8>> = HashMap::new();
        for it in &d.char_items {
            let Source::Char {
                uuid,
                notify: false,
            } = it.source
            else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = read.entry(uuid) {
                let Some(link) = self.link.as_ref() else {
                    return;
                };
                match timed(d.timeout, "reading", link.read(uuid)).await {
                    Ok(v) => {
                        self.stats.add_messages_received(1);
                        slot.insert(v);
                    }
                    Err(e) if e.is_per_characteristic() => {
                        self.stats.add_errors(1);
                        self.warn_once(&format!("Cannot read {}", it.key), &e);
                        continue;
                    }
                    Err(e) => {
                        self.lost(&e).await;
                        return;
                    }
                }
            }
            let n = Notification {
                uuid,
                value: read.get(&uuid).cloned().unwrap_or_default(),
            };
            let mut errors = Vec::new();
            decode_items(
                std::iter::once(it),
                None,
                Some(&n),
                ts,
                &mut data,
                &mut errors,
            );
            self.convert_errors(errors);
        }
        if !data.is_empty() {
            let _ = self.uplink.send(data).await;
        }
    }

    fn convert_errors(&mut self, errors: Vec<(String, String)>) {
        for (key, why) in errors {
            self.stats.add_convert_errors(1);
            self.warn_once(&format!("Cannot convert {key}"), &why);
        }
    }

    async fn notified(&mut self, n: Notification) {
        self.stats.add_messages_received(1);
        let d = self.d.clone();
        let items = d.char_items.iter().filter(
            |it| matches!(it.source, Source::Char { uuid, notify: true } if uuid == n.uuid),
        );
        let mut data = DeviceData::new(d.name.clone(), d.profile.clone());
        data.report = d.report.clone();
        let mut errors = Vec::new();
        decode_items(items, None, Some(&n), now_millis(), &mut data, &mut errors);
        self.convert_errors(errors);
        if !data.is_empty() {
            let _ = self.uplink.send(data).await;
        }
    }

    async fn map(&mut self) -> Json {
        let mut services = Vec::new();
        for s in self.services.clone() {
            let mut chars = Vec::new();
            for c in &s.characteristics {
                let value = if c.properties.iter().any(|p| p == "read") {
                    match self.link.as_ref() {
                        Some(l) => match timed(self.d.timeout, "reading", l.read(c.uuid)).await {
                            Ok(v) => json!(uplink::hex(&v)),
                            Err(e) => json!({ "error": e.to_string() }),
                        },
                        None => Json::Null,
                    }
                } else {
                    Json::Null
                };
                chars.push(json!({
                    "uuid": c.uuid.to_string(),
                    "properties": c.properties,
                    "value": value,
                }));
            }
            services.push(json!({ "uuid": s.uuid.to_string(), "characteristics": chars }));
        }
        json!({ "device": self.d.name, "services": services })
    }

    /// Runs a job on the connection, connecting first (and closing after) for a device that
    /// keeps no connection.
    async fn job(&mut self, job: Job) {
        let temporary = self.link.is_none() && !self.d.persistent();
        if temporary {
            match self.open().await {
                Ok(l) => self.link = Some(l),
                Err(e) => {
                    self.stats.add_errors(1);
                    self.warn_once("Cannot connect to the BLE device", &e);
                    let e = rpc_err(e);
                    match job {
                        Job::Read(_, tx) => drop(tx.send(Err(e))),
                        Job::Write(_, _, _, tx) => drop(tx.send(Err(e))),
                        Job::Map(tx) => drop(tx.send(Err(e))),
                    }
                    return;
                }
            }
        }
        let offline =
            || RpcError::Unreachable(format!("the BLE device {} is not connected", self.d.name));
        match job {
            Job::Read(u, tx) => {
                let r = match self.link.as_ref() {
                    None => Err(offline()),
                    Some(l) => match timed(self.d.timeout, "reading", l.read(u)).await {
                        Ok(v) => {
                            self.stats.add_messages_received(1);
                            Ok(v)
                        }
                        Err(e) => {
                            if !e.is_per_characteristic() && !temporary {
                                self.lost(&e).await;
                            }
                            Err(rpc_err(e))
                        }
                    },
                };
                let _ = tx.send(r);
            }
            Job::Write(u, data, with_response, tx) => {
                let r = match self.link.as_ref() {
                    None => Err(offline()),
                    Some(l) => {
                        match timed(self.d.timeout, "writing", l.write(u, &data, with_response))
                            .await
                        {
                            Ok(()) => Ok(()),
                            Err(e) => {
                                if !e.is_per_characteristic() && !temporary {
                                    self.lost(&e).await;
                                }
                                Err(rpc_err(e))
                            }
                        }
                    }
                };
                let _ = tx.send(r);
            }
            Job::Map(tx) => {
                let r = if self.link.is_some() {
                    Ok(self.map().await)
                } else {
                    Err(offline())
                };
                let _ = tx.send(r);
            }
        }
        if temporary {
            if let Some(l) = self.link.take() {
                l.disconnect().await;
            }
        }
    }

    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.d.period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut notes: Option<BoxStream<'static, Notification>> = None;
        let persistent = self.d.persistent();
        let polls = self
            .d
            .char_items
            .iter()
            .any(|i| matches!(i.source, Source::Char { notify: false, .. }));
        loop {
            let connecting = persistent && self.link.is_none();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                j = jobs.recv() => match j {
                    Some(j) => {
                        self.job(j).await;
                        if self.link.is_none() {
                            notes = None;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(self.next_connect), if connecting => {
                    notes = self.connect().await;
                }
                n = next_note(&mut notes), if notes.is_some() => match n {
                    Some(n) => self.notified(n).await,
                    None => {
                        notes = None;
                        self.lost(&BleError::Disconnected("the notification stream ended".into())).await;
                    }
                },
                _ = ticker.tick(), if self.link.is_some() && persistent => {
                    let alive = match self.link.as_ref() {
                        Some(l) => l.is_connected().await,
                        None => false,
                    };
                    if !alive {
                        notes = None;
                        self.lost(&BleError::Disconnected("the link is down".into())).await;
                    } else if polls {
                        self.poll().await;
                        if self.link.is_none() {
                            notes = None;
                        }
                    }
                }
            }
        }
        if let Some(l) = self.link.take() {
            l.disconnect().await;
        }
    }
}

/// A radio operation with the device's `timeout` (the radio layer has its own; this one keeps a
/// stuck implementation from holding the device's task forever).
async fn timed<T>(
    d: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, BleError>>,
) -> Result<T, BleError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r,
        Err(_) => Err(BleError::Timeout(format!("{what} took longer than {d:?}"))),
    }
}

async fn next_note(s: &mut Option<BoxStream<'static, Notification>>) -> Option<Notification> {
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// A device's job queue.
struct Handle {
    d: Arc<Device>,
    tx: mpsc::Sender<Job>,
}

impl Handle {
    async fn read(&self, u: Uuid) -> Result<Vec<u8>, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Job::Read(u, tx))
            .map_err(|_| RpcError::Unreachable(format!("device {} is busy", self.d.name)))?;
        rx.await
            .map_err(|_| RpcError::Unreachable("the connector is stopping".into()))?
    }

    async fn write(&self, u: Uuid, data: Vec<u8>, with_response: bool) -> Result<(), RpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Job::Write(u, data, with_response, tx))
            .map_err(|_| RpcError::Unreachable(format!("device {} is busy", self.d.name)))?;
        rx.await
            .map_err(|_| RpcError::Unreachable("the connector is stopping".into()))?
    }

    async fn map(&self) -> Result<Json, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Job::Map(tx))
            .map_err(|_| RpcError::Unreachable(format!("device {} is busy", self.d.name)))?;
        rx.await
            .map_err(|_| RpcError::Unreachable("the connector is stopping".into()))?
    }
}

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
        for (_, uuid) in h.d.updates.iter().filter(|(k, _)| k == key) {
            let bytes = py_str(value).into_bytes();
            match h.write(*uuid, bytes, true).await {
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

async fn run_method(
    h: &Handle,
    processing: Processing,
    uuid: Option<Uuid>,
    with_response: bool,
    value: Option<String>,
) -> Result<Option<Json>, RpcError> {
    let need = || RpcError::BadRequest("characteristicUUID is missing".into());
    let result = match processing {
        Processing::Read => {
            let bytes = h.read(uuid.ok_or_else(need)?).await?;
            if bytes.is_empty() {
                Json::Null
            } else {
                let text = String::from_utf8(bytes).map_err(|e| {
                    RpcError::Device(format!(
                        "the value is not UTF-8 text ({}): {}",
                        e.utf8_error(),
                        uplink::hex(e.as_bytes())
                    ))
                })?;
                as_reply(text)
            }
        }
        Processing::Write => {
            let v = value.unwrap_or_else(|| "None".into());
            h.write(uuid.ok_or_else(need)?, v.into_bytes(), true)
                .await?;
            Json::String("Ok".into())
        }
        Processing::Scan => h.map().await?,
    };
    Ok(with_response.then_some(result))
}

async fn handle_rpc(handles: &[Handle], rpc: RpcRequest) {
    let RpcRequest {
        device,
        method,
        params,
        responder,
        ..
    } = rpc;
    let Some(name) = device else {
        return responder.err(RpcError::NotFound(format!(
            "the BLE connector has no connector RPC {method}"
        )));
    };
    let Some(h) = handles.iter().find(|h| h.d.name == name) else {
        return responder.err(RpcError::NotFound(format!("no BLE device `{name}`")));
    };
    let r = if method == "get" || method == "set" {
        let p = reserved_params(&params);
        let Some(u) = p.get("characteristicUUID").map(String::as_str) else {
            return responder.err(RpcError::BadRequest(
                "params: characteristicUUID=… is missing".into(),
            ));
        };
        let Some(u) = parse_uuid(u) else {
            return responder.err(RpcError::BadRequest(format!("params: {u:?} is not a UUID")));
        };
        if method == "set" {
            let Some(v) = p.get("value").cloned() else {
                return responder.err(RpcError::BadRequest("params: value=… is missing".into()));
            };
            run_method(h, Processing::Write, Some(u), true, Some(v)).await
        } else {
            run_method(h, Processing::Read, Some(u), true, None).await
        }
    } else {
        let Some(m) = h.d.methods.iter().find(|m| m.name == method) else {
            return responder.err(RpcError::NotFound(format!(
                "RPC method {method} is not configured for {name}"
            )));
        };
        run_method(
            h,
            m.processing,
            m.uuid,
            m.with_response,
            Some(py_str(&params)),
        )
        .await
    };
    match r {
        Ok(Some(body)) => responder.verbatim(body),
        Ok(None) => responder.ok(Json::Null),
        Err(e) => responder.err(e),
    }
}

#[async_trait]
impl Connector for BleConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let cancel = cx.cancellation().clone();
        let name: Arc<str> = Arc::from(self.name.as_str());
        let devices: Arc<[Arc<Device>]> = self.devices.clone().into();
        let shared: Shared = Arc::default();
        let adv_devices: Vec<usize> = devices
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.adv_items.is_empty())
            .map(|(i, _)| i)
            .collect();
        let tick = adv_devices
            .iter()
            .map(|&i| devices[i].period)
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        let scanner = Scanner {
            connector: name.clone(),
            central: self.central.clone(),
            mode: self.mode,
            // Every device still advertising is heard at least twice per window.
            refresh: (self.window / 2).max(Duration::from_secs(1)),
            devices: devices.clone(),
            adv_devices,
            shared: shared.clone(),
            stats: cx.stats().clone(),
        };
        let c = cancel.clone();
        cx.spawn("scanner", async move {
            scanner.run(c).await;
            Ok(())
        });
        let reporter = Reporter {
            connector: name.clone(),
            devices: devices.clone(),
            window: self.window,
            show_map: self.show_map,
            map_filter: self.map_filter.clone(),
            shared: shared.clone(),
            uplink: cx.uplink().clone(),
            stats: cx.stats().clone(),
            tick,
        };
        let c = cancel.clone();
        cx.spawn("advertisement reporter", async move {
            reporter.run(c).await;
            Ok(())
        });
        let mut handles = Vec::new();
        for d in devices.iter().filter(|d| d.gatt()) {
            let (tx, rx) = mpsc::channel(JOB_QUEUE);
            let task = DeviceTask {
                connector: name.clone(),
                d: d.clone(),
                central: self.central.clone(),
                shared: shared.clone(),
                uplink: cx.uplink().clone(),
                stats: cx.stats().clone(),
                link: None,
                services: Vec::new(),
                announced: false,
                once: LogOnce::new(LOG_ONCE_CAP),
                failures: 0,
                next_connect: Instant::now(),
            };
            let c = cancel.clone();
            cx.spawn(format!("device {}", d.name), async move {
                task.run(rx, c).await;
                Ok(())
            });
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
        cx.finish_tasks(Duration::from_secs(2)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_uuids_expand_to_the_bluetooth_base() {
        assert_eq!(
            parse_uuid("2A00").unwrap().to_string(),
            "00002a00-0000-1000-8000-00805f9b34fb"
        );
        assert_eq!(
            parse_uuid("0x2a19"),
            parse_uuid("00002A19-0000-1000-8000-00805F9B34FB")
        );
        assert!(parse_uuid("2A0").is_none());
    }
}
