//! Amazon Managed Service for Prometheus: every request to its query,
//! range and targets APIs signed with AWS Signature Version 4 (service
//! `aps`).
//!
//! The signing and the credential chain are object_store's (already in the
//! tree for the backup store): the standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), web
//! identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, as on EKS), EKS
//! pod identity, ECS task roles and the instance's metadata service. A
//! profile of the shared credentials file (`~/.aws/credentials`,
//! `AWS_SHARED_CREDENTIALS_FILE`) is read here, when the environment holds no
//! keys.

use std::path::PathBuf;

use object_store::aws::{AmazonS3Builder, AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpRequest, HttpRequestBody};

use serde::Deserialize;

use crate::secret::Secret;

/// `[prometheus.sigv4]`: every request signed with AWS Signature Version 4.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigV4Config {
    /// The workspace's region; else `AWS_REGION`, `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// The signing service: `aps` for Amazon Managed Service for Prometheus.
    #[serde(default = "aps")]
    pub service: String,
    /// A profile of the shared credentials file; else `AWS_PROFILE`.
    pub profile: Option<String>,
    /// Keys given here (prefer the environment or a role); both or none.
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
}

fn aps() -> String {
    "aps".into()
}

impl SigV4Config {
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if self.region.is_none()
            && env("AWS_REGION").is_none()
            && env("AWS_DEFAULT_REGION").is_none()
        {
            problems.push(
                "prometheus.sigv4.region: not set; set it to the workspace's region (for example \"eu-west-1\") or set AWS_REGION"
                    .into(),
            );
        }
        if self.access_key.is_some() != self.secret_key.is_some() {
            problems.push(
                "prometheus.sigv4: access_key and secret_key go together (or leave both out and use the AWS environment, a profile or a role)"
                    .into(),
            );
        }
        if self.service.is_empty() {
            problems.push(
                "prometheus.sigv4.service: empty; Amazon Managed Service for Prometheus is \"aps\""
                    .into(),
            );
        }
    }
}

/// Signs requests for one region and service.
pub(crate) struct Signer {
    region: String,
    service: String,
    credentials: AwsCredentialProvider,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Why the SigV4 settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SigV4Error {
    #[error("prometheus.sigv4.region: not set; set it (for example \"eu-west-1\") or AWS_REGION")]
    NoRegion,
    #[error("prometheus.sigv4.profile {profile:?}: {why}")]
    Profile { profile: String, why: String },
    #[error("prometheus.sigv4: {0}")]
    Build(String),
}

/// The shared credentials file, as the AWS tools find it.
fn shared_credentials_file() -> Option<PathBuf> {
    std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
}

/// `[profile]`'s keys in an INI-style credentials file.
fn profile_keys(text: &str, profile: &str) -> Option<(String, String, Option<String>)> {
    let mut section = String::new();
    let (mut key, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => key = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((key?, secret?, token))
}

impl Signer {
    pub(crate) fn new(config: &SigV4Config) -> Result<Signer, SigV4Error> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = config
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .ok_or(SigV4Error::NoRegion)?;
        // Only the credential chain of this builder is used: the bucket
        // names nothing.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name("rollbackd-sigv4")
            .with_region(&region);
        let explicit_profile = config.profile.clone().or_else(|| env("AWS_PROFILE"));
        if let (Some(key), Some(secret)) = (&config.access_key, &config.secret_key) {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret.expose());
        } else if env("AWS_ACCESS_KEY_ID").is_none() || config.profile.is_some() {
            let profile = explicit_profile.clone().unwrap_or_else(|| "default".into());
            let file = shared_credentials_file();
            let text = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok());
            match text.as_deref().and_then(|t| profile_keys(t, &profile)) {
                Some((key, secret, token)) => {
                    builder = builder
                        .with_access_key_id(key)
                        .with_secret_access_key(secret);
                    if let Some(token) = token {
                        builder = builder.with_token(token);
                    }
                }
                // Named but not found: say so rather than fall through to
                // another identity.
                None if explicit_profile.is_some() => {
                    return Err(SigV4Error::Profile {
                        profile,
                        why: format!(
                            "no aws_access_key_id and aws_secret_access_key for it in {}",
                            file.map(|f| f.display().to_string())
                                .unwrap_or_else(|| "~/.aws/credentials".into())
                        ),
                    });
                }
                None => {}
            }
        }
        let store = builder
            .build()
            .map_err(|e| SigV4Error::Build(e.to_string()))?;
        Ok(Signer {
            region,
            service: config.service.clone(),
            credentials: store.credentials().clone(),
        })
    }

    /// Adds `x-amz-date`, `x-amz-content-sha256`, the session token if any
    /// and `Authorization` to `request`. The query is first written with
    /// `%20` for spaces (never `+`), the form SigV4's canonical request
    /// uses, so what is signed is what is sent.
    pub(super) async fn sign(&self, request: &mut reqwest::Request) -> Result<(), String> {
        canonical_query(request.url_mut());
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| format!("no AWS credentials for prometheus.sigv4: {e}"))?;
        let body = request
            .body()
            .and_then(|b| b.as_bytes())
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let mut signed: HttpRequest = http::Request::builder()
            .method(request.method().clone())
            .uri(request.url().as_str())
            .body(HttpRequestBody::from(body))
            .map_err(|e| format!("cannot sign the request: {e}"))?;
        AwsAuthorizer::new(&credential, &self.service, &self.region)
            .try_authorize(&mut signed, None)
            .map_err(|e| format!("cannot sign the request: {e}"))?;
        for (name, value) in signed.headers() {
            let mut value = value.clone();
            value.set_sensitive(true);
            request.headers_mut().insert(name.clone(), value);
        }
        Ok(())
    }
}

/// Rewrites `url`'s query with every byte but RFC 3986's unreserved ones
/// percent-encoded.
fn canonical_query(url: &mut reqwest::Url) {
    if url.query().is_none() {
        return;
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let encode = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    url.set_query(Some(&query.join("&")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_read_from_the_shared_file() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n\
                    # comment\n[amp]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=E\n";
        assert_eq!(
            profile_keys(text, "amp"),
            Some(("C".into(), "D".into(), Some("E".into())))
        );
        assert_eq!(profile_keys(text, "default").unwrap().0, "A");
        assert_eq!(profile_keys(text, "other"), None);
    }

    #[test]
    fn the_query_is_sent_as_sigv4_encodes_it() {
        let mut url = reqwest::Url::parse(
            "https://aps.example/api/v1/query?query=sum+by+(code)+(rate(x%7Ba%3D%22b%22%7D[5m]))&time=1.5",
        )
        .unwrap();
        canonical_query(&mut url);
        assert_eq!(
            url.query().unwrap(),
            "query=sum%20by%20%28code%29%20%28rate%28x%7Ba%3D%22b%22%7D%5B5m%5D%29%29&time=1.5"
        );
    }
}
