//! The evaluator: Python semantics over [`Val`].

use std::cmp::Ordering;

use super::parse::{BinOp, CmpOp, Func, Method, Node, UnOp};
use super::{EvalError, Val, Vars};

/// Largest string or list an expression may build (bytes / items).
const MAX_LEN: usize = 1 << 20;

/// Variables: the caller's lookup plus comprehension bindings.
pub(super) struct Scope<'a> {
    vars: &'a dyn Vars,
    local: Option<(&'a str, &'a Val, &'a Scope<'a>)>,
}

impl<'a> Scope<'a> {
    pub(super) fn root(vars: &'a dyn Vars) -> Self {
        Scope { vars, local: None }
    }
    fn get(&self, name: &str) -> Option<Val> {
        match self.local {
            Some((n, v, _)) if n == name => Some(v.clone()),
            Some((_, _, parent)) => parent.get(name),
            None => self.vars.get(name),
        }
    }
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::None => "NoneType",
        Val::Bool(_) => "bool",
        Val::Int(_) => "int",
        Val::Float(_) => "float",
        Val::Str(_) => "str",
        Val::List(_) => "list",
    }
}

fn type_err(op: &str, a: &Val, b: &Val) -> EvalError {
    EvalError::Type(format!(
        "unsupported operand types for {op}: '{}' and '{}'",
        type_name(a),
        type_name(b)
    ))
}

/// A number view: bools count as integers, as in Python.
enum Num {
    I(i64),
    F(f64),
}

fn num(v: &Val) -> Option<Num> {
    match v {
        Val::Bool(b) => Some(Num::I(*b as i64)),
        Val::Int(i) => Some(Num::I(*i)),
        Val::Float(f) => Some(Num::F(*f)),
        _ => None,
    }
}

fn as_f64(n: &Num) -> f64 {
    match n {
        Num::I(i) => *i as f64,
        Num::F(f) => *f,
    }
}

fn check_len(n: usize) -> Result<(), EvalError> {
    if n > MAX_LEN {
        Err(EvalError::TooLarge)
    } else {
        Ok(())
    }
}

pub(super) fn eval(n: &Node, s: &Scope<'_>) -> Result<Val, EvalError> {
    match n {
        Node::Const(v) => Ok(v.clone()),
        Node::Name(name) => s
            .get(name)
            .ok_or_else(|| EvalError::UnknownName(name.clone())),
        Node::List(items) => Ok(Val::List(
            items.iter().map(|i| eval(i, s)).collect::<Result<_, _>>()?,
        )),
        Node::Unary(op, a) => unary(*op, eval(a, s)?),
        Node::Binary(op, a, b) => binary(*op, eval(a, s)?, eval(b, s)?),
        Node::And(a, b) => {
            let l = eval(a, s)?;
            if l.truthy() {
                eval(b, s)
            } else {
                Ok(l)
            }
        }
        Node::Or(a, b) => {
            let l = eval(a, s)?;
            if l.truthy() {
                Ok(l)
            } else {
                eval(b, s)
            }
        }
        Node::Compare(first, rest) => {
            let mut l = eval(first, s)?;
            for (op, rn) in rest {
                let r = eval(rn, s)?;
                if !compare(*op, &l, &r)? {
                    return Ok(Val::Bool(false));
                }
                l = r;
            }
            Ok(Val::Bool(true))
        }
        Node::IfElse { cond, then, other } => {
            if eval(cond, s)?.truthy() {
                eval(then, s)
            } else {
                eval(other, s)
            }
        }
        Node::Index(a, i) => index(eval(a, s)?, eval(i, s)?),
        Node::Slice(a, lo, hi) => {
            let v = eval(a, s)?;
            let lo = lo.as_ref().map(|x| eval(x, s)).transpose()?;
            let hi = hi.as_ref().map(|x| eval(x, s)).transpose()?;
            slice(v, lo, hi)
        }
        Node::Call(f, args) => {
            let args = args
                .iter()
                .map(|a| eval(a, s))
                .collect::<Result<Vec<_>, _>>()?;
            call(*f, args)
        }
        Node::Method(a, m, args) => {
            let target = eval(a, s)?;
            let args = args
                .iter()
                .map(|a| eval(a, s))
                .collect::<Result<Vec<_>, _>>()?;
            method(target, *m, args)
        }
        Node::Comp {
            elt,
            var,
            iter,
            conds,
        } => {
            let items = match eval(iter, s)? {
                Val::List(l) => l,
                Val::Str(st) => st.chars().map(|c| Val::Str(c.to_string())).collect(),
                other => {
                    return Err(EvalError::Type(format!(
                        "'{}' object is not iterable",
                        type_name(&other)
                    )))
                }
            };
            let mut out = Vec::new();
            'items: for item in &items {
                let inner = Scope {
                    vars: s.vars,
                    local: Some((var.as_str(), item, s)),
                };
                for c in conds {
                    if !eval(c, &inner)?.truthy() {
                        continue 'items;
                    }
                }
                out.push(eval(elt, &inner)?);
            }
            Ok(Val::List(out))
        }
    }
}

