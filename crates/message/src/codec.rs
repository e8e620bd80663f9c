//! The content codecs, one copy each for every crate: base64 (RFC 4648; strict for bodies,
//! lenient for RFC 2047 words), quoted-printable (RFC 2045 6.7), the RFC 2047 Q encoding and
//! charsets, and encoded-words decoded for display.
//!
//! Display decoding ([`decode_words`]) is mail-parser's, so a person sees what common mail
//! software shows; the address checks decode every word on its own
//! ([`crate::address::decode_encoded_words`]) to find an address hidden in one.

// ---------------------------------------------------------------------------------------------
// Quoted-printable and base64 (Content-Transfer-Encoding)

/// The value of one hexadecimal digit, either case.
pub fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Quoted-printable to bytes (RFC 2045 6.7): soft breaks removed, hard breaks as CRLF,
/// whitespace at the end of a line dropped (transport padding), a `=` that starts no
/// escape kept as it is, a bare CR (never literal in quoted-printable) dropped.
pub fn qp_decode(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let hard = lines.peek().is_some();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = trim_wsp_end(line);
        let (line, soft) = match line.strip_suffix(b"=") {
            Some(l) => (l, true),
            None => (line, false),
        };
        let mut i = 0;
        while i < line.len() {
            if line[i] == b'='
                && let (Some(h), Some(l)) = (
                    line.get(i + 1).copied().and_then(hex_value),
                    line.get(i + 2).copied().and_then(hex_value),
                )
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            if line[i] != b'\r' {
                out.push(line[i]);
            }
            i += 1;
        }
        if hard && !soft {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn trim_wsp_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = line {
        line = rest;
    }
    line
}

/// Bytes to quoted-printable: CRLF as hard breaks, lines at most 76 characters with soft
/// breaks; `=`, controls, 8-bit bytes, whitespace before a break and a `-` or `.` starting a
/// line (a delimiter or an SMTP dot can never appear) encoded; `From ` at a line start too.
pub fn qp_encode(content: &[u8]) -> Vec<u8> {
    const MAX: usize = 76;
    let mut out = Vec::with_capacity(content.len() + content.len() / 8);
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut rest = content;
    while let Some(i) = memchr::memmem::find(rest, b"\r\n") {
        lines.push(&rest[..i]);
        rest = &rest[i + 2..];
    }
    lines.push(rest);
    let last = lines.len() - 1;
    for (n, line) in lines.iter().enumerate() {
        let mut col = 0usize;
        for (i, &b) in line.iter().enumerate() {
            let at_end = i + 1 == line.len();
            let at_start = col == 0;
            let literal = match b {
                b'=' => false,
                b' ' | b'\t' => !at_end,
                b'-' | b'.' if at_start => false,
                b'F' if at_start && line[i..].starts_with(b"From ") => false,
                33..=126 => true,
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            // Room for the soft break "=" unless this is the line's last character.
            let limit = if at_end { MAX } else { MAX - 1 };
            if col + width > limit {
                out.extend_from_slice(b"=\r\n");
                col = 0;
                // The character now starts a line: re-judge it.
                let literal = literal && !matches!(b, b'-' | b'.');
                let literal = literal && !(b == b'F' && line[i..].starts_with(b"From "));
                push_qp(&mut out, b, literal);
                col += if literal { 1 } else { 3 };
                continue;
            }
            push_qp(&mut out, b, literal);
            col += width;
        }
        if n != last {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn push_qp(out: &mut Vec<u8>, b: u8, literal: bool) {
    if literal {
        out.push(b);
    } else {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Strict base64: whitespace ignored, anything else outside the alphabet (or data after the
/// padding) is `None`.
pub fn base64_decode(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut quad = [0u8; 4];
    let mut n = 0;
    let mut padding = 0;
    for &c in body {
        let v = match c {
            b'=' => {
                padding += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => base64_value(c)?,
        };
        if padding > 0 {
            return None;
        }
        quad[n] = v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[
                quad[0] << 2 | quad[1] >> 4,
                quad[1] << 4 | quad[2] >> 2,
                quad[2] << 6 | quad[3],
            ]);
            n = 0;
        }
    }
    match n {
        0 => {}
        2 => out.push(quad[0] << 2 | quad[1] >> 4),
        3 => out.extend_from_slice(&[quad[0] << 2 | quad[1] >> 4, quad[1] << 4 | quad[2] >> 2]),
        _ => return None,
    }
    if padding > 2 {
        return None;
    }
    Some(out)
}

/// Base64 on one line, padded (RFC 4648 4): DNS key records, test data, and the lines of
/// [`base64_encode`].
pub fn base64_line(data: &[u8]) -> String {
    let mut line = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        line.push(char::from(B64[usize::from(b[0] >> 2)]));
        line.push(char::from(B64[usize::from((b[0] & 3) << 4 | b[1] >> 4)]));
        line.push(if chunk.len() > 1 {
            char::from(B64[usize::from((b[1] & 15) << 2 | b[2] >> 6)])
        } else {
            '='
        });
        line.push(if chunk.len() > 2 {
            char::from(B64[usize::from(b[2] & 63)])
        } else {
            '='
        });
    }
    line
}

/// Base64 in lines of 76 characters joined by CRLF, without a final line break.
pub fn base64_encode(data: &[u8]) -> Vec<u8> {
    let line = base64_line(data);
    let mut out = Vec::with_capacity(line.len() + line.len() / 38);
    for (i, l) in line.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(l);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// RFC 2047 encoded-words

/// The value of one base64 alphabet byte (RFC 4648 4).
fn base64_value(b: u8) -> Option<u8> {
    Some(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

/// Lenient base64 (what RFC 2047 B words get from most readers): stops at `=`, skips other
/// non-alphabet bytes.
pub fn base64_decode_lenient(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &b in text {
        if b == b'=' {
            break;
        }
        let Some(v) = base64_value(b) else { continue };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// RFC 2047 4.2 Q encoding.
pub fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => match (
                text.get(i + 1).copied().and_then(hex_value),
                text.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'='),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Bytes in `charset` to text: UTF-16 and UCS-2 as such, UTF-8 when valid, else Latin-1 (every
/// charset a sender would use to hide an `@` is ASCII-compatible).
pub fn charset_to_text(charset: &str, bytes: &[u8]) -> String {
    let cs = charset.to_ascii_lowercase();
    if cs.starts_with("utf-16") || cs.starts_with("ucs-2") || cs == "unicode" {
        let le = cs.ends_with("le");
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        return String::from_utf16_lossy(&units);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

/// RFC 2047 encoded-words decoded for display, as mail-parser (what most mail software
/// resembles) decodes an unstructured field; the value as it is when it has none.
pub fn decode_words(v: &str) -> String {
    if !v.contains("=?") {
        return v.to_string();
    }
    let field = format!("Subject: {v}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(field.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qp_round_trip_and_line_length() {
        let text =
            "caf\u{e9} = ok \r\n--boundary-looking line\r\n.dot\r\nFrom here\r\ntrailing \t\r\n"
                .repeat(3)
                + &"x".repeat(300)
                + "\r\n"
                + &"\u{e9}".repeat(100);
        let enc = qp_encode(text.as_bytes());
        for line in enc.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(line.len() <= 76, "{}", String::from_utf8_lossy(line));
            assert!(
                !line.starts_with(b"-") && !line.starts_with(b".") && !line.starts_with(b"From ")
            );
            assert!(!line.ends_with(b" ") && !line.ends_with(b"\t"));
        }
        assert_eq!(qp_decode(&enc), text.as_bytes());
        // Lenient decoding: soft breaks with padding, stray '=' kept, transport padding dropped.
        assert_eq!(qp_decode(b"a= \r\nb=ZZ=3D  \r\nc"), b"ab=ZZ=\r\nc");
    }

    #[test]
    fn base64_round_trip() {
        for n in 0..200 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let enc = base64_encode(&data);
            assert!(enc.split(|&b| b == b'\n').all(|l| l.len() <= 77));
            assert_eq!(base64_decode(&enc).unwrap(), data);
        }
        assert_eq!(base64_decode(b"aGk=\r\n").unwrap(), b"hi");
        assert!(base64_decode(b"aGk=aGk=").is_none());
        assert!(base64_decode(b"aG!k").is_none());
        assert_eq!(base64_line(b"hi"), "aGk=");
        assert_eq!(base64_line(b""), "");
    }

    #[test]
    fn lenient_base64_and_q_words() {
        assert_eq!(base64_decode_lenient(b"YU!BsZ=ignored"), b"a@l");
        assert_eq!(q_decode(b"a=40b_c=ZZ"), b"a@b c=ZZ");
        assert_eq!(charset_to_text("utf-16le", &[b'a', 0]), "a");
        assert_eq!(charset_to_text("iso-8859-1", &[0xE9]), "\u{e9}");
    }

    #[test]
    fn display_decoding() {
        assert_eq!(decode_words("plain"), "plain");
        assert_eq!(decode_words("=?utf-8?Q?caf=C3=A9?= ok"), "caf\u{e9} ok");
    }
}
