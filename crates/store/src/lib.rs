//! The unspoof store: every session and message on record, the quarantine, and first contact,
//! on SQLite (the embedded default) or PostgreSQL (a fleet writing into one database).
//!
//! Trust level: writes only to its database and under its spool directory; reads back what it
//! wrote. **It knows nothing of SMTP or milter**: the front doors hand it records and raw bytes.
//!
//! Main types:
//! - [`Store`]: opened from a [`StoreConfig`]; cheap to clone, shared by every task.
//! - [`SessionRecord`], [`MessageRecord`]: what the front doors log, through
//!   [`Store::log_session`] / [`Store::log_message`]. These never wait for the database: records
//!   go into a bounded queue that a background task writes in batches.
//! - [`NewQuarantine`]: a quarantined message; [`Store::quarantine_put`] returns only once it is
//!   durable (fsync'd into the journal with the records of the same moment), and it then
//!   reaches the database with the batch writer's next batch, like a record.
//! - [`Query`]: the search behind `unspoof log search`.
//!
//! **Invariant: nothing logged is dropped.** A record is in the queue, in the database, or in
//! the spool (`<data_dir>/spool/`, fsync'd JSON lines). The spool is replayed when the database
//! answers again; record ids are made at the source ([`new_id`]) and every insert is
//! `ON CONFLICT DO NOTHING`, so a replay never duplicates.

#[cfg(feature = "bench")]
pub mod bench;
pub mod console;
mod db;
pub mod dmarc;
mod journal;
mod query;
mod record;
mod spool;
mod time;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};

pub use db::Backend;
/// The network type of [`Query::client`].
pub use ipnet::IpNet;
pub use query::{DEFAULT_LIMIT, Query};
pub use record::{
    JsonText, MessageRecord, NewQuarantine, QuarantineEntry, QuarantineStatus, SessionRecord,
    domain_of, new_id, normalize_message_id, now,
};

pub use time::{format_time, parse_time};

use db::Db;
use journal::{Journal, Ticket};
use spool::{Spool, SpoolEntry, SpoolEntryRef};

/// Our own faults. A database that is down is not one of them for logging (records are spooled).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("spool {0}: {1}")]
    Spool(PathBuf, std::io::Error),
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("journal {0}: {1}")]
    Journal(PathBuf, std::io::Error),
    #[error("no quarantined message {0}")]
    NotFound(String),
    #[error("quarantined message {0} is {1}, not held")]
    NotHeld(String, &'static str),
}

/// Where and how the store keeps its data. Every limit has a name and a default here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:///path/unspoof.db`, a plain file path, or `postgres://user@host/db`.
    /// Default (empty): `<data_dir>/unspoof.db`.
    pub url: String,
    /// The spool lives in `<data_dir>/spool/`. Default `./unspoof-data`.
    pub data_dir: PathBuf,
    /// This process's name in every record (several gateways write into one database).
    /// Default: the host name.
    pub node: String,
    /// `prune` deletes records and quarantined messages older than this. Default 90;
    /// `None` keeps everything.
    pub retention_days: Option<u32>,
    /// `prune` deletes the oldest records until the stored bytes (records plus quarantined
    /// messages, as the store counts them) fit. Default none.
    pub max_bytes: Option<u64>,
    /// Records waiting for the background writer. When it is full, records go straight to the
    /// spool (an fsync in the caller) instead of waiting. Default 10 000.
    pub queue_capacity: usize,
    /// At most this many records per transaction. Default 500. At a gateway's rates a batch is
    /// whatever arrived within `flush_interval_ms`; the cap matters when the writer falls
    /// behind, where larger batches catch up faster (PostgreSQL, paired runs: 4 482 and 3 955
    /// records/s with 500 against 3 690 and 2 044 with 100). A quarantined message counts as
    /// one record (it is durable in the journal before the batch, so a batch's length does
    /// not delay the front door's reply).
    pub batch_size: usize,
    /// A record waits at most this long before its batch is written. Default 50 ms.
    pub flush_interval_ms: u64,
    /// While records wait in the spool, the writer tries the database this often. Default 2 s.
    pub retry_interval_ms: u64,
    /// How long one database operation may take before the database counts as unreachable
    /// (and the batch, quarantined messages with it, goes to the spool). Default 5 s.
    pub db_timeout_ms: u64,
    /// Connections per process. Default 4.
    pub max_connections: u32,
    /// Which message records keep the engine's whole analysis (the `analysis` JSON, about
    /// 7 KB, for `unspoof log show`'s reasons with their evidence and the hop-by-hop trace):
    /// `not_accepted` (default) keeps it for every message that was not plainly accepted and
    /// only the summary for the rest (verdict, reason codes, authentication and trace
    /// summaries, the DNS evidence); `all` keeps it for every message.
    pub full_analysis: FullAnalysis,
    /// Threads that write and fsync the journal (see "Durability" in docs/store.md; the
    /// caller hands its lines over in memory), each for its own segment. Default 2: while one
    /// fsyncs, records that arrive start their own group at once instead of waiting for it to
    /// end; 1 makes every record wait for the fsync in progress and then its own, for less
    /// CPU (fewer fsyncs).
    pub journal_writers: usize,
    /// Group commit: a journal thread fsyncs its records once the oldest has waited this many
    /// microseconds (or `journal_group_records` wait, whichever comes first), so that records
    /// arriving meanwhile share the fsync. Longer: fewer fsyncs (each costs CPU, ~100 µs on a
    /// VM) for a longer wait before the reply. 0: as soon as the thread is free. Taken only
    /// while the last group fsync'd held more than one record, so a quiet gateway's lone
    /// record does not wait. Default 2 000
    /// (docs/benchmarks.md, "group commit": at 1 500 records a second, about a fifth less
    /// store CPU per record than 0, for about 2 ms more before the reply).
    pub journal_group_wait_us: u64,
    /// Group commit: a journal thread fsyncs at once when this many records wait, without
    /// waiting out `journal_group_wait_us`. Default 16.
    pub journal_group_records: usize,
    /// Bytes of quarantined messages (their raw size) held in memory for the batch writer:
    /// queued, or in the batch it is writing (a database that is slow holds them up to
    /// `db_timeout_ms`). A quarantined message that would go beyond it is written into a
    /// spool file of its own by its caller instead (an fsync before the reply, the path a
    /// full queue takes; the writer replays it into the database), so nothing is lost and
    /// memory stays bounded. Default 64 MiB.
    pub quarantine_queue_bytes: u64,
}

/// [`StoreConfig::full_analysis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullAnalysis {
    /// Every message but those whose action is `accept`.
    #[default]
    NotAccepted,
    All,
}

impl FullAnalysis {
    /// Whether a message record with this action keeps the whole analysis.
    pub fn keeps(self, action: &str) -> bool {
        match self {
            FullAnalysis::All => true,
            FullAnalysis::NotAccepted => action != "accept",
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: String::new(),
            data_dir: PathBuf::from("./unspoof-data"),
            node: hostname(),
            retention_days: Some(90),
            max_bytes: None,
            queue_capacity: 10_000,
            batch_size: 500,
            flush_interval_ms: 50,
            retry_interval_ms: 2_000,
            db_timeout_ms: 5_000,
            max_connections: 4,
            full_analysis: FullAnalysis::NotAccepted,
            journal_writers: 2,
            journal_group_wait_us: 2_000,
            journal_group_records: 16,
            quarantine_queue_bytes: 64 * 1024 * 1024,
        }
    }
}

