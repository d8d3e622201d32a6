//! An incident: the rules (or alerts) that fire together, turned into one
//! rollback request; and a rule that resolved, which cancels the
//! confirmations it caused.
//!
//! **Leading edge.** The first firing rule acts at once: its rollback
//! starts, its confirmation is parked or its plan logged, with no waiting.
//! A rule that fires within `engine.coalesce` of it, or while its rollback
//! runs, *joins* it: it is recorded in the run's history `rules`, counted
//! (`rollbackd_incident_joins_total`), and never starts a second run. A
//! joining rule with a more permissive policy upgrades the incident, once:
//! a `dry_run` incident joined by a `confirm` rule parks a confirmation,
//! joined by an `auto` rule rolls back; a pending confirmation joined by an
//! `auto` rule is approved (the joining rule fires: that is the re-check;
//! the guards still apply).

use tokio::time::Instant;

use super::{trigger_of, Dispatcher};
use crate::engine::request::{Detected, Joined};
use crate::engine::{Blocked, RollbackRequest, Trigger};
use crate::history::RuleTrigger;
use crate::notify::{Notification, NotifyEvent};
use crate::rules::value::short;
use crate::rules::{AlertState, Policy};
use crate::rules::{FiringEvent, ALERTMANAGER_GROUP};
use crate::telemetry::events;

/// The incident acted on last, open to rules that join it.
pub(super) struct Open {
    /// Its policy now (a joining rule may have upgraded it, once).
    policy: Policy,
    upgraded: bool,
    /// One event per rule, the first one's first.
    pub(super) events: Vec<FiringEvent>,
    /// Shared with its run, which records the rules that joined.
    pub(super) joined: Joined,
    pub(super) pending: Option<String>,
    pub(super) run: Option<String>,
    /// Open to any rule until then, and to every rule while `run` runs.
    until: Instant,
}

impl Dispatcher {
    /// Whether a firing rule now joins the incident acted on last.
    pub(super) fn incident_open(&mut self) -> bool {
        let running = self.busy();
        self.open.as_ref().is_some_and(|open| {
            Instant::now() < open.until || (open.run.is_some() && running == open.run)
        })
    }

    /// A rule fired while an incident is open: it joins it.
    pub(super) async fn join(&mut self, e: FiringEvent) {
        self.seen_firing
            .insert((e.group.clone(), e.rule.clone()), e.clone());
        let Some(open) = self.open.as_mut() else {
            return self.incident(vec![e]).await;
        };
        if !open
            .events
            .iter()
            .any(|o| o.group == e.group && o.rule == e.rule)
        {
            open.events.push(e.clone());
            open.joined.push(trigger_of(&e));
            events::incident_joined(&e, open.policy.as_str());
            // A run already recorded gets the rule in its entry; one still
            // going takes it from `joined` when it records itself.
            if let Some(run) = open.run.clone() {
                if let Err(err) = self.engine.history().add_rule(&run, &trigger_of(&e)) {
                    tracing::warn!(error = %err, rollback = %run, "cannot add the joining rule to the run's record");
                }
            }
        }
        if e.policy <= open.policy || open.upgraded {
            return;
        }
        open.upgraded = true;
        open.policy = e.policy;
        tracing::warn!(rule = %e.rule, policy = e.policy.as_str(), "a rule with a more permissive policy joined the incident: upgraded, once");
        match (e.policy, open.pending.clone()) {
            (Policy::Auto, Some(pending)) => {
                // The joining rule fires now: that is the re-check. The
                // guards still apply.
                let how = format!("approved: the auto rule {} joined the incident", e.rule);
                match self.approve(&pending, true, &how).await {
                    Ok(approved) => {
                        if let Some(open) = self.open.as_mut() {
                            open.run = Some(approved.rollback_id);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(pending = %pending, error = %err, "the upgrade could not approve the pending rollback")
                    }
                }
            }
            _ => {
                let mut req = request_for(&open.events);
                req.policy = e.policy;
                req.joined = open.joined.clone();
                self.act(req).await;
            }
        }
    }

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
            // Said as it is: during an outage of the shared state nobody
            // leads, and "the leader acts on it" would be untrue.
            let who = if self.engine.leadership().state_reachable() {
                "this replica follows: the leader acts on it"
            } else {
                "no replica can act now: the shared state (PostgreSQL) cannot be reached, and a leader \
                 cut off from it stops acting; the rule is acted on once one leads again"
            };
            for e in &fired {
                self.hand_alert_to_leader(e, true);
                events::trigger_received(e, e.policy.as_str(), who);
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
        let mut events: Vec<FiringEvent> = Vec::new();
        for e in fired {
            if !events
                .iter()
                .any(|o| o.group == e.group && o.rule == e.rule)
            {
                events.push(e);
            }
        }
        self.open = Some(Open {
            policy: req.policy,
            upgraded: false,
            events,
            joined: req.joined.clone(),
            pending: None,
            run: None,
            until: Instant::now() + self.engine.config.coalesce,
        });
        self.act(req).await;
    }

    /// Carries out `req` under its policy, noting its confirmation or run
    /// in the open incident.
    pub(super) async fn act(&mut self, req: RollbackRequest) {
        match req.policy {
            Policy::DryRun => match self.engine.plan(&req).await {
                Ok(plan) => events::rollback_planned(req.trigger.label(), &format!("{plan}")),
                Err(e) => tracing::warn!(error = %e, "dry run: no rollback could be planned"),
            },
            Policy::Confirm => {
                let live = match self.guards().await {
                    Ok(live) => live,
                    Err(blocked) => return self.engine.record_blocked(&req, &blocked),
                };
                // The operator decides; the judgement is their evidence.
                let mut req = req;
                req.blame = self.judge(&req, &live).await;
                let pending = self.park(req).await;
                if let Some(open) = self.open.as_mut() {
                    open.pending = pending;
                }
            }
            Policy::Auto => {
                let live = match self.guards().await {
                    Ok(live) => live,
                    Err(blocked) => match self.settling(&blocked).await {
                        // Fired while the only deployment is still going
                        // live: decided again once it has settled.
                        Some(newest) => return self.defer(req, newest),
                        None => return self.engine.record_blocked(&req, &blocked),
                    },
                };
                match self.judge(&req, &live).await {
                    Some(judgement) => self.act_on_verdict(req, judgement).await,
                    None => {
                        let run = self.start(req);
                        if let Some(open) = self.open.as_mut() {
                            open.run = Some(run);
                        }
                    }
                }
            }
        }
    }

    /// The guards for rollbacks rollbackd starts on its own.
    /// Returns the live deployment they allowed.
    pub(super) async fn guards(&mut self) -> Result<crate::provider::Deployment, Blocked> {
        if let Some(id) = self.busy() {
            return Err(Blocked {
                guard: crate::engine::guard::Guard::InProgress,
                reason: format!("rollback {id} is already running for this incident"),
            });
        }
        let now = self.engine.clock.now();
        self.engine.check_automatic(now).await
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
    let detected = fired.first().map(|first| Detected {
        group: first.group.clone(),
        breached_at: fired.iter().map(|e| e.since).min().unwrap_or(first.since),
        fired_at: fired
            .iter()
            .map(|e| e.fired_at)
            .min()
            .unwrap_or(first.fired_at),
    });
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
        detected,
        ..RollbackRequest::new(Trigger::Manual, policy, String::new())
    }
}
