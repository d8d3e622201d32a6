//! A fake web service for tests and the demo: it exposes the metrics a real
//! service would (request counters by status code, a latency histogram, DB
//! pool gauges, DB query counters) and its health endpoints, all driven by
//! knobs that a test or `POST /control` turns. Traffic is synthetic: counters
//! grow at `rps` per second of wall time, so no load generator is needed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// What the fake service does right now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Knobs {
    /// Service label on every metric.
    pub service: String,
    /// The deployed version (exposed as `app_deployment_info`).
    pub version: String,
    /// Requests per second.
    pub rps: f64,
    /// Fraction of requests answered 500.
    pub error_ratio: f64,
    /// Latency of most requests, in seconds.
    pub latency: f64,
    /// Fraction of requests that take `slow_latency` instead.
    pub slow_ratio: f64,
    pub slow_latency: f64,
    pub pool_available: f64,
    pub pool_max: f64,
    /// DB queries per second and the fraction that fail.
    pub db_qps: f64,
    pub db_error_ratio: f64,
    /// Status of every health endpoint, unless overridden per path.
    pub health_status: u16,
    /// Per-path status overrides, such as {"/health/external-services": 503}.
    pub health_overrides: BTreeMap<String, u16>,
    /// Delay before answering a health check, in milliseconds.
    pub health_delay_ms: u64,
    /// Per-path bodies instead of the seed's (a JSON string is sent as raw
    /// text, for answers that are not JSON).
    pub health_bodies: BTreeMap<String, serde_json::Value>,
    /// Request series are spread over this many `route` label values, as a
    /// real service's are (benchmarks raise it to give Prometheus real work).
    pub routes: u32,
    /// Status of `/metrics`: anything but 200 answers without a body, a gap
    /// in Prometheus's scrapes.
    #[serde(default = "ok")]
    pub metrics_status: u16,
    /// Fraction of every version's requests that fail because a dependency
    /// fails, on top of the version's own `error_ratio`: a request fails if
    /// either fails, so its version's requests fail at
    /// 1 - (1 - error_ratio) * (1 - dependency_error_ratio). It lets a test
    /// tell "the deploy broke it" from "a dependency broke every version".
    pub dependency_error_ratio: f64,
    /// Whether request series (`http_requests_total` and the
    /// `http_request_duration_seconds` histogram) carry a `version` label
    /// naming the version that served them; labels are then service, route,
    /// version, and code / le. Off, they are the sum over versions without
    /// that label, as before.
    pub version_label: bool,
    /// A rolling update or canary under way: the old version serves its
    /// `share` of the requests with its own error ratio and latency, and
    /// `version` the rest with the knobs'. None: `version` serves all.
    pub old_version: Option<OldVersion>,
}

/// The version still serving part of the traffic during a rolling update or
/// canary (`Knobs::old_version`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OldVersion {
    pub version: String,
    /// Share of requests it serves (0..1); `Knobs::version` serves the rest.
    pub share: f64,
    /// Fraction of its requests answered 500 (dependency failures come on
    /// top, as for the new version).
    pub error_ratio: f64,
    /// Latency of most of its requests, in seconds; its slow requests are
    /// the knobs' `slow_ratio` at `slow_latency`, as the new version's.
    pub latency: f64,
}

fn ok() -> u16 {
    200
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            service: "demo".into(),
            version: "v1".into(),
            rps: 50.0,
            error_ratio: 0.0,
            latency: 0.04,
            slow_ratio: 0.005,
            slow_latency: 0.09,
            pool_available: 18.0,
            pool_max: 20.0,
            db_qps: 20.0,
            db_error_ratio: 0.0,
            health_status: 200,
            health_overrides: BTreeMap::new(),
            health_delay_ms: 0,
            health_bodies: BTreeMap::new(),
            routes: 1,
            metrics_status: 200,
            dependency_error_ratio: 0.0,
            version_label: false,
            old_version: None,
        }
    }
}

const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Request counters of one version, or of all versions together.
#[derive(Debug, Clone, Default)]
struct Counters {
    ok: f64,
    errors: f64,
    buckets: [f64; BUCKETS.len()],
    sum: f64,
    count: f64,
}

