//! The OpenAPI document (generated from the handlers' annotations) and the interactive docs page,
//! whose assets are compiled in (`utoipa-swagger-ui` `vendored`) so it works with no internet.

use utoipa::OpenApi;

use super::{activations, classify, error, health, input, models, selection};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "convrnn-serve",
        description = "Serve ConvRNN models of the primate visual system: classification with the \
            time course of the decision, and time-resolved layer activations.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        models::list_models,
        models::get_model,
        classify::classify,
        activations::activations,
        health::live,
        health::ready,
    ),
    components(schemas(
        error::ErrorBody,
        input::JsonImages,
        models::ModelList,
        models::ModelDescription,
        classify::ClassifyResponse,
        classify::ClassifyResult,
        classify::ClassScore,
        activations::ActivationsResponse,
        activations::LayerActivations,
        selection::Pool,
        health::Health,
    )),
    tags(
        (name = "models", description = "What is served"),
        (name = "inference", description = "Classification and activations"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// The document as served at `/openapi.json` and checked in at `openapi/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}
