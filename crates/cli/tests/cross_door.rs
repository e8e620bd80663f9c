//! One decision for every door (issue 14): the same messages through `unspoof analyze`,
//! `unspoof serve` (a real SMTP client, swaks) and `unspoof milter` behind a real Postfix get
//! the same disposition, the same reason codes and the same header edits, read back from the
//! delivered copies. Among them a DNS outage (a zone whose answers are SERVFAIL: CNAME loops)
//! and a message with forged Authentication-Results and a stale verdict field.
//!
//! The engine's edits (`analyze --json`, `decision.edits`) applied to the message as sent
//! (`unspoof_engine::decision::apply`) must give the header section each door delivered, except
//! the trace fields each MTA writes of its own (Received, Return-Path, Delivered-To).
//!
//! Needs root (Postfix's master starts as root), `postfix` and `swaks` (scripts/deps-milter.sh
//! and scripts/deps-gateway.sh install them). Without them it prints one skip line and passes,
//! unless `CI=true`, where it fails.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use unspoof_engine::decision::{HeaderEdit, apply};
use unspoof_testkit::{Postfix, free_port, postfix_missing, say, swaks, wait_listening};

const HOST: &str = "mx.unspoof.test";

/// Each case: a name, the MAIL FROM, the message, the disposition every door must reach.
const CASES: &[(&str, &str, &str)] = &[
    ("good", "alice@good.test", "accept"),
    ("forged", "alice@fgood.test", "tag"),
    ("outage", "ann@outage.test", "defer"),
    ("strict", "x@strict.test", "reject"),
    ("held", "x@held.test", "quarantine"),
    // A panic in the engine (debug builds panic on `unspoof_engine::PANIC_MARKER`): deferred
    // by every door, never accepted.
    ("panic", "p@panic.test", "defer"),
];

const ZONE: &str = "\
$ORIGIN good.test.
@        IN TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc   IN TXT \"v=DMARC1; p=reject\"
$ORIGIN fgood.test.
@        IN TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc   IN TXT \"v=DMARC1; p=reject\"
$ORIGIN strict.test.
@        IN TXT \"v=spf1 -all\"
_dmarc   IN TXT \"v=DMARC1; p=reject\"
$ORIGIN held.test.
@        IN TXT \"v=spf1 -all\"
_dmarc   IN TXT \"v=DMARC1; p=quarantine\"
; A DNS outage: every answer about outage.test is SERVFAIL (CNAME loops).
$ORIGIN outage.test.
@        IN CNAME loop.outage.test.
loop     IN CNAME outage.test.
_dmarc   IN CNAME dloop.outage.test.
dloop    IN CNAME _dmarc.outage.test.
";

