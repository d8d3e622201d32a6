//! Start-up errors in the rollback deployment's logs (`verify.startup_logs`)
//! on the fake platform and the paused clock: what is read, over which
//! window, and what fails the application phase.

use std::time::Duration;

use super::{automatic, outcomes};
use crate::engine::testing::Rig;
use crate::engine::{BreakerState, Phase};

/// The application phase's detail, which must end with `suffix`.
fn application_ends_with(report: &crate::engine::RunReport, suffix: &str) {
    let application = &report.phases[2];
    assert_eq!(application.phase, Phase::Application);
    assert!(
        application.outcome.detail().ends_with(suffix),
        "{:?}",
        application.outcome
    );
}

fn rig_with(window: Option<Duration>) -> Rig {
    Rig::new(|setup| {
        setup.verify.initial_wait = Duration::from_secs(10);
        setup.verify.startup_logs.window = window;
    })
}

#[tokio::test(start_paused = true)]
async fn an_error_line_as_the_deployment_starts_fails_the_application_phase() {
    let rig = rig_with(None);
    rig.platform.set_logs(Ok(&[
        "INFO:     Started server process [7]",
        "2026-11-27 10:00:02 ERROR app.db: cannot connect to postgres://app:hunter2@db/app",
        "ERROR app.db: retrying",
    ]));
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert!(!report.success);
    let step = &report.phases[2];
    assert_eq!(step.phase, Phase::Application);
    assert_eq!(step.outcome.reason(), Some("startup_errors"));
    let detail = step.outcome.detail();
    assert!(
        detail.contains("logged 2 error line(s) as it started (verify.startup_logs): 2026-11-27 10:00:02 ERROR app.db: cannot connect to postgres://***@db/app"),
        "{detail}"
    );
    assert!(!detail.contains("hunter2"));
    assert_eq!(outcomes(&report)[3].1, "skipped", "verification never ran");
    let now = rig.engine.clock.now();
    assert_eq!(rig.engine.breaker_state(now), BreakerState::Open);

    // The logs asked for are the created deployment's, from its creation.
    let created = rig.history().events[0]
        .created_deployment_id
        .clone()
        .unwrap();
    let requests = rig.platform.log_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, created);
    assert!(requests[0].1 < requests[0].2);
}

#[tokio::test(start_paused = true)]
async fn clean_logs_pass_and_the_window_counts_toward_verifications_initial_wait() {
    let rig = rig_with(None);
    rig.platform
        .set_logs(Ok(&["INFO ready", "GET /health 200"]));
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert!(report.success, "{:?}", report.error);
    application_ends_with(
        &report,
        "answers /health; 2 log line(s) without start-up errors",
    );
    let application = &report.phases[2];
    // The window defaults to verify.initial_wait (10 s) after /health
    // answered; verification does not wait those 10 s again.
    assert!(
        application.elapsed >= Duration::from_secs(10),
        "{:?}",
        application.elapsed
    );
    let verification = &report.phases[3];
    assert!(
        verification.elapsed < Duration::from_secs(1),
        "{:?}",
        verification.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn without_logs_nothing_is_read_or_waited() {
    // The fake platform reads no logs by default: nothing asked, no wait.
    let rig = rig_with(Some(Duration::from_secs(30)));
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert!(report.success);
    assert!(rig.platform.log_requests().is_empty());
    assert!(report.phases[2].elapsed < Duration::from_secs(5));
    assert!(
        report.phases[3].elapsed >= Duration::from_secs(10),
        "the full initial wait"
    );
}

#[tokio::test(start_paused = true)]
async fn unreadable_logs_are_a_note_and_the_rollback_stands() {
    // Logs that cannot be read: the rollback stands, and says so.
    let rig = rig_with(Some(Duration::from_secs(2)));
    rig.platform.set_logs(Err("logs are down"));
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert!(report.success, "{:?}", report.error);
    application_ends_with(&report, "; its logs could not be read");
    assert_eq!(
        outcomes(&report)[2],
        (Phase::Application, "succeeded", None)
    );
}

#[tokio::test(start_paused = true)]
async fn a_log_read_that_never_answers_is_cut_off_within_the_phases_budget() {
    // A read that never answers is cut off within the phase's budget.
    let rig = rig_with(Some(Duration::from_secs(2)));
    rig.platform.set_logs(Ok(&["ERROR never seen"]));
    rig.platform.set_logs_latency(Duration::from_secs(3600));
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert!(report.success, "{:?}", report.error);
    application_ends_with(&report, "; its logs could not be read");
    assert!(report.phases[2].elapsed < rig.engine.config.budgets.application);
}
