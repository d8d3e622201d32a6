//! `[gitops]`: after a verified rollback, a pull request on the
//! configuration repository that makes git say what the cluster now runs.
//! Data and its checks; no I/O but reading the token file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::secret::Secret;

/// The environment variable the token is read from when the configuration
/// names none (the `gh` CLI's and GitHub Actions' name).
pub(crate) const TOKEN_ENV: &str = "GITHUB_TOKEN";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitopsConfig {
    /// Off: the section is kept but nothing is opened.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What git clones and pushes to: `https://github.com/acme/deploy.git`,
    /// `git@github.com:acme/deploy.git`, or a path.
    pub repository: String,
    /// The repository on GitHub, `owner/name`; read from `repository` when
    /// that is a github.com URL.
    #[serde(default)]
    pub github_repo: Option<String>,
    /// GitHub's REST API (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[serde(default = "api")]
    pub api: String,
    /// The branch the pull request goes to.
    #[serde(default = "base")]
    pub base: String,
    /// What the pull request changes.
    #[serde(default)]
    pub mode: Mode,
    /// For `mode = "image_tag"`.
    #[serde(default)]
    pub image_tag: Option<ImageTag>,
    /// The token; without it `token_file`, then `GITHUB_TOKEN`. It needs
    /// contents: write and pull requests: write on the repository.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Branches are `<branch_prefix><rollback id>`.
    #[serde(default = "branch_prefix")]
    pub branch_prefix: String,
    /// The commit's author and committer.
    #[serde(default = "author_name")]
    pub author_name: String,
    #[serde(default = "author_email")]
    pub author_email: String,
    /// Open the pull request as a draft.
    #[serde(default)]
    pub draft: bool,
    /// Where people reach rollbackd's API, for the link to the history entry
    /// (`https://rollbackd.shop.internal`); without it the body names the
    /// `rollbackd history --show` command only.
    #[serde(default)]
    pub link: Option<String>,
    /// The whole step: clone, change, push, open.
    #[serde(with = "duration::serde_str", default = "timeout")]
    pub timeout: Duration,
}

/// What the pull request changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Reverts the bad deploy's commits: the range from the target's
    /// revision to the rolled-back deployment's.
    #[default]
    Revert,
    /// Sets one value in one file (an image tag) back to the target's.
    ImageTag,
}

/// `[gitops.image_tag]`: the line `key: value` in `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTag {
    /// The file, relative to the repository's root.
    pub file: String,
    /// The key whose value is the tag (`newTag`, `tag`); exactly one line of
    /// the file may hold it.
    pub key: String,
    /// The target's value: a template of `{git_sha}`, `{git_sha_short}` (7
    /// characters) and `{deployment_id}`. Without it, the value the file
    /// held at the target's revision in this repository.
    #[serde(default)]
    pub value: Option<String>,
}

fn yes() -> bool {
    true
}

fn api() -> String {
    "https://api.github.com".into()
}

fn base() -> String {
    "main".into()
}

fn branch_prefix() -> String {
    "rollbackd/rollback-".into()
}

fn author_name() -> String {
    "rollbackd".into()
}

fn author_email() -> String {
    "rollbackd@localhost".into()
}

fn timeout() -> Duration {
    Duration::from_secs(40)
}

/// Why the token cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    File(#[from] crate::secret::TokenFileError),
    #[error("no GitHub token: set gitops.token, gitops.token_file or {TOKEN_ENV} (a token with contents: write and pull requests: write on the repository)")]
    Missing,
}

impl GitopsConfig {
    pub fn token(&self) -> Result<Secret, TokenError> {
        crate::secret::token_from(
            self.token.as_ref(),
            self.token_file.as_deref(),
            "gitops.token_file",
            TOKEN_ENV,
        )?
        .ok_or(TokenError::Missing)
    }

