//! Custom converters: Rust [`UplinkConverter`]s an embedding application registers under the
//! class name upstream's configs put in `converter.extension` (e.g.
//! `CustomMqttUplinkConverter`). A registered converter is either ready-made or built by a
//! factory that receives the mapping's `extensionConfig` (`extension-config`), once per
//! mapping, when the connector is built, so a bad `extensionConfig` is a configuration error
//! `tbgw check` reports.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value as Json;

use super::UplinkConverter;
use crate::config::ConfigError;

/// Why a custom converter's factory refused its `extensionConfig`.
pub type FactoryError = Box<dyn std::error::Error + Send + Sync>;

type Factory = dyn Fn(&Json) -> Result<Arc<dyn UplinkConverter>, FactoryError> + Send + Sync;

/// Custom converters by class name, shared by every connector factory that supports
/// `"type": "custom"` converters (MQTT, Request, REST). Cloning is cheap (the converters and
/// factories are shared).
///
/// ```
/// use std::sync::Arc;
/// use tbgw::convert::{ConverterRegistry, JsonConverter, UplinkConverter};
/// # #[derive(Debug)] struct Mine;
/// # impl UplinkConverter for Mine {
/// #     fn convert(&self, _: tbgw::convert::UplinkInput<'_>, _: &mut Vec<tbgw::convert::ConvertError>)
/// #         -> Result<Vec<tbgw::model::DeviceData>, tbgw::convert::ConvertError> { Ok(vec![]) }
/// # }
/// let registry = ConverterRegistry::new()
///     // The same converter for every mapping that names it; extensionConfig is not read.
///     .with("CustomMqttUplinkConverter", Arc::new(Mine))
///     // A converter built from each mapping's extensionConfig.
///     .with_factory("CustomRestUplinkConverter", |cfg| {
///         let _scale = cfg.get("scale").and_then(|v| v.as_f64()).ok_or("`scale` is missing")?;
///         Ok(Arc::new(Mine) as Arc<dyn UplinkConverter>)
///     });
/// assert_eq!(registry.names(), ["CustomMqttUplinkConverter", "CustomRestUplinkConverter"]);
/// ```
#[derive(Clone, Default)]
pub struct ConverterRegistry {
    factories: HashMap<String, Arc<Factory>>,
}

impl fmt::Debug for ConverterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConverterRegistry")
            .field("names", &self.names())
            .finish()
    }
}

