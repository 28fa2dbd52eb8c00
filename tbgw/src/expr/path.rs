//! JSONPath in the jsonpath-rw dialect, as written inside `${…}` placeholders.
//!
//! Supported syntax (the leading `$.` is optional):
//!
//! | syntax              | meaning                                                        |
//! |---------------------|----------------------------------------------------------------|
//! | `a.b`, `my key.sub` | object members; unquoted names run up to the next `.` or `[`  |
//! | `'a.b'`, `"a b"`    | quoted member names (`\` escapes the next character)           |
//! | `*`, `[*]`          | every element of an array or every value of an object          |
//! | `[0]`, `[-1]`       | array index, negative counts from the end                      |
//! | `[1:3]`, `[:]`, `[::2]` | Python slice of an array                                   |
//! | `['a']`, `['a','b']`, `[name]` | member(s) by name                                   |
//! | `a..b`              | `b` anywhere below `a` (recursive descent)                     |
//!
//! Like jsonpath-rw, a slice applied to a value that is not an array treats the value as a
//! one-element array, so `obj[:]` yields `obj`.

use serde_json::Value;

use super::slices::{is_subscript_char, parse_subscript, resolve_index, SliceSpec, Subscript};
use super::ExprError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// An object member.
    Field(Box<str>),
    /// Several object members, in the order written.
    Fields(Box<[Box<str>]>),
    /// Every array element or object value.
    Wildcard,
    /// An array element.
    Index(i64),
    /// A slice of an array.
    Slice(SliceSpec),
    /// The inner step applied to the current value and to every value below it.
    Descendants(Box<Step>),
}

/// A parsed JSONPath (jsonpath-rw dialect, leading `$.` optional).
///
/// Parse once, evaluate many times; [`JsonPath::first`] does not allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    source: Box<str>,
    steps: Box<[Step]>,
}

struct Parser<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Parser<'s> {
    fn err(&self, pos: usize, reason: &'static str) -> ExprError {
        ExprError::InvalidPath {
            path: self.src.to_owned(),
            pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + ahead).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// A quoted name starting at the current quote character.
    fn quoted(&mut self) -> Result<String, ExprError> {
        let open = self.pos;
        let Some(quote) = self.peek() else {
            return Err(self.err(open, "expected a quoted name"));
        };
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                }
            } else if c as u32 == u32::from(quote) {
                self.pos += i + 1;
                return Ok(out);
            } else {
                out.push(c);
            }
        }
        Err(self.err(open, "unterminated quoted name"))
    }

    /// A member name after `.` (or at the start): quoted, `*` or unquoted text up to the next
    /// `.` or `[`.
    fn member(&mut self) -> Result<Step, ExprError> {
        self.skip_ws();
        match self.peek() {
            Some(b'\'' | b'"') => {
                let name = self.quoted()?;
                self.skip_ws();
                Ok(Step::Field(name.into()))
            }
            _ => {
                let start = self.pos;
                let rest = &self.src[start..];
                let len = rest.find(['.', '[']).unwrap_or(rest.len());
                let raw = &rest[..len];
                if let Some(bad) = raw.find(']') {
                    return Err(self.err(start + bad, "unexpected `]`"));
                }
                let name = raw.trim();
                if name.is_empty() {
                    return Err(self.err(start, "expected a member name"));
                }
                self.pos = start + len;
                Ok(if name == "*" {
                    Step::Wildcard
                } else {
                    Step::Field(name.into())
                })
            }
        }
    }

    /// A bracketed subscript starting at `[`.
    fn bracket(&mut self) -> Result<Step, ExprError> {
        let open = self.pos;
        self.pos += 1;
        self.skip_ws();
        if matches!(self.peek(), Some(b'\'' | b'"')) {
            let mut names: Vec<Box<str>> = Vec::new();
            loop {
                self.skip_ws();
                if !matches!(self.peek(), Some(b'\'' | b'"')) {
                    return Err(self.err(self.pos, "expected a quoted name"));
                }
                names.push(self.quoted()?.into());
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    None => return Err(self.err(open, "unterminated `[`")),
                    Some(_) => return Err(self.err(self.pos, "expected `,` or `]`")),
                }
            }
            return Ok(if names.len() == 1 {
                Step::Field(names.remove(0))
            } else {
                Step::Fields(names.into_boxed_slice())
            });
        }
        let inner_start = open + 1;
        let Some(len) = self.src[inner_start..].find(']') else {
            return Err(self.err(open, "unterminated `[`"));
        };
        let inner = &self.src[inner_start..inner_start + len];
        self.pos = inner_start + len + 1;
        let trimmed = inner.trim();
        if trimmed == "*" {
            return Ok(Step::Wildcard);
        }
        if inner.chars().all(is_subscript_char) {
            return match parse_subscript(inner) {
                Ok(Subscript::Index(i)) => Ok(Step::Index(i)),
                Ok(Subscript::Slice(spec)) => Ok(Step::Slice(spec)),
                Err((pos, reason)) => Err(self.err(inner_start + pos, reason)),
            };
        }
        if let Some(bad) = inner.find('[') {
            return Err(self.err(inner_start + bad, "unexpected `[`"));
        }
        Ok(Step::Field(trimmed.into()))
    }

    fn parse(mut self) -> Result<Vec<Step>, ExprError> {
        let mut steps = Vec::new();
        self.skip_ws();
        if self.at_end() {
            return Err(self.err(0, "empty path"));
        }
        match self.peek() {
            Some(b'$') => {
                self.pos += 1;
                self.skip_ws();
                if !matches!(self.peek(), None | Some(b'.' | b'[')) {
                    return Err(self.err(self.pos, "expected `.` or `[` after `$`"));
                }
            }
            Some(b'.') if self.peek_at(1) != Some(b'.') => {
                return Err(self.err(self.pos, "a path cannot start with a single `.`"));
            }
            Some(b'.' | b'[') => {}
            _ => steps.push(self.member()?),
        }
        loop {
            self.skip_ws();
            match self.peek() {
                None => break,
                Some(b'.') if self.peek_at(1) == Some(b'.') => {
                    self.pos += 2;
                    self.skip_ws();
                    let inner = if self.peek() == Some(b'[') {
                        self.bracket()?
                    } else {
                        self.member()?
                    };
                    steps.push(Step::Descendants(Box::new(inner)));
                }
                Some(b'.') => {
                    self.pos += 1;
                    steps.push(self.member()?);
                }
                Some(b'[') => steps.push(self.bracket()?),
                Some(_) => return Err(self.err(self.pos, "expected `.` or `[`")),
            }
        }
        Ok(steps)
    }
}

