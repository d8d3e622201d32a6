//! Phase 5: record the run in the history (and the new last-known-good on
//! success), and settle the breaker this run opened: HALF_OPEN later after a
//! success, OPEN until an operator resets it after a failure. Runs whenever
//! the run held the lock, whatever happened before.

use super::super::outcome::{FailureKind, Phase, PhaseOutcome, PhaseStep};
use super::super::run::Run;
use crate::history::LastKnownGood;

pub(crate) async fn run(run: &mut Run<'_>) -> PhaseOutcome {
    let engine = run.engine;
    let now = engine.clock.now();
    let success = run.success();
    // The entry is the journal's, with this phase recorded as succeeded: if
    // writing it fails, the entry does not exist to say otherwise. The
    // journal goes once the history holds the run; until then a restarted
    // rollbackd records it from there.
    let mut journal = run.journal();
    journal.event.phases.push(
        PhaseStep {
            phase: Phase::PostRollback,
            outcome: PhaseOutcome::Succeeded("recorded".into()),
            elapsed: std::time::Duration::ZERO,
        }
        .record(),
    );
    if let Err(e) = engine.journal.write(&journal) {
        tracing::error!(error = %e, "cannot journal the run's record before writing it");
    }
    let recorded = journal.event;
    let target = run.plan.as_ref().map(|p| p.target.id.clone());
    let last_known_good = match (&target, success) {
        (Some(id), true) => Some(LastKnownGood {
            deployment_id: id.clone(),
            timestamp: crate::clock::millis(now),
        }),
        _ => None,
    };
    let mut problems = Vec::new();
    let appended = engine.history.append(recorded, last_known_good);
    if let Err(e) = &appended {
        problems.push(e.to_string());
    }
    if run.breaker_opened {
        if let Err(e) = engine.breaker.settle(now, success) {
            problems.push(e.to_string());
        }
    }
    if appended.is_ok() {
        if let Err(e) = engine.journal.remove(&run.id) {
            problems.push(e.to_string());
        }
    }
    engine.breaker_state(now);
    // The deployment the rollback created runs the schema the database is
    // at now: recorded, so a later rollback from it knows (a warning only).
    if let (true, Some(created), Some(db)) = (success, &run.created_deployment, &engine.db) {
        if let Some(tool) = &db.tool {
            match tool.current(&db.database).await {
                Ok(Some(revision)) => {
                    if let Err(e) = db.revisions.record(created, &revision) {
                        tracing::warn!(error = %e, deployment = %created, "cannot record the new deployment's schema revision");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, deployment = %created, "cannot read the schema revision of the new deployment")
                }
            }
        }
    }
    if !problems.is_empty() {
        return PhaseOutcome::failed(FailureKind::RecordFailed, problems.join("; "));
    }
    PhaseOutcome::Succeeded(if !run.breaker_opened {
        "history recorded; nothing was changed, the breaker was not touched".into()
    } else if success {
        format!(
            "history recorded; last known good is {}; breaker HALF_OPEN in {}",
            target.as_deref().unwrap_or("-"),
            crate::duration::format(engine.config.half_open_after)
        )
    } else {
        "history recorded; breaker stays OPEN until `rollbackd breaker reset`".into()
    })
}
