//! Pure Modbus encoding and decoding: protocol data units (requests, responses, exceptions),
//! the three framings (MBAP for TCP and UDP, RTU with CRC-16, ASCII with LRC) and the
//! conversion between registers or bits and typed values.
//!
//! Nothing here does I/O or reads a clock, so every function is table-tested and fuzzed.
//! Decoders never panic: malformed input gives a [`CodecError`].

use serde_json::Value as Json;
use tbgw::model::Value;

/// Most registers one read may ask for (function codes 3 and 4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most bits one read may ask for (function codes 1 and 2).
pub const MAX_READ_BITS: u16 = 2000;
/// Most registers one write may carry (function code 16).
pub const MAX_WRITE_REGISTERS: u16 = 123;
/// Most coils one write may carry (function code 15).
pub const MAX_WRITE_BITS: u16 = 1968;

/// Why bytes could not be decoded or a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The frame or PDU is shorter than its header says.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// The bytes do not form a valid frame or PDU.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A checksum (CRC or LRC) does not match.
    #[error("bad {0} checksum")]
    Checksum(&'static str),
    /// A value does not fit the configured type.
    #[error("cannot encode {value} as {ty}: {reason}")]
    Encode {
        /// The value.
        value: String,
        /// The type.
        ty: String,
        /// Why.
        reason: String,
    },
}

fn malformed(what: &'static str, reason: impl Into<String>) -> CodecError {
    CodecError::Malformed {
        what,
        reason: reason.into(),
    }
}

// ----------------------------------------------------------------------------------------------
// PDUs

/// A Modbus request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Function codes 1 to 4: read `count` bits or registers from `address`.
    Read {
        /// 1 coils, 2 discrete inputs, 3 holding registers, 4 input registers.
        fc: u8,
        /// First address.
        address: u16,
        /// How many.
        count: u16,
    },
    /// Function code 5.
    WriteSingleCoil {
        /// Address.
        address: u16,
        /// Value.
        value: bool,
    },
    /// Function code 6.
    WriteSingleRegister {
        /// Address.
        address: u16,
        /// Value.
        value: u16,
    },
    /// Function code 15.
    WriteMultipleCoils {
        /// First address.
        address: u16,
        /// Values.
        values: Vec<bool>,
    },
    /// Function code 16.
    WriteMultipleRegisters {
        /// First address.
        address: u16,
        /// Values.
        values: Vec<u16>,
    },
}

impl Request {
    /// The function code.
    pub fn function_code(&self) -> u8 {
        match self {
            Request::Read { fc, .. } => *fc,
            Request::WriteSingleCoil { .. } => 5,
            Request::WriteSingleRegister { .. } => 6,
            Request::WriteMultipleCoils { .. } => 15,
            Request::WriteMultipleRegisters { .. } => 16,
        }
    }

