//! The orchestrator: walks the table of phases, gives each its budget,
//! records each step, and turns the steps into the run's report, history
//! entry and notifications.
//!
//! It decides what follows from each outcome's kind (a failed pre-validation
//! skips everything that changes the world; a failed database phase skips
//! the application; only a succeeded application is verified), never from
//! the words. It must never act twice for one request, never roll back
//! without the lock, and never lose the record of what it did: once the lock
//! is taken, post-rollback always runs.

use tokio::time::Instant;

use super::journal::Step;
use super::outcome::{round3, FailureKind, Phase, PhaseOutcome, PhaseStep, SkipReason};
use super::phases;
use super::phases::application::Called;
use super::{Engine, RollbackRequest};
use crate::notify::NotifyEvent;
use crate::telemetry::events;

mod state;

pub(crate) use state::Run;
pub use state::{Progress, RunReport};

/// Whether `phase` runs, given the steps before it; `Some` is the skip to
/// record instead.
fn gate(phase: Phase, run: &Run<'_>) -> Option<PhaseOutcome> {
    let pre_ok = run
        .outcome(Phase::PreValidation)
        .is_some_and(PhaseOutcome::is_success);
    let nothing_changed = || {
        PhaseOutcome::skipped(
            SkipReason::PreValidationFailed,
            "pre-validation failed; nothing was changed",
        )
    };
    match phase {
        Phase::Database if !pre_ok => Some(nothing_changed()),
        Phase::Application if !pre_ok => Some(nothing_changed()),
        Phase::Application
            if run
                .outcome(Phase::Database)
                .is_some_and(PhaseOutcome::is_failure) =>
        {
            Some(PhaseOutcome::skipped(
                SkipReason::DatabaseFailed,
                "the database phase failed; the application was not rolled back",
            ))
        }
        Phase::Verification if !pre_ok => Some(nothing_changed()),
        Phase::Verification
            if !run
                .outcome(Phase::Application)
                .is_some_and(PhaseOutcome::is_success) =>
        {
            Some(PhaseOutcome::skipped(
                SkipReason::ApplicationFailed,
                "the application rollback did not succeed",
            ))
        }
        Phase::PostRollback if run.lock.is_none() => Some(PhaseOutcome::skipped(
            SkipReason::NothingRan,
            "nothing to record: no rollback ran",
        )),
        _ => None,
    }
}

