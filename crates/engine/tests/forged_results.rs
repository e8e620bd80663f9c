//! Results that claim to be ours but came from outside: every form of Authentication-Results
//! the RFC 8601 reader recognises (the one the front doors use to remove them) is reported as
//! `trust.forged_auth_results`, and an ARC-Authentication-Results with our authserv-id as
//! `trust.forged_arc_results`. Through `Engine::evaluate`, offline.

use unspoof_engine::{Dns, Engine, Envelope, Policy};

const HOST: &str = "mx.unspoof.test";

fn engine() -> Engine {
    let policy = Policy::parse(&format!("hostname = \"{HOST}\"\n"), "p.toml").unwrap();
    Engine::new(policy, Dns::offline())
}

fn envelope() -> Envelope {
    Envelope {
        ip: Some("192.0.2.7".parse().unwrap()),
        helo: Some("mail.sender.test".into()),
        mail_from: Some("a@sender.test".into()),
        rcpt: vec!["b@unspoof.test".into()],
        ..Envelope::default()
    }
}

async fn codes(extra: &str) -> Vec<String> {
    let raw = format!(
        "{extra}From: A <a@sender.test>\r\nTo: b@unspoof.test\r\nSubject: s\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <m@sender.test>\r\n\r\nbody\r\n"
    );
    let a = engine().evaluate(raw.as_bytes(), &envelope()).await;
    a.verdict.reasons.iter().map(|r| r.code.clone()).collect()
}

#[tokio::test]
async fn every_form_of_our_authserv_id_is_reported() {
    for field in [
        "Authentication-Results: mx.unspoof.test; dmarc=pass\r\n",
        "Authentication-Results: (x) mx.unspoof.test; dmarc=pass\r\n",
        "Authentication-Results: mx.unspoof.test(x); dmarc=pass\r\n",
        "Authentication-Results:\r\n mx.unspoof.test; dmarc=pass\r\n",
        "Authentication-Results: \"mx.unspoof.test\"; dmarc=pass\r\n",
        "Authentication-Results: MX.Unspoof.Test.; dmarc=pass\r\n",
        "Authentication-Results: (unclosed mx.unspoof.test; dmarc=pass\r\n",
    ] {
        let codes = codes(field).await;
        assert!(
            codes.iter().any(|c| c == "trust.forged_auth_results"),
            "{field:?}: {codes:?}"
        );
    }
    let codes = codes("Authentication-Results: other.test; dmarc=pass (mx.unspoof.test)\r\n").await;
    assert!(
        !codes.iter().any(|c| c.starts_with("trust.forged")),
        "{codes:?}"
    );
}

#[tokio::test]
async fn arc_results_claiming_our_id_are_a_finding() {
    for field in [
        "ARC-Authentication-Results: i=1; mx.unspoof.test; dmarc=pass\r\n",
        "ARC-Authentication-Results: i=1;\r\n (c) \"MX.unspoof.test.\"; dmarc=pass\r\n",
    ] {
        let codes = codes(field).await;
        assert!(
            codes.iter().any(|c| c == "trust.forged_arc_results"),
            "{field:?}: {codes:?}"
        );
    }
    let codes = codes("ARC-Authentication-Results: i=1; lists.other.test; dmarc=pass\r\n").await;
    assert!(
        !codes.iter().any(|c| c.starts_with("trust.forged")),
        "{codes:?}"
    );
}
