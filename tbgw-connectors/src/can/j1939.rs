//! SAE J1939 addressing (beyond upstream, asked for in upstream #403): a 29-bit id is
//! priority (3 bits), data page (2 bits), PDU format (8), PDU specific (8) and source address
//! (8). The parameter group number (PGN) is the data page and PDU format, plus the PDU
//! specific byte when the format is 240 or more (PDU2, broadcast); below 240 (PDU1) the PDU
//! specific byte is the destination address. Entries with `pgn` match frames by PGN (and by
//! `sourceAddress` when given), whatever their priority and destination.

use super::bus::{CanFilter, CanFrame};

/// The Request PGN (59904): asks a node to send a PGN.
pub const PGN_REQUEST: u32 = 0xEA00;
/// The global (broadcast) address.
pub const GLOBAL: u8 = 0xFF;
/// The largest PGN (18 bits).
pub const MAX_PGN: u32 = 0x3FFFF;

/// The fields of a J1939 id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct J1939Id {
    /// Priority (0 highest ..= 7).
    pub priority: u8,
    /// Parameter group number.
    pub pgn: u32,
    /// Sender.
    pub source: u8,
    /// Destination of a PDU1 message; `None` for PDU2 (broadcast).
    pub destination: Option<u8>,
}

impl J1939Id {
    /// Splits a 29-bit id.
    pub fn from_id(id: u32) -> J1939Id {
        let dp = (id >> 24) & 0x3;
        let pf = (id >> 16) & 0xFF;
        let ps = (id >> 8) & 0xFF;
        let (pgn, destination) = if pf < 240 {
            ((dp << 16) | (pf << 8), Some(ps as u8))
        } else {
            ((dp << 16) | (pf << 8) | ps, None)
        };
        J1939Id {
            priority: ((id >> 26) & 0x7) as u8,
            pgn,
            source: (id & 0xFF) as u8,
            destination,
        }
    }

    /// The 29-bit id (a PDU1 PGN gets the destination, global when `None`).
    pub fn to_id(&self) -> u32 {
        let pgn = self.pgn & MAX_PGN;
        let pf = (pgn >> 8) & 0xFF;
        let pgn_bits = if pf < 240 {
            (pgn & 0x3FF00) | u32::from(self.destination.unwrap_or(GLOBAL))
        } else {
            pgn
        };
        (u32::from(self.priority & 7) << 26) | (pgn_bits << 8) | u32::from(self.source)
    }
}

/// The PGN of an extended frame's id.
pub fn pgn_of(id: u32) -> u32 {
    J1939Id::from_id(id).pgn
}

/// A receive filter for one PGN (and one sender, if given).
pub fn filter(pgn: u32, source: Option<u8>) -> CanFilter {
    let pdu1 = ((pgn >> 8) & 0xFF) < 240;
    let (id, mut mask) = if pdu1 {
        ((pgn & 0x3FF00) << 8, 0x03FF_0000)
    } else {
        (pgn << 8, 0x03FF_FF00)
    };
    let mut id = id;
    if let Some(sa) = source {
        id |= u32::from(sa);
        mask |= 0xFF;
    }
    CanFilter {
        id,
        mask,
        extended: true,
    }
}

