//! The journal: records made durable before a front door answers, so that a record is as
//! durable as its message (a kill -9 right after the 250 loses neither), and the quarantined
//! messages themselves (`Store::quarantine_put`: one line each, the raw bytes in hex, so a
//! line can be tens of megabytes; such a line is not copied under the lock, see `COPY_MAX`).
//!
//! The caller hands its lines to a slot, under a lock (a copy into memory, no system call),
//! and waits for that slot's next fsync; a few threads ([`Journal::open`]'s `writers`), each
//! with its own slot and segment, write what their slot gathered into the segment (one
//! `write` per group) and fsync it (group commit: a busy gateway pays one fsync per group, not
//! per message). A thread fsyncs once the oldest record of its group has waited
//! [`GroupCommit::wait`] or [`GroupCommit::records`] wait, whichever comes first (measured in
//! docs/benchmarks.md, "group commit": on this VM an fsync costs ~100 µs of CPU, so a group
//! of two records, which is what an fsync as soon as the thread is free gathered at 1 500
//! records a second, cost ~50 µs per record). A caller writes into a slot whose thread is not
//! in an fsync, so while one thread fsyncs, a record that arrives goes to the next slot and
//! its thread gathers its group at once instead of waiting for that fsync to end (on a disk
//! whose flush takes 4 ms, that is 0-4 ms of waiting instead of 4-8). With one thread, a
//! record handed over during an fsync waits for it and then the next. A thread is woken once
//! per group, not once per record. The records then take the ordinary path (queue, batch
//! writer, database or spool; a quarantined message, the database down, a spool file of its
//! own); the journal is only read after a crash.
//!
//! A segment is written in place into a file made beforehand ([`SEGMENT_BYTES`] of zeros,
//! fsync'd, by the thread while it has nothing to fsync, once the journal is in use; the
//! first records go to an ordinary file, which gives way to the spare as soon as it is
//! ready): an `fdatasync` then only writes
//! data, where an append also allocates blocks and writes the inode's new size (measured on
//! this VM, whose ext4 has no journal, in four alternating runs of 2 000: 1.0-2.0 ms and
//! 68-109 µs of CPU per `fdatasync` in place, 1.8-3.0 ms and 93-126 µs appended; noisy, and
//! an earlier quick test here saw no clear difference). The zeros after the last line are not records (see `Spool::read`). Without
//! a spare file ready, a segment is an ordinary growing file.
//!
//! Files are `journal-<id>.jsonl` in the spool directory, in the spool's line format
//! ([`SpoolEntry`]), each locked (`File::lock`) by the process writing it, like the spool's own
//! files. A segment is closed at [`SEGMENT_BYTES`] and removed once every record in it has
//! been committed to the database or moved to the spool ("settled"). A segment nobody holds a
//! lock on belongs to a process that died: the spool's replay takes it like its own files
//! (`Spool::take_records`), and since every insert skips ids already stored, records that did
//! reach the database are not written twice.
//!
//! [`SpoolEntry`]: crate::spool::SpoolEntry

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::record::new_id;

