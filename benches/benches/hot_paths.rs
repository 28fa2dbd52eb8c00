//! Hot paths of the uplink: expression evaluation, JSON conversion of a ~100-byte message,
//! storage put/read/ack, packing many devices into gateway payloads, and the report
//! strategy filter.
//!
//! Run: `cargo bench -p tbgw-benches`.

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;
use tbgw::config::{ReportStrategyConfig, ReportType};
use tbgw::convert::{ConverterConfig, JsonConverter, UplinkConverter, UplinkInput};
use tbgw::expr::Template;
use tbgw::model::{DeviceData, Value};
use tbgw::report::ReportFilter;
use tbgw::storage::{EventStorage, FullPolicy, MemoryStorage};
use tbgw_connectors::mqtt::DIALECT as MQTT;

/// A typical ~100-byte device message.
const MESSAGE: &[u8] = br#"{"serialNumber":"SN-000123","temp":21.75,"hum":48,"relay":true,"model":"T-1000","fw":"1.4.2"}"#;

fn expressions(c: &mut Criterion) {
    let msg: serde_json::Value = serde_json::from_slice(MESSAGE).unwrap();
    let single = Template::parse("${temp}").unwrap();
    let mixed = Template::parse("Device ${serialNumber} (${model})").unwrap();
    let nested_msg = json!({"data": {"sensors": [{"v": 1}, {"v": 2.5}]}});
    let path = Template::parse("${data.sensors[1].v}").unwrap();
    let mut g = c.benchmark_group("expr");
    g.bench_function("resolve_single_key", |b| b.iter(|| single.resolve(&msg)));
    g.bench_function("render_mixed_template", |b| b.iter(|| mixed.render(&msg)));
    g.bench_function("resolve_jsonpath", |b| b.iter(|| path.resolve(&nested_msg)));
    g.finish();
}

fn json_converter(c: &mut Criterion) {
    let cfg: ConverterConfig = serde_json::from_value(json!({
        "type": "json",
        "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "${serialNumber}",
                       "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "thermometer"},
        "attributes": [{"type": "string", "key": "model", "value": "${model}"},
                       {"type": "string", "key": "fw", "value": "${fw}"}],
        "timeseries": [{"type": "double", "key": "temperature", "value": "${temp}"},
                       {"type": "integer", "key": "humidity", "value": "${hum}"},
                       {"type": "boolean", "key": "relay", "value": "${relay}"}]
    }))
    .unwrap();
    let conv = JsonConverter::build(
        Path::new("mqtt.json"),
        "mapping[0].converter",
        &cfg,
        &MQTT,
        &mut Vec::new(),
    )
    .unwrap();
    let mut g = c.benchmark_group("convert");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mqtt_json_100_bytes", |b| {
        let mut errors = Vec::new();
        b.iter(|| {
            errors.clear();
            conv.convert(
                UplinkInput {
                    source: "sensor/SN-000123/data",
                    payload: MESSAGE,
                    received_ts: 1,
                },
                &mut errors,
            )
        })
    });
    g.finish();
}

fn record(i: usize) -> DeviceData {
    let mut d = DeviceData::new(format!("device-{:04}", i % 100), "thermometer");
    d.push_telemetry(
        1_700_000_000_000 + i as i64,
        "temperature",
        Value::Float(21.5),
    );
    d.push_telemetry(1_700_000_000_000 + i as i64, "humidity", Value::Int(48));
    d
}

fn storage(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("storage");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("memory_put_read_ack_1000", |b| {
        let s = MemoryStorage::new(100_000, 1000, FullPolicy::Block);
        b.iter_batched(
            || (0..1000).map(record).collect::<Vec<_>>(),
            |recs| {
                rt.block_on(async {
                    s.put(recs).await.unwrap();
                    let batch = s.read(1000).await.unwrap();
                    s.ack(batch.last_seq()).await.unwrap();
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn packing(c: &mut Criterion) {
    let records: Vec<Arc<DeviceData>> = (0..1000).map(|i| Arc::new(record(i))).collect();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("1000_records_100_devices_8k_payloads", |b| {
        b.iter(|| tbgw::internal::payload::pack(&records, 8196))
    });
    g.bench_function("1000_records_100_devices_64k_payloads", |b| {
        b.iter(|| tbgw::internal::payload::pack(&records, 65536))
    });
    g.finish();
}

/// ON_CHANGE over a 10-key device record in which one key changes per record (the other nine
/// are dropped): the per-record cost the ingest task pays when a strategy is configured.
fn report_filter(c: &mut Criterion) {
    let general = ReportStrategyConfig {
        kind: ReportType::OnChange,
        ..ReportStrategyConfig::default()
    };
    let mut filter = ReportFilter::new(Some(general), Default::default());
    let keys: Vec<String> = (0..10).map(|k| format!("key_{k}")).collect();
    let mut n = 0i64;
    let mut g = c.benchmark_group("report_filter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("on_change", |b| {
        b.iter_batched(
            || {
                n += 1;
                let ts = 1_700_000_000_000 + n;
                let mut d = DeviceData::new("device-0001", "thermometer");
                d.push_telemetry(ts, keys[0].as_str(), Value::Int(n));
                for k in &keys[1..] {
                    d.push_telemetry(ts, k.as_str(), Value::Float(21.5));
                }
                (d, ts)
            },
            |(d, ts)| filter.apply("MQTT", d, ts),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    expressions,
    json_converter,
    storage,
    packing,
    report_filter
);
criterion_main!(benches);
