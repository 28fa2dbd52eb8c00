//! The Request connector: the gateway polls HTTP(S) APIs and converts the answers, and sends
//! attribute updates and RPCs from ThingsBoard to those APIs as HTTP requests.
//!
//! Configured by upstream's `request.json` (`host`, `SSLVerify`, `security`, `mapping[]`,
//! `attributeUpdates[]`, `serverSideRpc[]`). Each mapping is polled by its own task on a fixed
//! schedule (`scanPeriod`): a slow endpoint delays only its own next poll, missed ticks lapse
//! instead of piling up, and polls of one mapping never overlap.
//!
//! Converters: `json` from [`tbgw::convert`], read in this connector's [`DIALECT`], over the
//! items of the response (see [`uplink`]); a `custom` converter is a Rust
//! [`UplinkConverter`](tbgw::convert::UplinkConverter) registered by class name in a
//! [`ConverterRegistry`] given to [`ConverterFactory::with_converters`]; it receives the raw
//! response body and the URL as its source.

pub mod config;
mod connector;
pub mod uplink;

use std::path::Path;

use tbgw::config::ConfigError;
use tbgw::convert::{ConverterRegistry, Dialect};

use crate::factory::{ConverterFactory, WithConverters};

pub use config::RequestConnectorConfig;
pub use connector::RequestConnector;

/// How `mapping[].converter` sections are read: the device name comes from the response
/// (`message`, `request` or `response`) or a constant; time series are `telemetry`.
pub const DIALECT: Dialect = Dialect::new()
    .message_sources(&["message", "request", "response"])
    .timeseries_key("telemetry");

/// Builds Request connectors (`"type": "request"`):
/// `RequestFactory::new().with_converters(registry)`.
pub type RequestFactory = ConverterFactory<RequestConnector>;

impl WithConverters for RequestConnector {
    const TYPE: &'static str = "request";
    type Config = RequestConnectorConfig;

    fn build(
        file: &Path,
        name: &str,
        cfg: RequestConnectorConfig,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        RequestConnector::build(file, name, cfg, converters, ignored)
    }
}
