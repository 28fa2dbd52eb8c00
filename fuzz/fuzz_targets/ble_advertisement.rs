//! libFuzzer target: the BLE connector's `valueExpression` parsing and both renderings (text and
//! big-endian integer), and the advertisement path (matching, decoding, `compute`).
//! `cargo +nightly fuzz run ble_advertisement`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::ble_advertisement(data);
});
