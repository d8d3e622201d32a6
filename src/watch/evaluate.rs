//! One evaluation of one rule: run its query (and traffic guard) or its
//! probe, then turn what came back into the state machine's [`Input`] under
//! the rule's policies. The turning is pure ([`interpret_query`],
//! [`interpret_probe`]) so every mapping of data to decision is unit-tested
//! without a server.
//!
//! Longer than 500 lines because its tests (one per outcome) live beside the
//! interpretation; the code itself is about 320 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::rules::{
    ErrorPolicy, Input, Labels, NoDataPolicy, ProbeRule, QueryRule, Rule, RuleKind,
};
use crate::source::{MetricsSource, Sample, SourceError};
use crate::verify::{self, CheckResult};

/// What kind of answer an evaluation got. Kept apart so that "the metric
/// breached", "there was no data" and "the query failed" never blur.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// Numbers came back and were compared with the threshold.
    Ok,
    /// The query returned no series.
    Empty,
    /// Every series was NaN (0/0, no samples in a window).
    Nan,
    /// Every series was +Inf or -Inf.
    Inf,
    /// The traffic guard was not met, so the rule may not move.
    LowTraffic,
    /// The query failed (Prometheus down, timeout, API error).
    Error,
    /// A probe rule's health check failed.
    ProbeFailed,
    /// The answer was past `prometheus.max_response_bytes` or `max_series`
    /// (treated as an error: `on_error` decides).
    TooLarge,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Empty => "empty",
            Outcome::Nan => "nan",
            Outcome::Inf => "inf",
            Outcome::LowTraffic => "low_traffic",
            Outcome::Error => "error",
            Outcome::ProbeFailed => "probe_failed",
            Outcome::TooLarge => "too_large",
        }
    }
}

/// The result of one evaluation, ready for the state machine.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evaluation {
    pub outcome: Outcome,
    pub input: Input,
    /// The value that matters most (the worst finite value, or a probe's
    /// consecutive failures); `None` when there was none.
    pub value: Option<f64>,
    /// Why there was no usable value, in words.
    pub detail: Option<String>,
    /// The metrics label of a query error.
    pub error_kind: Option<&'static str>,
}

impl Evaluation {
    /// True when at least one series is over the threshold right now.
    pub(crate) fn breaching(&self) -> bool {
        matches!(&self.input, Input::Observed { breaching, .. } if !breaching.is_empty())
    }
}

/// What came back from the outside world, before interpretation.
pub(crate) enum Answer {
    Query {
        result: Result<Vec<Sample>, SourceError>,
        guard: Option<Result<Vec<Sample>, SourceError>>,
    },
    Probe(CheckResult),
}

/// Runs the I/O part of one evaluation at time `at`.
pub(crate) async fn fetch(
    rule: &Rule,
    source: &dyn MetricsSource,
    http: &reqwest::Client,
    at: SystemTime,
) -> Answer {
    match &rule.kind {
        RuleKind::Query(q) => {
            let result = source.query(&q.expr, at).await;
            let guard = match (&q.min_traffic, &result) {
                (Some(g), Ok(samples)) if !samples.is_empty() => {
                    Some(source.query(&g.expr, at).await)
                }
                _ => None,
            };
            Answer::Query { result, guard }
        }
        RuleKind::Probe(p) => {
            Answer::Probe(verify::check(http, &p.url, p.timeout, &p.expect).await)
        }
    }
}

/// Interprets an answer for `rule`; `consecutive_failures` is the probe
/// counter carried between evaluations.
///
/// An answer of the other kind (a query answer for a probe rule, or the
/// reverse) is a rollbackd bug, say a rule whose kind changed under a
/// reload while its answer was in flight. It must not end the group's task,
/// which would stop every rule of the group for good: the rule holds its
/// state for this evaluation, which counts as an error.
pub(crate) fn interpret(rule: &Rule, answer: Answer, consecutive_failures: &mut u32) -> Evaluation {
    match (&rule.kind, answer) {
        (RuleKind::Query(q), Answer::Query { result, guard }) => interpret_query(q, result, guard),
        (RuleKind::Probe(p), Answer::Probe(check)) => {
            interpret_probe(p, &check, consecutive_failures)
        }
        (kind, answer) => {
            let (rule_kind, answer_kind) = match (kind, answer) {
                (RuleKind::Query(_), _) => ("query", "probe"),
                (RuleKind::Probe(_), _) => ("probe", "query"),
            };
            let detail = format!(
                "rollbackd bug: a {answer_kind} answer reached the {rule_kind} rule {:?}; \
                 the rule holds its state",
                rule.name
            );
            tracing::error!(rule = %rule.name, "{detail}");
            Evaluation {
                outcome: Outcome::Error,
                input: Input::Hold,
                value: None,
                detail: Some(detail),
                error_kind: None,
            }
        }
    }
}

