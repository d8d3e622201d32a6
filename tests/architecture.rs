//! The rules the source is kept by, checked on the tree (see
//! docs/architecture.md, "Rules"): the top-level modules import each other
//! without cycles, the rules core imports only leaf modules, no public
//! function answers a bare `String` as its error, and no error prints its
//! source in its own message (a chained report would say the cause twice).
//! Each finding names the file and line to change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, with its top-level module, its path and
/// its text without comments and without its `#[cfg(test)]` tail; test-only
/// files (`tests.rs`, `tests/`, `testing.rs`) are left out.
fn sources() -> Vec<(String, PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(src()).unwrap();
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let name = parts.last().unwrap().as_str();
            if parts[..parts.len() - 1].iter().any(|p| p == "tests")
                || matches!(name, "tests.rs" | "testing.rs" | "lib.rs" | "main.rs")
            {
                return None;
            }
            let module = parts[0].trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let text = match text.find("#[cfg(test)]") {
                Some(i) => &text[..i],
                None => &text[..],
            };
            let code: Vec<&str> = text
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("//") {
                        ""
                    } else {
                        l
                    }
                })
                .collect();
            Some((module, path, code.join("\n")))
        })
        .collect()
}

/// Which top-level modules each one names (`crate::x`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    let modules: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).collect();
    let name = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _, text) in &files {
        let edges = graph.entry(module.clone()).or_default();
        for c in name.captures_iter(text) {
            let to = &c[1];
            if to != module && modules.contains(to) {
                edges.insert(to.to_string());
            }
        }
    }
    graph
}

#[test]
fn the_top_level_modules_import_each_other_without_cycles() {
    let graph = imports();
    // A module is in a cycle when it reaches itself.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for to in graph.get(&m).into_iter().flatten() {
                if seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen
    };
    let cycles: Vec<String> = graph
        .keys()
        .filter(|m| reach(m).contains(*m))
        .map(|m| {
            let back: Vec<&String> = graph[m].iter().filter(|to| reach(to).contains(m)).collect();
            format!("{m} -> {back:?} -> ... -> {m}")
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "modules that import themselves through others (move the shared type down, \
         or have the caller pass it in):\n{}",
        cycles.join("\n")
    );
    assert!(
        graph.len() > 20,
        "the walk found too few modules: {graph:?}"
    );
}

#[test]
fn the_rules_core_imports_only_leaf_modules() {
    let graph = imports();
    let allowed: BTreeSet<&str> = ["clock", "duration", "expect"].into();
    let extra: Vec<&String> = graph["rules"]
        .iter()
        .filter(|m| !allowed.contains(m.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "src/rules/ is the pure core; it imports {extra:?}: pass what it needs in instead"
    );
}

#[test]
fn no_public_function_answers_a_bare_string_as_its_error() {
    let signature = regex::Regex::new(
        r"(?m)^\s*pub (?:async )?fn \w+[^{;]*?->\s*Result<[^{;]*,\s*String>\s*(?:\{|where)",
    )
    .unwrap();
    let found: Vec<String> = sources()
        .iter()
        .flat_map(|(_, path, text)| {
            signature.find_iter(text).map(move |m| {
                let line = text[..m.start()].lines().count() + 1;
                format!("{}:{line}", path.display())
            })
        })
        .collect();
    assert!(
        found.is_empty(),
        "public functions with a String error (give them a thiserror enum):\n{}",
        found.join("\n")
    );
}

#[test]
fn no_error_prints_its_source_in_its_own_message() {
    let attribute = regex::Regex::new(r#"^\s*#\[error\((.*)\)\]\s*$"#).unwrap();
    let named = regex::Regex::new(r"(#\[(?:source|from)\]\s*)?(?:pub\s+)?(\w+)\s*:").unwrap();
    let mut found = Vec::new();
    let mut checked = 0;
    for (_, path, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(c) = attribute.captures(line) else {
                continue;
            };
            let message = &c[1];
            if message.contains("transparent") {
                continue;
            }
            checked += 1;
            // The variant, up to the line that closes it.
            let mut variant = String::new();
            for l in &lines[i + 1..(i + 14).min(lines.len())] {
                variant.push_str(l);
                variant.push('\n');
                let t = l.trim_end();
                if t.ends_with("),") || t.ends_with("},") || t.trim() == "}," {
                    break;
                }
                if !t.contains('(')
                    && !t.contains('{')
                    && t.trim_start().ends_with(',')
                    && variant.lines().count() == 1
                {
                    break;
                }
            }
            let flat = variant.replace('\n', " ");
            let mut sources = Vec::new();
            if let Some(open) = flat
                .find('(')
                .filter(|o| flat.find('{').is_none_or(|b| *o < b))
            {
                for (k, field) in flat[open + 1..].split(',').enumerate() {
                    if field.contains("#[source]") || field.contains("#[from]") {
                        sources.push(k.to_string());
                    }
                }
            } else {
                for f in named.captures_iter(&flat) {
                    if f.get(1).is_some() || &f[2] == "source" {
                        sources.push(f[2].to_string());
                    }
                }
            }
            for s in sources {
                if message.contains(&format!("{{{s}}}"))
                    || message.contains(&format!("{{{s}:"))
                    || message.contains(&format!(".{s}"))
                {
                    found.push(format!("{}:{}: {message}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "errors whose message prints their source, so a chained report says it twice \
         (keep the words and drop #[source]/#[from], rename a `source` field, or make it \
         #[error(transparent)]):\n{}",
        found.join("\n")
    );
    assert!(checked > 100, "only {checked} error messages were found");
}
