//! An in-process CAN network for tests and benchmarks, behaving like SocketCAN on a real
//! interface where the connector can tell: named interfaces that are up or down, classic or
//! FD-capable; every open socket receives the frames the others send (not its own), through
//! its receive filters, into a bounded queue (a full queue drops frames, as a kernel socket
//! buffer does); an interface taken down fails every open socket with "Network is down" and
//! refuses new ones until it is up again; an FD frame on a classic interface is refused. On
//! top: a bit rate (a frame occupies the bus for its transmission time, so frames are spaced
//! as on a wire) and frame loss (every n-th frame vanishes), for the tests of what the
//! connector does when frames are late or lost.
//!
//! ```
//! use tbgw_connectors::can::fake::FakeCan;
//! let net = FakeCan::new();
//! net.add_interface("vcan0", true);
//! let device = net.socket("vcan0", true).expect("up");
//! # drop(device);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};

use super::bus::{passes, BusError, BusSpec, CanBus, CanBusOpener, CanFilter, CanFrame};

/// Frames a socket holds before it drops new ones.
pub const RX_QUEUE: usize = 4096;

#[derive(Debug)]
struct SockEnd {
    id: u64,
    tx: mpsc::Sender<CanFrame>,
    filters: Vec<CanFilter>,
    fd: bool,
    dead: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

#[derive(Debug)]
struct Iface {
    up: bool,
    fd: bool,
    bitrate: Option<u32>,
    sockets: Vec<SockEnd>,
    opens: u64,
    drop_every: u64,
    sent: u64,
    lost: u64,
    overflowed: u64,
    wire: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct Net {
    ifaces: HashMap<String, Iface>,
    next_socket: u64,
}

/// The fake network; clones share it. Also the [`CanBusOpener`] the connector is given.
#[derive(Debug, Clone, Default)]
pub struct FakeCan {
    net: Arc<Mutex<Net>>,
    opens: Arc<AtomicU64>,
}

fn lock(net: &Mutex<Net>) -> MutexGuard<'_, Net> {
    // A panic while holding the lock leaves consistent data (plain fields): keep going.
    net.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeCan {
    /// An empty network.
    pub fn new() -> FakeCan {
        FakeCan::default()
    }

    /// Adds an interface, up; `fd`: CAN FD capable (MTU 72) or classic (MTU 16).
    pub fn add_interface(&self, name: &str, fd: bool) {
        lock(&self.net).ifaces.insert(
            name.to_string(),
            Iface {
                up: true,
                fd,
                bitrate: None,
                sockets: Vec::new(),
                opens: 0,
                drop_every: 0,
                sent: 0,
                lost: 0,
                overflowed: 0,
                wire: Arc::new(tokio::sync::Mutex::new(())),
            },
        );
    }

    /// The bus bit rate: each frame then occupies the bus for its transmission time (no
    /// bit rate: frames are delivered at once).
    pub fn set_bitrate(&self, name: &str, bits_per_second: u32) {
        if let Some(i) = lock(&self.net).ifaces.get_mut(name) {
            i.bitrate = (bits_per_second > 0).then_some(bits_per_second);
        }
    }

    /// `ip link set <name> up|down`: down fails every open socket and refuses new ones.
    pub fn set_up(&self, name: &str, up: bool) {
        let mut net = lock(&self.net);
        if let Some(i) = net.ifaces.get_mut(name) {
            i.up = up;
            if !up {
                for s in i.sockets.drain(..) {
                    s.dead.store(true, Ordering::SeqCst);
                    s.wake.notify_one();
                }
            }
        }
    }

    /// Loses every `n`-th frame sent on the interface (0: none).
    pub fn drop_every(&self, name: &str, n: u64) {
        if let Some(i) = lock(&self.net).ifaces.get_mut(name) {
            i.drop_every = n;
        }
    }

    /// Buses the connector opened through this opener, on any interface.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::SeqCst)
    }

