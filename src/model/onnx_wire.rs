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
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const NODE_DOMAIN: u32 = 7;
    pub const ATTRIBUTE_NAME: u32 = 1;
    pub const ATTRIBUTE_INT: u32 = 3;
    pub const ATTRIBUTE_TENSOR: u32 = 5;
    pub const ATTRIBUTE_GRAPH: u32 = 6;
    pub const ATTRIBUTE_GRAPHS: u32 = 11;
    pub const VALUE_INFO_NAME: u32 = 1;
    pub const VALUE_INFO_TYPE: u32 = 2;
    pub const TYPE_TENSOR: u32 = 1;
    pub const TENSOR_TYPE_SHAPE: u32 = 2;
    pub const SHAPE_DIM: u32 = 1;
    pub const DIM_VALUE: u32 = 1;
    pub const TENSOR_DIMS: u32 = 1;
    pub const TENSOR_DATA_TYPE: u32 = 2;
    pub const TENSOR_INT64_DATA: u32 = 7;
    pub const TENSOR_NAME: u32 = 8;
    pub const TENSOR_RAW_DATA: u32 = 9;
    pub const TENSOR_DATA_LOCATION: u32 = 13;
    pub const TENSOR_EXTERNAL_DATA: u32 = 14;
}

/// `TensorProto.DataType` of 64-bit integers.
pub const INT64: u64 = 7;

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

/// The varint at the start of `buf` and its length in bytes.
fn read_varint(buf: &[u8]) -> Result<(u64, usize), WireError> {
    let mut v = 0u64;
    for (i, shift) in (0..64).step_by(7).enumerate() {
        let byte = *buf.get(i).ok_or(WireError("cut off inside a varint"))?;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(WireError("a varint longer than 10 bytes"))
}

/// The values of a repeated varint field: one per field, or packed into one (proto3's default).
fn varints<'a>(f: &Field<'a>) -> Result<Vec<u64>, WireError> {
    match (f.varint, f.len) {
        (Some(v), _) => Ok(vec![v]),
        (None, Some(mut packed)) => {
            let mut out = Vec::new();
            while !packed.is_empty() {
                let (v, len) = read_varint(packed)?;
                out.push(v);
                packed = &packed[len..];
            }
            Ok(out)
        }
        _ => Err(WireError("a varint field has the wrong wire type")),
    }
}

/// What the rewrites read of a `NodeProto`.
pub struct Node<'a> {
    pub op_type: &'a str,
    pub domain: &'a str,
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
    /// Each `AttributeProto`'s payload, as it is in the file.
    pub attributes: Vec<&'a [u8]>,
    /// Whether an attribute holds a subgraph (If, Loop, Scan), which may read outer values without
    /// naming them as node inputs: a graph walk that follows inputs cannot see those.
    pub has_subgraph: bool,
}

pub fn read_node(bytes: &[u8]) -> Result<Node<'_>, WireError> {
    let mut node = Node {
        op_type: "",
        domain: "",
        inputs: vec![],
        outputs: vec![],
        attributes: vec![],
        has_subgraph: false,
    };
    for f in Fields::new(bytes) {
        let f = f?;
        match f.number {
            field::NODE_INPUT => node.inputs.push(f.string()?),
            field::NODE_OUTPUT => node.outputs.push(f.string()?),
            field::NODE_OP_TYPE => node.op_type = f.string()?,
            field::NODE_DOMAIN => node.domain = f.string()?,
            field::NODE_ATTRIBUTE => {
                let attribute = f.payload()?;
                for a in Fields::new(attribute) {
                    let a = a?;
                    node.has_subgraph |=
                        a.number == field::ATTRIBUTE_GRAPH || a.number == field::ATTRIBUTE_GRAPHS;
                }
                node.attributes.push(attribute);
            }
            _ => {}
        }
    }
    Ok(node)
}

/// What the rewrites read of an `AttributeProto`.
pub struct Attribute<'a> {
    pub name: &'a str,
    /// `i`, where set.
    pub int: Option<i64>,
    /// `t`'s payload, where set.
    pub tensor: Option<&'a [u8]>,
}

pub fn read_attribute(bytes: &[u8]) -> Result<Attribute<'_>, WireError> {
    let mut attribute = Attribute {
        name: "",
        int: None,
        tensor: None,
    };
    for a in Fields::new(bytes) {
        let a = a?;
        match a.number {
            field::ATTRIBUTE_NAME => attribute.name = a.string()?,
            field::ATTRIBUTE_INT => attribute.int = a.varint.map(|v| v as i64),
            field::ATTRIBUTE_TENSOR => attribute.tensor = Some(a.payload()?),
            _ => {}
        }
    }
    Ok(attribute)
}

