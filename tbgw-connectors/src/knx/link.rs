//! One connection to the bus: a KNXnet/IP tunnel over UDP or TCP, or routing over UDP
//! multicast. [`Link::recv`] yields the group telegrams seen on the bus and handles the
//! protocol underneath (acknowledgements, repeated frames, the gateway's disconnect);
//! [`Link::send`] queues a telegram, sent when the previous one is acknowledged and the
//! rate limit allows; [`Link::tick`] runs the timers (acknowledgement timeouts,
//! connection-state heartbeats every 60 s, routing busy pauses).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::frame::{
    self, code, parse_cemi, parse_frame, Cemi, Frame, FrameError, GroupTelegram, Hpai,
    IndividualAddress, SearchResponse,
};

/// Heartbeat period of a tunnel (the KNXnet/IP specification's 60 s).
const HEARTBEAT: Duration = Duration::from_secs(60);
/// Time for a CONNECTIONSTATE_RESPONSE.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeats that may fail in a row before the tunnel is given up.
const HEARTBEAT_TRIES: u32 = 3;
/// Time for a TUNNELLING_ACK (the specification's 1 s).
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// Telegrams waiting to be sent; more are refused.
pub const SEND_QUEUE: usize = 1024;

/// How the link reaches the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// KNXnet/IP tunnelling over UDP.
    TunnelUdp,
    /// KNXnet/IP tunnelling over TCP (KNXnet/IP 2.0).
    TunnelTcp,
    /// KNXnet/IP routing (UDP multicast).
    Routing,
}

/// Link settings.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Tunnelling or routing.
    pub mode: Mode,
    /// Tunnelling: the gateway.
    pub gateway: SocketAddr,
    /// Local address to bind.
    pub local: SocketAddr,
    /// Routing: our source address; TCP tunnelling: the tunnel address to ask for.
    pub individual: Option<IndividualAddress>,
    /// Routing: the multicast group and port.
    pub multicast: SocketAddrV4,
    /// Least time between two telegrams sent (from `rateLimit`).
    pub min_gap: Duration,
    /// Time for a connect.
    pub timeout: Duration,
}

/// Why the link failed or a frame was refused.
#[derive(Debug, Error)]
pub enum LinkError {
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("no {0} from the gateway in time")]
    Timeout(&'static str),
    /// The gateway refused the connection.
    #[error("the gateway refused the tunnel: {0}")]
    Refused(String),
    /// The gateway closed the tunnel.
    #[error("the gateway closed the tunnel")]
    Closed,
    /// A frame that could not be parsed (the link goes on, except on TCP).
    #[error("malformed frame: {0}")]
    Malformed(#[from] FrameError),
}

impl LinkError {
    /// Whether the link can go on after this error.
    pub fn is_malformed(&self) -> bool {
        matches!(self, LinkError::Malformed(_))
    }
}

/// The answer to a queued telegram: sent (and acknowledged) or not.
pub type SendResult = Result<(), String>;

enum Io {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        buf: Vec<u8>,
        fill: usize,
    },
    Multicast {
        socket: UdpSocket,
        group: SocketAddrV4,
    },
}

struct Outgoing {
    telegram: GroupTelegram,
    reply: Option<oneshot::Sender<SendResult>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("mode", &self.mode)
            .field("channel", &self.channel)
            .field("address", &self.address)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

/// A connected link.
pub struct Link {
    io: Io,
    mode: Mode,
    channel: u8,
    control: Hpai,
    address: IndividualAddress,
    send_seq: u8,
    recv_seq: u8,
    queue: VecDeque<Outgoing>,
    /// The request on the wire and when its ack is due, with the number of tries.
    in_flight: Option<(Outgoing, Instant, u8)>,
    next_send: Instant,
    min_gap: Duration,
    next_heartbeat: Instant,
    heartbeat_due: Option<(Instant, u32)>,
}

fn status_text(s: u8) -> String {
    let what = match s {
        0x21 => "E_CONNECTION_ID",
        0x22 => "E_CONNECTION_TYPE",
        0x23 => "E_CONNECTION_OPTION",
        0x24 => "E_NO_MORE_CONNECTIONS",
        0x25 => "E_NO_MORE_UNIQUE_CONNECTIONS",
        0x26 => "E_DATA_CONNECTION",
        0x27 => "E_KNX_CONNECTION",
        0x29 => "E_TUNNELLING_LAYER",
        _ => "error",
    };
    format!("{what} ({s:#04x})")
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => SocketAddrV4::new(
            a.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
            a.port(),
        ),
    }
}

