//! The Request connector: the gateway polls HTTP(S) APIs and converts the answers, and sends
//! attribute updates and RPCs from ThingsBoard to those APIs as HTTP requests.
//!
//! Configured by upstream's `request.json` (`host`, `SSLVerify`, `security`, `mapping[]`,
//! `attributeUpdates[]`, `serverSideRpc[]`). Each mapping is polled by its own task on a fixed
//! schedule (`scanPeriod`): a slow endpoint delays only its own next poll, missed ticks lapse
//! instead of piling up, and polls of one mapping never overlap.
//!
//! Converters: `json` (see [`uplink`]); a `custom` converter is a Rust
//! [`UplinkConverter`] registered by name with
//! [`RequestFactory::with_converter`]; it receives the raw response body.

pub mod config;
mod connector;
pub mod uplink;

use std::collections::HashMap;
use std::sync::Arc;

use tbgw::config::{parse, ConfigError};
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};
use tbgw::convert::UplinkConverter;

pub use config::RequestConnectorConfig;
pub use connector::RequestConnector;

/// Builds Request connectors (`"type": "request"`).
#[derive(Default, Clone)]
pub struct RequestFactory {
    custom: HashMap<String, Arc<dyn UplinkConverter>>,
}

impl std::fmt::Debug for RequestFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestFactory")
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RequestFactory {
    /// A factory with no custom converters.
    pub fn new() -> Self {
        RequestFactory::default()
    }

    /// Registers a custom converter under the name used in `converter.extension`.
    pub fn with_converter(mut self, name: &str, converter: Arc<dyn UplinkConverter>) -> Self {
        self.custom.insert(name.to_string(), converter);
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
            &self.custom,
            ignored,
        )?))
    }
}
