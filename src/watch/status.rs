//! What the watcher knows right now, shared with the HTTP server: each
//! rule's last evaluation and state, and each group's liveness. Written by
//! the group tasks, read by `/metrics`, `/readyz`, `/healthz` and
//! `/api/v1/rules`. Holds no logic of its own beyond bookkeeping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::RuleRuntime;
use crate::rules::RuleStatus;

/// Why the watcher is not ready or not live; the groups concerned, by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HealthError {
    /// Some groups have not completed their first evaluation.
    #[error("waiting for the first evaluation of group(s): {}", .0.join(", "))]
    Waiting(Vec<String>),
    /// Some groups have been silent for three intervals plus the grace.
    #[error("no evaluation completed recently in group(s): {}", .0.join(", "))]
    Stuck(Vec<String>),
}

/// The rules of one running group, shared between its task (which writes
/// after each evaluation) and readers (which build [`RuleStatus`] on demand,
/// so an evaluation costs no copying).
pub(crate) type SharedRules = Arc<Mutex<Vec<RuleRuntime>>>;

#[derive(Debug)]
struct GroupEntry {
    interval: Duration,
    started: Instant,
    last_completed: Option<Instant>,
    rules: SharedRules,
}

/// The shared board. Its locks are taken even when poisoned: a panicking
/// reader leaves plain bookkeeping that is still worth serving.
#[derive(Debug, Default)]
pub(crate) struct StatusBoard {
    groups: Mutex<BTreeMap<String, GroupEntry>>,
}

impl StatusBoard {
    /// A group (re)started with these rules; returns the shared handle its
    /// task writes through.
    pub(crate) fn register_group(
        &self,
        group: &str,
        interval: Duration,
        rules: Vec<RuleRuntime>,
    ) -> SharedRules {
        let shared = Arc::new(Mutex::new(rules));
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
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

    pub(crate) fn group_evaluated(&self, group: &str) {
        if let Some(g) = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(group)
        {
            g.last_completed = Some(Instant::now());
        }
    }

    /// Forgets every group not in `keep` (after a reload).
    pub(crate) fn retain(&self, keep: &BTreeSet<String>) {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|g, _| keep.contains(g));
    }

    /// The running groups' names.
    pub(crate) fn group_names(&self) -> BTreeSet<String> {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The rules pending now (breaching, waiting out `for`), with what
    /// blame needs of them: their judgement's baseline can be asked for
    /// before they fire.
    /// Each as (group, rule, what blame needs).
    pub(crate) fn pending(&self) -> Vec<(String, String, crate::rules::event::FiredRule)> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (name, g) in groups.iter() {
            for rt in g
                .rules
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
            {
                if rt.state.overall() == crate::rules::AlertState::Pending {
                    out.push((
                        name.clone(),
                        rt.rule.name.clone(),
                        crate::rules::event::FiredRule::of(&rt.rule, g.interval),
                    ));
                }
            }
        }
        out
    }

    /// Every rule's status, in group order.
    pub(crate) fn rules(&self) -> Vec<RuleStatus> {
        let groups: Vec<(String, SharedRules)> = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, g)| (name.clone(), g.rules.clone()))
            .collect();
        groups
            .iter()
            .flat_map(|(name, rules)| {
                rules
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|rt| rt.status(name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Ready once every group has completed one evaluation.
    pub(crate) fn ready(&self) -> Result<(), HealthError> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let waiting: Vec<String> = groups
            .iter()
            .filter(|(_, g)| g.last_completed.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(HealthError::Waiting(waiting))
        }
    }

    /// Live while every group completes evaluations: none may be silent for
    /// three intervals plus `grace` (the query timeout).
    pub(crate) fn live(&self, grace: Duration) -> Result<(), HealthError> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let stuck: Vec<String> = groups
            .iter()
            .filter(|(_, g)| {
                let since = g.last_completed.unwrap_or(g.started);
                now.duration_since(since) > g.interval * 3 + grace
            })
            .map(|(n, _)| n.clone())
            .collect();
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(HealthError::Stuck(stuck))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_without_a_first_evaluation_keeps_the_watcher_unready() {
        let board = StatusBoard::default();
        board.register_group("api", Duration::from_secs(15), Vec::new());
        board.register_group("db", Duration::from_secs(15), Vec::new());
        assert_eq!(
            board.ready().unwrap_err().to_string(),
            "waiting for the first evaluation of group(s): api, db"
        );
        board.group_evaluated("api");
        board.group_evaluated("db");
        board.ready().unwrap();
        board.live(Duration::from_secs(10)).unwrap();
    }
}
