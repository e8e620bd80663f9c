//! RFC 6376 3.4.4 relaxed body canonicalisation of trailing lines that hold only whitespace.
//!
//! Relaxed canonicalisation removes the trailing whitespace of every line first and then ignores
//! empty lines at the end of the body, so a body ending in "text\r\n \t\r\n\r\n" canonicalises
//! like "text\r\n". mail-auth 0.13.3 keeps such lines (fixed upstream in 0.15.0), so a message
//! correctly signed with c=.../relaxed fails its body hash once a relay has added a line of
//! spaces at the end, or when a correct signer signed a body ending that way. These tests prove
//! the bug is in mail-auth 0.13.3 and that the engine works around it (`crates/auth/src/workarounds.rs`,
//! `relaxed_body_hash_fix`) for relaxed bodies only. They need no test data.
//!
//! The signatures are made with mail-auth's own signer on the body without those lines (where it
//! is right), then the lines are appended; the RFC 8032 7.1 test key keeps everything
//! deterministic.

use std::{net::IpAddr, time::Duration};

use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult,
    arc::ArcSealer,
    common::{
        crypto::{Ed25519Key, HashAlgorithm},
        headers::HeaderWriter,
    },
    dkim::{Canonicalization, DkimSigner, Signature},
};
use unspoof_engine::{
    Word,
    auth::{AuthInput, DkimCheck, authenticate},
    dns::{Dns, Zone},
};

/// RFC 8032 7.1 TEST 1 (also RFC 8463's example key).
const SEED: [u8; 32] = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
const PUBLIC: [u8; 32] = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
const KEY_RECORD: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

const HEADERS: &[u8] = b"From: Joe SixPack <joe@football.example.com>\r\n\
To: Suzie Q <suzie@shopping.example.net>\r\n\
Subject: Is dinner ready?\r\n\
Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n\
Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n\
\r\n";

const BODY: &[u8] = b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n";

/// Lines of spaces and tabs, and empty lines, as a relay or a signer's MUA may leave them.
const TRAILING_BLANK_LINES: &[u8] = b" \t\r\n\r\n   \r\n\t\r\n";

const fn hex<const N: usize>(s: &str) -> [u8; N] {
    let s = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not hex"),
    }
}

fn sign(selector: &str, body_canonicalization: Canonicalization, message: &[u8]) -> Signature {
    let key = Ed25519Key::from_seed_and_public_key(&SEED, &PUBLIC).expect("RFC 8032 key pair");
    DkimSigner::from_key(key)
        .domain("football.example.com")
        .selector(selector)
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(body_canonicalization)
        .sign(message)
        .expect("signs")
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// RFC 6376 3.4.4, written out: reduce whitespace runs to one SP, drop whitespace at line ends,
/// drop empty lines at the end, end a non-empty body with CRLF.
fn relaxed_body_by_the_rfc(body: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut rest = body;
    loop {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                lines.push(rest[..i].to_vec());
                rest = &rest[i + 2..];
            }
            None => {
                if !rest.is_empty() {
                    lines.push(rest.to_vec());
                }
                break;
            }
        }
    }
    let mut lines: Vec<Vec<u8>> = lines
        .into_iter()
        .map(|line| {
            let mut out = Vec::new();
            let mut in_wsp = false;
            for &b in &line {
                if b == b' ' || b == b'\t' {
                    in_wsp = true;
                } else {
                    if in_wsp {
                        out.push(b' ');
                    }
                    in_wsp = false;
                    out.push(b);
                }
            }
            out
        })
        .collect();
    while lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
        .iter()
        .flat_map(|l| [l.as_slice(), b"\r\n"].concat())
        .collect()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    HashAlgorithm::Sha256.hash(data).as_ref().to_vec()
}

/// The relaxed body hash as mail-auth computes it.
fn mail_auth_relaxed_hash(body: &[u8]) -> Vec<u8> {
    HashAlgorithm::Sha256
        .hash(Canonicalization::Relaxed.canonical_body(body, 0))
        .as_ref()
        .to_vec()
}

