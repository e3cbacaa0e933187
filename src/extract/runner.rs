//! Runs an extraction: list, plan, claim the directory, check the disk, then batches in flight
//! through the source, each written in place, synced, and recorded in this shard's log, in that
//! order, so an interruption loses at most the batches in flight.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;

use super::args::{EncodedRow, ExtractArgs, Shard};
use super::local::{hex, LocalSource};
use super::manifest::{self, Manifest};
use super::outdir::{self, BatchRecord, RowRecord, ShardLog};
use super::plan::{self, Plan};
use super::remote::RemoteSource;
use super::writer::Writer;
use super::{disk, output_io, stimuli, ExtractError};

/// One image as read from disk: its bytes (or why they could not be read) and their sha256.
pub struct Loaded {
    pub id: String,
    pub bytes: Result<Vec<u8>, String>,
    pub sha256: Option<String>,
}

/// One image's rows, per layer in plan order, or why it has none.
pub type Features = Result<Vec<Vec<f32>>, String>;

enum Source {
    Local(LocalSource),
    Remote(RemoteSource),
}

impl Source {
    async fn features(
        &self,
        plan: &Arc<Plan>,
        images: Vec<Loaded>,
    ) -> Result<Vec<Features>, ExtractError> {
        match self {
            Source::Local(s) => s.features(plan, images).await,
            Source::Remote(s) => s.features(plan, images).await,
        }
    }
}

/// A finished batch, encoded and ready to write.
struct Done {
    rows: Range<usize>,
    /// Per layer, the batch's rows in the output dtype.
    layers: Vec<Vec<EncodedRow>>,
    records: Vec<RowRecord>,
}

/// What a run reports at the end.
#[derive(Debug)]
pub struct Summary {
    pub manifest: Manifest,
    pub written_rows: usize,
    pub seconds: f64,
    /// Of `seconds`, the time before the first batch could run (in-process: building and warming
    /// the model's sessions); the rest is what each further image costs.
    pub startup_seconds: f64,
}

fn read_images(plan: &Plan, rows: Range<usize>) -> Vec<Loaded> {
    use sha2::Digest;
    rows.map(|r| {
        let path = Path::new(&plan.stimulus_paths[r]);
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()));
        let sha256 = bytes.as_ref().ok().map(|b| hex(&sha2::Sha256::digest(b)));
        Loaded {
            id: plan.stimulus_ids[r].clone(),
            bytes,
            sha256,
        }
    })
    .collect()
}

/// Reads, runs and encodes one batch.
async fn run_batch(
    source: &Source,
    plan: &Arc<Plan>,
    rows: Range<usize>,
) -> Result<Done, ExtractError> {
    let images = {
        let plan = plan.clone();
        let rows = rows.clone();
        tokio::task::spawn_blocking(move || read_images(&plan, rows))
            .await
            .map_err(|e| ExtractError::Internal(e.to_string()))?
    };
    let hashes: Vec<Option<String>> = images.iter().map(|l| l.sha256.clone()).collect();
    let features = source.features(plan, images).await?;
    let plan = plan.clone();
    tokio::task::spawn_blocking(move || encode(&plan, rows, hashes, features))
        .await
        .map_err(|e| ExtractError::Internal(e.to_string()))?
}

fn encode(
    plan: &Plan,
    rows: Range<usize>,
    hashes: Vec<Option<String>>,
    features: Vec<Features>,
) -> Result<Done, ExtractError> {
    let mut layers: Vec<Vec<EncodedRow>> = plan
        .layers
        .iter()
        .map(|_| Vec::with_capacity(rows.len()))
        .collect();
    let mut records = Vec::with_capacity(rows.len());
    for (f, sha256) in features.into_iter().zip(hashes) {
        match f {
            Ok(layer_rows) => {
                for ((layer, row), out) in plan.layers.iter().zip(layer_rows).zip(&mut layers) {
                    if row.len() != layer.row_values() {
                        return Err(ExtractError::Internal(format!(
                            "{}: {} values for a row of {}",
                            layer.name,
                            row.len(),
                            layer.row_values()
                        )));
                    }
                    out.push(layer.dtype.encode(row));
                }
                records.push(RowRecord {
                    sha256,
                    error: None,
                });
            }
            Err(error) => {
                for (layer, out) in plan.layers.iter().zip(&mut layers) {
                    out.push(layer.dtype.encode(vec![f32::NAN; layer.row_values()]));
                }
                records.push(RowRecord {
                    sha256,
                    error: Some(error),
                });
            }
        }
    }
    Ok(Done {
        rows,
        layers,
        records,
    })
}

/// A batch's rows of one layer, consecutive in its file: small rows (pooled features) gathered
/// into one write, large ones written from where they are, since copying them would cost more
/// than the calls it saves.
fn write_layer_rows(
    writer: &Writer,
    layer: usize,
    first_row: usize,
    rows: &[EncodedRow],
) -> Result<(), ExtractError> {
    const GATHER_BELOW: usize = 64 * 1024;
    if rows.iter().all(|r| r.bytes().len() < GATHER_BELOW) {
        let joined = rows
            .iter()
            .map(EncodedRow::bytes)
            .collect::<Vec<_>>()
            .concat();
        return writer.write_rows(layer, first_row, &joined);
    }
    for (i, row) in rows.iter().enumerate() {
        writer.write_rows(layer, first_row + i, row.bytes())?;
    }
    Ok(())
}

