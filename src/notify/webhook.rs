//! A generic JSON webhook: the notification itself, as JSON.

use futures_util::future::BoxFuture;

use super::config::WebhookConfig;
use super::{post_json, Notification, Notifier, NotifyError};
use crate::secret::Secret;

pub(crate) struct Webhook {
    url: Secret,
}

impl Webhook {
    pub(crate) fn new(config: &WebhookConfig) -> Self {
        Webhook {
            url: config.url.clone(),
        }
    }
}

impl Notifier for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let body =
                serde_json::to_value(n).map_err(|e| NotifyError::Permanent(e.to_string()))?;
            post_json(client, self.url.expose(), &body, "the webhook").await
        })
    }
}
