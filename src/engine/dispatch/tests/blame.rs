//! Blame in the dispatcher, on fakes and the paused clock: each verdict
//! leads to its action (a rollback, a refusal, a parked confirmation), and a
//! newer deployment still in progress is never rolled back past.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::time::sleep;

use super::Daemon;
use crate::blame::{config::BlameConfig, Blamer};
use crate::engine::testing::{board, Call};
use crate::history::EventKind;
use crate::notify::NotifyEvent;
use crate::rules::event::FiredRule;
use crate::rules::{Comparison, Condition, QueryRule, RuleBlame, RuleEvent};
use crate::source::range::{millis, Answers};
use crate::source::{MetricsSource, QueryResult, Sample, SourceError};

/// The error ratio at each time, as a function of seconds since the live
/// deployment (`d2`, 600 s old when the daemon starts) went live; `None`
/// is no data.
struct Script(
    Box<dyn Fn(f64) -> Option<f64> + Send + Sync>,
    SystemTime,
    Arc<std::sync::atomic::AtomicUsize>,
);

impl MetricsSource for Script {
    fn query<'a>(&'a self, _expr: &'a str, _at: SystemTime) -> BoxFuture<'a, QueryResult> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn query_range<'a>(
        &'a self,
        _expr: &'a str,
        from: SystemTime,
        to: SystemTime,
        step: Duration,
    ) -> BoxFuture<'a, Result<Answers, SourceError>> {
        self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let mut answers = Answers::new();
            let mut t = millis(from);
            while t <= millis(to) {
                let since = t as f64 / 1000.0 - millis(self.1) as f64 / 1000.0;
                if let Some(value) = (self.0)(since) {
                    answers.insert(
                        t,
                        vec![Sample {
                            labels: Default::default(),
                            value,
                        }],
                    );
                }
                t += step.as_millis() as u64;
            }
            Ok(answers)
        })
    }
}

fn blaming(
    script: impl Fn(f64) -> Option<f64> + Send + Sync + 'static,
    tweak: impl FnOnce(&mut crate::engine::EngineSetup),
) -> Daemon {
    blaming_on(board(&[("HighErrorRate", true)]), script, tweak).0
}

/// As [`blaming`], with the watcher showing `board`; also returns how many
/// range queries the source was asked.
fn blaming_on(
    board: Arc<crate::watch::StatusBoard>,
    script: impl Fn(f64) -> Option<f64> + Send + Sync + 'static,
    tweak: impl FnOnce(&mut crate::engine::EngineSetup),
) -> (Daemon, Arc<std::sync::atomic::AtomicUsize>) {
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let d = Daemon::built(board, tweak, move |d, rig| {
        // The rig's live deployment d2 went live 600 s before it was made.
        let go_live = rig.engine.clock.now() - Duration::from_secs(600);
        d.with_blame(Blamer::new(
            Arc::new(Script(Box::new(script), go_live, counter)),
            BlameConfig::default(),
        ))
    });
    (d, asked)
}

/// `HighErrorRate` fires now, its breach begun `breached` s ago.
async fn fire(d: &Daemon, breached: u64) {
    let mut e = d.breaching("HighErrorRate", "service", Duration::from_secs(breached));
    e.value = 0.3;
    e.spec = Some(spec("error_ratio", 0.05, Duration::from_secs(15)));
    d.events.send(RuleEvent::Fired(e)).await.unwrap();
}

/// A query rule's spec: `expr` above `threshold`, evaluated every
/// `interval`.
fn spec(expr: &str, threshold: f64, interval: Duration) -> Arc<FiredRule> {
    Arc::new(FiredRule {
        query: Some(QueryRule {
            expr: expr.into(),
            condition: Condition {
                op: Comparison::Above,
                threshold,
            },
            on_no_data: Default::default(),
            on_error: Default::default(),
            min_traffic: None,
        }),
        interval,
        blame: RuleBlame::default(),
    })
}

fn blame_of(d: &Daemon) -> crate::blame::Judgement {
    let history = d.rig.history();
    let entry = history.events.last().expect("a history entry");
    entry
        .blame
        .clone()
        .expect("the entry records its judgement")
}

