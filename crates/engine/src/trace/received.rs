//! One `Received` header value -> the fields of a [`Hop`](super::Hop).
//!
//! mail-parser's Received parser does the heavy lifting (it knows the Postfix, Sendmail, Exim,
//! qmail, Exchange and Gmail shapes). This module adds what the trace needs and mail-parser does
//! not give: whether the `from` and `by` clauses are really at the top level (mail-parser also
//! takes a `from` inside a comment such as `(Postfix, from userid 1000)` or `(qmail 1 invoked from
//! network)`), the `with` keyword when it is not one mail-parser knows (`with SMTPS`), and the
//! date taken from the text after the last top-level `;` (RFC 5321 4.4), which is what the
//! receiving MTA wrote.

use std::net::IpAddr;

use mail_parser::{DateTime, HeaderValue, Host, Protocol, parsers::MessageStream};

/// What one Received header says, before the trace assigns index, delay and trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ParsedReceived {
    pub parsed: bool,
    pub from_helo: Option<String>,
    pub from_rdns: Option<String>,
    pub from_ip: Option<IpAddr>,
    pub by: Option<String>,
    pub via: Option<String>,
    pub with: Option<String>,
    pub id: Option<String>,
    pub for_addr: Option<String>,
    pub date: Option<String>,
    pub timestamp: Option<i64>,
    pub tls: Option<String>,
    /// A `from` keyword outside any comment.
    pub has_from_clause: bool,
    /// A `by` keyword outside any comment.
    pub has_by_clause: bool,
    /// The `with` protocol is local submission (`with local`, `stdin`, `socket`).
    pub local_protocol: bool,
    /// qmail's `(qmail N invoked by uid N)`: a local program submitted the message.
    pub invoked_by_uid: bool,
    /// A content scanner's note (`with qmail-scanner-1.10`), written next to the real trace
    /// line by the same host.
    pub content_scanner: bool,
}

/// Words outside comments and quoted strings, and where the last top-level `;` is.
struct TopLevel<'a> {
    /// Slices of the value: a word is a run of characters that nothing splits.
    words: Vec<&'a str>,
    last_semicolon: Option<usize>,
}

/// Splits an unfolded header value into its top-level words, skipping comments
/// (nested, with `\\` escapes) and quoted strings. Linear in the input.
///
/// Reads bytes, not chars: every delimiter is ASCII, so a run of plain ASCII bytes at the top
/// level extends the word, and the inside of a comment or a quoted string is skipped to its
/// next delimiter with memchr. A non-ASCII char is decoded whole (Unicode whitespace still
/// ends a word), so the words are what a char-by-char scan gives.
fn top_level(value: &str) -> TopLevel<'_> {
    let bytes = value.as_bytes();
    let mut words = Vec::new();
    let mut last_semicolon = None;
    let mut depth: u32 = 0;
    let mut in_quote = false;
    // Where the word being read started. Every character that does not end a word extends it,
    // so a word is always one contiguous slice of `value`.
    let mut word_start: Option<usize> = None;
    let mut flush = |start: &mut Option<usize>, end: usize| {
        if let Some(s) = start.take() {
            words.push(&value[s..end]);
        }
    };
    let mut pos = 0;
    while let Some(&b) = bytes.get(pos) {
        if in_quote {
            // Only `"` and `\` matter inside a quoted string; a `\` skips the char after it.
            match memchr::memchr2(b'"', b'\\', &bytes[pos..]) {
                Some(i) if bytes[pos + i] == b'"' => {
                    in_quote = false;
                    pos += i + 1;
                }
                Some(i) => pos = skip_escaped(value, pos + i + 1),
                None => break,
            }
            continue;
        }
        if depth > 0 {
            // Inside a comment only `(`, `)` and `\` matter.
            match memchr::memchr3(b'(', b')', b'\\', &bytes[pos..]) {
                Some(i) => {
                    let at = pos + i;
                    match bytes[at] {
                        b'(' => depth = depth.saturating_add(1),
                        b')' => depth -= 1,
                        _ => {
                            pos = skip_escaped(value, at + 1);
                            continue;
                        }
                    }
                    pos = at + 1;
                }
                None => break,
            }
            continue;
        }
        if b >= 0x80 {
            let ch = value
                .get(pos..)
                .and_then(|s| s.chars().next())
                .unwrap_or(' ');
            if ch.is_whitespace() {
                flush(&mut word_start, pos);
            } else {
                word_start.get_or_insert(pos);
            }
            pos += ch.len_utf8();
            continue;
        }
        match b {
            b'(' => {
                depth = 1;
                flush(&mut word_start, pos);
            }
            // A `)` at the top level closes nothing but still ends a word.
            b')' => flush(&mut word_start, pos),
            b'"' => {
                in_quote = true;
                flush(&mut word_start, pos);
            }
            b';' => {
                last_semicolon = Some(pos);
                flush(&mut word_start, pos);
            }
            b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' => flush(&mut word_start, pos),
            _ => {
                word_start.get_or_insert(pos);
                // The rest of a run of printable ASCII that ends nothing extends the word.
                pos += 1;
                while let Some(&c) = bytes.get(pos) {
                    if !(0x21..=0x7e).contains(&c) || matches!(c, b'(' | b')' | b'"' | b';') {
                        break;
                    }
                    pos += 1;
                }
                continue;
            }
        }
        pos += 1;
    }
    flush(&mut word_start, value.len());
    TopLevel {
        words,
        last_semicolon,
    }
}

