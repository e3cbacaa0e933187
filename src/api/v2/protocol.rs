//! The KServe Open Inference Protocol v2 wire format: JSON shapes, the binary tensor data
//! extension (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`), and the
//! strict decoding of request tensors. Pure functions: no HTTP, no engine.

use axum::body::Bytes;
use base64::Engine as _;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::V2Error;

/// Header giving the length of the JSON part of a body that carries binary tensors.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

pub const FP32: &str = "FP32";
pub const BYTES: &str = "BYTES";

/// `{"name", "datatype", "shape"}` of model metadata; `-1` marks a variable axis.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: Vec<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// Most inputs a request may list (the server takes one; a few more are named in the error).
pub const MAX_INPUTS: usize = 16;
/// Most outputs a request may list (a model has a handful, and repeats are refused).
pub const MAX_OUTPUTS: usize = 1024;
/// Most dimensions a shape may have.
pub const MAX_DIMS: usize = 32;

// An inference request, read straight from the body: `data` stays raw JSON text until its shape
// has been checked, and `parameters` keep only the keys the server reads, so no part of a body
// turns into a tree of values many times its size. (A comment, not a doc comment: doc comments
// become the OpenAPI description.)
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest<'a> {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
    #[serde(borrow, deserialize_with = "inputs")]
    pub inputs: Vec<RequestInput<'a>>,
    #[serde(default, deserialize_with = "outputs")]
    pub outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestInput<'a> {
    pub name: String,
    #[serde(deserialize_with = "shape")]
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
    /// Row-major values, flat or nested: numbers for FP32, base64 strings for BYTES. Omitted
    /// when `parameters.binary_data_size` says the values follow the JSON in binary.
    #[serde(default, borrow)]
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    pub data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
}

/// A list of at most `max` items, refused as soon as the next one appears.
fn at_most<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    max: usize,
    what: &'static str,
) -> Result<Vec<T>, D::Error> {
    struct Capped<T> {
        max: usize,
        what: &'static str,
        item: std::marker::PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {} {}", self.max, self.what)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == self.max {
                    return Err(serde::de::Error::custom(format!(
                        "more than {} {}",
                        self.max, self.what
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Capped {
        max,
        what,
        item: std::marker::PhantomData,
    })
}

fn inputs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RequestInput<'de>>, D::Error> {
    at_most(d, MAX_INPUTS, "inputs")
}

fn outputs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<RequestOutput>>, D::Error> {
    Option::<Capped<RequestOutput, MAX_OUTPUTS>>::deserialize(d).map(|o| o.map(|c| c.0))
}

fn shape<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    at_most(d, MAX_DIMS, "dimensions")
}

/// `Option<Vec<T>>` with the cap of [`at_most`] (serde's `default` needs the `Option` outside).
struct Capped<T, const MAX: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for Capped<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        at_most(d, MAX, "outputs").map(Capped)
    }
}

/// The request parameters the server reads.
const KNOWN_PARAMETERS: [&str; 4] = [
    "binary_data_output",
    "binary_data",
    "binary_data_size",
    "classification",
];

/// A `parameters` object: the values of the keys in [`KNOWN_PARAMETERS`] (others are skipped
/// unread, so a map of a million keys costs nothing).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parameters(Vec<(&'static str, ParamValue)>);

/// A parameter's value: scalars as they are, anything else as what kind of value it was.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Other(&'static str),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ParamValue::Null => f.write_str("null"),
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Unsigned(n) => write!(f, "{n}"),
            ParamValue::Signed(n) => write!(f, "{n}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Other(kind) => f.write_str(kind),
        }
    }
}

