//! `cargo +nightly fuzz run client_msg`: see `quicmatch_fuzz::checks::client_msg`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicmatch_fuzz::checks::client_msg(data));
