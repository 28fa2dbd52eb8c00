//! A device's chat message body → [`DeviceData`]: pure and synchronous (no I/O, no clock).
//!
//! The body is read as JSON; `deviceNameExpression`, `deviceTypeExpression` and the
//! `key`/`value` of every `attributes[]`/`timeseries[]` entry are `${…}` templates over it
//! ([`tbgw::expr::Template`]). A value that is exactly one placeholder (`"${temp}"`) keeps its
//! JSON type (upstream turns every value into a Python string: `'True'`, `'21.5'`); a mixed
//! template (`"${temp}:${hum}"`) is text. Telemetry is stamped with the body's `ts` or
//! `timestamp` when present, else with the time the message arrived.
//!
//! A body that is not JSON is read as text — upstream's text converter — when the device's
//! expressions use byte slices (`"[0:4]"`, `"[4:]"`, [`tbgw::expr::ByteSlices`]): each
//! expression without `${…}` is rendered over the body (slices of it, literal text as is), the
//! values are text and stamped with the time of arrival. Otherwise such a body is malformed.

use serde_json::Value as Json;
use tbgw::expr::{parse_timestamp, ByteSlices, Template, TsOptions};
use tbgw::model::{DeviceData, Value};
use tokio_xmpp::jid::Jid;

/// The longest body converted, in bytes; longer ones are counted as malformed (the server's
/// own stanza limit, 256 KiB on Prosody, usually cuts them first).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// One `attributes[]` or `timeseries[]` entry.
#[derive(Debug, Clone)]
pub struct Point {
    /// The datapoint key (a template; usually a constant).
    pub key: Template,
    /// The value template.
    pub value: Template,
}

/// A configured device: which sender it is and how its bodies become data.
#[derive(Debug, Clone)]
pub struct Device {
    /// The JID as configured: with a resource it matches that full JID only (as upstream),
    /// without one it matches any resource of the bare JID.
    pub jid: Jid,
    /// `deviceNameExpression`.
    pub name: Template,
    /// `deviceTypeExpression`.
    pub device_type: Template,
    /// `attributes[]`.
    pub attributes: Vec<Point>,
    /// `timeseries[]`.
    pub timeseries: Vec<Point>,
}

/// Why a body could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than [`MAX_BODY_BYTES`].
    #[error("the body is {0} bytes, more than the {MAX_BODY_BYTES} converted")]
    TooLong(usize),
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// The device name expression has no match in the body (or renders empty).
    #[error("deviceNameExpression {0:?} has no match in the body")]
    NoName(String),
}

impl Device {
    /// Whether a message from `from` belongs to this device.
    pub fn matches(&self, from: &Jid) -> bool {
        if self.jid.resource().is_some() {
            *from == self.jid
        } else {
            from.to_bare() == self.jid.to_bare()
        }
    }

