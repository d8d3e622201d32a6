//! `[verify.startup_logs]`: after a rollback deployment answers `/health`,
//! its logs from its creation to `window` later are read through the
//! provider and scanned for error lines, as the seed checked that the new
//! deployment started without errors. The scan is pure: lines in, the first
//! error out, shown redacted and cut short.

use std::time::{Duration, SystemTime};

use regex::Regex;
use serde::Deserialize;

use crate::duration;
use crate::provider::LogLine;

/// How a rollback deployment's start-up logs are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StartupLogsConfig {
    /// Unset: on when the provider can read logs (Railway; the command
    /// provider with a `logs` command).
    pub enabled: Option<bool>,
    /// How long after the deployment answers `/health` its logs are still
    /// read (unset: `verify.initial_wait`, which it then counts toward).
    #[serde(with = "duration::opt_serde_str")]
    pub window: Option<Duration>,
    /// Regular expressions: a line whose message matches one is an error.
    pub patterns: Vec<String>,
    /// Regular expressions: a line whose message matches one never is.
    pub ignore: Vec<String>,
    /// Levels that make a line an error when it carries one as structured
    /// data (a JSON `level`, Railway's `level` attribute), compared without case.
    pub levels: Vec<String>,
}

/// Upper-case level words as loggers print them, a line that starts with a
/// level word, a structured level, a Python traceback, a Rust or Go panic.
pub(crate) const DEFAULT_PATTERNS: [&str; 5] = [
    r"(^|[\s\[|])(ERROR|FATAL|CRITICAL|PANIC)([\]:|]|\s|$)",
    r"(?i)^\[?(error|fatal|critical|panic)(\]|:)",
    r#"(?i)\b(level|lvl|severity)\W{0,3}(error|fatal|critical|crit)\b"#,
    r"^Traceback \(most recent call last\)",
    r"(panicked at |^panic: )",
];

const DEFAULT_LEVELS: [&str; 8] = [
    "error", "err", "fatal", "critical", "crit", "panic", "alert", "emerg",
];

impl Default for StartupLogsConfig {
    fn default() -> Self {
        StartupLogsConfig {
            enabled: None,
            window: None,
            patterns: DEFAULT_PATTERNS.map(String::from).to_vec(),
            ignore: Vec::new(),
            levels: DEFAULT_LEVELS.map(String::from).to_vec(),
        }
    }
}

/// The compiled scan.
#[derive(Debug, Clone)]
pub struct Scan {
    patterns: Vec<Regex>,
    ignore: Vec<Regex>,
    levels: Vec<String>,
}

/// What the scan found: the first error line and how many there were.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The first error line, redacted and cut short.
    pub line: String,
    pub errors: usize,
}

impl StartupLogsConfig {
    /// Whether the check runs, given whether the provider can read logs.
    pub fn enabled_for(&self, provider_reads_logs: bool) -> bool {
        self.enabled.unwrap_or(provider_reads_logs)
    }

    pub fn window(&self, initial_wait: Duration) -> Duration {
        self.window.unwrap_or(initial_wait)
    }

    /// The scan, or a message per expression that does not compile.
    pub fn compile(&self) -> Result<Scan, Vec<String>> {
        let mut problems = Vec::new();
        let mut compile = |key: &str, list: &[String]| -> Vec<Regex> {
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| match Regex::new(p) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        let first = e.to_string().lines().last().unwrap_or_default().to_string();
                        problems.push(format!(
                            "verify.startup_logs.{key}[{i}]: {p:?} is not a regular expression ({})",
                            first.trim()
                        ));
                        None
                    }
                })
                .collect()
        };
        let patterns = compile("patterns", &self.patterns);
        let ignore = compile("ignore", &self.ignore);
        if problems.is_empty() {
            Ok(Scan {
                patterns,
                ignore,
                levels: self.levels.iter().map(|l| l.to_ascii_lowercase()).collect(),
            })
        } else {
            Err(problems)
        }
    }

    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Err(mut found) = self.compile() {
            problems.append(&mut found);
        }
        if self.window.is_some_and(|w| w > Duration::from_secs(600)) {
            problems.push(
                "verify.startup_logs.window: at most 10m (the application phase waits for it)"
                    .into(),
            );
        }
        if self.patterns.is_empty() && self.levels.is_empty() {
            problems.push(
                "verify.startup_logs: no patterns and no levels would find nothing; set enabled = false instead"
                    .into(),
            );
        }
    }
}

