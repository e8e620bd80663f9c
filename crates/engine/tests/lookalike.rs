//! Lookalike domains through the whole engine, on a real message (SpamAssassin ham from
//! python.org, see `fixtures/impersonation/SOURCES.md`) whose From or Reply-To was edited to a
//! domain made to be read as python.org; and the same message from the real domain, which has
//! no `lookalike.*` reason.
//!
//! The site protects python.org (SPF allows 192.0.2.25 only, DMARC p=reject). No protected
//! people here, so the reasons are the domain's alone.

use std::{net::IpAddr, path::Path, time::Duration};

use unspoof_engine::{Action, Analysis, Dns, Engine, Envelope, Policy, Reason, dns::Zone};

const ZONE: &str = r#"
$ORIGIN python.org.
@        IN TXT "v=spf1 ip4:192.0.2.25 -all"
_dmarc   IN TXT "v=DMARC1; p=reject"
"#;

const POLICY: &str = r#"
hostname = "mx.python.org"
protected_domains = ["python.org"]
"#;

const OURS: &str = "192.0.2.25";
const OUTSIDE: &str = "203.0.113.9";

async fn analyze(fixture: &str, ip: &str, mail_from: &str) -> Analysis {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/impersonation")
        .join(fixture);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut zone = Zone::new();
    zone.load_text(ZONE, None).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    let engine = Engine::new(Policy::parse(POLICY, "test policy").unwrap(), dns);
    let envelope = Envelope {
        ip: Some(ip.parse::<IpAddr>().unwrap()),
        helo: Some("mail.example.net".into()),
        mail_from: Some(mail_from.into()),
        ..Envelope::default()
    };
    engine.evaluate(&raw, &envelope).await
}

fn reason<'a>(a: &'a Analysis, code: &str) -> &'a Reason {
    a.verdict
        .reasons
        .iter()
        .find(|r| r.code == code)
        .unwrap_or_else(|| panic!("no {code} in {:?}", a.verdict.codes()))
}

fn lookalikes(a: &Analysis) -> Vec<&str> {
    a.verdict
        .codes()
        .into_iter()
        .filter(|c| c.starts_with("lookalike."))
        .collect()
}

/// The legitimate message: From python.org, through python.org's server.
async fn assert_legitimate_passes() {
    let a = analyze("guido-original.eml", OURS, "guido@python.org").await;
    assert!(lookalikes(&a).is_empty(), "{:?}", a.verdict.reasons);
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", a.verdict.reasons);
}

#[tokio::test]
async fn confusable_domain() {
    // pyth0n.org: a zero for the o; UTS #39 skeletons agree.
    let a = analyze("guido-confusable.eml", OUTSIDE, "guido@pyth0n.org").await;
    let r = reason(&a, "lookalike.confusable");
    assert_eq!(r.action, Action::Quarantine);
    assert!(
        r.evidence.contains(&"From: pyth0n.org".to_string()),
        "{r:?}"
    );
    assert!(
        r.evidence.contains(&"MAIL FROM: pyth0n.org".to_string()),
        "{r:?}"
    );
    assert_eq!(lookalikes(&a), ["lookalike.confusable"]);
    assert_eq!(a.verdict.action, Action::Quarantine);
    assert_legitimate_passes().await;
}

#[tokio::test]
async fn edit_distance_domain() {
    let a = analyze("guido-edit-distance.eml", OUTSIDE, "guido@pyhton.org").await;
    assert_eq!(
        reason(&a, "lookalike.edit_distance").action,
        Action::Quarantine
    );
    assert_eq!(a.verdict.action, Action::Quarantine);

    // In Reply-To, beside a genuine From: the replies go to the lookalike.
    let a = analyze("guido-reply-to-edit-distance.eml", OURS, "guido@python.org").await;
    let r = reason(&a, "lookalike.edit_distance");
    assert_eq!(r.evidence, ["Reply-To: pyhton.org"]);
    assert_eq!(a.verdict.action, Action::Quarantine);

    // Only in MAIL FROM, which no reader sees: edit distance is not applied there (the
    // sending infrastructure of big mailers sits close to their brands).
    let a = analyze("guido-original.eml", OURS, "bounce@pyhton.org").await;
    assert!(lookalikes(&a).is_empty(), "{:?}", a.verdict.reasons);

    assert_legitimate_passes().await;
}

#[tokio::test]
async fn cousin_domains() {
    let a = analyze("guido-cousin.eml", OUTSIDE, "guido@python-org.net").await;
    assert_eq!(reason(&a, "lookalike.cousin").action, Action::Quarantine);
    assert_eq!(a.verdict.action, Action::Quarantine);

    let a = analyze(
        "guido-cousin-whole-domain.eml",
        OUTSIDE,
        "guido@python.org.mail-relay.net",
    )
    .await;
    assert_eq!(reason(&a, "lookalike.cousin").action, Action::Quarantine);

    // The whole protected domain inside a longer name counts in MAIL FROM too.
    let a = analyze(
        "guido-original.eml",
        OURS,
        "bounce@python.org.mail-relay.net",
    )
    .await;
    let r = reason(&a, "lookalike.cousin");
    assert_eq!(r.evidence, ["MAIL FROM: python.org.mail-relay.net"]);

    assert_legitimate_passes().await;
}

#[tokio::test]
async fn mixed_script_domain() {
    // pythοn.org with a Greek omicron, written as its A-label: confusable and mixed-script.
    let a = analyze("guido-mixed-script.eml", OUTSIDE, "guido@xn--pythn-uce.org").await;
    let r = reason(&a, "lookalike.mixed_script");
    assert_eq!(r.action, Action::Quarantine);
    assert!(r.message.contains("pyth\u{3bf}n.org"), "{}", r.message);
    assert_eq!(
        reason(&a, "lookalike.confusable").action,
        Action::Quarantine
    );
    assert_eq!(a.verdict.action, Action::Quarantine);

    // A mixed-script name close to no protected domain (bаnk-news.com, Cyrillic а): a weaker
    // signal, tagged.
    let a = analyze(
        "guido-mixed-script-unrelated.eml",
        OUTSIDE,
        "news@xn--bnk-news-16g.com",
    )
    .await;
    assert_eq!(lookalikes(&a), ["lookalike.mixed_script"]);
    assert_eq!(reason(&a, "lookalike.mixed_script").action, Action::Tag);
    assert_eq!(a.verdict.action, Action::Tag, "{:?}", a.verdict.codes());

    assert_legitimate_passes().await;
}

#[tokio::test]
async fn unrelated_domains_are_not_lookalikes() {
    // The real message re-sent from another organisation's address.
    for (fixture, mail_from) in [
        ("guido-address-in-name-other.eml", "guido@example.net"),
        ("guido-display-name.eml", "guido.van.rossum@gmail.com"),
    ] {
        let a = analyze(fixture, OUTSIDE, mail_from).await;
        assert!(
            lookalikes(&a).is_empty(),
            "{fixture}: {:?}",
            a.verdict.reasons
        );
    }
}
