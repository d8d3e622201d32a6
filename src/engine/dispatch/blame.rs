//! Blame in the dispatcher: before an automatic rollback (and to show the
//! evidence with a confirmation), judge whether the live deployment is to
//! blame; act on the verdict; and when a newer deployment still in progress
//! is the one to blame, never roll back past the live one: cancel the newer
//! one where the platform allows, otherwise wait (at most
//! `blame.settle_timeout`) for it to settle and decide again.

use std::sync::Arc;

use tokio::time::Instant;

use super::Dispatcher;
use crate::blame::{Blamer, Judgement, Reason, Verdict};
use crate::engine::{Blocked, RollbackRequest};
use crate::provider::Deployment;
use crate::rules::Policy;
use crate::telemetry::events;

/// A rollback held while a newer deployment settles.
pub(super) struct Deferred {
    req: RollbackRequest,
    deployment: String,
    until: Instant,
}

impl Dispatcher {
    /// Judges blame for this replica's rollbacks from now on.
    pub(crate) fn with_blame(mut self, blamer: Blamer) -> Self {
        self.blamer = Some(Arc::new(blamer));
        self
    }

    /// The judgement for `req` against `live`, or `None` when blame is
    /// off for its rules.
    pub(super) async fn judge(
        &mut self,
        req: &RollbackRequest,
        live: &Deployment,
    ) -> Option<Judgement> {
        let blamer = self.blamer.clone()?;
        let events = self
            .open
            .as_ref()
            .map(|o| o.events.clone())
            .unwrap_or_default();
        if !blamer.applies(&events) {
            return None;
        }
        let now = self.engine.clock.now();
        let started = std::time::Instant::now();
        let judgement = match self.in_progress(live, req).await {
            Some(newer) => Judgement {
                seconds: started.elapsed().as_secs_f64(),
                ..in_progress(live, &newer)
            },
            None => blamer.judge(&events, live, now).await,
        };
        events::blame_judged(&judgement);
        Some(judgement)
    }

    /// A deployment newer than `live`, still in progress, that started
    /// before the breach began (so the breach can be its).
    async fn in_progress(&self, live: &Deployment, req: &RollbackRequest) -> Option<Deployment> {
        let breached = req.detected.as_ref()?.breached_at;
        let listed = self.engine.deployments().await.ok()?;
        listed
            .deployments
            .iter()
            .find(|d| d.created_at > live.created_at && d.in_progress() && d.created_at <= breached)
            .cloned()
    }

    /// An `auto` rollback under its judgement.
    pub(super) async fn act_on_verdict(&mut self, mut req: RollbackRequest, judgement: Judgement) {
        tracing::warn!(
            verdict = judgement.verdict.as_str(),
            reason = judgement.reason.as_str(),
            "blame: {judgement}"
        );
        req.blame = Some(judgement.clone());
        match judgement.verdict {
            Verdict::ToBlame => {
                let run = self.start(req);
                if let Some(open) = self.open.as_mut() {
                    open.run = Some(run);
                }
            }
            Verdict::NotToBlame if judgement.reason == Reason::DeployInProgress => {
                self.newer_to_blame(req, &judgement).await
            }
            Verdict::NotToBlame => self.engine.record_blocked(
                &req,
                &Blocked {
                    guard: crate::engine::guard::Guard::Blame,
                    reason: format!("the live deployment is not to blame: {judgement}"),
                },
            ),
            // Never a silent skip: a person decides.
            Verdict::Inconclusive => {
                self.park_instead(req, "not enough evidence to blame the deploy")
                    .await
            }
        }
    }

    /// A newer deployment in progress is to blame: cancel it, or wait for
    /// it to settle and decide again.
    async fn newer_to_blame(&mut self, req: RollbackRequest, judgement: &Judgement) {
        let Some(blamer) = self.blamer.clone() else {
            return;
        };
        let listed = self.engine.deployments().await.ok();
        let newer = listed
            .as_ref()
            .and_then(|l| {
                l.deployments
                    .iter()
                    .find(|d| d.id == judgement.deployment_in_progress())
            })
            .cloned();
        let Some(newer) = newer else { return };
        if blamer.config.cancel_in_progress && self.engine.provider.cancels() {
            let outcome = match self.engine.provider.cancel(&newer).await {
                Ok(()) => format!("deployment {} was cancelled", newer.id),
                Err(e) => format!("deployment {} could not be cancelled: {e}", newer.id),
            };
            tracing::warn!(deployment = %newer.id, "{outcome}");
            self.engine.record_blocked(
                &req,
                &Blocked {
                    guard: crate::engine::guard::Guard::Blame,
                    reason: format!("{judgement}; {outcome}; the live deployment stays"),
                },
            );
            return;
        }
        self.defer(req, newer.id);
    }

