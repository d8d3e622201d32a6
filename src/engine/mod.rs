//! The rollback engine: five phases, each with a time budget, each returning
//! its outcome as data; the orchestrator, not the phase, decides what follows.
//!
//! 1. pre-validation: take the rollback lock, pick the target, take the
//!    emergency backup, open the deploy breaker;
//! 2. database: downgrade migrations when the plan says it is safe;
//! 3. application: ask the platform to roll back, follow the new deployment
//!    until it succeeds, wait for the service to answer /health;
//! 4. verification: the health phases;
//! 5. post-rollback: record history and last-known-good, settle the breaker.
//!
//! Layout: `plan.rs` decides (reads only), `phases/` act (one file each),
//! `run/` walks the pipeline of steps, `outcome.rs` holds the typed results,
//! `journal.rs` keeps each run on disk step by step and `recovery.rs` settles
//! the runs a killed rollbackd left behind,
//! `guard.rs`, `breaker.rs` and `target.rs` are pure policy, `dispatch/` turns
//! firing rules and operators' answers into runs.
//!
//! It must never act twice for one request, never roll back without a lock,
//! and never lose the record of what it did.

pub(crate) mod breaker;
pub(crate) mod config;
pub(crate) mod detection;
pub(crate) mod dispatch;
pub(crate) mod guard;
pub(crate) mod journal;
pub(crate) mod listing;
pub(crate) mod outcome;
pub(crate) mod pending;
mod phases;
pub(crate) mod plan;
mod recovery;
pub(crate) mod request;
mod revert;
pub(crate) mod run;
pub(crate) mod target;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock::Clock;
use crate::history::{Event, EventKind, HistoryStore};
use crate::provider::{DeployProvider, Deployment};
use crate::standing::{Change, Standing};
use crate::state::postgres::Leadership;
use crate::state::{Doc, FileStore, StateDir, StateLock, StateStore};
use crate::telemetry::events;
use crate::verify::config::VerifyConfig;
use crate::verify::HealthProbe;

pub use breaker::{BreakerState, BreakerStore};
pub use config::{ConfirmDefault, EngineConfig};
pub use guard::Blocked;
pub use outcome::{FailureKind, Phase, PhaseOutcome, PhaseStep, SkipReason};
pub(crate) use plan::DbStep;
pub use plan::{Plan, PlanError};
pub use recovery::{RecoveryError, Settled};
pub use request::{new_id, DbTarget, RollbackRequest, Trigger};
pub use run::{Progress, RunReport};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the engine could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no [provider] is configured; set provider.type = \"railway\" or \"command\"")]
    NoProvider,
    #[error(transparent)]
    Provider(BoxError),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(reqwest::Error),
    #[error(transparent)]
    Database(BoxError),
    #[error(transparent)]
    Notifiers(BoxError),
    /// `[gitops]` cannot be set up.
    #[error("{0}")]
    Gitops(String),
    /// `[state]` cannot be used.
    #[error("{0}")]
    State(String),
}

/// The database side, when `[database]` is configured.
pub struct DbSetup {
    pub database: crate::db::Database,
    pub config: crate::db::config::DatabaseConfig,
    pub tool: Option<Arc<dyn crate::db::migrate::MigrationTool>>,
    pub revisions: crate::db::revisions::RevisionStore,
    pub backup_dir: PathBuf,
    /// `[database.backup_store]`: where every backup is copied.
    pub store: Option<Arc<crate::db::store::BackupStore>>,
}

