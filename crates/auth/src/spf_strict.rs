//! RFC 7208 checks that mail-auth 0.13.3's SPF evaluation skips, done on our side around it.
//!
//! mail-auth evaluates check_host() (we neither fork nor patch it); [`check_host`] runs that
//! evaluation unchanged and adds what it leaves out. A result is corrected only where the RFC
//! decides it; everything else keeps mail-auth's word.
//!
//! Before the evaluation:
//! - **RFC 7208 4.3**: an identity whose domain is malformed (an address literal such as
//!   `[192.0.2.1]`, an empty label, a label over 63 octets, over 253 octets, spaces or control
//!   characters, a single label) gives `none` without any DNS query.
//!
//! During the evaluation mail-auth reads and fills its answer caches through a [`Recorder`] that
//! passes everything on to the [`Dns`] caches and notes which names were asked and what came back.
//! It changes two answers:
//! - **RFC 7208 5.5, 7.3**: PTR names are handed over without their root dot, so `ptr` matches
//!   a validated name equal to its target (mail-auth compares `e3.example.com.` with
//!   `e3.example.com`) and `%{p}` expands to a usable name. When the PTR set was not cached
//!   yet, mail-auth saw it with dots, so the evaluation is run once more (now from the caches).
//! - **RFC 7208 4.8, 5**: a target name that no DNS query can carry (an empty label, a label over
//!   63 octets) does not match, instead of mail-auth's temperror: for `a` and `mx` it is
//!   answered as an empty set. Not for `exists`: mail-auth takes any cached answer, even an
//!   empty one, as a match, so once a record with `exists` is on the evaluation path such names
//!   are left to mail-auth (temperror).
//!
//! Both are skipped when a domain on the path may end in a dot (the identity or HELO name, or a
//! `ptr`, `include` or `redirect` target written with one): RFC 7208 7.3 ignores that dot and
//! mail-auth keeps it, so an empty label may be mail-auth's own doing and a dotted `ptr` target
//! needs the dotted PTR name. There mail-auth's behaviour is kept as it is.
//!
//! After the evaluation, on the records mail-auth actually used (the domain's own and every
//! include/redirect target it reached, nothing more), re-read as raw TXT:
//! - **RFC 7208 4.5**: more than one `v=spf1` record at a name is permerror (mail-auth takes
//!   the first that parses). A record is selected when it starts with `v=spf1` (any case)
//!   followed by a space or its end.
//! - **RFC 7208 3.1, 4.6, 4.6.1, 5.x, 6, 7.1, 12** (syntax): any byte other than printable
//!   US-ASCII or a space separator (mail-auth skips non-ASCII and splits on CR, LF, TAB);
//!   unknown mechanisms; CIDR lengths out of range (ip4 0-32, ip6 0-128) or with a leading
//!   zero, and `a/24/64` for a dual length; ip4/ip6 networks that do not parse; modifier names
//!   not `ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )`; `redirect` and `exp` twice; a
//!   domain-spec that is empty, has bad macro syntax (or `c`, `r`, `t` outside explanation
//!   text, RFC 7208 7.3) or does not end in a macro or `.toplabel` (`a:museum`, `a:abc.123`,
//!   `a:example.com:8080`, `redirect=-all`). Any of these is permerror. A record mail-auth
//!   could not parse although it is valid stays as mail-auth said.
//! - **RFC 7208 4.6.4**: more than two void lookups (no answer or NXDOMAIN) is permerror.
//!   Counted conservatively, per distinct name, only where the recorder can tell: the names of
//!   `a` and `mx` terms; not the hosts of an MX set, not PTR names, not `exists` (mail-auth
//!   does not cache its answers), not `exp=`. Not applied to a temperror (a timeout is not
//!   void).
//! - **RFC 7208 6.2**: the explanation is dropped when the `exp=` name has more than one TXT
//!   record or text outside printable US-ASCII.
//!
//! Cost: the recorder notes a few names per evaluation; the verdict on a record is cached by
//! the identity of mail-auth's parsed record (`Arc<Spf>`), so a record is re-read once per
//! cache lifetime, from hickory's cache right after mail-auth's own lookup, inside the same
//! time budget. A domain with TXT records but none for SPF costs one (cached) TXT lookup.
//!
//! Left to mail-auth (listed in `tests/known-differences/spf-rfc7208.txt`): valid records it
//! rejects (`moo.cow-far_out=...`, `a:foo:bar/baz.example.com`), ip6 ranges matching IPv4
//! clients, `exists` accepting AAAA, names hickory refuses to query, the finer points of
//! explanation text.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, LazyLock, Mutex},
    time::Instant,
};

use mail_auth::{
    DnsError, DnssecStatus, Error as MaError, MX, MessageAuthenticator, Parameters, RecordSet,
    ResolverCache, SpfOutput, SpfResult, Txt,
    hickory_resolver::proto::rr::{Name, RData},
    spf::{Macro, Mechanism, Spf, Variable, verify::SpfParameters},
};

use unspoof_dns::{Caches, Dns};

/// RFC 7208 4.6.4: more void lookups than this is permerror.
const MAX_VOID_LOOKUPS: usize = 2;

/// Verdicts kept before the cache starts over (one entry per SPF-publishing name).
const VERDICT_CACHE_SIZE: usize = 8192;

/// An SPF result with, when this module decided it, why (in place of the deciding mechanism).
pub struct Checked {
    pub output: SpfOutput,
    pub problem: Option<String>,
}

