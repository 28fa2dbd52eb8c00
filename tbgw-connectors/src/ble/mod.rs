//! The BLE connector: the gateway is a Bluetooth Low Energy central. It reads and subscribes to
//! GATT characteristics of devices it connects to, reports what beacons advertise, and writes
//! characteristics for RPCs and shared-attribute updates.
//!
//! Configured by upstream's `ble.json` (3.8.5): `devices[]` by `MACAddress` with `telemetry`
//! and `attributes` (`method` `read` polled every `pollPeriod`, `notify` subscribed, or
//! `dataSourceType` `advertisement`), `valueExpression` slices, `attributeUpdates`,
//! `serverSideRpc` (`read`, `write`, `scan`), reserved `get`/`set` and upstream's reconnect
//! settings (`timeout`, `connectRetry`, `connectRetryInSeconds`, `waitAfterConnectRetries`).
//! See `docs/connectors/ble.md`.
//!
//! Beyond upstream: advertisement service data, local name, RSSI and transmit power as values
//! (`advertisementField`; upstream reads the first manufacturer data only, its issue #1853),
//! devices matched by `localName` or `serviceUUID` as well as by MAC (with `${MACAddress}` and
//! `${localName}` in the name of advertisement-only devices), and advertisement mode that
//! keeps up with many beacons (#1403): the scan stores each advertisement as its device's
//! latest and a separate task decodes and reports every `pollPeriod`. A device no longer heard
//! gets no data (upstream re-sends its last scan with fresh timestamps), `[i]` works in
//! advertisement mode (upstream fails with `str += int`), and a restarted bluetoothd is picked
//! up again.
//!
//! The radio is behind a small seam ([`central::BleCentral`]): [`bluez::BluezCentral`] uses
//! `btleplug` (BlueZ over D-Bus; Linux only here), [`fake::FakeCentral`] is the in-process
//! radio the tests use. This machine has no Bluetooth, so GATT is tested against the fake
//! only; advertisement scanning is also tested end to end against a mocked BlueZ D-Bus API
//! (python-dbusmock).
//!
//! * [`config`]: the file's keys.
//! * [`central`]: the seam.
//! * [`bluez`], [`fake`]: its two implementations.
//! * [`uplink`]: `valueExpression` decoding.
//! * [`downlink`]: what RPCs and attribute updates write, and how answers are read back.

pub mod bluez;
pub mod central;
pub mod config;
mod connector;
pub mod downlink;
pub mod fake;
pub mod uplink;

use std::sync::Arc;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use central::BleCentral;
pub use config::BleConnectorConfig;
pub use connector::BleConnector;

/// Builds BLE connectors (`"type": "ble"`).
#[derive(Debug, Default, Clone)]
pub struct BleFactory {
    central: Option<Arc<dyn BleCentral>>,
}

impl BleFactory {
    /// A factory whose connectors use BlueZ (btleplug).
    pub fn new() -> Self {
        BleFactory::default()
    }

    /// A factory whose connectors use `central` (a test radio, another stack).
    pub fn with_central(central: Arc<dyn BleCentral>) -> Self {
        BleFactory {
            central: Some(central),
        }
    }
}

impl ConnectorFactory for BleFactory {
    fn connector_type(&self) -> &'static str {
        "ble"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: BleConnectorConfig = spec.config.deserialize(&spec.file, ignored)?;
        let central = match &self.central {
            Some(c) => c.clone(),
            None => Arc::new(bluez::BluezCentral::new(cfg.adapter.clone())) as Arc<dyn BleCentral>,
        };
        Ok(Box::new(BleConnector::build(
            &spec.file, &spec.name, cfg, central, ignored,
        )?))
    }
}

/// The advertisement path on its own (matching, then `valueExpression` decoding), for the fuzz
/// target and the benchmark.
#[derive(Debug)]
pub struct AdvertisementDecoder(BleConnector);

impl AdvertisementDecoder {
    /// A decoder for the advertisement devices of a `ble.json`.
    pub fn new(config: BleConnectorConfig) -> Result<Self, ConfigError> {
        let mut ignored = Vec::new();
        BleConnector::build(
            std::path::Path::new("ble.json"),
            "ble",
            config,
            Arc::new(fake::FakeCentral::new()),
            &mut ignored,
        )
        .map(AdvertisementDecoder)
    }

    /// What each configured device matching `adv` would report (conversion errors are
    /// counted in the returned number).
    pub fn decode(&self, adv: &central::Advertisement) -> (Vec<tbgw::model::DeviceData>, usize) {
        self.0.decode(adv)
    }
}
