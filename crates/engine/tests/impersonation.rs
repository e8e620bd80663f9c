//! Display-name impersonation through the whole engine, on a real message (SpamAssassin ham
//! from Guido van Rossum, see `fixtures/impersonation/SOURCES.md`) whose From was edited to
//! carry each trick; and the same message made legitimate, which has no `impersonation.*`
//! reason.
//!
//! The site protects python.org (SPF allows 192.0.2.25 only, DMARC p=reject) and the person
//! "Guido van Rossum" <guido@python.org>.

use std::{net::IpAddr, path::Path, time::Duration};

use unspoof_engine::{Action, Analysis, Dns, Engine, Envelope, Policy, dns::Zone};

const ZONE: &str = r#"
$ORIGIN python.org.
@        IN TXT "v=spf1 ip4:192.0.2.25 -all"
_dmarc   IN TXT "v=DMARC1; p=reject"
"#;

const POLICY: &str = r#"
hostname = "mx.python.org"
protected_domains = ["python.org"]
internal_networks = ["10.0.0.0/8"]

[[protected_people]]
name = "Guido van Rossum"
addresses = ["guido@python.org"]
"#;

/// The python.org mail server, which SPF authorises.
const OURS: &str = "192.0.2.25";
/// A host on the Internet.
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

fn codes(a: &Analysis) -> Vec<&str> {
    a.verdict.codes()
}

fn reason<'a>(a: &'a Analysis, code: &str) -> &'a unspoof_engine::Reason {
    a.verdict
        .reasons
        .iter()
        .find(|r| r.code == code)
        .unwrap_or_else(|| panic!("no {code} in {:?}", codes(a)))
}

fn assert_no_impersonation(a: &Analysis) {
    assert!(
        !codes(a).iter().any(|c| c.starts_with("impersonation.")),
        "{:?}",
        a.verdict.reasons
    );
}

#[tokio::test]
async fn display_name_of_a_protected_person_on_another_address() {
    let a = analyze(
        "guido-display-name.eml",
        OUTSIDE,
        "guido.van.rossum@gmail.com",
    )
    .await;
    let r = reason(&a, "impersonation.display_name");
    assert_eq!(r.action, Action::Quarantine);
    assert!(r.message.contains("Guido van Rossum"), "{}", r.message);
    assert!(r.evidence[0].starts_with("From: "), "{:?}", r.evidence);
    assert_eq!(a.verdict.action, Action::Quarantine, "{:?}", codes(&a));

    // "Last, First" with a Cyrillic і, in an RFC 2047 encoded-word.
    let a = analyze(
        "guido-display-name-confusable.eml",
        OUTSIDE,
        "guido.van.rossum@gmail.com",
    )
    .await;
    assert_eq!(
        reason(&a, "impersonation.display_name").action,
        Action::Quarantine
    );
    assert_eq!(a.verdict.action, Action::Quarantine);

    // Legitimate: the real message, from Guido's real address through python.org's server.
    let a = analyze("guido-original.eml", OURS, "guido@python.org").await;
    assert_no_impersonation(&a);
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", a.verdict.reasons);
}

#[tokio::test]
async fn display_name_with_other_words_is_tagged() {
    let a = analyze(
        "guido-display-name-partial.eml",
        OUTSIDE,
        "tracker@bugs.example.org",
    )
    .await;
    assert_eq!(
        reason(&a, "impersonation.display_name_partial").action,
        Action::Tag
    );
    assert_eq!(a.verdict.action, Action::Tag, "{:?}", codes(&a));
}

#[tokio::test]
async fn colleague_address_is_impersonation_unless_authenticated_as_ours() {
    // Guido's name on another python.org mailbox, from outside and unauthenticated: both the
    // own-domain spoof and the impersonation.
    let a = analyze("guido-colleague.eml", OUTSIDE, "assistant@python.org").await;
    assert_eq!(
        reason(&a, "impersonation.display_name").action,
        Action::Quarantine
    );
    assert!(codes(&a).contains(&"spoof.own_domain"), "{:?}", codes(&a));
    assert_eq!(a.verdict.action, Action::Reject);

    // The same message through python.org's own server (SPF pass, DMARC pass): our mail, so
    // an assistant may write under Guido's name.
    let a = analyze("guido-colleague.eml", OURS, "assistant@python.org").await;
    assert_no_impersonation(&a);
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", a.verdict.reasons);

    // And from the internal network.
    let a = analyze("guido-colleague.eml", "10.1.2.3", "assistant@python.org").await;
    assert_no_impersonation(&a);
}

#[tokio::test]
async fn address_in_name_of_a_protected_domain_is_quarantined() {
    let a = analyze("guido-address-in-name.eml", OUTSIDE, "guido@example.net").await;
    let r = reason(&a, "impersonation.address_in_name");
    assert_eq!(r.action, Action::Quarantine);
    assert!(r.message.contains("Guido@python.org"), "{}", r.message);
    assert!(a.verdict.action >= Action::Quarantine);

    // The same trick in an encoded-word with a fullwidth at sign.
    let a = analyze(
        "guido-address-in-name-encoded.eml",
        OUTSIDE,
        "guido@example.net",
    )
    .await;
    assert_eq!(
        reason(&a, "impersonation.address_in_name").action,
        Action::Quarantine
    );

    // Legitimate: the name shows the real address (in other case).
    let a = analyze("guido-address-in-name-same.eml", OURS, "guido@python.org").await;
    assert_no_impersonation(&a);
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", a.verdict.reasons);
}

#[tokio::test]
async fn address_in_name_of_another_domain_is_tagged() {
    let a = analyze(
        "guido-address-in-name-other.eml",
        OUTSIDE,
        "guido@example.net",
    )
    .await;
    assert_eq!(
        reason(&a, "impersonation.address_in_name").action,
        Action::Tag
    );
    assert_eq!(a.verdict.action, Action::Tag, "{:?}", codes(&a));
}

#[tokio::test]
async fn log_only_policy_keeps_every_impersonation_reason_log_only() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/impersonation/guido-address-in-name.eml");
    let raw = std::fs::read(path).unwrap();
    let policy = Policy::parse(
        &format!("{POLICY}\n[actions]\nimpersonation = \"accept\"\n"),
        "log-only",
    )
    .unwrap();
    let engine = Engine::new(policy, Dns::offline());
    let a = engine.evaluate(&raw, &Envelope::default()).await;
    assert_eq!(
        reason(&a, "impersonation.address_in_name").action,
        Action::Accept
    );
}
