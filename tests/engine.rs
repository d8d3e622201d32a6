//! The rollback engine end to end: a real Prometheus scraping the fake
//! service, rollbackd watching it, and the fake Railway API rolling back.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::fake_railway::{FakeRailway, RailwayKnobs};
use support::{run_rollbackd, wait_for, FakeService, Prometheus, Watcher, API_TOKEN};

const RATIO: &str = r#"(sum(rate(http_requests_total{service="{{service}}",code="500"}[3s])) or vector(0)) / sum(rate(http_requests_total{service="{{service}}"}[3s]))"#;

struct Setup {
    fake: Arc<FakeService>,
    railway: FakeRailway,
    _prom: Prometheus,
    watcher: Watcher,
    dir: tempfile::TempDir,
}

fn rule(name: &str, above: f64, policy: &str) -> String {
    format!("      - name: {name}\n        expr: '{RATIO}'\n        above: {above}\n        for: 1s\n        policy: {policy}\n")
}

/// A healthy service, Prometheus, the fake Railway (live: d3, previous good:
/// d2) and rollbackd watching `rules` with `engine` lines in [engine].
fn setup(rules: &[String], engine: &str, knobs: impl FnOnce(&mut RailwayKnobs)) -> Setup {
    let fake = Arc::new(FakeService::start());
    let railway = FakeRailway::start();
    railway.set(knobs);
    let healed = fake.clone();
    // The rollback deploys the good version: errors stop.
    railway.on_success(move |_| healed.set(|k| k.error_ratio = 0.0));
    let prom = Prometheus::start(&[fake.addr], None);
    prom.wait_for_scrape("app_deployment_info");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/http.yml"),
        format!(
            "groups:\n  - name: http\n    interval: 1s\n    rules:\n{}",
            rules.join("")
        ),
    )
    .unwrap();
    let coalesce = if engine.contains("coalesce") {
        ""
    } else {
        "coalesce = \"500ms\"\n"
    };
    let config = format!(
        "[prometheus]\nurl = \"{}\"\ntimeout = \"2s\"\n\n[service]\nname = \"demo\"\nbase_url = \"{}\"\n\n\
         [watch]\nrule_paths = [\"rules\"]\n\n{}\n\
         [blame]\nenabled = false\n\n[engine]\nstate_dir = \"state\"\npoll_interval = \"200ms\"\n{coalesce}{engine}\n\n\
         [verify]\ninitial_wait = \"0s\"\nretry_interval = \"300ms\"\ncheck_timeout = \"1s\"\n",
        prom.url(),
        fake.url(),
        railway.provider_toml()
    );
    let watcher = Watcher::start(dir.path(), &config);
    Setup {
        fake,
        railway,
        _prom: prom,
        watcher,
        dir,
    }
}

fn history(dir: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(dir.join("state/history.json")).expect("history written");
    serde_json::from_str(&text).unwrap()
}

fn bad_deploy(s: &Setup) {
    wait_for("a first clean evaluation", Duration::from_secs(20), || {
        s.watcher
            .metric("rollbackd_rule_evaluations_total", &[("outcome", "ok")])
            .filter(|v| *v >= 1.0)
    });
    s.fake.set(|k| k.error_ratio = 0.5);
}

