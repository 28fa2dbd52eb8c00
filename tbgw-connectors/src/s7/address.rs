//! Upstream's three ways to address a value, parsed into one [`Address`], and the S7 data
//! types: decoding read bytes into JSON values (uplink) and encoding written values
//! (downlink). Pure functions, no I/O.
//!
//! * `tag`: `DB1.DBD204:REAL`, `DB1.DBX0.0:BOOL`, `DB1:10:INT`, `DB1.DBB100:STRING[20]`,
//!   `M10.5:BOOL`, `MW20:WORD`, `I0.0:BOOL`, `Q0.1:BOOL`, `DB1:0:REAL[5]` (python-snap7's
//!   PLC4X syntax, which upstream uses; a leading `%` is ignored).
//! * `data`: `dbNumber`, `start`, `size`, `dataType`, `bit` (the bytes of a DB).
//! * `vm` (LOGO): `V10.3` (bit), `VB10`/`V10` (byte), `VW30` (signed word), `VD30` (signed
//!   double word), all in DB1.

use serde_json::{json, Value as Json};

use super::proto::{Area, WriteItem};

/// An S7 data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// BOOL: one bit.
    Bool,
    /// BYTE, USINT: unsigned 8 bits.
    Byte,
    /// SINT: signed 8 bits.
    SInt,
    /// INT: signed 16 bits.
    Int,
    /// UINT, WORD: unsigned 16 bits.
    UInt,
    /// DINT: signed 32 bits.
    DInt,
    /// UDINT, DWORD: unsigned 32 bits.
    UDInt,
    /// LINT: signed 64 bits.
    LInt,
    /// ULINT, LWORD: unsigned 64 bits.
    ULInt,
    /// REAL: 32-bit float.
    Real,
    /// LREAL: 64-bit float.
    LReal,
    /// CHAR: one Latin-1 character.
    Char,
    /// WCHAR: one UTF-16 unit.
    WChar,
    /// `STRING[n]`: max length, length, characters (n + 2 bytes).
    String(u16),
    /// `FSTRING[n]`: n characters, padded with spaces or NULs.
    FString(u16),
    /// TIME: signed milliseconds, as seconds.
    Time,
    /// LTIME: signed nanoseconds, as seconds.
    LTime,
    /// TIME_OF_DAY: milliseconds since midnight, as `H:MM:SS[.ffffff]`.
    Tod,
    /// DATE: days since 1990-01-01, as `YYYY-MM-DD`.
    Date,
    /// Raw bytes, as a list of numbers (`data` form: `raw`, `bytes`, `bytearray`, `array`).
    Raw(u16),
}

impl DataType {
    /// Parses a type name, as in a tag (`REAL`, `STRING[20]`) or a `dataType` (`real`,
    /// `float32`, `fstring[10]`); `size` gives a string's or raw block's length when the name
    /// has none.
    pub fn parse(name: &str, size: Option<u16>) -> Option<DataType> {
        let n = name.trim().to_ascii_lowercase();
        let bracket = |prefix: &str| -> Option<Option<u16>> {
            let rest = n.strip_prefix(prefix)?;
            if rest.is_empty() {
                return Some(None);
            }
            let inner = rest
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .unwrap_or(rest);
            inner.parse().ok().map(Some)
        };
        Some(match n.as_str() {
            "bool" | "boolean" | "bit" => DataType::Bool,
            "byte" | "usint" | "uint8" => DataType::Byte,
            "sint" | "int8" => DataType::SInt,
            "int" | "int16" | "short" => DataType::Int,
            "uint" | "uint16" | "word" => DataType::UInt,
            "dint" | "int32" => DataType::DInt,
            "udint" | "uint32" | "dword" => DataType::UDInt,
            "lint" | "int64" => DataType::LInt,
            "ulint" | "uint64" | "lword" => DataType::ULInt,
            "real" | "float" | "float32" => DataType::Real,
            "lreal" | "double" | "float64" => DataType::LReal,
            "char" | "character" => DataType::Char,
            "wchar" | "widecharacter" => DataType::WChar,
            "time" | "dint_time" => DataType::Time,
            "ltime" => DataType::LTime,
            "tod" | "time_of_day" => DataType::Tod,
            "date" => DataType::Date,
            "raw" | "bytes" | "bytearray" | "array" => DataType::Raw(size.unwrap_or(1).max(1)),
            _ => {
                for (prefix, string) in [("string", true), ("str", true), ("s7string", true)] {
                    if let Some(len) = bracket(prefix) {
                        let max = len.or(size.map(|s| s.saturating_sub(2))).unwrap_or(254);
                        return string.then_some(DataType::String(max.min(254)));
                    }
                }
                for prefix in ["fstring", "char"] {
                    if let Some(Some(len)) = bracket(prefix) {
                        return Some(DataType::FString(len.max(1)));
                    }
                }
                if let Some(len) = bracket("fstring") {
                    return Some(DataType::FString(len.or(size).unwrap_or(1).max(1)));
                }
                return None;
            }
        })
    }

