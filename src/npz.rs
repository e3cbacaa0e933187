//! Writing NumPy `.npy` arrays and `.npz` archives, so that activations can be returned in a
//! form `np.load` opens directly (`Accept: application/x-npz`).
//!
//! - `.npy`: format version 1.0, little-endian dtypes `<f4`, `<i8`, `<f8`, C order; the header
//!   is padded with spaces and ends in `\n` so that the data starts at a multiple of 64 bytes
//!   (what NumPy itself writes, and what lets `np.load(mmap_mode=...)` map it aligned).
//! - `.npz`: a ZIP archive of `NAME.npy` entries, *stored* (uncompressed): float activations
//!   barely compress, and deflate would cost far more CPU than the bytes it saves, while stored
//!   entries are a straight copy.
//!
//! The ZIP container is written by hand rather than with the `zip` crate: for stored entries
//! whose sizes and CRC are known up front it is ~100 lines (local headers, central directory,
//! end record), with `crc32fast` (SIMD) for the CRCs; the `zip` crate would add a dozen
//! transitive crates and build time for features we would switch off, and would still need
//! an in-memory `Cursor` dance. Output is deterministic: every entry gets the DOS timestamp
//! 1980-01-01 00:00, so the same arrays give the same bytes.
//!
//! **Size limit (no ZIP64):** the archive is built in memory for one HTTP response, so instead
//! of ZIP64 it is capped just below 4 GiB (every offset and size must fit the classic 32-bit
//! fields) and 65,534 entries; [`NpzWriter::add`] returns [`NpzError::TooLarge`] /
//! [`NpzError::TooManyArrays`] beyond that, before writing anything. A response that big
//! should be requested pooled or per layer instead.

use std::collections::HashSet;

/// A borrowed, C-ordered array buffer of one of the supported dtypes.
#[derive(Debug, Clone, Copy)]
pub enum NpyData<'a> {
    /// `<f4`
    F32(&'a [f32]),
    /// `<i8`
    I64(&'a [i64]),
    /// `<f8`
    F64(&'a [f64]),
}

impl NpyData<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyData::F32(d) => d.len(),
            NpyData::I64(d) => d.len(),
            NpyData::F64(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The NumPy dtype string (`descr`).
    pub fn descr(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "<f4",
            NpyData::I64(_) => "<i8",
            NpyData::F64(_) => "<f8",
        }
    }

    fn item_size(&self) -> usize {
        match self {
            NpyData::F32(_) => 4,
            NpyData::I64(_) | NpyData::F64(_) => 8,
        }
    }

    /// Append the elements as little-endian bytes: a plain copy on little-endian machines.
    fn write_le(&self, out: &mut Vec<u8>) {
        #[cfg(target_endian = "little")]
        match self {
            NpyData::F32(d) => out.extend_from_slice(bytemuck::cast_slice(d)),
            NpyData::I64(d) => out.extend_from_slice(bytemuck::cast_slice(d)),
            NpyData::F64(d) => out.extend_from_slice(bytemuck::cast_slice(d)),
        }
        #[cfg(target_endian = "big")]
        match self {
            NpyData::F32(d) => out.extend(d.iter().flat_map(|x| x.to_le_bytes())),
            NpyData::I64(d) => out.extend(d.iter().flat_map(|x| x.to_le_bytes())),
            NpyData::F64(d) => out.extend(d.iter().flat_map(|x| x.to_le_bytes())),
        }
    }
}

/// Why an array could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NpzError {
    #[error("shape {shape:?} holds {expected} elements but the data has {actual}")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("shape has {0} dimensions; NumPy allows at most {MAX_DIMS}")]
    TooManyDims(usize),
    #[error("invalid array name {0:?}: must be 1-255 bytes, without '/', '\\', control characters or a leading '.'")]
    InvalidName(String),
    #[error("array name {0:?} is used twice")]
    DuplicateName(String),
    #[error("an .npz without ZIP64 holds at most {MAX_ENTRIES} arrays")]
    TooManyArrays,
    #[error("the .npz would be {bytes} bytes; without ZIP64 the limit is {MAX_ARCHIVE_BYTES}")]
    TooLarge { bytes: u64 },
}

