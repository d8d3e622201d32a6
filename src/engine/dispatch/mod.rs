//! The daemon's decision loop: turns firing events into rollbacks under each
//! rule's policy, and carries out operators' approvals and rejections.
//!
//! - The first firing rule acts at once (the leading edge); rules firing
//!   within `engine.coalesce` of it, or while its rollback runs, join that
//!   incident and make no second rollback; a more permissive one upgrades
//!   it, once. (`incident.rs`)
//! - `dry_run` logs the plan; `confirm` parks a pending rollback that an
//!   operator approves or rejects, expiring to `engine.confirm_default`
//!   (`confirm.rs`); `auto` checks the guards and runs.
//! - Alertmanager alerts are remembered while they fire, so a resolved alert
//!   cancels what it caused and an approval can re-check it (`alerts.rs`).
//! - Every second: expire confirmations, close the breaker once the rules
//!   stay clear, record the live deployment's schema revision, settle a
//!   rollback a killed CLI left unfinished (`upkeep.rs`).
//! - One run at a time: a rule firing while a run goes on joins it.
//!
//! Time comes from the engine's clock and tokio's, so the whole loop runs on
//! tokio's paused clock in tests.

mod alerts;
mod blame;
mod confirm;
mod forwarded;
mod incident;
#[cfg(test)]
mod tests;
mod upkeep;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::pending::PendingStore;
use super::{new_id, Engine, RollbackRequest, RunReport};
use crate::rules::{FiringEvent, RuleEvent};
use crate::watch::StatusBoard;

pub(crate) use confirm::{ApproveError, Approved};
pub(crate) use forwarded::{forward, Forwarded};

/// An operator's decision, sent from the HTTP API.
pub(crate) enum Command {
    Approve {
        id: String,
        force: bool,
        reply: oneshot::Sender<Result<Approved, ApproveError>>,
    },
    Reject {
        id: String,
        reply: oneshot::Sender<Result<(), ApproveError>>,
    },
}

/// The rollback the daemon is running, shared so shutdown can wait for it.
pub(crate) type RunningRollback = Arc<Mutex<Option<(String, JoinHandle<Option<RunReport>>)>>>;

/// Waits (at most `limit`) for a running rollback to end before the process
/// exits: a rollback cut off midway leaves no record and an unsettled breaker.
pub(crate) async fn finish_running(running: &RunningRollback, limit: Duration) {
    let task = running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some((id, task)) = task {
        if !task.is_finished() {
            tracing::warn!(rollback = %id, "shutting down: waiting for the running rollback to finish");
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::error!(rollback = %id, "rollback still running at shutdown; its record may be incomplete");
            }
        }
    }
}

/// The dispatcher and what it shares with the API.
pub(crate) struct Dispatcher {
    engine: Arc<Engine>,
    board: Arc<StatusBoard>,
    pending: Arc<PendingStore>,
    running: RunningRollback,
    /// When the rules were last seen all clear (for closing the breaker).
    clear_since: Option<Instant>,
    /// When the live deployment's schema revision was last recorded.
    revision_checked: Option<Instant>,
    alerts: alerts::FiringAlerts,
    /// When journals left by a dead process were last looked for, and the
    /// task settling them.
    orphans_checked: Option<Instant>,
    /// The task settling them; it says whether some could not be settled.
    settling: Option<JoinHandle<Option<bool>>>,
    /// How often to look: 10 s, doubling (to 10 min) while a journal cannot
    /// be settled, so a failure is not retried, and announced, every 10 s.
    orphans_every: Duration,
    /// Settling what the previous leader left, in a task of its own: the
    /// dispatcher goes on answering meanwhile, and acts on the rules that
    /// fire once it is done.
    takeover: Option<JoinHandle<Option<()>>>,
    /// Whether this replica led at the last upkeep, and under which epoch.
    was_leader: bool,
    led_epoch: i64,
    /// Rules seen firing and not resolved since, so a replica that takes
    /// over acts on what fired while it followed (or could not act).
    seen_firing: std::collections::BTreeMap<(String, String), FiringEvent>,
    /// The incident acted on last: rules that fire within `engine.coalesce`
    /// of it, or while its rollback runs, join it (`incident.rs`).
    open: Option<incident::Open>,
    /// Judges whether the live deployment is to blame before acting
    /// (`blame.rs`); none: blame is not judged.
    blamer: Option<Arc<crate::blame::Blamer>>,
    /// A rollback held while a newer deployment, to blame, settles.
    deferred: Option<blame::Deferred>,
    /// The task asking for pending rules' baselines, at most one at a time.
    prefetching: Option<JoinHandle<()>>,
}

