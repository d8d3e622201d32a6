//! Settling the runs a stopped or killed rollbackd left behind, from their
//! journals, before it does anything else:
//!
//! - the history already holds the run: only the journal (and perhaps the
//!   breaker) were left; tidy them;
//! - nothing reached production (no downgrade started, the platform never
//!   asked, or asked and it lists nothing the call created): record the run
//!   as `interrupted` (guards do not count it), restore the breaker it
//!   opened, and let the rules decide again;
//! - the platform may have been asked: never ask again; find what the call
//!   created (from the journal, or the platform's list), follow it, verify,
//!   record the run once, marked `resumed`;
//! - killed during a downgrade: what the schema holds is unknown; record the
//!   run as failed saying exactly that, keep the breaker OPEN, page.
//!
//! A run still going in another process holds the rollback lock; its
//! journal is left to it.

use crate::telemetry::events;
use std::time::Duration;

use tokio::time::Instant;

use super::journal::{Journal, JournalError, Step};
use super::outcome::{FailureKind, Phase, PhaseOutcome, PhaseStep};
use super::phases::application::Called;
use super::run::{Progress, Run, RunReport};
use super::{Engine, RollbackRequest, Trigger};
use crate::history::{EventKind, HistoryError, TriggerKind};
use crate::notify::NotifyEvent;
use crate::provider::Deployment;
use crate::rules::Policy;
use crate::state::StateLock;

/// How a left-over run was settled.
#[derive(Debug)]
pub enum Settled {
    /// The history already held it.
    Recorded { id: String },
    /// Nothing had reached production; recorded as `interrupted`.
    Interrupted { id: String, report: RunReport },
    /// Finished from where it stopped (or failed with what is unknown),
    /// recorded once, marked `resumed`.
    Resumed { id: String, report: RunReport },
}

impl Settled {
    pub fn id(&self) -> &str {
        match self {
            Settled::Recorded { id }
            | Settled::Interrupted { id, .. }
            | Settled::Resumed { id, .. } => id,
        }
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        match self {
            Settled::Recorded { id } => {
                format!("rollback {id} was already recorded; its journal was removed")
            }
            Settled::Interrupted { id, .. } => format!(
                "rollback {id} was interrupted before anything reached production; recorded as interrupted, the breaker restored"
            ),
            Settled::Resumed { id, report } if report.success => {
                format!("rollback {id} was resumed and succeeded; the service is verified healthy")
            }
            Settled::Resumed { id, report } => format!(
                "rollback {id} was resumed and FAILED: {}",
                report.error.as_deref().unwrap_or("unknown error")
            ),
        }
    }
}

/// Why recovery could not look at the left-over runs.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// What to do with a left-over run.
enum Decision {
    Interrupt,
    /// Walk on from this phase.
    Resume(Phase),
    /// The platform call was made: follow what it created, then walk on.
    Follow(Called),
    /// Record this phase's outcome as unknown, then walk on (the gate skips
    /// what must not run after it).
    Unknown(Phase, String),
}

impl Engine {
    /// Settles every run a stopped or killed rollbackd left unfinished. The
    /// daemon calls this before it watches, the CLI before a rollback.
    pub async fn recover(&self) -> Result<Vec<Settled>, RecoveryError> {
        let mut settled = Vec::new();
        for journal in self.unfinished()? {
            let Some(lock) = self.try_lock() else {
                tracing::info!(rollback = %journal.id, "a rollback is running in another process; its journal is left to it");
                break;
            };
            let id = journal.id.clone();
            settled.push(crate::child::for_run(id, self.settle(journal, lock)).await?);
        }
        Ok(settled)
    }

