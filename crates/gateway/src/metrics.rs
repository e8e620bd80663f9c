//! Prometheus metrics, hand-rolled: a few atomics and a tiny HTTP/1.0 responder for
//! `GET /metrics` (text exposition format 0.0.4) and `GET /healthz` (`ok`). Keep the listener
//! on loopback.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use unspoof_engine::Outcome;

/// Outcomes counted in `unspoof_messages_total{outcome=...}` (see `MessageRecord::outcome`):
/// the outcome enum every door shares, without the milter's own two (`unchecked`, `skipped`).
pub const OUTCOMES: [Outcome; 7] = [
    Outcome::Accept,
    Outcome::Tag,
    Outcome::Quarantine,
    Outcome::Reject,
    Outcome::Defer,
    Outcome::Refused,
    Outcome::Tempfail,
];

/// Reason codes of transactions refused at MAIL FROM or RCPT TO, counted in
/// `unspoof_refusals_total{reason=...}` (and put on record, see `Limits::max_refusal_records`).
pub const REFUSALS: [&str; 6] = [
    "smtp.own_domain_sender",
    "smtp.relay_denied",
    "smtp.bad_sender_syntax",
    "smtp.bad_recipient_syntax",
    "smtp.non_ascii_address",
    "submission.sender_not_owned",
];

/// How sessions end, counted in `unspoof_sessions_total{outcome=...}` (see
/// `SessionRecord::outcome`); `timeout` includes the clients cut off by `line_timeout` and
/// `min_data_rate`.
pub const SESSION_OUTCOMES: [&str; 5] = ["quit", "dropped", "timeout", "errors", "shutdown"];

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    messages: [AtomicU64; OUTCOMES.len()],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_open: AtomicU64,
    pub policy_reloads: AtomicU64,
    refusals: [AtomicU64; REFUSALS.len()],
    /// Refusals over a connection's `max_refusal_records`: counted, not recorded.
    pub refusals_unrecorded: AtomicU64,
    sessions: [AtomicU64; SESSION_OUTCOMES.len()],
    /// AUTH answered `454 4.7.0` because the client network or the account is locked out.
    pub auth_lockouts: AtomicU64,
    /// `452 4.3.1` because `max_inflight_memory` was taken (at MAIL for a declared SIZE, or at
    /// the end of DATA).
    pub memory_refusals: AtomicU64,
    /// Message records the session log could not make durable before the reply (the message
    /// itself was; see `SessionLog::record_durable`).
    pub records_not_durable: AtomicU64,
}

impl Metrics {
    /// Counts one message with `outcome` and the time from end of data to our reply.
    pub fn message(&self, outcome: Outcome, latency: Duration) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.messages[i].fetch_add(1, Relaxed);
        }
        let secs = latency.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// Counts one transaction refused at MAIL FROM or RCPT TO with this reason code.
    pub fn refusal(&self, code: &str) {
        if let Some(i) = REFUSALS.iter().position(|c| *c == code) {
            self.refusals[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts one session that ended this way.
    pub fn session_end(&self, outcome: &str) {
        if let Some(i) = SESSION_OUTCOMES.iter().position(|o| *o == outcome) {
            self.sessions[i].fetch_add(1, Relaxed);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048);
        s.push_str("# HELP unspoof_messages_total Messages by outcome.\n");
        s.push_str("# TYPE unspoof_messages_total counter\n");
        for (i, o) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                s,
                "unspoof_messages_total{{outcome=\"{o}\"}} {}",
                self.messages[i].load(Relaxed)
            );
        }
        s.push_str("# HELP unspoof_message_seconds Time from end of DATA to our final reply.\n");
        s.push_str("# TYPE unspoof_message_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "unspoof_message_seconds_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Relaxed)
            );
        }
        s.push_str(
            "# HELP unspoof_refusals_total Transactions refused at MAIL FROM or RCPT TO, by reason.\n",
        );
        s.push_str("# TYPE unspoof_refusals_total counter\n");
        for (i, r) in REFUSALS.iter().enumerate() {
            let _ = writeln!(
                s,
                "unspoof_refusals_total{{reason=\"{r}\"}} {}",
                self.refusals[i].load(Relaxed)
            );
        }
        s.push_str("# HELP unspoof_sessions_total SMTP sessions ended, by how they ended.\n");
        s.push_str("# TYPE unspoof_sessions_total counter\n");
        for (i, o) in SESSION_OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                s,
                "unspoof_sessions_total{{outcome=\"{o}\"}} {}",
                self.sessions[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(s, "unspoof_message_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            s,
            "unspoof_message_seconds_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "unspoof_message_seconds_count {count}");
        for (name, help, kind, v) in [
            (
                "unspoof_connections_total",
                "SMTP connections accepted.",
                "counter",
                &self.connections_total,
            ),
            (
                "unspoof_connections_refused_total",
                "SMTP connections refused by a connection limit.",
                "counter",
                &self.connections_refused,
            ),
            (
                "unspoof_connections_open",
                "SMTP connections open now.",
                "gauge",
                &self.connections_open,
            ),
            (
                "unspoof_policy_reloads_total",
                "Successful policy reloads (SIGHUP).",
                "counter",
                &self.policy_reloads,
            ),
            (
                "unspoof_refusals_unrecorded_total",
                "Refusals at MAIL FROM or RCPT TO past a connection's max_refusal_records (counted, not recorded).",
                "counter",
                &self.refusals_unrecorded,
            ),
            (
                "unspoof_auth_lockouts_total",
                "AUTH attempts answered 454 because the client network or the account is locked out.",
                "counter",
                &self.auth_lockouts,
            ),
            (
                "unspoof_memory_refusals_total",
                "Transactions answered 452 because max_inflight_memory was taken.",
                "counter",
                &self.memory_refusals,
            ),
            (
                "unspoof_records_not_durable_total",
                "Message records that could not be made durable before the reply.",
                "counter",
                &self.records_not_durable,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        s
    }
}

/// Serves `GET /metrics` and `GET /healthz` until `shutdown` changes.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (mut sock, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    let n = sock.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let resp = if req.starts_with(b"GET /metrics ") || req.starts_with(b"GET /metrics?") {
                let body = metrics.render();
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else if req.starts_with(b"GET /healthz ") || req.starts_with(b"GET /healthz?") {
                // For a load balancer or systemd's watchdog scripts: this answers only while
                // the gateway runs (the listener closes when shutdown begins).
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n".into()
            } else {
                "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
