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

mod file;

use std::path::{Path, PathBuf};

pub use file::{write_atomic, StateLock};

/// The state directory's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn history(&self) -> PathBuf {
        self.root.join("history.json")
    }

    pub fn breaker(&self) -> PathBuf {
        self.root.join("breaker.json")
    }

    pub fn revisions(&self) -> PathBuf {
        self.root.join("revisions.json")
    }

    pub fn rollback_lock(&self) -> PathBuf {
        self.root.join("rollback.lock")
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
