//! The documentation holds together: every relative link in the README,
//! `docs/` and `deploy/` Markdown goes to a file that exists and, with an
//! anchor, to a heading in it (GitHub's anchor rule); every page under
//! `docs/` is reachable from the README; and every path a page names as
//! `src/…`, `tests/…`, `scripts/…`, `deploy/…`, `bench/…` or `examples/…`
//! exists. (The configuration reference is checked against the code by
//! `config::reference` in the unit tests.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files checked.
fn pages() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    for dir in ["docs", "deploy"] {
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "md") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// The lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case; letters, digits, spaces,
/// hyphens and underscores kept; spaces become hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a page, duplicates numbered as GitHub does.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let s = slug(heading.trim_start_matches('#'));
        let n = seen.entry(s.clone()).or_default();
        out.insert(if *n == 0 {
            s.clone()
        } else {
            format!("{s}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of `[text](target)` links outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        // Inline code spans are not links.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            out.push(tail[..end].trim().to_string());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn every_link_and_anchor_between_the_pages_resolves() {
    let mut broken = Vec::new();
    let mut cache: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let shown = page.strip_prefix(root()).unwrap().display().to_string();
            if !path.exists() {
                broken.push(format!("{shown}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let known = cache.entry(path.clone()).or_insert_with(|| {
                    anchors(&std::fs::read_to_string(&path).unwrap_or_default())
                });
                if !known.contains(anchor) {
                    broken.push(format!("{shown}: {target}: no heading with that anchor"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_docs_page_is_reachable_from_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .filter_map(|t| {
            t.strip_prefix("docs/")
                .map(|p| p.split('#').next().unwrap().to_string())
        })
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("docs")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".md") && name != "SUMMARY.md" && !linked.contains(&name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs pages the README does not link: {missing:?}"
    );
    let lines = readme.lines().count();
    assert!(
        lines <= 400,
        "the README is the front door: {lines} lines; move detail into docs/"
    );
}

#[test]
fn every_path_the_pages_name_exists() {
    let mut missing = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for word in text.split(|c: char| {
            c.is_whitespace() || matches!(c, '`' | '(' | ')' | ',' | ';' | '"' | '\'' | '[' | ']')
        }) {
            let word = word.trim_end_matches(['.', ':']);
            let named = ["src/", "tests/", "scripts/", "bench/", "examples/"]
                .iter()
                .any(|p| word.starts_with(p));
            if !named || word.contains(['*', '<', '{', '…']) {
                continue;
            }
            if !Path::new(&root().join(word)).exists() {
                missing.push(format!(
                    "{}: {word}",
                    page.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths named in the docs that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_command_is_in_the_commands_page() {
    use clap::CommandFactory;
    let page = std::fs::read_to_string(root().join("docs/commands.md")).unwrap();
    let missing: Vec<String> = rollbackd::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|name| {
            !page.contains(&format!("  {name} ")) && !page.contains(&format!("  {name}\n"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "commands docs/commands.md's synopsis does not list: {missing:?}"
    );
}
