//! Notifications from real rollbacks: Slack, PagerDuty, Sentry and a webhook
//! (fakes that speak their documented protocols) and email through a real
//! SMTP server (aiosmtpd, STARTTLS and AUTH), field by field, and what 429s
//! and 500s do (retried, then given up, never touching the rollback).

use crate::support;

use support::fake_hooks::FakeHooks;
use support::fake_railway::FakeRailway;
use support::smtp::{Smtp, PASSWORD, USER};
use support::{run_rollbackd, FakeService};

const ROUTING_KEY: &str = "R0UT1NGKEY0000000000000000000000";

fn dir(
    railway: &FakeRailway,
    service: &FakeService,
    hooks: &FakeHooks,
    slack_path: &str,
) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("rollbackd.toml"),
        format!(
            "[service]\nname = \"web\"\nenvironment = \"production\"\nbase_url = \"{}\"\n\n{}\n\
             [engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n\n\
             [[notifiers]]\ntype = \"slack\"\nurl = \"{}\"\ndelivery = {{ attempts = 3, backoff = \"50ms\" }}\n\n\
             [[notifiers]]\ntype = \"pagerduty\"\nrouting_key = \"{ROUTING_KEY}\"\nurl = \"{}\"\ndelivery = {{ attempts = 3, backoff = \"50ms\" }}\n\
             runbook_url = \"https://wiki.example.com/runbooks/rollbackd\"\n\n\
             [[notifiers]]\ntype = \"webhook\"\nurl = \"{}\"\nevents = [\"rollback_succeeded\", \"rollback_failed\"]\n",
            service.url(),
            railway.provider_toml(),
            hooks.url(slack_path),
            hooks.url("pagerduty/v2/enqueue"),
            hooks.url("hook"),
        ),
    )
    .unwrap();
    d
}

