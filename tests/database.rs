//! Database safety against a real PostgreSQL 15 cluster and real Alembic:
//! the emergency backup, the destructive-downgrade refusal, the advisory
//! lock, the database going down, and a rollback from revision c to b end to
//! end through the watcher and the engine.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::fake_railway::{deployment, FakeRailway};
use support::postgres::{alembic_upgrade, database_toml, Postgres};
use support::scene::{history, phase, Scene};
use support::{
    postgres_at, run_rollbackd, wait_for, write_rules, FakeService, Prometheus, Watcher,
};

const LOCK_KEY: i64 = 0x726f_6c6c_6261_636b;

/// Deployments d2 (at revision b) and d3 (at c).
const B_THEN_C: &[(&str, &str)] = &[("d2", "b"), ("d3", "c")];

/// A directory whose config holds only the state directory: the database
/// side comes from DATABASE_URL.
fn state_only() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        "[engine]\nstate_dir = \"state\"\n",
    )
    .unwrap();
    dir
}

/// The dumps in `dir`'s backup directory.
fn dumps(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("state/backups"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dump"))
        .collect()
}

fn columns(pg: &Postgres) -> String {
    pg.psql(
        "app",
        "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'items'",
    )
}

/// The app database's Alembic revision.
fn revision(pg: &Postgres) -> String {
    pg.psql("app", "SELECT version_num FROM alembic_version")
}

/// The app database at b with a row whose note the downgrade to a would
/// drop, deployments d2 (at a) and d3 (at b); `db_extra` in `[database]`.
fn a_note_the_downgrade_would_drop(db_extra: &str) -> (Postgres, Scene) {
    let pg = postgres_at("b");
    pg.psql(
        "app",
        "INSERT INTO items (name, note) VALUES ('kept', 'precious note')",
    );
    let s = Scene::new(&pg, db_extra, "").seeded(&[("d2", "a"), ("d3", "b")]);
    (pg, s)
}

#[test]
fn a_destructive_downgrade_is_skipped_with_its_reason_and_nothing_is_dropped() {
    let (pg, s) = a_note_the_downgrade_would_drop("");

    let (code, out, err) = run_rollbackd(s.path(), &["rollback", "--dry-run"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("database:     skipped: the downgrade b -> a is destructive"),
        "{out}"
    );
    assert!(
        out.contains("| ALTER TABLE items DROP COLUMN note"),
        "the exact SQL is shown: {out}"
    );

    let (code, out, err) = s.rollback();
    assert_eq!(code, 0, "{out}{err}");
    let e = s.event();
    let db = phase(&e, "database");
    assert_eq!(db["result"], "skipped");
    assert!(
        db["detail"].as_str().unwrap().contains("DROP COLUMN note"),
        "{db}"
    );
    assert_eq!(
        pg.psql("app", "SELECT note FROM items"),
        "precious note",
        "nothing was dropped"
    );
    assert_eq!(revision(&pg), "b");
    assert_eq!(
        s.railway.rollbacks(),
        ["d2"],
        "app-only rollback goes ahead (database.app_only_if_skipped)"
    );
    assert!(
        e["backup"]["restore_command"]
            .as_str()
            .unwrap()
            .starts_with("rollbackd backup restore"),
        "{e}"
    );
    assert!(Path::new(e["backup"]["path"].as_str().unwrap()).exists());
}

#[test]
fn when_app_only_is_not_acceptable_a_destructive_downgrade_stops_the_run_before_the_application() {
    let (pg, s) = a_note_the_downgrade_would_drop("app_only_if_skipped = false");
    let (code, _, err) = s.rollback();
    assert_eq!(code, 1);
    assert!(err.contains("app_only_if_skipped is false"), "{err}");
    assert!(s.railway.rollbacks().is_empty());
    assert_eq!(pg.psql("app", "SELECT count(note) FROM items"), "1");
}

#[test]
fn the_advisory_lock_makes_the_phase_wait_then_fail_and_a_free_lock_lets_the_downgrade_run() {
    let pg = postgres_at("c");
    pg.psql(
        "app",
        "INSERT INTO items (name, note) VALUES ('one', 'n1'), ('two', 'n2')",
    );
    let s = Scene::new(&pg, "", "[engine.budgets]\ndatabase = \"4s\"").seeded(B_THEN_C);

    let mut holder = pg.hold_advisory_lock(LOCK_KEY);
    let (code, out, err) = s.rollback();
    let _ = holder.kill();
    let _ = holder.wait();
    pg.release_advisory_locks();
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("held by another session; gave up after"),
        "{err}"
    );
    let e = s.event();
    let db = phase(&e, "database");
    assert_eq!(db["result"], "failed");
    assert!(
        db["duration_seconds"].as_f64().unwrap() >= 1.5,
        "it waited for the lock: {db}"
    );
    assert!(
        db["duration_seconds"].as_f64().unwrap() < 5.0,
        "within its budget: {db}"
    );
    assert!(
        db["detail"]
            .as_str()
            .unwrap()
            .contains("the database is at c"),
        "{db}"
    );
    assert_eq!(phase(&e, "application")["result"], "skipped");
    assert!(
        s.railway.rollbacks().is_empty(),
        "no app rollback on an undecided database"
    );
    assert_eq!(revision(&pg), "c");

    // The lock is free now: the safe downgrade c -> b runs and is verified
    // (with a budget that says nothing about the lock, only about the work:
    // a busy machine runs Alembic's processes slower than 4 s).
    s.edit_config(|text| text.replace("database = \"4s\"", "database = \"60s\""));
    let (code, out, err) = s.rollback();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("downgraded c -> b; alembic_version verified"),
        "{out}"
    );
    assert_eq!(revision(&pg), "b");
    assert_eq!(columns(&pg), "id,legacy_code,name,note");
    assert_eq!(
        pg.psql(
            "app",
            "SELECT string_agg(name || ':' || note, ',' ORDER BY id) FROM items"
        ),
        "one:n1,two:n2"
    );
    assert_eq!(s.railway.rollbacks(), ["d2"]);
}

