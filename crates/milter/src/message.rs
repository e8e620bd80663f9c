//! The message as the MTA hands it over (header callbacks, then body chunks), put back
//! together as the raw CRLF message the engine reads.
//!
//! Faithful enough for DKIM: with `SMFIP_HDR_LEADSPC` negotiated (Postfix 2.6+ and Sendmail
//! 8.14+ offer it) the value arrives exactly as written after the colon, so even
//! `c=simple` header canonicalisation verifies. Without it the MTA eats one space after the
//! colon (milter8.c: "Sendmail by default eats one space (not tab)") and we put one back, which
//! is wrong only for a field written `Name:value`. What no milter sees: white space between
//! the name and the colon (`From :` arrives as `From`), and the MTA's own Received field
//! (Postfix hides it from milters).

use unspoof_engine::message::Headers;

/// What a message's buffer starts with.
const INITIAL_CAPACITY: usize = 32 * 1024;

/// The message being received.
#[derive(Debug, Default)]
pub struct Message {
    raw: Vec<u8>,
    /// Offset of the body in `raw`, once the header section is closed.
    body_at: Option<usize>,
    /// Octets the MTA sent, kept or not.
    size: usize,
    oversized: bool,
}

impl Message {
    /// Adds one header field. `leadspc`: whether HDR_LEADSPC was negotiated.
    pub fn header(&mut self, name: &[u8], value: &[u8], leadspc: bool, max: usize) {
        self.size += name.len() + value.len() + 4;
        if self.over(max) || self.body_at.is_some() {
            // A header after the body started cannot be placed; the MTA never sends one.
            return;
        }
        if self.raw.capacity() == 0 {
            // Most messages fit: one allocation instead of a series of doublings.
            self.raw.reserve(INITIAL_CAPACITY);
        }
        self.raw.reserve(name.len() + value.len() + 8);
        self.raw.extend_from_slice(name);
        self.raw.push(b':');
        // Without HDR_LEADSPC one space after the colon was eaten: put it back, unless the
        // value is empty or starts with a fold or a tab (those were not eaten).
        if !leadspc && !value.is_empty() && !matches!(value[0], b'\t' | b'\r' | b'\n') {
            self.raw.push(b' ');
        }
        // Folded lines arrive separated by a bare LF (milter8.c: "Sendmail 8 sends multi-line
        // headers as text separated by newline").
        let mut rest = value;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let line = &rest[..i];
            self.raw.extend_from_slice(line);
            if !line.ends_with(b"\r") {
                self.raw.push(b'\r');
            }
            self.raw.push(b'\n');
            rest = &rest[i + 1..];
        }
        self.raw.extend_from_slice(rest);
        self.raw.extend_from_slice(b"\r\n");
    }

    /// Closes the header section (end of headers, or the first body chunk).
    pub fn end_of_headers(&mut self) {
        if self.body_at.is_none() {
            self.raw.extend_from_slice(b"\r\n");
            self.body_at = Some(self.raw.len());
        }
    }

    /// Appends a body chunk (CRLF line ends as the MTA sends them).
    pub fn body(&mut self, chunk: &[u8], max: usize) {
        self.end_of_headers();
        self.size += chunk.len();
        if self.over(max) {
            return;
        }
        self.raw.extend_from_slice(chunk);
    }

    fn over(&mut self, max: usize) -> bool {
        if self.size > max && !self.oversized {
            self.oversized = true;
            // Stop holding memory for a message we will not analyse.
            self.raw = Vec::new();
        }
        self.oversized
    }

    /// Whether the message went over `max_message_size`.
    pub fn oversized(&self) -> bool {
        self.oversized
    }

    /// Octets the MTA sent for this message.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The header fields in order, as the engine splits them.
    pub fn headers(&self) -> Headers<'_> {
        Headers::parse(self.head())
    }

    /// The header section, with its closing blank line once the section is closed.
    fn head(&self) -> &[u8] {
        &self.raw[..self.body_at.unwrap_or(self.raw.len())]
    }

    /// The body (empty before the header section is closed).
    pub fn body_bytes(&self) -> &[u8] {
        self.body_at.map_or(&[][..], |at| &self.raw[at..])
    }

    /// The raw message as kept so far (the header section closed at end of headers).
    pub fn bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The raw message; closes the header section first.
    pub fn raw(&mut self) -> &[u8] {
        self.end_of_headers();
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn reassembles_with_leadspc() {
        let mut m = Message::default();
        m.header(b"Subject", b" hello\n\tworld", true, MAX);
        m.header(b"X-Tight", b"v", true, MAX);
        m.header(b"X-Empty", b"", true, MAX);
        m.body(b"line\r\n", MAX);
        assert_eq!(
            m.raw(),
            b"Subject: hello\r\n\tworld\r\nX-Tight:v\r\nX-Empty:\r\n\r\nline\r\n"
        );
        let h = m.headers();
        assert_eq!(h.fields.len(), 3);
        assert_eq!(h.fields[0].value_unfolded(), "hello\tworld");
        assert_eq!(m.body_bytes(), b"line\r\n");
    }

    #[test]
    fn puts_back_the_eaten_space() {
        let mut m = Message::default();
        m.header(b"Subject", b"hello", false, MAX);
        m.header(b"X-Two", b" spaces", false, MAX);
        m.header(b"X-Tab", b"\tv", false, MAX);
        m.header(b"X-Fold", b"\n\tv", false, MAX);
        m.end_of_headers();
        assert_eq!(
            m.raw(),
            b"Subject: hello\r\nX-Two:  spaces\r\nX-Tab:\tv\r\nX-Fold:\r\n\tv\r\n\r\n"
        );
    }

    #[test]
    fn oversized_messages_are_dropped_not_kept() {
        let mut m = Message::default();
        m.header(b"Subject", b" x", true, 64);
        m.body(&[b'a'; 100], 64);
        assert!(m.oversized());
        assert!(m.raw().len() <= 2);
        assert_eq!(m.size(), 113);
    }
}
