//! `request.json`: the Request connector's configuration, in upstream's format.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use tbgw::convert::{ConverterConfig, DatapointConfig, Datapoints, DeviceInfoConfig};

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestConnectorConfig {
    /// Base URL every relative `url` is joined to, e.g. `http://127.0.0.1:5000`.
    pub host: String,
    /// Verify the server certificate of https hosts (default true).
    #[serde(rename = "SSLVerify", default = "default_true")]
    pub ssl_verify: bool,
    /// Credentials sent with every request.
    #[serde(default)]
    pub security: SecurityConfig,
    /// The polled endpoints.
    #[serde(default)]
    pub mapping: Vec<MappingConfig>,
    /// Shared-attribute updates sent as HTTP requests.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// RPCs sent as HTTP requests.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
}

const fn default_true() -> bool {
    true
}

/// `security`: `anonymous` (default) or `basic`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityConfig {
    /// `anonymous` or `basic`.
    #[serde(rename = "type", default = "default_anonymous")]
    pub kind: String,
    /// User name for `basic`.
    pub username: Option<String>,
    /// Password for `basic`.
    pub password: Option<String>,
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
        }
    }
}

/// One polled endpoint of `mapping[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingConfig {
    /// URL, relative to `host` or absolute.
    pub url: String,
    /// HTTP method (default GET).
    #[serde(default = "default_get")]
    pub http_method: String,
    /// Request headers.
    #[serde(default)]
    pub http_headers: BTreeMap<String, String>,
    /// Request body: a JSON value (sent as JSON) or a string (sent as is). Legacy key `data`.
    #[serde(alias = "data")]
    pub content: Option<serde_json::Value>,
    /// Follow redirects (default true).
    #[serde(default = "default_true")]
    pub allow_redirects: bool,
    /// Request timeout in seconds (default 10).
    pub timeout: Option<f64>,
    /// Seconds between polls (default 60).
    pub scan_period: Option<f64>,
    /// Path to the part of the response to convert; an array is converted element by element.
    pub data_unpack_expression: Option<String>,
    /// Further requests per converted item whose answers are added to the item.
    #[serde(default)]
    pub sub_requests: BTreeMap<String, SubRequestConfig>,
    /// The converter.
    pub converter: ConverterConfig,
}

fn default_get() -> String {
    "GET".into()
}
fn default_post() -> String {
    "POST".into()
}

/// `mapping[].subRequests.<key>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubRequestConfig {
    /// URL template over the parent item, relative to `host` or absolute.
    pub url: String,
    /// HTTP method (default GET).
    #[serde(default = "default_get")]
    pub http_method: String,
    /// Upstream's Python post-processing code; not run by tbgw (listed as ignored).
    pub processing_function: Option<String>,
}

/// One entry of `attributeUpdates[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateConfig {
    /// HTTP method (default POST).
    #[serde(default = "default_post", alias = "HTTPMethod")]
    pub http_method: String,
    /// Request headers.
    #[serde(default)]
    pub http_headers: BTreeMap<String, String>,
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
    /// Regex over the attribute key.
    #[serde(default = "default_any")]
    pub attribute_filter: String,
    /// URL template (`${deviceName}`, `${attributeKey}`, `${attributeValue}`).
    pub request_url_expression: String,
    /// Body template (same placeholders).
    #[serde(alias = "valueExpression")]
    pub request_value_expression: Option<String>,
}

fn default_any() -> String {
    ".*".into()
}

/// One entry of `serverSideRpc[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// Regex over the device name.
    #[serde(default = "default_any")]
    pub device_name_filter: String,
    /// Regex over the method.
    pub method_filter: String,
    /// URL template (`${deviceName}`, `${methodName}`, `${requestId}`, `${params…}`).
    pub request_url_expression: String,
    /// Deadline of all tries in seconds.
    pub response_timeout: Option<f64>,
    /// HTTP method (default POST).
    #[serde(default = "default_post", alias = "HTTPMethod")]
    pub http_method: String,
    /// Body template.
    #[serde(alias = "valueExpression")]
    pub request_value_expression: Option<String>,
    /// Template over the response body for the reply.
    pub response_value_expression: Option<String>,
    /// Timeout of one try in seconds (default 10).
    pub timeout: Option<f64>,
    /// Number of tries (default 1).
    pub tries: Option<u32>,
    /// Request headers.
    #[serde(default)]
    pub http_headers: BTreeMap<String, String>,
    /// Follow redirects (default true).
    #[serde(default = "default_true")]
    pub allow_redirects: bool,
}
