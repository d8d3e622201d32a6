//! `rollbackd rules backtest`: the rules replayed over Prometheus's history
//! (`backtest/`), printed as a table or as JSON, and a gate for CI.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde::Serialize;

use super::{CliError, Exit};
use crate::backtest::{self, RangeAnswers, RuleReport, WouldBe};
use crate::config::Config;
use crate::source::prometheus::Prometheus;

/// What to replay, over which range.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Rule files or directories (default: watch.rule_paths from the config).
    pub paths: Vec<PathBuf>,
    /// Start of the range, RFC 3339 (`2026-11-20T00:00:00Z`).
    #[arg(long, requires = "to", conflicts_with = "last")]
    pub from: Option<String>,
    /// End of the range, RFC 3339, or `now`.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// The range ending now, as a duration (`7d`, `24h`).
    #[arg(long)]
    pub last: Option<String>,
    /// Only the rule with this name.
    #[arg(long)]
    pub rule: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when more than N would-be rollbacks are found (a CI gate).
    #[arg(long, value_name = "N")]
    pub fail_on_rollbacks: Option<usize>,
}

/// The range the arguments name, checked.
fn range(args: &BacktestArgs, now: SystemTime) -> Result<(SystemTime, SystemTime), String> {
    let time = |flag: &str, text: &str| -> Result<SystemTime, String> {
        if text == "now" {
            return Ok(now);
        }
        crate::clock::parse(text).ok_or_else(|| {
            format!("{flag} {text:?} is not a time: write it in RFC 3339, like 2026-11-20T00:00:00Z, or `now`")
        })
    };
    let (from, to) = match (&args.from, &args.to, &args.last) {
        (Some(from), Some(to), None) => (time("--from", from)?, time("--to", to)?),
        (None, None, Some(last)) => {
            let span = crate::duration::parse(last).map_err(|e| format!("--last: {e}"))?;
            (
                now.checked_sub(span)
                    .ok_or("--last: the range starts before 1970")?,
                now,
            )
        }
        _ => return Err("say which range to replay: --from TIME --to TIME, or --last 7d".into()),
    };
    if from >= to {
        return Err(format!(
            "--from {} is not before --to {}: the range is empty",
            crate::clock::seconds(from),
            crate::clock::seconds(to)
        ));
    }
    if to > now + Duration::from_secs(60) {
        return Err(format!(
            "--to {} is in the future: Prometheus has no data there yet",
            crate::clock::seconds(to)
        ));
    }
    Ok((from, to))
}

#[derive(Serialize)]
struct Report<'a> {
    #[serde(with = "crate::clock::rfc3339")]
    from: SystemTime,
    #[serde(with = "crate::clock::rfc3339")]
    to: SystemTime,
    rules: &'a [RuleReport],
    would_be_rollbacks: &'a [WouldBe],
    /// The engine's guards this back-test did not judge.
    not_judged: &'a [&'static str],
    /// Would-be rollbacks blame refused (not the deploy's) and parked (not
    /// enough evidence).
    blame: BlameCounts,
}

#[derive(Serialize)]
struct BlameCounts {
    refused: usize,
    parked: usize,
}

