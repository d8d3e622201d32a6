//! The on-call engineer's commands against the fake Railway API, the fake
//! service, and an operator-supplied command provider.

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::fake_railway::{deployment, FakeRailway};
use support::{run_rollbackd, FakeService};

/// A directory with rollbackd.toml pointing at `railway` and `service`.
fn dir(railway: &FakeRailway, service: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!(
            "[service]\nbase_url = \"{service}\"\n\n{}\n[engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n{extra}",
            railway.provider_toml()
        ),
    )
    .unwrap();
    dir
}

fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    run_rollbackd(dir, args, &[])
}

#[test]
fn rollback_dry_run_prints_the_plan_and_changes_nothing() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = dir(&railway, &service.url(), "");
    let (code, out, err) = cli(d.path(), &["rollback", "--dry-run", "--reason", "checking"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("live now:     d3 (SUCCESS, d3-sha"), "{out}");
    assert!(out.contains("roll back to: d2 (REMOVED, d2-sha"), "{out}");
    assert!(
        out.contains("database:     skipped: no database is configured"),
        "{out}"
    );
    assert!(out.contains("quick: /, /health (all must pass)"), "{out}");
    assert!(
        out.contains(
            "external: /health/external-services [components at /services], /health/circuit-breakers (80 % of components must pass)"
        ),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"));
    assert!(railway.rollbacks().is_empty());
    assert!(!d.path().join("state/history.json").exists());
    let (code, out, _) = cli(d.path(), &["rollback", "--dry-run", "--skip-db"]);
    assert_eq!(code, 0);
    assert!(out.contains("database:     skipped: --skip-db"), "{out}");
}

#[test]
fn rollback_runs_all_five_phases_and_prints_the_timeline() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = dir(&railway, &service.url(), "");
    let (code, _, err) = cli(d.path(), &["rollback"]);
    assert_eq!(code, 2, "no --yes and no terminal: refuse");
    assert!(err.contains("pass --yes"), "{err}");
    assert!(railway.rollbacks().is_empty());

    let (code, out, err) = cli(
        d.path(),
        &["rollback", "--yes", "--reason", "bad deploy d3"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(railway.rollbacks(), ["d2"]);
    for line in [
        "pre_validation succeeded",
        "database skipped",
        "application succeeded",
        "verification succeeded",
        "post_rollback succeeded",
        "health quick: 2/2 endpoints healthy",
        "health external: 4/4 components healthy",
        "the service is verified healthy",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    assert!(
        out.contains("PHASE") && out.contains("SECONDS"),
        "a timeline table: {out}"
    );
    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    let e = &history["events"][0];
    assert_eq!(
        (e["trigger"].as_str(), e["reason"].as_str()),
        (Some("manual"), Some("bad deploy d3"))
    );
    assert_eq!(history["last_known_good"]["deployment_id"], "d2");
    // Once recorded as policy "auto", as if a rule had decided it.
    assert_eq!(e["policy"], "manual", "{e}");

    let (code, out, _) = cli(d.path(), &["breaker", "status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("OPEN"), "{out}");
}

#[test]
fn bad_targets_are_refused_with_how_to_list_candidates() {
    let railway = FakeRailway::start_with(vec![
        deployment("d4", "SUCCESS", 2),
        deployment("d3", "FAILED", 30),
        deployment("d2", "REMOVED", 60),
        deployment("d0", "REMOVED", 20 * 24 * 60),
    ]);
    let service = FakeService::start();
    let d = dir(&railway, &service.url(), "");
    for (id, needle) in [
        ("nope", "deployment nope does not exist"),
        ("d4", "is the one running now"),
        ("d3", "has status FAILED"),
        ("d0", "past the provider's retention of 2w"),
    ] {
        let (code, _, err) = cli(d.path(), &["rollback", "--dry-run", "--deployment-id", id]);
        assert_eq!(code, 1, "{id}: {err}");
        assert!(err.contains(needle), "{id}: {err}");
        assert!(err.contains("rollbackd deployments list"), "{id}: {err}");
    }
    let (code, out, _) = cli(
        d.path(),
        &["rollback", "--dry-run", "--deployment-id", "d2"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(railway.rollbacks().is_empty());
}

#[test]
fn deployments_list_previous_and_status() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = dir(&railway, &service.url(), "");
    let (code, out, err) = cli(d.path(), &["deployments", "list", "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "header and two deployments:\n{out}");
    assert!(
        lines[1].starts_with("d3") && lines[1].contains("SUCCESS") && lines[1].contains("main")
    );
    let (code, out, _) = cli(d.path(), &["deployments", "list", "--json"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(list[0]["git_sha"], "d3-sha");
    let (code, out, _) = cli(d.path(), &["deployments", "previous"]);
    assert_eq!(code, 0);
    assert!(out.lines().nth(2).unwrap().starts_with("d2"), "{out}");
    let (code, out, _) = cli(
        d.path(),
        &["deployments", "status", "--deployment-id", "d1", "--json"],
    );
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["status"],
        "REMOVED"
    );
    let (code, _, err) = cli(
        d.path(),
        &["deployments", "status", "--deployment-id", "zz"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("zz does not exist"), "{err}");
    let (code, _, err) = cli(d.path(), &["deployments", "list", "--limit", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--limit"), "{err}");
    let (code, _, err) = cli(d.path(), &["deployments", "status"]);
    assert_eq!(code, 2, "--deployment-id is required: {err}");
}

#[test]
fn railway_errors_are_retried_then_reported_clearly() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = dir(&railway, &service.url(), "");
    railway.set(|k| k.fail_next = 2);
    let (code, _, err) = cli(d.path(), &["deployments", "list"]);
    assert_eq!(code, 0, "two 500s are retried: {err}");
    railway.set(|k| k.fail_next = 10);
    let (code, _, err) = cli(d.path(), &["deployments", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("Railway answered HTTP 500"), "{err}");
    railway.set(|k| k.fail_next = 0);

    railway.set(|k| k.delay = Duration::from_secs(3));
    let (code, _, err) = cli(d.path(), &["deployments", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("did not answer within 2s"), "{err}");
    railway.set(|k| k.delay = Duration::ZERO);

    let bad_token = d.path().join("bad.toml");
    let text = std::fs::read_to_string(d.path().join("rollbackd.toml")).unwrap();
    std::fs::write(
        &bad_token,
        text.replace(support::fake_railway::TOKEN, "stolen"),
    )
    .unwrap();
    let (code, _, err) = cli(d.path(), &["--config", "bad.toml", "deployments", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("Railway refused: Not Authorized"), "{err}");
    assert!(!err.contains("stolen"), "tokens are never printed: {err}");

    // A rollback the platform refuses: recorded as failed, breaker open, nothing lost.
    railway.set(|k| k.refuse_rollback = true);
    let (code, out, err) = cli(d.path(), &["rollback", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("application: the platform refused the rollback"),
        "{err}"
    );
    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(history["events"][0]["success"], false);
    let (code, _, _) = cli(d.path(), &["breaker", "status"]);
    assert_eq!(code, 1, "the breaker stays OPEN");
}

#[test]
fn a_missing_or_incomplete_provider_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = cli(d.path(), &["deployments", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("no [provider] is configured"), "{err}");
    std::fs::write(
        d.path().join("rollbackd.toml"),
        "[provider]\ntype = \"railway\"\nproject_id = \"p\"\n",
    )
    .unwrap();
    let (code, _, err) = run_rollbackd(
        d.path(),
        &["deployments", "list"],
        &[
            ("RAILWAY_TOKEN", ""),
            ("RAILWAY_API_TOKEN", ""),
            ("RAILWAY_SERVICE_ID", ""),
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("RAILWAY_TOKEN"), "{err}");
    std::fs::write(
        d.path().join("rollbackd.toml"),
        "[provider]\ntype = \"heroku\"\n",
    )
    .unwrap();
    let (code, _, err) = cli(d.path(), &["check"]);
    assert_eq!(code, 2);
    assert!(err.contains("heroku") && err.contains("railway"), "{err}");
    std::fs::write(d.path().join("rollbackd.toml"), "[provider]\ntype = \"command\"\nlist = []\nstatus = [\"x\"]\nrollback = [\"x\"]\nbogus = 1\n").unwrap();
    let (code, _, err) = cli(d.path(), &["check"]);
    assert_eq!(code, 2);
    assert!(err.contains("bogus"), "{err}");
    std::fs::write(
        d.path().join("rollbackd.toml"),
        "[provider]\ntype = \"command\"\nlist = []\nstatus = [\"x\"]\nrollback = [\"x\"]\n",
    )
    .unwrap();
    let (code, _, err) = cli(d.path(), &["check"]);
    assert_eq!(code, 2);
    assert!(err.contains("provider.list"), "{err}");
    std::fs::write(
        d.path().join("rollbackd.toml"),
        "[[verify.phases]]\nname = \"x\"\nendpoints = [\"health\"]\nmin_healthy = 2\n",
    )
    .unwrap();
    let (code, _, err) = cli(d.path(), &["check"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("must be a path starting with /") && err.contains("min_healthy"),
        "{err}"
    );
}

#[test]
fn validate_prints_a_table_and_exits_to_match() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = dir(&railway, &service.url(), "");
    let (code, out, err) = cli(
        d.path(),
        &["validate", "--base-url", &service.url(), "--wait", "0"],
    );
    assert_eq!(code, 0, "{out}{err}");
    for endpoint in [
        "/health/production",
        "/health/critical-services",
        "/health/performance",
        "/health/comprehensive",
        "/health/external-services",
        "/health/circuit-breakers",
    ] {
        assert!(out.contains(endpoint), "{endpoint} missing:\n{out}");
    }
    assert!(out.contains("PASSED"), "{out}");

    // The external services cannot be listed: the answer counts once, and
    // 1 of 2 is under the 80 % the phase needs.
    service.set(|k| {
        k.health_overrides
            .insert("/health/external-services".into(), 503);
    });
    let (code, out, _) = cli(d.path(), &["validate"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED (HTTP 503)") && out.contains("external     1/2 components healthy"),
        "{out}"
    );
    assert!(out.contains("phase external did not pass"), "{out}");
    let (code, out, _) = cli(d.path(), &["validate", "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["passed"], false);
    assert_eq!(v["phases"].as_array().unwrap().len(), 4);
    // Each phase once; --retry-for retries the failing one.
    assert_eq!(v["phases"][3]["attempts"], 1, "{v}");
    let (code, out, _) = cli(d.path(), &["validate", "--json", "--retry-for", "1s"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["phases"][3]["attempts"].as_u64().unwrap() >= 2, "{v}");

    // A core check down fails the critical phase, and later phases never run.
    service.set(|k| {
        k.health_overrides.clear();
        k.health_overrides
            .insert("/health/critical-services".into(), 500);
    });
    let (code, out, _) = cli(d.path(), &["validate"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("core         1/2 endpoints healthy") && !out.contains("/health/performance"),
        "{out}"
    );

    // Slow checks (over check_timeout) fail.
    service.set(|k| {
        k.health_overrides.clear();
        k.health_delay_ms = 1500;
    });
    let (code, out, _) = cli(d.path(), &["validate"]);
    assert_eq!(code, 1);
    assert!(out.contains("no answer within 1s"), "{out}");

    let (code, _, err) = cli(d.path(), &["validate", "--base-url", "localhost:8000"]);
    assert_eq!(code, 2);
    assert!(err.contains("not an http(s) URL"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = cli(empty.path(), &["validate"]);
    assert_eq!(code, 2);
    assert!(err.contains("--base-url"), "{err}");
    let (code, _, err) = cli(d.path(), &["validate", "--retry-for", "soon"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a duration"), "{err}");
}

/// The seed's criteria, as the shipped `[verify]` reads them from the
/// bodies: 80 % of the external services, no component over 5 s, exactly
/// 200 from the critical checks.
#[test]
fn validate_reads_components_from_the_health_bodies() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = dir(&railway, &service.url(), "");
    let external = |down: &[&str]| {
        let services: serde_json::Map<String, Value> = ["openai", "sendgrid", "firebase"]
            .iter()
            .map(|s| {
                let status = if down.contains(s) { "down" } else { "healthy" };
                (s.to_string(), serde_json::json!({ "status": status }))
            })
            .collect();
        serde_json::json!({ "status": "degraded", "services": services })
    };
    let body = |path: &str, value: Value| {
        service.set(|k| {
            k.health_bodies.clear();
            k.health_bodies.insert(path.into(), value.clone());
        })
    };

    body("/health/external-services", external(&["sendgrid"]));
    let (code, out, err) = cli(d.path(), &["validate"]);
    assert_eq!(
        code, 0,
        "one of three services down is tolerated:\n{out}{err}"
    );
    assert!(out.contains("  - sendgrid"), "{out}");
    assert!(out.contains("FAILED (status down)"), "{out}");
    assert!(
        out.contains("external     3/4 components healthy (needs 3: 80 %)"),
        "{out}"
    );

    body(
        "/health/external-services",
        external(&["sendgrid", "openai"]),
    );
    let (code, out, _) = cli(d.path(), &["validate", "--json"]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let phase = &v["phases"][3];
    assert_eq!(
        (phase["healthy"].as_u64(), phase["total"].as_u64()),
        (Some(2), Some(4))
    );
    let components = phase["checks"][0]["components"].as_array().unwrap();
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["firebase", "openai", "sendgrid"]);
    assert_eq!(components[1]["status"], "down");

    body(
        "/health/performance",
        serde_json::json!({"components": {"database": {"status": "healthy", "response_time_ms": 6000}}}),
    );
    let (code, out, _) = cli(d.path(), &["validate"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("database: 6000 ms, over 5s (body.max_latency)"),
        "{out}"
    );

    body(
        "/health/performance",
        Value::String("<html>502 Bad Gateway</html>".into()),
    );
    let (code, out, _) = cli(d.path(), &["validate"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the body is not JSON"), "{out}");

    service.set(|k| {
        k.health_bodies.clear();
        k.health_overrides
            .insert("/health/critical-services".into(), 201);
    });
    let (code, out, _) = cli(d.path(), &["validate"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED (HTTP 201, expected 200 (expect_status))"),
        "{out}"
    );
}

#[test]
fn a_corrupt_history_stops_rollbackd_and_is_never_overwritten() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = dir(&railway, &service.url(), "");
    std::fs::create_dir_all(d.path().join("state")).unwrap();
    let corrupt = "{\"events\": [{\"type\": \"rollback\",";
    std::fs::write(d.path().join("state/history.json"), corrupt).unwrap();
    let (code, _, err) = cli(d.path(), &["history"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("history.json is not valid") && err.contains("will not overwrite"),
        "{err}"
    );
    std::fs::create_dir_all(d.path().join("rules")).unwrap();
    std::fs::write(d.path().join("rules/empty.yml"), "groups: []\n").unwrap();
    let (code, _, err) = run_rollbackd(
        d.path(),
        &["watch"],
        &[(
            "ROLLBACKD_SERVER__LISTEN",
            &format!("127.0.0.1:{}", support::free_port()),
        )],
    );
    assert_eq!(code, 1, "watch refuses to start");
    assert!(err.contains("history.json is not valid"), "{err}");
    let (code, _, err) = cli(d.path(), &["rollback", "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        railway.rollbacks().is_empty(),
        "no rollback without a readable history"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("state/history.json")).unwrap(),
        corrupt
    );
}

/// The command provider: an operator's script, values passed as environment
/// variables (so a hostile id is never run as shell).
#[test]
fn the_command_provider_runs_operator_commands_with_values_in_the_environment() {
    let service = FakeService::start();
    let d = tempfile::tempdir().unwrap();
    let script = d.path().join("deploys.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
set -eu
case "$1" in
  list) cat <<'JSON'
[{"id": "v3", "status": "success", "created_at": "2030-01-01T00:10:00Z", "git_sha": "ccc"},
 {"id": "v2", "status": "SUCCESS", "created_at": "2030-01-01T00:05:00Z", "git_sha": "bbb"},
 {"id": "v1", "status": "FAILED", "created_at": "2030-01-01T00:00:00Z"}]
JSON
  ;;
  status)
    if [ "$ROLLBACKD_DEPLOYMENT_ID" = "v2" ]; then echo '{"id": "v2", "status": "SUCCESS", "created_at": "2030-01-01T00:05:00Z"}'; else echo null; fi ;;
  rollback)
    printf '%s' "$ROLLBACKD_DEPLOYMENT_ID" > "$(dirname "$0")/rolled-back-to"
    echo '{"deployment_id": "v2"}' ;;
  broken) echo 'not json' ;;
  fail) echo 'helm: release not found' >&2; exit 3 ;;
esac
"#,
    )
    .unwrap();
    support::make_executable(&script);
    let s = script.display();
    let config = |list: &str| {
        format!(
            "[service]\nbase_url = \"{}\"\n[provider]\ntype = \"command\"\nlist = [\"{s}\", \"{list}\"]\n\
             status = [\"{s}\", \"status\"]\nrollback = [\"{s}\", \"rollback\"]\n\
             [engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\nmax_deploy_age = \"1000w\"\n\
             [verify]\ninitial_wait = \"0s\"\n",
            service.url()
        )
    };
    std::fs::write(d.path().join("rollbackd.toml"), config("list")).unwrap();
    let (code, out, err) = cli(d.path(), &["deployments", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("v3") && out.contains("SUCCESS") && out.contains("ccc"),
        "{out}"
    );
    let (code, _, err) = cli(
        d.path(),
        &["rollback", "--dry-run", "--deployment-id", "$(touch pwned)"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!d.path().join("pwned").exists());
    let (code, out, err) = cli(d.path(), &["rollback", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(d.path().join("rolled-back-to")).unwrap(),
        "v2"
    );

    std::fs::write(d.path().join("rollbackd.toml"), config("broken")).unwrap();
    let (code, _, err) = cli(d.path(), &["deployments", "list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot understand the list command's answer")
            && err.contains("JSON contract"),
        "{err}"
    );
    std::fs::write(d.path().join("rollbackd.toml"), config("fail")).unwrap();
    let (code, _, err) = cli(d.path(), &["deployments", "list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("exited with exit status: 3") && err.contains("helm: release not found"),
        "{err}"
    );
}
