//! RPC requests to SQL statements: pure and synchronous.
//!
//! * A listed method calls its stored procedure (`{CALL name(?, …)}`) or runs its `query`,
//!   binding `args`; with `overrideRpcConfig` the request's `params` object replaces keys.
//! * An unlisted method runs only with `enableUnknownRpc`: `params` is `{query, args, result}`
//!   (no `query`: the procedure named like the method).
//! * Reserved `get`/`set`: `params` is `procedure_name=…;query=…;value=a,b;with_result=true;`.
//!   Each pair is split at its **first** `=` (upstream splits at every `=`, so a query with
//!   `WHERE x = 1` was dropped).

use serde_json::Value as Json;

use super::config::{RpcConfig, RpcMethod};

/// A statement to run for an RPC.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The SQL text (`{CALL p(?,?)}` for a procedure).
    pub sql: String,
    /// Values bound to its `?`s.
    pub args: Vec<Json>,
    /// Answer with the first row of the result.
    pub with_result: bool,
    /// A reserved `get`/`set` (its answers are wrapped in `{"result": …}`).
    pub reserved: bool,
}

/// Why an RPC is not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// Not listed and `enableUnknownRpc` is off.
    Unknown(String),
    /// Malformed parameters.
    BadParams(String),
}

fn call(procedure: &str, nargs: usize) -> String {
    if nargs == 0 {
        format!("{{CALL {procedure}}}")
    } else {
        let marks = vec!["?"; nargs].join(",");
        format!("{{CALL {procedure} ({marks})}}")
    }
}

fn statement(name: &str, m: &RpcMethod, reserved: bool) -> Result<Statement, PlanError> {
    let args = if m.args.is_empty() {
        m.params.clone()
    } else {
        m.args.clone()
    };
    let sql = if !m.query.trim().is_empty() {
        m.query.clone()
    } else {
        let procedure = if m.name.is_empty() { name } else { &m.name };
        if !is_identifier(procedure) {
            return Err(PlanError::BadParams(format!(
                "{procedure:?} is not a procedure name"
            )));
        }
        call(procedure, args.len())
    };
    Ok(Statement {
        sql,
        args,
        with_result: m.result,
        reserved,
    })
}

/// A procedure name: letters, digits, `_`, `.` (schema), `$`; nothing that could end the
/// `{CALL …}` escape.
fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '$'))
}

