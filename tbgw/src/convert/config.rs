//! The `converter` section of a mapping, as upstream's connector files write it. One type for
//! every connector: the keys one connector does not know are reported by
//! [`Converter::build`](super::Converter::build) (see [`Dialect`](super::Dialect)).

use serde::Deserialize;

/// `mapping[].converter`: the newest form (`deviceInfo`), the flat form
/// (`deviceNameExpression`, Request and REST) and the legacy form
/// (`deviceNameJsonExpression`, `deviceNameTopicExpression`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverterConfig {
    /// `json` (default), `bytes` or `custom`.
    #[serde(rename = "type", default = "default_converter")]
    pub kind: String,
    /// Where the device name and profile come from.
    pub device_info: Option<DeviceInfoConfig>,
    /// Legacy: device name template over the message.
    pub device_name_json_expression: Option<String>,
    /// Legacy: device name regex over the topic.
    pub device_name_topic_expression: Option<String>,
    /// Legacy: device profile template over the message.
    pub device_type_json_expression: Option<String>,
    /// Legacy: device profile regex over the topic.
    pub device_type_topic_expression: Option<String>,
    /// Flat form: device name template (a constant without a placeholder).
    pub device_name_expression: Option<String>,
    /// Flat form: device profile template (also `deviceTypeExpression`).
    #[serde(alias = "deviceTypeExpression")]
    pub device_profile_expression: Option<String>,
    /// Attribute datapoints, or `"*"` for every key of the message.
    #[serde(default)]
    pub attributes: Datapoints,
    /// Time series datapoints, or `"*"` for every key of the message (also `telemetry`).
    #[serde(default, alias = "telemetry")]
    pub timeseries: Datapoints,
    /// Use the time the gateway received the message as the timestamp.
    #[serde(default)]
    pub use_received_ts: bool,
    /// `type: custom`: the converter's class name, registered by the embedding application in
    /// a [`ConverterRegistry`](super::ConverterRegistry).
    pub extension: Option<String>,
    /// `type: custom`: the converter's own settings, handed to its factory (also
    /// `extension-config`).
    #[serde(alias = "extension-config")]
    pub extension_config: Option<serde_json::Value>,
    /// Device-level report strategy of the devices this converter produces.
    pub report_strategy: Option<serde_json::Value>,
    /// Legacy: `true` is a device-level `ON_CHANGE` when no `reportStrategy` is given (old
    /// upstream versions dropped a message equal to the previous one on its topic; tbgw
    /// compares key by key).
    pub send_data_only_on_change: Option<serde_json::Value>,
}

fn default_converter() -> String {
    "json".into()
}

/// `converter.deviceInfo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfoConfig {
    /// `message` (default; `request` and `response` in the HTTP connectors), `topic` or
    /// `constant`.
    #[serde(default = "default_source")]
    pub device_name_expression_source: String,
    /// Template (message), regex (topic) or the name itself (constant).
    pub device_name_expression: String,
    /// Like `deviceNameExpressionSource`; `constant` by default.
    #[serde(default = "default_constant")]
    pub device_profile_expression_source: String,
    /// Template, regex or the profile itself (`default` by default).
    #[serde(default = "default_profile")]
    pub device_profile_expression: String,
}

fn default_source() -> String {
    "message".into()
}
fn default_constant() -> String {
    "constant".into()
}
fn default_profile() -> String {
    "default".into()
}

/// A datapoint list or `"*"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Datapoints {
    /// No datapoints.
    #[default]
    #[serde(skip)]
    None,
    /// `"*"`: every top-level key.
    All(String),
    /// Listed datapoints.
    List(Vec<DatapointConfig>),
}

/// One datapoint of `attributes[]` or `timeseries[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapointConfig {
    /// Value type: `string`, `integer`, `double`, `boolean`, `raw`, `json`.
    #[serde(rename = "type", default = "default_dp_type")]
    pub kind: String,
    /// Key (may be a template; with `keySource: topic`, a regex over the topic).
    pub key: String,
    /// Value template (JSON converter) or byte slices (bytes converter).
    pub value: String,
    /// `message` (default) or `topic`.
    pub key_source: Option<String>,
    /// Timestamp of this datapoint from the message (template).
    pub ts_field: Option<String>,
    /// Day first in ambiguous dates.
    #[serde(default)]
    pub dayfirst: bool,
    /// Year first in ambiguous dates.
    #[serde(default)]
    pub yearfirst: bool,
    /// Bytes converter: render byte slices as lowercase hex instead of UTF-8 text.
    #[serde(default)]
    pub hex_mode: bool,
    /// Datapoint-level report strategy: wins over the converter's for this key.
    pub report_strategy: Option<serde_json::Value>,
}

fn default_dp_type() -> String {
    "raw".into()
}