/// Contiguous runs of `pending` rows, cut into batches of at most `batch`.
pub fn batches(pending: &[usize], batch: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pending.len() {
        let start = pending[i];
        let mut end = start + 1;
        i += 1;
        while i < pending.len() && pending[i] == end && end - start < batch {
            end += 1;
            i += 1;
        }
        out.push(start..end);
    }
    out
}

fn progress_bar(total: usize, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} images  {per_sec}  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// `convrnn-serve extract`.
pub fn run(args: ExtractArgs) -> Result<Summary, ExtractError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ExtractError::Internal(e.to_string()))?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: ExtractArgs) -> Result<Summary, ExtractError> {
    let started = Instant::now();
    let stimuli = stimuli::list(&args.images)?;
    let batch = args.batch as usize;
    let (source, meta, weights, source_name, concurrency) = match &args.server {
        Some(server) => {
            let c = args.concurrency.map_or(4, |c| c as usize);
            let (s, meta, weights) =
                RemoteSource::open(server, &args.model, args.api_key.clone(), c).await?;
            (Source::Remote(s), meta, weights, server.clone(), c)
        }
        None => {
            let model = PathBuf::from(&args.model);
            if !model.is_file() {
                return Err(ExtractError::Usage(format!(
                    "--model {:?} is not a file (with --server URL it names a served model)",
                    args.model
                )));
            }
            let (s, meta, weights) = LocalSource::open(
                &model,
                &args.devices,
                args.ort_library.as_deref(),
                |meta| plan::select_layers(&args, meta),
                batch,
                args.concurrency.map(|c| c as usize),
            )?;
            let c = s.sessions;
            (
                Source::Local(s),
                meta,
                Some(weights),
                model.display().to_string(),
                c,
            )
        }
    };
    let plan = Arc::new(plan::build(&args, &meta, weights, &stimuli)?);
    drop(stimuli);
    let out = &args.out;
    std::fs::create_dir_all(out).map_err(|e| output_io(out, e))?;
    outdir::check_fresh(out)?;
    outdir::claim(out, &plan)?;
    let shard = args.shard.unwrap_or(Shard::WHOLE);
    let mut log = ShardLog::open(out, shard, args.resume)?;
    let done = outdir::read_records(out, plan.rows())?;
    let pending: Vec<usize> = shard
        .rows(plan.rows())
        .filter(|&r| done[r].is_none())
        .collect();
    drop(done);

    let total = plan.bytes_for_rows(plan.rows()) + Writer::header_bytes(&plan);
    let needed = plan.bytes_for_rows(pending.len());
    let free = match args.assume_free_bytes {
        Some(b) => b,
        None => disk::free_bytes(out).map_err(|e| output_io(out, e))?,
    };
    eprintln!(
        "extract: {} stimuli x {} layers ({}) of {} -> {}: {} in all; this run writes {} ({} rows), {} free",
        plan.rows(),
        plan.layers.len(),
        plan.layers
            .iter()
            .map(|l| format!("{} {:?}", l.name, &l.shape[1..]))
            .collect::<Vec<_>>()
            .join(", "),
        plan.model.name,
        out.display(),
        disk::human(total),
        disk::human(needed),
        pending.len(),
        disk::human(free),
    );
    disk::check(out, needed, free)?;
    let writer = Writer::open(out, &plan)?;

    if let Source::Local(s) = &source {
        s.ready().await?;
    }
    let startup_seconds = started.elapsed().as_secs_f64();
    let bar = progress_bar(pending.len(), args.quiet);
    let mut stream = futures_util::stream::iter(batches(&pending, batch))
        .map(|rows| run_batch(&source, &plan, rows))
        .buffer_unordered(concurrency.max(1));
    let mut written_rows = 0;
    let mut recorded_batches = 0u64;
    let mut failures = 0;
    while let Some(done) = stream.next().await {
        let done = done?;
        if args.strict {
            if let Some((i, r)) = done
                .records
                .iter()
                .enumerate()
                .find(|(_, r)| r.error.is_some())
            {
                let row = done.rows.start + i;
                return Err(ExtractError::Image(format!(
                    "stimulus {:?} ({}): {} (--strict; rows written so far are kept, --resume continues)",
                    plan.stimulus_ids[row],
                    plan.stimulus_paths[row],
                    r.error.as_deref().unwrap_or("")
                )));
            }
        }
        for (layer, rows) in done.layers.iter().enumerate() {
            write_layer_rows(&writer, layer, done.rows.start, rows)?;
        }
        writer.sync()?;
        failures += done.records.iter().filter(|r| r.error.is_some()).count();
        log.append(&BatchRecord {
            start: done.rows.start,
            rows: done.records,
        })?;
        written_rows += done.rows.len();
        recorded_batches += 1;
        bar.inc(done.rows.len() as u64);
        if failures > 0 {
            bar.set_message(format!("{failures} failed"));
        }
        if args.abort_after_batches == Some(recorded_batches) {
            std::process::abort();
        }
    }
    drop(stream);
    bar.finish_and_clear();
    if let Source::Local(s) = &source {
        s.shutdown();
    }
    let manifest = manifest::write(out, &plan, &source_name)?;
    Ok(Summary {
        manifest,
        written_rows,
        seconds: started.elapsed().as_secs_f64(),
        startup_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_gaps() {
        assert_eq!(batches(&[0, 1, 2, 3, 4], 2), vec![0..2, 2..4, 4..5]);
        assert_eq!(batches(&[1, 2, 5, 6, 7, 9], 4), vec![1..3, 5..8, 9..10]);
        assert!(batches(&[], 3).is_empty());
    }
}
