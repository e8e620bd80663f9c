//! The one reading of `unspoof.toml`: where its errors point, and that the shipped example and
//! the docs' tables of keys say what the types read (so neither can drift from the code).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The error of `text` as `(line, column, key, message)`.
fn error(text: &str) -> (usize, usize, String, String) {
    match Config::parse(text, "u.toml").unwrap_err() {
        ConfigError::Invalid {
            path,
            line,
            column,
            key,
            message,
        } => {
            assert_eq!(path, "u.toml");
            (line, column, key, message)
        }
        e => panic!("{e}"),
    }
}

#[test]
fn every_error_names_the_line_the_column_and_the_key() {
    // A typo in a door's section, in the policy, in a nested section, in an array of tables.
    let (line, column, key, message) = error("hostname = \"mx\"\n[gateway.limits]\nmax_rcpt = 5\n");
    assert_eq!(
        (line, column, key.as_str()),
        (3, 1, "gateway.limits.max_rcpt")
    );
    assert!(message.contains("unknown field `max_rcpt`"), "{message}");
    let (line, column, key, _) = error("hostname = \"mx\"\nprotected_domain = [\"a.example\"]\n");
    assert_eq!((line, column, key.as_str()), (2, 1, "protected_domain"));
    let (line, _, key, _) = error("[actions]\nspf_fail = \"tag\"\nlookalikes = \"tag\"\n");
    assert_eq!((line, key.as_str()), (3, "actions.lookalikes"));
    let (line, _, key, _) = error(
        "[[gateway.users]]\nname = \"a\"\npassword_hash = \"x\"\naddresses = []\n\
         [[gateway.users]]\nname = \"b\"\npasword_hash = \"x\"\n",
    );
    assert_eq!((line, key.as_str()), (7, "gateway.users[1].pasword_hash"));
    // A value of the wrong kind, where the value is.
    let (line, column, key, _) = error("[milter]\nlog_verdicts = true\non_error = \"bounce\"\n");
    assert_eq!((line, column, key.as_str()), (3, 12, "milter.on_error"));
    let (line, _, key, _) = error("[store]\nbatch_size = \"many\"\n");
    assert_eq!((line, key.as_str()), (2, "store.batch_size"));
    let (line, _, key, _) = error("[console]\nlisten = \"everywhere\"\n");
    assert_eq!((line, key.as_str()), (2, "console.listen"));
    // Values that parse but cannot work: the section's own check, placed at its key.
    let (line, _, key, message) =
        error("[gateway]\nlisten = \"127.0.0.1:25\"\nreport_address = \"phish\"\n");
    assert_eq!((line, key.as_str()), (3, "gateway.report_address"));
    assert!(message.contains("is not an address"), "{message}");
    let (line, _, key, _) = error("[milter.limits]\nmax_packet_size = 10\n");
    assert_eq!((line, key.as_str()), (2, "milter.limits.max_packet_size"));
    let (line, _, key, _) = error("[dmarc]\nsend = false\nmax_destinations = 1\n");
    assert_eq!((line, key.as_str()), (3, "dmarc.max_destinations"));
    let (line, _, key, message) =
        error("[console]\nenabled = true\ntls_cert = \"/etc/unspoof/console.crt\"\n");
    assert_eq!((line, key.as_str()), (3, "console.tls_cert"));
    assert!(message.contains("go together"), "{message}");
    // The policy's own check, at the entry it refuses.
    let (line, _, key, message) = error(
        "[[protected_people]]\nname = \"A\"\naddresses = [\"a@x.example\"]\n\n\
         [[protected_people]]\nname = \"B\"\naddresses = [\"b\"]\n",
    );
    assert_eq!((line, key.as_str()), (5, "protected_people[1]"));
    assert!(message.contains("full addresses"), "{message}");
    // A section that is not one, and text that is not TOML.
    let (line, _, key, _) = error("hostname = \"mx\"\ngateway = 1\n");
    assert_eq!((line, key.as_str()), (2, "gateway"));
    let (line, _, key, _) = error("hostname = \"mx\"\n[gateway\n");
    assert_eq!((line, key.as_str()), (2, ""));
    // As printed: file:line:column: key: message.
    let printed = Config::parse(
        "[gateway.limits]\nmax_rcpt = 5\n",
        "/etc/unspoof/unspoof.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        printed
            .starts_with("/etc/unspoof/unspoof.toml:2:1: gateway.limits.max_rcpt: unknown field"),
        "{printed}"
    );
}

