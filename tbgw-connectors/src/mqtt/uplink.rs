//! The MQTT connector's uplink converters: `json` and `bytes`, built once from the mapping's
//! `converter` section, run for every message.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use fancy_regex::Regex;
use serde_json::Value as Json;
use tbgw::config::{ConfigError, ReportStrategyConfig};
use tbgw::convert::{ConvertError, UplinkConverter, UplinkInput};
use tbgw::expr::{self, ByteSlices, DataType, Template, TsOptions};
use tbgw::model::{DeviceData, Value};
use tbgw::report::{self, ReportOverrides};

use super::config::{ConverterConfig, DatapointConfig, Datapoints};

/// Where a device name or profile comes from.
#[derive(Debug)]
pub(super) enum NameSource {
    Constant(String),
    /// A template over the JSON message.
    Message(Template),
    /// Byte slices over the raw payload (bytes converter).
    Slices(ByteSlices),
    /// A regex over the topic: the last capture group, else the whole match; the expression
    /// itself when nothing matches (upstream's rule).
    Topic(Regex, String),
}

impl NameSource {
    pub(super) fn build(
        file: &Path,
        key: &str,
        source: &str,
        expr: &str,
        bytes: bool,
    ) -> Result<Self, ConfigError> {
        match source {
            "constant" => Ok(NameSource::Constant(expr.to_string())),
            "message" if bytes => ByteSlices::parse(expr)
                .map(NameSource::Slices)
                .map_err(|e| ConfigError::new(file, key, e.to_string())),
            "message" => Template::parse(expr)
                .map(NameSource::Message)
                .map_err(|e| ConfigError::new(file, key, e.to_string())),
            "topic" => Regex::new(expr)
                .map(|r| NameSource::Topic(r, expr.to_string()))
                .map_err(|e| {
                    ConfigError::new(file, key, format!("invalid regular expression: {e}"))
                }),
            other => Err(ConfigError::new(
                file,
                key.replace("Expression", "ExpressionSource"),
                format!("unknown source `{other}`; expected message, topic or constant"),
            )),
        }
    }

    /// The name for a request message: like [`NameSource::resolve`], but a topic regex that
    /// does not match gives no name (upstream's request handlers reject such a message).
    pub(super) fn resolve_request(
        &self,
        topic: &str,
        json: &Json,
        payload: &[u8],
    ) -> Option<String> {
        match self {
            NameSource::Topic(re, _) => topic_capture(re, topic),
            other => other.resolve(topic, json, payload),
        }
    }

    fn resolve(&self, topic: &str, json: &Json, payload: &[u8]) -> Option<String> {
        match self {
            NameSource::Constant(s) => Some(s.clone()),
            NameSource::Message(t) => t.render(json).filter(|s| !s.is_empty()),
            NameSource::Slices(s) => Some(s.render(payload, false)).filter(|s| !s.is_empty()),
            NameSource::Topic(re, expr) => {
                Some(topic_capture(re, topic).unwrap_or_else(|| expr.clone()))
            }
        }
    }
}

