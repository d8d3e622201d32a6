//! Amazon Managed Service for Prometheus: every request rollbackd sends
//! (instant queries, combined queries, targets, a back-test's range
//! queries) carries an AWS SigV4 signature that botocore, AWS's own
//! implementation, computes identically; a gateway that refuses as AMP does
//! stands in front of a real Prometheus. Wrong keys, region or profile are
//! refused with a message naming `prometheus.sigv4`.

use crate::support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::{run_rollbackd, wait_for, FakeService, Prometheus, Watcher};

const KEY_ID: &str = "AKIDROLLBACKDTEST";
const SECRET: &str = "rollbackd/sigv4/secret+never+logged";
const TOKEN: &str = "session-token-rollbackd";

/// `tests/support/sigv4_gateway.py` in front of `upstream`.
struct Gateway {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(upstream: &str) -> Gateway {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        let ok = Command::new(&python)
            .args(["-c", "import botocore"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "botocore is not installed in {}. Run the suite through scripts/test.sh, which \
             installs it (with moto) into .venv.",
            root.join(".venv").display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = support::free_port();
        let mut child = Command::new(python)
            .current_dir(dir.path())
            .arg(root.join("tests/support/sigv4_gateway.py"))
            .args([
                &port.to_string(),
                upstream,
                "eu-west-1",
                "aps",
                KEY_ID,
                SECRET,
                TOKEN,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the SigV4 gateway starts");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "sigv4_gateway.py did not start");
        Gateway { port, dir, child }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One entry per request: path, verdict, the Authorization header's
    /// shape (without the signature).
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

const RULES: &str = concat!(
    "groups:\n",
    "  - name: http\n",
    "    interval: 1s\n",
    "    rules:\n",
    "      - name: HighErrorRate\n",
    "        expr: '(sum(rate(http_requests_total{code=\"500\"}[3s])) or vector(0)) / sum(rate(http_requests_total[3s]))'\n",
    "        above: 0.1\n",
    "      - name: Traffic\n",
    "        expr: 'sum(rate(http_requests_total[3s]))'\n",
    "        above: 1000000\n",
);

fn config(url: &str, sigv4: &str) -> String {
    format!(
        "[prometheus]\nurl = \"{url}\"\ntimeout = \"3s\"\nheaders = {{ \"X-Scope-OrgID\" = \"team-a\" }}\n\n\
         [prometheus.sigv4]\n{sigv4}\n\n[watch]\nrule_paths = [\"rules\"]\nalign_to_scrapes = true\n\n\
         [blame]\nenabled = false\n"
    )
}

fn dir_with(config: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("rules")).unwrap();
    std::fs::write(d.path().join("rules/http.yml"), RULES).unwrap();
    std::fs::write(d.path().join("rollbackd.toml"), config).unwrap();
    d
}

fn eval(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let d = dir_with(config);
    let (code, out, err) = run_rollbackd(
        d.path(),
        &["--config", "rollbackd.toml", "rules", "eval"],
        env,
    );
    let text = format!("{out}{err}");
    assert!(
        !text.contains(SECRET),
        "the secret is never printed: {text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    (code, text)
}

const KEYS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", KEY_ID),
    ("AWS_SECRET_ACCESS_KEY", SECRET),
    ("AWS_SESSION_TOKEN", TOKEN),
];

#[test]
fn every_request_is_signed_as_aws_computes_it_and_wrong_credentials_are_named() {
    let fake = FakeService::start();
    let prom = Prometheus::start(&[fake.addr], None);
    prom.wait_for_scrape("http_requests_total");
    let gateway = Gateway::start(&prom.url());
    let good = config(&gateway.url(), "region = \"eu-west-1\"");

    // The watcher: combined and single queries and the targets API, all
    // signed with the keys from the standard environment variables.
    let d = dir_with("");
    let w = Watcher::start_with_env(d.path(), &good, &KEYS);
    for rule in ["HighErrorRate", "Traffic"] {
        wait_for(
            &format!("{rule} to evaluate through the gateway"),
            Duration::from_secs(30),
            || {
                w.metric(
                    "rollbackd_rule_evaluations_total",
                    &[("rule", rule), ("outcome", "ok")],
                )
                .filter(|v| *v >= 2.0)
            },
        );
    }
    let dump = w.dump();
    assert!(!dump.contains(SECRET) && !dump.contains(TOKEN), "{dump}");
    drop(w);

    // A back-test's range queries, signed too.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let time =
        |t: u64| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string();
    let bt = dir_with(&good);
    let (code, out, err) = run_rollbackd(
        bt.path(),
        &[
            "--config",
            "rollbackd.toml",
            "rules",
            "backtest",
            "--from",
            &time(now - 60),
            "--to",
            &time(now),
        ],
        &KEYS,
    );
    assert_eq!(code, 0, "{out}{err}");

    let requests = gateway.requests();
    let refused: Vec<&Value> = requests.iter().filter(|r| r["verdict"] != "ok").collect();
    assert!(refused.is_empty(), "{refused:#?}");
    for path in ["/api/v1/query", "/api/v1/targets", "/api/v1/query_range"] {
        assert!(
            requests.iter().any(|r| r["path"] == path),
            "no signed request to {path}: {requests:#?}"
        );
    }
    // The shape AMP expects: the scope, the signed headers (the session
    // token among them), the payload's hash; the tenant header rides along.
    for r in &requests {
        let auth = r["authorization"].as_str().unwrap();
        assert!(
            auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/"))
                && auth.contains("/eu-west-1/aps/aws4_request, ")
                && auth.contains(
                    "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, "
                ),
            "{r}"
        );
        assert_eq!(r["content_sha256"].as_str().map(str::len), Some(64), "{r}");
        assert_eq!(r["tenant"], "team-a", "{r}");
    }

    // A wrong secret: AMP's refusal, and the key to fix.
    let mut wrong = KEYS;
    wrong[1].1 = "not-the-secret";
    let (_, text) = eval(&good, &wrong);
    assert!(
        text.contains("The request signature we calculated does not match"),
        "{text}"
    );
    assert!(text.contains("fix prometheus.sigv4"), "{text}");
    // `check` asks Prometheus through the same client: a refused signature
    // fails it, naming the key; good keys pass.
    let check = |env: &[(&str, &str)]| {
        let d = dir_with(&good);
        let (code, out, err) =
            run_rollbackd(d.path(), &["--config", "rollbackd.toml", "check"], env);
        (code, format!("{out}{err}"))
    };
    let (code, text) = check(&wrong);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("rollbackd: prometheus: ") && text.contains("fix prometheus.sigv4"),
        "{text}"
    );
    let (code, text) = check(&KEYS);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "prometheus OK: {} answers (sigv4; headers X-Scope-OrgID)",
            gateway.url()
        )),
        "{text}"
    );
    // Another region: the credential's scope is refused.
    let (_, text) = eval(&config(&gateway.url(), "region = \"us-east-1\""), &KEYS);
    assert!(text.contains("scoped to a valid region"), "{text}");

