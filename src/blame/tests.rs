//! The judgement on scripted windows: one table row per verdict and reason.

use std::time::{Duration, SystemTime};

use super::config::BlameConfig;
use super::judge::{combine, judge_rule, onset, Point, RuleCase, VersionSamples};
use super::{InhibitorEvidence, Reason, Verdict};
use crate::rules::{Comparison, Condition, RuleBlame};

const T0: u64 = 1_800_000_000;

fn at(s: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs((T0 as i64 + s) as u64)
}

/// Points every 15 s from `from` (seconds after go-live), values as given;
/// `f64::NAN` is a point without a usable value.
fn points(from: i64, values: &[f64], threshold: f64) -> Vec<Point> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Point {
            at: at(from + 15 * i as i64),
            value: v.is_finite().then_some(*v),
            breaching: v.is_finite() && *v > threshold,
        })
        .collect()
}

/// An error-rate rule (`> 0.05`) whose breach began `onset` s after go-live,
/// with `before` as the baseline and `after` since go-live.
fn case(onset: i64, before: &[f64], after: &[f64]) -> RuleCase {
    let settings = BlameConfig::default().for_rule(&RuleBlame::default());
    RuleCase {
        group: "http".into(),
        rule: "HighErrorRate".into(),
        settings,
        condition: Some(Condition {
            op: Comparison::Above,
            threshold: 0.05,
        }),
        go_live: at(0),
        breach_since: at(onset),
        fired_value: after.last().copied(),
        baseline: Some((
            at(-1860),
            at(-60),
            points(-60 - 15 * before.len() as i64, before, 0.05),
        )),
        post: Some((at(0), at(15 * after.len() as i64), points(0, after, 0.05))),
        versions: None,
        failure: None,
    }
}

const QUIET: [f64; 8] = [0.0, 0.001, 0.0, 0.002, 0.0, 0.0, 0.001, 0.0];

#[test]
fn each_window_gets_its_verdict_and_reason() {
    let low_level = [0.01; 8];
    let mut late = case(0, &QUIET, &[]);
    late.post = Some((
        at(0),
        at(1200),
        points(
            0,
            &[0.0; 70]
                .iter()
                .copied()
                .chain([0.2, 0.2])
                .collect::<Vec<_>>(),
            0.05,
        ),
    ));
    late.breach_since = at(1050);
    let mut no_baseline = case(30, &[f64::NAN; 8], &[0.0, 0.0, 0.2, 0.2]);
    no_baseline.fired_value = Some(0.2);
    let mut failed = case(30, &QUIET, &[0.0, 0.2]);
    failed.failure = Some("Prometheus did not answer within 5s".into());
    let mut before_deploy = case(-600, &QUIET, &[0.2, 0.2]);
    before_deploy.post = Some((at(0), at(30), points(0, &[0.2, 0.2], 0.05)));
    let table: Vec<(&str, RuleCase, Verdict, Reason)> = vec![
        (
            "a bad deploy: quiet before, breaching since",
            case(30, &QUIET, &[0.0, 0.0, 0.3, 0.3, 0.3]),
            Verdict::ToBlame,
            Reason::WorseThanBaseline,
        ),
        (
            "a bad deploy while a dependency already fails a little",
            case(30, &low_level, &[0.01, 0.01, 0.3, 0.3]),
            Verdict::ToBlame,
            Reason::WorseThanBaseline,
        ),
        (
            "a dependency already failing before a good deploy",
            case(
                0,
                &[0.2, 0.2, 0.2, 0.0, 0.2, 0.2, 0.2, 0.2],
                &[0.2, 0.2, 0.2],
            ),
            Verdict::NotToBlame,
            Reason::AlreadyBreaching,
        ),
        (
            "a breach that began well after go-live",
            late,
            Verdict::NotToBlame,
            Reason::LateOnset,
        ),
        (
            "no baseline at all",
            no_baseline,
            Verdict::Inconclusive,
            Reason::NoBaseline,
        ),
        (
            "a query that failed",
            failed,
            Verdict::Inconclusive,
            Reason::QueryFailed,
        ),
        (
            "a breach that began before go-live",
            before_deploy,
            Verdict::NotToBlame,
            Reason::AlreadyBreaching,
        ),
        (
            "barely worse than a baseline just under the threshold",
            case(30, &[0.04; 8], &[0.04, 0.06, 0.06]),
            Verdict::NotToBlame,
            Reason::NotWorseThanBaseline,
        ),
    ];
    for (name, case, verdict, reason) in table {
        let e = judge_rule(&case);
        assert_eq!(
            (e.verdict, e.reason),
            (verdict, reason),
            "{name}: {}",
            e.summary
        );
        assert!(!e.summary.is_empty(), "{name}");
    }
}

