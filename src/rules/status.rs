//! What a rule looked like at its last evaluation, as the watcher reports it
//! to `/api/v1/rules` and `/metrics`. Plain data built by
//! the watcher; nothing here evaluates or changes a rule.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::model::{Labels, Policy};
use super::state::AlertState;

/// One rule as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub group: String,
    pub rule: String,
    pub kind: &'static str,
    pub policy: Policy,
    pub condition: String,
    pub threshold: f64,
    pub state: AlertState,
    pub value: Option<f64>,
    pub outcome: Option<&'static str>,
    pub detail: Option<String>,
    /// Evaluations so far, by outcome.
    pub evaluations: BTreeMap<&'static str, u64>,
    pub firing_events: u64,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_rfc3339")]
    pub last_evaluation: Option<SystemTime>,
    pub active_series: Vec<ActiveSeries>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveSeries {
    pub labels: Labels,
    pub state: AlertState,
}

mod opt_rfc3339 {
    use serde::Serializer;
    use std::time::SystemTime;

    pub(super) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }
}
