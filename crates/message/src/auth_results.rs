//! Whose results an `Authentication-Results` field claims to be: the RFC 8601 authserv-id, read
//! by the grammar, and the fields a border MTA removes because they claim to be ours.
//!
//! Every front door uses this one reader (the gateway before it relays, the milter through
//! header edits, the engine's `trust.*` findings), so a forged field that one of them would
//! miss cannot exist: RFC 8601 5 says a border MTA MUST remove results that claim its
//! authserv-id, and a reader that takes "the first word" misses `(x) mx.example;`,
//! `mx.example(x);`, `"mx.example";`, `mx.example.;` and the id folded onto the next line.
//!
//! The grammar (RFC 8601 2.2, RFC 2045 5.1, RFC 5322 3.2.2):
//!
//! ```text
//! authres-payload = [CFWS] authserv-id [ CFWS authres-version ] ( no-result / 1*resinfo ) [CFWS]
//! authserv-id     = value = token / quoted-string
//! authres-version = 1*DIGIT [CFWS]
//! no-result       = [CFWS] ";" [CFWS] "none"
//! token           = 1*<any CHAR except SPACE, CTLs and ( ) < > @ , ; : \ " / [ ] ? =>
//! CFWS            = comments (nested, with quoted-pairs) and folding white space
//! aar-payload     = [CFWS] "i" [CFWS] "=" [CFWS] 1*DIGIT [CFWS] ";" authres-payload  (RFC 8617 4.1.2)
//! ```
//!
//! Ids are compared case-insensitively (RFC 8601 2.5), without a trailing dot (the same name
//! as a DNS FQDN), and a U-label form of an IDN equals its A-label form. UTF-8 in a token is
//! accepted (RFC 6532 3.2 allows it in header fields).
//!
//! **Fail closed.** A value the grammar cannot read (an unclosed comment or quote, no id, text
//! that is neither a version nor `;` after the id) is read by other software in other ways; it
//! counts as claiming an id when that id appears as a word anywhere before its first `;`. Such a
//! field with our id is removed: no legitimate field of another ADMD names us there.

use super::{Headers, RawHeader};

/// The name of our verdict header field (written by the engine's `tag`, removed here).
pub const VERDICT_HEADER: &str = "X-Unspoof-Verdict";

/// The name of the field RFC 8601 defines.
pub const AUTHENTICATION_RESULTS: &str = "Authentication-Results";

/// The ARC copy of it (RFC 8617 4.1.2).
pub const ARC_AUTHENTICATION_RESULTS: &str = "ARC-Authentication-Results";

/// How a value was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthservId {
    /// The grammar read the whole payload's start: this id (normalised, see [`normalize`]).
    Id(String),
    /// The value does not follow the grammar; a lenient reader may take any of these words
    /// (normalised) as the id. Empty when nothing before the first `;` looks like one.
    Malformed(Vec<String>),
}

impl AuthservId {
    /// Does the field claim `ours` (any spelling of it)?
    pub fn is(&self, ours: &str) -> bool {
        let ours = normalize(ours);
        if ours.is_empty() {
            return false;
        }
        match self {
            AuthservId::Id(id) => *id == ours,
            AuthservId::Malformed(words) => words.contains(&ours),
        }
    }

    /// The id the grammar read, if it could.
    pub fn id(&self) -> Option<&str> {
        match self {
            AuthservId::Id(id) => Some(id),
            AuthservId::Malformed(_) => None,
        }
    }
}

/// The authserv-id of an `Authentication-Results` value (what follows the colon, folding and
/// all).
pub fn authserv_id(value: &[u8]) -> AuthservId {
    let mut r = Reader { s: value, i: 0 };
    match r.payload_id() {
        // A quoted id with spaces in it is a name no host has, and word-splitting readers take
        // its words apart.
        Some(id)
            if !id
                .iter()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) =>
        {
            AuthservId::Id(normalize_bytes(&id))
        }
        _ => AuthservId::Malformed(lenient_words(value)),
    }
}

/// The authserv-id of an `ARC-Authentication-Results` value: the same payload after `i=N;`.
pub fn arc_authserv_id(value: &[u8]) -> AuthservId {
    let mut r = Reader { s: value, i: 0 };
    if r.instance().is_some() {
        let rest = &value[r.i..];
        return authserv_id(rest);
    }
    // Without a readable instance tag: the words after the first `;` (where the id would be).
    let after = match memchr::memchr(b';', value) {
        Some(p) => &value[p + 1..],
        None => value,
    };
    AuthservId::Malformed(lenient_words(after))
}

/// Does this `Authentication-Results` value claim `ours`?
pub fn claims(value: &[u8], ours: &str) -> bool {
    authserv_id(value).is(ours)
}

