//! Small, allocation-light helpers over a received message and over SMTP addresses. The
//! gateway reads only what it must (From, Sender, Message-ID, our own Authentication-Results);
//! the full parse is the engine's.

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

/// The first value of header `name` (case-insensitive).
pub fn header(msg: &[u8], name: &str) -> Option<String> {
    header_fields(msg)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Removes `Authentication-Results` fields that claim to be ours (authserv-id equal to
/// `authserv_id`): RFC 8601 5 requires it, or a sender could forge our verdict.
pub fn strip_our_auth_results(msg: &[u8], authserv_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    let mut in_header = true;
    let mut dropping = false;
    let mut rest = msg;
    while let Some(p) = memchr::memchr(b'\n', rest) {
        let (line, tail) = rest.split_at(p + 1);
        rest = tail;
        if in_header {
            if line == b"\r\n" {
                in_header = false;
                dropping = false;
            } else if matches!(line[0], b' ' | b'\t') {
                if dropping {
                    continue;
                }
            } else {
                dropping = is_our_ar(line, authserv_id);
                if dropping {
                    continue;
                }
            }
        }
        out.extend_from_slice(line);
        if !in_header {
            out.extend_from_slice(rest);
            return out;
        }
    }
    out.extend_from_slice(rest);
    out
}

fn is_our_ar(line: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    if !line[..colon]
        .trim_ascii()
        .eq_ignore_ascii_case(b"Authentication-Results")
    {
        return false;
    }
    let value = String::from_utf8_lossy(&line[colon + 1..]);
    let id = value
        .trim_start()
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap_or("");
    id.eq_ignore_ascii_case(authserv_id)
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

/// RFC 5322 3.3 date-time in UTC for `unix` seconds.
pub fn rfc5322_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86400);
    let secs = unix.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_709_210_096),
            "Thu, 29 Feb 2024 12:34:56 +0000"
        );
    }

    #[test]
    fn headers_unfold() {
        let m = b"From: a\r\n <a@b>\r\nSubject: x\r\n\r\nFrom: body\r\n";
        assert_eq!(header(m, "from").as_deref(), Some("a <a@b>"));
        assert_eq!(header_fields(m).len(), 2);
    }

    #[test]
    fn forged_auth_results_for_us_are_removed_others_kept() {
        let m = b"Authentication-Results: mx.example.org;\r\n dmarc=pass\r\n\
Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n\r\n\
Authentication-Results: mx.example.org; body stays\r\n";
        let out = strip_our_auth_results(m, "MX.example.org");
        assert_eq!(
            out,
            b"Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n\r\n\
Authentication-Results: mx.example.org; body stays\r\n"
        );
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
