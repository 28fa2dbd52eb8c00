//! One S7 connection over tokio TCP: connect (COTP with TSAPs, then setup communication),
//! ReadVar and WriteVar, each request answered before the next is sent, every step under a
//! timeout.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proto::{self, ItemError, ProtoError, Range, WriteItem};

/// The PDU size offered (what S7-300 CPUs and Snap7 agree to at most is 480 or 960).
pub const OFFERED_PDU: u16 = 960;

/// Why a request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// TCP connect or I/O failed, or the connection was closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer was malformed, or the PLC refused the request.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The PLC refused the item (no such DB, out of range, ...).
    #[error("the PLC refused the item: {0}")]
    Item(ItemError),
}

impl ClientError {
    /// True when the answer itself was malformed (a conversion error, not a lost link).
    pub fn is_malformed(&self) -> bool {
        matches!(self, ClientError::Proto(ProtoError::Malformed(_)))
    }
}

/// One connection to a PLC or LOGO.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    pdu: u16,
    next_ref: u16,
    timeout: Duration,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `host:port` with the local and remote TSAP and negotiates the PDU size.
    pub async fn connect(
        host: &str,
        port: u16,
        local_tsap: u16,
        remote_tsap: u16,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        let _ = stream.set_nodelay(true);
        let mut c = Client {
            stream,
            pdu: 240,
            next_ref: 0,
            timeout,
            buf: Vec::with_capacity(proto::MAX_FRAME),
        };
        c.send(&proto::connect_request(local_tsap, remote_tsap))
            .await?;
        let f = c.recv().await?;
        proto::check_connect_confirm(f)?;
        let r = c.take_ref();
        c.send(&proto::setup_request(r, OFFERED_PDU)).await?;
        let f = c.recv().await?;
        let pdu = proto::parse_setup_response(f, r)?;
        c.pdu = pdu.min(OFFERED_PDU);
        Ok(c)
    }

    /// The negotiated PDU size.
    pub fn pdu_size(&self) -> u16 {
        self.pdu
    }

    fn take_ref(&mut self) -> u16 {
        self.next_ref = self.next_ref.wrapping_add(1).max(1);
        self.next_ref
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeout, self.stream.write_all(frame))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        Ok(())
    }

    /// Reads one whole frame (TPKT header first).
    async fn recv(&mut self) -> Result<&[u8], ClientError> {
        let timeout = self.timeout;
        let read = async {
            self.buf.clear();
            self.buf.resize(proto::TPKT_LEN, 0);
            self.stream.read_exact(&mut self.buf).await?;
            let len = proto::frame_len(&self.buf)?;
            self.buf.resize(len, 0);
            self.stream
                .read_exact(&mut self.buf[proto::TPKT_LEN..])
                .await?;
            Ok::<(), ClientError>(())
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        Ok(&self.buf)
    }

    /// One ReadVar of `items` (the caller keeps it within the PDU size).
    pub async fn read(
        &mut self,
        items: &[Range],
    ) -> Result<Vec<Result<Vec<u8>, ItemError>>, ClientError> {
        let r = self.take_ref();
        self.send(&proto::read_request(r, items)).await?;
        let f = self.recv().await?;
        Ok(proto::parse_read_response(f, r, items.len())?)
    }

    /// One WriteVar of `items`.
    pub async fn write(
        &mut self,
        items: &[WriteItem],
    ) -> Result<Vec<Result<(), ItemError>>, ClientError> {
        let r = self.take_ref();
        self.send(&proto::write_request(r, items)).await?;
        let f = self.recv().await?;
        Ok(proto::parse_write_response(f, r, items.len())?)
    }

    /// Reads `len` bytes from `range.start`, in as many requests as the PDU size needs.
    pub async fn read_bytes(&mut self, range: Range) -> Result<Vec<u8>, ClientError> {
        let max = (usize::from(self.pdu).saturating_sub(proto::read_response_size([0])) & !1).max(2)
            as u16;
        let mut out = Vec::with_capacity(usize::from(range.len));
        let mut off = 0u16;
        while off < range.len {
            let len = (range.len - off).min(max);
            let part = Range {
                start: range.start + u32::from(off),
                len,
                ..range
            };
            let mut got = self.read(&[part]).await?;
            match got.pop() {
                Some(Ok(b)) if b.len() == usize::from(len) => out.extend_from_slice(&b),
                Some(Err(e)) => return Err(ClientError::Item(e)),
                _ => {
                    return Err(ClientError::Proto(ProtoError::Malformed(
                        "short read".into(),
                    )))
                }
            }
            off += len;
        }
        Ok(out)
    }

    /// The largest data a single-item WriteVar carries.
    pub fn max_write(&self) -> usize {
        usize::from(self.pdu).saturating_sub(proto::write_request_size([0]) + 2)
    }
}
