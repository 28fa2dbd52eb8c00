//! A small, safe expression language for the strings upstream hands to Python's `eval`.
//!
//! Upstream evaluates several configuration strings as Python code (ODBC `mapping.device.name`,
//! `nameExpression` and `value`; CAN `expression` and `dataExpression`): any code runs with the
//! gateway's rights. tbgw reads the same strings with the Python *expression* subset below,
//! parsed once (at configuration time, so `tbgw check` names what it cannot read) into an
//! [`Expr`] and evaluated against a variable lookup ([`Vars`]). Nothing can import, open, call
//! arbitrary functions, read attributes or loop without bound.
//!
//! ```
//! use std::collections::HashMap;
//! use tbgw::eval::{Expr, Val};
//! let e = Expr::parse("'ODBC ' + entity_id")?;
//! let row = HashMap::from([("entity_id".to_string(), Val::Str("a1".into()))]);
//! assert_eq!(e.eval(&row)?, Val::Str("ODBC a1".into()));
//! let first = Expr::parse("[i for i in [s, n] if i is not None][0]")?;
//! let row = HashMap::from([("s".to_string(), Val::None), ("n".to_string(), Val::Int(7))]);
//! assert_eq!(first.eval(&row)?, Val::Int(7));
//! # Ok::<(), tbgw::eval::EvalError>(())
//! ```
//!
//! # The subset
//!
//! * Values: `None`, booleans, 64-bit integers, 64-bit floats, strings, lists.
//! * Literals: `None`, `True`, `False`; integers `12`, `0x1F`, `0o17`, `0b0100`, `1_000`;
//!   floats `1.5`, `.5`, `1e3`; strings in `'…'` or `"…"` with the usual backslash escapes
//!   (adjacent strings join); lists `[a, b]`.
//! * Names: variables from the lookup (ODBC: the row's columns; CAN: `value` and the RPC
//!   parameters). An unknown name is an evaluation error.
//! * Operators, with Python's precedence and meaning: `x if c else y`, `or`, `and`, `not`,
//!   comparisons `== != < <= > >= in not in is is not` (chains like `0 < x < 10` work),
//!   `| ^ &`, `<< >>`, `+ -` (numbers; string and list concatenation), `* / // %`
//!   (`str * int` repeats), unary `- + ~`, `**`; indexing `x[i]` (negative counts from the
//!   end) and slicing `x[a:b]` of strings and lists.
//! * List comprehensions with one `for` and any number of `if`s: `[i for i in xs if i]`.
//! * Functions: `str int float bool abs round min max len` (as in Python; `int("0x1f", 16)`
//!   takes a base), and the string methods `upper lower strip lstrip rstrip replace startswith
//!   endswith`.
//!
//! Differences from Python: integers are 64-bit (overflow is an error, not a big integer);
//! `str(float)` may differ from Python in the last digit for very large or small floats;
//! results longer than 1 MiB are an error. Everything else (attribute access, other calls,
//! lambdas, dicts, sets, f-strings, assignment) is rejected when the expression is parsed.

mod parse;
mod run;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use crate::model::Value;

/// A value an expression computes with (Python's `None`, `bool`, `int`, `float`, `str`, `list`).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// Python's `None`: an SQL NULL, a missing value.
    None,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    List(Vec<Val>),
}

impl Val {
    /// Python's truthiness: `None`, `False`, `0`, `0.0`, `""` and `[]` are false.
    pub fn truthy(&self) -> bool {
        match self {
            Val::None => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::List(l) => !l.is_empty(),
        }
    }

    /// Python's `str()` of this value (`None`, `True`, `1.0`, `['a', 1]`).
    pub fn to_py_string(&self) -> String {
        run::py_str(self)
    }

    /// This value as a datapoint value; `None` for [`Val::None`] (a datapoint that is skipped).
    /// Lists become JSON arrays.
    pub fn into_value(self) -> Option<Value> {
        Some(match self {
            Val::None => return None,
            Val::Bool(b) => Value::Bool(b),
            Val::Int(i) => Value::Int(i),
            Val::Float(f) => Value::Float(f),
            Val::Str(s) => Value::String(s),
            Val::List(_) => Value::Json(self.to_json()),
        })
    }

