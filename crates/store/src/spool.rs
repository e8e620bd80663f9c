//! The local spool: where records and quarantined messages wait while the database is
//! unreachable. Nothing in it is lost by a crash: every append is fsync'd before it returns.
//!
//! - `records-<id>.jsonl`: one [`SpoolEntry`] per line, appended by one store instance, which
//!   holds an exclusive lock on the file (`File::lock`) while it lives. A file nobody holds a
//!   lock on belongs to a process that died; any store on the same directory replays it.
//! - `quarantine-<id>.json`: one quarantined message per file, written to a temporary name,
//!   fsync'd and renamed, so a file under this name is always whole. Only while the database
//!   is down (by the batch writer) or the queue is full (by the caller): a quarantined message
//!   is made durable by the journal (`crate::journal`) before the front door answers, and this
//!   file is where it waits, off the journal, for the database. One a file, so a replay holds
//!   one such message in memory at a time.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::{MessageRecord, NewQuarantine, SessionRecord, new_id};

/// One line of a records spool file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SpoolEntry {
    Session(SessionRecord),
    Message(MessageRecord),
    /// A quarantined message, in a journal segment (`crate::journal`); its raw bytes are a
    /// hex string (see [`NewQuarantine::raw`]). The spool's own records files never hold
    /// one: a quarantined message spooled while the database is down gets a file of its
    /// own (`quarantine-<id>.json`), so that a replay holds one such message in memory at a
    /// time, not a whole file of them.
    Quarantine(NewQuarantine),
}

/// [`SpoolEntry`] by reference: the same JSON line, without cloning the record.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SpoolEntryRef<'a> {
    Session(&'a SessionRecord),
    Message(&'a MessageRecord),
    Quarantine(&'a NewQuarantine),
}

/// Whether a file name is one of the records files the replay takes: the spool's own
/// (`records-*.jsonl`) and the journal's (`journal-*.jsonl`, see `crate::journal`).
fn is_records_file(name: &str) -> bool {
    (name.starts_with("records-") || name.starts_with("journal-")) && name.ends_with(".jsonl")
}

/// Whether nobody holds the lock on a file (its writer died): taking the lock and letting it go.
fn unlocked(path: &Path) -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .is_ok_and(|f| f.try_lock().is_ok())
}

/// A records file taken out of the spool for replay; the lock (if ours) is held until drop.
pub(crate) struct Taken {
    pub path: PathBuf,
    _file: File,
}

pub(crate) struct Spool {
    dir: PathBuf,
    live: Option<(PathBuf, File)>,
}

impl Spool {
    pub fn open(dir: &Path) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            live: None,
        })
    }

    /// Appends entries as JSON lines and fsyncs before returning.
    pub fn append(&mut self, entries: &[SpoolEntry]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
        }
        if self.live.is_none() {
            let path = self.dir.join(format!("records-{}.jsonl", new_id()));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            file.lock()?;
            sync_dir(&self.dir)?;
            self.live = Some((path, file));
        }
        let (_, file) = self.live.as_mut().expect("opened above");
        file.write_all(&buf)?;
        file.sync_data()
    }

    /// Whether any records or quarantine files wait (ours or a dead process's). The journal
    /// segments a live process still writes do not wait: that process settles them.
    pub fn has_pending(&self) -> bool {
        self.live.is_some()
            || fs::read_dir(&self.dir)
                .map(|d| {
                    d.flatten().any(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        (n.starts_with("records-") && n.ends_with(".jsonl"))
                            || (n.starts_with("quarantine-") && n.ends_with(".json"))
                            || (is_records_file(&n) && unlocked(&e.path()))
                    })
                })
                .unwrap_or(false)
    }

    /// Takes every records file that can be replayed now: our live file (new appends go to a
    /// fresh one) and the files of processes that died.
    pub fn take_records(&mut self) -> Vec<Taken> {
        let mut out = Vec::new();
        if let Some((path, file)) = self.live.take() {
            out.push(Taken { path, _file: file });
        }
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return out;
        };
        for e in dir.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_records_file(&name) || out.iter().any(|t| t.path == path) {
                continue;
            }
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            // Held by a live process: that process replays it.
            if file.try_lock().is_ok() {
                out.push(Taken { path, _file: file });
            }
        }
        out
    }

    /// Reads a taken file. A line cut short by a crash is skipped (its append never returned);
    /// so are the zeros after a journal segment's last line (`crate::journal` writes into a
    /// file of zeros).
    pub fn read(taken: &Taken) -> io::Result<(Vec<SpoolEntry>, usize)> {
        Spool::read_path(&taken.path)
    }

    /// [`Spool::read`] by path.
    pub(crate) fn read_path(path: &Path) -> io::Result<(Vec<SpoolEntry>, usize)> {
        let mut entries = Vec::new();
        let mut bad = 0;
        for line in BufReader::new(File::open(path)?).lines() {
            let line = line?;
            let line = line.trim_end_matches('\0');
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(e) => entries.push(e),
                Err(_) => bad += 1,
            }
        }
        Ok((entries, bad))
    }

    /// Removes a replayed file.
    pub fn done(&self, taken: Taken) -> io::Result<()> {
        fs::remove_file(&taken.path)?;
        sync_dir(&self.dir)
    }

    /// Writes one quarantined message durably (temporary file, fsync, rename, fsync dir): the
    /// database is down, or the queue full (see the module comment).
    pub fn quarantine_put(&self, q: &NewQuarantine) -> io::Result<PathBuf> {
        let name = format!("quarantine-{}.json", q.id);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)?;
            serde_json::to_writer(&mut f, q)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        Ok(path)
    }

    /// Quarantine files waiting to be synced into the database.
    pub fn quarantine_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with("quarantine-") && n.ends_with(".json"))
            })
            .collect();
        v.sort();
        v
    }

    pub fn quarantine_read(path: &Path) -> io::Result<NewQuarantine> {
        let f = File::open(path)?;
        Ok(serde_json::from_reader(BufReader::new(f))?)
    }

    pub fn quarantine_done(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            // Another store on the same directory synced it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
