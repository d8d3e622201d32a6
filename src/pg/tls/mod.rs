//! PostgreSQL over TLS, read the way libpq reads it, so one `DATABASE_URL`
//! means the same to rollbackd, `pg_dump`, `pg_restore`, Alembic and the
//! application.
//!
//! The settings come from the URL's parameters (`sslmode`, `sslrootcert`,
//! `sslcert`, `sslkey`, `sslcrl`, `sslsni`, `ssl_min_protocol_version`,
//! `ssl_max_protocol_version`), else from libpq's environment variables
//! (`PGSSLMODE`, `PGSSLROOTCERT`, …), else from libpq's defaults: `prefer`,
//! and `~/.postgresql/root.crt`, `postgresql.crt`, `postgresql.key` when
//! they exist. What each `sslmode` checks:
//!
//! | sslmode | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow` | only if the server refuses plain text | chain, if a root certificate is there |
//! | `prefer` (default) | if the server offers it | chain, if a root certificate is there |
//! | `require` | always | chain, if a root certificate is there |
//! | `verify-ca` | always | chain (a root certificate is required) |
//! | `verify-full` | always | chain and host name |
//!
//! Files are read at every connection, so a rotated certificate is used
//! from the next connection on. A Unix socket never uses TLS, as in libpq.
//! The same settings reach the child programs as libpq environment
//! variables ([`PgTls::libpq_env`]), never on a command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::DbError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&'static str, SslMode); 6] = [
        ("disable", SslMode::Disable),
        ("allow", SslMode::Allow),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    fn parse(text: &str) -> Option<SslMode> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, mode)| *mode)
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, mode)| *mode == self)
            .map(|(name, _)| *name)
            .unwrap_or("prefer")
    }
}

