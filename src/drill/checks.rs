//! The readiness drill's checks, in order. Each reads, or works on copies
//! the drill makes and removes (a dump in its own directory, a scratch
//! database): production is never changed.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::CheckResult;
use crate::db::Database;
use crate::engine::{Engine, Plan, RollbackRequest, SkipReason, Trigger};
use crate::rules::Policy;

/// The readiness drill's checks, in the order they run.
pub(crate) const READINESS: [&str; 6] = [
    "provider",
    "target",
    "downgrade",
    "backup",
    "health",
    "notifiers",
];

/// What the checks share: the plan the target check made, and what the
/// drill created and must remove.
pub(crate) struct Context<'a> {
    engine: &'a Engine,
    id: &'a str,
    deadline: Instant,
    plan: Option<Plan>,
    scratch: Option<(Database, String)>,
    dump_dir: Option<std::path::PathBuf>,
}

type Outcome = (CheckResult, String);

impl<'a> Context<'a> {
    pub(crate) fn new(engine: &'a Engine, id: &'a str, deadline: Instant) -> Context<'a> {
        Context {
            engine,
            id,
            deadline,
            plan: None,
            scratch: None,
            dump_dir: None,
        }
    }

    /// Runs the check called `name`.
    pub(crate) async fn run(&mut self, name: &str) -> Outcome {
        match name {
            "provider" => self.provider().await,
            "target" => self.target().await,
            "downgrade" => self.downgrade(),
            "backup" => self.backup().await,
            "health" => self.health().await,
            "notifiers" => self.notifiers().await,
            other => (CheckResult::Failed, format!("no check is called {other}")),
        }
    }

    /// Removes the scratch database and the dump, whatever happened.
    pub(crate) async fn clean_up(&mut self) {
        if let Some((db, name)) = self.scratch.take() {
            match db.connect(Duration::from_secs(10)).await {
                Ok(admin) => {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    match admin.batch_execute(&drop).await {
                        Ok(()) => super::sweep::unmark(&self.engine.config.state_dir, &name),
                        Err(e) => {
                            tracing::warn!(database = %name, error = %crate::db::describe(&e), "the drill's scratch database could not be dropped; the next start tries again")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(database = %name, error = %e, "the drill's scratch database could not be dropped")
                }
            }
        }
        if let Some(dir) = self.dump_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// The platform answers with these credentials and lists deployments.
    async fn provider(&mut self) -> Outcome {
        match self.engine.provider.list(20).await {
            Err(e) => (CheckResult::Failed, e.to_string()),
            Ok(list) if list.is_empty() => (
                CheckResult::Failed,
                "the platform lists no deployments".into(),
            ),
            Ok(list) => {
                let live = list
                    .iter()
                    .find(|d| d.is_success())
                    .map_or("none is SUCCESS".to_string(), |d| format!("live: {}", d.id));
                (
                    CheckResult::Passed,
                    format!("{} deployments listed; {live}", list.len()),
                )
            }
        }
    }

    /// The target a rollback would pick now exists, is within the
    /// provider's retention, and the platform can still roll back to it.
    async fn target(&mut self) -> Outcome {
        let req = RollbackRequest::new(
            Trigger::Manual,
            Policy::DryRun,
            format!("drill {}", self.id),
        );
        let plan = match self.engine.plan(&req).await {
            Ok(plan) => plan,
            Err(e) => return (CheckResult::Failed, e.to_string()),
        };
        let target = &plan.target;
        let outcome = if target.can_rollback == Some(false) {
            (
                CheckResult::Failed,
                format!(
                    "the platform says {} can no longer be rolled back to",
                    target.id
                ),
            )
        } else {
            let age = target.age(self.engine.clock.now());
            (
                CheckResult::Passed,
                format!(
                    "a rollback now would go from {} to {} (created {} ago)",
                    plan.current.id,
                    target.id,
                    crate::duration::format(Duration::from_secs(age.as_secs()))
                ),
            )
        };
        self.plan = Some(plan);
        outcome
    }

    /// The downgrade SQL to the target's recorded revision is produced and
    /// is not destructive.
    fn downgrade(&mut self) -> Outcome {
        let Some(plan) = &self.plan else {
            return (
                CheckResult::Skipped,
                "needs the target check's plan, which failed".into(),
            );
        };
        use crate::engine::DbStep;
        match &plan.db_step {
            DbStep::Nothing => (CheckResult::Skipped, "nothing planned".into()),
            DbStep::Downgrade { from, to } => {
                let sql = plan.database_sql.as_deref().unwrap_or_default();
                let destructive = crate::db::migrate::destructive_statements(sql);
                (
                    CheckResult::Passed,
                    if destructive.is_empty() {
                        format!("{from} -> {to}: the SQL was produced, nothing destructive")
                    } else {
                        format!(
                            "{from} -> {to}: destructive, allowed by database.allow_destructive ({})",
                            destructive.join("; ")
                        )
                    },
                )
            }
            DbStep::Skip(SkipReason::Destructive, why) => (CheckResult::Failed, why.clone()),
            DbStep::Skip(SkipReason::DatabaseUnavailable, why) => {
                (CheckResult::Failed, why.clone())
            }
            DbStep::Skip(_, why) => (CheckResult::Skipped, why.clone()),
            DbStep::Stop(why) => (CheckResult::Failed, why.clone()),
        }
    }

    /// The emergency backup is taken and verified, restores into a scratch
    /// database, and holds the rows the live one held.
    async fn backup(&mut self) -> Outcome {
        let Some(db) = &self.engine.db else {
            return (CheckResult::Skipped, "no database is configured".into());
        };
        let tools = crate::db::backup::Tools::new(&db.config);
        let dir = db.backup_dir.join(format!("drill-{}", self.id));
        self.dump_dir = Some(dir.clone());
        let live = self
            .plan
            .as_ref()
            .map_or("unknown".to_string(), |p| p.current.id.clone());
        let before = match row_counts(&db.database, None).await {
            Ok(c) => c,
            Err(e) => {
                return (
                    CheckResult::Failed,
                    format!("cannot count the live rows: {e}"),
                )
            }
        };
        let t0 = Instant::now();
        let backup =
            match crate::db::backup::create(&db.database, &tools, &dir, self.id, &live, "drill")
                .await
            {
                Ok(b) => b,
                Err(e) => return (CheckResult::Failed, format!("the backup failed: {e}")),
            };
        let dumped = t0.elapsed();
        let after = match row_counts(&db.database, None).await {
            Ok(c) => c,
            Err(e) => {
                return (
                    CheckResult::Failed,
                    format!("cannot count the live rows after the dump: {e}"),
                )
            }
        };
        let scratch = format!("rollbackd_drill_{}", db_suffix(self.id));
        // Recorded before it exists, so a drill killed from here on has it
        // dropped at the next start (`sweep`).
        if let Err(e) = super::sweep::mark(&self.engine.config.state_dir, &scratch) {
            return (
                CheckResult::Failed,
                format!("cannot record the scratch database {scratch} before creating it: {e}"),
            );
        }
        // Dropped at the end only when the drill created it: a database of
        // that name that was already there is never touched.
        self.scratch = Some((db.database.clone(), scratch.clone()));
        let t1 = Instant::now();
        if let Err(e) = crate::db::restore::restore(
            &db.database,
            &tools,
            &backup.path,
            Some(scratch.clone()),
            false,
        )
        .await
        {
            if matches!(e, crate::db::restore::RestoreError::Exists(_)) {
                self.scratch = None;
                super::sweep::unmark(&self.engine.config.state_dir, &scratch);
            }
            return (
                CheckResult::Failed,
                format!("the backup does not restore: {e}"),
            );
        }
        let restored_in = t1.elapsed();
        let restored = match row_counts(&db.database, Some(&scratch)).await {
            Ok(c) => c,
            Err(e) => {
                return (
                    CheckResult::Failed,
                    format!("cannot count the restored rows: {e}"),
                )
            }
        };
        let compared = compare(&before, &after, &restored);
        // The store a rollback's backup would be copied to takes a write
        // now (a small object, not the drill's dump: that would count
        // among the copies and could prune one).
        let stored = match &db.store {
            None => String::new(),
            Some(store) => match tokio::time::timeout(store.timeout, store.probe(self.id)).await {
                Ok(Ok(said)) => format!("; the backup store {said}"),
                Ok(Err(e)) => return (CheckResult::Failed, format!("the backup store: {e}")),
                Err(_) => {
                    return (
                        CheckResult::Failed,
                        format!(
                            "the backup store {} did not answer within {}",
                            store.url(),
                            crate::duration::format(store.timeout)
                        ),
                    )
                }
            },
        };
        match compared {
            Err(why) => (CheckResult::Failed, why),
            Ok((tables, rows, moving)) => (
                CheckResult::Passed,
                format!(
                    "pg_dump {} bytes in {:.1}s, verified; restored into a scratch database in {:.1}s; \
                     {tables} table(s), {rows} row(s) match{}{stored}",
                    backup.size_bytes,
                    dumped.as_secs_f64(),
                    restored_in.as_secs_f64(),
                    if moving.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({} written to during the dump, not compared: {})",
                            moving.len(),
                            moving.join(", ")
                        )
                    }
                ),
            ),
        }
    }

    /// Every verification endpoint answers as verification requires.
    async fn health(&mut self) -> Outcome {
        let base_url = match (&self.plan, self.engine.base_url()) {
            (Some(plan), _) => plan.base_url.clone(),
            (None, Some(url)) => url.to_string(),
            (None, None) => {
                return (
                    CheckResult::Failed,
                    "no service base URL ([service] base_url)".into(),
                )
            }
        };
        // One attempt per phase, as `rollbackd validate`: a drill reports
        // what answers now, it does not wait for a service to recover.
        let config = self.engine.verify_config();
        let one_attempt =
            (config.check_timeout + Duration::from_secs(1)) * config.phases.len().max(1) as u32;
        let budget = self
            .deadline
            .saturating_duration_since(Instant::now())
            .min(one_attempt);
        let report = crate::verify::verify(
            self.engine.health.as_ref(),
            &base_url,
            config,
            Duration::ZERO,
            budget,
            &|_| {},
        )
        .await;
        let checks: usize = report.phases.iter().map(|p| p.checks.len()).sum();
        if report.passed {
            return (
                CheckResult::Passed,
                format!(
                    "{} phase(s), {checks} endpoint(s) healthy",
                    report.phases.len()
                ),
            );
        }
        let failing: Vec<String> = report
            .phases
            .iter()
            .flat_map(|p| &p.checks)
            .filter(|c| !c.healthy)
            .map(|c| format!("{}: {}", c.endpoint, c.reason))
            .collect();
        (
            CheckResult::Failed,
            format!(
                "{}; {}",
                report
                    .stopped
                    .unwrap_or_else(|| "verification failed".into()),
                failing.join("; ")
            ),
        )
    }
}

