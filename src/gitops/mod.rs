//! `[gitops]`: after a verified rollback, a pull request on the
//! configuration repository so git says what production now runs. Under
//! GitOps a rollback done beside git does not stick: the next sync (or a
//! re-enabled automated sync) brings the bad revision back. The pull
//! request is how the team makes it stick.
//!
//! Two modes: `revert` takes back the bad deploy's commits (everything
//! between the target's revision and the rolled-back one, as one commit);
//! `image_tag` sets one value in one file back to the target's. The work is
//! done with the `git` command in a fresh clone under the state directory,
//! pushed to a branch named after the rollback, and opened through GitHub's
//! REST API. A revert that does not apply cleanly opens nothing and says
//! why. Asked again for the same rollback (a restart finishing its run), it
//! finds the branch and the pull request it opened before: one pull request
//! per rollback.
//!
//! The token reaches git as an `http.extraHeader` through git's
//! environment (`GIT_CONFIG_*`), never on a command line or in a URL, and
//! GitHub as a bearer token; neither is logged.

mod body;
pub(crate) mod config;
mod edit;
mod git;
mod github;

use std::path::{Path, PathBuf};
use std::time::Instant;

use self::config::{GitopsConfig, Mode};
use self::git::{conflicts, stderr, Git};
use self::github::Github;
use crate::history::Event;
use crate::provider::Deployment;
use crate::secret::Secret;

pub use crate::record::revert::{RevertRecord, RevertResult};

/// The rollback the pull request is about.
pub struct Incident<'a> {
    pub rollback_id: &'a str,
    /// The deployment rolled back from (the bad one).
    pub from: &'a Deployment,
    /// The deployment rolled back to.
    pub target: &'a Deployment,
    /// The history entry as it stands (rules, blame, phases, detection).
    pub event: &'a Event,
}

/// Why `[gitops]` cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum GitopsError {
    #[error(transparent)]
    Token(#[from] config::TokenError),
    #[error("gitops: {0}")]
    Github(github::GithubError),
    #[error("gitops.github_repo: cannot tell the GitHub repository; name it as OWNER/NAME")]
    NoRepo,
    /// `git ls-remote` failed: the repository or its credentials.
    #[error("gitops.repository: {0}")]
    Git(String),
    #[error("gitops.base: {repository} has no branch {base:?}")]
    NoBase { repository: String, base: String },
}

impl From<github::GithubError> for GitopsError {
    fn from(e: github::GithubError) -> Self {
        GitopsError::Github(e)
    }
}

/// A step that ends the attempt without a pull request.
struct Stop(RevertResult, String);

fn failed(detail: impl Into<String>) -> Stop {
    Stop(RevertResult::Failed, detail.into())
}

/// What the change in git is, for the commit and the pull request.
struct Change {
    title: String,
    what: String,
}

pub struct Gitops {
    config: GitopsConfig,
    token: Secret,
    github: Github,
    /// Clones live here, one per rollback, removed when done.
    work: PathBuf,
}

impl Gitops {
    pub fn new(config: &GitopsConfig, state_dir: &Path) -> Result<Gitops, GitopsError> {
        let token = config.token()?;
        let repo = config.github_repo().ok_or(GitopsError::NoRepo)?;
        Ok(Gitops {
            github: Github::new(config, repo, &token)?,
            config: config.clone(),
            token,
            // Absolute: git runs in more than one directory.
            work: std::path::absolute(state_dir.join("gitops"))
                .unwrap_or_else(|_| state_dir.join("gitops")),
        })
    }

    /// Whether git reaches the repository's base branch and the token may
    /// open pull requests on it (for `rollbackd check`).
    pub async fn check(&self) -> Result<String, GitopsError> {
        let git = Git {
            gitops: self,
            dir: std::env::temp_dir(),
            deadline: Instant::now() + self.config.timeout,
        };
        let heads = git
            .ok(&[
                "ls-remote",
                "--heads",
                "--",
                &self.config.repository,
                &self.config.base,
            ])
            .await
            .map_err(|Stop(_, why)| GitopsError::Git(why))?;
        if heads.trim().is_empty() {
            return Err(GitopsError::NoBase {
                repository: self.repository(),
                base: self.config.base.clone(),
            });
        }
        self.github.check().await?;
        Ok(format!(
            "{} branch {} reachable; the token may push and open pull requests",
            self.repository(),
            self.config.base
        ))
    }

