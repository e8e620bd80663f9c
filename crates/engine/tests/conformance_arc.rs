//! The ValiMail ARC validation suite (`arc-valimail/arc-draft-validation-tests.yml`, 171 cases)
//! run through `auth::authenticate`, DNS served from each scenario's `txt-records`.
//!
//! Each case's `message` (LF line ends, fed as CRLF) must give `auth.arc.result` equal to the
//! expected chain validation status `cv` (Pass, Fail, None; lower-cased as the upstream harness
//! does). Three cases expect an empty string: their chain already carries cv=fail, which RFC 8617
//! 5.2 makes a failed chain, so they are read as `fail` (SOURCES.md). Case id: the test's name.
//!
//! The file names four tests twice in one mapping (175 entries). YAML forbids duplicate keys; the
//! upstream harness (PyYAML) keeps the last of each, which is what the count of 171 means, so the
//! earlier copies are dropped here the same way (see [`drop_shadowed_tests`]).

mod support;

use std::{net::IpAddr, time::Duration};

use unspoof_engine::{
    auth::{AuthInput, authenticate},
    dns::{Dns, Zone},
};
use yaml_rust2::{Yaml, YamlLoader};

const SUITE: &str = "arc-valimail";

const DNS_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn arc_validation_suite() {
    let Some(dir) = support::testdata(SUITE, "arc-valimail") else {
        return;
    };
    let text = support::read_text(&dir.join("arc-draft-validation-tests.yml"));
    let text = drop_shadowed_tests(&text);
    let docs = YamlLoader::load_from_str(&text).expect("arc-draft-validation-tests.yml is YAML");
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let mut suite = support::Suite::new(SUITE);
    for doc in &docs {
        let description = doc["description"].as_str().unwrap_or("?");
        let mut zone = Zone::new();
        if let Some(records) = doc["txt-records"].as_hash() {
            for (name, value) in records {
                let (Some(name), Some(value)) = (name.as_str(), value.as_str()) else {
                    panic!("scenario {description:?}: txt-records want name: text");
                };
                zone.add_txt(name, value)
                    .unwrap_or_else(|e| panic!("scenario {description:?}: {name}: {e}"));
            }
        }
        let dns = Dns::zones(zone, DNS_TIMEOUT)
            .await
            .expect("zone server starts");
        let Some(tests) = doc["tests"].as_hash() else {
            panic!("scenario {description:?} has no tests");
        };
        for (name, case) in tests {
            let id = name.as_str().expect("test names are strings");
            if id.starts_with(SHADOWED) {
                continue;
            }
            let message = match &case["message"] {
                Yaml::String(s) => s.as_str(),
                Yaml::Null | Yaml::BadValue => "",
                other => panic!("{id}: message {other:?}"),
            };
            let expected = match &case["cv"] {
                Yaml::String(s) if s.trim().is_empty() => "fail".to_string(),
                Yaml::String(s) => s.trim().to_ascii_lowercase(),
                Yaml::Null | Yaml::BadValue => "fail".to_string(),
                other => panic!("{id}: cv {other:?}"),
            };
            let raw = support::crlf(message.as_bytes());
            let auth = authenticate(
                &raw,
                AuthInput {
                    ip: Some(ip),
                    helo: "",
                    mail_from: "",
                    host_domain: "receiver.example",
                },
                &dns,
            )
            .await;
            let ours = auth.arc.result.as_str();
            let shown = match &auth.arc.reason {
                Some(r) => format!("{ours} ({r})"),
                None => ours.to_string(),
            };
            suite.record(id, ours == expected, shown, expected);
        }
    }
    suite.finish(Some(171));
}

/// Prefix given to the earlier copies of a test named twice in one scenario.
const SHADOWED: &str = "shadowed-";

/// Renames every earlier copy of a test name that appears twice in one document's `tests:`
/// mapping to a key the loop skips, so the last copy wins as with PyYAML.
fn drop_shadowed_tests(text: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let test_name = |line: &str| -> Option<String> {
        let rest = line.strip_prefix("  ")?;
        if rest.starts_with(' ') {
            return None;
        }
        let name = rest.trim_end().strip_suffix(':')?;
        (!name.is_empty() && !name.contains(' ')).then(|| name.to_string())
    };
    let mut out = String::with_capacity(text.len());
    let mut dropped = 0;
    let mut doc_start = 0;
    let ends = (0..=lines.len()).filter(|&i| i == lines.len() || lines[i].starts_with("---"));
    for end in ends {
        let doc = &lines[doc_start..end];
        for (i, line) in doc.iter().enumerate() {
            match test_name(line) {
                Some(name)
                    if doc[i + 1..]
                        .iter()
                        .any(|l| test_name(l).as_ref() == Some(&name)) =>
                {
                    dropped += 1;
                    out.push_str(&format!("  {SHADOWED}{dropped}-{name}:\n"));
                }
                _ => out.push_str(line),
            }
        }
        if end < lines.len() {
            out.push_str(lines[end]);
        }
        doc_start = end + 1;
    }
    if dropped > 0 {
        println!(
            "{SUITE}: {dropped} test(s) named twice in one scenario: the last copy counts, as upstream"
        );
    }
    out
}
