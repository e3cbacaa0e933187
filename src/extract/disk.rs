//! Free space on the output file system, checked against the predicted size before anything is
//! written.

use std::path::Path;

use super::ExtractError;

/// Bytes available to this user on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the zeroed struct from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// A byte count for people: `1.5 GB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Refuses a run that needs more than `free` bytes.
pub fn check(dir: &Path, needed: u64, free: u64) -> Result<(), ExtractError> {
    if needed > free {
        return Err(ExtractError::DiskFull(format!(
            "this run would write {} into {} but only {} is free there: free space, choose \
             another --out, or make the output smaller (--pool, --time-bins, --layers, --dtype \
             f16, --shard)",
            human(needed),
            dir.display(),
            human(free)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_and_refusal() {
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
        assert!(check(Path::new("/tmp"), 10, 10).is_ok());
        let err = check(Path::new("/tmp"), 2_000_000, 1_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2.0 MB") && err.contains("1.0 kB"), "{err}");
        assert_eq!(human(999), "999 B");
    }
}
