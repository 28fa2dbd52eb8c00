//! [`BleCentral`] over `btleplug` (BlueZ through the D-Bus system bus; `DBUS_SYSTEM_BUS_ADDRESS`
//! picks another bus).
//!
//! A scan keeps one `btleplug` event stream and merges each event (RSSI, manufacturer data,
//! service data, services) into what is known of the device, so one advertisement costs no
//! extra D-Bus call; a device's properties are read once, when it is first heard. Every
//! [`HEALTH_PERIOD`] the adapter is asked for its info: an error means bluetoothd (or the
//! adapter) went away, and the scan ends with [`BleError::Adapter`] so the connector starts a
//! new one with backoff. A scan that hears nothing for [`QUIET_RESTART`] starts discovery
//! again, which also covers a bluetoothd that restarted between two health checks (it does not
//! resume discovery for us). Every `refresh` (half the connector's scan window) discovery is
//! stopped and started again: BlueZ signals a known device only when its data or signal
//! changes, and a new discovery session makes every device still advertising heard again, as
//! upstream's repeated scans do.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use btleplug::api::{
    Central, CentralEvent, CharPropFlags, Manager as _, Peripheral as _, ScanFilter, WriteType,
};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use uuid::Uuid;

use super::central::{
    Advertisement, BleCentral, BleError, BlePeripheral, GattCharacteristic, GattService, Mac,
    Notification, Scan, ScanMode,
};

/// How often a running scan checks that the adapter is still there.
pub const HEALTH_PERIOD: Duration = Duration::from_secs(2);
/// A scan that hears nothing this long starts discovery again.
pub const QUIET_RESTART: Duration = Duration::from_secs(5);
/// Devices a scan remembers; beyond this, the cache starts over.
const CACHE_CAP: usize = 10_000;
/// Failed adapter look-ups after which the D-Bus connection is opened anew.
const MANAGER_RETRIES: u32 = 3;

fn err(e: btleplug::Error) -> BleError {
    use btleplug::Error as E;
    match e {
        E::NotConnected => BleError::Disconnected("not connected".into()),
        E::DeviceNotFound => BleError::Connect("device not found".into()),
        E::NoSuchCharacteristic => BleError::Other("no such characteristic".into()),
        E::NotSupported(s) => BleError::NotSupported(s),
        E::TimedOut(d) => BleError::Timeout(format!("after {d:?}")),
        E::NoAdapterAvailable => BleError::Adapter("no Bluetooth adapter".into()),
        other => {
            let s = other.to_string();
            if s.contains("not permitted") || s.contains("not supported") {
                BleError::NotSupported(s)
            } else {
                BleError::Other(s)
            }
        }
    }
}

fn mac_of(a: btleplug::api::BDAddr) -> Mac {
    Mac(a.into_inner())
}

/// The btleplug central. Cheap to build: nothing is opened until the first scan.
#[derive(Debug, Default)]
pub struct BluezCentral {
    adapter_name: Option<String>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    manager: Option<Manager>,
    adapter: Option<Adapter>,
    failures: u32,
}

