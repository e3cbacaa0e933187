//! The `extract` command line, and parsing of its small value languages (`--shard`, `--pool`,
//! `--time-bins`, `--dtype`).

use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ExtractArgs {
    /// A model file (`FILE.onnx`, run in-process), or with --server the model's name there.
    #[arg(long)]
    pub model: String,

    /// Base URL of a running convrnn-serve (`http://host:port`); the features then come from its
    /// `/v1/models/{model}/activations`.
    #[arg(long, env = "CONVRNN_SERVER")]
    pub server: Option<String>,

    /// API key for --server, sent as `Authorization: Bearer`.
    #[arg(long, env = "CONVRNN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// The stimuli: a directory (its images, sorted by name), a glob (`'imgs/*.png'`, sorted), or
    /// a CSV with a `stimulus_id` column and a path column (`path`, `image_file_name`,
    /// `filename` or `file`; relative paths are resolved against the CSV's directory), rows in
    /// file order.
    #[arg(long)]
    pub images: String,

    /// Output directory: `manifest.json` and one `<layer>.npy` per layer.
    #[arg(long)]
    pub out: PathBuf,

    /// `all` or a comma-separated list of layer names (`logits` too).
    #[arg(long, conflicts_with = "regions")]
    pub layers: Option<String>,

    /// Brain regions (comma-separated): the layers the model's metadata maps to them.
    #[arg(long)]
    pub regions: Option<String>,

    /// Timesteps: `all` (default), a half-open range `a:b`, or a list `1,3,5`.
    #[arg(long, conflicts_with = "time_bins")]
    pub steps: Option<String>,

    /// Time bins in ms, `START:END,...`: each bin averages the steps whose start time
    /// `t * step_ms` lies in `[START, END)`.
    #[arg(long)]
    pub time_bins: Option<String>,

    /// Spatial pooling: `none` (`[C, H, W]`), `mean` or `max` (`[C]`), or `avgK` (average over a
    /// `K x K` grid, `[C, K, K]`; smaller maps keep their size).
    #[arg(long, default_value = "none")]
    pub pool: SpatialPool,

    /// Element type of the `.npy` files: `f32` or `f16`.
    #[arg(long, default_value = "f32")]
    pub dtype: Dtype,

    /// Images per model run (in-process) or per request (--server).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,

    /// Batches in flight at once (default: the model sessions in-process, 4 with --server).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: Option<u64>,

    /// Continue an interrupted run in --out: rows already written are kept.
    #[arg(long)]
    pub resume: bool,

    /// `I/N`: extract only the I-th (0-based) of N contiguous slices of the rows. Shards may run
    /// at once into the same --out on shared storage; the last one to finish writes the manifest.
    #[arg(long)]
    pub shard: Option<Shard>,

    /// Stop at the first image that cannot be read or decoded, instead of recording it in the
    /// manifest and leaving its row NaN.
    #[arg(long)]
    pub strict: bool,

    /// In-process: `auto`, `cpu` or `cuda:N` (as for `serve --devices`).
    #[arg(long, default_value = "auto")]
    pub devices: String,

    /// Path to libonnxruntime.so (in-process mode).
    #[arg(long, env = "CONVRNN_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,

    /// Do not draw the progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,

    /// Free bytes to assume on the output file system instead of asking it (tests).
    #[arg(long, hide = true)]
    pub assume_free_bytes: Option<u64>,

    /// Abort the process (as a crash would) after this many batches are recorded (tests).
    #[arg(long, hide = true)]
    pub abort_after_batches: Option<u64>,
}

/// `--shard I/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// This shard's rows of `n`: the `index`-th of `count` contiguous, near-equal slices.
    pub fn rows(&self, n: usize) -> std::ops::Range<usize> {
        (self.index * n / self.count)..((self.index + 1) * n / self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// `--pool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum SpatialPool {
    None,
    Mean,
    Max,
    /// Average over a `k x k` grid.
    Avg(usize),
}

impl FromStr for SpatialPool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "none" => Ok(Self::None),
            "mean" => Ok(Self::Mean),
            "max" => Ok(Self::Max),
            other => other
                .strip_prefix("avg")
                .and_then(|k| k.parse::<usize>().ok())
                .filter(|&k| (1..=1024).contains(&k))
                .map(Self::Avg)
                .ok_or_else(|| {
                    format!("--pool {other:?}: expected none, mean, max or avgK (K from 1 to 1024, e.g. avg4)")
                }),
        }
    }
}

