//! `cargo bench -p unspoof-engine`: the engine's throughput on a warm DNS cache.
//!
//! A small self-written harness (`harness = false`): no timed assertions, it only prints.
//!
//! What it does:
//! 1. Builds a signed corpus in memory, shaped like the bench kit's (`../shared/bench`): the
//!    same 14 scenarios (RSA-2048, Ed25519, dual signatures, ESP, SPF only / softfail,
//!    tampered body and header, wrong and missing key, spoofed From, mailing list with ARC
//!    i=1 and a forwarder with ARC i=2), multipart messages of 4-20 KB with 2-4 Received
//!    headers, signed with mail-auth's own signers. The DNS data is a [`Zone`] served by
//!    [`Dns::zones`], so nothing leaves the loopback.
//! 2. Runs one cold pass (DNS answered over loopback), then warms the caches.
//! 3. Measures, single-threaded (a current-thread tokio runtime), `Engine::evaluate` and the
//!    pieces it is made of, so that a regression can be located: `Headers::parse`,
//!    `trace::build_trace`, `auth::authenticate`, mail-auth's DKIM/ARC/SPF verifiers on their
//!    own, and the JSON serialisation the CLI's batch mode pays per message.
//!
//! Figures are per message: µs of the bench thread's CPU time (`/proc/thread-self/schedstat`,
//! so other load on a shared machine does not inflate them much) and messages per CPU-second,
//! median of several rounds with the range; wall-clock msg/s beside them.
//!
//! Options (after `--`): a substring filter on bench names, `--quick` (fewer, shorter rounds),
//! `--list`, `--passes N`. Example: `cargo bench -p unspoof-engine -- evaluate`.
//!
//! `--passes N` runs each selected bench exactly N passes over the corpus (after one warm-up
//! pass) and prints no timing: it is for counting instructions, which other load on a shared
//! machine does not change. The measured passes run inside [`measured_passes`], so callgrind can
//! collect them alone:
//!
//! ```sh
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_passes*' \
//!     target/release/deps/engine-<hash> --bench --passes 5 'evaluate (warm, negatives'
//! ```

use std::{
    collections::BTreeMap,
    hint::black_box,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, MessageAuthenticator,
    arc::ArcSealer,
    common::{
        crypto::{Ed25519Key, RsaKey, Sha256},
        headers::HeaderWriter,
    },
    dkim::{Canonicalization, DkimSigner},
    dmarc::verify::DmarcParameters,
    spf::verify::SpfParameters,
};
use unspoof_engine::{
    Dns, Engine, Envelope, Headers, Policy, auth,
    dns::{CachedParameters, Zone},
    findings, message, trace,
};

/// The allocator the `unspoof` binary ships with (crates/cli/src/main.rs): what the engine
/// costs there, allocations included.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RSA_A: &str = include_str!("data/bench-rsa-a.pem");
const RSA_B: &str = include_str!("data/bench-rsa-b.pem");

/// Where our MX is; the topmost Received header names it.
const MX: &str = "mx.recvbench.com";

/// The policy `scripts/bench-gateway.sh` gives the gateway.
const GATEWAY_POLICY: &str =
    "hostname = \"gw.recvbench.com\"\nprotected_domains = [\"recvbench.com\"]\n";

// ------------------------------------------------------------------------------------------
// Keys and DNS data
// ------------------------------------------------------------------------------------------

enum Key {
    /// Index into the shipped RSA PEMs.
    Rsa(&'static str),
    /// PKCS#8 of a key generated for this run.
    Ed(Vec<u8>),
}

#[allow(deprecated)] // from_rsa_pem: the PKCS#1 PEM is what `openssl genrsa -traditional` writes
fn rsa(pem: &str) -> RsaKey<Sha256> {
    RsaKey::<Sha256>::from_rsa_pem(pem).expect("bench RSA key")
}

fn ed(pkcs8: &[u8]) -> Ed25519Key {
    Ed25519Key::from_pkcs8_der(pkcs8).expect("bench Ed25519 key")
}

/// The DKIM `p=` value of a key: SubjectPublicKeyInfo for RSA (RFC 6376 3.6.1), the raw key
/// for Ed25519 (RFC 8463 4.2).
fn public_b64(key: &Key) -> (String, &'static str) {
    match key {
        Key::Rsa(pem) => (b64(&spki_rsa(&rsa(pem).public_key())), "rsa"),
        Key::Ed(pkcs8) => (b64(&ed(pkcs8).public_key()), "ed25519"),
    }
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo.
fn spki_rsa(pkcs1: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = body.len();
        if n < 128 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(body);
        out
    }
    // AlgorithmIdentifier { rsaEncryption, NULL }
    let alg = tlv(
        0x30,
        &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        ],
    );
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut body = alg;
    body.extend(tlv(0x03, &bits));
    tlv(0x30, &body)
}

/// One-line padded base64 (the message layer's codec).
fn b64(data: &[u8]) -> String {
    unspoof_engine::message::codec::base64_line(data)
}

struct Keys {
    ed_echo: Vec<u8>,
    ed_foxtrot: Vec<u8>,
}

impl Keys {
    fn new() -> Self {
        Keys {
            ed_echo: Ed25519Key::generate_pkcs8().expect("ed25519 keygen"),
            ed_foxtrot: Ed25519Key::generate_pkcs8().expect("ed25519 keygen"),
        }
    }
}

/// The DNS data of the corpus: the kit's domains, records and reverse zones.
fn build_zone(keys: &Keys) -> Zone {
    let mut z = Zone::new();
    let txt: Vec<(&str, String)> = vec![
        ("alphabench.com", "v=spf1 ip4:192.0.2.0/25 -all".into()),
        (
            "_dmarc.alphabench.com",
            "v=DMARC1; p=reject; rua=mailto:dmarc@alphabench.com".into(),
        ),
        (
            "bravobench.com",
            "v=spf1 ip4:198.51.100.10 a:smtp.bravobench.com -all".into(),
        ),
        (
            "_dmarc.bravobench.com",
            "v=DMARC1; p=quarantine; pct=100".into(),
        ),
        ("charliebench.com", "v=spf1 -all".into()),
        (
            "_dmarc.charliebench.com",
            "v=DMARC1; p=reject; sp=quarantine".into(),
        ),
        (
            "bounce.charliebench.com",
            "v=spf1 mx:charliebench.com -all".into(),
        ),
        (
            "deltabench.com",
            "v=spf1 include:_spf.espbench.com ~all".into(),
        ),
        ("_dmarc.deltabench.com", "v=DMARC1; p=none".into()),
        (
            "espbench.com",
            "v=spf1 include:_spf.espbench.com -all".into(),
        ),
        ("_dmarc.espbench.com", "v=DMARC1; p=none".into()),
        ("_spf.espbench.com", "v=spf1 ip4:203.0.113.0/26 -all".into()),
        (
            "echobench.com",
            "v=spf1 ip6:2001:db8:e::/48 ip4:192.0.2.200 -all".into(),
        ),
        ("_dmarc.echobench.com", "v=DMARC1; p=reject".into()),
        (
            "foxtrotbench.com",
            "v=spf1 ip4:198.51.100.128/25 -all".into(),
        ),
        (
            "_dmarc.foxtrotbench.com",
            "v=DMARC1; p=reject; adkim=s; aspf=s".into(),
        ),
        ("evilbench.com", "v=spf1 ip4:203.0.113.66 -all".into()),
        ("fwdbench.com", "v=spf1 ip4:198.51.100.77 -all".into()),
        ("_dmarc.fwdbench.com", "v=DMARC1; p=none".into()),
        ("fwd2bench.com", "v=spf1 ip4:203.0.113.150 -all".into()),
        ("_dmarc.fwd2bench.com", "v=DMARC1; p=none".into()),
        ("recvbench.com", "v=spf1 -all".into()),
        ("_dmarc.recvbench.com", "v=DMARC1; p=none".into()),
    ];
    for (name, text) in txt {
        z.add_txt(name, &text).expect("txt");
    }
    let dkim: Vec<(&str, Key)> = vec![
        ("s2048._domainkey.alphabench.com", Key::Rsa(RSA_A)),
        ("mail2024._domainkey.bravobench.com", Key::Rsa(RSA_A)),
        ("k1._domainkey.charliebench.com", Key::Rsa(RSA_A)),
        ("dl1._domainkey.deltabench.com", Key::Rsa(RSA_A)),
        ("esp1._domainkey.espbench.com", Key::Rsa(RSA_A)),
        ("ed._domainkey.echobench.com", Key::Ed(keys.ed_echo.clone())),
        ("rsa._domainkey.echobench.com", Key::Rsa(RSA_A)),
        (
            "ed1._domainkey.foxtrotbench.com",
            Key::Ed(keys.ed_foxtrot.clone()),
        ),
        ("x._domainkey.evilbench.com", Key::Rsa(RSA_B)),
        ("list._domainkey.fwdbench.com", Key::Rsa(RSA_A)),
        ("arc._domainkey.fwd2bench.com", Key::Rsa(RSA_B)),
    ];
    for (name, key) in &dkim {
        let (p, k) = public_b64(key);
        z.add_txt(name, &format!("v=DKIM1; k={k}; p={p}"))
            .expect("dkim txt");
    }
    let mut master = String::new();
    let hosts = [
        ("smtp.bravobench.com", "198.51.100.11"),
        ("mx1.charliebench.com", "192.0.2.150"),
        (MX, "192.0.2.250"),
    ];
    for (h, ip) in hosts {
        master.push_str(&format!("{h}. 3600 IN A {ip}\n"));
    }
    master.push_str("charliebench.com. 3600 IN MX 10 mx1.charliebench.com.\n");
    for s in SENDERS {
        master.push_str(&format!(
            "{}. 3600 IN PTR {}.\n",
            reverse_name(s.ip),
            s.helo
        ));
        match s.ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => master.push_str(&format!("{}. 3600 IN A {}\n", s.helo, s.ip)),
            _ => master.push_str(&format!("{}. 3600 IN AAAA {}\n", s.helo, s.ip)),
        }
    }
    z.load_text(&master, None).expect("zone text");
    z
}

