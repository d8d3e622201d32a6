//! PostgreSQL over TLS, as libpq reads the URL: a real PostgreSQL 15 with
//! `ssl = on` that refuses plain text (`hostnossl … reject`) and wants a
//! client certificate from one user, with certificates made by openssl.
//! rollbackd's own sessions (`check`, the state backend), Alembic and
//! pg_dump/pg_restore all get through with one URL; each wrong setting is
//! refused saying what to change.

use crate::support;

use std::path::Path;

use support::postgres::{alembic, alembic_ini, alembic_upgrade, Postgres, Tls};
use support::run_rollbackd;

const HBA: &str = "local all all trust\n\
                   hostssl all postgres 127.0.0.1/32 trust\n\
                   hostssl all certuser 127.0.0.1/32 cert\n\
                   hostnossl all all 127.0.0.1/32 reject\n";

struct Setup {
    pg: Postgres,
    certs: tempfile::TempDir,
    /// An empty HOME: no ~/.postgresql defaults.
    home: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let certs = tempfile::tempdir().unwrap();
        support::tls::ca(certs.path(), "good");
        // The server's certificate names localhost only: 127.0.0.1 passes
        // verify-ca, not verify-full.
        support::tls::leaf(certs.path(), "good", "server", "localhost", "DNS:localhost");
        support::tls::leaf(certs.path(), "good", "client", "certuser", "DNS:certuser");
        support::tls::ca(certs.path(), "other");
        let path = |f: &str| certs.path().join(f);
        let pg = Postgres::start_tls(Tls {
            cert: &path("good-server.pem"),
            key: &path("good-server.key"),
            ca: &path("good-ca.pem"),
            hba: HBA,
        });
        pg.psql("postgres", "CREATE ROLE certuser LOGIN SUPERUSER");
        alembic_upgrade(&pg.url(), "b");
        Setup {
            pg,
            certs,
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn cert(&self, f: &str) -> String {
        self.certs.path().join(f).display().to_string()
    }

    /// `user@host:port/app?query`
    fn url(&self, user: &str, host: &str, query: &str) -> String {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("postgres://{user}@{host}:{}/app{q}", self.pg.port)
    }

    /// `rollbackd check` with `url` as database.url (and as state.url with
    /// the PostgreSQL state when `state`), plus `env`.
    fn run(&self, url: &str, state: bool, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), url, state);
        let home = self.home.path().display().to_string();
        let mut env = env.to_vec();
        env.push(("HOME", &home));
        let (code, out, err) = run_rollbackd(dir.path(), args, &env);
        let text = format!("{out}{err}");
        assert!(!text.contains("panicked"), "{text}");
        (code, text)
    }

    fn check(&self, url: &str, env: &[(&str, &str)]) -> (i32, String) {
        self.run(url, false, &["check"], env)
    }
}

fn write_config(dir: &Path, url: &str, state: bool) {
    let state = if state {
        format!("[state]\nbackend = \"postgres\"\nurl = \"{url}\"\n")
    } else {
        String::new()
    };
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rollbackd.toml"),
        format!(
            "[engine]\nstate_dir = \"state\"\n[watch]\nallow_empty_rules = true\n{state}\n\
             [database]\nurl = \"{url}\"\nstatement_timeout = \"10s\"\n\n\
             [migrations]\ncommand = [\"{}\"]\nconfig = \"{}\"\n",
            alembic().display(),
            alembic_ini().display()
        ),
    )
    .unwrap();
}

