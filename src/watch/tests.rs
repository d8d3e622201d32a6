//! A group's evaluation loop on a scripted [`MetricsSource`] and tokio's
//! paused clock: when a rule goes pending and fires, and that missing data or
//! a failing source holds it. Each test asserts on the ordered events the
//! loop sent, with their times, so an early, late or extra event shows.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use super::group::{self, GroupContext};
use super::StatusBoard;
use crate::clock::Clock;
use crate::rules::{Group, Labels, RuleEvent};
use crate::source::scrapes::ScrapeTiming;
use crate::source::{MetricsSource, QueryResult, Sample, SourceError};

/// What the source answers at a time (seconds since the test began).
#[derive(Clone, Copy)]
enum Answer {
    Value(f64),
    Empty,
    Down,
}

/// A source whose answers follow a script of `(from_second, answer)` steps.
struct ScriptedSource {
    start: SystemTime,
    script: Vec<(u64, Answer)>,
    asked_at: Mutex<Vec<u64>>,
    /// The times asked at, exactly.
    asked_times: Mutex<Vec<SystemTime>>,
    /// What `/api/v1/targets` would say.
    scrapes: Vec<ScrapeTiming>,
}

impl ScriptedSource {
    fn new(start: SystemTime, script: Vec<(u64, Answer)>, scrapes: Vec<ScrapeTiming>) -> Self {
        ScriptedSource {
            start,
            script,
            asked_at: Mutex::new(Vec::new()),
            asked_times: Mutex::new(Vec::new()),
            scrapes,
        }
    }
}

impl MetricsSource for ScriptedSource {
    fn scrape_timings(&self) -> BoxFuture<'_, Result<Vec<ScrapeTiming>, SourceError>> {
        let scrapes = self.scrapes.clone();
        Box::pin(async move { Ok(scrapes) })
    }

    fn query<'a>(&'a self, _expr: &'a str, at: SystemTime) -> BoxFuture<'a, QueryResult> {
        let second = at.duration_since(self.start).unwrap_or_default().as_secs();
        self.asked_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(second);
        self.asked_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(at);
        let answer = self
            .script
            .iter()
            .rev()
            .find(|(from, _)| *from <= second)
            .map_or(Answer::Empty, |(_, a)| *a);
        Box::pin(async move {
            match answer {
                Answer::Value(v) => Ok(vec![Sample {
                    labels: Labels::new(),
                    value: v,
                }]),
                Answer::Empty => Ok(Vec::new()),
                Answer::Down => Err(SourceError::Connect {
                    url: "http://prometheus.test".into(),
                    message: "connection refused".into(),
                }),
            }
        })
    }
}

/// A loaded group: one ratio rule, every 10 s, `for: 30s`.
fn group(dir: &std::path::Path) -> Group {
    let path = dir.join("rules.yml");
    std::fs::write(
        &path,
        "groups:\n  - name: service\n    interval: 10s\n    rules:\n      - name: HighErrorRate\n        \
         expr: sum(rate(errors_total[1m])) / sum(rate(requests_total[1m]))\n        above: 0.1\n        \
         for: 30s\n        policy: auto\n",
    )
    .unwrap();
    let set = crate::rules::load_paths(&[path], &Default::default(), Duration::from_secs(15))
        .expect("the test rule loads");
    set.groups.into_iter().next().unwrap()
}

