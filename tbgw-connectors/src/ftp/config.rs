//! The connector file (`ftp.json`): upstream's keys in both of its layouts, defaults, and the
//! checks `tbgw check` reports with the file and key path.
//!
//! Upstream 3.8.5 reads a *new* layout (`parameters`, `paths`, `requestsMapping`) and converts
//! the *old* flat one (`host`, `port`, `TLSSupport`, `security`, `paths`, `attributeUpdates`,
//! `serverSideRpc` at the top level; its own sample is in this form) when `parameters` is
//! absent. Both are read here into one [`FtpConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use tbgw::config::ConfigError;
use tbgw::expr::DataType;

/// The content of an `ftp.json` connector file, in either layout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FtpFile {
    /// New layout: the server and credentials.
    pub parameters: Option<Parameters>,
    /// Old layout: the server's host.
    pub host: Option<String>,
    /// Old layout: the server's port.
    pub port: Option<u16>,
    /// Old layout: explicit FTPS (`AUTH TLS`, `PROT P`).
    #[serde(rename = "TLSSupport")]
    pub tls_support: Option<bool>,
    /// Old layout: the credentials.
    pub security: Option<Security>,
    /// Old layout (beyond upstream): the CA certificate the FTPS server is checked against.
    pub ca_cert: Option<String>,
    /// The files to read.
    #[serde(default)]
    pub paths: Vec<PathConfig>,
    /// New layout: attribute updates and RPCs.
    pub requests_mapping: Option<RequestsMapping>,
    /// Old layout: attribute updates written to files.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// Old layout: RPCs reading and writing files.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
    /// Beyond upstream: where the PARTIAL cursors are kept (relative to this file). Default:
    /// `<this file's name without .json>.cursors.json` beside it.
    pub cursor_file: Option<String>,
}

/// `parameters` of the new layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameters {
    /// The server's host name or address.
    pub host: String,
    /// The server's control port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Explicit FTPS: `AUTH TLS` on the control connection, then `PBSZ 0` / `PROT P`.
    #[serde(rename = "TLSSupport", default)]
    pub tls_support: bool,
    /// The credentials; anonymous when absent.
    #[serde(default)]
    pub security: Security,
    /// Beyond upstream: the CA certificate (PEM) the FTPS server's certificate is checked
    /// against, with its host name. Without it the certificate is not checked (as upstream,
    /// whose `ftplib.FTP_TLS` checks nothing).
    pub ca_cert: Option<String>,
}

fn default_port() -> u16 {
    21
}

/// `security`: `{"type": "basic", "username", "password"}` or `{"type": "anonymous"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Security {
    /// `basic` or `anonymous`.
    #[serde(rename = "type", default = "default_security")]
    pub kind: String,
    /// The user name for `basic`.
    #[serde(default)]
    pub username: String,
    /// The password for `basic`.
    #[serde(default)]
    pub password: String,
}

fn default_security() -> String {
    "anonymous".into()
}

impl Default for Security {
    fn default() -> Self {
        Security {
            kind: default_security(),
            username: String::new(),
            password: String::new(),
        }
    }
}

/// `requestsMapping` of the new layout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestsMapping {
    /// Attribute updates written to files.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// RPCs reading and writing files.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
}

/// How a file is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReadMode {
    /// The whole file each time it changed.
    #[default]
    Full,
    /// Only the lines appended since the last read (csv and txt; json files are read whole).
    Partial,
}

/// How a txt file's lines are cut into values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataView {
    /// The first line names the columns; expressions are `${Column}` (csv files always).
    #[default]
    Table,
    /// Expressions are `[from:to]` character slices of the line's first field.
    Sliced,
}

