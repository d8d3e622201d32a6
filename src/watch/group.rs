//! One group's evaluation loop: on every tick of its interval, evaluate each
//! rule (the group's queries asked together, several to a request, requests
//! in flight concurrently, bounded), step each rule's state machine, log
//! transitions and hand firing events to the engine. A rule that fails never
//! stops the others; missed ticks are skipped, never burst.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::{Instant, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use super::evaluate::{self, Outcome};
use super::status::{SharedRules, StatusBoard};
use crate::rules::{
    ActiveSeries, AlertState, FiringEvent, Group, Rule, RuleEvent, RuleKind, RuleState, RuleStatus,
};
use crate::source::{MetricsSource, Query, QueryResult, SourceError};
use crate::telemetry::events::{self, EvaluationTimers};

/// A rule with everything the watcher remembers about it between
/// evaluations. Carried across reloads when the rule is unchanged.
#[derive(Debug, Clone)]
pub(crate) struct RuleRuntime {
    pub rule: Rule,
    pub state: RuleState,
    pub consecutive_failures: u32,
    pub evaluations: BTreeMap<&'static str, u64>,
    pub firing_events: u64,
    pub last: Option<(SystemTime, evaluate::Evaluation)>,
}

impl RuleRuntime {
    pub(crate) fn new(rule: Rule) -> Self {
        RuleRuntime {
            state: RuleState::new(rule.for_, rule.keep_firing_for),
            rule,
            consecutive_failures: 0,
            evaluations: BTreeMap::new(),
            firing_events: 0,
            last: None,
        }
    }

    /// The status shown on `/metrics` and `/api/v1/rules`.
    pub(crate) fn status(&self, group: &str) -> RuleStatus {
        let (last_evaluation, value, outcome, detail) = match &self.last {
            Some((at, e)) => (
                Some(*at),
                e.value,
                Some(e.outcome.as_str()),
                e.detail.clone(),
            ),
            None => (None, None, None, None),
        };
        RuleStatus {
            group: group.to_string(),
            rule: self.rule.name.clone(),
            kind: match self.rule.kind {
                RuleKind::Query(_) => "query",
                RuleKind::Probe(_) => "probe",
            },
            policy: self.rule.policy,
            condition: self.rule.condition_text(),
            threshold: self.rule.threshold(),
            state: self.state.overall(),
            value,
            outcome,
            detail,
            evaluations: self.evaluations.clone(),
            firing_events: self.firing_events,
            last_evaluation,
            active_series: self
                .state
                .series()
                .map(|(labels, state)| ActiveSeries {
                    labels: labels.clone(),
                    state,
                })
                .collect(),
        }
    }
}

/// What a group task needs from the watcher.
#[derive(Clone)]
pub(crate) struct GroupContext {
    pub source: Arc<dyn MetricsSource>,
    pub http: reqwest::Client,
    pub board: Arc<StatusBoard>,
    pub events: mpsc::Sender<RuleEvent>,
    pub max_concurrent_queries: usize,
    pub query_timeout: std::time::Duration,
    /// Wall time for the evaluations' timestamps (tokio's in tests).
    pub clock: crate::clock::Clock,
    /// Start each group's ticker just after the scrapes (`watch.align_to_scrapes`).
    pub align_to_scrapes: bool,
    /// `[service] name`: its targets decide the phase, when it has some.
    pub service: Option<String>,
}

