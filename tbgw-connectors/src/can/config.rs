//! `can.json`: the CAN connector's configuration in upstream's format (3.8.5), plus keys of
//! our own for DBC files and J1939 (see `docs/connectors/can.md`).

use serde::Deserialize;
use serde_json::Value as Json;

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanConnectorConfig {
    /// python-can's backend name; tbgw speaks `socketcan` (default).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// The network interface (default `vcan0`).
    #[serde(default = "default_channel")]
    pub channel: String,
    /// python-can bus options; tbgw reads `fd`.
    #[serde(default)]
    pub backend: serde_json::Map<String, Json>,
    /// Reopen the bus after an error (default true).
    #[serde(default = "yes")]
    pub reconnect: bool,
    /// Seconds between attempts (default 30).
    pub reconnect_period: Option<f64>,
    /// Attempts before giving up (default: never give up).
    pub reconnect_count: Option<u64>,
    /// The devices.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

fn default_interface() -> String {
    "socketcan".into()
}
fn default_channel() -> String {
    "vcan0".into()
}
fn yes() -> bool {
    true
}

/// One entry of `devices[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// Device name in ThingsBoard.
    pub name: String,
    /// Device profile (upstream's default: the connector type, `can`).
    #[serde(rename = "type")]
    pub profile: Option<String>,
    /// Send only changed values (tbgw: the `ON_CHANGE` report strategy).
    pub send_data_only_on_change: Option<Json>,
    /// Report strategy (tbgw's keys).
    pub report_strategy: Option<Json>,
    /// Accept RPC methods not in `serverSideRpc` (their params describe the frame).
    #[serde(default)]
    pub enable_unknown_rpc: bool,
    /// RPC params override the configured frame description.
    #[serde(default)]
    pub override_rpc_config: bool,
    /// Upstream: Python `eval` without builtins. tbgw's expressions are always the safe subset.
    pub strict_eval: Option<bool>,
    /// Upstream's custom Python converters: not run by tbgw.
    pub converters: Option<Json>,
    /// Ours: a DBC file (relative to the connector file).
    pub dbc_file: Option<String>,
    /// Ours: DBC messages (names or ids; `"*"` for all) whose every signal becomes a time
    /// series named after the signal.
    #[serde(default)]
    pub dbc_messages: Vec<Json>,
    /// Ours: J1939 source address of the gateway's requests (default 0xFE: null address).
    pub j1939_source_address: Option<u8>,
    /// Client attributes.
    #[serde(default)]
    pub attributes: Vec<ValueConfig>,
    /// Time series (alias `telemetry`).
    #[serde(default, alias = "telemetry")]
    pub timeseries: Vec<ValueConfig>,
    /// Shared attributes written to the bus.
    #[serde(default)]
    pub attribute_updates: Vec<Json>,
    /// RPC methods.
    #[serde(default)]
    pub server_side_rpc: Vec<Json>,
}

/// One attribute or time series.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueConfig {
    /// Key in ThingsBoard.
    pub key: String,
    /// Arbitration id (a number, or text in decimal or `0x…`).
    pub node_id: Option<Json>,
    /// 29-bit id.
    #[serde(default)]
    pub is_extended_id: bool,
    /// Poll requests are CAN FD frames.
    #[serde(default)]
    pub is_fd: bool,
    /// Poll requests use the FD bit rate switch.
    #[serde(default)]
    pub bitrate_switch: bool,
    /// `"start:length:[byteorder:]value"`: only frames carrying this command.
    pub command: Option<Json>,
    /// `"start:length:[byteorder:]type[:signed|encoding]"`.
    pub value: Option<Json>,
    /// Computes the reported value from `value` (and `can_data`).
    pub expression: Option<String>,
    /// Requests sent to make the device answer.
    pub polling: Option<PollingConfig>,
    /// Ours: a DBC signal instead of `value`.
    pub signal: Option<String>,
    /// Ours: the DBC message of `signal` (name or id), when the name is not unique.
    pub message: Option<Json>,
    /// Ours: J1939 PGN instead of `nodeId`.
    pub pgn: Option<u32>,
    /// Ours: with `pgn`, only frames from this source address.
    pub source_address: Option<u8>,
    /// Key-level report strategy (tbgw's keys).
    pub report_strategy: Option<Json>,
}

/// `polling` of a value.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollingConfig {
    /// `always` (default) or `once`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Seconds between requests (default 1).
    pub period: Option<f64>,
    /// The request's data. Ours: with `pgn` and no `dataInHex`, a J1939 Request.
    pub data_in_hex: Option<String>,
}
