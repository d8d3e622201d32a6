//! The daemon's decision loop: turns firing events into rollbacks under each
//! rule's policy, and carries out operators' approvals and rejections.
//!
//! - Events arriving within `engine.coalesce` of each other are one incident
//!   and make at most one rollback; its policy is the most permissive of the
//!   firing rules' (each of them alone would have acted).
//! - `dry_run` logs the plan; `confirm` parks a pending rollback that an
//!   operator approves or rejects, expiring to `engine.confirm_default`;
//!   `auto` checks the guards and runs.
//! - One run at a time: an incident while a run is going is refused, and
//!   says so.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::pending::{PendingRollback, PendingStore};
use super::{new_id, Blocked, BreakerState, Engine, RollbackRequest, RunReport, Trigger};
use crate::config::ConfirmDefault;
use crate::history::RuleTrigger;
use crate::notify::{Notification, NotifyEvent};
use crate::rules::{AlertState, Policy};
use crate::telemetry::events;
use crate::watch::status::lock;
use crate::watch::{FiringEvent, RuleEvent, StatusBoard, ALERTMANAGER_GROUP};

/// An operator's decision, sent from the HTTP API.
pub enum Command {
    Approve {
        id: String,
        force: bool,
        reply: oneshot::Sender<Result<Approved, ApproveError>>,
    },
    Reject {
        id: String,
        reply: oneshot::Sender<Result<(), ApproveError>>,
    },
}

/// An approval that started a rollback.
#[derive(Debug, Clone, Serialize)]
pub struct Approved {
    pub rollback_id: String,
    /// What the re-check of the rules found.
    pub findings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, thiserror::Error)]
pub enum ApproveError {
    #[error("no pending rollback {0} (it may have expired, or been approved or rejected already; `rollbackd pending` lists them)")]
    NotFound(String),
    #[error("the rules no longer fire: {}; approve with force to roll back anyway", .0.join("; "))]
    NoLongerFiring(Vec<String>),
    #[error("refused by a guard: {0}")]
    Blocked(String),
}

/// The rollback the daemon is running, shared so shutdown can wait for it.
pub type RunningRollback = Arc<std::sync::Mutex<Option<(String, JoinHandle<RunReport>)>>>;

/// Waits (at most `limit`) for a running rollback to end before the process
/// exits: a rollback cut off midway leaves no record and an unsettled breaker.
pub async fn finish_running(running: &RunningRollback, limit: Duration) {
    let task = lock(running).take();
    if let Some((id, task)) = task {
        if !task.is_finished() {
            tracing::warn!(rollback = %id, "shutting down: waiting for the running rollback to finish");
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::error!(rollback = %id, "rollback still running at shutdown; its record may be incomplete");
            }
        }
    }
}

/// The dispatcher and what it shares with the API.
pub struct Dispatcher {
    engine: Arc<Engine>,
    board: Arc<StatusBoard>,
    pending: Arc<PendingStore>,
    running: RunningRollback,
    /// When the rules were last seen all clear (for closing the breaker).
    clear_since: Option<Instant>,
    /// When the live deployment's schema revision was last recorded.
    revision_checked: Option<Instant>,
    /// Alertmanager alerts (by name) firing now, for the approval re-check.
    alerts_firing:
        std::collections::BTreeMap<String, std::collections::BTreeSet<crate::rules::Labels>>,
}

impl Dispatcher {
    /// The running-rollback slot, for shutdown.
    pub fn running(&self) -> RunningRollback {
        self.running.clone()
    }

    pub fn new(engine: Arc<Engine>, board: Arc<StatusBoard>, pending: Arc<PendingStore>) -> Self {
        Dispatcher {
            engine,
            board,
            pending,
            running: RunningRollback::default(),
            clear_since: None,
            revision_checked: None,
            alerts_firing: std::collections::BTreeMap::new(),
        }
    }

