//! Email over SMTP (lettre): STARTTLS by default, implicit TLS or plain on
//! request, AUTH when a username is given, one message to all recipients,
//! with a plain-text body meant to be read on a phone at 3 a.m.

use futures_util::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{EmailConfig, SmtpTls};
use super::{Notification, Notifier, NotifyError, NotifyEvent};

/// The events mailed when `events` is not set.
pub(crate) const DEFAULT_EVENTS: [NotifyEvent; 5] = [
    NotifyEvent::RollbackPending,
    NotifyEvent::RollbackSucceeded,
    NotifyEvent::RollbackFailed,
    NotifyEvent::RollbackBlocked,
    NotifyEvent::DrillFailed,
];

pub(crate) struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// The whole conversation's deadline: lettre's own timeout does not
    /// cover a server that stops answering after STARTTLS.
    timeout: std::time::Duration,
}

impl Email {
    /// The transport, built once; `index` names the notifier in errors.
    pub(super) fn new(config: &EmailConfig, index: usize) -> Result<Email, String> {
        let key = |k: &str| format!("notifiers[{index}].{k}");
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("{}: {e}", key("from")))?;
        let to = config
            .to
            .iter()
            .map(|t| t.parse().map_err(|e| format!("{}: {t:?}: {e}", key("to"))))
            .collect::<Result<Vec<Mailbox>, String>>()?;
        crate::install_crypto_provider();
        let mut tls = TlsParameters::builder(config.host.clone());
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("{}: cannot read {}: {e}", key("ca_file"), ca.display()))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                format!(
                    "{}: {} is not a PEM certificate: {e}",
                    key("ca_file"),
                    ca.display()
                )
            })?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls
            .build()
            .map_err(|e| format!("{}: cannot set up TLS: {e}", key("tls")))?;
        let mode = match config.tls {
            SmtpTls::Starttls => Tls::Required(tls),
            SmtpTls::Tls => Tls::Wrapper(tls),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port())
            .tls(mode)
            .timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        Ok(Email {
            transport: builder.build(),
            from,
            to,
            timeout: config.timeout,
        })
    }
}

/// `[rollbackd] Rollback FAILED: web (production)`.
pub(crate) fn subject(n: &Notification) -> String {
    let mut s = format!("[rollbackd] {}", n.event.title());
    if let Some(service) = &n.service {
        s.push_str(&format!(": {service}"));
        if let Some(env) = &n.environment {
            s.push_str(&format!(" ({env})"));
        }
    }
    s
}

/// The message: what happened first, then the facts, one per line.
pub(crate) fn body(n: &Notification) -> String {
    let mut text = format!("{}\n\n{}\n\n", n.event.title(), n.summary);
    let mut line = |label: &str, value: String| {
        text.push_str(&format!("{:<14}{value}\n", format!("{label}:")));
    };
    if let Some(service) = &n.service {
        let env = n
            .environment
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        line("Service", format!("{service}{env}"));
    }
    if let Some(id) = &n.rollback_id {
        line("Rollback", id.clone());
    }
    if let Some(from) = &n.from_deployment {
        line("From", from.clone());
    }
    if let Some(to) = &n.target_deployment {
        line("To", to.clone());
    }
    if let Some(policy) = &n.policy {
        line("Policy", policy.clone());
    }
    if !n.rules.is_empty() {
        line("Rules", n.rules_text());
    }
    if let Some(d) = n.duration_seconds {
        line("Duration", format!("{d:.1} s"));
    }
    if let (Some(e), Some(from)) = (n.estimated_seconds, &n.estimated_from) {
        line("Estimated", format!("{e:.0} s ({from})"));
    }
    if let Some(outcome) = &n.outcome {
        line("Outcome", outcome.clone());
    }
    if let Some(blame) = &n.blame {
        line("Blame", blame.to_string());
    }
    if let Some(hint) = &n.approve_hint {
        line("Approve", hint.clone());
    }
    if !n.phases.is_empty() {
        text.push_str("\nPhases:\n");
        for p in &n.phases {
            let result = serde_json::to_value(&p.result)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let name = serde_json::to_value(&p.name)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            text.push_str(&format!(
                "  {name:<15} {result:<10} {:>7.1} s  {}\n",
                p.duration_seconds, p.detail
            ));
        }
    }
    text.push_str(&format!(
        "\nSent by rollbackd at {}.\n",
        humantime::format_rfc3339_seconds(n.at)
    ));
    text
}

impl Notifier for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send<'a>(
        &'a self,
        _client: &'a reqwest::Client,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let mut message = Message::builder().from(self.from.clone());
            for to in &self.to {
                message = message.to(to.clone());
            }
            let message = message
                .subject(subject(n))
                .header(ContentType::TEXT_PLAIN)
                .body(body(n))
                .map_err(|e| NotifyError::Permanent(format!("the email: {e}")))?;
            let sent = tokio::time::timeout(self.timeout, self.transport.send(message)).await;
            let Ok(sent) = sent else {
                return Err(NotifyError::Transient(format!(
                    "the SMTP server did not finish within {}",
                    crate::duration::format(self.timeout)
                )));
            };
            match sent {
                Ok(_) => Ok(()),
                // 5xx: the server will not take it (a bad address, refused
                // credentials); TLS and client errors (STARTTLS not
                // offered, an untrusted certificate) will not heal either.
                // Anything else may pass on another try.
                Err(e) if e.is_permanent() || e.is_tls() || e.is_client() => {
                    Err(NotifyError::Permanent(format!("the SMTP server: {e}")))
                }
                Err(e) => Err(NotifyError::Transient(format!("the SMTP server: {e}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_reads_top_down_and_the_subject_names_the_service() {
        let mut n = Notification::new(
            NotifyEvent::RollbackFailed,
            "verification failed: /health answered 503",
        );
        n.service = Some("web".into());
        n.environment = Some("production".into());
        n.rollback_id = Some("rb-1".into());
        n.from_deployment = Some("d3".into());
        n.target_deployment = Some("d2".into());
        n.duration_seconds = Some(42.06);
        assert_eq!(subject(&n), "[rollbackd] Rollback FAILED: web (production)");
        let text = body(&n);
        assert!(
            text.starts_with("Rollback FAILED\n\nverification failed: /health answered 503\n\n"),
            "{text}"
        );
        assert!(text.contains("Service:      web (production)\n"), "{text}");
        assert!(
            text.contains("From:         d3\nTo:           d2\n"),
            "{text}"
        );
        assert!(text.contains("Duration:     42.1 s\n"), "{text}");
        assert!(text.contains("Sent by rollbackd at "), "{text}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_within_the_timeout() {
        // Accepts the connection, never says a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            drop(socket);
        });
        let config: EmailConfig = serde_json::from_value(serde_json::json!({
            "host": "127.0.0.1", "port": port, "timeout": "300ms",
            "from": "rollbackd@example.com", "to": ["oncall@example.com"],
        }))
        .unwrap();
        let email = Email::new(&config, 0).unwrap();
        let n = Notification::new(NotifyEvent::RollbackFailed, "x");
        let started = std::time::Instant::now();
        let e = email.send(&reqwest::Client::new(), &n).await.unwrap_err();
        assert!(matches!(e, NotifyError::Transient(_)), "{e}");
        assert!(e.to_string().contains("did not finish within 300ms"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
