//! First contact through the whole engine, on the real message of `impersonation.rs`
//! (SpamAssassin ham from Guido van Rossum, `fixtures/impersonation/SOURCES.md`): the
//! front door's answer "the sender is new to the recipients" is informational alone, and makes
//! an impersonation one step more severe.

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

[[protected_people]]
name = "Guido van Rossum"
addresses = ["guido@python.org"]
"#;

const OURS: &str = "192.0.2.25";
const OUTSIDE: &str = "203.0.113.9";

async fn analyze(
    policy: &str,
    fixture: &str,
    ip: &str,
    mail_from: &str,
    first_contact: Option<bool>,
) -> Analysis {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/impersonation")
        .join(fixture);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut zone = Zone::new();
    zone.load_text(ZONE, None).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    let engine = Engine::new(Policy::parse(policy, "test policy").unwrap(), dns);
    let envelope = Envelope {
        ip: Some(ip.parse::<IpAddr>().unwrap()),
        helo: Some("mail.example.net".into()),
        mail_from: Some(mail_from.into()),
        rcpt: vec!["barry@python.org".into()],
        first_contact,
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

const IMPERSONATION: (&str, &str) = ("guido-display-name.eml", "guido.van.rossum@gmail.com");

#[tokio::test]
async fn a_stranger_borrowing_a_protected_name_is_rejected() {
    let (file, mf) = IMPERSONATION;
    let a = analyze(POLICY, file, OUTSIDE, mf, Some(true)).await;
    assert_eq!(reason(&a, "contact.first").action, Action::Accept);
    assert!(
        reason(&a, "contact.first").message.contains("gmail.com"),
        "{}",
        reason(&a, "contact.first").message
    );
    let pair = reason(&a, "contact.first_impersonation");
    assert_eq!(pair.action, Action::Reject);
    assert!(
        pair.evidence[0].starts_with("impersonation.display_name"),
        "{:?}",
        pair.evidence
    );
    assert_eq!(a.verdict.action, Action::Reject, "{:?}", codes(&a));
    assert_eq!(a.envelope.first_contact, Some(true));
}

#[tokio::test]
async fn a_known_or_unknown_correspondent_keeps_the_impersonation_verdict() {
    let (file, mf) = IMPERSONATION;
    for answer in [Some(false), None] {
        let a = analyze(POLICY, file, OUTSIDE, mf, answer).await;
        assert!(
            !codes(&a).iter().any(|c| c.starts_with("contact.")),
            "{answer:?}: {:?}",
            codes(&a)
        );
        assert_eq!(a.verdict.action, Action::Quarantine, "{answer:?}");
    }
}

#[tokio::test]
async fn a_first_message_alone_is_only_noted() {
    // The legitimate twin: Guido's real message from python.org's own server.
    let a = analyze(
        POLICY,
        "guido-original.eml",
        OURS,
        "guido@python.org",
        Some(true),
    )
    .await;
    assert_eq!(reason(&a, "contact.first").action, Action::Accept);
    assert!(!codes(&a).contains(&"contact.first_impersonation"));
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", codes(&a));
}

#[tokio::test]
async fn escalation_follows_the_policy_of_the_impersonation() {
    let (file, mf) = IMPERSONATION;
    // A partial name match is a tag; with a first contact it becomes a quarantine.
    let a = analyze(
        POLICY,
        "guido-display-name-partial.eml",
        OUTSIDE,
        "tracker@bugs.example.org",
        Some(true),
    )
    .await;
    assert_eq!(
        reason(&a, "contact.first_impersonation").action,
        Action::Quarantine
    );
    assert_eq!(a.verdict.action, Action::Quarantine, "{:?}", codes(&a));

    // Impersonation made log-only for a trial: the pair stays log-only too.
    let trial = format!("{POLICY}\n[actions]\nimpersonation = \"accept\"\n");
    let a = analyze(&trial, file, OUTSIDE, mf, Some(true)).await;
    assert_eq!(
        reason(&a, "contact.first_impersonation").action,
        Action::Accept
    );
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", codes(&a));
}

/// The store's allow list as the engine asks it: answers `answer` (after `delay`) and keeps
/// what it was asked.
struct AllowList {
    answer: Option<bool>,
    delay: Duration,
    asked: std::sync::Mutex<Vec<(String, Vec<String>)>>,
}

impl unspoof_engine::contact::SenderAllowList for AllowList {
    fn allowed<'a>(
        &'a self,
        from: &'a str,
        rcpts: &'a [String],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send + 'a>> {
        self.asked
            .lock()
            .unwrap()
            .push((from.to_string(), rcpts.to_vec()));
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.answer
        })
    }
}

