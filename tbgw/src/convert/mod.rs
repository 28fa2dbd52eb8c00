//! The converter layer every connector uses. Converters are pure and synchronous: protocol
//! data plus configuration in, [`DeviceData`] out; no I/O and no clock reads except through
//! the arguments, so they can be unit-tested and fuzzed.
//!
//! * [`UplinkConverter`]: the trait; a connector calls it with an [`UplinkInput`] (source,
//!   payload, receive time).
//! * [`ConverterConfig`]: upstream's `converter` section (`type`, `deviceInfo`,
//!   `attributes[]`, `timeseries[]`, `extension`, `extensionConfig`, legacy keys), one type for
//!   every connector; a [`Dialect`] says where a connector's sections differ (source names,
//!   topics, whether `bytes` exists).
//! * [`Converter::build`] compiles a section into the built-in [`JsonConverter`] (`json`) or
//!   [`BytesConverter`] (`bytes`), or takes a `custom` one from a [`ConverterRegistry`] by the
//!   class name in `extension`, handing its factory the section's `extensionConfig`.
//! * [`downlink`]: why there is no downlink converter trait, and the scopes downlink
//!   templates render against.
//!
//! ## A custom converter with its own settings
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::{json, Value as Json};
//! use tbgw::convert::{
//!     ConvertError, Converter, ConverterConfig, ConverterRegistry, Dialect, FactoryError,
//!     UplinkConverter, UplinkInput,
//! };
//! use tbgw::model::{DeviceData, Value};
//!
//! /// Reads a big-endian u16 at `offset` and scales it (`extensionConfig: {"offset", "scale"}`).
//! #[derive(Debug)]
//! struct Scaled { offset: usize, scale: f64 }
//!
//! impl UplinkConverter for Scaled {
//!     fn convert(&self, input: UplinkInput<'_>, _errors: &mut Vec<ConvertError>)
//!         -> Result<Vec<DeviceData>, ConvertError> {
//!         let raw = input.payload.get(self.offset..self.offset + 2)
//!             .ok_or_else(|| ConvertError::Malformed("payload too short".into()))?;
//!         let mut d = DeviceData::new(input.source, "sensor");
//!         let v = u16::from_be_bytes([raw[0], raw[1]]) as f64 * self.scale;
//!         d.push_telemetry(input.received_ts, "value", Value::Float(v));
//!         Ok(vec![d])
//!     }
//! }
//!
//! fn scaled(cfg: &Json) -> Result<Arc<dyn UplinkConverter>, FactoryError> {
//!     let offset = cfg["offset"].as_u64().ok_or("`offset` must be a number")? as usize;
//!     let scale = cfg["scale"].as_f64().unwrap_or(1.0);
//!     Ok(Arc::new(Scaled { offset, scale }))
//! }
//!
//! // The embedding application registers the class name its configs use ...
//! let registry = ConverterRegistry::new().with_factory("CustomMqttUplinkConverter", scaled);
//! // ... and hands the registry to the connector factories, e.g.
//! // `tbgw_connectors::mqtt::MqttFactory::new().with_converters(registry.clone())`.
//! // A connector builds each mapping's converter section with it:
//! let section: ConverterConfig = serde_json::from_value(json!({
//!     "type": "custom",
//!     "extension": "CustomMqttUplinkConverter",
//!     "extensionConfig": {"offset": 1, "scale": 0.5}
//! }))?;
//! let mut ignored = Vec::new();
//! let converter = Converter::build(
//!     "mqtt.json".as_ref(), "mapping[0].converter", &section,
//!     &Dialect::new().with_topic().with_bytes(), &registry, &mut ignored,
//! )?.expect("registered");
//! let input = UplinkInput { source: "sensor-1", payload: &[0, 0, 42], received_ts: 1 };
//! let data = converter.convert(input, &mut Vec::new())?;
//! assert_eq!(data[0].telemetry[0].values[0].1, Value::Float(21.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bytes;
mod config;
mod custom;
pub mod downlink;
mod engine;
mod json;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use self::bytes::BytesConverter;
pub use self::config::{ConverterConfig, DatapointConfig, Datapoints, DeviceInfoConfig};
pub use self::custom::{ConverterRegistry, FactoryError};
use self::engine::Engine;
pub use self::engine::{device_strategy, topic_capture, DeviceNameKeys, Dialect, NameSource};
pub use self::json::JsonConverter;
use crate::config::{ConfigError, ReportStrategyConfig};
use crate::model::DeviceData;
use crate::report::ReportOverrides;

