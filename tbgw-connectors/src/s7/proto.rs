//! The S7 protocol (S7comm over ISO-on-TCP), as far as the connector needs it: frames are
//! built into byte vectors and responses are parsed with checked reads only, so no input
//! can make them panic (fuzzed by `fuzz/fuzz_targets/s7_response.rs`).
//!
//! A frame is a TPKT header (RFC 1006: version 3, 16-bit length), a COTP TPDU (ISO 8073:
//! connection request/confirm, or data with the end-of-transmission flag) and, in data
//! TPDUs, an S7 PDU: a 10-byte header (12 for acknowledgements, with an error class and
//! code), parameters and data.
//!
//! * [`connect_request`] / [`check_connect_confirm`]: COTP connection with two TSAPs.
//! * [`setup_request`] / [`parse_setup_response`]: "setup communication", which negotiates
//!   the PDU size.
//! * [`read_request`] / [`parse_read_response`]: ReadVar with several items.
//! * [`write_request`] / [`parse_write_response`]: WriteVar with several items, bytes or
//!   single bits.

use thiserror::Error;

/// Length of the TPKT header.
pub const TPKT_LEN: usize = 4;
/// Longest frame accepted from a peer (a PDU is at most 960 bytes on real CPUs; snap7
/// offers up to 960 too).
pub const MAX_FRAME: usize = 4096;
/// Items per ReadVar/WriteVar request (the S7-300/400 and Snap7 limit).
pub const MAX_ITEMS: usize = 20;
/// Bytes of an acknowledgement's S7 header.
const ACK_HEADER: usize = 12;
/// Bytes of a job's S7 header.
const JOB_HEADER: usize = 10;

/// What is wrong with a response.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// The bytes are not a frame of the expected shape.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The PLC refused the whole request (S7 header error class and code).
    #[error("the PLC refused the request: error class 0x{class:02x}, code 0x{code:02x}")]
    Refused {
        /// Error class.
        class: u8,
        /// Error code.
        code: u8,
    },
}

fn bad<T>(why: impl Into<String>) -> Result<T, ProtoError> {
    Err(ProtoError::Malformed(why.into()))
}

/// A memory area of the PLC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Area {
    /// Process inputs (I, E).
    Inputs,
    /// Process outputs (Q, A).
    Outputs,
    /// Markers (M, flags).
    Markers,
    /// A data block.
    Db,
}

impl Area {
    /// The area code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Area::Inputs => 0x81,
            Area::Outputs => 0x82,
            Area::Markers => 0x83,
            Area::Db => 0x84,
        }
    }
}

/// A run of bytes to read: area, DB number (0 outside DBs), first byte, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Area.
    pub area: Area,
    /// DB number (0 when `area` is not `Db`).
    pub db: u16,
    /// First byte.
    pub start: u32,
    /// Bytes.
    pub len: u16,
}

/// One item of a WriteVar request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteItem {
    /// Bytes from `start`.
    Bytes {
        /// Area.
        area: Area,
        /// DB number.
        db: u16,
        /// First byte.
        start: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// One bit: only that bit changes in the PLC.
    Bit {
        /// Area.
        area: Area,
        /// DB number.
        db: u16,
        /// Byte.
        byte: u32,
        /// Bit 0..=7.
        bit: u8,
        /// The value.
        value: bool,
    },
}

/// The error a PLC reports for one item (its return code, `0xff` meaning success).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{}", item_error_text(*.0))]
pub struct ItemError(pub u8);

fn item_error_text(code: u8) -> String {
    let what = match code {
        0x01 => "hardware fault",
        0x03 => "access denied",
        0x05 => "address out of range",
        0x06 => "data type not supported",
        0x07 => "data type inconsistent",
        0x0a => "object does not exist",
        _ => "item error",
    };
    format!("{what} (return code 0x{code:02x})")
}

fn tpkt(payload_len: usize) -> Vec<u8> {
    let total = TPKT_LEN + payload_len;
    let mut v = Vec::with_capacity(total);
    v.extend_from_slice(&[3, 0]);
    v.extend_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    v
}

/// The TSAP a PC uses towards a CPU (connection type PG, like Snap7's default).
pub const LOCAL_TSAP_PG: u16 = 0x0100;

/// The CPU's TSAP for `rack` and `slot` (connection type PG = 1).
pub fn remote_tsap(rack: u16, slot: u16) -> u16 {
    (1u16 << 8) | ((rack & 0x07) * 0x20 + (slot & 0x1f))
}