    /// Opens (or finds) the pull request for `incident`, within
    /// `gitops.timeout`. Never fails: what went wrong is the record's.
    pub async fn propose(&self, incident: &Incident<'_>) -> RevertRecord {
        let branch = format!("{}{}", self.config.branch_prefix, incident.rollback_id);
        let dir = self.work.join(incident.rollback_id);
        let started = Instant::now();
        let attempt = tokio::time::timeout(
            self.config.timeout,
            self.attempt(incident, &branch, &dir, started + self.config.timeout),
        )
        .await
        .unwrap_or_else(|_| {
            Err(failed(format!(
                "not done within gitops.timeout ({})",
                crate::duration::format(self.config.timeout)
            )))
        });
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot remove the gitops clone");
            }
        }
        let record = match attempt {
            Ok((pr, what)) => RevertRecord {
                result: RevertResult::Opened,
                url: Some(pr.html_url),
                branch: Some(branch),
                detail: what
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(':')
                    .into(),
            },
            Err(Stop(result, detail)) => RevertRecord {
                result,
                url: None,
                branch: None,
                detail: crate::secret::shown(&detail, 600),
            },
        };
        crate::telemetry::events::gitops_pull_request(incident.rollback_id, &record);
        record
    }

    async fn attempt(
        &self,
        incident: &Incident<'_>,
        branch: &str,
        dir: &Path,
        deadline: Instant,
    ) -> Result<(github::PullRequest, String), Stop> {
        let base = &self.config.base;
        let _ = tokio::fs::remove_dir_all(dir).await;
        tokio::fs::create_dir_all(&self.work)
            .await
            .map_err(|e| failed(format!("cannot create {}: {e}", self.work.display())))?;
        let outside = Git {
            gitops: self,
            dir: self.work.clone(),
            deadline,
        };
        let path = dir.to_string_lossy().into_owned();
        outside
            .ok(&[
                "clone",
                "--quiet",
                "--no-tags",
                "--single-branch",
                "--branch",
                base,
                "--",
                &self.config.repository,
                &path,
            ])
            .await?;
        let git = Git {
            gitops: self,
            dir: dir.to_path_buf(),
            deadline,
        };
        let change = match self.config.mode {
            Mode::Revert => self.revert(&git, incident).await?,
            Mode::ImageTag => self.image_tag(&git, incident).await?,
        };
        let pushed = git
            .ok(&[
                "ls-remote",
                "--heads",
                "origin",
                &format!("refs/heads/{branch}"),
            ])
            .await?;
        if pushed.trim().is_empty() {
            git.ok(&["checkout", "--quiet", "-b", branch]).await?;
            let message = format!(
                "{}\n\n{}\n\nRolled back by rollbackd: rollback {}.",
                change.title, change.what, incident.rollback_id
            );
            git.ok(&["commit", "--quiet", "--no-verify", "-m", &message])
                .await?;
            git.ok(&[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ])
            .await?;
        }
        let body = body::body(&self.config, incident, &change);
        let pr = self
            .github
            .open(branch, base, &change.title, &body, self.config.draft)
            .await
            .map_err(|e| {
                failed(format!(
                    "branch {branch} is pushed but the pull request could not be opened: {e}"
                ))
            })?;
        Ok((pr, change.what))
    }

    /// `mode = "revert"`: the target's tree against the rolled-back one,
    /// applied onto the base branch with a three-way merge.
    async fn revert(&self, git: &Git<'_>, incident: &Incident<'_>) -> Result<Change, Stop> {
        let (from, target) = revisions(incident)?;
        for (sha, d) in [(from, incident.from), (target, incident.target)] {
            if !git
                .run(&["cat-file", "-e", &format!("{sha}^{{commit}}")])
                .await?
                .status
                .success()
            {
                return Err(failed(format!(
                    "revision {sha} (deployment {}) is not in the history of {} branch {}; a revert needs the deployments' revisions to be commits of the configuration repository",
                    d.id,
                    self.repository(),
                    self.config.base
                )));
            }
        }
        let commits = git
            .ok(&["log", "--format=%h %s", &format!("{target}..{from}")])
            .await?;
        let patch = git
            .run(&["diff", "--binary", "--full-index", from, target])
            .await?;
        if !patch.status.success() {
            return Err(failed(format!("git diff: {}", stderr(&patch))));
        }
        let (f7, t7) = (short(from), short(target));
        if patch.stdout.is_empty() {
            return Err(Stop(
                RevertResult::Unchanged,
                format!("revisions {t7} and {f7} hold the same files; there is nothing to revert"),
            ));
        }
        let file = git.dir.join(".git").join("rollbackd-revert.patch");
        std::fs::write(&file, &patch.stdout)
            .map_err(|e| failed(format!("cannot write {}: {e}", file.display())))?;
        let applied = git
            .run(&["apply", "--3way", "--index", &file.to_string_lossy()])
            .await?;
        if !applied.status.success() {
            return Err(Stop(
                RevertResult::Conflict,
                format!(
                    "the revert of {t7}..{f7} does not apply cleanly onto {}: {}",
                    self.config.base,
                    conflicts(&applied)
                ),
            ));
        }
        if git
            .run(&["diff", "--cached", "--quiet"])
            .await?
            .status
            .success()
        {
            return Err(Stop(
                RevertResult::Unchanged,
                format!("{} already has the revert of {t7}..{f7}", self.config.base),
            ));
        }
        let count = commits.lines().count();
        Ok(Change {
            title: format!("Revert {f7}: rolled back to {t7} by rollbackd"),
            what: format!(
                "reverts {count} commit(s) {t7}..{f7}:\n{}",
                commits
                    .lines()
                    .map(|l| format!("- {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        })
    }

    /// `mode = "image_tag"`: one value of one file set back to the target's.
    async fn image_tag(&self, git: &Git<'_>, incident: &Incident<'_>) -> Result<Change, Stop> {
        let tag = self
            .config
            .image_tag
            .as_ref()
            .ok_or_else(|| failed("mode = \"image_tag\" without [gitops.image_tag]"))?;
        let (file, key) = (tag.file.as_str(), tag.key.as_str());
        let path = git.dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            failed(format!(
                "gitops.image_tag.file {file} in branch {}: {e}",
                self.config.base
            ))
        })?;
        let target = incident.target;
        let value = match &tag.value {
            Some(template) => expand(template, target)?,
            None => {
                let sha = target.git_sha.as_deref().ok_or_else(|| {
                    Stop(
                        RevertResult::Skipped,
                        format!(
                            "deployment {} carries no git revision to read {file} at; set gitops.image_tag.value",
                            target.id
                        ),
                    )
                })?;
                if !revision_ok(sha) {
                    return Err(failed(format!(
                        "deployment {} names the revision {sha:?}, which is not a git revision",
                        target.id
                    )));
                }
                let then = git.ok(&["show", &format!("{sha}:{file}")]).await?;
                edit::read(&then, &format!("{file} at {}", short(sha)), key)
                    .map_err(|e| failed(e.to_string()))?
            }
        };
        let (changed, old) =
            edit::set(&text, file, key, &value).map_err(|e| failed(e.to_string()))?;
        if old == value {
            return Err(Stop(
                RevertResult::Unchanged,
                format!("{file} already sets {key}: {value}"),
            ));
        }
        std::fs::write(&path, changed)
            .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
        git.ok(&["add", "--", file]).await?;
        Ok(Change {
            title: format!("Set {key} back to {value}: rolled back by rollbackd"),
            what: format!(
                "sets {key} in {file} from {old} back to {value}, the value of deployment {}",
                target.id
            ),
        })
    }

    fn repository(&self) -> String {
        crate::secret::redact_url(&self.config.repository)
    }
}

/// The rolled-back and the target revision.
fn revisions<'a>(incident: &'a Incident<'_>) -> Result<(&'a str, &'a str), Stop> {
    let sha = |d: &'a Deployment| match d.git_sha.as_deref() {
        None => Err(Stop(
            RevertResult::Skipped,
            format!(
                "deployment {} carries no git revision; there is nothing to revert",
                d.id
            ),
        )),
        Some(sha) if !revision_ok(sha) => Err(failed(format!(
            "deployment {} names the revision {sha:?}, which is not a git revision",
            d.id
        ))),
        Some(sha) => Ok(sha),
    };
    Ok((sha(incident.from)?, sha(incident.target)?))
}

