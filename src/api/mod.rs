//! rollbackd's own HTTP server: `/metrics` for Prometheus, `/healthz` and
//! `/readyz` for the orchestrator, and `/api/v1` for people and scripts:
//! rules, rollbacks, pending confirmations and the deploy breaker.
//!
//! Reads are open; calls that change something (approve, reject, breaker
//! reset) need `Authorization: Bearer <server.api_token>`, and are refused
//! outright while no token is configured. Tokens never reach the logs.

// Handlers answer errors with axum's `Response`, built once per request;
// boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

pub(crate) mod alertmanager;
pub(crate) mod config;
mod serve;

pub(crate) use alertmanager::AlertIntake;
pub(crate) use serve::serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::engine::dispatch::{ApproveError, Command, Forwarded};
use crate::engine::pending::PendingStore;
use crate::engine::Engine;
use crate::secret::Secret;
use crate::telemetry;
use crate::watch::StatusBoard;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub board: Arc<StatusBoard>,
    /// Slack allowed before a silent group counts as stuck (the query timeout).
    pub grace: Duration,
    pub engine: Option<Arc<Engine>>,
    pub pending: Arc<PendingStore>,
    pub commands: Option<mpsc::Sender<Command>>,
    pub token: Option<Secret>,
    /// Where Alertmanager's alerts go (the dispatcher), when `[alertmanager]` is set.
    pub alerts: Option<AlertIntake>,
    /// A failed task makes `/healthz` fail.
    pub supervisor: crate::supervise::Supervisor,
}

#[cfg(test)]
impl AppState {
    /// A read-only state: no engine, no token.
    pub(crate) fn watch_only(board: Arc<StatusBoard>, grace: Duration) -> Self {
        AppState {
            board,
            grace,
            engine: None,
            pending: Arc::new(PendingStore::default()),
            commands: None,
            token: None,
            alerts: None,
            supervisor: Default::default(),
        }
    }
}

/// The router, separate from binding so tests can drive it directly.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/rollbacks", get(rollbacks))
        .route("/api/v1/rollbacks/{id}", get(rollback))
        .route("/api/v1/pending", get(pending))
        .route("/api/v1/breaker", get(breaker))
        .route("/api/v1/leader", get(leader))
        .merge(
            // Calls that change something: the token is checked before the
            // body is read, so a client without it cannot make rollbackd
            // buffer anything.
            Router::new()
                .route("/api/v1/pending/{id}/approve", post(approve))
                .route("/api/v1/pending/{id}/reject", post(reject))
                .route("/api/v1/breaker/reset", post(breaker_reset))
                .route("/api/v1/alertmanager", post(alertmanager::receive))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    require_token,
                )),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; the API is described in docs/api.md",
            )
        })
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// Binds `addr`; the error names the address so a port clash is obvious.
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, std::io::Error> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e} (set server.listen or ROLLBACKD_SERVER__LISTEN)"),
        )
    })
}

/// Under `/api/`, every error is JSON, those axum answers by itself too
/// (405 for a wrong method, 413 for a body over the limit, 400 and 415
/// for a body that cannot be read).
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let answer = next.run(request).await;
    let status = answer.status();
    let is_json = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || is_json || !(status.is_client_error() || status.is_server_error()) {
        return answer;
    }
    let allow = answer.headers().get(header::ALLOW).cloned();
    let text = axum::body::to_bytes(answer.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "this endpoint does not take that method; the API is described in docs/api.md".into()
        }
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than 2 MiB".into(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
        _ => text,
    };
    let mut answer = error(status, message);
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Checks the bearer token in constant time.
/// The token of an `Authorization: Bearer …` header; the scheme is
/// case-insensitive (RFC 9110, 11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// The one check of the token, on every call that changes something (the
/// handlers behind it need not repeat it).
async fn require_token(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Another method is answered 405 by the router, as it should be.
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused,
    }
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = &state.token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "this call changes state and the API has no token: set server.api_token (or ROLLBACKD_SERVER__API_TOKEN)",
        ));
    };
    let Some(given) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <server.api_token>",
        ));
    };
    let (a, b) = (given.as_bytes(), expected.expose().as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    if diff == 0 {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "the bearer token is not server.api_token",
        ))
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = telemetry::rule_metrics::drop_removed_groups(
        telemetry::metrics_handle().render(),
        &state.board.group_names(),
    );
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
    if let Some(failure) = state.supervisor.failure() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{failure}\n")).into_response();
    }
    match state.board.live(state.grace) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// Ready once every group has evaluated. Whether anything can roll back