#[test]
fn a_margin_blames_what_the_factor_would_not() {
    let mut c = case(30, &[0.04; 8], &[0.04, 0.07, 0.07]);
    assert_eq!(judge_rule(&c).verdict, Verdict::NotToBlame);
    c.settings.min_margin = Some(0.02);
    let e = judge_rule(&c);
    assert_eq!(
        (e.verdict, e.reason),
        (Verdict::ToBlame, Reason::WorseThanBaseline)
    );
}

#[test]
fn a_below_rule_is_worse_when_lower() {
    // Throughput below 10: 100 before, 4 since.
    let mut c = case(30, &[100.0; 8], &[100.0, 4.0, 4.0]);
    c.condition = Some(Condition {
        op: Comparison::Below,
        threshold: 10.0,
    });
    let relabel = |p: &mut Vec<Point>| {
        for x in p.iter_mut() {
            x.breaching = x.value.is_some_and(|v| v < 10.0);
        }
    };
    relabel(&mut c.baseline.as_mut().unwrap().2);
    relabel(&mut c.post.as_mut().unwrap().2);
    let e = judge_rule(&c);
    assert_eq!(
        (e.verdict, e.reason),
        (Verdict::ToBlame, Reason::WorseThanBaseline),
        "{}",
        e.summary
    );
}

#[test]
fn the_onset_is_the_start_of_the_breach_still_going_on() {
    let p = points(0, &[0.2, 0.0, f64::NAN, 0.2, f64::NAN, 0.3], 0.05);
    // The first breach ended; the second began at 45 s and no data held it.
    assert_eq!(onset(&p), Some(at(45)));
    assert_eq!(onset(&points(0, &[0.0, 0.0], 0.05)), None);
}

fn versions(counts: Option<[f64; 4]>, pts: Option<(Vec<f64>, Vec<f64>)>) -> VersionSamples {
    VersionSamples {
        label: "version".into(),
        old: "v1".into(),
        new: "v2".into(),
        counts,
        points: pts,
    }
}

#[test]
fn versions_side_by_side_decide_before_the_baseline() {
    let bad = || case(30, &QUIET, &[0.0, 0.3, 0.3]);
    let table = [
        // 20 % of the new version's requests fail, 1 % of the old one's.
        (
            Some([10.0, 1000.0, 200.0, 1000.0]),
            None,
            Verdict::ToBlame,
            Reason::NewVersionWorse,
        ),
        // A dependency fails 10 % of both.
        (
            Some([100.0, 1000.0, 104.0, 1000.0]),
            None,
            Verdict::NotToBlame,
            Reason::VersionsEqual,
        ),
        // Five requests: nothing can be told.
        (
            Some([0.0, 5.0, 2.0, 5.0]),
            None,
            Verdict::Inconclusive,
            Reason::TooFewRequests,
        ),
        (
            None,
            Some((vec![0.01; 20], vec![0.3; 20])),
            Verdict::ToBlame,
            Reason::NewVersionWorse,
        ),
        (
            None,
            Some((
                (0..20).map(|i| 0.1 + f64::from(i % 5) * 0.01).collect(),
                (0..20)
                    .map(|i| 0.1 + f64::from((i + 2) % 5) * 0.01)
                    .collect(),
            )),
            Verdict::NotToBlame,
            Reason::VersionsEqual,
        ),
        (
            None,
            Some((vec![0.01; 3], vec![0.3; 3])),
            Verdict::Inconclusive,
            Reason::TooFewRequests,
        ),
    ];
    for (counts, pts, verdict, reason) in table {
        let mut c = bad();
        c.versions = Some(versions(counts, pts));
        let e = judge_rule(&c);
        assert_eq!((e.verdict, e.reason), (verdict, reason), "{}", e.summary);
    }
}

