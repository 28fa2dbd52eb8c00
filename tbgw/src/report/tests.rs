use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::config::{AggregationFunction, ReportStrategyConfig, ReportType};
use crate::model::{DeviceData, Value};

const T0: i64 = 1_700_000_000_000;

fn strategy(kind: ReportType) -> ReportStrategyConfig {
    ReportStrategyConfig {
        kind,
        ..ReportStrategyConfig::default()
    }
}

fn periodic(kind: ReportType, period: u64, f: AggregationFunction) -> ReportStrategyConfig {
    ReportStrategyConfig {
        kind,
        report_period: period,
        aggregation_function: f,
        ..ReportStrategyConfig::default()
    }
}

fn with_ttl(mut s: ReportStrategyConfig, ttl: u64) -> ReportStrategyConfig {
    s.ttl = ttl;
    s
}

/// A filter whose general level is `s`.
fn general(s: ReportStrategyConfig) -> ReportFilter {
    ReportFilter::new(Some(s), HashMap::new())
}

fn tel(device: &str, ts: i64, kvs: &[(&str, Value)]) -> DeviceData {
    let mut d = DeviceData::new(device, "thermometer");
    for (k, v) in kvs {
        d.push_telemetry(ts, *k, v.clone());
    }
    d
}

fn attr(device: &str, kvs: &[(&str, Value)]) -> DeviceData {
    let mut d = DeviceData::new(device, "thermometer");
    for (k, v) in kvs {
        d.push_attribute(*k, v.clone());
    }
    d
}

fn one(device: &str, key: &str, v: impl Into<Value>) -> DeviceData {
    tel(device, T0, &[(key, v.into())])
}

/// The telemetry values of a record, flattened.
fn tvals(d: &Option<DeviceData>) -> Vec<(String, Value)> {
    d.iter()
        .flat_map(|d| d.telemetry.iter().flat_map(|e| e.values.clone()))
        .collect()
}

fn kv(k: &str, v: impl Into<Value>) -> (String, Value) {
    (k.to_string(), v.into())
}

fn overrides(
    device: Option<ReportStrategyConfig>,
    keys: &[(&str, ReportStrategyConfig)],
) -> Arc<ReportOverrides> {
    Arc::new(ReportOverrides {
        device,
        keys: keys
            .iter()
            .map(|(k, s)| (k.to_string(), s.clone()))
            .collect(),
    })
}

