//! Header ambiguity ("Composition Kills", Chen et al., USENIX Security 2020): header bytes that
//! two pieces of mail software read as two different senders, typically the one that checks
//! DMARC and the one that shows the sender to a person. An ambiguity is never resolved in the
//! attacker's favour: each is a reason of its own with the action `actions.header_ambiguity`,
//! and when any domain involved, in any parser's reading of it, is protected, the action is
//! reject.
//!
//! The From fields are read from the raw header section, not only from [`crate::Headers`]: a
//! continuation line ` From: x` is part of the previous field for RFC 5322 (and for our
//! splitter), but a new From for some parsers. Addresses are read by [`crate::address`], which
//! also says what the naive parser styles read ([`Style`]).
//!
//! | code | what |
//! | --- | --- |
//! | `ambiguity.from_multiple` | more than one From field, counting ` From:` continuation lines, `From :` and names folded across lines |
//! | `ambiguity.from_hidden` | a continuation line that starts with `From:` (RFC 5322 2.2.3 folds it into the previous field) |
//! | `ambiguity.from_name` | a From field whose name holds whitespace (`From :`) or is folded across lines (RFC 5322 2.2 forbids both) |
//! | `ambiguity.from_empty` | a From field with no mailbox a strict parser can read |
//! | `ambiguity.from_several` | a From field with more than one mailbox (RFC 5322 3.6.2 allows it with Sender; DMARC cannot pick one) |
//! | `ambiguity.from_domains_differ` | parser styles read From domains of different organisations (comments, quoted-pairs, text after the address, NUL, ...) |
//! | `ambiguity.from_malformed` | From syntax that parsers repair differently (unbalanced quotes, parentheses or brackets, NUL, backslash outside quotes, `@` in a quoted local part, ...), even where the readings agree |
//! | `ambiguity.encoded_address` | an address that exists only inside an RFC 2047 encoded-word of From (RFC 2047 5 forbids encoded-words in an addr-spec) |
//! | `ambiguity.route_address` | a source route `<@a,@b:user@d>` in From, Sender or Resent-From (RFC 5322 4.4 obs-route) |
//! | `ambiguity.sender_domain` | Sender or Resent-From shows a protected domain of another organisation than From, and nothing authenticates it (see below) |
//! | `ambiguity.mail_from_route` | MAIL FROM with a source route (RFC 5321 4.1.2 A-d-l; C.) |
//! | `ambiguity.mail_from_malformed` | MAIL FROM with unbalanced parentheses, quotes or brackets, several `@`, NUL, ... |
//! | `ambiguity.dkim_domain` | a DKIM-Signature whose `d=` or `s=` holds a NUL or characters no domain has, or occurs twice (RFC 6376 3.2) |
//!
//! Sender and Resent-From of another organisation are what every mailing list writes (164 of the
//! 300 ham messages have one), so `ambiguity.sender_domain` is raised only when the domain they
//! put on screen is protected, is not the organisation of MAIL FROM (the list pattern: Sender and
//! envelope name the list, and the own-domain check judges a protected MAIL FROM), and nothing
//! authenticates it (an aligned DKIM or SPF pass, or our own network).

use super::Context;
use std::{cell::RefCell, collections::HashMap};

use crate::{
    address::{self, AddressList, Defect, Reading, Style},
    auth::Word,
    domain::registrable,
    message::is_mbox,
    verdict::{Action, Reason},
};

/// Bytes of one header field shown in evidence; the rest is summarised.
const MAX_EVIDENCE: usize = 1024;

/// Fields quoted in the evidence of one reason.
const MAX_FIELDS_SHOWN: usize = 8;

/// From-like fields examined (a message with thousands is reported on the first ones).
const MAX_FROM_FIELDS: usize = 64;

/// Defects of a From value that parsers repair in different ways.
const TRICKS: &[Defect] = &[
    Defect::Nul,
    Defect::ControlChar,
    Defect::UnbalancedQuote,
    Defect::UnbalancedParen,
    Defect::UnbalancedAngle,
    Defect::UnbalancedBracket,
    Defect::NestedAngle,
    Defect::QuotedPairOutsideQuotes,
    Defect::EncodedWordInAddress,
    Defect::SpecialInLocalPart,
    Defect::MultipleAt,
    Defect::TrailingText,
    Defect::TooLong,
    Defect::TooDeep,
];

