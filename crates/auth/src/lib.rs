//! SPF, DKIM, DMARC and ARC through mail-auth, reported in RFC 8601 words.
//!
//! mail-auth does the cryptography and the DNS walks; this module decides what its answers are
//! called. Every mapping that is a choice is listed here and in `docs/rfc.md`:
//!
//! | mail-auth says | we say | why |
//! | --- | --- | --- |
//! | DKIM `Neutral(FailedBodyHashMatch)` | `fail` | RFC 8601 2.7.1: the signature was acceptable but failed verification; RFC 6376 6.3 calls it PERMFAIL (body hash did not verify). OpenDKIM, dkimpy and rspamd agree; Node mailauth says neutral. |
//! | DKIM `Neutral(SignatureExpired)` | `neutral` | RFC 8601 2.7.1 "not otherwise able to be processed": an expired signature is not verified at all. |
//! | DKIM `Neutral(<syntax error>)` | `neutral` | RFC 8601 2.7.1: syntax errors are neutral. |
//! | DKIM `PermError(no key record)` | `permerror` | RFC 6376 6.1.2 PERMFAIL (no key for signature); OpenDKIM and the bench kit agree. |
//! | DKIM `TempError` | `temperror` | DNS did not answer in time. |
//! | ARC `Neutral(...)` (broken or malformed chain) | `fail` | RFC 8617 5.2: a chain that does not validate is `fail`; "neutral" is not an ARC word. |
//! | DMARC `Fail` with a DKIM or SPF temperror | `temperror` | RFC 9989: a result that a retry could change is not a fail. |
//! | no DNS (offline) | `none`, `checked: false` | we say what we did not check instead of guessing. |

use std::net::IpAddr;

use mail_auth::{
    DkimOutput, DkimResult, DmarcResult, Error as MaError, SpfResult,
    arc::ChainValidation,
    common::crypto::Algorithm,
    dkim::DkimError,
    dmarc::{Alignment, Policy as DmarcPolicy, verify::DmarcParameters},
};
use serde::Serialize;

use unspoof_dns::Dns;
use unspoof_message::Headers;

mod spf_explain;
mod spf_strict;
pub mod workarounds;
pub use spf_strict::{is_spf_record_text, spf_record_problem};

/// An RFC 8601 result word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Word {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
    /// DKIM only (RFC 8601 2.7.1): signed, but the signature was not acceptable to us (it
    /// verified only over a repaired header section, see `MalformedSection`).
    Policy,
}

impl Word {
    pub fn as_str(self) -> &'static str {
        match self {
            Word::Pass => "pass",
            Word::Fail => "fail",
            Word::SoftFail => "softfail",
            Word::Neutral => "neutral",
            Word::None => "none",
            Word::TempError => "temperror",
            Word::PermError => "permerror",
            Word::Policy => "policy",
        }
    }
}

impl std::fmt::Display for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One SPF check (RFC 7208) of one identity.
#[derive(Debug, Clone, Serialize)]
pub struct SpfCheck {
    /// `mailfrom` or `helo` (RFC 8601 2.7.2 ptype smtp).
    pub identity: &'static str,
    /// The domain whose record was evaluated.
    pub domain: String,
    /// The full identity: the MAIL FROM address, or the HELO name.
    pub sender: String,
    pub result: Word,
    /// The mechanism that decided, e.g. `include:_spf.example.net -> ip4:192.0.2.0/24`, or
    /// `default (no mechanism matched)`.
    pub mechanism: Option<String>,
    /// The domain's explanation string (`exp=`) on fail.
    pub explanation: Option<String>,
    /// Why this identity was not checked (result `none`), when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_checked: Option<String>,
}

/// One DKIM-Signature header's verification (RFC 6376).
#[derive(Debug, Clone, Serialize)]
pub struct DkimCheck {
    pub result: Word,
    /// `d=`; empty when the signature could not be parsed.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    pub algorithm: Option<&'static str>,
    /// `i=`, the agent or user identifier.
    pub identity: Option<String>,
    /// First characters of `b=` (RFC 6008 header.b), so two signatures of one domain can be
    /// told apart.
    pub b: Option<String>,
    /// Why it did not pass, in plain words.
    pub reason: Option<String>,
}

