//! `rest.json`: the REST connector's configuration, in upstream's format.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use tbgw::convert::{ConverterConfig, DatapointConfig, Datapoints, DeviceInfoConfig};

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestConnectorConfig {
    /// The HTTP(S) server.
    pub server: ServerConfig,
    /// Endpoints that take device data.
    #[serde(default)]
    pub mapping: Vec<EndpointConfig>,
    /// Attribute requests, attribute updates and RPCs.
    #[serde(default)]
    pub requests_mapping: RequestsMappingConfig,
}

/// A port written as a number or as a string (`"5000"` in upstream's sample).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Port {
    /// `5000`.
    Number(u16),
    /// `"5000"`.
    Text(String),
}

/// `server`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    /// Address to listen on (default `0.0.0.0`).
    #[serde(default = "default_host")]
    pub host: String,
    /// Port (default 5000).
    pub port: Option<Port>,
    /// Serve HTTPS with `security.cert` and `security.key`.
    #[serde(rename = "SSL", default)]
    pub ssl: bool,
    /// Certificate and key files (PEM) for HTTPS.
    pub security: Option<ServerSecurity>,
    /// Largest request body accepted, in bytes (tbgw; default 1 MiB like aiohttp's).
    pub max_request_body_size: Option<usize>,
    /// Most client connections served at once (tbgw; default 1024); more are answered 503
    /// and closed.
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's headers, and then its body (tbgw; default
    /// 30).
    pub read_timeout: Option<f64>,
}

fn default_host() -> String {
    "0.0.0.0".into()
}

/// `server.security`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerSecurity {
    /// Certificate chain (PEM); `~/` is the home directory.
    pub cert: Option<String>,
    /// Private key (PEM).
    pub key: Option<String>,
}

/// Endpoint security: `anonymous` or `basic`; outgoing requests also accept `cert`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityConfig {
    /// `anonymous`, `basic` or (outgoing requests only) `cert`.
    #[serde(rename = "type", default = "default_anonymous")]
    pub kind: String,
    /// User name for `basic`.
    pub username: Option<String>,
    /// Password for `basic`.
    pub password: Option<String>,
    /// Client certificate for `cert`.
    pub cert: Option<String>,
    /// Client key for `cert`.
    pub key: Option<String>,
}

fn default_anonymous() -> String {
    "anonymous".into()
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            kind: default_anonymous(),
            username: None,
            password: None,
            cert: None,
            key: None,
        }
    }
}

/// One data endpoint of `mapping[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConfig {
    /// Path, may contain `{name}` (or `{name:regex}`) parameters.
    pub endpoint: String,
    /// Accepted methods (default POST).
    #[serde(rename = "HTTPMethods", default = "default_methods")]
    pub http_methods: Vec<String>,
    /// Who may call it.
    #[serde(default)]
    pub security: SecurityConfig,
    /// What the caller gets back.
    #[serde(default)]
    pub response: ResponseConfig,
    /// The converter.
    pub converter: ConverterConfig,
}

fn default_methods() -> Vec<String> {
    vec!["POST".into()]
}

/// `mapping[].response`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseConfig {
    /// Hold the request until an RPC (or the `responseAttribute` update) for the device
    /// arrives, and answer with it.
    #[serde(default)]
    pub response_expected: bool,
    /// Seconds to wait for storage and, with `responseExpected`, for ThingsBoard (default 10).
    pub timeout: Option<f64>,
    /// Body of a successful answer (default `OK`).
    pub success_response: Option<String>,
    /// Body of a failed answer (default `Error`).
    pub unsuccessful_response: Option<String>,
    /// With `responseExpected`: the shared attribute whose update answers the request.
    pub response_attribute: Option<String>,
}

/// `requestsMapping`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestsMappingConfig {
    /// Endpoints that answer with a device's attributes from ThingsBoard.
    #[serde(default)]
    pub attribute_requests: Vec<AttributeRequestConfig>,
    /// Shared-attribute updates sent as HTTP requests.
    #[serde(default)]
    pub attribute_updates: Vec<OutboundConfig>,
    /// RPCs sent as HTTP requests.
    #[serde(default)]
    pub server_side_rpc: Vec<OutboundConfig>,
}

/// `requestsMapping.attributeRequests[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeRequestConfig {
    /// Path, may contain parameters.
    pub endpoint: String,
    /// `shared` (default) or `client`.
    #[serde(rename = "type", default = "default_shared")]
    pub kind: String,
    /// Accepted methods (default POST).
    #[serde(rename = "HTTPMethods", default = "default_methods")]
    pub http_methods: Vec<String>,
    /// Who may call it.
    #[serde(default)]
    pub security: SecurityConfig,
    /// Seconds to wait for ThingsBoard (default 10).
    pub timeout: Option<f64>,
    /// Device name template over the request data.
    pub device_name_expression: String,
    /// Attribute names: each placeholder gives one name (or a comma-separated list).
    pub attribute_name_expression: String,
}

fn default_shared() -> String {
    "shared".into()
}

/// `requestsMapping.attributeUpdates[]` and `serverSideRpc[]`: an outgoing HTTP request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundConfig {
    /// HTTP method (default POST).
    #[serde(rename = "HTTPMethod", alias = "httpMethod", default = "default_post")]
    pub http_method: String,
    /// Verify the server certificate of https URLs (default true).
    #[serde(rename = "SSLVerify", default = "default_true")]
    pub ssl_verify: bool,
    /// Request headers.
    #[serde(default)]
    pub http_headers: BTreeMap<String, String>,
    /// Credentials: anonymous, basic, or a client certificate (`cert`).
    #[serde(default)]
    pub security: SecurityConfig,
    /// Timeout of one try in seconds (default 10).
    pub timeout: Option<f64>,
    /// Number of tries (default 1).
    pub tries: Option<u32>,
    /// Follow redirects (default true).
    #[serde(default = "default_true")]
    pub allow_redirects: bool,
    /// Regex over the device name.
    #[serde(default = "default_any")]
    pub device_name_filter: String,
    /// Regex over the attribute key (attribute updates).
    pub attribute_filter: Option<String>,
    /// Regex over the method (RPC).
    pub method_filter: Option<String>,
    /// Absolute URL template.
    pub request_url_expression: String,
    /// Body template.
    #[serde(alias = "requestValueExpression")]
    pub value_expression: Option<String>,
    /// Template over the response body for the RPC reply.
    pub response_value_expression: Option<String>,
    /// Deadline of all tries in seconds.
    pub response_timeout: Option<f64>,
}

fn default_post() -> String {
    "POST".into()
}
const fn default_true() -> bool {
    true
}
fn default_any() -> String {
    ".*".into()
}
