//! Phase 2: undo the deploy's migrations, as the plan decided: skip, stop
//! the run, or downgrade under the migration advisory lock and verify the
//! revision after. It never downgrades what the plan did not approve.

use super::super::journal::Step;
use super::super::outcome::{FailureKind, Phase, PhaseOutcome, SkipReason};
use super::super::plan::DbStep;
use super::super::run::Run;

pub(crate) async fn run(run: &mut Run<'_>) -> PhaseOutcome {
    let engine = run.engine;
    let step = run
        .plan
        .as_ref()
        .map(|p| p.db_step.clone())
        .unwrap_or_default();
    let (from, to) = match step {
        DbStep::Nothing => {
            return PhaseOutcome::skipped(SkipReason::NothingPlanned, "nothing planned")
        }
        DbStep::Skip(reason, why) => return PhaseOutcome::Skipped(reason, why),
        DbStep::Stop(why) => return PhaseOutcome::failed(FailureKind::DatabaseRefused, why),
        DbStep::Downgrade { from, to } => (from, to),
    };
    let Some((db, tool)) = engine
        .db
        .as_ref()
        .and_then(|db| db.tool.as_ref().map(|tool| (db, tool)))
    else {
        return PhaseOutcome::failed(
            FailureKind::DatabaseRefused,
            "no database or migration tool is configured",
        );
    };
    let lock_wait =
        (engine.config.budget(Phase::Database) / 2).max(std::time::Duration::from_secs(1));
    let lock = match run
        .wait(crate::db::MigrationLock::acquire(
            &db.database,
            db.config.lock_key,
            lock_wait,
        ))
        .await
    {
        Ok(lock) => lock,
        Err(e) => {
            return PhaseOutcome::failed(
                FailureKind::MigrationLock,
                format!("{e}; nothing was changed, the database is at {from}"),
            )
        }
    };
    // Until the downgrade is journaled as finished, a restarted rollbackd
    // cannot know what state it left the schema in, and says so.
    if let Err(e) = run.mark(Step::DowngradeStarted, format!("{from} -> {to}")) {
        lock.release().await;
        return PhaseOutcome::failed(
            FailureKind::JournalFailed,
            format!("{e}; the downgrade was not started, the database is at {from}"),
        );
    }
    let result = run
        .wait(tool.downgrade(&db.database, &to, db.config.statement_timeout))
        .await;
    let now_at = run.wait(tool.current(&db.database)).await;
    lock.release().await;
    run.mark_done(
        Step::DowngradeFinished,
        match (&result, &now_at) {
            (Ok(()), Ok(Some(rev))) => format!("ok; at {rev}"),
            (Err(e), _) => format!("failed: {e}"),
            _ => "ok; revision not verified".into(),
        },
    );
    let state = match &now_at {
        Ok(Some(rev)) => format!("the database is at revision {rev}"),
        Ok(None) => "the database has no alembic_version now".into(),
        Err(e) => format!("its revision cannot be read: {e}"),
    };
    match (result, now_at) {
        (Err(e), _) => PhaseOutcome::failed(
            FailureKind::DowngradeFailed,
            format!("the downgrade {from} -> {to} failed: {e}; {state}"),
        ),
        (Ok(()), Ok(Some(rev))) if rev == to => PhaseOutcome::Succeeded(format!(
            "downgraded {from} -> {to}; alembic_version verified"
        )),
        (Ok(()), _) => PhaseOutcome::failed(
            FailureKind::DowngradeUnverified,
            format!("after the downgrade to {to}, {state}; the application is not rolled back"),
        ),
    }
}
