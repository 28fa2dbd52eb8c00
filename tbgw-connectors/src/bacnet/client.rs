//! The BACnet/IP transport: one UDP socket for the gateway's own device, shared by every
//! device task. It sends confirmed requests with invoke ids, a timeout and resends, and
//! matches the answers; it answers Who-Is with the gateway's I-Am and ReadProperty of the
//! gateway's device object, acknowledges confirmed COV notifications, and hands I-Ams and
//! COV notifications to the connector.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::proto::frame::{self, bvlc, Apdu, Remote};
use super::proto::ids;
use super::proto::services::{self, confirmed, unconfirmed, CovNotification, IAm, PropRef};
use super::proto::{AppValue, DecodeError, ObjectId};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 1600;

/// Largest segmented answer reassembled; a device sending more is aborted.
pub const MAX_REASSEMBLED: usize = 1 << 20;

/// Segments accepted, as sent in requests (7: more than 64; [`MAX_REASSEMBLED`] caps them).
const MAX_SEGMENTS_CODE: u8 = 7;

/// A segmented ComplexACK being received.
#[derive(Debug)]
struct Reassembly {
    /// The sequence number expected next.
    next: u8,
    /// The first sequence number of the current window.
    window_start: u8,
    /// The window size (the server's proposal, accepted).
    window: u8,
    /// The service acknowledged.
    service: u8,
    /// The service data so far.
    data: Vec<u8>,
}

/// Where a device is: its IP endpoint (or its router's) and, behind a router, `net:mac`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The UDP endpoint the datagrams go to.
    pub addr: SocketAddr,
    /// The remote station behind a router.
    pub remote: Option<Remote>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.remote {
            None => write!(f, "{}", self.addr),
            Some(r) => {
                write!(f, "{}:", r.net)?;
                if r.addr.len() == 6 {
                    let a = &r.addr;
                    write!(
                        f,
                        "{}.{}.{}.{}:{}",
                        a[0],
                        a[1],
                        a[2],
                        a[3],
                        u16::from_be_bytes([a[4], a[5]])
                    )?;
                } else if r.addr.len() == 1 {
                    write!(f, "{}", r.addr[0])?;
                } else {
                    write!(f, "0x")?;
                    for b in &r.addr {
                        write!(f, "{b:02x}")?;
                    }
                }
                write!(f, "@{}", self.addr)
            }
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// No answer after every resend.
    #[error("no answer from {0} in time")]
    Timeout(String),
    /// The device answered with a BACnet error.
    #[error("BACnet error {}", services::error_text(*.0, *.1))]
    Error(u32, u32),
    /// The device rejected the request.
    #[error("rejected (reason {0})")]
    Reject(u8),
    /// The device aborted the request.
    #[error("aborted (reason {0})")]
    Abort(u8),
    /// The answer could not be decoded.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(String),
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        ClientError::Malformed(e.0)
    }
}

impl ClientError {
    /// True when the device did not answer.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout(_))
    }
}

/// What the receiver hands to the connector.
#[derive(Debug, Clone)]
pub enum Event {
    /// A device announced itself.
    IAm(Peer, IAm),
    /// A COV notification arrived.
    Cov(Peer, CovNotification),
}

/// The gateway's own device object.
#[derive(Debug, Clone)]
pub struct LocalDevice {
    /// Its instance.
    pub instance: u32,
    /// Its name.
    pub name: String,
    /// Max APDU accepted.
    pub max_apdu: u16,
    /// Segmentation supported (enumeration).
    pub segmentation: u32,
    /// Vendor id.
    pub vendor: u32,
}

type Pending = HashMap<(SocketAddr, u8), oneshot::Sender<Apdu>>;

/// What one segment of a ComplexACK leads to.
#[derive(Debug, PartialEq)]
enum SegmentStep {
    /// Nothing to send yet.
    Wait,
    /// Send this SegmentACK.
    Ack(Apdu),
    /// Send this SegmentACK and deliver the whole answer.
    Done(Apdu, Apdu),
    /// The answer is too large: abort it.
    TooLarge,
}

