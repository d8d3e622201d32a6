//! `[[notifiers]]`: where rollbackd tells people, which events go where, and
//! how hard a delivery is retried. Data and its checks only; nothing here
//! sends anything.

use std::time::Duration;

use serde::Deserialize;

use super::NotifyEvent;
use crate::duration;
use crate::secret::Secret;

/// One notification destination, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NotifierConfig {
    Slack(SlackConfig),
    Pagerduty(PagerDutyConfig),
    Webhook(WebhookConfig),
    Sentry(SentryConfig),
    Email(EmailConfig),
}

/// Retries: `attempts` in all, doubling `backoff` between them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    pub attempts: u32,
    #[serde(with = "duration::serde_str")]
    pub backoff: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            attempts: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook URL (a secret: it is never logged).
    pub url: Secret,
    /// Which events (default: all).
    pub events: Option<Vec<NotifyEvent>>,
    #[serde(default)]
    pub delivery: Delivery,
    /// Readiness drills send it a test message (default off).
    #[serde(default)]
    pub drill_test: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    pub routing_key: Secret,
    #[serde(default = "pagerduty_url")]
    pub url: String,
    /// Default: rollback_pending, rollback_failed, rollback_succeeded, rollback_rejected.
    pub events: Option<Vec<NotifyEvent>>,
    #[serde(default)]
    pub delivery: Delivery,
    /// Refused: a test event would page the on-call.
    #[serde(default)]
    pub drill_test: bool,
    /// A runbook linked from every event (`links` in the Events API v2).
    #[serde(default)]
    pub runbook_url: Option<String>,
}

fn pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Secret,
    pub events: Option<Vec<NotifyEvent>>,
    #[serde(default)]
    pub delivery: Delivery,
    /// Readiness drills send it a test message (default off).
    #[serde(default)]
    pub drill_test: bool,
}

/// A Sentry project, by its DSN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentryConfig {
    /// `https://<public key>@<host>/<project id>` (a secret: never logged).
    pub dsn: Secret,
    /// Sentry's `environment` (default `service.environment`).
    pub environment: Option<String>,
    /// Default: rollback_succeeded (level warning), rollback_failed (error).
    pub events: Option<Vec<NotifyEvent>>,
    #[serde(default)]
    pub delivery: Delivery,
    /// Readiness drills send it a test event (default off).
    #[serde(default)]
    pub drill_test: bool,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must be offered (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption (port 25): only for a relay on the same host.
    None,
}

/// Email through an SMTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    /// Default by `tls`: 587, 465, 25.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// AUTH, with `password`.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `rollbackd <rollbackd@example.com>`.
    pub from: String,
    pub to: Vec<String>,
    /// A PEM certificate to trust besides the system's (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// How long one delivery (the whole SMTP conversation) may take.
    #[serde(with = "duration::serde_str", default = "smtp_timeout")]
    pub timeout: Duration,
    /// Default: rollback_pending, rollback_succeeded, rollback_failed,
    /// rollback_blocked, drill_failed.
    pub events: Option<Vec<NotifyEvent>>,
    #[serde(default)]
    pub delivery: Delivery,
    /// Readiness drills send it a test message (default off).
    #[serde(default)]
    pub drill_test: bool,
}

fn smtp_timeout() -> Duration {
    Duration::from_secs(10)
}

impl EmailConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

