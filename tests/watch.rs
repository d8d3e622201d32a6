//! The watcher against a real Prometheus scraping the fake service. Its
//! accuracy against Prometheus's own rule engine is `accuracy.rs`.

use crate::support;

use std::time::{Duration, Instant, SystemTime};

use support::{wait_for, FakeService, Prometheus, Watcher};

pub(super) const RATIO: &str = r#"(sum(rate(http_requests_total{service="{{service}}",code="500"}[3s])) or vector(0)) / sum(rate(http_requests_total{service="{{service}}"}[3s]))"#;
const TRAFFIC: &str = r#"sum(rate(http_requests_total{service="{{service}}"}[3s]))"#;

struct Scenario {
    fake: FakeService,
    prom: Prometheus,
    watcher: Watcher,
    _dir: tempfile::TempDir,
}

/// The fake service, a Prometheus scraping it, and rollbackd watching
/// `rules` (the body of one rule file) with `extra` config appended.
fn scenario(knobs: impl FnOnce(&mut support::Knobs), rules: &str, extra: &str) -> Scenario {
    let mut initial = support::Knobs::default();
    knobs(&mut initial);
    let fake = FakeService::start_with(initial);
    let prom = Prometheus::start(&[fake.addr], None);
    prom.wait_for_scrape("app_deployment_info");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/test.yml"), rules).unwrap();
    let config = format!(
        "[prometheus]\nurl = \"{}\"\ntimeout = \"2s\"\n\n[service]\nname = \"demo\"\n\n\
         [watch]\nevaluation_interval = \"1s\"\nrule_paths = [\"rules\"]\n{extra}\n",
        prom.url()
    );
    let watcher = Watcher::start(dir.path(), &config);
    Scenario {
        fake,
        prom,
        watcher,
        _dir: dir,
    }
}

pub(super) fn ratio_rule(name: &str, fields: &str) -> String {
    format!("      - name: {name}\n        expr: '{RATIO}'\n        above: 0.1\n{fields}")
}

pub(super) fn group(rules: &[String]) -> String {
    format!(
        "groups:\n  - name: http\n    interval: 1s\n    rules:\n{}",
        rules.join("")
    )
}

