//! Blame end to end: a real Prometheus scraping a service whose errors come
//! from the deployed version (a bad deploy) or from a dependency (every
//! version), the fake Railway, and the real rollbackd binary. Each scenario
//! asserts what the platform received: a rollback, none, or a cancel.
//!
//! Every scenario waits for rollbackd's own "blame judged" log line (with a
//! deadline), then checks the platform: the judgement comes before any
//! platform call, so a wrong call would already show.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::fake_hooks::FakeHooks;
use support::fake_railway::{deployment, FakeRailway};
use support::fake_service::OldVersion;
use support::{wait_for, FakeService, Knobs, Prometheus, Watcher};

const RATIO: &str = r#"(sum(rate(http_requests_total{code="500"}[5s])) or vector(0)) / sum(rate(http_requests_total[5s]))"#;

struct Scenario {
    service: Arc<FakeService>,
    railway: FakeRailway,
    prom: Prometheus,
    hooks: FakeHooks,
    dir: tempfile::TempDir,
    watcher: Option<Watcher>,
}

impl Scenario {
    /// The service as `knobs` say, scraped every second until Prometheus
    /// holds 8 s of it (the baseline); d1 live on the fake Railway.
    fn start(knobs: impl FnOnce(&mut Knobs)) -> Scenario {
        let mut initial = Knobs::default();
        knobs(&mut initial);
        let service = Arc::new(FakeService::start_with(initial));
        let railway = FakeRailway::start_with(vec![deployment("d1", "SUCCESS", 60)]);
        let healed = service.clone();
        // The rollback brings the good version back: its own errors stop.
        railway.on_success(move |_| healed.set(|k| k.error_ratio = 0.0));
        let prom = Prometheus::start(&[service.addr], None);
        wait_for("8 s of scrapes", Duration::from_secs(30), || {
            let r = prom.query("count_over_time(up[1m])");
            let n: f64 = r[0]["value"][1].as_str()?.parse().ok()?;
            (n >= 8.0).then_some(())
        });
        Scenario {
            service,
            railway,
            prom,
            hooks: FakeHooks::start(),
            dir: tempfile::tempdir().unwrap(),
            watcher: None,
        }
    }

    /// d2 goes live with the service's new knobs.
    fn deploy(&self, change: impl FnOnce(&mut Knobs)) {
        self.railway.deploy("d2");
        self.service.set(change);
    }

    /// rollbackd watching `HighErrorRate` (errors above 5 %, `auto`), with
    /// `rule` lines added to the rule and `blame` lines to `[blame]`.
    fn watch(&mut self, rule: &str, blame: &str) -> &Watcher {
        std::fs::create_dir_all(self.dir.path().join("rules")).unwrap();
        std::fs::write(
            self.dir.path().join("rules/http.yml"),
            format!(
                "groups:\n  - name: http\n    interval: 1s\n    rules:\n\
                 \x20     - name: HighErrorRate\n        expr: '{RATIO}'\n        above: 0.05\n\
                 \x20       for: 2s\n        policy: auto\n{rule}"
            ),
        )
        .unwrap();
        let config = format!(
            "[prometheus]\nurl = \"{}\"\ntimeout = \"2s\"\n\n[service]\nname = \"demo\"\nbase_url = \"{}\"\n\n\
             [watch]\nrule_paths = [\"rules\"]\n\n{}\n\
             [blame]\nbaseline = \"1m\"\nbaseline_gap = \"1s\"\nonset_window = \"12s\"\n{blame}\n\n\
             [engine]\nstate_dir = \"state\"\npoll_interval = \"200ms\"\ncoalesce = \"500ms\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"300ms\"\ncheck_timeout = \"1s\"\n\n\
             [[notifiers]]\ntype = \"webhook\"\nurl = \"{}\"\n",
            self.prom.url(),
            self.service.url(),
            self.railway.provider_toml(),
            self.hooks.url("hook"),
        );
        self.watcher = Some(Watcher::start(self.dir.path(), &config));
        self.watcher.as_ref().unwrap()
    }

    fn watcher(&self) -> &Watcher {
        self.watcher.as_ref().expect("rollbackd watches")
    }

    /// The judgement, once made: its verdict, reason and evidence.
    fn judged(&self) -> (String, String, Value) {
        let line = self
            .watcher()
            .wait_for_log("blame judged", Duration::from_secs(60));
        let evidence: Value =
            serde_json::from_str(line["evidence"].as_str().expect("the evidence")).unwrap();
        (
            line["verdict"].as_str().unwrap().to_string(),
            line["reason"].as_str().unwrap().to_string(),
            evidence,
        )
    }

