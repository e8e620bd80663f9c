//! The in-line relay: a small SMTP client to the site's real MTA (`downstream`).
//!
//! The downstream transaction runs in step with the client's: MAIL and each RCPT are forwarded
//! when the client sends them, so the client sees the downstream's own per-recipient replies;
//! after the engine has decided, the message is sent and the downstream's end-of-data reply
//! becomes ours. The client therefore gets 250 only once the downstream has accepted the
//! message, and any failure to reach it is a 4xx that makes the client retry: nothing is lost.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A reply from the downstream MTA (RFC 5321 4.2), possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    /// Text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl SmtpReply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// One line to pass back to our client: the downstream's code and first line of text.
    /// Control characters are dropped, so a downstream cannot inject reply lines.
    pub fn to_client_line(&self) -> String {
        let text: String = self
            .lines
            .first()
            .map(|s| s.chars().filter(|c| !c.is_control()).collect())
            .unwrap_or_default();
        format!("{} {}\r\n", self.code, text)
    }
}

impl std::fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// Why the downstream could not be used. Every variant becomes a 451 for our client.
#[derive(Debug)]
pub enum RelayError {
    /// Could not connect, or the greeting/EHLO was refused.
    Unavailable(String),
    /// Timed out or the connection broke mid-transaction.
    Lost(String),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Unavailable(s) => write!(f, "downstream unavailable: {s}"),
            RelayError::Lost(s) => write!(f, "downstream connection lost: {s}"),
        }
    }
}

/// An open SMTP session with the downstream MTA.
pub struct Downstream {
    io: BufReader<TcpStream>,
    timeout: Duration,
    pub eightbit: bool,
    pub smtputf8: bool,
    /// The downstream offers PIPELINING (RFC 2920): MAIL and the first RCPT go in one write.
    pub pipelining: bool,
    /// A MAIL transaction is open downstream.
    pub in_transaction: bool,
}

impl Downstream {
    /// Connects to `addr`, reads the greeting and sends EHLO `helo` (HELO if EHLO is refused).
    pub async fn connect(addr: &str, helo: &str, wait: Duration) -> Result<Self, RelayError> {
        let tcp = match timeout(wait, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(RelayError::Unavailable(e.to_string())),
            Err(_) => return Err(RelayError::Unavailable("connect timed out".into())),
        };
        let _ = tcp.set_nodelay(true);
        let mut d = Downstream {
            io: BufReader::new(tcp),
            timeout: wait,
            eightbit: false,
            smtputf8: false,
            pipelining: false,
            in_transaction: false,
        };
        let unavailable = |e: RelayError| RelayError::Unavailable(e.to_string());
        let greeting = d.read_reply().await.map_err(unavailable)?;
        if greeting.code != 220 {
            return Err(RelayError::Unavailable(format!("greeting {greeting}")));
        }
        let ehlo = d
            .command(format!("EHLO {helo}\r\n").as_bytes())
            .await
            .map_err(unavailable)?;
        if ehlo.code == 250 {
            for l in ehlo.lines.iter().skip(1) {
                let kw = l
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                d.eightbit |= kw == "8BITMIME";
                d.smtputf8 |= kw == "SMTPUTF8";
                d.pipelining |= kw == "PIPELINING";
            }
        } else {
            let helo = d
                .command(format!("HELO {helo}\r\n").as_bytes())
                .await
                .map_err(unavailable)?;
            if helo.code != 250 {
                return Err(RelayError::Unavailable(format!("HELO refused: {helo}")));
            }
        }
        Ok(d)
    }