/// Defects of a MAIL FROM path that make it malformed (the route has its own code).
const PATH_TRICKS: &[Defect] = &[
    Defect::Nul,
    Defect::ControlChar,
    Defect::UnbalancedQuote,
    Defect::UnbalancedParen,
    Defect::UnbalancedAngle,
    Defect::UnbalancedBracket,
    Defect::NestedAngle,
    Defect::QuotedPairOutsideQuotes,
    Defect::SpecialInLocalPart,
    Defect::MultipleAt,
    Defect::ParenInPath,
    Defect::TrailingText,
    Defect::BadLocalPart,
    Defect::BadDomain,
    Defect::EmptyDomain,
    Defect::TooLong,
];

/// One ambiguity before its action is decided.
struct Found {
    code: &'static str,
    message: String,
    evidence: Vec<String>,
    /// The first protected domain that any reading involves: it makes the finding a reject.
    protected: Option<String>,
}

/// Adds a finding, merging it into an earlier one with the same code.
fn add(found: &mut Vec<Found>, f: Found) {
    match found.iter_mut().find(|g| g.code == f.code) {
        Some(g) => {
            for e in f.evidence {
                if !g.evidence.contains(&e) && g.evidence.len() < MAX_FIELDS_SHOWN {
                    g.evidence.push(e);
                }
            }
            if g.protected.is_none() {
                g.protected = f.protected;
            }
        }
        None => found.push(f),
    }
}

/// The first protected domain among `domains`.
fn protected_in<'a>(
    ctx: &Context<'_>,
    domains: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    domains
        .into_iter()
        .find(|d| ctx.policy.is_protected(d))
        .map(str::to_string)
}

/// Registrable domains, each looked up once per message (IDNA and the PSL are the costly part
/// of comparing readings).
#[derive(Default)]
struct Orgs(RefCell<HashMap<String, Option<String>>>);

impl Orgs {
    fn org(&self, d: &str) -> Option<String> {
        if let Some(o) = self.0.borrow().get(d) {
            return o.clone();
        }
        let o = registrable(d);
        self.0.borrow_mut().insert(d.to_string(), o.clone());
        o
    }

    /// Equal, or the same registrable domain.
    fn same(&self, a: &str, b: &str) -> bool {
        a == b || self.org(a).is_some_and(|x| Some(x) == self.org(b))
    }
}

/// The distinct domains of `ctx.from` (mail-parser's reading), at most [`address::MAX_READINGS`]
/// for comparisons: a From with thousands of mailboxes is already `ambiguity.from_several`.
fn common_domains(ctx: &Context<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in &ctx.from {
        if out.len() >= address::MAX_READINGS {
            break;
        }
        if !m.domain.is_empty() && !out.contains(&m.domain) {
            out.push(m.domain.clone());
        }
    }
    out
}

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let mut found = Vec::new();
    let froms = from_fields(ctx);
    let orgs = Orgs::default();
    from_checks(ctx, &orgs, &froms, &mut found);
    sender_checks(ctx, &orgs, &froms, &mut found);
    mail_from_checks(ctx, &mut found);
    dkim_checks(ctx, &froms, &mut found);
    for f in found {
        let (action, message) = match &f.protected {
            Some(d) => (
                Action::Reject,
                format!(
                    "{}; it involves {d}, one of our protected domains, so it is rejected",
                    f.message
                ),
            ),
            None => (ctx.policy.actions.header_ambiguity, f.message),
        };
        let mut r = Reason::new(f.code, action, message);
        r.evidence = f.evidence;
        out.push(r);
    }
}

// ---------------------------------------------------------------------------------------------
// From

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FromKind {
    /// `From:` as RFC 5322 writes it.
    Plain,
    /// `From :` (whitespace in the name).
    SpacedName,
    /// `From` on one line and `:` on a continuation line.
    FoldedName,
    /// A continuation line ` From: ...`.
    Hidden,
}

struct FromField<'a> {
    kind: FromKind,
    /// The whole field as on the wire, for evidence.
    raw: &'a [u8],
    /// Whether this is the field the common parsers (mail-parser, [`Context::from`]) read.
    first: bool,
    /// The strict parse of the bytes after the colon and what each parser style reads from
    /// them: parsed once here, read by every check below.
    list: AddressList,
    readings: Vec<Reading>,
}

