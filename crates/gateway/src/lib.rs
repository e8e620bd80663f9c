//! The unspoof SMTP gateway: the site's single point of entry for mail (`unspoof serve`).
//!
//! Trust level: talks to SMTP clients from the Internet, to the site's downstream MTA and to
//! DNS (PTR lookups only, through the engine's view); reads the TLS and DKIM private keys at startup; writes only under
//! the data directory. **This is the only SMTP server**; it relays, as every other crate
//! sends mail, through the one SMTP client `unspoof_forensics::send` (ARCHITECTURE.md, "Who
//! speaks SMTP").
//!
//! The path of one message:
//! 1. [`session`] reads commands ([`config::Limits`] bound every resource: time per line and
//!    data rate, failed logins ([`auth::AuthThrottle`]), memory of messages in flight
//!    ([`memory`])); relay control and sender binding refuse what they can at MAIL and RCPT.
//! 2. [`data::DotReader`] reads DATA; only `CRLF.CRLF` ends it, and bare CR/LF refuse it
//!    (no SMTP smuggling).
//! 3. Inbound mail is decided by the engine through [`Decide`]; submission mail is
//!    DKIM-signed ([`dkim`]).
//! 4. The message is relayed in-line to `downstream` ([`relay`]) or written into the Maildir
//!    or quarantine ([`store`]) *before* the client hears 250.
//! 5. One JSON line per message goes to the [`store::SessionLog`]; counters to [`metrics`].
//!
//! Entry point: [`Gateway`] (builder; [`Gateway::start`] returns a [`ServeHandle`], whose
//! `reload` and `shutdown` the CLI's one signal loop calls on SIGHUP and SIGTERM).

pub mod auth;
pub mod config;
mod conn;
pub mod data;
pub mod decide;
pub mod dkim;
pub mod engine;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod relay;
pub mod reply;
pub mod rua;
mod session;
pub mod store;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use config::{DkimKeyConfig, GatewayConfig, Limits, UserConfig};
pub use decide::{Action, Decide, Decision, Envelope, HeaderEdit, Reason, SmtpReply};
pub use engine::{EngineDecider, PolicySource};
pub use session::Listener;

pub use store::{
    JsonlLog, LocalDelivery, Maildir, MessageRecord, Quarantine, QuarantineItem, SessionLog,
    SessionLogs, SessionRecord, TlsInfo,
};

use metrics::Metrics;
use session::Session;

/// Our own faults (configuration, files, sockets). A refused message is never an `Err`.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("DKIM: {0}")]
    Dkim(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Looks up the PTR name of a client, for the Received header and the session log.
pub trait ReverseDns: Send + Sync + 'static {
    fn lookup(&self, ip: IpAddr) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>>;
}

/// PTR lookups through the engine's DNS view (the system resolver, one resolver, the zone
/// files of `--dns-zone`, or none offline), so the Received header and the verdict read the
/// same DNS, with the same timeout and cache.
pub struct EngineReverseDns(pub unspoof_engine::Engine);

impl ReverseDns for EngineReverseDns {
    fn lookup(&self, ip: IpAddr) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>> {
        Box::pin(self.0.dns().ptr_name(ip))
    }
}

struct NoReverseDns;

impl ReverseDns for NoReverseDns {
    fn lookup(&self, _: IpAddr) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>> {
        Box::pin(async { None })
    }
}

/// Queue ids: 13 hex digits of microseconds since the epoch and 4 of a counter; unique within
/// a process and increasing across restarts.
pub(crate) struct QueueIds(AtomicU64);

impl QueueIds {
    pub fn next(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        format!("{micros:013X}{:04X}", n & 0xFFFF)
    }
}

/// What every session shares.
pub(crate) struct Shared<D> {
    pub config: GatewayConfig,
    pub decider: Arc<D>,
    pub tls: Option<TlsAcceptor>,
    pub dkim: dkim::DkimSigners,
    pub quarantine: Arc<dyn Quarantine>,
    pub local: Arc<dyn LocalDelivery>,
    pub log: Arc<dyn SessionLog>,
    pub rdns: Arc<dyn ReverseDns>,
    /// DMARC aggregate reports to our own `rua` addresses (`rua.rs`).
    pub capture: Option<Arc<dyn rua::ReportCapture>>,
    pub metrics: Arc<Metrics>,
    pub queue_ids: QueueIds,
    /// What messages in flight hold, against `max_inflight_memory`.
    pub memory: Arc<memory::MemoryBudget>,
    /// Failed AUTH per client network and account.
    pub auth_throttle: auth::AuthThrottle,
}

