//! Rollback drills against the fake Railway API, the fake service, a real
//! PostgreSQL 15 and real Alembic: a readiness drill that passes and changes
//! nothing, then each injected fault failing the drill at the check it
//! concerns.

use crate::support;

use std::path::Path;

use serde_json::Value;
use support::fake_hooks::FakeHooks;
use support::fake_railway::FakeRailway;
use support::postgres::{alembic_upgrade, database_toml, Postgres};
use support::{run_rollbackd, FakeService};

const DRILL: &str =
    "[[drills]]\nname = \"weekly\"\nschedule = \"0 30 9 * * Mon\"\ntimezone = \"Europe/Paris\"\n";

fn dir(
    railway: &FakeRailway,
    service: &FakeService,
    pg: &Postgres,
    hooks: &FakeHooks,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!(
            "[service]\nbase_url = \"{}\"\n\n{}\n[engine]\nstate_dir = \"state\"\n\n\
             [verify]\ncheck_timeout = \"1s\"\n\n{}\n{DRILL}\n\
             [[notifiers]]\ntype = \"webhook\"\nurl = \"{}\"\ndrill_test = true\n",
            service.url(),
            railway.provider_toml(),
            database_toml(pg, ""),
            hooks.url("team/hook")
        ),
    )
    .unwrap();
    // The revisions rollbackd recorded while d2 and d3 were live.
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/revisions.json"),
        r#"{"deployments": {"d2": {"revision": "b", "seen_at": "2030-01-01T00:00:00Z"}, "d3": {"revision": "c", "seen_at": "2030-01-01T00:00:00Z"}}}"#,
    )
    .unwrap();
    dir
}

fn drill(dir: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    run_rollbackd(dir, &["drill", "run", "weekly"], env)
}

/// Each check's line: name -> result.
fn results(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.split_once("s] ")?.1;
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

fn result_of(out: &str, check: &str) -> String {
    results(out)
        .into_iter()
        .find(|(c, _)| c == check)
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("no {check} line in:\n{out}"))
}

