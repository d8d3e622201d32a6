//! Alertmanager as a trigger: a real Prometheus alert, routed by a real
//! Alertmanager to rollbackd's webhook endpoint.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use support::fake_hooks::FakeHooks;
use support::fake_railway::FakeRailway;
use support::{wait_for, Alertmanager, FakeService, Prometheus, Watcher, API_TOKEN};

const ALERTS: &str = "groups:\n  - name: service\n    interval: 1s\n    rules:\n      - alert: ServiceErrors\n        \
    expr: '(sum(rate(http_requests_total{code=\"500\"}[3s])) or vector(0)) / sum(rate(http_requests_total[3s])) > 0.1'\n        \
    labels:\n          rollback: 'true'\n        annotations:\n          summary: error ratio above 10 %\n";

struct Setup {
    fake: Arc<FakeService>,
    railway: FakeRailway,
    hooks: FakeHooks,
    watcher: Watcher,
    _am: Alertmanager,
    _prom: Prometheus,
    _dir: tempfile::TempDir,
}

/// `heal`: whether the rolled-back deployment stops the errors. Without it the
/// alert keeps firing after the rollback, so Alertmanager keeps redelivering.
fn setup(policy: &str, heal: bool) -> Setup {
    let fake = Arc::new(FakeService::start());
    let railway = FakeRailway::start();
    if heal {
        let healed = fake.clone();
        railway.on_success(move |_| healed.set(|k| k.error_ratio = 0.0));
    }
    let hooks = FakeHooks::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/none.yml"), "groups: []\n").unwrap();
    let config = format!(
        "[prometheus]\nurl = \"http://127.0.0.1:1\"\n\n[service]\nname = \"web\"\nbase_url = \"{}\"\n\n\
         [watch]\nrule_paths = [\"rules\"]\n\n{}\n\
         [blame]\nenabled = false\n\n[engine]\nstate_dir = \"state\"\npoll_interval = \"200ms\"\ncoalesce = \"500ms\"\n\n\
         [verify]\ninitial_wait = \"0s\"\nretry_interval = \"300ms\"\ncheck_timeout = \"1s\"\n\n\
         [alertmanager]\nmatchers = {{ rollback = \"true\" }}\npolicy = \"{policy}\"\n\n\
         [[notifiers]]\ntype = \"pagerduty\"\nrouting_key = \"key\"\nurl = \"{}\"\n",
        fake.url(),
        railway.provider_toml(),
        hooks.url("pagerduty")
    );
    let watcher = Watcher::start(dir.path(), &config);
    let am = Alertmanager::start(
        &format!("{}/api/v1/alertmanager", watcher.url()),
        API_TOKEN,
        "2s",
    );
    let prom = Prometheus::start_with_alertmanager(&[fake.addr], Some(ALERTS), Some(am.port));
    prom.wait_for_scrape("http_requests_total");
    Setup {
        fake,
        railway,
        hooks,
        watcher,
        _am: am,
        _prom: prom,
        _dir: dir,
    }
}

