//! `unspoof trace` and `unspoof report` end to end on log fixtures and real report samples.

use unspoof_testkit::{TempDir, repo};

use std::{
    path::PathBuf,
    process::{Command, Output},
};

fn fixture(name: &str) -> String {
    repo()
        .join("crates/forensics/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn example(name: &str) -> String {
    repo().join("examples").join(name).display().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn postfix_log_confirms_the_received_header() {
    let out = run(&[
        "trace",
        "--json",
        "--log",
        &fixture("postfix.log"),
        &example("sample-spoof.eml"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["queue_ids"], serde_json::json!(["4F1A2B3C4D"]));
    assert_eq!(v["hop_check"]["status"], "confirmed");
    assert_eq!(v["clients"][0]["ip"], "203.0.113.66");
    assert!(
        v["clients"][0]["tls"]
            .as_str()
            .unwrap()
            .starts_with("TLSv1.3")
    );
    assert_eq!(
        v["senders"],
        serde_json::json!(["joe@football.example.com"])
    );
    assert_eq!(v["deliveries"][0]["status"], "sent");
    // The same client sent another message 6 minutes later; the one hours later is outside
    // the window and the other client is not listed.
    let n: Vec<&str> = v["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["queue_id"].as_str().unwrap())
        .collect();
    assert_eq!(n, ["7B8C9D0E1F"]);
    assert_eq!(
        v["neighbours"][0]["message_id"],
        "second.attempt@mail.football-example.net"
    );
    // Only this message's lines (8: connect, TLS, client, message-id, from, delivery, removed;
    // the disconnect line carries no queue id and no event we keep).
    let lines = v["lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .all(|l| l["text"].as_str().unwrap().contains("4F1A2B3C4D")
                || l["text"].as_str().unwrap().starts_with("connect from")
                || l["text"].as_str().unwrap().contains("TLS connection")),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 7);
}

#[test]
fn log_contradicts_a_forged_received_header() {
    let out = run(&[
        "trace",
        "--json",
        "--log",
        &fixture("postfix-contradicts.log"),
        &example("sample-spoof.eml"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["hop_check"]["status"], "contradicted");
    assert_eq!(v["hop_check"]["logged_ip"], "198.51.100.23");
    assert_eq!(v["hop_check"]["received_ip"], "203.0.113.66");
    let text = run(&[
        "trace",
        "--log",
        &fixture("postfix-contradicts.log"),
        &example("sample-spoof.eml"),
    ]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("CONTRADICTION"));
}

#[test]
fn gzip_rotated_logs_are_read() {
    let out = run(&[
        "trace",
        "--json",
        "--log",
        &fixture("postfix.log.1.gz"),
        &example("sample-spoof.eml"),
    ]);
    assert_eq!(json(&out)["queue_ids"], serde_json::json!(["4F1A2B3C4D"]));
}

#[test]
fn sendmail_and_exim_logs_join_by_message_id() {
    for (log, queue_id) in [
        ("sendmail.log", "5AK9E2aB004321"),
        ("exim_mainlog", "1tXyZa-000AbC-Q1"),
    ] {
        let out = run(&[
            "trace",
            "--json",
            "--log",
            &fixture(log),
            &example("sample-spoof.eml"),
        ]);
        let v = json(&out);
        assert_eq!(v["queue_ids"], serde_json::json!([queue_id]), "{log}");
        assert_eq!(v["clients"][0]["ip"], "203.0.113.66", "{log}");
        assert_eq!(
            v["deliveries"][0]["recipient"]
                .as_str()
                .unwrap()
                .trim_matches(['<', '>']),
            "suzie@shopping.example.net",
            "{log}"
        );
        assert_eq!(
            v["senders"],
            serde_json::json!(["joe@football.example.com"]),
            "{log}"
        );
    }
}

#[test]
fn abuse_report_parses_back_with_mail_auth_and_python() {
    let dir = TempDir::new("abuse");
    let out_path = dir.join("r.eml");
    let out = run(&[
        "report",
        "abuse",
        "--dns-zone",
        &example("sample.zone"),
        "--log",
        &fixture("postfix.log"),
        "--out",
        &out_path.display().to_string(),
        &example("sample-spoof.eml"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Addressed to abuse@ and postmaster@ of the domains involved (RFC 2142).
    assert!(String::from_utf8_lossy(&out.stdout).contains("abuse@example.com"));

    // mail-auth's ARF parser (through `report parse`).
    let parsed = run(&["report", "parse", "--json", &out_path.display().to_string()]);
    assert_eq!(
        parsed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let v = json(&parsed);
    assert_eq!(v["feedback_type"], "abuse");
    assert_eq!(v["source_ip"], "203.0.113.66");
    assert_eq!(
        v["original"]["message_id"],
        "<8c1f7e2a90@mail.football-example.net>"
    );
    assert_eq!(v["original"]["included"], "message");
    assert!(
        v["authentication_results"][0]
            .as_str()
            .unwrap()
            .contains("dmarc=fail")
    );

    // Python's email package.
    let script = r#"
import email, email.policy, sys
m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
assert m.get_content_type() == 'multipart/report', m.get_content_type()
assert m.get_param('report-type') == 'feedback-report'
parts = list(m.iter_parts())
assert [p.get_content_type() for p in parts] == ['text/plain', 'message/feedback-report', 'message/rfc822'], parts
text = parts[0].get_content()
assert 'The log confirms the client 203.0.113.66' in text, text
fb = parts[1].get_payload()[0] if parts[1].is_multipart() else email.message_from_string(parts[1].get_payload())
assert fb['Feedback-Type'] == 'abuse', fb
orig = parts[2].get_payload()[0]
assert orig['Message-ID'] == '<8c1f7e2a90@mail.football-example.net>'
assert not m.defects and all(not p.defects for p in m.walk()), [p.defects for p in m.walk()]
print('ok')
"#;
    let py = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
}

#[test]
fn dmarc_failure_report_redacts_what_it_is_asked_to() {
    let dir = TempDir::new("ruf");
    let out_path = dir.join("ruf.eml");
    let out = run(&[
        "report",
        "abuse",
        "--dmarc-failure",
        "--redact-local-parts",
        "--headers-only",
        "--to",
        "ruf@football.example.com",
        "--dns-zone",
        &example("sample.zone"),
        "--out",
        &out_path.display().to_string(),
        &example("sample-spoof.eml"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = std::fs::read_to_string(&out_path).unwrap();
    let original = raw
        .split("Content-Type: text/rfc822-headers")
        .nth(1)
        .expect("headers-only part");
    assert!(
        original.contains("From: Joe SixPack <redacted@football.example.com>"),
        "{original}"
    );
    assert!(!original.contains("joe@"), "{original}");
    assert!(
        !original.contains("I need you to send the payment"),
        "body must not be attached"
    );
    let v = json(&run(&[
        "report",
        "parse",
        "--json",
        &out_path.display().to_string(),
    ]));
    assert_eq!(v["feedback_type"], "auth-failure");
    assert_eq!(v["auth_failure"], "dmarc");
    assert_eq!(v["original_mail_from"], "<redacted@football.example.com>");
    assert_eq!(v["original"]["included"], "headers");
}

#[test]
fn report_samples_parse_and_broken_ones_fail_clearly() {
    // Absent: a skip line, or a failure under CI=true.
    let Some(data) = unspoof_testkit::testdata("report samples", "") else {
        return;
    };
    let mut good = 0;
    for dir in ["mail-auth-stalwart/arf", "dmarc-reports/parsedmarc/failure"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(data.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "eml"))
        {
            let out = run(&["report", "parse", "--json", &f.display().to_string()]);
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("exim_plain_text_only") {
                assert_eq!(out.status.code(), Some(65), "{name}");
                assert!(
                    String::from_utf8_lossy(&out.stderr)
                        .contains("no message/feedback-report part"),
                    "{name}"
                );
                continue;
            }
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v = json(&out);
            assert!(
                ["abuse", "auth-failure"].contains(&v["feedback_type"].as_str().unwrap()),
                "{name}: {v}"
            );
            good += 1;
        }
    }
    assert_eq!(good, 9);
}