    /// Sockets opened on `name` (by the opener and by [`socket`](Self::socket)).
    pub fn interface_opens(&self, name: &str) -> u64 {
        lock(&self.net).ifaces.get(name).map_or(0, |i| i.opens)
    }

    /// Frames lost on purpose ([`drop_every`](Self::drop_every)) and frames dropped because
    /// a receiver's queue was full, on `name`.
    pub fn lost(&self, name: &str) -> (u64, u64) {
        lock(&self.net)
            .ifaces
            .get(name)
            .map_or((0, 0), |i| (i.lost, i.overflowed))
    }

    /// Opens a socket on `name` for a test's device (no filters); `fd`: CAN_RAW_FD_FRAMES.
    pub fn socket(&self, name: &str, fd: bool) -> Result<FakeSocket, BusError> {
        self.open_socket(name, fd, Vec::new())
    }

    fn open_socket(
        &self,
        name: &str,
        fd: bool,
        filters: Vec<CanFilter>,
    ) -> Result<FakeSocket, BusError> {
        let mut net = lock(&self.net);
        let id = net.next_socket;
        net.next_socket += 1;
        let Some(i) = net.ifaces.get_mut(name) else {
            return Err(BusError::Open {
                channel: name.into(),
                reason: "No such device".into(),
            });
        };
        if !i.up {
            return Err(BusError::Open {
                channel: name.into(),
                reason: "Network is down".into(),
            });
        }
        i.opens += 1;
        let (tx, rx) = mpsc::channel(RX_QUEUE);
        let dead = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        i.sockets.push(SockEnd {
            id,
            tx,
            filters,
            fd,
            dead: dead.clone(),
            wake: wake.clone(),
        });
        Ok(FakeSocket {
            net: self.net.clone(),
            channel: name.to_string(),
            id,
            fd,
            rx,
            dead,
            wake,
            wire: i.wire.clone(),
        })
    }
}

impl CanBusOpener for FakeCan {
    fn open(&self, spec: &BusSpec) -> Result<Box<dyn CanBus>, BusError> {
        let s = self.open_socket(&spec.channel, spec.fd, spec.filters.clone())?;
        self.opens.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(s))
    }
}

/// One open socket of the fake network.
#[derive(Debug)]
pub struct FakeSocket {
    net: Arc<Mutex<Net>>,
    channel: String,
    id: u64,
    fd: bool,
    rx: mpsc::Receiver<CanFrame>,
    dead: Arc<AtomicBool>,
    wake: Arc<Notify>,
    wire: Arc<tokio::sync::Mutex<()>>,
}

/// Bits on the wire of a frame (header, CRC, stuffing estimate), for the bit-rate timing.
fn frame_bits(f: &CanFrame) -> u64 {
    let header: u64 = if f.extended { 67 } else { 47 };
    let bits = header + 8 * f.data.len() as u64;
    bits + bits / 5
}

impl FakeSocket {
    fn down(&self) -> BusError {
        BusError::Io {
            channel: self.channel.clone(),
            reason: "Network is down".into(),
        }
    }
}

#[async_trait]
impl CanBus for FakeSocket {
    async fn send(&mut self, frame: &CanFrame) -> Result<(), BusError> {
        let bitrate = {
            let net = lock(&self.net);
            if self.dead.load(Ordering::SeqCst) {
                return Err(self.down());
            }
            let Some(i) = net.ifaces.get(&self.channel) else {
                return Err(self.down());
            };
            if frame.fd && !(i.fd && self.fd) {
                return Err(BusError::Refused {
                    frame: frame.to_string(),
                    reason: "Invalid argument (a CAN FD frame on a classic CAN socket)".into(),
                });
            }
            i.bitrate
        };
        if let Some(bps) = bitrate {
            // The bus is one wire: a frame waits for the one before it.
            let _wire = self.wire.lock().await;
            let t = Duration::from_nanos(frame_bits(frame) * 1_000_000_000 / u64::from(bps));
            tokio::time::sleep(t).await;
        }
        let mut net = lock(&self.net);
        if self.dead.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        let Some(i) = net.ifaces.get_mut(&self.channel) else {
            return Err(self.down());
        };
        i.sent += 1;
        if i.drop_every > 0 && i.sent.is_multiple_of(i.drop_every) {
            i.lost += 1;
            return Ok(());
        }
        let mut overflowed = 0;
        // The receive timestamp, as the kernel stamps a frame when it arrives.
        let mut frame = frame.clone();
        frame.ts = tbgw::model::now_millis();
        for s in &i.sockets {
            if s.id == self.id || (frame.fd && !s.fd) || !passes(&s.filters, &frame) {
                continue;
            }
            if s.tx.try_send(frame.clone()).is_err() {
                overflowed += 1;
            }
        }
        i.overflowed += overflowed;
        Ok(())
    }

