//! The MQTT connector: subscribes to an external broker and converts what devices publish.
//!
//! Configured by upstream's `mqtt.json` (`broker`, `mapping[]`). Delivery from the source broker
//! is at-least-once: every QoS 1 message is acknowledged to the broker (PUBACK) only after the
//! gateway's storage has taken its data, in the order the messages arrived. While storage
//! blocks, PUBACKs are withheld and the broker's in-flight window stops the flow, so an
//! overloaded gateway slows its source down instead of dropping messages.
//!
//! `requestsMapping` (connect/disconnect/attribute requests, attribute updates, one-way and
//! two-way RPC, reserved `get`/`set`, `mqtt_<name>` connector RPCs) and TLS with certificates
//! ([`tls`]) are described in `docs/connectors/mqtt.md`.
//!
//! Converters: `json` and `bytes` from [`tbgw::convert`], read in this connector's
//! [`DIALECT`]. A `custom` converter is a Rust
//! [`UplinkConverter`](tbgw::convert::UplinkConverter) an embedding application registers by
//! class name in a [`ConverterRegistry`] given to [`MqttFactory::with_converters`].

pub mod config;
mod connector;
mod publish;
mod requests;
pub mod tls;

use tbgw::config::{parse, ConfigError};
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};
use tbgw::convert::{ConverterRegistry, Dialect};

pub use config::MqttConnectorConfig;
pub use connector::MqttConnector;

/// How `mapping[].converter` sections are read: names and keys may come from the topic
/// (`topic` source, `keySource: topic`), and `bytes` converters exist.
pub const DIALECT: Dialect = Dialect::new().with_topic().with_bytes();

/// Builds MQTT connectors (`"type": "mqtt"`).
#[derive(Debug, Default, Clone)]
pub struct MqttFactory {
    converters: ConverterRegistry,
}

impl MqttFactory {
    /// A factory with no custom converters.
    pub fn new() -> Self {
        MqttFactory::default()
    }

    /// The custom converters `"type": "custom"` mappings may name.
    pub fn with_converters(mut self, converters: ConverterRegistry) -> Self {
        self.converters = converters;
        self
    }
}

impl ConnectorFactory for MqttFactory {
    fn connector_type(&self) -> &'static str {
        "mqtt"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: MqttConnectorConfig = parse::from_value(&spec.file, "", &spec.config, ignored)?;
        Ok(Box::new(MqttConnector::build(
            &spec.file,
            &spec.name,
            cfg,
            &self.converters,
            ignored,
        )?))
    }
}