    /// Appends the PDU (function code and data) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.function_code());
        match self {
            Request::Read { address, count, .. } => {
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
            }
            Request::WriteSingleCoil { address, value } => {
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(if *value { &[0xFF, 0x00] } else { &[0x00, 0x00] });
            }
            Request::WriteSingleRegister { address, value } => {
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            Request::WriteMultipleCoils { address, values } => {
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&(values.len() as u16).to_be_bytes());
                let packed = pack_bits(values);
                out.push(packed.len() as u8);
                out.extend_from_slice(&packed);
            }
            Request::WriteMultipleRegisters { address, values } => {
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&(values.len() as u16).to_be_bytes());
                out.push((values.len() * 2) as u8);
                for v in values {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
    }

    /// Decodes a request PDU (server side). `Err(exception code)` for what a server answers
    /// with an exception: 1 for an unsupported function, 3 for bad data.
    pub fn decode(pdu: &[u8]) -> Result<Request, u8> {
        let (&fc, data) = pdu.split_first().ok_or(ILLEGAL_DATA_VALUE)?;
        let word = |i: usize| -> Result<u16, u8> {
            data.get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or(ILLEGAL_DATA_VALUE)
        };
        match fc {
            1..=4 => {
                let (address, count) = (word(0)?, word(2)?);
                let max = if fc <= 2 {
                    MAX_READ_BITS
                } else {
                    MAX_READ_REGISTERS
                };
                if count == 0 || count > max {
                    return Err(ILLEGAL_DATA_VALUE);
                }
                Ok(Request::Read { fc, address, count })
            }
            5 => {
                let value = match word(2)? {
                    0xFF00 => true,
                    0x0000 => false,
                    _ => return Err(ILLEGAL_DATA_VALUE),
                };
                Ok(Request::WriteSingleCoil {
                    address: word(0)?,
                    value,
                })
            }
            6 => Ok(Request::WriteSingleRegister {
                address: word(0)?,
                value: word(2)?,
            }),
            15 | 16 => {
                let (address, count) = (word(0)?, word(2)?);
                let n = *data.get(4).ok_or(ILLEGAL_DATA_VALUE)? as usize;
                let bytes = data.get(5..5 + n).ok_or(ILLEGAL_DATA_VALUE)?;
                if fc == 15 {
                    if count == 0 || count > MAX_WRITE_BITS || n != (count as usize).div_ceil(8) {
                        return Err(ILLEGAL_DATA_VALUE);
                    }
                    Ok(Request::WriteMultipleCoils {
                        address,
                        values: unpack_bits(bytes, count as usize),
                    })
                } else {
                    if count == 0 || count > MAX_WRITE_REGISTERS || n != count as usize * 2 {
                        return Err(ILLEGAL_DATA_VALUE);
                    }
                    Ok(Request::WriteMultipleRegisters {
                        address,
                        values: bytes
                            .chunks_exact(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect(),
                    })
                }
            }
            _ => Err(ILLEGAL_FUNCTION),
        }
    }
}

/// Exception code 1: illegal function.
pub const ILLEGAL_FUNCTION: u8 = 1;
/// Exception code 2: illegal data address.
pub const ILLEGAL_DATA_ADDRESS: u8 = 2;
/// Exception code 3: illegal data value.
pub const ILLEGAL_DATA_VALUE: u8 = 3;

// ----------------------------------------------------------------------------------------------
// Read Device Identification (function code 43, MEI type 14), served in slave mode

/// Function code 43: encapsulated interface transport.
pub const FC_ENCAPSULATED: u8 = 0x2B;
/// MEI type 14: Read Device Identification.
pub const MEI_READ_DEVICE_ID: u8 = 0x0E;
/// Largest Modbus PDU.
pub const MAX_PDU: usize = 253;
/// Largest identification object value that always fits in an answer on its own.
pub const MAX_DEVICE_ID_OBJECT: usize = MAX_PDU - 9;

/// Answers a Read Device Identification request PDU (`2B 0E <read code> <object id>`).
/// `objects` are the server's objects as (id, value), sorted by id: 0 `VendorName`,
/// 1 `ProductCode`, 2 `MajorMinorRevision` (basic), 3 `VendorUrl`, 4 `ProductName`,
/// 5 `ModelName`, 6 `UserApplicationName` (regular), 0x80.. (extended). Read codes 1, 2 and 3
/// stream the basic, regular or extended objects from the object id on (an unknown id starts
/// over at 0); objects that do not fit in one answer are announced with "more follows" and the
/// next object id. Read code 4 returns one object. Errors are exception codes: 2 for an
/// unknown object with read code 4, 3 for a malformed request or read code.
pub fn read_device_identification(pdu: &[u8], objects: &[(u8, Vec<u8>)]) -> Result<Vec<u8>, u8> {
    let [FC_ENCAPSULATED, MEI_READ_DEVICE_ID, code, start] = *pdu else {
        return Err(ILLEGAL_DATA_VALUE);
    };
    let extended = objects.iter().any(|(id, _)| *id >= 0x80);
    // Stream and individual access, regular or extended identification.
    let conformity = 0x80 | if extended { 0x03 } else { 0x02 };
    let selected: Vec<&(u8, Vec<u8>)> = match code {
        1..=3 => {
            let last = [0x02, 0x7F, 0xFF][usize::from(code - 1)];
            let start = if start <= last && objects.iter().any(|(id, _)| *id == start) {
                start
            } else {
                0
            };
            objects
                .iter()
                .filter(|(id, _)| (start..=last).contains(id))
                .collect()
        }
        4 => match objects.iter().find(|(id, _)| *id == start) {
            Some(o) => vec![o],
            None => return Err(ILLEGAL_DATA_ADDRESS),
        },
        _ => return Err(ILLEGAL_DATA_VALUE),
    };
    let mut out = vec![
        FC_ENCAPSULATED,
        MEI_READ_DEVICE_ID,
        code,
        conformity,
        0,
        0,
        0,
    ];
    let mut n = 0u8;
    for (id, value) in selected {
        let value = &value[..value.len().min(MAX_DEVICE_ID_OBJECT)];
        if out.len() + 2 + value.len() > MAX_PDU {
            out[4] = 0xFF;
            out[5] = *id;
            break;
        }
        out.push(*id);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
        n += 1;
    }
    out[6] = n;
    Ok(out)
}

/// A device's successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Bits read (function codes 1 and 2), exactly as many as requested.
    Bits(Vec<bool>),
    /// Registers read (function codes 3 and 4).
    Registers(Vec<u16>),
    /// A write was acknowledged.
    Written,
}

/// The text of a Modbus exception code.
pub fn exception_text(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// Decodes the answer to `req`. `Ok(Err(code))` is a Modbus exception response.
pub fn decode_response(req: &Request, pdu: &[u8]) -> Result<Result<Response, u8>, CodecError> {
    let (&fc, data) = pdu.split_first().ok_or(CodecError::Truncated("response"))?;
    let want = req.function_code();
    if fc == want | 0x80 {
        let code = *data
            .first()
            .ok_or(CodecError::Truncated("exception response"))?;
        return Ok(Err(code));
    }
    if fc != want {
        return Err(malformed(
            "response",
            format!("function code {fc} answers a request with function code {want}"),
        ));
    }
    match req {
        Request::Read { count, .. } => {
            let n = *data.first().ok_or(CodecError::Truncated("read response"))? as usize;
            let bytes = data
                .get(1..1 + n)
                .ok_or(CodecError::Truncated("read response"))?;
            if fc <= 2 {
                if n < (*count as usize).div_ceil(8) {
                    return Err(malformed(
                        "read response",
                        format!("{n} bytes cannot hold {count} bits"),
                    ));
                }
                Ok(Ok(Response::Bits(unpack_bits(bytes, *count as usize))))
            } else {
                if n != *count as usize * 2 {
                    return Err(malformed(
                        "read response",
                        format!("{n} bytes for {count} registers"),
                    ));
                }
                Ok(Ok(Response::Registers(
                    bytes
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )))
            }
        }
        _ => {
            if data.len() < 4 {
                return Err(CodecError::Truncated("write response"));
            }
            let address = u16::from_be_bytes([data[0], data[1]]);
            let expected_address = match req {
                Request::WriteSingleCoil { address, .. }
                | Request::WriteSingleRegister { address, .. }
                | Request::WriteMultipleCoils { address, .. }
                | Request::WriteMultipleRegisters { address, .. } => *address,
                Request::Read { address, .. } => *address,
            };
            if address != expected_address {
                return Err(malformed(
                    "write response",
                    format!("echoes address {address}, expected {expected_address}"),
                ));
            }
            Ok(Ok(Response::Written))
        }
    }
}

/// Encodes a server's answer PDU to `req`.
pub fn encode_response(req: &Request, resp: &Result<Response, u8>, out: &mut Vec<u8>) {
    let fc = req.function_code();
    match resp {
        Err(code) => {
            out.push(fc | 0x80);
            out.push(*code);
        }
        Ok(Response::Bits(bits)) => {
            out.push(fc);
            let packed = pack_bits(bits);
            out.push(packed.len() as u8);
            out.extend_from_slice(&packed);
        }
        Ok(Response::Registers(regs)) => {
            out.push(fc);
            out.push((regs.len() * 2) as u8);
            for r in regs {
                out.extend_from_slice(&r.to_be_bytes());
            }
        }
        Ok(Response::Written) => {
            // The answer to a write echoes the first 4 data bytes of the request.
            let mut full = Vec::with_capacity(8);
            req.encode(&mut full);
            out.extend_from_slice(&full[..5.min(full.len())]);
        }
    }
}

/// Packs bits LSB first, as Modbus puts them on the wire.
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, &b) in bits.iter().enumerate() {
        if b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// Unpacks `count` bits (LSB first); missing bytes read as zero bits.
pub fn unpack_bits(bytes: &[u8], count: usize) -> Vec<bool> {
    (0..count)
        .map(|i| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Framing

/// How PDUs are framed on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Modbus TCP: the 7-byte MBAP header (transaction id, protocol 0, length, unit id).
    /// Also used over UDP, one frame per datagram, as pymodbus does.
    Mbap,
    /// RTU: unit id, PDU, CRC-16 (little-endian).
    Rtu,
    /// ASCII: `:`, hex of unit id + PDU + LRC, CR LF.
    Ascii,
}

/// A decoded frame: its total length in the buffer, the transaction id (MBAP only, else 0),
/// the unit id and the PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Bytes of the buffer the frame used.
    pub len: usize,
    /// MBAP transaction id (0 for RTU and ASCII).
    pub transaction: u16,
    /// Unit id.
    pub unit: u8,
    /// The PDU.
    pub pdu: Vec<u8>,
}

/// Appends one framed PDU to `out`.
pub fn encode_frame(framing: Framing, transaction: u16, unit: u8, pdu: &[u8], out: &mut Vec<u8>) {
    match framing {
        Framing::Mbap => {
            out.extend_from_slice(&transaction.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
            out.push(unit);
            out.extend_from_slice(pdu);
        }
        Framing::Rtu => {
            let start = out.len();
            out.push(unit);
            out.extend_from_slice(pdu);
            let crc = crc16(&out[start..]);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        Framing::Ascii => {
            let mut raw = Vec::with_capacity(pdu.len() + 2);
            raw.push(unit);
            raw.extend_from_slice(pdu);
            raw.push(lrc(&raw));
            out.push(b':');
            for b in raw {
                out.extend_from_slice(format!("{b:02X}").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Which side of the conversation a frame comes from; RTU needs it to know the frame length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A request (what a server reads).
    Request,
    /// A response (what a client reads).
    Response,
}

/// Tries to decode one frame at the start of `buf`. `Ok(None)`: more bytes are needed.
pub fn decode_frame(
    framing: Framing,
    dir: Direction,
    buf: &[u8],
) -> Result<Option<Frame>, CodecError> {
    match framing {
        Framing::Mbap => decode_mbap(buf),
        Framing::Rtu => decode_rtu(dir, buf),
        Framing::Ascii => decode_ascii(buf),
    }
}

fn decode_mbap(buf: &[u8]) -> Result<Option<Frame>, CodecError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let transaction = u16::from_be_bytes([buf[0], buf[1]]);
    let protocol = u16::from_be_bytes([buf[2], buf[3]]);
    let length = u16::from_be_bytes([buf[4], buf[5]]) as usize;
    if protocol != 0 {
        return Err(malformed("MBAP header", format!("protocol id {protocol}")));
    }
    if !(2..=254).contains(&length) {
        return Err(malformed("MBAP header", format!("length {length}")));
    }
    let total = 6 + length;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame {
        len: total,
        transaction,
        unit: buf[6],
        pdu: buf[7..total].to_vec(),
    }))
}

/// The length of an RTU PDU at the start of `pdu` (function code first), if it can be told
/// yet. `Err` for a function code this side never expects.
fn rtu_pdu_len(dir: Direction, pdu: &[u8]) -> Result<Option<usize>, CodecError> {
    let Some(&fc) = pdu.first() else {
        return Ok(None);
    };
    let byte_count_at = |i: usize, extra: usize| pdu.get(i).map(|&n| i + 1 + n as usize + extra);
    let len = match (dir, fc) {
        (Direction::Response, f) if f & 0x80 != 0 => Some(2),
        (Direction::Response, 1..=4) => byte_count_at(1, 0),
        (Direction::Response, 5 | 6 | 15 | 16) => Some(5),
        (Direction::Request, 1..=6) => Some(5),
        (Direction::Request, 15 | 16) => byte_count_at(5, 0),
        // Read Device Identification: MEI type, read code, object id.
        (Direction::Request, FC_ENCAPSULATED) => Some(4),
        _ => {
            return Err(malformed(
                "RTU frame",
                format!("unexpected function code {fc}"),
            ))
        }
    };
    Ok(len)
}

fn decode_rtu(dir: Direction, buf: &[u8]) -> Result<Option<Frame>, CodecError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let Some(pdu_len) = rtu_pdu_len(dir, &buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + pdu_len + 2;
    if buf.len() < total {
        return Ok(None);
    }
    let crc = u16::from_le_bytes([buf[total - 2], buf[total - 1]]);
    if crc16(&buf[..total - 2]) != crc {
        return Err(CodecError::Checksum("RTU CRC"));
    }
    Ok(Some(Frame {
        len: total,
        transaction: 0,
        unit: buf[0],
        pdu: buf[1..total - 2].to_vec(),
    }))
}

fn decode_ascii(buf: &[u8]) -> Result<Option<Frame>, CodecError> {
    let Some(start) = buf.iter().position(|&b| b == b':') else {
        // Noise before a frame start: the caller may drop it.
        return if buf.len() > 1024 {
            Err(malformed("ASCII frame", "no `:` frame start"))
        } else {
            Ok(None)
        };
    };
    let Some(end_rel) = buf[start..].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let end = start + end_rel;
    let mut body = &buf[start + 1..end];
    if body.last() == Some(&b'\r') {
        body = &body[..body.len() - 1];
    }
    if !body.len().is_multiple_of(2) || body.len() < 6 {
        return Err(malformed(
            "ASCII frame",
            format!("{} hex digits", body.len()),
        ));
    }
    let mut raw = Vec::with_capacity(body.len() / 2);
    for pair in body.chunks_exact(2) {
        let hex = std::str::from_utf8(pair).map_err(|_| malformed("ASCII frame", "not hex"))?;
        raw.push(
            u8::from_str_radix(hex, 16)
                .map_err(|_| malformed("ASCII frame", format!("`{hex}` is not hex")))?,
        );
    }
    let (&sum, content) = raw
        .split_last()
        .ok_or(CodecError::Truncated("ASCII frame"))?;
    if lrc(content) != sum {
        return Err(CodecError::Checksum("ASCII LRC"));
    }
    Ok(Some(Frame {
        len: end + 1,
        transaction: 0,
        unit: content[0],
        pdu: content[1..].to_vec(),
    }))
}

/// Modbus CRC-16 (polynomial 0xA001, initial 0xFFFF).
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Modbus ASCII longitudinal redundancy check: two's complement of the byte sum.
pub fn lrc(data: &[u8]) -> u8 {
    data.iter()
        .fold(0u8, |acc, &b| acc.wrapping_add(b))
        .wrapping_neg()
}

// ----------------------------------------------------------------------------------------------
// Values

/// Byte or word order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Most significant first.
    Big,
    /// Least significant first.
    Little,
}

impl Order {
    /// Parses `BIG` / `LITTLE` (any case).
    pub fn parse(s: &str) -> Option<Order> {
        match s.to_ascii_uppercase().as_str() {
            "BIG" => Some(Order::Big),
            "LITTLE" => Some(Order::Little),
            _ => None,
        }
    }
}

/// A datapoint's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `bits` / `bit`: booleans (or 0/1 with `bitTargetType: int`); one picked `bit` is 0/1.
    Bits,
    /// `string`: UTF-8 text, two characters per register, trailing NULs removed.
    String,
    /// `bytes`: the raw bytes as lowercase hex.
    Bytes,
    /// Signed integer of 8, 16, 32 or 64 bits.
    Int(u8),
    /// Unsigned integer of 8, 16, 32 or 64 bits.
    UInt(u8),
    /// IEEE 754 float of 16, 32 or 64 bits.
    Float(u8),
}

impl ValueType {
    /// Parses a type name; generic `int`/`uint`/`float` take their size from `count`
    /// registers. `None` for an unknown name or an impossible size.
    pub fn parse(name: &str, count: u16) -> Option<ValueType> {
        let generic = || match count {
            1 => Some(16),
            2 => Some(32),
            4 => Some(64),
            _ => None,
        };
        Some(match name.to_ascii_lowercase().as_str() {
            "bits" | "bit" => ValueType::Bits,
            "string" => ValueType::String,
            "bytes" => ValueType::Bytes,
            "8int" => ValueType::Int(8),
            "8uint" => ValueType::UInt(8),
            "16int" => ValueType::Int(16),
            "16uint" => ValueType::UInt(16),
            "16float" => ValueType::Float(16),
            "32int" => ValueType::Int(32),
            "32uint" => ValueType::UInt(32),
            "32float" => ValueType::Float(32),
            "64int" => ValueType::Int(64),
            "64uint" => ValueType::UInt(64),
            "64float" => ValueType::Float(64),
            "int" | "long" | "integer" => ValueType::Int(generic()?),
            "uint" => ValueType::UInt(generic()?),
            "float" | "double" => ValueType::Float(generic()?),
            _ => return None,
        })
    }

    /// Registers this type needs at least (for `string`, `bytes` and `bits` the configured
    /// count is used).
    pub fn registers(self, count: u16) -> u16 {
        match self {
            ValueType::Int(w) | ValueType::UInt(w) | ValueType::Float(w) => {
                u16::from(w.max(16) / 16)
            }
            ValueType::Bits | ValueType::String | ValueType::Bytes => count.max(1),
        }
    }
}

/// How to turn raw registers or bits into a value and back.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueSpec {
    /// The type.
    pub ty: ValueType,
    /// `objectsCount`: registers, or bits for bit function codes.
    pub count: u16,
    /// Byte order inside a register.
    pub byte_order: Order,
    /// Register order of multi-register values.
    pub word_order: Order,
    /// Take only this bit (0 = least significant).
    pub bit: Option<u16>,
    /// Report bits as 0/1 instead of booleans.
    pub bits_as_int: bool,
    /// Divide the value by this.
    pub divider: Option<f64>,
    /// Multiply the value by this.
    pub multiplier: Option<f64>,
}

impl ValueSpec {
    /// A spec with default orders (byte `BIG`, word `LITTLE`) and no scaling.
    pub fn new(ty: ValueType, count: u16) -> Self {
        ValueSpec {
            ty,
            count,
            byte_order: Order::Big,
            word_order: Order::Little,
            bit: None,
            bits_as_int: false,
            divider: None,
            multiplier: None,
        }
    }
}

/// Register bytes in the order a big-endian read expects: bytes swapped inside each register
/// for a little byte order, registers reversed for a little word order.
fn ordered_bytes(regs: &[u16], byte_order: Order, word_order: Order) -> Vec<u8> {
    let mut out = Vec::with_capacity(regs.len() * 2);
    let mut push = |r: &u16| {
        let b = r.to_be_bytes();
        match byte_order {
            Order::Big => out.extend_from_slice(&b),
            Order::Little => out.extend_from_slice(&[b[1], b[0]]),
        }
    };
    match word_order {
        Order::Big => regs.iter().for_each(&mut push),
        Order::Little => regs.iter().rev().for_each(&mut push),
    }
    out
}

/// The inverse of [`ordered_bytes`].
fn bytes_to_registers(bytes: &[u8], byte_order: Order, word_order: Order) -> Vec<u16> {
    let mut regs: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let (hi, lo) = (c[0], c.get(1).copied().unwrap_or(0));
            match byte_order {
                Order::Big => u16::from_be_bytes([hi, lo]),
                Order::Little => u16::from_be_bytes([lo, hi]),
            }
        })
        .collect();
    if word_order == Order::Little {
        regs.reverse();
    }
    regs
}