impl<'a> FromField<'a> {
    fn new(kind: FromKind, raw: &'a [u8], value: &'a [u8], first: bool) -> Self {
        let (list, readings) = address::read_address_list(value);
        FromField {
            kind,
            raw,
            first,
            list,
            readings,
        }
    }
}

/// Every From-like field of the header section, in message order.
fn from_fields<'a>(ctx: &Context<'a>) -> Vec<FromField<'a>> {
    let mut out = Vec::new();
    let mut first_seen = false;
    for h in ctx.headers.all("From").take(MAX_FROM_FIELDS) {
        let end = (h.offset + h.name.len() + 1 + h.value.len()).min(ctx.raw.len());
        let kind = if h.name.eq_ignore_ascii_case(b"From") {
            FromKind::Plain
        } else {
            FromKind::SpacedName
        };
        out.push(FromField::new(
            kind,
            &ctx.raw[h.offset.min(end)..end],
            h.value,
            !first_seen,
        ));
        first_seen = true;
    }
    // Lines of the header section: hidden ` From:` continuations and names folded across lines.
    let section = &ctx.raw[..ctx.headers.body_offset.min(ctx.raw.len())];
    let mut lines: Vec<(usize, &[u8])> = Vec::new();
    let mut pos = 0;
    while pos < section.len() {
        let end = memchr::memchr(b'\n', &section[pos..]).map_or(section.len(), |n| pos + n);
        let line = &section[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        lines.push((pos, line));
        pos = end + 1;
    }
    let skip = usize::from(is_mbox(ctx.raw));
    for i in skip..lines.len() {
        if out.len() >= MAX_FROM_FIELDS {
            break;
        }
        let (at, line) = lines[i];
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            // Also as the first line, where it continues nothing: parsers skip it or take it.
            if let Some(value) = named_from(line.trim_ascii_start()) {
                out.push(FromField::new(
                    FromKind::Hidden,
                    &section[at..at + line.len()],
                    value,
                    false,
                ));
            }
        } else if line.trim_ascii().eq_ignore_ascii_case(b"From")
            && let Some(&(next_at, next)) = lines.get(i + 1)
            && next.first().is_some_and(|&b| b == b' ' || b == b'\t')
            && next.trim_ascii_start().first() == Some(&b':')
        {
            let colon = next.iter().position(|&b| b == b':').unwrap_or(0);
            out.push(FromField::new(
                FromKind::FoldedName,
                &section[at..next_at + next.len()],
                &next[colon + 1..],
                false,
            ));
        }
    }
    out
}

/// The value after `From` WSP* `:` at the start of `line`.
fn named_from(line: &[u8]) -> Option<&[u8]> {
    let rest = line
        .get(..4)?
        .eq_ignore_ascii_case(b"From")
        .then(|| &line[4..])?;
    let rest = rest.trim_ascii_start();
    rest.strip_prefix(b":")
}

/// A reading for the message: `style reads domain`.
fn describe(label: &str, domain: &str) -> String {
    format!("{label} reads {domain}")
}

