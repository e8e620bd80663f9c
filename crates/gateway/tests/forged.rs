//! Forged results never reach a user (issue 13, item 1): Authentication-Results claiming our
//! authserv-id are removed in every form RFC 8601 allows, and X-Unspoof-Verdict on every
//! message, whatever the verdict. The delivered copies are read back with Python's `email`
//! module, as a mail program would read them.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use unspoof_engine::{Dns, Engine, Policy};
use unspoof_gateway::{EngineDecider, Gateway};

/// Forged fields, each marked with its own `fN.test`, in every form our name can take.
const FORGED: &[&str] = &[
    "Authentication-Results: (x) mx.test; dmarc=pass header.from=f1.test",
    "Authentication-Results:\r\n mx.test; dmarc=pass header.from=f2.test",
    "Authentication-Results: mx.test(x); dmarc=pass header.from=f3.test",
    "Authentication-Results: \"mx.test\"; dmarc=pass header.from=f4.test",
    "Authentication-Results: mx.test.; dmarc=pass header.from=f5.test",
    "AUTHENTICATION-RESULTS: MX.TEST; dmarc=pass header.from=f6.test",
    "Authentication-Results: mx.test 1; dmarc=pass header.from=f7.test",
    "Authentication-Results: (a\r\n (b)) \"MX.Test.\" (c) ; dmarc=pass header.from=f8.test",
    "Authentication-Results : mx.test; dmarc=pass header.from=f9.test",
    "Authentication-Results: (unclosed mx.test; dmarc=pass header.from=f10.test",
    "X-Unspoof-Verdict: accept; reasons=f11.test",
    "x-unspoof-verdict:\r\n\taccept; reasons=f12.test",
];

/// Fields of others that mention us but are not ours: they stay.
const KEPT: &[&str] = &[
    "Authentication-Results: other.test; dmarc=pass header.from=keep1.test (mx.test)",
    "Authentication-Results: mx.test.evil.test; spf=pass smtp.mailfrom=keep2.test",
];

fn message(subject: &str) -> String {
    let mut m = String::new();
    for f in FORGED.iter().chain(KEPT) {
        m.push_str(f);
        m.push_str("\r\n");
    }
    m.push_str(&format!(
        "From: a@remote.test\r\nTo: x@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n"
    ));
    m
}