impl StoreConfig {
    /// The defaults, with the database `url` (empty: SQLite in `data_dir`) and `data_dir`.
    pub fn new(url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            url: url.into(),
            data_dir: data_dir.into(),
            ..Default::default()
        }
    }

    /// The sqlx URL: `url` as given for PostgreSQL and `sqlite:` URLs, a path made into one.
    pub fn database_url(&self) -> String {
        let u = self.url.trim();
        if u.is_empty() {
            format!("sqlite://{}", self.data_dir.join("unspoof.db").display())
        } else if u.contains("://") || u.starts_with("sqlite:") {
            u.to_string()
        } else {
            format!("sqlite://{u}")
        }
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }

    fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Counters of the write path, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Records handed to `log_*`.
    pub logged: u64,
    /// Records committed to the database (first try or replay).
    pub written: u64,
    /// Records that went to the spool (database down, or the queue full).
    pub spooled: u64,
    /// Spooled records and quarantined messages since written to the database.
    pub replayed: u64,
    /// Quarantined messages that went to the spool.
    pub quarantine_spooled: u64,
    /// Raw bytes of the quarantined messages held in memory for the batch writer now (at most
    /// `quarantine_queue_bytes`).
    pub quarantine_queued: u64,
    /// Whether the last database operation failed.
    pub db_down: bool,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub messages: u64,
    pub sessions: u64,
    pub quarantined: u64,
    /// Bytes the store counts after pruning.
    pub bytes_after: u64,
}

enum Entry {
    /// With the journal segment it is also in, if it went through [`Store::log_durable`].
    Session(SessionRecord, Option<Ticket>),
    /// With its `contacts` rows (`db::contact_rows`), made once when it is logged.
    Message(MessageRecord, Option<Ticket>, Vec<Vec<query::Val>>),
    /// A quarantined message, with the journal segment it is durable in.
    Quarantine(NewQuarantine, Ticket),
    Flush(oneshot::Sender<()>),
}

/// Most (sender domain, recipient) pairs remembered in memory by [`Store::has_seen`], seen and
/// not seen each; when full, that memory starts again empty (the database knows every pair).
const CONTACT_MEMORY_MAX: usize = 100_000;

/// How long a "not seen" answer of the database is trusted. Rejected and quarantined mail never
/// becomes "seen", so without this every such message asked the database again; measured on a
/// busy gateway with SQLite, those questions queued behind the writer for up to 100 ms. Within
/// the minute another gateway of the fleet may deliver that sender's first message, and a
/// message here is then still counted a first contact; this process's own deliveries count at
/// once.
const NOT_SEEN_TTL: Duration = Duration::from_secs(60);

/// The store's memory of first-contact answers (see [`Store::has_seen`]).
#[derive(Default)]
struct ContactMemory {
    /// Pairs that have had mail delivered: the database's "seen" answers and the deliveries
    /// this process logged (before the writer commits them). A pair once seen stays seen.
    seen: std::collections::HashSet<(String, String)>,
    /// The database's "not seen" answers, with when they were given.
    not_seen: std::collections::HashMap<(String, String), std::time::Instant>,
}

impl ContactMemory {
    fn recall(&self, key: &(String, String)) -> Option<bool> {
        if self.seen.contains(key) {
            return Some(true);
        }
        match self.not_seen.get(key) {
            Some(at) if at.elapsed() < NOT_SEEN_TTL => Some(false),
            _ => None,
        }
    }

    fn remember(&mut self, key: (String, String), seen: bool) {
        if seen {
            self.not_seen.remove(&key);
            if self.seen.len() >= CONTACT_MEMORY_MAX {
                self.seen.clear();
            }
            self.seen.insert(key);
        } else {
            if self.not_seen.len() >= CONTACT_MEMORY_MAX {
                self.not_seen.clear();
            }
            self.not_seen.insert(key, std::time::Instant::now());
        }
    }
}

struct Shared {
    spool: Mutex<Spool>,
    /// Records made durable before a front door's reply (`Store::log_durable`).
    journal: Journal,
    contacts: Mutex<ContactMemory>,
    /// This process's writes to SQLite, one at a time. SQLite has one writer; a second one
    /// waits in SQLite's busy handler, which sleeps in growing steps (up to 100 ms a step):
    /// measured on a busy gateway, a quarantined message written by its caller then waited up
    /// to 180 ms for the batch writer's commit. Queued here, a write waits only for the one
    /// before it. (Other processes on the same file, such as `unspoof quarantine release`,
    /// still meet the busy handler; PostgreSQL needs no such turn.)
    sqlite_writes: tokio::sync::Mutex<()>,
    /// Wakes the writer while it waits for its batch deadline: a batch is full, or a flush or
    /// close waits. Records alone do not wake it: it takes them all at the deadline (one
    /// wake-up per batch instead of one per record).
    writer_wake: tokio::sync::Notify,
    db_down: AtomicBool,
    migrated: AtomicBool,
    logged: AtomicU64,
    written: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    quarantine_spooled: AtomicU64,
    /// Raw bytes of the quarantined messages queued for the writer or in its batch
    /// (`quarantine_queue_bytes`).
    quarantine_queued: AtomicU64,
}

impl Shared {
    /// A quarantined message counted in `quarantine_queued` is no longer held for the writer.
    fn quarantine_left(&self, q: &NewQuarantine) {
        self.quarantine_queued
            .fetch_sub(q.raw.len() as u64, Ordering::SeqCst);
    }

    fn spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recall_contact(&self, key: &(String, String)) -> Option<bool> {
        let memory = self.contacts.lock().unwrap_or_else(|e| e.into_inner());
        memory.recall(key)
    }

    fn remember_contact(&self, key: (String, String), seen: bool) {
        let mut memory = self.contacts.lock().unwrap_or_else(|e| e.into_inner());
        memory.remember(key, seen);
    }

    /// Waits for this process's turn to write, when the database is SQLite (see
    /// `sqlite_writes`).
    async fn write_turn(&self, backend: Backend) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match backend {
            Backend::Sqlite => Some(self.sqlite_writes.lock().await),
            Backend::Postgres => None,
        }
    }

    /// Marks the database down (reporting the change once).
    fn down(&self, why: &dyn std::fmt::Display) {
        if !self.db_down.swap(true, Ordering::SeqCst) {
            eprintln!("unspoof-store: database unreachable, spooling: {why}");
        }
    }
}

struct Inner {
    db: Db,
    config: StoreConfig,
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Entry>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
}

/// The store. Clones share one database pool, one queue and one background writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("node", &self.inner.config.node)
            .finish()
    }
}

