//! Rollbacks waiting for an operator (`policy: confirm`). Kept in memory: a
//! pending confirmation is short-lived by design and expires to the
//! configured default; the decision itself is recorded in the history.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use crate::history::RuleTrigger;
use crate::state::Doc;

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct PendingRollback {
    pub id: String,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: SystemTime,
    #[serde(with = "crate::clock::rfc3339")]
    pub expires_at: SystemTime,
    pub rules: Vec<RuleTrigger>,
    pub reason: String,
    /// What would happen, in words (from the plan made when it was created).
    pub plan: String,
    /// When its rules breached and fired, for the detection figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<crate::engine::request::Detected>,
    /// The blame judgement, when one was made (an `auto` rule parks here
    /// when there was not enough evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blame: Option<crate::blame::Judgement>,
}

#[derive(Debug, Default)]
pub(crate) struct PendingStore {
    inner: Mutex<BTreeMap<String, PendingRollback>>,
    /// Beside several replicas, the leader shares its list here, so every
    /// replica's `GET /api/v1/pending` shows it.
    mirror: Option<Doc>,
}

impl PendingStore {
    /// A store whose list is shared through `doc`.
    pub(crate) fn mirrored(doc: Doc) -> PendingStore {
        PendingStore {
            inner: Mutex::default(),
            mirror: Some(doc),
        }
    }

    /// The list the leader shares (what a follower shows).
    pub(crate) fn shared(&self) -> Vec<serde_json::Value> {
        self.mirror
            .as_ref()
            .and_then(|doc| doc.read().ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// One confirmation of the shared list (a follower's copy of the
    /// leader's), whole.
    pub(crate) fn shared_one(&self, id: &str) -> Option<PendingRollback> {
        self.shared()
            .into_iter()
            .find(|p| p["id"].as_str() == Some(id))
            .and_then(|p| serde_json::from_value(p).ok())
    }

    /// Whether this replica holds confirmation `id`.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    pub(crate) fn add(&self, p: PendingRollback) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(p.id.clone(), p);
        self.publish();
    }

    pub(crate) fn take(&self, id: &str) -> Option<PendingRollback> {
        let p = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        self.publish();
        p
    }

    pub(crate) fn list(&self) -> Vec<PendingRollback> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Removes and returns the ones whose time ran out.
    pub(crate) fn take_expired(&self, now: SystemTime) -> Vec<PendingRollback> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let expired: Vec<String> = inner
            .values()
            .filter(|p| p.expires_at <= now)
            .map(|p| p.id.clone())
            .collect();
        let out: Vec<PendingRollback> = expired.iter().filter_map(|id| inner.remove(id)).collect();
        drop(inner);
        if !out.is_empty() {
            self.publish();
        }
        out
    }

    /// Shares the list (and sets the gauge) as it is now.
    pub(crate) fn publish(&self) {
        let n = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        crate::telemetry::events::pending_confirmations(n);
        if let Some(doc) = &self.mirror {
            let shared = serde_json::to_vec(&self.list()).map_err(std::io::Error::other);
            if let Err(e) = shared.and_then(|bytes| doc.write(&bytes)) {
                tracing::warn!(error = %e, "cannot share the pending confirmations with the other replicas");
            }
        }
    }
}