/// is said in the body, not the status: beside a service as a sidecar, a
/// failing readiness would take the service's pod out of its load balancer
/// for an outage of rollbackd's state (`rollbackd_leader`,
/// `rollbackd_state_reachable` and the alert `RollbackdNoReplicaCanAct`
/// carry it to people).
async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(why) = state.board.ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    }
    let Some(engine) = &state.engine else {
        return (StatusCode::OK, "ready\n").into_response();
    };
    let leadership = engine.leadership();
    let store = engine
        .store_problem()
        .map(|why| format!("; database.backup_store cannot be used, emergency backups stay on this machine: {why}"))
        .unwrap_or_default();
    let body = if let Some(why) = engine.unreadable_journal() {
        format!("ready; no rollback starts until this run journal is repaired or quarantined (`rollbackd state journals`): {why}\n")
    } else if let Some(holder) = leadership.conflict() {
        format!("ready; this replica refuses to lead: {holder} leads this service under another state.schema\n")
    } else if !leadership.state_reachable() {
        "ready; the shared state cannot be reached, so no replica can roll back now\n".into()
    } else if leadership.is_leader() {
        "ready; this replica leads and can roll back\n".into()
    } else {
        "ready; this replica follows\n".into()
    };
    let body = match store.is_empty() {
        true => body,
        false => format!("{}{store}\n", body.trim_end()),
    };
    (StatusCode::OK, body).into_response()
}

async fn rules(State(state): State<AppState>) -> Response {
    Json(state.board.rules()).into_response()
}

fn engine(state: &AppState) -> Result<&Arc<Engine>, Response> {
    state.engine.as_ref().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no [provider] is configured, so this rollbackd only watches",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<usize>,
}

async fn rollbacks(
    State(state): State<AppState>,
    query: Result<Query<Limit>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = match query {
        Ok(Query(Limit { limit })) => limit.unwrap_or(50),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e}; use ?limit=N")),
    };
    let engine = match engine(&state) {
        Ok(e) => e,
        Err(r) => return r,
    };
    match engine.history().load() {
        Ok(h) => Json(h.events.into_iter().rev().take(limit).collect::<Vec<_>>()).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// One history entry by its id (the link in a `[gitops]` pull request).
async fn rollback(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let engine = match engine(&state) {
        Ok(e) => e,
        Err(r) => return r,
    };
    match engine.history().load() {
        Ok(h) => match h
            .events
            .into_iter()
            .rev()
            .find(|e| e.id.as_deref() == Some(&id))
        {
            Some(e) => Json(e).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!("no history entry {id:?}; GET /api/v1/rollbacks lists them"),
            ),
        },
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn pending(State(state): State<AppState>) -> Response {
    // A follower shows what the leader shares.
    match &state.engine {
        Some(engine) if !engine.is_leader() => Json(state.pending.shared()).into_response(),
        _ => Json(state.pending.list()).into_response(),
    }
}

/// On a follower, an operator's answer is handed to the leader through the
/// shared state; the leader carries it out once.
fn forward(state: &AppState, answer: Forwarded) -> Option<Response> {
    let engine = state.engine.as_ref().filter(|e| !e.is_leader())?;
    // An answer about a confirmation nobody is waiting for is refused here,
    // as the leader would refuse it, rather than handed over as accepted.
    if let Forwarded::Approve { pending, .. } | Forwarded::Reject { pending } = &answer {
        let known = state
            .pending
            .shared()
            .iter()
            .any(|p| p["id"].as_str() == Some(pending.as_str()));
        if !known {
            return Some(approve_error(ApproveError::NotFound(pending.clone())));
        }
    }
    Some(match crate::engine::dispatch::forward(engine, &answer) {
        Ok(request) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "forwarded_to_leader": true,
                "request": request,
                "about": answer.subject(),
            })),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this replica follows and cannot hand the answer to the leader: {e}"),
        ),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    #[serde(default)]
    force: bool,
}

/// Parses an optional JSON body; an empty body means the defaults.
fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes) -> Result<T, Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn send_command<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    let Some(commands) = &state.commands else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no [provider] is configured, so nothing can be approved",
        ));
    };
    let (tx, rx) = oneshot::channel();
    commands.send(make(tx)).await.map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the rollback engine has stopped",
        )
    })?;
    rx.await.map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the rollback engine has stopped",
        )
    })
}