    /// Runs until both channels close.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<RuleEvent>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(first) = event else { break };
                    let mut incident = vec![first];
                    let window = tokio::time::sleep(self.engine.config.coalesce);
                    tokio::pin!(window);
                    loop {
                        tokio::select! {
                            _ = &mut window => break,
                            more = events.recv() => match more {
                                Some(e) => incident.push(e),
                                None => break,
                            },
                        }
                    }
                    let (fired, resolved): (Vec<RuleEvent>, Vec<RuleEvent>) =
                        incident.into_iter().partition(|e| matches!(e, RuleEvent::Fired(_)));
                    for e in resolved {
                        if let RuleEvent::Resolved(e) = e {
                            self.resolved(e);
                        }
                    }
                    let fired: Vec<FiringEvent> = fired
                        .into_iter()
                        .filter_map(|e| match e {
                            RuleEvent::Fired(e) => Some(e),
                            RuleEvent::Resolved(_) => None,
                        })
                        .collect();
                    if !fired.is_empty() {
                        self.incident(fired).await;
                    }
                }
                Some(command) = commands.recv() => self.command(command).await,
                _ = tick.tick() => self.maintain().await,
            }
        }
    }

    fn busy(&mut self) -> Option<String> {
        let mut running = lock(&self.running);
        match &*running {
            Some((id, task)) if !task.is_finished() => Some(id.clone()),
            _ => {
                *running = None;
                None
            }
        }
    }

    /// A firing rule or alert resolved: say so, and cancel the pending
    /// rollbacks it caused.
    fn resolved(&mut self, e: FiringEvent) {
        if e.group == ALERTMANAGER_GROUP {
            if let Some(set) = self.alerts_firing.get_mut(&e.rule) {
                set.remove(&e.labels);
            }
        }
        let mut n = Notification::new(NotifyEvent::RuleResolved, format!("{} resolved", e.rule));
        n.rules = vec![trigger_of(&e)];
        self.engine.notify(n);
        // Another series of the same rule (or another alert of the same name)
        // may still fire: then the incident is not over.
        let still_firing = if e.group == ALERTMANAGER_GROUP {
            self.alerts_firing
                .get(&e.rule)
                .is_some_and(|s| !s.is_empty())
        } else {
            self.board
                .rules()
                .iter()
                .any(|r| r.group == e.group && r.rule == e.rule && r.state == AlertState::Firing)
        };
        if still_firing {
            return;
        }
        let caused: Vec<String> = self
            .pending
            .list()
            .into_iter()
            .filter(|p| {
                p.rules
                    .iter()
                    .any(|r| r.group == e.group && r.rule == e.rule)
            })
            .map(|p| p.id)
            .collect();
        for id in caused {
            if let Some(p) = self.pending.take(&id) {
                tracing::warn!(pending = %p.id, rule = %e.rule, "pending rollback cancelled: the alert that caused it resolved; nothing was changed");
                self.rejected(&p, &format!("cancelled: {} resolved", e.rule));
            }
        }
    }

    async fn incident(&mut self, fired: Vec<FiringEvent>) {
        for e in &fired {
            if e.group == ALERTMANAGER_GROUP {
                self.alerts_firing
                    .entry(e.rule.clone())
                    .or_default()
                    .insert(e.labels.clone());
            }
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
        let policy = fired
            .iter()
            .map(|e| e.policy)
            .max()
            .unwrap_or(Policy::DryRun);
        let rules: Vec<RuleTrigger> = fired.iter().map(trigger_of).collect();
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
        let req = RollbackRequest {
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
        };
        for e in &fired {
            events::trigger_received(e, policy.as_str(), "handed to the rollback engine");
        }
        match policy {
            Policy::DryRun => match self.engine.plan(&req).await {
                Ok(plan) => events::rollback_planned(req.trigger.label(), &format!("{plan}")),
                Err(e) => tracing::warn!(error = %e, "dry run: no rollback could be planned"),
            },
            Policy::Confirm => {
                if let Err(blocked) = self.guards().await {
                    self.engine.record_blocked(&req, &blocked);
                    return;
                }
                let plan = match self.engine.plan(&req).await {
                    Ok(plan) => plan.to_string(),
                    Err(e) => {
                        tracing::warn!(error = %e, "no rollback could be planned; nothing to confirm");
                        return;
                    }
                };
                let now = SystemTime::now();
                let pending = PendingRollback {
                    id: new_id("pr"),
                    created_at: now,
                    expires_at: now + self.engine.config.confirm_timeout,
                    rules: req.trigger.rules().to_vec(),
                    reason: req.reason.clone(),
                    plan,
                };
                tracing::warn!(
                    pending = %pending.id,
                    expires_in_s = self.engine.config.confirm_timeout.as_secs(),
                    "rollback waits for confirmation: `rollbackd approve {}` or `rollbackd reject {}`\n{}",
                    pending.id,
                    pending.id,
                    pending.plan
                );
                let mut n = Notification::new(NotifyEvent::RollbackPending, req.reason.clone());
                n.pending_id = Some(pending.id.clone());
                n.rules = pending.rules.clone();
                n.policy = Some("confirm".into());
                n.outcome = Some(format!(
                    "waits for an operator; expires at {} to {:?}",
                    humantime::format_rfc3339_seconds(pending.expires_at),
                    self.engine.config.confirm_default
                ));
                n.approve_hint = Some(format!(
                    "Approve: `rollbackd approve {id}` (or POST /api/v1/pending/{id}/approve) · Reject: `rollbackd reject {id}`",
                    id = pending.id
                ));
                self.engine.notify(n);
                self.pending.add(pending);
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
    async fn guards(&mut self) -> Result<(), Blocked> {
        if let Some(id) = self.busy() {
            return Err(Blocked {
                guard: "in_progress",
                reason: format!("rollback {id} is already running for this incident"),
            });
        }
        self.engine
            .check_automatic(SystemTime::now())
            .await
            .map(|_| ())
    }

    fn start(&mut self, req: RollbackRequest) -> String {
        let engine = self.engine.clone();
        let id = new_id("rb");
        let run_id = id.clone();
        let task = tokio::spawn(async move { engine.run_with_id(run_id, req, &|_| {}).await });
        *lock(&self.running) = Some((id.clone(), task));
        id
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Approve { id, force, reply } => {
                let _ = reply.send(self.approve(&id, force, "approved by an operator").await);
            }
            Command::Reject { id, reply } => {
                let result = match self.pending.take(&id) {
                    Some(p) => {
                        tracing::warn!(pending = %p.id, "pending rollback rejected by an operator; nothing was changed");
                        self.rejected(&p, "rejected by an operator");
                        Ok(())
                    }
                    None => Err(ApproveError::NotFound(id)),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Re-checks the rules, then starts the rollback a pending one describes.
    async fn approve(
        &mut self,
        id: &str,
        force: bool,
        how: &str,
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
        if let Err(blocked) = self.engine.check_automatic(SystemTime::now()).await {
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
            base_url: None,
            pending_id: Some(pending.id.clone()),
        };
        let rollback_id = self.start(req);
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
    fn recheck(&self, rules: &[RuleTrigger]) -> (bool, Vec<String>) {
        let statuses = self.board.rules();
        let mut findings = Vec::new();
        let mut any_firing = false;
        for r in rules {
            if r.group == ALERTMANAGER_GROUP {
                if self
                    .alerts_firing
                    .get(&r.rule)
                    .is_some_and(|s| !s.is_empty())
                {
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

    /// Every second: expire pending rollbacks, move the breaker along, and
    /// now and then record the live deployment's schema revision.
    async fn maintain(&mut self) {
        let now = SystemTime::now();
        let interval = self
            .engine
            .db
            .as_ref()
            .map_or(Duration::MAX, |db| db.config.revision_check_interval);
        if self.busy().is_none()
            && self
                .revision_checked
                .is_none_or(|t| t.elapsed() >= interval)
        {
            self.revision_checked = Some(Instant::now());
            if let Err(e) = self.engine.record_revision().await {
                tracing::warn!(error = %e, "cannot record the live deployment's schema revision");
            }
        }
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
                    if let Err(e) = self
                        .approve(
                            &id,
                            false,
                            "approved by default after expiring (engine.confirm_default = approve)",
                        )
                        .await
                    {
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
        let all_clear = self
            .board
            .rules()
            .iter()
            .all(|r| r.state == AlertState::Inactive);
        self.clear_since = match (all_clear, self.clear_since) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, since) => since,
        };
        if self.engine.breaker_state(now) == BreakerState::HalfOpen
            && self
                .clear_since
                .is_some_and(|t| t.elapsed() >= self.engine.config.close_after)
        {
            // Closing races a CLI rollback that may have just opened it: take the lock.
            let Some(_lock) = self.engine.try_lock() else {
                return;
            };
            match self
                .engine
                .breaker()
                .close(now, "rules stayed clear after the rollback")
            {
                Ok(()) => {
                    self.engine.breaker_state(now);
                    tracing::info!("deploy breaker CLOSED: rules stayed clear after the rollback");
                }
                Err(e) => tracing::error!(error = %e, "cannot close the deploy breaker"),
            }
        }
    }
}

impl Dispatcher {
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

fn trigger_of(e: &FiringEvent) -> RuleTrigger {
    RuleTrigger {
        group: e.group.clone(),
        rule: e.rule.clone(),
        value: e.value.is_finite().then_some(e.value),
        condition: e.condition.clone(),
    }
}

/// A value for messages: at most six decimals, trailing zeros dropped.
pub fn short(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".into()
    } else {
        text.to_string()
    }
}
