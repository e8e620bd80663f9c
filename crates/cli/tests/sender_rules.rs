//! Issue 12, items 4-7, through both doors: `unspoof analyze` on message files, and a real
//! `unspoof serve` fed by Python's smtplib from chosen loopback addresses (127.0.0.2 is the
//! legitimate senders' host in the zone, 127.0.0.3 the forger's, 127.0.0.4 a shared ESP's).
//! Every forgery has a legitimate twin that stays clean.
//!
//! - watched brands (`watched_domains`): a lookalike of the watched bank and the bank's name on
//!   another organisation's address are quarantined; the bank's own mail is clean, and the bank
//!   is not ours (an unauthenticated message in its name is not an own-domain spoof);
//! - own mail must be signed (`[[signed_mail]]`): an SPF pass through the shared ESP's include
//!   alone is refused; the ESP's authorised signature, and our own, pass;
//! - DKIM replay and extension (`[dkim_replay]`): a signature made 30 days before arrival, bulk
//!   mail re-sent to recipients not in To/Cc, a Subject added above the signature, text after
//!   `l=`; the untouched signed twins are clean;
//! - impersonation with memory: a protected person's name on a new address is held, on an
//!   address that has written before only tagged, and from a known, fully authenticated
//!   namesake accepted (`impersonation.namesake`); in `serve` the memory is the store's.
//!
//! Messages are signed here with mail-auth; an old `t=` is made by signing again with the
//! timestamp replaced (mail-auth's signer always writes the current time).

mod common;

use common::spawn_serve;
use unspoof_testkit::{free_port, stop};

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mail_auth::{
    common::{
        crypto::{Ed25519Key, SigningKey},
        headers::{HeaderStream, HeaderWriter, Writable, Writer},
    },
    dkim::{Canonicalization, DkimSigner, Signature, canonicalize::CanonicalHeaders},
};

const LEGIT_IP: &str = "127.0.0.2";
const FORGER_IP: &str = "127.0.0.3";
const ESP_IP: &str = "127.0.0.4";
const RCPT: &str = "bob@ours.example";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One-line padded base64 (the message layer's codec).
fn base64(data: &[u8]) -> String {
    unspoof_engine::message::codec::base64_line(data)
}

/// The test world: one Ed25519 key published under every selector, the zone and the policy.
struct World {
    dir: PathBuf,
    key: Vec<u8>,
}

const POLICY: &str = r#"hostname = "mx.ours.example"
protected_domains = ["ours.example"]
watched_domains = ["fidelia.example"]

[[protected_people]]
name = "Suzie Q. Public"
addresses = ["suzie@ours.example"]

[[signed_mail]]
domain = "ours.example"
senders = [
  { name = "our gateway", dkim_domain = "ours.example", selector = "s1" },
  { name = "the newsletter ESP", dkim_domain = "esp.example", selector = "ours" },
]
"#;

impl World {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "unspoof-sender-rules-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = Ed25519Key::generate_pkcs8().unwrap();
        let public = base64(&Ed25519Key::from_pkcs8_der(&key).unwrap().public_key());
        let k = format!("\"v=DKIM1; k=ed25519; p={public}\"");
        let zone = format!(
            r#"
$ORIGIN ours.example.
@                IN TXT "v=spf1 ip4:{LEGIT_IP} include:_spf.esp.example -all"
_dmarc           IN TXT "v=DMARC1; p=reject"
s1._domainkey    IN TXT {k}
$ORIGIN esp.example.
@                IN TXT "v=spf1 ip4:{ESP_IP} -all"
_spf             IN TXT "v=spf1 ip4:{ESP_IP} -all"
ours._domainkey  IN TXT {k}
other._domainkey IN TXT {k}
$ORIGIN fidelia.example.
@                IN TXT "v=spf1 ip4:{LEGIT_IP} -all"
_dmarc           IN TXT "v=DMARC1; p=reject"
mail._domainkey  IN TXT {k}
$ORIGIN fidelia-secure.example.
@                IN TXT "v=spf1 ip4:{FORGER_IP} -all"
$ORIGIN evil.example.
@                IN TXT "v=spf1 ip4:{FORGER_IP} -all"
$ORIGIN news.example.
@                IN TXT "v=spf1 ip4:{LEGIT_IP} -all"
_dmarc           IN TXT "v=DMARC1; p=none"
news._domainkey  IN TXT {k}
$ORIGIN freemail.example.
@                IN TXT "v=spf1 ip4:{LEGIT_IP} -all"
_dmarc           IN TXT "v=DMARC1; p=none"
fm._domainkey    IN TXT {k}
"#
        );
        std::fs::write(dir.join("z.zone"), zone).unwrap();
        std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
        World { dir, key }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Signs `raw` for `d`/`s` (relaxed/relaxed) over `headers`; with `l`, the body length is
    /// signed; with `t`, the signature's timestamp is `t` instead of now.
    fn sign(
        &self,
        raw: &str,
        d: &str,
        s: &str,
        headers: &[&str],
        l: bool,
        t: Option<u64>,
    ) -> String {
        let key = || Ed25519Key::from_pkcs8_der(&self.key).unwrap();
        let mut sig = DkimSigner::from_key(key())
            .domain(d)
            .selector(s)
            .headers(headers.iter().copied())
            .body_length(l)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(raw.as_bytes())
            .unwrap();
        if let Some(t) = t {
            sig.t = t;
            sig.b = Vec::new();
            let (_, canonical, _, _) = sig.canonicalize(Fields::new(raw.as_bytes()));
            sig.b = key().sign(Signable(canonical, &sig)).unwrap();
        }
        format!("{}{raw}", sig.to_header())
    }
}

/// What a signer hashes: the canonical signed fields, then the DKIM-Signature without `b=`.
struct Signable<'a>(CanonicalHeaders<'a>, &'a Signature);

impl Writable for Signable<'_> {
    fn write(self, writer: &mut impl Writer) {
        self.0.write(writer);
        self.1.write(writer, false);
    }
}