fn evaluations(w: &Watcher, rule: &str, outcome: &str) -> f64 {
    w.metric(
        "rollbackd_rule_evaluations_total",
        &[("rule", rule), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

pub(super) fn wait_evaluations(w: &Watcher, rule: &str, outcome: &str, at_least: f64) {
    wait_for(
        &format!("{at_least} {outcome} evaluations of {rule}"),
        Duration::from_secs(30),
        || (evaluations(w, rule, outcome) >= at_least).then_some(()),
    );
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or(-1.0)
}

#[test]
fn an_error_spike_fires_after_for_and_is_counted() {
    let s = scenario(
        |_| {},
        &group(&[ratio_rule(
            "HighErrorRate",
            "        for: 4s\n        policy: auto\n",
        )]),
        "",
    );
    let w = &s.watcher;
    wait_evaluations(w, "HighErrorRate", "ok", 2.0);
    // The group follows Prometheus's 1 s scrapes (read from /api/v1/targets):
    // its evaluations come just after each scrape begins.
    let aligned = w.logs_with("evaluating just after Prometheus's scrapes");
    assert_eq!(aligned.len(), 1, "{}", w.dump());
    let phase = aligned[0]["phase_ms"].as_u64().expect("the phase in ms");
    let (_, body) =
        support::http_get(&format!("{}/api/v1/targets?state=active", s.prom.url())).unwrap();
    let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
    let last = targets["data"]["activeTargets"][0]["lastScrape"]
        .as_str()
        .unwrap();
    let scraped = humantime::parse_rfc3339(last).expect("Prometheus's lastScrape");
    let scraped_ms = scraped
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        % 1000;
    let lag = (phase + 1000 - scraped_ms) % 1000;
    assert!(
        lag < 200,
        "evaluated {lag} ms after the scrape began (phase {phase} ms, scrape at {last})"
    );
    assert_eq!(
        w.metric("rollbackd_rule_state", &[("rule", "HighErrorRate")]),
        Some(0.0)
    );
    let (status, _) = support::http_get(&format!("{}/readyz", w.url())).unwrap();
    assert_eq!(status, 200, "ready after the first evaluation");

    s.fake.set(|k| k.error_ratio = 0.5);
    let pending = w.wait_for_state("HighErrorRate", "pending", Duration::from_secs(15));
    let firing = w.wait_for_state("HighErrorRate", "firing", Duration::from_secs(15));
    let held = secs_between(pending, firing);
    assert!(
        (4.0..7.0).contains(&held),
        "fired {held}s after pending, want >= for (4s)"
    );

    // "rule fired" is logged just after the state change.
    w.wait_for_log("rule fired", Duration::from_secs(5));
    let fired = w.logs_with("rule fired");
    assert_eq!(fired.len(), 1, "one firing event: {}", w.dump());
    assert_eq!(fired[0]["policy"], "auto");
    assert!(fired[0]["value"].as_f64().unwrap() > 0.1);
    wait_for(
        "the trigger to reach the rollback side",
        Duration::from_secs(5),
        || {
            w.logs()
                .iter()
                .any(|l| {
                    l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("rollback trigger"))
                })
                .then_some(())
        },
    );

    let metrics = w.metrics();
    let m = |name, labels: &[(&str, &str)]| support::metric_value(&metrics, name, labels);
    assert_eq!(
        m("rollbackd_rule_state", &[("rule", "HighErrorRate")]),
        Some(2.0)
    );
    assert_eq!(
        m(
            "rollbackd_rule_firing_events_total",
            &[("rule", "HighErrorRate"), ("policy", "auto")]
        ),
        Some(1.0)
    );
    assert!(m("rollbackd_rule_value", &[("rule", "HighErrorRate")]).unwrap() > 0.1);
    assert_eq!(
        m("rollbackd_rule_threshold", &[("rule", "HighErrorRate")]),
        Some(0.1)
    );
    assert_eq!(
        m(
            "rollbackd_triggers_total",
            &[("policy", "auto"), ("action", "none")]
        ),
        Some(1.0)
    );
    assert!(m("rollbackd_build_info", &[]).is_some());
    assert!(
        metrics.contains(
            "rollbackd_rule_evaluation_duration_seconds_bucket{group=\"http\",le=\"0.005\"}"
        ),
        "evaluation duration is a real histogram:\n{metrics}"
    );
}

#[test]
fn a_spike_shorter_than_for_does_not_fire() {
    let s = scenario(
        |_| {},
        &group(&[ratio_rule("HighErrorRate", "        for: 15s\n")]),
        "",
    );
    let w = &s.watcher;
    wait_evaluations(w, "HighErrorRate", "ok", 2.0);
    s.fake.set(|k| k.error_ratio = 0.5);
    w.wait_for_state("HighErrorRate", "pending", Duration::from_secs(15));
    s.fake.set(|k| k.error_ratio = 0.0);
    w.wait_for_state("HighErrorRate", "inactive", Duration::from_secs(20));
    let states: Vec<String> = w
        .transitions("HighErrorRate")
        .into_iter()
        .map(|t| t.1)
        .collect();
    assert_eq!(states, ["pending", "inactive"], "{}", w.dump());
    assert!(w.logs_with("rule fired").is_empty());
}

#[test]
fn keep_firing_for_holds_firing_after_recovery() {
    let s = scenario(
        |_| {},
        &group(&[ratio_rule(
            "HighErrorRate",
            "        for: 1s\n        keep_firing_for: 5s\n",
        )]),
        "",
    );
    let w = &s.watcher;
    wait_evaluations(w, "HighErrorRate", "ok", 1.0);
    s.fake.set(|k| k.error_ratio = 0.5);
    w.wait_for_state("HighErrorRate", "firing", Duration::from_secs(15));
    s.fake.set(|k| k.error_ratio = 0.0);
    // The first evaluation that sees the ratio back under the threshold.
    let cleared = wait_for("the ratio to drop", Duration::from_secs(15), || {
        let (_, body) = support::http_get(&format!("{}/api/v1/rules", w.url())).ok()?;
        let rules: serde_json::Value = serde_json::from_str(&body).ok()?;
        let r = &rules[0];
        (r["value"].as_f64()? < 0.1).then(|| {
            assert_eq!(r["state"], "firing", "still firing once the breach clears");
            Instant::now()
        })
    });
    w.wait_for_state("HighErrorRate", "inactive", Duration::from_secs(20));
    let held = cleared.elapsed().as_secs_f64();
    assert!(
        held >= 3.5,
        "resolved {held}s after the breach cleared; keep_firing_for is 5s"
    );
    let states: Vec<String> = w
        .transitions("HighErrorRate")
        .into_iter()
        .map(|t| t.1)
        .collect();
    assert_eq!(states, ["pending", "firing", "inactive"]);
}

#[test]
fn empty_results_and_nan_hold_instead_of_firing() {
    let s = scenario(
        |k| k.rps = 0.0,
        &group(&[
            ratio_rule("Held", "        for: 15s\n"),
            ratio_rule("FiresOnNoData", "        on_no_data: fire\n"),
        ]),
        "",
    );
    let w = &s.watcher;
    // No traffic yet: the request series do not exist, the result is empty.
    wait_evaluations(w, "Held", "empty", 3.0);
    assert_eq!(
        w.metric("rollbackd_rule_state", &[("rule", "Held")]),
        Some(0.0)
    );
    assert!(w.transitions("Held").is_empty());
    // The same expression under `on_no_data: fire` does fire: the hold is the policy's doing.
    w.wait_for_state("FiresOnNoData", "firing", Duration::from_secs(5));

    // A breach starts, then traffic stops: the ratio becomes 0/0 = NaN.
    s.fake.set(|k| {
        k.rps = 50.0;
        k.error_ratio = 0.5;
    });
    let pending = w.wait_for_state("Held", "pending", Duration::from_secs(15));
    s.fake.set(|k| k.rps = 0.0);
    wait_evaluations(w, "Held", "nan", 3.0);
    // Evaluated well past its 15 s `for` (pending + 20 s), pending all along.
    w.wait_evaluated_at("Held", pending + Duration::from_secs(20), |r| {
        assert_eq!(
            r["state"],
            "pending",
            "NaN holds the rule pending: {r}\n{}",
            w.dump()
        );
    });
    assert_eq!(
        w.metric("rollbackd_rule_state", &[("rule", "Held")]),
        Some(1.0),
        "NaN holds the rule pending, well past its 15s `for`: {}",
        w.dump()
    );
    let states: Vec<String> = w.transitions("Held").into_iter().map(|t| t.1).collect();
    assert_eq!(states, ["pending"]);
    assert!(w
        .metric("rollbackd_rule_value", &[("rule", "Held")])
        .is_none());
}

#[test]
fn a_stopped_prometheus_holds_and_the_watcher_recovers() {
    let mut s = scenario(
        |_| {},
        &group(&[ratio_rule("HighErrorRate", "        for: 10s\n")]),
        "",
    );
    let w = &s.watcher;
    wait_evaluations(w, "HighErrorRate", "ok", 1.0);
    s.fake.set(|k| k.error_ratio = 0.5);
    let pending = w.wait_for_state("HighErrorRate", "pending", Duration::from_secs(15));
    s.prom.stop();
    let w = &s.watcher;
    wait_evaluations(w, "HighErrorRate", "error", 3.0);
    // Evaluated past its 10 s `for` (pending + 14 s) with Prometheus down,
    // pending all along.
    w.wait_evaluated_at("HighErrorRate", pending + Duration::from_secs(14), |r| {
        assert_eq!(
            r["state"],
            "pending",
            "held while Prometheus is down: {r}\n{}",
            w.dump()
        );
    });
    assert_eq!(
        w.metric("rollbackd_rule_state", &[("rule", "HighErrorRate")]),
        Some(1.0)
    );
    assert!(
        w.metric("rollbackd_prometheus_errors_total", &[("kind", "connect")])
            .unwrap()
            >= 3.0
    );
    assert!(
        w.logs_with("rule fired").is_empty(),
        "never fires while Prometheus is down"
    );
    let (status, _) = support::http_get(&format!("{}/healthz", w.url())).unwrap();
    assert_eq!(status, 200, "rollbackd itself stays live");

    let ok_before = evaluations(w, "HighErrorRate", "ok");
    s.prom.restart();
    let w = &s.watcher;
    wait_evaluations(w, "HighErrorRate", "ok", ok_before + 2.0);
    // The breach is still there once Prometheus is back, so the rule fires.
    w.wait_for_state("HighErrorRate", "firing", Duration::from_secs(15));
}

#[test]
fn the_traffic_guard_blocks_a_ratio_rule_at_low_traffic() {
    let guard = format!("        min_traffic:\n          expr: '{TRAFFIC}'\n          above: 10\n");
    let s = scenario(
        |k| {
            k.rps = 2.0;
            k.error_ratio = 0.5;
        },
        &group(&[ratio_rule("Guarded", &guard)]),
        "",
    );
    let w = &s.watcher;
    wait_evaluations(w, "Guarded", "low_traffic", 4.0);
    assert!(w.transitions("Guarded").is_empty(), "{}", w.dump());
    assert!(
        w.metric("rollbackd_rule_value", &[("rule", "Guarded")])
            .unwrap()
            > 0.1
    );
    s.fake.set(|k| k.rps = 50.0);
    w.wait_for_state("Guarded", "firing", Duration::from_secs(15));
}

#[test]
fn a_broken_rule_file_on_sighup_keeps_the_previous_rules() {
    let a = ratio_rule("A", "        for: 10m\n");
    let s = scenario(
        |k| k.error_ratio = 0.5,
        &group(std::slice::from_ref(&a)),
        "reload_interval = \"0s\"\n",
    );
    let w = &s.watcher;
    w.wait_for_state("A", "pending", Duration::from_secs(15));
    let file = w.dir.join("rules/test.yml");

    std::fs::write(
        &file,
        "groups:\n  - name: http\n    rules:\n      - name: A\n        expr: sum(rate(x[1m])\n",
    )
    .unwrap();
    w.sighup();
    wait_for("the failed reload", Duration::from_secs(10), || {
        (w.metric("rollbackd_rule_reloads_total", &[("result", "failure")]) == Some(1.0))
            .then_some(())
    });
    let failure = w.wait_for_log(
        "error loading rules; the previous rule set keeps running",
        Duration::from_secs(5),
    );
    let why = failure["error"].as_str().unwrap();
    assert!(
        why.contains("test.yml") && why.contains("rule \"A\"") && why.contains("PromQL"),
        "{why}"
    );
    assert_eq!(
        w.metric("rollbackd_rules_last_reload_successful", &[]),
        Some(0.0)
    );
    let before = evaluations(w, "A", "ok");
    wait_evaluations(w, "A", "ok", before + 2.0);
    assert_eq!(
        w.metric("rollbackd_rule_state", &[("rule", "A")]),
        Some(1.0)
    );

    // A good file with A unchanged and a new rule B: A keeps its pending state.
    std::fs::write(&file, group(&[a.clone(), ratio_rule("B", "")])).unwrap();
    w.sighup();
    wait_for("rule B", Duration::from_secs(10), || {
        w.metric("rollbackd_rule_state", &[("rule", "B")])
    });
    assert_eq!(
        w.metric("rollbackd_rules_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(
        w.metric("rollbackd_rule_state", &[("rule", "A")]),
        Some(1.0)
    );
    assert_eq!(w.transitions("A").len(), 1, "A was not reset: {}", w.dump());

    // Removing B removes its series.
    std::fs::write(&file, group(&[a])).unwrap();
    w.sighup();
    wait_for("rule B to disappear", Duration::from_secs(10), || {
        w.metric("rollbackd_rule_state", &[("rule", "B")])
            .is_none()
            .then_some(())
    });
    assert!(!w.metrics().contains("rule=\"B\""));
}

#[test]
fn a_changed_rule_file_is_picked_up_without_a_signal() {
    let s = scenario(
        |_| {},
        &group(&[ratio_rule("A", "")]),
        "reload_interval = \"1s\"\n",
    );
    let w = &s.watcher;
    wait_evaluations(w, "A", "ok", 1.0);
    std::fs::write(
        w.dir.join("rules/more.yml"),
        "groups:\n  - name: db\n    interval: 1s\n    rules:\n      - name: PoolExhausted\n        \
         expr: sum(db_pool_connections_available{service=\"{{service}}\"}) / sum(db_pool_connections_max{service=\"{{service}}\"})\n        below: 0.95\n",
    )
    .unwrap();
    w.wait_for_state("PoolExhausted", "firing", Duration::from_secs(15));
    assert_eq!(
        w.metric("rollbackd_rule_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
}

#[test]
fn queries_asked_together_each_get_their_own_answer() {
    // One group whose queries all fit one combined request: a vector with a
    // traffic guard, a scalar, an empty result. A second group holds a query
    // that fails when Prometheus runs it, next to one that works.
    let guard = format!("        min_traffic:\n          expr: '{TRAFFIC}'\n          above: 1\n");
    let rules = format!(
        "groups:\n  - name: together\n    interval: 1s\n    rules:\n{}{}{}\
         \x20 - name: broken\n    interval: 1s\n    rules:\n{}{}",
        ratio_rule("Ratio", &guard),
        "      - name: Scalar\n        expr: scalar(sum(up))\n        below: 0.5\n",
        "      - name: Empty\n        expr: sum(no_such_metric_total)\n        above: 1\n",
        "      - name: Fails\n        expr: sum by (code) (http_requests_total) / on() group_left sum by (code) (http_requests_total)\n        above: 1\n",
        ratio_rule("Works", ""),
    );
    let s = scenario(|k| k.error_ratio = 0.5, &rules, "");
    let w = &s.watcher;
    for (rule, outcome) in [
        ("Ratio", "ok"),
        ("Scalar", "ok"),
        ("Empty", "empty"),
        ("Fails", "error"),
        ("Works", "ok"),
    ] {
        wait_evaluations(w, rule, outcome, 3.0);
    }
    let value = |rule: &str| {
        w.metric("rollbackd_rule_value", &[("rule", rule)])
            .unwrap_or(f64::NAN)
    };
    assert!(
        (0.3..=0.7).contains(&value("Ratio")),
        "Ratio {}",
        value("Ratio")
    );
    assert_eq!(value("Scalar"), 1.0, "one scrape target is up");
    assert!((0.3..=0.7).contains(&value("Works")), "{}", w.dump());
    assert_eq!(evaluations(w, "Ratio", "error"), 0.0);
    assert_eq!(evaluations(w, "Works", "error"), 0.0);
    assert_eq!(evaluations(w, "Fails", "ok"), 0.0);
    assert!(
        w.metric(
            "rollbackd_prometheus_errors_total",
            &[("kind", "execution")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    // The working group went out as combined requests. The broken group's
    // first combined request fell back to single queries; the expression that
    // failed alone has been asked alone ever since, so that happened once.
    assert!(
        w.metric(
            "rollbackd_prometheus_requests_total",
            &[("kind", "combined")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    assert_eq!(
        w.metric("rollbackd_prometheus_combined_fallbacks_total", &[]),
        Some(1.0),
        "{}",
        w.dump()
    );
}

/// The semantic anchor: the same expression loaded into Prometheus as an
/// alerting rule. Over a scripted scenario, rollbackd's pending/firing
/// transitions must match Prometheus's own `ALERTS` series, in order, each
/// within one evaluation interval (1 s) plus a little slack for scheduling.
#[test]
fn every_request_to_prometheus_carries_the_configured_headers() {
    // A multi-tenant store (Mimir, Cortex) wants its tenant on every
    // request; the proxy records what reaches it.
    let fake = FakeService::start();
    let prom = Prometheus::start(&[fake.addr], None);
    prom.wait_for_scrape("app_deployment_info");
    let proxy = support::proxy::RecordingProxy::start(&prom.url());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/test.yml"),
        group(&[ratio_rule("HighErrorRate", "        for: 2s\n")]),
    )
    .unwrap();
    let key = "k-5ecret-value";
    let env = [("API_KEY_FOR_TENANT_TEST", key)];
    let w = Watcher::start_with_env(
        dir.path(),
        &format!(
            "[prometheus]\nurl = \"{}\"\ntimeout = \"2s\"\n\
             headers = {{ \"X-Scope-OrgID\" = \"team-a\", \"X-Api-Key\" = {{ env = \"API_KEY_FOR_TENANT_TEST\" }} }}\n\n\
             [service]\nname = \"demo\"\n\n[watch]\nevaluation_interval = \"1s\"\nrule_paths = [\"rules\"]\n",
            proxy.url()
        ),
        &env,
    );
    wait_evaluations(&w, "HighErrorRate", "ok", 3.0);
    // The back-test asks the range API through the same client.
    let (code, out, err) = support::run_rollbackd(
        dir.path(),
        &[
            "--config",
            "rollbackd.toml",
            "rules",
            "backtest",
            "--last",
            "1m",
            "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let seen = proxy.seen();
    for path in ["/api/v1/query", "/api/v1/query_range", "/api/v1/targets"] {
        assert!(
            seen.iter().any(|(p, _)| p == path),
            "no request to {path}: {:?}",
            seen.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
    }
    for (path, headers) in &seen {
        assert_eq!(
            (
                headers.get("x-scope-orgid").map(String::as_str),
                headers.get("x-api-key").map(String::as_str)
            ),
            (Some("team-a"), Some(key)),
            "{path}: {headers:?}"
        );
    }
    // The value read from the environment is never logged.
    assert!(!w.dump().contains(key), "{}", w.dump());
    assert!(!err.contains(key), "{err}");
}

/// A real Prometheus serving only TLS and requiring a client certificate
/// from `certs`' CA (its own `--web.config.file`); stopped when dropped.
struct TlsPrometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// bcrypt (cost 4) of "s3cret", for Prometheus's `basic_auth_users`.
const BCRYPT_S3CRET: &str = "$2b$04$OI/9G5dus59wO48BA2Pcr.oqtIVM4NRmmfsZY/DyuhqJ6iL/SrOk.";

fn tls_prometheus(certs: &std::path::Path, target: std::net::SocketAddr) -> TlsPrometheus {
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| certs.join(f).display().to_string();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: service\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n\
             basic_auth_users:\n  rollbackd: '{BCRYPT_S3CRET}'\n",
            path("good-server.pem"),
            path("good-server.key"),
            path("good-ca.pem")
        ),
    )
    .unwrap();
    let port = support::free_port();
    let child = std::process::Command::new(support::require_binary("prometheus"))
        .current_dir(dir.path())
        .args([
            "--config.file=prometheus.yml",
            "--web.config.file=web.yml",
            "--storage.tsdb.path=data",
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    wait_for("Prometheus to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    TlsPrometheus {
        child,
        port,
        _dir: dir,
    }
}

#[test]
fn a_prometheus_behind_tls_with_a_private_ca_and_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    support::tls::certificates(certs.path(), "good", &["server", "client"]);
    support::tls::certificates(certs.path(), "other", &[]);
    let fake = FakeService::start();
    let prom = tls_prometheus(certs.path(), fake.addr);
    let cert = |f: &str| certs.path().join(f).display().to_string();
    // 10 s: a TLS handshake and a query on a busy machine; every refusal
    // below comes back at once anyway.
    let config = |tls: &str| {
        format!(
            "[prometheus]\nurl = \"https://127.0.0.1:{}\"\ntimeout = \"10s\"\n\
             basic_auth = {{ username = \"rollbackd\", password = \"s3cret\" }}\n\n[prometheus.tls]\n{tls}\n\
             [service]\nname = \"demo\"\n\n[watch]\nevaluation_interval = \"1s\"\nrule_paths = [\"rules\"]\n\
             align_to_scrapes = false\n",
            prom.port
        )
    };
    let rules = group(&[ratio_rule("HighErrorRate", "        for: 2s\n")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/test.yml"), &rules).unwrap();
    let trusted = format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert("good-ca.pem"),
        cert("good-client.pem"),
        cert("good-client.key")
    );
    // The CA file first holds another CA: every evaluation fails. Once it
    // holds the CA that signed Prometheus's certificate, it is read again
    // (as Prometheus's own tls_config is) and the rule evaluates, with no
    // restart.
    let rotating = dir.path().join("ca.pem");
    std::fs::copy(certs.path().join("other-ca.pem"), &rotating).unwrap();
    let w = Watcher::start(
        dir.path(),
        &config(&format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            rotating.display(),
            cert("good-client.pem"),
            cert("good-client.key")
        )),
    );
    wait_evaluations(&w, "HighErrorRate", "error", 1.0);
    assert_eq!(evaluations(&w, "HighErrorRate", "ok"), 0.0);
    let staged = dir.path().join("ca.pem.new");
    std::fs::copy(certs.path().join("good-ca.pem"), &staged).unwrap();
    std::fs::rename(&staged, &rotating).unwrap();
    wait_evaluations(&w, "HighErrorRate", "ok", 2.0);
    drop(w);

    // `rules eval` asks once: each wrong setting fails, saying so.
    let eval = |tls: &str| {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rules")).unwrap();
        std::fs::write(d.path().join("rules/test.yml"), &rules).unwrap();
        std::fs::write(d.path().join("rollbackd.toml"), config(tls)).unwrap();
        let (code, out, err) = support::run_rollbackd(
            d.path(),
            &["--config", "rollbackd.toml", "rules", "eval"],
            &[],
        );
        (code, format!("{out}{err}"))
    };
    let (code, text) = eval(&trusted);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(" ok "), "{text}");
    // Another CA: Prometheus's certificate is not trusted, and the message
    // says which key to set.
    let (_, text) = eval(&format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert("other-ca.pem"),
        cert("good-client.pem"),
        cert("good-client.key")
    ));
    assert!(
        text.contains("certificate is not trusted: set prometheus.tls.ca_file"),
        "{text}"
    );
    // `check` asks Prometheus too: an untrusted certificate fails it.
    let check = |tls: &str| {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rules")).unwrap();
        std::fs::write(d.path().join("rules/test.yml"), &rules).unwrap();
        std::fs::write(d.path().join("rollbackd.toml"), config(tls)).unwrap();
        let (code, out, err) =
            support::run_rollbackd(d.path(), &["--config", "rollbackd.toml", "check"], &[]);
        (code, format!("{out}{err}"))
    };
    let (code, text) = check(&format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert("other-ca.pem"),
        cert("good-client.pem"),
        cert("good-client.key")
    ));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("set prometheus.tls.ca_file"), "{text}");
    let (code, text) = check(&trusted);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("answers (TLS with a client certificate; basic auth)"),
        "{text}"
    );
    // No client certificate: Prometheus refuses the connection.
    let (_, text) = eval(&format!("ca_file = \"{}\"\n", cert("good-ca.pem")));
    assert!(
        text.contains(
            "Prometheus wants a client certificate (client_auth_type): set prometheus.tls.cert_file"
        ),
        "{text}"
    );
    // server_name: the name the certificate must carry when the URL's host
    // is not on it. Prometheus's certificate names localhost.
    let (code, text) = eval(&format!("{trusted}server_name = \"localhost\"\n"));
    assert_eq!(code, 0, "{text}");
    let (_, text) = eval(&format!(
        "{trusted}server_name = \"prometheus.elsewhere\"\n"
    ));
    assert!(
        text.contains("certificate does not name the host"),
        "{text}"
    );
    // The basic-auth password Prometheus's web config checks.
    let wrong_password = {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rules")).unwrap();
        std::fs::write(d.path().join("rules/test.yml"), &rules).unwrap();
        std::fs::write(
            d.path().join("rollbackd.toml"),
            config(&trusted).replace("\"s3cret\"", "\"wrong\""),
        )
        .unwrap();
        let (_, out, err) = support::run_rollbackd(
            d.path(),
            &["--config", "rollbackd.toml", "rules", "eval"],
            &[],
        );
        format!("{out}{err}")
    };
    assert!(
        wrong_password.contains("refused rollbackd's credentials"),
        "{wrong_password}"
    );
    // A CA file that is not there is named by `check`, before anything runs.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("rules")).unwrap();
    std::fs::write(d.path().join("rules/test.yml"), &rules).unwrap();
    std::fs::write(
        d.path().join("rollbackd.toml"),
        config("ca_file = \"/nonexistent/ca.pem\"\n"),
    )
    .unwrap();
    let (code, out, err) = support::run_rollbackd(
        d.path(),
        &["--config", "rollbackd.toml", "check", "--offline"],
        &[],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("prometheus.tls.ca_file /nonexistent/ca.pem"),
        "{out}{err}"
    );
}
