//! What the watcher knows right now, shared with the HTTP server: each
//! rule's last evaluation and state, and each group's liveness. Written by
//! the group tasks, read by `/metrics`, `/readyz`, `/healthz` and
//! `/api/v1/rules`. Holds no logic of its own beyond bookkeeping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::rules::{AlertState, Labels, Policy};

/// One rule as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub group: String,
    pub rule: String,
    pub kind: &'static str,
    pub policy: Policy,
    pub condition: String,
    pub threshold: f64,
    pub state: AlertState,
    pub value: Option<f64>,
    pub outcome: Option<&'static str>,
    pub detail: Option<String>,
    /// Evaluations so far, by outcome.
    pub evaluations: BTreeMap<&'static str, u64>,
    pub firing_events: u64,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_rfc3339")]
    pub last_evaluation: Option<SystemTime>,
    pub active_series: Vec<ActiveSeries>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveSeries {
    pub labels: Labels,
    pub state: AlertState,
}

#[derive(Debug, Clone)]
struct GroupLiveness {
    interval: Duration,
    started: Instant,
    last_completed: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    rules: BTreeMap<(String, String), RuleStatus>,
    groups: BTreeMap<String, GroupLiveness>,
}

/// The shared board.
#[derive(Debug, Default)]
pub struct StatusBoard {
    inner: Mutex<Inner>,
}

impl StatusBoard {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put(&self, status: RuleStatus) {
        self.lock()
            .rules
            .insert((status.group.clone(), status.rule.clone()), status);
    }

    /// A group (re)started with this interval.
    pub fn group_started(&self, group: &str, interval: Duration) {
        self.lock().groups.insert(
            group.to_string(),
            GroupLiveness {
                interval,
                started: Instant::now(),
                last_completed: None,
            },
        );
    }

    pub fn group_evaluated(&self, group: &str) {
        if let Some(g) = self.lock().groups.get_mut(group) {
            g.last_completed = Some(Instant::now());
        }
    }

    /// Forgets every group and rule not in `keep` (after a reload).
    pub fn retain(&self, groups: &BTreeSet<String>, rules: &BTreeSet<(String, String)>) {
        let mut inner = self.lock();
        inner.groups.retain(|g, _| groups.contains(g));
        inner.rules.retain(|k, _| rules.contains(k));
    }

    pub fn rules(&self) -> Vec<RuleStatus> {
        self.lock().rules.values().cloned().collect()
    }

    /// Ready once every group has completed one evaluation.
    pub fn ready(&self) -> Result<(), String> {
        let inner = self.lock();
        let waiting: Vec<&str> = inner
            .groups
            .iter()
            .filter(|(_, g)| g.last_completed.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "waiting for the first evaluation of group(s): {}",
                waiting.join(", ")
            ))
        }
    }

    /// Live while every group completes evaluations: none may be silent for
    /// three intervals plus `grace` (the query timeout).
    pub fn live(&self, grace: Duration) -> Result<(), String> {
        let inner = self.lock();
        let now = Instant::now();
        let stuck: Vec<&str> = inner
            .groups
            .iter()
            .filter(|(_, g)| {
                let since = g.last_completed.unwrap_or(g.started);
                now.duration_since(since) > g.interval * 3 + grace
            })
            .map(|(n, _)| n.as_str())
            .collect();
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "no evaluation completed recently in group(s): {}",
                stuck.join(", ")
            ))
        }
    }
}

mod opt_rfc3339 {
    use serde::Serializer;
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }
}