/// Every telemetry value of what `due` returned: (connector, device, key, value, ts).
fn due_values(out: &[(String, DeviceData)]) -> Vec<(String, String, String, Value, i64)> {
    let mut v = Vec::new();
    for (c, d) in out {
        for e in &d.telemetry {
            for (k, val) in &e.values {
                v.push((
                    c.clone(),
                    d.device_name.clone(),
                    k.clone(),
                    val.clone(),
                    e.ts,
                ));
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// Passthrough and DISABLED

#[test]
fn default_filter_is_passthrough_and_forwards_everything_unchanged() {
    let mut f = ReportFilter::new(None, HashMap::new());
    assert!(f.is_passthrough());
    let d = one("a", "t", 1i64);
    for _ in 0..3 {
        assert_eq!(f.apply("c", d.clone(), T0), Some(d.clone()));
    }
    assert_eq!(f.next_due(), None);
    assert!(f.due(T0 + 1_000_000).is_empty());
    assert_eq!(f.stats().entries, 0, "ON_RECEIVED caches nothing");
}

#[test]
fn general_disabled_passes_everything_even_with_connector_and_device_levels() {
    let mut conns = HashMap::new();
    conns.insert("c".to_string(), strategy(ReportType::OnChange));
    let mut f = ReportFilter::new(Some(strategy(ReportType::Disabled)), conns);
    assert!(f.is_passthrough());
    let mut d = one("a", "t", 1i64);
    d.report = Some(overrides(Some(strategy(ReportType::OnChange)), &[]));
    for _ in 0..3 {
        assert_eq!(tvals(&f.apply("c", d.clone(), T0)), vec![kv("t", 1i64)]);
    }
    assert!(f.is_passthrough());
    assert_eq!(f.next_due(), None);
}

#[test]
fn a_connector_level_or_a_record_with_overrides_ends_passthrough() {
    let mut conns = HashMap::new();
    conns.insert("c".to_string(), strategy(ReportType::OnChange));
    assert!(!ReportFilter::new(None, conns).is_passthrough());
    assert!(!general(strategy(ReportType::OnChange)).is_passthrough());

    let mut f = ReportFilter::new(None, HashMap::new());
    let mut d = one("a", "t", 1i64);
    d.report = Some(overrides(None, &[]));
    f.apply("c", d, T0);
    assert!(!f.is_passthrough());
}

#[test]
fn disabled_below_the_general_level_means_on_received() {
    let mut f = general(strategy(ReportType::OnChange));
    let mut d = one("a", "t", 1i64);
    d.report = Some(overrides(Some(strategy(ReportType::Disabled)), &[]));
    for _ in 0..3 {
        assert_eq!(tvals(&f.apply("c", d.clone(), T0)), vec![kv("t", 1i64)]);
    }
}

// ---------------------------------------------------------------------------------------
// ON_CHANGE

#[test]
fn on_change_forwards_the_first_value_and_then_only_changes() {
    let mut f = general(strategy(ReportType::OnChange));
    assert_eq!(
        tvals(&f.apply("c", one("a", "t", 1i64), T0)),
        vec![kv("t", 1i64)]
    );
    assert_eq!(f.apply("c", one("a", "t", 1i64), T0 + 1), None);
    assert_eq!(
        tvals(&f.apply("c", one("a", "t", 2i64), T0 + 2)),
        vec![kv("t", 2i64)]
    );
    assert_eq!(
        tvals(&f.apply("c", one("a", "t", 1i64), T0 + 3)),
        vec![kv("t", 1i64)]
    );
    assert_eq!(
        f.next_due().map(|t| t > T0),
        Some(true),
        "only the TTL sweep"
    );
}

#[test]
fn on_change_keeps_the_timestamp_of_the_forwarded_value() {
    let mut f = general(strategy(ReportType::OnChange));
    let out = f
        .apply("c", tel("a", 42, &[("t", Value::Int(1))]), T0)
        .unwrap();
    assert_eq!(out.telemetry[0].ts, 42);
}

#[test]
fn on_change_compares_floats_with_a_tolerance_of_one_thousandth_against_the_last_forwarded() {
    let mut f = general(strategy(ReportType::OnChange));
    assert!(f.apply("c", one("a", "t", 20.0), T0).is_some());
    assert_eq!(f.apply("c", one("a", "t", 20.0009), T0), None);
    assert_eq!(f.apply("c", one("a", "t", 19.9991), T0), None);
    // A slow drift is compared with the last forwarded value (20.0), not the last received.
    assert_eq!(f.apply("c", one("a", "t", 20.0008), T0), None);
    assert_eq!(
        tvals(&f.apply("c", one("a", "t", 20.0011), T0)),
        vec![kv("t", 20.0011)]
    );
    assert_eq!(f.apply("c", one("a", "t", 20.0015), T0), None);
}

#[test]
fn on_change_compares_an_integer_and_a_float_as_numbers() {
    let mut f = general(strategy(ReportType::OnChange));
    assert!(f.apply("c", one("a", "t", 1i64), T0).is_some());
    assert_eq!(f.apply("c", one("a", "t", 1.0), T0), None);
    assert_eq!(f.apply("c", one("a", "t", 1.0005), T0), None);
    assert!(f.apply("c", one("a", "t", 1.5), T0).is_some());
    // Two integers are compared exactly.
    assert!(f.apply("c", one("a", "n", 1_000_000i64), T0).is_some());
    assert!(f.apply("c", one("a", "n", 1_000_001i64), T0).is_some());
}

#[test]
fn on_change_treats_a_change_of_type_as_a_change() {
    let mut f = general(strategy(ReportType::OnChange));
    assert!(f.apply("c", one("a", "t", 1i64), T0).is_some());
    assert!(f.apply("c", one("a", "t", "1"), T0).is_some());
    assert!(f.apply("c", one("a", "t", true), T0).is_some());
    assert!(f
        .apply("c", one("a", "t", Value::Json(json!([1]))), T0)
        .is_some());
    assert_eq!(
        f.apply("c", one("a", "t", Value::Json(json!([1]))), T0),
        None
    );
    assert!(f
        .apply("c", one("a", "t", Value::Json(json!([1, 2]))), T0)
        .is_some());
    assert!(f.apply("c", one("a", "t", "x"), T0).is_some());
    assert_eq!(f.apply("c", one("a", "t", "x"), T0), None);
}

#[test]
fn on_change_treats_two_nans_as_the_same_value() {
    let mut f = general(strategy(ReportType::OnChange));
    assert!(f.apply("c", one("a", "t", f64::NAN), T0).is_some());
    assert_eq!(f.apply("c", one("a", "t", f64::NAN), T0), None);
    assert!(f.apply("c", one("a", "t", 0.0), T0).is_some());
}

#[test]
fn values_are_kept_apart_per_connector_device_and_kind() {
    let mut f = general(strategy(ReportType::OnChange));
    assert!(f.apply("c1", one("a", "x", 1i64), T0).is_some());
    assert!(
        f.apply("c2", one("a", "x", 1i64), T0).is_some(),
        "other connector"
    );
    assert!(
        f.apply("c1", one("b", "x", 1i64), T0).is_some(),
        "other device"
    );
    let a = f.apply("c1", attr("a", &[("x", Value::Int(1))]), T0);
    assert_eq!(
        a.map(|d| d.attributes),
        Some(vec![kv("x", 1i64)]),
        "attribute x is not telemetry x"
    );
    assert_eq!(f.apply("c1", attr("a", &[("x", Value::Int(1))]), T0), None);
    assert_eq!(f.apply("c1", one("a", "x", 1i64), T0), None);
    assert_eq!(f.stats().entries, 4);
}

#[test]
fn a_record_is_filtered_key_by_key_and_empty_entries_disappear() {
    let mut f = general(strategy(ReportType::OnChange));
    let mut d = tel("a", T0, &[("t", Value::Int(1)), ("h", Value::Int(50))]);
    d.push_telemetry(T0 + 1, "t", Value::Int(1));
    d.push_attribute("fw", Value::from("1.0"));
    let out = f.apply("c", d, T0).unwrap();
    // The second sample of `t` in the same record equals the first: dropped, entry removed.
    assert_eq!(out.telemetry.len(), 1);
    assert_eq!(out.telemetry[0].values, vec![kv("t", 1i64), kv("h", 50i64)]);
    assert_eq!(out.attributes, vec![kv("fw", "1.0")]);

    let mut d = tel("a", T0, &[("t", Value::Int(1)), ("h", Value::Int(51))]);
    d.push_attribute("fw", Value::from("1.0"));
    let out = f.apply("c", d, T0).unwrap();
    assert_eq!(out.telemetry[0].values, vec![kv("h", 51i64)]);
    assert!(out.attributes.is_empty());
    assert_eq!(out.device_name, "a");
    assert_eq!(out.device_type, "thermometer");
}

// ---------------------------------------------------------------------------------------
// ON_REPORT_PERIOD and ON_CHANGE_OR_REPORT_PERIOD

#[test]
fn on_report_period_forwards_the_first_value_then_the_latest_every_period_with_the_report_time() {
    let s = periodic(ReportType::OnReportPeriod, 1000, AggregationFunction::None);
    let mut f = general(s);
    assert_eq!(
        tvals(&f.apply("c", one("a", "t", 1i64), T0)),
        vec![kv("t", 1i64)]
    );
    assert_eq!(f.apply("c", one("a", "t", 2i64), T0 + 100), None);
    assert_eq!(f.apply("c", one("a", "t", 3i64), T0 + 200), None);
    assert_eq!(f.next_due(), Some(T0 + 1000));
    assert!(f.due(T0 + 999).is_empty());
    let out = f.due(T0 + 1000);
    assert_eq!(
        due_values(&out),
        vec![("c".into(), "a".into(), "t".into(), Value::Int(3), T0 + 1000)]
    );
    assert_eq!(out[0].1.device_type, "thermometer");
    assert!(out[0].1.report.is_none());
    assert_eq!(f.next_due(), Some(T0 + 2000));
    // No new value: the latest value again (upstream's behaviour), stamped with the new time.
    let out = f.due(T0 + 2000);
    assert_eq!(
        due_values(&out),
        vec![("c".into(), "a".into(), "t".into(), Value::Int(3), T0 + 2000)]
    );
}

#[test]
fn on_report_period_holds_a_changed_value_until_the_period() {
    let mut f = general(periodic(
        ReportType::OnReportPeriod,
        500,
        AggregationFunction::None,
    ));
    f.apply("c", one("a", "t", 1i64), T0);
    assert_eq!(f.apply("c", one("a", "t", 100i64), T0 + 1), None);
}

#[test]
fn a_late_report_skips_missed_periods_instead_of_bursting() {
    let mut f = general(periodic(
        ReportType::OnReportPeriod,
        1000,
        AggregationFunction::None,
    ));
    f.apply("c", one("a", "t", 1i64), T0);
    let out = f.due(T0 + 10_500);
    assert_eq!(due_values(&out).len(), 1);
    assert_eq!(f.next_due(), Some(T0 + 11_500));
}

#[test]
fn on_change_or_report_period_forwards_changes_and_restarts_the_period() {
    let mut f = general(periodic(
        ReportType::OnChangeOrReportPeriod,
        1000,
        AggregationFunction::None,
    ));
    assert!(f.apply("c", one("a", "t", 1i64), T0).is_some());
    assert_eq!(f.apply("c", one("a", "t", 1i64), T0 + 100), None);
    assert_eq!(
        tvals(&f.apply("c", one("a", "t", 2i64), T0 + 600)),
        vec![kv("t", 2i64)]
    );
    // The period restarted at the change: nothing at T0 + 1000.
    assert!(f.due(T0 + 1000).is_empty());
    assert_eq!(f.next_due(), Some(T0 + 1600));
    let out = f.due(T0 + 1600);
    assert_eq!(
        due_values(&out),
        vec![("c".into(), "a".into(), "t".into(), Value::Int(2), T0 + 1600)]
    );
    // Unchanged values do not restart it.
    assert_eq!(f.apply("c", one("a", "t", 2i64), T0 + 2000), None);
    assert_eq!(due_values(&f.due(T0 + 2600)).len(), 1);
}

#[test]
fn periodic_attributes_are_reported_as_attributes() {
    let mut f = general(periodic(
        ReportType::OnReportPeriod,
        1000,
        AggregationFunction::None,
    ));
    f.apply("c", attr("a", &[("fw", Value::from("1.0"))]), T0);
    f.apply("c", attr("a", &[("fw", Value::from("1.1"))]), T0 + 10);
    f.apply("c", one("a", "fw", "telemetry"), T0 + 20);
    let out = f.due(T0 + 1000);
    assert_eq!(out.len(), 1, "one record per device");
    assert_eq!(out[0].1.attributes, vec![kv("fw", "1.1")]);
    assert!(
        due_values(&out).is_empty(),
        "telemetry fw is due at T0 + 1020"
    );
    let out = f.due(T0 + 1020);
    assert_eq!(tvals(&Some(out[0].1.clone())), vec![kv("fw", "telemetry")]);
    assert!(out[0].1.attributes.is_empty());
}

#[test]
fn due_groups_reports_per_connector_and_device() {
    let mut f = general(periodic(
        ReportType::OnReportPeriod,
        1000,
        AggregationFunction::None,
    ));
    f.apply(
        "c1",
        tel("a", T0, &[("t", Value::Int(1)), ("h", Value::Int(2))]),
        T0,
    );
    f.apply("c1", one("b", "t", 3i64), T0);
    f.apply("c2", one("a", "t", 4i64), T0);
    let out = f.due(T0 + 1000);
    let mut groups: Vec<(String, String, usize)> = out
        .iter()
        .map(|(c, d)| (c.clone(), d.device_name.clone(), d.datapoints()))
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            ("c1".into(), "a".into(), 2),
            ("c1".into(), "b".into(), 1),
            ("c2".into(), "a".into(), 1)
        ]
    );
    for (_, d) in &out {
        assert_eq!(d.telemetry.len(), 1, "one entry at the report time");
        assert_eq!(d.telemetry[0].ts, T0 + 1000);
    }
}

// ---------------------------------------------------------------------------------------
// Aggregation

/// Applies `values` (after a first value of 0) within one period and returns what the
/// period reports for `t`.
fn aggregate(f_: AggregationFunction, values: &[Value]) -> Option<Value> {
    let mut f = general(periodic(ReportType::OnReportPeriod, 1000, f_));
    f.apply("c", one("a", "t", 0i64), T0);
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            f.apply("c", one("a", "t", v.clone()), T0 + 1 + i as i64),
            None
        );
    }
    let out = f.due(T0 + 1000);
    let mut v = due_values(&out);
    assert!(v.len() <= 1);
    v.pop().map(|(_, _, _, v, _)| v)
}

