//! Gathering the evidence: the rule's expression (and traffic guard) over
//! the baseline before go-live and since go-live through the range API, the
//! per-version figures, the inhibitors; every query at once, within
//! `blame.budget`. Each point is interpreted by the watcher's own
//! [`interpret_query`], so "no data" and "low traffic" mean here what they
//! mean to the rule. Deciding is `judge.rs`'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;

use super::config::BlameConfig;
use super::judge::{self, Point, RuleCase, VersionSamples};
use super::{InhibitorEvidence, Judgement, Reason, Verdict};
use crate::provider::Deployment;
use crate::rules::event::FiredRule;
use crate::rules::{FiringEvent, Inhibitor, QueryRule, VersionCompare};
use crate::source::range::{millis, Answers};
use crate::source::{MetricsSource, Sample, SourceError};
use crate::watch::evaluate::{interpret_query, Outcome};

/// At most this many points per range query: enough for a median, cheap
/// for Prometheus.
const MAX_POINTS: u64 = 600;

/// Judges incidents against one metrics source.
pub(crate) struct Blamer {
    source: Arc<dyn MetricsSource>,
    pub config: BlameConfig,
    /// Baselines already asked for: a baseline lies wholly before go-live,
    /// so it never changes for a rule and a deployment. Filled while a
    /// rule is pending ([`Blamer::prefetch`]) or by a first judgement.
    baselines: std::sync::Mutex<BTreeMap<BaselineKey, Arc<Vec<Point>>>>,
}

/// A rule's baseline before a deployment's go-live: group, rule, its
/// expression and guard, the deployment, the window.
type BaselineKey = (String, String, String, String, u64, u64);

/// The most baselines kept (a few rules, the last deployments).
const BASELINES_KEPT: usize = 64;

impl Blamer {
    pub(crate) fn new(source: Arc<dyn MetricsSource>, config: BlameConfig) -> Blamer {
        Blamer {
            source,
            config,
            baselines: Default::default(),
        }
    }

    /// Whether blame judges the rule `spec` describes (`[blame]` under the
    /// rule's own `blame.enabled`).
    pub(crate) fn judges(&self, spec: &FiredRule) -> bool {
        spec.blame.enabled.unwrap_or(self.config.enabled)
    }

    /// Asks for a pending rule's baseline before `live`'s go-live now, so
    /// the judgement when it fires asks only for what happened since.
    pub(crate) async fn prefetch(
        &self,
        group: &str,
        rule: &str,
        spec: &FiredRule,
        live: &Deployment,
    ) {
        let Some(query) = &spec.query else { return };
        let settings = self.config.for_rule(&spec.blame);
        if !settings.enabled {
            return;
        }
        let (from, to) = baseline_window(&settings, live.created_at);
        let key = baseline_key(group, rule, query, live, from, to);
        if self.cached(&key).is_some() {
            return;
        }
        if let Ok(points) = self.points(query, spec.interval, from, to).await {
            self.keep(key, Arc::new(points));
        }
    }

