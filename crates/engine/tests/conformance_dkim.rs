//! DKIM test vectors run through `auth::authenticate`, each message with its keys served by our
//! zone server (messages with LF line ends are fed as CRLF):
//!
//! - `mail-auth-stalwart/dkim/00N.txt` (6): recorded DNS (`name TXT-value` lines), a blank line,
//!   the message. Expected, as upstream: the last signature passes. 001 is the RFC 8463
//!   Appendix A example (Ed25519 + RSA), where both must pass.
//! - `dkim-dkimpy/` (dkimpy's tests, keys as its test code serves them):
//!   `rfc6376.signed.msg` (Ed25519 s=brisbane and RSA s=test, both pass), `ed25519test2.msg`
//!   (signed by Exim's Ed25519 prototype, passes), `test2.message` (degenerate folding, passes;
//!   its gmail.com key is the one in dkimpy's test_dkim.py); the RSA signature s=test of
//!   `rfc6376.signed.msg` (made with `test.private`) passes with the records `test.txt` and
//!   `test2.txt` and must not pass with `badversion.txt` (v= not DKIM1) or `badk.txt` (unknown
//!   k=), the records dkimpy's own round trips use; and Ed25519 round trips in every
//!   canonicalisation: `ed25519test.msg` signed with `ed25519test.key`, `rfc6376.msg` signed
//!   with the RFC 8032 7.1 key. Those sign with mail-auth's signer: they test key formats, record
//!   parsing and verification, not an independent signer.
//! - `mailauth-fixtures/dkim-ec/` (RFC 8463 example again, DNS as JSON): both signatures pass.
//!
//! Case id: `<folder>/<file>` plus `#<what>` where one file gives several cases.

mod support;

use std::{net::IpAddr, path::Path, time::Duration};

use hickory_proto::rr::{Name, RData, Record, rdata::TXT};
use mail_auth::{
    common::{
        crypto::{Ed25519Key, SigningKey},
        headers::HeaderWriter,
    },
    dkim::{Canonicalization, DkimSigner},
};
use unspoof_engine::{
    Word,
    auth::{AuthInput, DkimCheck, authenticate},
    dns::{Dns, Zone},
};

const SUITE: &str = "dkim-vectors";

const DNS_TIMEOUT: Duration = Duration::from_millis(500);

const CANONICALISATIONS: [(Canonicalization, Canonicalization, &str); 4] = [
    (
        Canonicalization::Simple,
        Canonicalization::Simple,
        "simple/simple",
    ),
    (
        Canonicalization::Simple,
        Canonicalization::Relaxed,
        "simple/relaxed",
    ),
    (
        Canonicalization::Relaxed,
        Canonicalization::Simple,
        "relaxed/simple",
    ),
    (
        Canonicalization::Relaxed,
        Canonicalization::Relaxed,
        "relaxed/relaxed",
    ),
];

/// dkimpy's test_dkim.py serves this for 20120113._domainkey.gmail.com (test2.message).
const GMAIL_20120113: &str = "k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1Kd87/UeJjenpabgbFwh+eBCsSTrqmwIYYvywlbhbqoo2DymndFkbjOVIPIldNs/m40KF+yzMn1skyoxcTUGCQs8g3FgD2Ap3ZB5DekAo5wMmk4wimDO+U8QzI3SD07y2+07wlNWwIt8svnxgdxGkVbbhzY8i+RQ9DpSVpPbF7ykQxtKXkv/ahW3KjViiAH+ghvvIhkx4xYSIc9oSwVmAl5OctMEeWUwg8Istjqz8BZeTWbf41fbNhte7Y+YqZOwq1Sd0DbvYAD9NOZK9vlfuac0598HY+vtSBczUiKERHv1yRbcaQtZFh5wtiRrN04BLUTD21MycBX5jYchHjPY/wIDAQAB";

/// RFC 8463 Appendix A's Ed25519 key record (brisbane._domainkey.football.example.com).
const BRISBANE: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

