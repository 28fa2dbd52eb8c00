//! The KNX connector: the gateway joins a KNX installation through a KNXnet/IP gateway
//! (tunnelling over UDP or TCP) or router (routing, UDP multicast), sends ThingsBoard the
//! values of configured group addresses, and writes shared-attribute updates and RPCs to the
//! bus as GroupValueWrite (or reads with GroupValueRead).
//!
//! Configured by upstream's `knx.json` (3.7.0 – 3.8.5): `client` (connection type, gateway
//! address and port, local address, individual address, rate limit, auto-reconnect, gateway
//! scanner), `devices[]` whose name may be read from a group address (`Device ${1/0/5}`),
//! attributes and time series by group address and datapoint type (xknx's type names such as
//! `temperature`, `humidity`, `percentU8`, `switch`, `string`, or DPT numbers), `pollPeriod`,
//! and top-level `attributeUpdates` and `serverSideRpc` (read/write), reserved `get`/`set`.
//! See `docs/connectors/knx.md`.
//!
//! What differs from upstream, on purpose:
//!
//! * the connector **listens to the bus**: every GroupValueWrite and GroupValueResponse seen
//!   for a configured group address is sent to ThingsBoard as it happens (upstream only
//!   polls, so a switch pressed between two polls is lost); polls still run on `pollPeriod`
//!   and send the answers of one poll as one message;
//! * DPT 1 values are booleans; a device's poll is not lost to one bad value;
//! * the gateway address is read from `gatewayIp` and from the sample's `gatewayIP`;
//! * every matching `attributeUpdates` entry is written (upstream writes the first only); an
//!   RPC entry must match both the method and the device name filter; a `read` RPC reads even
//!   with params (upstream turns `params: {}` into a write); reserved `get` works;
//! * RPC replies are JSON (`{"result": {"value": 21.5}}`), not Python `repr` text;
//! * KNX IP Secure is not supported: `*_SECURE` types are refused by `tbgw check`, a
//!   `security` block is reported as ignored.
//!
//! Protocol: written here ([`frame`], [`link`], [`dpt`]) over tokio. The crate looked at,
//! `knust` 0.2.0 (MIT, MSRV 1.85, first released 2026, one author), was not chosen: it logs
//! through `log` rather than `tracing`, it is ~34,000 lines with `rand` 0.10, `strum` 0.28
//! and `async-trait` for the parts the connector needs and crypto crates for Secure, it has
//! ~260 `unwrap`/`expect` outside its tests, and its KNX Data Security is marked
//! experimental. The part of KNXnet/IP the connector needs is small: the tunnelling
//! handshake, acknowledged tunnelling requests and heartbeats over UDP, the same framed over
//! TCP, routing indications, the search request, cEMI L_Data with group services, and the
//! DPT codecs. Every frame is parsed with checked reads (no panic on any bytes; fuzzed by
//! `knx_frame`).
//!
//! * [`config`]: the file's keys.
//! * [`frame`]: KNXnet/IP frames, cEMI, addresses.
//! * [`link`]: one connection (tunnel or routing) and the gateway scanner.
//! * [`dpt`]: datapoint types and their codecs.

pub mod config;
mod connector;
pub mod dpt;
pub mod frame;
pub mod link;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::KnxConnectorConfig;
pub use connector::KnxConnector;

/// Builds KNX connectors (`"type": "knx"`).
#[derive(Debug, Default, Clone)]
pub struct KnxFactory {}

impl KnxFactory {
    /// A factory.
    pub fn new() -> Self {
        KnxFactory::default()
    }
}

impl ConnectorFactory for KnxFactory {
    fn connector_type(&self) -> &'static str {
        "knx"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: KnxConnectorConfig = spec.config.deserialize(&spec.file, ignored)?;
        Ok(Box::new(KnxConnector::build(
            &spec.file, &spec.name, cfg, ignored,
        )?))
    }
}
