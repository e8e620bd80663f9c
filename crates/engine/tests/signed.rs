//! Signed mail through the whole engine, on messages made by the real tools (GnuPG and
//! `openssl cms -sign`, `tests/signed/make.sh`, run into a temporary folder): each proven
//! signature accepted and easing a DMARC that cannot decide, each altered copy quarantined,
//! each mismatch named by its own code, the results in Authentication-Results and the JSON,
//! trust on first use, and a tagged signed message still verifying.

use std::{net::IpAddr, path::PathBuf, process::Command, time::Duration};

use unspoof_engine::{
    Action, Analysis, Dns, Engine, Envelope, Policy,
    dns::Zone,
    signed::{Standing, TrustStore},
    tag,
};

// SPF passes for the ESP's bounce domain, which is not aligned with From: DMARC fails, and the
// From domains ask for nothing (p=none): DMARC cannot decide.
const ZONE: &str = r#"
esp.example.          IN TXT "v=spf1 ip4:192.0.2.25 -all"
_dmarc.example.com.   IN TXT "v=DMARC1; p=none"
_dmarc.example.org.   IN TXT "v=DMARC1; p=none"
"#;

const POLICY: &str = r#"
hostname = "mx.recipient.test"
protected_domains = ["recipient.test"]
"#;

struct Kit {
    dir: PathBuf,
    engine: Engine,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn kit(name: &str) -> Kit {
    let dir = std::env::temp_dir().join(format!("unspoof-signed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/signed/make.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "make.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut trust = TrustStore::default();
    for entry in std::fs::read_dir(dir.join("keyring")).unwrap() {
        trust
            .openpgp
            .add(&std::fs::read(entry.unwrap().path()).unwrap())
            .unwrap();
    }
    trust
        .ca
        .add_pem(&std::fs::read(dir.join("ca.pem")).unwrap())
        .unwrap();
    let mut zone = Zone::new();
    zone.load_text(ZONE, None).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    let policy = Policy::parse(POLICY, "test policy").unwrap();
    let engine = Engine::new(policy, dns).with_signature_trust(trust);
    Kit { dir, engine }
}

fn envelope(seen: Option<Vec<String>>) -> Envelope {
    Envelope {
        ip: Some("192.0.2.25".parse::<IpAddr>().unwrap()),
        helo: Some("out.esp.example".into()),
        mail_from: Some("bounce@esp.example".into()),
        rcpt: vec!["bob@recipient.test".into()],
        received_at: Some(now()),
        signing_keys_seen: seen,
        ..Envelope::default()
    }
}

impl Kit {
    fn raw(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join("msg").join(format!("{name}.eml"))).unwrap()
    }
    async fn analyze(&self, raw: &[u8]) -> Analysis {
        self.engine.evaluate(raw, &envelope(None)).await
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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

fn altered(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    assert!(text.contains("4711"));
    text.replacen("4711", "4712", 1).into_bytes()
}

#[tokio::test]
async fn proven_signatures_ease_an_undecided_dmarc_and_altered_copies_are_quarantined() {
    let k = kit("proven").await;
    for (name, method) in [
        ("pgp-mime-rsa", "x-pgp"),
        ("pgp-mime-ed25519", "x-pgp"),
        ("pgp-inline-rsa", "x-pgp"),
        ("pgp-inline-ed25519", "x-pgp"),
        ("smime-detached", "smime"),
        ("smime-opaque", "smime"),
    ] {
        let raw = k.raw(name);
        let a = k.analyze(&raw).await;
        assert_eq!(a.verdict.action, Action::Accept, "{name}: {:?}", a.verdict);
        assert!(
            reason(&a, "signature.valid")
                .message
                .contains("From address")
        );
        // DMARC failed with p=none: a tag without the signature, eased to accept with it.
        let dmarc = reason(&a, "dmarc.fail_policy_none");
        assert_eq!(dmarc.action, Action::Accept, "{name}");
        assert!(dmarc.message.contains("eased"), "{}", dmarc.message);
        let ar = a.authentication_results("mx.example.net");
        assert!(ar.contains(&format!("{method}=pass")), "{name}: {ar}");
        assert!(ar.contains(&format!("body.{method}-identifier=")), "{ar}");
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["signature"]["result"], "pass", "{name}: {json}");
        assert_eq!(json["signature"]["standing"], "proven");

        if name != "smime-opaque" {
            let bad = k.analyze(&altered(&raw)).await;
            assert_eq!(
                bad.verdict.action,
                Action::Quarantine,
                "{name} altered: {:?}",
                codes(&bad)
            );
            assert_eq!(reason(&bad, "signature.bad").action, Action::Quarantine);
            assert!(
                bad.authentication_results("x")
                    .contains(&format!("{method}=fail"))
            );
            // Without the signature's word, DMARC's p=none stays a tag.
            assert_eq!(reason(&bad, "dmarc.fail_policy_none").action, Action::Tag);
        }
    }
}

#[tokio::test]
async fn each_mismatch_has_its_own_code() {
    let k = kit("mismatch").await;
    for (name, code, action) in [
        ("pgp-other-signer", "signature.other_signer", Action::Tag),
        ("smime-other-signer", "signature.other_signer", Action::Tag),
        ("pgp-revoked", "signature.revoked", Action::Quarantine),
        ("pgp-expired", "signature.expired", Action::Tag),
        ("smime-expired", "signature.expired", Action::Tag),
        ("pgp-sha1", "signature.weak", Action::Tag),
        ("smime-sha1", "signature.weak", Action::Tag),
        ("pgp-small-key", "signature.weak", Action::Tag),
    ] {
        let a = k.analyze(&k.raw(name)).await;
        let r = reason(&a, code);
        assert_eq!(r.action, action, "{name}: {r:?}");
        assert!(!codes(&a).contains(&"signature.valid"), "{name}");
        // Not proven: DMARC's p=none is not eased.
        assert_eq!(
            reason(&a, "dmarc.fail_policy_none").action,
            Action::Tag,
            "{name}"
        );
        assert!(a.authentication_results("x").contains("=policy"), "{name}");
    }
    assert!(
        reason(
            &k.analyze(&k.raw("pgp-other-signer")).await,
            "signature.other_signer"
        )
        .message
        .contains("bob@example.org")
    );
}

#[tokio::test]
async fn a_key_the_message_carries_is_trusted_on_first_use_and_a_changed_key_is_flagged() {
    let k = kit("tofu").await;
    let raw = k.raw("pgp-autocrypt");
    let run = |seen: Option<Vec<String>>| {
        let raw = raw.clone();
        let engine = k.engine.clone();
        async move { engine.evaluate(&raw, &envelope(seen)).await }
    };
    // Nobody knows the history: first use, nothing remembered.
    let a = run(None).await;
    let s = a.signature.as_ref().unwrap();
    assert_eq!(s.standing, Standing::FirstUse);
    assert!(!s.remember);
    assert_eq!(reason(&a, "signature.first_use").action, Action::Accept);
    // Never signed before: first use, remember this key.
    let a = run(Some(vec![])).await;
    let s = a.signature.as_ref().unwrap();
    assert!(s.remember);
    let fp = s.found.fingerprint.clone().unwrap();
    // The same key again: proven by memory.
    let a = run(Some(vec![fp.clone()])).await;
    assert_eq!(a.signature.as_ref().unwrap().standing, Standing::Proven);
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", a.verdict);
    // Another key before: changed.
    let a = run(Some(vec!["0".repeat(40)])).await;
    assert_eq!(reason(&a, "signature.key_changed").action, Action::Tag);
    assert_eq!(a.verdict.action, Action::Tag);
}

#[tokio::test]
async fn a_tagged_signed_message_still_verifies() {
    let k = kit("tag").await;
    for name in [
        "pgp-other-signer",
        "smime-other-signer",
        // Inline: the text part holds the cleartext block.
        "pgp-inline-rsa",
    ] {
        let raw = k.raw(name);
        let mut a = k.analyze(&raw).await;
        if name == "pgp-inline-rsa" {
            // Force a tag to check that the signed text part gets no banner.
            a.verdict.action = Action::Tag;
        }
        assert_eq!(a.verdict.action, Action::Tag, "{name}");
        let settings = k.engine.policy().tag.clone();
        let tagged = tag::tag_message(&raw, &a, &settings, "mx.example.net");
        let text = String::from_utf8_lossy(&tagged);
        assert!(
            text.contains(&settings.subject_prefix),
            "{name}: the subject is still tagged"
        );
        let again = k.analyze(&tagged).await;
        let s = again.signature.as_ref().unwrap();
        assert_eq!(
            s.found.check,
            unspoof_engine::signed::SignatureCheck::Valid,
            "{name}: the tagged copy no longer verifies"
        );
        // The decision every door carries out: header edits only (no banner body), our
        // Authentication-Results with the signature's result, and the copy still verifies.
        let policy = k.engine.policy();
        let crlf = unspoof_engine::message::to_crlf(&raw);
        let d = unspoof_engine::decision::decide(&crlf, &a, &policy);
        assert_eq!(d.disposition, unspoof_engine::Disposition::Tag, "{name}");
        assert!(
            d.body.is_none() && !d.body_replaced,
            "{name}: a banner body"
        );
        let method = if name.starts_with("smime") {
            "smime="
        } else {
            "x-pgp="
        };
        assert!(
            d.edits.iter().any(|e| matches!(e,
                unspoof_engine::HeaderEdit::Insert { name, value }
                    if name == "Authentication-Results" && value.contains(method))),
            "{name}: no {method} in {:?}",
            d.edits
        );
        assert!(
            d.edits.iter().any(|e| matches!(e,
                unspoof_engine::HeaderEdit::Change { name, value, .. }
                    if name == "Subject" && value.contains(&settings.subject_prefix))
                || matches!(e, unspoof_engine::HeaderEdit::Insert { name, .. } if name == "Subject")),
            "{name}: the subject is not tagged by the decision: {:?}",
            d.edits
        );
        let delivered = unspoof_engine::decision::apply(&crlf, &d.edits, d.body.as_deref());
        let again = k.analyze(&delivered).await;
        assert_eq!(
            again.signature.as_ref().unwrap().found.check,
            unspoof_engine::signed::SignatureCheck::Valid,
            "{name}: the copy the decision delivers no longer verifies"
        );
    }
}

/// `[[signed_mail]]` (own mail must be signed): an SPF pass through a shared ESP alone is
/// `spoof.own_domain_unsigned`; a proven OpenPGP signature of an address in the domain is the
/// signature the rule asks for.
#[tokio::test]
async fn a_proven_signature_satisfies_signed_mail() {
    let k = kit("signed-mail").await;
    let zone = r#"
example.com.          IN TXT "v=spf1 ip4:192.0.2.25 -all"
_dmarc.example.com.   IN TXT "v=DMARC1; p=reject"
"#;
    let mut z = Zone::new();
    z.load_text(zone, None).unwrap();
    let dns = Dns::zones(z, Duration::from_secs(2)).await.unwrap();
    let policy = Policy::parse(
        "hostname = \"mx.example.com\"\nprotected_domains = [\"example.com\"]\n\
         [[signed_mail]]\ndomain = \"example.com\"\n",
        "test policy",
    )
    .unwrap();
    let mut trust = TrustStore::default();
    for entry in std::fs::read_dir(k.dir.join("keyring")).unwrap() {
        trust
            .openpgp
            .add(&std::fs::read(entry.unwrap().path()).unwrap())
            .unwrap();
    }
    let engine = Engine::new(policy, dns).with_signature_trust(trust);
    let env = Envelope {
        mail_from: Some("bounce@example.com".into()),
        ..envelope(None)
    };
    let signed = engine.evaluate(&k.raw("pgp-mime-rsa"), &env).await;
    assert!(
        codes(&signed).contains(&"signature.valid"),
        "{:?}",
        codes(&signed)
    );
    assert!(
        !codes(&signed).contains(&"spoof.own_domain_unsigned"),
        "{:?}",
        signed.verdict
    );
    // The same mail without a (valid) signature: refused by the rule.
    let altered = engine
        .evaluate(&altered(&k.raw("pgp-mime-rsa")), &env)
        .await;
    assert!(
        codes(&altered).contains(&"spoof.own_domain_unsigned"),
        "{:?}",
        codes(&altered)
    );
}

/// The store's memory as an engine input (`Engine::with_signer_history`): asked inside
/// `evaluate` for a signed message, taught by `remember_signer` after a delivered first use, and
/// not asked when the envelope carries the answer.
#[tokio::test]
async fn the_signer_history_is_asked_by_the_engine_and_taught_after_delivery() {
    use std::sync::{Arc, Mutex};
    use unspoof_engine::signed::SignerHistory;

    #[derive(Default)]
    struct Memory {
        keys: Mutex<Vec<(String, String)>>,
        asked: Mutex<u32>,
    }
    impl SignerHistory for Memory {
        fn keys_of<'a>(
            &'a self,
            address: &'a str,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<String>>> + Send + 'a>>
        {
            Box::pin(async move {
                *self.asked.lock().unwrap() += 1;
                let keys = self.keys.lock().unwrap();
                Some(
                    keys.iter()
                        .filter(|(a, _)| a == address)
                        .map(|(_, k)| k.clone())
                        .collect(),
                )
            })
        }
        fn remember<'a>(
            &'a self,
            address: &'a str,
            fingerprint: &'a str,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
            Box::pin(async move {
                self.keys
                    .lock()
                    .unwrap()
                    .push((address.to_string(), fingerprint.to_string()));
            })
        }
    }

    let k = kit("history").await;
    let memory = Arc::new(Memory::default());
    let engine = k.engine.clone().with_signer_history(memory.clone());
    let raw = k.raw("pgp-autocrypt");
    // First message: the store knows no key, so a first use to remember.
    let a = engine.evaluate(&raw, &envelope(None)).await;
    assert_eq!(*memory.asked.lock().unwrap(), 1);
    assert_eq!(a.signature.as_ref().unwrap().standing, Standing::FirstUse);
    assert!(a.signature.as_ref().unwrap().remember);
    engine.remember_signer(&a).await;
    assert_eq!(
        memory.keys.lock().unwrap().len(),
        1,
        "a delivered first use is remembered"
    );
    // Second message: the engine asks again and the remembered key proves it.
    let a = engine.evaluate(&raw, &envelope(None)).await;
    assert_eq!(*memory.asked.lock().unwrap(), 2);
    assert_eq!(a.signature.as_ref().unwrap().standing, Standing::Proven);
    // An envelope that carries the answer is not asked about; a changed key is flagged.
    let a = engine
        .evaluate(&raw, &envelope(Some(vec!["0".repeat(40)])))
        .await;
    assert_eq!(*memory.asked.lock().unwrap(), 2);
    assert_eq!(a.signature.as_ref().unwrap().standing, Standing::KeyChanged);
    // A signed part inside multipart/mixed is asked about too.
    engine
        .evaluate(&k.raw("nested-pgp-alone"), &envelope(None))
        .await;
    assert_eq!(*memory.asked.lock().unwrap(), 3);
    // An unsigned message is not asked about.
    let unsigned = b"From: a@example.org\r\nTo: b@recipient.test\r\nSubject: hi\r\n\r\nhello\r\n";
    engine.evaluate(unsigned, &envelope(None)).await;
    assert_eq!(*memory.asked.lock().unwrap(), 3);
}

/// The reload hook: `set_signature_trust` on any clone of the engine (the gateway's reload
/// holds one) replaces the trust every clone judges with, from the next message on.
#[tokio::test]
async fn replaced_signature_trust_reaches_every_clone() {
    let k = kit("reload").await;
    let mut zone = Zone::new();
    zone.load_text(ZONE, None).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    let engine = Engine::new(Policy::parse(POLICY, "test policy").unwrap(), dns);
    let reloader = engine.clone();
    let raw = k.raw("pgp-mime-rsa");
    let standing = |a: Analysis| a.signature.unwrap().standing;
    assert_eq!(
        standing(engine.evaluate(&raw, &envelope(None)).await),
        Standing::NoKey
    );
    let mut trust = TrustStore::default();
    trust
        .openpgp
        .add(&std::fs::read(k.dir.join("keyring/alice.asc")).unwrap())
        .unwrap();
    reloader.set_signature_trust(trust);
    assert_eq!(
        standing(engine.evaluate(&raw, &envelope(None)).await),
        Standing::Proven
    );
}

/// A signed part inside multipart/mixed (a list's footer, a forwarder's wrapper, a line put
/// before it): the signature covers its part only, so it is never the message's proof. Alone
/// in its wrapper it is; altered it is bad; and the tag of a partly signed message leaves the
/// signed part verifying.
#[tokio::test]
async fn a_signed_part_among_unsigned_content_is_not_a_signed_message() {
    let k = kit("nested").await;
    let a = k.analyze(&k.raw("nested-pgp-alone")).await;
    let s = a.signature.as_ref().unwrap();
    assert_eq!(s.standing, Standing::Proven, "{:?}", a.verdict);
    assert_eq!(s.found.part.as_deref(), Some("1"));
    assert_eq!(a.verdict.action, Action::Accept, "{:?}", a.verdict);

    for (name, method, unsigned) in [
        ("nested-pgp-footer", "x-pgp", "part 2 (text/plain)"),
        ("nested-smime-footer", "smime", "part 2 (text/plain)"),
        ("nested-smime-opaque-footer", "smime", "part 2 (text/plain)"),
        ("nested-smime-prepended", "smime", "part 1 (text/plain)"),
        (
            "pgp-inline-surrounded",
            "x-pgp",
            "text before the signed block",
        ),
    ] {
        let raw = k.raw(name);
        let a = k.analyze(&raw).await;
        let s = a.signature.as_ref().unwrap();
        assert_eq!(s.standing, Standing::Partial, "{name}: {:?}", a.verdict);
        assert!(
            !s.remember,
            "{name}: a partly signed message teaches no key"
        );
        let r = reason(&a, "signature.partial");
        assert_eq!(r.action, Action::Tag, "{name}");
        assert!(r.message.contains(unsigned), "{name}: {}", r.message);
        assert!(!codes(&a).contains(&"signature.valid"), "{name}");
        // Not proof of the sender: DMARC's p=none stays a tag.
        assert_eq!(
            reason(&a, "dmarc.fail_policy_none").action,
            Action::Tag,
            "{name}"
        );
        assert_eq!(a.verdict.action, Action::Tag, "{name}");
        assert!(
            a.authentication_results("x")
                .contains(&format!("{method}=policy")),
            "{name}"
        );
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["signature"]["standing"], "partial", "{name}");
        assert!(
            json["signature"]["unsigned"]
                .as_array()
                .is_some_and(|u| u.iter().any(|x| x == unsigned)),
            "{name}: {json}"
        );

        // What the doors deliver still verifies (the banner, if any, is outside the signed
        // part).
        let policy = k.engine.policy();
        let crlf = unspoof_engine::message::to_crlf(&raw);
        let d = unspoof_engine::decision::decide(&crlf, &a, &policy);
        assert_eq!(d.disposition, unspoof_engine::Disposition::Tag, "{name}");
        let delivered = unspoof_engine::decision::apply(&crlf, &d.edits, d.body.as_deref());
        let again = k.analyze(&delivered).await;
        assert_eq!(
            again.signature.as_ref().unwrap().found.check,
            unspoof_engine::signed::SignatureCheck::Valid,
            "{name}: the delivered copy no longer verifies"
        );
    }

    // The wrapped signed part altered: bad, quarantined, as at the top.
    for name in ["nested-pgp-footer", "nested-smime-footer"] {
        let a = k.analyze(&altered(&k.raw(name))).await;
        assert_eq!(
            reason(&a, "signature.bad").action,
            Action::Quarantine,
            "{name}"
        );
        assert_eq!(a.verdict.action, Action::Quarantine, "{name}");
    }
}
