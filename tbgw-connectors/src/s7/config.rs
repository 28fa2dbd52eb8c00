//! `s7.json`: the S7 connector's configuration, in upstream's format (3.8.5), plus `timeout`
//! of our own (see `docs/connectors/s7.md`).

use serde::Deserialize;
use serde_json::Value as Json;

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S7ConnectorConfig {
    /// The PLCs and LOGOs.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// One entry of `devices[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// `PLC` (rack and slot) or `LOGO` (TSAPs).
    #[serde(rename = "type")]
    pub kind: String,
    /// Host name or address.
    pub address: String,
    /// TCP port (default 102).
    #[serde(default = "default_port")]
    pub port: u16,
    /// PLC: rack.
    pub rack: Option<u16>,
    /// PLC: slot.
    pub slot: Option<u16>,
    /// LOGO: the local TSAP (a number, or text like `0x0100` or `01.00`).
    pub tsap_snap7: Option<Json>,
    /// LOGO: the LOGO's TSAP.
    pub tsap_logo: Option<Json>,
    /// Device name in ThingsBoard.
    pub device_name: String,
    /// Device profile (default `default`).
    #[serde(default = "default_profile", alias = "deviceType")]
    pub device_profile_name: String,
    /// Reconnect after losing the device (default true).
    pub auto_reconnect: Option<bool>,
    /// Connection attempts with a growing delay before the delay stays at `maxDelay`
    /// (default 3).
    pub max_retries: Option<u32>,
    /// Seconds before the first reconnect attempt (default 1).
    pub retry_delay: Option<f64>,
    /// Longest delay between attempts, seconds (default 30).
    pub max_delay: Option<f64>,
    /// Seconds of silence after which the connection is checked; 0 (default) never.
    pub heartbeat_interval: Option<f64>,
    /// Milliseconds between polls (default 10000).
    pub poll_period: Option<f64>,
    /// Seconds to wait for a connection or an answer (ours; default 5).
    pub timeout: Option<f64>,
    /// Device-level report strategy.
    pub report_strategy: Option<Json>,
    /// Upstream's custom Python uplink converter: not run by tbgw.
    pub uplink_converter: Option<Json>,
    /// Upstream's custom Python downlink converter: not run by tbgw.
    pub downlink_converter: Option<Json>,
    /// Polled into client attributes.
    #[serde(default)]
    pub attributes: Vec<PointConfig>,
    /// Polled into telemetry (alias `telemetry`).
    #[serde(default, alias = "telemetry")]
    pub timeseries: Vec<PointConfig>,
    /// Shared attributes written to the device, by `key`.
    #[serde(default)]
    pub attribute_updates: Vec<PointConfig>,
    /// RPC methods (`method`, `requestType` read or write).
    #[serde(default)]
    pub server_side_rpc: Vec<PointConfig>,
}

fn default_port() -> u16 {
    102
}
fn default_profile() -> String {
    "default".into()
}

/// One value's address in any of upstream's three forms, with its key or RPC method.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointConfig {
    /// `tag`, `data` or `vm`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Key in ThingsBoard (attributes, timeseries, attributeUpdates).
    pub key: Option<String>,
    /// RPC method (serverSideRpc).
    pub method: Option<String>,
    /// RPC: `read` or `write`.
    pub request_type: Option<String>,
    /// `tag` form: `DB1.DBD204:REAL`.
    pub tag: Option<String>,
    /// `data` form: the DB.
    pub db_number: Option<u16>,
    /// `data` form: first byte.
    pub start: Option<u32>,
    /// `data` form: bytes.
    pub size: Option<u16>,
    /// `data` form: type (default `raw`).
    pub data_type: Option<String>,
    /// `data` form: bit of a BOOL (alias `bitIndex`).
    #[serde(alias = "bitIndex")]
    pub bit: Option<u8>,
    /// `data` form: where the value starts within the read bytes.
    pub offset: Option<u32>,
    /// `data` form, string: its maximum length.
    pub max_length: Option<u16>,
    /// `vm` form (LOGO): `VW30`.
    pub vm_address: Option<String>,
    /// Key-level report strategy.
    pub report_strategy: Option<Json>,
}
