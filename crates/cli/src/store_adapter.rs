//! The store behind the front doors: `[store]` of `unspoof.toml`, and the thin adapters that
//! hand the gateway's and the milter's records and quarantined messages to `unspoof_store`.
//!
//! The gateway and the milter know nothing of the store, and the store nothing of SMTP or the
//! milter protocol; this file is the only place that knows both sides of each seam.

use std::{io, path::Path, sync::Arc, time::Duration};

use crate::config::Config;
use unspoof_store::{MessageRecord, NewQuarantine, SessionRecord, Store, StoreConfig, new_id, now};

/// How often the front doors apply the retention settings (`Store::prune`).
pub const PRUNE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// The `[store]` section of the configuration file, with the front door's data directory and
/// node name where the section does not set them.
pub fn store_config(file: &Config, data_dir: &Path, node: &str) -> StoreConfig {
    let mut config = file.store.clone();
    if !file.sets("store.data_dir") {
        config.data_dir = data_dir.to_path_buf();
    }
    if !file.sets("store.node") && !node.is_empty() {
        config.node = node.to_string();
    }
    config
}

/// Opens the store for a long-running front door (`who` names it in the log line) and starts
/// its retention. A PostgreSQL that is down does not stop it: the store starts spooling.
pub async fn open_store(who: &str, config: StoreConfig) -> Result<Store, u8> {
    let store = Store::open(config).await.map_err(|e| {
        eprintln!("unspoof: store: {e}");
        crate::exit::CONFIG
    })?;
    eprintln!(
        "{who}: store {} ({:?}), node {}",
        redact_password(&store.config().database_url()),
        store.backend(),
        store.config().node
    );
    spawn_prune(store.clone());
    Ok(store)
}

/// A database URL for the log, without its password.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Applies the retention settings now and then every [`PRUNE_EVERY`], for as long as the
/// process runs. A failure is reported and tried again next time.
fn spawn_prune(store: Store) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            every.tick().await;
            match store.prune(now()).await {
                Ok(r) if r.messages + r.sessions + r.quarantined > 0 => eprintln!(
                    "unspoof: retention: deleted {} messages, {} sessions, {} quarantined",
                    r.messages, r.sessions, r.quarantined
                ),
                Ok(_) => {}
                Err(e) => eprintln!("unspoof: retention: {e}"),
            }
        }
    });
}

/// The store as the gateway's quarantine and session log.
#[derive(Clone)]
pub struct GatewayStore(pub Store);

impl unspoof_gateway::Quarantine for GatewayStore {
    fn quarantine(&self, item: unspoof_gateway::QuarantineItem) -> io::Result<String> {
        let q = self.new_quarantine(item);
        let id = q.id.clone();
        // Called from a blocking thread: returns once fsync'd into the journal (the batch
        // writer puts it into the database). The gateway answers 250 only after this.
        self.0
            .quarantine_put_blocking(q)
            .map(|_| id)
            .map_err(io::Error::other)
    }

    /// The store is also the session log: the message, its record and the session's go into
    /// the journal in one write (`Store::quarantine_with_record`), one group commit before
    /// the 250.
    fn keeps_records(&self) -> bool {
        true
    }

    fn quarantine_with_record<'a>(
        &'a self,
        item: unspoof_gateway::QuarantineItem,
        record: &'a mut unspoof_gateway::MessageRecord,
        session: Option<&'a unspoof_gateway::SessionRecord>,
    ) -> unspoof_gateway::store::DurableFuture<'a> {
        let mut q = self.new_quarantine(item);
        record.stored_at = Some(q.id.clone());
        let message = self.message_record(record);
        q.message_record = Some(message.id.clone());
        let session = session.map(|s| self.session_record(s));
        Box::pin(async move {
            self.0
                .quarantine_with_record(q, message, session)
                .await
                .map_err(io::Error::other)
        })
    }
}

