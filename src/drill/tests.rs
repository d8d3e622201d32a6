//! Drills beside rollbacks, on the engine's fakes and tokio's paused clock:
//! a rollback cancels a running drill and never waits on it; a drill never
//! starts while a rollback runs; a drill still running is not started twice.

use std::sync::Arc;
use std::time::Duration;

use super::config::{DrillConfig, DrillKind};
use super::schedule::Runner;
use super::{run, DrillError};
use crate::engine::testing::Rig;
use crate::engine::{RollbackRequest, Trigger};
use crate::history::{EventKind, TriggerKind};
use crate::rules::Policy;

fn drill() -> DrillConfig {
    DrillConfig {
        name: "weekly".into(),
        schedule: "0 0 9 * * Mon".into(),
        timezone: "UTC".into(),
        kind: DrillKind::Readiness,
        timeout: Duration::from_secs(600),
        staging: None,
        min_interval: Duration::from_secs(3600),
    }
}

fn drills(rig: &Rig) -> Vec<crate::history::Event> {
    rig.history()
        .events
        .into_iter()
        .filter(|e| e.kind == EventKind::Drill)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_rollback_cancels_a_running_drill_and_never_waits_for_it() {
    let rig = Rig::new(|_| {});
    // Each health check takes 2 s: the drill is in its health check when
    // the rollback starts.
    rig.service.set_latency(Duration::from_secs(2));
    let engine = rig.engine.clone();
    let drilling =
        tokio::spawn(
            async move { run(&engine, &drill(), TriggerKind::Manual, None, &|_, _| {}).await },
        );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = tokio::time::Instant::now();
    let rollback = rig
        .engine
        .run(
            RollbackRequest::new(Trigger::Manual, Policy::Auto, "on-call".into()),
            &|_| {},
        )
        .await;
    assert!(rollback.success, "{:?}", rollback.error);
    assert_eq!(rig.platform.rollbacks(), ["d1"]);
    let report = drilling.await.unwrap().unwrap();
    assert!(report.cancelled);
    assert_eq!(report.result(), "cancelled");
    assert!(!report.passed);
    // Cancelled as the rollback began: the drill took no more of the
    // rollback's time than the rollback alone would.
    assert!(
        report.duration_seconds < 1.5,
        "the drill ran on for {}s",
        report.duration_seconds
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_drill_never_starts_while_a_rollback_holds_the_lock() {
    let rig = Rig::new(|_| {});
    let lock = rig.engine.try_lock().expect("the lock is free");
    let refused = run(&rig.engine, &drill(), TriggerKind::Manual, None, &|_, _| {}).await;
    assert!(matches!(refused, Err(DrillError::RollbackRunning)));
    drop(lock);
    let report = run(&rig.engine, &drill(), TriggerKind::Manual, None, &|_, _| {})
        .await
        .unwrap();
    assert!(report.passed, "{report:?}");
    assert_eq!(drills(&rig).len(), 1);
    assert!(
        rig.platform.rollbacks().is_empty(),
        "a drill never rolls back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_drill_still_running_at_its_next_time_is_not_started_twice() {
    let rig = Rig::new(|_| {});
    rig.service.set_latency(Duration::from_secs(2));
    let runner = Runner::new(rig.engine.clone(), None);
    let config = Arc::new(drill());
    let (first, second) = (runner.clone(), runner.clone());
    let (a, b) = (config.clone(), config.clone());
    let one = tokio::spawn(async move { first.fire(&a).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    second.fire(&b).await;
    one.await.unwrap();
    let recorded = drills(&rig);
    assert_eq!(recorded.len(), 1, "one run, the second skipped");
    assert!(recorded[0].success);
    assert_eq!(recorded[0].trigger, TriggerKind::Other("schedule".into()));
    // Once it is done, the next time runs again.
    runner.fire(&config).await;
    assert_eq!(drills(&rig).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_drill_that_fails_is_notified_with_what_failed() {
    let rig = Rig::new(|_| {});
    rig.service.set_unhealthy(true);
    let runner = Runner::new(rig.engine.clone(), None);
    runner.fire(&drill()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let notices = rig.notices();
    assert_eq!(notices, [crate::notify::NotifyEvent::DrillFailed]);
    let recorded = drills(&rig);
    assert!(!recorded[0].success);
    assert_eq!(recorded[0].error.as_deref(), Some("failed: health"));
}

#[tokio::test(start_paused = true)]
async fn drills_run_side_by_side_and_stopping_rollbackd_cancels_them() {
    let rig = Rig::new(|_| {});
    rig.service.set_latency(Duration::from_secs(2));
    let runner = Runner::new(rig.engine.clone(), None);
    let nightly = Arc::new(DrillConfig {
        name: "nightly".into(),
        ..drill()
    });
    let weekly = Arc::new(drill());
    let (a, b) = (runner.clone(), runner.clone());
    let (n, w) = (nightly.clone(), weekly.clone());
    let one = tokio::spawn(async move { a.fire(&n).await });
    let two = tokio::spawn(async move { b.fire(&w).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Both are running: stopping cancels them and waits for their clean-up.
    let stopping = tokio::time::Instant::now();
    runner.stop(Duration::from_secs(30)).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    one.await.unwrap();
    two.await.unwrap();
    let recorded = drills(&rig);
    assert_eq!(recorded.len(), 2, "two different drills both ran");
    assert!(recorded
        .iter()
        .all(|e| e.error.as_deref() == Some(super::CANCELLED)));
}
