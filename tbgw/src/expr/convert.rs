//! Typing of extracted values: the `type` field of a datapoint.

use std::fmt;

use serde_json::Value as Json;

use crate::model::Value;

/// The type a datapoint's value is converted to (`"type"` in converter configurations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `string` / `str`: text; non-strings become their compact JSON text.
    String,
    /// `integer` / `int` / `long`: a 64-bit integer, through a float (`"21.7"` → 21).
    Integer,
    /// `double` / `float`: a 64-bit float.
    Double,
    /// `boolean` / `bool`.
    Boolean,
    /// `raw`: the JSON value as is, mapped to its natural model value.
    Raw,
    /// `json`: the JSON value as [`Value::Json`].
    Json,
}

impl DataType {
    /// Parses a type name, case-insensitively, accepting the aliases listed on each variant.
    pub fn parse(s: &str) -> Option<DataType> {
        let s = s.trim();
        let is = |names: &[&str]| names.iter().any(|n| s.eq_ignore_ascii_case(n));
        if is(&["string", "str"]) {
            Some(DataType::String)
        } else if is(&["integer", "int", "long"]) {
            Some(DataType::Integer)
        } else if is(&["double", "float"]) {
            Some(DataType::Double)
        } else if is(&["boolean", "bool"]) {
            Some(DataType::Boolean)
        } else if is(&["raw"]) {
            Some(DataType::Raw)
        } else if is(&["json"]) {
            Some(DataType::Json)
        } else {
            None
        }
    }

    /// The canonical name (`string`, `integer`, `double`, `boolean`, `raw`, `json`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::Integer => "integer",
            DataType::Double => "double",
            DataType::Boolean => "boolean",
            DataType::Raw => "raw",
            DataType::Json => "json",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for DataType {
    /// Deserializes from a type name; see [`DataType::parse`].
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        DataType::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format_args!(
                "unknown data type {s:?}, expected one of string, str, integer, int, long, \
                 double, float, boolean, bool, raw, json"
            ))
        })
    }
}

/// A value that cannot be converted to the requested type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot convert {value} to {target}: {reason}")]
pub struct ConvertError {
    /// The value as compact JSON, shortened to about 100 characters.
    pub value: String,
    /// The requested type.
    pub target: DataType,
    /// Why the conversion failed.
    pub reason: &'static str,
}

impl ConvertError {
    fn new(v: &Json, target: DataType, reason: &'static str) -> Self {
        const MAX: usize = 100;
        let mut value = v.to_string();
        if value.len() > MAX {
            let mut cut = MAX;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push('…');
        }
        ConvertError {
            value,
            target,
            reason,
        }
    }
}

/// Converts a JSON value to the model value of type `ty`.
///
/// * `String`: strings as is, other values as compact JSON text (`21.5`, `true`, `null`).
/// * `Integer`: integers as is; floats and numeric strings are truncated toward zero
///   (`"21.7"` → 21); `true`/`false` → 1/0.
/// * `Double`: numbers and numeric strings; `true`/`false` → 1.0/0.0. Non-finite results fail.
/// * `Boolean`: booleans as is; numbers are true when non-zero; strings `true/false`,
///   `yes/no`, `on/off`, `y/n`, `t/f`, `1/0` (case-insensitive) and other numeric strings.
/// * `Raw`: [`Value::from_json`]. `Json`: [`Value::Json`].
pub fn convert(v: &Json, ty: DataType) -> Result<Value, ConvertError> {
    match ty {
        DataType::String => Ok(Value::String(match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })),
        DataType::Raw => Ok(Value::from_json(v.clone())),
        DataType::Json => Ok(Value::Json(v.clone())),
        _ => convert_scalar(v, ty),
    }
}

/// Like [`convert`], taking the value by value to avoid copying strings and JSON trees.
pub fn convert_owned(v: Json, ty: DataType) -> Result<Value, ConvertError> {
    match (ty, v) {
        (DataType::String, Json::String(s)) => Ok(Value::String(s)),
        (DataType::Raw, v) => Ok(Value::from_json(v)),
        (DataType::Json, v) => Ok(Value::Json(v)),
        (ty, v) => convert(&v, ty),
    }
}