/// A Request (PGN 59904) for `pgn`, from `source` to `destination` (global when `None`),
/// priority 6.
pub fn request(pgn: u32, source: u8, destination: Option<u8>) -> CanFrame {
    let id = J1939Id {
        priority: 6,
        pgn: PGN_REQUEST,
        source,
        destination: Some(destination.unwrap_or(GLOBAL)),
    }
    .to_id();
    let p = pgn.to_le_bytes();
    CanFrame {
        id,
        extended: true,
        fd: false,
        brs: false,
        data: vec![p[0], p[1], p[2]],
        ts: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_and_join() {
        // EEC1 (61444 = 0xF004) from the engine (0x00), priority 3.
        let eec1 = J1939Id::from_id(0x0CF0_0400);
        assert_eq!(
            eec1,
            J1939Id {
                priority: 3,
                pgn: 61444,
                source: 0,
                destination: None
            }
        );
        assert_eq!(eec1.to_id(), 0x0CF0_0400);
        // A PDU1 message (TSC1, PGN 0) to 0x00 from 0x03.
        let tsc1 = J1939Id::from_id(0x0C00_0003);
        assert_eq!((tsc1.pgn, tsc1.destination, tsc1.source), (0, Some(0), 3));
        assert_eq!(tsc1.to_id(), 0x0C00_0003);
        assert_eq!(pgn_of(0x18FE_F100), 65265);
    }

    #[test]
    fn filters_ignore_priority_and_destination() {
        let f = filter(61444, None);
        let frame = |id| CanFrame::new(id, true, false, false, vec![]).unwrap();
        assert!(f.accepts(&frame(0x0CF0_0400)));
        assert!(f.accepts(&frame(0x18F0_04FE)));
        assert!(!f.accepts(&frame(0x0CF0_0500)));
        let f = filter(0xEF00, Some(0x21));
        assert!(f.accepts(&frame(0x18EF_0521)));
        assert!(!f.accepts(&frame(0x18EF_0522)));
    }

    #[test]
    fn requests_carry_the_pgn_little_endian() {
        let r = request(65262, 0xF9, None);
        assert_eq!(r.id, 0x18EA_FFF9);
        assert_eq!(r.data, [0xEE, 0xFE, 0x00]);
    }
}

/// TP.CM, the transport protocol's connection management PGN (60416).
pub const PGN_TP_CM: u32 = 0xEC00;
/// TP.DT, the transport protocol's data transfer PGN (60160).
pub const PGN_TP_DT: u32 = 0xEB00;
/// TP.CM control byte of a broadcast announce message (BAM).
const BAM: u8 = 32;

/// One multi-packet broadcast being received.
#[derive(Debug, Clone)]
struct Transfer {
    pgn: u32,
    size: usize,
    packets: u8,
    next: u8,
    data: Vec<u8>,
}

/// Reassembles J1939 multi-packet broadcasts (BAM: a TP.CM announce, then TP.DT packets of 7
/// bytes numbered from 1) into one message of up to 1785 bytes, handed on as a frame with the
/// announced PGN's id (priority and source of the data packets). One transfer per sender at a
/// time, as the standard allows; a packet out of sequence or from a sender without an
/// announce drops the transfer ([`TpError`]). Connection-mode transfers (RTS/CTS) are
/// addressed to one node and not answered by the gateway.
#[derive(Debug, Default)]
pub struct Reassembler {
    transfers: std::collections::HashMap<u8, Transfer>,
}

/// A broken multi-packet transfer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("J1939 transfer from {sender:#04x}: {reason}")]
pub struct TpError {
    /// The sender's address.
    pub sender: u8,
    /// What was wrong.
    pub reason: String,
}

impl Reassembler {
    /// A reassembler with no transfer in progress.
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Feeds one frame: `Ok(Some(message))` when it completed a transfer, `Ok(None)` for
    /// other frames and transfers still in progress.
    pub fn feed(&mut self, f: &CanFrame) -> Result<Option<CanFrame>, TpError> {
        if !f.extended {
            return Ok(None);
        }
        let id = J1939Id::from_id(f.id);
        let err = |reason: String| TpError {
            sender: id.source,
            reason,
        };
        match id.pgn {
            PGN_TP_CM => {
                let [control, s0, s1, packets, _, p0, p1, p2, ..] = f.data[..] else {
                    return Err(err("TP.CM shorter than 8 bytes".into()));
                };
                if control != BAM {
                    return Ok(None);
                }
                let size = usize::from(u16::from_le_bytes([s0, s1]));
                let pgn = u32::from_le_bytes([p0, p1, p2, 0]);
                if !(9..=1785).contains(&size) || usize::from(packets) != size.div_ceil(7) {
                    self.transfers.remove(&id.source);
                    return Err(err(format!(
                        "BAM of {size} bytes in {packets} packets is not a valid announce"
                    )));
                }
                self.transfers.insert(
                    id.source,
                    Transfer {
                        pgn,
                        size,
                        packets,
                        next: 1,
                        data: Vec::with_capacity(usize::from(packets) * 7),
                    },
                );
                Ok(None)
            }
            PGN_TP_DT => {
                let Some(t) = self.transfers.get_mut(&id.source) else {
                    return Ok(None);
                };
                let (Some(&seq), Some(payload)) = (f.data.first(), f.data.get(1..8)) else {
                    self.transfers.remove(&id.source);
                    return Err(err("TP.DT shorter than 8 bytes".into()));
                };
                if seq != t.next {
                    let want = t.next;
                    self.transfers.remove(&id.source);
                    return Err(err(format!(
                        "packet {seq} where {want} was due: the transfer is dropped"
                    )));
                }
                t.data.extend_from_slice(payload);
                t.next = t.next.wrapping_add(1);
                if seq < t.packets {
                    return Ok(None);
                }
                // Invariant: present (just used above).
                let mut t = self.transfers.remove(&id.source).expect("transfer");
                t.data.truncate(t.size);
                let message = J1939Id {
                    priority: id.priority,
                    pgn: t.pgn,
                    source: id.source,
                    destination: None,
                };
                Ok(Some(CanFrame {
                    id: message.to_id(),
                    extended: true,
                    fd: false,
                    brs: false,
                    data: t.data,
                    ts: f.ts,
                }))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tp_tests {
    use super::*;

    fn frame(id: u32, data: &[u8]) -> CanFrame {
        CanFrame::new(id, true, false, false, data.to_vec()).unwrap()
    }

    /// A VIN (PGN 65260) of 17 bytes from 0x00: three packets.
    fn vin_frames() -> Vec<CanFrame> {
        let vin = b"1FUJGLDR12LM12345";
        let mut v = vec![frame(0x18EC_FF00, &[32, 17, 0, 3, 0xFF, 0xEC, 0xFE, 0x00])];
        for (i, chunk) in vin.chunks(7).enumerate() {
            let mut d = vec![i as u8 + 1];
            d.extend_from_slice(chunk);
            d.resize(8, 0xFF);
            v.push(frame(0x1CEB_FF00, &d));
        }
        v
    }

    #[test]
    fn a_broadcast_is_reassembled() {
        let mut r = Reassembler::new();
        let frames = vin_frames();
        assert_eq!(r.feed(&frames[0]), Ok(None));
        assert_eq!(r.feed(&frames[1]), Ok(None));
        assert_eq!(r.feed(&frames[2]), Ok(None));
        let m = r.feed(&frames[3]).unwrap().expect("complete");
        assert_eq!(m.data, b"1FUJGLDR12LM12345");
        let id = J1939Id::from_id(m.id);
        assert_eq!((id.pgn, id.source, id.priority), (65260, 0, 7));
    }

    #[test]
    fn broken_transfers_are_dropped_and_named() {
        let mut r = Reassembler::new();
        let frames = vin_frames();
        r.feed(&frames[0]).unwrap();
        r.feed(&frames[1]).unwrap();
        assert!(r.feed(&frames[3]).is_err(), "packet 3 before 2");
        assert_eq!(r.feed(&frames[2]), Ok(None), "no transfer any more");
        let bad = frame(0x18EC_FF00, &[32, 17, 0, 9, 0xFF, 0xEC, 0xFE, 0x00]);
        assert!(r.feed(&bad).is_err());
        assert!(r.feed(&frame(0x18EC_FF00, &[32, 1])).is_err());
        // RTS (connection mode) is not ours to answer.
        let rts = frame(0x18EC_2100, &[16, 17, 0, 3, 0xFF, 0xEC, 0xFE, 0x00]);
        assert_eq!(r.feed(&rts), Ok(None));
    }
}
