//! The state directory (`engine.state_dir`): the one place that knows what
//! rollbackd keeps there and under which names, and how a file there is
//! written (whole, atomically) and locked. Everything else asks for a path
//! here; nothing else spells a file name.
//!
//! ```text
//! state/
//!   history.json    the audit trail (history::HistoryStore)
//!   breaker.json    the deploy breaker (engine::breaker)
//!   revisions.json  each deployment's schema revision (db::revisions)
//!   rollback.lock   held while a rollback runs, by the daemon or the CLI
//!   runs/           one journal per rollback in progress (engine::journal)
//!   backups/        emergency backups, unless database.backup_dir is set
//! ```

pub mod config;
mod file;
pub mod postgres;
mod store;

use std::path::{Path, PathBuf};

pub use file::{write_atomic, StateLock};
pub use store::{Doc, FileStore, StateStore};

/// A change the state store refused because this process may not make it
/// any more: carried inside the `io::Error` its calls return, and told
/// apart by [`StateError::of`], never by the error's kind.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A follower replica: only the leader changes anything.
    #[error("this replica is not the leader: it changes nothing")]
    NotLeader,
    /// Leadership moved on from the epoch this process's writes carry.
    #[error("fenced: leadership moved on from epoch {epoch}; this replica changes nothing")]
    Fenced { epoch: i64 },
    /// The session that held the rollback lock ended: another run may hold
    /// it now.
    #[error(
        "the rollback lock was lost (its PostgreSQL session ended); this run changes nothing more"
    )]
    LockLost,
}

impl StateError {
    /// The refusal `e` carries, if it is one.
    pub fn of(e: &std::io::Error) -> Option<&StateError> {
        e.get_ref()?.downcast_ref::<StateError>()
    }
}

impl From<StateError> for std::io::Error {
    fn from(e: StateError) -> Self {
        std::io::Error::other(e)
    }
}

/// The state directory's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The documents' names, in any backend.
    pub const HISTORY: &str = "history.json";
    pub const BREAKER: &str = "breaker.json";
    pub const REVISIONS: &str = "revisions.json";
    pub const LOCK: &str = "rollback.lock";

    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn history(&self) -> PathBuf {
        self.root.join(Self::HISTORY)
    }

    pub fn breaker(&self) -> PathBuf {
        self.root.join(Self::BREAKER)
    }

    pub fn revisions(&self) -> PathBuf {
        self.root.join(Self::REVISIONS)
    }

    pub fn rollback_lock(&self) -> PathBuf {
        self.root.join(Self::LOCK)
    }

    /// The journals of rollbacks in progress.
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Where backups go when `database.backup_dir` is not set.
    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }
}
