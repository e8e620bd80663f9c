//! The reaction loop through `unspoof serve` (docs/reaction.md): users report mail to the
//! report address with real swaks sessions carrying reports written as Thunderbird writes them
//! (forward as attachment, inline forward; `crates/engine/tests/fixtures/reaction`), and get
//! an answer in plain words in their mailbox; the reports are in `unspoof log search --kind
//! report`. And `unspoof analyze` flags a message that skipped the gateway.

mod common;

use common::spawn_serve;
use unspoof_testkit::{free_port, repo, stop};

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

fn fixture(name: &str) -> PathBuf {
    repo()
        .join("crates/engine/tests/fixtures/reaction")
        .join(name)
}

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ZONE: &str = r#"
$ORIGIN football.example.com.
@                     IN TXT "v=spf1 ip4:213.165.64.12/32 -all"
_dmarc                IN TXT "v=DMARC1; p=none"
brisbane._domainkey   IN TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
"#;

fn start() -> Server {
    let dir = std::env::temp_dir().join(format!(
        "unspoof-reaction-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    std::fs::write(dir.join("z.zone"), ZONE).unwrap();
    std::fs::write(
        dir.join("unspoof.toml"),
        format!(
            r#"hostname = "mx1.shopping.example.net"
protected_domains = ["shopping.example.net"]
internal_networks = ["127.0.0.0/8"]

# The shipped genuine sample was signed years ago: received today it is an old signature
# (dkim.old_signature, tagged). This test needs it delivered as it is, so the age check is off.
[dkim_replay]
max_signature_age_hours = 0

[gateway]
data_dir = "{data}"
listen = "127.0.0.1:{port}"
submission = ""
metrics = ""
domains = ["shopping.example.net"]
trusted_networks = ["127.0.0.0/8"]
gateway_names = ["mx1.shopping.example.net"]
report_address = "report-phish@shopping.example.net"
report_notify = ["security@shopping.example.net"]
reverse_dns = false

# The engine reads football.example.com as a cousin of example.net, the registrable domain
# of our documentation-space site: log-only here, so the genuine sample stays genuine.
[actions]
lookalike = "accept"
"#,
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    let child = spawn_serve(
        &dir.join("unspoof.toml"),
        &dir.join("z.zone"),
        &dir.join("serve.log"),
        port,
    );
    Server { child, port, dir }
}

impl Server {
    fn swaks(&self, from: &str, to: &str, file: &Path) -> Output {
        let out = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--from",
                from,
                "--to",
                to,
                "--helo",
                "client.shopping.example.net",
            ])
            .arg("--data")
            .arg(file)
            .output()
            .expect("swaks (installed by scripts/deps-gateway.sh)");
        let transcript = String::from_utf8_lossy(&out.stdout);
        assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");
        out
    }

    /// The delivered message containing `marker`, waiting for the report desk.
    fn wait_for(&self, marker: &str) -> String {
        let new = self.dir.join("data/maildir/new");
        let started = Instant::now();
        loop {
            for e in std::fs::read_dir(&new).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if text.contains(marker) {
                    return text;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nothing delivered with {marker:?}; serve.log:\n{}",
                std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn reports_are_answered_in_plain_words_and_logged() {
    let server = start();
    // The genuine message reaches Bob and Carol through the gateway first (recorded: accepted).
    server.swaks(
        "joe@football.example.com",
        "bob@shopping.example.net,carol@shopping.example.net",
        &repo().join("examples/sample-genuine.eml"),
    );
    server.wait_for("Is dinner ready?");

    // Bob reports it, forwarded as an attachment: found in the records, genuine.
    server.swaks(
        "bob@shopping.example.net",
        "report-phish@shopping.example.net",
        &fixture("report-attached-genuine.eml"),
    );
    let answer = server.wait_for("Subject: Re: Fwd: Is dinner ready?");
    assert!(answer.contains("To: bob@shopping.example.net"), "{answer}");
    assert!(
        answer.contains("From: report-phish@shopping.example.net"),
        "{answer}"
    );
    assert!(answer.contains("Auto-Submitted: auto-replied"), "{answer}");
    assert!(answer.contains("No: the sender is who it says"), "{answer}");
    assert!(answer.contains("It was delivered to you"), "{answer}");
    assert!(answer.contains("213.165.64.12"), "{answer}");
    // The security team is told, with the other mailbox that holds the same message.
    let notice = server.wait_for("Subject: User report (Genuine): Is dinner ready?");
    assert!(
        notice.contains("To: security@shopping.example.net"),
        "{notice}"
    );
    assert!(
        notice.contains("bob@shopping.example.net reported a message"),
        "{notice}"
    );
    assert!(
        notice.contains("  carol@shopping.example.net (accept; record "),
        "{notice}"
    );
    assert!(
        notice.contains("The original is on record: unspoof log show "),
        "{notice}"
    );
    assert!(!notice.contains("report abuse"), "{notice}");

    // A forgery that never passed us, attached: forged, and we have no record of it.
    server.swaks(
        "bob@shopping.example.net",
        "report-phish@shopping.example.net",
        &fixture("report-attached-forged.eml"),
    );
    let answer = server.wait_for("In-Reply-To: <rep1.5b1e7c2a@shopping.example.net>");
    assert!(
        answer.contains("Yes: this message is not from who it claims to be"),
        "{answer}"
    );
    assert!(answer.contains("203.0.113.66"), "{answer}");
    assert!(
        answer.contains("no record of it passing through our gateway"),
        "{answer}"
    );
    let notice = server.wait_for("Subject: User report (Forged): Invoice overdue - pay today");
    assert!(notice.contains("unspoof report abuse "), "{notice}");
    let kept = notice
        .split("unspoof report abuse ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    let kept = std::fs::read_to_string(kept).expect("the forgery is kept for the abuse report");
    assert!(
        kept.contains("Message-ID: <a81f0c2e9d.7731@bot.example>"),
        "{kept}"
    );

    // The same forgery forwarded inline: what the forward kept cannot prove anything.
    server.swaks(
        "bob@shopping.example.net",
        "report-phish@shopping.example.net",
        &fixture("report-inline-forged.eml"),
    );
    let answer = server.wait_for("In-Reply-To: <rep3.77aa01bd@shopping.example.net>");
    assert!(answer.contains("You forwarded it inline"), "{answer}");
    assert!(answer.contains("Forward As > Attachment"), "{answer}");

    // Every report is on record, beside the verdicts.
    let data = server.dir.join("data");
    let started = Instant::now();
    let lines = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["log", "search", "--kind", "report", "--json", "--data-dir"])
            .arg(&data)
            .env_remove("UNSPOOF_STORE")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= 3 || started.elapsed() > Duration::from_secs(30) {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["reasons"][0], "report.user", "{l}");
        assert_eq!(l["action"], "reported", "{l}");
    }
    let genuine = lines
        .iter()
        .find(|l| l["message_id"] == "20030712040037.46341.5F8J@football.example.com")
        .expect("the genuine report names the original's Message-ID");
    assert!(
        genuine["reply"]
            .as_str()
            .unwrap_or("")
            .starts_with("original record ")
    );
    let forged = lines
        .iter()
        .find(|l| l["message_id"] == "a81f0c2e9d.7731@bot.example")
        .unwrap();
    let reasons: Vec<&str> = forged["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(reasons.contains(&"spoof.own_domain"), "{reasons:?}");
    assert!(
        lines.iter().any(|l| l["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "report.inline")),
        "{lines:?}"
    );
    // The report address's mail is the desk's: no report itself was delivered.
    assert!(
        std::fs::read_dir(data.join("maildir/new"))
            .unwrap()
            .flatten()
            .all(|e| !std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains("Suzie never writes like this")),
    );
}

/// Real Postfix bounces (`scripts/make-bounce-fixtures.sh`) arriving at the gateway from the
/// bouncing MX: the bounce of our own mail is delivered, the bounce of a forgery in our name
/// is quarantined and on record as backscatter.
#[test]
fn backscatter_is_quarantined_and_the_bounce_of_our_own_mail_delivered() {
    let server = start();
    let bounce = |name: &str| -> Output {
        // As the bouncing MX sends it: the null sender, to Suzie; the delivery lines Postfix's
        // virtual agent added to the fixture (Return-Path, X-Original-To, Delivered-To and its
        // own Received) are not part of what the MX sends.
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let start = text.find("Date: ").unwrap();
        let file = server.dir.join(name);
        std::fs::write(&file, &text[start..]).unwrap();
        Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", server.port)])
            .args([
                "--from",
                "",
                "--to",
                "suzie@shopping.example.net",
                "--helo",
                "mx.partner.example",
            ])
            .arg("--data")
            .arg(&file)
            .output()
            .expect("swaks")
    };
    let ours = bounce("bounce-of-ours.eml");
    assert!(String::from_utf8_lossy(&ours.stdout).contains("<-  250 2.0.0"));
    let delivered = server.wait_for("Our order 4471");
    assert!(!delivered.contains("X-Unspoof-Verdict"), "{delivered}");

    let forged = bounce("bounce-of-forgery.eml");
    assert!(String::from_utf8_lossy(&forged.stdout).contains("<-  250 2.0.0"));
    let data = server.dir.join("data");
    let started = Instant::now();
    let record = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args([
                "log",
                "search",
                "--kind",
                "backscatter",
                "--json",
                "--data-dir",
            ])
            .arg(&data)
            .env_remove("UNSPOOF_STORE")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(l) = text
            .lines()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            break l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no backscatter record"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(record["action"], "quarantine", "{record}");
    assert_eq!(
        record["message_id"],
        "20261207072005.55C539903E6@mx.partner.example"
    );
    let shown = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(["log", "show", "--json", "--data-dir"])
        .arg(&data)
        .arg(record["id"].as_str().unwrap())
        .env_remove("UNSPOOF_STORE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("backscatter.forged"), "{text}");
    assert!(
        text.contains(
            "the forged message reached mx.partner.example from 203.0.113.66 (bot.example)"
        ),
        "the forger's origin is on record: {text}"
    );
    // Only one backscatter record: the bounce of our own mail is not one.
    let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args([
            "log",
            "search",
            "--kind",
            "backscatter",
            "--json",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("UNSPOOF_STORE")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let all = std::fs::read_dir(data.join("maildir/new"))
        .unwrap()
        .flatten()
        .count();
    assert_eq!(all, 1, "the forgery's bounce is not delivered");
}

#[test]
fn analyze_flags_a_message_that_skipped_the_gateway() {
    let dir = std::env::temp_dir().join(format!(
        "unspoof-hub-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("unspoof.toml");
    std::fs::write(
        &policy,
        "hostname = \"inner.shopping.example.net\"\nprotected_domains = [\"shopping.example.net\"]\ninternal_networks = [\"10.0.0.0/8\"]\n[gateway]\ngateway_names = [\"mx1.shopping.example.net\"]\n",
    )
    .unwrap();
    let run = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["analyze", "--offline", "--json", "--policy"])
            .arg(&policy)
            .arg(fixture(name))
            .output()
            .unwrap()
    };
    let passed = run("hub-passed.eml");
    assert_eq!(
        passed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&passed.stdout)
    );
    let skipped = run("hub-bypassed.eml");
    assert_eq!(skipped.status.code(), Some(1), "tag is exit 1");
    let v: serde_json::Value = serde_json::from_slice(&skipped.stdout).unwrap();
    let codes: Vec<&str> = v["verdict"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert!(codes.contains(&"hub.bypass"), "{codes:?}");
    let forged_hop = run("hub-bypassed-forged-hop.eml");
    assert_eq!(forged_hop.status.code(), Some(1));

    // A bounce: quarantined (exit 2) unless the store's answer is replayed as ours.
    let bounce = |sent: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["analyze", "--offline", "--policy"])
            .arg(&policy)
            .args(sent)
            .arg(fixture("bounce-of-forgery.eml"))
            .output()
            .unwrap()
    };
    assert_eq!(bounce(&[]).status.code(), Some(2));
    assert_eq!(bounce(&["--sent-by-us", "no"]).status.code(), Some(2));
    assert_eq!(bounce(&["--sent-by-us", "yes"]).status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
