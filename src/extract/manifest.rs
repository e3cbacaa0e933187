//! `manifest.json`: the plan (what each file holds and how it was made) plus what happened to
//! each row, assembled from every shard's log. Written whole and renamed into place, so a reader
//! never sees half of one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::outdir::{self, RowRecord};
use super::plan::Plan;
use super::{output_io, ExtractError};

pub const FILE: &str = "manifest.json";

/// An image whose row holds NaN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub row: usize,
    pub stimulus_id: String,
    pub path: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(flatten)]
    pub plan: Plan,
    /// sha256 of each image file in row order (null where it could not be read or is not done).
    pub stimulus_sha256: Vec<Option<String>>,
    pub failures: Vec<Failure>,
    /// Rows recorded so far; `complete` when that is every row.
    pub rows_done: usize,
    pub complete: bool,
    /// Where the features came from: the model file, or the server URL.
    pub source: String,
    /// The command line of the process that wrote this manifest.
    pub command: Vec<String>,
    pub convrnn_serve_version: String,
}

impl Manifest {
    pub fn assemble(plan: &Plan, records: &[Option<RowRecord>], source: &str) -> Self {
        let failures = records
            .iter()
            .enumerate()
            .filter_map(|(row, r)| {
                let error = r.as_ref()?.error.clone()?;
                Some(Failure {
                    row,
                    stimulus_id: plan.stimulus_ids[row].clone(),
                    path: plan.stimulus_paths[row].clone(),
                    error,
                })
            })
            .collect();
        let rows_done = records.iter().filter(|r| r.is_some()).count();
        Self {
            plan: plan.clone(),
            stimulus_sha256: records
                .iter()
                .map(|r| r.as_ref().and_then(|r| r.sha256.clone()))
                .collect(),
            failures,
            rows_done,
            complete: rows_done == plan.rows(),
            source: source.to_string(),
            command: std::env::args().collect(),
            convrnn_serve_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Re-reads every shard's log under the directory lock and writes the manifest; returns it.
pub fn write(dir: &Path, plan: &Plan, source: &str) -> Result<Manifest, ExtractError> {
    let _lock = outdir::lock(dir)?;
    let records = outdir::read_records(dir, plan.rows())?;
    let manifest = Manifest::assemble(plan, &records, source);
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| ExtractError::Internal(e.to_string()))?;
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| output_io(&tmp, e))?;
    let path = dir.join(FILE);
    std::fs::rename(&tmp, &path).map_err(|e| output_io(&path, e))?;
    Ok(manifest)
}