fn reverse_name(ip: &str) -> String {
    match ip.parse::<IpAddr>().expect("ip") {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

// ------------------------------------------------------------------------------------------
// Corpus
// ------------------------------------------------------------------------------------------

/// A sending host: where a scenario's message comes from.
struct Sender {
    ip: &'static str,
    helo: &'static str,
}

const SENDERS: &[Sender] = &[
    Sender {
        ip: "192.0.2.10",
        helo: "out1.alphabench.com",
    },
    Sender {
        ip: "198.51.100.10",
        helo: "mail.bravobench.com",
    },
    Sender {
        ip: "192.0.2.150",
        helo: "mx1.charliebench.com",
    },
    Sender {
        ip: "203.0.113.20",
        helo: "out2.espbench.com",
    },
    Sender {
        ip: "2001:db8:e::25",
        helo: "out6.echobench.com",
    },
    Sender {
        ip: "192.0.2.200",
        helo: "out4.echobench.com",
    },
    Sender {
        ip: "198.51.100.130",
        helo: "out.foxtrotbench.com",
    },
    Sender {
        ip: "203.0.113.66",
        helo: "mail.evilbench.com",
    },
    Sender {
        ip: "203.0.113.99",
        helo: "dyn-99.example-isp.net",
    },
    Sender {
        ip: "198.51.100.77",
        helo: "list.fwdbench.com",
    },
    Sender {
        ip: "203.0.113.150",
        helo: "relay.fwd2bench.com",
    },
];

fn sender(helo: &str) -> &'static Sender {
    SENDERS.iter().find(|s| s.helo == helo).expect("sender")
}

/// What the kit's manifest would expect for a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    dkim: &'static str,
    dkim_pass_d: Vec<&'static str>,
    spf: &'static str,
    dmarc: &'static str,
    arc: &'static str,
}

