//! One factory for the connectors that take custom converters (MQTT, Request, REST): it parses
//! the connector file into the connector's config type and builds the connector with the
//! [`ConverterRegistry`] the embedding application gave it.

use std::marker::PhantomData;
use std::path::Path;

use serde::de::DeserializeOwned;
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};
use tbgw::convert::ConverterRegistry;

/// A connector built from its parsed connector file and the custom converters.
pub trait WithConverters: Connector + Sized + 'static {
    /// The connector type, as written in `connectors[].type` (`mqtt`).
    const TYPE: &'static str;
    /// The connector file's type.
    type Config: DeserializeOwned;

    /// Builds the connector `name` from `cfg` (read from `file`); `"type": "custom"`
    /// converters come from `converters`, keys present but not used go to `ignored`.
    fn build(
        file: &Path,
        name: &str,
        cfg: Self::Config,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError>;
}

/// Builds connectors of type `C::TYPE`, handing them its custom converters.
pub struct ConverterFactory<C> {
    converters: ConverterRegistry,
    connector: PhantomData<fn() -> C>,
}

impl<C> ConverterFactory<C> {
    /// A factory with no custom converters.
    pub fn new() -> Self {
        ConverterFactory {
            converters: ConverterRegistry::new(),
            connector: PhantomData,
        }
    }

    /// The custom converters `"type": "custom"` mappings may name.
    pub fn with_converters(mut self, converters: ConverterRegistry) -> Self {
        self.converters = converters;
        self
    }
}

impl<C> Default for ConverterFactory<C> {
    fn default() -> Self {
        ConverterFactory::new()
    }
}

impl<C> Clone for ConverterFactory<C> {
    fn clone(&self) -> Self {
        ConverterFactory {
            converters: self.converters.clone(),
            connector: PhantomData,
        }
    }
}

impl<C: WithConverters> std::fmt::Debug for ConverterFactory<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConverterFactory")
            .field("type", &C::TYPE)
            .field("converters", &self.converters)
            .finish()
    }
}

impl<C: WithConverters> ConnectorFactory for ConverterFactory<C> {
    fn connector_type(&self) -> &'static str {
        C::TYPE
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: C::Config = spec.config.deserialize(&spec.file, ignored)?;
        let connector = C::build(&spec.file, &spec.name, cfg, &self.converters, ignored)?;
        Ok(Box::new(connector))
    }
}