/// A COTP connection request (CR) with the calling (local) and called (remote) TSAP, asking
/// for 1024-byte TPDUs.
pub fn connect_request(local_tsap: u16, remote_tsap: u16) -> Vec<u8> {
    let cotp: [u8; 18] = [
        17,   // length indicator (bytes after this one)
        0xe0, // CR
        0,
        0, // destination reference
        0,
        1, // source reference
        0, // class 0
        0xc0,
        1,
        0x0a, // TPDU size 1024
        0xc1,
        2,
        (local_tsap >> 8) as u8,
        local_tsap as u8,
        0xc2,
        2,
        (remote_tsap >> 8) as u8,
        remote_tsap as u8,
    ];
    let mut v = tpkt(cotp.len());
    v.extend_from_slice(&cotp);
    v
}

/// Checks a connection confirm (CC); `frame` is the whole frame with its TPKT header.
pub fn check_connect_confirm(frame: &[u8]) -> Result<(), ProtoError> {
    let payload = tpkt_payload(frame)?;
    match payload.get(1) {
        Some(0xd0) => Ok(()),
        Some(0x80) => bad(
            "the PLC refused the connection (COTP disconnect request; wrong rack, slot or TSAP?)",
        ),
        Some(t) => bad(format!(
            "expected a COTP connection confirm, got TPDU type 0x{t:02x}"
        )),
        None => bad("empty COTP TPDU"),
    }
}

/// Checks the TPKT header and returns what follows it.
pub fn tpkt_payload(frame: &[u8]) -> Result<&[u8], ProtoError> {
    let len = frame_len(frame)?;
    if len != frame.len() {
        return bad(format!(
            "TPKT length {len} but {} bytes received",
            frame.len()
        ));
    }
    Ok(&frame[TPKT_LEN..])
}

/// The total length a TPKT header announces (checked: version 3, at least a COTP header,
/// at most [`MAX_FRAME`]).
pub fn frame_len(header: &[u8]) -> Result<usize, ProtoError> {
    let [v, _, hi, lo, ..] = *header else {
        return bad("shorter than a TPKT header");
    };
    if v != 3 {
        return bad(format!("TPKT version {v}, expected 3"));
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len < TPKT_LEN + 3 {
        return bad(format!("TPKT length {len} is too short"));
    }
    if len > MAX_FRAME {
        return bad(format!("TPKT length {len} exceeds {MAX_FRAME}"));
    }
    Ok(len)
}

/// A data TPDU carrying an S7 job.
fn job(pdu_ref: u16, params: &[u8], data: &[u8]) -> Vec<u8> {
    let s7_len = JOB_HEADER + params.len() + data.len();
    let mut v = tpkt(3 + s7_len);
    v.extend_from_slice(&[2, 0xf0, 0x80]);
    v.extend_from_slice(&[0x32, 1, 0, 0]);
    v.extend_from_slice(&pdu_ref.to_be_bytes());
    v.extend_from_slice(&(params.len() as u16).to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(params);
    v.extend_from_slice(data);
    v
}

/// "Setup communication" offering `pdu_size`.
pub fn setup_request(pdu_ref: u16, pdu_size: u16) -> Vec<u8> {
    let mut p = vec![0xf0, 0, 0, 1, 0, 1];
    p.extend_from_slice(&pdu_size.to_be_bytes());
    job(pdu_ref, &p, &[])
}

/// An acknowledgement's parameters and data.
struct Ack<'a> {
    params: &'a [u8],
    data: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses an acknowledgement (ROSCTR 3, or 2) to the job `pdu_ref`.
fn ack(frame: &[u8], pdu_ref: u16) -> Result<Ack<'_>, ProtoError> {
    let p = tpkt_payload(frame)?;
    let li = usize::from(
        *p.first()
            .ok_or(ProtoError::Malformed("empty COTP".into()))?,
    );
    if p.get(1) != Some(&0xf0) {
        return bad(format!(
            "expected a COTP data TPDU, got type 0x{:02x}",
            p.get(1).copied().unwrap_or(0)
        ));
    }
    let s7 = p.get(li + 1..).ok_or(ProtoError::Malformed(
        "COTP header longer than the frame".into(),
    ))?;
    if s7.first() != Some(&0x32) {
        return bad("not an S7 PDU (protocol id is not 0x32)");
    }
    let rosctr = s7.get(1).copied().unwrap_or(0);
    let header = match rosctr {
        2 | 3 => ACK_HEADER,
        other => return bad(format!("expected an acknowledgement, got ROSCTR {other}")),
    };
    if s7.len() < header {
        return bad("shorter than an S7 acknowledgement header");
    }
    let got_ref = be16(s7, 4).unwrap_or(0);
    if got_ref != pdu_ref {
        return bad(format!("answer to request {got_ref}, expected {pdu_ref}"));
    }
    let plen = usize::from(be16(s7, 6).unwrap_or(0));
    let dlen = usize::from(be16(s7, 8).unwrap_or(0));
    let (class, code) = (s7[10], s7[11]);
    if class != 0 || code != 0 {
        return Err(ProtoError::Refused { class, code });
    }
    let params = s7.get(header..header + plen).ok_or(ProtoError::Malformed(
        "parameter length beyond the frame".into(),
    ))?;
    let data = s7
        .get(header + plen..header + plen + dlen)
        .ok_or(ProtoError::Malformed("data length beyond the frame".into()))?;
    Ok(Ack { params, data })
}

/// The PDU size the PLC agreed to.
pub fn parse_setup_response(frame: &[u8], pdu_ref: u16) -> Result<u16, ProtoError> {
    let a = ack(frame, pdu_ref)?;
    if a.params.first() != Some(&0xf0) {
        return bad("not a setup-communication answer");
    }
    let pdu = be16(a.params, 6).ok_or(ProtoError::Malformed("short setup answer".into()))?;
    if !(64..=MAX_FRAME as u16).contains(&pdu) {
        return bad(format!("negotiated PDU size {pdu} is out of range"));
    }
    Ok(pdu)
}

fn item_spec(out: &mut Vec<u8>, transport: u8, count: u16, area: Area, db: u16, bit_addr: u32) {
    out.extend_from_slice(&[0x12, 0x0a, 0x10, transport]);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&db.to_be_bytes());
    out.push(area.code());
    let a = bit_addr & 0x00ff_ffff;
    out.extend_from_slice(&[(a >> 16) as u8, (a >> 8) as u8, a as u8]);
}

