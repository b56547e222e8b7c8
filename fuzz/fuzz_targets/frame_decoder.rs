//! `cargo +nightly fuzz run frame_decoder`: see `quicmatch_fuzz::checks::frame_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicmatch_fuzz::checks::frame_decoder(data));
