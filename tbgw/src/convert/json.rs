//! The `json` uplink converter: a device name and profile, attribute and time-series
//! datapoints, each a `${…}` template over a JSON message (upstream's
//! `JsonMqttUplinkConverter`, `JsonRequestUplinkConverter`, `JsonRESTUplinkConverter`).

use std::path::Path;

use serde_json::Value as Json;

use super::engine::{Dialect, Engine};
use super::{ConvertError, ConverterConfig, UplinkConverter, UplinkInput};
use crate::config::ConfigError;
use crate::model::DeviceData;

/// A compiled `json` converter.
///
/// As an [`UplinkConverter`] it parses the payload as JSON; an array is converted element by
/// element and merged per device. A connector that already holds the JSON (the REST
/// connector's merged request data, the Request connector's unpacked items) calls
/// [`JsonConverter::convert_value`] or [`JsonConverter::convert_items`].
#[derive(Debug)]
pub struct JsonConverter {
    pub(super) engine: Box<Engine>,
}

impl JsonConverter {
    /// Compiles section `c`; `prefix` is its key path for errors (`mapping[0].converter`).
    /// Keys the section has but the converter does not use are added to `ignored`.
    pub fn build(
        file: &Path,
        prefix: &str,
        c: &ConverterConfig,
        dialect: &Dialect,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        Ok(JsonConverter {
            engine: Box::new(Engine::build(file, prefix, c, false, dialect, ignored)?),
        })
    }

    /// Converts one JSON value that came from `source` (a topic, a URL, a path). Problems
    /// with single keys go to `errors`; a missing device name fails the whole conversion.
    pub fn convert_value(
        &self,
        source: &str,
        json: &Json,
        received_ts: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Result<DeviceData, ConvertError> {
        self.engine
            .convert_one(source, json, &[], received_ts, errors)
    }

    /// Converts several JSON values, merging the data per device. A value that cannot be
    /// converted is reported in `errors`; the others still go through.
    pub fn convert_items(
        &self,
        source: &str,
        items: &[Json],
        received_ts: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Vec<DeviceData> {
        let (out, first_error) = self.convert_array(source, items, &[], received_ts, errors);
        errors.extend(first_error);
        out
    }

    /// Element by element, merged per device; the first failure is returned apart, later
    /// ones go to `errors`.
    fn convert_array(
        &self,
        source: &str,
        items: &[Json],
        payload: &[u8],
        received_ts: i64,
        errors: &mut Vec<ConvertError>,
    ) -> (Vec<DeviceData>, Option<ConvertError>) {
        let mut out: Vec<DeviceData> = Vec::new();
        let mut first_error = None;
        for item in items {
            let d = match self
                .engine
                .convert_one(source, item, payload, received_ts, errors)
            {
                Ok(d) => d,
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    } else {
                        errors.push(e);
                    }
                    continue;
                }
            };
            match out.iter_mut().find(|o| o.device_name == d.device_name) {
                Some(o) => o.merge(d),
                None => out.push(d),
            }
        }
        (out, first_error)
    }
}

impl UplinkConverter for JsonConverter {
    fn convert(
        &self,
        input: UplinkInput<'_>,
        errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError> {
        let json: Json = serde_json::from_slice(input.payload)
            .map_err(|e| ConvertError::Malformed(format!("not valid JSON: {e}")))?;
        match &json {
            Json::Array(items) => {
                // A bad element is reported and skipped; the good ones still go through.
                let (out, first_error) = self.convert_array(
                    input.source,
                    items,
                    input.payload,
                    input.received_ts,
                    errors,
                );
                match first_error {
                    Some(e) if out.is_empty() => Err(e),
                    Some(e) => {
                        errors.push(e);
                        Ok(out)
                    }
                    None => Ok(out),
                }
            }
            _ => Ok(vec![self.engine.convert_one(
                input.source,
                &json,
                input.payload,
                input.received_ts,
                errors,
            )?]),
        }
    }
}