/// Sends `msg` from a raw client; returns the final reply.
async fn send(addr: std::net::SocketAddr, msg: &str) -> String {
    let mut raw = Raw::hello(addr).await;
    assert!(
        raw.cmd("MAIL FROM:<a@remote.test>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        raw.cmd("RCPT TO:<x@example.org>\r\n")
            .await
            .starts_with("250")
    );
    assert!(raw.cmd("DATA\r\n").await.starts_with("354"));
    raw.cmd(&format!("{msg}.\r\n")).await
}

/// The header fields of a delivered copy as Python's `email` module reads them:
/// (lower-case name, value) for every field, in order.
async fn python_fields(delivered: &[u8], dir: &Path) -> Vec<(String, String)> {
    let file = dir.join(format!("delivered-{}.eml", delivered.len()));
    std::fs::write(&file, delivered).unwrap();
    let script = r#"
import email, email.policy, json, sys
with open(sys.argv[1], "rb") as f:
    msg = email.message_from_binary_file(f, policy=email.policy.default)
print(json.dumps([[k.lower(), str(v)] for k, v in msg.items()]))
"#;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
        .await
        .expect("python3");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Nothing forged in a delivered copy; `ours` of our Authentication-Results, and the others'.
async fn assert_clean(delivered: &[u8], dir: &Path, verdicts: usize) {
    let text = String::from_utf8_lossy(delivered);
    let head = text.split("\r\n\r\n").next().unwrap();
    for n in 1..=12 {
        assert!(
            !head.contains(&format!("=f{n}.test")),
            "f{n} survived:\n{head}"
        );
    }
    let fields = python_fields(delivered, dir).await;
    let ar: Vec<&str> = fields
        .iter()
        .filter(|(k, _)| k.trim() == "authentication-results")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ar.len(), 3, "{fields:#?}");
    assert!(ar[0].starts_with("mx.test;"), "ours first: {ar:?}");
    assert!(ar.iter().any(|v| v.contains("keep1.test")), "{ar:?}");
    assert!(ar.iter().any(|v| v.contains("keep2.test")), "{ar:?}");
    let v: Vec<&(String, String)> = fields
        .iter()
        .filter(|(k, _)| k.trim() == "x-unspoof-verdict")
        .collect();
    assert_eq!(v.len(), verdicts, "{fields:#?}");
}

/// A gateway with the real engine (offline), whose forged results decide `action`.
async fn engine_gateway(
    name: &str,
    action: &str,
    downstream: std::net::SocketAddr,
) -> (unspoof_gateway::ServeHandle, std::path::PathBuf) {
    let mut c = config(name);
    c.downstream = Some(downstream.to_string());
    let dir = c.data_dir.clone();
    let text = format!("hostname = \"mx.test\"\n[actions]\nforged_trust = \"{action}\"\n");
    let policy = Policy::parse(&text, "p.toml").unwrap();
    let decider = Arc::new(EngineDecider::new(
        Engine::new(policy, Dns::offline()),
        None,
    ));
    (Gateway::new(c, decider).start().await.unwrap(), dir)
}

/// The removals are the engine's edits (`unspoof_engine::decision`), which the gateway
/// applies: the same reader and the same list as the milter's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_results_in_every_form_are_removed_on_accept_tag_and_quarantine() {
    let sink = Sink::start(SinkMode::Normal).await;
    // Accept: no verdict field of ours, so none at all may be left.
    let (gw, dir) = engine_gateway("forged-a", "accept", sink.addr).await;
    let r = send(gw.inbound, &message("plain")).await;
    assert!(r.starts_with("250"), "{r}");
    // Tag: ours only.
    let (gw, _) = engine_gateway("forged-t", "tag", sink.addr).await;
    let r = send(gw.inbound, &message("odd")).await;
    assert!(r.starts_with("250"), "{r}");
    let got = sink.received();
    assert_eq!(got.len(), 2);
    assert_clean(&got[0].data, &dir, 0).await;
    assert_clean(&got[1].data, &dir, 1).await;

    // Quarantine: the stored copy is as clean, with our verdict field.
    let (gw, dir) = engine_gateway("forged-q", "quarantine", sink.addr).await;
    let r = send(gw.inbound, &message("odd")).await;
    assert!(r.starts_with("250"), "{r}");
    let q = maildir_messages(&dir.join("maildir/.Quarantine"));
    assert_eq!(q.len(), 1);
    assert_clean(q[0].as_bytes(), &dir, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_engine_reports_the_forgery_and_the_copy_is_clean() {
    let c = config("forged-engine");
    let dir = c.data_dir.clone();
    let policy = Policy::parse("hostname = \"mx.test\"\n", "p.toml").unwrap();
    let decider = Arc::new(EngineDecider::new(
        Engine::new(policy, Dns::offline()),
        None,
    ));
    let log = Arc::new(MemLog::default());
    let handle = Gateway::new(c, decider)
        .session_log(log.clone())
        .start()
        .await
        .unwrap();
    let msg = message("engine").replacen(
        "From: a@remote.test",
        "ARC-Authentication-Results: i=1; (c) mx.test; dmarc=pass\r\nFrom: a@remote.test",
        1,
    );
    let r = send(handle.inbound, &msg).await;
    // The record is written right after the reply.
    let mut rec = None;
    for _ in 0..200 {
        rec = log.all().pop();
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let rec = rec.expect("a record");
    assert!(
        rec.reasons.iter().any(|c| c == "trust.forged_auth_results"),
        "{:?}",
        rec.reasons
    );
    assert!(
        rec.reasons.iter().any(|c| c == "trust.forged_arc_results"),
        "{:?}",
        rec.reasons
    );
    if r.starts_with("250") && rec.outcome != "quarantine" {
        let m = &maildir_messages(&dir.join("maildir"))[0];
        let head = m.split("\r\n\r\n").next().unwrap();
        for n in 1..=12 {
            assert!(!head.contains(&format!("=f{n}.test")), "f{n}:\n{head}");
        }
        // Our own verdict field only when the verdict is not accept.
        let verdicts = usize::from(rec.outcome != "accept");
        let fields = python_fields(m.as_bytes(), &dir).await;
        assert_eq!(
            fields
                .iter()
                .filter(|(k, _)| k == "x-unspoof-verdict")
                .count(),
            verdicts,
            "{fields:#?}"
        );
    }
    assert!(handle.shutdown().await);
}
