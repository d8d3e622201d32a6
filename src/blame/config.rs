//! `[blame]`: how rollbackd judges whether the live deployment is to blame
//! for a breach, for every rule; a rule's own `blame:` overrides each key
//! ([`crate::rules::RuleBlame`]). Checked purely; never read from anywhere
//! but here.

use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::rules::{Inhibitor, RuleBlame};

/// The global blame settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlameConfig {
    /// Judge blame before an `auto` rollback (and show the evidence with a
    /// `confirm`). Off: a firing rule and the guards are enough, as before.
    pub enabled: bool,
    /// How much history before go-live is the baseline.
    #[serde(with = "duration::serde_str")]
    pub baseline: Duration,
    /// The baseline ends this long before go-live, so the rollout itself
    /// (old and new pods side by side, restarts) is not in it.
    #[serde(with = "duration::serde_str")]
    pub baseline_gap: Duration,
    /// The deploy is not to blame when the rule's condition already held
    /// for at least this share of the baseline's evaluations.
    pub max_baseline_share: f64,
    /// The deploy is to blame only when the post-deploy value is at least
    /// this many times worse than the baseline's…
    pub min_factor: f64,
    /// …or, when set, worse by at least this much (in the rule's unit).
    pub min_margin: Option<f64>,
    /// The breach must begin within this long after go-live.
    #[serde(with = "duration::serde_str")]
    pub onset_window: Duration,
    /// The judgement's whole budget (its queries run at once); past it, the
    /// verdict is "not enough evidence".
    #[serde(with = "duration::serde_str")]
    pub budget: Duration,
    /// Version comparison: the label that names the version.
    pub version_label: String,
    /// A difference between versions counts when its one-sided p-value is
    /// below this.
    pub significance: f64,
    /// Fewer requests than this in either version is not enough evidence.
    pub min_requests: f64,
    /// Fewer points than this per version (rank test) is not enough evidence.
    pub min_points: usize,
    /// A newer deployment still in progress when the breach began is the
    /// one to blame: cancel it where the platform allows (`cancel`), and
    /// wait at most this long for it to settle before deciding again.
    #[serde(with = "duration::serde_str")]
    pub settle_timeout: Duration,
    pub cancel_in_progress: bool,
    /// Conditions that inhibit blame for every rule (a dependency down, a
    /// maintenance flag).
    pub inhibit: Vec<Inhibitor>,
}

impl Default for BlameConfig {
    fn default() -> Self {
        BlameConfig {
            enabled: true,
            baseline: Duration::from_secs(30 * 60),
            baseline_gap: Duration::from_secs(60),
            max_baseline_share: 0.1,
            min_factor: 2.0,
            min_margin: None,
            onset_window: Duration::from_secs(15 * 60),
            budget: Duration::from_millis(800),
            version_label: "version".into(),
            significance: 0.01,
            min_requests: 100.0,
            min_points: 10,
            settle_timeout: Duration::from_secs(5 * 60),
            cancel_in_progress: true,
            inhibit: Vec::new(),
        }
    }
}

/// What one rule is judged with: `[blame]` under the rule's own `blame:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub enabled: bool,
    pub baseline: Duration,
    pub baseline_gap: Duration,
    pub max_baseline_share: f64,
    pub min_factor: f64,
    pub min_margin: Option<f64>,
    pub onset_window: Duration,
    pub significance: f64,
    pub min_requests: f64,
    pub min_points: usize,
}

impl BlameConfig {
    /// The settings for a rule with `rule`'s overrides.
    pub fn for_rule(&self, rule: &RuleBlame) -> Settings {
        Settings {
            enabled: rule.enabled.unwrap_or(self.enabled),
            baseline: rule.baseline.unwrap_or(self.baseline),
            baseline_gap: self.baseline_gap,
            max_baseline_share: rule.max_baseline_share.unwrap_or(self.max_baseline_share),
            min_factor: rule.min_factor.unwrap_or(self.min_factor),
            min_margin: rule.min_margin.or(self.min_margin),
            onset_window: rule.onset_window.unwrap_or(self.onset_window),
            significance: self.significance,
            min_requests: self.min_requests,
            min_points: self.min_points,
        }
    }

    /// Every problem, each naming its key.
    pub fn validate(&self, problems: &mut Vec<String>) {
        let mut need = |ok: bool, key: &str, message: &str| {
            if !ok {
                problems.push(format!("blame.{key}: {message}"));
            }
        };
        need(
            !self.baseline.is_zero(),
            "baseline",
            "must be greater than 0",
        );
        need(
            !self.onset_window.is_zero(),
            "onset_window",
            "must be greater than 0",
        );
        need(
            !self.budget.is_zero(),
            "budget",
            "must be greater than 0 (a judgement with no time is never evidence)",
        );
        need(
            self.max_baseline_share > 0.0 && self.max_baseline_share <= 1.0,
            "max_baseline_share",
            "must be above 0 and at most 1",
        );
        need(
            self.min_factor.is_finite() && self.min_factor >= 1.0,
            "min_factor",
            "must be at least 1 (how many times worse than the baseline)",
        );
        need(
            self.min_margin.is_none_or(|m| m.is_finite() && m >= 0.0),
            "min_margin",
            "must be a finite number of at least 0",
        );
        need(
            self.significance > 0.0 && self.significance < 0.5,
            "significance",
            "must be between 0 and 0.5 (a one-sided p-value, such as 0.01)",
        );
        need(
            self.min_requests.is_finite() && self.min_requests >= 1.0,
            "min_requests",
            "must be at least 1",
        );
        need(self.min_points >= 3, "min_points", "must be at least 3");
        need(
            !self.version_label.is_empty()
                && self.version_label.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                }),
            "version_label",
            "must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)",
        );
        for (i, inhibitor) in self.inhibit.iter().enumerate() {
            if let Err(e) = promql_parser::parser::parse(&inhibitor.expr) {
                problems.push(format!(
                    "blame.inhibit[{i}]: {}: invalid PromQL: {}",
                    inhibitor.name,
                    e.trim()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_overrides_only_what_it_sets() {
        let global = BlameConfig::default();
        let rule = RuleBlame {
            onset_window: Some(Duration::from_secs(60)),
            enabled: Some(false),
            ..RuleBlame::default()
        };
        let s = global.for_rule(&rule);
        assert_eq!(s.onset_window, Duration::from_secs(60));
        assert!(!s.enabled);
        assert_eq!(s.baseline, global.baseline);
        assert_eq!(s.min_factor, 2.0);
    }

    #[test]
    fn each_bad_value_is_named() {
        let bad = BlameConfig {
            max_baseline_share: 0.0,
            min_factor: 0.5,
            significance: 0.7,
            version_label: "1version".into(),
            budget: Duration::ZERO,
            inhibit: vec![Inhibitor {
                name: "payments".into(),
                expr: "up{".into(),
            }],
            ..BlameConfig::default()
        };
        let mut problems = Vec::new();
        bad.validate(&mut problems);
        let problems = problems.join("\n");
        for key in [
            "blame.max_baseline_share",
            "blame.min_factor",
            "blame.significance",
            "blame.version_label",
            "blame.budget",
            "blame.inhibit[0]: payments",
        ] {
            assert!(problems.contains(key), "{key} missing from:\n{problems}");
        }
        let mut none = Vec::new();
        BlameConfig::default().validate(&mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