impl std::fmt::Display for SpatialPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => write!(f, "none"),
            Self::Mean => write!(f, "mean"),
            Self::Max => write!(f, "max"),
            Self::Avg(k) => write!(f, "avg{k}"),
        }
    }
}

impl From<SpatialPool> for String {
    fn from(p: SpatialPool) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for SpatialPool {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    #[serde(rename = "float32")]
    F32,
    #[serde(rename = "float16")]
    F16,
}

/// A row of a layer in its output dtype ([`Dtype::encode`]).
pub enum EncodedRow {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl EncodedRow {
    /// The row as the file stores it: the `.npy` files are little-endian, as is every target this
    /// builds for (checked at compile time below).
    pub fn bytes(&self) -> &[u8] {
        match self {
            EncodedRow::F32(v) => bytemuck::cast_slice(v),
            EncodedRow::F16(v) => bytemuck::cast_slice(v),
        }
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("the .npy rows are written from memory as little-endian");

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// NumPy's `descr` for the `.npy` header.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F16 => "<f2",
        }
    }

    /// One row in this type, as the `.npy` file stores it (little-endian; f16 rounds to
    /// nearest). A float32 row is kept as it is: its bytes are written straight from it.
    pub fn encode(self, values: Vec<f32>) -> EncodedRow {
        match self {
            Dtype::F32 => EncodedRow::F32(values),
            Dtype::F16 => {
                use half::slice::HalfFloatSliceExt;
                let mut halves = vec![half::f16::ZERO; values.len()];
                halves.convert_from_f32_slice(&values);
                EncodedRow::F16(halves)
            }
        }
    }
}

impl FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "f32" | "float32" => Ok(Dtype::F32),
            "f16" | "float16" => Ok(Dtype::F16),
            other => Err(format!("--dtype {other:?}: expected f32 or f16")),
        }
    }
}

/// `--time-bins START:END,...` in ms.
pub fn parse_time_bins(spec: &str) -> Result<Vec<(f64, f64)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|bin| {
            let bad = || format!("--time-bins: {bin:?} is not START:END in milliseconds");
            let (a, b) = bin.split_once(':').ok_or_else(bad)?;
            let a: f64 = a.trim().parse().map_err(|_| bad())?;
            let b: f64 = b.trim().parse().map_err(|_| bad())?;
            if !(a.is_finite() && b.is_finite() && a < b) {
                return Err(format!("--time-bins: {bin:?} must have START < END"));
            }
            Ok((a, b))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|bins| {
            if bins.is_empty() {
                Err("--time-bins is empty".to_string())
            } else {
                Ok(bins)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_row_once() {
        for n in [0, 1, 7, 10, 1000] {
            for count in 1..6 {
                let mut rows = Vec::new();
                for index in 0..count {
                    rows.extend(Shard { index, count }.rows(n));
                }
                assert_eq!(
                    rows,
                    (0..n).collect::<Vec<_>>(),
                    "{n} rows in {count} shards"
                );
            }
        }
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["3/3", "1/0", "x/2", "1"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pool_and_dtype_forms() {
        assert_eq!("avg4".parse::<SpatialPool>().unwrap(), SpatialPool::Avg(4));
        assert_eq!("mean".parse::<SpatialPool>().unwrap(), SpatialPool::Mean);
        for bad in ["avg0", "avg", "min", "avgx"] {
            assert!(bad.parse::<SpatialPool>().is_err(), "{bad}");
        }
        assert_eq!(SpatialPool::Avg(3).to_string(), "avg3");
        assert_eq!("f16".parse::<Dtype>().unwrap(), Dtype::F16);
        assert_eq!(
            Dtype::F16.encode(vec![1.0, -2.5]).bytes(),
            [0x00, 0x3c, 0x00, 0xc1]
        );
        assert_eq!(
            Dtype::F32.encode(vec![1.0, -2.5]).bytes(),
            [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]
        );
    }

    #[test]
    fn time_bins() {
        assert_eq!(
            parse_time_bins("70:170, 170:250").unwrap(),
            vec![(70.0, 170.0), (170.0, 250.0)]
        );
        assert!(parse_time_bins("170:70").is_err());
        assert!(parse_time_bins("abc").is_err());
        assert!(parse_time_bins("").is_err());
    }
}