impl Counters {
    /// Counts `n` requests of which `fail` fail, all taking `latency`
    /// seconds but `slow_ratio` of them that take `slow_latency`.
    fn add(&mut self, n: f64, fail: f64, latency: f64, slow_ratio: f64, slow_latency: f64) {
        self.errors += n * fail;
        self.ok += n * (1.0 - fail);
        for (latency, share) in [(latency, 1.0 - slow_ratio), (slow_latency, slow_ratio)] {
            let m = n * share;
            for (i, le) in BUCKETS.iter().enumerate() {
                if latency <= *le {
                    self.buckets[i] += m;
                }
            }
            self.sum += m * latency;
            self.count += m;
        }
    }

    /// Writes these counters' series with labels `l`, each value scaled by
    /// `share` (the route's part of the traffic).
    fn write(&self, l: &str, share: f64, requests: &mut String, histogram: &mut String) {
        requests.push_str(&format!(
            "http_requests_total{{{l},code=\"200\"}} {}\n",
            self.ok * share
        ));
        requests.push_str(&format!(
            "http_requests_total{{{l},code=\"500\"}} {}\n",
            self.errors * share
        ));
        for (le, c) in BUCKETS.iter().zip(self.buckets) {
            histogram.push_str(&format!(
                "http_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {}\n",
                c * share
            ));
        }
        histogram.push_str(&format!(
            "http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}\n",
            self.count * share
        ));
        histogram.push_str(&format!(
            "http_request_duration_seconds_sum{{{l}}} {}\n",
            self.sum * share
        ));
        histogram.push_str(&format!(
            "http_request_duration_seconds_count{{{l}}} {}\n",
            self.count * share
        ));
    }
}

#[derive(Debug)]
struct Inner {
    knobs: Knobs,
    /// All versions' requests together, what the series without a version
    /// label show. Kept as it accumulates rather than summed from
    /// `by_version` at render: a sum regrouped after a deploy would round
    /// differently, and tests depend on the exact series.
    total: Counters,
    /// Each version's requests since the service started: a version that
    /// stops serving keeps its last values, as a real client library's
    /// series stay until the process restarts.
    by_version: BTreeMap<String, Counters>,
    db_ok: f64,
    db_errors: f64,
    health_checks: u64,
    /// Requests to /metrics, answered 200 or not (each is one scrape attempt).
    metrics_scrapes: u64,
    last: Instant,
    /// A tiny deploy platform for the demo: every deploy is recorded with the
    /// knobs it brought, and a rollback brings an earlier deploy's knobs back.
    deployments: Vec<DemoDeployment>,
    /// Rollbacks asked through `POST /deployments/{id}/rollback`.
    rollback_calls: u32,
}

#[derive(Debug, Clone, Serialize)]
struct DemoDeployment {
    id: String,
    status: String,
    created_at: String,
    git_sha: String,
    #[serde(skip)]
    knobs: Knobs,
    #[serde(skip)]
    started: Instant,
}

impl Inner {
    fn record_deployment(&mut self) {
        for d in self.deployments.iter_mut() {
            if d.status == "SUCCESS" {
                d.status = "REMOVED".into();
            }
        }
        let n = self.deployments.len() + 1;
        self.deployments.push(DemoDeployment {
            id: format!("dep-{n}"),
            status: "SUCCESS".into(),
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            git_sha: format!("{}-{n:04x}", self.knobs.version),
            knobs: self.knobs.clone(),
            started: Instant::now(),
        });
    }

    /// A deployment that stays DEPLOYING (until cancelled) while its first
    /// pods already take traffic under the current knobs; the live one stays.
    fn record_in_progress(&mut self) {
        let n = self.deployments.len() + 1;
        self.deployments.push(DemoDeployment {
            id: format!("dep-{n}"),
            status: "DEPLOYING".into(),
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            git_sha: format!("{}-{n:04x}", self.knobs.version),
            knobs: self.knobs.clone(),
            started: Instant::now(),
        });
    }

    /// Deployments newest first; the newest reads DEPLOYING for its first second.
    fn deployment_list(&self) -> Vec<DemoDeployment> {
        let mut list: Vec<DemoDeployment> = self.deployments.iter().rev().cloned().collect();
        if let Some(newest) = list.first_mut() {
            if newest.started.elapsed() < Duration::from_secs(1) && newest.status == "SUCCESS" {
                newest.status = "DEPLOYING".into();
            }
        }
        list
    }
}

