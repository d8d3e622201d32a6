//! Start-up errors in the rollback deployment's logs, end to end through
//! `rollbackd rollback`: Railway's `deploymentLogs` (the fake speaks its
//! GraphQL shape) and the command provider's optional `logs` command, with
//! and without an error line.

use crate::support;

use std::path::Path;

use serde_json::Value;
use support::fake_railway::{log, FakeRailway};
use support::{run_rollbackd, FakeService};

fn railway_dir(railway: &FakeRailway, service: &FakeService) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!(
            "[service]\nbase_url = \"{}\"\n\n{}\n[engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n",
            service.url(),
            railway.provider_toml(),
        ),
    )
    .unwrap();
    dir
}

fn rollback(dir: &Path) -> (i32, String, String) {
    run_rollbackd(dir, &["rollback", "--yes", "--reason", "test"], &[])
}

#[test]
fn railway_deployment_logs_with_an_error_line_fail_the_application_phase() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = railway_dir(&railway, &service);
    railway.set(|k| {
        k.logs = vec![
            // Railway marks stderr as severity "error": uvicorn's INFO lines must not count.
            log("INFO:     Started server process [1]", None),
            log("listening", Some("info")),
            log(
                "cannot reach the cache with password=hunter2",
                Some("error"),
            ),
        ]
    });
    let (code, out, err) = rollback(d.path());
    assert_eq!(code, 1, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains("logged 1 error line(s) as it started (verify.startup_logs): cannot reach the cache with password=***"),
        "{all}"
    );
    assert!(!all.contains("hunter2"), "{all}");
    assert_eq!(
        railway.rollbacks(),
        ["d2"],
        "the rollback itself was made once"
    );

    // The logs asked for are the new deployment's, over a dated window.
    let asked: Vec<Value> = railway
        .requests()
        .into_iter()
        .filter(|r| {
            r["query"]
                .as_str()
                .unwrap_or("")
                .contains("deploymentLogs(")
        })
        .collect();
    assert_eq!(asked.len(), 1);
    let created = railway
        .deployments()
        .into_iter()
        .find(|d| d.id == "d4")
        .unwrap();
    let vars = &asked[0]["variables"];
    assert_eq!(vars["deploymentId"], "d4");
    let start = humantime::parse_rfc3339_weak(vars["startDate"].as_str().unwrap()).unwrap();
    let created_ms = created
        .created_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let start_ms = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(
        created_ms.abs_diff(start_ms) <= 1,
        "from its creation: {vars}"
    );

    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    let application = &history["events"][0]["phases"][2];
    assert_eq!(application["reason"], "startup_errors", "{application}");
}

#[test]
fn railway_logs_without_errors_pass_and_say_what_was_read() {
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = railway_dir(&railway, &service);
    railway.set(|k| {
        k.logs = vec![
            log("INFO:     Started server process [1]", None),
            log("ready", Some("info")),
        ]
    });
    let (code, out, err) = rollback(d.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("answers /health; 2 log line(s) without start-up errors"),
        "{out}"
    );
}

#[test]
fn the_command_providers_logs_command_is_read_with_and_without_an_error_line() {
    let service = FakeService::start();
    let d = tempfile::tempdir().unwrap();
    let script = d.path().join("deploys.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
set -eu
case "$1" in
  list) cat <<'JSON'
[{"id": "v3", "status": "SUCCESS", "created_at": "2030-01-01T00:10:00Z"},
 {"id": "v2", "status": "SUCCESS", "created_at": "2030-01-01T00:05:00Z"}]
JSON
  ;;
  status) echo '{"id": "v4", "status": "SUCCESS", "created_at": "2020-01-01T00:15:00Z"}' ;;
  rollback) echo '{"deployment_id": "v4"}' ;;
  logs)
    echo "$ROLLBACKD_DEPLOYMENT_ID $ROLLBACKD_LOGS_FROM $ROLLBACKD_LOGS_TO" > "$(dirname "$0")/logs-asked"
    echo '{"level": "info", "msg": "booting"}'
    cat "$(dirname "$0")/app.log" ;;
esac
"#,
    )
    .unwrap();
    support::make_executable(&script);
    let s = script.display();
    let config = |logs: &str| {
        format!(
            "[service]\nbase_url = \"{}\"\n[provider]\ntype = \"command\"\nlist = [\"{s}\", \"list\"]\n\
             status = [\"{s}\", \"status\"]\nrollback = [\"{s}\", \"rollback\"]\n{logs}\n\
             [engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\nmax_deploy_age = \"1000w\"\n\
             [verify]\ninitial_wait = \"0s\"\n",
            service.url()
        )
    };
    let logs = format!("logs = [\"{s}\", \"logs\"]");
    std::fs::write(d.path().join("rollbackd.toml"), config(&logs)).unwrap();

    std::fs::write(d.path().join("app.log"), "GET /health 200\n").unwrap();
    let (code, out, err) = rollback(d.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("2 log line(s) without start-up errors"),
        "{out}"
    );
    let asked = std::fs::read_to_string(d.path().join("logs-asked")).unwrap();
    assert!(asked.starts_with("v4 2020-01-01T00:15:00"), "{asked}");

    std::fs::remove_dir_all(d.path().join("state")).unwrap();
    std::fs::write(
        d.path().join("app.log"),
        "{\"level\": \"error\", \"msg\": \"migration table missing\"}\n",
    )
    .unwrap();
    let (code, out, err) = rollback(d.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains(
            "logged 1 error line(s) as it started (verify.startup_logs): migration table missing"
        ),
        "{out}{err}"
    );

    // Asking for the check without a logs command is a configuration error.
    std::fs::write(
        d.path().join("rollbackd.toml"),
        config("").replace(
            "[verify]\n",
            "[verify]\nstartup_logs = { enabled = true }\n",
        ),
    )
    .unwrap();
    let (code, _, err) = run_rollbackd(d.path(), &["check", "--offline"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("verify.startup_logs.enabled: the command provider has no logs command"),
        "{err}"
    );
}
