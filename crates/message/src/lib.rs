//! Raw message bytes -> header fields as they stand on the wire.
//!
//! This splitter never fails and never normalises: the header-ambiguity checks need to see
//! ` From:`, `From :` and folded names exactly as an attacker wrote them, and the DKIM and
//! ARC verifiers in mail-auth parse the same bytes again on their own terms.
//!
//! [`auth_results`] reads whose results an Authentication-Results field claims (RFC 8601), for
//! every front door.

pub mod address;
pub mod auth_results;
pub mod codec;
pub mod date;
pub mod mailbox;

/// One header field: its name and its value exactly as in the message (value still folded,
/// without the final line ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader<'a> {
    /// The bytes before the first `:`, untrimmed (RFC 5322 2.2 forbids whitespace there, so a
    /// name with whitespace is itself a finding).
    pub name: &'a [u8],
    /// The bytes after the first `:` up to the end of the field, folding kept.
    pub value: &'a [u8],
    /// Offset of the field's first byte in the message.
    pub offset: usize,
}

impl RawHeader<'_> {
    /// The name with surrounding whitespace removed, for lookups.
    pub fn name_trimmed(&self) -> &[u8] {
        self.name.trim_ascii()
    }

    /// True when the trimmed name equals `name` case-insensitively.
    #[inline]
    pub fn is(&self, name: &str) -> bool {
        let want = name.as_bytes();
        let n = self.name;
        // Trimming only shortens a name: one shorter than `want` never matches, one of the same
        // length matches only as it stands (without surrounding whitespace). Most lookups end
        // here, at the length or the first byte, without trimming.
        if n.len() == want.len() {
            return n.eq_ignore_ascii_case(want)
                && !n.first().is_some_and(u8::is_ascii_whitespace)
                && !n.last().is_some_and(u8::is_ascii_whitespace);
        }
        // A longer name matches only with whitespace around it.
        n.len() > want.len()
            && (n.first().is_some_and(u8::is_ascii_whitespace)
                || n.last().is_some_and(u8::is_ascii_whitespace))
            && self.is_trimmed(want)
    }

    /// [`RawHeader::is`] for a name longer than `want` with whitespace around it.
    #[cold]
    fn is_trimmed(&self, want: &[u8]) -> bool {
        self.name.trim_ascii().eq_ignore_ascii_case(want)
    }

    /// The value unfolded (CRLF/LF followed by WSP removed, RFC 5322 2.2.3) and trimmed, with
    /// invalid UTF-8 replaced.
    pub fn value_unfolded(&self) -> String {
        unfold(self.value)
    }

    /// The offset in `raw` (the message this field was parsed from) just after the line ending
    /// that closes the field: `raw[self.offset..self.end(raw)]` is the whole field.
    pub fn end(&self, raw: &[u8]) -> usize {
        let at = (self.value.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
        debug_assert!(at <= raw.len(), "field of another message");
        let end = (at + self.value.len()).min(raw.len());
        if raw[end..].starts_with(b"\r\n") {
            end + 2
        } else if raw[end..].starts_with(b"\n") {
            end + 1
        } else {
            end
        }
    }
}

/// Unfolds a header value (RFC 5322 2.2.3) and trims it: every CR and LF removed (a CRLF pair
/// and a lone CR or LF alike), surrounding ASCII whitespace trimmed, invalid UTF-8 replaced.
pub fn unfold(value: &[u8]) -> String {
    let value = value.trim_ascii_start();
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = memchr::memchr2(b'\r', b'\n', rest) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    // Trailing whitespace, and leading whitespace that a line break hid from the first trim.
    let end = out.trim_ascii_end().len();
    out.truncate(end);
    let start = out.len() - out.trim_ascii_start().len();
    out.drain(..start);
    match String::from_utf8(out) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The header section of a message, split into fields.
#[derive(Debug, Clone, Default)]
pub struct Headers<'a> {
    pub fields: Vec<RawHeader<'a>>,
    /// Offset of the first body byte (after the blank line), or the message length when there is
    /// no body.
    pub body_offset: usize,
    /// Lines in the header section that are neither a field nor a continuation (RFC 5322 says
    /// they cannot occur; some parsers treat them as the start of the body, others skip them).
    pub stray_lines: Vec<usize>,
}

