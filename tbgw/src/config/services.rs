//! The service sections of `thingsboard`: report strategy, statistics, device filtering and
//! activity, remote configuration, logging and shell, rate limits and provisioning.
//!
//! Each keeps upstream's key names and defaults; where upstream has a quirk, the doc comment
//! of the field says what tbgw does instead.

use serde::Deserialize;

/// `reportStrategy`, at any level (general, connector, device, datapoint).
///
/// Upstream: `{"type": "ON_RECEIVED" | "ON_CHANGE" | "ON_REPORT_PERIOD" |
/// "ON_CHANGE_OR_REPORT_PERIOD" | "DISABLED", "reportPeriod": ms, "aggregationFunction":
/// "NONE" | "SUM" | "COUNT" | "MIN" | "MAX" | "AVERAGE", "ttl": s}`. Upstream validates the
/// aggregation function and never applies it; tbgw applies it over each report period.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportStrategyConfig {
    /// The strategy.
    #[serde(rename = "type", default)]
    pub kind: ReportType,
    /// Period of the periodic types, in milliseconds (default 10,000).
    #[serde(default = "default_report_period")]
    pub report_period: u64,
    /// Aggregation over a report period (default `NONE`: the latest value).
    #[serde(default)]
    pub aggregation_function: AggregationFunction,
    /// How long a cached value lives without a new one, in seconds (default 86,400).
    #[serde(default = "default_report_ttl")]
    pub ttl: u64,
}

impl Default for ReportStrategyConfig {
    fn default() -> Self {
        ReportStrategyConfig {
            kind: ReportType::OnReceived,
            report_period: default_report_period(),
            aggregation_function: AggregationFunction::None,
            ttl: default_report_ttl(),
        }
    }
}

const fn default_report_period() -> u64 {
    10_000
}
const fn default_report_ttl() -> u64 {
    86_400
}

/// `reportStrategy.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportType {
    /// Forward every value.
    #[default]
    OnReceived,
    /// Forward a value only when it differs from the last forwarded one.
    OnChange,
    /// Forward the first value, then the latest (or aggregated) value every period.
    OnReportPeriod,
    /// Forward on change, and the latest value every period.
    OnChangeOrReportPeriod,
    /// At the general level: the service is off, everything passes.
    Disabled,
}

/// `reportStrategy.aggregationFunction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AggregationFunction {
    /// The latest value.
    #[default]
    None,
    /// Sum of the numeric values of the period.
    Sum,
    /// Number of values of the period.
    Count,
    /// Smallest numeric value of the period.
    Min,
    /// Largest numeric value of the period.
    Max,
    /// Mean of the numeric values of the period.
    Average,
}

/// `statistics`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatisticsConfig {
    /// Publish statistics to the gateway device (default true).
    #[serde(default = "yes")]
    pub enable: bool,
    /// Period of the statistics telemetry, in seconds (default 60; upstream enforces at least
    /// 10, tbgw at least 1).
    #[serde(default = "default_stats_period")]
    pub stats_send_period_in_seconds: u64,
    /// Run the custom statistics commands.
    #[serde(default)]
    pub enable_custom: bool,
    /// Period of the custom statistics, in seconds (default 3600).
    #[serde(default = "default_custom_stats_period")]
    pub custom_stats_send_period_in_seconds: u64,
    /// File with the custom statistics commands (relative to the config directory).
    #[serde(default)]
    pub configuration: Option<String>,
    /// tbgw extension: serve the counters in Prometheus text format on this address
    /// (`"127.0.0.1:9464"`); off when absent.
    #[serde(default)]
    pub prometheus_address: Option<String>,
}

impl Default for StatisticsConfig {
    fn default() -> Self {
        StatisticsConfig {
            enable: true,
            stats_send_period_in_seconds: default_stats_period(),
            enable_custom: false,
            custom_stats_send_period_in_seconds: default_custom_stats_period(),
            configuration: None,
            prometheus_address: None,
        }
    }
}

const fn yes() -> bool {
    true
}
const fn default_stats_period() -> u64 {
    60
}
const fn default_custom_stats_period() -> u64 {
    3600
}

/// `deviceFiltering`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceFilteringConfig {
    /// Filter devices.
    #[serde(default)]
    pub enable: bool,
    /// The allow/deny list file (default `list.json`, relative to the config directory).
    #[serde(default)]
    pub filter_file: Option<String>,
}

/// `checkingDeviceActivity`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceActivityConfig {
    /// Disconnect devices that sent nothing for `inactivityTimeoutSeconds`.
    #[serde(default)]
    pub check_device_inactivity: bool,
    /// Idle time after which a device is disconnected (default 300 s).
    #[serde(default = "default_inactivity_timeout")]
    pub inactivity_timeout_seconds: u64,
    /// How often devices are checked (default 10 s).
    #[serde(default = "default_inactivity_period")]
    pub inactivity_check_period_seconds: u64,
}

impl Default for DeviceActivityConfig {
    fn default() -> Self {
        DeviceActivityConfig {
            check_device_inactivity: false,
            inactivity_timeout_seconds: default_inactivity_timeout(),
            inactivity_check_period_seconds: default_inactivity_period(),
        }
    }
}

const fn default_inactivity_timeout() -> u64 {
    300
}
const fn default_inactivity_period() -> u64 {
    10
}

/// `provisioning`: device-key provisioning of the gateway device itself.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningConfig {
    /// Provision device key of the device profile.
    pub provision_device_key: Option<String>,
    /// Provision device secret of the device profile.
    pub provision_device_secret: Option<String>,
    /// Name to register the gateway under (default: the host name).
    pub device_name: Option<String>,
    /// `ACCESS_TOKEN` (default), `MQTT_BASIC` or `X509_CERTIFICATE`.
    #[serde(rename = "type", alias = "credentialsType")]
    pub credentials_type: Option<String>,
    /// Access token to ask for (ACCESS_TOKEN; random when absent). Upstream spells it
    /// `access_token`, which is accepted too.
    #[serde(alias = "access_token")]
    pub access_token: Option<String>,
    /// MQTT client id (MQTT_BASIC; also `client_id`, upstream's spelling).
    #[serde(alias = "client_id")]
    pub client_id: Option<String>,
    /// MQTT user name (MQTT_BASIC).
    pub username: Option<String>,
    /// MQTT password (MQTT_BASIC).
    pub password: Option<String>,
    /// CA certificate of ThingsBoard's MQTT server (X509_CERTIFICATE): a file name in the
    /// config directory or a path. Provisioning and every later session use TLS with it.
    pub ca_cert: Option<String>,
}
