//! The seam between the connector and a CAN bus: frames, receive filters, and the [`CanBus`]
//! trait with its opener ([`CanBusOpener`]). The real bus is SocketCAN
//! ([`super::socketcan_bus`], Linux); tests use the in-process [`super::fake`] bus.

use std::fmt;

use async_trait::async_trait;

/// Largest standard (11-bit) identifier.
pub const MAX_STANDARD_ID: u32 = 0x7FF;
/// Largest extended (29-bit) identifier.
pub const MAX_EXTENDED_ID: u32 = 0x1FFF_FFFF;
/// Data bytes of a classic CAN frame, at most.
pub const CLASSIC_MAX: usize = 8;
/// Data bytes of a CAN FD frame, at most.
pub const FD_MAX: usize = 64;
/// The data lengths a CAN FD frame can have (a DLC names one of them).
pub const FD_LENGTHS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64];

/// One CAN or CAN FD data frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CanFrame {
    /// The arbitration id (11 or 29 bits).
    pub id: u32,
    /// A 29-bit (extended) id.
    pub extended: bool,
    /// A CAN FD frame (up to 64 data bytes).
    pub fd: bool,
    /// CAN FD bit rate switch.
    pub brs: bool,
    /// The data bytes.
    pub data: Vec<u8>,
    /// When the frame was received (ms since the Unix epoch; the kernel's receive timestamp
    /// on SocketCAN); 0: unknown (frames to send, or a bus without timestamps).
    pub ts: i64,
}

impl CanFrame {
    /// A checked frame: the id fits its width, the data fits the frame kind (8 bytes classic,
    /// 64 FD); `brs` needs `fd`. An FD frame whose length is not one of [`FD_LENGTHS`] is
    /// padded with zeros to the next one, as the kernel would send it.
    pub fn new(
        id: u32,
        extended: bool,
        fd: bool,
        brs: bool,
        mut data: Vec<u8>,
    ) -> Result<CanFrame, FrameError> {
        let max_id = if extended {
            MAX_EXTENDED_ID
        } else {
            MAX_STANDARD_ID
        };
        if id > max_id {
            return Err(FrameError(format!(
                "arbitration id {id:#x} does not fit {} bits",
                if extended { 29 } else { 11 }
            )));
        }
        if brs && !fd {
            return Err(FrameError(
                "bitrateSwitch needs a CAN FD frame (isFd)".into(),
            ));
        }
        let max = if fd { FD_MAX } else { CLASSIC_MAX };
        if data.len() > max {
            return Err(FrameError(format!(
                "{} data bytes, but a {} frame holds at most {max}",
                data.len(),
                if fd { "CAN FD" } else { "classic CAN" }
            )));
        }
        if fd {
            // Invariant: data.len() <= 64 = the last entry.
            let want = FD_LENGTHS
                .iter()
                .copied()
                .find(|&l| l >= data.len())
                .unwrap_or(FD_MAX);
            data.resize(want, 0);
        }
        Ok(CanFrame {
            id,
            extended,
            fd,
            brs,
            data,
            ts: 0,
        })
    }

    /// The id with the extended flag in bit 31 (the key the connector's routes use).
    pub fn key(&self) -> u32 {
        id_key(self.id, self.extended)
    }
}

impl fmt::Display for CanFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.extended {
            write!(f, "{:08X}", self.id)?;
        } else {
            write!(f, "{:03X}", self.id)?;
        }
        f.write_str(if self.fd { "##" } else { "#" })?;
        for b in &self.data {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// An id with the extended flag in bit 31.
pub fn id_key(id: u32, extended: bool) -> u32 {
    if extended {
        id | 0x8000_0000
    } else {
        id
    }
}

/// A frame that cannot be sent as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub String);

/// A receive filter: a frame passes when its id kind matches `extended` and
/// `frame.id & mask == id & mask` (SocketCAN's `can_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanFilter {
    /// The id bits to compare.
    pub id: u32,
    /// Which bits of the id count.
    pub mask: u32,
    /// Standard or extended ids.
    pub extended: bool,
}