/// The app database at c, then stopped.
fn stopped_at_c() -> Postgres {
    let mut pg = postgres_at("c");
    pg.stop();
    pg
}

#[test]
fn the_database_down_makes_the_backup_a_warning_and_the_database_phase_fail_cleanly() {
    let pg = stopped_at_c();
    let s = Scene::new(&pg, "", "").seeded(B_THEN_C);
    let (code, out, err) = s.rollback();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("WARNING: the emergency backup failed"),
        "{out}"
    );
    assert!(
        err.contains("database: cannot read the schema revision"),
        "{err}"
    );
    let e = s.event();
    assert!(
        e["backup_warning"]
            .as_str()
            .unwrap()
            .contains("pg_dump failed"),
        "{e}"
    );
    assert_eq!(phase(&e, "pre_validation")["result"], "succeeded");
    assert_eq!(phase(&e, "database")["result"], "failed");
    assert!(s.railway.rollbacks().is_empty());
    let (code, _, _) = run_rollbackd(s.path(), &["breaker", "status"], &[]);
    assert_eq!(code, 1, "the breaker stays OPEN after a failed run");
}

#[test]
fn with_backups_required_the_database_down_stops_the_run_in_pre_validation_changing_nothing() {
    let pg = stopped_at_c();
    let s = Scene::new(&pg, "backup_required = true", "");
    let (code, _, err) = s.rollback();
    assert_eq!(code, 1);
    assert!(
        err.contains("pre_validation: the emergency backup failed"),
        "{err}"
    );
    let (code, out, _) = run_rollbackd(s.path(), &["breaker", "status"], &[]);
    assert_eq!(
        code, 0,
        "nothing changed, so the breaker was not touched: {out}"
    );
}

#[test]
fn with_on_failure_app_only_the_database_down_rolls_the_application_back_alone() {
    // The seed's way, when asked for.
    let pg = stopped_at_c();
    let s = Scene::new(&pg, "on_failure = \"app_only\"", "").seeded(B_THEN_C);
    let (code, out, err) = s.rollback();
    assert_eq!(code, 0, "{out}{err}");
    let db = phase(&s.event(), "database").clone();
    assert_eq!(db["result"], "skipped", "{db}");
    assert!(
        db["detail"]
            .as_str()
            .unwrap()
            .contains("database.on_failure = \"app_only\""),
        "{db}"
    );
    assert_eq!(s.railway.rollbacks(), ["d2"]);
}

