//! Reports from an IMAP mailbox (RFC 9051 / RFC 3501 commands only): IMAPS (or plain IMAP on
//! loopback), LOGIN, SELECT, UID SEARCH, then per message `UID FETCH BODY.PEEK[]`, the store
//! commit, and only then the message's move (`UID MOVE`, RFC 6851, else COPY + `\Deleted` +
//! EXPUNGE) or deletion. A connection that breaks (the server stopped, the network) loses
//! nothing: a message is moved only after its report is committed, and one fetched again after a
//! reconnect is a duplicate the store skips. With `watch`, the mailbox is waited on with IDLE
//! (RFC 2177) when the server offers it, else polled, and a lost connection is retried.
//!
//! A minimal client of our own: the commands above need a line reader that understands
//! literals (`{n}`) and nothing more.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::{Ingestor, InputOutcome};

/// How long one server reply (or a line of it) may take before the connection counts as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest response line without its literals; a longer one is a broken or hostile server.
const MAX_LINE: usize = 64 * 1024;
/// Largest message fetched; larger messages are left in the mailbox and reported.
const MAX_LITERAL: usize = 64 << 20;
/// IDLE is renewed this often (RFC 2177: clients should re-issue it at least every 29 minutes).
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);

/// Where the reports are and what to do with them once stored.
#[derive(Debug, Clone)]
pub struct ImapSettings {
    /// `imaps://user@host:port/mailbox` (IMAPS, port 993 by default) or `imap://...` (plain:
    /// only to a loopback address).
    pub url: String,
    /// The password (from a file or the environment, never the command line).
    pub password: String,
    /// PEM CA certificates trusted besides the public roots (a private server's CA).
    pub ca_file: Option<PathBuf>,
    /// Move stored (and refused, kept aside) messages here. Default `unspoof-processed`.
    pub move_to: Option<String>,
    /// Delete them instead of moving.
    pub delete: bool,
    /// Keep running: wait for new mail (IDLE, else polling) and reconnect when the connection
    /// is lost.
    pub watch: bool,
    /// Seconds between polls (and between reconnect attempts) with `watch`.
    pub poll_secs: u64,
}

