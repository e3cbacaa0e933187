//! The KServe Open Inference Protocol v2 wire format: JSON shapes, the binary tensor data
//! extension (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`), and the
//! strict decoding of request tensors. Pure functions: no HTTP, no engine.

use axum::body::Bytes;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
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

#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Row-major values, flat or nested: numbers for FP32, base64 strings for BYTES. Omitted
    /// when `parameters.binary_data_size` says the values follow the JSON in binary.
    #[serde(default)]
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    pub data: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
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
            "Inference-Header-Content-Length {text:?} is not a non-negative integer"
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

pub fn parse_request(json: &[u8]) -> Result<InferRequest, V2Error> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(V2Error::bad_request("the request body is empty"));
    }
    serde_json::from_slice(json)
        .map_err(|e| V2Error::bad_request(format!("invalid inference request JSON: {e}")))
}

/// A boolean parameter (absent: `None`); any other JSON type is an error.
pub fn bool_param(params: Option<&Map<String, Value>>, key: &str) -> Result<Option<bool>, V2Error> {
    match params.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(V2Error::bad_request(format!(
            "parameter {key:?} must be a boolean, not {other}"
        ))),
    }
}

/// A non-negative integer parameter (absent: `None`).
pub fn usize_param(
    params: Option<&Map<String, Value>>,
    key: &str,
) -> Result<Option<usize>, V2Error> {
    match params.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                V2Error::bad_request(format!(
                    "parameter {key:?} must be a non-negative integer, not {v}"
                ))
            }),
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

/// Where an input's values are: inline JSON `data`, or a slice of the binary part.
pub enum InputData<'a> {
    Json(&'a Value),
    Binary(Bytes),
}

/// Resolves an input's data source: exactly one of `data` and `binary_data_size`.
pub fn input_data<'a>(
    input: &'a RequestInput,
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

/// FP32 values, row-major, from nested or flat JSON numbers or from little-endian bytes.
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
        InputData::Json(value) => {
            let mut out = Vec::with_capacity(count.min(1 << 24));
            flatten(value, &mut |v| {
                if out.len() >= count {
                    return Err(too_many(input, count));
                }
                match v {
                    Value::Number(n) => {
                        let x = n.as_f64().ok_or_else(|| {
                            V2Error::bad_request(format!("input {input:?}: {n} is not a number"))
                        })?;
                        out.push(x as f32);
                        Ok(())
                    }
                    other => Err(V2Error::bad_request(format!(
                        "input {input:?} is FP32 but its data holds {}",
                        kind(other)
                    ))),
                }
            })?;
            if out.len() != count {
                return Err(count_mismatch(input, out.len(), count));
            }
            Ok(out)
        }
    }
}

/// BYTES elements: JSON strings holding base64 (a `data:...;base64,` prefix is allowed, since
/// JSON strings cannot carry raw binary), or the binary form: per element a 4-byte
/// little-endian length followed by that many bytes.
pub fn bytes_values(input: &str, data: InputData<'_>, count: usize) -> Result<Vec<Bytes>, V2Error> {
    let mut out = Vec::with_capacity(count.min(1 << 16));
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
        InputData::Json(value) => {
            flatten(value, &mut |v| {
                if out.len() >= count {
                    return Err(too_many(input, count));
                }
                match v {
                    Value::String(s) => {
                        let text = s.rsplit_once(";base64,").map_or(s.as_str(), |(_, b)| b);
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
                    other => Err(V2Error::bad_request(format!(
                        "input {input:?} is BYTES but its data holds {} (expected base64 strings)",
                        kind(other)
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

/// Visits every leaf of nested arrays, in row-major order.
fn flatten(
    value: &Value,
    visit: &mut dyn FnMut(&Value) -> Result<(), V2Error>,
) -> Result<(), V2Error> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, visit)),
        leaf => visit(leaf),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
        let nested = json!([[1, 2.5], [3, 4]]);
        assert_eq!(
            fp32_values("x", InputData::Json(&nested), 4).unwrap(),
            [1.0, 2.5, 3.0, 4.0]
        );
        assert!(fp32_values("x", InputData::Json(&nested), 3).is_err());
        assert!(fp32_values("x", InputData::Json(&nested), 5).is_err());
        assert!(fp32_values("x", InputData::Json(&json!(["a"])), 1).is_err());
        assert!(fp32_values("x", InputData::Json(&json!([null])), 1).is_err());
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
        let v = json!(["aGk=", "data:image/png;base64,AAE="]);
        let got = bytes_values("images", InputData::Json(&v), 2).unwrap();
        assert_eq!(&got[0][..], b"hi");
        assert_eq!(&got[1][..], [0, 1]);
        assert!(bytes_values("images", InputData::Json(&json!(["%%"])), 1).is_err());
        assert!(bytes_values("images", InputData::Json(&json!([1])), 1).is_err());
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
        let p = json!({"b": true, "n": 3, "s": "x"});
        let p = p.as_object();
        assert_eq!(bool_param(p, "b").unwrap(), Some(true));
        assert!(bool_param(p, "s").is_err());
        assert_eq!(usize_param(p, "n").unwrap(), Some(3));
        assert!(usize_param(p, "b").is_err());
        assert_eq!(usize_param(p, "missing").unwrap(), None);
    }
}
