//! Shared helpers of the conformance suites (`tests/conformance_*.rs`).
//!
//! - [`testdata`] finds `../shared/testdata` (or `$UNSPOOF_TESTDATA`) and prints the skip line
//!   when it is absent;
//! - [`Suite`] collects case outcomes and compares them with the suite's checked-in
//!   known-differences file (`tests/known-differences/<suite>.txt`): a failing case outside that
//!   file fails the test; a listed case that now passes is reported so the file can be trimmed.
//!
//! Known-differences files hold one case per line, fields separated by two or more spaces:
//! `<case id>  <what we say>  <what the suite says>  <why ours is defensible>`. Blank lines and
//! lines starting with `#` are comments.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

/// The shared test data folder, or `None` (after printing the skip line) when it is absent.
/// `sub` is the suite's folder inside it, checked too.
/// Under `CI=true` an absent folder fails the test instead (`unspoof_testkit::testdata`).
pub fn testdata(suite: &str, sub: &str) -> Option<PathBuf> {
    unspoof_testkit::testdata(suite, sub)
}

/// Prints a line that shows even when the test harness captures output (summary and skip
/// lines belong in every test log).
pub fn say(line: &str) {
    unspoof_testkit::say(line)
}

/// Reads a file of the test data; panics with the path on failure (the folder exists, so a
/// missing file is a broken copy, not a reason to skip).
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn read_text(path: &Path) -> String {
    String::from_utf8(read(path)).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()))
}

/// LF (or mixed) line endings to CRLF, as the suites' messages must be fed.
pub fn crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32);
    let mut prev = 0u8;
    for &b in text {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// One known difference, as read from the file.
#[derive(Debug, Clone)]
pub struct Known {
    pub line: usize,
    pub text: String,
}

/// Parses a known-differences file; a missing file means no known differences.
pub fn known_differences(suite: &str) -> BTreeMap<String, Known> {
    let path = known_path(suite);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return BTreeMap::new();
    };
    let mut known = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let id = trimmed.split_whitespace().next().unwrap_or_default();
        let fields = trimmed.split("  ").filter(|f| !f.trim().is_empty()).count();
        assert!(
            fields >= 4,
            "{}:{}: want `<case id>  <ours>  <suite>  <reason>` (two spaces between fields)",
            path.display(),
            n + 1
        );
        let previous = known.insert(
            id.to_string(),
            Known {
                line: n + 1,
                text: trimmed.to_string(),
            },
        );
        assert!(
            previous.is_none(),
            "{}:{}: case {id} listed twice",
            path.display(),
            n + 1
        );
    }
    known
}

fn known_path(suite: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/known-differences")
        .join(format!("{suite}.txt"))
}

/// What one case gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub ok: bool,
    /// What we said.
    pub ours: String,
    /// What the suite expects.
    pub theirs: String,
}

/// The cases of one suite, checked against its known-differences file when finished.
pub struct Suite {
    name: String,
    outcomes: Vec<Outcome>,
}

impl Suite {
    pub fn new(name: &str) -> Self {
        Suite {
            name: name.to_string(),
            outcomes: Vec::new(),
        }
    }

    pub fn record(
        &mut self,
        id: impl Into<String>,
        ok: bool,
        ours: impl Into<String>,
        theirs: impl Into<String>,
    ) {
        let id = id.into();
        assert!(
            !self.outcomes.iter().any(|o| o.id == id),
            "{}: case id {id} used twice",
            self.name
        );
        self.outcomes.push(Outcome {
            id,
            ok,
            ours: ours.into(),
            theirs: theirs.into(),
        });
    }

    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Prints the summary line and every difference; panics if a case outside the
    /// known-differences file failed, or if `expected_cases` is given and the count differs.
    pub fn finish(self, expected_cases: Option<usize>) {
        let known = known_differences(&self.name);
        let mut passed = 0;
        let mut known_failed = 0;
        let mut unexpected = Vec::new();
        let mut now_pass = Vec::new();
        for o in &self.outcomes {
            match (o.ok, known.get(&o.id)) {
                (true, None) => passed += 1,
                (true, Some(k)) => {
                    passed += 1;
                    now_pass.push(format!(
                        "  {} (line {}) now passes: {}",
                        o.id, k.line, k.text
                    ));
                }
                (false, Some(_)) => {
                    known_failed += 1;
                    println!(
                        "{}: known difference {}: we say {}, suite says {}",
                        self.name, o.id, o.ours, o.theirs
                    );
                }
                (false, None) => unexpected.push(o),
            }
        }
        let stale: Vec<&String> = known
            .keys()
            .filter(|id| !self.outcomes.iter().any(|o| &o.id == *id))
            .collect();
        if !now_pass.is_empty() {
            say(&format!(
                "{}: {} listed known difference(s) now pass; trim {}:",
                self.name,
                now_pass.len(),
                known_path(&self.name).display()
            ));
            for line in &now_pass {
                say(line);
            }
        }
        for id in &stale {
            say(&format!(
                "{}: known difference {id} names no case of the suite",
                self.name
            ));
        }
        say(&format!(
            "{}: {} passed, {} known differences, {} unexpected",
            self.name,
            passed,
            known_failed,
            unexpected.len()
        ));
        let mut msg = String::new();
        for o in &unexpected {
            let _ = writeln!(msg, "{}  {}  {}", o.id, o.ours, o.theirs);
        }
        assert!(
            unexpected.is_empty(),
            "{}: {} unexpected failure(s) (<case id>  <ours>  <suite>):\n{msg}",
            self.name,
            unexpected.len()
        );
        if let Some(n) = expected_cases {
            assert_eq!(
                self.outcomes.len(),
                n,
                "{}: the suite should have {n} cases, found {}",
                self.name,
                self.outcomes.len()
            );
        }
    }
}

/// Decodes standard base64 (whitespace ignored, padding optional); for keys in test data.
pub fn base64(text: &str) -> Vec<u8> {
    unspoof_engine::message::codec::base64_decode(text.as_bytes())
        .unwrap_or_else(|| panic!("not base64: {text:?}"))
}
