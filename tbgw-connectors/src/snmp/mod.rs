//! The SNMP connector: the gateway polls SNMP agents (v1, v2c and v3) and receives their
//! traps and informs, and writes shared-attribute updates and RPCs to them with SET.
//!
//! Configured by upstream's `snmp.json` (`devices[]` with `attributes`, `telemetry`,
//! `attributeUpdateRequests`, `serverSideRpcRequests`), plus keys of our own for SNMPv3
//! (`version: "v3"`, `username`, `authenticationProtocol`, `authenticationPassphrase`,
//! `privacyProtocol`, `privacyPassphrase`, `contextName`), resends (`retries`) and traps
//! (`traps` at the top, `trapKeys` per device). See `docs/connectors/snmp.md`.
//!
//! Every upstream method is here: `get`, `multiget`, `getnext`, `walk`, `multiwalk`,
//! `bulkget`, `bulkwalk`, `table`, `bulktable`, `set`, `multiset`, with upstream's result
//! shapes (a walk is one OID → value map) and these of its bugs fixed:
//!
//! * a `multiget` of OCTET STRINGs is sent (upstream drops it);
//! * walk values are text, not Python's `"b'...'"`;
//! * a `table` keeps every row (upstream merges the rows so only the last one survives);
//! * a key that times out is logged and skipped, the device's other keys are still sent
//!   (upstream drops the device's whole poll);
//! * devices are polled concurrently, each on its own `pollPeriod` (upstream polls them one
//!   after another, so a slow agent delays every other);
//! * the per-key `community` is used (upstream ignores it);
//! * host names are resolved without blocking.
//!
//! Protocol: the `snmp2` crate (RustCrypto back end). It has everything used here: v1/v2c/v3
//! with SHA-1/SHA-2/MD5 authentication and DES/AES privacy, GET/GETNEXT/GETBULK/SET on tokio,
//! and parsing of v1/v2c traps and informs. What it lacks is handled in [`client`]: a
//! timeout (tokio's, around each request) and skipping a late answer (the session is
//! dropped after a timeout, so a late answer reaches a closed port). SNMPv3 traps are not
//! received: snmp2 parses a v3 message only with a session's security state for the
//! sender's engine, which a trap receiver would have to keep per sender (RFC 3414's
//! notification originator is authoritative); v3 informs need the receiver's own engine id.
//!
//! * [`config`]: the file's keys.
//! * [`client`]: one agent, timeouts, resends, the eleven methods.
//! * [`uplink`]: values and result shapes; trap decoding (fuzzed).
//! * [`downlink`]: SET values, `mappings`, reserved RPC params.

pub mod client;
pub mod config;
mod connector;
pub mod downlink;
pub mod uplink;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::SnmpConnectorConfig;
pub use connector::SnmpConnector;

/// serde's `flatten` hides unknown keys of the key and request entries from the
/// ignored-key tracking, so they are checked here against the keys tbgw reads.
fn flattened_unknown_keys(raw: &serde_json::Value, ignored: &mut Vec<String>) {
    let Some(devices) = raw.get("devices").and_then(|d| d.as_array()) else {
        return;
    };
    for (i, d) in devices.iter().enumerate() {
        for (section, extra) in [
            ("attributes", &["key", "reportStrategy"][..]),
            ("telemetry", &["key", "reportStrategy"][..]),
            ("timeseries", &["key", "reportStrategy"][..]),
            (
                "attributeUpdateRequests",
                &["attributeFilter", "type", "mappings"][..],
            ),
            (
                "serverSideRpcRequests",
                &["requestFilter", "type", "mappings"][..],
            ),
        ] {
            let Some(list) = d.get(section).and_then(|l| l.as_array()) else {
                continue;
            };
            for (j, entry) in list.iter().enumerate() {
                for k in entry.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !config::METHOD_KEYS.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
                        ignored.push(format!("devices[{i}].{section}[{j}].{k}"));
                    }
                }
            }
        }
    }
}

/// Builds SNMP connectors (`"type": "snmp"`).
#[derive(Debug, Default, Clone)]
pub struct SnmpFactory {}

impl SnmpFactory {
    /// A factory.
    pub fn new() -> Self {
        SnmpFactory::default()
    }
}

impl ConnectorFactory for SnmpFactory {
    fn connector_type(&self) -> &'static str {
        "snmp"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: SnmpConnectorConfig = spec.config.deserialize(&spec.file, ignored)?;
        flattened_unknown_keys(&spec.config.value(), ignored);
        Ok(Box::new(SnmpConnector::build(
            &spec.file, &spec.name, cfg, ignored,
        )?))
    }
}
