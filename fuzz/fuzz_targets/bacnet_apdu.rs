//! libFuzzer target: the BACnet/IP decoders (BVLC, NPDU, APDU, tags, service data) and the
//! value conversion. `cargo +nightly fuzz run bacnet_apdu`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::bacnet_apdu(data);
});
