//! libFuzzer target: the KNX connector's KNXnet/IP frame and cEMI parsing and the datapoint
//! codecs. `cargo +nightly fuzz run knx_frame`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::knx_frame(data);
});