impl Scan {
    /// Whether `line` is an error: its structured level is one of `levels`,
    /// or its message matches a pattern; and no `ignore` expression matches.
    pub fn is_error(&self, line: &LogLine) -> bool {
        let by_level = line.level.as_deref().is_some_and(|level| {
            let level = level.trim().trim_matches('"').to_ascii_lowercase();
            self.levels.contains(&level)
        });
        (by_level || self.patterns.iter().any(|p| p.is_match(&line.message)))
            && !self.ignore.iter().any(|p| p.is_match(&line.message))
    }

    /// The first error line and the number of error lines among those
    /// logged between `from` and `to` (give or take 5 s of clock skew;
    /// lines without a time count); `None` when clean. A provider that
    /// ignores the window cannot bring in last week's errors.
    pub fn first_error(
        &self,
        lines: &[LogLine],
        from: SystemTime,
        to: SystemTime,
    ) -> Option<Found> {
        let skew = Duration::from_secs(5);
        let inside = |l: &&LogLine| l.at.is_none_or(|at| at + skew >= from && at <= to + skew);
        let mut errors = lines.iter().filter(inside).filter(|l| self.is_error(l));
        let first = errors.next()?;
        Some(Found {
            line: crate::secret::shown(&first.message, 200),
            errors: 1 + errors.count(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(message: &str, level: Option<&str>) -> LogLine {
        LogLine {
            at: None,
            level: level.map(String::from),
            message: message.into(),
        }
    }

    fn scan() -> Scan {
        StartupLogsConfig::default().compile().unwrap()
    }

    #[test]
    fn error_level_lines_are_found_and_others_are_not() {
        let s = scan();
        for error in [
            "2026-11-27 10:00:01,123 ERROR app.db: connection refused",
            "ERROR:    Exception in ASGI application",
            "[error] worker 3 exited",
            "error: could not bind 0.0.0.0:8080",
            r#"{"level":"error","msg":"boom"}"#,
            "ts=2026-11-27T10:00:00Z level=fatal msg=\"no config\"",
            "Traceback (most recent call last):",
            "thread 'main' panicked at src/main.rs:3:5:",
            "panic: runtime error: index out of range",
            "FATAL: password authentication failed",
        ] {
            assert!(s.is_error(&line(error, None)), "{error}");
        }
        for fine in [
            "INFO:     Started server process [1]",
            "2026-11-27 10:00:01,123 INFO app: 0 errors in the last hour",
            "GET /health 200",
            "warning: cache is cold",
            "terrors of the deep",
            "LOG_LEVEL=ERROR",
            "Error handler registered",
            "config: {\"on_error\": \"retry\"}",
        ] {
            assert!(!s.is_error(&line(fine, None)), "{fine}");
        }
        assert!(s.is_error(&line("connection lost", Some("\"err\""))));
        assert!(!s.is_error(&line("listening", Some("info"))));
    }

    #[test]
    fn ignored_lines_never_count_and_the_first_error_is_shown_redacted() {
        let config = StartupLogsConfig {
            ignore: vec!["deprecation".into()],
            ..StartupLogsConfig::default()
        };
        let s = config.compile().unwrap();
        let lines = [
            line("ERROR deprecation: old API", None),
            line("listening on :8080", None),
            line(
                "ERROR cannot connect to postgres://app:hunter2@db:5432/app with password=hunter2",
                None,
            ),
            line("ERROR again", None),
        ];
        let now = SystemTime::now();
        let found = s.first_error(&lines, now, now).unwrap();
        assert_eq!(found.errors, 2);
        assert_eq!(
            found.line,
            "ERROR cannot connect to postgres://***@db:5432/app with password=***"
        );
        assert_eq!(s.first_error(&lines[1..2], now, now), None);
        // Lines from before the window do not count; lines without a time do.
        let old = LogLine {
            at: Some(now - Duration::from_secs(3600)),
            ..line("ERROR last week's outage", None)
        };
        assert_eq!(s.first_error(std::slice::from_ref(&old), now, now), None);
        let late = LogLine {
            at: Some(now + Duration::from_secs(3)),
            ..old.clone()
        };
        assert!(
            s.first_error(&[late], now, now).is_some(),
            "within the clock skew"
        );
        let long = "ERROR ".to_string() + &"x".repeat(500);
        assert_eq!(crate::secret::shown(&long, 200).chars().count(), 201);
    }

    #[test]
    fn an_expression_that_does_not_compile_is_named() {
        let mut problems = Vec::new();
        StartupLogsConfig {
            patterns: vec!["ok".into(), "(unclosed".into()],
            window: Some(Duration::from_secs(3600)),
            ..StartupLogsConfig::default()
        }
        .validate(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with(
                "verify.startup_logs.patterns[1]: \"(unclosed\" is not a regular expression"
            ),
            "{}",
            problems[0]
        );
        assert!(problems[1].starts_with("verify.startup_logs.window: at most 10m"));
    }
}
