//! What the dispatcher does every second: expire confirmations, move the
//! breaker from HALF_OPEN to CLOSED once the rules stayed clear, and now and
//! then record the live deployment's schema revision and settle a rollback a
//! killed CLI left unfinished; keep the deployment list fresh while a rule
//! is pending.

use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::Dispatcher;
use crate::engine::BreakerState;
use crate::rules::{AlertState, FiringEvent};

impl Dispatcher {
    pub(super) async fn upkeep(&mut self) {
        // Only the leader keeps things; one that just took over first settles
        // what the previous leader left.
        // A new epoch is a new leadership, even one lost and taken back
        // between two looks.
        let leader = self.engine.is_leader();
        let epoch = self.engine.leadership().epoch();
        if leader && (!self.was_leader || epoch != self.led_epoch) {
            self.orphans_every = Duration::from_secs(10);
            self.take_over();
        }
        self.was_leader = leader;
        self.led_epoch = epoch;
        if !leader {
            return;
        }
        if self.taking_over() {
            return;
        }
        if self.takeover.take().is_some() {
            self.took_over().await;
        }
        self.forwarded().await;
        self.record_revision().await;
        self.expire_confirmations().await;
        self.settle_deferred().await;
        let rules = self.board.rules();
        // While a rule is pending, keep the deployment list fresh: the
        // rollback it may start then lists nothing before it acts. (Not
        // while one runs: the platform is changing under it.)
        if self.busy().is_none() && rules.iter().any(|r| r.state == AlertState::Pending) {
            crate::engine::listing::prefetch(&self.engine);
            self.prefetch_baselines();
        }
        self.close_breaker_when_clear(&rules);
        self.settle_orphans();
    }

    /// This replica now leads: first settle what the previous leader left
    /// (its journal), in a supervised task of its own, so the dispatcher
    /// (and the API's answers through it) never waits on it; then
    /// ([`Self::took_over`]) act on the rules that fired meanwhile.
    fn take_over(&mut self) {
        if let Some(earlier) = self.takeover.take() {
            earlier.abort();
        }
        let engine = self.engine.clone();
        self.takeover = Some(crate::supervise::global().spawn("settling", async move {
            match engine.recover().await {
                Ok(settled) => {
                    for s in &settled {
                        tracing::warn!(rollback = %s.id(), "{}", s.summary());
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot settle a rollback the previous leader left")
                }
            }
        }));
    }

    /// Whether the previous leader's runs are still being settled.
    pub(super) fn taking_over(&self) -> bool {
        self.takeover.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// What the previous leader left is settled: act on the rules that
    /// fired while this replica followed (or took over) and still fire (the
    /// guards refuse what the old leader already did).
    async fn took_over(&mut self) {
        self.orphans_checked = Some(Instant::now());
        // The previous leader's confirmations died with it: share that.
        self.pending.publish();
        let rules = self.board.rules();
        let still: Vec<FiringEvent> = std::mem::take(&mut self.seen_firing)
            .into_values()
            .filter(|e| {
                e.group == crate::rules::ALERTMANAGER_GROUP && self.alerts.firing(&e.rule)
                    || rules.iter().any(|r| {
                        r.group == e.group && r.rule == e.rule && r.state == AlertState::Firing
                    })
            })
            .collect();
        if !still.is_empty() {
            tracing::warn!(
                rules = still.len(),
                "took over leadership while rules fire: acting on them"
            );
            self.incident(still).await;
        }
    }

    /// A journal no live run holds the lock for belongs to a dead process
    /// (a `rollbackd rollback` killed while the daemon runs): settle it as a
    /// restart would, in a task of its own, every 10 s at most.
    fn settle_orphans(&mut self) {
        if self.settling.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Some(done) = self.settling.take() {
            // Finished: its answer is ready.
            let stuck = done
                .now_or_never()
                .and_then(Result::ok)
                .flatten()
                .unwrap_or(false);
            self.orphans_every = if stuck {
                (self.orphans_every * 2).min(Duration::from_secs(600))
            } else {
                Duration::from_secs(10)
            };
        }
        if self
            .orphans_checked
            .is_some_and(|t| t.elapsed() < self.orphans_every)
        {
            return;
        }
        self.orphans_checked = Some(Instant::now());
        if self.engine.is_stopping() || self.busy().is_some() {
            return;
        }
        if !self
            .engine
            .unfinished()
            .is_ok_and(|journals| !journals.is_empty())
        {
            return;
        }
        let engine = self.engine.clone();
        self.settling = Some(crate::supervise::global().spawn("settling", async move {
            match engine.recover().await {
                // Nothing settled: the lock was held, the run is alive.
                Ok(settled) if settled.is_empty() => false,
                Ok(settled) => {
                    for s in &settled {
                        tracing::warn!(rollback = %s.id(), "{}", s.summary());
                    }
                    engine.unfinished().is_ok_and(|left| !left.is_empty())
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot settle a rollback left unfinished");
                    true
                }
            }
        }));
    }

    async fn record_revision(&mut self) {
        let interval = self
            .engine
            .db
            .as_ref()
            .map_or(Duration::MAX, |db| db.config.revision_check_interval);
        if self.busy().is_some()
            || self
                .revision_checked
                .is_some_and(|t| t.elapsed() < interval)
        {
            return;
        }
        self.revision_checked = Some(Instant::now());
        if let Err(e) = self.engine.record_revision().await {
            tracing::warn!(error = %e, "cannot record the live deployment's schema revision");
        }
    }

    fn close_breaker_when_clear(&mut self, rules: &[crate::rules::RuleStatus]) {
        let all_clear = rules.iter().all(|r| r.state == AlertState::Inactive);
        self.clear_since = match (all_clear, self.clear_since) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, since) => since,
        };
        let now = self.engine.clock.now();
        let clear_long_enough = self
            .clear_since
            .is_some_and(|t| t.elapsed() >= self.engine.config.close_after);
        if self.engine.breaker_state(now) != BreakerState::HalfOpen || !clear_long_enough {
            return;
        }
        // Closing races a CLI rollback that may have just opened it: take the lock.
        let Some(_lock) = self.engine.try_lock() else {
            return;
        };
        match self
            .engine
            .breaker()
            .close(now, "rules stayed clear after the rollback")
        {
            Ok(()) => {
                self.engine.breaker_state(now);
                tracing::info!("deploy breaker CLOSED: rules stayed clear after the rollback");
            }
            Err(e) => tracing::error!(error = %e, "cannot close the deploy breaker"),
        }
    }
}
