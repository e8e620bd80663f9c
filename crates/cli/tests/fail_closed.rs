//! Issue 12 through both doors: each class of forgery on a message file, with a legitimate
//! twin that stays clean, through `unspoof analyze` and through a real `unspoof serve` session
//! (swaks over loopback), DNS from `examples/sample.zone` (football.example.com publishes
//! p=reject) plus a p=none domain.
//!
//! - a malformed first line (a lone space, a tab, a word without a colon, an encoded word) in
//!   front of a forgery of a p=reject domain and of our own CEO: rejected;
//! - no From field: held; only a Sender in our domain: rejected as a From spoof;
//! - DMARC fail under p=none: tagged;
//! - one line per reason code, and the same informational findings from both doors.

mod common;

use common::spawn_serve;
use unspoof_testkit::{free_port, repo, stop};

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

fn example(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("examples").join(name)).unwrap()
}

/// What football.example.com publishes (examples/sample.zone), and a p=none newsletter.
fn zone() -> String {
    let sample = std::fs::read_to_string(repo().join("examples/sample.zone")).unwrap();
    format!(
        "{sample}\n$ORIGIN nonepolicy.example.\n@ IN TXT \"v=spf1 ip4:192.0.2.10 -all\"\n_dmarc IN TXT \"v=DMARC1; p=none\"\n"
    )
}

const POLICY: &str = r#"hostname = "mx.ours.test"
protected_domains = ["ours.test"]
internal_networks = ["10.0.0.0/8"]

[[protected_people]]
name = "Suzie Q. Public"
addresses = ["suzie@ours.test"]

# The shipped samples were signed years ago, so a gateway receiving them today sees an old
# signature (dkim.old_signature, tested in sender_rules.rs). Here each forgery is compared with
# its twin, which must differ only by the malformed line: the age check is off.
[dkim_replay]
max_signature_age_hours = 0
"#;

/// The malformed first lines of the issue.
const BAD_FIRST_LINES: &[(&str, &str)] = &[
    ("space", " \r\n"),
    ("tab", "\t\r\n"),
    ("word", "junk\r\n"),
    ("encoded-word", "=?utf-8?q?Hello?=\r\n"),
];

fn behind(line: &str, msg: &[u8]) -> Vec<u8> {
    [line.as_bytes(), msg].concat()
}

/// Our own CEO, forged from outside.
fn ceo_forgery() -> Vec<u8> {
    b"From: Suzie Q. Public <suzie@ours.test>\r\nTo: accounts@ours.test\r\n\
Subject: Wire today\r\nDate: Mon, 7 Dec 2026 07:00:00 +0000\r\nMessage-ID: <w1@attacker.example>\r\n\r\n\
Please wire the money today.\r\n"
        .to_vec()
}

fn newsletter(header: &str) -> Vec<u8> {
    format!(
        "{header}To: suzie@ours.test\r\nSubject: Weekly news\r\nDate: Mon, 7 Dec 2026 07:00:00 +0000\r\n\
Message-ID: <w1@nonepolicy.example>\r\n\r\nThis week: nothing new.\r\n"
    )
    .into_bytes()
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "unspoof-fail-closed-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("z.zone"), zone()).unwrap();
        std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
        Dir(dir)
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// `unspoof analyze --json` of `msg` with the zone and the policy: (action, codes, JSON).
    fn analyze(&self, msg: &Path, envelope: &[&str]) -> (String, Vec<String>, serde_json::Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["analyze", "--json", "--dns-zone"])
            .arg(self.0.join("z.zone"))
            .arg("--policy")
            .arg(self.0.join("policy.toml"))
            .args(envelope)
            .arg(msg)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no output: {}", String::from_utf8_lossy(&out.stderr)));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let codes = reason_codes(&v);
        (
            v["verdict"]["action"].as_str().unwrap().to_string(),
            codes,
            v,
        )
    }
}

fn reason_codes(v: &serde_json::Value) -> Vec<String> {
    v["verdict"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_string())
        .collect()
}

fn has(codes: &[String], code: &str) -> bool {
    codes.iter().any(|c| c == code)
}

const FORGER: [&str; 6] = [
    "--ip",
    "203.0.113.66",
    "--helo",
    "mail.football-example.net",
    "--mail-from",
    "joe@football.example.com",
];

