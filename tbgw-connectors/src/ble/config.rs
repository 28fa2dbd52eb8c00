//! `ble.json`: the BLE connector's configuration, in upstream's format (3.8.5), plus keys of
//! our own marked "beyond upstream" (see `docs/connectors/ble.md`).

use serde::Deserialize;
use serde_json::Value as Json;

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BleConnectorConfig {
    /// The connector's name (`tb_gateway.json` names it too).
    pub name: Option<String>,
    /// Scan passively (default true). See the docs: BlueZ through btleplug scans actively.
    pub passive_scan_mode: Option<bool>,
    /// Log every device heard during the first scan (and `scanner.deviceName`'s).
    pub show_map: Option<bool>,
    /// `timeout` (ms) and `deviceName` for `showMap`.
    pub scanner: Option<ScannerConfig>,
    /// Upstream's scan window, ms (default 10000): a device not heard for this long is gone.
    pub scanner_timeout: Option<f64>,
    /// Upstream's pause between scans, ms; tbgw scans continuously (read, not used).
    pub scanner_poll_period: Option<f64>,
    /// Beyond upstream: the adapter to use (`hci0`); default the first one.
    pub adapter: Option<String>,
    /// The devices.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// `scanner`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScannerConfig {
    /// Scan window, ms.
    pub timeout: Option<f64>,
    /// For `showMap`: only this device name.
    pub device_name: Option<String>,
}

/// One entry of `devices[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// Device name in ThingsBoard. `${MACAddress}` and `${localName}` are replaced by the
    /// device heard (beyond upstream, for devices matched by name or service).
    pub name: String,
    /// Device profile (default `default`).
    #[serde(default = "default_profile", alias = "deviceProfileName")]
    pub device_type: String,
    /// The device's address.
    #[serde(rename = "MACAddress", alias = "macAddress")]
    pub mac_address: Option<String>,
    /// Beyond upstream: match devices by their advertised local name (exact).
    pub local_name: Option<String>,
    /// Beyond upstream: match devices advertising this service UUID (in their service list or
    /// their service data).
    #[serde(rename = "serviceUUID", alias = "serviceUuid")]
    pub service_uuid: Option<String>,
    /// Milliseconds between polls of `read` characteristics and between advertisement reports
    /// (default 5000).
    pub poll_period: Option<f64>,
    /// Connect timeout, ms (default 10000).
    pub timeout: Option<f64>,
    /// Connection attempts before the long pause (default 5).
    pub connect_retry: Option<u32>,
    /// Seconds between connection attempts (default 0; tbgw waits at least 1 s).
    pub connect_retry_in_seconds: Option<f64>,
    /// Seconds to pause after `connectRetry` failed attempts (default 0).
    pub wait_after_connect_retries: Option<f64>,
    /// Log the GATT map after connecting.
    pub show_map: Option<bool>,
    /// `bytes` or `hex` (which converter characteristics and advertisement data use).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Upstream's custom Python converter: not run by tbgw.
    pub extension: Option<Json>,
    /// Device-level report strategy.
    pub report_strategy: Option<Json>,
    /// Telemetry keys.
    #[serde(default, alias = "timeseries")]
    pub telemetry: Vec<ItemConfig>,
    /// Client attributes.
    #[serde(default)]
    pub attributes: Vec<ItemConfig>,
    /// Shared attributes written to characteristics.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// RPC methods.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
}

fn default_profile() -> String {
    "default".into()
}

/// One `telemetry[]` / `attributes[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemConfig {
    /// Key in ThingsBoard.
    pub key: Option<String>,
    /// `read` (polled) or `notify` (subscribed), for characteristics.
    pub method: Option<String>,
    /// The characteristic.
    #[serde(rename = "characteristicUUID", alias = "characteristicUuid")]
    pub characteristic_uuid: Option<String>,
    /// Slices of the bytes (default `[:]`).
    pub value_expression: Option<String>,
    /// `characteristic` (default) or `advertisement`.
    pub data_source_type: Option<String>,
    /// Beyond upstream, with `advertisement`: `manufacturerData` (default), `serviceData`,
    /// `localName`, `rssi` or `txPower`.
    pub advertisement_field: Option<String>,
    /// Beyond upstream: the company id whose manufacturer data to read (default the first).
    pub company_id: Option<Json>,
    /// Beyond upstream: the service whose service data to read (default the first).
    #[serde(rename = "serviceDataUUID", alias = "serviceDataUuid")]
    pub service_data_uuid: Option<String>,
    /// Upstream's `compute` (a Python expression of `value`), read with tbgw's safe subset.
    pub compute: Option<String>,
    /// Key-level report strategy.
    pub report_strategy: Option<Json>,
}

/// One `attributeUpdates[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateConfig {
    /// The shared attribute.
    pub attribute_on_things_board: String,
    /// The characteristic written.
    #[serde(rename = "characteristicUUID", alias = "characteristicUuid")]
    pub characteristic_uuid: String,
}

/// One `serverSideRpc[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// The RPC method.
    #[serde(rename = "methodRPC", alias = "methodRpc")]
    pub method_rpc: String,
    /// Answer with the result (default true).
    pub with_response: Option<bool>,
    /// The characteristic (not for `scan`).
    #[serde(rename = "characteristicUUID", alias = "characteristicUuid")]
    pub characteristic_uuid: Option<String>,
    /// `read`, `write` or `scan`.
    pub method_processing: String,
}