    /// Bytes one value takes.
    pub fn size(self) -> u16 {
        match self {
            DataType::Bool | DataType::Byte | DataType::SInt | DataType::Char => 1,
            DataType::Int | DataType::UInt | DataType::WChar | DataType::Date => 2,
            DataType::DInt | DataType::UDInt | DataType::Real | DataType::Time | DataType::Tod => 4,
            DataType::LInt | DataType::ULInt | DataType::LReal | DataType::LTime => 8,
            DataType::String(n) => n + 2,
            DataType::FString(n) | DataType::Raw(n) => n,
        }
    }

    /// Decodes one value from `b` (at least [`size`](Self::size) bytes); `bit` for BOOL.
    pub fn decode(self, b: &[u8], bit: u8) -> Result<Json, String> {
        let need = usize::from(self.size());
        let b = b
            .get(..need)
            .ok_or_else(|| format!("{} bytes read, {need} needed", b.len()))?;
        let arr = |n: usize| -> [u8; 8] {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(&b[..n]);
            a
        };
        let a = arr(need.min(8));
        Ok(match self {
            DataType::Bool => json!((b[0] >> (bit & 7)) & 1 == 1),
            DataType::Byte => json!(b[0]),
            DataType::SInt => json!(b[0] as i8),
            DataType::Int => json!(i16::from_be_bytes([a[0], a[1]])),
            DataType::UInt => json!(u16::from_be_bytes([a[0], a[1]])),
            DataType::DInt => json!(i32::from_be_bytes([a[0], a[1], a[2], a[3]])),
            DataType::UDInt => json!(u32::from_be_bytes([a[0], a[1], a[2], a[3]])),
            DataType::LInt => json!(i64::from_be_bytes(a)),
            DataType::ULInt => json!(u64::from_be_bytes(a)),
            DataType::Real => float(f64::from(f32::from_be_bytes([a[0], a[1], a[2], a[3]])))?,
            DataType::LReal => float(f64::from_be_bytes(a))?,
            DataType::Char => json!(char::from(b[0]).to_string()),
            DataType::WChar => json!(char::from_u32(u32::from(u16::from_be_bytes([a[0], a[1]])))
                .unwrap_or(char::REPLACEMENT_CHARACTER)
                .to_string()),
            DataType::String(_) => {
                let len = usize::from(b[1]).min(b.len() - 2);
                json!(b[2..2 + len]
                    .iter()
                    .map(|&c| char::from(c))
                    .collect::<String>())
            }
            DataType::FString(_) => {
                let s: String = b.iter().map(|&c| char::from(c)).collect();
                json!(s.trim_end_matches(['\0', ' ']).trim())
            }
            DataType::Time => {
                float(f64::from(i32::from_be_bytes([a[0], a[1], a[2], a[3]])) / 1000.0)?
            }
            DataType::LTime => float(i64::from_be_bytes(a) as f64 / 1e9)?,
            DataType::Tod => json!(tod(u32::from_be_bytes([a[0], a[1], a[2], a[3]]))),
            DataType::Date => {
                let days = i64::from(u16::from_be_bytes([a[0], a[1]]));
                let (y, m, d) = civil_from_days(days + DAYS_1970_TO_1990);
                json!(format!("{y:04}-{m:02}-{d:02}"))
            }
            DataType::Raw(_) => json!(b),
        })
    }