#[test]
fn a_corrupted_backup_is_detected_by_its_checksum() {
    let pg = postgres_at("c");
    pg.psql(
        "app",
        "INSERT INTO items (name) SELECT 'row ' || g FROM generate_series(1, 1000) g",
    );
    let s = Scene::new(&pg, "keep_backups = 2", "");
    let mut paths = Vec::new();
    for _ in 0..3 {
        let (code, out, err) = run_rollbackd(s.path(), &["backup", "create"], &[]);
        assert_eq!(code, 0, "{out}{err}");
        let path = out
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("backup ")
            .trim_end_matches(" verified")
            .to_string();
        assert!(
            out.contains("restore with: rollbackd backup restore"),
            "{out}"
        );
        // No pause: backups taken in the same second are pruned oldest first.
        paths.push(path);
    }
    assert!(!Path::new(&paths[0]).exists(), "only the newest 2 are kept");
    let (code, out, _) = run_rollbackd(s.path(), &["backup", "list"], &[]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");

    let newest = &paths[2];
    let (code, out, _) = run_rollbackd(s.path(), &["backup", "verify", newest], &[]);
    assert_eq!(code, 0, "{out}");
    let mut bytes = std::fs::read(newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(newest, &bytes).unwrap();
    let (code, _, err) = run_rollbackd(s.path(), &["backup", "verify", newest], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("is corrupt: its SHA-256 is"), "{err}");

    // A file whose checksum matches but is not a dump fails pg_restore --list.
    let fake = s.path().join("state/backups/rollbackd-x.dump");
    std::fs::write(&fake, b"not a dump").unwrap();
    let sum: String = {
        use sha2::Digest;
        sha2::Sha256::digest(b"not a dump")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    std::fs::write(format!("{}.sha256", fake.display()), format!("{sum}  x\n")).unwrap();
    let (code, _, err) =
        run_rollbackd(s.path(), &["backup", "verify", fake.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot be read back") && err.contains("pg_restore --list failed"),
        "{err}"
    );
}

/// The whole story: rollbackd records each deployment's revision while it
/// watches; a bad deploy at revision c is rolled back to the deployment that
/// ran revision b, schema included, with the rows intact.
#[test]
fn a_rollback_from_revision_c_to_b_end_to_end_keeps_the_rows() {
    let pg = postgres_at("b");
    pg.psql(
        "app",
        "INSERT INTO items (name, note) VALUES ('alpha', 'a-note'), ('beta', 'b-note')",
    );
    let fake = Arc::new(FakeService::start());
    let railway = FakeRailway::start_with(vec![
        deployment("d2", "SUCCESS", 60),
        deployment("d1", "REMOVED", 180),
    ]);
    let healed = fake.clone();
    railway.on_success(move |_| healed.set(|k| k.error_ratio = 0.0));
    let prom = Prometheus::start(&[fake.addr], None);
    prom.wait_for_scrape("app_deployment_info");
    let d = tempfile::tempdir().unwrap();
    write_rules(
        d.path(),
        "groups:\n  - name: http\n    interval: 1s\n    rules:\n      - name: HighErrorRate\n        \
         expr: '(sum(rate(http_requests_total{code=\"500\"}[3s])) or vector(0)) / sum(rate(http_requests_total[3s]))'\n        \
         above: 0.1\n        for: 1s\n        policy: auto\n",
    );
    let config = format!(
        "[prometheus]\nurl = \"{}\"\n\n[service]\nbase_url = \"{}\"\n\n[watch]\nrule_paths = [\"rules\"]\n\n{}\n\
         [blame]\nenabled = false\n\n[engine]\nstate_dir = \"state\"\npoll_interval = \"200ms\"\ncoalesce = \"500ms\"\n\n\
         [verify]\ninitial_wait = \"0s\"\nretry_interval = \"300ms\"\ncheck_timeout = \"1s\"\n\n{}",
        prom.url(),
        fake.url(),
        railway.provider_toml(),
        database_toml(&pg, "revision_check_interval = \"1s\"")
    );
    let w = Watcher::start(d.path(), &config);
    let revisions = |w: &Watcher| -> Value {
        std::fs::read_to_string(w.dir.join("state/revisions.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    wait_for(
        "d2's revision to be recorded",
        Duration::from_secs(30),
        || (revisions(&w)["deployments"]["d2"]["revision"] == "b").then_some(()),
    );

    let after_d2 = revisions(&w);
    // Deploy d3, which migrates to c, then breaks.
    railway.deploy("d3");
    alembic_upgrade(&pg.url(), "c");
    wait_for("d3 to be seen", Duration::from_secs(15), || {
        revisions(&w)["deployments"]["d3"]["revision"]
            .as_str()
            .map(|_| ())
    });
    pg.psql(
        "app",
        "INSERT INTO items (name, note) VALUES ('gamma', 'written by d3')",
    );
    fake.set(|k| k.error_ratio = 0.5);

    w.wait_for_log("rollback succeeded", Duration::from_secs(60));
    assert_eq!(railway.rollbacks(), ["d2"]);
    let e = &history(d.path())["events"][0];
    assert_eq!(
        revision(&pg),
        "b",
        "{}\nrevisions: {}\nafter d2 was seen: {after_d2}",
        phase(e, "database"),
        revisions(&w)
    );
    assert_eq!(columns(&pg), "id,legacy_code,name,note");
    assert_eq!(
        pg.psql(
            "app",
            "SELECT string_agg(name || ':' || note, ',' ORDER BY id) FROM items"
        ),
        "alpha:a-note,beta:b-note,gamma:written by d3",
        "every row survives the schema rollback"
    );
    let e = &history(d.path())["events"][0];
    assert_eq!(phase(e, "database")["result"], "succeeded");
    assert!(phase(e, "database")["detail"]
        .as_str()
        .unwrap()
        .contains("downgraded c -> b"));
    let backup = Path::new(e["backup"]["path"].as_str().unwrap());
    assert!(backup.exists());
    let (code, out, _) = run_rollbackd(
        d.path(),
        &[
            "--config",
            "rollbackd.toml",
            "backup",
            "verify",
            backup.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
}

/// A downgrade d -> c running `statement` (the fixture's
/// FIXTURE_DOWNGRADE_SQL) is refused as destructive with the statement
/// quoted, and nothing is lost; the application still rolls back, its new
/// deployment recorded at d. `DROP SCHEMA … CASCADE` once ran as
/// "downgraded d -> c" and took s.payments with it; the others passed the
/// keyword scan too.
fn refused_and_nothing_is_lost(statement: &str) {
    let pg = postgres_at("d");
    let amounts = "SELECT count(*) || ' ' || sum(amount) FROM s.payments";
    let before = pg.psql("app", amounts);
    assert_eq!(before, "100 5075.00");
    let s = Scene::new(&pg, "", "").seeded(&[("d2", "c"), ("d3", "d")]);
    let (code, out, err) = s.rollback_with(&[("FIXTURE_DOWNGRADE_SQL", statement)]);
    assert_eq!(code, 0, "{statement}: {out}{err}");
    let e = s.event();
    let db = phase(&e, "database");
    assert_eq!(db["result"], "skipped", "{statement}: {e}");
    let detail = db["detail"].as_str().unwrap();
    assert!(detail.contains("is destructive"), "{statement}: {detail}");
    assert!(
        detail.contains(statement),
        "{statement}: the statement is quoted: {detail}"
    );
    assert_eq!(pg.psql("app", amounts), before, "{statement}: nothing lost");
    assert_eq!(revision(&pg), "d");
    assert_eq!(
        s.railway.rollbacks(),
        ["d2"],
        "the application still rolls back"
    );
    // The deployment the rollback created is recorded at the schema it runs.
    let created = e["created_deployment_id"].as_str().unwrap();
    let revisions: Value = serde_json::from_str(
        &std::fs::read_to_string(s.path().join("state/revisions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        revisions["deployments"][created]["revision"], "d",
        "{revisions}"
    );
    let (code, out, _) = run_rollbackd(s.path(), &["revisions"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with(created) && l.contains(" d ")),
        "{out}"
    );
}

#[test]
fn a_drop_schema_cascade_is_refused_and_nothing_is_lost() {
    refused_and_nothing_is_lost("DROP SCHEMA IF EXISTS s CASCADE");
}

#[test]
fn a_drop_owned_is_refused_and_nothing_is_lost() {
    refused_and_nothing_is_lost("DROP OWNED BY CURRENT_USER");
}

#[test]
fn a_drop_type_cascade_is_refused_and_nothing_is_lost() {
    refused_and_nothing_is_lost("DROP TYPE mood CASCADE");
}

#[test]
fn an_update_overwriting_every_row_is_refused_and_nothing_is_lost() {
    refused_and_nothing_is_lost("UPDATE s.payments SET amount = 0");
}

#[test]
fn a_column_type_change_that_truncates_is_refused_and_nothing_is_lost() {
    refused_and_nothing_is_lost("ALTER TABLE s.payments ALTER COLUMN amount TYPE INTEGER");
}

#[test]
fn a_statement_rollbackd_cannot_read_is_refused_and_nothing_is_lost() {
    refused_and_nothing_is_lost("SELEKT what rollbackd cannot read");
}

/// The app database at `c`, deployments d2 (at b) and d3 (at c).
fn at_c(pg: &Postgres) -> Scene {
    alembic_upgrade(&pg.url(), "c");
    Scene::new(pg, "", "").seeded(B_THEN_C)
}

/// A cluster with a second database, `other`, which Alembic upgraded to
/// `rev` (`app` is left as it is); and `other`'s URL.
fn with_other_database_at(rev: &str) -> (Postgres, String) {
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE other");
    let other = pg.url().replace("/app", "/other");
    alembic_upgrade(&other, rev);
    (pg, other)
}

#[test]
fn alembic_reaching_another_database_is_caught_before_anything_runs() {
    let (pg, other) = with_other_database_at("b");
    let s = at_c(&pg);
    // Once: the lock taken on app, the downgrade run on alembic.ini's URL,
    // and only "after the downgrade to b, the database is at revision c".
    let (code, out, err) = s.rollback_with(&[(
        "FIXTURE_ALEMBIC_URL",
        &other.replace("postgres://", "postgresql+psycopg2://"),
    )]);
    assert_eq!(code, 1, "{out}{err}");
    let db = phase(&s.event(), "database").clone();
    let detail = db["detail"].as_str().unwrap();
    assert!(
        detail.contains("`alembic current` says the database is at b")
            && detail.contains("is at c")
            && detail.contains("ROLLBACKD_SQLALCHEMY_URL"),
        "{detail}"
    );
    assert_eq!(revision(&pg), "c");
    assert_eq!(
        pg.psql("other", "SELECT version_num FROM alembic_version"),
        "b"
    );
    assert!(
        s.railway.rollbacks().is_empty(),
        "the run stopped before the application"
    );
}

#[test]
fn a_downgrade_waiting_on_rollbackds_own_migration_lock_is_explained() {
    let pg = Postgres::start();
    let s = at_c(&pg);
    // [migrations] is the file's last section
    s.edit_config(|text| text + "timeout = \"4s\"\n");
    // An env.py without the ROLLBACKD_HOLDS_MIGRATION_LOCK check: once
    // "did not finish within 5s" and no hint.
    let (code, out, err) = s.rollback_with(&[("FIXTURE_FORGETS_LOCK_FLAG", "1")]);
    assert_eq!(code, 1, "{out}{err}");
    let db = phase(&s.event(), "database").clone();
    let detail = db["detail"].as_str().unwrap();
    assert!(
        detail.contains("did not finish within 4s")
            && detail.contains("waiting on rollbackd's own migration lock")
            && detail.contains("ROLLBACKD_HOLDS_MIGRATION_LOCK"),
        "{detail}"
    );
    assert_eq!(revision(&pg), "c");
}

#[test]
fn a_failing_downgrade_quotes_alembics_own_words() {
    // Once "failed (exit status: 255): " and nothing after.
    let pg = Postgres::start();
    let s = at_c(&pg);
    pg.psql("app", "CREATE TABLE legacy_code_clash (x int)");
    pg.psql("app", "ALTER TABLE items ADD COLUMN legacy_code TEXT");
    let (code, out, err) = s.rollback();
    assert_eq!(code, 1, "{out}{err}");
    let db = phase(&s.event(), "database").clone();
    let detail = db["detail"].as_str().unwrap();
    assert!(detail.contains("already exists"), "{detail}");
}

#[test]
fn database_url_alone_turns_the_database_side_on_and_enabled_false_off() {
    let pg = postgres_at("b");
    // No [database] header, as in the shipped Kubernetes sidecar: once
    // "no [database] is configured" with DATABASE_URL set.
    let dir = state_only();
    let env = [("DATABASE_URL", pg.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = run_rollbackd(dir.path(), &["backup", "create"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(dumps(dir.path()).len(), 1, "{out}");

    std::fs::write(
        dir.path().join("rollbackd.toml"),
        "[engine]\nstate_dir = \"state\"\n[database]\nenabled = false\n",
    )
    .unwrap();
    let (code, _, err) = run_rollbackd(dir.path(), &["backup", "create"], &env);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("enabled = false"), "{err}");
}

#[test]
fn a_unix_socket_url_gets_a_real_backup_readable_by_rollbackd_only() {
    use std::os::unix::fs::PermissionsExt;
    let pg = postgres_at("b");
    pg.psql(
        "app",
        "INSERT INTO items (name, note) VALUES ('kept', 'precious')",
    );
    let dir = state_only();
    let socket = pg.socket_dir().display().to_string();
    let encoded = socket.replace('/', "%2F");
    // Once: pg_dump dialled localhost:5432 while rollbackd's own connection
    // worked, and the rollback went ahead without a backup.
    for url in [
        format!("postgres://postgres@/app?host={socket}&port={}", pg.port()),
        format!("postgres://postgres@{encoded}:{}/app", pg.port()),
    ] {
        let (code, out, err) = run_rollbackd(
            dir.path(),
            &["backup", "create"],
            &[("DATABASE_URL", url.as_str())],
        );
        assert_eq!(code, 0, "{url}: {out}{err}");
    }
    let dumps = dumps(dir.path());
    assert_eq!(dumps.len(), 2);
    for dump in &dumps {
        let mode = std::fs::metadata(dump).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: once 0644", dump.display());
        let listed = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_restore")
            .arg("--list")
            .arg(dump)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&listed.stdout).contains("TABLE DATA public items"));
    }
}

#[test]
fn a_restore_goes_into_a_new_database_and_replace_swaps_it_in_keeping_the_old() {
    let pg = postgres_at("b");
    pg.psql(
        "app",
        "INSERT INTO items (name, note) VALUES ('kept', 'precious')",
    );
    let dir = state_only();
    let url = pg.url();
    let env = [("DATABASE_URL", url.as_str())];
    let (code, out, err) = run_rollbackd(dir.path(), &["backup", "create"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let dump = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("backup ")
                .and_then(|l| l.strip_suffix(" verified"))
        })
        .unwrap()
        .to_string();
    // A newer schema on the live database: the README's old
    // `pg_restore --clean` left `audit` in place beside revision b.
    alembic_upgrade(&pg.url(), "c");
    pg.psql("app", "CREATE TABLE audit (id int)");
    pg.psql("app", "DELETE FROM items");

    // Not on a terminal, a restore asks for --yes and creates nothing.
    let (code, _, err) = run_rollbackd(
        dir.path(),
        &["backup", "restore", &dump, "--dbname", "app_check"],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("a restore writes a new database app_check") && err.contains("pass --yes"),
        "{err}"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app_check'"
        ),
        "0"
    );
    let (code, out, err) = run_rollbackd(
        dir.path(),
        &["backup", "restore", &dump, "--dbname", "app_check", "--yes"],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("into the new database app_check"), "{out}");
    assert_eq!(pg.psql("app_check", "SELECT note FROM items"), "precious");
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM items"),
        "0",
        "the live one untouched"
    );

    let (code, _, err) =
        run_rollbackd(dir.path(), &["backup", "restore", &dump, "--replace"], &env);
    assert_eq!(code, 2, "--replace asks for --yes: {err}");
    let (code, out, err) = run_rollbackd(
        dir.path(),
        &["backup", "restore", &dump, "--replace", "--yes"],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(pg.psql("app", "SELECT note FROM items"), "precious");
    assert_eq!(revision(&pg), "b");
    assert_eq!(
        pg.psql("app", "SELECT to_regclass('audit') IS NULL"),
        "t",
        "nothing the dump lacks survives under the live name"
    );
    let kept = out
        .split("kept as ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(
        pg.psql(kept, "SELECT to_regclass('audit') IS NOT NULL"),
        "t",
        "the old one is kept: {out}"
    );
}

#[test]
fn check_probes_the_database_the_migrations_and_pg_dump() {
    let (pg, other) = with_other_database_at("a");
    let s = at_c(&pg);
    std::fs::create_dir_all(s.path().join("rules")).unwrap();
    // Once: `check` never looked at the database, Alembic or pg_dump.
    let (code, out, err) = run_rollbackd(s.path(), &["check"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("at revision c") && out.contains("migrations OK"),
        "{out}"
    );
    assert!(
        out.contains("database.pg_dump OK: pg_dump (PostgreSQL)"),
        "{out}"
    );

    let elsewhere = other.replace("postgres://", "postgresql+psycopg2://");
    let (code, _, err) =
        run_rollbackd(s.path(), &["check"], &[("FIXTURE_ALEMBIC_URL", &elsewhere)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`alembic current` names a") && err.contains("another database"),
        "{err}"
    );

    s.edit_config(|text| {
        text.replace(
            "[database]\n",
            "[database]\npg_dump = \"/nonexistent/pg_dump\"\n",
        )
    });
    let (code, _, err) = run_rollbackd(s.path(), &["check"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("database.pg_dump: cannot run"), "{err}");
    let (code, out, err) = run_rollbackd(s.path(), &["check", "--offline"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}