/// A segment is closed (and a new one begun) once it holds this many octets; it is removed
/// when all its records are settled. Small enough that a crash leaves little to replay.
pub(crate) const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Lines longer than this are not copied onto the lines before them in a group (see
/// `Journal::write`): one more `write` costs less than copying megabytes under the lock.
const COPY_MAX: usize = 64 * 1024;

/// The segment a record went into: handed back to [`Journal::settle`] once the record is
/// in the database or the spool.
pub(crate) type Ticket = u64;

type Done = oneshot::Sender<io::Result<Ticket>>;

struct Segment {
    path: PathBuf,
    /// Holds the lock while the segment lives (see the module comment); the fsync threads
    /// sync through it.
    file: Arc<File>,
    /// Records written into it (counted at the write: a record is settled only after its
    /// fsync, so never before it is counted).
    appended: u64,
    settled: u64,
    /// No more appends: removed when `settled == appended`.
    closed: bool,
}

/// One fsync thread's share: its open segment and the records waiting for its next fsync.
#[derive(Default)]
struct Slot {
    /// The open segment's ticket and size so far.
    current: Option<(Ticket, u64)>,
    /// Segments with records written since their last fsync: the open one and, after a
    /// segment was closed for size, that one too.
    unsynced: Vec<Ticket>,
    /// A segment was created since the last fsync: its name must survive a crash too, or the
    /// fsync'd records are not found.
    new_name: bool,
    /// The callers waiting for the next fsync, with the segment each record went into.
    waiting: Vec<(Ticket, Done)>,
    /// When the oldest of `waiting` came (the group-commit wait runs from it).
    since: Option<Instant>,
    /// The lines of `waiting`, not yet in their files: (segment, offset, bytes), each run of
    /// one segment's lines as one piece. The thread writes them, then fsyncs.
    pending: Vec<(Ticket, u64, Vec<u8>)>,
    /// The thread is in an fsync: new records go to another slot if one is free.
    syncing: bool,
    /// A file of zeros for the next segment, made by the thread (see the module comment).
    spare: Option<(PathBuf, File)>,
    /// The thread is to make a spare when it has nothing else to do (set once a segment is
    /// begun: a store that never journals makes none).
    want_spare: bool,
    /// The open segment is written in place into a spare (else it is an ordinary file).
    in_place: bool,
}

struct State {
    slots: Vec<Slot>,
    segments: HashMap<Ticket, Segment>,
    next_ticket: Ticket,
    closed: bool,
    /// Groups fsync'd so far (every thread), for tests.
    groups: u64,
    /// Records in the last group any thread fsync'd. The group-commit wait is taken only
    /// when it was more than one: records then arrive faster than fsyncs end, and waiting
    /// gathers more. A lone record (a quiet gateway) is fsync'd at once: waiting would only
    /// delay its reply.
    last_group: usize,
}

impl State {
    /// Removes a closed segment whose records are all settled.
    fn retire_if_done(&mut self, ticket: Ticket) {
        let done = self
            .segments
            .get(&ticket)
            .is_some_and(|s| s.closed && s.settled >= s.appended);
        if done && let Some(s) = self.segments.remove(&ticket) {
            // A removal lost in a crash only means records replayed twice, which are skipped.
            let _ = fs::remove_file(&s.path);
        }
    }

    /// Closes slot `i`'s open segment: no more appends; removed once settled.
    fn close_current(&mut self, i: usize) {
        if let Some((ticket, _)) = self.slots[i].current.take() {
            if let Some(s) = self.segments.get_mut(&ticket) {
                s.closed = true;
            }
            self.retire_if_done(ticket);
        }
    }

    /// The slot a caller writes into: one whose thread is not in an fsync (preferring one
    /// that already gathers a group), else the one gathering the most.
    fn pick(&self) -> usize {
        let free = |s: &Slot| !s.syncing;
        (0..self.slots.len())
            .filter(|&i| free(&self.slots[i]) && !self.slots[i].waiting.is_empty())
            .chain((0..self.slots.len()).filter(|&i| free(&self.slots[i])))
            .next()
            .unwrap_or_else(|| {
                (0..self.slots.len())
                    .max_by_key(|&i| self.slots[i].waiting.len())
                    .unwrap_or(0)
            })
    }
}

/// When a thread fsyncs the records waiting in its slot (`[store] journal_group_wait_us`,
/// `journal_group_records`): once the oldest has waited `wait`, or once `records` wait,
/// whichever comes first (and at once when the journal closes). A zero `wait` fsyncs as soon
/// as the thread is free.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupCommit {
    pub wait: Duration,
    pub records: usize,
}

