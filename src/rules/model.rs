//! The validated rule set: what the watcher evaluates. Built only by
//! [`super::load`], so every value here has already been checked; nothing in
//! this module does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::Pretty;

/// Label set of one series, as Prometheus returned it (without `__name__`).
pub type Labels = BTreeMap<String, String>;

/// Every group from every rule file, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    pub groups: Vec<Group>,
    /// Every file read, with groups or without.
    pub files: Vec<std::path::PathBuf>,
}

impl RuleSet {
    /// The files whose rules are all gone in `self`: the file is still
    /// there, but empty, without groups, or with groups without rules.
    pub fn emptied_since(&self, before: &RuleSet) -> Vec<std::path::PathBuf> {
        let rules_in = |set: &RuleSet, file: &std::path::Path| -> usize {
            set.groups
                .iter()
                .filter(|g| g.file == file)
                .map(|g| g.rules.len())
                .sum()
        };
        let mut emptied: Vec<std::path::PathBuf> = before
            .files
            .iter()
            .filter(|f| self.files.contains(f) && rules_in(before, f) > 0 && rules_in(self, f) == 0)
            .cloned()
            .collect();
        emptied.dedup();
        emptied
    }

    pub fn rule_count(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len()).sum()
    }

    pub fn rules(&self) -> impl Iterator<Item = (&Group, &Rule)> {
        self.groups
            .iter()
            .flat_map(|g| g.rules.iter().map(move |r| (g, r)))
    }
}

/// A named group of rules evaluated together on one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    /// The file the group came from, for messages.
    pub file: PathBuf,
    pub interval: Duration,
    pub rules: Vec<Rule>,
}

/// One rule, with templates already expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    /// How long a breach must last before the rule fires (Prometheus `for`).
    pub for_: Duration,
    /// How long a firing rule stays firing after the breach clears.
    pub keep_firing_for: Duration,
    pub labels: Labels,
    pub annotations: Labels,
    pub policy: Policy,
    /// The rule's own blame settings (`blame:`); what it leaves unset comes
    /// from `[blame]`.
    pub blame: RuleBlame,
}

/// A rule's `blame:` settings, validated. `None` means "as `[blame]` says".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleBlame {
    pub enabled: Option<bool>,
    pub baseline: Option<Duration>,
    pub onset_window: Option<Duration>,
    pub max_baseline_share: Option<f64>,
    pub min_factor: Option<f64>,
    pub min_margin: Option<f64>,
    /// Conditions under which the deploy is not to blame (a dependency down).
    pub inhibit: Vec<Inhibitor>,
    /// How to compare the new version with the old one while both serve.
    pub versions: Option<VersionCompare>,
}

/// A condition that, while it holds (its expression returns a series),
/// says a breach is not the deploy's: Alertmanager's `inhibit_rules` for
/// rollbacks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inhibitor {
    pub name: String,
    pub expr: String,
}

/// Per-version expressions, each aggregated `by (<label>)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VersionCompare {
    /// The label that names the version; `None`: `[blame] version_label`.
    pub label: Option<String>,
    /// The rule's value per version, compared point by point with a rank
    /// test (Mann-Whitney U) since go-live.
    pub expr: Option<String>,
    /// Failed and all requests per version, as counters
    /// (`sum by (version) (http_requests_total{code=~"5.."})`): rollbackd
    /// takes each one's increase since go-live, so the comparison covers
    /// exactly the time both versions served; compared with a
    /// two-proportion test.
    pub errors: Option<String>,
    pub requests: Option<String>,
}

impl Rule {
    /// True when `other` evaluates exactly like `self`, so a reload may carry
    /// this rule's pending/firing state over to it. Annotations and policy do
    /// not change what is evaluated, so they do not reset state.
    pub fn evaluates_like(&self, other: &Rule) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.for_ == other.for_
            && self.keep_firing_for == other.keep_firing_for
            && self.labels == other.labels
    }

    /// The condition in words, for tables and log lines.
    pub fn condition_text(&self) -> String {
        match &self.kind {
            RuleKind::Query(q) => q.condition.to_string(),
            RuleKind::Probe(p) => format!(">= {} consecutive failures", p.failures),
        }
    }

    /// The threshold as a number, for the `rollbackd_rule_threshold` gauge.
    pub fn threshold(&self) -> f64 {
        match &self.kind {
            RuleKind::Query(q) => q.condition.threshold,
            RuleKind::Probe(p) => p.failures as f64,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// A PromQL expression compared against a threshold.
    Query(QueryRule),
    /// An HTTP health endpoint checked directly.
    Probe(ProbeRule),
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryRule {
    /// The value expression; the comparison lives in `condition` so that an
    /// empty result means "no data", never "healthy".
    pub expr: String,
    pub condition: Condition,
    pub on_no_data: NoDataPolicy,
    pub on_error: ErrorPolicy,
    pub min_traffic: Option<TrafficGuard>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRule {
    pub url: String,
    pub timeout: Duration,
    /// Consecutive failed checks that make a breach.
    pub failures: u32,
    /// Statuses that count as healthy (empty: any 2xx), and what the body must say.
    pub expect: crate::expect::Expect,
}

/// A second expression that must exceed `above` before the rule may fire.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficGuard {
    pub expr: String,
    pub above: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    pub op: Comparison,
    pub threshold: f64,
}

impl Condition {
    pub fn is_breached_by(&self, value: f64) -> bool {
        match self.op {
            Comparison::Above => value > self.threshold,
            Comparison::Below => value < self.threshold,
        }
    }

    /// Of several values, the one that matters most for this condition.
    pub fn worst(&self, a: f64, b: f64) -> f64 {
        match self.op {
            Comparison::Above => a.max(b),
            Comparison::Below => a.min(b),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Comparison::Above => write!(f, "> {}", self.threshold),
            Comparison::Below => write!(f, "< {}", self.threshold),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Above,
    Below,
}

/// What an empty result or a NaN/±Inf value does to the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoDataPolicy {
    /// Keep the current state: nothing advances, nothing resolves.
    #[default]
    Hold,
    /// Treat as healthy: pending and firing series resolve.
    Pass,
    /// Treat as a breach.
    Fire,
}

/// What a failed query (Prometheus down, timeout, API error) does to the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPolicy {
    #[default]
    Hold,
    Fire,
}

/// What rollbackd does when the rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Log the plan, change nothing.
    #[default]
    DryRun,
    /// Wait for an operator to approve.
    Confirm,
    /// Roll back on its own.
    Auto,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::DryRun => "dry_run",
            Policy::Confirm => "confirm",
            Policy::Auto => "auto",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, for {}, policy {})",
            self.name,
            self.condition_text(),
            Pretty(self.for_),
            self.policy
        )
    }
}
