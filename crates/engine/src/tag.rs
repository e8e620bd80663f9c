//! What users see: the headers, subject prefix and banner that mark a message the engine
//! did not trust enough to deliver untouched (seed 3.2.5, "educate your users").
//!
//! - [`annotate`] prepends our `Authentication-Results` and an `X-Unspoof-Verdict` field to
//!   any message, whatever the action (an accepted message gets only these two).
//! - [`tag_message`] does the same and, for a `tag` verdict, prefixes the Subject with
//!   [`TagSettings::subject_prefix`] and (with [`TagSettings::banner`]) prepends a short
//!   plain-words warning, [`banner_text`], to every text/plain and text/html part a person
//!   is shown. [`rewrite`] is the same without the two prepended fields, for a front door
//!   that writes them itself.
//! - [`verdict_header`] is the `X-Unspoof-Verdict: <action>; reasons=<code>,<code>` field.
//!
//! Input may use CRLF or bare LF line endings; output always uses CRLF.
//!
//! **Which parts get the banner.** The top-level body when the message is a single
//! text/plain or text/html part; in `multipart/alternative` every text/plain and text/html
//! alternative (and the root of a `multipart/related` alternative); in `multipart/mixed`
//! (and `multipart/related`, `report`, or an unknown multipart) the first part that
//! displays text, in order, skipping attachments. Never a part with
//! `Content-Disposition: attachment`, never inside `message/rfc822` (a forwarded message is
//! its own message), never inside `multipart/encrypted`, and never inside a signature:
//! `multipart/signed` (PGP/MIME, S/MIME), `application/pkcs7-mime` (not text) or a text part
//! holding an inline OpenPGP cleartext signature. Signed mail gets header-only tags (the
//! subject prefix is outside what those signatures cover), so a signature that verified before
//! still verifies after delivery.
//!
//! **How a part is changed.** Its transfer encoding is undone (7bit, 8bit, binary,
//! quoted-printable, base64), the banner is inserted (text: banner lines and a blank line at
//! the start, after a byte order mark; HTML: a `<div>` with an inline style right after the
//! `<body ...>` tag, else after `</head>` or `<html ...>`, else at the start) and the part is
//! encoded again with the same transfer encoding, lines at most 76 characters for
//! quoted-printable and base64. The decoded bytes around the insertion stay as they were: the
//! charset is respected by writing the banner in it (HTML: ASCII with character references,
//! which fits any ASCII-compatible charset; text: UTF-8, US-ASCII, ISO-8859-1 and windows-1252
//! directly, any other charset when the banner is ASCII). When the banner cannot be written in
//! the part's charset (UTF-16, UTF-7, HZ, or non-ASCII reason text in a charset we cannot encode
//! into) the part is decoded with mail-parser's charset decoders and written in UTF-8 with
//! `charset=utf-8`. 8-bit text without a charset is taken as UTF-8 when it is valid UTF-8 (and
//! then labelled so); otherwise, as for a charset no decoder knows, the banner goes in as ASCII
//! with `?` for what ASCII cannot say. A 7bit part that now holds 8-bit text becomes
//! quoted-printable. Everything else in the message (other parts, boundaries, preamble,
//! epilogue, header fields) stays byte for byte.
//!
//! **Never lose the message.** The MIME structure is read strictly where parsers could
//! disagree: a line that starts with a delimiter and goes on with other text (a boundary that
//! is a prefix of another), a delimiter after the close delimiter, a boundary given twice, in
//! RFC 2231 form, in an unterminated quoted string or next to text that is not a parameter,
//! header lines that are neither a field nor a continuation, duplicated Content-Type,
//! Content-Transfer-Encoding or Content-Disposition fields, nesting deeper than
//! [`MAX_DEPTH`]: then no banner is written anywhere, and the message gets only the header
//! fields and the subject prefix. It is lenient where mail readers agree: a missing close
//! delimiter ends the last part with its parent, a Content-Transfer-Encoding on a multipart is
//! ignored, stray text among parameters is skipped. A single part whose content cannot be
//! decoded (bad base64, unknown transfer encoding) keeps its bytes and goes without a banner.
//!
//! **DKIM.** Changing the subject or a body part breaks the DKIM signatures over them. That is
//! expected for a message we tag: the verdict was taken on the original and is recorded in our
//! Authentication-Results. S/MIME and OpenPGP signatures are never broken (above).
//!
//! **Stale verdicts.** `X-Unspoof-Verdict` fields already in the message (a forgery, or a
//! verdict of an earlier pass) are removed, so the only one a filter or a person sees is ours.
//! Foreign `Authentication-Results` fields are the front door's business: each removes those
//! that claim our authserv-id with [`crate::message::auth_results`]. Tagging twice gives one
//! subject prefix and one verdict field but two banners: the banner is never skipped because
//! the text seems to hold one already, since a sender could write that text to suppress ours.
//!
//! **Limits.** A `<meta charset>` inside HTML that is converted to UTF-8 is left as it is
//! (mail readers go by the MIME charset); in `multipart/related` the first part is taken as
//! the root (the `start` parameter is not followed); an mbox `From ` line stays first.

use std::{borrow::Cow, cmp::Reverse};

use crate::{
    Analysis,
    message::{
        Headers,
        codec::{base64_decode, base64_encode, decode_words, qp_decode, qp_encode},
        is_mbox, to_crlf,
    },
    policy::TagSettings,
    verdict::{Action, Reason},
};

/// The name of our verdict header field.
pub use crate::message::auth_results::VERDICT_HEADER;

/// At most this many reasons are spelled out in the banner.
pub const MAX_BANNER_REASONS: usize = 3;

/// MIME nesting deeper than this is not walked (no banner).
pub const MAX_DEPTH: usize = 20;

/// Reason messages longer than this (in characters) are cut in the banner.
const MAX_REASON_CHARS: usize = 200;

/// Banner lines are wrapped at this many columns.
const WRAP: usize = 76;

const BANNER_LEAD: &str =
    "Caution: unspoof could not confirm this message is from who it claims to be";
const BANNER_ADVICE: &str = "Check with the sender another way before you click, open or reply.";
const HTML_STYLE: &str = "margin:0 0 16px 0;padding:10px 12px;border:2px solid #b00020;\
background-color:#fff4f4;color:#1a1a1a;font-family:Arial,Helvetica,sans-serif;\
font-size:14px;line-height:1.4;text-align:left;";

// ---------------------------------------------------------------------------------------------
// Public API

/// The `X-Unspoof-Verdict` header field (name, value, CRLF): the action and the reason codes,
/// e.g. `X-Unspoof-Verdict: tag; reasons=reply_to.diversion,spf.fail`. Codes are reduced to
/// `[a-z0-9._]` and listed once each; `reasons=` is left out when there are none. Long fields
/// are folded after a comma, so a reader must allow whitespace after the commas.
pub fn verdict_header(analysis: &Analysis) -> String {
    let mut codes: Vec<String> = Vec::new();
    for r in &analysis.verdict.reasons {
        let code = safe_code(&r.code);
        if !code.is_empty() && !codes.contains(&code) {
            codes.push(code);
        }
    }
    let mut out = format!("{VERDICT_HEADER}: {}", analysis.verdict.action.as_str());
    if !codes.is_empty() {
        out.push(';');
        let mut tokens = Vec::with_capacity(codes.len());
        let last = codes.len() - 1;
        for (i, c) in codes.iter().enumerate() {
            let sep = if i < last { "," } else { "" };
            if i == 0 {
                tokens.push(format!("reasons={c}{sep}"));
            } else {
                tokens.push(format!("{c}{sep}"));
            }
        }
        // "; reasons=" always follows a space; later codes follow their comma directly unless
        // the line is full, where a fold (CRLF + tab) goes in.
        let mut line = out.len();
        for (i, t) in tokens.iter().enumerate() {
            let space = usize::from(i == 0);
            if line + space + t.len() > 78 && line > 1 {
                out.push_str("\r\n\t");
                line = 1;
            } else if i == 0 {
                out.push(' ');
                line += 1;
            }
            out.push_str(t);
            line += t.len();
        }
    }
    out.push_str("\r\n");
    out
}

/// The banner's plain words, on one line: the lead sentence, at most
/// [`MAX_BANNER_REASONS`] reason messages (most severe first; reasons that alone would
/// accept are named only when there is nothing else), and a line of advice. Text taken from
/// the message (domain names, display names) is cleaned of control and invisible formatting
/// characters (a right-to-left override would turn the warning around) and cut when long.
pub fn banner_text(analysis: &Analysis) -> String {
    banner_from_reasons(&analysis.verdict.reasons)
}

