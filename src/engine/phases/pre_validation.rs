//! Phase 1: take the rollback lock, make the plan, take the emergency
//! backup, open the deploy breaker. Nothing in production changes here; from
//! the moment the plan exists the run holds the lock and will be recorded.

use super::super::outcome::{FailureKind, Phase, PhaseOutcome};
use super::super::plan::Plan;
use super::super::run::Run;

pub(crate) async fn run(run: &mut Run<'_>) -> PhaseOutcome {
    let engine = run.engine;
    let prepared = if engine.call_needs_new_list(&run.req) {
        // The guards and the plan used a list asked for before the rule
        // fired (kept fresh while it was pending): ask again now, while the
        // lock, the journal and the backup are taken, and check the plan
        // against the answer before the breaker opens. A platform slower
        // than a third of the budget is left to the application phase,
        // which asks again.
        let req = run.req.clone();
        let limit = engine.config.budget(Phase::PreValidation) / 3;
        let (prepared, listed) = tokio::join!(
            prepare(run),
            tokio::time::timeout(limit, engine.deployments_for_call(&req))
        );
        match (&prepared, &run.plan, listed) {
            (Ok(_), Some(plan), Ok(Ok(listed))) => {
                if let Err(why) = crate::engine::listing::still_valid(plan, &listed.deployments) {
                    return PhaseOutcome::failed(
                        FailureKind::PlanOutdated,
                        format!("{why}; nothing was changed"),
                    );
                }
            }
            (_, _, Ok(Err(e))) => {
                tracing::debug!(error = %e, "cannot list deployments ahead of the platform call; it asks again")
            }
            _ => {}
        }
        prepared
    } else {
        prepare(run).await
    };
    match prepared {
        Ok(backup) => open_breaker(run, backup),
        Err(failed) => failed,
    }
}

/// The lock, the plan, the journal and the backup: `Ok(the backup's
/// detail)`, or the phase's failure.
async fn prepare(run: &mut Run<'_>) -> Result<String, PhaseOutcome> {
    let engine = run.engine;
    let lock = match engine.state.try_lock() {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Err(PhaseOutcome::failed(
                FailureKind::RollbackLocked,
                "another rollback is running (the rollback lock is held)",
            ))
        }
        Err(e) => {
            return Err(PhaseOutcome::failed(
                FailureKind::LockError,
                format!(
                    "cannot take the rollback lock {}: {e}",
                    engine
                        .state
                        .location(crate::state::StateDir::LOCK)
                        .display()
                ),
            ))
        }
    };
    // Under the lock, so no journal appears between this look and the plan.
    match engine.unfinished() {
        Ok(_) => {}
        // The state store cannot be reached: nothing is known of the
        // journals, and nothing could be recorded either.
        Err(e) if e.is_unreachable() => {
            return Err(PhaseOutcome::failed(
                FailureKind::LockError,
                format!("{e}; nothing was changed"),
            ))
        }
        Err(e) => {
            return Err(PhaseOutcome::failed(
                FailureKind::UnreadableJournal,
                format!(
                    "{e}; what that run did is unknown, so nothing was changed. See it with `rollbackd state journals`; repair it, or move it aside with `rollbackd state quarantine ID`"
                ),
            ))
        }
    }
    let req = run.req.clone();
    let plan = match run.wait(engine.plan(&req)).await {
        Ok(plan) => plan,
        Err(e) => return Err(PhaseOutcome::failed(FailureKind::NoPlan, e.to_string())),
    };
    run.note(format!("plan:\n{plan}"));
    if let (Some(db), Some(rev)) = (&engine.db, &plan.current_revision) {
        if let Err(e) = db.revisions.record(&plan.current.id, rev) {
            tracing::warn!(error = %e, "cannot record the live deployment's revision");
        }
    }
    // From here on the run is journaled and recorded in the history, even if
    // it stops, and even if rollbackd dies.
    if let Err(e) = run.begin(lock, plan.clone()) {
        return Err(PhaseOutcome::failed(
            FailureKind::JournalFailed,
            format!("{e}; nothing was changed"),
        ));
    }
    let backup = backup(run, &plan).await;
    let detail = backup.detail.clone();
    run.backed_up(backup.taken, backup.warning, &detail);
    let detail = backup.failed.map_or(Ok(detail), |why| {
        Err(PhaseOutcome::failed(FailureKind::BackupFailed, why))
    })?;
    run.note(detail.clone());
    Ok(detail)
}

/// Opens the deploy breaker: the last step of pre-validation.
fn open_breaker(run: &mut Run<'_>, backup: String) -> PhaseOutcome {
    let engine = run.engine;
    let (target, live) = match &run.plan {
        Some(plan) => (plan.target.id.clone(), plan.current.id.clone()),
        None => return PhaseOutcome::failed(FailureKind::NoPlan, "no plan"),
    };
    let now = engine.clock.now();
    let reason = format!("rollback {} running: {}", run.id, run.req.reason);
    if let Err(e) = engine.breaker.open(now, &run.id, &reason) {
        return PhaseOutcome::failed(
            FailureKind::BreakerError,
            format!("cannot open the deploy breaker: {e}"),
        );
    }
    run.opened_breaker(reason);
    engine.breaker_state(now);
    PhaseOutcome::Succeeded(format!(
        "target {target} (live: {live}); {backup}; deploy breaker OPEN"
    ))
}

