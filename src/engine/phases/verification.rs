//! Phase 4: the health phases against the service (quick, core,
//! performance, external), retried within the budget. It only reads.

use super::super::journal::Step;
use super::super::outcome::{FailureKind, Phase, PhaseOutcome};
use super::super::run::{Progress, Run};

pub(crate) async fn run(run: &mut Run<'_>) -> PhaseOutcome {
    let engine = run.engine;
    let Some(base_url) = run.plan.as_ref().map(|p| p.base_url.clone()) else {
        return PhaseOutcome::failed(FailureKind::NoPlan, "no plan");
    };
    run.mark_done(Step::VerificationStarted, base_url.clone());
    let progress = run.progress;
    // The wait for the deployment to settle counts from when it first
    // answered /health (the start-up log window already spent part of it).
    let settled = run.live_at.map(|t| t.elapsed()).unwrap_or_default();
    let report = run
        .wait(crate::verify::verify(
            engine.health.as_ref(),
            &base_url,
            &engine.verify,
            engine.verify.initial_wait.saturating_sub(settled),
            engine.config.budget(Phase::Verification),
            &|p| {
                for c in &p.checks {
                    metrics::histogram!("rollbackd_health_check_duration_seconds", "phase" => p.name.clone())
                        .record(c.latency_ms as f64 / 1000.0);
                }
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
    run.verification = Some(report);
    outcome
}