#[tokio::test(start_paused = true)]
async fn a_deploy_that_broke_the_service_is_rolled_back_with_its_evidence() {
    // Clean for 30 minutes before; 30 % errors from 60 s after go-live.
    let d = blaming(|t| Some(if t > 60.0 { 0.3 } else { 0.0 }), |_| {});
    fire(&d, 500).await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 1);
    let j = blame_of(&d);
    assert_eq!(j.verdict, crate::blame::Verdict::ToBlame, "{j}");
    assert_eq!(j.rules[0].baseline.as_ref().unwrap().usable, 121);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_failing_before_the_deploy_is_refused_and_notified() {
    let d = blaming(|_| Some(0.3), |_| {});
    fire(&d, 500).await;
    sleep(Duration::from_secs(120)).await;
    assert_eq!(d.rollbacks(), 0);
    let history = d.rig.history();
    let entry = &history.events[0];
    assert_eq!(entry.kind, EventKind::Blocked);
    assert!(
        entry.error.as_deref().unwrap().starts_with("blame: "),
        "{:?}",
        entry.error
    );
    assert_eq!(blame_of(&d).reason, crate::blame::Reason::AlreadyBreaching);
    assert!(d.rig.notices().contains(&NotifyEvent::RollbackBlocked));
}

#[tokio::test(start_paused = true)]
async fn no_baseline_parks_an_auto_rule_for_confirmation() {
    let d = blaming(|t| (t > 0.0).then_some(0.3), |_| {});
    fire(&d, 500).await;
    sleep(Duration::from_secs(5)).await;
    assert_eq!(d.rollbacks(), 0);
    let pending = d.pending.list();
    assert_eq!(pending.len(), 1, "parked, never a silent skip");
    let j = pending[0]
        .blame
        .clone()
        .expect("the evidence travels with it");
    assert_eq!(j.reason, crate::blame::Reason::NoBaseline, "{j}");
    assert!(d.rig.notices().contains(&NotifyEvent::RollbackPending));
}

#[tokio::test(start_paused = true)]
async fn a_breach_during_a_newer_deploy_never_rolls_back_the_live_one() {
    let d = blaming(|t| Some(if t > 60.0 { 0.3 } else { 0.0 }), |_| {});
    // d3 started 540 s ago and is still building; the breach began after.
    d.rig.platform.begin_deploy("d3", "BUILDING");
    fire(&d, 30).await;
    sleep(Duration::from_secs(30)).await;
    assert_eq!(d.rollbacks(), 0, "d2 (live, healthy) is not rolled back");
    // It waits for d3 to settle, then decides again: d3 failed, so d2 is
    // still live and judged on its own figures (to blame here).
    d.rig.platform.set_status("d3", "FAILED");
    sleep(Duration::from_secs(30)).await;
    let calls = d.rig.platform.calls();
    assert!(
        calls.iter().all(|c| !matches!(c, Call::Cancel(_))),
        "the platform has no cancel: {calls:?}"
    );
    assert_eq!(d.rollbacks(), 1, "decided again once d3 settled");
}

#[tokio::test(start_paused = true)]
async fn a_platform_that_can_cancel_has_the_deploy_to_blame_cancelled() {
    let d = blaming(|t| Some(if t > 60.0 { 0.3 } else { 0.0 }), |_| {});
    d.rig.platform.allow_cancel();
    // (BUILDING: the fake platform moves a DEPLOYING one on by itself.)
    d.rig.platform.begin_deploy("d3", "BUILDING");
    fire(&d, 30).await;
    sleep(Duration::from_secs(60)).await;
    let calls = d.rig.platform.calls();
    assert!(calls.contains(&Call::Cancel("d3".into())), "{calls:?}");
    assert_eq!(d.rollbacks(), 0, "the live deployment stays");
    let history = d.rig.history();
    assert_eq!(history.events[0].kind, EventKind::Blocked);
    assert_eq!(blame_of(&d).reason, crate::blame::Reason::DeployInProgress);
}

#[tokio::test(start_paused = true)]
async fn a_pending_rule_s_baseline_is_asked_for_before_it_fires_and_only_once() {
    use std::sync::atomic::Ordering::SeqCst;
    // HighErrorRate breaches with `for: 1h`: pending, not firing.
    let board = crate::engine::testing::board_with_for(&[("HighErrorRate", true)], "1h");
    let (d, asked) = blaming_on(board, |t| Some(if t > 60.0 { 0.3 } else { 0.0 }), |_| {});
    sleep(Duration::from_secs(3)).await;
    assert_eq!(asked.load(SeqCst), 1, "the baseline, once, while pending");
    assert_eq!(d.rollbacks(), 0);
    // When it fires, the judgement asks only for what happened since go-live.
    let mut e = d.breaching("HighErrorRate", "service", Duration::from_secs(500));
    e.spec = Some(spec(
        "sum(rate(errors_total[1m]))",
        0.1,
        Duration::from_secs(10),
    ));
    d.events.send(RuleEvent::Fired(e)).await.unwrap();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(asked.load(SeqCst), 2, "the baseline was not asked again");
    sleep(Duration::from_secs(60)).await;
    assert_eq!(d.rollbacks(), 1);
}