#[test]
fn a_rollback_is_announced_on_every_notifier_in_its_documented_format() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let hooks = FakeHooks::start();
    let d = dir(&railway, &service, &hooks, "slack/T000/B000/XXXX");
    let (code, out, err) = run_rollbackd(
        d.path(),
        &["rollback", "--yes", "--reason", "bad deploy"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let id = out
        .lines()
        .find_map(|l| l.split("rollback ").nth(1)?.strip_suffix(" started"))
        .unwrap()
        .to_string();

    let slack = hooks.received("slack/T000/B000/XXXX");
    let titles: Vec<&str> = slack
        .iter()
        .map(|m| m["blocks"][0]["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        ["Rollback started", "Rollback succeeded"],
        "{slack:#?}"
    );
    // The start says how long it should take: no rollback recorded yet,
    // so at most the phase budgets' sum.
    let started = slack[0].to_string();
    assert!(
        started.contains("Estimated duration")
            && started.contains("about 570 s (at most: the phase budgets"),
        "{started}"
    );
    let done = &slack[1];
    assert!(
        done["text"]
            .as_str()
            .unwrap()
            .contains("Rollback succeeded"),
        "{done}"
    );
    assert_eq!(done["blocks"][0]["type"], "header");
    let fields: Vec<&str> = done["blocks"][2]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"*Target deployment*\nd2"), "{fields:?}");
    assert!(fields.contains(&"*Rolled back from*\nd3"), "{fields:?}");
    assert!(fields.contains(&"*Policy*\nmanual"), "{fields:?}");
    assert!(
        fields.iter().any(|f| f.starts_with("*Duration*\n")),
        "{fields:?}"
    );
    assert!(
        fields.iter().any(|f| f.starts_with("*Outcome*\nsucceeded")),
        "{fields:?}"
    );
    let context = done["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        context.contains("service web") && context.contains("production") && context.contains(&id),
        "{context}"
    );

    let pd = hooks.received("pagerduty/v2/enqueue");
    assert_eq!(
        pd.len(),
        1,
        "only the resolve: PagerDuty acts on failures and confirmations: {pd:#?}"
    );
    let e = &pd[0];
    assert_eq!(e["routing_key"], ROUTING_KEY);
    assert_eq!(e["event_action"], "resolve");
    assert_eq!(e["dedup_key"], format!("rollbackd/{id}"));
    assert_eq!(e["payload"]["source"], "rollbackd/web");
    assert_eq!(e["payload"]["severity"], "info");
    assert!(e["payload"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("Rollback succeeded"));
    assert_eq!(e["payload"]["custom_details"]["target_deployment"], "d2");
    assert_eq!(
        e["links"],
        serde_json::json!([{ "href": "https://wiki.example.com/runbooks/rollbackd", "text": "Runbook" }])
    );

    let hook = hooks.received("hook");
    assert_eq!(hook.len(), 1, "only the events it asked for");
    assert_eq!(hook[0]["event"], "rollback_succeeded");
    assert_eq!(hook[0]["rollback_id"], id.as_str());
    assert!(hook[0]["duration_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn failures_trigger_pagerduty_and_429s_and_500s_are_retried_then_given_up() {
    let railway = FakeRailway::start();
    railway.set(|k| k.rollback_outcome = "FAILED".into());
    let service = FakeService::start();
    let hooks = FakeHooks::start();
    hooks.always("slack/down", 500);
    hooks.script("pagerduty/v2/enqueue", &[429, 503]);
    let d = dir(&railway, &service, &hooks, "slack/down");
    let (code, out, err) = run_rollbackd(d.path(), &["rollback", "--yes"], &[]);
    assert_eq!(code, 1, "the rollback itself failed: {out}");
    assert!(err.contains("ended FAILED"), "{err}");
    assert!(
        !err.contains("slack/down") && !out.contains("slack/down"),
        "webhook URLs never printed"
    );
    assert!(!err.contains(ROUTING_KEY));

    // Slack answered 500 every time: 3 attempts per message, then given up.
    let slack = hooks.received("slack/down");
    assert_eq!(slack.len(), 6, "2 messages x 3 attempts: {slack:#?}");
    assert!(err.contains("notification given up"), "{err}");

    // PagerDuty: 429, 503, then accepted; one trigger, critical.
    let pd = hooks.received("pagerduty/v2/enqueue");
    assert_eq!(pd.len(), 3);
    assert!(pd.iter().all(|e| e == &pd[0]), "the same event each time");
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["payload"]["severity"], "critical");
    assert!(pd[0]["payload"]["custom_details"]["outcome"]
        .as_str()
        .unwrap()
        .contains("breaker stays OPEN"));

    // A 400 is not retried.
    let railway = FakeRailway::start();
    let hooks = FakeHooks::start();
    hooks.always("slack/bad", 400);
    let d = dir(&railway, &service, &hooks, "slack/bad");
    let (code, _, _) = run_rollbackd(d.path(), &["rollback", "--yes"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        hooks.received("slack/bad").len(),
        2,
        "one attempt per message"
    );
}

#[test]
fn bad_notifier_config_is_named() {
    let d = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "[[notifiers]]\ntype = \"teams\"\nurl = \"http://x\"\n",
            "teams",
        ),
        ("[[notifiers]]\ntype = \"slack\"\n", "url"),
        (
            "[[notifiers]]\ntype = \"slack\"\nurl = \"hooks.slack.com/x\"\n",
            "notifiers[0].url",
        ),
        (
            "[[notifiers]]\ntype = \"slack\"\nurl = \"http://x\"\nevents = [\"everything\"]\n",
            "everything",
        ),
        (
            "[[notifiers]]\ntype = \"slack\"\nurl = \"http://x\"\ndelivery = { attempts = 0 }\n",
            "delivery.attempts",
        ),
        ("[alertmanager]\nmatchers = {}\n", "alertmanager.matchers"),
        (
            "[[notifiers]]\ntype = \"pagerduty\"\nrouting_key = \"k\"\nrunbook_url = \"wiki/rollbackd\"\n",
            "notifiers[0].runbook_url: not an http(s) URL",
        ),
        (
            "[[notifiers]]\ntype = \"pagerduty\"\nrouting_key = \"k\"\ndrill_test = true\n",
            "notifiers[0].drill_test: a PagerDuty test event would page the on-call",
        ),
        (
            "[[notifiers]]\ntype = \"sentry\"\ndsn = \"https://o1.ingest.sentry.io/5\"\n",
            "notifiers[0].dsn: the DSN has no public key",
        ),
        (
            "[[notifiers]]\ntype = \"sentry\"\ndsn = \"https://k3y@o1.ingest.sentry.io/project\"\n",
            "notifiers[0].dsn: the DSN does not end with a numeric project id",
        ),
        (
            "[[notifiers]]\ntype = \"email\"\nhost = \"smtp.example.com\"\nfrom = \"rollbackd@example.com\"\nto = []\n",
            "notifiers[0].to: give at least one recipient",
        ),
        (
            "[[notifiers]]\ntype = \"email\"\nhost = \"smtp.example.com\"\nfrom = \"rollbackd\"\nto = [\"a@example.com\"]\n",
            "notifiers[0].from: \"rollbackd\" is not an address",
        ),
        (
            "[[notifiers]]\ntype = \"email\"\nhost = \"smtp.example.com\"\nfrom = \"r@example.com\"\nto = [\"a@example.com\", \"oncall\"]\n",
            "notifiers[0].to: \"oncall\" is not an address",
        ),
        (
            "[[notifiers]]\ntype = \"email\"\nhost = \"smtp.example.com\"\nfrom = \"r@example.com\"\nto = [\"a@example.com\"]\nusername = \"u\"\n",
            "notifiers[0].username: give both username and password",
        ),
        (
            "[[notifiers]]\ntype = \"email\"\nhost = \"smtp.example.com\"\nfrom = \"r@example.com\"\nto = [\"a@example.com\"]\nusername = \"u\"\npassword = \"pw\"\ntls = \"none\"\n",
            "notifiers[0].tls: tls = \"none\" would send the password in clear",
        ),
        (
            "[[notifiers]]\ntype = \"email\"\nhost = \"smtp.example.com\"\nfrom = \"r@example.com\"\nto = [\"a@example.com\"]\ntls = \"ssl\"\n",
            "notifiers.0: unknown variant: found `ssl`",
        ),
        (
            "[[notifiers]]\ntype = \"pagerduty\"\nrouting_key = \"k\"\nevents = [\"rollback_failed\", \"drill_failed\"]\n",
            "notifiers[0].events: PagerDuty has no incident for drill_failed",
        ),
        (
            "[[notifiers]]\ntype = \"email\"\nhost = \"no such host!!\"\nfrom = \"r@example.com\"\nto = [\"a@example.com\"]\n",
            "notifiers[0].host: \"no such host!!\" is not a host name or IP address",
        ),
        (
            "[[notifiers]]\ntype = \"email\"\nhost = \"smtp.example.com\"\nport = 0\nfrom = \"r@example.com\"\nto = [\"a@example.com\"]\n",
            "notifiers[0].port: 0 is not a port; leave it out for the default of tls (587)",
        ),
    ] {
        std::fs::write(d.path().join("rollbackd.toml"), text).unwrap();
        let (code, _, err) = run_rollbackd(d.path(), &["check"], &[]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(needle), "{text}: {needle:?} not in {err}");
    }
}

#[test]
fn sentry_gets_an_envelope_and_email_a_readable_message_through_starttls_and_auth() {
    let railway = FakeRailway::start();
    railway.set(|k| k.rollback_outcome = "FAILED".into());
    let service = FakeService::start();
    let hooks = FakeHooks::start();
    // Rate limited once: retried, and the same event both times.
    hooks.script("sentry/api/42/envelope/", &[429]);
    let smtp = Smtp::start();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("rollbackd.toml"),
        format!(
            "[service]\nname = \"web\"\nenvironment = \"production\"\nbase_url = \"{}\"\n\n{}\n\
             [engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n\n\
             [[notifiers]]\ntype = \"sentry\"\ndsn = \"http://publ1ckey@{}/sentry/42\"\ndelivery = {{ attempts = 3, backoff = \"50ms\" }}\n\n\
             [[notifiers]]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {}\nca_file = \"{}\"\n\
             username = \"{USER}\"\npassword = \"{PASSWORD}\"\n\
             from = \"rollbackd <rollbackd@example.com>\"\nto = [\"oncall@example.com\", \"dba@example.com\"]\n",
            service.url(),
            railway.provider_toml(),
            hooks.addr,
            smtp.port,
            smtp.ca_file().display(),
        ),
    )
    .unwrap();
    let (code, out, err) = run_rollbackd(
        d.path(),
        &["rollback", "--yes", "--reason", "bad deploy"],
        &[],
    );
    assert_eq!(code, 1, "the rollback failed on the platform: {out}{err}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD), "{err}");
    assert!(!err.contains("publ1ckey"), "{err}");

    // Sentry: two deliveries of one envelope (the 429, then accepted).
    let path = "sentry/api/42/envelope/";
    let envelopes = hooks.received(path);
    assert_eq!(envelopes.len(), 2, "{envelopes:#?}");
    let text = envelopes[0]
        .as_str()
        .expect("an envelope is not one JSON document");
    let lines: Vec<&str> = text.trim_end().split('\n').collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let item: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    let event: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(item["type"], "event");
    assert_eq!(item["length"].as_u64().unwrap() as usize, lines[2].len());
    assert_eq!(header["event_id"], event["event_id"]);
    let second: serde_json::Value = serde_json::from_str(
        envelopes[1]
            .as_str()
            .unwrap()
            .trim_end()
            .split('\n')
            .nth(2)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        second["event_id"], event["event_id"],
        "a retry is the same event"
    );
    assert_eq!(event["level"], "error");
    assert_eq!(event["environment"], "production");
    assert_eq!(event["tags"]["service"], "web");
    assert_eq!(event["extra"]["target_deployment"], "d2");
    assert!(event["extra"]["duration_seconds"].as_f64().unwrap() > 0.0);
    let phases: Vec<&str> = event["extra"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(phases.contains(&"application"), "{phases:?}");
    assert!(event["message"]["formatted"]
        .as_str()
        .unwrap()
        .starts_with("Rollback FAILED"));
    let headers = &hooks.headers(path)[0];
    assert_eq!(headers["content-type"], "application/x-sentry-envelope");
    let auth = &headers["x-sentry-auth"];
    assert!(
        auth.starts_with("Sentry sentry_version=7, sentry_client=rollbackd/")
            && auth.ends_with("sentry_key=publ1ckey"),
        "{auth}"
    );

    // Email: one message to both recipients, over STARTTLS, authenticated.
    let mails = smtp.wait_for(1);
    assert_eq!(mails.len(), 1, "only the result by default: {mails:#?}");
    let mail = &mails[0];
    assert_eq!(mail["tls"], true);
    assert_eq!(mail["authenticated"], true);
    assert_eq!(mail["mail_from"], "rollbackd@example.com");
    assert_eq!(
        mail["rcpt_tos"],
        serde_json::json!(["oncall@example.com", "dba@example.com"])
    );
    let data = mail["data"].as_str().unwrap().replace("\r\n", "\n");
    assert!(
        data.contains("Subject: [rollbackd] Rollback FAILED: web (production)"),
        "{data}"
    );
    assert!(data.contains("Content-Type: text/plain"), "{data}");
    assert!(data.contains("\nTo:           d2\n"), "{data}");
    assert!(data.contains("Phases:\n  pre_validation"), "{data}");

    // A wrong password: refused (535) and not retried; the rollback goes on.
    let railway = FakeRailway::start();
    let config = std::fs::read_to_string(d.path().join("rollbackd.toml"))
        .unwrap()
        .replace(PASSWORD, "wrong-password")
        .replace(&hooks.addr.to_string(), "127.0.0.1:9");
    let config = config.replace(
        &config[config.find("[[notifiers]]").unwrap()
            ..config.find("[[notifiers]]\ntype = \"email\"").unwrap()],
        "",
    );
    let d2 = tempfile::tempdir().unwrap();
    std::fs::write(
        d2.path().join("rollbackd.toml"),
        config.replace(&railway_provider(&config), &railway.provider_toml()),
    )
    .unwrap();
    let (code, out, err) = run_rollbackd(d2.path(), &["rollback", "--yes"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("notification given up"), "{out}{err}");
    assert!(err.contains("535"), "the server's refusal is quoted: {err}");
    assert!(!err.contains("wrong-password"), "{err}");
    assert_eq!(smtp.messages().len(), 1, "nothing more was delivered");
    let attempts = smtp.auth_attempts();
    assert_eq!(
        attempts.iter().filter(|a| a.ends_with("refused")).count(),
        1,
        "a refused login is not retried: {attempts:?}"
    );
}

/// The `[provider]` section of a config written by these tests.
fn railway_provider(config: &str) -> String {
    let start = config.find("[provider]").unwrap();
    let end = config[start..]
        .find("\n\n")
        .map_or(config.len(), |e| start + e);
    config[start..end].to_string()
}
