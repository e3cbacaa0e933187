//! The page at `/`: watch a ConvRNN decide over time. Plain HTML, CSS and JavaScript compiled
//! into the binary, so it works offline; the page talks to the server only through the public
//! `/v1` API, like any other client.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use super::AppState;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// Fashion-MNIST test images the page offers when the visitor has none at hand.
const SAMPLES: &[(&str, &[u8])] = &[
    (
        "ankle-boot.png",
        include_bytes!("page/samples/ankle-boot.png"),
    ),
    ("pullover.png", include_bytes!("page/samples/pullover.png")),
    ("trouser.png", include_bytes!("page/samples/trouser.png")),
    ("shirt.png", include_bytes!("page/samples/shirt.png")),
    ("bag.png", include_bytes!("page/samples/bag.png")),
    ("sneaker.png", include_bytes!("page/samples/sneaker.png")),
];

/// Everything the page loads comes from this server; `blob:` and `data:` images are the
/// visitor's own files and the plots drawn from them.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Small, and it changes with the binary: revalidating costs less than a stale page.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML.as_bytes())
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS.as_bytes())
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS.as_bytes())
}

async fn sample(Path(name): Path<String>) -> Result<Response, ApiError> {
    SAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| asset("image/png", bytes))
        .ok_or_else(|| ApiError::NotFound(format!("no sample image {name:?}"), "not_found"))
}

/// The page's routes, merged into the main router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/page/app.js", get(app_js))
        .route("/page/style.css", get(style_css))
        .route("/page/samples/{name}", get(sample))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_pngs_and_the_page_names_them() {
        for (name, bytes) in SAMPLES {
            assert!(bytes.starts_with(b"\x89PNG"), "{name}");
            assert!(APP_JS.contains(name), "app.js does not offer {name}");
        }
        assert!(INDEX_HTML.contains("/page/app.js") && INDEX_HTML.contains("/page/style.css"));
    }
}