/// Bytes of a ReadVar request with `n` items (the S7 PDU: header, parameters).
pub fn read_request_size(n: usize) -> usize {
    JOB_HEADER + 2 + 12 * n
}

/// Bytes of the answer to a ReadVar of items of these lengths.
pub fn read_response_size(lens: impl IntoIterator<Item = usize>) -> usize {
    ACK_HEADER + 2 + lens.into_iter().map(|l| 4 + l + (l & 1)).sum::<usize>()
}

/// A ReadVar request for `items` (bytes).
pub fn read_request(pdu_ref: u16, items: &[Range]) -> Vec<u8> {
    let mut p = vec![4, items.len() as u8];
    for r in items {
        item_spec(&mut p, 0x02, r.len, r.area, r.db, r.start.saturating_mul(8));
    }
    job(pdu_ref, &p, &[])
}

/// Splits the data section of a ReadVar answer into `n` items.
pub fn parse_read_response(
    frame: &[u8],
    pdu_ref: u16,
    n: usize,
) -> Result<Vec<Result<Vec<u8>, ItemError>>, ProtoError> {
    let a = ack(frame, pdu_ref)?;
    if a.params.first() != Some(&4) {
        return bad("not a ReadVar answer");
    }
    let count = usize::from(a.params.get(1).copied().unwrap_or(0));
    if count != n {
        return bad(format!("{count} items in the answer, {n} requested"));
    }
    let mut out = Vec::with_capacity(n);
    let mut at = 0usize;
    for i in 0..n {
        let h = a
            .data
            .get(at..at + 4)
            .ok_or(ProtoError::Malformed(format!("item {i} missing")))?;
        let (rc, ts, len) = (h[0], h[1], usize::from(u16::from_be_bytes([h[2], h[3]])));
        at += 4;
        if rc != 0xff {
            out.push(Err(ItemError(rc)));
            continue;
        }
        let bytes = match ts {
            // BIT, BYTE/WORD/DWORD, INTEGER: the length is in bits.
            3..=5 => len.div_ceil(8),
            // REAL, OCTET STRING: in bytes.
            7 | 9 => len,
            other => return bad(format!("item {i}: unknown transport size {other}")),
        };
        let data = a
            .data
            .get(at..at + bytes)
            .ok_or(ProtoError::Malformed(format!(
                "item {i}: data beyond the frame"
            )))?;
        out.push(Ok(data.to_vec()));
        at += bytes;
        if bytes & 1 == 1 && i + 1 < n {
            at += 1;
        }
    }
    Ok(out)
}

/// Bytes of a WriteVar request of items with these data lengths.
pub fn write_request_size(lens: impl IntoIterator<Item = usize>) -> usize {
    JOB_HEADER
        + 2
        + lens
            .into_iter()
            .map(|l| 12 + 4 + l + (l & 1))
            .sum::<usize>()
}