fn from_checks(ctx: &Context<'_>, orgs: &Orgs, froms: &[FromField<'_>], found: &mut Vec<Found>) {
    let common = common_domains(ctx);
    // Every mailbox mail-parser read counts for the action, not only the first ones compared.
    let common_protected = protected_in(ctx, ctx.from.iter().map(|m| m.domain.as_str()));
    let every_protected = protected_in(
        ctx,
        froms
            .iter()
            .flat_map(|f| &f.readings)
            .map(|r| r.domain.as_str()),
    )
    .or_else(|| common_protected.clone());

    if froms.len() > 1 {
        add(
            found,
            Found {
                code: "ambiguity.from_multiple",
                message: format!(
                    "the message has {} From fields (counting continuation lines and odd names that some parsers read as From): mail software picks different ones, so the sender shown may not be the sender checked",
                    froms.len()
                ),
                evidence: froms
                    .iter()
                    .take(MAX_FIELDS_SHOWN)
                    .map(|f| escape(f.raw))
                    .collect(),
                protected: every_protected.clone(),
            },
        );
    }
    for f in froms {
        let (code, message) = match f.kind {
            FromKind::Plain => continue,
            FromKind::Hidden => (
                "ambiguity.from_hidden",
                "a header line starts with whitespace and then From: RFC 5322 makes it part of the field above, but some parsers read it as a From field of its own",
            ),
            FromKind::SpacedName => (
                "ambiguity.from_name",
                "a From field has whitespace in its name (\"From :\"), which RFC 5322 does not allow: some parsers ignore the field, others read it as From",
            ),
            FromKind::FoldedName => (
                "ambiguity.from_name",
                "a From field's name is folded across lines, which RFC 5322 does not allow: some parsers ignore the field, others read it as From",
            ),
        };
        add(
            found,
            Found {
                code,
                message: message.to_string(),
                evidence: vec![escape(f.raw)],
                protected: every_protected.clone(),
            },
        );
    }

    for f in froms {
        let (list, readings) = (&f.list, &f.readings);
        let protected =
            protected_in(ctx, readings.iter().map(|r| r.domain.as_str())).or_else(|| {
                if f.first {
                    common_protected.clone()
                } else {
                    None
                }
            });
        // Built only for a finding: most From fields have none.
        let evidence = || vec![escape(f.raw)];
        let count = list.mailboxes().count();
        if count == 0 {
            add(
                found,
                Found {
                    code: "ambiguity.from_empty",
                    message: "the From field holds no mailbox that a strict parser can read, so each program guesses the author its own way".into(),
                    evidence: evidence(),
                    protected: protected.clone(),
                },
            );
        } else if count > 1 {
            add(
                found,
                Found {
                    code: "ambiguity.from_several",
                    message: format!(
                        "the From field holds {count} mailboxes: a program that shows the first and one that checks another disagree about the author"
                    ),
                    evidence: evidence(),
                    protected: protected.clone(),
                },
            );
        }

        // The strict domains against every other style's (routes and encoded-words have their
        // own codes).
        let strict: Vec<&str> = readings
            .iter()
            .filter(|r| r.style == Style::Strict)
            .map(|r| r.domain.as_str())
            .collect();
        let mut others: Vec<(&str, &str)> = readings
            .iter()
            .filter(|r| {
                !matches!(
                    r.style,
                    Style::Strict | Style::Route | Style::EncodedWord | Style::Mentioned
                )
            })
            .map(|r| (r.style.as_str(), r.domain.as_str()))
            .collect();
        if f.first {
            others.extend(common.iter().map(|d| ("mail-parser", d.as_str())));
        }
        let disagree: Vec<&(&str, &str)> = others
            .iter()
            .filter(|(_, d)| !strict.iter().any(|s| orgs.same(s, d)))
            .collect();
        let tricks: Vec<&str> = list
            .defects
            .iter()
            .filter(|d| TRICKS.contains(d))
            .map(|d| d.as_str())
            .collect();
        if !disagree.is_empty() {
            let mut said: Vec<String> = match strict.as_slice() {
                [] => vec!["a strict parser reads no address".into()],
                s => vec![describe("a strict parser", &s.join(", "))],
            };
            said.extend(others.iter().map(|(l, d)| describe(l, d)));
            let tail = if tricks.is_empty() {
                String::new()
            } else {
                format!(" (syntax defects: {})", tricks.join(", "))
            };
            add(
                found,
                Found {
                    code: "ambiguity.from_domains_differ",
                    message: format!(
                        "parsers read different sender domains in the From field: {}{tail}",
                        said.join("; ")
                    ),
                    evidence: evidence(),
                    protected: protected.clone(),
                },
            );
        } else if !tricks.is_empty() {
            add(
                found,
                Found {
                    code: "ambiguity.from_malformed",
                    message: format!(
                        "the From field is malformed in ways that parsers repair differently: {}",
                        tricks.join(", ")
                    ),
                    evidence: evidence(),
                    protected: protected.clone(),
                },
            );
        }

        let hidden: Vec<&str> = readings
            .iter()
            .filter(|r| {
                r.style == Style::EncodedWord && !strict.iter().any(|s| orgs.same(s, &r.domain))
            })
            .map(|r| r.domain.as_str())
            .collect();
        if !hidden.is_empty() {
            let real = if strict.is_empty() {
                "a strict parser reads no address at all".to_string()
            } else {
                format!("the real address is in {}", strict.join(", "))
            };
            add(
                found,
                Found {
                    code: "ambiguity.encoded_address",
                    message: format!(
                        "the From field hides an address in {} inside an RFC 2047 encoded-word: programs that decode before they parse, and people, read it as the sender, but {real}",
                        hidden.join(", ")
                    ),
                    evidence: evidence(),
                    protected: protected.clone(),
                },
            );
        }
        if list.has(Defect::RouteAddress) {
            add(found, route_finding(ctx, "From", &evidence(), readings));
        }
    }
}

