//! The engine behind the `json` and `bytes` converters: device name and profile sources,
//! datapoints (key, value, type, timestamp, report strategy), compiled once from a
//! [`ConverterConfig`] and evaluated for every message.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use fancy_regex::Regex;
use serde_json::Value as Json;

use super::config::{ConverterConfig, DatapointConfig, Datapoints, DeviceInfoConfig};
use super::ConvertError;
use crate::config::{ConfigError, ReportStrategyConfig};
use crate::expr::{self, ByteSlices, DataType, Template, TsOptions};
use crate::model::{DeviceData, Value};
use crate::report::{self, ReportOverrides};

/// How a connector's `converter` sections are read: the few points where upstream's
/// connectors differ. Build one as a constant:
///
/// ```
/// use tbgw::convert::Dialect;
/// /// MQTT: names may come from the topic, and `bytes` converters exist.
/// const MQTT: Dialect = Dialect::new().with_topic().with_bytes();
/// /// REST: the request data is `request` (or `message`), and the section says `timeseries`.
/// const REST: Dialect = Dialect::new().message_sources(&["request", "message"]);
/// # let _ = (MQTT, REST);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    message_sources: &'static [&'static str],
    topic: bool,
    bytes: bool,
    timeseries_key: &'static str,
    unregistered: &'static str,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect::new()
    }
}

impl Dialect {
    /// Names come from the `message` or a `constant`; only `json` and `custom` converters;
    /// time series under `timeseries`; an unregistered custom converter leaves its mapping
    /// inactive.
    pub const fn new() -> Self {
        Dialect {
            message_sources: &["message"],
            topic: false,
            bytes: false,
            timeseries_key: "timeseries",
            unregistered: "this mapping is inactive",
        }
    }

    /// The names of the "message" source (`deviceNameExpressionSource`), e.g. `request` for
    /// the REST connector. The first one is the default.
    pub const fn message_sources(mut self, names: &'static [&'static str]) -> Self {
        self.message_sources = names;
        self
    }

    /// Names and keys may also come from a regex over the message's source (the MQTT topic):
    /// source `topic`, `keySource: topic`, `deviceNameTopicExpression`.
    pub const fn with_topic(mut self) -> Self {
        self.topic = true;
        self
    }

    /// The `bytes` converter is available.
    pub const fn with_bytes(mut self) -> Self {
        self.bytes = true;
        self
    }

    /// The key the connector's documentation uses for time series in key paths of errors
    /// (`timeseries` or `telemetry`; both are read).
    pub const fn timeseries_key(mut self, key: &'static str) -> Self {
        self.timeseries_key = key;
        self
    }

    /// What becomes of a mapping whose custom converter is not registered, for the
    /// `ignored` list (default "this mapping is inactive").
    pub const fn unregistered(mut self, what: &'static str) -> Self {
        self.unregistered = what;
        self
    }

    pub(super) fn allows_bytes(&self) -> bool {
        self.bytes
    }

    pub(super) fn unregistered_note(&self) -> &'static str {
        self.unregistered
    }

    fn is_message(&self, source: &str) -> bool {
        self.message_sources.contains(&source)
    }

    /// "message, topic or constant".
    fn expected_sources(&self) -> String {
        let mut names: Vec<&str> = self.message_sources.to_vec();
        if self.topic {
            names.push("topic");
        }
        format!("{} or constant", names.join(", "))
    }
}

/// Where a device name or profile comes from.
#[derive(Debug)]
pub enum NameSource {
    /// The text itself.
    Constant(String),
    /// A template over the JSON message.
    Message(Template),
    /// Byte slices over the raw payload (bytes converter).
    Slices(ByteSlices),
    /// A regex over the message's source (the MQTT topic): the last capture group, else the
    /// whole match; the expression itself when nothing matches (upstream's rule).
    Topic(Regex, String),
}

