//! Python-style slices: the `[from:to]` / `[i]` byte-slice expressions of the bytes
//! converters, and the slice arithmetic shared with JSONPath subscripts.

use std::fmt::Write as _;

use super::ExprError;

/// A Python slice `start:end:step` with optional bounds. `step` is never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SliceSpec {
    pub(crate) start: Option<i64>,
    pub(crate) end: Option<i64>,
    pub(crate) step: i64,
}

impl SliceSpec {
    /// Start, end (exclusive) and step over a sequence of `len` items, clamped the way
    /// Python's `slice.indices` does.
    fn bounds(&self, len: usize) -> (i64, i64, i64) {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let step = self.step;
        let (lower, upper) = if step > 0 { (0, len) } else { (-1, len - 1) };
        let clamp = |v: i64| {
            if v < 0 {
                (v + len).max(lower)
            } else {
                v.min(upper)
            }
        };
        let start = self
            .start
            .map_or(if step > 0 { lower } else { upper }, clamp);
        let end = self.end.map_or(if step > 0 { upper } else { lower }, clamp);
        (start, end, step)
    }

    /// The selected indices of a sequence of `len` items, in order.
    pub(crate) fn indices(&self, len: usize) -> SliceIndices {
        let (cur, end, step) = self.bounds(len);
        SliceIndices { cur, end, step }
    }

    /// The selected range when the slice is contiguous (`step == 1`).
    fn range(&self, len: usize) -> Option<std::ops::Range<usize>> {
        if self.step != 1 {
            return None;
        }
        let (start, end, _) = self.bounds(len);
        let start = usize::try_from(start).ok()?;
        let end = usize::try_from(end).ok()?.max(start);
        Some(start..end)
    }

    /// True when the slice selects every item in order (`[:]`, `[0:]`, `[::1]`).
    fn is_all(&self) -> bool {
        self.step == 1 && matches!(self.start, None | Some(0)) && self.end.is_none()
    }
}

/// Iterator over the indices a [`SliceSpec`] selects.
#[derive(Debug, Clone)]
pub(crate) struct SliceIndices {
    cur: i64,
    end: i64,
    step: i64,
}

impl Iterator for SliceIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let more = if self.step > 0 {
            self.cur < self.end
        } else {
            self.cur > self.end
        };
        if !more {
            return None;
        }
        let at = usize::try_from(self.cur).ok()?;
        self.cur = self.cur.saturating_add(self.step);
        Some(at)
    }
}

/// What is between `[` and `]`: a single index or a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subscript {
    /// `[i]`, possibly negative.
    Index(i64),
    /// `[a:b]` or `[a:b:c]`.
    Slice(SliceSpec),
}

/// Resolves a possibly negative index against a sequence of `len` items.
pub(crate) fn resolve_index(i: i64, len: usize) -> Option<usize> {
    if i < 0 {
        let back = usize::try_from(i.unsigned_abs()).ok()?;
        len.checked_sub(back)
    } else {
        usize::try_from(i).ok().filter(|&i| i < len)
    }
}

/// True for characters that may appear in an index or slice subscript.
pub(crate) fn is_subscript_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, ':' | '-' | '+' | ' ' | '\t')
}

/// Parses the text between brackets. On error returns the byte offset within `text` of the
/// offending part and a reason.
pub(crate) fn parse_subscript(text: &str) -> Result<Subscript, (usize, &'static str)> {
    fn int(part: &str, at: usize) -> Result<Option<i64>, (usize, &'static str)> {
        let t = part.trim();
        if t.is_empty() {
            return Ok(None);
        }
        t.parse::<i64>()
            .map(Some)
            .map_err(|_| (at, "expected an integer"))
    }
    if !text.contains(':') {
        return match int(text, 0)? {
            Some(i) => Ok(Subscript::Index(i)),
            None => Err((0, "empty subscript")),
        };
    }
    let mut bounds = [None, None, None];
    let mut at: usize = 0;
    for (n, part) in text.split(':').enumerate() {
        let Some(slot) = bounds.get_mut(n) else {
            return Err((at.saturating_sub(1), "a slice has at most three parts"));
        };
        *slot = int(part, at)?;
        at += part.len() + 1;
    }
    let step = bounds[2].unwrap_or(1);
    if step == 0 {
        let pos = text.rfind(':').map_or(0, |p| p + 1);
        return Err((pos, "slice step cannot be zero"));
    }
    Ok(Subscript::Slice(SliceSpec {
        start: bounds[0],
        end: bounds[1],
        step,
    }))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    Slice(SliceSpec),
}

/// A byte-slice expression such as `"[0:2]cm [2:]A"`: Python slices over a byte payload mixed
/// with literal text.
///
/// `[from:to]`, `[from:to:step]`, `[i]`, `[:]`, `[2:]` and negative indices follow Python's
/// slice semantics; an index outside the payload selects nothing (Python would raise). Square
/// brackets whose content is not an index or slice (letters, say) are literal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteSlices {
    source: Box<str>,
    pieces: Vec<Piece>,
}

