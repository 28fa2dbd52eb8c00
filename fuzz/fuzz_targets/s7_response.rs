//! libFuzzer target: the S7 connector's answer parsing (TPKT/COTP/S7 headers, setup,
//! ReadVar and WriteVar answers) and value decoding of every data type.
//! `cargo +nightly fuzz run s7_response`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::s7_response(data);
});
