//! `rollbackd init`: rules for a service's own metrics. It asks Prometheus
//! which series the service has (`source::catalog`), recognises the
//! conventions its framework follows (`conventions`), writes a rule per
//! signal found, and back-tests each over the history Prometheus holds
//! with the back-test's own code (`backtest::replay`), so the threshold
//! it proposes comes with how often it would have fired.
//!
//! The threshold proposed is the lowest candidate that would not have
//! fired over the history; the comment lists every candidate's firings, so
//! a team that knows those firings were real incidents picks a lower one.
//! With no history to replay, the convention's usual default, said so.

pub(crate) mod conventions;
pub(crate) mod render;

use std::time::{Duration, SystemTime};

use self::conventions::{Catalog, Proposal};
use self::render::Proposed;
use crate::rules::{Rule, RuleKind};
use crate::source::prometheus::Prometheus;
use crate::source::SourceError;

/// Why `init` cannot propose anything.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    #[error(transparent)]
    Prometheus(#[from] SourceError),
    #[error("no series match {selector} over the last {span}; {jobs}")]
    NoSeries {
        selector: String,
        span: String,
        jobs: String,
    },
    #[error("the proposed rules do not load (a bug in init): {0}")]
    Rules(String),
}

/// What Prometheus holds for `selector` (the matchers inside braces) over
/// `[from, to]`.
pub(crate) async fn discover(
    prometheus: &Prometheus,
    selector: &str,
    from: SystemTime,
    to: SystemTime,
) -> Result<Catalog, InitError> {
    let braces = format!("{{{selector}}}");
    let names = prometheus.metric_names(&braces, from, to).await?;
    if names.is_empty() {
        let jobs = match prometheus.label_values("job", "up", from, to).await {
            Ok(jobs) if !jobs.is_empty() => {
                format!("the jobs Prometheus scrapes: {}", jobs.join(", "))
            }
            _ => "Prometheus scrapes no job".into(),
        };
        return Err(InitError::NoSeries {
            selector: braces,
            span: crate::duration::format(to.duration_since(from).unwrap_or_default()),
            jobs,
        });
    }
    let mut catalog = Catalog {
        names: names.into_iter().collect(),
        ..Default::default()
    };
    for metric in Catalog::candidates() {
        if !catalog.names.contains(metric) {
            continue;
        }
        let matcher = match selector.is_empty() {
            true => format!("{{__name__=\"{metric}\"}}"),
            false => format!("{{__name__=\"{metric}\", {selector}}}"),
        };
        let labels = prometheus.label_names(&matcher, from, to).await?;
        catalog
            .labels
            .insert(metric.to_string(), labels.into_iter().collect());
    }
    // Types tell a native histogram from a counter; without metadata, the
    // classic names still work.
    if let Ok(metadata) = prometheus.metadata().await {
        catalog.types = metadata
            .into_iter()
            .filter(|(name, _)| catalog.names.contains(name))
            .map(|(name, m)| (name, m.kind))
            .collect();
    }
    Ok(catalog)
}

/// Each proposal's threshold, from a back-test over `[from, to]` of the
/// rule as `rules` loaded it (the file `init` writes, with its defaults).
pub(crate) async fn propose(
    prometheus: &Prometheus,
    proposals: Vec<Proposal>,
    rules: &[Rule],
    interval: Duration,
    from: SystemTime,
    to: SystemTime,
) -> Vec<Proposed> {
    let mut out = Vec::new();
    for proposal in proposals {
        let Some(rule) = rules.iter().find(|r| r.name == proposal.name) else {
            continue;
        };
        out.push(backtest(prometheus, proposal, rule, interval, from, to).await);
    }
    out
}

async fn backtest(
    prometheus: &Prometheus,
    proposal: Proposal,
    rule: &Rule,
    interval: Duration,
    from: SystemTime,
    to: SystemTime,
) -> Proposed {
    let times = crate::backtest::times(from, to, interval);
    let warm = crate::backtest::warm_up(rule, interval);
    let warmed = crate::backtest::times(from.checked_sub(warm).unwrap_or(from), to, interval);
    let report_from = times.first().copied().unwrap_or(u64::MAX);
    let (Some(first), Some(last)) = (warmed.first(), times.last()) else {
        return fallback(proposal, "the range holds no evaluation time");
    };
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let answers =
        crate::backtest::range_answers(prometheus, rule, at(*first), at(*last), interval).await;
    if let Err(e) = &answers.main {
        return fallback(
            proposal,
            &format!("the back-test's range query failed: {e}"),
        );
    }
    let mut firings = Vec::new();
    let mut usable = 0;
    for &candidate in proposal.candidates {
        let mut rule = rule.clone();
        if let RuleKind::Query(q) = &mut rule.kind {
            q.condition.threshold = candidate;
        }
        let report =
            crate::backtest::replay_from("init", interval, &rule, &warmed, &answers, report_from);
        usable = usable.max(report.evaluations.get("ok").copied().unwrap_or(0));
        let fired = report
            .intervals
            .iter()
            .filter(|i| i.firing_from.is_some())
            .count();
        firings.push((candidate, fired));
    }
    if usable == 0 {
        return fallback(
            proposal,
            "no evaluation in the back-tested range had a value (no history yet, or too little traffic)",
        );
    }
    let span = crate::duration::format(to.duration_since(from).unwrap_or_default());
    let unit = proposal.unit;
    let (threshold, why) = match firings.iter().find(|(_, n)| *n == 0) {
        Some((c, _)) => (
            *c,
            format!(
                "Proposed: {}, the lowest candidate that would not have fired in {span} of history ({usable} evaluations with a value).",
                unit.show(*c)
            ),
        ),
        None => {
            let (c, n) = *firings.last().expect("candidates");
            (
                c,
                format!(
                    "Proposed: {}, the highest candidate; it would still have fired {n} time(s) in {span}: look at those before trusting it.",
                    unit.show(c)
                ),
            )
        }
    };
    Proposed {
        proposal,
        threshold,
        firings,
        why,
    }
}

fn fallback(proposal: Proposal, reason: &str) -> Proposed {
    let threshold = proposal.default;
    let why = format!(
        "Proposed: {}, the usual default: {reason}; back-test it later with `rollbackd rules backtest --last 7d`.",
        proposal.unit.show(threshold)
    );
    Proposed {
        proposal,
        threshold,
        firings: Vec::new(),
        why,
    }
}
