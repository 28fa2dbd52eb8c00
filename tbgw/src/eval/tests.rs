use std::collections::HashMap;

use super::{EvalError, Expr, Val};

fn vars() -> HashMap<String, Val> {
    HashMap::from([
        ("entity_id".to_string(), Val::Str("e1".into())),
        ("str_v".to_string(), Val::None),
        ("long_v".to_string(), Val::Int(42)),
        ("dbl_v".to_string(), Val::Float(2.5)),
        ("bool_v".to_string(), Val::None),
        ("value".to_string(), Val::Int(6)),
        ("userSpeed".to_string(), Val::Int(70)),
        ("maxAllowedSpeed".to_string(), Val::Int(60)),
        ("name".to_string(), Val::Str("  Pump-7 ".into())),
    ])
}

fn ev(src: &str) -> Val {
    Expr::parse(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .eval(&vars())
        .unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn ev_err(src: &str) -> EvalError {
    Expr::parse(src).unwrap().eval(&vars()).unwrap_err()
}

fn parse_err(src: &str) -> String {
    Expr::parse(src).unwrap_err().to_string()
}

fn s(x: &str) -> Val {
    Val::Str(x.into())
}

#[test]
fn upstream_samples() {
    // odbc.json
    assert_eq!(ev("'ODBC ' + entity_id"), s("ODBC e1"));
    assert_eq!(
        ev("[i for i in [str_v, long_v, dbl_v,bool_v] if i is not None][0]"),
        Val::Int(42)
    );
    // can.json
    assert_eq!(ev("bool(value & 0b00000100)"), Val::Bool(true));
    assert_eq!(ev("value / 4"), Val::Float(1.5));
    assert_eq!(ev("value * 10"), Val::Int(60));
    assert_eq!(ev("value + 5"), Val::Int(11));
    assert_eq!(
        ev("userSpeed if maxAllowedSpeed > userSpeed else maxAllowedSpeed"),
        Val::Int(60)
    );
}

#[test]
fn arithmetic_follows_python() {
    assert_eq!(ev("7 // 2"), Val::Int(3));
    assert_eq!(ev("-7 // 2"), Val::Int(-4));
    assert_eq!(ev("-7 % 3"), Val::Int(2));
    assert_eq!(ev("7 % -3"), Val::Int(-2));
    assert_eq!(ev("7 // -3"), Val::Int(-3));
    assert_eq!(ev("-7 // -3"), Val::Int(2));
    assert_eq!(ev("-7.5 % 2"), Val::Float(0.5));
    assert_eq!(ev("2 ** 10"), Val::Int(1024));
    assert_eq!(ev("2 ** -1"), Val::Float(0.5));
    assert_eq!(ev("-2 ** 2"), Val::Int(-4));
    assert_eq!(ev("1 + 2 * 3 - 4"), Val::Int(3));
    assert_eq!(ev("(1 + 2) * 3"), Val::Int(9));
    assert_eq!(ev("True + 1"), Val::Int(2));
    assert_eq!(ev("0x1F | 0o10 ^ 1 & 3"), Val::Int(31 | (8 ^ (1 & 3))));
    assert_eq!(ev("1 << 4 >> 2"), Val::Int(4));
    assert_eq!(ev("~5"), Val::Int(-6));
    assert_eq!(ev("1_000 + .5 + 1e3"), Val::Float(2000.5));
    assert_eq!(ev("'ab' * 3"), s("ababab"));
    assert_eq!(ev("[1] + [2]"), Val::List(vec![Val::Int(1), Val::Int(2)]));
}

#[test]
fn comparisons_and_logic() {
    assert_eq!(ev("1 < long_v < 100"), Val::Bool(true));
    assert_eq!(ev("1 < long_v < 10"), Val::Bool(false));
    assert_eq!(ev("1 == 1.0"), Val::Bool(true));
    assert_eq!(ev("'a' == 1"), Val::Bool(false));
    assert_eq!(ev("str_v is None and long_v is not None"), Val::Bool(true));
    assert_eq!(ev("str_v or 'dflt'"), s("dflt"));
    assert_eq!(ev("long_v and 'yes'"), s("yes"));
    assert_eq!(ev("not str_v"), Val::Bool(true));
    assert_eq!(ev("'mp' in 'Pump'"), Val::Bool(true));
    assert_eq!(ev("3 not in [1, 2]"), Val::Bool(true));
    assert_eq!(ev("'b' > 'a'"), Val::Bool(true));
    // Short circuit: the right side is never evaluated.
    assert_eq!(ev("str_v is not None and str_v + 1"), Val::Bool(false));
}

#[test]
fn strings_functions_methods() {
    assert_eq!(ev("str(long_v) + '/' + str(dbl_v)"), s("42/2.5"));
    assert_eq!(ev("str(1.0)"), s("1.0"));
    assert_eq!(ev("str(True) + str(None)"), s("TrueNone"));
    assert_eq!(ev("str(1e16)"), s("1e+16"));
    assert_eq!(ev("str([1, 'a'])"), s("[1, 'a']"));
    assert_eq!(
        ev("int('0x1f', 16) + int(' 7 ') + int(2.9) + int(-2.9)"),
        Val::Int(31 + 7 + 2 - 2)
    );
    assert_eq!(ev("float('1.5') + float(1)"), Val::Float(2.5));
    assert_eq!(ev("round(2.5) + round(3.5)"), Val::Int(6));
    assert_eq!(ev("round(2.675, 1)"), Val::Float(2.7));
    assert_eq!(ev("abs(-3) + abs(-1.5)"), Val::Float(4.5));
    assert_eq!(ev("min(3, 1, 2) + max([4, 9])"), Val::Int(10));
    assert_eq!(ev("len(name) + len([1,2])"), Val::Int(11));
    assert_eq!(ev("name.strip().lower()"), s("pump-7"));
    assert_eq!(ev("name.strip().upper().replace('-', '_')"), s("PUMP_7"));
    assert_eq!(
        ev("name.strip().startswith('Pu') and name.endswith(' ')"),
        Val::Bool(true)
    );
    assert_eq!(ev("'x-y-'.rstrip('-')"), s("x-y"));
    assert_eq!(
        ev("entity_id[0] + entity_id[-1] + 'abcdef'[1:3] + 'abc'[:-1]"),
        s("e1bcab")
    );
    assert_eq!(ev("'it''s' \"ok\\n\""), s("itsok\n"));
    assert_eq!(
        ev("[x * 2 for x in [1, 2, 3] if x > 1 if x < 3]"),
        Val::List(vec![Val::Int(4)])
    );
}

#[test]
fn runtime_errors() {
    assert_eq!(ev_err("nope + 1"), EvalError::UnknownName("nope".into()));
    assert!(matches!(ev_err("'a' + 1"), EvalError::Type(_)));
    assert_eq!(ev_err("1 / 0"), EvalError::ZeroDivision);
    assert_eq!(ev_err("1 % 0"), EvalError::ZeroDivision);
    assert_eq!(ev_err("[][0]"), EvalError::Index);
    assert_eq!(ev_err("9223372036854775807 + 1"), EvalError::Overflow);
    assert_eq!(ev_err("2 ** 64"), EvalError::Overflow);
    assert_eq!(ev_err("'x' * 100000000"), EvalError::TooLarge);
    assert!(matches!(ev_err("int('zz')"), EvalError::Type(_)));
    assert!(matches!(ev_err("1 < 'a'"), EvalError::Type(_)));
    // The comprehension variable is not visible outside.
    assert_eq!(
        ev_err("[i for i in [1]] + [i]"),
        EvalError::UnknownName("i".into())
    );
}

#[test]
fn unsafe_or_unknown_syntax_is_rejected_at_parse_time() {
    for (src, needle) in [
        (
            "__import__('os').system('id')",
            "unknown function `__import__`",
        ),
        ("open('/etc/passwd')", "unknown function `open`"),
        ("eval('1')", "unknown function `eval`"),
        (
            "entity_id.__class__",
            "attribute `__class__` is not supported",
        ),
        ("(lambda: 1)()", "unexpected `lambda`"),
        ("{'a': 1}", "unexpected character '{'"),
        ("a = 1", "unexpected character '='"),
        ("'abc", "unterminated string"),
        ("1 +", "unexpected end of expression"),
        ("", "empty expression"),
        ("x if y", "expected `else`"),
        ("(1, 2)", "tuples are not supported"),
        ("[a for a in b for c in d]", "only one `for`"),
        ("f'{x}'", "unexpected text after the expression"),
        ("len()", "wrong number of arguments for `len`"),
        ("'a'.upper(1)", "wrong number of arguments for `upper`"),
        ("1 2", "unexpected text after the expression"),
        ("0xZZ", "invalid number"),
    ] {
        let e = parse_err(src);
        assert!(e.contains(needle), "{src:?}: {e}");
    }
    // Nesting is bounded (no stack overflow on hostile input).
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse_err(&deep).contains("nested too deeply"));
    let deep = format!("{}1", "-".repeat(10_000));
    assert!(parse_err(&deep).contains("nested too deeply"));
    let deep = format!("{}1", "not ".repeat(10_000));
    assert!(parse_err(&deep).contains("nested too deeply"));
    // Long flat chains nest the tree too.
    for op in ["+", "*", " and ", " or ", "|"] {
        let chain = vec!["1"; 10_000].join(op);
        assert!(parse_err(&chain).contains("nested too deeply"), "{op}");
    }
    let chain = format!("s{}", ".upper()".repeat(10_000));
    assert!(parse_err(&chain).contains("nested too deeply"));
    // A realistic length is fine.
    assert_eq!(ev(&vec!["1"; 50].join(" + ")), Val::Int(50));
}

#[test]
fn parse_error_names_position() {
    match Expr::parse("a + $b") {
        Err(EvalError::Parse { src, pos, .. }) => {
            assert_eq!(src, "a + $b");
            assert_eq!(pos, 4);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn names_and_bare_name() {
    let e = Expr::parse("[i for i in [str_v, long_v] if i is not None][0] + x").unwrap();
    assert_eq!(e.names(), vec!["str_v", "long_v", "x"]);
    assert_eq!(Expr::parse("postgres").unwrap().as_name(), Some("postgres"));
    assert_eq!(Expr::parse("'postgres'").unwrap().as_name(), None);
    assert_eq!(Expr::parse(" value ").unwrap().source(), " value ");
}

#[test]
fn closure_lookup_and_value_conversion() {
    let e = Expr::parse("v * 2").unwrap();
    let lookup = |n: &str| (n == "v").then_some(Val::Float(1.25));
    assert_eq!(e.eval(&lookup).unwrap(), Val::Float(2.5));
    use crate::model::Value;
    assert_eq!(Val::Int(3).into_value(), Some(Value::Int(3)));
    assert_eq!(Val::None.into_value(), None);
    assert_eq!(
        Val::List(vec![Val::Int(1), s("a")]).into_value(),
        Some(Value::Json(serde_json::json!([1, "a"])))
    );
    assert_eq!(Val::from_value(&Value::String("x".into())), s("x"));
    assert_eq!(
        Val::from_json(&serde_json::json!([1, null])),
        Val::List(vec![Val::Int(1), Val::None])
    );
    assert!(!Val::List(vec![]).truthy() && Val::Float(0.1).truthy());
}