/// check_host() for the MAIL FROM identity `sender` (`Some`) or the HELO identity (`None`),
/// with the checks described in the module documentation.
pub async fn check_host(
    dns: &Dns,
    auth: &MessageAuthenticator,
    ip: IpAddr,
    helo: &str,
    host_domain: &str,
    sender: Option<&str>,
) -> Checked {
    let domain = match sender {
        Some(s) => s.rsplit_once('@').map_or(helo, |(_, d)| d),
        None => helo,
    };
    if let Some(why) = identity_problem(domain) {
        return Checked {
            output: SpfOutput::new(domain.to_string()).with_result(SpfResult::None),
            problem: Some(format!("not a domain name: {why} (RFC 7208 4.3)")),
        };
    }

    let recorder = Recorder::new(
        dns.caches(),
        ip,
        domain.ends_with('.') || helo.ends_with('.'),
    );
    let evaluate = || {
        let params = match sender {
            Some(s) => SpfParameters::verify_mail_from(ip, helo, host_domain, s),
            None => SpfParameters::verify_ehlo(ip, helo, host_domain),
        };
        auth.verify_spf(
            Parameters::new(params)
                .with_txt_cache(&recorder)
                .with_mx_cache(&recorder)
                .with_ipv4_cache(&recorder)
                .with_ipv6_cache(&recorder)
                .with_ptr_cache(&recorder),
        )
    };
    let mut output = evaluate().await;
    if recorder.take_ptr_fetched() {
        // mail-auth used the PTR set it fetched itself, with root dots; now it is cached.
        recorder.reset();
        output = evaluate().await;
    }
    let mut log = recorder.into_log();
    // mail-auth keeps only TXT answers with records: the names without any (a HELO name
    // without SPF, an include target gone) would be asked of hickory on every message.
    // Read from our cache next time, they are noted in `log.txt` like any other cached
    // answer, which the checks below read only for records and `InvalidRecordType`.
    if output.result() != SpfResult::TempError {
        crate::workarounds::remember_negative_answers(
            auth,
            &dns.caches().txt,
            std::mem::take(&mut log.txt_missed),
        );
    }

    let mut problem = None;
    for (i, (name, txt)) in log.txt.iter().enumerate() {
        let found = match txt {
            Txt::Spf(used) => record_problem(dns, auth, name, used).await,
            // The domain has TXT records but mail-auth found no SPF record among them: it
            // keeps the error of the last record, so a broken v=spf1 record followed by
            // another TXT record reads as none.
            Txt::Error(MaError::Dns(DnsError::InvalidRecordType))
                if i == 0 && output.result() == SpfResult::None =>
            {
                match raw_txt(dns, auth, name).await {
                    Some(records) => judge(&records),
                    None => None,
                }
            }
            _ => None,
        };
        if let Some(p) = found {
            problem = Some(format!("{}: {p}", name.trim_end_matches('.')));
            break;
        }
    }
    if problem.is_none()
        && !matches!(
            output.result(),
            SpfResult::TempError | SpfResult::PermError | SpfResult::None
        )
    {
        let voids = log.void_names(ip);
        if voids.len() > MAX_VOID_LOOKUPS {
            problem = Some(format!(
                "{} void DNS lookups ({}), more than {MAX_VOID_LOOKUPS} (RFC 7208 4.6.4)",
                voids.len(),
                voids.join(", ")
            ));
        }
    }
    if let Some(problem) = problem {
        return Checked {
            output: SpfOutput::new(output.domain().to_string()).with_result(SpfResult::PermError),
            problem: Some(problem),
        };
    }

    if let (Some(_), Some((exp_name, text))) = (output.explanation(), log.exp_name())
        && !explanation_usable(dns, auth, exp_name, text).await
    {
        output = SpfOutput::new(output.domain().to_string()).with_result(output.result());
    }
    Checked {
        output,
        problem: None,
    }
}

// ------------------------------------------------------------------------------------------
// RFC 7208 4.3: the identity
// ------------------------------------------------------------------------------------------

/// Why `domain` is not a domain name check_host() can be asked about, or `None` if it is one.
fn identity_problem(domain: &str) -> Option<&'static str> {
    if domain.starts_with('[') {
        return Some("an address literal");
    }
    let name = domain.strip_suffix('.').unwrap_or(domain);
    if name.is_empty() {
        return Some("empty");
    }
    if name
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == 0x7f)
    {
        return Some("spaces or control characters");
    }
    if name.len() > 253 {
        return Some("longer than 253 octets");
    }
    if name.split('.').any(str::is_empty) {
        return Some("an empty label");
    }
    if name.split('.').any(|l| l.len() > 63) {
        return Some("a label longer than 63 octets");
    }
    if !name.contains('.') {
        return Some("a single label");
    }
    None
}

// ------------------------------------------------------------------------------------------
// Record-level checks
// ------------------------------------------------------------------------------------------

/// Verdicts on records mail-auth used, by name, each with the parsed record it was given for:
/// a verdict holds only while mail-auth still uses that same `Arc<Spf>` (so it cannot cross DNS
/// views or outlive the record's TTL in mail-auth's cache). `None` = no problem.
type Verdicts = HashMap<Box<str>, (Arc<Spf>, Option<String>)>;
static VERDICTS: LazyLock<Mutex<Verdicts>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The problem with the SPF record(s) at `name`, whose parse mail-auth used as `used`.
async fn record_problem(
    dns: &Dns,
    auth: &MessageAuthenticator,
    name: &str,
    used: &Arc<Spf>,
) -> Option<String> {
    if let Ok(verdicts) = VERDICTS.lock()
        && let Some((spf, verdict)) = verdicts.get(name)
        && Arc::ptr_eq(spf, used)
    {
        return verdict.clone();
    }
    // No answer (a timeout, an answer hickory rejects): no verdict, mail-auth's result stands.
    let records = raw_txt(dns, auth, name).await?;
    let verdict = judge(&records);
    if let Ok(mut verdicts) = VERDICTS.lock() {
        if verdicts.len() >= VERDICT_CACHE_SIZE {
            verdicts.clear();
        }
        verdicts.insert(name.into(), (used.clone(), verdict.clone()));
    }
    verdict
}

/// The TXT records at `name`, each one's strings joined (RFC 7208 3.3), from the same resolver
/// mail-auth used (its cache, right after mail-auth's own lookup), within one query's time.
async fn raw_txt(dns: &Dns, auth: &MessageAuthenticator, name: &str) -> Option<Vec<Vec<u8>>> {
    let query = Name::from_str_relaxed(name).ok()?;
    let lookup = tokio::time::timeout(dns.timeout(), auth.resolver().txt_lookup(query))
        .await
        .ok()?
        .ok()?;
    Some(
        lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .flat_map(|s| s.iter())
                        .copied()
                        .collect(),
                ),
                _ => None,
            })
            .collect(),
    )
}

/// The problem with the TXT record set of one name as SPF sees it (RFC 7208 4.5: more than one
/// `v=spf1` record; 3.1, 4.6, 5, 6, 7.1, 12: the syntax of the one), each TXT record's strings
/// joined; `None` when it has one valid SPF record or none. The same judgement as
/// [`check_host`]'s, for callers that read a record without evaluating it (the audit).
pub fn spf_record_problem(records: &[Vec<u8>]) -> Option<String> {
    judge(records)
}

/// Whether one TXT record (its strings joined) is an SPF record (RFC 7208 4.5).
pub fn is_spf_record_text(record: &[u8]) -> bool {
    is_spf_record(record)
}

/// RFC 7208 4.5: a record is an SPF record when it starts with `v=spf1` (case-insensitive)
/// followed by a space or its end.
fn is_spf_record(record: &[u8]) -> bool {
    record.len() >= 6
        && record[..6].eq_ignore_ascii_case(b"v=spf1")
        && record.get(6).is_none_or(|&b| b == b' ')
}

