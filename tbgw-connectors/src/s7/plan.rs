//! The read plan of one device: its tags' byte ranges merged into blocks (tags of one area
//! and DB whose bytes touch or lie within [`GAP`] bytes of each other), the blocks cut into
//! items that fit one answer, and the items packed into as few ReadVar requests as the
//! negotiated PDU size and [`MAX_ITEMS`] allow. Pure: no I/O.
//!
//! Upstream reads each tag with a request of its own (1,000 tags: 1,000 round trips).

use super::proto::{read_request_size, read_response_size, Area, ItemError, Range, MAX_ITEMS};

/// Bytes between two tags that are read rather than starting a new item (an item costs 12
/// bytes of request and 4 of answer).
pub const GAP: u32 = 16;

/// One tag's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Area.
    pub area: Area,
    /// DB number.
    pub db: u16,
    /// First byte.
    pub start: u32,
    /// Bytes.
    pub len: u16,
}

#[derive(Debug, Clone)]
struct Block {
    area: Area,
    db: u16,
    start: u32,
    len: u32,
}

/// Where an item's bytes go: block, offset in the block.
#[derive(Debug, Clone, Copy)]
struct Part {
    block: usize,
    offset: u32,
}

/// The plan: requests of items, and where each tag's bytes are.
#[derive(Debug, Clone)]
pub struct Plan {
    blocks: Vec<Block>,
    /// Per tag: block, offset in it.
    tags: Vec<(usize, u32, u16)>,
    requests: Vec<Vec<(Range, Part)>>,
}

/// The bytes of one poll, filled request by request.
#[derive(Debug)]
pub struct Buffers {
    data: Vec<Vec<u8>>,
    /// Per block: failed byte ranges and why.
    failed: Vec<Vec<(u32, u32, String)>>,
}

impl Plan {
    /// Plans reading `spans` with answers of at most `pdu` bytes.
    pub fn new(spans: &[Span], pdu: u16) -> Plan {
        let mut order: Vec<usize> = (0..spans.len()).collect();
        order.sort_by_key(|&i| (spans[i].area, spans[i].db, spans[i].start));
        let mut blocks: Vec<Block> = Vec::new();
        let mut tags = vec![(0usize, 0u32, 0u16); spans.len()];
        for i in order {
            let s = spans[i];
            let end = s.start.saturating_add(u32::from(s.len));
            match blocks.last_mut() {
                Some(b)
                    if b.area == s.area
                        && b.db == s.db
                        && s.start <= b.start.saturating_add(b.len).saturating_add(GAP) =>
                {
                    b.len = b.len.max(end - b.start);
                }
                _ => blocks.push(Block {
                    area: s.area,
                    db: s.db,
                    start: s.start,
                    len: u32::from(s.len),
                }),
            }
            let bi = blocks.len() - 1;
            tags[i] = (bi, s.start - blocks[bi].start, s.len);
        }
        // The largest item an answer holds: PDU minus the answer's header, parameters and
        // item header, even so that no fill byte is needed.
        let max_item = (usize::from(pdu).saturating_sub(read_response_size([0])) & !1).max(2);
        let mut items = Vec::new();
        for (bi, b) in blocks.iter().enumerate() {
            let mut off = 0u32;
            while off < b.len {
                let len = (b.len - off).min(max_item as u32);
                items.push((
                    Range {
                        area: b.area,
                        db: b.db,
                        start: b.start + off,
                        len: len as u16,
                    },
                    Part {
                        block: bi,
                        offset: off,
                    },
                ));
                off += len;
            }
        }
        let mut requests: Vec<Vec<(Range, Part)>> = Vec::new();
        let mut cur: Vec<(Range, Part)> = Vec::new();
        for it in items {
            let fits = |cur: &[(Range, Part)]| {
                let n = cur.len() + 1;
                n <= MAX_ITEMS
                    && read_request_size(n) <= usize::from(pdu)
                    && read_response_size(
                        cur.iter()
                            .map(|(r, _)| usize::from(r.len))
                            .chain([usize::from(it.0.len)]),
                    ) <= usize::from(pdu)
            };
            if !cur.is_empty() && !fits(&cur) {
                requests.push(std::mem::take(&mut cur));
            }
            cur.push(it);
        }
        if !cur.is_empty() {
            requests.push(cur);
        }
        Plan {
            blocks,
            tags,
            requests,
        }
    }

