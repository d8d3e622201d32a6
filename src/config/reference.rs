//! The configuration reference in `docs/configuration.md` against the code,
//! both ways: every key the configuration accepts is documented, and every
//! documented key is accepted. The code's keys are found by asking the
//! configuration itself: a probe key in a table is refused with the list of
//! the keys the table takes (serde's `deny_unknown_fields`); a table inside
//! it refuses a probe of its own; a tagged table names its types; a map
//! takes any key.

use std::collections::BTreeSet;

use figment::error::Kind;
use figment::providers::Serialized;
use serde_json::{json, Value};

use super::Config;

const PROBE: &str = "zz_probe";

/// One level of a key: a table (or an array of tables) by name, with the
/// `type` its table is given when it is a tagged one.
#[derive(Clone, Debug)]
struct Seg {
    key: String,
    array: bool,
    tag: Option<&'static str>,
}

/// The configuration with `leaf` (a table) at `path`.
fn build(path: &[Seg], leaf: Value) -> Value {
    path.iter().rev().fold(leaf, |mut inner, seg| {
        if let (Some(tag), Some(table)) = (seg.tag, inner.as_object_mut()) {
            table.insert("type".into(), json!(tag));
        }
        match seg.array {
            false => json!({ seg.key.clone(): inner }),
            true => json!({ seg.key.clone(): [inner] }),
        }
    })
}

enum Answer {
    /// The table takes these keys.
    Fields(Vec<&'static str>),
    /// A tagged table: these types.
    Variants(Vec<&'static str>),
    /// It takes any key.
    Map,
    /// Not a table.
    Leaf,
}

/// What the value at `path` says to a table holding a probe key (or, with
/// `probe_type`, a probe type).
fn ask(path: &[Seg], probe_type: bool) -> Answer {
    let leaf = match probe_type {
        true => json!({ "type": PROBE }),
        false => json!({ PROBE: "1" }),
    };
    let Err(errors) =
        figment::Figment::from(Serialized::defaults(build(path, leaf))).extract::<Config>()
    else {
        return Answer::Map;
    };
    let mut missing_type = false;
    for e in errors {
        match &e.kind {
            Kind::UnknownField(f, expected) if f == PROBE => {
                return Answer::Fields(expected.to_vec())
            }
            // Only a tagged table names its types for a probe type; an enum
            // value given a table names its variants too, and is a leaf.
            Kind::UnknownVariant(v, expected) if v == PROBE && probe_type => {
                return Answer::Variants(expected.to_vec())
            }
            Kind::MissingField(f) if f == "type" => missing_type = true,
            _ => {}
        }
    }
    if missing_type && !probe_type {
        return ask(path, true);
    }
    Answer::Leaf
}

fn name(path: &[Seg]) -> String {
    path.iter()
        .map(|s| match s.array {
            false => s.key.clone(),
            true => format!("{}[]", s.key),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn with(path: &[Seg], key: &str, array: bool) -> Vec<Seg> {
    let mut out = path.to_vec();
    out.push(Seg {
        key: key.to_string(),
        array,
        tag: None,
    });
    out
}

/// Every leaf key under the table at `path`.
fn walk(path: &[Seg], out: &mut BTreeSet<String>) {
    match ask(path, false) {
        Answer::Map => {
            out.insert(format!("{}.*", name(path)));
        }
        Answer::Leaf => {
            out.insert(name(path));
        }
        Answer::Variants(variants) => {
            out.insert(format!("{}.type", name(path)));
            for v in variants {
                let mut tagged = path.to_vec();
                if let Some(last) = tagged.last_mut() {
                    last.tag = Some(v);
                }
                walk(&tagged, out);
            }
        }
        Answer::Fields(fields) => {
            let tagged = path.last().is_some_and(|s| s.tag.is_some());
            for f in fields {
                if f == "type" && tagged {
                    continue;
                }
                let key = with(path, f, false);
                if matches!(
                    ask(&key, false),
                    Answer::Fields(_) | Answer::Variants(_) | Answer::Map
                ) {
                    walk(&key, out);
                    continue;
                }
                // An array of tables refuses a table but takes a list of them.
                let array = with(path, f, true);
                match ask(&array, false) {
                    Answer::Fields(_) | Answer::Variants(_) => walk(&array, out),
                    _ => {
                        out.insert(name(&key));
                    }
                }
            }
        }
    }
}

/// The keys in the first column of the reference's tables.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let reference = text
        .split("## Reference")
        .nth(1)
        .expect("a Reference section");
    reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|k| !k.contains(' '))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_reference_documents_every_key_and_only_keys() {
    let mut code = BTreeSet::new();
    walk(&[], &mut code);
    assert!(code.len() > 100, "the probe found too few keys: {code:?}");
    let docs = documented();
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let unknown: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/configuration.md's reference and the code disagree.\n\
         Accepted by the code but not documented: {undocumented:?}\n\
         Documented but not accepted: {unknown:?}"
    );
}
