//! Everything a rollback would do, decided before anything is done: the
//! target, the backup, the database step, the checks. Planning reads the
//! platform, the history and the database, and never writes anything: a dry
//! run and the first step of a real run are the same code.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::outcome::SkipReason;
use super::request::DbTarget;
use super::target::{self, NoTarget};
use super::{Engine, RollbackRequest};
use crate::history::HistoryError;
use crate::provider::{Deployment, ProviderError};

/// Everything a rollback would do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub current: Deployment,
    pub target: Deployment,
    pub base_url: String,
    pub backup: String,
    pub database: String,
    /// The schema revision the database is at now, when known.
    pub current_revision: Option<String>,
    /// The exact downgrade SQL, when a downgrade is planned (or was refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_sql: Option<String>,
    pub health_checks: Vec<String>,
    #[serde(skip)]
    pub(crate) db_step: DbStep,
}

/// What the database phase will do.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum DbStep {
    #[default]
    Nothing,
    /// Leave the database alone, for this reason; the run goes on.
    Skip(SkipReason, String),
    /// Stop the run before the application rollback, for this reason.
    Stop(String),
    Downgrade {
        from: String,
        to: String,
    },
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The platform could not list its deployments.
    #[error("cannot list deployments: {0}")]
    List(ProviderError),
    /// The requested deployment could not be looked up.
    #[error(transparent)]
    Requested(ProviderError),
    /// The history cannot be read, so the targets to avoid are unknown.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Nothing to roll back to.
    #[error(transparent)]
    NoTarget(#[from] NoTarget),
    #[error("no service base URL to verify against: set [service] base_url, ROLLBACK_BASE_URL, or pass --base-url")]
    NoBaseUrl,
}