/// Maps a query result (and traffic guard result) to an evaluation.
pub(crate) fn interpret_query(
    rule: &QueryRule,
    result: Result<Vec<Sample>, SourceError>,
    guard: Option<Result<Vec<Sample>, SourceError>>,
) -> Evaluation {
    let samples = match result {
        Err(e) => return query_error(rule, &e),
        Ok(samples) => samples,
    };
    if samples.is_empty() {
        return no_data(
            rule,
            Outcome::Empty,
            Vec::new(),
            "the query returned no series",
        );
    }
    let (finite, non_finite): (Vec<Sample>, Vec<Sample>) =
        samples.into_iter().partition(|s| s.value.is_finite());
    if finite.is_empty() {
        let all_nan = non_finite.iter().all(|s| s.value.is_nan());
        let (outcome, why) = if all_nan {
            (
                Outcome::Nan,
                "every series is NaN (0/0: no traffic in the window?)",
            )
        } else {
            (Outcome::Inf, "every series is infinite")
        };
        return no_data(rule, outcome, non_finite, why);
    }

    let blocked: BTreeSet<Labels> = match (&rule.min_traffic, guard) {
        (None, _) | (Some(_), None) => BTreeSet::new(),
        (Some(_), Some(Err(e))) => return query_error(rule, &e),
        (Some(g), Some(Ok(traffic))) => finite
            .iter()
            .filter(|s| !guard_allows(&traffic, &s.labels, g.above))
            .map(|s| s.labels.clone())
            .collect(),
    };
    let value = finite
        .iter()
        .map(|s| s.value)
        .reduce(|a, b| rule.condition.worst(a, b));
    if blocked.len() == finite.len() {
        return Evaluation {
            outcome: Outcome::LowTraffic,
            input: Input::Hold,
            value,
            detail: Some(format!(
                "traffic guard not met (min_traffic.above {})",
                rule.min_traffic.as_ref().map_or(0.0, |g| g.above)
            )),
            error_kind: None,
        };
    }

    let mut breaching = BTreeMap::new();
    let mut held = blocked;
    for s in finite {
        if !held.contains(&s.labels) && rule.condition.is_breached_by(s.value) {
            breaching.insert(s.labels, s.value);
        }
    }
    for s in non_finite {
        match rule.on_no_data {
            NoDataPolicy::Hold => {
                held.insert(s.labels);
            }
            NoDataPolicy::Pass => {}
            NoDataPolicy::Fire => {
                breaching.insert(s.labels, s.value);
            }
        }
    }
    Evaluation {
        outcome: Outcome::Ok,
        input: Input::Observed { breaching, held },
        value,
        detail: None,
        error_kind: None,
    }
}

/// A guard allows a series when its traffic exceeds `above`. One guard series
/// covers every rule series; several are matched by identical labels.
fn guard_allows(traffic: &[Sample], labels: &Labels, above: f64) -> bool {
    let matching = if traffic.len() == 1 {
        traffic.first()
    } else {
        traffic.iter().find(|t| &t.labels == labels)
    };
    matching.is_some_and(|t| t.value.is_finite() && t.value > above)
}

fn no_data(rule: &QueryRule, outcome: Outcome, series: Vec<Sample>, why: &str) -> Evaluation {
    let input = match rule.on_no_data {
        NoDataPolicy::Hold => Input::Hold,
        NoDataPolicy::Pass => Input::clear(),
        NoDataPolicy::Fire => fire_on(series),
    };
    Evaluation {
        outcome,
        input,
        value: None,
        detail: Some(why.to_string()),
        error_kind: None,
    }
}

