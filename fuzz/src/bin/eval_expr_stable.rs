//! The `eval_expr` fuzz target without libFuzzer, on stable Rust: random token soups (half of
//! them built from the language's own tokens) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin eval_expr_stable -- 60
//! cargo run --release --no-default-features --bin eval_expr_stable -- artifacts/eval_expr/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

// One compact table: rustfmt would put each token on its own line.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "i", "n", "f", "s", "b", "l", "z", "x", "1", "0", "-1", "2.5", "1e308", "0x7f", "0b1", "'a'",
    "\"b\\n\"", "None", "True", "False", "+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&",
    "|", "^", "~", "==", "!=", "<", "<=", ">", ">=", " and ", " or ", " not ", " in ", " is ",
    " if ", " else ", " for ", "(", ")", "[", "]", ",", ":", ".upper()", ".strip('x')",
    ".replace('a','bb')", "str(", "int(", "float(", "bool(", "abs(", "round(", "min(", "max(",
    "len(", "[q for q in l if q]", "'ab' * 1000", "9223372036854775807",
];

fn soup(rng: &mut Rng) -> Vec<u8> {
    let mut s = String::new();
    for _ in 0..rng.below(24) {
        s.push_str(TOKENS[rng.below(TOKENS.len())]);
    }
    s.into_bytes()
}

fn main() {
    run("eval_expr", tbgw_fuzz::eval_expr, |rng| {
        rng.mix(1, 2, soup, 80)
    });
}