/// A WriteVar request.
pub fn write_request(pdu_ref: u16, items: &[WriteItem]) -> Vec<u8> {
    let mut p = vec![5, items.len() as u8];
    let mut d = Vec::new();
    for (i, it) in items.iter().enumerate() {
        match it {
            WriteItem::Bytes {
                area,
                db,
                start,
                data,
            } => {
                let len = data.len().min(usize::from(u16::MAX / 8)) as u16;
                item_spec(&mut p, 0x02, len, *area, *db, start.saturating_mul(8));
                d.extend_from_slice(&[0, 4]);
                d.extend_from_slice(&(len * 8).to_be_bytes());
                d.extend_from_slice(&data[..usize::from(len)]);
                if len & 1 == 1 && i + 1 < items.len() {
                    d.push(0);
                }
            }
            WriteItem::Bit {
                area,
                db,
                byte,
                bit,
                value,
            } => {
                item_spec(
                    &mut p,
                    0x01,
                    1,
                    *area,
                    *db,
                    byte.saturating_mul(8) + u32::from(*bit & 7),
                );
                d.extend_from_slice(&[0, 3, 0, 1, u8::from(*value)]);
                if i + 1 < items.len() {
                    d.push(0);
                }
            }
        }
    }
    job(pdu_ref, &p, &d)
}

/// The per-item outcome of a WriteVar.
pub fn parse_write_response(
    frame: &[u8],
    pdu_ref: u16,
    n: usize,
) -> Result<Vec<Result<(), ItemError>>, ProtoError> {
    let a = ack(frame, pdu_ref)?;
    if a.params.first() != Some(&5) {
        return bad("not a WriteVar answer");
    }
    let count = usize::from(a.params.get(1).copied().unwrap_or(0));
    if count != n || a.data.len() < n {
        return bad(format!("{count} items in the answer, {n} written"));
    }
    Ok(a.data[..n]
        .iter()
        .map(|&rc| {
            if rc == 0xff {
                Ok(())
            } else {
                Err(ItemError(rc))
            }
        })
        .collect())
}

