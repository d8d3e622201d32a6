//! Telling people: Slack, PagerDuty, Sentry, email and a generic JSON
//! webhook behind one small trait. Which events go where is configured per notifier.
//!
//! A notifier never delays or fails a rollback: every delivery runs in its
//! own task, retried with bounded backoff on 429, 5xx and transport errors
//! only, then given up and counted. Webhook URLs and keys never reach the
//! logs (reqwest errors are stripped of their URL).

pub(crate) mod config;
pub(crate) mod email;
pub(crate) mod pagerduty;
pub(crate) mod sentry;
pub(crate) mod slack;
pub(crate) mod webhook;

use crate::telemetry::events::{self, Attempt};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::history::RuleTrigger;
use crate::service::ServiceConfig;
use config::{Delivery, NotifierConfig};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    RollbackStarted,
    /// A `confirm` rollback waits for an operator.
    RollbackPending,
    RollbackSucceeded,
    RollbackFailed,
    /// A guard refused a rollback.
    RollbackBlocked,
    /// A pending rollback was rejected, or expired to reject.
    RollbackRejected,
    /// A restarted rollbackd is finishing a rollback it was killed during.
    RollbackResumed,
    /// A rollback was stopped before anything reached production; the
    /// rules decide again.
    RollbackInterrupted,
    RuleFiring,
    RuleResolved,
    /// A scheduled rollback drill found the rollback path broken.
    DrillFailed,
    /// A readiness drill checks that a notifier still accepts messages.
    DrillTest,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 12] = [
        NotifyEvent::RollbackStarted,
        NotifyEvent::RollbackPending,
        NotifyEvent::RollbackSucceeded,
        NotifyEvent::RollbackFailed,
        NotifyEvent::RollbackBlocked,
        NotifyEvent::RollbackRejected,
        NotifyEvent::RollbackResumed,
        NotifyEvent::RollbackInterrupted,
        NotifyEvent::RuleFiring,
        NotifyEvent::RuleResolved,
        NotifyEvent::DrillFailed,
        NotifyEvent::DrillTest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::RollbackStarted => "rollback_started",
            NotifyEvent::RollbackPending => "rollback_pending",
            NotifyEvent::RollbackSucceeded => "rollback_succeeded",
            NotifyEvent::RollbackFailed => "rollback_failed",
            NotifyEvent::RollbackBlocked => "rollback_blocked",
            NotifyEvent::RollbackRejected => "rollback_rejected",
            NotifyEvent::RollbackResumed => "rollback_resumed",
            NotifyEvent::RollbackInterrupted => "rollback_interrupted",
            NotifyEvent::RuleFiring => "rule_firing",
            NotifyEvent::RuleResolved => "rule_resolved",
            NotifyEvent::DrillFailed => "drill_failed",
            NotifyEvent::DrillTest => "drill_test",
        }
    }

    /// A title for people.
    pub fn title(self) -> &'static str {
        match self {
            NotifyEvent::RollbackStarted => "Rollback started",
            NotifyEvent::RollbackPending => "Rollback waiting for confirmation",
            NotifyEvent::RollbackSucceeded => "Rollback succeeded",
            NotifyEvent::RollbackFailed => "Rollback FAILED",
            NotifyEvent::RollbackBlocked => "Rollback refused by a guard",
            NotifyEvent::RollbackRejected => "Pending rollback rejected",
            NotifyEvent::RollbackResumed => "Rollback resumed after a restart",
            NotifyEvent::RollbackInterrupted => "Rollback interrupted before it changed anything",
            NotifyEvent::RuleFiring => "Rule firing",
            NotifyEvent::RuleResolved => "Rule resolved",
            NotifyEvent::DrillFailed => "Rollback drill FAILED",
            NotifyEvent::DrillTest => "Rollback drill: test message",
        }
    }
}

/// One message, with everything a notifier may show.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub event: NotifyEvent,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_id: Option<String>,
    /// The pending confirmation this is about (or that the rollback came from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleTrigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_deployment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_deployment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// For a started rollback: how long it should take, and from what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// For a pending rollback: how to approve or reject it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approve_hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// For a finished rollback: each phase's result, time and detail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<crate::history::PhaseRecord>,
    /// Whether the live deployment was judged to blame, and the evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blame: Option<crate::blame::Judgement>,
    /// For a finished rollback: the pull request `[gitops]` opened, or why none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert: Option<crate::gitops::RevertRecord>,
    #[serde(with = "crate::rules::state::rfc3339")]
    pub at: SystemTime,
}