/// DMARC (RFC 9989) for the RFC5322.From domain.
#[derive(Debug, Clone, Serialize)]
pub struct DmarcCheck {
    pub result: Word,
    /// The RFC5322.From domain.
    pub domain: String,
    /// The policy that applies to this domain after p/sp/np selection: none, quarantine,
    /// reject; `None` without a record.
    pub policy: Option<&'static str>,
    /// Which identifiers aligned and passed: `dkim`, `spf`.
    pub aligned: Vec<&'static str>,
    pub adkim: Option<&'static str>,
    pub aspf: Option<&'static str>,
    /// `t=y`: the domain is testing its policy (RFC 9989), receivers should not enforce it.
    pub testing: bool,
    pub reason: Option<String>,
}

/// One ARC set's seal.
#[derive(Debug, Clone, Serialize)]
pub struct ArcSealer {
    pub instance: u32,
    pub domain: String,
    pub selector: String,
    /// The `cv=` this sealer claimed.
    pub cv: &'static str,
}

/// ARC chain validation (RFC 8617).
#[derive(Debug, Clone, Serialize)]
pub struct ArcCheck {
    pub result: Word,
    pub sealers: Vec<ArcSealer>,
    pub reason: Option<String>,
}

/// Everything authentication said about one message.
#[derive(Debug, Clone, Serialize)]
pub struct AuthResults {
    /// False when DNS was off (`--offline`): every result below is then `none`, not checked.
    pub checked: bool,
    /// Why nothing was checked, when `checked` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_checked: Option<String>,
    /// What was malformed in the header section, when it was: DKIM and ARC then ran over the
    /// section without its stray lines and no pass over that counts (see `MalformedSection`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed_section: Option<String>,
    pub spf: SpfCheck,
    pub spf_helo: SpfCheck,
    pub dkim: Vec<DkimCheck>,
    pub dmarc: DmarcCheck,
    pub arc: ArcCheck,
}

impl AuthResults {
    /// The single DKIM word a summary needs: `pass` if any signature passed, otherwise the
    /// most telling failure (fail > permerror > temperror > neutral), `none` if unsigned.
    pub fn dkim_summary(&self) -> Word {
        const ORDER: [Word; 5] = [
            Word::Pass,
            Word::Fail,
            Word::PermError,
            Word::TempError,
            Word::Neutral,
        ];
        ORDER
            .into_iter()
            .find(|w| self.dkim.iter().any(|d| d.result == *w))
            .unwrap_or(Word::None)
    }

    /// Domains (`d=`) of the signatures that passed, sorted and deduplicated.
    pub fn dkim_pass_domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .dkim
            .iter()
            .filter(|c| c.result == Word::Pass)
            .map(|c| c.domain.to_ascii_lowercase())
            .collect();
        d.sort();
        d.dedup();
        d
    }

    pub fn unchecked(env: &AuthInput<'_>, why: &str) -> Self {
        AuthResults {
            checked: false,
            not_checked: Some(why.into()),
            malformed_section: None,
            spf: SpfCheck {
                identity: "mailfrom",
                domain: domain_of(env.mail_from).unwrap_or_default().to_string(),
                sender: env.mail_from.to_string(),
                result: Word::None,
                mechanism: None,
                explanation: None,
                not_checked: Some(why.into()),
            },
            spf_helo: SpfCheck {
                identity: "helo",
                domain: env.helo.to_string(),
                sender: env.helo.to_string(),
                result: Word::None,
                mechanism: None,
                explanation: None,
                not_checked: Some(why.into()),
            },
            dkim: Vec::new(),
            dmarc: DmarcCheck {
                result: Word::None,
                domain: String::new(),
                policy: None,
                aligned: Vec::new(),
                adkim: None,
                aspf: None,
                testing: false,
                reason: Some(format!("not checked: {why}")),
            },
            arc: ArcCheck {
                result: Word::None,
                sealers: Vec::new(),
                reason: None,
            },
        }
    }
}

