//! The connector's configuration, validated into routes (frames → values) and downlink
//! descriptions (values → frames); [`Decoder::decode`] is the pure uplink path (no I/O, no
//! clock), shared by the connector, the fuzz target and the benchmark.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json};
use tbgw::config::ConfigError;
use tbgw::eval::{Expr, Val};
use tbgw::model::DeviceData;
use tbgw::report::ReportOverrides;

use super::bus::{id_key, CanFilter, CanFrame, MAX_EXTENDED_ID, MAX_STANDARD_ID};
use super::codec::{from_hex, Command, Encoder, Encoding, Order, Slice};
use super::config::{CanConnectorConfig, ValueConfig};
use super::{dbc, j1939};

/// Default `reconnectPeriod`, seconds (upstream's).
pub const DEFAULT_RECONNECT_PERIOD: f64 = 30.0;
/// Default polling `period`, seconds (upstream's).
pub const DEFAULT_POLL_PERIOD: f64 = 1.0;
/// Shortest polling period.
pub const MIN_POLL_PERIOD: Duration = Duration::from_millis(1);

/// Where a value comes from in a frame.
#[derive(Debug, Clone)]
enum Source {
    Slice(Slice),
    Signal {
        signal: dbc::Signal,
        /// The message's multiplexer (start bit, size, Intel order), for multiplexed signals.
        switch: Option<(u32, u32, bool)>,
    },
}

/// One configured value of one device, reached by a frame's id.
#[derive(Debug, Clone)]
struct Target {
    device: usize,
    key: String,
    attribute: bool,
    command: Option<Command>,
    source: Source,
    expr: Option<Expr>,
}

/// A device's identity in ThingsBoard.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Name.
    pub name: String,
    /// Profile.
    pub profile: String,
    /// Report strategy overrides.
    pub report: Option<Arc<ReportOverrides>>,
    /// Units of DBC signals, reported as `<key>_unit` client attributes.
    pub units: Vec<(String, String)>,
}

/// A periodic or one-shot request frame.
#[derive(Debug, Clone)]
pub struct Poll {
    /// The key it is for (logs).
    pub key: String,
    /// The frame.
    pub frame: CanFrame,
    /// Sent once per bus connection.
    pub once: bool,
    /// Period of an `always` poll.
    pub period: Duration,
}

/// A frame description for the downlink.
#[derive(Debug, Clone)]
pub struct Down {
    /// Arbitration id and extended flag; `None` when not configured (an error at send time).
    pub node: Option<(u32, bool)>,
    /// CAN FD frame.
    pub fd: bool,
    /// Bit rate switch.
    pub brs: bool,
    /// The data.
    pub encoder: Encoder,
}

/// A configured RPC method.
#[derive(Debug, Clone)]
pub struct Method {
    /// The validated description.
    pub down: Down,
    /// The entry as written, for `overrideRpcConfig` merging.
    pub raw: Map<String, Json>,
}

/// A device's downlink configuration.
#[derive(Debug, Clone, Default)]
pub struct DeviceDown {
    /// `attributeUpdates` by attribute name.
    pub updates: Vec<(String, Down)>,
    /// `serverSideRpc` by method.
    pub methods: HashMap<String, Method>,
    /// `enableUnknownRpc`.
    pub unknown_rpc: bool,
    /// `overrideRpcConfig` (always on with `enableUnknownRpc`, as upstream).
    pub override_rpc: bool,
}

/// The validated connector file.
#[derive(Debug, Clone)]
pub struct Plan {
    /// python-can interface name (`socketcan`).
    pub interface: String,
    /// Network interface.
    pub channel: String,
    /// `backend.fd`.
    pub fd: bool,
    /// `reconnect`.
    pub reconnect: bool,
    /// `reconnectPeriod`.
    pub reconnect_period: Duration,
    /// `reconnectCount`.
    pub reconnect_count: Option<u64>,
    /// Frames to values.
    pub decoder: Decoder,
    /// Requests.
    pub polls: Vec<Poll>,
    /// Downlink, per device (same order as `decoder.devices`).
    pub down: Vec<DeviceDown>,
}

/// Frames to device data.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    /// The devices.
    pub devices: Vec<DeviceInfo>,
    exact: HashMap<u32, Vec<Target>>,
    pgn: HashMap<u32, Vec<(Option<u8>, Target)>>,
}

/// One failed value of a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// Device name.
    pub device: String,
    /// Key.
    pub key: String,
    /// Why.
    pub reason: String,
}