/// Prepends our `Authentication-Results` and [`verdict_header`] to the message, whatever the
/// action, after removing any `X-Unspoof-Verdict` already in it. Nothing else changes.
pub fn annotate(raw: &[u8], analysis: &Analysis, authserv_id: &str) -> Vec<u8> {
    let raw = to_crlf(raw);
    let edits = stale_verdict_edits(&raw, &Headers::parse(&raw));
    prepend(&raw, analysis, authserv_id, "", &edits)
}

/// The message as delivered for a verdict: our `Authentication-Results` and
/// [`verdict_header`] on top and, when the action is `tag`, the subject prefix and the banner
/// (see the module documentation). For any other action this is [`annotate`].
pub fn tag_message(
    raw: &[u8],
    analysis: &Analysis,
    settings: &TagSettings,
    authserv_id: &str,
) -> Vec<u8> {
    let raw = to_crlf(raw);
    let (edits, added) = tag_edits(&raw, analysis, settings);
    prepend(&raw, analysis, authserv_id, &added, &edits)
}

/// [`tag_message`] without the prepended `Authentication-Results` and `X-Unspoof-Verdict`
/// fields (stale `X-Unspoof-Verdict` fields are still removed; a missing Subject is still
/// added). For a front door that writes its own trace fields on top.
pub fn rewrite(raw: &[u8], analysis: &Analysis, settings: &TagSettings) -> Vec<u8> {
    let raw = to_crlf(raw);
    let (edits, added) = tag_edits(&raw, analysis, settings);
    let start = mbox_line_end(&raw);
    let mut out = Vec::with_capacity(raw.len() + added.len() + 1024);
    out.extend_from_slice(&raw[..start]);
    out.extend_from_slice(added.as_bytes());
    apply_edits(&raw, start, &edits, &mut out);
    out
}

/// A tag's rewrite said field by field, for [`crate::decision`]: the Subject prefix and the
/// MIME fields a banner changes as changes of whole fields, the MIME fields a banner adds at
/// the end of the section, a Subject to insert when there is none, and the new body when a
/// banner went in. Stale `X-Unspoof-Verdict` fields are left to the decision's removals.
/// `raw` has CRLF line ends and `headers` is its section.
pub(crate) struct FieldChanges {
    /// The decision's edits in order: `Change` (name, index from 1, new value) or `Append`
    /// (name, value); the decision, above this module, turns them into its `HeaderEdit`s.
    pub edits: Vec<FieldChange>,
    pub subject_added: Option<String>,
    pub body: Option<Vec<u8>>,
}

/// One field's change in [`FieldChanges`]; a value is what follows the colon.
pub(crate) enum FieldChange {
    Change {
        name: String,
        index: u32,
        value: String,
    },
    Append {
        name: String,
        value: String,
    },
}