#[test]
fn sum_of_integers_stays_an_integer_and_a_float_makes_it_a_float() {
    use AggregationFunction::Sum;
    assert_eq!(
        aggregate(Sum, &[Value::Int(1), Value::Int(2), Value::Int(3)]),
        Some(Value::Int(6))
    );
    assert_eq!(
        aggregate(Sum, &[Value::Int(1), Value::Float(0.5)]),
        Some(Value::Float(1.5))
    );
    assert_eq!(
        aggregate(Sum, &[Value::Int(i64::MAX), Value::Int(1)]),
        Some(Value::Float(i64::MAX as f64 + 1.0))
    );
}

#[test]
fn min_and_max_keep_integers_and_become_floats_with_mixed_inputs() {
    use AggregationFunction::{Max, Min};
    let ints = [Value::Int(5), Value::Int(-2), Value::Int(9)];
    assert_eq!(aggregate(Min, &ints), Some(Value::Int(-2)));
    assert_eq!(aggregate(Max, &ints), Some(Value::Int(9)));
    let mixed = [Value::Int(5), Value::Float(-2.5), Value::Int(9)];
    assert_eq!(aggregate(Min, &mixed), Some(Value::Float(-2.5)));
    assert_eq!(aggregate(Max, &mixed), Some(Value::Float(9.0)));
}

