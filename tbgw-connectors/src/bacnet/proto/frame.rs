//! The three layers of a BACnet/IP datagram: BVLC (Annex J: the 4-byte header, and the
//! originator address of a forwarded NPDU), NPDU (clause 6: version, control, the optional
//! remote destination and source `net:addr`, hop count, network-layer messages) and the
//! APDU header (clause 20.1: the eight PDU types). [`decode`] turns a datagram into a
//! [`Packet`] and never panics; [`encode`] builds one.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::tags::{DecodeError, Reader};

/// BVLC type for BACnet/IP.
pub const BVLC_TYPE: u8 = 0x81;
/// BVLC functions used here.
pub mod bvlc {
    /// BVLC-Result.
    pub const RESULT: u8 = 0x00;
    /// Forwarded-NPDU (from a BBMD).
    pub const FORWARDED_NPDU: u8 = 0x04;
    /// Register-Foreign-Device.
    pub const REGISTER_FOREIGN_DEVICE: u8 = 0x05;
    /// Distribute-Broadcast-To-Network (a foreign device's broadcast, via its BBMD).
    pub const DISTRIBUTE_BROADCAST: u8 = 0x09;
    /// Original-Unicast-NPDU.
    pub const UNICAST: u8 = 0x0a;
    /// Original-Broadcast-NPDU.
    pub const BROADCAST: u8 = 0x0b;
}

/// A station on a remote BACnet network (`net:addr`, behind a router).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Remote {
    /// The network number (0xFFFF = global broadcast as a destination).
    pub net: u16,
    /// The MAC address on that network (empty = broadcast on it).
    pub addr: Vec<u8>,
}

/// The network layer header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Npdu {
    /// Destination behind a router.
    pub dest: Option<Remote>,
    /// Source behind a router (set by the router that forwarded it).
    pub source: Option<Remote>,
    /// The data expecting reply bit.
    pub expecting_reply: bool,
    /// A network-layer message type instead of an APDU.
    pub network_message: Option<u8>,
}

/// APDU PDU types.
#[derive(Debug, Clone, PartialEq)]
pub enum Apdu {
    /// BACnet-Confirmed-Request-PDU.
    Confirmed {
        /// A segment of a segmented request.
        segmented: bool,
        /// More segments follow.
        more: bool,
        /// The sender accepts a segmented response.
        segmented_accepted: bool,
        /// Maximum segments accepted (encoded).
        max_segments: u8,
        /// Maximum APDU accepted (encoded, see [`max_apdu_code`]).
        max_apdu: u8,
        /// The invoke id.
        invoke_id: u8,
        /// The service choice.
        service: u8,
        /// The service request.
        data: Vec<u8>,
    },
    /// BACnet-Unconfirmed-Request-PDU.
    Unconfirmed {
        /// The service choice.
        service: u8,
        /// The service request.
        data: Vec<u8>,
    },
    /// BACnet-SimpleACK-PDU.
    SimpleAck {
        /// The invoke id.
        invoke_id: u8,
        /// The service acknowledged.
        service: u8,
    },
    /// BACnet-ComplexACK-PDU.
    ComplexAck {
        /// A segment of a segmented answer.
        segmented: bool,
        /// More segments follow.
        more: bool,
        /// The invoke id.
        invoke_id: u8,
        /// The segment's sequence number (0 when not segmented).
        sequence: u8,
        /// The proposed window size (0 when not segmented).
        window: u8,
        /// The service acknowledged.
        service: u8,
        /// The ack's data.
        data: Vec<u8>,
    },
    /// BACnet-SegmentACK-PDU.
    SegmentAck {
        /// A negative acknowledgement (a segment was missed).
        negative: bool,
        /// Sent by the server.
        server: bool,
        /// The invoke id.
        invoke_id: u8,
        /// The last segment received in order.
        sequence: u8,
        /// The actual window size.
        window: u8,
    },
    /// BACnet-Error-PDU.
    Error {
        /// The invoke id.
        invoke_id: u8,
        /// The service that failed.
        service: u8,
        /// Error class.
        class: u32,
        /// Error code.
        code: u32,
    },
    /// BACnet-Reject-PDU.
    Reject {
        /// The invoke id.
        invoke_id: u8,
        /// Reject reason.
        reason: u8,
    },
    /// BACnet-Abort-PDU.
    Abort {
        /// Sent by the server.
        server: bool,
        /// The invoke id.
        invoke_id: u8,
        /// Abort reason.
        reason: u8,
    },
}

