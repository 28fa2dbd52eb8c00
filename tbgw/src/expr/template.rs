//! `${…}` templates: literal text with placeholders resolved against a JSON message.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

use super::path::JsonPath;
use super::ExprError;

/// How substituted values are written by [`Template::render_scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Strings without quotes, everything else as compact JSON (`true`, `null`, `{"a":1}`).
    /// For topics, URLs and other plain text.
    #[default]
    Text,
    /// Every value as compact JSON, so strings are quoted and escaped. For payload templates
    /// such as `{"value": ${params}}`.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Placeholder {
    /// The text between `${` and `}` as written.
    raw: Box<str>,
    /// `raw` without surrounding whitespace.
    expr: Box<str>,
    /// `expr` as a path, used when it is not a top-level key.
    path: JsonPath,
}

impl Placeholder {
    /// The value this placeholder stands for in `data`: a top-level key named exactly like
    /// the expression, else the first match of the expression as a path.
    fn lookup<'a>(&self, data: &'a Value) -> Option<&'a Value> {
        if let Value::Object(map) = data {
            if let Some(v) = map.get(&*self.raw) {
                return Some(v);
            }
            if self.raw.len() != self.expr.len() {
                if let Some(v) = map.get(&*self.expr) {
                    return Some(v);
                }
            }
        }
        self.path.first(data)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    Placeholder(Placeholder),
}

/// A parsed template such as `"Device ${serialNumber}"` or `"${id}-${type}"`.
///
/// Parse once at configuration load, render many times. Each placeholder resolves to the
/// top-level key named exactly like its expression when there is one, otherwise to the first
/// match of the expression read as a [`JsonPath`]. There is no escape for a literal `${`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: Box<str>,
    parts: Vec<Part>,
    /// Total length of the literal parts, to size rendered strings.
    literal_len: usize,
}

impl Template {
    /// Parses a template.
    ///
    /// Fails on an unterminated `${`, an empty `${}` and a placeholder that is not a valid
    /// path.
    pub fn parse(src: &str) -> Result<Template, ExprError> {
        let mut parts = Vec::new();
        let mut literal_len = 0;
        let mut literal_start = 0;
        while let Some(rel) = src[literal_start..].find("${") {
            let open = literal_start + rel;
            let body = open + 2;
            let Some(close_rel) = src[body..].find('}') else {
                return Err(ExprError::UnterminatedPlaceholder {
                    template: src.to_owned(),
                    pos: open,
                });
            };
            let close = body + close_rel;
            let raw = &src[body..close];
            let expr = raw.trim();
            if expr.is_empty() {
                return Err(ExprError::EmptyPlaceholder {
                    template: src.to_owned(),
                    pos: open,
                });
            }
            let path = JsonPath::parse(expr).map_err(|e| ExprError::InvalidPlaceholder {
                template: src.to_owned(),
                pos: open,
                source: Box::new(e),
            })?;
            if open > literal_start {
                literal_len += open - literal_start;
                parts.push(Part::Literal(src[literal_start..open].into()));
            }
            parts.push(Part::Placeholder(Placeholder {
                raw: raw.into(),
                expr: expr.into(),
                path,
            }));
            literal_start = close + 1;
        }
        if literal_start < src.len() {
            literal_len += src.len() - literal_start;
            parts.push(Part::Literal(src[literal_start..].into()));
        }
        Ok(Template {
            source: src.into(),
            parts,
            literal_len,
        })
    }

    /// The template text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the template has no placeholder.
    pub fn is_constant(&self) -> bool {
        !self.parts.iter().any(|p| matches!(p, Part::Placeholder(_)))
    }

    /// The template is exactly one placeholder and nothing else (`"${temp}"`).
    pub fn is_single(&self) -> bool {
        matches!(self.parts.as_slice(), [Part::Placeholder(_)])
    }

