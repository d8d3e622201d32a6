//! Certificates for TLS tests, made by `openssl` (Debian package openssl)
//! in a temp dir: a CA per name, and leaves it signed.

#![allow(dead_code)]

use std::path::Path;

/// `openssl` in `dir`, failing the test with its output.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed (apt-get install -y openssl, or run scripts/test.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA: `NAME-ca.pem` and `NAME-ca.key`.
pub fn ca(dir: &Path, name: &str) {
    let ca = format!("{name}-ca");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    );
}

/// A certificate `NAME-LEAF.pem` (key `NAME-LEAF.key`, mode 0600) signed by
/// NAME's CA, with common name `cn` and the subjectAltName `san`
/// (`IP:127.0.0.1,DNS:localhost`).
pub fn leaf(dir: &Path, name: &str, leaf: &str, cn: &str, san: &str) {
    let ca = format!("{name}-ca");
    let base = format!("{name}-{leaf}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{base}.key"),
            "-out",
            &format!("{base}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{base}.ext")),
        format!("subjectAltName={san}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{base}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{base}.ext"),
            "-out",
            &format!("{base}.pem"),
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join(format!("{base}.key")),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// A CA (`NAME-ca.pem`) and certificates it signed (`NAME-LEAF.pem`,
/// `NAME-LEAF.key`, common name LEAF) for 127.0.0.1 and localhost.
pub fn certificates(dir: &Path, name: &str, leaves: &[&str]) {
    ca(dir, name);
    for l in leaves {
        leaf(dir, name, l, l, "IP:127.0.0.1,DNS:localhost");
    }
}
