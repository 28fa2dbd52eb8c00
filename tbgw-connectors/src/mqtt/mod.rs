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
//! Converters: `json` and `bytes` (see [`uplink`]). A `custom` converter is a Rust
//! [`UplinkConverter`] an embedding application registers by
//! name with [`MqttFactory::with_converter`].

pub mod config;
mod connector;
mod publish;
mod requests;
pub mod tls;
pub mod topic;
pub mod uplink;

use std::collections::HashMap;
use std::sync::Arc;

use tbgw::config::{parse, ConfigError};
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};
use tbgw::convert::UplinkConverter;

pub use config::MqttConnectorConfig;
pub use connector::MqttConnector;

/// Builds MQTT connectors (`"type": "mqtt"`).
#[derive(Default, Clone)]
pub struct MqttFactory {
    custom: HashMap<String, Arc<dyn UplinkConverter>>,
}

impl std::fmt::Debug for MqttFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttFactory")
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MqttFactory {
    /// A factory with no custom converters.
    pub fn new() -> Self {
        MqttFactory::default()
    }

    /// Registers a custom converter under the name used in `converter.extension`.
    pub fn with_converter(mut self, name: &str, converter: Arc<dyn UplinkConverter>) -> Self {
        self.custom.insert(name.to_string(), converter);
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
            &self.custom,
            ignored,
        )?))
    }
}
