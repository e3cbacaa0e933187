//! The ONNX Runtime backend against real models: runs that want only the logits go to a session
//! of the graph pruned to them, and default-schedule movies to the graph that computes each run
//! of equal frames once; both must give the same numbers as the file's whole graph.

mod common;

use std::path::{Path, PathBuf};

use convrnn_serve::backend::ort::{init_runtime, OrtBackend, SessionOptions};
use convrnn_serve::backend::{Backend, Device, Schedule};
use convrnn_serve::model::inspect;

fn committed_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/rgc_fmnist.onnx")
}

/// Logits of a pseudo-random batch through the logits-only path and through the whole graph.
fn logits_both_ways(path: &Path, prune: bool) -> (bool, Vec<f32>, Vec<f32>) {
    init_runtime(None, Default::default()).unwrap();
    let info = inspect(path).unwrap();
    let m = &info.metadata;
    let options = SessionOptions {
        prune_for_logits: prune,
        ..SessionOptions::new(1)
    };
    let mut backend = OrtBackend::new(&info, Device::Cpu, &options).unwrap();
    let batch = 3;
    let frames: Vec<f32> = (0..batch * m.time.steps * m.frame_len())
        .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    let all: Vec<String> = info.output_names().map(String::from).collect();
    let whole = backend.run(&frames, batch, Schedule::Other, &all).unwrap();
    let whole_logits = whole.into_iter().find(|o| o.name == "logits").unwrap();
    let only = backend
        .run(&frames, batch, Schedule::Other, &["logits".to_string()])
        .unwrap()
        .remove(0);
    assert_eq!(only.shape, whole_logits.shape);
    assert_eq!(only.shape, [batch, m.time.steps, m.labels.len()]);
    (backend.prunes_logits(), only.data, whole_logits.data)
}

#[test]
fn pruned_logits_are_the_whole_graphs_logits_bit_for_bit() {
    for path in [
        committed_model(),
        common::fixture_dir().join("tiny_convrnn.onnx"),
    ] {
        let (pruned, only, whole) = logits_both_ways(&path, true);
        if path == committed_model() {
            assert!(pruned, "the committed model has steps the logits never see");
        }
        let differ = only
            .iter()
            .zip(&whole)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{}: {differ} logits differ", path.display());
        assert!(only.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn pruning_can_be_turned_off() {
    let (pruned, only, whole) = logits_both_ways(&committed_model(), false);
    assert!(!pruned);
    assert_eq!(only, whole);
}

/// The server reads a file's declarations from its protobuf instead of through a runtime
/// session; ONNX Runtime must read the same metadata, inputs and outputs from every file we ship.
#[test]
fn the_declarations_read_from_the_protobuf_are_what_onnx_runtime_reads() {
    use convrnn_serve::backend::ort::session_declarations;
    use convrnn_serve::model::declarations::read_declarations;
    use convrnn_serve::model::metadata::METADATA_KEY;
    init_runtime(None, Default::default()).unwrap();
    let files = shipped_models();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let ours = read_declarations(&std::fs::read(&file).unwrap(), METADATA_KEY).unwrap();
        let runtime = session_declarations(&file).unwrap();
        assert_eq!(ours, runtime, "{}", file.display());
        assert!(ours.metadata.is_some(), "{}", file.display());
        assert!(!ours.outputs.is_empty(), "{}", file.display());
    }
}

/// The committed model and the test fixtures.
fn shipped_models() -> Vec<PathBuf> {
    let fixtures = common::fixture_dir();
    let mut files = vec![
        committed_model(),
        fixtures.join("feedback/tiny_feedback.onnx"),
    ];
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "onnx") {
            files.push(path);
        }
    }
    files
}

/// A default-schedule movie of a pseudo-random image: the image for `image_on_steps`, blank after.
fn default_movies(info: &convrnn_serve::model::ModelInfo, batch: usize) -> Vec<f32> {
    let m = &info.metadata;
    let len = m.frame_len();
    let mut frames = Vec::with_capacity(batch * m.time.steps * len);
    for b in 0..batch {
        let image: Vec<f32> = (0..len)
            .map(|i| (((i + 7919 * b).wrapping_mul(2654435761) >> 7) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        for t in 0..m.time.steps {
            if t < m.time.image_on_steps {
                frames.extend_from_slice(&image);
            } else {
                frames.extend(std::iter::repeat_n(m.time.blank_value, len));
            }
        }
    }
    frames
}

/// The graph specialised to the default schedule computes each run of equal frames once; on a
/// default-schedule movie every output, and the logits of its pruned graph, must be the file's
/// graph's to the bit, for every file we ship.
#[test]
fn the_held_graph_gives_the_files_numbers_for_default_schedule_movies() {
    init_runtime(None, Default::default()).unwrap();
    for path in shipped_models() {
        let info = inspect(&path).unwrap();
        let all: Vec<String> = info.output_names().map(String::from).collect();
        let logits = vec!["logits".to_string()];
        let batch = 2;
        let frames = default_movies(&info, batch);
        let file_graph = SessionOptions {
            hold_default_schedule: false,
            ..SessionOptions::new(1)
        };
        let mut reference = OrtBackend::new(&info, Device::Cpu, &file_graph).unwrap();
        assert!(!reference.has_held_graph());
        let mut held = OrtBackend::new(&info, Device::Cpu, &SessionOptions::new(1)).unwrap();
        assert!(held.has_held_graph(), "{}", path.display());
        for outputs in [&all, &logits] {
            let want = reference
                .run(&frames, batch, Schedule::Default, outputs)
                .unwrap();
            let got = held
                .run(&frames, batch, Schedule::Default, outputs)
                .unwrap();
            for (w, g) in want.iter().zip(&got) {
                assert_eq!((&w.name, &w.shape), (&g.name, &g.shape));
                let differ = w
                    .data
                    .iter()
                    .zip(&g.data)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    differ,
                    0,
                    "{} {}: {differ} values differ",
                    path.display(),
                    w.name
                );
            }
        }
        // Another schedule runs on the file's graph: its first blank step differs from the
        // default's, and so must the outputs.
        let m = &info.metadata;
        let mut flash = frames.clone();
        let step = m.frame_len();
        flash[..step].fill(m.time.blank_value);
        let want = reference.run(&flash, batch, Schedule::Other, &all).unwrap();
        let got = held.run(&flash, batch, Schedule::Other, &all).unwrap();
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.data, g.data, "{} {}", path.display(), w.name);
        }
    }
}

/// `extract` asks for default-schedule movies only: one session, and a clear error (not a wrong
/// answer) should anything else reach it.
#[test]
fn a_backend_for_the_default_schedule_only_refuses_other_movies() {
    init_runtime(None, Default::default()).unwrap();
    let info = inspect(&committed_model()).unwrap();
    let options = SessionOptions {
        other_schedules: false,
        prune_for_logits: false,
        ..SessionOptions::new(1)
    };
    let mut backend = OrtBackend::new(&info, Device::Cpu, &options).unwrap();
    assert!(backend.has_held_graph() && !backend.runs_other_schedules());
    let frames = default_movies(&info, 1);
    let all: Vec<String> = info.output_names().map(String::from).collect();
    assert!(backend.run(&frames, 1, Schedule::Default, &all).is_ok());
    let err = backend
        .run(&frames, 1, Schedule::Other, &all)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only default-schedule"), "{err}");
}
