//! Phase 2: undo the deploy's migrations, as the plan decided: skip, stop
//! the run, or downgrade under the migration advisory lock and verify the
//! revision after. It never downgrades what the plan did not approve.

use super::super::journal::Step;
use super::super::outcome::{FailureKind, Phase, PhaseOutcome, SkipReason};
use super::super::plan::DbStep;
use super::super::run::Run;

/// Takes the plan's database step.
pub(crate) async fn run(run: &mut Run<'_>, step: DbStep) -> PhaseOutcome {
    let engine = run.engine;
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
    // Alembic must see the database rollbackd reads: an env.py that reads
    // another URL (alembic.ini's sqlalchemy.url) would downgrade that one.
    let (seen, waited_on_us) = run
        .wait(watching_lock(&lock, tool.tool_current(&db.database)))
        .await;
    let wrong = match seen {
        Ok(Some(seen)) if seen == from => None,
        Ok(seen) => Some(format!(
            "`alembic current` {}, but {} is at {from}: Alembic's env.py reaches another database \
             (read ROLLBACKD_SQLALCHEMY_URL or DATABASE_URL in env.py, not alembic.ini's sqlalchemy.url; see docs/database.md, \"Setting it up\")",
            seen.map_or("sees no revision".into(), |rev| format!("says the database is at {rev}")),
            db.database.target
        )),
        Err(e) => Some(explain_wait(e.to_string(), waited_on_us, db.config.lock_key)),
    };
    if let Some(why) = wrong {
        lock.release().await;
        return PhaseOutcome::failed(
            FailureKind::DatabaseRefused,
            format!("{why}; nothing was changed, the database is at {from}"),
        );
    }
    // Until the downgrade is journaled as finished, a restarted rollbackd
    // cannot know what state it left the schema in, and says so.
    if let Err(e) = run.mark(Step::DowngradeStarted, format!("{from} -> {to}")) {
        lock.release().await;
        return PhaseOutcome::failed(
            FailureKind::JournalFailed,
            format!("{e}; the downgrade was not started, the database is at {from}"),
        );
    }
    let (result, waited_on_us) = run
        .wait(watching_lock(
            &lock,
            tool.downgrade(&db.database, &to, db.config.statement_timeout),
        ))
        .await;
    let result = result.map_err(|e| explain_wait(e.to_string(), waited_on_us, db.config.lock_key));
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
        (Ok(()), Ok(None)) if to == "base" => PhaseOutcome::Succeeded(format!(
            "downgraded {from} -> base; alembic_version is empty, as at base"
        )),
        (Ok(()), _) => PhaseOutcome::failed(
            FailureKind::DowngradeUnverified,
            format!("after the downgrade to {to}, {state}; the application is not rolled back"),
        ),
    }
}

/// Runs `work` while looking, every second, whether a session queues
/// behind rollbackd's own migration lock: Alembic's env.py taking it
/// without checking `ROLLBACKD_HOLDS_MIGRATION_LOCK`.
async fn watching_lock<T>(
    lock: &crate::db::MigrationLock,
    work: impl std::future::Future<Output = T>,
) -> (T, bool) {
    tokio::pin!(work);
    let mut waited_on_us = false;
    loop {
        tokio::select! {
            out = &mut work => break (out, waited_on_us),
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)), if !waited_on_us => {
                waited_on_us = lock.has_waiters().await;
            }
        }
    }
}

/// `why`, with the reason when Alembic was seen waiting on rollbackd's lock.
fn explain_wait(why: String, waited_on_us: bool, key: i64) -> String {
    if !waited_on_us {
        return why;
    }
    format!(
        "{why}; it was waiting on rollbackd's own migration lock (advisory lock {key}): \
         in env.py, skip pg_advisory_lock when ROLLBACKD_HOLDS_MIGRATION_LOCK is set (see docs/database.md, \"Setting it up\")"
    )
}