/// The shared endpoint.
#[derive(Debug)]
pub struct Endpoint {
    sock: UdpSocket,
    pending: Mutex<Pending>,
    segments: Mutex<HashMap<(SocketAddr, u8), Reassembly>>,
    next_invoke: AtomicU8,
    local: LocalDevice,
    timeout: Duration,
    retries: u32,
    /// Datagrams that could not be decoded.
    pub malformed: std::sync::atomic::AtomicU64,
}

impl Endpoint {
    /// Binds the gateway's device to `bind`.
    pub async fn bind(
        bind: SocketAddr,
        local: LocalDevice,
        timeout: Duration,
        retries: u32,
    ) -> std::io::Result<Arc<Endpoint>> {
        let sock = UdpSocket::bind(bind).await?;
        sock.set_broadcast(true)?;
        Ok(Arc::new(Endpoint {
            sock,
            pending: Mutex::new(HashMap::new()),
            segments: Mutex::new(HashMap::new()),
            next_invoke: AtomicU8::new(0),
            local,
            timeout,
            retries,
            malformed: Default::default(),
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// The gateway's I-Am.
    pub fn i_am(&self) -> IAm {
        IAm {
            device: ObjectId::new(ids::DEVICE, self.local.instance),
            max_apdu: u32::from(self.local.max_apdu),
            segmentation: self.local.segmentation,
            vendor: self.local.vendor,
        }
    }

    /// Sends raw bytes.
    pub async fn send_raw(&self, to: SocketAddr, b: &[u8]) -> Result<(), ClientError> {
        self.sock
            .send_to(b, to)
            .await
            .map(|_| ())
            .map_err(|e| ClientError::Io(e.to_string()))
    }

    /// Sends an unconfirmed request.
    pub async fn send_unconfirmed(
        &self,
        to: SocketAddr,
        function: u8,
        dest: Option<&Remote>,
        service: u8,
        data: Vec<u8>,
    ) -> Result<(), ClientError> {
        let d = frame::encode(function, dest, false, &Apdu::Unconfirmed { service, data });
        self.send_raw(to, &d).await
    }

    /// Sends a Who-Is to `to` (unicast, or a broadcast address), optionally to `net` behind
    /// routers and for an instance range.
    pub async fn who_is(
        &self,
        to: SocketAddr,
        broadcast: bool,
        dest: Option<&Remote>,
        range: Option<(u32, u32)>,
    ) -> Result<(), ClientError> {
        let f = if broadcast {
            bvlc::BROADCAST
        } else {
            bvlc::UNICAST
        };
        self.send_unconfirmed(to, f, dest, unconfirmed::WHO_IS, services::who_is(range))
            .await
    }

    fn alloc(&self, addr: SocketAddr) -> Option<(u8, oneshot::Receiver<Apdu>)> {
        let mut p = self.pending.lock().ok()?;
        for _ in 0..256 {
            let id = self.next_invoke.fetch_add(1, Ordering::Relaxed);
            if let std::collections::hash_map::Entry::Vacant(e) = p.entry((addr, id)) {
                let (tx, rx) = oneshot::channel();
                e.insert(tx);
                return Some((id, rx));
            }
        }
        None
    }

    fn release(&self, addr: SocketAddr, id: u8) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&(addr, id));
        }
        if let Ok(mut s) = self.segments.lock() {
            s.remove(&(addr, id));
        }
    }

    /// True when the device segments its answers to us (we accept segmented answers).
    fn accepts_segments(&self) -> bool {
        matches!(self.local.segmentation, 0 | 2)
    }

    /// One segment of a ComplexACK to the request `key`: reassembles in order, asks for a
    /// resend (negative SegmentACK) when one is missed, acknowledges the first segment,
    /// each full window and the last one.
    fn segment(&self, key: (SocketAddr, u8), a: Apdu) -> SegmentStep {
        let Apdu::ComplexAck {
            more,
            invoke_id,
            sequence,
            window,
            service,
            data,
            ..
        } = a
        else {
            return SegmentStep::Wait;
        };
        let Ok(mut all) = self.segments.lock() else {
            return SegmentStep::Wait;
        };
        let ack = |negative, sequence, window| Apdu::SegmentAck {
            negative,
            server: false,
            invoke_id,
            sequence,
            window,
        };
        let window = window.clamp(1, 127);
        // The first segment (re)starts the answer: also after a resent request, or when the
        // device did not get our acknowledgement of it.
        if sequence == 0 {
            all.insert(
                key,
                Reassembly {
                    next: 0,
                    window_start: 0,
                    window,
                    service,
                    data: Vec::new(),
                },
            );
        }
        let Some(st) = all.get_mut(&key) else {
            // A segment of an answer whose first segment we missed: ask from the start.
            return SegmentStep::Ack(ack(true, 0, window));
        };
        if sequence != st.next {
            return SegmentStep::Ack(ack(true, st.next.wrapping_sub(1), st.window));
        }
        if st.data.len() + data.len() > MAX_REASSEMBLED {
            all.remove(&key);
            return SegmentStep::TooLarge;
        }
        st.data.extend_from_slice(&data);
        st.next = sequence.wrapping_add(1);
        if !more {
            let Some(st) = all.remove(&key) else {
                return SegmentStep::Wait;
            };
            let whole = Apdu::ComplexAck {
                segmented: false,
                more: false,
                invoke_id,
                sequence: 0,
                window: 0,
                service: st.service,
                data: st.data,
            };
            return SegmentStep::Done(ack(false, sequence, st.window), whole);
        }
        // The first segment is acknowledged alone (it fixes the window); then each window.
        if sequence == 0 || sequence.wrapping_sub(st.window_start).wrapping_add(1) >= st.window {
            st.window_start = sequence.wrapping_add(1);
            return SegmentStep::Ack(ack(false, sequence, st.window));
        }
        SegmentStep::Wait
    }

    /// A confirmed request; the answer's APDU (SimpleAck or ComplexAck), or the error.
    pub async fn request(
        &self,
        peer: &Peer,
        service: u8,
        data: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Apdu, ClientError> {
        let (id, mut rx) = self
            .alloc(peer.addr)
            .ok_or_else(|| ClientError::Io(format!("256 requests to {peer} outstanding")))?;
        let apdu = Apdu::Confirmed {
            segmented: false,
            more: false,
            segmented_accepted: self.accepts_segments(),
            max_segments: if self.accepts_segments() {
                MAX_SEGMENTS_CODE
            } else {
                0
            },
            max_apdu: frame::max_apdu_code(self.local.max_apdu),
            invoke_id: id,
            service,
            data,
        };
        let d = frame::encode(bvlc::UNICAST, peer.remote.as_ref(), true, &apdu);
        let wait = timeout.unwrap_or(self.timeout);
        let mut result = Err(ClientError::Timeout(peer.to_string()));
        for _ in 0..=self.retries {
            if let Err(e) = self.send_raw(peer.addr, &d).await {
                result = Err(e);
                break;
            }
            match tokio::time::timeout(wait, &mut rx).await {
                Ok(Ok(a)) => {
                    result = match a {
                        Apdu::Error { class, code, .. } => Err(ClientError::Error(class, code)),
                        Apdu::Reject { reason, .. } => Err(ClientError::Reject(reason)),
                        Apdu::Abort { reason, .. } => Err(ClientError::Abort(reason)),
                        Apdu::ComplexAck {
                            segmented: true, ..
                        } => Err(ClientError::Abort(4)),
                        a => Ok(a),
                    };
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => continue,
            }
        }
        self.release(peer.addr, id);
        result
    }

    /// ReadProperty.
    pub async fn read_property(
        &self,
        peer: &Peer,
        o: ObjectId,
        p: PropRef,
        timeout: Option<Duration>,
    ) -> Result<AppValue, ClientError> {
        let a = self
            .request(
                peer,
                confirmed::READ_PROPERTY,
                services::read_property(o, p),
                timeout,
            )
            .await?;
        match a {
            Apdu::ComplexAck { data, .. } => Ok(services::decode_read_property_ack(&data)?.2),
            other => Err(ClientError::Malformed(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// ReadPropertyMultiple.
    pub async fn read_multiple(
        &self,
        peer: &Peer,
        items: &[(ObjectId, Vec<PropRef>)],
    ) -> Result<Vec<(ObjectId, PropRef, services::PropResult)>, ClientError> {
        let a = self
            .request(
                peer,
                confirmed::READ_PROPERTY_MULTIPLE,
                services::read_property_multiple(items),
                None,
            )
            .await?;
        match a {
            Apdu::ComplexAck { data, .. } => Ok(services::decode_rpm_ack(&data)?),
            other => Err(ClientError::Malformed(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// WriteProperty.
    pub async fn write_property(
        &self,
        peer: &Peer,
        o: ObjectId,
        p: PropRef,
        v: &AppValue,
        priority: Option<u8>,
        timeout: Option<Duration>,
    ) -> Result<(), ClientError> {
        self.request(
            peer,
            confirmed::WRITE_PROPERTY,
            services::write_property(o, p, v, priority),
            timeout,
        )
        .await
        .map(|_| ())
    }

    /// SubscribeCOV.
    pub async fn subscribe_cov(
        &self,
        peer: &Peer,
        process: u32,
        o: ObjectId,
        confirmed_notifications: bool,
        lifetime: u32,
    ) -> Result<(), ClientError> {
        self.request(
            peer,
            confirmed::SUBSCRIBE_COV,
            services::subscribe_cov(process, o, confirmed_notifications, Some(lifetime)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Reads datagrams until the socket fails; sends I-Ams and COV notifications to
    /// `events` (dropping them when it is full: they are sent again).
    pub async fn receive(self: Arc<Self>, events: mpsc::Sender<Event>) -> std::io::Result<()> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, from) = self.sock.recv_from(&mut buf).await?;
            let Some(d) = buf.get(..n) else { continue };
            if let Err(e) = self.handle(d, from, &events).await {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, error = %e, "Undecodable BACnet datagram ignored.");
            }
        }
    }

    async fn handle(
        &self,
        d: &[u8],
        from: SocketAddr,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), DecodeError> {
        let p = frame::decode(d)?;
        let Some(apdu) = p.apdu else { return Ok(()) };
        let source = p.npdu.and_then(|n| n.source);
        let udp = match p.forwarded_from {
            Some(f) => SocketAddr::V4(f),
            None => from,
        };
        let peer = Peer {
            addr: udp,
            remote: source,
        };
        if let Some(id) = apdu.answer_invoke_id() {
            if matches!(
                apdu,
                Apdu::ComplexAck {
                    segmented: true,
                    ..
                }
            ) {
                let key = match self.pending.lock() {
                    Ok(m) if m.contains_key(&(from, id)) => (from, id),
                    Ok(m) if m.contains_key(&(udp, id)) => (udp, id),
                    _ => return Ok(()),
                };
                let (ack, whole) = match self.segment(key, apdu) {
                    SegmentStep::Wait => return Ok(()),
                    SegmentStep::Ack(a) => (a, None),
                    SegmentStep::Done(a, whole) => (a, Some(whole)),
                    SegmentStep::TooLarge => (
                        // Abort, buffer overflow.
                        Apdu::Abort {
                            server: false,
                            invoke_id: id,
                            reason: 1,
                        },
                        Some(Apdu::Abort {
                            server: false,
                            invoke_id: id,
                            reason: 1,
                        }),
                    ),
                };
                let out = frame::encode(bvlc::UNICAST, peer.remote.as_ref(), false, &ack);
                let _ = self.send_raw(from, &out).await;
                let Some(apdu) = whole else { return Ok(()) };
                let tx = self.pending.lock().ok().and_then(|mut m| m.remove(&key));
                if let Some(tx) = tx {
                    let _ = tx.send(apdu);
                }
                return Ok(());
            }
            let tx = self
                .pending
                .lock()
                .ok()
                .and_then(|mut m| m.remove(&(from, id)).or_else(|| m.remove(&(udp, id))));
            if let Some(tx) = tx {
                let _ = tx.send(apdu);
            }
            return Ok(());
        }
        match apdu {
            Apdu::Unconfirmed { service, data } => match service {
                unconfirmed::WHO_IS => {
                    let range = services::decode_who_is(&data)?;
                    let me = self.local.instance;
                    if range.is_none_or(|(lo, hi)| lo <= me && me <= hi) {
                        let _ = self
                            .send_unconfirmed(
                                from,
                                bvlc::UNICAST,
                                peer.remote.as_ref(),
                                unconfirmed::I_AM,
                                services::i_am(&self.i_am()),
                            )
                            .await;
                    }
                }
                unconfirmed::I_AM => {
                    let i = services::decode_i_am(&data)?;
                    let _ = events.try_send(Event::IAm(peer, i));
                }
                unconfirmed::COV_NOTIFICATION => {
                    let n = services::decode_cov_notification(&data)?;
                    let _ = events.try_send(Event::Cov(peer, n));
                }
                _ => {}
            },
            Apdu::Confirmed {
                invoke_id,
                service,
                data,
                ..
            } => {
                let answer = match service {
                    confirmed::COV_NOTIFICATION => {
                        let n = services::decode_cov_notification(&data)?;
                        let _ = events.try_send(Event::Cov(peer.clone(), n));
                        Apdu::SimpleAck { invoke_id, service }
                    }
                    confirmed::READ_PROPERTY => self.answer_read(invoke_id, &data),
                    // Reject: unrecognized service.
                    _ => Apdu::Reject {
                        invoke_id,
                        reason: 9,
                    },
                };
                let out = frame::encode(bvlc::UNICAST, peer.remote.as_ref(), false, &answer);
                let _ = self.send_raw(from, &out).await;
            }
            _ => {}
        }
        Ok(())
    }

    /// Answers a ReadProperty of the gateway's device object.
    fn answer_read(&self, invoke_id: u8, data: &[u8]) -> Apdu {
        let service = confirmed::READ_PROPERTY;
        let err = |class, code| Apdu::Error {
            invoke_id,
            service,
            class,
            code,
        };
        let Ok(req) = decode_read_request(data) else {
            return Apdu::Reject {
                invoke_id,
                reason: 4,
            };
        };
        let (o, p) = req;
        let me = ObjectId::new(ids::DEVICE, self.local.instance);
        // The wildcard instance 4194303 means "this device".
        if o != me && o != ObjectId::new(ids::DEVICE, 4_194_303) {
            return err(1, 31);
        }
        let v = match p.property {
            75 => AppValue::Object(me),
            77 => AppValue::Text(self.local.name.clone()),
            79 => AppValue::Enumerated(u32::from(ids::DEVICE)),
            120 => AppValue::Unsigned(u64::from(self.local.vendor)),
            121 => AppValue::Text("tbgw".into()),
            70 => AppValue::Text("tbgw BACnet connector".into()),
            62 => AppValue::Unsigned(u64::from(self.local.max_apdu)),
            107 => AppValue::Enumerated(self.local.segmentation),
            98 => AppValue::Unsigned(1),
            139 => AppValue::Unsigned(14),
            112 => AppValue::Enumerated(0),
            44 | 12 => AppValue::Text(env!("CARGO_PKG_VERSION").into()),
            76 if p.index == Some(0) => AppValue::Unsigned(1),
            76 => AppValue::Object(me),
            _ => return err(2, 32),
        };
        let mut w = super::proto::tags::Writer::new();
        w.context_object(0, me);
        w.context_unsigned(1, u64::from(p.property));
        if let Some(i) = p.index {
            w.context_unsigned(2, u64::from(i));
        }
        w.open(3);
        w.app(&v);
        w.close(3);
        Apdu::ComplexAck {
            segmented: false,
            more: false,
            invoke_id,
            sequence: 0,
            window: 0,
            service,
            data: w.buf,
        }
    }
}

fn decode_read_request(b: &[u8]) -> Result<(ObjectId, PropRef), DecodeError> {
    let mut r = super::proto::tags::Reader::new(b);
    let o = r.context_object(0)?;
    let property = u32::try_from(r.context_unsigned(1)?).unwrap_or(u32::MAX);
    let index = if r.next_is_context(2) {
        Some(u32::try_from(r.context_unsigned(2)?).unwrap_or(u32::MAX))
    } else {
        None
    };
    Ok((o, PropRef { property, index }))
}

/// The directed broadcast address of `ip` with a prefix length, for Who-Is to patterns.
pub fn broadcast_of(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    if ip.is_unspecified() || prefix == 0 || prefix > 32 {
        return Ipv4Addr::BROADCAST;
    }
    let mask = if prefix == 32 {
        u32::MAX
    } else {
        !(u32::MAX >> prefix)
    };
    Ipv4Addr::from(u32::from(ip) | !mask)
}

/// An IPv4 endpoint as a 6-byte BACnet/IP MAC.
pub fn ip_mac(a: SocketAddrV4) -> Vec<u8> {
    let mut v = a.ip().octets().to_vec();
    v.extend_from_slice(&a.port().to_be_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_addresses() {
        assert_eq!(
            broadcast_of(Ipv4Addr::new(192, 168, 1, 7), 24),
            Ipv4Addr::new(192, 168, 1, 255)
        );
        assert_eq!(
            broadcast_of(Ipv4Addr::new(127, 0, 0, 1), 8),
            Ipv4Addr::new(127, 255, 255, 255)
        );
        assert_eq!(broadcast_of(Ipv4Addr::UNSPECIFIED, 24), Ipv4Addr::BROADCAST);
    }

    #[tokio::test]
    async fn segments_reassembled_window_by_window() {
        let local = LocalDevice {
            instance: 1,
            name: "gw".into(),
            max_apdu: 206,
            segmentation: 0,
            vendor: 15,
        };
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            local,
            Duration::from_secs(1),
            0,
        )
        .await
        .unwrap();
        let key = ("127.0.0.1:9".parse().unwrap(), 5);
        let seg = |sequence: u8, more: bool| Apdu::ComplexAck {
            segmented: true,
            more,
            invoke_id: 5,
            sequence,
            window: 2,
            service: 12,
            data: vec![sequence],
        };
        let ack = |negative, sequence| Apdu::SegmentAck {
            negative,
            server: false,
            invoke_id: 5,
            sequence,
            window: 2,
        };
        // A segment before the first: ask from the start.
        assert_eq!(
            ep.segment(key, seg(1, true)),
            SegmentStep::Ack(ack(true, 0))
        );
        assert_eq!(
            ep.segment(key, seg(0, true)),
            SegmentStep::Ack(ack(false, 0))
        );
        // Segment 0 again (our acknowledgement was lost): start over.
        assert_eq!(
            ep.segment(key, seg(0, true)),
            SegmentStep::Ack(ack(false, 0))
        );
        assert_eq!(ep.segment(key, seg(1, true)), SegmentStep::Wait);
        assert_eq!(
            ep.segment(key, seg(2, true)),
            SegmentStep::Ack(ack(false, 2))
        );
        // Segment 3 lost: a negative ack of the last one in order.
        assert_eq!(
            ep.segment(key, seg(4, true)),
            SegmentStep::Ack(ack(true, 2))
        );
        let SegmentStep::Done(last, whole) = ep.segment(key, seg(3, false)) else {
            panic!("not done")
        };
        assert_eq!(last, ack(false, 3));
        let Apdu::ComplexAck { data, service, .. } = whole else {
            panic!("{whole:?}")
        };
        assert_eq!((data, service), (vec![0, 1, 2, 3], 12));
        assert!(ep.segments.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn answers_who_is_and_times_out() {
        let local = LocalDevice {
            instance: 599,
            name: "gw".into(),
            max_apdu: 1476,
            segmentation: 3,
            vendor: 15,
        };
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            local,
            Duration::from_millis(100),
            0,
        )
        .await
        .unwrap();
        let (tx, _rx) = mpsc::channel(8);
        let addr = ep.local_addr().unwrap();
        let task = tokio::spawn(ep.clone().receive(tx));
        let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let d = frame::encode(
            bvlc::UNICAST,
            None,
            false,
            &Apdu::Unconfirmed {
                service: unconfirmed::WHO_IS,
                data: services::who_is(Some((500, 600))),
            },
        );
        probe.send_to(&d, addr).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), probe.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let p = frame::decode(&buf[..n]).unwrap();
        let Some(Apdu::Unconfirmed { service, data }) = p.apdu else {
            panic!("{p:?}")
        };
        assert_eq!(service, unconfirmed::I_AM);
        assert_eq!(services::decode_i_am(&data).unwrap().device.instance, 599);
        // Nobody answers on the probe's port: a timeout, not a hang.
        let peer = Peer {
            addr: probe.local_addr().unwrap(),
            remote: None,
        };
        let r = ep
            .read_property(
                &peer,
                ObjectId::new(2, 1),
                PropRef {
                    property: 85,
                    index: None,
                },
                None,
            )
            .await;
        assert!(r.unwrap_err().is_timeout());
        task.abort();
    }
}