#[test]
fn the_policy_gets_what_it_needs_from_the_doors_sections() {
    let c = Config::parse(
        "protected_domains = [\"Shop.Example.\"]\n[gateway]\ngateway_names = [\"MX1.shop.example.\"]\n\
         [store]\nnode = \"mx1\"\n",
        "u.toml",
    )
    .unwrap();
    assert_eq!(c.policy.gateway_names, ["mx1.shop.example"]);
    assert_eq!(c.policy.protected_domains, ["shop.example"]);
    assert!(c.sets("store.node") && c.sets("store") && !c.sets("store.url"));
    assert!(c.sets("gateway.gateway_names") && !c.sets("hostname"));
    // Without the file: every default, and no hub.
    let d = Config::default();
    assert!(d.policy.gateway_names.is_empty() && !d.sets("gateway"));
}

// ---------------------------------------------------------------------------------------------
// The example and the docs against the types
// ---------------------------------------------------------------------------------------------

/// A section of the file as the example and the docs name it, and the page whose table of keys
/// documents it (none: `examples/unspoof.toml` is its documentation).
struct Section {
    /// `""` for the policy's top level, `actions`, `gateway.limits`, `gateway.users`, ...
    name: &'static str,
    /// The text that opens one (an array of tables gets a first entry's required keys).
    opening: &'static str,
    /// Its page, and whether it has rows of its own there (else the keys are named in prose or
    /// in one row, as `[[gateway.users]]`'s are).
    doc: Option<(&'static str, bool)>,
}

const SECTIONS_CHECKED: &[Section] = &[
    Section {
        name: "",
        opening: "",
        doc: None,
    },
    Section {
        name: "actions",
        opening: "[actions]\n",
        doc: None,
    },
    Section {
        name: "tag",
        opening: "[tag]\n",
        doc: None,
    },
    Section {
        name: "dkim_replay",
        opening: "[dkim_replay]\n",
        doc: None,
    },
    Section {
        name: "protected_people",
        opening: "[[protected_people]]\n",
        doc: None,
    },
    Section {
        name: "signed_mail",
        opening: "[[signed_mail]]\n",
        doc: None,
    },
    Section {
        name: "signed_mail.senders",
        opening: "protected_domains = [\"a.example\"]\n[[signed_mail]]\ndomain = \"a.example\"\nsenders = [{ dkim_domain = \"a.example\", ",
        doc: None,
    },
    Section {
        name: "signatures",
        opening: "[signatures]\n",
        doc: Some(("docs/signatures.md", true)),
    },
    Section {
        name: "gateway",
        opening: "[gateway]\n",
        doc: Some(("docs/gateway.md", true)),
    },
    Section {
        name: "gateway.limits",
        opening: "[gateway.limits]\n",
        doc: Some(("docs/gateway.md", true)),
    },
    Section {
        name: "gateway.users",
        opening: "[[gateway.users]]\n",
        doc: Some(("docs/gateway.md", false)),
    },
    Section {
        name: "gateway.dkim",
        opening: "[[gateway.dkim]]\n",
        doc: Some(("docs/gateway.md", false)),
    },
    Section {
        name: "milter",
        opening: "[milter]\n",
        doc: Some(("docs/milter.md", true)),
    },
    Section {
        name: "milter.limits",
        opening: "[milter.limits]\n",
        doc: Some(("docs/milter.md", true)),
    },
    Section {
        name: "store",
        opening: "[store]\n",
        doc: Some(("docs/store.md", true)),
    },
    // docs/dmarc-reports.md: "Every `[dmarc]` key is in examples/unspoof.toml."
    Section {
        name: "dmarc",
        opening: "[dmarc]\n",
        doc: None,
    },
    Section {
        name: "console",
        opening: "[console]\n",
        doc: Some(("docs/console.md", true)),
    },
];

/// The keys the type behind `section` reads, as its own error for an unknown key lists them.
fn keys_of(section: &Section) -> BTreeSet<String> {
    const PROBE: &str = "no_such_key_for_the_test";
    let text = if section.opening.ends_with(", ") {
        format!("{}{PROBE} = 1 }}]\n", section.opening)
    } else {
        format!("{}{PROBE} = 1\n", section.opening)
    };
    let (_, _, _, message) = error(&text);
    let expected = message
        .split_once("expected")
        .unwrap_or_else(|| panic!("[{}]: {message}", section.name))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every key `examples/unspoof.toml` writes, commented out or not, by section: the lines
/// `key = value` and the headers `[name]` / `[[name]]` (a header also counts as a key of its
/// parent section).
fn example_keys() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("examples/unspoof.toml").lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = h.trim_matches(|c| c == '[' || c == ']');
            if name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
            {
                let (parent, key) = name.rsplit_once('.').unwrap_or(("", name));
                out.entry(parent.to_string())
                    .or_default()
                    .insert(key.to_string());
                section = name.to_string();
            }
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            out.entry(section.clone())
                .or_default()
                .insert(key.to_string());
        }
        // `senders = [ { name = ..., dkim_domain = ... }, ... ]`, one entry a line.
        if line.starts_with('{') && section == "signed_mail" {
            for part in line.split(['{', ',']) {
                if let Some((k, _)) = part.split_once('=') {
                    out.entry("signed_mail.senders".into())
                        .or_default()
                        .insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

/// The first cells of a page's tables of keys (`| key | default | ... |`), by table.
fn doc_key_rows(doc: &str) -> Vec<BTreeMap<String, String>> {
    let mut tables = Vec::new();
    let mut current: Option<BTreeMap<String, String>> = None;
    for line in doc.lines() {
        if line.starts_with("| key |") {
            current = Some(BTreeMap::new());
            continue;
        }
        let Some(rows) = current.as_mut() else {
            continue;
        };
        if !line.starts_with('|') {
            tables.push(current.take().unwrap());
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 3 || cells[1].starts_with("---") {
            continue;
        }
        for key in cells[1].split('`').skip(1).step_by(2) {
            rows.insert(key.to_string(), cells[2].to_string());
        }
    }
    tables.extend(current);
    tables
}

/// The example with its commented-out keys and section headers (`# key = value`,
/// `# [section]`) put back: every key the file documents.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix('#') else {
                return line.to_string();
            };
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let key = rest
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            if key.is_some() || rest.starts_with('[') {
                rest.to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_and_the_docs_name_every_key_the_types_read_and_no_other() {
    let example_text = read("examples/unspoof.toml");
    let example = Config::parse(&example_text, "examples/unspoof.toml")
        .unwrap_or_else(|e| panic!("the example must load: {e}"));
    // What the comments document is valid too.
    if let Err(e) = Config::parse(&uncommented(&example_text), "the example uncommented") {
        panic!("{e}");
    }
    let written = example_keys();
    let mut problems = Vec::new();
    let mut doc_keys: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for section in SECTIONS_CHECKED {
        let mut keys = keys_of(section);
        if section.name.is_empty() {
            // The doors' sections, which the policy's type does not read.
            keys.extend(SECTIONS.map(String::from));
        }
        assert!(!keys.is_empty(), "[{}]", section.name);
        let in_example = written.get(section.name).cloned().unwrap_or_default();
        for k in keys.difference(&in_example) {
            problems.push(format!(
                "examples/unspoof.toml: [{}] {k} is not there",
                section.name
            ));
        }
        for k in in_example.difference(&keys) {
            problems.push(format!(
                "examples/unspoof.toml: [{}] {k} is no key of the type (drift or typo)",
                section.name
            ));
        }
        if let Some((doc, rows)) = section.doc {
            let text = read(doc);
            let documented: BTreeSet<String> = doc_key_rows(&text)
                .into_iter()
                .flat_map(|t| t.into_keys())
                .collect();
            for k in &keys {
                let nested = written.contains_key(&format!("{}.{k}", section.name));
                let found = if nested {
                    text.contains(&format!("{}.{k}]", section.name))
                } else if rows {
                    documented.contains(k)
                } else {
                    text.contains(&format!("`{k}`"))
                };
                if !found {
                    problems.push(format!("{doc}: [{}] {k} is not documented", section.name));
                }
            }
            doc_keys.entry(doc).or_default().extend(keys);
        }
    }
    for (doc, keys) in &doc_keys {
        for table in doc_key_rows(&read(doc)) {
            for k in table.keys() {
                if !k.starts_with('[') && !keys.contains(k) {
                    problems.push(format!("{doc}: a row for `{k}`, which no section reads"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The limits are shipped at their defaults, as the example says.
    assert_eq!(
        format!("{:?}", example.gateway.limits),
        format!("{:?}", GatewayConfig::default().limits)
    );
    assert_eq!(
        format!("{:?}", example.milter.limits),
        format!("{:?}", MilterConfig::default().limits)
    );
    assert_eq!(
        format!("{:?}", example.console),
        format!("{:?}", ConsoleConfig::default())
    );
}

/// The number a docs' default cell starts with (`10 000`, `300 s`, `134217728 (128 MiB)`).
fn leading_number(cell: &str) -> Option<i64> {
    let cell = cell.trim_matches('`');
    if !cell.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut digits = String::new();
    let mut chars = cell.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '0'..='9' => digits.push(c),
            // A group separator only between digits: "10 000", "2,000".
            ' ' | ',' if chars.peek().is_some_and(char::is_ascii_digit) => {}
            _ => break,
        }
    }
    digits.parse().ok()
}

#[test]
fn the_docs_defaults_are_the_defaults() {
    let example: toml::Table = read("examples/unspoof.toml").parse().unwrap();
    let mut problems = Vec::new();
    for (doc, sections) in [
        ("docs/gateway.md", &["gateway", "gateway.limits"][..]),
        ("docs/milter.md", &["milter", "milter.limits"][..]),
        ("docs/store.md", &["store"][..]),
        ("docs/console.md", &["console"][..]),
    ] {
        for table in doc_key_rows(&read(doc)) {
            for (key, default) in table {
                let Some(number) = leading_number(&default) else {
                    continue;
                };
                // The example writes each limit at its default (checked above against the
                // types); a key it leaves out or comments out is checked through the type.
                let value = sections.iter().find_map(|s| {
                    s.split('.')
                        .try_fold(&example, |t, part| t.get(part)?.as_table())
                        .and_then(|t| t.get(&key))
                        .and_then(toml::Value::as_integer)
                });
                match value {
                    Some(v) if v != number => problems.push(format!(
                        "{doc}: `{key}` default {number}, the example (at the defaults) {v}"
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `NNN X.Y.Z` in `text`.
fn reply_codes(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    for i in 0..b.len().saturating_sub(8) {
        let code = &b[i..i + 3];
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if !(boundary
            && code.iter().all(u8::is_ascii_digit)
            && matches!(code[0], b'2' | b'4' | b'5'))
            || b[i + 3] != b' '
            || b[i + 4] != code[0]
            || b[i + 5] != b'.'
        {
            continue;
        }
        let rest = &text[i + 4..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let enhanced = rest[..end].trim_end_matches('.');
        if enhanced.split('.').count() == 3 && enhanced.split('.').all(|p| !p.is_empty()) {
            out.insert(format!("{} {enhanced}", &text[i..i + 3]));
        }
    }
    out
}

#[test]
fn every_reply_the_limits_docs_quote_is_one_the_gateway_sends() {
    let mut sent = String::new();
    for entry in std::fs::read_dir(root().join("crates/gateway/src")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("config.rs") {
            sent.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let sent = reply_codes(&sent);
    assert!(
        sent.contains("550 5.6.0") && sent.contains("552 5.3.4"),
        "{sent:?}"
    );
    let example = read("examples/unspoof.toml");
    let limits_of_example = example
        .split("[gateway.limits]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .unwrap();
    let config = read("crates/gateway/src/config.rs");
    let quoted: Vec<(&str, BTreeSet<String>)> = vec![
        ("docs/gateway.md", reply_codes(&read("docs/gateway.md"))),
        (
            "examples/unspoof.toml [gateway.limits]",
            reply_codes(limits_of_example),
        ),
        ("crates/gateway/src/config.rs", reply_codes(&config)),
    ];
    let mut problems = Vec::new();
    for (source, codes) in &quoted {
        for code in codes.difference(&sent) {
            problems.push(format!(
                "{source} quotes {code}, which the gateway never sends"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