#[test]
fn analyze_rejects_malformed_first_line_forgeries_and_keeps_twins_clean() {
    let d = Dir::new("analyze");
    let genuine = d.file("genuine.eml", &example("sample-genuine.eml"));
    let (action, codes, _) = d.analyze(
        &genuine,
        &[
            "--ip",
            "213.165.64.12",
            "--helo",
            "mail.football.example.com",
        ],
    );
    assert_eq!(action, "accept", "{codes:?}");

    let spoof = example("sample-spoof.eml");
    let ceo = ceo_forgery();
    for (name, line) in BAD_FIRST_LINES {
        let f = d.file(&format!("spoof-{name}.eml"), &behind(line, &spoof));
        let (action, codes, v) = d.analyze(&f, &FORGER);
        assert_eq!(action, "reject", "{name}: {codes:?}");
        assert!(has(&codes, "dmarc.reject"), "{name}: {codes:?}");
        assert!(has(&codes, "header.malformed_section"), "{name}: {codes:?}");
        assert!(!has(&codes, "auth.not_checked"), "{name}: {codes:?}");
        assert_eq!(v["auth"]["dmarc"]["domain"], "football.example.com");
        assert!(v["auth"]["malformed_section"].is_string(), "{name}");

        let f = d.file(&format!("ceo-{name}.eml"), &behind(line, &ceo));
        let (action, codes, _) = d.analyze(
            &f,
            &["--ip", "203.0.113.66", "--mail-from", "suzie@ours.test"],
        );
        assert_eq!(action, "reject", "{name}: {codes:?}");
        assert!(has(&codes, "spoof.own_domain"), "{name}: {codes:?}");
    }
    // The CEO's twin: the same message handed in from our own network.
    let f = d.file("ceo.eml", &ceo);
    let (action, codes, _) = d.analyze(&f, &["--ip", "10.1.2.3", "--mail-from", "suzie@ours.test"]);
    assert_eq!(action, "accept", "{codes:?}");
}

#[test]
fn analyze_holds_mail_without_from_and_tags_p_none_failures() {
    let d = Dir::new("analyze-from");
    let news_env = [
        "--ip",
        "192.0.2.10",
        "--mail-from",
        "news@nonepolicy.example",
    ];
    let twin = d.file(
        "news.eml",
        &newsletter("From: News <news@nonepolicy.example>\r\n"),
    );
    let (action, codes, _) = d.analyze(&twin, &news_env);
    assert_eq!(action, "accept", "{codes:?}");

    let no_from = d.file("nofrom.eml", &newsletter(""));
    let (action, codes, _) = d.analyze(&no_from, &news_env);
    assert_eq!(action, "quarantine", "{codes:?}");
    assert!(has(&codes, "header.from_missing"), "{codes:?}");

    let sender = d.file(
        "sender.eml",
        &newsletter("Sender: Suzie Q. Public <suzie@ours.test>\r\n"),
    );
    let (action, codes, _) = d.analyze(&sender, &news_env);
    assert_eq!(action, "reject", "{codes:?}");
    assert!(has(&codes, "spoof.own_domain"), "{codes:?}");

    // p=none: tagged when it fails, clean from the authorised host.
    let (action, codes, _) = d.analyze(
        &twin,
        &[
            "--ip",
            "203.0.113.66",
            "--mail-from",
            "news@nonepolicy.example",
        ],
    );
    assert_eq!(action, "tag", "{codes:?}");
    assert!(has(&codes, "dmarc.fail_policy_none"), "{codes:?}");
}

#[test]
fn analyze_lists_each_code_once() {
    let d = Dir::new("analyze-once");
    // Both signatures of the genuine message fail once its body is changed.
    let changed = String::from_utf8(example("sample-genuine.eml"))
        .unwrap()
        .replace("We lost the game.", "We won the game.");
    let f = d.file("changed.eml", changed.as_bytes());
    let (_, codes, v) = d.analyze(&f, &FORGER);
    let dkim: Vec<&serde_json::Value> = v["verdict"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["code"] == "dkim.fail")
        .collect();
    assert_eq!(dkim.len(), 1, "{codes:?}");
    assert_eq!(v["auth"]["dkim"].as_array().unwrap().len(), 2);
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), codes.len(), "{codes:?}");
}

// ---------------------------------------------------------------------------------------------
// unspoof serve