impl GatewayStore {
    fn new_quarantine(&self, item: unspoof_gateway::QuarantineItem) -> NewQuarantine {
        let env = item.envelope;
        let mut q = NewQuarantine {
            id: new_id(),
            message_record: None,
            quarantined_at: env.received_at.unwrap_or_else(now),
            node: self.0.config().node.clone(),
            queue_id: Some(item.queue_id),
            mail_from: env.mail_from,
            recipients: env.rcpt,
            reasons: item.reasons,
            raw: item.message,
            ..Default::default()
        };
        if let Some(a) = &item.analysis {
            q.message_id = a
                .message
                .message_id
                .as_deref()
                .map(unspoof_store::normalize_message_id);
            q.from = a.message.from.clone();
            q.subject = a.message.subject.clone();
        }
        q
    }

    fn message_record(&self, r: &unspoof_gateway::MessageRecord) -> MessageRecord {
        let mut record = MessageRecord {
            id: new_id(),
            session_id: Some(r.session_id.clone()),
            received_at: r.time,
            node: self.0.config().node.clone(),
            listener: r.listener.to_string(),
            // A transaction refused at MAIL or RCPT has no queue id.
            queue_id: Some(r.queue_id.clone()).filter(|q| !q.is_empty()),
            message_id: r
                .message_id
                .as_deref()
                .map(unspoof_store::normalize_message_id),
            client_ip: r.client_ip.parse().ok(),
            client_port: Some(r.client_port),
            reverse_dns: r.reverse_dns.clone(),
            helo: r.helo.clone(),
            tls: r.tls.as_ref().map(tls_text),
            auth_user: r.auth_user.clone(),
            mail_from: r.mail_from.clone(),
            recipients: r.recipients.clone(),
            size: r.size as u64,
            reply: Some(r.reply.clone()),
            downstream_reply: r.downstream_reply.clone(),
            stored_at: r.stored_at.clone(),
            latency_us: Some(r.latency_us),
            ..Default::default()
        };
        if let Some(a) = &r.analysis {
            record = if self.0.keeps_analysis(r.outcome.as_str()) {
                record.with_analysis(a)
            } else {
                record.with_analysis_summary(a)
            };
        }
        // What happened is the gateway's word, not only the engine's: a message the engine
        // accepted may still have been refused downstream (`tempfail`, `refused`).
        record.action = r.outcome.to_string();
        record.reasons = r.reasons.clone();
        record
    }

    fn session_record(&self, s: &unspoof_gateway::SessionRecord) -> SessionRecord {
        SessionRecord {
            id: s.id.clone(),
            started_at: s.started_at,
            ended_at: s.ended_at,
            node: self.0.config().node.clone(),
            listener: s.listener.to_string(),
            client_ip: s.client_ip.parse().ok(),
            client_port: Some(s.client_port),
            reverse_dns: s.reverse_dns.clone(),
            helo: s.helo.clone(),
            tls: s.tls.as_ref().map(tls_text),
            auth_user: s.auth_user.clone(),
            messages: s.messages,
            outcome: s.outcome.to_string(),
        }
    }
}

impl unspoof_gateway::SessionLog for GatewayStore {
    fn record(&self, r: &unspoof_gateway::MessageRecord) {
        self.0.log_message(self.message_record(r));
    }

    /// Into the store's journal before the reply (`Store::log_durable`).
    fn record_durable<'a>(
        &'a self,
        r: &'a unspoof_gateway::MessageRecord,
        session: Option<&'a unspoof_gateway::SessionRecord>,
    ) -> unspoof_gateway::store::DurableFuture<'a> {
        let record = self.message_record(r);
        let session = session.map(|s| self.session_record(s));
        Box::pin(async move {
            self.0
                .log_durable(record, session)
                .await
                .map_err(io::Error::other)
        })
    }

    /// Already in the journal with its message (`quarantine_with_record`).
    fn record_held<'a>(
        &'a self,
        _: &'a unspoof_gateway::MessageRecord,
        _: Option<&'a unspoof_gateway::SessionRecord>,
    ) -> unspoof_gateway::store::DurableFuture<'a> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn session(&self, s: &unspoof_gateway::SessionRecord) {
        self.0.log_session(self.session_record(s));
    }
}

fn tls_text(t: &unspoof_gateway::TlsInfo) -> String {
    format!("{} {}", t.version, t.cipher)
}