impl Decoder {
    /// Receive filters covering every route (empty: no routes at all).
    pub fn filters(&self) -> Vec<CanFilter> {
        let mut v: Vec<CanFilter> = self
            .exact
            .keys()
            .map(|&k| {
                let extended = k & 0x8000_0000 != 0;
                CanFilter {
                    id: k & MAX_EXTENDED_ID,
                    mask: if extended {
                        MAX_EXTENDED_ID
                    } else {
                        MAX_STANDARD_ID
                    },
                    extended,
                }
            })
            .collect();
        for (pgn, list) in &self.pgn {
            let sources: Vec<Option<u8>> = list.iter().map(|(s, _)| *s).collect();
            if sources.iter().any(Option::is_none) {
                v.push(j1939::filter(*pgn, None));
            } else {
                let mut s = sources;
                s.sort_unstable();
                s.dedup();
                v.extend(s.into_iter().map(|sa| j1939::filter(*pgn, sa)));
            }
        }
        if !self.pgn.is_empty() {
            // Multi-packet broadcasts (the connector reassembles them).
            v.push(j1939::filter(j1939::PGN_TP_CM, None));
            v.push(j1939::filter(j1939::PGN_TP_DT, None));
        }
        v.sort_by_key(|f| (f.extended, f.id, f.mask));
        v
    }

    /// Does the configuration address J1939 PGNs (so multi-packet broadcasts are
    /// reassembled)?
    pub fn has_pgns(&self) -> bool {
        !self.pgn.is_empty()
    }

    /// Does any route want this frame?
    pub fn wants(&self, frame: &CanFrame) -> bool {
        self.exact.contains_key(&frame.key())
            || (frame.extended && self.pgn.contains_key(&j1939::pgn_of(frame.id)))
    }

    /// Converts one frame: one `DeviceData` per device with a value in it (appended to
    /// `out`), failed values appended to `errors`.
    pub fn decode(
        &self,
        frame: &CanFrame,
        ts: i64,
        out: &mut Vec<DeviceData>,
        errors: &mut Vec<DecodeError>,
    ) {
        let first = out.len();
        if let Some(targets) = self.exact.get(&frame.key()) {
            for t in targets {
                self.apply(t, frame, ts, first, out, errors);
            }
        }
        if frame.extended && !self.pgn.is_empty() {
            let id = j1939::J1939Id::from_id(frame.id);
            if let Some(list) = self.pgn.get(&id.pgn) {
                for (sa, t) in list {
                    if sa.is_none_or(|s| s == id.source) {
                        self.apply(t, frame, ts, first, out, errors);
                    }
                }
            }
        }
    }

    fn apply(
        &self,
        t: &Target,
        frame: &CanFrame,
        ts: i64,
        first: usize,
        out: &mut Vec<DeviceData>,
        errors: &mut Vec<DecodeError>,
    ) {
        if t.command.is_some_and(|c| !c.matches(&frame.data)) {
            return;
        }
        let Some(dev) = self.devices.get(t.device) else {
            return;
        };
        let fail = |errors: &mut Vec<DecodeError>, reason: String| {
            errors.push(DecodeError {
                device: dev.name.clone(),
                key: t.key.clone(),
                reason,
            })
        };
        let value = match &t.source {
            Source::Slice(s) => s.decode(&frame.data),
            Source::Signal { signal, switch } => {
                if let (Some(want), Some((start, size, le))) = (signal.mux, switch) {
                    match dbc::raw_bits(&frame.data, *start, *size, *le) {
                        Some(v) if v == want => {}
                        // Another page of the multiplexed message.
                        Some(_) => return,
                        None => return fail(errors, "the multiplexer is beyond the frame".into()),
                    }
                }
                signal.decode(&frame.data)
            }
        };
        let value = match value {
            Ok(v) => v,
            Err(e) => return fail(errors, e),
        };
        let value = match &t.expr {
            None => value,
            Some(e) => {
                let data = &frame.data;
                let lookup = |name: &str| match name {
                    "value" => Some(value.clone()),
                    "can_data" => Some(Val::List(
                        data.iter().map(|&b| Val::Int(i64::from(b))).collect(),
                    )),
                    _ => None,
                };
                match e.eval(&lookup) {
                    Ok(v) => v,
                    Err(err) => return fail(errors, format!("expression {:?}: {err}", e.source())),
                }
            }
        };
        // An expression that gives None reports nothing.
        let Some(value) = value.into_value() else {
            return;
        };
        let data = match out[first..].iter_mut().find(|d| d.device_name == dev.name) {
            Some(d) => d,
            None => {
                let mut d = DeviceData::new(dev.name.clone(), dev.profile.clone());
                d.report = dev.report.clone();
                out.push(d);
                // Invariant: just pushed.
                out.last_mut().expect("pushed")
            }
        };
        if t.attribute {
            data.push_attribute(t.key.clone(), value);
        } else {
            data.push_telemetry(ts, t.key.clone(), value);
        }
    }
}

/// A number of seconds in `0 < s <= 1 day`.
fn seconds(
    file: &Path,
    key: String,
    v: Option<f64>,
    default: f64,
) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if s.is_finite() && s > 0.0 && s <= 86_400.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(ConfigError::new(
            file,
            key,
            format!("{s} is not a number of seconds (0 < s <= 86400)"),
        ))
    }
}

/// An arbitration id: a number, or text in decimal or `0x…`.
pub fn node_id(v: &Json, extended: bool) -> Result<u32, String> {
    let n = match v {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => {
            let t = s.trim();
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => t.parse().ok(),
            }
        }
        _ => None,
    }
    .ok_or_else(|| format!("{v} is not an arbitration id"))?;
    let max = if extended {
        MAX_EXTENDED_ID
    } else {
        MAX_STANDARD_ID
    };
    u32::try_from(n).ok().filter(|&n| n <= max).ok_or_else(|| {
        format!(
            "{n} does not fit {} (0 ..= {max:#x}){}",
            if extended { "29 bits" } else { "11 bits" },
            if extended {
                ""
            } else {
                "; set isExtendedId for a 29-bit id"
            }
        )
    })
}