pub(crate) fn field_changes(
    raw: &[u8],
    headers: &Headers<'_>,
    analysis: &Analysis,
    settings: &TagSettings,
) -> FieldChanges {
    let (edits, added) = tag_edits(raw, analysis, settings);
    let body_at = headers.body_offset.min(raw.len());
    let section_end = headers.fields.last().map_or(0, |f| f.end(raw));
    let mut per_field: Vec<Vec<Edit>> = vec![Vec::new(); headers.fields.len()];
    let mut appended: Vec<u8> = Vec::new();
    let mut body_edits = Vec::new();
    for e in edits {
        if e.start >= body_at && !(e.start == e.end && e.start == section_end) {
            body_edits.push(e);
        } else if e.start == e.end && e.start == section_end {
            appended.extend_from_slice(&e.with);
        } else if let Some(i) = headers
            .fields
            .iter()
            .position(|f| f.offset <= e.start && e.end <= f.end(raw))
        {
            per_field[i].push(e);
        } else {
            debug_assert!(false, "edit {}..{} in no field", e.start, e.end);
        }
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    for (i, field_edits) in per_field.iter().enumerate() {
        if field_edits.is_empty() {
            continue;
        }
        let f = &headers.fields[i];
        let end = f.end(raw);
        let shifted: Vec<Edit> = field_edits
            .iter()
            .map(|e| Edit {
                start: e.start - f.offset,
                end: e.end - f.offset,
                with: e.with.clone(),
            })
            .collect();
        let mut new = Vec::new();
        apply_edits(&raw[f.offset..end], 0, &shifted, &mut new);
        if new.is_empty() {
            continue; // a stale verdict field: the decision removes those
        }
        let new = new.strip_suffix(b"\r\n").unwrap_or(&new);
        let Some(colon) = memchr::memchr(b':', new) else {
            continue;
        };
        let index = headers.fields[..i]
            .iter()
            .filter(|g| g.name_trimmed().eq_ignore_ascii_case(f.name_trimmed()))
            .count() as u32
            + 1;
        out.push(FieldChange::Change {
            name: text(f.name_trimmed()),
            index,
            value: text(&new[colon + 1..]),
        });
    }
    for line in appended.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(colon) = memchr::memchr(b':', line) {
            out.push(FieldChange::Append {
                name: text(&line[..colon]),
                value: text(&line[colon + 1..]),
            });
        }
    }
    let body = (!body_edits.is_empty()).then(|| {
        let mut b = Vec::with_capacity(raw.len() - body_at + 1024);
        apply_edits(raw, body_at, &body_edits, &mut b);
        b
    });
    let subject_added = added
        .strip_prefix("Subject:")
        .map(|v| v.trim_end_matches("\r\n").to_string());
    FieldChanges {
        edits: out,
        subject_added,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Assembly

/// One replacement in the (CRLF) message: `raw[start..end]` becomes `with`.
#[derive(Debug, Clone)]
struct Edit {
    start: usize,
    end: usize,
    with: Vec<u8>,
}

/// The edits for a message: stale verdicts out and, for `tag`, the subject and the banners.
/// Also returns header fields to add on top (a Subject when there is none).
fn tag_edits(raw: &[u8], analysis: &Analysis, settings: &TagSettings) -> (Vec<Edit>, String) {
    let headers = Headers::parse(raw);
    let mut edits = stale_verdict_edits(raw, &headers);
    let mut added = String::new();
    if analysis.verdict.action != Action::Tag {
        return (edits, added);
    }
    let prefix = clean_prefix(&settings.subject_prefix);
    if !prefix.is_empty() {
        let mut any = false;
        for h in headers.all("Subject") {
            any = true;
            if let Some(e) = subject_edit(raw, h.value, &prefix) {
                edits.push(e);
            }
        }
        if !any {
            added = format!("Subject: {}\r\n", encode_prefix(&prefix, false));
        }
    }
    if settings.banner {
        let banner = Banner::new(&banner_text(analysis));
        if let Ok(targets) = find_targets(raw) {
            for t in &targets {
                if let Some(mut e) = banner_edits(raw, t, &banner) {
                    edits.append(&mut e);
                }
            }
        }
    }
    (edits, added)
}

fn prepend(
    raw: &[u8],
    analysis: &Analysis,
    authserv_id: &str,
    added: &str,
    edits: &[Edit],
) -> Vec<u8> {
    let ar = analysis.authentication_results(authserv_id);
    let verdict = verdict_header(analysis);
    let start = mbox_line_end(raw);
    let mut out = Vec::with_capacity(raw.len() + ar.len() + verdict.len() + added.len() + 1024);
    out.extend_from_slice(&raw[..start]);
    out.extend_from_slice(ar.as_bytes());
    if !ar.ends_with('\n') {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(verdict.as_bytes());
    out.extend_from_slice(added.as_bytes());
    apply_edits(raw, start, edits, &mut out);
    out
}

/// Copies `raw[from..]` into `out` with the edits applied. Edits that would overlap an earlier
/// one are dropped (they cannot occur; this keeps a bug from corrupting the message).
fn apply_edits(raw: &[u8], from: usize, edits: &[Edit], out: &mut Vec<u8>) {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.start, e.end));
    let mut pos = from;
    for e in sorted {
        if e.start < pos || e.end < e.start || e.end > raw.len() {
            debug_assert!(false, "overlapping edit {}..{} at {pos}", e.start, e.end);
            continue;
        }
        out.extend_from_slice(&raw[pos..e.start]);
        out.extend_from_slice(&e.with);
        pos = e.end;
    }
    out.extend_from_slice(&raw[pos..]);
}

/// The end of an mbox `From ` separator line, or 0.
fn mbox_line_end(raw: &[u8]) -> usize {
    if is_mbox(raw) {
        memchr::memchr(b'\n', raw)
            .map(|i| i + 1)
            .unwrap_or(raw.len())
    } else {
        0
    }
}

/// Removes every `X-Unspoof-Verdict` field of the top-level header.
fn stale_verdict_edits(raw: &[u8], headers: &Headers<'_>) -> Vec<Edit> {
    headers
        .all(VERDICT_HEADER)
        .map(|h| Edit {
            start: h.offset,
            end: h.end(raw),
            with: Vec::new(),
        })
        .collect()
}

/// The offset of `part` (a sub-slice of `raw`) in `raw`.
fn offset_in(raw: &[u8], part: &[u8]) -> usize {
    let off = (part.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
    debug_assert!(off <= raw.len());
    off.min(raw.len())
}

fn safe_code(code: &str) -> String {
    code.chars()
        .take(64)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Subject

/// The configured prefix without control characters or surrounding whitespace.
fn clean_prefix(prefix: &str) -> String {
    let p: String = prefix
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    p.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The prefix as it goes into the field: as is when it is plain ASCII, else RFC 2047
/// encoded-words (UTF-8, Q). `before_word` says an encoded-word follows, so the separating
/// space must go inside the encoded-word to be displayed.
fn encode_prefix(prefix: &str, before_word: bool) -> String {
    let plain = prefix.bytes().all(|b| (0x20..0x7f).contains(&b)) && !prefix.contains("=?");
    if plain {
        return prefix.to_string();
    }
    let text = if before_word {
        format!("{prefix} ")
    } else {
        prefix.to_string()
    };
    // Encoded-words of at most 75 characters: "=?UTF-8?Q?" + 63 + "?=".
    let mut words = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        let mut enc = String::new();
        let mut buf = [0u8; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            match b {
                b' ' => enc.push('_'),
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                    enc.push(b as char)
                }
                _ => enc.push_str(&format!("={b:02X}")),
            }
        }
        if cur.len() + enc.len() > 63 {
            words.push(std::mem::take(&mut cur));
        }
        cur.push_str(&enc);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
        .iter()
        .map(|w| format!("=?UTF-8?Q?{w}?="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The edit that prefixes one Subject field, or `None` when it already starts with the prefix.
fn subject_edit(raw: &[u8], value: &[u8], prefix: &str) -> Option<Edit> {
    if starts_with_prefix(&decode_subject(value), prefix) {
        return None;
    }
    let start = offset_in(raw, value);
    let lead = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(value.len());
    let rest = &value[lead..];
    let mut with = b" ".to_vec();
    if rest.is_empty() {
        with.extend_from_slice(encode_prefix(prefix, false).as_bytes());
        return Some(Edit {
            start,
            end: start + value.len(),
            with,
        });
    }
    let before_word = rest.starts_with(b"=?");
    let p = encode_prefix(prefix, before_word);
    with.extend_from_slice(p.as_bytes());
    // Keep the first line within 78 characters when it was: fold after the prefix instead
    // of a space (unfolding gives the space back).
    let first_line = memchr::memchr(b'\r', rest).unwrap_or(rest.len());
    if "Subject: ".len() + p.len() + 1 + first_line > 78 {
        with.extend_from_slice(b"\r\n ");
    } else {
        with.push(b' ');
    }
    Some(Edit {
        start,
        end: start + lead,
        with,
    })
}

fn starts_with_prefix(subject: &str, prefix: &str) -> bool {
    let s = subject.trim_start();
    match s.get(..prefix.len()) {
        Some(head) => head.eq_ignore_ascii_case(prefix) || head == prefix,
        None => false,
    }
}

/// The Subject as a person reads it: unfolded, encoded-words decoded.
fn decode_subject(value: &[u8]) -> String {
    decode_words(&crate::message::unfold(value))
}

// ---------------------------------------------------------------------------------------------
// Banner text

fn banner_from_reasons(reasons: &[Reason]) -> String {
    let mut chosen: Vec<&Reason> = reasons
        .iter()
        .filter(|r| r.action > Action::Accept)
        .collect();
    if chosen.is_empty() {
        chosen = reasons.iter().collect();
    }
    chosen.sort_by_key(|r| Reverse(r.action));
    let mut messages: Vec<String> = Vec::new();
    for r in chosen {
        let m = clean_message(&r.message);
        if !m.is_empty() && !messages.contains(&m) {
            messages.push(m);
        }
    }
    let more = messages.len().saturating_sub(MAX_BANNER_REASONS);
    messages.truncate(MAX_BANNER_REASONS);
    let mut out = String::from(BANNER_LEAD);
    if messages.is_empty() {
        out.push('.');
    } else {
        out.push_str(": ");
        out.push_str(&messages.join("; "));
        match more {
            0 => {}
            1 => out.push_str("; and 1 more finding"),
            n => out.push_str(&format!("; and {n} more findings")),
        }
        out.push('.');
    }
    out.push(' ');
    out.push_str(BANNER_ADVICE);
    out
}

/// A reason message made safe to show: controls become spaces, invisible formatting
/// characters (bidi overrides, zero-width characters) become `?`, whitespace collapses, a
/// final full stop goes (the banner joins messages with `;`) and long text is cut.
fn clean_message(message: &str) -> String {
    let mapped: String = message
        .chars()
        .map(|c| {
            if c.is_control() {
                ' '
            } else if is_invisible_format(c) {
                '?'
            } else {
                c
            }
        })
        .collect();
    let mut m = mapped.split_whitespace().collect::<Vec<_>>().join(" ");
    while m.ends_with('.') {
        m.pop();
    }
    if m.chars().count() > MAX_REASON_CHARS {
        m = m.chars().take(MAX_REASON_CHARS - 3).collect::<String>() + "...";
    }
    m
}

/// Unicode format characters (general category Cf) and other invisible code points that can
/// hide or reorder text.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// The banner in its two forms, wrapped. Lines after the first are indented, so no line of
/// the banner can start with `--` (a MIME delimiter) or `From `.
struct Banner {
    /// Unicode text, wrapped, lines without line endings.
    text: Vec<String>,
    /// ASCII HTML (escaped, non-ASCII as character references), wrapped.
    html: Vec<String>,
}

impl Banner {
    fn new(words: &str) -> Self {
        // Each char is a unit; the units borrow from `words` (no String per char).
        fn chars(w: &str) -> Vec<Cow<'_, str>> {
            let mut units = Vec::with_capacity(w.len());
            for (i, c) in w.char_indices() {
                units.push(Cow::Borrowed(&w[i..i + c.len_utf8()]));
            }
            units
        }
        let text = wrap(words.split(' ').map(chars));
        let mut html_words: Vec<Vec<Cow<'_, str>>> = Vec::new();
        for (i, w) in words.split(' ').enumerate() {
            if i == 0 && w == "Caution:" {
                html_words.push(vec![Cow::Borrowed("<strong>Caution:</strong>")]);
            } else {
                let mut units = Vec::with_capacity(w.len());
                for (j, c) in w.char_indices() {
                    units.push(html_unit(&w[j..j + c.len_utf8()], c));
                }
                html_words.push(units);
            }
        }
        let mut html = vec![format!("<div style=\"{HTML_STYLE}\">")];
        html.extend(wrap(html_words.into_iter()));
        html.push("</div>".to_string());
        Banner { text, html }
    }

    /// The text form with `eol` line endings, ending in a blank line.
    fn text_block(&self, eol: &str) -> String {
        let mut s = self.text.join(eol);
        s.push_str(eol);
        s.push_str(eol);
        s
    }

    /// The HTML form with `eol` line endings, ending in a line ending.
    fn html_block(&self, eol: &str) -> String {
        let mut s = self.html.join(eol);
        s.push_str(eol);
        s
    }
}

/// One character of HTML text (`c`, written `s`), escaped; non-ASCII as a character reference.
fn html_unit(s: &str, c: char) -> Cow<'_, str> {
    match c {
        '&' => Cow::Borrowed("&amp;"),
        '<' => Cow::Borrowed("&lt;"),
        '>' => Cow::Borrowed("&gt;"),
        '"' => Cow::Borrowed("&quot;"),
        '\'' => Cow::Borrowed("&#39;"),
        c if c.is_ascii() => Cow::Borrowed(s),
        c => Cow::Owned(format!("&#x{:X};", c as u32)),
    }
}

/// Greedy wrapping of words (each a list of unbreakable units) at [`WRAP`] columns (counted
/// in units' bytes for HTML, characters for text, close enough for both); a word longer than
/// a line is broken between units. Continuation lines start with two spaces.
fn wrap<'a>(words: impl Iterator<Item = Vec<Cow<'a, str>>>) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut width = 0usize;
    let indent = "  ";
    for word in words {
        let wlen: usize = word.iter().map(|u| u.chars().count()).sum();
        if wlen == 0 {
            continue;
        }
        let sep = usize::from(width > 0);
        if width > 0 && width + sep + wlen > WRAP {
            lines.push(std::mem::take(&mut line));
            line.push_str(indent);
            width = indent.len();
        } else if width > 0 {
            line.push(' ');
            width += 1;
        }
        for u in word {
            let ulen = u.chars().count();
            if width + ulen > WRAP && width > indent.len() {
                lines.push(std::mem::take(&mut line));
                line.push_str(indent);
                width = indent.len();
            }
            line.push_str(&u);
            width += ulen;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// MIME structure

/// The structure is not safe to change.
#[derive(Debug)]
struct Broken;

/// One header field of a MIME entity, as offsets into the message.
#[derive(Debug, Clone, Copy)]
struct Field {
    name_start: usize,
    name_end: usize,
    value_start: usize,
    value_end: usize,
}

/// A MIME entity: its header fields and where its body lies.
#[derive(Debug)]
struct Entity {
    fields: Vec<Field>,
    /// Where new header fields go (the blank line that ends the header), if there is one.
    header_end: Option<usize>,
    body_start: usize,
    body_end: usize,
}

/// A parsed media type.
#[derive(Debug, Clone, Default)]
struct MediaType {
    mtype: String,
    subtype: String,
    params: Vec<Param>,
    /// Text that was not a parameter mentioned a boundary (parsers may disagree on it).
    skipped_boundary: bool,
}

#[derive(Debug, Clone)]
struct Param {
    /// Lower case, as written (RFC 2231 names keep their `*`).
    name: String,
    value: Vec<u8>,
    /// Where the value (with its quotes) lies in the message.
    start: usize,
    end: usize,
    /// A quoted value without its closing quote (read to the end of the field).
    unterminated: bool,
}

impl MediaType {
    /// The one parameter `name`; `Err` when it is given more than once or in RFC 2231 form.
    fn param(&self, name: &str) -> Result<Option<&Param>, Broken> {
        let mut found = None;
        for p in &self.params {
            if p.name == name {
                if found.is_some() {
                    return Err(Broken);
                }
                found = Some(p);
            } else if p
                .name
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('*'))
            {
                return Err(Broken);
            }
        }
        Ok(found)
    }
}

/// A text part that gets the banner.
#[derive(Debug)]
struct Target {
    html: bool,
    entity: Entity,
    ctype: Option<(Field, MediaType)>,
    /// Lower-cased Content-Transfer-Encoding field value and its field, if present.
    cte: Option<(Field, String)>,
}

impl Entity {
    fn name<'r>(&self, raw: &'r [u8], f: &Field) -> &'r [u8] {
        &raw[f.name_start..f.name_end]
    }

    /// The one field named `name`: `Err` when there are several.
    fn field(&self, raw: &[u8], name: &str) -> Result<Option<Field>, Broken> {
        let mut found = None;
        for f in &self.fields {
            if self.name(raw, f).eq_ignore_ascii_case(name.as_bytes()) {
                if found.is_some() {
                    return Err(Broken);
                }
                found = Some(*f);
            }
        }
        Ok(found)
    }
}

/// Reads the header of the entity at `start..end` strictly: every line is a field or the
/// continuation of one; a MIME field name must not carry whitespace.
fn parse_entity(raw: &[u8], start: usize, end: usize) -> Result<Entity, Broken> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = start;
    loop {
        if pos >= end {
            return Ok(Entity {
                fields,
                header_end: None,
                body_start: end,
                body_end: end,
            });
        }
        let nl = memchr::memchr(b'\n', &raw[pos..end]).map(|i| pos + i);
        let (content_end, next) = match nl {
            Some(nl) => (nl.saturating_sub(1).max(pos), nl + 1),
            None => (end, end),
        };
        if nl.is_some() && (nl == Some(pos) || raw[nl.unwrap_or(pos) - 1] != b'\r') {
            return Err(Broken); // a bare LF survived normalisation: not ours to judge
        }
        let line = &raw[pos..content_end];
        if line.is_empty() {
            return Ok(Entity {
                fields,
                header_end: Some(pos),
                body_start: next,
                body_end: end,
            });
        }
        if matches!(line[0], b' ' | b'\t') {
            match fields.last_mut() {
                Some(f) => f.value_end = content_end,
                None => return Err(Broken),
            }
        } else {
            let colon = memchr::memchr(b':', line).ok_or(Broken)?;
            let name = &line[..colon];
            let trimmed = name.trim_ascii();
            if trimmed.is_empty() {
                return Err(Broken);
            }
            let mime = trimmed.len() >= 8 && trimmed[..8].eq_ignore_ascii_case(b"content-")
                || trimmed.eq_ignore_ascii_case(b"mime-version");
            if mime && trimmed.len() != name.len() {
                return Err(Broken);
            }
            fields.push(Field {
                name_start: pos,
                name_end: pos + name.len(),
                value_start: pos + colon + 1,
                value_end: content_end,
            });
        }
        pos = next;
    }
}

/// Skips whitespace (folding included) and comments.
fn skip_cfws(b: &[u8], mut i: usize) -> Result<usize, Broken> {
    loop {
        match b.get(i) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => i += 1,
            Some(b'(') => {
                let mut depth = 0usize;
                loop {
                    match b.get(i) {
                        None => return Err(Broken),
                        Some(b'\\') => i += 2,
                        Some(b'(') => {
                            depth += 1;
                            i += 1;
                        }
                        Some(b')') => {
                            depth -= 1;
                            i += 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            _ => return Ok(i),
        }
    }
}

fn is_tspecial(c: u8) -> bool {
    matches!(
        c,
        b'(' | b')'
            | b'<'
            | b'>'
            | b'@'
            | b','
            | b';'
            | b':'
            | b'\\'
            | b'"'
            | b'/'
            | b'['
            | b']'
            | b'?'
            | b'='
    )
}

fn token(b: &[u8], i: usize) -> usize {
    let mut j = i;
    while j < b.len() && b[j] > b' ' && b[j] != 0x7f && !is_tspecial(b[j]) {
        j += 1;
    }
    j
}

/// Parses a Content-Type value at `raw[f.value_start..f.value_end]` (RFC 2045 5.1, with the
/// usual leniency: an unquoted value runs to `;` or whitespace).
fn parse_media_type(raw: &[u8], f: &Field) -> Result<MediaType, Broken> {
    let base = f.value_start;
    let b = &raw[f.value_start..f.value_end];
    let mut i = skip_cfws(b, 0)?;
    let t_end = token(b, i);
    if t_end == i || b.get(t_end) != Some(&b'/') {
        return Err(Broken);
    }
    let mtype = String::from_utf8_lossy(&b[i..t_end]).to_ascii_lowercase();
    i = t_end + 1;
    let s_end = token(b, i);
    if s_end == i {
        return Err(Broken);
    }
    let subtype = String::from_utf8_lossy(&b[i..s_end]).to_ascii_lowercase();
    i = skip_cfws(b, s_end)?;
    // Parameters, read as leniently as common parsers read them: text that is not
    // `name=value` is skipped up to the next `;` (remembered when it mentions a boundary), a
    // quoted value without its closing quote runs to the end of the field (marked).
    let mut params = Vec::new();
    let mut skipped_boundary = false;
    let mut skip = |b: &[u8], from: usize| {
        let to = skip_to_semicolon(b, from);
        skipped_boundary |= b[from..to]
            .to_ascii_lowercase()
            .windows(8)
            .any(|w| w == b"boundary");
        to
    };
    while i < b.len() {
        if b[i] != b';' {
            i = skip(b, i);
            continue;
        }
        i = skip_cfws(b, i + 1)?;
        if i >= b.len() {
            break;
        }
        if b[i] == b';' {
            continue;
        }
        let n_end = token(b, i);
        let eq = skip_cfws(b, n_end)?;
        if n_end == i || b.get(eq) != Some(&b'=') {
            i = skip(b, i);
            continue;
        }
        let name = String::from_utf8_lossy(&b[i..n_end]).to_ascii_lowercase();
        i = skip_cfws(b, eq + 1)?;
        let v_start = i;
        let mut value = Vec::new();
        let mut unterminated = false;
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i) {
                    None => {
                        unterminated = true;
                        break;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        value.push(b[i + 1]);
                        i += 2;
                    }
                    Some(b'\r' | b'\n') => i += 1,
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && !matches!(b[i], b';' | b' ' | b'\t' | b'\r' | b'\n' | b'"') {
                value.push(b[i]);
                i += 1;
            }
        }
        if unterminated {
            // The value ends where the field's text ends, not at folding whitespace.
            while value.last().is_some_and(|c| matches!(c, b' ' | b'\t')) {
                value.pop();
            }
        }
        params.push(Param {
            name,
            value,
            start: base + v_start,
            end: base + i,
            unterminated,
        });
        i = skip_cfws(b, i)?;
    }
    Ok(MediaType {
        mtype,
        subtype,
        params,
        skipped_boundary,
    })
}

/// The offset of the next `;` outside a quoted string, or the end.
fn skip_to_semicolon(b: &[u8], mut i: usize) -> usize {
    let mut quoted = false;
    while i < b.len() {
        match b[i] {
            b'"' => quoted = !quoted,
            b'\\' if quoted => i += 1,
            b';' if !quoted => return i,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// The first token of a field value, lower case (Content-Transfer-Encoding,
/// Content-Disposition).
fn first_token(raw: &[u8], f: &Field) -> Result<String, Broken> {
    let b = &raw[f.value_start..f.value_end];
    let i = skip_cfws(b, 0)?;
    let j = token(b, i);
    Ok(String::from_utf8_lossy(&b[i..j]).to_ascii_lowercase())
}

/// Splits a multipart body into its parts' ranges (RFC 2046 5.1.1): the CRLF before a
/// delimiter belongs to it. `Err` for anything a parser could read differently: a line that
/// starts with the delimiter and goes on with other text, a delimiter after the close
/// delimiter.
fn split_multipart(
    raw: &[u8],
    start: usize,
    end: usize,
    boundary: &[u8],
) -> Result<Vec<(usize, usize)>, Broken> {
    let mut dash = b"--".to_vec();
    dash.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut open: Option<usize> = None; // content start of the current part
    let mut pos = start;
    while pos < end {
        let line_end = memchr::memchr(b'\n', &raw[pos..end])
            .map(|i| pos + i + 1)
            .unwrap_or(end);
        let line = &raw[pos..line_end];
        if line.starts_with(&dash) {
            let rest = &line[dash.len()..];
            let (close, pad) = match rest.strip_prefix(b"--") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            if !pad
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            {
                return Err(Broken);
            }
            if let Some(s) = open.take() {
                // The part ends before the CRLF that precedes this delimiter line.
                if pos < s + 2 || &raw[pos - 2..pos] != b"\r\n" {
                    return Err(Broken);
                }
                parts.push((s, pos - 2));
            }
            if close {
                // Parsers that read on past the close delimiter must find nothing there.
                let epilogue = &raw[line_end..end];
                let again = epilogue.starts_with(&dash)
                    || memchr::memchr_iter(b'\n', epilogue)
                        .any(|i| epilogue[i + 1..].starts_with(&dash));
                return if again { Err(Broken) } else { Ok(parts) };
            }
            if line_end == end && !line.ends_with(b"\n") {
                return Err(Broken);
            }
            open = Some(line_end);
        }
        pos = line_end;
    }
    // No close delimiter (a truncated message, common in spam): every parser ends the last
    // part where the enclosing entity ends.
    if let Some(s) = open {
        parts.push((s, end));
    }
    Ok(parts)
}

/// The parts that get the banner, or `Err` when the structure is not safe to change.
fn find_targets(raw: &[u8]) -> Result<Vec<Target>, Broken> {
    let start = mbox_line_end(raw);
    let top = parse_entity(raw, start, raw.len())?;
    let mut out = Vec::new();
    visit(raw, top, false, 0, &mut out)?;
    Ok(out)
}

/// Walks one entity. Returns whether it shows text that got (or would get) the banner.
fn visit(
    raw: &[u8],
    entity: Entity,
    in_digest: bool,
    depth: usize,
    out: &mut Vec<Target>,
) -> Result<bool, Broken> {
    if depth > MAX_DEPTH {
        return Err(Broken);
    }
    let ct_field = entity.field(raw, "Content-Type")?;
    let cte_field = entity.field(raw, "Content-Transfer-Encoding")?;
    let cd_field = entity.field(raw, "Content-Disposition")?;
    let ctype = match &ct_field {
        Some(f) => parse_media_type(raw, f)?,
        None if in_digest => MediaType {
            mtype: "message".into(),
            subtype: "rfc822".into(),
            ..MediaType::default()
        },
        None => MediaType {
            mtype: "text".into(),
            subtype: "plain".into(),
            ..MediaType::default()
        },
    };
    if let Some(f) = &cd_field
        && first_token(raw, f)? == "attachment"
    {
        return Ok(false);
    }
    if ctype.mtype == "multipart" {
        let boundary = ctype.param("boundary")?.ok_or(Broken)?;
        if boundary.value.is_empty()
            || boundary.value.len() > 200
            || boundary.unterminated
            || ctype.skipped_boundary
        {
            return Err(Broken);
        }
        // A Content-Transfer-Encoding on a multipart (RFC 2045 6.4 forbids any but 7bit, 8bit
        // and binary) is ignored, as mail readers ignore it.
        // A signature covers its part byte for byte: a banner inside would break it (the
        // verdict on the signature is already in our Authentication-Results).
        if ctype.subtype == "encrypted" || ctype.subtype == "signed" {
            return Ok(false);
        }
        let ranges = split_multipart(raw, entity.body_start, entity.body_end, &boundary.value)?;
        let digest = ctype.subtype == "digest";
        let mut children = ranges.into_iter();
        match ctype.subtype.as_str() {
            "alternative" => {
                let mut any = false;
                for (s, e) in children {
                    let child = parse_entity(raw, s, e)?;
                    any |= visit(raw, child, false, depth + 1, out)?;
                }
                Ok(any)
            }
            "related" => match children.next() {
                Some((s, e)) => {
                    let child = parse_entity(raw, s, e)?;
                    visit(raw, child, false, depth + 1, out)
                }
                None => Ok(false),
            },
            // mixed, report, digest, parallel and anything unknown: the first part that
            // shows text.
            _ => {
                for (s, e) in children {
                    let child = parse_entity(raw, s, e)?;
                    if visit(raw, child, digest, depth + 1, out)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    } else if ctype.mtype == "text"
        && matches!(ctype.subtype.as_str(), "plain" | "html")
        && !inline_signed(&raw[entity.body_start..entity.body_end])
    {
        let html = ctype.subtype == "html";
        let cte = match &cte_field {
            Some(f) => Some((*f, first_token(raw, f)?)),
            None => None,
        };
        out.push(Target {
            html,
            entity,
            ctype: ct_field.map(|f| (f, ctype)),
            cte,
        });
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Whether a text body holds an inline OpenPGP cleartext signature: the banner would sit
/// outside the signed block, but re-encoding the part could change the signed lines, so the
/// part is left alone (the subject prefix and the header fields still mark the message).
fn inline_signed(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"-----BEGIN PGP SIGNED MESSAGE-----").is_some()
}

// ---------------------------------------------------------------------------------------------
// One text part

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferEncoding {
    Identity,
    SevenBit,
    QuotedPrintable,
    Base64,
}

/// How a charset takes the banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharsetClass {
    Utf8,
    Ascii,
    Latin1,
    Windows1252,
    /// ISO-2022-*: ASCII only where the shift state is ASCII.
    Stateful,
    /// UTF-16/32, UTF-7, HZ, EBCDIC: no ASCII bytes can be inserted.
    Incompatible,
    /// Any other charset: ASCII bytes can be inserted between characters.
    AsciiCompatible,
}

fn charset_class(label: &str) -> CharsetClass {
    let l = label.trim().to_ascii_lowercase();
    let l = l.as_str();
    match l {
        "utf-8" | "utf8" | "unicode-1-1-utf-8" => CharsetClass::Utf8,
        "us-ascii" | "ascii" | "ansi_x3.4-1968" | "iso646-us" | "us" | "iso-ir-6" | "cp367"
        | "ibm367" | "csascii" => CharsetClass::Ascii,
        "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "iso_8859-1:1987" | "iso88591" | "latin1"
        | "latin-1" | "l1" | "iso-ir-100" | "cp819" | "ibm819" | "csisolatin1" => {
            CharsetClass::Latin1
        }
        "windows-1252" | "cp1252" | "x-cp1252" | "cp-1252" => CharsetClass::Windows1252,
        "unicode" | "hz" | "hz-gb-2312" | "unicode-1-1-utf-7" | "csunicode" => {
            CharsetClass::Incompatible
        }
        _ if l.starts_with("iso-2022") || l.starts_with("csiso2022") => CharsetClass::Stateful,
        _ if [
            "utf-16", "utf-32", "utf16", "utf32", "ucs-2", "ucs-4", "ucs2", "ucs4", "utf-7", "utf7",
        ]
        .iter()
        .any(|p| l.starts_with(p))
            || l.contains("ebcdic")
            || matches!(
                l,
                "cp037"
                    | "ibm037"
                    | "cp500"
                    | "ibm500"
                    | "cp875"
                    | "cp1026"
                    | "ibm1026"
                    | "cp1047"
                    | "ibm1047"
                    | "cp1140"
                    | "ibm01140"
            ) =>
        {
            CharsetClass::Incompatible
        }
        _ => CharsetClass::AsciiCompatible,
    }
}

/// The edits that put the banner into one part, or `None` (the part stays as it is).
fn banner_edits(raw: &[u8], t: &Target, banner: &Banner) -> Option<Vec<Edit>> {
    let entity = &t.entity;
    // A part with no blank line after its header has no body to write into.
    entity.header_end?;
    let body = &raw[entity.body_start..entity.body_end];
    let encoding = match t.cte.as_ref().map(|(_, v)| v.as_str()) {
        None | Some("7bit") | Some("") => TransferEncoding::SevenBit,
        Some("8bit" | "binary") => TransferEncoding::Identity,
        Some("quoted-printable") => TransferEncoding::QuotedPrintable,
        Some("base64") => TransferEncoding::Base64,
        Some(_) => return None,
    };
    let content: Vec<u8> = match encoding {
        TransferEncoding::Identity | TransferEncoding::SevenBit => body.to_vec(),
        TransferEncoding::QuotedPrintable => qp_decode(body),
        TransferEncoding::Base64 => base64_decode(body)?,
    };
    let (label, charset_param) = match &t.ctype {
        Some((_, mt)) => match mt.param("charset").ok()? {
            Some(p) => (String::from_utf8(p.value.clone()).ok()?, Some(p.clone())),
            None => ("us-ascii".to_string(), None),
        },
        None => ("us-ascii".to_string(), None),
    };
    let mut class = charset_class(&label);
    let block_for = |content: &[u8]| {
        let eol = line_ending(content);
        if t.html {
            banner.html_block(eol)
        } else {
            banner.text_block(eol)
        }
    };
    let block = block_for(&content);

    // The banner with anything outside ASCII as '?', for text whose charset is unknown.
    let ascii_insert = |content: &[u8]| {
        let ascii: String = block
            .chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect();
        let mut v = content.to_vec();
        let at = insertion_point(&v, t.html);
        v.splice(at..at, ascii.bytes());
        v
    };
    let mut relabel = false;
    if charset_param.is_none() && !content.is_ascii() {
        // 8-bit text with no charset: readers guess. UTF-8 when it is valid UTF-8 (and then
        // say so); otherwise the bytes stay as they are, unlabelled, with an ASCII banner.
        if std::str::from_utf8(&content).is_ok() {
            class = CharsetClass::Utf8;
            relabel = true;
        } else {
            let v = ascii_insert(&content);
            return finish(raw, t, body, encoding, v, false, None);
        }
    }

    // Either the banner bytes go into the content as it is, or the content is converted to
    // UTF-8 first.
    let new_content: Vec<u8> = match insert_in_place(&content, t.html, class, &block) {
        InPlace::Done(v) => v,
        InPlace::AsUtf8 => {
            relabel = true;
            let mut v = content.clone();
            let at = insertion_point(&v, t.html);
            v.splice(at..at, block.bytes());
            v
        }
        InPlace::Convert => {
            let decoded =
                match mail_parser::decoders::charsets::map::charset_decoder(label.as_bytes()) {
                    Some(decode) => decode(&content),
                    None if class == CharsetClass::AsciiCompatible => {
                        // Unknown charset: the banner in ASCII, anything else as '?'.
                        let v = ascii_insert(&content);
                        return finish(raw, t, body, encoding, v, false, charset_param.as_ref());
                    }
                    None => return None,
                };
            relabel = true;
            let decoded = decoded.strip_prefix('\u{FEFF}').unwrap_or(&decoded);
            let mut v = decoded.as_bytes().to_vec();
            let at = insertion_point(&v, t.html);
            v.splice(at..at, block_for(&v).into_bytes());
            v
        }
    };
    finish(
        raw,
        t,
        body,
        encoding,
        new_content,
        relabel,
        charset_param.as_ref(),
    )
}

/// The line ending the content uses: CRLF unless it has only bare LFs.
fn line_ending(content: &[u8]) -> &'static str {
    if memchr::memmem::find(content, b"\r\n").is_some() || memchr::memchr(b'\n', content).is_none()
    {
        "\r\n"
    } else {
        "\n"
    }
}

enum InPlace {
    Done(Vec<u8>),
    /// The content is plain ASCII labelled as such: insert UTF-8 and relabel as UTF-8.
    AsUtf8,
    Convert,
}

fn insert_in_place(content: &[u8], html: bool, class: CharsetClass, block: &str) -> InPlace {
    let encoded: Option<Vec<u8>> = match class {
        CharsetClass::Utf8 => Some(block.as_bytes().to_vec()),
        _ if block.is_ascii() => match class {
            CharsetClass::Incompatible => None,
            CharsetClass::Stateful => {
                let at = insertion_point(content, html);
                if iso2022_ascii_at(content, at) {
                    Some(block.as_bytes().to_vec())
                } else {
                    None
                }
            }
            _ => Some(block.as_bytes().to_vec()),
        },
        CharsetClass::Ascii if content.is_ascii() => return InPlace::AsUtf8,
        CharsetClass::Latin1 => block
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c))
                    .ok()
                    .filter(|b| !(0x80..0xa0).contains(b))
            })
            .collect(),
        CharsetClass::Windows1252 => block.chars().map(cp1252_byte).collect(),
        _ => None,
    };
    match encoded {
        Some(bytes) => {
            let mut v = content.to_vec();
            let at = insertion_point(&v, html);
            v.splice(at..at, bytes);
            InPlace::Done(v)
        }
        None => InPlace::Convert,
    }
}

/// Re-encodes the content and writes the edits for the body and, when needed, the header
/// (charset relabelled to UTF-8; 7bit that now holds 8-bit text becomes quoted-printable).
fn finish(
    raw: &[u8],
    t: &Target,
    body: &[u8],
    encoding: TransferEncoding,
    content: Vec<u8>,
    relabel: bool,
    charset_param: Option<&Param>,
) -> Option<Vec<Edit>> {
    let entity = &t.entity;
    let mut edits = Vec::new();
    let mut encoding = encoding;
    let mut new_ct = None;
    let mut new_cte = None;
    // A 7bit part that was 7-bit and now holds 8-bit text (a part labelled 7bit that already
    // held 8-bit bytes is left as it came).
    if encoding == TransferEncoding::SevenBit && body.is_ascii() && !content.is_ascii() {
        encoding = TransferEncoding::QuotedPrintable;
        match &t.cte {
            Some((f, _)) => edits.push(Edit {
                start: f.value_start,
                end: f.value_end,
                with: b" quoted-printable".to_vec(),
            }),
            None => new_cte = Some("Content-Transfer-Encoding: quoted-printable\r\n"),
        }
    }
    let encoded = match encoding {
        TransferEncoding::Identity | TransferEncoding::SevenBit => content,
        TransferEncoding::QuotedPrintable => qp_encode(&content),
        TransferEncoding::Base64 => {
            // Keep whatever line breaks ended the original encoded text.
            let tail = body.len()
                - body
                    .iter()
                    .rev()
                    .take_while(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
                    .count();
            let mut v = base64_encode(&content);
            v.extend_from_slice(&body[tail..]);
            v
        }
    };
    if relabel {
        match (charset_param, &t.ctype) {
            (Some(p), _) => edits.push(Edit {
                start: p.start,
                end: p.end,
                with: b"utf-8".to_vec(),
            }),
            (None, Some((f, _))) => {
                let value = &raw[f.value_start..f.value_end];
                let ends_semicolon = value.trim_ascii_end().ends_with(b";");
                edits.push(Edit {
                    start: f.value_end,
                    end: f.value_end,
                    with: if ends_semicolon {
                        b" charset=utf-8".to_vec()
                    } else {
                        b"; charset=utf-8".to_vec()
                    },
                });
            }
            (None, None) => {
                let kind = if t.html { "html" } else { "plain" };
                new_ct = Some(format!("Content-Type: text/{kind}; charset=utf-8\r\n"));
            }
        }
    }
    let mut new_fields = String::new();
    if (new_ct.is_some() || new_cte.is_some())
        && entity.body_end == raw.len()
        && !has_mime_version(raw, entity)
    {
        // The top-level entity: MIME fields mean something only with MIME-Version.
        new_fields.push_str("MIME-Version: 1.0\r\n");
    }
    new_fields.push_str(new_ct.as_deref().unwrap_or(""));
    new_fields.push_str(new_cte.unwrap_or(""));
    if !new_fields.is_empty() {
        let at = entity.header_end?;
        edits.push(Edit {
            start: at,
            end: at,
            with: new_fields.into_bytes(),
        });
    }
    edits.push(Edit {
        start: entity.body_start,
        end: entity.body_end,
        with: encoded,
    });
    Some(edits)
}

fn has_mime_version(raw: &[u8], entity: &Entity) -> bool {
    entity
        .fields
        .iter()
        .any(|f| entity.name(raw, f).eq_ignore_ascii_case(b"MIME-Version"))
}

/// Where the banner goes: text at the start (after a UTF-8 byte order mark); HTML after the
/// `<body ...>` tag, else after `</head>`, else after `<html ...>`, else at the start.
fn insertion_point(content: &[u8], html: bool) -> usize {
    let start = if content.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    if !html {
        return start;
    }
    for (tag, open) in [
        (&b"<body"[..], true),
        (&b"</head"[..], false),
        (&b"<html"[..], true),
    ] {
        if let Some(at) = find_tag(content, tag)
            && let Some(end) = tag_end(content, at + tag.len(), open)
        {
            return end;
        }
    }
    start
}

/// The first `<tag` (case-insensitive) followed by whitespace, `/` or `>`.
fn find_tag(content: &[u8], tag: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'<', &content[from..]).map(|i| from + i) {
        let after = i + tag.len();
        if content.len() >= after
            && content[i..after].eq_ignore_ascii_case(tag)
            && matches!(
                content.get(after),
                Some(b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | b'/' | b'>')
            )
        {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// The offset after the `>` that closes a tag whose name ends at `from`; quoted attribute
/// values may hold `>`.
fn tag_end(content: &[u8], from: usize, attributes: bool) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (i, &c) in content.iter().enumerate().skip(from) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'>' => return Some(i + 1),
            None if attributes && (c == b'"' || c == b'\'') => quote = Some(c),
            None => {}
        }
    }
    None
}

/// Whether an ISO-2022 stream is in its ASCII (or JIS-Roman) state at `at`.
fn iso2022_ascii_at(content: &[u8], at: usize) -> bool {
    let mut ascii = true;
    let mut i = 0;
    let end = at.min(content.len());
    while i < end {
        match content[i] {
            0x1b => {
                match (content.get(i + 1), content.get(i + 2)) {
                    (Some(b'('), Some(b'B' | b'J')) => ascii = true,
                    (Some(b'$' | b'(' | b'N' | b'O'), _) => ascii = false,
                    _ => {}
                }
                i += 1;
            }
            0x0e => ascii = false,
            0x0f => ascii = true,
            _ => {}
        }
        i += 1;
    }
    ascii
}

fn cp1252_byte(c: char) -> Option<u8> {
    let u = u32::from(c);
    if u < 0x80 || (0xa0..=0xff).contains(&u) {
        return Some(u as u8);
    }
    const HIGH: [(u32, u8); 27] = [
        (0x20AC, 0x80),
        (0x201A, 0x82),
        (0x0192, 0x83),
        (0x201E, 0x84),
        (0x2026, 0x85),
        (0x2020, 0x86),
        (0x2021, 0x87),
        (0x02C6, 0x88),
        (0x2030, 0x89),
        (0x0160, 0x8A),
        (0x2039, 0x8B),
        (0x0152, 0x8C),
        (0x017D, 0x8E),
        (0x2018, 0x91),
        (0x2019, 0x92),
        (0x201C, 0x93),
        (0x201D, 0x94),
        (0x2022, 0x95),
        (0x2013, 0x96),
        (0x2014, 0x97),
        (0x02DC, 0x98),
        (0x2122, 0x99),
        (0x0161, 0x9A),
        (0x203A, 0x9B),
        (0x0153, 0x9C),
        (0x017E, 0x9E),
        (0x0178, 0x9F),
    ];
    HIGH.iter().find(|(cp, _)| *cp == u).map(|(_, b)| *b)
}

// ---------------------------------------------------------------------------------------------
// Transfer encodings

// Quoted-printable and base64 are the message layer's (`unspoof_message::codec`).

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dns, Engine, Envelope, Policy, Verdict};

    fn analysis(reasons: Vec<Reason>) -> Analysis {
        let engine = Engine::new(Policy::default(), Dns::offline());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut a = rt.block_on(engine.evaluate(
            b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n",
            &Envelope::default(),
        ));
        a.verdict = Verdict::from_reasons(reasons);
        a
    }

    fn tagged(reasons: Vec<Reason>) -> Analysis {
        analysis(reasons)
    }

    fn spf() -> Reason {
        Reason::new("spf.fail", Action::Tag, "SPF failed for evil.example")
    }

    fn settings() -> TagSettings {
        TagSettings::default()
    }

    #[test]
    fn verdict_header_is_safe_and_folded() {
        let mut reasons: Vec<Reason> = (0..12)
            .map(|i| Reason::new(&format!("lookalike.domain_{i}"), Action::Tag, "x"))
            .collect();
        reasons.push(Reason::new("Evil\r\nX-Injected: 1;a", Action::Tag, "x"));
        reasons.push(Reason::new("lookalike.domain_0", Action::Tag, "dup"));
        let h = verdict_header(&analysis(reasons));
        assert!(
            h.starts_with("X-Unspoof-Verdict: tag; reasons=lookalike.domain_0,"),
            "{h}"
        );
        assert!(h.ends_with("evil__x_injected__1_a\r\n"), "{h}");
        assert_eq!(h.matches("lookalike.domain_0,").count(), 1);
        for line in h.split("\r\n") {
            assert!(line.len() <= 78, "{line}");
        }
        assert_eq!(h.matches("\r\n").count(), h.matches("\r\n\t").count() + 1);
        assert_eq!(
            verdict_header(&analysis(vec![])),
            "X-Unspoof-Verdict: accept\r\n"
        );
    }

    #[test]
    fn banner_orders_limits_and_cleans() {
        let reasons = vec![
            Reason::new("auth.not_checked", Action::Accept, "not checked"),
            Reason::new("a", Action::Tag, "first tag."),
            Reason::new("b", Action::Reject, "the \u{202E}moc.lapyap\u{202C} trick"),
            Reason::new("c", Action::Quarantine, "line\r\nbreak"),
            Reason::new("d", Action::Tag, "fourth"),
        ];
        let b = banner_text(&analysis(reasons));
        assert_eq!(
            b,
            format!(
                "{BANNER_LEAD}: the ?moc.lapyap? trick; line break; first tag; and 1 more finding. {BANNER_ADVICE}"
            )
        );
        // Only accept-level reasons: they are named.
        let b = banner_text(&analysis(vec![Reason::new(
            "x",
            Action::Accept,
            "only this",
        )]));
        assert!(b.contains(": only this."));
        let b = banner_text(&analysis(vec![]));
        assert!(b.starts_with(&format!("{BANNER_LEAD}. ")));
    }

    #[test]
    fn banner_wraps_and_escapes() {
        let long = format!("<script>\"x\" & {} \u{430}", "y".repeat(150));
        let banner = Banner::new(&banner_from_reasons(&[Reason::new("a", Action::Tag, long)]));
        for l in banner.text.iter().chain(&banner.html[1..]) {
            assert!(l.chars().count() <= WRAP, "{l}");
            assert!(!l.starts_with('-'));
        }
        let html = banner.html.join("\n");
        assert!(html.contains("&lt;script&gt;&quot;x&quot;"), "{html}");
        assert!(html.contains(" &amp;"), "{html}");
        assert!(html.contains("&#x430;"));
        assert!(html.is_ascii());
        assert!(!html.contains("<script"));
    }

    #[test]
    fn subject_prefix_once_and_encoded_words_stay_valid() {
        let a = tagged(vec![spf()]);
        let s = TagSettings {
            banner: false,
            ..settings()
        };
        let m = b"Subject: =?UTF-8?B?w6l0w6k=?=\r\nFrom: a@b\r\n\r\nx\r\n";
        let once = rewrite(m, &a, &s);
        assert!(once.starts_with(b"Subject: [SUSPICIOUS] =?UTF-8?B?w6l0w6k=?=\r\n"));
        assert_eq!(rewrite(&once, &a, &s), once);
        assert_eq!(
            decode_subject(b" [SUSPICIOUS] =?UTF-8?B?w6l0w6k=?="),
            "[SUSPICIOUS] \u{e9}t\u{e9}"
        );

        // A non-ASCII prefix is itself an encoded-word; its space survives before another.
        let s2 = TagSettings {
            subject_prefix: "[VERD\u{c4}CHTIG]".into(),
            banner: false,
        };
        let out = rewrite(m, &a, &s2);
        let field = Headers::parse(&out).first("Subject").unwrap().value;
        assert_eq!(decode_subject(field), "[VERD\u{c4}CHTIG] \u{e9}t\u{e9}");
        assert_eq!(rewrite(&out, &a, &s2), out);

        // Missing subject: added. Empty subject: the prefix alone.
        let out = rewrite(b"From: a@b\r\n\r\nx\r\n", &a, &s);
        assert!(out.starts_with(b"Subject: [SUSPICIOUS]\r\nFrom: a@b\r\n"));
        let out = rewrite(b"Subject:\r\nFrom: a@b\r\n\r\nx\r\n", &a, &s);
        assert!(out.starts_with(b"Subject: [SUSPICIOUS]\r\nFrom"));

        // A long first line folds after the prefix.
        let long = format!("Subject: {}\r\n\r\nx\r\n", "w ".repeat(34));
        let out = rewrite(long.as_bytes(), &a, &s);
        assert!(out.starts_with(b"Subject: [SUSPICIOUS]\r\n w w"));

        // Only tag verdicts are prefixed.
        let accept = analysis(vec![]);
        assert_eq!(rewrite(m, &accept, &s), m);
    }

    #[test]
    fn stale_verdicts_go_and_ours_go_on_top() {
        let a = tagged(vec![spf()]);
        let m = b"X-Unspoof-Verdict: accept\r\nSubject: s\r\nx-unspoof-verdict : accept;\r\n reasons=x\r\n\r\nX-Unspoof-Verdict: body\r\n";
        let out = String::from_utf8(annotate(m, &a, "mx.test")).unwrap();
        assert!(out.starts_with("Authentication-Results: mx.test;"), "{out}");
        assert_eq!(out.matches("X-Unspoof-Verdict: accept").count(), 0, "{out}");
        assert!(out.contains("X-Unspoof-Verdict: tag; reasons=spf.fail\r\nSubject: s\r\n\r\nX-Unspoof-Verdict: body\r\n"), "{out}");
    }

    #[test]
    fn single_part_text_and_lf_input() {
        let a = tagged(vec![spf()]);
        let out = tag_message(
            b"Subject: s\nFrom: a@b\n\nhello\n",
            &a,
            &settings(),
            "mx.test",
        );
        let out = String::from_utf8(out).unwrap();
        assert!(!out.replace("\r\n", "").contains('\n'), "bare LF in {out}");
        let body = out
            .split("\r\n\r\n")
            .skip(1)
            .collect::<Vec<_>>()
            .join("\r\n\r\n");
        assert!(body.starts_with("Caution: unspoof"), "{body}");
        assert!(body.ends_with(".\r\n\r\nhello\r\n"), "{body}");
    }

    #[test]
    fn non_ascii_reason_in_us_ascii_text_relabels_to_utf8() {
        let a = tagged(vec![Reason::new(
            "x",
            Action::Tag,
            "looks like p\u{430}ypal.com",
        )]);
        let out = rewrite(b"Subject: s\r\n\r\nhello\r\n", &a, &settings());
        let msg = mail_parser::MessageParser::default().parse(&out).unwrap();
        let text = msg.body_text(0).unwrap();
        assert!(text.contains("p\u{430}ypal.com"), "{text}");
        assert!(
            text.ends_with("\r\n\r\nhello\r\n") || text.ends_with("\n\nhello\n"),
            "{text:?}"
        );
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"), "{s}");
        assert!(out.is_ascii());
    }

    #[test]
    fn latin1_windows1252_and_conversion() {
        let a = tagged(vec![Reason::new("x", Action::Tag, "caf\u{e9} \u{20ac}")]);
        // windows-1252 holds both characters.
        let m = b"Content-Type: text/plain; charset=windows-1252\r\nContent-Transfer-Encoding: 8bit\r\n\r\nna\xefve\r\n";
        let out = rewrite(m, &a, &settings());
        assert!(memchr::memmem::find(&out, b"caf\xe9 \x80").is_some());
        assert!(out.ends_with(b"\r\n\r\nna\xefve\r\n"));
        // ISO-8859-1 has no euro sign: the part becomes UTF-8.
        let m = b"Content-Type: text/plain; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nna\xefve\r\n";
        let out = rewrite(m, &a, &settings());
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"),
            "{s}"
        );
        assert!(s.contains("caf\u{e9} \u{20ac}") && s.ends_with("\r\n\r\nna\u{ef}ve\r\n"));
    }

    #[test]
    fn html_insertion_points() {
        assert_eq!(insertion_point(b"<html><BODY class=\"a>b\">x", true), 24);
        assert_eq!(insertion_point(b"<html><head></head>x", true), 19);
        assert_eq!(insertion_point(b"<html lang=en>x", true), 14);
        assert_eq!(insertion_point(b"<bodyx>text", true), 0);
        assert_eq!(insertion_point(b"\xEF\xBB\xBFtext", false), 3);
    }

    #[test]
    fn iso2022_state() {
        let jp = b"\x1b$B$3$s\x1b(B<body>";
        assert!(iso2022_ascii_at(jp, jp.len()));
        assert!(!iso2022_ascii_at(jp, 5));
    }

    fn multipart(body: &str) -> Vec<u8> {
        format!("Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn broken_structure_gets_no_banner_but_keeps_its_bytes() {
        let a = tagged(vec![spf()]);
        for body in [
            "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--bb\r\n\r\ny\r\n--b--\r\n", // prefix line
            "--b\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx\r\n--b--\r\n",
            "--b\r\nno colon here\r\n\r\nx\r\n--b--\r\n",
            "--b\r\n\r\nx\r\n--b--\r\n--b\r\n\r\nsmuggled\r\n--b--\r\n",
        ] {
            let m = multipart(body);
            let out = rewrite(&m, &a, &settings());
            let expect = [b"Subject: [SUSPICIOUS] s".as_slice(), &m[10..]].concat();
            assert_eq!(out, expect, "{body}");
        }
        // RFC 2231 boundary and no boundary at all.
        for ct in ["multipart/mixed; boundary*0=\"b\"", "multipart/mixed"] {
            let m = format!("Content-Type: {ct}\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n");
            let out = rewrite(m.as_bytes(), &a, &settings());
            assert!(out.ends_with(b"\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"));
        }
    }

    #[test]
    fn mixed_alternative_attachment_and_rfc822() {
        let a = tagged(vec![spf()]);
        let body = "preamble\r\n--b\r\nContent-Type: text/plain; name=a.txt\r\nContent-Disposition: attachment\r\n\r\nattached\r\n\
--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner text\r\n\
--b\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n\
--alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nPGh0bWw+PGJvZHk+aGk8L2JvZHk+PC9odG1sPg==\r\n--alt--\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nsecond text\r\n--b--\r\nepilogue\r\n";
        let m = multipart(body);
        let out = String::from_utf8(rewrite(&m, &a, &settings())).unwrap();
        assert!(out.contains("\r\n\r\nattached\r\n--b\r\n"), "{out}");
        assert!(out.contains("\r\n\r\ninner text\r\n--b\r\n"));
        assert!(out.contains("\r\n\r\nsecond text\r\n--b--\r\nepilogue\r\n"));
        assert!(out.contains("--alt\r\nContent-Type: text/plain\r\n\r\nCaution: unspoof"));
        assert!(out.contains(".\r\n\r\nplain\r\n--alt\r\n"));
        let msg = mail_parser::MessageParser::default()
            .parse(out.as_bytes())
            .unwrap();
        let html = msg.body_html(0).unwrap();
        assert!(html.starts_with("<html><body><div style="), "{html}");
        assert!(html.ends_with("</div>\r\nhi</body></html>"), "{html}");
    }
}

#[cfg(test)]
mod lenient_tests {
    use super::*;

    fn media(ct: &str) -> Result<MediaType, Broken> {
        let raw = format!("Content-Type: {ct}\r\n\r\n");
        let e = parse_entity(raw.as_bytes(), 0, raw.len())?;
        parse_media_type(raw.as_bytes(), &e.fields[0])
    }

    #[test]
    fn content_type_reads_like_mail_readers() {
        let m = media("text/html;iso-8859-1").unwrap();
        assert_eq!((m.mtype.as_str(), m.subtype.as_str()), ("text", "html"));
        assert!(m.params.is_empty());
        let m = media("text/html;\r\n\tcharset=\"iso-8859-2").unwrap();
        let p = m.param("charset").unwrap().unwrap();
        assert_eq!(
            (p.value.as_slice(), p.unterminated),
            (&b"iso-8859-2"[..], true)
        );
        let m = media("multipart/mixed; boundary=\"=_a\";iso-8859-1").unwrap();
        assert_eq!(m.param("boundary").unwrap().unwrap().value, b"=_a");
        assert!(!m.skipped_boundary);
        let m = media("multipart/mixed; x boundary=\"a\"; boundary=\"b\"").unwrap();
        assert!(m.skipped_boundary);
        let m = media("multipart/mixed; boundary=----=_Part_1 (comment)").unwrap();
        assert_eq!(m.param("boundary").unwrap().unwrap().value, b"----=_Part_1");
        assert!(
            media("multipart/mixed; boundary=a; BOUNDARY=b")
                .unwrap()
                .param("boundary")
                .is_err()
        );
        assert!(media("text").is_err());
    }
}