impl Plan {
    /// Why the database phase will stop the run, when it will.
    pub fn database_stops(&self) -> Option<&str> {
        match &self.db_step {
            DbStep::Stop(why) => Some(why),
            _ => None,
        }
    }
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
                crate::clock::seconds(d.created_at)
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

impl Engine {
    /// Decides target, database steps and checks without changing anything.
    pub async fn plan(&self, req: &RollbackRequest) -> Result<Plan, PlanError> {
        let listed = self.deployments().await.map_err(PlanError::List)?;
        let deployments = &listed.deployments;
        let requested = match &req.deployment_id {
            None => None,
            Some(id) => Some(match deployments.iter().find(|d| &d.id == id) {
                Some(d) => d.clone(),
                None => self
                    .provider
                    .status(id)
                    .await
                    .map_err(PlanError::Requested)?,
            }),
        };
        let history = self.history.load()?;
        let moved_away: BTreeSet<String> = history
            .events
            .iter()
            .filter(|e| e.is_rollback() && e.touched_production())
            .filter_map(|e| e.from_deployment_id.clone())
            .collect();
        let selection = target::select(
            deployments,
            requested.as_ref(),
            &moved_away,
            self.clock.now(),
            self.retention,
        )?;
        let base_url = req
            .base_url
            .clone()
            .or_else(|| self.base_url.clone())
            .ok_or(PlanError::NoBaseUrl)?;
        let health_checks = self
            .verify
            .phases
            .iter()
            .map(|p| {
                let endpoints: Vec<String> = p.endpoints.iter().map(|e| e.describe()).collect();
                let counted = match p.count {
                    crate::verify::config::Count::Endpoints => "",
                    crate::verify::config::Count::Components => " of components",
                };
                format!(
                    "{}: {} ({})",
                    p.name,
                    endpoints.join(", "),
                    if p.min_healthy >= 1.0 {
                        format!("all{counted} must pass")
                    } else {
                        format!("{:.0} %{counted} must pass", p.min_healthy * 100.0)
                    }
                )
            })
            .collect();
        let (db_step, current_revision, database_sql) =
            self.plan_database(req, &selection.target).await;
        let mut database = self.database_summary(&db_step);
        if let (Some(asked), DbStep::Downgrade { .. }) = (&req.db_target, &db_step) {
            database.push_str(&format!(" (asked with {asked})"));
        }
        let backup = match &self.db {
            _ if req.skip_db => "skipped: --skip-db".to_string(),
            None => "skipped: no database is configured".to_string(),
            Some(db) => format!(
                "pg_dump of {} into {}{} ({})",
                db.database.target,
                db.backup_dir.display(),
                db.store
                    .as_ref()
                    .map(|s| format!(", copied to {}", s.url()))
                    .unwrap_or_default(),
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

    /// Decides what the database phase will do; reads, never writes.
    /// Returns the step, the database's current revision and the downgrade
    /// SQL, when known.
    async fn plan_database(
        &self,
        req: &RollbackRequest,
        target: &Deployment,
    ) -> (DbStep, Option<String>, Option<String>) {
        // An operator who asked for a schema target is told why it cannot be
        // had, and nothing runs: rolling back without it would surprise.
        let skip = |reason, why: &str| match &req.db_target {
            Some(asked) => (
                DbStep::Stop(format!("{asked} asks for a schema downgrade, but {why}")),
                None,
                None,
            ),
            None => (DbStep::Skip(reason, why.to_string()), None, None),
        };
        if req.skip_db {
            return skip(SkipReason::SkipDb, "--skip-db");
        }
        let Some(db) = &self.db else {
            return skip(SkipReason::NoDatabase, "no database is configured");
        };
        let Some(tool) = &db.tool else {
            return skip(
                SkipReason::NoMigrationTool,
                "no migration tool is configured",
            );
        };
        let current = match tool.current(&db.database).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return skip(
                    SkipReason::NotUnderMigrationControl,
                    "the database has no alembic_version (not under migration control)",
                )
            }
            Err(e) if req.db_target.is_some() => {
                return skip(
                    SkipReason::DatabaseUnavailable,
                    &format!("the schema revision cannot be read: {e}"),
                )
            }
            Err(e) => {
                let why = format!("cannot read the schema revision: {e}");
                return (unavailable(db, why), None, None);
            }
        };
        // The operator's target, when given, else the recorded revision.
        // An operator's target that cannot be resolved stops the run: they
        // asked for a downgrade, and rolling back without it would surprise.
        let asked = req.db_target.as_ref();
        let refused = |why: String, current: String| {
            (
                DbStep::Stop(format!(
                    "{why}; nothing was changed, the database is at {current}"
                )),
                Some(current),
                None,
            )
        };
        let wanted = match asked {
            Some(DbTarget::Revision(rev)) => match tool.resolve(&db.database, rev).await {
                Ok(rev) => rev,
                Err(e) => return refused(format!("--db-target {rev}: {e}"), current),
            },
            Some(DbTarget::Steps(n)) => match tool.below(&db.database, &current, *n).await {
                Ok(rev) => rev,
                Err(e) => return refused(format!("--db-steps {n}: {e}"), current),
            },
            None => match db.revisions.get(&target.id) {
                Some(rev) => rev,
                None => {
                    let why = format!(
                        "no schema revision is recorded for deployment {} (rollbackd records each deployment's revision while it watches); \
                         the database stays at {current} (rollbackd rollback --db-steps 1 or --db-target REVISION downgrades it anyway)",
                        target.id
                    );
                    return (
                        DbStep::Skip(SkipReason::NoRecordedRevision, why),
                        Some(current),
                        None,
                    );
                }
            },
        };
        let from_what = match asked {
            Some(asked) => format!("asked with {asked}"),
            None => format!("the one deployment {} ran", target.id),
        };
        if wanted == current {
            let why = format!("already at revision {current}, {from_what}");
            return (
                DbStep::Skip(SkipReason::AlreadyAtRevision, why),
                Some(current),
                None,
            );
        }
        let sql = match tool.downgrade_sql(&db.database, &current, &wanted).await {
            Ok(sql) => sql,
            Err(e) => {
                let why = format!("cannot obtain the downgrade SQL {current} -> {wanted}: {e}");
                return match asked {
                    Some(asked) => refused(format!("{asked}: {why}"), current),
                    None => (unavailable(db, why), Some(current), None),
                };
            }
        };
        let destructive = crate::db::migrate::destructive_statements(&sql);
        let step = if !destructive.is_empty() && !db.config.allow_destructive {
            let why = format!(
                "the downgrade {current} -> {wanted}{} is destructive ({}); the database stays at {current} \
                 (database.allow_destructive allows it)",
                asked.map(|a| format!(" (asked with {a})")).unwrap_or_default(),
                destructive.join("; ")
            );
            if db.config.app_only_if_skipped {
                DbStep::Skip(SkipReason::Destructive, why)
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
            DbStep::Skip(_, why) => format!("skipped: {why}"),
            DbStep::Stop(why) => format!("STOPS the rollback: {why}"),
            DbStep::Downgrade { from, to } => format!(
                "alembic downgrade {from} -> {to} under advisory lock {}",
                self.db.as_ref().map_or(0, |d| d.config.lock_key)
            ),
        }
    }
}

/// The database side cannot be used: stop the rollback, or skip the
/// database and roll the application back alone (`database.on_failure`).
fn unavailable(db: &super::DbSetup, why: String) -> DbStep {
    match db.config.on_failure {
        crate::db::config::OnFailure::Stop => DbStep::Stop(format!(
            "{why} (database.on_failure = \"app_only\" would roll the application back alone)"
        )),
        crate::db::config::OnFailure::AppOnly => DbStep::Skip(
            SkipReason::DatabaseUnavailable,
            format!("{why}; the database stays as it is and the application is rolled back alone (database.on_failure = \"app_only\")"),
        ),
    }
}
