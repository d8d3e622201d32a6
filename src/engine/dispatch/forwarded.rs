//! Operators' answers sent to a follower: beside several replicas only the
//! leader holds pending confirmations, so a follower writes the answer to the
//! shared state (`requests/<id>.json`) and the leader carries it out, once:
//! it removes the request (a write fenced by its epoch) before acting on it.

use serde::{Deserialize, Serialize};

use super::Dispatcher;
use crate::engine::Engine;
use crate::state::Doc;

/// An approval or rejection handed to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forwarded {
    pub pending: String,
    pub approve: bool,
    #[serde(default)]
    pub force: bool,
}

const DIR: &str = "requests";

/// Hands `answer` to the leader; the request's id.
pub fn forward(engine: &Engine, answer: &Forwarded) -> std::io::Result<String> {
    let id = crate::engine::new_id("req");
    let bytes = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    Doc::new(engine.state().clone(), format!("{DIR}/{id}.json")).write(&bytes)?;
    tracing::info!(request = %id, pending = %answer.pending, approve = answer.approve, "handed an operator's answer to the leader");
    Ok(id)
}

impl Dispatcher {
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
            let answer: Forwarded = match serde_json::from_slice(&bytes) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(request = %name, error = %e, "an operator's answer handed over by a follower cannot be read; dropped");
                    continue;
                }
            };
            let result = if answer.approve {
                self.approve(
                    &answer.pending,
                    answer.force,
                    "approved by an operator (through another replica)",
                )
                .await
                .map(|_| ())
            } else {
                self.reject(&answer.pending)
            };
            match result {
                Ok(()) => {
                    tracing::warn!(pending = %answer.pending, approve = answer.approve, "carried out an operator's answer handed over by a follower")
                }
                Err(e) => {
                    tracing::warn!(pending = %answer.pending, error = %e, "an operator's answer handed over by a follower was not carried out")
                }
            }
        }
    }
}
