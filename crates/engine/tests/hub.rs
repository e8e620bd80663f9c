//! The hub cannot be bypassed unseen (`findings/hub.rs`): the same message as it sits in a
//! mailbox after passing the gateway, sent straight to the inner server, and sent straight
//! with a forged gateway hop (`fixtures/reaction/SOURCES.md`), analysed offline as
//! `unspoof analyze` does, and with the envelope a milter on the inner server sees.

use std::{net::IpAddr, path::Path, time::Duration};

use unspoof_engine::{Action, Analysis, Dns, Engine, Envelope, Policy, dns::Zone};

const POLICY: &str = r#"
hostname = "inner.shopping.example.net"
protected_domains = ["shopping.example.net"]
internal_networks = ["10.0.0.0/8"]
"#;

/// `[gateway] gateway_names` of the site's `unspoof.toml`, which the CLI's `Config` hands to
/// the policy (written as an administrator might: the check must not care).
const GATEWAY_NAMES: [&str; 2] = ["MX1.shopping.example.net.", "mx2.shopping.example.net"];

async fn engine(policy: &str) -> Engine {
    engine_with(policy, &GATEWAY_NAMES).await
}

async fn engine_with(policy: &str, gateway_names: &[&str]) -> Engine {
    let dns = Dns::zones(Zone::new(), Duration::from_secs(2))
        .await
        .unwrap();
    let mut policy = Policy::parse(policy, "test policy").unwrap();
    policy.gateway_names = gateway_names.iter().map(|n| n.to_string()).collect();
    policy.validate().unwrap();
    Engine::new(policy, dns)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reaction")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bypass(a: &Analysis) -> Option<&unspoof_engine::Reason> {
    a.verdict.reasons.iter().find(|r| r.code == "hub.bypass")
}

async fn offline(policy: &str, name: &str) -> Analysis {
    engine(policy)
        .await
        .evaluate(&fixture(name), &Envelope::default())
        .await
}

#[tokio::test]
async fn a_message_that_skipped_the_gateway_is_a_finding_offline() {
    let passed = offline(POLICY, "hub-passed.eml").await;
    assert!(bypass(&passed).is_none(), "{:?}", passed.verdict.codes());

    let skipped = offline(POLICY, "hub-bypassed.eml").await;
    let r = bypass(&skipped).expect("the bypass is a finding");
    assert_eq!(r.action, Action::Tag);
    assert!(r.message.contains("198.51.100.7"), "{}", r.message);
    assert!(
        r.message.contains("suzie@shopping.example.net"),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("inner.shopping.example.net"),
        "{}",
        r.message
    );
    assert!(r.evidence[0].contains("by inner.shopping.example.net"));

    // The forger's own "by mx1" line is below the trust boundary.
    let forged = offline(POLICY, "hub-bypassed-forged-hop.eml").await;
    let r = bypass(&forged).expect("a forged gateway hop does not count");
    assert!(r.message.contains("203.0.113.66"), "{}", r.message);
}

#[tokio::test]
async fn the_action_follows_the_policy_and_no_gateway_names_means_no_check() {
    let strict = format!("{POLICY}\n[actions]\nhub_bypass = \"quarantine\"\n");
    let a = offline(&strict, "hub-bypassed.eml").await;
    assert_eq!(bypass(&a).unwrap().action, Action::Quarantine);
    assert_eq!(a.verdict.action, Action::Quarantine);

    let a = engine_with(POLICY, &[])
        .await
        .evaluate(&fixture("hub-bypassed.eml"), &Envelope::default())
        .await;
    assert!(bypass(&a).is_none());
}

/// What the milter on the inner server sees: the client that connected, no Received line of
/// the inner server yet.
#[tokio::test]
async fn the_milter_on_the_inner_server_flags_a_direct_client() {
    let engine = engine(POLICY).await;
    let envelope = |ip: &str| Envelope {
        ip: Some(ip.parse::<IpAddr>().unwrap()),
        helo: Some("mail.partner.example".into()),
        mail_from: Some("billing@partner.example".into()),
        rcpt: vec!["suzie@shopping.example.net".into()],
        ..Envelope::default()
    };
    let raw = fixture("hub-passed.eml");
    // Handed over by the gateway: its line below the inner server's is trusted.
    let from_gateway = String::from_utf8(raw.clone()).unwrap();
    let from_gateway = from_gateway.split_once("\nReceived:").unwrap().1;
    let from_gateway = format!("Received:{from_gateway}");
    let a = engine
        .evaluate(from_gateway.as_bytes(), &envelope("10.0.0.5"))
        .await;
    assert!(bypass(&a).is_none(), "{:?}", a.verdict.codes());

    let body = from_gateway.split_once("From: ").unwrap().1;
    let direct = format!("From: {body}");
    let a = engine
        .evaluate(direct.as_bytes(), &envelope("198.51.100.7"))
        .await;
    assert!(bypass(&a).is_some(), "{:?}", a.verdict.codes());

    // Submissions and our own networks never pass the inbound hub.
    let mut submitted = envelope("198.51.100.7");
    submitted.auth_user = Some("suzie".into());
    let a = engine.evaluate(direct.as_bytes(), &submitted).await;
    assert!(bypass(&a).is_none(), "{:?}", a.verdict.codes());
    let a = engine
        .evaluate(direct.as_bytes(), &envelope("10.1.2.3"))
        .await;
    assert!(bypass(&a).is_none(), "{:?}", a.verdict.codes());

    // Mail for another domain is not our hub's business.
    let mut elsewhere = envelope("198.51.100.7");
    elsewhere.rcpt = vec!["joe@partner.example".into()];
    let a = engine.evaluate(direct.as_bytes(), &elsewhere).await;
    assert!(bypass(&a).is_none(), "{:?}", a.verdict.codes());
}

/// The gateway itself is the hub: mail reaching it is passing it.
#[tokio::test]
async fn the_gateway_does_not_flag_what_reaches_it() {
    let at_hub = POLICY.replace("inner.shopping.example.net", "mx1.shopping.example.net");
    let engine = engine(&at_hub).await;
    let raw = fixture("hub-bypassed.eml");
    let body = String::from_utf8(raw).unwrap();
    let direct = format!("From: {}", body.split_once("From: ").unwrap().1);
    let envelope = Envelope {
        ip: Some("198.51.100.7".parse().unwrap()),
        rcpt: vec!["suzie@shopping.example.net".into()],
        ..Envelope::default()
    };
    let a = engine.evaluate(direct.as_bytes(), &envelope).await;
    assert!(bypass(&a).is_none(), "{:?}", a.verdict.codes());
}
