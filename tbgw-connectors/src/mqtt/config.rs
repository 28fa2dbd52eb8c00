//! `mqtt.json`: the MQTT connector's configuration, in upstream's format.

use serde::Deserialize;

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttConnectorConfig {
    /// The broker to subscribe to.
    pub broker: BrokerConfig,
    /// Topic filters and how to convert what arrives on them.
    #[serde(default)]
    pub mapping: Vec<MappingConfig>,
}

/// `broker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Client id (random when absent).
    pub client_id: Option<String>,
    /// Protocol: 3 (MQTT 3.1, served as 3.1.1), 4 (3.1.1) or 5 (default).
    #[serde(default = "default_version")]
    pub version: u8,
    /// Keep-alive in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: u64,
    /// MQTT 3.1.1 clean session.
    #[serde(default = "default_true")]
    pub clean_session: bool,
    /// MQTT 5 clean start.
    #[serde(default = "default_true")]
    pub clean_start: bool,
    /// MQTT 5 session expiry in seconds.
    #[serde(default)]
    pub session_expiry_interval: u32,
    /// Credentials.
    #[serde(default)]
    pub security: BrokerSecurity,
}

const fn default_port() -> u16 {
    1883
}
const fn default_version() -> u8 {
    5
}
const fn default_keep_alive() -> u64 {
    60
}
const fn default_true() -> bool {
    true
}

/// `broker.security`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSecurity {
    /// `anonymous` (default) or `basic`.
    #[serde(rename = "type", default = "default_security")]
    pub kind: String,
    /// User name for `basic`.
    pub username: Option<String>,
    /// Password for `basic`.
    pub password: Option<String>,
}

fn default_security() -> String {
    "anonymous".into()
}

impl Default for BrokerSecurity {
    /// Anonymous, as when the section is absent.
    fn default() -> Self {
        BrokerSecurity {
            kind: default_security(),
            username: None,
            password: None,
        }
    }
}

/// One entry of `mapping[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingConfig {
    /// Topic filter (`+`, `#`, `$share/<group>/...`).
    pub topic_filter: String,
    /// QoS of the subscription (default 1).
    #[serde(default = "default_sub_qos")]
    pub subscription_qos: u8,
    /// The converter.
    pub converter: ConverterConfig,
}

const fn default_sub_qos() -> u8 {
    1
}

/// `mapping[].converter`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverterConfig {
    /// `json`, `bytes` or `custom`.
    #[serde(rename = "type", default = "default_converter")]
    pub kind: String,
    /// Where the device name and profile come from.
    pub device_info: Option<DeviceInfoConfig>,
    /// Legacy: device name template over the JSON message.
    pub device_name_json_expression: Option<String>,
    /// Legacy: device name regex over the topic.
    pub device_name_topic_expression: Option<String>,
    /// Legacy: device profile template over the JSON message.
    pub device_type_json_expression: Option<String>,
    /// Legacy: device profile regex over the topic.
    pub device_type_topic_expression: Option<String>,
    /// Attribute datapoints, or `"*"` for every key of the message.
    #[serde(default)]
    pub attributes: Datapoints,
    /// Time series datapoints, or `"*"` for every key of the message.
    #[serde(default, alias = "telemetry")]
    pub timeseries: Datapoints,
    /// Use the time the gateway received the message as the timestamp.
    #[serde(default)]
    pub use_received_ts: bool,
    /// Custom converter name (`type: custom`), registered by the embedding application.
    pub extension: Option<String>,
    /// Configuration handed to the custom converter.
    #[serde(alias = "extension-config")]
    pub extension_config: Option<serde_json::Value>,
}

fn default_converter() -> String {
    "json".into()
}

/// `converter.deviceInfo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfoConfig {
    /// `message`, `topic` or `constant`.
    #[serde(default = "default_source")]
    pub device_name_expression_source: String,
    /// Template (message), regex (topic) or the name itself (constant).
    pub device_name_expression: String,
    /// `message`, `topic` or `constant`.
    #[serde(default = "default_constant")]
    pub device_profile_expression_source: String,
    /// Template, regex or the profile itself.
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

/// One datapoint.
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
}

fn default_dp_type() -> String {
    "raw".into()
}