/// The engine.
pub struct Engine {
    pub provider: Arc<dyn DeployProvider>,
    /// How the service's health endpoints are asked.
    pub health: Arc<dyn HealthProbe>,
    pub config: EngineConfig,
    verify: VerifyConfig,
    retention: Option<std::time::Duration>,
    history: HistoryStore,
    breaker: BreakerStore,
    journal: journal::JournalStore,
    state: Arc<dyn StateStore>,
    leadership: Leadership,
    /// The platform's deployment list, shared by guards, plan and call.
    listing: listing::Listing,
    /// Set on SIGTERM: a run stops between phases, its journal kept.
    stopping: std::sync::atomic::AtomicBool,
    /// Woken when a rollback starts: a drill running then is cancelled
    /// (a rollback never waits on a drill).
    drills_cancel: tokio::sync::Notify,
    /// A staging drill's engine: its runs are the drill's, not production's,
    /// so they leave production's rollback metrics, breaker gauge and
    /// rollback log lines alone.
    quiet: bool,
    base_url: Option<String>,
    pub db: Option<DbSetup>,
    notifiers: Option<Arc<crate::notify::Notifiers>>,
    gitops: Option<Arc<crate::gitops::Gitops>>,
    pub clock: Clock,
    /// Why a run journal cannot be read, while one cannot.
    unreadable: Standing,
    /// Why `[database.backup_store]` cannot be used, while it cannot.
    store_problem: Standing,
}

/// What an engine is built from; the command line assembles it from the
/// configuration (`cli::wiring`), tests from fakes.
pub struct EngineSetup {
    pub config: EngineConfig,
    pub verify: VerifyConfig,
    /// The provider's retention: older deployments cannot be rolled back to.
    pub retention: Option<std::time::Duration>,
    /// The service's base URL, for verification.
    pub base_url: Option<String>,
    pub db: Option<DbSetup>,
    pub notifiers: Option<Arc<crate::notify::Notifiers>>,
    /// `[gitops]`: a pull request after a verified rollback.
    pub gitops: Option<Arc<crate::gitops::Gitops>>,
    /// Where the state lives; `None`: the state directory (`config.state_dir`).
    pub state: Option<Arc<dyn StateStore>>,
    /// Whether this replica leads; `None`: a single instance, always.
    pub leadership: Option<Leadership>,
}

impl Engine {
    pub fn new(
        setup: EngineSetup,
        provider: Arc<dyn DeployProvider>,
    ) -> Result<Engine, EngineError> {
        let http = crate::verify::client().map_err(EngineError::HttpClient)?;
        let state = setup
            .state
            .clone()
            .unwrap_or_else(|| Arc::new(FileStore::new(StateDir::new(&setup.config.state_dir))));
        Ok(Engine {
            provider,
            health: Arc::new(http),
            history: HistoryStore::new(Doc::new(state.clone(), StateDir::HISTORY))
                .with_retention(setup.config.history.clone()),
            breaker: BreakerStore::new(Doc::new(state.clone(), StateDir::BREAKER)),
            journal: journal::JournalStore::new(state.clone()),
            state,
            leadership: setup.leadership.clone().unwrap_or_else(Leadership::alone),
            listing: listing::Listing::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            drills_cancel: tokio::sync::Notify::new(),
            quiet: false,
            config: setup.config,
            verify: setup.verify,
            retention: setup.retention,
            base_url: setup.base_url,
            db: setup.db,
            notifiers: setup.notifiers,
            gitops: setup.gitops,
            clock: Clock::system(),
            unreadable: Standing::default(),
            store_problem: Standing::default(),
        })
    }

    /// The same engine asking health endpoints through `health` and reading
    /// the time from `clock` (tests use fakes and tokio's paused clock).
    pub fn with_parts(mut self, health: Arc<dyn HealthProbe>, clock: Clock) -> Engine {
        self.health = health;
        self.clock = clock;
        self
    }

    /// The notifiers, for the dispatcher and the CLI's final flush.
    pub fn notifiers(&self) -> Option<&Arc<crate::notify::Notifiers>> {
        self.notifiers.as_ref()
    }

    /// Queues a notification (never waits for it).
    pub fn notify(&self, n: crate::notify::Notification) {
        if let Some(notifiers) = &self.notifiers {
            notifiers.send(n);
        }
    }

