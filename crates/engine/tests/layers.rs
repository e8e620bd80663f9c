//! The engine's modules import only downward: each module may use the modules of a lower layer
//! (and the layer crates below the engine: unspoof_message, unspoof_dns, unspoof_auth), never
//! one above it or one beside it that uses it back. A cycle (policy <-> findings was one) makes
//! a module impossible to read, test or move on its own.
//!
//! The root (`lib.rs`) sits on top: it declares `Engine`. Its data types (`Envelope`,
//! `EnvelopeReport`, `Analysis`, `MessageSummary`) are the engine's input and output and are
//! named by the layers that fill or read them; they are listed here as `ROOT_DATA`, the one
//! allowed exception, and nothing else of the root may be imported.

use std::{collections::BTreeMap, fs, path::Path};

/// Bottom to top; a module may import from its own entry's earlier layers only.
const LAYERS: &[&[&str]] = &[
    &["domain", "verdict"],
    &["trace"],
    &["policy", "bounce", "signed"],
    &["findings"],
    &["contact", "tag", "user_report"],
    &["decision"],
];

/// What `crate::` may name that is not a module of `LAYERS`: the layer crates re-exported by
/// the root, and the root's re-exports of their types.
const BELOW: &[&str] = &[
    "message",
    "address",
    "dns",
    "auth",
    "Headers",
    "Dns",
    "AuthResults",
    "Word",
    "self",
    "super",
];

/// The root's data types, named by the modules that fill or read them (see the module doc).
const ROOT_DATA: &[&str] = &["Envelope", "EnvelopeReport", "Analysis", "MessageSummary"];

/// The root's re-exports of modules' types: importing them is importing that module.
const ROOT_REEXPORTS: &[(&str, &str)] = &[
    ("Policy", "policy"),
    ("Trace", "trace"),
    ("Action", "verdict"),
    ("Reason", "verdict"),
    ("Verdict", "verdict"),
    ("Decision", "decision"),
    ("Disposition", "decision"),
    ("HeaderEdit", "decision"),
    ("SmtpReply", "decision"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The non-test source of a file, comments removed.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every name that follows `crate::`, including each first name inside `crate::{...}`.
fn crate_names(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Names at the group's top level: after `{` or a `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[j..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[j..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        out.push(name);
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut modules = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" {
            continue;
        }
        let Some(layer) = layer_of(&module) else {
            wrong.push(format!("{}: module {module} is in no layer", rel.display()));
            continue;
        };
        modules.insert(module.clone(), layer);
        for name in crate_names(&code(file)) {
            if name == module
                || BELOW.contains(&name.as_str())
                || ROOT_DATA.contains(&name.as_str())
            {
                continue;
            }
            let target = ROOT_REEXPORTS
                .iter()
                .find(|(t, _)| *t == name)
                .map_or(name.as_str(), |(_, m)| m);
            match layer_of(target) {
                Some(l) if l < layer => {}
                Some(_) => wrong.push(format!(
                    "{}: {module} imports crate::{name} ({target}), not below it",
                    rel.display()
                )),
                None => wrong.push(format!(
                    "{}: {module} imports crate::{name}, which is no known module",
                    rel.display()
                )),
            }
        }
    }
    // The check sees the modules it guards.
    for m in ["policy", "findings", "trace", "tag"] {
        assert!(
            modules.contains_key(m),
            "{m} not found under {}",
            src.display()
        );
    }
    assert!(
        wrong.is_empty(),
        "upward or sideways imports:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_finds_grouped_and_nested_imports() {
    let names = crate_names("use crate::{a, b::{c, d}, e};\nlet x = crate::f::g();");
    assert_eq!(names, ["a", "b", "e", "f"]);
}
