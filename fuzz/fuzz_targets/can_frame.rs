//! libFuzzer target: the CAN connector's frame decoding (value slices of every type,
//! command filters, expressions over `can_data`, CAN FD lengths, DBC signals, J1939 PGNs) and
//! its value/command/hex parsers.
//! `cargo +nightly fuzz run can_frame`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::can_frame(data);
});