#[test]
fn a_bad_deploy_under_auto_is_rolled_back_once_verified_and_recorded() {
    let s = setup(&[rule("HighErrorRate", 0.1, "auto")], "", |_| {});
    let w = &s.watcher;
    bad_deploy(&s);
    w.wait_for_log("rollback succeeded", Duration::from_secs(40));
    assert_eq!(s.railway.rollbacks(), ["d2"], "{}", w.dump());

    // Every log line of the rollback names the rollback and its rule.
    let phase_lines = w.logs_with("rollback phase finished");
    assert_eq!(phase_lines.len(), 5);
    for line in &phase_lines {
        assert!(
            line["span"]["rollback"]
                .as_str()
                .unwrap()
                .starts_with("rb-"),
            "{line}"
        );
        assert_eq!(line["span"]["rules"], "HighErrorRate", "{line}");
    }
    let h = history(s.dir.path());
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{h:#}");
    let e = &events[0];
    assert_eq!(
        (e["type"].as_str(), e["success"].as_bool()),
        (Some("rollback"), Some(true))
    );
    assert_eq!(e["target_deployment_id"], "d2");
    assert_eq!(e["from_deployment_id"], "d3");
    assert_eq!(e["git_sha"], "d2-sha");
    assert_eq!(
        (e["trigger"].as_str(), e["policy"].as_str()),
        (Some("rule"), Some("auto"))
    );
    assert_eq!(e["rules"][0]["rule"], "HighErrorRate");
    assert!(e["rules"][0]["value"].as_f64().unwrap() > 0.1);
    let phases: Vec<(&str, &str)> = e["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [
            ("pre_validation", "succeeded"),
            ("database", "skipped"),
            ("application", "succeeded"),
            ("verification", "succeeded"),
            ("post_rollback", "succeeded"),
        ]
    );
    assert!(e["duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(h["last_known_good"]["deployment_id"], "d2");

    let m = |name: &str, labels: &[(&str, &str)]| w.metric(name, labels);
    assert_eq!(
        m(
            "rollbackd_rollbacks_total",
            &[
                ("result", "success"),
                ("trigger", "rule"),
                ("policy", "auto")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(m("rollbackd_breaker_state", &[]), Some(2.0));
    assert!(m(
        "rollbackd_rollback_duration_seconds_count",
        &[("result", "success")]
    )
    .is_some());
    assert!(m(
        "rollbackd_rollback_phase_duration_seconds_count",
        &[("phase", "verification")]
    )
    .is_some());
    assert!(m(
        "rollbackd_health_check_duration_seconds_count",
        &[("phase", "external")]
    )
    .is_some());
    let breaker = w.api("/api/v1/breaker");
    assert_eq!(
        (
            breaker["state"].as_str(),
            breaker["deploys_allowed"].as_bool()
        ),
        (Some("OPEN"), Some(false))
    );
    let entry = &w.api("/api/v1/rollbacks")[0];
    assert_eq!(entry["target_deployment_id"], "d2");
    // One entry by its id (the link in a [gitops] pull request).
    let one = w.api(&format!(
        "/api/v1/rollbacks/{}",
        entry["id"].as_str().unwrap()
    ));
    assert_eq!(&one, entry);
    let (status, body) =
        support::http_get(&format!("{}/api/v1/rollbacks/rb-none", w.url())).unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no history entry \\\"rb-none\\\""), "{body}");

    let (code, out, _) = run_rollbackd(
        s.dir.path(),
        &["--config", "rollbackd.toml", "history"],
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("success") && out.contains("d3") && out.contains("d2"),
        "{out}"
    );

    // The rule clears, then a second breach right after the rollback: the guards stop it.
    w.wait_for_state("HighErrorRate", "inactive", Duration::from_secs(20));
    s.fake.set(|k| k.error_ratio = 0.5);
    let refused = w.wait_for_log("rollback refused by a guard", Duration::from_secs(20));
    assert_eq!(refused["guard"], "breaker", "{refused}");
    assert!(
        refused["reason"].as_str().unwrap().contains("OPEN"),
        "{refused}"
    );
    assert_eq!(s.railway.rollbacks().len(), 1, "still exactly one rollback");
    let last = wait_for("the refusal in the history", Duration::from_secs(5), || {
        let h = history(s.dir.path());
        h["events"]
            .as_array()
            .unwrap()
            .last()
            .filter(|e| e["type"] == "blocked")
            .cloned()
    });
    assert!(
        last["error"].as_str().unwrap().starts_with("breaker:"),
        "{last}"
    );
    assert_eq!(
        m("rollbackd_rollbacks_blocked_total", &[("guard", "breaker")]),
        Some(1.0)
    );
}

#[test]
fn dry_run_logs_the_plan_and_changes_nothing() {
    let s = setup(&[rule("HighErrorRate", 0.1, "dry_run")], "", |_| {});
    let w = &s.watcher;
    bad_deploy(&s);
    let plan = w.wait_for_log(
        "dry run: rollbackd would roll back",
        Duration::from_secs(20),
    );
    let text = plan["message"].as_str().unwrap();
    assert!(
        text.contains("roll back to: d2") && text.contains("live now:     d3"),
        "{text}"
    );
    assert!(text.contains("/health/external-services"), "{text}");
    // A dry run never acts later either: `a_dry_run_rule_never_rolls_back`
    // follows it for ten minutes on the paused clock.
    assert!(s.railway.rollbacks().is_empty());
    assert!(
        s.railway
            .requests()
            .iter()
            .all(|r| !r["query"].as_str().unwrap().contains("mutation")),
        "no mutation was sent"
    );
    assert!(
        !s.dir.path().join("state/history.json").exists(),
        "nothing recorded as done"
    );
    assert_eq!(
        w.metric(
            "rollbackd_rollbacks_total",
            &[
                ("result", "dry_run"),
                ("trigger", "rule"),
                ("policy", "dry_run")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(w.api("/api/v1/breaker")["state"], "CLOSED");
}

#[test]
fn confirm_waits_for_approval_then_rolls_back_once() {
    let s = setup(&[rule("HighErrorRate", 0.1, "confirm")], "", |_| {});
    let w = &s.watcher;
    bad_deploy(&s);
    let pending = wait_for("a pending rollback", Duration::from_secs(20), || {
        w.api("/api/v1/pending")
            .as_array()
            .and_then(|a| a.first().cloned())
    });
    let id = pending["id"].as_str().unwrap().to_string();
    assert!(pending["plan"].as_str().unwrap().contains("d2"));
    assert!(
        s.railway.rollbacks().is_empty(),
        "nothing happens before approval"
    );
    assert_eq!(w.metric("rollbackd_pending_confirmations", &[]), Some(1.0));

    let (code, out, _) = run_rollbackd(
        s.dir.path(),
        &["--config", "rollbackd.toml", "pending"],
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains(&format!("rollbackd approve {id}")),
        "{out}"
    );

    let (code, out, err) = run_rollbackd(
        s.dir.path(),
        &["--config", "rollbackd.toml", "approve", &id],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let started = out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("approved: rollback ")
        .trim_end_matches(" started")
        .to_string();
    assert!(
        started.starts_with("rb-") && started.len() == 15,
        "the real rollback id: {out}"
    );
    assert!(
        out.contains("HighErrorRate is still firing"),
        "the re-check says what it found: {out}"
    );
    w.wait_for_log("rollback succeeded", Duration::from_secs(40));
    assert_eq!(s.railway.rollbacks(), ["d2"]);
    let h = history(s.dir.path());
    assert_eq!(h["events"][0]["policy"], "confirm");
    assert_eq!(
        h["events"][0]["id"],
        started.as_str(),
        "approve reported the id the run has"
    );
    assert!(w.api("/api/v1/pending").as_array().unwrap().is_empty());

    let (code, _, err) = run_rollbackd(
        s.dir.path(),
        &["--config", "rollbackd.toml", "approve", &id],
        &[],
    );
    assert_eq!(code, 1, "approving twice is refused");
    assert!(err.contains("no pending rollback"), "{err}");
}

#[test]
fn rejection_and_expiry_leave_the_service_alone() {
    let s = setup(
        &[
            rule("ErrorsHigh", 0.1, "confirm"),
            rule("ErrorsVeryHigh", 0.6, "confirm"),
        ],
        "confirm_timeout = \"10s\"",
        |_| {},
    );
    let w = &s.watcher;
    bad_deploy(&s);
    let first = wait_for("a pending rollback", Duration::from_secs(20), || {
        w.api("/api/v1/pending")
            .as_array()
            .and_then(|a| a.first().cloned())
    });
    let id = first["id"].as_str().unwrap().to_string();

    // Bad API requests, each with a clear error.
    let approve = format!("{}/api/v1/pending/{id}/approve", w.url());
    let (status, body) = support::http_post(&approve, None, None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"));
    let (status, _) = support::http_post(&approve, Some("wrong-token"), None);
    assert_eq!(status, 403);
    let (status, body) = support::http_post(&approve, Some(API_TOKEN), Some("{\"force\": maybe}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid JSON"));
    let (status, body) = support::http_post(&approve, Some(API_TOKEN), Some("{\"forse\": true}"));
    assert_eq!(status, 400, "{body}");
    let (status, body) = support::http_post(
        &format!("{}/api/v1/pending/nope/approve", w.url()),
        Some(API_TOKEN),
        None,
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = support::http_post(&format!("{}/api/v1/nothing", w.url()), None, None);
    assert_eq!(status, 404);
    assert!(body.contains("no such endpoint"));
    let (status, body) =
        support::http_get(&format!("{}/api/v1/rollbacks?limit=lots", w.url())).unwrap();
    assert_eq!(status, 400, "{body}");

    let (code, out, err) = run_rollbackd(
        s.dir.path(),
        &["--config", "rollbackd.toml", "reject", &id],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing was changed"));
    assert!(w.api("/api/v1/pending").as_array().unwrap().is_empty());

    // A worse breach makes a second pending rollback; nobody answers it.
    s.fake.set(|k| k.error_ratio = 0.9);
    wait_for("a second pending rollback", Duration::from_secs(20), || {
        w.api("/api/v1/pending")
            .as_array()
            .and_then(|a| a.first().cloned())
    });
    w.wait_for_log(
        "pending rollback expired unanswered; rejected",
        Duration::from_secs(30),
    );
    assert!(w.api("/api/v1/pending").as_array().unwrap().is_empty());
    assert!(
        s.railway.rollbacks().is_empty(),
        "rejection and expiry never roll back"
    );
    assert_eq!(w.api("/api/v1/breaker")["state"], "CLOSED");
}

#[test]
fn two_rules_firing_together_make_one_rollback() {
    // Both rules breach in the same evaluation: the first to fire starts
    // the rollback at once (the leading edge), the other joins it. (With
    // different thresholds the rollback, fast against the fakes, heals the
    // service before the second would fire.)
    let s = setup(
        &[
            rule("ErrorsHigh", 0.1, "auto"),
            rule("ErrorsHigher", 0.1, "auto"),
        ],
        "coalesce = \"6s\"",
        |_| {},
    );
    let w = &s.watcher;
    bad_deploy(&s);
    w.wait_for_log("rollback succeeded", Duration::from_secs(40));
    // A second rollback would have been refused by the breaker, and said so.
    assert_eq!(s.railway.rollbacks(), ["d2"]);
    let h = history(s.dir.path());
    let rollbacks: Vec<&Value> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "rollback")
        .collect();
    assert_eq!(rollbacks.len(), 1);
    let mut rules: Vec<&str> = rollbacks[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    rules.sort();
    assert_eq!(rules, ["ErrorsHigh", "ErrorsHigher"]);
}

#[test]
fn a_provider_failing_mid_rollback_leaves_the_breaker_open_and_the_failure_recorded() {
    let s = setup(&[rule("HighErrorRate", 0.1, "auto")], "", |k| {
        k.rollback_outcome = "FAILED".into()
    });
    let w = &s.watcher;
    bad_deploy(&s);
    let failed = w.wait_for_log("rollback failed", Duration::from_secs(40));
    assert!(
        failed["error"].as_str().unwrap().contains("ended FAILED"),
        "{failed}"
    );
    let h = history(s.dir.path());
    let e = &h["events"][0];
    assert_eq!(e["success"], false);
    assert!(
        e["error"].as_str().unwrap().starts_with("application:"),
        "{e}"
    );
    assert!(
        h.get("last_known_good").is_none(),
        "a failed rollback is not last known good"
    );
    assert_eq!(
        w.metric(
            "rollbackd_rollbacks_total",
            &[
                ("result", "failure"),
                ("trigger", "rule"),
                ("policy", "auto")
            ]
        ),
        Some(1.0)
    );

    let cli = |args: &[&str]| {
        let mut all = vec!["--config", "rollbackd.toml"];
        all.extend_from_slice(args);
        run_rollbackd(s.dir.path(), &all, &[])
    };
    let (code, out, _) = cli(&["breaker", "status"]);
    assert_eq!(code, 1, "OPEN: deploys must wait: {out}");
    assert!(
        out.starts_with("OPEN") && out.contains("breaker reset"),
        "{out}"
    );
    let (code, out, _) = cli(&["breaker", "reset", "--reason", "checked by on-call"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(&["breaker", "status", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["reason"].as_str()),
        (Some("CLOSED"), Some("checked by on-call"))
    );
    assert_eq!(s.railway.rollbacks().len(), 1);
}

#[test]
fn the_api_refuses_changes_without_a_token_and_reports_the_breaker() {
    let s = setup(&[rule("HighErrorRate", 0.1, "dry_run")], "", |_| {});
    let w = &s.watcher;
    let (status, body) =
        support::http_post(&format!("{}/api/v1/breaker/reset", w.url()), None, None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = support::http_post(
        &format!("{}/api/v1/breaker/reset", w.url()),
        Some(API_TOKEN),
        Some("{\"reason\": \"all good\"}"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(w.api("/api/v1/breaker")["state"], "CLOSED");
    assert_eq!(w.api("/api/v1/breaker")["reason"], "all good");
    let logs = w.dump();
    assert!(
        !logs.contains(API_TOKEN),
        "the token never reaches the logs"
    );
    assert!(!logs.contains(support::fake_railway::TOKEN));
}

#[test]
fn an_approval_still_passes_the_guards() {
    let s = setup(&[rule("HighErrorRate", 0.1, "confirm")], "", |_| {});
    let w = &s.watcher;
    bad_deploy(&s);
    let pending = wait_for("a pending rollback", Duration::from_secs(20), || {
        w.api("/api/v1/pending")
            .as_array()
            .and_then(|a| a.first().cloned())
    });
    let id = pending["id"].as_str().unwrap().to_string();
    // Meanwhile someone rolled back by hand, and it failed: the breaker is OPEN.
    s.railway.set(|k| k.rollback_outcome = "FAILED".into());
    let (code, _, _) = run_rollbackd(
        s.dir.path(),
        &["--config", "rollbackd.toml", "rollback", "--yes"],
        &[],
    );
    assert_eq!(code, 1);
    let (code, _, err) = run_rollbackd(
        s.dir.path(),
        &["--config", "rollbackd.toml", "approve", &id],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("breaker") && err.contains("rollbackd rollback"),
        "{err}"
    );
    assert_eq!(
        s.railway.rollbacks().len(),
        1,
        "only the manual attempt reached the platform"
    );
    assert_eq!(
        w.api("/api/v1/pending").as_array().unwrap().len(),
        1,
        "the confirmation is still there"
    );
}
