//! Messages signed by the real tools (GnuPG, `openssl cms -sign`; made by
//! crates/engine/tests/signed/make.sh into a temporary folder), verified by this crate: each
//! good one valid and bound, each altered copy bad, each problem named.

use std::{path::PathBuf, process::Command};

use unspoof_signature::{Anchor, Form, Problem, SignatureCheck, SignedMail, TrustStore, verify};

struct Kit {
    dir: PathBuf,
    trust: TrustStore,
}

/// The reference time: the test CA and keys are made when the test runs, so "now" (the
/// expired key and certificate ended in 2021).
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn kit(test: &str) -> Kit {
    let dir = std::env::temp_dir().join(format!("unspoof-signature-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/signed/make.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("bash runs");
    assert!(
        st.status.success(),
        "make.sh: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let mut trust = TrustStore::default();
    for entry in std::fs::read_dir(dir.join("keyring")).unwrap() {
        let n = trust
            .openpgp
            .add(&std::fs::read(entry.unwrap().path()).unwrap())
            .unwrap();
        assert_eq!(n, 1);
    }
    assert_eq!(
        trust
            .ca
            .add_pem(&std::fs::read(dir.join("ca.pem")).unwrap())
            .unwrap(),
        1
    );
    Kit { dir, trust }
}

fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

impl Kit {
    fn raw(&self, name: &str) -> Vec<u8> {
        crlf(&std::fs::read(self.dir.join("msg").join(format!("{name}.eml"))).unwrap())
    }
    fn check(&self, name: &str, from: &str) -> SignedMail {
        self.check_raw(&self.raw(name), from)
    }
    fn check_raw(&self, raw: &[u8], from: &str) -> SignedMail {
        verify(raw, &[from.to_string()], now(), &self.trust).expect("a signed message")
    }
}

fn altered(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    assert!(text.contains("4711"));
    text.replacen("4711", "4712", 1).into_bytes()
}

#[test]
fn real_tools() {
    let k = kit("real");
    // Good ones: valid, bound to From, anchored, no problems.
    for (name, from, form, anchor) in [
        (
            "pgp-mime-rsa",
            "alice@example.com",
            Form::PgpMime,
            Anchor::Keyring,
        ),
        (
            "pgp-mime-ed25519",
            "bob@example.org",
            Form::PgpMime,
            Anchor::Keyring,
        ),
        (
            "pgp-inline-rsa",
            "alice@example.com",
            Form::PgpInline,
            Anchor::Keyring,
        ),
        (
            "pgp-inline-ed25519",
            "bob@example.org",
            Form::PgpInline,
            Anchor::Keyring,
        ),
        (
            "smime-detached",
            "alice@example.com",
            Form::SmimeMultipart,
            Anchor::CaChain,
        ),
        (
            "smime-opaque",
            "alice@example.com",
            Form::SmimeOpaque,
            Anchor::CaChain,
        ),
    ] {
        let s = k.check(name, from);
        assert_eq!(s.form, form, "{name}");
        assert_eq!(s.check, SignatureCheck::Valid, "{name}: {s:?}");
        assert!(s.bound, "{name}: {s:?}");
        assert_eq!(s.anchor, anchor, "{name}: {s:?}");
        assert!(s.problems.is_empty(), "{name}: {:?}", s.problems);
        // The altered copy fails (the opaque form carries its content inside the DER: altering
        // the base64 breaks it differently, below).
        if form != Form::SmimeOpaque {
            let bad = k.check_raw(&altered(&k.raw(name)), from);
            assert_eq!(bad.check, SignatureCheck::Bad, "{name} altered: {bad:?}");
        }
    }
    // The opaque form altered inside its base64: one base64 character of the content changed.
    let raw = k.raw("smime-opaque");
    let text = String::from_utf8(raw).unwrap();
    let body_at = text.find("\r\n\r\n").unwrap() + 4;
    let mut bytes = text.into_bytes();
    // Flip a character in the middle of the encapsulated content (after the certificates
    // would be too far; the content comes first in the DER: around byte 100 of base64).
    let i = body_at + 120;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let bad = k.check_raw(&bytes, "alice@example.com");
    assert_ne!(bad.check, SignatureCheck::Valid, "opaque altered: {bad:?}");

    // Valid, but somebody else's signature.
    for name in ["pgp-other-signer", "smime-other-signer"] {
        let s = k.check(name, "alice@example.com");
        assert_eq!(s.check, SignatureCheck::Valid, "{name}");
        assert!(!s.bound, "{name}: {:?}", s.identities);
    }
    // Named problems.
    let problems = |name: &str, from: &str| k.check(name, from).problems;
    assert!(matches!(
        problems("pgp-revoked", "carol@example.com")[..],
        [Problem::Revoked(_)]
    ));
    assert!(matches!(
        problems("pgp-expired", "dave@example.com")[..],
        [Problem::Expired(_)]
    ));
    assert!(matches!(
        problems("pgp-sha1", "alice@example.com")[..],
        [Problem::WeakHash(_)]
    ));
    assert!(matches!(
        problems("pgp-small-key", "eve@example.com")[..],
        [Problem::SmallKey(1024)]
    ));
    assert!(matches!(
        problems("smime-expired", "alice@example.com")[..],
        [Problem::Expired(_)]
    ));
    assert!(matches!(
        problems("smime-sha1", "alice@example.com")[..],
        [Problem::WeakHash(_)]
    ));

    // Without the trust material: OpenPGP unverifiable (no key), S/MIME valid but not anchored.
    let empty = TrustStore::default();
    let s = verify(
        &k.raw("pgp-mime-rsa"),
        &["alice@example.com".into()],
        now(),
        &empty,
    )
    .unwrap();
    assert_eq!(s.check, SignatureCheck::NoKey);
    let s = verify(
        &k.raw("smime-detached"),
        &["alice@example.com".into()],
        now(),
        &empty,
    )
    .unwrap();
    assert_eq!(s.check, SignatureCheck::Valid);
    assert_eq!(s.anchor, Anchor::Message);
    assert!(
        matches!(s.problems[..], [Problem::Chain(_)]),
        "{:?}",
        s.problems
    );

    let _ = std::fs::remove_dir_all(&k.dir);
}

/// The CA store is built once and shared; each check judges validity at its own reference
/// time: Alice's certificate (valid 2025 to 2035) is not yet valid in 2024, valid now, and
/// valid again now after the 2024 check used the same store.
#[test]
fn one_ca_store_judges_each_message_at_its_own_time() {
    let k = kit("time");
    let raw = k.raw("smime-detached");
    let at = |t: i64| verify(&raw, &["alice@example.com".into()], t, &k.trust).unwrap();
    let before = 1_704_067_200; // 2024-01-01
    for (t, anchor, expired) in [
        (now(), Anchor::CaChain, false),
        (before, Anchor::Message, true),
        (now(), Anchor::CaChain, false),
    ] {
        let s = at(t);
        assert_eq!(s.check, SignatureCheck::Valid, "{t}");
        assert_eq!(s.anchor, anchor, "{t}: {:?}", s.problems);
        assert_eq!(
            matches!(s.problems[..], [Problem::Expired(_)]),
            expired,
            "{t}: {:?}",
            s.problems
        );
    }
    // From several threads at once, on the one store.
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let at = &at;
                scope.spawn(move || at(if i % 2 == 0 { now() } else { before }).anchor)
            })
            .collect();
        let anchors: Vec<Anchor> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            anchors,
            [
                Anchor::CaChain,
                Anchor::Message,
                Anchor::CaChain,
                Anchor::Message
            ]
        );
    });
    let _ = std::fs::remove_dir_all(&k.dir);
}

