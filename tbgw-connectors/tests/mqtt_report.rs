//! The MQTT connector's report strategy levels: what `mqtt.json` may say at the mapping,
//! converter and datapoint levels, how it is validated, and that the records a real
//! broker delivers carry the overrides the gateway's `ReportFilter` acts on.

#![cfg_attr(not(feature = "mqtt"), allow(missing_docs))]
#![cfg(feature = "mqtt")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use serde_json::{json, Value as Json};
use tbgw::config::{ConfigError, ReportStrategyConfig, ReportType};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::convert::{ConvertError, ConverterRegistry, UplinkConverter, UplinkInput};
use tbgw::model::{DeviceData, Value};
use tbgw::report::ReportFilter;
use tbgw::test_util::Mosquitto;
use tbgw::uplink::{StoreOutcome, UplinkMessage};
use tbgw_connectors::mqtt::MqttFactory;

const WAIT: Duration = Duration::from_secs(10);

fn spec(config: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "MQTT".into(),
        connector_type: "mqtt".into(),
        file: "mqtt.json".into(),
        config: config.into(),
    }
}

fn build(config: Json) -> Result<Vec<String>, ConfigError> {
    let mut ignored = Vec::new();
    MqttFactory::new().build(&spec(config), &mut ignored)?;
    Ok(ignored)
}

fn broker(port: u16) -> Json {
    json!({"host": "127.0.0.1", "port": port, "clientId": "tbgw-report-test"})
}

fn converter(extra: Json) -> Json {
    let mut c = json!({
        "type": "json",
        "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "r/(.+)"},
        "timeseries": [{"type": "integer", "key": "t", "value": "${t}"}]
    });
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

#[test]
fn upstreams_sample_builds_and_its_send_data_only_on_change_is_used() {
    let Some(path) = tbgw::test_util::upstream_sample("mqtt.json") else {
        return;
    };
    let config: Json =
        serde_json::from_str(&std::fs::read_to_string(path).expect("sample")).expect("json");
    let ignored = build(config).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !ignored.iter().any(|k| k.contains("sendDataOnlyOnChange")),
        "{ignored:?}"
    );
}