#[test]
fn average_is_a_float_over_the_numeric_values() {
    use AggregationFunction::Average;
    assert_eq!(
        aggregate(Average, &[Value::Int(1), Value::Int(2)]),
        Some(Value::Float(1.5))
    );
    assert_eq!(
        aggregate(
            Average,
            &[
                Value::Int(1),
                Value::from("x"),
                Value::Float(2.0),
                Value::Bool(true)
            ]
        ),
        Some(Value::Float(1.5)),
        "strings and booleans are not numbers"
    );
}

#[test]
fn count_counts_values_of_any_type() {
    use AggregationFunction::Count;
    assert_eq!(
        aggregate(
            Count,
            &[
                Value::Int(1),
                Value::from("x"),
                Value::Bool(false),
                Value::Json(json!({}))
            ]
        ),
        Some(Value::Int(4))
    );
}

#[test]
fn the_first_forwarded_value_is_not_counted_in_the_first_period() {
    assert_eq!(
        aggregate(AggregationFunction::Sum, &[Value::Int(7)]),
        Some(Value::Int(7))
    );
}

#[test]
fn an_aggregated_period_without_values_sends_nothing() {
    for f_ in [
        AggregationFunction::Sum,
        AggregationFunction::Count,
        AggregationFunction::Min,
        AggregationFunction::Max,
        AggregationFunction::Average,
    ] {
        assert_eq!(aggregate(f_, &[]), None, "{f_:?}");
    }
}

#[test]
fn a_period_of_values_no_function_can_use_sends_the_latest() {
    assert_eq!(
        aggregate(
            AggregationFunction::Average,
            &[Value::from("on"), Value::from("off")]
        ),
        Some(Value::from("off"))
    );
}

#[test]
fn each_period_aggregates_only_its_own_values() {
    let mut f = general(periodic(
        ReportType::OnReportPeriod,
        1000,
        AggregationFunction::Sum,
    ));
    f.apply("c", one("a", "t", 100i64), T0);
    f.apply("c", one("a", "t", 1i64), T0 + 1);
    f.apply("c", one("a", "t", 2i64), T0 + 2);
    assert_eq!(due_values(&f.due(T0 + 1000))[0].3, Value::Int(3));
    f.apply("c", one("a", "t", 10i64), T0 + 1001);
    assert_eq!(due_values(&f.due(T0 + 2000))[0].3, Value::Int(10));
    assert!(f.due(T0 + 3000).is_empty());
    f.apply("c", one("a", "t", 5i64), T0 + 3001);
    assert_eq!(due_values(&f.due(T0 + 4000))[0].3, Value::Int(5));
}

