//! The two GitHub REST calls `[gitops]` makes: read the repository (does
//! the token reach it, may it push) and open a pull request, finding the
//! one already open for the branch when a restarted rollbackd asks again.
//! The shapes are those of GitHub's REST API reference ("Create a pull
//! request", "List pull requests", "Get a repository"; API version
//! 2022-11-28).

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use serde::Deserialize;

use super::config::GitopsConfig;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("the GitHub token cannot be sent as a header")]
    Header,
    #[error("GitHub at {url} cannot be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error("GitHub refused the token ({status} {message}); give gitops a token with contents: write and pull requests: write on {repo}")]
    Refused {
        status: u16,
        message: String,
        repo: String,
    },
    #[error("GitHub answered {status} to {what}: {message}")]
    Status {
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("the token reaches {0} but may not push to it; give it contents: write")]
    CannotPush(String),
}

/// An open pull request.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct PullRequest {
    pub html_url: String,
}

/// GitHub's answer to a refused request: `message`, and for a 422 the
/// validation `errors`.
#[derive(Debug, Default, Deserialize)]
struct Refusal {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

impl Refusal {
    fn text(&self) -> String {
        let details: Vec<String> = self
            .errors
            .iter()
            .map(|e| match e.get("message").and_then(|m| m.as_str()) {
                Some(m) => m.to_string(),
                None => e.to_string(),
            })
            .collect();
        match details.is_empty() {
            true => self.message.clone(),
            false => format!("{}: {}", self.message, details.join("; ")),
        }
    }
}

pub(super) struct Github {
    client: reqwest::Client,
    /// `{api}/repos/{owner}/{name}`.
    base: String,
    repo: String,
}

impl Github {
    pub(super) fn new(
        config: &GitopsConfig,
        repo: String,
        token: &Secret,
    ) -> Result<Github, GithubError> {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| GithubError::Header)?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "X-GitHub-Api-Version",
            HeaderValue::from_static("2022-11-28"),
        );
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(std::time::Duration::from_secs(15))
            // GitHub refuses a request without one (403).
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(GithubError::Client)?;
        Ok(Github {
            client,
            base: format!("{}/repos/{repo}", config.api.trim_end_matches('/')),
            repo,
        })
    }

    /// Sends `request`; a refused token is an error, any other answer is
    /// the caller's to read.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Body), GithubError> {
        let answer = request.send().await.map_err(|e| GithubError::Unreachable {
            url: self.base.clone(),
            message: crate::secret::shown(&crate::provider::railway::describe(&e), 300),
        })?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| GithubError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        if matches!(status, 401 | 403 | 404) {
            let refusal: Refusal = serde_json::from_slice(&body).unwrap_or_default();
            return Err(GithubError::Refused {
                status,
                message: crate::secret::shown(&refusal.text(), 300),
                repo: self.repo.clone(),
            });
        }
        Ok((status, Body(body.to_vec())))
    }

    /// Whether the token reaches the repository and may push to it.
    pub(super) async fn check(&self) -> Result<(), GithubError> {
        let (status, body) = self.send(self.client.get(&self.base)).await?;
        if status != 200 {
            return Err(body.status("GET repository", status));
        }
        #[derive(Deserialize)]
        struct Repository {
            #[serde(default)]
            permissions: Option<Permissions>,
        }
        #[derive(Deserialize)]
        struct Permissions {
            #[serde(default)]
            push: bool,
        }
        let repository: Repository = body.json("GET repository", status)?;
        match repository.permissions {
            Some(p) if !p.push => Err(GithubError::CannotPush(self.repo.clone())),
            _ => Ok(()),
        }
    }

    /// Opens a pull request from `head` into `base`; when one is already
    /// open from `head` (asked again after a restart), that one.
    pub(super) async fn open(
        &self,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
        draft: bool,
    ) -> Result<PullRequest, GithubError> {
        let request = self
            .client
            .post(format!("{}/pulls", self.base))
            .json(&serde_json::json!({
                "title": title, "head": head, "base": base, "body": body, "draft": draft,
                "maintainer_can_modify": true,
            }));
        let (status, answer) = self.send(request).await?;
        if status == 201 {
            return answer.json("POST pulls", status);
        }
        let refused = answer.status("POST pulls", status);
        if status == 422 && refused.to_string().contains("already exists") {
            if let Some(open) = self.find(head).await? {
                return Ok(open);
            }
        }
        Err(refused)
    }

    /// The open pull request from `head`, if there is one.
    async fn find(&self, head: &str) -> Result<Option<PullRequest>, GithubError> {
        let owner = self.repo.split('/').next().unwrap_or_default();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("head", &format!("{owner}:{head}"))
            .append_pair("state", "open")
            .finish();
        let request = self.client.get(format!("{}/pulls?{query}", self.base));
        let (status, body) = self.send(request).await?;
        if status != 200 {
            return Err(body.status("GET pulls", status));
        }
        let mut open: Vec<PullRequest> = body.json("GET pulls", status)?;
        Ok((!open.is_empty()).then(|| open.remove(0)))
    }
}

/// An answer's body, read whole.
struct Body(Vec<u8>);

impl Body {
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        status: u16,
    ) -> Result<T, GithubError> {
        serde_json::from_slice(&self.0).map_err(|e| GithubError::Status {
            what,
            status,
            message: format!("an answer rollbackd cannot read: {e}"),
        })
    }

    fn status(&self, what: &'static str, status: u16) -> GithubError {
        let refusal: Refusal = serde_json::from_slice(&self.0).unwrap_or_default();
        GithubError::Status {
            what,
            status,
            message: crate::secret::shown(&refusal.text(), 300),
        }
    }
}
