//! libFuzzer target: SNMP message decoding (agent answers and traps) and the connector's
//! result shapes. `cargo +nightly fuzz run snmp_message`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tbgw_fuzz::snmp_message(data);
});