#[test]
fn on_change_or_report_period_aggregates_the_unchanged_values_since_the_last_report() {
    let mut f = general(periodic(
        ReportType::OnChangeOrReportPeriod,
        1000,
        AggregationFunction::Count,
    ));
    assert!(f.apply("c", one("a", "t", 1i64), T0).is_some());
    assert_eq!(f.apply("c", one("a", "t", 1i64), T0 + 1), None);
    assert_eq!(f.apply("c", one("a", "t", 1.0002), T0 + 2), None);
    assert_eq!(due_values(&f.due(T0 + 1000))[0].3, Value::Int(2));
    // A change is forwarded at once and starts a new, empty window.
    assert!(f.apply("c", one("a", "t", 5i64), T0 + 1500).is_some());
    assert!(f.due(T0 + 2500).is_empty());
}

#[test]
fn aggregation_applies_to_attributes_too() {
    let mut f = general(periodic(
        ReportType::OnReportPeriod,
        1000,
        AggregationFunction::Max,
    ));
    f.apply("c", attr("a", &[("x", Value::Int(0))]), T0);
    f.apply("c", attr("a", &[("x", Value::Int(4))]), T0 + 1);
    f.apply("c", attr("a", &[("x", Value::Int(2))]), T0 + 2);
    assert_eq!(f.due(T0 + 1000)[0].1.attributes, vec![kv("x", 4i64)]);
}

#[test]
fn an_aggregation_function_is_ignored_by_non_periodic_types() {
    let mut f = general(periodic(
        ReportType::OnChange,
        1000,
        AggregationFunction::Sum,
    ));
    assert!(f.apply("c", one("a", "t", 1i64), T0).is_some());
    assert!(f.apply("c", one("a", "t", 2i64), T0).is_some());
    assert!(f.due(T0 + 1000).is_empty());
}

// ---------------------------------------------------------------------------------------
// TTL

#[test]
fn an_on_change_entry_expires_after_ttl_without_values_and_the_value_is_forwarded_again() {
    let mut f = general(with_ttl(strategy(ReportType::OnChange), 10));
    assert!(f.apply("c", one("a", "t", 1i64), T0).is_some());
    // A value refreshes the entry even when unchanged.
    assert_eq!(f.apply("c", one("a", "t", 1i64), T0 + 9_000), None);
    assert_eq!(f.apply("c", one("a", "t", 1i64), T0 + 18_999), None);
    assert!(f.apply("c", one("a", "t", 1i64), T0 + 28_999).is_some());
    assert_eq!(f.stats().expired, 1);
}

#[test]
fn the_sweep_drops_expired_entries_that_are_never_read_again() {
    let mut f = general(with_ttl(strategy(ReportType::OnChange), 1));
    for i in 0..10 {
        f.apply("c", one(&format!("d{i}"), "t", 1i64), T0);
    }
    assert_eq!(f.stats().entries, 10);
    let sweep = f.next_due().expect("a sweep is scheduled");
    assert_eq!(sweep, T0 + cache::SWEEP_INTERVAL_MS);
    assert!(f.due(sweep).is_empty());
    assert_eq!(f.stats().entries, 0);
    assert_eq!(f.stats().expired, 10);
    assert_eq!(f.next_due(), None, "nothing left to do");
}

#[test]
fn a_periodic_entry_stops_reporting_once_its_ttl_expired() {
    let s = with_ttl(
        periodic(ReportType::OnReportPeriod, 1000, AggregationFunction::None),
        3,
    );
    let mut f = general(s);
    f.apply("c", one("a", "t", 1i64), T0);
    assert_eq!(due_values(&f.due(T0 + 1000)).len(), 1);
    assert_eq!(due_values(&f.due(T0 + 2000)).len(), 1);
    assert!(f.due(T0 + 3000).is_empty(), "3 s without a value");
    assert_eq!(f.stats().entries, 0);
    assert_eq!(f.next_due(), None);
    // The next value is a first value again.
    assert!(f.apply("c", one("a", "t", 1i64), T0 + 5000).is_some());
}

#[test]
fn a_ttl_of_zero_never_expires() {
    let mut f = general(with_ttl(strategy(ReportType::OnChange), 0));
    f.apply("c", one("a", "t", 1i64), T0);
    f.due(T0 + 10 * 86_400_000);
    assert_eq!(
        f.apply("c", one("a", "t", 1i64), T0 + 10 * 86_400_000),
        None
    );
    assert_eq!(f.stats().entries, 1);
}

// ---------------------------------------------------------------------------------------
// Hierarchy