/// What the rewrites read of a `TensorProto`.
pub struct Tensor<'a> {
    pub name: &'a str,
    /// Its data lives in another file, whose path means nothing to bytes loaded from memory.
    pub external: bool,
    /// Its value, if it is an int64 scalar stored in the file.
    pub int64_scalar: Option<i64>,
}

pub fn read_tensor(bytes: &[u8]) -> Result<Tensor<'_>, WireError> {
    let mut t = Tensor {
        name: "",
        external: false,
        int64_scalar: None,
    };
    let (mut data_type, mut dims, mut values, mut raw) = (0, 0, Vec::new(), None);
    for f in Fields::new(bytes) {
        let f = f?;
        match f.number {
            field::TENSOR_NAME => t.name = f.string()?,
            field::TENSOR_DATA_TYPE => data_type = f.varint.unwrap_or(0),
            field::TENSOR_DIMS => dims += varints(&f)?.len(),
            field::TENSOR_INT64_DATA => values.extend(varints(&f)?.into_iter().map(|v| v as i64)),
            field::TENSOR_RAW_DATA => raw = Some(f.payload()?),
            field::TENSOR_EXTERNAL_DATA => t.external = true,
            field::TENSOR_DATA_LOCATION => t.external |= f.varint == Some(1),
            _ => {}
        }
    }
    if let Some(bytes) = raw.and_then(|r| <[u8; 8]>::try_from(r).ok()) {
        values.push(i64::from_le_bytes(bytes));
    }
    t.int64_scalar = (data_type == INT64 && dims == 0 && values.len() == 1).then(|| values[0]);
    Ok(t)
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
        let (v, len) = read_varint(&self.buf[self.pos..])?;
        self.pos += len;
        Ok(v)
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
    fn int64_scalars_are_read_from_raw_plain_or_packed_data_and_nothing_else() {
        let tensor = |data_type: u64, dims: &[u64], data: &dyn Fn(&mut Vec<u8>)| {
            let mut t = Vec::new();
            for d in dims {
                write_varint(&mut t, u64::from(field::TENSOR_DIMS) << 3);
                write_varint(&mut t, *d);
            }
            write_varint(&mut t, u64::from(field::TENSOR_DATA_TYPE) << 3);
            write_varint(&mut t, data_type);
            write_len_field(&mut t, field::TENSOR_NAME, b"t");
            data(&mut t);
            t
        };
        let raw =
            |t: &mut Vec<u8>| write_len_field(t, field::TENSOR_RAW_DATA, &(-3i64).to_le_bytes());
        let plain = |t: &mut Vec<u8>| {
            write_varint(t, u64::from(field::TENSOR_INT64_DATA) << 3);
            write_varint(t, 5);
        };
        let packed = |n: usize| {
            move |t: &mut Vec<u8>| {
                let mut p = Vec::new();
                for _ in 0..n {
                    write_varint(&mut p, 300);
                }
                write_len_field(t, field::TENSOR_INT64_DATA, &p);
            }
        };
        let scalar = |bytes: Vec<u8>| read_tensor(&bytes).unwrap().int64_scalar;
        assert_eq!(scalar(tensor(INT64, &[], &raw)), Some(-3));
        assert_eq!(scalar(tensor(INT64, &[], &plain)), Some(5));
        assert_eq!(scalar(tensor(INT64, &[], &packed(1))), Some(300));
        assert_eq!(scalar(tensor(INT64, &[], &packed(2))), None, "two values");
        assert_eq!(scalar(tensor(INT64, &[1], &plain)), None, "rank 1");
        assert_eq!(scalar(tensor(1, &[], &raw)), None, "float32");
        let t = tensor(INT64, &[], &raw);
        assert_eq!(read_tensor(&t).unwrap().name, "t");
        assert!(!read_tensor(&t).unwrap().external);
        let mut external = t.clone();
        write_varint(&mut external, u64::from(field::TENSOR_DATA_LOCATION) << 3);
        write_varint(&mut external, 1);
        assert!(read_tensor(&external).unwrap().external);
        // A packed field cut inside a varint.
        let mut cut = Vec::new();
        write_len_field(&mut cut, field::TENSOR_INT64_DATA, &[0x80]);
        assert!(read_tensor(&cut).is_err());
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
