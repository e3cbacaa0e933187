//! Reads the server's `.npz` answers: a ZIP of stored (uncompressed) `.npy` entries, little-endian
//! float32, C order. Only what [`crate::npz::NpzWriter`] writes; anything else is an error.

use std::collections::BTreeMap;

/// One array: its shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn u16_at(b: &[u8], p: usize) -> Result<usize, String> {
    b.get(p..p + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
        .ok_or_else(|| "truncated archive".to_string())
}

fn u32_at(b: &[u8], p: usize) -> Result<usize, String> {
    b.get(p..p + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .ok_or_else(|| "truncated archive".to_string())
}

/// The float32 arrays of an archive by name (other dtypes are skipped).
pub fn read_f32_arrays(bytes: &[u8]) -> Result<BTreeMap<String, Array>, String> {
    let mut out = BTreeMap::new();
    let mut pos = 0;
    while bytes.get(pos..pos + 4) == Some(&[0x50, 0x4b, 0x03, 0x04]) {
        if u16_at(bytes, pos + 8)? != 0 {
            return Err("compressed entries are not supported".into());
        }
        let size = u32_at(bytes, pos + 18)?;
        let name_len = u16_at(bytes, pos + 26)?;
        let extra_len = u16_at(bytes, pos + 28)?;
        let name_start = pos + 30;
        let data_start = name_start + name_len + extra_len;
        let name = bytes
            .get(name_start..name_start + name_len)
            .ok_or("truncated archive")?;
        let name = String::from_utf8_lossy(name)
            .trim_end_matches(".npy")
            .to_string();
        let data = bytes
            .get(data_start..data_start + size)
            .ok_or("truncated archive")?;
        if let Some(array) = parse_npy(data).map_err(|e| format!("{name}: {e}"))? {
            out.insert(name, array);
        }
        pos = data_start + size;
    }
    Ok(out)
}

/// A float32 `.npy`, or None for another dtype.
fn parse_npy(data: &[u8]) -> Result<Option<Array>, String> {
    if data.get(..6) != Some(b"\x93NUMPY") {
        return Err("not an .npy entry".into());
    }
    let header_len = u16_at(data, 8)?;
    let header = data.get(10..10 + header_len).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let field = |key: &str| -> Option<&str> { header.split(&format!("'{key}': ")).nth(1) };
    let descr = field("descr")
        .and_then(|d| d.split('\'').nth(1))
        .ok_or("no descr")?;
    if descr != "<f4" {
        return Ok(None);
    }
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran order".into());
    }
    let shape_text = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or("no shape")?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_text:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let payload = &data[10 + header_len..];
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    if payload.len() != count * 4 {
        return Err(format!("{} bytes for shape {shape:?}", payload.len()));
    }
    let data = payload
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Some(Array { shape, data }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npz::{NpyData, NpzWriter};

    #[test]
    fn reads_what_the_server_writes() {
        let mut npz = NpzWriter::new();
        npz.add(
            "conv1",
            &[2, 1, 3],
            NpyData::F32(&[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]),
        )
        .unwrap();
        npz.add("steps", &[1], NpyData::I64(&[4])).unwrap();
        npz.add("x", &[0], NpyData::F32(&[])).unwrap();
        let bytes = npz.finish();
        let arrays = read_f32_arrays(&bytes).unwrap();
        assert_eq!(arrays["conv1"].shape, vec![2, 1, 3]);
        assert_eq!(arrays["conv1"].data, vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        assert!(!arrays.contains_key("steps"));
        assert_eq!(arrays["x"].data.len(), 0);
        assert!(read_f32_arrays(&bytes[..100]).is_err());
    }
}
