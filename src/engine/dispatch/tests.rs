//! The dispatcher on fakes and tokio's paused clock: coalescing, the guards,
//! confirmations (expiry to each default, approval, supersede, cancel) and
//! the breaker's automatic close. Each test asserts on what the platform
//! received and when, so a late or doubled action would show.
//!
//! Over 600 lines on purpose: one scenario per test against one dispatcher;
//! the shared harness (`Daemon`) is at the top, and splitting by topic would
//! copy it.
//!
//! Over 600 lines on purpose: the dispatcher's core decisions, sharing the
//! `Daemon` setup; blame, forwarded alerts and the leading edge have their
//! own files under `tests/`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep;

use super::{ApproveError, Approved, Command, Dispatcher};
use crate::engine::config::ConfirmDefault;
use crate::engine::pending::PendingStore;
use crate::engine::testing::{board, migrations, with_database, Call, Rig};
use crate::engine::BreakerState;
use crate::history::EventKind;
use crate::notify::NotifyEvent;
use crate::rules::{FiringEvent, RuleEvent, ALERTMANAGER_GROUP};
use crate::rules::{Labels, Policy};
use crate::watch::StatusBoard;

mod blame;
mod forwarded;
mod leading_edge;

struct Daemon {
    rig: Rig,
    pending: Arc<PendingStore>,
    running: super::RunningRollback,
    events: mpsc::Sender<RuleEvent>,
    commands: mpsc::Sender<Command>,
}

impl Daemon {
    fn start(tweak: impl FnOnce(&mut crate::engine::EngineSetup)) -> Daemon {
        Daemon::watching(Arc::new(StatusBoard::default()), tweak)
    }

    /// A daemon whose watcher shows `board`.
    fn watching(
        board: Arc<StatusBoard>,
        tweak: impl FnOnce(&mut crate::engine::EngineSetup),
    ) -> Daemon {
        Daemon::built(board, tweak, |d, _| d)
    }

    /// A daemon configured by `tweak` to which `HighErrorRate` just fired
    /// as an alert under `confirm`.
    async fn confirming_an_alert(tweak: impl FnOnce(&mut crate::engine::EngineSetup)) -> Daemon {
        let d = Daemon::start(tweak);
        d.fire("HighErrorRate", ALERTMANAGER_GROUP, Policy::Confirm)
            .await;
        d
    }

    /// A daemon holding two confirmations, for the alerts `HighErrorRate`
    /// and `HighLatency`.
    async fn with_two_alerts_parked() -> Daemon {
        let d = Daemon::start(|_| {});
        d.park("HighErrorRate", ALERTMANAGER_GROUP).await;
        d.park("HighLatency", ALERTMANAGER_GROUP).await;
        d
    }

    /// A daemon on a platform that takes 5 s over every call, running the
    /// rollback `HighErrorRate` started 10 s ago.
    async fn during_a_rollback() -> Daemon {
        let d = Daemon::start(|_| {});
        d.rig.platform.set_latency(Duration::from_secs(5));
        d.fire("HighErrorRate", "service", Policy::Auto).await;
        sleep(Duration::from_secs(10)).await;
        d
    }

    /// A daemon whose dispatcher `wrap` finishes (blame, say).
    fn built(
        board: Arc<StatusBoard>,
        tweak: impl FnOnce(&mut crate::engine::EngineSetup),
        wrap: impl FnOnce(Dispatcher, &Rig) -> Dispatcher,
    ) -> Daemon {
        let rig = Rig::new(tweak);
        let pending = Arc::new(PendingStore::default());
        let dispatcher = wrap(
            Dispatcher::new(rig.engine.clone(), board, pending.clone()),
            &rig,
        );
        let running = dispatcher.running();
        let (events, commands) = spawn(dispatcher);
        Daemon {
            rig,
            pending,
            running,
            events,
            commands,
        }
    }

    async fn fire(&self, rule: &str, group: &str, policy: Policy) {
        self.events
            .send(RuleEvent::Fired(event(rule, group, policy)))
            .await
            .unwrap();
    }

