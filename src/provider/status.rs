//! A deployment's status, in one vocabulary for every provider. Each
//! provider maps its platform's words here once (Railway's
//! `DeploymentStatus` enum, Argo CD's sync history, a command's JSON);
//! a word rollbackd does not know is kept as it was said, and is neither
//! success nor failure.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the platform says of one deployment. Serialized as the platform's
/// upper-case word, as the journal and `deployments list --json` always had it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum DeploymentStatus {
    /// Live and serving.
    Success,
    /// On its way to SUCCESS or failure (Railway's BUILDING, DEPLOYING,
    /// INITIALIZING, QUEUED, WAITING; the railway CLI's
    /// `src/commands/deployment.rs` shows the same set as in progress).
    Building,
    Deploying,
    Initializing,
    Queued,
    Waiting,
    /// Will not become SUCCESS any more.
    Failed,
    Crashed,
    Skipped,
    Removing,
    /// Replaced by a later deployment (Railway removes the one a new deploy
    /// replaces, so a REMOVED deployment usually ran).
    Removed,
    /// A word rollbackd does not know, upper-cased.
    Other(String),
}

impl DeploymentStatus {
    /// The status a platform's word names, in any case.
    pub fn parse(word: &str) -> DeploymentStatus {
        match word.trim().to_uppercase().as_str() {
            "SUCCESS" => Self::Success,
            "BUILDING" => Self::Building,
            "DEPLOYING" => Self::Deploying,
            "INITIALIZING" => Self::Initializing,
            "QUEUED" => Self::Queued,
            "WAITING" => Self::Waiting,
            "FAILED" => Self::Failed,
            "CRASHED" => Self::Crashed,
            "SKIPPED" => Self::Skipped,
            "REMOVING" => Self::Removing,
            "REMOVED" => Self::Removed,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Success => "SUCCESS",
            Self::Building => "BUILDING",
            Self::Deploying => "DEPLOYING",
            Self::Initializing => "INITIALIZING",
            Self::Queued => "QUEUED",
            Self::Waiting => "WAITING",
            Self::Failed => "FAILED",
            Self::Crashed => "CRASHED",
            Self::Skipped => "SKIPPED",
            Self::Removing => "REMOVING",
            Self::Removed => "REMOVED",
            Self::Other(word) => word,
        }
    }

    pub fn is_success(&self) -> bool {
        *self == Self::Success
    }

    /// Being built or rolled out: it does not serve yet.
    pub fn in_progress(&self) -> bool {
        matches!(
            self,
            Self::Building | Self::Deploying | Self::Initializing | Self::Queued | Self::Waiting
        )
    }

    /// Will not change into SUCCESS any more.
    pub fn has_failed(&self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Crashed | Self::Removed | Self::Skipped | Self::Removing
        )
    }

    /// Serves now, or served until a later deployment replaced it: what a
    /// rollback may go back to, and what was live at a past instant.
    pub fn served(&self) -> bool {
        matches!(self, Self::Success | Self::Removed)
    }
}

impl From<String> for DeploymentStatus {
    fn from(word: String) -> Self {
        DeploymentStatus::parse(&word)
    }
}

impl From<&str> for DeploymentStatus {
    fn from(word: &str) -> Self {
        DeploymentStatus::parse(word)
    }
}

impl From<DeploymentStatus> for String {
    fn from(status: DeploymentStatus) -> Self {
        status.as_str().to_string()
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::DeploymentStatus;

    #[test]
    fn a_status_fills_its_column_in_a_table() {
        // `rollbackd deployments` lines its columns up with `{:<12}`.
        assert_eq!(
            format!("{:<12}|", DeploymentStatus::Success),
            "SUCCESS     |"
        );
        assert_eq!(
            format!("{:<12}|", DeploymentStatus::Other("SLEEPING".into())),
            "SLEEPING    |"
        );
    }

    #[test]
    fn every_word_maps_once_and_unknown_words_are_kept() {
        for word in [
            "SUCCESS",
            "BUILDING",
            "DEPLOYING",
            "INITIALIZING",
            "QUEUED",
            "WAITING",
            "FAILED",
            "CRASHED",
            "SKIPPED",
            "REMOVING",
            "REMOVED",
        ] {
            let status = DeploymentStatus::parse(&word.to_lowercase());
            assert_eq!(status.as_str(), word);
            assert!(!matches!(status, DeploymentStatus::Other(_)), "{word}");
        }
        let sleeping = DeploymentStatus::parse("sleeping");
        assert_eq!(sleeping, DeploymentStatus::Other("SLEEPING".into()));
        assert!(!sleeping.is_success() && !sleeping.has_failed() && !sleeping.in_progress());
        assert_eq!(
            serde_json::to_string(&DeploymentStatus::Removed).unwrap(),
            "\"REMOVED\""
        );
        assert_eq!(
            serde_json::from_str::<DeploymentStatus>("\"needs_approval\"").unwrap(),
            DeploymentStatus::Other("NEEDS_APPROVAL".into())
        );
    }

    #[test]
    fn success_and_removed_served_and_nothing_is_both_failed_and_in_progress() {
        let all = [
            "SUCCESS",
            "BUILDING",
            "DEPLOYING",
            "INITIALIZING",
            "QUEUED",
            "WAITING",
            "FAILED",
            "CRASHED",
            "SKIPPED",
            "REMOVING",
            "REMOVED",
            "SLEEPING",
        ]
        .map(DeploymentStatus::parse);
        for s in &all {
            assert!(!(s.has_failed() && s.in_progress()), "{s}");
            assert_eq!(
                s.served(),
                matches!(s.as_str(), "SUCCESS" | "REMOVED"),
                "{s}"
            );
        }
    }
}