fn unary(op: UnOp, v: Val) -> Result<Val, EvalError> {
    match (op, num(&v)) {
        (UnOp::Not, _) => Ok(Val::Bool(!v.truthy())),
        (UnOp::Neg, Some(Num::I(i))) => i.checked_neg().map(Val::Int).ok_or(EvalError::Overflow),
        (UnOp::Neg, Some(Num::F(f))) => Ok(Val::Float(-f)),
        (UnOp::Pos, Some(Num::I(i))) => Ok(Val::Int(i)),
        (UnOp::Pos, Some(Num::F(f))) => Ok(Val::Float(f)),
        (UnOp::Invert, Some(Num::I(i))) => Ok(Val::Int(!i)),
        _ => Err(EvalError::Type(format!(
            "bad operand type for unary operator: '{}'",
            type_name(&v)
        ))),
    }
}

fn floor_mod_f(a: f64, b: f64) -> f64 {
    let r = a % b;
    if r != 0.0 && (r < 0.0) != (b < 0.0) {
        r + b
    } else {
        r
    }
}

fn binary(op: BinOp, a: Val, b: Val) -> Result<Val, EvalError> {
    let sym = match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::FloorDiv => "//",
        BinOp::Mod => "%",
        BinOp::Pow => "**",
        BinOp::BitAnd => "&",
        BinOp::BitOr => "|",
        BinOp::BitXor => "^",
        BinOp::Shl => "<<",
        BinOp::Shr => ">>",
    };
    // Sequences first.
    match (op, &a, &b) {
        (BinOp::Add, Val::Str(x), Val::Str(y)) => {
            check_len(x.len() + y.len())?;
            return Ok(Val::Str(format!("{x}{y}")));
        }
        (BinOp::Add, Val::List(x), Val::List(y)) => {
            check_len(x.len() + y.len())?;
            let mut l = x.clone();
            l.extend(y.iter().cloned());
            return Ok(Val::List(l));
        }
        (BinOp::Mul, Val::Str(x), Val::Int(_) | Val::Bool(_))
        | (BinOp::Mul, Val::Int(_) | Val::Bool(_), Val::Str(x)) => {
            let n = match num(if matches!(a, Val::Str(_)) { &b } else { &a }) {
                Some(Num::I(n)) => n.max(0) as usize,
                _ => 0,
            };
            check_len(x.len().saturating_mul(n))?;
            return Ok(Val::Str(x.repeat(n)));
        }
        (BinOp::Mod, Val::Str(_), _) => {
            return Err(EvalError::Type("%-formatting is not supported".into()))
        }
        _ => {}
    }
    let (x, y) = match (num(&a), num(&b)) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(type_err(sym, &a, &b)),
    };
    if let (Num::I(x), Num::I(y)) = (&x, &y) {
        let (x, y) = (*x, *y);
        let r = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::Div => {
                if y == 0 {
                    return Err(EvalError::ZeroDivision);
                }
                return Ok(Val::Float(x as f64 / y as f64));
            }
            BinOp::FloorDiv | BinOp::Mod => {
                if y == 0 {
                    return Err(EvalError::ZeroDivision);
                }
                let d = x.checked_div_euclid(y).ok_or(EvalError::Overflow)?;
                let m = x.rem_euclid(y);
                // Python floors toward negative infinity; euclid differs when y < 0.
                let (d, m) = if y < 0 && m != 0 {
                    (d - 1, m + y)
                } else {
                    (d, m)
                };
                Some(if op == BinOp::FloorDiv { d } else { m })
            }
            BinOp::Pow => {
                if y < 0 {
                    return Ok(Val::Float((x as f64).powf(y as f64)));
                }
                u32::try_from(y).ok().and_then(|e| x.checked_pow(e))
            }
            BinOp::BitAnd => Some(x & y),
            BinOp::BitOr => Some(x | y),
            BinOp::BitXor => Some(x ^ y),
            BinOp::Shl => {
                if y < 0 {
                    return Err(EvalError::Type("negative shift count".into()));
                }
                u32::try_from(y)
                    .ok()
                    .filter(|s| *s < 64)
                    .and_then(|s| x.checked_shl(s))
                    .filter(|r| (r >> y) == x)
            }
            BinOp::Shr => {
                if y < 0 {
                    return Err(EvalError::Type("negative shift count".into()));
                }
                Some(x >> y.min(63))
            }
        };
        // Bool & bool stays bool, as in Python.
        if matches!(
            (op, &a, &b),
            (
                BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor,
                Val::Bool(_),
                Val::Bool(_)
            )
        ) {
            return Ok(Val::Bool(r.unwrap_or(0) != 0));
        }
        return r.map(Val::Int).ok_or(EvalError::Overflow);
    }
    let (x, y) = (as_f64(&x), as_f64(&y));
    let r = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div | BinOp::FloorDiv | BinOp::Mod if y == 0.0 => {
            return Err(EvalError::ZeroDivision)
        }
        BinOp::Div => x / y,
        BinOp::FloorDiv => (x / y).floor(),
        BinOp::Mod => floor_mod_f(x, y),
        BinOp::Pow => x.powf(y),
        _ => return Err(type_err(sym, &a, &b)),
    };
    Ok(Val::Float(r))
}

