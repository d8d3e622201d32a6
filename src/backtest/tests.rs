//! The replay on hand-made answers: intervals, outcomes and the engine's
//! time guards, each time asserted exactly.

use std::time::Duration;

use super::*;
use crate::rules::Labels;
use crate::source::Sample;

/// A rule loaded as `watch` loads it: `> 0.1`, with `extra` YAML fields.
fn rule(extra: &str) -> (Rule, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yml");
    std::fs::write(
        &path,
        format!(
            "groups:\n  - name: http\n    interval: 10s\n    rules:\n      - name: HighErrorRate\n        \
             expr: sum(rate(errors_total[1m]))\n        above: 0.1\n{extra}"
        ),
    )
    .unwrap();
    let set =
        crate::rules::load_paths(&[path], &Default::default(), Duration::from_secs(15)).unwrap();
    let group = set.groups.into_iter().next().unwrap();
    (group.rules[0].clone(), group.interval)
}

/// Answers every 10 s from 0: `Some(v)` a value, `None` no series.
fn answers(values: &[Option<f64>]) -> RangeAnswers {
    let mut a = Answers::new();
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            a.insert(
                i as u64 * 10_000,
                vec![Sample {
                    labels: Labels::new(),
                    value: *v,
                }],
            );
        }
    }
    RangeAnswers {
        main: Ok(a),
        guard: None,
    }
}

fn secs(t: Option<SystemTime>) -> Option<u64> {
    t.map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs())
}

#[test]
fn evaluation_times_fall_on_multiples_of_the_interval() {
    let t = times(at(12_000), at(45_000), Duration::from_secs(10));
    assert_eq!(t, [20_000, 30_000, 40_000]);
}

#[test]
fn a_breach_longer_than_for_fires_and_one_shorter_only_pends() {
    let (rule, interval) = rule("        for: 20s\n");
    let values = [
        Some(0.0),
        Some(0.5), // 10 s: pending
        Some(0.0), // 20 s: cleared before `for`
        Some(0.3), // 30 s: pending
        Some(0.9), // 40 s
        Some(0.4), // 50 s: firing (20 s after 30 s)
        Some(0.0), // 60 s: resolved
        Some(0.2), // 70 s: pending to the end
    ];
    let t: Vec<u64> = (0..values.len() as u64).map(|i| i * 10_000).collect();
    let r = replay("http", interval, &rule, &t, &answers(&values));
    let summary: Vec<_> = r
        .intervals
        .iter()
        .map(|i| {
            (
                secs(Some(i.from)),
                secs(i.firing_from),
                secs(i.to),
                i.peak,
                i.ended.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Some(10), None, Some(20), Some(0.5), "ok"),
            (Some(30), Some(50), Some(60), Some(0.9), "ok"),
            (Some(70), None, None, Some(0.2), "end_of_range"),
        ]
    );
    assert_eq!(r.evaluations.get("ok"), Some(&8));
}

#[test]
fn no_data_holds_a_firing_rule_and_errors_follow_on_error() {
    let (rule, interval) = rule("");
    let values = [Some(0.5), None, None, Some(0.0)];
    let t: Vec<u64> = (0..4).map(|i| i * 10_000).collect();
    let r = replay("http", interval, &rule, &t, &answers(&values));
    assert_eq!(r.intervals.len(), 1, "{:?}", r.intervals);
    assert_eq!(secs(r.intervals[0].to), Some(30), "held through the gap");
    assert_eq!(r.evaluations.get("empty"), Some(&2));
    // A failed range query: every evaluation is an error, and holds.
    let failed = RangeAnswers {
        main: Err(SourceError::Timeout {
            after: Duration::from_secs(1),
        }),
        guard: None,
    };
    let r = replay("http", interval, &rule, &t, &failed);
    assert!(r.intervals.is_empty());
    assert_eq!(r.evaluations.get("error"), Some(&4));
}

#[test]
fn probe_rules_are_named_as_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yml");
    std::fs::write(
        &path,
        "groups:\n  - name: probes\n    rules:\n      - name: Health\n        probe:\n          url: http://127.0.0.1:1/health\n",
    )
    .unwrap();
    let set =
        crate::rules::load_paths(&[path], &Default::default(), Duration::from_secs(15)).unwrap();
    let group = &set.groups[0];
    let r = replay(
        "probes",
        group.interval,
        &group.rules[0],
        &[0],
        &answers(&[]),
    );
    assert!(r.not_replayed.as_deref().unwrap().contains("probe"));
    assert!(r.evaluations.is_empty());
}

fn fired(rule: &str, at_s: u64) -> RuleReport {
    RuleReport {
        group: "http".into(),
        rule: rule.into(),
        interval_seconds: 10.0,
        policy: "auto",
        evaluations: BTreeMap::new(),
        intervals: vec![Interval {
            from: at(at_s * 1000),
            firing_from: Some(at(at_s * 1000)),
            to: None,
            peak: None,
            ended: "end_of_range".into(),
        }],
        not_replayed: None,
    }
}

#[test]
fn firings_go_through_coalescing_the_cooldown_and_the_rate_limit() {
    // coalesce 2 s, breaker HALF_OPEN 5 min after, cooldown 15 min, 3 per hour
    let engine = EngineConfig::default();
    let reports = [
        fired("A", 1000),
        fired("B", 1001),        // joins A's incident
        fired("B2", 1100),       // the breaker is OPEN for 5 min after a rollback
        fired("C", 1000 + 600),  // 10 min later: cooldown
        fired("D", 1000 + 900),  // 15 min later: a rollback
        fired("E", 1000 + 1800), // a rollback
        fired("F", 1000 + 2700), // a fourth within the hour: rate limit
        fired("G", 1000 + 3700), // the first has left the hour
    ];
    let got: Vec<String> = would_be_rollbacks(&reports, &engine, None, &Default::default())
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        got,
        [
            "A rollback -",
            "B joins -",
            "B2 refused breaker",
            "C refused cooldown",
            "D rollback -",
            "E rollback -",
            "F refused rate_limit",
            "G rollback -",
        ]
    );
}