    fn try_recv(&mut self) -> Option<Result<CanFrame, BusError>> {
        if self.dead.load(Ordering::SeqCst) {
            return Some(Err(self.down()));
        }
        match self.rx.try_recv() {
            Ok(f) => Some(Ok(f)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Err(self.down())),
        }
    }

    async fn recv(&mut self) -> Result<CanFrame, BusError> {
        loop {
            if self.dead.load(Ordering::SeqCst) {
                return Err(self.down());
            }
            tokio::select! {
                f = self.rx.recv() => return f.ok_or_else(|| self.down()),
                _ = self.wake.notified() => {}
            }
        }
    }
}

impl Drop for FakeSocket {
    fn drop(&mut self) {
        let mut net = lock(&self.net);
        if let Some(i) = net.ifaces.get_mut(&self.channel) {
            i.sockets.retain(|s| s.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u32, data: &[u8]) -> CanFrame {
        CanFrame::new(id, false, false, false, data.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn frames_reach_the_other_sockets_through_their_filters() {
        let net = FakeCan::new();
        net.add_interface("vcan0", false);
        let mut a = net.socket("vcan0", false).unwrap();
        let spec = BusSpec {
            interface: "socketcan".into(),
            channel: "vcan0".into(),
            fd: false,
            filters: vec![CanFilter {
                id: 0x10,
                mask: 0x7FF,
                extended: false,
            }],
        };
        let mut b = net.open(&spec).unwrap();
        a.send(&frame(0x11, &[1])).await.unwrap();
        a.send(&frame(0x10, &[2])).await.unwrap();
        assert_eq!(b.recv().await.unwrap().data, [2]);
        b.send(&frame(0x20, &[3])).await.unwrap();
        assert_eq!(a.recv().await.unwrap().data, [3]);
        let fd = CanFrame::new(0x10, false, true, false, vec![0; 12]).unwrap();
        assert!(matches!(a.send(&fd).await, Err(BusError::Refused { .. })));
        net.set_up("vcan0", false);
        assert!(b.recv().await.unwrap_err().is_fatal());
        assert!(net.open(&spec).is_err());
        net.set_up("vcan0", true);
        assert!(net.open(&spec).is_ok());
        assert_eq!(net.opens(), 2);
    }

    #[tokio::test]
    async fn every_nth_frame_is_lost_and_the_bit_rate_spaces_frames() {
        let net = FakeCan::new();
        net.add_interface("can0", false);
        net.drop_every("can0", 3);
        net.set_bitrate("can0", 500_000);
        let mut a = net.socket("can0", false).unwrap();
        let mut b = net.socket("can0", false).unwrap();
        for n in 0..6u8 {
            a.send(&frame(1, &[n])).await.unwrap();
        }
        let mut got = Vec::new();
        while let Ok(Ok(f)) = tokio::time::timeout(Duration::from_millis(50), b.recv()).await {
            got.push(f.data[0]);
        }
        assert_eq!(got, [0, 1, 3, 4]);
        assert_eq!(net.lost("can0"), (2, 0));
    }
}
