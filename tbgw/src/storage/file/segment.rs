//! The on-disk record format of the file storage and the scanner that reads it back,
//! skipping what is corrupt.
//!
//! A record is a 28-byte header followed by its payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `TBGW` (`0x5447_4254` little endian) |
//! | 4..8 | payload length (u32) |
//! | 8..12 | CRC-32 of bytes 12.. of the header and the payload |
//! | 12..20 | sequence number (u64) |
//! | 20..28 | time the record was stored, ms since the epoch (i64) |
//!
//! The magic lets the scanner find the next record after a corrupt one: it looks for the next
//! magic whose length is sane and whose CRC matches.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Header size in bytes.
pub(crate) const HEADER: usize = 28;
const MAGIC: u32 = 0x5447_4254;
/// Largest payload accepted (a sanity bound for the length field).
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Appends a framed record to `out`.
pub(crate) fn frame(out: &mut Vec<u8>, seq: u64, ts: i64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(payload);
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start + 12..]);
    let crc = h.finalize();
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// A record found by the scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Offset of the record's header in the file.
    pub offset: u64,
    /// Offset just after the record.
    pub end: u64,
    pub seq: u64,
    pub ts: i64,
    pub payload: Vec<u8>,
}

/// What the scanner met at an offset.
#[derive(Debug)]
pub(crate) enum Step {
    /// A valid record.
    Record(Found),
    /// Corrupt bytes from `offset` to `resume` (the next valid record, or the end of the data).
    Corrupt { resume: u64 },
    /// The end of the data.
    End,
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Reads records from a file that is `len` bytes long, through a read-ahead buffer.
#[derive(Debug)]
pub(crate) struct Scanner<'a> {
    file: &'a File,
    len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
}

const CHUNK: usize = 256 * 1024;

impl<'a> Scanner<'a> {
    pub(crate) fn new(file: &'a File, len: u64) -> Self {
        Scanner {
            file,
            len,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// Makes `[offset, offset + n)` available in the buffer (as far as the file goes); returns
    /// the slice, possibly shorter than `n` at the end of the file.
    fn window(&mut self, offset: u64, n: usize) -> std::io::Result<&[u8]> {
        let end = offset.saturating_add(n as u64).min(self.len);
        let have = offset >= self.buf_start && end <= self.buf_start + self.buf.len() as u64;
        if !have {
            let want = (end - offset.min(end)) as usize;
            let size = want
                .max(CHUNK)
                .min((self.len - offset.min(self.len)) as usize);
            self.buf.resize(size, 0);
            let mut filled = 0;
            while filled < size {
                let r = self
                    .file
                    .read_at(&mut self.buf[filled..], offset + filled as u64)?;
                if r == 0 {
                    break;
                }
                filled += r;
            }
            self.buf.truncate(filled);
            self.buf_start = offset;
        }
        let from = (offset - self.buf_start) as usize;
        let to = ((end - self.buf_start) as usize)
            .min(self.buf.len())
            .max(from);
        Ok(&self.buf[from..to])
    }

    /// The record at `offset`, if it is valid.
    fn record_at(&mut self, offset: u64) -> std::io::Result<Option<Found>> {
        let head = self.window(offset, HEADER)?;
        if head.len() < HEADER || u32_at(head, 0) != MAGIC {
            return Ok(None);
        }
        let len = u32_at(head, 4) as usize;
        if len > MAX_PAYLOAD {
            return Ok(None);
        }
        let crc = u32_at(head, 8);
        let whole = self.window(offset, HEADER + len)?;
        if whole.len() < HEADER + len {
            return Ok(None);
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&whole[12..]);
        if h.finalize() != crc {
            return Ok(None);
        }
        Ok(Some(Found {
            offset,
            end: offset + (HEADER + len) as u64,
            seq: u64_at(whole, 12),
            ts: u64_at(whole, 20) as i64,
            payload: whole[HEADER..].to_vec(),
        }))
    }

    /// The next step from `offset`: a record, a corrupt stretch (and where the next valid
    /// record starts), or the end.
    pub(crate) fn step(&mut self, offset: u64) -> std::io::Result<Step> {
        if offset >= self.len {
            return Ok(Step::End);
        }
        if let Some(f) = self.record_at(offset)? {
            return Ok(Step::Record(f));
        }
        // Resynchronise: the next offset holding a valid record.
        let mut at = offset + 1;
        while at + HEADER as u64 <= self.len {
            let w = self.window(at, CHUNK)?;
            let pos = w.windows(4).position(|b| u32_at(b, 0) == MAGIC);
            match pos {
                Some(p) => {
                    let cand = at + p as u64;
                    if self.record_at(cand)?.is_some() {
                        return Ok(Step::Corrupt { resume: cand });
                    }
                    at = cand + 1;
                }
                None => {
                    let advanced = w.len().saturating_sub(3).max(1) as u64;
                    at += advanced;
                }
            }
        }
        Ok(Step::Corrupt { resume: self.len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        (f, bytes.len() as u64)
    }

    fn three() -> Vec<u8> {
        let mut b = Vec::new();
        for s in 1..=3u64 {
            frame(&mut b, s, 100 + s as i64, format!("payload {s}").as_bytes());
        }
        b
    }

    fn collect(bytes: &[u8]) -> (Vec<u64>, usize) {
        let (f, len) = file_with(bytes);
        let file = f.reopen().unwrap();
        let mut s = Scanner::new(&file, len);
        let (mut seqs, mut corrupt, mut off) = (Vec::new(), 0, 0);
        loop {
            match s.step(off).unwrap() {
                Step::Record(r) => {
                    seqs.push(r.seq);
                    off = r.end;
                }
                Step::Corrupt { resume } => {
                    corrupt += 1;
                    off = resume;
                }
                Step::End => break,
            }
        }
        (seqs, corrupt)
    }

    #[test]
    fn records_are_read_back_in_order() {
        assert_eq!(collect(&three()), (vec![1, 2, 3], 0));
    }

    #[test]
    fn a_torn_last_record_is_one_corrupt_stretch() {
        let b = three();
        for cut in 1..(HEADER + 9) {
            let (seqs, corrupt) = collect(&b[..b.len() - cut]);
            assert_eq!(seqs, vec![1, 2], "cut {cut}");
            assert_eq!(corrupt, 1);
        }
    }

    #[test]
    fn a_flipped_bit_skips_only_that_record() {
        let b = three();
        let one = b.len() / 3;
        for i in one..2 * one {
            let mut c = b.clone();
            c[i] ^= 0x10;
            let (seqs, corrupt) = collect(&c);
            assert_eq!(seqs, vec![1, 3], "flip at {i}");
            assert_eq!(corrupt, 1);
        }
    }

    #[test]
    fn garbage_between_records_is_skipped() {
        let mut b = Vec::new();
        frame(&mut b, 1, 0, b"a");
        b.extend_from_slice(b"TBGW garbage \x00\xff TBGW more");
        frame(&mut b, 2, 0, b"b");
        assert_eq!(collect(&b), (vec![1, 2], 1));
    }
}
