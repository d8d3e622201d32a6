//! A request to roll back: who asked, under which policy, and what for.

use std::time::SystemTime;

use crate::history::{RuleTrigger, TriggerKind};
use crate::rules::Policy;

/// What started a rollback.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// An operator, from the CLI or the API.
    Manual,
    /// Firing rules.
    Rules(Vec<RuleTrigger>),
    /// Alerts delivered by Alertmanager.
    Alertmanager(Vec<RuleTrigger>),
}

impl Trigger {
    pub fn kind(&self) -> TriggerKind {
        match self {
            Trigger::Manual => TriggerKind::Manual,
            Trigger::Rules(_) => TriggerKind::Rule,
            Trigger::Alertmanager(_) => TriggerKind::Alertmanager,
        }
    }

    /// `manual`, `rule` or `alertmanager`: a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Rules(_) => "rule",
            Trigger::Alertmanager(_) => "alertmanager",
        }
    }

    pub fn rules(&self) -> &[RuleTrigger] {
        match self {
            Trigger::Manual => &[],
            Trigger::Rules(r) | Trigger::Alertmanager(r) => r,
        }
    }
}

/// Rules that joined an incident after its rollback started (leading-edge
/// coalescing): shared with the run, which records them with its own.
#[derive(Debug, Clone, Default)]
pub struct Joined(std::sync::Arc<std::sync::Mutex<Vec<RuleTrigger>>>);

impl Joined {
    pub fn push(&self, rule: RuleTrigger) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(rule);
    }

    pub fn rules(&self) -> Vec<RuleTrigger> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A request to roll back.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    pub trigger: Trigger,
    pub policy: Policy,
    pub reason: String,
    pub deployment_id: Option<String>,
    pub skip_db: bool,
    /// The operator's database target, instead of the recorded revision.
    pub db_target: Option<DbTarget>,
    pub base_url: Option<String>,
    /// The pending confirmation this rollback was approved from.
    pub pending_id: Option<String>,
    /// Rules that joined the incident once it had started.
    pub joined: Joined,
    /// When the request was made: the platform call uses only a deployment
    /// list asked for after it (`listing.rs`).
    pub at: tokio::time::Instant,
    /// When the incident's rules began to breach and fired (none for an
    /// operator's rollback): the start of its detection figures.
    pub detected: Option<Detected>,
    /// Whether the live deployment was judged to blame (none: not judged).
    pub blame: Option<crate::blame::Judgement>,
}

/// The schema revision an operator asked for (`rollbackd rollback
/// --db-target REV | --db-steps N`): used instead of the revision recorded
/// for the target deployment, or when none was recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbTarget {
    Revision(String),
    /// This many downgrades below the database's current revision (the seed's `-1`).
    Steps(u32),
}

impl std::fmt::Display for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbTarget::Revision(r) => write!(f, "--db-target {r}"),
            DbTarget::Steps(n) => write!(f, "--db-steps {n}"),
        }
    }
}

/// When an incident was detected: its first rule's group, when the first
/// breach began and when the first rule fired.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detected {
    pub group: String,
    #[serde(with = "crate::clock::rfc3339")]
    pub breached_at: SystemTime,
    #[serde(with = "crate::clock::rfc3339")]
    pub fired_at: SystemTime,
}

impl RollbackRequest {
    /// A request with nothing asked beyond its trigger, policy and reason:
    /// the newest good target, the database as planned, now.
    pub fn new(trigger: Trigger, policy: Policy, reason: String) -> RollbackRequest {
        RollbackRequest {
            trigger,
            policy,
            reason,
            deployment_id: None,
            skip_db: false,
            db_target: None,
            base_url: None,
            pending_id: None,
            joined: Default::default(),
            at: tokio::time::Instant::now(),
            detected: None,
            blame: None,
        }
    }

    /// The trigger's rules, then those that joined (each rule once).
    pub fn all_rules(&self) -> Vec<RuleTrigger> {
        let mut all = self.trigger.rules().to_vec();
        for r in self.joined.rules() {
            if !all.iter().any(|a| a.group == r.group && a.rule == r.rule) {
                all.push(r);
            }
        }
        all
    }

    /// The policy as recorded and counted: an operator's own rollback is
    /// `manual` (it acts at once, as `auto` does, but no rule decided it).
    pub fn policy_label(&self) -> &'static str {
        match (&self.trigger, self.policy) {
            (Trigger::Manual, Policy::Auto) => "manual",
            (_, policy) => policy.as_str(),
        }
    }
}

/// A fresh id like `rb-1a2b3c4d5e6f`.
pub fn new_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 40))
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    format!("{prefix}-{:012x}", mixed & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_are_labelled_as_the_history_and_metrics_name_them() {
        let rules = vec![RuleTrigger::default()];
        assert_eq!(
            [
                Trigger::Manual,
                Trigger::Rules(rules.clone()),
                Trigger::Alertmanager(rules)
            ]
            .map(|t| (t.label(), t.kind().as_str().to_string())),
            [
                ("manual", "manual".to_string()),
                ("rule", "rule".to_string()),
                ("alertmanager", "alertmanager".to_string())
            ]
        );
    }

    #[test]
    fn ids_are_unique_and_short() {
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| new_id("rb")).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 15 && id.starts_with("rb-")));
    }
}