/// The problem with the TXT record set of one name, as far as SPF is concerned.
fn judge(records: &[Vec<u8>]) -> Option<String> {
    let spf: Vec<&Vec<u8>> = records.iter().filter(|r| is_spf_record(r)).collect();
    match spf.as_slice() {
        // None selected although mail-auth found one (it also accepts `v=spf1` followed by a
        // TAB): not ours to decide.
        [] => None,
        [record] => record_syntax(record).err(),
        more => Some(format!(
            "{} v=spf1 records, there must be one (RFC 7208 4.5)",
            more.len()
        )),
    }
}

/// Checks one SPF record against RFC 7208 12 (ABNF) and the rules of 4.6, 5, 6 and 7.1.
fn record_syntax(record: &[u8]) -> Result<(), String> {
    if let Some(pos) = record.iter().position(|&b| !(0x20..=0x7e).contains(&b)) {
        return Err(format!(
            "byte 0x{:02x} at offset {pos}: records are printable US-ASCII with terms separated \
             by spaces (RFC 7208 3.1, 4.6.1)",
            record[pos]
        ));
    }
    let text = std::str::from_utf8(&record[6..]).map_err(|_| "not ASCII".to_string())?;
    let mut redirect = false;
    let mut exp = false;
    for term in text.split(' ').filter(|t| !t.is_empty()) {
        term_syntax(term, &mut redirect, &mut exp)
            .map_err(|why| format!("{}: {why}", shown(term)))?;
    }
    Ok(())
}

/// A term as shown in a problem: at most 64 characters.
fn shown(term: &str) -> String {
    if term.len() <= 64 {
        format!("\"{term}\"")
    } else {
        format!("\"{}...\"", &term[..64])
    }
}

fn term_syntax(term: &str, redirect: &mut bool, exp: &mut bool) -> Result<(), String> {
    // RFC 7208 4.6.1: a name followed by "=" (before any ":" or "/") makes a modifier.
    let name_end = term
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(term.len());
    if let Some(value) = term[name_end..].strip_prefix('=') {
        let name = &term[..name_end];
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(
                "a modifier name must start with a letter (RFC 7208 12: name = ALPHA *( ALPHA / \
                 DIGIT / \"-\" / \"_\" / \".\" ))"
                    .into(),
            );
        }
        return if name.eq_ignore_ascii_case("redirect") {
            if std::mem::replace(redirect, true) {
                return Err("redirect appears twice (RFC 7208 6)".into());
            }
            domain_spec(value).map_err(|why| format!("{why} (RFC 7208 6.1)"))
        } else if name.eq_ignore_ascii_case("exp") {
            if std::mem::replace(exp, true) {
                return Err("exp appears twice (RFC 7208 6)".into());
            }
            domain_spec(value).map_err(|why| format!("{why} (RFC 7208 6.2)"))
        } else {
            macro_string(value, true)
                .map(|_| ())
                .map_err(|why| format!("{why} (RFC 7208 12 unknown-modifier)"))
        };
    }

    let mechanism = term.strip_prefix(['+', '-', '~', '?']).unwrap_or(term);
    let name_end = mechanism.find([':', '/']).unwrap_or(mechanism.len());
    let (name, rest) = mechanism.split_at(name_end);
    let target = |rest: &str, section: &str| -> Result<(), String> {
        match rest.strip_prefix(':') {
            Some(spec) => domain_spec(spec).map_err(|why| format!("{why} (RFC 7208 {section})")),
            None => Err(format!(
                "needs \":\" and a domain-spec (RFC 7208 {section})"
            )),
        }
    };
    match name.to_ascii_lowercase().as_str() {
        "all" if rest.is_empty() => Ok(()),
        "all" => Err("all takes no argument (RFC 7208 5.1)".into()),
        "include" => target(rest, "5.2"),
        "exists" => target(rest, "5.7"),
        "ptr" if rest.is_empty() => Ok(()),
        "ptr" => target(rest, "5.5"),
        "a" | "mx" => {
            let section = if name.eq_ignore_ascii_case("a") {
                "5.3"
            } else {
                "5.4"
            };
            let (spec, cidr) = match rest.strip_prefix(':') {
                Some(value) => split_cidr(value),
                None => (None, rest),
            };
            if let Some(spec) = spec {
                domain_spec(spec).map_err(|why| format!("{why} (RFC 7208 {section})"))?;
            }
            dual_cidr(cidr).map_err(|why| format!("{why} (RFC 7208 {section}, 5.6)"))
        }
        "ip4" => {
            let value = rest
                .strip_prefix(':')
                .ok_or("needs \":\" and an address (RFC 7208 5.6)")?;
            let (addr, cidr) = value
                .split_once('/')
                .map_or((value, None), |(a, c)| (a, Some(c)));
            addr.parse::<Ipv4Addr>()
                .map_err(|_| format!("\"{addr}\" is not an IPv4 address (RFC 7208 5.6)"))?;
            match cidr {
                Some(c) => cidr_length(c, 32).map_err(|why| format!("{why} (RFC 7208 5.6)")),
                None => Ok(()),
            }
        }
        "ip6" => {
            let value = rest
                .strip_prefix(':')
                .ok_or("needs \":\" and an address (RFC 7208 5.6)")?;
            let (addr, cidr) = value
                .split_once('/')
                .map_or((value, None), |(a, c)| (a, Some(c)));
            addr.parse::<Ipv6Addr>()
                .map_err(|_| format!("\"{addr}\" is not an IPv6 address (RFC 7208 5.6)"))?;
            match cidr {
                Some(c) => cidr_length(c, 128).map_err(|why| format!("{why} (RFC 7208 5.6)")),
                None => Ok(()),
            }
        }
        _ => Err("unknown mechanism (RFC 7208 4.6.1, 5)".into()),
    }
}

/// Splits the value of `a:` / `mx:` into the domain-spec and the dual-cidr-length after it.
/// A domain-spec may hold "/" (RFC 7208 12 macro-literal) but cannot end in "/" and digits, so
/// the length starts at the first "/" after which only a CIDR length can follow.
fn split_cidr(value: &str) -> (Option<&str>, &str) {
    for (i, _) in value.match_indices('/') {
        let tail = &value[i..];
        if tail.bytes().all(|b| b == b'/' || b.is_ascii_digit()) {
            return (Some(&value[..i]), tail);
        }
    }
    (Some(value), "")
}

/// RFC 7208 12: dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ].
fn dual_cidr(cidr: &str) -> Result<(), String> {
    if cidr.is_empty() {
        return Ok(());
    }
    if let Some(v6) = cidr.strip_prefix("//") {
        return cidr_length(v6, 128);
    }
    let Some(rest) = cidr.strip_prefix('/') else {
        return Err(format!("\"{cidr}\" is not a CIDR length"));
    };
    match rest.split_once("//") {
        Some((v4, v6)) => cidr_length(v4, 32).and(cidr_length(v6, 128)),
        None => cidr_length(rest, 32),
    }
}