/// An authserv-id in the form ids are compared in: unfolded and trimmed, lower case, no
/// trailing dot, an internationalised name as its A-labels.
pub fn normalize(id: &str) -> String {
    normalize_bytes(id.as_bytes())
}

fn normalize_bytes(id: &[u8]) -> String {
    let text = String::from_utf8_lossy(id);
    let text = text.trim().trim_end_matches('.');
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    match idna::domain_to_ascii(text) {
        Ok(a) if !a.is_empty() => a,
        _ => text.to_lowercase(),
    }
}

/// Is this top-level field one a border MTA removes before delivery? An
/// `Authentication-Results` that claims `authserv_id` (RFC 8601 5), and every
/// `X-Unspoof-Verdict`, which only we may write.
pub fn is_forged(field: &RawHeader<'_>, authserv_id: &str) -> bool {
    if field.is(VERDICT_HEADER) {
        return true;
    }
    field.is(AUTHENTICATION_RESULTS) && claims(field.value, authserv_id)
}

/// Removes the fields of [`is_forged`] from the message, in place (the rest byte for byte, no
/// second copy of a large message); returns how many were removed. Only the top-level header
/// section is looked at.
pub fn remove_forged(raw: &mut Vec<u8>, authserv_id: &str) -> usize {
    let spans: Vec<(usize, usize)> = {
        let headers = Headers::parse(raw);
        headers
            .fields
            .iter()
            .filter(|f| is_forged(f, authserv_id))
            .map(|f| (f.offset, f.end(raw)))
            .collect()
    };
    let Some(&(first, _)) = spans.first() else {
        return 0;
    };
    // Fields come in order and do not overlap: move each stretch between them down once.
    let mut write = first;
    for (i, &(_, end)) in spans.iter().enumerate() {
        let next = spans.get(i + 1).map_or(raw.len(), |s| s.0);
        raw.copy_within(end..next, write);
        write += next - end;
    }
    raw.truncate(write);
    spans.len()
}

/// RFC 2045 5.1 tspecials.
fn is_tspecial(b: u8) -> bool {
    b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// A token byte: any CHAR but SPACE, CTLs and tspecials, plus UTF-8 (RFC 6532).
fn is_token(b: u8) -> bool {
    (b > 0x20 && b != 0x7f && !is_tspecial(b)) || b >= 0x80
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips folding white space and comments. `None`: a comment never closes.
    fn cfws(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.i += 1,
                Some(b'(') => self.comment()?,
                _ => return Some(()),
            }
        }
    }

    /// A comment with nested comments and quoted-pairs (RFC 5322 3.2.2); counted, not recursed.
    fn comment(&mut self) -> Option<()> {
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'\\' => self.i += 1,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(());
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// A quoted-string's content with quoted-pairs resolved and folds removed.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => return Some(out),
                b'\\' => {
                    out.push(self.peek()?);
                    self.i += 1;
                }
                b'\r' | b'\n' => {}
                _ => out.push(b),
            }
        }
        None
    }

    fn token(&mut self) -> Option<Vec<u8>> {
        let start = self.i;
        while self.peek().is_some_and(is_token) {
            self.i += 1;
        }
        (self.i > start).then(|| self.s[start..self.i].to_vec())
    }

    /// `[CFWS] authserv-id [CFWS [version] [CFWS]]` then `;` or the end (`none` follows `;`).
    /// `None` when any of it does not follow the grammar.
    fn payload_id(&mut self) -> Option<Vec<u8>> {
        self.cfws()?;
        let id = match self.peek()? {
            b'"' => self.quoted()?,
            _ => self.token()?,
        };
        if id.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        self.cfws()?;
        if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.i += 1;
            }
            self.cfws()?;
        }
        match self.peek() {
            Some(b';') | None => Some(id),
            _ => None,
        }
    }

    /// `[CFWS] "i" [CFWS] "=" [CFWS] 1*DIGIT [CFWS] ";"`; leaves the reader after the `;`.
    fn instance(&mut self) -> Option<()> {
        self.cfws()?;
        if !matches!(self.peek()?, b'i' | b'I') {
            return None;
        }
        self.i += 1;
        self.cfws()?;
        (self.peek()? == b'=').then_some(())?;
        self.i += 1;
        self.cfws()?;
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        (self.i > start).then_some(())?;
        self.cfws()?;
        (self.peek()? == b';').then_some(())?;
        self.i += 1;
        Some(())
    }
}

