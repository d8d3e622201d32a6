//! The rules' domain events: a rule series fired or resolved. The seam
//! between whatever produces them (the watcher, the Alertmanager endpoint)
//! and whatever acts on them (the rollback engine, logs, notifications).
//! Plain data: nothing here may act on an event.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::model::{Labels, Policy, QueryRule, RuleBlame};

/// One rule series went to firing. Produced exactly once per firing episode
/// of a series; consumed by the rollback engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiringEvent {
    pub group: String,
    pub rule: String,
    /// The series' labels merged with the rule's own `labels`.
    pub labels: Labels,
    pub value: f64,
    /// The condition in words, such as `> 0.00025`.
    pub condition: String,
    pub threshold: f64,
    pub policy: Policy,
    /// When the breach began.
    #[serde(with = "crate::clock::rfc3339")]
    pub since: SystemTime,
    /// When the rule fired.
    #[serde(with = "crate::clock::rfc3339")]
    pub fired_at: SystemTime,
    pub annotations: Labels,
    /// What the rule evaluates and how it is judged for blame; none for an
    /// Alertmanager alert. Not sent between replicas: each evaluates its
    /// own rules.
    #[serde(skip)]
    pub spec: Option<std::sync::Arc<FiredRule>>,
}

/// The parts of a fired rule that blame needs.
#[derive(Debug, Clone, PartialEq)]
pub struct FiredRule {
    /// The expression and its interpretation; none for a probe.
    pub query: Option<QueryRule>,
    /// The group's interval: the step of the judgement's range queries.
    pub interval: std::time::Duration,
    pub blame: RuleBlame,
}

impl FiredRule {
    /// What blame needs of `rule`, evaluated every `interval`.
    pub fn of(rule: &super::Rule, interval: std::time::Duration) -> FiredRule {
        FiredRule {
            query: match &rule.kind {
                super::RuleKind::Query(q) => Some(q.clone()),
                super::RuleKind::Probe(_) => None,
            },
            interval,
            blame: rule.blame.clone(),
        }
    }
}

/// The group name of events that came from Alertmanager rather than a rule.
pub const ALERTMANAGER_GROUP: &str = "alertmanager";

/// What the watcher (or the Alertmanager endpoint) tells the rollback side.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleEvent {
    /// A series went to firing.
    Fired(FiringEvent),
    /// A firing series resolved.
    Resolved(FiringEvent),
}
