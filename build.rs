//! The commit rollbackd is built from, for `rollbackd --version` and the
//! `rollbackd_build_info` metric: `ROLLBACKD_COMMIT` when the build sets it
//! (the Docker image's build argument), else `git rev-parse` of the
//! checkout, else `unknown` (a source tarball). It reaches the code as
//! `BUILD_COMMIT`: cargo also sets it when it runs the tests, and a
//! `ROLLBACKD_*` name there would be read as configuration.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=ROLLBACKD_COMMIT");
    let commit = std::env::var("ROLLBACKD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BUILD_COMMIT={commit}");
    // Built again when the checkout moves to another commit, and only then.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
}