impl BluezCentral {
    /// A central on the first adapter, or on `adapter` (`hci0`) when given.
    pub fn new(adapter: Option<String>) -> Self {
        BluezCentral {
            adapter_name: adapter,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn adapter(&self) -> Result<Adapter, BleError> {
        let cached = self.lock().manager.clone();
        let manager = match cached {
            Some(m) => m,
            None => {
                let m = Manager::new()
                    .await
                    .map_err(|e| BleError::Adapter(format!("D-Bus system bus: {e}")))?;
                self.lock().manager = Some(m.clone());
                m
            }
        };
        let adapters = match manager.adapters().await {
            Ok(a) => a,
            Err(e) => {
                let mut st = self.lock();
                st.failures += 1;
                if st.failures >= MANAGER_RETRIES {
                    st.failures = 0;
                    st.manager = None;
                }
                return Err(BleError::Adapter(format!("BlueZ: {e}")));
            }
        };
        self.lock().failures = 0;
        let mut chosen = None;
        for a in adapters {
            match &self.adapter_name {
                None => {
                    chosen = Some(a);
                    break;
                }
                Some(want) => {
                    let info = a.adapter_info().await.unwrap_or_default();
                    if info.split_whitespace().next() == Some(want.as_str()) {
                        chosen = Some(a);
                        break;
                    }
                }
            }
        }
        chosen.ok_or_else(|| {
            BleError::Adapter(match &self.adapter_name {
                Some(n) => format!("no adapter {n}"),
                None => "no Bluetooth adapter".into(),
            })
        })
    }
}

#[async_trait]
impl BleCentral for BluezCentral {
    async fn scan(&self, mode: ScanMode, refresh: Duration) -> Result<Box<dyn Scan>, BleError> {
        let _ = mode; // BlueZ's discovery through btleplug always scans actively.
        let adapter = self.adapter().await?;
        let events = adapter
            .events()
            .await
            .map_err(|e| BleError::Adapter(e.to_string()))?;
        adapter
            .start_scan(ScanFilter::default())
            .await
            .map_err(|e| BleError::Adapter(format!("start discovery: {e}")))?;
        self.lock().adapter = Some(adapter.clone());
        let mut health = tokio::time::interval(HEALTH_PERIOD);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval_at(Instant::now() + refresh, refresh);
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Box::new(BluezScan {
            adapter,
            events,
            cache: HashMap::new(),
            health,
            refresh,
            last_heard: Instant::now(),
        }))
    }

    async fn connect(
        &self,
        address: Mac,
        timeout: Duration,
    ) -> Result<Box<dyn BlePeripheral>, BleError> {
        let cached = self.lock().adapter.clone();
        let adapter = match cached {
            Some(a) => a,
            None => self.adapter().await?,
        };
        let peripherals = adapter.peripherals().await.map_err(err)?;
        let p = peripherals
            .into_iter()
            .find(|p| mac_of(p.address()) == address)
            .ok_or_else(|| BleError::Connect(format!("{address} has not been heard")))?;
        if !p.is_connected().await.unwrap_or(false) {
            match tokio::time::timeout(timeout, p.connect()).await {
                Ok(r) => r.map_err(|e| BleError::Connect(err(e).to_string()))?,
                Err(_) => {
                    let _ = p.disconnect().await;
                    return Err(BleError::Timeout(format!("connecting to {address}")));
                }
            }
        }
        Ok(Box::new(BluezPeripheral { p, timeout }))
    }
}

struct BluezScan {
    adapter: Adapter,
    events: Pin<Box<dyn Stream<Item = CentralEvent> + Send>>,
    cache: HashMap<PeripheralId, Advertisement>,
    health: tokio::time::Interval,
    refresh: tokio::time::Interval,
    last_heard: Instant,
}

impl BluezScan {
    async fn entry(&mut self, id: &PeripheralId) -> &mut Advertisement {
        if !self.cache.contains_key(id) {
            if self.cache.len() >= CACHE_CAP {
                self.cache.clear();
            }
            let mut adv = Advertisement::default();
            if let Ok(p) = self.adapter.peripheral(id).await {
                adv.address = mac_of(p.address());
                if let Ok(Some(props)) = p.properties().await {
                    adv.local_name = props.local_name.or(props.advertisement_name);
                    adv.rssi = props.rssi;
                    adv.tx_power = props.tx_power_level;
                    adv.manufacturer_data = props.manufacturer_data.into_iter().collect();
                    adv.service_data = props.service_data.into_iter().collect();
                    adv.services = props.services;
                }
            }
            self.cache.insert(id.clone(), adv);
        }
        self.cache
            .get_mut(id)
            .expect("invariant: inserted above when missing")
    }
}

#[async_trait]
impl Scan for BluezScan {
    async fn next(&mut self) -> Result<Advertisement, BleError> {
        loop {
            tokio::select! {
                ev = self.events.next() => {
                    let Some(ev) = ev else {
                        return Err(BleError::Adapter("the BlueZ event stream ended".into()));
                    };
                    let (id, change): (PeripheralId, Box<dyn FnOnce(&mut Advertisement) + Send>) = match ev {
                        CentralEvent::DeviceDiscovered(id) | CentralEvent::DeviceUpdated(id) => {
                            self.cache.remove(&id);
                            (id, Box::new(|_| {}))
                        }
                        CentralEvent::RssiUpdate { id, rssi } => (id, Box::new(move |a| a.rssi = Some(rssi))),
                        CentralEvent::ManufacturerDataAdvertisement { id, manufacturer_data } => {
                            (id, Box::new(move |a| a.manufacturer_data = manufacturer_data.into_iter().collect()))
                        }
                        CentralEvent::ServiceDataAdvertisement { id, service_data } => {
                            (id, Box::new(move |a| a.service_data = service_data.into_iter().collect()))
                        }
                        CentralEvent::ServicesAdvertisement { id, services } => {
                            (id, Box::new(move |a| a.services = services))
                        }
                        CentralEvent::StateUpdate(s) => {
                            if matches!(s, btleplug::api::CentralState::PoweredOff) {
                                return Err(BleError::Adapter("the adapter was powered off".into()));
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    self.last_heard = Instant::now();
                    let adv = self.entry(&id).await;
                    change(adv);
                    return Ok(adv.clone());
                }
                _ = self.refresh.tick() => {
                    // A new discovery session: BlueZ reports every device heard in it again,
                    // also those whose data and signal did not change.
                    let _ = self.adapter.stop_scan().await;
                    if let Err(e) = self.adapter.start_scan(ScanFilter::default()).await {
                        return Err(BleError::Adapter(format!("restarting discovery: {e}")));
                    }
                }
                _ = self.health.tick() => {
                    if let Err(e) = self.adapter.adapter_info().await {
                        return Err(BleError::Adapter(format!("BlueZ went away: {e}")));
                    }
                    if self.last_heard.elapsed() >= QUIET_RESTART {
                        self.last_heard = Instant::now();
                        // Already discovering answers InProgress; a restarted bluetoothd starts.
                        let _ = self.adapter.start_scan(ScanFilter::default()).await;
                    }
                }
            }
        }
    }
}

struct BluezPeripheral {
    p: Peripheral,
    timeout: Duration,
}

impl BluezPeripheral {
    fn characteristic(&self, uuid: Uuid) -> Result<btleplug::api::Characteristic, BleError> {
        self.p
            .characteristics()
            .into_iter()
            .find(|c| c.uuid == uuid)
            .ok_or(BleError::NoCharacteristic(uuid))
    }
}

fn props(f: CharPropFlags) -> Vec<String> {
    [
        (CharPropFlags::BROADCAST, "broadcast"),
        (CharPropFlags::READ, "read"),
        (
            CharPropFlags::WRITE_WITHOUT_RESPONSE,
            "write-without-response",
        ),
        (CharPropFlags::WRITE, "write"),
        (CharPropFlags::NOTIFY, "notify"),
        (CharPropFlags::INDICATE, "indicate"),
        (
            CharPropFlags::AUTHENTICATED_SIGNED_WRITES,
            "authenticated-signed-writes",
        ),
    ]
    .into_iter()
    .filter(|(b, _)| f.contains(*b))
    .map(|(_, s)| s.to_string())
    .collect()
}

async fn timed<T>(
    d: Duration,
    what: &str,
    f: impl std::future::Future<Output = btleplug::Result<T>>,
) -> Result<T, BleError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(BleError::Timeout(what.to_string())),
    }
}

#[async_trait]
impl BlePeripheral for BluezPeripheral {
    async fn discover(&self) -> Result<Vec<GattService>, BleError> {
        timed(
            self.timeout,
            "service discovery",
            self.p.discover_services(),
        )
        .await?;
        Ok(self
            .p
            .services()
            .into_iter()
            .map(|s| GattService {
                uuid: s.uuid,
                characteristics: s
                    .characteristics
                    .into_iter()
                    .map(|c| GattCharacteristic {
                        uuid: c.uuid,
                        properties: props(c.properties),
                    })
                    .collect(),
            })
            .collect())
    }

