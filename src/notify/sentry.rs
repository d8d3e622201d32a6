//! Sentry: one event per rollback result, sent as an envelope to the
//! project's ingestion endpoint named by its DSN
//! (`https://<public key>@<host>/<project id>` → `POST
//! https://<host>/api/<project id>/envelope/`, the key in `X-Sentry-Auth`).
//!
//! A failed rollback is level `error`, a successful one `warning` (the seed's
//! choice: a rollback means something went wrong). The event id is derived
//! from the notification, so a retried delivery is the same event to Sentry.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::config::SentryConfig;
use super::{send, Notification, Notifier, NotifyError, NotifyEvent};

/// The events sent when `events` is not set: the results.
pub(crate) const DEFAULT_EVENTS: [NotifyEvent; 2] =
    [NotifyEvent::RollbackSucceeded, NotifyEvent::RollbackFailed];

/// A DSN taken apart; the key stays out of `Debug` and the logs.
#[derive(Clone)]
pub(crate) struct Dsn {
    public_key: String,
    /// `https://host[:port][/path]/api/<project>/envelope/`.
    envelope_url: String,
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dsn")
            .field("envelope_url", &self.envelope_url)
            .finish_non_exhaustive()
    }
}

impl Dsn {
    /// Errors never quote the DSN: its user part is the project's key.
    pub(super) fn parse(dsn: &str) -> Result<Dsn, String> {
        let url = reqwest::Url::parse(dsn).map_err(|_| {
            "not a Sentry DSN; copy it from Sentry's Settings → Client Keys, like https://<key>@o1.ingest.sentry.io/<project>".to_string()
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("a Sentry DSN starts with https://".into());
        }
        if url.username().is_empty() {
            return Err("the DSN has no public key before the @".into());
        }
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err("the DSN names no host".into());
        }
        let path = url.path().trim_end_matches('/');
        let (prefix, project) = path.rsplit_once('/').unwrap_or(("", path));
        if project.is_empty() || !project.chars().all(|c| c.is_ascii_digit()) {
            return Err("the DSN does not end with a numeric project id".into());
        }
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        Ok(Dsn {
            public_key: url.username().to_string(),
            envelope_url: format!(
                "{}://{host}{port}{prefix}/api/{project}/envelope/",
                url.scheme()
            ),
        })
    }

    /// The `X-Sentry-Auth` header.
    fn auth(&self) -> String {
        format!(
            "Sentry sentry_version=7, sentry_client=rollbackd/{}, sentry_key={}",
            env!("CARGO_PKG_VERSION"),
            self.public_key
        )
    }
}

pub(crate) struct Sentry {
    dsn: Dsn,
    environment: Option<String>,
}

impl Sentry {
    pub(crate) fn new(config: &SentryConfig, dsn: Dsn) -> Self {
        Sentry {
            dsn,
            environment: config.environment.clone(),
        }
    }
}

/// The level Sentry shows.
fn level(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::RollbackFailed | NotifyEvent::DrillFailed => "error",
        NotifyEvent::RuleResolved | NotifyEvent::DrillTest => "info",
        _ => "warning",
    }
}

