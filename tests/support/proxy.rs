//! A recording HTTP proxy in front of a real server (Prometheus): every
//! request is forwarded as it came (method, path and query, body) and its
//! path and headers are kept, so a test sees what rollbackd sends, such as
//! the tenant header (`X-Scope-OrgID`) that Grafana Mimir, Cortex and
//! Thanos's multi-tenant setups require on every request.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One request as it arrived: its path and its headers (names in lower case).
pub type Seen = (String, BTreeMap<String, String>);

#[derive(Clone)]
struct Inner {
    upstream: String,
    client: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub struct RecordingProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RecordingProxy {
    /// Forwards to `upstream` (like `http://127.0.0.1:9090`).
    pub fn start(upstream: &str) -> Self {
        rollbackd::install_crypto_provider();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            seen: seen.clone(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = super::fake_service::serve_in_thread(
            listener,
            Router::new().fallback(forward).with_state(inner),
        );
        RecordingProxy {
            addr,
            seen,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn forward(
    State(inner): State<Inner>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kept = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    inner
        .seen
        .lock()
        .unwrap()
        .push((uri.path().to_string(), kept));
    let target = format!(
        "{}{}",
        inner.upstream,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
    let mut request = inner.client.request(method, target).body(body.to_vec());
    if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) {
        request = request.header("content-type", ct);
    }
    match request.send().await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
            let ct = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let body = answer.bytes().await.unwrap_or_default();
            (status, [("content-type", ct)], body).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