impl NotifierConfig {
    /// Adds a message per unusable value to `problems`; no I/O. `index` is
    /// the notifier's place in `[[notifiers]]`, which the messages name.
    pub fn validate(&self, index: usize, problems: &mut Vec<String>) {
        let (url, delivery) = match self {
            NotifierConfig::Slack(c) => (Some(c.url.expose()), &c.delivery),
            NotifierConfig::Pagerduty(c) => (Some(c.url.as_str()), &c.delivery),
            NotifierConfig::Webhook(c) => (Some(c.url.expose()), &c.delivery),
            NotifierConfig::Sentry(c) => (None, &c.delivery),
            NotifierConfig::Email(c) => (None, &c.delivery),
        };
        let http = |url: &str| {
            matches!(
                reqwest::Url::parse(url)
                    .map(|u| u.scheme().to_string())
                    .as_deref(),
                Ok("http" | "https")
            )
        };
        if url.is_some_and(|u| !http(u)) {
            problems.push(format!("notifiers[{index}].url: not an http(s) URL"));
        }
        match self {
            NotifierConfig::Sentry(c) => {
                if let Err(e) = super::sentry::Dsn::parse(c.dsn.expose()) {
                    problems.push(format!("notifiers[{index}].dsn: {e}"));
                }
            }
            NotifierConfig::Email(c) => c.validate(index, problems),
            _ => {}
        }
        if delivery.attempts == 0 || delivery.attempts > 10 {
            problems.push(format!(
                "notifiers[{index}].delivery.attempts: between 1 and 10"
            ));
        }
        if let NotifierConfig::Pagerduty(c) = self {
            let runbook_ok = c.runbook_url.as_deref().is_none_or(|u| {
                reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            });
            if !runbook_ok {
                problems.push(format!(
                    "notifiers[{index}].runbook_url: not an http(s) URL, like \"https://wiki.example.com/runbooks/rollbackd\""
                ));
            }
            if c.drill_test {
                problems.push(format!(
                    "notifiers[{index}].drill_test: a PagerDuty test event would page the on-call; \
                     send a test from PagerDuty itself, or set it on a Slack or webhook notifier"
                ));
            }
            // An event PagerDuty has no incident action for would be
            // dropped on the floor: refused here instead.
            let ignored: Vec<&str> = c
                .events
                .iter()
                .flatten()
                .filter(|e| !super::pagerduty::DEFAULT_EVENTS.contains(e))
                .map(|e| e.as_str())
                .collect();
            if !ignored.is_empty() {
                problems.push(format!(
                    "notifiers[{index}].events: PagerDuty has no incident for {}; it acts on rollback_pending, \
                     rollback_failed, rollback_succeeded and rollback_rejected only: send the others to a Slack, \
                     email or webhook notifier",
                    ignored.join(", ")
                ));
            }
        }
    }

    /// Whether readiness drills send it a test message.
    pub fn drill_test(&self) -> bool {
        match self {
            NotifierConfig::Slack(c) => c.drill_test,
            NotifierConfig::Pagerduty(_) => false,
            NotifierConfig::Webhook(c) => c.drill_test,
            NotifierConfig::Sentry(c) => c.drill_test,
            NotifierConfig::Email(c) => c.drill_test,
        }
    }
}

impl EmailConfig {
    fn validate(&self, index: usize, problems: &mut Vec<String>) {
        let key = |k: &str| format!("notifiers[{index}].{k}");
        if self.host.trim().is_empty() {
            problems.push(format!(
                "{}: name the SMTP server, like \"smtp.example.com\"",
                key("host")
            ));
        } else if rustls::pki_types::ServerName::try_from(self.host.as_str()).is_err() {
            problems.push(format!(
                "{}: {:?} is not a host name or IP address; write the SMTP server's name, like \"smtp.example.com\"",
                key("host"),
                self.host
            ));
        }
        if self.port == Some(0) {
            problems.push(format!(
                "{}: 0 is not a port; leave it out for the default of tls ({}), or give the server's port",
                key("port"),
                match self.tls {
                    SmtpTls::Tls => 465,
                    SmtpTls::None => 25,
                    _ => 587,
                }
            ));
        }
        if let Err(e) = self.from.parse::<lettre::message::Mailbox>() {
            problems.push(format!(
                "{}: {:?} is not an address ({e}); write \"rollbackd <rollbackd@example.com>\"",
                key("from"),
                self.from
            ));
        }
        if self.to.is_empty() {
            problems.push(format!("{}: give at least one recipient", key("to")));
        }
        for to in &self.to {
            if let Err(e) = to.parse::<lettre::message::Mailbox>() {
                problems.push(format!("{}: {to:?} is not an address ({e})", key("to")));
            }
        }
        match (&self.username, &self.password) {
            (Some(_), None) | (None, Some(_)) => problems.push(format!(
                "{}: give both username and password for SMTP AUTH, or neither",
                key("username")
            )),
            (Some(_), Some(_)) if self.tls == SmtpTls::None => problems.push(format!(
                "{}: tls = \"none\" would send the password in clear; use \"starttls\" or \"tls\"",
                key("tls")
            )),
            _ => {}
        }
        if self.timeout.is_zero() {
            problems.push(format!(
                "{}: give the server some time, like \"10s\"",
                key("timeout")
            ));
        }
    }
}