impl Notification {
    pub fn new(event: NotifyEvent, summary: impl Into<String>) -> Self {
        Notification {
            event,
            summary: summary.into(),
            rollback_id: None,
            pending_id: None,
            rules: Vec::new(),
            target_deployment: None,
            from_deployment: None,
            policy: None,
            duration_seconds: None,
            estimated_seconds: None,
            estimated_from: None,
            outcome: None,
            approve_hint: None,
            service: None,
            environment: None,
            phases: Vec::new(),
            blame: None,
            revert: None,
            at: SystemTime::now(),
        }
    }

    /// `HighErrorRate 0.05 (> 0.00025)`, for each rule.
    pub fn rules_text(&self) -> String {
        self.rules
            .iter()
            .map(|r| {
                let value = r
                    .value
                    .map_or("no value".to_string(), crate::rules::value::short);
                format!("{} {value} ({})", r.rule, r.condition)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why the notifiers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build the HTTP client for notifications: {0}")]
    HttpClient(reqwest::Error),
    /// A notifier's settings cannot be used (a CA file, a DSN).
    #[error("{0}")]
    Notifier(String),
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth another try: 429, 5xx, or no answer.
    #[error("{0}")]
    Transient(String),
    /// Not worth another try (4xx other than 429, a bad payload).
    #[error("{0}")]
    Permanent(String),
}

/// A destination.
pub trait Notifier: Send + Sync {
    /// A small fixed label: slack, pagerduty, webhook.
    fn kind(&self) -> &'static str;

    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// POSTs `body` as JSON and classifies the answer.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    what: &str,
) -> Result<(), NotifyError> {
    send(client.post(url).json(body), what).await
}

/// Sends `request` and classifies the answer: 429, 5xx and no answer are
/// worth another try, other failures are not.
pub(crate) async fn send(request: reqwest::RequestBuilder, what: &str) -> Result<(), NotifyError> {
    match request.send().await {
        Err(e) => Err(NotifyError::Transient(format!(
            "{what}: {}",
            e.without_url()
        ))),
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let status = r.status();
            let text: String = r
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            let message = format!("{what} answered HTTP {}: {text}", status.as_u16());
            if status.as_u16() == 429 || status.is_server_error() {
                Err(NotifyError::Transient(message))
            } else {
                Err(NotifyError::Permanent(message))
            }
        }
    }
}

struct Sink {
    notifier: Arc<dyn Notifier>,
    events: BTreeSet<NotifyEvent>,
    delivery: Delivery,
    /// Readiness drills send it a test message.
    drill_test: bool,
    /// Its place in `[[notifiers]]`.
    index: usize,
}

/// Every configured notifier.
pub struct Notifiers {
    sinks: Vec<Sink>,
    client: reqwest::Client,
    service: ServiceConfig,
    /// Taken even when poisoned: a list of handles stays usable after a
    /// panic elsewhere, and losing it would drop deliveries at shutdown.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Notifiers {
    pub fn from_config(
        configs: &[NotifierConfig],
        service: &ServiceConfig,
    ) -> Result<Arc<Notifiers>, SetupError> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SetupError::HttpClient)?;
        let sinks = configs
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let (notifier, events, delivery): (Arc<dyn Notifier>, _, _) = match c {
                    NotifierConfig::Sentry(s) => (
                        Arc::new(sentry::Sentry::new(
                            s,
                            sentry::Dsn::parse(s.dsn.expose()).map_err(|e| {
                                SetupError::Notifier(format!("notifiers[{index}].dsn: {e}"))
                            })?,
                        )),
                        s.events
                            .clone()
                            .or_else(|| Some(sentry::DEFAULT_EVENTS.to_vec())),
                        s.delivery.clone(),
                    ),
                    NotifierConfig::Email(e) => (
                        Arc::new(email::Email::new(e, index).map_err(SetupError::Notifier)?),
                        e.events
                            .clone()
                            .or_else(|| Some(email::DEFAULT_EVENTS.to_vec())),
                        e.delivery.clone(),
                    ),
                    NotifierConfig::Slack(s) => (
                        Arc::new(slack::Slack::new(s)),
                        s.events.clone(),
                        s.delivery.clone(),
                    ),
                    NotifierConfig::Pagerduty(p) => (
                        Arc::new(pagerduty::PagerDuty::new(p)),
                        p.events
                            .clone()
                            .or_else(|| Some(pagerduty::DEFAULT_EVENTS.to_vec())),
                        p.delivery.clone(),
                    ),
                    NotifierConfig::Webhook(w) => (
                        Arc::new(webhook::Webhook::new(w)),
                        w.events.clone(),
                        w.delivery.clone(),
                    ),
                };
                Ok(Sink {
                    notifier,
                    events: events
                        .unwrap_or_else(|| NotifyEvent::ALL.to_vec())
                        .into_iter()
                        .collect(),
                    delivery,
                    drill_test: c.drill_test(),
                    index,
                })
            })
            .collect::<Result<Vec<Sink>, SetupError>>()?;
        Ok(Arc::new(Notifiers {
            sinks,
            client,
            service: service.clone(),
            tasks: Mutex::new(Vec::new()),
        }))
    }

    /// Every event to each of `notifiers`, with the default delivery (an
    /// embedding program's own notifiers, or a test's recording one).
    pub fn from_notifiers(
        notifiers: Vec<Arc<dyn Notifier>>,
        service: &ServiceConfig,
    ) -> Arc<Notifiers> {
        crate::install_crypto_provider();
        Arc::new(Notifiers {
            sinks: notifiers
                .into_iter()
                .enumerate()
                .map(|(index, notifier)| Sink {
                    notifier,
                    events: NotifyEvent::ALL.iter().copied().collect(),
                    delivery: Delivery::default(),
                    drill_test: false,
                    index,
                })
                .collect(),
            client: reqwest::Client::new(),
            service: service.clone(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Sends `n` now, once, to every notifier with `drill_test`, and says
    /// how each answered (`notifiers[0] (slack)`, and the error if any).
    pub async fn test(&self, mut n: Notification) -> Vec<(String, Result<(), NotifyError>)> {
        n.service = n.service.or_else(|| self.service.name.clone());
        n.environment = n.environment.or_else(|| self.service.environment.clone());
        let mut answers = Vec::new();
        for sink in self.sinks.iter().filter(|s| s.drill_test) {
            let label = format!("notifiers[{}] ({})", sink.index, sink.notifier.kind());
            let sent = sink.notifier.send(&self.client, &n).await;
            answers.push((label, sent));
        }
        answers
    }

    /// Queues `n` for every notifier that wants it; returns at once.
    pub fn send(&self, mut n: Notification) {
        n.service = n.service.or_else(|| self.service.name.clone());
        n.environment = n.environment.or_else(|| self.service.environment.clone());
        let n = Arc::new(n);
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        for sink in self.sinks.iter().filter(|s| s.events.contains(&n.event)) {
            let notifier = sink.notifier.clone();
            let client = self.client.clone();
            let delivery = sink.delivery.clone();
            let n = n.clone();
            tasks.push(tokio::spawn(async move {
                deliver(notifier, client, delivery, n).await
            }));
        }
    }

    /// Waits (at most `timeout`) for queued deliveries; the CLI calls this
    /// before it exits, `watch` when it stops. Deliveries still going then
    /// (a notifier being retried) are dropped, said in the log and counted
    /// (`result="dropped"`); returns how many.
    pub async fn flush(&self, timeout: Duration) -> usize {
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut dropped = 0;
        for task in tasks {
            // A finished delivery answers at once, even past the deadline.
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            events::notifications_dropped(dropped);
        }
        dropped
    }
}

async fn deliver(
    notifier: Arc<dyn Notifier>,
    client: reqwest::Client,
    delivery: Delivery,
    n: Arc<Notification>,
) {
    let kind = notifier.kind();
    let mut backoff = delivery.backoff;
    for attempt in 1..=delivery.attempts.max(1) {
        match notifier.send(&client, &n).await {
            Ok(()) => {
                events::notification(kind, n.event.as_str(), attempt, Attempt::Sent, None);
                return;
            }
            Err(NotifyError::Transient(why)) if attempt < delivery.attempts => {
                events::notification(
                    kind,
                    n.event.as_str(),
                    attempt,
                    Attempt::Retried,
                    Some(&why),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                events::notification(kind, n.event.as_str(), attempt, Attempt::GivenUp, Some(&e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notifier whose endpoint keeps failing.
    struct Down;

    impl Notifier for Down {
        fn kind(&self) -> &'static str {
            "webhook"
        }

        fn send<'a>(
            &'a self,
            _client: &'a reqwest::Client,
            _n: &'a Notification,
        ) -> BoxFuture<'a, Result<(), NotifyError>> {
            Box::pin(async { Err(NotifyError::Transient("503".into())) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deliveries_still_retried_at_shutdown_are_counted_as_dropped_not_lost_silently() {
        let notifiers = Notifiers {
            sinks: vec![Sink {
                notifier: Arc::new(Down),
                events: NotifyEvent::ALL.iter().copied().collect(),
                delivery: Delivery {
                    attempts: 5,
                    backoff: Duration::from_secs(30),
                },
                drill_test: false,
                index: 0,
            }],
            client: reqwest::Client::new(),
            service: ServiceConfig::default(),
            tasks: Mutex::new(Vec::new()),
        };
        notifiers.send(Notification::new(NotifyEvent::RollbackFailed, "failed"));
        assert_eq!(notifiers.flush(Duration::from_secs(10)).await, 1);
        // Nothing left: a second flush finds nothing to drop.
        assert_eq!(notifiers.flush(Duration::from_secs(10)).await, 0);
    }
}