/// Builds and starts a gateway. The defaults for every plug-in are file-based under
/// `data_dir`; the store issue replaces them through these setters.
pub struct Gateway<D: Decide> {
    config: GatewayConfig,
    decider: Arc<D>,
    quarantine: Option<Arc<dyn Quarantine>>,
    local: Option<Arc<dyn LocalDelivery>>,
    log: Option<Arc<dyn SessionLog>>,
    rdns: Option<Arc<dyn ReverseDns>>,
    capture: Option<Arc<dyn rua::ReportCapture>>,
}

impl<D: Decide> Gateway<D> {
    pub fn new(config: GatewayConfig, decider: Arc<D>) -> Self {
        Gateway {
            config,
            decider,
            quarantine: None,
            local: None,
            log: None,
            rdns: None,
            capture: None,
        }
    }

    /// Where quarantined messages go (default: Maildir `<data_dir>/maildir/.Quarantine`).
    pub fn quarantine(mut self, q: Arc<dyn Quarantine>) -> Self {
        self.quarantine = Some(q);
        self
    }

    /// Final delivery without downstream (default: Maildir `<data_dir>/maildir`).
    pub fn local_delivery(mut self, l: Arc<dyn LocalDelivery>) -> Self {
        self.local = Some(l);
        self
    }

    /// The session log (default: `<data_dir>/sessions.jsonl`).
    pub fn session_log(mut self, l: Arc<dyn SessionLog>) -> Self {
        self.log = Some(l);
        self
    }

    /// The PTR resolver, used when `reverse_dns = true` (`unspoof serve` passes the engine's
    /// DNS view, [`EngineReverseDns`]; without one no PTR is asked).
    pub fn reverse_dns(mut self, r: Arc<dyn ReverseDns>) -> Self {
        self.rdns = Some(r);
        self
    }

    /// Captures mail to the site's own DMARC report addresses, or to its user report
    /// address (default: none). Called twice, both capture, each its own addresses.
    pub fn report_capture(mut self, c: Arc<dyn rua::ReportCapture>) -> Self {
        self.capture = Some(match self.capture.take() {
            Some(first) => Arc::new(rua::Both(first, c)),
            None => c,
        });
        self
    }