/// A signed part inside multipart/mixed (a list, a forwarder): read, and its uncovered
/// surroundings named; alone in its wrapper it still covers all the message shows.
#[test]
fn signed_parts_inside_multipart_mixed() {
    let k = kit("nested");
    let from = "alice@example.com";
    for (name, form, part, unsigned) in [
        ("nested-pgp-alone", Form::PgpMime, Some("1"), &[][..]),
        (
            "nested-pgp-footer",
            Form::PgpMime,
            Some("1"),
            &["part 2 (text/plain)"][..],
        ),
        (
            "nested-smime-footer",
            Form::SmimeMultipart,
            Some("1"),
            &["part 2 (text/plain)"][..],
        ),
        (
            "nested-smime-opaque-footer",
            Form::SmimeOpaque,
            Some("1"),
            &["part 2 (text/plain)"][..],
        ),
        (
            "nested-smime-prepended",
            Form::SmimeMultipart,
            Some("2"),
            &["part 1 (text/plain)"][..],
        ),
        (
            "pgp-inline-surrounded",
            Form::PgpInline,
            None,
            &[
                "text before the signed block",
                "text after the signed block",
            ][..],
        ),
    ] {
        let s = k.check(name, from);
        assert_eq!(s.form, form, "{name}");
        assert_eq!(s.check, SignatureCheck::Valid, "{name}: {s:?}");
        assert!(s.bound, "{name}");
        assert_eq!(s.part.as_deref(), part, "{name}");
        assert_eq!(s.unsigned, unsigned, "{name}");
    }
    // The wrapped signed part altered: bad, as at the top.
    for name in ["nested-pgp-footer", "nested-smime-footer"] {
        let bad = k.check_raw(&altered(&k.raw(name)), from);
        assert_eq!(bad.check, SignatureCheck::Bad, "{name} altered: {bad:?}");
    }
    // The top-level forms cover all the message shows.
    for name in [
        "pgp-mime-rsa",
        "pgp-inline-rsa",
        "smime-detached",
        "smime-opaque",
    ] {
        let s = k.check(name, from);
        assert_eq!((s.part, s.unsigned), (None, Vec::<String>::new()), "{name}");
    }
    // A signed message attached as message/rfc822 is another message: not this one's signature.
    let inner = String::from_utf8(k.raw("pgp-mime-rsa")).unwrap();
    let attached = format!(
        "From: Mallory <mallory@example.net>\r\nTo: bob@example.net\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nsee below\r\n--m\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--m--\r\n"
    );
    assert!(
        verify(attached.as_bytes(), &[from.into()], now(), &k.trust).is_none(),
        "an attached message's signature"
    );
    let _ = std::fs::remove_dir_all(&k.dir);
}
