//! An in-process radio for tests: [`FakeCentral`] implements [`BleCentral`] with devices that
//! advertise, disappear and come back, hold GATT characteristics that can be read (with a
//! delay), written and notified, and an adapter that can be switched off.
//!
//! It behaves like BlueZ where the connector can tell: a device must have been heard before it
//! can be connected, a device that goes away ends its connections (reads fail, the notification
//! stream ends), an adapter that goes away ends every scan with [`BleError::Adapter`] and
//! refuses scans and connections until it is back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::central::{
    Advertisement, BleCentral, BleError, BlePeripheral, GattCharacteristic, GattService, Mac,
    Notification, Scan, ScanMode,
};

/// Advertisements a scan buffers; beyond this they are lost, as on the air.
const SCAN_BUFFER: usize = 65_536;

/// One characteristic of a fake device.
#[derive(Debug, Clone, Default)]
pub struct FakeCharacteristic {
    /// Its service.
    pub service: Uuid,
    /// Its value (what a read returns).
    pub value: Vec<u8>,
    /// Its properties (`read`, `write`, `notify`...).
    pub properties: Vec<String>,
    /// Every value written, in order.
    pub written: Vec<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Device {
    adv: Advertisement,
    present: bool,
    heard: bool,
    chars: BTreeMap<Uuid, FakeCharacteristic>,
    read_delay: Duration,
    refuse_connect: bool,
    connects: usize,
    links: HashMap<u64, Link>,
}

#[derive(Debug, Default)]
struct Link {
    subscribed: HashSet<Uuid>,
    notify: Vec<mpsc::UnboundedSender<Notification>>,
}

#[derive(Debug, Default)]
struct State {
    adapter_up: bool,
    devices: HashMap<Mac, Device>,
    scans: Vec<mpsc::Sender<Advertisement>>,
    scan_modes: Vec<ScanMode>,
    next_link: u64,
}

/// The fake radio. Clone it to keep a handle for the test while the connector owns another.
#[derive(Debug, Clone)]
pub struct FakeCentral {
    st: Arc<Mutex<State>>,
}

impl Default for FakeCentral {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCentral {
    /// A radio with its adapter up and no devices.
    pub fn new() -> Self {
        FakeCentral {
            st: Arc::new(Mutex::new(State {
                adapter_up: true,
                ..State::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) a device, present but not yet heard.
    pub fn add_device(&self, mac: Mac, local_name: Option<&str>) {
        let mut st = self.lock();
        st.devices.insert(
            mac,
            Device {
                adv: Advertisement {
                    address: mac,
                    local_name: local_name.map(str::to_string),
                    ..Advertisement::default()
                },
                present: true,
                ..Device::default()
            },
        );
    }

    /// Adds a characteristic to a device.
    pub fn add_characteristic(
        &self,
        mac: Mac,
        service: Uuid,
        uuid: Uuid,
        properties: &[&str],
        value: &[u8],
    ) {
        let mut st = self.lock();
        if let Some(d) = st.devices.get_mut(&mac) {
            d.chars.insert(
                uuid,
                FakeCharacteristic {
                    service,
                    value: value.to_vec(),
                    properties: properties.iter().map(|s| s.to_string()).collect(),
                    written: Vec::new(),
                },
            );
        }
    }

    /// The device advertises: `change` edits its advertisement, which then reaches every scan
    /// (when the device is present and the adapter up).
    pub fn advertise(&self, mac: Mac, change: impl FnOnce(&mut Advertisement)) {
        let mut st = self.lock();
        let up = st.adapter_up;
        let Some(d) = st.devices.get_mut(&mac) else {
            return;
        };
        change(&mut d.adv);
        d.adv.address = mac;
        if !d.present || !up {
            return;
        }
        d.heard = true;
        let adv = d.adv.clone();
        st.scans.retain(|tx| !tx.is_closed());
        for tx in &st.scans {
            let _ = tx.try_send(adv.clone());
        }
    }

    /// The device goes out of range (`false`: its connections end) or comes back.
    pub fn set_present(&self, mac: Mac, present: bool) {
        let mut st = self.lock();
        if let Some(d) = st.devices.get_mut(&mac) {
            d.present = present;
            if !present {
                d.links.clear();
            }
        }
    }

    /// The device refuses (or accepts again) connections while still advertising.
    pub fn set_refuse_connect(&self, mac: Mac, refuse: bool) {
        if let Some(d) = self.lock().devices.get_mut(&mac) {
            d.refuse_connect = refuse;
        }
    }

    /// Switches the adapter (the Bluetooth daemon) off or on. Off ends every scan and
    /// connection.
    pub fn set_adapter(&self, up: bool) {
        let mut st = self.lock();
        st.adapter_up = up;
        if !up {
            st.scans.clear();
            for d in st.devices.values_mut() {
                d.links.clear();
            }
        }
    }

    /// Reads of this device take `delay`.
    pub fn set_read_delay(&self, mac: Mac, delay: Duration) {
        if let Some(d) = self.lock().devices.get_mut(&mac) {
            d.read_delay = delay;
        }
    }

    /// Sets a characteristic's value without notifying.
    pub fn set_value(&self, mac: Mac, uuid: Uuid, value: &[u8]) {
        if let Some(c) = self
            .lock()
            .devices
            .get_mut(&mac)
            .and_then(|d| d.chars.get_mut(&uuid))
        {
            c.value = value.to_vec();
        }
    }

    /// Sets a characteristic's value and notifies every link subscribed to it.
    pub fn notify(&self, mac: Mac, uuid: Uuid, value: &[u8]) {
        let mut st = self.lock();
        let Some(d) = st.devices.get_mut(&mac) else {
            return;
        };
        if let Some(c) = d.chars.get_mut(&uuid) {
            c.value = value.to_vec();
        }
        for l in d.links.values_mut() {
            if l.subscribed.contains(&uuid) {
                l.notify.retain(|tx| {
                    tx.send(Notification {
                        uuid,
                        value: value.to_vec(),
                    })
                    .is_ok()
                });
            }
        }
    }

    /// Every value written to a characteristic.
    pub fn written(&self, mac: Mac, uuid: Uuid) -> Vec<Vec<u8>> {
        self.lock()
            .devices
            .get(&mac)
            .and_then(|d| d.chars.get(&uuid))
            .map(|c| c.written.clone())
            .unwrap_or_default()
    }

    /// Successful connections to a device so far.
    pub fn connects(&self, mac: Mac) -> usize {
        self.lock().devices.get(&mac).map_or(0, |d| d.connects)
    }

    /// Whether a device has a live connection.
    pub fn is_connected(&self, mac: Mac) -> bool {
        self.lock()
            .devices
            .get(&mac)
            .is_some_and(|d| !d.links.is_empty())
    }

    /// Links subscribed to a characteristic.
    pub fn subscribers(&self, mac: Mac, uuid: Uuid) -> usize {
        self.lock().devices.get(&mac).map_or(0, |d| {
            d.links
                .values()
                .filter(|l| l.subscribed.contains(&uuid))
                .count()
        })
    }

    /// Scans started so far, with their modes.
    pub fn scan_modes(&self) -> Vec<ScanMode> {
        self.lock().scan_modes.clone()
    }

    /// Running scans.
    pub fn scans(&self) -> usize {
        let mut st = self.lock();
        st.scans.retain(|tx| !tx.is_closed());
        st.scans.len()
    }
}

struct FakeScan {
    rx: mpsc::Receiver<Advertisement>,
}

#[async_trait]
impl Scan for FakeScan {
    async fn next(&mut self) -> Result<Advertisement, BleError> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| BleError::Adapter("the adapter went away".into()))
    }
}

#[async_trait]
impl BleCentral for FakeCentral {
    async fn scan(&self, mode: ScanMode, _refresh: Duration) -> Result<Box<dyn Scan>, BleError> {
        let mut st = self.lock();
        if !st.adapter_up {
            return Err(BleError::Adapter("no adapter (fake switched off)".into()));
        }
        let (tx, rx) = mpsc::channel(SCAN_BUFFER);
        st.scans.push(tx);
        st.scan_modes.push(mode);
        Ok(Box::new(FakeScan { rx }))
    }

    async fn connect(
        &self,
        address: Mac,
        _timeout: Duration,
    ) -> Result<Box<dyn BlePeripheral>, BleError> {
        let mut st = self.lock();
        if !st.adapter_up {
            return Err(BleError::Adapter("no adapter (fake switched off)".into()));
        }
        st.next_link += 1;
        let id = st.next_link;
        let Some(d) = st.devices.get_mut(&address) else {
            return Err(BleError::Connect(format!("{address} has not been heard")));
        };
        if !d.heard {
            return Err(BleError::Connect(format!("{address} has not been heard")));
        }
        if !d.present || d.refuse_connect {
            return Err(BleError::Connect(format!("{address} does not answer")));
        }
        d.connects += 1;
        d.links.insert(id, Link::default());
        Ok(Box::new(FakePeripheral {
            central: self.clone(),
            mac: address,
            link: id,
        }))
    }
}

struct FakePeripheral {
    central: FakeCentral,
    mac: Mac,
    link: u64,
}

impl FakePeripheral {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Device, &mut Link) -> Result<T, BleError>,
    ) -> Result<T, BleError> {
        let mut st = self.central.lock();
        let Some(d) = st.devices.get_mut(&self.mac) else {
            return Err(BleError::Disconnected("device removed".into()));
        };
        let Some(mut link) = d.links.remove(&self.link) else {
            return Err(BleError::Disconnected(format!("{} went away", self.mac)));
        };
        let r = f(d, &mut link);
        d.links.insert(self.link, link);
        r
    }
}

#[async_trait]
impl BlePeripheral for FakePeripheral {
    async fn discover(&self) -> Result<Vec<GattService>, BleError> {
        self.with(|d, _| {
            let mut services: BTreeMap<Uuid, Vec<GattCharacteristic>> = BTreeMap::new();
            for (u, c) in &d.chars {
                services
                    .entry(c.service)
                    .or_default()
                    .push(GattCharacteristic {
                        uuid: *u,
                        properties: c.properties.clone(),
                    });
            }
            Ok(services
                .into_iter()
                .map(|(uuid, characteristics)| GattService {
                    uuid,
                    characteristics,
                })
                .collect())
        })
    }

