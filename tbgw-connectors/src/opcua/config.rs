//! Upstream's `opcua.json`, as serde structs (camelCase keys as upstream writes them).
//!
//! Keys are read exactly as the Python gateway reads them; defaults are upstream's code
//! defaults. Keys that are accepted but not acted on are reported as ignored by
//! [`OpcUaConnector::build`](super::OpcUaConnector).

use serde::Deserialize;
use serde_json::Value as Json;

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpcUaConnectorConfig {
    /// The server connection.
    pub server: ServerConfig,
    /// Which nodes are devices and what to read from them.
    #[serde(default)]
    pub mapping: Vec<MappingConfig>,
    /// Connector-level report strategy (read by the gateway; declared so it is not reported
    /// as unknown).
    #[serde(default)]
    pub report_strategy: Option<Json>,
    /// Legacy connector-level ON_CHANGE flag (read by the gateway).
    #[serde(default)]
    pub send_data_only_on_change: Option<Json>,
}

const fn d_timeout() -> u64 {
    5000
}
const fn d_scan() -> u64 {
    3_600_000
}
const fn d_poll() -> u64 {
    5000
}
const fn d_true() -> bool {
    true
}
const fn d_sub_check() -> u64 {
    100
}
const fn d_batch() -> usize {
    1000
}
const fn d_batch_time() -> u64 {
    200
}
const fn d_process_batch() -> usize {
    2000
}
const fn d_session_timeout() -> u64 {
    120_000
}
const fn d_retries() -> u32 {
    8
}
const fn d_initial_delay() -> f64 {
    1.0
}
const fn d_factor() -> f64 {
    2.0
}

/// `server`: where the OPC-UA server is and how to talk to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    /// `opc.tcp://host:port/path`.
    pub url: String,
    /// Timeout of each request (ms).
    #[serde(default = "d_timeout")]
    pub timeout_in_millis: u64,
    /// How often device nodes are browsed again, so new devices appear (ms).
    #[serde(default = "d_scan")]
    pub scan_period_in_millis: u64,
    /// Poll period when subscriptions are off (ms).
    #[serde(default = "d_poll")]
    pub poll_period_in_millis: u64,
    /// Data-change subscriptions (`true`) or polled reads (`false`).
    #[serde(default = "d_true")]
    pub enable_subscriptions: bool,
    /// Subscription publishing interval (ms).
    #[serde(default = "d_sub_check")]
    pub sub_check_period_in_millis: u64,
    /// Most data points handed to storage in one batch from subscriptions.
    #[serde(default = "d_batch")]
    pub sub_data_max_batch_size: usize,
    /// How long subscription data is collected before it is handed on (ms).
    #[serde(default = "d_batch_time")]
    pub sub_data_min_batch_creation_time_ms: u64,
    /// Most monitored items created in one request.
    #[serde(default = "d_process_batch")]
    pub subscription_process_batch_size: usize,
    /// Reconnect when no subscription message (data or keep-alive) arrived for this long (s);
    /// 0 = no watchdog.
    #[serde(default)]
    pub sub_keep_alive_period_in_seconds: u64,
    /// Requested session timeout (ms).
    #[serde(default = "d_session_timeout")]
    pub session_timeout_in_millis: u64,
    /// Failed connection attempts in a row before the connector reports a failure to the
    /// gateway (which restarts it after its own backoff, so the connector never gives up).
    #[serde(default = "d_retries")]
    pub reconnect_retries_count: u32,
    /// First reconnect delay (s).
    #[serde(default = "d_initial_delay")]
    pub reconnect_backoff_initial_delay: f64,
    /// Factor applied to the reconnect delay after each failure.
    #[serde(default = "d_factor")]
    pub reconnect_backoff_factor: f64,
    /// Log the resolved node map of each device at info level.
    #[serde(default)]
    pub show_map: bool,
    /// The client's application URI (default `urn:tbgw:opcua:client`).
    pub uri: Option<String>,
    /// Security policy: `None`, `Basic128Rsa15`, `Basic256`, `Basic256Sha256`,
    /// `Aes128Sha256RsaOaep`, `Aes256Sha256RsaPss`. Used with `identity.mode` Sign or
    /// SignAndEncrypt.
    pub security: Option<String>,
    /// Who the client is.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// tbgw extension: the client's PKI directory (own certificate, trusted and rejected server
    /// certificates). Default: `opcua-pki` beside the connector file.
    pub pki_dir: Option<String>,
}

