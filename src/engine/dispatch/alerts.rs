//! Alertmanager's alerts as the dispatcher remembers them: which alerts (by
//! name) fire now, with which label sets. Alertmanager resends and resolves
//! per label set, so an alert name is over only when none of its sets fires.
//!
//! Label sets are remembered by their hash (8 bytes each), at most
//! [`MAX_LABEL_SETS`] of them. Past that, a set that cannot be remembered
//! marks its alert name as *overflowed*: the name counts as firing (the
//! safe side: nothing it caused is cancelled by mistake) until every set
//! it has remembered resolved and fewer than half the bound are held.
//! At most 10,000 names are marked so; past that, a name's unremembered
//! sets are not known at all.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};

use crate::rules::{FiringEvent, ALERTMANAGER_GROUP};

/// Label sets remembered across every firing alert.
pub(super) const MAX_LABEL_SETS: usize = 200_000;

#[derive(Debug, Default)]
pub(super) struct FiringAlerts {
    by_name: BTreeMap<String, HashSet<u64>>,
    overflowed: BTreeSet<String>,
    count: usize,
}

fn labels_hash(e: &FiringEvent) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.labels.hash(&mut h);
    h.finish()
}

impl FiringAlerts {
    /// Notes a firing event (ignored unless it came from Alertmanager).
    pub(super) fn fired(&mut self, e: &FiringEvent) {
        if e.group != ALERTMANAGER_GROUP {
            return;
        }
        let key = labels_hash(e);
        if self.by_name.get(&e.rule).is_some_and(|s| s.contains(&key)) {
            return;
        }
        if self.count >= MAX_LABEL_SETS {
            // At most as many overflowed names as remembered sets / 20.
            if self.overflowed.len() < MAX_LABEL_SETS / 20 {
                self.overflowed.insert(e.rule.clone());
            }
            return;
        }
        self.by_name.entry(e.rule.clone()).or_default().insert(key);
        self.count += 1;
    }

    /// Notes a resolution (ignored unless it came from Alertmanager).
    pub(super) fn resolved(&mut self, e: &FiringEvent) {
        if e.group != ALERTMANAGER_GROUP {
            return;
        }
        if let Some(set) = self.by_name.get_mut(&e.rule) {
            if set.remove(&labels_hash(e)) {
                self.count -= 1;
            }
            if set.is_empty() {
                self.by_name.remove(&e.rule);
            }
        }
        if !self.by_name.contains_key(&e.rule) && self.count < MAX_LABEL_SETS / 2 {
            self.overflowed.remove(&e.rule);
        }
    }

    /// Whether any label set of the alert `name` fires now (or may: an
    /// overflowed name).
    pub(super) fn firing(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|s| !s.is_empty()) || self.overflowed.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Labels;

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
            spec: None,
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
    fn past_the_bound_an_alert_name_keeps_firing_until_its_sets_resolve() {
        let mut alerts = FiringAlerts::default();
        for i in 0..MAX_LABEL_SETS + 10 {
            alerts.fired(&alert("Flood", &i.to_string()));
        }
        assert_eq!(alerts.count, MAX_LABEL_SETS);
        alerts.fired(&alert("Other", "a"));
        // None of Other's sets is remembered, yet one fires: Other counts
        // as firing, whatever resolves.
        alerts.resolved(&alert("Other", "b"));
        assert!(alerts.firing("Other"));
        for i in 0..MAX_LABEL_SETS {
            alerts.resolved(&alert("Flood", &i.to_string()));
        }
        assert_eq!(alerts.count, 0);
        assert!(!alerts.firing("Flood"), "resolved, with room again");
        alerts.resolved(&alert("Other", "a"));
        assert!(!alerts.firing("Other"));
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
