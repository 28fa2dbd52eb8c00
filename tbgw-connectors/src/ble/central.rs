//! The seam between the connector and the radio: a BLE central ([`BleCentral`]) that scans and
//! connects, and a connected peripheral ([`BlePeripheral`]) that discovers, reads, writes and
//! notifies.
//!
//! [`BluezCentral`](super::bluez::BluezCentral) implements it with `btleplug` (BlueZ over the
//! D-Bus system bus); [`FakeCentral`](super::fake::FakeCentral) is an in-process radio for tests
//! (devices that advertise, disappear and come back, notify, answer slowly).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use uuid::Uuid;

/// A Bluetooth device address (`4C:65:A8:DF:85:C0`), compared byte-wise, so case and the
/// separator (`:` or `-`) in a config file do not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Mac, String> {
        let t = s.trim();
        let parts: Vec<&str> = t.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (six hex bytes separated by `:`)"
            ));
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(format!("{s:?} is not a MAC address: byte {p:?}"));
            }
            b[i] = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address: byte {p:?} is not hex"))?;
        }
        Ok(Mac(b))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// What one advertisement (or a change of a device's advertised properties) carried, merged
/// with what was heard of the device before.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Advertisement {
    /// The advertiser's address.
    pub address: Mac,
    /// The GAP local name.
    pub local_name: Option<String>,
    /// Received signal strength, dBm.
    pub rssi: Option<i16>,
    /// Advertised transmit power, dBm.
    pub tx_power: Option<i16>,
    /// Manufacturer data by company id (the two id bytes are not part of the value).
    pub manufacturer_data: BTreeMap<u16, Vec<u8>>,
    /// Service data by service UUID.
    pub service_data: BTreeMap<Uuid, Vec<u8>>,
    /// Advertised service UUIDs.
    pub services: Vec<Uuid>,
}

/// How to scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Only listen (no scan requests).
    Passive,
    /// Ask advertisers for their scan response too.
    Active,
}

/// A GATT characteristic found by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GattCharacteristic {
    /// Its UUID.
    pub uuid: Uuid,
    /// What it allows: `read`, `write`, `write-without-response`, `notify`, `indicate`, ...
    pub properties: Vec<String>,
}

/// A GATT service found by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GattService {
    /// Its UUID.
    pub uuid: Uuid,
    /// Its characteristics.
    pub characteristics: Vec<GattCharacteristic>,
}

/// A value notified (or indicated) by a subscribed characteristic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The characteristic.
    pub uuid: Uuid,
    /// Its new value.
    pub value: Vec<u8>,
}

/// What went wrong talking to the radio.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BleError {
    /// No adapter, or the Bluetooth daemon is not there (BlueZ not running, no system bus).
    #[error("Bluetooth adapter unavailable: {0}")]
    Adapter(String),
    /// The device was not heard, refused or timed out.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection was lost.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// The device has no such characteristic.
    #[error("characteristic {0} was not found")]
    NoCharacteristic(Uuid),
    /// The characteristic does not allow the operation.
    #[error("operation not supported: {0}")]
    NotSupported(String),
    /// A timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Anything else the stack reported.
    #[error("{0}")]
    Other(String),
}

impl BleError {
    /// Errors that concern one characteristic only; the connection stays usable (upstream
    /// logs these and goes on; any other error drops the connection).
    pub fn is_per_characteristic(&self) -> bool {
        matches!(
            self,
            BleError::NoCharacteristic(_) | BleError::NotSupported(_)
        )
    }
}

/// A running scan: advertisements in the order they are heard.
#[async_trait]
pub trait Scan: Send {
    /// The next advertisement; an error when the adapter (or the Bluetooth daemon) is gone,
    /// after which the scan is dropped and a new one started.
    async fn next(&mut self) -> Result<Advertisement, BleError>;
}

/// A BLE central: the local adapter.
#[async_trait]
pub trait BleCentral: Send + Sync + fmt::Debug + 'static {
    /// Starts scanning. `refresh`: how often to start the discovery session anew, so that a
    /// device whose advertisement and signal do not change is reported again (BlueZ signals a
    /// known device only when something about it changes).
    async fn scan(&self, mode: ScanMode, refresh: Duration) -> Result<Box<dyn Scan>, BleError>;

    /// Connects to a device that was heard while scanning, within `timeout`.
    async fn connect(
        &self,
        address: Mac,
        timeout: Duration,
    ) -> Result<Box<dyn BlePeripheral>, BleError>;
}

/// A connected peripheral.
#[async_trait]
pub trait BlePeripheral: Send + Sync {
    /// Discovers its services and characteristics.
    async fn discover(&self) -> Result<Vec<GattService>, BleError>;
    /// Reads a characteristic.
    async fn read(&self, characteristic: Uuid) -> Result<Vec<u8>, BleError>;
    /// Writes a characteristic, with or without the device's acknowledgement.
    async fn write(
        &self,
        characteristic: Uuid,
        data: &[u8],
        with_response: bool,
    ) -> Result<(), BleError>;
    /// Subscribes to a characteristic's notifications (or indications).
    async fn subscribe(&self, characteristic: Uuid) -> Result<(), BleError>;
    /// The notifications of every subscribed characteristic. The stream ends when the link is
    /// lost.
    async fn notifications(&self) -> Result<BoxStream<'static, Notification>, BleError>;
    /// Whether the link is still up.
    async fn is_connected(&self) -> bool;
    /// Closes the link.
    async fn disconnect(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_compare_without_case_or_separator() {
        let a: Mac = "4c:65:a8:df:85:c0".parse().unwrap();
        let b: Mac = "4C-65-A8-DF-85-C0".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "4C:65:A8:DF:85:C0");
        assert!("4C:65:A8:DF:85".parse::<Mac>().is_err());
        assert!("4C:65:A8:DF:85:G0".parse::<Mac>().is_err());
        assert!("4C:65:A8:DF:85:C00".parse::<Mac>().is_err());
    }
}
