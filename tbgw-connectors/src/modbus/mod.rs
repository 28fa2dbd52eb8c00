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

pub mod codec;
pub mod config;
mod connector;
pub mod master;
pub mod plan;
pub mod slave;
pub mod transport;

use tbgw::config::{parse, ConfigError};
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::ModbusConnectorConfig;
pub use connector::ModbusConnector;
pub use master::{poll_metrics, PollMetrics};

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
        Ok(Box::new(ModbusConnector::build(
            &spec.file, &spec.name, cfg, ignored,
        )?))
    }
}