struct Msg {
    scenario: &'static str,
    raw: Vec<u8>,
    envelope: Envelope,
    expect: Expect,
}

/// xorshift64*: deterministic filler.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "invoice",
    "meeting",
    "quarterly",
    "report",
    "attached",
    "please",
    "review",
    "the",
    "numbers",
    "before",
    "friday",
    "regards",
    "team",
    "project",
    "update",
    "schedule",
    "budget",
    "customer",
    "delivery",
    "contract",
    "signed",
    "thanks",
    "and",
    "for",
    "your",
    "patience",
    "we",
    "will",
    "follow",
    "up",
    "shortly",
    "with",
    "details",
];

fn words(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 80);
    let mut line = 0;
    while s.len() < bytes {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        s.push_str(w);
        line += w.len() + 1;
        if line > 70 {
            s.push_str("\r\n");
            line = 0;
        } else {
            s.push(' ');
        }
    }
    s.push_str("\r\n");
    s
}

/// An unsigned multipart message (text + HTML, sometimes a base64 attachment), CRLF.
fn compose(rng: &mut Rng, n: usize, from: &str, subject: &str, msgid_domain: &str) -> String {
    let len = 1500 + rng.below(3000) as usize;
    let text = words(rng, len);
    let html = format!(
        "<html><body><p>{}</p></body></html>\r\n",
        text.replace("\r\n", "<br>\r\n")
    );
    let boundary = format!("=_bench_{n:06}");
    let mut body = format!(
        "--{boundary}\r\nContent-Type: multipart/alternative; boundary=\"alt{boundary}\"\r\n\r\n\
         --alt{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --alt{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n\
         --alt{boundary}--\r\n"
    );
    if n.is_multiple_of(2) {
        let len = 1000 + rng.below(10_000) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let enc = b64(&data);
        body.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/pdf; name=\"doc{n}.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"doc{n}.pdf\"\r\n\r\n"
        ));
        for line in enc.as_bytes().chunks(76) {
            body.push_str(std::str::from_utf8(line).expect("ascii"));
            body.push_str("\r\n");
        }
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    format!(
        "From: Sender {n} <{from}>\r\n\
         To: User {n} <user{n}@recvbench.com>\r\n\
         Subject: {subject}\r\n\
         Date: Thu, 20 Nov 2025 10:{:02}:{:02} +0000\r\n\
         Message-ID: <bench.{n}@{msgid_domain}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n{body}",
        n % 60,
        (n * 7) % 60
    )
}

const SIGNED: [&str; 7] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
];

/// A DKIM-Signature header for `msg`.
fn dkim_sign(
    msg: &str,
    key: &Key,
    d: &str,
    s: &str,
    c: (Canonicalization, Canonicalization),
) -> String {
    let sig = match key {
        Key::Rsa(pem) => DkimSigner::from_key(rsa(pem))
            .domain(d)
            .selector(s)
            .headers(SIGNED)
            .header_canonicalization(c.0)
            .body_canonicalization(c.1)
            .sign(msg.as_bytes()),
        Key::Ed(pkcs8) => DkimSigner::from_key(ed(pkcs8))
            .domain(d)
            .selector(s)
            .headers(SIGNED)
            .header_canonicalization(c.0)
            .body_canonicalization(c.1)
            .sign(msg.as_bytes()),
    };
    sig.expect("dkim sign").to_header()
}

/// Seals `msg` as `d`/`s` after verifying it the way a relay would (ARC-Seal, -Message-Signature
/// and -Authentication-Results prepended).
async fn arc_seal(msg: &str, dns: &Dns, d: &str, s: &str, pem: &str, ip: &str) -> String {
    let auth: &MessageAuthenticator = dns.authenticator().expect("dns");
    let parsed = AuthenticatedMessage::parse(msg.as_bytes()).expect("parse for sealing");
    let p: CachedParameters<'_, _> = dns.params(&parsed);
    let dkim = auth.verify_dkim(p).await;
    let arc = auth.verify_arc(dns.params(&parsed)).await;
    let results = AuthenticationResults::new(d)
        .with_dkim_results(&dkim, "sender")
        .with_arc_result(&arc, ip.parse().expect("ip"));
    let set = ArcSealer::from_key(rsa(pem))
        .domain(d)
        .selector(s)
        .headers([
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "DKIM-Signature",
        ])
        .seal(&parsed, &results, &arc)
        .expect("arc seal");
    format!("{}{msg}", set.to_header())
}

/// 2-4 Received headers, topmost ours (from the envelope), the rest inside the sender.
fn received(rng: &mut Rng, n: usize, s: &Sender, rcpt: &str) -> String {
    let mut out = format!(
        "Received: from {h} ({h} [{ip}])\r\n\tby {MX} with ESMTPS id B{n:06}\r\n\tfor <{rcpt}>; \
         Thu, 20 Nov 2025 10:{:02}:{:02} +0000\r\n",
        n % 60,
        (n * 7 + 2) % 60,
        h = s.helo,
        ip = s.ip,
    );
    let inner = 1 + rng.below(3) as usize;
    for i in 0..inner {
        out.push_str(&format!(
            "Received: from int{i}.{dom} (int{i}.{dom} [10.0.{i}.{}])\r\n\tby {h} with ESMTP id \
             I{n:06}{i}; Thu, 20 Nov 2025 10:{:02}:{:02} +0000\r\n",
            1 + n % 200,
            n % 60,
            (n * 7) % 60,
            dom = s.helo.split_once('.').map(|x| x.1).unwrap_or(s.helo),
            h = s.helo,
        ));
    }
    out
}

const RR: (Canonicalization, Canonicalization) =
    (Canonicalization::Relaxed, Canonicalization::Relaxed);
const RS: (Canonicalization, Canonicalization) =
    (Canonicalization::Relaxed, Canonicalization::Simple);