/// RFC 7208 5.6 / 12: a decimal without leading zeros, at most `max`.
fn cidr_length(digits: &str, max: u32) -> Result<(), String> {
    let ok = !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && digits.parse::<u32>().is_ok_and(|n| n <= max);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "CIDR length \"/{digits}\" is not 0-{max} without leading zeros"
        ))
    }
}

/// RFC 7208 7.1: domain-spec = macro-string domain-end; domain-end = ( "." toplabel [ "." ] ) /
/// macro-expand. Also accepted: a macro followed by a final dot.
fn domain_spec(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Err("empty domain-spec".into());
    }
    let ends_in_macro = macro_string(spec, false)?;
    if ends_in_macro {
        return Ok(());
    }
    let name = spec.strip_suffix('.').unwrap_or(spec);
    if name.ends_with('}') && macro_string(name, false)? {
        return Ok(());
    }
    match name.rsplit_once('.') {
        Some((_, top)) if toplabel(top) => Ok(()),
        Some((_, top)) => Err(format!(
            "\"{top}\" is not a top label (letters, digits, inner hyphens, not all digits: \
             RFC 7208 7.1)"
        )),
        None => Err(format!(
            "\"{spec}\" does not end in a macro or \".\" and a top label (RFC 7208 7.1)"
        )),
    }
}

/// RFC 7208 12: toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" )
/// alphanum ).
fn toplabel(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().any(|c| c.is_ascii_alphabetic() || *c == b'-')
}

/// RFC 7208 7.1 macro-string (in a term, so no spaces): returns whether it ends in a
/// macro-expand. `any_letter`: the explanation-only letters `c`, `r`, `t` are allowed (RFC
/// 7208 7.3 allows them only in explanation text; an unknown modifier's value is never
/// expanded, so its macro syntax is all that counts).
fn macro_string(s: &str, any_letter: bool) -> Result<bool, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut last_macro = false;
    while i < b.len() {
        if b[i] != b'%' {
            if !(0x21..=0x7e).contains(&b[i]) {
                return Err(format!(
                    "byte 0x{:02x} in a macro-string (RFC 7208 7.1)",
                    b[i]
                ));
            }
            last_macro = false;
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'%' | b'_' | b'-') => i += 2,
            Some(b'{') => {
                let bad = || format!("bad macro \"{}\" (RFC 7208 7.1)", &s[i..]);
                let mut j = i + 2;
                let letter = b.get(j).map(u8::to_ascii_lowercase).ok_or_else(bad)?;
                match letter {
                    b's' | b'l' | b'o' | b'd' | b'i' | b'p' | b'h' | b'v' => {}
                    b'c' | b'r' | b't' if any_letter => {}
                    b'c' | b'r' | b't' => {
                        return Err(format!(
                            "macro letter \"{}\" is allowed only in explanation text \
                             (RFC 7208 7.3)",
                            letter as char
                        ));
                    }
                    _ => return Err(bad()),
                }
                j += 1;
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
                if b.get(j).is_some_and(|c| c.eq_ignore_ascii_case(&b'r')) {
                    j += 1;
                }
                while b
                    .get(j)
                    .is_some_and(|c| matches!(c, b'.' | b'-' | b'+' | b',' | b'/' | b'_' | b'='))
                {
                    j += 1;
                }
                if b.get(j) != Some(&b'}') {
                    return Err(bad());
                }
                i = j + 1;
            }
            _ => {
                return Err(
                    "\"%\" not followed by \"{\", \"%\", \"_\" or \"-\" (RFC 7208 7.1)".into(),
                );
            }
        }
        last_macro = true;
    }
    Ok(last_macro)
}

/// RFC 7208 6.2: the explanation counts only when its name has exactly one TXT record, of
/// printable US-ASCII (explain-string). Unknown (no answer): keep mail-auth's. Cached like
/// [`VERDICTS`], by the text mail-auth parsed (`used`).
async fn explanation_usable(
    dns: &Dns,
    auth: &MessageAuthenticator,
    name: &str,
    used: &Arc<Macro>,
) -> bool {
    type Usable = HashMap<Box<str>, (Arc<Macro>, bool)>;
    static USABLE: LazyLock<Mutex<Usable>> = LazyLock::new(|| Mutex::new(HashMap::new()));
    if let Ok(usable) = USABLE.lock()
        && let Some((text, verdict)) = usable.get(name)
        && Arc::ptr_eq(text, used)
    {
        return *verdict;
    }
    let Some(records) = raw_txt(dns, auth, name).await else {
        return true;
    };
    let verdict = records.len() == 1 && records[0].iter().all(|b| (0x20..=0x7e).contains(b));
    if let Ok(mut usable) = USABLE.lock() {
        if usable.len() >= VERDICT_CACHE_SIZE {
            usable.clear();
        }
        usable.insert(name.into(), (used.clone(), verdict));
    }
    verdict
}

// ------------------------------------------------------------------------------------------
// The recorder mail-auth reads its caches through
// ------------------------------------------------------------------------------------------

/// Passes every cache access of one evaluation on to the [`Dns`] caches and notes it.
struct Recorder<'a> {
    caches: &'a Caches,
    /// The address family of the client: `A` or `Aaaa`.
    own: Kind,
    log: Mutex<Log>,
}

/// What one evaluation asked.
#[derive(Default)]
struct Log {
    /// TXT names in the order mail-auth asked for them, with what it got (misses that then
    /// failed are absent).
    txt: Vec<(String, Txt)>,
    /// A, AAAA and MX reads that missed the cache, and A/AAAA reads of the client's other
    /// family (hits of the client's own family are not noted: they are never void).
    addr: Vec<AddrLookup>,
    /// The MX and PTR sets seen: their hosts' A/AAAA lookups are not lookups of a term.
    mx_sets: Vec<RecordSet<MX>>,
    ptr_sets: Vec<RecordSet<Box<str>>>,
    /// A record with an `exists` mechanism was loaded.
    exists_seen: bool,
    /// A domain on the evaluation path may end in a dot (the identity, a `ptr`, `include` or
    /// `redirect` target): mail-auth does not drop it (RFC 7208 7.3 does), so names with an
    /// empty label may be its doing, and a dotted PTR name may be what a dotted `ptr` target
    /// needs. Then PTR names and unqueryable names are left as they are.
    dot_hazard: bool,
    /// mail-auth fetched a PTR set with root dots itself, and used it as it was.
    ptr_fetched: bool,
    /// TXT names that missed the cache (at most [`crate::workarounds::MAX_TXT_MISSES`]): the
    /// negative answers among them are kept in our cache afterwards
    /// ([`crate::workarounds::remember_negative_answers`]).
    txt_missed: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    A,
    Aaaa,
    Mx,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Not cached: mail-auth queried; an insert follows only if records came back.
    Asked,
    Found,
    Empty,
    /// A name no query can carry, answered here as an empty set.
    Unqueryable,
}