/// Evaluates the group's rules every `group.interval` until `stop` flips,
/// then returns the rules with their state so a reload can carry it over.
pub(crate) async fn run(
    group: Group,
    shared: SharedRules,
    ctx: GroupContext,
    mut stop: watch::Receiver<bool>,
) -> Vec<RuleRuntime> {
    let histograms = EvaluationTimers::new(&group.name);
    let plan = Plan::new(&group);
    let mut ticker = tokio::time::interval(group.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut aligned: Option<super::align::Aligned> = None;
    let mut next_alignment = tokio::time::Instant::now();
    let mut last_tick: Option<tokio::time::Instant> = None;
    let mut anchor = (ctx.clock.now(), tokio::time::Instant::now());
    loop {
        if ctx.align_to_scrapes && tokio::time::Instant::now() >= next_alignment {
            next_alignment = tokio::time::Instant::now() + super::align::EVERY;
            let realign = super::align::ticker(&group, &ctx, &mut aligned, last_tick);
            let moved = tokio::select! {
                biased;
                _ = stop.changed() => break,
                moved = realign => moved,
            };
            if let Some(t) = moved {
                ticker = t;
            }
        }
        let scheduled = tokio::select! {
            biased;
            _ = stop.changed() => break,
            at = ticker.tick() => at,
        };
        if *stop.borrow() {
            break;
        }
        last_tick = Some(scheduled);
        // Like Prometheus, an evaluation is stamped with its scheduled time,
        // not with whenever the task woke up: otherwise a `for` that ends
        // exactly on a tick would fire one interval late about half the time.
        let now = stamp(
            &mut anchor,
            scheduled,
            ctx.clock.now(),
            tokio::time::Instant::now(),
        );
        evaluate_once(&group, &plan, &shared, &ctx, &histograms, now).await;
        ctx.board.group_evaluated(&group.name);
    }
    let rules = std::mem::take(&mut *shared.lock().unwrap_or_else(PoisonError::into_inner));
    rules
}

/// The wall time of a tick scheduled at `scheduled` (tokio's clock).
/// `anchor` pairs the two clocks once, so ticks a period apart are stamped
/// exactly a period apart: reading both clocks afresh at each tick gave
/// stamps a few microseconds off each time, and a `for` ending exactly on a
/// tick then fired one interval late about half the time. The pair is made
/// again when the wall clock has moved more than 100 ms from it (NTP).
fn stamp(
    anchor: &mut (SystemTime, tokio::time::Instant),
    scheduled: tokio::time::Instant,
    wall_now: SystemTime,
    instant_now: tokio::time::Instant,
) -> SystemTime {
    let fresh = wall_now
        .checked_sub(instant_now.saturating_duration_since(scheduled))
        .unwrap_or(wall_now);
    let anchored = if scheduled >= anchor.1 {
        anchor.0.checked_add(scheduled - anchor.1)
    } else {
        anchor.0.checked_sub(anchor.1 - scheduled)
    };
    let drift = |a: SystemTime| {
        a.duration_since(fresh)
            .or_else(|_| fresh.duration_since(a))
            .unwrap_or_default()
    };
    match anchored {
        Some(a) if drift(a) <= std::time::Duration::from_millis(100) => a,
        _ => {
            *anchor = (wall_now, instant_now);
            fresh
        }
    }
}

/// The group's queries, worked out once per run of the group task: every
/// query rule's expression and traffic guard, in one list that the source
/// may answer several to a request.
struct Plan<'g> {
    queries: Vec<Query<'g>>,
    /// Per rule, in order: the positions of its expression and guard in
    /// `queries`, or `None` for a probe rule.
    slots: Vec<Option<(usize, Option<usize>)>>,
}

impl<'g> Plan<'g> {
    fn new(group: &'g Group) -> Self {
        let mut queries = Vec::new();
        let mut slots = Vec::new();
        for rule in &group.rules {
            slots.push(match &rule.kind {
                RuleKind::Query(q) => {
                    queries.push(Query::new(&q.expr));
                    let expr = queries.len() - 1;
                    let guard = q.min_traffic.as_ref().map(|g| {
                        queries.push(Query::new(&g.expr));
                        queries.len() - 1
                    });
                    Some((expr, guard))
                }
                RuleKind::Probe(_) => None,
            });
        }
        Plan { queries, slots }
    }
}

/// One evaluation of every rule of the group at time `now`.
async fn evaluate_once(
    group: &Group,
    plan: &Plan<'_>,
    shared: &SharedRules,
    ctx: &GroupContext,
    histograms: &EvaluationTimers,
    now: SystemTime,
) {
    let started = Instant::now();
    // The definitions never change while the task runs; the runtimes are only
    // locked while answers are applied, never across an await.
    let queries = async {
        let results = ctx
            .source
            .query_many(&plan.queries, now, ctx.max_concurrent_queries)
            .await;
        (results, started.elapsed())
    };
    let probes: Vec<BoxFuture<'_, (usize, evaluate::Answer)>> = group
        .rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| matches!(rule.kind, RuleKind::Probe(_)))
        .map(|(i, rule)| {
            Box::pin(async move { (i, fetch_timed(rule, ctx, &histograms.rule, now).await) })
                as BoxFuture<'_, _>
        })
        .collect();
    let probes = stream::iter(probes)
        .buffer_unordered(ctx.max_concurrent_queries.max(1))
        .collect::<Vec<_>>();
    let ((results, took), probed) = futures_util::future::join(queries, probes).await;

    let mut answers: Vec<Option<evaluate::Answer>> = group.rules.iter().map(|_| None).collect();
    for (i, answer) in probed {
        answers[i] = Some(answer);
    }
    let mut results: Vec<Option<QueryResult>> = results.into_iter().map(Some).collect();
    let mut take = |i: usize| {
        results
            .get_mut(i)
            .and_then(Option::take)
            .unwrap_or_else(|| {
                Err(SourceError::Decode(
                    "the source gave no answer to this query".into(),
                ))
            })
    };
    for (slot, answer) in plan.slots.iter().zip(answers.iter_mut()) {
        if let Some((expr, guard)) = slot {
            histograms.rule.record(took.as_secs_f64());
            let result = take(*expr);
            // Interpreting looks at the guard only when the expression has data.
            let guard = guard.map(&mut take);
            *answer = Some(evaluate::Answer::Query { result, guard });
        }
    }

    let mut fired = Vec::new();
    {
        let mut rules = shared.lock().unwrap_or_else(PoisonError::into_inner);
        for (rt, answer) in rules.iter_mut().zip(answers) {
            if let Some(answer) = answer {
                apply(&group.name, group.interval, rt, answer, now, &mut fired);
            }
        }
    }
    for event in fired {
        if let RuleEvent::Fired(e) = &event {
            events::fired(e);
        }
        if ctx.events.send(event).await.is_err() {
            tracing::error!(group = %group.name, "the rollback side is gone; firing event dropped");
        }
    }
    let elapsed = started.elapsed();
    histograms.group.record(elapsed.as_secs_f64());
    events::group_evaluated(&group.name, elapsed, group.interval);
}