    async fn read(&self, characteristic: Uuid) -> Result<Vec<u8>, BleError> {
        let c = self.characteristic(characteristic)?;
        timed(self.timeout, "read", self.p.read(&c)).await
    }

    async fn write(
        &self,
        characteristic: Uuid,
        data: &[u8],
        with_response: bool,
    ) -> Result<(), BleError> {
        let c = self.characteristic(characteristic)?;
        let kind = if with_response {
            WriteType::WithResponse
        } else {
            WriteType::WithoutResponse
        };
        timed(self.timeout, "write", self.p.write(&c, data, kind)).await
    }

    async fn subscribe(&self, characteristic: Uuid) -> Result<(), BleError> {
        let c = self.characteristic(characteristic)?;
        timed(self.timeout, "subscribe", self.p.subscribe(&c)).await
    }

    async fn notifications(&self) -> Result<BoxStream<'static, Notification>, BleError> {
        let s = self.p.notifications().await.map_err(err)?;
        Ok(s.map(|n| Notification {
            uuid: n.uuid,
            value: n.value,
        })
        .boxed())
    }

    async fn is_connected(&self) -> bool {
        self.p.is_connected().await.unwrap_or(false)
    }

    async fn disconnect(&self) {
        let _ = self.p.disconnect().await;
    }
}