/// A conversion failure. Connectors count it and log it; it never stops a connector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The payload could not be decoded (e.g. not valid JSON).
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A value did not match the configured type.
    #[error("key `{key}`: {reason}")]
    Value {
        /// The datapoint key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The device name could not be determined.
    #[error("no device name: {0}")]
    NoDeviceName(String),
}

/// What a field message looks like to an uplink converter.
#[derive(Debug, Clone, Copy)]
pub struct UplinkInput<'a> {
    /// Where it came from (an MQTT topic, a URL, a register block...).
    pub source: &'a str,
    /// The raw payload.
    pub payload: &'a [u8],
    /// When the gateway received it (milliseconds since the epoch).
    pub received_ts: i64,
}

/// Turns a field message into device data.
pub trait UplinkConverter: Send + Sync {
    /// Converts one message. It may produce data for several devices (e.g. a JSON array), or
    /// none. Problems with single keys are reported in `errors` while the rest is converted.
    fn convert(
        &self,
        input: UplinkInput<'_>,
        errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError>;
}

/// The converter of one mapping, compiled from its `converter` section.
pub enum Converter {
    /// The built-in `json` converter.
    Json(JsonConverter),
    /// The built-in `bytes` converter.
    Bytes(BytesConverter),
    /// A custom converter from the [`ConverterRegistry`].
    Custom(Arc<dyn UplinkConverter>),
}

impl std::fmt::Debug for Converter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Converter::Json(c) => f.debug_tuple("Json").field(c).finish(),
            Converter::Bytes(c) => f.debug_tuple("Bytes").field(c).finish(),
            Converter::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Converter {
    /// Compiles section `c` (key path `prefix`, e.g. `mapping[0].converter`) by its `type`:
    /// `json`, `bytes` (when the dialect has it) or `custom` (the class named by `extension`,
    /// from `registry`, built with `extensionConfig`). `Ok(None)`: a custom converter that is
    /// not registered; the mapping is reported in `ignored` and should stay inactive.
    pub fn build(
        file: &Path,
        prefix: &str,
        c: &ConverterConfig,
        dialect: &Dialect,
        registry: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Option<Converter>, ConfigError> {
        match c.kind.as_str() {
            "json" => JsonConverter::build(file, prefix, c, dialect, ignored)
                .map(|c| Some(Converter::Json(c))),
            "bytes" if dialect.allows_bytes() => Ok(Some(Converter::Bytes(BytesConverter {
                engine: Box::new(Engine::build(file, prefix, c, true, dialect, ignored)?),
            }))),
            "custom" => {
                let class = c.extension.as_deref().unwrap_or_default();
                let built = registry.build(file, prefix, class, c.extension_config.as_ref())?;
                if built.is_none() {
                    ignored.push(format!(
                        "{prefix} (custom converter `{class}` is not registered; {})",
                        dialect.unregistered_note()
                    ));
                }
                Ok(built.map(Converter::Custom))
            }
            other => Err(ConfigError::new(
                file,
                format!("{prefix}.type"),
                format!(
                    "unknown converter type `{other}`; expected {}",
                    if dialect.allows_bytes() {
                        "json, bytes or custom"
                    } else {
                        "json or custom"
                    }
                ),
            )),
        }
    }

    /// Sets the device-level report strategy of a built-in converter from the mapping (the
    /// MQTT connector's `mapping[].reportStrategy`) unless its section has its own
    /// (`reportStrategy` or `sendDataOnlyOnChange: true`).
    pub fn with_mapping_strategy(mut self, s: Option<ReportStrategyConfig>) -> Self {
        match &mut self {
            Converter::Json(JsonConverter { engine })
            | Converter::Bytes(BytesConverter { engine }) => engine.set_mapping_strategy(s),
            Converter::Custom(_) => {}
        }
        self
    }

    /// The device and datapoint report strategies a built-in converter attaches to every
    /// record (`None` for a custom converter, or when none is configured). Datapoints whose
    /// key is a template add theirs per message.
    pub fn report_overrides(&self) -> Option<&Arc<ReportOverrides>> {
        match self {
            Converter::Json(JsonConverter { engine })
            | Converter::Bytes(BytesConverter { engine }) => engine.report_overrides(),
            Converter::Custom(_) => None,
        }
    }
}

impl UplinkConverter for Converter {
    fn convert(
        &self,
        input: UplinkInput<'_>,
        errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError> {
        match self {
            Converter::Json(c) => c.convert(input, errors),
            Converter::Bytes(c) => c.convert(input, errors),
            Converter::Custom(c) => c.convert(input, errors),
        }
    }
}