async fn dns() -> Dns {
    let mut zone = Zone::new();
    for selector in ["relaxed", "simple"] {
        zone.add_txt(
            &format!("{selector}._domainkey.football.example.com"),
            KEY_RECORD,
        )
        .unwrap();
    }
    Dns::zones(zone, Duration::from_millis(500))
        .await
        .expect("zone server starts")
}

async fn engine_dkim(raw: &[u8], dns: &Dns) -> Vec<DkimCheck> {
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let input = AuthInput {
        ip: Some(ip),
        helo: "",
        mail_from: "",
        host_domain: "receiver.example",
    };
    authenticate(raw, input, dns).await.dkim
}

fn result_of<'a>(checks: &'a [DkimCheck], selector: &str) -> &'a DkimCheck {
    checks
        .iter()
        .find(|c| c.selector == selector)
        .unwrap_or_else(|| panic!("no s={selector} signature in {checks:?}"))
}

#[tokio::test]
async fn relaxed_body_ignores_trailing_whitespace_only_lines() {
    let message = concat(&[HEADERS, BODY]);
    let signature = sign("relaxed", Canonicalization::Relaxed, &message);
    let padded_body = concat(&[BODY, TRAILING_BLANK_LINES]);
    let raw = concat(&[signature.to_header().as_bytes(), HEADERS, &padded_body]);

    // The body hash both ways, by RFC 6376 3.4.4: the signed body and the padded one are the
    // same relaxed body, with the hash the signature carries.
    assert_eq!(
        relaxed_body_by_the_rfc(&padded_body),
        relaxed_body_by_the_rfc(BODY)
    );
    assert_eq!(sha256(&relaxed_body_by_the_rfc(BODY)), signature.bh);
    assert_eq!(sha256(&relaxed_body_by_the_rfc(&padded_body)), signature.bh);
    assert_eq!(mail_auth_relaxed_hash(BODY), signature.bh);

    // mail-auth 0.13.3 canonicalises the padded body differently: the bug this works around.
    assert_ne!(
        mail_auth_relaxed_hash(&padded_body),
        signature.bh,
        "mail-auth now canonicalises trailing whitespace-only lines as RFC 6376 3.4.4 says \
         (fixed upstream in 0.15.0): remove the workaround `relaxed_body_hash_fix` in crates/auth/src/workarounds.rs \
         and turn this assertion around"
    );

    // So mail-auth's own verifier rejects this correctly signed message...
    let dns = dns().await;
    let parsed = AuthenticatedMessage::parse(&raw).expect("parses");
    let direct = dns
        .authenticator()
        .unwrap()
        .verify_dkim(dns.params(&parsed))
        .await;
    assert_eq!(direct.len(), 1);
    assert!(
        matches!(direct[0].result(), DkimResult::Neutral(mail_auth::Error::Dkim(e)) if e.to_string().contains("ody hash")),
        "mail-auth 0.13.3 alone should fail the body hash, got {:?}",
        direct[0].result()
    );

    // ... and the engine, with its workaround, accepts it.
    let checks = engine_dkim(&raw, &dns).await;
    assert_eq!(checks.len(), 1);
    assert_eq!(
        checks[0].result,
        Word::Pass,
        "relaxed body with trailing whitespace-only lines: {checks:?}"
    );

    // The workaround does not make a changed body pass.
    let tampered = concat(&[
        signature.to_header().as_bytes(),
        HEADERS,
        BODY,
        b"P.S. send money\r\n",
        TRAILING_BLANK_LINES,
    ]);
    let checks = engine_dkim(&tampered, &dns).await;
    assert_eq!(checks[0].result, Word::Fail, "{checks:?}");
}

