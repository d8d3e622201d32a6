//! The accept loop of rollbackd's HTTP server, with the bounds a server
//! listening on `0.0.0.0` needs:
//!
//! - **Header and idle timeout** (`server.header_timeout`, 5 s): a client
//!   that trickles its headers, or keeps a connection open without sending
//!   the next request, is disconnected.
//! - **Request timeout** (`server.request_timeout`, 30 s): the whole
//!   request, body and answer, or `503`.
//! - **Connection limit** (`server.max_connections`, 256). Past it, up to
//!   [`RESERVE`] more connections are served one request each, with a
//!   one-second header timeout, no keep-alive and 5 s to live, so a
//!   probe's `/healthz` still gets through while the limit is held;
//!   connections past that are closed at once. Each connection is a file
//!   descriptor: the limit keeps rollbackd's own (rule files, Prometheus,
//!   PostgreSQL) available.
//! - **Lifetime**: any connection is closed after 5 minutes, so a client
//!   that stops reading its answer cannot hold a slot for ever.
//! - Calls that change something check the token before reading the body
//!   (`require_token`), so only token holders can make rollbackd buffer one.
//! - **Accept errors** (out of file descriptors) are logged and retried
//!   after a pause; they never stop the server.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use super::config::ServerConfig;

/// Connections served past `max_connections`, one short request each.
pub(super) const RESERVE: usize = 32;
/// The longest any connection stays open (kept-alive ones reconnect).
const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// The longest a reserve connection stays open, its one request included.
const RESERVE_LIFETIME: Duration = Duration::from_secs(5);

/// The bounds, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(c: &ServerConfig) -> Self {
        Limits {
            max_connections: c.max_connections,
            header_timeout: c.header_timeout,
            request_timeout: c.request_timeout,
        }
    }
}

/// Serves `app` on `listener` until the process ends.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
) -> std::io::Result<()> {
    let request_timeout = limits.request_timeout;
    let app = app.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| async move {
            match tokio::time::timeout(request_timeout, next.run(request)).await {
                Ok(answer) => answer,
                Err(_) => super::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the request took longer than {} (server.request_timeout); a change it asked for may still take effect: check GET /api/v1/pending, /api/v1/breaker and /api/v1/rollbacks before asking again",
                        crate::duration::format(request_timeout)
                    ),
                ),
            }
        },
    ));
    let regular = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(RESERVE));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection; retrying in 100ms");
                crate::telemetry::events::connection_refused("accept_error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (permit, header_timeout, keep_alive, lifetime) =
            match regular.clone().try_acquire_owned() {
                Ok(permit) => (permit, limits.header_timeout, true, MAX_LIFETIME),
                Err(_) => match reserve.clone().try_acquire_owned() {
                    Ok(permit) => (
                        permit,
                        limits.header_timeout.min(Duration::from_secs(1)),
                        false,
                        RESERVE_LIFETIME,
                    ),
                    Err(_) => {
                        crate::telemetry::events::connection_refused("limit");
                        drop(stream);
                        continue;
                    }
                },
            };
        let service = TowerToHyperService::new(app.clone());
        let request_timeout = limits.request_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(keep_alive)
                .serve_connection(TokioIo::new(stream), service);
            // Errors are the client's (a reset, a timeout): nothing to do.
            // A connection that outlives its lifetime (a client that never
            // reads its answer, say) is asked to close after the request in
            // flight, which gets `request_timeout` to finish; a reserve
            // connection is cut at its lifetime.
            let served = std::panic::AssertUnwindSafe(async move {
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    _ = tokio::time::sleep(lifetime) => {
                        if keep_alive {
                            connection.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(request_timeout, connection).await;
                        }
                    }
                }
            });
            if futures_util::FutureExt::catch_unwind(served).await.is_err() {
                // A bug in a handler: that request fails, rollbackd serves on.
                tracing::error!("a request handler panicked; the connection was closed");
            }
        });
    }
}
