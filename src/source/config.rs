//! `[prometheus]`: where rule queries go and how rollbackd authenticates.
//!
//! Only data and its checks live here; nothing in this module opens a
//! connection (reading `bearer_token_file` happens when the client is built).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub(crate) use super::sigv4::SigV4Config;
use crate::duration;
use crate::secret::Secret;
use crate::tls::ClientCertError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Base URL of Prometheus (a path prefix such as `/prometheus` is kept).
    pub url: String,
    /// Per-query timeout, also passed to Prometheus so it stops working too.
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth: Option<BasicAuth>,
    /// How many of a group's queries go to Prometheus in one request
    /// (combined with `or`, each answer told apart by a label); 1 sends each
    /// query on its own.
    pub max_queries_per_request: usize,
    /// The largest answer read; past it the query fails with outcome
    /// `too_large` instead of growing rollbackd's memory.
    pub max_response_bytes: u64,
    /// The most series one query may answer with (same outcome past it).
    pub max_series: usize,
    /// Headers sent with every request to Prometheus: the tenant of Grafana
    /// Mimir, Cortex or Thanos (`X-Scope-OrgID`), an API key. A value is
    /// given as it is, or read from a file (`{ file = "…" }`) or an
    /// environment variable (`{ env = "…" }`); values are never logged.
    pub headers: BTreeMap<String, HeaderSource>,
    /// TLS beyond the system's roots: a private CA, a client certificate.
    pub tls: TlsConfig,
    /// AWS SigV4 signing, for Amazon Managed Service for Prometheus.
    pub sigv4: Option<SigV4Config>,
}

/// `[prometheus.tls]`, as Prometheus's own `tls_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificates (PEM) trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) and its key (PEM, PKCS#8 or RSA), for a
    /// Prometheus that requires one (`client_auth_type`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the
    /// URL's host (a Prometheus reached by IP or through a tunnel).
    pub server_name: Option<String>,
    /// The lowest TLS version accepted: "1.2" (default) or "1.3".
    pub min_version: Option<String>,
    /// Accept any certificate: for a test bench only; said loudly at start
    /// and by `check`.
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.cert_file.is_some() != self.key_file.is_some() {
            problems.push(
                "prometheus.tls: cert_file and key_file go together (the client certificate and its key)"
                    .into(),
            );
        }
        if let Some(name) = &self.server_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                problems.push(format!(
                    "prometheus.tls.server_name: {name:?} is not a host name or IP address"
                ));
            }
        }
        if let Some(v) = &self.min_version {
            if !matches!(v.as_str(), "1.2" | "1.3") {
                problems.push(format!(
                    "prometheus.tls.min_version: {v:?}; write \"1.2\" or \"1.3\""
                ));
            }
        }
    }
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("prometheus.tls.{key} {}: {cause}; the file must exist and be readable by rollbackd", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A file holds no usable PEM.
    #[error("prometheus.tls.{key} {}: {why}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        why: String,
    },
}