#[tokio::test]
async fn dkim_test_vectors() {
    let mut suite = support::Suite::new(SUITE);
    let mut found = 0;
    if let Some(dir) = support::testdata(SUITE, "mail-auth-stalwart/dkim") {
        found += 1;
        stalwart(&mut suite, &dir).await;
    }
    if let Some(dir) = support::testdata(SUITE, "dkim-dkimpy") {
        found += 1;
        dkimpy(&mut suite, &dir).await;
    }
    if let Some(dir) = support::testdata(SUITE, "mailauth-fixtures/dkim-ec") {
        found += 1;
        dkim_ec(&mut suite, &dir).await;
    }
    if found == 0 {
        return;
    }
    suite.finish(None);
}

async fn stalwart(suite: &mut support::Suite, dir: &Path) {
    for n in 1..=6 {
        let file = format!("{n:03}.txt");
        let text = support::read(&dir.join(&file));
        let split = text
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap_or_else(|| panic!("{file}: no blank line after the DNS block"));
        let (dns_block, message) = (&text[..split], &text[split + 2..]);
        let mut zone = Zone::new();
        for line in String::from_utf8_lossy(dns_block).lines() {
            let (name, value) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("{file}: want `name TXT-value`: {line}"));
            zone.add_txt(name, value).expect("TXT record");
        }
        let checks = verify(&support::crlf(message), zone).await;
        let id = format!("mail-auth-stalwart/dkim/{file}");
        if n == 1 {
            // RFC 8463 Appendix A: both signatures verify.
            record_all_pass(suite, &id, &checks, 2);
        } else {
            let last = checks.last().map(|c| c.result);
            suite.record(
                id,
                last == Some(Word::Pass),
                show(&checks),
                "last signature pass",
            );
        }
    }
}

async fn dkimpy(suite: &mut support::Suite, dir: &Path) {
    let read = |f: &str| support::read(&dir.join(f));
    let text = |f: &str| support::read_text(&dir.join(f)).trim().to_string();

    // Signed messages.
    let mut zone = Zone::new();
    zone.add_txt("brisbane._domainkey.football.example.com", BRISBANE)
        .unwrap();
    zone.add_txt("test._domainkey.football.example.com", &text("test.txt"))
        .unwrap();
    let checks = verify(&support::crlf(&read("rfc6376.signed.msg")), zone).await;
    for selector in ["brisbane", "test"] {
        let check = checks.iter().find(|c| c.selector == selector);
        suite.record(
            format!("dkim-dkimpy/rfc6376.signed.msg#{selector}"),
            check.is_some_and(|c| c.result == Word::Pass),
            show(&checks),
            "pass",
        );
    }

    let mut zone = Zone::new();
    zone.add_txt("sed._domainkey.test.ex", &text("eximtest.dns"))
        .unwrap();
    let checks = verify(&support::crlf(&read("ed25519test2.msg")), zone).await;
    record_all_pass(suite, "dkim-dkimpy/ed25519test2.msg", &checks, 1);

    let mut zone = Zone::new();
    zone.add_txt("20120113._domainkey.gmail.com", GMAIL_20120113)
        .unwrap();
    let checks = verify(&support::crlf(&read("test2.message")), zone).await;
    record_all_pass(suite, "dkim-dkimpy/test2.message", &checks, 1);

    // The RSA key records: rfc6376.signed.msg's s=test signature was made with test.private
    // (ring, mail-auth's crypto, will not sign with a 1024-bit key), so each record dkimpy's
    // round trips serve is put at its selector instead.
    for (key_file, must_pass) in [
        ("test.txt", true),
        ("test2.txt", true),
        ("badversion.txt", false),
        ("badk.txt", false),
    ] {
        let mut zone = Zone::new();
        zone.add_txt("test._domainkey.football.example.com", &text(key_file))
            .unwrap();
        let checks = verify(&support::crlf(&read("rfc6376.signed.msg")), zone).await;
        let check = checks.iter().find(|c| c.selector == "test");
        let passed = check.is_some_and(|c| c.result == Word::Pass);
        suite.record(
            format!("dkim-dkimpy/rfc6376.signed.msg#test#{key_file}"),
            passed == must_pass,
            show(&checks),
            if must_pass {
                "pass[s=test]"
            } else {
                "not pass[s=test]"
            },
        );
    }

    // Round trips: Ed25519 (dkimpy's key, and RFC 8032 7.1 TEST 1 = RFC 8463's example key).
    for (msg_file, key_file, domain, selector, record) in [
        (
            "ed25519test.msg",
            "ed25519test.key",
            "example.net",
            "test",
            text("ed25519test.dns"),
        ),
        (
            "rfc6376.msg",
            "rfc8032_7_1.key",
            "football.example.com",
            "brisbane",
            BRISBANE.to_string(),
        ),
    ] {
        let seed = support::base64(&text(key_file));
        let public = support::base64(record.rsplit_once("p=").expect("p= in the key record").1);
        let message = support::crlf(&read(msg_file));
        for (ch, cb, canon) in CANONICALISATIONS {
            let key = Ed25519Key::from_seed_and_public_key(&seed, &public)
                .unwrap_or_else(|e| panic!("{key_file} does not match its record: {e}"));
            let signed = sign(key, domain, selector, ch, cb, &message);
            let mut zone = Zone::new();
            zone.add_txt(&format!("{selector}._domainkey.{domain}"), &record)
                .unwrap();
            let checks = verify(&signed, zone).await;
            record_all_pass(
                suite,
                &format!("dkim-dkimpy/{msg_file}#{canon}"),
                &checks,
                1,
            );
        }
    }
}