    async fn resolve(&self, rule: &str, group: &str, policy: Policy) {
        self.events
            .send(RuleEvent::Resolved(event(rule, group, policy)))
            .await
            .unwrap();
    }

    /// `rule` of `group` (`auto`) firing at the engine's time now, its
    /// breach begun `breached` before.
    fn breaching(&self, rule: &str, group: &str, breached: Duration) -> FiringEvent {
        let now = self.rig.engine.clock.now();
        let mut e = event(rule, group, Policy::Auto);
        e.since = now - breached;
        e.fired_at = now;
        e
    }

    async fn approve(&self, id: &str) -> Result<Approved, ApproveError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Approve {
                id: id.into(),
                force: false,
                reply,
            })
            .await
            .unwrap();
        answer.await.unwrap()
    }

    /// Fires `rule` under `confirm` and returns the pending rollback it made.
    async fn park(&self, rule: &str, group: &str) -> String {
        let before = self.pending_ids();
        self.fire(rule, group, Policy::Confirm).await;
        sleep(Duration::from_secs(5)).await;
        let mut made: Vec<String> = self
            .pending_ids()
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        assert_eq!(made.len(), 1, "one confirmation for {rule}");
        made.remove(0)
    }

    fn rollbacks(&self) -> usize {
        self.rig.platform.rollbacks().len()
    }

    /// How many times the platform was asked for its deployment list.
    fn lists(&self) -> usize {
        self.rig
            .platform
            .calls()
            .iter()
            .filter(|c| **c == Call::List)
            .count()
    }

    /// The rules the first recorded incident names, in order.
    fn recorded_rules(&self) -> Vec<String> {
        self.rig.history().events[0]
            .rules
            .iter()
            .map(|r| r.rule.clone())
            .collect()
    }

    fn pending_ids(&self) -> Vec<String> {
        self.pending.list().into_iter().map(|p| p.id).collect()
    }

    fn breaker(&self) -> BreakerState {
        self.rig.engine.breaker_state(self.rig.engine.clock.now())
    }
}

/// Runs `dispatcher` on channels of its own: where its events and its
/// commands go.
fn spawn(dispatcher: Dispatcher) -> (mpsc::Sender<RuleEvent>, mpsc::Sender<Command>) {
    let (events, events_rx) = mpsc::channel(16);
    let (commands, commands_rx) = mpsc::channel(16);
    tokio::spawn(dispatcher.run(events_rx, commands_rx));
    (events, commands)
}

/// A daemon whose watcher shows `HighErrorRate` `firing`, after a
/// confirmation for it was parked and then approved: the approval's answer.
async fn approved_on_a_board(firing: bool) -> (Daemon, Result<Approved, ApproveError>) {
    let d = Daemon::watching(board(&[("HighErrorRate", firing)]), |_| {});
    let id = d.park("HighErrorRate", "service").await;
    let answer = d.approve(&id).await;
    (d, answer)
}

/// A daemon whose watcher shows `HighErrorRate` `firing`, after the rule
/// fired under `confirm` and one of its series resolved.
async fn resolved_on_a_board(firing: bool) -> Daemon {
    let d = Daemon::watching(board(&[("HighErrorRate", firing)]), |_| {});
    d.fire("HighErrorRate", "service", Policy::Confirm).await;
    sleep(Duration::from_secs(5)).await;
    d.resolve("HighErrorRate", "service", Policy::Confirm).await;
    sleep(Duration::from_secs(5)).await;
    d
}

/// Confirmations expire after `seconds`, rejected by default.
fn expiring_after(seconds: u64) -> impl FnOnce(&mut crate::engine::EngineSetup) {
    move |c| c.config.confirm_timeout = Duration::from_secs(seconds)
}

/// Confirmations expire after `seconds`, approved by default.
fn approving_after(seconds: u64) -> impl FnOnce(&mut crate::engine::EngineSetup) {
    move |c| {
        expiring_after(seconds)(c);
        c.config.confirm_default = ConfirmDefault::Approve;
    }
}