fn convert_scalar(v: &Json, ty: DataType) -> Result<Value, ConvertError> {
    let fail = |reason| ConvertError::new(v, ty, reason);
    match ty {
        DataType::Integer => match v {
            Json::Number(n) => match n.as_i64() {
                Some(i) => Ok(Value::Int(i)),
                None => n
                    .as_f64()
                    .and_then(float_to_int)
                    .map(Value::Int)
                    .ok_or_else(|| fail("out of the 64-bit integer range")),
            },
            Json::Bool(b) => Ok(Value::Int(i64::from(*b))),
            Json::String(s) => {
                let t = s.trim();
                if let Ok(i) = t.parse::<i64>() {
                    return Ok(Value::Int(i));
                }
                let f = parse_float(t).ok_or_else(|| fail("not a number"))?;
                float_to_int(f)
                    .map(Value::Int)
                    .ok_or_else(|| fail("out of the 64-bit integer range"))
            }
            _ => Err(fail("not a number")),
        },
        DataType::Double => match v {
            Json::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Value::Float)
                .ok_or_else(|| fail("not a finite number")),
            Json::Bool(b) => Ok(Value::Float(if *b { 1.0 } else { 0.0 })),
            Json::String(s) => parse_float(s.trim())
                .map(Value::Float)
                .ok_or_else(|| fail("not a number")),
            _ => Err(fail("not a number")),
        },
        DataType::Boolean => match v {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            Json::Number(n) => Ok(Value::Bool(n.as_f64().is_some_and(|f| f != 0.0))),
            Json::String(s) => parse_bool(s.trim())
                .map(Value::Bool)
                .ok_or_else(|| fail("not a boolean word or number")),
            _ => Err(fail("not a boolean")),
        },
        // Handled by `convert`.
        DataType::String | DataType::Raw | DataType::Json => convert(v, ty),
    }
}

/// Parses a finite float from text (`"21.5"`, `"-1e3"`, `"+7"`).
fn parse_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Truncates toward zero when the result fits an `i64`.
fn float_to_int(f: f64) -> Option<i64> {
    // 2^63 as f64; every finite float in [-2^63, 2^63) truncates into range.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let t = f.trunc();
    (t.is_finite() && (-LIMIT..LIMIT).contains(&t)).then_some(t as i64)
}

