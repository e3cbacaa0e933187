//! The protobuf wire format, as far as reading and rewriting ONNX files needs it: the fields of
//! a message one at a time, each with its bytes as they were, so a caller decodes only what it
//! needs and copies everything else unchanged.

/// Field numbers of onnx.proto that the server reads (onnx/onnx.proto, IR version 3 and later).
pub mod field {
    pub const MODEL_GRAPH: u32 = 7;
    pub const MODEL_METADATA_PROPS: u32 = 14;
    pub const ENTRY_KEY: u32 = 1;
    pub const ENTRY_VALUE: u32 = 2;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const GRAPH_INPUT: u32 = 11;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const GRAPH_VALUE_INFO: u32 = 13;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTRIBUTE_GRAPH: u32 = 6;
    pub const ATTRIBUTE_GRAPHS: u32 = 11;
    pub const VALUE_INFO_NAME: u32 = 1;
    pub const VALUE_INFO_TYPE: u32 = 2;
    pub const TYPE_TENSOR: u32 = 1;
    pub const TENSOR_TYPE_SHAPE: u32 = 2;
    pub const SHAPE_DIM: u32 = 1;
    pub const DIM_VALUE: u32 = 1;
    pub const TENSOR_NAME: u32 = 8;
    pub const TENSOR_DATA_LOCATION: u32 = 13;
    pub const TENSOR_EXTERNAL_DATA: u32 = 14;
}

/// A file that is not the protobuf it claims to be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid ONNX protobuf: {0}")]
pub struct WireError(pub &'static str);

pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn write_len_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    write_varint(out, (u64::from(number) << 3) | 2);
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// The payload of a model's graph field. Protobuf would merge a second one into the first; no
/// exporter writes that, so it is refused rather than read half.
pub fn model_graph(model: &[u8]) -> Result<&[u8], WireError> {
    let mut graph = None;
    for f in Fields::new(model) {
        let f = f?;
        if f.number == field::MODEL_GRAPH {
            if graph.is_some() {
                return Err(WireError("more than one graph field"));
            }
            graph = Some(f.payload()?);
        }
    }
    graph.ok_or(WireError("the model has no graph"))
}

/// `model` with its graph field's payload replaced by `graph`, every other field copied as it was.
pub fn with_graph(model: &[u8], graph: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut bytes = Vec::with_capacity(model.len());
    for f in Fields::new(model) {
        let f = f?;
        if f.number == field::MODEL_GRAPH {
            write_len_field(&mut bytes, field::MODEL_GRAPH, graph);
        } else {
            bytes.extend_from_slice(f.raw);
        }
    }
    Ok(bytes)
}

/// The name of a `ValueInfoProto` ("" when unset).
pub fn value_info_name(bytes: &[u8]) -> Result<&str, WireError> {
    for f in Fields::new(bytes) {
        let f = f?;
        if f.number == field::VALUE_INFO_NAME {
            return f.string();
        }
    }
    Ok("")
}

/// One field of a message: its number, its bytes as they were (tag included) and its value.
pub struct Field<'a> {
    pub number: u32,
    pub raw: &'a [u8],
    /// The payload of a length-delimited field.
    pub len: Option<&'a [u8]>,
    pub varint: Option<u64>,
}

impl<'a> Field<'a> {
    pub fn payload(&self) -> Result<&'a [u8], WireError> {
        self.len
            .ok_or(WireError("a message field has the wrong wire type"))
    }

    pub fn string(&self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.payload()?).map_err(|_| WireError("a name is not UTF-8"))
    }
}

/// The fields of one message in order; stops at the first malformed one.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or(WireError("cut off inside a varint"))?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError("a varint longer than 10 bytes"))
    }

    fn skip(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|end| *end <= self.buf.len())
            .ok_or(WireError("a field runs past the end of its message"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn field(&mut self) -> Result<Field<'a>, WireError> {
        let start = self.pos;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| *n > 0)
            .ok_or(WireError("a field number out of range"))?;
        let (mut len, mut varint) = (None, None);
        match key & 7 {
            0 => varint = Some(self.varint()?),
            1 => {
                self.skip(8)?;
            }
            2 => {
                let n = self.varint()?;
                len = Some(self.skip(n)?);
            }
            5 => {
                self.skip(4)?;
            }
            _ => return Err(WireError("an unknown or group wire type")),
        }
        Ok(Field {
            number,
            raw: &self.buf[start..self.pos],
            len,
            varint,
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let f = self.field();
        self.failed = f.is_err();
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type_and_keeps_the_raw_bytes() {
        let mut m = Vec::new();
        write_varint(&mut m, 1 << 3); // field 1, varint 300
        write_varint(&mut m, 300);
        m.push((2 << 3) | 1); // field 2, fixed64
        m.extend_from_slice(&[0; 8]);
        write_len_field(&mut m, 3, b"abc");
        m.push((4 << 3) | 5); // field 4, fixed32
        m.extend_from_slice(&[0; 4]);
        let fields: Vec<Field> = Fields::new(&m).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            fields.iter().map(|f| f.number).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(fields[0].varint, Some(300));
        assert_eq!(fields[2].string().unwrap(), "abc");
        assert!(fields[0].payload().is_err());
        let raw: Vec<u8> = fields.iter().flat_map(|f| f.raw.iter().copied()).collect();
        assert_eq!(raw, m);
    }

    #[test]
    fn malformed_input_is_an_error_and_stops_the_walk() {
        let mut m = Vec::new();
        write_len_field(&mut m, 3, b"abcdef");
        for cut in 1..m.len() {
            let results: Vec<_> = Fields::new(&m[..cut]).collect();
            assert_eq!(results.len(), 1, "cut at {cut}");
            assert!(results[0].is_err(), "cut at {cut}");
        }
        // A group (wire type 3) and field number 0.
        assert!(Fields::new(&[(1 << 3) | 3]).next().unwrap().is_err());
        assert!(Fields::new(&[0, 0]).next().unwrap().is_err());
        assert!(Fields::new(&[0xff; 11]).next().unwrap().is_err());
    }
}
