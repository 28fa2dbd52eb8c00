//! Client transports: TCP, UDP and serial lines, each with any of the three framings, and
//! Modbus/TCP over TLS.
//!
//! tokio-modbus 0.17 has neither a UDP transport nor ASCII framing, so the connector speaks
//! the protocol itself over tokio sockets and tokio-serial, with the pure [`codec`]:
//! one implementation for every transport and framing, with its own timeout and stale-answer
//! handling (an MBAP answer with another transaction id, a late answer on a serial line).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tokio_serial::SerialPort;

use super::codec::{self, CodecError, Direction, Framing, Request, Response};
use super::tls::ClientTls;

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Modbus over TCP.
    Tcp {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// Modbus/TCP inside TLS.
    Tls {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// TLS settings.
        tls: ClientTls,
    },
    /// Modbus over UDP datagrams.
    Udp {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// A serial line.
    Serial(SerialSettings),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Tls { host, port, .. } => write!(f, "tls://{host}:{port}"),
            Endpoint::Udp { host, port } => write!(f, "udp://{host}:{port}"),
            Endpoint::Serial(s) => write!(f, "serial://{}", s.path),
        }
    }
}

/// Serial line settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialSettings {
    /// Device path.
    pub path: String,
    /// Speed.
    pub baudrate: u32,
    /// Data bits, 5 to 8.
    pub bytesize: u8,
    /// `N`, `E` or `O`.
    pub parity: char,
    /// 1 or 2.
    pub stopbits: u8,
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection failed; it must be reopened.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// No (complete) answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer could not be decoded.
    #[error("invalid answer: {0}")]
    Invalid(CodecError),
}

impl TransportError {
    /// True when the connection must be closed and reopened.
    pub fn is_fatal(&self) -> bool {
        matches!(self, TransportError::Io(_))
    }
}

/// The largest Modbus frame on the wire (an ASCII frame of a 253-byte PDU is larger, and
/// `buf` grows for it).
const MAX_ADU: usize = 260;

enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Udp(UdpSocket),
    Serial(tokio_serial::SerialStream),
}

/// An open connection to one endpoint.
pub struct Transport {
    io: Io,
    framing: Framing,
    transaction: u16,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

/// Opens a serial port with the given settings.
pub fn open_serial(s: &SerialSettings) -> std::io::Result<tokio_serial::SerialStream> {
    let builder = tokio_serial::new(&s.path, s.baudrate)
        .data_bits(match s.bytesize {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .parity(match s.parity {
            'E' => tokio_serial::Parity::Even,
            'O' => tokio_serial::Parity::Odd,
            _ => tokio_serial::Parity::None,
        })
        .stop_bits(if s.stopbits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        });
    tokio_serial::SerialStream::open(&builder).map_err(std::io::Error::other)
}

impl Transport {
    /// Connects (TCP), binds and connects a socket (UDP) or opens the port (serial).
    pub async fn connect(endpoint: &Endpoint, framing: Framing) -> std::io::Result<Transport> {
        let io = match endpoint {
            Endpoint::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                Io::Tcp(s)
            }
            Endpoint::Tls { host, port, tls } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                let s = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(tls.server_name.clone(), s)
                    .await?;
                Io::Tls(Box::new(s))
            }
            Endpoint::Udp { host, port } => {
                let addr = tokio::net::lookup_host((host.as_str(), *port))
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("no address for {host}")))?;
                let bind = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let s = UdpSocket::bind(bind).await?;
                s.connect(addr).await?;
                Io::Udp(s)
            }
            Endpoint::Serial(s) => Io::Serial(open_serial(s)?),
        };
        Ok(Transport {
            io,
            framing,
            transaction: 0,
            // Grown on first use to what the requests need (at most an ADU each).
            buf: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Sends `req` to `unit` and waits up to `timeout` for its answer. `Ok(Err(code))` is a
    /// Modbus exception.
    pub async fn call(
        &mut self,
        unit: u8,
        req: &Request,
        timeout: Duration,
    ) -> Result<Result<Response, u8>, TransportError> {
        self.transaction = self.transaction.wrapping_add(1);
        let tid = self.transaction;
        let mut pdu = Vec::with_capacity(16);
        req.encode(&mut pdu);
        self.out.clear();
        codec::encode_frame(self.framing, tid, unit, &pdu, &mut self.out);
        match &mut self.io {
            Io::Tcp(s) => {
                s.write_all(&self.out).await?;
            }
            Io::Tls(s) => {
                s.write_all(&self.out).await?;
                s.flush().await?;
            }
            Io::Udp(s) => {
                self.buf.clear();
                s.send(&self.out).await?;
            }
            Io::Serial(s) => {
                // A late answer to an earlier request must not be taken for this one.
                self.buf.clear();
                let _ = s.clear(tokio_serial::ClearBuffer::Input);
                s.write_all(&self.out).await?;
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Take every complete frame already buffered.
            while !self.buf.is_empty() {
                match codec::decode_frame(self.framing, Direction::Response, &self.buf) {
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        self.buf.drain(..frame.len);
                        let stale = match self.framing {
                            Framing::Mbap => frame.transaction != tid,
                            _ => frame.unit != unit,
                        };
                        if stale {
                            continue;
                        }
                        return codec::decode_response(req, &frame.pdu)
                            .map_err(TransportError::Invalid);
                    }
                    Err(e) => {
                        self.buf.clear();
                        if matches!(self.io, Io::Tcp(_) | Io::Tls(_)) {
                            // The stream is out of step: only a new connection recovers it.
                            return Err(TransportError::Io(std::io::Error::other(format!(
                                "stream out of step: {e}"
                            ))));
                        }
                        return Err(TransportError::Invalid(e));
                    }
                }
            }
            // Straight into `buf` (no stack buffer in every connection task's future). One
            // frame per datagram: UDP drops whatever a previous datagram left.
            if matches!(self.io, Io::Udp(_)) {
                self.buf.clear();
            }
            self.buf.reserve(MAX_ADU);
            let (io, buf) = (&mut self.io, &mut self.buf);
            let read = async {
                match io {
                    Io::Tcp(s) => s.read_buf(buf).await,
                    Io::Tls(s) => s.read_buf(buf).await,
                    Io::Udp(s) => s.recv_buf(buf).await,
                    Io::Serial(s) => s.read_buf(buf).await,
                }
            };
            match tokio::time::timeout_at(deadline, read).await {
                Err(_) => return Err(TransportError::Timeout(timeout)),
                Ok(Err(e)) => {
                    if matches!(self.io, Io::Udp(_))
                        && e.kind() == std::io::ErrorKind::ConnectionRefused
                    {
                        // ICMP port unreachable: nobody listens (yet); the device is silent.
                        continue;
                    }
                    return Err(TransportError::Io(e));
                }
                Ok(Ok(0)) => {
                    return Err(TransportError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the device closed the connection",
                    )))
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}
