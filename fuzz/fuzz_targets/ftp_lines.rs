//! libFuzzer target: the FTP connector's file → values conversion (TABLE, SLICED, json).
//! `cargo +nightly fuzz run ftp_lines`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::ftp_lines(data);
});