/// The last participating capture group of the first match, else the whole match.
pub(super) fn topic_capture(re: &Regex, topic: &str) -> Option<String> {
    let caps = re.captures(topic).ok()??;
    (1..caps.len())
        .rev()
        .find_map(|i| caps.get(i))
        .or_else(|| caps.get(0))
        .map(|m| m.as_str().to_string())
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

/// A compiled `json` or `bytes` converter.
#[derive(Debug)]
pub struct MqttUplinkConverter {
    bytes: bool,
    device_name: NameSource,
    device_profile: NameSource,
    attributes: Points,
    timeseries: Points,
    use_received_ts: bool,
    /// Device and datapoint report strategies, attached to every record (`None`: none set).
    report: Option<Arc<ReportOverrides>>,
}

impl MqttUplinkConverter {
    /// Builds the converter of `mapping[index]`; `prefix` is its key path for errors.
    pub fn build(file: &Path, prefix: &str, c: &ConverterConfig) -> Result<Self, ConfigError> {
        let bytes = match c.kind.as_str() {
            "json" => false,
            "bytes" => true,
            other => {
                return Err(ConfigError::new(
                    file,
                    format!("{prefix}.type"),
                    format!("converter type `{other}` cannot be built here"),
                ))
            }
        };
        let (name, profile) = match &c.device_info {
            Some(di) => (
                NameSource::build(
                    file,
                    &format!("{prefix}.deviceInfo.deviceNameExpression"),
                    &di.device_name_expression_source,
                    &di.device_name_expression,
                    bytes,
                )?,
                NameSource::build(
                    file,
                    &format!("{prefix}.deviceInfo.deviceProfileExpression"),
                    &di.device_profile_expression_source,
                    &di.device_profile_expression,
                    bytes,
                )?,
            ),
            None => {
                // Legacy keys, read as upstream's backward-compatibility adapter reads them.
                let name = match (
                    &c.device_name_json_expression,
                    &c.device_name_topic_expression,
                ) {
                    (Some(e), _) => NameSource::build(
                        file,
                        &format!("{prefix}.deviceNameJsonExpression"),
                        "message",
                        e,
                        bytes,
                    )?,
                    (None, Some(e)) => NameSource::build(
                        file,
                        &format!("{prefix}.deviceNameTopicExpression"),
                        "topic",
                        e,
                        bytes,
                    )?,
                    (None, None) => {
                        return Err(ConfigError::new(
                            file,
                            format!("{prefix}.deviceInfo"),
                            "missing; the converter needs a device name",
                        ))
                    }
                };
                let profile = match (
                    &c.device_type_json_expression,
                    &c.device_type_topic_expression,
                ) {
                    (Some(e), _) => NameSource::build(
                        file,
                        &format!("{prefix}.deviceTypeJsonExpression"),
                        "message",
                        e,
                        bytes,
                    )?,
                    (None, Some(e)) => NameSource::build(
                        file,
                        &format!("{prefix}.deviceTypeTopicExpression"),
                        "topic",
                        e,
                        bytes,
                    )?,
                    (None, None) => NameSource::Constant("default".into()),
                };
                (name, profile)
            }
        };
        let attributes = build_points(file, &format!("{prefix}.attributes"), &c.attributes, bytes)?;
        let timeseries = build_points(file, &format!("{prefix}.timeseries"), &c.timeseries, bytes)?;
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
                    // The same name in attributes and timeseries: the first one wins
                    // (MqttConnector::build reports the other as ignored).
                    overrides.keys.entry(k.clone()).or_insert_with(|| s.clone());
                }
            }
        }
        Ok(MqttUplinkConverter {
            bytes,
            device_name: name,
            device_profile: profile,
            attributes,
            timeseries,
            use_received_ts: c.use_received_ts,
            report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
        })
    }

    /// Sets the device-level report strategy from the mapping (`mapping[].reportStrategy`)
    /// unless the converter section has its own (`reportStrategy` or
    /// `sendDataOnlyOnChange: true`).
    pub fn with_mapping_strategy(mut self, s: Option<ReportStrategyConfig>) -> Self {
        let Some(s) = s else { return self };
        let mut o = self.report.as_deref().cloned().unwrap_or_default();
        if o.device.is_none() {
            o.device = Some(s);
            self.report = Some(Arc::new(o));
        }
        self
    }

    /// The device and datapoint report strategies attached to every record this converter
    /// produces (`None` when none is configured). Datapoints whose key is a template add
    /// theirs per message.
    pub fn report_overrides(&self) -> Option<&Arc<ReportOverrides>> {
        self.report.as_ref()
    }

    fn convert_one(
        &self,
        topic: &str,
        json: &Json,
        payload: &[u8],
        received_ts: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Result<DeviceData, ConvertError> {
        let name = self
            .device_name
            .resolve(topic, json, payload)
            .ok_or_else(|| {
                ConvertError::NoDeviceName(format!(
                    "the device name expression has no match in the message on `{topic}`"
                ))
            })?;
        let profile = self
            .device_profile
            .resolve(topic, json, payload)
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
                    if let Some((k, v, _)) = self.eval(p, topic, json, payload, errors) {
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
                    if let Some((k, v, own_ts)) = self.eval(p, topic, json, payload, errors) {
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
        topic: &str,
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
            KeySource::Topic(re) => topic_capture(re, topic)?,
            KeySource::Slices(s) => s.render(payload, p.hex),
        };
        let value = match &p.value {
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
                match expr::convert(&v, p.ty) {
                    Ok(v) => v,
                    Err(e) => {
                        errors.push(ConvertError::Value {
                            key,
                            reason: e.to_string(),
                        });
                        return None;
                    }
                }
            }
            ValueSource::Slices(s) => {
                let text = s.render(payload, p.hex);
                match p.ty {
                    DataType::Raw | DataType::String => Value::String(text),
                    ty => match expr::convert(&Json::String(text), ty) {
                        Ok(v) => v,
                        Err(e) => {
                            errors.push(ConvertError::Value {
                                key,
                                reason: e.to_string(),
                            });
                            return None;
                        }
                    },
                }
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
            .map(|(i, p)| build_point(file, &format!("{prefix}[{i}]"), p, bytes))
            .collect::<Result<Vec<_>, _>>()
            .map(Points::List),
    }
}

fn build_point(
    file: &Path,
    prefix: &str,
    p: &DatapointConfig,
    bytes: bool,
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
        Some("topic") => KeySource::Topic(
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
            return Err(err(
                "keySource",
                format!("unknown key source `{other}`; expected message or topic"),
            ))
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
pub(super) fn device_strategy(
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

impl UplinkConverter for MqttUplinkConverter {
    fn convert(
        &self,
        input: UplinkInput<'_>,
        errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError> {
        if self.bytes {
            let d = self.convert_one(
                input.source,
                &Json::Null,
                input.payload,
                input.received_ts,
                errors,
            )?;
            return Ok(vec![d]);
        }
        let json: Json = serde_json::from_slice(input.payload)
            .map_err(|e| ConvertError::Malformed(format!("not valid JSON: {e}")))?;
        match &json {
            Json::Array(items) => {
                // Element by element, merged per device. A bad element is reported and
                // skipped; the good ones still go through.
                let mut out: Vec<DeviceData> = Vec::new();
                let mut first_error = None;
                for item in items {
                    let converted = self.convert_one(
                        input.source,
                        item,
                        input.payload,
                        input.received_ts,
                        errors,
                    );
                    let d = match converted {
                        Ok(d) => d,
                        Err(e) => {
                            if first_error.is_none() {
                                first_error = Some(e);
                            } else {
                                errors.push(e);
                            }
                            continue;
                        }
                    };
                    match out.iter_mut().find(|o| o.device_name == d.device_name) {
                        Some(o) => o.merge(d),
                        None => out.push(d),
                    }
                }
                match first_error {
                    Some(e) if out.is_empty() => Err(e),
                    Some(e) => {
                        errors.push(e);
                        Ok(out)
                    }
                    None => Ok(out),
                }
            }
            _ => Ok(vec![self.convert_one(
                input.source,
                &json,
                input.payload,
                input.received_ts,
                errors,
            )?]),
        }
    }
}

#[cfg(test)]
mod tests;
