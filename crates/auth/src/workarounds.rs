//! Every workaround for mail-auth 0.13.3 (pinned: the last release that builds on rustc 1.95),
//! in one place. Each says what mail-auth does, what RFC it breaks, and the upstream release
//! that removes it; "none yet" means no release we know of does, and the conformance test
//! named tells when an upgrade makes it unneeded.
//!
//! | workaround | where | removed by |
//! | --- | --- | --- |
//! | relaxed body hash of trailing whitespace-only lines ([`relaxed_body_hash_fix`]) | here | mail-auth 0.15.0 |
//! | IPv4-mapped client treated as IPv4 for SPF ([`spf_client_ip`]) | here | none yet (tests/conformance_spf.rs) |
//! | `postmaster@` for a sender without a local-part ([`spf_sender`]) | here | none yet (tests/conformance_spf.rs) |
//! | a message with no header field still gets SPF and DMARC ([`parse_message`]) | here | none yet |
//! | DMARC judges our reading of From, not mail-auth's ([`dmarc_author`]) | here | none yet: a choice as much as a fix (the findings and DMARC must judge the same author) |
//! | a malformed header section verified as repaired, a pass over the repair distrusted | `MalformedSection` in lib.rs, `Headers::repaired` in unspoof-message | none yet |
//! | RFC 7208 checks the SPF evaluation skips (identity and record syntax, one record, void lookups, dotted names) | `spf_strict.rs` (docs/rfc.md; what is left to mail-auth: tests/known-differences/spf-rfc7208.txt) | none yet |
//! | the DMARC tree walk's and SPF's negative TXT answers (NXDOMAIN, NODATA) kept in our TXT cache ([`DmarcMisses`], the recorder of `spf_strict.rs`, [`remember_negative_answers`]) | here | none yet: mail-auth caches a TXT answer only when records came back |
//! | DMARC aggregate reports read strictly before mail-auth's lenient parser | `crates/reports/src/parse.rs` (it needs the report schema, not authentication) | none yet |
//!
//! The engine, the gateway and the milter reach mail-auth's verifiers only through this crate.

use std::{
    borrow::Borrow,
    hash::Hash,
    net::IpAddr,
    sync::Mutex,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use mail_auth::{
    AuthenticatedMessage, MessageAuthenticator, ResolverCache, Txt,
    hickory_resolver::{
        MAX_TTL,
        net::{DnsError, NetError},
        proto::rr::Name,
    },
};
use unspoof_dns::AnswerCache;
use unspoof_message::mailbox::Mailbox;

/// The client address SPF judges. RFC 7208 5 (and its test suite): an IPv4-mapped IPv6 client
/// (`::ffff:192.0.2.1`, how a dual-stack listener reports IPv4 peers) MUST be treated as IPv4;
/// mail-auth 0.13.3 would fetch AAAA records for `a` and `mx` and match it against ip6 ranges.
/// Removed by: none yet.
pub fn spf_client_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The MAIL FROM identity SPF checks. A null sender is checked as postmaster@HELO (RFC 7208
/// 2.4, which is also what mail-auth does for an empty sender); a sender without a local-part
/// is checked as postmaster@domain (RFC 7208 4.3; mail-auth 0.13.3 would leave `%{l}` empty).
/// Removed by: none yet.
pub fn spf_sender(mail_from: &str, helo: &str) -> String {
    if mail_from.is_empty() {
        format!("postmaster@{helo}")
    } else if mail_from.starts_with('@') {
        format!("postmaster{mail_from}")
    } else {
        mail_from.to_string()
    }
}

/// The message for the verifiers. mail-auth 0.13.3 returns nothing for a section without a
/// single field; such a message then has nothing to verify, and SPF and DMARC still run.
/// Removed by: none yet.
pub(crate) fn parse_message(bytes: &[u8]) -> AuthenticatedMessage<'_> {
    AuthenticatedMessage::parse(bytes).unwrap_or_else(|| AuthenticatedMessage {
        raw_message: bytes,
        body_offset: bytes.len() as u32,
        ..Default::default()
    })
}

/// DMARC judges the From that the findings and the reader see: our own reading (mail-parser,
/// the first From field, `unspoof_message::mailbox`), not mail-auth 0.13.3's, which stops at a
/// stray line and skips what follows it. Removed by: none yet.
pub(crate) fn dmarc_author(message: &mut AuthenticatedMessage<'_>, author: &[Mailbox]) {
    if !author.is_empty() {
        message.from = author
            .iter()
            .map(|m| m.address.to_ascii_lowercase())
            .collect();
    }
}

/// **Removed by mail-auth 0.15.0** (fixed upstream): remove this function and its call in
/// [`crate::authenticate_headers`] on upgrade (tests/conformance_dkim_relaxed_body.rs says when).
///
/// RFC 6376 3.4.4 relaxed body canonicalisation removes the trailing whitespace of each line
/// first and then ignores empty lines at the end, so "text\r\n \t\r\n\r\n" is "text\r\n".
/// mail-auth 0.13.3 keeps lines made only of spaces and tabs at the end of the body, so a
/// correctly signed relaxed-body DKIM signature (or ARC-Message-Signature) fails its body hash.
/// When the body ends in such lines, the relaxed body hashes mail-auth precomputed at parse
/// time (which both DKIM and ARC verification use) are recomputed from the body without them,
/// which is the same body under relaxed canonicalisation. Simple-body hashes keep the original:
/// there those lines are content (RFC 6376 3.4.3).
pub(crate) fn relaxed_body_hash_fix(message: &mut AuthenticatedMessage<'_>, raw: &[u8]) {
    use mail_auth::dkim::Canonicalization;
    let body = raw.get(message.body_offset as usize..).unwrap_or_default();
    // The end of the last line holding anything but SP/HTAB, CR, LF; 0 for a blank body.
    let keep = match body
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        Some(last) => body[last..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |n| last + n + 1),
        None => 0,
    };
    if !body[keep..].iter().any(|b| matches!(b, b' ' | b'\t')) {
        return; // no whitespace-only line at the end: mail-auth's hashes are right
    }
    let trimmed = &body[..keep];
    for (canonicalization, hash, length, body_hash) in &mut message.body_hashes {
        if *canonicalization == Canonicalization::Relaxed {
            *body_hash = hash
                .hash(canonicalization.canonical_body(trimmed, *length))
                .as_ref()
                .to_vec();
        }
    }
}

