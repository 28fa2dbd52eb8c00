//! `modbus.json`: the Modbus connector's configuration, in upstream's format.
//!
//! These structs only describe the file; [`super::plan`] validates them and turns them into
//! the runtime form (resolved types, expanded address ranges, coalesced read plans).

use serde::Deserialize;
use serde_json::Value as Json;

/// The whole connector file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModbusConnectorConfig {
    /// Master mode: the gateway polls these slaves.
    pub master: Option<MasterConfig>,
    /// Slave mode: the gateway serves registers to a Modbus master.
    pub slave: Option<SlaveServerConfig>,
    /// Connector-level report strategy (read by the gateway; declared so it is not reported
    /// as unknown).
    #[serde(default)]
    pub report_strategy: Option<Json>,
    /// Legacy connector-level ON_CHANGE flag (read by the gateway).
    #[serde(default)]
    pub send_data_only_on_change: Option<Json>,
}

/// `master`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MasterConfig {
    /// The polled devices.
    #[serde(default)]
    pub slaves: Vec<SlaveConfig>,
}

/// A number that upstream's files write as a number, a boolean or a numeric string
/// (`"retries": true` appears in upstream's own sample).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Lenient {
    /// A number.
    Num(f64),
    /// A boolean: `true` counts as 1, `false` as 0.
    Bool(bool),
}

impl Lenient {
    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Lenient::Num(n) => n,
            Lenient::Bool(b) => f64::from(u8::from(b)),
        }
    }
}

/// A connection to a device: shared by `master.slaves[]` and the `slave` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionConfig {
    /// `tcp` (default), `udp` or `serial`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Framing: `socket` (MBAP, default for tcp/udp), `rtu` (default for serial) or `ascii`.
    pub method: Option<String>,
    /// Host for tcp/udp.
    pub host: Option<String>,
    /// TCP/UDP port number, or the serial device path.
    pub port: Option<Json>,
    /// Serial speed (default 19200).
    pub baudrate: Option<u32>,
    /// Serial data bits (5..8, default 8).
    pub bytesize: Option<u8>,
    /// Serial parity `N`, `E` or `O` (default `N`).
    pub parity: Option<String>,
    /// Serial stop bits (1 or 2, default 1).
    pub stopbits: Option<u8>,
    /// Response timeout in seconds (default 3).
    pub timeout: Option<f64>,
    /// Unit id (slave address).
    pub unit_id: Option<u8>,
    /// Device name in ThingsBoard.
    pub device_name: Option<String>,
    /// Device profile in ThingsBoard.
    pub device_type: Option<String>,
    /// Poll period in milliseconds.
    pub poll_period: Option<u64>,
    /// `BIG` or `LITTLE`: byte order inside each register (default `BIG`).
    pub byte_order: Option<String>,
    /// `BIG` or `LITTLE`: register order of multi-register values (default `LITTLE`).
    pub word_order: Option<String>,
}

/// One entry of `master.slaves[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaveConfig {
    /// Connection and identity keys.
    #[serde(flatten)]
    pub connection: ConnectionConfig,
    /// Extra tries after a failed request (a boolean `true` counts as 1).
    pub retries: Option<Lenient>,
    /// Retry when the device answers with nothing.
    pub retry_on_empty: Option<bool>,
    /// Retry when the answer cannot be decoded.
    pub retry_on_invalid: Option<bool>,
    /// Time allowed for one connection attempt, in ms (at least 500).
    pub connect_attempt_time_ms: Option<u64>,
    /// Failed attempts in a row before the long wait (at least 2).
    pub connect_attempt_count: Option<u32>,
    /// The long wait after `connectAttemptCount` failures, in ms.
    pub wait_after_failed_attempts_ms: Option<u64>,
    /// Pause between two requests on the connection, in ms.
    pub delay_between_requests_ms: Option<u64>,
    /// Largest read (registers, or bits for function codes 1 and 2) one request may cover.
    pub max_registers_per_request: Option<u16>,
    /// Accepted and ignored: tbgw never echoes its own bytes on a serial line.
    pub handle_local_echo: Option<bool>,
    /// Accepted and ignored: tbgw decodes the registers itself.
    pub repack: Option<bool>,
    /// Device-level report strategy of this slave.
    #[serde(default)]
    pub report_strategy: Option<Json>,
    /// Legacy device-level ON_CHANGE flag.
    #[serde(default)]
    pub send_data_only_on_change: Option<Json>,
    /// TLS client settings for `method: "tls"` (Modbus/TCP over TLS).
    pub tls: Option<TlsConfig>,
    /// Datapoints sent as attributes.
    #[serde(default)]
    pub attributes: Vec<DatapointConfig>,
    /// Datapoints sent as telemetry.
    #[serde(default)]
    pub timeseries: Vec<DatapointConfig>,
    /// Shared attribute updates written to the device.
    #[serde(default)]
    pub attribute_updates: Vec<DatapointConfig>,
    /// RPC methods.
    #[serde(default)]
    pub rpc: Vec<DatapointConfig>,
}

