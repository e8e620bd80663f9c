//! The unspoof web console: the quarantine, the message records and their provenance in a
//! browser, served by `unspoof console serve` on the same store as the gateway.
//!
//! Trust level: every string that came in a message (subjects, names, addresses, header
//! values, bodies) is attacker-written; every page is rendered on the server by maud, which
//! escapes whatever it interpolates, and served under a Content-Security-Policy that allows
//! no inline script and no remote load. Reads the store; writes quarantine transitions and its
//! own accounts and actions (`unspoof_store::console`); sends released mail to the downstream.
//!
//! - [`router`]: the pages and actions, as an axum `Router` (tests drive it without sockets).
//! - `auth.rs`: accounts, sessions, CSRF tokens, the login throttle.
//! - `pages.rs`: the HTML; `charts.rs`: the overview's SVG.
//! - [`release`]: the one release path, shared with `unspoof quarantine release`.
//!
//! Core actions (log in, search, open, release, delete, log out) are plain links and forms:
//! they work without JavaScript. htmx (vendored, served from `/static/`) only makes the search
//! form update the results in place.

pub mod auth;
mod charts;
pub mod digest;
mod handlers;
mod pages;
mod provenance;
pub mod release;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use unspoof_engine::{Dns, Engine, Policy};
use unspoof_store::Store;

pub use handlers::router;
pub use release::ReleaseTarget;

/// `[console]`: where the console listens and its limits. Every limit has a name and a
/// default here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address and port. Default `127.0.0.1:8025`: loopback only, put a TLS proxy in front
    /// (and set `secure_cookies`) to serve it further.
    pub listen: SocketAddr,
    /// Adds `Secure` to the session cookie: set it when the console is reached over HTTPS.
    /// Default false (plain HTTP on loopback).
    pub secure_cookies: bool,
    /// A session ends after this long without a request. Default 30 minutes.
    pub session_idle_minutes: u64,
    /// A session ends this long after its login, active or not. Default 12 hours.
    pub session_max_hours: u64,
    /// Failed logins from one client address, or for one account name, before further
    /// attempts are refused for the rest of `login_window_minutes`. Default 5.
    pub login_failures: u32,
    /// Default 15 minutes.
    pub login_window_minutes: u64,
    /// Records per search page. Default 50.
    pub page_size: u32,
    /// Whether a recipient may release their own quarantined mail (administrators and domain
    /// administrators always may, within what they see). Default true.
    pub recipients_may_release: bool,
    /// Where released messages go: `host:port` of the downstream MTA. Empty: into `maildir`.
    pub downstream: String,
    /// The Maildir for release without a downstream. Default `<data_dir>/maildir`.
    pub maildir: Option<PathBuf>,
    /// The MTA's mail logs (Postfix, Sendmail, Exim) a message page joins, as `unspoof trace`
    /// does; the last `MAIL_LOG_TAIL_BYTES` (16 MiB) of each. Default none.
    pub mail_logs: Vec<PathBuf>,
    /// Serve the console inside `unspoof serve` (on `listen`). Default false: only
    /// `unspoof console serve` serves it.
    pub enabled: bool,
    /// TLS certificate chain and key (PEM) to serve HTTPS; cookies are then `Secure`. Default
    /// none: plain HTTP (loopback, or behind a TLS proxy).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Send each recipient with held mail a digest (with signed release links) this often.
    /// Default 24 hours; 0: no digests.
    pub digest_hours: u64,
    /// How long a digest's release link works. Default 72 hours.
    pub digest_link_hours: u64,
    /// The console's address as recipients reach it, for the links in digests
    /// (`https://mail-console.example`). Default empty: `http://<listen>`.
    pub public_url: String,
    /// The digest's sender. Default `postmaster@<hostname>`.
    pub digest_from: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8025)),
            secure_cookies: false,
            session_idle_minutes: 30,
            session_max_hours: 12,
            login_failures: 5,
            login_window_minutes: 15,
            page_size: 50,
            recipients_may_release: true,
            downstream: String::new(),
            maildir: None,
            mail_logs: Vec::new(),
            enabled: false,
            tls_cert: None,
            tls_key: None,
            digest_hours: 24,
            digest_link_hours: 72,
            public_url: String::new(),
            digest_from: String::new(),
        }
    }
}

