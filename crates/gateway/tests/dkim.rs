//! DKIM (issue 4, item 5): keygen writes a usable key and the DNS record, and submission mail
//! is signed so that a verifier holding that DNS record says pass. DNS comes from an in-memory
//! cache: no network.

mod common;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use common::*;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use unspoof_gateway::dkim::{self, Algorithm};
use unspoof_gateway::{DkimKeyConfig, UserConfig};

struct Zone(HashMap<Box<str>, Txt>);

impl ResolverCache<Box<str>, Txt> for Zone {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get(name).cloned()
    }
    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }
    fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
}

async fn verify(message: &[u8], dns_name: &str, txt: &str) -> Vec<DkimResult> {
    let key = DomainKey::parse(txt.as_bytes()).expect("TXT record parses");
    let zone = Zone(HashMap::from([(
        format!("{dns_name}.").into_boxed_str(),
        Txt::DomainKey(Arc::new(key)),
    )]));
    let auth = MessageAuthenticator::new_cloudflare().unwrap();
    let msg = AuthenticatedMessage::parse(message).unwrap();
    auth.verify_dkim(Parameters::new(&msg).with_txt_cache(&zone))
        .await
        .into_iter()
        .map(|o| o.result().clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_writes_a_private_key_and_returns_the_txt_record() {
    let dir = temp_dir("keygen");
    for (alg, k) in [(Algorithm::Ed25519, "ed25519"), (Algorithm::Rsa, "rsa")] {
        let path = dir.join(format!("{k}.pem"));
        let key = dkim::keygen("example.org", "s1", alg, &path).unwrap();
        assert_eq!(key.dns_name, "s1._domainkey.example.org");
        assert!(
            key.dns_txt.starts_with(&format!("v=DKIM1; k={k}; p=")),
            "{}",
            key.dns_txt
        );
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Never overwrites an existing key.
        assert!(dkim::keygen("example.org", "s1", alg, &path).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_mail_is_signed_and_verifies_against_the_generated_record() {
    for alg in [Algorithm::Ed25519, Algorithm::Rsa] {
        let mut c = config("dkimsign");
        let path = c.data_dir.join("dkim.pem");
        let key = dkim::keygen("example.org", "sel", alg, &path).unwrap();
        c.dkim = vec![DkimKeyConfig {
            domain: "example.org".into(),
            selector: "sel".into(),
            key: path,
        }];
        c.users = vec![UserConfig {
            name: "alice".into(),
            password_hash: cheap_hash("pw"),
            addresses: vec!["alice@example.org".into()],
        }];
        let gw = start(c).await;
        let (code, out) = swaks(
            gw.handle.submission.unwrap(),
            &[
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice",
                "--auth-password",
                "pw",
                "--from",
                "alice@example.org",
                "--to",
                "bob@elsewhere.test",
                "--header",
                "From: alice@example.org",
                "--header",
                "Subject: signed",
            ],
        )
        .await;
        assert_eq!(code, 0, "{out}");
        let m = maildir_messages(&gw.data_dir.join("maildir")).remove(0);
        assert!(m.contains("DKIM-Signature: "), "{m}");
        assert_eq!(gw.log.all()[0].reasons, vec!["dkim.signed"]);
        let results = verify(m.as_bytes(), &key.dns_name, &key.dns_txt).await;
        assert_eq!(results, vec![DkimResult::Pass], "{alg:?}: {m}");
        // Tampering breaks it: the test can fail.
        let tampered = m.replace("Subject: signed", "Subject: changed");
        assert_ne!(
            verify(tampered.as_bytes(), &key.dns_name, &key.dns_txt).await,
            vec![DkimResult::Pass]
        );
    }
}