#[test]
fn datapoint_wins_over_device_over_connector_over_general() {
    let mut conns = HashMap::new();
    conns.insert("c".to_string(), strategy(ReportType::OnChange));
    let mut f = ReportFilter::new(Some(strategy(ReportType::OnChange)), conns);
    let ov = overrides(
        Some(strategy(ReportType::OnReceived)),
        &[("k", strategy(ReportType::OnChange))],
    );
    let rec = |ov: Option<Arc<ReportOverrides>>| {
        let mut d = tel("a", T0, &[("k", Value::Int(1)), ("d", Value::Int(1))]);
        d.report = ov;
        d
    };
    // Device level ON_RECEIVED: `d` always passes; datapoint level ON_CHANGE: `k` once.
    assert_eq!(
        tvals(&f.apply("c", rec(Some(ov.clone())), T0)),
        vec![kv("k", 1i64), kv("d", 1i64)]
    );
    assert_eq!(
        tvals(&f.apply("c", rec(Some(ov.clone())), T0)),
        vec![kv("d", 1i64)]
    );
    // Without overrides the connector level (ON_CHANGE) applies to `d`.
    assert_eq!(tvals(&f.apply("c", rec(None), T0)), vec![kv("d", 1i64)]);
    assert_eq!(f.apply("c", rec(None), T0), None);

    // Connector level ON_RECEIVED wins over general ON_CHANGE.
    f.set_connector_strategy("r", Some(strategy(ReportType::OnReceived)));
    assert!(f.apply("r", rec(None), T0).is_some());
    assert!(f.apply("r", rec(None), T0).is_some());
    // No connector level: general ON_CHANGE.
    assert!(f.apply("g", rec(None), T0).is_some());
    assert_eq!(f.apply("g", rec(None), T0), None);
    f.set_connector_strategy("g", Some(strategy(ReportType::OnReceived)));
    assert!(f.apply("g", rec(None), T0).is_some());
}

#[test]
fn a_device_level_applies_to_every_key_without_its_own() {
    let mut f = ReportFilter::new(None, HashMap::new());
    let ov = overrides(
        Some(periodic(
            ReportType::OnReportPeriod,
            1000,
            AggregationFunction::None,
        )),
        &[("fast", strategy(ReportType::OnReceived))],
    );
    let mut d = tel("a", T0, &[("slow", Value::Int(1)), ("fast", Value::Int(1))]);
    d.report = Some(ov.clone());
    assert!(f.apply("c", d.clone(), T0).is_some());
    assert_eq!(tvals(&f.apply("c", d, T0 + 1)), vec![kv("fast", 1i64)]);
    let out = f.due(T0 + 1000);
    assert_eq!(tvals(&Some(out[0].1.clone())), vec![kv("slow", 1i64)]);
}

#[test]
fn a_key_name_in_the_overrides_applies_to_telemetry_and_attribute_alike() {
    let mut f = ReportFilter::new(None, HashMap::new());
    let ov = overrides(None, &[("x", strategy(ReportType::OnChange))]);
    let mut d = tel("a", T0, &[("x", Value::Int(1))]);
    d.push_attribute("x", Value::Int(1));
    d.report = Some(ov);
    let out = f.apply("c", d.clone(), T0).unwrap();
    assert_eq!(out.datapoints(), 2);
    assert_eq!(f.apply("c", d, T0), None);
}

#[test]
fn a_key_whose_strategy_becomes_on_received_loses_its_entry() {
    let mut f = ReportFilter::new(None, HashMap::new());
    let mut d = one("a", "t", 1i64);
    d.report = Some(overrides(Some(strategy(ReportType::OnChange)), &[]));
    f.apply("c", d.clone(), T0);
    assert_eq!(f.stats().entries, 1);
    d.report = Some(overrides(Some(strategy(ReportType::OnReceived)), &[]));
    assert!(f.apply("c", d, T0).is_some());
    assert_eq!(f.stats().entries, 0);
}

#[test]
fn a_key_whose_strategy_becomes_periodic_is_scheduled_and_unscheduled() {
    let mut f = ReportFilter::new(None, HashMap::new());
    let mut d = one("a", "t", 1i64);
    d.report = Some(overrides(Some(strategy(ReportType::OnChange)), &[]));
    f.apply("c", d.clone(), T0);
    d.report = Some(overrides(
        Some(periodic(
            ReportType::OnReportPeriod,
            1000,
            AggregationFunction::None,
        )),
        &[],
    ));
    assert_eq!(f.apply("c", d.clone(), T0 + 10), None);
    assert_eq!(due_values(&f.due(T0 + 1010)).len(), 1);
    d.report = Some(overrides(Some(strategy(ReportType::OnChange)), &[]));
    assert_eq!(f.apply("c", d, T0 + 1020), None);
    assert!(
        f.due(T0 + 2010).is_empty(),
        "ON_CHANGE again: no more periodic reports"
    );
}

// ---------------------------------------------------------------------------------------
// Connectors, memory

#[test]
fn purging_a_connector_forgets_its_entries_and_its_periodic_reports() {
    let mut f = general(periodic(
        ReportType::OnChangeOrReportPeriod,
        1000,
        AggregationFunction::None,
    ));
    f.apply("c1", one("a", "t", 1i64), T0);
    f.apply("c2", one("a", "t", 1i64), T0);
    f.purge_connector("c1");
    f.purge_connector("unknown");
    assert_eq!(f.stats().entries, 1);
    let out = f.due(T0 + 1000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "c2");
    assert!(
        f.apply("c1", one("a", "t", 1i64), T0 + 1001).is_some(),
        "a first value again"
    );
}

#[test]
fn the_cache_is_bounded_and_evicts_the_least_recently_updated_entries() {
    let mut f = general(strategy(ReportType::OnChange)).with_max_entries(16);
    for i in 0..100 {
        f.apply("c", one("a", &format!("k{i}"), 1i64), T0 + i);
        assert!(f.stats().entries <= 16);
    }
    let stats = f.stats();
    assert!(stats.evicted >= 84, "{stats:?}");
    assert_eq!(stats.entries as u64 + stats.evicted, 100);
    // The newest key is still known; the oldest was evicted, so it is a first value again.
    assert_eq!(f.apply("c", one("a", "k99", 1i64), T0 + 200), None);
    assert!(f.apply("c", one("a", "k0", 1i64), T0 + 200).is_some());
}

