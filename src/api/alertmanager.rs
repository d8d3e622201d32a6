//! `POST /api/v1/alertmanager`: Alertmanager as a trigger. Alerts matching
//! `alertmanager.matchers` reach the dispatcher under `alertmanager.policy`;
//! redeliveries are recognised and dropped.
//!
//! What it remembers is bounded: at most [`MAX_SEEN`] recent deliveries
//! (the oldest tenth by arrival forgotten when full), expired once per
//! request rather than once per alert, so a flood of distinct alerts costs
//! neither memory nor time that grows with the flood. A delivery is
//! claimed while its alert is on the way to the dispatcher and forgotten
//! if it never got there (a request cut short), so no alert is lost to a
//! retry taken for a redelivery.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{config, error, AppState};
use crate::rules::{FiringEvent, RuleEvent, ALERTMANAGER_GROUP};

/// Deliveries remembered to recognise Alertmanager's redeliveries.
pub(crate) const MAX_SEEN: usize = 10_000;

/// Alertmanager as a trigger: the config, the way to the dispatcher, and
/// what was delivered recently (Alertmanager delivers at least once).
#[derive(Clone)]
pub(crate) struct AlertIntake {
    pub config: config::AlertmanagerConfig,
    pub events: mpsc::Sender<RuleEvent>,
    pub seen: Arc<Mutex<Deliveries>>,
}

/// Alertmanager's webhook payload, version 4.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertmanagerPayload {
    version: String,
    group_key: String,
    #[serde(default)]
    alerts: Vec<AlertmanagerAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertmanagerAlert {
    status: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    fingerprint: String,
}

/// `POST /api/v1/alertmanager`: alerts matching `alertmanager.matchers`
/// trigger the engine under `alertmanager.policy`; redeliveries (same group
/// key, fingerprint, status and start) are recognised and dropped; a resolved
/// alert cancels the pending confirmation it caused. (The token was checked
/// before the body was read: `require_token`.)
pub(crate) async fn receive(State(state): State<AppState>, bytes: Bytes) -> Response {
    let Some(intake) = &state.alerts else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Alertmanager is not configured as a trigger: add an [alertmanager] section (and a [provider])",
        );
    };
    let payload: AlertmanagerPayload = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "refused a request on /api/v1/alertmanager: not an Alertmanager webhook payload");
            return error(
                StatusCode::BAD_REQUEST,
                format!("not an Alertmanager webhook payload: {e}"),
            );
        }
    };
    if payload.version != "4" {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "Alertmanager webhook payload version {:?}; rollbackd reads version 4",
                payload.version
            ),
        );
    }
    let (mut accepted, mut duplicates, mut ignored) = (0, 0, 0);
    let now = Instant::now();
    intake
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .expire(now, intake.config.dedupe_for);
    for alert in payload.alerts {
        let matches = intake
            .config
            .matchers
            .iter()
            .all(|(k, v)| alert.labels.get(k) == Some(v));
        if !matches || !matches!(alert.status.as_str(), "firing" | "resolved") {
            ignored += 1;
            continue;
        }
        let key = delivery_key(&payload.group_key, &alert);
        // Claimed before it is sent, so a redelivery arriving meanwhile (an
        // Alertmanager pair, a retry) is a duplicate; given back if this
        // request ends before the alert reached the dispatcher.
        let Some(claim) = Claim::take(&intake.seen, key, now) else {
            duplicates += 1;
            continue;
        };
        let name = alert
            .labels
            .get("alertname")
            .cloned()
            .unwrap_or_else(|| "alert".into());
        let since = humantime::parse_rfc3339_weak(
            alert
                .starts_at
                .trim_end_matches('Z')
                .split('.')
                .next()
                .unwrap_or(""),
        )
        .unwrap_or_else(|_| SystemTime::now());
        let condition = alert
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_else(|| "firing in Alertmanager".into());
        let event = FiringEvent {
            group: ALERTMANAGER_GROUP.into(),
            rule: name,
            labels: alert.labels,
            value: f64::NAN,
            condition,
            threshold: f64::NAN,
            policy: intake.config.policy,
            since,
            fired_at: SystemTime::now(),
            annotations: alert.annotations,
            spec: None,
        };
        let event = if alert.status == "firing" {
            RuleEvent::Fired(event)
        } else {
            RuleEvent::Resolved(event)
        };
        if intake.events.send(event).await.is_err() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the rollback engine has stopped",
            );
        }
        claim.keep();
        accepted += 1;
    }
    tracing::info!(accepted, duplicates, ignored, group_key = %payload.group_key, "Alertmanager notification received");
    Json(json!({ "accepted": accepted, "duplicates": duplicates, "ignored": ignored }))
        .into_response()
}

/// One delivery of one alert: group key, fingerprint, status and start.
fn delivery_key(group_key: &str, alert: &AlertmanagerAlert) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        group_key,
        &alert.fingerprint,
        &alert.status,
        &alert.starts_at,
    )
        .hash(&mut h);
    h.finish()
}

/// A delivery claimed while its alert is on its way to the dispatcher.
struct Claim {
    seen: Arc<Mutex<Deliveries>>,
    key: u64,
    kept: bool,
}

impl Claim {
    /// `None` when the delivery was seen (or claimed) already.
    fn take(seen: &Arc<Mutex<Deliveries>>, key: u64, now: Instant) -> Option<Claim> {
        let mut deliveries = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if deliveries.seen(key) {
            return None;
        }
        deliveries.remember(key, now);
        Some(Claim {
            seen: seen.clone(),
            key,
            kept: false,
        })
    }

    /// The alert reached the dispatcher: the delivery stays remembered.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.kept {
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .seen
                .remove(&self.key);
        }
    }
}

/// Deliveries seen recently, in the order they arrived.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    /// Key → (when, arrival number).
    seen: HashMap<u64, (Instant, u64)>,
    next: u64,
}

impl Deliveries {
    fn seen(&self, key: u64) -> bool {
        self.seen.contains_key(&key)
    }

    /// Forgets deliveries older than `ttl`.
    fn expire(&mut self, now: Instant, ttl: std::time::Duration) {
        self.seen.retain(|_, (t, _)| now.duration_since(*t) < ttl);
    }

    /// Remembers a delivery. When full, the oldest tenth (by arrival) is
    /// forgotten: a redelivery that old is taken as new.
    fn remember(&mut self, key: u64, now: Instant) {
        if self.seen.len() >= MAX_SEEN {
            let oldest_kept = self.next - (MAX_SEEN - MAX_SEEN / 10) as u64;
            self.seen.retain(|_, (_, n)| *n >= oldest_kept);
        }
        self.seen.insert(key, (now, self.next));
        self.next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_deliveries_stay_bounded_and_redeliveries_are_recognised() {
        let mut d = Deliveries::default();
        // One instant for all, as within one request.
        let now = Instant::now();
        for key in 0..(MAX_SEEN as u64 * 3) {
            assert!(!d.seen(key));
            d.remember(key, now);
            assert!(d.seen.len() <= MAX_SEEN);
        }
        let newest = MAX_SEEN as u64 * 3 - 1;
        assert!(d.seen(newest), "a redelivery");
        assert!(
            d.seen(newest - (MAX_SEEN as u64 * 8 / 10)),
            "only the oldest tenth went"
        );
        assert!(!d.seen(0), "the oldest were forgotten");
        d.expire(
            now + std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(5),
        );
        assert!(d.seen.is_empty());
    }
}
