//! Back-testing rules over Prometheus's history: what `watch` would have
//! done. Each query rule's expression (and its traffic guard) is asked over
//! the range with Prometheus's range API at the group's interval, and every
//! evaluation time goes through the same code as a live evaluation:
//! [`evaluate::interpret`] for the outcome, the rule's [`RuleState`] for
//! `for`, `keep_firing_for`, `on_no_data` and `on_error`. Nothing here
//! decides differently from `watch`; it only replays.
//!
//! - `replay` is pure: answers per time in, pending and firing intervals
//!   and outcome counts out.
//! - `would_be_rollbacks` puts the firings, in time order, through the
//!   engine's own guards (`guard::check_automatic`) over a history of the
//!   would-be rollbacks before them, with the provider's deployment list
//!   when there is one (each rollback then names its deployment and
//!   target). Rules firing within `engine.coalesce` of an incident join it.
//!   A firing the guards allow then meets its blame judgement, made
//!   beforehand by the same code as `watch` (`blame::Blamer`, the CLI asks
//!   Prometheus): not to blame is refused by the `blame` guard, not enough
//!   evidence is parked.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::engine::guard::{self, GuardInput};
use crate::engine::{BreakerState, EngineConfig};
use crate::history::{Event, EventKind, History, PhaseName, PhaseRecord, PhaseResult, TriggerKind};
use crate::provider::Deployment;
use crate::rules::{AlertState, Rule, RuleKind, RuleState};
use crate::source::range::{millis, Answers};
use crate::source::SourceError;
use crate::watch::evaluate::{self, Answer};

/// One pending or firing interval of a rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Interval {
    /// When the breach began (the rule went pending, or straight to firing).
    #[serde(with = "crate::clock::rfc3339")]
    pub from: SystemTime,
    /// When it fired; `None` for a breach that cleared before `for`.
    #[serde(with = "opt_time")]
    pub firing_from: Option<SystemTime>,
    /// When it went back to inactive; `None` when still active at the end.
    #[serde(with = "opt_time")]
    pub to: Option<SystemTime>,
    /// The highest value seen while it lasted.
    pub peak: Option<f64>,
    /// How it ended: the outcome of the evaluation that ended it (`ok`: the
    /// value went back; `empty`, `nan`, `error`…: by `on_no_data` or
    /// `on_error`), or `end_of_range`.
    pub ended: String,
}

/// One rule's replay.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RuleReport {
    pub group: String,
    pub rule: String,
    pub interval_seconds: f64,
    pub policy: &'static str,
    /// Evaluations by outcome (`ok`, `empty`, `nan`, `low_traffic`, `error`…).
    pub evaluations: BTreeMap<&'static str, u64>,
    pub intervals: Vec<Interval>,
    /// Why the rule was not replayed (a probe rule, a failed range query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_replayed: Option<String>,
}

/// The answers of a rule's query and traffic guard over the range.
pub(crate) struct RangeAnswers {
    pub main: Result<Answers, SourceError>,
    pub guard: Option<Result<Answers, SourceError>>,
}

/// The evaluation times of a group over `[from, to]`: every `interval`,
/// on the multiples of the interval since the epoch.
pub(crate) fn times(from: SystemTime, to: SystemTime, interval: Duration) -> Vec<u64> {
    let step = interval.as_millis().max(1) as u64;
    let first = millis(from).div_ceil(step) * step;
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= millis(to))
        .collect()
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Replays `rule` over `times` with `answers`, as the watcher would have
/// evaluated it.
pub(crate) fn replay(
    group: &str,
    interval: Duration,
    rule: &Rule,
    times: &[u64],
    answers: &RangeAnswers,
) -> RuleReport {
    replay_from(group, interval, rule, times, answers, 0)
}

/// How long before `--from` a rule must already be evaluated for its state
/// at `--from` to be the watcher's: its `for` (a breach already pending)
/// and its `keep_firing_for` (one already held), in whole intervals.
pub(crate) fn warm_up(rule: &Rule, interval: Duration) -> Duration {
    let wanted = rule.for_ + rule.keep_firing_for;
    let step = interval.as_millis().max(1);
    Duration::from_millis((wanted.as_millis().div_ceil(step) * step) as u64)
}

