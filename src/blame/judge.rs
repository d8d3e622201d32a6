//! The blame judgement itself, pure: given what Prometheus said before and
//! after go-live (already interpreted point by point as the watcher would),
//! the per-version figures and the inhibitors, say whether the live
//! deployment is to blame, and why, with the figures it decided on.
//!
//! Order of questions for one rule:
//! 1. did the breach begin within `onset_window` after go-live? (no: not
//!    to blame, `late_onset`)
//! 2. while two versions serve, is the new one worse than the old one by a
//!    significant test? (yes: to blame; no: not to blame; too few: not
//!    enough evidence)
//! 3. is there a baseline at all? (no: not enough evidence)
//! 4. did the condition already hold for `max_baseline_share` of it? (yes:
//!    not to blame)
//! 5. is the post-deploy value worse than the baseline by `min_factor` (or
//!    `min_margin`)? (yes: to blame; no: not to blame)
//!
//! Several rules: an inhibitor that holds makes the incident not the
//! deploy's; otherwise one rule to blame is enough, then one without
//! enough evidence makes the incident so; a rule judged on its onset alone
//! (a probe) blames only when no rule with figures says otherwise.
//! Nothing here does I/O or reads the clock.

use std::time::{Duration, SystemTime};

use super::config::Settings;
use super::stats;
use super::{
    InhibitorEvidence, Judgement, Reason, RuleEvidence, Verdict, VersionFigures, WindowFigures,
};
use crate::rules::value::short;
use crate::rules::{Comparison, Condition};

/// One evaluation time of a window, interpreted as the watcher would.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub at: SystemTime,
    /// The value that matters most; `None` when there was none to use (no
    /// data, NaN, low traffic, an unusable answer).
    pub value: Option<f64>,
    pub breaching: bool,
}

/// Per-version figures, when at least two versions served.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VersionSamples {
    pub label: String,
    pub old: String,
    pub new: String,
    /// Failed and all requests, old then new.
    pub counts: Option<[f64; 4]>,
    /// The rule's value per version, old then new, one per evaluation.
    pub points: Option<(Vec<f64>, Vec<f64>)>,
}

/// One firing rule and what was gathered for it.
#[derive(Debug, Clone)]
pub(crate) struct RuleCase {
    pub group: String,
    pub rule: String,
    pub settings: Settings,
    /// `None` for a probe or an Alertmanager alert: no expression to judge.
    pub condition: Option<Condition>,
    pub go_live: SystemTime,
    /// When the watcher saw the breach begin.
    pub breach_since: SystemTime,
    pub fired_value: Option<f64>,
    pub baseline: Option<(SystemTime, SystemTime, Vec<Point>)>,
    pub post: Option<(SystemTime, SystemTime, Vec<Point>)>,
    pub versions: Option<VersionSamples>,
    /// A query that failed or did not finish in the budget.
    pub failure: Option<String>,
}