/// The header fields of a CRLF message as mail-auth's signer reads them: the name, and the
/// value after the colon up to and including the CRLF that ends the field.
struct Fields<'x> {
    raw: &'x [u8],
    pos: usize,
}

impl<'x> Fields<'x> {
    fn new(raw: &'x [u8]) -> Self {
        Fields { raw, pos: 0 }
    }
}

impl<'x> HeaderStream<'x> for Fields<'x> {
    fn next_header(&mut self) -> Option<(&'x [u8], &'x [u8])> {
        let raw = self.raw;
        if raw[self.pos..].starts_with(b"\r\n") || self.pos >= raw.len() {
            return None;
        }
        let start = self.pos;
        let colon = start + raw[start..].iter().position(|&b| b == b':')?;
        let mut end = colon;
        loop {
            let eol = end + raw[end..].windows(2).position(|w| w == b"\r\n")? + 2;
            end = eol;
            if !matches!(raw.get(eol), Some(b' ' | b'\t')) {
                break;
            }
        }
        self.pos = end;
        Some((&raw[start..colon], &raw[colon + 1..end]))
    }

    fn body(&mut self) -> &'x [u8] {
        while self.next_header().is_some() {}
        self.raw.get(self.pos + 2..).unwrap_or_default()
    }
}

fn message(from: &str, to: &str, subject: &str, id: &str, extra: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}@sender.test>\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}"
    )
}

const SIGNED: &[&str] = &["From", "To", "Subject", "Message-ID"];

/// One message and what both doors must say about it.
struct Case {
    name: &'static str,
    raw: String,
    ip: &'static str,
    mail_from: String,
    /// The action expected (`serve` sees a first contact for each new sender domain; `analyze`
    /// is given the same answers).
    action: &'static str,
    /// Codes that must be there.
    codes: &'static [&'static str],
    /// Codes (prefixes) that must not be there.
    absent: &'static [&'static str],
}

/// Codes none of the legitimate twins may carry.
const OURS: &[&str] = &[
    "lookalike.",
    "impersonation.",
    "spoof.",
    "dkim.old_signature",
    "dkim.recipients_not_addressed",
    "dkim.unsigned_field",
    "dkim.body_extended",
];