impl Dispatcher {
    pub(crate) fn new(
        engine: Arc<Engine>,
        board: Arc<StatusBoard>,
        pending: Arc<PendingStore>,
    ) -> Self {
        // A single instance leads from the start: no takeover to make.
        let was_leader = engine.is_leader();
        let engine_epoch = engine.leadership().epoch();
        Dispatcher {
            engine,
            board,
            pending,
            running: RunningRollback::default(),
            clear_since: None,
            revision_checked: None,
            alerts: alerts::FiringAlerts::default(),
            orphans_checked: None,
            settling: None,
            takeover: None,
            orphans_every: Duration::from_secs(10),
            was_leader,
            led_epoch: engine_epoch,
            seen_firing: Default::default(),
            open: None,
            blamer: None,
            deferred: None,
            prefetching: None,
        }
    }

    /// The running-rollback slot, for shutdown.
    pub(crate) fn running(&self) -> RunningRollback {
        self.running.clone()
    }

    /// Runs until both channels close.
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::Receiver<RuleEvent>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    self.event(event).await;
                }
                Some(command) = commands.recv() => self.command(command).await,
                _ = tick.tick() => self.upkeep().await,
            }
        }
    }

    /// One event, as it comes. Alertmanager's alerts are noted in their
    /// order (a set that fires then resolves is over). A firing rule acts
    /// at once (the leading edge), unless an incident is open: then it
    /// joins that one.
    async fn event(&mut self, event: RuleEvent) {
        match event {
            RuleEvent::Resolved(e) => {
                self.alerts.resolved(&e);
                self.resolved(e);
            }
            RuleEvent::Fired(e) => {
                self.alerts.fired(&e);
                if self.taking_over() {
                    // Acted on once the previous leader's run is settled.
                    self.seen_firing
                        .insert((e.group.clone(), e.rule.clone()), e);
                    return;
                }
                if self.incident_open() {
                    self.join(e).await;
                } else {
                    self.incident(vec![e]).await;
                }
            }
        }
    }

    /// The id of the rollback running now, if any.
    fn busy(&mut self) -> Option<String> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match &*running {
            Some((id, task)) if !task.is_finished() => Some(id.clone()),
            _ => {
                *running = None;
                None
            }
        }
    }

    /// Starts a rollback in its own task and returns its id at once.
    fn start(&mut self, req: RollbackRequest) -> String {
        self.start_as(req, new_id("rb"))
    }

    /// Starts a rollback under `id` (one chosen and recorded beforehand: a
    /// forwarded approval's).
    fn start_as(&mut self, req: RollbackRequest, id: String) -> String {
        let engine = self.engine.clone();
        let run_id = id.clone();
        // A run that panics stops rollbackd; the restart settles its journal.
        let task = crate::supervise::global().spawn("rollback", async move {
            engine.run_with_id(run_id, req, &|_| {}).await
        });
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some((id.clone(), task));
        id
    }
}

/// A firing event as the history records it.
fn trigger_of(e: &FiringEvent) -> crate::history::RuleTrigger {
    crate::history::RuleTrigger {
        group: e.group.clone(),
        rule: e.rule.clone(),
        value: e.value.is_finite().then_some(e.value),
        condition: e.condition.clone(),
    }
}
