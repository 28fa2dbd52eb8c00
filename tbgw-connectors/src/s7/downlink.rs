//! Reserved RPCs: upstream's `get`/`set` params (`type=tag;tag=DB1.DBW2:INT;`,
//! `type=data;dbNumber=1;start=0;dataType=int;size=2;`, `type=vm;vmAddress=VW30;`, each with
//! `value=…;` for `set`) parsed into an address entry and the value. Pure.

use serde_json::{Map, Value as Json};

use super::config::PointConfig;

/// A parsed reserved RPC.
#[derive(Debug, Clone)]
pub struct Reserved {
    /// The address, as a config entry.
    pub point: PointConfig,
    /// `set`: the value (text, as upstream passes it on).
    pub value: Option<Json>,
}

const GET_SCHEMA: &str = "type=tag;tag=<S7 tag address>; OR type=data;dbNumber=<n>;start=<n>;dataType=<type>;size=<n>;[bit=<n>;] OR type=vm;vmAddress=<LOGO VM address>;";
const SET_SCHEMA: &str = "type=tag;tag=<S7 tag address>;value=<value>; OR type=data;dbNumber=<n>;start=<n>;dataType=<type>;[size=<n>;][bit=<n>;]value=<value>; OR type=vm;vmAddress=<LOGO VM address>;value=<value>;";

/// Parses the params of `get` or `set`: a `key=value;` string (upstream's form) or an
/// object with the same keys.
pub fn reserved(method: &str, params: &Json) -> Result<Reserved, String> {
    let schema = if method == "set" {
        SET_SCHEMA
    } else {
        GET_SCHEMA
    };
    let mismatch = || format!("The requested RPC does not match with the schema: {schema}");
    let mut map = Map::new();
    match params {
        Json::String(s) => {
            let s = s.trim();
            // `value=` is last and may itself hold `;` (upstream: `value=(.+);$`).
            let (head, value) = match s.find("value=") {
                Some(at) => {
                    let v = s[at + 6..].strip_suffix(';').unwrap_or(&s[at + 6..]);
                    (&s[..at], Some(v.to_string()))
                }
                None => (s, None),
            };
            for part in head.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = part.split_once('=').ok_or_else(mismatch)?;
                let v = v.trim();
                let j = match k.trim() {
                    "dbNumber" | "start" | "size" | "bit" | "offset" => {
                        Json::from(v.parse::<u64>().map_err(|_| mismatch())?)
                    }
                    _ => Json::from(v),
                };
                map.insert(k.trim().to_string(), j);
            }
            if let Some(v) = value {
                map.insert("value".into(), Json::from(v));
            }
        }
        Json::Object(o) => map = o.clone(),
        _ => return Err(mismatch()),
    }
    let value = map.remove("value");
    if method == "set" && value.is_none() {
        return Err(mismatch());
    }
    match map.get("type").and_then(Json::as_str) {
        Some("tag") if map.contains_key("tag") => {}
        Some("vm") if map.contains_key("vmAddress") => {}
        Some("data")
            if map.contains_key("dbNumber")
                && map.contains_key("start")
                && map.contains_key("dataType")
                && (method == "set" || map.contains_key("size")) => {}
        _ => return Err(mismatch()),
    }
    let point: PointConfig =
        serde_json::from_value(Json::Object(map)).map_err(|e| format!("{}: {e}", mismatch()))?;
    Ok(Reserved {
        point,
        value: if method == "set" { value } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_forms() {
        let r = reserved("get", &json!("type=tag;tag=DB1.DBW2:INT;")).unwrap();
        assert_eq!(r.point.tag.as_deref(), Some("DB1.DBW2:INT"));
        assert!(r.value.is_none());
        let r = reserved("set", &json!("type=tag;tag=DB1.DBX0.0:BOOL;value=true;")).unwrap();
        assert_eq!(r.value, Some(json!("true")));
        let r = reserved(
            "get",
            &json!("type=data;dbNumber=1;start=8;dataType=real;size=4;"),
        )
        .unwrap();
        assert_eq!(
            (r.point.db_number, r.point.start, r.point.size),
            (Some(1), Some(8), Some(4))
        );
        let r = reserved(
            "set",
            &json!("type=data;dbNumber=1;start=0;dataType=bool;bit=3;value=1;"),
        )
        .unwrap();
        assert_eq!((r.point.bit, r.value), (Some(3), Some(json!("1"))));
        let r = reserved("set", &json!("type=vm;vmAddress=VW30;value=a;b;")).unwrap();
        assert_eq!(r.value, Some(json!("a;b")));
        let r = reserved("get", &json!({"type": "vm", "vmAddress": "VW30"})).unwrap();
        assert_eq!(r.point.vm_address.as_deref(), Some("VW30"));
    }

    #[test]
    fn mismatches_quote_the_schema() {
        for (m, p) in [
            ("get", json!("tag=DB1.DBW2:INT;")),
            ("get", json!("type=foo;tag=x;")),
            ("get", json!("type=data;dbNumber=1;start=0;dataType=int;")),
            (
                "get",
                json!("type=data;dbNumber=x;start=0;dataType=int;size=2;"),
            ),
            ("set", json!("type=tag;tag=DB1.DBW2:INT;")),
            ("get", json!(5)),
            ("get", json!("garbage")),
        ] {
            let e = reserved(m, &p).unwrap_err();
            assert!(e.contains("does not match with the schema"), "{p}: {e}");
        }
    }
}
