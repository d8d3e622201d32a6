//! The `git` command as `[gitops]` runs it: in one directory, with
//! rollbackd's identity, without the machine's or the user's git
//! configuration, the token in its environment, under the step's deadline.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{failed, Gitops, Stop};

pub(super) fn stderr(output: &std::process::Output) -> String {
    crate::secret::shown(String::from_utf8_lossy(&output.stderr).trim(), 400)
}

/// The files a three-way apply left in conflict, or what it said.
pub(super) fn conflicts(output: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr);
    let files: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("U ")).collect();
    match files.is_empty() {
        true => stderr(output),
        false => format!("conflict in {}", files.join(", ")),
    }
}

/// `git` in one directory, with rollbackd's identity and the token in its
/// environment, under the step's deadline.
pub(super) struct Git<'a> {
    pub(super) gitops: &'a Gitops,
    pub(super) dir: PathBuf,
    pub(super) deadline: Instant,
}

impl Git<'_> {
    pub(super) async fn run(&self, args: &[&str]) -> Result<std::process::Output, Stop> {
        let config = &self.gitops.config;
        let mut cmd = crate::child::command("git");
        cmd.current_dir(&self.dir)
            .args(["-c", &format!("user.name={}", config.author_name)])
            .args(["-c", &format!("user.email={}", config.author_email)])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "core.hooksPath=/dev/null",
            ])
            .args(args)
            // Never ask, never read the machine's or the user's git config.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        let repo = &config.repository;
        if repo.starts_with("https://") || repo.starts_with("http://") {
            let basic =
                crate::secret::base64(&format!("x-access-token:{}", self.gitops.token.expose()));
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        crate::child::output(&mut cmd, Some(left.max(Duration::from_millis(1))))
            .await
            .map_err(|e| failed(format!("git {}: {e}", args[0])))
    }

    /// Runs git and gives its stdout; a non-zero exit stops the attempt.
    pub(super) async fn ok(&self, args: &[&str]) -> Result<String, Stop> {
        let output = self.run(args).await?;
        if !output.status.success() {
            return Err(failed(format!("git {}: {}", args[0], stderr(&output))));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}