    /// Converts one message body; `Ok(None)` when it yields no datapoint. `now` stamps
    /// telemetry when the body has no `ts`/`timestamp`.
    pub fn convert(&self, body: &str, now: i64) -> Result<Option<DeviceData>, BodyError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLong(body.len()));
        }
        let data: Json = match serde_json::from_str(body) {
            Ok(d) => d,
            Err(_) if self.reads_text() => return self.convert_text(body, now),
            Err(e) => return Err(BodyError::NotJson(e.to_string())),
        };
        let name = self
            .name
            .render(&data)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| BodyError::NoName(self.name.source().to_string()))?;
        let device_type = self
            .device_type
            .render(&data)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let ts = data
            .get("ts")
            .or_else(|| data.get("timestamp"))
            .and_then(|v| parse_timestamp(v, TsOptions::default()))
            .unwrap_or(now);
        let mut out = DeviceData::new(name, device_type);
        for (p, v) in points(&self.attributes, &data) {
            out.push_attribute(p, v);
        }
        for (p, v) in points(&self.timeseries, &data) {
            out.push_telemetry(ts, p, v);
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

impl Device {
    /// Whether the expressions read text bodies: one of them (name, type, a key or value)
    /// is a byte-slice expression without `${…}`.
    fn reads_text(&self) -> bool {
        std::iter::once(&self.name)
            .chain(std::iter::once(&self.device_type))
            .chain(
                self.attributes
                    .iter()
                    .chain(&self.timeseries)
                    .flat_map(|p| [&p.key, &p.value]),
            )
            .any(|t| text_expr(t).is_some_and(|s| s.has_slices()))
    }

    /// A text body: the name must render non-empty (the type defaults to `default`), points
    /// whose key or value is a `${…}` template are skipped. `Ok(None)`: nothing to send.
    fn convert_text(&self, body: &str, now: i64) -> Result<Option<DeviceData>, BodyError> {
        let render = |t: &Template| {
            text_expr(t)
                .map(|s| s.render(body.as_bytes(), false))
                .filter(|v| !v.is_empty())
        };
        let name =
            render(&self.name).ok_or_else(|| BodyError::NoName(self.name.source().to_string()))?;
        let device_type = render(&self.device_type).unwrap_or_else(|| "default".to_string());
        let mut out = DeviceData::new(name, device_type);
        for p in &self.attributes {
            if let (Some(k), Some(v)) = (render(&p.key), render(&p.value)) {
                out.push_attribute(k, Value::String(v));
            }
        }
        for p in &self.timeseries {
            if let (Some(k), Some(v)) = (render(&p.key), render(&p.value)) {
                out.push_telemetry(now, k, Value::String(v));
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

/// An expression as a text-body expression: `None` when it is a `${…}` template (over JSON)
/// or not a valid byte-slice expression.
fn text_expr(t: &Template) -> Option<ByteSlices> {
    let src = t.source();
    if src.contains("${") {
        return None;
    }
    ByteSlices::parse(src).ok()
}

/// The datapoints of `list` found in `data`: an entry whose key or value has no match, or
/// whose value is `null`, is skipped.
fn points<'a>(list: &'a [Point], data: &'a Json) -> impl Iterator<Item = (String, Value)> + 'a {
    list.iter().filter_map(move |p| {
        let key = p.key.render(data).filter(|k| !k.is_empty())?;
        let v = p.value.resolve(data)?;
        if v.is_null() {
            return None;
        }
        Some((key, Value::from_json(v.into_owned())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn device(jid: &str) -> Device {
        Device {
            jid: Jid::new(jid).unwrap(),
            name: t("${serialNumber}"),
            device_type: t("default"),
            attributes: vec![Point {
                key: t("temperature"),
                value: t("${temp}"),
            }],
            timeseries: vec![
                Point {
                    key: t("humidity"),
                    value: t("${hum}"),
                },
                Point {
                    key: t("combination"),
                    value: t("${temp}:${hum}"),
                },
            ],
        }
    }

    #[test]
    fn converts_upstream_sample_body_with_types_kept() {
        let d = device("device@localhost/TMP_1101");
        let out = d
            .convert(
                r#"{"serialNumber":"SN-1","temp":21.5,"hum":40,"ok":true}"#,
                7,
            )
            .unwrap()
            .unwrap();
        assert_eq!(out.device_name, "SN-1");
        assert_eq!(out.device_type, "default");
        assert_eq!(
            out.attributes,
            vec![("temperature".into(), Value::Float(21.5))]
        );
        let ts: Vec<_> = out
            .telemetry
            .iter()
            .flat_map(|e| e.values.clone())
            .collect();
        assert_eq!(
            ts,
            vec![
                ("humidity".into(), Value::Int(40)),
                ("combination".into(), Value::String("21.5:40".into()))
            ]
        );
        assert!(out.telemetry.iter().all(|e| e.ts == 7));
    }

    #[test]
    fn ts_from_body_and_missing_keys_skipped() {
        let d = device("device@localhost");
        let out = d
            .convert(r#"{"serialNumber":"SN-2","hum":1,"ts":1700000000000}"#, 7)
            .unwrap()
            .unwrap();
        assert!(out.attributes.is_empty());
        assert_eq!(out.telemetry.len(), 1);
        assert_eq!(out.telemetry[0].ts, 1_700_000_000_000);
        assert_eq!(d.convert(r#"{"serialNumber":"SN-2"}"#, 7), Ok(None));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let d = device("device@localhost");
        assert!(matches!(d.convert("hello", 0), Err(BodyError::NotJson(_))));
        assert!(matches!(d.convert("", 0), Err(BodyError::NotJson(_))));
        assert!(matches!(
            d.convert(r#"{"temp":1}"#, 0),
            Err(BodyError::NoName(_))
        ));
        assert!(matches!(d.convert("[1,2]", 0), Err(BodyError::NoName(_))));
        let long = format!("\"{}\"", "a".repeat(MAX_BODY_BYTES));
        assert!(matches!(d.convert(&long, 0), Err(BodyError::TooLong(_))));
    }

    #[test]
    fn text_bodies_with_slice_expressions_as_upstreams_text_converter() {
        let d = Device {
            jid: Jid::new("device@localhost").unwrap(),
            name: t("[0:4]"),
            device_type: t("sensor"),
            attributes: vec![Point {
                key: t("unit"),
                value: t("[-1:]"),
            }],
            timeseries: vec![
                Point {
                    key: t("temp"),
                    value: t("[4:8]"),
                },
                Point {
                    key: t("json only"),
                    value: t("${temp}"),
                },
            ],
        };
        let out = d.convert("AB1221.5C", 9).unwrap().unwrap();
        assert_eq!(out.device_name, "AB12");
        assert_eq!(out.device_type, "sensor");
        assert_eq!(
            out.attributes,
            vec![("unit".into(), Value::String("C".into()))]
        );
        assert_eq!(out.telemetry.len(), 1);
        assert_eq!(
            out.telemetry[0].values,
            vec![("temp".into(), Value::String("21.5".into()))]
        );
        assert_eq!(out.telemetry[0].ts, 9);
        // An empty text body names no device: malformed, as a JSON body without the name.
        assert!(matches!(d.convert("", 9), Err(BodyError::NoName(_))));
        // A device without slice expressions keeps refusing text.
        assert!(matches!(
            device("device@localhost").convert("AB1221.5C", 0),
            Err(BodyError::NotJson(_))
        ));
    }

    #[test]
    fn full_jid_matches_exactly_bare_jid_any_resource() {
        let full = device("device@localhost/TMP_1101");
        let bare = device("device@localhost");
        let a = Jid::new("device@localhost/TMP_1101").unwrap();
        let b = Jid::new("device@localhost/other").unwrap();
        let c = Jid::new("other@localhost/TMP_1101").unwrap();
        assert!(full.matches(&a));
        assert!(!full.matches(&b));
        assert!(bare.matches(&a) && bare.matches(&b));
        assert!(!bare.matches(&c) && !full.matches(&c));
    }
}
