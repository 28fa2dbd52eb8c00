//! Device filtering (`thingsboard.deviceFiltering`): allow and deny lists of device-name
//! regular expressions per connector, read from upstream's `list.json`:
//! `{"deny": {"<connector>": ["regex", …]}, "allow": {"<connector>": [...]}}`.
//!
//! As upstream: deny is checked first, patterns must match the whole name, a device matched by
//! neither list is allowed. Data of a denied device is dropped (counted in
//! `GatewayStats::devices_filtered`, logged once per device).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fancy_regex::Regex;
use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Default, Deserialize)]
struct ListFile {
    #[serde(default)]
    deny: HashMap<String, Vec<String>>,
    #[serde(default)]
    allow: HashMap<String, Vec<String>>,
}

/// The compiled allow/deny lists.
#[derive(Debug, Default)]
pub struct DeviceFilter {
    deny: HashMap<String, Vec<Regex>>,
    allow: HashMap<String, Vec<Regex>>,
    /// Devices already reported as filtered (log once).
    reported: HashSet<String>,
}

impl DeviceFilter {
    /// Reads and compiles a list file. Errors name the file, the key and the reason.
    pub fn load(file: &Path) -> Result<DeviceFilter, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::new(file, "", format!("cannot read: {e}")))?;
        Self::parse(file, &text)
    }

    /// Compiles a list file's text.
    pub fn parse(file: &Path, text: &str) -> Result<DeviceFilter, ConfigError> {
        let list: ListFile = serde_json::from_str(text)
            .map_err(|e| ConfigError::new(file, "", format!("not a valid list file: {e}")))?;
        let compile = |kind: &str, m: HashMap<String, Vec<String>>| {
            m.into_iter()
                .map(|(connector, pats)| {
                    let res = pats
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                                ConfigError::new(
                                    file,
                                    format!("{kind}.{connector}[{i}]"),
                                    format!("invalid regular expression: {e}"),
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((connector, res))
                })
                .collect::<Result<HashMap<_, _>, ConfigError>>()
        };
        Ok(DeviceFilter {
            deny: compile("deny", list.deny)?,
            allow: compile("allow", list.allow)?,
            reported: HashSet::new(),
        })
    }

    /// True when data of `device` from `connector` may pass.
    pub fn allows(&mut self, connector: &str, device: &str) -> bool {
        let hit = |m: &HashMap<String, Vec<Regex>>| {
            m.get(connector)
                .is_some_and(|v| v.iter().any(|r| r.is_match(device).unwrap_or(false)))
        };
        let allowed = if hit(&self.deny) {
            false
        } else if self.allow.get(connector).is_some_and(|v| !v.is_empty()) {
            // An allow list for the connector admits only what it names. Upstream lets
            // unmatched devices through even then, which makes an allow list meaningless;
            // tbgw treats a non-empty allow list as exclusive (documented in COMPATIBILITY.md).
            hit(&self.allow)
        } else {
            true
        };
        if !allowed && self.reported.insert(format!("{connector}\u{0}{device}")) {
            tracing::info!(
                connector,
                device,
                "Device filtered out by the device filtering lists; its data is dropped."
            );
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(text: &str) -> DeviceFilter {
        DeviceFilter::parse(Path::new("list.json"), text).expect("valid list")
    }

    #[test]
    fn deny_wins_allow_is_exclusive_and_other_connectors_pass() {
        let mut f = f(r#"{"deny": {"A": ["Temp.*", "x"]}, "allow": {"B": ["ok\\d+"]}}"#);
        assert!(!f.allows("A", "Temperature"));
        assert!(!f.allows("A", "x"));
        assert!(f.allows("A", "xx"), "whole-name match only");
        assert!(f.allows("A", "Other"));
        assert!(f.allows("B", "ok12"));
        assert!(!f.allows("B", "ok"));
        assert!(f.allows("C", "anything"));
    }

    #[test]
    fn bad_regex_names_its_key() {
        let e = DeviceFilter::parse(Path::new("list.json"), r#"{"deny": {"A": ["ok", "("]}}"#)
            .expect_err("bad regex");
        let s = e.to_string();
        assert!(s.contains("list.json") && s.contains("deny.A[1]"), "{s}");
    }

    #[test]
    fn upstream_sample_list_compiles() {
        let Some(p) = crate::test_util::upstream_sample("list.json") else {
            return;
        };
        let mut f = DeviceFilter::load(&p).expect("upstream list.json");
        assert!(!f.allows("MQTT Broker Connector", "Temperature Device"));
        assert!(f.allows("MQTT Broker Connector", "My Temperature Sensor"));
    }
}
