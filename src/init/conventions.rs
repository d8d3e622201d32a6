//! The metric conventions `rollbackd init` recognises, and the PromQL each
//! one's rules are written in. Pure: the catalog of what Prometheus holds
//! in, the series to watch out.
//!
//! Request counters by status code, in the order tried:
//!
//! | convention | requests | status label | latency histogram |
//! |---|---|---|---|
//! | OpenTelemetry (semconv ≥ 1.20) | `http_server_request_duration_seconds` | `http_response_status_code` | the same (classic `_bucket`, or native) |
//! | OpenTelemetry (older) | `http_server_duration_milliseconds` | `http_status_code` | the same, in ms |
//! | Micrometer (Spring Boot) | `http_server_requests_seconds_count` | `status` (`outcome`) | `http_server_requests_seconds_bucket` when histograms are on |
//! | ingress-nginx | `nginx_ingress_controller_requests` | `status` | `nginx_ingress_controller_request_duration_seconds_bucket` |
//! | Istio / Envoy | `istio_requests_total` | `response_code` | `istio_request_duration_milliseconds_bucket` |
//! | Prometheus client libraries | `http_requests_total` | `code` or `status` | `http_request_duration_seconds_bucket` (or native) |
//!
//! Database pools: HikariCP (`hikaricp_connections_active` / `_max`),
//! OpenTelemetry (`db_client_connection_count{state="used"}` /
//! `db_client_connection_max`, or the older `db_client_connections_*`),
//! Go's `database/sql` collector (`go_sql_stats_connections_in_use` /
//! `go_sql_stats_connections_max_open`), and rollbackd's own example
//! (`db_pool_connections_available` / `db_pool_connections_max`).

use std::collections::{BTreeMap, BTreeSet};

/// What Prometheus holds for the service.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    /// Metric names of the service's series.
    pub names: BTreeSet<String>,
    /// Label names per metric (for the metrics a convention may use).
    pub labels: BTreeMap<String, BTreeSet<String>>,
    /// Metric types from the metadata API (`counter`, `histogram`…).
    pub types: BTreeMap<String, String>,
}

impl Catalog {
    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn label(&self, metric: &str, label: &str) -> bool {
        self.labels
            .get(metric)
            .is_some_and(|labels| labels.contains(label))
    }

    /// A native histogram: the name itself is a series, typed histogram.
    fn native(&self, name: &str) -> bool {
        self.has(name) && self.types.get(name).is_some_and(|t| t == "histogram")
    }

    /// The metrics whose label names `init` asks for.
    pub(crate) fn candidates() -> Vec<&'static str> {
        let mut out = Vec::new();
        for c in REQUESTS {
            out.push(c.requests);
            out.push(c.native_name());
        }
        out
    }
}

/// One request-counter convention.
pub(crate) struct Convention {
    pub name: &'static str,
    /// The counter (or a histogram's `_count`) to rate.
    pub requests: &'static str,
    /// Status labels, the first found is used.
    pub status: &'static [&'static str],
    /// The latency histogram's buckets, when the framework exports them.
    pub buckets: Option<&'static str>,
    /// The latency's unit: 1 for seconds, 1000 for milliseconds.
    pub per_second: f64,
}

impl Convention {
    /// The histogram's own name when it is native (no `_count` series).
    fn native_name(&self) -> &'static str {
        self.requests
            .strip_suffix("_count")
            .unwrap_or(self.requests)
    }
}

