//! `POST /v2/models/{model}[/versions/{version}]/infer`: one input (`frames` or `images`) in,
//! the requested outputs back as JSON or binary tensor data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error::V2Error;
use super::protocol::{self, InferRequest, InferResponse, ResponseOutput, BYTES, FP32};
use super::{resolve, IMAGES_INPUT, MODEL_VERSION};
use crate::api::error::quote;
use crate::api::inference::{
    off_the_async_threads, run_images, timing_headers, INLINE_JSON_VALUES,
};
use crate::api::input::{within_body_deadline, ImagePayload};
use crate::api::AppState;
use crate::engine::{FrameSource, ItemResult, Stimulus};
use crate::model::{ModelInfo, ModelMetadata, INPUT_NAME};
use crate::presentation::Presentation;

/// What one request asks the engine for.
pub enum Work {
    Stimuli(Vec<Stimulus>),
    Images(Vec<Bytes>),
}

/// Decodes the request's one input into stimuli (frames) or encoded images, at most `max_rows`
/// of them. Every size is checked against the model and the limit before values are kept.
pub fn decode_inputs(
    m: &ModelMetadata,
    max_rows: usize,
    request: &InferRequest<'_>,
    binary: Bytes,
) -> Result<Work, V2Error> {
    let mut cursor = protocol::BinaryCursor::new(binary);
    let input = match request.inputs.as_slice() {
        [one] => one,
        [] => return Err(V2Error::bad_request("the request has no inputs")),
        many => {
            return Err(V2Error::bad_request(format!(
                "send exactly one input, {INPUT_NAME:?} or {IMAGES_INPUT:?}; got {}",
                many.iter()
                    .map(|i| quote(&i.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let rows_ok = |n: usize| -> Result<(), V2Error> {
        if n == 0 {
            return Err(V2Error::bad_request(format!(
                "input {:?} has no rows (shape {:?})",
                input.name, input.shape
            )));
        }
        if n > max_rows {
            return Err(V2Error::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{n} rows in one request; the limit is {max_rows}"),
            ));
        }
        Ok(())
    };
    let work = match input.name.as_str() {
        INPUT_NAME => {
            if input.datatype != FP32 {
                return Err(V2Error::bad_request(format!(
                    "input {INPUT_NAME:?} must be {FP32}, not {}",
                    quote(&input.datatype)
                )));
            }
            let want = [
                m.time.steps as i64,
                m.input.channels as i64,
                m.input.height as i64,
                m.input.width as i64,
            ];
            if input.shape.len() != 5 || input.shape[1..] != want || input.shape[0] < 0 {
                return Err(V2Error::bad_request(format!(
                    "input {INPUT_NAME:?} has shape {:?}; the model takes [n, {}, {}, {}, {}]",
                    input.shape, want[0], want[1], want[2], want[3]
                )));
            }
            let rows = input.shape[0] as usize;
            rows_ok(rows)?;
            let count = protocol::element_count(&input.name, &input.shape)?;
            let data = protocol::input_data(input, &mut cursor)?;
            let values = protocol::fp32_values(&input.name, data, count)?;
            let frame_len = m.frame_len();
            let steps = m.time.steps;
            let stimuli = values
                .chunks_exact(steps * frame_len)
                .map(|movie| Stimulus {
                    frames: movie
                        .chunks_exact(frame_len)
                        .map(|f| Arc::new(f.to_vec()))
                        .collect(),
                    schedule: (0..steps).map(FrameSource::Frame).collect(),
                })
                .collect();
            Work::Stimuli(stimuli)
        }
        IMAGES_INPUT => {
            if input.datatype != BYTES {
                return Err(V2Error::bad_request(format!(
                    "input {IMAGES_INPUT:?} must be {BYTES}, not {}",
                    quote(&input.datatype)
                )));
            }
            if input.shape.len() != 1 || input.shape[0] < 0 {
                return Err(V2Error::bad_request(format!(
                    "input {IMAGES_INPUT:?} has shape {:?}; it takes [n]",
                    input.shape
                )));
            }
            let rows = input.shape[0] as usize;
            rows_ok(rows)?;
            let data = protocol::input_data(input, &mut cursor)?;
            let images = protocol::bytes_values(&input.name, data, rows)?;
            if let Some(i) = images.iter().position(|b| b.is_empty()) {
                return Err(V2Error::bad_request(format!(
                    "image {i} is empty (zero bytes)"
                )));
            }
            Work::Images(images)
        }
        other => {
            return Err(V2Error::bad_request(format!(
                "unknown input {}; the model takes {INPUT_NAME:?} ({FP32}) or \
                 {IMAGES_INPUT:?} ({BYTES})",
                quote(other)
            )))
        }
    };
    cursor.finish()?;
    Ok(work)
}

/// The outputs to return, in order, each with whether it goes binary.
fn select_outputs(
    info: &ModelInfo,
    request: &InferRequest<'_>,
) -> Result<Vec<(String, bool)>, V2Error> {
    let default_binary =
        protocol::bool_param(request.parameters.as_ref(), "binary_data_output")?.unwrap_or(false);
    let known: Vec<&str> = info.output_names().collect();
    let requested = match &request.outputs {
        Some(list) if !list.is_empty() => list,
        _ => {
            return Ok(known
                .iter()
                .map(|n| (n.to_string(), default_binary))
                .collect())
        }
    };
    let mut chosen: Vec<(String, bool)> = Vec::with_capacity(requested.len());
    for output in requested {
        if !known.contains(&output.name.as_str()) {
            return Err(V2Error::bad_request(format!(
                "unknown output {} (outputs: {})",
                quote(&output.name),
                known.join(", ")
            )));
        }
        if chosen.iter().any(|(n, _)| n == &output.name) {
            return Err(V2Error::bad_request(format!(
                "output {} is requested twice",
                quote(&output.name)
            )));
        }
        let params = output.parameters.as_ref();
        if params.is_some_and(|p| p.contains_key("classification")) {
            return Err(V2Error::bad_request(
                "the classification extension is not supported; use /v1/models/{model}/classify",
            ));
        }
        let binary = protocol::bool_param(params, "binary_data")?.unwrap_or(default_binary);
        chosen.push((output.name.clone(), binary));
    }
    Ok(chosen)
}

/// Run inference.
pub(super) async fn infer(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, V2Error> {
    let started = Instant::now();
    let info = resolve(&state, &params)?;
    let header_length = request
        .headers()
        .get(protocol::HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| V2Error::bad_request("Inference-Header-Content-Length is not text"))
        })
        .transpose()?;
    // An admission slot before the body is read, as on /v1: without one, every open connection
    // could hold a body of up to --max-body-bytes at once, outside the queue's memory bound.
    let admission = state.engine.admit(info.name())?;
    // Read the bytes ourselves: tritonclient sends no Content-Type, and binary bodies are not
    // JSON. The router's DefaultBodyLimit (--max-body-bytes) applies here.
    let body = read_body(request, &state).await?;
    let split = protocol::split_body(body, header_length.as_deref())?;
    let req = protocol::parse_request(&split.json)?;
    let outputs = select_outputs(&info, &req)?;
    let json_values: usize = outputs
        .iter()
        .filter(|(_, binary)| !binary)
        .filter_map(|(name, _)| info.item_shape(name))
        .map(|s| s.iter().product::<usize>())
        .sum();
    // The answer's size is known from the shape's rows; checked before the input is decoded.
    let rows = req
        .inputs
        .first()
        .and_then(|i| i.shape.first())
        .and_then(|&n| usize::try_from(n).ok())
        .unwrap_or(0);
    if json_values.saturating_mul(rows) > state.limits.max_json_values {
        return Err(V2Error::bad_request(format!(
            "the JSON answer would hold {} values (limit {}): ask for fewer outputs or for \
             binary_data",
            json_values.saturating_mul(rows),
            state.limits.max_json_values
        )));
    }
    let work = decode_inputs(
        &info.metadata,
        state.limits.max_images_per_request,
        &req,
        split.binary,
    )?;
    let names: Vec<String> = outputs.iter().map(|(n, _)| n.clone()).collect();
    let results: Vec<ItemResult> = match work {
        Work::Stimuli(stimuli) => {
            let results = state.engine.infer(info.name(), stimuli, names).await?;
            drop(admission);
            results
        }
        Work::Images(images) => {
            let payload = ImagePayload {
                images,
                mask: None,
                options: None,
                admission: Some(admission),
            };
            run_images(&state, &info, payload, &Presentation::Default, names).await?
        }
    };
    let (response_outputs, binary_parts) = gather_outputs(&info, &outputs, &results)?;
    let response = InferResponse {
        model_name: info.name().to_string(),
        model_version: MODEL_VERSION.to_string(),
        id: req.id,
        outputs: response_outputs,
    };
    encode(response, binary_parts, &results, started).await
}

/// The requested outputs of every row, in order: JSON ones as values in the answer, binary ones
/// as parts to append after it.
fn gather_outputs(
    info: &ModelInfo,
    outputs: &[(String, bool)],
    results: &[ItemResult],
) -> Result<(Vec<ResponseOutput>, Vec<Vec<f32>>), V2Error> {
    let rows = results.len();
    let mut response_outputs = Vec::with_capacity(outputs.len());
    let mut binary_parts = Vec::new();
    for (name, binary) in outputs {
        let item_shape = info
            .item_shape(name)
            .ok_or_else(|| V2Error::new(StatusCode::INTERNAL_SERVER_ERROR, "no output shape"))?;
        let mut values = Vec::with_capacity(rows * item_shape.iter().product::<usize>());
        for r in results {
            let slice = r.output(name).ok_or_else(|| {
                V2Error::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the batch has no output {name}"),
                )
            })?;
            values.extend_from_slice(slice);
        }
        let shape: Vec<usize> = std::iter::once(rows).chain(item_shape).collect();
        let (parameters, data) = if *binary {
            let mut p = Map::new();
            p.insert("binary_data_size".into(), Value::from(values.len() * 4));
            binary_parts.push(values);
            (Some(p), None)
        } else {
            (None, Some(values))
        };
        response_outputs.push(ResponseOutput {
            name: name.clone(),
            datatype: FP32,
            shape,
            parameters,
            data,
        });
    }
    Ok((response_outputs, binary_parts))
}

/// Serialises the answer (off the async threads when large) with its headers.
async fn encode(
    response: InferResponse,
    binary_parts: Vec<Vec<f32>>,
    results: &[ItemResult],
    started: Instant,
) -> Result<Response, V2Error> {
    let json_values: usize = response
        .outputs
        .iter()
        .filter_map(|o| o.data.as_ref().map(Vec::len))
        .sum();
    let encoded = off_the_async_threads(json_values <= INLINE_JSON_VALUES, move || {
        protocol::encode_response(&response, &binary_parts)
    })
    .await
    .map_err(|e| {
        V2Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the response failed: {e}"),
        )
    })?;
    let (body, header_len) = encoded.map_err(|e| {
        V2Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the response: {e}"),
        )
    })?;
    let mut headers = timing_headers(results, started);
    match header_len {
        Some(len) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(protocol::HEADER_LENGTH, HeaderValue::from(len));
        }
        None => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok((headers, Body::from(body)).into_response())
}

/// Reads a request body under the router's body limit, mapping failures to v2 errors.
async fn read_body(request: Request, state: &AppState) -> Result<Bytes, V2Error> {
    use axum::extract::FromRequest;
    within_body_deadline(state, Bytes::from_request(request, state))
        .await?
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                V2Error::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body too large (limit {} bytes)",
                        state.limits.max_body_bytes
                    ),
                )
            } else {
                V2Error::bad_request(format!("could not read the body: {e}"))
            }
        })
}
