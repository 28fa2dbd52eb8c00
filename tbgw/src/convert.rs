//! Converter traits. Converters are pure and synchronous: protocol data plus configuration in,
//! [`DeviceData`] out; no I/O and no clock reads except through the arguments, so they can be
//! unit-tested and fuzzed.

use crate::model::DeviceData;

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

/// Turns a ThingsBoard request (RPC or attribute update) into a protocol payload.
pub trait DownlinkConverter: Send + Sync {
    /// The protocol payload for `request`: the JSON of the RPC (`{"method","params"}`) or the
    /// attribute update (`{key: value}`), addressed to `device`.
    fn convert(&self, device: &str, request: &serde_json::Value) -> Result<Vec<u8>, ConvertError>;
}