struct AddrLookup {
    name: String,
    kind: Kind,
    outcome: Outcome,
}

impl<'a> Recorder<'a> {
    fn new(caches: &'a Caches, ip: IpAddr, dot_hazard: bool) -> Self {
        Recorder {
            caches,
            own: if ip.is_ipv4() { Kind::A } else { Kind::Aaaa },
            log: Mutex::new(Log {
                dot_hazard,
                ..Log::default()
            }),
        }
    }

    fn with_log<R>(&self, f: impl FnOnce(&mut Log) -> R) -> Option<R> {
        self.log.lock().ok().map(|mut log| f(&mut log))
    }

    fn take_ptr_fetched(&self) -> bool {
        self.with_log(|l| std::mem::take(&mut l.ptr_fetched))
            .unwrap_or(false)
    }

    fn reset(&self) {
        self.with_log(|l| {
            *l = Log {
                dot_hazard: l.dot_hazard,
                ..Log::default()
            }
        });
    }

    fn into_log(self) -> Log {
        self.log.into_inner().unwrap_or_default()
    }

    fn saw_txt(&self, name: String, value: &Txt) {
        self.with_log(|l| {
            if let Txt::Spf(spf) = value {
                for d in spf.directives.iter() {
                    match &d.mechanism {
                        Mechanism::Exists { .. } => l.exists_seen = true,
                        Mechanism::Include { macro_string } | Mechanism::Ptr { macro_string }
                            if ends_in_dot(macro_string) =>
                        {
                            l.dot_hazard = true
                        }
                        _ => {}
                    }
                }
                if spf.redirect.as_ref().is_some_and(ends_in_dot) {
                    l.dot_hazard = true;
                }
            }
            l.txt.push((name, value.clone()));
        });
    }

    /// Notes an A/AAAA/MX cache read (`key` reads the name back, only when needed); answers
    /// an unqueryable name with an empty set.
    fn addr_get<T>(
        &self,
        kind: Kind,
        key: impl FnOnce() -> Option<String>,
        found: Option<RecordSet<T>>,
    ) -> Option<RecordSet<T>> {
        if found.is_some() && (kind == self.own || kind == Kind::Mx) {
            return found;
        }
        let Some(name) = key() else {
            return found;
        };
        self.with_log(|l| {
            if found.is_none()
                && !l.dot_hazard
                && (kind == Kind::Mx || !l.exists_seen)
                && unqueryable(&name)
            {
                l.addr.push(AddrLookup {
                    name,
                    kind,
                    outcome: Outcome::Unqueryable,
                });
                return Some(RecordSet {
                    rrset: Arc::from([]),
                    dnssec_status: DnssecStatus::Indeterminate,
                });
            }
            let outcome = match &found {
                None => Outcome::Asked,
                Some(set) if set.rrset.is_empty() => Outcome::Empty,
                Some(_) => Outcome::Found,
            };
            l.addr.push(AddrLookup {
                name,
                kind,
                outcome,
            });
            found
        })
        .unwrap_or(None)
    }

    /// Notes that the lookup of `name` that missed the cache came back with records.
    fn addr_insert(&self, kind: Kind, name: &str, empty: bool) {
        self.with_log(|l| {
            if let Some(entry) = l
                .addr
                .iter_mut()
                .rev()
                .find(|e| e.kind == kind && e.name == name && e.outcome == Outcome::Asked)
            {
                entry.outcome = if empty {
                    Outcome::Empty
                } else {
                    Outcome::Found
                };
            }
        });
    }
}

impl Log {
    /// The name of the explanation mail-auth fetched (the last TXT lookup parsed as text).
    fn exp_name(&self) -> Option<(&str, &Arc<Macro>)> {
        self.txt.iter().rev().find_map(|(n, t)| match t {
            Txt::SpfMacro(text) => Some((n.as_str(), text)),
            _ => None,
        })
    }

    /// Distinct names of `a` and `mx` terms whose lookup was void (RFC 7208 4.6.4), for a
    /// client at `ip`. An A lookup for an IPv6 client or an AAAA lookup for an IPv4 client
    /// comes only from `exists` (mail-auth looks at both caches there), whose answers mail-auth
    /// never caches: such names are left out, as are MX hosts and PTR names.
    fn void_names(&self, ip: IpAddr) -> Vec<String> {
        if !self.addr.iter().any(|e| e.outcome == Outcome::Asked) {
            return Vec::new();
        }
        let own = if ip.is_ipv4() { Kind::A } else { Kind::Aaaa };
        let is_host = |name: &str| {
            let name = name.trim_end_matches('.');
            let same = |host: &str| host.trim_end_matches('.').eq_ignore_ascii_case(name);
            self.mx_sets
                .iter()
                .flat_map(|set| set.rrset.iter())
                .flat_map(|mx| mx.exchanges.iter())
                .chain(self.ptr_sets.iter().flat_map(|set| set.rrset.iter()))
                .any(|host| same(host))
        };
        let exists: HashSet<&str> = self
            .addr
            .iter()
            .filter(|e| e.kind != own && e.kind != Kind::Mx)
            .map(|e| e.name.as_str())
            .collect();
        let mut void: Vec<String> = Vec::new();
        for e in &self.addr {
            let term =
                e.kind == Kind::Mx || (!exists.contains(e.name.as_str()) && !is_host(&e.name));
            // Only lookups that failed with "no records" (NXDOMAIN or NODATA): an empty set
            // came from an answer holding only a CNAME, which is not void to everyone.
            if term && e.outcome == Outcome::Asked && !void.contains(&e.name) {
                void.push(e.name.clone());
            }
        }
        void.into_iter()
            .map(|n| n.trim_end_matches('.').to_string())
            .collect()
    }
}

/// Whether a domain-spec may expand to a name ending in a dot: a literal final dot, or a final
/// local-part (any text). Domain macros end in a dot only if a domain before them did.
fn ends_in_dot(m: &Macro) -> bool {
    match m {
        Macro::Literal(text) => text.last() == Some(&b'.'),
        Macro::Variable { letter, .. } => *letter == Variable::SenderLocalPart,
        Macro::List(items) => items.last().is_some_and(ends_in_dot),
        Macro::None => false,
    }
}