async fn analyze_with_allow_list(list: std::sync::Arc<AllowList>) -> Analysis {
    let (file, mf) = IMPERSONATION;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/impersonation")
        .join(file);
    let raw = std::fs::read(&path).unwrap();
    let mut zone = Zone::new();
    zone.load_text(ZONE, None).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    let engine = Engine::new(Policy::parse(POLICY, "test policy").unwrap(), dns)
        .with_sender_allow_list(list);
    let envelope = Envelope {
        ip: Some(OUTSIDE.parse::<IpAddr>().unwrap()),
        helo: Some("mail.example.net".into()),
        mail_from: Some(mf.into()),
        rcpt: vec!["barry@python.org".into()],
        ..Envelope::default()
    };
    engine.evaluate(&raw, &envelope).await
}

fn allow_list(answer: Option<bool>, delay: Duration) -> std::sync::Arc<AllowList> {
    std::sync::Arc::new(AllowList {
        answer,
        delay,
        asked: Default::default(),
    })
}

#[tokio::test]
async fn an_allowed_sender_lifts_a_quarantine_in_the_decision() {
    let list = allow_list(Some(true), Duration::ZERO);
    let a = analyze_with_allow_list(list.clone()).await;
    let raw = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/impersonation")
            .join(IMPERSONATION.0),
    )
    .unwrap();
    assert_eq!(
        *list.asked.lock().unwrap(),
        [(
            unspoof_engine::contact::sender_address(&raw).unwrap(),
            vec!["barry@python.org".to_string()]
        )]
    );
    assert_eq!(a.envelope.allowed_sender, Some(true));
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", codes(&a));
    assert_eq!(codes(&a)[0], "allow.sender");
    // The findings the list overrode stay listed, with what they asked for.
    assert!(
        codes(&a).contains(&"impersonation.display_name"),
        "{:?}",
        codes(&a)
    );
    assert_eq!(a.decision.disposition, unspoof_engine::Disposition::Accept);
    assert_eq!(a.decision.reply.code, 250);
}

#[tokio::test]
async fn the_allow_list_never_lifts_a_reject_and_its_silence_changes_nothing() {
    // A reject (a stranger borrowing a protected name, first contact) stays a reject.
    let (file, mf) = IMPERSONATION;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/impersonation")
        .join(file);
    let raw = std::fs::read(&path).unwrap();
    let mut zone = Zone::new();
    zone.load_text(ZONE, None).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    let engine = Engine::new(Policy::parse(POLICY, "test policy").unwrap(), dns);
    let envelope = Envelope {
        ip: Some(OUTSIDE.parse::<IpAddr>().unwrap()),
        helo: Some("mail.example.net".into()),
        mail_from: Some(mf.into()),
        rcpt: vec!["barry@python.org".into()],
        first_contact: Some(true),
        allowed_sender: Some(true),
        ..Envelope::default()
    };
    let a = engine.evaluate(&raw, &envelope).await;
    assert_eq!(a.verdict.action, Action::Reject, "{:?}", codes(&a));
    assert!(!codes(&a).contains(&"allow.sender"));

    // Not allowed, a store that failed, a store slower than ALLOW_LIST_BUDGET: the quarantine
    // stands.
    let slow = unspoof_engine::contact::ALLOW_LIST_BUDGET + Duration::from_millis(300);
    for (answer, delay) in [
        (Some(false), Duration::ZERO),
        (None, Duration::ZERO),
        (Some(true), slow),
    ] {
        let a = analyze_with_allow_list(allow_list(answer, delay)).await;
        assert_eq!(a.verdict.action, Action::Quarantine, "{answer:?} {delay:?}");
        assert!(!codes(&a).contains(&"allow.sender"));
        assert_eq!(
            a.decision.disposition,
            unspoof_engine::Disposition::Quarantine
        );
    }
}

#[tokio::test]
async fn the_allow_list_is_asked_only_when_it_could_lift_the_verdict() {
    // Guido's real message from python.org's own server is accepted: the list could change
    // nothing, so it is not asked (it is a database query in the front doors), and the
    // analysis says nothing about it.
    let raw = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/impersonation/guido-original.eml"),
    )
    .unwrap();
    let mut zone = Zone::new();
    zone.load_text(ZONE, None).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    let list = allow_list(Some(true), Duration::ZERO);
    let engine = Engine::new(Policy::parse(POLICY, "test policy").unwrap(), dns)
        .with_sender_allow_list(list.clone());
    let envelope = Envelope {
        ip: Some(OURS.parse::<IpAddr>().unwrap()),
        helo: Some("mail.python.org".into()),
        mail_from: Some("guido@python.org".into()),
        rcpt: vec!["barry@python.org".into()],
        ..Envelope::default()
    };
    let a = engine.evaluate(&raw, &envelope).await;
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", codes(&a));
    assert!(list.asked.lock().unwrap().is_empty());
    assert_eq!(a.envelope.allowed_sender, None);
    assert!(!codes(&a).contains(&"allow.sender"));

    // The impersonation the findings quarantine: asked once, and lifted.
    let list = allow_list(Some(true), Duration::ZERO);
    let a = analyze_with_allow_list(list.clone()).await;
    assert_eq!(list.asked.lock().unwrap().len(), 1);
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", codes(&a));
}