    /// Records the live deployment's schema revision (the daemon calls this
    /// periodically, so a later rollback knows what its target expects).
    pub async fn record_revision(&self) -> Result<Option<(String, String)>, BoxError> {
        let Some(db) = &self.db else { return Ok(None) };
        let Some(tool) = &db.tool else {
            return Ok(None);
        };
        let list = self.provider.list(10).await?;
        let Some(live) = list.iter().find(|d| d.is_success()).cloned() else {
            return Ok(None);
        };
        // While a newer deployment is on its way, its migrations may already
        // have run: the database no longer says what `live` runs.
        if list
            .iter()
            .any(|d| d.created_at > live.created_at && !d.has_failed() && !d.is_success())
        {
            return Ok(None);
        }
        let Some(revision) = tool.current(&db.database).await? else {
            return Ok(None);
        };
        if db.revisions.record(&live.id, &revision)? {
            tracing::info!(deployment = %live.id, revision = %revision, "recorded the deployment's schema revision");
        }
        Ok(Some((live.id, revision)))
    }

    /// Asks a running rollback to stop after the step it is in (SIGTERM):
    /// its journal is kept and the next start settles it.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn history(&self) -> &HistoryStore {
        &self.history
    }

    /// How long a rollback should take, and from what: the median of the
    /// last 20 successful rollbacks that reached production, or, with none
    /// recorded, the phase budgets' sum (the most it can take).
    pub fn estimated_duration(&self) -> (f64, String) {
        let mut past: Vec<f64> = self
            .history
            .load()
            .map(|h| h.events)
            .unwrap_or_default()
            .iter()
            .rev()
            .filter(|e| e.is_rollback() && e.success && e.touched_production())
            .map(|e| e.duration_seconds)
            .take(20)
            .collect();
        if past.is_empty() {
            let b = &self.config.budgets;
            let most = [
                b.pre_validation,
                b.database,
                b.application,
                b.verification,
                b.post_rollback,
            ]
            .iter()
            .sum::<std::time::Duration>();
            return (
                most.as_secs_f64(),
                "at most: the phase budgets; no rollback recorded yet".into(),
            );
        }
        past.sort_by(f64::total_cmp);
        let n = past.len();
        let median = if n % 2 == 1 {
            past[n / 2]
        } else {
            (past[n / 2 - 1] + past[n / 2]) / 2.0
        };
        (
            median,
            format!("the median of the last {n} successful rollback(s)"),
        )
    }

    /// The engine of a staging drill: see [`Engine::quiet`]'s field.
    pub fn quiet(mut self) -> Engine {
        self.quiet = true;
        self
    }

    /// Cancels the drill running now, if any (rollbackd is stopping).
    pub fn cancel_drills(&self) {
        self.drills_cancel.notify_waiters();
    }

    /// Resolves when a rollback starts after this was called (enable the
    /// future before the work it guards).
    pub fn rollback_started(&self) -> tokio::sync::futures::Notified<'_> {
        self.drills_cancel.notified()
    }

    /// The service's base URL from the configuration, if any.
    pub fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
    }

    /// How the service is verified.
    pub fn verify_config(&self) -> &VerifyConfig {
        &self.verify
    }

    pub fn breaker(&self) -> &BreakerStore {
        &self.breaker
    }

    /// Where the state lives.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// Whether this replica acts: a single instance always does; beside
    /// several replicas sharing PostgreSQL, only the leader.
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The unfinished runs' journals, read; a journal that cannot be read
    /// is said once (an ERROR, `rollbackd_journals_unreadable` 1, `/readyz`)
    /// and from then on stops every new rollback (`unreadable_journal`)
    /// until it reads again or is quarantined (`rollbackd state
    /// quarantine`). Once a corrupt journal appearing under a running
    /// `watch` went unnoticed and the next rollback went ahead.
    pub fn unfinished(&self) -> Result<Vec<journal::Journal>, journal::JournalError> {
        let read = self.journal.unfinished();
        // A state store that cannot be reached says nothing about the
        // journals: what was said of them stands until they can be read.
        if read
            .as_ref()
            .is_err_and(journal::JournalError::is_unreachable)
        {
            return read;
        }
        let problem = read.as_ref().err().map(ToString::to_string);
        events::journals_readable(problem.is_none());
        match self.unreadable.set(problem) {
            Change::Now(why) => tracing::error!(
                error = %why,
                "a run journal cannot be read: no rollback starts until it is repaired or quarantined (`rollbackd state journals`, then `rollbackd state quarantine ID`)"
            ),
            Change::Cleared => tracing::warn!("the run journals read again: rollbacks can start"),
            Change::Same => {}
        }
        read
    }

    /// Records whether the backup store can be used (`watch` looks at
    /// start and every 15 minutes): a WARN when it turns unusable (every
    /// emergency backup then stays on this machine), `rollbackd_backup_store_usable`
    /// and `/readyz`.
    pub fn set_store_problem(&self, problem: Option<String>) {
        events::backup_store_usable(problem.is_none());
        match self.store_problem.set(problem) {
            Change::Now(why) => tracing::warn!(
                error = %why,
                "the backup store cannot be used: emergency backups stay on this machine until it can (check the bucket and the AWS_* credentials; `rollbackd check`)"
            ),
            Change::Cleared => tracing::info!("the backup store can be used again"),
            Change::Same => {}
        }
    }

    /// Why the backup store cannot be used, as last seen.
    pub fn store_problem(&self) -> Option<String> {
        self.store_problem.get()
    }

    /// Why a run journal cannot be read, as last seen.
    pub fn unreadable_journal(&self) -> Option<String> {
        self.unreadable.get()
    }

    /// The rollback lock, if no rollback (here or in the CLI) holds it.
    pub fn try_lock(&self) -> Option<StateLock> {
        self.state.try_lock().ok().flatten()
    }

    /// The breaker's state now.
    pub fn breaker_state(&self, now: SystemTime) -> BreakerState {
        let state = self.breaker.state(now, self.config.half_open_after);
        if !self.quiet {
            events::breaker_state(state.gauge());
        }
        state
    }

    /// Whether an automatic rollback may start now.
    pub async fn check_automatic(&self, now: SystemTime) -> Result<Deployment, Blocked> {
        let listed = self.deployments().await.map_err(|e| Blocked {
            guard: guard::Guard::Provider,
            reason: format!("cannot list deployments to check the guards: {e}"),
        })?;
        let current = listed
            .deployments
            .iter()
            .find(|d| d.is_success())
            .cloned()
            .ok_or_else(|| Blocked {
                guard: guard::Guard::Provider,
                reason: "no deployment is live (none has status SUCCESS)".into(),
            })?;
        let history = self.history.load().map_err(|e| Blocked {
            guard: guard::Guard::History,
            reason: e.to_string(),
        })?;
        guard::check_automatic(&guard::GuardInput {
            now,
            current: &current,
            history: &history,
            breaker: self.breaker_state(now),
            config: &self.config,
        })?;
        Ok(current)
    }

    /// Records a refused rollback in the history, when no rollback holds the lock.
    pub fn record_blocked(&self, req: &RollbackRequest, blocked: &Blocked) {
        events::rollback_blocked(
            req.trigger.label(),
            req.policy_label(),
            blocked.guard,
            &blocked.reason,
        );
        let Some(_lock) = self.try_lock() else {
            return;
        };
        let event = Event {
            kind: EventKind::Blocked,
            id: Some(new_id("rb")),
            timestamp: crate::clock::millis(self.clock.now()),
            trigger: req.trigger.kind(),
            reason: req.reason.clone(),
            policy: Some(req.policy_label().into()),
            rules: req.trigger.rules().to_vec(),
            error: Some(format!("{}: {}", blocked.guard, blocked.reason)),
            blame: req.blame.clone(),
            ..Event::default()
        };
        if let Err(e) = self.history.append(event, None) {
            tracing::error!(error = %e, "cannot record the refused rollback");
        }
        // Only refusals worth recording reach people: one while a rollback
        // runs (the lock is held) is part of that rollback's incident.
        let mut n = crate::notify::Notification::new(
            crate::notify::NotifyEvent::RollbackBlocked,
            format!(
                "rollback refused by the {} guard: {}",
                blocked.guard, blocked.reason
            ),
        );
        n.rules = req.trigger.rules().to_vec();
        n.policy = Some(req.policy_label().to_string());
        n.outcome = Some(format!("not rolled back: {}", blocked.reason));
        n.blame = req.blame.clone();
        self.notify(n);
    }
}
