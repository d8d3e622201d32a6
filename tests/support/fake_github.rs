//! A fake of the three GitHub REST calls `[gitops]` makes, in front of a
//! real bare repository on disk (what git pushes to). Reproduced from
//! GitHub's REST API reference (docs.github.com/rest, API version
//! 2022-11-28: "Create a pull request", "List pull requests", "Get a
//! repository") and the refusals users report from it:
//!
//! - no `User-Agent` header: 403 ("Request forbidden by administrative
//!   rules. Please make sure your request has a User-Agent header");
//! - no or a wrong token: 401 `{"message": "Bad credentials"}`; another
//!   repository than the fake's: 404 `{"message": "Not Found"}`;
//! - `POST /repos/{owner}/{repo}/pulls` needs `title`, `head` and `base`;
//!   a `head` that is not a branch of the repository: 422 Validation Failed
//!   `{"resource": "PullRequest", "field": "head", "code": "invalid"}`; no
//!   commits between base and head: 422 "No commits between main and …"; an
//!   open pull request from the same head: 422 "A pull request already
//!   exists for owner:branch." (as reported in vsoch/pull-request-action#86
//!   and gm3dmo/the-power#175); otherwise 201 with `number` and `html_url`;
//! - `GET …/pulls?head=owner:branch&state=open` lists the open ones from
//!   that head;
//! - `GET /repos/{owner}/{repo}` carries `permissions.push` for the token.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub const TOKEN: &str = "ghp_rollbackdTestToken0123456789abcdef";
pub const OWNER: &str = "acme";
pub const REPO: &str = "shop-deploy";

struct Inner {
    bare: PathBuf,
    pulls: Vec<Value>,
    /// Every `POST …/pulls` body, refused ones included.
    posts: Vec<Value>,
    may_push: bool,
}

pub struct FakeGithub {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeGithub {
    /// GitHub for `acme/shop-deploy`, whose git side is the bare
    /// repository `bare`.
    pub fn start(bare: &FsPath) -> FakeGithub {
        let inner = Arc::new(Mutex::new(Inner {
            bare: bare.to_path_buf(),
            pulls: Vec::new(),
            posts: Vec::new(),
            may_push: true,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = super::fake_service::serve_in_thread(
            listener,
            Router::new()
                .route("/repos/{owner}/{repo}", get(repository))
                .route("/repos/{owner}/{repo}/pulls", get(list).post(create))
                .with_state(inner.clone()),
        );
        FakeGithub {
            addr,
            inner,
            _stop: stop,
        }
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The pull requests opened.
    pub fn pulls(&self) -> Vec<Value> {
        self.inner.lock().unwrap().pulls.clone()
    }

    pub fn posts(&self) -> Vec<Value> {
        self.inner.lock().unwrap().posts.clone()
    }

    /// Whether the token may push (`permissions.push`).
    pub fn set_may_push(&self, may: bool) {
        self.inner.lock().unwrap().may_push = may;
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (
        status,
        Json(json!({"message": text, "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn invalid(error: Value) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "message": "Validation Failed",
            "errors": [error],
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
        })),
    )
        .into_response()
}

/// The refusals every call shares: User-Agent, token, repository.
fn admit(headers: &HeaderMap, owner: &str, repo: &str) -> Option<Response> {
    if headers.get("user-agent").is_none() {
        return Some(message(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        ));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") && auth != format!("token {TOKEN}") {
        return Some(message(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if (owner, repo) != (OWNER, REPO) {
        return Some(message(StatusCode::NOT_FOUND, "Not Found"));
    }
    None
}

/// `git` in the bare repository; its stdout, or `None` on failure.
fn git(bare: &FsPath, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(args)
        .output()
        .expect("git runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn repository(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admit(&headers, &owner, &repo) {
        return refused;
    }
    let push = inner.lock().unwrap().may_push;
    Json(json!({
        "full_name": format!("{OWNER}/{REPO}"),
        "default_branch": "main",
        "permissions": {"admin": false, "maintain": false, "push": push, "triage": true, "pull": true},
    }))
    .into_response()
}

async fn list(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admit(&headers, &owner, &repo) {
        return refused;
    }
    let head = query.get("head").cloned();
    let state = query.get("state").cloned().unwrap_or_else(|| "open".into());
    let g = inner.lock().unwrap();
    let pulls: Vec<Value> = g
        .pulls
        .iter()
        .filter(|p| {
            head.as_deref()
                .is_none_or(|h| h == format!("{OWNER}:{}", p["head"]["ref"].as_str().unwrap_or("")))
                && (state == "all" || p["state"] == state)
        })
        .cloned()
        .collect();
    Json(pulls).into_response()
}

async fn create(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = admit(&headers, &owner, &repo) {
        return refused;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let mut g = inner.lock().unwrap();
    g.posts.push(body.clone());
    for field in ["title", "head", "base"] {
        if !body[field].is_string() {
            return invalid(
                json!({"resource": "PullRequest", "field": field, "code": "missing_field"}),
            );
        }
    }
    let (head, base) = (
        body["head"].as_str().unwrap().to_string(),
        body["base"].as_str().unwrap().to_string(),
    );
    let bare = g.bare.clone();
    let Some(head_sha) = git(
        &bare,
        &["rev-parse", "--verify", &format!("refs/heads/{head}")],
    ) else {
        return invalid(json!({"resource": "PullRequest", "field": "head", "code": "invalid"}));
    };
    let Some(_) = git(
        &bare,
        &["rev-parse", "--verify", &format!("refs/heads/{base}")],
    ) else {
        return invalid(json!({"resource": "PullRequest", "field": "base", "code": "invalid"}));
    };
    let ahead = git(
        &bare,
        &["rev-list", "--count", &format!("{base}..{head_sha}")],
    )
    .unwrap();
    if ahead == "0" {
        return invalid(json!({"resource": "PullRequest", "code": "custom",
            "message": format!("No commits between {base} and {head}")}));
    }
    if g.pulls
        .iter()
        .any(|p| p["head"]["ref"] == head && p["state"] == "open")
    {
        return invalid(json!({"resource": "PullRequest", "code": "custom",
            "message": format!("A pull request already exists for {OWNER}:{head}.")}));
    }
    let number = g.pulls.len() + 1;
    let pull = json!({
        "number": number,
        "state": "open",
        "html_url": format!("https://github.com/{OWNER}/{REPO}/pull/{number}"),
        "title": body["title"],
        "body": body["body"],
        "draft": body["draft"].as_bool().unwrap_or(false),
        "head": {"ref": head, "sha": head_sha},
        "base": {"ref": base},
    });
    g.pulls.push(pull.clone());
    (StatusCode::CREATED, Json(pull)).into_response()
}
