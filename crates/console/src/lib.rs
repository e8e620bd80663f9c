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
mod handlers;
mod pages;
pub mod release;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
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
        }
    }
}

impl ConsoleConfig {
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
}

impl Console {
    pub fn new(store: Store, config: ConsoleConfig) -> Arc<Console> {
        let release_to = config.release_target(&store.config().data_dir);
        Arc::new(Console {
            sessions: auth::Sessions::new(config.limits()),
            store,
            config,
            release_to,
        })
    }
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
