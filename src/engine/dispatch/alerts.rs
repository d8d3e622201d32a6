//! Alertmanager's alerts as the dispatcher remembers them: which alerts (by
//! name) fire now, with which label sets. Alertmanager resends and resolves
//! per label set, so an alert name is over only when none of its sets fires.

use std::collections::{BTreeMap, BTreeSet};

use crate::rules::Labels;
use crate::rules::{FiringEvent, ALERTMANAGER_GROUP};

#[derive(Debug, Default)]
pub(super) struct FiringAlerts {
    by_name: BTreeMap<String, BTreeSet<Labels>>,
}

impl FiringAlerts {
    /// Notes a firing event (ignored unless it came from Alertmanager).
    pub fn fired(&mut self, e: &FiringEvent) {
        if e.group == ALERTMANAGER_GROUP {
            self.by_name
                .entry(e.rule.clone())
                .or_default()
                .insert(e.labels.clone());
        }
    }

    /// Notes a resolution (ignored unless it came from Alertmanager).
    pub fn resolved(&mut self, e: &FiringEvent) {
        if e.group == ALERTMANAGER_GROUP {
            if let Some(set) = self.by_name.get_mut(&e.rule) {
                set.remove(&e.labels);
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
    fn rule_events_are_not_alerts() {
        let mut alerts = FiringAlerts::default();
        let mut e = alert("HighErrors", "a");
        e.group = "service".into();
        alerts.fired(&e);
        assert!(!alerts.firing("HighErrors"));
    }
}
