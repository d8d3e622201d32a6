//! A fake of Railway's public GraphQL API (`POST /graphql/v2`) for tests:
//! `deployments`, `deployment` and `deploymentRollback` as documented, with
//! knobs for 500s, slow answers, refused or FAILED rollbacks. A rollback
//! creates a new deployment that goes DEPLOYING → SUCCESS (or FAILED) after a
//! delay, then calls a hook (the test points the fake service at the good
//! version there). `deploymentCancel` and `deploymentRemove` take a
//! deployment out (REMOVED); both are recorded.
//!
//! Signatures from Railway's schema as the railway CLI vendors it
//! (railwayapp/cli `src/gql/schema.json`, Mutation type):
//! `deploymentCancel(id: String!): Boolean!` ("Cancels a deployment."),
//! `deploymentRemove(id: String!): Boolean!` ("Removes a deployment."),
//! `deploymentStop(id: String!): Boolean!` ("Stops a deployment.", not faked).
//! Its `DeploymentStatus` enum is BUILDING, CRASHED, DEPLOYING, FAILED,
//! INITIALIZING, NEEDS_APPROVAL, QUEUED, REMOVED, REMOVING, SKIPPED, SLEEPING,
//! SUCCESS, WAITING: there is no CANCELLED, so a cancelled deployment is shown
//! REMOVED.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-project-token";

#[derive(Debug, Clone)]
pub struct FakeDeployment {
    pub id: String,
    pub status: String,
    pub created_at: SystemTime,
    pub commit: String,
}

/// Statuses of a deployment still on its way (the ones the railway CLI
/// colours as in progress: railwayapp/cli `src/commands/deployment.rs`).
const IN_PROGRESS: [&str; 5] = ["BUILDING", "DEPLOYING", "INITIALIZING", "QUEUED", "WAITING"];

/// Knobs a test turns.
#[derive(Debug, Clone)]
pub struct RailwayKnobs {
    /// The next N requests answer HTTP 500.
    pub fail_next: u32,
    /// Every answer is delayed this long.
    pub delay: Duration,
    /// `deploymentRollback` answers `false`.
    pub refuse_rollback: bool,
    /// The status the rollback deployment ends in.
    pub rollback_outcome: String,
    /// How long the rollback deployment stays DEPLOYING.
    pub rollback_takes: Duration,
    /// What `deploymentLogs` answers for any deployment: Railway's `Log`
    /// objects (`{timestamp, message, severity, attributes: [{key, value}]}`).
    pub logs: Vec<Value>,
}

impl Default for RailwayKnobs {
    fn default() -> Self {
        RailwayKnobs {
            fail_next: 0,
            delay: Duration::ZERO,
            refuse_rollback: false,
            rollback_outcome: "SUCCESS".into(),
            rollback_takes: Duration::from_millis(300),
            logs: Vec::new(),
        }
    }
}

type Hook = Arc<dyn Fn(&FakeDeployment) + Send + Sync>;

struct Inner {
    deployments: Vec<FakeDeployment>,
    knobs: RailwayKnobs,
    rollbacks: Vec<String>,
    cancels: Vec<String>,
    removes: Vec<String>,
    requests: Vec<Value>,
    on_success: Option<Hook>,
}

pub struct FakeRailway {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// `id` created `minutes_ago` with `status`.
pub fn deployment(id: &str, status: &str, minutes_ago: u64) -> FakeDeployment {
    FakeDeployment {
        id: id.into(),
        status: status.into(),
        created_at: SystemTime::now() - Duration::from_secs(minutes_ago * 60),
        commit: format!("{id}-sha"),
    }
}

impl FakeRailway {
    /// d1 (3 h, REMOVED), d2 (1 h, REMOVED: the good one), d3 (2 min, SUCCESS: the bad deploy).
    pub fn start() -> Self {
        Self::start_with(vec![
            deployment("d3", "SUCCESS", 2),
            deployment("d2", "REMOVED", 60),
            deployment("d1", "REMOVED", 180),
        ])
    }

