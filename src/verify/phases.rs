//! Health verification after a rollback: phases of HTTP checks against the
//! service's base URL, run in order. Checks inside a phase run concurrently,
//! so a phase takes as long as its slowest check. A phase passes when at least
//! `min_healthy` of its checks are healthy (1.0 for critical phases); a failed
//! phase is retried every `retry_interval` until the budget runs out.

use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use super::config::{HealthPhaseConfig, VerifyConfig};
use super::{CheckResult, HealthProbe};

/// One check's result, for tables and reports.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub endpoint: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub healthy: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One phase's last attempt.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub passed: bool,
    pub healthy: usize,
    pub total: usize,
    pub min_healthy: f64,
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
            let results = run_phase(probe, base, phase, config.check_timeout).await;
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
    timeout: Duration,
) -> Vec<(String, CheckResult)> {
    let checks = phase.endpoints.iter().map(|endpoint| async move {
        let url = format!("{base}{endpoint}");
        (endpoint.clone(), probe.get(&url, timeout).await)
    });
    futures_util::future::join_all(checks).await
}

fn summarize(
    phase: &HealthPhaseConfig,
    attempts: u32,
    results: Vec<(String, CheckResult)>,
) -> PhaseReport {
    let total = results.len();
    let healthy = results.iter().filter(|(_, r)| r.healthy).count();
    let passed = total == 0 || (healthy as f64 / total as f64) >= phase.min_healthy - 1e-9;
    PhaseReport {
        name: phase.name.clone(),
        passed,
        healthy,
        total,
        min_healthy: phase.min_healthy,
        attempts,
        checks: results
            .into_iter()
            .map(|(endpoint, r)| CheckReport {
                endpoint,
                status: r.status,
                latency_ms: r.latency.as_millis() as u64,
                healthy: r.healthy,
                reason: r.reason,
            })
            .collect(),
    }
}

/// The per-check table `rollbackd validate` prints.
pub fn table(v: &Verification) -> String {
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
        }
        out.push_str(&format!(
            "{:<12} {}/{} healthy (needs {:.0} %), {} attempt(s): {}\n",
            phase.name,
            phase.healthy,
            phase.total,
            phase.min_healthy * 100.0,
            phase.attempts,
            if phase.passed { "passed" } else { "FAILED" }
        ));
    }
    out
}