/// One entry of `paths[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathConfig {
    /// The files: `dir/sub/name.ext`, where a directory may be `*` (every sub-directory) and
    /// the name and extension may hold `*`. Only `json`, `txt` and `csv` files are read.
    pub path: String,
    /// The device name: constant, `${Column}` (TABLE), `[from:to]` (SLICED) or `${json.path}`.
    pub device_pattern_name: String,
    /// The device profile, same forms as the name.
    #[serde(default = "default_device_type")]
    pub device_pattern_type: String,
    /// The column separator of csv and txt lines.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// FULL or PARTIAL.
    #[serde(default)]
    pub read_mode: ReadMode,
    /// Files of this size or more (in MB) are skipped.
    #[serde(default = "default_max_size")]
    pub max_file_size: f64,
    /// Seconds between two reads of the path (upstream's code reads seconds).
    #[serde(default = "default_poll")]
    pub poll_period: f64,
    /// TABLE or SLICED, for txt files.
    #[serde(default)]
    pub txt_file_data_view: DataView,
    /// Read the matching files newest first (by `MDTM`, then name); `false`: in the server's
    /// listing order. Upstream reads `with_sorting_files`, accepted too.
    #[serde(default = "yes", alias = "with_sorting_files")]
    pub with_sorting_files: bool,
    /// Client attributes of each row / object.
    #[serde(default)]
    pub attributes: Vec<DatapointConfig>,
    /// Time series of each row / object; the key `ts` sets the row's timestamp.
    #[serde(default)]
    pub timeseries: Vec<DatapointConfig>,
}

fn default_device_type() -> String {
    "Device".into()
}
fn default_delimiter() -> String {
    ",".into()
}
fn default_max_size() -> f64 {
    5.0
}
fn default_poll() -> f64 {
    60.0
}
fn yes() -> bool {
    true
}

/// One attribute or time series: `{"key", "value", "type"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct DatapointConfig {
    /// The key: constant or an expression of the path's view.
    pub key: String,
    /// The value expression (a non-string is a constant).
    pub value: Json,
    /// The value's type (`string` when absent, as upstream sends every value).
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
}

/// How an attribute update is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WritingMode {
    /// Replace the file's content.
    Override,
    /// Append a line to the file.
    #[default]
    Write,
}

/// One entry of `attributeUpdates[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateConfig {
    /// The file written; `${attributeKey}` / `${attributeValue}` may appear, and `*`.
    pub path: String,
    /// A regular expression the whole device name must match.
    #[serde(default = "any")]
    pub device_name_filter: String,
    /// OVERRIDE or WRITE (append).
    #[serde(default)]
    pub writing_mode: WritingMode,
    /// What is written, with `${attributeKey}`, `${attributeValue}`, `${deviceName}`.
    pub value_expression: String,
}

/// One entry of `serverSideRpc[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// A regular expression the whole device name must match.
    #[serde(default = "any")]
    pub device_name_filter: String,
    /// A regular expression the whole method must match; `write` writes, any other reads.
    pub method_filter: String,
    /// What the request becomes: `path` (read) or `path;value` (write); `${params}` etc.
    #[serde(default = "params")]
    pub value_expression: String,
}

fn any() -> String {
    ".*".into()
}
fn params() -> String {
    "${params}".into()
}

/// The connector's configuration, one layout, checked.
#[derive(Debug, Clone)]
pub struct FtpConfig {
    /// Host of the FTP server.
    pub host: String,
    /// Control port.
    pub port: u16,
    /// Explicit FTPS.
    pub tls: bool,
    /// The CA certificate, resolved beside the connector file.
    pub ca_cert: Option<PathBuf>,
    /// User name (`anonymous` for anonymous).
    pub username: String,
    /// Password (`anonymous@` for anonymous).
    pub password: String,
    /// The files to read.
    pub paths: Vec<PathConfig>,
    /// Attribute updates.
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// RPCs.
    pub server_side_rpc: Vec<RpcConfig>,
    /// Where the PARTIAL cursors are kept.
    pub cursor_file: PathBuf,
}

