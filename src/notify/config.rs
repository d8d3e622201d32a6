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

impl NotifierConfig {
    /// Adds a message per unusable value to `problems`; no I/O. `index` is
    /// the notifier's place in `[[notifiers]]`, which the messages name.
    pub fn validate(&self, index: usize, problems: &mut Vec<String>) {
        let (url, delivery) = match self {
            NotifierConfig::Slack(c) => (c.url.expose(), &c.delivery),
            NotifierConfig::Pagerduty(c) => (c.url.as_str(), &c.delivery),
            NotifierConfig::Webhook(c) => (c.url.expose(), &c.delivery),
        };
        let http = matches!(
            reqwest::Url::parse(url)
                .map(|u| u.scheme().to_string())
                .as_deref(),
            Ok("http" | "https")
        );
        if !http {
            problems.push(format!("notifiers[{index}].url: not an http(s) URL"));
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
        }
    }

    /// Whether readiness drills send it a test message.
    pub fn drill_test(&self) -> bool {
        match self {
            NotifierConfig::Slack(c) => c.drill_test,
            NotifierConfig::Pagerduty(_) => false,
            NotifierConfig::Webhook(c) => c.drill_test,
        }
    }
}
