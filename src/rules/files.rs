//! Finding and reading rule files, before any parsing: which files the
//! rule paths name, and what can never be a rule file.
//!
//! - A directory contributes its `*.yml`/`*.yaml` entries (sorted, hidden
//!   entries skipped, not recursive, which keeps Kubernetes ConfigMap
//!   mounts' `..data` folders out).
//! - An entry that is a dangling or looping symlink (a ConfigMap key whose
//!   target went away), or that is not a regular file (a FIFO, a socket, a
//!   directory named `x.yml`) is an error naming it, never skipped in
//!   silence: its rules would vanish without a word.
//! - A file is opened without blocking (a FIFO cannot hang the reader),
//!   read up to [`MAX_FILE_BYTES`], and refused when its flow collections
//!   (`[…]`, `{…}`) nest deeper than [`MAX_NESTING`]: the YAML parser's time
//!   grows with the square of the depth, and no rule file needs more than
//!   a few levels.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::load::{LoadError, RuleError};

/// The largest rule file read (4 MiB; rule files are kilobytes).
pub(crate) const MAX_FILE_BYTES: u64 = 4 << 20;
/// The deepest nesting of `[…]` and `{…}` accepted in a rule file.
pub(crate) const MAX_NESTING: usize = 64;

/// The rule files under `paths`, and a problem for each entry that cannot
/// be one. A configured path that does not exist is a [`LoadError::Path`].
pub(crate) fn rule_files(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<RuleError>), LoadError> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Path {
            path: path.clone(),
            cause: source,
        })?;
        if !meta.is_dir() {
            match not_a_rule_file(path, Ok(meta)) {
                None => files.push(path.clone()),
                Some(why) => problems.push(problem(path, why)),
            }
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| LoadError::Path {
            path: path.clone(),
            cause: source,
        })?;
        let mut found: Vec<PathBuf> = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let p = entry.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || !(name.ends_with(".yml") || name.ends_with(".yaml")) {
                continue;
            }
            match not_a_rule_file(&p, std::fs::metadata(&p)) {
                None => found.push(p),
                Some(why) => problems.push(problem(&p, why)),
            }
        }
        found.sort();
        files.extend(found);
    }
    problems.sort_by(|a, b| a.file.cmp(&b.file));
    Ok((files, problems))
}

/// Why `path` (with its followed metadata) cannot be read as a rule file.
fn not_a_rule_file(path: &Path, meta: std::io::Result<std::fs::Metadata>) -> Option<String> {
    match meta {
        Ok(m) if m.is_file() => None,
        Ok(m) if m.is_dir() => Some("is a directory; rule files must be regular files".into()),
        Ok(_) => Some(
            "is not a regular file (a FIFO, socket or device); rule files must be regular files"
                .into(),
        ),
        Err(e) => Some(match std::fs::read_link(path) {
            Ok(target) => format!(
                "is a symlink to {}, which cannot be read ({e}); restore its target or remove the link",
                target.display()
            ),
            Err(_) => format!("cannot be read: {e}"),
        }),
    }
}

fn problem(file: &Path, message: String) -> RuleError {
    RuleError {
        file: file.to_path_buf(),
        group: None,
        rule: None,
        message,
    }
}

