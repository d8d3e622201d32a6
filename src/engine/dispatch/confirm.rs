//! The life of a `confirm` rollback: parked as pending with its plan,
//! approved (after re-checking the rules and the guards) or rejected by an
//! operator, cancelled when its rules resolve, superseded by another
//! rollback, or expired to `engine.confirm_default`.

use serde::Serialize;

use super::{Command, Dispatcher};
use crate::engine::config::ConfirmDefault;
use crate::engine::pending::PendingRollback;
use crate::engine::{new_id, RollbackRequest, Trigger};
use crate::history::RuleTrigger;
use crate::notify::{Notification, NotifyEvent};
use crate::rules::ALERTMANAGER_GROUP;
use crate::rules::{AlertState, Policy};

/// The longest a confirmation waits, whatever `engine.confirm_timeout` says.
const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// An approval that started a rollback.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Approved {
    pub rollback_id: String,
    /// What the re-check of the rules found.
    pub findings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, thiserror::Error)]
pub(crate) enum ApproveError {
    #[error("no pending rollback {0} (it may have expired, or been approved or rejected already; `rollbackd pending` lists them)")]
    NotFound(String),
    #[error("the rules no longer fire: {}; approve with force to roll back anyway", .0.join("; "))]
    NoLongerFiring(Vec<String>),
    #[error("refused by a guard: {0}")]
    Blocked(String),
    #[error("this replica follows: pending rollbacks are the leader's (`GET /api/v1/leader` on each replica says which leads); send it there")]
    NotLeader,
}

impl Dispatcher {
    /// Parks `req` as a pending rollback and tells people how to answer it.
    /// Returns the pending rollback's id.
    pub(super) async fn park(&mut self, req: RollbackRequest) -> Option<String> {
        let plan = match self.engine.plan(&req).await {
            Ok(plan) => plan.to_string(),
            Err(e) => {
                tracing::warn!(error = %e, "no rollback could be planned; nothing to confirm");
                return None;
            }
        };
        let now = self.engine.clock.now();
        let timeout = self.engine.config.confirm_timeout;
        let pending = PendingRollback {
            id: new_id("pr"),
            created_at: now,
            // A timeout too large to add to a time counts as a century.
            expires_at: now.checked_add(timeout.min(CENTURY)).unwrap_or(now),
            rules: req.trigger.rules().to_vec(),
            reason: req.reason.clone(),
            plan,
            detected: req.detected.clone(),
            blame: req.blame.clone(),
        };
        tracing::warn!(
            pending = %pending.id,
            expires_in_s = timeout.as_secs(),
            "rollback waits for confirmation: `rollbackd approve {}` or `rollbackd reject {}`\n{}",
            pending.id,
            pending.id,
            pending.plan
        );
        let mut n = Notification::new(NotifyEvent::RollbackPending, req.reason.clone());
        n.pending_id = Some(pending.id.clone());
        n.rules = pending.rules.clone();
        n.policy = Some("confirm".into());
        n.blame = req.blame.clone();
        n.outcome = Some(format!(
            "waits for an operator; expires at {} to {:?}",
            crate::clock::seconds(pending.expires_at),
            self.engine.config.confirm_default
        ));
        n.approve_hint = Some(format!(
            "Approve: `rollbackd approve {id}` (or POST /api/v1/pending/{id}/approve) · Reject: `rollbackd reject {id}`",
            id = pending.id
        ));
        self.engine.notify(n);
        let id = pending.id.clone();
        self.pending.add(pending);
        Some(id)
    }

    pub(super) async fn command(&mut self, command: Command) {
        if !self.engine.is_leader() {
            match command {
                Command::Approve { reply, .. } => {
                    let _ = reply.send(Err(ApproveError::NotLeader));
                }
                Command::Reject { reply, .. } => {
                    let _ = reply.send(Err(ApproveError::NotLeader));
                }
            }
            return;
        }
        match command {
            Command::Approve { id, force, reply } => {
                let _ = reply.send(self.approve(&id, force, "approved by an operator").await);
            }
            Command::Reject { id, reply } => {
                let _ = reply.send(self.reject(&id));
            }
        }
    }

    /// An operator rejected a pending rollback.
    pub(super) fn reject(&mut self, id: &str) -> Result<(), ApproveError> {
        match self.pending.take(id) {
            Some(p) => {
                tracing::warn!(pending = %p.id, "pending rollback rejected by an operator; nothing was changed");
                self.rejected(&p, "rejected by an operator");
                Ok(())
            }
            None => Err(ApproveError::NotFound(id.to_string())),
        }
    }

    /// Re-checks the rules, then starts the rollback a pending one describes.
    pub(super) async fn approve(
        &mut self,
        id: &str,
        force: bool,
        how: &str,
    ) -> Result<Approved, ApproveError> {
        self.approve_as(id, force, how, None).await
    }

