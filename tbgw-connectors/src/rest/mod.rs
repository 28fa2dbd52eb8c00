//! The REST connector: an HTTP(S) server devices push data to, plus attribute requests that
//! wait for ThingsBoard's answer, and attribute updates and RPCs sent out as HTTP requests.
//!
//! Configured by upstream's `rest.json` (`server`, `mapping[]`, `requestsMapping`). Each
//! request is answered only once the gateway's storage has its data (200), or with 503 when
//! storage does not take it within the endpoint's timeout; see [`server`] for every status
//! code. Credentials of `basic` endpoints are compared in constant time; request bodies are
//! limited to `server.maxRequestBodySize` bytes (default 1 MiB).
//!
//! Converters: `json` from [`tbgw::convert`], read in this connector's [`DIALECT`], over the
//! request data merged from path parameters, query and body (see [`uplink`]); a `custom`
//! converter is a Rust [`UplinkConverter`](tbgw::convert::UplinkConverter) registered by class
//! name in a [`ConverterRegistry`] given to [`RestFactory::with_converters`]; it receives the
//! raw body and the path as its source.

pub mod config;
mod connector;
pub mod server;
pub mod uplink;

use tbgw::config::{parse, ConfigError};
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};
use tbgw::convert::{ConverterRegistry, Dialect};

pub use config::RestConnectorConfig;
pub use connector::RestConnector;

/// How `mapping[].converter` sections are read: the device name comes from the request data
/// (`request`, also `message`) or a constant; an endpoint whose custom converter is not
/// registered is not served.
pub const DIALECT: Dialect = Dialect::new()
    .message_sources(&["request", "message"])
    .unregistered("this endpoint is not served");

/// Builds REST connectors (`"type": "rest"`).
#[derive(Debug, Default, Clone)]
pub struct RestFactory {
    converters: ConverterRegistry,
}

impl RestFactory {
    /// A factory with no custom converters.
    pub fn new() -> Self {
        RestFactory::default()
    }

    /// The custom converters `"type": "custom"` mappings may name.
    pub fn with_converters(mut self, converters: ConverterRegistry) -> Self {
        self.converters = converters;
        self
    }
}

impl ConnectorFactory for RestFactory {
    fn connector_type(&self) -> &'static str {
        "rest"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: RestConnectorConfig = parse::from_value(&spec.file, "", &spec.config, ignored)?;
        Ok(Box::new(RestConnector::build(
            &spec.file,
            &spec.name,
            cfg,
            &self.converters,
            ignored,
        )?))
    }
}