/// The text of one rule file, within the limits above.
pub(crate) fn read(file: &Path) -> Result<String, RuleError> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .map_err(|e| problem(file, format!("cannot read the file: {e}")))?;
    let meta = opened
        .metadata()
        .map_err(|e| problem(file, format!("cannot read the file: {e}")))?;
    if let Some(why) = not_a_rule_file(file, Ok(meta)) {
        return Err(problem(file, why));
    }
    let mut bytes = Vec::new();
    opened
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| problem(file, format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(problem(
            file,
            format!(
                "is larger than {} MiB; split it into several rule files",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    let text =
        String::from_utf8(bytes).map_err(|e| problem(file, format!("is not UTF-8 text: {e}")))?;
    if let Some(line) = too_deep(&text) {
        return Err(problem(
            file,
            format!(
                "line {line}: `[` and `{{` nest deeper than {MAX_NESTING} levels; no rule needs that many"
            ),
        ));
    }
    Ok(text)
}

/// The line where flow collections first nest deeper than [`MAX_NESTING`].
///
/// Read the way YAML reads them:
/// - outside a flow collection, `[` and `{` (and quotes) start something
///   only where a value starts (at the start of a line, or after `:`, `-`,
///   `,` or `?`), so `x[5m]` in a plain scalar counts for nothing; inside
///   one, every bracket counts;
/// - a tag, anchor or alias (`!t`, `&a`, `*a`) before a value is skipped;
/// - quoted strings may span lines; in double quotes `\` escapes;
/// - the lines of a block scalar (`|`, `>-`…) are text, skipped;
/// - `#` after a space starts a comment.
pub(crate) fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote = None::<char>;
    // The indentation of the line that opened a block scalar.
    let mut block = None::<usize>;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(opener) = block {
            if line.trim().is_empty() || indent > opener {
                continue;
            }
            block = None;
        }
        let mut escaped = false;
        let mut in_token = false;
        // The last character that is not a space, outside quotes.
        let mut last = None::<char>;
        let mut previous = ' ';
        for c in line.chars() {
            if in_token {
                let ends = c.is_whitespace() || (depth > 0 && matches!(c, ',' | ']' | '}'));
                if !ends {
                    previous = c;
                    continue;
                }
                in_token = false;
            }
            let token_starts = matches!(last, None | Some(':' | '-' | ',' | '?' | '[' | '{'));
            let value_starts = depth > 0 || token_starts;
            match (quote, c) {
                (Some('"'), _) if escaped => escaped = false,
                (Some('"'), '\\') => escaped = true,
                (Some(q), c) if c == q => {
                    quote = None;
                    last = Some(c);
                }
                (Some(_), _) => {}
                (None, '#') if previous.is_whitespace() => break,
                (None, '!' | '&' | '*') if token_starts => in_token = true,
                (None, '"' | '\'') if token_starts => quote = Some(c),
                (None, '[' | '{') if value_starts => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some(n + 1);
                    }
                    last = Some(c);
                }
                (None, ']' | '}') if depth > 0 => {
                    depth -= 1;
                    last = Some(c);
                }
                (None, c) if !c.is_whitespace() => last = Some(c),
                _ => {}
            }
            previous = c;
        }
        if quote.is_none() && depth == 0 {
            let code = line.split(" #").next().unwrap_or_default().trim_end();
            let indicator = code.rsplit(char::is_whitespace).next().unwrap_or_default();
            let opens_block = indicator.starts_with(['|', '>'])
                && indicator[1..]
                    .chars()
                    .all(|c| matches!(c, '-' | '+' | '0'..='9'));
            if opens_block {
                block = Some(indent);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_and_promql_is_not() {
        assert_eq!(too_deep("groups: [[[]]]\n"), None);
        let promql = "expr: sum(rate(x{job=\"a[\"}[5m])) > 1 # [[[[\n";
        assert_eq!(too_deep(&promql.repeat(100)), None);
        let deep = format!("a: 1\ngroups: {}{}\n", "[".repeat(65), "]".repeat(65));
        assert_eq!(too_deep(&deep), Some(2));
        let deep_maps = format!("groups: {}\n", "{a: ".repeat(65));
        assert_eq!(too_deep(&deep_maps), Some(1));
        // Quotes that once hid the nesting from the count.
        let escaped = format!("groups: [ \"\\\"\", {}\n", "[".repeat(65));
        assert_eq!(too_deep(&escaped), Some(1));
        let apostrophe = format!("groups: [x'y, {}\n", "[".repeat(65));
        assert_eq!(too_deep(&apostrophe), Some(1));
        // Brackets in block scalars are text, however unbalanced.
        let prose = "    description: |\n      ratio in [0, 1) of x[5m]\n".repeat(100);
        assert_eq!(too_deep(&prose), None);
        let folded = "  - d: >-\n      [0, 1) expected\n      [more\n".repeat(100);
        assert_eq!(too_deep(&folded), None);
        // Tags and anchors once hid every level.
        let tags = format!("x: {}\n", "!t [".repeat(65));
        assert_eq!(too_deep(&tags), Some(1));
        let anchors: String = (0..65).map(|i| format!("&a{i} [")).collect();
        assert_eq!(too_deep(&format!("x: {anchors}\n")), Some(1));
        // A double-quoted string that ends on the next line.
        let spanning = format!("x: [\"a\n{}\n", " \", [[[[[[[[[[ \"a".repeat(7));
        assert_eq!(too_deep(&spanning), Some(2));
    }

    #[test]
    fn dangling_symlinks_fifos_and_directories_are_named_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.yml"), "groups: []\n").unwrap();
        std::os::unix::fs::symlink(d.join("gone.yml"), d.join("b.yml")).unwrap();
        std::os::unix::fs::symlink(d.join("loop.yml"), d.join("loop.yml")).unwrap();
        std::fs::create_dir(d.join("c.yml")).unwrap();
        let fifo = std::ffi::CString::new(d.join("d.yml").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(d.join("notes.txt"), "not a rule file").unwrap();

        let (files, problems) = rule_files(&[d.to_path_buf()]).unwrap();
        assert_eq!(files, [d.join("a.yml")]);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 4, "{text:?}");
        assert!(
            text[0].contains("b.yml: is a symlink to") && text[0].contains("gone.yml"),
            "{text:?}"
        );
        assert!(text[1].contains("c.yml: is a directory"), "{text:?}");
        assert!(text[2].contains("d.yml: is not a regular file"), "{text:?}");
        assert!(text[3].contains("loop.yml: is a symlink"), "{text:?}");

        // Named directly, the FIFO is refused without blocking.
        let err = read(&d.join("d.yml")).unwrap_err();
        assert!(err.message.contains("not a regular file"), "{err}");
        let (files, problems) = rule_files(&[d.join("d.yml")]).unwrap();
        assert!(files.is_empty() && problems.len() == 1);
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yml");
        std::fs::write(&big, "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        let err = read(&big).unwrap_err();
        assert!(
            err.to_string().contains("big.yml: is larger than 4 MiB"),
            "{err}"
        );
    }
}