    /// The judgement, once made, which must be `verdict` for `reason`: its evidence.
    fn judged_as(&self, verdict: &str, reason: &str) -> Value {
        let (got_verdict, got_reason, evidence) = self.judged();
        assert_eq!(
            (got_verdict.as_str(), got_reason.as_str()),
            (verdict, reason),
            "{evidence}"
        );
        evidence
    }

    /// Waits for the rollback call (to d1).
    fn rolled_back(&self) {
        wait_for("the rollback call", Duration::from_secs(20), || {
            (!self.railway.rollbacks().is_empty()).then_some(())
        });
        assert_eq!(
            self.railway.rollbacks(),
            ["d1"],
            "{}",
            self.watcher().dump()
        );
    }

    /// Evaluations of the rule so far (one a second).
    fn wait_evaluations(&self, n: f64) {
        wait_for(&format!("{n} evaluations"), Duration::from_secs(60), || {
            let done = self
                .watcher()
                .metric("rollbackd_rule_evaluations_total", &[("outcome", "ok")])
                .unwrap_or(0.0);
            (done >= n).then_some(())
        });
    }
}

#[test]
fn a_bad_deploy_is_to_blame_and_rolled_back() {
    let mut s = Scenario::start(|_| {});
    s.deploy(|k| k.error_ratio = 0.3);
    s.watch("", "");
    let evidence = s.judged_as("to_blame", "worse_than_baseline");
    s.rolled_back();
    let rule = &evidence["rules"][0];
    assert!(
        rule["baseline"]["usable"].as_u64().unwrap() >= 3,
        "{evidence}"
    );
    assert_eq!(rule["baseline"]["breaching"], 0, "{evidence}");
    // The history entry carries the same evidence, shown by `history --show`.
    let entry = wait_for(
        "the rollback's history entry",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(s.dir.path().join("state/history.json")).ok()?;
            let history: Value = serde_json::from_str(&text).ok()?;
            history["events"]
                .as_array()?
                .iter()
                .find(|e| e["type"] == "rollback")
                .cloned()
        },
    );
    assert_eq!(entry["blame"]["verdict"], "to_blame");
    let id = entry["id"].as_str().unwrap();
    let (code, out, err) = support::run_rollbackd(
        s.dir.path(),
        &["--config", "rollbackd.toml", "history", "--show", id],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("to blame (worse_than_baseline)"), "{out}");
    assert!(out.contains("baseline "), "{out}");
}

#[test]
fn a_dependency_outage_well_after_a_good_deploy_is_refused_and_notified() {
    let mut s = Scenario::start(|_| {});
    s.deploy(|k| k.version = "v2".into());
    s.watch("", "");
    // Past the 12 s onset window, a dependency fails every version.
    s.wait_evaluations(16.0);
    s.service.set(|k| k.dependency_error_ratio = 0.3);
    s.judged_as("not_to_blame", "late_onset");
    assert!(s.railway.rollbacks().is_empty());
    let notified = wait_for(
        "the refusal's notification",
        Duration::from_secs(10),
        || {
            s.hooks
                .received("hook")
                .into_iter()
                .find(|n| n["event"] == "rollback_blocked")
        },
    );
    assert_eq!(notified["blame"]["reason"], "late_onset", "{notified}");
    // The API's history shows the refusal with its evidence.
    let recorded = s.watcher().api("/api/v1/rollbacks");
    assert_eq!(recorded[0]["type"], "blocked", "{recorded}");
    assert_eq!(recorded[0]["blame"]["reason"], "late_onset", "{recorded}");
}

#[test]
fn an_inhibitor_that_holds_refuses_even_a_breach_that_looks_like_the_deploy_s() {
    // The database's pool is nearly gone (another service holds it): while
    // that holds, no breach is the deploy's.
    let mut s = Scenario::start(|k| k.pool_available = 1.0);
    s.deploy(|k| k.error_ratio = 0.3);
    s.watch(
        "",
        "[[blame.inhibit]]\nname = \"DbPoolExhausted\"\nexpr = 'db_pool_connections_available{service=\"demo\"} < 5'\n",
    );
    let evidence = s.judged_as("not_to_blame", "inhibited");
    assert_eq!(evidence["inhibitors"][0]["name"], "DbPoolExhausted");
    assert_eq!(evidence["inhibitors"][0]["holds"], true);
    assert!(s.railway.rollbacks().is_empty());
}

#[test]
fn a_dependency_already_failing_before_a_good_deploy_is_refused() {
    let mut s = Scenario::start(|k| k.dependency_error_ratio = 0.3);
    s.deploy(|k| k.version = "v2".into());
    s.watch("", "");
    s.judged_as("not_to_blame", "already_breaching");
    assert!(s.railway.rollbacks().is_empty());
}

