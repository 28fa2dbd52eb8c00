//! The Modbus connector: master (the gateway polls devices) over TCP, UDP and serial lines
//! with socket (MBAP), RTU and ASCII framing, and slave mode (the gateway serves registers).
//!
//! Configured by upstream's `modbus.json` (`master.slaves[]`, `slave`). See
//! `docs/connectors/modbus.md` for every key and where tbgw differs from upstream.
//!
//! * [`codec`]: pure encoding and decoding of frames, PDUs and values (table-tested, fuzzed).
//! * [`plan`]: validation, address ranges and read coalescing.
//! * [`transport`]: the client side of the three transports.
//! * [`master`]: one task per connection.
//! * [`slave`]: the server.
//! * [`tls`]: Modbus/TCP over TLS (rustls), for both.

pub mod codec;
pub mod config;
mod connector;
pub mod master;
pub mod plan;
pub mod slave;
pub mod tls;
pub mod transport;

use tbgw::config::{parse, ConfigError};
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::ModbusConnectorConfig;
pub use connector::ModbusConnector;
pub use master::{poll_metrics, PollMetrics};

/// Keys of the connection part shared by `master.slaves[]` and `slave`.
const CONNECTION_KEYS: &[&str] = &[
    "type",
    "method",
    "host",
    "port",
    "baudrate",
    "bytesize",
    "parity",
    "stopbits",
    "timeout",
    "unitId",
    "deviceName",
    "deviceType",
    "pollPeriod",
    "byteOrder",
    "wordOrder",
];
const SLAVE_KEYS: &[&str] = &[
    "retries",
    "retryOnEmpty",
    "retryOnInvalid",
    "connectAttemptTimeMs",
    "connectAttemptCount",
    "waitAfterFailedAttemptsMs",
    "delayBetweenRequestsMs",
    "maxRegistersPerRequest",
    "handleLocalEcho",
    "repack",
    "reportStrategy",
    "sendDataOnlyOnChange",
    "tls",
    "attributes",
    "timeseries",
    "attributeUpdates",
    "rpc",
];
const SERVER_KEYS: &[&str] = &["sendDataToThingsBoard", "identity", "security", "values"];

/// serde's `flatten` hides unknown keys from the ignored-key tracking, so the objects that
/// use it are checked here against their known keys.
fn flattened_unknown_keys(raw: &serde_json::Value, ignored: &mut Vec<String>) {
    let check = |obj: Option<&serde_json::Map<String, serde_json::Value>>,
                 prefix: String,
                 extra: &[&str],
                 ignored: &mut Vec<String>| {
        for k in obj.into_iter().flat_map(|o| o.keys()) {
            if !CONNECTION_KEYS.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
                ignored.push(format!("{prefix}.{k}"));
            }
        }
    };
    if let Some(slaves) = raw.pointer("/master/slaves").and_then(|s| s.as_array()) {
        for (i, s) in slaves.iter().enumerate() {
            check(
                s.as_object(),
                format!("master.slaves[{i}]"),
                SLAVE_KEYS,
                ignored,
            );
        }
    }
    check(
        raw.get("slave").and_then(|s| s.as_object()),
        "slave".into(),
        SERVER_KEYS,
        ignored,
    );
}

/// Builds Modbus connectors (`"type": "modbus"`).
#[derive(Debug, Default, Clone)]
pub struct ModbusFactory {}

impl ModbusFactory {
    /// A factory.
    pub fn new() -> Self {
        ModbusFactory::default()
    }
}

