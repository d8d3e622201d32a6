//! PostgreSQL connections, for the service's database (`crate::db`) and
//! for the shared state store (`crate::state::postgres`): the URL read once
//! into what libpq's tools and tokio-postgres each need, TLS as libpq reads
//! it (`tls`), and sessions that give up on a server that never answers.

pub mod tls;

use std::time::Duration;

use crate::secret::Secret;

/// The URL parser's error, named through reqwest so rollbackd needs no
/// direct dependency on the `url` crate.
pub type UrlError = <reqwest::Url as std::str::FromStr>::Err;

/// Why a database step failed, or the database cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No `database.url` and no DATABASE_URL.
    #[error("database.url: not set (or set DATABASE_URL)")]
    NoUrl,
    /// `database.url` does not parse as a URL.
    #[error("database.url is not a postgres:// URL: {0}")]
    BadUrl(UrlError),
    /// `database.url` names another database system.
    #[error("database.url uses {0:?}; rollbackd supports PostgreSQL URLs (postgres://user:pass@host:5432/db)")]
    NotPostgres(String),
    /// A TLS setting (in the URL or a PGSSL* variable) cannot be used.
    #[error("database.url: {0}")]
    BadParameter(String),
    /// A certificate or key file for TLS cannot be used.
    #[error("database TLS: {0}")]
    Tls(String),
    /// The server could not be reached or refused the session.
    #[error("cannot connect to the database ({target}): {message}")]
    Connect { target: String, message: String },
    /// A statement failed.
    #[error("database query failed: {0}")]
    Query(String),
    /// The migration tool failed or could not be run.
    #[error("{0}")]
    Tool(String),
    /// Another session holds the migration lock.
    #[error("the migration lock (advisory lock {key}) is held by another session; gave up after {}", crate::duration::format(*waited))]
    LockBusy { key: i64, waited: Duration },
}

