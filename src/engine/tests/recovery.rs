//! A run cut off at each boundary (its future dropped: what the state
//! directory sees when rollbackd is killed), then settled by a restarted
//! engine: exactly one platform call, one record, the breaker never stuck on
//! a dead run. The same with real processes and `kill -9` is in
//! `tests/crash.rs`.

use std::time::Duration;

use super::{automatic, outcomes, rig_where_rollbacks, rig_with_latency, spawn_run};
use crate::engine::journal::{Journal, JournalStore, Step};
use crate::engine::testing::{Rig, RollbackBehaviour};
use crate::engine::{BreakerState, Engine, Phase, RunReport, Settled};
use crate::history::EventKind;
use crate::notify::NotifyEvent;

/// Runs `automatic()` and drops it `after` in: the run's journal.
async fn killed_after(rig: &Rig, after: Duration) -> Journal {
    let cut = tokio::time::timeout(after, rig.engine.run(automatic(), &|_| {})).await;
    assert!(cut.is_err(), "the run ended before it was cut off");
    let mut left = journals(rig).unfinished().unwrap();
    assert_eq!(left.len(), 1, "exactly one journal is left");
    left.remove(0)
}

/// A run on a platform that takes 10 s over every call, dropped `after` in:
/// the rig and the run's journal.
pub(super) async fn killed_on_a_slow_platform(after: Duration) -> (Rig, Journal) {
    let rig = rig_with_latency(Duration::from_secs(10));
    let journal = killed_after(&rig, after).await;
    (rig, journal)
}

/// A run whose platform does `behaviour` with the call, dropped 30 s in,
/// once the call was made: the rig and the run's journal.
async fn killed_after_the_call(behaviour: RollbackBehaviour) -> (Rig, Journal) {
    let rig = rig_where_rollbacks(behaviour);
    let journal = killed_after(&rig, Duration::from_secs(30)).await;
    (rig, journal)
}

/// Recovers with `engine` (restarted): the one run it settled, which must
/// have been resumed.
pub(super) async fn resumed_by(engine: &Engine) -> RunReport {
    let settled = engine.recover().await.unwrap();
    resumed(&settled).clone()
}

/// Recovers with `engine` (restarted), which must settle the one run as
/// interrupted.
async fn interrupted_by(engine: &Engine) {
    let settled = engine.recover().await.unwrap();
    assert!(
        matches!(&settled[..], [Settled::Interrupted { .. }]),
        "{settled:?}"
    );
}

/// The one run settled, which must have been resumed.
fn resumed(settled: &[Settled]) -> &RunReport {
    match settled {
        [Settled::Resumed { report, .. }] => report,
        _ => panic!("{settled:?}"),
    }
}

pub(super) fn journals(rig: &Rig) -> JournalStore {
    JournalStore::new(rig.engine.state().clone())
}

pub(super) fn steps(journal: &Journal) -> Vec<Step> {
    journal.steps.iter().map(|m| m.step).collect()
}

#[tokio::test(start_paused = true)]
async fn killed_before_the_platform_call_the_run_is_interrupted_and_the_breaker_given_back() {
    // Every platform call takes 10 s: cut off during the application
    // phase's listing, after the breaker opened.
    let (rig, journal) = killed_on_a_slow_platform(Duration::from_secs(15)).await;
    assert_eq!(steps(&journal), [Step::Started, Step::BreakerOpened]);
    let now = rig.engine.clock.now();
    assert_eq!(rig.engine.breaker_state(now), BreakerState::Open);

    let restarted = rig.restarted(None);
    interrupted_by(&restarted).await;
    assert!(rig.platform.rollbacks().is_empty());
    let history = rig.history();
    assert_eq!(history.events.len(), 1);
    let event = &history.events[0];
    assert_eq!(event.kind, EventKind::Interrupted);
    assert_eq!(event.id.as_deref(), Some(journal.id.as_str()));
    assert!(event
        .error
        .as_deref()
        .unwrap()
        .contains("stopped during application before anything reached production"));
    assert_eq!(restarted.breaker_state(now), BreakerState::Closed);
    assert!(journals(&rig).unfinished().unwrap().is_empty());
    // Not counted as a rollback: the next incident is handled normally.
    rig.platform.set_latency(Duration::ZERO);
    assert!(restarted.check_automatic(now).await.is_ok());
    let report = restarted.run(automatic(), &|_| {}).await;
    assert!(report.success, "{:?}", report.error);
    assert_eq!(rig.platform.rollbacks(), ["d1"]);
    assert!(rig
        .delivered()
        .await
        .contains(&NotifyEvent::RollbackInterrupted));
}