impl FtpFile {
    /// One layout (new keys win when both are present), checked. `file` is the connector file.
    pub fn into_config(self, file: &Path) -> Result<FtpConfig, ConfigError> {
        let old = self.parameters.is_none();
        let (host, port, tls, security, ca_cert, prefix) = match self.parameters {
            Some(p) => (
                p.host,
                p.port,
                p.tls_support,
                p.security,
                p.ca_cert,
                "parameters.",
            ),
            None => (
                self.host
                    .ok_or_else(|| ConfigError::new(file, "parameters.host", "missing field"))?,
                self.port.unwrap_or(21),
                self.tls_support.unwrap_or(false),
                self.security.unwrap_or_default(),
                self.ca_cert,
                "",
            ),
        };
        if host.trim().is_empty() {
            return Err(ConfigError::new(
                file,
                format!("{prefix}host"),
                "must not be empty",
            ));
        }
        let (username, password) = match security.kind.to_ascii_lowercase().as_str() {
            "basic" => (security.username, security.password),
            "anonymous" => ("anonymous".to_string(), "anonymous@".to_string()),
            other => {
                return Err(ConfigError::new(
                    file,
                    format!("{prefix}security.type"),
                    format!("unknown type {other:?}, expected basic or anonymous"),
                ))
            }
        };
        let (attribute_updates, server_side_rpc) = match (old, self.requests_mapping) {
            (false, Some(m)) => (m.attribute_updates, m.server_side_rpc),
            _ => (self.attribute_updates, self.server_side_rpc),
        };
        let cursor_file = match &self.cursor_file {
            Some(p) => tbgw::config::resolve_beside(file, p),
            None => {
                let stem = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("ftp")
                    .to_string();
                file.with_file_name(format!("{stem}.cursors.json"))
            }
        };
        let cfg = FtpConfig {
            host,
            port,
            tls,
            ca_cert: ca_cert.map(|c| tbgw::config::resolve_beside(file, &c)),
            username,
            password,
            paths: self.paths,
            attribute_updates,
            server_side_rpc,
            cursor_file,
        };
        cfg.validate(file)?;
        Ok(cfg)
    }
}

impl FtpConfig {
    /// Checks what serde cannot: every problem names the file and the key.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        if self.paths.is_empty() {
            tracing::warn!(file = %file.display(), "The FTP connector has no paths: it reads nothing.");
        }
        for (i, p) in self.paths.iter().enumerate() {
            let at = |k: &str| format!("paths[{i}].{k}");
            super::uplink::PathPattern::parse(&p.path)
                .map_err(|e| ConfigError::new(file, at("path"), e))?;
            if p.delimiter.is_empty() {
                return Err(ConfigError::new(file, at("delimiter"), "must not be empty"));
            }
            if !(p.poll_period.is_finite() && p.poll_period > 0.0) {
                return Err(ConfigError::new(
                    file,
                    at("pollPeriod"),
                    "must be a positive number of seconds",
                ));
            }
            if !(p.max_file_size.is_finite() && p.max_file_size > 0.0) {
                return Err(ConfigError::new(
                    file,
                    at("maxFileSize"),
                    "must be a positive number of MB",
                ));
            }
            super::uplink::PathSpec::build(p)
                .map_err(|(k, e)| ConfigError::new(file, at(&k), e))?;
        }
        for (i, a) in self.attribute_updates.iter().enumerate() {
            let at = |k: &str| format!("attributeUpdates[{i}].{k}");
            super::downlink::full_regex(&a.device_name_filter)
                .map_err(|e| ConfigError::new(file, at("deviceNameFilter"), e))?;
            tbgw::expr::Template::parse(&a.path)
                .map_err(|e| ConfigError::new(file, at("path"), e.to_string()))?;
            tbgw::expr::Template::parse(&a.value_expression)
                .map_err(|e| ConfigError::new(file, at("valueExpression"), e.to_string()))?;
        }
        for (i, r) in self.server_side_rpc.iter().enumerate() {
            let at = |k: &str| format!("serverSideRpc[{i}].{k}");
            super::downlink::full_regex(&r.device_name_filter)
                .map_err(|e| ConfigError::new(file, at("deviceNameFilter"), e))?;
            super::downlink::full_regex(&r.method_filter)
                .map_err(|e| ConfigError::new(file, at("methodFilter"), e))?;
            tbgw::expr::Template::parse(&r.value_expression)
                .map_err(|e| ConfigError::new(file, at("valueExpression"), e.to_string()))?;
        }
        Ok(())
    }
}

impl PathConfig {
    /// The poll period.
    pub fn poll(&self) -> Duration {
        Duration::from_secs_f64(self.poll_period.clamp(0.001, 1e9))
    }

    /// The largest file read, in bytes (files of this size or more are skipped).
    pub fn max_bytes(&self) -> u64 {
        (self.max_file_size * 1024.0 * 1024.0).min(u64::MAX as f64) as u64
    }
}