impl TlsConfig {
    /// `builder` with these settings, reading every file now. The CA file
    /// and the client certificate are read again when they change, as
    /// Prometheus's own `tls_config` does; with no setting at all reqwest's
    /// default (the system's roots) is kept.
    pub fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        let read_error = |key: &'static str, path: &PathBuf, why: String| {
            if !path.exists() || std::fs::File::open(path).is_err() {
                TlsError::Read {
                    key,
                    path: path.clone(),
                    cause: std::fs::File::open(path)
                        .err()
                        .unwrap_or_else(|| std::io::Error::other(why.clone())),
                }
            } else {
                TlsError::Pem {
                    key,
                    path: path.clone(),
                    why,
                }
            }
        };
        let defaults = self.ca_file.is_none()
            && self.cert_file.is_none()
            && self.server_name.is_none()
            && self.min_version.is_none()
            && !self.insecure_skip_verify;
        if defaults {
            return Ok(builder.min_tls_version(reqwest::tls::Version::TLS_1_2));
        }
        let provider = crate::tls::provider();
        let versions: &[&rustls::SupportedProtocolVersion] =
            if self.min_version.as_deref() == Some("1.3") {
                &[&rustls::version::TLS13]
            } else {
                rustls::DEFAULT_VERSIONS
            };
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if self
            .insecure_skip_verify
        {
            tracing::warn!(
                    "prometheus.tls.insecure_skip_verify is on: rollbackd accepts ANY certificate from Prometheus, so anyone between them can feed it metrics; use prometheus.tls.ca_file instead"
                );
            Arc::new(crate::tls::AcceptAny(provider.clone()))
        } else {
            let server_name = self
                .server_name
                .as_ref()
                .and_then(|n| rustls::pki_types::ServerName::try_from(n.clone()).ok());
            let verifier = crate::tls::ReloadingVerifier::new(self.ca_file.clone(), server_name)
                .map_err(|why| {
                    let path = self.ca_file.clone().unwrap_or_default();
                    read_error("ca_file", &path, why.to_string())
                })?;
            Arc::new(verifier)
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Pem {
                key: "min_version",
                path: PathBuf::new(),
                why: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let resolver = crate::tls::ReloadingClientCert::new(cert.clone(), key.clone())
                    .map_err(|why| match why {
                        ClientCertError::KeyFile(why) => {
                            read_error("key_file", key, why.to_string())
                        }
                        ClientCertError::CertFile(why) => {
                            read_error("cert_file", cert, why.to_string())
                        }
                        mismatch => read_error("cert_file", cert, mismatch.to_string()),
                    })?;
                config.with_client_cert_resolver(Arc::new(resolver))
            }
            _ => config.with_no_client_auth(),
        };
        Ok(builder.tls_backend_preconfigured(config))
    }
}

/// Where a header's value comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a header value: a string, { file = \"/path\" } or { env = \"VARIABLE\" }"
)]
pub enum HeaderSource {
    Value(Secret),
    File(HeaderFile),
    Env(HeaderEnv),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderFile {
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEnv {
    pub env: String,
}

/// Headers rollbackd sets itself, or that would break the requests.
const RESERVED_HEADERS: [&str; 6] = [
    "authorization",
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
];

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: "http://127.0.0.1:9090".into(),
            timeout: Duration::from_secs(10),
            max_queries_per_request: 20,
            max_response_bytes: 4 << 20,
            max_series: 10_000,
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
            headers: BTreeMap::new(),
            tls: TlsConfig::default(),
            sigv4: None,
        }
    }
}

/// Credentials for Prometheus, resolved from config.
pub enum PrometheusAuth {
    Bearer(String),
    Basic { username: String, password: String },
}

/// Why the configured credentials cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `bearer_token_file` is missing or unreadable.
    #[error(
        "prometheus.bearer_token_file {}: {cause}; fix bearer_token_file (the file must exist and be readable by rollbackd) or set prometheus.bearer_token instead",
        path.display()
    )]
    TokenFile {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// `bearer_token_file` holds nothing but whitespace.
    #[error("prometheus.bearer_token_file {}: the file is empty; put the token in it", path.display())]
    EmptyTokenFile { path: PathBuf },
    /// A header's value file is missing, unreadable or empty.
    #[error(
        "prometheus.headers.{name}: cannot read {}: {why}; fix the file (it must exist, be readable by rollbackd and hold the value)",
        path.display()
    )]
    HeaderFile {
        name: String,
        path: PathBuf,
        why: String,
    },
    /// A header's environment variable is not set (or not text).
    #[error("prometheus.headers.{name}: the environment variable {var} is not set; set it to the header's value, or give the value another way")]
    HeaderEnv { name: String, var: String },
    /// A header's value cannot travel in HTTP (the value is not shown).
    #[error("prometheus.headers.{name}: the value holds characters not allowed in an HTTP header (a stray newline or control character?)")]
    HeaderValue { name: String },
}

/// One header to send, resolved.
pub struct ResolvedHeader {
    pub name: reqwest::header::HeaderName,
    pub value: reqwest::header::HeaderValue,
}