const SS: (Canonicalization, Canonicalization) =
    (Canonicalization::Simple, Canonicalization::Simple);

fn expect(
    dkim: &'static str,
    dkim_pass_d: &[&'static str],
    spf: &'static str,
    dmarc: &'static str,
    arc: &'static str,
) -> Expect {
    Expect {
        dkim,
        dkim_pass_d: dkim_pass_d.to_vec(),
        spf,
        dmarc,
        arc,
    }
}

/// The kit's 16 scenarios (gen.py) with its weights: messages per scenario in a full corpus.
const SCENARIOS: [(&str, usize); 16] = [
    ("good_rsa", 24),
    ("good_dual", 10),
    ("good_ed25519", 5),
    ("relaxed_subdomain", 8),
    ("esp_unaligned", 6),
    ("esp_aligned", 4),
    ("spf_only", 4),
    ("softfail", 3),
    ("tampered_body", 6),
    ("tampered_header", 4),
    ("wrong_key", 5),
    ("missing_key", 2),
    ("spoofed_from", 8),
    ("spoofed_unsigned", 3),
    ("arc_list", 5),
    ("arc_2hop", 3),
];

/// One message of scenario `sc` (index `n` varies sizes, canonicalisations and hosts).
async fn make(sc: &str, n: usize, keys: &Keys, dns: &Dns) -> Msg {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1).wrapping_mul(0x1000_0000_01b3));
    let canon = [RR, RR, RR, RS, SS][n % 5];
    let rcpt = format!("user{n}@recvbench.com");
    let ra = Key::Rsa(RSA_A);
    let (helo, mailfrom, from, msg, exp) = match sc {
        "good_rsa" => {
            let (dom, sel, helo) = if n.is_multiple_of(2) {
                ("alphabench.com", "s2048", "out1.alphabench.com")
            } else {
                ("bravobench.com", "mail2024", "mail.bravobench.com")
            };
            let from = format!("ceo@{dom}");
            let m = compose(&mut rng, n, &from, "Quarterly numbers", dom);
            let sig = dkim_sign(&m, &ra, dom, sel, canon);
            (
                helo,
                format!("bounce@{dom}"),
                from,
                sig + &m,
                expect(
                    "pass",
                    &[if n.is_multiple_of(2) {
                        "alphabench.com"
                    } else {
                        "bravobench.com"
                    }],
                    "pass",
                    "pass",
                    "none",
                ),
            )
        }
        "good_dual" => {
            let helo = if n.is_multiple_of(2) {
                "out6.echobench.com"
            } else {
                "out4.echobench.com"
            };
            let from = "news@echobench.com".to_string();
            let m = compose(&mut rng, n, &from, "Newsletter", "echobench.com");
            let s1 = dkim_sign(
                &m,
                &Key::Ed(keys.ed_echo.clone()),
                "echobench.com",
                "ed",
                canon,
            );
            let s2 = dkim_sign(&m, &ra, "echobench.com", "rsa", canon);
            (
                helo,
                "bounce@echobench.com".into(),
                from,
                s1 + &s2 + &m,
                expect("pass", &["echobench.com"], "pass", "pass", "none"),
            )
        }
        "good_ed25519" => {
            let from = "ops@foxtrotbench.com".to_string();
            let m = compose(&mut rng, n, &from, "Ops notice", "foxtrotbench.com");
            let s = dkim_sign(
                &m,
                &Key::Ed(keys.ed_foxtrot.clone()),
                "foxtrotbench.com",
                "ed1",
                canon,
            );
            (
                "out.foxtrotbench.com",
                "ops@foxtrotbench.com".into(),
                from,
                s + &m,
                expect("pass", &["foxtrotbench.com"], "pass", "pass", "none"),
            )
        }
        "relaxed_subdomain" => {
            let from = "newsletter@news.charliebench.com".to_string();
            let m = compose(&mut rng, n, &from, "Your bill", "charliebench.com");
            let s = dkim_sign(&m, &ra, "charliebench.com", "k1", canon);
            (
                "mx1.charliebench.com",
                format!("b{n}@bounce.charliebench.com"),
                from,
                s + &m,
                expect("pass", &["charliebench.com"], "pass", "pass", "none"),
            )
        }
        "esp_unaligned" => {
            let from = "promo@deltabench.com".to_string();
            let m = compose(&mut rng, n, &from, "Offer", "espbench.com");
            let s = dkim_sign(&m, &ra, "espbench.com", "esp1", canon);
            (
                "out2.espbench.com",
                format!("bnc-{n}@espbench.com"),
                from,
                s + &m,
                expect("pass", &["espbench.com"], "pass", "fail", "none"),
            )
        }
        "esp_aligned" => {
            let from = "promo@deltabench.com".to_string();
            let m = compose(&mut rng, n, &from, "Offer", "espbench.com");
            let s1 = dkim_sign(&m, &ra, "deltabench.com", "dl1", canon);
            let s2 = dkim_sign(&m, &ra, "espbench.com", "esp1", canon);
            (
                "out2.espbench.com",
                format!("bnc-{n}@espbench.com"),
                from,
                s1 + &s2 + &m,
                expect(
                    "pass",
                    &["deltabench.com", "espbench.com"],
                    "pass",
                    "pass",
                    "none",
                ),
            )
        }
        "spf_only" => {
            let from = "alerts@alphabench.com".to_string();
            let m = compose(&mut rng, n, &from, "Alert", "alphabench.com");
            (
                "out1.alphabench.com",
                "alerts@alphabench.com".into(),
                from,
                m,
                expect("none", &[], "pass", "pass", "none"),
            )
        }
        "softfail" => {
            let from = "promo@deltabench.com".to_string();
            let m = compose(&mut rng, n, &from, "Offer", "deltabench.com");
            (
                "dyn-99.example-isp.net",
                "promo@deltabench.com".into(),
                from,
                m,
                expect("none", &[], "softfail", "fail", "none"),
            )
        }
        "tampered_body" => {
            let from = "ceo@alphabench.com".to_string();
            let m = compose(&mut rng, n, &from, "Wire transfer", "alphabench.com");
            let s = dkim_sign(&m, &ra, "alphabench.com", "s2048", canon);
            let m = m.replacen("please", "PLEASE", 1) + "P.S. new bank account: 12345\r\n";
            (
                "out1.alphabench.com",
                "ceo@alphabench.com".into(),
                from,
                s + &m,
                expect("fail", &[], "pass", "pass", "none"),
            )
        }
        "tampered_header" => {
            let from = "ceo@bravobench.com".to_string();
            let m = compose(&mut rng, n, &from, "Lunch", "bravobench.com");
            let s = dkim_sign(&m, &ra, "bravobench.com", "mail2024", canon);
            let m = m.replacen("Subject: Lunch", "Subject: Urgent wire transfer", 1);
            (
                "mail.bravobench.com",
                "ceo@bravobench.com".into(),
                from,
                s + &m,
                expect("fail", &[], "pass", "pass", "none"),
            )
        }
        "wrong_key" => {
            let from = "ceo@alphabench.com".to_string();
            let m = compose(&mut rng, n, &from, "Invoice", "alphabench.com");
            let s = dkim_sign(&m, &Key::Rsa(RSA_B), "alphabench.com", "s2048", canon);
            (
                "mail.evilbench.com",
                "x@evilbench.com".into(),
                from,
                s + &m,
                expect("fail", &[], "pass", "fail", "none"),
            )
        }
        "missing_key" => {
            let from = "ceo@alphabench.com".to_string();
            let m = compose(&mut rng, n, &from, "Invoice", "alphabench.com");
            let s = dkim_sign(&m, &ra, "alphabench.com", "gone2019", canon);
            (
                "mail.evilbench.com",
                "x@evilbench.com".into(),
                from,
                s + &m,
                expect("permerror", &[], "pass", "fail", "none"),
            )
        }
        "spoofed_from" => {
            let from = "ceo@alphabench.com".to_string();
            let m = compose(&mut rng, n, &from, "Gift cards", "evilbench.com");
            let s = dkim_sign(&m, &Key::Rsa(RSA_B), "evilbench.com", "x", canon);
            (
                "mail.evilbench.com",
                "x@evilbench.com".into(),
                from,
                s + &m,
                expect("pass", &["evilbench.com"], "pass", "fail", "none"),
            )
        }
        "spoofed_unsigned" => {
            let from = "ceo@alphabench.com".to_string();
            let m = compose(&mut rng, n, &from, "Gift cards", "alphabench.com");
            (
                "dyn-99.example-isp.net",
                "ceo@alphabench.com".into(),
                from,
                m,
                expect("none", &[], "fail", "fail", "none"),
            )
        }
        "arc_list" | "arc_2hop" => {
            let from = "member@bravobench.com".to_string();
            let m = compose(&mut rng, n, &from, "Topic", "bravobench.com");
            let orig = dkim_sign(&m, &ra, "bravobench.com", "mail2024", canon);
            // The list tags the subject, appends a footer, seals ARC i=1 and re-signs.
            let listed = (orig + &m).replacen("Subject: Topic", "Subject: [bench-list] Topic", 1)
                + "--\r\nbench-list mailing list\r\n";
            let list_sig = dkim_sign(&listed, &ra, "fwdbench.com", "list", RR);
            let listed = list_sig + &listed;
            let sealed =
                arc_seal(&listed, dns, "fwdbench.com", "list", RSA_A, "198.51.100.10").await;
            if sc == "arc_list" {
                (
                    "list.fwdbench.com",
                    "list-bounces@fwdbench.com".into(),
                    from,
                    sealed,
                    expect("pass", &["fwdbench.com"], "pass", "fail", "pass"),
                )
            } else {
                let fwd =
                    arc_seal(&sealed, dns, "fwd2bench.com", "arc", RSA_B, "198.51.100.77").await;
                (
                    "relay.fwd2bench.com",
                    format!("SRS0=x{n}=list-bounces@fwd2bench.com"),
                    from,
                    fwd,
                    expect("pass", &["fwdbench.com"], "pass", "fail", "pass"),
                )
            }
        }
        other => panic!("unknown scenario {other}"),
    };
    let _ = from;
    let s = sender(helo);
    let raw = received(&mut rng, n, s, &rcpt) + &msg;
    Msg {
        scenario: SCENARIOS.iter().find(|x| x.0 == sc).expect("scenario").0,
        raw: raw.into_bytes(),
        envelope: Envelope {
            ip: Some(s.ip.parse().expect("ip")),
            helo: Some(helo.to_string()),
            mail_from: Some(mailfrom),
            rcpt: vec![rcpt],
            ..Default::default()
        },
        expect: exp,
    }
}

