//! Tokenizer and recursive-descent parser (Python's expression grammar, restricted).

use super::{EvalError, Val};

/// Deepest nesting the parser accepts (keeps evaluation's recursion bounded too).
const MAX_DEPTH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Pow,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Is,
    IsNot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnOp {
    Neg,
    Pos,
    Invert,
    Not,
}

/// The built-in functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    Str,
    Int,
    Float,
    Bool,
    Abs,
    Round,
    Min,
    Max,
    Len,
}

/// The string methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Upper,
    Lower,
    Strip,
    Lstrip,
    Rstrip,
    Replace,
    Startswith,
    Endswith,
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    Const(Val),
    Name(String),
    List(Vec<Node>),
    Unary(UnOp, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    /// `first op1 x1 op2 x2 …`
    Compare(Box<Node>, Vec<(CmpOp, Node)>),
    IfElse {
        cond: Box<Node>,
        then: Box<Node>,
        other: Box<Node>,
    },
    Index(Box<Node>, Box<Node>),
    Slice(Box<Node>, Option<Box<Node>>, Option<Box<Node>>),
    Call(Func, Vec<Node>),
    Method(Box<Node>, Method, Vec<Node>),
    Comp {
        elt: Box<Node>,
        var: String,
        iter: Box<Node>,
        conds: Vec<Node>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
    Op(&'static str),
    Eof,
}

const OPS: &[&str] = &[
    "**", "//", "<<", ">>", "<=", ">=", "==", "!=", "+", "-", "*", "/", "%", "&", "|", "^", "~",
    "<", ">", "(", ")", "[", "]", ",", ":", ".",
];

fn err(src: &str, pos: usize, reason: impl Into<String>) -> EvalError {
    EvalError::Parse {
        src: src.to_string(),
        pos,
        reason: reason.into(),
    }
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, EvalError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            // Identifiers (non-ASCII letters allowed, as in Python 3).
            let rest = &src[i..];
            let len = rest
                .char_indices()
                .find(|(_, ch)| !(ch.is_alphanumeric() || *ch == '_'))
                .map(|(n, _)| n)
                .unwrap_or(rest.len());
            if len == 0 {
                return Err(err(src, i, "unexpected character"));
            }
            out.push((Tok::Name(rest[..len].to_string()), start));
            i += len;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let (tok, len) = number(&src[i..]).ok_or_else(|| err(src, i, "invalid number"))?;
            out.push((tok, start));
            i += len;
        } else if c == b'\'' || c == b'"' {
            let (s, len) = string(&src[i..]).ok_or_else(|| err(src, i, "unterminated string"))?;
            out.push((Tok::Str(s), start));
            i += len;
        } else if let Some(op) = OPS.iter().find(|op| src[i..].starts_with(**op)) {
            out.push((Tok::Op(op), start));
            i += op.len();
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(err(src, i, format!("unexpected character {ch:?}")));
        }
    }
    out.push((Tok::Eof, src.len()));
    Ok(out)
}

fn number(s: &str) -> Option<(Tok, usize)> {
    let b = s.as_bytes();
    let radix = match (b.first(), b.get(1).map(|c| c.to_ascii_lowercase())) {
        (Some(b'0'), Some(b'x')) => 16,
        (Some(b'0'), Some(b'o')) => 8,
        (Some(b'0'), Some(b'b')) => 2,
        _ => 10,
    };
    if radix != 10 {
        let len = 2 + s[2..]
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
            .count();
        let digits: String = s[2..len].chars().filter(|c| *c != '_').collect();
        return i64::from_str_radix(&digits, radix)
            .ok()
            .map(|v| (Tok::Int(v), len));
    }
    let mut len = 0;
    let mut float = false;
    let mut seen_e = false;
    while len < b.len() {
        let c = b[len];
        if c.is_ascii_digit() || c == b'_' {
            len += 1;
        } else if c == b'.' && !float && !seen_e {
            float = true;
            len += 1;
        } else if (c == b'e' || c == b'E') && !seen_e {
            seen_e = true;
            float = true;
            len += 1;
            if matches!(b.get(len), Some(b'+') | Some(b'-')) {
                len += 1;
            }
        } else {
            break;
        }
    }
    if b.get(len)
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
    {
        return None;
    }
    let text: String = s[..len].chars().filter(|c| *c != '_').collect();
    if float {
        text.parse::<f64>().ok().map(|f| (Tok::Float(f), len))
    } else {
        text.parse::<i64>().ok().map(|v| (Tok::Int(v), len))
    }
}