/// Merges the request's `params` object over a listed method (`overrideRpcConfig`).
fn overridden(m: &RpcMethod, params: &Json) -> Result<RpcMethod, PlanError> {
    let mut base = serde_json::to_value(MethodJson::from(m)).unwrap_or(Json::Null);
    if let (Json::Object(b), Json::Object(p)) = (&mut base, params) {
        for (k, v) in p {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(base).map_err(|e| PlanError::BadParams(format!("params: {e}")))
}

#[derive(serde::Serialize)]
struct MethodJson {
    name: String,
    args: Vec<Json>,
    params: Vec<Json>,
    query: String,
    result: bool,
}

impl From<&RpcMethod> for MethodJson {
    fn from(m: &RpcMethod) -> Self {
        MethodJson {
            name: m.name.clone(),
            args: m.args.clone(),
            params: m.params.clone(),
            query: m.query.clone(),
            result: m.result,
        }
    }
}

/// The statement for RPC `method` with `params`.
pub fn plan(cfg: &RpcConfig, method: &str, params: &Json) -> Result<Statement, PlanError> {
    if method == "get" || method == "set" {
        return reserved(params);
    }
    match cfg.methods.iter().find(|m| m.name == method) {
        Some(m) if cfg.override_config && params.is_object() => {
            statement(method, &overridden(m, params)?, false)
        }
        Some(m) => statement(method, m, false),
        None if !cfg.enable_unknown => Err(PlanError::Unknown(method.to_string())),
        None => {
            let m: RpcMethod = match params {
                Json::Null => RpcMethod::default(),
                p => serde_json::from_value(p.clone())
                    .map_err(|e| PlanError::BadParams(format!("params: {e}")))?,
            };
            let m = RpcMethod {
                name: method.to_string(),
                ..m
            };
            statement(method, &m, false)
        }
    }
}

/// Reserved `get`/`set` with `procedure_name=…;query=…;value=a,b;with_result=true;`.
fn reserved(params: &Json) -> Result<Statement, PlanError> {
    const USAGE: &str = "RPC params are empty, expected format: set value={value};";
    let text = match params {
        Json::String(s) => s.as_str(),
        _ => return Err(PlanError::BadParams(USAGE.into())),
    };
    let mut m = RpcMethod::default();
    let mut any = false;
    for pair in text.split(';') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() {
            continue;
        }
        any = true;
        match k {
            "value" => m.args = v.split(',').map(|a| Json::String(a.to_string())).collect(),
            "query" => m.query = v.to_string(),
            "procedure_name" => m.name = v.to_string(),
            "with_result" => m.result = v.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    if !any {
        return Err(PlanError::BadParams(USAGE.into()));
    }
    if m.query.is_empty() && m.name.is_empty() {
        return Err(PlanError::BadParams(
            "reserved RPC needs query=… or procedure_name=…".into(),
        ));
    }
    statement("", &m, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(unknown: bool, override_config: bool) -> RpcConfig {
        RpcConfig {
            enable_unknown: unknown,
            override_config,
            methods: vec![
                RpcMethod {
                    name: "procedureOne".into(),
                    ..Default::default()
                },
                RpcMethod {
                    name: "procedureTwo".into(),
                    args: vec![json!("One"), json!(2), json!(3.0)],
                    ..Default::default()
                },
                RpcMethod {
                    name: "last".into(),
                    query: "SELECT v FROM t WHERE id = ?".into(),
                    params: vec![json!(1)],
                    result: true,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn listed_methods() {
        let c = cfg(false, false);
        assert_eq!(
            plan(&c, "procedureOne", &Json::Null).unwrap().sql,
            "{CALL procedureOne}"
        );
        let s = plan(&c, "procedureTwo", &json!({"args": [9]})).unwrap();
        assert_eq!(s.sql, "{CALL procedureTwo (?,?,?)}");
        assert_eq!(s.args.len(), 3);
        let s = plan(&c, "last", &Json::Null).unwrap();
        assert_eq!(
            (s.sql.as_str(), s.args.clone(), s.with_result),
            ("SELECT v FROM t WHERE id = ?", vec![json!(1)], true)
        );
        assert_eq!(
            plan(&c, "nope", &json!({"query": "DROP TABLE t"})),
            Err(PlanError::Unknown("nope".into()))
        );
    }

    #[test]
    fn override_and_unknown() {
        let c = cfg(true, true);
        let s = plan(&c, "procedureTwo", &json!({"args": [9]})).unwrap();
        assert_eq!(
            (s.sql.as_str(), s.args.clone()),
            ("{CALL procedureTwo (?)}", vec![json!(9)])
        );
        let s = plan(
            &c,
            "adhoc",
            &json!({"query": "INSERT INTO t VALUES (?)", "args": [5]}),
        )
        .unwrap();
        assert_eq!(s.sql, "INSERT INTO t VALUES (?)");
        let s = plan(&c, "doIt", &Json::Null).unwrap();
        assert_eq!(s.sql, "{CALL doIt}");
        assert!(matches!(
            plan(&c, "x}; DROP", &Json::Null),
            Err(PlanError::BadParams(_))
        ));
    }

    #[test]
    fn reserved_rpc() {
        let c = cfg(false, false);
        let s = plan(
            &c,
            "get",
            &json!("query=SELECT v FROM t WHERE id = 1;with_result=true;"),
        )
        .unwrap();
        assert_eq!(s.sql, "SELECT v FROM t WHERE id = 1");
        assert!(s.with_result && s.reserved);
        let s = plan(&c, "set", &json!("procedure_name=setIt;value=a,2;")).unwrap();
        assert_eq!(s.sql, "{CALL setIt (?,?)}");
        assert_eq!(s.args, vec![json!("a"), json!("2")]);
        assert!(matches!(
            plan(&c, "set", &json!("")),
            Err(PlanError::BadParams(_))
        ));
        assert!(matches!(
            plan(&c, "set", &json!({"a": 1})),
            Err(PlanError::BadParams(_))
        ));
    }
}
