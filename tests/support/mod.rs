//! Test harness: a real Prometheus started on a free loopback port in a temp
//! dir, the fake service, and the real rollbackd binary with its JSON logs
//! captured. Everything stops when dropped.

#![allow(dead_code)]

pub mod exporters;
pub mod fake_argocd;
pub mod fake_github;
pub mod fake_hooks;
pub mod fake_railway;
pub mod fake_service;
pub mod postgres;
pub mod proxy;
pub mod s3;
pub mod scene;
pub mod smtp;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(unused_imports)]
pub use fake_service::{FakeService, Knobs};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs one future to completion, so tests stay synchronous and simple.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    rollbackd::install_crypto_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `chmod +x`: for the operator scripts the tests write.
pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A blocking HTTP GET on loopback.
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    block_on(async {
        let response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| e.to_string())?;
        Ok((status, body))
    })
}

pub fn require_binary(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed. Install it with `apt-get install -y {}`, \
             or run the test suite through scripts/test.sh, which installs it.",
            if name == "prometheus-alertmanager" {
                "prometheus-alertmanager"
            } else {
                "prometheus"
            }
        )
    })
}

/// A real Prometheus scraping the given targets every second.
pub struct Prometheus {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (1 s scrape and rule interval),
    /// with `alert_rules` (a Prometheus rule file's text) loaded if given.
    pub fn start(targets: &[SocketAddr], alert_rules: Option<&str>) -> Self {
        Self::start_with_alertmanager(targets, alert_rules, None)
    }

