//! Who leads, as this process sees it: whether it leads and under which
//! fencing epoch, whether its last election round reached the shared state,
//! and who else leads its service when that keeps it from leading. Set by
//! the election (`election.rs`), read by the engine, the API and the store's
//! fenced writes.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use super::{FOLLOWER, UNFENCED};

/// Who leads, as this process sees it.
#[derive(Debug, Clone)]
pub struct Leadership {
    leader: Arc<AtomicBool>,
    epoch: Arc<AtomicI64>,
    /// Whether the last election round reached the shared state: when it
    /// did not, no replica can be sure anyone leads.
    reachable: Arc<AtomicBool>,
    /// Who else leads this service (under another `state.schema`), when
    /// that is why this replica does not.
    conflict: Arc<crate::standing::Standing>,
}

impl Leadership {
    /// A single instance (the file backend): always the leader.
    pub fn alone() -> Leadership {
        crate::telemetry::events::leader(true);
        Leadership {
            leader: Arc::new(AtomicBool::new(true)),
            epoch: Arc::new(AtomicI64::new(UNFENCED)),
            reachable: Arc::new(AtomicBool::new(true)),
            conflict: Arc::default(),
        }
    }

    /// A replica that does not lead (and, with the file state, never will).
    pub fn following() -> Leadership {
        Leadership {
            leader: Arc::new(AtomicBool::new(false)),
            epoch: Arc::new(AtomicI64::new(FOLLOWER)),
            reachable: Arc::new(AtomicBool::new(true)),
            conflict: Arc::default(),
        }
    }

    /// A daemon's, following until the election says otherwise, whose
    /// epoch is the one the store's writes are fenced by.
    pub(super) fn fenced_by(epoch: Arc<AtomicI64>) -> Leadership {
        let leadership = Leadership {
            leader: Arc::new(AtomicBool::new(false)),
            epoch,
            reachable: Arc::new(AtomicBool::new(true)),
            conflict: Arc::default(),
        };
        leadership.follow();
        leadership
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Whether this replica's last election round reached the shared state.
    /// A follower that cannot reach it cannot tell whether anyone leads;
    /// and a leader cut off from it stops acting, so most likely no one
    /// does.
    pub fn state_reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

    pub(super) fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::SeqCst);
        crate::telemetry::events::state_reachable(reachable);
    }

    /// Whether this replica can roll back now: it leads, and its last
    /// election round reached the shared state.
    pub fn can_act(&self) -> bool {
        self.is_leader() && self.state_reachable()
    }

    /// Who leads this service under another `state.schema`, when that is
    /// what keeps this replica from leading.
    pub fn conflict(&self) -> Option<String> {
        self.conflict.get()
    }

    /// Records the conflict; how it changed (worth a log line unless the same).
    pub(super) fn set_conflict(&self, conflict: Option<String>) -> crate::standing::Change {
        crate::telemetry::events::leader_conflict(conflict.is_some());
        self.conflict.set(conflict)
    }

    /// The fencing epoch this process leads under (0 when alone or following).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst).max(0)
    }

    pub(super) fn lead(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
        self.leader.store(true, Ordering::SeqCst);
        crate::telemetry::events::leader(true);
    }

    pub(super) fn follow(&self) {
        // Fence first: from here on no write of this process commits.
        self.epoch.store(FOLLOWER, Ordering::SeqCst);
        self.leader.store(false, Ordering::SeqCst);
        crate::telemetry::events::leader(false);
    }
}
