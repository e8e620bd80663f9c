//! Display-name impersonation: a name a reader trusts on an address that is not the named
//! person's, and a display name that shows one address while the mail comes from another.
//!
//! Most mail clients show the display name and hide the address, so `"Joe SixPack"
//! <boss.joe@freemail.example>` reads as Joe, and `"joe@ours.com" <x@evil.example>` reads as
//! an address of ours.
//!
//! Codes, for the From mailboxes with a display name:
//! - `impersonation.display_name` (action `actions.impersonation`): the name is a protected
//!   person's name, as [`names::compare`] decides: the same token set after case, accents,
//!   confusable characters (UTS #39 skeletons), punctuation, "Last, First" order, titles,
//!   suffixes and middle initials are set aside; or that name plus only role words
//!   ("PayPal Customer Service"); and the address is none of the person's `addresses`.
//! - `impersonation.display_name_partial` (`tag`, or the impersonation action if lower): the
//!   protected name plus other words ("Joe SixPack via LinkedIn"). Notification services write
//!   names this way for real people, so it warns the reader rather than stopping the message.
//! - `impersonation.address_in_name`: the display name holds an email address (after NFKD, so a
//!   fullwidth ＠ counts, and after RFC 2047 decoding, which the From parser does) whose domain is
//!   not the same organisation as the real address's. When that domain is protected the action
//!   is the impersonation action raised to at least `quarantine` (a display that shows one of
//!   our addresses on outside mail is the forgery this project exists to stop); otherwise it is
//!   `tag`: old mail clients and some list managers put the author's address in the name
//!   (`"jm@example.org" <jm@isp.example>`), so a reader is warned but the mail is delivered. An
//!   `accept` (log-only) impersonation action keeps both log-only.
//!
//! - `impersonation.watched_brand` (`watched.rs`): a watched domain's name on another
//!   organisation's address; and an address of a watched domain in a display name is judged as
//!   one of a protected domain (the impersonation action, at least `quarantine`).
//!
//! The display-name findings remember (`correspondent.rs`): on an address that has written to
//! the site before they are only tagged, and an exact namesake from such an address, fully
//! authenticated, becomes `impersonation.namesake` (informational).
//!
//! Besides each parsed display name, the whole From text less its addresses (decoded, `<...>`
//! and quotes removed) is read the same way when the parsed names found nothing: crafted fields
//! such as `Microsoft account team ,_<x@example.net>` make the parser see a mailbox named "_"
//! while a mail client shows "Microsoft account team". One reason of each code at most.
//!
//! An address in a person's `addresses` written as `@domain` stands for every address at that
//! domain and its subdomains; it suits names that are brands or departments ("PayPal",
//! "IT Helpdesk").
//!
//! Mail authenticated as ours is never impersonation: when the From domain is protected and
//! the message came from an internal network, passed DMARC for it, or carries a passing DKIM
//! signature of the same organisation, a colleague's assistant, a shared mailbox or our own
//! ticket system may show whatever name it likes.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Context, Mailbox,
    confusables::{is_invisible, strip_marks},
    correspondent,
    names::{Name, NameMatch, compare},
    watched,
};
use crate::{
    auth::Word,
    domain::same_organisation,
    policy::ProtectedPerson,
    verdict::{Action, Reason},
};

