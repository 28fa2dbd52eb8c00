//! The real bus: Linux SocketCAN through the `socketcan` crate's tokio sockets (raw CAN
//! sockets, `CAN_RAW_FD_FRAMES` when `backend.fd` is set, kernel receive filters from the
//! connector's routes).

use async_trait::async_trait;
use socketcan::{
    id::FdFlags, CanAnyFrame, CanDataFrame, CanFdFrame, EmbeddedFrame, ExtendedId, Id,
    SocketOptions, StandardId,
};

use super::bus::{BusError, BusSpec, CanBus, CanBusOpener, CanFilter, CanFrame};

/// The kernel's limit on receive filters per socket (`CAN_RAW_FILTER_MAX`); with more routes
/// than this the socket receives everything and the connector filters alone.
const MAX_KERNEL_FILTERS: usize = 512;

/// Opens SocketCAN interfaces (`"interface": "socketcan"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketCanOpener;

enum Sock {
    Classic(socketcan::tokio::CanSocket),
    Fd(socketcan::tokio::CanFdSocket),
}

/// One open SocketCAN socket.
pub struct SocketCanBus {
    channel: String,
    sock: Sock,
}

impl std::fmt::Debug for SocketCanBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketCanBus")
            .field("channel", &self.channel)
            .field("fd", &matches!(self.sock, Sock::Fd(_)))
            .finish()
    }
}

const EFF_FLAG: u32 = 0x8000_0000;

fn kernel_filter(f: &CanFilter) -> socketcan::CanFilter {
    if f.extended {
        socketcan::CanFilter::new(f.id | EFF_FLAG, f.mask | EFF_FLAG)
    } else {
        socketcan::CanFilter::new(f.id, f.mask | EFF_FLAG)
    }
}

impl CanBusOpener for SocketCanOpener {
    fn open(&self, spec: &BusSpec) -> Result<Box<dyn CanBus>, BusError> {
        let open_err = |e: std::io::Error| BusError::Open {
            channel: spec.channel.clone(),
            reason: e.to_string(),
        };
        let sock = if spec.fd {
            Sock::Fd(socketcan::tokio::CanFdSocket::open(&spec.channel).map_err(open_err)?)
        } else {
            Sock::Classic(socketcan::tokio::CanSocket::open(&spec.channel).map_err(open_err)?)
        };
        // Kernel receive timestamps: frames decoded together keep their own arrival times
        // (without them, the time of reading).
        let r = match &sock {
            Sock::Classic(s) => s.set_recv_timestamp(true),
            Sock::Fd(s) => s.set_recv_timestamp(true),
        };
        if let Err(e) = r {
            tracing::debug!(channel = %spec.channel, error = %e, "No kernel receive timestamps on this CAN socket.");
        }
        if !spec.filters.is_empty() && spec.filters.len() <= MAX_KERNEL_FILTERS {
            let filters: Vec<socketcan::CanFilter> =
                spec.filters.iter().map(kernel_filter).collect();
            let r = match &sock {
                Sock::Classic(s) => s.set_filters(&filters),
                Sock::Fd(s) => s.set_filters(&filters),
            };
            r.map_err(open_err)?;
        }
        Ok(Box::new(SocketCanBus {
            channel: spec.channel.clone(),
            sock,
        }))
    }
}

fn id_of(frame: &CanFrame) -> Option<Id> {
    if frame.extended {
        ExtendedId::new(frame.id).map(Id::Extended)
    } else {
        u16::try_from(frame.id)
            .ok()
            .and_then(StandardId::new)
            .map(Id::Standard)
    }
}

fn from_id(id: Id) -> (u32, bool) {
    match id {
        Id::Standard(s) => (u32::from(s.as_raw()), false),
        Id::Extended(e) => (e.as_raw(), true),
    }
}

impl SocketCanBus {
    fn io(&self, e: std::io::Error) -> BusError {
        BusError::Io {
            channel: self.channel.clone(),
            reason: e.to_string(),
        }
    }

    fn send_err(&self, frame: &CanFrame, e: std::io::Error) -> BusError {
        match e.raw_os_error() {
            // EINVAL: too long for the interface's MTU; ENOBUFS: the transmit queue is full.
            Some(libc_einval) if libc_einval == 22 || libc_einval == 105 => BusError::Refused {
                frame: frame.to_string(),
                reason: e.to_string(),
            },
            _ => self.io(e),
        }
    }
}