/// Most TXT names of one DMARC or SPF evaluation noted as missing from the cache: the tree
/// walks of the From domain and of each aligned identifier ask at most eight names each (RFC
/// 9989 4.10), SPF at most ten lookups (RFC 7208 4.6.4); a message that makes mail-auth ask
/// more only has the rest left to hickory's cache.
pub const MAX_TXT_MISSES: usize = 64;

/// mail-auth 0.13.3 puts a TXT answer into our cache only when records came back: a name
/// without records (NXDOMAIN, or NODATA) is asked of hickory's resolver again on every
/// message, and the DMARC tree walk asks several on every message (`_dmarc.<tld>.`, the
/// `_dmarc` names of a sender without a record): each a name parse, a lookup in hickory's
/// cache and a clone of its negative answer. Read through this, the TXT cache notes the names
/// that missed it; after the evaluation [`remember_negative_answers`] keeps the negative ones in
/// our cache, where mail-auth finds them next time and reads the same error it would have made
/// of hickory's answer. Removed by: none yet.
pub(crate) struct DmarcMisses<'c> {
    cache: &'c AnswerCache<Box<str>, Txt>,
    missed: Mutex<Vec<String>>,
}

impl<'c> DmarcMisses<'c> {
    pub(crate) fn new(cache: &'c AnswerCache<Box<str>, Txt>) -> Self {
        DmarcMisses {
            cache,
            missed: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn into_missed(self) -> Vec<String> {
        self.missed.into_inner().unwrap_or_default()
    }
}

impl ResolverCache<Box<str>, Txt> for DmarcMisses<'_> {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.cache.get(name);
        if found.is_none()
            && let Ok(mut missed) = self.missed.lock()
            && missed.len() < MAX_TXT_MISSES
            && let Some(key) = crate::spf_strict::key_text(name)
        {
            missed.push(key);
        }
        found
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.cache.remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        self.cache.insert(key, value, valid_until);
    }
}

/// After a DMARC evaluation read through [`DmarcMisses`] (or an SPF evaluation through
/// `spf_strict`'s recorder): each noted name that is still not
/// in `cache` (mail-auth inserted nothing: hickory answered with an error) and that hickory's
/// cache now holds as a negative answer with a TTL goes into `cache` as the error mail-auth
/// makes of it (`RecordNotFound` with the response code), for the rest of that TTL (at most
/// hickory's own cap, [`MAX_TTL`]). The caller calls this only when no check of the evaluation
/// ended in a DNS error (then every miss was a negative answer); hickory is asked only for
/// what it has cached: a lookup that is not answered at once (nothing cached, e.g. a negative
/// answer without an SOA, which hickory does not keep) is dropped, and the name stays
/// uncached as before.
pub(crate) fn remember_negative_answers(
    auth: &MessageAuthenticator,
    cache: &AnswerCache<Box<str>, Txt>,
    missed: Vec<String>,
) {
    for key in missed {
        if cache.get(key.as_str()).is_some() {
            continue;
        }
        let Ok(name) = Name::from_str_relaxed(key.as_str()) else {
            continue;
        };
        let Some(Err(NetError::Dns(DnsError::NoRecordsFound(none)))) =
            poll_once(auth.resolver().txt_lookup(name))
        else {
            continue;
        };
        let Some(ttl) = none.negative_ttl.filter(|&t| t > 0) else {
            continue;
        };
        let error = mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(none.response_code));
        cache.insert(
            key.into_boxed_str(),
            Txt::Error(error),
            Instant::now() + Duration::from_secs(u64::from(ttl.min(MAX_TTL))),
        );
    }
}

