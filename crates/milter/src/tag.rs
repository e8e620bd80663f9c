//! Marking a tagged message for its readers: the subject prefix and the banner on top of the
//! body, as milter edits (the MTA rewrites its own copy; we only say what changes).
//!
//! This is the milter's own small tagger until the engine's `tag` module is the one place that
//! knows how a tagged message looks; then [`subject`] and [`banner`] become calls into it.
//!
//! The banner is plain ASCII, so it can go in front of any text body that is not base64:
//! - `text/plain` (or no Content-Type): banner lines, a rule, then the original text;
//! - `text/html`: a `<div>` right after `<body ...>` (or at the top);
//! - anything else (multipart, base64, other types): the message becomes `multipart/mixed`
//!   with the banner as its first part and the original entity, unchanged, as its second.

use unspoof_engine::Analysis;

use crate::message::Field;

/// The first field called `name`, with its position among fields of that name (always 1).
fn first<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// The new Subject value (after the colon, leading space included), or `None` when the
/// prefix is empty or already there.
pub fn subject(fields: &[Field], prefix: &str) -> Option<String> {
    let prefix = prefix.trim();
    if prefix.is_empty() {
        return None;
    }
    match first(fields, "Subject") {
        Some(f) if f.unfolded().starts_with(prefix) => None,
        Some(f) => {
            let rest = f.value.trim_start_matches([' ', '\t']);
            Some(format!(" {prefix} {rest}"))
        }
        None => Some(format!(" {prefix}")),
    }
}

/// The banner's lines: printable ASCII, at most 74 characters each, no `=` (so the lines are
/// valid quoted-printable as they are).
pub fn banner_lines(analysis: &Analysis) -> Vec<String> {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                '=' => '-',
                ' '..='~' => c,
                c if c.is_whitespace() => ' ',
                _ => '?',
            })
            .collect()
    };
    let mut lines = vec!["*** unspoof: be careful with this message ***".to_string()];
    for r in analysis
        .verdict
        .reasons
        .iter()
        .filter(|r| r.action > unspoof_engine::Action::Accept)
        .take(4)
    {
        let text = clean(&format!("{} [{}]", r.message, r.code));
        let mut line = String::from("-");
        for word in text.split_whitespace() {
            let word: String = word.chars().take(70).collect();
            if line.len() + 1 + word.len() > 74 {
                lines.push(std::mem::replace(&mut line, String::from(" ")));
            }
            line.push(' ');
            line.push_str(&word);
        }
        lines.push(line);
    }
    lines.push("*** end of warning ***".to_string());
    lines
}