#[test]
fn one_url_carries_tls_to_rollbackd_alembic_and_pg_dump_and_each_wrong_setting_is_named() {
    let s = Setup::start();
    let ca = s.cert("good-ca.pem");

    // verify-full with the CA, by the name on the certificate: rollbackd's
    // session and Alembic's both get through, and `check` says how.
    let full = s.url(
        "postgres",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let (code, text) = s.check(&full, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("answers, at revision b"), "{text}");
    assert!(
        text.contains("migrations OK: `alembic current` names b"),
        "{text}"
    );
    assert!(
        text.contains("database TLS OK: TLSv1.3, sslmode=verify-full: certificate and host name verified against sslrootcert in the database URL"),
        "{text}"
    );

    // The same settings from libpq's variables instead of the URL.
    let (code, text) = s.check(
        &s.url("postgres", "localhost", ""),
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("verified against PGSSLROOTCERT"), "{text}");

    // By IP: the certificate does not name it. verify-full refuses and says
    // why; verify-ca checks the chain only and gets through.
    let (code, text) = s.check(
        &s.url(
            "postgres",
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        &[],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("the server's certificate does not name \"127.0.0.1\""),
        "{text}"
    );
    let (code, text) = s.check(
        &s.url(
            "postgres",
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        &[],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("certificate chain verified"), "{text}");

    // Another CA: not trusted, and the message names the setting.
    let (code, text) = s.check(
        &s.url(
            "postgres",
            "localhost",
            &format!("sslmode=verify-ca&sslrootcert={}", s.cert("other-ca.pem")),
        ),
        &[],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("not signed by a CA in sslrootcert in the database URL"),
        "{text}"
    );

    // libpq's default, prefer: TLS, and `check` warns that nothing is verified.
    let (code, text) = s.check(&s.url("postgres", "127.0.0.1", ""), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("sslmode=prefer: the server's certificate is NOT verified"),
        "{text}"
    );

    // Plain text is refused by the server; the message says to ask for TLS.
    let (code, text) = s.check(&s.url("postgres", "127.0.0.1", "sslmode=disable"), &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("accepts only TLS connections"), "{text}");

    // Settings that cannot work are refused before connecting.
    for (query, env, says) in [
        (
            "sslmode=verify",
            vec![],
            "sslmode in the database URL = \"verify\"",
        ),
        ("sslmode=verify-ca", vec![], "set sslrootcert"),
        ("", vec![("PGSSLMODE", "on")], "PGSSLMODE = \"on\""),
        (
            "sslrootcert=system&sslmode=require",
            vec![],
            "use verify-full",
        ),
    ] {
        let (code, text) = s.check(&s.url("postgres", "localhost", query), &env);
        assert_eq!(code, 2, "{query}: {text}");
        assert!(text.contains(says), "{query}: {text}");
    }
    let (code, text) = s.check(
        &s.url(
            "postgres",
            "localhost",
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        ),
        &[],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("sslrootcert in the database URL (/nonexistent/ca.pem)"),
        "{text}"
    );

    // A user the server admits by client certificate only.
    let (code, text) = s.check(
        &s.url(
            "certuser",
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        &[],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("set sslcert and sslkey"), "{text}");
    let with_cert = s.url(
        "certuser",
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
            s.cert("good-client.pem"),
            s.cert("good-client.key")
        ),
    );
    let (code, text) = s.check(&with_cert, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("client certificate from sslcert in the database URL"),
        "{text}"
    );
    // pg_dump and pg_restore get every setting through libpq's variables:
    // without the certificate the server would refuse the dump.
    let (code, text) = s.run(&with_cert, false, &["backup", "create"], &[]);
    assert_eq!(code, 0, "{text}");
    // The PostgreSQL state backend, over the same URL.
    let (code, text) = s.run(&with_cert, true, &["breaker", "status"], &[]);
    assert_eq!(code, 0, "{text}");

    // A key others may read is refused, as libpq (and so pg_dump) refuses it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        s.certs.path().join("good-client.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (code, text) = s.check(&with_cert, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("chmod 600"), "{text}");
}

/// The URL of the user admitted by certificate only, verified in full.
fn cert_url(s: &Setup) -> String {
    s.url(
        "certuser",
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            s.cert("good-ca.pem"),
            s.cert("good-client.pem"),
            s.cert("good-client.key")
        ),
    )
}

#[test]
fn a_rollback_backs_up_and_downgrades_over_tls_with_a_client_certificate() {
    let s = Setup::start();
    alembic_upgrade(&s.pg.url(), "c");
    s.pg.psql("app", "INSERT INTO items (name, note) VALUES ('one', 'n1')");
    let railway = support::fake_railway::FakeRailway::start();
    let service = support::FakeService::start();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &cert_url(&s), false);
    let mut config = std::fs::read_to_string(dir.path().join("rollbackd.toml")).unwrap();
    config.push_str(&format!(
        "\n[service]\nbase_url = \"{}\"\n\n{}\n[verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n",
        service.url(),
        railway.provider_toml()
    ));
    std::fs::write(dir.path().join("rollbackd.toml"), config).unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/revisions.json"),
        r#"{"deployments":{"d2":{"revision":"b","seen_at":"2030-01-01T00:00:00Z"},"d3":{"revision":"c","seen_at":"2030-01-01T00:00:00Z"}}}"#,
    )
    .unwrap();
    let home = s.home.path().display().to_string();
    let (code, out, err) = run_rollbackd(
        dir.path(),
        &["rollback", "--yes", "--reason", "test"],
        &[("HOME", &home)],
    );
    // The advisory lock and alembic_version (rollbackd's own sessions),
    // the backup (pg_dump) and the downgrade (Alembic) all went over TLS
    // as certuser: the server admits it no other way.
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("downgraded c -> b; alembic_version verified"),
        "{out}"
    );
    assert_eq!(
        s.pg.psql("app", "SELECT version_num FROM alembic_version"),
        "b"
    );
    assert_eq!(
        s.pg.psql("app", "SELECT string_agg(name, ',') FROM items"),
        "one"
    );
    assert_eq!(railway.rollbacks(), ["d2"]);
    let history: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    let backup = history["events"][0]["backup"]["path"].as_str().unwrap();
    assert!(Path::new(backup).exists(), "{history}");
    assert!(
        s.pg.psql(
            "app",
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE NOT ssl AND client_addr IS NOT NULL"
        ) == "0",
        "no plain-text session from the loopback"
    );
}

#[test]
fn two_replicas_elect_one_leader_over_tls_and_the_other_takes_over() {
    let s = Setup::start();
    let railway = support::fake_railway::FakeRailway::start();
    let home = s.home.path().display().to_string();
    let config = format!(
        "[watch]\nallow_empty_rules = true\nrule_paths = [\"rules\"]\n\n[blame]\nenabled = false\n\n\
         [engine]\nstate_dir = \"state\"\n\n{}\n\
         [state]\nbackend = \"postgres\"\nurl = \"{}\"\nleader_check = \"500ms\"\n",
        railway.provider_toml(),
        cert_url(&s)
    );
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir(d.path().join("rules")).unwrap();
            d
        })
        .collect();
    let mut replicas: Vec<Option<support::Watcher>> = dirs
        .iter()
        .map(|d| {
            Some(support::Watcher::start_with_env(
                d.path(),
                &config,
                &[("HOME", &home)],
            ))
        })
        .collect();
    let leader = |replicas: &[Option<support::Watcher>]| {
        support::wait_for(
            "exactly one leader",
            std::time::Duration::from_secs(20),
            || {
                let leading: Vec<usize> = replicas
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| {
                        w.as_ref()
                            .is_some_and(|w| w.api("/api/v1/leader")["leader"] == true)
                    })
                    .map(|(i, _)| i)
                    .collect();
                (leading.len() == 1).then(|| leading[0])
            },
        )
    };
    let first = leader(&replicas);
    // Kill the leader: the other wins the election, over TLS too.
    replicas[first] = None;
    let second = leader(&replicas);
    assert_ne!(first, second);
}