impl NameSource {
    /// Compiles `expr` read from `source` (`deviceNameExpressionSource`); `key` is the key
    /// path of `expr` for errors, `bytes` selects byte slices for the message source. A message
    /// expression without a placeholder is a constant.
    pub fn build(
        file: &Path,
        key: &str,
        source: &str,
        expr: &str,
        bytes: bool,
        dialect: &Dialect,
    ) -> Result<Self, ConfigError> {
        match source {
            "constant" => Ok(NameSource::Constant(expr.to_string())),
            s if dialect.is_message(s) => {
                if bytes {
                    ByteSlices::parse(expr)
                        .map(NameSource::Slices)
                        .map_err(|e| ConfigError::new(file, key, e.to_string()))
                } else if expr.contains("${") {
                    Template::parse(expr)
                        .map(NameSource::Message)
                        .map_err(|e| ConfigError::new(file, key, e.to_string()))
                } else {
                    Ok(NameSource::Constant(expr.to_string()))
                }
            }
            "topic" if dialect.topic => Regex::new(expr)
                .map(|r| NameSource::Topic(r, expr.to_string()))
                .map_err(|e| {
                    ConfigError::new(file, key, format!("invalid regular expression: {e}"))
                }),
            other => Err(ConfigError::new(
                file,
                key.replace("Expression", "ExpressionSource"),
                format!(
                    "unknown source `{other}`; expected {}",
                    dialect.expected_sources()
                ),
            )),
        }
    }

    /// The name for a message: `source` is where it came from (the MQTT topic), `json` its
    /// JSON, `payload` its bytes. `None` when the expression has no match or the name is
    /// empty.
    pub fn resolve(&self, source: &str, json: &Json, payload: &[u8]) -> Option<String> {
        let name = match self {
            NameSource::Constant(s) => s.clone(),
            NameSource::Message(t) => t.render(json)?,
            NameSource::Slices(s) => s.render(payload, false),
            NameSource::Topic(re, expr) => {
                topic_capture(re, source).unwrap_or_else(|| expr.clone())
            }
        };
        (!name.is_empty()).then_some(name)
    }

    /// Like [`NameSource::resolve`], but a topic regex that does not match gives no name
    /// (upstream's request handlers reject such a message).
    pub fn resolve_request(&self, source: &str, json: &Json, payload: &[u8]) -> Option<String> {
        match self {
            NameSource::Topic(re, _) => topic_capture(re, source).filter(|s| !s.is_empty()),
            other => other.resolve(source, json, payload),
        }
    }
}

/// The last participating capture group of the first match of `re` in `text`, else the whole
/// match.
pub fn topic_capture(re: &Regex, text: &str) -> Option<String> {
    let caps = re.captures(text).ok()??;
    (1..caps.len())
        .rev()
        .find_map(|i| caps.get(i))
        .or_else(|| caps.get(0))
        .map(|m| m.as_str().to_string())
}

/// The first key that is set, with its value and source.
fn pick<'a>(
    candidates: [(&'a str, Option<&'a str>, &'a str); 3],
) -> Option<(&'a str, &'a str, &'a str)> {
    candidates
        .into_iter()
        .find_map(|(k, v, source)| v.map(|v| (k, v, source)))
}

/// The keys a section names its device with: `deviceInfo`, else the legacy JSON, the flat
/// and the legacy topic expressions, in that order.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceNameKeys<'a> {
    /// `deviceInfo`.
    pub device_info: Option<&'a DeviceInfoConfig>,
    /// `deviceNameJsonExpression`.
    pub name_json: Option<&'a str>,
    /// `deviceNameExpression`.
    pub name_flat: Option<&'a str>,
    /// `deviceNameTopicExpression`.
    pub name_topic: Option<&'a str>,
    /// `deviceTypeJsonExpression`.
    pub profile_json: Option<&'a str>,
    /// `deviceProfileExpression` (or `deviceTypeExpression`).
    pub profile_flat: Option<&'a str>,
    /// `deviceTypeTopicExpression`.
    pub profile_topic: Option<&'a str>,
}

