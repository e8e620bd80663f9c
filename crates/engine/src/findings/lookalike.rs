//! Lookalike domains: a sender domain made to be read as one of ours.
//!
//! The domains compared with are the protected ones and the watched ones (`watched_domains`:
//! outside domains our people trust, such as their bank); a watched domain's own organisation
//! is never its lookalike, and nothing else about it is ours.
//!
//! The sender domains are those of From, Reply-To, MAIL FROM and every DKIM-Signature `d=`.
//! A domain that is protected, or of the same organisation (registrable domain, PSL) as a
//! protected one, is ours and never a lookalike. When the From domain is protected and DMARC
//! passed for it, MAIL FROM and DKIM `d=` are not examined either: an ESP's bounce domain that
//! carries our name (`ours.bounces.esp.example`) on mail provably ours is expected.
//!
//! Every other sender domain is compared with every protected domain through their
//! registrable parts: the *label* is the registrable domain less its public suffix
//! (`paypal` of `paypal.com`, `example` of `example.co.uk`), in Unicode form (IDNA ToUnicode).
//! The first rule that fires gives one reason per sender domain, in this order:
//!
//! | code | rule |
//! | --- | --- |
//! | `lookalike.confusable` | the labels differ but their UTS #39 skeletons (lower case) are equal: `pаypal` with a Cyrillic а, `paypa1`, `rnicrosoft` |
//! | `lookalike.edit_distance` | Damerau-Levenshtein distance of the labels (as written or as skeletons, whichever is smaller) is 1..=[`MAX_EDIT_DISTANCE`], or 1..=[`SHORT_LABEL_MAX_EDIT_DISTANCE`] when the protected label has at most [`SHORT_LABEL_LEN`] characters; labels shorter than [`MIN_EDIT_LABEL_LEN`] are not compared this way |
//! | `lookalike.cousin` | the whole protected domain inside a longer name, bounded by `.` or `-` (`paypal.com.evil.net`, `www-paypal.com-verify.info`); or the protected label as a whole `.`/`-` separated word of the name outside its public suffix (`paypal-secure.com`, `secure.paypal.evil.net`, `paypal.net`: at least [`COUSIN_WORD_MIN_LEN`] characters); or the protected label run into a longer word of the registrable label, at its start (`paypalsecure.com`, at least [`COUSIN_PREFIX_MIN_LEN`] characters) or its end (`mypaypal.com`, at least [`COUSIN_SUFFIX_MIN_LEN`]) |
//!
//! All three take the `actions.lookalike` action.
//!
//! A domain seen only in MAIL FROM or DKIM `d=`, which no reader sees, is held to the rules that
//! are never accidental: `confusable` and the whole protected domain inside a longer name. Edit
//! distance and protected words are for names a reader sees (From, Reply-To): the sending
//! infrastructure of large mailers sits within them of the brands (`amazonses.com` holds
//! `amazon`, every Microsoft 365 tenant signs as `tenant.onmicrosoft.com`, two edits from
//! `microsoft`), and mail through it is overwhelmingly legitimate.
//!
//! `lookalike.mixed_script` is reported besides, once per sender domain, when a label of the
//! domain (Unicode form) mixes scripts beyond UTS #39's "highly restrictive" level (Latin with
//! Cyrillic or Greek, ...). With one of the findings above it takes the lookalike action; on a
//! domain close to no protected domain it is a weaker signal and takes `tag` (or the lookalike
//! action if lower): registries refuse such labels, so they are nearly always made to deceive,
//! but the brand deceived is not ours to defend.
//!
//! The length limits keep short protected names from matching half the dictionary: with
//! `key.com` protected, edit distance would flag `kay.com` and `keys.com`, and a run-in match
//! would flag `monkey.com`; with `chase.com`, a suffix match would flag `purchase.com`.

use std::collections::HashMap;

use super::{
    Context,
    confusables::{fold, is_mixed_script},
};
use crate::{
    auth::Word,
    domain::{registrable, same_organisation},
    verdict::{Action, Reason},
};

/// Largest edit distance that still makes a lookalike of a protected label.
pub const MAX_EDIT_DISTANCE: usize = 2;
/// Largest edit distance for a short protected label (at most [`SHORT_LABEL_LEN`] characters).
pub const SHORT_LABEL_MAX_EDIT_DISTANCE: usize = 1;
/// Protected labels of at most this many characters are short.
pub const SHORT_LABEL_LEN: usize = 5;
/// Protected labels shorter than this are not compared by edit distance at all.
pub const MIN_EDIT_LABEL_LEN: usize = 4;
/// Shortest protected label that counts as a whole word of another name (`dhl-express.com`).
pub const COUSIN_WORD_MIN_LEN: usize = 3;
/// Shortest protected label that counts run into the start of a longer word (`paypalsecure`).
pub const COUSIN_PREFIX_MIN_LEN: usize = 5;
/// Shortest protected label that counts run into the end of a longer word (`mypaypal`).
pub const COUSIN_SUFFIX_MIN_LEN: usize = 6;

