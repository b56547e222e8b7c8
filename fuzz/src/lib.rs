//! The checks behind quicmatch's cargo-fuzz targets (`fuzz_targets/`), kept in
//! a library so that `tests/fuzz_corpus.rs` in the main crate replays the
//! corpus through the very same code on stable, without libFuzzer.

pub mod checks;