/// What authentication needs from the envelope.
#[derive(Debug, Clone, Copy)]
pub struct AuthInput<'a> {
    pub ip: Option<IpAddr>,
    pub helo: &'a str,
    /// The MAIL FROM address without brackets; empty for the null sender.
    pub mail_from: &'a str,
    /// Our own host name, for SPF's %{r} macro.
    pub host_domain: &'a str,
}

fn domain_of(addr: &str) -> Option<&str> {
    addr.rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

/// Runs SPF (HELO and MAIL FROM), every DKIM signature, ARC and then DMARC. `raw` must have
/// CRLF line endings.
pub async fn authenticate(raw: &[u8], input: AuthInput<'_>, dns: &Dns) -> AuthResults {
    let headers = Headers::parse(raw);
    let (author, _) = unspoof_message::mailbox::read_addresses(&headers);
    authenticate_headers(raw, &headers, &author, input, dns).await
}

/// [`authenticate`] with the header section already split by [`Headers::parse`] and its From
/// mailboxes read (`author`, as the findings read them: the engine has both). No input switches authentication off: SPF needs only the envelope, DMARC only our
/// own reading of From, so a header section mail-auth refuses or misreads still gets both (see
/// [`MalformedSection`]); only DNS being off stops everything, and a missing client IP stops
/// only SPF.
pub async fn authenticate_headers(
    raw: &[u8],
    headers: &Headers<'_>,
    author: &[unspoof_message::mailbox::Mailbox],
    input: AuthInput<'_>,
    dns: &Dns,
) -> AuthResults {
    let Some(auth) = dns.authenticator() else {
        return AuthResults::unchecked(&input, NOT_CHECKED_OFFLINE);
    };
    let ip = input.ip.map(workarounds::spf_client_ip);

    // A malformed section is verified as repaired (its stray lines left out), and nothing that
    // passes over the repair is trusted more than the bytes as sent: see MalformedSection.
    let repaired = headers.repaired(raw);
    let bytes: &[u8] = repaired.as_deref().unwrap_or(raw);
    let malformed = headers.is_malformed();
    let mut message = workarounds::parse_message(bytes);
    workarounds::relaxed_body_hash_fix(&mut message, bytes);
    workarounds::dmarc_author(&mut message, author);
    let has_from = !message.from.is_empty();
    let budget = dns.timeout();
    // An SPF check is several queries in a row: one that times out late (the exp= text, which
    // RFC 7208 6.2 says to skip on a DNS error) must not turn a finished fail into temperror,
    // so SPF gets the same two-query budget as the other checks.
    let spf_budget = budget * 2;

    // SPF: HELO identity (RFC 7208 2.3) and MAIL FROM identity (2.4). mail-auth evaluates;
    // spf_strict adds the RFC 7208 checks it skips (identity syntax, record syntax, one record,
    // void lookups) and says why when that changes the result.
    let mail_from_for_spf = workarounds::spf_sender(input.mail_from, input.helo);
    let (helo, host) = (input.helo, input.host_domain);
    let spf_helo = async {
        let ip = ip?;
        if input.helo.is_empty() {
            return None;
        }
        bounded(
            spf_budget,
            spf_strict::check_host(dns, auth, ip, helo, host, None),
        )
        .await
    };
    let spf_mf = async {
        let ip = ip?;
        bounded(
            spf_budget,
            spf_strict::check_host(dns, auth, ip, helo, host, Some(&mail_from_for_spf)),
        )
        .await
    };
    let dkim = bounded(budget * 2, auth.verify_dkim(dns.params(&message)));
    let arc = bounded(budget * 2, auth.verify_arc(dns.params(&message)));
    let (spf_helo, spf_mf, dkim_out, arc_out) = tokio::join!(spf_helo, spf_mf, dkim, arc);

    let spf_mf_domain = domain_of(&mail_from_for_spf).unwrap_or("").to_string();
    let (spf_mf_out, spf_mf_problem) = match (ip, spf_mf) {
        (None, _) => (
            mail_auth::SpfOutput::new(spf_mf_domain).with_result(SpfResult::None),
            None,
        ),
        (Some(_), Some(checked)) => (checked.output, checked.problem),
        (Some(_), None) => (
            mail_auth::SpfOutput::new(spf_mf_domain).with_result(SpfResult::TempError),
            None,
        ),
    };
    let dkim_out: Vec<DkimOutput<'_>> = dkim_out.unwrap_or_default();

    let mut spf = spf_check("mailfrom", &mail_from_for_spf, &spf_mf_out);
    if let Some(ip) = ip {
        if spf_mf_problem.is_some() {
            spf.mechanism = spf_mf_problem;
        } else if spf.result != Word::None && spf.result != Word::TempError {
            spf.mechanism =
                spf_explain::explain(dns, ip, &spf.domain, &mail_from_for_spf, input.helo).await;
        }
    } else {
        spf.not_checked = Some(NOT_CHECKED_NO_IP.into());
    }
    let spf_helo = match (ip, spf_helo) {
        (Some(ip), Some(checked)) => {
            let mut c = spf_check("helo", input.helo, &checked.output);
            if checked.problem.is_some() {
                c.mechanism = checked.problem;
            } else if c.result != Word::None && c.result != Word::TempError {
                let sender = format!("postmaster@{}", input.helo);
                c.mechanism = spf_explain::explain(dns, ip, input.helo, &sender, input.helo).await;
            }
            c
        }
        (ip, _) => SpfCheck {
            identity: "helo",
            domain: input.helo.to_string(),
            sender: input.helo.to_string(),
            result: if input.helo.is_empty() || ip.is_none() {
                Word::None
            } else {
                Word::TempError
            },
            mechanism: None,
            explanation: None,
            not_checked: ip.is_none().then(|| NOT_CHECKED_NO_IP.into()),
        },
    };

    let mut dkim: Vec<DkimCheck> = dkim_out.iter().map(dkim_check).collect();
    let mut arc = match &arc_out {
        Some(out) => arc_check(out),
        None => ArcCheck {
            result: Word::TempError,
            sealers: Vec::new(),
            reason: Some("DNS timed out".into()),
        },
    };
    let section = malformed.then(|| MalformedSection::of(headers, raw));
    if section.is_some() {
        MalformedSection::distrust(&mut dkim, &mut arc);
    }

    let mf_domain = domain_of(&mail_from_for_spf)
        .unwrap_or(input.helo)
        .to_string();
    // Over a repaired section no DKIM result counts for DMARC (see MalformedSection).
    let dkim_for_dmarc: &[DkimOutput<'_>] = if section.is_some() { &[] } else { &dkim_out };
    let dmarc_params = DmarcParameters::new(&message, dkim_for_dmarc, &mf_domain, &spf_mf_out);
    // The walk's negative answers are kept in our TXT cache (see workarounds::DmarcMisses).
    let misses = workarounds::DmarcMisses::new(&dns.caches().txt);
    let dmarc_out = bounded(
        budget * 2,
        auth.verify_dmarc(dns.params(dmarc_params).with_txt_cache(&misses)),
    )
    .await;
    if dmarc_out.as_ref().is_some_and(|out| {
        ![out.dkim_result(), out.spf_result()]
            .iter()
            .any(|r| matches!(r, DmarcResult::TempError(_) | DmarcResult::PermError(_)))
    }) {
        workarounds::remember_negative_answers(auth, &dns.caches().txt, misses.into_missed());
    }
    let from_domain = message
        .from
        .iter()
        .find_map(|f| domain_of(f))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut dmarc = match dmarc_out {
        Some(out) => dmarc_check(&out, from_domain, &dkim, &spf),
        None => DmarcCheck {
            result: Word::TempError,
            domain: from_domain,
            policy: None,
            aligned: Vec::new(),
            adkim: None,
            aspf: None,
            testing: false,
            reason: Some("DNS timed out".into()),
        },
    };
    if !has_from && dmarc.result == Word::None {
        dmarc.reason = Some(NO_AUTHOR.into());
    }

    AuthResults {
        checked: true,
        not_checked: None,
        malformed_section: section.map(|s| s.description),
        spf,
        spf_helo,
        dkim,
        dmarc,
        arc,
    }
}

/// Why nothing was checked: the DNS view is off (`--offline`, or `Dns::offline()`).
const NOT_CHECKED_OFFLINE: &str =
    "DNS is off (offline analysis): SPF, DKIM, DMARC and ARC need DNS answers";

/// Why SPF was not checked: SPF judges the connecting client's address.
const NOT_CHECKED_NO_IP: &str = "the client IP is unknown: the envelope gave none and no \
     Received header names the origin, and SPF judges the client's address";

/// Why DMARC had nothing to judge.
const NO_AUTHOR: &str = "the message has no From field: DMARC has no author domain to evaluate";

/// A header section mail-auth refuses (its first line is a lone space, a tab, a word without a
/// colon, an encoded word ...) or reads differently from us (it stops at the first stray line
/// and takes the rest of the section for the body). Authentication still runs: SPF needs only
/// the envelope; DKIM and ARC run over the section rebuilt from its fields
/// ([`Headers::repaired`]), but a signature or chain that verifies only over that repair proves
/// nothing about the bytes as sent (a forger can put a valid signature of someone else's
/// message under a line that hides it from some readers), so such a pass becomes DKIM `policy`
/// (RFC 8601 2.7.1: signed, but the signature was not acceptable) and ARC `fail`, and DMARC
/// counts no DKIM result at all; DMARC is evaluated for our own reading of From.
struct MalformedSection {
    description: String,
}

impl MalformedSection {
    fn of(headers: &Headers<'_>, raw: &[u8]) -> Self {
        let description = match headers.stray_lines.first() {
            Some(&at) => {
                let line = raw[at..]
                    .split(|&b| b == b'\n')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii_end();
                let shown: String = String::from_utf8_lossy(&line[..line.len().min(60)])
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                format!(
                    "{} line(s) of the header section are neither a field nor a continuation; \
                     the first: {shown:?}",
                    headers.stray_lines.len()
                )
            }
            None => "the message has no header field".into(),
        };
        MalformedSection { description }
    }

    /// Downgrades what verified only over the repaired section.
    fn distrust(dkim: &mut [DkimCheck], arc: &mut ArcCheck) {
        const WHY: &str = "verified only with the malformed header lines left out; the message \
                           as sent does not verify";
        for d in dkim.iter_mut().filter(|d| d.result == Word::Pass) {
            d.result = Word::Policy;
            d.reason = Some(WHY.into());
        }
        if arc.result == Word::Pass {
            arc.result = Word::Fail;
            arc.reason = Some(WHY.into());
        }
    }
}

/// Runs `fut` for at most `budget`; `None` when it took longer (a DNS server that never
/// answers must not hold a message).
async fn bounded<F: std::future::Future>(budget: std::time::Duration, fut: F) -> Option<F::Output> {
    tokio::time::timeout(budget, fut).await.ok()
}

fn spf_word(r: SpfResult) -> Word {
    match r {
        SpfResult::Pass => Word::Pass,
        SpfResult::Fail => Word::Fail,
        SpfResult::SoftFail => Word::SoftFail,
        SpfResult::Neutral => Word::Neutral,
        SpfResult::TempError => Word::TempError,
        SpfResult::PermError => Word::PermError,
        SpfResult::None => Word::None,
    }
}

fn spf_check(identity: &'static str, sender: &str, out: &mail_auth::SpfOutput) -> SpfCheck {
    SpfCheck {
        identity,
        domain: out.domain().to_string(),
        sender: sender.to_string(),
        result: spf_word(out.result()),
        mechanism: None,
        explanation: out.explanation().map(str::to_string),
        not_checked: None,
    }
}

/// Plain words for a mail-auth error.
fn reason(err: &MaError) -> String {
    match err {
        MaError::Dkim(DkimError::FailedBodyHashMatch) => {
            "body hash did not verify (the body was changed after signing)".into()
        }
        MaError::Crypto(_) => format!("signature did not verify ({err})"),
        MaError::Dns(mail_auth::DnsError::RecordNotFound(_)) => {
            "no key record in DNS for this selector".into()
        }
        MaError::Dns(mail_auth::DnsError::InvalidRecordType) => {
            "the key record in DNS is not a valid DKIM key".into()
        }
        MaError::Dns(mail_auth::DnsError::Resolver(_)) => "DNS did not answer in time".into(),
        other => other.to_string(),
    }
}

fn dkim_word(result: &DkimResult) -> (Word, Option<String>) {
    match result {
        DkimResult::Pass => (Word::Pass, None),
        DkimResult::Neutral(e @ MaError::Dkim(DkimError::FailedBodyHashMatch)) => {
            (Word::Fail, Some(reason(e)))
        }
        DkimResult::Neutral(e) => (Word::Neutral, Some(reason(e))),
        DkimResult::Fail(e) => (Word::Fail, Some(reason(e))),
        DkimResult::PermError(e) => (Word::PermError, Some(reason(e))),
        DkimResult::TempError(e) => (Word::TempError, Some(reason(e))),
        DkimResult::None => (Word::None, None),
    }
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RsaSha1 => "rsa-sha1",
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
    }
}

fn dkim_check(out: &DkimOutput<'_>) -> DkimCheck {
    let (result, reason) = dkim_word(out.result());
    let sig = out.signature();
    DkimCheck {
        result,
        domain: sig.map(|s| s.d.to_ascii_lowercase()).unwrap_or_default(),
        selector: sig.map(|s| s.s.clone()).unwrap_or_default(),
        algorithm: sig.map(|s| algorithm_name(s.a)),
        identity: sig.map(|s| s.i.clone()).filter(|i| !i.is_empty()),
        b: sig.map(|s| b64_prefix(&s.b)),
        reason,
    }
}

/// The first 8 characters of the base64 form of `b=` (RFC 6008 2).
pub fn b64_prefix(b: &[u8]) -> String {
    // Six octets are eight characters; a shorter value's padding is left off.
    let line = unspoof_message::codec::base64_line(&b[..b.len().min(6)]);
    line.trim_end_matches('=').to_string()
}

fn arc_check(out: &mail_auth::ArcOutput<'_>) -> ArcCheck {
    let sealers = out
        .sets()
        .iter()
        .map(|set| ArcSealer {
            instance: set.seal.header.i,
            domain: set.seal.header.d.to_ascii_lowercase(),
            selector: set.seal.header.s.clone(),
            cv: match set.seal.header.cv {
                ChainValidation::None => "none",
                ChainValidation::Fail => "fail",
                ChainValidation::Pass => "pass",
            },
        })
        .collect();
    let (result, reason) = match out.result() {
        DkimResult::Pass => (Word::Pass, None),
        DkimResult::None => (Word::None, None),
        // RFC 8617 5.2: a chain that does not validate, for whatever reason, is "fail".
        DkimResult::Neutral(e) | DkimResult::Fail(e) | DkimResult::PermError(e) => {
            (Word::Fail, Some(reason(e)))
        }
        DkimResult::TempError(e) => (Word::TempError, Some(reason(e))),
    };
    ArcCheck {
        result,
        sealers,
        reason,
    }
}

fn policy_name(p: DmarcPolicy) -> Option<&'static str> {
    match p {
        DmarcPolicy::None => Some("none"),
        DmarcPolicy::Quarantine => Some("quarantine"),
        DmarcPolicy::Reject => Some("reject"),
        DmarcPolicy::Unspecified => None,
    }
}