impl Inner {
    /// Moves the synthetic counters forward to now under the current knobs.
    fn advance(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        // A copy, so the counters can grow while the knobs are read.
        let k = self.knobs.clone();
        let n = k.rps * dt;
        // Who served the `n` requests, how many each, and how they fared.
        let mut serving = vec![(k.version.clone(), n, k.error_ratio, k.latency)];
        if let Some(old) = &k.old_version {
            let share = old.share.clamp(0.0, 1.0);
            serving[0].1 = n * (1.0 - share);
            serving.push((old.version.clone(), n * share, old.error_ratio, old.latency));
        }
        let (d, slow, slow_latency) = (k.dependency_error_ratio, k.slow_ratio, k.slow_latency);
        for (version, n, error_ratio, latency) in serving {
            // 1 - (1 - e)(1 - d) rearranged so that with no dependency
            // failures it is exactly `error_ratio`, bit for bit: the series
            // stay what they were before this knob existed.
            let fail = error_ratio + d - error_ratio * d;
            self.total.add(n, fail, latency, slow, slow_latency);
            let counters = self.by_version.entry(version).or_default();
            counters.add(n, fail, latency, slow, slow_latency);
        }
        let q = k.db_qps * dt;
        self.db_errors += q * k.db_error_ratio;
        self.db_ok += q * (1.0 - k.db_error_ratio);
    }

    fn render(&mut self) -> String {
        self.advance();
        let s = &self.knobs.service;
        let mut out = String::new();
        out.push_str(&format!(
            "# TYPE app_deployment_info gauge\napp_deployment_info{{service=\"{s}\",version=\"{}\"}} 1\n",
            self.knobs.version
        ));
        // Like a real client library, labelled request series appear only
        // after the first request: a service without traffic has none.
        if self.total.count > 0.0 {
            let routes = self.knobs.routes.max(1);
            let share = 1.0 / f64::from(routes);
            let mut requests = String::from("# TYPE http_requests_total counter\n");
            let mut histogram = String::from("# TYPE http_request_duration_seconds histogram\n");
            for r in 0..routes {
                let l = format!("service=\"{s}\",route=\"/r{r}\"");
                if !self.knobs.version_label {
                    self.total.write(&l, share, &mut requests, &mut histogram);
                    continue;
                }
                for (version, counters) in &self.by_version {
                    // Likewise, a version's series appear with its first request.
                    if counters.count > 0.0 {
                        let l = format!("{l},version=\"{version}\"");
                        counters.write(&l, share, &mut requests, &mut histogram);
                    }
                }
            }
            out.push_str(&requests);
            out.push_str(&histogram);
        }
        out.push_str(&format!(
            "# TYPE db_pool_connections_available gauge\ndb_pool_connections_available{{service=\"{s}\"}} {}\n",
            self.knobs.pool_available
        ));
        out.push_str(&format!(
            "# TYPE db_pool_connections_max gauge\ndb_pool_connections_max{{service=\"{s}\"}} {}\n",
            self.knobs.pool_max
        ));
        out.push_str("# TYPE db_queries_total counter\n");
        out.push_str(&format!(
            "db_queries_total{{service=\"{s}\",result=\"success\"}} {}\n",
            self.db_ok
        ));
        out.push_str(&format!(
            "db_queries_total{{service=\"{s}\",result=\"error\"}} {}\n",
            self.db_errors
        ));
        out
    }
}

/// A running fake service; stops when dropped.
pub struct FakeService {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeService {
    /// Starts on a free loopback port.
    pub fn start() -> Self {
        Self::start_with(Knobs::default())
    }