/// Interprets one answer and steps the rule's state machine.
fn apply(
    group: &str,
    interval: std::time::Duration,
    rt: &mut RuleRuntime,
    answer: evaluate::Answer,
    now: SystemTime,
    fired: &mut Vec<RuleEvent>,
) {
    let evaluation = evaluate::interpret(&rt.rule, answer, &mut rt.consecutive_failures);
    *rt.evaluations
        .entry(evaluation.outcome.as_str())
        .or_default() += 1;
    if let (Outcome::Error | Outcome::TooLarge, Some(kind)) =
        (evaluation.outcome, evaluation.error_kind)
    {
        events::query_failed(
            group,
            &rt.rule.name,
            kind,
            evaluation.detail.as_deref().unwrap_or(""),
        );
    }
    let transitions = rt.state.step(now, evaluation.input.clone());
    for t in &transitions {
        events::state_changed(group, &rt.rule.name, t, now);
        let resolved = t.from == AlertState::Firing && t.to == AlertState::Inactive;
        if t.to == AlertState::Firing || resolved {
            if t.to == AlertState::Firing {
                rt.firing_events += 1;
            }
            let mut labels = t.labels.clone();
            labels.extend(rt.rule.labels.clone());
            let event = FiringEvent {
                group: group.to_string(),
                rule: rt.rule.name.clone(),
                labels,
                value: t.value,
                condition: rt.rule.condition_text(),
                threshold: rt.rule.threshold(),
                policy: rt.rule.policy,
                since: t.active_since,
                fired_at: now,
                annotations: rt.rule.annotations.clone(),
                spec: Some(std::sync::Arc::new(crate::rules::event::FiredRule::of(
                    &rt.rule, interval,
                ))),
            };
            fired.push(if resolved {
                RuleEvent::Resolved(event)
            } else {
                RuleEvent::Fired(event)
            });
        }
    }
    rt.last = Some((now, evaluation));
}

async fn fetch_timed(
    rule: &Rule,
    ctx: &GroupContext,
    histogram: &metrics::Histogram,
    now: SystemTime,
) -> evaluate::Answer {
    let started = Instant::now();
    let answer = evaluate::fetch(rule, ctx.source.as_ref(), &ctx.http, now).await;
    histogram.record(started.elapsed().as_secs_f64());
    answer
}

#[cfg(test)]
mod stamp_tests {
    use std::time::{Duration, SystemTime};

    use tokio::time::Instant;

    use super::stamp;

    #[test]
    fn ticks_a_period_apart_are_stamped_exactly_a_period_apart() {
        let (wall, start) = (
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            Instant::now(),
        );
        let mut anchor = (wall, start);
        // Each tick's fresh reading of the two clocks is a few µs off, one
        // way or the other: the regression that made `for` fire late.
        for (n, wobble_us) in [(1u64, 7i64), (2, -5), (3, 3), (4, -9)] {
            let scheduled = start + Duration::from_secs(n);
            let woke = scheduled + Duration::from_millis(2);
            let wall_now = if wobble_us >= 0 {
                wall + Duration::from_secs(n)
                    + Duration::from_millis(2)
                    + Duration::from_micros(wobble_us as u64)
            } else {
                wall + Duration::from_secs(n) + Duration::from_millis(2)
                    - Duration::from_micros((-wobble_us) as u64)
            };
            assert_eq!(
                stamp(&mut anchor, scheduled, wall_now, woke),
                wall + Duration::from_secs(n),
                "tick {n}"
            );
        }
    }

    #[test]
    fn a_wall_clock_that_jumped_is_followed() {
        let (wall, start) = (
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            Instant::now(),
        );
        let mut anchor = (wall, start);
        // NTP moved the wall clock 2 s ahead.
        let scheduled = start + Duration::from_secs(10);
        let jumped = wall + Duration::from_secs(12);
        assert_eq!(stamp(&mut anchor, scheduled, jumped, scheduled), jumped);
        // The next tick is a period after the new pairing.
        let next = scheduled + Duration::from_secs(1);
        assert_eq!(
            stamp(
                &mut anchor,
                next,
                jumped + Duration::from_secs(1) + Duration::from_micros(4),
                next
            ),
            jumped + Duration::from_secs(1)
        );
    }
}