impl Store {
    /// Opens the database (creating a SQLite file), applies migrations, and starts the
    /// background writer on the current Tokio runtime. A PostgreSQL that does not answer is not
    /// an error: the store starts with the database marked down and spools until it answers.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let spool_dir = config.spool_dir();
        let spool = Spool::open(&spool_dir).map_err(|e| StoreError::Spool(spool_dir.clone(), e))?;
        let group = journal::GroupCommit {
            wait: Duration::from_micros(config.journal_group_wait_us),
            records: config.journal_group_records,
        };
        let journal = Journal::open(&spool_dir, config.journal_writers, group)
            .map_err(|e| StoreError::Journal(spool_dir.clone(), e))?;
        if let Some(parent) = config
            .database_url()
            .strip_prefix("sqlite://")
            .map(PathBuf::from)
            .and_then(|p| p.parent().map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(&parent).map_err(|e| StoreError::Spool(parent, e))?;
        }
        let db = Db::connect(
            &config.database_url(),
            config.max_connections,
            config.db_timeout(),
        )
        .await?;
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            journal,
            contacts: Mutex::new(ContactMemory::default()),
            sqlite_writes: tokio::sync::Mutex::new(()),
            writer_wake: tokio::sync::Notify::new(),
            db_down: AtomicBool::new(false),
            migrated: AtomicBool::new(false),
            logged: AtomicU64::new(0),
            written: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            quarantine_spooled: AtomicU64::new(0),
            quarantine_queued: AtomicU64::new(0),
        });
        match timeout(config.db_timeout() * 2, db.migrate()).await {
            Ok(Ok(())) => shared.migrated.store(true, Ordering::SeqCst),
            Ok(Err(e)) if db.backend() == Backend::Sqlite => return Err(e.into()),
            Err(_) if db.backend() == Backend::Sqlite => {
                return Err(StoreError::Timeout(config.db_timeout() * 2));
            }
            Ok(Err(e)) => shared.down(&e),
            Err(_) => shared.down(&"timed out"),
        }
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let writer = Writer {
            db: db.clone(),
            shared: shared.clone(),
            batch_size: config.batch_size.max(1),
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            retry_interval: Duration::from_millis(config.retry_interval_ms.max(1)),
            db_timeout: config.db_timeout(),
        };
        let handle = tokio::spawn(writer.run(rx));
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                config,
                shared,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }

    pub fn backend(&self) -> Backend {
        self.inner.db.backend()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> Stats {
        let s = &self.inner.shared;
        Stats {
            logged: s.logged.load(Ordering::Relaxed),
            written: s.written.load(Ordering::Relaxed),
            spooled: s.spooled.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            quarantine_spooled: s.quarantine_spooled.load(Ordering::Relaxed),
            quarantine_queued: s.quarantine_queued.load(Ordering::Relaxed),
            db_down: s.db_down.load(Ordering::Relaxed),
        }
    }

    /// Logs a session. Never waits for the database; never fails (see the crate invariant).
    pub fn log_session(&self, record: SessionRecord) {
        self.enqueue_records(1);
        self.enqueue(Entry::Session(record, None));
    }

    /// Logs a message. Never waits for the database; never fails (see the crate invariant).
    pub fn log_message(&self, record: MessageRecord) {
        let contacts = db::contact_rows(&record);
        for key in db::row_keys(&contacts) {
            self.inner.shared.remember_contact(key, true);
        }
        self.enqueue_records(1);
        self.enqueue(Entry::Message(record, None, contacts));
    }

    /// Logs a message (and, when given, its session as it stands) and returns once both are
    /// durable: fsync'd into the journal, shared with every record that arrived meanwhile
    /// (group commit). A front door calls this before it answers, so a record is as durable as
    /// the message it answers for. The database write itself is the batch writer's, as for
    /// [`Store::log_message`]; after a crash the journal is replayed into the database.
    /// `Err` only when the journal cannot be written (the records are then logged anyway).
    pub async fn log_durable(
        &self,
        record: MessageRecord,
        session: Option<SessionRecord>,
    ) -> Result<(), StoreError> {
        let (lines, n) = self.journal_lines(session.as_ref(), Some(&record), None)?;
        let result = self.inner.shared.journal.append(lines, n).await;
        let ticket = result.as_ref().ok().copied();
        self.enqueue_logged(record, session, ticket);
        result
            .map(|_| ())
            .map_err(|e| StoreError::Journal(self.inner.config.spool_dir(), e))
    }

    /// The journal lines of `session`, `record` and `held` (a quarantined message, one long
    /// line with its bytes in hex), and how many entries they are.
    fn journal_lines(
        &self,
        session: Option<&SessionRecord>,
        record: Option<&MessageRecord>,
        held: Option<&NewQuarantine>,
    ) -> Result<(Vec<u8>, u64), StoreError> {
        // Hex: twice the raw size, plus the header fields and the records.
        let size = held.map_or(0, |q| 2 * q.raw.len() + 1024) + 2048;
        let mut lines = Vec::with_capacity(size);
        let entries = session
            .map(SpoolEntryRef::Session)
            .into_iter()
            .chain(record.map(SpoolEntryRef::Message))
            .chain(held.map(SpoolEntryRef::Quarantine));
        let mut n = 0;
        for e in entries {
            // A record always serialises; a failure here would be a bug, not an input.
            serde_json::to_writer(&mut lines, &e).map_err(|e| {
                StoreError::Journal(self.inner.config.spool_dir(), std::io::Error::other(e))
            })?;
            lines.push(b'\n');
            n += 1;
        }
        Ok((lines, n))
    }

    /// Hands records made durable in the journal (segment `ticket`; `None`: the journal
    /// failed) to the batch writer.
    fn enqueue_logged(
        &self,
        record: MessageRecord,
        session: Option<SessionRecord>,
        ticket: Option<Ticket>,
    ) {
        let contacts = db::contact_rows(&record);
        for key in db::row_keys(&contacts) {
            self.inner.shared.remember_contact(key, true);
        }
        self.enqueue_records(1 + u64::from(session.is_some()));
        if let Some(s) = session {
            self.enqueue(Entry::Session(s, ticket));
        }
        self.enqueue(Entry::Message(record, ticket, contacts));
    }

    /// Which message records keep the whole analysis (`[store] full_analysis`).
    pub fn keeps_analysis(&self, action: &str) -> bool {
        self.inner.config.full_analysis.keeps(action)
    }

    /// Counts records handed to `log_*` (quarantined messages are not records).
    fn enqueue_records(&self, n: u64) {
        self.inner.shared.logged.fetch_add(n, Ordering::Relaxed);
    }

    fn enqueue(&self, entry: Entry) {
        let shared = &self.inner.shared;
        let sender = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let entry = match sender {
            Some(tx) => match tx.try_send(entry) {
                Ok(()) => {
                    // The writer holds the batch's first record (taken when it began waiting
                    // for the deadline); these complete the batch.
                    let queued = tx.max_capacity() - tx.capacity();
                    if queued + 1 >= self.inner.config.batch_size.max(1) {
                        shared.writer_wake.notify_one();
                    }
                    return;
                }
                Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => e,
            },
            None => entry,
        };
        // Queue full (or store closed): straight into the spool, durably.
        let (line, ticket) = match entry {
            Entry::Session(s, t) => (SpoolEntry::Session(s), t),
            Entry::Message(m, t, _) => (SpoolEntry::Message(m), t),
            Entry::Quarantine(q, t) => {
                shared.quarantine_left(&q);
                if spool_quarantine(shared, &q) {
                    shared.journal.settle(t, 1);
                }
                return;
            }
            Entry::Flush(_) => return,
        };
        if let Err(e) = shared.spool().append(std::slice::from_ref(&line)) {
            // Still in the journal, if it went there: replayed after a restart.
            eprintln!("unspoof-store: cannot spool a record: {e}");
        } else {
            shared.spooled.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = ticket {
                shared.journal.settle(t, 1);
            }
        }
    }

    /// Waits until every record logged before the call is in the database or the spool, and
    /// (when the database answers) the spool has been replayed.
    pub async fn flush(&self) {
        let sender = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(tx) = sender {
            let (ack, done) = oneshot::channel();
            if tx.send(Entry::Flush(ack)).await.is_ok() {
                self.inner.shared.writer_wake.notify_one();
                let _ = done.await;
            }
        }
    }

    /// Stops the background writer after it has written (or spooled) everything queued.
    pub async fn close(&self) {
        self.inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.inner.shared.writer_wake.notify_one();
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        self.inner.shared.journal.close();
        self.inner.db.close().await;
    }

    /// Stores a quarantined message and returns once it is durable: fsync'd into the journal,
    /// in the same group commit as the records of the same moment. The batch writer then
    /// writes it into the database with its next batch (or, the database down, into a spool
    /// file of its own); after a crash the journal is replayed into the database. The front
    /// door answers 250 only after this returned `Ok`; `Err` (the journal could not be
    /// written or fsync'd) leaves nothing to the writer, and the door answers 4xx.
    pub async fn quarantine_put(&self, q: NewQuarantine) -> Result<(), StoreError> {
        self.hold(q, None).await
    }

    /// A quarantined message together with its message record (and, when given, its
    /// session's record as it stands, as for [`Store::log_durable`]): all in one journal
    /// write, so the front door waits for one group commit before its 250, not one for the
    /// message and then one for its record. Returns once all of them are durable (kill -9
    /// after the 250 finds both the held message and its record). `Err` (the journal could
    /// not be written or fsync'd): none of them is logged or queued; the door answers 4xx
    /// and logs that outcome instead (a record with the same session is then logged anew).
    pub async fn quarantine_with_record(
        &self,
        q: NewQuarantine,
        record: MessageRecord,
        session: Option<SessionRecord>,
    ) -> Result<(), StoreError> {
        self.hold(q, Some((record, session))).await
    }

    async fn hold(
        &self,
        q: NewQuarantine,
        records: Option<(MessageRecord, Option<SessionRecord>)>,
    ) -> Result<(), StoreError> {
        let journal_err = |e| StoreError::Journal(self.inner.config.spool_dir(), e);
        let (record, session) = match &records {
            Some((r, s)) => (Some(r), s.as_ref()),
            None => (None, None),
        };
        let (lines, n) = self.journal_lines(session, record, Some(&q))?;
        let ticket = self
            .inner
            .shared
            .journal
            .append(lines, n)
            .await
            .map_err(journal_err)?;
        if let Some((record, session)) = records {
            self.enqueue_logged(record, session, Some(ticket));
        }
        self.queue_quarantine(q, ticket).await;
        Ok(())
    }

    /// Hands a quarantined message (durable in journal segment `ticket`) to the batch
    /// writer, or, beyond `quarantine_queue_bytes` held for it, writes it into a spool file of
    /// its own here (on a blocking thread), which the writer replays into the database.
    async fn queue_quarantine(&self, q: NewQuarantine, ticket: Ticket) {
        let shared = &self.inner.shared;
        let bytes = q.raw.len() as u64;
        let held = shared.quarantine_queued.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if held <= self.inner.config.quarantine_queue_bytes {
            return self.enqueue(Entry::Quarantine(q, ticket));
        }
        shared.quarantine_queued.fetch_sub(bytes, Ordering::SeqCst);
        let shared = shared.clone();
        let spooled = tokio::task::spawn_blocking(move || {
            if spool_quarantine(&shared, &q) {
                shared.journal.settle(ticket, 1);
            }
        })
        .await;
        // A panic in the spool write: the message stays in the journal, replayed at the next
        // start (as when the spool cannot be written).
        if let Err(e) = spooled {
            eprintln!("unspoof-store: spooling a quarantined message failed: {e}");
        }
    }

    /// [`Store::quarantine_put`] for a blocking thread. Must not be called from inside an
    /// async task.
    pub fn quarantine_put_blocking(&self, q: NewQuarantine) -> Result<(), StoreError> {
        self.inner.runtime.block_on(self.quarantine_put(q))
    }

    /// Quarantined messages, newest first, without their raw bytes.
    pub async fn quarantine_list(
        &self,
        status: Option<QuarantineStatus>,
        limit: u32,
    ) -> Result<Vec<QuarantineEntry>, StoreError> {
        Ok(self.inner.db.quarantine_list(status, limit).await?)
    }

    /// One quarantined message with its raw bytes.
    pub async fn quarantine_get(&self, id: &str) -> Result<Option<QuarantineEntry>, StoreError> {
        Ok(self.inner.db.quarantine_get(id).await?)
    }

    /// Claims a held message for release (`held` → `releasing`, recording `actor` and the
    /// time) and returns it with its bytes. Two people releasing at once: one gets `NotHeld`.
    pub async fn release_begin(
        &self,
        id: &str,
        actor: &str,
    ) -> Result<QuarantineEntry, StoreError> {
        let db = &self.inner.db;
        let claimed = db
            .quarantine_transition(
                id,
                &[QuarantineStatus::Held],
                QuarantineStatus::Releasing,
                actor,
                now(),
                None,
                false,
            )
            .await?;
        let entry = db
            .quarantine_get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        if !claimed {
            return Err(StoreError::NotHeld(id.into(), entry.status.as_str()));
        }
        Ok(entry)
    }

    /// Finishes a release: `Ok(where)` (the downstream's reply, the Maildir path) marks it
    /// `released` and makes its sender known to its recipients (first contact); `Err(why)`
    /// puts it back to `held` with the error as the result.
    pub async fn release_end(
        &self,
        id: &str,
        actor: &str,
        outcome: Result<&str, &str>,
    ) -> Result<(), StoreError> {
        let db = &self.inner.db;
        let (to, result) = match outcome {
            Ok(r) => (QuarantineStatus::Released, r),
            Err(e) => (QuarantineStatus::Held, e),
        };
        db.quarantine_transition(
            id,
            &[QuarantineStatus::Releasing],
            to,
            actor,
            now(),
            Some(result),
            false,
        )
        .await?;
        if to == QuarantineStatus::Released
            && let Some(e) = db.quarantine_get(id).await?
            && let Some(domain) =
                db::contact_domain(e.message.from.as_deref(), e.message.mail_from.as_deref())
        {
            let mut rows = db::contact_pairs(&domain, &e.message.recipients, now());
            rows.extend(db::correspondent_row(e.message.from.as_deref(), now()));
            for key in db::row_keys(&rows) {
                self.inner.shared.remember_contact(key, true);
            }
            db.add_contacts(rows).await?;
        }
        Ok(())
    }

    /// Deletes a quarantined message's bytes (`held` → `deleted`), keeping who and when.
    /// Returns false when it was not held.
    pub async fn quarantine_delete(&self, id: &str, actor: &str) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .db
            .quarantine_transition(
                id,
                &[QuarantineStatus::Held],
                QuarantineStatus::Deleted,
                actor,
                now(),
                None,
                true,
            )
            .await?)
    }

    /// Message records matching `q`, newest first, without the `dns` and `analysis` JSON
    /// (use [`Store::message`] for the whole record).
    pub async fn search(&self, q: &Query) -> Result<Vec<MessageRecord>, StoreError> {
        Ok(self.inner.db.search(q).await?)
    }

    /// How many message records match `q` (its limit ignored).
    pub async fn count(&self, q: &Query) -> Result<i64, StoreError> {
        Ok(self.inner.db.count(q).await?)
    }

    /// The whole message record with this id.
    pub async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        Ok(self.inner.db.message(id).await?)
    }

    /// The whole record for `key`: a record id, else the newest with that queue id, else the
    /// newest with that Message-ID.
    pub async fn find(&self, key: &str) -> Result<Option<MessageRecord>, StoreError> {
        if let Some(m) = self.message(key).await? {
            return Ok(Some(m));
        }
        for q in [
            Query {
                queue_id: Some(key.into()),
                limit: Some(1),
                ..Default::default()
            },
            Query {
                message_id: Some(key.into()),
                limit: Some(1),
                ..Default::default()
            },
        ] {
            if let Some(m) = self.search(&q).await?.into_iter().next() {
                return self.message(&m.id).await;
            }
        }
        Ok(None)
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.inner.db.session(id).await?)
    }

    /// First contact: has `recipient` (with `None`: anyone at this site) ever been delivered
    /// mail whose From domain (else MAIL FROM domain) is `sender_domain`? Delivered means the
    /// verdict was `accept` or `tag`, or a person released it from quarantine; a user of ours
    /// writing to the domain (submission) counts too. The front door asks before it calls the
    /// engine and passes the answer in; on `Err` it passes "unknown".
    pub async fn has_seen(
        &self,
        sender_domain: &str,
        recipient: Option<&str>,
    ) -> Result<bool, StoreError> {
        let key = recipient.map(|r| db::contact_key(sender_domain, r));
        if let Some(known) = key
            .as_ref()
            .and_then(|k| self.inner.shared.recall_contact(k))
        {
            return Ok(known);
        }
        let seen = match timeout(
            self.inner.config.db_timeout(),
            self.inner.db.has_seen(sender_domain, recipient),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Err(StoreError::Timeout(self.inner.config.db_timeout())),
        };
        if let Some(key) = key {
            self.inner.shared.remember_contact(key, seen);
        }
        Ok(seen)
    }

    /// [`Store::has_seen`] for a blocking thread. Must not be called from inside an async task.
    pub fn has_seen_blocking(
        &self,
        sender_domain: &str,
        recipient: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.inner
            .runtime
            .block_on(self.has_seen(sender_domain, recipient))
    }

    /// Refreshes the databases' planner statistics (`ANALYZE`); `prune` does it too. Run it
    /// after a bulk load: searches then pick the right index.
    pub async fn analyze(&self) -> Result<(), StoreError> {
        Ok(self.inner.db.analyze().await?)
    }

    /// Applies the retention settings at time `now` (Unix seconds): deletes what is older than
    /// `retention_days`, then the oldest records until the rest fits in `max_bytes`. First
    /// contacts are kept (they are what "ever" means).
    pub async fn prune(&self, now: i64) -> Result<PruneReport, StoreError> {
        let db = &self.inner.db;
        let mut report = PruneReport::default();
        let mut add = |(m, s, q): (u64, u64, u64)| {
            report.messages += m;
            report.sessions += s;
            report.quarantined += q;
        };
        if let Some(days) = self.inner.config.retention_days {
            add(db.delete_before(now - i64::from(days) * 86_400).await?);
        }
        if let Some(max) = self.inner.config.max_bytes
            && let Some(t) = db.size_cutoff(max.min(i64::MAX as u64) as i64).await?
        {
            add(db.delete_before(t.saturating_add(1)).await?);
        }
        db.reclaim().await?;
        db.analyze().await?;
        report.bytes_after = db.total_bytes().await?.max(0) as u64;
        Ok(report)
    }
}

