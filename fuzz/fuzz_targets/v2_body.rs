//! `cargo fuzz run v2_body`: see convrnn_serve::fuzzing::v2_body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convrnn_serve::fuzzing::v2_body(data));