fn alignment_name(a: &Alignment) -> &'static str {
    match a {
        Alignment::Relaxed => "relaxed",
        Alignment::Strict => "strict",
    }
}

fn dmarc_check(
    out: &mail_auth::DmarcOutput,
    from_domain: String,
    dkim: &[DkimCheck],
    spf_check: &SpfCheck,
) -> DmarcCheck {
    let spf = spf_check.result;
    let mut aligned = Vec::new();
    if *out.dkim_result() == DmarcResult::Pass {
        aligned.push("dkim");
    }
    if *out.spf_result() == DmarcResult::Pass {
        aligned.push("spf");
    }
    let record = out.dmarc_record();
    let (result, reason) = match out.result() {
        DmarcResult::Pass => (Word::Pass, None),
        DmarcResult::None => (Word::None, None),
        DmarcResult::TempError(e) => (Word::TempError, Some(reason(&e))),
        DmarcResult::PermError(e) => (Word::PermError, Some(reason(&e))),
        DmarcResult::Fail(_) => {
            // A retry could still pass if an identifier's own check was a temperror.
            if dkim.iter().any(|d| d.result == Word::TempError) || spf == Word::TempError {
                (
                    Word::TempError,
                    Some("an identifier's check timed out".into()),
                )
            } else {
                (Word::Fail, Some(dmarc_fail_reason(dkim, spf_check)))
            }
        }
    };
    let domain = if out.domain().is_empty() {
        from_domain
    } else {
        out.domain().to_string()
    };
    DmarcCheck {
        result,
        domain,
        policy: record.and_then(|_| policy_name(out.policy())),
        aligned,
        adkim: record.map(|r| alignment_name(&r.adkim)),
        aspf: record.map(|r| alignment_name(&r.aspf)),
        testing: record.is_some_and(|r| r.t),
        reason,
    }
}