impl Apdu {
    /// The invoke id of an answer (acks, errors, rejects, aborts).
    pub fn answer_invoke_id(&self) -> Option<u8> {
        match self {
            Apdu::SimpleAck { invoke_id, .. }
            | Apdu::ComplexAck { invoke_id, .. }
            | Apdu::SegmentAck { invoke_id, .. }
            | Apdu::Error { invoke_id, .. }
            | Apdu::Reject { invoke_id, .. }
            | Apdu::Abort { invoke_id, .. } => Some(*invoke_id),
            _ => None,
        }
    }
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The BVLC function.
    pub function: u8,
    /// The originator of a Forwarded-NPDU.
    pub forwarded_from: Option<SocketAddrV4>,
    /// The BVLC-Result code, for a BVLC-Result.
    pub result: Option<u16>,
    /// The network header (absent for BVLC-only messages).
    pub npdu: Option<Npdu>,
    /// The APDU (absent for network-layer and BVLC-only messages).
    pub apdu: Option<Apdu>,
}

/// The encoded max-APDU value for a length (clause 20.1.2.5).
pub fn max_apdu_code(len: u16) -> u8 {
    match len {
        0..=127 => 0,
        128..=205 => 1,
        206..=479 => 2,
        480..=1023 => 3,
        1024..=1475 => 4,
        _ => 5,
    }
}

/// The length of an encoded max-APDU value.
pub fn max_apdu_len(code: u8) -> u16 {
    match code & 0x0f {
        0 => 50,
        1 => 128,
        2 => 206,
        3 => 480,
        4 => 1024,
        _ => 1476,
    }
}

fn remote(r: &mut Reader<'_>) -> Result<Remote, DecodeError> {
    let net = r.u16()?;
    let len = r.u8()? as usize;
    Ok(Remote {
        net,
        addr: r.take(len)?.to_vec(),
    })
}

/// Decodes a BACnet/IP datagram.
pub fn decode(datagram: &[u8]) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(datagram);
    if r.u8()? != BVLC_TYPE {
        return Err(DecodeError::new("not BACnet/IP (BVLC type is not 0x81)"));
    }
    let function = r.u8()?;
    let len = r.u16()? as usize;
    if len != datagram.len() {
        return Err(DecodeError::new(format!(
            "BVLC length {len} but the datagram has {} bytes",
            datagram.len()
        )));
    }
    let mut p = Packet {
        function,
        forwarded_from: None,
        result: None,
        npdu: None,
        apdu: None,
    };
    match function {
        bvlc::RESULT => {
            p.result = Some(r.u16()?);
            return Ok(p);
        }
        bvlc::FORWARDED_NPDU => {
            let a = r.take(6)?;
            p.forwarded_from = Some(SocketAddrV4::new(
                Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                u16::from_be_bytes([a[4], a[5]]),
            ));
        }
        bvlc::UNICAST | bvlc::BROADCAST | bvlc::DISTRIBUTE_BROADCAST => {}
        _ => return Ok(p),
    }
    // NPDU
    if r.u8()? != 1 {
        return Err(DecodeError::new("NPDU version is not 1"));
    }
    let control = r.u8()?;
    let mut n = Npdu {
        expecting_reply: control & 0x04 != 0,
        ..Npdu::default()
    };
    if control & 0x20 != 0 {
        n.dest = Some(remote(&mut r)?);
    }
    if control & 0x08 != 0 {
        n.source = Some(remote(&mut r)?);
    }
    if n.dest.is_some() {
        r.u8()?; // hop count
    }
    if control & 0x80 != 0 {
        let t = r.u8()?;
        if t >= 0x80 {
            r.u16()?; // vendor id
        }
        n.network_message = Some(t);
        p.npdu = Some(n);
        return Ok(p);
    }
    p.npdu = Some(n);
    p.apdu = Some(decode_apdu(r.rest())?);
    Ok(p)
}

