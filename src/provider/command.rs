//! Operator-supplied commands (`helm rollback`, `kubectl rollout undo`,
//! `fly`, a script…) behind the provider trait.
//!
//! Contract: each command is an argv list, run without a shell. Values reach
//! it only as environment variables (`ROLLBACKD_LIMIT`,
//! `ROLLBACKD_DEPLOYMENT_ID`, `ROLLBACKD_TARGET_GIT_SHA`), never interpolated
//! into a command line. It prints JSON on stdout:
//! - `list`: an array of deployments, newest first:
//!   `[{"id": "…", "status": "SUCCESS", "created_at": "2025-01-15T10:30:00Z",
//!   "git_sha": "…", "git_branch": "…"}]`
//! - `status`: one such object for `ROLLBACKD_DEPLOYMENT_ID`
//! - `rollback`: nothing, or `{"deployment_id": "…"}` naming the deployment it created.
//! - `logs` (optional): `ROLLBACKD_DEPLOYMENT_ID`'s log lines between
//!   `ROLLBACKD_LOGS_FROM` and `ROLLBACKD_LOGS_TO` (RFC 3339), one per line:
//!   plain text, or a JSON object with `message`/`msg` and `level`/`severity`.
//! - `cancel` (optional): stop `ROLLBACKD_DEPLOYMENT_ID`, a deployment still
//!   in progress that is to blame for a breach; prints nothing.
//!
//! A non-zero exit is a refusal, reported with the end of its stderr. Each
//! command runs in its own process group and dies with rollbackd (`child`).

use std::time::{Duration, SystemTime};

use crate::child::ChildError;
use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::config::CommandConfig;
use super::{DeployProvider, Deployment, LogLine, ProviderError};

#[derive(Debug)]
pub(crate) struct CommandProvider {
    config: CommandConfig,
}

impl CommandProvider {
    pub(crate) fn new(config: &CommandConfig) -> Self {
        CommandProvider {
            config: config.clone(),
        }
    }

