//! The rollback engine: five phases, each with a time budget, each returning
//! its outcome as data; the engine, not the phase, decides what follows.
//!
//! 1. pre-validation: pick the target, (database backup), take the rollback
//!    lock, open the deploy breaker;
//! 2. database (skipped until a migration tool is configured, or with --skip-db);
//! 3. application: ask the platform to roll back, follow the new deployment
//!    until it succeeds, wait for the service to answer /health;
//! 4. verification: the health phases;
//! 5. post-rollback: record history and last-known-good, settle the breaker.
//!
//! It must never act twice for one request, never roll back without a lock,
//! and never lose the record of what it did.

pub mod breaker;
pub mod dispatch;
pub mod guard;
pub mod pending;
pub mod target;

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::{Config, EngineConfig, ProviderConfig, VerifyConfig};
use crate::history::{Event, HistoryStore, LastKnownGood, PhaseRecord, RuleTrigger, StateLock};
use crate::provider::{command::CommandProvider, railway::Railway, DeployProvider, Deployment};
use crate::rules::duration::format as fmt_duration;
use crate::rules::Policy;
use crate::telemetry::events;
use crate::verify::{self, Verification};

pub use breaker::{BreakerState, BreakerStore};
pub use guard::Blocked;

/// The five phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    PreValidation,
    Database,
    Application,
    Verification,
    PostRollback,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::PreValidation,
        Phase::Database,
        Phase::Application,
        Phase::Verification,
        Phase::PostRollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreValidation => "pre_validation",
            Phase::Database => "database",
            Phase::Application => "application",
            Phase::Verification => "verification",
            Phase::PostRollback => "post_rollback",
        }
    }

    fn budget(self, c: &EngineConfig) -> Duration {
        let b = &c.budgets;
        match self {
            Phase::PreValidation => b.pre_validation,
            Phase::Database => b.database,
            Phase::Application => b.application,
            Phase::Verification => b.verification,
            Phase::PostRollback => b.post_rollback,
        }
    }
}

/// What a phase reports.
#[derive(Debug, Clone, PartialEq)]
pub enum PhaseOutcome {
    Succeeded(String),
    Failed(String),
    Skipped(String),
}

impl PhaseOutcome {
    pub fn result(&self) -> &'static str {
        match self {
            PhaseOutcome::Succeeded(_) => "succeeded",
            PhaseOutcome::Failed(_) => "failed",
            PhaseOutcome::Skipped(_) => "skipped",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            PhaseOutcome::Succeeded(d) | PhaseOutcome::Failed(d) | PhaseOutcome::Skipped(d) => d,
        }
    }
}

/// What started a rollback.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// An operator, from the CLI or the API.
    Manual,
    /// Firing rules.
    Rules(Vec<RuleTrigger>),
    /// Alerts delivered by Alertmanager.
    Alertmanager(Vec<RuleTrigger>),
}

impl Trigger {
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Rules(_) => "rule",
            Trigger::Alertmanager(_) => "alertmanager",
        }
    }

    pub fn rules(&self) -> &[RuleTrigger] {
        match self {
            Trigger::Manual => &[],
            Trigger::Rules(r) | Trigger::Alertmanager(r) => r,
        }
    }
}

/// A request to roll back.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    pub trigger: Trigger,
    pub policy: Policy,
    pub reason: String,
    pub deployment_id: Option<String>,
    pub skip_db: bool,
    pub base_url: Option<String>,
    /// The pending confirmation this rollback was approved from.
    pub pending_id: Option<String>,
}

/// Everything a rollback would do, decided before anything is done.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub current: Deployment,
    pub target: Deployment,
    pub base_url: String,
    pub backup: String,
    pub database: String,
    /// The schema revision the database is at now, when known.
    pub current_revision: Option<String>,
    /// The exact downgrade SQL, when a downgrade is planned (or was refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_sql: Option<String>,
    pub health_checks: Vec<String>,
    #[serde(skip)]
    db_step: DbStep,
}

/// What the database phase will do.
#[derive(Debug, Clone, Default)]
enum DbStep {
    #[default]
    Nothing,
    /// Leave the database alone, for this reason; the run goes on.
    Skip(String),
    /// Stop the run before the application rollback, for this reason.
    Stop(String),
    Downgrade {
        from: String,
        to: String,
    },
}

