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