fn approve_error(e: ApproveError) -> Response {
    let status = match e {
        ApproveError::NotFound(_) => StatusCode::NOT_FOUND,
        ApproveError::NoLongerFiring(_) | ApproveError::Blocked(_) | ApproveError::NotLeader => {
            StatusCode::CONFLICT
        }
    };
    error(status, e.to_string())
}

async fn approve(State(state): State<AppState>, Path(id): Path<String>, bytes: Bytes) -> Response {
    let ApproveBody { force } = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(r) = forward(
        &state,
        Forwarded::Approve {
            pending: id.clone(),
            force,
            // The confirmation as the leader shares it: should the leader
            // die before carrying the answer out, the next one can.
            snapshot: state.pending.shared_one(&id).map(Box::new),
        },
    ) {
        return r;
    }
    match send_command(&state, |reply| Command::Approve { id, force, reply }).await {
        Err(r) => r,
        Ok(Ok(approved)) => (StatusCode::ACCEPTED, Json(approved)).into_response(),
        Ok(Err(e)) => approve_error(e),
    }
}

async fn reject(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if let Some(r) = forward(
        &state,
        Forwarded::Reject {
            pending: id.clone(),
        },
    ) {
        return r;
    }
    let rejected = id.clone();
    match send_command(&state, |reply| Command::Reject { id, reply }).await {
        Err(r) => r,
        Ok(Ok(())) => Json(json!({ "rejected": rejected })).into_response(),
        Ok(Err(e)) => approve_error(e),
    }
}

async fn breaker(State(state): State<AppState>) -> Response {
    let engine = match engine(&state) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let now = SystemTime::now();
    let stateful = engine.breaker_state(now);
    match engine.breaker().load() {
        Ok(record) => Json(json!({
            "state": stateful.as_str(),
            "deploys_allowed": stateful != crate::engine::BreakerState::Open,
            "since": record.since,
            "reason": record.reason,
            "rollback_id": record.rollback_id,
        })),
        // An unreadable record counts as OPEN; say why rather than answer
        // an OPEN breaker with no reason.
        Err(e) => Json(json!({
            "state": stateful.as_str(),
            "deploys_allowed": false,
            "since": null,
            "reason": e.to_string(),
            "rollback_id": null,
            "error": e.to_string(),
        })),
    }
    .into_response()
}

/// Whether this replica leads (beside several replicas sharing PostgreSQL,
/// only the leader acts; a single instance always leads).
async fn leader(State(state): State<AppState>) -> Response {
    let engine = match engine(&state) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let leadership = engine.leadership();
    Json(json!({
        "leader": leadership.is_leader(),
        "epoch": leadership.epoch(),
        "state_reachable": leadership.state_reachable(),
        "can_act": leadership.can_act(),
        "conflict": leadership.conflict(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    reason: String,
    /// Also give back what rollbackd holds on the platform (Argo CD's
    /// automated sync).
    #[serde(default)]
    resume_sync: bool,
}

impl Default for ResetBody {
    fn default() -> Self {
        ResetBody {
            reason: "reset through the API".into(),
            resume_sync: false,
        }
    }
}

async fn breaker_reset(State(state): State<AppState>, bytes: Bytes) -> Response {
    let ResetBody {
        reason,
        resume_sync,
    } = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let engine = match engine(&state) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if let Some(r) = forward(
        &state,
        Forwarded::ResetBreaker {
            reason: reason.clone(),
            resume_sync,
        },
    ) {
        return r;
    }
    let _lock = match engine.state().try_lock() {
        Ok(Some(l)) => l,
        Ok(None) => {
            return error(
                StatusCode::CONFLICT,
                "a rollback is running; reset the breaker after it ends",
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let now = SystemTime::now();
    match engine.breaker().close(now, &reason) {
        Ok(()) => {
            engine.breaker_state(now);
            tracing::warn!(reason = %reason, "deploy breaker reset through the API");
            let resumed = if resume_sync {
                match engine.provider.resume_sync().await {
                    Ok(done) => done,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_GATEWAY,
                            format!("the breaker is CLOSED, but automated sync could not be turned back on: {e}"),
                        )
                    }
                }
            } else {
                None
            };
            Json(json!({ "state": "CLOSED", "reason": reason, "resumed": resumed })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests;