/// A domain split for comparison.
#[derive(Debug)]
struct Split {
    /// The registrable domain, Unicode form.
    registrable: String,
    /// The registrable label, Unicode form, lower case.
    label: String,
    /// [`fold`] of `label`: every rule compares it, so it is folded once.
    folded_label: String,
    /// The whole name without its public suffix, Unicode form (`secure.paypal-login`).
    head: String,
    /// The whole name, Unicode form.
    whole: String,
}

fn to_unicode(ascii: &str) -> String {
    crate::domain::to_unicode_lower(ascii)
}

fn split(domain: &str) -> Option<Split> {
    split_with(domain, registrable(domain)?)
}

/// [`split`] of `domain`, whose registrable domain `reg` the caller already has.
fn split_with(domain: &str, reg: String) -> Option<Split> {
    let suffix = psl::suffix_str(&reg)?;
    let label_ascii = reg.strip_suffix(suffix)?.strip_suffix('.')?;
    if label_ascii.is_empty() {
        return None;
    }
    let ascii = crate::domain::to_ascii(domain.trim_end_matches('.'))?;
    let head_ascii = ascii.strip_suffix(suffix)?.strip_suffix('.')?;
    let label = to_unicode(label_ascii);
    Some(Split {
        registrable: to_unicode(&reg),
        folded_label: fold(&label),
        label,
        head: to_unicode(head_ascii),
        whole: to_unicode(&ascii),
    })
}

/// One sender domain and the fields it was seen in.
struct Sender {
    domain: String,
    fields: Vec<&'static str>,
}

fn senders(ctx: &Context<'_>) -> Vec<Sender> {
    let from_ours = ctx.from_is_protected()
        && ctx.auth.dmarc.result == Word::Pass
        && ctx
            .from
            .iter()
            .any(|m| same_organisation(&m.domain, &ctx.auth.dmarc.domain));
    let mut list: Vec<(&'static str, String)> = Vec::new();
    list.extend(ctx.from.iter().map(|m| ("From", m.domain.clone())));
    list.extend(ctx.reply_to.iter().map(|m| ("Reply-To", m.domain.clone())));
    if !from_ours {
        if let Some(d) = ctx.mail_from_domain() {
            list.push(("MAIL FROM", d));
        }
        list.extend(
            ctx.auth
                .dkim
                .iter()
                .map(|d| ("DKIM d=", d.domain.trim_end_matches('.').to_lowercase())),
        );
    }
    // In first-seen order; the index finds a domain seen before without a scan of `out`, which
    // made a From of 50,000 mailboxes quadratic.
    let mut out: Vec<Sender> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (field, domain) in list {
        if domain.is_empty() {
            continue;
        }
        match index.get(&domain) {
            Some(&i) => {
                let s = &mut out[i];
                if !s.fields.contains(&field) {
                    s.fields.push(field);
                }
            }
            None => {
                index.insert(domain.clone(), out.len());
                out.push(Sender {
                    domain,
                    fields: vec![field],
                });
            }
        }
    }
    out
}

/// A protected domain that can be split for comparison, with its registrable domain for the
/// same-organisation test. Made once per policy ([`super::PolicyData`]).
#[derive(Debug)]
pub(crate) struct Protected {
    org: Option<String>,
    split: Split,
    /// A watched outside domain (`watched_domains`), not one of ours.
    watched: bool,
}

/// The protected domains that can be split, in policy order, then the watched ones.
pub(crate) fn protected(domains: &[String], watched: &[String]) -> Vec<Protected> {
    let mark = |w: bool| {
        move |p: &String| {
            Some(Protected {
                org: registrable(p),
                split: split(p)?,
                watched: w,
            })
        }
    };
    domains
        .iter()
        .filter_map(mark(false))
        .chain(watched.iter().filter_map(mark(true)))
        .collect()
}

/// What made a sender domain a lookalike of a protected one.
struct Hit {
    code: &'static str,
    protected: String,
    why: String,
    watched: bool,
}

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let policy_data = super::PolicyData::of(ctx.policy);
    let protected = &policy_data.lookalike;
    if protected.is_empty() {
        return;
    }
    for sender in senders(ctx) {
        let d = &sender.domain;
        if ctx.policy.is_protected(d) {
            continue;
        }
        // `same_organisation(d, p)` for every protected p, with d's registrable domain looked
        // up once, for that and for the split.
        let Some(org) = registrable(d) else { continue };
        if protected
            .iter()
            .any(|p| p.org.as_deref() == Some(org.as_str()))
        {
            continue;
        }
        let Some(s) = split_with(d, org) else {
            continue;
        };
        let visible = sender
            .fields
            .iter()
            .any(|f| matches!(*f, "From" | "Reply-To"));
        let hit = protected.iter().find_map(|p| {
            compare(&s, &p.split, visible).map(|h| Hit {
                watched: p.watched,
                ..h
            })
        });
        let evidence: Vec<String> = sender.fields.iter().map(|f| format!("{f}: {d}")).collect();
        let seen_in = sender.fields.join(", ");
        if let Some(hit) = &hit {
            let whose = if hit.watched {
                "a watched domain our people trust"
            } else {
                "one of our protected domains"
            };
            let mut r = Reason::new(
                hit.code,
                ctx.policy.actions.lookalike,
                format!(
                    "the sender domain {} ({seen_in}) looks like {}, {whose}: {}",
                    s.whole, hit.protected, hit.why
                ),
            );
            for e in &evidence {
                r = r.with_evidence(e.clone());
            }
            out.push(r);
        }
        if let Some(label) = s.whole.split('.').find(|l| is_mixed_script(l)) {
            let (action, tail) = match &hit {
                Some(h) => (
                    ctx.policy.actions.lookalike,
                    format!(", and it looks like {}", h.protected),
                ),
                None => (ctx.policy.actions.lookalike.min(Action::Tag), String::new()),
            };
            let mut r = Reason::new(
                "lookalike.mixed_script",
                action,
                format!(
                    "the sender domain {} ({seen_in}) mixes writing systems in \"{label}\", a trick to imitate another name{tail}",
                    s.whole
                ),
            );
            for e in evidence {
                r = r.with_evidence(e);
            }
            out.push(r);
        }
    }
}