fn secs(d: Result<Duration, std::time::SystemTimeError>) -> f64 {
    match d {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The start of the breach that is still going on at the window's end:
/// the first point of the last run of breaching points, where points
/// without a value neither end nor extend the run (no data holds).
pub(crate) fn onset(points: &[Point]) -> Option<SystemTime> {
    let mut start = None;
    for p in points {
        match (p.value, p.breaching) {
            (None, _) => {}
            (Some(_), true) => {
                start.get_or_insert(p.at);
            }
            (Some(_), false) => start = None,
        }
    }
    start
}

fn figures(from: SystemTime, to: SystemTime, points: &[Point]) -> WindowFigures {
    let values: Vec<f64> = points.iter().filter_map(|p| p.value).collect();
    WindowFigures {
        from: crate::clock::seconds(from),
        to: crate::clock::seconds(to),
        points: points.len(),
        usable: values.len(),
        breaching: points
            .iter()
            .filter(|p| p.value.is_some() && p.breaching)
            .count(),
        median: stats::median(&values),
    }
}

/// Whether `post` is worse than `base` by the factor or the margin.
fn worse(op: Comparison, base: f64, post: f64, s: &Settings) -> bool {
    let by_margin = |m: f64| match op {
        Comparison::Above => post >= base + m,
        Comparison::Below => post <= base - m,
    };
    let by_factor = match op {
        Comparison::Above => post >= base * s.min_factor && post > base,
        Comparison::Below => post * s.min_factor <= base && post < base,
    };
    by_factor || s.min_margin.is_some_and(by_margin)
}

fn evidence(case: &RuleCase, verdict: Verdict, reason: Reason, summary: String) -> RuleEvidence {
    RuleEvidence {
        group: case.group.clone(),
        rule: case.rule.clone(),
        verdict,
        reason,
        summary,
        onset: None,
        onset_after_go_live_seconds: None,
        baseline: case.baseline.as_ref().map(|(f, t, p)| figures(*f, *t, p)),
        post: case.post.as_ref().map(|(f, t, p)| figures(*f, *t, p)),
        versions: None,
    }
}

/// Judges one rule.
pub(crate) fn judge_rule(case: &RuleCase) -> RuleEvidence {
    let s = &case.settings;
    if let Some(failure) = &case.failure {
        return evidence(
            case,
            Verdict::Inconclusive,
            Reason::QueryFailed,
            format!("the evidence could not be gathered: {failure}"),
        );
    }
    // 1. Onset: from the post-deploy points when there are some, else when
    // the watcher saw the breach begin.
    // The earlier of the two: the watcher may have restarted mid-breach,
    // and the range may have gaps.
    let onset = case
        .post
        .as_ref()
        .and_then(|(_, _, p)| onset(p))
        .map_or(case.breach_since, |o| o.min(case.breach_since));
    let after = secs(onset.duration_since(case.go_live));
    let with_onset = |mut e: RuleEvidence| {
        e.onset = Some(crate::clock::seconds(onset));
        e.onset_after_go_live_seconds = Some(after);
        e
    };
    // A breach that began before the baseline ended was there before the
    // deploy (between then and go-live: the rollout, or clocks that differ).
    if -after > s.baseline_gap.as_secs_f64() {
        return with_onset(evidence(
            case,
            Verdict::NotToBlame,
            Reason::AlreadyBreaching,
            format!(
                "the breach began {} before go-live",
                crate::duration::format(Duration::from_secs_f64(-after))
            ),
        ));
    }
    if after > s.onset_window.as_secs_f64() {
        return with_onset(evidence(
            case,
            Verdict::NotToBlame,
            Reason::LateOnset,
            format!(
                "the breach began {} after go-live, later than the onset window ({})",
                crate::duration::format(Duration::from_secs_f64(after.max(0.0))),
                crate::duration::format(s.onset_window)
            ),
        ));
    }
    let Some(condition) = case.condition else {
        return with_onset(evidence(
            case,
            Verdict::ToBlame,
            Reason::OnsetAfterDeploy,
            format!(
                "the breach began {} after go-live, within the onset window; the rule has no \
                 expression to compare with a baseline",
                crate::duration::format(Duration::from_secs_f64(after.max(0.0)))
            ),
        ));
    };
    // 2. Versions side by side.
    if let Some(v) = &case.versions {
        if let Some(e) = judge_versions(case, condition.op, v) {
            return with_onset(e);
        }
    }
    // 3. A baseline.
    let Some((_, _, base)) = &case.baseline else {
        return with_onset(evidence(
            case,
            Verdict::Inconclusive,
            Reason::NoBaseline,
            "no baseline was asked for".into(),
        ));
    };
    let usable: Vec<&Point> = base.iter().filter(|p| p.value.is_some()).collect();
    if usable.is_empty() {
        return with_onset(evidence(
            case,
            Verdict::Inconclusive,
            Reason::NoBaseline,
            format!(
                "no usable value in the {} before go-live ({} evaluations: no data, NaN or low traffic)",
                crate::duration::format(s.baseline),
                base.len()
            ),
        ));
    }
    // 4. Already breaching before.
    let breaching = usable.iter().filter(|p| p.breaching).count();
    let share = breaching as f64 / usable.len() as f64;
    if share >= s.max_baseline_share {
        return with_onset(evidence(
            case,
            Verdict::NotToBlame,
            Reason::AlreadyBreaching,
            format!(
                "the condition ({condition}) already held in {breaching} of {} evaluations before \
                 go-live ({:.0} %, blame.max_baseline_share is {:.0} %)",
                usable.len(),
                share * 100.0,
                s.max_baseline_share * 100.0
            ),
        ));
    }
    // 5. Worse than before?
    let values: Vec<f64> = usable.iter().filter_map(|p| p.value).collect();
    let base_value = stats::median(&values).unwrap_or(0.0);
    let breach_values: Vec<f64> = case
        .post
        .as_ref()
        .map(|(_, _, p)| {
            p.iter()
                .filter(|p| p.at >= onset && p.breaching)
                .filter_map(|p| p.value)
                .collect()
        })
        .unwrap_or_default();
    let post_value = stats::median(&breach_values)
        .or(case.fired_value)
        .unwrap_or(base_value);
    let margin = s
        .min_margin
        .map(|m| format!(" or by {}", short(m)))
        .unwrap_or_default();
    if worse(condition.op, base_value, post_value, s) {
        with_onset(evidence(
            case,
            Verdict::ToBlame,
            Reason::WorseThanBaseline,
            format!(
                "{} since go-live against {} before it (at least {}x worse{margin} is to blame); \
                 the breach began {} after go-live",
                short(post_value),
                short(base_value),
                short(s.min_factor),
                crate::duration::format(Duration::from_secs_f64(after.max(0.0)))
            ),
        ))
    } else {
        with_onset(evidence(
            case,
            Verdict::NotToBlame,
            Reason::NotWorseThanBaseline,
            format!(
                "{} since go-live against {} before it: not {}x worse{margin}",
                short(post_value),
                short(base_value),
                short(s.min_factor)
            ),
        ))
    }
}

/// The version comparison; `None` when it has nothing to say (no figures).
fn judge_versions(case: &RuleCase, op: Comparison, v: &VersionSamples) -> Option<RuleEvidence> {
    let s = &case.settings;
    let (test, old_value, new_value, old_n, new_n, statistic, p_value) =
        if let Some([oe, ot, ne, nt]) = v.counts {
            if ot < s.min_requests || nt < s.min_requests {
                let mut e = evidence(
                    case,
                    Verdict::Inconclusive,
                    Reason::TooFewRequests,
                    format!(
                    "{} requests for {}={} and {} for {}={}: fewer than blame.min_requests ({})",
                    short(ot),
                    v.label,
                    v.old,
                    short(nt),
                    v.label,
                    v.new,
                    short(s.min_requests)
                ),
                );
                e.versions = Some(VersionFigures {
                    label: v.label.clone(),
                    old: v.old.clone(),
                    new: v.new.clone(),
                    test: "two_proportions".into(),
                    old_value: if ot > 0.0 { oe / ot } else { 0.0 },
                    new_value: if nt > 0.0 { ne / nt } else { 0.0 },
                    old_n: ot,
                    new_n: nt,
                    statistic: 0.0,
                    p_value: 1.0,
                });
                return Some(e);
            }
            let t = stats::two_proportions(oe, ot, ne, nt)?;
            (
                "two_proportions",
                t.old_rate,
                t.new_rate,
                ot,
                nt,
                t.z,
                t.p_value,
            )
        } else if let Some((old, new)) = &v.points {
            let (oldf, newf): (Vec<f64>, Vec<f64>) = (
                old.iter().copied().filter(|x| x.is_finite()).collect(),
                new.iter().copied().filter(|x| x.is_finite()).collect(),
            );
            if oldf.len() < s.min_points || newf.len() < s.min_points {
                return Some(evidence(
                    case,
                    Verdict::Inconclusive,
                    Reason::TooFewRequests,
                    format!(
                        "{} points for {}={} and {} for {}={}: fewer than blame.min_points ({})",
                        oldf.len(),
                        v.label,
                        v.old,
                        newf.len(),
                        v.label,
                        v.new,
                        s.min_points
                    ),
                ));
            }
            // Worse is larger for `above`, smaller for `below`.
            let t = match op {
                Comparison::Above => stats::mann_whitney(&oldf, &newf)?,
                Comparison::Below => stats::mann_whitney_lower(&oldf, &newf)?,
            };
            (
                "mann_whitney",
                t.old_median,
                t.new_median,
                oldf.len() as f64,
                newf.len() as f64,
                t.u,
                t.p_value,
            )
        } else {
            return None;
        };
    let figures = VersionFigures {
        label: v.label.clone(),
        old: v.old.clone(),
        new: v.new.clone(),
        test: test.into(),
        old_value,
        new_value,
        old_n,
        new_n,
        statistic,
        p_value,
    };
    let mut e = if p_value < s.significance {
        evidence(
            case,
            Verdict::ToBlame,
            Reason::NewVersionWorse,
            format!(
                "{}={} has {} against {} for {}={} ({test}, p = {:.2e} < {})",
                v.label,
                v.new,
                short(new_value),
                short(old_value),
                v.label,
                v.old,
                p_value,
                short(s.significance)
            ),
        )
    } else {
        evidence(
            case,
            Verdict::NotToBlame,
            Reason::VersionsEqual,
            format!(
                "the new version is no worse than the old one: {}={} has {} and {}={} has {} ({test}, p = {:.2} ≥ {})",
                v.label,
                v.new,
                short(new_value),
                v.label,
                v.old,
                short(old_value),
                p_value,
                short(s.significance)
            ),
        )
    };
    e.versions = Some(figures);
    Some(e)
}

/// The incident's verdict from its rules' and the inhibitors'.
pub(crate) fn combine(
    deployment: &str,
    go_live: SystemTime,
    rules: Vec<RuleEvidence>,
    inhibitors: Vec<InhibitorEvidence>,
) -> Judgement {
    let holding: Vec<&InhibitorEvidence> = inhibitors.iter().filter(|i| i.holds).collect();
    let (verdict, reason, summary) = if !holding.is_empty() {
        (
            Verdict::NotToBlame,
            Reason::Inhibited,
            format!(
                "inhibited by {}",
                holding
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else if let Some(inconclusive) = inhibitors.iter().find(|i| i.error.is_some()) {
        (
            Verdict::Inconclusive,
            Reason::QueryFailed,
            format!(
                "the inhibitor {} could not be asked: {}",
                inconclusive.name,
                inconclusive.error.as_deref().unwrap_or_default()
            ),
        )
    } else {
        // A rule with figures outweighs one judged on its onset alone (a
        // health probe failing with the same dependency as the error rate).
        let pick = |v: Verdict| {
            rules
                .iter()
                .find(|r| r.verdict == v && r.reason != Reason::OnsetAfterDeploy)
        };
        match pick(Verdict::ToBlame)
            .or_else(|| pick(Verdict::Inconclusive))
            .or_else(|| pick(Verdict::NotToBlame))
            .or_else(|| rules.first())
        {
            Some(r) => (r.verdict, r.reason, format!("{}: {}", r.rule, r.summary)),
            None => (
                Verdict::Inconclusive,
                Reason::NoBaseline,
                "no rule to judge".into(),
            ),
        }
    };
    Judgement {
        verdict,
        reason,
        summary,
        deployment: deployment.to_string(),
        go_live: crate::clock::seconds(go_live),
        rules,
        inhibitors,
        seconds: 0.0,
        in_progress: None,
    }
}
