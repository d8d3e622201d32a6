//! A real S3-compatible server for tests: moto's server mode (`moto_server`
//! from the `moto[server]` PyPI package, installed into `.venv` by
//! scripts/install-deps.sh) on a free loopback port. It keeps everything in
//! memory and stops when dropped.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S3 {
    pub port: u16,
    child: Child,
}

/// The credentials the tests give rollbackd (moto accepts any).
pub const ACCESS_KEY: &str = "AKIAROLLBACKDTEST";
pub const SECRET_KEY: &str = "rollbackd-test-secret-never-logged";

impl S3 {
    pub fn start() -> S3 {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
        assert!(
            bin.exists(),
            "moto_server is not installed at {}. Run the suite through scripts/test.sh, which \
             installs it with `.venv/bin/pip install 'moto[server]'`.",
            bin.display()
        );
        let port = super::free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let s3 = S3 { port, child };
        super::wait_for("moto_server to answer", Duration::from_secs(30), || {
            super::http_get(&s3.endpoint()).ok()
        });
        s3
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment rollbackd reads the store's credentials from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Vec<u8>) {
        super::block_on(async {
            // moto does not check signatures, but treats a request without
            // one as anonymous, which may not read private objects.
            let mut request = reqwest::Client::new()
                .request(method, format!("{}/{path}", self.endpoint()))
                .header(
                    "authorization",
                    format!(
                        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/s3/aws4_request, \
                         SignedHeaders=host, Signature=0"
                    ),
                )
                .timeout(Duration::from_secs(30));
            if let Some(body) = body {
                request = request.body(body);
            }
            let response = request.send().await.expect("moto answers");
            let status = response.status().as_u16();
            (status, response.bytes().await.unwrap_or_default().to_vec())
        })
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request(reqwest::Method::PUT, bucket, None);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// The keys in `bucket`, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) =
            self.request(reqwest::Method::GET, &format!("{bucket}?list-type=2"), None);
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        let mut keys: Vec<String> = text
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let (status, body) = self.request(reqwest::Method::GET, &format!("{bucket}/{key}"), None);
        assert_eq!(status, 200, "GET {bucket}/{key}");
        body
    }

    /// Overwrites an object, as a failing disk or a careless hand would.
    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let (status, _) = self.request(
            reqwest::Method::PUT,
            &format!("{bucket}/{key}"),
            Some(bytes),
        );
        assert_eq!(status, 200, "PUT {bucket}/{key}");
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