/// 32 hex digits, the same for the same notification.
fn event_id(n: &Notification) -> String {
    let at =
        n.at.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
    let digest = Sha256::digest(format!(
        "{}|{}|{}|{at}",
        n.event.as_str(),
        n.rollback_id.as_deref().unwrap_or(""),
        n.summary
    ));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The event, as Sentry's event payload.
pub(crate) fn event(n: &Notification, environment: Option<&str>) -> Value {
    let timestamp =
        n.at.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
    let mut tags = serde_json::Map::new();
    tags.insert("event".into(), n.event.as_str().into());
    for (key, value) in [
        ("service", &n.service),
        ("rollback_id", &n.rollback_id),
        ("target_deployment", &n.target_deployment),
        ("policy", &n.policy),
    ] {
        if let Some(v) = value {
            tags.insert(key.into(), v.as_str().into());
        }
    }
    let extra = json!({
        "summary": n.summary,
        "duration_seconds": n.duration_seconds,
        "target_deployment": n.target_deployment,
        "from_deployment": n.from_deployment,
        "rules": n.rules,
        "phases": n.phases,
        "outcome": n.outcome,
        "blame": n.blame,
    });
    let mut event = json!({
        "event_id": event_id(n),
        "timestamp": timestamp,
        "platform": "other",
        "level": level(n.event),
        "logger": "rollbackd",
        "message": { "formatted": format!("{}: {}", n.event.title(), n.summary) },
        "tags": tags,
        "extra": extra,
        // One issue per kind of event and service, not one per rollback.
        "fingerprint": ["rollbackd", n.event.as_str(), n.service.as_deref().unwrap_or("service")],
    });
    if let Some(env) = environment.or(n.environment.as_deref()) {
        event["environment"] = env.into();
    }
    event
}

/// The envelope: its header, the item's header, the event; one JSON
/// document per line.
pub(crate) fn envelope(n: &Notification, environment: Option<&str>) -> String {
    let event = event(n, environment).to_string();
    let header = json!({
        "event_id": event_id(n),
        "sent_at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    });
    let item =
        json!({ "type": "event", "length": event.len(), "content_type": "application/json" });
    format!("{header}\n{item}\n{event}\n")
}

impl Notifier for Sentry {
    fn kind(&self) -> &'static str {
        "sentry"
    }

    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let request = client
                .post(&self.dsn.envelope_url)
                .header("content-type", "application/x-sentry-envelope")
                .header("x-sentry-auth", self.dsn.auth())
                .body(envelope(n, self.environment.as_deref()));
            send(request, "Sentry").await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns_give_the_envelope_endpoint_and_errors_never_quote_the_key() {
        let dsn = Dsn::parse("https://abc123@o42.ingest.sentry.io/4506").unwrap();
        assert_eq!(
            dsn.envelope_url,
            "https://o42.ingest.sentry.io/api/4506/envelope/"
        );
        assert!(dsn.auth().contains("sentry_key=abc123"));
        assert!(dsn
            .auth()
            .starts_with("Sentry sentry_version=7, sentry_client=rollbackd/"));
        let self_hosted = Dsn::parse("http://k@127.0.0.1:9000/sentry/7").unwrap();
        assert_eq!(
            self_hosted.envelope_url,
            "http://127.0.0.1:9000/sentry/api/7/envelope/"
        );
        assert!(!format!("{self_hosted:?}").contains("k@"));
        for (dsn, says) in [
            ("https://o42.ingest.sentry.io/4506", "no public key"),
            (
                "https://secretkey@o42.ingest.sentry.io/",
                "numeric project id",
            ),
            (
                "https://secretkey@o42.ingest.sentry.io/abc",
                "numeric project id",
            ),
            ("ftp://secretkey@host/1", "https://"),
            ("secretkey", "not a Sentry DSN"),
        ] {
            let e = Dsn::parse(dsn).unwrap_err();
            assert!(e.contains(says), "{dsn}: {e}");
            assert!(!e.contains("secretkey"), "{e}");
        }
    }

    #[test]
    fn the_envelope_is_three_lines_with_the_items_length_and_the_level_by_result() {
        // Not ASCII: the item's length is in bytes.
        let mut n = Notification::new(
            NotifyEvent::RollbackFailed,
            "verification failed → /health 503",
        );
        n.rollback_id = Some("rb-1".into());
        n.target_deployment = Some("d2".into());
        n.duration_seconds = Some(12.5);
        n.service = Some("web".into());
        let text = envelope(&n, Some("production"));
        let lines: Vec<&str> = text.trim_end().split('\n').collect();
        assert_eq!(lines.len(), 3, "{text}");
        let header: Value = serde_json::from_str(lines[0]).unwrap();
        let item: Value = serde_json::from_str(lines[1]).unwrap();
        let event: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(item["type"], "event");
        assert_eq!(item["length"], lines[2].len());
        assert!(lines[2].len() > lines[2].chars().count());
        assert_eq!(header["event_id"], event["event_id"]);
        assert_eq!(event["event_id"].as_str().unwrap().len(), 32);
        assert_eq!(event["level"], "error");
        assert_eq!(event["environment"], "production");
        assert_eq!(event["extra"]["duration_seconds"], 12.5);
        assert_eq!(event["tags"]["target_deployment"], "d2");
        // A retry is the same event.
        assert_eq!(event_id(&n), event_id(&n.clone()));
        n.event = NotifyEvent::RollbackSucceeded;
        assert_eq!(super::event(&n, None)["level"], "warning");
    }
}