fn bits_value(bits: &[bool], spec: &ValueSpec) -> Value {
    let one = |b: bool| {
        if spec.bits_as_int {
            Value::Int(i64::from(b))
        } else {
            Value::Bool(b)
        }
    };
    if let Some(i) = spec.bit {
        // As the Python gateway: a picked bit is always 0/1 (`bitTargetType` applies only
        // without `bit`), and an index past the end takes the last bit.
        let b = bits
            .get(i as usize)
            .or(bits.last())
            .copied()
            .unwrap_or(false);
        return Value::Int(i64::from(b));
    }
    if bits.len() == 1 {
        return one(bits[0]);
    }
    Value::Json(Json::Array(
        bits.iter().map(|&b| one(b).to_json()).collect(),
    ))
}

/// Decodes the registers of one datapoint (function codes 3 and 4).
pub fn decode_registers(regs: &[u16], spec: &ValueSpec) -> Result<Value, CodecError> {
    let need = spec.ty.registers(spec.count) as usize;
    if regs.len() < need {
        return Err(CodecError::Truncated("registers"));
    }
    let regs = &regs[..need];
    let raw = match spec.ty {
        ValueType::Bits => {
            let bits: Vec<bool> = (0..need * 16)
                .map(|i| regs[i / 16] & (1 << (i % 16)) != 0)
                .collect();
            return Ok(bits_value(&bits, spec));
        }
        ValueType::String | ValueType::Bytes => {
            let bytes = ordered_bytes(regs, spec.byte_order, Order::Big);
            if spec.ty == ValueType::Bytes {
                return Ok(Value::String(hex(&bytes)));
            }
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            return Ok(Value::String(
                String::from_utf8_lossy(&bytes[..end]).into_owned(),
            ));
        }
        _ => ordered_bytes(regs, spec.byte_order, spec.word_order),
    };
    let value = match spec.ty {
        ValueType::Int(8) => Value::Int(i64::from(raw[1] as i8)),
        ValueType::UInt(8) => Value::Int(i64::from(raw[1])),
        ValueType::Int(16) => Value::Int(i64::from(i16::from_be_bytes([raw[0], raw[1]]))),
        ValueType::UInt(16) => Value::Int(i64::from(u16::from_be_bytes([raw[0], raw[1]]))),
        ValueType::Int(32) => Value::Int(i64::from(i32::from_be_bytes(arr4(&raw)))),
        ValueType::UInt(32) => Value::Int(i64::from(u32::from_be_bytes(arr4(&raw)))),
        ValueType::Int(64) => Value::Int(i64::from_be_bytes(arr8(&raw))),
        ValueType::UInt(64) => {
            let v = u64::from_be_bytes(arr8(&raw));
            match i64::try_from(v) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float(v as f64),
            }
        }
        ValueType::Float(16) => Value::Float(f16_to_f64(u16::from_be_bytes([raw[0], raw[1]]))),
        ValueType::Float(32) => Value::Float(f64::from(f32::from_be_bytes(arr4(&raw)))),
        ValueType::Float(64) => Value::Float(f64::from_be_bytes(arr8(&raw))),
        other => return Err(malformed("value", format!("unsupported type {other:?}"))),
    };
    Ok(scale(value, spec))
}

