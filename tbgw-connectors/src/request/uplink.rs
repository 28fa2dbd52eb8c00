//! The Request connector's uplink conversion: the response body is parsed as JSON, cut down by
//! `dataUnpackExpression` (an array becomes one item per element), and each item goes through
//! the `json` converter of [`tbgw::convert`]; a `custom` converter gets the raw body instead.

use serde_json::Value as Json;
use tbgw::convert::{ConvertError, UplinkConverter, UplinkInput};
use tbgw::expr::JsonPath;
use tbgw::model::DeviceData;

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

/// Runs a converter over the raw body (a custom converter).
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
    use std::path::Path;
    use tbgw::convert::{Converter, ConverterConfig, ConverterRegistry};

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
            let Some(Converter::Json(conv)) = build(f, &c).unwrap() else {
                panic!("a json converter");
            };
            let mut errors = Vec::new();
            let d = conv.convert_items(
                "/x",
                &[json!({"id": 3, "type": "x", "v": "4.9"})],
                1,
                &mut errors,
            );
            assert_eq!(d[0].device_name, "3-x");
            assert_eq!(d[0].device_type, "GridVis");
            assert_eq!(d[0].telemetry[0].values[0].1, tbgw::model::Value::Int(4));
        }
        let bad: ConverterConfig = serde_json::from_value(json!({"type": "json"})).unwrap();
        let e = build(f, &bad).unwrap_err();
        assert_eq!(e.key, "mapping[0].converter.deviceInfo");
        let topic: ConverterConfig = serde_json::from_value(json!({
            "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "x"}
        }))
        .unwrap();
        let e = build(f, &topic).unwrap_err();
        assert_eq!(
            e.key,
            "mapping[0].converter.deviceInfo.deviceNameExpressionSource"
        );
        assert!(
            e.reason
                .contains("expected message, request, response or constant"),
            "{e}"
        );
    }

    fn build(
        f: &Path,
        c: &ConverterConfig,
    ) -> Result<Option<Converter>, tbgw::config::ConfigError> {
        let registry = ConverterRegistry::new();
        Converter::build(
            f,
            "mapping[0].converter",
            c,
            &crate::request::DIALECT,
            &registry,
            &mut Vec::new(),
        )
    }
}