    /// `owner/name` on GitHub: `github_repo`, or read from a github.com
    /// `repository`.
    pub fn github_repo(&self) -> Option<String> {
        if let Some(repo) = &self.github_repo {
            return Some(repo.clone());
        }
        let rest = self
            .repository
            .strip_prefix("https://github.com/")
            .or_else(|| self.repository.strip_prefix("git@github.com:"))
            .or_else(|| self.repository.strip_prefix("ssh://git@github.com/"))?;
        let rest = rest.trim_end_matches('/');
        let rest = rest.strip_suffix(".git").unwrap_or(rest);
        owner_name(rest).then(|| rest.to_string())
    }

    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, budget: Duration, problems: &mut Vec<String>) {
        if self.repository.trim().is_empty() {
            problems.push("gitops.repository: empty; name the configuration repository git clones (https://github.com/OWNER/NAME.git)".into());
        }
        match (&self.github_repo, self.github_repo()) {
            (Some(repo), _) if !owner_name(repo) => problems.push(format!(
                "gitops.github_repo: {repo:?} is not OWNER/NAME"
            )),
            (None, None) => problems.push(format!(
                "gitops.github_repo: cannot tell the GitHub repository from gitops.repository {:?}; name it as OWNER/NAME",
                crate::secret::redact_url(&self.repository)
            )),
            _ => {}
        }
        match reqwest::Url::parse(&self.api) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => problems.push(format!(
                "gitops.api: {:?} is not an http(s) URL; GitHub's is \"https://api.github.com\"",
                self.api
            )),
        }
        if let Some(link) = &self.link {
            if !(link.starts_with("http://") || link.starts_with("https://")) {
                problems.push(format!(
                    "gitops.link: {link:?} is not an http(s) URL; write where people reach rollbackd, like \"https://rollbackd.example.com\""
                ));
            }
        }
        if !branch_name_ok(&self.branch_prefix) {
            problems.push(format!(
                "gitops.branch_prefix: {:?} cannot start a git branch name; use letters, digits, '/', '-', '_' and '.'",
                self.branch_prefix
            ));
        }
        for (key, value) in [
            ("gitops.base", &self.base),
            ("gitops.author_name", &self.author_name),
            ("gitops.author_email", &self.author_email),
        ] {
            if value.trim().is_empty() || value.contains(['\n', '<', '>']) {
                problems.push(format!(
                    "{key}: {value:?} cannot be used; give a plain one-line value"
                ));
            }
        }
        if self.token.is_some() && self.token_file.is_some() {
            problems
                .push("gitops.token_file: set gitops.token or gitops.token_file, not both".into());
        }
        match (self.mode, &self.image_tag) {
            (Mode::ImageTag, None) => problems.push(
                "gitops.image_tag: mode = \"image_tag\" needs [gitops.image_tag] with file and key".into(),
            ),
            (Mode::Revert, Some(_)) => problems.push(
                "gitops.image_tag: only read with mode = \"image_tag\"; set the mode or remove the section".into(),
            ),
            (_, Some(tag)) => tag.validate(problems),
            _ => {}
        }
        if self.timeout.is_zero() || self.timeout >= budget {
            problems.push(format!(
                "gitops.timeout: must be greater than 0s and under engine.budgets.post_rollback ({}), which also records the rollback",
                duration::format(budget)
            ));
        }
    }
}

impl ImageTag {
    fn validate(&self, problems: &mut Vec<String>) {
        let file = self.file.trim();
        if file.is_empty() || file.starts_with('/') || file.split('/').any(|p| p == "..") {
            problems.push(format!(
                "gitops.image_tag.file: {:?} must be a path inside the repository, like \"apps/shop/kustomization.yaml\"",
                self.file
            ));
        }
        if self.key.trim().is_empty() || self.key.contains([':', '\n']) {
            problems.push(format!(
                "gitops.image_tag.key: {:?} must be a YAML key, like \"newTag\"",
                self.key
            ));
        }
        if let Some(value) = &self.value {
            let mut rest = value.as_str();
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}') else {
                    break;
                };
                let name = &rest[open + 1..open + close];
                if !["git_sha", "git_sha_short", "deployment_id"].contains(&name) {
                    problems.push(format!(
                        "gitops.image_tag.value: unknown {{{name}}}; use {{git_sha}}, {{git_sha_short}} or {{deployment_id}}"
                    ));
                }
                rest = &rest[open + close..];
            }
        }
    }
}