/// The database side, when `[database]` is configured.
pub struct DbSetup {
    pub database: crate::db::Database,
    pub config: crate::config::DatabaseConfig,
    pub tool: Option<Arc<dyn crate::db::migrate::MigrationTool>>,
    pub revisions: crate::db::revisions::RevisionStore,
    pub backup_dir: PathBuf,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let describe = |d: &Deployment| {
            let mut s = format!("{} ({}", d.id, d.status);
            if let Some(sha) = &d.git_sha {
                s.push_str(&format!(", {sha}"));
            }
            s.push_str(&format!(
                ", created {})",
                humantime::format_rfc3339_seconds(d.created_at)
            ));
            s
        };
        writeln!(f, "  live now:     {}", describe(&self.current))?;
        writeln!(f, "  roll back to: {}", describe(&self.target))?;
        writeln!(f, "  backup:       {}", self.backup)?;
        writeln!(f, "  database:     {}", self.database)?;
        if let Some(sql) = &self.database_sql {
            for line in sql.lines().filter(|l| !l.trim().is_empty()) {
                writeln!(f, "    | {line}")?;
            }
        }
        writeln!(f, "  verify at:    {}", self.base_url)?;
        for check in &self.health_checks {
            writeln!(f, "    {check}")?;
        }
        Ok(())
    }
}

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
    pub phases: Vec<(Phase, PhaseOutcome, Duration)>,
    pub error: Option<String>,
    pub duration: Duration,
    /// Time spent waiting on the platform, the service and pauses: the rest
    /// of `duration` is rollbackd's own overhead.
    pub waiting: Duration,
    pub verification: Option<Verification>,
    pub event: Event,
}

/// A fresh id like `rb-1a2b3c4d5e6f`.
pub fn new_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 40))
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    format!("{prefix}-{:012x}", mixed & 0xffff_ffff_ffff)
}

/// The engine.
pub struct Engine {
    pub provider: Arc<dyn DeployProvider>,
    http: reqwest::Client,
    pub config: EngineConfig,
    verify: VerifyConfig,
    retention: Option<Duration>,
    history: HistoryStore,
    breaker: BreakerStore,
    lock_path: PathBuf,
    base_url: Option<String>,
    pub db: Option<DbSetup>,
    notifiers: Option<Arc<crate::notify::Notifiers>>,
}

/// Builds the configured provider.
pub fn provider_from_config(config: &Config) -> Result<Arc<dyn DeployProvider>, String> {
    match &config.provider {
        None => Err(
            "no [provider] is configured; set provider.type = \"railway\" or \"command\"".into(),
        ),
        Some(ProviderConfig::Railway(r)) => Ok(Arc::new(Railway::new(r)?)),
        Some(ProviderConfig::Command(c)) => Ok(Arc::new(CommandProvider::new(c))),
    }
}