/// The body with the banner, and the header fields that must change with it.
#[derive(Debug, PartialEq, Eq)]
pub struct BodyEdit {
    pub body: Vec<u8>,
    /// (name, new value after the colon) to set on the first field of that name, or add;
    /// `None` deletes the first field of that name.
    pub headers: Vec<(&'static str, Option<String>)>,
}

/// `name` lower-cased media type and encoding of the top-level entity.
fn content(fields: &[Field]) -> (String, String) {
    let media = first(fields, "Content-Type")
        .map(|f| {
            let v = f.unfolded();
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let cte = first(fields, "Content-Transfer-Encoding")
        .map(|f| f.unfolded().to_ascii_lowercase())
        .unwrap_or_default();
    (media, cte)
}

/// The body with `lines` on top.
pub fn banner(fields: &[Field], body: &[u8], lines: &[String]) -> BodyEdit {
    let (media, cte) = content(fields);
    let text_cte = matches!(
        cte.as_str(),
        "" | "7bit" | "8bit" | "binary" | "quoted-printable"
    );
    if text_cte && (media.is_empty() || media == "text/plain") {
        let mut out = Vec::with_capacity(body.len() + 512);
        for l in lines {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        return BodyEdit {
            body: out,
            headers: Vec::new(),
        };
    }
    if text_cte && media == "text/html" {
        let mut div = String::from("<div>\r\n");
        for l in lines {
            let escaped = l
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            div.push_str(&escaped);
            div.push_str("<br>\r\n");
        }
        div.push_str("</div>\r\n");
        let at = find_body_tag(body).unwrap_or(0);
        let mut out = Vec::with_capacity(body.len() + div.len());
        out.extend_from_slice(&body[..at]);
        if at > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(div.as_bytes());
        out.extend_from_slice(&body[at..]);
        return BodyEdit {
            body: out,
            headers: Vec::new(),
        };
    }
    wrap(fields, body, lines, &cte)
}

/// The offset just after `<body ...>`, if there is one.
fn find_body_tag(body: &[u8]) -> Option<usize> {
    let lower: Vec<u8> = body.iter().map(u8::to_ascii_lowercase).collect();
    let mut from = 0;
    while let Some(i) = memchr::memmem::find(&lower[from..], b"<body") {
        let at = from + i;
        let next = lower.get(at + 5).copied();
        if matches!(next, Some(b'>' | b' ' | b'\t' | b'\r' | b'\n')) {
            let end = memchr::memchr(b'>', &lower[at..])?;
            return Some(at + end + 1);
        }
        from = at + 5;
    }
    None
}

/// The message as `multipart/mixed`: the banner, then the original entity.
fn wrap(fields: &[Field], body: &[u8], lines: &[String], cte: &str) -> BodyEdit {
    let mut n = body.len();
    let boundary = loop {
        let b = format!("=_unspoof_banner_{n:x}");
        if memchr::memmem::find(body, b.as_bytes()).is_none() {
            break b;
        }
        n = n.wrapping_mul(31).wrapping_add(7);
    };
    let mut out = Vec::with_capacity(body.len() + 1024);
    out.extend_from_slice(b"This is a multi-part message in MIME format.\r\n");
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    out.extend_from_slice(b"Content-Transfer-Encoding: 7bit\r\n\r\n");
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    // The original entity keeps its own Content-* fields (values as written, folds kept).
    let mut had_type = false;
    for f in fields
        .iter()
        .filter(|f| f.name.to_ascii_lowercase().starts_with("content-"))
    {
        had_type |= f.name.eq_ignore_ascii_case("Content-Type");
        out.extend_from_slice(f.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(f.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !had_type {
        out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    // The CRLF before a boundary belongs to the boundary (RFC 2046 5.1.1).
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let mut headers = vec![(
        "Content-Type",
        Some(format!(" multipart/mixed; boundary=\"{boundary}\"")),
    )];
    // A multipart entity is 7bit, 8bit or binary (RFC 2045 6.4): the encoding moved inside.
    if matches!(cte, "base64" | "quoted-printable") {
        headers.push(("Content-Transfer-Encoding", None));
    }
    if first(fields, "MIME-Version").is_none() {
        headers.push(("MIME-Version", Some(" 1.0".into())));
    }
    for name in ["Content-Disposition", "Content-Description", "Content-ID"] {
        if first(fields, name).is_some() {
            headers.push((name, None));
        }
    }
    BodyEdit { body: out, headers }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn subject_prefix_once() {
        let f = [field("Subject", " Hello\r\n world")];
        assert_eq!(
            subject(&f, "[SUSPICIOUS]").as_deref(),
            Some(" [SUSPICIOUS] Hello\r\n world")
        );
        let f = [field("Subject", " [SUSPICIOUS] Hello")];
        assert_eq!(subject(&f, "[SUSPICIOUS]"), None);
        assert_eq!(subject(&[], "[X]").as_deref(), Some(" [X]"));
        assert_eq!(subject(&[field("Subject", " a")], ""), None);
    }

    #[test]
    fn plain_text_gets_lines_on_top() {
        let lines = vec!["*** warn ***".to_string()];
        let e = banner(&[], b"Hello\r\n", &lines);
        assert_eq!(e.body, b"*** warn ***\r\n\r\nHello\r\n");
        assert!(e.headers.is_empty());
    }

    #[test]
    fn html_gets_a_div_after_body() {
        let lines = vec!["a < b".to_string()];
        let f = [field("Content-Type", " text/html; charset=utf-8")];
        let e = banner(&f, b"<html><BODY class=x>Hi</body></html>", &lines);
        assert_eq!(
            String::from_utf8(e.body).unwrap(),
            "<html><BODY class=x>\r\n<div>\r\na &lt; b<br>\r\n</div>\r\nHi</body></html>"
        );
    }

    #[test]
    fn multipart_and_base64_are_wrapped() {
        let lines = vec!["warn".to_string()];
        let f = [
            field("Content-Type", " text/plain;\r\n charset=utf-8"),
            field("Content-Transfer-Encoding", " base64"),
        ];
        let e = banner(&f, b"SGVsbG8=\r\n", &lines);
        let body = String::from_utf8(e.body).unwrap();
        assert!(body.contains("\r\nContent-Type: text/plain;\r\n charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8=\r\n\r\n--=_unspoof_banner_"));
        assert!(body.ends_with("--\r\n"));
        assert_eq!(e.headers[0].0, "Content-Type");
        assert!(e.headers[0].1.as_ref().unwrap().contains("multipart/mixed"));
        assert_eq!(e.headers[1], ("Content-Transfer-Encoding", None));
        assert_eq!(e.headers[2], ("MIME-Version", Some(" 1.0".into())));
    }
}
