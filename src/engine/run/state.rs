//! One run's state: what it is (fixed when it starts) and what it has done
//! so far, as its journal and its history entry record it; the report it
//! ends with, and the progress it reports on the way.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::super::breaker::BreakerRecord;
use super::super::journal::{Journal, JournalError, Mark, RequestRecord, Step};
use super::super::outcome::{round3, Phase, PhaseOutcome, PhaseStep};
use super::super::plan::Plan;
use super::super::{Engine, RollbackRequest};
use crate::db::backup::Backup;
use crate::history::{Event, EventKind};
use crate::notify::{Notification, NotifyEvent};
use crate::state::StateLock;
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

/// One run in progress: what it is (fixed when it starts) and what it has
/// done so far, as its journal and its history entry record it.
///
/// The phases get what they need as arguments and return what they
/// produced; the orchestrator ([`Engine::walk_from`]) keeps it here. A
/// phase writes to the run only through the methods that journal what
/// changed in the world: [`Run::begin`], [`Run::backed_up`],
/// [`Run::opened_breaker`], [`Run::calling`], [`Run::created`] and
/// [`Run::mark`].
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
    /// The breaker before this run opened it.
    pub breaker_before: Option<BreakerRecord>,
    /// Pre-validation opened the breaker; post-rollback settles it.
    pub breaker_opened: bool,
    /// The emergency backup, and why there is none (or no copy off this
    /// machine) when it was not required.
    pub backup: Option<Backup>,
    pub backup_warning: Option<String>,
    /// The deployments listed just before the platform call.
    pub known_deployments: Vec<String>,
    /// The deployment the platform created for the rollback, once known.
    pub created_deployment: Option<String>,
    /// When the rollback deployment first answered `/health`: verification's
    /// initial wait counts from here.
    pub live_at: Option<Instant>,
    pub verification: Option<Verification>,
    /// What `[gitops]` did after the rollback was verified.
    pub revert: Option<crate::gitops::RevertRecord>,
    /// When the platform was asked to roll back, and when the service was
    /// verified healthy (the detection figures' last ends).
    pub called_at: Option<SystemTime>,
    pub healthy_at: Option<SystemTime>,
    /// Time spent waiting on others (see [`RunReport::waiting`]).
    pub waited: Duration,
    pub steps: Vec<PhaseStep>,
    /// What the journal says was done, in order.
    pub marks: Vec<Mark>,
    /// A restarted rollbackd finished this run from this phase.
    pub resumed_at: Option<Phase>,
    /// This process is stopping and left the run for the next start.
    pub stopped: bool,
}

impl<'a> Run<'a> {
    /// A run that has not started yet.
    pub(crate) fn new(
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
            breaker_before: None,
            breaker_opened: false,
            backup: None,
            backup_warning: None,
            known_deployments: Vec::new(),
            created_deployment: None,
            live_at: None,
            verification: None,
            revert: None,
            called_at: None,
            healthy_at: None,
            waited: Duration::ZERO,
            steps: Vec::new(),
            marks: Vec::new(),
            resumed_at: None,
            stopped: false,
        }
    }

    /// The run holds the lock and has a plan: from here on it is journaled
    /// and will be recorded, even if it stops or rollbackd dies. An error
    /// means nothing may change.
    pub(crate) fn begin(&mut self, lock: StateLock, plan: Plan) -> Result<(), JournalError> {
        let started = format!("{} -> {}", plan.current.id, plan.target.id);
        self.lock = Some(lock);
        self.plan = Some(plan);
        self.breaker_before = self.engine.breaker.load().ok();
        self.mark(Step::Started, started)
    }

    /// What the emergency backup left (`detail` is the journal's).
    pub(crate) fn backed_up(
        &mut self,
        taken: Option<Backup>,
        warning: Option<String>,
        detail: &str,
    ) {
        let was_taken = taken.is_some();
        self.backup = taken;
        self.backup_warning = warning;
        if was_taken {
            self.mark_done(Step::BackupTaken, detail);
        }
    }

    /// Pre-validation opened the deploy breaker for this run.
    pub(crate) fn opened_breaker(&mut self, reason: String) {
        self.breaker_opened = true;
        self.mark_done(Step::BreakerOpened, reason);
    }

    /// The platform is about to be asked to roll back to `target`, with
    /// `known` listed: journaled first, so a restarted rollbackd knows the
    /// call may have been made. An error means it must not be made.
    pub(crate) fn calling(
        &mut self,
        known: &BTreeSet<String>,
        target: &str,
    ) -> Result<(), JournalError> {
        self.known_deployments = known.iter().cloned().collect();
        self.mark(Step::PlatformCallStarted, target)?;
        self.called_at = Some(self.engine.clock.now());
        Ok(())
    }

    /// The deployment the platform created for the rollback.
    pub(crate) fn created(&mut self, id: &str) {
        self.created_deployment = Some(id.to_string());
    }

    /// The run as its journal holds it.
    pub(crate) fn journal(&self) -> Journal {
        Journal {
            version: super::super::journal::VERSION,
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
    pub(crate) fn mark(
        &mut self,
        step: Step,
        detail: impl Into<String>,
    ) -> Result<(), JournalError> {
        self.marks.push(Mark {
            step,
            at: crate::clock::millis(self.engine.clock.now()),
            detail: detail.into(),
        });
        self.save()
    }

    /// Journals a step that already happened: a failed write is logged (the
    /// next write may succeed) and the run goes on.
    pub(crate) fn mark_done(&mut self, step: Step, detail: impl Into<String>) {
        if let Err(e) = self.mark(step, detail) {
            tracing::error!(error = %e, step = step.as_str(), "cannot journal a step that happened");
        }
    }

    /// Rewrites the journal as the run stands.
    pub(crate) fn save(&self) -> Result<(), JournalError> {
        self.engine.journal.write(&self.journal())
    }

    pub(crate) fn has(&self, step: Step) -> bool {
        self.marks.iter().any(|m| m.step == step)
    }

    /// Whether anything this run did reached production: a downgrade was
    /// started, or the platform may have been asked to roll back.
    pub(crate) fn reached_production(&self) -> bool {
        self.has(Step::DowngradeStarted) || self.has(Step::PlatformCallStarted)
    }

    pub(crate) fn note(&self, text: impl Into<String>) {
        (self.progress)(Progress::Note(text.into()));
    }

    /// Awaits `f`, counting the time as waiting on others.
    pub(crate) async fn wait<F: std::future::Future>(&mut self, f: F) -> F::Output {
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
    pub(crate) fn success(&self) -> bool {
        self.deciding_steps().all(|s| !s.outcome.is_failure())
            && self
                .outcome(Phase::Verification)
                .is_some_and(PhaseOutcome::is_success)
    }

    /// The first failure, as `phase: why`.
    pub(crate) fn error(&self) -> Option<String> {
        self.deciding_steps().find_map(|s| match &s.outcome {
            PhaseOutcome::Failed(_, why) => Some(format!("{}: {why}", s.phase.as_str())),
            _ => None,
        })
    }

    /// The history entry for the run as it stands.
    pub(crate) fn event(&self) -> Event {
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
            detection: super::super::detection::figures(self),
            blame: self.req.blame.clone(),
            revert: self.revert.clone(),
            drill: None,
            backup: self.backup.clone(),
            backup_warning: self.backup_warning.clone(),
            resumed: self.resumed_at.is_some(),
            resumed_at_phase: self.resumed_at.map(|p| p.as_str().to_string()),
            extra: Default::default(),
        }
    }

    /// A notification about this run.
    pub(crate) fn notification(&self, event: NotifyEvent, summary: String) -> Notification {
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