impl Parameters {
    pub fn get(&self, key: &str) -> Option<&ParamValue> {
        self.0.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

impl<'de> Deserialize<'de> for Parameters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = Parameters;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a parameters object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parameters, A::Error> {
                let mut out = Parameters::default();
                while let Some(key) = map.next_key::<Known>()? {
                    match key.0 {
                        Some(k) => {
                            let v = map.next_value::<ParamValue>()?;
                            out.0.retain(|(old, _)| *old != k);
                            out.0.push((k, v));
                        }
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Keys)
    }
}

/// A parameter name: one of [`KNOWN_PARAMETERS`] or `None`, read without copying it.
struct Known(Option<&'static str>);

impl<'de> Deserialize<'de> for Known {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Known;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a parameter name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Known, E> {
                Ok(Known(KNOWN_PARAMETERS.iter().copied().find(|k| *k == v)))
            }
        }
        d.deserialize_str(Name)
    }
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl<'de> Visitor<'de> for Scalar {
            type Value = ParamValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a parameter value")
            }
            fn visit_unit<E>(self) -> Result<ParamValue, E> {
                Ok(ParamValue::Null)
            }
            fn visit_none<E>(self) -> Result<ParamValue, E> {
                Ok(ParamValue::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<ParamValue, E> {
                Ok(ParamValue::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ParamValue, E> {
                Ok(ParamValue::Unsigned(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ParamValue, E> {
                Ok(ParamValue::Signed(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ParamValue, E> {
                Ok(ParamValue::Float(v))
            }
            fn visit_str<E>(self, _: &str) -> Result<ParamValue, E> {
                Ok(ParamValue::Other("a string"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ParamValue, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ParamValue::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParamValue, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(ParamValue::Other("an object"))
            }
        }
        d.deserialize_any(Scalar)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseOutput {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f32>>,
}

/// A request body split into its JSON header and the binary tensors that follow it.
#[derive(Debug)]
pub struct SplitBody {
    pub json: Bytes,
    pub binary: Bytes,
}

/// Splits the body at `Inference-Header-Content-Length` (absent: it is all JSON).
pub fn split_body(body: Bytes, header_length: Option<&str>) -> Result<SplitBody, V2Error> {
    let Some(text) = header_length else {
        return Ok(SplitBody {
            json: body,
            binary: Bytes::new(),
        });
    };
    let len: usize = text.trim().parse().map_err(|_| {
        V2Error::bad_request(format!(
            "Inference-Header-Content-Length {} is not a non-negative integer",
            crate::api::error::quote(text)
        ))
    })?;
    if len > body.len() {
        return Err(V2Error::bad_request(format!(
            "Inference-Header-Content-Length is {len} but the body has only {} bytes",
            body.len()
        )));
    }
    let binary = body.slice(len..);
    Ok(SplitBody {
        json: body.slice(..len),
        binary,
    })
}

pub fn parse_request(json: &[u8]) -> Result<InferRequest<'_>, V2Error> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(V2Error::bad_request("the request body is empty"));
    }
    serde_json::from_slice(json)
        .map_err(|e| V2Error::bad_request(format!("invalid inference request JSON: {e}")))
}

/// A boolean parameter (absent: `None`); any other JSON type is an error.
pub fn bool_param(params: Option<&Parameters>, key: &str) -> Result<Option<bool>, V2Error> {
    match params.and_then(|p| p.get(key)) {
        None | Some(ParamValue::Null) => Ok(None),
        Some(ParamValue::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(V2Error::bad_request(format!(
            "parameter {key:?} must be a boolean, not {other}"
        ))),
    }
}

/// A non-negative integer parameter (absent: `None`).
pub fn usize_param(params: Option<&Parameters>, key: &str) -> Result<Option<usize>, V2Error> {
    match params.and_then(|p| p.get(key)) {
        None | Some(ParamValue::Null) => Ok(None),
        Some(ParamValue::Unsigned(n)) if usize::try_from(*n).is_ok() => Ok(Some(*n as usize)),
        Some(v) => Err(V2Error::bad_request(format!(
            "parameter {key:?} must be a non-negative integer, not {v}"
        ))),
    }
}

/// Hands out the binary part of a body to the inputs that declare `binary_data_size`, in order.
pub struct BinaryCursor {
    rest: Bytes,
}

impl BinaryCursor {
    pub fn new(binary: Bytes) -> Self {
        Self { rest: binary }
    }

    pub fn take(&mut self, input: &str, size: usize) -> Result<Bytes, V2Error> {
        if size > self.rest.len() {
            return Err(V2Error::bad_request(format!(
                "input {input:?} declares binary_data_size {size} but only {} bytes of binary \
                 data remain",
                self.rest.len()
            )));
        }
        Ok(self.rest.split_to(size))
    }

    /// Every byte must belong to some input.
    pub fn finish(self) -> Result<(), V2Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(V2Error::bad_request(format!(
                "{} bytes of binary data after the last input's binary_data_size",
                self.rest.len()
            )))
        }
    }
}

/// Where an input's values are: inline JSON `data` (raw text), or a slice of the binary part.
pub enum InputData<'a> {
    Json(&'a RawValue),
    Binary(Bytes),
}

/// Resolves an input's data source: exactly one of `data` and `binary_data_size`.
pub fn input_data<'a>(
    input: &'a RequestInput<'a>,
    cursor: &mut BinaryCursor,
) -> Result<InputData<'a>, V2Error> {
    let size = usize_param(input.parameters.as_ref(), "binary_data_size")?;
    match (&input.data, size) {
        (Some(_), Some(_)) => Err(V2Error::bad_request(format!(
            "input {:?} has both `data` and binary_data_size",
            input.name
        ))),
        (Some(data), None) => Ok(InputData::Json(data)),
        (None, Some(size)) => Ok(InputData::Binary(cursor.take(&input.name, size)?)),
        (None, None) => Err(V2Error::bad_request(format!(
            "input {:?} has neither `data` nor parameters.binary_data_size",
            input.name
        ))),
    }
}

/// The element count of a request shape, rejecting negative dimensions and overflow.
pub fn element_count(input: &str, shape: &[i64]) -> Result<usize, V2Error> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| {
            V2Error::bad_request(format!(
                "input {input:?} has a negative dimension in shape {shape:?}"
            ))
        })?;
        acc.checked_mul(d).ok_or_else(|| {
            V2Error::bad_request(format!("input {input:?}: shape {shape:?} is too large"))
        })
    })
}

/// FP32 values, row-major, from nested or flat JSON numbers or from little-endian bytes. JSON
/// is read twice: once to check the count and types, allocating nothing, then into a vector of
/// exactly `count` values.
pub fn fp32_values(input: &str, data: InputData<'_>, count: usize) -> Result<Vec<f32>, V2Error> {
    match data {
        InputData::Binary(bytes) => {
            let want = count
                .checked_mul(4)
                .ok_or_else(|| V2Error::bad_request(format!("input {input:?} is too large")))?;
            if bytes.len() != want {
                return Err(V2Error::bad_request(format!(
                    "input {input:?}: binary_data_size is {} bytes but its shape needs {want} \
                     ({count} FP32 values)",
                    bytes.len()
                )));
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
        InputData::Json(raw) => {
            let number = |leaf: Leaf<'_>| match leaf {
                Leaf::Number(x) => Ok(x as f32),
                Leaf::Text(_) => Err(V2Error::bad_request(format!(
                    "input {input:?} is FP32 but its data holds a string"
                ))),
                Leaf::Other(kind) => Err(V2Error::bad_request(format!(
                    "input {input:?} is FP32 but its data holds {kind}"
                ))),
            };
            let mut seen = 0usize;
            leaves(raw, &mut |leaf| {
                if seen >= count {
                    return Err(too_many(input, count));
                }
                number(leaf)?;
                seen += 1;
                Ok(())
            })?;
            if seen != count {
                return Err(count_mismatch(input, seen, count));
            }
            let mut out = Vec::with_capacity(count);
            leaves(raw, &mut |leaf| {
                out.push(number(leaf)?);
                Ok(())
            })?;
            Ok(out)
        }
    }
}

/// BYTES elements: JSON strings holding base64 (a `data:...;base64,` prefix is allowed, since
/// JSON strings cannot carry raw binary), or the binary form: per element a 4-byte
/// little-endian length followed by that many bytes.
pub fn bytes_values(input: &str, data: InputData<'_>, count: usize) -> Result<Vec<Bytes>, V2Error> {
    let mut out = Vec::with_capacity(count.min(256));
    match data {
        InputData::Binary(mut bytes) => {
            while !bytes.is_empty() {
                if out.len() >= count {
                    return Err(too_many(input, count));
                }
                if bytes.len() < 4 {
                    return Err(V2Error::bad_request(format!(
                        "input {input:?}: truncated BYTES element length (element {})",
                        out.len()
                    )));
                }
                let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                if bytes.len() - 4 < len {
                    return Err(V2Error::bad_request(format!(
                        "input {input:?}: BYTES element {} claims {len} bytes but only {} remain",
                        out.len(),
                        bytes.len() - 4
                    )));
                }
                let _ = bytes.split_to(4);
                out.push(bytes.split_to(len));
            }
        }
        InputData::Json(raw) => {
            leaves(raw, &mut |leaf| {
                if out.len() >= count {
                    return Err(too_many(input, count));
                }
                match leaf {
                    Leaf::Text(s) => {
                        let text = s.rsplit_once(";base64,").map_or(s, |(_, b)| b);
                        let decoded = base64::engine::general_purpose::STANDARD
                            .decode(text.trim())
                            .map_err(|e| {
                                V2Error::bad_request(format!(
                                    "input {input:?} element {}: BYTES in JSON must be base64 \
                                     strings: {e}",
                                    out.len()
                                ))
                            })?;
                        out.push(Bytes::from(decoded));
                        Ok(())
                    }
                    Leaf::Number(_) => Err(V2Error::bad_request(format!(
                        "input {input:?} is BYTES but its data holds a number (expected base64 \
                         strings)"
                    ))),
                    Leaf::Other(kind) => Err(V2Error::bad_request(format!(
                        "input {input:?} is BYTES but its data holds {kind} (expected base64 \
                         strings)"
                    ))),
                }
            })?;
        }
    }
    if out.len() != count {
        return Err(count_mismatch(input, out.len(), count));
    }
    Ok(out)
}

/// A leaf of a tensor's nested JSON arrays.
enum Leaf<'s> {
    Number(f64),
    Text(&'s str),
    /// Anything else, by kind (`"null"`, `"a boolean"`, `"an object"`).
    Other(&'static str),
}

/// Visits every leaf of `raw`'s nested arrays in row-major order, straight from the text (no
/// tree of values); stops at the first error `visit` returns.
fn leaves(
    raw: &RawValue,
    visit: &mut dyn FnMut(Leaf<'_>) -> Result<(), V2Error>,
) -> Result<(), V2Error> {
    let mut failure = None;
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let walked = LeafSeed {
        visit,
        failure: &mut failure,
    }
    .deserialize(&mut de);
    match (walked, failure) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(V2Error::bad_request(format!("invalid tensor data: {e}"))),
        (Ok(()), None) => Ok(()),
    }
}

struct LeafSeed<'v, 'f> {
    visit: &'v mut dyn FnMut(Leaf<'_>) -> Result<(), V2Error>,
    failure: &'f mut Option<V2Error>,
}

impl LeafSeed<'_, '_> {
    fn leaf<E: serde::de::Error>(self, leaf: Leaf<'_>) -> Result<(), E> {
        (self.visit)(leaf).map_err(|e| {
            *self.failure = Some(e);
            E::custom("stopped")
        })
    }
}

impl<'de> DeserializeSeed<'de> for LeafSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LeafSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("tensor data")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(LeafSeed {
                visit: &mut *self.visit,
                failure: &mut *self.failure,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(Leaf::Number(v as f64))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Leaf::Number(v as f64))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(Leaf::Number(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(Leaf::Text(v))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf(Leaf::Other("a boolean"))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.leaf(Leaf::Other("null"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.leaf(Leaf::Other("an object"))
    }
}

fn too_many(input: &str, count: usize) -> V2Error {
    V2Error::bad_request(format!(
        "input {input:?} has more values than its shape holds ({count})"
    ))
}

fn count_mismatch(input: &str, got: usize, want: usize) -> V2Error {
    V2Error::bad_request(format!(
        "input {input:?} has {got} values but its shape holds {want}"
    ))
}

/// Serialises a response: plain JSON when no output is binary, else the JSON header followed
/// by the binary outputs in order. Returns the body and, when binary, the header length.
pub fn encode_response(
    response: &InferResponse,
    binary: &[Vec<f32>],
) -> Result<(Vec<u8>, Option<usize>), serde_json::Error> {
    let mut body = serde_json::to_vec(response)?;
    if binary.is_empty() {
        return Ok((body, None));
    }
    let header_len = body.len();
    body.reserve(binary.iter().map(|b| b.len() * 4).sum());
    for values in binary {
        for v in values {
            body.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok((body, Some(header_len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    fn cursor(bytes: &[u8]) -> BinaryCursor {
        BinaryCursor::new(Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn split_at_the_header_length() {
        let body = Bytes::from_static(b"{\"a\":1}\x01\x02");
        let s = split_body(body.clone(), Some("7")).unwrap();
        assert_eq!(&s.json[..], b"{\"a\":1}");
        assert_eq!(&s.binary[..], b"\x01\x02");
        assert!(split_body(body.clone(), Some("99")).is_err());
        assert!(split_body(body.clone(), Some("-1")).is_err());
        assert_eq!(split_body(body, None).unwrap().binary.len(), 0);
    }

    #[test]
    fn fp32_nested_flat_and_binary() {
        let nested = raw(json!([[1, 2.5], [3, 4]]));
        assert_eq!(
            fp32_values("x", InputData::Json(&nested), 4).unwrap(),
            [1.0, 2.5, 3.0, 4.0]
        );
        assert!(fp32_values("x", InputData::Json(&nested), 3).is_err());
        assert!(fp32_values("x", InputData::Json(&nested), 5).is_err());
        assert!(fp32_values("x", InputData::Json(&raw(json!(["a"]))), 1).is_err());
        assert!(fp32_values("x", InputData::Json(&raw(json!([null]))), 1).is_err());
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut c = cursor(&raw);
        let data = InputData::Binary(c.take("x", 8).unwrap());
        assert_eq!(fp32_values("x", data, 2).unwrap(), [1.5, -2.0]);
        c.finish().unwrap();
        let data = InputData::Binary(Bytes::copy_from_slice(&raw[..7]));
        assert!(fp32_values("x", data, 2).is_err());
    }

    #[test]
    fn bytes_json_base64_and_binary() {
        let v = raw(json!(["aGk=", "data:image/png;base64,AAE="]));
        let got = bytes_values("images", InputData::Json(&v), 2).unwrap();
        assert_eq!(&got[0][..], b"hi");
        assert_eq!(&got[1][..], [0, 1]);
        assert!(bytes_values("images", InputData::Json(&raw(json!(["%%"]))), 1).is_err());
        assert!(bytes_values("images", InputData::Json(&raw(json!([1]))), 1).is_err());
        let mut raw = Vec::new();
        for e in [&b"abc"[..], b""] {
            raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
            raw.extend_from_slice(e);
        }
        let got = bytes_values("images", InputData::Binary(Bytes::from(raw.clone())), 2).unwrap();
        assert_eq!(&got[0][..], b"abc");
        assert!(got[1].is_empty());
        assert!(bytes_values("images", InputData::Binary(Bytes::from(raw.clone())), 1).is_err());
        raw[0] = 200;
        assert!(bytes_values("images", InputData::Binary(Bytes::from(raw)), 2).is_err());
    }

    #[test]
    fn binary_cursor_accounts_for_every_byte() {
        let mut c = cursor(&[0; 10]);
        assert!(c.take("a", 11).is_err());
        c.take("a", 4).unwrap();
        assert!(c.finish().is_err());
    }

    #[test]
    fn counts_and_params() {
        assert_eq!(element_count("x", &[2, 3]).unwrap(), 6);
        assert!(element_count("x", &[2, -1]).is_err());
        assert!(element_count("x", &[i64::MAX, i64::MAX]).is_err());
        let p: Parameters = serde_json::from_value(json!({
            "binary_data": true, "binary_data_size": 3, "binary_data_output": "x",
            "other": [1, 2, {"deep": [3]}]
        }))
        .unwrap();
        assert!(!p.contains_key("other"));
        let p = Some(&p);
        assert_eq!(bool_param(p, "binary_data").unwrap(), Some(true));
        assert!(bool_param(p, "binary_data_output").is_err());
        assert_eq!(usize_param(p, "binary_data_size").unwrap(), Some(3));
        assert!(usize_param(p, "binary_data").is_err());
        assert_eq!(usize_param(p, "classification").unwrap(), None);
    }

    #[test]
    fn hostile_request_json_is_refused_while_reading() {
        let many_inputs = format!(
            "{{\"inputs\": [{}]}}",
            vec![r#"{"name":"a","shape":[1],"datatype":"FP32","data":[0]}"#; 17].join(",")
        );
        let e = parse_request(many_inputs.as_bytes()).unwrap_err();
        assert!(e.message.contains("more than 16 inputs"), "{}", e.message);
        let deep_shape = format!(
            r#"{{"inputs":[{{"name":"a","datatype":"FP32","shape":[{}]}}]}}"#,
            vec!["1"; 33].join(",")
        );
        let e = parse_request(deep_shape.as_bytes()).unwrap_err();
        assert!(
            e.message.contains("more than 32 dimensions"),
            "{}",
            e.message
        );
        let outputs = format!(
            r#"{{"inputs":[],"outputs":[{}]}}"#,
            vec![r#"{"name":"x"}"#; 1025].join(",")
        );
        let e = parse_request(outputs.as_bytes()).unwrap_err();
        assert!(
            e.message.contains("more than 1024 outputs"),
            "{}",
            e.message
        );
        // A shape whose product overflows, or that is negative, is an error, not a panic.
        assert!(element_count("x", &[i64::MAX, 2, 2]).is_err());
        assert!(element_count("x", &[-1, 0]).is_err());
        assert!(element_count("x", &[u32::MAX as i64, u32::MAX as i64, 2]).is_err());
    }

    #[test]
    fn json_data_is_checked_before_it_is_kept() {
        // Fewer or more values than the shape, or the wrong kind, fail in the counting pass.
        let short = raw(json!([1, 2, 3]));
        let e = fp32_values("x", InputData::Json(&short), 1 << 40).unwrap_err();
        assert!(e.message.contains("has 3 values"), "{}", e.message);
        let nested = raw(json!([[[[[1]]]], [true]]));
        let e = fp32_values("x", InputData::Json(&nested), 2).unwrap_err();
        assert!(e.message.contains("a boolean"), "{}", e.message);
        let object = raw(json!([{"a": [1, 2]}]));
        assert!(fp32_values("x", InputData::Json(&object), 1).is_err());
        let deep =
            RawValue::from_string(format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap();
        assert_eq!(fp32_values("x", InputData::Json(&deep), 1).unwrap(), [1.0]);
    }
}
