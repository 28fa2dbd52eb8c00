//! Tests of the `json` and `bytes` uplink converters, built from converter sections written
//! the way upstream's connector files write them (mostly `mqtt.json`, the richest dialect).

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value as Json};

use super::*;
use crate::config::{ConfigError, ReportStrategyConfig};
use crate::model::{DeviceData, Value};

/// The MQTT connector's dialect: topics and the bytes converter.
const MQTT: Dialect = Dialect::new().with_topic().with_bytes();

/// The converters these tests build.
type MqttUplinkConverter = Converter;

/// When the gateway "received" every test message.
const RX: i64 = 1_700_000_000_000;

fn config(cfg: Json) -> ConverterConfig {
    serde_json::from_value(cfg).unwrap_or_else(|e| panic!("converter config must parse: {e}"))
}

fn build_at(prefix: &str, cfg: &ConverterConfig) -> Result<Converter, ConfigError> {
    let registry = ConverterRegistry::new();
    Converter::build(
        Path::new("mqtt.json"),
        prefix,
        cfg,
        &MQTT,
        &registry,
        &mut Vec::new(),
    )
    .map(|c| c.expect("a built-in converter"))
}

fn build(cfg: Json) -> MqttUplinkConverter {
    build_at("mapping[0].converter", &config(cfg))
        .unwrap_or_else(|e| panic!("converter must build: {e}"))
}

fn build_err(cfg: Json) -> ConfigError {
    build_at("mapping[0].converter", &config(cfg))
        .expect_err("the converter config must be rejected")
}

/// What one conversion returned plus the per-key errors it reported.
struct Outcome {
    result: Result<Vec<DeviceData>, ConvertError>,
    errors: Vec<ConvertError>,
}

fn convert(c: &MqttUplinkConverter, topic: &str, payload: &[u8]) -> Outcome {
    let mut errors = Vec::new();
    let result = c.convert(
        UplinkInput {
            source: topic,
            payload,
            received_ts: RX,
        },
        &mut errors,
    );
    Outcome { result, errors }
}

/// Converts and expects success without per-key errors.
fn convert_ok(c: &MqttUplinkConverter, topic: &str, payload: &[u8]) -> Vec<DeviceData> {
    let out = convert(c, topic, payload);
    assert!(out.errors.is_empty(), "unexpected errors: {:?}", out.errors);
    out.result
        .unwrap_or_else(|e| panic!("conversion must succeed: {e}"))
}

fn convert_json(c: &MqttUplinkConverter, topic: &str, msg: Json) -> Vec<DeviceData> {
    convert_ok(c, topic, msg.to_string().as_bytes())
}

/// Expected device data, built fluently.
struct Expect(DeviceData);

fn device(name: &str, profile: &str) -> Expect {
    Expect(DeviceData::new(name, profile))
}

impl Expect {
    fn attr(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.0.push_attribute(k, v.into());
        self
    }
    fn ts(mut self, ts: i64, k: &str, v: impl Into<Value>) -> Self {
        self.0.push_telemetry(ts, k, v.into());
        self
    }
    fn done(self) -> DeviceData {
        self.0
    }
}

/// A `json` converter with a constant device name and the given datapoints.
fn json_converter(attributes: Json, timeseries: Json) -> MqttUplinkConverter {
    build(json!({
        "type": "json",
        "deviceInfo": {
            "deviceNameExpressionSource": "constant",
            "deviceNameExpression": "Dev"
        },
        "attributes": attributes,
        "timeseries": timeseries
    }))
}

/// A converter whose device name comes from the given source and expression.
fn named_by(source: &str, expr: &str) -> MqttUplinkConverter {
    build(json!({
        "type": "json",
        "deviceInfo": {
            "deviceNameExpressionSource": source,
            "deviceNameExpression": expr
        },
        "timeseries": [{"type": "raw", "key": "v", "value": "${v}"}]
    }))
}

fn single(data: Vec<DeviceData>) -> DeviceData {
    assert_eq!(data.len(), 1, "expected one device, got {data:#?}");
    data.into_iter().next().expect("one device")
}

// ---------------------------------------------------------------------------------------------
// Device name and profile
// ---------------------------------------------------------------------------------------------

#[test]
fn the_device_name_comes_from_the_message_the_topic_or_a_constant() {
    let msg = json!({"serialNumber": "SN-1", "info": {"name": "nested"}, "v": 1});
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        // (what, source, expression, topic, expected name)
        ("a top-level key", "message", "${serialNumber}", "t", "SN-1"),
        ("a template with literal text", "message", "Device ${serialNumber}", "t", "Device SN-1"),
        ("a nested path", "message", "${info.name}", "t", "nested"),
        ("two placeholders", "message", "${info.name}-${serialNumber}", "t", "nested-SN-1"),
        ("upstream's lookbehind regex", "topic", "(?<=sensor/)(.*?)(?=/data)", "sensor/SN-001/data", "SN-001"),
        ("a regex capture group", "topic", "sensor/(.+)/data", "sensor/abc/data", "abc"),
        ("the last participating group", "topic", "^(a|(b))/(\\w+)$", "b/dev7", "dev7"),
        ("the whole match without groups", "topic", "[^/]+$", "devices/dev9", "dev9"),
        ("a regex without a match: the expression itself", "topic", "(?<=nomatch/)(.*)", "sensor/x/data", "(?<=nomatch/)(.*)"),
        ("a constant", "constant", "Demo Device", "t", "Demo Device"),
        ("a constant that looks like a template", "constant", "${serialNumber}", "t", "${serialNumber}"),
    ];
    for (what, source, expr, topic, expected) in cases {
        let c = named_by(source, expr);
        let d = single(convert_json(&c, topic, msg.clone()));
        assert_eq!(d.device_name, *expected, "device name from {what}");
        assert_eq!(
            d.device_type, "default",
            "profile defaults to `default` ({what})"
        );
    }
}

