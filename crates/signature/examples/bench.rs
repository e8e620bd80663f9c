//! Cost of verifying signed mail, against reading an unsigned message in the same run.
//!
//! `bash crates/engine/tests/signed/make.sh /tmp/kit && cargo run --release -p unspoof-signature --example bench -- /tmp/kit`
//! Prints messages per second for each form and the ratio to the unsigned baseline (the same
//! call on a message that is not signed: header parse and Content-Type only).

use std::time::Instant;

use unspoof_signature::{TrustStore, verify};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("kit folder"));
    let mut trust = TrustStore::default();
    for e in std::fs::read_dir(dir.join("keyring")).unwrap() {
        trust
            .openpgp
            .add(&std::fs::read(e.unwrap().path()).unwrap())
            .unwrap();
    }
    trust
        .ca
        .add_pem(&std::fs::read(dir.join("ca.pem")).unwrap())
        .unwrap();
    // The system's bundle too, as a site with the default configuration has it (the
    // X509_STORE is built once from it, in `add_pem`, not per message).
    if let Ok(pem) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") {
        trust.ca.add_pem(&pem).unwrap();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let from = [
        "alice@example.com".to_string(),
        "bob@example.org".to_string(),
    ];
    let crlf = |b: Vec<u8>| {
        String::from_utf8(b)
            .unwrap()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n")
            .into_bytes()
    };
    let unsigned = b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: x\r\nContent-Type: text/plain\r\n\r\nLet us meet on Tuesday.\r\n".to_vec();
    let rate = |raw: &[u8], n: u32| {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(verify(raw, &from, now, &trust));
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let base = rate(&unsigned, 20_000);
    println!("unsigned (baseline)        {base:>10.0} msg/s");
    for name in [
        "pgp-mime-rsa",
        "pgp-mime-ed25519",
        "pgp-inline-rsa",
        "smime-detached",
        "smime-opaque",
    ] {
        let raw = crlf(std::fs::read(dir.join("msg").join(format!("{name}.eml"))).unwrap());
        let r = rate(&raw, 300);
        println!(
            "{name:<26} {r:>10.0} msg/s  ({:.0}x the baseline's cost)",
            base / r
        );
    }
}