/// The first rule that makes `s` a lookalike of the protected `p`.
fn compare(s: &Split, p: &Split, visible: bool) -> Option<Hit> {
    let hit = |code, why: String| {
        Some(Hit {
            code,
            protected: p.registrable.clone(),
            why,
            watched: false,
        })
    };
    let (sf, pf) = (&s.folded_label, &p.folded_label);
    // UTS #39 section 4: confusable when the skeletons agree.
    if s.label != p.label && sf == pf {
        return hit(
            "lookalike.confusable",
            format!(
                "\"{}\" and \"{}\" are made of characters that look the same",
                s.label, p.label
            ),
        );
    }
    let plen = p.label.chars().count();
    if visible && plen >= MIN_EDIT_LABEL_LEN {
        let limit = if plen <= SHORT_LABEL_LEN {
            SHORT_LABEL_MAX_EDIT_DISTANCE
        } else {
            MAX_EDIT_DISTANCE
        };
        let distance = strsim::damerau_levenshtein(&s.label, &p.label)
            .min(strsim::damerau_levenshtein(sf, pf));
        if (1..=limit).contains(&distance) {
            return hit(
                "lookalike.edit_distance",
                format!(
                    "\"{}\" is {distance} typing {} away from \"{}\"",
                    s.label,
                    if distance == 1 { "change" } else { "changes" },
                    p.label
                ),
            );
        }
    }
    // The whole protected domain inside a longer name.
    if let Some(at) = find_bounded(&s.whole, &p.registrable) {
        return hit(
            "lookalike.cousin",
            format!(
                "the name holds \"{}\" at position {at}, followed by more",
                p.registrable
            ),
        );
    }
    if !visible {
        return None;
    }
    // The protected label as a word of the name, or run into a word of the registrable label.
    if plen >= COUSIN_WORD_MIN_LEN
        && s.head
            .split(['.', '-', '_'])
            .any(|w| !w.is_empty() && fold(w) == *pf)
    {
        return hit(
            "lookalike.cousin",
            format!("\"{}\" appears as a word of the name", p.label),
        );
    }
    for word in s.label.split(['-', '_']) {
        let w = fold(word);
        if w == *pf {
            continue;
        }
        if (plen >= COUSIN_PREFIX_MIN_LEN && w.starts_with(pf.as_str()))
            || (plen >= COUSIN_SUFFIX_MIN_LEN && w.ends_with(pf.as_str()))
        {
            return hit(
                "lookalike.cousin",
                format!("\"{}\" is run into the word \"{word}\"", p.label),
            );
        }
    }
    None
}

/// The `lookalike.*` code (`confusable`, `edit_distance`, `cousin`) a sender domain seen in
/// From gets against one protected domain, by the rules above; `None` when it is no lookalike
/// of it, is of the same organisation, or either name cannot be split.
pub fn lookalike_code(sender: &str, protected: &str) -> Option<&'static str> {
    if same_organisation(sender, protected) {
        return None;
    }
    compare(&split(sender)?, &split(protected)?, true).map(|h| h.code)
}

