//! libFuzzer target: the XMPP connector's message body -> data path (JSON, templates, JID
//! device expressions) and the downlink bodies built from the same input.
//! `cargo +nightly fuzz run xmpp_body`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tbgw_fuzz::xmpp_body(data);
});