#[test]
fn a_readiness_drill_passes_and_leaves_production_as_it_was() {
    let pg = Postgres::start();
    alembic_upgrade(&pg.url(), "c");
    pg.psql(
        "app",
        "INSERT INTO items (name, note) VALUES ('kept', 'n1'), ('also', 'n2')",
    );
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let hooks = FakeHooks::start();
    let d = dir(&railway, &service, &pg, &hooks);

    let (code, out, err) = drill(d.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        results(&out),
        [
            "provider",
            "target",
            "downgrade",
            "backup",
            "health",
            "notifiers"
        ]
        .map(|c| (c.to_string(), "PASSED".to_string()))
    );
    let tested = hooks.received("team/hook");
    assert_eq!(tested.len(), 1, "{tested:?}");
    assert_eq!(tested[0]["event"], "drill_test");
    assert!(
        out.contains("a rollback now would go from d3 to d2"),
        "{out}"
    );
    assert!(
        out.contains("c -> b: the SQL was produced, nothing destructive"),
        "{out}"
    );
    assert!(out.contains("row(s) match"), "{out}");
    assert!(out.contains("drill weekly PASSED"), "{out}");

    // Production unchanged: no platform call, the schema where it was, no
    // scratch database or dump left behind.
    assert!(railway.rollbacks().is_empty());
    assert_eq!(
        pg.psql("app", "SELECT version_num FROM alembic_version"),
        "c"
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'rollbackd_drill_%'"
        ),
        "0"
    );
    let backups = d.path().join("state/backups");
    let left: Vec<_> = std::fs::read_dir(&backups)
        .map(|r| r.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // One history entry, never a rollback; `drill list` shows it.
    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    let event = &history["events"][0];
    assert_eq!(event["type"], "drill");
    assert_eq!(event["success"], true);
    assert_eq!(event["drill"]["checks"].as_array().unwrap().len(), 6);
    let (code, out, _) = run_rollbackd(d.path(), &["drill", "list"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("weekly") && out.contains("Europe/Paris"),
        "{out}"
    );
    assert!(out.contains("passed at "), "{out}");
    let (_, out, _) = run_rollbackd(d.path(), &["drill", "list", "--json"], &[]);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let next = listed[0]["next_run"].as_str().unwrap();
    assert!(
        next.contains("T08:30:00Z") || next.contains("T07:30:00Z"),
        "Monday 09:30 in Paris: {next}"
    );

    let (code, _, err) = run_rollbackd(d.path(), &["drill", "run", "nightly"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no drill is called \"nightly\"; the config has weekly"),
        "{err}"
    );
}

#[test]
fn each_fault_fails_the_drill_at_the_check_it_concerns() {
    let pg = Postgres::start();
    alembic_upgrade(&pg.url(), "c");
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let hooks = FakeHooks::start();
    let d = dir(&railway, &service, &pg, &hooks);

    // A revoked token.
    let (code, out, err) = drill(d.path(), &[("ROLLBACKD_PROVIDER__TOKEN", "revoked")]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(result_of(&out, "provider"), "FAILED");
    assert!(out.contains("Not Authorized"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("drill weekly FAILED in ") && l.ends_with("s: provider, target")),
        "{out}"
    );

    // The target is past the platform's retention (d2 is an hour old).
    let (code, out, _) = drill(d.path(), &[("ROLLBACKD_PROVIDER__RETENTION", "30m")]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(result_of(&out, "provider"), "PASSED");
    assert_eq!(result_of(&out, "target"), "FAILED");

    // A backup that does not restore: pg_dump's file is damaged after it is written.
    let broken = d.path().join("broken-pg_dump");
    std::fs::write(
        &broken,
        "#!/bin/sh\npg_dump \"$@\" || exit $?\nwhile [ $# -gt 0 ]; do [ \"$1\" = --file ] && f=\"$2\"; shift; done\n\
         size=$(stat -c %s \"$f\")\nprintf 'damaged by the test' | dd of=\"$f\" bs=1 seek=$((size - 40)) conv=notrunc 2>/dev/null\n",
    )
    .unwrap();
    support::make_executable(&broken);
    let (code, out, _) = drill(
        d.path(),
        &[("ROLLBACKD_DATABASE__PG_DUMP", broken.to_str().unwrap())],
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(result_of(&out, "backup"), "FAILED");
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'rollbackd_drill_%'"
        ),
        "0",
        "the scratch database is dropped after a failure too"
    );

    // A health endpoint that went missing.
    service.set(|k| {
        k.health_overrides.insert("/health/production".into(), 404);
    });
    let (code, out, _) = drill(d.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(result_of(&out, "health"), "FAILED");
    assert!(
        out.contains("/health/production: HTTP 404, expected 200"),
        "{out}"
    );
    service.set(|k| k.health_overrides.clear());

    // A notifier whose webhook was revoked.
    hooks.always("team/hook", 410);
    let (code, out, _) = drill(d.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(result_of(&out, "notifiers"), "FAILED");
    assert!(out.contains("notifiers[0] (webhook): "), "{out}");
    hooks.always("team/hook", 200);

    // A downgrade that became destructive: d3 now runs d, whose downgrade drops a schema.
    alembic_upgrade(&pg.url(), "d");
    std::fs::write(
        d.path().join("state/revisions.json"),
        r#"{"deployments": {"d2": {"revision": "c", "seen_at": "2030-01-01T00:00:00Z"}, "d3": {"revision": "d", "seen_at": "2030-01-01T00:00:00Z"}}}"#,
    )
    .unwrap();
    let (code, out, _) = drill(d.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(result_of(&out, "downgrade"), "FAILED");
    assert!(out.contains("is destructive"), "{out}");
    assert_eq!(result_of(&out, "backup"), "PASSED", "{out}");
    assert_eq!(pg.psql("app", "SELECT count(*) FROM s.payments"), "100");

    // Every run is in the history, as a drill, and none counts as a rollback.
    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 6);
    assert!(events
        .iter()
        .all(|e| e["type"] == "drill" && e["success"] == false));
    assert!(railway.rollbacks().is_empty());
}

#[test]
fn a_bad_schedule_or_time_zone_is_refused_by_check_naming_the_drill() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("rollbackd.toml"),
        "[[drills]]\nname = \"weekly\"\nschedule = \"0 9 * * Mon\"\ntimezone = \"Mars/Olympus\"\n",
    )
    .unwrap();
    let (code, _, err) = run_rollbackd(d.path(), &["check", "--offline"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("drills[0] (\"weekly\").schedule: \"0 9 * * Mon\" is not a cron expression with seconds"),
        "{err}"
    );
    assert!(
        err.contains("drills[0] (\"weekly\").timezone: \"Mars/Olympus\" is not an IANA time zone"),
        "{err}"
    );
}

#[test]
fn a_staging_drill_rolls_staging_back_for_real_and_leaves_production_alone() {
    let production = FakeRailway::start();
    let staging = FakeRailway::start();
    let service = FakeService::start();
    let staging_service = FakeService::start();
    let d = tempfile::tempdir().unwrap();
    let config = format!(
        "[service]\nbase_url = \"{}\"\n\n{}\n[engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\n\
         [verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n\n\
         [[drills]]\nname = \"staging\"\nkind = \"staging\"\nschedule = \"0 0 3 * * Sun\"\n\n\
         [drills.staging]\nbase_url = \"{}\"\n\n{}",
        service.url(),
        production.provider_toml(),
        staging_service.url(),
        staging.provider_toml().replace("[provider]", "[drills.staging.provider]")
    );
    std::fs::write(d.path().join("rollbackd.toml"), &config).unwrap();

    let (code, out, err) = run_rollbackd(d.path(), &["drill", "run", "staging"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        results(&out),
        [
            ("pre_validation", "PASSED"),
            ("database", "SKIPPED"),
            ("application", "PASSED"),
            ("verification", "PASSED"),
            ("post_rollback", "PASSED"),
        ]
        .map(|(c, r)| (c.to_string(), r.to_string()))
    );
    assert_eq!(staging.rollbacks(), ["d2"], "staging was rolled back, once");
    assert!(production.rollbacks().is_empty(), "production was not");
    // Production's state knows only the drill: no breaker opened, no rollback recorded.
    assert!(!d.path().join("state/breaker.json").exists());
    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "drill");
    assert_eq!(events[0]["drill"]["kind"], "staging");
    let left: Vec<_> = std::fs::read_dir(d.path().join("state/drills"))
        .map(|r| r.filter_map(Result::ok).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the staging state is removed: {left:?}");

    // A staging provider that would fall back to production's variables is refused.
    std::fs::write(
        d.path().join("rollbackd.toml"),
        config.replace(
            "service_id = \"s1\"\nenvironment_id = \"e1\"\n",
            "environment_id = \"e1\"\n",
        ),
    )
    .unwrap();
    let (code, _, err) = run_rollbackd(d.path(), &["check", "--offline"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("drills[0] (\"staging\").staging.provider.service_id: set it here"),
        "{err}"
    );
}

#[test]
fn what_a_killed_drill_left_behind_is_swept_at_start_and_nothing_else() {
    let pg = Postgres::start();
    alembic_upgrade(&pg.url(), "b");
    let railway = FakeRailway::start();
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("rules")).unwrap();
    // As a drill killed mid-restore leaves them: the scratch database it
    // recorded, its dump directory, a staging drill's state directory.
    pg.psql(
        "postgres",
        "CREATE DATABASE rollbackd_drill_drill0123456789ab",
    );
    let marks = d.path().join("state/drills/scratch");
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::write(marks.join("rollbackd_drill_drill0123456789ab"), "").unwrap();
    let dump = d.path().join("state/backups/drill-drill-0123456789ab");
    std::fs::create_dir_all(&dump).unwrap();
    std::fs::write(dump.join("rollbackd-x.dump"), "partial").unwrap();
    let staging = d.path().join("state/drills/drill-0123456789ab");
    std::fs::create_dir_all(&staging).unwrap();
    // Not the drill's: a database of that shape nobody recorded, and a
    // backup beside the drill's directory.
    pg.psql("postgres", "CREATE DATABASE rollbackd_drill_someoneelse");
    std::fs::write(d.path().join("state/backups/rollbackd-keep.dump"), "kept").unwrap();

    let config = format!(
        "[engine]\nstate_dir = \"state\"\n[watch]\nallow_empty_rules = true\n\n[blame]\nenabled = false\n\n{}\n{}",
        railway.provider_toml(),
        database_toml(&pg, "")
    );
    let w = support::Watcher::start(d.path(), &config);
    w.wait_for_log(
        "removed what stopped drills left behind",
        std::time::Duration::from_secs(20),
    );
    let databases = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'rollbackd_drill_%'",
    );
    assert_eq!(databases, "rollbackd_drill_someoneelse");
    assert!(!dump.exists() && !staging.exists());
    assert!(!marks.join("rollbackd_drill_drill0123456789ab").exists());
    assert!(d.path().join("state/backups/rollbackd-keep.dump").exists());
}