fn route_finding(
    ctx: &Context<'_>,
    field: &str,
    evidence: &[String],
    readings: &[Reading],
) -> Found {
    let route: Vec<&str> = readings
        .iter()
        .filter(|r| r.style == Style::Route)
        .map(|r| r.domain.as_str())
        .collect();
    Found {
        code: "ambiguity.route_address",
        message: format!(
            "{field} holds a source route through {} (obsolete since RFC 1123): some programs read the route as the address, others the mailbox at its end",
            route.join(", ")
        ),
        evidence: evidence.to_vec(),
        protected: protected_in(ctx, readings.iter().map(|r| r.domain.as_str())),
    }
}

// ---------------------------------------------------------------------------------------------
// Sender, Resent-From

/// Whether `domain` is authenticated for this message: an aligned-by-organisation DKIM pass or
/// SPF pass.
fn authenticated(ctx: &Context<'_>, orgs: &Orgs, domain: &str) -> bool {
    let auth = ctx.auth;
    auth.dkim
        .iter()
        .any(|d| d.result == Word::Pass && orgs.same(&d.domain.to_ascii_lowercase(), domain))
        || (auth.spf.result == Word::Pass
            && orgs.same(&auth.spf.domain.to_ascii_lowercase(), domain))
}

fn sender_checks(ctx: &Context<'_>, orgs: &Orgs, froms: &[FromField<'_>], found: &mut Vec<Found>) {
    // The From domains compared with, capped like every reading: past the cap a Sender may be
    // reported that a longer comparison would have excused, never the other way round.
    let mut from_domains = common_domains(ctx);
    for f in froms.iter().filter(|f| f.kind == FromKind::Plain) {
        for m in f.list.mailboxes() {
            if from_domains.len() >= 2 * address::MAX_READINGS {
                break;
            }
            let d = m.domain_key();
            if !from_domains.contains(&d) {
                from_domains.push(d);
            }
        }
    }
    let internal = ctx.envelope.ip.is_some_and(|ip| ctx.policy.is_internal(ip));
    let mail_from = ctx.mail_from_domain();
    for name in ["Sender", "Resent-From"] {
        for h in ctx.headers.all(name).take(MAX_FROM_FIELDS) {
            let end = (h.offset + h.name.len() + 1 + h.value.len()).min(ctx.raw.len());
            let evidence = || vec![escape(&ctx.raw[h.offset.min(end)..end])];
            let (list, readings) = address::read_address_list(h.value);
            if list.has(Defect::RouteAddress) {
                add(found, route_finding(ctx, name, &evidence(), &readings));
            }
            if internal {
                continue;
            }
            // A Sender in the organisation the envelope names is the on-behalf-of pattern of
            // every mailing list; whether that organisation really sent the message is for SPF
            // and the own-domain check on MAIL FROM to judge.
            // Addresses merely mentioned in its display name are the impersonation check's.
            let shown: Vec<&str> = readings
                .iter()
                .filter(|r| r.style != Style::Mentioned)
                .map(|r| r.domain.as_str())
                .filter(|d| ctx.policy.is_protected(d))
                .filter(|d| !from_domains.iter().any(|f| orgs.same(f, d)))
                .filter(|d| !mail_from.as_deref().is_some_and(|m| orgs.same(m, d)))
                .filter(|d| !authenticated(ctx, orgs, d))
                .collect();
            let Some(&domain) = shown.first() else {
                continue;
            };
            let from = from_domains
                .first()
                .map_or("no readable domain".to_string(), |d| d.clone());
            add(
                found,
                Found {
                    code: "ambiguity.sender_domain",
                    message: format!(
                        "{name} puts {domain}, one of our domains, on screen beside a From in {from}, another organisation, and nothing authenticates {domain}: some programs show {name} as the sender"
                    ),
                    evidence: evidence(),
                    protected: Some(domain.to_string()),
                },
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MAIL FROM

fn mail_from_checks(ctx: &Context<'_>, found: &mut Vec<Found>) {
    let Some(mail_from) = ctx.envelope.mail_from.as_deref() else {
        return;
    };
    let (path, readings) = address::read_path(mail_from.as_bytes());
    let protected = protected_in(ctx, readings.iter().map(|r| r.domain.as_str()));
    let evidence = || vec![format!("MAIL FROM:<{}>", escape(mail_from.as_bytes()))];
    let field = if ctx.envelope.inferred.contains(&"mail_from") {
        "the Return-Path (standing in for MAIL FROM)"
    } else {
        "MAIL FROM"
    };
    if path.has(Defect::RouteAddress) {
        let route: Vec<&str> = readings
            .iter()
            .filter(|r| r.style == Style::Route)
            .map(|r| r.domain.as_str())
            .collect();
        add(
            found,
            Found {
                code: "ambiguity.mail_from_route",
                message: format!(
                    "{field} holds a source route through {} (RFC 5321 says to ignore it): SPF checks one domain, a relay that honours the route sends to another",
                    route.join(", ")
                ),
                evidence: evidence(),
                protected: protected.clone(),
            },
        );
    }
    let tricks: Vec<&str> = path
        .defects
        .iter()
        .filter(|d| PATH_TRICKS.contains(d))
        .map(|d| d.as_str())
        .collect();
    if !tricks.is_empty() {
        let read: Vec<String> = readings
            .iter()
            .filter(|r| r.style != Style::Mentioned)
            .map(|r| describe(r.style.as_str(), &r.domain))
            .collect();
        add(
            found,
            Found {
                code: "ambiguity.mail_from_malformed",
                message: format!(
                    "{field} is malformed ({}), so SPF and the programs after it may check different domains: {}",
                    tricks.join(", "),
                    if read.is_empty() {
                        "none reads a domain".to_string()
                    } else {
                        read.join("; ")
                    }
                ),
                evidence: evidence(),
                protected,
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// DKIM-Signature d= and s=

/// Whether a d= or s= value (FWS at its ends removed) is a plausible domain name: labels of
/// letters, digits, `-` and `_` (selectors use it), or UTF-8 (RFC 8616 U-labels).
fn domain_like(v: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(v) else {
        return false;
    };
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || c == '-'
                        || c == '_'
                        || (!c.is_ascii() && !c.is_control())
                })
        })
}

/// The values of a DKIM-Signature's `d=` and `s=` tags, every occurrence, trimmed: each
/// `;`-separated piece up to its first `=` names the tag (names compared without case and
/// surrounding whitespace). One memchr pass over the field for both tags.
fn d_and_s_values(value: &[u8]) -> (Vec<&[u8]>, Vec<&[u8]>) {
    let (mut d, mut s) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start <= value.len() {
        let end = memchr::memchr(b';', &value[start..]).map_or(value.len(), |i| start + i);
        let t = &value[start..end];
        if let Some(eq) = memchr::memchr(b'=', t) {
            let name = t[..eq].trim_ascii();
            if name.eq_ignore_ascii_case(b"d") {
                d.push(t[eq + 1..].trim_ascii());
            } else if name.eq_ignore_ascii_case(b"s") {
                s.push(t[eq + 1..].trim_ascii());
            }
        }
        start = end + 1;
    }
    (d, s)
}

fn dkim_checks(ctx: &Context<'_>, froms: &[FromField<'_>], found: &mut Vec<Found>) {
    // Alignment compares d= with From: a protected From makes a DKIM ambiguity a reject too.
    // Only needed for a finding, so only looked up then.
    let from_protected = || {
        froms
            .iter()
            .find_map(|f| protected_in(ctx, f.readings.iter().map(|r| r.domain.as_str())))
            .or_else(|| protected_in(ctx, ctx.from.iter().map(|m| m.domain.as_str())))
    };
    for h in ctx.headers.all("DKIM-Signature").take(MAX_FROM_FIELDS) {
        let mut problems = Vec::new();
        let (d_values, s_values) = d_and_s_values(h.value);
        for (tag, values) in [("d", &d_values), ("s", &s_values)] {
            if values.len() > 1 {
                problems.push(format!("{tag}= occurs {} times", values.len()));
            }
            for v in values {
                if !domain_like(v) {
                    let what = if v.contains(&0) {
                        "a NUL byte"
                    } else if v.is_empty() {
                        "nothing"
                    } else {
                        "characters no domain name has"
                    };
                    problems.push(format!("{tag}={} holds {what}", escape(v)));
                }
            }
        }
        if problems.is_empty() {
            continue;
        }
        // Every reading of each d=: each piece between bad bytes, and the whole.
        let mut domains: Vec<String> = Vec::new();
        for v in &d_values {
            domains.extend(
                v.split(|&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b >= 0x80))
                    .filter_map(address::domain_after_at),
            );
            domains.extend(address::domain_after_at(v));
        }
        let end = (h.offset + h.name.len() + 1 + h.value.len()).min(ctx.raw.len());
        add(
            found,
            Found {
                code: "ambiguity.dkim_domain",
                message: format!(
                    "a DKIM-Signature names its signer ambiguously ({}): verifiers and DNS libraries read a different domain or selector, or none",
                    problems.join("; ")
                ),
                evidence: vec![escape(&ctx.raw[h.offset.min(end)..end])],
                protected: protected_in(ctx, domains.iter().map(String::as_str))
                    .or_else(from_protected),
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Evidence

/// Header bytes as readable text: line breaks, tabs, control bytes, backslashes and invalid
/// UTF-8 escaped (`\r`, `\n`, `\t`, `\\`, `\xNN`), everything else as it is; cut at
/// [`MAX_EVIDENCE`] bytes.
fn escape(bytes: &[u8]) -> String {
    let (shown, cut) = if bytes.len() > MAX_EVIDENCE {
        (&bytes[..MAX_EVIDENCE], bytes.len() - MAX_EVIDENCE)
    } else {
        (bytes, 0)
    };
    let mut out = String::with_capacity(shown.len() + 16);
    for chunk in shown.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if cut > 0 {
        out.push_str(&format!("... ({cut} more bytes)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d_and_s_values_are_the_split_readings() {
        // The split the one-pass reader replaced, per tag.
        fn by_split<'a>(value: &'a [u8], tag: &[u8]) -> Vec<&'a [u8]> {
            value
                .split(|&b| b == b';')
                .filter_map(|t| {
                    let eq = t.iter().position(|&b| b == b'=')?;
                    t[..eq]
                        .trim_ascii()
                        .eq_ignore_ascii_case(tag)
                        .then(|| t[eq + 1..].trim_ascii())
                })
                .collect()
        }
        for v in [
            &b""[..],
            b";",
            b"v=1; a=rsa-sha256; d=example.com; s=sel; b=abc==; bh=x=",
            b" D = a.example ;S=s1;d=b.example;s= ;d;s;=x; d=x=y ",
            b"d=\0nul\0;s=a b;;;",
            b"b=dGVzdA==;d=a;",
        ] {
            assert_eq!(
                d_and_s_values(v),
                (by_split(v, b"d"), by_split(v, b"s")),
                "{v:?}"
            );
        }
    }

    #[test]
    fn escapes_evidence() {
        assert_eq!(
            escape(b"From: a\0b\r\n\tc\\\xff\"x\""),
            "From: a\\x00b\\r\\n\\tc\\\\\\xff\"x\""
        );
        assert!(escape(&[b'a'; 5000]).ends_with("(3976 more bytes)"));
    }

    #[test]
    fn dkim_values() {
        assert!(domain_like(b"example.com"));
        assert!(domain_like(b"s_2024._x"));
        assert!(domain_like("bücher.example".as_bytes()));
        assert!(!domain_like(b"legit.com\0.evil.com"));
        assert!(!domain_like(b"a..b"));
        assert!(!domain_like(b"evil.com legit.com"));
        assert!(!domain_like(b""));
    }

    #[test]
    fn from_names() {
        assert_eq!(named_from(b"From: x"), Some(&b" x"[..]));
        assert_eq!(named_from(b"from \t: x"), Some(&b" x"[..]));
        assert_eq!(named_from(b"Fromage: x"), None);
        assert_eq!(named_from(b"Fro"), None);
    }
}