fn expand(template: &str, target: &Deployment) -> Result<String, Stop> {
    let needs_sha = template.contains("{git_sha");
    let sha = match (&target.git_sha, needs_sha) {
        (Some(sha), _) => sha.as_str(),
        (None, false) => "",
        (None, true) => {
            return Err(Stop(
                RevertResult::Skipped,
                format!(
                    "deployment {} carries no git revision for gitops.image_tag.value",
                    target.id
                ),
            ))
        }
    };
    Ok(template
        .replace("{git_sha_short}", short(sha))
        .replace("{git_sha}", sha)
        .replace("{deployment_id}", &target.id))
}

/// A revision's first 7 characters.
fn short(sha: &str) -> &str {
    sha.char_indices().nth(7).map_or(sha, |(i, _)| &sha[..i])
}

/// A revision git may be given as an argument: a name, never an option.
fn revision_ok(sha: &str) -> bool {
    !sha.is_empty()
        && !sha.starts_with('-')
        && sha
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(id: &str, sha: Option<&str>) -> Deployment {
        Deployment {
            id: id.into(),
            status: "SUCCESS".into(),
            created_at: std::time::SystemTime::UNIX_EPOCH,
            git_sha: sha.map(str::to_string),
            git_branch: None,
            can_rollback: None,
        }
    }

    #[test]
    fn a_value_template_takes_the_targets_revision_and_id() {
        let d = deployment("d2", Some("0123456789abcdef"));
        let Ok(v) = expand("sha-{git_sha_short}-{deployment_id}/{git_sha}", &d) else {
            panic!("expands")
        };
        assert_eq!(v, "sha-0123456-d2/0123456789abcdef");
        let none = deployment("d2", None);
        assert!(matches!(
            expand("{git_sha}", &none),
            Err(Stop(RevertResult::Skipped, _))
        ));
        assert!(matches!(expand("v-{deployment_id}", &none), Ok(v) if v == "v-d2"));
    }

    #[test]
    fn the_record_says_what_to_do() {
        let record = RevertRecord {
            result: RevertResult::Conflict,
            url: None,
            branch: None,
            detail: "the revert of a..b does not apply cleanly onto main: conflict in app.yaml"
                .into(),
        };
        assert_eq!(
            record.to_string(),
            "git: NO pull request: the revert of a..b does not apply cleanly onto main: conflict in app.yaml; revert it in git by hand before the next sync"
        );
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["result"], "conflict");
        assert!(json.get("url").is_none());
    }
}