#[tokio::test(start_paused = true)]
async fn killed_while_following_the_deployment_the_run_is_resumed_without_a_second_call() {
    let (rig, journal) = killed_after_the_call(RollbackBehaviour::Hang).await;
    assert!(steps(&journal).ends_with(&[Step::PlatformCallStarted, Step::PlatformCallAnswered]));
    assert_eq!(rig.platform.rollbacks(), ["d1"]);

    // While rollbackd was down, the deployment went live.
    rig.platform
        .set_behaviour(RollbackBehaviour::Succeed { polls: 1 });
    let restarted = rig.restarted(None);
    let report = resumed_by(&restarted).await;
    assert!(report.success, "{:?}", report.error);
    assert_eq!(
        rig.platform.rollbacks(),
        ["d1"],
        "the platform was asked once"
    );
    let history = rig.history();
    assert_eq!(history.events.len(), 1);
    let event = &history.events[0];
    assert_eq!(event.kind, EventKind::Rollback);
    assert!(event.success);
    assert!(event.resumed);
    assert_eq!(event.resumed_at_phase.as_deref(), Some("application"));
    assert_eq!(
        event.created_deployment_id.as_deref(),
        rig.platform.live().as_deref()
    );
    assert_eq!(
        history.last_known_good.map(|g| g.deployment_id).as_deref(),
        Some("d1")
    );
    // The run counts from its start, the time rollbackd was down included.
    assert!(event.duration_seconds >= 30.0, "{}", event.duration_seconds);
    let now = rig.engine.clock.now();
    assert_eq!(restarted.breaker_state(now), BreakerState::Open);
    assert_eq!(
        restarted.breaker_state(now + Duration::from_secs(301)),
        BreakerState::HalfOpen
    );
    assert!(journals(&rig).unfinished().unwrap().is_empty());
    let notices = rig.delivered().await;
    assert!(
        notices.contains(&NotifyEvent::RollbackResumed),
        "{notices:?}"
    );
    assert!(
        notices.contains(&NotifyEvent::RollbackSucceeded),
        "{notices:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_answer_was_lost_the_deployment_the_call_made_is_found_by_listing() {
    let (rig, journal) =
        killed_after_the_call(RollbackBehaviour::SucceedSilently { polls: 1000 }).await;
    assert!(journal.event.created_deployment_id.is_none());
    assert!(!journal.known_deployments.is_empty());
    rig.platform
        .set_behaviour(RollbackBehaviour::SucceedSilently { polls: 1 });
    let restarted = rig.restarted(None);
    let report = resumed_by(&restarted).await;
    assert!(report.success, "{:?}", report.error);
    assert_eq!(rig.platform.rollbacks(), ["d1"]);
    assert_eq!(
        rig.history().events[0].created_deployment_id.as_deref(),
        Some("d1-redeploy-2")
    );
}

/// The call reached the platform, which lists what it created 40 s later
/// (its `list_settle` is `settle`); the run was dropped before the answer
/// came, and a restarted engine settled it: the rig and what it settled.
/// Once "nothing new for 5 s" was read as "never reached" and the rules made
/// a second call.
async fn recovered_from_a_call_listed_late(settle: Duration) -> (Rig, Vec<Settled>) {
    let rig = Rig::new(|_| {});
    rig.platform.set_answer_delay(Duration::from_secs(3600));
    rig.platform.set_list_lag(Duration::from_secs(40), settle);
    let journal = killed_after(&rig, Duration::from_secs(20)).await;
    assert_eq!(steps(&journal).last(), Some(&Step::PlatformCallStarted));
    rig.platform.set_answer_delay(Duration::ZERO);
    let restarted = rig.restarted(None);
    let settled = restarted.recover().await.unwrap();
    assert_eq!(rig.platform.rollbacks(), ["d1"], "one call, never two");
    (rig, settled)
}

#[tokio::test(start_paused = true)]
async fn a_call_the_platform_lists_late_is_waited_for_and_resumed_never_called_twice() {
    let (rig, settled) = recovered_from_a_call_listed_late(Duration::from_secs(60)).await;
    let report = resumed(&settled);
    assert!(report.success, "{:?}", report.error);
    assert_eq!(
        rig.history().events[0].created_deployment_id.as_deref(),
        Some("d1-redeploy-2")
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_listed_after_too_short_a_settle_is_taken_as_never_made_yet_never_made_twice() {
    // Too short a settle for this platform: taken as never made, which is
    // what `provider.list_settle` is there to prevent.
    let (_rig, settled) = recovered_from_a_call_listed_late(Duration::from_secs(5)).await;
    assert!(
        matches!(&settled[..], [Settled::Interrupted { .. }]),
        "{settled:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn killed_during_the_call_that_never_reached_the_platform_the_run_is_interrupted() {
    // Plan (10 s), the application's list (10 s), then the call itself.
    let (rig, journal) = killed_on_a_slow_platform(Duration::from_secs(25)).await;
    assert_eq!(steps(&journal).last(), Some(&Step::PlatformCallStarted));
    rig.platform.set_latency(Duration::ZERO);
    let restarted = rig.restarted(None);
    interrupted_by(&restarted).await;
    assert_eq!(rig.history().events[0].kind, EventKind::Interrupted);
    assert_eq!(
        restarted.breaker_state(rig.engine.clock.now()),
        BreakerState::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn killed_during_verification_only_verification_runs_again() {
    let rig = Rig::new(|_| {});
    // /health answers while the application phase waits for it; the health
    // phases fail from the moment verification starts, until the cut.
    let run = spawn_run(&rig);
    let journal = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left = journals(&rig).unfinished().unwrap();
        if let Some(j) = left.into_iter().find(|j| j.has(Step::VerificationStarted)) {
            rig.service.set_unhealthy(true);
            break j;
        }
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    run.abort();
    let _ = run.await;
    assert!(
        journal.event.phases.len() >= 3,
        "{:?}",
        journal.event.phases
    );
    rig.service.set_unhealthy(false);
    let restarted = rig.restarted(None);
    let report = resumed_by(&restarted).await;
    assert!(report.success, "{:?}", report.error);
    assert_eq!(
        outcomes(&report)
            .iter()
            .map(|(p, r, _)| (*p, *r))
            .collect::<Vec<_>>(),
        [
            (Phase::PreValidation, "succeeded"),
            (Phase::Database, "skipped"),
            (Phase::Application, "succeeded"),
            (Phase::Verification, "succeeded"),
            (Phase::PostRollback, "succeeded"),
        ]
    );
    assert_eq!(rig.platform.rollbacks(), ["d1"]);
    assert_eq!(
        rig.history().events[0].resumed_at_phase.as_deref(),
        Some("verification")
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_keeps_the_detection_figures_it_began_with() {
    let rig = rig_where_rollbacks(RollbackBehaviour::SucceedSilently { polls: 1000 });
    let now = rig.engine.clock.now();
    let mut req = automatic();
    req.detected = Some(crate::engine::request::Detected {
        group: "service".into(),
        breached_at: now - Duration::from_secs(120),
        fired_at: now - Duration::from_secs(60),
    });
    let cut = tokio::time::timeout(Duration::from_secs(30), rig.engine.run(req, &|_| {})).await;
    assert!(cut.is_err(), "cut off after the platform call");
    rig.platform
        .set_behaviour(RollbackBehaviour::SucceedSilently { polls: 1 });
    assert!(resumed_by(&rig.restarted(None)).await.success);
    let detection = rig.history().events[0]
        .detection
        .clone()
        .expect("the figures");
    assert_eq!(
        detection.group, "service",
        "not an operator's: {detection:?}"
    );
    assert_eq!(detection.breach_to_firing_seconds, Some(60.0));
    assert!(
        detection.firing_to_call_seconds.is_some_and(|s| s >= 60.0),
        "the call the first process made: {detection:?}"
    );
}
