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
/// (`http://user:pass@host`) become `***`. The part of a parse error or log
/// line that is not a URL is left alone.
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | ')') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
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
}
