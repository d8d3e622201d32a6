//! What the watcher knows right now, shared with the HTTP server: each
//! rule's last evaluation and state, and each group's liveness. Written by
//! the group tasks, read by `/metrics`, `/readyz`, `/healthz` and
//! `/api/v1/rules`. Holds no logic of its own beyond bookkeeping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::RuleRuntime;
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

/// The rules of one running group, shared between its task (which writes
/// after each evaluation) and readers (which build [`RuleStatus`] on demand,
/// so an evaluation costs no copying).
pub type SharedRules = Arc<Mutex<Vec<RuleRuntime>>>;

#[derive(Debug)]
struct GroupEntry {
    interval: Duration,
    started: Instant,
    last_completed: Option<Instant>,
    rules: SharedRules,
}

/// The shared board.
#[derive(Debug, Default)]
pub struct StatusBoard {
    groups: Mutex<BTreeMap<String, GroupEntry>>,
}

/// Locks a mutex even if a panicking thread poisoned it: the data is plain
/// bookkeeping and still worth serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StatusBoard {
    /// A group (re)started with these rules; returns the shared handle its
    /// task writes through.
    pub fn register_group(
        &self,
        group: &str,
        interval: Duration,
        rules: Vec<RuleRuntime>,
    ) -> SharedRules {
        let shared = Arc::new(Mutex::new(rules));
        lock(&self.groups).insert(
            group.to_string(),
            GroupEntry {
                interval,
                started: Instant::now(),
                last_completed: None,
                rules: shared.clone(),
            },
        );
        shared
    }

    pub fn group_evaluated(&self, group: &str) {
        if let Some(g) = lock(&self.groups).get_mut(group) {
            g.last_completed = Some(Instant::now());
        }
    }

    /// Forgets every group not in `keep` (after a reload).
    pub fn retain(&self, keep: &BTreeSet<String>) {
        lock(&self.groups).retain(|g, _| keep.contains(g));
    }

    /// Every rule's status, in group order.
    pub fn rules(&self) -> Vec<RuleStatus> {
        let groups: Vec<(String, SharedRules)> = lock(&self.groups)
            .iter()
            .map(|(name, g)| (name.clone(), g.rules.clone()))
            .collect();
        groups
            .iter()
            .flat_map(|(name, rules)| {
                lock(rules)
                    .iter()
                    .map(|rt| rt.status(name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Ready once every group has completed one evaluation.
    pub fn ready(&self) -> Result<(), String> {
        let groups = lock(&self.groups);
        let waiting: Vec<&str> = groups
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
        let groups = lock(&self.groups);
        let now = Instant::now();
        let stuck: Vec<&str> = groups
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
