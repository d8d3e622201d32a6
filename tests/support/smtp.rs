//! A real SMTP server for tests: aiosmtpd (PyPI, installed into `.venv` by
//! scripts/install-deps.sh) run by `smtp_server.py`, requiring STARTTLS and
//! AUTH, on a free loopback port. Each accepted message lands in its
//! directory as JSON. It stops when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Smtp {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

pub const USER: &str = "rollbackd";
pub const PASSWORD: &str = "smtp-password-never-logged";

impl Smtp {
    pub fn start() -> Smtp {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        let ok = Command::new(&python)
            .args(["-c", "import aiosmtpd, cryptography"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "aiosmtpd is not installed in {}. Run the suite through scripts/test.sh, which \
             installs it with `.venv/bin/pip install aiosmtpd`.",
            root.join(".venv").display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let mut child = Command::new(python)
            .arg(root.join("tests/support/smtp_server.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .args([USER, PASSWORD])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the SMTP server starts");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "smtp_server.py did not start");
        Smtp { port, dir, child }
    }

    /// The CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Each AUTH attempt: `PLAIN ok`, `LOGIN refused`.
    pub fn auth_attempts(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("auth.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("message-"))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits until `n` messages have arrived.
    pub fn wait_for(&self, n: usize) -> Vec<Value> {
        super::wait_for("the emails", Duration::from_secs(20), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