fn py_eq(a: &Val, b: &Val) -> bool {
    match (num(a), num(b)) {
        (Some(Num::I(x)), Some(Num::I(y))) => x == y,
        (Some(x), Some(y)) => as_f64(&x) == as_f64(&y),
        _ => match (a, b) {
            (Val::List(x), Val::List(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
            }
            _ => a == b,
        },
    }
}

fn order(a: &Val, b: &Val) -> Result<Ordering, EvalError> {
    match (num(a), num(b)) {
        (Some(Num::I(x)), Some(Num::I(y))) => Ok(x.cmp(&y)),
        (Some(x), Some(y)) => as_f64(&x)
            .partial_cmp(&as_f64(&y))
            .ok_or_else(|| EvalError::Type("comparison with NaN".into())),
        _ => match (a, b) {
            (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
            (Val::List(x), Val::List(y)) => {
                for (p, q) in x.iter().zip(y) {
                    if !py_eq(p, q) {
                        return order(p, q);
                    }
                }
                Ok(x.len().cmp(&y.len()))
            }
            _ => Err(EvalError::Type(format!(
                "'<' not supported between instances of '{}' and '{}'",
                type_name(a),
                type_name(b)
            ))),
        },
    }
}

fn compare(op: CmpOp, a: &Val, b: &Val) -> Result<bool, EvalError> {
    Ok(match op {
        CmpOp::Eq => py_eq(a, b),
        CmpOp::Ne => !py_eq(a, b),
        CmpOp::Lt => order(a, b)? == Ordering::Less,
        CmpOp::Le => order(a, b)? != Ordering::Greater,
        CmpOp::Gt => order(a, b)? == Ordering::Greater,
        CmpOp::Ge => order(a, b)? != Ordering::Less,
        CmpOp::Is => same(a, b),
        CmpOp::IsNot => !same(a, b),
        CmpOp::In => contains(b, a)?,
        CmpOp::NotIn => !contains(b, a)?,
    })
}

/// `is`: identity for the singletons (`None`, `True`, `False`), equality of same-typed
/// values otherwise (the nearest meaning without object identity).
fn same(a: &Val, b: &Val) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b) && a == b
}