/// As [`replay`], counting and reporting only the evaluations at or after
/// `report_from` (ms): the ones before only warm the state up, so a breach
/// already running at `report_from` fires when Prometheus would have.
pub(crate) fn replay_from(
    group: &str,
    interval: Duration,
    rule: &Rule,
    times: &[u64],
    answers: &RangeAnswers,
    report_from: u64,
) -> RuleReport {
    let mut report = RuleReport {
        group: group.to_string(),
        rule: rule.name.clone(),
        interval_seconds: interval.as_secs_f64(),
        policy: rule.policy.as_str(),
        evaluations: BTreeMap::new(),
        intervals: Vec::new(),
        not_replayed: None,
    };
    let RuleKind::Query(query) = &rule.kind else {
        report.not_replayed = Some(
            "a probe rule asks an endpoint at the time it runs; its past answers are not in Prometheus".into(),
        );
        return report;
    };
    let mut state = RuleState::new(rule.for_, rule.keep_firing_for);
    let mut failures = 0;
    let mut open: Option<Interval> = None;
    let mut reported = false;
    for &t in times {
        let main = match &answers.main {
            Ok(a) => Ok(a.get(&t).cloned().unwrap_or_default()),
            Err(e) => Err(e.clone()),
        };
        // As `evaluate::fetch`: the guard is asked only when the query answered.
        let guard = match (&query.min_traffic, &main, &answers.guard) {
            (Some(_), Ok(samples), Some(g)) if !samples.is_empty() => Some(match g {
                Ok(a) => Ok(a.get(&t).cloned().unwrap_or_default()),
                Err(e) => Err(e.clone()),
            }),
            _ => None,
        };
        let e = evaluate::interpret(
            rule,
            Answer::Query {
                result: main,
                guard,
            },
            &mut failures,
        );
        let before = state.overall();
        state.step(at(t), e.input.clone());
        let after = state.overall();
        if t < report_from {
            continue;
        }
        *report.evaluations.entry(e.outcome.as_str()).or_default() += 1;
        // A breach the warm-up left pending or firing opens at the first
        // reported evaluation.
        let first = !std::mem::replace(&mut reported, true);
        if (before == AlertState::Inactive || first)
            && after != AlertState::Inactive
            && open.is_none()
        {
            open = Some(Interval {
                from: at(t),
                firing_from: None,
                to: None,
                peak: None,
                ended: String::new(),
            });
        }
        if let Some(i) = open.as_mut() {
            if after == AlertState::Firing && i.firing_from.is_none() {
                i.firing_from = Some(at(t));
            }
            if let Some(v) = e
                .value
                .filter(|v| v.is_finite() && after != AlertState::Inactive)
            {
                i.peak = Some(i.peak.map_or(v, |p| p.max(v)));
            }
        }
        if after == AlertState::Inactive {
            if let Some(mut i) = open.take() {
                i.to = Some(at(t));
                i.ended = e.outcome.as_str().to_string();
                report.intervals.push(i);
            }
        }
    }
    if let Some(mut i) = open.take() {
        i.ended = "end_of_range".into();
        report.intervals.push(i);
    }
    report
}

/// What the engine would have done with one firing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct WouldBe {
    #[serde(with = "crate::clock::rfc3339")]
    pub at: SystemTime,
    pub group: String,
    pub rule: String,
    /// `rollback`, `joins` (the incident of the rollback just before),
    /// `refused`, or `parked` (not enough evidence to blame the deploy: a
    /// person would have been asked).
    pub action: &'static str,
    /// The guard that refused it, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<guard::Guard>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The deployment it would have rolled back, and the one it would have
    /// gone back to (with the provider's deployment list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The blame judgement, when one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blame: Option<crate::blame::Judgement>,
}

/// One firing of a replay: when, which group and rule, and the interval
/// it fired in.
pub(crate) type Firing<'a> = (SystemTime, &'a str, &'a str, &'a Interval);

/// Every firing of `reports`, in time order.
pub(crate) fn firings(reports: &[RuleReport]) -> Vec<Firing<'_>> {
    let mut out: Vec<Firing<'_>> = reports
        .iter()
        .flat_map(|r| {
            r.intervals.iter().filter_map(move |i| {
                i.firing_from
                    .map(|t| (t, r.group.as_str(), r.rule.as_str(), i))
            })
        })
        .collect();
    out.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    out
}

/// Blame judgements made beforehand, by firing time, group and rule.
pub(crate) type Judgements = BTreeMap<(SystemTime, String, String), crate::blame::Judgement>;

/// The guards a back-test cannot judge: without the provider's deployment
/// list, the ones that need it; with it, only the loop guard (which needs
/// the deployments rollbacks created).
pub(crate) fn not_judged(with_deployments: bool) -> &'static [&'static str] {
    if with_deployments {
        &["loop"]
    } else {
        &["same_deployment", "deploy_age", "loop"]
    }
}

/// The deployment live at `t`: the newest one created by then that ran
/// (SUCCESS, or REMOVED once a newer one replaced it), from a list newest
/// first.
pub(crate) fn live_at(deployments: &[Deployment], t: SystemTime) -> Option<&Deployment> {
    deployments
        .iter()
        .find(|d| d.created_at <= t && d.status.served())
}

/// The deployment a rollback from `live` would go back to: the newest older
/// one that can be rolled back to.
fn target_of<'a>(deployments: &'a [Deployment], live: &Deployment) -> Option<&'a Deployment> {
    deployments
        .iter()
        .find(|d| d.created_at < live.created_at && crate::engine::target::is_candidate(d))
}