    /// Like `start`, sending alerts to the Alertmanager on `alertmanager_port`.
    pub fn start_with_alertmanager(
        targets: &[SocketAddr],
        alert_rules: Option<&str>,
        alertmanager_port: Option<u16>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: service\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        if let Some(rules) = alert_rules {
            std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();
            config.push_str("rule_files: ['alerts.yml']\n");
        }
        if let Some(port) = alertmanager_port {
            config.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{port}']\n"
            ));
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut p = Prometheus {
            port: free_port(),
            dir,
            child: None,
        };
        p.launch();
        p
    }

    /// Starts Prometheus on `port` with `config` (a whole prometheus.yml).
    pub fn start_raw(port: u16, config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut p = Prometheus {
            port,
            dir,
            child: None,
        };
        p.launch();
        p
    }

    fn launch(&mut self) {
        let bin = require_binary("prometheus");
        let log = std::fs::File::create(self.dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .current_dir(self.dir.path())
            .arg("--config.file=prometheus.yml")
            .arg("--storage.tsdb.path=data")
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        self.child = Some(child);
        let url = format!("{}/-/ready", self.url());
        let log = self.dir.path().join("prometheus.log");
        let child = self.child.as_mut().unwrap();
        wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            // Another process answering on the port would look ready: a
            // Prometheus that exited (say, the port was taken) fails here.
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "Prometheus exited ({status}) on port {}:\n{}",
                    url,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            matches!(http_get(&url), Ok((200, _))).then_some(())
        });
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops Prometheus (its data stays for a restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Writes `openmetrics` (timestamped samples, ending with `# EOF`) into
    /// its storage with `promtool tsdb create-blocks-from openmetrics`, with
    /// Prometheus stopped, and starts it again: a history it never scraped.
    pub fn backfill(&mut self, openmetrics: &str) {
        self.stop();
        let input = self.dir.path().join("history.om");
        std::fs::write(&input, openmetrics).unwrap();
        let out = Command::new(require_binary("promtool"))
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(self.dir.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.launch();
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// An instant query's `data.result`.
    pub fn query(&self, expr: &str) -> Value {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url()),
            &[("query", expr)],
        )
        .unwrap();
        let (status, body) = http_get(url.as_str()).expect("Prometheus answers");
        assert_eq!(status, 200, "query {expr} failed: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].clone()
    }

    /// Scrape attempts of `job` stored so far (`up` gets one sample per
    /// attempt, failed ones included), over the last hour.
    pub fn scrapes(&self, job: &str) -> u64 {
        self.query(&format!("count_over_time(up{{job=\"{job}\"}}[1h])"))
            .as_array()
            .and_then(|a| a.first().cloned())
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// Waits until Prometheus has scraped `job` `n` more times than when
    /// called.
    pub fn wait_for_scrapes(&self, job: &str, n: u64, timeout: Duration) {
        let until = self.scrapes(job) + n;
        wait_for(
            &format!("Prometheus to scrape {job} {n} more times"),
            timeout,
            || (self.scrapes(job) >= until).then_some(()),
        );
    }

    /// Waits until Prometheus has scraped `target` at least once.
    pub fn wait_for_scrape(&self, metric: &str) {
        wait_for(
            &format!("Prometheus to scrape {metric}"),
            Duration::from_secs(20),
            || {
                self.query(metric)
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
                    .then_some(())
            },
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) delivering to
/// rollbackd's webhook endpoint.
pub struct Alertmanager {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Alertmanager {
    /// Routes every alert to `webhook` with the bearer `token`, grouping by
    /// alertname, repeating every `repeat` (so rollbackd sees redeliveries).
    pub fn start(webhook: &str, token: &str, repeat: &str) -> Self {
        let bin = require_binary("prometheus-alertmanager");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("alertmanager.yml"),
            format!(
                "route:\n  receiver: rollbackd\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: {repeat}\n\
                 receivers:\n  - name: rollbackd\n    webhook_configs:\n      - url: '{webhook}'\n        send_resolved: true\n\
                 \x20       http_config:\n          authorization:\n            credentials: '{token}'\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(bin)
            .current_dir(dir.path())
            .arg("--config.file=alertmanager.yml")
            .arg("--storage.path=data")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("alertmanager starts");
        let am = Alertmanager {
            port,
            _dir: dir,
            child,
        };
        wait_for("Alertmanager to be ready", Duration::from_secs(30), || {
            matches!(
                http_get(&format!("http://127.0.0.1:{port}/-/ready")),
                Ok((200, _))
            )
            .then_some(())
        });
        am
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real rollbackd binary.
pub fn rollbackd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rollbackd")
}

/// Runs rollbackd to completion; returns (exit code, stdout, stderr).
pub fn run_rollbackd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(rollbackd_bin());
    cmd.current_dir(dir).args(args).stdin(Stdio::null());
    for var in ["ROLLBACKD_CONFIG", "ROLLBACK_BASE_URL"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("rollbackd runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tests/support/gated_platform.py`: the fake service's deploy list behind
/// the `command` provider, with gates a test holds (see the script).
pub fn gated_platform() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/gated_platform.py")
}

/// The `[provider]` section running [`gated_platform`] for the fake service
/// at `service_url`, its gates in `gates`.
pub fn gated_provider_toml(gates: &Path, service_url: &str) -> String {
    let command = |what: &str| {
        format!(
            "[\"python3\", \"{}\", \"{}\", \"{service_url}\", \"{what}\"]",
            gated_platform().display(),
            gates.display(),
        )
    };
    format!(
        "[provider]\ntype = \"command\"\nlist = {}\nstatus = {}\nrollback = {}\ntimeout = \"60s\"\n",
        command("list"),
        command("status"),
        command("rollback"),
    )
}

/// A rule file: `HighErrorRate` (half of `{{service}}`'s requests failing
/// for 1 s, evaluated every second) under `policy`.
pub fn high_error_rate_rules(policy: &str) -> String {
    format!(
        "groups:\n  - name: http\n    interval: 1s\n    rules:\n      - name: HighErrorRate\n        expr: '{}'\n        above: 0.1\n        for: 1s\n        policy: {policy}\n",
        r#"(sum(rate(http_requests_total{service="{{service}}",code="500"}[3s])) or vector(0)) / sum(rate(http_requests_total{service="{{service}}"}[3s]))"#
    )
}

/// The API token every test watcher is given.
pub const API_TOKEN: &str = "test-api-token";

/// `rollbackd watch` running in the background with JSON logs captured.
pub struct Watcher {
    pub dir: PathBuf,
    pub port: u16,
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Watcher {
    /// Starts `rollbackd watch` in `dir` with `config` (TOML) written to
    /// `dir/rollbackd.toml`; `[server] listen` is set to a free port.
    pub fn start(dir: &Path, config: &str) -> Self {
        Self::start_with_env(dir, config, &[])
    }

    /// As `start`, with extra environment variables (its commands inherit them).
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let config = format!(
            "{config}\n[server]\nlisten = \"127.0.0.1:{port}\"\napi_token = \"{API_TOKEN}\"\n"
        );
        std::fs::write(dir.join("rollbackd.toml"), config).unwrap();
        let mut child = Command::new(rollbackd_bin())
            .current_dir(dir)
            .args([
                "--config",
                "rollbackd.toml",
                "--log-format",
                "json",
                "watch",
            ])
            .env_remove("ROLLBACKD_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rollbackd starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "message": line, "unparsed": true }));
                sink.lock().unwrap().push(value);
            }
        });
        let healthz = format!("http://127.0.0.1:{port}/healthz");
        wait_for(
            "rollbackd to serve /healthz",
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    std::thread::sleep(Duration::from_millis(200));
                    panic!(
                        "rollbackd exited ({status}) before serving {healthz}:\n{:#?}",
                        logs.lock().unwrap()
                    );
                }
                matches!(http_get(&healthz), Ok((200, _))).then_some(())
            },
        );
        Watcher {
            dir: dir.to_path_buf(),
            port,
            child,
            logs,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The most memory the process has held (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kb * 1024
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Log lines whose message is `message`.
    pub fn logs_with(&self, message: &str) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["message"] == message)
            .collect()
    }

    /// State changes of `rule`, as (from, to, at) in order.
    pub fn transitions(&self, rule: &str) -> Vec<(String, String, String)> {
        self.logs_with("rule state changed")
            .iter()
            .filter(|l| l["rule"] == rule)
            .map(|l| {
                (
                    l["from"].as_str().unwrap().to_string(),
                    l["to"].as_str().unwrap().to_string(),
                    l["at"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Waits for a transition of `rule` to `to`; returns its time.
    pub fn wait_for_state(&self, rule: &str, to: &str, timeout: Duration) -> std::time::SystemTime {
        wait_for(&format!("{rule} to become {to}"), timeout, || {
            self.transitions(rule)
                .into_iter()
                .find(|(_, t, _)| t == to)
                .map(|(_, _, at)| humantime::parse_rfc3339(&at).unwrap())
        })
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> String {
        let (status, body) = http_get(&format!("{}/metrics", self.url())).expect("metrics answer");
        assert_eq!(status, 200);
        body
    }

    /// The value of the series `name{labels}` (labels given as `k="v"` pairs,
    /// all of which must appear), or None.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics(), name, labels)
    }

    /// `rule`'s entry in `/api/v1/rules`: `state`, `value`, `evaluations`
    /// (by outcome) and `last_evaluation`, as of its last evaluation.
    pub fn rule_status(&self, rule: &str) -> Value {
        self.api("/api/v1/rules")
            .as_array()
            .and_then(|rules| rules.iter().find(|r| r["rule"] == rule).cloned())
            .unwrap_or_else(|| panic!("no rule {rule} in /api/v1/rules:\n{}", self.dump()))
    }

    /// How many times `rule` was evaluated so far, every outcome together.
    pub fn evaluation_count(&self, rule: &str) -> u64 {
        evaluations_in(&self.rule_status(rule))
    }

    /// Waits until `rule` has been evaluated `n` more times than when this
    /// is called and reads `state` at the last of them: the proof that the
    /// watcher went on that long, for a test that then asserts that nothing
    /// (more) happened meanwhile.
    pub fn wait_more_evaluations(
        &self,
        rule: &str,
        n: u64,
        state: &str,
        timeout: Duration,
    ) -> Value {
        let until = self.evaluation_count(rule) + n;
        wait_for(
            &format!("{rule} evaluated {n} more times (to {until}) and {state}"),
            timeout,
            || {
                let r = self.rule_status(rule);
                (evaluations_in(&r) >= until && r["state"] == state).then_some(r)
            },
        )
    }

    /// Waits until `rule` has been evaluated at `at` or later (evaluations
    /// are stamped with their scheduled time, as transitions are), calling
    /// `each` on its entry at every poll meanwhile (an invariant to hold).
    pub fn wait_evaluated_at(
        &self,
        rule: &str,
        at: std::time::SystemTime,
        mut each: impl FnMut(&Value),
    ) -> Value {
        let timeout = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            + Duration::from_secs(30);
        let what = format!(
            "an evaluation of {rule} at {} or later",
            humantime::format_rfc3339_millis(at)
        );
        wait_for(&what, timeout, || {
            let r = self.rule_status(rule);
            each(&r);
            let last = humantime::parse_rfc3339(r["last_evaluation"].as_str()?).ok()?;
            (last >= at).then_some(r)
        })
    }

    /// Sends SIGTERM and returns at once (`terminate` also waits).
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits (at most `timeout`) for rollbackd to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_for("rollbackd to exit", timeout, || {
            self.child.try_wait().unwrap()
        })
    }

    /// `kill -9`: rollbackd dies at once, as in an OOM kill or a lost node.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
    }

    /// SIGTERM, then waits (at most `timeout`) for rollbackd to exit.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for("rollbackd to exit after SIGTERM", timeout, || {
            self.child.try_wait().unwrap()
        })
    }

    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for a log line whose message starts with `prefix`.
    pub fn wait_for_log(&self, prefix: &str, timeout: Duration) -> Value {
        wait_for(&format!("log {prefix:?}"), timeout, || {
            self.logs()
                .into_iter()
                .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        })
    }

    /// Log lines whose message starts with `prefix`.
    pub fn logs_starting(&self, prefix: &str) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .collect()
    }

    /// GET on rollbackd's API, parsed as JSON.
    pub fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(&format!("{}{path}", self.url())).expect("the API answers");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Dumps the captured logs (for failing tests).
    pub fn dump(&self) -> String {
        self.logs()
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Live processes (zombies do not count) whose environment holds
/// `name=value`: started by a process given that variable, or by its
/// children. A test sets a unique one on rollbackd to find what outlived it.
pub fn processes_with_env(name: &str, value: &str) -> Vec<u32> {
    let needle = format!("{name}={value}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|s| !s.trim_start().starts_with('Z'))
            });
            alive
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// A blocking HTTP POST with an optional bearer token and body.
pub fn http_post(url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    block_on(async {
        let mut request = reqwest::Client::new()
            .post(url)
            .timeout(Duration::from_secs(10));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

/// Finds `name{...}` with all `labels` in a Prometheus text exposition.
/// The sum of a `/api/v1/rules` entry's `evaluations` over every outcome.
fn evaluations_in(rule: &Value) -> u64 {
    rule["evaluations"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
}

/// `rollbackd rules backtest --json`'s would-be rollbacks, one line each:
/// `action guard deployment->target` (`-` where absent).
pub fn would_be_summary(report: &Value) -> Vec<String> {
    report["would_be_rollbacks"]
        .as_array()
        .expect("would_be_rollbacks")
        .iter()
        .map(|w| {
            format!(
                "{} {} {}->{}",
                w["action"].as_str().unwrap_or("?"),
                w["guard"].as_str().unwrap_or("-"),
                w["deployment"].as_str().unwrap_or("-"),
                w["target"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// A PostgreSQL cluster whose `app` database Alembic upgraded to `rev`.
pub fn postgres_at(rev: &str) -> postgres::Postgres {
    let pg = postgres::Postgres::start();
    postgres::alembic_upgrade(&pg.url(), rev);
    pg
}

/// The revisions rollbackd would have recorded while each deployment was
/// live: `dir/state/revisions.json` holding the `(deployment, revision)`
/// pairs.
pub fn seed_revisions(dir: &Path, pairs: &[(&str, &str)]) {
    let deployments: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(d, r)| {
            (
                d.to_string(),
                serde_json::json!({ "revision": r, "seen_at": "2030-01-01T00:00:00Z" }),
            )
        })
        .collect();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(
        dir.join("state/revisions.json"),
        serde_json::to_string(&serde_json::json!({ "deployments": deployments })).unwrap(),
    )
    .unwrap();
}

/// Writes `rules` (a rule file's text) as `dir/rules/http.yml`, under the
/// `rule_paths = ["rules"]` a watching test's config names.
pub fn write_rules(dir: &Path, rules: &str) {
    std::fs::create_dir(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/http.yml"), rules).unwrap();
}