/// A parsed `imap[s]://user@host[:port][/mailbox]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    user: String,
    host: String,
    port: u16,
    mailbox: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("imaps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("imap://") {
        (false, r)
    } else {
        return Err(format!("{url:?}: not an imaps:// or imap:// URL"));
    };
    let (user, rest) = rest
        .rsplit_once('@')
        .ok_or_else(|| format!("{url:?}: no user (imaps://user@host/mailbox)"))?;
    let (hostport, mailbox) = rest.split_once('/').unwrap_or((rest, "INBOX"));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>().map_err(|_| format!("{url:?}: bad port"))?,
        ),
        _ => (hostport, if tls { 993 } else { 143 }),
    };
    Ok(Target {
        tls,
        user: percent_decode(user),
        host: host.to_string(),
        port,
        mailbox: if mailbox.is_empty() {
            "INBOX".into()
        } else {
            percent_decode(mailbox)
        },
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Called with the outcomes of each committed batch (the command line prints them).
pub type Progress<'a> = dyn FnMut(&[(String, InputOutcome)]) + Send + 'a;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One response: its lines (literals cut out) and the literals, in order.
#[derive(Debug, Default)]
struct Response {
    untagged: Vec<(String, Vec<Vec<u8>>)>,
    /// The tagged status line: `OK ...`, `NO ...`, `BAD ...`.
    status: String,
}

struct Session {
    io: BufReader<Box<dyn Stream>>,
    tag: u32,
    capabilities: Vec<String>,
}

/// An IMAP failure: `Lost` is the connection (try again later), `Refused` the server's `NO`/
/// `BAD` (configuration: wrong password, no such mailbox).
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("{0}")]
    Refused(String),
    #[error("store: {0}")]
    Store(#[from] unspoof_store::StoreError),
}

fn lost(e: impl std::fmt::Display) -> ImapError {
    ImapError::Lost(e.to_string())
}

/// An IMAP quoted string (RFC 9051 4.3).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Session {
    async fn connect(t: &Target, ca_file: Option<&PathBuf>) -> Result<Session, ImapError> {
        let tcp =
            tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect((t.host.as_str(), t.port)))
                .await
                .map_err(|_| lost("connect timed out"))?
                .map_err(lost)?;
        let stream: Box<dyn Stream> = if t.tls {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(ca) = ca_file {
                for cert in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| ImapError::Refused(format!("{}: {e}", ca.display())))?
                {
                    let cert =
                        cert.map_err(|e| ImapError::Refused(format!("{}: {e}", ca.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| ImapError::Refused(format!("{}: {e}", ca.display())))?;
                }
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ImapError::Refused(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(t.host.clone())
                .map_err(|e| ImapError::Refused(format!("{}: {e}", t.host)))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| lost(format!("TLS: {e}")))?;
            Box::new(tls)
        } else {
            let loopback = tcp
                .peer_addr()
                .map(|a| a.ip().is_loopback())
                .unwrap_or(false);
            if !loopback {
                return Err(ImapError::Refused(
                    "plain imap:// only to a loopback address (the password would travel in clear): use imaps://".into(),
                ));
            }
            Box::new(tcp)
        };
        let mut s = Session {
            io: BufReader::new(stream),
            tag: 0,
            capabilities: Vec::new(),
        };
        let (greeting, _) = s.read_line().await?;
        if !greeting.starts_with("* OK") && !greeting.starts_with("* PREAUTH") {
            return Err(ImapError::Refused(format!("greeting: {greeting}")));
        }
        Ok(s)
    }

    /// Reads one response line with its literals.
    async fn read_line(&mut self) -> Result<(String, Vec<Vec<u8>>), ImapError> {
        let mut text = String::new();
        let mut literals = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(
                REPLY_TIMEOUT,
                (&mut self.io)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut line),
            )
            .await
            .map_err(|_| lost("the server did not answer in time"))?
            .map_err(lost)?;
            if n == 0 {
                return Err(lost("the server closed the connection"));
            }
            if !line.ends_with(b"\n") {
                return Err(lost("a response line too long or cut off"));
            }
            let l = String::from_utf8_lossy(&line);
            let l = l.trim_end_matches(['\r', '\n']);
            // A literal: `{n}` (or `{n+}`) at the end of the line, then n octets.
            if let Some(open) = l.rfind('{')
                && l.ends_with('}')
                && let Ok(size) = l[open + 1..l.len() - 1]
                    .trim_end_matches('+')
                    .parse::<usize>()
            {
                if size > MAX_LITERAL {
                    return Err(ImapError::Refused(format!(
                        "a message of {size} octets is larger than {MAX_LITERAL}"
                    )));
                }
                text.push_str(&l[..open]);
                let mut lit = vec![0; size];
                tokio::time::timeout(REPLY_TIMEOUT, self.io.read_exact(&mut lit))
                    .await
                    .map_err(|_| lost("the server stopped in the middle of a message"))?
                    .map_err(lost)?;
                literals.push(lit);
                continue;
            }
            text.push_str(l);
            return Ok((text, literals));
        }
    }

    /// Sends a command and reads its whole response.
    async fn command(&mut self, cmd: &str) -> Result<Response, ImapError> {
        self.tag += 1;
        let tag = format!("u{}", self.tag);
        self.io
            .get_mut()
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await
            .map_err(lost)?;
        self.io.get_mut().flush().await.map_err(lost)?;
        let mut r = Response::default();
        loop {
            let (line, lits) = self.read_line().await?;
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                r.status = rest.to_string();
                if rest.starts_with("OK") {
                    return Ok(r);
                }
                let shown = if cmd.starts_with("LOGIN") {
                    "LOGIN"
                } else {
                    cmd
                };
                return Err(ImapError::Refused(format!("{shown}: {rest}")));
            }
            if line.starts_with("* CAPABILITY ") || line.contains("[CAPABILITY ") {
                let caps = line
                    .split_once("CAPABILITY ")
                    .map(|(_, c)| c.trim_end_matches(']'))
                    .unwrap_or("");
                self.capabilities = caps
                    .split_whitespace()
                    .map(|c| c.to_ascii_uppercase())
                    .collect();
            }
            r.untagged.push((line, lits));
        }
    }

    fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }
}

