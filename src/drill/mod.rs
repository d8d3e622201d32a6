//! Rollback drills: the rollback path checked ahead of the incident, without
//! touching production. A readiness drill asks the platform (credentials,
//! the target a rollback would pick now, its retention), takes the
//! emergency backup and restores it into a scratch database (row counts
//! compared), produces and scans the downgrade SQL, and asks every health
//! endpoint. Each check is timed and recorded; the drill is one history
//! entry (`type: drill`), never counted as a rollback.

pub(crate) mod checks;
pub(crate) mod config;
pub(crate) mod schedule;
pub(crate) mod sweep;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::time::Instant;

use crate::engine::Engine;
pub(crate) use crate::history::CheckResult;
use crate::history::{DrillCheck, DrillRecord, Event, EventKind, TriggerKind};
use config::DrillConfig;

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub name: &'static str,
    pub result: CheckResult,
    pub duration_seconds: f64,
    pub detail: String,
}

/// A whole drill.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DrillReport {
    pub id: String,
    pub name: String,
    pub kind: config::DrillKind,
    pub passed: bool,
    pub duration_seconds: f64,
    pub checks: Vec<Check>,
    /// A rollback started (or rollbackd is stopping) and the drill gave
    /// way; its checks so far are kept.
    pub cancelled: bool,
    /// Why it was not recorded in the history, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_recorded: Option<String>,
}

impl DrillReport {
    /// `passed`, `failed` or `cancelled`: the result label.
    pub(crate) fn result(&self) -> &'static str {
        match (self.cancelled, self.passed) {
            (true, _) => "cancelled",
            (false, true) => "passed",
            (false, false) => "failed",
        }
    }

    /// The checks that failed, in order.
    pub(crate) fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.result == CheckResult::Failed)
            .map(|c| c.name)
            .collect()
    }
}

/// The history's `error` of a cancelled drill.
pub(crate) const CANCELLED: &str = "cancelled: a rollback started, or rollbackd stopped";

/// Builds the engine of a staging drill's environment, with its state in
/// the given directory (the command line assembles it from the config).
pub(crate) type StagingEngines =
    Arc<dyn Fn(&DrillConfig, &Path) -> Result<Engine, DrillSetupError> + Send + Sync>;

/// Why a drill did not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DrillError {
    #[error("a rollback is running; a drill never runs beside one (try again when it is done)")]
    RollbackRunning,
}

