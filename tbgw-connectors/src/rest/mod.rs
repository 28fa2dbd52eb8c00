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
//! name in a [`ConverterRegistry`] given to [`ConverterFactory::with_converters`]; it receives the
//! raw body and the path as its source.

pub mod config;
mod connector;
pub mod server;
pub mod uplink;

use std::path::Path;

use tbgw::config::ConfigError;
use tbgw::convert::{ConverterRegistry, Dialect};

use crate::factory::{ConverterFactory, WithConverters};

pub use config::RestConnectorConfig;
pub use connector::RestConnector;

/// How `mapping[].converter` sections are read: the device name comes from the request data
/// (`request`, also `message`) or a constant; an endpoint whose custom converter is not
/// registered is not served.
pub const DIALECT: Dialect = Dialect::new()
    .message_sources(&["request", "message"])
    .unregistered("this endpoint is not served");

/// Builds REST connectors (`"type": "rest"`):
/// `RestFactory::new().with_converters(registry)`.
pub type RestFactory = ConverterFactory<RestConnector>;

impl WithConverters for RestConnector {
    const TYPE: &'static str = "rest";
    type Config = RestConnectorConfig;

    fn build(
        file: &Path,
        name: &str,
        cfg: RestConnectorConfig,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        RestConnector::build(file, name, cfg, converters, ignored)
    }
}
