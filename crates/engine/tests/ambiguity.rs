//! Header ambiguity (`ambiguity.*`) through the whole engine, on real messages edited to carry
//! one trick each (tests/fixtures/ambiguity, see SOURCES.md there), with DNS from an empty zone
//! and a policy that protects the domain the trick borrows; plus the unmodified messages and the
//! 300 ham messages of the shared corpus, which must raise no `ambiguity.*` code.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use unspoof_engine::{Action, Analysis, Dns, Engine, Envelope, Policy, dns::Zone};

const PROTECT_TAINT: &str = r#"
hostname = "mx.shopping.example.net"
protected_domains = ["spamassassin.taint.org"]
"#;

/// Protects a domain none of the fixtures uses: actions come from `[actions]`.
const PROTECT_OTHER: &str = r#"
hostname = "mx.shopping.example.net"
protected_domains = ["shopping.example.net"]
"#;

const PROTECT_SRV: &str = r#"
hostname = "mx.shopping.example.net"
protected_domains = ["srv.dev"]
"#;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ambiguity")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// An envelope from outside every network of the policies.
fn outside(mail_from: &str) -> Envelope {
    Envelope {
        ip: Some("203.0.113.9".parse().unwrap()),
        helo: Some("mail.evil.example".into()),
        mail_from: Some(mail_from.into()),
        ..Envelope::default()
    }
}

async fn evaluate(policy: &str, raw: &[u8], envelope: &Envelope) -> Analysis {
    let policy = Policy::parse(policy, "test policy").unwrap();
    let dns = Dns::zones(Zone::new(), Duration::from_secs(2))
        .await
        .unwrap();
    Engine::new(policy, dns).evaluate(raw, envelope).await
}

fn ambiguity_codes(a: &Analysis) -> Vec<&str> {
    a.verdict
        .codes()
        .into_iter()
        .filter(|c| c.starts_with("ambiguity."))
        .collect()
}

/// Runs `file` with the protecting policy and checks that `code` is there with action reject
/// (its own, not only the verdict's), with evidence; returns the analysis.
async fn rejects(file: &str, code: &str) -> Analysis {
    rejects_with(PROTECT_TAINT, file, &outside("news@evil.example"), code).await
}

async fn rejects_with(policy: &str, file: &str, envelope: &Envelope, code: &str) -> Analysis {
    let a = evaluate(policy, &fixture(file), envelope).await;
    let r = a
        .verdict
        .reasons
        .iter()
        .find(|r| r.code == code)
        .unwrap_or_else(|| panic!("{file}: no {code} in {:?}", a.verdict.codes()));
    assert_eq!(r.action, Action::Reject, "{file}: {r:?}");
    assert!(!r.evidence.is_empty(), "{file}: {code} without evidence");
    assert!(
        r.message.contains("protected"),
        "{file}: {code} does not say why it rejects: {}",
        r.message
    );
    assert_eq!(a.verdict.action, Action::Reject, "{file}");
    a
}

fn reason<'a>(a: &'a Analysis, code: &str) -> &'a unspoof_engine::Reason {
    a.verdict
        .reasons
        .iter()
        .find(|r| r.code == code)
        .unwrap_or_else(|| panic!("no {code} in {:?}", a.verdict.codes()))
}

#[tokio::test]
async fn unmodified_messages_are_not_ambiguous() {
    let a = evaluate(
        PROTECT_TAINT,
        &fixture("sa-ham-02002.eml"),
        &outside("rssfeeds@spamassassin.taint.org"),
    )
    .await;
    assert!(ambiguity_codes(&a).is_empty(), "{:?}", a.verdict.codes());
    let a = evaluate(
        PROTECT_SRV,
        &fixture("mailauth-message4.eml"),
        &outside("bounce@out.srv.dev"),
    )
    .await;
    assert!(ambiguity_codes(&a).is_empty(), "{:?}", a.verdict.codes());
}

#[tokio::test]
async fn two_from_fields() {
    let a = rejects("from-multiple.eml", "ambiguity.from_multiple").await;
    let r = reason(&a, "ambiguity.from_multiple");
    assert_eq!(r.evidence.len(), 2);
    assert_eq!(
        r.evidence[1], "From: fark <news@evil.example>",
        "the raw field is the evidence"
    );
}

#[tokio::test]
async fn from_hidden_in_a_continuation_line() {
    let a = rejects("from-hidden.eml", "ambiguity.from_hidden").await;
    assert!(ambiguity_codes(&a).contains(&"ambiguity.from_multiple"));
    assert_eq!(
        reason(&a, "ambiguity.from_hidden").evidence,
        [" From: fark <news@evil.example>"]
    );
}

#[tokio::test]
async fn from_with_space_before_the_colon() {
    let a = rejects("from-name-space.eml", "ambiguity.from_name").await;
    assert_eq!(
        reason(&a, "ambiguity.from_name").evidence,
        ["From : fark <rssfeeds@spamassassin.taint.org>"]
    );
}

