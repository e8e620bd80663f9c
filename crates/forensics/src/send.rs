//! The one SMTP client (RFC 5321): the gateway's relay to its downstream MTA and every report,
//! digest and release that unspoof sends (ARCHITECTURE.md, "Who speaks SMTP").
//!
//! [`Client`] keeps one connection open across transactions (RSET between them), gives each
//! command's reply back as it is (so the gateway can hand its client the downstream's own
//! per-recipient replies), pipelines MAIL with the first RCPT when the server offers PIPELINING
//! (RFC 2920), bounds every connect, read and write by one timeout, and streams DATA dot-stuffed
//! in pieces. [`send`] is one whole transaction on a fresh connection, for a report.

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long the connect and each reply or write of [`send`] may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `message` from `from` to `to` through the SMTP server at `relay` (host:port), in one
/// transaction; every recipient must be accepted. Returns the server's end-of-data reply.
pub async fn send(
    relay: &str,
    helo: &str,
    from: &str,
    to: &[String],
    message: &[u8],
) -> Result<String, String> {
    let failed = |e: SendError| format!("{relay}: {e}");
    let refused = |r: Reply| format!("the server refused: {r}");
    let mut client = Client::connect(relay, helo, REPLY_TIMEOUT)
        .await
        .map_err(failed)?;
    let mut rcpts = to.iter();
    if let Some(first) = rcpts.next() {
        let r = client
            .mail_rcpt(from, false, false, first)
            .await
            .map_err(failed)?;
        if !r.is_positive() {
            return Err(refused(r));
        }
    } else {
        let r = client.mail(from, false, false).await.map_err(failed)?;
        if !r.is_positive() {
            return Err(refused(r));
        }
    }
    for rcpt in rcpts {
        let r = client.rcpt(rcpt).await.map_err(failed)?;
        if !r.is_positive() {
            return Err(refused(r));
        }
    }
    let message: Cow<[u8]> = unspoof_message::to_crlf(message);
    let r = client.data(&message).await.map_err(failed)?;
    client.quit().await;
    if r.code == 250 {
        Ok(r.to_string())
    } else {
        Err(refused(r))
    }
}

/// A reply from the server (RFC 5321 4.2), possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// One line to pass back to a client of ours (the gateway's): the code and first line of
    /// text. Control characters are dropped, so the server cannot inject reply lines.
    pub fn to_client_line(&self) -> String {
        let text: String = self
            .lines
            .first()
            .map(|s| s.chars().filter(|c| !c.is_control()).collect())
            .unwrap_or_default();
        format!("{} {}\r\n", self.code, text)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// Why the server could not be used (the gateway answers 451 to its client for either).
#[derive(Debug)]
pub enum SendError {
    /// Could not connect, or the greeting/EHLO was refused.
    Unavailable(String),
    /// Timed out or the connection broke mid-transaction.
    Lost(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unavailable(s) => write!(f, "server unavailable: {s}"),
            SendError::Lost(s) => write!(f, "connection lost: {s}"),
        }
    }
}

/// An open SMTP session with a server; one transaction after another on one connection.
pub struct Client {
    io: BufReader<TcpStream>,
    timeout: Duration,
    pub eightbit: bool,
    pub smtputf8: bool,
    /// The server offers PIPELINING (RFC 2920): MAIL and the first RCPT go in one write.
    pub pipelining: bool,
    /// A MAIL transaction is open.
    pub in_transaction: bool,
}