/// Connection details, parsed once from the URL; the password stays secret.
#[derive(Clone)]
pub struct Database {
    url: Secret,
    /// The URL without the TLS parameters, for tokio-postgres (which knows
    /// only some of them).
    session_url: Secret,
    /// `host:port/dbname`, safe to print.
    pub target: String,
    env: Vec<(&'static str, String)>,
    dbname: String,
    /// `<dbname>@<host>`, the folder its copies go to in a backup store.
    store_folder: String,
    /// TLS, as libpq reads it.
    pub tls: tls::PgTls,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Database {
    pub fn new(url: Secret) -> Result<Database, DbError> {
        // `postgres://user@/db?host=/run/postgresql` is a libpq URL with no
        // host (a local socket), which the URL parser refuses: parse it
        // with a placeholder host, read as none.
        const NO_HOST: &str = "rollbackd-no-host";
        let parsed = reqwest::Url::parse(url.expose())
            .or_else(|e| match url.expose().split_once("@/") {
                Some((head, tail)) => reqwest::Url::parse(&format!("{head}@{NO_HOST}/{tail}")),
                None => Err(e),
            })
            .map_err(DbError::BadUrl)?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(DbError::NotPostgres(parsed.scheme().to_string()));
        }
        // The host may be a %-encoded socket directory, or given (with the
        // port, user, password or database) as a query parameter, as libpq
        // reads them: `postgres:///app?host=/run/postgresql`.
        let mut host = parsed
            .host_str()
            .filter(|h| *h != NO_HOST)
            .map(decode)
            .unwrap_or_default();
        let mut port = parsed.port().map(|p| p.to_string()).unwrap_or_default();
        let mut user = decode(parsed.username());
        let mut password = parsed.password().map(decode);
        let mut db = decode(parsed.path().trim_start_matches('/'));
        let parameters: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        let tls = tls::PgTls::from_parameters(
            &parameters,
            |var| std::env::var(var).ok(),
            home.as_deref(),
        )?;
        for (k, v) in parsed.query_pairs() {
            match &*k {
                "host" => host = v.into_owned(),
                "port" => port = v.into_owned(),
                "user" => user = v.into_owned(),
                "password" => password = Some(v.into_owned()),
                "dbname" => db = v.into_owned(),
                _ => {}
            }
        }
        let mut env = Vec::new();
        for (key, value) in [
            ("PGHOST", Some(host.clone())),
            ("PGPORT", Some(port.clone())),
            ("PGUSER", Some(user)),
            ("PGPASSWORD", password),
            ("PGDATABASE", Some(db.clone())),
        ] {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                env.push((key, value));
            }
        }
        env.extend(tls.libpq_env().iter().cloned());
        let shown_host = if host.is_empty() {
            "local socket"
        } else {
            &host
        };
        let shown_port = if port.is_empty() { "5432" } else { &port };
        let store_folder = format!(
            "{db}@{}",
            if host.is_empty() || host.starts_with('/') {
                "local"
            } else {
                &host
            }
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
        Ok(Database {
            target: format!("{shown_host}:{shown_port}/{db}"),
            store_folder,
            session_url: Secret::new(without_tls_parameters(url.expose())),
            url,
            env,
            dbname: db,
            tls,
        })
    }

    /// libpq environment for pg_dump / pg_restore: the password never
    /// appears on a command line.
    pub fn libpq_env(&self) -> &[(&'static str, String)] {
        &self.env
    }

    /// The URL itself, for the migration tool's `DATABASE_URL`.
    pub fn url(&self) -> &str {
        self.url.expose()
    }

    /// The database's name.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The folder, under a backup store's prefix, that holds this
    /// database's copies: `<dbname>@<host>` (`local` for a socket), so
    /// services whose databases share a prefix never list or prune each
    /// other's copies.
    pub fn store_folder(&self) -> &str {
        &self.store_folder
    }

    /// A session, with the connection driven in the background.
    pub async fn connect(&self, timeout: Duration) -> Result<tokio_postgres::Client, DbError> {
        self.session(None, timeout).await
    }

    /// A session on another database of the same server (same user).
    pub async fn connect_to(
        &self,
        dbname: &str,
        timeout: Duration,
    ) -> Result<tokio_postgres::Client, DbError> {
        self.session(Some(dbname), timeout).await
    }

    async fn session(
        &self,
        dbname: Option<&str>,
        timeout: Duration,
    ) -> Result<tokio_postgres::Client, DbError> {
        let mut config: tokio_postgres::Config =
            self.session_url
                .expose()
                .parse()
                .map_err(|e| DbError::Connect {
                    target: self.target.clone(),
                    message: format!("{e}"),
                })?;
        if let Some(dbname) = dbname {
            config.dbname(dbname);
        }
        // No host at all (`postgres:///app`): libpq's default socket
        // directory on Debian, as pg_dump would use.
        if config.get_hosts().is_empty() {
            config.host("/var/run/postgresql");
        }
        config.connect_timeout(timeout);
        config.application_name("rollbackd");
        // A peer that vanished (a partition, a dead node) is noticed in
        // about 10 s rather than the kernel's default two hours: the state
        // store's leader stops acting by then (`state::postgres`).
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10));
        // The connect timeout above covers the TCP connection only: a host
        // that accepts and never answers (a stuck proxy, a half-open
        // firewall) would hold the startup for minutes.
        let client = match tokio::time::timeout(timeout, self.open(config)).await {
            Ok(opened) => opened,
            Err(_) => Err(format!(
                "the server accepted the connection but did not finish the startup within {} \
                 (a proxy or firewall holding it?)",
                crate::duration::format(timeout)
            )),
        }
        .map_err(|message| DbError::Connect {
            target: self.target.clone(),
            message,
        })?;
        Ok(client)
    }

    /// Connects with the TLS `sslmode` asks for; a failure in words, with
    /// what to change.
    async fn open(
        &self,
        mut config: tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, String> {
        use tls::SslMode;
        use tokio_postgres::config::{Host, SslMode as Wire};
        // A Unix socket never uses TLS, as in libpq.
        let tcp = config.get_hosts().iter().find_map(|h| match h {
            Host::Tcp(name) => Some(name.clone()),
            #[allow(unreachable_patterns)]
            _ => None,
        });
        let Some(host) = tcp.clone().filter(|_| self.tls.mode != SslMode::Disable) else {
            config.ssl_mode(Wire::Disable);
            return spawn(config.connect(tokio_postgres::NoTls).await).map_err(|e| {
                let message = describe(&e);
                let hint = match &tcp {
                    Some(host) => self.tls.hint(&message, host),
                    None => String::new(),
                };
                format!("{message}{hint}")
            });
        };
        let connector = || -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
            self.tls
                .client_config()
                .map(tokio_postgres_rustls::MakeRustlsConnect::new)
                .map_err(|e| e.to_string())
        };
        let fail = |e: tokio_postgres::Error| {
            let message = describe(&e);
            let hint = self.tls.hint(&message, &host);
            format!("{message}{hint}")
        };
        match self.tls.mode {
            SslMode::Allow => {
                // Plain text first; TLS only if the server refuses it.
                config.ssl_mode(Wire::Disable);
                match config.connect(tokio_postgres::NoTls).await {
                    Ok(pair) => Ok(spawn(Ok(pair)).map_err(|e| describe(&e))?),
                    Err(e) if e.code().is_some() => {
                        config.ssl_mode(Wire::Require);
                        spawn(config.connect(connector()?).await).map_err(fail)
                    }
                    Err(e) => Err(fail(e)),
                }
            }
            SslMode::Prefer => {
                config.ssl_mode(Wire::Prefer);
                spawn(config.connect(connector()?).await).map_err(fail)
            }
            _ => {
                config.ssl_mode(Wire::Require);
                spawn(config.connect(connector()?).await).map_err(fail)
            }
        }
    }