/// The breaker half-opens `half_open` s after a rollback, and closes once
/// the rules stayed clear for `close` s.
fn breaker_after(half_open: u64, close: u64) -> impl FnOnce(&mut crate::engine::EngineSetup) {
    move |c| {
        c.config.half_open_after = Duration::from_secs(half_open);
        c.config.close_after = Duration::from_secs(close);
    }
}

fn event(rule: &str, group: &str, policy: Policy) -> FiringEvent {
    FiringEvent {
        group: group.into(),
        rule: rule.into(),
        labels: Labels::from([("alertname".to_string(), rule.to_string())]),
        value: 0.05,
        condition: "> 0.00025".into(),
        threshold: 0.00025,
        policy,
        since: SystemTime::UNIX_EPOCH,
        fired_at: SystemTime::UNIX_EPOCH,
        annotations: Labels::new(),
        spec: None,
    }
}

#[tokio::test(start_paused = true)]
async fn rules_firing_within_the_coalesce_window_make_one_rollback() {
    let d = Daemon::start(|_| {});
    d.fire("HighErrorRate", "service", Policy::Auto).await;
    sleep(Duration::from_millis(500)).await;
    d.fire("HighLatency", "service", Policy::Auto).await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    let history = d.rig.history();
    assert_eq!(history.events.len(), 1);
    assert_eq!(d.recorded_rules(), ["HighErrorRate", "HighLatency"]);
    assert_eq!(history.events[0].trigger, crate::history::TriggerKind::Rule);
}

