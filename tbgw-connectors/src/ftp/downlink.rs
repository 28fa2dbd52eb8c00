//! RPCs and attribute updates to file operations: the downlink converter, pure and synchronous.
//!
//! | request | what it does |
//! |---|---|
//! | connector RPC `ftp_read`, params `{"valueExpression": "dir/file.txt"}` | reads the file |
//! | connector RPC `ftp_write`, params `{"valueExpression": "dir/file.txt;text"}` | writes `text` |
//! | reserved `get`, params `"filePath=dir/file.txt"` | reads the file |
//! | reserved `set`, params `"filePath=dir/file.txt;value=text"` | writes `text` |
//! | a `serverSideRpc[]` mapping | its `valueExpression` rendered (`${params}`, ...): `write` writes `path;value`, any other method reads `path` |
//! | an `attributeUpdates[]` mapping | its `valueExpression` written to its `path` (OVERRIDE) or appended as a line (WRITE) |
//!
//! A write's value is everything after the first `;` (upstream cuts it at the next `;` and
//! deletes every `'`).

use fancy_regex::Regex;
use serde_json::{json, Value as Json};
use tbgw::convert::downlink::{attribute_scope, rpc_scope};
use tbgw::expr::{Encoding, Template};

use super::config::{AttributeUpdateConfig, RpcConfig, WritingMode};

/// A regular expression that must match a whole name (upstream's `re.fullmatch`).
pub fn full_regex(s: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{s})$")).map_err(|e| e.to_string())
}

/// What a request does to the server's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// Read a file.
    Read {
        /// The file.
        path: String,
    },
    /// Replace a file's content.
    Write {
        /// The file.
        path: String,
        /// The new content.
        value: String,
    },
}

fn split_write(expr: &str) -> Result<FileOp, String> {
    match expr.split_once(';') {
        Some((path, value)) if !path.trim().is_empty() => Ok(FileOp::Write {
            path: path.trim().to_string(),
            value: value.to_string(),
        }),
        _ => Err(format!("expected `path;value`, got {expr:?}")),
    }
}

fn read(path: &str) -> Result<FileOp, String> {
    let path = path.trim();
    if path.is_empty() {
        return Err("no file path".into());
    }
    Ok(FileOp::Read {
        path: path.to_string(),
    })
}

fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A connector RPC (`ftp_read` / `ftp_write`, method without the prefix): the expression is
/// `params.valueExpression` (or the params themselves when they are a string).
pub fn connector_rpc(method: &str, params: &Json) -> Result<FileOp, String> {
    let expr = match params.get("valueExpression") {
        Some(v) => text(v),
        None if params.is_string() => text(params),
        None => return Err("params need `valueExpression`".into()),
    };
    match method {
        "read" => read(&expr),
        "write" => split_write(&expr),
        other => Err(format!(
            "unknown connector RPC ftp_{other} (ftp_read, ftp_write)"
        )),
    }
}

/// Reserved `get` (`filePath=…`) and `set` (`filePath=…;value=…`). `value` runs to the end of
/// the params, so it may hold `;` and `=`.
pub fn reserved(method: &str, params: &Json) -> Result<FileOp, String> {
    let params = text(params);
    let mut path = None;
    let mut value = None;
    let mut rest = params.as_str();
    while !rest.is_empty() {
        if let Some(v) = rest.strip_prefix("value=") {
            value = Some(v.to_string());
            break;
        }
        let (item, tail) = rest.split_once(';').unwrap_or((rest, ""));
        if let Some((k, v)) = item.split_once('=') {
            if k.trim() == "filePath" {
                path = Some(v.trim().to_string());
            }
        }
        rest = tail;
    }
    let path = path.ok_or_else(|| format!("no filePath in {params:?}"))?;
    match method {
        "get" => read(&path),
        _ => match value {
            Some(value) => Ok(FileOp::Write { path, value }),
            None => Err(format!("no value in {params:?}")),
        },
    }
}

/// A compiled `serverSideRpc[]` mapping.
#[derive(Debug)]
pub struct RpcRule {
    device: Regex,
    method: Regex,
    expr: Template,
}

impl RpcRule {
    /// Compiles a mapping (validated by the config).
    pub fn build(c: &RpcConfig) -> Result<RpcRule, String> {
        Ok(RpcRule {
            device: full_regex(&c.device_name_filter)?,
            method: full_regex(&c.method_filter)?,
            expr: Template::parse(&c.value_expression).map_err(|e| e.to_string())?,
        })
    }

    /// The operation for an RPC to `device`, if this mapping takes it.
    pub fn op(
        &self,
        device: &str,
        method: &str,
        id: i64,
        params: &Json,
    ) -> Option<Result<FileOp, String>> {
        if !self.device.is_match(device).unwrap_or(false)
            || !self.method.is_match(method).unwrap_or(false)
        {
            return None;
        }
        let scope = rpc_scope(Some(device), method, id, params);
        let expr = match self.expr.render_scope(&scope, Encoding::Text) {
            Some(e) => e,
            None => {
                return Some(Err(format!(
                    "valueExpression {:?} has no value for these params",
                    self.expr.source()
                )))
            }
        };
        Some(if method == "write" {
            split_write(&expr)
        } else {
            read(&expr)
        })
    }
}