fn cases(w: &World) -> Vec<Case> {
    let bulk = "List-Unsubscribe: <mailto:unsub@news.example>\r\n";
    let news = |to: &str, id: &str| {
        message(
            "\"News\" <letters@news.example>",
            to,
            "This week",
            id,
            bulk,
            "Our news of the week.\r\n",
        )
    };
    let fresh = news(RCPT, "news-fresh");
    let signed_fresh = w.sign(&fresh, "news.example", "news", SIGNED, false, None);
    let old = w.sign(
        &news(RCPT, "news-old"),
        "news.example",
        "news",
        SIGNED,
        false,
        Some(now() - 30 * 86_400),
    );
    let replayed = w.sign(
        &news("carol@elsewhere.example", "news-replayed"),
        "news.example",
        "news",
        SIGNED,
        false,
        None,
    );
    let direct = w.sign(
        &news("carol@elsewhere.example", "news-direct"),
        "news.example",
        "news",
        SIGNED,
        false,
        None,
    );
    let subject_added = format!(
        "Subject: Urgent: your account\r\n{}",
        w.sign(
            &news(RCPT, "news-subject"),
            "news.example",
            "news",
            SIGNED,
            false,
            None
        )
    );
    let with_l = w.sign(
        &news(RCPT, "news-l"),
        "news.example",
        "news",
        SIGNED,
        true,
        None,
    );
    let extended = format!("{with_l}\r\nClick https://evil.example/login now.\r\n");
    let own = |id: &str| {
        message(
            "\"Ours Newsletter\" <news@ours.example>",
            RCPT,
            "Our offers",
            id,
            "",
            "Offers.\r\n",
        )
    };
    let bank =
        |from: &str, id: &str| message(from, RCPT, "Your statement", id, "", "Statement.\r\n");
    vec![
        // Item 4: watched brands.
        Case {
            name: "watched-lookalike",
            raw: bank(
                "\"Fidelia\" <alerts@fidelia-secure.example>",
                "bank-lookalike",
            ),
            ip: FORGER_IP,
            mail_from: "alerts@fidelia-secure.example".into(),
            action: "reject", // quarantine, one step up on a first contact
            codes: &[
                "lookalike.cousin",
                "impersonation.watched_brand",
                "contact.first_impersonation",
            ],
            absent: &["spoof."],
        },
        Case {
            name: "watched-name-on-other-address",
            raw: bank(
                "\"Fidelia Customer Service\" <service@evil.example>",
                "bank-name",
            ),
            ip: FORGER_IP,
            mail_from: "service@evil.example".into(),
            action: "reject",
            codes: &["impersonation.watched_brand"],
            absent: &["lookalike.", "spoof."],
        },
        Case {
            name: "watched-address-in-name",
            raw: bank(
                "\"alerts@fidelia.example\" <x@evil.example>",
                "bank-address",
            ),
            ip: FORGER_IP,
            mail_from: "x@evil.example".into(),
            action: "reject",
            codes: &["impersonation.address_in_name"],
            absent: &["spoof."],
        },
        Case {
            name: "watched-genuine",
            raw: w.sign(
                &bank("\"Fidelia\" <alerts@fidelia.example>", "bank-genuine"),
                "fidelia.example",
                "mail",
                SIGNED,
                false,
                None,
            ),
            ip: LEGIT_IP,
            mail_from: "bounce@fidelia.example".into(),
            action: "accept",
            codes: &[],
            absent: OURS,
        },
        // The watched bank is not ours: a forgery of it is judged by its own DMARC (p=reject),
        // not by our own-domain rules.
        Case {
            name: "watched-is-not-ours",
            raw: bank("\"Fidelia\" <alerts@fidelia.example>", "bank-forged"),
            ip: FORGER_IP,
            mail_from: "alerts@fidelia.example".into(),
            action: "reject",
            codes: &["dmarc.reject"],
            absent: &["spoof.", "impersonation.", "lookalike."],
        },
        // Item 5: own mail must be signed.
        Case {
            name: "own-spf-only-through-esp",
            raw: own("own-spf-only"),
            ip: ESP_IP,
            mail_from: "bounce@ours.example".into(),
            action: "reject",
            codes: &["spoof.own_domain_unsigned"],
            absent: &["spoof.own_domain\""],
        },
        Case {
            name: "own-esp-unauthorised-selector",
            raw: w.sign(
                &own("own-other-sel"),
                "esp.example",
                "other",
                SIGNED,
                false,
                None,
            ),
            ip: ESP_IP,
            mail_from: "bounce@ours.example".into(),
            action: "reject",
            codes: &["spoof.own_domain_unsigned"],
            absent: &[],
        },
        Case {
            name: "own-esp-authorised",
            raw: w.sign(&own("own-esp"), "esp.example", "ours", SIGNED, false, None),
            ip: ESP_IP,
            mail_from: "bounce@ours.example".into(),
            action: "accept",
            codes: &[],
            absent: OURS,
        },
        Case {
            name: "own-signed-by-us",
            raw: w.sign(&own("own-s1"), "ours.example", "s1", SIGNED, false, None),
            ip: LEGIT_IP,
            mail_from: "news@ours.example".into(),
            action: "accept",
            codes: &[],
            absent: OURS,
        },
        // Item 6: replay and extension.
        Case {
            name: "dkim-old-signature",
            raw: old,
            ip: LEGIT_IP,
            mail_from: "bounce@news.example".into(),
            action: "tag",
            codes: &["dkim.old_signature"],
            absent: &["dkim.unsigned_field", "dkim.body_extended"],
        },
        Case {
            name: "dkim-fresh-signature",
            raw: signed_fresh,
            ip: LEGIT_IP,
            mail_from: "bounce@news.example".into(),
            action: "accept",
            codes: &[],
            absent: OURS,
        },
        Case {
            name: "dkim-replayed-to-others",
            raw: replayed,
            ip: FORGER_IP,
            mail_from: "bounce@evil.example".into(),
            action: "tag",
            codes: &["dkim.recipients_not_addressed"],
            absent: &["dkim.old_signature"],
        },
        // The same bulk mail, to a recipient not in To (a Bcc), from the signer's own path.
        Case {
            name: "dkim-bcc-from-the-signer",
            raw: direct,
            ip: LEGIT_IP,
            mail_from: "bounce@news.example".into(),
            action: "accept",
            codes: &[],
            absent: OURS,
        },
        Case {
            name: "dkim-subject-added",
            raw: subject_added,
            ip: LEGIT_IP,
            mail_from: "bounce@news.example".into(),
            action: "quarantine",
            codes: &["dkim.unsigned_field"],
            absent: &[],
        },
        Case {
            name: "dkim-body-extended",
            raw: extended,
            ip: LEGIT_IP,
            mail_from: "bounce@news.example".into(),
            action: "quarantine",
            codes: &["dkim.body_extended"],
            absent: &[],
        },
        Case {
            name: "dkim-l-untouched",
            raw: with_l,
            ip: LEGIT_IP,
            mail_from: "bounce@news.example".into(),
            action: "accept",
            codes: &[],
            absent: OURS,
        },
    ]
}

