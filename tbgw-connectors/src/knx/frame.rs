//! KNXnet/IP frames (the services the connector uses) and cEMI L_Data messages with their
//! group APDU, written and parsed with checked reads: any bytes give a value or a
//! [`FrameError`], never a panic (fuzzed by `knx_frame`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use thiserror::Error;

/// KNXnet/IP header length and protocol version 1.0.
const HEADER_LEN: u8 = 0x06;
const VERSION: u8 = 0x10;
/// The longest KNXnet/IP frame accepted (a cEMI frame is at most ~270 bytes).
pub const MAX_FRAME: usize = 1024;

/// Service type identifiers.
pub mod service {
    /// SEARCH_REQUEST.
    pub const SEARCH_REQUEST: u16 = 0x0201;
    /// SEARCH_RESPONSE.
    pub const SEARCH_RESPONSE: u16 = 0x0202;
    /// CONNECT_REQUEST.
    pub const CONNECT_REQUEST: u16 = 0x0205;
    /// CONNECT_RESPONSE.
    pub const CONNECT_RESPONSE: u16 = 0x0206;
    /// CONNECTIONSTATE_REQUEST.
    pub const CONNECTIONSTATE_REQUEST: u16 = 0x0207;
    /// CONNECTIONSTATE_RESPONSE.
    pub const CONNECTIONSTATE_RESPONSE: u16 = 0x0208;
    /// DISCONNECT_REQUEST.
    pub const DISCONNECT_REQUEST: u16 = 0x0209;
    /// DISCONNECT_RESPONSE.
    pub const DISCONNECT_RESPONSE: u16 = 0x020A;
    /// TUNNELLING_REQUEST.
    pub const TUNNELLING_REQUEST: u16 = 0x0420;
    /// TUNNELLING_ACK.
    pub const TUNNELLING_ACK: u16 = 0x0421;
    /// ROUTING_INDICATION.
    pub const ROUTING_INDICATION: u16 = 0x0530;
    /// ROUTING_BUSY.
    pub const ROUTING_BUSY: u16 = 0x0532;
}

/// cEMI message codes.
pub mod code {
    /// L_Data.req: a telegram to send.
    pub const L_DATA_REQ: u8 = 0x11;
    /// L_Data.con: the gateway's confirmation of our request.
    pub const L_DATA_CON: u8 = 0x2E;
    /// L_Data.ind: a telegram seen on the bus.
    pub const L_DATA_IND: u8 = 0x29;
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Fewer bytes than the structure needs.
    #[error("truncated {what}: {have} bytes, {need} needed")]
    Truncated {
        /// The structure.
        what: &'static str,
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A header or field with a value that is not allowed.
    #[error("bad {what}: {value:#x}")]
    Bad {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u32,
    },
    /// The header's total length differs from the datagram's.
    #[error("header says {header} bytes, the frame has {actual}")]
    Length {
        /// From the header.
        header: usize,
        /// Present.
        actual: usize,
    },
}

fn need(what: &'static str, b: &[u8], n: usize) -> Result<(), FrameError> {
    if b.len() < n {
        Err(FrameError::Truncated {
            what,
            have: b.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

/// A group address (16 bits), shown in the configured style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupAddress(pub u16);

impl GroupAddress {
    /// Parses `main/middle/sub` (5/3/8 bits), `main/sub` (5/11) or a free number
    /// (0..=65535).
    pub fn parse(s: &str) -> Result<GroupAddress, String> {
        let t = s.trim();
        let parts: Vec<&str> = t.split('/').collect();
        let num = |p: &str, max: u32| -> Result<u32, String> {
            let v: u32 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a group address (1/2/3, 1/234 or 1234)"))?;
            if v > max {
                Err(format!("{s:?}: {v} is more than {max}"))
            } else {
                Ok(v)
            }
        };
        let raw = match parts.as_slice() {
            [a, b, c] => (num(a, 31)? << 11) | (num(b, 7)? << 8) | num(c, 255)?,
            [a, b] => (num(a, 31)? << 11) | num(b, 2047)?,
            [a] => num(a, 65535)?,
            _ => {
                return Err(format!(
                    "{s:?} is not a group address (1/2/3, 1/234 or 1234)"
                ))
            }
        };
        Ok(GroupAddress(raw as u16))
    }
}

impl fmt::Display for GroupAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(f, "{}/{}/{}", v >> 11, (v >> 8) & 7, v & 0xFF)
    }
}

/// An individual address `area.line.device` (4/4/8 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IndividualAddress(pub u16);

impl IndividualAddress {
    /// Parses `1.1.10`.
    pub fn parse(s: &str) -> Result<IndividualAddress, String> {
        let bad = || format!("{s:?} is not an individual address (area.line.device, 1.1.10)");
        let parts: Vec<&str> = s.trim().split('.').collect();
        let [a, l, d] = parts.as_slice() else {
            return Err(bad());
        };
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let l: u16 = l.trim().parse().map_err(|_| bad())?;
        let d: u16 = d.trim().parse().map_err(|_| bad())?;
        if a > 15 || l > 15 || d > 255 {
            return Err(bad());
        }
        Ok(IndividualAddress((a << 12) | (l << 8) | d))
    }
}

impl fmt::Display for IndividualAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(f, "{}.{}.{}", v >> 12, (v >> 8) & 0xF, v & 0xFF)
    }
}

/// The group service of a telegram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apci {
    /// GroupValueRead.
    Read,
    /// GroupValueResponse.
    Response,
    /// GroupValueWrite.
    Write,
}

