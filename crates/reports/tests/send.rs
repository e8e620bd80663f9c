//! Sending our reports (RFC 9990) through a relay that misbehaves the way real ones do: one
//! address bounces for good (5xx: given up and suppressed, skipped the next day), one is busy
//! at first (4xx: retried on schedule, then sent), one is always busy (given up after the last
//! retry), and one asks for small reports (`!1k`: the report is split into complete reports
//! that each fit and together count every message).

use std::net::IpAddr;
use std::sync::Mutex;

use unspoof_engine::Dns;
use unspoof_engine::dns::Zone;
use unspoof_reports::DmarcConfig;
use unspoof_reports::send::{NoSigner, send_day, split_messages};
use unspoof_store::{JsonText, MessageRecord, Store, StoreConfig};
use unspoof_testkit::SmtpSink;

const ZONE: &str = r#"
$ORIGIN big.test.
_dmarc IN TXT "v=DMARC1; p=reject; rua=mailto:ok@big.test,mailto:gone@big.test,mailto:busy@big.test,mailto:small@big.test!1k"
$ORIGIN other.test.
_dmarc IN TXT "v=DMARC1; p=none; rua=mailto:down@other.test"
"#;

/// The relay: `gone@` is refused for good, `busy@` once, `down@` always; the rest accepted.
fn relay() -> SmtpSink {
    let busy_once = Mutex::new(true);
    SmtpSink::answering(move |rcpt| {
        let refusal = match rcpt {
            "gone@big.test" => "550 5.1.1 no such mailbox",
            "down@other.test" => "451 4.3.0 try again later",
            "busy@big.test" if std::mem::take(&mut *busy_once.lock().unwrap()) => {
                "451 4.7.1 busy, come back later"
            }
            _ => return None,
        };
        Some(refusal.to_string())
    })
}

/// A stored verdict as the gateway writes it: a message from `ip` as `domain` that failed
/// DMARC and was rejected.
fn verdict(ip: IpAddr, domain: &str, at: i64) -> MessageRecord {
    let analysis = serde_json::json!({
        "schema": "unspoof.analysis/1",
        "verdict": {"action": "reject", "reasons": []},
        "envelope": {"ip": ip, "mail_from": format!("x@{domain}"), "rcpt": ["ann@site.test"]},
        "auth": {
            "checked": true,
            "spf": {"identity": "mailfrom", "domain": domain, "sender": format!("x@{domain}"), "result": "fail"},
            "spf_helo": {"identity": "helo", "domain": "client.test", "sender": "client.test", "result": "none"},
            "dkim": [],
            "dmarc": {"result": "fail", "domain": domain, "policy": "reject", "aligned": [], "testing": false},
            "arc": {"result": "none", "sealers": []}
        }
    });
    MessageRecord {
        id: unspoof_store::new_id(),
        received_at: at,
        node: "mx1".into(),
        listener: "inbound".into(),
        client_ip: Some(ip),
        mail_from: Some(format!("x@{domain}")),
        recipients: vec!["ann@site.test".into()],
        from: Some(format!("ceo@{domain}")),
        action: "reject".into(),
        analysis: Some(JsonText(analysis.to_string())),
        ..Default::default()
    }
}

