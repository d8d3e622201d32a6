//! What reaches a follower but only the leader may act on: operators'
//! answers (approvals, rejections, breaker resets) and Alertmanager's alerts.
//! Beside several replicas only the leader holds pending confirmations and
//! changes the state, so a follower writes the request to the shared state
//! (`requests/<id>.json`) and the leader carries it out at most once: it
//! removes the request (a write fenced by its epoch) before acting. A
//! request older than 5 minutes is dropped.

use serde::{Deserialize, Serialize};

use super::Dispatcher;
use crate::engine::Engine;
use crate::rules::FiringEvent;
use crate::state::Doc;

/// An operator's answer handed to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Forwarded {
    Approve {
        pending: String,
        #[serde(default)]
        force: bool,
    },
    Reject {
        pending: String,
    },
    ResetBreaker {
        reason: String,
    },
    /// Alertmanager delivered to a follower: an alert fired…
    AlertFired(FiringEvent),
    /// …or resolved.
    AlertResolved(FiringEvent),
}

/// A request as written: the answer, and when (a stale one is dropped).
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    #[serde(with = "crate::clock::rfc3339")]
    at: std::time::SystemTime,
    answer: Forwarded,
}

/// Older requests are dropped: nobody led to carry them out in time, and an
/// answer (a breaker reset) must not be carried out long after it was given.
const STALE: std::time::Duration = std::time::Duration::from_secs(300);

const DIR: &str = "requests";

/// Hands `answer` to the leader; the request's id.
pub fn forward(engine: &Engine, answer: &Forwarded) -> std::io::Result<String> {
    let id = crate::engine::new_id("req");
    let request = Request {
        at: engine.clock.now(),
        answer: answer.clone(),
    };
    let bytes = serde_json::to_vec(&request).map_err(std::io::Error::other)?;
    Doc::new(engine.state().clone(), format!("{DIR}/{id}.json")).write(&bytes)?;
    tracing::info!(request = %id, answer = ?answer, "handed an operator's answer to the leader");
    Ok(id)
}

impl Forwarded {
    /// What it is about, for the API's answer.
    pub fn subject(&self) -> &str {
        match self {
            Forwarded::Approve { pending, .. } | Forwarded::Reject { pending } => pending,
            Forwarded::ResetBreaker { .. } => "breaker",
            Forwarded::AlertFired(e) | Forwarded::AlertResolved(e) => &e.rule,
        }
    }
}

impl Dispatcher {
    /// An operator's breaker reset: not while a rollback runs.
    fn reset_breaker(&mut self, reason: &str) -> Result<(), String> {
        let Some(_lock) = self.engine.try_lock() else {
            return Err("a rollback is running; reset the breaker after it ends".into());
        };
        let now = self.engine.clock.now();
        self.engine
            .breaker()
            .close(now, reason)
            .map_err(|e| e.to_string())?;
        self.engine.breaker_state(now);
        Ok(())
    }

    /// The leader carries out the answers followers handed over.
    pub(super) async fn forwarded(&mut self) {
        let state = self.engine.state().clone();
        let Ok(names) = state.list(DIR) else { return };
        for name in names {
            let doc = Doc::new(state.clone(), name.clone());
            let Ok(bytes) = doc.read() else { continue };
            // Taken once: only the leader's removal commits.
            if doc.remove().is_err() {
                continue;
            }
            let answer = match serde_json::from_slice::<Request>(&bytes) {
                Ok(r)
                    if self
                        .engine
                        .clock
                        .now()
                        .duration_since(r.at)
                        .unwrap_or_default()
                        > STALE =>
                {
                    tracing::warn!(request = %name, answer = ?r.answer, "dropped an operator's answer handed over more than 5 minutes ago");
                    continue;
                }
                Ok(r) => r.answer,
                Err(e) => {
                    tracing::error!(request = %name, error = %e, "an operator's answer handed over by a follower cannot be read; dropped");
                    continue;
                }
            };
            let result = match &answer {
                Forwarded::Approve { pending, force } => self
                    .approve(
                        pending,
                        *force,
                        "approved by an operator (through another replica)",
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Forwarded::Reject { pending } => self.reject(pending).map_err(|e| e.to_string()),
                Forwarded::ResetBreaker { reason } => self.reset_breaker(reason),
                Forwarded::AlertFired(e) => {
                    self.alerts.fired(e);
                    self.incident(vec![e.clone()]).await;
                    Ok(())
                }
                Forwarded::AlertResolved(e) => {
                    self.alerts.resolved(e);
                    self.resolved(e.clone());
                    Ok(())
                }
            };
            match result {
                Ok(()) => {
                    tracing::warn!(answer = ?answer, "carried out an operator's answer handed over by a follower")
                }
                Err(e) => {
                    tracing::warn!(answer = ?answer, error = %e, "an operator's answer handed over by a follower was not carried out")
                }
            }
        }
    }
}