    async fn settle(&self, journal: Journal, lock: StateLock) -> Result<Settled, RecoveryError> {
        let id = journal.id.clone();
        // What the dead rollbackd's commands started and the parent-death
        // signal did not reach (a script's `curl`) must not act after this.
        let killed = crate::child::kill_run(&id);
        if killed > 0 {
            tracing::warn!(rollback = %id, killed, "killed processes the stopped rollbackd's commands had started");
        }
        let history = self.history.load()?;
        if let Some(recorded) = history
            .events
            .iter()
            .find(|e| e.id.as_deref() == Some(id.as_str()))
        {
            // Killed between writing the record and tidying up.
            let opened_here = self
                .breaker
                .load()
                .is_ok_and(|r| r.rollback_id.as_deref() == Some(&id) && r.settled_at.is_none());
            if opened_here {
                let settled = if recorded.kind == EventKind::Interrupted {
                    self.restore_breaker(journal.breaker_before.as_ref())
                } else {
                    self.breaker.settle(self.clock.now(), recorded.success)
                };
                if let Err(e) = settled {
                    tracing::error!(error = %e, "cannot settle the breaker of a recorded rollback");
                }
            }
            self.journal.remove(&id)?;
            tracing::warn!(rollback = %id, settled = "recorded", "found the journal of a rollback the history already holds; removed it");
            return Ok(Settled::Recorded { id });
        }
        let progress = |p: Progress| {
            if let Progress::Note(text) = p {
                tracing::info!("{text}");
            }
        };
        let mut run = self.run_from(&journal, &progress);
        run.lock = Some(lock);
        let phase = first_unfinished(&run);
        let decision = self.decide(&mut run).await;
        match decision {
            Decision::Interrupt => {
                let report = self.settle_interrupted(run).await;
                Ok(Settled::Interrupted { id, report })
            }
            Decision::Resume(from) => {
                self.announce_resume(&mut run, phase);
                let report = self.walk_from(run, from, None).await;
                Ok(Settled::Resumed { id, report })
            }
            Decision::Follow(called) => {
                self.announce_resume(&mut run, phase);
                let report = self.walk_from(run, Phase::Application, Some(called)).await;
                Ok(Settled::Resumed { id, report })
            }
            Decision::Unknown(at, why) => {
                self.announce_resume(&mut run, phase);
                tracing::error!(rollback = %id, phase = at.as_str(), "{why}");
                run.steps.push(PhaseStep {
                    phase: at,
                    outcome: PhaseOutcome::failed(FailureKind::OutcomeUnknown, why),
                    elapsed: Duration::ZERO,
                });
                let next = Phase::ALL
                    .into_iter()
                    .skip_while(|p| *p != at)
                    .nth(1)
                    .unwrap_or(Phase::PostRollback);
                let report = self.walk_from(run, next, None).await;
                Ok(Settled::Resumed { id, report })
            }
        }
    }

