//! Backscatter is evidence (`bounce.rs`, `findings/backscatter.rs`): real Postfix bounces of
//! a message our gateway sent (delivered) and of a forgery in our name (quarantined, with the
//! forger's address), an auto-reply to a message we never sent, and the store's answer
//! deciding when the returned headers do not (`fixtures/reaction/SOURCES.md`).

use std::{path::Path, time::Duration};

use unspoof_engine::{Action, Analysis, Dns, Engine, Envelope, Policy, bounce, dns::Zone};

const POLICY: &str = r#"
hostname = "mx1.shopping.example.net"
protected_domains = ["shopping.example.net"]
internal_networks = ["10.0.0.0/8"]
"#;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reaction")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn engine() -> Engine {
    let dns = Dns::zones(Zone::new(), Duration::from_secs(2))
        .await
        .unwrap();
    let mut policy = Policy::parse(POLICY, "test policy").unwrap();
    // `[gateway] gateway_names` of the site's file, as the CLI's `Config` hands it over.
    policy.gateway_names = vec!["mx1.shopping.example.net".into()];
    Engine::new(policy, dns)
}

/// What the gateway sees: partner.example's MX hands the bounce to us for Suzie.
fn at_gateway(sent_by_us: Option<bool>) -> Envelope {
    Envelope {
        ip: Some("192.0.2.80".parse().unwrap()),
        helo: Some("mx.partner.example".into()),
        mail_from: Some(String::new()),
        rcpt: vec!["suzie@shopping.example.net".into()],
        sent_by_us,
        ..Envelope::default()
    }
}

fn backscatter(a: &Analysis) -> Option<&unspoof_engine::Reason> {
    a.verdict
        .reasons
        .iter()
        .find(|r| r.code == "backscatter.forged")
}

#[test]
fn a_postfix_bounce_is_read() {
    let n = bounce::read(&fixture("bounce-of-forgery.eml")).expect("a DSN");
    assert_eq!(n.kind, bounce::Kind::Dsn);
    assert_eq!(n.reporting_mta.as_deref(), Some("mx.partner.example"));
    assert_eq!(n.recipients.len(), 1);
    assert_eq!(
        n.recipients[0].final_recipient.as_deref(),
        Some("nobody@partner.example")
    );
    assert_eq!(n.recipients[0].status.as_deref(), Some("5.1.1"));
    let r = n.returned.as_ref().expect("the returned message");
    assert!(!r.headers_only);
    assert_eq!(r.message_id.as_deref(), Some("a81f0c2e9d.7730@bot.example"));
    assert_eq!(r.from_domain.as_deref(), Some("shopping.example.net"));
    assert!(r.dkim_domains.is_empty());
    let origin = n.returned_origin().expect("the forger's address");
    assert_eq!(origin.ip.to_string(), "203.0.113.66");
    assert_eq!(origin.helo.as_deref(), Some("bot.example"));
    assert_eq!(origin.by.as_deref(), Some("mx.partner.example"));
    assert_eq!(n.asked_ids(), ["a81f0c2e9d.7730@bot.example"]);

    let ours = bounce::read(&fixture("bounce-of-ours.eml")).unwrap();
    let r = ours.returned.unwrap();
    assert_eq!(r.dkim_domains, ["shopping.example.net"]);
    assert_eq!(
        r.message_id.as_deref(),
        Some("20261207073000.01JEQ5A1B2C3@shopping.example.net")
    );
}

#[tokio::test]
async fn the_bounce_of_a_forgery_is_quarantined_with_the_forgers_origin() {
    let engine = engine().await;
    for envelope in [
        Envelope::default(),
        at_gateway(None),
        at_gateway(Some(false)),
    ] {
        let a = engine
            .evaluate(&fixture("bounce-of-forgery.eml"), &envelope)
            .await;
        let r = backscatter(&a).unwrap_or_else(|| panic!("{:?}", a.verdict.codes()));
        assert_eq!(r.action, Action::Quarantine);
        assert_eq!(a.verdict.action, Action::Quarantine);
        assert!(r.message.contains("203.0.113.66"), "{}", r.message);
        assert!(r.message.contains("bot.example"), "{}", r.message);
        assert!(r.message.contains("shopping.example.net"), "{}", r.message);
        assert!(r.message.contains("no DKIM signature"), "{}", r.message);
        assert!(
            r.evidence
                .iter()
                .any(|e| e.contains("returned Received: from bot.example")),
            "{:?}",
            r.evidence
        );
        if envelope.sent_by_us == Some(false) {
            assert!(r.message.contains("not in our records"), "{}", r.message);
        }
    }
    // The store knows the Message-ID: ours after all (sent by a client that does not sign).
    let a = engine
        .evaluate(&fixture("bounce-of-forgery.eml"), &at_gateway(Some(true)))
        .await;
    assert!(backscatter(&a).is_none(), "{:?}", a.verdict.codes());
}