fn get_bool(o: &Map<String, Json>, k: &str) -> Result<bool, String> {
    match o.get(k) {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("{k}: {other} is not true or false")),
    }
}

fn get_str<'a>(o: &'a Map<String, Json>, k: &str) -> Result<Option<&'a str>, String> {
    match o.get(k) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.is_empty() => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{k}: {other} is not text")),
    }
}

/// A downlink frame description from an `attributeUpdates`/`serverSideRpc` entry, or from
/// an RPC's merged params. `Err((key, reason))`. A `dataInHex` that is not hex is kept as an
/// error the request answers (and pushed to `warnings`).
pub fn down_from(
    o: &Map<String, Json>,
    warnings: &mut Vec<(String, String)>,
) -> Result<Down, (String, String)> {
    fn e(k: &str) -> impl Fn(String) -> (String, String) + '_ {
        move |why: String| (k.to_string(), why)
    }
    let extended = get_bool(o, "isExtendedId").map_err(e("isExtendedId"))?;
    let node = match o.get("nodeId") {
        None | Some(Json::Null) => None,
        Some(v) => Some((node_id(v, extended).map_err(e("nodeId"))?, extended)),
    };
    let fd = get_bool(o, "isFd").map_err(e("isFd"))?;
    let brs = get_bool(o, "bitrateSwitch").map_err(e("bitrateSwitch"))?;
    let in_hex = get_str(o, "dataInHex").map_err(e("dataInHex"))?.map(|h| {
        let r = from_hex(h);
        if let Err(why) = &r {
            warnings.push(("dataInHex".into(), why.clone()));
        }
        r
    });
    let expr = match get_str(o, "dataExpression").map_err(e("dataExpression"))? {
        Some(s) => {
            Some(Expr::parse(s).map_err(|err| ("dataExpression".to_string(), err.to_string()))?)
        }
        None => None,
    };
    let length = match o.get("dataLength") {
        None | Some(Json::Null) => 1,
        Some(v) => v.as_u64().filter(|n| (1..=8).contains(n)).ok_or_else(|| {
            (
                "dataLength".to_string(),
                format!("{v}: expected 1 ..= 8 bytes"),
            )
        })? as usize,
    };
    let order = match get_str(o, "dataByteorder").map_err(e("dataByteorder"))? {
        Some("big") => Some(Order::Big),
        Some("little") => Some(Order::Little),
        Some(other) => {
            return Err((
                "dataByteorder".into(),
                format!("{other:?}: expected big or little"),
            ))
        }
        None => None,
    };
    let encoding = match get_str(o, "dataEncoding").map_err(e("dataEncoding"))? {
        Some(s) => Some(Encoding::parse(s).map_err(e("dataEncoding"))?),
        None => None,
    };
    let hex_key = |k: &str| -> Result<Vec<u8>, (String, String)> {
        match get_str(o, k).map_err(e(k))? {
            Some(h) => from_hex(h).map_err(e(k)),
            None => Ok(Vec::new()),
        }
    };
    Ok(Down {
        node,
        fd,
        brs,
        encoder: Encoder {
            in_hex,
            expr,
            length,
            order,
            signed: get_bool(o, "dataSigned").map_err(e("dataSigned"))?,
            encoding,
            before: hex_key("dataBefore")?,
            after: hex_key("dataAfter")?,
        },
    })
}

/// Upstream's `overrideRpcConfig` merge: each option from the params if given there, else
/// from the configured entry, else upstream's default.
pub fn merge_rpc(params: &Json, config: Option<&Map<String, Json>>) -> Map<String, Json> {
    let empty = Map::new();
    let p = params.as_object().unwrap_or(&empty);
    let Some(c) = config else {
        return p.clone();
    };
    let options: [(&str, Option<Json>); 13] = [
        ("nodeId", None),
        ("isExtendedId", Some(Json::Bool(false))),
        ("isFd", Some(Json::Bool(false))),
        ("bitrateSwitch", Some(Json::Bool(false))),
        ("response", Some(Json::Bool(true))),
        ("dataLength", Some(Json::from(1))),
        ("dataByteorder", Some(Json::from("big"))),
        ("dataSigned", Some(Json::Bool(false))),
        ("dataExpression", None),
        ("dataEncoding", Some(Json::from("ascii"))),
        ("dataBefore", None),
        ("dataAfter", None),
        ("dataInHex", None),
    ];
    let mut out = Map::new();
    for (k, default) in options {
        if let Some(v) = p.get(k) {
            out.insert(k.into(), v.clone());
        } else if let Some(v) = c.get(k).cloned().or(default) {
            out.insert(k.into(), v);
        }
    }
    out
}

