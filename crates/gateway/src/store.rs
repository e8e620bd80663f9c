//! Where messages and session records go: small traits so the searchable store (its own issue)
//! can plug in, and the default file-based implementations.
//!
//! **Invariant:** every implementation returns only after the data is durable; the gateway
//! answers 250 only after `deliver`/`quarantine` returned `Ok`.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::decide::Envelope;

/// A message the engine quarantined, with what identifies it to whoever reviews the
/// quarantine.
#[derive(Debug, Clone)]
pub struct QuarantineItem {
    /// Our queue id, also in our Received header.
    pub queue_id: String,
    /// The session the message came in ([`SessionRecord::id`]).
    pub session_id: String,
    pub envelope: Envelope,
    /// The message as it will be released: our headers (Received, Authentication-Results,
    /// X-Unspoof-Verdict) prepended.
    pub message: Vec<u8>,
    /// The engine's reason codes, decisive first.
    pub reasons: Vec<String>,
    /// The engine's whole analysis (`None` from test doubles).
    pub analysis: Option<Arc<unspoof_engine::Analysis>>,
}

/// Stores quarantined messages.
pub trait Quarantine: Send + Sync + 'static {
    /// Stores the message durably; returns where it went (a path, a quarantine id). Called
    /// from a blocking thread.
    fn quarantine(&self, item: QuarantineItem) -> io::Result<String>;

    /// Whether this quarantine also keeps the session log's durable records (the store):
    /// then the gateway stores a quarantined message with
    /// [`Quarantine::quarantine_with_record`] instead of `quarantine` followed by
    /// [`SessionLog::record_durable`]. Default: no.
    fn keeps_records(&self) -> bool {
        false
    }

    /// Stores the message, its record and (when given) the session's record as it stands,
    /// all durable when the future is done (one write, so one wait before the 250); sets
    /// `record.stored_at` to where the message goes before it returns the future. Called on
    /// the runtime, only when [`Quarantine::keeps_records`]. `Err`: none of them is stored;
    /// the gateway answers 4xx and logs that outcome (`SessionLog::record_durable`), and the
    /// session logs are given the record with [`SessionLog::record_held`] only on `Ok`.
    fn quarantine_with_record<'a>(
        &'a self,
        item: QuarantineItem,
        record: &'a mut MessageRecord,
        session: Option<&'a SessionRecord>,
    ) -> DurableFuture<'a> {
        let _ = (item, record, session);
        Box::pin(std::future::ready(Err(io::Error::other(
            "this quarantine keeps no records",
        ))))
    }
}

/// Final delivery when no downstream MTA is configured. Called from a blocking thread.
pub trait LocalDelivery: Send + Sync + 'static {
    fn deliver(&self, queue_id: &str, envelope: &Envelope, message: &[u8]) -> io::Result<String>;
}

/// A Maildir (`tmp/`, `new/`, `cur/`): write into `tmp`, fsync the file, rename into `new`,
/// fsync `new` (the Maildir delivery protocol, plus the fsyncs that make it durable).
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
    hostname: String,
}

impl Maildir {
    /// Opens (creating if needed) the Maildir at `root`.
    pub fn open(root: impl Into<PathBuf>, hostname: &str) -> io::Result<Self> {
        let root = root.into();
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir_all(root.join(sub))?;
        }
        Ok(Maildir {
            root,
            hostname: hostname.replace(['/', ':'], "_"),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes one message durably; returns its path under `new/`.
    pub fn store(&self, queue_id: &str, message: &[u8]) -> io::Result<PathBuf> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}.{}P{}.{}",
            now.as_secs(),
            queue_id,
            std::process::id(),
            self.hostname
        );
        let tmp = self.root.join("tmp").join(&name);
        let new = self.root.join("new").join(&name);
        {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(message)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &new)?;
        File::open(self.root.join("new"))?.sync_all()?;
        Ok(new)
    }
}

impl LocalDelivery for Maildir {
    fn deliver(&self, queue_id: &str, _: &Envelope, message: &[u8]) -> io::Result<String> {
        self.store(queue_id, message)
            .map(|p| p.display().to_string())
    }
}

impl Quarantine for Maildir {
    fn quarantine(&self, item: QuarantineItem) -> io::Result<String> {
        self.store(&item.queue_id, &item.message)
            .map(|p| p.display().to_string())
    }
}

/// TLS facts of a session, for the log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// One line of the session log: everything needed to trace one message (seeds 3.1.5, 3.2.3).
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    /// Unix time the DATA phase ended.
    pub time: i64,
    /// Our queue id, also in our Received header. Empty for a transaction refused at MAIL
    /// FROM or RCPT TO, which never got one.
    pub queue_id: String,
    /// The SMTP session (connection) it came in: [`SessionRecord::id`].
    pub session_id: String,
    /// `inbound` or `submission`.
    pub listener: &'static str,
    pub client_ip: String,
    pub client_port: u16,
    pub reverse_dns: Option<String>,
    pub helo: Option<String>,
    pub tls: Option<TlsInfo>,
    pub auth_user: Option<String>,
    pub mail_from: Option<String>,
    pub recipients: Vec<String>,
    pub message_id: Option<String>,
    pub size: usize,
    /// What happened (the outcome enum every door shares): `accept`, `tag`, `quarantine`,
    /// `reject`, `defer` (the engine's: DNS did not answer, or it failed), `refused` (an SMTP
    /// rule, e.g. bare LF), `tempfail` (we or the downstream could not finish; the client
    /// retries).
    pub outcome: unspoof_engine::Outcome,
    /// The engine's reason codes (or the SMTP rule's code for `refused`).
    pub reasons: Vec<String>,
    /// What we answered the client.
    pub reply: String,
    /// The downstream MTA's end-of-data reply, when relayed.
    pub downstream_reply: Option<String>,
    /// Where a quarantined or locally delivered message was stored.
    pub stored_at: Option<String>,
    /// Microseconds from end of data until the reply was decided (the message relayed,
    /// stored or refused); making this record durable comes after.
    pub latency_us: u64,
    /// The engine's whole analysis, for a store that keeps it (not written to the JSON line,
    /// which stays one short line per message). `None` when the engine did not run.
    #[serde(skip)]
    pub analysis: Option<Arc<unspoof_engine::Analysis>>,
}

