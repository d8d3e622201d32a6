//! The store against a real file:// store in a temp dir: upload, read-back,
//! listing, pruning, download, and a copy that reads back differently.

use super::*;

#[test]
fn urls_are_parsed_and_bad_ones_named() {
    let s3 = Location::parse("s3://backups/rollbackd/prod/").unwrap();
    assert_eq!(s3.scheme, Scheme::S3);
    assert_eq!(s3.bucket, "backups");
    assert_eq!(s3.url_of(&s3.key), "s3://backups/rollbackd/prod");
    let file = Location::parse("file:///mnt/backups").unwrap();
    assert_eq!(file.url_of(&file.key), "file:///mnt/backups");
    for (url, says) in [
        ("gs://bucket/x", "uses gs:"),
        ("s3:///x", "names no bucket"),
        ("backups/x", "is not a URL"),
        ("s3://bucket/x?versionId=1", "query"),
        ("file://host/x", "names a host"),
    ] {
        let e = Location::parse(url).unwrap_err().to_string();
        assert!(e.contains(says), "{url}: {e}");
    }
    let e = Location::parse("s3://AKIAEXAMPLE:hunter2@bucket/x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("must not carry credentials"), "{e}");
    assert!(!e.contains("hunter2") && !e.contains("AKIAEXAMPLE"), "{e}");
}

/// A backup file as `backup::create` leaves it, without pg_dump.
fn local_backup(dir: &Path, name: &str, bytes: &[u8]) -> Backup {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    Backup {
        path,
        sha256: hex(&Sha256::digest(bytes)),
        size_bytes: bytes.len() as u64,
        created_at: "2026-01-01T00:00:00Z".into(),
        database: "db".into(),
        deployment_id: "d1".into(),
        reason: "test".into(),
        restore_command: String::new(),
        dump_seconds: 0.0,
        verify_seconds: 0.0,
        remote_url: None,
    }
}

/// The database folder the tests' stores use.
const FOLDER: &str = "app@db";

fn file_store(root: &Path, keep: usize) -> BackupStore {
    file_store_for(root, keep, FOLDER)
}

fn file_store_for(root: &Path, keep: usize, folder: &str) -> BackupStore {
    let config = crate::db::config::BackupStoreConfig {
        url: format!("file://{}/copies", root.display()),
        keep: Some(keep),
        timeout: std::time::Duration::from_secs(10),
    };
    std::fs::create_dir_all(root.join("copies")).unwrap();
    BackupStore::open(&config, 5, folder).unwrap()
}

#[tokio::test]
async fn copies_are_uploaded_read_back_listed_pruned_and_downloaded() {
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let store = file_store(remote.path(), 2);
    let names = [
        "rollbackd-20260101T000000Z-rb-1.dump",
        "rollbackd-20260102T000000Z-bk-1.dump",
        "rollbackd-20260103T000000Z-rb-2.dump",
        "rollbackd-20260104T000000Z-rb-3.dump",
    ];
    for (i, name) in names.iter().enumerate() {
        let mut b = local_backup(local.path(), name, format!("dump {i}").as_bytes());
        let up = store.upload(&mut b).await.unwrap();
        assert_eq!(b.remote_url.as_deref(), Some(up.url.as_str()));
        // As private as the local dump: it holds the whole database.
        use std::os::unix::fs::PermissionsExt;
        let copy = remote.path().join("copies").join(FOLDER).join(name);
        assert_eq!(
            std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            copy.display()
        );
        let meta: Backup =
            serde_json::from_slice(&std::fs::read(backup::metadata_path(&b.path)).unwrap())
                .unwrap();
        assert_eq!(
            meta.remote_url, b.remote_url,
            "the local metadata names the copy"
        );
        if i == 3 {
            assert_eq!(up.pruned.len(), 1, "{:?}", up.pruned);
            assert!(up.pruned[0].ends_with(names[0]), "{:?}", up.pruned);
        }
    }
    // Two emergency copies and the manual one; each with its checksum.
    let listed = store.list().await.unwrap();
    let listed_names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(listed_names, [names[3], names[2], names[1]]);
    assert!(listed.iter().all(|c| c.has_checksum));
    assert!(!remote
        .path()
        .join("copies")
        .join(FOLDER)
        .join(format!("{}.sha256", names[0]))
        .exists());
    let sum = std::fs::read_to_string(
        remote
            .path()
            .join("copies")
            .join(FOLDER)
            .join(format!("{}.sha256", names[3])),
    )
    .unwrap();
    assert_eq!(
        sum,
        format!("{}  {}\n", hex(&Sha256::digest(b"dump 3")), names[3])
    );

    let into = tempfile::tempdir().unwrap();
    let got = download(&listed[0].url, into.path()).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), b"dump 3");
    assert_eq!(
        std::fs::read_to_string(backup::checksum_path(&got)).unwrap(),
        sum
    );
    let missing = format!("{}/rollbackd-20200101T000000Z-rb-0.dump", store.url());
    let e = download(&missing, into.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot download") && e.contains(&missing), "{e}");
    let e = download(&format!("{}/notes.txt", store.url()), into.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not name a backup"), "{e}");
}

#[tokio::test]
async fn a_copy_that_reads_back_differently_is_deleted_and_reported() {
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let store = file_store(remote.path(), 2);
    let name = "rollbackd-20260101T000000Z-rb-1.dump";
    let mut b = local_backup(local.path(), name, b"the dump");
    // The dump changed after it was hashed (or the store mangled it).
    b.sha256 = hex(&Sha256::digest(b"another dump"));
    let e = store.upload(&mut b).await.unwrap_err();
    assert!(matches!(e, StoreError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("it was removed"), "{e}");
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(b.remote_url, None);
}

#[tokio::test]
async fn a_missing_directory_is_refused_not_created_and_incomplete_copies_never_count() {
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let store = file_store(remote.path(), 1);
    // An upload cut short: a newer dump without its .sha256.
    let root = remote.path().join("copies");
    let copies = root.join(FOLDER);
    std::fs::create_dir(&copies).unwrap();
    std::fs::write(
        copies.join("rollbackd-20260109T000000Z-rb-9.dump"),
        b"partial",
    )
    .unwrap();
    // Named by hand: not rollbackd's.
    std::fs::write(copies.join("rollbackd-before-migration.dump"), b"mine").unwrap();
    // Another prefix below this one: not walked, not listed.
    std::fs::create_dir(copies.join("staging")).unwrap();
    std::fs::write(
        copies.join("staging/rollbackd-20260110T000000Z-rb-7.dump"),
        b"x",
    )
    .unwrap();
    std::fs::write(
        copies.join("staging/rollbackd-20260110T000000Z-rb-7.dump.sha256"),
        b"x",
    )
    .unwrap();
    let mut b = local_backup(
        local.path(),
        "rollbackd-20260101T000000Z-rb-1.dump",
        b"dump",
    );
    let up = store.upload(&mut b).await.unwrap();
    assert!(
        up.pruned.is_empty(),
        "the incomplete copy does not push it out: {:?}",
        up.pruned
    );
    let listed: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        listed,
        [
            "rollbackd-20260109T000000Z-rb-9.dump",
            "rollbackd-20260101T000000Z-rb-1.dump"
        ]
    );
    assert!(copies.join("rollbackd-before-migration.dump").exists());

    std::fs::remove_dir_all(&root).unwrap();
    let e = store.upload(&mut b).await.unwrap_err().to_string();
    assert!(
        e.contains("is not a directory here; create or mount it"),
        "{e}"
    );
    assert!(!root.exists(), "never created by rollbackd");
    let e = Location::parse("file:///").unwrap_err().to_string();
    assert!(e.contains("names the root directory"), "{e}");
}

#[tokio::test]
async fn two_databases_sharing_a_prefix_never_list_or_prune_each_others_copies() {
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let orders = file_store_for(remote.path(), 1, "orders@db1");
    let users = file_store_for(remote.path(), 1, "users@db2");
    let mut b = local_backup(
        local.path(),
        "rollbackd-20260101T000000Z-rb-1.dump",
        b"orders",
    );
    orders.upload(&mut b).await.unwrap();
    assert!(b
        .remote_url
        .as_deref()
        .unwrap()
        .ends_with("/copies/orders@db1/rollbackd-20260101T000000Z-rb-1.dump"));
    // Newer, and keep = 1: it would have pruned the orders copy.
    let mut b = local_backup(
        local.path(),
        "rollbackd-20260102T000000Z-rb-2.dump",
        b"users",
    );
    let up = users.upload(&mut b).await.unwrap();
    assert!(up.pruned.is_empty(), "{:?}", up.pruned);
    assert_eq!(orders.list().await.unwrap().len(), 1);
    assert_eq!(users.list().await.unwrap().len(), 1);
    let folder = remote.path().join("copies/orders@db1");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn a_url_that_does_not_parse_is_quoted_without_its_user_part() {
    let e = Location::parse("s3://AKIAX:abc/def@bucket/x")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("abc") && !e.contains("AKIAX"), "{e}");
    assert!(e.contains("s3://***@bucket/x"), "{e}");
}

#[test]
fn a_secret_in_the_query_or_fragment_is_never_quoted() {
    for url in [
        "s3://bucket/x?x-amz-credential=AKIAs3kr1t",
        "s3://bucket/x?token=s3kr1t-token",
        "s3://bucket/x#secret=s3kr1t-fragment",
        "s3://AK:s3kr1tkey@bucket/x?token=s3kr1t2",
        "gs://bucket/x?token=s3kr1t3",
    ] {
        let e = Location::parse(url).unwrap_err().to_string();
        assert!(!e.contains("s3kr1t"), "{url}: {e}");
    }
    assert_eq!(redact("s3://bucket/x?token=SECRET"), "s3://bucket/x?***");
    assert_eq!(redact("s3://bucket/x"), "s3://bucket/x");
}