/// First contact for the engine (`unspoof_engine::contact`): the front doors ask the store
/// before each decision. A database that is down or slow answers "could not tell" (`None`),
/// never a guess.
impl unspoof_engine::contact::ContactHistory for Store {
    fn has_seen<'a>(
        &'a self,
        sender_domain: &'a str,
        recipient: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send + 'a>> {
        Box::pin(async move {
            let key = db::contact_key(sender_domain, recipient);
            if let Some(known) = self.inner.shared.recall_contact(&key) {
                return Some(known);
            }
            if self.inner.shared.db_down.load(Ordering::SeqCst) {
                return None;
            }
            Store::has_seen(self, sender_domain, Some(recipient))
                .await
                .ok()
        })
    }
}

/// Trust on first use for signed mail (`unspoof_engine::signed`): the keys a sender signed with
/// before, asked before each decision; a database that is down or slow answers "could not
/// tell" (`None`), and the engine then treats the key as unanchored, never as known.
impl unspoof_engine::signed::SignerHistory for Store {
    fn keys_of<'a>(
        &'a self,
        address: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<String>>> + Send + 'a>> {
        Box::pin(async move {
            if self.inner.shared.db_down.load(Ordering::SeqCst) {
                return None;
            }
            timeout(
                self.inner.config.db_timeout(),
                self.inner.db.signing_keys(address),
            )
            .await
            .ok()?
            .ok()
        })
    }

    fn remember<'a>(
        &'a self,
        address: &'a str,
        fingerprint: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let _ = timeout(
                self.inner.config.db_timeout(),
                self.inner
                    .db
                    .remember_signing_key(address, fingerprint, now()),
            )
            .await;
        })
    }
}

