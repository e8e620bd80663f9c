//! The milter wire format (Sendmail's libmilter protocol, version 6): packets, the commands an
//! MTA sends and the replies we write.
//!
//! There is no RFC. The references are Sendmail's `include/libmilter/mfdef.h` (the letters and
//! bit values), `libmilter/docs/` (the semantics) and Postfix's `src/milter/milter8.c` (the
//! other side as Postfix implements it); `mfdef.h` names are kept so they can be grepped.
//!
//! A packet is a 4-octet big-endian length `n`, then `n` octets: one command or reply letter
//! and `n - 1` octets of data. Strings in the data end in NUL.
//!
//! **Boundary:** this module only splits bytes into typed commands and writes replies. It
//! never panics on input; a malformed packet is a [`ProtocolError`] and the session closes.

use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version we speak (mfdef.h `SMFI_PROT_VERSION`).
pub const VERSION: u32 = 6;
/// The oldest MTA protocol version we accept: 2 is Sendmail 8.11, the first with OPTNEG.
pub const MIN_VERSION: u32 = 2;
/// Largest body chunk we send in one SMFIR_REPLBODY (mfdef.h `MILTER_CHUNK_SIZE`).
pub const CHUNK_SIZE: usize = 65535;

/// Commands, MTA to milter (mfdef.h `SMFIC_*`).
pub mod cmd {
    pub const ABORT: u8 = b'A';
    pub const BODY: u8 = b'B';
    pub const CONNECT: u8 = b'C';
    pub const MACRO: u8 = b'D';
    pub const BODYEOB: u8 = b'E';
    pub const HELO: u8 = b'H';
    pub const QUIT_NC: u8 = b'K';
    pub const HEADER: u8 = b'L';
    pub const MAIL: u8 = b'M';
    pub const EOH: u8 = b'N';
    pub const OPTNEG: u8 = b'O';
    pub const QUIT: u8 = b'Q';
    pub const RCPT: u8 = b'R';
    pub const DATA: u8 = b'T';
    pub const UNKNOWN: u8 = b'U';
}

/// Replies, milter to MTA (mfdef.h `SMFIR_*`).
pub mod reply {
    pub const ACCEPT: u8 = b'a';
    pub const REPLBODY: u8 = b'b';
    pub const CONTINUE: u8 = b'c';
    pub const DISCARD: u8 = b'd';
    pub const ADDHEADER: u8 = b'h';
    pub const INSHEADER: u8 = b'i';
    pub const CHGHEADER: u8 = b'm';
    pub const OPTNEG: u8 = b'O';
    pub const PROGRESS: u8 = b'p';
    pub const QUARANTINE: u8 = b'q';
    pub const REJECT: u8 = b'r';
    pub const TEMPFAIL: u8 = b't';
    pub const REPLYCODE: u8 = b'y';
}

/// What the milter may do at end of message, negotiated in OPTNEG (mfdef.h `SMFIF_*`).
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
}

/// Protocol steps the milter does not want, or will not answer (mfdef.h `SMFIP_*`).
pub mod proto {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    /// Header values keep their leading space, both ways (milter8.c `MILTER8_HDR_SPACE`).
    pub const HDR_LEADSPC: u32 = 0x100000;
}

/// Macro stages for the symbol lists in our OPTNEG reply (mfdef.h `SMFIM_*`).
pub mod stage {
    pub const CONNECT: u32 = 0;
    pub const HELO: u32 = 1;
    pub const ENVFROM: u32 = 2;
    pub const ENVRCPT: u32 = 3;
    pub const DATA: u32 = 4;
    pub const EOM: u32 = 5;
    pub const EOH: u32 = 6;
}

/// A packet we cannot use. The session ends; the MTA applies its default action
/// (Postfix `milter_default_action`, Sendmail's `F=` flags).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("empty packet (length 0)")]
    Empty,
    #[error("packet of {0} octets is over the limit of {1}")]
    TooLarge(usize, usize),
    #[error("unknown command {0:?}")]
    UnknownCommand(char),
    #[error("malformed {0} packet")]
    Malformed(&'static str),
}

