//! Small exporters that expose a service's requests the way each framework
//! names them, for `rollbackd init`'s tests: the real metric and label
//! names of OpenTelemetry's HTTP server semantic conventions (1.23+, as the
//! Prometheus exporter writes them), Micrometer with Spring Boot's
//! `http.server.requests` (percentiles-histogram on), ingress-nginx's
//! controller, Istio's standard metrics, and the Prometheus client
//! libraries' usual `http_requests_total{code}`. Requests flow at a steady
//! rate; a test turns the share of errors and the latency.
//!
//! The same shapes are written as OpenMetrics with timestamps, to backfill
//! a history into Prometheus with `promtool tsdb create-blocks-from
//! openmetrics`.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::Router;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    OpenTelemetry,
    Micrometer,
    IngressNginx,
    Istio,
    Client,
}

impl Convention {
    pub const ALL: [Convention; 5] = [
        Convention::OpenTelemetry,
        Convention::Micrometer,
        Convention::IngressNginx,
        Convention::Istio,
        Convention::Client,
    ];

    /// The job Prometheus scrapes it as.
    pub fn job(self) -> &'static str {
        match self {
            Convention::OpenTelemetry => "otel-shop",
            Convention::Micrometer => "spring-shop",
            Convention::IngressNginx => "ingress-shop",
            Convention::Istio => "istio-shop",
            Convention::Client => "client-shop",
        }
    }

    /// The request series `init` must read for it.
    pub fn requests(self) -> &'static str {
        match self {
            Convention::OpenTelemetry => "http_server_request_duration_seconds_count",
            Convention::Micrometer => "http_server_requests_seconds_count",
            Convention::IngressNginx => "nginx_ingress_controller_requests",
            Convention::Istio => "istio_requests_total",
            Convention::Client => "http_requests_total",
        }
    }

    /// Latency buckets in the convention's unit.
    fn buckets(self) -> &'static [f64] {
        match self {
            Convention::Istio => &[
                5.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
            ],
            _ => &[0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        }
    }

    fn unit(self) -> f64 {
        if self == Convention::Istio {
            1000.0
        } else {
            1.0
        }
    }

    /// `(name, labels)` of the request counter for a status code; the
    /// histogram's name and labels (without `le`), or `None` when the
    /// histogram is the counter's own family.
    fn series(self, code: u16) -> (String, String, String, String) {
        let class = if code >= 500 {
            "SERVER_ERROR"
        } else {
            "SUCCESS"
        };
        match self {
            Convention::OpenTelemetry => {
                let l = format!("http_request_method=\"GET\",http_route=\"/items\",http_response_status_code=\"{code}\",url_scheme=\"http\"");
                (
                    "http_server_request_duration_seconds_count".into(),
                    l.clone(),
                    "http_server_request_duration_seconds".into(),
                    l,
                )
            }
            Convention::Micrometer => {
                let l = format!("exception=\"none\",method=\"GET\",outcome=\"{class}\",status=\"{code}\",uri=\"/items\"");
                (
                    "http_server_requests_seconds_count".into(),
                    l.clone(),
                    "http_server_requests_seconds".into(),
                    l,
                )
            }
            Convention::IngressNginx => {
                let l = format!("controller_class=\"k8s.io/ingress-nginx\",ingress=\"shop\",method=\"GET\",namespace=\"shop\",path=\"/\",service=\"shop\",status=\"{code}\"");
                (
                    "nginx_ingress_controller_requests".into(),
                    l.clone(),
                    "nginx_ingress_controller_request_duration_seconds".into(),
                    l,
                )
            }
            Convention::Istio => {
                let l = format!("destination_service=\"shop.shop.svc.cluster.local\",destination_workload=\"shop\",reporter=\"destination\",request_protocol=\"http\",response_code=\"{code}\"");
                (
                    "istio_requests_total".into(),
                    l.clone(),
                    "istio_request_duration_milliseconds".into(),
                    l,
                )
            }
            Convention::Client => (
                "http_requests_total".into(),
                format!("code=\"{code}\",method=\"get\""),
                "http_request_duration_seconds".into(),
                "method=\"get\"".into(),
            ),
        }
    }
}

/// Cumulative counts: requests by status and the latency histogram.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    ok: f64,
    errors: f64,
    /// Per bucket, per status (200, 500), cumulative.
    buckets: Vec<[f64; 2]>,
    inf: [f64; 2],
    sum: [f64; 2],
}

impl Counts {
    /// `seconds` of traffic at `per_second` requests, a share `error_ratio`
    /// of them failing, each taking `latency` seconds.
    pub fn add(
        &mut self,
        c: Convention,
        seconds: f64,
        per_second: f64,
        error_ratio: f64,
        latency: f64,
    ) {
        let n = seconds * per_second;
        let (ok, err) = (n * (1.0 - error_ratio), n * error_ratio);
        self.ok += ok;
        self.errors += err;
        let buckets = c.buckets();
        self.buckets.resize(buckets.len(), [0.0; 2]);
        let value = latency * c.unit();
        for (i, le) in buckets.iter().enumerate() {
            if value <= *le {
                self.buckets[i][0] += ok;
                self.buckets[i][1] += err;
            }
        }
        self.inf[0] += ok;
        self.inf[1] += err;
        self.sum[0] += ok * value;
        self.sum[1] += err * value;
    }

