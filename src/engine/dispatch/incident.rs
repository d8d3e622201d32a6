//! An incident: the rules (or alerts) that fired together, turned into one
//! rollback request under the most permissive of their policies; and a rule
//! that resolved, which cancels the confirmations it caused.

use super::{trigger_of, Dispatcher};
use crate::engine::{Blocked, RollbackRequest, Trigger};
use crate::history::RuleTrigger;
use crate::notify::{Notification, NotifyEvent};
use crate::rules::value::short;
use crate::rules::{AlertState, Policy};
use crate::rules::{FiringEvent, ALERTMANAGER_GROUP};
use crate::telemetry::events;

impl Dispatcher {
    /// A firing rule or alert resolved: say so, and cancel the pending
    /// rollbacks it caused.
    /// (Alertmanager's alerts were noted as they arrived, see `coalesce`.)
    pub(super) fn resolved(&mut self, e: FiringEvent) {
        self.seen_firing.remove(&(e.group.clone(), e.rule.clone()));
        if !self.engine.is_leader() {
            self.hand_alert_to_leader(&e, false);
            return;
        }
        let mut n = Notification::new(NotifyEvent::RuleResolved, format!("{} resolved", e.rule));
        n.rules = vec![trigger_of(&e)];
        self.engine.notify(n);
        // Another series of the same rule (or another alert of the same name)
        // may still fire: then the incident is not over.
        let still_firing = if e.group == ALERTMANAGER_GROUP {
            self.alerts.firing(&e.rule)
        } else {
            self.board
                .rules()
                .iter()
                .any(|r| r.group == e.group && r.rule == e.rule && r.state == AlertState::Firing)
        };
        if !still_firing {
            self.cancel_caused_by(&e.group, &e.rule);
        }
    }

    /// Alertmanager delivers to whichever replica its webhook reaches; a
    /// follower hands the alert to the leader. (Rules are evaluated by every
    /// replica, so the leader sees them itself.)
    fn hand_alert_to_leader(&self, e: &FiringEvent, fired: bool) {
        if e.group != ALERTMANAGER_GROUP {
            return;
        }
        let answer = if fired {
            super::Forwarded::AlertFired(e.clone())
        } else {
            super::Forwarded::AlertResolved(e.clone())
        };
        if let Err(err) = super::forward(&self.engine, &answer) {
            tracing::error!(error = %err, alert = %e.rule, "cannot hand an alert to the leader");
        }
    }

    pub(super) async fn incident(&mut self, fired: Vec<FiringEvent>) {
        // What fires is remembered until it resolves: a replica that takes
        // over (again) acts on what still fires; the guards refuse what was
        // already done.
        for e in &fired {
            self.seen_firing
                .insert((e.group.clone(), e.rule.clone()), e.clone());
        }
        // Beside several replicas, only the leader tells people and acts.
        if !self.engine.is_leader() {
            for e in &fired {
                self.hand_alert_to_leader(e, true);
                events::trigger_received(
                    e,
                    e.policy.as_str(),
                    "this replica follows: the leader acts on it",
                );
            }
            return;
        }
        for e in &fired {
            let mut n = Notification::new(
                NotifyEvent::RuleFiring,
                if e.value.is_finite() {
                    format!("{} fired: {} {}", e.rule, short(e.value), e.condition)
                } else {
                    format!("{} fired: {}", e.rule, e.condition)
                },
            );
            n.rules = vec![trigger_of(e)];
            n.policy = Some(e.policy.as_str().to_string());
            self.engine.notify(n);
        }
        let req = request_for(&fired);
        for e in &fired {
            events::trigger_received(e, req.policy.as_str(), "handed to the rollback engine");
        }
        match req.policy {
            Policy::DryRun => match self.engine.plan(&req).await {
                Ok(plan) => events::rollback_planned(req.trigger.label(), &format!("{plan}")),
                Err(e) => tracing::warn!(error = %e, "dry run: no rollback could be planned"),
            },
            Policy::Confirm => {
                if let Err(blocked) = self.guards().await {
                    self.engine.record_blocked(&req, &blocked);
                    return;
                }
                self.park(req).await;
            }
            Policy::Auto => {
                if let Err(blocked) = self.guards().await {
                    self.engine.record_blocked(&req, &blocked);
                    return;
                }
                self.start(req);
            }
        }
    }

    /// The guards for rollbacks rollbackd starts on its own.
    pub(super) async fn guards(&mut self) -> Result<(), Blocked> {
        if let Some(id) = self.busy() {
            return Err(Blocked {
                guard: "in_progress",
                reason: format!("rollback {id} is already running for this incident"),
            });
        }
        let now = self.engine.clock.now();
        self.engine.check_automatic(now).await.map(|_| ())
    }
}

/// The request for rules that fired together: the most permissive policy,
/// every rule (once, with its first series' value), a trigger that says
/// where they came from. 3,000 series of one alert are one rule, not 3,000.
fn request_for(fired: &[FiringEvent]) -> RollbackRequest {
    let mut seen = std::collections::BTreeSet::new();
    let fired: Vec<&FiringEvent> = fired
        .iter()
        .filter(|e| seen.insert((e.group.as_str(), e.rule.as_str())))
        .collect();
    let policy = fired
        .iter()
        .map(|e| e.policy)
        .max()
        .unwrap_or(Policy::DryRun);
    let rules: Vec<RuleTrigger> = fired.iter().copied().map(trigger_of).collect();
    let from_alertmanager = fired.iter().all(|e| e.group == ALERTMANAGER_GROUP);
    let reason = fired
        .iter()
        .map(|e| {
            if e.value.is_finite() {
                format!("{} {} (value {})", e.rule, e.condition, short(e.value))
            } else {
                format!("{}: {}", e.rule, e.condition)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    RollbackRequest {
        trigger: if from_alertmanager {
            Trigger::Alertmanager(rules)
        } else {
            Trigger::Rules(rules)
        },
        policy,
        reason: format!(
            "{} fired: {reason}",
            if from_alertmanager { "alert" } else { "rule" }
        ),
        deployment_id: None,
        skip_db: false,
        base_url: None,
        pending_id: None,
    }
}