// ------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------

/// CPU time of this thread, in ns (first field of schedstat: time on CPU).
fn thread_cpu() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Opts {
    filter: Vec<String>,
    quick: bool,
    list: bool,
    /// Run each bench exactly this many passes, untimed (for callgrind).
    passes: Option<usize>,
}

struct Row {
    name: String,
    cpu_us: f64,
    cpu_min: f64,
    cpu_max: f64,
    wall_msgs: f64,
}

struct Harness {
    opts: Opts,
    rows: Vec<Row>,
}

impl Harness {
    fn wanted(&self, name: &str) -> bool {
        self.opts.filter.is_empty() || self.opts.filter.iter().any(|f| name.contains(f.as_str()))
    }

    /// Runs `pass` (which handles `per_pass` messages) in rounds and prints per-message figures.
    fn bench(&mut self, name: &str, per_pass: usize, mut pass: impl FnMut()) {
        if !self.wanted(name) {
            return;
        }
        if self.opts.list {
            println!("{name}");
            return;
        }
        if let Some(passes) = self.opts.passes {
            pass();
            measured_passes(passes, &mut pass);
            println!("{name}: {passes} passes of {per_pass} messages (untimed)");
            return;
        }
        let (rounds, round_time) = if self.opts.quick {
            (3, Duration::from_millis(150))
        } else {
            (7, Duration::from_millis(400))
        };
        // Warm-up: caches, allocator, branch predictors.
        let t = Instant::now();
        while t.elapsed() < round_time / 2 {
            pass();
        }
        let mut cpu_per_msg = Vec::new();
        let mut wall_per_msg = Vec::new();
        for _ in 0..rounds {
            let (c0, t0) = (thread_cpu(), Instant::now());
            let mut passes = 0usize;
            while t0.elapsed() < round_time {
                pass();
                passes += 1;
            }
            let wall = t0.elapsed().as_nanos() as f64;
            let msgs = (passes * per_pass) as f64;
            let cpu = match (c0, thread_cpu()) {
                (Some(a), Some(b)) => (b - a) as f64,
                _ => wall,
            };
            cpu_per_msg.push(cpu / msgs / 1000.0);
            wall_per_msg.push(wall / msgs / 1000.0);
        }
        cpu_per_msg.sort_by(f64::total_cmp);
        wall_per_msg.sort_by(f64::total_cmp);
        let med = cpu_per_msg[cpu_per_msg.len() / 2];
        let row = Row {
            name: name.to_string(),
            cpu_us: med,
            cpu_min: cpu_per_msg[0],
            cpu_max: cpu_per_msg[cpu_per_msg.len() - 1],
            wall_msgs: 1e6 / wall_per_msg[wall_per_msg.len() / 2],
        };
        println!(
            "{:44} {:>7.1} µs/msg {:>11.0} msg/CPU-s   [{:.1}-{:.1} µs]   wall {:>9.0} msg/s",
            row.name,
            row.cpu_us,
            1e6 / row.cpu_us,
            row.cpu_min,
            row.cpu_max,
            row.wall_msgs
        );
        self.rows.push(row);
    }
}