/// Decodes the bits of one datapoint (function codes 1 and 2). Bit types give booleans;
/// numeric types read the bits as packed on the wire (LSB first), two bytes per register.
pub fn decode_bits(bits: &[bool], spec: &ValueSpec) -> Result<Value, CodecError> {
    match spec.ty {
        ValueType::Bits => {
            let n = (spec.count.max(1) as usize).min(bits.len());
            if n == 0 {
                return Err(CodecError::Truncated("bits"));
            }
            Ok(bits_value(&bits[..n], spec))
        }
        _ => {
            let bytes = pack_bits(bits);
            let regs: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
                .collect();
            decode_registers(&regs, spec)
        }
    }
}

fn scale(v: Value, spec: &ValueSpec) -> Value {
    let as_f = |v: &Value| match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    };
    if let Some(d) = spec.divider.filter(|d| *d != 0.0) {
        if let Some(x) = as_f(&v) {
            return Value::Float(x / d);
        }
    } else if let Some(m) = spec.multiplier {
        match v {
            Value::Int(i) if m.fract() == 0.0 && m.abs() < 9.0e15 => {
                return i
                    .checked_mul(m as i64)
                    .map_or(Value::Float(i as f64 * m), Value::Int)
            }
            ref other => {
                if let Some(x) = as_f(other) {
                    return Value::Float(x * m);
                }
            }
        }
    }
    v
}

