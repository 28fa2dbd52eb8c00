//! The `eval_expr` fuzz target without libFuzzer, on stable Rust: random token soups (half of
//! them built from the language's own tokens) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin eval_expr_stable -- 60
//! cargo run --release --no-default-features --bin eval_expr_stable -- artifacts/eval_expr/crash-*
//! ```

use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(secs) = args.first().and_then(|a| a.parse::<u64>().ok()) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
        let end = Instant::now() + Duration::from_secs(secs);
        let mut runs = 0u64;
        while Instant::now() < end {
            for _ in 0..1000 {
                let input = if rng.below(2) == 0 {
                    soup(&mut rng)
                } else {
                    (0..rng.below(80)).map(|_| rng.next() as u8).collect()
                };
                tbgw_fuzz::eval_expr(&input);
                runs += 1;
            }
        }
        println!("eval_expr: {runs} inputs in {secs} s, no failure");
        return;
    }
    for path in &args {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        tbgw_fuzz::eval_expr(&data);
        println!("{path}: ok");
    }
}