fn message(name: &str, from: &str) -> String {
    let forged = if name == "panic" {
        "X-Unspoof-Test-Panic: engine\r\n"
    } else if name == "forged" {
        // Claims our authserv-id (in a form a first-word reader misses) and a verdict of ours.
        "Authentication-Results: (checked) mx.unspoof.test; dmarc=pass header.from=bank.example\r\n\
         X-Unspoof-Verdict: accept\r\n\
         Authentication-Results: other.example; spf=pass smtp.mailfrom=keep.example\r\n"
    } else {
        ""
    };
    format!(
        "{forged}From: Sender <{from}>\r\nTo: bob@example.net\r\nSubject: cross door {name}\r\n\
         Message-ID: <{name}.cross@door.test>\r\nDate: Mon, 7 Dec 2026 09:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         Hello Bob,\r\nthe {name} message.\r\n"
    )
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The final reply to the message's DATA in a swaks transcript: its code.
fn data_reply(transcript: &str) -> u16 {
    let mut after_data = false;
    for line in transcript.lines() {
        let l = line.trim_start();
        if l == "-> ." {
            after_data = true;
        } else if after_data && let Some(r) = l.strip_prefix("<**").or_else(|| l.strip_prefix("<-"))
        {
            return r
                .trim_start()
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        }
    }
    panic!("no reply to DATA in:\n{transcript}");
}

/// The record of `message_id` in the store of `config`, waiting for it (records are written
/// in the background).
fn record(config: &Path, message_id: &str) -> Value {
    let started = Instant::now();
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["log", "search", "--json", "--message-id", message_id])
            .arg("--config")
            .arg(config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().find(|l| !l.trim().is_empty()) {
            return serde_json::from_str(line).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no record of {message_id} in {}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reason codes, sorted (the doors may list them in another order).
fn codes(v: &Value) -> Vec<String> {
    let mut c: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r {
            Value::String(s) => s.clone(),
            other => other["code"].as_str().unwrap().to_string(),
        })
        .filter(|c| c != "dmarc.report_captured")
        .collect();
    c.sort();
    c
}

/// Trace fields each MTA writes of its own; everything else in a delivered header section is
/// the message as sent with the engine's edits.
const OWN_TRACE: &[&str] = &["received", "return-path", "delivered-to", "x-original-to"];

/// The header section as (lower-case name, value with whitespace runs as one space).
fn fields(message: &[u8]) -> Vec<(String, String)> {
    let crlf = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let head = crlf.split("\n\n").next().unwrap_or("").to_string();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out.retain(|(n, _)| !OWN_TRACE.contains(&n.as_str()));
    for f in &mut out {
        f.1 = f.1.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    out
}

fn body(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    text.split_once("\n\n")
        .map(|(_, b)| b.trim_end().to_string())
        .unwrap_or_default()
}

/// The delivered copy (a file in `maildir`) holding `marker`, waiting up to 20 s.
fn delivered(maildir: &Path, marker: &str, log: &dyn Fn() -> String) -> Vec<u8> {
    let started = Instant::now();
    loop {
        for e in std::fs::read_dir(maildir).into_iter().flatten().flatten() {
            let m = std::fs::read(e.path()).unwrap_or_default();
            if String::from_utf8_lossy(&m).contains(marker) {
                return m;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no copy with {marker:?} in {}\n{}",
            maildir.display(),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_door_reaches_the_same_decision() {
    if let Some(why) = postfix_missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cross-door test cannot run under CI: {why}"
        );
        say(&format!("cross-door test: skipped: {why}"));
        return;
    }
    let bin = env!("CARGO_BIN_EXE_unspoof");
    let dir = std::env::temp_dir().join(format!("unspoof-cross-door-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let zone = dir.join("z.zone");
    std::fs::write(&zone, ZONE).unwrap();
    let policy = format!(
        "hostname = \"{HOST}\"\nprotected_domains = [\"example.net\"]\n# dns_temperror = \"defer\" is the default: every door defers a DNS outage.\n"
    );

    // unspoof serve, delivering into its Maildir.
    let serve_port = free_port();
    let serve_conf = dir.join("serve.toml");
    std::fs::write(
        &serve_conf,
        format!(
            "{policy}\n[gateway]\ndata_dir = \"{data}\"\nlisten = \"127.0.0.1:{serve_port}\"\n\
             submission = \"\"\nmetrics = \"\"\ndomains = [\"example.net\"]\nreverse_dns = false\n",
            data = dir.join("serve-data").display()
        ),
    )
    .unwrap();
    let serve_log = dir.join("serve.log");
    let _serve = Killed(
        Command::new(bin)
            .args(["serve", "--config"])
            .arg(&serve_conf)
            .arg("--dns-zone")
            .arg(&zone)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&serve_log).unwrap())
            .spawn()
            .unwrap(),
    );

    // unspoof milter, with a store of its own for its records.
    let milter_port = free_port();
    let milter_conf = dir.join("milter.toml");
    std::fs::write(
        &milter_conf,
        format!(
            "{policy}\n[milter]\nlisten = [\"inet:127.0.0.1:{milter_port}\"]\n\n[store]\ndata_dir = \"{data}\"\n",
            data = dir.join("milter-data").display()
        ),
    )
    .unwrap();
    let milter_log = dir.join("milter.log");
    let _milter = Killed(
        Command::new(bin)
            .args(["milter", "--config"])
            .arg(&milter_conf)
            .arg("--dns-zone")
            .arg(&zone)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&milter_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_listening(serve_port, "unspoof serve", &serve_log);
    wait_listening(milter_port, "unspoof milter", &milter_log);
    let pf = Postfix::start(milter_port);
    let milter_logs = || {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&milter_log).unwrap_or_default(),
            pf.log()
        )
    };
    let serve_logs = || std::fs::read_to_string(&serve_log).unwrap_or_default();

    for &(name, from, want) in CASES {
        if name == "panic" && !cfg!(debug_assertions) {
            continue; // release builds have no panic marker
        }
        let raw = message(name, from);
        let file = dir.join(format!("{name}.eml"));
        std::fs::write(&file, &raw).unwrap();
        let message_id = format!("{name}.cross@door.test");

        // analyze: the decision as data. Both doors' stores have never seen the sender (each
        // case has a domain of its own), and say so; analyze is told the same.
        let out = Command::new(bin)
            .args(["analyze", "--json", "--policy"])
            .arg(&serve_conf)
            .arg("--dns-zone")
            .arg(&zone)
            .args(["--ip", "127.0.0.1", "--helo", "client.example"])
            .args(["--mail-from", from, "--rcpt", "bob@example.net"])
            .args(["--first-contact", "yes", "--known-sender", "no"])
            .arg(&file)
            .output()
            .unwrap();
        let a: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: analyze JSON: {e}: {out:?}"));
        let decision = &a["decision"];
        assert_eq!(decision["disposition"], want, "{name}: analyze: {a:#}");
        let want_codes = codes(&a["verdict"]["reasons"]);
        if name == "panic" {
            assert_eq!(want_codes, ["engine.panic"], "{a:#}");
        }
        let edits: Vec<HeaderEdit> = serde_json::from_value(decision["edits"].clone()).unwrap();
        let expected = fields(&apply(raw.as_bytes(), &edits, None));

        // serve: the reply, the record, the delivered or quarantined copy.
        let (_, t) = swaks(serve_port, from, &file);
        let s = record(&serve_conf, &message_id);
        assert_eq!(s["action"], want, "{name}: serve record: {s:#}");
        assert_eq!(codes(&s["reasons"]), want_codes, "{name}: serve codes");
        // milter behind Postfix: the reply, the record, the delivered copy.
        let (_, tm) = swaks(pf.smtp.port(), from, &file);
        let m = record(&milter_conf, &message_id);
        assert_eq!(m["action"], want, "{name}: milter record: {m:#}");
        assert_eq!(codes(&m["reasons"]), want_codes, "{name}: milter codes");

        match want {
            "reject" | "defer" => {
                let code = decision["reply"]["code"].as_u64().unwrap() as u16;
                assert_eq!(data_reply(&t), code, "{name}: serve:\n{t}");
                assert_eq!(data_reply(&tm), code, "{name}: milter:\n{tm}");
                let text = decision["reply"]["text"].as_str().unwrap();
                let enhanced = decision["reply"]["enhanced"].as_str().unwrap();
                for (door, tr) in [("serve", &t), ("milter", &tm)] {
                    assert!(
                        tr.contains(&format!("{code} {enhanced} {text}")),
                        "{name}: {door} reply is not the engine's:\n{tr}"
                    );
                }
                assert!(edits.is_empty(), "{name}: {edits:?}");
            }
            _ => {
                assert_eq!(data_reply(&t), 250, "{name}: serve:\n{t}");
                assert_eq!(data_reply(&tm), 250, "{name}: milter:\n{tm}");
                if want == "quarantine" {
                    // Both doors hold it (the store's quarantine, Postfix's hold queue): the
                    // disposition and the codes above are what can be compared.
                    continue;
                }
                let sc = delivered(
                    &dir.join("serve-data/maildir/new"),
                    &message_id,
                    &serve_logs,
                );
                assert_eq!(fields(&sc), expected, "{name}: serve's copy");
                let mc = delivered(&pf.maildir(), &message_id, &milter_logs);
                assert_eq!(fields(&mc), expected, "{name}: the milter's copy");
                assert_eq!(body(&sc), body(&mc), "{name}: bodies");
                let banner = decision["body_replaced"].as_bool().unwrap();
                assert_eq!(
                    body(&sc) != body(raw.as_bytes()),
                    banner,
                    "{name}: a new body exactly when the engine added a banner"
                );
            }
        }
    }

    // The forged message: both forged fields gone, the other ADMD's results kept, ours on top.
    let forged_edits = {
        let out = Command::new(bin)
            .args(["analyze", "--json", "--policy"])
            .arg(&serve_conf)
            .arg("--dns-zone")
            .arg(&zone)
            .args(["--ip", "127.0.0.1", "--helo", "client.example"])
            .args(["--mail-from", "alice@fgood.test"])
            .arg(dir.join("forged.eml"))
            .output()
            .unwrap();
        let a: Value = serde_json::from_slice(&out.stdout).unwrap();
        serde_json::from_value::<Vec<HeaderEdit>>(a["decision"]["edits"].clone()).unwrap()
    };
    let removed: Vec<&str> = forged_edits
        .iter()
        .filter_map(|e| match e {
            HeaderEdit::Remove { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        removed,
        ["Authentication-Results", "X-Unspoof-Verdict"],
        "{forged_edits:?}"
    );
    let mc = delivered(&pf.maildir(), "forged.cross@door.test", &milter_logs);
    let f = fields(&mc);
    assert!(!f.iter().any(|(_, v)| v.contains("bank.example")), "{f:#?}");
    assert!(f.iter().any(|(_, v)| v.contains("keep.example")), "{f:#?}");
    assert_eq!(f[0].0, "authentication-results");
    assert!(f[0].1.starts_with(&format!("{HOST};")), "{f:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
