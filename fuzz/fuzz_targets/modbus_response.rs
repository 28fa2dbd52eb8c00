//! libFuzzer target: the Modbus master's response decoding (framing, PDU, values).
//! `cargo +nightly fuzz run modbus_response`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::modbus_response(data);
});