/// The store as the engine's first-contact history (`contact.*` reasons).
pub fn contact_history(store: &Store) -> Arc<dyn unspoof_engine::contact::ContactHistory> {
    Arc::new(store.clone())
}

/// The store as the engine's record of mail we sent (backscatter, `unspoof_engine::bounce`).
pub fn outbound_history(store: &Store) -> Arc<dyn unspoof_engine::bounce::OutboundHistory> {
    Arc::new(store.clone())
}

/// The store's allowed senders (the console's "release and allow") as the engine asks them
/// (`unspoof_engine::contact::SenderAllowList`; the engine bounds the wait,
/// `ALLOW_LIST_BUDGET`). A store error is "could not tell": the verdict stands.
pub fn allow_list(store: &Store) -> Arc<dyn unspoof_engine::contact::SenderAllowList> {
    Arc::new(StoreAllowList(store.clone()))
}

struct StoreAllowList(Store);

impl unspoof_engine::contact::SenderAllowList for StoreAllowList {
    fn allowed<'a>(
        &'a self,
        from: &'a str,
        rcpts: &'a [String],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send + 'a>> {
        Box::pin(async move {
            match self.0.allowed(from, rcpts).await {
                Ok(allowed) => Some(allowed),
                Err(e) => {
                    eprintln!("unspoof: allow list: {e} (the verdict stands)");
                    None
                }
            }
        })
    }
}

/// The store as the engine's memory of signing keys per sender (trust on first use,
/// `unspoof_engine::signed`).
pub fn signer_history(store: &Store) -> Arc<dyn unspoof_engine::signed::SignerHistory> {
    Arc::new(store.clone())
}

/// The store as the milter's quarantine copy and message log.
#[derive(Clone)]
pub struct MilterStore(pub Store);

impl unspoof_milter::QuarantineStore for MilterStore {
    fn store<'a>(&'a self, m: unspoof_milter::Quarantined<'a>) -> unspoof_milter::StoreFuture<'a> {
        Box::pin(async move {
            let a = m.analysis;
            let q = NewQuarantine {
                id: new_id(),
                message_record: None,
                quarantined_at: m.envelope.received_at.unwrap_or_else(now),
                node: self.0.config().node.clone(),
                queue_id: m.queue_id.map(str::to_string),
                message_id: a
                    .message
                    .message_id
                    .as_deref()
                    .map(unspoof_store::normalize_message_id),
                mail_from: m.envelope.mail_from.clone(),
                recipients: m.envelope.rcpt.clone(),
                from: a.message.from.clone(),
                subject: a.message.subject.clone(),
                reasons: a.verdict.codes().into_iter().map(String::from).collect(),
                raw: m.raw.to_vec(),
            };
            let id = q.id.clone();
            self.0
                .quarantine_put(q)
                .await
                .map(|_| id)
                .map_err(|e| e.to_string())
        })
    }
}

impl unspoof_milter::MessageLog for MilterStore {
    fn record(&self, d: &unspoof_milter::Decided<'_>) {
        let env = d.envelope;
        let mut record = MessageRecord {
            id: new_id(),
            received_at: env.received_at.unwrap_or_else(now),
            node: self.0.config().node.clone(),
            listener: "milter".into(),
            queue_id: d.queue_id.map(str::to_string),
            client_ip: env.ip,
            reverse_dns: d.client_name.map(str::to_string),
            helo: env.helo.clone(),
            auth_user: env.auth_user.clone(),
            mail_from: env.mail_from.clone(),
            recipients: env.rcpt.clone(),
            size: d.size as u64,
            stored_at: d.stored_at.map(str::to_string),
            latency_us: Some(d.latency_us),
            ..Default::default()
        };
        if let Some(a) = d.analysis {
            record = if self.0.keeps_analysis(d.outcome.as_str()) {
                record.with_analysis(a)
            } else {
                record.with_analysis_summary(a)
            };
        }
        record.action = d.outcome.to_string();
        record.reasons = d.reasons.clone();
        self.0.log_message(record);
    }
}