/// Backscatter's question for the engine (`unspoof_engine::bounce`): did we send the message a
/// bounce or auto-reply answers? The messages index by Message-ID answers it; a database that
/// is down or slow answers "could not tell" (`None`), and the returned headers decide alone.
impl unspoof_engine::bounce::OutboundHistory for Store {
    fn sent<'a>(
        &'a self,
        message_id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send + 'a>> {
        Box::pin(async move {
            if self.inner.shared.db_down.load(Ordering::SeqCst) {
                return None;
            }
            let id = normalize_message_id(message_id);
            match timeout(
                self.inner.config.db_timeout(),
                self.inner.db.sent_message(&id),
            )
            .await
            {
                Ok(Ok(sent)) => Some(sent),
                _ => None,
            }
        })
    }
}

/// The records of the batch being gathered.
#[derive(Default)]
struct Batch {
    sessions: Vec<SessionRecord>,
    messages: Vec<MessageRecord>,
    /// The messages' `contacts` rows (made when they were logged).
    contacts: Vec<Vec<query::Val>>,
    /// The journal segments of the records in the batch, settled once it is written.
    tickets: Vec<Ticket>,
    /// Quarantined messages, each with its journal segment.
    quarantines: Vec<NewQuarantine>,
    quarantine_tickets: Vec<Ticket>,
}