struct Server {
    child: Child,
    port: u16,
    dir: Dir,
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn start() -> Server {
    let dir = Dir::new("serve");
    let port = free_port();
    let config = format!(
        "{POLICY}\n[gateway]\ndata_dir = \"{data}\"\nlisten = \"127.0.0.1:{port}\"\nsubmission = \"\"\nmetrics = \"\"\nreverse_dns = false\n",
        data = dir.0.join("data").display()
    );
    let config = dir.file("unspoof.toml", config.as_bytes());
    let child = spawn_serve(
        &config,
        &dir.0.join("z.zone"),
        &dir.0.join("serve.log"),
        port,
    );
    Server { child, port, dir }
}

impl Server {
    /// One swaks session from 127.0.0.1 (outside our networks); returns its transcript.
    fn swaks(&self, mail_from: &str, msg: &[u8]) -> String {
        let file = self.dir.file(&format!("msg-{}.eml", free_port()), msg);
        let out: Output = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", self.port)])
            .args(["--from", mail_from, "--to", "suzie@ours.test"])
            .args(["--helo", "client.example"])
            .arg("--data")
            .arg(&file)
            .output()
            .expect("swaks (installed by scripts/deps-gateway.sh)");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn queue_id(transcript: &str) -> String {
        let id = transcript
            .split("(queue id ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .or_else(|| {
                transcript
                    .split("queued as ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
            });
        id.unwrap_or_else(|| panic!("no queue id in {transcript}"))
            .to_string()
    }

    /// `unspoof log show` of a queue id, once the store's writer has it.
    fn shown(&self, queue_id: &str) -> String {
        let started = Instant::now();
        loop {
            let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
                .args(["log", "show", "--data-dir"])
                .arg(self.dir.0.join("data"))
                .arg(queue_id)
                .env_remove("UNSPOOF_STORE")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no record of {queue_id}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn delivered(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.0.join("data/maildir/new"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// The reason codes of a `log show` text, in order.
fn shown_codes(shown: &str) -> Vec<String> {
    shown
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("reason"))
        .filter_map(|r| r.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn serve_rejects_malformed_first_line_forgeries_and_delivers_twins() {
    let server = start();

    // The twin: the genuine signed message is delivered clean.
    let t = server.swaks("joe@football.example.com", &example("sample-genuine.eml"));
    assert!(t.contains("<-  250 2.0.0"), "{t}");
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1);
    let genuine = std::fs::read_to_string(&delivered[0]).unwrap();
    assert!(genuine.contains("dmarc=pass"), "{genuine}");
    assert!(!genuine.contains("X-Unspoof-Verdict"), "{genuine}");

    let spoof = example("sample-spoof.eml");
    for (name, line) in BAD_FIRST_LINES {
        let t = server.swaks("joe@football.example.com", &behind(line, &spoof));
        if line.starts_with([' ', '\t']) {
            // It would fold into our own Received header: refused before the engine.
            assert!(t.contains("<** 550 5.6.0"), "{name}: {t}");
            continue;
        }
        assert!(t.contains("<** 550 5.7.1"), "{name}: {t}");
        let codes = shown_codes(&server.shown(&Server::queue_id(&t)));
        assert!(has(&codes, "dmarc.reject"), "{name}: {codes:?}");
        assert!(has(&codes, "header.malformed_section"), "{name}: {codes:?}");

        // (MAIL FROM in our domain is refused at MAIL FROM already: the header From is judged.)
        let t = server.swaks("bounce@attacker.example", &behind(line, &ceo_forgery()));
        assert!(t.contains("<** 550 5.7.1"), "{name}: {t}");
        let codes = shown_codes(&server.shown(&Server::queue_id(&t)));
        assert!(has(&codes, "spoof.own_domain"), "{name}: {codes:?}");
    }
    assert_eq!(server.delivered().len(), 1, "nothing refused is delivered");
}

#[test]
fn serve_holds_mail_without_from_tags_p_none_and_agrees_with_analyze() {
    let server = start();

    // No From: held in quarantine, not delivered.
    let t = server.swaks("news@nonepolicy.example", &newsletter(""));
    assert!(t.contains("<-  250 2.0.0"), "{t}");
    let shown = server.shown(&Server::queue_id(&t));
    assert!(shown.contains("verdict     quarantine"), "{shown}");
    assert!(has(&shown_codes(&shown), "header.from_missing"), "{shown}");
    assert!(server.delivered().is_empty());

    // Only a Sender in our domain: a From spoof.
    let t = server.swaks(
        "news@nonepolicy.example",
        &newsletter("Sender: Suzie Q. Public <suzie@ours.test>\r\n"),
    );
    assert!(t.contains("<** 550 5.7.1"), "{t}");

    // p=none, sent from elsewhere than its SPF host: delivered tagged.
    let news = newsletter("From: News <news@nonepolicy.example>\r\n");
    let t = server.swaks("news@nonepolicy.example", &news);
    assert!(t.contains("<-  250 2.0.0"), "{t}");
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1);
    let tagged = std::fs::read_to_string(&delivered[0]).unwrap();
    assert!(
        tagged.contains("X-Unspoof-Verdict: tag; reasons=dmarc.fail_policy_none"),
        "{tagged}"
    );
    assert!(
        tagged.contains("Subject: [SUSPICIOUS] Weekly news"),
        "{tagged}"
    );
    let shown = server.shown(&Server::queue_id(&t));
    let served = shown_codes(&shown);

    // The same findings from analyze: of the copy delivered (its arrival time is our
    // Received header's date), and of the message as sent with the envelope and arrival time
    // given (the store's first-contact answer too).
    let (action, codes, _) = server.dir.analyze(&delivered[0], &[]);
    assert_eq!(action, "tag");
    let without_store: Vec<String> = served
        .iter()
        .filter(|c| *c != "contact.first")
        .cloned()
        .collect();
    assert_eq!(codes, without_store, "analyze of the delivered copy");
    let arrival = shown
        .lines()
        .find_map(|l| l.strip_prefix("received"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(')').next())
        .unwrap_or_else(|| panic!("no arrival time in {shown}"))
        .to_string();
    let original = server.dir.file("news-original.eml", &news);
    let (_, codes, _) = server.dir.analyze(
        &original,
        &[
            "--ip",
            "127.0.0.1",
            "--helo",
            "client.example",
            "--mail-from",
            "news@nonepolicy.example",
            "--rcpt",
            "suzie@ours.test",
            "--received-at",
            &arrival,
            "--first-contact",
            "yes",
        ],
    );
    assert_eq!(codes, served, "analyze of the message as sent");
    assert!(has(&served, "header.date_skewed") == has(&codes, "header.date_skewed"));
}