/// The UIDs in the mailbox (UID SEARCH ALL), ascending, and its UIDVALIDITY.
async fn open_mailbox(s: &mut Session, mailbox: &str) -> Result<(u64, Vec<u64>), ImapError> {
    let sel = s.command(&format!("SELECT {}", quoted(mailbox))).await?;
    let validity = sel
        .untagged
        .iter()
        .find_map(|(l, _)| {
            l.split_once("[UIDVALIDITY ")
                .and_then(|(_, r)| r.split(']').next())
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    let found = s.command("UID SEARCH ALL").await?;
    let mut uids: Vec<u64> = found
        .untagged
        .iter()
        .filter_map(|(l, _)| l.strip_prefix("* SEARCH"))
        .flat_map(|r| r.split_whitespace().filter_map(|u| u.parse().ok()))
        .collect();
    uids.sort_unstable();
    Ok((validity, uids))
}

/// Moves (or deletes) messages by UID after their reports are committed.
async fn dispose(s: &mut Session, uids: &[u64], settings: &ImapSettings) -> Result<(), ImapError> {
    if uids.is_empty() {
        return Ok(());
    }
    let set = uids
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if settings.delete {
        s.command(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
            .await?;
    } else {
        let to = settings.move_to.as_deref().unwrap_or("unspoof-processed");
        if s.has("MOVE") {
            s.command(&format!("UID MOVE {set} {}", quoted(to))).await?;
            return Ok(());
        }
        s.command(&format!("UID COPY {set} {}", quoted(to))).await?;
        s.command(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
            .await?;
    }
    if s.has("UIDPLUS") {
        s.command(&format!("UID EXPUNGE {set}")).await?;
    } else {
        s.command("EXPUNGE").await?;
    }
    Ok(())
}

/// One pass over the mailbox: every message fetched, stored (a batch at a time), then moved or
/// deleted. Returns the session for IDLE.
async fn pass(
    t: &Target,
    settings: &ImapSettings,
    ingestor: &mut Ingestor,
    print: &mut Progress<'_>,
) -> Result<Session, ImapError> {
    let mut s = Session::connect(t, settings.ca_file.as_ref()).await?;
    s.command("CAPABILITY").await?;
    s.command(&format!(
        "LOGIN {} {}",
        quoted(&t.user),
        quoted(&settings.password)
    ))
    .await?;
    s.command("CAPABILITY").await?;
    if !settings.delete {
        let to = settings.move_to.as_deref().unwrap_or("unspoof-processed");
        // "Already exists" is a NO: fine.
        let _ = s.command(&format!("CREATE {}", quoted(to))).await;
    }
    let (validity, uids) = open_mailbox(&mut s, &t.mailbox).await?;
    let batch = ingestor.config().batch_inputs;
    for chunk in uids.chunks(batch) {
        let mut fetched = Vec::new();
        for uid in chunk {
            let r = s
                .command(&format!("UID FETCH {uid} (UID BODY.PEEK[])"))
                .await?;
            let Some(raw) = r.untagged.into_iter().find_map(|(_, mut lits)| lits.pop()) else {
                continue; // Expunged by someone else meanwhile.
            };
            let source = format!(
                "imap://{}@{}/{};UIDVALIDITY={validity}/;UID={uid}",
                t.user, t.host, t.mailbox
            );
            print(&ingestor.add(&source, &raw).await?);
            fetched.push(*uid);
        }
        // Committed before anything is moved: a break here refetches, and the store skips.
        print(&ingestor.commit().await?);
        dispose(&mut s, &fetched, settings).await?;
    }
    Ok(s)
}

/// Waits for new mail: IDLE until the server says EXISTS (or `IDLE_RENEW`), else a poll
/// interval.
async fn wait_for_mail(mut s: Session, poll: Duration) -> Result<(), ImapError> {
    if !s.has("IDLE") {
        tokio::time::sleep(poll).await;
        let _ = s.command("LOGOUT").await;
        return Ok(());
    }
    s.tag += 1;
    let tag = format!("u{}", s.tag);
    s.io.get_mut()
        .write_all(format!("{tag} IDLE\r\n").as_bytes())
        .await
        .map_err(lost)?;
    s.io.get_mut().flush().await.map_err(lost)?;
    let (cont, _) = s.read_line().await?;
    if !cont.starts_with('+') {
        return Err(ImapError::Refused(format!("IDLE: {cont}")));
    }
    let started = tokio::time::Instant::now();
    loop {
        let left = IDLE_RENEW.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let mut line = Vec::new();
        match tokio::time::timeout(
            left.min(REPLY_TIMEOUT * 10),
            s.io.read_until(b'\n', &mut line),
        )
        .await
        {
            Err(_) => break,
            Ok(Err(e)) => return Err(lost(e)),
            Ok(Ok(0)) => return Err(lost("the server closed the connection")),
            Ok(Ok(_)) => {
                if String::from_utf8_lossy(&line).contains("EXISTS") {
                    break;
                }
            }
        }
    }
    let _ = s.io.get_mut().write_all(b"DONE\r\n").await;
    let _ = s.io.get_mut().flush().await;
    Ok(())
}

/// Ingests the mailbox once, or (with `watch`) until the process is stopped. `print` gets the
/// outcomes as they are committed.
pub async fn ingest(
    settings: &ImapSettings,
    ingestor: &mut Ingestor,
    print: &mut Progress<'_>,
) -> Result<(), ImapError> {
    let t = parse_url(&settings.url).map_err(ImapError::Refused)?;
    let poll = Duration::from_secs(settings.poll_secs.max(1));
    loop {
        match pass(&t, settings, ingestor, print).await {
            Ok(s) if settings.watch => {
                if let Err(e) = wait_for_mail(s, poll).await {
                    eprintln!("unspoof: IMAP {}: {e}; reconnecting", t.host);
                    tokio::time::sleep(poll).await;
                }
            }
            Ok(mut s) => {
                let _ = s.command("LOGOUT").await;
                return Ok(());
            }
            Err(ImapError::Lost(e)) if settings.watch => {
                // What was fetched and not committed is fetched again after the reconnect.
                print(&ingestor.commit().await?);
                eprintln!(
                    "unspoof: IMAP {}: connection lost ({e}); retrying in {poll:?}",
                    t.host
                );
                tokio::time::sleep(poll).await;
            }
            Err(e) => {
                print(&ingestor.commit().await?);
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("imaps://dmarc%40example.org@mail.example.org/Reports").unwrap(),
            Target {
                tls: true,
                user: "dmarc@example.org".into(),
                host: "mail.example.org".into(),
                port: 993,
                mailbox: "Reports".into()
            }
        );
        let t = parse_url("imap://u@127.0.0.1:1143").unwrap();
        assert_eq!((t.tls, t.port, t.mailbox.as_str()), (false, 1143, "INBOX"));
        assert!(parse_url("http://x").is_err());
        assert_eq!(quoted("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
