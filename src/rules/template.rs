//! `{{name}}` variables in rule files, so one file serves many services.
//! Only plain identifiers are variables; anything else between braces (such as
//! Prometheus's own `{{ $value }}` in annotations) is left as written.

use std::collections::BTreeMap;

/// Replaces every `{{ name }}` with its value. Returns the names that have no
/// value, so the caller can report all of them at once.
pub(crate) fn expand(text: &str, vars: &BTreeMap<String, String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let name = after[..close].trim();
        if is_identifier(name) {
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    if !missing.iter().any(|m| m == name) {
                        missing.push(name.to_string());
                    }
                }
            }
        } else {
            out.push_str(&rest[open..open + 2 + close + 2]);
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("service", "web"), ("environment", "production")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_known_variables_with_or_without_spaces() {
        let out = expand(
            r#"up{service="{{service}}",env="{{ environment }}"}"#,
            &vars(),
        )
        .unwrap();
        assert_eq!(out, r#"up{service="web",env="production"}"#);
    }

    #[test]
    fn leaves_prometheus_templates_alone() {
        let text = "value {{ $value }} on {{ $labels.instance }}";
        assert_eq!(expand(text, &vars()).unwrap(), text);
    }

    #[test]
    fn reports_every_missing_variable_once() {
        let missing = expand("{{team}} {{region}} {{team}}", &vars()).unwrap_err();
        assert_eq!(missing, vec!["team", "region"]);
    }
}
