//! The `json` uplink converter shared by the Request and REST connectors: a device name and
//! profile, attribute and time-series datapoints, each a `${…}` template over a JSON object.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;
use tbgw::config::ConfigError;
use tbgw::convert::ConvertError;
use tbgw::expr::{self, DataType, Template, TsOptions};
use tbgw::model::{DeviceData, Value};

/// A datapoint list or `"*"` (every top-level key of the message).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Datapoints {
    /// No datapoints.
    #[default]
    #[serde(skip)]
    None,
    /// `"*"`: every top-level key.
    All(String),
    /// Listed datapoints.
    List(Vec<DatapointConfig>),
}

/// One datapoint of `attributes[]` or `timeseries[]` / `telemetry[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapointConfig {
    /// Value type: `string`, `integer`/`int`, `double`/`float`, `boolean`, `raw`, `json`.
    #[serde(rename = "type", default = "default_dp_type")]
    pub kind: String,
    /// The key; may be a template.
    pub key: String,
    /// The value template, e.g. `${temp}` or `${Developer}:${hum}`.
    pub value: String,
    /// Timestamp of this datapoint from the message (template).
    pub ts_field: Option<String>,
    /// Day first in ambiguous dates.
    #[serde(default)]
    pub dayfirst: bool,
    /// Year first in ambiguous dates.
    #[serde(default)]
    pub yearfirst: bool,
}

fn default_dp_type() -> String {
    "raw".into()
}

#[derive(Debug)]
enum Key {
    Constant(String),
    Template(Template),
}

#[derive(Debug)]
struct Datapoint {
    key: Key,
    value: Template,
    ty: DataType,
    ts: Option<(Template, TsOptions)>,
}

#[derive(Debug)]
enum Points {
    All,
    List(Vec<Datapoint>),
}

/// Where a device name or profile comes from.
#[derive(Debug)]
pub enum NameSource {
    /// The text itself.
    Constant(String),
    /// A template over the message.
    Template(Template),
}

impl NameSource {
    /// A template when the text has a placeholder, else a constant.
    pub fn parse(file: &Path, key: &str, text: &str) -> Result<Self, ConfigError> {
        if text.contains("${") {
            Template::parse(text)
                .map(NameSource::Template)
                .map_err(|e| ConfigError::new(file, key, e.to_string()))
        } else {
            Ok(NameSource::Constant(text.to_string()))
        }
    }

    /// The constant, or the template rendered over `data`; `None` without a match or when
    /// the result is empty.
    pub fn resolve(&self, data: &Json) -> Option<String> {
        match self {
            NameSource::Constant(s) => Some(s.clone()),
            NameSource::Template(t) => t.render(data).filter(|s| !s.is_empty()),
        }
    }
}

/// A compiled `json` converter.
#[derive(Debug)]
pub struct JsonConverter {
    name: NameSource,
    profile: NameSource,
    attributes: Points,
    timeseries: Points,
}

impl JsonConverter {
    /// Builds a converter; `prefix` is the converter's key path for errors.
    pub fn build(
        file: &Path,
        prefix: &str,
        name: NameSource,
        profile: NameSource,
        attributes: &Datapoints,
        timeseries: &Datapoints,
        timeseries_key: &str,
    ) -> Result<Self, ConfigError> {
        Ok(JsonConverter {
            name,
            profile,
            attributes: build_points(file, &format!("{prefix}.attributes"), attributes)?,
            timeseries: build_points(file, &format!("{prefix}.{timeseries_key}"), timeseries)?,
        })
    }