/// One command from the MTA, borrowing from the packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
    },
    /// Macros for the command `stage` that follows (`'C'`, `'M'`, ...): name/value pairs as
    /// NUL-terminated strings, read with [`macro_pairs`].
    Macro {
        stage: u8,
        data: &'a [u8],
    },
    Connect {
        hostname: &'a [u8],
        /// `b'4'`, `b'6'`, `b'L'` (unix socket) or `b'U'` (unknown).
        family: u8,
        port: u16,
        address: &'a [u8],
    },
    Helo(&'a [u8]),
    /// `<address>` then ESMTP parameters.
    Mail(Vec<&'a [u8]>),
    Rcpt(Vec<&'a [u8]>),
    Data,
    Header {
        name: &'a [u8],
        value: &'a [u8],
    },
    EndOfHeaders,
    Body(&'a [u8]),
    /// End of message; libmilter also accepts a last body chunk here.
    EndOfMessage(&'a [u8]),
    Abort,
    Quit,
    /// Quit this SMTP session but keep the milter connection for the next (protocol 6).
    QuitNewConnection,
    Unknown(&'a [u8]),
}

/// Splits NUL-terminated strings. A missing NUL after the last string is tolerated; empty
/// input gives no strings.
fn strings(data: &[u8]) -> Vec<&[u8]> {
    let data = data.strip_suffix(b"\0").unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0).collect()
}

/// The first NUL-terminated string (all of `data` when there is no NUL).
fn first_str(data: &[u8]) -> &[u8] {
    memchr::memchr(0, data).map_or(data, |end| &data[..end])
}

/// The name/value pairs of a MACRO packet's data. An odd count means a name without its value:
/// the pairs before it are kept.
pub fn macro_pairs(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let data = data.strip_suffix(b"\0").unwrap_or(data);
    let mut parts = data.split(|&b| b == 0).filter(move |_| !data.is_empty());
    std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
}

/// The first NUL-terminated string and the rest.
fn cstr(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, data)?;
    Some((&data[..end], &data[end + 1..]))
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses one packet (letter + data, without the length).
pub fn parse(packet: &[u8]) -> Result<Command<'_>, ProtocolError> {
    let (&letter, data) = packet.split_first().ok_or(ProtocolError::Empty)?;
    Ok(match letter {
        cmd::OPTNEG => {
            let (Some(version), Some(actions), Some(protocol)) =
                (be32(data, 0), be32(data, 4), be32(data, 8))
            else {
                return Err(ProtocolError::Malformed("OPTNEG"));
            };
            Command::OptNeg {
                version,
                actions,
                protocol,
            }
        }
        cmd::MACRO => {
            let (&stage, data) = data
                .split_first()
                .ok_or(ProtocolError::Malformed("MACRO"))?;
            Command::Macro { stage, data }
        }
        cmd::CONNECT => {
            let (hostname, rest) = cstr(data).ok_or(ProtocolError::Malformed("CONNECT"))?;
            let (&family, rest) = rest
                .split_first()
                .ok_or(ProtocolError::Malformed("CONNECT"))?;
            let (port, address) = if family == b'U' {
                (0, &b""[..])
            } else {
                let p = rest.get(..2).ok_or(ProtocolError::Malformed("CONNECT"))?;
                let address = &rest[2..];
                let address = address.strip_suffix(b"\0").unwrap_or(address);
                (u16::from_be_bytes([p[0], p[1]]), address)
            };
            Command::Connect {
                hostname,
                family,
                port,
                address,
            }
        }
        cmd::HELO => Command::Helo(first_str(data)),
        cmd::MAIL => Command::Mail(strings(data)),
        cmd::RCPT => Command::Rcpt(strings(data)),
        cmd::DATA => Command::Data,
        cmd::HEADER => {
            let (name, rest) = cstr(data).ok_or(ProtocolError::Malformed("HEADER"))?;
            let value = rest.strip_suffix(b"\0").unwrap_or(rest);
            if name.is_empty() || memchr::memchr(0, value).is_some() {
                return Err(ProtocolError::Malformed("HEADER"));
            }
            Command::Header { name, value }
        }
        cmd::EOH => Command::EndOfHeaders,
        cmd::BODY => Command::Body(data),
        cmd::BODYEOB => Command::EndOfMessage(data),
        cmd::ABORT => Command::Abort,
        cmd::QUIT => Command::Quit,
        cmd::QUIT_NC => Command::QuitNewConnection,
        cmd::UNKNOWN => Command::Unknown(first_str(data)),
        other => return Err(ProtocolError::UnknownCommand(other as char)),
    })
}

/// The octets read from the MTA and not yet handled. One read takes whatever the MTA has
/// written (with the no-reply steps negotiated, usually a whole message's packets at once) and
/// [`PacketReader::next`] hands out every complete packet in place: no read per packet, no copy
/// per packet.
#[derive(Debug)]
pub struct PacketReader {
    /// `buf[start..]` is not handled yet; reads append at `buf.len()`.
    buf: Vec<u8>,
    start: usize,
}

/// The read size a connection starts with: a typical message in one read, and a body chunk
/// of the MTA's (at most 65535 octets) without growing.
pub const READ_BUFFER: usize = 64 * 1024;

impl Default for PacketReader {
    fn default() -> Self {
        Self::with_capacity(READ_BUFFER)
    }
}

impl PacketReader {
    pub fn with_capacity(capacity: usize) -> Self {
        PacketReader {
            buf: Vec::with_capacity(capacity),
            start: 0,
        }
    }

    /// The next complete packet already read (letter + data, without the length), or `None`
    /// when more octets must be read first. A length of 0 or over `max` is an error as soon as
    /// its 4 octets are in, before the rest is read.
    pub fn next(&mut self, max: usize) -> Result<Option<&[u8]>, ProtocolError> {
        let avail = &self.buf[self.start..];
        let Some(n) = be32(avail, 0) else {
            return Ok(None);
        };
        let n = n as usize;
        if n == 0 {
            return Err(ProtocolError::Empty);
        }
        if n > max {
            return Err(ProtocolError::TooLarge(n, max));
        }
        if avail.len() - 4 < n {
            return Ok(None);
        }
        let at = self.start + 4;
        self.start = at + n;
        Ok(Some(&self.buf[at..at + n]))
    }

    /// Whether every octet read so far was handed out (a clean place for the stream to end).
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// Reads what the MTA has sent, at least one octet; `Ok(0)` at end of stream. Room is made
    /// for the whole packet being read (its length was checked by [`PacketReader::next`]).
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> std::io::Result<usize> {
        if self.start == self.buf.len() {
            self.buf.clear();
        } else if self.start > 0 {
            // A packet's first part: to the front (each octet moves at most once).
            self.buf.drain(..self.start);
        }
        self.start = 0;
        let need = be32(&self.buf, 0).map_or(4, |n| n as usize + 4);
        let spare = self.buf.capacity() - self.buf.len();
        let want = need.saturating_sub(self.buf.len()).max(4096);
        if spare < want {
            self.buf.reserve(want);
        }
        reader.read_buf(&mut self.buf).await
    }

    /// Gives back memory a large packet took, once nothing is pending.
    pub fn shrink(&mut self) {
        if self.is_empty() && self.buf.capacity() > READ_BUFFER {
            *self = Self::default();
        }
    }
}

/// One reply to the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
        /// Macro names wanted per stage (`stage::*`, space-separated names).
        macros: Vec<(u32, String)>,
    },
    Continue,
    Accept,
    Reject,
    Tempfail,
    Discard,
    Progress,
    /// `"550 5.7.1 text"`; `%` is doubled on the wire because Sendmail treats the text as a
    /// format string (milter8.c SMFIR_REPLYCODE).
    ReplyCode(String),
    Quarantine(String),
    /// Appends a header field. `value` is sent as given: the caller adds the leading space
    /// when HDR_LEADSPC was negotiated, and folds with LF.
    AddHeader {
        name: String,
        value: String,
    },
    /// Inserts a header field before the `index`-th one (0 = at the top).
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// Changes the `index`-th (from 1) field called `name`; an empty value deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// One chunk of the replacement body (CRLF line ends, at most [`CHUNK_SIZE`]).
    ReplaceBody(Vec<u8>),
}

fn push_cstr(out: &mut Vec<u8>, s: &[u8]) {
    // A NUL inside would end the string early on the other side: never send one.
    let at = out.len();
    out.extend_from_slice(s);
    if memchr::memchr(0, s).is_some() {
        for b in &mut out[at..] {
            if *b == 0 {
                *b = b' ';
            }
        }
    }
    out.push(0);
}

impl Reply {
    /// Appends the packet (length, letter, data) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        match self {
            Reply::OptNeg {
                version,
                actions,
                protocol,
                macros,
            } => {
                out.push(reply::OPTNEG);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&actions.to_be_bytes());
                out.extend_from_slice(&protocol.to_be_bytes());
                for (stage, names) in macros {
                    out.extend_from_slice(&stage.to_be_bytes());
                    push_cstr(out, names.as_bytes());
                }
            }
            Reply::Continue => out.push(reply::CONTINUE),
            Reply::Accept => out.push(reply::ACCEPT),
            Reply::Reject => out.push(reply::REJECT),
            Reply::Tempfail => out.push(reply::TEMPFAIL),
            Reply::Discard => out.push(reply::DISCARD),
            Reply::Progress => out.push(reply::PROGRESS),
            Reply::ReplyCode(text) => {
                out.push(reply::REPLYCODE);
                push_cstr(out, text.replace('%', "%%").as_bytes());
            }
            Reply::Quarantine(reason) => {
                out.push(reply::QUARANTINE);
                push_cstr(out, reason.as_bytes());
            }
            Reply::AddHeader { name, value } => {
                out.push(reply::ADDHEADER);
                push_cstr(out, name.as_bytes());
                push_cstr(out, value.as_bytes());
            }
            Reply::InsertHeader { index, name, value } => {
                out.push(reply::INSHEADER);
                out.extend_from_slice(&index.to_be_bytes());
                push_cstr(out, name.as_bytes());
                push_cstr(out, value.as_bytes());
            }
            Reply::ChangeHeader { index, name, value } => {
                out.push(reply::CHGHEADER);
                out.extend_from_slice(&index.to_be_bytes());
                push_cstr(out, name.as_bytes());
                push_cstr(out, value.as_bytes());
            }
            Reply::ReplaceBody(chunk) => {
                out.push(reply::REPLBODY);
                out.extend_from_slice(chunk);
            }
        }
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// The client address of a CONNECT packet. Sendmail writes IPv6 as `IPv6:2001:db8::1`.
pub fn connect_ip(family: u8, address: &[u8]) -> Option<IpAddr> {
    if family != b'4' && family != b'6' {
        return None;
    }
    let s = std::str::from_utf8(address).ok()?.trim();
    let s = s
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("IPv6:"))
        .map_or(s, |_| &s[5..]);
    s.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let mut optneg = vec![b'O'];
        for v in [6u32, 0x1ff, 0x1fffff] {
            optneg.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(
            parse(&optneg),
            Ok(Command::OptNeg {
                version: 6,
                actions: 0x1ff,
                protocol: 0x1fffff
            })
        );
        let Ok(Command::Macro { stage, data }) =
            parse(b"DCj\0mx.example\0{client_addr}\x00192.0.2.1\0")
        else {
            panic!("not a macro packet");
        };
        assert_eq!(stage, b'C');
        assert_eq!(
            macro_pairs(data).collect::<Vec<_>>(),
            vec![
                (&b"j"[..], &b"mx.example"[..]),
                (&b"{client_addr}"[..], &b"192.0.2.1"[..])
            ]
        );
        // A name without its value is dropped; no data, no pairs.
        assert_eq!(
            macro_pairs(b"j\0mx\0i").collect::<Vec<_>>(),
            vec![(&b"j"[..], &b"mx"[..])]
        );
        assert_eq!(macro_pairs(b"").count(), 0);
        assert_eq!(macro_pairs(b"\0").count(), 0);
        assert_eq!(
            parse(b"Hclient.example\0"),
            Ok(Command::Helo(b"client.example"))
        );
        assert_eq!(parse(b"H"), Ok(Command::Helo(b"")));
        assert_eq!(
            parse(b"Cmail.example\x004\x00\x19192.0.2.1\0"),
            Ok(Command::Connect {
                hostname: b"mail.example",
                family: b'4',
                port: 25,
                address: b"192.0.2.1"
            })
        );
        assert_eq!(
            parse(b"Clocalhost\0U"),
            Ok(Command::Connect {
                hostname: b"localhost",
                family: b'U',
                port: 0,
                address: b""
            })
        );
        assert_eq!(
            parse(b"M<a@example.com>\0SIZE=10\0"),
            Ok(Command::Mail(vec![b"<a@example.com>", b"SIZE=10"]))
        );
        assert_eq!(
            parse(b"LSubject\0 hi\n\tthere\0"),
            Ok(Command::Header {
                name: b"Subject",
                value: b" hi\n\tthere"
            })
        );
        assert_eq!(parse(b"Bbody"), Ok(Command::Body(b"body")));
        assert_eq!(parse(b"E"), Ok(Command::EndOfMessage(b"")));
        assert_eq!(parse(b"K"), Ok(Command::QuitNewConnection));
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        assert_eq!(parse(b""), Err(ProtocolError::Empty));
        assert_eq!(parse(b"O\0\0"), Err(ProtocolError::Malformed("OPTNEG")));
        assert_eq!(parse(b"Cno-nul"), Err(ProtocolError::Malformed("CONNECT")));
        assert_eq!(parse(b"Chost\0"), Err(ProtocolError::Malformed("CONNECT")));
        assert_eq!(
            parse(b"Chost\x004\x00"),
            Err(ProtocolError::Malformed("CONNECT"))
        );
        assert_eq!(
            parse(b"Lname-only"),
            Err(ProtocolError::Malformed("HEADER"))
        );
        assert_eq!(
            parse(b"L\0value\0"),
            Err(ProtocolError::Malformed("HEADER"))
        );
        assert_eq!(parse(b"D"), Err(ProtocolError::Malformed("MACRO")));
        assert_eq!(parse(b"Z"), Err(ProtocolError::UnknownCommand('Z')));
        // Every prefix of every valid packet parses or fails, never panics.
        for p in [&b"Cmail.example\x004\x00\x19192.0.2.1\0"[..], b"DCj\0x\0y"] {
            for i in 0..p.len() {
                let _ = parse(&p[..i]);
            }
        }
    }

    #[test]
    fn replies_encode_with_length() {
        let mut out = Vec::new();
        Reply::Continue.encode(&mut out);
        assert_eq!(out, b"\0\0\0\x01c");
        out.clear();
        Reply::ReplyCode("550 5.7.1 100% sure".into()).encode(&mut out);
        assert_eq!(&out[4..], b"y550 5.7.1 100%% sure\0");
        assert_eq!(out[3] as usize, out.len() - 4);
        out.clear();
        Reply::InsertHeader {
            index: 0,
            name: "X-A".into(),
            value: " b\0c".into(),
        }
        .encode(&mut out);
        assert_eq!(&out[4..], b"i\0\0\0\0X-A\0 b c\0");
    }

    #[test]
    fn connect_addresses() {
        assert_eq!(
            connect_ip(b'4', b"192.0.2.1"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            connect_ip(b'6', b"IPv6:2001:db8::1"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(connect_ip(b'L', b"/tmp/sock"), None);
        assert_eq!(connect_ip(b'4', b"garbage"), None);
    }
}