fn message_ref(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn find_message<'a>(msgs: &'a [dbc::Message], r: &Json) -> Option<&'a dbc::Message> {
    match r {
        Json::String(s) => msgs.iter().find(|m| &m.name == s).or_else(|| {
            node_id(r, true)
                .ok()
                .and_then(|id| msgs.iter().find(|m| m.id == id))
        }),
        other => node_id(other, true)
            .ok()
            .and_then(|id| msgs.iter().find(|m| m.id == id)),
    }
}

struct Builder<'a> {
    file: &'a Path,
    ignored: &'a mut Vec<String>,
    decoder: Decoder,
    polls: Vec<Poll>,
}

impl Builder<'_> {
    fn route(&mut self, key: RouteKey, t: Target) {
        match key {
            RouteKey::Exact(k) => self.decoder.exact.entry(k).or_default().push(t),
            RouteKey::Pgn(pgn, sa) => self.decoder.pgn.entry(pgn).or_default().push((sa, t)),
        }
    }

    fn value(
        &mut self,
        dev: usize,
        p: &str,
        v: &ValueConfig,
        attribute: bool,
        msgs: &[dbc::Message],
        j1939_sa: u8,
    ) -> Result<(), ConfigError> {
        let file = self.file;
        let err = |k: &str, why: String| ConfigError::new(file, format!("{p}.{k}"), why);
        if v.key.trim().is_empty() {
            return Err(err("key", "empty".into()));
        }
        // The value's source.
        let (source, from_dbc) = match (&v.signal, &v.value) {
            (Some(name), _) => {
                if msgs.is_empty() {
                    return Err(err(
                        "signal",
                        format!("{name:?}: the device has no dbcFile"),
                    ));
                }
                let m = match &v.message {
                    Some(r) => find_message(msgs, r).ok_or_else(|| {
                        err(
                            "message",
                            format!("no message {} in the DBC file", message_ref(r)),
                        )
                    })?,
                    None => {
                        let mut found = msgs
                            .iter()
                            .filter(|m| m.signals.iter().any(|s| &s.name == name));
                        let first = found.next().ok_or_else(|| {
                            err("signal", format!("no signal {name:?} in the DBC file"))
                        })?;
                        if found.next().is_some() {
                            return Err(err(
                                "signal",
                                format!("{name:?} is in several messages; name one with `message`"),
                            ));
                        }
                        first
                    }
                };
                let signal = m.signals.iter().find(|s| &s.name == name).ok_or_else(|| {
                    err(
                        "signal",
                        format!("no signal {name:?} in message {}", m.name),
                    )
                })?;
                let switch = m
                    .signals
                    .iter()
                    .find(|s| s.is_mux)
                    .map(|s| (s.start_bit, s.size, s.little_endian));
                (
                    Source::Signal {
                        signal: signal.clone(),
                        switch,
                    },
                    Some((m.id, m.extended, signal.unit.clone())),
                )
            }
            (None, Some(val)) => (
                Source::Slice(Slice::parse(val).map_err(|e| err("value", e))?),
                None,
            ),
            (None, None) => {
                return Err(err("value", "missing (or `signal` with a dbcFile)".into()))
            }
        };
        let key = match (v.pgn, &v.node_id, &from_dbc) {
            (Some(pgn), _, _) => {
                if pgn > j1939::MAX_PGN {
                    return Err(err(
                        "pgn",
                        format!("{pgn} is not a PGN (0 ..= {})", j1939::MAX_PGN),
                    ));
                }
                RouteKey::Pgn(pgn, v.source_address)
            }
            (None, Some(n), _) => RouteKey::Exact(id_key(
                node_id(n, v.is_extended_id).map_err(|e| err("nodeId", e))?,
                v.is_extended_id,
            )),
            (None, None, Some((id, ext, _))) => RouteKey::Exact(id_key(*id, *ext)),
            (None, None, None) => {
                return Err(err(
                    "nodeId",
                    "missing (or `pgn`, or `signal` with a dbcFile)".into(),
                ))
            }
        };
        if let Some((_, _, unit)) = &from_dbc {
            if !unit.is_empty() {
                self.decoder.devices[dev]
                    .units
                    .push((v.key.clone(), unit.clone()));
            }
        }
        let command = match &v.command {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) if s.is_empty() => None,
            Some(c) => Some(Command::parse(c).map_err(|e| err("command", e))?),
        };
        let expr = match v.expression.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(Expr::parse(s).map_err(|e| err("expression", e.to_string()))?),
            None => None,
        };
        if let Some(pc) = &v.polling {
            let once = match pc.kind.as_deref().unwrap_or("always") {
                "always" => false,
                "once" => true,
                other => {
                    return Err(err(
                        "polling.type",
                        format!("{other:?}: expected always or once"),
                    ))
                }
            };
            let period = seconds(
                file,
                format!("{p}.polling.period"),
                pc.period,
                DEFAULT_POLL_PERIOD,
            )?
            .max(MIN_POLL_PERIOD);
            let frame = match (&pc.data_in_hex, key) {
                (Some(h), _) => from_hex(h).and_then(|data| {
                    let (id, ext) = match key {
                        RouteKey::Exact(k) => (k & MAX_EXTENDED_ID, k & 0x8000_0000 != 0),
                        RouteKey::Pgn(pgn, sa) => (
                            j1939::J1939Id {
                                priority: 6,
                                pgn,
                                source: j1939_sa,
                                destination: sa,
                            }
                            .to_id(),
                            true,
                        ),
                    };
                    CanFrame::new(id, ext, v.is_fd, v.bitrate_switch, data)
                        .map_err(|e| e.to_string())
                }),
                (None, RouteKey::Pgn(pgn, sa)) => Ok(j1939::request(pgn, j1939_sa, sa)),
                (None, RouteKey::Exact(_)) => Err("dataInHex is missing".to_string()),
            };
            match frame {
                Ok(frame) => self.polls.push(Poll {
                    key: v.key.clone(),
                    frame,
                    once,
                    period,
                }),
                // Upstream drops the polling of such an entry with a warning; so does tbgw.
                Err(why) => self.ignored.push(format!(
                    "{p}.polling ({why}; this key is not polled, as upstream)"
                )),
            }
        }
        self.route(
            key,
            Target {
                device: dev,
                key: v.key.clone(),
                attribute,
                command,
                source,
                expr,
            },
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum RouteKey {
    Exact(u32),
    Pgn(u32, Option<u8>),
}

/// Validates the connector file (DBC files are read from disk).
pub fn plan(
    file: &Path,
    cfg: &CanConnectorConfig,
    ignored: &mut Vec<String>,
) -> Result<Plan, ConfigError> {
    plan_with(file, cfg, ignored, &dbc::load)
}

/// [`plan`] with DBC files read by `load_dbc` (given the resolved path): for the fuzz target
/// and benchmarks, which keep their DBC text in memory.
pub fn plan_with(
    file: &Path,
    cfg: &CanConnectorConfig,
    ignored: &mut Vec<String>,
    load_dbc: &dyn Fn(&Path) -> Result<Vec<dbc::Message>, String>,
) -> Result<Plan, ConfigError> {
    // python-can 3's names of the same backend are accepted too.
    if !matches!(
        cfg.interface.as_str(),
        "socketcan" | "socketcan_native" | "socketcan_ctypes"
    ) {
        return Err(ConfigError::new(
            file,
            "interface",
            format!(
                "{:?}: tbgw speaks SocketCAN (\"socketcan\"); other python-can backends are not available",
                cfg.interface
            ),
        ));
    }
    if cfg.channel.trim().is_empty() {
        return Err(ConfigError::new(file, "channel", "empty"));
    }
    let fd = match cfg.backend.get("fd") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(other) => {
            return Err(ConfigError::new(
                file,
                "backend.fd",
                format!("{other} is not true or false"),
            ))
        }
    };
    for k in cfg.backend.keys().filter(|k| k.as_str() != "fd") {
        ignored.push(format!(
            "backend.{k} (python-can bus option; set bit rates with `ip link set <channel> type can ...`)"
        ));
    }
    let reconnect_period = seconds(
        file,
        "reconnectPeriod".into(),
        cfg.reconnect_period,
        DEFAULT_RECONNECT_PERIOD,
    )?;
    if cfg.devices.is_empty() {
        return Err(ConfigError::new(file, "devices", "no device configured"));
    }
    let mut b = Builder {
        file,
        ignored,
        decoder: Decoder::default(),
        polls: Vec::new(),
    };
    let mut down = Vec::new();
    for (i, d) in cfg.devices.iter().enumerate() {
        let p = format!("devices[{i}]");
        if d.name.trim().is_empty() {
            return Err(ConfigError::new(file, format!("{p}.name"), "empty"));
        }
        if b.decoder.devices.iter().any(|x| x.name == d.name) {
            return Err(ConfigError::new(
                file,
                format!("{p}.name"),
                format!("{:?} is configured twice", d.name),
            ));
        }
        if d.converters.is_some() {
            b.ignored.push(format!("{p}.converters (custom Python converters are not run; the built-in bytes conversion is used)"));
        }
        if d.strict_eval.is_some() {
            b.ignored.push(format!(
                "{p}.strictEval (tbgw always evaluates expressions with its safe subset)"
            ));
        }
        let mut overrides = ReportOverrides::default();
        let mut unused = Vec::new();
        if let Some(v) = &d.report_strategy {
            overrides.device =
                tbgw::report::parse_strategy(v, file, &format!("{p}.reportStrategy"), &mut unused)?;
        }
        if overrides.device.is_none() {
            overrides.device = tbgw::report::legacy_on_change(
                d.send_data_only_on_change.as_ref(),
                file,
                &format!("{p}.sendDataOnlyOnChange"),
            )?;
        }
        for (section, list) in [("attributes", &d.attributes), ("timeseries", &d.timeseries)] {
            for (j, v) in list.iter().enumerate() {
                if let Some(s) = &v.report_strategy {
                    if let Some(s) = tbgw::report::parse_strategy(
                        s,
                        file,
                        &format!("{p}.{section}[{j}].reportStrategy"),
                        &mut unused,
                    )? {
                        overrides.keys.entry(v.key.clone()).or_insert(s);
                    }
                }
            }
        }
        b.ignored.extend(unused);
        let dev = b.decoder.devices.len();
        b.decoder.devices.push(DeviceInfo {
            name: d.name.clone(),
            profile: d.profile.clone().unwrap_or_else(|| "can".into()),
            report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
            units: Vec::new(),
        });
        let msgs = match &d.dbc_file {
            Some(f) => {
                let path = tbgw::config::resolve_beside(file, f);
                load_dbc(&path).map_err(|e| ConfigError::new(file, format!("{p}.dbcFile"), e))?
            }
            None => Vec::new(),
        };
        let sa = d.j1939_source_address.unwrap_or(0xFE);
        for (j, v) in d.attributes.iter().enumerate() {
            b.value(dev, &format!("{p}.attributes[{j}]"), v, true, &msgs, sa)?;
        }
        for (j, v) in d.timeseries.iter().enumerate() {
            b.value(dev, &format!("{p}.timeseries[{j}]"), v, false, &msgs, sa)?;
        }
        for (j, r) in d.dbc_messages.iter().enumerate() {
            // `"*"`: every message of the file.
            let chosen: Vec<&dbc::Message> = if r.as_str() == Some("*") {
                msgs.iter().collect()
            } else {
                vec![find_message(&msgs, r).ok_or_else(|| {
                    ConfigError::new(
                        file,
                        format!("{p}.dbcMessages[{j}]"),
                        format!("no message {} in the DBC file", message_ref(r)),
                    )
                })?]
            };
            for (m, s) in chosen
                .into_iter()
                .flat_map(|m| m.signals.iter().map(move |s| (m, s)))
            {
                let v = ValueConfig {
                    key: s.name.clone(),
                    node_id: None,
                    is_extended_id: m.extended,
                    is_fd: false,
                    bitrate_switch: false,
                    command: None,
                    value: None,
                    expression: None,
                    polling: None,
                    signal: Some(s.name.clone()),
                    message: Some(Json::from(m.name.clone())),
                    pgn: None,
                    source_address: None,
                    report_strategy: None,
                };
                b.value(dev, &format!("{p}.dbcMessages[{j}]"), &v, false, &msgs, sa)?;
            }
        }
        let mut dd = DeviceDown {
            unknown_rpc: d.enable_unknown_rpc,
            override_rpc: d.enable_unknown_rpc || d.override_rpc_config,
            ..DeviceDown::default()
        };
        for (j, u) in d.attribute_updates.iter().enumerate() {
            let kp = format!("{p}.attributeUpdates[{j}]");
            let o = u
                .as_object()
                .ok_or_else(|| ConfigError::new(file, &kp, "not an object"))?;
            let name = get_str(o, "attributeOnThingsBoard")
                .ok()
                .flatten()
                .or_else(|| get_str(o, "attribute").ok().flatten())
                .ok_or_else(|| {
                    ConfigError::new(file, format!("{kp}.attributeOnThingsBoard"), "missing")
                })?;
            let mut warnings = Vec::new();
            let down = down_from(o, &mut warnings)
                .map_err(|(k, why)| ConfigError::new(file, format!("{kp}.{k}"), why))?;
            for (k, why) in warnings {
                b.ignored.push(format!(
                    "{kp}.{k} ({why}; every update of {name} answers this error)"
                ));
            }
            if down.node.is_none() {
                return Err(ConfigError::new(file, format!("{kp}.nodeId"), "missing"));
            }
            dd.updates.push((name.to_string(), down));
        }
        for (j, r) in d.server_side_rpc.iter().enumerate() {
            let kp = format!("{p}.serverSideRpc[{j}]");
            let o = r
                .as_object()
                .ok_or_else(|| ConfigError::new(file, &kp, "not an object"))?;
            let method = get_str(o, "method")
                .ok()
                .flatten()
                .ok_or_else(|| ConfigError::new(file, format!("{kp}.method"), "missing"))?;
            let mut warnings = Vec::new();
            let down = down_from(o, &mut warnings)
                .map_err(|(k, why)| ConfigError::new(file, format!("{kp}.{k}"), why))?;
            for (k, why) in warnings {
                b.ignored.push(format!(
                    "{kp}.{k} ({why}; the RPC {method} answers this error)"
                ));
            }
            if down.node.is_none() && !dd.override_rpc {
                return Err(ConfigError::new(
                    file,
                    format!("{kp}.nodeId"),
                    "missing (needed unless overrideRpcConfig lets the RPC's params name it)",
                ));
            }
            dd.methods.insert(
                method.to_string(),
                Method {
                    down,
                    raw: o.clone(),
                },
            );
        }
        down.push(dd);
    }
    let Builder { decoder, polls, .. } = b;
    Ok(Plan {
        interface: cfg.interface.clone(),
        channel: cfg.channel.trim().to_string(),
        fd,
        reconnect: cfg.reconnect,
        reconnect_period,
        reconnect_count: cfg.reconnect_count,
        decoder,
        polls,
        down,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tbgw::model::Value;

    fn plan_of(v: Json) -> Result<(Plan, Vec<String>), ConfigError> {
        let cfg: CanConnectorConfig = serde_json::from_value(v).unwrap();
        let mut ignored = Vec::new();
        plan(Path::new("can.json"), &cfg, &mut ignored).map(|p| (p, ignored))
    }

    fn sample() -> Json {
        // The shape of upstream's can.json (written here, not copied).
        json!({
            "interface": "socketcan", "channel": "vcan0", "backend": {"fd": true},
            "reconnectPeriod": 5,
            "devices": [{
                "name": "Car", "strictEval": false, "enableUnknownRpc": true,
                "attributes": [{
                    "key": "doorOpen", "nodeId": 41, "command": "2:2:big:8717",
                    "value": "4:1:int", "expression": "bool(value & 0b00000100)",
                    "polling": {"type": "once", "dataInHex": "AB CD AB CD"}
                }],
                "timeseries": [
                    {"key": "rpm", "nodeId": 1918, "isExtendedId": true, "command": "2:2:big:48059",
                     "value": "4:2:big:int", "expression": "value / 4",
                     "polling": {"type": "always", "period": 5, "dataInHex": "aaaa bbbb aaaa bbbb"}},
                    {"key": "mileage", "nodeId": 1918, "isExtendedId": true,
                     "value": "4:2:little:int", "expression": "value * 10"}
                ],
                "attributeUpdates": [{"attributeOnThingsBoard": "sw", "nodeId": 64, "isExtendedId": true,
                    "dataLength": 4, "dataExpression": "value + 5", "dataByteorder": "little"}],
                "serverSideRpc": [
                    {"method": "same", "nodeId": 4, "isExtendedId": true, "isFd": true, "dataInHex": "aa bb c dd"},
                    {"method": "light", "nodeId": 5, "dataLength": 2, "dataByteorder": "little", "dataBefore": "00AA"}
                ]
            }]
        })
    }

    #[test]
    fn the_sample_shape_is_planned_with_warnings_for_what_upstream_skips() {
        let (p, ignored) = plan_of(sample()).unwrap();
        assert!(p.fd);
        assert_eq!(p.reconnect_period, Duration::from_secs(5));
        assert_eq!(p.polls.len(), 2);
        assert!(p.polls[0].once && !p.polls[1].once);
        assert_eq!(
            p.polls[1].frame.data,
            [0xAA, 0xAA, 0xBB, 0xBB, 0xAA, 0xAA, 0xBB, 0xBB]
        );
        assert!(p.polls[1].frame.extended);
        assert!(
            ignored
                .iter()
                .any(|w| w.starts_with("devices[0].serverSideRpc[0].dataInHex")
                    && w.contains("not hex")),
            "{ignored:?}"
        );
        assert!(ignored
            .iter()
            .any(|w| w.starts_with("devices[0].strictEval")));
        let m = &p.down[0].methods["same"];
        assert!(matches!(&m.down.encoder.in_hex, Some(Err(_))));
        assert!(p.down[0].override_rpc);
        // rpm with its command and mileage without: both from one frame.
        let f =
            CanFrame::new(1918, true, false, false, vec![0, 0, 0xBB, 0xBB, 0x01, 0x90]).unwrap();
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        p.decoder.decode(&f, 1, &mut out, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(out.len(), 1);
        let vals: Vec<_> = out[0]
            .telemetry
            .iter()
            .flat_map(|e| e.values.iter().cloned())
            .collect();
        assert_eq!(
            vals,
            [
                ("rpm".to_string(), Value::Float(100.0)),
                ("mileage".to_string(), Value::Int(0x9001 * 10))
            ]
        );
        // Another command: only mileage.
        let f = CanFrame::new(1918, true, false, false, vec![0, 0, 0, 1, 0x01, 0x00]).unwrap();
        out.clear();
        p.decoder.decode(&f, 1, &mut out, &mut errors);
        assert_eq!(out[0].telemetry[0].values.len(), 1);
        // The standard id 1918 does not exist; the same number as a standard id is no match.
        let door = CanFrame::new(41, false, false, false, vec![0, 0, 0x22, 0x0D, 0x04]).unwrap();
        out.clear();
        p.decoder.decode(&door, 1, &mut out, &mut errors);
        assert_eq!(
            out[0].attributes,
            vec![("doorOpen".to_string(), Value::Bool(true))]
        );
        // Too short: an error, counted by the connector.
        let short = CanFrame::new(41, false, false, false, vec![0, 0, 0x22, 0x0D]).unwrap();
        out.clear();
        p.decoder.decode(&short, 1, &mut out, &mut errors);
        assert!(out.is_empty());
        assert_eq!(errors.len(), 1);
        assert_eq!(p.decoder.filters().len(), 2);
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases = [
            (
                json!({"interface": "pcan", "devices": [{"name": "x"}]}),
                "interface",
            ),
            (json!({"devices": []}), "devices"),
            (
                json!({"devices": [{"name": "x", "timeseries": [{"key": "k", "nodeId": 2048, "value": "0:1:int"}]}]}),
                "devices[0].timeseries[0].nodeId",
            ),
            (
                json!({"devices": [{"name": "x", "timeseries": [{"key": "k", "nodeId": 1, "value": "0:1:nope"}]}]}),
                "devices[0].timeseries[0].value",
            ),
            (
                json!({"devices": [{"name": "x", "timeseries": [{"key": "k", "nodeId": 1, "value": "0:1:int", "expression": "__import__('os')"}]}]}),
                "devices[0].timeseries[0].expression",
            ),
            (
                json!({"devices": [{"name": "x", "timeseries": [{"key": "k", "nodeId": 1, "value": "0:1:int", "command": "1:x"}]}]}),
                "devices[0].timeseries[0].command",
            ),
            (
                json!({"devices": [{"name": "x", "attributeUpdates": [{"attributeOnThingsBoard": "a"}]}]}),
                "devices[0].attributeUpdates[0].nodeId",
            ),
            (
                json!({"devices": [{"name": "x", "serverSideRpc": [{"method": "m", "nodeId": 1, "dataExpression": "a +"}]}]}),
                "devices[0].serverSideRpc[0].dataExpression",
            ),
            (
                json!({"devices": [{"name": "x", "timeseries": [{"key": "k", "signal": "S"}]}]}),
                "devices[0].timeseries[0].signal",
            ),
            (
                json!({"reconnectPeriod": -1, "devices": [{"name": "x"}]}),
                "reconnectPeriod",
            ),
        ];
        for (cfg, key) in cases {
            let e = plan_of(cfg).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(&format!("can.json: {key}:")), "{key}: {e}");
        }
    }

    #[test]
    fn j1939_entries_match_by_pgn_and_poll_with_requests() {
        let (p, _) = plan_of(json!({"devices": [{"name": "Truck", "j1939SourceAddress": 249, "timeseries": [
            {"key": "speed", "pgn": 61444, "value": "3:2:little:int", "expression": "value * 0.125",
             "polling": {"period": 1}},
            {"key": "coolant", "pgn": 65262, "sourceAddress": 0, "value": "0:1:int", "expression": "value - 40"}
        ]}]})).unwrap();
        assert_eq!(p.polls[0].frame.id, 0x18EA_FFF9);
        assert_eq!(p.polls[0].frame.data, [0x04, 0xF0, 0x00]);
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        for id in [0x0CF0_0400u32, 0x18F0_0417] {
            let f =
                CanFrame::new(id, true, false, false, vec![0, 0, 0, 0x40, 0x1F, 0, 0, 0]).unwrap();
            p.decoder.decode(&f, 1, &mut out, &mut errors);
        }
        assert_eq!(out.len(), 2);
        let f = CanFrame::new(0x18FE_EE01, true, false, false, vec![100]).unwrap();
        out.clear();
        p.decoder.decode(&f, 1, &mut out, &mut errors);
        assert!(out.is_empty(), "another source address");
        let f = CanFrame::new(0x18FE_EE00, true, false, false, vec![100]).unwrap();
        p.decoder.decode(&f, 1, &mut out, &mut errors);
        assert_eq!(out[0].telemetry[0].values[0].1, Value::Int(60));
    }

    #[test]
    fn every_signal_of_every_dbc_message_with_a_star() {
        let cfg: CanConnectorConfig = serde_json::from_value(json!({"devices": [
            {"name": "T", "dbcFile": "t.dbc", "dbcMessages": ["*"]}
        ]}))
        .unwrap();
        let text = "VERSION \"\"\n\nNS_ :\n\nBS_:\n\nBU_: E\n\n\
            BO_ 256 A: 8 E\n SG_ X : 0|8@1+ (1,0) [0|255] \"\" Vector__XXX\n\n\
            BO_ 257 B: 8 E\n SG_ Y : 0|8@1+ (2,0) [0|510] \"V\" Vector__XXX\n";
        let load = |_: &Path| dbc::parse(text);
        let p = plan_with(Path::new("can.json"), &cfg, &mut Vec::new(), &load).unwrap();
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        for id in [256, 257] {
            let f = CanFrame::new(id, false, false, false, vec![3]).unwrap();
            p.decoder.decode(&f, 1, &mut out, &mut errors);
        }
        let vals: Vec<_> = out
            .iter()
            .flat_map(|d| d.telemetry.iter().flat_map(|e| e.values.iter().cloned()))
            .collect();
        assert_eq!(
            vals,
            [
                ("X".to_string(), Value::Int(3)),
                ("Y".to_string(), Value::Float(6.0))
            ]
        );
        assert_eq!(
            p.decoder.devices[0].units,
            [("Y".to_string(), "V".to_string())]
        );
    }

    #[test]
    fn rpc_params_override_like_upstream() {
        let c = json!({"method": "m", "nodeId": 5, "dataLength": 2})
            .as_object()
            .cloned()
            .unwrap();
        let m = merge_rpc(&json!({"value": 3, "dataLength": 4}), Some(&c));
        assert_eq!(m["nodeId"], 5);
        assert_eq!(m["dataLength"], 4);
        assert_eq!(m["response"], true);
        assert!(!m.contains_key("method"));
        assert_eq!(merge_rpc(&json!({"nodeId": 1}), None)["nodeId"], 1);
    }
}