#[tokio::test]
async fn from_name_folded_across_lines() {
    let a = rejects("from-folded-name.eml", "ambiguity.from_name").await;
    assert_eq!(
        reason(&a, "ambiguity.from_name").evidence,
        ["From\\r\\n : fark <rssfeeds@spamassassin.taint.org>"]
    );
}

#[tokio::test]
async fn from_with_no_mailbox() {
    // No domain in sight: the action is the policy's, not a reject.
    let a = evaluate(
        PROTECT_TAINT,
        &fixture("from-empty.eml"),
        &outside("news@evil.example"),
    )
    .await;
    let r = reason(&a, "ambiguity.from_empty");
    assert_eq!(r.action, Action::Quarantine);
    assert_eq!(r.evidence, ["From: fark"]);
}

#[tokio::test]
async fn from_with_several_mailboxes() {
    rejects("from-several.eml", "ambiguity.from_several").await;
}

#[tokio::test]
async fn address_inside_an_encoded_word() {
    let a = rejects("encoded-address.eml", "ambiguity.encoded_address").await;
    assert!(
        reason(&a, "ambiguity.encoded_address")
            .message
            .contains("spamassassin.taint.org")
    );
    let a = rejects("encoded-address-alone.eml", "ambiguity.encoded_address").await;
    assert!(ambiguity_codes(&a).contains(&"ambiguity.from_empty"));
}

#[tokio::test]
async fn route_address_in_from() {
    rejects("route-address.eml", "ambiguity.route_address").await;
}