impl JsonPath {
    /// Parses a path such as `data.temp`, `$.sensors[0].value`, `items[:].v` or `a..b`.
    ///
    /// `$` alone is the root value itself. Fails with [`ExprError::InvalidPath`] on bad
    /// syntax: empty names (`a.`, `a..`), unterminated brackets or quotes, bad subscripts.
    pub fn parse(s: &str) -> Result<Self, ExprError> {
        let steps = Parser { src: s, pos: 0 }.parse()?;
        Ok(JsonPath {
            source: s.into(),
            steps: steps.into_boxed_slice(),
        })
    }

    /// The path text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first match in document order, if any.
    pub fn first<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        let mut found = None;
        walk(&self.steps, v, &mut |m| {
            found = Some(m);
            true
        });
        found
    }

    /// Every match in document order.
    pub fn all<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        let mut found = Vec::new();
        walk(&self.steps, v, &mut |m| {
            found.push(m);
            false
        });
        found
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for JsonPath {
    type Err = ExprError;

    fn from_str(s: &str) -> Result<Self, ExprError> {
        JsonPath::parse(s)
    }
}

/// Calls `f` on every match of `steps` below `v`; stops early (returning true) when `f`
/// returns true.
fn walk<'a>(steps: &[Step], v: &'a Value, f: &mut dyn FnMut(&'a Value) -> bool) -> bool {
    match steps.split_first() {
        None => f(v),
        Some((step, rest)) => apply(step, rest, v, f),
    }
}

