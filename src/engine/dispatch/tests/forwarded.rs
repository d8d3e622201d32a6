//! Operators' answers handed over by a follower (`requests/` in the shared
//! state), carried out exactly once across a leader's death: a request a
//! dead leader took is finished by the next one, never done twice.

use super::*;

/// Writes request `name` as a follower would, `taken` by an earlier leader
/// when given (what that leader wrote before it died).
fn hand_over(d: &Daemon, name: &str, answer: serde_json::Value, taken: Option<serde_json::Value>) {
    let mut request = serde_json::json!({
        "at": crate::clock::millis(d.rig.engine.clock.now()),
        "answer": answer,
    });
    if let Some(taken) = taken {
        request["taken"] = taken;
    }
    std::fs::create_dir_all(d.rig.state_dir().join("requests")).unwrap();
    std::fs::write(
        d.rig.state_dir().join(format!("requests/{name}.json")),
        serde_json::to_vec(&request).unwrap(),
    )
    .unwrap();
}

/// A daemon that parked a confirmation for an alert: its id, and the
/// snapshot an approval of it carries.
async fn parked() -> (Daemon, String, serde_json::Value) {
    let d = Daemon::start(|_| {});
    let id = d.park("HighErrorRate", ALERTMANAGER_GROUP).await;
    let snapshot = serde_json::to_value(&d.pending.list()[0]).unwrap();
    (d, id, snapshot)
}

fn handed_over(d: &Daemon) -> usize {
    std::fs::read_dir(d.rig.state_dir().join("requests"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn an_approval_a_dead_leader_took_is_carried_out_once_under_the_run_it_named() {
    let (d, id, snapshot) = parked().await;
    let answer = serde_json::json!({ "kind": "approve", "pending": id, "snapshot": snapshot });
    // The leader that held the confirmation took the approval, named its
    // run and died: its confirmations died with it.
    d.pending.take(&id);
    hand_over(
        &d,
        "req-1",
        answer,
        Some(serde_json::json!({ "epoch": 7, "run": "rb-named" })),
    );
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    let history = d.rig.history();
    assert_eq!(history.events.len(), 1, "{:?}", history.events);
    assert_eq!(history.events[0].id.as_deref(), Some("rb-named"));
    assert!(history.events[0].success);
    assert_eq!(handed_over(&d), 0, "removed once its run was over");
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1, "never twice");
}

#[tokio::test(start_paused = true)]
async fn an_answer_the_dead_leader_carried_out_is_not_carried_out_again() {
    let (d, id, snapshot) = parked().await;
    let run = d.approve(&id).await.expect("approved").rollback_id;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    // The leader that ran it died before removing the request.
    hand_over(
        &d,
        "req-2",
        serde_json::json!({ "kind": "approve", "pending": id, "snapshot": snapshot }),
        Some(serde_json::json!({ "epoch": 7, "run": run })),
    );
    sleep(Duration::from_secs(5)).await;
    assert_eq!(handed_over(&d), 0, "recognised as done and removed");
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1, "not carried out again");
    assert_eq!(d.rig.history().events.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_reset_a_dead_leader_took_is_done_once_and_never_over_a_newer_change() {
    let d = Daemon::start(|_| {});
    d.rig.open_breaker("rb-0", "a rollback ran");
    sleep(Duration::from_secs(2)).await;
    // Taken, never carried out: done now.
    hand_over(
        &d,
        "req-3",
        serde_json::json!({ "kind": "reset_breaker", "reason": "checked by hand" }),
        Some(serde_json::json!({ "epoch": 7 })),
    );
    sleep(Duration::from_secs(3)).await;
    assert_eq!(d.breaker(), BreakerState::Closed);
    assert_eq!(handed_over(&d), 0);
    // Asked, then a newer rollback opened it again before the next leader
    // looked: the old answer does not close the new one.
    let later = d.rig.engine.clock.now() + Duration::from_secs(1);
    d.rig.open_breaker_at(later, "rb-9", "a newer rollback");
    let asked = serde_json::json!({ "kind": "reset_breaker", "reason": "stale" });
    hand_over(&d, "req-4", asked, Some(serde_json::json!({ "epoch": 7 })));
    sleep(Duration::from_secs(3)).await;
    assert_eq!(handed_over(&d), 0);
    assert_eq!(
        d.rig
            .engine
            .breaker()
            .load()
            .unwrap()
            .rollback_id
            .as_deref(),
        Some("rb-9"),
        "still open for the newer rollback"
    );
}