impl ConverterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        ConverterRegistry::default()
    }

    /// Registers a ready converter under `class`, shared by every mapping that names it; its
    /// `extensionConfig` is not read. Replaces an earlier registration of the same name.
    pub fn register(&mut self, class: &str, converter: Arc<dyn UplinkConverter>) -> &mut Self {
        self.register_factory(class, move |_| Ok(converter.clone()))
    }

    /// Registers a factory under `class`: it is called once for every mapping that names
    /// `class`, with that mapping's `extensionConfig` (`Null` when absent). An error becomes a
    /// configuration error at the mapping's `extensionConfig`.
    pub fn register_factory<F>(&mut self, class: &str, factory: F) -> &mut Self
    where
        F: Fn(&Json) -> Result<Arc<dyn UplinkConverter>, FactoryError> + Send + Sync + 'static,
    {
        self.factories.insert(class.to_string(), Arc::new(factory));
        self
    }

    /// [`register`](Self::register), by value.
    pub fn with(mut self, class: &str, converter: Arc<dyn UplinkConverter>) -> Self {
        self.register(class, converter);
        self
    }

    /// [`register_factory`](Self::register_factory), by value.
    pub fn with_factory<F>(mut self, class: &str, factory: F) -> Self
    where
        F: Fn(&Json) -> Result<Arc<dyn UplinkConverter>, FactoryError> + Send + Sync + 'static,
    {
        self.register_factory(class, factory);
        self
    }

    /// True when `class` is registered.
    pub fn contains(&self, class: &str) -> bool {
        self.factories.contains_key(class)
    }

    /// The registered class names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.factories.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The converter of a `custom` section: `class` from `extension`, `config` from
    /// `extensionConfig`; `prefix` is the section's key path for errors. `Ok(None)` when
    /// `class` is not registered.
    pub fn build(
        &self,
        file: &Path,
        prefix: &str,
        class: &str,
        config: Option<&Json>,
    ) -> Result<Option<Arc<dyn UplinkConverter>>, ConfigError> {
        let Some(factory) = self.factories.get(class) else {
            return Ok(None);
        };
        factory(config.unwrap_or(&Json::Null))
            .map(Some)
            .map_err(|e| {
                ConfigError::new(
                    file,
                    format!("{prefix}.extensionConfig"),
                    format!("custom converter `{class}`: {e}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{ConvertError, UplinkInput};
    use crate::model::{DeviceData, Value};
    use serde_json::json;

    /// Names its device after `extensionConfig.device`.
    #[derive(Debug)]
    struct Named(String);

    impl UplinkConverter for Named {
        fn convert(
            &self,
            input: UplinkInput<'_>,
            _errors: &mut Vec<ConvertError>,
        ) -> Result<Vec<DeviceData>, ConvertError> {
            let mut d = DeviceData::new(self.0.clone(), "default");
            d.push_telemetry(
                input.received_ts,
                "len",
                Value::Int(input.payload.len() as i64),
            );
            Ok(vec![d])
        }
    }

    fn named(cfg: &Json) -> Result<Arc<dyn UplinkConverter>, FactoryError> {
        let name = cfg
            .get("device")
            .and_then(Json::as_str)
            .ok_or("`device` (a string) is missing")?;
        Ok(Arc::new(Named(name.to_string())))
    }

    fn run(c: &dyn UplinkConverter) -> DeviceData {
        let input = UplinkInput {
            source: "t",
            payload: b"abc",
            received_ts: 1,
        };
        c.convert(input, &mut Vec::new()).unwrap().remove(0)
    }

    #[test]
    fn a_factory_gets_the_extension_config_of_each_mapping() {
        let r = ConverterRegistry::new().with_factory("CustomMqttUplinkConverter", named);
        let f = Path::new("mqtt.json");
        let a = r
            .build(
                f,
                "mapping[0].converter",
                "CustomMqttUplinkConverter",
                Some(&json!({"device": "A"})),
            )
            .unwrap()
            .expect("registered");
        let b = r
            .build(
                f,
                "mapping[1].converter",
                "CustomMqttUplinkConverter",
                Some(&json!({"device": "B"})),
            )
            .unwrap()
            .expect("registered");
        assert_eq!(run(a.as_ref()).device_name, "A");
        assert_eq!(run(b.as_ref()).device_name, "B");
    }

    #[test]
    fn a_refused_extension_config_is_a_config_error_at_its_key() {
        let r = ConverterRegistry::new().with_factory("X", named);
        let Err(e) = r.build(Path::new("rest.json"), "mapping[2].converter", "X", None) else {
            panic!("a missing extensionConfig must be refused by this factory");
        };
        assert_eq!(e.key, "mapping[2].converter.extensionConfig");
        assert!(e.reason.contains("custom converter `X`: `device`"), "{e}");
    }

    #[test]
    fn a_ready_converter_is_shared_and_unknown_names_are_none() {
        let c: Arc<dyn UplinkConverter> = Arc::new(Named("R".into()));
        let r = ConverterRegistry::new().with("Ready", c.clone());
        let built = r
            .build(Path::new("f"), "p", "Ready", Some(&json!([1, 2])))
            .unwrap()
            .expect("registered");
        assert!(Arc::ptr_eq(&built, &c));
        assert!(r
            .build(Path::new("f"), "p", "Other", None)
            .unwrap()
            .is_none());
        assert!(r.contains("Ready") && !r.contains("Other"));
        assert_eq!(format!("{r:?}"), "ConverterRegistry { names: [\"Ready\"] }");
    }
}
