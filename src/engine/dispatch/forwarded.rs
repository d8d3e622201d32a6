//! What reaches a follower but only the leader may act on: operators'
//! answers (approvals, rejections, breaker resets) and Alertmanager's alerts.
//! Beside several replicas only the leader holds pending confirmations and
//! changes the state, so a follower writes the request to the shared state
//! (`requests/<id>.json`) and the leader carries it out exactly once:
//!
//! - it **takes** the request by writing its epoch into it (a write fenced
//!   by that epoch: of two replicas that both think they lead, only one
//!   commits), and for an approval the id of the run it will start;
//! - it carries it out, and **removes** the request once the effect is
//!   recorded: at once for a rejection, a breaker reset or an alert; for an
//!   approval once its run is no longer running (its journal or history
//!   entry holds it from its first step);
//! - a request a previous leader took and did not remove is looked at by
//!   the next one: an approval whose run the state already holds is done;
//!   otherwise the answer is carried out again (an approval under the run
//!   id the previous leader chose, from the confirmation the follower
//!   copied into the request, since the previous leader's confirmations died
//!   with it; a breaker reset only if the breaker did not change since).
//!
//! A request older than 5 minutes that nobody took is dropped.

use serde::{Deserialize, Serialize};

use super::Dispatcher;
use crate::engine::Engine;
use crate::rules::FiringEvent;
use crate::state::Doc;

/// An operator's answer handed to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Forwarded {
    Approve {
        pending: String,
        #[serde(default)]
        force: bool,
        /// The confirmation as the follower saw it shared, so a leader that
        /// never held it (the one that did died) can still carry it out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<Box<crate::engine::pending::PendingRollback>>,
    },
    Reject {
        pending: String,
    },
    ResetBreaker {
        reason: String,
        /// Also give back what rollbackd holds on the platform.
        #[serde(default)]
        resume_sync: bool,
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
    /// Who took it, once a leader did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    taken: Option<Taken>,
}

/// A leader's hold on a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Taken {
    epoch: i64,
    /// The run an approval starts, named before it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<String>,
}

/// Older requests are dropped: nobody led to carry them out in time, and an
/// answer (a breaker reset) must not be carried out long after it was given.
const STALE: std::time::Duration = std::time::Duration::from_secs(300);

const DIR: &str = "requests";

/// Hands `answer` to the leader; the request's id.
pub(crate) fn forward(engine: &Engine, answer: &Forwarded) -> std::io::Result<String> {
    let id = crate::engine::new_id("req");
    let request = Request {
        at: engine.clock.now(),
        answer: answer.clone(),
        taken: None,
    };
    let bytes = serde_json::to_vec(&request).map_err(std::io::Error::other)?;
    Doc::new(engine.state().clone(), format!("{DIR}/{id}.json")).write(&bytes)?;
    tracing::info!(request = %id, answer = ?answer, "handed an operator's answer to the leader");
    Ok(id)
}