#[test]
fn with_the_provider_s_deployments_each_rollback_names_its_deployment_and_target() {
    let engine = EngineConfig::default(); // max_deploy_age 2 h
    let deployment = |id: &str, status: &str, created_s: u64| Deployment {
        id: id.into(),
        status: status.into(),
        created_at: at(created_s * 1000),
        git_sha: None,
        git_branch: None,
        can_rollback: None,
    };
    // Newest first: d3 went live at 10,000 s, d2 before it, d1 first.
    let list = [
        deployment("d3", "SUCCESS", 10_000),
        deployment("d2", "REMOVED", 5_000),
        deployment("d1", "REMOVED", 1_000),
    ];
    let reports = [
        fired("Early", 500),           // nothing was live yet
        fired("A", 6_000),             // d2 live: back to d1
        fired("B", 10_100),            // d3 live: back to d2
        fired("C", 10_100 + 1_000),    // d3 again, past the cooldown
        fired("D", 5_000 + 3 * 3_600), // d3, but sorted: see below
    ];
    let got: Vec<String> = would_be_rollbacks(&reports, &engine, Some(&list), &Default::default())
        .iter()
        .map(|w| {
            format!(
                "{} {} {} {}->{}",
                w.rule,
                w.action,
                w.guard.map_or("-", crate::engine::guard::Guard::as_str),
                w.deployment.as_deref().unwrap_or("-"),
                w.target.as_deref().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "Early refused provider -->-",
            "A rollback - d2->d1",
            "B rollback - d3->d2",
            "C refused same_deployment d3->-",
            "D refused same_deployment d3->-",
        ]
    );
    // Without a rollback before it, a deployment live for over 2 h is not blamed.
    let old = would_be_rollbacks(
        &[fired("Late", 10_000 + 3 * 3_600)],
        &engine,
        Some(&list),
        &Default::default(),
    );
    assert_eq!(
        old[0].guard,
        Some(crate::engine::guard::Guard::DeployAge),
        "{old:?}"
    );
}

#[test]
fn blame_refuses_and_parks_before_the_history_counts_them() {
    use crate::blame::{Judgement, Reason, Verdict};
    let engine = EngineConfig::default();
    let judged = |verdict, reason| Judgement {
        verdict,
        reason,
        summary: "scripted".into(),
        deployment: "unknown".into(),
        go_live: String::new(),
        rules: Vec::new(),
        inhibitors: Vec::new(),
        seconds: 0.0,
        in_progress: None,
    };
    let reports = [fired("A", 1000), fired("B", 1100), fired("C", 1200)];
    let mut judgements = crate::backtest::Judgements::new();
    let key = |rule: &str, s: u64| (at(s * 1000), "http".to_string(), rule.to_string());
    judgements.insert(
        key("A", 1000),
        judged(Verdict::NotToBlame, Reason::AlreadyBreaching),
    );
    judgements.insert(
        key("B", 1100),
        judged(Verdict::Inconclusive, Reason::NoBaseline),
    );
    judgements.insert(
        key("C", 1200),
        judged(Verdict::ToBlame, Reason::WorseThanBaseline),
    );
    let got: Vec<String> = would_be_rollbacks(&reports, &engine, None, &judgements)
        .iter()
        .map(summary)
        .collect();
    // Neither the refusal nor the parked one opened the breaker or started a
    // cooldown: C, 200 s after A, still rolls back.
    assert_eq!(got, ["A refused blame", "B parked -", "C rollback -"]);
}

#[test]
fn a_breach_already_running_at_from_fires_when_prometheus_would_have() {
    // for: 30s; the breach began 20 s before --from (t = 50 s).
    let (rule, interval) = rule("        for: 30s\n");
    assert_eq!(warm_up(&rule, interval), Duration::from_secs(30));
    let values = [
        Some(0.0), // 0 s
        Some(0.0), // 10 s
        Some(0.0), // 20 s
        Some(0.5), // 30 s: pending, during the warm-up
        Some(0.5), // 40 s
        Some(0.5), // 50 s: --from
        Some(0.5), // 60 s: firing, 30 s after 30 s
        Some(0.5), // 70 s
    ];
    let t: Vec<u64> = (2..values.len() as u64).map(|i| i * 10_000).collect();
    let warmed = replay_from("http", interval, &rule, &t, &answers(&values), 50_000);
    assert_eq!(warmed.intervals.len(), 1, "{:?}", warmed.intervals);
    assert_eq!(secs(Some(warmed.intervals[0].from)), Some(50));
    assert_eq!(secs(warmed.intervals[0].firing_from), Some(60));
    assert_eq!(
        warmed.evaluations.get("ok"),
        Some(&3),
        "only from --from on"
    );
    // Without the warm-up it would have fired only at 80 s: past the range.
    let cold: Vec<u64> = (5..values.len() as u64).map(|i| i * 10_000).collect();
    let r = replay("http", interval, &rule, &cold, &answers(&values));
    assert_eq!(r.intervals[0].firing_from, None);
}

/// `rule action guard`, as the assertions read a would-be rollback.
fn summary(w: &WouldBe) -> String {
    format!(
        "{} {} {}",
        w.rule,
        w.action,
        w.guard.map_or("-", crate::engine::guard::Guard::as_str)
    )
}