    fn cached(&self, key: &BaselineKey) -> Option<Arc<Vec<Point>>> {
        self.baselines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn keep(&self, key: BaselineKey, points: Arc<Vec<Point>>) {
        let mut kept = self
            .baselines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() >= BASELINES_KEPT {
            kept.clear();
        }
        kept.insert(key, points);
    }

    /// Whether blame is judged for these events: on for every rule unless
    /// `[blame]` or the rule's own `blame.enabled` says otherwise.
    pub(crate) fn applies(&self, events: &[FiringEvent]) -> bool {
        events.iter().any(|e| match &e.spec {
            Some(spec) => self.judges(spec),
            None => self.config.enabled,
        })
    }

    /// Judges `live` for the incident of `events` at `now`, within the
    /// budget; a judgement that cannot finish is "not enough evidence".
    pub(crate) async fn judge(
        &self,
        events: &[FiringEvent],
        live: &Deployment,
        now: SystemTime,
    ) -> Judgement {
        let started = std::time::Instant::now();
        let mut judgement =
            match tokio::time::timeout(self.config.budget, self.gather(events, live, now)).await {
                Ok(j) => j,
                Err(_) => Judgement {
                    verdict: Verdict::Inconclusive,
                    reason: Reason::QueryFailed,
                    summary: format!(
                        "the evidence could not be gathered within blame.budget ({})",
                        crate::duration::format(self.config.budget)
                    ),
                    deployment: live.id.clone(),
                    go_live: crate::clock::seconds(live.created_at),
                    rules: Vec::new(),
                    inhibitors: Vec::new(),
                    seconds: 0.0,
                    in_progress: None,
                },
            };
        judgement.seconds = started.elapsed().as_secs_f64();
        judgement
    }

    async fn gather(
        &self,
        events: &[FiringEvent],
        live: &Deployment,
        now: SystemTime,
    ) -> Judgement {
        let go_live = live.created_at;
        let mut seen = std::collections::BTreeSet::new();
        let events: Vec<&FiringEvent> = events
            .iter()
            .filter(|e| seen.insert((e.group.as_str(), e.rule.as_str())))
            .collect();
        let mut inhibitors: Vec<&Inhibitor> = self.config.inhibit.iter().collect();
        for e in &events {
            if let Some(spec) = &e.spec {
                for i in &spec.blame.inhibit {
                    if !inhibitors.iter().any(|x| x.name == i.name) {
                        inhibitors.push(i);
                    }
                }
            }
        }
        let cases = join_all(events.iter().map(|e| self.case(e, live, now)));
        let inhibited = join_all(inhibitors.iter().map(|i| self.inhibitor(i, now)));
        let (cases, inhibitors) = futures_util::join!(cases, inhibited);
        let rules = cases.iter().map(judge::judge_rule).collect();
        judge::combine(&live.id, go_live, rules, inhibitors)
    }

    async fn inhibitor(&self, i: &Inhibitor, now: SystemTime) -> InhibitorEvidence {
        match self.source.query(&i.expr, now).await {
            Ok(samples) => InhibitorEvidence {
                name: i.name.clone(),
                holds: !samples.is_empty(),
                error: None,
            },
            Err(e) => InhibitorEvidence {
                name: i.name.clone(),
                holds: false,
                error: Some(e.to_string()),
            },
        }
    }

    /// Everything one rule is judged on.
    async fn case(&self, e: &FiringEvent, live: &Deployment, now: SystemTime) -> RuleCase {
        let go_live = live.created_at;
        let settings = self
            .config
            .for_rule(&e.spec.as_ref().map(|s| s.blame.clone()).unwrap_or_default());
        let mut case = RuleCase {
            group: e.group.clone(),
            rule: e.rule.clone(),
            settings: settings.clone(),
            condition: None,
            go_live,
            breach_since: e.since,
            fired_value: e.value.is_finite().then_some(e.value),
            baseline: None,
            post: None,
            versions: None,
            failure: None,
        };
        let Some(spec) = &e.spec else { return case };
        let Some(query) = &spec.query else {
            return case;
        };
        case.condition = Some(query.condition);
        let (base_from, base_to) = baseline_window(&settings, go_live);
        let post_from = go_live.min(now);
        let versions = spec.blame.versions.as_ref();
        let key = baseline_key(&e.group, &e.rule, query, live, base_from, base_to);
        let baseline = async {
            if let Some(points) = self.cached(&key) {
                return Ok(points.as_ref().clone());
            }
            let points = self
                .points(query, spec.interval, base_from, base_to)
                .await?;
            self.keep(key.clone(), Arc::new(points.clone()));
            Ok(points)
        };
        let (baseline, post, versions) = futures_util::join!(
            baseline,
            self.points(query, spec.interval, post_from, now),
            async {
                match versions {
                    Some(v) => {
                        self.versions(v, live, base_to, post_from, now, spec.interval)
                            .await
                    }
                    None => Ok(None),
                }
            }
        );
        match (baseline, post, versions) {
            (Ok(b), Ok(p), Ok(v)) => {
                case.baseline = Some((base_from, base_to, b));
                case.post = Some((post_from, now, p));
                case.versions = v;
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => case.failure = Some(e.to_string()),
        }
        case
    }

    /// The rule interpreted at every step from `from` to `to`.
    async fn points(
        &self,
        rule: &QueryRule,
        interval: Duration,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<Point>, SourceError> {
        let step = step(interval, from, to);
        let guard = rule.min_traffic.as_ref().map(|g| g.expr.as_str());
        let (values, traffic) =
            futures_util::join!(self.source.query_range(&rule.expr, from, to, step), async {
                match guard {
                    Some(expr) => self
                        .source
                        .query_range(expr, from, to, step)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            });
        Ok(interpret_range(
            rule,
            &values?,
            traffic?.as_ref(),
            from,
            to,
            step,
        ))
    }

    /// The per-version figures, when at least two versions serve now.
    async fn versions(
        &self,
        v: &VersionCompare,
        live: &Deployment,
        before: SystemTime,
        from: SystemTime,
        now: SystemTime,
        interval: Duration,
    ) -> Result<Option<VersionSamples>, SourceError> {
        let label = v
            .label
            .clone()
            .unwrap_or_else(|| self.config.version_label.clone());
        // Counters over the range from the baseline's end: which versions
        // served then, and each one's increase over the time both served.
        let counts = async {
            match (&v.errors, &v.requests) {
                (Some(errors), Some(requests)) => {
                    let step = step(interval, before, now);
                    let (errors, requests) = futures_util::join!(
                        self.source.query_range(errors, before, now, step),
                        self.source.query_range(requests, before, now, step),
                    );
                    Ok::<_, SourceError>(Some(increases(
                        &errors?,
                        &requests?,
                        &label,
                        millis(before),
                    )))
                }
                _ => Ok(None),
            }
        };
        let step = step(interval, from, now);
        let points = async {
            match &v.expr {
                Some(expr) => self
                    .source
                    .query_range(expr, from, now, step)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (counts, points) = futures_util::join!(counts, points);
        let (counts, points) = (counts?, points?);
        Ok(pick_versions(&label, live, counts, points.as_ref()))
    }
}

/// The baseline's window for a deployment live from `go_live`.
fn baseline_window(s: &super::config::Settings, go_live: SystemTime) -> (SystemTime, SystemTime) {
    let to = go_live.checked_sub(s.baseline_gap).unwrap_or(go_live);
    (to.checked_sub(s.baseline).unwrap_or(to), to)
}

fn baseline_key(
    group: &str,
    rule: &str,
    query: &QueryRule,
    live: &Deployment,
    from: SystemTime,
    to: SystemTime,
) -> BaselineKey {
    let guard = query
        .min_traffic
        .as_ref()
        .map(|g| format!("{} > {}", g.expr, g.above))
        .unwrap_or_default();
    (
        format!("{group}/{rule}"),
        query.expr.clone(),
        guard,
        live.id.clone(),
        millis(from),
        millis(to),
    )
}

/// The step of a range query over `from..to`: the rule's interval, or
/// coarser so the window has at most [`MAX_POINTS`] points.
fn step(interval: Duration, from: SystemTime, to: SystemTime) -> Duration {
    let span = to.duration_since(from).unwrap_or_default();
    let least = span / MAX_POINTS as u32;
    interval.max(least).max(Duration::from_secs(1))
}

/// The range's answers, one point per step, as the watcher interprets them.
fn interpret_range(
    rule: &QueryRule,
    values: &Answers,
    traffic: Option<&Answers>,
    from: SystemTime,
    to: SystemTime,
    step: Duration,
) -> Vec<Point> {
    let step_ms = step.as_millis().max(1) as u64;
    let (from_ms, to_ms) = (millis(from), millis(to));
    let mut out = Vec::new();
    let mut t = from_ms;
    while t <= to_ms {
        let samples = values.get(&t).cloned().unwrap_or_default();
        let guard = traffic.map(|a| Ok(a.get(&t).cloned().unwrap_or_default()));
        let evaluation = interpret_query(rule, Ok(samples), guard);
        out.push(Point {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(t),
            value: (evaluation.outcome == Outcome::Ok)
                .then_some(evaluation.value)
                .flatten(),
            breaching: evaluation.outcome == Outcome::Ok && evaluation.breaching(),
        });
        t += step_ms;
    }
    out
}

/// Per version: failed and all requests since go-live, and all requests
/// before go-live (which versions served then).
pub(super) struct Counts {
    pub errors: BTreeMap<String, f64>,
    pub requests: BTreeMap<String, f64>,
    pub before: BTreeMap<String, f64>,
}

/// Per version and time, the sum of an answer's values (series without
/// `label` are left out).
fn per_version(answers: &Answers, label: &str) -> BTreeMap<String, BTreeMap<u64, f64>> {
    let mut out: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for (t, samples) in answers {
        for (version, value) in by_label(samples, label) {
            *out.entry(version).or_default().entry(*t).or_insert(0.0) += value;
        }
    }
    out
}

/// Failed and all requests per version over the time every version served:
/// from the first step at which the newest of them had a sample (so the old
/// version's requests before the new one took traffic do not dilute its
/// rate) to the last. `first` is the range's first step: the versions with
/// a sample then served before go-live.
pub(super) fn increases(errors: &Answers, requests: &Answers, label: &str, first: u64) -> Counts {
    let requests = per_version(requests, label);
    let errors = per_version(errors, label);
    let start = requests
        .values()
        .filter_map(|series| series.keys().next().copied())
        .max()
        .unwrap_or(first);
    let increase = |series: &BTreeMap<u64, f64>| {
        let Some((_, last)) = series.last_key_value() else {
            return 0.0;
        };
        let from = series.range(..=start).next_back().map_or(0.0, |(_, v)| *v);
        // A counter that went down was reset: all of it is new.
        if *last >= from {
            last - from
        } else {
            *last
        }
    };
    let each = |m: &BTreeMap<String, BTreeMap<u64, f64>>| {
        m.iter()
            .map(|(version, series)| (version.clone(), increase(series)))
            .collect()
    };
    Counts {
        errors: each(&errors),
        requests: each(&requests),
        before: requests
            .iter()
            .filter_map(|(version, series)| series.get(&first).map(|v| (version.clone(), *v)))
            .collect(),
    }
}

/// Sums an answer's values per value of `label` (series without it are left out).
fn by_label(samples: &[Sample], label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.value.is_finite()) {
        if let Some(v) = s.labels.get(label) {
            *out.entry(v.clone()).or_insert(0.0) += s.value;
        }
    }
    out
}

/// Whether a version's label value names `live` (its id or git sha, a
/// prefix either way, as image tags and short shas are).
fn names(value: &str, live: &Deployment) -> bool {
    let value = value.to_ascii_lowercase();
    let matches = |id: &str| {
        let id = id.to_ascii_lowercase();
        !id.is_empty()
            && value.len() >= 6.min(id.len())
            && (id.starts_with(&value) || value.starts_with(&id))
    };
    matches(&live.id) || live.git_sha.as_deref().is_some_and(matches)
}

/// Which two versions to compare, and their figures: the versions serving
/// now (requests above 0, or a value among the last three points); the new
/// one is the one naming the live deployment, else the one that was not
/// serving before go-live (or that appeared last); the old one, of the
/// others, the busiest.
pub(super) fn pick_versions(
    label: &str,
    live: &Deployment,
    counts: Option<Counts>,
    points: Option<&Answers>,
) -> Option<VersionSamples> {
    // Per version: its values in time order, and when it first had one.
    let mut series: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    if let Some(points) = points {
        for (t, samples) in points {
            for s in samples {
                if let Some(v) = s.labels.get(label) {
                    series.entry(v.clone()).or_default().push((*t, s.value));
                }
            }
        }
    }
    let last_times: Vec<u64> = points
        .map(|p| p.keys().rev().take(3).copied().collect())
        .unwrap_or_default();
    let serving: Vec<String> = match &counts {
        Some(Counts { requests, .. }) => requests
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .map(|(v, _)| v.clone())
            .collect(),
        None => series
            .iter()
            .filter(|(_, pts)| {
                pts.iter()
                    .any(|(t, x)| x.is_finite() && last_times.contains(t))
            })
            .map(|(v, _)| v.clone())
            .collect(),
    };
    if serving.len() < 2 {
        return None;
    }
    let first_seen = |v: &str| series.get(v).and_then(|p| p.first()).map(|(t, _)| *t);
    let new = serving
        .iter()
        .find(|v| names(v, live))
        .or_else(|| {
            let before = &counts.as_ref()?.before;
            let fresh: Vec<&String> = serving
                .iter()
                .filter(|v| before.get(*v).copied().unwrap_or(0.0) <= 0.0)
                .collect();
            (fresh.len() == 1).then(|| fresh[0])
        })
        .or_else(|| serving.iter().max_by_key(|v| first_seen(v)))?
        .clone();
    let weight = |v: &str| match &counts {
        Some(Counts { requests, .. }) => requests.get(v).copied().unwrap_or(0.0),
        None => series.get(v).map_or(0.0, |p| p.len() as f64),
    };
    let old = serving
        .iter()
        .filter(|v| **v != new)
        .max_by(|a, b| weight(a).total_cmp(&weight(b)))?
        .clone();
    // Points from when the later of the two appeared: both served then.
    let since = first_seen(&old).max(first_seen(&new)).unwrap_or(0);
    let values = |v: &str| -> Vec<f64> {
        series
            .get(v)
            .map(|p| {
                p.iter()
                    .filter(|(t, x)| *t >= since && x.is_finite())
                    .map(|(_, x)| *x)
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(VersionSamples {
        label: label.to_string(),
        counts: counts.as_ref().map(
            |Counts {
                 errors, requests, ..
             }| {
                let get = |m: &BTreeMap<String, f64>, v: &str| m.get(v).copied().unwrap_or(0.0);
                [
                    get(errors, &old),
                    get(requests, &old),
                    get(errors, &new),
                    get(requests, &new),
                ]
            },
        ),
        points: points.map(|_| (values(&old), values(&new))),
        old,
        new,
    })
}