impl ByteSlices {
    /// Parses a byte-slice expression.
    ///
    /// Fails on an unterminated `[`, and on a subscript made of digits, signs and colons that
    /// is not a valid index or slice (`[]`, `[1:2:3:4]`, `[1-2]`, `[::0]`).
    pub fn parse(s: &str) -> Result<Self, ExprError> {
        let err = |pos: usize, reason: &'static str| ExprError::InvalidSlice {
            text: s.to_owned(),
            pos,
            reason,
        };
        let mut pieces = Vec::new();
        let mut literal_start = 0;
        let mut search = 0;
        while let Some(rel) = s[search..].find('[') {
            let open = search + rel;
            let Some(close_rel) = s[open + 1..].find(']') else {
                return Err(err(open, "unterminated `[`"));
            };
            let close = open + 1 + close_rel;
            let inner = &s[open + 1..close];
            if !inner.chars().all(is_subscript_char) {
                // Not a subscript: keep the bracket as literal text.
                search = open + 1;
                continue;
            }
            let spec = match parse_subscript(inner) {
                Ok(Subscript::Slice(spec)) => spec,
                Ok(Subscript::Index(i)) => SliceSpec {
                    start: Some(i),
                    end: if i == -1 {
                        None
                    } else {
                        Some(i.saturating_add(1))
                    },
                    step: 1,
                },
                Err((pos, reason)) => return Err(err(open + 1 + pos, reason)),
            };
            if open > literal_start {
                pieces.push(Piece::Literal(s[literal_start..open].into()));
            }
            pieces.push(Piece::Slice(spec));
            literal_start = close + 1;
            search = literal_start;
        }
        if literal_start < s.len() {
            pieces.push(Piece::Literal(s[literal_start..].into()));
        }
        Ok(ByteSlices {
            source: s.into(),
            pieces,
        })
    }

    /// The expression text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the expression has at least one slice (else it is literal text only).
    pub fn has_slices(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Slice(_)))
    }

    /// True when the expression is exactly one slice selecting the whole payload (`[:]`).
    pub fn is_whole_payload(&self) -> bool {
        matches!(self.pieces.as_slice(), [Piece::Slice(spec)] if spec.is_all())
    }

    /// Renders the expression over `payload`: literal text is copied, each slice is rendered
    /// as UTF-8 text (invalid sequences replaced by U+FFFD) or, when `hex` is true, as
    /// lowercase hex digits.
    pub fn render(&self, payload: &[u8], hex: bool) -> String {
        let mut out =
            String::with_capacity(self.source.len() + if hex { 2 } else { 1 } * payload.len());
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Slice(spec) => match spec.range(payload.len()) {
                    Some(range) => {
                        let bytes = payload.get(range).unwrap_or_default();
                        if hex {
                            push_hex(&mut out, bytes.iter().copied());
                        } else {
                            out.push_str(&String::from_utf8_lossy(bytes));
                        }
                    }
                    None => {
                        let bytes = spec
                            .indices(payload.len())
                            .filter_map(|i| payload.get(i).copied());
                        if hex {
                            push_hex(&mut out, bytes);
                        } else {
                            let picked: Vec<u8> = bytes.collect();
                            out.push_str(&String::from_utf8_lossy(&picked));
                        }
                    }
                },
            }
        }
        out
    }
}

impl std::fmt::Display for ByteSlices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