/// The value part of a group telegram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Up to 6 bits carried in the APCI octet (DPT 1, 2, 3).
    Small(u8),
    /// Octets after the APCI.
    Bytes(Vec<u8>),
}

/// A group telegram (cEMI L_Data with a group destination and a group service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTelegram {
    /// cEMI message code (`code::L_DATA_*`).
    pub code: u8,
    /// Sender.
    pub source: IndividualAddress,
    /// Group address.
    pub dest: GroupAddress,
    /// Read, response or write.
    pub apci: Apci,
    /// Value (empty for a read).
    pub payload: Payload,
}

/// A cEMI frame as far as the connector cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cemi {
    /// A group telegram.
    Group(GroupTelegram),
    /// Any other cEMI message (individual addressing, other services, management).
    Other {
        /// Its message code.
        code: u8,
    },
}

impl GroupTelegram {
    /// A telegram to send (L_Data.req from 0.0.0 unless `source` is set, low priority).
    pub fn request(
        source: IndividualAddress,
        dest: GroupAddress,
        apci: Apci,
        payload: Payload,
    ) -> Self {
        GroupTelegram {
            code: code::L_DATA_REQ,
            source,
            dest,
            apci,
            payload,
        }
    }

    /// The cEMI bytes.
    pub fn to_cemi(&self) -> Vec<u8> {
        let apci: u16 = match self.apci {
            Apci::Read => 0x000,
            Apci::Response => 0x040,
            Apci::Write => 0x080,
        };
        let (small, data): (u8, &[u8]) = match &self.payload {
            Payload::Small(v) => (v & 0x3F, &[]),
            Payload::Bytes(b) => (0, b.as_slice()),
        };
        let mut v = Vec::with_capacity(11 + data.len());
        v.push(self.code);
        v.push(0); // no additional info
        v.push(0xBC); // standard frame, no repeat, system broadcast off, low priority
        v.push(0xE0); // group address, hop count 6
        v.extend_from_slice(&self.source.0.to_be_bytes());
        v.extend_from_slice(&self.dest.0.to_be_bytes());
        v.push((1 + data.len()).min(255) as u8);
        v.push((apci >> 8) as u8 & 0x03);
        v.push((apci & 0xC0) as u8 | small);
        v.extend_from_slice(data);
        v
    }
}

/// Parses a cEMI frame.
pub fn parse_cemi(b: &[u8]) -> Result<Cemi, FrameError> {
    need("cEMI", b, 2)?;
    let code = b[0];
    if !matches!(code, code::L_DATA_REQ | code::L_DATA_CON | code::L_DATA_IND) {
        return Ok(Cemi::Other { code });
    }
    let add = b[1] as usize;
    let base = 2 + add;
    need("cEMI L_Data", b, base + 7)?;
    // Standard and extended frames (ctrl1 bit 7) have the same layout in cEMI.
    let ctrl2 = b[base + 1];
    let source = IndividualAddress(u16::from_be_bytes([b[base + 2], b[base + 3]]));
    let dest = u16::from_be_bytes([b[base + 4], b[base + 5]]);
    let len = b[base + 6] as usize;
    let tpdu = &b[base + 7..];
    if tpdu.len() < len + 1 {
        return Err(FrameError::Truncated {
            what: "cEMI TPDU",
            have: tpdu.len(),
            need: len + 1,
        });
    }
    let tpdu = &tpdu[..len + 1];
    if ctrl2 & 0x80 == 0 {
        return Ok(Cemi::Other { code });
    }
    // Group destination: a data telegram (TPCI 0b000000xx in the upper bits).
    if tpdu[0] & 0xFC != 0 || tpdu.len() < 2 {
        return Ok(Cemi::Other { code });
    }
    let apci = (u16::from(tpdu[0] & 0x03) << 8) | u16::from(tpdu[1] & 0xC0);
    let apci = match apci {
        0x000 => Apci::Read,
        0x040 => Apci::Response,
        0x080 => Apci::Write,
        _ => return Ok(Cemi::Other { code }),
    };
    let payload = if tpdu.len() == 2 {
        Payload::Small(tpdu[1] & 0x3F)
    } else {
        Payload::Bytes(tpdu[2..].to_vec())
    };
    Ok(Cemi::Group(GroupTelegram {
        code,
        source,
        dest: GroupAddress(dest),
        apci,
        payload,
    }))
}