/// NumPy's `NPY_MAXDIMS` (64 since NumPy 2.0; 32 before, which this does not police).
pub const MAX_DIMS: usize = 64;
/// Every offset and size must be below 0xFFFF_FFFF (that value means "see ZIP64").
pub const MAX_ARCHIVE_BYTES: u64 = 0xFFFF_FFFE;
/// 0xFFFF entries would likewise mean "see ZIP64".
pub const MAX_ENTRIES: usize = 0xFFFE;

const NPY_MAGIC: &[u8] = b"\x93NUMPY";
/// Magic (6) + version (2) + header length (2).
const NPY_PREAMBLE: usize = 10;
const LOCAL_HEADER: usize = 30;
const CENTRAL_HEADER: usize = 46;
const END_RECORD: usize = 22;
/// ZIP spec version 2.0: enough for stored entries and the UTF-8 name flag.
const ZIP_VERSION: u16 = 20;
/// General-purpose flag bit 11: the name is UTF-8 (Python's zipfile then decodes it as such).
const FLAG_UTF8: u16 = 0x0800;
/// DOS date 1980-01-01 (year 0 since 1980, month 1, day 1), time 00:00:00.
const DOS_DATE: u16 = (1 << 5) | 1;
const DOS_TIME: u16 = 0;

/// `shape` must hold exactly `len` elements in at most `MAX_DIMS` dimensions.
fn check_shape(shape: &[usize], len: usize) -> Result<(), NpzError> {
    if shape.len() > MAX_DIMS {
        return Err(NpzError::TooManyDims(shape.len()));
    }
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX);
    if expected != len {
        return Err(NpzError::ShapeMismatch {
            shape: shape.to_vec(),
            expected,
            actual: len,
        });
    }
    Ok(())
}

/// The `.npy` v1.0 header (magic, version, length, dict, padding, newline), a multiple of 64.
pub fn npy_header(shape: &[usize], descr: &str) -> Vec<u8> {
    // Python tuple syntax: `()`, `(3,)`, `(2, 3)`.
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_str = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_str}, }}");
    // Pad with spaces so that preamble + dict + padding + '\n' is a multiple of 64.
    let unpadded = NPY_PREAMBLE + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let header_len = total - NPY_PREAMBLE;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    // At most 64 dims of at most 20 digits each: the dict is far below the v1.0 limit of
    // 65535 bytes, so the cast cannot truncate.
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// The `.npy` file for `data` with `shape`, or an error if they disagree.
pub fn try_npy_bytes(shape: &[usize], data: NpyData) -> Result<Vec<u8>, NpzError> {
    check_shape(shape, data.len())?;
    let header = npy_header(shape, data.descr());
    let mut out = Vec::with_capacity(header.len() + data.len() * data.item_size());
    out.extend_from_slice(&header);
    data.write_le(&mut out);
    Ok(out)
}

/// The `.npy` file (format 1.0) for `data` laid out in C order with `shape`.
///
/// # Panics
/// If `shape`'s element count differs from `data.len()` or it has more than 64 dimensions
/// (a programming error: shapes come from the model, not from requests). Use
/// [`try_npy_bytes`] where that is not certain.
pub fn npy_bytes(shape: &[usize], data: NpyData) -> Vec<u8> {
    match try_npy_bytes(shape, data) {
        Ok(bytes) => bytes,
        Err(e) => panic!("npy_bytes: {e}"),
    }
}

