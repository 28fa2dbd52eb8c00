//! The `bytes` uplink converter: the device name, keys and values are byte slices of the raw
//! payload (`[0:4]`, `[4:]`, `[:]`), rendered as UTF-8 text or, with `hexMode`, as hex
//! (upstream's `BytesMqttUplinkConverter`).

use std::path::Path;
use std::sync::Arc;

use serde_json::Value as Json;

use super::engine::{Dialect, Engine};
use super::{ConvertError, ConverterConfig, UplinkConverter, UplinkInput};
use crate::config::{ConfigError, ReportStrategyConfig};
use crate::model::DeviceData;
use crate::report::ReportOverrides;

/// A compiled `bytes` converter: one device per message.
#[derive(Debug)]
pub struct BytesConverter {
    engine: Engine,
}

impl BytesConverter {
    /// Compiles section `c`; `prefix` is its key path for errors (`mapping[0].converter`).
    pub fn build(
        file: &Path,
        prefix: &str,
        c: &ConverterConfig,
        dialect: &Dialect,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        Ok(BytesConverter {
            engine: Engine::build(file, prefix, c, true, dialect, ignored)?,
        })
    }

    /// Like [`JsonConverter::with_mapping_strategy`](super::JsonConverter::with_mapping_strategy).
    pub fn with_mapping_strategy(self, s: Option<ReportStrategyConfig>) -> Self {
        BytesConverter {
            engine: self.engine.with_mapping_strategy(s),
        }
    }

    /// Like [`JsonConverter::report_overrides`](super::JsonConverter::report_overrides).
    pub fn report_overrides(&self) -> Option<&Arc<ReportOverrides>> {
        self.engine.report_overrides()
    }
}

impl UplinkConverter for BytesConverter {
    fn convert(
        &self,
        input: UplinkInput<'_>,
        errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError> {
        let d = self.engine.convert_one(
            input.source,
            &Json::Null,
            input.payload,
            input.received_ts,
            errors,
        )?;
        Ok(vec![d])
    }
}