/// Applies one step to `v`, then the remaining steps to each of its results.
fn apply<'a>(
    step: &Step,
    rest: &[Step],
    v: &'a Value,
    f: &mut dyn FnMut(&'a Value) -> bool,
) -> bool {
    match step {
        Step::Field(name) => match v {
            Value::Object(map) => map.get(&**name).is_some_and(|c| walk(rest, c, f)),
            _ => false,
        },
        Step::Fields(names) => match v {
            Value::Object(map) => names
                .iter()
                .filter_map(|n| map.get(&**n))
                .any(|c| walk(rest, c, f)),
            _ => false,
        },
        Step::Wildcard => match v {
            Value::Array(items) => items.iter().any(|c| walk(rest, c, f)),
            Value::Object(map) => map.values().any(|c| walk(rest, c, f)),
            _ => false,
        },
        Step::Index(i) => match v {
            Value::Array(items) => resolve_index(*i, items.len())
                .and_then(|i| items.get(i))
                .is_some_and(|c| walk(rest, c, f)),
            _ => false,
        },
        Step::Slice(spec) => match v {
            Value::Array(items) => spec
                .indices(items.len())
                .filter_map(|i| items.get(i))
                .any(|c| walk(rest, c, f)),
            // jsonpath-rw treats a non-array as a one-element array for slices.
            other => spec.indices(1).next().is_some() && walk(rest, other, f),
        },
        Step::Descendants(inner) => descend(inner, rest, v, f),
    }
}

