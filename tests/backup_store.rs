//! Backups that survive the machine: copies in a real S3-compatible server
//! (moto), checked by reading them back, pruned remotely, verified and
//! restored from their URL into a real PostgreSQL 15; an upload that fails
//! is a warning, or stops the rollback under `backup_required`.

use crate::support;

use std::path::Path;

use serde_json::Value;
use support::fake_railway::FakeRailway;
use support::postgres::{alembic_upgrade, database_toml, Postgres};
use support::run_rollbackd;
use support::s3::{S3, SECRET_KEY};
use support::scene::{history, phase, Scene};

const BUCKET: &str = "backups";

fn run(dir: &Path, args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = run_rollbackd(dir, args, &env);
    assert!(
        !out.contains(SECRET_KEY) && !err.contains(SECRET_KEY),
        "the store's secret is never printed: {out}{err}"
    );
    (code, out, err)
}

/// `copied to URL and read back` from `backup create`'s output.
fn copied_to(out: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("copied to "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no copy in: {out}"))
        .to_string()
}

#[test]
fn backups_are_copied_off_the_machine_pruned_verified_and_restored_from_their_url() {
    let pg = Postgres::start();
    alembic_upgrade(&pg.url(), "b");
    pg.psql(
        "app",
        "INSERT INTO items (name, note) SELECT 'row ' || g, 'kept' FROM generate_series(1, 1000) g",
    );
    let s3 = S3::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!(
            "[engine]\nstate_dir = \"state\"\n[watch]\nallow_empty_rules = true\n\n{}\n[database.backup_store]\nurl = \"s3://{BUCKET}/prod/db\"\nkeep = 2\n",
            database_toml(&pg, "keep_backups = 5")
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    let env = s3.env();
    let (code, out, err) = run(dir.path(), &["check"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "database.backup_store OK: s3://{BUCKET}/prod/db/app@127.0.0.1 answers, 0 copies"
        )),
        "{out}"
    );

    let mut copies = Vec::new();
    for _ in 0..3 {
        let (code, out, err) = run(dir.path(), &["backup", "create"], &env);
        assert_eq!(code, 0, "{out}{err}");
        copies.push(copied_to(&out));
    }
    // keep = 2 in the store (5 on this machine): the first copy is pruned,
    // with its checksum and metadata.
    // Under the database's own folder: another database sharing the
    // prefix never prunes these.
    let prefix = "prod/db/app@127.0.0.1/";
    let keys = s3.keys(BUCKET);
    assert_eq!(keys.len(), 6, "{keys:?}");
    let first = copies[0].trim_start_matches(&format!("s3://{BUCKET}/"));
    assert!(!keys.iter().any(|k| k.starts_with(first)), "{keys:?}");
    // Each copy is byte for byte the local dump, its .sha256 the local one.
    let newest = copies[2]
        .trim_start_matches(&format!("s3://{BUCKET}/"))
        .to_string();
    let name = newest.trim_start_matches(prefix);
    let local = dir.path().join("state/backups").join(name);
    assert_eq!(s3.get(BUCKET, &newest), std::fs::read(&local).unwrap());
    assert_eq!(
        s3.get(BUCKET, &format!("{newest}.sha256")),
        std::fs::read(format!("{}.sha256", local.display())).unwrap()
    );
    let meta: Value = serde_json::from_slice(&s3.get(BUCKET, &format!("{newest}.json"))).unwrap();
    assert_eq!(meta["remote_url"], copies[2].as_str());
    // The dump is compressed (`pg_dump --compress=9` by default).
    let listed = std::process::Command::new("pg_restore")
        .arg("--list")
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("Compression: 9"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );

    let (code, out, err) = run(dir.path(), &["backup", "list"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("local ")).count(),
        3,
        "{out}"
    );
    let remote: Vec<&str> = out.lines().filter(|l| l.starts_with("remote ")).collect();
    assert_eq!(remote.len(), 2, "{out}");
    assert!(remote[0].contains(&copies[2]), "newest first: {out}");
    let (code, out, _) = run(dir.path(), &["backup", "list", "--json"], &env);
    assert_eq!(code, 0);
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.iter().filter(|b| b["location"] == "remote").count(), 2);
    assert_eq!(all[0]["remote_url"], copies[2].as_str());

    // The store from the environment alone, as on Railway.
    let bare = tempfile::tempdir().unwrap();
    std::fs::write(
        bare.path().join("rollbackd.toml"),
        "[engine]\nstate_dir = \"state\"\n",
    )
    .unwrap();
    let mut bare_env = env.clone();
    bare_env.push(("DATABASE_URL", pg.url()));
    bare_env.push((
        "ROLLBACKD_DATABASE__BACKUP_STORE__URL",
        format!("s3://{BUCKET}/prod/db"),
    ));
    let (code, out, err) = run(bare.path(), &["backup", "list"], &bare_env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("remote ")).count(),
        2,
        "{out}"
    );

    let (code, out, err) = run(dir.path(), &["backup", "verify", &copies[2]], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("backup {} is intact", copies[2])),
        "{out}"
    );

    // Restored from the store into a new database, rows intact.
    let (code, out, err) = run(
        dir.path(),
        &[
            "backup",
            "restore",
            &copies[1],
            "--dbname",
            "app_from_s3",
            "--yes",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        pg.psql(
            "app_from_s3",
            "SELECT count(*) FROM items WHERE note = 'kept'"
        ),
        "1000"
    );

    // A copy damaged in the store is caught by its checksum, named by its URL.
    let mut bytes = s3.get(BUCKET, &newest);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    s3.put(BUCKET, &newest, bytes);
    let (code, out, err) = run(dir.path(), &["backup", "verify", &copies[2]], &env);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("backup {} is corrupt", copies[2])),
        "{err}"
    );
    let (code, _, err) = run(
        dir.path(),
        &[
            "backup",
            "restore",
            &copies[2],
            "--dbname",
            "app_damaged",
            "--yes",
        ],
        &env,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("backup {} is corrupt", copies[2])),
        "the URL, not the download's path: {err}"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app_damaged'"
        ),
        "0",
        "nothing restored from a damaged copy"
    );
    // Downloads leave nothing behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state/backups"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".download"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A URL that names no copy.
    let missing = format!("s3://{BUCKET}/prod/db/rollbackd-20200101T000000Z-rb-0.dump");
    let (code, _, err) = run(dir.path(), &["backup", "verify", &missing], &env);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot download") && err.contains(&missing),
        "{err}"
    );
}