    /// Converts one JSON object. Problems with single keys go to `errors`; a missing device
    /// name fails the whole conversion.
    pub fn convert(
        &self,
        json: &Json,
        received_ts: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Result<DeviceData, ConvertError> {
        let name = self.name.resolve(json).ok_or_else(|| {
            ConvertError::NoDeviceName("the device name expression has no match".into())
        })?;
        let profile = self
            .profile
            .resolve(json)
            .unwrap_or_else(|| "default".into());
        let mut data = DeviceData::new(name, profile);
        let ts = ["ts", "timestamp"]
            .iter()
            .find_map(|k| json.get(*k))
            .and_then(|v| expr::parse_timestamp(v, TsOptions::default()))
            .unwrap_or(received_ts);
        match &self.attributes {
            Points::All => all_keys(json, |k, v| data.push_attribute(k, v)),
            Points::List(points) => {
                for p in points {
                    if let Some((k, v, _)) = eval(p, json, errors) {
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
                    if let Some((k, v, own_ts)) = eval(p, json, errors) {
                        data.push_telemetry(own_ts.unwrap_or(ts), k, v);
                    }
                }
            }
        }
        Ok(data)
    }
}

fn eval(
    p: &Datapoint,
    json: &Json,
    errors: &mut Vec<ConvertError>,
) -> Option<(String, Value, Option<i64>)> {
    let key = match &p.key {
        Key::Constant(k) => k.clone(),
        Key::Template(t) => match t.render(json) {
            Some(k) => k,
            None => {
                errors.push(ConvertError::Value {
                    key: t.source().to_string(),
                    reason: "the key template has no match in the message".into(),
                });
                return None;
            }
        },
    };
    let Some(v) = p.value.resolve(json) else {
        errors.push(ConvertError::Value {
            key,
            reason: format!("`{}` has no match in the message", p.value.source()),
        });
        return None;
    };
    if v.is_null() {
        return None;
    }
    let value = match expr::convert(&v, p.ty) {
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

fn all_keys(json: &Json, mut f: impl FnMut(String, Value)) {
    if let Some(obj) = json.as_object() {
        for (k, v) in obj {
            f(k.clone(), Value::from_json(v.clone()));
        }
    }
}

fn build_points(file: &Path, prefix: &str, d: &Datapoints) -> Result<Points, ConfigError> {
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
            .map(|(i, p)| build_point(file, &format!("{prefix}[{i}]"), p))
            .collect::<Result<Vec<_>, _>>()
            .map(Points::List),
    }
}

fn build_point(file: &Path, prefix: &str, p: &DatapointConfig) -> Result<Datapoint, ConfigError> {
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
    let key = if p.key.contains("${") {
        Key::Template(Template::parse(&p.key).map_err(|e| err("key", e.to_string()))?)
    } else {
        Key::Constant(p.key.clone())
    };
    let value = Template::parse(&p.value).map_err(|e| err("value", e.to_string()))?;
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
    Ok(Datapoint { key, value, ty, ts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(attrs: Json, ts: Json, name: &str) -> JsonConverter {
        let f = Path::new("t.json");
        JsonConverter::build(
            f,
            "converter",
            NameSource::parse(f, "n", name).unwrap(),
            NameSource::Constant("SD".into()),
            &serde_json::from_value(attrs).unwrap(),
            &serde_json::from_value(ts).unwrap(),
            "telemetry",
        )
        .unwrap()
    }

    #[test]
    fn templates_types_and_missing_keys() {
        let c = conv(
            json!([{"key": "serialNumber", "type": "string", "value": "${serial}"}]),
            json!([
                {"key": "Maintainer", "type": "string", "value": "${Developer}"},
                {"key": "combine", "type": "string", "value": "${Developer}:${hum}"},
                {"key": "t", "type": "double", "value": "${data.temp}"},
                {"key": "bad", "type": "integer", "value": "${word}"},
                {"key": "gone", "type": "integer", "value": "${nothing}"}
            ]),
            "${id}-${type}",
        );
        let mut errors = Vec::new();
        let msg = json!({"id": 7, "type": "GV", "serial": 12, "Developer": "ann", "hum": 40,
                         "data": {"temp": "21.5"}, "word": "abc"});
        let d = c.convert(&msg, 1000, &mut errors).unwrap();
        assert_eq!(d.device_name, "7-GV");
        assert_eq!(d.device_type, "SD");
        assert_eq!(
            d.attributes,
            vec![("serialNumber".into(), Value::from("12"))]
        );
        assert_eq!(
            d.telemetry[0].values,
            vec![
                ("Maintainer".into(), Value::from("ann")),
                ("combine".into(), Value::from("ann:40")),
                ("t".into(), Value::Float(21.5)),
            ]
        );
        assert_eq!(d.telemetry[0].ts, 1000);
        assert_eq!(errors.len(), 2, "{errors:?}");
        let e = c
            .convert(&json!({"type": "x"}), 1, &mut errors)
            .unwrap_err();
        assert!(matches!(e, ConvertError::NoDeviceName(_)));
    }

    #[test]
    fn star_takes_every_key_and_ts_field_is_used() {
        let c = conv(json!("*"), json!("*"), "dev");
        let mut errors = Vec::new();
        let d = c
            .convert(&json!({"a": 1, "ts": 1_700_000_000_000i64}), 5, &mut errors)
            .unwrap();
        assert_eq!(d.telemetry[0].ts, 1_700_000_000_000);
        assert_eq!(d.attributes.len(), 2);
    }
}