impl Client {
    /// Connects to `addr`, reads the greeting and sends EHLO `helo` (HELO if EHLO is refused).
    pub async fn connect(addr: &str, helo: &str, wait: Duration) -> Result<Self, SendError> {
        let tcp = match timeout(wait, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Unavailable(e.to_string())),
            Err(_) => return Err(SendError::Unavailable("connect timed out".into())),
        };
        let _ = tcp.set_nodelay(true);
        let mut d = Client {
            io: BufReader::new(tcp),
            timeout: wait,
            eightbit: false,
            smtputf8: false,
            pipelining: false,
            in_transaction: false,
        };
        let unavailable = |e: SendError| SendError::Unavailable(e.to_string());
        let greeting = d.read_reply().await.map_err(unavailable)?;
        if greeting.code != 220 {
            return Err(SendError::Unavailable(format!(
                "greeting refused: {greeting}"
            )));
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
                return Err(SendError::Unavailable(format!("HELO refused: {helo}")));
            }
        }
        Ok(d)
    }

    async fn read_reply(&mut self) -> Result<Reply, SendError> {
        let mut lines = Vec::new();
        let mut code = 0u16;
        loop {
            let mut line = String::new();
            let n = match timeout(self.timeout, self.io.read_line(&mut line)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(SendError::Lost(e.to_string())),
                Err(_) => return Err(SendError::Lost("reply timed out".into())),
            };
            if n == 0 {
                return Err(SendError::Lost("connection closed".into()));
            }
            if line.len() > 4096 || lines.len() > 100 {
                return Err(SendError::Lost("reply too long".into()));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let parsed: Option<u16> = line.get(..3).and_then(|c| c.parse().ok());
            let Some(c) = parsed.filter(|c| (200..600).contains(c)) else {
                return Err(SendError::Lost(format!("malformed reply {line:?}")));
            };
            if code != 0 && c != code {
                return Err(SendError::Lost(format!("inconsistent reply {line:?}")));
            }
            code = c;
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        match timeout(self.timeout, async {
            self.io.get_mut().write_all(bytes).await?;
            self.io.get_mut().flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SendError::Lost(e.to_string())),
            Err(_) => Err(SendError::Lost("write timed out".into())),
        }
    }

    async fn command(&mut self, line: &[u8]) -> Result<Reply, SendError> {
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

    /// MAIL FROM; `eightbit`/`smtputf8` are declared when the server supports them.
    pub async fn mail(
        &mut self,
        from: &str,
        eightbit: bool,
        smtputf8: bool,
    ) -> Result<Reply, SendError> {
        let cmd = self.mail_command(from, eightbit, smtputf8);
        let r = self.command(cmd.as_bytes()).await?;
        self.in_transaction = r.is_positive();
        Ok(r)
    }

    /// Opens the transaction with its first recipient: MAIL and RCPT in one write when the
    /// server offers PIPELINING (one round trip instead of two), else one after the other.
    /// Returns the reply to show for this RCPT: MAIL's when MAIL was refused, else RCPT's.
    pub async fn mail_rcpt(
        &mut self,
        from: &str,
        eightbit: bool,
        smtputf8: bool,
        to: &str,
    ) -> Result<Reply, SendError> {
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

    pub async fn rcpt(&mut self, to: &str) -> Result<Reply, SendError> {
        self.command(format!("RCPT TO:<{to}>\r\n").as_bytes()).await
    }

    /// DATA, the message dot-stuffed (RFC 5321 4.5.2), the end marker, and the final reply.
    /// `message` has CRLF line ends only (the gateway's DATA reader guarantees it; [`send`]
    /// converts).
    pub async fn data(&mut self, message: &[u8]) -> Result<Reply, SendError> {
        let r = self.command(b"DATA\r\n").await?;
        if r.code != 354 {
            self.in_transaction = false;
            return Ok(r);
        }
        // In pieces of about DATA_PIECE octets: sending a large message never holds a second,
        // dot-stuffed copy of it.
        let mut piece = Vec::with_capacity(DATA_PIECE.min(message.len()) + 1024);
        let mut start = 0;
        loop {
            piece.clear();
            start = stuffed_piece(message, start, DATA_PIECE, &mut piece);
            self.send(&piece).await?;
            if start == message.len() {
                break;
            }
        }
        self.in_transaction = false;
        self.read_reply().await
    }

    /// Aborts the open transaction (RSET).
    pub async fn rset(&mut self) -> Result<(), SendError> {
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
const DATA_PIECE: usize = 256 * 1024;

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

/// Turns an I/O error while talking to the server into a [`SendError`].
impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        SendError::Lost(e.to_string())
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
