//! The Request connector's uplink conversion: the response body is parsed as JSON, cut down by
//! `dataUnpackExpression` (an array becomes one item per element), and each item goes through
//! the `json` converter; a `custom` converter gets the raw body instead.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value as Json;
use tbgw::config::ConfigError;
use tbgw::convert::{ConvertError, UplinkConverter, UplinkInput};
use tbgw::expr::JsonPath;
use tbgw::model::DeviceData;

use super::config::ConverterConfig;
use crate::http_common::convert::{JsonConverter, NameSource};

/// How a mapping converts what it polled.
pub enum Uplink {
    /// The built-in `json` converter.
    Json(JsonConverter),
    /// A custom converter registered with the factory.
    Custom(Arc<dyn UplinkConverter>),
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uplink::Json(c) => f.debug_tuple("Json").field(c).finish(),
            Uplink::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

fn name_source(
    file: &Path,
    key: &str,
    source: &str,
    expr: &str,
) -> Result<NameSource, ConfigError> {
    match source {
        "constant" => Ok(NameSource::Constant(expr.to_string())),
        "message" | "request" | "response" => NameSource::parse(file, key, expr),
        other => Err(ConfigError::new(
            file,
            key.replace("Expression", "ExpressionSource"),
            format!("unknown source `{other}`; expected message, request or constant"),
        )),
    }
}

/// Builds the `json` converter of `prefix` (a `mapping[i].converter` key path), reading the
/// newest (`deviceInfo`), the flat (`deviceNameExpression`) and the legacy
/// (`deviceNameJsonExpression`) forms.
pub fn build_json(
    file: &Path,
    prefix: &str,
    c: &ConverterConfig,
) -> Result<JsonConverter, ConfigError> {
    let (name, profile) = match &c.device_info {
        Some(di) => (
            name_source(
                file,
                &format!("{prefix}.deviceInfo.deviceNameExpression"),
                &di.device_name_expression_source,
                &di.device_name_expression,
            )?,
            name_source(
                file,
                &format!("{prefix}.deviceInfo.deviceProfileExpression"),
                &di.device_profile_expression_source,
                &di.device_profile_expression,
            )?,
        ),
        None => {
            let (key, name) = match (&c.device_name_json_expression, &c.device_name_expression) {
                (Some(n), _) => ("deviceNameJsonExpression", n),
                (None, Some(n)) => ("deviceNameExpression", n),
                (None, None) => {
                    return Err(ConfigError::new(
                        file,
                        format!("{prefix}.deviceInfo"),
                        "missing; the converter needs a device name (deviceInfo or deviceNameJsonExpression)",
                    ))
                }
            };
            let name = NameSource::parse(file, &format!("{prefix}.{key}"), name)?;
            let profile = match (&c.device_type_json_expression, &c.device_profile_expression) {
                (Some(p), _) => {
                    NameSource::parse(file, &format!("{prefix}.deviceTypeJsonExpression"), p)?
                }
                (None, Some(p)) => {
                    NameSource::parse(file, &format!("{prefix}.deviceProfileExpression"), p)?
                }
                (None, None) => NameSource::Constant("default".into()),
            };
            (name, profile)
        }
    };
    JsonConverter::build(
        file,
        prefix,
        name,
        profile,
        &c.attributes,
        &c.telemetry,
        "telemetry",
    )
}

/// The items `dataUnpackExpression` selects: the first match, one item per element when it is
/// an array; the whole body without an expression. No match gives no item.
pub fn unpack(body: Json, path: Option<&JsonPath>) -> Vec<Json> {
    let selected = match path {
        None => body,
        Some(p) => match p.first(&body) {
            Some(v) => v.clone(),
            None => return Vec::new(),
        },
    };
    match selected {
        Json::Array(items) => items,
        other => vec![other],
    }
}

/// Converts items with the `json` converter, merging data per device.
pub fn convert_items(
    conv: &JsonConverter,
    items: &[Json],
    received_ts: i64,
    errors: &mut Vec<ConvertError>,
) -> Vec<DeviceData> {
    let mut out: Vec<DeviceData> = Vec::new();
    for item in items {
        match conv.convert(item, received_ts, errors) {
            Ok(d) => match out.iter_mut().find(|o| o.device_name == d.device_name) {
                Some(o) => o.merge(d),
                None => out.push(d),
            },
            Err(e) => errors.push(e),
        }
    }
    out
}

/// Runs a custom converter over the raw body.
pub fn convert_custom(
    conv: &dyn UplinkConverter,
    url: &str,
    body: &[u8],
    received_ts: i64,
    errors: &mut Vec<ConvertError>,
) -> Vec<DeviceData> {
    let input = UplinkInput {
        source: url,
        payload: body,
        received_ts,
    };
    match conv.convert(input, errors) {
        Ok(d) => d,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unpack_selects_and_splits_arrays() {
        let body = json!({"data": {"devices": [{"id": 1}, {"id": 2}]}});
        let p = JsonPath::parse("data.devices").unwrap();
        assert_eq!(unpack(body.clone(), Some(&p)).len(), 2);
        assert_eq!(unpack(body.clone(), None), vec![body.clone()]);
        let none = JsonPath::parse("nothing").unwrap();
        assert!(unpack(body, Some(&none)).is_empty());
        assert_eq!(unpack(json!([1, 2, 3]), None).len(), 3);
    }

    #[test]
    fn the_three_device_name_forms_are_read() {
        let f = Path::new("request.json");
        let legacy: ConverterConfig = serde_json::from_value(json!({
            "type": "json", "deviceNameJsonExpression": "${id}-${type}", "deviceTypeJsonExpression": "GridVis",
            "telemetry": [{"key": "v", "type": "int", "value": "${v}"}]
        }))
        .unwrap();
        let flat: ConverterConfig = serde_json::from_value(json!({
            "deviceNameExpression": "${id}-${type}", "deviceProfileExpression": "GridVis",
            "timeseries": [{"key": "v", "type": "int", "value": "${v}"}]
        }))
        .unwrap();
        let info: ConverterConfig = serde_json::from_value(json!({
            "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "${id}-${type}",
                           "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "GridVis"},
            "telemetry": [{"key": "v", "type": "int", "value": "${v}"}]
        }))
        .unwrap();
        for c in [legacy, flat, info] {
            let conv = build_json(f, "mapping[0].converter", &c).unwrap();
            let mut errors = Vec::new();
            let d = convert_items(
                &conv,
                &[json!({"id": 3, "type": "x", "v": "4.9"})],
                1,
                &mut errors,
            );
            assert_eq!(d[0].device_name, "3-x");
            assert_eq!(d[0].device_type, "GridVis");
            assert_eq!(d[0].telemetry[0].values[0].1, tbgw::model::Value::Int(4));
        }
        let bad: ConverterConfig = serde_json::from_value(json!({"type": "json"})).unwrap();
        let e = build_json(f, "mapping[0].converter", &bad).unwrap_err();
        assert_eq!(e.key, "mapping[0].converter.deviceInfo");
    }
}
