//! Shared by the milter tests: the DNS zone and policy of the test world, DKIM signing, an MTA
//! side of the milter protocol (what Postfix's milter8.c does), and temp directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use unspoof_engine::{Dns, Engine, Policy, dns::Zone};
use unspoof_milter::wire::{action, proto};

/// Our authserv-id in the tests.
pub const HOSTNAME: &str = "mx.unspoof.test";
/// The IP the test "Internet" sender connects from; good.test's SPF allows it (and loopback,
/// which is where Postfix connects from in the Postfix test).
pub const SENDER_IP: &str = "192.0.2.10";

/// A DKIM key for good.test (selector `sel`), and the zone that publishes it.
pub struct World {
    pub key_pkcs8: Vec<u8>,
    pub zone: Zone,
}

impl World {
    pub fn new() -> Self {
        let key_pkcs8 = Ed25519Key::generate_pkcs8().expect("generate key");
        let key = Ed25519Key::from_pkcs8_der(&key_pkcs8).expect("key");
        let public = base64(&key.public_key());
        let mut zone = Zone::new();
        let mut txt = |n: &str, t: &str| zone.add_txt(n, t).expect("txt");
        // good.test: everything aligned and passing.
        txt("good.test", "v=spf1 ip4:192.0.2.10 ip4:127.0.0.0/8 -all");
        txt("_dmarc.good.test", "v=DMARC1; p=reject");
        txt(
            "sel._domainkey.good.test",
            &format!("v=DKIM1; k=ed25519; p={public}"),
        );
        // bank.test: the protected domain forgers borrow.
        txt("bank.test", "v=spf1 ip4:198.51.100.1 -all");
        txt("_dmarc.bank.test", "v=DMARC1; p=reject");
        // tagme.test: SPF fail, no DMARC record -> tag.
        txt("tagme.test", "v=spf1 -all");
        // shady.test: DMARC p=quarantine, nothing passes -> quarantine.
        txt("shady.test", "v=spf1 -all");
        txt("_dmarc.shady.test", "v=DMARC1; p=quarantine");
        // slow.test: the DNS never answers.
        zone.add_timeout("slow.test");
        zone.add_timeout("_dmarc.slow.test");
        World { key_pkcs8, zone }
    }

    pub fn policy() -> Policy {
        Policy::parse(
            &format!("hostname = \"{HOSTNAME}\"\nprotected_domains = [\"bank.test\"]\n"),
            "test policy",
        )
        .expect("policy")
    }

    pub async fn engine(&self, dns_timeout: Duration) -> Engine {
        let dns = Dns::zones(self.zone.clone(), dns_timeout)
            .await
            .expect("zone server");
        Engine::new(Self::policy(), dns)
    }

    /// Signs `raw` (CRLF) for good.test with simple/simple canonicalisation, the strictest:
    /// one changed octet in a signed header breaks it.
    pub fn sign(&self, raw: &[u8]) -> Vec<u8> {
        let key = Ed25519Key::from_pkcs8_der(&self.key_pkcs8).expect("key");
        let sig = DkimSigner::from_key(key)
            .domain("good.test")
            .selector("sel")
            .headers([
                "From",
                "To",
                "Subject",
                "Date",
                "Message-ID",
                "X-Tight",
                "X-Folded",
            ])
            .header_canonicalization(Canonicalization::Simple)
            .body_canonicalization(Canonicalization::Simple)
            .sign(raw)
            .expect("sign");
        let mut out = sig.to_header().into_bytes();
        out.extend_from_slice(raw);
        out
    }
}

/// One-line padded base64 (the message layer's codec).
pub fn base64(data: &[u8]) -> String {
    unspoof_engine::message::codec::base64_line(data)
}

/// A good message from good.test: folded and tight (`Name:value`) header fields that
/// `c=simple` signs octet for octet.
pub fn good_message(world: &World, subject: &str, tight: bool) -> Vec<u8> {
    let tight = if tight {
        "X-Tight:no-space-after-colon"
    } else {
        "X-Tight: spaced"
    };
    let raw = format!(
        "From: Alice <alice@good.test>\r\n\
         To: bob@example.net\r\n\
         Subject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{}@good.test>\r\n\
         {tight}\r\n\
         X-Folded: first line\r\n\
         \tsecond line\r\n\
         \r\n\
         Hello Bob,\r\n\
         \r\n\
         the figures are attached.\r\n",
        subject.replace(' ', "."),
    );
    world.sign(raw.as_bytes())
}

