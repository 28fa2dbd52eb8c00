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
mod load;
pub mod master;
pub mod plan;
pub mod slave;
pub mod tls;
pub mod transport;

use tbgw::config::ConfigError;
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
fn flattened_unknown_keys(raw: &KeysOnly, ignored: &mut Vec<String>) {
    let check =
        |obj: Option<&KeySet>, prefix: String, extra: &[&str], ignored: &mut Vec<String>| {
            for k in obj.into_iter().flat_map(|o| o.keys()) {
                if !CONNECTION_KEYS.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
                    ignored.push(format!("{prefix}.{k}"));
                }
            }
        };
    for (i, s) in raw.master.iter().flat_map(|m| m.slaves.iter()).enumerate() {
        check(Some(s), format!("master.slaves[{i}]"), SLAVE_KEYS, ignored);
    }
    check(raw.slave.as_ref(), "slave".into(), SERVER_KEYS, ignored);
}

/// The keys of an object, without its values.
type KeySet = std::collections::BTreeMap<String, serde::de::IgnoredAny>;

/// The objects of a Modbus file whose keys [`flattened_unknown_keys`] checks, keys only.
#[derive(Debug, Default, serde::Deserialize)]
struct KeysOnly {
    #[serde(default)]
    master: Option<MasterKeys>,
    #[serde(default)]
    slave: Option<KeySet>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct MasterKeys {
    #[serde(default)]
    slaves: Vec<KeySet>,
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
        // One slave at a time: each is read, validated into its plan and dropped before the
        // next (see `load`).
        let file = &spec.file;
        let loaded = load::read(file, &spec.config, ignored)?;
        // Keys of the flattened connection settings, which serde cannot report as unknown.
        let keys: KeysOnly = spec.config.deserialize(file, &mut Vec::new())?;
        flattened_unknown_keys(&keys, ignored);
        Ok(Box::new(ModbusConnector::build(
            file,
            loaded.slaves,
            loaded.server.as_ref(),
        )?))
    }
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
            config: config.into(),
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

    /// The content as a file loaded from disk gives it: JSON text, read without a tree.
    fn spec_text(config: serde_json::Value) -> ConnectorSpec {
        ConnectorSpec {
            config: tbgw::config::ConnectorConfig::from_json_text(config.to_string())
                .expect("an object"),
            ..spec(json!({}))
        }
    }

    #[test]
    fn slaves_read_one_at_a_time_keep_their_paths_in_errors_and_ignored_keys() {
        for spec in [spec, spec_text] {
            slaves_read_one_at_a_time(spec);
        }
    }

    fn slaves_read_one_at_a_time(spec: fn(serde_json::Value) -> ConnectorSpec) {
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
        let Err(e) = ModbusFactory::new().build(&spec(bad), &mut Vec::new()) else {
            panic!("slaves must be a list")
        };
        assert_eq!(e.key, "master.slaves");
        // Out-of-range values keep their path too.
        let dup = json!({"master": {"slaves": [slave(5020, json!({})),
            slave(5021, json!({"unitId": 300}))]}});
        let Err(e) = ModbusFactory::new().build(&spec(dup), &mut Vec::new()) else {
            panic!("unit id 300 is out of range")
        };
        assert!(e.key.starts_with("master.slaves[1]"), "{e}");
    }
}