/// Polls `fut` once: its output if it is ready at once, `None` if it would have to wait.
fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spf_identities() {
        assert_eq!(spf_sender("", "mx.example"), "postmaster@mx.example");
        assert_eq!(spf_sender("@example.org", "mx"), "postmaster@example.org");
        assert_eq!(spf_sender("a@example.org", "mx"), "a@example.org");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            spf_client_ip(mapped),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(spf_client_ip(v6), v6);
    }

    /// The DMARC tree walk's negative answers end up in our TXT cache (mail-auth 0.13.3 keeps
    /// only answers with records), and the verdict read through them is the same.
    #[tokio::test]
    async fn the_dmarc_walks_negative_answers_are_kept_in_our_cache() {
        let mut zone = unspoof_dns::Zone::new();
        zone.add_txt("_dmarc.policy.example", "v=DMARC1; p=reject")
            .unwrap();
        let dns = unspoof_dns::Dns::zones(zone, Duration::from_millis(500))
            .await
            .unwrap();
        let input = crate::AuthInput {
            ip: Some("192.0.2.1".parse().unwrap()),
            helo: "mx.sender.example",
            mail_from: "a@sender.example",
            host_domain: "mx.test",
        };
        let msg = |from: &str| {
            format!("From: <a@{from}>\r\nTo: <b@rcpt.example>\r\nSubject: hi\r\n\r\nbody\r\n")
        };
        let cached = |name: &str| {
            let txt = &dns.caches().txt;
            txt.get(name)
                .or_else(|| txt.get(format!("{name}.").as_str()))
        };

        let none = msg("mail.nodmarc.example");
        let cold = crate::authenticate(none.as_bytes(), input.clone(), &dns).await;
        assert!(
            matches!(
                cached("_dmarc.mail.nodmarc.example"),
                Some(Txt::Error(mail_auth::Error::Dns(
                    mail_auth::DnsError::RecordNotFound(_)
                )))
            ),
            "the From domain's missing DMARC record is cached as not found"
        );
        let warm = crate::authenticate(none.as_bytes(), input.clone(), &dns).await;
        assert_eq!(cold.dmarc.result, warm.dmarc.result);
        assert_eq!(warm.dmarc.result.as_str(), "none");

        // A name with a record is not touched; the published policy still applies.
        let with = msg("policy.example");
        let cold = crate::authenticate(with.as_bytes(), input.clone(), &dns).await;
        let warm = crate::authenticate(with.as_bytes(), input, &dns).await;
        assert_eq!(cold.dmarc.result, warm.dmarc.result);
        assert_eq!(warm.dmarc.result.as_str(), "fail");
        assert!(matches!(
            cached("_dmarc.policy.example"),
            Some(Txt::Dmarc(_))
        ));
    }

    /// SPF's negative TXT answers (a HELO name or a sender domain without any TXT record) end
    /// up in our TXT cache too, and the SPF results read through them are the same.
    #[tokio::test]
    async fn spfs_negative_answers_are_kept_in_our_cache() {
        let mut zone = unspoof_dns::Zone::new();
        zone.add_txt("spf.example", "v=spf1 ip4:192.0.2.1 -all")
            .unwrap();
        let dns = unspoof_dns::Dns::zones(zone, Duration::from_millis(500))
            .await
            .unwrap();
        let cached = |name: &str| {
            let txt = &dns.caches().txt;
            txt.get(name)
                .or_else(|| txt.get(format!("{name}.").as_str()))
        };
        let msg = "From: <a@spf.example>\r\nTo: <b@rcpt.example>\r\nSubject: hi\r\n\r\nbody\r\n";
        for (helo, mail_from) in [
            ("mx.nospf.example", "a@nospf.example"),
            ("mx.nospf.example", "a@spf.example"),
        ] {
            let input = crate::AuthInput {
                ip: Some("192.0.2.1".parse().unwrap()),
                helo,
                mail_from,
                host_domain: "mx.test",
            };
            let cold = crate::authenticate(msg.as_bytes(), input.clone(), &dns).await;
            let warm = crate::authenticate(msg.as_bytes(), input, &dns).await;
            assert_eq!(cold.spf.result, warm.spf.result, "{mail_from}");
            assert_eq!(cold.spf_helo.result, warm.spf_helo.result, "{helo}");
            assert_eq!(warm.spf_helo.result.as_str(), "none");
        }
        for name in ["mx.nospf.example", "nospf.example"] {
            assert!(
                matches!(
                    cached(name),
                    Some(Txt::Error(mail_auth::Error::Dns(
                        mail_auth::DnsError::RecordNotFound(_)
                    )))
                ),
                "{name}: the missing SPF record is cached as not found"
            );
        }
        assert!(matches!(cached("spf.example"), Some(Txt::Spf(_))));
    }

    #[test]
    fn a_message_without_fields_still_has_a_body() {
        let m = parse_message(b"");
        assert_eq!(m.body_offset, 0);
        assert!(m.from.is_empty());
    }
}