impl Link {
    /// Connects (tunnel handshake, or joining the routing group).
    pub async fn connect(cfg: &LinkConfig) -> Result<Link, LinkError> {
        let now = Instant::now();
        let (io, control) = match cfg.mode {
            Mode::Routing => (
                Io::Multicast {
                    socket: multicast_socket(cfg)?,
                    group: cfg.multicast,
                },
                Hpai::tcp(),
            ),
            Mode::TunnelUdp => {
                let s = UdpSocket::bind(cfg.local).await?;
                s.connect(cfg.gateway).await?;
                let control = Hpai {
                    udp: true,
                    addr: v4(s.local_addr()?),
                };
                (Io::Udp(s), control)
            }
            Mode::TunnelTcp => {
                let stream = tokio::time::timeout(cfg.timeout, TcpStream::connect(cfg.gateway))
                    .await
                    .map_err(|_| LinkError::Timeout("TCP connection"))??;
                stream.set_nodelay(true)?;
                (
                    Io::Tcp {
                        stream,
                        buf: vec![0; frame::MAX_FRAME],
                        fill: 0,
                    },
                    Hpai::tcp(),
                )
            }
        };
        let mut link = Link {
            io,
            mode: cfg.mode,
            channel: 0,
            control,
            address: cfg.individual.unwrap_or(IndividualAddress(0xFFFF)),
            send_seq: 0,
            recv_seq: 0,
            queue: VecDeque::new(),
            in_flight: None,
            next_send: now,
            min_gap: cfg.min_gap,
            next_heartbeat: now + HEARTBEAT,
            heartbeat_due: None,
        };
        if cfg.mode == Mode::Routing {
            return Ok(link);
        }
        let req = Frame::ConnectRequest {
            control: link.control,
            data: link.control,
            address: if cfg.mode == Mode::TunnelTcp {
                cfg.individual
            } else {
                None
            },
        };
        link.write(&req.to_bytes()).await?;
        let deadline = Instant::now() + cfg.timeout;
        loop {
            let f = tokio::time::timeout_at(deadline, link.read_frame())
                .await
                .map_err(|_| LinkError::Timeout("CONNECT_RESPONSE"))?;
            match f {
                Ok(Frame::ConnectResponse {
                    channel,
                    status: 0,
                    address,
                }) => {
                    link.channel = channel;
                    link.address = address.unwrap_or_default();
                    return Ok(link);
                }
                Ok(Frame::ConnectResponse { status, .. }) => {
                    return Err(LinkError::Refused(status_text(status)))
                }
                Ok(_) => {}
                Err(e) if e.is_malformed() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The tunnel's individual address (ours for routing).
    pub fn address(&self) -> IndividualAddress {
        self.address
    }

    /// The tunnel's channel id.
    pub fn channel(&self) -> u8 {
        self.channel
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), LinkError> {
        match &mut self.io {
            Io::Udp(s) => {
                s.send(b).await?;
            }
            Io::Tcp { stream, .. } => stream.write_all(b).await?,
            Io::Multicast { socket, group } => {
                socket.send_to(b, *group).await?;
            }
        }
        Ok(())
    }

    /// Reads one frame. Cancel-safe: a TCP frame read halfway stays in the buffer.
    async fn read_frame(&mut self) -> Result<Frame, LinkError> {
        match &mut self.io {
            Io::Udp(s) => {
                let mut b = [0u8; frame::MAX_FRAME];
                let n = s.recv(&mut b).await?;
                Ok(parse_frame(&b[..n])?)
            }
            Io::Multicast { socket, .. } => {
                let mut b = [0u8; frame::MAX_FRAME];
                let (n, _) = socket.recv_from(&mut b).await?;
                Ok(parse_frame(&b[..n])?)
            }
            Io::Tcp { stream, buf, fill } => loop {
                if *fill >= 6 {
                    // A bad header on a stream cannot be skipped: the caller drops the link.
                    let total = frame::frame_len(&buf[..6]).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("malformed frame: {e}"),
                        )
                    })?;
                    if *fill >= total {
                        let r = parse_frame(&buf[..total]);
                        buf.copy_within(total..*fill, 0);
                        *fill -= total;
                        return Ok(r?);
                    }
                }
                let n = stream.read(&mut buf[*fill..]).await?;
                if n == 0 {
                    return Err(LinkError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the gateway closed the TCP connection",
                    )));
                }
                *fill += n;
            },
        }
    }

    /// The next group telegram from the bus (`Ok(None)` for frames that carry none).
    pub async fn recv(&mut self) -> Result<Option<GroupTelegram>, LinkError> {
        let f = self.read_frame().await?;
        let cemi = match f {
            Frame::TunnelRequest { channel, seq, cemi } => {
                if channel != self.channel {
                    return Ok(None);
                }
                if self.mode == Mode::TunnelUdp {
                    if seq == self.recv_seq.wrapping_sub(1) {
                        // A repeat of the last one: acknowledge again, do not deliver twice.
                        self.ack(seq).await?;
                        return Ok(None);
                    }
                    if seq != self.recv_seq {
                        return Ok(None);
                    }
                    self.ack(seq).await?;
                }
                self.recv_seq = seq.wrapping_add(1);
                cemi
            }
            Frame::RoutingIndication(cemi) if self.mode == Mode::Routing => cemi,
            Frame::RoutingBusy if self.mode == Mode::Routing => {
                self.next_send = self
                    .next_send
                    .max(Instant::now() + Duration::from_millis(100));
                return Ok(None);
            }
            Frame::TunnelAck {
                channel,
                seq,
                status,
            } => {
                if channel == self.channel {
                    if let Some((_, _, _)) =
                        self.in_flight.as_ref().filter(|_| seq == self.send_seq)
                    {
                        if let Some((out, _, _)) = self.in_flight.take() {
                            self.send_seq = self.send_seq.wrapping_add(1);
                            if let Some(r) = out.reply {
                                let _ = r.send(if status == 0 {
                                    Ok(())
                                } else {
                                    Err(format!("the gateway refused the telegram ({status:#04x})"))
                                });
                            }
                        }
                    }
                }
                return Ok(None);
            }
            Frame::StateResponse { channel, status } => {
                if channel == self.channel {
                    if status != 0 {
                        return Err(LinkError::Refused(format!(
                            "connection state {}",
                            status_text(status)
                        )));
                    }
                    self.heartbeat_due = None;
                }
                return Ok(None);
            }
            Frame::DisconnectRequest { channel, .. } => {
                if channel == self.channel {
                    let _ = self
                        .write(&Frame::DisconnectResponse { channel, status: 0 }.to_bytes())
                        .await;
                    return Err(LinkError::Closed);
                }
                return Ok(None);
            }
            _ => return Ok(None),
        };
        match parse_cemi(&cemi)? {
            Cemi::Group(t) if t.code == code::L_DATA_IND => {
                if self.mode == Mode::Routing && t.source == self.address {
                    // Our own indication looped back.
                    return Ok(None);
                }
                Ok(Some(t))
            }
            _ => Ok(None),
        }
    }

    async fn ack(&mut self, seq: u8) -> Result<(), LinkError> {
        let a = Frame::TunnelAck {
            channel: self.channel,
            seq,
            status: 0,
        };
        self.write(&a.to_bytes()).await
    }

    /// Queues a telegram; the reply says whether it went out (refused when the queue is
    /// full).
    pub fn send(&mut self, telegram: GroupTelegram, reply: Option<oneshot::Sender<SendResult>>) {
        if self.queue.len() >= SEND_QUEUE {
            if let Some(r) = reply {
                let _ = r.send(Err("the send queue is full".into()));
            }
            return;
        }
        self.queue.push_back(Outgoing { telegram, reply });
    }

    /// When [`tick`](Self::tick) has work next.
    pub fn next_deadline(&self) -> Instant {
        let mut t = self.next_heartbeat;
        if let Some((_, due, _)) = &self.in_flight {
            t = t.min(*due);
        } else if !self.queue.is_empty() {
            t = t.min(self.next_send);
        }
        if let Some((due, _)) = self.heartbeat_due {
            t = t.min(due);
        }
        t
    }

    /// Runs the timers: sends the next telegram, repeats an unacknowledged one, sends
    /// heartbeats; an error means the link is lost.
    pub async fn tick(&mut self) -> Result<(), LinkError> {
        let now = Instant::now();
        if self.mode != Mode::Routing {
            if let Some((due, tries)) = self.heartbeat_due {
                if now >= due {
                    if tries >= HEARTBEAT_TRIES {
                        return Err(LinkError::Timeout("CONNECTIONSTATE_RESPONSE"));
                    }
                    self.heartbeat(tries + 1).await?;
                }
            } else if now >= self.next_heartbeat {
                self.heartbeat(1).await?;
            }
        } else {
            self.next_heartbeat = now + HEARTBEAT;
        }
        if let Some((_, due, tries)) = &self.in_flight {
            if now < *due {
                return Ok(());
            }
            if *tries >= 2 {
                if let Some((out, _, _)) = self.in_flight.take() {
                    if let Some(r) = out.reply {
                        let _ = r.send(Err("no TUNNELLING_ACK from the gateway".into()));
                    }
                }
                return Err(LinkError::Timeout("TUNNELLING_ACK"));
            }
            let (cemi, tries) = match &self.in_flight {
                Some((out, _, t)) => (out.telegram.to_cemi(), *t),
                None => return Ok(()),
            };
            let f = Frame::TunnelRequest {
                channel: self.channel,
                seq: self.send_seq,
                cemi,
            };
            self.write(&f.to_bytes()).await?;
            if let Some(x) = self.in_flight.as_mut() {
                x.1 = now + ACK_TIMEOUT;
                x.2 = tries + 1;
            }
            return Ok(());
        }
        while now >= self.next_send && self.in_flight.is_none() {
            let Some(mut out) = self.queue.pop_front() else {
                break;
            };
            self.next_send = now + self.min_gap;
            let mut t = out.telegram.clone();
            match self.mode {
                Mode::TunnelUdp => {
                    let f = Frame::TunnelRequest {
                        channel: self.channel,
                        seq: self.send_seq,
                        cemi: t.to_cemi(),
                    };
                    self.write(&f.to_bytes()).await?;
                    self.in_flight = Some((out, now + ACK_TIMEOUT, 1));
                }
                Mode::TunnelTcp => {
                    let f = Frame::TunnelRequest {
                        channel: self.channel,
                        seq: self.send_seq,
                        cemi: t.to_cemi(),
                    };
                    self.send_seq = self.send_seq.wrapping_add(1);
                    self.write(&f.to_bytes()).await?;
                    if let Some(r) = out.reply.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Mode::Routing => {
                    t.code = code::L_DATA_IND;
                    t.source = self.address;
                    self.write(&Frame::RoutingIndication(t.to_cemi()).to_bytes())
                        .await?;
                    if let Some(r) = out.reply.take() {
                        let _ = r.send(Ok(()));
                    }
                }
            }
            if !self.min_gap.is_zero() {
                break;
            }
        }
        Ok(())
    }

    async fn heartbeat(&mut self, attempt: u32) -> Result<(), LinkError> {
        let f = Frame::StateRequest {
            channel: self.channel,
            control: self.control,
        };
        self.write(&f.to_bytes()).await?;
        let now = Instant::now();
        self.heartbeat_due = Some((now + HEARTBEAT_TIMEOUT, attempt));
        self.next_heartbeat = now + HEARTBEAT;
        Ok(())
    }

    /// Closes a tunnel politely (best effort) and fails what is still queued.
    pub async fn close(mut self) {
        if self.mode != Mode::Routing {
            let f = Frame::DisconnectRequest {
                channel: self.channel,
                control: self.control,
            };
            let _ =
                tokio::time::timeout(Duration::from_millis(200), self.write(&f.to_bytes())).await;
        }
        self.fail_queued("the connection to the bus was closed");
    }

    /// Fails every queued telegram with `why`.
    pub fn fail_queued(&mut self, why: &str) {
        for out in self
            .in_flight
            .take()
            .map(|(o, _, _)| o)
            .into_iter()
            .chain(self.queue.drain(..))
        {
            if let Some(r) = out.reply {
                let _ = r.send(Err(why.to_string()));
            }
        }
    }
}