#[tokio::test(start_paused = true)]
async fn the_first_rule_reaches_the_platform_without_waiting_for_the_coalesce_window() {
    let d = Daemon::start(|c| c.config.coalesce = Duration::from_secs(2));
    let fired = tokio::time::Instant::now();
    d.fire("HighErrorRate", "service", Policy::Auto).await;
    // Once every trigger waited the whole window before the engine started.
    while d.rollbacks() == 0 {
        sleep(Duration::from_millis(10)).await;
        assert!(
            fired.elapsed() < Duration::from_secs(60),
            "no rollback call"
        );
    }
    assert!(
        fired.elapsed() < Duration::from_secs(2),
        "the platform was called {:?} after the rule fired, not before the window ended",
        fired.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn an_auto_rule_joining_a_pending_confirmation_upgrades_it_once() {
    let d = Daemon::start(|_| {});
    d.fire("Latency", "service", Policy::Confirm).await;
    sleep(Duration::from_millis(500)).await;
    assert_eq!(d.pending_ids().len(), 1);
    d.fire("HighErrorRate", "service", Policy::Auto).await;
    sleep(Duration::from_millis(300)).await;
    d.fire("Saturation", "service", Policy::Auto).await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1, "upgraded once: one rollback");
    assert!(
        d.pending_ids().is_empty(),
        "the confirmation was approved by the upgrade"
    );
    assert_eq!(d.rig.history().events.len(), 1);
    assert_eq!(
        d.recorded_rules(),
        ["Latency", "HighErrorRate", "Saturation"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_incident_joined_by_an_auto_rule_rolls_back_once() {
    let d = Daemon::start(|_| {});
    d.fire("Canary", "service", Policy::DryRun).await;
    sleep(Duration::from_millis(500)).await;
    assert_eq!(d.rollbacks(), 0, "dry_run changes nothing");
    d.fire("HighErrorRate", "service", Policy::Auto).await;
    d.fire("HighLatency", "service", Policy::Auto).await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    assert_eq!(
        d.recorded_rules(),
        ["Canary", "HighErrorRate", "HighLatency"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_automatic_rollback_for_an_alert_is_recorded_as_triggered_by_alertmanager() {
    let d = Daemon::start(|_| {});
    d.fire("HighErrorRate", ALERTMANAGER_GROUP, Policy::Auto)
        .await;
    sleep(Duration::from_secs(120)).await;
    let event = &d.rig.history().events[0];
    assert_eq!(event.trigger, crate::history::TriggerKind::Alertmanager);
    assert!(event.reason.starts_with("alert fired"), "{}", event.reason);
}

#[tokio::test(start_paused = true)]
async fn a_rule_firing_while_a_rollback_runs_starts_no_second_one() {
    let d = Daemon::during_a_rollback().await;
    d.fire("HighLatency", "service", Policy::Auto).await;
    sleep(Duration::from_secs(600)).await;
    assert_eq!(d.rollbacks(), 1);
    // The refusal while the run held the lock is not recorded (it belongs to
    // that incident); only the run is.
    let kinds: Vec<EventKind> = d.rig.history().events.into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Rollback]);
    // One listing: the first incident's guards asked, after the rule fired,
    // so the plan and the platform call used that answer. The second rule
    // joined the incident without asking the platform anything.
    assert_eq!(d.lists(), 1, "{:?}", d.rig.platform.calls());
}

#[tokio::test(start_paused = true)]
async fn after_a_rollback_the_breaker_refuses_the_next_incident_and_says_so() {
    let d = Daemon::start(|_| {});
    d.fire("HighErrorRate", "service", Policy::Auto).await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    d.fire("HighErrorRate", "service", Policy::Auto).await;
    sleep(Duration::from_secs(5)).await;
    assert_eq!(d.rollbacks(), 1);
    let history = d.rig.history();
    assert_eq!(history.events[1].kind, EventKind::Blocked);
    assert!(
        history.events[1]
            .error
            .as_deref()
            .unwrap()
            .starts_with("breaker:"),
        "{:?}",
        history.events[1].error
    );
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_rule_never_rolls_back() {
    let d = Daemon::start(|_| {});
    d.fire("HighErrorRate", "service", Policy::DryRun).await;
    sleep(Duration::from_secs(600)).await;
    assert_eq!(d.rollbacks(), 0);
    assert!(d.rig.history().events.is_empty());
    assert!(d.pending_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_confirmation_nobody_answers_expires_to_reject() {
    let d = Daemon::confirming_an_alert(expiring_after(900)).await;
    sleep(Duration::from_secs(890)).await;
    assert_eq!(d.pending_ids().len(), 1, "still pending before the timeout");
    sleep(Duration::from_secs(15)).await;
    assert!(d.pending_ids().is_empty(), "expired after the timeout");
    sleep(Duration::from_secs(600)).await;
    assert_eq!(d.rollbacks(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_confirmation_nobody_answers_expires_to_approve_when_configured() {
    let d = Daemon::confirming_an_alert(approving_after(900)).await;
    sleep(Duration::from_secs(890)).await;
    assert_eq!(d.rollbacks(), 0, "nothing before the timeout");
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1, "approved by default once expired");
    assert!(d.pending_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_expired_approval_by_default_still_needs_the_alert_firing() {
    let d = Daemon::confirming_an_alert(approving_after(60)).await;
    sleep(Duration::from_secs(5)).await;
    assert_eq!(d.pending_ids().len(), 1);
    // Another label set of the alert resolves: the alert as a whole still fires.
    d.events
        .send(RuleEvent::Resolved({
            let mut e = event("HighErrorRate", ALERTMANAGER_GROUP, Policy::Confirm);
            e.labels.insert("instance".into(), "b".into());
            e
        }))
        .await
        .unwrap();
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
}

#[tokio::test(start_paused = true)]
async fn approving_one_confirmation_supersedes_the_others() {
    let d = Daemon::with_two_alerts_parked().await;
    let ids = d.pending_ids();
    assert_eq!(ids.len(), 2);
    let approved = d.approve(&ids[0]).await.expect("approved");
    assert!(approved.rollback_id.starts_with("rb-"));
    assert!(
        approved.findings[0].contains("still firing"),
        "{:?}",
        approved.findings
    );
    assert!(
        d.pending_ids().is_empty(),
        "the other confirmation is superseded"
    );
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    assert!(matches!(
        d.approve(&ids[1]).await,
        Err(ApproveError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_resolved_alert_cancels_its_confirmation_and_approval_then_finds_nothing() {
    let d = Daemon::confirming_an_alert(|_| {}).await;
    sleep(Duration::from_secs(5)).await;
    let ids = d.pending_ids();
    d.resolve("HighErrorRate", ALERTMANAGER_GROUP, Policy::Confirm)
        .await;
    sleep(Duration::from_secs(5)).await;
    assert!(d.pending_ids().is_empty());
    assert!(matches!(
        d.approve(&ids[0]).await,
        Err(ApproveError::NotFound(_))
    ));
    sleep(Duration::from_secs(600)).await;
    assert_eq!(d.rollbacks(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_approval_still_passes_the_guards() {
    let d = Daemon::start(|_| {});
    let id = d.park("HighErrorRate", ALERTMANAGER_GROUP).await;
    // Meanwhile an operator's manual rollback opened the breaker.
    d.rig.open_breaker("rb-manual", "manual rollback");
    let refused = d.approve(&id).await.unwrap_err();
    assert!(refused.to_string().contains("breaker"), "{refused}");
    assert_eq!(
        d.pending_ids(),
        vec![id],
        "a refused approval stays pending"
    );
    sleep(Duration::from_secs(60)).await;
    assert_eq!(d.rollbacks(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_goes_half_open_then_closes_once_the_rules_stay_clear() {
    // An inactive rule on the board; clear for long enough well before
    // HALF_OPEN, which must still wait for half_open_after.
    let d = Daemon::watching(board(&[("HighErrorRate", false)]), breaker_after(300, 60));
    d.fire("HighErrorRate", "service", Policy::Auto).await;
    sleep(Duration::from_secs(60)).await;
    assert_eq!(d.rollbacks(), 1);
    assert_eq!(d.breaker(), BreakerState::Open);
    sleep(Duration::from_secs(200)).await;
    assert_eq!(
        d.breaker(),
        BreakerState::Open,
        "not before half_open_after"
    );
    // HALF_OPEN, and the rules have been clear for longer than close_after
    // (nothing fires on this board): the next upkeep closes it.
    sleep(Duration::from_secs(60)).await;
    assert_eq!(d.breaker(), BreakerState::Closed);
    let record = d.rig.engine.breaker().load().unwrap();
    assert!(
        record.reason.contains("rules stayed clear"),
        "{}",
        record.reason
    );
}

/// Regression: a `confirm_timeout` too large to add to the time panicked
/// inside the dispatcher, which then dropped every later firing event.
#[tokio::test(start_paused = true)]
async fn a_confirmation_timeout_too_large_to_add_leaves_the_dispatcher_working() {
    let d = Daemon::confirming_an_alert(expiring_after(u64::MAX / 4)).await;
    sleep(Duration::from_secs(5)).await;
    let pending = d.pending.list();
    assert_eq!(pending.len(), 1);
    // It waits a century at most.
    let waits = pending[0]
        .expires_at
        .duration_since(pending[0].created_at)
        .unwrap();
    assert_eq!(waits, Duration::from_secs(100 * 365 * 86_400));
    d.approve(&pending[0].id)
        .await
        .expect("the dispatcher still answers");
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
}

#[tokio::test(start_paused = true)]
async fn people_hear_of_a_confirmation_and_of_its_expiry() {
    let d = Daemon::confirming_an_alert(expiring_after(60)).await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(
        d.rig.notices(),
        [
            NotifyEvent::RuleFiring,
            NotifyEvent::RollbackPending,
            NotifyEvent::RollbackRejected
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn people_hear_of_a_rollback_a_guard_refused() {
    let d = Daemon::start(|_| {});
    d.rig.open_breaker("rb-manual", "manual rollback");
    d.fire("HighErrorRate", "service", Policy::Auto).await;
    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        d.rig.notices(),
        [NotifyEvent::RuleFiring, NotifyEvent::RollbackBlocked]
    );
    assert_eq!(d.rollbacks(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_approval_of_a_rule_the_watcher_shows_firing_rolls_back_for_the_rule() {
    let (d, answer) = approved_on_a_board(true).await;
    assert!(answer.is_ok(), "firing true: {answer:?}");
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    let trigger = d.rig.history().events[0].trigger.clone();
    assert_eq!(trigger, crate::history::TriggerKind::Rule);
}

#[tokio::test(start_paused = true)]
async fn an_approval_of_a_rule_the_watcher_shows_inactive_is_refused_as_no_longer_firing() {
    let (d, answer) = approved_on_a_board(false).await;
    assert!(answer.is_err(), "firing false: {answer:?}");
    let findings = match answer {
        Err(ApproveError::NoLongerFiring(f)) => f,
        other => panic!("{other:?}"),
    };
    assert!(findings[0].contains("no longer firing"), "{findings:?}");
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_rule_resolved_while_the_watcher_still_shows_it_firing_keeps_its_confirmation() {
    // One series resolved, but the watcher still shows the rule firing.
    let d = resolved_on_a_board(true).await;
    assert_eq!(d.pending_ids().len(), 1, "still firing: still pending");
}

#[tokio::test(start_paused = true)]
async fn a_rule_resolved_that_the_watcher_shows_inactive_cancels_its_confirmation() {
    // Resolved, and the watcher shows it inactive.
    let d = resolved_on_a_board(false).await;
    assert!(d.pending_ids().is_empty(), "resolved: cancelled");
    assert!(d.rig.notices().contains(&NotifyEvent::RollbackRejected));
}

#[tokio::test(start_paused = true)]
async fn an_approved_alert_is_recorded_as_triggered_by_alertmanager() {
    let d = Daemon::start(|_| {});
    let id = d.park("HighErrorRate", ALERTMANAGER_GROUP).await;
    d.approve(&id).await.unwrap();
    sleep(Duration::from_secs(120)).await;
    let history = d.rig.history();
    assert_eq!(
        history.events[0].trigger,
        crate::history::TriggerKind::Alertmanager
    );
    assert_eq!(history.events[0].policy.as_deref(), Some("confirm"));
}

#[tokio::test(start_paused = true)]
async fn a_firing_rule_keeps_the_breaker_from_closing() {
    let d = Daemon::watching(board(&[("HighErrorRate", true)]), breaker_after(60, 60));
    let now = d.rig.open_breaker("rb-1", "rollback rb-1");
    d.rig.engine.breaker().settle(now, true).unwrap();
    sleep(Duration::from_secs(600)).await;
    assert_eq!(d.breaker(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn the_live_deployments_revision_is_checked_on_its_interval() {
    let d = Daemon::start(with_database(migrations("c3", None), |c| {
        c.revision_check_interval = Duration::from_secs(60);
    }));
    sleep(Duration::from_millis(59_500)).await;
    assert_eq!(d.lists(), 1, "at 0 s");
    sleep(Duration::from_secs(1)).await;
    assert_eq!(d.lists(), 2, "at 60 s, not later");
    sleep(Duration::from_secs(90)).await;
    // At 0 s, 60 s and 120 s: one listing each.
    assert_eq!(d.lists(), 3, "{:?}", d.rig.platform.calls());
    let db = d.rig.engine.db.as_ref().unwrap();
    assert_eq!(db.revisions.get("d2").as_deref(), Some("c3"));
}

#[tokio::test(start_paused = true)]
async fn an_approval_rechecks_the_very_rule_not_its_neighbour() {
    // The group's other rule fires; the one behind the confirmation does not.
    let d = Daemon::watching(
        board(&[("HighLatency", true), ("HighErrorRate", false)]),
        |_| {},
    );
    let id = d.park("HighErrorRate", "service").await;
    assert!(matches!(
        d.approve(&id).await,
        Err(ApproveError::NoLongerFiring(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_resolved_alert_cancels_only_the_confirmation_it_caused() {
    let d = Daemon::with_two_alerts_parked().await;
    assert_eq!(d.pending_ids().len(), 2);
    d.resolve("HighErrorRate", ALERTMANAGER_GROUP, Policy::Confirm)
        .await;
    sleep(Duration::from_secs(5)).await;
    let left = d.pending.list();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].rules[0].rule, "HighLatency");
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_running_rollback_not_for_a_refused_incident() {
    let d = Daemon::during_a_rollback().await;
    // Refused while the first runs (in_progress).
    d.fire("HighLatency", "service", Policy::Auto).await;
    sleep(Duration::from_secs(5)).await;
    assert!(
        d.rig.history().events.is_empty(),
        "the rollback is still running"
    );
    super::finish_running(&d.running, Duration::from_secs(600)).await;
    let history = d.rig.history();
    assert_eq!(history.events.len(), 1, "shutdown waited for it");
    assert!(history.events[0].success);
    assert_eq!(d.rollbacks(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_expired_confirmation_whose_rule_stopped_firing_is_not_approved_by_default() {
    let d = Daemon::watching(board(&[("HighErrorRate", false)]), approving_after(60));
    d.fire("HighErrorRate", "service", Policy::Confirm).await;
    sleep(Duration::from_secs(180)).await;
    assert!(d.pending_ids().is_empty());
    assert_eq!(d.rollbacks(), 0);
    assert_eq!(d.rig.notices().last(), Some(&NotifyEvent::RollbackRejected));
}

#[tokio::test(start_paused = true)]
async fn a_rollback_a_killed_cli_left_unfinished_is_settled_by_the_running_daemon() {
    let d = Daemon::start(|_| {});
    // `rollbackd rollback` beside the daemon, killed during the application
    // phase's listing (its future dropped: its lock goes, its journal stays).
    let cli = d.rig.restarted(None);
    d.rig.platform.set_latency(Duration::from_secs(10));
    let manual = crate::engine::RollbackRequest::new(
        crate::engine::Trigger::Manual,
        Policy::Auto,
        "on-call".into(),
    );
    let cut = tokio::time::timeout(Duration::from_secs(15), cli.run(manual, &|_| {})).await;
    assert!(cut.is_err(), "cut off mid-run");
    assert_eq!(d.breaker(), BreakerState::Open);
    d.rig.platform.set_latency(Duration::ZERO);
    sleep(Duration::from_secs(12)).await;
    let history = d.rig.history();
    assert_eq!(history.events.len(), 1, "{history:?}");
    assert_eq!(history.events[0].kind, EventKind::Interrupted);
    assert_eq!(d.breaker(), BreakerState::Closed);
    assert!(d.rig.platform.rollbacks().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_alert_delivered_to_a_follower_is_handed_to_the_leader_which_acts_once() {
    let d = Daemon::start(|_| {});
    // A follower beside it, sharing its state.
    let mut setup = crate::engine::testing::setup(d.rig.state_dir());
    setup.leadership = Some(crate::state::postgres::Leadership::following());
    let follower = Arc::new(
        crate::engine::Engine::new(setup, d.rig.platform.clone())
            .unwrap()
            .with_parts(d.rig.service.clone(), d.rig.engine.clock),
    );
    let (events, _commands) = spawn(Dispatcher::new(
        follower,
        Arc::new(StatusBoard::default()),
        Arc::new(PendingStore::default()),
    ));
    events
        .send(RuleEvent::Fired(event(
            "HighErrorRate",
            ALERTMANAGER_GROUP,
            Policy::Auto,
        )))
        .await
        .unwrap();
    sleep(Duration::from_secs(30)).await;
    assert_eq!(
        d.rig.platform.rollbacks(),
        ["d1"],
        "the leader rolled back, once"
    );
    let history = d.rig.history();
    assert_eq!(history.events.len(), 1);
    assert_eq!(
        history.events[0].trigger,
        crate::history::TriggerKind::Alertmanager
    );
    assert!(d.rig.engine.state().list("requests").unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_rule_firing_while_the_only_deployment_goes_live_waits_for_it_instead_of_refusing() {
    // Once refused for good ("no deployment is live") when the rule fired
    // in the second the deploy went live, and never acted again.
    let d = Daemon::watching(board(&[("HighErrorRate", true)]), |_| {});
    d.rig.platform.set_status("d2", "REMOVED");
    d.rig.platform.begin_deploy("d3", "BUILDING");
    d.fire("HighErrorRate", "service", Policy::Auto).await;
    sleep(Duration::from_secs(10)).await;
    assert_eq!(d.rollbacks(), 0, "nothing is live to roll back yet");
    assert!(!d.rig.notices().contains(&NotifyEvent::RollbackBlocked));
    d.rig.platform.set_status("d3", "SUCCESS");
    sleep(Duration::from_secs(30)).await;
    assert_eq!(d.rollbacks(), 1, "decided again once d3 went live");
}
