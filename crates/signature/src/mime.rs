//! Just enough MIME to find a signature and the exact bytes it covers.
//!
//! A signature covers bytes, not a parsed tree: RFC 3156 and RFC 8551 sign the first body part
//! of `multipart/signed` exactly as transmitted, from the CRLF after the first boundary line to
//! the CRLF before the next one (that CRLF belongs to the boundary). A general MIME parser
//! decodes and re-folds, so the part is cut out of the raw message here instead. Content
//! transfer encodings are undone by the message layer's codec (one copy for every crate).

use unspoof_message::codec;

/// A header field's value, unfolded, and its parameters.
#[derive(Debug, Default)]
pub(crate) struct ContentType {
    /// `type/subtype`, lower case.
    pub mime: String,
    /// Parameter names lower case, values as written (quotes removed).
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn parse(value: &str) -> ContentType {
        let mut parts = split_params(value).into_iter();
        let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (n, v) = p.split_once('=')?;
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_else(|| v.to_string());
                Some((n.trim().to_ascii_lowercase(), v))
            })
            .collect();
        ContentType { mime, params }
    }
}

/// Splits at `;` outside quoted strings and comments are dropped.
fn split_params(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let (mut quoted, mut escaped, mut depth) = (false, false, 0u32);
    for c in value.chars() {
        let cur = out.last_mut().expect("never empty");
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                cur.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            ';' if !quoted => out.push(String::new()),
            _ => cur.push(c),
        }
    }
    out
}

/// The header fields this crate reads; an entity keeps only these (a message's other fields,
/// DKIM signatures and all, are not copied for a signature check that never looks at them).
const READ_FIELDS: [&str; 3] = ["content-type", "content-transfer-encoding", "autocrypt"];