/// Runs `pass` `n` times. Never inlined, so that `valgrind --tool=callgrind
/// --toggle-collect='*measured_passes*'` counts exactly these passes.
#[inline(never)]
fn measured_passes(n: usize, pass: &mut impl FnMut()) {
    for _ in 0..n {
        pass();
    }
}

/// A DNS server on loopback answering from the same [`Zone`] and counting the questions, so
/// that the bench can show which names a warm engine still asks for. With `soa`, negative
/// answers (NXDOMAIN, NODATA) carry an SOA in the authority section as a real authoritative
/// server's do (knotd in the kit), which lets the resolver cache them (RFC 2308 5).
async fn counting_server(
    zone: Zone,
    soa: bool,
) -> (
    std::net::SocketAddr,
    Arc<AtomicU64>,
    Arc<Mutex<BTreeMap<String, u64>>>,
) {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = udp.local_addr().expect("addr");
    let count = Arc::new(AtomicU64::new(0));
    let names = Arc::new(Mutex::new(BTreeMap::new()));
    let (c, nm) = (count.clone(), names.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, peer)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            c.fetch_add(1, Ordering::Relaxed);
            if let Ok(m) = hickory_proto::op::Message::from_vec(&buf[..len])
                && let Some(q) = m.queries.first()
            {
                *nm.lock()
                    .expect("names")
                    .entry(format!("{} {}", q.query_type, q.name))
                    .or_insert(0) += 1;
            }
            if let Some(mut reply) = zone.respond(&buf[..len]) {
                if soa {
                    reply = with_soa(reply);
                }
                let _ = udp.send_to(&reply, peer).await;
            }
        }
    });
    (addr, count, names)
}

/// Adds an SOA (minimum 300 s) for the query's top-level domain to a negative answer.
fn with_soa(reply: Vec<u8>) -> Vec<u8> {
    use hickory_proto::rr::{Name, RData, Record, rdata::SOA};
    let Ok(mut m) = hickory_proto::op::Message::from_vec(&reply) else {
        return reply;
    };
    let Some(q) = m.queries.first() else {
        return reply;
    };
    if !m.answers.is_empty() {
        return reply;
    }
    let apex = q.name.trim_to(1);
    let soa = SOA::new(
        Name::from_ascii("ns.invalid.").expect("name"),
        Name::from_ascii("hostmaster.invalid.").expect("name"),
        1,
        3600,
        600,
        86400,
        300,
    );
    m.authorities
        .push(Record::from_rdata(apex, 300, RData::SOA(soa)));
    m.to_vec().unwrap_or(reply)
}