fn arr4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}
fn arr8(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// IEEE 754 half precision to f64.
pub fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1F);
    let frac = f64::from(h & 0x3FF);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// f64 to IEEE 754 half precision, rounding to nearest; out-of-range values become infinity.
pub fn f64_to_f16(x: f64) -> u16 {
    if x.is_nan() {
        return 0x7E00;
    }
    let sign: u16 = if x.is_sign_negative() { 0x8000 } else { 0 };
    let a = x.abs();
    if a >= 65520.0 {
        return sign | 0x7C00;
    }
    if a < 2f64.powi(-14) {
        // Subnormal: units of 2^-24.
        let m = (a / 2f64.powi(-24)).round() as u16;
        return sign | m;
    }
    let mut e = a.log2().floor() as i32;
    let mut m = ((a / 2f64.powi(e) - 1.0) * 1024.0).round() as u32;
    if m == 1024 {
        m = 0;
        e += 1;
    }
    if e > 15 {
        return sign | 0x7C00;
    }
    sign | (((e + 15) as u16) << 10) | m as u16
}

fn encode_err(value: &Json, spec: &ValueSpec, reason: impl Into<String>) -> CodecError {
    CodecError::Encode {
        value: value.to_string(),
        ty: format!("{:?}", spec.ty),
        reason: reason.into(),
    }
}

