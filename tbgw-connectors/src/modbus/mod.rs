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
        let cfg: ModbusConnectorConfig = parse::from_value(&spec.file, "", &spec.config, ignored)?;
        flattened_unknown_keys(&spec.config, ignored);
        Ok(Box::new(ModbusConnector::build(
            &spec.file, &spec.name, cfg, ignored,
        )?))
    }
}