    async fn read(&self, characteristic: Uuid) -> Result<Vec<u8>, BleError> {
        let delay = self.with(|d, _| {
            let c = d
                .chars
                .get(&characteristic)
                .ok_or(BleError::NoCharacteristic(characteristic))?;
            if !c.properties.iter().any(|p| p == "read") {
                return Err(BleError::NotSupported(format!(
                    "{characteristic} cannot be read"
                )));
            }
            Ok(d.read_delay)
        })?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.with(|d, _| {
            d.chars
                .get(&characteristic)
                .map(|c| c.value.clone())
                .ok_or(BleError::NoCharacteristic(characteristic))
        })
    }

    async fn write(
        &self,
        characteristic: Uuid,
        data: &[u8],
        _with_response: bool,
    ) -> Result<(), BleError> {
        self.with(|d, _| {
            let c = d
                .chars
                .get_mut(&characteristic)
                .ok_or(BleError::NoCharacteristic(characteristic))?;
            if !c
                .properties
                .iter()
                .any(|p| p == "write" || p == "write-without-response")
            {
                return Err(BleError::NotSupported(format!(
                    "{characteristic} cannot be written"
                )));
            }
            c.value = data.to_vec();
            c.written.push(data.to_vec());
            Ok(())
        })
    }

    async fn subscribe(&self, characteristic: Uuid) -> Result<(), BleError> {
        self.with(|d, l| {
            let c = d
                .chars
                .get(&characteristic)
                .ok_or(BleError::NoCharacteristic(characteristic))?;
            if !c
                .properties
                .iter()
                .any(|p| p == "notify" || p == "indicate")
            {
                return Err(BleError::NotSupported(format!(
                    "{characteristic} does not notify"
                )));
            }
            l.subscribed.insert(characteristic);
            Ok(())
        })
    }

    async fn notifications(&self) -> Result<BoxStream<'static, Notification>, BleError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.with(|_, l| {
            l.notify.push(tx);
            Ok(())
        })?;
        Ok(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|n| (n, rx)) },
        )
        .boxed())
    }

    async fn is_connected(&self) -> bool {
        self.with(|_, _| Ok(())).is_ok()
    }

    async fn disconnect(&self) {
        let mut st = self.central.lock();
        if let Some(d) = st.devices.get_mut(&self.mac) {
            d.links.remove(&self.link);
        }
    }
}