/// `unspoof analyze --json` of one message: (action, codes).
fn analyze(
    w: &World,
    name: &str,
    raw: &str,
    ip: &str,
    mail_from: &str,
    extra: &[&str],
) -> (String, Vec<String>) {
    let file = w.path(&format!("{name}.eml"));
    std::fs::write(&file, raw).unwrap();
    let received_at = now().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(["analyze", "--json", "--dns-zone", &w.path("z.zone")])
        .args(["--policy", &w.path("policy.toml")])
        .args([
            "--ip",
            ip,
            "--helo",
            "client.test",
            "--mail-from",
            mail_from,
        ])
        .args(["--rcpt", RCPT, "--received-at", &received_at])
        .args(extra)
        .arg(&file)
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    verdict_of(
        &v["verdict"]["action"],
        &v["verdict"]["reasons"],
        |r| &r["code"],
    )
}

fn verdict_of<'v>(
    action: &serde_json::Value,
    reasons: &'v serde_json::Value,
    code: impl Fn(&'v serde_json::Value) -> &'v serde_json::Value,
) -> (String, Vec<String>) {
    (
        action.as_str().unwrap_or("").to_string(),
        reasons
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| code(r).as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

fn check(door: &str, c: &Case, action: &str, codes: &[String]) {
    let ctx = format!("{door} {}: {action} {codes:?}", c.name);
    assert_eq!(action, c.action, "{ctx}");
    for want in c.codes {
        assert!(codes.iter().any(|x| x == want), "{ctx}: {want} missing");
    }
    for not in c.absent {
        let exact = not.strip_suffix('"');
        assert!(
            !codes.iter().any(|x| match exact {
                Some(e) => x == e,
                None => x.starts_with(not),
            }),
            "{ctx}: {not} present"
        );
    }
}

#[test]
fn analyze_sees_each_forgery_and_passes_each_twin() {
    let w = World::new("analyze");
    for c in cases(&w) {
        // What the gateway's store would answer for each message of the serve test.
        let (action, codes) = analyze(
            &w,
            c.name,
            &c.raw,
            c.ip,
            &c.mail_from,
            &["--first-contact", "yes"],
        );
        check("analyze", &c, &action, &codes);
    }
}

/// Item 7 through analyze: the memory's answer is given with `--known-sender`.
#[test]
fn analyze_impersonation_with_memory() {
    let w = World::new("memory");
    let plain = message(
        "\"Suzie Q. Public\" <suzie.public@freemail.example>",
        RCPT,
        "Invoice",
        "suzie-1",
        "",
        "Please pay.\r\n",
    );
    let signed = w.sign(&plain, "freemail.example", "fm", SIGNED, false, None);
    let mf = "suzie.public@freemail.example";
    let run = |raw: &str, ip: &str, extra: &[&str]| analyze(&w, "suzie", raw, ip, mf, extra);

    // A new address: held (one step more on a first contact with the domain).
    let (action, codes) = run(&plain, FORGER_IP, &["--known-sender", "no"]);
    assert_eq!(action, "quarantine", "{codes:?}");
    assert!(
        codes.contains(&"impersonation.display_name".into()),
        "{codes:?}"
    );
    let (action, codes) = run(
        &plain,
        FORGER_IP,
        &["--known-sender", "no", "--first-contact", "yes"],
    );
    assert_eq!(action, "reject", "{codes:?}");
    // Nobody knows (no store): as a new address.
    let (action, _) = run(&signed, LEGIT_IP, &[]);
    assert_eq!(action, "quarantine");
    // The address has written before, the message is not authenticated: only tagged, and a
    // first contact of the domain with this recipient does not raise it.
    let (action, codes) = run(
        &plain,
        FORGER_IP,
        &["--known-sender", "yes", "--first-contact", "yes"],
    );
    assert_eq!(action, "tag", "{codes:?}");
    assert!(
        codes.contains(&"impersonation.display_name".into()),
        "{codes:?}"
    );
    assert!(
        !codes.contains(&"contact.first_impersonation".into()),
        "{codes:?}"
    );
    // Known and fully authenticated (DMARC pass with an aligned DKIM signature): a namesake.
    let (action, codes) = run(&signed, LEGIT_IP, &["--known-sender", "yes"]);
    assert_eq!(action, "accept", "{codes:?}");
    assert!(
        codes.contains(&"impersonation.namesake".into()),
        "{codes:?}"
    );
    assert!(
        !codes.contains(&"impersonation.display_name".into()),
        "{codes:?}"
    );
    // Known, authenticated, but the name only with other words: not a namesake, tagged.
    let partial = w.sign(
        &plain.replace("\"Suzie Q. Public\"", "\"Suzie Q. Public via Payments\""),
        "freemail.example",
        "fm",
        SIGNED,
        false,
        None,
    );
    let (action, codes) = run(&partial, LEGIT_IP, &["--known-sender", "yes"]);
    assert_eq!(action, "tag", "{codes:?}");
}

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn serve(w: &World) -> Server {
    let port = free_port();
    let data = w.dir.join("data");
    let config = format!(
        "{POLICY}\n[gateway]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nsubmission = \"\"\nmetrics = \"\"\ndomains = [\"ours.example\"]\nreverse_dns = false\ntrusted_networks = [\"127.0.0.0/8\"]\n",
        data.display()
    );
    std::fs::write(w.dir.join("unspoof.toml"), config).unwrap();
    let child = spawn_serve(
        &w.dir.join("unspoof.toml"),
        &w.dir.join("z.zone"),
        &w.dir.join("serve.log"),
        port,
    );
    Server {
        child,
        port,
        dir: data,
    }
}

impl Server {
    /// Sends one message with smtplib from `ip`; returns the SMTP reply code to DATA.
    fn send(&self, raw: &str, ip: &str, mail_from: &str, file: &Path) -> u16 {
        std::fs::write(file, raw).unwrap();
        let script = r#"
import smtplib, sys
port, ip, mail_from, rcpt, path = sys.argv[1:6]
data = open(path, 'rb').read()
s = smtplib.SMTP('127.0.0.1', int(port), source_address=(ip, 0), timeout=60)
s.ehlo('client.test')
s.mail(mail_from)
s.rcpt(rcpt)
code, _ = s.data(data)
print(code)
s.quit()
"#;
        let out = Command::new("python3")
            .args(["-c", script, &self.port.to_string(), ip, mail_from, RCPT])
            .arg(file)
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("smtplib: {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// The session log's verdict for the message with this Message-ID: (action, codes). The
    /// line may follow the reply by a moment: waited for (60 s turns a hang into a failure).
    fn verdict(&self, message_id: &str) -> (String, Vec<String>) {
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(self.dir.join("sessions.jsonl")).unwrap_or_default();
            let line = log
                .lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| {
                    v["message_id"]
                        .as_str()
                        .is_some_and(|m| m.contains(&format!("<{message_id}@")))
                });
            if let Some(line) = line {
                return verdict_of(&line["outcome"], &line["reasons"], |r| r);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{message_id} not in the session log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn message_id(raw: &str) -> String {
    let at = raw.find("Message-ID: <").unwrap() + "Message-ID: <".len();
    raw[at..].split('@').next().unwrap().to_string()
}

#[test]
fn serve_sees_each_forgery_and_passes_each_twin() {
    let w = World::new("serve");
    let server = serve(&w);
    for c in cases(&w) {
        let code = server.send(
            &c.raw,
            c.ip,
            &c.mail_from,
            &w.dir.join(format!("{}.eml", c.name)),
        );
        let (action, codes) = server.verdict(&message_id(&c.raw));
        check("serve", &c, &action, &codes);
        let refused = c.action == "reject";
        assert_eq!(code >= 500, refused, "{}: DATA reply {code}", c.name);
    }
}

/// Item 7 through serve: the store remembers who has written.
#[test]
fn serve_impersonation_with_memory() {
    let w = World::new("serve-memory");
    let server = serve(&w);
    let mf = "suzie.public@freemail.example";
    let send = |from: &str, id: &str, sign: bool, ip: &str| {
        let plain = message(from, RCPT, "Invoice", id, "", "Please pay.\r\n");
        let raw = if sign {
            w.sign(&plain, "freemail.example", "fm", SIGNED, false, None)
        } else {
            plain
        };
        let code = server.send(&raw, ip, mf, &w.dir.join(format!("{id}.eml")));
        let (action, codes) = server.verdict(id);
        (code, action, codes)
    };
    // The namesake's first message shows another form of her name: delivered, and now known.
    let (_, action, codes) = send(
        "\"S. Public\" <suzie.public@freemail.example>",
        "m1",
        true,
        LEGIT_IP,
    );
    assert_eq!(action, "accept", "{codes:?}");
    // A stranger at the same provider with the protected name: held.
    let (_, action, codes) = send(
        "\"Suzie Q. Public\" <suzie.q.public@freemail.example>",
        "m2",
        true,
        LEGIT_IP,
    );
    assert_eq!(action, "quarantine", "{codes:?}");
    assert!(
        codes.contains(&"impersonation.display_name".into()),
        "{codes:?}"
    );
    // The known, fully authenticated namesake with the exact name: accepted.
    let (code, action, codes) = send(
        "\"Suzie Q. Public\" <suzie.public@freemail.example>",
        "m3",
        true,
        LEGIT_IP,
    );
    assert_eq!((code, action.as_str()), (250, "accept"), "{codes:?}");
    assert!(
        codes.contains(&"impersonation.namesake".into()),
        "{codes:?}"
    );
    // The known address, unauthenticated (another host, no signature): tagged, not held.
    let (_, action, codes) = send(
        "\"Suzie Q. Public\" <suzie.public@freemail.example>",
        "m4",
        false,
        FORGER_IP,
    );
    assert_eq!(action, "tag", "{codes:?}");
    assert!(
        codes.contains(&"impersonation.display_name".into()),
        "{codes:?}"
    );
}