impl ConverterConfig {
    /// The keys this section names its device with.
    pub fn device_name_keys(&self) -> DeviceNameKeys<'_> {
        DeviceNameKeys {
            device_info: self.device_info.as_ref(),
            name_json: self.device_name_json_expression.as_deref(),
            name_flat: self.device_name_expression.as_deref(),
            name_topic: self.device_name_topic_expression.as_deref(),
            profile_json: self.device_type_json_expression.as_deref(),
            profile_flat: self.device_profile_expression.as_deref(),
            profile_topic: self.device_type_topic_expression.as_deref(),
        }
    }
}

impl DeviceNameKeys<'_> {
    /// Compiles the device name and profile sources. `prefix` is the section's key path,
    /// `what` names it in the error for a missing name ("converter", "request"). The topic
    /// keys of a dialect without topics are reported in `ignored`.
    pub fn build(
        &self,
        file: &Path,
        prefix: &str,
        what: &str,
        bytes: bool,
        dialect: &Dialect,
        ignored: &mut Vec<String>,
    ) -> Result<(NameSource, NameSource), ConfigError> {
        if let Some(di) = self.device_info {
            return Ok((
                NameSource::build(
                    file,
                    &format!("{prefix}.deviceInfo.deviceNameExpression"),
                    &di.device_name_expression_source,
                    &di.device_name_expression,
                    bytes,
                    dialect,
                )?,
                NameSource::build(
                    file,
                    &format!("{prefix}.deviceInfo.deviceProfileExpression"),
                    &di.device_profile_expression_source,
                    &di.device_profile_expression,
                    bytes,
                    dialect,
                )?,
            ));
        }
        let message = dialect
            .message_sources
            .first()
            .copied()
            .unwrap_or("message");
        let (name_topic, profile_topic) = if dialect.topic {
            (self.name_topic, self.profile_topic)
        } else {
            for (k, v) in [
                ("deviceNameTopicExpression", self.name_topic),
                ("deviceTypeTopicExpression", self.profile_topic),
            ] {
                if v.is_some() {
                    ignored.push(format!("{prefix}.{k} (this connector has no topics)"));
                }
            }
            (None, None)
        };
        let build = |(k, v, source): (&str, &str, &str)| {
            NameSource::build(file, &format!("{prefix}.{k}"), source, v, bytes, dialect)
        };
        let name = match pick([
            ("deviceNameJsonExpression", self.name_json, message),
            ("deviceNameExpression", self.name_flat, message),
            ("deviceNameTopicExpression", name_topic, "topic"),
        ]) {
            Some(n) => build(n)?,
            None => {
                return Err(ConfigError::new(
                    file,
                    format!("{prefix}.deviceInfo"),
                    format!("missing; the {what} needs a device name"),
                ))
            }
        };
        let profile = match pick([
            ("deviceTypeJsonExpression", self.profile_json, message),
            ("deviceProfileExpression", self.profile_flat, message),
            ("deviceTypeTopicExpression", profile_topic, "topic"),
        ]) {
            Some(p) => build(p)?,
            None => NameSource::Constant("default".into()),
        };
        Ok((name, profile))
    }
}

#[derive(Debug)]
enum KeySource {
    Constant(String),
    Template(Template),
    Topic(Regex),
    /// Byte slices over the payload (bytes converter).
    Slices(ByteSlices),
}

#[derive(Debug)]
enum ValueSource {
    Template(Template),
    Slices(ByteSlices),
}

#[derive(Debug)]
struct Datapoint {
    key: KeySource,
    value: ValueSource,
    ty: DataType,
    ts: Option<(Template, TsOptions)>,
    /// Render byte slices as hex (`hexMode`).
    hex: bool,
    /// The datapoint's own `reportStrategy`. A constant key's is also in the converter's
    /// overrides; any other key is only known per message, so its strategy is added then.
    report: Option<ReportStrategyConfig>,
}