/// What the emergency backup left: the phase's detail, the backup when
/// one was taken, a warning when it (or its copy off this machine) failed
/// but was not required, and why the phase fails when it was.
struct BackupResult {
    detail: String,
    taken: Option<crate::db::backup::Backup>,
    warning: Option<String>,
    failed: Option<String>,
}

impl BackupResult {
    fn none(detail: String) -> BackupResult {
        BackupResult {
            detail,
            taken: None,
            warning: None,
            failed: None,
        }
    }
}

/// Takes the emergency backup the plan calls for, and copies it off this
/// machine when `[database.backup_store]` is set.
async fn backup(run: &mut Run<'_>, plan: &Plan) -> BackupResult {
    let engine = run.engine;
    let Some(db) = &engine.db else {
        return BackupResult::none(plan.backup.clone());
    };
    if plan.backup.starts_with("skipped") {
        return BackupResult::none(plan.backup.clone());
    }
    let tools = crate::db::backup::Tools::new(&db.config);
    // The backup must leave time for the rest of pre-validation.
    let budget = engine.config.budget(Phase::PreValidation) * 2 / 3;
    let (id, live, reason) = (
        run.id.clone(),
        plan.current.id.clone(),
        run.req.reason.clone(),
    );
    let started = tokio::time::Instant::now();
    let taken = run
        .wait(tokio::time::timeout(
            budget,
            crate::db::backup::create(&db.database, &tools, &db.backup_dir, &id, &live, &reason),
        ))
        .await;
    let taken = match taken {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "pg_dump did not finish within {} (two thirds of the pre-validation budget)",
            crate::duration::format(budget)
        )),
    };
    let mut backup = match taken {
        Ok(backup) => backup,
        Err(e) if db.config.backup_required => {
            let why = format!("the emergency backup failed: {e} (database.backup_required is set)");
            return BackupResult {
                failed: Some(why.clone()),
                ..BackupResult::none(why)
            };
        }
        Err(e) => {
            tracing::warn!(error = %e, "emergency backup failed; going on without one (database.backup_required is not set)");
            return BackupResult {
                warning: Some(e.clone()),
                ..BackupResult::none(format!("WARNING: the emergency backup failed: {e}"))
            };
        }
    };
    crate::db::backup::prune(&db.backup_dir, db.config.keep_backups);
    let mut detail = format!(
        "backup {} ({} bytes, sha256 {}) verified",
        backup.path.display(),
        backup.size_bytes,
        &backup.sha256[..12],
    );
    // The copy off this machine, in what is left of the budget.
    let upload_failed = match &db.store {
        None => None,
        Some(store) => {
            let left = budget.saturating_sub(started.elapsed()).min(store.timeout);
            match copy_off(run, store, &mut backup, left).await {
                Ok(copied) => {
                    detail.push_str(&copied);
                    None
                }
                Err(e) => Some(e),
            }
        }
    };
    detail.push_str(&format!("; restore with: {}", backup.restore_command));
    let mut result = BackupResult::none(detail.clone());
    result.taken = Some(backup);
    match upload_failed {
        None => {}
        Some(e) if db.config.backup_required => {
            result.failed = Some(format!(
                "the backup's copy off this machine failed: {e} (database.backup_required is set; the local backup is kept: {detail})"
            ));
        }
        Some(e) => {
            tracing::warn!(error = %e, "the backup was not copied to the backup store; going on with the local one (database.backup_required is not set)");
            result.detail = format!("{detail}; WARNING: not copied off this machine: {e}");
            result.warning = Some(e);
        }
    }
    result
}

/// Uploads `backup` to `store` within `left`: what to add to the phase's
/// detail, or why there is no copy.
async fn copy_off(
    run: &mut Run<'_>,
    store: &crate::db::store::BackupStore,
    backup: &mut crate::db::backup::Backup,
    left: std::time::Duration,
) -> Result<String, String> {
    if left.is_zero() {
        return Err(format!(
            "pg_dump used the backup's whole budget (two thirds of pre-validation); \
             no time was left to copy it to {}",
            store.url()
        ));
    }
    let result = run
        .wait(tokio::time::timeout(left, store.upload(backup)))
        .await;
    crate::telemetry::backup_upload(match &result {
        Ok(Ok(_)) => "ok",
        Ok(Err(_)) => "failed",
        Err(_) => "timeout",
    });
    match result {
        Ok(Ok(up)) => {
            let mut copied = format!(", copied to {} and read back in {:.1}s", up.url, up.seconds);
            if let Some(e) = up.prune_error {
                tracing::warn!(error = %e, "old copies in the backup store were not pruned");
                copied.push_str(&format!(" (old copies not pruned: {e})"));
            }
            Ok(copied)
        }
        Ok(Err(e)) => Err(format!("database.backup_store: {e}")),
        Err(_) => Err(format!(
            "the upload to {} did not finish within {} (database.backup_store.timeout, \
             or what the pre-validation budget left)",
            store.url(),
            crate::duration::format(left)
        )),
    }
}
