//! Drills on their schedules inside `rollbackd watch`, run by
//! tokio-cron-scheduler. Only the leader runs them; a drill still running
//! when its next time comes is not started twice; a drill never starts
//! while a rollback runs, and a rollback that starts cancels it. A failed
//! drill is notified (`drill_failed`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio_cron_scheduler::{Job, JobScheduler};

use super::config::DrillConfig;
use super::DrillError;
use crate::engine::Engine;
use crate::history::{EventKind, TriggerKind};
use crate::notify::{Notification, NotifyEvent};

/// Runs the drills, each at most once at a time.
pub struct Runner {
    engine: Arc<Engine>,
    staging: Option<super::StagingEngines>,
    /// The drills running now.
    busy: Mutex<BTreeSet<String>>,
}

/// Takes a drill off the running set when its run ends, however it ends.
struct Running<'a>(&'a Runner, String);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.set().remove(&self.1);
    }
}

impl Runner {
    pub fn new(engine: Arc<Engine>, staging: Option<super::StagingEngines>) -> Arc<Runner> {
        Arc::new(Runner {
            engine,
            staging,
            busy: Mutex::new(BTreeSet::new()),
        })
    }

    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// rollbackd is stopping: cancels the readiness drill running now and
    /// waits (at most `limit`) for every drill to remove what it created.
    pub async fn stop(&self, limit: Duration) {
        self.engine.cancel_drills();
        let deadline = tokio::time::Instant::now() + limit;
        while !self.set().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The drill's time has come: run it unless another drill runs, a
    /// rollback runs, or another replica leads.
    pub async fn fire(&self, drill: &DrillConfig) {
        if !self.engine.is_leader() {
            tracing::debug!(drill = %drill.name, "not the leader: the leader runs the drills");
            return;
        }
        if !self.set().insert(drill.name.clone()) {
            skipped(
                &drill.name,
                "overrun",
                "it is still running from its last time",
            );
            return;
        }
        let _running = Running(self, drill.name.clone());
        tracing::info!(drill = %drill.name, "drill started");
        let trigger = TriggerKind::Other("schedule".into());
        let outcome = super::run(
            &self.engine,
            drill,
            trigger,
            self.staging.as_ref(),
            &|_, _| {},
        )
        .await;
        match outcome {
            Err(DrillError::RollbackRunning) => {
                skipped(&drill.name, "rollback_running", "a rollback is running")
            }
            Ok(report) if report.cancelled => {
                tracing::warn!(drill = %drill.name, "drill cancelled: a rollback started, or rollbackd is stopping")
            }
            Ok(report) if report.passed => {
                tracing::info!(drill = %drill.name, seconds = report.duration_seconds, "drill passed")
            }
            Ok(report) => {
                let failed: Vec<String> = report
                    .checks
                    .iter()
                    .filter(|c| c.result == super::CheckResult::Failed)
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect();
                tracing::error!(drill = %drill.name, failed = %failed.join("; "), "drill FAILED");
                if let Some(notifiers) = self.engine.notifiers() {
                    let mut n = Notification::new(
                        NotifyEvent::DrillFailed,
                        format!(
                            "drill {} found the rollback path broken: {}",
                            drill.name,
                            report.failed().join(", ")
                        ),
                    );
                    n.rollback_id = Some(report.id.clone());
                    n.outcome = Some(crate::secret::shown(&failed.join("; "), 1000));
                    notifiers.send(n);
                }
            }
        }
    }
}

fn skipped(drill: &str, reason: &'static str, why: &str) {
    tracing::warn!(drill = %drill, "drill skipped: {why}");
    metrics::counter!("rollbackd_drill_skipped_total", "drill" => drill.to_string(), "reason" => reason)
        .increment(1);
}

/// What the gauges say before any drill ran in this process, from the
/// history: the last result, and the last success (or, when none is
/// recorded, the time rollbackd started, so "no success in 8 days" counts
/// from there).
pub fn restore_gauges(engine: &Engine, drills: &[DrillConfig], now: SystemTime) {
    let events = engine
        .history()
        .load()
        .map(|h| h.events)
        .unwrap_or_default();
    for d in drills {
        let mine = |e: &&crate::history::Event| {
            e.kind == EventKind::Drill
                && e.drill.as_ref().is_some_and(|r| r.name == d.name)
                && e.error.as_deref() != Some(super::CANCELLED)
        };
        for result in ["passed", "failed", "cancelled"] {
            metrics::counter!("rollbackd_drill_runs_total", "drill" => d.name.clone(), "result" => result)
                .increment(0);
        }
        for reason in ["overrun", "rollback_running"] {
            metrics::counter!("rollbackd_drill_skipped_total", "drill" => d.name.clone(), "reason" => reason)
                .increment(0);
        }
        if let Some(last) = events.iter().rev().find(mine) {
            metrics::gauge!("rollbackd_drill_last_result", "drill" => d.name.clone())
                .set(if last.success { 1.0 } else { 0.0 });
        }
        let success = events
            .iter()
            .rev()
            .filter(mine)
            .find(|e| e.success)
            .and_then(|e| e.time())
            .unwrap_or(now);
        let at = success
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        metrics::gauge!("rollbackd_drill_last_success_timestamp_seconds", "drill" => d.name.clone())
            .set(at.as_secs_f64());
    }
}

/// The running scheduler and the drills' runner.
pub struct Scheduled {
    scheduler: JobScheduler,
    runner: Arc<Runner>,
    refresh: tokio::task::JoinHandle<()>,
}

impl Scheduled {
    /// Stops starting drills, cancels a running readiness drill and waits
    /// (at most `limit`) for the drills to clean up.
    pub async fn stop(mut self, limit: Duration) {
        let _ = self.scheduler.shutdown().await;
        self.refresh.abort();
        self.runner.stop(limit).await;
    }
}

/// Starts a scheduler with one job per drill. The gauges are re-read from
/// the history every minute, so a drill run by the command line, or by
/// another replica sharing the state, shows on every replica.
pub async fn start(
    engine: Arc<Engine>,
    drills: &[DrillConfig],
    staging: super::StagingEngines,
) -> Result<Scheduled, String> {
    let started = SystemTime::now();
    restore_gauges(&engine, drills, started);
    let refresh = {
        let (engine, drills) = (engine.clone(), drills.to_vec());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                restore_gauges(&engine, &drills, started);
            }
        })
    };
    let scheduler = JobScheduler::new()
        .await
        .map_err(|e| format!("cannot start the drill scheduler: {e}"))?;
    let runner = Runner::new(engine, Some(staging));
    for drill in drills {
        let tz = drill.tz()?;
        let (runner, job_drill) = (runner.clone(), Arc::new(drill.clone()));
        let job = Job::new_async_tz(drill.schedule.as_str(), tz, move |_, _| {
            let (runner, drill) = (runner.clone(), job_drill.clone());
            Box::pin(async move {
                // Its own task: a long drill never holds the scheduler's tick.
                tokio::spawn(async move { runner.fire(&drill).await });
            })
        })
        .map_err(|e| format!("drill {:?}: schedule {:?}: {e}", drill.name, drill.schedule))?;
        scheduler
            .add(job)
            .await
            .map_err(|e| format!("cannot schedule drill {:?}: {e}", drill.name))?;
    }
    scheduler
        .start()
        .await
        .map_err(|e| format!("cannot start the drill scheduler: {e}"))?;
    Ok(Scheduled {
        scheduler,
        runner,
        refresh,
    })
}
