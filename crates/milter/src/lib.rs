//! `unspoof milter`: the unspoof engine inside Postfix or Sendmail, over the milter protocol
//! (version 6, our own implementation).
//!
//! Trust level: talks to the local MTA (which relays what SMTP clients sent, so every octet is
//! untrusted) and to DNS through the engine; reads no files after start; writes only replies
//! and stderr. Anyone who can reach the listening socket can ask for verdicts, so it listens on
//! loopback or a unix socket. **This is the only crate that knows the milter protocol.**
//!
//! The path of one message:
//! 1. [`wire`] reads packets (bounded by [`Limits`]; one read takes every packet the MTA has
//!    sent, [`wire::PacketReader`]) and parses them in place into commands;
//! 2. the session (`session.rs`) negotiates options (no replies before end of message, no DATA
//!    step when the queue id comes with end of message, header values with their leading
//!    space), keeps the envelope from CONNECT/HELO/MAIL/RCPT and the
//!    macros, and puts the message back together from the header and body callbacks
//!    ([`message`]);
//! 3. at end of message the engine decides (asking the store's history itself, when the
//!    milter has one), with SMFIR_PROGRESS while it works;
//! 4. [`actions`] turns the engine's decision into replies one to one: its header edits as
//!    CHGHEADER/INSHEADER/ADDHEADER, a banner's body as REPLBODY, quarantine as the MTA's hold
//!    (plus [`QuarantineStore`]), reject and defer as REPLYCODE with the engine's reply. When
//!    there is no verdict (timeout, oversized message) [`OnError`] decides: tempfail or accept.
//!    A panic in the engine is the engine's defer, never an accept.
//!
//! Entry point: [`Milter`] (builder; [`Milter::start`] returns a [`MilterHandle`], whose
//! `engine` (SIGHUP replaces its policy) and `shutdown` the CLI's one signal loop calls).

pub mod actions;
pub mod config;
pub mod message;
mod session;
pub mod wire;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use unspoof_engine::bounce::OutboundHistory;
use unspoof_engine::contact::ContactHistory;
use unspoof_engine::{Analysis, Engine, Envelope, Outcome};

pub use config::{Limits, Listen, MilterConfig, OnError};

/// Our own faults (configuration, sockets). A refused message is never an `Err`.
#[derive(Debug, thiserror::Error)]
pub enum MilterError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// A message the engine quarantined, for the store.
pub struct Quarantined<'a> {
    /// The message as the MTA handed it to us (CRLF), before our edits.
    pub raw: &'a [u8],
    pub analysis: &'a Analysis,
    pub envelope: &'a Envelope,
    /// The MTA's queue id (macro `i`), under which its held copy can be released.
    pub queue_id: Option<&'a str>,
}

/// The boxed future a [`QuarantineStore`] returns.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Where quarantined messages are copied besides the MTA's own hold queue (the store crate
/// implements it). Returns the stored copy's id, which goes into the quarantine reason the MTA
/// logs. A failure is logged and the MTA still holds the message.
pub trait QuarantineStore: Send + Sync + 'static {
    fn store<'a>(&'a self, message: Quarantined<'a>) -> StoreFuture<'a>;
}

/// What the milter did with one message, for the store's records (`unspoof log search`).
pub struct Decided<'a> {
    /// The engine's analysis; `None` when there was no verdict (see `outcome`).
    pub analysis: Option<&'a Analysis>,
    pub envelope: &'a Envelope,
    /// The MTA's queue id (macro `i`).
    pub queue_id: Option<&'a str>,
    /// The client's name as the MTA resolved it (CONNECT), when it is not `[ip]`.
    pub client_name: Option<&'a str>,
    /// The engine's disposition (`accept`, `tag`, `quarantine`, `reject`, `defer`);
    /// `tempfail` or `unchecked` (no verdict, `on_error` decided); `skipped` (an authenticated
    /// submission, not judged). The same enum as the gateway's records and metrics.
    pub outcome: Outcome,
    /// Reason codes, each once, in the verdict's order; or why there was no verdict.
    pub reasons: Vec<String>,
    /// Where the store put a quarantined copy (its id).
    pub stored_at: Option<&'a str>,
    /// The message size in octets.
    pub size: usize,
    /// Microseconds from end of message to our reply.
    pub latency_us: u64,
}

/// Receives one record per message. Called on the runtime: must not block (the store queues
/// the record and writes it in the background).
pub trait MessageLog: Send + Sync + 'static {
    fn record(&self, message: &Decided<'_>);
}