#[test]
fn the_device_profile_comes_from_the_message_the_topic_or_a_constant() {
    let msg = json!({"sn": "SN-1", "kind": "thermo", "v": 1});
    #[rustfmt::skip]
    let cases: &[(&str, Json, &str, &str)] = &[
        ("a constant", json!({"deviceProfileExpressionSource": "constant", "deviceProfileExpression": "Thermometer"}), "t", "Thermometer"),
        ("the message", json!({"deviceProfileExpressionSource": "message", "deviceProfileExpression": "${kind}"}), "t", "thermo"),
        ("a template", json!({"deviceProfileExpressionSource": "message", "deviceProfileExpression": "${kind}-v2"}), "t", "thermo-v2"),
        ("the topic", json!({"deviceProfileExpressionSource": "topic", "deviceProfileExpression": "^(\\w+)/"}), "meter/1", "meter"),
        ("a missing key: default", json!({"deviceProfileExpressionSource": "message", "deviceProfileExpression": "${absent}"}), "t", "default"),
        ("nothing configured: default", json!({}), "t", "default"),
    ];
    for (what, profile, topic, expected) in cases {
        let mut device_info = json!({
            "deviceNameExpressionSource": "message",
            "deviceNameExpression": "${sn}"
        });
        for (k, v) in profile.as_object().expect("object") {
            device_info[k] = v.clone();
        }
        let c = build(json!({
            "deviceInfo": device_info,
            "timeseries": [{"type": "raw", "key": "v", "value": "${v}"}]
        }));
        let d = single(convert_json(&c, topic, msg.clone()));
        assert_eq!(d.device_name, "SN-1");
        assert_eq!(d.device_type, *expected, "profile from {what}");
    }
}

