//! `convrnn-serve inspect FILE`: a model's contract as text, for a person checking an export.

use std::fmt::Write;
use std::path::Path;

use crate::backend::ort as ort_backend;
use crate::model;

/// `convrnn-serve inspect FILE`: the metadata, layers and shapes, as text.
pub fn inspect_report(file: &Path, ort_library: Option<&Path>) -> anyhow::Result<String> {
    ort_backend::init_runtime(ort_library, ort_backend::RuntimeOptions::default())?;
    let (declared, sha256) = model::read_model_file(file)?;
    // The runtime must load the file too, and read it as the server does.
    if ort_backend::session_declarations(file)? != declared {
        anyhow::bail!(
            "{}: ONNX Runtime reads other declarations than convrnn-serve does",
            file.display()
        );
    }
    let info = model::ModelInfo::from_declarations(file, declared, sha256)?;
    let m = &info.metadata;
    let mut out = String::new();
    writeln!(out, "file:         {}", file.display())?;
    writeln!(out, "name:         {}", m.name)?;
    writeln!(out, "architecture: {}", m.architecture)?;
    writeln!(out, "description:  {}", m.description)?;
    if let Some(t) = &m.trained_on {
        writeln!(out, "trained_on:   {t}")?;
    }
    writeln!(
        out,
        "input:        frames [N, {}, {}, {}, {}]  resize={} grayscale={} mean={:?} std={:?}",
        m.time.steps,
        m.input.channels,
        m.input.height,
        m.input.width,
        m.input.resize,
        m.input.grayscale,
        m.input.mean,
        m.input.std
    )?;
    writeln!(
        out,
        "time:         {} steps x {} ms, image on for {} steps, blank value {}",
        m.time.steps, m.time.step_ms, m.time.image_on_steps, m.time.blank_value
    )?;
    writeln!(
        out,
        "readout:      {} (first driven step {})",
        m.readout.rule,
        m.readout_first_driven_step()
    )?;
    writeln!(out, "labels ({}):  {}", m.labels.len(), m.labels.join(", "))?;
    writeln!(out, "layers:")?;
    writeln!(
        out,
        "  {:<10} {:<14} {:<18} {:>12} {:<8}",
        "name", "cell", "shape [T,C,H,W]", "first_driven", "region"
    )?;
    for l in &m.layers {
        writeln!(
            out,
            "  {:<10} {:<14} {:<18} {:>12} {:<8}",
            l.name,
            l.cell,
            format!("[{},{},{},{}]", m.time.steps, l.channels, l.height, l.width),
            l.first_driven_step,
            l.region.as_deref().unwrap_or("-")
        )?;
    }
    writeln!(out, "graph outputs:")?;
    for o in &info.outputs {
        writeln!(out, "  {:<10} {:?}", o.name, o.shape)?;
    }
    let bytes = std::fs::read(file)?;
    match model::prune::prune_to_outputs(&bytes, &[model::LOGITS_NAME]) {
        Ok(p) => writeln!(
            out,
            "logits-only: {} of {} nodes (classification runs on this pruned graph)",
            p.nodes_after, p.nodes_before
        )?,
        Err(e) => writeln!(out, "logits-only: the whole graph ({e})")?,
    }
    Ok(out)
}