    /// `argv` ready to run, with `env`.
    fn prepare(
        which: &str,
        argv: &[String],
        env: &[(&str, &str)],
    ) -> Result<tokio::process::Command, ProviderError> {
        let (program, args) = argv.split_first().ok_or_else(|| ProviderError::Api {
            what: format!("the {which} command"),
            message: format!("provider.{which} is empty"),
        })?;
        let mut cmd = crate::child::command(program);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    fn failed(which: &str, argv: &[String], e: ChildError) -> ProviderError {
        let what = format!("the {which} command");
        match e {
            ChildError::Timeout(after) => ProviderError::Timeout { what, after },
            ChildError::Spawn(e) => ProviderError::Unreachable {
                what,
                message: format!("cannot start {:?}: {e}", argv[0]),
            },
            e @ ChildError::TooMuch(_) => ProviderError::Api {
                what,
                message: e.to_string(),
            },
            ChildError::Wait(e) => ProviderError::Unreachable {
                what,
                message: e.to_string(),
            },
        }
    }

    /// A non-zero exit, with the end of what it said on stderr.
    fn refused(which: &str, status: std::process::ExitStatus, stderr: &[u8]) -> ProviderError {
        let stderr = String::from_utf8_lossy(stderr);
        let tail: String = stderr
            .trim()
            .chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        ProviderError::Api {
            what: format!("the {which} command"),
            message: format!("exited with {status}: {tail}"),
        }
    }

    async fn run(
        &self,
        which: &str,
        argv: &[String],
        env: &[(&str, &str)],
    ) -> Result<Vec<u8>, ProviderError> {
        let mut cmd = Self::prepare(which, argv, env)?;
        let output = crate::child::output(&mut cmd, Some(self.config.timeout))
            .await
            .map_err(|e| Self::failed(which, argv, e))?;
        if !output.status.success() {
            return Err(Self::refused(which, output.status, &output.stderr));
        }
        Ok(output.stdout)
    }

    fn decode<T: for<'de> Deserialize<'de>>(which: &str, bytes: &[u8]) -> Result<T, ProviderError> {
        serde_json::from_slice(bytes).map_err(|e| ProviderError::Decode {
            what: format!("the {which} command"),
            message: format!("{e} (see the JSON contract in docs/rolling-back.md, \"Command\")"),
        })
    }
}

impl DeployProvider for CommandProvider {
    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Deployment>, ProviderError>> {
        Box::pin(async move {
            let limit = limit.to_string();
            let out = self
                .run("list", &self.config.list, &[("ROLLBACKD_LIMIT", &limit)])
                .await?;
            let mut list: Vec<Deployment> = Self::decode("list", &out)?;
            list.sort_by_key(|d| std::cmp::Reverse(d.created_at));
            Ok(list)
        })
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Deployment, ProviderError>> {
        Box::pin(async move {
            let out = self
                .run(
                    "status",
                    &self.config.status,
                    &[("ROLLBACKD_DEPLOYMENT_ID", id)],
                )
                .await?;
            if out.iter().all(u8::is_ascii_whitespace) || out.trim_ascii() == b"null" {
                return Err(ProviderError::NotFound(id.to_string()));
            }
            Self::decode("status", &out)
        })
    }

    fn rollback<'a>(
        &'a self,
        target: &'a Deployment,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            let sha = target.git_sha.clone().unwrap_or_default();
            let out = self
                .run(
                    "rollback",
                    &self.config.rollback,
                    &[
                        ("ROLLBACKD_DEPLOYMENT_ID", &target.id),
                        ("ROLLBACKD_TARGET_GIT_SHA", &sha),
                    ],
                )
                .await?;
            if out.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            #[derive(Deserialize)]
            struct Created {
                deployment_id: Option<String>,
            }
            Ok(Self::decode::<Created>("rollback", &out)?.deployment_id)
        })
    }

    fn cancels(&self) -> bool {
        self.config.cancel.is_some()
    }

    fn cancel<'a>(&'a self, d: &'a Deployment) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let Some(argv) = &self.config.cancel else {
                return Err(ProviderError::Api {
                    what: "provider.cancel".into(),
                    message: "no cancel command is configured".into(),
                });
            };
            self.run("cancel", argv, &[("ROLLBACKD_DEPLOYMENT_ID", &d.id)])
                .await
                .map(|_| ())
        })
    }

    fn reads_logs(&self) -> bool {
        self.config.logs.is_some()
    }

    fn list_settle(&self) -> Duration {
        self.config.list_settle
    }

    fn logs<'a>(
        &'a self,
        id: &'a str,
        from: SystemTime,
        to: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<LogLine>, ProviderError>> {
        Box::pin(async move {
            let Some(argv) = &self.config.logs else {
                return Ok(Vec::new());
            };
            let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
            let (from, to) = (time(from), time(to));
            let mut cmd = Self::prepare(
                "logs",
                argv,
                &[
                    ("ROLLBACKD_DEPLOYMENT_ID", id),
                    ("ROLLBACKD_LOGS_FROM", &from),
                    ("ROLLBACKD_LOGS_TO", &to),
                ],
            )?;
            // Read as it comes, under the cap Railway's API has: millions
            // of lines (or one of 50 MB) never sit in memory.
            let done = crate::child::lines(
                &mut cmd,
                Some(self.config.timeout),
                MAX_LOG_LINES,
                MAX_LOG_LINE,
            )
            .await
            .map_err(|e| Self::failed("logs", argv, e))?;
            if let Some(status) = done.status.filter(|s| !s.success()) {
                return Err(Self::refused("logs", status, &done.stderr));
            }
            if done.read.cut || done.read.long > 0 {
                tracing::info!(
                    deployment = %id,
                    lines = done.read.lines.len(),
                    stopped = done.read.cut,
                    long_lines = done.read.long,
                    "the logs command printed more than rollbackd reads: the first {MAX_LOG_LINES} lines, each up to {} KiB, are scanned",
                    MAX_LOG_LINE >> 10
                );
            }
            Ok(done
                .read
                .lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| log_line(l))
                .collect())
        })
    }
}

/// A line the `logs` command printed: a JSON object with a message and a
/// level, or plain text.
fn log_line(text: &str) -> LogLine {
    let plain = || LogLine {
        at: None,
        level: None,
        message: text.to_string(),
    };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(text) else {
        return plain();
    };
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| fields.get(*n).and_then(|v| v.as_str()).map(str::to_string))
    };
    match field(&["message", "msg"]) {
        Some(message) => LogLine {
            at: field(&["timestamp", "time", "ts"])
                .and_then(|t| humantime::parse_rfc3339_weak(&t).ok()),
            level: field(&["level", "severity", "lvl"]),
            message,
        },
        None => plain(),
    }
}

/// The most lines of a deployment's logs read (Railway's own limit), and
/// the most of each line kept.
pub(crate) const MAX_LOG_LINES: usize = 5_000;
pub(crate) const MAX_LOG_LINE: usize = 8 << 10;

/// Default command timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