    /// The expressions of the placeholders (without `${`, `}` and surrounding whitespace),
    /// in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Placeholder(ph) => Some(&*ph.expr),
            Part::Literal(_) => None,
        })
    }

    /// For a single placeholder: the matched JSON value itself (keeps its type). For a
    /// constant: the constant as a JSON string. For a mixed template: the rendered string as a
    /// JSON string. None when any placeholder has no match.
    pub fn resolve<'a>(&'a self, data: &'a Value) -> Option<Cow<'a, Value>> {
        match self.parts.as_slice() {
            [Part::Placeholder(ph)] => ph.lookup(data).map(Cow::Borrowed),
            _ if self.is_constant() => Some(Cow::Owned(Value::String(self.source.to_string()))),
            _ => self.render(data).map(|s| Cow::Owned(Value::String(s))),
        }
    }

    /// Rendered text; JSON strings are inserted without quotes, other values as compact JSON.
    /// None when any placeholder has no match.
    ///
    /// A JSON `null` is a match and renders as `null`.
    pub fn render(&self, data: &Value) -> Option<String> {
        self.render_scope(data, Encoding::Text)
    }

    /// Render with a caller-supplied resolver for each placeholder's source text.
    ///
    /// The resolver gets the placeholder's expression without `${`, `}` and surrounding
    /// whitespace (`"params.a"` for `${ params.a }`); returning None makes the whole
    /// rendering None.
    pub fn render_with<F: FnMut(&str) -> Option<String>>(&self, mut f: F) -> Option<String> {
        let mut out = String::with_capacity(self.capacity_hint());
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Placeholder(ph) => out.push_str(&f(&ph.expr)?),
            }
        }
        Some(out)
    }

    /// Render against a scope object (e.g. `{"deviceName": .., "params": {..}}`) with the
    /// given encoding of substituted values.
    ///
    /// Placeholders resolve as in [`Template::render`], so `${params.a.b}` reads a nested
    /// member and `${params}` the whole object. None when any placeholder has no match.
    pub fn render_scope(&self, scope: &Value, enc: Encoding) -> Option<String> {
        let mut out = String::with_capacity(self.capacity_hint());
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Placeholder(ph) => push_value(&mut out, ph.lookup(scope)?, enc),
            }
        }
        Some(out)
    }

    /// Like [`Template::render`], but a placeholder without a match is kept as written
    /// (`${expr}`) instead of failing the whole rendering. Some upstream call sites (device
    /// names, RPC values) behave this way.
    pub fn render_or_keep(&self, data: &Value) -> String {
        let mut out = String::with_capacity(self.capacity_hint());
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Placeholder(ph) => match ph.lookup(data) {
                    Some(v) => push_value(&mut out, v, Encoding::Text),
                    None => {
                        out.push_str("${");
                        out.push_str(&ph.raw);
                        out.push('}');
                    }
                },
            }
        }
        out
    }

    fn capacity_hint(&self) -> usize {
        let placeholders = self.parts.len().saturating_sub(1) / 2 + 1;
        self.literal_len + 16 * placeholders
    }
}