    /// The ReadVar requests of one poll.
    pub fn requests(&self) -> impl Iterator<Item = Vec<Range>> + '_ {
        self.requests
            .iter()
            .map(|r| r.iter().map(|(range, _)| *range).collect())
    }

    /// Requests per poll.
    pub fn request_count(&self) -> usize {
        self.requests.len()
    }

    /// Empty buffers for one poll.
    pub fn buffers(&self) -> Buffers {
        Buffers {
            data: self
                .blocks
                .iter()
                .map(|b| vec![0; b.len as usize])
                .collect(),
            failed: vec![Vec::new(); self.blocks.len()],
        }
    }

    /// Stores the answer to request `i` (or its failure as a whole).
    pub fn store(
        &self,
        bufs: &mut Buffers,
        i: usize,
        answer: Result<&[Result<Vec<u8>, ItemError>], String>,
    ) {
        let Some(req) = self.requests.get(i) else {
            return;
        };
        for (k, (range, part)) in req.iter().enumerate() {
            let (from, to) = (part.offset, part.offset + u32::from(range.len));
            let got = match &answer {
                Err(e) => Err(e.clone()),
                Ok(items) => match items.get(k) {
                    Some(Ok(b)) if b.len() == usize::from(range.len) => Ok(b),
                    Some(Ok(b)) => Err(format!(
                        "the PLC returned {} bytes, {} were asked",
                        b.len(),
                        range.len
                    )),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("no answer for the item".into()),
                },
            };
            match got {
                Ok(b) => {
                    if let Some(dst) = bufs.data[part.block].get_mut(from as usize..to as usize) {
                        dst.copy_from_slice(b);
                    }
                }
                Err(e) => bufs.failed[part.block].push((from, to, e)),
            }
        }
    }

    /// Tag `i`'s bytes from a filled buffer, or why they could not be read.
    pub fn tag<'a>(&self, bufs: &'a Buffers, i: usize) -> Result<&'a [u8], String> {
        let &(b, off, len) = self.tags.get(i).ok_or("no such tag")?;
        let end = off + u32::from(len);
        if let Some((_, _, e)) = bufs.failed[b].iter().find(|(f, t, _)| *f < end && off < *t) {
            return Err(e.clone());
        }
        bufs.data[b]
            .get(off as usize..end as usize)
            .ok_or_else(|| "outside the block".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(db: u16, start: u32, len: u16) -> Span {
        Span {
            area: Area::Db,
            db,
            start,
            len,
        }
    }

    #[test]
    fn neighbours_merge_and_far_tags_do_not() {
        let spans = [
            span(1, 204, 4),
            span(1, 200, 4),
            span(1, 0, 1),
            span(2, 0, 2),
        ];
        let p = Plan::new(&spans, 480);
        assert_eq!(p.request_count(), 1);
        let reqs: Vec<_> = p.requests().collect();
        assert_eq!(reqs[0].len(), 3, "{reqs:?}");
        assert_eq!((reqs[0][1].start, reqs[0][1].len), (200, 8));
        let mut bufs = p.buffers();
        let answer: Vec<_> = reqs[0]
            .iter()
            .map(|r| Ok((0..r.len).map(|i| (r.start as u16 + i) as u8).collect()))
            .collect();
        p.store(&mut bufs, 0, Ok(&answer));
        assert_eq!(p.tag(&bufs, 0).unwrap(), &[204, 205, 206, 207]);
        assert_eq!(p.tag(&bufs, 1).unwrap(), &[200, 201, 202, 203]);
        assert_eq!(p.tag(&bufs, 2).unwrap(), &[0]);
    }

    #[test]
    fn a_thousand_reals_take_few_requests() {
        let spans: Vec<Span> = (0..1000).map(|i| span(2, 4 * i, 4)).collect();
        let p = Plan::new(&spans, 480);
        // 4,000 bytes in items of at most 462 bytes, one item per answer.
        assert_eq!(p.request_count(), 9);
        for r in p.requests() {
            assert!(read_request_size(r.len()) <= 480);
            assert!(read_response_size(r.iter().map(|x| usize::from(x.len))) <= 480);
        }
        let p = Plan::new(&spans, 960);
        assert_eq!(p.request_count(), 5);
    }

    #[test]
    fn many_scattered_tags_respect_item_and_pdu_limits() {
        let spans: Vec<Span> = (0..100).map(|i| span(1, 100 * i, 2)).collect();
        let p = Plan::new(&spans, 240);
        let mut n = 0;
        for r in p.requests() {
            assert!(r.len() <= MAX_ITEMS);
            assert!(read_request_size(r.len()) <= 240);
            assert!(read_response_size(r.iter().map(|x| usize::from(x.len))) <= 240);
            n += r.len();
        }
        assert_eq!(n, 100);
        assert_eq!(p.request_count(), 6);
    }

    #[test]
    fn failures_reach_only_the_tags_they_cover() {
        let spans = [span(1, 0, 2), span(5, 0, 2)];
        let p = Plan::new(&spans, 480);
        let mut bufs = p.buffers();
        p.store(&mut bufs, 0, Ok(&[Ok(vec![1, 2]), Err(ItemError(0x0a))]));
        assert_eq!(p.tag(&bufs, 0).unwrap(), &[1, 2]);
        assert!(p.tag(&bufs, 1).unwrap_err().contains("does not exist"));
        let mut bufs = p.buffers();
        p.store(&mut bufs, 0, Ok(&[Ok(vec![1])]));
        assert!(p.tag(&bufs, 0).is_err());
        assert!(p.tag(&bufs, 1).is_err());
        let mut bufs = p.buffers();
        p.store(&mut bufs, 0, Err("lost".into()));
        assert_eq!(p.tag(&bufs, 0).unwrap_err(), "lost");
    }
}