/// A host protocol address information block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hpai {
    /// UDP (true) or TCP.
    pub udp: bool,
    /// Address.
    pub addr: SocketAddrV4,
}

impl Hpai {
    /// The HPAI for a TCP connection (zeros: the connection itself is the route).
    pub fn tcp() -> Self {
        Hpai {
            udp: false,
            addr: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        }
    }

    fn write(&self, v: &mut Vec<u8>) {
        v.push(8);
        v.push(if self.udp { 0x01 } else { 0x02 });
        v.extend_from_slice(&self.addr.ip().octets());
        v.extend_from_slice(&self.addr.port().to_be_bytes());
    }

    fn parse(b: &[u8]) -> Result<Hpai, FrameError> {
        need("HPAI", b, 8)?;
        if b[0] != 8 {
            return Err(FrameError::Bad {
                what: "HPAI length",
                value: u32::from(b[0]),
            });
        }
        Ok(Hpai {
            udp: b[1] != 0x02,
            addr: SocketAddrV4::new(
                Ipv4Addr::new(b[2], b[3], b[4], b[5]),
                u16::from_be_bytes([b[6], b[7]]),
            ),
        })
    }
}

/// A KNXnet/IP frame the connector sends or understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// SEARCH_REQUEST with the discovery endpoint.
    SearchRequest(Hpai),
    /// SEARCH_RESPONSE: a gateway's control endpoint, name and service families.
    SearchResponse(SearchResponse),
    /// CONNECT_REQUEST for a link-layer tunnel; `address` asks for a tunnel address
    /// (extended CRI, TCP).
    ConnectRequest {
        /// Control endpoint.
        control: Hpai,
        /// Data endpoint.
        data: Hpai,
        /// Requested tunnel individual address.
        address: Option<IndividualAddress>,
    },
    /// CONNECT_RESPONSE.
    ConnectResponse {
        /// Channel id.
        channel: u8,
        /// Status (0 = accepted).
        status: u8,
        /// The tunnel's individual address (when accepted).
        address: Option<IndividualAddress>,
    },
    /// CONNECTIONSTATE_REQUEST (heartbeat).
    StateRequest {
        /// Channel id.
        channel: u8,
        /// Control endpoint.
        control: Hpai,
    },
    /// CONNECTIONSTATE_RESPONSE.
    StateResponse {
        /// Channel id.
        channel: u8,
        /// Status (0 = fine).
        status: u8,
    },
    /// DISCONNECT_REQUEST.
    DisconnectRequest {
        /// Channel id.
        channel: u8,
        /// Control endpoint.
        control: Hpai,
    },
    /// DISCONNECT_RESPONSE.
    DisconnectResponse {
        /// Channel id.
        channel: u8,
        /// Status.
        status: u8,
    },
    /// TUNNELLING_REQUEST carrying a cEMI frame.
    TunnelRequest {
        /// Channel id.
        channel: u8,
        /// Sequence counter.
        seq: u8,
        /// The cEMI bytes.
        cemi: Vec<u8>,
    },
    /// TUNNELLING_ACK.
    TunnelAck {
        /// Channel id.
        channel: u8,
        /// Sequence counter acknowledged.
        seq: u8,
        /// Status (0 = fine).
        status: u8,
    },
    /// ROUTING_INDICATION carrying a cEMI frame.
    RoutingIndication(Vec<u8>),
    /// ROUTING_BUSY.
    RoutingBusy,
    /// A valid frame of a service the connector does not use.
    Other(u16),
}