#[tokio::test]
async fn retries_suppression_and_splitting() {
    let dir = std::env::temp_dir().join(format!("unspoof-send-{}", unspoof_store::new_id()));
    let store = Store::open(StoreConfig::new("", &dir)).await.unwrap();
    let now = 1_796_601_600 + 3_600; // 2026-12-07 01:00 UTC
    let day = unspoof_reports::day_of(now) - 1;
    // 300 forgers, each its own row, and one message of other.test.
    for n in 0..300u16 {
        let ip: IpAddr = format!("2001:db8::{:x}", n + 1).parse().unwrap();
        store.log_message(verdict(ip, "big.test", day * 86_400 + i64::from(n)));
    }
    store.log_message(verdict(
        "192.0.2.9".parse().unwrap(),
        "other.test",
        day * 86_400 + 5,
    ));
    store.flush().await;

    let mut zone = Zone::new();
    zone.load_text(ZONE, None).unwrap();
    let dns = Dns::zones(zone, std::time::Duration::from_secs(2))
        .await
        .unwrap();
    let sink = relay();
    let config = DmarcConfig {
        org_name: "reporter.test".into(),
        from: "dmarc-noreply@reporter.test".into(),
        relay: Some(format!("127.0.0.1:{}", sink.port)),
        retry_minutes: vec![5],
        ..Default::default()
    };

    let s = send_day(&store, &dns, &config, &NoSigner, day, now)
        .await
        .unwrap();
    assert_eq!(s.built.len(), 2, "{s:?}");
    let big = s.built.iter().find(|b| b.domain == "big.test").unwrap();
    assert_eq!((big.records, big.messages), (300, 300));
    let small_status = &big
        .destinations
        .iter()
        .find(|(a, _)| a == "small@big.test")
        .unwrap()
        .1;
    let parts: usize = small_status
        .trim_start_matches("queued (")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        parts > 1,
        "the !1k destination gets a split report: {small_status}"
    );
    let outcome = |addr: &str| {
        s.attempts
            .iter()
            .find(|(a, _, _)| a == addr)
            .map(|(_, _, o)| o.clone())
            .unwrap_or_default()
    };
    assert!(outcome("ok@big.test").starts_with("sent"), "{s:?}");
    assert!(
        outcome("gone@big.test").starts_with("failed for good"),
        "{s:?}"
    );
    assert!(
        outcome("busy@big.test").starts_with("will retry in 5 min"),
        "{s:?}"
    );
    assert!(
        outcome("down@other.test").starts_with("will retry"),
        "{s:?}"
    );
    assert!(
        store
            .dmarc_suppressed("gone@big.test", now)
            .await
            .unwrap()
            .is_some()
    );

    // Every split part is a whole report of at most 1 KiB gzip'd; together they count all.
    let mails = sink.mails();
    let small: Vec<&Vec<u8>> = mails
        .iter()
        .filter(|(a, _)| a == "small@big.test")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(small.len(), parts);
    let mut ids = Vec::new();
    let mut total = 0u32;
    for m in small {
        let r = mail_auth::report::Report::parse_rfc5322(m, 1 << 20).unwrap();
        assert_eq!(r.domain(), "big.test");
        ids.push(r.report_id().to_string());
        total += r.records().iter().map(|x| x.row.count).sum::<u32>();
        let text = String::from_utf8_lossy(m);
        assert!(text.contains(&format!(
            "reporter.test!big.test!{}!{}!",
            day * 86_400,
            day * 86_400 + 86_399
        )));
    }
    assert_eq!(total, 300);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), parts, "each part has its own report id");
    let whole = mails.iter().find(|(a, _)| a == "ok@big.test").unwrap();
    assert_eq!(split_messages(&whole.1).len(), 1);

    // Six minutes later: the busy address takes it; the always-busy one is given up.
    let later = now + 6 * 60;
    let s2 = send_day(&store, &dns, &config, &NoSigner, day, later)
        .await
        .unwrap();
    assert!(s2.built.is_empty(), "built once per domain and day: {s2:?}");
    let o2 = |addr: &str| {
        s2.attempts
            .iter()
            .find(|(a, _, _)| a == addr)
            .map(|(_, _, o)| o.clone())
            .unwrap_or_default()
    };
    assert!(o2("busy@big.test").starts_with("sent"), "{s2:?}");
    assert!(
        o2("down@other.test").starts_with("given up after 2 attempts"),
        "{s2:?}"
    );
    assert!(
        o2("gone@big.test").is_empty(),
        "nothing more to gone@: {s2:?}"
    );
    assert_eq!(
        sink.mails()
            .iter()
            .filter(|(a, _)| a == "busy@big.test")
            .count(),
        1
    );

    // The next day, the bounced address is skipped while it is suppressed.
    store.log_message(verdict(
        "192.0.2.1".parse().unwrap(),
        "big.test",
        (day + 1) * 86_400 + 10,
    ));
    store.flush().await;
    let s3 = send_day(&store, &dns, &config, &NoSigner, day + 1, now + 86_400)
        .await
        .unwrap();
    let b3 = &s3.built[0];
    let gone = &b3
        .destinations
        .iter()
        .find(|(a, _)| a == "gone@big.test")
        .unwrap()
        .1;
    assert!(gone.starts_with("suppressed until"), "{s3:?}");
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