/// `server.identity`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityConfig {
    /// `anonymous`, `username`, or `certificates` / `cert.PEM`.
    #[serde(rename = "type", default = "d_anonymous")]
    pub kind: String,
    /// User name (`username`).
    pub username: Option<String>,
    /// Password (`username`).
    pub password: Option<String>,
    /// The client's application instance certificate (PEM or DER).
    pub cert: Option<String>,
    /// The client's private key (PEM).
    pub private_key: Option<String>,
    /// The server's certificate to trust (PEM or DER). Without it, the server's certificate is
    /// trusted on first use.
    pub ca_cert: Option<String>,
    /// Message security mode: `None`, `Sign` or `SignAndEncrypt`.
    pub mode: Option<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            kind: d_anonymous(),
            username: None,
            password: None,
            cert: None,
            private_key: None,
            ca_cert: None,
            mode: None,
        }
    }
}

fn d_anonymous() -> String {
    "anonymous".into()
}

fn d_path() -> String {
    "path".into()
}

fn d_constant() -> String {
    "constant".into()
}

/// One `mapping[]` entry: a device node pattern and what to read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingConfig {
    /// `path` (browse-path regex) or `identifier` (node id).
    #[serde(default = "d_path")]
    pub device_node_source: String,
    /// `Root\.Objects\.Device\d+` or `ns=2;i=1`.
    pub device_node_pattern: String,
    /// Device name and profile.
    pub device_info: DeviceInfoConfig,
    /// Client-side attributes.
    #[serde(default)]
    pub attributes: Vec<DatapointConfig>,
    /// Time series.
    #[serde(default)]
    pub timeseries: Vec<DatapointConfig>,
    /// Methods callable by RPC.
    #[serde(default, rename = "rpc_methods")]
    pub rpc_methods: Vec<RpcMethodConfig>,
    /// Shared attributes written to nodes.
    #[serde(default, rename = "attributes_updates")]
    pub attributes_updates: Vec<AttributeUpdateConfig>,
    /// Device-level report strategy.
    #[serde(default)]
    pub report_strategy: Option<Json>,
}

/// `deviceInfo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfoConfig {
    /// The name, a constant or a template with `${node}` placeholders.
    pub device_name_expression: String,
    /// `constant`, `path` or `identifier`.
    #[serde(default = "d_constant")]
    pub device_name_expression_source: String,
    /// The profile (default `default`).
    pub device_profile_expression: Option<String>,
    /// `constant`, `path` or `identifier`.
    #[serde(default = "d_constant")]
    pub device_profile_expression_source: String,
}

/// One attribute or time series entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapointConfig {
    /// The ThingsBoard key.
    pub key: String,
    /// `path`, `identifier` or `constant`.
    #[serde(rename = "type", default = "d_path")]
    pub kind: String,
    /// `${Relative\.Path}`, `${Root\.Objects\...}`, `${ns=2;i=13}`, or the constant.
    pub value: Json,
    /// `gateway` (default), `source`/`sourceTimestamp`, `server`/`serverTimestamp`.
    pub timestamp_location: Option<String>,
    /// Datapoint-level report strategy.
    #[serde(default)]
    pub report_strategy: Option<Json>,
}

/// One `rpc_methods[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcMethodConfig {
    /// The method's browse name below the device node (and the RPC method name).
    pub method: String,
    /// Default arguments, used when the RPC has no params.
    #[serde(default)]
    pub arguments: Vec<ArgumentConfig>,
}

/// A method argument from the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgumentConfig {
    /// Type hint (`integer`, `float`/`double`, `string`, `boolean`); the method's own
    /// `InputArguments` decide the wire type when the server publishes them.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The value.
    pub value: Json,
}

/// One `attributes_updates[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateConfig {
    /// The shared attribute key.
    pub key: String,
    /// `path` or `identifier`.
    #[serde(rename = "type", default = "d_path")]
    pub kind: String,
    /// The node to write, as a path or node id (with or without `${}`).
    pub value: String,
}