/// One SMTP connection, written when it ends, whether or not it carried a message: a client
/// refused at RCPT or cut off by a limit is on record too.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    /// A UUIDv7, unique across gateway processes; [`MessageRecord::session_id`] points here.
    pub id: String,
    /// Unix times of the connect and of the end (`None` while the session is open).
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// `inbound` or `submission`.
    pub listener: &'static str,
    pub client_ip: String,
    pub client_port: u16,
    pub reverse_dns: Option<String>,
    pub helo: Option<String>,
    pub tls: Option<TlsInfo>,
    pub auth_user: Option<String>,
    /// Messages that reached the end of DATA.
    pub messages: u32,
    /// How it ended: `quit`, `dropped` (the client went away), `timeout`, `errors` (too many
    /// errors), `shutdown` (we stopped; also a TLS handshake or DATA read that failed is `dropped`);
    /// `open` in the record that goes with a message while the session still runs.
    pub outcome: &'static str,
}

/// What [`SessionLog::record_durable`] returns: done once the record is durable.
pub type DurableFuture<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;

/// Receives one record per message and one per session. Called on the runtime, after the
/// client has its reply: an implementation must not wait (append a line, hand the record to a
/// queue); a thread hop per message would cost more than the record.
pub trait SessionLog: Send + Sync + 'static {
    fn record(&self, record: &MessageRecord);

    /// The record of a message whose final reply is about to go out: returns once the record
    /// is as durable as the message (kill -9 after the 250 loses neither). `session`, when
    /// given, is the session's record as it stands (the first message of a session), to be
    /// made durable with it. The default hands the record to [`SessionLog::record`], which is
    /// enough for a log whose `record` writes before returning.
    fn record_durable<'a>(
        &'a self,
        record: &'a MessageRecord,
        session: Option<&'a SessionRecord>,
    ) -> DurableFuture<'a> {
        let _ = session;
        self.record(record);
        Box::pin(std::future::ready(Ok(())))
    }

    /// The record of a quarantined message that the quarantine made durable together with
    /// the message ([`Quarantine::quarantine_with_record`]): a log that is that store has it
    /// already and leaves it; the others log it as [`SessionLog::record_durable`] would (the
    /// default).
    fn record_held<'a>(
        &'a self,
        record: &'a MessageRecord,
        session: Option<&'a SessionRecord>,
    ) -> DurableFuture<'a> {
        self.record_durable(record, session)
    }

    /// A session ended. The default ignores it (the JSON lines log is one line per message).
    fn session(&self, record: &SessionRecord) {
        let _ = record;
    }
}

/// Several session logs, each given every record (e.g. `sessions.jsonl` and the store).
pub struct SessionLogs(pub Vec<Arc<dyn SessionLog>>);

impl SessionLogs {
    /// Runs `write` on every log in turn, each to its end even when an earlier one failed
    /// (every log gets the record); the last error, if any.
    fn each_durable<'a>(
        &'a self,
        write: impl Fn(&'a dyn SessionLog) -> DurableFuture<'a> + Send + 'a,
    ) -> DurableFuture<'a> {
        Box::pin(async move {
            let mut result = Ok(());
            for log in &self.0 {
                if let Err(e) = write(log.as_ref()).await {
                    result = Err(e);
                }
            }
            result
        })
    }
}

impl SessionLog for SessionLogs {
    fn record(&self, record: &MessageRecord) {
        for log in &self.0 {
            log.record(record);
        }
    }

    fn record_durable<'a>(
        &'a self,
        record: &'a MessageRecord,
        session: Option<&'a SessionRecord>,
    ) -> DurableFuture<'a> {
        self.each_durable(move |log| log.record_durable(record, session))
    }

    fn record_held<'a>(
        &'a self,
        record: &'a MessageRecord,
        session: Option<&'a SessionRecord>,
    ) -> DurableFuture<'a> {
        self.each_durable(move |log| log.record_held(record, session))
    }

    fn session(&self, record: &SessionRecord) {
        for log in &self.0 {
            log.session(record);
        }
    }
}

/// The default session log: JSON lines appended to a file (`<data>/sessions.jsonl`). Each line
/// is written (into the kernel's page cache) before the client hears the reply, so a kill -9
/// loses none; it is not fsync'd (a power loss may lose the last lines; the store's records are).
pub struct JsonlLog {
    file: Mutex<File>,
}

impl JsonlLog {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlLog {
            file: Mutex::new(file),
        })
    }
}

impl SessionLog for JsonlLog {
    fn record(&self, record: &MessageRecord) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: O_APPEND keeps concurrent lines whole.
        let _ = f.write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_store_lands_in_new_with_exact_bytes() {
        let dir = std::env::temp_dir().join(format!("unspoof-md-{}", std::process::id()));
        let md = Maildir::open(&dir, "host/x").unwrap();
        let p = md.store("Q1", b"Subject: a\r\n\r\nb\r\n").unwrap();
        assert!(p.starts_with(dir.join("new")));
        assert_eq!(fs::read(&p).unwrap(), b"Subject: a\r\n\r\nb\r\n");
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