/// A message claiming to be from `from` (unsigned).
pub fn plain_message(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\n\
         To: bob@example.net\r\n\
         Subject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{}@test>\r\n\
         \r\n\
         Please pay the invoice today.\r\n",
        subject.replace(' ', ".")
    )
    .into_bytes()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "unspoof-milter-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("UNSPOOF_KEEP_TEMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Everything Postfix offers (milter8.c, protocol 6), minus SKIP and RCPT_REJ.
pub const ALL_ACTIONS: u32 = 0x1ff;
pub const ALL_PROTOCOL: u32 = 0x1fffff & !(proto::SKIP | proto::RCPT_REJ);

/// The MTA side of one milter connection.
pub struct Mta<S> {
    s: S,
    buf: Vec<u8>,
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
    /// Macro lists the milter asked for in its OPTNEG reply.
    pub macro_lists: Vec<(u32, String)>,
}

/// What the milter answered to one message.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The final reply letter (`a`, `c`, `t`, `y`, `r`, ...), or the first non-continue
    /// reply before end of message.
    pub code: u8,
    /// The text of a REPLYCODE.
    pub reply: String,
    /// Modifications in order: (letter, data).
    pub mods: Vec<(u8, Vec<u8>)>,
    /// SMFIR_PROGRESS packets seen.
    pub progress: usize,
}

fn cstrs(d: &[u8]) -> Vec<String> {
    d.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl Outcome {
    /// (name, value) of every inserted or added header, in order.
    pub fn added(&self) -> Vec<(String, String)> {
        self.mods
            .iter()
            .filter_map(|(c, d)| match c {
                b'h' => {
                    let s = cstrs(d);
                    Some((s[0].clone(), s[1].clone()))
                }
                b'i' => {
                    let s = cstrs(&d[4..]);
                    Some((s[0].clone(), s[1].clone()))
                }
                _ => None,
            })
            .collect()
    }

    pub fn added_value(&self, name: &str) -> Option<String> {
        self.added()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// (index, name, value) of every CHGHEADER.
    pub fn changed(&self) -> Vec<(u32, String, String)> {
        self.mods
            .iter()
            .filter(|(c, _)| *c == b'm')
            .map(|(_, d)| {
                let i = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                let s = cstrs(&d[4..]);
                (i, s[0].clone(), s[1].clone())
            })
            .collect()
    }

    /// The replacement body, if any.
    pub fn body(&self) -> Option<Vec<u8>> {
        let parts: Vec<&Vec<u8>> = self
            .mods
            .iter()
            .filter(|(c, _)| *c == b'b')
            .map(|(_, d)| d)
            .collect();
        (!parts.is_empty()).then(|| parts.into_iter().flatten().copied().collect())
    }

    pub fn quarantine(&self) -> Option<String> {
        self.mods
            .iter()
            .find(|(c, _)| *c == b'q')
            .map(|(_, d)| cstrs(d)[0].clone())
    }
}

/// A header field as octets: (name, value after the colon).
pub type RawField = (Vec<u8>, Vec<u8>);

/// The header section of `raw` as the MTA hands it over: (name, value) with folds as LF.
pub fn split_headers(raw: &[u8]) -> (Vec<RawField>, Vec<u8>) {
    let sep = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header/body separator");
    let head = &raw[..sep + 2];
    let body = raw[sep + 4..].to_vec();
    let mut out: Vec<RawField> = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if matches!(line[0], b' ' | b'\t') {
            let last = out.last_mut().expect("continuation");
            last.1.push(b'\n');
            last.1.extend_from_slice(line);
        } else {
            let colon = line.iter().position(|&b| b == b':').expect("colon");
            out.push((line[..colon].to_vec(), line[colon + 1..].to_vec()));
        }
    }
    (out, body)
}

/// One message's envelope and content, as an MTA would send it.
pub struct Transaction<'a> {
    pub ip: &'a str,
    pub hostname: &'a str,
    pub helo: &'a str,
    pub mail_from: &'a str,
    pub rcpt: &'a [&'a str],
    pub raw: &'a [u8],
    pub qid: &'a str,
    /// Connect-stage macros besides `j` (e.g. `{client_addr}` when the CONNECT says `U`).
    pub connect_family: u8,
    pub auth_user: Option<&'a str>,
}