/// Runs the group for `seconds` against `script`; returns what the loop
/// sent, as `(fired or resolved, second)`, and the seconds it asked at.
async fn watch_for(
    script: Vec<(u64, Answer)>,
    seconds: u64,
) -> (Vec<(&'static str, u64)>, Vec<u64>) {
    let clock = Clock::tokio();
    let source = Arc::new(ScriptedSource::new(clock.now(), script, Vec::new()));
    watch_source(source, clock, None, seconds).await
}

async fn watch_source(
    source: Arc<ScriptedSource>,
    clock: Clock,
    service: Option<&str>,
    seconds: u64,
) -> (Vec<(&'static str, u64)>, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let group = group(dir.path());
    let start = source.start;
    let board = Arc::new(StatusBoard::default());
    let shared = board.register_group(
        &group.name,
        group.interval,
        group
            .rules
            .iter()
            .cloned()
            .map(super::RuleRuntime::new)
            .collect(),
    );
    let (events_tx, mut events_rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = GroupContext {
        source: source.clone(),
        http: crate::verify::client().expect("an HTTP client"),
        board,
        events: events_tx,
        max_concurrent_queries: 4,
        query_timeout: Duration::from_secs(5),
        clock,
        align_to_scrapes: true,
        service: service.map(str::to_string),
    };
    let task = tokio::spawn(group::run(group, shared, ctx, stop_rx));
    tokio::time::sleep(Duration::from_secs(seconds) + Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    let mut events = Vec::new();
    while let Ok(event) = events_rx.try_recv() {
        let (kind, e) = match event {
            RuleEvent::Fired(e) => ("fired", e),
            RuleEvent::Resolved(e) => ("resolved", e),
        };
        events.push((kind, e.fired_at.duration_since(start).unwrap().as_secs()));
    }
    let asked = source
        .asked_at
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    (events, asked)
}

#[tokio::test(start_paused = true)]
async fn evaluations_run_on_the_interval_and_are_stamped_with_their_tick() {
    let (_, asked) = watch_for(vec![(0, Answer::Value(0.0))], 60).await;
    assert_eq!(asked, [0, 10, 20, 30, 40, 50, 60]);
}

#[tokio::test(start_paused = true)]
async fn evaluations_follow_the_scrapes_when_prometheus_says_when_they_happen() {
    // The service's target, scraped every 10 s, 300 ms after the group
    // starts, for 10 ms; another job's, 5 s later.
    let offsets = aligned_evaluations(Some("demo")).await;
    // Each evaluation 25 ms after a scrape began: its end (10 ms), half as
    // long again for a slower one, and 10 ms for the commit.
    assert_eq!(offsets, [325, 10_325, 20_325, 30_325, 40_325]);
    // Without the service's name the two jobs' scrapes are spread over the
    // interval: no phase fits them both, and the group keeps its own.
    let offsets = aligned_evaluations(None).await;
    assert_eq!(offsets, [0, 10_000, 20_000, 30_000, 40_000]);
}

/// The milliseconds, from the start, at which a group evaluated over 40 s
/// while Prometheus scrapes the `demo` job and another one.
async fn aligned_evaluations(service: Option<&str>) -> Vec<u128> {
    let clock = Clock::tokio();
    let start = clock.now();
    let target = |job: &str, at_ms: u64| ScrapeTiming {
        last_scrape: start + Duration::from_millis(at_ms),
        duration: Duration::from_millis(10),
        interval: Duration::from_secs(10),
        job: Some(job.to_string()),
        service: None,
    };
    let source = Arc::new(ScriptedSource::new(
        start,
        vec![(0, Answer::Value(0.0))],
        vec![target("demo", 300), target("other", 5300)],
    ));
    watch_source(source.clone(), clock, service, 40).await;
    let times = source
        .asked_times
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    times
        .iter()
        .map(|t| t.duration_since(start).unwrap().as_millis())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_breach_fires_exactly_when_for_has_elapsed_and_resolves_when_it_ends() {
    let script = vec![
        (0, Answer::Value(0.0)),
        (20, Answer::Value(0.5)),
        (80, Answer::Value(0.0)),
    ];
    let (events, _) = watch_for(script, 120).await;
    // Pending at 20 s, `for: 30s` → firing at 50 s; clear at 80 s.
    assert_eq!(events, [("fired", 50), ("resolved", 80)]);
}

#[tokio::test(start_paused = true)]
async fn no_data_holds_instead_of_firing_or_resolving() {
    let script = vec![
        (0, Answer::Value(0.5)),
        (10, Answer::Empty),
        (100, Answer::Value(0.5)),
        (120, Answer::Empty),
        (200, Answer::Value(0.0)),
    ];
    let (events, _) = watch_for(script, 220).await;
    // Pending at 0 s; no data from 10 s to 100 s never fires it, though its
    // `for` ran out meanwhile; the breach seen again at 100 s fires it; the
    // missing data after that does not resolve it; a clear answer does.
    assert_eq!(events, [("fired", 100), ("resolved", 200)]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_source_holds_a_firing_rule() {
    let script = vec![
        (0, Answer::Value(0.5)),
        (40, Answer::Down),
        (150, Answer::Value(0.0)),
    ];
    let (events, asked) = watch_for(script, 170).await;
    assert_eq!(events, [("fired", 30), ("resolved", 150)]);
    assert!(
        asked.contains(&100),
        "the loop kept asking while the source was down"
    );
}
