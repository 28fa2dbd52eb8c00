//! The REST connector: an HTTP(S) server devices push data to, plus attribute requests that
//! wait for ThingsBoard's answer, and attribute updates and RPCs sent out as HTTP requests.
//!
//! Configured by upstream's `rest.json` (`server`, `mapping[]`, `requestsMapping`). Each
//! request is answered only once the gateway's storage has its data (200), or with 503 when
//! storage does not take it within the endpoint's timeout; see [`server`] for every status
//! code. Credentials of `basic` endpoints are compared in constant time; request bodies are
//! limited to `server.maxRequestBodySize` bytes (default 1 MiB).
//!
//! Converters: `json` over the request data merged from path parameters, query and body (see
//! [`uplink`]); a `custom` converter is a Rust [`UplinkConverter`]
//! registered with [`RestFactory::with_converter`]; it receives the raw body.

pub mod config;
mod connector;
pub mod server;
pub mod uplink;

use std::collections::HashMap;
use std::sync::Arc;

use tbgw::config::{parse, ConfigError};
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};
use tbgw::convert::UplinkConverter;

pub use config::RestConnectorConfig;
pub use connector::RestConnector;

/// Builds REST connectors (`"type": "rest"`).
#[derive(Default, Clone)]
pub struct RestFactory {
    custom: HashMap<String, Arc<dyn UplinkConverter>>,
}

impl std::fmt::Debug for RestFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestFactory")
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RestFactory {
    /// A factory with no custom converters.
    pub fn new() -> Self {
        RestFactory::default()
    }

    /// Registers a custom converter under the name used in `converter.extension`.
    pub fn with_converter(mut self, name: &str, converter: Arc<dyn UplinkConverter>) -> Self {
        self.custom.insert(name.to_string(), converter);
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
            &self.custom,
            ignored,
        )?))
    }
}