impl PrometheusConfig {
    /// The credentials to send, reading `bearer_token_file` if set.
    pub fn auth(&self) -> Result<Option<PrometheusAuth>, AuthError> {
        if let Some(token) = &self.bearer_token {
            return Ok(Some(PrometheusAuth::Bearer(token.expose().to_string())));
        }
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path).map_err(|cause| AuthError::TokenFile {
                path: path.clone(),
                cause,
            })?;
            let token = token.trim();
            if token.is_empty() {
                return Err(AuthError::EmptyTokenFile { path: path.clone() });
            }
            return Ok(Some(PrometheusAuth::Bearer(token.to_string())));
        }
        Ok(self.basic_auth.as_ref().map(|b| PrometheusAuth::Basic {
            username: b.username.clone(),
            password: b.password.expose().to_string(),
        }))
    }

    /// The headers to send, each value read from where it is given and
    /// marked sensitive (reqwest and rollbackd never print it).
    pub fn resolved_headers(&self) -> Result<Vec<ResolvedHeader>, AuthError> {
        let mut out = Vec::new();
        for (name, source) in &self.headers {
            let text = match source {
                HeaderSource::Value(v) => v.expose().to_string(),
                HeaderSource::File(HeaderFile { file }) => {
                    let text =
                        std::fs::read_to_string(file).map_err(|e| AuthError::HeaderFile {
                            name: name.clone(),
                            path: file.clone(),
                            why: e.to_string(),
                        })?;
                    let text = text.trim().to_string();
                    if text.is_empty() {
                        return Err(AuthError::HeaderFile {
                            name: name.clone(),
                            path: file.clone(),
                            why: "the file is empty".into(),
                        });
                    }
                    text
                }
                HeaderSource::Env(HeaderEnv { env }) => {
                    std::env::var(env).map_err(|_| AuthError::HeaderEnv {
                        name: name.clone(),
                        var: env.clone(),
                    })?
                }
            };
            let bad = || AuthError::HeaderValue { name: name.clone() };
            let header =
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let mut value = reqwest::header::HeaderValue::from_str(&text).map_err(|_| bad())?;
            value.set_sensitive(true);
            out.push(ResolvedHeader {
                name: header,
                value,
            });
        }
        Ok(out)
    }

    /// The key that holds the credentials rollbackd sends, if any, for
    /// messages that tell the operator what to fix.
    pub fn auth_key(&self) -> Option<&'static str> {
        if self.bearer_token.is_some() {
            Some("prometheus.bearer_token")
        } else if self.bearer_token_file.is_some() {
            Some("prometheus.bearer_token_file")
        } else if self.basic_auth.is_some() {
            Some("prometheus.basic_auth")
        } else if self.sigv4.is_some() {
            Some("prometheus.sigv4")
        } else {
            None
        }
    }

    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => problems.push(format!(
                "prometheus.url: {:?} is not an http(s) URL; set it like \"http://prometheus:9090\"",
                crate::secret::redact_url(&self.url)
            )),
        }
        if self.timeout.is_zero() {
            problems.push("prometheus.timeout: must be greater than 0s".into());
        }
        if !(1..=1000).contains(&self.max_queries_per_request) {
            problems.push(
                "prometheus.max_queries_per_request: between 1 and 1000 (1 sends every query on its own)"
                    .into(),
            );
        }
        if !(64 << 10..=256 << 20).contains(&self.max_response_bytes) {
            problems.push(
                "prometheus.max_response_bytes: between 65536 (64 KiB) and 268435456 (256 MiB)"
                    .into(),
            );
        }
        if !(1..=1_000_000).contains(&self.max_series) {
            problems.push("prometheus.max_series: between 1 and 1000000".into());
        }
        let auths = [
            self.bearer_token.is_some(),
            self.bearer_token_file.is_some(),
            self.basic_auth.is_some(),
            self.sigv4.is_some(),
        ];
        if auths.iter().filter(|a| **a).count() > 1 {
            problems.push(
                "prometheus: set only one of bearer_token, bearer_token_file, basic_auth and sigv4"
                    .into(),
            );
        }
        if let Some(sigv4) = &self.sigv4 {
            sigv4.validate(problems);
        }
        self.tls.validate(problems);
        for (name, source) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!(
                    "prometheus.headers.{name}: not a valid HTTP header name (letters, digits and -, such as X-Scope-OrgID)"
                ));
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                problems.push(format!(
                    "prometheus.headers.{name}: rollbackd sets this header itself{}",
                    if name.eq_ignore_ascii_case("authorization") {
                        "; use prometheus.bearer_token, bearer_token_file or basic_auth"
                    } else {
                        ""
                    }
                ));
            }
            if let HeaderSource::Env(HeaderEnv { env }) = source {
                if env.is_empty() || env.contains('=') {
                    problems.push(format!(
                        "prometheus.headers.{name}: env = {env:?} is not an environment variable's name"
                    ));
                } else if env.to_ascii_uppercase().starts_with("ROLLBACKD_") {
                    problems.push(format!(
                        "prometheus.headers.{name}: env = {env:?}: ROLLBACKD_* variables are rollbackd's own configuration keys; give the value in a variable of another name"
                    ));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

#[cfg(test)]
mod header_tests {
    use super::*;

    fn with(headers: &[(&str, HeaderSource)]) -> PrometheusConfig {
        PrometheusConfig {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..PrometheusConfig::default()
        }
    }

    fn value(v: &str) -> HeaderSource {
        HeaderSource::Value(Secret::new(v))
    }

    #[test]
    fn headers_rollbackd_sets_itself_and_bad_names_are_refused() {
        let config = with(&[
            ("Authorization", value("Bearer x")),
            ("Host", value("prom")),
            ("X Scope", value("a")),
            ("X-Key", HeaderSource::Env(HeaderEnv { env: "A=B".into() })),
            (
                "X-Tenant",
                HeaderSource::Env(HeaderEnv {
                    env: "ROLLBACKD_TENANT".into(),
                }),
            ),
            ("X-Scope-OrgID", value("team-a")),
        ]);
        let mut problems = Vec::new();
        config.validate(&mut problems);
        let text = problems.join("\n");
        for needle in [
            "prometheus.headers.Authorization: rollbackd sets this header itself; use prometheus.bearer_token",
            "prometheus.headers.Host: rollbackd sets this header itself",
            "prometheus.headers.X Scope: not a valid HTTP header name",
            "prometheus.headers.X-Key: env = \"A=B\"",
            "prometheus.headers.X-Tenant: env = \"ROLLBACKD_TENANT\": ROLLBACKD_* variables are rollbackd's own",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(!text.contains("prometheus.headers.X-Scope-OrgID"), "{text}");
    }

    #[test]
    fn values_come_from_the_config_a_file_or_the_environment_and_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenant");
        std::fs::write(&file, "team-b\n").unwrap();
        // A variable only this test sets.
        std::env::set_var("RBD_UNIT_TEST_TENANT_C", "team-c");
        let config = with(&[
            ("X-A", value("team-a")),
            ("X-B", HeaderSource::File(HeaderFile { file: file.clone() })),
            (
                "X-C",
                HeaderSource::Env(HeaderEnv {
                    env: "RBD_UNIT_TEST_TENANT_C".into(),
                }),
            ),
        ]);
        let got: Vec<(String, String, bool)> = config
            .resolved_headers()
            .unwrap()
            .into_iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    h.value.to_str().unwrap().to_string(),
                    h.value.is_sensitive(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("x-a".to_string(), "team-a".to_string(), true),
                ("x-b".to_string(), "team-b".to_string(), true),
                ("x-c".to_string(), "team-c".to_string(), true),
            ]
        );
        // What cannot be had names the header and where to fix it, never a value.
        let missing = with(&[(
            "X-Scope-OrgID",
            HeaderSource::Env(HeaderEnv {
                env: "RBD_UNIT_TEST_UNSET_TENANT".into(),
            }),
        )]);
        let text = missing.resolved_headers().err().unwrap().to_string();
        assert!(
            text.contains("prometheus.headers.X-Scope-OrgID")
                && text.contains("RBD_UNIT_TEST_UNSET_TENANT is not set"),
            "{text}"
        );
        let gone = with(&[(
            "X-B",
            HeaderSource::File(HeaderFile {
                file: dir.path().join("nope"),
            }),
        )]);
        let text = gone.resolved_headers().err().unwrap().to_string();
        assert!(
            text.contains("prometheus.headers.X-B: cannot read"),
            "{text}"
        );
        let broken = with(&[("X-A", value("secret-value\nInjected: 1"))]);
        let text = broken.resolved_headers().err().unwrap().to_string();
        assert!(text.contains("prometheus.headers.X-A"), "{text}");
        assert!(!text.contains("secret-value"), "{text}");
    }
}
