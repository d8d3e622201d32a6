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

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::breaker::BreakerRecord;
use super::journal::{Journal, JournalError, Mark, RequestRecord, Step};
use super::outcome::{round3, FailureKind, Phase, PhaseOutcome, PhaseStep, SkipReason};
use super::phases;
use super::plan::Plan;
use super::{Engine, RollbackRequest};
use crate::history::{Event, EventKind};
use crate::notify::{Notification, NotifyEvent};
use crate::state::StateLock;
use crate::telemetry::events;
use crate::verify::Verification;

/// Progress of a run, for the CLI's live output and the logs.
#[derive(Debug, Clone)]
pub enum Progress {
    Started {
        id: String,
    },
    PhaseStarted(Phase),
    PhaseFinished {
        phase: Phase,
        outcome: PhaseOutcome,
        elapsed: Duration,
    },
    Note(String),
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub id: String,
    pub success: bool,
    pub plan: Option<Plan>,
    pub phases: Vec<PhaseStep>,
    pub error: Option<String>,
    pub duration: Duration,
    /// Time spent waiting on the platform, the service and pauses: the rest
    /// of `duration` is rollbackd's own overhead.
    pub waiting: Duration,
    pub verification: Option<Verification>,
    pub event: Event,
}

/// One run in progress: what the phases read and what they leave for the
/// phases after them.
pub(crate) struct Run<'a> {
    pub engine: &'a Engine,
    pub id: String,
    pub req: RollbackRequest,
    pub progress: &'a (dyn Fn(Progress) + Send + Sync),
    pub started_at: SystemTime,
    pub t0: Instant,
    /// Set by pre-validation once a plan exists.
    pub plan: Option<Plan>,
    /// Held from the moment the run will be recorded until it is.
    pub lock: Option<StateLock>,
    /// Pre-validation opened the breaker; post-rollback settles it.
    pub breaker_opened: bool,
    /// Extra history fields (the backup's metadata, warnings).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The deployment the platform created for the rollback, once known.
    pub created_deployment: Option<String>,
    pub verification: Option<Verification>,
    /// Time spent waiting on others (see [`RunReport::waiting`]).
    pub waited: Duration,
    pub steps: Vec<PhaseStep>,
    /// What the journal says was done, in order.
    pub marks: Vec<Mark>,
    /// The breaker before this run opened it.
    pub breaker_before: Option<BreakerRecord>,
    /// The deployments listed just before the platform call.
    pub known_deployments: Vec<String>,
    /// A restarted rollbackd finishes a run whose platform call may have
    /// been made: the application phase follows that call instead of making one.
    pub follow_only: bool,
    /// This process is stopping and left the run for the next start.
    pub stopped: bool,
    /// When the platform was asked to roll back, and when the service was
    /// verified healthy (the detection figures' last ends).
    pub called_at: Option<SystemTime>,
    pub healthy_at: Option<SystemTime>,
    /// When the rollback deployment first answered `/health`: verification's
    /// initial wait counts from here.
    pub live_at: Option<Instant>,
    /// What `[gitops]` did after the rollback was verified.
    pub revert: Option<crate::gitops::RevertRecord>,
}

