//! `cargo +nightly fuzz run registry_ops`: see `quicmatch_fuzz::checks::registry_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicmatch_fuzz::checks::registry_ops(data));