impl ConsoleConfig {
    /// The checks of `[console]` that need no file (what `unspoof policy check` runs): the
    /// certificate and key go together. The files themselves are read when the console
    /// starts ([`tls_acceptor`]), as the gateway reads its own.
    pub fn validated(self) -> Result<Self, String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(TLS_PAIR.into());
        }
        Ok(self)
    }

    pub fn release_target(&self, data_dir: &std::path::Path) -> ReleaseTarget {
        if self.downstream.trim().is_empty() {
            ReleaseTarget::Maildir(
                self.maildir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("maildir")),
            )
        } else {
            ReleaseTarget::Downstream(self.downstream.trim().to_string())
        }
    }

    fn limits(&self) -> auth::Limits {
        auth::Limits {
            session_idle: Duration::from_secs(self.session_idle_minutes.max(1) * 60),
            session_max: Duration::from_secs(self.session_max_hours.max(1) * 3_600),
            login_failures: self.login_failures.max(1),
            login_window: Duration::from_secs(self.login_window_minutes.max(1) * 60),
        }
    }
}

/// What every handler shares.
pub struct Console {
    pub(crate) store: Store,
    pub(crate) config: ConsoleConfig,
    pub(crate) release_to: ReleaseTarget,
    pub(crate) sessions: auth::Sessions,
    /// The engine abuse reports re-evaluate a message with (`unspoof report abuse` does the
    /// same), with the site's policy and DNS view.
    pub(crate) engine: Engine,
    /// The same policy without DNS: the hop trace for the mail-log join.
    pub(crate) trace_engine: Engine,
    /// Our host name: the reporting MTA of abuse reports.
    pub(crate) hostname: String,
    /// How the audit page audits a domain (`unspoof audit`'s options); set once with
    /// [`Console::set_audit_options`], else no probes and no lookalike search.
    pub(crate) audit: std::sync::OnceLock<unspoof_audit::Options>,
}

impl Console {
    /// A console whose abuse reports see no DNS (authentication results `temperror`): give
    /// it the site's engine with [`Console::with_engine`].
    pub fn new(store: Store, config: ConsoleConfig) -> Arc<Console> {
        Self::with_engine(
            store,
            config,
            Engine::new(Policy::default(), Dns::offline()),
            "localhost",
        )
    }

    pub fn with_engine(
        store: Store,
        config: ConsoleConfig,
        engine: Engine,
        hostname: &str,
    ) -> Arc<Console> {
        let mut config = config;
        // Under TLS the session cookie is `Secure`, whatever the file says.
        if config.tls_cert.is_some() {
            config.secure_cookies = true;
        }
        let release_to = config.release_target(&store.config().data_dir);
        let trace_engine = Engine::new((*engine.policy()).clone(), Dns::offline());
        Arc::new(Console {
            sessions: auth::Sessions::new(config.limits()),
            store,
            config,
            release_to,
            engine,
            trace_engine,
            hostname: hostname.to_string(),
            audit: std::sync::OnceLock::new(),
        })
    }

    /// The audit page's options (gateway names, probes): `unspoof audit`'s, from the site's
    /// configuration. Only the first call counts.
    pub fn set_audit_options(&self, options: unspoof_audit::Options) {
        let _ = self.audit.set(options);
    }

    pub(crate) fn audit_options(&self) -> unspoof_audit::Options {
        self.audit
            .get()
            .cloned()
            .unwrap_or_else(|| unspoof_audit::Options {
                probe: false,
                lookalikes: false,
                helo_name: self.hostname.clone(),
                ..Default::default()
            })
    }
}

/// How long a client may take over its TLS handshake before the console drops it.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const TLS_PAIR: &str = "[console] tls_cert and tls_key go together";

/// The TLS acceptor of `[console] tls_cert`/`tls_key`, `Ok(None)` when neither is set.
pub fn tls_acceptor(config: &ConsoleConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(TLS_PAIR.into()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// A listener whose connections are TLS: each handshake runs in its own task (a slow client
/// delays no one else), bounded by [`TLS_HANDSHAKE_TIMEOUT`].
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

impl TlsListener {
    fn new(tcp: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        let local = tcp
            .local_addr()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, addr)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        let _ = tx.send((tls, addr)).await;
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }
    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The client's address on a TLS connection (axum's `ConnectInfo` for [`TlsListener`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TlsPeer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        TlsPeer(*stream.remote_addr())
    }
}

/// Serves the console over TLS on `listener` until the future is dropped.
pub async fn serve_tls(
    console: Arc<Console>,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> std::io::Result<()> {
    axum::serve(
        TlsListener::new(listener, acceptor),
        router(console).into_make_service_with_connect_info::<TlsPeer>(),
    )
    .await
}

/// Serves the console on `listener` until the future is dropped.
pub async fn serve(
    console: Arc<Console>,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(console).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