fn dmarc_fail_reason(dkim: &[DkimCheck], spf: &SpfCheck) -> String {
    let dkim_pass = dkim.iter().any(|d| d.result == Word::Pass);
    if let Some(why) = &spf.not_checked {
        return if dkim_pass {
            format!(
                "DKIM passed but for a domain not aligned with From; SPF was not checked ({why})"
            )
        } else {
            format!("no aligned DKIM signature passed; SPF was not checked ({why})")
        };
    }
    let untrusted = dkim.iter().any(|d| d.result == Word::Policy);
    let mut reason: String = match (dkim_pass, spf.result == Word::Pass) {
        (false, false) => "neither DKIM nor SPF passed".into(),
        (true, false) => {
            "DKIM passed but for a domain not aligned with From; SPF did not pass".into()
        }
        (false, true) => "SPF passed but for a domain not aligned with From; no DKIM pass".into(),
        (true, true) => "DKIM and SPF passed, but neither for a domain aligned with From".into(),
    };
    if untrusted {
        reason.push_str(
            " (a DKIM signature verified only over the repaired header section and does not count)",
        );
    }
    reason
}

/// Quotes a value for an Authentication-Results pvalue (RFC 8601 2.2): a plain token or
/// `local@domain` passes as is; anything else becomes an RFC 5322 quoted-string, so a hostile
/// domain such as `legit.com'a.attacker.com` or `x@legit.com(a.attacker.com` cannot open a
/// comment or start a second result.
pub fn ar_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    push_ar_value(&mut out, value);
    out
}

