//! The records rollbackd's history, notifications and metrics share:
//! blame's judgements, the guards' names, the GitOps revert, and an
//! incident's detection figures. Plain data, importing nothing of the
//! crate, so the history (which persists them), the notifications (which
//! tell them) and telemetry (which counts them) can all sit above it.

use serde::{Deserialize, Serialize};

pub(crate) mod blame;
pub(crate) mod guard;
pub(crate) mod revert;

/// The figures of a [`Detection`], in the order of an incident, as
/// histograms name them (`telemetry::events::incident_observed` records them).
pub(crate) const DETECTION_FIGURES: [&str; 5] = [
    "deploy_to_breach",
    "breach_to_firing",
    "firing_to_call",
    "call_to_healthy",
    "deploy_to_healthy",
];

/// The seed's "time to detect vs time to rollback" for one rollback: when
/// the live deployment was created, the first rule began to breach and
/// fired, the platform was called and the service was verified healthy,
/// and the seconds between them. A figure is there only when both its ends
/// are (an operator's rollback has no breach; a failed one is never healthy).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Detection {
    /// The rule group of the rule that started the incident (`alertmanager`
    /// for an alert, `manual` for an operator's rollback).
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breached_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_at: Option<String>,
    /// Live deployment created -> first breach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_to_breach_seconds: Option<f64>,
    /// First breach -> firing (the rule's `for`, at least).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breach_to_firing_seconds: Option<f64>,
    /// Firing -> platform call (a confirmation's wait included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_to_call_seconds: Option<f64>,
    /// Platform call -> service verified healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_to_healthy_seconds: Option<f64>,
    /// Live deployment created -> verified healthy: the time to recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_to_healthy_seconds: Option<f64>,
}
