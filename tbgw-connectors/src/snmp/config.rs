//! `snmp.json`: the SNMP connector's configuration, in upstream's format, plus the keys of
//! our own for SNMPv3 and traps (see `docs/connectors/snmp.md`).

use serde::Deserialize;
use serde_json::Value as Json;

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnmpConnectorConfig {
    /// The polled agents.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Trap and inform receiving (ours; upstream has none). Absent: no listener.
    pub traps: Option<TrapConfig>,
}

/// `traps`: the trap listener (ours).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrapConfig {
    /// Address to listen on (default `0.0.0.0`).
    #[serde(default = "default_any_host")]
    pub host: String,
    /// UDP port (default 162).
    #[serde(default = "default_trap_port")]
    pub port: u16,
    /// Communities accepted for v1/v2c traps and informs; empty (the default) accepts any.
    #[serde(default)]
    pub communities: Vec<String>,
}

fn default_any_host() -> String {
    "0.0.0.0".into()
}
const fn default_trap_port() -> u16 {
    162
}

/// One string or a list of strings (`oid`, `scalarOid`, `repeatingOid`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One OID.
    One(String),
    /// Several OIDs.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The OIDs as a list; one string with commas is split (reserved RPC params).
    pub fn to_list(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One entry of `devices[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// Device name in ThingsBoard.
    pub device_name: String,
    /// Device profile (default `default`).
    #[serde(default = "default_type")]
    pub device_type: String,
    /// Host name or address of the agent.
    pub ip: String,
    /// UDP port of the agent (default 161).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Milliseconds between polls (default 10000).
    #[serde(default = "default_poll_period")]
    pub poll_period: u64,
    /// Seconds to wait for one answer (default 6).
    pub timeout: Option<f64>,
    /// Resends after a timeout (ours; default 1).
    pub retries: Option<u32>,
    /// Community for v1/v2c (default `public`).
    #[serde(default = "default_community")]
    pub community: String,
    /// `v1`, `v2c` (default) or `v3` (ours).
    #[serde(default = "default_version")]
    pub version: String,
    /// Upstream's custom Python converter class: not run by tbgw (listed as ignored).
    pub converter: Option<Json>,
    /// Device-level report strategy.
    pub report_strategy: Option<Json>,
    /// SNMPv3 user name (ours; alias `securityName`).
    #[serde(alias = "securityName")]
    pub username: Option<String>,
    /// SNMPv3 authentication protocol: MD5, SHA (default), SHA224, SHA256, SHA384, SHA512.
    pub authentication_protocol: Option<String>,
    /// SNMPv3 authentication passphrase; absent: noAuthNoPriv.
    pub authentication_passphrase: Option<String>,
    /// SNMPv3 privacy protocol: DES, AES (default, 128 bits), AES192, AES256.
    pub privacy_protocol: Option<String>,
    /// SNMPv3 privacy passphrase; absent: no privacy.
    pub privacy_passphrase: Option<String>,
    /// SNMPv3 context name.
    pub context_name: Option<String>,
    /// Polled into client attributes.
    #[serde(default)]
    pub attributes: Vec<KeyConfig>,
    /// Polled into telemetry (alias `timeseries`).
    #[serde(default, alias = "timeseries")]
    pub telemetry: Vec<KeyConfig>,
    /// Shared-attribute updates written with `set`/`multiset`.
    #[serde(default)]
    pub attribute_update_requests: Vec<RequestConfig>,
    /// RPCs run as any method.
    #[serde(default)]
    pub server_side_rpc_requests: Vec<RequestConfig>,
    /// Trap varbinds renamed to keys (ours): OID prefix → key.
    #[serde(default)]
    pub trap_keys: Vec<TrapKeyConfig>,
}

fn default_type() -> String {
    "default".into()
}
const fn default_port() -> u16 {
    161
}
const fn default_poll_period() -> u64 {
    10_000
}
fn default_community() -> String {
    "public".into()
}
fn default_version() -> String {
    "v2c".into()
}

/// What to ask the agent: a method and its OIDs. Shared by `attributes[]`, `telemetry[]`,
/// and (with the downlink keys) the request lists.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MethodConfig {
    /// One of get, multiget, getnext, walk, multiwalk, bulkget, bulkwalk, table, bulktable,
    /// set, multiset.
    pub method: Option<String>,
    /// The OID, or the OIDs of multiget, multiwalk and bulkwalk.
    pub oid: Option<OneOrMany>,
    /// bulkget: OIDs read once.
    pub scalar_oid: Option<OneOrMany>,
    /// bulkget: OIDs read `maxListSize` times.
    pub repeating_oid: Option<OneOrMany>,
    /// bulkget: repetitions (default 1).
    pub max_list_size: Option<u32>,
    /// bulkwalk, bulktable: repetitions per request (default 10).
    pub bulk_size: Option<u32>,
    /// table, bulktable: OID components before the column number (default: the OID's
    /// length plus 1, the table's entry).
    pub num_base_nodes: Option<usize>,
    /// Seconds to wait for an answer (default: the device's).
    pub timeout: Option<f64>,
    /// Community for this key (upstream ignores it; tbgw uses it).
    pub community: Option<String>,
}

/// One entry of `attributes[]` or `telemetry[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyConfig {
    /// Key in ThingsBoard.
    pub key: String,
    /// The request.
    #[serde(flatten)]
    pub method: MethodConfig,
    /// Key-level report strategy.
    pub report_strategy: Option<Json>,
}

/// One entry of `attributeUpdateRequests[]` or `serverSideRpcRequests[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestConfig {
    /// Regex over the attribute key (attribute updates).
    pub attribute_filter: Option<String>,
    /// Regex over the RPC method (RPCs).
    pub request_filter: Option<String>,
    /// The request.
    #[serde(flatten)]
    pub method: MethodConfig,
    /// SNMP type of the written value (default OCTETSTRING).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// multiset: OID → value template (`${attribute}`, `${params}`, `${params.x}`), or
    /// OID → `{value, type}`, or a list of `{oid, value, type}`.
    pub mappings: Option<Json>,
}

/// One entry of `devices[].trapKeys` (ours).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrapKeyConfig {
    /// OID (prefix) of a varbind.
    pub oid: String,
    /// Telemetry key for its value.
    pub key: String,
}

/// Keys of a device object, a key entry and a request entry that tbgw reads (serde's
/// `flatten` hides unknown keys from the ignored-key tracking, so these are checked by hand).
pub(crate) const METHOD_KEYS: &[&str] = &[
    "method",
    "oid",
    "scalarOid",
    "repeatingOid",
    "maxListSize",
    "bulkSize",
    "numBaseNodes",
    "timeout",
    "community",
];