    /// Encodes `v` as this type's bytes (a BOOL as one byte 0/1; see [`Address::write_item`]).
    pub fn encode(self, v: &Json) -> Result<Vec<u8>, String> {
        let int = || -> Result<i128, String> {
            match v {
                Json::Number(n) => n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i128))
                    .ok_or_else(|| format!("{v} is not an integer")),
                Json::String(s) => s
                    .trim()
                    .parse::<i128>()
                    .map_err(|_| format!("{s:?} is not an integer")),
                Json::Bool(b) => Ok(i128::from(*b)),
                _ => Err(format!("{v} is not an integer")),
            }
        };
        let ranged = |lo: i128, hi: i128| -> Result<i128, String> {
            let i = int()?;
            if (lo..=hi).contains(&i) {
                Ok(i)
            } else {
                Err(format!("{i} is out of range for {self:?} ({lo}..={hi})"))
            }
        };
        let flt = || -> Result<f64, String> {
            match v {
                Json::Number(n) => n.as_f64().ok_or_else(|| format!("{v} is not a number")),
                Json::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{s:?} is not a number")),
                _ => Err(format!("{v} is not a number")),
            }
        };
        let text = || match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        Ok(match self {
            DataType::Bool => vec![u8::from(to_bool(v)?)],
            DataType::Byte => vec![ranged(0, 255)? as u8],
            DataType::SInt => vec![ranged(-128, 127)? as i8 as u8],
            DataType::Int => (ranged(i16::MIN.into(), i16::MAX.into())? as i16)
                .to_be_bytes()
                .to_vec(),
            DataType::UInt => (ranged(0, u16::MAX.into())? as u16).to_be_bytes().to_vec(),
            DataType::DInt => (ranged(i32::MIN.into(), i32::MAX.into())? as i32)
                .to_be_bytes()
                .to_vec(),
            DataType::UDInt => (ranged(0, u32::MAX.into())? as u32).to_be_bytes().to_vec(),
            DataType::LInt => (ranged(i64::MIN.into(), i64::MAX.into())? as i64)
                .to_be_bytes()
                .to_vec(),
            DataType::ULInt => (ranged(0, u64::MAX.into())? as u64).to_be_bytes().to_vec(),
            DataType::Real => (flt()? as f32).to_be_bytes().to_vec(),
            DataType::LReal => flt()?.to_be_bytes().to_vec(),
            DataType::Char => {
                let c = text().chars().next().ok_or("empty CHAR")?;
                vec![u8::try_from(u32::from(c)).map_err(|_| format!("{c:?} is not Latin-1"))?]
            }
            DataType::WChar => {
                let c = text().chars().next().ok_or("empty WCHAR")?;
                u16::try_from(u32::from(c))
                    .map_err(|_| format!("{c:?} does not fit a WCHAR"))?
                    .to_be_bytes()
                    .to_vec()
            }
            DataType::String(max) => {
                let s = latin1(&text())?;
                if s.len() > usize::from(max) {
                    return Err(format!("{} characters, the STRING holds {max}", s.len()));
                }
                let mut out = vec![max as u8, s.len() as u8];
                out.extend_from_slice(&s);
                out.resize(usize::from(max) + 2, 0);
                out
            }
            DataType::FString(n) => {
                let mut s = latin1(&text())?;
                s.truncate(usize::from(n));
                s.resize(usize::from(n), b' ');
                s
            }
            DataType::Time => {
                let ms = (flt()? * 1000.0).round();
                if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&ms) {
                    return Err(format!("{v} is out of range for TIME"));
                }
                (ms as i32).to_be_bytes().to_vec()
            }
            DataType::LTime => ((flt()? * 1e9).round() as i64).to_be_bytes().to_vec(),
            DataType::Tod => {
                let ms = match v {
                    Json::String(s) if s.contains(':') => {
                        parse_tod(s).ok_or_else(|| format!("{s:?} is not HH:MM:SS[.fff]"))?
                    }
                    _ => ranged(0, 86_399_999)? as u32,
                };
                ms.to_be_bytes().to_vec()
            }
            DataType::Date => {
                let days = match v {
                    Json::String(s) if s.contains('-') => {
                        let days =
                            parse_date(s).ok_or_else(|| format!("{s:?} is not YYYY-MM-DD"))?;
                        i128::from(days - DAYS_1970_TO_1990)
                    }
                    _ => int()?,
                };
                u16::try_from(days)
                    .map_err(|_| format!("{v} is out of range for DATE"))?
                    .to_be_bytes()
                    .to_vec()
            }
            DataType::Raw(n) => {
                let Json::Array(items) = v else {
                    return Err(format!("{v} is not a list of bytes"));
                };
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    let b = i
                        .as_u64()
                        .and_then(|b| u8::try_from(b).ok())
                        .ok_or_else(|| format!("{i} is not a byte"))?;
                    out.push(b);
                }
                if out.len() > usize::from(n) {
                    return Err(format!("{} bytes, the area holds {n}", out.len()));
                }
                out
            }
        })
    }
}

