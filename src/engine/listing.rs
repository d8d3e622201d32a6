//! The platform's deployment list, shared by the guards, the plan and the
//! platform call, so a rollback lists deployments once on its critical path.
//!
//! - The guards and the plan take a list at most `engine.deployments_max_age`
//!   old. While a rule is pending the dispatcher keeps one that fresh
//!   (`prefetch`), so a rule that fires finds it ready.
//! - The platform call takes only a list asked for after the incident began
//!   (`RollbackRequest::at`) and within that age. When the plan was made
//!   from an older one, the run asks again as it starts, while it takes the
//!   lock, journals and backs up (`phases::pre_validation`), and the
//!   application phase checks the plan against the new list before it
//!   calls (`phases::application`).
//! - Callers that want a list at the same time share one request: a second
//!   caller waits for the request in flight instead of sending another.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::Engine;
use crate::provider::{Deployment, ProviderError};

/// How many deployments are listed: enough for the target, the guards and
/// the deployment a rollback creates.
pub(crate) const LIST_LIMIT: usize = 50;

/// One answer of the platform: its deployments, newest first, and when they
/// were asked for (the list is at least that fresh).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub deployments: Arc<Vec<Deployment>>,
    pub asked: Instant,
}

/// The last list, and the lock that makes concurrent callers share one request.
#[derive(Default)]
pub(crate) struct Listing {
    last: Mutex<Last>,
    asking: tokio::sync::Mutex<()>,
    /// A prefetch is running (or backing off after a failure): no second one.
    prefetching: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Last {
    snapshot: Option<Snapshot>,
    /// Counts `forget`s: a list asked for before one is never kept.
    generation: u64,
}

impl Listing {
    fn last(&self) -> std::sync::MutexGuard<'_, Last> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn last_since(&self, cutoff: Instant) -> Option<Snapshot> {
        self.last().snapshot.clone().filter(|s| s.asked >= cutoff)
    }

    /// Forgets the last list, and any being asked for: the platform changed
    /// (a rollback was asked for).
    pub(crate) fn forget(&self) {
        let mut last = self.last();
        last.snapshot = None;
        last.generation += 1;
    }
}

/// `now - age`, or a cutoff that nothing meets when the clock is too young.
fn ago(age: Duration) -> Instant {
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

impl Engine {
    /// A deployment list asked for at or after `cutoff`: the last one, the
    /// one being asked for now, or a new one.
    pub async fn deployments_since(&self, cutoff: Instant) -> Result<Snapshot, ProviderError> {
        if let Some(s) = self.listing.last_since(cutoff) {
            return Ok(s);
        }
        let _asking = self.listing.asking.lock().await;
        // The request this caller waited for may be fresh enough.
        if let Some(s) = self.listing.last_since(cutoff) {
            return Ok(s);
        }
        let asked = Instant::now();
        let generation = self.listing.last().generation;
        let deployments = self.provider.list(LIST_LIMIT).await?;
        let snapshot = Snapshot {
            deployments: Arc::new(deployments),
            asked,
        };
        let mut last = self.listing.last();
        if last.generation == generation {
            last.snapshot = Some(snapshot.clone());
        }
        Ok(snapshot)
    }

    /// A list at most `engine.deployments_max_age` old (guards, plans).
    pub async fn deployments(&self) -> Result<Snapshot, ProviderError> {
        self.deployments_since(ago(self.config.deployments_max_age))
            .await
    }

    /// A list fit for the platform call of `req`: asked for after the
    /// request was made, and at most `engine.deployments_max_age` old.
    pub async fn deployments_for_call(
        &self,
        req: &super::RollbackRequest,
    ) -> Result<Snapshot, ProviderError> {
        self.deployments_since(req.at.max(ago(self.config.deployments_max_age)))
            .await
    }

    /// Whether the platform call of `req` would have to list again.
    pub fn call_needs_new_list(&self, req: &super::RollbackRequest) -> bool {
        self.listing
            .last_since(req.at.max(ago(self.config.deployments_max_age)))
            .is_none()
    }
}

/// Keeps the list fresh while a rule is pending: asks again, in the
/// background, once it is half `engine.deployments_max_age` old. The next
/// caller shares the request; an error is left for it (it asks again).
pub(crate) fn prefetch(engine: &Arc<Engine>) {
    use std::sync::atomic::Ordering;
    let cutoff = ago(engine.config.deployments_max_age / 2);
    if engine.listing.last_since(cutoff).is_some()
        || engine.listing.prefetching.swap(true, Ordering::SeqCst)
    {
        return;
    }
    let engine = engine.clone();
    tokio::spawn(async move {
        if let Err(e) = engine.deployments_since(cutoff).await {
            tracing::debug!(error = %e, "cannot list deployments ahead of a rollback");
            // A failing platform is not asked again every second.
            tokio::time::sleep(engine.config.deployments_max_age).await;
        }
        engine.listing.prefetching.store(false, Ordering::SeqCst);
    });
}

/// Whether the plan still holds on the platform's latest list: the same
/// deployment is live, and the target (when listed) can still be rolled
/// back to.
pub(crate) fn still_valid(
    plan: &crate::engine::Plan,
    deployments: &[crate::provider::Deployment],
) -> Result<(), String> {
    let live = deployments.iter().find(|d| d.is_success());
    if live.map(|d| &d.id) != Some(&plan.current.id) {
        return Err(format!(
            "the platform changed since the plan: {} is live now, not {}",
            live.map_or("no deployment", |d| d.id.as_str()),
            plan.current.id
        ));
    }
    if let Some(target) = deployments.iter().find(|d| d.id == plan.target.id) {
        if !crate::engine::target::is_candidate(target) {
            return Err(format!(
                "the platform changed since the plan: the target {} has status {}{}",
                target.id,
                target.status,
                if target.can_rollback == Some(false) {
                    " and can no longer be rolled back to"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{Call, Rig};

    fn lists(rig: &Rig) -> usize {
        rig.platform
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::List))
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn callers_at_the_same_time_share_one_request_and_a_fresh_list_is_reused() {
        let rig = Rig::new(|_| {});
        let engine = &rig.engine;
        let (a, b) = tokio::join!(engine.deployments(), engine.deployments());
        assert_eq!(a.unwrap().asked, b.unwrap().asked);
        assert_eq!(lists(&rig), 1, "one request for both");
        engine.deployments().await.unwrap();
        assert_eq!(lists(&rig), 1, "within the maximum age: reused");
        tokio::time::sleep(engine.config.deployments_max_age + Duration::from_millis(1)).await;
        engine.deployments().await.unwrap();
        assert_eq!(lists(&rig), 2, "too old: asked again");
    }

    #[tokio::test(start_paused = true)]
    async fn the_platform_call_takes_only_a_list_asked_for_after_the_request() {
        let rig = Rig::new(|_| {});
        let engine = &rig.engine;
        engine.deployments().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let req = crate::engine::tests::automatic();
        assert!(engine.call_needs_new_list(&req));
        let fresh = engine.deployments_for_call(&req).await.unwrap();
        assert!(fresh.asked >= req.at);
        assert_eq!(lists(&rig), 2);
        assert!(!engine.call_needs_new_list(&req));
    }
}