#[tokio::test]
async fn parsers_read_different_domains() {
    for file in [
        "angle-then-domain.eml",
        "backslash-comma.eml",
        "comment-domain.eml",
        "quoted-pair-quote.eml",
        "quoted-local-at.eml",
        "nul.eml",
        "unbalanced-quote.eml",
    ] {
        rejects(file, "ambiguity.from_domains_differ").await;
    }
    let a = rejects("nul.eml", "ambiguity.from_domains_differ").await;
    let r = reason(&a, "ambiguity.from_domains_differ");
    assert_eq!(
        r.evidence,
        ["From: rssfeeds@spamassassin.taint.org\\x00@evil.example"]
    );
    assert!(
        r.message
            .contains("before-nul reads spamassassin.taint.org"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn ambiguity_without_a_protected_domain_takes_the_policy_action() {
    let a = evaluate(
        PROTECT_OTHER,
        &fixture("angle-then-domain.eml"),
        &outside("news@evil.example"),
    )
    .await;
    assert_eq!(
        reason(&a, "ambiguity.from_domains_differ").action,
        Action::Quarantine
    );
    let policy = format!("{PROTECT_OTHER}\n[actions]\nheader_ambiguity = \"tag\"\n");
    let a = evaluate(
        &policy,
        &fixture("comment-domain.eml"),
        &outside("news@evil.example"),
    )
    .await;
    assert_eq!(
        reason(&a, "ambiguity.from_domains_differ").action,
        Action::Tag
    );
    assert_eq!(a.verdict.action, Action::Tag);
}

#[tokio::test]
async fn malformed_from_that_parsers_repair() {
    rejects("unbalanced-angle.eml", "ambiguity.from_malformed").await;
}

#[tokio::test]
async fn sender_or_resent_from_shows_a_protected_domain() {
    rejects("sender-domain.eml", "ambiguity.sender_domain").await;
    rejects("resent-from-domain.eml", "ambiguity.sender_domain").await;
    // The same Sender from our own network is ours to write.
    let internal = format!("{PROTECT_TAINT}internal_networks = [\"203.0.113.0/24\"]\n");
    let a = evaluate(
        &internal,
        &fixture("sender-domain.eml"),
        &outside("news@evil.example"),
    )
    .await;
    assert!(ambiguity_codes(&a).is_empty(), "{:?}", a.verdict.codes());
}

#[tokio::test]
async fn mail_from_with_a_route() {
    rejects_with(
        PROTECT_TAINT,
        "sa-ham-02002.eml",
        &outside("@spamassassin.taint.org:news@evil.example"),
        "ambiguity.mail_from_route",
    )
    .await;
}

#[tokio::test]
async fn malformed_mail_from() {
    for mail_from in [
        "news(@spamassassin.taint.org",
        "\"rssfeeds@spamassassin.taint.org@evil.example",
        "rssfeeds@spamassassin.taint.org@evil.example",
        "news@evil.example(rssfeeds@spamassassin.taint.org)",
    ] {
        let a = rejects_with(
            PROTECT_TAINT,
            "sa-ham-02002.eml",
            &outside(mail_from),
            "ambiguity.mail_from_malformed",
        )
        .await;
        let r = reason(&a, "ambiguity.mail_from_malformed");
        assert!(r.evidence[0].starts_with("MAIL FROM:<"), "{r:?}");
    }
    // Without the protected domain in any reading: the policy's action.
    let a = evaluate(
        PROTECT_TAINT,
        &fixture("sa-ham-02002.eml"),
        &outside("news(@evil.example"),
    )
    .await;
    assert_eq!(
        reason(&a, "ambiguity.mail_from_malformed").action,
        Action::Quarantine
    );
}

#[tokio::test]
async fn dkim_domain_with_a_nul() {
    let a = rejects_with(
        PROTECT_SRV,
        "dkim-domain-nul.eml",
        &outside("bounce@out.srv.dev"),
        "ambiguity.dkim_domain",
    )
    .await;
    let r = reason(&a, "ambiguity.dkim_domain");
    assert!(r.message.contains("a NUL byte"), "{}", r.message);
    assert!(r.evidence[0].contains("d=out.srv.dev\\x00.evil.example;"));
}

// ---------------------------------------------------------------------------------------------
// The ham corpus

/// The shared ham corpus (absent: a skip line, or a failure under `CI=true`).
fn testdata() -> Option<PathBuf> {
    unspoof_testkit::testdata("ambiguity ham", "corpus-spamassassin/ham")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ham_raises_no_ambiguity() {
    let Some(ham) = testdata() else {
        return;
    };
    let files = unspoof_testkit::eml_files(&ham);
    assert_eq!(files.len(), 300, "the ham corpus should hold 300 messages");
    // Protects the domains the corpus uses most, so a false ambiguity would also be a reject.
    let policy = Policy::parse(
        r#"
hostname = "mx.shopping.example.net"
protected_domains = ["spamassassin.taint.org", "xent.com", "linux.ie", "freshrpms.net"]
"#,
        "ham policy",
    )
    .unwrap();
    let dns = Dns::zones(Zone::new(), Duration::from_secs(2))
        .await
        .unwrap();
    let engine = Engine::new(policy, dns);
    let mut found = Vec::new();
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let a = engine.evaluate(&raw, &Envelope::default()).await;
        for r in a
            .verdict
            .reasons
            .iter()
            .filter(|r| r.code.starts_with("ambiguity."))
        {
            found.push(format!(
                "{}: {} {} {:?}",
                f.display(),
                r.code,
                r.message,
                r.evidence
            ));
        }
    }
    assert!(found.is_empty(), "ambiguity on ham:\n{}", found.join("\n"));
}

/// How often each `ambiguity.*` code fires on the spam and phishing corpora (printed, not
/// asserted): `cargo test -p unspoof-engine --test ambiguity -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "survey of the shared corpora; prints counts"]
async fn ambiguity_survey() {
    let Some(ham) = testdata() else {
        return;
    };
    let root = ham.join("../..");
    let policy = Policy::parse(PROTECT_OTHER, "survey policy").unwrap();
    let engine = Engine::new(policy, Dns::offline());
    for corpus in [
        "corpus-spamassassin/spam",
        "corpus-phishing-pot",
        "corpus-nazario",
    ] {
        let files = unspoof_testkit::eml_files(&root.join(corpus));
        let mut messages: Vec<Vec<u8>> = Vec::new();
        for f in &files {
            messages.push(std::fs::read(f).unwrap());
        }
        for m in unspoof_testkit::corpus_files(&root.join(corpus), &["mbox"]) {
            messages.extend(unspoof_engine::message::split_mbox(
                &std::fs::read(m).unwrap(),
            ));
        }
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        let mut any = 0;
        for raw in &messages {
            let a = engine.evaluate(raw, &Envelope::default()).await;
            let codes = ambiguity_codes(&a);
            any += usize::from(!codes.is_empty());
            if std::env::var_os("SURVEY_SHOW").is_some() {
                for r in a
                    .verdict
                    .reasons
                    .iter()
                    .filter(|r| r.code.starts_with("ambiguity."))
                {
                    println!("  {} {:?}", r.code, r.evidence);
                }
            }
            for c in codes {
                *counts.entry(c.to_string()).or_default() += 1;
            }
        }
        println!(
            "{corpus}: {} messages, {any} with an ambiguity: {counts:?}",
            messages.len()
        );
    }
}

/// A From with thousands of mailboxes: the comparisons are capped at MAX_READINGS and memoised
/// (with 200 000 mailboxes, comparing each with each through IDNA and the PSL took minutes), but
/// the action still sees every mailbox.
#[tokio::test]
async fn huge_from_is_judged_in_bounded_work() {
    let mut raw = b"From: ".to_vec();
    for i in 0..5_000 {
        raw.extend_from_slice(format!("a@d{i}.example, ").as_bytes());
    }
    raw.extend_from_slice(b"rssfeeds@spamassassin.taint.org\r\nSubject: x\r\n\r\nbody\r\n");
    let policy = Policy::parse(PROTECT_TAINT, "test policy").unwrap();
    let started = std::time::Instant::now();
    let a = Engine::new(policy, Dns::offline())
        .evaluate(&raw, &outside("news@evil.example"))
        .await;
    let took = started.elapsed();
    println!("huge From: {took:?}");
    let r = reason(&a, "ambiguity.from_several");
    // The protected domain is the last of 5 001 mailboxes, far past the compared ones.
    assert_eq!(r.action, Action::Reject);
}
