//! The critical path from a firing rule to the platform call: the first rule
//! acts at once, a later one joins; while a rule is pending the deployment
//! list is kept fresh, so the call waits for one list at most, and a plan
//! the platform outdated is not acted on; every rollback leaves its
//! detection figures in the history and the histograms. Asserted on the
//! order and timestamps of what the platform received and the history
//! recorded, on tokio's paused clock.

use std::time::{Duration, SystemTime};

use tokio::time::sleep;

use super::Daemon;
use crate::engine::testing::{board_with_for, Call};
use crate::rules::RuleEvent;

impl Daemon {
    /// Fires `rule` of `group`, breaching since `breached` ago, at the
    /// engine's time now.
    async fn fire_now(&self, rule: &str, group: &str, breached: Duration) -> SystemTime {
        let e = self.breaching(rule, group, breached);
        let now = e.fired_at;
        self.events.send(RuleEvent::Fired(e)).await.unwrap();
        now
    }

    fn calls(&self) -> Vec<Call> {
        self.rig.platform.calls()
    }
}

fn time(text: Option<&String>) -> SystemTime {
    crate::clock::parse(text.expect("the time is recorded")).expect("an RFC 3339 time")
}

#[tokio::test(start_paused = true)]
async fn the_platform_is_called_before_a_rule_firing_500_ms_later_joins() {
    let d = Daemon::start(|_| {});
    d.rig.platform.set_latency(Duration::from_millis(100));
    let first = d.fire_now("HighErrorRate", "service", Duration::ZERO).await;
    sleep(Duration::from_millis(500)).await;
    let second = d.fire_now("HighLatency", "service", Duration::ZERO).await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1, "one incident, one rollback");
    let history = d.rig.history();
    let entry = &history.events[0];
    let rules: Vec<&str> = entry.rules.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(rules, ["HighErrorRate", "HighLatency"]);
    let detection = entry.detection.as_ref().expect("detection figures");
    let called = time(detection.called_at.as_ref());
    assert!(
        first <= called && called < second,
        "the platform was called at {called:?}: after the first rule fired ({first:?}), before the second ({second:?})"
    );
}

#[tokio::test(start_paused = true)]
async fn while_a_rule_is_pending_the_call_waits_for_one_new_list_only() {
    let board = board_with_for(&[("HighErrorRate", true)], "5m");
    let d = Daemon::watching(board, |_| {});
    d.rig.platform.set_latency(Duration::from_secs(1));
    sleep(Duration::from_secs(10)).await;
    let before = d.calls().len();
    assert!(
        before >= 2,
        "the list is kept fresh while the rule is pending: {:?}",
        d.calls()
    );
    d.fire_now("HighErrorRate", "service", Duration::from_secs(300))
        .await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    let after: Vec<Call> = d.calls().split_off(before);
    let call = after
        .iter()
        .position(|c| matches!(c, Call::Rollback(_)))
        .expect("a rollback call");
    // The guards and the plan used the list kept fresh; the run asked once
    // more as it started, and the call checked the plan against that answer.
    assert_eq!(
        after[..call],
        [Call::List],
        "what the platform was asked between the firing and the call: {after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_plan_the_platform_outdated_before_the_call_is_not_acted_on() {
    let board = board_with_for(&[("HighErrorRate", true)], "5m");
    let d = Daemon::watching(board, |_| {});
    sleep(Duration::from_millis(1500)).await;
    // Someone deploys after the list was kept fresh, before the rule fires.
    d.rig.platform.begin_deploy("d3", "SUCCESS");
    d.fire_now("HighErrorRate", "service", Duration::from_secs(300))
        .await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 0, "{:?}", d.calls());
    let history = d.rig.history();
    let entry = &history.events[0];
    // Checked at the end of pre-validation, before the breaker opens and
    // before the database phase could change anything.
    let pre = entry
        .phases
        .iter()
        .find(|p| p.name.as_str() == "pre_validation")
        .expect("the pre-validation phase");
    assert_eq!(pre.reason.as_deref(), Some("plan_outdated"));
    assert!(
        pre.detail.contains("d3 is live now, not d2"),
        "{}",
        pre.detail
    );
    assert_eq!(d.breaker(), crate::engine::BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_records_its_detection_figures_and_the_histograms_have_them() {
    let handle = crate::telemetry::metrics_handle();
    // A group only this test uses: the recorder is the process's.
    let group = "detection-figures";
    let count = |name: &str| {
        let series = format!("rollbackd_incident_{name}_seconds_count{{group=\"{group}\"}}");
        handle
            .render()
            .lines()
            .find_map(|l| {
                l.strip_prefix(&series)
                    .map(|v| v.trim().parse::<f64>().unwrap())
            })
            .unwrap_or(0.0)
    };
    crate::telemetry::events::incident_group(group);
    let before: Vec<f64> = crate::record::DETECTION_FIGURES
        .iter()
        .map(|n| count(n))
        .collect();
    assert_eq!(before, [0.0; 5], "registered empty");
    let d = Daemon::start(|_| {});
    d.rig.platform.set_latency(Duration::from_millis(200));
    let fired = d
        .fire_now("HighErrorRate", group, Duration::from_secs(60))
        .await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    let history = d.rig.history();
    let detection = history.events[0]
        .detection
        .clone()
        .expect("detection figures");
    assert_eq!(detection.group, group);
    // d2 went live 10 minutes before the rule began to breach, a minute before it fired.
    assert_eq!(detection.deploy_to_breach_seconds, Some(540.0));
    assert_eq!(detection.breach_to_firing_seconds, Some(60.0));
    assert_eq!(detection.fired_at, Some(crate::clock::millis(fired)));
    let firing_to_call = detection.firing_to_call_seconds.expect("firing to call");
    let call_to_healthy = detection.call_to_healthy_seconds.expect("call to healthy");
    let recovery = detection
        .deploy_to_healthy_seconds
        .expect("time to recovery");
    // One list (200 ms) before the call; the call, the follow and the health
    // checks after it.
    assert_eq!(firing_to_call, 0.2);
    assert!(call_to_healthy > 0.2, "{call_to_healthy}");
    assert!(
        (recovery - (600.0 + firing_to_call + call_to_healthy)).abs() < 0.002,
        "{detection:?}"
    );
    let after: Vec<f64> = crate::record::DETECTION_FIGURES
        .iter()
        .map(|n| count(n))
        .collect();
    assert_eq!(after, [1.0; 5], "one observation each: {detection:?}");
}
