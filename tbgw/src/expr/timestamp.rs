//! Timestamps from message fields (`tsField`): epoch numbers and date-time text to
//! milliseconds since the Unix epoch.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::Value;

/// Values below this are epoch seconds, at or above it epoch milliseconds.
const SECONDS_LIMIT: f64 = 1e11;

/// How ambiguous numeric dates such as `01/02/03` are read, like dateutil's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TsOptions {
    /// Read `01/02/2024` as 1 February (day first) instead of 2 January.
    pub dayfirst: bool,
    /// Read a leading two-digit number as the year: `01/02/03` is 2001-02-03.
    pub yearfirst: bool,
}

/// Parses a JSON value into milliseconds since the Unix epoch.
///
/// * Numbers and numeric strings: below 10^11 they are seconds, otherwise milliseconds
///   (the magnitude decides, so negative values work too); fractional seconds keep their
///   milliseconds.
/// * Text: see [`parse_timestamp_str`].
///
/// Anything else (booleans, null, objects, unparseable text) gives None.
pub fn parse_timestamp(v: &Value, opts: TsOptions) -> Option<i64> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => int_epoch(i),
            None => float_epoch(n.as_f64()?),
        },
        Value::String(s) => parse_timestamp_str(s, opts),
        _ => None,
    }
}

/// Parses text into milliseconds since the Unix epoch.
///
/// Accepted forms (surrounding whitespace is ignored):
/// * epoch seconds or milliseconds as a number (`"1700000000"`, `"1700000000.5"`);
/// * ISO 8601 / RFC 3339: `2024-01-15T10:30:00Z`, `2024-01-15T10:30:00.123+02:00`,
///   `2024-01-15 10:30:00.123`, `2024-01-15T10:30`; no zone means UTC;
/// * dates with `-`, `/` or `.` separators, optionally followed by a time:
///   `15.01.2024 10:30:00`, `01/15/2024 10:30`, `2024/01/15`. A four-digit leading year
///   reads year-month-day; otherwise ambiguous day/month order follows `dayfirst` (default
///   month first, like dateutil) and a leading two-digit year follows `yearfirst`;
///   two-digit years land within 50 years of the current year;
/// * times may carry `AM`/`PM` and a zone: `Z`, `UTC`, `GMT`, `+02:00`, `+0200`, `+02`;
/// * RFC 2822: `Tue, 1 Jul 2003 10:52:37 +0200`.
pub fn parse_timestamp_str(s: &str, opts: TsOptions) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(i) = s.parse::<i64>() {
        return int_epoch(i);
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        if let Ok(f) = s.parse::<f64>() {
            return float_epoch(f);
        }
    }
    parse_date_time(s, opts).or_else(|| {
        chrono::DateTime::parse_from_rfc2822(s)
            .ok()
            .map(|d| d.timestamp_millis())
    })
}

fn int_epoch(i: i64) -> Option<i64> {
    if i.unsigned_abs() < 100_000_000_000 {
        i.checked_mul(1000)
    } else {
        Some(i)
    }
}

fn float_epoch(f: f64) -> Option<i64> {
    if !f.is_finite() {
        return None;
    }
    let ms = if f.abs() < SECONDS_LIMIT {
        f * 1000.0
    } else {
        f
    }
    .round();
    // 2^63 as f64; the range check keeps the cast exact.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (-LIMIT..LIMIT).contains(&ms).then_some(ms as i64)
}

/// A cursor over ASCII text.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
        self.i > start
    }

    /// Up to `max` digits; returns the value and how many digits were read (at least one).
    fn number(&mut self, max: usize) -> Option<(u32, usize)> {
        let start = self.i;
        let mut v: u32 = 0;
        while self.i - start < max {
            match self.peek() {
                Some(d @ b'0'..=b'9') => {
                    v = v * 10 + u32::from(d - b'0');
                    self.i += 1;
                }
                _ => break,
            }
        }
        let n = self.i - start;
        (n > 0).then_some((v, n))
    }

    /// Exactly `n` digits.
    fn fixed(&mut self, n: usize) -> Option<u32> {
        match self.number(n)? {
            (v, len) if len == n => Some(v),
            _ => None,
        }
    }

    /// Case-insensitive ASCII keyword.
    fn keyword(&mut self, word: &str) -> bool {
        let end = self.i + word.len();
        match self.s.get(self.i..end) {
            Some(got) if got.eq_ignore_ascii_case(word.as_bytes()) => {
                self.i = end;
                true
            }
            _ => false,
        }
    }
}

