//! `cargo fuzz run options`: see convrnn_serve::fuzzing::options.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convrnn_serve::fuzzing::options(data));