fn valid_name(name: &str) -> bool {
    // 255 bytes leaves room for ".npy" in the 16-bit name field with any file system's
    // NAME_MAX in mind (np.load users may extract the archive).
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// One central-directory record, kept until [`NpzWriter::finish`].
struct Entry {
    file_name: Vec<u8>,
    crc: u32,
    size: u32,
    offset: u32,
}

/// Builds an `.npz` archive in memory; `np.load(io.BytesIO(bytes))` opens the result, with one
/// key per [`add`](NpzWriter::add)ed array.
pub struct NpzWriter {
    buf: Vec<u8>,
    entries: Vec<Entry>,
    names: HashSet<String>,
    /// Bytes the central directory and end record will take at `finish`; counted when each
    /// entry is added, so that `add` (which can fail) and not `finish` enforces the size cap.
    trailer_len: u64,
    max_bytes: u64,
}

impl Default for NpzWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl NpzWriter {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Pre-allocate `bytes` (e.g. the sum of the arrays' sizes plus 1 KiB per array) to avoid
    /// re-allocating and copying a large response while it is built.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            entries: Vec::new(),
            names: HashSet::new(),
            trailer_len: END_RECORD as u64,
            max_bytes: MAX_ARCHIVE_BYTES,
        }
    }

    /// Size the archive would have if finished now.
    pub fn len(&self) -> u64 {
        self.buf.len() as u64 + self.trailer_len
    }

    /// Whether no array has been added yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add `data` (C order) as array `name` with `shape`; stored as `NAME.npy`. On error
    /// nothing is written and the writer stays usable.
    pub fn add(&mut self, name: &str, shape: &[usize], data: NpyData) -> Result<(), NpzError> {
        self.add_with(name, shape, data.descr(), data.item_size(), &[data])
    }

    /// Add one float32 array whose C-ordered elements are the concatenation of `parts` (e.g.
    /// each image's slice of a batch output), copied straight into the archive.
    pub fn add_f32_parts(
        &mut self,
        name: &str,
        shape: &[usize],
        parts: &[&[f32]],
    ) -> Result<(), NpzError> {
        let f32 = NpyData::F32(&[]);
        let parts: Vec<NpyData> = parts.iter().map(|p| NpyData::F32(p)).collect();
        self.add_with(name, shape, f32.descr(), f32.item_size(), &parts)
    }

    /// One array whose elements are the concatenation of `parts`, all of `descr`.
    fn add_with(
        &mut self,
        name: &str,
        shape: &[usize],
        descr: &str,
        item_size: usize,
        parts: &[NpyData],
    ) -> Result<(), NpzError> {
        if !valid_name(name) {
            return Err(NpzError::InvalidName(name.to_string()));
        }
        if self.names.contains(name) {
            return Err(NpzError::DuplicateName(name.to_string()));
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(NpzError::TooManyArrays);
        }
        let elements: usize = parts.iter().map(|p| p.len()).sum();
        check_shape(shape, elements)?;
        let file_name = format!("{name}.npy").into_bytes();
        let header = npy_header(shape, descr);
        let npy_len = header.len() as u64 + elements as u64 * item_size as u64;
        let new_len = self.len()
            + (LOCAL_HEADER + file_name.len()) as u64
            + npy_len
            + (CENTRAL_HEADER + file_name.len()) as u64;
        if new_len > self.max_bytes {
            return Err(NpzError::TooLarge { bytes: new_len });
        }
        // Both fit in u32 now: offset < len <= max_bytes < u32::MAX.
        let offset = self.buf.len() as u32;
        let size = npy_len as u32;

        // Local header with a zero CRC, the data written in place, then the CRC computed over
        // the written bytes and patched in: one pass over the data, no intermediate .npy copy.
        let header_at = self.buf.len();
        write_local_header(&mut self.buf, &file_name, 0, size);
        let data_at = self.buf.len();
        self.buf.reserve(npy_len as usize);
        self.buf.extend_from_slice(&header);
        for part in parts {
            part.write_le(&mut self.buf);
        }
        let crc = crc32fast::hash(&self.buf[data_at..]);
        self.buf[header_at + 14..header_at + 18].copy_from_slice(&crc.to_le_bytes());

        self.trailer_len += (CENTRAL_HEADER + file_name.len()) as u64;
        self.names.insert(name.to_string());
        self.entries.push(Entry {
            file_name,
            crc,
            size,
            offset,
        });
        Ok(())
    }

    /// Append the central directory and end record and return the archive.
    pub fn finish(mut self) -> Vec<u8> {
        let cd_offset = self.buf.len() as u32;
        for e in &self.entries {
            write_central_header(&mut self.buf, e);
        }
        let cd_size = self.buf.len() as u32 - cd_offset;
        let n = self.entries.len() as u16;
        let b = &mut self.buf;
        b.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes()); // this disk
        b.extend_from_slice(&0u16.to_le_bytes()); // disk with the central directory
        b.extend_from_slice(&n.to_le_bytes()); // entries on this disk
        b.extend_from_slice(&n.to_le_bytes()); // entries in total
        b.extend_from_slice(&cd_size.to_le_bytes());
        b.extend_from_slice(&cd_offset.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes()); // comment length
        self.buf
    }
}