fn float(f: f64) -> Result<Json, String> {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .ok_or_else(|| format!("{f} is not a finite number"))
}

fn latin1(s: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| format!("{c:?} is not Latin-1")))
        .collect()
}

/// Days from 1970-01-01 to 1990-01-01.
const DAYS_1970_TO_1990: i64 = 7305;

/// (year, month, day) of a day number counted from 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day number from 1970-01-01 of a date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` as a day number from 1970-01-01 (checked: the date must exist).
fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// `H:MM:SS[.fff]` as milliseconds since midnight.
fn parse_tod(s: &str) -> Option<u32> {
    let mut it = s.trim().splitn(3, ':');
    let h: u32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let third = it.next()?;
    let (sec, frac) = third.split_once('.').unwrap_or((third, ""));
    let sec: u32 = sec.parse().ok()?;
    let ms: u32 = if frac.is_empty() {
        0
    } else {
        let f: String = frac.chars().chain("000".chars()).take(3).collect();
        f.parse().ok()?
    };
    (h < 24 && m < 60 && sec < 60).then_some(((h * 60 + m) * 60 + sec) * 1000 + ms)
}

fn tod(ms: u32) -> String {
    let (h, m, s, f) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if f == 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{h}:{m:02}:{s:02}.{:06}", f * 1000)
    }
}

/// Upstream's `str_to_bool`: `true`/`false`, 1/0, `"true"`, `"1"`, `"on"`, `"yes"`, `"y"`,
/// `"t"` (and their opposites), in any case.
pub fn to_bool(v: &Json) -> Result<bool, String> {
    match v {
        Json::Bool(b) => Ok(*b),
        Json::Number(n) => match n.as_u64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(format!("{n} is not a boolean (0 or 1)")),
        },
        Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "on" | "yes" | "y" | "t" => Ok(true),
            "false" | "0" | "off" | "no" | "n" | "f" => Ok(false),
            _ => Err(format!("{s:?} is not a boolean")),
        },
        other => Err(format!("{other} is not a boolean")),
    }
}

/// Where a value lives and how it is typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Area.
    pub area: Area,
    /// DB number (0 outside DBs).
    pub db: u16,
    /// First byte.
    pub start: u32,
    /// Bit, for BOOL.
    pub bit: u8,
    /// Type of one element.
    pub ty: DataType,
    /// Elements (an array `REAL[5]` has 5; the value is then a list).
    pub count: u16,
    /// Bytes read (at least `ty.size() * count`; the `data` form's `size` may be larger).
    pub len: u16,
}

