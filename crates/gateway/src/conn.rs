//! One client connection: a plain or TLS stream with our own read buffer, so that we always know
//! what the client pipelined (RFC 2920) and can refuse plaintext pipelined after STARTTLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

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

/// How slow DATA may arrive: `limits.line_timeout` and `limits.min_data_rate`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataPace {
    pub line_timeout: Duration,
    /// Octets per second; 0: no minimum.
    pub min_rate: u64,
}

impl DataPace {
    /// When the next octet must have arrived by: the current line's end within
    /// `line_timeout`, and `received` octets may take at most `line_timeout + received /
    /// min_rate` seconds since DATA began.
    fn deadline(&self, started: Instant, line_began: Instant, received: u64) -> Instant {
        let line = line_began + self.line_timeout;
        if self.min_rate == 0 {
            return line;
        }
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        line.min(started + self.line_timeout + earned)
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

    /// Reads one command line of at most `max` octets. EOF is `UnexpectedEof`. Once the line
    /// has begun (an octet of it arrived), the rest must arrive within `line_timeout`, else
    /// `TimedOut`: a client trickling a byte now and then cannot hold the session open.
    pub async fn read_line(&mut self, max: usize, line_timeout: Duration) -> io::Result<Line> {
        let mut too_long = false;
        let mut line = Vec::new();
        let mut begun: Option<Instant> = None;
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
            if !avail.is_empty() && begun.is_none() {
                begun = Some(Instant::now());
            }
            self.rpos = self.rbuf.len();
            let n = match begun {
                None => self.fill(COMMAND_CHUNK).await?,
                Some(at) => timeout_at(at + line_timeout, self.fill(COMMAND_CHUNK))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??,
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Feeds the DATA reader until it has seen the end marker. `TimedOut` when the client is
    /// too slow: a line (from one LF to the next) took longer than `pace.line_timeout`, or
    /// the octets so far came in under `pace.min_rate` (see [`DataPace`]).
    pub async fn read_data(&mut self, reader: &mut DotReader, pace: DataPace) -> io::Result<()> {
        let started = Instant::now();
        let mut line_began = started;
        let mut received: u64 = 0;
        loop {
            if self.has_buffered_input() {
                let avail = &self.rbuf[self.rpos..];
                let fed = match reader.feed(avail) {
                    Some(n) => n,
                    None => avail.len(),
                };
                if memchr::memchr(b'\n', &avail[..fed]).is_some() {
                    line_began = Instant::now();
                }
                received += fed as u64;
                self.rpos += fed;
                if reader.is_done() {
                    return Ok(());
                }
            }
            let deadline = pace.deadline(started, line_began, received);
            let n = timeout_at(deadline, self.fill(DATA_CHUNK))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            if n == 0 {
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