/// Where `needle` (a domain) occurs in `name` preceded by the start, `.` or `-` and followed by
/// `.` or `-` (so not at the end, where it would be the domain itself or a subdomain).
fn find_bounded(name: &str, needle: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = name[from..].find(needle).map(|i| i + from) {
        let before = name[..i].chars().next_back();
        let after = name[i + needle.len()..].chars().next();
        if matches!(before, None | Some('.' | '-')) && matches!(after, Some('.' | '-')) {
            return Some(i);
        }
        from = i + needle.len().max(1);
        if from >= name.len() {
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(sender: &str, protected: &str) -> Option<&'static str> {
        compare(&split(sender)?, &split(protected)?, true).map(|h| h.code)
    }

    fn hidden(sender: &str, protected: &str) -> Option<&'static str> {
        compare(&split(sender)?, &split(protected)?, false).map(|h| h.code)
    }

    #[test]
    fn hidden_fields_take_only_the_strong_rules() {
        assert_eq!(hidden("amazonses.com", "amazon.com"), None);
        assert_eq!(hidden("tenant.onmicrosoft.com", "microsoft.com"), None);
        assert_eq!(hidden("paypal-bounces.com", "paypal.com"), None);
        assert_eq!(
            hidden("p\u{430}ypal.com", "paypal.com"),
            Some("lookalike.confusable")
        );
        assert_eq!(
            hidden("paypal.com.evil.net", "paypal.com"),
            Some("lookalike.cousin")
        );
    }

    #[test]
    fn rules() {
        let c = Some("lookalike.confusable");
        let e = Some("lookalike.edit_distance");
        let k = Some("lookalike.cousin");
        assert_eq!(code("p\u{430}ypal.com", "paypal.com"), c);
        assert_eq!(code("xn--pypal-4ve.com", "paypal.com"), c);
        assert_eq!(code("paypa1.com", "paypal.com"), c);
        assert_eq!(code("rnicrosoft.com", "microsoft.com"), c);
        assert_eq!(code("paypai.com", "paypal.com"), e);
        assert_eq!(code("pyapal.net", "paypal.com"), e);
        assert_eq!(code("paypall.com", "paypal.com"), e);
        assert_eq!(code("bans.com", "bank.com"), e);
        assert_eq!(code("bnaks.com", "bank.com"), None);
        assert_eq!(code("kay.com", "key.com"), None);
        assert_eq!(code("paypal-secure.com", "paypal.com"), k);
        assert_eq!(code("secure-paypal.com", "paypal.com"), k);
        assert_eq!(code("paypalsecure.com", "paypal.com"), k);
        assert_eq!(code("mypaypal.com", "paypal.com"), e);
        assert_eq!(code("securemypaypal.com", "paypal.com"), k);
        assert_eq!(code("paypal.com.evil.net", "paypal.com"), k);
        assert_eq!(code("www-paypal.com-verify.info", "paypal.com"), k);
        assert_eq!(code("paypal.evil.net", "paypal.com"), k);
        assert_eq!(code("paypal.net", "paypal.com"), k);
        assert_eq!(code("ours.co.uk", "ours.com"), k);
        assert_eq!(code("purchase.com", "chase.com"), None);
        assert_eq!(code("monkey.com", "key.com"), None);
        assert_eq!(code("pineapple.com", "apple.com"), None);
        assert_eq!(code("gmail.com", "paypal.com"), None);
        assert_eq!(code("dhl-express.com", "dhl.de"), k);
    }

    #[test]
    fn odd_names_do_not_panic() {
        for d in [
            "",
            ".",
            "..",
            "com",
            "a..b",
            ".paypal.com",
            "paypal.com.",
            "-.com",
            "xn--.com",
            "xn--zzzzzzz.com",
            "\u{0}.com",
            "é",
            "@.@",
            "paypal.com.paypal.com.x",
            "ıı.com",
            "ß.de",
            "\u{200b}paypal.com",
            "a-.b-.c",
        ] {
            for p in ["paypal.com", "ours.co.uk", "xn--mnchen-3ya.de"] {
                if let (Some(s), Some(p)) = (split(d), split(p)) {
                    let _ = compare(&s, &p, true);
                }
            }
            let _ = find_bounded(d, "paypal.com");
        }
    }

    #[test]
    fn bounded() {
        assert_eq!(find_bounded("paypal.com.x.net", "paypal.com"), Some(0));
        assert_eq!(find_bounded("a.paypal.com", "paypal.com"), None);
        assert_eq!(find_bounded("xpaypal.com.net", "paypal.com"), None);
    }
}
