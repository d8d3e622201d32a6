//! rollbackd's own HTTP server: `/metrics` for Prometheus, `/healthz` and
//! `/readyz` for the orchestrator, `/api/v1/rules` for people and scripts.
//! Read-only for now; it never changes the watcher's state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::telemetry;
use crate::watch::StatusBoard;

#[derive(Clone)]
struct AppState {
    board: Arc<StatusBoard>,
    /// Slack allowed before a silent group counts as stuck (the query timeout).
    grace: Duration,
}

/// The router, separate from binding so tests can drive it directly.
pub fn router(board: Arc<StatusBoard>, grace: Duration) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/rules", get(rules))
        .with_state(AppState { board, grace })
}

/// Binds `addr`; the error names the address so a port clash is obvious.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, std::io::Error> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e} (set server.listen or ROLLBACKD_SERVER__LISTEN)"),
        )
    })
}

/// Serves until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app).await
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = telemetry::metrics_handle().render();
    telemetry::rule_metrics::render(&state.board.rules(), &mut body);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.board.live(state.grace) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.board.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn rules(State(state): State<AppState>) -> Response {
    Json(state.board.rules()).into_response()
}
