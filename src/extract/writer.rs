//! The `.npy` files: created at their full size up front (sparse until written), so rows can be
//! written in place at their offsets, by any shard, in any order, and `np.load(path,
//! mmap_mode="r")` opens them at any time.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::plan::{LayerPlan, Plan};
use super::{output_io, ExtractError};

struct LayerFile {
    path: PathBuf,
    file: File,
    data_offset: u64,
    row_bytes: u64,
}

pub struct Writer {
    files: Vec<LayerFile>,
}

/// Creates `path` as an `.npy` of `layer`'s shape, or checks that an existing one has it.
fn open_layer(path: &Path, layer: &LayerPlan) -> Result<LayerFile, ExtractError> {
    let io = |e| output_io(path, e);
    let header = crate::npz::npy_header(&layer.shape, layer.dtype.descr());
    let total = header.len() as u64 + layer.row_bytes() * layer.shape[0] as u64;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < header.len() as u64 {
        // New (or another shard is creating it: it writes the same bytes).
        file.write_all_at(&header, 0).map_err(io)?;
    } else {
        let mut existing = vec![0u8; header.len()];
        file.read_exact_at(&mut existing, 0).map_err(io)?;
        if existing != header {
            return Err(ExtractError::Output(format!(
                "{} exists with another shape or dtype than this run's {:?} {}: use a new --out",
                path.display(),
                layer.shape,
                layer.dtype.descr()
            )));
        }
    }
    if len < total {
        file.set_len(total).map_err(io)?;
    } else if len > total {
        return Err(ExtractError::Output(format!(
            "{} is larger than this run's array: use a new --out",
            path.display()
        )));
    }
    Ok(LayerFile {
        path: path.to_path_buf(),
        file,
        data_offset: header.len() as u64,
        row_bytes: layer.row_bytes(),
    })
}

impl Writer {
    pub fn open(dir: &Path, plan: &Plan) -> Result<Self, ExtractError> {
        let files = plan
            .layers
            .iter()
            .map(|l| open_layer(&dir.join(&l.file), l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { files })
    }

    /// Writes `bytes` (whole rows, encoded) of layer `layer` starting at row `first_row`.
    pub fn write_rows(
        &self,
        layer: usize,
        first_row: usize,
        bytes: &[u8],
    ) -> Result<(), ExtractError> {
        let f = &self.files[layer];
        debug_assert_eq!(bytes.len() as u64 % f.row_bytes.max(1), 0);
        let offset = f.data_offset + first_row as u64 * f.row_bytes;
        f.file
            .write_all_at(bytes, offset)
            .map_err(|e| output_io(&f.path, e))
    }

    /// Makes what was written durable before its rows are recorded as done.
    pub fn sync(&self) -> Result<(), ExtractError> {
        for f in &self.files {
            f.file.sync_data().map_err(|e| output_io(&f.path, e))?;
        }
        Ok(())
    }

    /// Bytes of every header together.
    pub fn header_bytes(plan: &Plan) -> u64 {
        plan.layers
            .iter()
            .map(|l| crate::npz::npy_header(&l.shape, l.dtype.descr()).len() as u64)
            .sum()
    }
}
