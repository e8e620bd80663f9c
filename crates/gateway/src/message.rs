//! Small, allocation-light helpers over a received message and over SMTP addresses. The
//! gateway reads only what it must (From, Sender, Message-ID); the full parse is the engine's,
//! and so is the RFC 8601 reader that finds forged Authentication-Results
//! (`unspoof_engine::message::auth_results`).

/// Header fields as (name, unfolded value) in order; stops at the empty line.
pub fn header_fields(msg: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(text.trim());
            }
        } else if let Some((name, value)) = text.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        } else {
            // Not a header line: the header section is malformed; stop here.
            break;
        }
    }
    out
}

/// The first value of header `name` (case-insensitive), unfolded as [`header_fields`] does.
/// Builds only that field's value: the gateway asks for Message-ID on every message, and
/// building every field (DKIM and ARC signatures included) cost more than the search.
pub fn header(msg: &[u8], name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(value) = &mut found {
                let text = String::from_utf8_lossy(line);
                value.push(' ');
                value.push_str(text.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            // Not a header line: the header section is malformed; stop here.
            break;
        };
        if String::from_utf8_lossy(&line[..colon])
            .trim()
            .eq_ignore_ascii_case(name)
        {
            let text = String::from_utf8_lossy(&line[colon + 1..]);
            found = Some(text.trim().to_string());
        }
    }
    found
}

/// Is `domain` a syntactically valid domain (RFC 5321 4.1.2 `Domain`, with U-labels allowed for
/// SMTPUTF8) or address literal?
pub fn valid_domain(domain: &str) -> bool {
    if domain.starts_with('[') && domain.ends_with(']') {
        let lit = &domain[1..domain.len() - 1];
        return lit.parse::<std::net::Ipv4Addr>().is_ok()
            || lit
                .strip_prefix("IPv6:")
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !domain.is_empty()
        && domain.len() <= 255
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

/// Splits `local@domain`, checking the domain; `None` if malformed.
pub fn split_address(addr: &str) -> Option<(&str, &str)> {
    let (local, domain) = addr.rsplit_once('@')?;
    if local.is_empty() || local.len() > 64 || !valid_domain(domain) {
        return None;
    }
    if addr
        .chars()
        .any(|c| c.is_control() || c == ' ' && !local.starts_with('"'))
    {
        return None;
    }
    Some((local, domain))
}

/// RFC 5322 3.3 date-time in UTC for `unix` seconds (the message layer's calendar).
pub use unspoof_message::date::rfc5322_date;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_unfold() {
        let m = b"From: a\r\n <a@b>\r\nSubject: x\r\n\r\nFrom: body\r\n";
        assert_eq!(header(m, "from").as_deref(), Some("a <a@b>"));
        assert_eq!(header_fields(m).len(), 2);
    }

    #[test]
    fn header_finds_the_first_field_as_header_fields_reads_it() {
        let m = b"Received: x\r\n\ty\r\nMessage-ID:\r\n <a@b>\r\n (c)\r\nmessage-id: <second>\r\n\
                  Subject: s\r\n\r\nMessage-ID: <body>\r\n";
        for name in ["message-id", "RECEIVED", "subject", "x-none"] {
            let expected = header_fields(m)
                .into_iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v);
            assert_eq!(header(m, name), expected, "{name}");
        }
        // As `header_fields` unfolds it: an empty first line leaves the leading space.
        assert_eq!(header(m, "Message-ID").as_deref(), Some(" <a@b> (c)"));
        // A malformed line ends the header section for both.
        assert_eq!(header(b"A: 1\r\nbroken\r\nB: 2\r\n\r\n", "b"), None);
        assert_eq!(header(b"\r\nB: 2\r\n", "b"), None);
    }

    #[test]
    fn addresses() {
        assert!(split_address("a@example.org").is_some());
        assert!(split_address("a@[127.0.0.1]").is_some());
        assert!(split_address("a@exa mple.org").is_none());
        assert!(split_address("a@-bad.org").is_none());
        assert!(split_address("@example.org").is_none());
        assert!(split_address("noat").is_none());
    }
}