/// A service live at d3 with d2 before it (both at revision c, so no
/// downgrade), whose backup store is the bucket `bucket`.
fn with_store(pg: &Postgres, bucket: &str, required: bool, extra: &str) -> Scene {
    let scene = Scene::new(
        pg,
        &format!("backup_required = {required}"),
        "[watch]\nallow_empty_rules = true",
    )
    .seeded(&[("d2", "c"), ("d3", "c")]);
    scene.edit_config(|config| {
        format!("{config}\n[database.backup_store]\nurl = \"s3://{bucket}/rollbackd\"\n\n{extra}")
    });
    std::fs::create_dir_all(scene.path().join("rules")).unwrap();
    scene
}

/// A rollback of d3 to d2 with the backup store in `bucket`.
fn rollback_with_store(
    pg: &Postgres,
    s3: &S3,
    bucket: &str,
    required: bool,
) -> (FakeRailway, tempfile::TempDir, i32, String) {
    let scene = with_store(pg, bucket, required, "");
    let (code, out, err) = run(
        scene.path(),
        &["rollback", "--yes", "--reason", "test"],
        &s3.env(),
    );
    // The service stops with the scene, once the rollback has run.
    let Scene { railway, dir, .. } = scene;
    (railway, dir, code, format!("{out}{err}"))
}

fn pre_validation(dir: &Path) -> Value {
    phase(&history(dir)["events"][0], "pre_validation").clone()
}

#[test]
fn a_failed_upload_is_a_warning_unless_backups_are_required() {
    let pg = Postgres::start();
    alembic_upgrade(&pg.url(), "c");
    let s3 = S3::start();
    s3.create_bucket(BUCKET);

    // The copy reaches the store during a rollback.
    let (railway, dir, code, out) = rollback_with_store(&pg, &s3, BUCKET, true);
    assert_eq!(code, 0, "{out}");
    assert_eq!(railway.rollbacks(), ["d2"]);
    let detail = pre_validation(dir.path())["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("copied to s3://backups/rollbackd/app@127.0.0.1/rollbackd-"),
        "{detail}"
    );
    assert_eq!(
        s3.keys(BUCKET)
            .iter()
            .filter(|k| k.ends_with(".dump"))
            .count(),
        1
    );

    // No such bucket: the upload fails; the rollback goes on with the
    // local backup and says so.
    let (railway, dir, code, out) = rollback_with_store(&pg, &s3, "no-such-bucket", false);
    assert_eq!(code, 0, "{out}");
    assert_eq!(railway.rollbacks(), ["d2"]);
    let detail = pre_validation(dir.path())["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("verified") && detail.contains("WARNING: not copied off this machine"),
        "{detail}"
    );
    assert!(
        detail.contains("s3://no-such-bucket/rollbackd/app@127.0.0.1/rollbackd-"),
        "{detail}"
    );

    // `check` finds the missing bucket before a rollback needs it.
    let (code, out, err) = run(dir.path(), &["check"], &s3.env());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("database.backup_store:") && err.contains("s3://no-such-bucket/rollbackd"),
        "{err}"
    );

    // backup_required covers the copy: nothing is rolled back.
    let (railway, dir, code, out) = rollback_with_store(&pg, &s3, "no-such-bucket", true);
    assert_ne!(code, 0, "{out}");
    assert!(railway.rollbacks().is_empty(), "{:?}", railway.rollbacks());
    let phase = pre_validation(dir.path());
    assert_eq!(phase["result"], "failed", "{phase}");
    let detail = phase["detail"].as_str().unwrap();
    assert!(
        detail.contains("copy off this machine failed")
            && detail.contains("database.backup_required"),
        "{detail}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/backups"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "dump"))
            .count(),
        1,
        "the local backup is kept"
    );
}

