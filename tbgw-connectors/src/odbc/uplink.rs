//! Rows to device data: pure and synchronous (no I/O, no clock).
//!
//! A row is the query's column names plus one [`Val`] per column (SQL NULL is [`Val::None`]).
//! Device name, type, keys and values come from the mapping's expressions, evaluated with the
//! row's columns as variables.

use std::collections::HashMap;

use tbgw::eval::{Expr, Val, Vars};
use tbgw::expr::{parse_timestamp, TsOptions};
use tbgw::model::{DeviceData, Value};

use super::config::{KeySpec, OdbcConfig, Points, ValueSpec};

/// The result set's columns, indexed by name.
#[derive(Debug, Clone)]
pub struct Columns {
    names: Vec<String>,
    index: HashMap<String, usize>,
    ts: Option<usize>,
}

impl Columns {
    /// Indexes `names` (the first of duplicate names wins, as a Python dict built in order
    /// keeps the last: SQL results rarely repeat names; use aliases).
    pub fn new(names: Vec<String>) -> Self {
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            index.entry(n.clone()).or_insert(i);
        }
        let ts = index.get("ts").copied();
        Columns { names, index, ts }
    }

    /// The column names in result order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The position of `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

struct RowVars<'a> {
    cols: &'a Columns,
    row: &'a [Val],
}

impl Vars for RowVars<'_> {
    fn get(&self, name: &str) -> Option<Val> {
        self.cols
            .position(name)
            .and_then(|i| self.row.get(i))
            .cloned()
    }
}

/// What converting one row found wrong, besides its NULLs.
#[derive(Debug, Default)]
pub struct RowReport {
    /// NULL values skipped.
    pub nulls: u64,
    /// Problems (one line each), e.g. an expression that failed on this row.
    pub errors: Vec<String>,
}

fn eval(e: &Expr, vars: &RowVars<'_>) -> Result<Val, String> {
    e.eval(vars)
        .map_err(|err| format!("expression {:?}: {err}", e.source()))
}

fn ts_of(v: &Val) -> Option<i64> {
    match v {
        Val::Int(_) | Val::Float(_) | Val::Str(_) => {
            parse_timestamp(&v.to_json(), TsOptions::default())
        }
        _ => None,
    }
}

