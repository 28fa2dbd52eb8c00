//! libFuzzer target: the safe expression language (`tbgw::eval`): parse and evaluate.
//! `cargo +nightly fuzz run eval_expr`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::eval_expr(data);
});