/// One entity: its header fields that this crate reads ([`READ_FIELDS`]: name lower case,
/// value unfolded) and its body bytes.
pub(crate) struct Entity<'a> {
    pub fields: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl<'a> Entity<'a> {
    /// Splits an entity at the empty line; the body of an entity without one is empty.
    pub fn parse(raw: &'a [u8]) -> Entity<'a> {
        let (head, body) = match find(raw, b"\r\n\r\n") {
            Some(i) => (&raw[..i + 2], &raw[i + 4..]),
            None if raw.starts_with(b"\r\n") => (&raw[..0], &raw[2..]),
            None => (raw, &raw[raw.len()..]),
        };
        let mut fields: Vec<(String, String)> = Vec::new();
        // Whether the last field line was one of READ_FIELDS (its continuation lines are).
        let mut kept = false;
        let mut rest = head;
        while !rest.is_empty() {
            let line = match memchr::memchr(b'\n', rest) {
                Some(end) => {
                    let line = &rest[..end];
                    rest = &rest[end + 1..];
                    line
                }
                None => std::mem::take(&mut rest),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                if kept && let Some(last) = fields.last_mut() {
                    last.1.push_str(&String::from_utf8_lossy(line));
                }
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let name = String::from_utf8_lossy(&line[..colon]);
            let name = name.trim();
            kept = READ_FIELDS.iter().any(|f| name.eq_ignore_ascii_case(f));
            if kept {
                let value = String::from_utf8_lossy(&line[colon + 1..]);
                fields.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        Entity { fields, body }
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn fields_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> ContentType {
        self.field("content-type")
            .map(ContentType::parse)
            .unwrap_or_else(|| ContentType {
                mime: "text/plain".into(),
                params: Vec::new(),
            })
    }

    /// The body with its Content-Transfer-Encoding undone (base64, quoted-printable; others as
    /// they are). `None` when the encoding is broken.
    pub fn decoded_body(&self) -> Option<Vec<u8>> {
        let cte = self
            .field("content-transfer-encoding")
            .unwrap_or("7bit")
            .trim()
            .to_ascii_lowercase();
        match cte.as_str() {
            "base64" => codec::base64_decode(self.body),
            "quoted-printable" => Some(codec::qp_decode(self.body)),
            _ => Some(self.body.to_vec()),
        }
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The body parts of a multipart body, each exactly as written (without the CRLF that belongs
/// to the following delimiter). `None` when the closing delimiter or any part is missing.
pub(crate) fn parts<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<&'a [u8]>> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    // Delimiter lines: at the start of the body or after a CRLF.
    let mut starts = Vec::new(); // (offset of the CRLF before, or 0 at start; offset after line)
    let mut closed = false;
    let mut pos = 0;
    while pos <= body.len() {
        let at_line = pos == 0 || body[..pos].ends_with(b"\r\n");
        if at_line && body[pos..].starts_with(delim) {
            let rest = &body[pos + delim.len()..];
            let line_end = find(rest, b"\r\n").map(|i| pos + delim.len() + i + 2);
            let close = rest.starts_with(b"--");
            let before = if pos == 0 { 0 } else { pos - 2 };
            starts.push((before, line_end.unwrap_or(body.len())));
            if close {
                closed = true;
                break;
            }
            pos = line_end.unwrap_or(body.len());
            continue;
        }
        match find(&body[pos..], b"\r\n") {
            Some(i) => pos += i + 2,
            None => break,
        }
    }
    if !closed || starts.len() < 2 {
        return None;
    }
    Some(
        starts
            .windows(2)
            .map(|w| &body[w[0].1.min(w[1].0)..w[1].0])
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_cut_exactly() {
        let body =
            b"preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n\r\n--b\r\nsig\r\n--b--\r\n";
        let p = parts(body, "b").unwrap();
        assert_eq!(p[0], b"Content-Type: text/plain\r\n\r\nhi\r\n");
        assert_eq!(p[1], b"sig");
        assert!(
            parts(b"--b\r\nx\r\n", "b").is_none(),
            "no closing delimiter"
        );
    }

    #[test]
    fn an_entity_keeps_the_fields_it_reads_with_their_folds() {
        let e = Entity::parse(
            b"DKIM-Signature: v=1;\r\n\tb=abc\r\nContent-Type : multipart/mixed;\r\n boundary=x\r\n\
              Subject: s\r\n signed\r\nAutocrypt: a=1\r\nautocrypt: a=2\r\n\r\nbody",
        );
        assert_eq!(e.field("content-type"), Some("multipart/mixed; boundary=x"));
        assert_eq!(
            e.fields_named("autocrypt").collect::<Vec<_>>(),
            ["a=1", "a=2"]
        );
        // Fields no caller reads are not kept, nor are their continuation lines.
        assert_eq!(e.field("dkim-signature"), None);
        assert_eq!(e.fields.len(), 3);
        assert_eq!(e.body, b"body");
    }

    #[test]
    fn content_type_params() {
        let ct = ContentType::parse(
            "multipart/signed; micalg=pgp-sha256;\t protocol=\"application/pgp-signature\"; boundary=\"a;b\" (c)",
        );
        assert_eq!(ct.mime, "multipart/signed");
        assert_eq!(ct.param("protocol"), Some("application/pgp-signature"));
        assert_eq!(ct.param("boundary"), Some("a;b"));
    }

    #[test]
    fn transfer_encodings_are_undone_strictly() {
        let body = |cte: &str, body: &str| {
            let raw = format!("Content-Transfer-Encoding: {cte}\r\n\r\n{body}");
            Entity::parse(raw.as_bytes()).decoded_body()
        };
        assert_eq!(body("base64", "aGVs\r\nbG8=").unwrap(), b"hello");
        assert_eq!(body("7bit", "as is=").unwrap(), b"as is=");
        // A signature blob with bytes after its padding or outside the alphabet is broken
        // (reported unverifiable), not read up to the first oddity.
        assert!(body("base64", "aGVsbG8=QUJD").is_none());
        assert!(body("base64", "a$b").is_none());
        assert_eq!(
            body("quoted-printable", "caf=C3=A9 =\r\nsoft  \r\nhard").unwrap(),
            "caf\u{e9} soft\r\nhard".as_bytes()
        );
    }
}
