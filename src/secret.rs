//! A string that never shows up in logs or `Debug` output: API tokens,
//! passwords, webhook URLs and keys.
//!
//! A leaf: it depends on nothing else in rollbackd, so every subsystem's
//! configuration can hold one. It must never implement `Display` or
//! `Serialize`, so a secret cannot slip into a log line or an API answer; the
//! only way to the value is [`Secret::expose`], at the point of use.

use std::fmt;

use serde::Deserialize;

/// A string that never shows up in logs or `Debug` output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `url` as it may be shown: the user and password of any URL in it
/// (`http://user:pass@host`) and the values of query parameters that look
/// like credentials (`?token=…`, `api_key`, `X-Amz-Signature`, …) become
/// `***`. The part of a parse error or log line that is not a URL is left
/// alone.
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        // The URL ends at whitespace or a quote; its authority at the first
        // '/', '?' or '#' too.
        let url_end = tail
            .find(|c: char| matches!(c, '"' | '\'' | ')') || c.is_whitespace())
            .unwrap_or(tail.len());
        let end = tail[..url_end].find(['/', '?', '#']).unwrap_or(url_end);
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        out.push_str(&redact_query(&tail[end..url_end]));
        rest = &tail[url_end..];
    }
    out.push_str(rest);
    out
}

/// A free-form line (a log line, an error) as it may be shown: URLs as
/// [`redact_url`] shows them, and the values after secret-looking names
/// (`password=…`, `"token": "…"`, `Authorization: Bearer …`) as `***`.
pub fn redact_text(text: &str) -> String {
    static ASSIGNED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"(?i)((?:password|passwd|pwd|pass|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|authorization)[\w.-]*["']?\s*[=:]\s*)(?:"[^"]*"|'[^']*'|(?:bearer\s+|basic\s+)?[^\s"',;&]+)"#,
        )
        .expect("a valid expression")
    });
    static BEARER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
            .expect("a valid expression")
    });
    let text = redact_url(text);
    let text = ASSIGNED.replace_all(&text, "${1}***");
    BEARER.replace_all(&text, "$1 ***").into_owned()
}

/// Text as it may be shown in a reason, the history or a notification:
/// redacted ([`redact_text`]), on one line, at most `max` characters.
pub fn shown(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = redact_text(&one_line);
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Why a credential named in the configuration cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{key} {}: {cause}", path.display())]
    File {
        key: &'static str,
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("{key} {} is empty", path.display())]
    Empty {
        key: &'static str,
        path: std::path::PathBuf,
    },
}

/// A credential as configured: `inline`, else the first line of `file`
/// (named `key` in errors), else the environment variable `env`; `None`
/// when none of them holds one.
pub fn token_from(
    inline: Option<&Secret>,
    file: Option<&std::path::Path>,
    key: &'static str,
    env: &str,
) -> Result<Option<Secret>, TokenFileError> {
    if let Some(token) = inline {
        return Ok(Some(token.clone()));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::File {
            key,
            path: path.to_path_buf(),
            cause: source,
        })?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty {
                key,
                path: path.to_path_buf(),
            });
        }
        return Ok(Some(Secret::new(token)));
    }
    Ok(std::env::var(env)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret::new(t.trim())))
}

/// Standard base64 with padding (RFC 4648), for `Authorization: Basic`.
pub fn base64(input: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Query parameter names whose values are never shown (matched as parts of
/// the name, in any case).
const SECRET_PARAMS: [&str; 9] = [
    "token",
    "key",
    "secret",
    "pass",
    "sig",
    "credential",
    "auth",
    "jwt",
    "code",
];

/// `path?query#fragment` with the values of secret-looking parameters as `***`.
fn redact_query(rest: &str) -> String {
    let Some(q) = rest.find('?') else {
        return rest.to_string();
    };
    let (path, query) = rest.split_at(q + 1);
    let (query, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if {
                    let lower = name.to_ascii_lowercase();
                    SECRET_PARAMS.iter().any(|s| lower.contains(s))
                } =>
            {
                format!("{name}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}{}{fragment}", pairs.join("&"))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64("a"), "YQ==");
        assert_eq!(base64("ab"), "YWI=");
    }

    #[test]
    fn credentials_in_urls_are_redacted_wherever_they_appear() {
        assert_eq!(
            redact_url("http://user:hunter2@prom:9090/x?y=1"),
            "http://***@prom:9090/x?y=1"
        );
        assert_eq!(redact_url("http://prom:9090"), "http://prom:9090");
        assert_eq!(
            redact_url("error sending request for url (https://a:b@h/api/v1/query): refused"),
            "error sending request for url (https://***@h/api/v1/query): refused"
        );
        assert_eq!(
            redact_url("\"http://u:p@x y\" and http://k@z"),
            "\"http://***@x y\" and http://***@z"
        );
        assert_eq!(redact_url("no url here"), "no url here");
    }

    #[test]
    fn secrets_in_free_text_are_redacted() {
        assert_eq!(
            redact_text(
                "login failed for postgres://app:hunter2@db/app password=hunter2, retrying"
            ),
            "login failed for postgres://***@db/app password=***, retrying"
        );
        assert_eq!(
            redact_text(r#"{"api_key": "sk-123456", "user": "ann"}"#),
            r#"{"api_key": ***, "user": "ann"}"#
        );
        assert_eq!(
            redact_text(r#"{"password": "two words", "secretKey": "s3"}"#),
            r#"{"password": ***, "secretKey": ***}"#
        );
        for config_dump in [
            "SECRET_KEY=abc123",
            "DJANGO_SECRET_KEY=abc123",
            "STRIPE_SECRET_KEY=sk_live_abc123",
            "DB_PASS=abc123",
            "PRIVATE_KEY=abc123",
            "apiToken: abc123",
        ] {
            let shown = redact_text(config_dump);
            assert!(!shown.contains("abc123"), "{config_dump} -> {shown}");
            assert!(shown.ends_with("***"), "{config_dump} -> {shown}");
        }
        assert_eq!(
            redact_text("Authorization: Bearer abcdefghijkl rejected"),
            "Authorization: *** rejected"
        );
        assert_eq!(
            redact_text("sent with bearer abcdefghijkl"),
            "sent with bearer ***"
        );
        assert_eq!(redact_text("ERROR 0 tokens left"), "ERROR 0 tokens left");
    }

    #[test]
    fn credential_query_parameters_are_redacted_and_others_kept() {
        assert_eq!(
            redact_url("https://h/hook?token=abc&team=ops#x"),
            "https://h/hook?token=***&team=ops#x"
        );
        assert_eq!(
            redact_url("get https://s3/b/o?X-Amz-Signature=f00&X-Amz-Credential=AK/1&n=2 failed"),
            "get https://s3/b/o?X-Amz-Signature=***&X-Amz-Credential=***&n=2 failed"
        );
        assert_eq!(
            redact_url("http://u:p@prom/api/v1/query?query=up&api_key=k"),
            "http://***@prom/api/v1/query?query=up&api_key=***"
        );
        assert_eq!(
            redact_url("http://prom/q?query=up"),
            "http://prom/q?query=up"
        );
    }
}