async fn dkim_ec(suite: &mut support::Suite, dir: &Path) {
    let json: serde_json::Value =
        serde_json::from_str(&support::read_text(&dir.join("dns.json"))).expect("dns.json");
    let mut zone = Zone::new();
    for (name, types) in json.as_object().expect("dns.json maps names") {
        for record in types["TXT"].as_array().into_iter().flatten() {
            let strings: Vec<String> = record
                .as_array()
                .expect("a TXT record is a list of strings")
                .iter()
                .map(|s| s.as_str().expect("string").to_string())
                .collect();
            let owner = Name::from_ascii(format!("{name}.")).expect("name");
            zone.add(Record::from_rdata(
                owner,
                3600,
                RData::TXT(TXT::new(strings)),
            ));
        }
    }
    let checks = verify(
        &support::crlf(&support::read(&dir.join("signed.eml"))),
        zone,
    )
    .await;
    record_all_pass(suite, "mailauth-fixtures/dkim-ec/signed.eml", &checks, 2);
}

/// Records one case that passes when there are exactly `n` signatures and all pass.
fn record_all_pass(suite: &mut support::Suite, id: &str, checks: &[DkimCheck], n: usize) {
    let ok = checks.len() == n && checks.iter().all(|c| c.result == Word::Pass);
    let want = vec!["pass"; n].join(",");
    suite.record(id, ok, show(checks), want);
}

/// `pass[s=brisbane],fail[s=test: why]`
fn show(checks: &[DkimCheck]) -> String {
    if checks.is_empty() {
        return "no signature".into();
    }
    checks
        .iter()
        .map(|c| match &c.reason {
            Some(r) => format!("{}[s={}: {r}]", c.result, c.selector),
            None => format!("{}[s={}]", c.result, c.selector),
        })
        .collect::<Vec<_>>()
        .join(",")
}

async fn verify(raw: &[u8], zone: Zone) -> Vec<DkimCheck> {
    let dns = Dns::zones(zone, DNS_TIMEOUT)
        .await
        .expect("zone server starts");
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    authenticate(
        raw,
        AuthInput {
            ip: Some(ip),
            helo: "",
            mail_from: "",
            host_domain: "receiver.example",
        },
        &dns,
    )
    .await
    .dkim
}

/// `message` with a DKIM-Signature from mail-auth's signer prepended.
fn sign<K: SigningKey>(
    key: K,
    domain: &str,
    selector: &str,
    ch: Canonicalization,
    cb: Canonicalization,
    message: &[u8],
) -> Vec<u8> {
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .header_canonicalization(ch)
        .body_canonicalization(cb)
        .sign(message)
        .expect("signs");
    let mut signed = signature.to_header().into_bytes();
    signed.extend_from_slice(message);
    signed
}
