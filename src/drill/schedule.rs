//! Drills on their schedules inside `rollbackd watch`. Each drill has a
//! loop of its own ([`follow`]) that works out its next time from the wall
//! clock in the drill's time zone after every run, and sleeps toward it a
//! minute at a time, so a daylight-saving change or a stepped clock is
//! followed at once. Only the leader runs them; a drill still running
//! when its next time comes is not started twice; a drill never starts
//! while a rollback runs, and a rollback that starts cancels it. A failed
//! drill is notified (`drill_failed`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::config::DrillConfig;
use super::DrillError;
use crate::clock::Clock;
use crate::engine::Engine;
use crate::history::{EventKind, TriggerKind};
use crate::notify::{Notification, NotifyEvent};

/// Runs the drills, each at most once at a time.
pub(crate) struct Runner {
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
    pub(crate) fn new(engine: Arc<Engine>, staging: Option<super::StagingEngines>) -> Arc<Runner> {
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
    pub(crate) async fn stop(&self, limit: Duration) {
        self.engine.cancel_drills();
        let deadline = tokio::time::Instant::now() + limit;
        while !self.set().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The drill's time has come: run it unless another drill runs, a
    /// rollback runs, or another replica leads.
    pub(crate) async fn fire(&self, drill: &DrillConfig) {
        if !self.engine.is_leader() {
            tracing::debug!(drill = %drill.name, "not the leader: the leader runs the drills");
            return;
        }
        if !self.set().insert(drill.name.clone()) {
            crate::telemetry::events::drill_skipped(
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
            Err(DrillError::RollbackRunning) => crate::telemetry::events::drill_skipped(
                &drill.name,
                "rollback_running",
                "a rollback is running",
            ),
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

/// What the gauges say before any drill ran in this process, from the
/// history: the last result, and the last success (or, when none is
/// recorded, the time rollbackd started, so "no success in 8 days" counts
/// from there).
pub(crate) fn restore_gauges(engine: &Engine, drills: &[DrillConfig], now: SystemTime) {
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
        let last = events.iter().rev().find(mine).map(|e| e.success);
        let success = events
            .iter()
            .rev()
            .filter(mine)
            .find(|e| e.success)
            .and_then(|e| e.time())
            .unwrap_or(now);
        crate::telemetry::events::drill_restored(&d.name, last, success);
    }
}

/// The drills' loops and runner.
pub(crate) struct Scheduled {
    loops: Vec<tokio::task::JoinHandle<()>>,
    runner: Arc<Runner>,
    refresh: tokio::task::JoinHandle<()>,
}

impl Scheduled {
    /// Stops starting drills, cancels a running readiness drill and waits
    /// (at most `limit`) for the drills to clean up.
    pub(crate) async fn stop(self, limit: Duration) {
        for l in &self.loops {
            l.abort();
        }
        self.refresh.abort();
        self.runner.stop(limit).await;
    }
}

/// Starts one loop per drill. The gauges are re-read from the history
/// every minute, so a drill run by the command line, or by another replica
/// sharing the state, shows on every replica.
pub(crate) async fn start(
    engine: Arc<Engine>,
    drills: &[DrillConfig],
    staging: super::StagingEngines,
) -> Result<Scheduled, super::DrillSetupError> {
    let started = SystemTime::now();
    restore_gauges(&engine, drills, started);
    for drill in drills {
        // Refused here rather than in a loop that would end in silence.
        drill
            .next_run(started)
            .map_err(|error| super::DrillSetupError::Schedule {
                drill: drill.name.clone(),
                error,
            })?;
    }
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
    let clock = engine.clock;
    let runner = Runner::new(engine, Some(staging));
    let loops = drills
        .iter()
        .map(|drill| {
            let (runner, drill) = (runner.clone(), Arc::new(drill.clone()));
            tokio::spawn(follow(drill.clone(), clock, move || {
                let (runner, drill) = (runner.clone(), drill.clone());
                // Its own task: a long drill never holds its loop, so an
                // overrun is seen and counted.
                tokio::spawn(async move { runner.fire(&drill).await });
            }))
        })
        .collect();
    Ok(Scheduled {
        loops,
        runner,
        refresh,
    })
}

/// The longest sleep before the wall clock is read again: a clock stepped
/// by NTP or by hand is noticed within it.
const RECHECK: Duration = Duration::from_secs(60);

/// Calls `fire` at each of `drill`'s times, read from `clock` in the
/// drill's time zone: the next time is worked out again after every run
/// (a daylight-saving change moves it as it should), and the wall clock is
/// re-read at least every minute while waiting. Times the clock jumped past
/// are run once, not once each.
pub(crate) async fn follow(drill: Arc<DrillConfig>, clock: Clock, mut fire: impl FnMut()) {
    let mut after = clock.now();
    loop {
        let next = match drill.next_run(after) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(drill = %drill.name, error = %e, "drill has no next time: it will not run again until rollbackd restarts");
                return;
            }
        };
        loop {
            let now = clock.now();
            let Ok(left) = next.duration_since(now) else {
                break;
            };
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(RECHECK)).await;
        }
        fire();
        after = clock.now().max(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn daily(schedule: &str, timezone: &str) -> Arc<DrillConfig> {
        Arc::new(DrillConfig {
            name: "nightly".into(),
            schedule: schedule.into(),
            timezone: timezone.into(),
            kind: super::super::config::DrillKind::Readiness,
            timeout: Duration::from_secs(600),
            staging: None,
            min_interval: Duration::from_secs(1),
        })
    }

    /// Runs `drill`'s loop from `start` until `count` runs, on a paused clock.
    async fn runs(drill: Arc<DrillConfig>, start: SystemTime, count: usize) -> Vec<String> {
        let clock = Clock::tokio_at(start);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let looping = tokio::spawn(follow(drill, clock, move || {
            let _ = tx.send(clock.now());
        }));
        let mut at = Vec::new();
        while at.len() < count {
            at.push(crate::clock::seconds(rx.recv().await.unwrap()));
        }
        looping.abort();
        at
    }

    #[tokio::test(start_paused = true)]
    async fn a_daylight_saving_change_moves_the_next_drill_with_it() {
        // 09:30 in Paris: 08:30 UTC in winter, 07:30 UTC from Sunday 29
        // March 2026. Once the drill kept its winter offset until restart.
        let at = runs(
            daily("0 30 9 * * *", "Europe/Paris"),
            utc("2026-03-27T12:00:00Z"),
            4,
        )
        .await;
        assert_eq!(
            at,
            [
                "2026-03-28T08:30:00Z",
                "2026-03-29T07:30:00Z",
                "2026-03-30T07:30:00Z",
                "2026-03-31T07:30:00Z"
            ]
        );
        // And back in October (Sunday 25 October 2026).
        let at = runs(
            daily("0 30 9 * * *", "Europe/Paris"),
            utc("2026-10-24T12:00:00Z"),
            2,
        )
        .await;
        assert_eq!(at, ["2026-10-25T08:30:00Z", "2026-10-26T08:30:00Z"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_hourly_drill_runs_on_the_hour() {
        let at = runs(daily("0 0 * * * *", "UTC"), utc("2026-01-01T10:59:59Z"), 3).await;
        assert_eq!(
            at,
            [
                "2026-01-01T11:00:00Z",
                "2026-01-01T12:00:00Z",
                "2026-01-01T13:00:00Z"
            ]
        );
    }
}