/// Decodes an APDU.
pub fn decode_apdu(b: &[u8]) -> Result<Apdu, DecodeError> {
    let mut r = Reader::new(b);
    let first = r.u8()?;
    Ok(match first >> 4 {
        0 => {
            let segmented = first & 0x08 != 0;
            let more = first & 0x04 != 0;
            let segmented_accepted = first & 0x02 != 0;
            let m = r.u8()?;
            let invoke_id = r.u8()?;
            if segmented {
                r.take(2)?; // sequence number, window
            }
            let service = r.u8()?;
            Apdu::Confirmed {
                segmented,
                more,
                segmented_accepted,
                max_segments: (m >> 4) & 0x07,
                max_apdu: m & 0x0f,
                invoke_id,
                service,
                data: r.rest().to_vec(),
            }
        }
        1 => Apdu::Unconfirmed {
            service: r.u8()?,
            data: r.rest().to_vec(),
        },
        2 => Apdu::SimpleAck {
            invoke_id: r.u8()?,
            service: r.u8()?,
        },
        3 => {
            let segmented = first & 0x08 != 0;
            let more = first & 0x04 != 0;
            let invoke_id = r.u8()?;
            let (sequence, window) = if segmented {
                let b = r.take(2)?;
                (b[0], b[1])
            } else {
                (0, 0)
            };
            Apdu::ComplexAck {
                segmented,
                more,
                invoke_id,
                sequence,
                window,
                service: r.u8()?,
                data: r.rest().to_vec(),
            }
        }
        4 => {
            let b = r.take(3)?;
            Apdu::SegmentAck {
                negative: first & 0x02 != 0,
                server: first & 0x01 != 0,
                invoke_id: b[0],
                sequence: b[1],
                window: b[2],
            }
        }
        5 => {
            let invoke_id = r.u8()?;
            let service = r.u8()?;
            // Most errors are two enumerations; some services wrap them in opening tag 0.
            let wrapped = r.next_is_open(0);
            if wrapped {
                r.tag()?;
            }
            let class = enumerated(&mut r)?;
            let code = enumerated(&mut r)?;
            Apdu::Error {
                invoke_id,
                service,
                class,
                code,
            }
        }
        6 => Apdu::Reject {
            invoke_id: r.u8()?,
            reason: r.u8()?,
        },
        7 => Apdu::Abort {
            server: first & 0x01 != 0,
            invoke_id: r.u8()?,
            reason: r.u8()?,
        },
        t => return Err(DecodeError::new(format!("unknown PDU type {t}"))),
    })
}

fn enumerated(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    match r.app_value()? {
        super::tags::AppValue::Enumerated(v) => Ok(v),
        v => Err(DecodeError::new(format!(
            "expected an enumeration, got {v:?}"
        ))),
    }
}