/// A JSON value as a boolean: booleans, numbers (non-zero is true) and the strings
/// true/false/on/off/yes/no/1/0.
pub fn json_bool(v: &Json) -> Option<bool> {
    match v {
        Json::Bool(b) => Some(*b),
        Json::Number(n) => n.as_f64().map(|f| f != 0.0),
        Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Some(true),
            "false" | "off" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn json_f64(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::Bool(b) => Some(f64::from(u8::from(*b))),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Encodes a value as bits for function codes 5 and 15: a boolean, or an array of them (a
/// single value is repeated `count` times).
pub fn encode_bits(value: &Json, spec: &ValueSpec) -> Result<Vec<bool>, CodecError> {
    match value {
        Json::Array(items) => items
            .iter()
            .map(|i| json_bool(i).ok_or_else(|| encode_err(value, spec, "not a boolean")))
            .collect(),
        v => {
            let b = json_bool(v).ok_or_else(|| encode_err(value, spec, "not a boolean"))?;
            Ok(vec![b; spec.count.max(1) as usize])
        }
    }
}

/// Encodes a value as registers for function codes 6 and 16. A divider or multiplier is
/// undone first (the value is multiplied by the divider or divided by the multiplier), so
/// what is written reads back as the value given.
pub fn encode_registers(value: &Json, spec: &ValueSpec) -> Result<Vec<u16>, CodecError> {
    let need = spec.ty.registers(spec.count) as usize;
    let unscale = |x: f64| {
        if let Some(d) = spec.divider.filter(|d| *d != 0.0) {
            x * d
        } else if let Some(m) = spec.multiplier.filter(|m| *m != 0.0) {
            x / m
        } else {
            x
        }
    };
    let mut bytes: Vec<u8> = match spec.ty {
        ValueType::String => {
            let s = match value {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            let mut b = s.into_bytes();
            if b.len() > need * 2 {
                return Err(encode_err(
                    value,
                    spec,
                    format!("longer than {} bytes", need * 2),
                ));
            }
            b.resize(need * 2, 0);
            return Ok(bytes_to_registers(&b, spec.byte_order, Order::Big));
        }
        ValueType::Bytes => {
            let s = value
                .as_str()
                .ok_or_else(|| encode_err(value, spec, "expected a hex string"))?;
            // Digit by digit, never by byte index into the `str`: a non-ASCII character is
            // an error, not a slice off a char boundary.
            let mut digits = Vec::with_capacity(s.len());
            for c in s.chars().filter(|c| !c.is_whitespace()) {
                let d = c
                    .to_digit(16)
                    .ok_or_else(|| encode_err(value, spec, format!("`{c}` is not a hex digit")))?;
                digits.push(d as u8);
            }
            if digits.len() % 2 != 0 || digits.len() / 2 > need * 2 {
                return Err(encode_err(value, spec, "wrong number of hex digits"));
            }
            let mut b = Vec::with_capacity(need * 2);
            b.extend(digits.chunks_exact(2).map(|p| p[0] << 4 | p[1]));
            b.resize(need * 2, 0);
            return Ok(bytes_to_registers(&b, spec.byte_order, Order::Big));
        }
        ValueType::Bits => {
            let bits: Vec<bool> = match value {
                Json::Array(items) => items.iter().filter_map(json_bool).collect(),
                v => {
                    let n = json_f64(v).ok_or_else(|| encode_err(value, spec, "not a number"))?;
                    let n = n as u64;
                    (0..need * 16)
                        .map(|i| i < 64 && n & (1 << i) != 0)
                        .collect()
                }
            };
            let mut regs = vec![0u16; need];
            for (i, b) in bits.iter().enumerate().take(need * 16) {
                if *b {
                    regs[i / 16] |= 1 << (i % 16);
                }
            }
            return Ok(regs);
        }
        ValueType::Float(w) => {
            let x =
                unscale(json_f64(value).ok_or_else(|| encode_err(value, spec, "not a number"))?);
            match w {
                16 => f64_to_f16(x).to_be_bytes().to_vec(),
                32 => (x as f32).to_be_bytes().to_vec(),
                _ => x.to_be_bytes().to_vec(),
            }
        }
        ValueType::Int(w) | ValueType::UInt(w) => {
            let x =
                unscale(json_f64(value).ok_or_else(|| encode_err(value, spec, "not a number"))?);
            // Integers beyond 2^53 lose precision through f64: take them from the JSON number.
            let exact = spec.divider.is_none() && spec.multiplier.is_none();
            let i: i128 = match (exact, value.as_u64(), value.as_i64()) {
                (true, Some(u), _) => i128::from(u),
                (true, None, Some(i)) => i128::from(i),
                _ => x.round() as i128,
            };
            let signed = matches!(spec.ty, ValueType::Int(_));
            let (lo, hi): (i128, i128) = match (signed, w) {
                (true, 8) => (i8::MIN.into(), i8::MAX.into()),
                (false, 8) => (0, u8::MAX.into()),
                (true, 16) => (i16::MIN.into(), i16::MAX.into()),
                (false, 16) => (0, u16::MAX.into()),
                (true, 32) => (i32::MIN.into(), i32::MAX.into()),
                (false, 32) => (0, u32::MAX.into()),
                (true, _) => (i64::MIN.into(), i64::MAX.into()),
                (false, _) => (0, u64::MAX.into()),
            };
            if i < lo || i > hi {
                return Err(encode_err(value, spec, "out of range"));
            }
            let be = (i as u64).to_be_bytes();
            match w {
                8 => vec![0, be[7]],
                16 => be[6..].to_vec(),
                32 => be[4..].to_vec(),
                _ => be.to_vec(),
            }
        }
    };
    if bytes.len() < need * 2 {
        bytes.resize(need * 2, 0);
    }
    Ok(bytes_to_registers(&bytes, spec.byte_order, spec.word_order))
}

#[cfg(test)]
mod tests;
