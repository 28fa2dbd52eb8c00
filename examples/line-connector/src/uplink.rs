//! Device lines to gateway data: the uplink converter. Pure and synchronous (no I/O, no clock),
//! so it is unit-tested here and could be fuzzed as it is.
//!
//! A line is either a *reading* or a *reply* to a command:
//!
//! ```text
//! #17 temperature=21.5 humidity=40 running=true firmware="1.2 beta"
//! temperature=21.5
//! OK 3 {"rebooting":true}
//! ERR 4 unknown method
//! ```
//!
//! A reading is `key=value` pairs separated by spaces, optionally led by `#<seq>`: a device that
//! numbers its readings keeps them until the gateway answers `ACK <seq>`, which the gateway does
//! only once the reading is in its storage (at-least-once). Values are typed as written:
//! `true`/`false` are booleans, whole numbers integers, other numbers doubles, and anything else
//! (quoted with `"` to hold spaces) a string.

use tbgw::convert::ConvertError;
use tbgw::model::{DeviceData, Value};

/// One line from the device.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A reading, with its sequence number if the device numbers them.
    Reading {
        /// `#<seq>`, if present.
        seq: Option<u64>,
        /// The `key=value` pairs in order.
        values: Vec<(String, Value)>,
    },
    /// The device's answer to the command with id `id`: `Ok` with an optional JSON body, or
    /// `Err` with the device's text.
    Reply {
        /// The command id.
        id: u64,
        /// The outcome.
        result: Result<serde_json::Value, String>,
    },
}

/// Parses one line (without its line ending).
pub fn parse_line(line: &str) -> Result<Line, ConvertError> {
    let line = line.trim_end_matches('\r').trim();
    if let Some(rest) = line.strip_prefix("OK ") {
        let (id, body) = split_id(rest)?;
        let body = body.trim();
        let value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(body)
                .unwrap_or_else(|_| serde_json::Value::String(body.to_string()))
        };
        return Ok(Line::Reply {
            id,
            result: Ok(value),
        });
    }
    if let Some(rest) = line.strip_prefix("ERR ") {
        let (id, text) = split_id(rest)?;
        return Ok(Line::Reply {
            id,
            result: Err(text.trim().to_string()),
        });
    }
    let mut rest = line;
    let mut seq = None;
    if let Some(r) = rest.strip_prefix('#') {
        let end = r.find(' ').unwrap_or(r.len());
        seq = Some(r[..end].parse::<u64>().map_err(|_| {
            ConvertError::Malformed(format!("bad sequence number `#{}`", &r[..end]))
        })?);
        rest = &r[end..];
    }
    let values = parse_pairs(rest)?;
    if values.is_empty() {
        return Err(ConvertError::Malformed("a reading without values".into()));
    }
    Ok(Line::Reading { seq, values })
}

fn split_id(rest: &str) -> Result<(u64, &str), ConvertError> {
    let end = rest.find(' ').unwrap_or(rest.len());
    let id = rest[..end]
        .parse::<u64>()
        .map_err(|_| ConvertError::Malformed(format!("bad command id `{}`", &rest[..end])))?;
    Ok((id, &rest[end..]))
}

fn parse_pairs(mut s: &str) -> Result<Vec<(String, Value)>, ConvertError> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok(out);
        }
        let eq = s
            .find('=')
            .ok_or_else(|| ConvertError::Malformed(format!("`{s}` is not key=value")))?;
        let key = &s[..eq];
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ConvertError::Malformed(format!("bad key `{key}`")));
        }
        s = &s[eq + 1..];
        let (value, rest) = if let Some(q) = s.strip_prefix('"') {
            let end = q.find('"').ok_or_else(|| {
                ConvertError::Malformed(format!("unterminated string for `{key}`"))
            })?;
            (Value::String(q[..end].to_string()), &q[end + 1..])
        } else {
            let end = s.find(' ').unwrap_or(s.len());
            (typed(&s[..end]), &s[end..])
        };
        out.push((key.to_string(), value));
        s = rest;
    }
}

fn typed(raw: &str) -> Value {
    match raw {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = raw.parse::<i64>() {
        return Value::Int(i);
    }
    match raw.parse::<f64>() {
        Ok(f) if f.is_finite() => Value::Float(f),
        _ => Value::String(raw.to_string()),
    }
}

/// Turns a reading into the device's data: keys listed in `attributes` become client
/// attributes, the rest telemetry at `ts`.
pub fn to_device_data(
    device: &str,
    device_type: &str,
    attributes: &[String],
    values: Vec<(String, Value)>,
    ts: i64,
) -> DeviceData {
    let mut data = DeviceData::new(device, device_type);
    for (k, v) in values {
        if attributes.contains(&k) {
            data.push_attribute(k, v);
        } else {
            data.push_telemetry(ts, k, v);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_typed_as_written() {
        let l = parse_line("#7 t=21.5 n=40 on=true fw=\"1.2 beta\" mode=auto\r").unwrap();
        assert_eq!(
            l,
            Line::Reading {
                seq: Some(7),
                values: vec![
                    ("t".into(), Value::Float(21.5)),
                    ("n".into(), Value::Int(40)),
                    ("on".into(), Value::Bool(true)),
                    ("fw".into(), Value::String("1.2 beta".into())),
                    ("mode".into(), Value::String("auto".into())),
                ]
            }
        );
        assert_eq!(
            parse_line("t=1").unwrap(),
            Line::Reading {
                seq: None,
                values: vec![("t".into(), Value::Int(1))]
            }
        );
    }

    #[test]
    fn replies_carry_their_id_and_body() {
        assert_eq!(
            parse_line("OK 3 {\"a\":1}").unwrap(),
            Line::Reply {
                id: 3,
                result: Ok(serde_json::json!({"a": 1}))
            }
        );
        assert_eq!(
            parse_line("OK 4").unwrap(),
            Line::Reply {
                id: 4,
                result: Ok(serde_json::Value::Null)
            }
        );
        assert_eq!(
            parse_line("ERR 5 no such thing").unwrap(),
            Line::Reply {
                id: 5,
                result: Err("no such thing".into())
            }
        );
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        for bad in [
            "", "#", "#x t=1", "#1", "t", "=1", "t=\"open", "OK x", "ERR", "é=\"", "#1é t=1",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?} should be an error");
        }
        assert!(parse_line("NaN=NaN").is_ok());
    }

    #[test]
    fn attributes_are_split_from_telemetry() {
        let d = to_device_data(
            "d",
            "t",
            &["fw".to_string()],
            vec![("fw".into(), Value::Int(1)), ("t".into(), Value::Int(2))],
            5,
        );
        assert_eq!(d.datapoints(), 2);
        assert_eq!(d.attributes.len(), 1);
    }
}
