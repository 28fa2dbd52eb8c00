//! The keys of upstream's `bacnet.json`, read unchanged. Fields that upstream accepts in
//! several JSON shapes (a port as number or string, `objectId` as number, list, range or
//! `"*"`, `propertyId` as one name or a list) are kept as JSON here and interpreted by
//! [`super::uplink`] and [`super::address`].

use serde::Deserialize;
use serde_json::Value as Json;

/// The connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BacnetConfig {
    /// The gateway's own BACnet device.
    pub application: ApplicationConfig,
    /// Registration with a BBMD as a foreign device.
    #[serde(default)]
    pub foreign_device: Option<ForeignDeviceConfig>,
    /// The devices to find and poll.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Who-Is period (upstream reads it here, at the top level).
    #[serde(default)]
    pub devices_discover_period_seconds: Option<f64>,
    /// EDE file import (see [`super::ede`]).
    #[serde(default)]
    pub ede_file_path: Option<String>,
    /// EDE file import, the file in base64 (see [`super::ede`]).
    #[serde(default)]
    pub ede_config: Option<Json>,
}

/// `application`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationConfig {
    /// Object name of the gateway's device.
    #[serde(default)]
    pub object_name: Option<String>,
    /// Bind host.
    #[serde(default)]
    pub host: Option<String>,
    /// Bind port (number or string).
    #[serde(default)]
    pub port: Option<Json>,
    /// `host/mask:port` in one string.
    #[serde(default)]
    pub address: Option<String>,
    /// Prefix length (number, string, or a dotted mask).
    #[serde(default)]
    pub mask: Option<Json>,
    /// The gateway's device instance.
    #[serde(default)]
    pub object_identifier: Option<u32>,
    /// Max APDU accepted.
    #[serde(default)]
    pub max_apdu_length_accepted: Option<u32>,
    /// Segmentation supported.
    #[serde(default)]
    pub segmentation_supported: Option<String>,
    /// Vendor id.
    #[serde(default)]
    pub vendor_identifier: Option<u32>,
    /// Time to wait for I-Am answers (seconds).
    #[serde(default)]
    pub device_discovery_timeout_in_sec: Option<f64>,
    /// Network number (read, not used: tbgw is not a router).
    #[serde(default)]
    pub network_number: Option<u32>,
    /// Network number quality (read, not used).
    #[serde(default)]
    pub network_number_quality: Option<String>,
    /// Who-Is period; tbgw reads it here too (upstream only at the top level).
    #[serde(default)]
    pub devices_discover_period_seconds: Option<f64>,
    /// Object list rescan period.
    #[serde(default)]
    pub devices_rescan_objects_period_seconds: Option<f64>,
    /// Load proprietary object modules: upstream's bundled names are always known here.
    #[serde(default)]
    pub load_proprietary_devices: Option<bool>,
    /// Ours: APDU timeout in milliseconds (default 3000).
    #[serde(default)]
    pub apdu_timeout: Option<u64>,
    /// Ours: resends of a confirmed request (default 1).
    #[serde(default)]
    pub number_of_apdu_retries: Option<u32>,
}

/// `foreignDevice`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ForeignDeviceConfig {
    /// The BBMD's `ip[:port]`; empty or `0.0.0.0` means none.
    #[serde(default)]
    pub address: Option<String>,
    /// Registration time-to-live in seconds.
    #[serde(default)]
    pub ttl: Option<Json>,
}

/// `deviceInfo`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfoConfig {
    /// Device name expression.
    #[serde(default)]
    pub device_name_expression: Option<String>,
    /// `expression` or `constant`.
    #[serde(default)]
    pub device_name_expression_source: Option<String>,
    /// Device profile expression.
    #[serde(default)]
    pub device_profile_expression: Option<String>,
    /// `expression` or `constant`.
    #[serde(default)]
    pub device_profile_expression_source: Option<String>,
}

/// One `devices[]` entry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// Device name and profile.
    #[serde(default)]
    pub device_info: Option<DeviceInfoConfig>,
    /// Other addresses a device may answer from.
    #[serde(default)]
    pub alt_responses_addresses: Vec<String>,
    /// Host (with `port`, `mask`).
    #[serde(default)]
    pub host: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: Option<Json>,
    /// Mask.
    #[serde(default)]
    pub mask: Option<Json>,
    /// Address or pattern.
    #[serde(default)]
    pub address: Option<String>,
    /// Device instance: number, list, `"a-b"` or `"*"`.
    #[serde(default)]
    pub device_id: Option<Json>,
    /// Poll period in milliseconds (default 10000).
    #[serde(default)]
    pub poll_period: Option<f64>,
    /// Attributes: a list of points or `"*"`.
    #[serde(default)]
    pub attributes: Option<Json>,
    /// Time series: a list of points or `"*"`.
    #[serde(default)]
    pub timeseries: Option<Json>,
    /// Shared attributes written to the device.
    #[serde(default)]
    pub attribute_updates: Vec<PointConfig>,
    /// RPC methods.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
    /// Report strategy.
    #[serde(default)]
    pub report_strategy: Option<Json>,
    /// Rescan period of this device's objects.
    #[serde(default)]
    pub devices_rescan_objects_period_seconds: Option<f64>,
    /// Python converter class (not supported).
    #[serde(default)]
    pub uplink_converter: Option<Json>,
    /// Ours: subscribe to COV of the polled objects (default false).
    #[serde(default)]
    pub subscribe_cov: Option<bool>,
    /// Ours: COV subscription lifetime in seconds (default 300).
    #[serde(default)]
    pub cov_lifetime: Option<u32>,
    /// Ours: confirmed COV notifications (default false).
    #[serde(default)]
    pub cov_confirmed: Option<bool>,
}

/// A point of `attributes`, `timeseries` or `attributeUpdates`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PointConfig {
    /// The key (may hold `${property}` expressions).
    #[serde(default)]
    pub key: String,
    /// Object type name(s).
    #[serde(default)]
    pub object_type: Option<Json>,
    /// Object instance(s).
    #[serde(default)]
    pub object_id: Option<Json>,
    /// Property name(s).
    #[serde(default)]
    pub property_id: Option<Json>,
    /// Write priority (attribute updates).
    #[serde(default)]
    pub priority: Option<Json>,
    /// Report strategy of this key.
    #[serde(default)]
    pub report_strategy: Option<Json>,
}

/// A `serverSideRpc` entry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// Method name.
    #[serde(default)]
    pub method: String,
    /// `readProperty` or `writeProperty`.
    #[serde(default)]
    pub request_type: Option<String>,
    /// Timeout in milliseconds.
    #[serde(default)]
    pub request_timeout: Option<f64>,
    /// Object type.
    #[serde(default)]
    pub object_type: Option<Json>,
    /// Object instance.
    #[serde(default)]
    pub object_id: Option<Json>,
    /// Property.
    #[serde(default)]
    pub property_id: Option<Json>,
    /// Write priority.
    #[serde(default)]
    pub priority: Option<Json>,
}