impl<'a> Run<'a> {
    /// A run that has not started yet.
    pub fn new(
        engine: &'a Engine,
        id: String,
        req: RollbackRequest,
        progress: &'a (dyn Fn(Progress) + Send + Sync),
    ) -> Run<'a> {
        Run {
            engine,
            id,
            req,
            progress,
            started_at: engine.clock.now(),
            t0: Instant::now(),
            plan: None,
            lock: None,
            breaker_opened: false,
            extra: serde_json::Map::new(),
            created_deployment: None,
            verification: None,
            waited: Duration::ZERO,
            steps: Vec::new(),
            marks: Vec::new(),
            breaker_before: None,
            known_deployments: Vec::new(),
            follow_only: false,
            stopped: false,
            called_at: None,
            healthy_at: None,
            live_at: None,
            revert: None,
        }
    }

    /// The run as its journal holds it.
    pub fn journal(&self) -> Journal {
        Journal {
            version: super::journal::VERSION,
            id: self.id.clone(),
            pid: std::process::id(),
            steps: self.marks.clone(),
            breaker_before: self.breaker_before.clone(),
            plan: self.plan.clone(),
            known_deployments: self.known_deployments.clone(),
            request: RequestRecord {
                deployment_id: self.req.deployment_id.clone(),
                skip_db: self.req.skip_db,
                db_target: self.req.db_target.clone(),
                base_url: self.req.base_url.clone(),
                pending_id: self.req.pending_id.clone(),
            },
            event: self.event(),
        }
    }

    /// Journals `step`. Before a step that changes the world, an error
    /// means the step must not be taken.
    pub fn mark(&mut self, step: Step, detail: impl Into<String>) -> Result<(), JournalError> {
        self.marks.push(Mark {
            step,
            at: crate::clock::millis(self.engine.clock.now()),
            detail: detail.into(),
        });
        self.save()
    }

    /// Journals a step that already happened: a failed write is logged (the
    /// next write may succeed) and the run goes on.
    pub fn mark_done(&mut self, step: Step, detail: impl Into<String>) {
        if let Err(e) = self.mark(step, detail) {
            tracing::error!(error = %e, step = step.as_str(), "cannot journal a step that happened");
        }
    }

    /// Rewrites the journal as the run stands.
    pub fn save(&self) -> Result<(), JournalError> {
        self.engine.journal.write(&self.journal())
    }

    pub fn has(&self, step: Step) -> bool {
        self.marks.iter().any(|m| m.step == step)
    }

    /// Whether anything this run did reached production: a downgrade was
    /// started, or the platform may have been asked to roll back.
    pub fn reached_production(&self) -> bool {
        self.has(Step::DowngradeStarted) || self.has(Step::PlatformCallStarted)
    }

    pub fn note(&self, text: impl Into<String>) {
        (self.progress)(Progress::Note(text.into()));
    }

    /// Awaits `f`, counting the time as waiting on others.
    pub async fn wait<F: std::future::Future>(&mut self, f: F) -> F::Output {
        let started = Instant::now();
        let out = f.await;
        self.waited += started.elapsed();
        out
    }

    pub(crate) fn outcome(&self, phase: Phase) -> Option<&PhaseOutcome> {
        self.steps
            .iter()
            .find(|s| s.phase == phase)
            .map(|s| &s.outcome)
    }

    /// The steps that decide the result: all but post-rollback, whose own
    /// failure (the record could not be written) is reported on its own and
    /// does not undo a rollback that happened.
    fn deciding_steps(&self) -> impl Iterator<Item = &PhaseStep> {
        self.steps.iter().filter(|s| s.phase != Phase::PostRollback)
    }

    /// No phase failed, and the service was verified.
    pub fn success(&self) -> bool {
        self.deciding_steps().all(|s| !s.outcome.is_failure())
            && self
                .outcome(Phase::Verification)
                .is_some_and(PhaseOutcome::is_success)
    }

    /// The first failure, as `phase: why`.
    pub fn error(&self) -> Option<String> {
        self.deciding_steps().find_map(|s| match &s.outcome {
            PhaseOutcome::Failed(_, why) => Some(format!("{}: {why}", s.phase.as_str())),
            _ => None,
        })
    }

    /// The history entry for the run as it stands.
    pub fn event(&self) -> Event {
        let plan = self.plan.as_ref();
        Event {
            kind: EventKind::Rollback,
            id: Some(self.id.clone()),
            timestamp: crate::clock::seconds(self.started_at),
            target_deployment_id: plan.map(|p| p.target.id.clone()),
            from_deployment_id: plan.map(|p| p.current.id.clone()),
            created_deployment_id: self.created_deployment.clone(),
            git_sha: plan.and_then(|p| p.target.git_sha.clone()),
            git_branch: plan.and_then(|p| p.target.git_branch.clone()),
            trigger: self.req.trigger.kind(),
            reason: self.req.reason.clone(),
            duration_seconds: round3(self.t0.elapsed().as_secs_f64()),
            success: self.success(),
            policy: Some(self.req.policy_label().into()),
            rules: self.req.all_rules(),
            phases: self.steps.iter().map(PhaseStep::record).collect(),
            error: self.error(),
            detection: super::detection::figures(self),
            blame: self.req.blame.clone(),
            revert: self.revert.clone(),
            drill: None,
            extra: self.extra.clone(),
        }
    }

    /// A notification about this run.
    pub fn notification(&self, event: NotifyEvent, summary: String) -> Notification {
        let mut n = Notification::new(event, summary);
        n.rollback_id = Some(self.id.clone());
        n.pending_id = self.req.pending_id.clone();
        n.rules = self.req.all_rules();
        n.policy = Some(self.req.policy_label().to_string());
        n.target_deployment = self.plan.as_ref().map(|p| p.target.id.clone());
        n.from_deployment = self.plan.as_ref().map(|p| p.current.id.clone());
        n.phases = self.steps.iter().map(PhaseStep::record).collect();
        n.blame = self.req.blame.clone();
        n.revert = self.revert.clone();
        n
    }
}

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
        self.walk_from(run, Phase::PreValidation).await
    }

    /// Walks the phases from `first` on (a restarted rollbackd resumes a
    /// run part of the way through).
    pub(crate) async fn walk_from(&self, mut run: Run<'_>, first: Phase) -> RunReport {
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
            if phase == Phase::PostRollback {
                self.propose_revert(&mut run).await;
            }
            let started = Instant::now();
            let outcome = match gate(phase, &run) {
                Some(skipped) => skipped,
                None => {
                    progress(Progress::PhaseStarted(phase));
                    self.under_budget(phase, &mut run).await
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

    /// Runs one phase under its budget. A phase cut off by its budget is a
    /// failure that says so; what it did before is kept in the run.
    async fn under_budget(&self, phase: Phase, run: &mut Run<'_>) -> PhaseOutcome {
        let budget = self.config.budget(phase);
        let waited_before = run.waited;
        let work = async {
            match phase {
                Phase::PreValidation => phases::pre_validation::run(run).await,
                Phase::Database => phases::database::run(run).await,
                Phase::Application => phases::application::run(run).await,
                Phase::Verification => phases::verification::run(run).await,
                Phase::PostRollback => phases::post_rollback::run(run).await,
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
                    if let Some(cmd) = run
                        .extra
                        .get("backup")
                        .and_then(|b| b["restore_command"].as_str())
                    {
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