/// Why drills cannot be set up: a schedule, or a staging environment.
#[derive(Debug, thiserror::Error)]
pub enum DrillSetupError {
    /// A drill's schedule gives no next run (refused when `watch` starts).
    #[error("drill {drill:?}: {error}")]
    Schedule {
        drill: String,
        error: config::ScheduleError,
    },
    #[error("drill {drill:?} has no [drills.staging]")]
    NoStaging { drill: String },
    /// The staging environment's engine cannot be built.
    #[error(transparent)]
    Staging(#[from] crate::engine::EngineError),
}

/// Runs `drill` against what `engine` would roll back, calling `progress`
/// as each check starts (`None`) and ends (`Some`), records it and counts it.
/// A rollback that starts meanwhile cancels it: the check running then is
/// dropped, and what the drill created is removed all the same.
pub(crate) async fn run(
    engine: &Engine,
    drill: &DrillConfig,
    trigger: TriggerKind,
    staging: Option<&StagingEngines>,
    progress: &(dyn Fn(&'static str, Option<&Check>) + Send + Sync),
) -> Result<DrillReport, DrillError> {
    // A staging drill is not cancelled by production's rollbacks: it does
    // not touch production, and dropping it mid-phase would leave staging
    // half rolled back. Everything else gives way.
    let staging_kind = drill.kind == config::DrillKind::Staging;
    let rollback = engine.rollback_started();
    tokio::pin!(rollback);
    rollback.as_mut().enable();
    if engine.try_lock().is_none() {
        return Err(DrillError::RollbackRunning);
    }
    let id = crate::engine::new_id("drill");
    let started = Instant::now();
    let started_at = engine.clock.now();
    let deadline = started + drill.timeout;
    let mut ctx = checks::Context::new(engine, &id, deadline);
    let mut done = Vec::new();
    let checks = async {
        if drill.kind == config::DrillKind::Staging {
            progress("staging", None);
            for check in staging_rollback(engine, drill, &id, staging, deadline).await {
                progress(check.name, Some(&check));
                done.push(check);
            }
            return;
        }
        for name in checks::READINESS {
            progress(name, None);
            let t0 = Instant::now();
            let left = deadline.saturating_duration_since(t0);
            let (result, detail) = match tokio::time::timeout(left, ctx.run(name)).await {
                Ok(outcome) => outcome,
                Err(_) => (
                    CheckResult::Failed,
                    format!(
                        "did not finish within the drill's timeout ({})",
                        crate::duration::format(drill.timeout)
                    ),
                ),
            };
            let outcome = Check {
                name,
                result,
                duration_seconds: t0.elapsed().as_secs_f64(),
                detail,
            };
            progress(name, Some(&outcome));
            done.push(outcome);
        }
    };
    let cancelled = tokio::select! {
        () = checks => false,
        () = &mut rollback, if !staging_kind => true,
    };
    ctx.clean_up().await;
    let passed = !cancelled && done.iter().all(|c| c.result != CheckResult::Failed);
    let mut report = DrillReport {
        id,
        name: drill.name.clone(),
        kind: drill.kind,
        passed,
        duration_seconds: started.elapsed().as_secs_f64(),
        checks: done,
        cancelled,
        not_recorded: None,
    };
    report.not_recorded = record(engine, &report, trigger, started_at).err();
    count(&report, engine.clock.now());
    Ok(report)
}

/// A staging drill: a real rollback of the staging environment, its five
/// phases the drill's checks. Its engine keeps its state (history,
/// breaker, journal) in a directory of its own, removed afterwards, so
/// production's guards and breaker never see it and each drill starts afresh.
async fn staging_rollback(
    engine: &Engine,
    drill: &DrillConfig,
    id: &str,
    staging: Option<&StagingEngines>,
    deadline: Instant,
) -> Vec<Check> {
    let failed = |detail: String| {
        vec![Check {
            name: "staging",
            result: CheckResult::Failed,
            duration_seconds: 0.0,
            detail,
        }]
    };
    let Some(build) = staging else {
        return failed("no engine for the staging environment was built".into());
    };
    let dir = engine.config.state_dir.join("drills").join(id);
    let staging_engine = match build(drill, &dir) {
        Ok(e) => e,
        Err(e) => return failed(format!("cannot set up the staging environment: {e}")),
    };
    let req = crate::engine::RollbackRequest::new(
        crate::engine::Trigger::Manual,
        crate::rules::Policy::Auto,
        format!("drill {}", drill.name),
    );
    let left = deadline.saturating_duration_since(Instant::now());
    let ran = tokio::time::timeout(left, staging_engine.run(req, &|_| {})).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = match ran {
        Ok(report) => report,
        Err(_) => {
            return failed(format!(
                "the staging rollback did not finish within the drill's timeout ({})",
                crate::duration::format(drill.timeout)
            ))
        }
    };
    if report.phases.is_empty() {
        return failed(
            report
                .error
                .unwrap_or_else(|| "the staging rollback did not start".into()),
        );
    }
    report
        .phases
        .iter()
        .map(|step| Check {
            name: step.phase.as_str(),
            result: match step.outcome.result_label() {
                "succeeded" => CheckResult::Passed,
                "skipped" => CheckResult::Skipped,
                _ => CheckResult::Failed,
            },
            duration_seconds: step.elapsed.as_secs_f64(),
            detail: step.outcome.detail().to_string(),
        })
        .collect()
}

/// One history entry; the rollback lock is held only to write it, waiting
/// a little if a rollback began meanwhile.
fn record(
    engine: &Engine,
    report: &DrillReport,
    trigger: TriggerKind,
    at: SystemTime,
) -> Result<(), String> {
    let failed = report.failed();
    let event = Event {
        kind: EventKind::Drill,
        id: Some(report.id.clone()),
        timestamp: crate::clock::millis(at),
        trigger,
        reason: format!("drill {}", report.name),
        duration_seconds: report.duration_seconds,
        success: report.passed,
        error: if report.cancelled {
            Some(CANCELLED.into())
        } else {
            (!failed.is_empty()).then(|| format!("failed: {}", failed.join(", ")))
        },
        drill: Some(DrillRecord {
            name: report.name.clone(),
            kind: report.kind,
            checks: report
                .checks
                .iter()
                .map(|c| DrillCheck {
                    name: c.name.into(),
                    result: c.result,
                    duration_seconds: c.duration_seconds,
                    detail: c.detail.clone(),
                })
                .collect(),
        }),
        ..Event::default()
    };
    let Some(_lock) = engine.try_lock() else {
        return Err("a rollback holds the lock; the drill is not in the history".into());
    };
    engine
        .history()
        .append(event, None)
        .map_err(|e| e.to_string())
}

/// `rollbackd_drill_runs_total{drill,result}`, `rollbackd_drill_last_result{drill}`
/// (1 passed, 0 failed; a cancelled run leaves it) and, on success,
/// `rollbackd_drill_last_success_timestamp_seconds{drill}`.
fn count(report: &DrillReport, now: SystemTime) {
    crate::telemetry::events::drill_finished(
        &report.name,
        report.result(),
        report.cancelled,
        report.passed,
        now,
    );
}