impl CanFilter {
    /// Does `frame` pass?
    pub fn accepts(&self, frame: &CanFrame) -> bool {
        frame.extended == self.extended && (frame.id & self.mask) == (self.id & self.mask)
    }
}

/// Does `frame` pass `filters` (an empty list passes everything)?
pub fn passes(filters: &[CanFilter], frame: &CanFrame) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.accepts(frame))
}

/// What the connector asks of a bus when it opens one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusSpec {
    /// `interface` of the connector file (`socketcan`).
    pub interface: String,
    /// `channel`: the network interface (`can0`, `vcan0`).
    pub channel: String,
    /// `backend.fd`: send and receive CAN FD frames.
    pub fd: bool,
    /// Frames the connector wants; the bus may deliver more (the connector checks again).
    pub filters: Vec<CanFilter>,
}

/// An error of the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The interface could not be opened (missing, down, no CAN in the kernel).
    #[error("cannot open CAN interface {channel}: {reason}")]
    Open {
        /// The interface.
        channel: String,
        /// Why.
        reason: String,
    },
    /// The bus failed (interface down, bus-off, socket error): the connector reopens it.
    #[error("CAN bus {channel}: {reason}")]
    Io {
        /// The interface.
        channel: String,
        /// Why.
        reason: String,
    },
    /// This one frame was refused (too long for the interface, FD on a classic bus); the bus
    /// itself is fine.
    #[error("CAN frame {frame} refused: {reason}")]
    Refused {
        /// The frame, in `candump` notation.
        frame: String,
        /// Why.
        reason: String,
    },
}

impl BusError {
    /// Must the connector close and reopen the bus?
    pub fn is_fatal(&self) -> bool {
        !matches!(self, BusError::Refused { .. })
    }
}

/// An open CAN bus. Both methods must be cancel-safe: the connector `select!`s over
/// [`recv`](CanBus::recv) and drops it when something else is ready.
#[async_trait]
pub trait CanBus: Send {
    /// Sends one frame.
    async fn send(&mut self, frame: &CanFrame) -> Result<(), BusError>;
    /// The next frame that passes the filters (frames sent through this same bus are not
    /// received back).
    async fn recv(&mut self) -> Result<CanFrame, BusError>;
    /// A frame that is already waiting, without waiting (`None`: none). The connector drains
    /// the waiting frames after each [`recv`](CanBus::recv) to decode them in one batch. The
    /// default never has one.
    fn try_recv(&mut self) -> Option<Result<CanFrame, BusError>> {
        None
    }
}

/// Opens buses: [`SocketCanOpener`](super::socketcan_bus::SocketCanOpener) for real ones,
/// [`FakeCan`](super::fake::FakeCan) in tests.
pub trait CanBusOpener: Send + Sync + fmt::Debug {
    /// Opens the bus `spec` names.
    fn open(&self, spec: &BusSpec) -> Result<Box<dyn CanBus>, BusError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_checked_and_fd_is_padded() {
        assert!(CanFrame::new(0x800, false, false, false, vec![]).is_err());
        assert!(CanFrame::new(0x800, true, false, false, vec![]).is_ok());
        assert!(CanFrame::new(0x2000_0000, true, false, false, vec![]).is_err());
        assert!(CanFrame::new(1, false, false, false, vec![0; 9]).is_err());
        assert!(CanFrame::new(1, false, false, true, vec![]).is_err());
        let f = CanFrame::new(1, false, true, true, vec![1; 9]).unwrap();
        assert_eq!(f.data.len(), 12);
        assert!(CanFrame::new(1, false, true, false, vec![0; 65]).is_err());
        assert_eq!(f.to_string(), "001##010101010101010101000000");
    }

    #[test]
    fn filters_match_kind_and_masked_bits() {
        let f = CanFilter {
            id: 0x100,
            mask: 0x7F0,
            extended: false,
        };
        let frame = |id, ext| CanFrame::new(id, ext, false, false, vec![]).unwrap();
        assert!(f.accepts(&frame(0x10F, false)));
        assert!(!f.accepts(&frame(0x110, false)));
        assert!(!f.accepts(&frame(0x100, true)));
        assert!(passes(&[], &frame(1, false)));
    }
}
