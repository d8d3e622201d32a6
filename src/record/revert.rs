//! What `[gitops]` did after a verified rollback, as the history and the
//! notifications record it (`crate::gitops` opens the pull request).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What became of the pull request, as the history and the notifications
/// record it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RevertRecord {
    pub result: RevertResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RevertResult {
    /// A pull request is open (this time or before).
    Opened,
    /// Git already says what production runs.
    Unchanged,
    /// The revert does not apply cleanly onto the base branch.
    Conflict,
    /// Something refused or broke: the token, the network, git.
    Failed,
    /// Nothing to work from (the deployments carry no git revision).
    Skipped,
}

impl RevertResult {
    pub const ALL: [RevertResult; 5] = [
        RevertResult::Opened,
        RevertResult::Unchanged,
        RevertResult::Conflict,
        RevertResult::Failed,
        RevertResult::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevertResult::Opened => "opened",
            RevertResult::Unchanged => "unchanged",
            RevertResult::Conflict => "conflict",
            RevertResult::Failed => "failed",
            RevertResult::Skipped => "skipped",
        }
    }
}

impl fmt::Display for RevertRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.result, &self.url) {
            (RevertResult::Opened, Some(url)) => {
                write!(f, "git: pull request {url} ({})", self.detail)
            }
            (RevertResult::Unchanged, _) => {
                write!(f, "git: no pull request needed: {}", self.detail)
            }
            (RevertResult::Conflict, _) => write!(
                f,
                "git: NO pull request: {}; revert it in git by hand before the next sync",
                self.detail
            ),
            _ => write!(f, "git: NO pull request: {}", self.detail),
        }
    }
}