/// A gateway found by a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResponse {
    /// Its control endpoint.
    pub control: Hpai,
    /// Its individual address.
    pub address: IndividualAddress,
    /// Its friendly name.
    pub name: String,
    /// Supports tunnelling (service family 4).
    pub tunnelling: bool,
    /// Supports routing (service family 5).
    pub routing: bool,
}

impl Frame {
    /// The frame's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(32);
        let st = match self {
            Frame::SearchRequest(h) => {
                h.write(&mut body);
                service::SEARCH_REQUEST
            }
            Frame::SearchResponse(r) => {
                r.control.write(&mut body);
                let mut name = [0u8; 30];
                for (d, s) in name.iter_mut().zip(r.name.bytes()) {
                    *d = s;
                }
                body.extend_from_slice(&[54, 0x01, 0x02, 0x00]);
                body.extend_from_slice(&r.address.0.to_be_bytes());
                body.extend_from_slice(&[0; 2 + 6 + 4 + 6]);
                body.extend_from_slice(&name);
                let mut families = vec![0x02, 0x01];
                if r.tunnelling {
                    families.extend_from_slice(&[0x04, 0x01]);
                }
                if r.routing {
                    families.extend_from_slice(&[0x05, 0x01]);
                }
                body.push(2 + families.len() as u8);
                body.push(0x02);
                body.extend_from_slice(&families);
                service::SEARCH_RESPONSE
            }
            Frame::ConnectRequest {
                control,
                data,
                address,
            } => {
                control.write(&mut body);
                data.write(&mut body);
                match address {
                    Some(a) => {
                        body.extend_from_slice(&[6, 0x04, 0x02, 0x00]);
                        body.extend_from_slice(&a.0.to_be_bytes());
                    }
                    None => body.extend_from_slice(&[4, 0x04, 0x02, 0x00]),
                }
                service::CONNECT_REQUEST
            }
            Frame::ConnectResponse {
                channel,
                status,
                address,
            } => {
                body.push(*channel);
                body.push(*status);
                if *status == 0 {
                    Hpai::tcp().write(&mut body);
                    body.extend_from_slice(&[4, 0x04]);
                    body.extend_from_slice(&address.unwrap_or_default().0.to_be_bytes());
                }
                service::CONNECT_RESPONSE
            }
            Frame::StateRequest { channel, control } => {
                body.extend_from_slice(&[*channel, 0]);
                control.write(&mut body);
                service::CONNECTIONSTATE_REQUEST
            }
            Frame::StateResponse { channel, status } => {
                body.extend_from_slice(&[*channel, *status]);
                service::CONNECTIONSTATE_RESPONSE
            }
            Frame::DisconnectRequest { channel, control } => {
                body.extend_from_slice(&[*channel, 0]);
                control.write(&mut body);
                service::DISCONNECT_REQUEST
            }
            Frame::DisconnectResponse { channel, status } => {
                body.extend_from_slice(&[*channel, *status]);
                service::DISCONNECT_RESPONSE
            }
            Frame::TunnelRequest { channel, seq, cemi } => {
                body.extend_from_slice(&[4, *channel, *seq, 0]);
                body.extend_from_slice(cemi);
                service::TUNNELLING_REQUEST
            }
            Frame::TunnelAck {
                channel,
                seq,
                status,
            } => {
                body.extend_from_slice(&[4, *channel, *seq, *status]);
                service::TUNNELLING_ACK
            }
            Frame::RoutingIndication(cemi) => {
                body.extend_from_slice(cemi);
                service::ROUTING_INDICATION
            }
            Frame::RoutingBusy => {
                body.extend_from_slice(&[6, 0, 0, 100, 0, 0]);
                service::ROUTING_BUSY
            }
            Frame::Other(st) => *st,
        };
        let total = (body.len() + 6) as u16;
        let mut v = Vec::with_capacity(total as usize);
        v.extend_from_slice(&[HEADER_LEN, VERSION]);
        v.extend_from_slice(&st.to_be_bytes());
        v.extend_from_slice(&total.to_be_bytes());
        v.extend_from_slice(&body);
        v
    }
}

/// The total length a header announces (for framing a TCP stream); `Err` when the six
/// bytes are not a KNXnet/IP header.
pub fn frame_len(header: &[u8]) -> Result<usize, FrameError> {
    need("KNXnet/IP header", header, 6)?;
    if header[0] != HEADER_LEN {
        return Err(FrameError::Bad {
            what: "header length",
            value: u32::from(header[0]),
        });
    }
    if header[1] != VERSION {
        return Err(FrameError::Bad {
            what: "protocol version",
            value: u32::from(header[1]),
        });
    }
    let total = u16::from_be_bytes([header[4], header[5]]) as usize;
    if !(6..=MAX_FRAME).contains(&total) {
        return Err(FrameError::Bad {
            what: "total length",
            value: total as u32,
        });
    }
    Ok(total)
}

