//! libFuzzer target: the Socket connector's frame -> converter path (framing, address
//! matching, attribute requests, byte slices in every encoding and value type).
//! `cargo +nightly fuzz run socket_frame`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::socket_frame(data);
});
