//! The stimulus list: from a directory, a glob or a stimulus CSV, each stimulus an id and a path,
//! in a fixed order (every shard of a run must list the same rows).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ExtractError;

/// File extensions a directory listing takes as images.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"];

/// Column names accepted for the image path in a stimulus CSV, in order of preference
/// (Brain-Score's StimulusSet CSVs use `image_file_name` or `filename`).
const PATH_COLUMNS: &[&str] = &["path", "image_path", "image_file_name", "filename", "file"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StimulusEntry {
    pub id: String,
    pub path: PathBuf,
}

/// Lists the stimuli of `spec`: a CSV file, a directory, or a glob pattern.
pub fn list(spec: &str) -> Result<Vec<StimulusEntry>, ExtractError> {
    let path = Path::new(spec);
    let entries = if path.is_dir() {
        from_dir(path)?
    } else if path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        from_csv(path)?
    } else if path.is_file() {
        vec![entry_for(path.to_path_buf())]
    } else {
        from_glob(spec)?
    };
    if entries.is_empty() {
        return Err(ExtractError::Input(format!(
            "--images {spec:?} lists no images"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = entries.iter().find(|e| !seen.insert(e.id.as_str())) {
        return Err(ExtractError::Input(format!(
            "stimulus id {:?} occurs twice in --images {spec:?} (ids must be unique)",
            dup.id
        )));
    }
    Ok(entries)
}

/// An entry whose id is the file name without its extension.
fn entry_for(path: PathBuf) -> StimulusEntry {
    let id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    StimulusEntry { id, path }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn from_dir(dir: &Path) -> Result<Vec<StimulusEntry>, ExtractError> {
    let io = |e: std::io::Error| ExtractError::Input(format!("reading {}: {e}", dir.display()));
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.is_file() && is_image(&p) {
            paths.push(p);
        }
    }
    paths.sort();
    Ok(paths.into_iter().map(entry_for).collect())
}

fn from_glob(pattern: &str) -> Result<Vec<StimulusEntry>, ExtractError> {
    let paths = glob::glob(pattern).map_err(|e| {
        ExtractError::Input(format!(
            "--images {pattern:?} is not a directory, a CSV file or a valid glob: {e}"
        ))
    })?;
    let mut out = Vec::new();
    for p in paths {
        let p = p.map_err(|e| ExtractError::Input(format!("--images {pattern:?}: {e}")))?;
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out.into_iter().map(entry_for).collect())
}

fn from_csv(file: &Path) -> Result<Vec<StimulusEntry>, ExtractError> {
    let err = |msg: String| ExtractError::Input(format!("{}: {msg}", file.display()));
    let mut reader = csv::Reader::from_path(file).map_err(|e| err(e.to_string()))?;
    let headers = reader.headers().map_err(|e| err(e.to_string()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let id_col = column("stimulus_id").ok_or_else(|| err("no `stimulus_id` column".into()))?;
    let path_col = PATH_COLUMNS.iter().find_map(|c| column(c)).ok_or_else(|| {
        err(format!(
            "no path column (one of: {})",
            PATH_COLUMNS.join(", ")
        ))
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| err(e.to_string()))?;
        let id = record.get(id_col).unwrap_or("").trim();
        let path = record.get(path_col).unwrap_or("").trim();
        if id.is_empty() || path.is_empty() {
            return Err(err(format!(
                "row {} has an empty stimulus_id or path",
                i + 1
            )));
        }
        let path = Path::new(path);
        out.push(StimulusEntry {
            id: id.to_string(),
            path: if path.is_absolute() {
                path.to_path_buf()
            } else {
                base.join(path)
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("convrnn-stimuli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn directory_glob_and_csv() {
        let dir = scratch("forms");
        for f in ["b.png", "a.PNG", "c.jpg", "notes.txt"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let ids = |v: Vec<StimulusEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(list(dir.to_str().unwrap()).unwrap()), ["a", "b", "c"]);
        let pattern = format!("{}/*.png", dir.display());
        assert_eq!(ids(list(&pattern).unwrap()), ["b"]);
        let csv = dir.join("set.csv");
        std::fs::write(
            &csv,
            "stimulus_id,image_file_name,label\nz9,c.jpg,1\n\"a,1\",b.png,2\n",
        )
        .unwrap();
        let got = list(csv.to_str().unwrap()).unwrap();
        assert_eq!(got[0].id, "z9");
        assert_eq!(got[0].path, dir.join("c.jpg"));
        assert_eq!(got[1].id, "a,1");
        std::fs::write(&csv, "stimulus_id,path\nx,b.png\nx,c.jpg\n").unwrap();
        assert!(list(csv.to_str().unwrap())
            .unwrap_err()
            .to_string()
            .contains("twice"));
        std::fs::write(&csv, "id,path\nx,b.png\n").unwrap();
        assert!(list(csv.to_str().unwrap())
            .unwrap_err()
            .to_string()
            .contains("stimulus_id"));
        assert!(list(&format!("{}/*.gif", dir.display())).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
