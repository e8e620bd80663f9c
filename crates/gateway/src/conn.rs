//! One client connection: a plain or TLS stream with our own read buffer, so that we always know
//! what the client pipelined (RFC 2920) and can refuse plaintext pipelined after STARTTLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::data::DotReader;

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the plain stream is being upgraded to TLS.
    Closed,
}

fn closed<T>() -> Poll<io::Result<T>> {
    Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Closed => closed(),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, b),
            Stream::Closed => closed(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::Closed => closed(),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Closed => closed(),
        }
    }
}

/// What [`Conn::read_line`] found.
pub(crate) enum Line {
    /// A complete line, LF included.
    Line(Vec<u8>),
    /// The line was longer than allowed; it was read to its LF and dropped.
    TooLong,
}

pub(crate) struct Conn {
    pub stream: Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
}

/// Read size inside DATA.
const DATA_CHUNK: usize = 16 * 1024;
/// Read size for command lines: a session that only talks (or idles) keeps a small buffer;
/// the buffer grows to `DATA_CHUNK` at its first DATA.
const COMMAND_CHUNK: usize = 1024;

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Conn {
            stream: Stream::Plain(stream),
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::with_capacity(1024),
        }
    }

    /// Bytes the client sent that we have not consumed yet.
    pub fn has_buffered_input(&self) -> bool {
        self.rpos < self.rbuf.len()
    }

    /// Drops unconsumed input (after refusing pipelined plaintext at STARTTLS).
    pub fn discard_input(&mut self) {
        self.rbuf.clear();
        self.rpos = 0;
    }

    async fn fill(&mut self, chunk: usize) -> io::Result<usize> {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
        // Replies are flushed only when we are about to wait for the client (RFC 2920 3.1).
        self.flush().await?;
        // `read_buf` fills spare capacity and sets the length only for bytes read, so a read
        // cancelled by shutdown or a timeout leaves the buffer as it was.
        self.rbuf.reserve(chunk);
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        Ok(n)
    }

    /// Reads one command line of at most `max` octets. EOF is `UnexpectedEof`.
    pub async fn read_line(&mut self, max: usize) -> io::Result<Line> {
        let mut too_long = false;
        let mut line = Vec::new();
        loop {
            let avail = &self.rbuf[self.rpos..];
            if let Some(p) = memchr::memchr(b'\n', avail) {
                if !too_long && line.len() + p < max {
                    line.extend_from_slice(&avail[..=p]);
                } else {
                    too_long = true;
                }
                self.rpos += p + 1;
                return Ok(if too_long {
                    Line::TooLong
                } else {
                    Line::Line(line)
                });
            }
            if !too_long {
                if line.len() + avail.len() >= max {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(avail);
                }
            }
            self.rpos = self.rbuf.len();
            if self.fill(COMMAND_CHUNK).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Feeds the DATA reader until it has seen the end marker.
    pub async fn read_data(&mut self, reader: &mut DotReader) -> io::Result<()> {
        loop {
            if self.has_buffered_input() {
                if let Some(n) = reader.feed(&self.rbuf[self.rpos..]) {
                    self.rpos += n;
                    return Ok(());
                }
                self.rpos = self.rbuf.len();
            }
            if self.fill(DATA_CHUNK).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Queues a reply; it is sent at the next flush.
    pub fn reply(&mut self, text: &str) {
        self.wbuf.extend_from_slice(text.as_bytes());
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await?;
            self.wbuf.clear();
        }
        Ok(())
    }
}