pub(crate) async fn backtest(config: &Config, args: BacktestArgs) -> Exit {
    let (from, to) = match range(&args, SystemTime::now()) {
        Ok(range) => range,
        Err(e) => return Err(CliError::Usage(e)),
    };
    let mut source =
        crate::watch::RuleSource::from_config(&config.watch, config.template_variables());
    if !args.paths.is_empty() {
        source.paths = args.paths.clone();
    }
    let set = match source.load() {
        Ok(set) => set,
        Err(e) => {
            eprintln!("{e}");
            return Err(CliError::Reported);
        }
    };
    let source_arc = match Prometheus::new(&config.prometheus) {
        Ok(p) => std::sync::Arc::new(p),
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    let prometheus: &Prometheus = &source_arc;
    // Each rule's range queries, at most four rules at a time (replayed
    // in order once answered); a progress line on a terminal.
    let selected: Vec<_> = set
        .groups
        .iter()
        .flat_map(|g| g.rules.iter().map(move |r| (g, r)))
        .filter(|(_, r)| args.rule.as_deref().is_none_or(|name| name == r.name))
        .collect();
    if let Err(e) = within_bounds(&selected, from, to) {
        return Err(CliError::Usage(e));
    }
    let total = selected.len();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let done = std::sync::atomic::AtomicUsize::new(0);
    let done = &done;
    let replayed: Vec<(RuleReport, bool)> = futures_util::stream::iter(selected)
        .map(|(group, rule)| async move {
            let out = replay_one(prometheus, group, rule, from, to).await;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if progress {
                eprint!("\rback-test: {n}/{total} rules replayed");
                if n == total {
                    eprintln!();
                }
            }
            out
        })
        .buffered(4)
        .collect()
        .await;
    let failed = replayed.iter().any(|(_, broken)| *broken);
    let reports: Vec<RuleReport> = replayed.into_iter().map(|(r, _)| r).collect();
    if let (Some(name), true) = (&args.rule, reports.is_empty()) {
        eprintln!("no rule named {name:?}; `rollbackd rules check` lists the rules");
        return Err(CliError::Reported);
    }
    let deployments = deployments(config).await;
    let judgements = match &deployments {
        Some(list) => judge(config, &set, &reports, list, source_arc.clone()).await,
        None => Default::default(),
    };
    let would_be = backtest::would_be_rollbacks(
        &reports,
        &config.engine,
        deployments.as_deref(),
        &judgements,
    );
    let mut not_judged = backtest::not_judged(deployments.is_some()).to_vec();
    if deployments.is_none() && config.blame.enabled {
        // Blame needs each deployment's go-live.
        not_judged.push("blame");
    }
    let not_judged = &not_judged[..];
    let rollbacks = would_be.iter().filter(|w| w.action == "rollback").count();
    if args.json {
        super::engine_cmd::print_json(&Report {
            from,
            to,
            rules: &reports,
            would_be_rollbacks: &would_be,
            not_judged,
            blame: blame_counts(&would_be),
        })?;
    } else {
        print_tables(from, to, &reports, &would_be, not_judged);
    }
    if failed {
        return Err(CliError::Reported);
    }
    match args.fail_on_rollbacks {
        Some(n) if rollbacks > n => Err(CliError::Failed(format!(
            "{rollbacks} would-be rollback(s), more than --fail-on-rollbacks {n}"
        ))),
        _ => Ok(()),
    }
}

/// The most evaluations one rule is replayed for: every evaluation is kept
/// (about 220 bytes each), so a range must not grow memory without bound.
/// 30 days of a 5 s group fit; a 1 s group fits about 11 days.
pub(crate) const MAX_EVALUATIONS: u64 = 1_000_000;

/// Refuses a range whose evaluation count is absurd for some rule's group,
/// saying how to narrow it.
fn within_bounds(
    selected: &[(&crate::rules::Group, &crate::rules::Rule)],
    from: SystemTime,
    to: SystemTime,
) -> Result<(), String> {
    let span = to.duration_since(from).unwrap_or_default();
    for (group, rule) in selected {
        let step = group.interval.max(Duration::from_millis(1));
        let count = (span.as_millis() / step.as_millis()) as u64 + 1;
        if count > MAX_EVALUATIONS {
            let fits = step * MAX_EVALUATIONS as u32;
            return Err(format!(
                "the range is {} evaluations of {}/{} (every {}); a back-test replays at most {MAX_EVALUATIONS} \
                 per rule, about {} at that interval: narrow --from/--to or --last, or pick rules with --rule",
                count,
                group.name,
                rule.name,
                crate::duration::format(step),
                crate::duration::format(fits)
            ));
        }
    }
    Ok(())
}

/// One rule over the range; `true` when its range query failed (a failed
/// query says nothing about the past: the rule is not replayed).
async fn replay_one(
    prometheus: &Prometheus,
    group: &crate::rules::Group,
    rule: &crate::rules::Rule,
    from: SystemTime,
    to: SystemTime,
) -> (RuleReport, bool) {
    let times = backtest::times(from, to, group.interval);
    // Evaluated from before --from, so the state there is the watcher's.
    let warm = backtest::warm_up(rule, group.interval);
    let warmed = backtest::times(from.checked_sub(warm).unwrap_or(from), to, group.interval);
    let report_from = times.first().copied().unwrap_or(u64::MAX);
    let (Some(first), Some(last)) = (warmed.first(), times.last()) else {
        let mut report = backtest::replay(
            &group.name,
            group.interval,
            rule,
            &[],
            &RangeAnswers {
                main: Ok(Default::default()),
                guard: None,
            },
        );
        report.not_replayed = Some(format!(
            "the range is shorter than the group's interval ({}): no evaluation time in it",
            crate::duration::format(group.interval)
        ));
        return (report, false);
    };
    let answers =
        backtest::range_answers(prometheus, rule, at(*first), at(*last), group.interval).await;
    let broken = match (&answers.main, &answers.guard) {
        (Err(e), _) | (_, Some(Err(e))) => Some(e.to_string()),
        _ => None,
    };
    let mut report = backtest::replay_from(
        &group.name,
        group.interval,
        rule,
        &warmed,
        &answers,
        report_from,
    );
    match broken {
        Some(e) => {
            report.evaluations.clear();
            report.intervals.clear();
            report.not_replayed = Some(format!("the range query failed: {e}"));
            (report, true)
        }
        None => (report, false),
    }
}

/// The blame judgement of every firing that blame applies to, made as
/// `watch` would have made it then (the live deployment from the
/// provider's list), four at a time. A deployment's past status (in
/// progress then) is not in the list: that check is not replayed.
async fn judge(
    config: &Config,
    set: &crate::rules::RuleSet,
    reports: &[RuleReport],
    deployments: &[crate::provider::Deployment],
    source: std::sync::Arc<Prometheus>,
) -> backtest::Judgements {
    use crate::rules::event::{FiredRule, FiringEvent};
    // A back-test has time: each judgement gets 30 s, not watch's budget.
    let mut blame = config.blame.clone();
    blame.budget = blame.budget.max(Duration::from_secs(30));
    let blamer = crate::blame::Blamer::new(source, blame);
    let blamer = &blamer;
    let jobs: Vec<_> = backtest::firings(reports)
        .into_iter()
        .filter_map(|(t, group, rule, interval)| {
            let (g, r) = set
                .rules()
                .find(|(g, r)| g.name == group && r.name == rule)?;
            let live = backtest::live_at(deployments, t)?.clone();
            let event = FiringEvent {
                group: group.to_string(),
                rule: rule.to_string(),
                labels: Default::default(),
                value: interval.peak.unwrap_or(f64::NAN),
                condition: r.condition_text(),
                threshold: r.threshold(),
                policy: crate::rules::Policy::Auto,
                since: interval.from,
                fired_at: t,
                annotations: Default::default(),
                spec: Some(std::sync::Arc::new(FiredRule::of(r, g.interval))),
            };
            blamer
                .applies(std::slice::from_ref(&event))
                .then_some((t, event, live))
        })
        .collect();
    futures_util::stream::iter(jobs)
        .map(|(t, event, live)| async move {
            let j = blamer.judge(std::slice::from_ref(&event), &live, t).await;
            ((t, event.group, event.rule), j)
        })
        .buffered(4)
        .collect()
        .await
}

/// The provider's recent deployments, when a provider is configured (the
/// guards that need them are judged then); a failure to list is said and
/// the back-test goes on without them.
async fn deployments(config: &Config) -> Option<Vec<crate::provider::Deployment>> {
    config.provider.as_ref()?;
    let provider = match super::wiring::provider(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rollbackd: the provider cannot be used ({e}); the guards that need its deployments are not judged");
            return None;
        }
    };
    match provider.list(crate::engine::listing::LIST_LIMIT).await {
        Ok(list) => Some(list),
        Err(e) => {
            eprintln!("rollbackd: cannot list deployments ({e}); the guards that need them are not judged");
            None
        }
    }
}

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn blame_counts(would_be: &[WouldBe]) -> BlameCounts {
    BlameCounts {
        refused: would_be
            .iter()
            .filter(|w| {
                w.action == "refused" && w.guard == Some(crate::engine::guard::Guard::Blame)
            })
            .count(),
        parked: would_be.iter().filter(|w| w.action == "parked").count(),
    }
}

