//! The KServe v2 routes in the OpenAPI document. The handlers read raw bytes (the binary
//! extension and clients without a Content-Type), so the paths are described here, on stubs.
#![allow(dead_code)]

use utoipa::OpenApi;

use super::error::V2ErrorBody;
use super::protocol::{
    InferRequest, InferResponse, ModelMetadata, RequestInput, RequestOutput, ResponseOutput,
    ServerMetadata, TensorMetadata,
};

/// Server metadata: name, version and the protocol extensions implemented.
#[utoipa::path(get, path = "/v2", tag = "kserve-v2",
    responses((status = 200, description = "Server metadata", body = ServerMetadata,
        example = json!({"name": "convrnn-serve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}))))]
fn server_metadata() {}

/// Server liveness: 200 while the process runs. No body.
#[utoipa::path(get, path = "/v2/health/live", tag = "kserve-v2",
    responses((status = 200, description = "Live")))]
fn server_live() {}

/// Server readiness: 200 once every model is warm, 503 before that and while draining. No body.
#[utoipa::path(get, path = "/v2/health/ready", tag = "kserve-v2",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
fn server_ready() {}

/// Model metadata: the `frames` (FP32) and `images` (BYTES) inputs, `logits` and every layer.
#[utoipa::path(get, path = "/v2/models/{model}", tag = "kserve-v2",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist")),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata, example = json!(model_example())),
        (status = 404, description = "Unknown model", body = V2ErrorBody,
         example = json!({"error": "model \"x\" is not served here (models: rgc_fmnist)"})),
    ))]
fn model_metadata() {}

/// Model metadata of a version (every model has one version, `1`).
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "kserve-v2",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist"),
           ("version" = String, Path, description = "Model version: `1`", example = "1")),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata, example = json!(model_example())),
        (status = 404, description = "Unknown model or version", body = V2ErrorBody,
         example = json!({"error": "model \"rgc_fmnist\" has no version \"2\" (versions: 1)"})),
    ))]
fn model_version_metadata() {}

/// Model readiness: 200 ready, 503 warming up or draining, 404 unknown. No body on success.
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "kserve-v2",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist")),
    responses(
        (status = 200, description = "Ready"),
        (status = 404, description = "Unknown model", body = V2ErrorBody),
        (status = 503, description = "Not ready"),
    ))]
fn model_ready() {}

/// Readiness of a model version.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "kserve-v2",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist"),
           ("version" = String, Path, description = "Model version: `1`", example = "1")),
    responses(
        (status = 200, description = "Ready"),
        (status = 404, description = "Unknown model or version", body = V2ErrorBody),
        (status = 503, description = "Not ready"),
    ))]
fn model_version_ready() {}

/// Run inference (KServe v2).
///
/// Send exactly one input: `frames` FP32 `[n, T, C, H, W]` (normalised movies; row `i` shows its
/// frame `t` at step `t`), or `images` BYTES `[n]` (encoded JPEG/PNG/..., preprocessed by the
/// server and shown with the model's default presentation; base64 strings in JSON). `outputs`
/// picks outputs (none: all). Binary tensor extension: an input with
/// `parameters.binary_data_size` carries its values after the JSON (FP32 little-endian; BYTES as
/// 4-byte little-endian length + bytes per element), the JSON's length in the
/// `Inference-Header-Content-Length` header; an output with `parameters.binary_data: true` (or
/// the request's `parameters.binary_data_output: true`) comes back the same way, with
/// `Content-Type: application/octet-stream`. The Content-Type of the request is not checked.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "kserve-v2",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist"),
           ("Inference-Header-Content-Length" = Option<u64>, Header,
            description = "Length of the JSON header when binary tensors follow it")),
    request_body(content(
        (InferRequest = "application/json", example = json!(infer_example())),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "Outputs", content(
            (InferResponse = "application/json", example = json!(response_example())),
            (Vec<u8> = "application/octet-stream"),
        ), headers(
            ("Inference-Header-Content-Length" = u64, description = "Length of the JSON header when binary outputs follow"),
            ("x-queue-time-ms" = String, description = "Time in the queue"),
            ("x-inference-time-ms" = String, description = "Time of the batched run"),
            ("x-total-time-ms" = String, description = "Time in the server"),
        )),
        (status = 400, description = "Invalid request: datatype, shape, data, outputs, parameters", body = V2ErrorBody),
        (status = 404, description = "Unknown model or version", body = V2ErrorBody),
        (status = 413, description = "Body, image or row count too large", body = V2ErrorBody),
        (status = 408, description = "The body did not arrive within --request-timeout-ms", body = V2ErrorBody),
        (status = 429, description = "Queue full; retry after the Retry-After header", body = V2ErrorBody),
        (status = 503, description = "Shutting down", body = V2ErrorBody),
        (status = 504, description = "Deadline exceeded", body = V2ErrorBody),
    ))]
fn infer() {}

/// Run inference on a model version (`1`); see `/v2/models/{model}/infer`.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "kserve-v2",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist"),
           ("version" = String, Path, description = "Model version: `1`", example = "1"),
           ("Inference-Header-Content-Length" = Option<u64>, Header,
            description = "Length of the JSON header when binary tensors follow it")),
    request_body(content(
        (InferRequest = "application/json", example = json!(infer_example())),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "Outputs", content(
            (InferResponse = "application/json", example = json!(response_example())),
            (Vec<u8> = "application/octet-stream"),
        )),
        (status = 400, description = "Invalid request", body = V2ErrorBody),
        (status = 404, description = "Unknown model or version", body = V2ErrorBody),
        (status = 413, description = "Body, image or row count too large", body = V2ErrorBody),
        (status = 408, description = "The body did not arrive within --request-timeout-ms", body = V2ErrorBody),
        (status = 429, description = "Queue full; retry after the Retry-After header", body = V2ErrorBody),
        (status = 503, description = "Shutting down", body = V2ErrorBody),
        (status = 504, description = "Deadline exceeded", body = V2ErrorBody),
    ))]
fn version_infer() {}

fn model_example() -> serde_json::Value {
    serde_json::json!({
        "name": "rgc_fmnist", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "frames", "datatype": "FP32", "shape": [-1, 8, 3, 32, 32]},
            {"name": "images", "datatype": "BYTES", "shape": [-1]}
        ],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, 8, 10]},
            {"name": "conv1", "datatype": "FP32", "shape": [-1, 8, 32, 16, 16]}
        ]
    })
}

fn infer_example() -> serde_json::Value {
    serde_json::json!({
        "id": "42",
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                    "data": [crate::api::openapi::EXAMPLE_PNG_BASE64]}],
        "outputs": [{"name": "logits"}]
    })
}

fn response_example() -> serde_json::Value {
    serde_json::json!({
        "model_name": "rgc_fmnist", "model_version": "1", "id": "42",
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 2, 3],
                     "data": [0.1, -0.2, 0.3, 0.4, 0.5, -0.6]}]
    })
}

#[derive(OpenApi)]
#[openapi(
    paths(
        server_metadata,
        server_live,
        server_ready,
        model_metadata,
        model_version_metadata,
        model_ready,
        model_version_ready,
        infer,
        version_infer,
    ),
    components(schemas(
        ServerMetadata,
        ModelMetadata,
        TensorMetadata,
        InferRequest,
        RequestInput,
        RequestOutput,
        InferResponse,
        ResponseOutput,
        V2ErrorBody,
    )),
    tags((name = "kserve-v2", description = "KServe Open Inference Protocol v2 (REST), with the binary tensor data extension"))
)]
pub struct V2Doc;