/// Parses one KNXnet/IP frame (a whole datagram).
pub fn parse_frame(b: &[u8]) -> Result<Frame, FrameError> {
    let total = frame_len(b)?;
    if total != b.len() {
        return Err(FrameError::Length {
            header: total,
            actual: b.len(),
        });
    }
    let st = u16::from_be_bytes([b[2], b[3]]);
    let body = &b[6..];
    let conn_header = |what: &'static str| -> Result<(u8, u8, &[u8]), FrameError> {
        need(what, body, 4)?;
        if body[0] != 4 {
            return Err(FrameError::Bad {
                what: "connection header length",
                value: u32::from(body[0]),
            });
        }
        Ok((body[1], body[2], &body[4..]))
    };
    Ok(match st {
        service::SEARCH_REQUEST => Frame::SearchRequest(Hpai::parse(body)?),
        service::SEARCH_RESPONSE => Frame::SearchResponse(parse_search_response(body)?),
        service::CONNECT_REQUEST => {
            let control = Hpai::parse(body)?;
            let data = Hpai::parse(&body[8..])?;
            let cri = &body[16..];
            need("CRI", cri, 4)?;
            let address = if cri[0] >= 6 && cri.len() >= 6 {
                Some(IndividualAddress(u16::from_be_bytes([cri[4], cri[5]])))
            } else {
                None
            };
            Frame::ConnectRequest {
                control,
                data,
                address,
            }
        }
        service::CONNECT_RESPONSE => {
            need("CONNECT_RESPONSE", body, 2)?;
            let (channel, status) = (body[0], body[1]);
            let address = if status == 0 {
                need("CONNECT_RESPONSE", body, 2 + 8 + 4)?;
                let crd = &body[10..];
                Some(IndividualAddress(u16::from_be_bytes([crd[2], crd[3]])))
            } else {
                None
            };
            Frame::ConnectResponse {
                channel,
                status,
                address,
            }
        }
        service::CONNECTIONSTATE_REQUEST | service::DISCONNECT_REQUEST => {
            need("request", body, 2)?;
            let control = Hpai::parse(&body[2..])?;
            if st == service::CONNECTIONSTATE_REQUEST {
                Frame::StateRequest {
                    channel: body[0],
                    control,
                }
            } else {
                Frame::DisconnectRequest {
                    channel: body[0],
                    control,
                }
            }
        }
        service::CONNECTIONSTATE_RESPONSE | service::DISCONNECT_RESPONSE => {
            need("response", body, 2)?;
            if st == service::CONNECTIONSTATE_RESPONSE {
                Frame::StateResponse {
                    channel: body[0],
                    status: body[1],
                }
            } else {
                Frame::DisconnectResponse {
                    channel: body[0],
                    status: body[1],
                }
            }
        }
        service::TUNNELLING_REQUEST => {
            let (channel, seq, rest) = conn_header("TUNNELLING_REQUEST")?;
            Frame::TunnelRequest {
                channel,
                seq,
                cemi: rest.to_vec(),
            }
        }
        service::TUNNELLING_ACK => {
            need("TUNNELLING_ACK", body, 4)?;
            let (channel, seq, _) = conn_header("TUNNELLING_ACK")?;
            Frame::TunnelAck {
                channel,
                seq,
                status: body[3],
            }
        }
        service::ROUTING_INDICATION => Frame::RoutingIndication(body.to_vec()),
        service::ROUTING_BUSY => Frame::RoutingBusy,
        other => Frame::Other(other),
    })
}