impl Address {
    fn new(area: Area, db: u16, start: u32, bit: u8, ty: DataType, count: u16) -> Address {
        let len = ty.size().saturating_mul(count.max(1));
        Address {
            area,
            db,
            start,
            bit,
            ty,
            count: count.max(1),
            len,
        }
    }

    /// Parses a `tag`.
    pub fn from_tag(tag: &str) -> Result<Address, String> {
        let s = tag.trim().to_ascii_uppercase();
        let s = s.strip_prefix('%').unwrap_or(&s);
        let parts: Vec<&str> = s.split(':').collect();
        let num = |t: &str, what: &str| -> Result<u32, String> {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{what} {t:?} is not a number"))
        };
        let offset = |t: &str| -> Result<(u32, u8), String> {
            match t.split_once('.') {
                Some((b, bit)) => {
                    let bit = num(bit, "bit")?;
                    if bit > 7 {
                        return Err(format!("bit {bit} is not 0..7"));
                    }
                    Ok((num(b, "byte")?, bit as u8))
                }
                None => Ok((num(t, "byte")?, 0)),
            }
        };
        let db_no = |t: &str| -> Result<u16, String> {
            t.strip_prefix("DB")
                .and_then(|n| n.trim().parse::<u16>().ok())
                .ok_or_else(|| format!("{t:?} is not a data block (DB<n>)"))
        };
        let (area, db, (start, bit), ty) = match parts.as_slice() {
            [db, off, ty] if db.starts_with("DB") => (Area::Db, db_no(db)?, offset(off)?, *ty),
            [addr, ty] => {
                if let Some((db, rest)) = addr.split_once('.').filter(|(d, _)| d.starts_with("DB"))
                {
                    let off = if let Some(x) = rest.strip_prefix("DBX") {
                        offset(x)?
                    } else if let Some(x) = ["DBB", "DBW", "DBD"]
                        .iter()
                        .find_map(|p| rest.strip_prefix(p))
                    {
                        (num(x, "byte")?, 0)
                    } else {
                        return Err(format!("{rest:?} is not DBX, DBB, DBW or DBD"));
                    };
                    (Area::Db, db_no(db)?, off, *ty)
                } else {
                    let (area, rest) = match addr.chars().next() {
                        Some('M') => (Area::Markers, &addr[1..]),
                        Some('I' | 'E') => (Area::Inputs, &addr[1..]),
                        Some('Q' | 'A') => (Area::Outputs, &addr[1..]),
                        _ => return Err(format!("unknown area in {addr:?} (DB, M, I or Q)")),
                    };
                    let off = match rest.strip_prefix(['B', 'W', 'D']) {
                        Some(x) => (num(x, "byte")?, 0),
                        None => offset(rest)?,
                    };
                    (area, 0, off, *ty)
                }
            }
            _ => return Err("expected ADDRESS:TYPE, e.g. DB1.DBD204:REAL".into()),
        };
        let (ty, count) = match ty.split_once('[') {
            Some((base, n)) if !base.contains("STRING") => {
                let n = n
                    .strip_suffix(']')
                    .and_then(|n| n.parse::<u16>().ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("{ty:?}: bad array length"))?;
                (base, n)
            }
            _ => (ty, 1),
        };
        let dt = DataType::parse(ty, None).ok_or_else(|| format!("unknown type {ty:?}"))?;
        if matches!(dt, DataType::Raw(_)) {
            return Err(format!("unknown type {ty:?}"));
        }
        Ok(Address::new(area, db, start, bit, dt, count))
    }

    /// Parses the `data` form.
    pub fn from_data(
        db: u16,
        start: u32,
        size: Option<u16>,
        data_type: Option<&str>,
        bit: Option<u8>,
    ) -> Result<Address, String> {
        let name = data_type.unwrap_or("raw");
        let ty = DataType::parse(name, size).ok_or_else(|| format!("unknown dataType {name:?}"))?;
        if bit.is_some_and(|b| b > 7) {
            return Err("bit must be 0..7".into());
        }
        let mut a = Address::new(Area::Db, db, start, bit.unwrap_or(0), ty, 1);
        a.len = a.len.max(size.unwrap_or(0));
        Ok(a)
    }