/// Parses any answer the client may get (setup, read or write), for fuzzing: whatever the
/// bytes, this returns and does not panic.
pub fn parse_any(frame: &[u8]) {
    let _ = frame_len(frame);
    let _ = check_connect_confirm(frame);
    let _ = parse_setup_response(frame, 1);
    for n in [0, 1, 2, 20] {
        let _ = parse_read_response(frame, 1, n);
        let _ = parse_write_response(frame, 1, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An acknowledgement frame as a PLC would send it.
    pub(crate) fn ack_frame(pdu_ref: u16, params: &[u8], data: &[u8]) -> Vec<u8> {
        let s7_len = ACK_HEADER + params.len() + data.len();
        let mut v = tpkt(3 + s7_len);
        v.extend_from_slice(&[2, 0xf0, 0x80, 0x32, 3, 0, 0]);
        v.extend_from_slice(&pdu_ref.to_be_bytes());
        v.extend_from_slice(&(params.len() as u16).to_be_bytes());
        v.extend_from_slice(&(data.len() as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(params);
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn connect_request_bytes() {
        let f = connect_request(LOCAL_TSAP_PG, remote_tsap(0, 1));
        assert_eq!(
            f,
            [3, 0, 0, 22, 17, 0xe0, 0, 0, 0, 1, 0, 0xc0, 1, 0x0a, 0xc1, 2, 1, 0, 0xc2, 2, 1, 1]
        );
        assert_eq!(remote_tsap(0, 2), 0x0102);
        assert_eq!(remote_tsap(1, 3), 0x0123);
        assert!(check_connect_confirm(&[3, 0, 0, 11, 6, 0xd0, 0, 1, 0, 1, 0]).is_ok());
        assert!(check_connect_confirm(&[3, 0, 0, 11, 6, 0x80, 0, 1, 0, 1, 0]).is_err());
        assert!(check_connect_confirm(&[3, 0, 0, 12, 6, 0xd0, 0, 1, 0, 1, 0]).is_err());
    }

    #[test]
    fn setup_round_trip() {
        let f = setup_request(7, 480);
        assert_eq!(f.len(), 4 + 3 + 10 + 8);
        assert_eq!(&f[17..], &[0xf0, 0, 0, 1, 0, 1, 1, 0xe0]);
        let a = ack_frame(7, &[0xf0, 0, 0, 1, 0, 1, 0, 240], &[]);
        assert_eq!(parse_setup_response(&a, 7), Ok(240));
        assert!(parse_setup_response(&a, 8).is_err());
        let a = ack_frame(7, &[0xf0, 0, 0, 1, 0, 1, 0, 2], &[]);
        assert!(parse_setup_response(&a, 7).is_err());
    }

    #[test]
    fn read_request_and_response() {
        let items = [
            Range {
                area: Area::Db,
                db: 1,
                start: 204,
                len: 3,
            },
            Range {
                area: Area::Markers,
                db: 0,
                start: 1,
                len: 2,
            },
        ];
        let f = read_request(9, &items);
        assert_eq!(f.len(), 7 + read_request_size(2));
        assert_eq!(
            &f[17..31],
            &[4, 2, 0x12, 0x0a, 0x10, 2, 0, 3, 0, 1, 0x84, 0, 6, 0x60]
        );
        // Item 1 has an odd length: a fill byte follows it.
        let data = [
            0xff, 4, 0, 24, 1, 2, 3, 0, //
            0xff, 4, 0, 16, 4, 5,
        ];
        let a = ack_frame(9, &[4, 2], &data);
        assert_eq!(a.len() - 7, read_response_size([3, 2]));
        let r = parse_read_response(&a, 9, 2).unwrap();
        assert_eq!(r, vec![Ok(vec![1, 2, 3]), Ok(vec![4, 5])]);
        // An item error.
        let a = ack_frame(9, &[4, 2], &[0x0a, 0, 0, 0, 0xff, 9, 0, 2, 4, 5]);
        let r = parse_read_response(&a, 9, 2).unwrap();
        assert_eq!(r[0], Err(ItemError(0x0a)));
        assert_eq!(r[1], Ok(vec![4, 5]));
        assert!(r[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        // Too few items, a whole-request error, a truncated item.
        assert!(parse_read_response(&a, 9, 3).is_err());
        let mut refused = ack_frame(9, &[4, 0], &[]);
        refused[17] = 0x81;
        refused[18] = 0x04;
        assert_eq!(
            parse_read_response(&refused, 9, 0),
            Err(ProtoError::Refused {
                class: 0x81,
                code: 4
            })
        );
        let a = ack_frame(9, &[4, 1], &[0xff, 4, 0, 80, 1]);
        assert!(parse_read_response(&a, 9, 1).is_err());
    }

    #[test]
    fn write_request_bit_and_bytes() {
        let f = write_request(
            3,
            &[
                WriteItem::Bit {
                    area: Area::Db,
                    db: 1,
                    byte: 0,
                    bit: 3,
                    value: true,
                },
                WriteItem::Bytes {
                    area: Area::Db,
                    db: 1,
                    start: 2,
                    data: vec![0xaa, 0xbb],
                },
            ],
        );
        assert_eq!(f.len(), 7 + write_request_size([1, 2]));
        let params = &f[17..17 + 26];
        assert_eq!(&params[..2], &[5, 2]);
        assert_eq!(
            &params[2..14],
            &[0x12, 0x0a, 0x10, 1, 0, 1, 0, 1, 0x84, 0, 0, 3]
        );
        assert_eq!(&f[17 + 26..], &[0, 3, 0, 1, 1, 0, 0, 4, 0, 16, 0xaa, 0xbb]);
        let a = ack_frame(3, &[5, 2], &[0xff, 0x05]);
        assert_eq!(
            parse_write_response(&a, 3, 2).unwrap(),
            vec![Ok(()), Err(ItemError(5))]
        );
        assert!(parse_write_response(&a, 3, 3).is_err());
    }

    #[test]
    fn frame_header_checks() {
        assert!(frame_len(&[3, 0, 0]).is_err());
        assert!(frame_len(&[2, 0, 0, 20]).is_err());
        assert!(frame_len(&[3, 0, 0, 5]).is_err());
        assert!(frame_len(&[3, 0, 0xff, 0xff]).is_err());
        assert_eq!(frame_len(&[3, 0, 0, 7]), Ok(7));
    }

    #[test]
    fn no_panic_on_any_prefix_or_byte_flip() {
        let data = [0xff, 4, 0, 24, 1, 2, 3, 0, 0xff, 4, 0, 16, 4, 5];
        let good = ack_frame(1, &[4, 2], &data);
        for cut in 0..good.len() {
            parse_any(&good[..cut]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut f = good.clone();
                f[i] = v;
                parse_any(&f);
            }
        }
        let mut state = 0x1234_5678u32;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let mut f = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                f.push(state as u8);
            }
            if f.len() >= 4 {
                f[0] = 3;
                f[2] = 0;
                f[3] = len as u8;
            }
            parse_any(&f);
        }
    }
}