    /// A datapoint value as an expression value (JSON arrays become lists, other JSON `None`
    /// for `null` and its text otherwise).
    pub fn from_value(v: &Value) -> Val {
        match v {
            Value::Bool(b) => Val::Bool(*b),
            Value::Int(i) => Val::Int(*i),
            Value::Float(f) => Val::Float(*f),
            Value::String(s) => Val::Str(s.clone()),
            Value::Json(j) => Val::from_json(j),
        }
    }

    /// A JSON value as an expression value (objects become their JSON text).
    pub fn from_json(j: &serde_json::Value) -> Val {
        match j {
            serde_json::Value::Null => Val::None,
            serde_json::Value::Bool(b) => Val::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => Val::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Val::Str(s.clone()),
            serde_json::Value::Array(a) => Val::List(a.iter().map(Val::from_json).collect()),
            other => Val::Str(other.to_string()),
        }
    }

    /// This value as JSON (`None` is `null`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Val::None => serde_json::Value::Null,
            Val::Bool(b) => (*b).into(),
            Val::Int(i) => (*i).into(),
            Val::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Val::Str(s) => s.clone().into(),
            Val::List(l) => l.iter().map(Val::to_json).collect(),
        }
    }
}

/// Where an expression reads its variables.
pub trait Vars {
    /// The value of `name`, `None` when there is no such variable (an evaluation error).
    fn get(&self, name: &str) -> Option<Val>;
}

impl Vars for HashMap<String, Val> {
    fn get(&self, name: &str) -> Option<Val> {
        HashMap::get(self, name).cloned()
    }
}

impl<F: Fn(&str) -> Option<Val>> Vars for F {
    fn get(&self, name: &str) -> Option<Val> {
        self(name)
    }
}

/// An error reading or evaluating an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The text is not in the supported subset.
    #[error("cannot read expression {src:?}: {reason} at byte {pos}")]
    Parse {
        /// The expression text.
        src: String,
        /// Byte offset of the problem.
        pos: usize,
        /// What is wrong.
        reason: String,
    },
    /// A name the lookup does not know.
    #[error("name '{0}' is not defined")]
    UnknownName(String),
    /// An operation on values of the wrong type (Python's `TypeError`/`ValueError`).
    #[error("{0}")]
    Type(String),
    /// Division or modulo by zero.
    #[error("division by zero")]
    ZeroDivision,
    /// An index outside a string or list.
    #[error("index out of range")]
    Index,
    /// An integer result outside 64 bits.
    #[error("integer overflow")]
    Overflow,
    /// A string or list result over the size limit.
    #[error("result too large")]
    TooLarge,
}

/// A parsed expression: parse once with [`Expr::parse`], evaluate often with [`Expr::eval`].
#[derive(Debug, Clone)]
pub struct Expr {
    src: String,
    node: parse::Node,
}

impl Expr {
    /// Parses `src`; an error names the byte offset and what is wrong.
    pub fn parse(src: &str) -> Result<Expr, EvalError> {
        let node = parse::parse(src)?;
        Ok(Expr {
            src: src.to_string(),
            node,
        })
    }

    /// Evaluates against `vars`.
    pub fn eval(&self, vars: &dyn Vars) -> Result<Val, EvalError> {
        run::eval(&self.node, &run::Scope::root(vars))
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// The identifier when the whole expression is a bare name (`postgres`, `value`).
    pub fn as_name(&self) -> Option<&str> {
        match &self.node {
            parse::Node::Name(n) => Some(n),
            _ => None,
        }
    }

    /// The free variable names the expression reads (comprehension variables excluded),
    /// each once, in order of first appearance.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        parse::free_names(&self.node, &mut Vec::new(), &mut out);
        out
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.src == other.src
    }
}
