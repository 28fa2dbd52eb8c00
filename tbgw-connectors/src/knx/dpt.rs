//! Datapoint types: upstream's type names (xknx's `value_type`s such as `temperature`,
//! `humidity`, `percentU8`, `switch`, `string`) and DPT numbers mapped to a codec, and the
//! codecs between group telegram payloads and JSON values. Values decode as xknx decodes
//! them (integers stay integers, 9.x is `(M << E) / 100`, 5.001 rounds half to even), so
//! upstream and tbgw send ThingsBoard the same numbers.

use serde_json::Value as Json;

use super::frame::Payload;

/// A datapoint type the connector can decode and encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dpt {
    /// Main number (1, 5, 9, ...); 0 means raw (no type configured).
    pub main: u16,
    /// Sub number, when known.
    pub sub: Option<u16>,
}

impl std::fmt::Display for Dpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.main, self.sub) {
            (0, _) => write!(f, "raw"),
            (m, Some(s)) => write!(f, "{m}.{s:03}"),
            (m, None) => write!(f, "{m}.xxx"),
        }
    }
}

/// The main types with a codec here.
const SUPPORTED: &[u16] = &[1, 4, 5, 6, 7, 8, 9, 12, 13, 14, 16, 17, 29];

include!("dpt_names.rs");

impl Dpt {
    /// The raw type: 6-bit payloads as an integer, others as a list of octets.
    pub const RAW: Dpt = Dpt { main: 0, sub: None };

