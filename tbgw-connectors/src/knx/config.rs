//! `knx.json`: the KNX connector's configuration in upstream's format (3.7.0 – 3.8.5), plus
//! `readTimeout` of our own (see `docs/connectors/knx.md`).

use serde::Deserialize;
use serde_json::Value as Json;

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnxConnectorConfig {
    /// How to reach the bus.
    #[serde(default)]
    pub client: ClientConfig,
    /// Devices: group addresses polled and listened to.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Shared attributes written to group addresses.
    #[serde(default)]
    pub attribute_updates: Vec<UpdateConfig>,
    /// RPC methods reading or writing group addresses.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
}

/// `client`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    /// `AUTOMATIC` (default), `TUNNELING`, `TUNNELING_TCP`, `ROUTING`; the `_SECURE` kinds
    /// are refused (KNX Secure is not supported).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Upstream's other spelling of the connection type (read by its Secure code only).
    pub connection_type: Option<String>,
    /// `LONG` (1/2/3, default), `SHORT` (1/234) or `FREE` (1234): how group addresses are
    /// shown; any form is accepted in the file.
    pub address_format: Option<String>,
    /// Local address to bind (default 0.0.0.0).
    pub local_ip: Option<String>,
    /// Local UDP port (default 0: any).
    pub local_port: Option<u16>,
    /// The KNXnet/IP gateway or router (upstream's code reads `gatewayIp`).
    pub gateway_ip: Option<String>,
    /// The same, as upstream's sample spells it.
    #[serde(rename = "gatewayIP")]
    pub gateway_ip_upper: Option<String>,
    /// Gateway port (default 3671).
    pub gateway_port: Option<u16>,
    /// Routing: our individual address; TCP tunnelling: the tunnel address to ask for.
    pub individual_address: Option<String>,
    /// Telegrams per second sent at most; 0 (default) no limit.
    pub rate_limit: Option<f64>,
    /// Routing multicast group (default 224.0.23.12).
    pub multicast_group: Option<String>,
    /// Routing multicast port (default 3671).
    pub multicast_port: Option<u16>,
    /// xknx's state updater (not used: devices are polled by `pollPeriod`).
    pub state_updater: Option<Json>,
    /// Reconnect after losing the gateway (default true).
    pub auto_reconnect: Option<bool>,
    /// Seconds before a reconnect (default 3).
    pub auto_reconnect_wait: Option<f64>,
    /// Look for gateways before connecting.
    pub gateways_scanner: Option<ScannerConfig>,
    /// KNX Secure settings (not supported).
    pub security: Option<Json>,
    /// Seconds to wait for a GroupValueResponse, a connect or an acknowledgement (ours;
    /// default 2).
    pub read_timeout: Option<f64>,
}

/// `client.gatewaysScanner`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScannerConfig {
    /// Scan at start-up (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Seconds to listen for answers (default 3).
    pub scan_period: Option<f64>,
    /// Stop at the first gateway found.
    #[serde(default)]
    pub stop_on_found: bool,
}

/// One entry of `devices[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// Name and profile.
    pub device_info: DeviceInfo,
    /// Milliseconds between polls (default 10000).
    pub poll_period: Option<f64>,
    /// Client attributes.
    #[serde(default)]
    pub attributes: Vec<PointConfig>,
    /// Telemetry (alias `telemetry`).
    #[serde(default, alias = "telemetry")]
    pub timeseries: Vec<PointConfig>,
    /// Device-level report strategy.
    pub report_strategy: Option<Json>,
    /// Upstream's custom Python converter: not run by tbgw.
    pub converter: Option<Json>,
    /// Upstream's custom Python uplink converter: not run by tbgw.
    pub uplink_converter: Option<Json>,
}

/// `deviceInfo`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// `expression` (with `${group/address}`) or `constant` (default).
    pub device_name_expression_source: Option<String>,
    /// The name or its template, e.g. `Device ${1/0/5}`.
    pub device_name_expression: Option<String>,
    /// Type of the group addresses in the name template (default `string`).
    pub device_name_data_type: Option<String>,
    /// `expression` or `constant` (default).
    pub device_profile_expression_source: Option<String>,
    /// The profile or its template (default `default`).
    #[serde(alias = "deviceProfileExpression", alias = "deviceTypeExpression")]
    pub device_profile_name_expression: Option<String>,
    /// Type of the group addresses in the profile template (default `string`).
    pub device_profile_data_type: Option<String>,
}

/// One attribute or time series.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointConfig {
    /// Key in ThingsBoard.
    pub key: Option<String>,
    /// Datapoint type: an xknx name or a DPT number.
    #[serde(rename = "type", alias = "dataType")]
    pub kind: Option<String>,
    /// Group address.
    pub group_address: Option<String>,
    /// Key-level report strategy.
    pub report_strategy: Option<Json>,
}

/// One `attributeUpdates` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateConfig {
    /// Regular expression the whole device name must match (default `.*`).
    pub device_name_filter: Option<String>,
    /// Shared attribute key.
    pub key: Option<String>,
    /// Datapoint type.
    #[serde(alias = "type")]
    pub data_type: Option<String>,
    /// Group address written.
    pub group_address: Option<String>,
}

/// One `serverSideRpc` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// `read` or `write`.
    pub request_type: Option<String>,
    /// Regular expression the whole device name must match (default `.*`).
    pub device_name_filter: Option<String>,
    /// RPC method.
    pub method: Option<String>,
    /// Datapoint type.
    #[serde(alias = "type")]
    pub data_type: Option<String>,
    /// Group address.
    pub group_address: Option<String>,
}