fn string(s: &str) -> Option<(String, usize)> {
    let quote = s.chars().next()?;
    let mut out = String::new();
    let mut it = s.char_indices().skip(1);
    while let Some((i, c)) = it.next() {
        if c == quote {
            return Some((out, i + 1));
        }
        if c == '\\' {
            let (_, e) = it.next()?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                '\\' | '\'' | '"' => out.push(e),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else if c == '\n' {
            return None;
        } else {
            out.push(c);
        }
    }
    None
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

pub(super) fn parse(src: &str) -> Result<Node, EvalError> {
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
    };
    if p.peek() == &Tok::Eof {
        return Err(err(src, 0, "empty expression"));
    }
    let node = p.test()?;
    if p.peek() != &Tok::Eof {
        return Err(p.error("unexpected text after the expression"));
    }
    Ok(node)
}

fn is_keyword(n: &str) -> bool {
    matches!(
        n,
        "and"
            | "or"
            | "not"
            | "in"
            | "is"
            | "if"
            | "else"
            | "for"
            | "lambda"
            | "True"
            | "False"
            | "None"
            | "import"
            | "yield"
            | "await"
            | "def"
            | "class"
            | "del"
            | "global"
    )
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn peek2(&self) -> &Tok {
        &self.toks[(self.pos + 1).min(self.toks.len() - 1)].0
    }
    fn at(&self) -> usize {
        self.toks[self.pos].1
    }
    fn bump(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn error(&self, reason: impl Into<String>) -> EvalError {
        err(self.src, self.at(), reason)
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Name(n) if n == kw)
    }
    fn expect_op(&mut self, op: &str) -> Result<(), EvalError> {
        if self.is_op(op) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(format!("expected `{op}`")))
        }
    }
    fn enter(&mut self) -> Result<(), EvalError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        Ok(())
    }

    /// `or_test ['if' or_test 'else' test]`
    fn test(&mut self) -> Result<Node, EvalError> {
        self.enter()?;
        let then = self.or_test()?;
        let node = if self.is_kw("if") {
            self.bump();
            let cond = self.or_test()?;
            if !self.is_kw("else") {
                return Err(self.error("expected `else`"));
            }
            self.bump();
            let other = self.test()?;
            Node::IfElse {
                cond: Box::new(cond),
                then: Box::new(then),
                other: Box::new(other),
            }
        } else {
            then
        };
        self.depth -= 1;
        Ok(node)
    }

    fn or_test(&mut self) -> Result<Node, EvalError> {
        let mut l = self.and_test()?;
        let depth = self.depth;
        while self.is_kw("or") {
            self.bump();
            self.enter()?;
            let r = self.and_test()?;
            l = Node::Or(Box::new(l), Box::new(r));
        }
        self.depth = depth;
        Ok(l)
    }

    fn and_test(&mut self) -> Result<Node, EvalError> {
        let mut l = self.not_test()?;
        let depth = self.depth;
        while self.is_kw("and") {
            self.bump();
            self.enter()?;
            let r = self.not_test()?;
            l = Node::And(Box::new(l), Box::new(r));
        }
        self.depth = depth;
        Ok(l)
    }

    fn not_test(&mut self) -> Result<Node, EvalError> {
        if self.is_kw("not") {
            self.bump();
            self.enter()?;
            let n = self.not_test()?;
            self.depth -= 1;
            return Ok(Node::Unary(UnOp::Not, Box::new(n)));
        }
        self.comparison()
    }

    fn comp_op(&mut self) -> Option<CmpOp> {
        let op = match self.peek() {
            Tok::Op("==") => CmpOp::Eq,
            Tok::Op("!=") => CmpOp::Ne,
            Tok::Op("<") => CmpOp::Lt,
            Tok::Op("<=") => CmpOp::Le,
            Tok::Op(">") => CmpOp::Gt,
            Tok::Op(">=") => CmpOp::Ge,
            Tok::Name(n) if n == "in" => CmpOp::In,
            Tok::Name(n) if n == "is" => {
                if matches!(self.peek2(), Tok::Name(m) if m == "not") {
                    self.bump();
                    CmpOp::IsNot
                } else {
                    CmpOp::Is
                }
            }
            Tok::Name(n) if n == "not" && matches!(self.peek2(), Tok::Name(m) if m == "in") => {
                self.bump();
                CmpOp::NotIn
            }
            _ => return None,
        };
        self.bump();
        Some(op)
    }

    fn comparison(&mut self) -> Result<Node, EvalError> {
        let first = self.bit_or()?;
        let mut rest = Vec::new();
        while let Some(op) = self.comp_op() {
            rest.push((op, self.bit_or()?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Node::Compare(Box::new(first), rest)
        })
    }

    fn binary_level(
        &mut self,
        ops: &[(&str, BinOp)],
        next: fn(&mut Self) -> Result<Node, EvalError>,
    ) -> Result<Node, EvalError> {
        let mut l = next(self)?;
        // Each operator nests the tree one level deeper (left-associative): count it, so a
        // long chain cannot overflow the evaluator's stack.
        let depth = self.depth;
        'outer: loop {
            for (text, op) in ops {
                if self.is_op(text) {
                    self.bump();
                    self.enter()?;
                    let r = next(self)?;
                    l = Node::Binary(*op, Box::new(l), Box::new(r));
                    continue 'outer;
                }
            }
            self.depth = depth;
            return Ok(l);
        }
    }

    fn bit_or(&mut self) -> Result<Node, EvalError> {
        self.binary_level(&[("|", BinOp::BitOr)], Self::bit_xor)
    }
    fn bit_xor(&mut self) -> Result<Node, EvalError> {
        self.binary_level(&[("^", BinOp::BitXor)], Self::bit_and)
    }
    fn bit_and(&mut self) -> Result<Node, EvalError> {
        self.binary_level(&[("&", BinOp::BitAnd)], Self::shift)
    }
    fn shift(&mut self) -> Result<Node, EvalError> {
        self.binary_level(&[("<<", BinOp::Shl), (">>", BinOp::Shr)], Self::arith)
    }
    fn arith(&mut self) -> Result<Node, EvalError> {
        self.binary_level(&[("+", BinOp::Add), ("-", BinOp::Sub)], Self::term)
    }
    fn term(&mut self) -> Result<Node, EvalError> {
        self.binary_level(
            &[
                ("*", BinOp::Mul),
                ("//", BinOp::FloorDiv),
                ("/", BinOp::Div),
                ("%", BinOp::Mod),
            ],
            Self::factor,
        )
    }

    fn factor(&mut self) -> Result<Node, EvalError> {
        let op = match self.peek() {
            Tok::Op("-") => Some(UnOp::Neg),
            Tok::Op("+") => Some(UnOp::Pos),
            Tok::Op("~") => Some(UnOp::Invert),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            self.enter()?;
            let n = self.factor()?;
            self.depth -= 1;
            return Ok(Node::Unary(op, Box::new(n)));
        }
        self.power()
    }

    fn power(&mut self) -> Result<Node, EvalError> {
        let base = self.postfix()?;
        if self.is_op("**") {
            self.bump();
            self.enter()?;
            let exp = self.factor()?;
            self.depth -= 1;
            return Ok(Node::Binary(BinOp::Pow, Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Node, EvalError> {
        let mut n = self.atom()?;
        let depth = self.depth;
        loop {
            if self.is_op("[") || self.is_op(".") {
                self.enter()?;
            }
            if self.is_op("[") {
                self.bump();
                self.enter()?;
                let lo = if self.is_op(":") {
                    None
                } else {
                    Some(Box::new(self.test()?))
                };
                if self.is_op(":") {
                    self.bump();
                    let hi = if self.is_op("]") {
                        None
                    } else {
                        Some(Box::new(self.test()?))
                    };
                    self.expect_op("]")?;
                    n = Node::Slice(Box::new(n), lo, hi);
                } else {
                    self.expect_op("]")?;
                    let idx = lo.ok_or_else(|| self.error("expected an index"))?;
                    n = Node::Index(Box::new(n), idx);
                }
                self.depth -= 1;
            } else if self.is_op(".") {
                self.bump();
                let at = self.at();
                let name = match self.bump() {
                    Tok::Name(name) => name,
                    _ => return Err(err(self.src, at, "expected a method name")),
                };
                let method = match name.as_str() {
                    "upper" => Method::Upper,
                    "lower" => Method::Lower,
                    "strip" => Method::Strip,
                    "lstrip" => Method::Lstrip,
                    "rstrip" => Method::Rstrip,
                    "replace" => Method::Replace,
                    "startswith" => Method::Startswith,
                    "endswith" => Method::Endswith,
                    _ => {
                        return Err(err(
                            self.src,
                            at,
                            format!("attribute `{name}` is not supported (only the string methods upper, lower, strip, lstrip, rstrip, replace, startswith, endswith)"),
                        ))
                    }
                };
                if !self.is_op("(") {
                    return Err(self.error(format!("expected `(` after method `{name}`")));
                }
                let args = self.args()?;
                let (min, max) = match method {
                    Method::Replace => (2, 2),
                    Method::Startswith | Method::Endswith => (1, 1),
                    Method::Strip | Method::Lstrip | Method::Rstrip => (0, 1),
                    Method::Upper | Method::Lower => (0, 0),
                };
                if args.len() < min || args.len() > max {
                    return Err(err(
                        self.src,
                        at,
                        format!("wrong number of arguments for `{name}`"),
                    ));
                }
                n = Node::Method(Box::new(n), method, args);
            } else if self.is_op("(") {
                return Err(self.error("only the built-in functions can be called"));
            } else {
                self.depth = depth;
                return Ok(n);
            }
        }
    }

    /// `( test, … )` after the callee; consumes both parentheses.
    fn args(&mut self) -> Result<Vec<Node>, EvalError> {
        self.expect_op("(")?;
        self.enter()?;
        let mut args = Vec::new();
        while !self.is_op(")") {
            args.push(self.test()?);
            if self.is_op(",") {
                self.bump();
            } else if !self.is_op(")") {
                return Err(self.error("expected `,` or `)`"));
            }
        }
        self.bump();
        self.depth -= 1;
        Ok(args)
    }

    fn atom(&mut self) -> Result<Node, EvalError> {
        let at = self.at();
        match self.bump() {
            Tok::Int(i) => Ok(Node::Const(Val::Int(i))),
            Tok::Float(f) => Ok(Node::Const(Val::Float(f))),
            Tok::Str(mut s) => {
                while let Tok::Str(more) = self.peek() {
                    s.push_str(more);
                    self.bump();
                }
                Ok(Node::Const(Val::Str(s)))
            }
            Tok::Name(n) => match n.as_str() {
                "True" => Ok(Node::Const(Val::Bool(true))),
                "False" => Ok(Node::Const(Val::Bool(false))),
                "None" => Ok(Node::Const(Val::None)),
                _ if is_keyword(&n) => Err(err(self.src, at, format!("unexpected `{n}`"))),
                _ if self.is_op("(") => {
                    let func = match n.as_str() {
                        "str" => Func::Str,
                        "int" => Func::Int,
                        "float" => Func::Float,
                        "bool" => Func::Bool,
                        "abs" => Func::Abs,
                        "round" => Func::Round,
                        "min" => Func::Min,
                        "max" => Func::Max,
                        "len" => Func::Len,
                        _ => {
                            return Err(err(
                                self.src,
                                at,
                                format!("unknown function `{n}` (supported: str, int, float, bool, abs, round, min, max, len)"),
                            ))
                        }
                    };
                    let args = self.args()?;
                    let ok = match func {
                        Func::Str | Func::Float | Func::Bool => args.len() <= 1,
                        Func::Int | Func::Round => args.len() <= 2,
                        Func::Abs | Func::Len => args.len() == 1,
                        Func::Min | Func::Max => !args.is_empty(),
                    };
                    if !ok {
                        return Err(err(
                            self.src,
                            at,
                            format!("wrong number of arguments for `{n}`"),
                        ));
                    }
                    Ok(Node::Call(func, args))
                }
                _ => Ok(Node::Name(n)),
            },
            Tok::Op("(") => {
                self.enter()?;
                let n = self.test()?;
                if self.is_op(",") {
                    return Err(self.error("tuples are not supported"));
                }
                self.expect_op(")")?;
                self.depth -= 1;
                Ok(n)
            }
            Tok::Op("[") => {
                self.enter()?;
                if self.is_op("]") {
                    self.bump();
                    self.depth -= 1;
                    return Ok(Node::List(Vec::new()));
                }
                let first = self.test()?;
                if self.is_kw("for") {
                    self.bump();
                    let vat = self.at();
                    let var = match self.bump() {
                        Tok::Name(v) if !is_keyword(&v) => v,
                        _ => {
                            return Err(err(self.src, vat, "expected a variable name after `for`"))
                        }
                    };
                    if !self.is_kw("in") {
                        return Err(self.error("expected `in`"));
                    }
                    self.bump();
                    let iter = self.or_test()?;
                    let mut conds = Vec::new();
                    while self.is_kw("if") {
                        self.bump();
                        conds.push(self.or_test()?);
                    }
                    if self.is_kw("for") {
                        return Err(self.error("only one `for` per comprehension is supported"));
                    }
                    self.expect_op("]")?;
                    self.depth -= 1;
                    return Ok(Node::Comp {
                        elt: Box::new(first),
                        var,
                        iter: Box::new(iter),
                        conds,
                    });
                }
                let mut items = vec![first];
                while self.is_op(",") {
                    self.bump();
                    if self.is_op("]") {
                        break;
                    }
                    items.push(self.test()?);
                }
                self.expect_op("]")?;
                self.depth -= 1;
                Ok(Node::List(items))
            }
            Tok::Eof => Err(err(self.src, at, "unexpected end of expression")),
            Tok::Op(o) => Err(err(self.src, at, format!("unexpected `{o}`"))),
        }
    }
}

/// Collects the free names of `n` into `out` (`bound`: comprehension variables in scope).
pub(super) fn free_names(n: &Node, bound: &mut Vec<String>, out: &mut Vec<String>) {
    match n {
        Node::Const(_) => {}
        Node::Name(name) => {
            if !bound.contains(name) && !out.contains(name) {
                out.push(name.clone());
            }
        }
        Node::List(items) | Node::Call(_, items) => {
            items.iter().for_each(|i| free_names(i, bound, out))
        }
        Node::Unary(_, a) => free_names(a, bound, out),
        Node::Binary(_, a, b) | Node::And(a, b) | Node::Or(a, b) | Node::Index(a, b) => {
            free_names(a, bound, out);
            free_names(b, bound, out);
        }
        Node::Compare(a, rest) => {
            free_names(a, bound, out);
            rest.iter().for_each(|(_, r)| free_names(r, bound, out));
        }
        Node::IfElse { cond, then, other } => {
            free_names(then, bound, out);
            free_names(cond, bound, out);
            free_names(other, bound, out);
        }
        Node::Slice(a, lo, hi) => {
            free_names(a, bound, out);
            lo.iter()
                .chain(hi.iter())
                .for_each(|x| free_names(x, bound, out));
        }
        Node::Method(a, _, args) => {
            free_names(a, bound, out);
            args.iter().for_each(|x| free_names(x, bound, out));
        }
        Node::Comp {
            elt,
            var,
            iter,
            conds,
        } => {
            free_names(iter, bound, out);
            bound.push(var.clone());
            free_names(elt, bound, out);
            conds.iter().for_each(|c| free_names(c, bound, out));
            bound.pop();
        }
    }
}