impl<'a> Transaction<'a> {
    pub fn new(ip: &'a str, mail_from: &'a str, raw: &'a [u8]) -> Self {
        Transaction {
            ip,
            hostname: "client.example",
            helo: "client.example",
            mail_from,
            rcpt: &["bob@example.net"],
            raw,
            qid: "4ABCDEF",
            connect_family: b'4',
            auth_user: None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Mta<S> {
    /// Connects and negotiates (version, actions and protocol flags offered).
    pub async fn negotiate(s: S, version: u32, actions: u32, protocol: u32) -> Self {
        let mut m = Mta {
            s,
            buf: Vec::new(),
            version: 0,
            actions: 0,
            protocol: 0,
            macro_lists: Vec::new(),
        };
        let mut d = Vec::new();
        for v in [version, actions, protocol] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        m.send(b'O', &d).await;
        let (c, d) = m.recv().await.expect("OPTNEG reply");
        assert_eq!(c, b'O');
        m.version = u32::from_be_bytes(d[0..4].try_into().unwrap());
        m.actions = u32::from_be_bytes(d[4..8].try_into().unwrap());
        m.protocol = u32::from_be_bytes(d[8..12].try_into().unwrap());
        let mut rest = &d[12..];
        while rest.len() >= 5 {
            let stage = u32::from_be_bytes(rest[0..4].try_into().unwrap());
            let end = rest[4..]
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(rest.len() - 4);
            m.macro_lists.push((
                stage,
                String::from_utf8_lossy(&rest[4..4 + end]).into_owned(),
            ));
            rest = &rest[(4 + end + 1).min(rest.len())..];
        }
        m
    }

    pub async fn send(&mut self, cmd: u8, data: &[u8]) {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(cmd);
        p.extend_from_slice(data);
        self.s.write_all(&p).await.expect("write");
    }

    /// Writes raw octets (for malformed packets).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes).await
    }

    /// The next packet, or `None` when the milter closed the connection.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).await.ok()?;
        let n = u32::from_be_bytes(len) as usize;
        self.buf.resize(n, 0);
        self.s.read_exact(&mut self.buf).await.ok()?;
        Some((self.buf[0], self.buf[1..].to_vec()))
    }

    async fn macros(&mut self, stage: u8, pairs: &[(&str, &str)]) {
        let mut d = vec![stage];
        for (n, v) in pairs {
            d.extend_from_slice(n.as_bytes());
            d.push(0);
            d.extend_from_slice(v.as_bytes());
            d.push(0);
        }
        self.send(b'D', &d).await;
    }

    /// Sends a step; if the milter answers it (no `nr` flag), returns a non-continue reply.
    async fn step(&mut self, cmd: u8, data: &[u8], nr: u32) -> Option<u8> {
        self.send(cmd, data).await;
        if self.protocol & nr != 0 {
            return None;
        }
        loop {
            let (c, _) = self.recv().await.expect("reply");
            match c {
                b'p' => continue,
                b'c' => return None,
                other => return Some(other),
            }
        }
    }

    /// CONNECT and HELO of a new SMTP session.
    pub async fn connect(&mut self, t: &Transaction<'_>) -> Option<u8> {
        let mut pairs = vec![("j", HOSTNAME), ("{daemon_name}", "smtpd")];
        let underscore = format!("{} [{}]", t.hostname, t.ip);
        pairs.push(("_", &underscore));
        if t.connect_family == b'U' {
            pairs.push(("{client_addr}", t.ip));
        }
        self.macros(b'C', &pairs).await;
        let mut d = t.hostname.as_bytes().to_vec();
        d.push(0);
        d.push(t.connect_family);
        if t.connect_family != b'U' {
            d.extend_from_slice(&25u16.to_be_bytes());
            d.extend_from_slice(t.ip.as_bytes());
            d.push(0);
        }
        if let Some(c) = self.step(b'C', &d, proto::NR_CONN).await {
            return Some(c);
        }
        let mut d = t.helo.as_bytes().to_vec();
        d.push(0);
        self.step(b'H', &d, proto::NR_HELO).await
    }

    /// MAIL .. end of message; returns what the milter answered.
    pub async fn transaction(&mut self, t: &Transaction<'_>) -> Outcome {
        let mut out = Outcome::default();
        let mut mail_macros = vec![("i", t.qid), ("{mail_addr}", t.mail_from)];
        if let Some(u) = t.auth_user {
            mail_macros.push(("{auth_authen}", u));
        }
        self.macros(b'M', &mail_macros).await;
        let d = format!("<{}>\0", t.mail_from);
        if let Some(c) = self.step(b'M', d.as_bytes(), proto::NR_MAIL).await {
            out.code = c;
            return out;
        }
        for r in t.rcpt {
            self.macros(b'R', &[("{rcpt_addr}", r)]).await;
            let d = format!("<{r}>\0");
            if let Some(c) = self.step(b'R', d.as_bytes(), proto::NR_RCPT).await {
                out.code = c;
                return out;
            }
        }
        self.macros(b'T', &[("i", t.qid)]).await;
        if let Some(c) = self.step(b'T', b"", proto::NR_DATA).await {
            out.code = c;
            return out;
        }
        let (headers, body) = split_headers(t.raw);
        let leadspc = self.protocol & proto::HDR_LEADSPC != 0;
        for (n, v) in headers {
            // milter8.c: without HDR_LEADSPC one space (not tab) after the colon is eaten.
            let v = if !leadspc && v.first() == Some(&b' ') {
                &v[1..]
            } else {
                &v[..]
            };
            let mut d = n.clone();
            d.push(0);
            d.extend_from_slice(v);
            d.push(0);
            if let Some(c) = self.step(b'L', &d, proto::NR_HDR).await {
                out.code = c;
                return out;
            }
        }
        if let Some(c) = self.step(b'N', b"", proto::NR_EOH).await {
            out.code = c;
            return out;
        }
        for chunk in body.chunks(65535) {
            if let Some(c) = self.step(b'B', chunk, proto::NR_BODY).await {
                out.code = c;
                return out;
            }
        }
        self.macros(b'E', &[("i", t.qid)]).await;
        self.send(b'E', b"").await;
        loop {
            let Some((c, d)) = self.recv().await else {
                out.code = 0;
                return out;
            };
            match c {
                b'p' => out.progress += 1,
                b'h' | b'i' | b'm' | b'b' | b'q' => out.mods.push((c, d)),
                b'y' => {
                    out.code = c;
                    out.reply = cstrs(&d)[0].clone();
                    return out;
                }
                _ => {
                    out.code = c;
                    return out;
                }
            }
        }
    }

    /// A whole SMTP session with one message.
    pub async fn message(&mut self, t: &Transaction<'_>) -> Outcome {
        if let Some(c) = self.connect(t).await {
            return Outcome {
                code: c,
                ..Outcome::default()
            };
        }
        self.transaction(t).await
    }

    pub async fn quit(mut self) {
        self.send(b'Q', b"").await;
    }
}

/// Offers what Postfix 3.x offers with `milter_protocol = 6`.
pub async fn postfix_like<S: AsyncRead + AsyncWrite + Unpin>(s: S) -> Mta<S> {
    Mta::negotiate(s, 6, ALL_ACTIONS, ALL_PROTOCOL).await
}

/// Applies the milter's modifications the way an MTA does (inserts at the top, changes and
/// deletions by index, body replacement) and returns the delivered message.
pub fn apply(raw: &[u8], o: &Outcome, leadspc: bool) -> Vec<u8> {
    let (mut headers, mut body) = split_headers(raw);
    let space = |v: &str| {
        if leadspc {
            v.to_string()
        } else {
            format!(" {v}")
        }
    };
    for (c, d) in &o.mods {
        match c {
            b'm' => {
                let i = u32::from_be_bytes(d[0..4].try_into().unwrap()).max(1) as usize;
                let s = cstrs(&d[4..]);
                let pos = headers
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, _))| n.eq_ignore_ascii_case(s[0].as_bytes()))
                    .nth(i - 1)
                    .map(|(p, _)| p);
                match (pos, s[1].is_empty()) {
                    (Some(p), true) => {
                        headers.remove(p);
                    }
                    (Some(p), false) => headers[p].1 = space(&s[1]).into_bytes(),
                    (None, false) => {
                        headers.push((s[0].clone().into_bytes(), space(&s[1]).into_bytes()))
                    }
                    (None, true) => {}
                }
            }
            b'i' => {
                let i = u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize;
                let s = cstrs(&d[4..]);
                headers.insert(
                    i.min(headers.len()),
                    (s[0].clone().into_bytes(), space(&s[1]).into_bytes()),
                );
            }
            b'h' => {
                let s = cstrs(d);
                headers.push((s[0].clone().into_bytes(), space(&s[1]).into_bytes()));
            }
            _ => {}
        }
    }
    if let Some(b) = o.body() {
        body = b;
    }
    let mut out = Vec::new();
    for (n, v) in headers {
        out.extend_from_slice(&n);
        out.push(b':');
        for &b in &v {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

pub fn offers(actions: u32, bit: u32) -> bool {
    actions & bit != 0
}

pub const ADDHDRS: u32 = action::ADDHDRS;