    /// Binds every listener and starts serving; returns at once.
    pub async fn start(self) -> Result<ServeHandle, GatewayError> {
        let config = self.config.validated()?;
        let data = config.data_dir.clone();
        let io = |what: &str, e| GatewayError::Io(what.to_string(), e);
        std::fs::create_dir_all(&data).map_err(|e| io(&data.display().to_string(), e))?;
        let maildir_root = data.join("maildir");
        let local: Arc<dyn LocalDelivery> = match self.local {
            Some(l) => l,
            None => Arc::new(
                Maildir::open(&maildir_root, &config.hostname).map_err(|e| io("maildir", e))?,
            ),
        };
        let quarantine: Arc<dyn Quarantine> = match self.quarantine {
            Some(q) => q,
            None => Arc::new(
                Maildir::open(maildir_root.join(".Quarantine"), &config.hostname)
                    .map_err(|e| io("quarantine maildir", e))?,
            ),
        };
        let log: Arc<dyn SessionLog> = match self.log {
            Some(l) => l,
            None => Arc::new(
                JsonlLog::open(&data.join("sessions.jsonl"))
                    .map_err(|e| io("sessions.jsonl", e))?,
            ),
        };
        let rdns: Arc<dyn ReverseDns> = match self.rdns {
            Some(r) => r,
            // Without a resolver given (tests of the gateway alone) no PTR is asked.
            None => Arc::new(NoReverseDns),
        };
        let tls = Some(tls::acceptor(&config)?);
        let dkim = dkim::DkimSigners::load(&config.dkim)?;
        let metrics = Arc::new(Metrics::default());

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| GatewayError::Io(format!("bind {addr}"), e))
        };
        let inbound = bind(config.listen).await?;
        let submission = match config.submission {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let metrics_listener = match config.metrics {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let addr = |l: &TcpListener| l.local_addr().map_err(|e| io("local_addr", e));
        let inbound_addr = addr(&inbound)?;
        let submission_addr = submission.as_ref().map(addr).transpose()?;
        let metrics_addr = metrics_listener.as_ref().map(addr).transpose()?;

        let max = config.limits.max_connections;
        let drain = config.limits.drain_timeout();
        let shared = Arc::new(Shared {
            decider: self.decider.clone(),
            tls,
            dkim,
            quarantine,
            local,
            log,
            rdns,
            capture: self.capture,
            metrics: metrics.clone(),
            queue_ids: QueueIds(AtomicU64::new(0)),
            memory: memory::MemoryBudget::new(config.limits.max_inflight_memory),
            auth_throttle: auth::AuthThrottle::new(&config.limits),
            config,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(max));
        let per_ip = Arc::new(PerIp::default());
        let mut tasks = vec![tokio::spawn(accept_loop(
            inbound,
            Listener::Inbound,
            shared.clone(),
            slots.clone(),
            per_ip.clone(),
            shutdown_rx.clone(),
        ))];
        if let Some(l) = submission {
            tasks.push(tokio::spawn(accept_loop(
                l,
                Listener::Submission,
                shared.clone(),
                slots.clone(),
                per_ip.clone(),
                shutdown_rx.clone(),
            )));
        }
        if let Some(l) = metrics_listener {
            tasks.push(tokio::spawn(metrics::serve(
                l,
                metrics.clone(),
                shutdown_rx.clone(),
            )));
        }
        let decider = self.decider;
        let reload_metrics = metrics.clone();
        Ok(ServeHandle {
            inbound: inbound_addr,
            submission: submission_addr,
            metrics: metrics_addr,
            shutdown: shutdown_tx,
            tasks,
            slots,
            max_slots: max,
            drain,
            reload: Box::new(move || {
                let r = decider.reload();
                if r.is_ok() {
                    reload_metrics
                        .policy_reloads
                        .fetch_add(1, Ordering::Relaxed);
                }
                r
            }),
        })
    }
}

/// A running gateway.
pub struct ServeHandle {
    /// Where the inbound listener is bound (useful with port 0 in tests).
    pub inbound: SocketAddr,
    pub submission: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    slots: Arc<Semaphore>,
    max_slots: usize,
    drain: std::time::Duration,
    reload: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

impl ServeHandle {
    /// Reloads the engine's policy (what SIGHUP does). Sessions are not interrupted.
    pub fn reload(&self) -> Result<(), String> {
        (self.reload)()
    }

    /// Stops accepting, lets every session finish its current transaction (idle sessions get
    /// `421 4.3.2` at their next command), waits up to `drain_timeout`, and returns `true` if
    /// every session ended in time.
    pub async fn shutdown(self) -> bool {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let all = u32::try_from(self.max_slots).unwrap_or(u32::MAX);
        tokio::time::timeout(self.drain, self.slots.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Open connections per client IP.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct PerIpGuard {
    map: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpGuard {
            map: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop<D: Decide>(
    listener: TcpListener,
    kind: Listener,
    shared: Arc<Shared<D>>,
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                // EMFILE and friends: back off briefly instead of spinning.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let m = &shared.metrics;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            m.connections_refused.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(refuse(tcp, reply::TOO_MANY_CONNECTIONS));
            continue;
        };
        let limit = shared.config.limits.max_connections_per_ip;
        let Some(guard) = per_ip.acquire(peer.ip(), limit) else {
            m.connections_refused.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(refuse(tcp, reply::TOO_MANY_FROM_IP));
            continue;
        };
        m.connections_total.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let rx = shutdown.clone();
        tokio::spawn(async move {
            shared
                .metrics
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            Session::new(shared.clone(), tcp, peer, kind).run(rx).await;
            shared
                .metrics
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(guard);
            drop(permit);
        });
    }
}

async fn refuse(mut tcp: TcpStream, text: &'static str) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = tcp.write_all(text.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}