    pub fn start_with(deployments: Vec<FakeDeployment>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            deployments,
            knobs: RailwayKnobs::default(),
            rollbacks: Vec::new(),
            cancels: Vec::new(),
            removes: Vec::new(),
            requests: Vec::new(),
            on_success: None,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = super::fake_service::serve_in_thread(
            listener,
            Router::new()
                .route("/graphql/v2", post(graphql))
                .with_state(inner.clone()),
        );
        FakeRailway {
            addr,
            inner,
            stop: Some(stop),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/graphql/v2", self.addr)
    }

    /// The `[provider]` section for rollbackd's config.
    pub fn provider_toml(&self) -> String {
        format!(
            "[provider]\ntype = \"railway\"\nendpoint = \"{}\"\ntoken = \"{TOKEN}\"\nproject_id = \"p1\"\n\
             service_id = \"s1\"\nenvironment_id = \"e1\"\ntimeout = \"2s\"\n",
            self.endpoint()
        )
    }

    pub fn set(&self, change: impl FnOnce(&mut RailwayKnobs)) {
        change(&mut self.inner.lock().unwrap().knobs);
    }

    pub fn on_success(&self, hook: impl Fn(&FakeDeployment) + Send + Sync + 'static) {
        self.inner.lock().unwrap().on_success = Some(Arc::new(hook));
    }

    /// A new deployment goes live (the previous live one becomes REMOVED).
    pub fn deploy(&self, id: &str) {
        let mut g = self.inner.lock().unwrap();
        for d in g.deployments.iter_mut() {
            if d.status == "SUCCESS" {
                d.status = "REMOVED".into();
            }
        }
        g.deployments.push(deployment(id, "SUCCESS", 0));
    }

    /// Adds `d` as it is, touching no other deployment: how a test puts a
    /// deployment in progress (e.g. `deployment("d4", "DEPLOYING", 0)`) beside
    /// the live one.
    pub fn add(&self, d: FakeDeployment) {
        self.inner.lock().unwrap().deployments.push(d);
    }

    /// Targets of every `deploymentRollback` received.
    pub fn rollbacks(&self) -> Vec<String> {
        self.inner.lock().unwrap().rollbacks.clone()
    }

    /// Ids of every `deploymentCancel` received, refused ones included.
    pub fn cancels(&self) -> Vec<String> {
        self.inner.lock().unwrap().cancels.clone()
    }

    /// Ids of every `deploymentRemove` received, refused ones included.
    pub fn removes(&self) -> Vec<String> {
        self.inner.lock().unwrap().removes.clone()
    }

    pub fn deployments(&self) -> Vec<FakeDeployment> {
        self.inner.lock().unwrap().deployments.clone()
    }

    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeRailway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn node(d: &FakeDeployment) -> Value {
    json!({
        "id": d.id,
        "status": d.status,
        "createdAt": humantime::format_rfc3339_millis(d.created_at).to_string(),
        "meta": { "commitHash": d.commit, "branch": "main" },
        "canRollback": true,
    })
}

async fn graphql(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let (delay, fail) = {
        let mut g = inner.lock().unwrap();
        g.requests.push(body.clone());
        let fail = g.knobs.fail_next > 0;
        if fail {
            g.knobs.fail_next -= 1;
        }
        (g.knobs.delay, fail)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream connect error").into_response();
    }
    let token_ok = headers
        .get("project-access-token")
        .and_then(|v| v.to_str().ok())
        == Some(TOKEN)
        || headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
    if !token_ok {
        return Json(json!({ "errors": [{ "message": "Not Authorized" }], "data": null }))
            .into_response();
    }
    let query = body["query"].as_str().unwrap_or("");
    let vars = &body["variables"];
    if query.contains("deploymentRollback") {
        let id = vars["id"].as_str().unwrap_or("").to_string();
        return Json(rollback(&inner, &id)).into_response();
    }
    if query.contains("deploymentCancel") || query.contains("deploymentRemove") {
        let id = vars["id"].as_str().unwrap_or("").to_string();
        return Json(take_out(&inner, &id, query.contains("deploymentCancel"))).into_response();
    }
    let g = inner.lock().unwrap();
    if query.contains("deploymentLogs(") {
        let dated = ["startDate", "endDate"].iter().all(|k| {
            vars[*k]
                .as_str()
                .is_some_and(|t| humantime::parse_rfc3339_weak(t).is_ok())
        });
        if vars["deploymentId"].as_str().is_none() || !dated {
            return Json(json!({ "errors": [{ "message": "Invalid input" }], "data": null }))
                .into_response();
        }
        return Json(json!({ "data": { "deploymentLogs": g.knobs.logs } })).into_response();
    }
    if query.contains("deployments(") {
        let input = &vars["input"];
        if input["projectId"] != "p1" || input["serviceId"] != "s1" {
            return Json(json!({ "errors": [{ "message": "Project not found" }], "data": null }))
                .into_response();
        }
        let first = vars["first"].as_u64().unwrap_or(10) as usize;
        let mut list = g.deployments.clone();
        list.sort_by_key(|d| std::cmp::Reverse(d.created_at));
        let edges: Vec<Value> = list
            .iter()
            .take(first)
            .map(|d| json!({ "node": node(d) }))
            .collect();
        return Json(json!({ "data": { "deployments": { "edges": edges } } })).into_response();
    }
    if query.contains("deployment(") {
        let id = vars["id"].as_str().unwrap_or("");
        return match g.deployments.iter().find(|d| d.id == id) {
            Some(d) => Json(json!({ "data": { "deployment": node(d) } })).into_response(),
            None => {
                Json(json!({ "errors": [{ "message": "Deployment not found" }], "data": null }))
                    .into_response()
            }
        };
    }
    Json(json!({ "errors": [{ "message": "unknown operation" }] })).into_response()
}

fn rollback(inner: &Arc<Mutex<Inner>>, id: &str) -> Value {
    let mut g = inner.lock().unwrap();
    g.rollbacks.push(id.to_string());
    if g.knobs.refuse_rollback {
        return json!({ "data": { "deploymentRollback": false } });
    }
    let Some(target) = g.deployments.iter().find(|d| d.id == id).cloned() else {
        return json!({ "errors": [{ "message": "Deployment not found" }], "data": null });
    };
    let new = FakeDeployment {
        id: format!("d{}", g.deployments.len() + 1),
        status: "DEPLOYING".into(),
        created_at: SystemTime::now(),
        commit: target.commit.clone(),
    };
    g.deployments.push(new.clone());
    let (takes, outcome) = (g.knobs.rollback_takes, g.knobs.rollback_outcome.clone());
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(takes).await;
        let hook = {
            let mut g = inner.lock().unwrap();
            // Cancelled or removed while DEPLOYING: it never comes live.
            if !g
                .deployments
                .iter()
                .any(|d| d.id == new.id && d.status == "DEPLOYING")
            {
                return;
            }
            if outcome == "SUCCESS" {
                for d in g.deployments.iter_mut() {
                    if d.status == "SUCCESS" {
                        d.status = "REMOVED".into();
                    }
                }
            }
            if let Some(d) = g.deployments.iter_mut().find(|d| d.id == new.id) {
                d.status = outcome.clone();
            }
            g.on_success.clone().filter(|_| outcome == "SUCCESS")
        };
        if let Some(hook) = hook {
            hook(&target);
        }
    });
    json!({ "data": { "deploymentRollback": true } })
}

/// `deploymentCancel(id)` (`cancel`) or `deploymentRemove(id)`: the deployment
/// becomes REMOVED and the answer is `true`. Cancel takes only a deployment
/// in progress; remove also takes a finished one (`railway down` removes the
/// latest SUCCESS deployment with it: railwayapp/cli `src/commands/down.rs`).
fn take_out(inner: &Arc<Mutex<Inner>>, id: &str, cancel: bool) -> Value {
    let mut g = inner.lock().unwrap();
    let field = if cancel {
        g.cancels.push(id.to_string());
        "deploymentCancel"
    } else {
        g.removes.push(id.to_string());
        "deploymentRemove"
    };
    let Some(d) = g.deployments.iter_mut().find(|d| d.id == id) else {
        return json!({ "errors": [{ "message": "Deployment not found" }], "data": null });
    };
    // Reproduces Railway refusing to cancel a deployment no longer in progress
    // (or to remove one already gone). Assumed: neither the schema nor the
    // railway CLI says what the API answers there, nor its wording; the
    // message must not say "not found", which rollbackd reads as an unknown id.
    let refused = if cancel {
        !IN_PROGRESS.contains(&d.status.as_str())
    } else {
        matches!(d.status.as_str(), "REMOVED" | "REMOVING")
    };
    if refused {
        let verb = if cancel { "cancelled" } else { "removed" };
        let message = format!("Deployment {} cannot be {verb}: it is {}", d.id, d.status);
        return json!({ "errors": [{ "message": message }], "data": null });
    }
    d.status = "REMOVED".into();
    json!({ "data": { field: true } })
}

/// A Railway log line: on stderr (so severity `error`, whatever it says),
/// with a structured `level` attribute when given.
pub fn log(message: &str, level: Option<&str>) -> Value {
    let attributes: Vec<Value> = level
        .map(|l| json!({ "key": "level", "value": format!("\"{l}\"") }))
        .into_iter()
        .collect();
    json!({
        "timestamp": humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        "message": message,
        "severity": "error",
        "attributes": attributes,
    })
}
