//! The Siemens S7 connector: the gateway polls S7 PLCs (S7-300/400/1200/1500 with PUT/GET
//! access, addressed by rack and slot) and LOGO! controllers (addressed by TSAPs), and writes
//! shared-attribute updates and RPCs to them.
//!
//! Configured by upstream's `s7.json` (3.8.5): `devices[]` of `type` `PLC` or `LOGO` with
//! `attributes`, `timeseries`, `attributeUpdates` and `serverSideRpc`, each value addressed
//! in one of upstream's three forms (`tag` `DB1.DBD204:REAL`, `data` `{dataType, dbNumber,
//! start, size, bit}`, `vm` `{vmAddress}`), reserved `get`/`set` RPCs and connector RPCs
//! `s7_<name>`. See `docs/connectors/s7.md`.
//!
//! What differs from upstream, on purpose:
//!
//! * the tags of one device are read together: neighbouring tags are merged into one block
//!   and the blocks are packed into as few ReadVar requests as the negotiated PDU size allows
//!   (upstream sends one request per tag: 1,000 tags, 1,000 round trips per poll);
//! * a BOOL write changes its bit only (WriteVar with the BIT transport size); upstream's
//!   `data` form writes the whole byte from zeros, clearing the other seven bits;
//! * every device has its own task, so a slow PLC does not hold up the others, and RPCs and
//!   attribute updates run between polls on the same connection;
//! * an unreachable device answers RPCs at once with code 503.
//!
//! Protocol: written here ([`proto`], [`client`]) over tokio TCP. The two crates looked at
//! were not chosen: `rust7` 0.1.2 is blocking (std `TcpStream`), so each device would need a
//! thread of its own or `spawn_blocking` around every request; `snap7-client` 0.1.x (first
//! released May 2026, five releases in two days, a quarter of its items documented) brings
//! rustls, tokio-rustls and webpki-roots for S7CommPlus TLS that this connector does not use.
//! The part of S7comm the connector needs is small: TPKT and COTP framing, the connection
//! request with two TSAPs, setup communication, and ReadVar/WriteVar with several items. Every
//! answer is parsed with checked reads (no panic on any bytes; fuzzed by `s7_response`).
//!
//! * [`config`]: the file's keys.
//! * [`proto`]: frames and their parsing.
//! * [`client`]: one connection with timeouts.
//! * [`address`]: the three address forms, data types, value decoding and encoding.
//! * [`plan`]: packing a device's tags into ReadVar requests.
//! * [`downlink`]: reserved `get`/`set` params.

pub mod address;
pub mod client;
pub mod config;
mod connector;
pub mod downlink;
pub mod plan;
pub mod proto;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::S7ConnectorConfig;
pub use connector::S7Connector;

/// Builds S7 connectors (`"type": "s7"`).
#[derive(Debug, Default, Clone)]
pub struct S7Factory {}

impl S7Factory {
    /// A factory.
    pub fn new() -> Self {
        S7Factory::default()
    }
}

impl ConnectorFactory for S7Factory {
    fn connector_type(&self) -> &'static str {
        "s7"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: S7ConnectorConfig = spec.config.deserialize(&spec.file, ignored)?;
        Ok(Box::new(S7Connector::build(
            &spec.file, &spec.name, cfg, ignored,
        )?))
    }
}