impl Forwarded {
    /// What it is about, for the API's answer.
    pub(crate) fn subject(&self) -> &str {
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

    /// Whether run `id` left a trace: running here, a journal, or a history
    /// entry. A run journals before its first step, so a run the state does
    /// not hold never reached production.
    fn run_recorded(&mut self, id: &str) -> bool {
        if self.busy().as_deref() == Some(id) {
            return true;
        }
        self.engine
            .unfinished()
            .is_ok_and(|journals| journals.iter().any(|j| j.id == id))
            || self
                .engine
                .history()
                .load()
                .is_ok_and(|h| h.events.iter().any(|e| e.id.as_deref() == Some(id)))
    }

    /// The leader carries out the answers followers handed over, exactly
    /// once (see the module's doc).
    pub(super) async fn forwarded(&mut self) {
        let state = self.engine.state().clone();
        let Ok(names) = state.list(DIR) else { return };
        let epoch = self.engine.leadership().epoch();
        for name in names {
            let doc = Doc::new(state.clone(), name.clone());
            let Ok(bytes) = doc.read() else { continue };
            let mut request = match serde_json::from_slice::<Request>(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(request = %name, error = %e, "an operator's answer handed over by a follower cannot be read; dropped");
                    let _ = doc.remove();
                    continue;
                }
            };
            match request.taken.clone() {
                // Taken under this leadership: an approval's request stays
                // until its run is over.
                Some(taken) if taken.epoch == epoch => {
                    let running = taken
                        .run
                        .as_deref()
                        .is_some_and(|run| self.busy().as_deref() == Some(run));
                    if !running {
                        let _ = doc.remove();
                    }
                    continue;
                }
                // A previous leader took it and died before removing it.
                Some(taken) => {
                    if taken
                        .run
                        .as_deref()
                        .is_some_and(|run| self.run_recorded(run))
                    {
                        tracing::info!(request = %name, run = ?taken.run, "an answer the previous leader took was carried out by it");
                        let _ = doc.remove();
                        continue;
                    }
                    tracing::warn!(request = %name, answer = ?request.answer, "the previous leader took an operator's answer and stopped before carrying it out: carrying it out now");
                }
                None => {
                    let age = self
                        .engine
                        .clock
                        .now()
                        .duration_since(request.at)
                        .unwrap_or_default();
                    if age > STALE {
                        tracing::warn!(request = %name, answer = ?request.answer, "dropped an operator's answer handed over more than 5 minutes ago");
                        let _ = doc.remove();
                        continue;
                    }
                }
            }
            // Take it: only the leader's write commits.
            let run = match (&request.answer, &request.taken) {
                (Forwarded::Approve { .. }, Some(Taken { run: Some(run), .. })) => {
                    Some(run.clone())
                }
                (Forwarded::Approve { .. }, _) => Some(crate::engine::new_id("rb")),
                _ => None,
            };
            let previous = request.taken.replace(Taken {
                epoch,
                run: run.clone(),
            });
            let Ok(taken) = serde_json::to_vec(&request) else {
                continue;
            };
            if doc.write(&taken).is_err() {
                continue;
            }
            let answer = request.answer;
            let result = match &answer {
                Forwarded::Approve {
                    pending,
                    force,
                    snapshot,
                } => {
                    // The confirmation died with the leader that held it:
                    // the follower's copy stands in for it.
                    if !self.pending.holds(pending) {
                        if let Some(snapshot) = snapshot.as_deref().filter(|_| previous.is_some()) {
                            self.pending.add(snapshot.clone());
                        }
                    }
                    self.approve_as(
                        pending,
                        *force,
                        "approved by an operator (through another replica)",
                        run,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                }
                Forwarded::Reject { pending } => self.reject(pending).map_err(|e| e.to_string()),
                Forwarded::ResetBreaker {
                    reason,
                    resume_sync,
                } => match self.reset_breaker_once(reason, previous.is_some(), request.at) {
                    Ok(()) if *resume_sync => match self.engine.provider.resume_sync().await {
                        Ok(done) => {
                            if let Some(done) = done {
                                tracing::warn!("{done}");
                            }
                            Ok(())
                        }
                        Err(e) => Err(format!("the breaker is CLOSED, but automated sync could not be turned back on: {e}")),
                    },
                    other => other,
                },
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
            // Done, unless it is an approval whose run now runs: that one
            // goes once the run is over (above).
            let started = matches!(answer, Forwarded::Approve { .. }) && result.is_ok();
            if !started {
                let _ = doc.remove();
            }
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

    /// A forwarded breaker reset. Carried out again for a leader that died
    /// after taking it only when the breaker has not changed since the
    /// answer was given (a reset that did happen, or a newer rollback that
    /// opened it again, must not be overridden).
    fn reset_breaker_once(
        &mut self,
        reason: &str,
        again: bool,
        asked: std::time::SystemTime,
    ) -> Result<(), String> {
        if again {
            let record = self.engine.breaker().load().map_err(|e| e.to_string())?;
            let changed = crate::clock::parse(&record.since).is_some_and(|at| at >= asked);
            if changed {
                return Ok(());
            }
        }
        self.reset_breaker(reason)
    }
}