/// A name no DNS query can carry: an empty label (other than the root's) or a label over 63
/// octets. `name` is mail-auth's cache key (lower case, one final dot).
fn unqueryable(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty() && name.split('.').any(|l| l.is_empty() || l.len() > 63)
}

/// The text of a cache key. mail-auth asks its `Box<str>`-keyed caches with a `str` (or a
/// `Box<str>`, which hashes the same), and `str` hashes as its bytes followed by 0xff, so the
/// key is read back from what it feeds a hasher. `None` if it is anything else; the key is then
/// not noted, which only makes the checks above see less.
pub(crate) fn key_text<Q: Hash + ?Sized>(key: &Q) -> Option<String> {
    struct Capture(Vec<u8>);
    impl Hasher for Capture {
        fn write(&mut self, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut capture = Capture(Vec::with_capacity(64));
    key.hash(&mut capture);
    let mut text = capture.0;
    if text.pop() != Some(0xff) {
        return None;
    }
    String::from_utf8(text).ok()
}

impl ResolverCache<Box<str>, Txt> for Recorder<'_> {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.caches.txt.get(name);
        match &found {
            Some(value) => {
                if let Some(key) = key_text(name) {
                    self.saw_txt(key, value);
                }
            }
            None => {
                self.with_log(|l| {
                    if l.txt_missed.len() < crate::workarounds::MAX_TXT_MISSES
                        && let Some(key) = key_text(name)
                    {
                        l.txt_missed.push(key);
                    }
                });
            }
        }
        found
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.caches.txt.remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        self.saw_txt(key.to_string(), &value);
        self.caches.txt.insert(key, value, valid_until);
    }
}

impl ResolverCache<Box<str>, RecordSet<Ipv4Addr>> for Recorder<'_> {
    fn get<Q>(&self, name: &Q) -> Option<RecordSet<Ipv4Addr>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.addr_get(Kind::A, || key_text(name), self.caches.ipv4.get(name))
    }

    fn remove<Q>(&self, name: &Q) -> Option<RecordSet<Ipv4Addr>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.caches.ipv4.remove(name)
    }

    fn insert(&self, key: Box<str>, value: RecordSet<Ipv4Addr>, valid_until: Instant) {
        self.addr_insert(Kind::A, &key, value.rrset.is_empty());
        self.caches.ipv4.insert(key, value, valid_until);
    }
}

impl ResolverCache<Box<str>, RecordSet<Ipv6Addr>> for Recorder<'_> {
    fn get<Q>(&self, name: &Q) -> Option<RecordSet<Ipv6Addr>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.addr_get(Kind::Aaaa, || key_text(name), self.caches.ipv6.get(name))
    }

    fn remove<Q>(&self, name: &Q) -> Option<RecordSet<Ipv6Addr>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.caches.ipv6.remove(name)
    }

    fn insert(&self, key: Box<str>, value: RecordSet<Ipv6Addr>, valid_until: Instant) {
        self.addr_insert(Kind::Aaaa, &key, value.rrset.is_empty());
        self.caches.ipv6.insert(key, value, valid_until);
    }
}

impl ResolverCache<Box<str>, RecordSet<MX>> for Recorder<'_> {
    fn get<Q>(&self, name: &Q) -> Option<RecordSet<MX>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.caches.mx.get(name);
        if let Some(set) = &found {
            self.with_log(|l| l.mx_sets.push(set.clone()));
        }
        self.addr_get(Kind::Mx, || key_text(name), found)
    }

    fn remove<Q>(&self, name: &Q) -> Option<RecordSet<MX>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.caches.mx.remove(name)
    }

    fn insert(&self, key: Box<str>, value: RecordSet<MX>, valid_until: Instant) {
        self.with_log(|l| l.mx_sets.push(value.clone()));
        self.addr_insert(Kind::Mx, &key, value.rrset.is_empty());
        self.caches.mx.insert(key, value, valid_until);
    }
}