#[test]
fn a_missing_or_empty_device_name_fails_the_message_with_no_device_name() {
    let c = named_by("message", "${serialNumber}");
    for msg in [
        json!({"v": 1}),
        json!({"serialNumber": "", "v": 1}),
        json!([{"v": 2}]),
    ] {
        let out = convert(&c, "t", msg.to_string().as_bytes());
        match out.result {
            Err(ConvertError::NoDeviceName(reason)) => {
                assert!(
                    reason.contains("`t`"),
                    "the reason names the topic: {reason}"
                )
            }
            other => panic!("expected NoDeviceName for {msg}, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Datapoints
// ---------------------------------------------------------------------------------------------

#[test]
fn each_datapoint_type_converts_the_value_and_types_numeric_strings() {
    let msg = json!({
        "s": "text", "n": 21.7, "ns": "21.7", "neg": "-3.9", "i": 42, "is": " 42 ",
        "b": true, "on": "on", "no": "NO", "zero": "0", "one": 1,
        "obj": {"a": 1}, "arr": [1, 2], "nul_str": "null"
    });
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Value)> = vec![
        ("string", "${s}", Value::from("text")),
        ("string", "${n}", Value::from("21.7")),
        ("string", "${b}", Value::from("true")),
        ("string", "${obj}", Value::from("{\"a\":1}")),
        ("str", "${i}", Value::from("42")),
        ("string", "Value: ${s} (${i})", Value::from("Value: text (42)")),
        ("string", "a constant", Value::from("a constant")),
        ("integer", "${i}", Value::Int(42)),
        ("integer", "${n}", Value::Int(21)),
        ("integer", "${ns}", Value::Int(21)),
        ("integer", "${neg}", Value::Int(-3)),
        ("int", "${is}", Value::Int(42)),
        ("long", "${b}", Value::Int(1)),
        ("double", "${n}", Value::Float(21.7)),
        ("double", "${ns}", Value::Float(21.7)),
        ("double", "${i}", Value::Float(42.0)),
        ("float", "${is}", Value::Float(42.0)),
        ("boolean", "${b}", Value::Bool(true)),
        ("boolean", "${on}", Value::Bool(true)),
        ("boolean", "${no}", Value::Bool(false)),
        ("bool", "${zero}", Value::Bool(false)),
        ("bool", "${one}", Value::Bool(true)),
        ("raw", "${s}", Value::from("text")),
        ("raw", "${ns}", Value::from("21.7")),
        ("raw", "${n}", Value::Float(21.7)),
        ("raw", "${i}", Value::Int(42)),
        ("raw", "${b}", Value::Bool(true)),
        ("raw", "${obj}", Value::Json(json!({"a": 1}))),
        ("json", "${arr}", Value::Json(json!([1, 2]))),
        ("json", "${obj}", Value::Json(json!({"a": 1}))),
        ("DOUBLE", "${ns}", Value::Float(21.7)),
    ];
    for (ty, value, expected) in cases {
        for section in ["attributes", "timeseries"] {
            let point = json!([{"type": ty, "key": "k", "value": value}]);
            let c = if section == "attributes" {
                json_converter(point, json!([]))
            } else {
                json_converter(json!([]), point)
            };
            let d = single(convert_json(&c, "t", msg.clone()));
            let got = if section == "attributes" {
                d.attributes.first().map(|(_, v)| v.clone())
            } else {
                d.telemetry
                    .first()
                    .and_then(|e| e.values.first())
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(
                got,
                Some(expected.clone()),
                "{section}: type {ty}, value {value}"
            );
        }
    }
}

#[test]
fn a_datapoint_without_a_type_keeps_the_json_type() {
    let c = build(json!({
        "deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "Dev"},
        "timeseries": [{"key": "a", "value": "${a}"}, {"key": "b", "value": "${b}"}]
    }));
    let d = single(convert_json(&c, "t", json!({"a": 1, "b": "x"})));
    assert_eq!(
        d,
        device("Dev", "default")
            .ts(RX, "a", 1)
            .ts(RX, "b", "x")
            .done()
    );
}

#[test]
fn a_null_value_is_skipped_without_an_error() {
    let c = json_converter(
        json!([]),
        json!([{"type": "double", "key": "a", "value": "${a}"}, {"type": "double", "key": "b", "value": "${b}"}]),
    );
    let d = single(convert_json(&c, "t", json!({"a": null, "b": 2})));
    assert_eq!(d, device("Dev", "default").ts(RX, "b", 2.0).done());
}

#[test]
fn a_star_takes_every_key_of_the_message_as_attributes_or_timeseries() {
    let msg = json!({"temp": 21.5, "on": true, "name": "x", "obj": {"a": 1}});
    let c = json_converter(json!("*"), json!([]));
    let d = single(convert_json(&c, "t", msg.clone()));
    let mut attrs = d.attributes.clone();
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        attrs,
        vec![
            ("name".to_string(), Value::from("x")),
            ("obj".to_string(), Value::Json(json!({"a": 1}))),
            ("on".to_string(), Value::Bool(true)),
            ("temp".to_string(), Value::Float(21.5)),
        ]
    );
    assert!(d.telemetry.is_empty());

    let c = json_converter(json!([]), json!("*"));
    let d = single(convert_json(&c, "t", msg));
    assert!(d.attributes.is_empty());
    assert_eq!(d.telemetry.len(), 1, "one entry at the receive time");
    assert_eq!(d.telemetry[0].ts, RX);
    let mut values = d.telemetry[0].values.clone();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    let keys: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["name", "obj", "on", "temp"]);
    assert_eq!(values[3].1, Value::Float(21.5));
}

#[test]
fn nested_paths_read_objects_arrays_and_dotted_top_level_keys() {
    let msg = json!({
        "data": {"temp": 21.5, "deep": {"x": "y"}},
        "sensors": [{"value": 1}, {"value": 2}],
        "meter": [{"v": 7}, {"v": 8}],
        "a.b": "dotted",
        "with space": 5,
        "list": [10, 20, 30]
    });
    #[rustfmt::skip]
    let cases: Vec<(&str, Value)> = vec![
        ("${data.temp}", Value::Float(21.5)),
        ("${data.deep.x}", Value::from("y")),
        ("${sensors[1].value}", Value::Int(2)),
        ("${sensors[-1].value}", Value::Int(2)),
        ("${meter[:].v}", Value::Int(7)),
        ("${a.b}", Value::from("dotted")),
        ("${with space}", Value::Int(5)),
        ("${list[0]}", Value::Int(10)),
        ("${data}", Value::Json(json!({"temp": 21.5, "deep": {"x": "y"}}))),
    ];
    for (value, expected) in cases {
        let c = json_converter(
            json!([]),
            json!([{"type": "raw", "key": "k", "value": value}]),
        );
        let d = single(convert_json(&c, "t", msg.clone()));
        assert_eq!(
            d.telemetry[0].values,
            vec![("k".to_string(), expected)],
            "{value}"
        );
    }
}

#[test]
fn keys_may_be_templates_over_the_message() {
    let c = json_converter(
        json!([{"type": "string", "key": "${attrName}", "value": "${attrValue}"}]),
        json!([
            {"type": "double", "key": "${sensor.kind}", "value": "${sensor.value}"},
            {"type": "double", "key": "${sensor.kind}_${id}", "value": "${sensor.value}"}
        ]),
    );
    let d = single(convert_json(
        &c,
        "t",
        json!({"attrName": "firmware", "attrValue": "1.2", "id": 3, "sensor": {"kind": "temp", "value": "20"}}),
    ));
    assert_eq!(
        d,
        device("Dev", "default")
            .attr("firmware", "1.2")
            .ts(RX, "temp", 20.0)
            .ts(RX, "temp_3", 20.0)
            .done()
    );
}

#[test]
fn key_source_topic_takes_the_key_from_the_topic() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        // (key regex, topic, expected key)
        ("sensor/[^/]+/(\\w+)", "sensor/SN-1/temperature", "temperature"),
        ("[^/]+$", "sensor/SN-1/humidity", "humidity"),
        ("(?<=SN-1/)(.*)", "sensor/SN-1/pressure", "pressure"),
    ];
    for (regex, topic, expected) in cases {
        let c = build(json!({
            "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "sensor/([^/]+)/"},
            "timeseries": [{"type": "double", "key": regex, "keySource": "topic", "value": "${value}"}]
        }));
        let d = single(convert_json(&c, topic, json!({"value": "1.5"})));
        assert_eq!(
            d,
            device("SN-1", "default").ts(RX, expected, 1.5).done(),
            "{regex}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

#[test]
fn ts_field_sets_the_timestamp_of_its_datapoint_honouring_dayfirst() {
    #[rustfmt::skip]
    let cases: &[(&str, Json, bool, i64)] = &[
        ("day first", json!("01.02.2024 10:30:00"), true, 1_706_783_400_000),
        ("month first (default)", json!("01.02.2024 10:30:00"), false, 1_704_191_400_000),
        ("day first with slashes", json!("01/02/2024 10:30"), true, 1_706_783_400_000),
        ("ISO 8601", json!("2024-01-15T10:30:00Z"), false, 1_705_314_600_000),
        ("ISO 8601 with an offset", json!("2024-01-15T12:30:00+02:00"), true, 1_705_314_600_000),
        ("epoch seconds", json!(1_705_314_600), false, 1_705_314_600_000),
        ("epoch milliseconds", json!(1_705_314_600_123_i64), false, 1_705_314_600_123),
        ("epoch seconds as text", json!("1705314600"), false, 1_705_314_600_000),
    ];
    for (what, time, dayfirst, expected) in cases {
        let c = json_converter(
            json!([]),
            json!([
                {"type": "double", "key": "temp", "value": "${temp}", "tsField": "${time}", "dayfirst": dayfirst},
                {"type": "double", "key": "other", "value": "${temp}"}
            ]),
        );
        let d = single(convert_json(&c, "t", json!({"time": time, "temp": 20})));
        assert_eq!(
            d,
            device("Dev", "default")
                .ts(*expected, "temp", 20.0)
                .ts(RX, "other", 20.0)
                .done(),
            "{what}"
        );
    }
}

#[test]
fn ts_field_reads_nested_paths_and_falls_back_when_unparseable() {
    let c = json_converter(
        json!([]),
        json!([{"type": "integer", "key": "v", "value": "${v}", "tsField": "${meta.time}"}]),
    );
    let d = single(convert_json(
        &c,
        "t",
        json!({"meta": {"time": 1_600_000_000}, "v": 1}),
    ));
    assert_eq!(d.telemetry[0].ts, 1_600_000_000_000);
    for msg in [
        json!({"meta": {"time": "not a date"}, "v": 1}),
        json!({"v": 1}),
    ] {
        let d = single(convert_json(&c, "t", msg.clone()));
        assert_eq!(d.telemetry[0].ts, RX, "{msg}");
    }
}

#[test]
fn a_top_level_ts_or_timestamp_field_is_the_timestamp_of_the_message() {
    #[rustfmt::skip]
    let cases: &[(&str, Json, i64)] = &[
        ("ts in milliseconds", json!({"ts": 1_600_000_000_000_i64, "temp": 1}), 1_600_000_000_000),
        ("ts in seconds", json!({"ts": 1_600_000_000, "temp": 1}), 1_600_000_000_000),
        ("timestamp", json!({"timestamp": 1_600_000_000_500_i64, "temp": 1}), 1_600_000_000_500),
        ("ISO text", json!({"ts": "2024-01-15T10:30:00Z", "temp": 1}), 1_705_314_600_000),
        ("ts wins over timestamp", json!({"ts": 1_600_000_000_000_i64, "timestamp": 1, "temp": 1}), 1_600_000_000_000),
        ("unparseable: receive time", json!({"ts": "soon", "temp": 1}), RX),
        ("no field: receive time", json!({"temp": 1}), RX),
    ];
    for (what, msg, expected) in cases {
        let c = json_converter(
            json!([{"type": "integer", "key": "a", "value": "${temp}"}]),
            json!([{"type": "integer", "key": "temp", "value": "${temp}"}]),
        );
        let d = single(convert_json(&c, "t", msg.clone()));
        assert_eq!(
            d,
            device("Dev", "default")
                .attr("a", 1)
                .ts(*expected, "temp", 1)
                .done(),
            "{what}"
        );
    }
}

#[test]
fn use_received_ts_ignores_timestamps_in_the_message() {
    let c = build(json!({
        "deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "Dev"},
        "useReceivedTs": true,
        "timeseries": [
            {"type": "integer", "key": "a", "value": "${a}"},
            {"type": "integer", "key": "b", "value": "${b}", "tsField": "${time}"}
        ]
    }));
    let d = single(convert_json(
        &c,
        "t",
        json!({"ts": 1_600_000_000_000_i64, "time": 1_500_000_000, "a": 1, "b": 2}),
    ));
    assert_eq!(
        d,
        device("Dev", "default")
            .ts(RX, "a", 1)
            .ts(RX, "b", 2)
            .done()
    );

    let c = build(json!({
        "deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "Dev"},
        "useReceivedTs": true,
        "timeseries": "*"
    }));
    let d = single(convert_json(
        &c,
        "t",
        json!({"ts": 1_600_000_000_000_i64, "a": 1}),
    ));
    assert!(d.telemetry.iter().all(|e| e.ts == RX), "{d:?}");
}

// ---------------------------------------------------------------------------------------------
// Arrays, malformed payloads, per-key errors
// ---------------------------------------------------------------------------------------------

#[test]
fn a_json_array_is_converted_element_wise_and_merged_per_device() {
    let c = build(json!({
        "deviceInfo": {
            "deviceNameExpressionSource": "message",
            "deviceNameExpression": "${serialNumber}",
            "deviceProfileExpressionSource": "message",
            "deviceProfileExpression": "${type}"
        },
        "attributes": [{"type": "string", "key": "model", "value": "${model}"}],
        "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]
    }));
    let data = convert_json(
        &c,
        "sensors",
        json!([
            {"serialNumber": "A", "type": "thermo", "model": "m1", "temp": 1, "ts": 1_000_000_000_000_i64},
            {"serialNumber": "B", "type": "thermo", "model": "m2", "temp": 2, "ts": 1_000_000_000_000_i64},
            {"serialNumber": "A", "type": "thermo", "model": "m1", "temp": 3, "ts": 1_000_000_001_000_i64},
            {"serialNumber": "A", "type": "thermo", "model": "m1", "temp": 4, "ts": 1_000_000_001_000_i64}
        ]),
    );
    assert_eq!(
        data,
        vec![
            device("A", "thermo")
                .attr("model", "m1")
                .attr("model", "m1")
                .attr("model", "m1")
                .ts(1_000_000_000_000, "temp", 1.0)
                .ts(1_000_000_001_000, "temp", 3.0)
                .ts(1_000_000_001_000, "temp", 4.0)
                .done(),
            device("B", "thermo")
                .attr("model", "m2")
                .ts(1_000_000_000_000, "temp", 2.0)
                .done(),
        ]
    );
    assert!(convert_json(&c, "sensors", json!([])).is_empty());
}

#[test]
fn a_payload_that_is_not_json_is_malformed() {
    let c = named_by("constant", "Dev");
    for payload in [&b"{not json"[..], b"", b"21.5 C", b"\xff\xfe"] {
        let out = convert(&c, "t", payload);
        assert!(
            matches!(out.result, Err(ConvertError::Malformed(_))),
            "{payload:?}: {:?}",
            out.result
        );
        assert!(out.errors.is_empty());
    }
}

#[test]
fn a_missing_key_is_reported_while_the_other_keys_still_convert() {
    let c = json_converter(
        json!([{"type": "string", "key": "model", "value": "${model}"}]),
        json!([
            {"type": "double", "key": "temp", "value": "${temp}"},
            {"type": "double", "key": "hum", "value": "${hum}"},
            {"type": "double", "key": "deep", "value": "${data.missing}"}
        ]),
    );
    let out = convert(
        &c,
        "t",
        json!({"temp": 21, "data": {}}).to_string().as_bytes(),
    );
    let d = single(out.result.expect("the message still converts"));
    assert_eq!(d, device("Dev", "default").ts(RX, "temp", 21.0).done());
    let keys: Vec<&str> = out
        .errors
        .iter()
        .map(|e| match e {
            ConvertError::Value { key, .. } => key.as_str(),
            other => panic!("expected a per-key error, got {other:?}"),
        })
        .collect();
    assert_eq!(keys, vec!["model", "hum", "deep"]);
    let shown = out.errors[1].to_string();
    assert!(shown.contains("hum") && shown.contains("${hum}"), "{shown}");
}

#[test]
fn a_value_of_the_wrong_type_is_reported_while_the_other_keys_still_convert() {
    #[rustfmt::skip]
    let cases: &[(&str, Json)] = &[
        ("double", json!("abc")),
        ("integer", json!("abc")),
        ("boolean", json!("maybe")),
        ("double", json!({"a": 1})),
        ("integer", json!([1])),
    ];
    for (ty, bad) in cases {
        let c = json_converter(
            json!([{"type": *ty, "key": "a_bad", "value": "${bad}"}]),
            json!([
                {"type": *ty, "key": "bad", "value": "${bad}"},
                {"type": "double", "key": "good", "value": "${good}"}
            ]),
        );
        let out = convert(
            &c,
            "t",
            json!({"bad": bad, "good": "1.5"}).to_string().as_bytes(),
        );
        let d = single(out.result.expect("the message still converts"));
        assert_eq!(
            d,
            device("Dev", "default").ts(RX, "good", 1.5).done(),
            "{ty} {bad}"
        );
        assert_eq!(out.errors.len(), 2, "{:?}", out.errors);
        for (e, key) in out.errors.iter().zip(["a_bad", "bad"]) {
            match e {
                ConvertError::Value { key: k, reason } => {
                    assert_eq!(k, key);
                    assert!(!reason.is_empty());
                }
                other => panic!("expected a per-key error, got {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy keys
// ---------------------------------------------------------------------------------------------

/// (what, converter keys, topic, message, (expected name, expected profile)).
type LegacyCase = (
    &'static str,
    Json,
    &'static str,
    Json,
    (&'static str, &'static str),
);

#[test]
fn legacy_device_name_and_type_keys_still_work() {
    #[rustfmt::skip]
    let cases: &[LegacyCase] = &[
        (
            "deviceNameJsonExpression + deviceTypeJsonExpression",
            json!({"deviceNameJsonExpression": "${serialNumber}", "deviceTypeJsonExpression": "${sensorType}"}),
            "sensor/data",
            json!({"serialNumber": "SN-1", "sensorType": "Thermometer", "v": 1}),
            ("SN-1", "Thermometer"),
        ),
        (
            "deviceNameTopicExpression",
            json!({"deviceNameTopicExpression": "(?<=sensor/)(.*?)(?=/data)"}),
            "sensor/SN-2/data",
            json!({"v": 1}),
            ("SN-2", "default"),
        ),
        (
            "deviceNameTopicExpression + deviceTypeTopicExpression",
            json!({"deviceNameTopicExpression": "(?<=sensor/)(.*?)(?=/data)", "deviceTypeTopicExpression": "^(\\w+)/"}),
            "sensor/SN-3/data",
            json!({"v": 1}),
            ("SN-3", "sensor"),
        ),
        (
            "the JSON expression wins over the topic expression",
            json!({"deviceNameJsonExpression": "${sn}", "deviceNameTopicExpression": "(.*)"}),
            "sensor/x/data",
            json!({"sn": "from-json", "v": 1}),
            ("from-json", "default"),
        ),
        (
            "deviceInfo wins over the legacy keys",
            json!({"deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "new"}, "deviceNameJsonExpression": "${sn}"}),
            "t",
            json!({"sn": "old", "v": 1}),
            ("new", "default"),
        ),
    ];
    for (what, keys, topic, msg, (name, profile)) in cases {
        let mut cfg = keys.clone();
        cfg["type"] = json!("json");
        cfg["timeseries"] = json!([{"type": "integer", "key": "v", "value": "${v}"}]);
        let c = build(cfg);
        let d = single(convert_json(&c, topic, msg.clone()));
        assert_eq!(d, device(name, profile).ts(RX, "v", 1).done(), "{what}");
    }
}

#[test]
fn legacy_telemetry_is_an_alias_of_timeseries() {
    let c = build(json!({
        "deviceNameJsonExpression": "${sn}",
        "telemetry": [{"type": "integer", "key": "v", "value": "${v}"}]
    }));
    let d = single(convert_json(&c, "t", json!({"sn": "x", "v": 2})));
    assert_eq!(d, device("x", "default").ts(RX, "v", 2).done());
}

// ---------------------------------------------------------------------------------------------
// The bytes converter
// ---------------------------------------------------------------------------------------------

#[test]
fn the_bytes_converter_takes_the_name_and_values_from_byte_slices() {
    let c = build(json!({
        "type": "bytes",
        "deviceInfo": {
            "deviceNameExpressionSource": "message",
            "deviceNameExpression": "[0:4]",
            "deviceProfileExpressionSource": "constant",
            "deviceProfileExpression": "default"
        },
        "attributes": [{"type": "raw", "key": "rawData", "value": "[:]"}],
        "timeseries": [
            {"type": "raw", "key": "temp", "value": "[4:]"},
            {"type": "double", "key": "tempNum", "value": "[4:]"},
            {"type": "integer", "key": "tempInt", "value": "[4:6]"},
            {"type": "string", "key": "label", "value": "[4:6]C [-1]"}
        ]
    }));
    let d = single(convert_ok(&c, "sensor/raw_data", b"SN0121.5"));
    assert_eq!(
        d,
        device("SN01", "default")
            .attr("rawData", "SN0121.5")
            .ts(RX, "temp", "21.5")
            .ts(RX, "tempNum", 21.5)
            .ts(RX, "tempInt", 21)
            .ts(RX, "label", "21C 5")
            .done()
    );
}

#[test]
fn the_bytes_converter_reports_a_slice_of_the_wrong_type_and_needs_a_name() {
    let c = build(json!({
        "type": "bytes",
        "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "[0:4]"},
        "timeseries": [
            {"type": "double", "key": "bad", "value": "[0:4]"},
            {"type": "raw", "key": "rest", "value": "[4:]"}
        ]
    }));
    let out = convert(&c, "t", b"ABCD12");
    let d = single(out.result.expect("converts"));
    assert_eq!(d, device("ABCD", "default").ts(RX, "rest", "12").done());
    assert!(
        matches!(&out.errors[..], [ConvertError::Value { key, .. }] if key == "bad"),
        "{:?}",
        out.errors
    );

    // An empty payload gives an empty name.
    let out = convert(&c, "t", b"");
    assert!(
        matches!(out.result, Err(ConvertError::NoDeviceName(_))),
        "{:?}",
        out.result
    );

    // A binary payload is never "malformed" for the bytes converter.
    let c = build(json!({
        "type": "bytes",
        "deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "Bin"},
        "timeseries": [{"type": "raw", "key": "v", "value": "[1:]"}]
    }));
    let d = single(convert_ok(&c, "t", b"{xy"));
    assert_eq!(d, device("Bin", "default").ts(RX, "v", "xy").done());
}

// ---------------------------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------------------------

#[test]
fn configuration_errors_name_the_key_path() {
    let name = json!({"deviceNameExpressionSource": "constant", "deviceNameExpression": "Dev"});
    #[rustfmt::skip]
    let cases: Vec<(&str, Json, &str, &str)> = vec![
        (
            "a bad device name regex",
            json!({"deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "sensor/(unclosed"}}),
            "mapping[0].converter.deviceInfo.deviceNameExpression",
            "invalid regular expression",
        ),
        (
            "a bad device profile regex",
            json!({"deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "D", "deviceProfileExpressionSource": "topic", "deviceProfileExpression": "[z-a]"}}),
            "mapping[0].converter.deviceInfo.deviceProfileExpression",
            "invalid regular expression",
        ),
        (
            "a bad device name template",
            json!({"deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "${serial"}}),
            "mapping[0].converter.deviceInfo.deviceNameExpression",
            "unterminated",
        ),
        (
            "an unknown device name source",
            json!({"deviceInfo": {"deviceNameExpressionSource": "header", "deviceNameExpression": "x"}}),
            "mapping[0].converter.deviceInfo.deviceNameExpressionSource",
            "unknown source `header`",
        ),
        (
            "an unknown device profile source",
            json!({"deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "x", "deviceProfileExpressionSource": "header", "deviceProfileExpression": "p"}}),
            "mapping[0].converter.deviceInfo.deviceProfileExpressionSource",
            "unknown source `header`",
        ),
        (
            "a bad value template",
            json!({"deviceInfo": name, "attributes": [{"type": "string", "key": "k", "value": "${}"}]}),
            "mapping[0].converter.attributes[0].value",
            "empty placeholder",
        ),
        (
            "a bad key template",
            json!({"deviceInfo": name, "timeseries": [{"type": "string", "key": "ok", "value": "${a}"}, {"type": "string", "key": "${k", "value": "${a}"}]}),
            "mapping[0].converter.timeseries[1].key",
            "unterminated",
        ),
        (
            "a bad tsField template",
            json!({"deviceInfo": name, "timeseries": [{"type": "string", "key": "k", "value": "${a}", "tsField": "${t"}]}),
            "mapping[0].converter.timeseries[0].tsField",
            "unterminated",
        ),
        (
            "a bad key regex",
            json!({"deviceInfo": name, "timeseries": [{"type": "string", "key": "(", "keySource": "topic", "value": "${a}"}]}),
            "mapping[0].converter.timeseries[0].key",
            "invalid regular expression",
        ),
        (
            "an unknown key source",
            json!({"deviceInfo": name, "timeseries": [{"type": "string", "key": "k", "keySource": "header", "value": "${a}"}]}),
            "mapping[0].converter.timeseries[0].keySource",
            "unknown key source `header`",
        ),
        (
            "an unknown datapoint type",
            json!({"deviceInfo": name, "timeseries": [{"type": "decimal", "key": "k", "value": "${a}"}]}),
            "mapping[0].converter.timeseries[0].type",
            "unknown type `decimal`",
        ),
        (
            "a datapoint list that is a string other than *",
            json!({"deviceInfo": name, "attributes": "all"}),
            "mapping[0].converter.attributes",
            "\"*\"",
        ),
        (
            "an unknown converter type",
            json!({"type": "xml", "deviceInfo": name}),
            "mapping[0].converter.type",
            "`xml`",
        ),
        (
            "no device name at all",
            json!({"timeseries": []}),
            "mapping[0].converter.deviceInfo",
            "missing",
        ),
        (
            "a bad legacy topic expression",
            json!({"deviceNameTopicExpression": "(?<=x"}),
            "mapping[0].converter.deviceNameTopicExpression",
            "invalid regular expression",
        ),
        (
            "a bad legacy JSON expression",
            json!({"deviceNameJsonExpression": "${"}),
            "mapping[0].converter.deviceNameJsonExpression",
            "unterminated",
        ),
        (
            "a bad legacy type expression",
            json!({"deviceNameJsonExpression": "${a}", "deviceTypeTopicExpression": "("}),
            "mapping[0].converter.deviceTypeTopicExpression",
            "invalid regular expression",
        ),
        (
            "a bad byte slice name",
            json!({"type": "bytes", "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "[0:"}}),
            "mapping[0].converter.deviceInfo.deviceNameExpression",
            "byte slice",
        ),
        (
            "a bad byte slice value",
            json!({"type": "bytes", "deviceInfo": name, "timeseries": [{"type": "raw", "key": "k", "value": "[1:2:3:4]"}]}),
            "mapping[0].converter.timeseries[0].value",
            "byte slice",
        ),
    ];
    for (what, cfg, key, reason) in cases {
        let e = build_err(cfg);
        assert_eq!(e.file, Path::new("mqtt.json"), "{what}");
        assert_eq!(e.key, key, "{what}: {e}");
        assert!(
            e.reason.contains(reason),
            "{what}: `{e}` should contain {reason:?}"
        );
        assert!(
            e.to_string().starts_with(&format!("mqtt.json: {key}: ")),
            "{what}: {e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream's sample mqtt.json
// ---------------------------------------------------------------------------------------------

fn upstream_mqtt_json() -> Option<Json> {
    let path = crate::test_util::upstream_sample("mqtt.json")?;
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Some(serde_json::from_str(&text).expect("upstream's mqtt.json is JSON"))
}

#[test]
fn the_three_mappings_of_upstreams_sample_mqtt_json_convert_their_messages() {
    let Some(sample) = upstream_mqtt_json() else {
        return;
    };
    let mapping = sample["mapping"].as_array().expect("mapping[]");
    let converters: Vec<MqttUplinkConverter> = mapping[..3]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let cfg = config(m["converter"].clone());
            build_at(&format!("mapping[{i}].converter"), &cfg)
                .unwrap_or_else(|e| panic!("mapping[{i}] must build: {e}"))
        })
        .collect();
    #[rustfmt::skip]
    let cases: Vec<(usize, &str, Vec<u8>, DeviceData)> = vec![
        (
            0,
            "data/",
            json!({"power": "2.5", "frequency": 50.2, "temperature": 21.5, "humidity": "40", "relay": "on"}).to_string().into_bytes(),
            device("Demo Device", "default")
                .attr("power", 2.5)
                .attr("frequency", 50)
                .ts(RX, "temperature", 21.5)
                .ts(RX, "humidity", 40.0)
                .ts(RX, "relay", true)
                .done(),
        ),
        (
            1,
            "sensor/SN-001/data",
            json!({"sensorModel": "T-1000", "temp": "22.5", "hum": 45}).to_string().into_bytes(),
            device("SN-001", "Thermometer")
                .attr("model", "T-1000")
                .ts(RX, "temperature", 22.5)
                .ts(RX, "humidity", "45")
                .done(),
        ),
        (
            2,
            "sensor/raw_data",
            b"SN0121.5".to_vec(),
            device("SN01", "default")
                .attr("rawData", "SN0121.5")
                .ts(RX, "temp", "21.5")
                .done(),
        ),
    ];
    for (i, topic, payload, expected) in cases {
        let d = single(convert_ok(&converters[i], topic, &payload));
        assert_eq!(d, expected, "mapping[{i}] on `{topic}`");
    }

    // The fourth mapping is a custom converter: built from the registry with its
    // extensionConfig, and inactive when nobody registered its class.
    let cfg = config(mapping[3]["converter"].clone());
    let file = Path::new("mqtt.json");
    let mut ignored = Vec::new();
    let none = Converter::build(
        file,
        "mapping[3].converter",
        &cfg,
        &MQTT,
        &ConverterRegistry::new(),
        &mut ignored,
    )
    .expect("an unregistered class is not an error");
    assert!(none.is_none());
    assert_eq!(
        ignored,
        ["mapping[3].converter (custom converter `CustomMqttUplinkConverter` is not registered; this mapping is inactive)"]
    );
    let registry = ConverterRegistry::new().with_factory("CustomMqttUplinkConverter", |cfg| {
        // Upstream's example: key name -> byte length (keys in sorted order here).
        let lengths = cfg.as_object().ok_or("extensionConfig must be an object")?;
        Ok(Arc::new(ByteLengths(
            lengths
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0) as usize))
                .collect(),
        )) as Arc<dyn UplinkConverter>)
    });
    let custom = Converter::build(
        file,
        "mapping[3].converter",
        &cfg,
        &MQTT,
        &registry,
        &mut ignored,
    )
    .expect("builds")
    .expect("registered");
    let d = single(convert_ok(
        &custom,
        "custom/sensors/s1",
        &[0x05, 0x00, 0x19, 0x01, 0x02],
    ));
    assert_eq!(
        d,
        device("custom/sensors/s1", "default")
            .ts(RX, "batteryLevel", 5)
            .ts(RX, "humidity", 25)
            .ts(RX, "temperature", 258)
            .done()
    );
}

/// A custom converter in the spirit of upstream's `CustomMqttUplinkConverter`: consecutive
/// big-endian integers of the given byte lengths, in key order.
#[derive(Debug)]
struct ByteLengths(Vec<(String, usize)>);

impl UplinkConverter for ByteLengths {
    fn convert(
        &self,
        input: UplinkInput<'_>,
        _errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError> {
        let mut d = DeviceData::new(input.source, "default");
        let mut at = 0;
        for (k, len) in &self.0 {
            let bytes = input
                .payload
                .get(at..at + len)
                .ok_or_else(|| ConvertError::Malformed("payload too short".into()))?;
            let v = bytes.iter().fold(0i64, |acc, b| acc << 8 | i64::from(*b));
            d.push_telemetry(input.received_ts, k.clone(), Value::Int(v));
            at += len;
        }
        Ok(vec![d])
    }
}

#[test]
fn a_bad_array_element_is_reported_and_the_good_ones_still_convert() {
    let cfg: ConverterConfig = serde_json::from_value(serde_json::json!({
        "type": "json",
        "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "${name}"},
        "timeseries": [{"type": "integer", "key": "v", "value": "${v}"}]
    }))
    .unwrap();
    let conv = build_at("mapping[0].converter", &cfg).unwrap();
    let payload = br#"[{"name": "a", "v": 1}, {"v": 2}, {"name": "b", "v": 3}]"#;
    let mut errors = Vec::new();
    let out = conv
        .convert(
            UplinkInput {
                source: "t",
                payload,
                received_ts: 5,
            },
            &mut errors,
        )
        .unwrap();
    assert_eq!(
        out.iter()
            .map(|d| d.device_name.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert!(
        matches!(errors.as_slice(), [ConvertError::NoDeviceName(_)]),
        "{errors:?}"
    );
}

#[test]
fn a_key_template_without_a_match_is_reported() {
    let cfg: ConverterConfig = serde_json::from_value(serde_json::json!({
        "type": "json",
        "deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "d"},
        "timeseries": [{"type": "integer", "key": "${absent}", "value": "${v}"}]
    }))
    .unwrap();
    let conv = build_at("mapping[0].converter", &cfg).unwrap();
    let mut errors = Vec::new();
    conv.convert(
        UplinkInput {
            source: "t",
            payload: br#"{"v": 1}"#,
            received_ts: 5,
        },
        &mut errors,
    )
    .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn hex_mode_renders_slices_as_hex_in_keys_and_values() {
    let c = build(json!({
        "type": "bytes",
        "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "[0:2]"},
        "timeseries": [
            {"type": "string", "key": "raw", "value": "[2:4]", "hexMode": true},
            {"type": "string", "key": "k[4:5]", "value": "[5:]"}
        ]
    }));
    let out = convert_ok(&c, "t", b"ab\x01\xffXyz");
    assert_eq!(out[0].device_name, "ab");
    let values: Vec<_> = out[0]
        .telemetry
        .iter()
        .flat_map(|t| t.values.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .collect();
    assert!(
        values.contains(&("raw".to_string(), Value::String("01ff".into()))),
        "{values:?}"
    );
    assert!(
        values.contains(&("kX".to_string(), Value::String("yz".into()))),
        "{values:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Report strategy overrides
// ---------------------------------------------------------------------------------------------

mod report_strategy {
    use super::*;
    use crate::config::{AggregationFunction, ReportType};

    fn on_change() -> ReportStrategyConfig {
        ReportStrategyConfig {
            kind: ReportType::OnChange,
            ..ReportStrategyConfig::default()
        }
    }

    #[test]
    fn without_strategies_records_carry_no_overrides() {
        let c = json_converter(
            json!([]),
            json!([{"type": "integer", "key": "t", "value": "${t}"}]),
        );
        assert!(c.report_overrides().is_none());
        let d = single(convert_json(&c, "x", json!({"t": 1})));
        assert!(d.report.is_none());
    }

    #[test]
    fn device_and_datapoint_strategies_are_shared_by_every_record() {
        let c = build(json!({
            "type": "json",
            "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "${id}"},
            "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 5000, "aggregationFunction": "AVERAGE"},
            "attributes": [{"type": "string", "key": "fw", "value": "${fw}", "reportStrategy": {"type": "ON_CHANGE"}}],
            "timeseries": [{"type": "double", "key": "t", "value": "${t}"}]
        }));
        let o = c.report_overrides().expect("overrides").clone();
        let device = o.device.clone().expect("device level");
        assert_eq!(device.kind, ReportType::OnReportPeriod);
        assert_eq!(device.report_period, 5000);
        assert_eq!(device.aggregation_function, AggregationFunction::Average);
        assert_eq!(o.keys.get("fw"), Some(&on_change()));
        assert!(!o.keys.contains_key("t"));
        let out = convert_json(
            &c,
            "x",
            json!([{"id": "a", "t": 1.5, "fw": "1"}, {"id": "b", "t": 2, "fw": "2"}]),
        );
        assert_eq!(out.len(), 2);
        for d in &out {
            assert!(
                Arc::ptr_eq(d.report.as_ref().expect("attached"), &o),
                "one Arc for all"
            );
        }
    }

    #[test]
    fn the_bytes_converter_attaches_the_same_overrides() {
        let c = build(json!({
            "type": "bytes",
            "deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "B"},
            "timeseries": [{"type": "raw", "key": "v", "value": "[0:2]", "reportStrategy": {"type": "ON_CHANGE"}}]
        }));
        let d = single(convert_ok(&c, "x", b"ab"));
        assert_eq!(
            d.report.expect("attached").keys.get("v"),
            Some(&on_change())
        );
    }

    #[test]
    fn a_template_key_gets_its_strategy_under_the_key_of_each_message() {
        let c = json_converter(
            json!([]),
            json!([
                {"type": "integer", "key": "${name}", "value": "${v}", "reportStrategy": {"type": "ON_CHANGE"}},
                {"type": "integer", "key": "fixed", "value": "${v}"}
            ]),
        );
        assert!(
            c.report_overrides().is_none(),
            "nothing is known before a message"
        );
        let d = single(convert_json(&c, "x", json!({"name": "speed", "v": 3})));
        let o = d.report.expect("per-message overrides");
        assert_eq!(o.keys.get("speed"), Some(&on_change()));
        assert_eq!(o.keys.len(), 1);
        assert_eq!(o.device, None);
    }

    #[test]
    fn the_legacy_send_data_only_on_change_is_a_device_level_on_change() {
        let c = json_converter_with(json!({"sendDataOnlyOnChange": true}));
        assert_eq!(
            c.report_overrides().and_then(|o| o.device.clone()),
            Some(on_change())
        );
        let c = json_converter_with(json!({"sendDataOnlyOnChange": false}));
        assert!(c.report_overrides().is_none());
        // reportStrategy wins over the legacy flag.
        let c = json_converter_with(
            json!({"sendDataOnlyOnChange": true, "reportStrategy": {"type": "ON_RECEIVED"}}),
        );
        assert_eq!(
            c.report_overrides()
                .and_then(|o| o.device.as_ref().map(|s| s.kind)),
            Some(ReportType::OnReceived)
        );
    }

    #[test]
    fn the_mapping_level_applies_when_the_converter_has_none() {
        let c = json_converter(json!([]), json!([])).with_mapping_strategy(Some(on_change()));
        assert_eq!(
            c.report_overrides().and_then(|o| o.device.clone()),
            Some(on_change())
        );
        let own = ReportStrategyConfig {
            kind: ReportType::OnReceived,
            ..ReportStrategyConfig::default()
        };
        let c = json_converter_with(json!({"reportStrategy": {"type": "ON_RECEIVED"}}))
            .with_mapping_strategy(Some(on_change()));
        assert_eq!(
            c.report_overrides().and_then(|o| o.device.clone()),
            Some(own)
        );
    }

    #[test]
    fn bad_strategies_are_config_errors_with_their_key_path() {
        let cases = [
            (
                json!({"reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 0}}),
                "mapping[0].converter.reportStrategy.reportPeriod",
            ),
            (
                json!({"sendDataOnlyOnChange": "yes"}),
                "mapping[0].converter.sendDataOnlyOnChange",
            ),
            (
                json!({"timeseries": [{"type": "raw", "key": "k", "value": "${k}", "reportStrategy": {"type": "NEVER"}}]}),
                "mapping[0].converter.timeseries[0].reportStrategy.type",
            ),
            (
                json!({"attributes": [{"type": "raw", "key": "${k}", "value": "${k}", "reportStrategy": {"ttl": 5}}]}),
                "mapping[0].converter.attributes[0].reportStrategy.type",
            ),
        ];
        for (extra, key) in cases {
            let mut cfg = json!({
                "type": "json",
                "deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "Dev"}
            });
            for (k, v) in extra.as_object().expect("object") {
                cfg[k] = v.clone();
            }
            let e = build_err(cfg);
            assert_eq!(e.key, key, "{e}");
        }
    }

    fn json_converter_with(extra: Json) -> MqttUplinkConverter {
        let mut cfg = json!({
            "type": "json",
            "deviceInfo": {"deviceNameExpressionSource": "constant", "deviceNameExpression": "Dev"},
            "timeseries": [{"type": "integer", "key": "t", "value": "${t}"}]
        });
        for (k, v) in extra.as_object().expect("object") {
            cfg[k] = v.clone();
        }
        build(cfg)
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP connectors' dialect: JSON values converted as they are (no payload to parse)
// ---------------------------------------------------------------------------------------------

mod http_dialect {
    use super::*;

    /// The Request connector's dialect.
    const REQUEST: Dialect = Dialect::new()
        .message_sources(&["message", "request", "response"])
        .timeseries_key("telemetry");

    fn conv(attrs: Json, ts: Json, name: &str) -> JsonConverter {
        let cfg = config(json!({
            "deviceNameExpression": name, "deviceTypeExpression": "SD",
            "attributes": attrs, "telemetry": ts
        }));
        JsonConverter::build(
            Path::new("t.json"),
            "converter",
            &cfg,
            &REQUEST,
            &mut Vec::new(),
        )
        .unwrap_or_else(|e| panic!("converter must build: {e}"))
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
        let d = c.convert_value("/api", &msg, 1000, &mut errors).unwrap();
        assert_eq!(
            d,
            device("7-GV", "SD")
                .attr("serialNumber", "12")
                .ts(1000, "Maintainer", "ann")
                .ts(1000, "combine", "ann:40")
                .ts(1000, "t", 21.5)
                .done()
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        let e = c
            .convert_value("/api", &json!({"type": "x"}), 1, &mut errors)
            .unwrap_err();
        assert!(
            matches!(e, ConvertError::NoDeviceName(ref r) if r.contains("`/api`")),
            "{e}"
        );
    }

    #[test]
    fn star_takes_every_key_and_ts_field_is_used() {
        let c = conv(json!("*"), json!("*"), "dev");
        let mut errors = Vec::new();
        let d = c
            .convert_value(
                "/",
                &json!({"a": 1, "ts": 1_700_000_000_000i64}),
                5,
                &mut errors,
            )
            .unwrap();
        assert_eq!(d.telemetry[0].ts, 1_700_000_000_000);
        assert_eq!(d.attributes.len(), 2);
    }

    #[test]
    fn items_merge_per_device_and_bad_items_are_reported() {
        let c = conv(
            json!([]),
            json!([{"key": "v", "type": "integer", "value": "${v}"}]),
            "${id}",
        );
        let mut errors = Vec::new();
        let items = [
            json!({"id": "a", "v": 1}),
            json!({"v": 2}),
            json!({"id": "a", "v": 3}),
            json!({"x": 0}),
        ];
        let out = c.convert_items("/api", &items, 9, &mut errors);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0]
                .telemetry
                .iter()
                .map(|t| t.values.len())
                .sum::<usize>(),
            2
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn topics_and_bytes_are_not_part_of_this_dialect() {
        let f = Path::new("request.json");
        let registry = ConverterRegistry::new();
        let build = |cfg: Json, ignored: &mut Vec<String>| {
            Converter::build(
                f,
                "mapping[0].converter",
                &config(cfg),
                &REQUEST,
                &registry,
                ignored,
            )
        };
        let e = build(
            json!({"type": "bytes", "deviceNameExpression": "d"}),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.key, "mapping[0].converter.type");
        assert!(e.reason.contains("expected json or custom"), "{e}");
        let e = build(
            json!({"deviceNameExpression": "d", "telemetry": [{"key": "(", "keySource": "topic", "value": "${a}"}]}),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.key, "mapping[0].converter.telemetry[0].keySource");
        let mut ignored = Vec::new();
        let e = build(json!({"deviceNameTopicExpression": "(.*)"}), &mut ignored).unwrap_err();
        assert_eq!(e.key, "mapping[0].converter.deviceInfo");
        assert_eq!(
            ignored,
            ["mapping[0].converter.deviceNameTopicExpression (this connector has no topics)"]
        );
    }
}