fn main() {
    let mut opts = Opts {
        filter: Vec::new(),
        quick: std::env::var_os("UNSPOOF_BENCH_QUICK").is_some(),
        list: false,
        passes: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--list" => opts.list = true,
            "--passes" => {
                opts.passes = Some(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .expect("--passes needs a number"),
                )
            }
            s if s.starts_with("--") => {} // --bench and other cargo/libtest flags
            s => opts.filter.push(s.to_string()),
        }
    }
    let mut h = Harness {
        opts,
        rows: Vec::new(),
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let timeout = Duration::from_secs(5);

    // --- corpus -------------------------------------------------------------------------
    let t = Instant::now();
    let keys = Keys::new();
    let zone = build_zone(&keys);
    let msgs: Vec<Msg> = rt.block_on(async {
        let gen_dns = Dns::zones(zone.clone(), timeout).await.expect("zone dns");
        let mut out = Vec::new();
        for (sc, weight) in SCENARIOS {
            let count = if h.opts.quick {
                weight.div_ceil(3)
            } else {
                weight
            };
            for _ in 0..count {
                let n = out.len();
                out.push(make(sc, n, &keys, &gen_dns).await);
            }
        }
        out
    });
    let total: usize = msgs.iter().map(|m| m.raw.len()).sum();
    let n = msgs.len();
    if !h.opts.list {
        println!(
            "corpus: {n} messages over 16 scenarios, {:.1} KB average ({}-{} B), built in {:.1} s",
            total as f64 / n as f64 / 1024.0,
            msgs.iter().map(|m| m.raw.len()).min().unwrap_or(0),
            msgs.iter().map(|m| m.raw.len()).max().unwrap_or(0),
            t.elapsed().as_secs_f64()
        );
    }

    // --- engine on Dns::zones: cold pass, correctness check, warm-up --------------------
    let engine = rt.block_on(async {
        let dns = Dns::zones(zone.clone(), timeout).await.expect("zone dns");
        Engine::new(Policy::default(), dns)
    });
    let t0 = Instant::now();
    let c0 = thread_cpu();
    let mut wrong: BTreeMap<String, usize> = BTreeMap::new();
    rt.block_on(async {
        for m in &msgs {
            let a = engine.evaluate(&m.raw, &m.envelope).await;
            let got = (
                a.auth.dkim_summary().as_str(),
                a.auth.dkim_pass_domains(),
                a.auth.spf.result.as_str(),
                a.auth.dmarc.result.as_str(),
                a.auth.arc.result.as_str(),
            );
            let e = &m.expect;
            if (got.0, got.2, got.3, got.4) != (e.dkim, e.spf, e.dmarc, e.arc)
                || got.1 != e.dkim_pass_d
            {
                *wrong
                    .entry(format!(
                        "{}: expected {:?} got {:?}",
                        m.scenario, m.expect, got
                    ))
                    .or_insert(0) += 1;
            }
        }
    });
    if !h.opts.list {
        let cold_cpu = match (c0, thread_cpu()) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e3,
            _ => t0.elapsed().as_nanos() as f64 / 1e3,
        };
        println!(
            "cold pass (empty caches, DNS over loopback, zone server on the same thread): {:.1} µs/msg CPU, {:.0} ms wall",
            cold_cpu / n as f64,
            t0.elapsed().as_secs_f64() * 1e3
        );
        if wrong.is_empty() {
            println!(
                "results: every message as the kit's manifest would expect (dkim, dkim_pass_d, spf, dmarc, arc)"
            );
        } else {
            for (k, v) in &wrong {
                println!("results differ from expectation ({v} msgs) {k}");
            }
        }
    }

    // Which names does a warm engine still ask for? Same zone behind a counting server: as
    // `Dns::zones` answers (no SOA on negative answers), and as knotd would (SOA).
    // The SOA variant is also the DNS the pieces below run on, so that their figures are the
    // computation and not loopback round trips for negative answers that cannot be cached.
    let mut soa_engine = None;
    {
        for soa in [false, true] {
            let (engine2, count, names) = rt.block_on(async {
                let (addr, count, names) = counting_server(zone.clone(), soa).await;
                let dns = Dns::server(addr, timeout).expect("server dns");
                let counted = Engine::new(Policy::default(), dns);
                for m in &msgs {
                    counted.evaluate(&m.raw, &m.envelope).await;
                }
                let cold = count.load(Ordering::Relaxed);
                names.lock().expect("names").clear();
                for _ in 0..2 {
                    for m in &msgs {
                        counted.evaluate(&m.raw, &m.envelope).await;
                    }
                }
                let warm = count.load(Ordering::Relaxed) - cold;
                let names = names.lock().expect("names").clone();
                (counted, (cold, warm), names)
            });
            if h.opts.list {
                soa_engine = Some(engine2);
                continue;
            }
            println!(
                "DNS queries{}: {} in the first pass, {} in two warm passes ({:.2}/msg)",
                if soa {
                    " (negative answers with SOA, as knotd)"
                } else {
                    " (as Dns::zones answers)"
                },
                count.0,
                count.1,
                count.1 as f64 / (2 * n) as f64
            );
            let mut top: Vec<_> = names.into_iter().collect();
            top.sort_by_key(|x| std::cmp::Reverse(x.1));
            for (name, k) in top.iter().take(6) {
                println!("  still asked when warm: {name} x{k}");
            }
            if soa {
                soa_engine = Some(engine2);
            }
        }
    }
    println!();

    // --- measurements ----------------------------------------------------------------------
    let policy = Policy::default();
    let trust = policy.trust();

    h.bench("engine/evaluate (warm, Dns::zones)", n, || {
        rt.block_on(async {
            for m in &msgs {
                black_box(engine.evaluate(black_box(&m.raw), &m.envelope).await);
            }
        })
    });
    let soa_engine = soa_engine.expect("engine with SOA");
    h.bench("engine/evaluate (warm, negatives cached)", n, || {
        rt.block_on(async {
            for m in &msgs {
                black_box(soa_engine.evaluate(black_box(&m.raw), &m.envelope).await);
            }
        })
    });
    // The gateway bench's policy (scripts/bench-gateway.sh): one protected domain, so the
    // lookalike and own-domain checks have something to compare with.
    let gateway_policy = Policy::parse(GATEWAY_POLICY, "gateway bench policy").expect("policy");
    soa_engine.set_policy(gateway_policy.clone());
    h.bench("engine/evaluate (warm, gateway policy)", n, || {
        rt.block_on(async {
            for m in &msgs {
                black_box(soa_engine.evaluate(black_box(&m.raw), &m.envelope).await);
            }
        })
    });
    soa_engine.set_policy(Policy::default());
    // What the whole decision as data (issue 14) costs inside evaluate: the disposition, the
    // reply, the header edits and a tag's banner, from the finished analysis.
    let analysed: Vec<unspoof_engine::Analysis> = msgs
        .iter()
        .map(|m| rt.block_on(soa_engine.evaluate(&m.raw, &m.envelope)))
        .collect();
    h.bench("  decision::decide", n, || {
        for (m, a) in msgs.iter().zip(&analysed) {
            black_box(unspoof_engine::decision::decide(
                black_box(&m.raw),
                a,
                &policy,
            ));
        }
    });
    h.bench("  message::to_crlf", n, || {
        for m in &msgs {
            black_box(message::to_crlf(black_box(&m.raw)));
        }
    });
    h.bench("  Headers::parse", n, || {
        for m in &msgs {
            black_box(Headers::parse(black_box(&m.raw)));
        }
    });
    let parsed: Vec<Headers<'_>> = msgs.iter().map(|m| Headers::parse(&m.raw)).collect();
    h.bench("  trace::build_trace", n, || {
        for (m, hd) in msgs.iter().zip(&parsed) {
            black_box(trace::build_trace(hd, m.envelope.ip, &trust, None));
        }
    });
    let dns = soa_engine.dns();
    h.bench("  auth::authenticate (all of auth)", n, || {
        rt.block_on(async {
            for m in &msgs {
                let input = auth::AuthInput {
                    ip: m.envelope.ip,
                    helo: m.envelope.helo.as_deref().unwrap_or(""),
                    mail_from: m.envelope.mail_from.as_deref().unwrap_or(""),
                    host_domain: &policy.hostname,
                };
                black_box(auth::authenticate(&m.raw, input, dns).await);
            }
        })
    });
    let ma = dns.authenticator().expect("dns");
    h.bench("    mail-auth AuthenticatedMessage::parse", n, || {
        for m in &msgs {
            black_box(AuthenticatedMessage::parse(black_box(&m.raw)));
        }
    });
    let amsgs: Vec<AuthenticatedMessage<'_>> = msgs
        .iter()
        .map(|m| AuthenticatedMessage::parse(&m.raw).expect("parse"))
        .collect();
    h.bench("    mail-auth verify_dkim", n, || {
        rt.block_on(async {
            for a in &amsgs {
                black_box(ma.verify_dkim(dns.params(a)).await);
            }
        })
    });
    h.bench("    mail-auth verify_arc", n, || {
        rt.block_on(async {
            for a in &amsgs {
                black_box(ma.verify_arc(dns.params(a)).await);
            }
        })
    });
    h.bench("    mail-auth verify_spf (mail from)", n, || {
        rt.block_on(async {
            for m in &msgs {
                let p = SpfParameters::verify_mail_from(
                    m.envelope.ip.expect("ip"),
                    m.envelope.helo.as_deref().unwrap_or(""),
                    &policy.hostname,
                    m.envelope.mail_from.as_deref().unwrap_or(""),
                );
                black_box(ma.verify_spf(dns.params(p)).await);
            }
        })
    });
    h.bench("    mail-auth verify_spf (helo)", n, || {
        rt.block_on(async {
            for m in &msgs {
                let p = SpfParameters::verify_ehlo(
                    m.envelope.ip.expect("ip"),
                    m.envelope.helo.as_deref().unwrap_or(""),
                    &policy.hostname,
                );
                black_box(ma.verify_spf(dns.params(p)).await);
            }
        })
    });
    let (dkim_outs, spf_outs, mf_domains) = rt.block_on(async {
        let (mut d, mut s, mut f) = (Vec::new(), Vec::new(), Vec::new());
        for (m, a) in msgs.iter().zip(&amsgs) {
            d.push(ma.verify_dkim(dns.params(a)).await);
            let mf = m.envelope.mail_from.clone().unwrap_or_default();
            let p = SpfParameters::verify_mail_from(
                m.envelope.ip.expect("ip"),
                m.envelope.helo.as_deref().unwrap_or(""),
                &policy.hostname,
                &mf,
            );
            s.push(ma.verify_spf(dns.params(p)).await);
            f.push(
                mf.rsplit_once('@')
                    .map(|x| x.1.to_string())
                    .unwrap_or_default(),
            );
        }
        (d, s, f)
    });
    h.bench("    mail-auth verify_dmarc", n, || {
        rt.block_on(async {
            for i in 0..amsgs.len() {
                let p =
                    DmarcParameters::new(&amsgs[i], &dkim_outs[i], &mf_domains[i], &spf_outs[i]);
                black_box(ma.verify_dmarc(dns.params(p)).await);
            }
        })
    });
    let analyses: Vec<_> = rt.block_on(async {
        let mut v = Vec::new();
        for m in &msgs {
            v.push(engine.evaluate(&m.raw, &m.envelope).await);
        }
        v
    });
    h.bench("  analysis -> JSON (CLI batch line)", n, || {
        for a in &analyses {
            black_box(serde_json::to_vec(black_box(a)).expect("json"));
        }
    });

    for (name, policy) in [
        ("  findings::collect", &policy),
        ("  findings::collect (gateway policy)", &gateway_policy),
    ] {
        h.bench(name, n, || {
            for ((m, a), headers) in msgs.iter().zip(&analyses).zip(&parsed) {
                let context =
                    findings::Context::new(&m.raw, headers, &a.envelope, &a.auth, &a.trace, policy);
                black_box(findings::collect(black_box(&context)));
            }
        });
    }

    if !h.opts.list && !h.rows.is_empty() {
        let get = |p: &str| h.rows.iter().find(|r| r.name.trim() == p).map(|r| r.cpu_us);
        if let (Some(e), Some(c), Some(p), Some(t), Some(a)) = (
            get("engine/evaluate (warm, negatives cached)"),
            get("message::to_crlf"),
            get("Headers::parse"),
            get("trace::build_trace"),
            get("auth::authenticate (all of auth)"),
        ) {
            println!(
                "  rest of evaluate (findings, summary, PTR, clones): {:.1} µs/msg",
                e - c - p - t - a
            );
        }
        println!();
        for (name, what) in [
            (
                "engine/evaluate (warm, negatives cached)",
                "DNS as a real authoritative server answers it (SOA on negative answers)",
            ),
            (
                "engine/evaluate (warm, Dns::zones)",
                "DNS from Dns::zones (negative answers uncacheable, asked again each time)",
            ),
        ] {
            if let Some(us) = get(name) {
                println!(
                    "engine, warm caches, one thread: {:>6.0} msg/CPU-s ({:.1} µs/msg), {what}",
                    1e6 / us,
                    us
                );
            }
        }
        println!("issue 2 target: 10000 msg/CPU-s with warm DNS");
    }
}