/// Converts one row. `None` when the row yields no device (its name failed) or no datapoint;
/// the reasons are in `report`.
pub fn convert_row(
    cfg: &OdbcConfig,
    cols: &Columns,
    row: &[Val],
    now: i64,
    report: &mut RowReport,
) -> Option<DeviceData> {
    let vars = RowVars { cols, row };
    let name = match eval(&cfg.device_name, &vars) {
        Ok(Val::None) => {
            report.errors.push(format!(
                "device name {:?} is None",
                cfg.device_name.source()
            ));
            return None;
        }
        Ok(v) => v.to_py_string(),
        Err(e) => {
            report.errors.push(format!("device name: {e}"));
            return None;
        }
    };
    let kind = match &cfg.device_type {
        None => "default".to_string(),
        Some(t) => match t.as_name() {
            Some(n) if cols.position(n).is_none() => n.to_string(),
            _ => match eval(t, &vars) {
                Ok(v) if v.truthy() => v.to_py_string(),
                Ok(_) => "default".to_string(),
                Err(e) => {
                    report.errors.push(format!("device type: {e}"));
                    "default".to_string()
                }
            },
        },
    };
    let ts = match cols.ts.and_then(|i| row.get(i)) {
        None | Some(Val::None) => now,
        Some(v) => ts_of(v).unwrap_or_else(|| {
            report.errors.push(format!(
                "column ts: {} is not a timestamp",
                v.to_py_string()
            ));
            now
        }),
    };
    let mut data = DeviceData::new(name, kind);
    for (points, telemetry) in [(&cfg.attributes, false), (&cfg.timeseries, true)] {
        let mut push = |key: String, v: Value| {
            if telemetry {
                data.push_telemetry(ts, key, v);
            } else {
                data.push_attribute(key, v);
            }
        };
        match points {
            Points::All => {
                for (name, v) in cols.names.iter().zip(row) {
                    match v.clone().into_value() {
                        Some(v) => push(name.clone(), v),
                        None => report.nulls += 1,
                    }
                }
            }
            Points::List(list) => {
                for dp in list {
                    let v = match &dp.value {
                        ValueSpec::Column(c) => match cols.position(c).and_then(|i| row.get(i)) {
                            Some(v) => v.clone(),
                            None => {
                                report.errors.push(format!("no column {c:?} in the result"));
                                continue;
                            }
                        },
                        ValueSpec::Expr(e) => match eval(e, &vars) {
                            Ok(v) => v,
                            Err(e) => {
                                report.errors.push(e);
                                continue;
                            }
                        },
                    };
                    let Some(v) = v.into_value() else {
                        report.nulls += 1;
                        continue;
                    };
                    let key = match &dp.key {
                        KeySpec::Fixed(k) => k.clone(),
                        KeySpec::Expr(e) => match eval(e, &vars) {
                            Ok(k) => k.to_py_string(),
                            Err(e) => {
                                report.errors.push(e);
                                continue;
                            }
                        },
                    };
                    push(key, v);
                }
            }
        }
    }
    (!data.is_empty()).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odbc::config::OdbcFile;
    use serde_json::json;
    use std::path::Path;

    fn cfg(mapping: serde_json::Value) -> OdbcConfig {
        let f: OdbcFile = serde_json::from_value(json!({
            "connection": {"str": "Driver=SQLite3;Database=/tmp/x.db"},
            "polling": {"query": "SELECT * FROM t WHERE ts > ?", "iterator": {"column": "ts", "value": 0}},
            "mapping": mapping
        }))
        .unwrap();
        f.into_config(Path::new("odbc.json"), &mut Vec::new())
            .unwrap()
    }

    fn get<'a>(kv: &'a tbgw::model::KeyValues, k: &str) -> Option<&'a Value> {
        kv.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }

    fn cols() -> Columns {
        Columns::new(
            ["bool_v", "str_v", "dbl_v", "long_v", "entity_id", "ts"]
                .map(String::from)
                .to_vec(),
        )
    }

    #[test]
    fn upstream_sample_mapping() {
        let c = cfg(json!({
            "device": {"type": "postgres", "name": "'ODBC ' + entity_id"},
            "attributes": "*",
            "timeseries": [{"name": "value", "value": "[i for i in [str_v, long_v, dbl_v,bool_v] if i is not None][0]"}]
        }));
        let row = vec![
            Val::None,
            Val::None,
            Val::Float(1.5),
            Val::None,
            Val::Str("e7".into()),
            Val::Int(1_700_000_000_000),
        ];
        let mut r = RowReport::default();
        let d = convert_row(&c, &cols(), &row, 5, &mut r).unwrap();
        assert_eq!(d.device_name, "ODBC e7");
        assert_eq!(d.device_type, "postgres");
        assert_eq!(d.telemetry.len(), 1);
        assert_eq!(d.telemetry[0].ts, 1_700_000_000_000);
        assert_eq!(
            get(&d.telemetry[0].values, "value"),
            Some(&Value::Float(1.5))
        );
        assert_eq!(
            get(&d.attributes, "entity_id"),
            Some(&Value::String("e7".into()))
        );
        assert_eq!(get(&d.attributes, "dbl_v"), Some(&Value::Float(1.5)));
        assert_eq!(d.attributes.len(), 3);
        assert_eq!(r.nulls, 3);
        assert!(r.errors.is_empty());
    }

    #[test]
    fn type_from_a_column_and_key_expressions() {
        let c = cfg(json!({
            "device": {"type": "str_v", "name": "entity_id"},
            "timeseries": ["long_v", {"nameExpression": "'k_' + entity_id", "column": "dbl_v"}, {"name": "bad", "value": "long_v / 0"}]
        }));
        let row = vec![
            Val::Bool(true),
            Val::Str("meter".into()),
            Val::Float(2.0),
            Val::Int(9),
            Val::Str("e1".into()),
            Val::None,
        ];
        let mut r = RowReport::default();
        let d = convert_row(&c, &cols(), &row, 42, &mut r).unwrap();
        assert_eq!(d.device_type, "meter");
        assert_eq!(d.telemetry[0].ts, 42);
        assert_eq!(get(&d.telemetry[0].values, "long_v"), Some(&Value::Int(9)));
        assert_eq!(
            get(&d.telemetry[0].values, "k_e1"),
            Some(&Value::Float(2.0))
        );
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(r.errors[0].contains("division by zero"));
    }

    #[test]
    fn name_failure_drops_the_row() {
        let c = cfg(json!({"device": {"name": "'x' + long_v"}, "timeseries": "*"}));
        let row = vec![
            Val::None,
            Val::None,
            Val::None,
            Val::Int(1),
            Val::None,
            Val::None,
        ];
        let mut r = RowReport::default();
        assert!(convert_row(&c, &cols(), &row, 0, &mut r).is_none());
        assert!(
            r.errors[0].contains("unsupported operand"),
            "{:?}",
            r.errors
        );
    }
}
