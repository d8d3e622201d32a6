//! Alertmanager's alerts as the dispatcher remembers them: which alerts (by
//! name) fire now, with which label sets. Alertmanager resends and resolves
//! per label set, so an alert name is over only when none of its sets fires.
//!
//! At most [`MAX_LABEL_SETS`] label sets are remembered: past that, a new
//! set of an alert name already known is not (the name already fires,
//! which is all an approval's re-check and a resolution need to know); a
//! new name still is, up to twice the bound.

use std::collections::{BTreeMap, BTreeSet};

use crate::rules::Labels;
use crate::rules::{FiringEvent, ALERTMANAGER_GROUP};

/// Label sets remembered across every firing alert.
pub const MAX_LABEL_SETS: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct FiringAlerts {
    by_name: BTreeMap<String, BTreeSet<Labels>>,
    count: usize,
}

impl FiringAlerts {
    /// Notes a firing event (ignored unless it came from Alertmanager).
    pub fn fired(&mut self, e: &FiringEvent) {
        if e.group != ALERTMANAGER_GROUP {
            return;
        }
        let known = self.by_name.contains_key(&e.rule);
        // Full: only a new alert name is remembered (with one set), up to
        // twice the bound.
        if self.count >= MAX_LABEL_SETS && (known || self.count >= 2 * MAX_LABEL_SETS) {
            return;
        }
        let sets = self.by_name.entry(e.rule.clone()).or_default();
        if sets.insert(e.labels.clone()) {
            self.count += 1;
        }
    }

    /// Notes a resolution (ignored unless it came from Alertmanager).
    pub fn resolved(&mut self, e: &FiringEvent) {
        if e.group == ALERTMANAGER_GROUP {
            if let Some(set) = self.by_name.get_mut(&e.rule) {
                if set.remove(&e.labels) {
                    self.count -= 1;
                }
                if set.is_empty() {
                    self.by_name.remove(&e.rule);
                }
            }
        }
    }

    /// Whether any label set of the alert `name` fires now.
    pub fn firing(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, instance: &str) -> FiringEvent {
        FiringEvent {
            group: ALERTMANAGER_GROUP.into(),
            rule: name.into(),
            labels: Labels::from([("instance".to_string(), instance.to_string())]),
            value: f64::NAN,
            condition: "firing in Alertmanager".into(),
            threshold: f64::NAN,
            policy: crate::rules::Policy::Auto,
            since: std::time::SystemTime::UNIX_EPOCH,
            fired_at: std::time::SystemTime::UNIX_EPOCH,
            annotations: Labels::new(),
        }
    }

    #[test]
    fn an_alert_is_over_only_when_every_label_set_resolved() {
        let mut alerts = FiringAlerts::default();
        alerts.fired(&alert("HighErrors", "a"));
        alerts.fired(&alert("HighErrors", "b"));
        alerts.resolved(&alert("HighErrors", "a"));
        assert!(alerts.firing("HighErrors"));
        alerts.resolved(&alert("HighErrors", "b"));
        assert!(!alerts.firing("HighErrors"));
    }

    #[test]
    fn a_flood_of_distinct_alerts_is_remembered_within_the_bound() {
        let mut alerts = FiringAlerts::default();
        for i in 0..MAX_LABEL_SETS * 2 {
            alerts.fired(&alert("Flood", &i.to_string()));
        }
        assert_eq!(alerts.count, MAX_LABEL_SETS);
        alerts.fired(&alert("Other", "a"));
        assert!(
            alerts.firing("Other"),
            "a new alert name is still remembered"
        );
        alerts.resolved(&alert("Other", "a"));
        assert!(!alerts.firing("Other"));
        assert!(alerts.firing("Flood"));
    }

    #[test]
    fn rule_events_are_not_alerts() {
        let mut alerts = FiringAlerts::default();
        let mut e = alert("HighErrors", "a");
        e.group = "service".into();
        alerts.fired(&e);
        assert!(!alerts.firing("HighErrors"));
    }
}
