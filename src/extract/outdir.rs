//! The bookkeeping inside an output directory (`DIR/.extract/`): the plan every shard must agree
//! on, and one append-only log per shard with a line per batch whose rows are durably written.
//! The logs are the progress record: `--resume` skips the rows they hold, and the manifest is
//! assembled from all of them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::args::Shard;
use super::plan::Plan;
use super::{output_io, ExtractError};

const STATE_DIR: &str = ".extract";
const PLAN_FILE: &str = "plan.json";

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRecord {
    /// sha256 of the image file, when it could be read.
    pub sha256: Option<String>,
    /// Why the row holds NaN instead of features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One log line: rows `start..start + rows.len()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub start: usize,
    pub rows: Vec<RowRecord>,
}

fn state_dir(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR)
}

/// Writes the plan into a new output directory, or checks that the directory's plan is this
/// one (another shard's, or the interrupted run's). A directory holding other files and no plan
/// is refused, so a typo in --out cannot scribble over unrelated data.
pub fn claim(dir: &Path, plan: &Plan) -> Result<(), ExtractError> {
    let state = state_dir(dir);
    std::fs::create_dir_all(&state).map_err(|e| output_io(&state, e))?;
    let path = state.join(PLAN_FILE);
    let text =
        serde_json::to_string_pretty(plan).map_err(|e| ExtractError::Internal(e.to_string()))?;
    match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(mut f) => {
            // Another shard may read it meanwhile: write whole, then it is complete.
            f.write_all(text.as_bytes())
                .map_err(|e| output_io(&path, e))?;
            f.sync_all().map_err(|e| output_io(&path, e))?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A shard that created it a moment ago may still be writing it.
            for _ in 0..50 {
                let existing = std::fs::read_to_string(&path).map_err(|e| output_io(&path, e))?;
                // Compared as text: both come from the same serializer, and parsed floats
                // need not round-trip to the last bit.
                if existing == text {
                    return Ok(());
                }
                if let Ok(theirs) = serde_json::from_str::<Plan>(&existing) {
                    return Err(ExtractError::Output(format!(
                        "{} holds an extraction with other settings ({}): use a new --out, or \
                         repeat that run's flags to resume it",
                        dir.display(),
                        plan_difference(&theirs, plan)
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(ExtractError::Output(format!(
                "{} is not a valid plan",
                path.display()
            )))
        }
        Err(e) => Err(output_io(&path, e)),
    }
}

/// The first thing two plans differ in, for the error message.
fn plan_difference(a: &Plan, b: &Plan) -> String {
    if a.model != b.model {
        "model".into()
    } else if a.stimulus_ids != b.stimulus_ids || a.stimulus_paths != b.stimulus_paths {
        "stimuli".into()
    } else if a
        .layers
        .iter()
        .map(|l| &l.name)
        .ne(b.layers.iter().map(|l| &l.name))
    {
        "layers".into()
    } else if a.time_bins != b.time_bins {
        "steps or time bins".into()
    } else if a.pool != b.pool {
        "pool".into()
    } else if a.dtype != b.dtype {
        "dtype".into()
    } else {
        "format or preprocessing".into()
    }
}

/// Refuses to start in a non-empty directory without a plan of ours.
pub fn check_fresh(dir: &Path) -> Result<(), ExtractError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let has_plan = state_dir(dir).join(PLAN_FILE).exists();
    let other = entries.flatten().any(|e| e.file_name() != STATE_DIR);
    if other && !has_plan {
        return Err(ExtractError::Output(format!(
            "{} is not empty and holds no extraction: choose a new or empty --out",
            dir.display()
        )));
    }
    Ok(())
}

fn log_path(dir: &Path, shard: Shard) -> PathBuf {
    state_dir(dir).join(format!("shard-{}-of-{}.jsonl", shard.index, shard.count))
}

/// This shard's log, opened for appending.
pub struct ShardLog {
    path: PathBuf,
    file: File,
}

impl ShardLog {
    /// Opens (creating) the log. An existing non-empty log needs `resume`; a torn last line (a
    /// crash mid-append) is cut off.
    pub fn open(dir: &Path, shard: Shard, resume: bool) -> Result<Self, ExtractError> {
        let path = log_path(dir, shard);
        let io = |e| output_io(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io)?;
        if !text.is_empty() && !resume {
            return Err(ExtractError::Output(format!(
                "{} already holds rows of this extraction: pass --resume to continue it, or \
                 choose a new --out",
                dir.display()
            )));
        }
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            file.set_len(whole as u64).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok(Self { path, file })
    }

    /// Appends `record` durably (the rows it names must already be synced).
    pub fn append(&mut self, record: &BatchRecord) -> Result<(), ExtractError> {
        let mut line =
            serde_json::to_vec(record).map_err(|e| ExtractError::Internal(e.to_string()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| output_io(&self.path, e))?;
        self.file.sync_data().map_err(|e| output_io(&self.path, e))
    }
}

/// Every row any shard log records (of any sharding of this plan), by row; later lines win.
pub fn read_records(dir: &Path, rows: usize) -> Result<Vec<Option<RowRecord>>, ExtractError> {
    let state = state_dir(dir);
    let mut out = vec![None; rows];
    let entries = std::fs::read_dir(&state).map_err(|e| output_io(&state, e))?;
    let mut logs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).map_err(|e| output_io(&log, e))?;
        // A line without its newline is an append a crash cut short: not a record.
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        for line in complete.lines().filter(|l| !l.trim().is_empty()) {
            let record: BatchRecord = serde_json::from_str(line).map_err(|e| {
                ExtractError::Output(format!(
                    "{}: unreadable progress record: {e}",
                    log.display()
                ))
            })?;
            for (i, row) in record.rows.into_iter().enumerate() {
                if let Some(slot) = out.get_mut(record.start + i) {
                    *slot = Some(row);
                }
            }
        }
    }
    Ok(out)
}

/// An exclusive lock on the directory's bookkeeping, held while the manifest is assembled, so
/// that of two shards finishing at once the later one writes the complete manifest.
pub struct DirLock {
    _file: File,
}

pub fn lock(dir: &Path) -> Result<DirLock, ExtractError> {
    let path = state_dir(dir).join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| output_io(&path, e))?;
    // SAFETY: flock on a valid descriptor this function owns; released when the file closes.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(output_io(&path, std::io::Error::last_os_error()));
    }
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_lines_are_dropped_and_resume_is_required() {
        let dir = std::env::temp_dir().join(format!("convrnn-outdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(STATE_DIR)).unwrap();
        let shard = Shard { index: 1, count: 2 };
        let mut log = ShardLog::open(&dir, shard, false).unwrap();
        let row = |s: &str| RowRecord {
            sha256: Some(s.into()),
            error: None,
        };
        log.append(&BatchRecord {
            start: 2,
            rows: vec![row("a"), row("b")],
        })
        .unwrap();
        drop(log);
        // A crash in the middle of the next append.
        let path = log_path(&dir, shard);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"start\":4,\"ro").unwrap();
        let records = read_records(&dir, 5).unwrap();
        assert_eq!(records.iter().filter(|r| r.is_some()).count(), 2);
        assert_eq!(records[3], Some(row("b")));
        assert!(
            ShardLog::open(&dir, shard, false).is_err(),
            "needs --resume"
        );
        let mut log = ShardLog::open(&dir, shard, true).unwrap();
        log.append(&BatchRecord {
            start: 4,
            rows: vec![row("c")],
        })
        .unwrap();
        let records = read_records(&dir, 5).unwrap();
        assert_eq!(records[4], Some(row("c")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
