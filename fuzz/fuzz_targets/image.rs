//! `cargo fuzz run image`: see convrnn_serve::fuzzing::image_path.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convrnn_serve::fuzzing::image_path(data));