/// The URL parameters this module reads, each with its libpq environment
/// variable. They are taken out of the URL before tokio-postgres reads it.
const PARAMETERS: [(&str, &str); 10] = [
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("sslsni", "PGSSLSNI"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
    ("sslpassword", ""),
];

/// Whether a URL parameter is one of the TLS settings read here.
pub fn is_tls_parameter(key: &str) -> bool {
    PARAMETERS.iter().any(|(k, _)| *k == key)
}

/// One setting and where it came from, to name it in a message.
#[derive(Debug, Clone)]
struct Setting {
    value: String,
    /// "sslrootcert in the database URL", "PGSSLROOTCERT", or a default.
    origin: String,
}

impl Setting {
    fn path(&self) -> PathBuf {
        PathBuf::from(&self.value)
    }
}

/// The TLS half of a PostgreSQL connection string.
#[derive(Debug, Clone)]
pub struct PgTls {
    pub mode: SslMode,
    /// `None`: no root certificate (the chain is not verified unless
    /// `sslmode` requires it, which then fails).
    rootcert: Option<Setting>,
    /// `sslrootcert=system`: the system's trusted roots.
    system_roots: bool,
    cert: Option<Setting>,
    key: Option<Setting>,
    crl: Option<Setting>,
    sni: bool,
    min_tls13: bool,
    max_tls12: bool,
    /// Passed on to pg_dump, pg_restore and the migration tool.
    env: Vec<(&'static str, String)>,
}

/// Where libpq looks for the system's roots when `sslrootcert=system`
/// (OpenSSL's default file on each family of distributions).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

fn system_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

impl PgTls {
    /// From the URL's parameters, then `env` (libpq's variables), then
    /// libpq's defaults under `home`.
    pub fn from_parameters(
        parameters: &[(String, String)],
        env: impl Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<PgTls, DbError> {
        let get = |key: &str| -> Option<Setting> {
            let var = PARAMETERS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .unwrap_or("");
            if let Some((_, value)) = parameters.iter().rev().find(|(k, _)| k == key) {
                return Some(Setting {
                    value: value.clone(),
                    origin: format!("{key} in the database URL"),
                });
            }
            let value = env(var).filter(|v| !v.is_empty() && !var.is_empty())?;
            Some(Setting {
                value,
                origin: var.to_string(),
            })
        };
        let bad = |setting: &Setting, what: &str| {
            DbError::BadParameter(format!("{} = {:?}: {what}", setting.origin, setting.value))
        };
        if let Some(password) = get("sslpassword") {
            return Err(bad(
                &password,
                "rollbackd does not decrypt client keys, and pg_dump could be given the password only on its \
                 command line; store the key unencrypted, readable by rollbackd's user alone (mode 0600)",
            ));
        }
        if let Some(dir) = get("sslcrldir") {
            return Err(bad(
                &dir,
                "a directory of revocation lists is not supported; concatenate them into one PEM file and set sslcrl",
            ));
        }
        let rootcert = get("sslrootcert");
        let system_roots = rootcert.as_ref().is_some_and(|r| r.value == "system");
        let mode_setting = get("sslmode");
        let mode = match &mode_setting {
            Some(setting) => SslMode::parse(&setting.value).ok_or_else(|| {
                bad(
                    setting,
                    "write disable, allow, prefer, require, verify-ca or verify-full",
                )
            })?,
            // libpq 16: the system's roots make verify-full the default.
            None if system_roots => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system_roots && mode != SslMode::VerifyFull {
            return Err(bad(
                mode_setting.as_ref().expect("a mode was given"),
                "a weaker sslmode may not be used with sslrootcert=system (use verify-full), as in libpq",
            ));
        }
        let in_home = |name: &str| -> Option<Setting> {
            let path = home?.join(".postgresql").join(name);
            path.is_file().then(|| Setting {
                value: path.display().to_string(),
                origin: format!("libpq's default ~/.postgresql/{name}"),
            })
        };
        let rootcert = rootcert.or_else(|| in_home("root.crt"));
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && rootcert.is_none() {
            return Err(DbError::BadParameter(format!(
                "sslmode={} verifies the server's certificate, but no root certificate is set: \
                 set sslrootcert (in the URL, or PGSSLROOTCERT) to the CA that signed it, \
                 or sslrootcert=system for the system's trusted roots",
                mode.as_str()
            )));
        }
        let cert = get("sslcert").or_else(|| in_home("postgresql.crt"));
        let key = get("sslkey").or_else(|| {
            // libpq looks for the default key only beside a certificate.
            cert.as_ref()?;
            in_home("postgresql.key")
        });
        if let (Some(cert), None) = (&cert, &key) {
            return Err(bad(
                cert,
                "a client certificate needs its key: set sslkey (in the URL, or PGSSLKEY)",
            ));
        }
        let sni = match get("sslsni") {
            None => true,
            Some(s) if s.value == "1" => true,
            Some(s) if s.value == "0" => false,
            Some(s) => return Err(bad(&s, "write 1 or 0")),
        };
        let version = |key: &str| -> Result<Option<bool>, DbError> {
            let Some(setting) = get(key) else {
                return Ok(None);
            };
            match setting.value.as_str() {
                "TLSv1.2" => Ok(Some(false)),
                "TLSv1.3" => Ok(Some(true)),
                "TLSv1" | "TLSv1.1" => Err(bad(
                    &setting,
                    "rollbackd speaks TLS 1.2 and 1.3 only; write TLSv1.2 or TLSv1.3",
                )),
                _ => Err(bad(&setting, "write TLSv1.2 or TLSv1.3")),
            }
        };
        let min_tls13 = version("ssl_min_protocol_version")? == Some(true);
        let max_tls12 = version("ssl_max_protocol_version")? == Some(false);
        if min_tls13 && max_tls12 {
            return Err(DbError::BadParameter(
                "ssl_min_protocol_version is above ssl_max_protocol_version".into(),
            ));
        }
        let crl = get("sslcrl");

        let mut child_env = vec![("PGSSLMODE", mode.as_str().to_string())];
        if system_roots {
            // libpq before 16 reads "system" as a file name: give the
            // children the bundle itself (the same roots).
            if let Some(bundle) = system_bundle() {
                child_env.push(("PGSSLROOTCERT", bundle.display().to_string()));
            }
        } else if let Some(root) = &rootcert {
            child_env.push(("PGSSLROOTCERT", root.value.clone()));
        }
        for (var, setting) in [("PGSSLCERT", &cert), ("PGSSLKEY", &key), ("PGSSLCRL", &crl)] {
            if let Some(setting) = setting {
                child_env.push((var, setting.value.clone()));
            }
        }
        for key in [
            "sslsni",
            "ssl_min_protocol_version",
            "ssl_max_protocol_version",
        ] {
            if let (Some(setting), Some((_, var))) =
                (get(key), PARAMETERS.iter().find(|(k, _)| *k == key))
            {
                child_env.push((var, setting.value));
            }
        }
        Ok(PgTls {
            mode,
            rootcert,
            system_roots,
            cert,
            key,
            crl,
            sni,
            min_tls13,
            max_tls12,
            env: child_env,
        })
    }

    /// libpq's environment for pg_dump, pg_restore and the migration tool.
    pub fn libpq_env(&self) -> &[(&'static str, String)] {
        &self.env
    }

    /// Whether the server's certificate chain is checked.
    pub fn verifies_chain(&self) -> bool {
        self.rootcert.is_some()
    }

    /// How the connection is protected, in words: for `check`.
    pub fn describe(&self) -> String {
        let server = match (self.mode, &self.rootcert) {
            (SslMode::Disable, _) => return "sslmode=disable: no TLS".into(),
            (SslMode::VerifyFull, Some(root)) => {
                format!("certificate and host name verified against {}", root.origin)
            }
            (_, Some(root)) => format!(
                "certificate chain verified against {} (not the host name)",
                root.origin
            ),
            (_, None) => "the server's certificate is NOT verified (no sslrootcert)".into(),
        };
        let client = match &self.cert {
            Some(cert) => format!("; client certificate from {}", cert.origin),
            None => String::new(),
        };
        format!("sslmode={}: {server}{client}", self.mode.as_str())
    }

    /// A rustls configuration with every file read now.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, DbError> {
        let provider = crate::tls::provider();
        let versions: &[&rustls::SupportedProtocolVersion] = if self.min_tls13 {
            &[&rustls::version::TLS13]
        } else if self.max_tls12 {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let verifier: Arc<dyn ServerCertVerifier> = match &self.rootcert {
            None => Arc::new(crate::tls::AcceptAny(provider.clone())),
            Some(root) => {
                let mut roots = rustls::RootCertStore::empty();
                let (path, origin) = if self.system_roots {
                    let bundle = system_bundle().ok_or_else(|| {
                        DbError::Tls(format!(
                            "{}: the system's trusted roots are not installed (none of {}); install ca-certificates \
                             or set SSL_CERT_FILE",
                            root.origin,
                            SYSTEM_BUNDLES.join(", ")
                        ))
                    })?;
                    (bundle, root.origin.clone())
                } else {
                    (root.path(), root.origin.clone())
                };
                for cert in read_certificates(&path, &origin)? {
                    roots.add(cert).map_err(|e| {
                        DbError::Tls(format!(
                            "{origin} ({}): a certificate in it cannot be a root: {e}",
                            path.display()
                        ))
                    })?;
                }
                let mut builder = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                );
                if let Some(crl) = &self.crl {
                    let pem = read(&crl.path(), &crl.origin)?;
                    let lists = CertificateRevocationListDer::pem_slice_iter(&pem)
                        .collect::<Result<Vec<_>, _>>()
                        .ok()
                        .filter(|l| !l.is_empty())
                        .ok_or_else(|| {
                            DbError::Tls(format!(
                                "{} ({}): no PEM revocation list in it (-----BEGIN X509 CRL-----)",
                                crl.origin, crl.value
                            ))
                        })?;
                    builder = builder.with_crls(lists);
                }
                let chain = builder
                    .build()
                    .map_err(|e| DbError::Tls(format!("{}: {e}", root.origin)))?;
                if self.mode == SslMode::VerifyFull {
                    chain
                } else {
                    Arc::new(crate::tls::ChainOnly(chain))
                }
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| DbError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates(&cert.path(), &cert.origin)?;
                let private = read_key(key)?;
                builder.with_client_auth_cert(chain, private).map_err(|e| {
                    DbError::Tls(format!(
                        "{} and {} cannot be used together: {e}",
                        cert.origin, key.origin
                    ))
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        config.enable_sni = self.sni;
        Ok(config)
    }

    /// What to change, from the words of a failed connection.
    pub fn hint(&self, message: &str, host: &str) -> String {
        let root = self
            .rootcert
            .as_ref()
            .map(|r| r.origin.as_str())
            .unwrap_or("sslrootcert");
        let hint = if message.contains("NotValidForName") || message.contains("not valid for name")
        {
            format!(
                "the server's certificate does not name {host:?}: connect by the name (or IP) it was issued for, \
                 or use sslmode=verify-ca, which checks the chain only"
            )
        } else if message.contains("invalid peer certificate: Expired")
            || message.contains("certificate expired")
        {
            "the server's certificate has expired".into()
        } else if message.contains("invalid peer certificate: Revoked") {
            "the server's certificate is revoked (sslcrl)".into()
        } else if message.contains("invalid peer certificate") {
            format!(
                "the server's certificate is not signed by a CA in {root}: set sslrootcert (in the URL, or \
                 PGSSLROOTCERT) to the CA that signed it"
            )
        } else if message.contains("server does not support TLS") {
            format!(
                "the server does not offer TLS (ssl = off in postgresql.conf), and sslmode={} needs it",
                self.mode.as_str()
            )
        } else if message.contains("no encryption") {
            "the server accepts only TLS connections here (hostssl in pg_hba.conf): \
             set sslmode=verify-full (or at least require) in the URL, or PGSSLMODE"
                .into()
        } else if message.contains("requires a valid client certificate")
            || message.contains("CertificateRequired")
        {
            "the server wants a client certificate: set sslcert and sslkey (in the URL, or PGSSLCERT and PGSSLKEY)"
                .into()
        } else if message.contains("certificate authentication failed") {
            "the client certificate's common name (CN) must be the user name, or be mapped to it in pg_ident.conf"
                .into()
        } else if message.contains("BadCertificate") || message.contains("UnknownCA") {
            "the server refused rollbackd's client certificate: it must be signed by a CA in the server's ssl_ca_file"
                .into()
        } else {
            return String::new();
        };
        format!("; {hint}")
    }
}

fn read(path: &Path, origin: &str) -> Result<Vec<u8>, DbError> {
    std::fs::read(path).map_err(|e| {
        DbError::Tls(format!(
            "{origin} ({}): {e}; the file must exist and be readable by rollbackd",
            path.display()
        ))
    })
}

fn read_certificates(path: &Path, origin: &str) -> Result<Vec<CertificateDer<'static>>, DbError> {
    crate::tls::certificates(path).map_err(|e| {
        DbError::Tls(format!(
            "{origin} ({}): {e}; the file must exist, be readable by rollbackd and hold PEM certificates",
            path.display()
        ))
    })
}

/// The client key, refused as libpq refuses it: readable by others, or
/// encrypted.
fn read_key(key: &Setting) -> Result<PrivateKeyDer<'static>, DbError> {
    let path = key.path();
    read(&path, &key.origin)?;
    key_permissions(&path, &key.origin)?;
    crate::tls::private_key(&path)
        .map_err(|e| DbError::Tls(format!("{} ({}): {e}", key.origin, key.value)))
}

/// libpq refuses a key that others may read (pg_dump would fail on it
/// during a rollback): 0600 or less for the owner, 0640 or less if root
/// owns it.
fn key_permissions(path: &Path, origin: &str) -> Result<(), DbError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    let mode = meta.mode();
    let too_open = (meta.uid() == euid && mode & 0o077 != 0)
        || (meta.uid() == 0 && mode & 0o037 != 0 && meta.uid() != euid);
    if too_open {
        return Err(DbError::Tls(format!(
            "{origin} ({}): the key has group or world access (mode {:o}), which libpq (and so pg_dump) refuses: \
             chmod 600 it (or 640 if root owns it)",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