struct Shared {
    dir: PathBuf,
    group: GroupCommit,
    state: Mutex<State>,
    /// One per slot: its thread waits here for records.
    wake: Vec<Condvar>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The journal of one store. The threads stop when it is closed or dropped.
pub(crate) struct Journal {
    shared: Arc<Shared>,
}

impl Journal {
    /// Opens the journal in `dir` with `writers` fsync threads (at least one), each with its
    /// own segment.
    pub fn open(dir: &Path, writers: usize, group: GroupCommit) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        // Spare files of processes that died (a live one holds the lock on its own).
        for e in fs::read_dir(dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(SPARE_PREFIX)
                && File::open(e.path()).is_ok_and(|f| f.try_lock().is_ok())
            {
                let _ = fs::remove_file(e.path());
            }
        }
        let n = writers.max(1);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            group: GroupCommit {
                records: group.records.max(1),
                ..group
            },
            state: Mutex::new(State {
                slots: (0..n)
                    .map(|_| Slot {
                        want_spare: false,
                        ..Slot::default()
                    })
                    .collect(),
                segments: HashMap::new(),
                next_ticket: 0,
                closed: false,
                groups: 0,
                last_group: 0,
            }),
            wake: (0..n).map(|_| Condvar::new()).collect(),
        });
        for i in 0..n {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("unspoof-journal-{i}"))
                .spawn(move || sync_loop(&shared, i))?;
        }
        Ok(Journal { shared })
    }

    /// Appends `lines` (holding `records` records) and returns once they are fsync'd, with
    /// the ticket to settle them by.
    pub async fn append(&self, lines: Vec<u8>, records: u64) -> io::Result<Ticket> {
        let wait = self.write(lines, records)?;
        wait.await
            .unwrap_or_else(|_| Err(io::Error::other("journal thread stopped")))
    }

    /// The caller's half of [`Journal::append`]: writes the lines into a slot's segment (page
    /// cache only) and queues for that slot's next fsync.
    fn write(
        &self,
        lines: Vec<u8>,
        records: u64,
    ) -> io::Result<oneshot::Receiver<io::Result<Ticket>>> {
        let mut st = self.shared.lock();
        if st.closed {
            return Err(io::Error::other("journal closed"));
        }
        let i = st.pick();
        // A segment begun as an ordinary file (no spare was ready) gives way to a spare as
        // soon as there is one.
        if st.slots[i].current.is_some() && !st.slots[i].in_place && st.slots[i].spare.is_some() {
            st.close_current(i);
        }
        let ticket = match st.slots[i].current {
            Some((t, _)) => t,
            None => {
                let path = self.shared.dir.join(format!("journal-{}.jsonl", new_id()));
                let spare = st.slots[i].spare.take();
                st.slots[i].want_spare = true;
                st.slots[i].in_place = false;
                let file = match spare {
                    Some((spare_path, file)) if fs::rename(&spare_path, &path).is_ok() => {
                        st.slots[i].in_place = true;
                        file
                    }
                    other => {
                        if let Some((spare_path, _)) = other {
                            let _ = fs::remove_file(spare_path);
                        }
                        let file = OpenOptions::new()
                            .create_new(true)
                            .write(true)
                            .open(&path)?;
                        file.lock()?;
                        file
                    }
                };
                let t = st.next_ticket;
                st.next_ticket += 1;
                st.segments.insert(
                    t,
                    Segment {
                        path,
                        file: Arc::new(file),
                        appended: 0,
                        settled: 0,
                        closed: false,
                    },
                );
                let slot = &mut st.slots[i];
                slot.current = Some((t, 0));
                slot.new_name = true;
                t
            }
        };
        let offset = st.slots[i].current.map_or(0, |(_, size)| size);
        st.segments
            .get_mut(&ticket)
            .expect("the open segment is listed")
            .appended += records;
        let slot = &mut st.slots[i];
        let len = lines.len() as u64;
        // Written by the thread before its fsync, with the lines before them in one piece;
        // a large line (a quarantined message) is a piece of its own rather than a copy made
        // under the lock.
        match slot.pending.last_mut() {
            Some((t, at, bytes))
                if *t == ticket
                    && *at + bytes.len() as u64 == offset
                    && lines.len() <= COPY_MAX =>
            {
                bytes.extend_from_slice(&lines)
            }
            _ => slot.pending.push((ticket, offset, lines)),
        }
        let size = slot
            .current
            .as_mut()
            .map(|(_, size)| size)
            .expect("set above");
        *size += len;
        let full = *size >= SEGMENT_BYTES;
        if !slot.unsynced.contains(&ticket) {
            slot.unsynced.push(ticket);
        }
        let (done, wait) = oneshot::channel();
        let first = slot.waiting.is_empty();
        if first {
            slot.since = Some(Instant::now());
        }
        slot.waiting.push((ticket, done));
        // The thread looks at its slot under this lock before it waits, so it needs waking
        // only for a slot's first record (and, while it gathers a group, when the group is
        // full); while it fsyncs, it comes back by itself.
        let idle = (first || slot.waiting.len() == self.shared.group.records) && !slot.syncing;
        if full {
            // Still fsync'd with its group (listed in `unsynced`); removed once settled.
            st.close_current(i);
        }
        drop(st);
        if idle {
            self.shared.wake[i].notify_one();
        }
        Ok(wait)
    }

    /// Groups fsync'd so far, by every thread.
    #[cfg(test)]
    pub fn groups(&self) -> u64 {
        self.shared.lock().groups
    }

    /// `n` records of segment `ticket` are in the database or the spool.
    pub fn settle(&self, ticket: Ticket, n: u64) {
        let mut st = self.shared.lock();
        if let Some(s) = st.segments.get_mut(&ticket) {
            s.settled += n;
        }
        st.retire_if_done(ticket);
    }

    /// Stops the threads (after the fsync of what was written); segments whose records are
    /// all settled are removed, the others stay (replayed at the next start).
    pub fn close(&self) {
        let mut st = self.shared.lock();
        st.closed = true;
        for i in 0..st.slots.len() {
            st.close_current(i);
            if let Some((path, _)) = st.slots[i].spare.take() {
                let _ = fs::remove_file(path);
            }
        }
        drop(st);
        for w in &self.shared.wake {
            w.notify_all();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Thread `i`: waits for records in its slot, gathers them (the group-commit wait), takes
/// them all (the group), writes their lines into their segments, fsyncs those and answers.
fn sync_loop(shared: &Shared, i: usize) {
    let mut st = shared.lock();
    loop {
        if st.slots[i].want_spare && st.slots[i].waiting.is_empty() && !st.closed {
            // Busy meanwhile: records go to another slot if there is one.
            st.slots[i].want_spare = false;
            st.slots[i].syncing = true;
            drop(st);
            let spare = make_spare(&shared.dir);
            st = shared.lock();
            st.slots[i].syncing = false;
            match spare {
                Ok((path, _)) if st.closed => {
                    let _ = fs::remove_file(path);
                }
                Ok(spare) => st.slots[i].spare = Some(spare),
                // The next segment is then an ordinary file.
                Err(_) => {}
            }
            continue;
        }
        while st.slots[i].waiting.is_empty() && !st.closed {
            st = shared.wake[i].wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.slots[i].waiting.is_empty() {
            return; // closed, and nothing left to answer
        }
        // Group commit: more records may come before the oldest has waited long enough
        // (only while records come in company, see `State::last_group`).
        loop {
            let slot = &st.slots[i];
            if st.closed || slot.waiting.len() >= shared.group.records || st.last_group < 2 {
                break;
            }
            let waited = slot.since.map_or(Duration::MAX, |t| t.elapsed());
            let Some(left) = shared
                .group
                .wait
                .checked_sub(waited)
                .filter(|d| !d.is_zero())
            else {
                break;
            };
            st = shared.wake[i]
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let slot = &mut st.slots[i];
        slot.syncing = true;
        slot.since = None;
        let group = std::mem::take(&mut slot.waiting);
        let pending = std::mem::take(&mut slot.pending);
        let tickets = std::mem::take(&mut slot.unsynced);
        let new_name = std::mem::take(&mut slot.new_name);
        let file = |t: &Ticket| st.segments.get(t).map(|s| s.file.clone());
        let writes: Vec<(Option<Arc<File>>, u64, Vec<u8>)> = pending
            .into_iter()
            .map(|(t, at, bytes)| (file(&t), at, bytes))
            .collect();
        let files: Vec<Arc<File>> = tickets.iter().filter_map(file).collect();
        drop(st);
        let mut result = writes.iter().try_for_each(|(f, at, bytes)| match f {
            Some(f) => f.write_all_at(bytes, *at),
            None => Err(io::Error::other("journal segment gone")),
        });
        if result.is_ok() {
            result = files.iter().try_for_each(|f| f.sync_data());
        }
        if result.is_ok() && new_name {
            result = File::open(&shared.dir).and_then(|d| d.sync_all());
        }
        st = shared.lock();
        st.slots[i].syncing = false;
        st.groups += 1;
        st.last_group = group.len();
        let mut failed = Vec::new();
        if result.is_err() {
            // What reached the disk is unknown: the next record starts a fresh segment. These
            // stay until the process ends (their records are never settled) and are then
            // replayed, which skips what did reach the database. Lines written into them
            // since are not written after the failure (a torn line would hide the next):
            // their callers get the error too.
            if st.slots[i]
                .current
                .is_some_and(|(t, _)| tickets.contains(&t))
            {
                st.close_current(i);
            }
            let slot = &mut st.slots[i];
            slot.pending.retain(|(t, _, _)| !tickets.contains(t));
            failed.extend(slot.waiting.extract_if(.., |(t, _)| tickets.contains(t)));
            if slot.waiting.is_empty() {
                slot.since = None;
            }
        }
        drop(st);
        for (ticket, done) in group.into_iter().chain(failed) {
            let _ = done.send(match &result {
                Ok(()) => Ok(ticket),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        st = shared.lock();
    }
}

/// The name of a spare file (not a segment yet: not replayed, removed when left by a process
/// that died).
const SPARE_PREFIX: &str = ".journal-spare-";

/// A file of [`SEGMENT_BYTES`] zeros, fsync'd, locked, for a segment to be written in place.
fn make_spare(dir: &Path) -> io::Result<(PathBuf, File)> {
    let path = dir.join(format!("{SPARE_PREFIX}{}", new_id()));
    let made = (|| {
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        file.lock()?;
        file.write_all_at(&vec![0; SEGMENT_BYTES as usize], 0)?;
        file.sync_all()?;
        Ok(file)
    })();
    match made {
        Ok(file) => Ok((path, file)),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

/// The journal segments in a directory (for tests).
#[cfg(test)]
pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("journal-")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MessageRecord;
    use crate::spool::{Spool, SpoolEntry, SpoolEntryRef};

    fn line(id: &str) -> Vec<u8> {
        let m = MessageRecord {
            id: id.into(),
            action: "accept".into(),
            ..Default::default()
        };
        let mut v = serde_json::to_vec(&SpoolEntryRef::Message(&m)).unwrap();
        v.push(b'\n');
        v
    }

    /// Group commit: on a quiet journal a lone record is fsync'd at once (no wait, though
    /// `wait` is an hour here); once records come in company, records handed over together
    /// share one fsync, which waits for a full group (`records`) rather than the whole `wait`.
    #[tokio::test]
    async fn a_full_group_is_fsynced_at_once_and_once() {
        let dir = std::env::temp_dir().join(format!("unspoof-journal-group-{}", new_id()));
        let group = GroupCommit {
            wait: Duration::from_secs(3_600),
            records: 4,
        };
        let journal = Arc::new(Journal::open(&dir, 1, group).unwrap());
        let lone = new_id();
        journal.append(line(&lone), 1).await.unwrap();
        assert_eq!(journal.shared.lock().groups, 1);
        // As if the last group had company (a busy gateway): the next ones wait.
        journal.shared.lock().last_group = 2;
        let ids: Vec<String> = (0..4).map(|_| new_id()).collect();
        let appends: Vec<_> = ids
            .iter()
            .map(|id| {
                let (journal, line) = (journal.clone(), line(id));
                tokio::spawn(async move { journal.append(line, 1).await })
            })
            .collect();
        for a in appends {
            a.await.unwrap().unwrap();
        }
        assert_eq!(journal.shared.lock().groups, 2);
        // What was fsync'd is the five lines, whole.
        let segments = segment_files(&dir);
        assert_eq!(segments.len(), 1);
        let (entries, torn) = Spool::read_path(&segments[0]).unwrap();
        let mut read: Vec<String> = entries
            .into_iter()
            .map(|e| match e {
                SpoolEntry::Message(m) => m.id,
                SpoolEntry::Session(s) => s.id,
                SpoolEntry::Quarantine(q) => q.id,
            })
            .collect();
        read.sort();
        let mut want = ids.clone();
        want.push(lone);
        want.sort();
        assert_eq!((read, torn), (want, 0));
        // After a group with company, a record alone waits out the wait, or the close: closing answers it at once.
        let alone = {
            let (journal, line) = (journal.clone(), line(&new_id()));
            tokio::spawn(async move { journal.append(line, 1).await })
        };
        while journal.shared.lock().slots[0].waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        journal.close();
        alone.await.unwrap().unwrap();
        assert_eq!(journal.shared.lock().groups, 3);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A segment written in place into a spare file of zeros reads back as exactly its
    /// records (the zeros after them are neither records nor a torn line), and the spare
    /// files go with the journal.
    #[tokio::test]
    async fn a_segment_in_a_spare_file_reads_back_as_its_records() {
        let dir = std::env::temp_dir().join(format!("unspoof-journal-spare-{}", new_id()));
        let group = GroupCommit {
            wait: Duration::ZERO,
            records: 1,
        };
        let journal = Journal::open(&dir, 1, group).unwrap();
        let names = |prefix: &str| -> Vec<PathBuf> {
            fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        };
        // The first record goes to an ordinary file; then the thread makes a spare, and the
        // next records go into it.
        let first = new_id();
        journal.append(line(&first), 1).await.unwrap();
        for _ in 0..500 {
            if journal.shared.lock().slots[0].spare.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            journal.shared.lock().slots[0].spare.is_some(),
            "a spare within 5 s"
        );
        let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
        for id in &ids {
            journal.append(line(id), 1).await.unwrap();
        }
        let read = |path: &Path| -> (Vec<String>, usize) {
            let (entries, torn) = Spool::read_path(path).unwrap();
            let ids = entries
                .into_iter()
                .map(|e| match e {
                    SpoolEntry::Message(m) => m.id,
                    SpoolEntry::Session(s) => s.id,
                    SpoolEntry::Quarantine(q) => q.id,
                })
                .collect();
            (ids, torn)
        };
        let segments = names("journal-");
        assert_eq!(segments.len(), 2, "{segments:?}");
        let (in_place, ordinary): (Vec<PathBuf>, Vec<PathBuf>) = segments
            .into_iter()
            .partition(|p| fs::metadata(p).unwrap().len() == SEGMENT_BYTES);
        assert_eq!((in_place.len(), ordinary.len()), (1, 1));
        assert_eq!(read(&ordinary[0]), (vec![first], 0));
        assert_eq!(read(&in_place[0]), (ids, 0));
        journal.close();
        // By the thread, if it was making one at the close.
        for _ in 0..500 {
            if names(SPARE_PREFIX).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            names(SPARE_PREFIX).is_empty(),
            "spares removed after the close"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