fn contains(hay: &Val, needle: &Val) -> Result<bool, EvalError> {
    match (hay, needle) {
        (Val::Str(h), Val::Str(n)) => Ok(h.contains(n.as_str())),
        (Val::List(l), n) => Ok(l.iter().any(|x| py_eq(x, n))),
        _ => Err(EvalError::Type(format!(
            "'in' needs a string or list, not '{}'",
            type_name(hay)
        ))),
    }
}

fn norm_index(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if i < 0 { i + len } else { i };
    (0..len).contains(&i).then_some(i as usize)
}

fn int_of(v: &Val) -> Result<i64, EvalError> {
    match num(v) {
        Some(Num::I(i)) => Ok(i),
        _ => Err(EvalError::Type(format!(
            "indices must be integers, not '{}'",
            type_name(v)
        ))),
    }
}

fn index(v: Val, i: Val) -> Result<Val, EvalError> {
    let i = int_of(&i)?;
    match v {
        Val::List(mut l) => {
            let k = norm_index(i, l.len()).ok_or(EvalError::Index)?;
            Ok(l.swap_remove(k))
        }
        Val::Str(s) => {
            let chars: Vec<char> = s.chars().collect();
            let k = norm_index(i, chars.len()).ok_or(EvalError::Index)?;
            Ok(Val::Str(chars[k].to_string()))
        }
        other => Err(EvalError::Type(format!(
            "'{}' object is not subscriptable",
            type_name(&other)
        ))),
    }
}

fn slice_bounds(lo: Option<Val>, hi: Option<Val>, len: usize) -> Result<(usize, usize), EvalError> {
    let clamp = |v: Option<Val>, default: usize| -> Result<usize, EvalError> {
        match v {
            None | Some(Val::None) => Ok(default),
            Some(x) => {
                let i = int_of(&x)?;
                let l = len as i64;
                let i = if i < 0 { (i + l).max(0) } else { i.min(l) };
                Ok(i as usize)
            }
        }
    };
    let a = clamp(lo, 0)?;
    let b = clamp(hi, len)?;
    Ok((a, b.max(a)))
}

fn slice(v: Val, lo: Option<Val>, hi: Option<Val>) -> Result<Val, EvalError> {
    match v {
        Val::List(l) => {
            let (a, b) = slice_bounds(lo, hi, l.len())?;
            Ok(Val::List(l[a..b].to_vec()))
        }
        Val::Str(s) => {
            let chars: Vec<char> = s.chars().collect();
            let (a, b) = slice_bounds(lo, hi, chars.len())?;
            Ok(Val::Str(chars[a..b].iter().collect()))
        }
        other => Err(EvalError::Type(format!(
            "'{}' object is not subscriptable",
            type_name(&other)
        ))),
    }
}

/// Python's `repr()` of a float (shortest round-trip text, `.0` for integral values).
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Python: 1e+16, 1.5e-05
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn py_repr(v: &Val) -> String {
    match v {
        Val::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => py_str(other),
    }
}

