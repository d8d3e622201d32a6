//! Blame's judgements as the history, the notifications and the pending
//! confirmations record them: the verdict, its reason and the evidence
//! (`crate::blame` reaches them).

use serde::{Deserialize, Serialize};

/// What the judgement says of the live deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The breach is the deploy's: act under the rule's policy.
    ToBlame,
    /// The breach is not the deploy's: roll nothing back.
    NotToBlame,
    /// Not enough evidence either way: a person decides.
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::ToBlame => "to_blame",
            Verdict::NotToBlame => "not_to_blame",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Why, as a small fixed label (metrics, history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Worse than the baseline by the factor or margin.
    WorseThanBaseline,
    /// The new version is significantly worse than the old one.
    NewVersionWorse,
    /// A rule without an expression breached within the onset window.
    OnsetAfterDeploy,
    /// The condition already held before go-live.
    AlreadyBreaching,
    /// Not worse than the baseline by the factor or margin.
    NotWorseThanBaseline,
    /// The breach began after the onset window.
    LateOnset,
    /// An inhibitor held.
    Inhibited,
    /// Both versions breach alike.
    VersionsEqual,
    /// No usable baseline.
    NoBaseline,
    /// Too few requests (or points) to compare the versions.
    TooFewRequests,
    /// A query failed, or the judgement ran out of its budget.
    QueryFailed,
    /// A newer deployment still in progress is the one to blame.
    DeployInProgress,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::WorseThanBaseline,
        Reason::NewVersionWorse,
        Reason::OnsetAfterDeploy,
        Reason::AlreadyBreaching,
        Reason::NotWorseThanBaseline,
        Reason::LateOnset,
        Reason::Inhibited,
        Reason::VersionsEqual,
        Reason::NoBaseline,
        Reason::TooFewRequests,
        Reason::QueryFailed,
        Reason::DeployInProgress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::WorseThanBaseline => "worse_than_baseline",
            Reason::NewVersionWorse => "new_version_worse",
            Reason::OnsetAfterDeploy => "onset_after_deploy",
            Reason::AlreadyBreaching => "already_breaching",
            Reason::NotWorseThanBaseline => "not_worse_than_baseline",
            Reason::LateOnset => "late_onset",
            Reason::Inhibited => "inhibited",
            Reason::VersionsEqual => "versions_equal",
            Reason::NoBaseline => "no_baseline",
            Reason::TooFewRequests => "too_few_requests",
            Reason::QueryFailed => "query_failed",
            Reason::DeployInProgress => "deploy_in_progress",
        }
    }
}

/// The incident's judgement and everything it was decided on: recorded in
/// the history entry, the pending confirmation, the notification and the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: Reason,
    /// The verdict in one sentence.
    pub summary: String,
    /// The deployment judged, and when it went live.
    pub deployment: String,
    pub go_live: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleEvidence>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inhibitors: Vec<InhibitorEvidence>,
    /// How long the judgement took.
    #[serde(default)]
    pub seconds: f64,
    /// The newer deployment, still in progress, that is to blame instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<String>,
}

impl Judgement {
    /// The newer deployment to blame instead of the live one, if any.
    pub fn deployment_in_progress(&self) -> &str {
        self.in_progress.as_deref().unwrap_or_default()
    }
}

/// One rule's verdict and its figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleEvidence {
    pub group: String,
    pub rule: String,
    pub verdict: Verdict,
    pub reason: Reason,
    pub summary: String,
    /// When the breach began, and how long after go-live (negative: before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onset_after_go_live_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<WindowFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<WindowFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<VersionFigures>,
}

/// A window of evaluations (before or since go-live).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowFigures {
    pub from: String,
    pub to: String,
    /// Evaluations in the window, those with a usable value, and those
    /// that breached the rule's condition.
    pub points: usize,
    pub usable: usize,
    pub breaching: usize,
    /// The median of the usable values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
}

/// The new version against the old one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionFigures {
    pub label: String,
    pub old: String,
    pub new: String,
    /// `two_proportions` (errors out of requests) or `mann_whitney`.
    pub test: String,
    pub old_value: f64,
    pub new_value: f64,
    /// Requests (or points) per version.
    pub old_n: f64,
    pub new_n: f64,
    /// z for two proportions, U for Mann-Whitney.
    pub statistic: f64,
    /// One-sided: that the new version is worse.
    pub p_value: f64,
}

/// One inhibitor and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InhibitorEvidence {
    pub name: String,
    pub holds: bool,
    /// Why it could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl std::fmt::Display for Judgement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match self.verdict {
            Verdict::ToBlame => "to blame",
            Verdict::NotToBlame => "not to blame",
            Verdict::Inconclusive => "not enough evidence",
        };
        write!(
            f,
            "deployment {} (live since {}): {verdict} ({}): {}",
            self.deployment,
            self.go_live,
            self.reason.as_str(),
            self.summary
        )
    }
}
