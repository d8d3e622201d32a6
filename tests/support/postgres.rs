//! A throwaway PostgreSQL 15 cluster for tests: `initdb` and `pg_ctl` from
//! /usr/lib/postgresql/15/bin, in a temp dir, on a free loopback port, and
//! real Alembic from the virtualenv `scripts/install-deps.sh` creates.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root; as root, run it as the `postgres` user.
fn pg_command(program: &str) -> Command {
    let path = format!("{BIN}/{program}");
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", &path]);
        cmd
    } else {
        Command::new(path)
    }
}

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
    /// The processes [`Postgres::pause`] stopped.
    paused: Vec<i32>,
}

/// TLS for a cluster: its certificate and key, the CA whose client
/// certificates it accepts, and the whole of its pg_hba.conf.
pub struct Tls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
    pub hba: &'a str,
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A cluster with `ssl = on` and `tls.hba` as its pg_hba.conf.
    pub fn start_tls(tls: Tls<'_>) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<Tls<'_>>) -> Self {
        assert!(
            Path::new(BIN).join("initdb").exists(),
            "PostgreSQL 15 is not installed ({BIN}/initdb is missing). Install it with \
             `apt-get install -y postgresql-15`, or run the suite through scripts/test.sh, which installs it."
        );
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the cluster directory failed");
        }
        let out = pg_command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(dir.path().join("data"))
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(tls) = tls {
            let data = dir.path().join("data");
            let mut conf = String::from("ssl = on\n");
            for (key, from, name) in [
                ("ssl_cert_file", tls.cert, "server.crt"),
                ("ssl_key_file", tls.key, "server.key"),
                ("ssl_ca_file", tls.ca, "ca.crt"),
            ] {
                let to = data.join(name);
                std::fs::copy(from, &to).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
                if is_root() {
                    let ok = Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(&to)
                        .status()
                        .unwrap();
                    assert!(ok.success(), "chown of {name} failed");
                }
                conf.push_str(&format!("{key} = '{}'\n", to.display()));
            }
            let mut text = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            text.push_str(&conf);
            std::fs::write(data.join("postgresql.conf"), text).unwrap();
            std::fs::write(data.join("pg_hba.conf"), tls.hba).unwrap();
        }
        let mut pg = Postgres {
            port: super::free_port(),
            dir,
            running: false,
            paused: Vec::new(),
        };
        pg.launch();
        pg.psql("postgres", "CREATE DATABASE app");
        pg
    }

    fn launch(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = true;
    }

    /// The directory of the cluster's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The port (also the socket's name: `.s.PGSQL.PORT`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/app`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/app", self.port)
    }

    /// Runs SQL with psql; returns unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Holds `pg_advisory_lock(key)` in another session until the child is killed.
    pub fn hold_advisory_lock(&self, key: i64) -> Child {
        let child = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &self.port.to_string(),
                "-d",
                "app",
            ])
            .args([
                "-c",
                &format!("SELECT pg_advisory_lock({key})"),
                "-c",
                "SELECT pg_sleep(60)",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        super::wait_for(
            "the other session to hold the lock",
            Duration::from_secs(10),
            || {
                let n = self.psql(
                    "app",
                    &format!(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                     AND ((classid::bigint << 32) | objid::bigint) = {key}"
                    ),
                );
                (n == "1").then_some(())
            },
        );
        child
    }

    /// Ends every other session holding an advisory lock (a killed psql's
    /// backend would otherwise keep sleeping, and holding, until pg_sleep ends),
    /// and waits until they are gone: without the timeout argument
    /// `pg_terminate_backend` only signals, and the locks can still show as
    /// granted for a moment (a race the replicas test once lost in CI).
    pub fn release_advisory_locks(&self) {
        self.psql(
            "app",
            "SELECT count(pg_terminate_backend(pid, 10000)) FROM \
             (SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()) held",
        );
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = pg_command("pg_ctl")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .output();
            self.running = false;
        }
    }

    /// Freezes the whole cluster (`SIGSTOP` to the postmaster and every
    /// backend): connections stay open and nothing answers, as a server
    /// that hangs. [`Postgres::resume`] (or dropping it) thaws it.
    pub fn pause(&mut self) {
        let pid_file = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .expect("the cluster runs");
        let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        let mut pids: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    stat.rsplit(')')
                        .next()
                        .and_then(|rest| rest.split_whitespace().nth(1))
                        .is_some_and(|ppid| ppid == postmaster.to_string())
                })
            })
            .collect();
        pids.push(postmaster);
        for pid in &pids {
            // SAFETY: a plain system call.
            unsafe { libc::kill(*pid, libc::SIGSTOP) };
        }
        self.paused = pids;
    }

    /// Thaws a paused cluster.
    pub fn resume(&mut self) {
        for pid in std::mem::take(&mut self.paused).iter().rev() {
            // SAFETY: a plain system call.
            unsafe { libc::kill(*pid, libc::SIGCONT) };
        }
    }

    /// Starts it again after `stop`, on the same port with the same data.
    pub fn start_again(&mut self) {
        if !self.running {
            self.launch();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}

/// The Alembic the test suite installed into `.venv`.
pub fn alembic() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/alembic");
    assert!(
        path.exists(),
        "Alembic is not installed at {}. Run the suite through scripts/test.sh, which creates .venv \
         with `pip install alembic psycopg2-binary`.",
        path.display()
    );
    path
}

/// The fixture migration project.
pub fn alembic_ini() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alembic/alembic.ini")
}

/// `alembic upgrade REV` against `url`.
pub fn alembic_upgrade(url: &str, rev: &str) {
    let out = Command::new(alembic())
        .arg("-c")
        .arg(alembic_ini())
        .args(["upgrade", rev])
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "alembic upgrade {rev}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `[database]` and `[migrations]` sections for this cluster.
pub fn database_toml(pg: &Postgres, extra: &str) -> String {
    format!(
        "[database]\nurl = \"{}\"\nstatement_timeout = \"10s\"\n{extra}\n\n\
         [migrations]\ncommand = [\"{}\"]\nconfig = \"{}\"\n",
        pg.url(),
        alembic().display(),
        alembic_ini().display()
    )
}
