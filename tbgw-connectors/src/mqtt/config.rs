//! `mqtt.json`: the MQTT connector's configuration, in upstream's format.

use serde::Deserialize;

pub use tbgw::convert::{ConverterConfig, DatapointConfig, Datapoints, DeviceInfoConfig};

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttConnectorConfig {
    /// The broker to subscribe to.
    pub broker: BrokerConfig,
    /// Topic filters and how to convert what arrives on them (`dataMapping` in old files).
    #[serde(default, alias = "dataMapping")]
    pub mapping: Vec<MappingConfig>,
    /// Device requests (connect, disconnect, attribute requests) and downlink (attribute
    /// updates, RPC).
    #[serde(default)]
    pub requests_mapping: RequestsMappingConfig,
    /// Old file format: `connectRequests` at the top level.
    #[serde(default)]
    pub connect_requests: Vec<DeviceRequestConfig>,
    /// Old file format: `disconnectRequests` at the top level.
    #[serde(default)]
    pub disconnect_requests: Vec<DeviceRequestConfig>,
    /// Old file format: `attributeRequests` at the top level.
    #[serde(default)]
    pub attribute_requests: Vec<AttributeRequestConfig>,
    /// Old file format: `attributeUpdates` at the top level.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// Old file format: `serverSideRpc` at the top level.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
    /// Connector-level `reportStrategy`: read by the gateway
    /// ([`tbgw::report::connector_strategy`]), declared here so it is not an unknown key.
    pub report_strategy: Option<serde_json::Value>,
    /// Legacy connector-level `sendDataOnlyOnChange` (`true` = `ON_CHANGE`), read by the
    /// gateway like `reportStrategy`.
    pub send_data_only_on_change: Option<serde_json::Value>,
}

/// `requestsMapping`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestsMappingConfig {
    /// Topics on which devices announce themselves (`v1/gateway/connect`).
    #[serde(default)]
    pub connect_requests: Vec<DeviceRequestConfig>,
    /// Topics on which devices say they go offline (`v1/gateway/disconnect`).
    #[serde(default)]
    pub disconnect_requests: Vec<DeviceRequestConfig>,
    /// Topics on which devices ask for their attributes.
    #[serde(default)]
    pub attribute_requests: Vec<AttributeRequestConfig>,
    /// Where shared-attribute updates from ThingsBoard are published.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// How server-side RPCs are published, and where replies are awaited.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
}

/// One entry of `connectRequests[]` or `disconnectRequests[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRequestConfig {
    /// Topic filter to subscribe to.
    pub topic_filter: String,
    /// QoS of the subscription (default 1).
    #[serde(default = "default_sub_qos")]
    pub subscription_qos: u8,
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
}

/// One entry of `attributeRequests[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeRequestConfig {
    /// Topic filter to subscribe to.
    pub topic_filter: String,
    /// QoS of the subscription (default 1).
    #[serde(default = "default_sub_qos")]
    pub subscription_qos: u8,
    /// Where the device name comes from.
    pub device_info: Option<DeviceInfoConfig>,
    /// Legacy: device name template over the JSON message.
    pub device_name_json_expression: Option<String>,
    /// Legacy: device name regex over the topic.
    pub device_name_topic_expression: Option<String>,
    /// `message` (default), `constant` or `topic`.
    #[serde(default = "default_source")]
    pub attribute_name_expression_source: String,
    /// Template (message: every placeholder names one attribute), constant name, or regex
    /// over the topic.
    pub attribute_name_expression: Option<String>,
    /// Legacy: attribute name template over the JSON message.
    pub attribute_name_json_expression: Option<String>,
    /// Legacy: attribute name regex over the topic.
    pub attribute_name_topic_expression: Option<String>,
    /// `shared` (default) or `client`; may be a `${...}` template over the message.
    pub scope: Option<String>,
    /// Topic of the answer (`${deviceName}`, `${attributeKey}`).
    pub topic_expression: String,
    /// Payload of the answer (`${attributeKey}`, `${attributeValue}`).
    pub value_expression: String,
    /// Publish the answer retained.
    #[serde(default)]
    pub retain: bool,
    /// QoS of the answer (default 0).
    #[serde(default)]
    pub qos: u8,
}

/// One entry of `attributeUpdates[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateConfig {
    /// Regex the device name must match (at its start, like Python's `re.match`).
    pub device_name_filter: String,
    /// Regex the attribute key must match (at its start).
    pub attribute_filter: String,
    /// Topic (`${deviceName}`, `${attributeKey}`, `${attributeValue}`).
    pub topic_expression: String,
    /// Payload (`${deviceName}`, `${attributeKey}`, `${attributeValue}`).
    pub value_expression: String,
    /// Publish retained.
    #[serde(default)]
    pub retain: bool,
    /// QoS (default 0).
    #[serde(default)]
    pub qos: u8,
}

/// One entry of `serverSideRpc[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// `twoWay` or `oneWay` (informative: an RPC waits for a reply when it has both
    /// `responseTopicExpression` and `responseTimeout`, as upstream decides).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Regex searched in the device name.
    pub device_name_filter: String,
    /// Regex searched in the method name.
    pub method_filter: String,
    /// Topic the request is published to.
    pub request_topic_expression: String,
    /// Topic the reply is awaited on (two-way).
    pub response_topic_expression: Option<String>,
    /// QoS of the reply subscription (default 1).
    #[serde(
        default = "default_sub_qos",
        rename = "responseTopicQoS",
        alias = "responseTopicQos"
    )]
    pub response_topic_qos: u8,
    /// How long to wait for the reply, in milliseconds.
    pub response_timeout: Option<f64>,
    /// Payload of the request (`${params}`, `${params.<path>}`, ...).
    pub value_expression: String,
    /// Publish retained.
    #[serde(default)]
    pub retain: bool,
    /// QoS of the request (default 0).
    #[serde(default)]
    pub qos: u8,
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
    /// `anonymous` (default), `basic` or `certificates`.
    #[serde(rename = "type", default = "default_security")]
    pub kind: String,
    /// User name (`basic`; also sent with `certificates` when present).
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// CA certificate (PEM) that signed the broker's certificate; the system roots when absent.
    #[serde(rename = "pathToCACert", alias = "caCert")]
    pub path_to_ca_cert: Option<String>,
    /// Client private key (PEM), for mutual TLS.
    #[serde(alias = "privateKey")]
    pub path_to_private_key: Option<String>,
    /// Client certificate (PEM), for mutual TLS.
    #[serde(alias = "cert")]
    pub path_to_client_cert: Option<String>,
    /// Accept a broker certificate whose name does not match the host (the chain is still
    /// verified).
    #[serde(default)]
    pub insecure: bool,
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
            path_to_ca_cert: None,
            path_to_private_key: None,
            path_to_client_cert: None,
            insecure: false,
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
    /// Device-level report strategy of this mapping, where upstream's JSON converter reads
    /// it; `converter.reportStrategy` (where its bytes converter reads it) wins.
    pub report_strategy: Option<serde_json::Value>,
}

const fn default_sub_qos() -> u8 {
    1
}

fn default_source() -> String {
    "message".into()
}