impl Datapoint {
    /// The strategy to add per message: set, and the key is not a constant.
    fn dynamic_report(&self) -> Option<&ReportStrategyConfig> {
        match self.key {
            KeySource::Constant(_) => None,
            _ => self.report.as_ref(),
        }
    }
}

#[derive(Debug)]
enum Points {
    All,
    List(Vec<Datapoint>),
}

/// A compiled `json` or `bytes` converter section.
#[derive(Debug)]
pub(super) struct Engine {
    device_name: NameSource,
    device_profile: NameSource,
    attributes: Points,
    timeseries: Points,
    use_received_ts: bool,
    /// Device and datapoint report strategies, attached to every record (`None`: none set).
    report: Option<Arc<ReportOverrides>>,
}

impl Engine {
    /// Compiles section `c`; `prefix` is its key path for errors.
    pub(super) fn build(
        file: &Path,
        prefix: &str,
        c: &ConverterConfig,
        bytes: bool,
        dialect: &Dialect,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let (name, profile) =
            c.device_name_keys()
                .build(file, prefix, "converter", bytes, dialect, ignored)?;
        let attributes = build_points(
            file,
            &format!("{prefix}.attributes"),
            &c.attributes,
            bytes,
            dialect,
        )?;
        let timeseries = build_points(
            file,
            &format!("{prefix}.{}", dialect.timeseries_key),
            &c.timeseries,
            bytes,
            dialect,
        )?;
        if !bytes {
            for (section, points) in [
                ("attributes", &c.attributes),
                (dialect.timeseries_key, &c.timeseries),
            ] {
                if let Datapoints::List(list) = points {
                    for (j, p) in list.iter().enumerate() {
                        if p.hex_mode {
                            ignored.push(format!("{prefix}.{section}[{j}].hexMode (only the bytes converter renders byte slices)"));
                        }
                    }
                }
            }
        }
        let mut overrides = ReportOverrides {
            device: device_strategy(file, prefix, c, &mut Vec::new())?,
            keys: HashMap::new(),
        };
        for points in [&attributes, &timeseries] {
            let Points::List(points) = points else {
                continue;
            };
            for p in points {
                if let (KeySource::Constant(k), Some(s)) = (&p.key, &p.report) {
                    // The same name in attributes and timeseries: the first one wins (the
                    // MQTT connector reports the other as ignored).
                    overrides.keys.entry(k.clone()).or_insert_with(|| s.clone());
                }
            }
        }
        Ok(Engine {
            device_name: name,
            device_profile: profile,
            attributes,
            timeseries,
            use_received_ts: c.use_received_ts,
            report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
        })
    }

    pub(super) fn set_mapping_strategy(&mut self, s: Option<ReportStrategyConfig>) {
        let Some(s) = s else { return };
        let mut o = self.report.as_deref().cloned().unwrap_or_default();
        if o.device.is_none() {
            o.device = Some(s);
            self.report = Some(Arc::new(o));
        }
    }

    pub(super) fn report_overrides(&self) -> Option<&Arc<ReportOverrides>> {
        self.report.as_ref()
    }