/// Builds a datagram: BVLC function, the NPDU's optional remote destination, and the APDU.
pub fn encode(function: u8, dest: Option<&Remote>, expecting_reply: bool, apdu: &Apdu) -> Vec<u8> {
    let mut out = vec![BVLC_TYPE, function, 0, 0, 1];
    let mut control = if expecting_reply { 0x04 } else { 0 };
    if dest.is_some() {
        control |= 0x20;
    }
    out.push(control);
    if let Some(d) = dest {
        out.extend_from_slice(&d.net.to_be_bytes());
        out.push(d.addr.len() as u8);
        out.extend_from_slice(&d.addr);
        out.push(255); // hop count
    }
    match apdu {
        Apdu::Confirmed {
            segmented_accepted,
            max_segments,
            max_apdu,
            invoke_id,
            service,
            data,
            ..
        } => {
            out.push(if *segmented_accepted { 0x02 } else { 0 });
            out.push(((max_segments & 0x07) << 4) | (max_apdu & 0x0f));
            out.push(*invoke_id);
            out.push(*service);
            out.extend_from_slice(data);
        }
        Apdu::Unconfirmed { service, data } => {
            out.push(0x10);
            out.push(*service);
            out.extend_from_slice(data);
        }
        Apdu::SimpleAck { invoke_id, service } => {
            out.extend_from_slice(&[0x20, *invoke_id, *service]);
        }
        Apdu::ComplexAck {
            segmented,
            more,
            invoke_id,
            sequence,
            window,
            service,
            data,
        } => {
            if *segmented {
                let first = 0x38 | if *more { 0x04 } else { 0 };
                out.extend_from_slice(&[first, *invoke_id, *sequence, *window, *service]);
            } else {
                out.extend_from_slice(&[0x30, *invoke_id, *service]);
            }
            out.extend_from_slice(data);
        }
        Apdu::SegmentAck {
            negative,
            server,
            invoke_id,
            sequence,
            window,
        } => {
            let first = 0x40 | if *negative { 0x02 } else { 0 } | u8::from(*server);
            out.extend_from_slice(&[first, *invoke_id, *sequence, *window]);
        }
        Apdu::Error {
            invoke_id,
            service,
            class,
            code,
        } => {
            out.extend_from_slice(&[0x50, *invoke_id, *service]);
            let mut w = super::tags::Writer::new();
            w.app(&super::tags::AppValue::Enumerated(*class));
            w.app(&super::tags::AppValue::Enumerated(*code));
            out.extend_from_slice(&w.buf);
        }
        Apdu::Reject { invoke_id, reason } => {
            out.extend_from_slice(&[0x60, *invoke_id, *reason]);
        }
        Apdu::Abort {
            server,
            invoke_id,
            reason,
        } => {
            out.extend_from_slice(&[0x70 | u8::from(*server), *invoke_id, *reason]);
        }
    }
    let len = out.len() as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// A Register-Foreign-Device request with a time-to-live in seconds.
pub fn register_foreign_device(ttl: u16) -> Vec<u8> {
    let t = ttl.to_be_bytes();
    vec![BVLC_TYPE, bvlc::REGISTER_FOREIGN_DEVICE, 0, 6, t[0], t[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip() {
        for a in [
            Apdu::ComplexAck {
                segmented: true,
                more: true,
                invoke_id: 9,
                sequence: 3,
                window: 4,
                service: 14,
                data: vec![1, 2, 3],
            },
            Apdu::SegmentAck {
                negative: true,
                server: false,
                invoke_id: 9,
                sequence: 2,
                window: 4,
            },
        ] {
            let d = encode(bvlc::UNICAST, None, false, &a);
            assert_eq!(decode(&d).unwrap().apdu, Some(a));
        }
    }

    #[test]
    fn confirmed_request_round_trip() {
        let a = Apdu::Confirmed {
            segmented: false,
            more: false,
            segmented_accepted: false,
            max_segments: 0,
            max_apdu: 5,
            invoke_id: 7,
            service: 12,
            data: vec![0x0c, 0x00, 0x80, 0, 1, 0x19, 0x55],
        };
        let d = encode(bvlc::UNICAST, None, true, &a);
        assert_eq!(
            d,
            [0x81, 0x0a, 0, 17, 1, 4, 0x00, 0x05, 7, 12, 0x0c, 0x00, 0x80, 0, 1, 0x19, 0x55]
        );
        let p = decode(&d).unwrap();
        assert_eq!(p.apdu, Some(a));
        assert!(p.npdu.unwrap().expecting_reply);
    }

    #[test]
    fn routed_and_forwarded() {
        let dest = Remote {
            net: 2,
            addr: vec![5],
        };
        let a = Apdu::Unconfirmed {
            service: 8,
            data: vec![],
        };
        let d = encode(bvlc::BROADCAST, Some(&dest), false, &a);
        let p = decode(&d).unwrap();
        assert_eq!(p.npdu.unwrap().dest, Some(dest));
        // A Forwarded-NPDU from 10.0.0.9:47808 carrying an I-Am from net 3, mac 0x21.
        let mut f = vec![
            0x81, 0x04, 0, 0, 10, 0, 0, 9, 0xba, 0xc0, 1, 0x08, 0, 3, 1, 0x21,
        ];
        f.extend_from_slice(&[
            0x10, 0x00, 0xc4, 0x02, 0, 0, 5, 0x22, 0x05, 0xc4, 0x91, 0, 0x21, 15,
        ]);
        let l = f.len() as u16;
        f[2..4].copy_from_slice(&l.to_be_bytes());
        let p = decode(&f).unwrap();
        assert_eq!(
            p.forwarded_from,
            Some(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 47808))
        );
        assert_eq!(
            p.npdu.unwrap().source,
            Some(Remote {
                net: 3,
                addr: vec![0x21]
            })
        );
    }

    #[test]
    fn answers_decode() {
        for a in [
            Apdu::SimpleAck {
                invoke_id: 1,
                service: 15,
            },
            Apdu::Error {
                invoke_id: 2,
                service: 12,
                class: 2,
                code: 32,
            },
            Apdu::Reject {
                invoke_id: 3,
                reason: 9,
            },
            Apdu::Abort {
                server: true,
                invoke_id: 4,
                reason: 4,
            },
        ] {
            let d = encode(bvlc::UNICAST, None, false, &a);
            assert_eq!(decode(&d).unwrap().apdu, Some(a));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[0x81],
            &[0x81, 0x0a, 0, 4],
            &[0x81, 0x0a, 0, 9, 1, 0x20, 0, 2, 9],
            &[0x81, 0x0a, 0, 6, 2, 0],
            &[0x81, 0x0a, 0, 7, 1, 0, 0x50],
            &[0x81, 0x04, 0, 6, 1, 2],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(max_apdu_len(max_apdu_code(1476)), 1476);
        assert_eq!(max_apdu_len(max_apdu_code(480)), 480);
    }
}
