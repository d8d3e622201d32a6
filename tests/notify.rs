//! Notifications from real rollbacks: Slack, PagerDuty and a webhook (fakes
//! that speak their documented protocols), field by field, and what 429s and
//! 500s do (retried, then given up, never touching the rollback).

mod support;

use support::fake_hooks::FakeHooks;
use support::fake_railway::FakeRailway;
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
    ] {
        std::fs::write(d.path().join("rollbackd.toml"), text).unwrap();
        let (code, _, err) = run_rollbackd(d.path(), &["check"], &[]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(needle), "{text}: {needle:?} not in {err}");
    }
}