    /// The samples as `(name, labels, value)`.
    fn samples(&self, c: Convention) -> Vec<(String, String, f64)> {
        let mut out = Vec::new();
        let mut buckets = self.buckets.clone();
        buckets.resize(c.buckets().len(), [0.0; 2]);
        for (k, code) in [200u16, 500].into_iter().enumerate() {
            let (counter, labels, histogram, hlabels) = c.series(code);
            let count = if k == 0 { self.ok } else { self.errors };
            out.push((counter.clone(), labels.clone(), count));
            // The client library's histogram has no status label: one set.
            if c == Convention::Client && k == 1 {
                continue;
            }
            let both = |v: [f64; 2]| {
                if c == Convention::Client {
                    v[0] + v[1]
                } else {
                    v[k]
                }
            };
            for (i, le) in c.buckets().iter().enumerate() {
                out.push((
                    format!("{histogram}_bucket"),
                    format!("{hlabels},le=\"{le}\""),
                    both(buckets[i]),
                ));
            }
            out.push((
                format!("{histogram}_bucket"),
                format!("{hlabels},le=\"+Inf\""),
                both(self.inf),
            ));
            out.push((format!("{histogram}_sum"), hlabels.clone(), both(self.sum)));
            if !counter.ends_with("_count") {
                out.push((format!("{histogram}_count"), hlabels, both(self.inf)));
            }
        }
        out
    }
}

/// The exposition text of `counts`.
pub fn exposition(c: Convention, counts: &Counts) -> String {
    let mut out = String::new();
    for (name, labels, value) in counts.samples(c) {
        writeln!(out, "{name}{{{labels}}} {value}").unwrap();
    }
    out
}

/// A history as OpenMetrics: every `step` seconds over `[from, to]`, with
/// `shape(t)` giving `(error_ratio, latency)` at `t`, 20 requests a second.
/// Each series is written whole, one after another, as promtool wants.
pub fn openmetrics(
    c: Convention,
    from: u64,
    to: u64,
    step: u64,
    shape: impl Fn(u64) -> (f64, f64),
) -> String {
    let mut rows: Vec<Vec<(String, String, f64)>> = Vec::new();
    let mut counts = Counts::default();
    let mut t = from;
    let mut times = Vec::new();
    while t <= to {
        let (ratio, latency) = shape(t);
        counts.add(c, step as f64, 20.0, ratio, latency);
        rows.push(counts.samples(c));
        times.push(t);
        t += step;
    }
    let mut out = String::new();
    let series = rows.first().map_or(0, Vec::len);
    let mut typed = std::collections::BTreeSet::new();
    for s in 0..series {
        let (name, labels, _) = &rows[0][s];
        if typed.insert(name.clone()) {
            writeln!(out, "# TYPE {name} unknown").unwrap();
        }
        for (row, t) in rows.iter().zip(&times) {
            writeln!(
                out,
                "{name}{{job=\"{}\",{labels}}} {} {t}",
                c.job(),
                row[s].2
            )
            .unwrap();
        }
    }
    out
}

/// Knobs a test turns on a live exporter.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    pub error_ratio: f64,
    pub latency: f64,
}

struct Live {
    convention: Convention,
    counts: Counts,
    knobs: Knobs,
    last: Instant,
}

pub struct Exporter {
    pub addr: SocketAddr,
    live: Arc<Mutex<Live>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Exporter {
    /// Serves `/metrics` for `c`: 20 requests a second, 0.05 % failing,
    /// 40 ms each.
    pub fn start(c: Convention) -> Exporter {
        let live = Arc::new(Mutex::new(Live {
            convention: c,
            counts: Counts::default(),
            knobs: Knobs {
                error_ratio: 0.0005,
                latency: 0.04,
            },
            last: Instant::now(),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = super::fake_service::serve_in_thread(
            listener,
            Router::new()
                .route("/metrics", get(metrics))
                .with_state(live.clone()),
        );
        Exporter {
            addr,
            live,
            _stop: stop,
        }
    }

    pub fn set(&self, knobs: Knobs) {
        let mut g = self.live.lock().unwrap();
        advance(&mut g);
        g.knobs = knobs;
    }
}

fn advance(g: &mut Live) {
    let now = Instant::now();
    let seconds = now.duration_since(g.last).as_secs_f64();
    g.last = now;
    let (c, k) = (g.convention, g.knobs);
    g.counts.add(c, seconds, 20.0, k.error_ratio, k.latency);
}

async fn metrics(State(live): State<Arc<Mutex<Live>>>) -> String {
    let mut g = live.lock().unwrap();
    advance(&mut g);
    exposition(g.convention, &g.counts)
}

/// An exporter of a service with no request metrics rollbackd knows.
pub fn unknown_exposition() -> String {
    "queue_depth{queue=\"orders\"} 3\njobs_processed_total{queue=\"orders\"} 120\n".into()
}