impl Batch {
    fn len(&self) -> usize {
        self.sessions.len() + self.messages.len() + self.quarantines.len()
    }
}

/// Writes a quarantined message into a spool file of its own (the database is down or the
/// queue full); the writer replays it into the database later. Returns whether it is there.
fn spool_quarantine(shared: &Shared, q: &NewQuarantine) -> bool {
    match shared.spool().quarantine_put(q) {
        Ok(_) => {
            shared.quarantine_spooled.fetch_add(1, Ordering::Relaxed);
            true
        }
        // Still in the journal: replayed after a restart.
        Err(e) => {
            eprintln!(
                "unspoof-store: cannot spool quarantined message {}: {e}",
                q.id
            );
            false
        }
    }
}

/// The background task: batches records into transactions, spools them when the database does
/// not answer, and replays the spool when it does again.
struct Writer {
    db: Db,
    shared: Arc<Shared>,
    batch_size: usize,
    flush_interval: Duration,
    retry_interval: Duration,
    db_timeout: Duration,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Entry>) {
        let mut batch = Batch::default();
        let mut deadline: Option<Instant> = None;
        // The first try is the one just below, not a tick at once.
        let mut retry =
            tokio::time::interval_at(Instant::now() + self.retry_interval, self.retry_interval);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Spool files left by an earlier run (ours or a dead neighbour's) go in first.
        let mut next_retry = Instant::now();
        self.replay_if_due(&mut next_retry).await;
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // Timers first: a flood of records never starves the batch deadline or the retry.
            // While a batch waits for its deadline, the queue is not watched (a record does
            // not wake the writer); the deadline, a full batch, a flush or a close do, and
            // then everything queued is taken at once.
            tokio::select! {
                biased;
                _ = sleep => {}
                _ = self.shared.writer_wake.notified(), if deadline.is_some() => {}
                _ = retry.tick() => {
                    self.replay_if_due(&mut next_retry).await;
                    continue;
                }
                entry = rx.recv(), if deadline.is_none() => match entry {
                    Some(entry) => {
                        if self.take(entry, &mut batch, &mut next_retry).await {
                            deadline = Some(Instant::now() + self.flush_interval);
                        }
                        continue;
                    }
                    None => {
                        self.write(&mut batch).await;
                        self.replay_if_due(&mut next_retry).await;
                        return;
                    }
                },
            }
            // The deadline passed, or something woke the writer: everything queued now.
            loop {
                match rx.try_recv() {
                    Ok(entry) => {
                        self.take(entry, &mut batch, &mut next_retry).await;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.write(&mut batch).await;
                        self.replay_if_due(&mut next_retry).await;
                        return;
                    }
                }
            }
            self.write(&mut batch).await;
            deadline = None;
        }
    }

    /// Adds a queued entry to the batch (written at once when it is full); a flush writes the
    /// batch and answers. Returns whether records now wait for the batch's deadline.
    async fn take(&self, entry: Entry, batch: &mut Batch, next_retry: &mut Instant) -> bool {
        match entry {
            Entry::Session(s, t) => {
                batch.sessions.push(s);
                batch.tickets.extend(t);
            }
            Entry::Message(m, t, contacts) => {
                batch.messages.push(m);
                batch.contacts.extend(contacts);
                batch.tickets.extend(t);
            }
            Entry::Quarantine(q, t) => {
                batch.quarantines.push(q);
                batch.quarantine_tickets.push(t);
            }
            Entry::Flush(ack) => {
                self.write(batch).await;
                self.replay_if_due(next_retry).await;
                let _ = ack.send(());
                return false;
            }
        }
        if batch.len() >= self.batch_size {
            self.write(batch).await;
        }
        batch.len() > 0
    }

    /// Replays the spool when there is something to replay and, if the database was down, the
    /// retry interval has passed since the last try (a down database costs one connection
    /// attempt per interval, not one per record).
    async fn replay_if_due(&self, next_retry: &mut Instant) {
        let down = self.shared.db_down.load(Ordering::SeqCst);
        if down && Instant::now() < *next_retry {
            return;
        }
        if !down && !self.shared.spool().has_pending() {
            return;
        }
        self.replay().await;
        *next_retry = Instant::now() + self.retry_interval;
    }

    /// Writes one batch to the database, or to the spool when the database is down. On
    /// success or spool the vectors are emptied; if both fail they keep their records.
    async fn write(&self, batch: &mut Batch) {
        if batch.len() == 0 {
            return;
        }
        let Batch {
            sessions,
            messages,
            contacts,
            tickets,
            quarantines,
            quarantine_tickets,
        } = batch;
        let n = (sessions.len() + messages.len()) as u64;
        let settle = |tickets: &mut Vec<Ticket>| {
            for t in tickets.drain(..) {
                self.shared.journal.settle(t, 1);
            }
        };
        let shared = &self.shared;
        if !shared.db_down.load(Ordering::SeqCst) && shared.migrated.load(Ordering::SeqCst) {
            let write = async {
                let _turn = shared.write_turn(self.db.backend()).await;
                self.db
                    .write_batch(sessions, messages, Some(contacts), quarantines)
                    .await
            };
            match timeout(self.db_timeout, write).await {
                Ok(Ok(())) => {
                    shared.written.fetch_add(n, Ordering::Relaxed);
                    sessions.clear();
                    messages.clear();
                    contacts.clear();
                    settle(tickets);
                    for q in quarantines.drain(..) {
                        shared.quarantine_left(&q);
                    }
                    settle(quarantine_tickets);
                    return;
                }
                Ok(Err(e)) => shared.down(&e),
                Err(_) => shared.down(&"timed out"),
            }
        }
        // Each quarantined message in a file of its own (see `SpoolEntry::Quarantine`); one
        // that cannot be written stays for the next batch.
        let mut i = 0;
        while i < quarantines.len() {
            if spool_quarantine(shared, &quarantines[i]) {
                shared.quarantine_left(&quarantines.swap_remove(i));
                shared.journal.settle(quarantine_tickets.swap_remove(i), 1);
            } else {
                i += 1;
            }
        }
        if n == 0 {
            return;
        }
        let entries: Vec<SpoolEntry> = sessions
            .iter()
            .cloned()
            .map(SpoolEntry::Session)
            .chain(messages.iter().cloned().map(SpoolEntry::Message))
            .collect();
        match shared.spool().append(&entries) {
            Ok(()) => {
                shared.spooled.fetch_add(n, Ordering::Relaxed);
                sessions.clear();
                messages.clear();
                contacts.clear();
                settle(tickets);
            }
            // Kept in memory; tried again with the next batch.
            Err(e) => eprintln!("unspoof-store: cannot spool {n} records: {e}"),
        }
    }

    /// Replays the spool into the database, if it answers. Stops at the first failure; what
    /// is not replayed stays in the spool.
    async fn replay(&self) {
        let shared = &self.shared;
        if !shared.migrated.load(Ordering::SeqCst) {
            match timeout(self.db_timeout * 2, self.db.migrate()).await {
                Ok(Ok(())) => shared.migrated.store(true, Ordering::SeqCst),
                Ok(Err(e)) => return shared.down(&e),
                Err(_) => return shared.down(&"timed out"),
            }
        }
        match timeout(self.db_timeout, self.db.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return shared.down(&e),
            Err(_) => return shared.down(&"timed out"),
        }
        let mut replayed = 0u64;
        let mut records = 0u64;
        let quarantine = shared.spool().quarantine_files();
        for path in quarantine {
            let Ok(q) = Spool::quarantine_read(&path) else {
                continue; // Removed by a neighbour meanwhile, or unreadable: left for a person.
            };
            let put = async {
                let _turn = shared.write_turn(self.db.backend()).await;
                self.db.quarantine_put(&q).await
            };
            match timeout(self.db_timeout, put).await {
                Ok(Ok(())) => {
                    let _ = shared.spool().quarantine_done(&path);
                    replayed += 1;
                }
                Ok(Err(e)) => return shared.down(&e),
                Err(_) => return shared.down(&"timed out"),
            }
        }
        let taken = shared.spool().take_records();
        for file in taken {
            let Ok((entries, _torn)) = Spool::read(&file) else {
                continue;
            };
            for chunk in entries.chunks(self.batch_size) {
                let mut sessions = Vec::new();
                let mut messages = Vec::new();
                let mut quarantines = Vec::new();
                for e in chunk.iter().cloned() {
                    match e {
                        SpoolEntry::Session(s) => sessions.push(s),
                        SpoolEntry::Message(m) => messages.push(m),
                        SpoolEntry::Quarantine(q) => quarantines.push(q),
                    }
                }
                let write = async {
                    let _turn = self.shared.write_turn(self.db.backend()).await;
                    self.db
                        .write_batch(&sessions, &messages, None, &quarantines)
                        .await
                };
                match timeout(self.db_timeout, write).await {
                    Ok(Ok(())) => {
                        replayed += chunk.len() as u64;
                        records += (sessions.len() + messages.len()) as u64;
                    }
                    // The file stays; unlocked now, it is taken again at the next try.
                    Ok(Err(e)) => return shared.down(&e),
                    Err(_) => return shared.down(&"timed out"),
                }
            }
            let _ = shared.spool().done(file);
        }
        shared.replayed.fetch_add(replayed, Ordering::Relaxed);
        shared.written.fetch_add(records, Ordering::Relaxed);
        if shared.db_down.swap(false, Ordering::SeqCst) {
            eprintln!("unspoof-store: database answers again, {replayed} spooled entries written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(d: &str, r: &str) -> (String, String) {
        (d.to_string(), r.to_string())
    }

    /// The journal segments in a spool directory, with the quarantined messages they hold.
    fn journal_quarantines(spool: &std::path::Path) -> Vec<(PathBuf, Vec<NewQuarantine>)> {
        journal::segment_files(spool)
            .into_iter()
            .map(|p| {
                let (entries, _) = Spool::read_path(&p).unwrap();
                let held = entries
                    .into_iter()
                    .filter_map(|e| match e {
                        SpoolEntry::Quarantine(q) => Some(q),
                        _ => None,
                    })
                    .collect();
                (p, held)
            })
            .collect()
    }

    /// A quarantined message is durable through the journal, not a file of its own, even
    /// while the batch writer holds SQLite's write turn: once `quarantine_put` returned, a
    /// journal segment holds it, whole; a store started on that segment alone (the writer of
    /// the first never having written it, as after a kill -9) puts it into its database; and
    /// the first store's writer puts it into its own with its next batch.
    #[tokio::test]
    async fn a_quarantined_message_is_durable_in_the_journal_and_replayed_from_it() {
        let dir = std::env::temp_dir().join(format!("unspoof-store-qjournal-{}", new_id()));
        let mut config = StoreConfig::new("", &dir);
        config.retry_interval_ms = 3_600_000;
        config.flush_interval_ms = 3_600_000;
        let store = Store::open(config).await.unwrap();
        let q = NewQuarantine {
            id: new_id(),
            quarantined_at: 1_763_900_000,
            node: "mx1".into(),
            recipients: vec!["ann@site.test".into()],
            // Every byte value, as mail need not be text.
            raw: (0..=255u8).cycle().take(70_000).collect(),
            ..Default::default()
        };
        // The writer is past its start, where it replays whatever is in the spool.
        store.flush().await;
        let turn = store.inner.shared.sqlite_writes.lock().await;
        store.quarantine_put(q.clone()).await.unwrap();
        let spool = store.config().spool_dir();
        assert!(store.inner.shared.spool().quarantine_files().is_empty());
        let segments = journal_quarantines(&spool);
        let holding: Vec<_> = segments.iter().filter(|(_, h)| !h.is_empty()).collect();
        assert_eq!(holding.len(), 1, "{segments:?}");
        assert_eq!(
            holding[0]
                .1
                .iter()
                .map(|h| (&h.id, &h.raw))
                .collect::<Vec<_>>(),
            vec![(&q.id, &q.raw)]
        );
        assert!(store.quarantine_get(&q.id).await.unwrap().is_none());

        // What a restart after a kill -9 finds: the segment, and a database without it.
        let other = std::env::temp_dir().join(format!("unspoof-store-qreplay-{}", new_id()));
        std::fs::create_dir_all(other.join("spool")).unwrap();
        let segment = &holding[0].0;
        std::fs::copy(
            segment,
            other.join("spool").join(segment.file_name().unwrap()),
        )
        .unwrap();
        let restarted = Store::open(StoreConfig::new("", &other)).await.unwrap();
        restarted.flush().await;
        let replayed = restarted.quarantine_get(&q.id).await.unwrap();
        let replayed = replayed.expect("replayed from the journal");
        assert_eq!(
            (replayed.status, &replayed.message.raw),
            (QuarantineStatus::Held, &q.raw)
        );
        assert!(journal_quarantines(&other.join("spool")).is_empty());
        restarted.close().await;

        // And the ordinary path: the writer's next batch, once the turn is free.
        drop(turn);
        store.flush().await;
        let synced = store.quarantine_get(&q.id).await.unwrap();
        assert_eq!(
            synced.expect("written by the batch writer").message.raw,
            q.raw
        );
        let s = store.stats();
        assert_eq!((s.quarantine_spooled, s.logged, s.db_down), (0, 0, false));
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }

    /// A journal that cannot take the message fails the put (the front door then answers
    /// 4xx), and nothing of it reaches the database.
    #[tokio::test]
    async fn a_quarantined_message_the_journal_refuses_fails_the_put() {
        let dir = std::env::temp_dir().join(format!("unspoof-store-qfail-{}", new_id()));
        let store = Store::open(StoreConfig::new("", &dir)).await.unwrap();
        let q = NewQuarantine {
            id: new_id(),
            raw: b"Subject: held\r\n\r\nbody\r\n".to_vec(),
            ..Default::default()
        };
        store.inner.shared.journal.close();
        let err = store.quarantine_put(q.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::Journal(..)), "{err}");
        store.flush().await;
        assert!(store.quarantine_get(&q.id).await.unwrap().is_none());
        assert!(store.inner.shared.spool().quarantine_files().is_empty());
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn held(size: usize) -> NewQuarantine {
        NewQuarantine {
            id: new_id(),
            quarantined_at: 1_763_900_000,
            node: "mx1".into(),
            recipients: vec!["ann@site.test".into()],
            raw: vec![b'x'; size],
            ..Default::default()
        }
    }

    /// A quarantined message, its record and its session's go into the journal in one
    /// write and one group commit (not one for the message and then one for the records),
    /// all three whole in one segment; the batch writer then puts all three into the
    /// database.
    #[tokio::test]
    async fn a_quarantined_message_and_its_record_share_one_group_commit() {
        let dir = std::env::temp_dir().join(format!("unspoof-store-qrecord-{}", new_id()));
        let mut config = StoreConfig::new("", &dir);
        config.journal_writers = 1;
        config.flush_interval_ms = 3_600_000;
        let store = Store::open(config).await.unwrap();
        let mut q = held(70_000);
        let session = SessionRecord {
            id: new_id(),
            started_at: 1_763_900_000,
            node: "mx1".into(),
            listener: "inbound".into(),
            outcome: "open".into(),
            ..Default::default()
        };
        let record = MessageRecord {
            id: new_id(),
            session_id: Some(session.id.clone()),
            received_at: 1_763_900_000,
            node: "mx1".into(),
            listener: "inbound".into(),
            action: "quarantine".into(),
            stored_at: Some(q.id.clone()),
            ..Default::default()
        };
        q.message_record = Some(record.id.clone());
        let before = store.inner.shared.journal.groups();
        store
            .quarantine_with_record(q.clone(), record.clone(), Some(session.clone()))
            .await
            .unwrap();
        assert_eq!(store.inner.shared.journal.groups(), before + 1);
        let segments = journal::segment_files(&store.config().spool_dir());
        let mut found = (0, 0, 0);
        for p in &segments {
            let (entries, torn) = Spool::read_path(p).unwrap();
            assert_eq!(torn, 0);
            for e in entries {
                match e {
                    SpoolEntry::Session(s) if s.id == session.id => found.0 += 1,
                    SpoolEntry::Message(m) if m.id == record.id => found.1 += 1,
                    SpoolEntry::Quarantine(h) if h.id == q.id && h.raw == q.raw => found.2 += 1,
                    _ => {}
                }
            }
        }
        assert_eq!(found, (1, 1, 1), "{segments:?}");
        store.flush().await;
        let stored = store.quarantine_get(&q.id).await.unwrap().expect("held");
        assert_eq!(stored.message.message_record, Some(record.id.clone()));
        let logged = store.message(&record.id).await.unwrap().expect("record");
        assert_eq!(logged.stored_at, Some(q.id.clone()));
        assert!(store.session(&session.id).await.unwrap().is_some());
        assert_eq!(store.stats().logged, 2);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The joined write refused by the journal: an error, and neither the message nor its
    /// record reaches the database (the front door answers 4xx and logs that instead).
    #[tokio::test]
    async fn a_quarantined_message_and_record_the_journal_refuses_leave_nothing() {
        let dir = std::env::temp_dir().join(format!("unspoof-store-qrfail-{}", new_id()));
        let store = Store::open(StoreConfig::new("", &dir)).await.unwrap();
        let q = held(100);
        let record = MessageRecord {
            id: new_id(),
            received_at: 1_763_900_000,
            node: "mx1".into(),
            listener: "inbound".into(),
            action: "quarantine".into(),
            ..Default::default()
        };
        store.inner.shared.journal.close();
        let err = store
            .quarantine_with_record(q.clone(), record.clone(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Journal(..)), "{err}");
        store.flush().await;
        assert!(store.quarantine_get(&q.id).await.unwrap().is_none());
        assert!(store.message(&record.id).await.unwrap().is_none());
        assert_eq!(store.stats().logged, 0);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `quarantine_queue_bytes`: quarantined messages waiting for the writer (here for its
    /// hour-long batch deadline, as behind a slow database) hold at most that many bytes in
    /// memory; the ones beyond go to spool files of their own, and all of them reach the
    /// database.
    #[tokio::test]
    async fn quarantined_messages_beyond_the_queue_bytes_go_to_the_spool() {
        let dir = std::env::temp_dir().join(format!("unspoof-store-qbytes-{}", new_id()));
        let mut config = StoreConfig::new("", &dir);
        config.flush_interval_ms = 3_600_000;
        config.retry_interval_ms = 3_600_000;
        config.quarantine_queue_bytes = 3_000;
        // (No flush first: it leaves the writer a wake-up that would end the first batch's
        // wait at once.)
        let store = Store::open(config).await.unwrap();
        let held: Vec<NewQuarantine> = (0..5).map(|_| held(1_000)).collect();
        for q in &held {
            store.quarantine_put(q.clone()).await.unwrap();
        }
        let s = store.stats();
        assert_eq!((s.quarantine_queued, s.quarantine_spooled), (3_000, 2));
        assert_eq!(store.inner.shared.spool().quarantine_files().len(), 2);
        store.flush().await;
        for q in &held {
            let stored = store.quarantine_get(&q.id).await.unwrap();
            assert_eq!(stored.expect("in the database").message.raw, q.raw);
        }
        assert_eq!(store.stats().quarantine_queued, 0);
        assert!(store.inner.shared.spool().quarantine_files().is_empty());
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The writer is not woken by each record, but a full batch does wake it: with an hour
    /// between batches, `batch_size` records are written without a flush.
    #[tokio::test]
    async fn a_full_batch_is_written_before_its_deadline() {
        let dir = std::env::temp_dir().join(format!("unspoof-store-full-{}", new_id()));
        let mut config = StoreConfig::new("", &dir);
        config.flush_interval_ms = 3_600_000;
        config.batch_size = 10;
        let store = Store::open(config).await.unwrap();
        let ids: Vec<String> = (0..10).map(|_| new_id()).collect();
        for id in &ids {
            store.log_message(MessageRecord {
                id: id.clone(),
                received_at: 1_763_900_000,
                node: "mx1".into(),
                listener: "inbound".into(),
                action: "accept".into(),
                ..Default::default()
            });
        }
        let mut written = 0;
        for _ in 0..250 {
            written = store.stats().written;
            if written == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            written, 10,
            "written within 5 s, not at the hour's deadline"
        );
        for id in &ids {
            assert!(store.message(id).await.unwrap().is_some(), "{id}");
        }
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn contact_memory_keeps_seen_for_good_and_not_seen_for_a_minute() {
        let mut m = ContactMemory::default();
        assert_eq!(m.recall(&key("a.example", "ann@site.test")), None);
        m.remember(key("a.example", "ann@site.test"), false);
        assert_eq!(m.recall(&key("a.example", "ann@site.test")), Some(false));
        // A delivery makes it seen at once, whatever was remembered before.
        m.remember(key("a.example", "ann@site.test"), true);
        assert_eq!(m.recall(&key("a.example", "ann@site.test")), Some(true));
        // An old "not seen" is asked again.
        let old = std::time::Instant::now()
            .checked_sub(NOT_SEEN_TTL + Duration::from_secs(1))
            .unwrap();
        m.not_seen.insert(key("b.example", "ann@site.test"), old);
        assert_eq!(m.recall(&key("b.example", "ann@site.test")), None);
    }
}
