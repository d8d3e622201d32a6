//! PagerDuty Events API v2: `trigger` when a rollback fails or waits for
//! confirmation, `resolve` when it succeeds (or the pending one is rejected),
//! one dedup key per rollback.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::config::PagerDutyConfig;
use super::{post_json, Notification, Notifier, NotifyError, NotifyEvent};
use crate::secret::Secret;

/// The events PagerDuty acts on.
pub(crate) const DEFAULT_EVENTS: [NotifyEvent; 4] = [
    NotifyEvent::RollbackPending,
    NotifyEvent::RollbackFailed,
    NotifyEvent::RollbackSucceeded,
    NotifyEvent::RollbackRejected,
];

pub(crate) struct PagerDuty {
    routing_key: Secret,
    url: String,
    runbook_url: Option<String>,
}

impl PagerDuty {
    pub(crate) fn new(config: &PagerDutyConfig) -> Self {
        PagerDuty {
            routing_key: config.routing_key.clone(),
            url: config.url.clone(),
            runbook_url: config.runbook_url.clone(),
        }
    }
}

/// One incident per rollback: a rollback approved from a pending
/// confirmation keeps the pending one's key, so its success resolves it.
pub(crate) fn dedup_key(n: &Notification) -> Option<String> {
    n.pending_id
        .as_ref()
        .or(n.rollback_id.as_ref())
        .map(|id| format!("rollbackd/{id}"))
}

/// The event body, or None for events PagerDuty does not act on.
pub(crate) fn payload(n: &Notification, routing_key: &str) -> Option<Value> {
    let (action, severity) = match n.event {
        NotifyEvent::RollbackFailed => ("trigger", "critical"),
        NotifyEvent::RollbackPending => ("trigger", "warning"),
        NotifyEvent::RollbackSucceeded | NotifyEvent::RollbackRejected => ("resolve", "info"),
        _ => return None,
    };
    let dedup_key = dedup_key(n)?;
    let source = format!("rollbackd/{}", n.service.as_deref().unwrap_or("service"));
    let summary: String = format!("{}: {}", n.event.title(), n.summary)
        .chars()
        .take(1024)
        .collect();
    let details = serde_json::to_value(n).unwrap_or(Value::Null);
    Some(json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "severity": severity,
            "source": source,
            "component": "rollbackd",
            "custom_details": details,
        },
    }))
}

impl Notifier for PagerDuty {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            match payload(n, self.routing_key.expose()) {
                None => Ok(()),
                Some(mut body) => {
                    if let Some(url) = &self.runbook_url {
                        body["links"] = json!([{ "href": url, "text": "Runbook" }]);
                    }
                    post_json(client, &self.url, &body, "PagerDuty").await
                }
            }
        })
    }
}