    /// Parses a LOGO `vmAddress` (DB1).
    pub fn from_vm(vm: &str) -> Result<Address, String> {
        let s = vm.trim().to_ascii_uppercase();
        let rest = s
            .strip_prefix('V')
            .ok_or_else(|| format!("{vm:?} is not a VM address (V, VB, VW, VD)"))?;
        let num = |t: &str| {
            t.parse::<u32>()
                .map_err(|_| format!("{vm:?}: {t:?} is not a number"))
        };
        let (start, bit, ty) = match rest.chars().next() {
            Some('B') => (num(&rest[1..])?, 0, DataType::Byte),
            Some('W') => (num(&rest[1..])?, 0, DataType::Int),
            Some('D') => (num(&rest[1..])?, 0, DataType::DInt),
            _ => match rest.split_once('.') {
                Some((b, bit)) => {
                    let bit = num(bit)?;
                    if bit > 7 {
                        return Err(format!("{vm:?}: bit {bit} is not 0..7"));
                    }
                    (num(b)?, bit as u8, DataType::Bool)
                }
                None => (num(rest)?, 0, DataType::Byte),
            },
        };
        Ok(Address::new(Area::Db, 1, start, bit, ty, 1))
    }

    /// Decodes the value from the bytes read at `start`; an array is a list.
    pub fn decode(&self, b: &[u8]) -> Result<Json, String> {
        if self.count == 1 {
            return self.ty.decode(b, self.bit);
        }
        let size = usize::from(self.ty.size());
        (0..usize::from(self.count))
            .map(|i| self.ty.decode(b.get(i * size..).unwrap_or(&[]), self.bit))
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array)
    }

    /// The write request for `v`: a BOOL writes its bit alone; an array takes a list.
    pub fn write_item(&self, v: &Json) -> Result<WriteItem, String> {
        if self.ty == DataType::Bool && self.count == 1 {
            return Ok(WriteItem::Bit {
                area: self.area,
                db: self.db,
                byte: self.start,
                bit: self.bit,
                value: to_bool(v)?,
            });
        }
        let data = if self.count > 1 {
            let Json::Array(items) = v else {
                return Err(format!("{v} is not a list of {} values", self.count));
            };
            if items.len() != usize::from(self.count) {
                return Err(format!(
                    "{} values, the array has {}",
                    items.len(),
                    self.count
                ));
            }
            let mut out = Vec::new();
            for i in items {
                out.extend(self.ty.encode(i)?);
            }
            out
        } else {
            self.ty.encode(v)?
        };
        Ok(WriteItem::Bytes {
            area: self.area,
            db: self.db,
            start: self.start,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let a = Address::from_tag("DB1.DBD204:REAL").unwrap();
        assert_eq!(
            (a.area, a.db, a.start, a.ty, a.len),
            (Area::Db, 1, 204, DataType::Real, 4)
        );
        let a = Address::from_tag("DB1.DBX0.3:BOOL").unwrap();
        assert_eq!((a.start, a.bit, a.ty), (0, 3, DataType::Bool));
        let a = Address::from_tag("db2:10:int").unwrap();
        assert_eq!((a.db, a.start, a.ty), (2, 10, DataType::Int));
        let a = Address::from_tag("DB1.DBB100:STRING[20]").unwrap();
        assert_eq!((a.ty, a.len), (DataType::String(20), 22));
        let a = Address::from_tag("%MW20:WORD").unwrap();
        assert_eq!((a.area, a.start, a.ty), (Area::Markers, 20, DataType::UInt));
        let a = Address::from_tag("M10.5:BOOL").unwrap();
        assert_eq!((a.area, a.start, a.bit), (Area::Markers, 10, 5));
        let a = Address::from_tag("Q0.1:BOOL").unwrap();
        assert_eq!(a.area, Area::Outputs);
        let a = Address::from_tag("I3:BYTE").unwrap();
        assert_eq!((a.area, a.start), (Area::Inputs, 3));
        let a = Address::from_tag("DB1:0:REAL[5]").unwrap();
        assert_eq!((a.count, a.len), (5, 20));
        for bad in [
            "DB1.DBD204",
            "DB1.DBQ2:INT",
            "Z1:INT",
            "DB1.DBX0.9:BOOL",
            "DB1.DBD0:FOO",
            "DBx.DBD0:REAL",
            "DB1:0:REAL[0]",
            "",
        ] {
            assert!(Address::from_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vm_and_data() {
        let a = Address::from_vm("VW30").unwrap();
        assert_eq!((a.db, a.start, a.ty), (1, 30, DataType::Int));
        let a = Address::from_vm("V10.3").unwrap();
        assert_eq!((a.start, a.bit, a.ty), (10, 3, DataType::Bool));
        assert_eq!(Address::from_vm("VD4").unwrap().ty, DataType::DInt);
        assert_eq!(Address::from_vm("VB4").unwrap().ty, DataType::Byte);
        assert_eq!(Address::from_vm("V4").unwrap().ty, DataType::Byte);
        assert!(Address::from_vm("MW4").is_err());
        assert!(Address::from_vm("VWx").is_err());
        let a = Address::from_data(1, 54, Some(8), Some("lreal"), None).unwrap();
        assert_eq!((a.ty, a.len), (DataType::LReal, 8));
        let a = Address::from_data(1, 0, Some(16), Some("real"), None).unwrap();
        assert_eq!(a.len, 16);
        let a = Address::from_data(1, 100, Some(22), Some("string"), None).unwrap();
        assert_eq!(a.ty, DataType::String(20));
        assert_eq!(
            Address::from_data(1, 0, Some(3), None, None).unwrap().ty,
            DataType::Raw(3)
        );
        assert!(Address::from_data(1, 0, Some(1), Some("nope"), None).is_err());
        assert!(Address::from_data(1, 0, Some(1), Some("bool"), Some(8)).is_err());
    }

    #[test]
    fn decode_every_type() {
        let d = |t: DataType, b: &[u8]| t.decode(b, 0).unwrap();
        assert_eq!(DataType::Bool.decode(&[0b100], 2).unwrap(), json!(true));
        assert_eq!(DataType::Bool.decode(&[0b100], 1).unwrap(), json!(false));
        assert_eq!(d(DataType::Byte, &[200]), json!(200));
        assert_eq!(d(DataType::SInt, &[0xff]), json!(-1));
        assert_eq!(d(DataType::Int, &[0xfb, 0x2e]), json!(-1234));
        assert_eq!(d(DataType::UInt, &[0xfd, 0xe8]), json!(65000));
        assert_eq!(
            d(DataType::DInt, &123456789i32.to_be_bytes()),
            json!(123456789)
        );
        assert_eq!(d(DataType::UDInt, &[0xff; 4]), json!(u32::MAX));
        assert_eq!(d(DataType::LInt, &(-5i64).to_be_bytes()), json!(-5));
        assert_eq!(d(DataType::ULInt, &[0xff; 8]), json!(u64::MAX));
        assert_eq!(d(DataType::Real, &21.5f32.to_be_bytes()), json!(21.5));
        assert_eq!(d(DataType::LReal, &55.25f64.to_be_bytes()), json!(55.25));
        assert_eq!(d(DataType::Char, b"A"), json!("A"));
        assert_eq!(d(DataType::WChar, &[0x20, 0xac]), json!("€"));
        assert_eq!(d(DataType::String(5), b"\x05\x05hello"), json!("hello"));
        assert_eq!(d(DataType::String(3), b"\x03\x09abc"), json!("abc"));
        assert_eq!(d(DataType::FString(6), b"ab  \0\0"), json!("ab"));
        assert_eq!(d(DataType::Time, &(-1500i32).to_be_bytes()), json!(-1.5));
        assert_eq!(
            d(DataType::LTime, &2_500_000_000i64.to_be_bytes()),
            json!(2.5)
        );
        assert_eq!(
            d(DataType::Tod, &3_723_004u32.to_be_bytes()),
            json!("1:02:03.004000")
        );
        assert_eq!(
            d(DataType::Tod, &3_600_000u32.to_be_bytes()),
            json!("1:00:00")
        );
        assert_eq!(d(DataType::Date, &[0, 1]), json!("1990-01-02"));
        assert_eq!(d(DataType::Raw(2), &[1, 2]), json!([1, 2]));
        assert!(DataType::Real.decode(&[1, 2], 0).is_err());
        assert!(
            DataType::Real.decode(&[0x7f, 0xc0, 0, 0], 0).is_err(),
            "NaN"
        );
        let a = Address::from_tag("DB1:0:INT[2]").unwrap();
        assert_eq!(a.decode(&[0, 1, 0, 2]).unwrap(), json!([1, 2]));
        assert!(a.decode(&[0, 1, 0]).is_err());
    }

    #[test]
    fn encode_round_trips_and_ranges() {
        for (t, v) in [
            (DataType::Byte, json!(200)),
            (DataType::SInt, json!(-3)),
            (DataType::Int, json!(-1234)),
            (DataType::UInt, json!(65000)),
            (DataType::DInt, json!(-7)),
            (DataType::UDInt, json!(4_000_000_000u32)),
            (DataType::LInt, json!(-9)),
            (DataType::ULInt, json!(u64::MAX)),
            (DataType::Real, json!(1.5)),
            (DataType::LReal, json!(2.25)),
            (DataType::Char, json!("x")),
            (DataType::WChar, json!("€")),
            (DataType::String(10), json!("hi")),
            (DataType::FString(4), json!("ab")),
            (DataType::Time, json!(1.5)),
            (DataType::LTime, json!(2.5)),
            (DataType::Tod, json!("1:02:03.004000")),
            (DataType::Date, json!("2024-02-29")),
            (DataType::Raw(3), json!([1, 2, 3])),
        ] {
            let b = t.encode(&v).unwrap();
            assert_eq!(b.len(), usize::from(t.size()), "{t:?}");
            assert_eq!(t.decode(&b, 0).unwrap(), v, "{t:?}");
        }
        assert_eq!(DataType::Int.encode(&json!("12")).unwrap(), vec![0, 12]);
        assert_eq!(
            DataType::Real.encode(&json!("1.5")).unwrap(),
            1.5f32.to_be_bytes()
        );
        assert!(DataType::Byte.encode(&json!(256)).is_err());
        assert!(DataType::Int.encode(&json!(1.5)).is_err());
        assert!(DataType::Int.encode(&json!("x")).is_err());
        assert!(DataType::String(2).encode(&json!("abc")).is_err());
        assert!(DataType::Raw(2).encode(&json!([1, 2, 3])).is_err());
        assert!(DataType::Raw(2).encode(&json!([300])).is_err());
        assert!(DataType::Char.encode(&json!("€")).is_err());
    }

    #[test]
    fn bool_writes_a_bit_and_arrays_take_lists() {
        let a = Address::from_tag("DB1.DBX0.3:BOOL").unwrap();
        assert_eq!(
            a.write_item(&json!("true")).unwrap(),
            WriteItem::Bit {
                area: Area::Db,
                db: 1,
                byte: 0,
                bit: 3,
                value: true
            }
        );
        assert!(a.write_item(&json!("maybe")).is_err());
        let a = Address::from_tag("DB1:2:INT[2]").unwrap();
        assert_eq!(
            a.write_item(&json!([1, -1])).unwrap(),
            WriteItem::Bytes {
                area: Area::Db,
                db: 1,
                start: 2,
                data: vec![0, 1, 0xff, 0xff]
            }
        );
        assert!(a.write_item(&json!([1])).is_err());
        assert!(a.write_item(&json!(1)).is_err());
    }
}