    /// Whether this session runs over TLS, and which version, as the
    /// server sees it (`pg_stat_ssl`).
    pub async fn transport(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<Option<String>, DbError> {
        let row = client
            .query_opt(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| DbError::Query(describe(&e)))?;
        Ok(row.and_then(|r| {
            r.get::<_, bool>(0)
                .then(|| r.get::<_, Option<String>>(1).unwrap_or_default())
        }))
    }
}

/// Drives the connection in the background and hands back the client.
fn spawn<S, T>(
    pair: Result<(tokio_postgres::Client, tokio_postgres::Connection<S, T>), tokio_postgres::Error>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = pair?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}

/// `url` without the TLS parameters [`tls::PgTls`] reads.
fn without_tls_parameters(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            !pair.is_empty() && !tls::is_tls_parameter(&decode(key))
        })
        .collect();
    if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    }
}

pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error with its causes, for messages.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_becomes_libpq_environment_and_a_safe_target() {
        let db = Database::new(Secret::new(
            "postgres://app:p%40ss@db.internal:6543/shop?sslmode=require",
        ))
        .unwrap();
        assert_eq!(db.target, "db.internal:6543/shop");
        assert_eq!(db.store_folder(), "shop@db.internal");
        let socket =
            Database::new(Secret::new("postgres:///my%20db?host=/run/postgresql")).unwrap();
        assert_eq!(socket.store_folder(), "my_db@local");
        let env: std::collections::BTreeMap<_, _> = db.libpq_env().iter().cloned().collect();
        assert_eq!(env["PGPASSWORD"], "p@ss");
        assert_eq!(env["PGUSER"], "app");
        assert_eq!(env["PGSSLMODE"], "require");
        assert!(!format!("{db:?}").contains("p%40ss"));
        assert!(Database::new(Secret::new("mysql://x@y/z"))
            .unwrap_err()
            .to_string()
            .contains("PostgreSQL"));
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_times_out() {
        // Once: the drill's connection hung for minutes on such a host.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                kept.push(socket);
            }
        });
        let db = Database::new(Secret::new(format!(
            "postgres://u@127.0.0.1:{port}/app?sslmode=disable"
        )))
        .unwrap();
        let e = db
            .connect(Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not finish the startup within 300ms"), "{e}");
        held.abort();
    }

    #[test]
    fn socket_urls_reach_pg_dump_as_libpq_reads_them() {
        // Once: pg_dump dialled localhost:5432 for both.
        for url in [
            "postgres:///app?host=/run/postgresql&port=5433",
            "postgres://app@/app?host=/run/postgresql&port=5433",
            "postgres://%2Frun%2Fpostgresql:5433/app",
        ] {
            let db = Database::new(Secret::new(url)).unwrap();
            let env: std::collections::BTreeMap<_, _> = db.libpq_env().iter().cloned().collect();
            assert_eq!(env["PGHOST"], "/run/postgresql", "{url}");
            assert_eq!(env["PGPORT"], "5433", "{url}");
            assert_eq!(env["PGDATABASE"], "app", "{url}");
            assert_eq!(db.target, "/run/postgresql:5433/app");
        }
        let db = Database::new(Secret::new("postgres:///app")).unwrap();
        assert!(!db.libpq_env().iter().any(|(k, _)| *k == "PGHOST"));
        assert_eq!(db.target, "local socket:5432/app");
    }
}
