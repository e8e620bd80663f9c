//! The journal: records made durable before a front door answers, so that a record is as
//! durable as its message (a kill -9 right after the 250 loses neither).
//!
//! A few threads ([`Journal::open`]'s `writers`) take turns: one waits for records, takes
//! every record waiting, appends them to its own segment and fsyncs (group commit: a busy
//! gateway pays one fsync per group, not per message); while it fsyncs, the next thread is
//! already waiting, so a record that arrives during an fsync starts its own at once instead of
//! waiting for that one to end (on a disk whose flush takes 4 ms, that is 0-4 ms of waiting
//! instead of 4-8). The records then take the ordinary path (queue, batch writer, database or
//! spool); the journal is only read after a crash.
//!
//! Files are `journal-<id>.jsonl` in the spool directory, in the spool's line format
//! ([`SpoolEntry`]), each locked (`File::lock`) by the process writing it, like the spool's own
//! files. A segment is closed at [`SEGMENT_BYTES`] and removed once every record in it has
//! been committed to the database or moved to the spool ("settled"). A segment nobody holds a
//! lock on belongs to a process that died: the spool's replay takes it like its own files
//! (`Spool::take_records`), and since every insert skips ids already stored, records that did
//! reach the database are not written twice.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use crate::record::new_id;

/// A segment is closed (and a new one begun) once it holds this many octets; it is removed
/// when all its records are settled. Small enough that a crash leaves little to replay.
pub(crate) const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// The segment a record went into: handed back to [`Journal::settle`] once the record is
/// in the database or the spool.
pub(crate) type Ticket = u64;

struct Append {
    /// Whole JSON lines, each ending in `\n`.
    lines: Vec<u8>,
    /// How many records the lines hold (each settled on its own).
    records: u64,
    done: oneshot::Sender<io::Result<Ticket>>,
}

struct Segment {
    path: PathBuf,
    /// Holds the lock while the segment lives (see the module comment).
    _file: File,
    appended: u64,
    settled: u64,
    /// No more appends: removed when `settled == appended`.
    closed: bool,
}

#[derive(Default)]
struct Segments {
    by_ticket: HashMap<Ticket, Segment>,
}

impl Segments {
    /// Removes a closed segment whose records are all settled.
    fn retire_if_done(&mut self, ticket: Ticket) {
        let done = self
            .by_ticket
            .get(&ticket)
            .is_some_and(|s| s.closed && s.settled >= s.appended);
        if done && let Some(s) = self.by_ticket.remove(&ticket) {
            // A removal lost in a crash only means records replayed twice, which are skipped.
            let _ = fs::remove_file(&s.path);
        }
    }
}

/// The journal of one store. The threads stop when it is closed or dropped.
pub(crate) struct Journal {
    tx: Mutex<Option<mpsc::Sender<Append>>>,
    segments: Arc<Mutex<Segments>>,
}

impl Journal {
    /// Opens the journal in `dir` with `writers` threads (at least one), each with its own
    /// segment.
    pub fn open(dir: &Path, writers: usize) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let segments = Arc::new(Mutex::new(Segments::default()));
        let (tx, rx) = mpsc::channel::<Append>();
        let rx = Arc::new(Mutex::new(rx));
        let tickets = Arc::new(AtomicU64::new(0));
        for i in 0..writers.max(1) {
            let writer = Appender {
                dir: dir.to_path_buf(),
                segments: segments.clone(),
                current: None,
                tickets: tickets.clone(),
            };
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("unspoof-journal-{i}"))
                .spawn(move || writer.run(&rx))?;
        }
        Ok(Journal {
            tx: Mutex::new(Some(tx)),
            segments,
        })
    }

    /// Appends `lines` (holding `records` records) and returns once they are fsync'd, with
    /// the ticket to settle them by.
    pub async fn append(&self, lines: Vec<u8>, records: u64) -> io::Result<Ticket> {
        let (done, wait) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|tx| {
                tx.send(Append {
                    lines,
                    records,
                    done,
                })
            });
        match sent {
            Some(Ok(())) => wait
                .await
                .unwrap_or_else(|_| Err(io::Error::other("journal thread stopped"))),
            _ => Err(io::Error::other("journal closed")),
        }
    }

    /// `n` records of segment `ticket` are in the database or the spool.
    pub fn settle(&self, ticket: Ticket, n: u64) {
        let mut segs = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = segs.by_ticket.get_mut(&ticket) {
            s.settled += n;
        }
        segs.retire_if_done(ticket);
    }

    /// Stops the thread; segments whose records are all settled are removed, the others stay
    /// (replayed at the next start).
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut segs = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        let tickets: Vec<Ticket> = segs.by_ticket.keys().copied().collect();
        for t in tickets {
            if let Some(s) = segs.by_ticket.get_mut(&t) {
                s.closed = true;
            }
            segs.retire_if_done(t);
        }
    }
}