fn write_local_header(b: &mut Vec<u8>, file_name: &[u8], crc: u32, size: u32) {
    b.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    b.extend_from_slice(&ZIP_VERSION.to_le_bytes()); // version needed to extract
    b.extend_from_slice(&FLAG_UTF8.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // method: stored
    b.extend_from_slice(&DOS_TIME.to_le_bytes());
    b.extend_from_slice(&DOS_DATE.to_le_bytes());
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes()); // compressed size
    b.extend_from_slice(&size.to_le_bytes()); // uncompressed size
    b.extend_from_slice(&(file_name.len() as u16).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // extra field length
    b.extend_from_slice(file_name);
}

fn write_central_header(b: &mut Vec<u8>, e: &Entry) {
    b.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    // Version made by: 2.0 on Unix (3), so the external attributes below are Unix modes.
    b.extend_from_slice(&((3u16 << 8) | ZIP_VERSION).to_le_bytes());
    b.extend_from_slice(&ZIP_VERSION.to_le_bytes());
    b.extend_from_slice(&FLAG_UTF8.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // stored
    b.extend_from_slice(&DOS_TIME.to_le_bytes());
    b.extend_from_slice(&DOS_DATE.to_le_bytes());
    b.extend_from_slice(&e.crc.to_le_bytes());
    b.extend_from_slice(&e.size.to_le_bytes());
    b.extend_from_slice(&e.size.to_le_bytes());
    b.extend_from_slice(&(e.file_name.len() as u16).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // extra field length
    b.extend_from_slice(&0u16.to_le_bytes()); // comment length
    b.extend_from_slice(&0u16.to_le_bytes()); // disk number start
    b.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    b.extend_from_slice(&(0o100644u32 << 16).to_le_bytes()); // regular file, rw-r--r--
    b.extend_from_slice(&e.offset.to_le_bytes());
    b.extend_from_slice(&e.file_name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_make_the_same_archive_as_one_slice() {
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let mut whole = NpzWriter::new();
        whole.add("a", &[2, 3, 4], NpyData::F32(&data)).unwrap();
        let mut parts = NpzWriter::new();
        let (x, y) = data.split_at(10);
        let (y, z) = y.split_at(1);
        parts
            .add_f32_parts("a", &[2, 3, 4], &[x, y, &[], z])
            .unwrap();
        assert_eq!(whole.finish(), parts.finish());
        let mut short = NpzWriter::new();
        assert!(matches!(
            short.add_f32_parts("a", &[2, 3, 4], &[x]),
            Err(NpzError::ShapeMismatch { actual: 10, .. })
        ));
        assert!(short.is_empty());
    }

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_le_bytes([b[i], b[i + 1]])
    }
    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    /// A minimal ZIP reader for the tests: walks the end record and the central directory,
    /// cross-checks each local header, verifies CRCs, and returns (name, data) pairs.
    fn read_zip(z: &[u8]) -> Vec<(String, Vec<u8>)> {
        let end = z.len() - END_RECORD;
        assert_eq!(u32_at(z, end), 0x0605_4b50, "end record signature");
        let n = u16_at(z, end + 10) as usize;
        assert_eq!(u16_at(z, end + 8) as usize, n);
        let cd_size = u32_at(z, end + 12) as usize;
        let cd_offset = u32_at(z, end + 16) as usize;
        assert_eq!(
            cd_offset + cd_size,
            end,
            "central directory ends at the end record"
        );
        let mut out = Vec::new();
        let mut p = cd_offset;
        for _ in 0..n {
            assert_eq!(u32_at(z, p), 0x0201_4b50, "central header signature");
            assert_eq!(u16_at(z, p + 10), 0, "stored");
            let crc = u32_at(z, p + 16);
            let csize = u32_at(z, p + 20) as usize;
            assert_eq!(u32_at(z, p + 24) as usize, csize);
            let name_len = u16_at(z, p + 28) as usize;
            let extra = u16_at(z, p + 30) as usize + u16_at(z, p + 32) as usize;
            let local = u32_at(z, p + 42) as usize;
            let name = String::from_utf8(z[p + 46..p + 46 + name_len].to_vec()).unwrap();
            // The local header must say the same.
            assert_eq!(u32_at(z, local), 0x0403_4b50, "local header signature");
            assert_eq!(u32_at(z, local + 14), crc);
            assert_eq!(u32_at(z, local + 18) as usize, csize);
            assert_eq!(u16_at(z, local + 26) as usize, name_len);
            assert_eq!(&z[local + 30..local + 30 + name_len], name.as_bytes());
            let data_at = local + 30 + name_len + u16_at(z, local + 28) as usize;
            let data = z[data_at..data_at + csize].to_vec();
            assert_eq!(crc32fast::hash(&data), crc, "CRC of {name}");
            out.push((name, data));
            p += 46 + name_len + extra;
        }
        assert_eq!(p, end);
        out
    }

    /// Split a .npy into (header dict text, data bytes), checking the preamble.
    fn split_npy(npy: &[u8]) -> (String, &[u8]) {
        assert_eq!(&npy[..6], NPY_MAGIC);
        assert_eq!(&npy[6..8], &[1, 0], "version 1.0");
        let hlen = u16_at(npy, 8) as usize;
        assert_eq!((NPY_PREAMBLE + hlen) % 64, 0, "data is 64-byte aligned");
        let header = std::str::from_utf8(&npy[NPY_PREAMBLE..NPY_PREAMBLE + hlen]).unwrap();
        assert!(header.ends_with('\n'));
        (header.trim_end().to_string(), &npy[NPY_PREAMBLE + hlen..])
    }

    #[test]
    fn npy_header_matches_numpy_layout() {
        let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let npy = npy_bytes(&[2, 3], NpyData::F32(&data));
        let (dict, body) = split_npy(&npy);
        assert_eq!(
            dict,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
        );
        assert_eq!(npy.len(), 128 + 24); // preamble + dict + newline > 64, so two blocks
        assert_eq!(&body[..4], &1.0f32.to_le_bytes());
        assert_eq!(&body[20..], &6.0f32.to_le_bytes());

        let npy = npy_bytes(&[3], NpyData::I64(&[-1, 0, i64::MAX]));
        let (dict, body) = split_npy(&npy);
        assert_eq!(
            dict,
            "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"
        );
        assert_eq!(&body[..8], &[0xFF; 8]);
        assert_eq!(&body[16..], &i64::MAX.to_le_bytes());

        let npy = npy_bytes(&[], NpyData::F64(&[0.5]));
        let (dict, body) = split_npy(&npy);
        assert_eq!(
            dict,
            "{'descr': '<f8', 'fortran_order': False, 'shape': (), }"
        );
        assert_eq!(body, &0.5f64.to_le_bytes());

        let npy = npy_bytes(&[0, 7], NpyData::F32(&[]));
        let (dict, body) = split_npy(&npy);
        assert!(dict.contains("'shape': (0, 7)"));
        assert!(body.is_empty());

        // A long shape spills the header into a third 64-byte block.
        let shape = [1usize; 30];
        let npy = npy_bytes(&shape, NpyData::F32(&[9.0]));
        let (dict, _) = split_npy(&npy);
        assert!(dict.len() > 128);
    }

    #[test]
    fn shape_must_match_data() {
        assert_eq!(
            try_npy_bytes(&[2, 2], NpyData::F32(&[1.0; 3])),
            Err(NpzError::ShapeMismatch {
                shape: vec![2, 2],
                expected: 4,
                actual: 3
            })
        );
        // Overflowing element counts are a mismatch, not a wrap-around.
        assert!(try_npy_bytes(&[usize::MAX, 2], NpyData::F32(&[1.0; 2])).is_err());
        assert_eq!(
            try_npy_bytes(&[1; 65], NpyData::F32(&[1.0])),
            Err(NpzError::TooManyDims(65))
        );
        let mut w = NpzWriter::new();
        assert!(w.add("x", &[5], NpyData::I64(&[1, 2])).is_err());
        assert!(w.is_empty());
        assert_eq!(read_zip(&w.finish()).len(), 0);
    }

    #[test]
    #[should_panic(expected = "npy_bytes")]
    fn npy_bytes_panics_on_mismatch() {
        npy_bytes(&[3], NpyData::F64(&[1.0]));
    }

    #[test]
    fn archive_structure_round_trips() {
        let a: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        let steps = [0i64, 1, 2, 3];
        let t = [0.0f64, 10.0, 20.0, 30.0];
        let mut w = NpzWriter::new();
        w.add("conv1", &[1, 2, 3, 4], NpyData::F32(&a)).unwrap();
        w.add("steps", &[4], NpyData::I64(&steps)).unwrap();
        w.add("time_ms", &[4], NpyData::F64(&t)).unwrap();
        let predicted = w.len();
        let z = w.finish();
        assert_eq!(z.len() as u64, predicted);
        let entries = read_zip(&z);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["conv1.npy", "steps.npy", "time_ms.npy"]);
        assert_eq!(entries[0].1, npy_bytes(&[1, 2, 3, 4], NpyData::F32(&a)));
        assert_eq!(entries[1].1, npy_bytes(&[4], NpyData::I64(&steps)));
        assert_eq!(entries[2].1, npy_bytes(&[4], NpyData::F64(&t)));
        // Deterministic: same input, same bytes.
        let mut w2 = NpzWriter::new();
        w2.add("conv1", &[1, 2, 3, 4], NpyData::F32(&a)).unwrap();
        w2.add("steps", &[4], NpyData::I64(&steps)).unwrap();
        w2.add("time_ms", &[4], NpyData::F64(&t)).unwrap();
        assert_eq!(w2.finish(), z);
    }

    #[test]
    fn empty_archive_is_valid() {
        let z = NpzWriter::new().finish();
        assert_eq!(z.len(), END_RECORD);
        assert!(read_zip(&z).is_empty());
    }

    #[test]
    fn names_are_checked() {
        let mut w = NpzWriter::new();
        let d = NpyData::F32(&[1.0]);
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a\\b",
            "nul\0",
            "new\nline",
            &"x".repeat(256),
        ] {
            assert_eq!(
                w.add(bad, &[1], d),
                Err(NpzError::InvalidName(bad.to_string()))
            );
        }
        w.add("σ_rate", &[1], d).unwrap();
        assert_eq!(
            w.add("σ_rate", &[1], d),
            Err(NpzError::DuplicateName("σ_rate".into()))
        );
        let z = w.finish();
        assert_eq!(read_zip(&z)[0].0, "σ_rate.npy");
        // The UTF-8 flag is set so that zipfile decodes the name correctly.
        assert_eq!(u16_at(&z, 6), FLAG_UTF8);
    }

    #[test]
    fn size_cap_is_enforced_by_add() {
        let data = vec![0f32; 1000];
        let mut w = NpzWriter::new();
        w.max_bytes = 10_000;
        w.add("a", &[1000], NpyData::F32(&data)).unwrap();
        w.add("b", &[1000], NpyData::F32(&data)).unwrap();
        let before = w.len();
        match w.add("c", &[1000], NpyData::F32(&data)) {
            Err(NpzError::TooLarge { bytes }) => assert!(bytes > 10_000),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // The failed add left no trace; the archive is still valid and within the cap.
        assert_eq!(w.len(), before);
        let z = w.finish();
        assert!(z.len() <= 10_000);
        assert_eq!(read_zip(&z).len(), 2);
    }

    /// Writes `check.npz` and `check.npy` into `$NPZ_CHECK_DIR` for `check_npz.py` (which
    /// asserts them with NumPy); does nothing when the variable is unset.
    #[test]
    fn write_files_for_numpy_check() {
        let Some(dir) = std::env::var_os("NPZ_CHECK_DIR") else {
            eprintln!("NPZ_CHECK_DIR unset: not writing files for check_npz.py");
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let conv1: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| i as f32 * 0.25 - 7.0).collect();
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
        ];
        let steps: Vec<i64> = vec![0, 1, -1, i64::MIN, i64::MAX];
        let time_ms: Vec<f64> = vec![0.0, 10.0, std::f64::consts::PI, -1e300];
        let mut w = NpzWriter::new();
        w.add("conv1", &[2, 3, 4, 5], NpyData::F32(&conv1)).unwrap();
        w.add("special", &[7], NpyData::F32(&special)).unwrap();
        w.add("steps", &[5], NpyData::I64(&steps)).unwrap();
        w.add("time_ms", &[2, 2], NpyData::F64(&time_ms)).unwrap();
        w.add("scalar", &[], NpyData::F64(&[2.5])).unwrap();
        w.add("empty", &[0, 3], NpyData::F32(&[])).unwrap();
        w.add("σ_rate", &[1], NpyData::F32(&[0.125])).unwrap();
        std::fs::write(dir.join("check.npz"), w.finish()).unwrap();
        std::fs::write(
            dir.join("check.npy"),
            npy_bytes(&[3, 2], NpyData::F32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
        )
        .unwrap();
    }
}