fn descend<'a>(
    inner: &Step,
    rest: &[Step],
    v: &'a Value,
    f: &mut dyn FnMut(&'a Value) -> bool,
) -> bool {
    if apply(inner, rest, v, f) {
        return true;
    }
    match v {
        Value::Array(items) => items.iter().any(|c| descend(inner, rest, c, f)),
        Value::Object(map) => map.values().any(|c| descend(inner, rest, c, f)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn first(path: &str, v: &Value) -> Option<Value> {
        JsonPath::parse(path).expect("valid path").first(v).cloned()
    }

    fn all(path: &str, v: &Value) -> Vec<Value> {
        JsonPath::parse(path)
            .expect("valid path")
            .all(v)
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn dotted_members_walk_nested_objects() {
        let v = json!({"data": {"temp": 21.5, "inner": {"x": [1]}}});
        assert_eq!(first("data.temp", &v), Some(json!(21.5)));
        assert_eq!(first("data.inner.x", &v), Some(json!([1])));
        assert_eq!(first("data.missing", &v), None);
        assert_eq!(first("nope", &v), None);
    }

    #[test]
    fn a_leading_dollar_is_accepted() {
        let v = json!({"a": {"b": 1}});
        assert_eq!(first("$.a.b", &v), Some(json!(1)));
        assert_eq!(first("$", &v), Some(v.clone()));
        assert_eq!(first("$['a'].b", &v), Some(json!(1)));
    }

    #[test]
    fn indexes_select_array_elements() {
        let v = json!({"sensors": [{"value": 1}, {"value": 2}, {"value": 3}]});
        assert_eq!(first("sensors[0].value", &v), Some(json!(1)));
        assert_eq!(first("sensors[2].value", &v), Some(json!(3)));
        assert_eq!(first("sensors[-1].value", &v), Some(json!(3)));
        assert_eq!(first("sensors[-3].value", &v), Some(json!(1)));
        assert_eq!(first("sensors[3].value", &v), None);
        assert_eq!(first("sensors[-4].value", &v), None);
    }

    #[test]
    fn a_root_array_is_indexed_directly() {
        let v = json!([{"id": "a"}, {"id": "b"}]);
        assert_eq!(first("[0]", &v), Some(json!({"id": "a"})));
        assert_eq!(first("[1].id", &v), Some(json!("b")));
        assert_eq!(first("$[1].id", &v), Some(json!("b")));
        assert_eq!(first("[:].id", &v), Some(json!("a")));
        assert_eq!(all("[*].id", &v), vec![json!("a"), json!("b")]);
    }

    #[test]
    fn nested_full_slices_flatten_in_document_order() {
        let v = json!({"meter_value": [
            {"sampled_value": [{"value": "1"}, {"value": "2"}]},
            {"sampled_value": [{"value": "3"}]}
        ]});
        let path = "meter_value[:].sampled_value[:].value";
        assert_eq!(first(path, &v), Some(json!("1")));
        assert_eq!(all(path, &v), vec![json!("1"), json!("2"), json!("3")]);
    }

    #[test]
    fn slices_follow_python_semantics() {
        let v = json!({"a": [0, 1, 2, 3, 4]});
        assert_eq!(all("a[1:3]", &v), vec![json!(1), json!(2)]);
        assert_eq!(all("a[-2:]", &v), vec![json!(3), json!(4)]);
        assert_eq!(all("a[::2]", &v), vec![json!(0), json!(2), json!(4)]);
        assert_eq!(all("a[::-1]", &v).first(), Some(&json!(4)));
        assert!(all("a[7:9]", &v).is_empty());
    }

    #[test]
    fn a_slice_of_a_non_array_yields_the_value_itself() {
        let v = json!({"a": {"b": 1}});
        assert_eq!(first("a[:].b", &v), Some(json!(1)));
        assert_eq!(first("a[1:]", &v), None);
    }

    #[test]
    fn wildcards_visit_every_child() {
        let v = json!({"a": {"x": {"b": 1}, "y": {"b": 2}, "z": {"c": 3}}});
        assert_eq!(all("a.*.b", &v), vec![json!(1), json!(2)]);
        assert_eq!(first("a.*.c", &v), Some(json!(3)));
        assert_eq!(all("a[*]", &v).len(), 3);
        assert_eq!(first("a.*", &json!({"a": 5})), None);
    }

    #[test]
    fn recursive_descent_finds_members_at_any_depth() {
        let v = json!({"a": {"b": 1, "c": {"b": 2, "d": [{"b": 3}]}}});
        assert_eq!(all("a..b", &v), vec![json!(1), json!(2), json!(3)]);
        assert_eq!(first("..d[0].b", &v), Some(json!(3)));
        assert_eq!(all("$..b", &v).len(), 3);
        assert_eq!(all("a..[0]", &v), vec![json!({"b": 3})]);
    }

    #[test]
    fn quoted_members_may_contain_any_character() {
        let v = json!({"key with spaces": {"a.b": 7, "it's": 8, "q\"d": 9}});
        assert_eq!(first("['key with spaces']['a.b']", &v), Some(json!(7)));
        assert_eq!(first("\"key with spaces\".'a.b'", &v), Some(json!(7)));
        assert_eq!(first("['key with spaces'][\"it's\"]", &v), Some(json!(8)));
        assert_eq!(first("['key with spaces']['it\\'s']", &v), Some(json!(8)));
        assert_eq!(first("['key with spaces']['q\"d']", &v), Some(json!(9)));
    }

    #[test]
    fn unquoted_members_may_contain_spaces_and_unicode() {
        let v = json!({"my key": {"sub": 1}, "température": {"°C": 2}});
        assert_eq!(first("my key.sub", &v), Some(json!(1)));
        assert_eq!(first("température.°C", &v), Some(json!(2)));
        assert_eq!(first(" my key . sub ", &v), Some(json!(1)));
    }

    #[test]
    fn bracketed_bare_names_and_name_lists_select_members() {
        let v = json!({"a": 1, "b": 2});
        assert_eq!(first("[b]", &v), Some(json!(2)));
        assert_eq!(all("['b','a']", &v), vec![json!(2), json!(1)]);
        assert_eq!(first("['x', 'a']", &v), Some(json!(1)));
    }

    #[test]
    fn members_do_not_match_arrays_and_indexes_do_not_match_objects() {
        let v = json!({"a": [1, 2], "o": {"0": 1}});
        assert_eq!(first("a.x", &v), None);
        assert_eq!(first("o[0]", &v), None);
        assert_eq!(first("a[0].x", &v), None);
        assert_eq!(first("a[0][0]", &v), None);
    }

    #[test]
    fn malformed_paths_are_errors() {
        for bad in [
            "",
            " ",
            "a.",
            "a..",
            "a[",
            "a[]",
            "a[1:2:3:4]",
            "a[::0]",
            "a]",
            "a['x'",
            "a['x' 'y']",
            ".a",
            "$x",
            "a[0]b",
            "'unterminated",
            "a[1-2]",
            "a[[0]]",
            "a...b",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn errors_name_the_path_and_position() {
        let msg = JsonPath::parse("data.[0]")
            .expect_err("invalid")
            .to_string();
        assert!(msg.contains("data.[0]") && msg.contains("byte 5"), "{msg}");
    }

    #[test]
    fn evaluation_on_scalars_finds_nothing() {
        for v in [json!(null), json!(1), json!("s"), json!(true)] {
            assert_eq!(first("a.b", &v), None);
            assert_eq!(first("[0]", &v), None);
        }
    }

    #[test]
    fn the_source_text_is_kept() {
        let p: JsonPath = "a[0].b".parse().expect("valid");
        assert_eq!(p.source(), "a[0].b");
        assert_eq!(p.to_string(), "a[0].b");
    }
}
