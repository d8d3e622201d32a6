//! The rules the source is kept by, checked on the tree (see
//! docs/architecture.md, "Rules"): the top-level modules import each other
//! without cycles, the rules core imports only leaf modules, no public
//! function answers a bare `String` as its error, no error prints its
//! source in its own message (a chained report would say the cause twice),
//! and metrics are recorded only through telemetry's typed events.
//! Each finding names the file and line to change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, with its top-level module, its path and
/// its text without comments and without its `#[cfg(test)]` items; test-only
/// files (`tests.rs`, `tests/`, `testing.rs`, and any a `#[cfg(test)] mod x;`
/// declares) are left out.
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
    let read: Vec<(PathBuf, String, Vec<PathBuf>)> = files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let (text, test_only) = without_test_items(&path, &text);
            (path, text, test_only)
        })
        .collect();
    let test_only: BTreeSet<PathBuf> = read.iter().flat_map(|(_, _, t)| t.clone()).collect();
    read.into_iter()
        .filter_map(|(path, text, _)| {
            let rel = path.strip_prefix(src()).unwrap();
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let name = parts.last().unwrap().as_str();
            if parts[..parts.len() - 1].iter().any(|p| p == "tests")
                || matches!(name, "tests.rs" | "testing.rs" | "lib.rs" | "main.rs")
                || test_only.contains(&path)
            {
                return None;
            }
            let module = parts[0].trim_end_matches(".rs").to_string();
            Some((module, path, text))
        })
        .collect()
}

/// `text` without comment lines and without the items under
/// `#[cfg(test)]` (a `mod tests { .. }`, a helper `impl`), and the files
/// its `#[cfg(test)] mod x;` lines declare.
fn without_test_items(path: &Path, text: &str) -> (String, Vec<PathBuf>) {
    let dir = match path.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs") => path.parent().unwrap().to_path_buf(),
        _ => path.with_extension(""),
    };
    let mut kept = Vec::new();
    let mut test_files = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            kept.push("");
            continue;
        }
        if trimmed != "#[cfg(test)]" {
            kept.push(line);
            continue;
        }
        // The item under the attribute: one line up to `;`, or up to the
        // brace that closes it.
        kept.push("");
        let mut depth = 0i32;
        let mut opened = false;
        for item in lines.by_ref() {
            kept.push("");
            let item = item.split("//").next().unwrap_or("");
            if let Some(name) = item
                .trim()
                .strip_prefix("mod ")
                .and_then(|m| m.strip_suffix(';'))
            {
                test_files.push(dir.join(format!("{name}.rs")));
                test_files.push(dir.join(name).join("mod.rs"));
                break;
            }
            depth += item.matches('{').count() as i32 - item.matches('}').count() as i32;
            opened |= item.contains('{');
            if (opened && depth <= 0) || (!opened && item.trim_end().ends_with(';')) {
                break;
            }
        }
    }
    (kept.join("\n"), test_files)
}

/// Where `pattern` matches in the modules `in_module` picks, as `file:line`.
fn places(pattern: &regex::Regex, in_module: impl Fn(&str) -> bool) -> Vec<String> {
    sources()
        .iter()
        .filter(|(module, _, _)| in_module(module))
        .flat_map(|(_, path, text)| {
            pattern.find_iter(text).map(move |m| {
                let line = text[..m.start()].lines().count() + 1;
                format!("{}:{line}", path.display())
            })
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
    let found = places(&signature, |_| true);
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
        // A message rustfmt spread over several lines is read as one, with
        // the number of the line it starts on.
        let mut lines: Vec<String> = Vec::new();
        let mut numbers: Vec<usize> = Vec::new();
        let mut open: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            match open.take() {
                Some(mut joined) if line.trim_start().starts_with(")]") => {
                    joined.push_str(")]");
                    lines.push(joined);
                }
                Some(mut joined) => {
                    joined.push_str(line.trim());
                    joined.push(' ');
                    open = Some(joined);
                }
                None if line.trim() == "#[error(" => {
                    open = Some("#[error(".to_string());
                    numbers.push(n + 1);
                }
                None => {
                    lines.push(line.to_string());
                    numbers.push(n + 1);
                }
            }
        }
        for (i, line) in lines.iter().enumerate() {
            let Some(c) = attribute.captures(line) else {
                continue;
            };
            let message = &c[1];
            // The format string, then the arguments it is given.
            let arguments = message
                .rfind('"')
                .map_or("", |end| &message[end + 1..])
                .to_string();
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
                let argument = regex::Regex::new(&format!(r"\b{s}\b")).unwrap();
                if message.contains(&format!("{{{s}}}"))
                    || message.contains(&format!("{{{s}:"))
                    || message.contains(&format!(".{s}"))
                    || argument.is_match(&arguments)
                {
                    found.push(format!("{}:{}: {message}", path.display(), numbers[i]));
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

#[test]
fn metrics_are_recorded_only_through_telemetry() {
    let call = regex::Regex::new(r"metrics::(?:counter|gauge|histogram|describe_\w+)!").unwrap();
    let found = places(&call, |module| module != "telemetry");
    assert!(
        found.is_empty(),
        "metrics recorded outside telemetry (add a typed event to src/telemetry/events.rs, one that logs and counts together):\n{}",
        found.join("\n")
    );
}