fn parse_search_response(body: &[u8]) -> Result<SearchResponse, FrameError> {
    let control = Hpai::parse(body)?;
    let mut rest = &body[8..];
    let mut out = SearchResponse {
        control,
        address: IndividualAddress(0),
        name: String::new(),
        tunnelling: false,
        routing: false,
    };
    while rest.len() >= 2 {
        let len = rest[0] as usize;
        if len < 2 || len > rest.len() {
            return Err(FrameError::Bad {
                what: "DIB length",
                value: len as u32,
            });
        }
        let dib = &rest[..len];
        match dib[1] {
            0x01 if len >= 54 => {
                out.address = IndividualAddress(u16::from_be_bytes([dib[4], dib[5]]));
                let name = &dib[24..54];
                let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                out.name = name[..end].iter().map(|&c| c as char).collect();
            }
            0x02 => {
                for fam in dib[2..].chunks_exact(2) {
                    match fam[0] {
                        0x04 => out.tunnelling = true,
                        0x05 => out.routing = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_addresses() {
        assert_eq!(GroupAddress::parse("1/0/5").unwrap().0, 0x0805);
        assert_eq!(GroupAddress::parse("31/7/255").unwrap().0, 0xFFFF);
        assert_eq!(GroupAddress::parse("1/5").unwrap().0, 0x0805);
        assert_eq!(GroupAddress::parse("2053").unwrap().0, 0x0805);
        assert_eq!(GroupAddress(0x0805).to_string(), "1/0/5");
        for bad in ["32/0/0", "1/8/0", "1/0/256", "a/b", "", "1/2/3/4", "1/2048"] {
            assert!(GroupAddress::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(IndividualAddress::parse("1.0.10").unwrap().0, 0x100A);
        assert_eq!(IndividualAddress(0x100A).to_string(), "1.0.10");
        assert!(IndividualAddress::parse("16.0.0").is_err());
    }

    #[test]
    fn cemi_round_trip() {
        for (apci, payload) in [
            (Apci::Read, Payload::Small(0)),
            (Apci::Write, Payload::Small(1)),
            (Apci::Response, Payload::Bytes(vec![0x0C, 0x1A])),
            (Apci::Write, Payload::Bytes(b"hello".to_vec())),
        ] {
            let t = GroupTelegram::request(
                IndividualAddress(0x1101),
                GroupAddress(0x0806),
                apci,
                payload,
            );
            assert_eq!(parse_cemi(&t.to_cemi()).unwrap(), Cemi::Group(t));
        }
        // A GroupValueWrite of 0x0C1A to 1/0/6 as a gateway sends it (L_Data.ind).
        let ind = [
            0x29, 0x00, 0xBC, 0xE0, 0x11, 0x01, 0x08, 0x06, 0x03, 0x00, 0x80, 0x0C, 0x1A,
        ];
        let Cemi::Group(g) = parse_cemi(&ind).unwrap() else {
            panic!()
        };
        assert_eq!(g.apci, Apci::Write);
        assert_eq!(g.payload, Payload::Bytes(vec![0x0C, 0x1A]));
        assert_eq!(g.source.to_string(), "1.1.1");
        assert!(parse_cemi(&ind[..10]).is_err());
    }

    #[test]
    fn frames_round_trip() {
        let h = Hpai {
            udp: true,
            addr: "127.0.0.1:40000".parse().unwrap(),
        };
        let frames = [
            Frame::SearchRequest(h),
            Frame::ConnectRequest {
                control: h,
                data: h,
                address: None,
            },
            Frame::ConnectRequest {
                control: Hpai::tcp(),
                data: Hpai::tcp(),
                address: Some(IndividualAddress(0x100A)),
            },
            Frame::ConnectResponse {
                channel: 3,
                status: 0,
                address: Some(IndividualAddress(2)),
            },
            Frame::StateRequest {
                channel: 3,
                control: h,
            },
            Frame::StateResponse {
                channel: 3,
                status: 0,
            },
            Frame::DisconnectRequest {
                channel: 3,
                control: h,
            },
            Frame::DisconnectResponse {
                channel: 3,
                status: 0,
            },
            Frame::TunnelRequest {
                channel: 3,
                seq: 7,
                cemi: vec![0x29, 0],
            },
            Frame::TunnelAck {
                channel: 3,
                seq: 7,
                status: 0,
            },
            Frame::RoutingIndication(vec![0x29, 0]),
            Frame::SearchResponse(SearchResponse {
                control: h,
                address: IndividualAddress(0x1100),
                name: "knxd".into(),
                tunnelling: true,
                routing: false,
            }),
        ];
        for f in frames {
            let b = f.to_bytes();
            assert_eq!(frame_len(&b).unwrap(), b.len());
            assert_eq!(parse_frame(&b).unwrap(), f);
        }
        assert!(parse_frame(&[6, 0x10, 4, 0x20, 0, 7, 0]).is_err());
        assert!(parse_frame(&[6, 0x10, 4, 0x20, 0, 6]).is_err());
        assert!(parse_frame(&[5, 0x10, 4, 0x20, 0, 6]).is_err());
    }
}