impl Engine {
    pub fn new(config: &Config, provider: Arc<dyn DeployProvider>) -> Result<Engine, String> {
        let http = verify::client().map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let dir = &config.engine.state_dir;
        Ok(Engine {
            provider,
            http,
            config: config.engine.clone(),
            verify: config.verify.clone(),
            retention: config.provider.as_ref().and_then(ProviderConfig::retention),
            history: HistoryStore::new(dir.join("history.json")),
            breaker: BreakerStore::new(dir.join("breaker.json")),
            lock_path: dir.join("rollback.lock"),
            base_url: config.service.base_url.clone(),
            db: match &config.database {
                None => None,
                Some(db) => Some(DbSetup {
                    database: crate::db::Database::from_config(db)?,
                    config: db.clone(),
                    tool: config.migrations.as_ref().map(|m| {
                        Arc::new(crate::db::migrate::Alembic {
                            command: m.command.clone(),
                            config: m.config.clone(),
                            working_dir: m.working_dir.clone(),
                            timeout: m.timeout,
                        }) as Arc<dyn crate::db::migrate::MigrationTool>
                    }),
                    revisions: crate::db::revisions::RevisionStore::new(dir.join("revisions.json")),
                    backup_dir: db.backup_dir.clone().unwrap_or_else(|| dir.join("backups")),
                }),
            },
            notifiers: if config.notifiers.is_empty() {
                None
            } else {
                Some(crate::notify::Notifiers::from_config(
                    &config.notifiers,
                    &config.service,
                )?)
            },
        })
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

    fn run_notification(
        &self,
        event: crate::notify::NotifyEvent,
        id: &str,
        req: &RollbackRequest,
        plan: Option<&Plan>,
        summary: String,
    ) -> crate::notify::Notification {
        let mut n = crate::notify::Notification::new(event, summary);
        n.rollback_id = Some(id.to_string());
        n.pending_id = req.pending_id.clone();
        n.rules = req.trigger.rules().to_vec();
        n.policy = Some(req.policy.as_str().to_string());
        n.target_deployment = plan.map(|p| p.target.id.clone());
        n.from_deployment = plan.map(|p| p.current.id.clone());
        n
    }

    /// Records the live deployment's schema revision (the daemon calls this
    /// periodically, so a later rollback knows what its target expects).
    pub async fn record_revision(&self) -> Result<Option<(String, String)>, String> {
        let Some(db) = &self.db else { return Ok(None) };
        let Some(tool) = &db.tool else {
            return Ok(None);
        };
        let list = self.provider.list(10).await.map_err(|e| e.to_string())?;
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
        let Some(revision) = tool
            .current(&db.database)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        if db.revisions.record(&live.id, &revision)? {
            tracing::info!(deployment = %live.id, revision = %revision, "recorded the deployment's schema revision");
        }
        Ok(Some((live.id, revision)))
    }

    /// Decides what the database phase will do; reads, never writes.
    /// Returns the step, the database's current revision and the downgrade
    /// SQL, when known.
    async fn plan_database(
        &self,
        req: &RollbackRequest,
        target: &Deployment,
    ) -> (DbStep, Option<String>, Option<String>) {
        let skip = |why: &str| (DbStep::Skip(why.to_string()), None, None);
        if req.skip_db {
            return skip("--skip-db");
        }
        let Some(db) = &self.db else {
            return skip("no database is configured");
        };
        let Some(tool) = &db.tool else {
            return skip("no migration tool is configured");
        };
        let current = match tool.current(&db.database).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return skip("the database has no alembic_version (not under migration control)")
            }
            Err(e) => {
                return (
                    DbStep::Stop(format!("cannot read the schema revision: {e}")),
                    None,
                    None,
                )
            }
        };
        let Some(wanted) = db.revisions.get(&target.id) else {
            let why = format!(
                "no schema revision is recorded for deployment {} (rollbackd records each deployment's revision while it watches); the database stays at {current}",
                target.id
            );
            return (DbStep::Skip(why), Some(current), None);
        };
        if wanted == current {
            let why = format!(
                "already at revision {current}, the one deployment {} ran",
                target.id
            );
            return (DbStep::Skip(why), Some(current), None);
        }
        let sql = match tool.downgrade_sql(&db.database, &current, &wanted).await {
            Ok(sql) => sql,
            Err(e) => {
                let why = format!("cannot obtain the downgrade SQL {current} -> {wanted}: {e}");
                return (DbStep::Stop(why), Some(current), None);
            }
        };
        let destructive = crate::db::migrate::destructive_statements(&sql);
        let step = if !destructive.is_empty() && !db.config.allow_destructive {
            let why = format!(
                "the downgrade {current} -> {wanted} is destructive ({}); the database stays at {current} \
                 (database.allow_destructive allows it)",
                destructive.join("; ")
            );
            if db.config.app_only_if_skipped {
                DbStep::Skip(why)
            } else {
                DbStep::Stop(format!(
                    "{why}, and database.app_only_if_skipped is false, so the application is not rolled back either"
                ))
            }
        } else {
            DbStep::Downgrade {
                from: current.clone(),
                to: wanted,
            }
        };
        (step, Some(current), Some(sql))
    }

    /// The plan's one-line account of the database phase.
    fn database_summary(&self, step: &DbStep) -> String {
        match step {
            DbStep::Nothing => "nothing planned".into(),
            DbStep::Skip(why) => format!("skipped: {why}"),
            DbStep::Stop(why) => format!("STOPS the rollback: {why}"),
            DbStep::Downgrade { from, to } => format!(
                "alembic downgrade {from} -> {to} under advisory lock {}",
                self.db.as_ref().map_or(0, |d| d.config.lock_key)
            ),
        }
    }

    /// Phase 2.
    async fn database_phase(&self, plan: &Plan) -> (PhaseOutcome, Duration) {
        let (from, to) = match &plan.db_step {
            DbStep::Nothing => {
                return (
                    PhaseOutcome::Skipped("nothing planned".into()),
                    Duration::ZERO,
                )
            }
            DbStep::Skip(why) => return (PhaseOutcome::Skipped(why.clone()), Duration::ZERO),
            DbStep::Stop(why) => return (PhaseOutcome::Failed(why.clone()), Duration::ZERO),
            DbStep::Downgrade { from, to } => (from, to),
        };
        let (Some(db), Some(tool)) = (&self.db, self.db.as_ref().and_then(|d| d.tool.as_ref()))
        else {
            return (
                PhaseOutcome::Failed("no database is configured".into()),
                Duration::ZERO,
            );
        };
        let mut waited = Duration::ZERO;
        let lock_wait = (Phase::Database.budget(&self.config) / 2).max(Duration::from_secs(1));
        let lock = match timed(
            &mut waited,
            crate::db::MigrationLock::acquire(&db.database, db.config.lock_key, lock_wait),
        )
        .await
        {
            Ok(lock) => lock,
            Err(e) => {
                return (
                    PhaseOutcome::Failed(format!(
                        "{e}; nothing was changed, the database is at {from}"
                    )),
                    waited,
                )
            }
        };
        let result = timed(
            &mut waited,
            tool.downgrade(&db.database, to, db.config.statement_timeout),
        )
        .await;
        let now_at = timed(&mut waited, tool.current(&db.database)).await;
        lock.release().await;
        let state = match &now_at {
            Ok(Some(rev)) => format!("the database is at revision {rev}"),
            Ok(None) => "the database has no alembic_version now".into(),
            Err(e) => format!("its revision cannot be read: {e}"),
        };
        let outcome = match (result, now_at) {
            (Err(e), _) => {
                PhaseOutcome::Failed(format!("the downgrade {from} -> {to} failed: {e}; {state}"))
            }
            (Ok(()), Ok(Some(rev))) if &rev == to => PhaseOutcome::Succeeded(format!(
                "downgraded {from} -> {to}; alembic_version verified"
            )),
            (Ok(()), _) => PhaseOutcome::Failed(format!(
                "after the downgrade to {to}, {state}; the application is not rolled back"
            )),
        };
        (outcome, waited)
    }

    /// Pre-validation's backup step: `Ok(detail)` or, when backups are
    /// required, `Err(reason)`.
    async fn backup(
        &self,
        id: &str,
        plan: &Plan,
        reason: &str,
        extra: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, String> {
        let Some(db) = &self.db else {
            return Ok(plan.backup.clone());
        };
        if plan.backup.starts_with("skipped") {
            return Ok(plan.backup.clone());
        }
        let tools = crate::db::backup::Tools {
            pg_dump: db.config.pg_dump.clone(),
            pg_restore: db.config.pg_restore.clone(),
        };
        let budget = Phase::PreValidation.budget(&self.config) * 2 / 3;
        let taken = tokio::time::timeout(
            budget,
            crate::db::backup::take(
                &db.database,
                &tools,
                &db.backup_dir,
                id,
                &plan.current.id,
                reason,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "pg_dump did not finish within {} (two thirds of the pre-validation budget)",
                fmt_duration(budget)
            ))
        });
        match taken {
            Ok(backup) => {
                crate::db::backup::prune(&db.backup_dir, db.config.keep_backups);
                let detail = format!(
                    "backup {} ({} bytes, sha256 {}) verified; restore with: {}",
                    backup.path.display(),
                    backup.size_bytes,
                    &backup.sha256[..12],
                    backup.restore_command
                );
                extra.insert(
                    "backup".into(),
                    serde_json::to_value(&backup).unwrap_or_default(),
                );
                Ok(detail)
            }
            Err(e) if db.config.backup_required => Err(format!(
                "the emergency backup failed: {e} (database.backup_required is set)"
            )),
            Err(e) => {
                tracing::warn!(error = %e, "emergency backup failed; going on without one (database.backup_required is not set)");
                extra.insert(
                    "backup_warning".into(),
                    serde_json::Value::String(e.clone()),
                );
                Ok(format!("WARNING: the emergency backup failed: {e}"))
            }
        }
    }

    pub fn from_config(config: &Config) -> Result<Engine, String> {
        Engine::new(config, provider_from_config(config)?)
    }

    pub fn history(&self) -> &HistoryStore {
        &self.history
    }

    pub fn breaker(&self) -> &BreakerStore {
        &self.breaker
    }

    /// The rollback lock, if no rollback (here or in the CLI) holds it.
    pub fn try_lock(&self) -> Option<StateLock> {
        StateLock::try_acquire(&self.lock_path).ok().flatten()
    }

    /// The breaker's state now.
    pub fn breaker_state(&self, now: SystemTime) -> BreakerState {
        let state = self.breaker.state(now, self.config.half_open_after);
        metrics::gauge!("rollbackd_breaker_state").set(state.gauge());
        state
    }

    /// Decides target, database steps and checks without changing anything.
    pub async fn plan(&self, req: &RollbackRequest) -> Result<Plan, String> {
        let deployments = self
            .provider
            .list(50)
            .await
            .map_err(|e| format!("cannot list deployments: {e}"))?;
        let requested = match &req.deployment_id {
            None => None,
            Some(id) => Some(match deployments.iter().find(|d| &d.id == id) {
                Some(d) => d.clone(),
                None => self.provider.status(id).await.map_err(|e| e.to_string())?,
            }),
        };
        let history = self.history.load().map_err(|e| e.to_string())?;
        let moved_away: BTreeSet<String> = history
            .events
            .iter()
            .filter(|e| e.is_rollback() && e.touched_production())
            .filter_map(|e| e.from_deployment_id.clone())
            .collect();
        let selection = target::select(
            &deployments,
            requested.as_ref(),
            &moved_away,
            SystemTime::now(),
            self.retention,
        )?;
        let base_url = req
            .base_url
            .clone()
            .or_else(|| self.base_url.clone())
            .ok_or("no service base URL to verify against: set [service] base_url, ROLLBACK_BASE_URL, or pass --base-url")?;
        let health_checks = self
            .verify
            .phases
            .iter()
            .map(|p| {
                format!(
                    "{}: {} ({})",
                    p.name,
                    p.endpoints.join(", "),
                    if p.min_healthy >= 1.0 {
                        "all must pass".to_string()
                    } else {
                        format!("{:.0} % must pass", p.min_healthy * 100.0)
                    }
                )
            })
            .collect();
        let (db_step, current_revision, database_sql) =
            self.plan_database(req, &selection.target).await;
        let database = self.database_summary(&db_step);
        let backup = match &self.db {
            _ if req.skip_db => "skipped: --skip-db".to_string(),
            None => "skipped: no database is configured".to_string(),
            Some(db) => format!(
                "pg_dump of {} into {} ({})",
                db.database.target,
                db.backup_dir.display(),
                if db.config.backup_required {
                    "required"
                } else {
                    "a failure is a warning"
                }
            ),
        };
        Ok(Plan {
            current: selection.current,
            target: selection.target,
            base_url: base_url.trim_end_matches('/').to_string(),
            backup,
            database,
            current_revision,
            database_sql,
            health_checks,
            db_step,
        })
    }

    /// Whether an automatic rollback may start now.
    pub async fn check_automatic(&self, now: SystemTime) -> Result<Deployment, Blocked> {
        let deployments = self.provider.list(50).await.map_err(|e| Blocked {
            guard: "provider",
            reason: format!("cannot list deployments to check the guards: {e}"),
        })?;
        let current = deployments
            .iter()
            .find(|d| d.is_success())
            .cloned()
            .ok_or_else(|| Blocked {
                guard: "provider",
                reason: "no deployment is live (none has status SUCCESS)".into(),
            })?;
        let history = self.history.load().map_err(|e| Blocked {
            guard: "history",
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
            req.policy.as_str(),
            blocked.guard,
            &blocked.reason,
        );
        let Ok(Some(_lock)) = StateLock::try_acquire(&self.lock_path) else {
            return;
        };
        let event = Event {
            kind: "blocked".into(),
            id: Some(new_id("rb")),
            timestamp: breaker::now_text(SystemTime::now()),
            trigger: req.trigger.label().into(),
            reason: req.reason.clone(),
            policy: Some(req.policy.as_str().into()),
            rules: req.trigger.rules().to_vec(),
            error: Some(format!("{}: {}", blocked.guard, blocked.reason)),
            ..Event::default()
        };
        if let Err(e) = self.history.append(event, None) {
            tracing::error!(error = %e, "cannot record the refused rollback");
        }
    }

    /// Runs a rollback through all five phases.
    pub async fn run(
        &self,
        req: RollbackRequest,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> RunReport {
        self.run_with_id(new_id("rb"), req, progress).await
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
        self.run_as(id, req, progress).instrument(span).await
    }

    async fn run_as(
        &self,
        id: String,
        req: RollbackRequest,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> RunReport {
        let started_at = SystemTime::now();
        let t0 = Instant::now();
        let mut waiting = Duration::ZERO;
        let mut phases: Vec<(Phase, PhaseOutcome, Duration)> = Vec::new();
        progress(Progress::Started { id: id.clone() });
        events::rollback_started(&id, req.trigger.label(), req.policy.as_str(), &req.reason);

        // 1. Pre-validation.
        let mut lock = None;
        let mut plan = None;
        let mut breaker_opened = false;
        let mut extra = serde_json::Map::new();
        let outcome = self
            .phase(Phase::PreValidation, progress, &mut phases, async {
                let mut waited = Duration::ZERO;
                let l = match StateLock::try_acquire(&self.lock_path) {
                    Ok(Some(l)) => l,
                    Ok(None) => {
                        let why = "another rollback is running (the rollback lock is held)";
                        return (PhaseOutcome::Failed(why.into()), waited);
                    }
                    Err(e) => {
                        let why = format!(
                            "cannot take the rollback lock {}: {e}",
                            self.lock_path.display()
                        );
                        return (PhaseOutcome::Failed(why), waited);
                    }
                };
                let p = match timed(&mut waited, self.plan(&req)).await {
                    Ok(p) => p,
                    Err(e) => return (PhaseOutcome::Failed(e), waited),
                };
                progress(Progress::Note(format!("plan:\n{p}")));
                if let (Some(db), Some(rev)) = (&self.db, &p.current_revision) {
                    if let Err(e) = db.revisions.record(&p.current.id, rev) {
                        tracing::warn!(error = %e, "cannot record the live deployment's revision");
                    }
                }
                // From here on the run is recorded in the history, even if it stops.
                lock = Some(l);
                let backup =
                    timed(&mut waited, self.backup(&id, &p, &req.reason, &mut extra)).await;
                let target = p.target.id.clone();
                let live = p.current.id.clone();
                plan = Some(p);
                let backup = match backup {
                    Ok(detail) => detail,
                    Err(why) => return (PhaseOutcome::Failed(why), waited),
                };
                progress(Progress::Note(backup.clone()));
                let reason = format!("rollback {id} running: {}", req.reason);
                if let Err(e) = self.breaker.open(SystemTime::now(), &id, &reason) {
                    return (
                        PhaseOutcome::Failed(format!("cannot open the deploy breaker: {e}")),
                        waited,
                    );
                }
                breaker_opened = true;
                self.breaker_state(SystemTime::now());
                let detail =
                    format!("target {target} (live: {live}); {backup}; deploy breaker OPEN");
                (PhaseOutcome::Succeeded(detail), waited)
            })
            .await;
        waiting += outcome.1;

        let mut verification = None;
        let mut new_deployment = None;
        let pre_ok = matches!(outcome.0, PhaseOutcome::Succeeded(_));
        if pre_ok {
            let summary = match &plan {
                Some(p) => format!(
                    "rolling back {} -> {}: {}",
                    p.current.id, p.target.id, req.reason
                ),
                None => req.reason.clone(),
            };
            self.notify(self.run_notification(
                crate::notify::NotifyEvent::RollbackStarted,
                &id,
                &req,
                plan.as_ref(),
                summary,
            ));
        }
        match (&plan, pre_ok) {
            (Some(plan), true) => {
                // 2. Database.
                let (db, waited) = self
                    .phase(
                        Phase::Database,
                        progress,
                        &mut phases,
                        self.database_phase(plan),
                    )
                    .await;
                waiting += waited;

                // 3. Application.
                let (app, waited) = if matches!(db, PhaseOutcome::Failed(_)) {
                    let skipped = PhaseOutcome::Skipped(
                        "the database phase failed; the application was not rolled back".into(),
                    );
                    self.record_phase(
                        Phase::Application,
                        progress,
                        &mut phases,
                        skipped.clone(),
                        Duration::ZERO,
                    );
                    (skipped, Duration::ZERO)
                } else {
                    self.phase(
                        Phase::Application,
                        progress,
                        &mut phases,
                        self.application(plan, progress, &mut new_deployment),
                    )
                    .await
                };
                waiting += waited;

                // 4. Verification.
                if matches!(app, PhaseOutcome::Succeeded(_)) {
                    let (report, waited) = self.verification(plan, progress, &mut phases).await;
                    verification = Some(report);
                    waiting += waited;
                } else {
                    self.record_phase(
                        Phase::Verification,
                        progress,
                        &mut phases,
                        PhaseOutcome::Skipped("the application rollback did not succeed".into()),
                        Duration::ZERO,
                    );
                }
            }
            _ => {
                for phase in [Phase::Database, Phase::Application, Phase::Verification] {
                    self.record_phase(
                        phase,
                        progress,
                        &mut phases,
                        PhaseOutcome::Skipped("pre-validation failed; nothing was changed".into()),
                        Duration::ZERO,
                    );
                }
            }
        }

        let success = phases
            .iter()
            .all(|(_, o, _)| !matches!(o, PhaseOutcome::Failed(_)))
            && phases.iter().any(|(p, o, _)| {
                *p == Phase::Verification && matches!(o, PhaseOutcome::Succeeded(_))
            });
        let error = phases.iter().find_map(|(p, o, _)| match o {
            PhaseOutcome::Failed(why) => Some(format!("{}: {why}", p.as_str())),
            _ => None,
        });

        // 5. Post-rollback: always recorded once the lock was taken.
        let mut event = self.event(
            &id,
            &req,
            plan.as_ref(),
            started_at,
            &phases,
            success,
            error.clone(),
            t0.elapsed(),
        );
        event.extra.extend(extra);
        event.created_deployment_id = new_deployment.clone();
        if lock.is_some() {
            let post_started = Instant::now();
            let outcome = self
                .post(
                    &mut event,
                    plan.as_ref(),
                    success,
                    breaker_opened,
                    t0,
                    &phases,
                )
                .await;
            self.record_phase(
                Phase::PostRollback,
                progress,
                &mut phases,
                outcome,
                post_started.elapsed(),
            );
        } else {
            self.record_phase(
                Phase::PostRollback,
                progress,
                &mut phases,
                PhaseOutcome::Skipped("nothing to record: no rollback ran".into()),
                Duration::ZERO,
            );
        }
        event.phases = phase_records(&phases);
        drop(lock);
        let duration = t0.elapsed();
        if pre_ok || lock_was_taken(&phases) {
            let (event_kind, summary, outcome) = if success {
                (
                    crate::notify::NotifyEvent::RollbackSucceeded,
                    format!(
                        "rolled back and verified healthy in {:.1} s: {}",
                        duration.as_secs_f64(),
                        req.reason
                    ),
                    "succeeded; the service is verified healthy".to_string(),
                )
            } else {
                (
                    crate::notify::NotifyEvent::RollbackFailed,
                    format!(
                        "rollback failed: {}",
                        error.as_deref().unwrap_or("unknown error")
                    ),
                    {
                        let mut outcome = format!(
                            "failed: {}; the deploy breaker stays OPEN",
                            error.as_deref().unwrap_or("unknown error")
                        );
                        // The new code may now run on the old schema: say so loudly.
                        if let Some((_, PhaseOutcome::Succeeded(detail), _)) =
                            phases.iter().find(|(p, _, _)| *p == Phase::Database)
                        {
                            outcome.push_str(&format!(
                                "; NOTE the database phase already ran ({detail})"
                            ));
                            if let Some(cmd) = event
                                .extra
                                .get("backup")
                                .and_then(|b| b["restore_command"].as_str())
                            {
                                outcome.push_str(&format!(
                                    "; the emergency backup restores it: {cmd}"
                                ));
                            }
                        }
                        outcome
                    },
                )
            };
            let mut n = self.run_notification(event_kind, &id, &req, plan.as_ref(), summary);
            n.duration_seconds = Some(round3(duration.as_secs_f64()));
            n.outcome = Some(outcome);
            self.notify(n);
        }
        events::rollback_finished(
            &id,
            req.trigger.label(),
            req.policy.as_str(),
            success,
            duration,
            error.as_deref(),
        );
        RunReport {
            id,
            success,
            plan,
            phases,
            error,
            duration,
            waiting,
            verification,
            event,
        }
    }

    fn event(
        &self,
        id: &str,
        req: &RollbackRequest,
        plan: Option<&Plan>,
        started_at: SystemTime,
        phases: &[(Phase, PhaseOutcome, Duration)],
        success: bool,
        error: Option<String>,
        elapsed: Duration,
    ) -> Event {
        Event {
            kind: "rollback".into(),
            id: Some(id.to_string()),
            timestamp: humantime::format_rfc3339_seconds(started_at).to_string(),
            target_deployment_id: plan.map(|p| p.target.id.clone()),
            from_deployment_id: plan.map(|p| p.current.id.clone()),
            git_sha: plan.and_then(|p| p.target.git_sha.clone()),
            git_branch: plan.and_then(|p| p.target.git_branch.clone()),
            trigger: req.trigger.label().into(),
            reason: req.reason.clone(),
            duration_seconds: round3(elapsed.as_secs_f64()),
            success,
            policy: Some(req.policy.as_str().into()),
            rules: req.trigger.rules().to_vec(),
            phases: phase_records(phases),
            error,
            ..Event::default()
        }
    }

    /// Records history and last-known-good, settles the breaker.
    async fn post(
        &self,
        event: &mut Event,
        plan: Option<&Plan>,
        success: bool,
        breaker_opened: bool,
        t0: Instant,
        phases: &[(Phase, PhaseOutcome, Duration)],
    ) -> PhaseOutcome {
        let now = SystemTime::now();
        event.duration_seconds = round3(t0.elapsed().as_secs_f64());
        let mut recorded = event.clone();
        let mut with_post = phases.to_vec();
        with_post.push((
            Phase::PostRollback,
            PhaseOutcome::Succeeded("recorded".into()),
            Duration::ZERO,
        ));
        recorded.phases = phase_records(&with_post);
        let last_known_good = (success && plan.is_some()).then(|| LastKnownGood {
            deployment_id: plan.map(|p| p.target.id.clone()).unwrap_or_default(),
            timestamp: breaker::now_text(now),
        });
        let mut problems = Vec::new();
        if let Err(e) = self.history.append(recorded, last_known_good) {
            problems.push(e.to_string());
        }
        if breaker_opened {
            if let Err(e) = self.breaker.settle(now, success) {
                problems.push(e.to_string());
            }
        }
        self.breaker_state(now);
        if problems.is_empty() {
            PhaseOutcome::Succeeded(if !breaker_opened {
                "history recorded; nothing was changed, the breaker was not touched".into()
            } else if success {
                format!(
                    "history recorded; last known good is {}; breaker HALF_OPEN in {}",
                    plan.map(|p| p.target.id.as_str()).unwrap_or("-"),
                    fmt_duration(self.config.half_open_after)
                )
            } else {
                "history recorded; breaker stays OPEN until `rollbackd breaker reset`".into()
            })
        } else {
            PhaseOutcome::Failed(problems.join("; "))
        }
    }

    /// Phase 4: the health phases against the service.
    async fn verification(
        &self,
        plan: &Plan,
        progress: &(dyn Fn(Progress) + Send + Sync),
        phases: &mut Vec<(Phase, PhaseOutcome, Duration)>,
    ) -> (Verification, Duration) {
        let mut report = None;
        let (_, waited) = self
            .phase(Phase::Verification, progress, phases, async {
                let budget = Phase::Verification.budget(&self.config);
                let started = Instant::now();
                let v = verify::verify(&self.http, &plan.base_url, &self.verify, self.verify.initial_wait, budget, &|p| {
                    for c in &p.checks {
                        metrics::histogram!("rollbackd_health_check_duration_seconds", "phase" => p.name.clone())
                            .record(c.latency_ms as f64 / 1000.0);
                    }
                    progress(Progress::Note(format!(
                        "health {}: {}/{} healthy (attempt {}){}",
                        p.name,
                        p.healthy,
                        p.total,
                        p.attempts,
                        if p.passed { "" } else { ", not enough" }
                    )));
                })
                .await;
                let outcome = if v.passed {
                    PhaseOutcome::Succeeded(format!("{} health phases passed", v.phases.len()))
                } else {
                    PhaseOutcome::Failed(v.stopped.clone().unwrap_or_else(|| "health verification failed".into()))
                };
                report = Some(v);
                (outcome, started.elapsed())
            })
            .await;
        let report = report.unwrap_or(Verification {
            passed: false,
            phases: Vec::new(),
            checking: Duration::ZERO,
            sum_of_latencies: Duration::ZERO,
            stopped: Some("verification did not finish within its budget".into()),
        });
        (report, waited)
    }

    /// Phase 3: the platform rollback, followed to the end.
    async fn application(
        &self,
        plan: &Plan,
        progress: &(dyn Fn(Progress) + Send + Sync),
        new_deployment: &mut Option<String>,
    ) -> (PhaseOutcome, Duration) {
        let mut waited = Duration::ZERO;
        let known: BTreeSet<String> = match timed(&mut waited, self.provider.list(50)).await {
            Ok(list) => list.into_iter().map(|d| d.id).collect(),
            Err(e) => {
                return (
                    PhaseOutcome::Failed(format!("cannot list deployments: {e}")),
                    waited,
                )
            }
        };
        let created = match timed(&mut waited, self.provider.rollback(&plan.target)).await {
            Ok(created) => created,
            Err(e) => {
                return (
                    PhaseOutcome::Failed(format!("the platform refused the rollback: {e}")),
                    waited,
                )
            }
        };
        progress(Progress::Note(format!(
            "platform accepted the rollback to {}",
            plan.target.id
        )));
        // Stop a little before the phase budget, so the failure says what was
        // last seen instead of only "did not finish".
        let deadline = Instant::now()
            + Phase::Application
                .budget(&self.config)
                .saturating_sub(self.config.poll_interval + Duration::from_secs(1));
        let mut last_seen = String::from("the new deployment has not appeared yet");
        let deployment = loop {
            if Instant::now() >= deadline {
                return (
                    PhaseOutcome::Failed(format!(
                        "the rollback deployment did not reach SUCCESS within the application budget; last seen: {last_seen}"
                    )),
                    waited,
                );
            }
            timed(&mut waited, tokio::time::sleep(self.config.poll_interval)).await;
            let found = match &created {
                Some(id) => timed(&mut waited, self.provider.status(id)).await.map(Some),
                None => timed(&mut waited, self.provider.list(10))
                    .await
                    .map(|list| list.into_iter().find(|d| !known.contains(&d.id))),
            };
            match found {
                Err(e) => {
                    tracing::warn!(error = %e, "following the rollback deployment failed; trying again");
                    last_seen = format!("the platform could not be asked: {e}");
                }
                Ok(None) => {}
                Ok(Some(d)) if d.is_success() => break d,
                Ok(Some(d)) if d.has_failed() => {
                    return (
                        PhaseOutcome::Failed(format!(
                            "the rollback deployment {} ended {}",
                            d.id, d.status
                        )),
                        waited,
                    )
                }
                Ok(Some(d)) => {
                    last_seen = format!("deployment {} was {}", d.id, d.status);
                    if new_deployment.as_deref() != Some(d.id.as_str()) {
                        progress(Progress::Note(format!(
                            "rollback deployment {} is {}",
                            d.id, d.status
                        )));
                    }
                    *new_deployment = Some(d.id);
                }
            }
        };
        *new_deployment = Some(deployment.id.clone());
        progress(Progress::Note(format!(
            "rollback deployment {} is SUCCESS; waiting for /health",
            deployment.id
        )));
        let url = format!("{}/health", plan.base_url);
        loop {
            let check = timed(
                &mut waited,
                verify::check(&self.http, &url, self.verify.check_timeout, &[]),
            )
            .await;
            if check.healthy {
                break;
            }
            if Instant::now() >= deadline {
                return (
                    PhaseOutcome::Failed(format!(
                        "deployment {} is SUCCESS but {url} kept failing ({}) until the application budget ran out",
                        deployment.id, check.reason
                    )),
                    waited,
                );
            }
            timed(&mut waited, tokio::time::sleep(self.config.poll_interval)).await;
        }
        (
            PhaseOutcome::Succeeded(format!(
                "deployment {} is live and answers /health",
                deployment.id
            )),
            waited,
        )
    }

    /// Runs one phase under its budget and records it.
    async fn phase<F>(
        &self,
        phase: Phase,
        progress: &(dyn Fn(Progress) + Send + Sync),
        phases: &mut Vec<(Phase, PhaseOutcome, Duration)>,
        work: F,
    ) -> (PhaseOutcome, Duration)
    where
        F: Future<Output = (PhaseOutcome, Duration)>,
    {
        progress(Progress::PhaseStarted(phase));
        let budget = phase.budget(&self.config);
        let started = Instant::now();
        let (outcome, waited) = match tokio::time::timeout(budget, work).await {
            Ok(result) => result,
            Err(_) => (
                PhaseOutcome::Failed(format!(
                    "did not finish within its budget of {}",
                    fmt_duration(budget)
                )),
                budget,
            ),
        };
        self.record_phase(phase, progress, phases, outcome.clone(), started.elapsed());
        (outcome, waited)
    }

    fn record_phase(
        &self,
        phase: Phase,
        progress: &(dyn Fn(Progress) + Send + Sync),
        phases: &mut Vec<(Phase, PhaseOutcome, Duration)>,
        outcome: PhaseOutcome,
        elapsed: Duration,
    ) {
        events::phase_finished(phase.as_str(), outcome.result(), outcome.detail(), elapsed);
        progress(Progress::PhaseFinished {
            phase,
            outcome: outcome.clone(),
            elapsed,
        });
        phases.push((phase, outcome, elapsed));
    }
}

async fn timed<F: Future>(waited: &mut Duration, f: F) -> F::Output {
    let started = Instant::now();
    let out = f.await;
    *waited += started.elapsed();
    out
}

/// True when post-rollback recorded the run (the lock was held).
fn lock_was_taken(phases: &[(Phase, PhaseOutcome, Duration)]) -> bool {
    phases
        .iter()
        .any(|(p, o, _)| *p == Phase::PostRollback && !matches!(o, PhaseOutcome::Skipped(_)))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn phase_records(phases: &[(Phase, PhaseOutcome, Duration)]) -> Vec<PhaseRecord> {
    phases
        .iter()
        .map(|(p, o, d)| PhaseRecord {
            name: p.as_str().into(),
            result: o.result().into(),
            duration_seconds: round3(d.as_secs_f64()),
            detail: o.detail().to_string(),
        })
        .collect()
}