fn push_hex(out: &mut String, bytes: impl Iterator<Item = u8>) {
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(expr: &str, payload: &[u8]) -> String {
        ByteSlices::parse(expr)
            .expect("valid")
            .render(payload, false)
    }

    fn render_hex(expr: &str, payload: &[u8]) -> String {
        ByteSlices::parse(expr)
            .expect("valid")
            .render(payload, true)
    }

    #[test]
    fn slices_are_told_from_literal_text() {
        assert!(ByteSlices::parse("[0:4]cm").unwrap().has_slices());
        assert!(!ByteSlices::parse("cm [abc]").unwrap().has_slices());
    }

    #[test]
    fn a_range_selects_the_bytes_between_the_bounds() {
        assert_eq!(render("[0:4]", b"temp21.5"), "temp");
        assert_eq!(render("[4:]", b"temp21.5"), "21.5");
        assert_eq!(render("[:2]", b"temp21.5"), "te");
    }

    #[test]
    fn the_full_slice_selects_the_whole_payload() {
        assert_eq!(render("[:]", b"hello"), "hello");
        assert!(ByteSlices::parse("[:]").expect("valid").is_whole_payload());
        assert!(ByteSlices::parse("[0:]").expect("valid").is_whole_payload());
        assert!(!ByteSlices::parse("[1:]").expect("valid").is_whole_payload());
        assert!(!ByteSlices::parse("[:]x").expect("valid").is_whole_payload());
    }

    #[test]
    fn a_single_index_selects_one_byte() {
        assert_eq!(render("[1]", b"abc"), "b");
        assert_eq!(render("[-1]", b"abc"), "c");
        assert_eq!(render("[-3]", b"abc"), "a");
    }

    #[test]
    fn an_index_outside_the_payload_selects_nothing() {
        assert_eq!(render("[5]", b"abc"), "");
        assert_eq!(render("[-4]", b"abc"), "");
        assert_eq!(render("x[9:12]y", b"abc"), "xy");
    }

    #[test]
    fn negative_bounds_count_from_the_end() {
        assert_eq!(render("[-2:]", b"abcdef"), "ef");
        assert_eq!(render("[:-2]", b"abcdef"), "abcd");
        assert_eq!(render("[-4:-2]", b"abcdef"), "cd");
        assert_eq!(render("[-100:2]", b"abcdef"), "ab");
    }

    #[test]
    fn steps_follow_python_semantics() {
        assert_eq!(render("[::2]", b"abcdef"), "ace");
        assert_eq!(render("[::-1]", b"abc"), "cba");
        assert_eq!(render("[4:1:-1]", b"abcdef"), "edc");
    }

    #[test]
    fn slices_mix_with_literal_text() {
        assert_eq!(render("[0:2]cm [2:]A", b"1203"), "12cm 03A");
    }

    #[test]
    fn hex_mode_renders_lowercase_hex() {
        assert_eq!(render_hex("[:]", &[0x00, 0xAB, 0x10]), "00ab10");
        assert_eq!(render_hex("[1]", &[0x00, 0xAB, 0x10]), "ab");
        assert_eq!(render_hex("[::-1]", &[0x01, 0x02]), "0201");
        assert_eq!(render_hex("id=[-2:]", &[0xde, 0xad, 0xbe, 0xef]), "id=beef");
    }

    #[test]
    fn invalid_utf8_is_replaced_in_text_mode() {
        assert_eq!(render("[:]", &[b'a', 0xff, b'b']), "a\u{fffd}b");
    }

    #[test]
    fn brackets_with_non_numeric_content_stay_literal() {
        assert_eq!(render("[unit] [0:1]", b"xyz"), "[unit] x");
    }

    #[test]
    fn malformed_subscripts_are_errors() {
        for bad in [
            "[]",
            "[1:2:3:4]",
            "[1-2]",
            "[::0]",
            "[--1]",
            "[0:2",
            "ab[",
            "[ : x",
        ] {
            assert!(ByteSlices::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn error_messages_name_the_text_and_position() {
        let e = ByteSlices::parse("ab[1:2:3:4]").expect_err("invalid");
        let msg = e.to_string();
        assert!(msg.contains("ab[1:2:3:4]"), "{msg}");
        assert!(msg.contains("byte"), "{msg}");
    }

    #[test]
    fn an_empty_expression_renders_nothing() {
        assert_eq!(render("", b"abc"), "");
        assert_eq!(render("const", b"abc"), "const");
    }

    #[test]
    fn extreme_bounds_do_not_overflow() {
        assert_eq!(
            render("[-9223372036854775808:9223372036854775807]", b"ab"),
            "ab"
        );
        assert_eq!(render("[9223372036854775807]", b"ab"), "");
        assert_eq!(render("[::-9223372036854775808]", b"ab"), "b");
        assert_eq!(render("[::9223372036854775807]", b"ab"), "a");
    }

    #[test]
    fn slice_indices_match_python() {
        let spec = |start, end, step| SliceSpec { start, end, step };
        let idx = |s: SliceSpec, n| s.indices(n).collect::<Vec<_>>();
        assert_eq!(idx(spec(None, None, 1), 3), vec![0, 1, 2]);
        assert_eq!(idx(spec(Some(1), Some(3), 1), 5), vec![1, 2]);
        assert_eq!(idx(spec(None, None, -1), 3), vec![2, 1, 0]);
        assert_eq!(idx(spec(Some(-1), None, -2), 5), vec![4, 2, 0]);
        assert_eq!(idx(spec(Some(3), Some(1), 1), 5), Vec::<usize>::new());
        assert_eq!(idx(spec(None, None, 1), 0), Vec::<usize>::new());
    }

    #[test]
    fn subscripts_parse_into_indices_and_slices() {
        assert_eq!(parse_subscript("3"), Ok(Subscript::Index(3)));
        assert_eq!(parse_subscript(" -1 "), Ok(Subscript::Index(-1)));
        assert_eq!(
            parse_subscript("1:"),
            Ok(Subscript::Slice(SliceSpec {
                start: Some(1),
                end: None,
                step: 1
            }))
        );
        assert!(parse_subscript("").is_err());
        assert!(parse_subscript("1 2").is_err());
    }
}