impl ConnectorFactory for ModbusFactory {
    fn connector_type(&self) -> &'static str {
        "modbus"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        // One slave at a time: each is read from the JSON tree, validated into its plan and
        // dropped before the next, so a file with thousands of datapoints never exists in
        // typed form all at once next to its tree (about 0.3 KB per datapoint).
        let file = &spec.file;
        let (cfg, slaves) = match spec.config.pointer("/master/slaves") {
            Some(serde_json::Value::Array(list)) => {
                let top: ModbusConnectorConfig =
                    parse::from_value(file, "", &without_slave_list(&spec.config), ignored)?;
                let mut slaves = Vec::with_capacity(list.len());
                for (i, raw) in list.iter().enumerate() {
                    let s: config::SlaveConfig =
                        parse::from_value(file, &format!("master.slaves[{i}]"), raw, ignored)?;
                    connector::note_ignored(i, &s, ignored);
                    slaves.push(plan::slave(file, i, &s)?);
                }
                (top, slaves)
            }
            // No list, or not a list: the whole file at once (and its error).
            _ => {
                let cfg: ModbusConnectorConfig =
                    parse::from_value(file, "", &spec.config, ignored)?;
                let mut slaves = Vec::new();
                for (i, s) in cfg.master.iter().flat_map(|m| m.slaves.iter()).enumerate() {
                    connector::note_ignored(i, s, ignored);
                    slaves.push(plan::slave(file, i, s)?);
                }
                (cfg, slaves)
            }
        };
        flattened_unknown_keys(&spec.config, ignored);
        Ok(Box::new(ModbusConnector::build(
            file,
            slaves,
            cfg.slave.as_ref(),
        )?))
    }
}

/// A shallow copy of a connector file's content with an empty `master.slaves` (whose
/// entries are read one by one).
fn without_slave_list(raw: &serde_json::Value) -> serde_json::Value {
    let mut top = serde_json::Map::new();
    for (k, v) in raw.as_object().into_iter().flatten() {
        let v = match (k.as_str(), v) {
            ("master", serde_json::Value::Object(m)) => serde_json::Value::Object(
                m.iter()
                    .map(|(mk, mv)| {
                        let mv = if mk == "slaves" {
                            serde_json::Value::Array(Vec::new())
                        } else {
                            mv.clone()
                        };
                        (mk.clone(), mv)
                    })
                    .collect(),
            ),
            _ => v.clone(),
        };
        top.insert(k.clone(), v);
    }
    serde_json::Value::Object(top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(config: serde_json::Value) -> ConnectorSpec {
        ConnectorSpec {
            name: "Modbus".into(),
            connector_type: "modbus".into(),
            file: "modbus.json".into(),
            config,
        }
    }

    fn slave(port: u16, extra: serde_json::Value) -> serde_json::Value {
        let mut s = json!({"type": "tcp", "host": "127.0.0.1", "port": port, "unitId": 1,
            "deviceName": format!("d{port}"), "pollPeriod": 1000,
            "timeseries": [{"tag": "t", "type": "16uint", "functionCode": 3, "address": 0}]});
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        s
    }

    #[test]
    fn slaves_read_one_at_a_time_keep_their_paths_in_errors_and_ignored_keys() {
        let cfg = json!({
            "unknownTop": 1,
            "master": {"slaves": [
                slave(5020, json!({"handleLocalEcho": false})),
                slave(5021, json!({"timeseries": [{"tag": "t", "type": "16uint",
                    "functionCode": 3, "address": 0, "colour": "red"}], "shape": 2}))
            ]}
        });
        let mut ignored = Vec::new();
        ModbusFactory::new()
            .build(&spec(cfg.clone()), &mut ignored)
            .expect("valid");
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "master.slaves[0].handleLocalEcho",
                "master.slaves[1].shape",
                "master.slaves[1].timeseries[0].colour",
                "unknownTop"
            ]
        );

        let mut bad = cfg;
        bad["master"]["slaves"][1]["timeseries"][0]["functionCode"] = json!("three");
        let Err(e) = ModbusFactory::new().build(&spec(bad.clone()), &mut Vec::new()) else {
            panic!("a string function code is an error")
        };
        assert_eq!(e.key, "master.slaves[1].timeseries[0].functionCode");
        bad["master"]["slaves"][1]["timeseries"][0]["functionCode"] = json!(6);
        let Err(e) = ModbusFactory::new().build(&spec(bad.clone()), &mut Vec::new()) else {
            panic!("a write function code in timeseries is an error")
        };
        assert_eq!(e.key, "master.slaves[1].timeseries[0].functionCode");
        bad["master"]["slaves"] = json!({"not": "a list"});
        assert!(ModbusFactory::new()
            .build(&spec(bad), &mut Vec::new())
            .is_err());
    }
}
