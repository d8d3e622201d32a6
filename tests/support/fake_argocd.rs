//! A fake of Argo CD's REST API for one application, as rollbackd uses it:
//! `GET`, `PATCH` (merge patch) and `POST …/rollback` on
//! `/api/v1/applications/{name}`. Reproduced from argoproj/argo-cd (HEAD
//! 37ee0097, 3.6.0-dev; grpc-gateway v1.16.0):
//!
//! - errors are grpc-gateway bodies `{"error","code","message"}`; gRPC 16 →
//!   401, 7 → 403, 3 and 9 → 400 (`runtime/errors.go`);
//! - no token: 401 `no session information`; a wrong one: 401 `invalid
//!   session: token signature is invalid` (`server/server.go` getToken and
//!   the session verifier);
//! - an application that does not exist: 403 `permission denied`, not 404
//!   (`server/application/application.go` getAppEnforceRBAC);
//! - a non-GET without exactly `Content-Type: application/json`: 415
//!   `Invalid content type` (`server/server.go`);
//! - rollback refusals, in Argo CD's order (`application.go` Rollback):
//!   automated sync on → 400, code 9, `rollback cannot be initiated when
//!   auto-sync is enabled`; an unknown history id → 400, code 3,
//!   `application <ns>/<name> does not have deployment with id <id>`; an
//!   operation already asked → 400, code 9, `another operation is already in
//!   progress` (`util/argo/argo.go` SetAppOperation);
//! - a rollback sets `operation`, clears `status.operationState`, and
//!   returns the application; the "controller" then runs it: `Running`, then
//!   `Succeeded` with `operation` null and a new history entry (`last id +
//!   1`, the target's revision), health `Progressing` then `Healthy` (or
//!   `Degraded`, a knob); the history keeps the last 10 entries;
//! - `PATCH` with `patchType: "merge"` applies an RFC 7386 merge patch and
//!   keeps only `spec` and `metadata.annotations`/`labels`; an empty
//!   `patchType` is a JSON Patch (refused here as it would be for an object).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// A JWT-shaped token (Argo CD ignores an `Authorization` that is not).
pub const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb2xsYmFja2QifQ.c2lnbmF0dXJl";
pub const APP: &str = "shop";
pub const NAMESPACE: &str = "argocd";

/// Knobs a test turns.
#[derive(Debug, Clone)]
pub struct ArgoKnobs {
    /// The health the application reaches after a rollback's sync.
    pub health_after: String,
    /// How long the sync operation runs, then how long health stays
    /// `Progressing`.
    pub operation_takes: Duration,
    pub health_takes: Duration,
    /// A `PATCH` is applied, then its answer held until this is cleared
    /// (a test kills rollbackd meanwhile).
    pub hold_patch_answer: bool,
}

impl Default for ArgoKnobs {
    fn default() -> Self {
        ArgoKnobs {
            health_after: "Healthy".into(),
            operation_takes: Duration::from_millis(300),
            health_takes: Duration::from_millis(300),
            hold_patch_answer: false,
        }
    }
}

struct Inner {
    app: Value,
    knobs: ArgoKnobs,
    rollbacks: Vec<Value>,
    patches: Vec<Value>,
    /// Whether a held `PATCH` is waiting.
    patch_held: bool,
}

pub struct FakeArgocd {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn at(minutes_ago: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(minutes_ago * 60))
        .to_string()
}

fn entry(id: i64, revision: &str, minutes_ago: u64) -> Value {
    json!({
        "id": id,
        "revision": revision,
        "deployedAt": at(minutes_ago),
        "deployStartedAt": at(minutes_ago),
        "source": {"repoURL": "https://git.example.com/shop-config.git", "path": "prod", "targetRevision": "main"},
        "initiatedBy": {"automated": true},
    })
}

