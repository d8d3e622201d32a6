//! The Argo CD provider against a fake of Argo CD's API
//! (`tests/support/fake_argocd.rs`, which cites the sources it reproduces)
//! and the fake service: a rollback with automated sync on turns it off
//! first and calls once; resuming restores the exact policy; `Degraded`
//! fails the phase; `kill -9` between the patch and the rollback call makes
//! one call in the end; `check` names a wrong token.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rollbackd::provider::argocd::PAUSED;
use serde_json::{json, Value};
use support::fake_argocd::{FakeArgocd, TOKEN};
use support::{rollbackd_bin, run_rollbackd, wait_for, FakeService};

fn dir(argo: &FakeArgocd, service: &str, token: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!(
            "[service]\nbase_url = \"{service}\"\n\n{}\n[engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n\
             [watch]\nallow_empty_rules = true\n",
            argo.provider_toml(token)
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    dir
}

fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    run_rollbackd(dir, args, &[])
}

fn automated(argo: &FakeArgocd) -> Value {
    argo.app()["spec"]["syncPolicy"]["automated"].clone()
}

fn history(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state/history.json")).unwrap()).unwrap()
}

#[test]
fn a_rollback_turns_automated_sync_off_first_calls_once_and_resume_restores_it_exactly() {
    let argo = FakeArgocd::start();
    let service = FakeService::start();
    let d = dir(&argo, &service.url(), TOKEN);
    let (code, out, err) = cli(d.path(), &["rollback", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("live now:     2 (SUCCESS, ccc"), "{out}");
    assert!(out.contains("roll back to: 1 (REMOVED, bbb"), "{out}");

    let (code, out, err) = cli(
        d.path(),
        &["rollback", "--yes", "--reason", "bad deploy ccc"],
    );
    assert_eq!(code, 0, "{out}{err}");
    // Argo CD refuses a rollback while automated sync is on: off first,
    // then exactly one rollback call, to history id 1, without prune.
    assert_eq!(
        argo.rollbacks(),
        [json!({"id": 1, "prune": false, "dryRun": false})]
    );
    let patches = argo.patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0]["spec"]["syncPolicy"]["automated"], Value::Null);
    let app = argo.app();
    assert_eq!(automated(&argo), Value::Null, "off, and it stays off");
    assert_eq!(
        app["spec"]["syncPolicy"]["syncOptions"],
        json!(["CreateNamespace=true"]),
        "the rest of the sync policy is untouched"
    );
    let recorded: Value =
        serde_json::from_str(app["metadata"]["annotations"][PAUSED].as_str().unwrap()).unwrap();
    assert_eq!(recorded, json!({"prune": true, "selfHeal": true}));
    // The new history entry is the rollback's deployment, healthy.
    let h = history(d.path());
    let e = &h["events"][0];
    assert_eq!(e["success"], true, "{e}");
    assert_eq!(e["target_deployment_id"], "1");
    assert_eq!(e["created_deployment_id"], "3");
    assert!(
        e.to_string()
            .contains("automated sync of Argo CD application shop stays off"),
        "said in the record: {e}"
    );
    // `check` says sync is held off; a reset without --resume-sync reminds.
    let (code, out, err) = cli(d.path(), &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "provider OK: Argo CD application shop answers; 4 history entries, the newest 3"
        ),
        "{out}"
    );
    assert!(
        out.contains("automated sync of Argo CD application shop is OFF"),
        "{out}"
    );
    let (code, out, err) = cli(d.path(), &["breaker", "reset"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("NOTE: automated sync of Argo CD application shop is OFF"),
        "{out}"
    );
    assert_eq!(automated(&argo), Value::Null);
    // Resumed: the recorded policy, exactly, and the record removed.
    let (code, out, err) = cli(d.path(), &["breaker", "reset", "--resume-sync"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("automated sync of Argo CD application shop is on again"),
        "{out}"
    );
    assert_eq!(automated(&argo), json!({"prune": true, "selfHeal": true}));
    assert!(argo.app()["metadata"]["annotations"].get(PAUSED).is_none());
    let (_, out, _) = cli(d.path(), &["breaker", "reset", "--resume-sync"]);
    assert!(out.contains("nothing to resume"), "{out}");
}

#[test]
fn a_degraded_application_after_the_rollback_fails_the_phase() {
    let argo = FakeArgocd::start();
    argo.set(|k| k.health_after = "Degraded".into());
    let service = FakeService::start();
    let d = dir(&argo, &service.url(), TOKEN);
    let (code, out, err) = cli(d.path(), &["rollback", "--yes"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(argo.rollbacks().len(), 1);
    let e = &history(d.path())["events"][0];
    assert_eq!(e["success"], false);
    let application = e["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "application")
        .unwrap();
    assert_eq!(application["result"], "failed", "{application}");
    assert!(
        application["detail"]
            .as_str()
            .unwrap()
            .contains("the application is Degraded"),
        "{application}"
    );
}

#[test]
fn killed_between_turning_sync_off_and_the_rollback_call_one_call_in_the_end() {
    let argo = FakeArgocd::start();
    let service = FakeService::start();
    let d = dir(&argo, &service.url(), TOKEN);
    argo.set(|k| k.hold_patch_answer = true);
    let mut first = Command::new(rollbackd_bin())
        .current_dir(d.path())
        .args(["--config", "rollbackd.toml", "rollback", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the patch to be applied", Duration::from_secs(20), || {
        argo.patch_held().then_some(())
    });
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    argo.set(|k| k.hold_patch_answer = false);
    assert!(argo.rollbacks().is_empty());
    assert_eq!(automated(&argo), Value::Null, "sync is off, recorded");
    // Sync is held off, and `check` says so.
    let (_, out, _) = cli(d.path(), &["check"]);
    assert!(
        out.contains("automated sync of Argo CD application shop is OFF"),
        "{out}"
    );
    // The next rollback settles the lost run first (the call was never
    // made: interrupted), then rolls back: one call, and the policy the
    // first run recorded is kept.
    let (code, out, err) = cli(d.path(), &["rollback", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("was interrupted before anything reached production"),
        "{out}{err}"
    );
    assert_eq!(argo.rollbacks().len(), 1, "{:?}", argo.rollbacks());
    assert_eq!(
        argo.patches().len(),
        1,
        "sync was already off: not patched again"
    );
    let (code, _, err) = cli(d.path(), &["breaker", "reset", "--resume-sync"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(automated(&argo), json!({"prune": true, "selfHeal": true}));
}

#[test]
fn a_wrong_token_is_named_by_check_and_refused_before_anything_changes() {
    let argo = FakeArgocd::start();
    let service = FakeService::start();
    let wrong = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzb21lb25lIn0.d3Jvbmc";
    let d = dir(&argo, &service.url(), wrong);
    let (code, out, err) = cli(d.path(), &["check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("invalid session"), "{err}");
    assert!(err.contains("provider.token"), "{err}");
    assert!(
        !err.contains(wrong) && !out.contains(wrong),
        "the token is never printed"
    );
    let (code, _, err) = cli(d.path(), &["rollback", "--yes"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("401") || err.contains("invalid session"),
        "{err}"
    );
    assert!(argo.patches().is_empty() && argo.rollbacks().is_empty());
    // An application that does not exist, or the token may not read: 403.
    let d = dir(&argo, &service.url(), TOKEN);
    let text = std::fs::read_to_string(d.path().join("rollbackd.toml"))
        .unwrap()
        .replace("application = \"shop\"", "application = \"shopp\"");
    std::fs::write(d.path().join("rollbackd.toml"), text).unwrap();
    let (code, _, err) = cli(d.path(), &["check"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("HTTP 403") && err.contains("\"shopp\" does not exist"),
        "{err}"
    );
    // No token anywhere.
    let text = std::fs::read_to_string(d.path().join("rollbackd.toml"))
        .unwrap()
        .replace(&format!("token = \"{TOKEN}\"\n"), "");
    std::fs::write(d.path().join("rollbackd.toml"), text).unwrap();
    let (code, _, err) = run_rollbackd(d.path(), &["check"], &[("ARGOCD_AUTH_TOKEN", "")]);
    assert_ne!(code, 0);
    assert!(err.contains("ARGOCD_AUTH_TOKEN"), "{err}");
}

#[test]
fn deployments_validate_and_a_readiness_drill_work_with_argo_cd_and_change_nothing() {
    let argo = FakeArgocd::start();
    let service = FakeService::start();
    let d = dir(&argo, &service.url(), TOKEN);
    let config = d.path().join("rollbackd.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[[drills]]\nname = \"weekly\"\nschedule = \"0 30 9 * * Mon\"\ntimezone = \"UTC\"\n",
    );
    std::fs::write(&config, text).unwrap();

    let (code, out, err) = cli(d.path(), &["deployments", "list", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["2", "1", "0"], "newest first");
    assert_eq!(list[0]["git_sha"], "ccc");
    let (code, out, _) = cli(
        d.path(),
        &["deployments", "status", "--deployment-id", "1", "--json"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["git_sha"],
        "bbb"
    );
    let (code, out, err) = cli(d.path(), &["validate", "--wait", "0"]);
    assert_eq!(code, 0, "{out}{err}");

    // A readiness drill reads the application and checks the path; it
    // neither turns automated sync off nor asks for a rollback.
    let (code, out, err) = cli(d.path(), &["drill", "run", "weekly"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("a rollback now would go from 2 to 1"), "{out}");
    assert!(out.contains("drill weekly PASSED"), "{out}");
    assert!(argo.rollbacks().is_empty(), "{:?}", argo.rollbacks());
    assert!(argo.patches().is_empty(), "{:?}", argo.patches());
    assert_eq!(automated(&argo), json!({"prune": true, "selfHeal": true}));
}