/// The firings of `reports`, in time order, as if every rule were `auto`,
/// through the engine's own guards (`guard::check_automatic`) over a history
/// of the would-be rollbacks before them: the breaker (OPEN for
/// `engine.half_open_after` after each, as after a successful rollback),
/// one rollback per deployment, the cooldown, the rate limit and
/// `max_deploy_age`. A rule firing within `engine.coalesce` of a rollback
/// joins its incident. Without `deployments` each firing blames a
/// deployment of its own, created as it fired, so the guards that need the
/// list pass (see [`not_judged`]).
pub(crate) fn would_be_rollbacks(
    reports: &[RuleReport],
    engine: &EngineConfig,
    deployments: Option<&[Deployment]>,
    judgements: &Judgements,
) -> Vec<WouldBe> {
    let firings = firings(reports);
    let mut out = Vec::new();
    let mut history = History::default();
    let mut incident: Option<SystemTime> = None;
    for (n, (t, group, rule, _)) in firings.into_iter().enumerate() {
        let since = |a: SystemTime| t.duration_since(a).unwrap_or_default();
        let mut w = WouldBe {
            at: t,
            group: group.to_string(),
            rule: rule.to_string(),
            action: "refused",
            guard: None,
            reason: None,
            deployment: None,
            target: None,
            blame: None,
        };
        if incident.is_some_and(|i| since(i) <= engine.coalesce) {
            w.action = "joins";
            out.push(w);
            continue;
        }
        let unknown = Deployment {
            id: format!("unknown-{n}"),
            status: "SUCCESS".into(),
            created_at: t,
            git_sha: None,
            git_branch: None,
            can_rollback: None,
        };
        let current = match deployments {
            None => &unknown,
            Some(list) => match live_at(list, t) {
                Some(d) => d,
                None => {
                    w.guard = Some(guard::Guard::Provider);
                    w.reason = Some("no deployment in the provider's list was live then".into());
                    out.push(w);
                    continue;
                }
            },
        };
        let breaker = if incident.is_some_and(|i| since(i) < engine.half_open_after) {
            BreakerState::Open
        } else {
            BreakerState::Closed
        };
        let input = GuardInput {
            now: t,
            current,
            history: &history,
            breaker,
            config: engine,
        };
        if let Err(blocked) = guard::check_automatic(&input) {
            w.guard = Some(blocked.guard);
            w.reason = Some(blocked.reason);
            if deployments.is_some() {
                w.deployment = Some(current.id.clone());
            }
            out.push(w);
            continue;
        }
        if let Some(list) = deployments {
            w.deployment = Some(current.id.clone());
            w.target = target_of(list, current).map(|d| d.id.clone());
        }
        if let Some(j) = judgements.get(&(t, group.to_string(), rule.to_string())) {
            w.blame = Some(j.clone());
            match j.verdict {
                crate::blame::Verdict::ToBlame => {}
                crate::blame::Verdict::NotToBlame => {
                    w.guard = Some(guard::Guard::Blame);
                    w.reason = Some(format!("the live deployment is not to blame: {j}"));
                    out.push(w);
                    continue;
                }
                crate::blame::Verdict::Inconclusive => {
                    // A person would have been asked; nothing rolled back.
                    w.action = "parked";
                    w.reason = Some(j.to_string());
                    out.push(w);
                    continue;
                }
            }
        }
        history.events.push(Event {
            kind: EventKind::Rollback,
            id: Some(format!("backtest-{n}")),
            timestamp: crate::clock::millis(t),
            from_deployment_id: Some(current.id.clone()),
            trigger: TriggerKind::Rule,
            success: true,
            phases: vec![PhaseRecord {
                name: PhaseName::Application,
                result: PhaseResult::Succeeded,
                duration_seconds: 0.0,
                detail: String::new(),
                reason: None,
                extra: Default::default(),
            }],
            ..Event::default()
        });
        incident = Some(t);
        w.action = "rollback";
        out.push(w);
    }
    out
}

mod opt_time {
    use serde::Serializer;
    use std::time::SystemTime;

    pub(super) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&crate::clock::millis(*t)),
            None => s.serialize_none(),
        }
    }
}

/// A rule's query and traffic guard over `[first, last]` at `interval`
/// (a probe rule has none: its past answers are not in Prometheus).
pub(crate) async fn range_answers(
    prometheus: &crate::source::prometheus::Prometheus,
    rule: &Rule,
    first: SystemTime,
    last: SystemTime,
    interval: Duration,
) -> RangeAnswers {
    match &rule.kind {
        RuleKind::Query(q) => RangeAnswers {
            main: prometheus.query_range(&q.expr, first, last, interval).await,
            guard: match &q.min_traffic {
                Some(g) => Some(prometheus.query_range(&g.expr, first, last, interval).await),
                None => None,
            },
        },
        RuleKind::Probe(_) => RangeAnswers {
            main: Ok(Default::default()),
            guard: None,
        },
    }
}

#[cfg(test)]
mod tests;