impl FakeArgocd {
    /// Application `shop` in namespace `argocd`: history 0 (`aaa`, 3 h),
    /// 1 (`bbb`, 1 h: the good one), 2 (`ccc`, 2 min: the bad deploy),
    /// Healthy, automated sync on with prune and self-heal.
    pub fn start() -> FakeArgocd {
        let app = json!({
            "metadata": {"name": APP, "namespace": NAMESPACE, "resourceVersion": "1"},
            "spec": {
                "project": "default",
                "source": {"repoURL": "https://git.example.com/shop-config.git", "path": "prod", "targetRevision": "main"},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"},
                "syncPolicy": {
                    "automated": {"prune": true, "selfHeal": true},
                    "syncOptions": ["CreateNamespace=true"]
                }
            },
            "status": {
                "sync": {"status": "Synced", "revision": "ccc"},
                "health": {"status": "Healthy"},
                "history": [entry(0, "aaa", 180), entry(1, "bbb", 60), entry(2, "ccc", 2)],
                "operationState": {"phase": "Succeeded", "message": "successfully synced (no more tasks)", "startedAt": at(2), "finishedAt": at(2)}
            }
        });
        let inner = Arc::new(Mutex::new(Inner {
            app,
            knobs: ArgoKnobs::default(),
            rollbacks: Vec::new(),
            patches: Vec::new(),
            patch_held: false,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = super::fake_service::serve_in_thread(
            listener,
            Router::new()
                .route("/api/v1/applications/{name}", get(get_app).patch(patch_app))
                .route("/api/v1/applications/{name}/rollback", post(rollback))
                .with_state(inner.clone()),
        );
        FakeArgocd {
            addr,
            inner,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `[provider]` section for rollbackd's config.
    pub fn provider_toml(&self, token: &str) -> String {
        format!(
            "[provider]\ntype = \"argocd\"\nserver = \"{}\"\napplication = \"{APP}\"\napp_namespace = \"{NAMESPACE}\"\n\
             token = \"{token}\"\ntimeout = \"2s\"\noperation_timeout = \"20s\"\n",
            self.url()
        )
    }

    pub fn set(&self, change: impl FnOnce(&mut ArgoKnobs)) {
        change(&mut self.inner.lock().unwrap().knobs);
    }

    /// The revisions of history entries 0, 1 and 2 (the live one): a
    /// test's own git commits.
    pub fn set_revisions(&self, revisions: [&str; 3]) {
        let mut g = self.inner.lock().unwrap();
        for (i, r) in revisions.iter().enumerate() {
            g.app["status"]["history"][i]["revision"] = json!(r);
        }
        g.app["status"]["sync"]["revision"] = json!(revisions[2]);
    }

    /// The sync history, oldest first, as `(revision, deployed at)`: ids
    /// 0, 1, …; the last is what runs.
    pub fn set_history(&self, entries: &[(&str, SystemTime)]) {
        let mut g = self.inner.lock().unwrap();
        let history: Vec<Value> = entries
            .iter()
            .enumerate()
            .map(|(id, (revision, deployed))| {
                let mut e = entry(id as i64, revision, 0);
                let at = humantime::format_rfc3339_seconds(*deployed).to_string();
                e["deployedAt"] = json!(at);
                e["deployStartedAt"] = json!(at);
                e
            })
            .collect();
        let live = entries.last().map(|(r, _)| *r).unwrap_or_default();
        g.app["status"]["history"] = json!(history);
        g.app["status"]["sync"]["revision"] = json!(live);
    }

    /// The application as the fake holds it now.
    pub fn app(&self) -> Value {
        self.inner.lock().unwrap().app.clone()
    }

    /// Every rollback request's body, refused ones included.
    pub fn rollbacks(&self) -> Vec<Value> {
        self.inner.lock().unwrap().rollbacks.clone()
    }

    /// Every merge patch applied.
    pub fn patches(&self) -> Vec<Value> {
        self.inner.lock().unwrap().patches.clone()
    }

    /// Whether a `PATCH` answer is being held now.
    pub fn patch_held(&self) -> bool {
        self.inner.lock().unwrap().patch_held
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({"error": message, "code": code, "message": message})),
    )
        .into_response()
}

/// Authentication first, then the application's existence, as Argo CD's
/// interceptors and `getAppEnforceRBAC` do.
fn admit(headers: &HeaderMap, name: &str) -> Option<Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match auth.strip_prefix("Bearer ") {
        Some(token) if token.matches('.').count() == 2 => {
            if token != TOKEN {
                return Some(error(
                    StatusCode::UNAUTHORIZED,
                    16,
                    "invalid session: token signature is invalid",
                ));
            }
        }
        _ => {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                16,
                "no session information",
            ))
        }
    }
    (name != APP).then(|| error(StatusCode::FORBIDDEN, 7, "permission denied"))
}

fn json_only(headers: &HeaderMap) -> Option<Response> {
    let ok = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("application/json"));
    (!ok).then(|| (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Invalid content type\n").into_response())
}

async fn get_app(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = admit(&headers, &name) {
        return r;
    }
    Json(inner.lock().unwrap().app.clone()).into_response()
}

/// RFC 7386.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let object = target.as_object_mut().unwrap();
            for (key, value) in fields {
                if value.is_null() {
                    object.remove(key);
                } else {
                    merge(object.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A request that changes something: admitted, JSON, and its body read.
fn change(headers: &HeaderMap, name: &str, body: &str) -> Result<Value, Box<Response>> {
    if let Some(r) = admit(headers, name).or_else(|| json_only(headers)) {
        return Err(Box::new(r));
    }
    serde_json::from_str::<Value>(body).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            3,
            "invalid character in request body",
        ))
    })
}

async fn patch_app(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let request = match change(&headers, &name, &body) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    let patch_type = request["patchType"].as_str().unwrap_or("");
    let Some(Ok(patch)) = request["patch"].as_str().map(serde_json::from_str::<Value>) else {
        return error(
            StatusCode::BAD_REQUEST,
            3,
            "patch must be a JSON document in a string",
        );
    };
    if patch_type != "merge" {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            2,
            "error decoding json patch: json: cannot unmarshal object into Go value of type jsonpatch.Patch",
        );
    }
    let held = {
        let mut g = inner.lock().unwrap();
        // Only spec, labels and annotations are kept.
        let mut patched = g.app.clone();
        merge(&mut patched, &patch);
        g.app["spec"] = patched["spec"].clone();
        for key in ["annotations", "labels"] {
            match patched["metadata"].get(key) {
                Some(v) => g.app["metadata"][key] = v.clone(),
                None => {
                    if let Some(m) = g.app["metadata"].as_object_mut() {
                        m.remove(key);
                    }
                }
            }
        }
        g.patches.push(patch);
        g.patch_held = g.knobs.hold_patch_answer;
        g.knobs.hold_patch_answer
    };
    while held && inner.lock().unwrap().knobs.hold_patch_answer {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut g = inner.lock().unwrap();
    g.patch_held = false;
    Json(g.app.clone()).into_response()
}

async fn rollback(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let request = match change(&headers, &name, &body) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    let mut g = inner.lock().unwrap();
    g.rollbacks.push(request.clone());
    let automated = &g.app["spec"]["syncPolicy"]["automated"];
    if !automated.is_null() && automated["enabled"].as_bool() != Some(false) {
        return error(
            StatusCode::BAD_REQUEST,
            9,
            "rollback cannot be initiated when auto-sync is enabled",
        );
    }
    let id = request["id"].as_i64().unwrap_or(0);
    let Some(target) = g.app["status"]["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["id"].as_i64() == Some(id)))
        .cloned()
    else {
        return error(
            StatusCode::BAD_REQUEST,
            3,
            &format!("application {NAMESPACE}/{APP} does not have deployment with id {id}"),
        );
    };
    if !g.app["operation"].is_null() {
        return error(
            StatusCode::BAD_REQUEST,
            9,
            "another operation is already in progress",
        );
    }
    g.app["operation"] = json!({
        "sync": {"revision": target["revision"], "source": target["source"], "prune": request["prune"], "dryRun": false},
        "initiatedBy": {"username": "rollbackd"}
    });
    if let Some(status) = g.app["status"].as_object_mut() {
        status.remove("operationState");
    }
    let answer = g.app.clone();
    let knobs = g.knobs.clone();
    drop(g);
    // The application controller.
    let controller = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        controller.lock().unwrap().app["status"]["operationState"] = json!({"phase": "Running", "message": "one or more tasks are running", "startedAt": at(0)});
        tokio::time::sleep(knobs.operation_takes).await;
        {
            let mut g = controller.lock().unwrap();
            let history = g.app["status"]["history"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let next = history
                .last()
                .and_then(|e| e["id"].as_i64())
                .map_or(0, |id| id + 1);
            let mut added = target.clone();
            added["id"] = json!(next);
            added["deployedAt"] = json!(at(0));
            added["deployStartedAt"] = json!(at(0));
            added["initiatedBy"] = json!({"username": "rollbackd"});
            let mut history = history;
            history.push(added);
            let keep = history.len().saturating_sub(10);
            g.app["status"]["history"] = Value::Array(history.split_off(keep));
            g.app["status"]["operationState"] = json!({
                "phase": "Succeeded", "message": "successfully synced (no more tasks)",
                "startedAt": at(0), "finishedAt": at(0),
                "syncResult": {"revision": target["revision"]}
            });
            g.app["operation"] = Value::Null;
            if let Some(app) = g.app.as_object_mut() {
                app.remove("operation");
            }
            g.app["status"]["sync"]["status"] = json!("OutOfSync");
            g.app["status"]["health"] = json!({"status": "Progressing"});
        }
        tokio::time::sleep(knobs.health_takes).await;
        let mut g = controller.lock().unwrap();
        g.app["status"]["health"] = if knobs.health_after == "Healthy" {
            json!({"status": "Healthy"})
        } else {
            json!({"status": knobs.health_after, "message": "Deployment \"shop\" exceeded its progress deadline"})
        };
    });
    Json(answer).into_response()
}