    // A profile of the shared credentials file, with no keys in the
    // environment.
    let creds = tempfile::tempdir().unwrap();
    let file = creds.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = OTHER\naws_secret_access_key = other\n\n\
             [amp]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\naws_session_token = {TOKEN}\n"
        ),
    )
    .unwrap();
    let file_env = [("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap())];
    let (code, text) = eval(
        &config(&gateway.url(), "region = \"eu-west-1\"\nprofile = \"amp\""),
        &file_env,
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(" ok "), "{text}");
    // A profile that is not there is named, before any request.
    let (code, text) = eval(
        &config(&gateway.url(), "region = \"eu-west-1\"\nprofile = \"nope\""),
        &file_env,
    );
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("prometheus.sigv4.profile \"nope\": no aws_access_key_id"),
        "{text}"
    );
}

#[test]
fn sigv4_settings_that_cannot_work_are_refused_by_check() {
    for (sigv4, extra, says) in [
        ("", "", "prometheus.sigv4.region: not set"),
        (
            "region = \"eu-west-1\"\naccess_key = \"AKID\"",
            "",
            "access_key and secret_key go together",
        ),
        (
            "region = \"eu-west-1\"",
            "bearer_token = \"t\"\n",
            "set only one of bearer_token, bearer_token_file, basic_auth and sigv4",
        ),
        (
            "region = \"eu-west-1\"\nsigning = true",
            "",
            "prometheus.sigv4.signing: unknown field",
        ),
    ] {
        let text = config("http://127.0.0.1:1", sigv4)
            .replace("[prometheus]\n", &format!("[prometheus]\n{extra}"));
        let d = dir_with(&text);
        let (code, out, err) = run_rollbackd(
            d.path(),
            &["--config", "rollbackd.toml", "check", "--offline"],
            &[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "")],
        );
        assert_eq!(code, 2, "{sigv4}: {out}{err}");
        assert!(err.contains(says), "{sigv4}: {err}");
    }
}
