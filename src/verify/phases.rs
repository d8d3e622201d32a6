//! Health verification after a rollback: phases of HTTP checks against the
//! service's base URL, run in order. Checks inside a phase run concurrently,
//! so a phase takes as long as its slowest check. A phase passes when at least
//! `min_healthy` of its checks are healthy (1.0 for critical phases); a failed
//! phase is retried every `retry_interval` until the budget runs out.

use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use super::config::{Count, HealthPhaseConfig, VerifyConfig};
use super::{CheckResult, Component, HealthProbe};

/// One check's result, for tables and reports.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub endpoint: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub healthy: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
}

/// One phase's last attempt.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub passed: bool,
    /// Healthy checks (or components, when the phase counts them) of `total`.
    pub healthy: usize,
    pub total: usize,
    /// How many had to be healthy.
    pub needed: usize,
    pub min_healthy: f64,
    pub counts: &'static str,
    pub attempts: u32,
    pub checks: Vec<CheckReport>,
}

/// The whole verification.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub passed: bool,
    pub phases: Vec<PhaseReport>,
    /// Wall time of the checks themselves (without the initial wait and retry pauses).
    #[serde(skip)]
    pub checking: Duration,
    /// Sum of every check's latency: what running them one by one would cost.
    #[serde(skip)]
    pub sum_of_latencies: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// Runs every phase against `base_url` within `budget`, calling `progress`
/// after each phase attempt.
pub async fn verify(
    probe: &dyn HealthProbe,
    base_url: &str,
    config: &VerifyConfig,
    initial_wait: std::time::Duration,
    budget: Duration,
    progress: &(dyn Fn(&PhaseReport) + Send + Sync),
) -> Verification {
    let deadline = Instant::now() + budget;
    let base = base_url.trim_end_matches('/');
    let mut report = Verification {
        passed: true,
        phases: Vec::new(),
        checking: Duration::ZERO,
        sum_of_latencies: Duration::ZERO,
        stopped: None,
    };
    sleep_until_or(deadline, initial_wait).await;
    for phase in &config.phases {
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let started = Instant::now();
            let results = run_phase(probe, base, phase, config).await;
            report.checking += started.elapsed();
            report.sum_of_latencies += results.iter().map(|(_, r)| r.latency).sum::<Duration>();
            let phase_report = summarize(phase, attempts, results);
            progress(&phase_report);
            if phase_report.passed || Instant::now() + config.retry_interval >= deadline {
                break phase_report;
            }
            tokio::time::sleep(config.retry_interval).await;
        };
        let passed = result.passed;
        report.phases.push(result);
        if !passed {
            report.passed = false;
            report.stopped = Some(format!(
                "phase {} did not pass within the verification budget ({})",
                phase.name,
                crate::duration::format(budget)
            ));
            break;
        }
    }
    report
}

async fn sleep_until_or(deadline: Instant, wait: Duration) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(wait.min(remaining)).await;
}

async fn run_phase(
    probe: &dyn HealthProbe,
    base: &str,
    phase: &HealthPhaseConfig,
    config: &VerifyConfig,
) -> Vec<(String, CheckResult)> {
    let checks = phase.endpoints.iter().map(|endpoint| async move {
        let url = format!("{base}{}", endpoint.path);
        let expect = endpoint.expect(config);
        let result = super::check(probe, &url, config.check_timeout, &expect).await;
        (endpoint.path.clone(), result)
    });
    futures_util::future::join_all(checks).await
}

/// Counts what passed. Counting components, an endpoint that reported
/// components counts each, and one that did not (or whose body could not
/// be read) counts once, so an unreadable answer is never tolerated away
/// as "no components".
fn summarize(
    phase: &HealthPhaseConfig,
    attempts: u32,
    results: Vec<(String, CheckResult)>,
) -> PhaseReport {
    let (healthy, total) = match phase.count {
        Count::Endpoints => (
            results.iter().filter(|(_, r)| r.healthy).count(),
            results.len(),
        ),
        Count::Components => results.iter().fold((0, 0), |(h, t), (_, r)| {
            if r.components.is_empty() {
                (h + usize::from(r.healthy), t + 1)
            } else {
                let up = r.components.iter().filter(|c| c.healthy).count();
                (h + up, t + r.components.len())
            }
        }),
    };
    let needed = total - phase.tolerated(total);
    PhaseReport {
        name: phase.name.clone(),
        passed: healthy >= needed,
        healthy,
        total,
        needed,
        min_healthy: phase.min_healthy,
        counts: match phase.count {
            Count::Endpoints => "endpoints",
            Count::Components => "components",
        },
        attempts,
        checks: results
            .into_iter()
            .map(|(endpoint, r)| CheckReport {
                endpoint,
                status: r.status,
                latency_ms: r.latency.as_millis() as u64,
                healthy: r.healthy,
                reason: r.reason,
                components: r.components,
            })
            .collect(),
    }
}

