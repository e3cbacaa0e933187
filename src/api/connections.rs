//! The accept loop: how many connections the server holds, for how long, and how big a request
//! head may grow.
//!
//! `axum::serve` keeps a connection for as long as the client likes and lets a request head grow
//! to hyper's ~400 KB buffer. Every other bound of the server (admission slots, the decode
//! limit) starts once a request head is complete, so a client that opens connections and never
//! finishes a head held memory outside all of them, for as long as it liked
//! (docs/performance.md, "Connections"). Here:
//! - at most `max_connections` are open at once; the next waits in the kernel's accept backlog
//!   until one closes, so a flood queues instead of growing the process;
//! - a connection that has not sent a complete request head `header_timeout` after it opened or
//!   after its last answer is closed: idle keep-alive connections and stalled heads alike
//!   (hyper's header-read timer, which `axum::serve` leaves off);
//! - a request head over [`MAX_HEAD_BYTES`] gets 431.
//!
//! Shutdown is graceful as before: stop accepting, let in-flight requests finish, close idle
//! connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Largest request head (request line and headers) accepted. The API's heads are a few hundred
/// bytes; the cap bounds what a connection holds before any request is admitted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections to
/// finish their requests (the caller bounds that wait). `metrics`: where to count connections
/// (the API listener's; the admin listener's are not counted).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        // The read buffer grows by doubling towards this, so the cap bounds what a stalled head
        // holds; bodies stream through it in chunks of at most this size.
        .max_buf_size(MAX_HEAD_BYTES + 16 * 1024);
    // Clamped: tokio's semaphore panics above MAX_PERMITS, and no host holds that many sockets.
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // The slot first: at the cap, connections stay in the kernel's backlog, unaccepted.
        let slot = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let stream = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        let counters = metrics
            .as_ref()
            .map(|m| (m.http_connections.clone(), m.http_header_timeouts.clone()));
        if let Some((open, _)) = &counters {
            open.inc();
        }
        tokio::spawn(async move {
            let result = connection.await;
            if let Some((open, timeouts)) = counters {
                if result.as_ref().is_err_and(|e| e.is_timeout()) {
                    timeouts.inc();
                }
                open.dec();
            }
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors of one connection (the peer reset it before we took it) are nothing to wait for;
/// anything else, such as running out of file descriptors, would spin the loop, so it waits.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