fn received(w: &Watcher, field: &str) -> u64 {
    w.logs_with("Alertmanager notification received")
        .iter()
        .map(|l| l[field].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn an_alert_routed_by_alertmanager_rolls_back_once_despite_redeliveries() {
    // The errors outlive the rollback, so the alert keeps firing and
    // Alertmanager repeats it every 2 s: each redelivery must be recognised
    // and none may start a second rollback.
    let s = setup("auto", false);
    let w = &s.watcher;
    s.fake.set(|k| k.error_ratio = 0.5);
    w.wait_for_log("rollback succeeded", Duration::from_secs(60));
    wait_for("a redelivery", Duration::from_secs(30), || {
        (received(w, "duplicates") >= 1).then_some(())
    });
    assert_eq!(
        s.railway.rollbacks(),
        ["d2"],
        "exactly one rollback: {}",
        w.dump()
    );
    let history = w.api("/api/v1/rollbacks");
    assert_eq!(history[0]["trigger"], "alertmanager");
    assert_eq!(history[0]["rules"][0]["rule"], "ServiceErrors");
    assert_eq!(history[0]["rules"][0]["group"], "alertmanager");

    // The same payload posted twice by hand: the second is a duplicate.
    let payload = r#"{"version":"4","groupKey":"{}:{alertname=\"Manual\"}","status":"firing","receiver":"rollbackd",
        "groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am",
        "alerts":[{"status":"firing","labels":{"alertname":"Manual","rollback":"true"},"annotations":{},
        "startsAt":"2030-01-01T00:00:00.000Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"abc123"}]}"#;
    let url = format!("{}/api/v1/alertmanager", w.url());
    let (status, first) = support::http_post(&url, Some(API_TOKEN), Some(payload));
    assert_eq!(status, 200, "{first}");
    assert!(first.contains("\"accepted\":1"), "{first}");
    let (_, second) = support::http_post(&url, Some(API_TOKEN), Some(payload));
    assert!(
        second.contains("\"duplicates\":1") && second.contains("\"accepted\":0"),
        "{second}"
    );
    // An alert without the matching label is not rollbackd's business.
    let other = payload
        .replace("\"rollback\":\"true\"", "\"team\":\"other\"")
        .replace("abc123", "def456");
    let (_, third) = support::http_post(&url, Some(API_TOKEN), Some(&other));
    assert!(
        third.contains("\"ignored\":1") && third.contains("\"accepted\":0"),
        "{third}"
    );

    // Bad requests get clear errors.
    let (status, body) = support::http_post(&url, None, Some(payload));
    assert_eq!(status, 401, "{body}");
    let (status, body) = support::http_post(&url, Some(API_TOKEN), Some("{\"alerts\": 3}"));
    assert_eq!(status, 400);
    assert!(
        body.contains("not an Alertmanager webhook payload"),
        "{body}"
    );
    let (status, body) = support::http_post(
        &url,
        Some(API_TOKEN),
        Some(&payload.replace("\"version\":\"4\"", "\"version\":\"3\"")),
    );
    assert_eq!(status, 400);
    assert!(body.contains("version 4"), "{body}");
}

#[test]
fn a_resolved_alert_cancels_the_pending_confirmation_it_caused() {
    let s = setup("confirm", true);
    let w = &s.watcher;
    s.fake.set(|k| k.error_ratio = 0.5);
    let pending = wait_for("a pending rollback", Duration::from_secs(60), || {
        w.api("/api/v1/pending")
            .as_array()
            .and_then(|a| a.first().cloned())
    });
    let id = pending["id"].as_str().unwrap().to_string();
    assert_eq!(pending["rules"][0]["rule"], "ServiceErrors");
    s.fake.set(|k| k.error_ratio = 0.0);
    w.wait_for_log("pending rollback cancelled", Duration::from_secs(60));
    assert!(w.api("/api/v1/pending").as_array().unwrap().is_empty());
    // That a cancelled confirmation never rolls back later is proven on the
    // paused clock (engine::dispatch::tests); here: not before the cancel.
    assert!(s.railway.rollbacks().is_empty(), "nothing was rolled back");

    // PagerDuty: triggered for the confirmation, resolved when it was cancelled.
    let pd = wait_for("the PagerDuty resolve", Duration::from_secs(10), || {
        let pd = s.hooks.received("pagerduty");
        (pd.len() >= 2).then_some(pd)
    });
    let key = format!("rollbackd/{id}");
    assert_eq!(
        (pd[0]["event_action"].as_str(), pd[0]["dedup_key"].as_str()),
        (Some("trigger"), Some(key.as_str()))
    );
    assert_eq!(pd[0]["payload"]["severity"], "warning");
    assert!(pd[0]["payload"]["custom_details"]["approve_hint"]
        .as_str()
        .unwrap()
        .contains(&format!("rollbackd approve {id}")));
    assert_eq!(
        (pd[1]["event_action"].as_str(), pd[1]["dedup_key"].as_str()),
        (Some("resolve"), Some(key.as_str()))
    );
}