impl Engine {
    /// Runs a rollback through all five phases.
    pub async fn run(
        &self,
        req: RollbackRequest,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> RunReport {
        self.run_with_id(super::new_id("rb"), req, progress).await
    }

    /// Runs a rollback under an id the caller chose (so it can report the id
    /// before the run ends).
    pub async fn run_with_id(
        &self,
        id: String,
        req: RollbackRequest,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> RunReport {
        use tracing::Instrument;
        let rules = req
            .trigger
            .rules()
            .iter()
            .map(|r| r.rule.as_str())
            .collect::<Vec<_>>()
            .join(",");
        // Every log line of the run carries the rollback id and its rules.
        let span = tracing::info_span!("rollback", rollback = %id, rules = %rules);
        let run_id = id.clone();
        crate::child::for_run(run_id, self.walk(id, req, progress).instrument(span)).await
    }

    async fn walk(
        &self,
        id: String,
        req: RollbackRequest,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> RunReport {
        // A drill running now gives way.
        self.drills_cancel.notify_waiters();
        let run = Run::new(self, id, req, progress);
        progress(Progress::Started { id: run.id.clone() });
        if !self.quiet {
            events::rollback_started(
                &run.id,
                run.req.trigger.label(),
                run.req.policy_label(),
                &run.req.reason,
            );
        }
        self.walk_from(run, Phase::PreValidation, None).await
    }

    /// Walks the phases from `first` on (a restarted rollbackd resumes a
    /// run part of the way through; `resumed` is a platform call it found
    /// already made, which the application phase follows).
    pub(crate) async fn walk_from(
        &self,
        mut run: Run<'_>,
        first: Phase,
        mut resumed: Option<Called>,
    ) -> RunReport {
        let progress = run.progress;
        for phase in Phase::ALL.into_iter().skip_while(|p| *p != first) {
            // SIGTERM: stop between phases, never inside one. Post-rollback
            // still runs when nothing reached production; otherwise the
            // journal stays for the next start to finish the run.
            // A phase the gate skips anyway (after a failure) costs nothing:
            // the run goes on to its record.
            if self.is_stopping()
                && run.lock.is_some()
                && phase != Phase::PostRollback
                && gate(phase, &run).is_none()
            {
                run.mark_done(Step::Stopped, format!("before {}", phase.as_str()));
                if run.reached_production() {
                    run.stopped = true;
                    tracing::warn!(rollback = %run.id, phase = phase.as_str(), "rollbackd is stopping: the rollback stops here; the next start finishes it from its journal");
                    return self.finish(run);
                }
                return self.settle_interrupted(run).await;
            }
            if phase == Phase::PostRollback && run.revert.is_none() {
                run.revert = self.propose_revert(&run).await;
            }
            let started = Instant::now();
            let outcome = match gate(phase, &run) {
                Some(skipped) => skipped,
                None => {
                    progress(Progress::PhaseStarted(phase));
                    self.under_budget(phase, &mut run, resumed.take()).await
                }
            };
            let step = PhaseStep {
                phase,
                outcome,
                elapsed: started.elapsed(),
            };
            if !self.quiet {
                events::phase_finished(
                    phase.as_str(),
                    step.outcome.result_label(),
                    step.outcome.reason(),
                    step.outcome.detail(),
                    step.elapsed,
                );
            }
            progress(Progress::PhaseFinished {
                phase,
                outcome: step.outcome.clone(),
                elapsed: step.elapsed,
            });
            let pre_ok = phase == Phase::PreValidation && step.outcome.is_success();
            if phase == Phase::Verification && step.outcome.is_success() {
                run.healthy_at = Some(self.clock.now());
            }
            run.steps.push(step);
            if run.lock.is_some() && phase != Phase::PostRollback {
                if let Err(e) = run.save() {
                    tracing::error!(error = %e, "cannot journal the finished phase");
                }
            }
            if pre_ok {
                let summary = match &run.plan {
                    Some(p) => format!(
                        "rolling back {} -> {}: {}",
                        p.current.id, p.target.id, run.req.reason
                    ),
                    None => run.req.reason.clone(),
                };
                let mut n = run.notification(NotifyEvent::RollbackStarted, summary);
                let (seconds, from) = self.estimated_duration();
                n.estimated_seconds = Some(seconds);
                n.estimated_from = Some(from);
                self.notify(n);
            }
        }
        self.finish(run)
    }

    /// Runs one phase under its budget, with what the phases before it
    /// produced, and keeps what it produces. A phase cut off by its budget
    /// is a failure that says so; what it journaled before is kept.
    async fn under_budget(
        &self,
        phase: Phase,
        run: &mut Run<'_>,
        resumed: Option<Called>,
    ) -> PhaseOutcome {
        let budget = self.config.budget(phase);
        let waited_before = run.waited;
        let work = async {
            match (phase, run.plan.clone()) {
                (Phase::PreValidation, _) => phases::pre_validation::run(run).await,
                (Phase::PostRollback, _) => phases::post_rollback::run(run).await,
                // The gate runs the others only after a pre-validation that planned.
                (_, None) => PhaseOutcome::failed(FailureKind::NoPlan, "no plan"),
                (Phase::Database, Some(plan)) => phases::database::run(run, plan.db_step).await,
                (Phase::Application, Some(plan)) => {
                    match phases::application::run(run, &plan, resumed).await {
                        Ok(live) => {
                            run.created(&live.deployment.id);
                            run.live_at = Some(live.at);
                            PhaseOutcome::Succeeded(live.detail)
                        }
                        Err(failed) => failed,
                    }
                }
                (Phase::Verification, Some(plan)) => {
                    let live_since = run.live_at;
                    let (outcome, report) =
                        phases::verification::run(run, &plan.base_url, live_since).await;
                    run.verification = Some(report);
                    outcome
                }
            }
        };
        match tokio::time::timeout(budget, work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                run.waited = waited_before + budget;
                PhaseOutcome::failed(
                    FailureKind::BudgetExceeded,
                    format!(
                        "did not finish within its budget of {}",
                        crate::duration::format(budget)
                    ),
                )
            }
        }
    }

    /// The report, the final notification and the run's metrics.
    fn finish(&self, run: Run<'_>) -> RunReport {
        // A list asked for while the run went on may show the platform
        // half-way: the next guards ask again.
        if run.reached_production() {
            self.listing.forget();
        }
        let duration = run.t0.elapsed();
        let success = run.success();
        let event = run.event();
        if run.stopped {
            // Not over: the next start finishes it, and reports it then.
            return RunReport {
                id: run.id,
                success: false,
                plan: run.plan,
                phases: run.steps,
                error: Some(
                    "rollbackd is stopping: the rollback stopped between phases; the next start finishes it from its journal".into(),
                ),
                duration,
                waiting: run.waited,
                verification: run.verification,
                event,
            };
        }
        let error = run.error();
        let pre_ok = run
            .outcome(Phase::PreValidation)
            .is_some_and(PhaseOutcome::is_success);
        let recorded = run
            .outcome(Phase::PostRollback)
            .is_some_and(|o| !matches!(o, PhaseOutcome::Skipped(..)));
        if pre_ok || recorded {
            let why = error.as_deref().unwrap_or("unknown error");
            let n = if success {
                let mut n = run.notification(
                    NotifyEvent::RollbackSucceeded,
                    format!(
                        "rolled back and verified healthy in {:.1} s: {}",
                        duration.as_secs_f64(),
                        run.req.reason
                    ),
                );
                let mut outcome = "succeeded; the service is verified healthy".to_string();
                if let Some(revert) = &run.revert {
                    outcome.push_str(&format!("; {revert}"));
                }
                n.outcome = Some(outcome);
                n
            } else {
                let mut outcome = format!("failed: {why}; the deploy breaker stays OPEN");
                // The new code may now run on the old schema: say so loudly.
                if let Some(PhaseOutcome::Succeeded(detail)) = run.outcome(Phase::Database) {
                    outcome.push_str(&format!("; NOTE the database phase already ran ({detail})"));
                    if let Some(cmd) = run.backup.as_ref().map(|b| &b.restore_command) {
                        outcome.push_str(&format!("; the emergency backup restores it: {cmd}"));
                    }
                }
                let mut n = run.notification(
                    NotifyEvent::RollbackFailed,
                    format!("rollback failed: {why}"),
                );
                n.outcome = Some(outcome);
                n
            };
            let mut n = n;
            n.duration_seconds = Some(round3(duration.as_secs_f64()));
            // The rollback happened, but its record did not: say so loudly.
            if let Some(PhaseOutcome::Failed(_, why)) = run.outcome(Phase::PostRollback) {
                tracing::error!(error = %why, "the rollback's history record or breaker could not be written");
                let outcome = n.outcome.take().unwrap_or_default();
                n.outcome = Some(format!(
                    "{outcome}; WARNING the record could not be written: {why}"
                ));
            }
            self.notify(n);
        }
        if !self.quiet {
            if let Some(detection) = &event.detection {
                events::incident_observed(detection);
            }
            events::rollback_finished(
                &run.id,
                run.req.trigger.label(),
                run.req.policy_label(),
                success,
                duration,
                error.as_deref(),
            );
        }
        RunReport {
            id: run.id,
            success,
            plan: run.plan,
            phases: run.steps,
            error,
            duration,
            waiting: run.waited,
            verification: run.verification,
            event,
        }
    }
}