#[test]
fn evicted_periodic_entries_leave_no_stale_reports() {
    let mut f = general(periodic(
        ReportType::OnReportPeriod,
        1000,
        AggregationFunction::None,
    ))
    .with_max_entries(4);
    for i in 0..12 {
        f.apply("c", one("a", &format!("k{i}"), 1i64), T0 + i);
    }
    let out = f.due(T0 + 2000);
    let keys: Vec<String> = due_values(&out).into_iter().map(|v| v.2).collect();
    assert!(keys.len() <= 4, "{keys:?}");
    assert!(keys.contains(&"k11".to_string()), "{keys:?}");
}

#[test]
fn a_fully_filtered_record_is_none() {
    let mut f = general(strategy(ReportType::OnChange));
    let mut d = one("a", "t", 1i64);
    d.push_attribute("x", Value::Int(1));
    assert!(f.apply("c", d.clone(), T0).is_some());
    assert_eq!(f.apply("c", d, T0), None);
}

#[test]
fn the_overrides_are_consumed_by_apply() {
    let mut f = ReportFilter::new(None, HashMap::new());
    let mut d = one("a", "t", 1i64);
    d.report = Some(overrides(Some(strategy(ReportType::OnReceived)), &[]));
    assert_eq!(f.apply("c", d, T0).unwrap().report, None);
}

// ---------------------------------------------------------------------------------------
// Model and storage

#[test]
fn merge_keeps_the_first_overrides_that_are_set() {
    let first = overrides(Some(strategy(ReportType::OnChange)), &[]);
    let second = overrides(None, &[("k", strategy(ReportType::OnChange))]);
    let mut a = one("a", "t", 1i64);
    let mut b = one("a", "h", 1i64);
    b.report = Some(first.clone());
    a.merge(b);
    assert_eq!(a.report, Some(first.clone()));
    let mut c = one("a", "x", 1i64);
    c.report = Some(second);
    a.merge(c);
    assert_eq!(a.report, Some(first));
}

#[test]
fn storage_does_not_carry_the_overrides() {
    let mut d = one("a", "t", 1i64);
    d.report = Some(overrides(Some(strategy(ReportType::OnChange)), &[]));
    let mut buf = Vec::new();
    crate::storage::codec::encode(&d, &mut buf);
    assert_eq!(crate::storage::codec::decode(&buf).unwrap().report, None);
    let json = serde_json::to_value(&d).unwrap();
    assert!(json.get("report").is_none());
    let back: DeviceData = serde_json::from_value(json).unwrap();
    assert_eq!(back.report, None);
}

// ---------------------------------------------------------------------------------------
// Configuration

const FILE: &str = "/etc/tbgw/modbus.json";

#[test]
fn an_absent_null_or_empty_strategy_is_not_set() {
    let mut ignored = Vec::new();
    for v in [json!(null), json!({})] {
        assert_eq!(
            parse_strategy(&v, Path::new(FILE), "reportStrategy", &mut ignored).unwrap(),
            None
        );
    }
    assert_eq!(
        connector_strategy(&json!({"master": {}}), Path::new(FILE)).unwrap(),
        None
    );
}

#[test]
fn a_full_strategy_is_read_with_defaults_for_missing_fields() {
    let mut ignored = Vec::new();
    let s = parse_strategy(
        &json!({"type": "ON_REPORT_PERIOD", "reportPeriod": 500, "aggregationFunction": "AVERAGE", "extra": 1}),
        Path::new(FILE),
        "master.slaves[0].reportStrategy",
        &mut ignored,
    )
    .unwrap()
    .unwrap();
    assert_eq!(s.kind, ReportType::OnReportPeriod);
    assert_eq!(s.report_period, 500);
    assert_eq!(s.aggregation_function, AggregationFunction::Average);
    assert_eq!(s.ttl, 86_400);
    assert_eq!(
        ignored,
        vec!["master.slaves[0].reportStrategy.extra".to_string()]
    );
    let s = parse_strategy(
        &json!({"type": "ON_CHANGE"}),
        Path::new(FILE),
        "x",
        &mut ignored,
    )
    .unwrap()
    .unwrap();
    assert_eq!(s, strategy(ReportType::OnChange));
}