fn query_error(rule: &QueryRule, e: &SourceError) -> Evaluation {
    let input = match rule.on_error {
        ErrorPolicy::Hold => Input::Hold,
        ErrorPolicy::Fire => fire_on(Vec::new()),
    };
    Evaluation {
        outcome: match e {
            SourceError::TooLarge(_) => Outcome::TooLarge,
            _ => Outcome::Error,
        },
        input,
        value: None,
        detail: Some(e.to_string()),
        error_kind: Some(e.kind()),
    }
}

/// The breach an explicit `fire` policy makes: the given series, or one
/// series without labels when there are none.
fn fire_on(series: Vec<Sample>) -> Input {
    let mut breaching: BTreeMap<Labels, f64> =
        series.into_iter().map(|s| (s.labels, s.value)).collect();
    if breaching.is_empty() {
        breaching.insert(Labels::new(), f64::NAN);
    }
    Input::Observed {
        breaching,
        held: BTreeSet::new(),
    }
}

/// Maps one health check to an evaluation: a breach once `failures`
/// consecutive checks have failed.
pub(crate) fn interpret_probe(
    rule: &ProbeRule,
    check: &CheckResult,
    consecutive_failures: &mut u32,
) -> Evaluation {
    if check.healthy {
        *consecutive_failures = 0;
    } else {
        *consecutive_failures = consecutive_failures.saturating_add(1);
    }
    let value = f64::from(*consecutive_failures);
    let input = if *consecutive_failures >= rule.failures {
        Input::breach(Labels::new(), value)
    } else {
        Input::clear()
    };
    Evaluation {
        outcome: if check.healthy {
            Outcome::Ok
        } else {
            Outcome::ProbeFailed
        },
        input,
        value: Some(value),
        detail: (!check.healthy).then(|| check.reason.clone()),
        error_kind: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Comparison, Condition, TrafficGuard};
    use std::time::Duration;

    fn rule() -> QueryRule {
        QueryRule {
            expr: "ratio".into(),
            condition: Condition {
                op: Comparison::Above,
                threshold: 0.1,
            },
            on_no_data: NoDataPolicy::Hold,
            on_error: ErrorPolicy::Hold,
            min_traffic: None,
        }
    }

    fn sample(instance: &str, value: f64) -> Sample {
        Sample {
            labels: Labels::from([("instance".to_string(), instance.to_string())]),
            value,
        }
    }

    fn down() -> SourceError {
        SourceError::Connect {
            url: "http://127.0.0.1:1".into(),
            message: "refused".into(),
        }
    }

    #[test]
    fn a_value_over_the_threshold_breaches() {
        let e = interpret_query(&rule(), Ok(vec![sample("a", 0.5), sample("b", 0.01)]), None);
        assert_eq!(e.outcome, Outcome::Ok);
        assert_eq!(e.value, Some(0.5));
        let Input::Observed { breaching, held } = e.input else {
            panic!()
        };
        assert_eq!(breaching.len(), 1);
        assert!(held.is_empty());
    }

    #[test]
    fn no_data_holds_instead_of_firing() {
        assert_eq!(
            interpret_query(&rule(), Ok(vec![]), None).input,
            Input::Hold
        );
        let nan = interpret_query(&rule(), Ok(vec![sample("a", f64::NAN)]), None);
        assert_eq!((nan.outcome, nan.input), (Outcome::Nan, Input::Hold));
        let inf = interpret_query(&rule(), Ok(vec![sample("a", f64::INFINITY)]), None);
        assert_eq!((inf.outcome, inf.input), (Outcome::Inf, Input::Hold));
    }

    #[test]
    fn no_data_policies_pass_and_fire() {
        let mut r = rule();
        r.on_no_data = NoDataPolicy::Pass;
        assert_eq!(interpret_query(&r, Ok(vec![]), None).input, Input::clear());
        r.on_no_data = NoDataPolicy::Fire;
        assert!(interpret_query(&r, Ok(vec![]), None).breaching());
    }

    #[test]
    fn a_failed_query_holds_and_says_why() {
        let e = interpret_query(&rule(), Err(down()), None);
        assert_eq!((e.outcome, &e.input), (Outcome::Error, &Input::Hold));
        assert_eq!(e.error_kind, Some("connect"));
        let mut r = rule();
        r.on_error = ErrorPolicy::Fire;
        assert!(interpret_query(&r, Err(down()), None).breaching());
    }

    #[test]
    fn a_nan_series_is_held_while_others_are_judged() {
        let e = interpret_query(
            &rule(),
            Ok(vec![sample("a", f64::NAN), sample("b", 0.9)]),
            None,
        );
        let Input::Observed { breaching, held } = e.input else {
            panic!()
        };
        assert_eq!(breaching.len(), 1);
        assert!(held.contains(&sample("a", 0.0).labels));
    }

    #[test]
    fn the_traffic_guard_blocks_at_low_traffic() {
        let mut r = rule();
        r.min_traffic = Some(TrafficGuard {
            expr: "rps".into(),
            above: 1.0,
        });
        let low = interpret_query(
            &r,
            Ok(vec![sample("a", 0.5)]),
            Some(Ok(vec![Sample {
                labels: Labels::new(),
                value: 0.05,
            }])),
        );
        assert_eq!(
            (low.outcome, &low.input),
            (Outcome::LowTraffic, &Input::Hold)
        );
        let high = interpret_query(
            &r,
            Ok(vec![sample("a", 0.5)]),
            Some(Ok(vec![Sample {
                labels: Labels::new(),
                value: 20.0,
            }])),
        );
        assert!(high.breaching());
        let missing = interpret_query(&r, Ok(vec![sample("a", 0.5)]), Some(Ok(vec![])));
        assert_eq!(missing.outcome, Outcome::LowTraffic);
    }

    #[test]
    fn the_traffic_guard_matches_series_by_labels() {
        let mut r = rule();
        r.min_traffic = Some(TrafficGuard {
            expr: "rps".into(),
            above: 1.0,
        });
        let e = interpret_query(
            &r,
            Ok(vec![sample("a", 0.5), sample("b", 0.5)]),
            Some(Ok(vec![sample("a", 50.0), sample("b", 0.1)])),
        );
        let Input::Observed { breaching, held } = e.input else {
            panic!()
        };
        assert!(breaching.contains_key(&sample("a", 0.0).labels));
        assert!(held.contains(&sample("b", 0.0).labels));
    }

    #[test]
    fn a_probe_breaches_after_n_consecutive_failures() {
        let rule = ProbeRule {
            url: "http://127.0.0.1:1/health".into(),
            timeout: Duration::from_secs(1),
            failures: 3,
            expect: verify::Expect::default(),
        };
        let fail = CheckResult {
            status: Some(503),
            ..CheckResult::unanswered(Duration::ZERO, "HTTP 503".into())
        };
        let ok = CheckResult {
            healthy: true,
            status: Some(200),
            reason: String::new(),
            ..fail.clone()
        };
        let mut n = 0;
        let script = [&fail, &fail, &ok, &fail, &fail, &fail];
        let breaches: Vec<bool> = script
            .iter()
            .map(|c| interpret_probe(&rule, c, &mut n).breaching())
            .collect();
        assert_eq!(breaches, [false, false, false, false, false, true]);
    }

    #[test]
    fn an_answer_of_the_wrong_kind_holds_the_rule_instead_of_ending_its_group() {
        let rule = Rule {
            name: "ErrorRate".into(),
            kind: RuleKind::Query(rule()),
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            labels: Labels::new(),
            annotations: Labels::new(),
            policy: crate::rules::Policy::DryRun,
            blame: Default::default(),
        };
        let probe_answer = Answer::Probe(CheckResult {
            status: Some(503),
            ..CheckResult::unanswered(Duration::ZERO, "HTTP 503".into())
        });
        let mut failures = 0;
        let e = interpret(&rule, probe_answer, &mut failures);
        assert_eq!(e.outcome, Outcome::Error);
        assert_eq!(e.input, Input::Hold);
        assert!(e.detail.unwrap().contains("ErrorRate"));
        assert_eq!(failures, 0);
    }
}
