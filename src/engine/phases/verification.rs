//! Phase 4: the health phases against the service (quick, core,
//! performance, external), retried within the budget. It only reads.

use tokio::time::Instant;

use super::super::journal::Step;
use super::super::outcome::{FailureKind, Phase, PhaseOutcome};
use super::super::run::{Progress, Run};
use crate::telemetry::events;
use crate::verify::Verification;

/// Verifies the service at `base_url`; `live_since` is when the rollback
/// deployment first answered `/health` (the wait for it to settle counts
/// from there). The report is kept whatever the outcome.
pub(crate) async fn run(
    run: &mut Run<'_>,
    base_url: &str,
    live_since: Option<Instant>,
) -> (PhaseOutcome, Verification) {
    let engine = run.engine;
    run.mark_done(Step::VerificationStarted, base_url);
    let progress = run.progress;
    // The start-up log window already spent part of the initial wait.
    let settled = live_since.map(|t| t.elapsed()).unwrap_or_default();
    let report = run
        .wait(crate::verify::verify(
            engine.health.as_ref(),
            base_url,
            &engine.verify,
            engine.verify.initial_wait.saturating_sub(settled),
            engine.config.budget(Phase::Verification),
            &|p| {
                events::health_phase_checked(&p.name, p.checks.iter().map(|c| c.latency_ms));
                progress(Progress::Note(format!(
                    "health {}: {}/{} {} healthy (attempt {}){}",
                    p.name,
                    p.healthy,
                    p.total,
                    p.counts,
                    p.attempts,
                    if p.passed { "" } else { ", not enough" }
                )));
            },
        ))
        .await;
    let outcome = if report.passed {
        PhaseOutcome::Succeeded(format!("{} health phases passed", report.phases.len()))
    } else {
        PhaseOutcome::failed(
            FailureKind::VerificationFailed,
            report
                .stopped
                .clone()
                .unwrap_or_else(|| "health verification failed".into()),
        )
    };
    (outcome, report)
}