#[test]
fn a_rule_without_an_expression_is_judged_on_its_onset() {
    let mut c = case(20, &QUIET, &[]);
    c.condition = None;
    c.baseline = None;
    c.post = None;
    let e = judge_rule(&c);
    assert_eq!(
        (e.verdict, e.reason),
        (Verdict::ToBlame, Reason::OnsetAfterDeploy)
    );
    c.breach_since = at(3600);
    assert_eq!(judge_rule(&c).reason, Reason::LateOnset);
}

#[test]
fn an_inhibitor_that_holds_overrides_every_rule() {
    let blamed = judge_rule(&case(30, &QUIET, &[0.0, 0.3]));
    let holds = InhibitorEvidence {
        name: "PaymentsDown".into(),
        holds: true,
        error: None,
    };
    let j = combine("d2", at(0), vec![blamed.clone()], vec![holds]);
    assert_eq!(
        (j.verdict, j.reason),
        (Verdict::NotToBlame, Reason::Inhibited)
    );
    assert!(j.summary.contains("PaymentsDown"), "{}", j.summary);
    // One rule to blame is enough; one without evidence beats "not to blame".
    let clear = judge_rule(&case(0, &[0.2; 8], &[0.2]));
    let unknown = judge_rule(&case(30, &[f64::NAN; 8], &[0.3]));
    assert_eq!(
        combine("d2", at(0), vec![clear.clone(), blamed], vec![]).verdict,
        Verdict::ToBlame
    );
    assert_eq!(
        combine("d2", at(0), vec![clear.clone(), unknown], vec![]).verdict,
        Verdict::Inconclusive
    );
    assert_eq!(
        combine("d2", at(0), vec![clear.clone()], vec![]).verdict,
        Verdict::NotToBlame
    );
    // A probe failing within the onset window does not outweigh the error
    // rate's baseline, which says the breach was already there.
    let mut probe = case(20, &QUIET, &[]);
    probe.condition = None;
    let probe = judge_rule(&probe);
    assert_eq!(probe.reason, Reason::OnsetAfterDeploy);
    let j = combine("d2", at(0), vec![probe.clone(), clear], vec![]);
    assert_eq!(
        (j.verdict, j.reason),
        (Verdict::NotToBlame, Reason::AlreadyBreaching)
    );
    assert_eq!(
        combine("d2", at(0), vec![probe], vec![]).verdict,
        Verdict::ToBlame
    );
}

#[test]
fn the_judgement_serializes_with_its_evidence() {
    let e = judge_rule(&case(30, &QUIET, &[0.0, 0.3]));
    let j = combine("d2", at(0), vec![e], vec![]);
    let json = serde_json::to_value(&j).unwrap();
    assert_eq!(json["verdict"], "to_blame");
    assert_eq!(json["reason"], "worse_than_baseline");
    assert_eq!(json["rules"][0]["baseline"]["usable"], 8);
    assert_eq!(json["rules"][0]["onset_after_go_live_seconds"], 15.0);
    let back: super::Judgement = serde_json::from_value(json).unwrap();
    assert_eq!(back, j);
}

mod versions {
    use std::collections::BTreeMap;

    use super::super::gather::{increases, pick_versions, Counts};
    use crate::provider::Deployment;
    use crate::source::range::Answers;
    use crate::source::Sample;

    fn live() -> Deployment {
        Deployment {
            id: "dep-7f3a9c".into(),
            status: "SUCCESS".into(),
            created_at: super::at(0),
            git_sha: Some("4b1e0d2c9a".into()),
            git_branch: None,
            can_rollback: None,
        }
    }

