//! `[watch]`: which rule files the watcher reads and how often it evaluates
//! and reloads them. Data and its checks only; nothing here starts a task.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Interval for groups that set none.
    #[serde(with = "duration::serde_str")]
    pub evaluation_interval: Duration,
    /// Rule files or directories of `*.yml` / `*.yaml`.
    pub rule_paths: Vec<PathBuf>,
    /// How often rule files are checked for changes; `0s` turns polling off
    /// (SIGHUP still reloads).
    #[serde(with = "duration::serde_str")]
    pub reload_interval: Duration,
    /// Queries in flight at once per group.
    pub max_concurrent_queries: usize,
    /// A reload may leave no rules, or empty a file that held some; off by
    /// default, so rules never vanish because a file was truncated.
    pub allow_empty_rules: bool,
    /// Evaluate each group just after Prometheus's scrapes complete (read
    /// from `/api/v1/targets`), not at a random point of its interval.
    pub align_to_scrapes: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            evaluation_interval: Duration::from_secs(15),
            rule_paths: vec![PathBuf::from("rules")],
            reload_interval: Duration::from_secs(5),
            max_concurrent_queries: 8,
            allow_empty_rules: false,
            align_to_scrapes: true,
        }
    }
}

impl WatchConfig {
    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.evaluation_interval.is_zero() {
            problems.push("watch.evaluation_interval: must be greater than 0s".into());
        }
        if self.rule_paths.is_empty() {
            problems.push("watch.rule_paths: name at least one rule file or directory".into());
        }
        if !(1..=256).contains(&self.max_concurrent_queries) {
            problems.push("watch.max_concurrent_queries: between 1 and 256".into());
        }
    }
}