/// What an attribute update writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeWrite {
    /// The path (may hold `*`).
    pub path: String,
    /// The rendered value expression.
    pub text: String,
    /// Replace or append.
    pub mode: WritingMode,
}

/// A compiled `attributeUpdates[]` mapping.
#[derive(Debug)]
pub struct AttributeRule {
    device: Regex,
    path: Template,
    value: Template,
    mode: WritingMode,
}

impl AttributeRule {
    /// Compiles a mapping (validated by the config).
    pub fn build(c: &AttributeUpdateConfig) -> Result<AttributeRule, String> {
        Ok(AttributeRule {
            device: full_regex(&c.device_name_filter)?,
            path: Template::parse(&c.path).map_err(|e| e.to_string())?,
            value: Template::parse(&c.value_expression).map_err(|e| e.to_string())?,
            mode: c.writing_mode,
        })
    }

    /// What to write for attribute `key` = `value` of `device`, if this mapping takes it.
    /// Every changed attribute is written (upstream writes one of them).
    pub fn write(&self, device: &str, key: &str, value: &Json) -> Option<AttributeWrite> {
        if !self.device.is_match(device).unwrap_or(false) {
            return None;
        }
        let scope = attribute_scope(device, key, value);
        Some(AttributeWrite {
            path: self.path.render_or_keep(&scope),
            text: self.value.render_or_keep(&scope),
            mode: self.mode,
        })
    }
}

/// The text written to a json file: upstream's `'` → `"`, and it must then be JSON.
pub fn json_file_text(text: &str) -> Result<String, String> {
    let t = text.replace('\'', "\"");
    serde_json::from_str::<Json>(&t)
        .map(|_| t)
        .map_err(|e| format!("{text:?} is not JSON once `'` is read as `\"`: {e}"))
}

/// The answer to a write: the value when shorter than 80 characters, else `true` (upstream's
/// shape).
pub fn write_result(value: &str) -> Json {
    if value.chars().count() < 80 {
        json!({ "result": value })
    } else {
        json!({ "result": true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_rpcs() {
        assert_eq!(
            connector_rpc("read", &json!({"valueExpression": "a/b.txt"})),
            Ok(FileOp::Read {
                path: "a/b.txt".into()
            })
        );
        assert_eq!(
            connector_rpc("write", &json!({"valueExpression": "a/b.txt;x;y=1"})),
            Ok(FileOp::Write {
                path: "a/b.txt".into(),
                value: "x;y=1".into()
            })
        );
        assert!(connector_rpc("write", &json!({"valueExpression": "a.txt"})).is_err());
        assert!(connector_rpc("nope", &json!({"valueExpression": "a.txt"})).is_err());
        assert!(connector_rpc("read", &json!({})).is_err());
    }

    #[test]
    fn reserved_get_set() {
        assert_eq!(
            reserved("get", &json!("filePath=d/f.txt")),
            Ok(FileOp::Read {
                path: "d/f.txt".into()
            })
        );
        assert_eq!(
            reserved("set", &json!("filePath=d/f.txt;value=a;b=c")),
            Ok(FileOp::Write {
                path: "d/f.txt".into(),
                value: "a;b=c".into()
            })
        );
        assert!(reserved("set", &json!("filePath=d/f.txt")).is_err());
        assert!(reserved("get", &json!("value=1")).is_err());
    }

    #[test]
    fn mapped_rpcs_and_attribute_updates() {
        let rule = RpcRule::build(&RpcConfig {
            device_name_filter: "dev.*".into(),
            method_filter: "read|write".into(),
            value_expression: "${params}".into(),
        })
        .unwrap();
        assert_eq!(
            rule.op("dev1", "write", 1, &json!("f.txt;42")),
            Some(Ok(FileOp::Write {
                path: "f.txt".into(),
                value: "42".into()
            }))
        );
        assert_eq!(
            rule.op("dev1", "read", 1, &json!("f.txt")),
            Some(Ok(FileOp::Read {
                path: "f.txt".into()
            }))
        );
        assert_eq!(rule.op("other", "read", 1, &json!("f.txt")), None);
        assert_eq!(rule.op("dev1", "reboot", 1, &json!("f.txt")), None);

        let a = AttributeRule::build(&AttributeUpdateConfig {
            path: "fol/${attributeKey}.txt".into(),
            device_name_filter: ".*".into(),
            writing_mode: WritingMode::Write,
            value_expression: "{'${attributeKey}':'${attributeValue}'}".into(),
        })
        .unwrap();
        let w = a.write("d", "sp", &json!(21.5)).unwrap();
        assert_eq!(w.path, "fol/sp.txt");
        assert_eq!(w.text, "{'sp':'21.5'}");
        assert_eq!(json_file_text(&w.text).unwrap(), "{\"sp\":\"21.5\"}");
        assert!(json_file_text("{'a':").is_err());
        assert_eq!(write_result("5"), json!({"result": "5"}));
        assert_eq!(write_result(&"x".repeat(80)), json!({"result": true}));
    }
}
