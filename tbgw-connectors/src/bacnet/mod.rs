//! The BACnet/IP connector: the gateway is a BACnet device of its own (answering Who-Is
//! with I-Am), finds the configured devices with directed Who-Is, polls their objects with
//! ReadPropertyMultiple (chunked by the device's max APDU, falling back to ReadProperty),
//! subscribes to COV where asked, and writes attribute updates and RPCs with
//! WriteProperty (with priority).
//!
//! Configured by upstream's `bacnet.json` unchanged (`application`, `foreignDevice`,
//! `devices[]` by `address` or `host`/`port`/`mask`, address patterns, `net:mac` devices
//! behind routers, `deviceId` forms, `attributes`/`timeseries` by object type, id and
//! property, `"*"` discovery, `attributeUpdates`, `serverSideRpc`), plus keys of our own:
//! `subscribeCov`, `covLifetime`, `covConfirmed` per device and `apduTimeout`,
//! `numberOfApduRetries` in `application`. See `docs/connectors/bacnet.md`.
//!
//! Fixed of upstream:
//!
//! * a device given as host + port + mask (as upstream's sample does) is found: the mask
//!   takes no part in matching replies;
//! * values are typed (REAL → float, unsigned and enumerated → integer, booleans,
//!   strings, bit strings as arrays) instead of strings and floats rounded to 2 places;
//! * RPC replies are JSON (`{"result": {"value": 21.5}}`), not Python text;
//! * devices are polled concurrently, each on its own `pollPeriod`; a device that does not
//!   answer delays only itself;
//! * `devicesDiscoverPeriodSeconds` is read in `application` too.
//!
//! * [`proto`]: BVLC, NPDU, APDU, tags, services (pure, fuzzed).
//! * [`client`]: the UDP endpoint, invoke ids, timeouts, answering Who-Is.
//! * [`config`], [`address`]: the file's keys, addresses and patterns; [`ede`]: EDE import.
//! * [`uplink`], [`downlink`]: points, typed values, write types, reserved RPC params.

pub mod address;
pub mod client;
pub mod config;
mod connector;
pub mod downlink;
pub mod ede;
pub mod proto;
pub mod uplink;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::BacnetConfig;
pub use connector::BacnetConnector;

/// Builds BACnet connectors (`"type": "bacnet"`).
#[derive(Debug, Default, Clone)]
pub struct BacnetFactory {}

impl BacnetFactory {
    /// A factory.
    pub fn new() -> Self {
        BacnetFactory::default()
    }
}

impl ConnectorFactory for BacnetFactory {
    fn connector_type(&self) -> &'static str {
        "bacnet"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: BacnetConfig = spec.config.deserialize(&spec.file, ignored)?;
        Ok(Box::new(BacnetConnector::build(
            &spec.file, &spec.name, cfg, ignored,
        )?))
    }
}