/// One journal thread's state.
struct Appender {
    dir: PathBuf,
    segments: Arc<Mutex<Segments>>,
    /// This thread's open segment: its ticket, file and size so far.
    current: Option<(Ticket, File, u64)>,
    /// The next segment's ticket, shared by the threads.
    tickets: Arc<AtomicU64>,
}

impl Appender {
    fn run(mut self, rx: &Mutex<mpsc::Receiver<Append>>) {
        loop {
            // The receiver is held while waiting and taking the group, and let go before the
            // write: the next thread then waits for the records that arrive during this fsync.
            let group = {
                let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                let Ok(first) = rx.recv() else { break };
                let mut group = vec![first];
                // Everything that arrived meanwhile shares this write and fsync.
                while let Ok(more) = rx.try_recv() {
                    group.push(more);
                }
                group
            };
            match self.write(&group) {
                Ok((ticket, full)) => {
                    let n: u64 = group.iter().map(|a| a.records).sum();
                    let mut segs = self.segments.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(s) = segs.by_ticket.get_mut(&ticket) {
                        s.appended += n;
                    }
                    drop(segs);
                    // Closed only now: a segment counted short could be removed too early.
                    if full {
                        self.close_current();
                    }
                    for a in group {
                        let _ = a.done.send(Ok(ticket));
                    }
                }
                Err(e) => {
                    // The segment may hold part of the group: start a fresh one next time.
                    self.close_current();
                    for a in group {
                        let _ = a.done.send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                }
            }
        }
        self.close_current();
    }

    /// Writes and fsyncs a group; returns its segment and whether that is now full.
    fn write(&mut self, group: &[Append]) -> io::Result<(Ticket, bool)> {
        if self.current.is_none() {
            let path = self.dir.join(format!("journal-{}.jsonl", new_id()));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            file.lock()?;
            // The new name must survive a crash too, or the fsync'd records are not found.
            File::open(&self.dir)?.sync_all()?;
            let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
            let handle = file.try_clone()?;
            self.segments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .by_ticket
                .insert(
                    ticket,
                    Segment {
                        path,
                        _file: handle,
                        appended: 0,
                        settled: 0,
                        closed: false,
                    },
                );
            self.current = Some((ticket, file, 0));
        }
        let (ticket, file, size) = self.current.as_mut().expect("opened above");
        let mut buf = Vec::with_capacity(group.iter().map(|a| a.lines.len()).sum());
        for a in group {
            buf.extend_from_slice(&a.lines);
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        *size += buf.len() as u64;
        Ok((*ticket, *size >= SEGMENT_BYTES))
    }

    /// Closes the open segment: no more appends; removed once settled.
    fn close_current(&mut self) {
        if let Some((ticket, _, _)) = self.current.take() {
            let mut segs = self.segments.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = segs.by_ticket.get_mut(&ticket) {
                s.closed = true;
            }
            segs.retire_if_done(ticket);
        }
    }
}