#[test]
fn strategies_at_every_level_are_accepted_and_not_reported_ignored() {
    let ignored = build(json!({
        "broker": broker(1883),
        "reportStrategy": {"type": "ON_CHANGE"},
        "sendDataOnlyOnChange": false,
        "mapping": [{
            "topicFilter": "r/+",
            "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 1000},
            "converter": converter(json!({
                "attributes": [{"type": "string", "key": "fw", "value": "${fw}",
                                "reportStrategy": {"type": "ON_CHANGE", "ttl": 60}}],
                "timeseries": [{"type": "integer", "key": "t", "value": "${t}",
                                "reportStrategy": {"type": "ON_CHANGE_OR_REPORT_PERIOD", "reportPeriod": 500,
                                                   "aggregationFunction": "MAX"}}]
            }))
        }]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ignored.is_empty(), "{ignored:?}");
}

#[test]
fn unused_keys_hidden_levels_and_conflicting_key_strategies_are_reported() {
    let ignored = build(json!({
        "broker": broker(1883),
        "mapping": [{
            "topicFilter": "r/+",
            "reportStrategy": {"type": "ON_CHANGE"},
            "converter": converter(json!({
                "reportStrategy": {"type": "ON_RECEIVED", "period": 5},
                "attributes": [{"type": "integer", "key": "x", "value": "${x}",
                                "reportStrategy": {"type": "ON_CHANGE"}}],
                "timeseries": [{"type": "integer", "key": "x", "value": "${x}",
                                "reportStrategy": {"type": "ON_RECEIVED"}}]
            }))
        }]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let has = |prefix: &str| ignored.iter().any(|k| k.starts_with(prefix));
    assert!(
        has("mapping[0].converter.reportStrategy.period"),
        "{ignored:?}"
    );
    assert!(
        has("mapping[0].reportStrategy (converter.reportStrategy"),
        "{ignored:?}"
    );
    assert!(
        has("mapping[0].converter.timeseries[0].reportStrategy (another datapoint named `x`"),
        "{ignored:?}"
    );
    assert_eq!(ignored.len(), 3, "{ignored:?}");
}

#[test]
fn bad_strategies_fail_the_build_with_their_key_path() {
    let cases = [
        (
            json!({"topicFilter": "r/+", "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 0},
                   "converter": converter(json!({}))}),
            "mapping[0].reportStrategy.reportPeriod",
        ),
        (
            json!({"topicFilter": "r/+", "converter": converter(json!({"reportStrategy": "ON_CHANGE"}))}),
            "mapping[0].converter.reportStrategy",
        ),
        (
            json!({"topicFilter": "r/+", "converter": converter(json!({
                "timeseries": [{"type": "integer", "key": "t", "value": "${t}",
                                "reportStrategy": {"type": "ON_CHANGE", "aggregationFunction": "MEDIAN"}}]}))}),
            "mapping[0].converter.timeseries[0].reportStrategy.aggregationFunction",
        ),
        (
            json!({"topicFilter": "r/+", "converter": {"type": "custom", "extension": "X",
                                                        "sendDataOnlyOnChange": 1}}),
            "mapping[0].converter.sendDataOnlyOnChange",
        ),
    ];
    for (mapping, key) in cases {
        let e = build(json!({"broker": broker(1883), "mapping": [mapping]})).expect_err(key);
        assert_eq!(e.key, key, "{e}");
        assert_eq!(e.file, std::path::Path::new("mqtt.json"));
    }
}

/// A custom converter: one telemetry value `c` from the payload's length.
#[derive(Debug)]
struct Length;

impl UplinkConverter for Length {
    fn convert(
        &self,
        input: UplinkInput<'_>,
        _errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError> {
        let mut d = DeviceData::new("custom-dev", "default");
        d.push_telemetry(
            input.received_ts,
            "c",
            Value::Int(input.payload.len() as i64),
        );
        Ok(vec![d])
    }
}

async fn publisher(port: u16) -> AsyncClient {
    let (client, mut ev) =
        AsyncClient::new(MqttOptions::new("report-publisher", "127.0.0.1", port), 100);
    tokio::spawn(async move {
        loop {
            if ev.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    client
}

/// The next data records; confirms their storage so the connector acknowledges the broker.
async fn next(ends: &mut TestEnds, wait: Duration) -> Option<Vec<DeviceData>> {
    loop {
        let msg = tokio::time::timeout(wait, ends.uplink.recv())
            .await
            .ok()??;
        if let UplinkMessage::Data { data, ack, .. } = msg {
            if let Some(a) = ack {
                let _ = a.send(StoreOutcome::Stored);
            }
            return Some(data);
        }
    }
}

fn values(d: &Option<DeviceData>) -> Vec<(String, Value)> {
    d.iter()
        .flat_map(|d| d.telemetry.iter().flat_map(|e| e.values.clone()))
        .chain(d.iter().flat_map(|d| d.attributes.clone()))
        .collect()
}

#[tokio::test]
async fn records_from_the_broker_carry_the_mapping_strategies_and_the_filter_applies_them() {
    let broker_ = Mosquitto::start().await.unwrap();
    let config = json!({
        "broker": broker(broker_.port()),
        "mapping": [
            {
                "topicFilter": "r/+",
                "converter": converter(json!({
                    "reportStrategy": {"type": "ON_CHANGE"},
                    "attributes": [{"type": "string", "key": "alarm", "value": "${alarm}",
                                    "reportStrategy": {"type": "ON_RECEIVED"}}],
                    "timeseries": [{"type": "integer", "key": "t", "value": "${t}"}]
                }))
            },
            {
                "topicFilter": "custom/+",
                "reportStrategy": {"type": "ON_CHANGE"},
                "converter": {"type": "custom", "extension": "Length"}
            }
        ]
    });
    let mut ignored = Vec::new();
    let mut connector = MqttFactory::new()
        .with_converters(ConverterRegistry::new().with("Length", Arc::new(Length)))
        .build(&spec(config), &mut ignored)
        .expect("config is valid");
    assert!(ignored.is_empty(), "{ignored:?}");
    let (mut cx, mut ends) = ConnectorContext::for_test("MQTT");
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    let p = publisher(broker_.port()).await;

    // Until the connector has subscribed, publish the first message again.
    let mut first = None;
    for _ in 0..50 {
        p.publish(
            "r/dev",
            QoS::AtLeastOnce,
            false,
            r#"{"t": 1, "alarm": "HIGH"}"#,
        )
        .await
        .unwrap();
        if let Some(d) = next(&mut ends, Duration::from_millis(200)).await {
            first = Some(d);
            break;
        }
    }
    let first = first.expect("the connector never received a message");
    let o = first[0].report.clone().expect("overrides attached");
    assert_eq!(
        o.device.as_ref().map(|s| s.kind),
        Some(ReportType::OnChange)
    );
    assert_eq!(
        o.keys.get("alarm").map(|s| s.kind),
        Some(ReportType::OnReceived)
    );

    // The gateway's filter: general ON_RECEIVED, no connector level.
    let mut filter = ReportFilter::new(None, HashMap::new());
    let now = 1_700_000_000_000;
    let out = filter.apply("MQTT", first[0].clone(), now);
    assert_eq!(
        values(&out),
        vec![
            ("t".into(), Value::Int(1)),
            ("alarm".into(), Value::from("HIGH"))
        ]
    );
    // Drain duplicates of the first message published while subscribing.
    while let Some(d) = next(&mut ends, Duration::from_millis(300)).await {
        assert!(Arc::ptr_eq(d[0].report.as_ref().expect("attached"), &o));
        filter.apply("MQTT", d[0].clone(), now);
    }

    // The same temperature again: only the ON_RECEIVED attribute passes.
    p.publish(
        "r/dev",
        QoS::AtLeastOnce,
        false,
        r#"{"t": 1, "alarm": "HIGH"}"#,
    )
    .await
    .unwrap();
    let d = next(&mut ends, WAIT).await.expect("second message");
    assert_eq!(
        values(&filter.apply("MQTT", d[0].clone(), now)),
        vec![("alarm".into(), Value::from("HIGH"))]
    );
    p.publish(
        "r/dev",
        QoS::AtLeastOnce,
        false,
        r#"{"t": 2, "alarm": "HIGH"}"#,
    )
    .await
    .unwrap();
    let d = next(&mut ends, WAIT).await.expect("third message");
    assert_eq!(
        values(&filter.apply("MQTT", d[0].clone(), now)),
        vec![
            ("t".into(), Value::Int(2)),
            ("alarm".into(), Value::from("HIGH"))
        ]
    );

    // A custom converter's records get the mapping's device level.
    p.publish("custom/x", QoS::AtLeastOnce, false, "abc")
        .await
        .unwrap();
    let d = next(&mut ends, WAIT).await.expect("custom message");
    let strategy = d[0].report.as_ref().and_then(|o| o.device.clone());
    assert_eq!(
        strategy,
        Some(ReportStrategyConfig {
            kind: ReportType::OnChange,
            ..ReportStrategyConfig::default()
        })
    );
    assert!(filter.apply("MQTT", d[0].clone(), now).is_some());
    assert_eq!(filter.apply("MQTT", d[0].clone(), now), None);

    ends.cancel.cancel();
    task.await.unwrap();
}