    /// When the guards found no live deployment because the newest one is
    /// still in progress (a rule can fire in the second a deploy goes
    /// live): that deployment's id.
    pub(super) async fn settling(&self, blocked: &Blocked) -> Option<String> {
        if blocked.guard != crate::engine::guard::Guard::Provider
            || !blocked.reason.starts_with("no deployment is live")
        {
            return None;
        }
        let listed = self.engine.deployments().await.ok()?;
        let newest = listed.deployments.first()?;
        newest.in_progress().then(|| newest.id.clone())
    }

    /// Holds `req` until `deployment` settles (at most
    /// `blame.settle_timeout`), then decides again (upkeep).
    pub(super) fn defer(&mut self, req: RollbackRequest, deployment: String) {
        let wait = self
            .blamer
            .as_ref()
            .map_or(std::time::Duration::from_secs(600), |b| {
                b.config.settle_timeout
            });
        tracing::warn!(
            deployment = %deployment,
            "the newest deployment is still in progress and none is live yet; waiting up to {} for it to settle, then deciding again",
            crate::duration::format(wait)
        );
        self.deferred = Some(Deferred {
            req,
            deployment,
            until: Instant::now() + wait,
        });
    }

    /// Upkeep, while rules are pending: ask for their baselines before the
    /// live deployment's go-live now, so the judgement when one fires asks
    /// only for what happened since (one task at a time; a baseline once
    /// had is kept).
    pub(super) fn prefetch_baselines(&mut self) {
        let Some(blamer) = self.blamer.clone() else {
            return;
        };
        if self.prefetching.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        // Only rules with an expression that blame judges have a baseline:
        // with blame off, nothing is asked (not even the deployment list).
        let pending: Vec<_> = self
            .board
            .pending()
            .into_iter()
            .filter(|(_, _, spec)| spec.query.is_some() && blamer.judges(spec))
            .collect();
        if pending.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        self.prefetching = Some(tokio::spawn(async move {
            let Ok(listed) = engine.deployments().await else {
                return;
            };
            let Some(live) = listed.deployments.iter().find(|d| d.is_success()).cloned() else {
                return;
            };
            let asks = pending
                .iter()
                .map(|(group, rule, spec)| blamer.prefetch(group, rule, spec, &live));
            futures_util::future::join_all(asks).await;
        }));
    }

    /// Upkeep: a deferred rollback whose newer deployment settled (or whose
    /// wait ran out) is decided again; one whose rules resolved is dropped.
    pub(super) async fn settle_deferred(&mut self) {
        let Some(deferred) = &self.deferred else {
            return;
        };
        let (firing, _) = self.recheck(deferred.req.trigger.rules());
        if !firing {
            tracing::info!(deployment = %deferred.deployment, "blame: the rules resolved while a newer deployment settled; nothing to do");
            self.deferred = None;
            return;
        }
        let timed_out = Instant::now() >= deferred.until;
        let settled = match self.engine.deployments().await {
            Ok(l) => l
                .deployments
                .iter()
                .find(|d| d.id == deferred.deployment)
                .is_none_or(|d| !d.in_progress()),
            Err(_) => false,
        };
        if !(settled || timed_out) {
            return;
        }
        let Some(Deferred { mut req, .. }) = self.deferred.take() else {
            return;
        };
        if settled {
            // Decide again on what is live now.
            req.blame = None;
            return Box::pin(self.act(req)).await;
        }
        self.park_instead(
            req,
            "the newer deployment did not settle within blame.settle_timeout",
        )
        .await
    }

    /// An automatic rollback that blame could not decide: parked as a
    /// confirmation, saying why.
    async fn park_instead(&mut self, mut req: RollbackRequest, why: &str) {
        req.policy = Policy::Confirm;
        req.reason = format!(
            "{} (an auto rule, parked for confirmation: {why})",
            req.reason
        );
        let pending = self.park(req).await;
        if let Some(open) = self.open.as_mut() {
            open.pending = pending;
        }
    }
}

/// The judgement when a newer deployment in progress is to blame.
fn in_progress(live: &Deployment, newer: &Deployment) -> Judgement {
    Judgement {
        verdict: Verdict::NotToBlame,
        reason: Reason::DeployInProgress,
        summary: format!(
            "deployment {} ({}) started before the breach began and is still in progress: \
             it is the one to blame, not the live deployment {}",
            newer.id, newer.status, live.id
        ),
        deployment: live.id.clone(),
        go_live: crate::clock::seconds(live.created_at),
        rules: Vec::new(),
        inhibitors: Vec::new(),
        seconds: 0.0,
        in_progress: Some(newer.id.clone()),
    }
}