impl<'a> Headers<'a> {
    /// Splits the header section. Accepts CRLF, bare LF and mixed line endings.
    pub fn parse(raw: &'a [u8]) -> Self {
        let mut fields: Vec<RawHeader<'a>> = Vec::new();
        let mut stray_lines = Vec::new();
        let mut pos = 0;
        // An mbox "From " separator line may precede the headers; it is not a header field.
        if is_mbox(raw) {
            pos = line_end(raw, 0).1;
        }
        let mut current: Option<(usize, usize, usize)> = None; // (start, colon, end)
        let body_offset = loop {
            if pos >= raw.len() {
                break raw.len();
            }
            let (content_end, next) = line_end(raw, pos);
            let line = &raw[pos..content_end];
            if line.is_empty() {
                break next;
            }
            if matches!(line[0], b' ' | b'\t') {
                // Continuation of the previous field; a continuation before any field is stray.
                match current.as_mut() {
                    Some(cur) => cur.2 = content_end,
                    None => stray_lines.push(pos),
                }
            } else if let Some(colon) = memchr(b':', line).filter(|&c| c > 0) {
                // A colon first is no field: RFC 5322 2.2 names have at least one character.
                if let Some((s, c, e)) = current.take() {
                    fields.push(field(raw, s, c, e));
                }
                current = Some((pos, pos + colon, content_end));
            } else {
                if let Some((s, c, e)) = current.take() {
                    fields.push(field(raw, s, c, e));
                }
                stray_lines.push(pos);
            }
            pos = next;
        };
        if let Some((s, c, e)) = current.take() {
            fields.push(field(raw, s, c, e));
        }
        Headers {
            fields,
            body_offset,
            stray_lines,
        }
    }

    /// Every field whose trimmed name is `name` (case-insensitive), in message order.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s RawHeader<'a>> + 's
    where
        'a: 's,
    {
        self.fields.iter().filter(move |h| h.is(name))
    }

    /// The first field named `name`.
    pub fn first(&self, name: &str) -> Option<&RawHeader<'a>> {
        self.fields.iter().find(|h| h.is(name))
    }

    /// Whether the header section is malformed: it holds lines that are neither a field nor a
    /// continuation ([`Headers::stray_lines`], the first line among them when it is a lone space,
    /// a tab, a word without a colon or an encoded word), or no field at all before the body.
    /// Parsers disagree about such a section (mail-auth stops at the first stray line, or
    /// refuses a section that starts with one), so every check must read it the same way.
    pub fn is_malformed(&self) -> bool {
        !self.stray_lines.is_empty() || self.fields.is_empty()
    }

    /// The message with its header section rebuilt from the fields alone (stray lines left out,
    /// everything else byte for byte), for the verifiers that refuse or misread a malformed
    /// section; `None` when the section is well formed (nothing to repair). `raw` is the
    /// message these headers were parsed from.
    pub fn repaired(&self, raw: &[u8]) -> Option<Vec<u8>> {
        if !self.is_malformed() {
            return None;
        }
        let body = raw.get(self.body_offset..).unwrap_or_default();
        let mut out = Vec::with_capacity(raw.len());
        for f in &self.fields {
            out.extend_from_slice(&raw[f.offset..f.end(raw)]);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        Some(out)
    }
}

fn field(raw: &[u8], start: usize, colon: usize, end: usize) -> RawHeader<'_> {
    RawHeader {
        name: &raw[start..colon],
        value: &raw[colon + 1..end],
        offset: start,
    }
}