    /// Starts on a free loopback port with `knobs` from the first instant.
    pub fn start_with(knobs: Knobs) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), knobs)
    }

    /// Starts on `addr` with `knobs`, serving from a thread of its own.
    pub fn start_on(addr: SocketAddr, knobs: Knobs) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            knobs,
            total: Counters::default(),
            by_version: BTreeMap::new(),
            db_ok: 0.0,
            db_errors: 0.0,
            health_checks: 0,
            metrics_scrapes: 0,
            last: Instant::now(),
            deployments: Vec::new(),
            rollback_calls: 0,
        }));
        inner.lock().unwrap().record_deployment();
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("fake service cannot listen on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let stop = serve_in_thread(listener, router(inner.clone()));
        FakeService {
            addr,
            inner,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the knobs; counters are brought up to date first so the
    /// change takes effect from this instant.
    pub fn set(&self, change: impl FnOnce(&mut Knobs)) {
        let mut inner = self.inner.lock().unwrap();
        inner.advance();
        change(&mut inner.knobs);
    }

    pub fn knobs(&self) -> Knobs {
        self.inner.lock().unwrap().knobs.clone()
    }

    /// Changes the knobs and records it as a new deployment (what `POST
    /// /deploy` does).
    pub fn deploy(&self, change: impl FnOnce(&mut Knobs)) {
        let mut inner = self.inner.lock().unwrap();
        inner.advance();
        change(&mut inner.knobs);
        inner.record_deployment();
    }

    /// How many times its deploy list was asked to roll back.
    pub fn rollback_calls(&self) -> u32 {
        self.inner.lock().unwrap().rollback_calls
    }

    /// Health checks answered so far.
    pub fn health_checks(&self) -> u64 {
        self.inner.lock().unwrap().health_checks
    }

    /// Requests to /metrics so far (Prometheus's scrape attempts, failed
    /// ones included).
    pub fn scrapes(&self) -> u64 {
        self.inner.lock().unwrap().metrics_scrapes
    }

    /// Waits until Prometheus has asked for /metrics `n` more times: the
    /// fake holds what it serves for that many scrapes.
    pub fn hold_for_scrapes(&self, n: u64) {
        let until = self.scrapes() + n;
        let deadline = std::time::Instant::now() + Duration::from_secs(30 + 3 * n);
        while self.scrapes() < until {
            assert!(
                std::time::Instant::now() < deadline,
                "Prometheus did not scrape the fake service {n} more times (only {} of {until}); is it scraping it?",
                self.scrapes()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `app` from a thread with its own runtime, so a test can block
/// while the fake answers; fire or drop the sender to stop it.
pub fn serve_in_thread(
    listener: std::net::TcpListener,
    app: Router,
) -> tokio::sync::oneshot::Sender<()> {
    listener.set_nonblocking(true).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    stop
}

type Shared = Arc<Mutex<Inner>>;

fn router(inner: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/control", get(get_control).post(post_control))
        .route("/deploy", post(deploy))
        .route("/deploy/in-progress", post(deploy_in_progress))
        .route("/deployments", get(list_deployments))
        .route("/deployments/{id}", get(get_deployment))
        .route("/deployments/{id}/rollback", post(rollback_deployment))
        .route("/deployments/{id}/cancel", post(cancel_deployment))
        .route("/", get(|s: State<Shared>| health(s, "/".to_string())))
        .route(
            "/health",
            get(|s: State<Shared>| health(s, "/health".to_string())),
        )
        .route(
            "/health/{*rest}",
            get(|s: State<Shared>, Path(rest): Path<String>| health(s, format!("/health/{rest}"))),
        )
        .with_state(inner)
}

async fn metrics(State(inner): State<Shared>) -> (StatusCode, String) {
    let mut guard = inner.lock().unwrap();
    guard.metrics_scrapes += 1;
    match guard.knobs.metrics_status {
        200 => (StatusCode::OK, guard.render()),
        status => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            String::new(),
        ),
    }
}

async fn get_control(State(inner): State<Shared>) -> Json<Knobs> {
    Json(inner.lock().unwrap().knobs.clone())
}

/// Merges a partial JSON object into the knobs: `{"error_ratio": 0.05}`.
async fn post_control(
    State(inner): State<Shared>,
    Json(patch): Json<serde_json::Value>,
) -> Response {
    let mut guard = inner.lock().unwrap();
    let mut current = serde_json::to_value(&guard.knobs).unwrap();
    let (Some(target), Some(changes)) = (current.as_object_mut(), patch.as_object()) else {
        return (StatusCode::BAD_REQUEST, "send a JSON object of knobs\n").into_response();
    };
    for (k, v) in changes {
        target.insert(k.clone(), v.clone());
    }
    match serde_json::from_value::<Knobs>(current) {
        Ok(knobs) => {
            guard.advance();
            guard.knobs = knobs.clone();
            Json(knobs).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn health(State(inner): State<Shared>, path: String) -> Response {
    let (status, delay, body) = {
        let mut guard = inner.lock().unwrap();
        guard.health_checks += 1;
        let status = guard
            .knobs
            .health_overrides
            .get(&path)
            .copied()
            .unwrap_or(guard.knobs.health_status);
        let body = guard.knobs.health_bodies.get(&path).cloned();
        (status, guard.knobs.health_delay_ms, body)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match body {
        Some(serde_json::Value::String(raw)) => raw,
        Some(json) => json.to_string(),
        None => seed_body(&path, status.is_success()),
    };
    (status, body).into_response()
}

/// What the seed's service answers: `/health/performance` lists components
/// with their response times, `/health/external-services` the external
/// services (the shipped verification reads both).
pub fn seed_body(path: &str, healthy: bool) -> String {
    let status = if healthy { "healthy" } else { "unhealthy" };
    match path {
        "/health/performance" => serde_json::json!({
            "status": status,
            "components": {
                "database": {"status": status, "response_time_ms": 12.5},
                "redis": {"status": status, "response_time_ms": 1.8},
            },
        }),
        "/health/external-services" => serde_json::json!({
            "status": status,
            "services": {
                "openai": {"status": status},
                "sendgrid": {"status": status},
                "firebase": {"status": status},
            },
        }),
        _ => serde_json::json!({"status": status, "path": path}),
    }
    .to_string()
}

/// `POST /deploy {"version": "v2", "error_ratio": 0.05}`: change knobs like
/// `/control`, and record it as a new deployment.
async fn deploy(state: State<Shared>, patch: Json<serde_json::Value>) -> Response {
    let inner = state.0.clone();
    let response = post_control(state, patch).await;
    if response.status().is_success() {
        inner.lock().unwrap().record_deployment();
    }
    response
}

/// `POST /deploy/in-progress` with knobs: a deployment that stays
/// DEPLOYING, its pods serving under those knobs, until it is cancelled.
async fn deploy_in_progress(state: State<Shared>, patch: Json<serde_json::Value>) -> Response {
    let inner = state.0.clone();
    let response = post_control(state, patch).await;
    if response.status().is_success() {
        inner.lock().unwrap().record_in_progress();
    }
    response
}

/// `POST /deployments/{id}/cancel`: a deployment in progress is removed and
/// its traffic goes back to the live deployment; anything else is refused.
async fn cancel_deployment(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    let mut guard = inner.lock().unwrap();
    guard.advance();
    let Some(index) = guard.deployments.iter().position(|d| d.id == id) else {
        return (StatusCode::NOT_FOUND, format!("no deployment {id}\n")).into_response();
    };
    if guard.deployments[index].status != "DEPLOYING" {
        let status = guard.deployments[index].status.clone();
        return (
            StatusCode::CONFLICT,
            format!("deployment {id} is {status}, not in progress\n"),
        )
            .into_response();
    }
    guard.deployments[index].status = "REMOVED".into();
    if let Some(live) = guard
        .deployments
        .iter()
        .rev()
        .find(|d| d.status == "SUCCESS")
    {
        guard.knobs = live.knobs.clone();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn list_deployments(State(inner): State<Shared>) -> Json<Vec<DemoDeployment>> {
    Json(inner.lock().unwrap().deployment_list())
}

async fn get_deployment(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    match inner
        .lock()
        .unwrap()
        .deployment_list()
        .into_iter()
        .find(|d| d.id == id)
    {
        Some(d) => Json(d).into_response(),
        None => Json(serde_json::Value::Null).into_response(),
    }
}

/// Redeploys an earlier deployment's knobs as a new deployment.
async fn rollback_deployment(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    let mut guard = inner.lock().unwrap();
    let Some(target) = guard.deployments.iter().find(|d| d.id == id).cloned() else {
        return (StatusCode::NOT_FOUND, format!("no deployment {id}\n")).into_response();
    };
    guard.rollback_calls += 1;
    guard.advance();
    guard.knobs = target.knobs;
    guard.record_deployment();
    // A redeploy of the target's commit.
    if let Some(created) = guard.deployments.last_mut() {
        created.git_sha = target.git_sha.clone();
    }
    let created = guard
        .deployments
        .last()
        .map(|d| d.id.clone())
        .unwrap_or_default();
    Json(serde_json::json!({ "deployment_id": created })).into_response()
}
