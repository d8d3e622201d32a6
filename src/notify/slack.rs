//! Slack incoming webhooks: `{"text": …, "blocks": […]}`.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::config::SlackConfig;
use super::{post_json, Notification, Notifier, NotifyError, NotifyEvent};
use crate::secret::Secret;

pub(crate) struct Slack {
    url: Secret,
}

impl Slack {
    pub(crate) fn new(config: &SlackConfig) -> Self {
        Slack {
            url: config.url.clone(),
        }
    }
}

/// The message: a header, the facts as fields, how to approve when pending,
/// and a context line.
pub(crate) fn payload(n: &Notification) -> Value {
    let mut fields = Vec::new();
    let mut field = |name: &str, value: String| {
        if !value.is_empty() {
            fields.push(json!({ "type": "mrkdwn", "text": format!("*{name}*\n{value}") }));
        }
    };
    for r in &n.rules {
        let value = r
            .value
            .map_or("no value".to_string(), crate::rules::value::short);
        field("Rule", r.rule.clone());
        field("Value", format!("{value} (threshold {})", r.condition));
    }
    if let Some(t) = &n.target_deployment {
        field("Target deployment", t.clone());
    }
    if let Some(f) = &n.from_deployment {
        field("Rolled back from", f.clone());
    }
    if let Some(p) = &n.policy {
        field("Policy", p.clone());
    }
    if let Some(d) = n.duration_seconds {
        field("Duration", format!("{d:.1} s"));
    }
    if let (Some(e), Some(from)) = (n.estimated_seconds, &n.estimated_from) {
        field("Estimated duration", format!("about {e:.0} s ({from})"));
    }
    if let Some(o) = &n.outcome {
        field("Outcome", o.clone());
    }
    if let Some(b) = &n.blame {
        field("Blame", b.to_string());
    }
    fields.truncate(10);
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": n.event.title() } }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": n.summary } }),
    ];
    if !fields.is_empty() {
        blocks.push(json!({ "type": "section", "fields": fields }));
    }
    if let Some(hint) = &n.approve_hint {
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": hint } }));
    }
    let mut context = vec!["rollbackd".to_string()];
    if let Some(s) = &n.service {
        context.push(format!("service {s}"));
    }
    if let Some(e) = &n.environment {
        context.push(e.clone());
    }
    if let Some(id) = n.rollback_id.as_ref().or(n.pending_id.as_ref()) {
        context.push(id.clone());
    }
    blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": context.join(" · ") }] }));
    let prefix = match n.event {
        NotifyEvent::RollbackFailed => ":rotating_light: ",
        NotifyEvent::RollbackSucceeded => ":white_check_mark: ",
        NotifyEvent::RollbackPending => ":hourglass: ",
        NotifyEvent::DrillFailed => ":warning: ",
        _ => "",
    };
    json!({ "text": format!("{prefix}{}: {}", n.event.title(), n.summary), "blocks": blocks })
}

impl Notifier for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move { post_json(client, self.url.expose(), &payload(n), "Slack").await })
    }
}