pub(crate) const REQUESTS: &[Convention] = &[
    Convention {
        name: "OpenTelemetry",
        requests: "http_server_request_duration_seconds_count",
        status: &["http_response_status_code"],
        buckets: Some("http_server_request_duration_seconds_bucket"),
        per_second: 1.0,
    },
    Convention {
        name: "OpenTelemetry (semantic conventions before 1.20)",
        requests: "http_server_duration_milliseconds_count",
        status: &["http_status_code"],
        buckets: Some("http_server_duration_milliseconds_bucket"),
        per_second: 1000.0,
    },
    Convention {
        name: "Micrometer (Spring Boot)",
        requests: "http_server_requests_seconds_count",
        status: &["status"],
        buckets: Some("http_server_requests_seconds_bucket"),
        per_second: 1.0,
    },
    Convention {
        name: "ingress-nginx",
        requests: "nginx_ingress_controller_requests",
        status: &["status"],
        buckets: Some("nginx_ingress_controller_request_duration_seconds_bucket"),
        per_second: 1.0,
    },
    Convention {
        name: "Istio / Envoy",
        requests: "istio_requests_total",
        status: &["response_code"],
        buckets: Some("istio_request_duration_milliseconds_bucket"),
        per_second: 1000.0,
    },
    Convention {
        name: "Prometheus client library",
        requests: "http_requests_total",
        status: &["code", "status"],
        buckets: Some("http_request_duration_seconds_bucket"),
        per_second: 1.0,
    },
];

/// A pool: the used and the maximum connections, or the available ones.
struct PoolConvention {
    name: &'static str,
    used: &'static str,
    used_matcher: &'static str,
    max: &'static str,
    /// `used` counts the available connections, not the used ones.
    available: bool,
}

const POOLS: &[PoolConvention] = &[
    PoolConvention {
        name: "HikariCP",
        used: "hikaricp_connections_active",
        used_matcher: "",
        max: "hikaricp_connections_max",
        available: false,
    },
    PoolConvention {
        name: "OpenTelemetry",
        used: "db_client_connection_count",
        used_matcher: "state=\"used\"",
        max: "db_client_connection_max",
        available: false,
    },
    PoolConvention {
        name: "OpenTelemetry (before 1.26)",
        used: "db_client_connections_usage",
        used_matcher: "state=\"used\"",
        max: "db_client_connections_max",
        available: false,
    },
    PoolConvention {
        name: "Go database/sql",
        used: "go_sql_stats_connections_in_use",
        used_matcher: "",
        max: "go_sql_stats_connections_max_open",
        available: false,
    },
    PoolConvention {
        name: "rollbackd's example",
        used: "db_pool_connections_available",
        used_matcher: "",
        max: "db_pool_connections_max",
        available: true,
    },
];

/// A rule `init` proposes: its expression with `{window}` still to fill,
/// which series it reads and why, and the thresholds to back-test.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Proposal {
    pub name: &'static str,
    /// PromQL with `{window}` where the rate window goes.
    pub expr: String,
    /// The traffic guard's expression (`{window}` too), above 1 request/s.
    pub min_traffic: Option<String>,
    /// Why: which series, which convention.
    pub reads: String,
    pub summary: &'static str,
    /// Candidate thresholds, lowest first; the unit for people.
    pub candidates: &'static [f64],
    pub unit: Unit,
    /// Used when there is no history to back-test.
    pub default: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Ratio,
    Seconds,
}

impl Unit {
    pub(crate) fn show(self, v: f64) -> String {
        match self {
            Unit::Ratio => format!("{} %", trim(v * 100.0)),
            Unit::Seconds => format!("{} s", trim(v)),
        }
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What was recognised.
#[derive(Debug, Clone, Default)]
pub(crate) struct Found {
    pub conventions: Vec<&'static str>,
    pub proposals: Vec<Proposal>,
}

const ERROR_RATES: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.05];
const LATENCIES: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0];
const SATURATIONS: &[f64] = &[0.8, 0.9, 0.95, 0.99];