/// [`ar_value`] written at the end of `out`.
fn push_ar_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b))
        && value.bytes().filter(|&b| b == b'@').count() <= 1
        && !value.starts_with('@');
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Makes text safe inside an RFC 5322 comment: no parentheses, backslashes or controls.
pub fn ar_comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_ar_comment(&mut out, text);
    out
}

/// [`ar_comment`] written at the end of `out`.
fn push_ar_comment(out: &mut String, text: &str) {
    out.extend(text.chars().map(|c| match c {
        '(' => '[',
        ')' => ']',
        '\\' => '/',
        c if c.is_control() => ' ',
        c => c,
    }));
}

impl AuthResults {
    /// The RFC 8601 Authentication-Results header field (name, value, CRLF), folded one
    /// result per line. `authserv_id` names us; `ip` is the connecting client.
    pub fn header(&self, authserv_id: &str, ip: Option<IpAddr>) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(256 + 160 * self.dkim.len());
        out.push_str("Authentication-Results: ");
        push_ar_value(&mut out, authserv_id);
        if !self.checked {
            out.push_str("; none\r\n");
            return out;
        }
        out.push(';');
        // Each result on a line of its own: `;` ends every one but the last.
        let mut first = true;
        let mut result = |out: &mut String| {
            if !first {
                out.push(';');
            }
            first = false;
            out.push_str("\r\n\t");
        };
        for d in &self.dkim {
            result(&mut out);
            let _ = write!(out, "dkim={}", d.result);
            if let Some(r) = &d.reason {
                out.push_str(" (");
                push_ar_comment(&mut out, r);
                out.push(')');
            }
            if !d.domain.is_empty() {
                out.push_str(" header.d=");
                push_ar_value(&mut out, &d.domain);
                out.push_str(" header.s=");
                push_ar_value(&mut out, &d.selector);
            }
            if let Some(a) = d.algorithm {
                out.push_str(" header.a=");
                out.push_str(a);
            }
            if let Some(b) = &d.b {
                out.push_str(" header.b=");
                push_ar_value(&mut out, b);
            }
        }
        if self.dkim.is_empty() {
            result(&mut out);
            out.push_str("dkim=none");
        }
        result(&mut out);
        let _ = write!(out, "spf={}", self.spf.result);
        if let Some(m) = &self.spf.mechanism {
            out.push_str(" (");
            push_ar_comment(&mut out, m);
            out.push(')');
        }
        out.push_str(" smtp.mailfrom=");
        push_ar_value(&mut out, &self.spf.sender);
        if !self.spf_helo.sender.is_empty() {
            result(&mut out);
            let _ = write!(out, "spf={} smtp.helo=", self.spf_helo.result);
            push_ar_value(&mut out, &self.spf_helo.sender);
        }
        result(&mut out);
        let _ = write!(out, "dmarc={}", self.dmarc.result);
        if let Some(p) = self.dmarc.policy {
            let _ = write!(out, " (p={p})");
        }
        if !self.dmarc.domain.is_empty() {
            out.push_str(" header.from=");
            push_ar_value(&mut out, &self.dmarc.domain);
        }
        result(&mut out);
        let _ = write!(out, "arc={}", self.arc.result);
        if let Some(last) = self.arc.sealers.iter().max_by_key(|s| s.instance) {
            let _ = write!(out, " (i={} sealer ", last.instance);
            push_ar_comment(&mut out, &last.domain);
            out.push(')');
        }
        if let Some(ip) = ip {
            let _ = write!(out, " smtp.remote-ip={ip}");
        }
        out.push_str("\r\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_are_quoted() {
        assert_eq!(ar_value("example.com"), "example.com");
        assert_eq!(ar_value("a@example.com"), "a@example.com");
        assert_eq!(
            ar_value("legit.com'a.attacker.com"),
            "\"legit.com'a.attacker.com\""
        );
        assert_eq!(
            ar_value("x@legit.com(a.attacker.com"),
            "\"x@legit.com(a.attacker.com\""
        );
        assert_eq!(ar_value("a\"; dkim=pass"), "\"a\\\"; dkim=pass\"");
        assert_eq!(ar_value("a;b"), "\"a;b\"");
        assert_eq!(ar_value(""), "\"\"");
        assert_eq!(ar_comment("x (y) \\z"), "x [y] /z");
    }

    #[test]
    fn b_prefix_is_base64() {
        assert_eq!(b64_prefix(b"\x00\x10\x83\x10\x51\x87"), "ABCDEFGH");
    }
}
