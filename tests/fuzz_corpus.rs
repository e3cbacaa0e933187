//! Replays the committed fuzz corpus (fuzz/corpus/<target>/, seeds and every input a fuzz run
//! found worth keeping) through the same entry points the fuzz targets call, on every
//! `cargo test`, without cargo-fuzz: a past crash or hang stays fixed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use convrnn_serve::fuzzing::{replay, TARGETS};

#[test]
fn every_committed_fuzz_input_runs_cleanly() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in TARGETS {
        let started = Instant::now();
        let n = replay(&corpus.join(name), target).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(n >= 5, "{name}: only {n} corpus files");
        // A generous bound in a debug build: a hang (an input the parser loops on) fails here.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: {n} inputs took {:?}",
            started.elapsed()
        );
    }
}