fn parse_date_time(s: &str, opts: TsOptions) -> Option<i64> {
    let mut c = Cursor {
        s: s.as_bytes(),
        i: 0,
    };
    let date = parse_date(&mut c, opts)?;
    if c.at_end() {
        return date
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc().timestamp_millis());
    }
    let spaced = c.skip_spaces();
    let separated = spaced || c.eat(b'T') || c.eat(b't');
    if !separated {
        return None;
    }
    let time = parse_time(&mut c)?;
    c.skip_spaces();
    let offset_secs = if c.at_end() { 0 } else { parse_zone(&mut c)? };
    c.skip_spaces();
    if !c.at_end() {
        return None;
    }
    let local = NaiveDateTime::new(date, time).and_utc().timestamp_millis();
    local.checked_sub(i64::from(offset_secs) * 1000)
}

/// Three numbers separated by the same `-`, `/` or `.`, or ISO basic `YYYYMMDD`.
fn parse_date(c: &mut Cursor<'_>, opts: TsOptions) -> Option<NaiveDate> {
    let (a, la) = c.number(8)?;
    if la == 8 {
        // ISO basic format: only with a time part, plain digits are epoch numbers.
        if !matches!(c.peek(), Some(b'T' | b't')) {
            return None;
        }
        return NaiveDate::from_ymd_opt(i32::try_from(a / 10_000).ok()?, a / 100 % 100, a % 100);
    }
    if la > 4 {
        return None;
    }
    let sep = c.peek().filter(|b| matches!(b, b'-' | b'/' | b'.'))?;
    c.i += 1;
    let (b, lb) = c.number(4)?;
    if !c.eat(sep) {
        return None;
    }
    let (d, ld) = c.number(4)?;
    let (year, month, day) = order_ymd([(a, la), (b, lb), (d, ld)], opts)?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// Decides which of three numbers is the year, month and day, following dateutil's rules
/// except that a four-digit leading year always reads year-month-day (ISO order).
fn order_ymd(n: [(u32, usize); 3], opts: TsOptions) -> Option<(i32, u32, u32)> {
    let is_year = |(v, len): (u32, usize)| len > 2 || v > 31;
    let [a, b, d] = n;
    // Positions of year, month and day within `n`.
    let (yi, mi, di) = if is_year(a) {
        if b.0 > 12 {
            (0, 2, 1)
        } else {
            (0, 1, 2)
        }
    } else if is_year(b) {
        return None;
    } else if !is_year(d) && opts.yearfirst && b.0 <= 12 && d.0 <= 31 {
        if opts.dayfirst && d.0 <= 12 {
            (0, 2, 1)
        } else {
            (0, 1, 2)
        }
    } else if a.0 > 12 || (opts.dayfirst && b.0 <= 12) {
        (2, 1, 0)
    } else {
        (2, 0, 1)
    };
    let (y, y_len) = n[yi];
    let year = if y_len <= 2 {
        two_digit_year(y)
    } else {
        i32::try_from(y).ok()?
    };
    Some((year, n[mi].0, n[di].0))
}

/// Places a two-digit year within 50 years of the current year, like dateutil.
fn two_digit_year(yy: u32) -> i32 {
    let now = chrono::Utc::now().year();
    let mut year = now - now.rem_euclid(100) + i32::try_from(yy % 100).unwrap_or(0);
    if year >= now + 50 {
        year -= 100;
    } else if year < now - 50 {
        year += 100;
    }
    year
}

/// `H:MM[:SS[.fff]]` with an optional `AM`/`PM`.
fn parse_time(c: &mut Cursor<'_>) -> Option<NaiveTime> {
    let (mut hour, _) = c.number(2)?;
    if !c.eat(b':') {
        return None;
    }
    let minute = c.fixed(2)?;
    let mut second = 0;
    let mut nanos = 0;
    if c.eat(b':') {
        second = c.fixed(2)?;
        if c.eat(b'.') || c.eat(b',') {
            let start = c.i;
            let mut scale = 100_000_000;
            while let Some(d @ b'0'..=b'9') = c.peek() {
                nanos += u32::from(d - b'0') * scale;
                scale /= 10;
                c.i += 1;
            }
            if c.i == start {
                return None;
            }
        }
    }
    let before_meridiem = c.i;
    c.skip_spaces();
    if c.keyword("am") {
        hour = match hour {
            12 => 0,
            1..=11 => hour,
            _ => return None,
        };
    } else if c.keyword("pm") {
        hour = match hour {
            12 => 12,
            1..=11 => hour + 12,
            _ => return None,
        };
    } else {
        c.i = before_meridiem;
    }
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
}

/// `Z`, `UTC`, `GMT` (optionally followed by an offset) or `±HH[:MM]` / `±HHMM`; returns
/// the offset east of UTC in seconds.
fn parse_zone(c: &mut Cursor<'_>) -> Option<i32> {
    if c.eat(b'Z') || c.eat(b'z') {
        return Some(0);
    }
    let named_utc = c.keyword("utc") || c.keyword("gmt");
    if named_utc && !matches!(c.peek(), Some(b'+' | b'-')) {
        return Some(0);
    }
    let sign = match c.peek()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    c.i += 1;
    let hours = c.fixed(2)?;
    let minutes = if c.eat(b':') {
        c.fixed(2)?
    } else {
        let save = c.i;
        c.fixed(2).unwrap_or_else(|| {
            c.i = save;
            0
        })
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    i32::try_from(hours * 3600 + minutes * 60)
        .ok()
        .map(|s| s * sign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MONTH_FIRST: TsOptions = TsOptions {
        dayfirst: false,
        yearfirst: false,
    };
    const DAY_FIRST: TsOptions = TsOptions {
        dayfirst: true,
        yearfirst: false,
    };

    fn ts(v: Value) -> Option<i64> {
        parse_timestamp(&v, TsOptions::default())
    }

    fn text(s: &str, opts: TsOptions) -> Option<i64> {
        parse_timestamp_str(s, opts)
    }

    /// 2024-01-15T10:30:00Z in milliseconds.
    const T0: i64 = 1_705_314_600_000;

    #[test]
    fn small_epoch_numbers_are_seconds_and_large_ones_milliseconds() {
        assert_eq!(ts(json!(1_705_314_600)), Some(T0));
        assert_eq!(ts(json!(T0)), Some(T0));
        assert_eq!(ts(json!(99_999_999_999_i64)), Some(99_999_999_999_000));
        assert_eq!(ts(json!(100_000_000_000_i64)), Some(100_000_000_000));
        assert_eq!(ts(json!(0)), Some(0));
        assert_eq!(ts(json!(-60)), Some(-60_000));
    }

    #[test]
    fn fractional_seconds_keep_their_milliseconds() {
        assert_eq!(ts(json!(1_705_314_600.123)), Some(T0 + 123));
        assert_eq!(ts(json!(1_705_314_600_123.4)), Some(T0 + 123));
        assert_eq!(ts(json!("1705314600.5")), Some(T0 + 500));
    }

    #[test]
    fn numeric_strings_are_epoch_values() {
        assert_eq!(ts(json!("1705314600")), Some(T0));
        assert_eq!(ts(json!(" 1705314600000 ")), Some(T0));
        assert_eq!(ts(json!("1.7053146e9")), Some(T0));
    }

    #[test]
    fn out_of_range_numbers_give_none() {
        assert_eq!(ts(json!(u64::MAX)), None);
        assert_eq!(ts(json!(1e300)), None);
        assert_eq!(ts(json!("1e400")), None);
    }

    #[test]
    fn rfc3339_with_and_without_zone() {
        assert_eq!(ts(json!("2024-01-15T10:30:00Z")), Some(T0));
        assert_eq!(ts(json!("2024-01-15T10:30:00")), Some(T0));
        assert_eq!(ts(json!("2024-01-15t10:30:00z")), Some(T0));
        assert_eq!(ts(json!("2024-01-15T12:30:00+02:00")), Some(T0));
        assert_eq!(ts(json!("2024-01-15T12:30:00+0200")), Some(T0));
        assert_eq!(ts(json!("2024-01-15T12:30:00+02")), Some(T0));
        assert_eq!(ts(json!("2024-01-15T05:00:00-05:30")), Some(T0));
        assert_eq!(ts(json!("2024-01-15T10:30:00.123456Z")), Some(T0 + 123));
        assert_eq!(ts(json!("2024-01-15T10:30:00,5Z")), Some(T0 + 500));
        assert_eq!(ts(json!("2024-01-15T10:30")), Some(T0));
        assert_eq!(ts(json!("20240115T10:30:00Z")), Some(T0));
    }

    #[test]
    fn space_separated_date_times_with_zones_and_meridiem() {
        assert_eq!(ts(json!("2024-01-15 10:30:00")), Some(T0));
        assert_eq!(ts(json!("2024-01-15 10:30:00.250")), Some(T0 + 250));
        assert_eq!(ts(json!("2024-01-15 10:30:00 UTC")), Some(T0));
        assert_eq!(ts(json!("2024-01-15 11:30:00 GMT+01:00")), Some(T0));
        assert_eq!(ts(json!("2024-01-15 10:30:00 AM")), Some(T0));
        assert_eq!(ts(json!("2024-01-15 10:30 pm")), Some(T0 + 12 * 3_600_000));
        assert_eq!(ts(json!("2024-01-15 12:00 am")), Some(T0 - 37_800_000));
        assert_eq!(ts(json!("2024-01-15 13:00 pm")), None);
    }

    #[test]
    fn date_only_forms_are_midnight_utc() {
        let midnight = T0 - 37_800_000;
        assert_eq!(ts(json!("2024-01-15")), Some(midnight));
        assert_eq!(ts(json!("2024/01/15")), Some(midnight));
        assert_eq!(ts(json!("15.01.2024")), Some(midnight));
        assert_eq!(ts(json!("01/15/2024")), Some(midnight));
    }

    #[test]
    fn dotted_and_slashed_dates_with_times() {
        assert_eq!(text("15.01.2024 10:30:00", MONTH_FIRST), Some(T0));
        assert_eq!(text("15/01/2024 10:30:00", MONTH_FIRST), Some(T0));
        assert_eq!(text("01/15/2024 10:30:00", DAY_FIRST), Some(T0));
        assert_eq!(text("1/15/2024 10:30", MONTH_FIRST), Some(T0));
    }

    #[test]
    fn dayfirst_decides_ambiguous_day_and_month() {
        let feb_1 = text("2024-02-01", MONTH_FIRST);
        let jan_2 = text("2024-01-02", MONTH_FIRST);
        assert!(feb_1.is_some() && jan_2.is_some());
        assert_eq!(text("01/02/2024", MONTH_FIRST), jan_2);
        assert_eq!(text("01/02/2024", DAY_FIRST), feb_1);
        assert_eq!(text("01.02.2024", DAY_FIRST), feb_1);
        assert_eq!(text("01.02.2024", MONTH_FIRST), jan_2);
        // A leading four-digit year is always year-month-day.
        assert_eq!(text("2024-01-02", DAY_FIRST), jan_2);
    }

    #[test]
    fn yearfirst_reads_a_leading_two_digit_year() {
        let yf = TsOptions {
            dayfirst: false,
            yearfirst: true,
        };
        let yf_df = TsOptions {
            dayfirst: true,
            yearfirst: true,
        };
        assert_eq!(text("24/01/15", yf), text("2024-01-15", MONTH_FIRST));
        assert_eq!(text("24/02/01", yf_df), text("2024-01-02", MONTH_FIRST));
        assert_eq!(
            text("01/02/24", MONTH_FIRST),
            text("2024-01-02", MONTH_FIRST)
        );
        assert_eq!(text("01/02/24", DAY_FIRST), text("2024-02-01", MONTH_FIRST));
    }

    #[test]
    fn invalid_dates_and_times_give_none() {
        for bad in [
            "",
            "   ",
            "hello",
            "2024-13-45",
            "2024-02-30",
            "13/13/2024",
            "2024-01-15T25:00:00",
            "2024-01-15T10:60",
            "2024-01-15T10:30:00+25:00",
            "2024-01-15T10:30:00 nonsense",
            "2024-01/15",
            "2024-01-15T",
            "2024-01-15T10:30:00.",
            "1:2:3",
            "2024-01-15 10",
            "9999999999-01-01",
        ] {
            assert_eq!(text(bad, MONTH_FIRST), None, "{bad:?}");
        }
        assert_eq!(ts(json!(true)), None);
        assert_eq!(ts(json!(null)), None);
        assert_eq!(ts(json!({"ts": 1})), None);
        assert_eq!(ts(json!("NaN")), None);
    }

    #[test]
    fn rfc2822_dates_are_accepted() {
        assert_eq!(ts(json!("Mon, 15 Jan 2024 12:30:00 +0200")), Some(T0));
    }

    #[test]
    fn two_digit_years_stay_within_fifty_years_of_now() {
        let now = chrono::Utc::now().year();
        for yy in [0, 24, 49, 50, 75, 99] {
            let y = two_digit_year(yy);
            assert!((now - 50..now + 50).contains(&y), "{yy} -> {y}");
            assert_eq!(y.rem_euclid(100), i32::try_from(yy).unwrap_or(-1));
        }
    }

    #[test]
    fn arbitrary_garbage_never_panics() {
        for s in [
            "\u{0}",
            "é",
            "2024-é",
            "99:99",
            "-",
            "+",
            ".",
            "T",
            "2024-01-01T\u{fffd}",
            "0/0/0",
            "00.00.0000",
            "2024-01-01T00:00:00+",
            "2024-01-01 00:00 UTC-",
            "4294967295-1-1",
        ] {
            let _ = text(s, DAY_FIRST);
            let _ = text(s, MONTH_FIRST);
        }
    }
}
