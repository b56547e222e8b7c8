//! `cargo +nightly fuzz run datagram`: see `quicmatch_fuzz::checks::datagram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicmatch_fuzz::checks::datagram(data));