#[tokio::test]
async fn simple_body_keeps_trailing_whitespace_only_lines() {
    // One message, two signatures over the same body: relaxed and simple. With whitespace-only
    // lines appended the relaxed one still verifies and the simple one must not (RFC 6376 3.4.3
    // ignores only empty lines at the end).
    let message = concat(&[HEADERS, BODY]);
    let relaxed = sign("relaxed", Canonicalization::Relaxed, &message);
    let simple = sign("simple", Canonicalization::Simple, &message);
    let dns = dns().await;

    let unpadded = concat(&[
        simple.to_header().as_bytes(),
        relaxed.to_header().as_bytes(),
        &message,
    ]);
    let checks = engine_dkim(&unpadded, &dns).await;
    assert_eq!(
        result_of(&checks, "simple").result,
        Word::Pass,
        "{checks:?}"
    );
    assert_eq!(
        result_of(&checks, "relaxed").result,
        Word::Pass,
        "{checks:?}"
    );

    let padded = concat(&[&unpadded, TRAILING_BLANK_LINES]);
    let checks = engine_dkim(&padded, &dns).await;
    assert_eq!(
        result_of(&checks, "relaxed").result,
        Word::Pass,
        "{checks:?}"
    );
    assert_eq!(
        result_of(&checks, "simple").result,
        Word::Fail,
        "{checks:?}"
    );

    // Empty lines alone are ignored by both canonicalisations (and were never the bug).
    let empty_lines = concat(&[&unpadded, b"\r\n\r\n"]);
    let checks = engine_dkim(&empty_lines, &dns).await;
    assert_eq!(
        result_of(&checks, "simple").result,
        Word::Pass,
        "{checks:?}"
    );
    assert_eq!(
        result_of(&checks, "relaxed").result,
        Word::Pass,
        "{checks:?}"
    );
}

#[tokio::test]
async fn relaxed_body_of_only_whitespace_lines_is_empty() {
    // A body made only of whitespace lines is the empty body under relaxed canonicalisation.
    let message = HEADERS.to_vec();
    let signature = sign("relaxed", Canonicalization::Relaxed, &message);
    assert_eq!(relaxed_body_by_the_rfc(TRAILING_BLANK_LINES), b"");
    assert_eq!(sha256(b""), signature.bh);
    // Also a last line of whitespace without its CRLF.
    for body in [TRAILING_BLANK_LINES, b" \t\r\n  ".as_slice()] {
        let raw = concat(&[signature.to_header().as_bytes(), HEADERS, body]);
        let checks = engine_dkim(&raw, &dns().await).await;
        assert_eq!(checks[0].result, Word::Pass, "body {body:?}: {checks:?}");
    }
}

#[tokio::test]
async fn arc_message_signature_relaxed_body_too() {
    // An ARC-Message-Signature canonicalises the body the same way (RFC 8617 4.1.2): a chain
    // sealed before a relay appended whitespace-only lines still validates.
    let message = concat(&[HEADERS, BODY]);
    let dns = dns().await;
    let auth = dns.authenticator().unwrap();
    let parsed = AuthenticatedMessage::parse(&message).expect("parses");
    let no_chain = auth.verify_arc(dns.params(&parsed)).await;
    let results = AuthenticationResults::new("relay.football.example.com");
    let key = Ed25519Key::from_seed_and_public_key(&SEED, &PUBLIC).expect("RFC 8032 key pair");
    let set = ArcSealer::from_key(key)
        .domain("football.example.com")
        .selector("relaxed")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .seal(&parsed, &results, &no_chain)
        .expect("seals");
    let sealed = concat(&[set.to_header().as_bytes(), &message]);
    let padded = concat(&[&sealed, TRAILING_BLANK_LINES]);

    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let input = AuthInput {
        ip: Some(ip),
        helo: "",
        mail_from: "",
        host_domain: "receiver.example",
    };
    assert_eq!(
        authenticate(&sealed, input, &dns).await.arc.result,
        Word::Pass
    );

    // mail-auth 0.13.3 alone breaks the chain on the padded message; the engine does not.
    let parsed = AuthenticatedMessage::parse(&padded).expect("parses");
    let direct = auth.verify_arc(dns.params(&parsed)).await;
    assert!(
        !matches!(direct.result(), DkimResult::Pass),
        "mail-auth validates the padded chain by itself now (fixed in 0.15.0?): remove \
         `relaxed_body_hash_fix` in crates/auth/src/workarounds.rs"
    );
    let arc = authenticate(&padded, input, &dns).await.arc;
    assert_eq!(arc.result, Word::Pass, "{arc:?}");
}