#[test]
fn bad_strategies_are_errors_naming_file_key_path_and_reason() {
    let cases = [
        (
            json!({"reportPeriod": 5}),
            "p.reportStrategy.type",
            "missing",
        ),
        (
            json!({"type": "SOMETIMES"}),
            "p.reportStrategy.type",
            "unknown variant",
        ),
        (
            json!({"type": "ON_CHANGE", "aggregationFunction": "MEDIAN"}),
            "p.reportStrategy.aggregationFunction",
            "unknown variant",
        ),
        (
            json!({"type": "ON_REPORT_PERIOD", "reportPeriod": 0}),
            "p.reportStrategy.reportPeriod",
            "greater than 0",
        ),
        (
            json!({"type": "ON_CHANGE_OR_REPORT_PERIOD", "reportPeriod": 0}),
            "p.reportStrategy.reportPeriod",
            "ON_CHANGE_OR_REPORT_PERIOD",
        ),
        (
            json!({"type": "ON_REPORT_PERIOD", "reportPeriod": -5}),
            "p.reportStrategy.reportPeriod",
            "invalid value",
        ),
        (
            json!({"type": "ON_CHANGE", "ttl": "long"}),
            "p.reportStrategy.ttl",
            "invalid type",
        ),
        (json!("ON_CHANGE"), "p.reportStrategy", "expected an object"),
    ];
    for (v, key, reason) in cases {
        let e =
            parse_strategy(&v, Path::new(FILE), "p.reportStrategy", &mut Vec::new()).unwrap_err();
        assert_eq!(e.file, Path::new(FILE), "{v}");
        assert_eq!(e.key, key, "{v}: {e}");
        assert!(e.reason.contains(reason), "{v}: {e}");
    }
    // A zero period is fine where there is no period.
    assert!(parse_strategy(
        &json!({"type": "ON_CHANGE", "reportPeriod": 0}),
        Path::new(FILE),
        "p",
        &mut Vec::new()
    )
    .is_ok());
}

#[test]
fn the_connector_level_is_the_top_level_report_strategy_or_the_legacy_flag() {
    let file = Path::new(FILE);
    let s = connector_strategy(
        &json!({"reportStrategy": {"type": "ON_CHANGE", "ttl": 5}}),
        file,
    )
    .unwrap()
    .unwrap();
    assert_eq!((s.kind, s.ttl), (ReportType::OnChange, 5));
    assert_eq!(
        connector_strategy(&json!({"sendDataOnlyOnChange": true}), file).unwrap(),
        Some(strategy(ReportType::OnChange))
    );
    assert_eq!(
        connector_strategy(&json!({"sendDataOnlyOnChange": false}), file).unwrap(),
        None
    );
    // reportStrategy wins over the legacy flag.
    let s = connector_strategy(
        &json!({"sendDataOnlyOnChange": true, "reportStrategy": {"type": "ON_RECEIVED"}}),
        file,
    )
    .unwrap();
    assert_eq!(s, Some(strategy(ReportType::OnReceived)));
    let e = connector_strategy(&json!({"sendDataOnlyOnChange": "yes"}), file).unwrap_err();
    assert_eq!(e.key, "sendDataOnlyOnChange");
    let e = connector_strategy(
        &json!({"reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 0}}),
        file,
    )
    .unwrap_err();
    assert_eq!(e.key, "reportStrategy.reportPeriod");
}

#[test]
fn connector_spec_keeps_the_report_keys_for_the_gateway_and_validates_them() {
    let file = Path::new(FILE);
    let content = json!({
        "name": "M", "logLevel": "INFO",
        "reportStrategy": {"type": "ON_CHANGE", "unused": 1},
        "sendDataOnlyOnChange": false,
        "master": {}
    });
    let (spec, ignored) = crate::config::connector_spec("M", "modbus", file, content).unwrap();
    assert_eq!(spec.config.value()["reportStrategy"]["type"], "ON_CHANGE");
    assert_eq!(spec.config.value()["sendDataOnlyOnChange"], false);
    let keys: Vec<&str> = ignored.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, vec!["logLevel", "reportStrategy.unused"]);
    assert_eq!(
        connector_strategy(&spec.config.value(), file).unwrap(),
        Some(strategy(ReportType::OnChange))
    );

    let bad = json!({"reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 0}});
    let e = crate::config::connector_spec("M", "modbus", file, bad).unwrap_err();
    assert_eq!(
        (e.file.as_path(), e.key.as_str()),
        (file, "reportStrategy.reportPeriod")
    );
}

#[test]
fn overrides_resolve_the_key_before_the_device() {
    let ov = overrides(
        Some(strategy(ReportType::OnChange)),
        &[("k", strategy(ReportType::OnReceived))],
    );
    assert_eq!(
        ov.strategy_for("k").map(|s| s.kind),
        Some(ReportType::OnReceived)
    );
    assert_eq!(
        ov.strategy_for("other").map(|s| s.kind),
        Some(ReportType::OnChange)
    );
    assert!(!ov.is_empty());
    assert!(ReportOverrides::default().is_empty());
    assert_eq!(ReportOverrides::default().strategy_for("k"), None);
}

#[test]
fn what_the_gateway_keeps_of_a_connector_file_is_its_report_keys_alone() {
    let file = json!({
        "reportStrategy": {"type": "ON_CHANGE"},
        "sendDataOnlyOnChange": true,
        "master": {"slaves": [{"deviceName": "a", "timeseries": [{"tag": "t"}]}]}
    });
    let text = crate::config::ConnectorConfig::from_json_text(file.to_string()).expect("object");
    let kept = text.top_level(CONNECTOR_KEYS);
    assert_eq!(
        kept,
        json!({"reportStrategy": {"type": "ON_CHANGE"}, "sendDataOnlyOnChange": true})
    );
    assert_eq!(
        connector_strategy(&kept, Path::new("c.json")).expect("valid"),
        connector_strategy(&file, Path::new("c.json")).expect("valid")
    );
    let other: crate::config::ConnectorConfig = json!({"x": 1}).into();
    assert_eq!(other.top_level(CONNECTOR_KEYS), json!({}));
}
