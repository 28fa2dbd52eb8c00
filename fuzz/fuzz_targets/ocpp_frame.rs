//! libFuzzer target: the OCPP connector's WebSocket message path (OCPP-J frame decoding,
//! incoming-call checks, answers, converter messages) under OCPP 1.6J, 2.0.1 and 2.1.
//! `cargo +nightly fuzz run ocpp_frame`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::ocpp_frame(data);
});