/// Only the first addresses written in a display name are compared with the real one.
pub const MAX_ADDRESSES_IN_NAME: usize = 8;

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    if ctx.from.is_empty() {
        return;
    }
    let policy_data = super::PolicyData::of(ctx.policy);
    let people: Vec<(&ProtectedPerson, &Name)> = policy_data
        .people
        .iter()
        .map(|(i, name)| (&ctx.policy.protected_people[*i], name))
        .collect();
    let raw_from = ctx.headers.first("From").map(|h| h.value_unfolded());
    let mut found = Vec::new();
    for mb in &ctx.from {
        let Some(display) = mb.name.as_deref() else {
            continue;
        };
        if authenticated_as_ours(ctx, mb) {
            continue;
        }
        display_name(ctx, &[mb], display, &people, &mut found);
        watched::display_name(ctx, &[mb], display, &mut found);
        address_in_name(ctx, &[mb], display, &mut found);
    }
    // What a reader may see besides the parsed names: the whole From text less its addresses.
    // Crafted fields (`Microsoft account team ,_<x@example.net>`) make the parser find the name
    // "_" while a mail client shows the words before the comma.
    if let Some(visible) = raw_from.as_deref().map(|v| visible_text(v, &ctx.from))
        && !ctx.from.iter().any(|mb| authenticated_as_ours(ctx, mb))
    {
        let all: Vec<&Mailbox> = ctx.from.iter().collect();
        let named = |found: &[Reason], codes: &[&str]| {
            found
                .iter()
                .any(|r| codes.iter().any(|c| r.code.starts_with(c)))
        };
        if !named(
            &found,
            &["impersonation.display_name", "impersonation.namesake"],
        ) {
            display_name(ctx, &all, &visible, &people, &mut found);
        }
        if !named(
            &found,
            &["impersonation.watched_brand", "impersonation.namesake"],
        ) {
            watched::display_name(ctx, &all, &visible, &mut found);
        }
        if !found
            .iter()
            .any(|r| r.code == "impersonation.address_in_name")
        {
            address_in_name(ctx, &all, &visible, &mut found);
        }
    }
    for r in found {
        out.push(match &raw_from {
            Some(v) => r.with_evidence(format!("From: {v}")),
            None => r,
        });
    }
}

/// The From field as a reader sees it apart from its addresses: RFC 2047 words decoded, every
/// `<...>` and every parsed address removed, quotes dropped.
fn visible_text(raw: &str, from: &[Mailbox]) -> String {
    let decoded = crate::message::codec::decode_words(raw);
    let mut text = String::with_capacity(decoded.len());
    let mut depth = 0usize;
    for c in decoded.chars() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            '"' => {}
            _ if depth == 0 => text.push(c),
            _ => {}
        }
    }
    remove_addresses(&text, from)
}

