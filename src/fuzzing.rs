//! Entry points for the fuzz targets (`fuzz/`) and for the test that replays their committed
//! corpus on every `cargo test` (`tests/fuzz_corpus.rs`): each takes arbitrary bytes, runs one
//! input parser the way a request would, and must return (an error is fine) without panicking,
//! hanging or allocating more than the input justifies. No HTTP server: the parsers are called
//! directly.

use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart};
use axum::http::{header, Request};

use crate::api::activations::ActivationOptions;
use crate::api::classify::ClassifyOptions;
use crate::api::input;
use crate::api::selection::Selection;
use crate::api::v2::{infer, protocol};
use crate::image::{self, Limits, Preprocess};
use crate::model::ModelMetadata;
use crate::presentation::Presentation;

/// A fuzz target: arbitrary bytes in, nothing out.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus directory.
pub const TARGETS: [(&str, Target); 4] = [
    ("image", image_path),
    ("options", options),
    ("multipart", multipart),
    ("v2_body", v2_body),
];

/// The fixture model's metadata (tests/fixtures/tiny_convrnn.onnx): 16x16 input, 6 steps.
fn metadata() -> &'static ModelMetadata {
    static META: OnceLock<ModelMetadata> = OnceLock::new();
    META.get_or_init(|| {
        let json = serde_json::json!({
            "format_version": 1,
            "name": "tiny_convrnn",
            "architecture": "tiny_convrnn",
            "labels": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"],
            "input": {"channels": 3, "height": 16, "width": 16,
                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                      "resize": "shorter-side-then-center-crop", "grayscale": "replicate"},
            "time": {"steps": 6, "step_ms": 10, "image_on_steps": 4, "blank_value": 0.5},
            "layers": [
                {"name": "conv1", "channels": 4, "height": 8, "width": 8, "first_driven_step": 0},
                {"name": "conv2", "channels": 8, "height": 4, "width": 4, "first_driven_step": 1},
                {"name": "conv3", "channels": 8, "height": 2, "width": 2, "first_driven_step": 2}
            ],
            "readout": {"rule": "last", "first_step": 3}
        });
        ModelMetadata::from_json(&json.to_string()).expect("the fixture's metadata is valid")
    })
}

/// Limits for fuzzing: the server's, with a pixel limit small enough that a valid header the
/// fuzzer finds decodes in milliseconds.
const FUZZ_LIMITS: Limits = Limits {
    max_pixels: 1 << 20,
    max_bytes: 64 << 20,
};

/// The image path: format sniffing, header limits, decode, EXIF orientation, resize.
pub fn image_path(data: &[u8]) {
    let _ = image::probe_dimensions(data);
    let m = metadata();
    let spec = Preprocess {
        channels: 3,
        height: m.input.height,
        width: m.input.width,
        mean: m.input.mean,
        std: m.input.std,
        resize: if data.first().is_some_and(|b| b & 1 == 1) {
            image::ResizePolicy::Stretch
        } else {
            image::ResizePolicy::ShorterSideThenCenterCrop
        },
        grayscale: image::GrayscalePolicy::Replicate,
        shorter_side: data
            .first()
            .is_some_and(|b| b & 2 == 2)
            .then_some(m.input.width.max(m.input.height) + 3),
    };
    if let Ok(frame) = image::preprocess(data, &spec, &FUZZ_LIMITS) {
        assert_eq!(frame.len(), spec.output_len());
    }
}

/// The option grammar: the first byte picks where the options come from (query, a JSON
/// `options` object, or both); then selection and presentation are parsed and the schedule built.
pub fn options(data: &[u8]) {
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let text = String::from_utf8_lossy(rest);
    let (query, json) = match mode % 3 {
        0 => (Some(text.as_ref()), None),
        1 => (None, Some(rest)),
        _ => match text.split_once('\n') {
            Some((q, j)) => (Some(q), Some(j.as_bytes())),
            None => (Some(text.as_ref()), None),
        },
    };
    let body = match json.map(input::options_from_json) {
        Some(Ok(b)) => Some(b),
        Some(Err(_)) => return,
        None => None,
    };
    let m = metadata();
    if let Ok(o) = input::merge_options::<ActivationOptions>(query, body.clone()) {
        if let Ok(sel) = Selection::parse(
            m,
            o.layers.as_deref(),
            o.steps.as_deref(),
            o.window_ms.as_deref(),
            o.pool,
        ) {
            assert!(sel.steps.len() <= m.time.steps);
            assert!(sel.steps.iter().all(|&t| t < m.time.steps));
        }
        schedule(m, o.presentation, o.on_steps, o.mask_steps, o.sequence);
    }
    if let Ok(o) = input::merge_options::<ClassifyOptions>(query, body) {
        schedule(m, o.presentation, o.on_steps, o.mask_steps, o.sequence);
    }
}

fn schedule(
    m: &ModelMetadata,
    kind: Option<String>,
    on_steps: Option<usize>,
    mask_steps: Option<usize>,
    sequence: Option<String>,
) {
    let Ok(p) = Presentation::from_parts(
        kind.as_deref(),
        on_steps,
        mask_steps,
        sequence.as_deref(),
        &m.time,
    ) else {
        return;
    };
    let frame = || Arc::new(vec![0.0f32; 4]);
    let mask = matches!(p, Presentation::Mask { .. }).then(frame);
    if let Ok(stimuli) = p.stimuli(vec![frame(), frame()], mask, &m.time) {
        for s in stimuli {
            assert_eq!(s.schedule.len(), m.time.steps);
        }
    }
}

/// The multipart reader, on a body with boundary `XB` (as a client's form would have).
pub fn multipart(data: &[u8]) {
    let request = Request::post("/")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XB")
        .body(Body::from(Bytes::copy_from_slice(data)))
        .expect("a static request is valid");
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime starts");
    }
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let Ok(form) = Multipart::from_request(request, &()).await else {
                return;
            };
            if let Ok(payload) = input::read_multipart(form, 64).await {
                assert!(payload.images.len() <= 64);
            }
        })
    });
}

/// The KServe v2 body: the first two bytes give the `Inference-Header-Content-Length` (or none
/// when both are zero), the rest is the body: split, JSON header, binary tensors, checked
/// against the fixture model.
pub fn v2_body(data: &[u8]) {
    let (length, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => return,
    };
    let header = (length != 0).then(|| (length - 1).to_string());
    let Ok(split) = protocol::split_body(Bytes::copy_from_slice(body), header.as_deref()) else {
        return;
    };
    let Ok(request) = protocol::parse_request(&split.json) else {
        return;
    };
    if let Ok(work) = infer::decode_inputs(metadata(), 64, &request, split.binary) {
        match work {
            infer::Work::Stimuli(s) => assert!(!s.is_empty() && s.len() <= 64),
            infer::Work::Images(i) => assert!(!i.is_empty() && i.len() <= 64),
        }
    }
}

/// Runs `target` on every file of `dir` (a corpus directory); returns how many it ran.
pub fn replay(dir: &std::path::Path, target: Target) -> std::io::Result<usize> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for file in &files {
        target(&std::fs::read(file)?);
    }
    Ok(files.len())
}