#[tokio::test]
async fn the_bounce_of_our_own_mail_is_delivered() {
    let engine = engine().await;
    for envelope in [
        Envelope::default(),
        at_gateway(None),
        at_gateway(Some(false)),
    ] {
        let a = engine
            .evaluate(&fixture("bounce-of-ours.eml"), &envelope)
            .await;
        assert!(backscatter(&a).is_none(), "{:?}", a.verdict.codes());
        assert_eq!(a.verdict.action, Action::Accept, "{:?}", a.verdict.codes());
    }
    // Without the signature, the hop by our gateway alone says it is ours.
    let text = String::from_utf8(fixture("bounce-of-ours.eml")).unwrap();
    let start = text.find("DKIM-Signature:").unwrap();
    let end = text[start..].find("Received: from [10.0.0.44]").unwrap();
    let unsigned = format!("{}{}", &text[..start], &text[start + end..]);
    let a = engine
        .evaluate(unsigned.as_bytes(), &at_gateway(None))
        .await;
    assert!(backscatter(&a).is_none(), "{:?}", a.verdict.codes());
    // Neither signature nor hop, and the store does not know it: not ours.
    let bare = unsigned.replace(
        "by mx1.shopping.example.net (unspoof)",
        "by relay.elsewhere.example",
    );
    let a = engine
        .evaluate(bare.as_bytes(), &at_gateway(Some(false)))
        .await;
    assert!(backscatter(&a).is_some(), "{:?}", a.verdict.codes());
    let a = engine
        .evaluate(bare.as_bytes(), &at_gateway(Some(true)))
        .await;
    assert!(backscatter(&a).is_none(), "{:?}", a.verdict.codes());
}

#[tokio::test]
async fn an_auto_reply_to_a_message_we_never_sent() {
    let engine = engine().await;
    let raw = fixture("vacation-forged.eml");
    let n = bounce::read(&raw).unwrap();
    assert_eq!(n.kind, bounce::Kind::AutoReply);
    assert_eq!(n.asked_ids(), ["forged.7731@shopping.example.net"]);
    let envelope = |sent| Envelope {
        ip: Some("198.51.100.7".parse().unwrap()),
        mail_from: Some(String::new()),
        rcpt: vec!["suzie@shopping.example.net".into()],
        sent_by_us: sent,
        ..Envelope::default()
    };
    // Nothing came back but the Message-ID: only the store can tell.
    let a = engine.evaluate(&raw, &envelope(None)).await;
    assert!(backscatter(&a).is_none(), "{:?}", a.verdict.codes());
    let a = engine.evaluate(&raw, &envelope(Some(true))).await;
    assert!(backscatter(&a).is_none(), "{:?}", a.verdict.codes());
    let a = engine.evaluate(&raw, &envelope(Some(false))).await;
    let r = backscatter(&a).expect("the store says we never sent it");
    assert!(r.message.starts_with("An auto-reply"), "{}", r.message);
    assert!(
        r.message.contains("forged.7731@shopping.example.net"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn a_notification_for_someone_else_is_not_ours_to_judge() {
    let engine = engine().await;
    let mut envelope = at_gateway(Some(false));
    envelope.rcpt = vec!["joe@partner.example".into()];
    let a = engine
        .evaluate(&fixture("bounce-of-forgery.eml"), &envelope)
        .await;
    assert!(backscatter(&a).is_none(), "{:?}", a.verdict.codes());
}

/// The store's question, asked the way every front door asks it.
#[tokio::test]
async fn sent_by_us_asks_the_history_for_the_returned_message_id() {
    use std::{future::Future, pin::Pin};
    struct Sent(&'static str);
    impl bounce::OutboundHistory for Sent {
        fn sent<'a>(
            &'a self,
            id: &'a str,
        ) -> Pin<Box<dyn Future<Output = Option<bool>> + Send + 'a>> {
            let known = id == self.0;
            Box::pin(async move { Some(known) })
        }
    }
    let history = Sent("20261207073000.01JEQ5A1B2C3@shopping.example.net");
    let budget = Duration::from_secs(1);
    let ours = bounce::sent_by_us(&history, &fixture("bounce-of-ours.eml"), budget).await;
    assert_eq!(ours, Some(true));
    let forged = bounce::sent_by_us(&history, &fixture("bounce-of-forgery.eml"), budget).await;
    assert_eq!(forged, Some(false));
    let plain = bounce::sent_by_us(&history, &fixture("hub-passed.eml"), budget).await;
    assert_eq!(plain, None);
}