/// The position after the char that starts at `pos` (the char a `\\` escapes).
fn skip_escaped(value: &str, pos: usize) -> usize {
    match value.get(pos..).and_then(|s| s.chars().next()) {
        Some(c) => pos + c.len_utf8(),
        None => value.len(),
    }
}

/// A host name as written, lowercased, without a trailing dot or surrounding brackets.
pub(crate) fn norm_host(s: &str) -> String {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Parses an address literal the way it appears in trace fields: `1.2.3.4`, `[1.2.3.4]`,
/// `[IPv6:2001:db8::1]`, `2001:db8::1`.
pub(crate) fn parse_ip_literal(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    let s = s
        .strip_prefix("IPv6:")
        .or_else(|| s.strip_prefix("ipv6:"))
        .unwrap_or(s);
    s.parse().ok()
}

fn host_string(h: &Host<'_>) -> String {
    match h {
        Host::Name(n) => norm_host(n),
        Host::IpAddr(ip) => ip.to_string(),
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// A date is kept only when mail-parser calls it valid (year 1900..=3000, fields in range), so
/// the timestamp arithmetic cannot overflow.
fn valid_date(dt: &DateTime) -> Option<(String, i64)> {
    if dt.is_valid() {
        Some((rfc3339(dt), dt.to_timestamp()))
    } else {
        None
    }
}

/// mail-parser's `DateTime::to_rfc3339` of a valid date (every field within its two or four
/// digits), written without `format!`: `2020-10-26T14:43:26+02:00`, `...Z` at UTC.
fn rfc3339(dt: &DateTime) -> String {
    fn two(out: &mut String, n: u8) {
        out.push(char::from(b'0' + n / 10));
        out.push(char::from(b'0' + n % 10));
    }
    let mut out = String::with_capacity(25);
    let year = dt.year;
    for div in [1000, 100, 10, 1] {
        out.push(char::from(b'0' + (year / div % 10) as u8));
    }
    out.push('-');
    two(&mut out, dt.month);
    out.push('-');
    two(&mut out, dt.day);
    out.push('T');
    two(&mut out, dt.hour);
    out.push(':');
    two(&mut out, dt.minute);
    out.push(':');
    two(&mut out, dt.second);
    if dt.tz_hour != 0 || dt.tz_minute != 0 {
        out.push(if dt.tz_before_gmt { '-' } else { '+' });
        two(&mut out, dt.tz_hour);
        out.push(':');
        two(&mut out, dt.tz_minute);
    } else {
        out.push('Z');
    }
    out
}

/// Parses an RFC 5322 date-time, returning (RFC 3339, unix seconds), or None when it is not a
/// valid date.
pub(crate) fn parse_date(text: &str) -> Option<(String, i64)> {
    let dt = super::guard(|| DateTime::parse_rfc822(text))??;
    valid_date(&dt)
}

/// Whether `needle` (ASCII) occurs in `hay` when ASCII letters are compared without case: what
/// `to_ascii_lowercase().contains(needle)` says, without the lower-cased copy.
/// Candidates are found with memchr on the needle's first byte in both cases.
fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), hay).any(|i| {
        hay.get(i..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// The unix time of an RFC 5322 date-time, or None when it is not a valid date: [`parse_date`]
/// without the RFC 3339 text, for callers that only compare times.
pub(crate) fn parse_timestamp(text: &str) -> Option<i64> {
    let dt = super::guard(|| DateTime::parse_rfc822(text))??;
    dt.is_valid().then(|| dt.to_timestamp())
}

fn is_tls_protocol(with: &str) -> bool {
    // RFC 3848 / RFC 6531 keywords that mean TLS was used: ESMTPS, ESMTPSA, LMTPS, LMTPSA,
    // UTF8SMTPS, UTF8SMTPSA, UTF8LMTPS, UTF8LMTPSA, plus SMTPS (Gmail) and HTTPS.
    let w = with.to_ascii_uppercase();
    let w = w.strip_suffix('A').unwrap_or(&w);
    w.ends_with("SMTPS") || w.ends_with("LMTPS") || w == "HTTPS"
}

/// Parses one Received header. `raw_value` is the value as on the wire (still folded);
/// `unfolded` is the same value unfolded.
pub(crate) fn parse(raw_value: &[u8], unfolded: &str) -> ParsedReceived {
    let top = top_level(unfolded);
    let has_from_clause = top.words.iter().any(|w| w.eq_ignore_ascii_case("from"));
    let has_by_clause = top.words.iter().any(|w| w.eq_ignore_ascii_case("by"));
    let with_word = top
        .words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("with"))
        .and_then(|i| top.words.get(i + 1))
        .map(|w| w.trim_end_matches([';', ',']))
        .filter(|w| !w.is_empty());

    let mut buf = Vec::with_capacity(raw_value.len() + 1);
    buf.extend_from_slice(raw_value);
    buf.push(b'\n');
    let value = super::guard(|| MessageStream::new(&buf).parse_received());
    let rcvd = match value {
        Some(HeaderValue::Received(r)) => Some(r),
        _ => None,
    };

    let mut out = ParsedReceived {
        has_from_clause,
        has_by_clause,
        invoked_by_uid: contains_ignore_ascii_case(unfolded.as_bytes(), b"invoked by uid"),
        content_scanner: with_word.is_some_and(|w| {
            w.as_bytes()
                .get(..b"qmail-scanner".len())
                .is_some_and(|start| start.eq_ignore_ascii_case(b"qmail-scanner"))
        }),
        ..Default::default()
    };

    // The date: the text after the last top-level ';', else whatever mail-parser found.
    let date = top
        .last_semicolon
        .and_then(|p| unfolded.get(p + 1..))
        .and_then(parse_date)
        .or_else(|| {
            rcvd.as_ref()
                .and_then(|r| r.date.as_ref())
                .and_then(valid_date)
        });
    if let Some((d, t)) = date {
        out.date = Some(d);
        out.timestamp = Some(t);
    }

    let Some(r) = rcvd else {
        // mail-parser found nothing it recognises. A date alone still counts as parsed.
        out.parsed = out.timestamp.is_some();
        out.with = with_word.map(str::to_string);
        return out;
    };
    out.parsed = true;

    // mail-parser takes the first `from` anywhere, including inside a comment; only a
    // top-level `from` clause names the client.
    if has_from_clause {
        let from_ip_literal = match &r.from {
            Some(Host::IpAddr(ip)) => Some(*ip),
            _ => None,
        };
        out.from_ip = r.from_ip.or(from_ip_literal);
        // A name with '@' is a sender mailbox (qmail-scanner's `from user@domain`), not a host.
        let explicit_helo = r.helo.as_ref().map(host_string).and_then(non_empty);
        let from_name = match &r.from {
            Some(Host::Name(n)) if n.contains('@') => None,
            Some(Host::Name(n)) => non_empty(norm_host(n)),
            Some(Host::IpAddr(ip)) => Some(format!("[{ip}]")),
            None => None,
        };
        // qmail and Postfix write `unknown` when the client's address has no reverse DNS name.
        let known = |n: &String| n != "unknown";
        out.from_rdns = r
            .from_iprev
            .as_deref()
            .map(norm_host)
            .and_then(non_empty)
            .filter(known);
        match explicit_helo {
            Some(helo) => {
                // Exim writes `from <rdns> ([ip] helo=<helo>)`: the name after `from` is then
                // the reverse DNS name, not the HELO.
                if out.from_rdns.is_none()
                    && let Some(name) =
                        from_name.filter(|n| *n != helo && !n.starts_with('[') && known(n))
                {
                    out.from_rdns = Some(name);
                }
                out.from_helo = Some(helo);
            }
            None => out.from_helo = from_name,
        }
    }
    if has_by_clause {
        out.by = r.by.as_ref().map(host_string).and_then(non_empty);
    }
    out.via = r.via.as_deref().map(str::to_string).and_then(non_empty);
    out.id = r.id.as_deref().map(str::to_string).and_then(non_empty);
    out.for_addr = r
        .for_
        .as_deref()
        .map(|s| s.trim_matches(['<', '>']).to_string())
        .and_then(non_empty);
    out.with = r
        .with
        .map(|p| p.as_str().to_string())
        .or_else(|| with_word.map(str::to_string));
    out.local_protocol = matches!(r.with, Some(Protocol::Local));

    out.tls = match (r.tls_version, r.tls_cipher.as_deref()) {
        (Some(v), Some(c)) => Some(format!("{} {}", v.as_str(), c)),
        (Some(v), None) => Some(v.as_str().to_string()),
        (None, Some(c)) => Some(c.to_string()),
        (None, None) => out.with.clone().filter(|w| is_tls_protocol(w)),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> ParsedReceived {
        parse(v.as_bytes(), &crate::message::unfold(v.as_bytes()))
    }

    /// The char-by-char scan `top_level` replaced, kept as the reference it must agree with.
    fn top_level_by_chars(value: &str) -> (Vec<&str>, Option<usize>) {
        let mut words = Vec::new();
        let mut last_semicolon = None;
        let mut depth: u32 = 0;
        let mut in_quote = false;
        let mut escaped = false;
        let mut word_start: Option<usize> = None;
        let mut flush = |start: &mut Option<usize>, end: usize| {
            if let Some(s) = start.take() {
                words.push(&value[s..end]);
            }
        };
        for (pos, ch) in value.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            if ch == '\\' && (depth > 0 || in_quote) {
                escaped = true;
                continue;
            }
            if in_quote {
                if ch == '"' {
                    in_quote = false;
                }
                continue;
            }
            match ch {
                '(' => {
                    depth = depth.saturating_add(1);
                    flush(&mut word_start, pos);
                }
                ')' => {
                    depth = depth.saturating_sub(1);
                    flush(&mut word_start, pos);
                }
                _ if depth > 0 => {}
                '"' => {
                    in_quote = true;
                    flush(&mut word_start, pos);
                }
                ';' => {
                    last_semicolon = Some(pos);
                    flush(&mut word_start, pos);
                }
                c if c.is_whitespace() => flush(&mut word_start, pos),
                _ => {
                    word_start.get_or_insert(pos);
                }
            }
        }
        flush(&mut word_start, value.len());
        (words, last_semicolon)
    }

    #[test]
    fn top_level_is_the_char_scan() {
        let cases = [
            "",
            " from a.example (a.example [192.0.2.1]) by b.example with ESMTPS id 1; Mon, 26 Oct 2020 14:43:26 +0200 (EET)",
            "from x (nested (deep) \\) still) by y; a; b",
            "from \"quoted (not a comment) \\\" still\" by z",
            "by h (Postfix, from userid 1000) id 1;",
            "a\\b (c\\(d) e) f) g ( h",
            "x \"unterminated \\",
            "x (unterminated \\",
            "ünïcödé\u{a0}nbsp\u{2003}em\u{3000}ideo\u{85}nel word",
            "(\u{a0}) \"\u{2003}\" \\\u{e9}x (\\\u{e9}) \"\\\u{e9}\"",
            "\t\u{b}\u{c}\r\nfrom\u{b}a\u{c}b\rc",
            ";;;(;);\";\"",
            "))) from a",
        ];
        for v in cases {
            let t = top_level(v);
            assert_eq!((t.words, t.last_semicolon), top_level_by_chars(v), "{v:?}");
        }
    }

    #[test]
    fn contains_ignore_case_finds_any_spelling() {
        assert!(contains_ignore_ascii_case(
            b"(qmail 1 INVOKED BY UID 0)",
            b"invoked by uid"
        ));
        assert!(contains_ignore_ascii_case(
            b"invoked by uid",
            b"invoked by uid"
        ));
        assert!(contains_ignore_ascii_case(
            b"iiInvoked By Uid",
            b"invoked by uid"
        ));
        assert!(!contains_ignore_ascii_case(
            b"invoked by ui",
            b"invoked by uid"
        ));
        assert!(!contains_ignore_ascii_case(
            b"invoked from network",
            b"invoked by uid"
        ));
    }

    #[test]
    fn rfc3339_is_mail_parsers() {
        for (year, tz_before_gmt, tz_hour, tz_minute) in [
            (1900, false, 0, 0),
            (2020, true, 0, 0),
            (2020, false, 2, 0),
            (2026, true, 5, 30),
            (3000, true, 0, 45),
            (1999, false, 23, 59),
        ] {
            for (month, day, hour, minute, second) in
                [(1, 1, 0, 0, 0), (12, 31, 23, 59, 59), (7, 9, 5, 6, 7)]
            {
                let dt = DateTime {
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                    tz_before_gmt,
                    tz_hour,
                    tz_minute,
                };
                assert!(dt.is_valid());
                assert_eq!(rfc3339(&dt), dt.to_rfc3339(), "{dt:?}");
            }
        }
    }

    #[test]
    fn postfix() {
        let r = p(
            " from mail.example.com (mail.example.com. [192.0.2.10])\r\n\tby mx.example.net (Postfix) with ESMTPS id 4ABC\r\n\tfor <u@example.net>; Mon, 26 Oct 2020 14:43:26 +0200 (EET)",
        );
        assert!(r.parsed);
        assert_eq!(r.from_helo.as_deref(), Some("mail.example.com"));
        assert_eq!(r.from_rdns.as_deref(), Some("mail.example.com"));
        assert_eq!(r.from_ip, Some("192.0.2.10".parse().unwrap()));
        assert_eq!(r.by.as_deref(), Some("mx.example.net"));
        assert_eq!(r.with.as_deref(), Some("ESMTPS"));
        assert_eq!(r.tls.as_deref(), Some("ESMTPS"));
        assert_eq!(r.id.as_deref(), Some("4ABC"));
        assert_eq!(r.for_addr.as_deref(), Some("u@example.net"));
        assert_eq!(r.date.as_deref(), Some("2020-10-26T14:43:26+02:00"));
        assert_eq!(r.timestamp, Some(1603716206));
    }

    #[test]
    fn exim_rdns_and_helo() {
        let r = p(
            " from host.example.org ([198.51.100.7] helo=claimed.example)\n\tby mx.example.net with esmtp (Exim 4.94)\n\tid 1kX; Tue, 20 Aug 2002 10:00:00 +0000",
        );
        assert_eq!(r.from_helo.as_deref(), Some("claimed.example"));
        assert_eq!(r.from_rdns.as_deref(), Some("host.example.org"));
        assert_eq!(r.from_ip, Some("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn gmail_smtps_and_tls_comment() {
        let r = p(
            " from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41]) by mx.google.com with SMTPS id p13sor for <a@gmail.com> (Google Transport Security); Mon, 26 Oct 2020 05:43:29 -0700 (PDT)",
        );
        assert_eq!(r.with.as_deref(), Some("SMTPS"));
        assert_eq!(r.tls.as_deref(), Some("SMTPS"));
        let r = p(
            " from a.example (a.example [203.0.113.9]) (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) by b.example (Postfix) with ESMTPS id X; Mon, 26 Oct 2020 05:43:29 -0700",
        );
        assert_eq!(r.tls.as_deref(), Some("TLSv1.3 TLS_AES_256_GCM_SHA384"));
    }

    #[test]
    fn from_inside_comment_is_not_a_client() {
        let r =
            p(" by host.example (Postfix, from userid 1000) id 1; Mon, 26 Oct 2020 05:43:29 -0700");
        assert!(!r.has_from_clause);
        assert!(r.from_ip.is_none() && r.from_helo.is_none());
        assert_eq!(r.by.as_deref(), Some("host.example"));
        let r = p(" (qmail 1234 invoked from network); 20 Aug 2002 10:00:00 -0000");
        assert!(!r.has_from_clause && !r.has_by_clause);
        assert!(r.parsed && r.timestamp.is_some());
        let r = p(" (qmail 1234 invoked by uid 500); 20 Aug 2002 10:00:00 -0000");
        assert!(r.invoked_by_uid);
        let r = p(
            " from user@example.com by mx.example.net\n\t by uid 500 with qmail-scanner-1.10 (F-PROT: 3.12. Clear:0.); 07 May 2002 14:37:01 -0000",
        );
        assert!(r.content_scanner && r.from_helo.is_none() && r.from_ip.is_none());
    }

    #[test]
    fn qmail_helo_and_bare_ip() {
        let r = p(
            " from unknown (HELO mail.example.com) (203.0.113.5) by mx.example.net with SMTP; 20 Aug 2002 10:00:00 -0000",
        );
        assert_eq!(r.from_helo.as_deref(), Some("mail.example.com"));
        assert_eq!(r.from_rdns, None);
        assert_eq!(r.from_ip, Some("203.0.113.5".parse().unwrap()));
        let r = p(" from [203.0.113.5] by mx.example.net; 20 Aug 2002 10:00:00 -0000");
        assert_eq!(r.from_ip, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(r.from_helo.as_deref(), Some("[203.0.113.5]"));
    }

    #[test]
    fn garbage() {
        let r = p(" ???");
        assert!(!r.parsed);
        let r = p("");
        assert!(!r.parsed);
        let r = p(" from ((((( by ]]]] ; ;;; \\");
        let _ = r;
    }

    #[test]
    fn ip_literals() {
        assert_eq!(
            parse_ip_literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_ip_literal("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(parse_ip_literal("host"), None);
    }
}