/// Counters since start.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub refused_connections: AtomicU64,
    pub messages: AtomicU64,
    pub accepted: AtomicU64,
    pub tagged: AtomicU64,
    pub quarantined: AtomicU64,
    pub rejected: AtomicU64,
    pub deferred: AtomicU64,
    pub tempfailed: AtomicU64,
    pub errors: AtomicU64,
    pub protocol_errors: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// MTA connections served.
    pub connections: u64,
    /// Connections closed at once because `max_connections` were open.
    pub refused_connections: u64,
    /// Messages that reached end of message.
    pub messages: u64,
    pub accepted: u64,
    pub tagged: u64,
    pub quarantined: u64,
    pub rejected: u64,
    /// Messages the engine deferred (DNS temperror under `dns_temperror = "defer"`, a panic).
    pub deferred: u64,
    /// Messages answered with a tempfail because of `on_error`.
    pub tempfailed: u64,
    /// Messages without a verdict (timeout, oversized); each then
    /// counts as tempfailed or accepted.
    pub errors: u64,
    /// Connections closed for a malformed or oversized packet, or a timeout.
    pub protocol_errors: u64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections: g(&self.connections),
            refused_connections: g(&self.refused_connections),
            messages: g(&self.messages),
            accepted: g(&self.accepted),
            tagged: g(&self.tagged),
            quarantined: g(&self.quarantined),
            rejected: g(&self.rejected),
            deferred: g(&self.deferred),
            tempfailed: g(&self.tempfailed),
            errors: g(&self.errors),
            protocol_errors: g(&self.protocol_errors),
        }
    }
}

/// What every session shares.
pub(crate) struct Shared {
    pub engine: Engine,
    pub config: MilterConfig,
    pub store: Option<Arc<dyn QuarantineStore>>,
    pub log: Option<Arc<dyn MessageLog>>,
    pub stats: Counters,
}