fn multicast_socket(cfg: &LinkConfig) -> Result<UdpSocket, LinkError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let iface = match cfg.local {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, cfg.multicast.port())).into())?;
    s.join_multicast_v4(cfg.multicast.ip(), &iface)?;
    s.set_multicast_loop_v4(true)?;
    if !iface.is_unspecified() {
        s.set_multicast_if_v4(&iface)?;
    }
    Ok(UdpSocket::from_std(s.into())?)
}

/// Looks for KNXnet/IP gateways: a SEARCH_REQUEST to the multicast group (and to
/// `unicast`, when given), answers collected for `period` (or until the first).
pub async fn scan(
    local: Ipv4Addr,
    multicast: SocketAddrV4,
    unicast: Option<SocketAddr>,
    period: Duration,
    stop_on_found: bool,
) -> Result<Vec<SearchResponse>, LinkError> {
    let s = UdpSocket::bind((local, 0)).await?;
    let _ = s.set_multicast_loop_v4(true);
    let me = v4(s.local_addr()?);
    let req = Frame::SearchRequest(Hpai {
        udp: true,
        addr: me,
    })
    .to_bytes();
    // The multicast send fails where there is no multicast route; unicast may still work.
    let mut sent = s.send_to(&req, multicast).await.is_ok();
    if let Some(u) = unicast {
        sent |= s.send_to(&req, u).await.is_ok();
    }
    if !sent {
        return Err(LinkError::Io(std::io::Error::other(
            "cannot send a search request (no multicast route?)",
        )));
    }
    let deadline = Instant::now() + period;
    let mut found: Vec<SearchResponse> = Vec::new();
    let mut b = [0u8; frame::MAX_FRAME];
    while let Ok(r) = tokio::time::timeout_at(deadline, s.recv_from(&mut b)).await {
        let (n, _) = r?;
        if let Ok(Frame::SearchResponse(g)) = parse_frame(&b[..n]) {
            if !found.iter().any(|f| f.control == g.control) {
                found.push(g);
                if stop_on_found {
                    break;
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    //! The TCP framing, against a scripted gateway in the test (knxd 0.14 tunnels over UDP
    //! only, so no third-party peer exists for KNXnet/IP over TCP here).
    use super::*;
    use crate::knx::frame::{Apci, GroupAddress, Payload};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_one(s: &mut TcpStream) -> Frame {
        let mut h = [0u8; 6];
        s.read_exact(&mut h).await.unwrap();
        let n = frame::frame_len(&h).unwrap();
        let mut b = h.to_vec();
        b.resize(n, 0);
        s.read_exact(&mut b[6..]).await.unwrap();
        parse_frame(&b).unwrap()
    }

    #[tokio::test]
    async fn tcp_tunnel_frames_split_and_joined() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let gw = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let Frame::ConnectRequest {
                address, control, ..
            } = read_one(&mut s).await
            else {
                panic!("no connect request")
            };
            assert_eq!(address, Some(IndividualAddress(0x100A)));
            assert!(!control.udp);
            let r = Frame::ConnectResponse {
                channel: 9,
                status: 0,
                address,
            };
            s.write_all(&r.to_bytes()).await.unwrap();
            // Two telegrams in one write, the second split over two writes.
            let t = |v: u8| Frame::TunnelRequest {
                channel: 9,
                seq: v,
                cemi: GroupTelegram {
                    code: code::L_DATA_IND,
                    source: IndividualAddress(0x1101),
                    dest: GroupAddress(0x0801),
                    apci: Apci::Write,
                    payload: Payload::Small(v),
                }
                .to_cemi(),
            };
            let mut b = t(0).to_bytes();
            let second = t(1).to_bytes();
            b.extend_from_slice(&second[..5]);
            s.write_all(&b).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.write_all(&second[5..]).await.unwrap();
            // What the client sends: a tunnelling request, no acks.
            match read_one(&mut s).await {
                Frame::TunnelRequest {
                    channel: 9, cemi, ..
                } => cemi,
                other => panic!("{other:?}"),
            }
        });
        let cfg = LinkConfig {
            mode: Mode::TunnelTcp,
            gateway: addr,
            local: "0.0.0.0:0".parse().unwrap(),
            individual: Some(IndividualAddress(0x100A)),
            multicast: "224.0.23.12:3671".parse().unwrap(),
            min_gap: Duration::ZERO,
            timeout: Duration::from_secs(5),
        };
        let mut link = Link::connect(&cfg).await.unwrap();
        assert_eq!(link.channel(), 9);
        assert_eq!(link.address(), IndividualAddress(0x100A));
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Some(t) = link.recv().await.unwrap() {
                got.push(t.payload);
            }
        }
        assert_eq!(got, vec![Payload::Small(0), Payload::Small(1)]);
        let (tx, rx) = oneshot::channel();
        link.send(
            GroupTelegram::request(
                IndividualAddress(0),
                GroupAddress(0x0802),
                Apci::Write,
                Payload::Bytes(vec![0x0C, 0x33]),
            ),
            Some(tx),
        );
        link.tick().await.unwrap();
        assert_eq!(rx.await.unwrap(), Ok(()));
        let cemi = gw.await.unwrap();
        let Cemi::Group(t) = parse_cemi(&cemi).unwrap() else {
            panic!()
        };
        assert_eq!(t.dest, GroupAddress(0x0802));
        assert_eq!(t.payload, Payload::Bytes(vec![0x0C, 0x33]));
    }

    /// Routing between two links on the loopback interface (multicast looped back); skipped
    /// where the loopback interface cannot join the group.
    #[tokio::test]
    async fn routing_indications_between_two_routers() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = |ia: u16| LinkConfig {
            mode: Mode::Routing,
            gateway: "127.0.0.1:3671".parse().unwrap(),
            local: "127.0.0.1:0".parse().unwrap(),
            individual: Some(IndividualAddress(ia)),
            multicast: SocketAddrV4::new(Ipv4Addr::new(224, 0, 23, 12), port),
            min_gap: Duration::ZERO,
            timeout: Duration::from_secs(1),
        };
        let (Ok(mut a), Ok(mut b)) = (
            Link::connect(&cfg(0x1101)).await,
            Link::connect(&cfg(0x1102)).await,
        ) else {
            eprintln!("no multicast on the loopback interface; skipped");
            return;
        };
        a.send(
            GroupTelegram::request(
                IndividualAddress(0),
                GroupAddress(0x0801),
                Apci::Write,
                Payload::Small(1),
            ),
            None,
        );
        a.tick().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Ok(Some(t)) = b.recv().await {
                    return t;
                }
            }
        })
        .await;
        let Ok(t) = got else {
            eprintln!("multicast not looped back on this machine; skipped");
            return;
        };
        assert_eq!(t.source, IndividualAddress(0x1101));
        assert_eq!(t.dest, GroupAddress(0x0801));
        assert_eq!(t.payload, Payload::Small(1));
        // The sender does not take its own indication for a bus telegram.
        let own = tokio::time::timeout(Duration::from_millis(300), a.recv()).await;
        assert!(matches!(own, Err(_) | Ok(Ok(None))), "{own:?}");
    }
}