/// Returns (end of line content, start of next line) for the line starting at `pos`.
fn line_end(raw: &[u8], pos: usize) -> (usize, usize) {
    match memchr(b'\n', &raw[pos..]) {
        Some(i) => {
            let nl = pos + i;
            let end = if nl > pos && raw[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            (end, nl + 1)
        }
        None => (raw.len(), raw.len()),
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// Converts bare LF line endings to CRLF (RFC 5322 2.1), leaving existing CRLF alone. DKIM
/// canonicalisation is defined on CRLF lines, so a message saved with Unix line endings must be
/// restored before verification.
pub fn to_crlf(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // memchr keeps the common case (already CRLF) a fast scan: this runs on every message.
    let bare = |i: usize| i == 0 || raw[i - 1] != b'\r';
    if !memchr::memchr_iter(b'\n', raw).any(bare) {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', raw) {
        out.extend_from_slice(&raw[start..i]);
        if bare(i) {
            out.push(b'\r');
        }
        out.push(b'\n');
        start = i + 1;
    }
    out.extend_from_slice(&raw[start..]);
    std::borrow::Cow::Owned(out)
}

/// An mbox starts with a `From ` separator line (not a `From:` header): `From sender date`,
/// whose date holds a time (`15:33:27`). A `From x` line without one is not a postmark but a
/// malformed first header line (what a forger writes to make mail-auth refuse the section).
pub fn is_mbox(raw: &[u8]) -> bool {
    if !raw.starts_with(b"From ") || matches!(raw.get(5), Some(b':' | b' ' | b'\t')) {
        return false;
    }
    let line = &raw[..memchr(b'\n', raw).unwrap_or(raw.len())];
    line.windows(4).any(|w| {
        w[0].is_ascii_digit() && w[1] == b':' && w[2].is_ascii_digit() && w[3].is_ascii_digit()
    })
}

/// Splits an mbox (mboxrd or mboxo) into messages, dropping each `From ` separator and undoing
/// `>From ` quoting.
pub fn split_mbox(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut prev_blank = true;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") && prev_blank {
            if let Some(m) = current.take() {
                messages.push(trim_separator_blank(m));
            }
            current = Some(Vec::new());
            prev_blank = false;
            continue;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        prev_blank = body.is_empty() || body == b"\r";
        let Some(m) = current.as_mut() else { continue };
        // mboxrd: ">From " -> "From ", ">>From " -> ">From ".
        let unquoted = match line.iter().position(|&b| b != b'>') {
            Some(n) if n > 0 && line[n..].starts_with(b"From ") => &line[1..],
            _ => line,
        };
        m.extend_from_slice(unquoted);
    }
    if let Some(m) = current {
        messages.push(trim_separator_blank(m));
    }
    messages
}

/// The blank line before the next `From ` belongs to the mbox format, not to the message.
fn trim_separator_blank(mut m: Vec<u8>) -> Vec<u8> {
    if m.ends_with(b"\r\n\r\n") {
        m.truncate(m.len() - 2);
    } else if m.ends_with(b"\n\n") {
        m.truncate(m.len() - 1);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_folded_fields_and_finds_body() {
        let raw = b"From: a@b.example\r\nSubject: one\r\n two\r\n\r\nbody\r\n";
        let h = Headers::parse(raw);
        assert_eq!(h.fields.len(), 2);
        assert_eq!(h.fields[1].value_unfolded(), "one two");
        assert_eq!(&raw[h.body_offset..], b"body\r\n");
    }

    #[test]
    fn unfolds_and_trims() {
        assert_eq!(unfold(b" a\r\n\tb \r\n"), "a\tb");
        assert_eq!(unfold(b"\r\n a\rb\nc\r\r\n"), "abc");
        assert_eq!(unfold(b"\r\n\r\n \r \n"), "");
        assert_eq!(unfold(b" \xff x \xc3"), "\u{fffd} x \u{fffd}");
        assert_eq!(unfold(b""), "");
    }

    #[test]
    fn is_compares_the_trimmed_name() {
        let field = |name: &'static [u8]| RawHeader {
            name,
            value: b"",
            offset: 0,
        };
        for name in [
            &b"From"[..],
            b"from",
            b"FROM",
            b"From ",
            b" From",
            b"\tFROM\r\n",
            b"  from  ",
        ] {
            assert!(field(name).is("From"), "{name:?}");
            assert_eq!(
                field(name).is("From"),
                field(name).name.trim_ascii().eq_ignore_ascii_case(b"From")
            );
        }
        for name in [
            &b"Fro"[..],
            b"Fromm",
            b"XFrom",
            b"Fr om",
            b"",
            b"  ",
            b"\x0bFrom",
        ] {
            assert!(!field(name).is("From"), "{name:?}");
        }
        assert!(field(b"").is(""));
        assert!(field(b" \t").is(""));
        assert!(!field(b"x").is(""));
    }

    #[test]
    fn keeps_odd_names_verbatim() {
        let raw = b"From : x@y.example\n From: z@w.example\nTo: t@u.example\n\n";
        let h = Headers::parse(raw);
        // " From:" after a field is a continuation line (RFC 5322 2.2.3), so it folds into the
        // first From: that is what most parsers do, and why the ambiguity check must look here.
        assert_eq!(h.fields.len(), 2);
        assert_eq!(h.fields[0].name, b"From ");
        assert!(h.fields[0].is("from"));
    }

    #[test]
    fn lf_to_crlf() {
        assert_eq!(&*to_crlf(b"a\nb\r\n"), b"a\r\nb\r\n");
        assert!(matches!(to_crlf(b"a\r\n"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn splits_mbox_and_unquotes() {
        let mbox = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\n>From here\n\nFrom c@d Tue Jan  2 00:00:00 2024\nSubject: two\n\nbody\n";
        let msgs = split_mbox(mbox);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0], b"Subject: one\n\nFrom here\n");
        assert_eq!(msgs[1], b"Subject: two\n\nbody\n");
        assert!(is_mbox(mbox));
        assert!(!is_mbox(b"From: a@b\n"));
        assert!(!is_mbox(
            b"From joe@example.com\r\nFrom: joe@example.com\r\n"
        ));
        assert!(is_mbox(b"From jp@insiq.us  Thu Sep 12 00:05:40 2002\n"));
    }
}
