//! A fake for the notification endpoints that cannot run here (Slack's
//! incoming webhooks, PagerDuty's Events API v2, Sentry's envelope
//! endpoint, any JSON webhook): it
//! records every request body by path and answers with scripted statuses
//! (for example 429, 500, then 202).

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::Value;

#[derive(Default)]
struct Inner {
    received: BTreeMap<String, Vec<Value>>,
    headers: BTreeMap<String, Vec<BTreeMap<String, String>>>,
    script: BTreeMap<String, VecDeque<u16>>,
    default_status: BTreeMap<String, u16>,
}

pub struct FakeHooks {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeHooks {
    pub fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = super::fake_service::serve_in_thread(
            listener,
            Router::new()
                .route("/{*path}", post(receive))
                .with_state(inner.clone()),
        );
        FakeHooks {
            addr,
            inner,
            stop: Some(stop),
        }
    }

    /// The URL of `path` (like `slack/T000/B000`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// The next answers on `path`, in order; afterwards the default.
    pub fn script(&self, path: &str, statuses: &[u16]) {
        self.inner
            .lock()
            .unwrap()
            .script
            .insert(path.to_string(), statuses.iter().copied().collect());
    }

    /// The answer on `path` once the script is used up (default 200; PagerDuty 202).
    pub fn always(&self, path: &str, status: u16) {
        self.inner
            .lock()
            .unwrap()
            .default_status
            .insert(path.to_string(), status);
    }

    /// The headers of each request on `path`, names in lower case.
    pub fn headers(&self, path: &str) -> Vec<BTreeMap<String, String>> {
        self.inner
            .lock()
            .unwrap()
            .headers
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    pub fn received(&self, path: &str) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .received
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for FakeHooks {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut g = inner.lock().unwrap();
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    g.headers.entry(path.clone()).or_default().push(headers);
    let value = serde_json::from_slice(&body)
        .unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
    g.received.entry(path.clone()).or_default().push(value);
    let scripted = g.script.get_mut(&path).and_then(|q| q.pop_front());
    let status = scripted
        .or_else(|| g.default_status.get(&path).copied())
        .unwrap_or(if path.starts_with("pagerduty") {
            202
        } else {
            200
        });
    StatusCode::from_u16(status).unwrap()
}