    fn map(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn the_new_version_is_the_one_naming_the_live_deployment() {
        let counts = Counts {
            errors: map(&[("4b1e0d2", 50.0), ("9c9c9c9", 1.0)]),
            requests: map(&[("4b1e0d2", 500.0), ("9c9c9c9", 500.0)]),
            before: map(&[("4b1e0d2", 10.0), ("9c9c9c9", 9000.0)]),
        };
        let v = pick_versions("version", &live(), Some(counts), None).unwrap();
        assert_eq!((v.new.as_str(), v.old.as_str()), ("4b1e0d2", "9c9c9c9"));
        assert_eq!(v.counts, Some([1.0, 500.0, 50.0, 500.0]));
    }

    #[test]
    fn otherwise_the_one_that_did_not_serve_before_go_live() {
        let counts = Counts {
            errors: map(&[("v1", 1.0), ("v2", 50.0), ("v0", 0.0)]),
            requests: map(&[("v1", 400.0), ("v2", 500.0), ("v0", 0.0)]),
            before: map(&[("v1", 9000.0), ("v0", 100.0)]),
        };
        let v = pick_versions("version", &live(), Some(counts), None).unwrap();
        // v0 no longer serves (no requests since go-live): never compared.
        assert_eq!((v.new.as_str(), v.old.as_str()), ("v2", "v1"));
    }

    /// `version`'s counter at each second `t0..`: `per_second` a second
    /// from `t0`, starting at `start`.
    fn counter(a: &mut Answers, version: &str, t0: u64, to: u64, start: f64, per_second: f64) {
        for t in t0..=to {
            a.entry(t * 1000).or_default().push(Sample {
                labels: [("version".to_string(), version.to_string())].into(),
                value: start + per_second * (t - t0) as f64,
            });
        }
    }

    #[test]
    fn counts_cover_only_the_time_both_versions_served() {
        // v1 served alone (100/s, no errors) until v2 appeared at 5 s; from
        // then a dependency fails 30 % of both versions' 50/s.
        let (mut requests, mut errors) = (Answers::new(), Answers::new());
        counter(&mut requests, "v1", 0, 5, 0.0, 100.0);
        counter(&mut errors, "v1", 0, 5, 0.0, 0.0);
        for t in 6..=20 {
            counter(
                &mut requests,
                "v1",
                t,
                t,
                500.0 + 50.0 * (t - 5) as f64,
                0.0,
            );
            counter(&mut errors, "v1", t, t, 15.0 * (t - 5) as f64, 0.0);
        }
        counter(&mut requests, "v2", 5, 20, 0.0, 50.0);
        counter(&mut errors, "v2", 5, 20, 0.0, 15.0);
        let c = increases(&errors, &requests, "version", 0);
        assert_eq!(c.requests, map(&[("v1", 750.0), ("v2", 750.0)]));
        assert_eq!(c.errors, map(&[("v1", 225.0), ("v2", 225.0)]));
        assert_eq!(c.before, map(&[("v1", 0.0)]));
        let v = pick_versions("version", &live(), Some(c), None).unwrap();
        assert_eq!((v.new.as_str(), v.old.as_str()), ("v2", "v1"));
    }

    #[test]
    fn one_version_serving_is_no_comparison() {
        let counts = Counts {
            errors: map(&[("v2", 50.0)]),
            requests: map(&[("v1", 0.0), ("v2", 500.0)]),
            before: map(&[("v1", 9000.0)]),
        };
        assert_eq!(pick_versions("version", &live(), Some(counts), None), None);
    }
}

#[test]
fn for_a_below_rule_the_lower_version_is_the_worse_one() {
    // Throughput per version below 10: v2 serves 4, v1 100.
    let mut c = case(30, &QUIET, &[0.0, 0.3]);
    c.condition = Some(Condition {
        op: Comparison::Below,
        threshold: 10.0,
    });
    c.versions = Some(versions(None, Some((vec![100.0; 12], vec![4.0; 12]))));
    let e = judge_rule(&c);
    assert_eq!(
        (e.verdict, e.reason),
        (Verdict::ToBlame, Reason::NewVersionWorse),
        "{}",
        e.summary
    );
    let v = e.versions.unwrap();
    assert_eq!((v.old_value, v.new_value), (100.0, 4.0));
    // The other way round, v2 is the better one: not to blame.
    c.versions = Some(versions(None, Some((vec![4.0; 12], vec![100.0; 12]))));
    assert_eq!(judge_rule(&c).reason, Reason::VersionsEqual);
}
