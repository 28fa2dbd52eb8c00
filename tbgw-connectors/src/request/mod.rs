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
//! [`ConverterRegistry`] given to [`RequestFactory::with_converters`]; it receives the raw
//! response body and the URL as its source.

pub mod config;
mod connector;
pub mod uplink;

use tbgw::config::{parse, ConfigError};
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};
use tbgw::convert::{ConverterRegistry, Dialect};

pub use config::RequestConnectorConfig;
pub use connector::RequestConnector;

/// How `mapping[].converter` sections are read: the device name comes from the response
/// (`message`, `request` or `response`) or a constant; time series are `telemetry`.
pub const DIALECT: Dialect = Dialect::new()
    .message_sources(&["message", "request", "response"])
    .timeseries_key("telemetry");

/// Builds Request connectors (`"type": "request"`).
#[derive(Debug, Default, Clone)]
pub struct RequestFactory {
    converters: ConverterRegistry,
}

impl RequestFactory {
    /// A factory with no custom converters.
    pub fn new() -> Self {
        RequestFactory::default()
    }

    /// The custom converters `"type": "custom"` mappings may name.
    pub fn with_converters(mut self, converters: ConverterRegistry) -> Self {
        self.converters = converters;
        self
    }
}

impl ConnectorFactory for RequestFactory {
    fn connector_type(&self) -> &'static str {
        "request"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: RequestConnectorConfig = parse::from_value(&spec.file, "", &spec.config, ignored)?;
        Ok(Box::new(RequestConnector::build(
            &spec.file,
            &spec.name,
            cfg,
            &self.converters,
            ignored,
        )?))
    }
}