/// A datapoint: one entry of `attributes`, `timeseries`, `attributeUpdates` or `rpc`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapointConfig {
    /// Key (or RPC method, or attribute name); may be a template for address ranges.
    pub tag: Option<String>,
    /// Value type (`16int`, `32float`, `string`, `bits`, ...).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Function code.
    pub function_code: Option<u8>,
    /// Number of registers (or bits for function codes 1, 2, 5 and 15).
    pub objects_count: Option<u16>,
    /// Legacy name of `objectsCount`.
    pub registers_count: Option<u16>,
    /// Legacy name of `objectsCount`.
    pub register_count: Option<u16>,
    /// Address, or a range `"0-99"`.
    pub address: Option<Json>,
    /// The value is divided by this.
    pub divider: Option<f64>,
    /// The value is multiplied by this.
    pub multiplier: Option<f64>,
    /// Take one bit of the value.
    pub bit: Option<u16>,
    /// `bool` (default) or `int`: how bits are reported.
    pub bit_target_type: Option<String>,
    /// Raw value → label.
    pub variants: Option<serde_json::Map<String, Json>>,
    /// Byte order override for this datapoint.
    pub byte_order: Option<String>,
    /// Word order override for this datapoint.
    pub word_order: Option<String>,
    /// Largest request when this datapoint is read (wide ranges are chunked by it).
    pub max_registers_per_request: Option<u16>,
    /// Initial value (slave mode only).
    pub value: Option<Json>,
    /// Per-datapoint report strategy: accepted and ignored (the core has no report strategy).
    pub report_strategy: Option<Json>,
}

/// The `slave` section: the gateway acts as a Modbus server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaveServerConfig {
    /// Connection and identity keys.
    #[serde(flatten)]
    pub connection: ConnectionConfig,
    /// Also report the served values to ThingsBoard every `pollPeriod`.
    #[serde(rename = "sendDataToThingsBoard")]
    pub send_data_to_thingsboard: Option<bool>,
    /// Device identification, served with function code 43 / MEI type 14.
    pub identity: Option<IdentityConfig>,
    /// TLS for the server: with `certfile` and `keyfile`, the slave serves Modbus/TCP over TLS.
    pub security: Option<TlsConfig>,
    /// Most masters connected at once over TCP/TLS (tbgw; default 64); more are closed at
    /// once.
    pub max_connections: Option<usize>,
    /// Register blocks and their initial values.
    #[serde(default)]
    pub values: SlaveValues,
}

/// `slave.values`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlaveValues {
    /// Holding registers (function codes 3, 6, 16).
    #[serde(default)]
    pub holding_registers: Option<SlaveBlock>,
    /// Coils (function codes 1, 5, 15).
    #[serde(default)]
    pub coils_initializer: Option<SlaveBlock>,
    /// Input registers (function code 4).
    #[serde(default)]
    pub input_registers: Option<SlaveBlock>,
    /// Discrete inputs (function code 2).
    #[serde(default)]
    pub discrete_inputs: Option<SlaveBlock>,
}

/// One register block of the slave.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaveBlock {
    /// Values reported as attributes when a master writes them.
    #[serde(default)]
    pub attributes: Vec<DatapointConfig>,
    /// Values reported as telemetry when a master writes them.
    #[serde(default)]
    pub timeseries: Vec<DatapointConfig>,
    /// Values ThingsBoard's shared attribute updates set.
    #[serde(default)]
    pub attribute_updates: Vec<DatapointConfig>,
    /// Values RPCs set (method = tag).
    #[serde(default)]
    pub rpc: Vec<DatapointConfig>,
}

/// `master.slaves[].tls` (upstream passes it to pymodbus's TLS client) and `slave.security`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// Certificate (PEM): the client certificate of a master, the server certificate of a slave.
    pub certfile: Option<String>,
    /// Private key (PEM) of `certfile`.
    pub keyfile: Option<String>,
    /// Password of an encrypted key: tbgw reads unencrypted keys only (an encrypted key is a
    /// configuration error that says so).
    pub password: Option<String>,
    /// tbgw addition. Master: CA certificates (PEM) the device's certificate is checked against
    /// (chain and host name); without it, like upstream, the device's certificate is not
    /// checked. Slave: CA certificates of the masters; when set, a master must present a
    /// certificate signed by one of them.
    pub cafile: Option<String>,
    /// tbgw addition (master): the name the device's certificate must carry, when it differs
    /// from `host`.
    pub server_hostname: Option<String>,
}

impl TlsConfig {
    /// True when nothing is set (`"tls": {}`).
    pub fn is_empty(&self) -> bool {
        self == &TlsConfig::default()
    }
}

/// `slave.identity`: the objects of Read Device Identification (function code 43, MEI type 14).
/// Upstream's keys (`vendorName`, `productCode`, `vendorUrl`, `productName`, `ModelName`) and
/// pymodbus's names (`VendorName`, ...) are both accepted. Values are text (numbers are written
/// out).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IdentityConfig {
    /// Object 0 (basic).
    #[serde(rename = "vendorName", alias = "VendorName")]
    pub vendor_name: Option<Json>,
    /// Object 1 (basic).
    #[serde(rename = "productCode", alias = "ProductCode")]
    pub product_code: Option<Json>,
    /// Object 2 (basic); tbgw's version when not set.
    #[serde(rename = "majorMinorRevision", alias = "MajorMinorRevision")]
    pub major_minor_revision: Option<Json>,
    /// Object 3 (regular).
    #[serde(rename = "vendorUrl", alias = "VendorUrl")]
    pub vendor_url: Option<Json>,
    /// Object 4 (regular).
    #[serde(rename = "productName", alias = "ProductName")]
    pub product_name: Option<Json>,
    /// Object 5 (regular).
    #[serde(rename = "modelName", alias = "ModelName")]
    pub model_name: Option<Json>,
    /// Object 6 (regular).
    #[serde(rename = "userApplicationName", alias = "UserApplicationName")]
    pub user_application_name: Option<Json>,
}
