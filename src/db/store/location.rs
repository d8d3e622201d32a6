//! A backup store's URL: `s3://bucket/prefix` or `file:///mounted/path`,
//! parsed and checked once (credentials and queries refused, never
//! printed), and the object-store client it opens.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{ClientConfigKey, ObjectStore, RetryConfig};

use super::StoreError;

/// Which kind of store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    S3,
    File,
}

/// A parsed store URL: the bucket (S3) and the key under it, or a path on
/// a mounted file system.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub(super) scheme: Scheme,
    pub(super) bucket: String,
    pub(super) key: Key,
}

/// `url` fit to print: without its user part, query or fragment, any of
/// which may hold a credential (`s3://KEY:SECRET@…`, `?x-amz-credential=…`,
/// `#token=…`).
pub(crate) fn redact(url: &str) -> String {
    let (base, cut) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], "?***"),
        None => (url, ""),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &base[..scheme + 3], &base[at..])
        }
        _ => base.to_string(),
    };
    format!("{base}{cut}")
}

impl Location {
    /// `s3://bucket/prefix` or `file:///absolute/path`.
    pub(crate) fn parse(url: &str) -> Result<Location, StoreError> {
        let shown = redact(url);
        let bad = |why: &str| StoreError::BadUrl(format!("{shown:?} {why}"));
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| bad("is not a URL; use s3://bucket/prefix or file:///mounted/path"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // Not quoted back: the user part is a credential.
            return Err(StoreError::BadUrl(
                "a backup store URL must not carry credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment".into(),
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad(
                "has a query or fragment; give only the bucket and prefix",
            ));
        }
        let key = |path: &str| {
            Key::from_url_path(path.trim_matches('/'))
                .map_err(|e| bad(&format!("has a path object stores cannot hold: {e}")))
        };
        match parsed.scheme() {
            "s3" | "s3a" => {
                let bucket = parsed.host_str().unwrap_or_default().to_string();
                if bucket.is_empty() {
                    return Err(bad("names no bucket: s3://bucket/prefix"));
                }
                Ok(Location {
                    scheme: Scheme::S3,
                    bucket,
                    key: key(parsed.path())?,
                })
            }
            "file" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(bad("names a host; a local path is file:///path"));
                }
                if parsed.path().trim_matches('/').is_empty() {
                    return Err(bad("names the root directory; give the mounted directory, like file:///mnt/backups"));
                }
                Ok(Location {
                    scheme: Scheme::File,
                    bucket: String::new(),
                    key: key(parsed.path())?,
                })
            }
            other => Err(bad(&format!(
                "uses {other}:; rollbackd stores backups in s3:// (and S3-compatible stores via AWS_ENDPOINT_URL) or file://"
            ))),
        }
    }

    /// The URL of `key` in this location's bucket.
    pub(super) fn url_of(&self, key: &Key) -> String {
        match self.scheme {
            Scheme::S3 => format!("s3://{}/{key}", self.bucket),
            Scheme::File => format!("file:///{key}"),
        }
    }

    /// The store, with credentials and endpoint from the environment.
    pub(super) fn open(&self) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let opened: Result<Arc<dyn ObjectStore>, object_store::Error> = match self.scheme {
            Scheme::S3 => {
                crate::install_crypto_provider();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&self.bucket);
                // An endpoint written as http:// (a local MinIO or moto)
                // is meant: allow it without also asking for AWS_ALLOW_HTTP.
                if builder
                    .get_config_value(&AmazonS3ConfigKey::Endpoint)
                    .is_some_and(|e| e.starts_with("http://"))
                {
                    builder = builder.with_allow_http(true);
                }
                // A dead store fails in seconds, not after object_store's
                // default three minutes of retries.
                let retry = RetryConfig {
                    max_retries: 3,
                    retry_timeout: std::time::Duration::from_secs(30),
                    ..RetryConfig::default()
                };
                // A request may take as long as the data needs (the
                // upload's own timeout bounds it); a stalled one is cut
                // after 30 s without a byte.
                builder
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "1h")
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout),
                        "30s",
                    )
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            Scheme::File => Ok(Arc::new(object_store::local::LocalFileSystem::new())),
        };
        opened.map_err(|cause| StoreError::Store {
            what: "cannot open the backup store",
            url: self.url_of(&self.key),
            cause,
        })
    }
}
