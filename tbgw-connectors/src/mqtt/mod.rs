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
//! class name in a [`ConverterRegistry`] given to [`ConverterFactory::with_converters`].

pub mod config;
mod connector;
mod publish;
mod requests;
pub mod tls;

use std::path::Path;

use tbgw::config::ConfigError;
use tbgw::convert::{ConverterRegistry, Dialect};

use crate::factory::{ConverterFactory, WithConverters};

pub use config::MqttConnectorConfig;
pub use connector::MqttConnector;

/// How `mapping[].converter` sections are read: names and keys may come from the topic
/// (`topic` source, `keySource: topic`), and `bytes` converters exist.
pub const DIALECT: Dialect = Dialect::new().with_topic().with_bytes();

/// Builds MQTT connectors (`"type": "mqtt"`):
/// `MqttFactory::new().with_converters(registry)`.
pub type MqttFactory = ConverterFactory<MqttConnector>;

impl WithConverters for MqttConnector {
    const TYPE: &'static str = "mqtt";
    type Config = MqttConnectorConfig;

    fn build(
        file: &Path,
        name: &str,
        cfg: MqttConnectorConfig,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        MqttConnector::build(file, name, cfg, converters, ignored)
    }
}