/// The per-check table `rollbackd validate` prints.
pub(crate) fn table(v: &Verification) -> String {
    let mut out = format!(
        "{:<12} {:<32} {:>7}  {}\n",
        "PHASE", "ENDPOINT", "MS", "STATUS"
    );
    for phase in &v.phases {
        for c in &phase.checks {
            let status = match (c.healthy, c.status) {
                (true, Some(s)) => format!("ok ({s})"),
                (false, _) => format!("FAILED ({})", c.reason),
                (true, None) => "ok".to_string(),
            };
            out.push_str(&format!(
                "{:<12} {:<32} {:>7}  {}\n",
                phase.name, c.endpoint, c.latency_ms, status
            ));
            for part in &c.components {
                let latency = part
                    .latency_ms
                    .map(|ms| format!("{ms:.0}"))
                    .unwrap_or_default();
                let status = match (part.healthy, &part.status) {
                    (true, Some(s)) => format!("ok ({s})"),
                    (true, None) => "ok".to_string(),
                    (false, _) => format!("FAILED ({})", part.reason),
                };
                out.push_str(&format!(
                    "{:<12}   - {:<28} {:>7}  {}\n",
                    phase.name, part.name, latency, status
                ));
            }
        }
        out.push_str(&format!(
            "{:<12} {}/{} {} healthy (needs {}: {:.0} %), {} attempt(s): {}\n",
            phase.name,
            phase.healthy,
            phase.total,
            phase.counts,
            phase.needed,
            phase.min_healthy * 100.0,
            phase.attempts,
            if phase.passed { "passed" } else { "FAILED" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{seed_body, FakeService};

    const EXTERNAL: &str = "/health/external-services";

    fn services(down: &[&str]) -> String {
        let entries: Vec<String> = ["openai", "sendgrid", "firebase"]
            .iter()
            .map(|s| {
                let status = if down.contains(s) { "down" } else { "healthy" };
                format!(r#""{s}":{{"status":"{status}"}}"#)
            })
            .collect();
        format!(
            r#"{{"status":"degraded","services":{{{}}}}}"#,
            entries.join(",")
        )
    }

    async fn run(service: &FakeService) -> Verification {
        let config = VerifyConfig {
            retry_interval: Duration::from_secs(5),
            ..VerifyConfig::default()
        };
        verify(
            service,
            "http://127.0.0.1:1",
            &config,
            Duration::ZERO,
            Duration::from_secs(1),
            &|_| {},
        )
        .await
    }

    fn phase<'a>(v: &'a Verification, name: &str) -> &'a PhaseReport {
        v.phases.iter().find(|p| p.name == name).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_seed_service_passes_the_shipped_phases() {
        let v = run(&FakeService::default()).await;
        assert!(v.passed, "{}", table(&v));
        let totals: Vec<_> = v.phases.iter().map(|p| (p.healthy, p.total)).collect();
        assert_eq!(totals, [(2, 2), (2, 2), (2, 2), (4, 4)]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_external_service_of_three_down_is_tolerated_two_are_not() {
        let service = FakeService::default();
        service.set_answer(EXTERNAL, 200, &services(&["sendgrid"]));
        let v = run(&service).await;
        assert!(v.passed, "{}", table(&v));
        let external = phase(&v, "external");
        assert_eq!(
            (external.healthy, external.total, external.needed),
            (3, 4, 3)
        );
        assert!(table(&v).contains("- sendgrid"), "{}", table(&v));

        service.set_answer(EXTERNAL, 200, &services(&["sendgrid", "openai"]));
        let v = run(&service).await;
        assert!(!v.passed);
        let external = phase(&v, "external");
        assert_eq!((external.healthy, external.total), (2, 4));
        assert_eq!(
            external.checks[0].reason,
            "openai: status down; sendgrid: status down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_component_over_five_seconds_fails_the_performance_phase() {
        let service = FakeService::default();
        service.set_answer(
            "/health/performance",
            200,
            r#"{"components":{"database":{"status":"healthy","response_time_ms":6000},"redis":{"status":"healthy","response_time_ms":3}}}"#,
        );
        let v = run(&service).await;
        assert!(!v.passed);
        assert_eq!(v.phases.last().unwrap().name, "performance");
        let check = &phase(&v, "performance").checks[0];
        assert_eq!(
            check.reason,
            "database: 6000 ms, over 5s (body.max_latency)"
        );
        assert_eq!(check.components[1].latency_ms, Some(3.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_created_answer_or_a_body_that_is_not_json_fails_naming_why() {
        let service = FakeService::default();
        service.set_answer("/health/critical-services", 201, &seed_body("/"));
        let v = run(&service).await;
        assert!(!v.passed);
        assert_eq!(
            phase(&v, "core").checks[1].reason,
            "HTTP 201, expected 200 (expect_status)"
        );

        let service = FakeService::default();
        service.set_answer("/health/performance", 200, "<html>upstream error</html>");
        let v = run(&service).await;
        let reason = &phase(&v, "performance").checks[0].reason;
        assert!(reason.starts_with("the body is not JSON"), "{reason}");
        assert!(reason.contains("<html>upstream error</html>"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_components_answer_counts_once_and_fails() {
        let service = FakeService::default();
        service.set_answer(EXTERNAL, 200, r#"{"status":"ok"}"#);
        let v = run(&service).await;
        let external = phase(&v, "external");
        assert_eq!(
            (external.healthy, external.total, external.needed),
            (1, 2, 2)
        );
        assert!(!v.passed);
    }
}