    /// Converts one message: `json` is its JSON (`Null` for the bytes converter), `payload`
    /// its bytes.
    pub(super) fn convert_one(
        &self,
        source: &str,
        json: &Json,
        payload: &[u8],
        received_ts: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Result<DeviceData, ConvertError> {
        let name = self
            .device_name
            .resolve(source, json, payload)
            .ok_or_else(|| {
                ConvertError::NoDeviceName(format!(
                    "the device name expression has no match in the message on `{source}`"
                ))
            })?;
        let profile = self
            .device_profile
            .resolve(source, json, payload)
            .unwrap_or_else(|| "default".into());
        let mut data = DeviceData::new(name, profile);
        let mut dynamic: Vec<(String, ReportStrategyConfig)> = Vec::new();
        let ts = if self.use_received_ts {
            received_ts
        } else {
            ["ts", "timestamp"]
                .iter()
                .find_map(|k| json.get(*k))
                .and_then(|v| expr::parse_timestamp(v, TsOptions::default()))
                .unwrap_or(received_ts)
        };
        match &self.attributes {
            Points::All => all_keys(json, |k, v| data.push_attribute(k, v)),
            Points::List(points) => {
                for p in points {
                    if let Some((k, v, _)) = self.eval(p, source, json, payload, errors) {
                        if let Some(s) = p.dynamic_report() {
                            dynamic.push((k.clone(), s.clone()));
                        }
                        data.push_attribute(k, v);
                    }
                }
            }
        }
        match &self.timeseries {
            Points::All => {
                let mut values = Vec::new();
                all_keys(json, |k, v| values.push((k, v)));
                for (k, v) in values {
                    data.push_telemetry(ts, k, v);
                }
            }
            Points::List(points) => {
                for p in points {
                    if let Some((k, v, own_ts)) = self.eval(p, source, json, payload, errors) {
                        if let Some(s) = p.dynamic_report() {
                            dynamic.push((k.clone(), s.clone()));
                        }
                        let t = if self.use_received_ts {
                            received_ts
                        } else {
                            own_ts.unwrap_or(ts)
                        };
                        data.push_telemetry(t, k, v);
                    }
                }
            }
        }
        data.report = if dynamic.is_empty() {
            self.report.clone()
        } else {
            // Keys known only now: overrides of this message (allocated only for mappings
            // that give a template key its own strategy).
            let mut o = self.report.as_deref().cloned().unwrap_or_default();
            for (k, s) in dynamic {
                o.keys.entry(k).or_insert(s);
            }
            Some(Arc::new(o))
        };
        Ok(data)
    }

    fn eval(
        &self,
        p: &Datapoint,
        source: &str,
        json: &Json,
        payload: &[u8],
        errors: &mut Vec<ConvertError>,
    ) -> Option<(String, Value, Option<i64>)> {
        let key = match &p.key {
            KeySource::Constant(k) => k.clone(),
            KeySource::Template(t) => match t.render(json) {
                Some(k) => k,
                None => {
                    errors.push(ConvertError::Value {
                        key: t.source().to_string(),
                        reason: "the key template has no match in the message".into(),
                    });
                    return None;
                }
            },
            KeySource::Topic(re) => topic_capture(re, source)?,
            KeySource::Slices(s) => s.render(payload, p.hex),
        };
        let converted = match &p.value {
            ValueSource::Template(t) => {
                let Some(v) = t.resolve(json) else {
                    errors.push(ConvertError::Value {
                        key,
                        reason: format!("`{}` has no match in the message", t.source()),
                    });
                    return None;
                };
                if v.is_null() {
                    return None;
                }
                expr::convert(&v, p.ty)
            }
            ValueSource::Slices(s) => {
                let text = s.render(payload, p.hex);
                match p.ty {
                    DataType::Raw | DataType::String => Ok(Value::String(text)),
                    ty => expr::convert(&Json::String(text), ty),
                }
            }
        };
        let value = match converted {
            Ok(v) => v,
            Err(e) => {
                errors.push(ConvertError::Value {
                    key,
                    reason: e.to_string(),
                });
                return None;
            }
        };
        let ts = p.ts.as_ref().and_then(|(t, opts)| {
            t.resolve(json)
                .and_then(|v| expr::parse_timestamp(&v, *opts))
        });
        Some((key, value, ts))
    }
}

fn all_keys(json: &Json, mut f: impl FnMut(String, Value)) {
    if let Some(obj) = json.as_object() {
        for (k, v) in obj {
            f(k.clone(), Value::from_json(v.clone()));
        }
    }
}

fn build_points(
    file: &Path,
    prefix: &str,
    d: &Datapoints,
    bytes: bool,
    dialect: &Dialect,
) -> Result<Points, ConfigError> {
    match d {
        Datapoints::None => Ok(Points::List(Vec::new())),
        Datapoints::All(s) if s == "*" => Ok(Points::All),
        Datapoints::All(s) => Err(ConfigError::new(
            file,
            prefix,
            format!("expected a list of datapoints or \"*\", found {s:?}"),
        )),
        Datapoints::List(list) => list
            .iter()
            .enumerate()
            .map(|(i, p)| build_point(file, &format!("{prefix}[{i}]"), p, bytes, dialect))
            .collect::<Result<Vec<_>, _>>()
            .map(Points::List),
    }
}

fn build_point(
    file: &Path,
    prefix: &str,
    p: &DatapointConfig,
    bytes: bool,
    dialect: &Dialect,
) -> Result<Datapoint, ConfigError> {
    let err = |k: &str, e: String| ConfigError::new(file, format!("{prefix}.{k}"), e);
    let ty = DataType::parse(&p.kind).ok_or_else(|| {
        err(
            "type",
            format!(
                "unknown type `{}`; expected string, integer, double, boolean, raw or json",
                p.kind
            ),
        )
    })?;
    let key = match p.key_source.as_deref() {
        Some("topic") if dialect.topic => KeySource::Topic(
            Regex::new(&p.key)
                .map_err(|e| err("key", format!("invalid regular expression: {e}")))?,
        ),
        None | Some("message") | Some("constant") => {
            if bytes && p.key.contains('[') {
                KeySource::Slices(ByteSlices::parse(&p.key).map_err(|e| err("key", e.to_string()))?)
            } else if p.key.contains("${") {
                KeySource::Template(Template::parse(&p.key).map_err(|e| err("key", e.to_string()))?)
            } else {
                KeySource::Constant(p.key.clone())
            }
        }
        Some(other) => {
            let expected = if dialect.topic {
                "message or topic"
            } else {
                "message"
            };
            return Err(err(
                "keySource",
                format!("unknown key source `{other}`; expected {expected}"),
            ));
        }
    };
    let value = if bytes {
        ValueSource::Slices(ByteSlices::parse(&p.value).map_err(|e| err("value", e.to_string()))?)
    } else {
        ValueSource::Template(Template::parse(&p.value).map_err(|e| err("value", e.to_string()))?)
    };
    let ts = match &p.ts_field {
        Some(t) => Some((
            Template::parse(t).map_err(|e| err("tsField", e.to_string()))?,
            TsOptions {
                dayfirst: p.dayfirst,
                yearfirst: p.yearfirst,
            },
        )),
        None => None,
    };
    let report = match &p.report_strategy {
        None => None,
        Some(v) => report::parse_strategy(
            v,
            file,
            &format!("{prefix}.reportStrategy"),
            &mut Vec::new(),
        )?,
    };
    Ok(Datapoint {
        key,
        value,
        ty,
        ts,
        hex: p.hex_mode,
        report,
    })
}

/// The device level of a converter section: its `reportStrategy`, else `ON_CHANGE` for the
/// legacy `sendDataOnlyOnChange: true`. `prefix` is the section's key path.
pub fn device_strategy(
    file: &Path,
    prefix: &str,
    c: &ConverterConfig,
    ignored: &mut Vec<String>,
) -> Result<Option<ReportStrategyConfig>, ConfigError> {
    let legacy = report::legacy_on_change(
        c.send_data_only_on_change.as_ref(),
        file,
        &format!("{prefix}.sendDataOnlyOnChange"),
    )?;
    if let Some(v) = &c.report_strategy {
        if let Some(s) =
            report::parse_strategy(v, file, &format!("{prefix}.reportStrategy"), ignored)?
        {
            return Ok(Some(s));
        }
    }
    Ok(legacy)
}
