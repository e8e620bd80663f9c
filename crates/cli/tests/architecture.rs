//! ARCHITECTURE.md is the code map: every workspace crate has its section, and every source file
//! of a crate is named in it. A module added without a place on the map fails here.

use std::{fs, path::Path};

use unspoof_testkit::repo;

/// The workspace members, from the root manifest's `members = [...]`.
fn members(manifest: &str) -> Vec<String> {
    let start = manifest.find("members = [").expect("members") + "members = [".len();
    let end = start + manifest[start..].find(']').unwrap();
    manifest[start..end]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// The text of the section whose heading starts with "### `<crate_dir>`", up to the next heading.
fn section<'a>(map: &'a str, crate_dir: &str) -> Option<&'a str> {
    let heading = format!("### `{crate_dir}`");
    let start = map.find(&heading)?;
    let body = &map[start + heading.len()..];
    let end = body.find("\n#").unwrap_or(body.len());
    Some(&body[..end])
}

fn sources(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(base).unwrap();
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Where `section` fails to name a file of `src` (by its path under src/, or a nested file
/// by its name in backticks, as in a list under its folder).
fn unnamed(section: &str, src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|rel| {
            let name = rel.rsplit('/').next().unwrap();
            let named = section.contains(&format!("`{rel}`"))
                || section.contains(&format!("{rel}`"))
                || section.contains(&format!("(+ `{rel}"))
                || (rel.contains('/') && section.contains(&format!("`{name}`")));
            !named
        })
        .collect()
}

#[test]
fn every_crate_and_module_is_on_the_map() {
    let root = repo();
    let map = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = members(&manifest);
    assert!(members.len() >= 10, "{members:?}");
    let mut missing = Vec::new();
    for member in &members {
        let Some(text) = section(&map, member) else {
            missing.push(format!("{member}: no section \"### `{member}`\""));
            continue;
        };
        for file in unnamed(text, &root.join(member).join("src")) {
            missing.push(format!("{member}/src/{file}"));
        }
    }
    assert!(
        missing.is_empty(),
        "not on the map (ARCHITECTURE.md):\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_check_sees_a_missing_module() {
    let src = repo().join("crates/message/src");
    let text = "- `lib.rs`: x. `address.rs`, `auth_results.rs`, `codec.rs`, `date.rs`";
    assert_eq!(unnamed(text, &src), ["mailbox.rs"]);
}