    async fn read_reply(&mut self) -> Result<SmtpReply, RelayError> {
        let mut lines = Vec::new();
        let mut code = 0u16;
        loop {
            let mut line = String::new();
            let n = match timeout(self.timeout, self.io.read_line(&mut line)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(RelayError::Lost(e.to_string())),
                Err(_) => return Err(RelayError::Lost("reply timed out".into())),
            };
            if n == 0 {
                return Err(RelayError::Lost("connection closed".into()));
            }
            if line.len() > 4096 || lines.len() > 100 {
                return Err(RelayError::Lost("reply too long".into()));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let parsed: Option<u16> = line.get(..3).and_then(|c| c.parse().ok());
            let Some(c) = parsed.filter(|c| (200..600).contains(c)) else {
                return Err(RelayError::Lost(format!("malformed reply {line:?}")));
            };
            if code != 0 && c != code {
                return Err(RelayError::Lost(format!("inconsistent reply {line:?}")));
            }
            code = c;
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(SmtpReply { code, lines });
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        match timeout(self.timeout, async {
            self.io.get_mut().write_all(bytes).await?;
            self.io.get_mut().flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RelayError::Lost(e.to_string())),
            Err(_) => Err(RelayError::Lost("write timed out".into())),
        }
    }

    async fn command(&mut self, line: &[u8]) -> Result<SmtpReply, RelayError> {
        self.send(line).await?;
        self.read_reply().await
    }

    fn mail_command(&self, from: &str, eightbit: bool, smtputf8: bool) -> String {
        let mut cmd = format!("MAIL FROM:<{from}>");
        if eightbit && self.eightbit {
            cmd.push_str(" BODY=8BITMIME");
        }
        if smtputf8 && self.smtputf8 {
            cmd.push_str(" SMTPUTF8");
        }
        cmd.push_str("\r\n");
        cmd
    }

    /// MAIL FROM; `eightbit`/`smtputf8` are forwarded when the downstream supports them.
    pub async fn mail(
        &mut self,
        from: &str,
        eightbit: bool,
        smtputf8: bool,
    ) -> Result<SmtpReply, RelayError> {
        let cmd = self.mail_command(from, eightbit, smtputf8);
        let r = self.command(cmd.as_bytes()).await?;
        self.in_transaction = r.is_positive();
        Ok(r)
    }

    /// Opens the transaction with its first recipient: MAIL and RCPT in one write when the
    /// downstream offers PIPELINING (one round trip instead of two), else one after the other.
    /// Returns the reply to show for this RCPT: MAIL's when MAIL was refused, else RCPT's.
    pub async fn mail_rcpt(
        &mut self,
        from: &str,
        eightbit: bool,
        smtputf8: bool,
        to: &str,
    ) -> Result<SmtpReply, RelayError> {
        if !self.pipelining {
            let r = self.mail(from, eightbit, smtputf8).await?;
            if !r.is_positive() {
                return Ok(r);
            }
            return self.rcpt(to).await;
        }
        let mut cmds = self.mail_command(from, eightbit, smtputf8);
        cmds.push_str(&format!("RCPT TO:<{to}>\r\n"));
        self.send(cmds.as_bytes()).await?;
        let mail = self.read_reply().await?;
        // RFC 2920 3.1: the RCPT was sent regardless and gets a reply of its own (a 503 after
        // a refused MAIL), which must be read to stay in step.
        let rcpt = self.read_reply().await?;
        self.in_transaction = mail.is_positive();
        Ok(if mail.is_positive() { rcpt } else { mail })
    }

    pub async fn rcpt(&mut self, to: &str) -> Result<SmtpReply, RelayError> {
        self.command(format!("RCPT TO:<{to}>\r\n").as_bytes()).await
    }

    /// DATA, the message dot-stuffed (RFC 5321 4.5.2), the end marker, and the final reply.
    /// `message` has CRLF line ends only (the DATA reader guarantees it).
    pub async fn data(&mut self, message: &[u8]) -> Result<SmtpReply, RelayError> {
        let r = self.command(b"DATA\r\n").await?;
        if r.code != 354 {
            self.in_transaction = false;
            return Ok(r);
        }
        // In pieces of about RELAY_PIECE octets: relaying a large message never holds a second,
        // dot-stuffed copy of it.
        let mut piece = Vec::with_capacity(RELAY_PIECE.min(message.len()) + 1024);
        let mut start = 0;
        loop {
            piece.clear();
            start = stuffed_piece(message, start, RELAY_PIECE, &mut piece);
            self.send(&piece).await?;
            if start == message.len() {
                break;
            }
        }
        self.in_transaction = false;
        self.read_reply().await
    }

    /// Aborts the downstream transaction (RSET).
    pub async fn rset(&mut self) -> Result<(), RelayError> {
        if self.in_transaction {
            self.in_transaction = false;
            self.command(b"RSET\r\n").await?;
        }
        Ok(())
    }

    pub async fn quit(mut self) {
        let _ = self.command(b"QUIT\r\n").await;
    }
}

/// Octets of a message dot-stuffed and sent at a time.
const RELAY_PIECE: usize = 256 * 1024;

/// Appends to `out` the piece of `message` that starts at `start` (a line start), about
/// `size` octets ending after an LF, dot-stuffed (RFC 5321 4.5.2: a line that starts with `.`
/// gets one more); the last piece is followed by the end marker. Returns where the next piece
/// starts: `message.len()` after the last. Copies runs between `LF .` with memmem instead of
/// byte by byte.
fn stuffed_piece(message: &[u8], start: usize, size: usize, out: &mut Vec<u8>) -> usize {
    let end = if message.len() - start <= size {
        message.len()
    } else {
        memchr::memchr(b'\n', &message[start + size..])
            .map_or(message.len(), |p| start + size + p + 1)
    };
    let piece = &message[start..end];
    if piece.first() == Some(&b'.') {
        out.push(b'.');
    }
    let mut copied = 0;
    for p in memchr::memmem::find_iter(piece, b"\n.") {
        out.extend_from_slice(&piece[copied..=p]);
        out.push(b'.');
        copied = p + 1;
    }
    out.extend_from_slice(&piece[copied..]);
    if end == message.len() {
        if !message.is_empty() && !message.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
    end
}

/// Turns an I/O error while talking to the downstream into a [`RelayError`].
impl From<io::Error> for RelayError {
    fn from(e: io::Error) -> Self {
        RelayError::Lost(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::stuffed_piece;

    /// The whole message as `data` sends it, in pieces of `size`.
    fn dot_stuffed(message: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            start = stuffed_piece(message, start, size, &mut out);
            if start == message.len() {
                return out;
            }
        }
    }

    /// The byte-at-a-time definition that `dot_stuffed` must match.
    fn reference(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        for &b in message {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !message.is_empty() && !message.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn dot_stuffing_matches_the_definition() {
        for m in [
            &b""[..],
            b".",
            b"..",
            b".\r\n",
            b"a\r\n.\r\n",
            b".a\r\n..b\r\n...\r\nc.d\r\n.",
            b"Subject: x\r\n\r\n.\r\n.\r\n\r\n.end",
            b"no final crlf",
            b"\r\n\r\n.",
        ] {
            for size in [1, 2, 3, 1 << 20] {
                assert_eq!(
                    dot_stuffed(m, size),
                    reference(m),
                    "{:?} in pieces of {size}",
                    String::from_utf8_lossy(m)
                );
            }
        }
        assert_eq!(dot_stuffed(b"a\r\n.b\r\n", 1), b"a\r\n..b\r\n.\r\n");
    }
}