    /// [`Self::approve`], the run started under `run` when given.
    pub(super) async fn approve_as(
        &mut self,
        id: &str,
        force: bool,
        how: &str,
        run: Option<String>,
    ) -> Result<Approved, ApproveError> {
        let pending = self
            .pending
            .take(id)
            .ok_or_else(|| ApproveError::NotFound(id.to_string()))?;
        let (any_firing, findings) = self.recheck(&pending.rules);
        if !any_firing && !force {
            self.pending.add(pending);
            return Err(ApproveError::NoLongerFiring(findings));
        }
        if let Some(running) = self.busy() {
            self.pending.add(pending);
            return Err(ApproveError::Blocked(format!(
                "rollback {running} is running"
            )));
        }
        // An approval answers "roll back for this incident?"; the guards still
        // apply (a stale confirmation must not roll back again after another
        // rollback). `rollbackd rollback` is the way around them.
        let now = self.engine.clock.now();
        if let Err(blocked) = self.engine.check_automatic(now).await {
            self.pending.add(pending);
            return Err(ApproveError::Blocked(format!(
                "{}: {} (a manual `rollbackd rollback` does not check the automatic guards)",
                blocked.guard, blocked.reason
            )));
        }
        tracing::warn!(pending = %pending.id, findings = %findings.join("; "), "{how}");
        let from_alertmanager = pending.rules.iter().all(|r| r.group == ALERTMANAGER_GROUP);
        let req = RollbackRequest {
            trigger: if from_alertmanager {
                Trigger::Alertmanager(pending.rules.clone())
            } else {
                Trigger::Rules(pending.rules.clone())
            },
            policy: Policy::Confirm,
            reason: format!("{} ({how})", pending.reason),
            deployment_id: None,
            skip_db: false,
            db_target: None,
            base_url: None,
            pending_id: Some(pending.id.clone()),
            // Rules that joined its incident are the run's too.
            joined: match &self.open {
                Some(open) if open.pending.as_deref() == Some(pending.id.as_str()) => {
                    open.joined.clone()
                }
                _ => Default::default(),
            },
            at: tokio::time::Instant::now(),
            detected: pending.detected.clone(),
            blame: pending.blame.clone(),
        };
        let rollback_id = match run {
            Some(run) => self.start_as(req, run),
            None => self.start(req),
        };
        // Other confirmations were for the state before this rollback.
        for other in self.pending.list() {
            if let Some(p) = self.pending.take(&other.id) {
                self.rejected(&p, &format!("superseded by rollback {rollback_id}"));
            }
        }
        Ok(Approved {
            rollback_id,
            findings,
        })
    }

    /// Whether the rules behind a pending rollback still fire, in words.
    pub(super) fn recheck(&self, rules: &[RuleTrigger]) -> (bool, Vec<String>) {
        let statuses = self.board.rules();
        let mut findings = Vec::new();
        let mut any_firing = false;
        for r in rules {
            if r.group == ALERTMANAGER_GROUP {
                if self.alerts.firing(&r.rule) {
                    any_firing = true;
                    findings.push(format!("alert {} is still firing in Alertmanager", r.rule));
                } else {
                    findings.push(format!("alert {} has resolved in Alertmanager", r.rule));
                }
                continue;
            }
            match statuses
                .iter()
                .find(|s| s.group == r.group && s.rule == r.rule)
            {
                Some(s) => {
                    let value = s
                        .value
                        .map_or("no value".to_string(), |v| format!("value {v}"));
                    if s.state == AlertState::Firing {
                        any_firing = true;
                        findings.push(format!(
                            "{} is still firing ({value}, {})",
                            r.rule, s.condition
                        ));
                    } else {
                        findings.push(format!(
                            "{} is no longer firing (state {}, {value})",
                            r.rule, s.state
                        ));
                    }
                }
                None => findings.push(format!("{} is no longer loaded", r.rule)),
            }
        }
        (any_firing, findings)
    }

    /// Cancels the confirmations that `rule` of `group` caused.
    pub(super) fn cancel_caused_by(&mut self, group: &str, rule: &str) {
        let caused: Vec<String> = self
            .pending
            .list()
            .into_iter()
            .filter(|p| p.rules.iter().any(|r| r.group == group && r.rule == rule))
            .map(|p| p.id)
            .collect();
        for id in caused {
            if let Some(p) = self.pending.take(&id) {
                tracing::warn!(pending = %p.id, rule = %rule, "pending rollback cancelled: the alert that caused it resolved; nothing was changed");
                self.rejected(&p, &format!("cancelled: {rule} resolved"));
            }
        }
    }

    /// Expires the confirmations whose time ran out, to the configured default.
    pub(super) async fn expire_confirmations(&mut self) {
        let now = self.engine.clock.now();
        for p in self.pending.take_expired(now) {
            match self.engine.config.confirm_default {
                ConfirmDefault::Reject => {
                    tracing::warn!(
                        pending = %p.id,
                        "pending rollback expired unanswered; rejected (engine.confirm_default = reject); nothing was changed"
                    );
                    self.rejected(&p, "expired unanswered (engine.confirm_default = reject)");
                }
                ConfirmDefault::Approve => {
                    let id = p.id.clone();
                    self.pending.add(p);
                    let how =
                        "approved by default after expiring (engine.confirm_default = approve)";
                    if let Err(e) = self.approve(&id, false, how).await {
                        if let Some(p) = self.pending.take(&id) {
                            self.rejected(
                                &p,
                                &format!("expired; approval by default refused: {e}"),
                            );
                        }
                        tracing::warn!(pending = %id, error = %e, "pending rollback expired; not rolled back");
                    }
                }
            }
        }
    }

    /// Tells people a pending rollback ended without one.
    fn rejected(&self, p: &PendingRollback, how: &str) {
        let mut n = Notification::new(
            NotifyEvent::RollbackRejected,
            format!("pending rollback {} {how}", p.id),
        );
        n.pending_id = Some(p.id.clone());
        n.rules = p.rules.clone();
        n.outcome = Some(format!("{how}; nothing was changed"));
        self.engine.notify(n);
    }
}