#[async_trait]
impl CanBus for SocketCanBus {
    async fn send(&mut self, frame: &CanFrame) -> Result<(), BusError> {
        let refused = |why: &str| BusError::Refused {
            frame: frame.to_string(),
            reason: why.to_string(),
        };
        let id = id_of(frame).ok_or_else(|| refused("arbitration id out of range"))?;
        let r = match &self.sock {
            Sock::Fd(s) if frame.fd => {
                let flags = if frame.brs {
                    FdFlags::BRS
                } else {
                    FdFlags::empty()
                };
                let f = CanFdFrame::with_flags(id, &frame.data, flags)
                    .ok_or_else(|| refused("does not fit a CAN FD frame"))?;
                s.write_frame(&f).await
            }
            Sock::Fd(s) => {
                let f = CanDataFrame::new(id, &frame.data)
                    .ok_or_else(|| refused("does not fit a classic CAN frame"))?;
                s.write_frame(&f).await
            }
            Sock::Classic(_) if frame.fd => {
                return Err(refused(
                    "a CAN FD frame, but the bus is open without backend.fd",
                ))
            }
            Sock::Classic(s) => {
                let f = socketcan::CanFrame::new(id, &frame.data)
                    .ok_or_else(|| refused("does not fit a classic CAN frame"))?;
                s.write_frame(f).await
            }
        };
        r.map_err(|e| self.send_err(frame, e))
    }

    async fn recv(&mut self) -> Result<CanFrame, BusError> {
        loop {
            let got = match &self.sock {
                Sock::Fd(s) => s.read_frame_with_timestamps().await,
                Sock::Classic(s) => s
                    .read_frame_with_timestamps()
                    .await
                    .map(|(f, t)| (classic(f), t)),
            };
            let (f, t) = got.map_err(|e| self.io(e))?;
            if let Some(f) = convert(f, t) {
                return Ok(f);
            }
        }
    }

    fn try_recv(&mut self) -> Option<Result<CanFrame, BusError>> {
        loop {
            // One poll: the socket is read when its readiness is known (it is right after a
            // frame); otherwise this is `Pending` and nothing is waiting.
            let got = match &self.sock {
                Sock::Fd(s) => poll_once(s.read_frame_with_timestamps())?,
                Sock::Classic(s) => {
                    poll_once(s.read_frame_with_timestamps())?.map(|(f, t)| (classic(f), t))
                }
            };
            match got {
                Ok((f, t)) => {
                    if let Some(f) = convert(f, t) {
                        return Some(Ok(f));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(Err(self.io(e))),
            }
        }
    }
}

/// Polls `f` once with a waker that does nothing.
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// A classic socket's frame as the FD socket's kind.
fn classic(f: socketcan::CanFrame) -> CanAnyFrame {
    match f {
        socketcan::CanFrame::Data(d) => CanAnyFrame::Normal(d),
        socketcan::CanFrame::Remote(r) => CanAnyFrame::Remote(r),
        socketcan::CanFrame::Error(e) => CanAnyFrame::Error(e),
    }
}

/// A data frame stamped with its arrival; `None` for remote and error frames (they carry no
/// values).
fn convert(f: CanAnyFrame, at: socketcan::CanTimestamps) -> Option<CanFrame> {
    let (id, fd, brs, data) = match f {
        CanAnyFrame::Normal(d) => (d.id(), false, false, d.data().to_vec()),
        CanAnyFrame::Fd(f) => (f.id(), true, f.is_brs(), f.data().to_vec()),
        _ => return None,
    };
    let (id, extended) = from_id(id);
    // No `SO_TIMESTAMPNS` message (the option was refused): the time of reading.
    let ts = at
        .socket
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(tbgw::model::now_millis);
    Some(CanFrame {
        id,
        extended,
        fd,
        brs,
        data,
        ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_frames_become_ours_with_their_timestamp() {
        let id = Id::Extended(ExtendedId::new(0x18FE_F100).unwrap());
        let d = CanDataFrame::new(id, &[1, 2, 3]).unwrap();
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let ts = socketcan::CanTimestamps {
            socket: Some(at),
            ..Default::default()
        };
        let f = convert(CanAnyFrame::Normal(d), ts).unwrap();
        assert_eq!(
            (f.id, f.extended, f.fd, f.data.clone(), f.ts),
            (0x18FE_F100, true, false, vec![1, 2, 3], 1_700_000_000_123)
        );
        let sid = Id::Standard(StandardId::new(0x123).unwrap());
        let fd = CanFdFrame::with_flags(sid, &[9; 12], FdFlags::BRS).unwrap();
        let f = convert(CanAnyFrame::Fd(fd), Default::default()).unwrap();
        assert!(f.fd && f.brs && !f.extended && f.id == 0x123 && f.data.len() == 12);
        assert!(f.ts > 0, "no kernel timestamp: the time of reading");
        let r = socketcan::CanRemoteFrame::new_remote(sid, 2).unwrap();
        assert!(convert(CanAnyFrame::Remote(r), Default::default()).is_none());
    }

    #[test]
    fn filters_carry_the_extended_flag() {
        let f = kernel_filter(&CanFilter {
            id: 0x100,
            mask: 0x7FF,
            extended: false,
        });
        assert_eq!(f, socketcan::CanFilter::new(0x100, 0x7FF | EFF_FLAG));
        let f = kernel_filter(&CanFilter {
            id: 0x00F0_0400,
            mask: 0x03FF_FF00,
            extended: true,
        });
        assert_eq!(
            f,
            socketcan::CanFilter::new(0x00F0_0400 | EFF_FLAG, 0x03FF_FF00 | EFF_FLAG)
        );
    }
}