#[test]
fn a_readiness_drill_checks_that_the_store_takes_a_write_and_touches_no_copy() {
    let pg = Postgres::start();
    alembic_upgrade(&pg.url(), "c");
    let s3 = S3::start();
    s3.create_bucket(BUCKET);
    // A copy already there, which the drill must leave alone.
    s3.put(
        BUCKET,
        "rollbackd/app@127.0.0.1/rollbackd-20260101T000000Z-rb-1.dump",
        b"old".to_vec(),
    );
    let drill = "[[drills]]\nname = \"weekly\"\nschedule = \"0 30 9 * * Mon\"\n";
    let scene = with_store(&pg, BUCKET, false, drill);
    let dir = &scene.dir;
    let (code, out, err) = run(dir.path(), &["drill", "run", "weekly"], &s3.env());
    assert_eq!(code, 0, "{out}{err}");
    let backup = out
        .lines()
        .find(|l| l.contains("] backup "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        backup.contains(
            "the backup store s3://backups/rollbackd/app@127.0.0.1 takes a write, a read and a delete; 1 copies"
        ),
        "{backup}"
    );
    assert_eq!(
        s3.keys(BUCKET),
        ["rollbackd/app@127.0.0.1/rollbackd-20260101T000000Z-rb-1.dump"],
        "the probe is deleted, the copy kept, the drill's dump not uploaded"
    );

    let scene = with_store(&pg, "no-such-bucket", false, drill);
    let dir = &scene.dir;
    let (code, out, err) = run(dir.path(), &["drill", "run", "weekly"], &s3.env());
    assert_eq!(code, 1, "{out}{err}");
    let backup = out
        .lines()
        .find(|l| l.contains("] backup "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        backup.contains("FAILED")
            && backup.contains(
                "the backup store: cannot write to s3://no-such-bucket/rollbackd/app@127.0.0.1/.rollbackd-probe-"
            ),
        "{backup}"
    );
}

#[test]
fn watch_says_at_start_when_the_backup_store_cannot_be_used() {
    // Once `watch` started in silence with a store it could not use, and
    // every emergency backup stayed on the pod.
    let pg = Postgres::start();
    alembic_upgrade(&pg.url(), "c");
    let s3 = S3::start();
    s3.create_bucket(BUCKET);
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (bucket, usable) in [("no-such-bucket", false), (BUCKET, true)] {
        let scene = with_store(&pg, bucket, false, "");
        let dir = &scene.dir;
        let config = std::fs::read_to_string(dir.path().join("rollbackd.toml")).unwrap();
        let w = support::Watcher::start_with_env(dir.path(), &config, &env);
        let gauge = support::wait_for(
            "the store to be looked at",
            std::time::Duration::from_secs(30),
            || w.metric("rollbackd_backup_store_usable", &[]),
        );
        let (code, body) = support::http_get(&format!("{}/readyz", w.url())).unwrap();
        assert_eq!(code, 200, "{body}");
        if usable {
            assert_eq!(gauge, 1.0);
            assert!(!body.contains("backup_store"), "{body}");
        } else {
            assert_eq!(gauge, 0.0);
            let said = w.wait_for_log(
                "the backup store cannot be used",
                std::time::Duration::from_secs(5),
            );
            assert!(said.to_string().contains("no-such-bucket"), "{said}");
            assert!(
                body.contains("database.backup_store cannot be used")
                    && body.contains("no-such-bucket"),
                "{body}"
            );
        }
    }
}