impl Context<'_> {
    /// Every notifier with `drill_test = true` accepts a test message.
    async fn notifiers(&mut self) -> Outcome {
        let Some(notifiers) = self.engine.notifiers() else {
            return (CheckResult::Skipped, "no notifiers are configured".into());
        };
        let n = crate::notify::Notification::new(
            crate::notify::NotifyEvent::DrillTest,
            format!(
                "drill {}: a test message; the rollback path's notifications still arrive",
                self.id
            ),
        );
        let answers = notifiers.test(n).await;
        if answers.is_empty() {
            return (
                CheckResult::Skipped,
                "no notifier has drill_test = true".into(),
            );
        }
        let refused: Vec<String> = answers
            .iter()
            .filter_map(|(label, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("{label}: {}", crate::secret::shown(&e.to_string(), 200)))
            })
            .collect();
        let labels: Vec<&str> = answers.iter().map(|(l, _)| l.as_str()).collect();
        if refused.is_empty() {
            (
                CheckResult::Passed,
                format!("{} accepted a test message", labels.join(", ")),
            )
        } else {
            (CheckResult::Failed, refused.join("; "))
        }
    }
}

/// The id as part of a database name: its letters and digits, lowercased.
fn db_suffix(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Rows per table (`schema.table`) of the database, or of `other` on the
/// same server.
async fn row_counts(db: &Database, other: Option<&str>) -> Result<BTreeMap<String, i64>, String> {
    let timeout = Duration::from_secs(10);
    let client = match other {
        Some(name) => db.connect_to(name, timeout).await,
        None => db.connect(timeout).await,
    }
    .map_err(|e| e.to_string())?;
    let tables = client
        .query(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| crate::db::describe(&e))?;
    let mut counts = BTreeMap::new();
    for row in tables {
        let table: String = row.get(0);
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(|e| crate::db::describe(&e))?
            .get(0);
        counts.insert(table, n);
    }
    Ok(counts)
}

/// Compares the restored rows with the live ones. Tables whose live count
/// moved while the dump ran cannot be compared and are named; any other
/// difference, or a table missing from the copy, fails.
fn compare(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    restored: &BTreeMap<String, i64>,
) -> Result<(usize, i64, Vec<String>), String> {
    let mut moving = Vec::new();
    let mut wrong = Vec::new();
    let mut rows = 0;
    for (table, n) in before {
        if after.get(table) != Some(n) {
            moving.push(table.clone());
            continue;
        }
        match restored.get(table) {
            Some(m) if m == n => rows += n,
            Some(m) => wrong.push(format!("{table}: {n} row(s) live, {m} restored")),
            None => wrong.push(format!("{table}: missing from the restored copy")),
        }
    }
    if wrong.is_empty() {
        Ok((before.len() - moving.len(), rows, moving))
    } else {
        Err(format!("the restored copy differs: {}", wrong.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn restored_rows_are_compared_except_where_the_dump_raced_writes() {
        let live = counts(&[("public.items", 3), ("s.payments", 100)]);
        assert_eq!(compare(&live, &live, &live), Ok((2, 103, vec![])));
        let moved = counts(&[("public.items", 4), ("s.payments", 100)]);
        assert_eq!(
            compare(&live, &moved, &live),
            Ok((1, 100, vec!["public.items".to_string()]))
        );
        let short = counts(&[("public.items", 3), ("s.payments", 98)]);
        assert_eq!(
            compare(&live, &live, &short),
            Err("the restored copy differs: s.payments: 100 row(s) live, 98 restored".into())
        );
        let missing = counts(&[("public.items", 3)]);
        assert!(compare(&live, &live, &missing)
            .unwrap_err()
            .contains("s.payments: missing from the restored copy"));
    }
}