/// The rules for what `catalog` holds; `selector` is the matchers inside
/// braces (`job="shop"`).
pub(crate) fn recognise(catalog: &Catalog, selector: &str) -> Found {
    let mut found = Found::default();
    let with = |metric: &str, extra: &str| -> String {
        match (selector.is_empty(), extra.is_empty()) {
            (true, true) => metric.to_string(),
            (true, false) => format!("{metric}{{{extra}}}"),
            (false, true) => format!("{metric}{{{selector}}}"),
            (false, false) => format!("{metric}{{{selector}, {extra}}}"),
        }
    };
    for c in REQUESTS {
        let native = catalog.native(c.native_name()) && !catalog.has(c.requests);
        let counter = if native { c.native_name() } else { c.requests };
        if !catalog.has(counter) {
            continue;
        }
        let Some(status) = c.status.iter().find(|l| catalog.label(counter, l)) else {
            continue;
        };
        // Istio reports each request twice (source and destination
        // proxies): count the destination's.
        let reporter = if catalog.label(counter, "reporter") {
            "reporter=\"destination\""
        } else {
            ""
        };
        let errors = [reporter, &format!("{status}=~\"5..\"")]
            .iter()
            .filter(|m| !m.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let rate = |extra: &str| match native {
            true => format!(
                "histogram_count(sum(rate({}[{{window}}])))",
                with(counter, extra)
            ),
            false => format!("sum(rate({}[{{window}}]))", with(counter, extra)),
        };
        let all = rate(reporter);
        found.conventions.push(c.name);
        found.proposals.push(Proposal {
            name: "HighErrorRate",
            expr: format!("({} or vector(0))\n  /\n{all}", rate(&errors)),
            min_traffic: Some(all.clone()),
            reads: format!(
                "{counter} ({}): requests with {status} 5xx out of all requests",
                c.name
            ),
            summary: "Error rate above its threshold since the last deploy",
            candidates: ERROR_RATES,
            unit: Unit::Ratio,
            default: 0.01,
        });
        let scale = if c.per_second == 1.0 {
            String::new()
        } else {
            format!(" / {}", c.per_second)
        };
        let latency = if native {
            Some(format!(
                "histogram_quantile(0.99, sum(rate({}[{{window}}]))){scale}",
                with(counter, reporter)
            ))
        } else {
            c.buckets.filter(|b| catalog.has(b)).map(|b| {
                format!(
                    "histogram_quantile(0.99, sum by (le) (rate({}[{{window}}]))){scale}",
                    with(b, reporter)
                )
            })
        };
        match latency {
            Some(expr) => found.proposals.push(Proposal {
                name: "HighLatencyP99",
                expr,
                min_traffic: Some(all),
                reads: format!(
                    "{} ({}): the 99th percentile of request durations{}",
                    if native { counter } else { c.buckets.unwrap_or_default() },
                    c.name,
                    if c.per_second == 1.0 { "" } else { ", in ms, divided into seconds" }
                ),
                summary: "p99 latency above its threshold since the last deploy",
                candidates: LATENCIES,
                unit: Unit::Seconds,
                default: 1.0,
            }),
            None => found.conventions.push(match c.name {
                "Micrometer (Spring Boot)" => "no latency histogram: set management.metrics.distribution.percentiles-histogram.http.server.requests=true",
                _ => "no latency histogram",
            }),
        }
        break;
    }
    for p in POOLS {
        if !(catalog.has(p.used) && catalog.has(p.max)) {
            continue;
        }
        let used = format!("sum({})", with(p.used, p.used_matcher));
        let max = format!("sum({})", with(p.max, ""));
        let expr = match p.available {
            true => format!("1 - {used}\n  /\n{max}"),
            false => format!("{used}\n  /\n{max}"),
        };
        found.conventions.push(p.name);
        found.proposals.push(Proposal {
            name: "DbPoolSaturated",
            expr,
            min_traffic: None,
            reads: format!(
                "{} / {} ({}): the share of the pool in use",
                p.used, p.max, p.name
            ),
            summary: "The database connection pool is nearly exhausted",
            candidates: SATURATIONS,
            unit: Unit::Ratio,
            default: 0.9,
        });
        break;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metric names with their label names.
    type Series<'a> = &'a [(&'a str, &'a [&'a str])];

    fn catalog(series: Series<'_>, types: &[(&str, &str)]) -> Catalog {
        Catalog {
            names: series.iter().map(|(n, _)| n.to_string()).collect(),
            labels: series
                .iter()
                .map(|(n, l)| (n.to_string(), l.iter().map(|s| s.to_string()).collect()))
                .collect(),
            types: types
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
        }
    }

    #[test]
    fn each_convention_gets_its_own_names_and_labels() {
        let cases: [(Series<'_>, &str, &str); 5] = [
            (
                &[
                    (
                        "http_server_request_duration_seconds_count",
                        &["http_response_status_code"],
                    ),
                    ("http_server_request_duration_seconds_bucket", &["le"]),
                ],
                "http_response_status_code=~\"5..\"",
                "rate(http_server_request_duration_seconds_bucket{job=\"shop\"}",
            ),
            (
                &[
                    (
                        "http_server_requests_seconds_count",
                        &["status", "outcome", "uri"],
                    ),
                    ("http_server_requests_seconds_bucket", &["le"]),
                ],
                "status=~\"5..\"",
                "http_server_requests_seconds_bucket",
            ),
            (
                &[
                    ("nginx_ingress_controller_requests", &["status", "ingress"]),
                    (
                        "nginx_ingress_controller_request_duration_seconds_bucket",
                        &["le"],
                    ),
                ],
                "status=~\"5..\"",
                "nginx_ingress_controller_request_duration_seconds_bucket",
            ),
            (
                &[
                    ("istio_requests_total", &["response_code", "reporter"]),
                    (
                        "istio_request_duration_milliseconds_bucket",
                        &["le", "reporter"],
                    ),
                ],
                "reporter=\"destination\", response_code=~\"5..\"",
                "[{window}]))) / 1000",
            ),
            (
                &[
                    ("http_requests_total", &["code", "method"]),
                    ("http_request_duration_seconds_bucket", &["le"]),
                ],
                "code=~\"5..\"",
                "http_request_duration_seconds_bucket{job=\"shop\"}",
            ),
        ];
        for (series, errors, latency) in cases {
            let found = recognise(&catalog(series, &[]), "job=\"shop\"");
            let names: Vec<_> = found.proposals.iter().map(|p| p.name).collect();
            assert_eq!(names, ["HighErrorRate", "HighLatencyP99"], "{series:?}");
            assert!(
                found.proposals[0].expr.contains(errors),
                "{}",
                found.proposals[0].expr
            );
            assert!(
                found.proposals[1].expr.contains(latency),
                "{}",
                found.proposals[1].expr
            );
        }
    }

    #[test]
    fn a_native_histogram_is_read_as_one() {
        let found = recognise(
            &catalog(
                &[(
                    "http_server_request_duration_seconds",
                    &["http_response_status_code"],
                )],
                &[("http_server_request_duration_seconds", "histogram")],
            ),
            "job=\"shop\"",
        );
        assert_eq!(
            found.proposals[0].min_traffic.as_deref(),
            Some("histogram_count(sum(rate(http_server_request_duration_seconds{job=\"shop\"}[{window}])))")
        );
        assert_eq!(
            found.proposals[1].expr,
            "histogram_quantile(0.99, sum(rate(http_server_request_duration_seconds{job=\"shop\"}[{window}])))"
        );
    }

    #[test]
    fn a_pool_is_found_and_unknown_metrics_give_nothing() {
        let found = recognise(
            &catalog(
                &[
                    ("hikaricp_connections_active", &["pool"]),
                    ("hikaricp_connections_max", &["pool"]),
                ],
                &[],
            ),
            "job=\"shop\"",
        );
        assert_eq!(found.proposals.len(), 1);
        assert_eq!(
            found.proposals[0].expr,
            "sum(hikaricp_connections_active{job=\"shop\"})\n  /\nsum(hikaricp_connections_max{job=\"shop\"})"
        );
        let none = recognise(
            &catalog(&[("queue_depth", &["queue"])], &[]),
            "job=\"shop\"",
        );
        assert!(none.proposals.is_empty());
        // A counter without a status label is not a request counter.
        let unlabelled = recognise(&catalog(&[("http_requests_total", &["method"])], &[]), "");
        assert!(unlabelled.proposals.is_empty());
    }
}