fn owner_name(text: &str) -> bool {
    let mut parts = text.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn branch_name_ok(prefix: &str) -> bool {
    !prefix.is_empty()
        && !prefix.starts_with(['/', '-', '.'])
        && !prefix.contains("..")
        && !prefix.contains("//")
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a `[gitops]` body through figment, as the configuration does.
    fn config(text: &str) -> GitopsConfig {
        use figment::providers::{Format, Toml};
        figment::Figment::new()
            .merge(Toml::string(text))
            .extract()
            .expect("parses")
    }

    fn problems(c: &GitopsConfig) -> Vec<String> {
        let mut p = Vec::new();
        c.validate(Duration::from_secs(60), &mut p);
        p
    }

    #[test]
    fn the_github_repository_is_read_from_a_github_url() {
        for url in [
            "https://github.com/acme/deploy.git",
            "https://github.com/acme/deploy",
            "git@github.com:acme/deploy.git",
            "ssh://git@github.com/acme/deploy.git",
        ] {
            let c = config(&format!("repository = {url:?}"));
            assert_eq!(c.github_repo().as_deref(), Some("acme/deploy"), "{url}");
            assert!(problems(&c).is_empty(), "{url}: {:?}", problems(&c));
        }
        let c = config("repository = \"/srv/git/deploy.git\"");
        assert_eq!(c.github_repo(), None);
        assert!(problems(&c)[0].starts_with("gitops.github_repo: cannot tell"));
    }

    #[test]
    fn every_bad_value_is_named() {
        let c = config(
            r#"
            repository = "https://github.com/acme/deploy.git"
            github_repo = "acme"
            api = "api.github.com"
            link = "rollbackd.internal"
            branch_prefix = "-x"
            base = ""
            token = "t"
            token_file = "/t"
            mode = "image_tag"
            timeout = "2m"
            "#,
        );
        let p = problems(&c).join("\n");
        for key in [
            "gitops.github_repo:",
            "gitops.api:",
            "gitops.link:",
            "gitops.branch_prefix:",
            "gitops.base:",
            "gitops.token_file:",
            "gitops.image_tag: mode",
            "gitops.timeout:",
        ] {
            assert!(p.contains(key), "{key} missing from:\n{p}");
        }
    }

    #[test]
    fn an_image_tag_names_a_file_inside_the_repository_and_known_placeholders() {
        let c = config(
            r#"
            repository = "https://github.com/acme/deploy.git"
            mode = "image_tag"
            image_tag = { file = "../etc/passwd", key = "new:Tag", value = "v-{sha}" }
            "#,
        );
        let p = problems(&c).join("\n");
        assert!(p.contains("gitops.image_tag.file:"), "{p}");
        assert!(p.contains("gitops.image_tag.key:"), "{p}");
        assert!(p.contains("gitops.image_tag.value: unknown {sha}"), "{p}");
    }

    #[test]
    fn the_token_comes_from_the_file_then_the_environment() {
        let dir =
            std::env::temp_dir().join(format!("rollbackd-gitops-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "ghp_secret\n").unwrap();
        let mut c = config("repository = \"https://github.com/acme/deploy.git\"");
        c.token_file = Some(file.clone());
        assert_eq!(c.token().unwrap().expose(), "ghp_secret");
        std::fs::write(&file, "\n").unwrap();
        let e = c.token().unwrap_err().to_string();
        assert!(
            e.starts_with("gitops.token_file ") && e.ends_with("is empty"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
