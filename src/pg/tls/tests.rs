//! libpq's reading of the TLS settings, on hand-made parameters and files.

use super::*;

fn tls(url: &[(&str, &str)], env: &[(&str, &str)]) -> Result<PgTls, DbError> {
    let params: Vec<(String, String)> = url
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    PgTls::from_parameters(
        &params,
        |k| env.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone()),
        None,
    )
}

fn child_env(t: &PgTls) -> std::collections::BTreeMap<&'static str, String> {
    t.libpq_env().iter().cloned().collect()
}

#[test]
fn the_url_wins_over_the_environment_and_prefer_is_the_default() {
    assert_eq!(tls(&[], &[]).unwrap().mode, SslMode::Prefer);
    let t = tls(
        &[("sslmode", "require")],
        &[
            ("PGSSLMODE", "disable"),
            ("PGSSLCERT", "/c.pem"),
            ("PGSSLKEY", "/c.key"),
        ],
    )
    .unwrap();
    assert_eq!(t.mode, SslMode::Require);
    let env = child_env(&t);
    assert_eq!(env["PGSSLMODE"], "require");
    assert_eq!(env["PGSSLCERT"], "/c.pem");
    assert_eq!(env["PGSSLKEY"], "/c.key");
    assert!(!t.verifies_chain());
}

#[test]
fn wrong_settings_are_named_with_what_to_write() {
    let err = |url: &[(&str, &str)], env: &[(&str, &str)]| tls(url, env).unwrap_err().to_string();
    let e = err(&[("sslmode", "verify")], &[]);
    assert!(
        e.contains("sslmode in the database URL = \"verify\""),
        "{e}"
    );
    assert!(e.contains("verify-full"), "{e}");
    let e = err(&[], &[("PGSSLMODE", "on")]);
    assert!(e.contains("PGSSLMODE = \"on\""), "{e}");
    let e = err(&[("sslmode", "verify-ca")], &[]);
    assert!(e.contains("set sslrootcert"), "{e}");
    let e = err(&[("sslrootcert", "system"), ("sslmode", "require")], &[]);
    assert!(e.contains("use verify-full"), "{e}");
    let e = err(&[("sslcert", "/c.pem")], &[]);
    assert!(e.contains("set sslkey"), "{e}");
    let e = err(&[("sslpassword", "x")], &[]);
    assert!(e.contains("store the key unencrypted"), "{e}");
    let e = err(&[("ssl_min_protocol_version", "TLSv1.1")], &[]);
    assert!(e.contains("TLS 1.2 and 1.3 only"), "{e}");
    let e = err(&[("sslsni", "yes")], &[]);
    assert!(e.contains("write 1 or 0"), "{e}");
}

#[test]
fn system_roots_mean_verify_full_and_reach_old_libpq_as_a_file() {
    let t = tls(&[("sslrootcert", "system")], &[]).unwrap();
    assert_eq!(t.mode, SslMode::VerifyFull);
    let env = child_env(&t);
    assert_ne!(env.get("PGSSLROOTCERT").map(String::as_str), Some("system"));
}

#[test]
fn libpqs_default_files_are_used_when_they_exist() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".postgresql");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("root.crt"), "x").unwrap();
    let t = PgTls::from_parameters(&[], |_| None, Some(home.path())).unwrap();
    assert!(t.verifies_chain());
    assert!(
        t.describe().contains("~/.postgresql/root.crt"),
        "{}",
        t.describe()
    );
    assert!(t.cert.is_none(), "no postgresql.crt, no client certificate");
}

#[test]
fn a_key_others_can_read_is_refused_as_libpq_refuses_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client.key");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = key_permissions(&key, "sslkey in the database URL")
        .unwrap_err()
        .to_string();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key_permissions(&key, "sslkey").unwrap();
}
