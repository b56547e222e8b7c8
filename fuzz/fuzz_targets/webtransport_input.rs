//! `cargo +nightly fuzz run webtransport_input`: see
//! `quicmatch_fuzz::checks::webtransport_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicmatch_fuzz::checks::webtransport_input(data));
