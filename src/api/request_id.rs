//! Request ids: every request gets one, either the client's `x-request-id` (if it is printable
//! ASCII of at most [`MAX_LEN`] bytes) or one made here. It is echoed in the `x-request-id`
//! header of every answer, carried by the tracing span every log line of the request is written
//! in, and put into every error body (`request_id`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id accepted from a client; a longer one is replaced, not truncated, so that what a
/// client logs is either its own id in full or clearly not its own.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request whose task is running, for error bodies; `None` outside a request.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// A client's id is kept when it is 1..=MAX_LEN visible ASCII characters (no spaces or control
/// characters, which would let it forge or break log lines).
pub fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// A new id: a random per-process prefix and a counter, unique within and very likely across
/// processes without a random number generator per request.
pub fn generate() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // std seeds every RandomState from the OS's random source.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:012x}-{n:x}", prefix >> 16)
}

/// Middleware: finds or makes the id, runs the request in a span and task-local that carry it,
/// and echoes it on the answer.
pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .map(HeaderValue::as_bytes)
        .filter(|v| is_valid(v))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map_or_else(generate, str::to_string);
    let value = HeaderValue::from_str(&id).expect("a valid id is a valid header value");
    request.headers_mut().insert(HEADER, value.clone());
    let span = tracing::info_span!("request", id = %id, method = %request.method(), path = %request.uri().path());
    let started = std::time::Instant::now();
    let mut response = CURRENT
        .scope(id, next.run(request))
        .instrument(span.clone())
        .await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            secs = started.elapsed().as_secs_f64(),
            "answered"
        );
    });
    response.headers_mut().insert(HEADER, value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        assert!(is_valid(b"abc-123_XYZ.{}"));
        assert!(is_valid(&[b'a'; MAX_LEN]));
        assert!(!is_valid(b""));
        assert!(!is_valid(&[b'a'; MAX_LEN + 1]));
        assert!(!is_valid(b"has space"));
        assert!(!is_valid(b"new\nline"));
        assert!(!is_valid("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(is_valid(a.as_bytes()), "{a}");
    }
}