    /// Parses a type: an xknx name (`temperature`, `percentU8`, upstream's misspelt
    /// `precent_U8`), or a number `9`, `9.001`, `DPT9.001`, `DPT-9.001`, `DPST-9-1`.
    pub fn parse(s: &str) -> Result<Dpt, String> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("raw") {
            return Ok(Dpt::RAW);
        }
        // Upstream's sample spells percentU8 `precent_U8`.
        let alias = match t {
            "precent_U8" | "percent_U8" => "percentU8",
            "binary" | "boolean" => "bool",
            other => other,
        };
        if let Some((_, m, sub)) = NAMES.iter().find(|(n, _, _)| *n == alias) {
            return Ok(Dpt {
                main: *m,
                sub: *sub,
            });
        }
        let lower = t.to_ascii_lowercase();
        let num = lower
            .strip_prefix("dpst-")
            .map(|r| r.replacen('-', ".", 1))
            .or_else(|| {
                lower
                    .strip_prefix("dpt-")
                    .or_else(|| lower.strip_prefix("dpt"))
                    .map(|r| r.trim_start_matches(['-', ' ']).to_string())
            })
            .unwrap_or(lower.clone());
        let bad = || {
            format!(
                "unknown datapoint type {s:?}: expected an xknx type name (temperature, humidity, \
                 percentU8, switch, string, ...) or a DPT number like 9.001"
            )
        };
        let (m, sub) = match num.split_once('.') {
            Some((m, sub)) => (
                m.trim().parse::<u16>().map_err(|_| bad())?,
                Some(sub.trim().parse::<u16>().map_err(|_| bad())?),
            ),
            None => (num.trim().parse::<u16>().map_err(|_| bad())?, None),
        };
        if !SUPPORTED.contains(&m) {
            return Err(format!(
                "datapoint type {s:?} (DPT {m}) is not supported; supported main types: \
                 1, 4, 5, 6, 7, 8, 9, 12, 13, 14, 16, 17, 29"
            ));
        }
        Ok(Dpt { main: m, sub })
    }

    fn bytes(self) -> Option<usize> {
        Some(match self.main {
            1 => return None,
            4..=6 | 17 => 1,
            7..=9 => 2,
            12..=14 => 4,
            16 => 14,
            29 => 8,
            _ => return None,
        })
    }

    /// Decodes a telegram payload.
    pub fn decode(self, p: &Payload) -> Result<Json, String> {
        if self.main == 0 {
            return Ok(match p {
                Payload::Small(v) => Json::from(*v),
                Payload::Bytes(b) => Json::from(b.clone()),
            });
        }
        if self.main == 1 {
            return match p {
                Payload::Small(v) => Ok(Json::Bool(v & 1 == 1)),
                Payload::Bytes(b) => Err(format!(
                    "DPT {self} is one bit, the telegram has {} octets",
                    b.len()
                )),
            };
        }
        let n = self.bytes().unwrap_or(0);
        let b = match p {
            Payload::Bytes(b) if b.len() == n => b.as_slice(),
            Payload::Bytes(b) => {
                return Err(format!(
                    "DPT {self} has {n} octets, the telegram has {}",
                    b.len()
                ))
            }
            Payload::Small(_) => {
                return Err(format!(
                    "DPT {self} has {n} octets, the telegram has a 6-bit value"
                ))
            }
        };
        Ok(match self.main {
            4 => Json::from(latin1(&b[..1])),
            5 => {
                let raw = f64::from(b[0]);
                match self.sub {
                    Some(1) => Json::from((raw / 255.0 * 100.0).round_ties_even() as i64),
                    Some(3) => Json::from((raw / 255.0 * 360.0).round_ties_even() as i64),
                    _ => Json::from(b[0]),
                }
            }
            6 => Json::from(b[0] as i8),
            17 => Json::from(b[0] & 0x3F),
            7 => Json::from(u16::from_be_bytes([b[0], b[1]])),
            8 => Json::from(i16::from_be_bytes([b[0], b[1]])),
            9 => {
                let raw = u16::from_be_bytes([b[0], b[1]]);
                if raw == 0x7FFF {
                    return Err(format!("DPT {self}: 0x7FFF means invalid data"));
                }
                let exp = (raw >> 11) & 0x0F;
                let mut m = i64::from(raw & 0x7FF);
                if raw & 0x8000 != 0 {
                    m -= 2048;
                }
                Json::from((m << exp) as f64 / 100.0)
            }
            12 => Json::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            13 => Json::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            14 => {
                let f = f32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if !f.is_finite() {
                    return Err(format!("DPT {self}: {f} is not a number"));
                }
                Json::from(f64::from(f))
            }
            16 => {
                let chars: Vec<u8> = b.iter().copied().filter(|&c| c != 0).collect();
                if self.sub == Some(1) {
                    Json::from(latin1(&chars))
                } else {
                    Json::from(
                        chars
                            .iter()
                            .map(|&c| if c < 0x80 { c as char } else { '\u{FFFD}' })
                            .collect::<String>(),
                    )
                }
            }
            29 => Json::from(i64::from_be_bytes([
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
            ])),
            _ => return Err(format!("DPT {self} is not supported")),
        })
    }

    /// Encodes a JSON value (numbers also as text, booleans also as `"on"`/`"true"`/`1`).
    pub fn encode(self, v: &Json) -> Result<Payload, String> {
        let num = || -> Result<f64, String> {
            match v {
                Json::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
                Json::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
                Json::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{s:?} is not a number")),
                other => Err(format!("{other} is not a number")),
            }
        };
        let int = |min: f64, max: f64| -> Result<i64, String> {
            let f = num()?;
            if !f.is_finite() || f < min || f > max {
                return Err(format!(
                    "{f} is out of range {min} ..= {max} for DPT {self}"
                ));
            }
            Ok(f as i64)
        };
        Ok(match self.main {
            0 => match v {
                Json::Number(_) | Json::Bool(_) | Json::String(_) => {
                    Payload::Small(int(0.0, 63.0)? as u8)
                }
                Json::Array(a) => Payload::Bytes(
                    a.iter()
                        .map(|x| {
                            x.as_u64()
                                .and_then(|x| u8::try_from(x).ok())
                                .ok_or_else(|| format!("{x} is not an octet"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => return Err(format!("{other} cannot be sent raw")),
            },
            1 => {
                let on = match v {
                    Json::Bool(b) => *b,
                    Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        _ => return Err(format!("{s:?} is not a boolean")),
                    },
                    _ => {
                        let x = num()?;
                        if x == 0.0 {
                            false
                        } else if x == 1.0 {
                            true
                        } else {
                            return Err(format!("{x} is not a boolean"));
                        }
                    }
                };
                Payload::Small(u8::from(on))
            }
            4 => {
                let s = text(v);
                let c = s.chars().next().map_or(0, |c| c as u32);
                if c > 0xFF {
                    return Err(format!("{s:?} is not a Latin-1 character"));
                }
                Payload::Bytes(vec![c as u8])
            }
            5 => {
                let raw = match self.sub {
                    Some(1) => {
                        let f = num()?;
                        if !(0.0..=100.0).contains(&f) {
                            return Err(format!("{f} is out of range 0 ..= 100 for DPT {self}"));
                        }
                        (f / 100.0 * 255.0).round_ties_even() as u8
                    }
                    Some(3) => {
                        let f = num()?;
                        if !(0.0..=360.0).contains(&f) {
                            return Err(format!("{f} is out of range 0 ..= 360 for DPT {self}"));
                        }
                        (f / 360.0 * 255.0).round_ties_even() as u8
                    }
                    _ => int(0.0, 255.0)? as u8,
                };
                Payload::Bytes(vec![raw])
            }
            6 => Payload::Bytes(vec![int(-128.0, 127.0)? as i8 as u8]),
            17 => Payload::Bytes(vec![int(0.0, 63.0)? as u8]),
            7 => Payload::Bytes((int(0.0, 65535.0)? as u16).to_be_bytes().to_vec()),
            8 => Payload::Bytes((int(-32768.0, 32767.0)? as i16).to_be_bytes().to_vec()),
            9 => Payload::Bytes(float16(num()?)?.to_vec()),
            12 => Payload::Bytes((int(0.0, 4_294_967_295.0)? as u32).to_be_bytes().to_vec()),
            13 => Payload::Bytes(
                (int(-2_147_483_648.0, 2_147_483_647.0)? as i32)
                    .to_be_bytes()
                    .to_vec(),
            ),
            14 => {
                let f = num()?;
                if !f.is_finite() {
                    return Err(format!("{f} is not a finite number"));
                }
                Payload::Bytes((f as f32).to_be_bytes().to_vec())
            }
            16 => {
                let s = text(v);
                let mut out = Vec::with_capacity(14);
                for c in s.chars() {
                    let c = c as u32;
                    let ok = if self.sub == Some(1) {
                        c <= 0xFF
                    } else {
                        c < 0x80
                    };
                    out.push(if ok { c as u8 } else { b'?' });
                }
                if out.len() > 14 {
                    return Err(format!("{s:?} is longer than 14 characters"));
                }
                out.resize(14, 0);
                Payload::Bytes(out)
            }
            29 => {
                let i = match v {
                    Json::Number(n) if n.is_i64() => n.as_i64().unwrap_or_default(),
                    Json::String(s) if s.trim().parse::<i64>().is_ok() => {
                        s.trim().parse::<i64>().unwrap_or_default()
                    }
                    _ => int(i64::MIN as f64, i64::MAX as f64)?,
                };
                Payload::Bytes(i.to_be_bytes().to_vec())
            }
            _ => return Err(format!("DPT {self} is not supported")),
        })
    }
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The KNX 2-octet float (DPT 9) as xknx encodes it.
fn float16(value: f64) -> Result<[u8; 2], String> {
    if !value.is_finite() || !(-671_088.64..=670_433.28).contains(&value) {
        return Err(format!(
            "{value} is out of range -671088.64 ..= 670433.28 for DPT 9"
        ));
    }
    let mut v = value * 100.0;
    if v.round() == 0.0 {
        return Ok([0, 0]);
    }
    let mut exp: u8 = 0;
    while !(-2048.0..=2047.0).contains(&v) {
        exp += 1;
        v /= 2.0;
    }
    let mant = (v.round_ties_even() as i64 & 0x7FF) as u16;
    let mut msb = (u16::from(exp) << 3) as u8 | (mant >> 8) as u8;
    if v < 0.0 {
        msb |= 0x80;
    }
    Ok([msb, (mant & 0xFF) as u8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(name: &str, v: Json) -> Json {
        let d = Dpt::parse(name).unwrap();
        d.decode(&d.encode(&v).unwrap()).unwrap()
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            Dpt::parse("temperature").unwrap(),
            Dpt {
                main: 9,
                sub: Some(1)
            }
        );
        assert_eq!(
            Dpt::parse("humidity").unwrap(),
            Dpt {
                main: 9,
                sub: Some(7)
            }
        );
        assert_eq!(
            Dpt::parse("percentU8").unwrap(),
            Dpt {
                main: 5,
                sub: Some(4)
            }
        );
        assert_eq!(
            Dpt::parse("precent_U8").unwrap(),
            Dpt {
                main: 5,
                sub: Some(4)
            }
        );
        assert_eq!(
            Dpt::parse("switch").unwrap(),
            Dpt {
                main: 1,
                sub: Some(1)
            }
        );
        assert_eq!(
            Dpt::parse("string").unwrap(),
            Dpt {
                main: 16,
                sub: Some(0)
            }
        );
        assert_eq!(
            Dpt::parse("9.001").unwrap(),
            Dpt {
                main: 9,
                sub: Some(1)
            }
        );
        assert_eq!(
            Dpt::parse("DPT-14.056").unwrap(),
            Dpt {
                main: 14,
                sub: Some(56)
            }
        );
        assert_eq!(
            Dpt::parse("DPST-5-1").unwrap(),
            Dpt {
                main: 5,
                sub: Some(1)
            }
        );
        assert_eq!(
            Dpt::parse("12").unwrap(),
            Dpt {
                main: 12,
                sub: None
            }
        );
        assert_eq!(Dpt::parse("").unwrap(), Dpt::RAW);
        assert!(Dpt::parse("time").is_err());
        assert!(Dpt::parse("10.001").unwrap_err().contains("not supported"));
        assert!(Dpt::parse("wibble").is_err());
    }

    #[test]
    fn codecs() {
        assert_eq!(rt("switch", json!(true)), json!(true));
        assert_eq!(rt("switch", json!("off")), json!(false));
        assert_eq!(rt("percent", json!(50)), json!(50));
        assert_eq!(rt("percentU8", json!(200)), json!(200));
        assert_eq!(rt("1byte_signed", json!(-5)), json!(-5));
        assert_eq!(rt("pulse_2byte", json!(65535)), json!(65535));
        assert_eq!(rt("2byte_signed", json!(-300)), json!(-300));
        assert_eq!(rt("temperature", json!(21.5)), json!(21.5));
        assert_eq!(rt("temperature", json!(-30.0)), json!(-30.0));
        assert_eq!(rt("humidity", json!("55.2")), json!(55.2));
        assert_eq!(
            rt("4byte_unsigned", json!(4_000_000_000u64)),
            json!(4_000_000_000u64)
        );
        assert_eq!(rt("active_energy", json!(-123456)), json!(-123456));
        assert_eq!(rt("power", json!(1500.5)), json!(1500.5));
        assert_eq!(rt("string", json!("Kitchen")), json!("Kitchen"));
        assert_eq!(rt("latin_1", json!("Küche")), json!("Küche"));
        assert_eq!(
            rt("8byte_signed", json!(-9_000_000_000i64)),
            json!(-9_000_000_000i64)
        );
        assert_eq!(rt("scene_number", json!(12)), json!(12));
        // Bytes as xknx gives them.
        let t = Dpt::parse("temperature").unwrap();
        assert_eq!(
            t.encode(&json!(21.5)).unwrap(),
            Payload::Bytes(vec![0x0C, 0x33])
        );
        assert_eq!(
            t.decode(&Payload::Bytes(vec![0x0C, 0x1A])).unwrap(),
            json!(21.0)
        );
        assert!(t.decode(&Payload::Bytes(vec![0x7F, 0xFF])).is_err());
        assert!(t.decode(&Payload::Bytes(vec![1])).is_err());
        assert!(t.decode(&Payload::Small(1)).is_err());
        assert!(t.encode(&json!("warm")).is_err());
        assert!(Dpt::parse("string")
            .unwrap()
            .encode(&json!("fifteen chars!!"))
            .is_err());
        assert!(Dpt::parse("percentU8")
            .unwrap()
            .encode(&json!(256))
            .is_err());
        assert_eq!(
            Dpt::RAW.decode(&Payload::Bytes(vec![1, 2])).unwrap(),
            json!([1, 2])
        );
    }
}