/// `text` with each mailbox's address removed, in mailbox order: the first occurrence (ASCII
/// letters compared without case) in the text as the removals before it left it, replaced by
/// one space.
///
/// Done the plain way (search the text from its start, splice in the space) that is quadratic
/// in a From of thousands of mailboxes. So the text is kept as it was, with the removed spans
/// (each standing for one space) beside it: an address without a space can only match inside
/// what is left of the text, never across a removed span, so its first occurrence is the first
/// one in the original text that touches no removed span; and an address with an `@` can only
/// start `k` bytes before an `@` of the text (`k` = where its own first `@` is), so only the
/// `@`s not yet removed are tried. An address with a space may match across a removed span's
/// space: for it the current text is built and searched as is.
fn remove_addresses(text: &str, from: &[Mailbox]) -> String {
    // ASCII case folding keeps byte offsets, so offsets into `lower` are offsets into `text`.
    let lower = text.to_ascii_lowercase().into_bytes();
    // Removed spans of `text`, start -> end; disjoint, each shown as one space.
    let mut removed: BTreeMap<usize, usize> = BTreeMap::new();
    // The `@`s of `text` outside every removed span.
    let mut ats: BTreeSet<usize> = memchr::memchr_iter(b'@', &lower).collect();
    let touches_removed = |removed: &BTreeMap<usize, usize>, start: usize, end: usize| {
        removed
            .range(..end)
            .next_back()
            .is_some_and(|(_, &e)| e > start)
    };
    for mb in from {
        if mb.address.is_empty() {
            continue;
        }
        let addr = mb.address.to_ascii_lowercase().into_bytes();
        let fits = |start: usize| {
            lower.get(start..start + addr.len()) == Some(&addr[..])
                && !touches_removed(&removed, start, start + addr.len())
        };
        let found = if addr.contains(&b' ') {
            find_in_current(&lower, &removed, &addr)
        } else if let Some(k) = memchr::memchr(b'@', &addr) {
            ats.iter()
                .filter_map(|&at| at.checked_sub(k))
                .find(|&start| fits(start))
                .map(|start| (start, start + addr.len()))
        } else {
            // Every occurrence, overlapping ones included (memmem's iterator skips those).
            let finder = memchr::memmem::Finder::new(&addr);
            let mut from = 0;
            let mut found = None;
            while let Some(at) = lower.get(from..).and_then(|rest| finder.find(rest)) {
                if fits(from + at) {
                    found = Some((from + at, from + at + addr.len()));
                    break;
                }
                from += at + 1;
            }
            found
        };
        if let Some((start, end)) = found {
            // Spans inside the new one (an address with a space matched across them) merge.
            let inside: Vec<usize> = removed.range(start..end).map(|(&s, _)| s).collect();
            for s in inside {
                removed.remove(&s);
            }
            removed.insert(start, end);
            let gone: Vec<usize> = ats.range(start..end).copied().collect();
            for at in gone {
                ats.remove(&at);
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for (&start, &end) in &removed {
        out.push_str(&text[pos..start]);
        out.push(' ');
        pos = end;
    }
    out.push_str(&text[pos..]);
    out
}

/// The first occurrence of `addr` in the current text (`lower` with each removed span shown as
/// one space), as a span of `lower`: a match that includes a removed span's space covers all of
/// that span.
fn find_in_current(
    lower: &[u8],
    removed: &BTreeMap<usize, usize>,
    addr: &[u8],
) -> Option<(usize, usize)> {
    let mut current = Vec::with_capacity(lower.len());
    // For each byte of `current`, the span of `lower` it shows.
    let mut spans = Vec::with_capacity(lower.len());
    let mut pos = 0;
    for (&start, &end) in removed {
        current.extend_from_slice(&lower[pos..start]);
        spans.extend((pos..start).map(|i| (i, i + 1)));
        current.push(b' ');
        spans.push((start, end));
        pos = end;
    }
    current.extend_from_slice(&lower[pos..]);
    spans.extend((pos..lower.len()).map(|i| (i, i + 1)));
    let at = memchr::memmem::find(&current, addr)?;
    Some((spans[at].0, spans[at + addr.len() - 1].1))
}

/// A protected person's name on an address that is not theirs.
fn display_name(
    ctx: &Context<'_>,
    mailboxes: &[&Mailbox],
    display: &str,
    people: &[(&ProtectedPerson, &Name)],
    out: &mut Vec<Reason>,
) {
    if people.is_empty() {
        return; // nobody to impersonate: no need to read the name
    }
    let shown = Name::parse(display);
    if shown.is_empty() {
        return;
    }
    let mut best: Option<(NameMatch, &ProtectedPerson)> = None;
    for (person, name) in people {
        let Some(m) = compare(&shown, name) else {
            continue;
        };
        if mailboxes.iter().any(|mb| owns(person, mb)) {
            // The name is theirs and so is the address: no other person's match counts.
            return;
        }
        if best.is_none_or(|(b, _)| rank(m) > rank(b)) {
            best = Some((m, person));
        }
    }
    let Some((m, person)) = best else { return };
    let Some(mb) = mailboxes.first() else { return };
    let action = ctx.policy.actions.impersonation;
    let (code, action, how) = match m {
        NameMatch::Exact => ("impersonation.display_name", action, "the name of"),
        NameMatch::WithRoleWords => (
            "impersonation.display_name",
            action,
            "the name of (with only role words added)",
        ),
        NameMatch::Partial => (
            "impersonation.display_name_partial",
            action.min(Action::Tag),
            "words that include the name of",
        ),
    };
    let memory = correspondent::judge(ctx, mb, m == NameMatch::Exact, action);
    let (code, action) = (memory.code.unwrap_or(code), memory.action);
    out.push(Reason::new(
        code,
        action,
        format!(
            "the sender shows {how} {:?}, a protected person, but writes from {}, which is not one of their addresses{}",
            person.name, mb.address, memory.note
        ),
    ));
}

fn rank(m: NameMatch) -> u8 {
    match m {
        NameMatch::Exact => 2,
        NameMatch::WithRoleWords => 1,
        NameMatch::Partial => 0,
    }
}

/// Whether `mb` is one of the person's addresses (`@domain` entries cover a whole domain).
fn owns(person: &ProtectedPerson, mb: &Mailbox) -> bool {
    let address = mb.address.trim().to_lowercase();
    person.addresses.iter().any(|a| {
        let a = a.trim().trim_end_matches('.').to_lowercase();
        match a.strip_prefix('@') {
            Some(domain) => {
                mb.domain == domain
                    || mb
                        .domain
                        .strip_suffix(domain)
                        .is_some_and(|s| s.ends_with('.'))
            }
            None => a == address,
        }
    })
}

/// A display name holding an email address of another organisation than the real one.
fn address_in_name(
    ctx: &Context<'_>,
    mailboxes: &[&Mailbox],
    display: &str,
    out: &mut Vec<Reason>,
) {
    for (shown, domain) in addresses_in(display)
        .into_iter()
        .take(MAX_ADDRESSES_IN_NAME)
    {
        let Some(mb) = mailboxes.iter().find(|mb| {
            !mb.domain.is_empty() && domain != mb.domain && !same_organisation(&domain, &mb.domain)
        }) else {
            continue;
        };
        let imp = ctx.policy.actions.impersonation;
        let protected = ctx.policy.is_protected(&domain);
        let watched = !protected && ctx.policy.watched(&domain).is_some();
        let action = match (protected || watched, imp) {
            (_, Action::Accept) => Action::Accept,
            (true, a) => a.max(Action::Quarantine),
            (false, a) => a.min(Action::Tag),
        };
        let whose = if protected {
            ", one of our protected domains,"
        } else if watched {
            ", a watched domain our people trust,"
        } else {
            ""
        };
        out.push(Reason::new(
            "impersonation.address_in_name",
            action,
            format!(
                "the sender's name shows the address {shown}{whose} but the mail comes from {}, another organisation",
                mb.address
            ),
        ));
        return;
    }
}

/// The characters whose compatibility decomposition (NFKD) holds `@`: `@`, the small ﹫ and the
/// fullwidth ＠ (the test `only_these_decompose_to_at` checks every code point).
const AT_SIGNS: [char; 3] = ['@', '\u{fe6b}', '\u{ff20}'];

/// The email addresses written in a display name: `(address, domain in lower case)`.
/// Confusable-free after NFKD (fullwidth ＠ and letters become ASCII); invisible characters
/// are dropped first so that `ceo@ou\u{200b}rs.com` reads as a reader sees it.
fn addresses_in(display: &str) -> Vec<(String, String)> {
    if !display.contains(AT_SIGNS) {
        return Vec::new(); // no `@` even after NFKD: spare the normalisation
    }
    let chars: Vec<char> = strip_marks(display)
        .chars()
        .filter(|c| !is_invisible(*c))
        .collect();
    let local_char = |c: char| c.is_alphanumeric() || "._%+-!#$&'*/=?^{|}~".contains(c);
    let domain_char = |c: char| c.is_alphanumeric() || c == '.' || c == '-';
    let mut out = Vec::new();
    for (at, &c) in chars.iter().enumerate() {
        if c != '@' {
            continue;
        }
        let mut start = at;
        while start > 0 && local_char(chars[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < chars.len() && domain_char(chars[end]) {
            end += 1;
        }
        let local: String = chars[start..at].iter().collect();
        let domain: String = chars[at + 1..end].iter().collect();
        let domain = domain.trim_matches(['.', '-']).to_lowercase();
        if local.is_empty() || !domain.contains('.') || domain.split('.').any(str::is_empty) {
            continue;
        }
        out.push((format!("{local}@{domain}"), domain));
    }
    out
}

/// Whether the mailbox is in a protected domain and the message is provably ours: from an
/// internal network, DMARC pass for that domain, or a passing DKIM signature of its
/// organisation.
fn authenticated_as_ours(ctx: &Context<'_>, mb: &Mailbox) -> bool {
    if !ctx.policy.is_protected(&mb.domain) {
        return false;
    }
    let auth = ctx.auth;
    if ctx.envelope.ip.is_some_and(|ip| ctx.policy.is_internal(ip)) {
        return true;
    }
    if let Some(signed) = super::signed_mail::proves_ours(ctx, &mb.domain) {
        // Our mail that is always signed: DMARC pass through SPF alone proves nothing.
        return signed;
    }
    (auth.dmarc.result == Word::Pass && same_organisation(&auth.dmarc.domain, &mb.domain))
        || auth
            .dkim
            .iter()
            .any(|d| d.result == Word::Pass && same_organisation(&d.domain, &mb.domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_addresses_in_names() {
        let got = addresses_in("\"CEO@Ours.COM\" (via list)");
        assert_eq!(got, vec![("CEO@ours.com".into(), "ours.com".into())]);
        let got = addresses_in("ceo\u{ff20}ours.com");
        assert_eq!(got[0].1, "ours.com");
        assert!(addresses_in("Joe @ home").is_empty());
        assert!(addresses_in("joe@localhost").is_empty());
        assert!(addresses_in("@ours.com").is_empty());
    }

    /// What `remove_addresses` must give: the plain way, each search from the start of the
    /// text as the earlier removals left it.
    fn remove_addresses_plainly(text: &str, from: &[Mailbox]) -> String {
        let mut text = text.to_string();
        for mb in from {
            if mb.address.is_empty() {
                continue;
            }
            let lower = text.to_ascii_lowercase();
            let addr = mb.address.to_ascii_lowercase();
            if let Some(i) = lower.find(&addr) {
                text.replace_range(i..i + addr.len(), " ");
            }
        }
        text
    }

    #[test]
    fn removes_addresses_as_the_plain_way_does() {
        // Small alphabets make many overlaps, repeats, spaces inside addresses and matches
        // across removed spans.
        const PIECES: &[&str] = &[
            "a", "B", "@", ".", " ", "b", "\u{e9}", "x@y.z", "A@b", "  ", "@@", "a b",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..20_000 {
            let text: String = (0..next(24)).map(|_| PIECES[next(PIECES.len())]).collect();
            let from: Vec<Mailbox> = (0..next(6))
                .map(|_| {
                    let address: String =
                        (0..next(5)).map(|_| PIECES[next(PIECES.len())]).collect();
                    Mailbox::new(None, &address)
                })
                .collect();
            assert_eq!(
                remove_addresses(&text, &from),
                remove_addresses_plainly(&text, &from),
                "{text:?} {:?}",
                from.iter().map(|m| &m.address).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn only_these_decompose_to_at() {
        use unicode_normalization::UnicodeNormalization;
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let has_at = c.encode_utf8(&mut buf).nfkd().any(|d| d == '@');
            assert_eq!(has_at, AT_SIGNS.contains(&c), "{c:?} (U+{:04X})", c as u32);
        }
    }

    #[test]
    fn domain_wide_addresses() {
        let p = ProtectedPerson {
            name: "PayPal".into(),
            addresses: vec!["@PayPal.com".into(), "joe@example.org".into()],
        };
        assert!(owns(&p, &Mailbox::new(None, "service@paypal.com")));
        assert!(owns(&p, &Mailbox::new(None, "x@mail.paypal.com")));
        assert!(owns(&p, &Mailbox::new(None, "Joe@Example.org")));
        assert!(!owns(&p, &Mailbox::new(None, "x@notpaypal.com")));
        assert!(!owns(&p, &Mailbox::new(None, "x@paypal.com.evil.net")));
    }
}