fn parse_bool(s: &str) -> Option<bool> {
    const TRUE: [&str; 6] = ["true", "yes", "on", "1", "y", "t"];
    const FALSE: [&str; 6] = ["false", "no", "off", "0", "n", "f"];
    if TRUE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if FALSE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        parse_float(s).map(|f| f != 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(v: Json, ty: &str) -> Result<Value, ConvertError> {
        convert(&v, DataType::parse(ty).expect("known type"))
    }

    #[test]
    fn type_names_and_aliases_parse_case_insensitively() {
        assert_eq!(DataType::parse("string"), Some(DataType::String));
        assert_eq!(DataType::parse("STR"), Some(DataType::String));
        assert_eq!(DataType::parse("Integer"), Some(DataType::Integer));
        assert_eq!(DataType::parse("int"), Some(DataType::Integer));
        assert_eq!(DataType::parse("long"), Some(DataType::Integer));
        assert_eq!(DataType::parse("double"), Some(DataType::Double));
        assert_eq!(DataType::parse("Float"), Some(DataType::Double));
        assert_eq!(DataType::parse("bool"), Some(DataType::Boolean));
        assert_eq!(DataType::parse("BOOLEAN"), Some(DataType::Boolean));
        assert_eq!(DataType::parse(" raw "), Some(DataType::Raw));
        assert_eq!(DataType::parse("json"), Some(DataType::Json));
        assert_eq!(DataType::parse("bytes"), None);
        assert_eq!(DataType::parse(""), None);
    }

    #[test]
    fn data_types_deserialize_from_strings() {
        let t: DataType = serde_json::from_value(json!("LONG")).expect("known");
        assert_eq!(t, DataType::Integer);
        let e = serde_json::from_value::<DataType>(json!("decimal")).expect_err("unknown");
        assert!(e.to_string().contains("decimal"), "{e}");
        assert!(serde_json::from_value::<DataType>(json!(3)).is_err());
        assert_eq!(
            serde_json::to_value(DataType::Double).expect("ok"),
            json!("double")
        );
    }

    #[test]
    fn strings_are_kept_and_other_values_become_json_text() {
        assert_eq!(conv(json!("abc"), "string"), Ok(Value::from("abc")));
        assert_eq!(conv(json!(21.5), "string"), Ok(Value::from("21.5")));
        assert_eq!(conv(json!(7), "str"), Ok(Value::from("7")));
        assert_eq!(conv(json!(true), "string"), Ok(Value::from("true")));
        assert_eq!(
            conv(json!({"a": 1}), "string"),
            Ok(Value::from(r#"{"a":1}"#))
        );
        assert_eq!(conv(json!(null), "string"), Ok(Value::from("null")));
    }

    #[test]
    fn integers_go_through_floats_and_truncate() {
        assert_eq!(conv(json!(21), "int"), Ok(Value::Int(21)));
        assert_eq!(conv(json!(21.7), "int"), Ok(Value::Int(21)));
        assert_eq!(conv(json!(-21.7), "int"), Ok(Value::Int(-21)));
        assert_eq!(conv(json!("21.7"), "integer"), Ok(Value::Int(21)));
        assert_eq!(conv(json!(" 42 "), "long"), Ok(Value::Int(42)));
        assert_eq!(conv(json!("1e3"), "int"), Ok(Value::Int(1000)));
        assert_eq!(conv(json!(true), "int"), Ok(Value::Int(1)));
        assert_eq!(conv(json!(false), "int"), Ok(Value::Int(0)));
        assert_eq!(
            conv(json!("9223372036854775807"), "int"),
            Ok(Value::Int(i64::MAX))
        );
    }

    #[test]
    fn integer_conversion_failures_name_the_value_and_type() {
        let e = conv(json!("abc"), "int").expect_err("not a number");
        assert_eq!(e.target, DataType::Integer);
        let msg = e.to_string();
        assert!(msg.contains("\"abc\"") && msg.contains("integer"), "{msg}");
        assert!(conv(json!(null), "int").is_err());
        assert!(conv(json!([1]), "int").is_err());
        assert!(conv(json!("nan"), "int").is_err());
        assert!(conv(json!("inf"), "int").is_err());
        assert!(conv(json!(1e300), "int").is_err());
        assert!(conv(json!(u64::MAX), "int").is_err());
        assert!(conv(json!(""), "int").is_err());
        assert!(conv(json!("0x10"), "int").is_err());
    }

    #[test]
    fn doubles_accept_numbers_and_numeric_strings() {
        assert_eq!(conv(json!(21.5), "double"), Ok(Value::Float(21.5)));
        assert_eq!(conv(json!(21), "float"), Ok(Value::Float(21.0)));
        assert_eq!(conv(json!("-3.25"), "double"), Ok(Value::Float(-3.25)));
        assert_eq!(conv(json!("1e-3"), "double"), Ok(Value::Float(0.001)));
        assert_eq!(conv(json!(true), "double"), Ok(Value::Float(1.0)));
        assert!(conv(json!("21,5"), "double").is_err());
        assert!(conv(json!("NaN"), "double").is_err());
        assert!(conv(json!({}), "double").is_err());
    }

    #[test]
    fn booleans_accept_words_numbers_and_numeric_strings() {
        for w in ["true", "TRUE", "Yes", "on", "1", "y", "T", " true "] {
            assert_eq!(conv(json!(w), "bool"), Ok(Value::Bool(true)), "{w}");
        }
        for w in ["false", "False", "NO", "off", "0", "n", "f", "0.0"] {
            assert_eq!(conv(json!(w), "boolean"), Ok(Value::Bool(false)), "{w}");
        }
        assert_eq!(conv(json!("2"), "bool"), Ok(Value::Bool(true)));
        assert_eq!(conv(json!(0), "bool"), Ok(Value::Bool(false)));
        assert_eq!(conv(json!(-0.5), "bool"), Ok(Value::Bool(true)));
        assert_eq!(conv(json!(true), "bool"), Ok(Value::Bool(true)));
        assert!(conv(json!("maybe"), "bool").is_err());
        assert!(conv(json!(""), "bool").is_err());
        assert!(conv(json!(null), "bool").is_err());
        assert!(conv(json!([true]), "bool").is_err());
    }

    #[test]
    fn raw_keeps_the_natural_type() {
        assert_eq!(conv(json!(3), "raw"), Ok(Value::Int(3)));
        assert_eq!(conv(json!(3.5), "raw"), Ok(Value::Float(3.5)));
        assert_eq!(conv(json!("3"), "raw"), Ok(Value::from("3")));
        assert_eq!(conv(json!(false), "raw"), Ok(Value::Bool(false)));
        assert_eq!(conv(json!([1, 2]), "raw"), Ok(Value::Json(json!([1, 2]))));
    }

    #[test]
    fn json_wraps_any_value() {
        assert_eq!(
            conv(json!({"a": 1}), "json"),
            Ok(Value::Json(json!({"a": 1})))
        );
        assert_eq!(conv(json!(1), "json"), Ok(Value::Json(json!(1))));
    }

    #[test]
    fn owned_conversion_matches_borrowed_conversion() {
        let samples = [
            json!("12.5"),
            json!(3),
            json!(true),
            json!(null),
            json!({"k": [1]}),
        ];
        for ty in [
            DataType::String,
            DataType::Integer,
            DataType::Double,
            DataType::Boolean,
            DataType::Raw,
            DataType::Json,
        ] {
            for v in &samples {
                assert_eq!(convert_owned(v.clone(), ty), convert(v, ty), "{v} as {ty}");
            }
        }
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let long = "x".repeat(500) + "é";
        let e = conv(json!(long), "int").expect_err("not a number");
        assert!(e.value.len() < 120, "{}", e.value);
        let e = conv(json!("é".repeat(200)), "int").expect_err("not a number");
        assert!(e.value.ends_with('…'));
    }
}
