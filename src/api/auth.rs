//! Optional API keys. When keys are configured (`--api-key-file`, `CONVRNN_API_KEYS`), every
//! `/v1` and `/v2` request except the `/v2/health/*` probes needs `Authorization: Bearer KEY`;
//! anything else gets 401 with a JSON error and `WWW-Authenticate: Bearer`. Health, metrics,
//! `/`, `/docs` and `/openapi.json` stay open: they carry no inference and no client data.
//!
//! Keys are compared in constant time (per key, all keys every time), never logged, and the
//! key file is re-read when its contents change (checked every second) and on SIGHUP, so keys
//! can be rotated without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::v2::error::V2Error;

/// How often the key file is checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The accepted keys, swapped whole when the file changes.
pub struct ApiKeys {
    keys: RwLock<Arc<Vec<Box<[u8]>>>>,
    file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("--api-key-file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--api-key-file {0}: no keys in it (one key a line; blank lines and # comments are skipped)")]
    Empty(String),
    #[error("CONVRNN_API_KEYS is set but holds no keys")]
    EmptyEnv,
}

/// The keys of a key file's text: one a line, surrounding whitespace trimmed, blank lines and
/// lines starting with `#` skipped.
pub fn parse_key_file(text: &str) -> Vec<Box<[u8]>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().into())
        .collect()
}

fn parse_key_list(text: &str) -> Vec<Box<[u8]>> {
    text.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| k.as_bytes().into())
        .collect()
}

/// Equal in time that depends only on the lengths, not on where the bytes first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl ApiKeys {
    /// The keys from `file` and the comma-separated `list`; `None` when neither is given.
    pub fn load(file: Option<&Path>, list: Option<&str>) -> Result<Option<Self>, KeyError> {
        if file.is_none() && list.is_none() {
            return Ok(None);
        }
        let mut keys = Vec::new();
        if let Some(list) = list {
            keys = parse_key_list(list);
            if keys.is_empty() {
                return Err(KeyError::EmptyEnv);
            }
        }
        if let Some(path) = file {
            let from_file = read_key_file(path)?;
            keys.extend(from_file);
        }
        Ok(Some(Self {
            keys: RwLock::new(Arc::new(keys)),
            file: file.map(Path::to_path_buf),
        }))
    }

    pub fn len(&self) -> usize {
        self.current().len()
    }

    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    fn current(&self) -> Arc<Vec<Box<[u8]>>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `presented` is one of the keys. Compares against every key, so the time does not
    /// say which key (or how much of one) matched.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        self.current()
            .iter()
            .fold(false, |ok, key| ok | constant_time_eq(key, presented))
    }

    /// Re-reads the key file (with the environment's keys kept); an unreadable or empty file
    /// keeps the current keys. Returns whether the keys changed.
    pub fn reload(&self, env_keys: Option<&str>) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let mut keys = env_keys.map(parse_key_list).unwrap_or_default();
        match read_key_file(path) {
            Ok(from_file) => keys.extend(from_file),
            Err(e) => {
                tracing::warn!(error = %e, "API key file not reloaded; keeping the current keys");
                return false;
            }
        }
        let mut current = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if **current == keys {
            return false;
        }
        tracing::info!(keys = keys.len(), file = %path.display(), "API keys reloaded");
        *current = Arc::new(keys);
        true
    }

    /// Re-reads the key file every [`RELOAD_EVERY`] and on SIGHUP; runs until aborted.
    pub async fn watch(self: Arc<Self>, env_keys: Option<String>) {
        if self.file.is_none() {
            return;
        }
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            tokio::select! {
                () = tokio::time::sleep(RELOAD_EVERY) => {}
                () = hup => tracing::info!("SIGHUP: re-reading the API key file"),
            }
            let keys = self.clone();
            let env = env_keys.clone();
            let _ = tokio::task::spawn_blocking(move || keys.reload(env.as_deref())).await;
        }
    }
}

fn read_key_file(path: &Path) -> Result<Vec<Box<[u8]>>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let keys = parse_key_file(&text);
    if keys.is_empty() {
        return Err(KeyError::Empty(path.display().to_string()));
    }
    Ok(keys)
}

/// Whether `path` needs a key: the `/v1` and `/v2` APIs, except the `/v2/health` probes.
pub fn protects(path: &str) -> bool {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    (under("/v1") || under("/v2")) && !under("/v2/health")
}

/// Middleware: lets the request through if keys are off, the path is open, or the bearer token
/// is a key; otherwise 401 in the API's own error format.
pub async fn middleware(
    State(keys): State<Option<Arc<ApiKeys>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(keys) = keys else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if !protects(path) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 7235).
            (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii())
        });
    let (message, challenge) = match presented {
        Some(token) if keys.accepts(token) => return next.run(request).await,
        Some(_) => (
            "the API key is not valid",
            r#"Bearer realm="convrnn-serve", error="invalid_token""#,
        ),
        None => (
            "an API key is required: send Authorization: Bearer <key>",
            r#"Bearer realm="convrnn-serve""#,
        ),
    };
    let mut response = if path.starts_with("/v2") {
        V2Error::from(ApiError::Unauthorized(message.into())).into_response()
    } else {
        ApiError::Unauthorized(message.into()).into_response()
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_skip_blanks_and_comments() {
        let keys = parse_key_file("# rotated 2026-12\n\n  alpha  \n#beta\nbeta-2\n\t\n");
        assert_eq!(keys, vec![b"alpha"[..].into(), b"beta-2"[..].into()]);
        assert_eq!(
            parse_key_list(" a, ,b,"),
            vec![b"a"[..].into(), b"b"[..].into()]
        );
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn protected_paths() {
        for p in [
            "/v1",
            "/v1/models",
            "/v1/models/m/classify",
            "/v2",
            "/v2/models/m/infer",
            "/v2/models/m/ready",
        ] {
            assert!(protects(p), "{p}");
        }
        for p in [
            "/",
            "/docs/",
            "/openapi.json",
            "/metrics",
            "/health/ready",
            "/v2/health/ready",
            "/v2/health/live",
            "/v1x",
        ] {
            assert!(!protects(p), "{p}");
        }
    }

    #[test]
    fn keys_from_a_file_and_the_environment_and_reload() {
        let dir = std::env::temp_dir().join(format!("convrnn-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        std::fs::write(&file, "one\n# two\n").unwrap();
        let keys = ApiKeys::load(Some(&file), Some("env1,env2"))
            .unwrap()
            .unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.accepts(b"one") && keys.accepts(b"env2"));
        assert!(!keys.accepts(b"two") && !keys.accepts(b"# two"));
        std::fs::write(&file, "three\n").unwrap();
        assert!(keys.reload(Some("env1,env2")));
        assert!(keys.accepts(b"three") && !keys.accepts(b"one") && keys.accepts(b"env1"));
        assert!(!keys.reload(Some("env1,env2")), "unchanged");
        std::fs::write(&file, "\n# all gone\n").unwrap();
        assert!(!keys.reload(None), "an empty file keeps the keys");
        assert!(keys.accepts(b"three"));
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            ApiKeys::load(Some(&file), None),
            Err(KeyError::Read { .. })
        ));
        assert!(ApiKeys::load(None, None).unwrap().is_none());
        assert!(matches!(
            ApiKeys::load(None, Some(" , ")),
            Err(KeyError::EmptyEnv)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
