//! The connector file (`line.json`): its keys, their defaults, and the checks `tbgw check`
//! reports with the file and key path.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tbgw::config::ConfigError;

/// The content of a `line.json` connector file.
///
/// ```json
/// {
///   "host": "127.0.0.1",
///   "port": 7000,
///   "deviceName": "Boiler 1",
///   "deviceType": "boiler",
///   "attributes": ["firmware"],
///   "attributeUpdates": ["setpoint"],
///   "serverSideRpc": ["reboot", "read"]
/// }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineConfig {
    /// The device's (or serial-to-Ethernet server's) address.
    pub host: String,
    /// Its TCP port.
    pub port: u16,
    /// The device's name in ThingsBoard.
    pub device_name: String,
    /// The device's profile in ThingsBoard.
    #[serde(default = "default_type")]
    pub device_type: String,
    /// Reading keys sent as client attributes; every other key is telemetry.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Shared attribute keys forwarded to the device as `SET` commands.
    #[serde(default)]
    pub attribute_updates: Vec<String>,
    /// RPC methods forwarded to the device as `CALL` commands; `"*"` forwards every method.
    #[serde(default)]
    pub server_side_rpc: Vec<String>,
    /// How long to wait for the device's `OK`/`ERR` to a command, in milliseconds.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_ms: u64,
    /// First reconnect delay after the device went away, in milliseconds (doubles up to
    /// `maxReconnectDelayMs`, with jitter).
    #[serde(default = "default_reconnect")]
    pub reconnect_delay_ms: u64,
    /// Longest reconnect delay, in milliseconds.
    #[serde(default = "default_max_reconnect")]
    pub max_reconnect_delay_ms: u64,
    /// Longest line the device may send, in bytes; a longer one is counted and skipped.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
}

fn default_type() -> String {
    "default".into()
}
fn default_response_timeout() -> u64 {
    5_000
}
fn default_reconnect() -> u64 {
    1_000
}
fn default_max_reconnect() -> u64 {
    30_000
}
fn default_max_line() -> usize {
    64 * 1024
}

impl LineConfig {
    /// Checks what serde cannot: every problem names the file and the key.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(ConfigError::new(file, "host", "must not be empty"));
        }
        if self.device_name.trim().is_empty() {
            return Err(ConfigError::new(file, "deviceName", "must not be empty"));
        }
        if self.response_timeout_ms == 0 {
            return Err(ConfigError::new(
                file,
                "responseTimeoutMs",
                "must be at least 1",
            ));
        }
        if self.reconnect_delay_ms == 0 || self.max_reconnect_delay_ms < self.reconnect_delay_ms {
            return Err(ConfigError::new(
                file,
                "maxReconnectDelayMs",
                "must be at least reconnectDelayMs, which must be at least 1",
            ));
        }
        if self.max_line_bytes < 16 {
            return Err(ConfigError::new(
                file,
                "maxLineBytes",
                "must be at least 16",
            ));
        }
        for (i, k) in self.attribute_updates.iter().enumerate() {
            if k.is_empty() || k.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    file,
                    format!("attributeUpdates[{i}]"),
                    "a key without white space",
                ));
            }
        }
        for (i, m) in self.server_side_rpc.iter().enumerate() {
            if m.is_empty() || m.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    file,
                    format!("serverSideRpc[{i}]"),
                    "a method name without white space, or \"*\"",
                ));
            }
        }
        Ok(())
    }

    /// The response timeout.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// Whether `method` is forwarded to the device.
    pub fn forwards_rpc(&self, method: &str) -> bool {
        self.server_side_rpc.iter().any(|m| m == "*" || m == method)
    }
}
