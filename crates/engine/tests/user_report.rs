//! User reports (`user_report.rs`): reports to report-phish@ as Thunderbird writes them
//! (`fixtures/reaction/SOURCES.md`), the reported message taken out, analysed, and the answer
//! worded for a forged and for a genuine message, attached and inline.

use std::{path::Path, time::Duration};

use unspoof_engine::{
    Dns, Engine, Envelope, Policy,
    dns::Zone,
    user_report::{self, Form, Judgement, Outcome},
};

const POLICY: &str = r#"
hostname = "inner.shopping.example.net"
protected_domains = ["shopping.example.net"]
internal_networks = ["10.0.0.0/8"]
"#;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture(name: &str) -> Vec<u8> {
    read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reaction")
            .join(name),
    )
}

/// A site whose domain nothing in the genuine sample resembles (with shopping.example.net
/// protected, the engine calls football.example.com a cousin of it: `lookalike.cousin`).
const OTHER_SITE: &str = r#"
hostname = "mx.site.test"
protected_domains = ["site.test"]
"#;

async fn engine() -> Engine {
    engine_with(POLICY).await
}

async fn engine_with(policy: &str) -> Engine {
    let mut zone = Zone::new();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample.zone");
    zone.load_file(&sample).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    Engine::new(Policy::parse(policy, "test policy").unwrap(), dns)
}

#[tokio::test]
async fn an_attached_forgery_is_explained_as_forged() {
    let report = user_report::extract(&fixture("report-attached-forged.eml")).expect("attached");
    assert_eq!(report.form, Form::Attached);
    assert_eq!(
        report.message_id.as_deref(),
        Some("a81f0c2e9d.7731@bot.example")
    );
    assert_eq!(
        report.subject.as_deref(),
        Some("Invoice overdue - pay today")
    );
    let a = engine()
        .await
        .evaluate(&report.raw, &Envelope::default())
        .await;
    assert_eq!(
        user_report::judge(&a),
        Judgement::Forged,
        "{:?}",
        a.verdict.codes()
    );
    let text = user_report::explain(&report, &a, true, &Outcome::NotFound);
    assert!(
        text.contains("It came from the computer at 203.0.113.66"),
        "{text}"
    );
    assert!(
        text.contains("Yes: this message is not from who it claims to be"),
        "{text}"
    );
    assert!(
        text.contains("shopping.example.net, one of our own domains"),
        "{text}"
    );
    assert!(
        text.contains("no record of it passing through our gateway"),
        "{text}"
    );
    assert!(text.contains("Do not reply"), "{text}");
    assert!(!text.contains("inline"), "{text}");
}

#[tokio::test]
async fn an_attached_genuine_message_is_explained_as_genuine() {
    let report = user_report::extract(&fixture("report-attached-genuine.eml")).expect("attached");
    assert_eq!(report.form, Form::Attached);
    let a = engine_with(OTHER_SITE)
        .await
        .evaluate(&report.raw, &Envelope::default())
        .await;
    assert_eq!(
        user_report::judge(&a),
        Judgement::Genuine,
        "{:?}",
        a.verdict.codes()
    );
    let text = user_report::explain(&report, &a, true, &Outcome::Recorded("accept".into()));
    assert!(text.contains("No: the sender is who it says"), "{text}");
    assert!(text.contains("DMARC passed"), "{text}");
    assert!(
        text.contains("213.165.64.12 (mail.football.example.com)"),
        "{text}"
    );
    assert!(text.contains("It was delivered to you"), "{text}");
    assert!(!text.contains("Do not reply"), "{text}");
}

#[tokio::test]
async fn an_inline_forward_is_recovered_marked_and_judged_on_the_original_when_found() {
    let report = user_report::extract(&fixture("report-inline-forged.eml")).expect("inline");
    assert_eq!(report.form, Form::Inline);
    assert_eq!(
        report.message_id, None,
        "Thunderbird's inline forward has no Message-ID"
    );
    assert_eq!(
        report.subject.as_deref(),
        Some("Invoice overdue - pay today")
    );
    assert_eq!(
        report.from.as_deref(),
        Some("Suzie Q. Public <suzie@shopping.example.net>")
    );
    let engine = engine().await;
    // What the forward kept alone: no Received line, nothing to authenticate.
    let kept = engine.evaluate(&report.raw, &Envelope::default()).await;
    let text = user_report::explain(&report, &kept, false, &Outcome::NotFound);
    assert!(
        text.contains("could only check what your forward kept"),
        "{text}"
    );
    assert!(text.contains("Forward As > Attachment"), "{text}");
    // The original from the records (the front door's match): judged forged.
    let original = engine
        .evaluate(&fixture("forged-delivered.eml"), &Envelope::default())
        .await;
    let text = user_report::explain(&report, &original, true, &Outcome::Recorded("tag".into()));
    assert!(
        text.contains("we found the original in our records"),
        "{text}"
    );
    assert!(
        text.contains("Yes: this message is not from who it claims to be"),
        "{text}"
    );
    assert!(text.contains("delivered with a warning"), "{text}");
}

#[test]
fn a_report_without_a_message_is_none() {
    assert!(
        user_report::extract(b"From: bob@shopping.example.net\r\nSubject: hi\r\n\r\nphish!\r\n")
            .is_none()
    );
}
