//! `POST /v1/models/{model}/preprocess`: one image as the model sees it (decoded, oriented,
//! resized and cropped to the model's input), as a PNG, so a client can show what the model was
//! given without re-implementing the resize.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::inference::{decode_images, model_info};
use super::input::{merge_options, ImagePayload};
use super::AppState;
use crate::model::metadata::InputSpec;

/// Preprocessing has no options; an empty set still checks that none (and no misspelt one) was sent.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PreprocessOptions {}

/// The model's normalised `[3, H, W]` input back to 8-bit RGB: the resize works in 8 bits, so
/// undoing the normalisation and rounding gives the exact pixels that were normalised.
fn to_rgb8(values: &[f32], input: &InputSpec) -> Vec<u8> {
    let plane = input.height as usize * input.width as usize;
    let mut out = vec![0u8; plane * 3];
    for (c, channel) in values.chunks(plane).take(3).enumerate() {
        for (i, v) in channel.iter().enumerate() {
            let p = (v * input.std[c] + input.mean[c]) * 255.0;
            out[i * 3 + c] = p.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// The image as the model sees it.
///
/// Decodes one image and applies the model's preprocessing (orientation, transparency over the
/// mean colour, shorter side resized then centre-cropped, grayscale replicated) without running
/// the model, and returns the model-sized result as an RGB PNG (before normalisation).
#[utoipa::path(
    post,
    path = "/v1/models/{model}/preprocess",
    tag = "inference",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist")),
    request_body(
        description = "Exactly one encoded image (JPEG, PNG, WebP, BMP, TIFF) as the raw body, sent as `application/octet-stream` or with its own `image/*` type; or one `multipart/form-data` image part; or JSON with one base64 image. No options and no mask",
        content(
            (super::input::ImageBytes = "application/octet-stream"),
            (super::input::MultipartImages = "multipart/form-data"),
            (super::input::JsonImages = "application/json"),
        )
    ),
    responses(
        (status = 200, description = "The model-sized image, RGB", content_type = "image/png", body = super::input::ImageBytes),
        (status = 400, description = "Bad image, or not exactly one image", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body or image too large", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --request-timeout-ms", body = ErrorBody),
        (status = 429, description = "Too many requests in flight; retry after the Retry-After header", body = ErrorBody),
    )
)]
pub async fn preprocess(
    State(state): State<AppState>,
    Path(model): Path<String>,
    RawQuery(query): RawQuery,
    mut payload: ImagePayload,
) -> Result<Response, ApiError> {
    let info = model_info(&state, &model)?;
    let _: PreprocessOptions = merge_options(query.as_deref(), payload.options.take())?;
    if payload.images.len() != 1 || payload.mask.is_some() {
        return Err(ApiError::bad_request(
            "one_image",
            format!(
                "preprocess takes exactly one image; this request has {}{}",
                payload.images.len(),
                if payload.mask.is_some() {
                    " and a mask"
                } else {
                    ""
                }
            ),
        ));
    }
    let frame = decode_images(&state, &info, payload.images)
        .await?
        .remove(0);
    let input = &info.metadata.input;
    let rgb = to_rgb8(&frame, input);
    let mut png = std::io::Cursor::new(Vec::new());
    ::image::RgbImage::from_raw(input.width, input.height, rgb)
        .ok_or_else(|| ApiError::Internal("the preprocessed image has the wrong size".into()))?
        .write_to(&mut png, ::image::ImageFormat::Png)
        .map_err(|e| ApiError::Internal(format!("encoding the PNG: {e}")))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))],
        png.into_inner(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undoes_the_normalisation_exactly() {
        let input = InputSpec {
            channels: 3,
            height: 1,
            width: 2,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            resize: Default::default(),
            grayscale: Default::default(),
            resize_shorter_side: None,
        };
        let (mean, std) = (input.mean, input.std);
        let pixels = [[0u8, 255], [17, 128], [200, 3]];
        let values: Vec<f32> = (0..3)
            .flat_map(|c| {
                pixels[c]
                    .iter()
                    .map(move |&p| (p as f32 / 255.0 - mean[c]) / std[c])
            })
            .collect();
        assert_eq!(to_rgb8(&values, &input), [0, 17, 200, 255, 128, 3]);
    }
}