    /// The run as its journal left it.
    fn run_from<'a>(
        &'a self,
        journal: &Journal,
        progress: &'a (dyn Fn(Progress) + Send + Sync),
    ) -> Run<'a> {
        let event = &journal.event;
        let rules = event.rules.clone();
        let trigger = match event.trigger {
            TriggerKind::Manual => Trigger::Manual,
            TriggerKind::Alertmanager => Trigger::Alertmanager(rules),
            _ => Trigger::Rules(rules),
        };
        let policy = match event.policy.as_deref() {
            Some("dry_run") => Policy::DryRun,
            Some("confirm") => Policy::Confirm,
            _ => Policy::Auto,
        };
        let req = RollbackRequest {
            trigger,
            policy,
            reason: event.reason.clone(),
            deployment_id: journal.request.deployment_id.clone(),
            skip_db: journal.request.skip_db,
            db_target: journal.request.db_target.clone(),
            base_url: journal.request.base_url.clone(),
            pending_id: journal.request.pending_id.clone(),
            joined: Default::default(),
            at: tokio::time::Instant::now(),
            detected: super::detection::detected(event),
            blame: event.blame.clone(),
        };
        let mut run = Run::new(self, journal.id.clone(), req, progress);
        run.called_at = super::detection::called_at(&journal.steps);
        let now = self.clock.now();
        if let Some(started) = event.time() {
            run.started_at = started;
            // The run's duration counts the time rollbackd was down.
            let since = now.duration_since(started).unwrap_or_default();
            run.t0 = Instant::now()
                .checked_sub(since)
                .unwrap_or_else(Instant::now);
        }
        run.plan = journal.plan.clone();
        run.backup = event.backup.clone();
        run.backup_warning = event.backup_warning.clone();
        run.created_deployment = event.created_deployment_id.clone();
        run.steps = event
            .phases
            .iter()
            .filter_map(PhaseStep::from_record)
            // Post-rollback runs again: its record is what is missing.
            .filter(|s| s.phase != Phase::PostRollback)
            .collect();
        run.marks = journal.steps.clone();
        run.breaker_before = journal.breaker_before.clone();
        run.known_deployments = journal.known_deployments.clone();
        run.breaker_opened = journal.has(Step::BreakerOpened)
            || self
                .breaker
                .load()
                .is_ok_and(|r| r.rollback_id.as_deref() == Some(journal.id.as_str()));
        run
    }

    async fn decide(&self, run: &mut Run<'_>) -> Decision {
        // A downgrade was started: the schema may differ from what the
        // live code expects, whatever else happened.
        let db_touched = run.has(Step::DowngradeStarted);
        let next = first_unfinished(run);
        // A phase already failed: what is left is recorded as the run would
        // have recorded it (the gate skips the phases after a failure).
        if next != Phase::PreValidation && run.steps.iter().any(|s| s.outcome.is_failure()) {
            return Decision::Resume(next);
        }
        match next {
            Phase::PreValidation => Decision::Interrupt,
            Phase::Database if db_touched => self.downgrade_left(run).await,
            Phase::Database => Decision::Interrupt,
            Phase::Application if !run.has(Step::PlatformCallStarted) => {
                if !db_touched {
                    return Decision::Interrupt;
                }
                // The database phase ended: a failed downgrade is recorded as
                // failed (the gate skips the application); after a good one,
                // finishing the rollback is what the run was for, unless the
                // live deployment changed while rollbackd was down.
                if !run
                    .outcome(Phase::Database)
                    .is_some_and(PhaseOutcome::is_success)
                {
                    return Decision::Resume(Phase::Application);
                }
                match self.live_changed(run).await {
                    None => Decision::Resume(Phase::Application),
                    Some(why) => Decision::Unknown(Phase::Application, why),
                }
            }
            Phase::Application => {
                if let Some(refusal) = run.marks.iter().find(|m| {
                    m.step == Step::PlatformCallAnswered && m.detail.starts_with("refused")
                }) {
                    // The platform said no: record it as the run would have.
                    let why = format!("the platform {}", refusal.detail);
                    run.steps.push(PhaseStep {
                        phase: Phase::Application,
                        outcome: PhaseOutcome::failed(FailureKind::PlatformRefused, why),
                        elapsed: Duration::ZERO,
                    });
                    return Decision::Resume(Phase::Verification);
                }
                // The platform said yes (Railway's answer names nothing).
                let accepted = run.has(Step::PlatformCallAnswered);
                match self.find_created(run).await {
                    Ok(Some(created)) => {
                        run.created(&created);
                        Decision::Follow(Called {
                            known: run.known_deployments.iter().cloned().collect(),
                            created: Some(created),
                        })
                    }
                    Ok(None) if accepted => Decision::Unknown(
                        Phase::Application,
                        format!(
                            "the platform accepted the rollback to {} before rollbackd was killed, but lists no deployment it created: check the platform's deployments by hand",
                            target(run)
                        ),
                    ),
                    Ok(None) if !db_touched => Decision::Interrupt,
                    Ok(None) => Decision::Unknown(
                        Phase::Application,
                        format!(
                            "rollbackd was killed while asking the platform to roll back to {}, and the platform lists no deployment the call created; the database was already downgraded, so the live code may not match its schema: finish the rollback by hand",
                            target(run)
                        ),
                    ),
                    Err(e) => Decision::Unknown(
                        Phase::Application,
                        format!(
                            "rollbackd was killed while asking the platform to roll back to {}, and cannot tell what the call did: {e}; check the platform's deployments by hand",
                            target(run)
                        ),
                    ),
                }
            }
            phase => Decision::Resume(phase),
        }
    }

    /// Killed during the database phase, after the downgrade started: if the
    /// journal says it finished and the database is at its target now, the
    /// run goes on; anything else is unknown.
    async fn downgrade_left(&self, run: &mut Run<'_>) -> Decision {
        let started = run
            .marks
            .iter()
            .find(|m| m.step == Step::DowngradeStarted)
            .map(|m| m.detail.clone())
            .unwrap_or_default();
        let finished_ok = run
            .marks
            .iter()
            .any(|m| m.step == Step::DowngradeFinished && m.detail.starts_with("ok"));
        let to = started
            .rsplit(" -> ")
            .next()
            .unwrap_or_default()
            .to_string();
        if finished_ok && !to.is_empty() && self.database_revision().await == Ok(Some(to.clone())) {
            run.steps.push(PhaseStep {
                phase: Phase::Database,
                outcome: PhaseOutcome::Succeeded(format!(
                    "downgraded {started}; alembic_version verified after the restart"
                )),
                elapsed: Duration::ZERO,
            });
            return match self.live_changed(run).await {
                None => Decision::Resume(Phase::Application),
                Some(why) => Decision::Unknown(Phase::Application, why),
            };
        }
        Decision::Unknown(Phase::Database, self.downgrade_unknown(run).await)
    }

    /// The database's schema revision now.
    async fn database_revision(&self) -> Result<Option<String>, String> {
        match self
            .db
            .as_ref()
            .and_then(|db| db.tool.as_ref().map(|t| (db, t)))
        {
            Some((db, tool)) => tool.current(&db.database).await.map_err(|e| e.to_string()),
            None => Err("the database is no longer configured".into()),
        }
    }

    /// `Some(why)` when the platform's live deployment is no longer the one
    /// the run planned to roll back from (someone deployed while rollbackd
    /// was down), or cannot be known: never roll back over that.
    async fn live_changed(&self, run: &Run<'_>) -> Option<String> {
        let planned = run.plan.as_ref().map(|p| p.current.id.clone())?;
        let live = match self.provider.list(50).await {
            Ok(list) => list.into_iter().find(|d| d.is_success()).map(|d| d.id),
            Err(e) => {
                return Some(format!(
                    "the database was downgraded, and the platform cannot be asked which deployment is live ({e}): rollbackd did not roll the application back; check by hand"
                ))
            }
        };
        (live.as_deref() != Some(planned.as_str())).then(|| {
            format!(
                "the database was downgraded, but while rollbackd was down the live deployment changed from {planned} to {}: rollbackd did not roll back over it; check the schema against the live code by hand",
                live.as_deref().unwrap_or("none")
            )
        })
    }

    /// What the platform created for this run's call: from the journal, or
    /// the one deployment it lists that was not there before the call (of
    /// the target's commit, when both say). `Ok(None)`: nothing new appeared,
    /// the call never reached it. `Err`: it cannot be told (the platform
    /// cannot be asked, or several new deployments could be the call's, or
    /// none of them is of the target's commit): never guess.
    async fn find_created(&self, run: &Run<'_>) -> Result<Option<String>, String> {
        if let Some(id) = &run.created_deployment {
            return Ok(Some(id.clone()));
        }
        let poll = self.config.poll_interval;
        let deadline = Instant::now() + self.config.budget(Phase::Application) / 2;
        // A call that reached the platform shows in its list at once (Railway
        // creates the deployment before it answers; the commands that could
        // still act were just killed). Lists are taken for the provider's
        // `list_settle` anyway (5 s by default), for a platform that lists
        // late: only then is the call taken as never made.
        let settle_for = (poll * 3).max(self.provider.list_settle());
        let first = Instant::now();
        let mut listed = false;
        loop {
            match self.provider.list(50).await {
                Ok(list) => {
                    let new: Vec<&Deployment> = list
                        .iter()
                        .filter(|d| !run.known_deployments.contains(&d.id))
                        .collect();
                    if !new.is_empty() {
                        return the_calls(&new, run);
                    }
                    listed = true;
                    if first.elapsed() >= settle_for {
                        return Ok(None);
                    }
                }
                Err(e) if Instant::now() + poll >= deadline && !listed => return Err(e.to_string()),
                Err(_) if listed && first.elapsed() >= settle_for => return Ok(None),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list deployments to find what the interrupted rollback created; trying again")
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// What can be said about a downgrade rollbackd was killed during.
    async fn downgrade_unknown(&self, run: &Run<'_>) -> String {
        let started = run.marks.iter().find(|m| m.step == Step::DowngradeStarted);
        let what = started.map_or("?".into(), |m| m.detail.clone());
        let at = started.map_or("?".into(), |m| m.at.clone());
        let now = match self.database_revision().await {
            Ok(Some(rev)) => format!("the database now reports revision {rev}"),
            Ok(None) => "the database has no alembic_version now".into(),
            Err(e) => format!("the database's revision cannot be read ({e})"),
        };
        let restore = run
            .backup
            .as_ref()
            .map(|b| format!("; the emergency backup restores it: {}", b.restore_command))
            .unwrap_or_default();
        format!(
            "rollbackd was killed during the downgrade {what} (started {at}); whether it finished, and what the schema holds, is unknown: {now}. Check the schema before anything else; the application was not rolled back{restore}"
        )
    }

    fn announce_resume(&self, run: &mut Run<'_>, phase: Phase) {
        run.resumed_at = Some(phase);
        events::rollback_resumed(&run.id, phase.as_str());
        let n = run.notification(
            NotifyEvent::RollbackResumed,
            format!(
                "rollbackd restarted during rollback {} ({}) and is finishing it: {}",
                run.id,
                phase.as_str(),
                run.req.reason
            ),
        );
        self.notify(n);
    }

    /// Records a run stopped before anything reached production as
    /// `interrupted`, gives the breaker back what it was, and removes the
    /// journal. The rules decide again.
    pub(crate) async fn settle_interrupted(&self, run: Run<'_>) -> RunReport {
        let phase = first_unfinished(&run);
        let now = self.clock.now();
        let why = format!(
            "rollbackd stopped during {} before anything reached production; nothing was changed and the rules decide again",
            phase.as_str()
        );
        let mut event = run.event();
        event.kind = EventKind::Interrupted;
        event.success = false;
        event.error = Some(why.clone());
        // History first, then the breaker, and the journal only once both
        // hold: killed in between, the next start finishes the tidying.
        let mut problems = Vec::new();
        if let Err(e) = self.history.append(event.clone(), None) {
            problems.push(e.to_string());
        }
        let opened_here = self
            .breaker
            .load()
            .is_ok_and(|r| r.rollback_id.as_deref() == Some(run.id.as_str()));
        if problems.is_empty() && opened_here {
            if let Err(e) = self.restore_breaker(run.breaker_before.as_ref()) {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            if let Err(e) = self.journal.remove(&run.id) {
                problems.push(e.to_string());
            }
        }
        self.breaker_state(now);
        events::rollback_interrupted(
            &run.id,
            phase.as_str(),
            run.req.trigger.label(),
            run.req.policy_label(),
            &problems,
        );
        let mut n = run.notification(NotifyEvent::RollbackInterrupted, why.clone());
        n.outcome = Some("nothing was changed; the rules decide again".into());
        self.notify(n);
        RunReport {
            id: run.id.clone(),
            success: false,
            plan: run.plan.clone(),
            phases: run.steps.clone(),
            error: Some(why),
            duration: run.t0.elapsed(),
            waiting: run.waited,
            verification: None,
            event,
        }
    }
}

impl Engine {
    /// Gives the breaker back what it was before an interrupted run opened
    /// it; one that could not be read then stays OPEN, failed.
    fn restore_breaker(
        &self,
        before: Option<&super::breaker::BreakerRecord>,
    ) -> Result<(), super::breaker::BreakerError> {
        match before {
            Some(before) => self.breaker.save(before),
            None => self.breaker.settle(self.clock.now(), false),
        }
    }
}

/// Which of the deployments that appeared since the call is the call's.
fn the_calls(new: &[&Deployment], run: &Run<'_>) -> Result<Option<String>, String> {
    let sha = run.plan.as_ref().and_then(|p| p.target.git_sha.as_deref());
    let ours: Vec<&&Deployment> = new
        .iter()
        .filter(|d| match (d.git_sha.as_deref(), sha) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        })
        .collect();
    let ids = |list: &[&Deployment]| {
        list.iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match ours.as_slice() {
        [one] => Ok(Some(one.id.clone())),
        [] => Err(format!(
            "the platform lists new deployments ({}), none of the target's commit",
            ids(new)
        )),
        _ => Err(format!(
            "the platform lists several new deployments that could be the call's ({})",
            ids(new)
        )),
    }
}

/// The phase the run was in (or about to start) when it stopped.
fn first_unfinished(run: &Run<'_>) -> Phase {
    Phase::ALL
        .into_iter()
        .find(|p| run.outcome(*p).is_none())
        .unwrap_or(Phase::PostRollback)
}

fn target(run: &Run<'_>) -> String {
    run.plan
        .as_ref()
        .map_or("its target".into(), |p| p.target.id.clone())
}