/// What a lenient reader might take as the id of a value the grammar cannot read: every run
/// of token bytes before the first `;` (inside comments and quotes too), normalised.
fn lenient_words(value: &[u8]) -> Vec<String> {
    let head = match memchr::memchr(b';', value) {
        Some(p) => &value[..p],
        None => value,
    };
    head.split(|&b| !is_token(b))
        .filter(|w| !w.is_empty())
        .map(normalize_bytes)
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(v: &str) -> AuthservId {
        authserv_id(v.as_bytes())
    }

    #[test]
    fn every_form_rfc_8601_allows_reads_the_id() {
        for v in [
            " mx.example; dmarc=pass",
            "mx.example;dmarc=pass",
            " (x) mx.example; dmarc=pass",
            " mx.example(x); dmarc=pass",
            " mx.example (x) ; dmarc=pass",
            "\r\n mx.example; dmarc=pass",
            " (a (nested \\) comment)\r\n\tb) mx.example\r\n ; dmarc=pass",
            " \"mx.example\"; dmarc=pass",
            " \"mx.ex\\ample\"; dmarc=pass",
            " (c)\"mx.example\"(d); dmarc=pass",
            " mx.example.; dmarc=pass",
            " MX.Example; dmarc=pass",
            " mx.example 1; dmarc=pass",
            " mx.example 1 (v); dmarc=pass",
            " mx.example; none",
            " mx.example",
        ] {
            assert_eq!(id(v), AuthservId::Id("mx.example".into()), "{v:?}");
            assert!(claims(v.as_bytes(), "MX.example."), "{v:?}");
        }
    }

    #[test]
    fn other_ids_are_not_ours() {
        for v in [
            " other.example; dmarc=pass (mx.example)",
            " mx.example.evil; dmarc=pass",
            " xmx.example; spf=pass smtp.mailfrom=mx.example",
        ] {
            assert!(!claims(v.as_bytes(), "mx.example"), "{v:?}");
        }
        assert!(!claims(b" mx.example; x", ""));
    }

    #[test]
    fn malformed_values_fail_closed() {
        for v in [
            " (unclosed mx.example; dmarc=pass",
            " \"mx.example; dmarc=pass",
            " other mx.example; dmarc=pass",
            " ; mx.example",
            " (mx.example) ; dmarc=pass",
            " mx.example/x; dmarc=pass",
            " \"mx.example x\"; dmarc=pass",
        ] {
            let read = id(v);
            assert!(read.id().is_none(), "{v:?}: {read:?}");
            if v != " ; mx.example" {
                assert!(read.is("mx.example"), "{v:?}: {read:?}");
            }
        }
        // After the first `;` a name is a property value, never the id.
        assert!(!id(" ; mx.example").is("mx.example"));
        assert_eq!(id(""), AuthservId::Malformed(vec![]));
    }

    #[test]
    fn idn_forms_are_one_name() {
        assert!(claims(
            " mx.b\u{fc}cher.example; none".as_bytes(),
            "mx.xn--bcher-kva.example"
        ));
        assert!(claims(
            b" MX.XN--BCHER-KVA.example; none",
            "mx.b\u{fc}cher.example"
        ));
    }

    #[test]
    fn arc_results_after_the_instance() {
        let a = |v: &str| arc_authserv_id(v.as_bytes());
        assert_eq!(a(" i=1; mx.example; dmarc=pass").id(), Some("mx.example"));
        assert_eq!(
            a(" i = 2 (c) ;\r\n (x) \"MX.example.\" 1; spf=pass").id(),
            Some("mx.example")
        );
        assert!(a(" i=x; mx.example; dmarc=pass").is("mx.example"));
        assert!(!a(" i=1; other.example; dmarc=pass").is("mx.example"));
    }

    #[test]
    fn removes_forged_fields_only_from_the_header() {
        let m = b"Authentication-Results: (x) mx.example;\r\n dmarc=pass\r\n\
Authentication-Results: other.example; spf=pass\r\n\
authentication-results :\r\n\tMX.EXAMPLE.; dkim=pass\r\n\
X-Unspoof-Verdict: accept\r\nSubject: x\r\n\r\n\
Authentication-Results: mx.example; body stays\r\nX-Unspoof-Verdict: body\r\n";
        let mut out = m.to_vec();
        assert_eq!(remove_forged(&mut out, "mx.example"), 3);
        assert_eq!(
            &out[..],
            b"Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n\r\n\
Authentication-Results: mx.example; body stays\r\nX-Unspoof-Verdict: body\r\n"
        );
        let mut clean = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        assert_eq!(remove_forged(&mut clean, "mx.example"), 0);
        assert_eq!(clean, b"Subject: x\r\n\r\nbody\r\n");
        // The last field of a section without a blank line, and LF line ends.
        let mut lf = b"Subject: x\nAuthentication-Results: mx.example; none".to_vec();
        remove_forged(&mut lf, "mx.example");
        assert_eq!(lf, b"Subject: x\n");
    }
}