pub(super) fn py_str(v: &Val) -> String {
    match v {
        Val::None => "None".into(),
        Val::Bool(true) => "True".into(),
        Val::Bool(false) => "False".into(),
        Val::Int(i) => i.to_string(),
        Val::Float(f) => py_float(*f),
        Val::Str(s) => s.clone(),
        Val::List(l) => format!("[{}]", l.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
    }
}

fn parse_int(s: &str, base: u32) -> Result<i64, EvalError> {
    let t = s.trim().replace('_', "");
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let lower = body.to_ascii_lowercase();
    let (base, digits) = match (base, lower.get(..2)) {
        (16 | 0, Some("0x")) => (16, &body[2..]),
        (8 | 0, Some("0o")) => (8, &body[2..]),
        (2 | 0, Some("0b")) => (2, &body[2..]),
        (0, _) => (10, body),
        (b, _) => (b, body),
    };
    let bad = || EvalError::Type(format!("invalid literal for int() with base {base}: {s:?}"));
    if !(2..=36).contains(&base) || digits.is_empty() {
        return Err(bad());
    }
    let v = i64::from_str_radix(digits, base).map_err(|_| bad())?;
    Ok(if neg { -v } else { v })
}

fn call(f: Func, mut args: Vec<Val>) -> Result<Val, EvalError> {
    let arg = |args: &[Val], i: usize| args.get(i).cloned();
    match f {
        Func::Str => Ok(Val::Str(
            arg(&args, 0).map(|v| py_str(&v)).unwrap_or_default(),
        )),
        Func::Bool => Ok(Val::Bool(arg(&args, 0).is_some_and(|v| v.truthy()))),
        Func::Int => match (arg(&args, 0), arg(&args, 1)) {
            (None, _) => Ok(Val::Int(0)),
            (Some(Val::Str(s)), base) => {
                let base = match base {
                    Some(b) => u32::try_from(int_of(&b)?).map_err(|_| {
                        EvalError::Type("int() base must be >= 2 and <= 36, or 0".into())
                    })?,
                    None => 10,
                };
                parse_int(&s, base).map(Val::Int)
            }
            (Some(_), Some(_)) => Err(EvalError::Type(
                "int() can't convert non-string with explicit base".into(),
            )),
            (Some(v), None) => match num(&v) {
                Some(Num::I(i)) => Ok(Val::Int(i)),
                Some(Num::F(x)) => {
                    let t = x.trunc();
                    if t.is_finite() && t >= i64::MIN as f64 && t < i64::MAX as f64 {
                        Ok(Val::Int(t as i64))
                    } else {
                        Err(EvalError::Overflow)
                    }
                }
                None => Err(EvalError::Type(format!(
                    "int() argument must be a string or a number, not '{}'",
                    type_name(&v)
                ))),
            },
        },
        Func::Float => match arg(&args, 0) {
            None => Ok(Val::Float(0.0)),
            Some(Val::Str(s)) => {
                let t = s.trim().to_ascii_lowercase();
                let t = match t.as_str() {
                    "inf" | "+inf" | "infinity" => "inf",
                    "-inf" | "-infinity" => "-inf",
                    other => other,
                };
                t.replace('_', "")
                    .parse::<f64>()
                    .map(Val::Float)
                    .map_err(|_| {
                        EvalError::Type(format!("could not convert string to float: {s:?}"))
                    })
            }
            Some(v) => match num(&v) {
                Some(n) => Ok(Val::Float(as_f64(&n))),
                None => Err(EvalError::Type(format!(
                    "float() argument must be a string or a number, not '{}'",
                    type_name(&v)
                ))),
            },
        },
        Func::Abs => match args.pop().as_ref().and_then(num) {
            Some(Num::I(i)) => i.checked_abs().map(Val::Int).ok_or(EvalError::Overflow),
            Some(Num::F(f)) => Ok(Val::Float(f.abs())),
            None => Err(EvalError::Type("bad operand type for abs()".into())),
        },
        Func::Round => {
            let x = arg(&args, 0).and_then(|v| num(&v));
            let nd = match arg(&args, 1) {
                None | Some(Val::None) => None,
                Some(v) => Some(int_of(&v)?),
            };
            match (x, nd) {
                (Some(Num::I(i)), _) => Ok(Val::Int(i)),
                (Some(Num::F(f)), None) => {
                    let r = f.round_ties_even();
                    if r.is_finite() && r >= i64::MIN as f64 && r < i64::MAX as f64 {
                        Ok(Val::Int(r as i64))
                    } else {
                        Err(EvalError::Overflow)
                    }
                }
                (Some(Num::F(f)), Some(n)) => {
                    let n = n.clamp(-308, 308) as i32;
                    let p = 10f64.powi(n);
                    Ok(Val::Float((f * p).round_ties_even() / p))
                }
                (None, _) => Err(EvalError::Type("round() needs a number".into())),
            }
        }
        Func::Min | Func::Max => {
            let items = if args.len() == 1 {
                match args.pop() {
                    Some(Val::List(l)) => l,
                    Some(Val::Str(s)) => s.chars().map(|c| Val::Str(c.to_string())).collect(),
                    Some(other) => {
                        return Err(EvalError::Type(format!(
                            "'{}' object is not iterable",
                            type_name(&other)
                        )))
                    }
                    None => Vec::new(),
                }
            } else {
                args
            };
            let mut it = items.into_iter();
            let mut best = it
                .next()
                .ok_or_else(|| EvalError::Type("min()/max() of an empty sequence".into()))?;
            for x in it {
                let o = order(&x, &best)?;
                if (f == Func::Min && o == Ordering::Less)
                    || (f == Func::Max && o == Ordering::Greater)
                {
                    best = x;
                }
            }
            Ok(best)
        }
        Func::Len => match args.pop() {
            Some(Val::Str(s)) => Ok(Val::Int(s.chars().count() as i64)),
            Some(Val::List(l)) => Ok(Val::Int(l.len() as i64)),
            Some(other) => Err(EvalError::Type(format!(
                "object of type '{}' has no len()",
                type_name(&other)
            ))),
            None => Err(EvalError::Type("len() takes one argument".into())),
        },
    }
}

fn method(target: Val, m: Method, args: Vec<Val>) -> Result<Val, EvalError> {
    let s = match target {
        Val::Str(s) => s,
        other => {
            return Err(EvalError::Type(format!(
                "'{}' object has no string methods",
                type_name(&other)
            )))
        }
    };
    let str_arg = |i: usize| -> Result<Option<String>, EvalError> {
        match args.get(i) {
            None | Some(Val::None) => Ok(None),
            Some(Val::Str(a)) => Ok(Some(a.clone())),
            Some(other) => Err(EvalError::Type(format!(
                "must be str, not {}",
                type_name(other)
            ))),
        }
    };
    let strip_set = |a: Option<String>| -> Box<dyn Fn(char) -> bool> {
        match a {
            Some(set) => Box::new(move |c| set.contains(c)),
            None => Box::new(char::is_whitespace),
        }
    };
    Ok(match m {
        Method::Upper => Val::Str(s.to_uppercase()),
        Method::Lower => Val::Str(s.to_lowercase()),
        Method::Strip => {
            let f = strip_set(str_arg(0)?);
            Val::Str(s.trim_matches(&*f).to_string())
        }
        Method::Lstrip => {
            let f = strip_set(str_arg(0)?);
            Val::Str(s.trim_start_matches(&*f).to_string())
        }
        Method::Rstrip => {
            let f = strip_set(str_arg(0)?);
            Val::Str(s.trim_end_matches(&*f).to_string())
        }
        Method::Replace => {
            let (from, to) = (
                str_arg(0)?.unwrap_or_default(),
                str_arg(1)?.unwrap_or_default(),
            );
            let r = if from.is_empty() {
                s.clone()
            } else {
                s.replace(&from, &to)
            };
            check_len(r.len())?;
            Val::Str(r)
        }
        Method::Startswith => Val::Bool(s.starts_with(&str_arg(0)?.unwrap_or_default())),
        Method::Endswith => Val::Bool(s.ends_with(&str_arg(0)?.unwrap_or_default())),
    })
}