fn print_tables(
    from: SystemTime,
    to: SystemTime,
    reports: &[RuleReport],
    would_be: &[WouldBe],
    not_judged: &[&str],
) {
    let time = |t: Option<SystemTime>| t.map_or_else(|| "-".to_string(), crate::clock::seconds);
    println!(
        "back-test from {} to {}",
        crate::clock::seconds(from),
        crate::clock::seconds(to)
    );
    for r in reports {
        println!();
        let counts: Vec<String> = r
            .evaluations
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let total: u64 = r.evaluations.values().sum();
        println!(
            "{}/{} (every {}s, policy {}): {total} evaluations{}",
            r.group,
            r.rule,
            r.interval_seconds,
            r.policy,
            if counts.is_empty() {
                String::new()
            } else {
                format!(" ({})", counts.join(", "))
            }
        );
        if let Some(why) = &r.not_replayed {
            println!("  not replayed: {why}");
            continue;
        }
        if total > 0 && r.evaluations.get("empty") == Some(&total) {
            println!("  no data in the range (is it older than Prometheus's retention, or the expression wrong?)");
            continue;
        }
        if r.intervals.is_empty() {
            println!("  never pending or firing");
            continue;
        }
        println!(
            "  {:<8} {:<21} {:<21} {:<21} {:>12}  ENDED",
            "STATE", "FROM", "FIRING FROM", "TO", "PEAK"
        );
        for i in &r.intervals {
            println!(
                "  {:<8} {:<21} {:<21} {:<21} {:>12}  {}",
                if i.firing_from.is_some() {
                    "firing"
                } else {
                    "pending"
                },
                crate::clock::seconds(i.from),
                time(i.firing_from),
                time(i.to),
                i.peak
                    .map_or_else(|| "-".to_string(), |p| format!("{p:.6}")),
                i.ended
            );
        }
    }
    println!();
    println!(
        "would-be rollbacks (every rule as if auto, through the engine's guards; not judged: {}):",
        not_judged.join(", ")
    );
    if would_be.is_empty() {
        println!("  none");
    }
    for w in would_be {
        let what = match (w.action, w.guard) {
            ("refused", Some(crate::engine::guard::Guard::Blame)) => format!(
                "refused: not the deploy's ({})",
                w.blame.as_ref().map_or("", |j| j.reason.as_str())
            ),
            ("refused", Some(guard)) => format!("refused by the {guard} guard"),
            ("parked", _) => format!(
                "parked for confirmation: not enough evidence ({})",
                w.blame.as_ref().map_or("", |j| j.reason.as_str())
            ),
            ("joins", _) => "joins the incident before it".to_string(),
            (action, _) => match (&w.deployment, &w.target) {
                (Some(from), Some(to)) => format!("{action} {from} -> {to}"),
                (Some(from), None) => format!("{action} {from} (no target in the provider's list)"),
                _ => action.to_string(),
            },
        };
        println!(
            "  {}  {}/{}  {what}",
            crate::clock::seconds(w.at),
            w.group,
            w.rule
        );
    }
    let counts = blame_counts(would_be);
    if !would_be.is_empty() {
        println!(
            "blame: {} refused as not the deploy's, {} parked for lack of evidence",
            counts.refused, counts.parked
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(from: Option<&str>, to: Option<&str>, last: Option<&str>) -> BacktestArgs {
        BacktestArgs {
            paths: Vec::new(),
            from: from.map(String::from),
            to: to.map(String::from),
            last: last.map(String::from),
            rule: None,
            json: false,
            fail_on_rollbacks: None,
        }
    }

    #[test]
    fn bad_ranges_are_refused_with_what_to_write() {
        let now = crate::clock::parse("2026-11-27T00:00:00Z").unwrap();
        let err = |a| range(&a, now).unwrap_err();
        assert!(err(args(
            Some("2026-11-26T00:00:00Z"),
            Some("2026-11-25T00:00:00Z"),
            None
        ))
        .contains("is not before --to"));
        assert!(err(args(Some("yesterday"), Some("now"), None))
            .contains("--from \"yesterday\" is not a time"));
        assert!(err(args(None, None, Some("7 days"))).starts_with("--last: "));
        assert!(err(args(None, None, None)).contains("--last 7d"));
        assert!(err(args(
            Some("2026-11-26T00:00:00Z"),
            Some("2026-11-28T00:00:00Z"),
            None
        ))
        .contains("in the future"));
        let (from, to) = range(&args(None, None, Some("7d")), now).unwrap();
        assert_eq!(
            to.duration_since(from).unwrap(),
            Duration::from_secs(7 * 86400)
        );
    }
}
