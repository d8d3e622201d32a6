//! `mode = "image_tag"`: the one line `key: value` of a YAML file, found and
//! changed as text, so the file's comments, order and quoting stay as the
//! team wrote them. Pure.

/// Why the key's line cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum EditError {
    #[error("no line `{key}: …` in {file}")]
    NotFound { file: String, key: String },
    #[error("{key} is on {count} lines of {file} (lines {lines}); rollbackd changes a file with exactly one")]
    Several {
        file: String,
        key: String,
        count: usize,
        lines: String,
    },
}

/// Where the value of `key` is in `text`: its byte range, without quotes.
fn locate(text: &str, file: &str, key: &str) -> Result<std::ops::Range<usize>, EditError> {
    let mut found = Vec::new();
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if let Some(range) = value_in(line, key) {
            found.push((n + 1, offset + range.start..offset + range.end));
        }
        offset += line.len();
    }
    match found.len() {
        0 => Err(EditError::NotFound {
            file: file.into(),
            key: key.into(),
        }),
        1 => Ok(found.remove(0).1),
        count => Err(EditError::Several {
            file: file.into(),
            key: key.into(),
            count,
            lines: found
                .iter()
                .map(|(n, _)| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The value's range in `line` when the line is `[indent][- ]key: value
/// [# comment]`.
fn value_in(line: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let body = line.trim_end_matches(['\n', '\r']);
    let start = body.len() - body.trim_start().len();
    let mut rest = &body[start..];
    let mut at = start;
    if let Some(r) = rest.strip_prefix("- ") {
        at += 2 + (r.len() - r.trim_start().len());
        rest = r.trim_start();
    }
    // The key, bare or quoted (`"newTag": v1`).
    let after = ["", "\"", "'"].iter().find_map(|quote| {
        rest.strip_prefix(quote)?
            .strip_prefix(key)?
            .strip_prefix(quote)
    })?;
    at += rest.len() - after.len();
    let after_colon = after.strip_prefix(':')?;
    at += 1;
    let trimmed = after_colon.trim_start();
    at += after_colon.len() - trimmed.len();
    // The value ends at a comment (` #`) or the line's end.
    let end = trimmed.find(" #").unwrap_or(trimmed.len());
    let value = trimmed[..end].trim_end();
    if value.is_empty() || value.starts_with('#') {
        return None;
    }
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return Some(at + 1..at + value.len() - 1);
        }
    }
    Some(at..at + value.len())
}

/// The value of `key` in `text`.
pub(super) fn read(text: &str, file: &str, key: &str) -> Result<String, EditError> {
    locate(text, file, key).map(|r| text[r].to_string())
}

/// `text` with the value of `key` set to `value`, and the value it had.
pub(super) fn set(
    text: &str,
    file: &str,
    key: &str,
    value: &str,
) -> Result<(String, String), EditError> {
    let range = locate(text, file, key)?;
    let old = text[range.clone()].to_string();
    let mut out = String::with_capacity(text.len() + value.len());
    out.push_str(&text[..range.start]);
    out.push_str(value);
    out.push_str(&text[range.end..]);
    Ok((out, old))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_changes_and_nothing_else() {
        let cases = [
            (
                "images:\n- name: shop\n  newTag: v2 # pinned\n",
                "images:\n- name: shop\n  newTag: v1 # pinned\n",
            ),
            (
                "image:\n  repository: x\n  tag: \"v2\"\n",
                "image:\n  repository: x\n  tag: \"v1\"\n",
            ),
            ("- newTag: 'v2'\r\n", "- newTag: 'v1'\r\n"),
            ("\"newTag\": v2", "\"newTag\": v1"),
        ];
        for (key, (before, after)) in ["newTag", "tag", "newTag", "newTag"].iter().zip(cases) {
            let (changed, old) = set(before, "f.yaml", key, "v1").unwrap();
            assert_eq!(
                (changed.as_str(), old.as_str()),
                (after, "v2"),
                "{before:?}"
            );
            assert_eq!(read(after, "f.yaml", key).unwrap(), "v1");
        }
    }

    #[test]
    fn a_key_that_is_missing_or_on_several_lines_is_refused() {
        assert_eq!(
            read("tags: x\nnewTagged: y\n", "k.yaml", "newTag")
                .unwrap_err()
                .to_string(),
            "no line `newTag: …` in k.yaml"
        );
        let several = "a:\n  tag: v1\nb:\n  tag: v2\n";
        assert_eq!(
            set(several, "v.yaml", "tag", "v0").unwrap_err().to_string(),
            "tag is on 2 lines of v.yaml (lines 2, 4); rollbackd changes a file with exactly one"
        );
        // A key with no value (a mapping) is not the tag's line.
        assert!(matches!(
            read("tag:\n  x: 1\n", "m.yaml", "tag"),
            Err(EditError::NotFound { .. })
        ));
    }
}