/// The milter, before it listens.
pub struct Milter {
    config: MilterConfig,
    engine: Engine,
    store: Option<Arc<dyn QuarantineStore>>,
    log: Option<Arc<dyn MessageLog>>,
}

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Milter {
    pub fn new(config: MilterConfig, engine: Engine) -> Self {
        Milter {
            config,
            engine,
            store: None,
            log: None,
        }
    }

    /// Copies quarantined messages into `store` as well as the MTA's hold queue.
    pub fn with_quarantine_store(mut self, store: Arc<dyn QuarantineStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Records every message's envelope, verdict and outcome in `log`.
    pub fn with_message_log(mut self, log: Arc<dyn MessageLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Asks `history` (the store) whether the sender is new to the recipients before each
    /// verdict (`contact.*` reasons).
    pub fn with_contact_history(mut self, history: Arc<dyn ContactHistory>) -> Self {
        self.engine = self.engine.with_contact_history(history);
        self
    }

    /// Asks `history` (the store) whether we sent the message a bounce or auto-reply answers
    /// (`backscatter.*` reasons).
    pub fn with_outbound_history(mut self, history: Arc<dyn OutboundHistory>) -> Self {
        self.engine = self.engine.with_outbound_history(history);
        self
    }

    /// Asks `history` (the store) which keys a signed message's sender used before, and
    /// teaches it the key of a first valid use (trust on first use, `signature.key_changed`).
    pub fn with_signer_history(
        mut self,
        history: Arc<dyn unspoof_engine::signed::SignerHistory>,
    ) -> Self {
        self.engine = self.engine.with_signer_history(history);
        self
    }

    /// Binds every listener and starts serving.
    pub async fn start(self) -> Result<MilterHandle, MilterError> {
        let config = self.config.validated()?;
        let mode = config.unix_mode()?;
        let mut bound = Vec::new();
        let mut addrs = Vec::new();
        let mut sockets = Vec::new();
        for l in &config.listen {
            match l {
                Listen::Inet(addr) => {
                    let listener = bind_tcp(*addr)
                        .map_err(|e| MilterError::Io(format!("listen on {l}"), e))?;
                    let local = listener
                        .local_addr()
                        .map_err(|e| MilterError::Io(format!("listen on {l}"), e))?;
                    addrs.push(Listen::Inet(local));
                    bound.push(Bound::Tcp(listener));
                }
                Listen::Unix(path) => {
                    let listener = bind_unix(path, mode)?;
                    addrs.push(l.clone());
                    sockets.push(path.clone());
                    bound.push(Bound::Unix(listener));
                }
            }
        }
        let slots = Arc::new(Semaphore::new(config.limits.max_connections));
        let shared = Arc::new(Shared {
            engine: self.engine,
            config,
            store: self.store,
            log: self.log,
            stats: Counters::default(),
        });
        let (tx, rx) = watch::channel(false);
        let tasks = bound
            .into_iter()
            .map(|b| tokio::spawn(accept_loop(b, shared.clone(), slots.clone(), rx.clone())))
            .collect();
        Ok(MilterHandle {
            addrs,
            shared,
            shutdown: tx,
            tasks,
            sockets,
        })
    }
}

/// Binds a TCP listener (as `TcpListener::bind` does: SO_REUSEADDR, backlog 128) with
/// TCP_NODELAY set on it. Linux copies the option into every accepted socket, which saves a
/// system call per connection (other systems get it per connection, in [`accept`]).
fn bind_tcp(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Binds a unix socket, replacing a stale socket file (never another kind of file).
fn bind_unix(path: &PathBuf, mode: u32) -> Result<UnixListener, MilterError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let what = || format!("listen on unix:{}", path.display());
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(MilterError::Config(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| MilterError::Io(what(), e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| MilterError::Io(what(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| MilterError::Io(what(), e))?;
    Ok(listener)
}

/// Accepts connections until shutdown, then drains; `true` if every session ended in time.
async fn accept_loop(
    listener: Bound,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) -> bool {
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = session::stopped(shutdown.clone()) => break,
            a = accept(&listener) => a,
        };
        while sessions.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: do not spin.
                eprintln!("unspoof milter: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared
                .stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "unspoof milter: {peer}: refused, max_connections ({}) open",
                shared.config.limits.max_connections
            );
            continue;
        };
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let rx = shutdown.clone();
        sessions.spawn(async move {
            let _permit = permit;
            // Borrowed halves: no lock between reader and writer.
            match stream {
                Stream::Tcp(mut s) => {
                    let (r, w) = s.split();
                    session::run(r, w, peer, shared, rx).await
                }
                Stream::Unix(mut s) => {
                    let (r, w) = s.split();
                    session::run(r, w, peer, shared, rx).await
                }
            }
        });
    }
    drop(listener);
    let drain = shared.config.limits.drain_timeout();
    let drained = tokio::time::timeout(drain, async {
        while sessions.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    sessions.abort_all();
    drained
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Who is connected, for log lines (formatted only when one is written).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    Tcp(std::net::SocketAddr),
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

async fn accept(listener: &Bound) -> std::io::Result<(Stream, Peer)> {
    match listener {
        Bound::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // libmilter-style small replies x the MTA's delayed ACK would cost ~40 ms a
            // message with Nagle on. Linux gave the socket the listener's TCP_NODELAY.
            #[cfg(not(target_os = "linux"))]
            s.set_nodelay(true)?;
            Ok((Stream::Tcp(s), Peer::Tcp(peer)))
        }
        Bound::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), Peer::Unix))
        }
    }
}

/// A running milter.
pub struct MilterHandle {
    addrs: Vec<Listen>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<bool>>,
    sockets: Vec<PathBuf>,
}

impl MilterHandle {
    /// Where it listens, in the order of `listen` (with the real port when 0 was asked for).
    pub fn listening(&self) -> &[Listen] {
        &self.addrs
    }

    /// The first TCP address, if any.
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.addrs.iter().find_map(|l| match l {
            Listen::Inet(a) => Some(*a),
            Listen::Unix(_) => None,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// The engine, e.g. to replace its policy (SIGHUP).
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Stops accepting; idle connections close at once, messages inside a transaction are
    /// finished, up to `drain_timeout`. Returns `true` if every connection ended in time.
    pub async fn shutdown(mut self) -> bool {
        let _ = self.shutdown.send(true);
        let mut all = true;
        for t in std::mem::take(&mut self.tasks) {
            all &= t.await.unwrap_or(false);
        }
        all
    }

    /// Stops at once, like a crash: listeners and every connection are dropped mid-message.
    pub async fn abort(mut self) {
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for MilterHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for path in &self.sockets {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP_NODELAY must be on for every MTA connection (40 ms a message otherwise).
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = bind_tcp(addr.parse().unwrap()) else {
                continue; // no IPv6 here
            };
            let to = listener.local_addr().unwrap();
            let _client = tokio::net::TcpStream::connect(to).await.unwrap();
            let (Stream::Tcp(s), Peer::Tcp(_)) = accept(&Bound::Tcp(listener)).await.unwrap()
            else {
                panic!("not TCP");
            };
            assert!(s.nodelay().unwrap(), "{addr}");
        }
    }
}
