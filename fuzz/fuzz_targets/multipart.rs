//! `cargo fuzz run multipart`: see convrnn_serve::fuzzing::multipart.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convrnn_serve::fuzzing::multipart(data));
