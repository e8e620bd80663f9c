//! The header section as a whole: a section that parsers read differently, and a message with
//! no author. Both fail closed: neither is ever a clean accept.
//!
//! | code | what |
//! | --- | --- |
//! | `header.malformed_section` | lines in the header section that are neither a field nor a continuation (a first line that is a lone space, a tab, a word without a colon, an encoded word), or no field at all. mail-auth refuses such a section or stops reading it at the stray line; authentication then ran over the section without those lines, and nothing that verified only there counts (`auth.rs`, `MalformedSection`). Action `actions.malformed_header`; reject when From, Sender, Resent-From, MAIL FROM or a stray line shows a protected domain. |
//! | `header.from_missing` | no From field (RFC 5322 3.6 requires exactly one): DMARC has no author domain to judge, and readers are shown Sender, Resent-From or nothing. Action `actions.missing_from`; a protected domain in Sender or Resent-From is also judged as a From by the own-domain check ([`stand_in_authors`]). |

use super::Context;
use crate::{
    address::{self, Style},
    verdict::{Action, Reason},
};

/// Stray lines quoted in the evidence.
const MAX_LINES_SHOWN: usize = 4;

/// Bytes of one stray line quoted in the evidence.
const MAX_LINE_SHOWN: usize = 200;

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    malformed_section(ctx, out);
    from_missing(ctx, out);
}

fn malformed_section(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let headers = ctx.headers;
    if !headers.is_malformed() {
        return;
    }
    let lines: Vec<&[u8]> = headers
        .stray_lines
        .iter()
        .map(|&at| line_at(ctx.raw, at))
        .collect();
    let mut protected = lines.iter().find_map(|line| {
        address::addresses_in_text(line)
            .into_iter()
            .map(|(_, domain)| domain)
            .find(|d| ctx.policy.is_protected(d))
    });
    if protected.is_none() {
        protected = ctx
            .from
            .iter()
            .map(|m| m.domain.clone())
            .chain(stand_in_authors(ctx).into_iter().map(|(_, d)| d))
            .chain(ctx.mail_from_domain())
            .find(|d| ctx.policy.is_protected(d));
    }
    let what = match lines.first() {
        Some(first) if headers.stray_lines[0] == first_line_offset(ctx.raw) => format!(
            "the header section starts with a line that is not a header field ({})",
            describe(first)
        ),
        Some(first) => format!(
            "the header section holds {} line(s) that are neither a header field nor a continuation, the first: {}",
            lines.len(),
            describe(first)
        ),
        None => "the message has no header field at all".to_string(),
    };
    let why = "mail software reads such a section in different ways (some stop there, some skip the line, some refuse the message), so authentication ran on the section without it and no signature that verifies only that way counts";
    let (action, tail) = match &protected {
        Some(d) => (
            Action::Reject,
            format!("; it involves {d}, one of our protected domains, so it is rejected"),
        ),
        None => (ctx.policy.actions.malformed_header, String::new()),
    };
    let mut r = Reason::new(
        "header.malformed_section",
        action,
        format!("{what}: {why}{tail}"),
    );
    for l in lines.iter().take(MAX_LINES_SHOWN) {
        let l = String::from_utf8_lossy(&l[..l.len().min(MAX_LINE_SHOWN)]);
        r = r.with_evidence(format!("{l:?}"));
    }
    out.push(r);
}

fn from_missing(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    if ctx.headers.first("From").is_some() {
        return;
    }
    let stand_ins = stand_in_authors(ctx);
    let shown = match stand_ins.first() {
        Some((field, domain)) => {
            format!("; readers are shown the {field} field instead ({domain})")
        }
        None => String::new(),
    };
    out.push(Reason::new(
        "header.from_missing",
        ctx.policy.actions.missing_from,
        format!(
            "the message has no From field (RFC 5322 3.6 requires one), so DMARC cannot judge who wrote it{shown}"
        ),
    ));
}

/// When the message has no From field: the domains its Sender and Resent-From fields show, as
/// (field name, domain), for the checks that judge an author. Empty when there is a From field.
pub(super) fn stand_in_authors(ctx: &Context<'_>) -> Vec<(&'static str, String)> {
    if ctx.headers.first("From").is_some() {
        return Vec::new();
    }
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for name in ["Sender", "Resent-From"] {
        for h in ctx.headers.all(name).take(address::MAX_READINGS) {
            let (_, readings) = address::read_address_list(h.value);
            for r in readings.iter().filter(|r| r.style != Style::Mentioned) {
                if !r.domain.is_empty() && !out.iter().any(|(_, d)| *d == r.domain) {
                    out.push((name, r.domain.clone()));
                }
            }
        }
    }
    out
}

/// The line that starts at `at`, without its line ending.
fn line_at(raw: &[u8], at: usize) -> &[u8] {
    let rest = &raw[at.min(raw.len())..];
    let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
    let line = &rest[..end];
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where the header section starts (after an mbox `From ` line).
fn first_line_offset(raw: &[u8]) -> usize {
    if crate::message::is_mbox(raw) {
        memchr::memchr(b'\n', raw).map_or(raw.len(), |n| n + 1)
    } else {
        0
    }
}

/// What kind of line it is, in words.
fn describe(line: &[u8]) -> &'static str {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        "a line of only spaces or tabs"
    } else if matches!(line.first(), Some(b' ' | b'\t')) {
        "a continuation line with no field before it"
    } else if trimmed.starts_with(b"=?") {
        "an encoded word"
    } else {
        "text without a colon"
    }
}
