//! A manual rollback's database target (`rollbackd rollback --db-steps N |
//! --db-target REVISION`) against a real PostgreSQL 15 and real Alembic, on
//! a fresh install where `watch` never recorded a revision: the seed's
//! `--target=-1`, under the same destructive-SQL scan, advisory lock and
//! verification as a recorded target.

use crate::support;

use std::path::Path;

use serde_json::Value;
use support::fake_railway::FakeRailway;
use support::postgres::{alembic_upgrade, database_toml, Postgres};
use support::{run_rollbackd, FakeService};

fn dir(railway: &FakeRailway, service: &FakeService, pg: &Postgres) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!(
            "[service]\nbase_url = \"{}\"\n\n{}\n[engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n\n{}",
            service.url(),
            railway.provider_toml(),
            database_toml(pg, "")
        ),
    )
    .unwrap();
    dir
}

fn rollback(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["rollback", "--reason", "test"];
    all.extend_from_slice(args);
    run_rollbackd(dir, &all, &[])
}

fn database_phase(dir: &Path) -> Value {
    let history: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/history.json")).unwrap())
            .unwrap();
    let event = history["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    event["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "database")
        .unwrap()
        .clone()
}

#[test]
fn db_steps_one_downgrades_c_to_b_on_a_fresh_install_and_keeps_the_rows() {
    let pg = Postgres::start();
    alembic_upgrade(&pg.url(), "c");
    pg.psql(
        "app",
        "INSERT INTO items (name, note) VALUES ('alpha', 'a-note'), ('beta', 'b-note')",
    );
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = dir(&railway, &service, &pg);

    // Nothing recorded: without a target the database is left alone, and the plan says how to ask.
    let (code, out, err) = rollback(d.path(), &["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("no schema revision is recorded for deployment d2")
            && out.contains("rollbackd rollback --db-steps 1 or --db-target REVISION"),
        "{out}"
    );

    let (code, out, err) = rollback(d.path(), &["--dry-run", "--db-steps", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("alembic downgrade c -> b under advisory lock")
            && out.contains("(asked with --db-steps 1)"),
        "{out}"
    );
    assert!(
        out.contains("ADD COLUMN legacy_code"),
        "the dry run prints the SQL: {out}"
    );
    assert_eq!(
        pg.psql("app", "SELECT version_num FROM alembic_version"),
        "c"
    );
    assert!(railway.rollbacks().is_empty());

    let (code, out, err) = rollback(d.path(), &["--yes", "--db-steps", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        pg.psql("app", "SELECT version_num FROM alembic_version"),
        "b"
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT string_agg(name || ':' || note, ',' ORDER BY id) FROM items"
        ),
        "alpha:a-note,beta:b-note",
        "every row survives"
    );
    let db = database_phase(d.path());
    assert_eq!(db["result"], "succeeded", "{db}");
    assert!(
        db["detail"].as_str().unwrap().contains("downgraded c -> b"),
        "{db}"
    );
    assert_eq!(railway.rollbacks(), ["d2"]);
}

#[test]
fn a_destructive_step_is_skipped_with_its_reason_and_a_target_that_cannot_be_reached_stops() {
    let pg = Postgres::start();
    alembic_upgrade(&pg.url(), "d");
    let railway = FakeRailway::start();
    let service = FakeService::start();
    let d = dir(&railway, &service, &pg);

    let (code, out, err) = rollback(d.path(), &["--yes", "--db-steps", "1"]);
    assert_eq!(code, 0, "app-only goes ahead: {out}{err}");
    let db = database_phase(d.path());
    assert_eq!(db["result"], "skipped", "{db}");
    let detail = db["detail"].as_str().unwrap();
    assert!(
        detail.contains("the downgrade d -> c (asked with --db-steps 1) is destructive")
            && detail.contains("DROP SCHEMA"),
        "{detail}"
    );
    assert_eq!(pg.psql("app", "SELECT count(*) FROM s.payments"), "100");
    assert_eq!(
        pg.psql("app", "SELECT version_num FROM alembic_version"),
        "d"
    );
    assert_eq!(railway.rollbacks(), ["d2"]);

    // An operator's target that cannot be had stops before anything runs:
    // no backup, no breaker, no platform call.
    for (args, says) in [
        (
            &["--db-target", "zzz"][..],
            "--db-target zzz: alembic show zzz failed",
        ),
        (
            &["--db-steps", "9"][..],
            "--db-steps 9: d is only 4 step(s) above base",
        ),
    ] {
        let railway = FakeRailway::start();
        let d = dir(&railway, &service, &pg);
        let mut all = vec!["--yes"];
        all.extend_from_slice(args);
        let (code, out, err) = rollback(d.path(), &all);
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains(says) && err.contains("nothing was done"),
            "{args:?}: {err}"
        );
        assert!(railway.rollbacks().is_empty(), "{args:?}");
        assert!(
            !d.path().join("state/backups").exists(),
            "{args:?}: no backup"
        );
        assert_eq!(
            pg.psql("app", "SELECT version_num FROM alembic_version"),
            "d"
        );
    }
    // A target is resolved to the full id before it is compared.
    let (code, out, err) = rollback(d.path(), &["--dry-run", "--db-target", "c"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("the downgrade d -> c (asked with --db-target c) is destructive"),
        "{out}"
    );

    // Without a database side, a target is refused rather than ignored.
    let railway = FakeRailway::start();
    let bare = tempfile::tempdir().unwrap();
    std::fs::write(
        bare.path().join("rollbackd.toml"),
        format!(
            "[service]\nbase_url = \"{}\"\n\n{}\n[engine]\nstate_dir = \"state\"\n",
            service.url(),
            railway.provider_toml()
        ),
    )
    .unwrap();
    let (code, _, err) = rollback(bare.path(), &["--yes", "--db-steps", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--db-steps 1 asks for a schema downgrade, but no database is configured"),
        "{err}"
    );
    assert!(railway.rollbacks().is_empty());

    // Flags that contradict each other are refused before anything runs.
    for args in [
        &["--skip-db", "--db-steps", "1"][..],
        &["--db-target", "b", "--db-steps", "1"][..],
        &["--db-steps", "0"][..],
        &["--db-target=-1"][..],
        &["--db-target", "c:b"][..],
    ] {
        let (code, _, err) = rollback(d.path(), args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--db-"), "{args:?}: {err}");
    }
}