#[test]
fn a_bad_deploy_while_a_dependency_fails_a_little_is_to_blame() {
    let mut s = Scenario::start(|k| k.dependency_error_ratio = 0.02);
    s.deploy(|k| k.error_ratio = 0.3);
    s.watch("", "");
    s.judged_as("to_blame", "worse_than_baseline");
    s.rolled_back();
}

#[test]
fn a_slow_bad_deploy_breaching_inside_the_onset_window_is_to_blame() {
    let mut s = Scenario::start(|_| {});
    s.deploy(|k| k.version = "v2".into());
    s.watch("", "");
    // v2 starts failing a few seconds in (a cache warming, a cron job).
    s.wait_evaluations(3.0);
    s.service.set(|k| k.error_ratio = 0.3);
    let evidence = s.judged_as("to_blame", "worse_than_baseline");
    let after = evidence["rules"][0]["onset_after_go_live_seconds"]
        .as_f64()
        .unwrap();
    assert!(after > 1.0 && after < 12.0, "{evidence}");
    s.rolled_back();
}

#[test]
fn very_low_traffic_before_the_deploy_parks_a_confirmation() {
    let mut s = Scenario::start(|k| k.rps = 1.0);
    s.deploy(|k| {
        k.rps = 50.0;
        k.error_ratio = 0.3;
    });
    s.watch(
        "        min_traffic:\n          expr: sum(rate(http_requests_total[5s]))\n          above: 5\n",
        "",
    );
    s.judged_as("inconclusive", "no_baseline");
    let pending = wait_for("the parked confirmation", Duration::from_secs(10), || {
        let list = s.watcher().api("/api/v1/pending");
        (list.as_array()?.len() == 1).then(|| list[0].clone())
    });
    assert_eq!(pending["blame"]["reason"], "no_baseline", "{pending}");
    assert!(s.railway.rollbacks().is_empty());
}

/// Counters per version: rollbackd compares their increase since go-live.
const VERSIONS: &str = "        blame:\n          versions:\n\
    \x20           errors: sum by (version) (http_requests_total{code=\"500\"})\n\
    \x20           requests: sum by (version) (http_requests_total)\n";

/// A rolling update: half the requests still go to v1.
fn rolling(k: &mut Knobs) {
    k.old_version = Some(OldVersion {
        version: "v1".into(),
        share: 0.5,
        error_ratio: 0.0,
        latency: k.latency,
    });
    k.version = "v2".into();
}

/// Request series labelled by version, then a rolling update to v2 (with
/// `change`), watched with the version comparison.
fn rolling_update(change: impl FnOnce(&mut Knobs)) -> Scenario {
    // 200 requests a second: enough for the test within seconds of go-live.
    let mut s = Scenario::start(|k| {
        k.version_label = true;
        k.rps = 200.0;
    });
    s.deploy(|k| {
        rolling(k);
        change(k);
    });
    s.watch(VERSIONS, "");
    s
}

#[test]
fn a_rolling_update_whose_new_version_fails_is_to_blame() {
    let s = rolling_update(|k| k.error_ratio = 0.3);
    let evidence = s.judged_as("to_blame", "new_version_worse");
    let v = &evidence["rules"][0]["versions"];
    assert_eq!(
        (v["old"].as_str(), v["new"].as_str()),
        (Some("v1"), Some("v2")),
        "{evidence}"
    );
    s.rolled_back();
}

#[test]
fn a_rolling_update_where_both_versions_fail_alike_is_refused() {
    // A dependency fails as v2 rolls out: every version's requests.
    let s = rolling_update(|k| k.dependency_error_ratio = 0.3);
    s.judged_as("not_to_blame", "versions_equal");
    assert!(s.railway.rollbacks().is_empty());
}

#[test]
fn a_breach_while_a_newer_deployment_is_deploying_never_rolls_back_the_live_one() {
    let mut s = Scenario::start(|_| {});
    s.deploy(|k| k.version = "v2".into());
    s.watch("", "");
    s.wait_evaluations(2.0);
    // d3 is on its way; its first pods take traffic and fail.
    s.railway.add(deployment("d3", "DEPLOYING", 0));
    s.service.set(|k| k.error_ratio = 0.3);
    let evidence = s.judged_as("not_to_blame", "deploy_in_progress");
    assert_eq!(evidence["in_progress"], "d3", "{evidence}");
    wait_for("the cancel of d3", Duration::from_secs(10), || {
        (!s.railway.cancels().is_empty()).then_some(())
    });
    assert_eq!(s.railway.cancels(), ["d3"]);
    assert!(
        s.railway.rollbacks().is_empty(),
        "d2, live and healthy, stays"
    );
}
