//! The `bytes` uplink converter: the device name, keys and values are byte slices of the raw
//! payload (`[0:4]`, `[4:]`, `[:]`), rendered as UTF-8 text or, with `hexMode`, as hex
//! (upstream's `BytesMqttUplinkConverter`).

use serde_json::Value as Json;

use super::engine::Engine;
use super::{ConvertError, UplinkConverter, UplinkInput};
use crate::model::DeviceData;

/// A compiled `bytes` converter: one device per message. Built by
/// [`Converter::build`](super::Converter::build) from a `"type": "bytes"` section.
#[derive(Debug)]
pub struct BytesConverter {
    pub(super) engine: Box<Engine>,
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