impl ResolverCache<IpAddr, RecordSet<Box<str>>> for Recorder<'_> {
    fn get<Q>(&self, ip: &Q) -> Option<RecordSet<Box<str>>>
    where
        IpAddr: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let set = self.caches.ptr.get(ip)?;
        self.with_log(|l| l.ptr_sets.push(set.clone()));
        let dotted = set.rrset.iter().any(|n| n.len() > 1 && n.ends_with('.'));
        if !dotted || self.with_log(|l| l.dot_hazard).unwrap_or(true) {
            return Some(set);
        }
        Some(RecordSet {
            rrset: set
                .rrset
                .iter()
                .map(|n| match n.strip_suffix('.') {
                    Some(stripped) if !stripped.is_empty() => Box::from(stripped),
                    _ => n.clone(),
                })
                .collect(),
            dnssec_status: set.dnssec_status,
        })
    }

    fn remove<Q>(&self, ip: &Q) -> Option<RecordSet<Box<str>>>
    where
        IpAddr: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.caches.ptr.remove(ip)
    }

    fn insert(&self, key: IpAddr, value: RecordSet<Box<str>>, valid_until: Instant) {
        self.with_log(|l| l.ptr_sets.push(value.clone()));
        if value.rrset.iter().any(|n| n.len() > 1 && n.ends_with('.')) {
            self.with_log(|l| l.ptr_fetched |= !l.dot_hazard);
        }
        self.caches.ptr.insert(key, value, valid_until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        for ok in [
            "example.com",
            "example.com.",
            "mail.example.co.uk",
            "xn--bcher-kva.example",
            "bücher.example",
            "_dmarc.example.com",
            "a-b.example",
        ] {
            assert_eq!(identity_problem(ok), None, "{ok}");
        }
        for bad in [
            "[1.2.3.5]",
            "[IPv6:2001:db8::1]",
            "A...example.com",
            ".example.com",
            "example..com",
            "OEMCOMPUTER",
            "",
            ".",
            "foo bar.example.com",
            "foo\0.example.com",
            "a123456789012345678901234567890123456789012345678901234567890123.example.com",
        ] {
            assert!(identity_problem(bad).is_some(), "{bad:?}");
        }
    }

    fn syntax(record: &str) -> Result<(), String> {
        record_syntax(record.as_bytes())
    }

    #[test]
    fn published_records_are_valid() {
        for record in [
            "v=spf1",
            "v=spf1 ",
            "V=SPF1 -ALL",
            "v=spf1 include:_spf.google.com ~all",
            "v=spf1 ip4:35.190.247.0/24 ip4:64.233.160.0/19 ip6:2001:4860:4000::/36 ~all",
            "v=spf1 include:spf.protection.outlook.com -all",
            "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.123 a -all",
            "v=spf1 a mx ptr ?all",
            "v=spf1 +a/24 +mx/24//64 a:mail.example.com/28 mx:example.org//48 -all",
            "v=spf1 a//64 mx/0 ip4:0.0.0.0/0 ip6:::/0 ip6:::ffff:1.2.3.4 ip6:fe80::1/128 -all",
            "v=spf1 include:%{ir}.%{v}.%{d}.spf.has.pphosted.com ~all",
            "v=spf1 exists:%{i}._spf.mta.salesforce.com -all",
            "v=spf1 exists:%{l1r+-}.%{o}._spf.example.com exists:%{ir}.%{l2r.}.%{d2}.x.example",
            "v=spf1 redirect=_spf.example.com",
            "v=spf1 redirect=%{d}.d.spf.example.com.",
            "v=spf1 include:o.spf.example.com. ~all",
            "v=spf1 -all exp=explain._spf.%{d}",
            "v=spf1 -all exp=%{d}.",
            "v=spf1 mx ra=postmaster rp=100 rr=e:f:s:n",
            "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all",
            "v=spf1 default=+",
            "v=spf1 a:foo:bar/baz.example.com",
            "v=spf1 a:foo.example.xn--zckzah -all",
            "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all",
            "v=spf1 a:foo.example.com/24",
            "v=spf1 a:x/y.example.com/24//64",
            "v=spf1 a:1-2.example.123-456",
            "v=spf1 ptr:example.Com ptr:%{d} -all",
            "v=spf1 a  -all ",
            "v=spf1 ip6:1:2:3:4:5:6:7:: ip6:::2:3:4:5:6:7:8 ip6:2001:DB8::/32 ip6:::1.2.3.4",
        ] {
            assert_eq!(syntax(record), Ok(()), "{record}");
        }
    }

    #[test]
    fn syntax_errors() {
        for record in [
            "v=spf1 a:\u{ef}garbage.example.net -all",
            "v=spf1 \x01a -all",
            "v=spf1 a:ctrl.example.com\rptr -all",
            "v=spf1 ip4:192.0.2.5\n include:x.example ~all",
            "v=spf1 ip4:1.2.3.4\t-all",
            "v=spf1 ip4:1.2.3.4 -all moo",
            "v=spf1 moo.cow/far_out=man:dog/cat ip4:1.2.3.4 -all",
            "v=spf1 moo.cow:far_out=man:dog/cat ip4:1.2.3.4 -all",
            "v=spf1 ip4:1.2.3.4 redirect:t2.example.com",
            "v=spf1 -all.",
            "v=spf1 -all:foobar",
            "v=spf1 -all/8",
            "v=spf1 ptr/0 -all",
            "v=spf1 ptr:",
            "v=spf1 a/33 -all",
            "v=spf1 a//129 -all",
            "v=spf1 a/24/64 -all",
            "v=spf1 a/032",
            "v=spf1 a/",
            "v=spf1 a:",
            "v=spf1 a:foo-bar -all",
            "v=spf1 a:111.222.33.44",
            "v=spf1 a:abc.123",
            "v=spf1 a:museum",
            "v=spf1 a:museum.",
            "v=spf1 a:example.com:8080",
            "v=spf1 a:foo.example.com\0",
            "v=spf1 a:example.-com",
            "v=spf1 a:example.com-",
            "v=spf1 a:%{H}.ba-",
            "v=spf1 mx//33x",
            "v=spf1 include",
            "v=spf1 include:",
            "v=spf1 include:ip5.example.com/24 -all",
            "v=spf1 exists",
            "v=spf1 exists:",
            "v=spf1 exists:mail.example.com/24",
            "v=spf1 exists:%{x}.example.com",
            "v=spf1 exists:%(ir).sbl.example.com",
            "v=spf1 exists:foo%.sbl.example.com",
            "v=spf1 exists:%{i.example.com",
            "v=spf1 ip4",
            "v=spf1 ip4:1.2.3.4/33",
            "v=spf1 ip4:1.2.3.4/032",
            "v=spf1 ip4:1.2.3.4//32",
            "v=spf1 ip4:1.2.3.4:8080",
            "v=spf1 ip4:1.2.3",
            "v=spf1 ip4:1.2.3.256",
            "v=spf1 ip4:01.2.3.4",
            "v=spf1 -all ip6",
            "v=spf1 ip6:::1.1.1.1/129",
            "v=spf1 ip6:::1.1.1.1//33",
            "v=spf1 ip6::CAFE::BABE",
            "v=spf1 1up=foo",
            "v=spf1 =all",
            "v=spf1 -redirect=x.example.com",
            "v=spf1 redirect=-all ?all",
            "v=spf1 ?all redirect=",
            "v=spf1 redirect=a.example.com -all redirect=a.example.com",
            "v=spf1 exp=-all",
            "v=spf1 exp= -all",
            "v=spf1 exp=a.example.com -all exp=b.example.com",
            "v=spf1 -all exp=%{r}.example.com",
            "v=spf1 a:%{c}.example.com",
            "v=spf1 -all foo=%abc",
        ] {
            assert!(syntax(record).is_err(), "{record:?} passed");
        }
    }

    #[test]
    fn record_selection() {
        let set = |records: &[&str]| -> Vec<Vec<u8>> {
            records.iter().map(|r| r.as_bytes().to_vec()).collect()
        };
        assert_eq!(
            judge(&set(&["v=spf1 -all", "google-site-verification=x"])),
            None
        );
        assert_eq!(judge(&set(&["v=spf10", "v=spf1 mx"])), None);
        assert_eq!(judge(&set(&["v=spf1mx"])), None);
        assert_eq!(judge(&set(&["v=spf1\t-all"])), None);
        assert_eq!(judge(&set(&["v=spf1 -all", "\u{96}"])), None);
        assert!(judge(&set(&["v=spf1 -all", "v=spf1 +all"])).is_some());
        assert!(judge(&set(&["v=spf1 -all", "V=sPf1 +all"])).is_some());
        assert!(judge(&set(&["v=spf1 ip4:1.2.3.4/33"])).is_some());
    }

    #[test]
    fn cache_keys_read_back() {
        assert_eq!(key_text("example.com.").as_deref(), Some("example.com."));
        let boxed: Box<str> = "Mixed.Case.".into();
        assert_eq!(key_text(&boxed).as_deref(), Some("Mixed.Case."));
        assert_eq!(key_text(&IpAddr::from([192, 0, 2, 1])), None);
    }

    #[test]
    fn unqueryable_names() {
        assert!(unqueryable("mail.example...com."));
        assert!(unqueryable(
            "a1234567890123456789012345678901234567890123456789012345678901234.example."
        ));
        assert!(!unqueryable("mail.example.com."));
        assert!(!unqueryable("."));
        assert!(!unqueryable("foo:bar/baz.example.com."));
    }

    // --- evaluations against a zone: cold and warm must agree ------------------------------

    use hickory_proto::rr::{
        Name as ZName, RData as ZRData,
        rdata::{A, PTR},
    };
    use unspoof_dns::Zone;

    fn zone(records: &[(&str, &str)]) -> Zone {
        let mut z = Zone::new();
        for (name, value) in records {
            if let Some(a) = value.strip_prefix("A ") {
                z.add_rdata(name, ZRData::A(A(a.parse().unwrap()))).unwrap();
            } else if let Some(ptr) = value.strip_prefix("PTR ") {
                let target = ZName::from_ascii(ptr).unwrap();
                z.add_rdata(name, ZRData::PTR(PTR(target))).unwrap();
            } else {
                z.add_txt(name, value).unwrap();
            }
        }
        z
    }

    /// Evaluates MAIL FROM `sender` from `ip` twice (cold, then warm caches): both must agree.
    async fn twice(dns: &Dns, ip: &str, sender: &str) -> (SpfResult, Option<String>) {
        let auth = dns.authenticator().unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        let run = || check_host(dns, auth, ip, "mail.example.org", "mx.test", Some(sender));
        let cold = run().await;
        let warm = run().await;
        assert_eq!(
            cold.output.result(),
            warm.output.result(),
            "{sender}: cold vs warm"
        );
        assert_eq!(cold.problem, warm.problem, "{sender}: cold vs warm");
        assert_eq!(cold.output.explanation(), warm.output.explanation());
        (warm.output.result(), warm.problem)
    }

    #[tokio::test]
    async fn corrections_hold_cold_and_warm() {
        let dns = Dns::zones(
            zone(&[
                (
                    "ok.example",
                    "v=spf1 ip4:192.0.2.1 include:inc.example -all",
                ),
                ("ok.example", "google-site-verification=abc"),
                ("inc.example", "v=spf1 ip4:192.0.2.2 -all"),
                ("two.example", "v=spf1 ip4:192.0.2.1 -all"),
                ("two.example", "v=spf1 +all"),
                ("deep.example", "v=spf1 include:badinc.example -all"),
                ("badinc.example", "v=spf1 ip4:192.0.2.1/33 -all"),
                (
                    "unused.example",
                    "v=spf1 ip4:192.0.2.1 include:badinc.example -all",
                ),
                (
                    "void.example",
                    "v=spf1 a:n1.example a:n2.example a:n3.example +all",
                ),
                ("void2.example", "v=spf1 a:n1.example a:n2.example +all"),
                ("broken.example", "v=spf1 ip4:192.0.2.1 ip4:1.2.3.4:25 -all"),
                ("broken.example", "some other text"),
                ("ptr.example", "v=spf1 ptr -all"),
                ("1.2.0.192.in-addr.arpa", "PTR ptr.example."),
                ("ptr.example", "A 192.0.2.1"),
                ("dotptr.example", "v=spf1 ptr:ptr.example. -all"),
                ("exp.example", "v=spf1 -all exp=why.example"),
                ("why.example", "one"),
                ("why.example", "two"),
                ("long.example", "v=spf1 a:bad..example -all"),
                (
                    "exists.example",
                    "v=spf1 exists:%{l}.x.example a:bad..example -all",
                ),
            ]),
            std::time::Duration::from_millis(300),
        )
        .await
        .unwrap();

        assert_eq!(
            twice(&dns, "192.0.2.2", "a@ok.example").await,
            (SpfResult::Pass, None)
        );
        let (r, p) = twice(&dns, "192.0.2.1", "a@two.example").await;
        assert_eq!(r, SpfResult::PermError);
        assert!(p.unwrap().contains("2 v=spf1 records"));
        let (r, p) = twice(&dns, "192.0.2.1", "a@deep.example").await;
        assert_eq!(r, SpfResult::PermError);
        assert!(
            p.unwrap()
                .starts_with("badinc.example: \"ip4:192.0.2.1/33\"")
        );
        // The broken include is never reached: mail-auth never read it, neither do we.
        assert_eq!(
            twice(&dns, "192.0.2.1", "a@unused.example").await,
            (SpfResult::Pass, None)
        );
        let (r, p) = twice(&dns, "192.0.2.1", "a@void.example").await;
        assert_eq!(r, SpfResult::PermError);
        assert!(p.unwrap().contains("3 void DNS lookups"));
        assert_eq!(
            twice(&dns, "192.0.2.1", "a@void2.example").await,
            (SpfResult::Pass, None)
        );
        // A broken v=spf1 record followed by another TXT record: mail-auth says none.
        let (r, p) = twice(&dns, "192.0.2.1", "a@broken.example").await;
        assert_eq!(r, SpfResult::PermError);
        assert!(p.unwrap().contains("1.2.3.4:25"));
        // ptr matches its own domain once the PTR name has no root dot ...
        assert_eq!(
            twice(&dns, "192.0.2.1", "a@ptr.example").await,
            (SpfResult::Pass, None)
        );
        // ... and a dotted ptr target keeps mail-auth's exact comparison.
        assert_eq!(
            twice(&dns, "192.0.2.1", "a@dotptr.example").await,
            (SpfResult::Pass, None)
        );
        // Two TXT records at the exp= name: no explanation.
        let auth = dns.authenticator().unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let c = check_host(
            &dns,
            auth,
            ip,
            "h.example",
            "mx.test",
            Some("a@exp.example"),
        )
        .await;
        assert_eq!(
            (c.output.result(), c.output.explanation()),
            (SpfResult::Fail, None)
        );
        // A name no query can carry does not match ...
        assert_eq!(
            twice(&dns, "192.0.2.1", "a@long.example").await,
            (SpfResult::Fail, None)
        );
        // ... unless exists is on the path: mail-auth would take an empty answer as a match.
        let (r, _) = twice(&dns, "192.0.2.1", "bad..local@exists.example").await;
        assert_eq!(r, SpfResult::TempError);
        // Identity syntax: no DNS at all.
        let (r, p) = twice(&dns, "192.0.2.1", "a@[192.0.2.1]").await;
        assert_eq!(r, SpfResult::None);
        assert!(p.unwrap().contains("address literal"));

        // A warm message asks the network nothing (the raw TXT re-reads come from caches).
        let before = dns.zone_queries().unwrap();
        for sender in [
            "a@ok.example",
            "a@two.example",
            "a@deep.example",
            "a@ptr.example",
        ] {
            twice(&dns, "192.0.2.1", sender).await;
        }
        assert_eq!(dns.zone_queries().unwrap(), before);
    }
}