fn push_value(out: &mut String, v: &Value, enc: Encoding) {
    match (v, enc) {
        (Value::String(s), Encoding::Text) => out.push_str(s),
        // Writing to a String cannot fail.
        _ => {
            let _ = write!(out, "{v}");
        }
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Template {
    type Err = ExprError;

    fn from_str(s: &str) -> Result<Self, ExprError> {
        Template::parse(s)
    }
}

impl serde::Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    /// Deserializes from a string and parses it; syntax errors become deserialization errors.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        Template::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(src: &str) -> Template {
        Template::parse(src).expect("valid template")
    }

    #[test]
    fn a_template_without_placeholders_is_a_constant() {
        let c = t("Device A");
        assert!(c.is_constant());
        assert!(!c.is_single());
        assert_eq!(c.render(&json!({})).as_deref(), Some("Device A"));
        assert_eq!(c.resolve(&json!(null)).as_deref(), Some(&json!("Device A")));
        assert_eq!(c.placeholders().count(), 0);
    }

    #[test]
    fn an_empty_template_renders_an_empty_string() {
        assert_eq!(t("").render(&json!({})).as_deref(), Some(""));
        assert!(t("").is_constant());
    }

    #[test]
    fn a_dollar_without_brace_is_literal_text() {
        assert_eq!(
            t("$5 and $x").render(&json!({})).as_deref(),
            Some("$5 and $x")
        );
        assert_eq!(t("}{$").render(&json!({})).as_deref(), Some("}{$"));
    }

    #[test]
    fn placeholders_are_concatenated_with_literal_text() {
        let data = json!({"id": 7, "type": "thermo", "serialNumber": "SN-1"});
        assert_eq!(
            t("${id}-${type}").render(&data).as_deref(),
            Some("7-thermo")
        );
        assert_eq!(
            t("Device ${serialNumber}").render(&data).as_deref(),
            Some("Device SN-1")
        );
        assert_eq!(t("${id}${id}").render(&data).as_deref(), Some("77"));
    }

    #[test]
    fn a_missing_key_makes_the_rendering_none() {
        let data = json!({"id": 7});
        assert_eq!(t("${id}-${type}").render(&data), None);
        assert_eq!(t("${type}").resolve(&data), None);
        assert_eq!(t("x${type}").resolve(&data), None);
    }

    #[test]
    fn a_single_placeholder_keeps_the_json_type() {
        let data = json!({"temp": 21.5, "on": true, "obj": {"a": [1]}, "n": null});
        let single = t("${temp}");
        assert!(single.is_single());
        assert_eq!(single.resolve(&data).as_deref(), Some(&json!(21.5)));
        assert!(matches!(single.resolve(&data), Some(Cow::Borrowed(_))));
        assert_eq!(t("${on}").resolve(&data).as_deref(), Some(&json!(true)));
        assert_eq!(
            t("${obj}").resolve(&data).as_deref(),
            Some(&json!({"a": [1]}))
        );
        assert_eq!(t("${n}").resolve(&data).as_deref(), Some(&json!(null)));
    }

    #[test]
    fn a_mixed_template_resolves_to_a_json_string() {
        let data = json!({"temp": 21.5});
        assert_eq!(
            t("${temp} C").resolve(&data).as_deref(),
            Some(&json!("21.5 C"))
        );
    }

    #[test]
    fn non_string_values_render_as_compact_json() {
        let data = json!({"b": false, "n": null, "o": {"k": "v"}, "a": [1, 2], "i": -3});
        assert_eq!(
            t("${b}|${n}|${o}|${a}|${i}").render(&data).as_deref(),
            Some(r#"false|null|{"k":"v"}|[1,2]|-3"#)
        );
    }

    #[test]
    fn a_top_level_key_wins_over_a_path_with_the_same_text() {
        let data = json!({"a.b": 1, "a": {"b": 2}});
        assert_eq!(t("${a.b}").resolve(&data).as_deref(), Some(&json!(1)));
        let data = json!({"a": {"b": 2}});
        assert_eq!(t("${a.b}").resolve(&data).as_deref(), Some(&json!(2)));
    }

    #[test]
    fn keys_with_spaces_and_unicode_resolve() {
        let data = json!({"my key": {"sub": "x"}, "Température (°C)": 20, "键": "值"});
        assert_eq!(t("${my key.sub}").render(&data).as_deref(), Some("x"));
        assert_eq!(
            t("${Température (°C)}").render(&data).as_deref(),
            Some("20")
        );
        assert_eq!(t("${键}!").render(&data).as_deref(), Some("值!"));
        assert_eq!(
            t("${ my key }").render(&data).as_deref(),
            Some(r#"{"sub":"x"}"#)
        );
        assert_eq!(t("${['my key'].sub}").render(&data).as_deref(), Some("x"));
    }

    #[test]
    fn a_key_with_surrounding_spaces_is_found_as_written() {
        let data = json!({" padded ": 1});
        assert_eq!(t("${ padded }").render(&data).as_deref(), Some("1"));
    }

    #[test]
    fn paths_reach_into_nested_arrays() {
        let data = json!({"sensors": [{"value": 1}, {"value": 2}],
            "meter_value": [{"sampled_value": [{"value": "230.1"}]}]});
        assert_eq!(t("${sensors[1].value}").render(&data).as_deref(), Some("2"));
        assert_eq!(
            t("${sensors[-1].value}").render(&data).as_deref(),
            Some("2")
        );
        assert_eq!(
            t("${meter_value[:].sampled_value[:].value}")
                .resolve(&data)
                .as_deref(),
            Some(&json!("230.1"))
        );
        assert_eq!(
            t("${$.sensors[0].value}").render(&data).as_deref(),
            Some("1")
        );
    }

    #[test]
    fn a_root_array_is_addressed_by_index() {
        let data = json!([{"name": "dev1"}, {"name": "dev2"}]);
        assert_eq!(t("${[1].name}").render(&data).as_deref(), Some("dev2"));
        assert_eq!(t("${name}").render(&data), None);
    }

    #[test]
    fn scalars_as_data_match_nothing_but_constants() {
        for data in [json!(1), json!("s"), json!(null)] {
            assert_eq!(t("${a}").render(&data), None);
            assert_eq!(t("k").render(&data).as_deref(), Some("k"));
        }
    }

    #[test]
    fn malformed_templates_are_errors() {
        for bad in [
            "${", "abc ${id", "${}", "${  }", "x${a.}", "${a[}", "${a]}", "${id}${",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn errors_name_the_template_and_position() {
        let e = Template::parse("ab ${id").expect_err("invalid");
        assert_eq!(
            e,
            ExprError::UnterminatedPlaceholder {
                template: "ab ${id".into(),
                pos: 3
            }
        );
        assert!(e.to_string().contains("\"ab ${id\""), "{e}");
        let e = Template::parse("x${a..}").expect_err("invalid");
        let msg = e.to_string();
        assert!(msg.contains("x${a..}") && msg.contains("byte 1"), "{msg}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn the_first_closing_brace_ends_a_placeholder() {
        let data = json!({"a": 1});
        assert_eq!(t("${a}}").render(&data).as_deref(), Some("1}"));
    }

    #[test]
    fn render_with_passes_trimmed_expressions_to_the_resolver() {
        let tpl = t("sensor/${deviceName}/request/${ methodName }/${requestId}");
        let mut seen = Vec::new();
        let out = tpl.render_with(|e| {
            seen.push(e.to_owned());
            Some(e.len().to_string())
        });
        assert_eq!(out.as_deref(), Some("sensor/10/request/10/9"));
        assert_eq!(seen, ["deviceName", "methodName", "requestId"]);
        assert_eq!(tpl.render_with(|_| None), None);
        assert_eq!(
            tpl.placeholders().collect::<Vec<_>>(),
            ["deviceName", "methodName", "requestId"]
        );
    }

    #[test]
    fn scope_rendering_json_encodes_for_payloads() {
        let scope = json!({"deviceName": "Dev \"1\"", "methodName": "set", "requestId": 5,
            "params": {"hum": 40, "a": {"b": "x"}}, "attributeValue": true});
        let payload = t(r#"{"device": ${deviceName}, "params": ${params}, "b": ${params.a.b}}"#);
        let out = payload
            .render_scope(&scope, Encoding::Json)
            .expect("all keys present");
        assert!(
            out.starts_with(r#"{"device": "Dev \"1\"", "params": {"#),
            "{out}"
        );
        let parsed: Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(
            parsed,
            json!({"device": "Dev \"1\"", "params": {"hum": 40, "a": {"b": "x"}}, "b": "x"})
        );
        assert_eq!(
            t("${attributeValue}")
                .render_scope(&scope, Encoding::Json)
                .as_deref(),
            Some("true")
        );
    }

    #[test]
    fn scope_rendering_as_text_leaves_strings_unquoted() {
        let scope = json!({"deviceName": "Dev 1", "methodName": "set", "requestId": 5});
        let topic = t("sensor/${deviceName}/request/${methodName}/${requestId}");
        assert_eq!(
            topic.render_scope(&scope, Encoding::Text).as_deref(),
            Some("sensor/Dev 1/request/set/5")
        );
        assert_eq!(t("${params.x}").render_scope(&scope, Encoding::Text), None);
    }

    #[test]
    fn a_dollar_placeholder_is_the_whole_message() {
        let data = json!({"a": [1, "x"]});
        assert_eq!(t("${$}").render(&data).as_deref(), Some(r#"{"a":[1,"x"]}"#));
        assert_eq!(t("${$.a[1]}").render(&data).as_deref(), Some("x"));
    }

    #[test]
    fn json_encoding_escapes_strings() {
        let scope = json!({"s": "line\nbreak \"q\" é"});
        let out = t("${s}")
            .render_scope(&scope, Encoding::Json)
            .expect("present");
        assert_eq!(out, r#""line\nbreak \"q\" é""#);
        assert_eq!(
            t("${s}").render_scope(&scope, Encoding::Text),
            Some("line\nbreak \"q\" é".into())
        );
    }

    #[test]
    fn render_or_keep_leaves_unmatched_placeholders_as_written() {
        let data = json!({"a": "x"});
        assert_eq!(t("${a}-${ b }").render_or_keep(&data), "x-${ b }");
    }

    #[test]
    fn templates_round_trip_through_serde() {
        let tpl: Template = serde_json::from_value(json!("Device ${sn}")).expect("valid");
        assert_eq!(tpl.source(), "Device ${sn}");
        assert_eq!(
            serde_json::to_value(&tpl).expect("serializable"),
            json!("Device ${sn}")
        );
        let err = serde_json::from_value::<Template>(json!("${")).expect_err("invalid");
        assert!(err.to_string().contains("unterminated"), "{err}");
        let parsed: Template = "${a}".parse().expect("valid");
        assert_eq!(parsed.to_string(), "${a}");
    }
}
