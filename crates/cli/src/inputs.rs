//! Where messages come from: .eml files, mbox files, Maildir folders, stdin.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

/// One message read from an input, named for reports.
pub struct Input {
    /// `path`, `path#N` for the N-th message of an mbox (from 1), or `-` for stdin.
    pub name: String,
    pub raw: Vec<u8>,
}

/// Reads every message named by `paths`, in order. A folder is read as a Maildir (`cur/` and
/// `new/`), or, without those, every regular file in it sorted by name.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut raw = Vec::new();
            std::io::stdin()
                .read_to_end(&mut raw)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            push_file("-", raw, &mut out);
        } else if path.is_dir() {
            for file in maildir_files(path)? {
                let raw = read(&file)?;
                push_file(&file.display().to_string(), raw, &mut out);
            }
        } else {
            let raw = read(path)?;
            push_file(&path.display().to_string(), raw, &mut out);
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn maildir_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let subdirs: Vec<PathBuf> = ["cur", "new"]
        .iter()
        .map(|s| dir.join(s))
        .filter(|p| p.is_dir())
        .collect();
    let dirs = if subdirs.is_empty() {
        vec![dir.to_path_buf()]
    } else {
        subdirs
    };
    let mut files = Vec::new();
    for d in dirs {
        let entries =
            fs::read_dir(&d).map_err(|e| format!("cannot read folder {}: {e}", d.display()))?;
        for entry in entries.flatten() {
            let p = entry.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if p.is_file() && !hidden {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Adds one file's messages: an mbox (first line `From `) is split, anything else is one
/// message.
fn push_file(name: &str, raw: Vec<u8>, out: &mut Vec<Input>) {
    if is_mbox(&raw) {
        for (i, msg) in split_mbox(&raw).into_iter().enumerate() {
            out.push(Input {
                name: format!("{name}#{}", i + 1),
                raw: msg,
            });
        }
    } else {
        out.push(Input {
            name: name.to_string(),
            raw,
        });
    }
}

/// An mbox starts with a `From ` separator line (not a `From:` header).
pub fn is_mbox(raw: &[u8]) -> bool {
    raw.starts_with(b"From ") && !matches!(raw.get(5), Some(b':' | b' ' | b'\t'))
}

/// Splits an mbox (mboxrd or mboxo) into messages, dropping each `From ` separator and undoing
/// `>From ` quoting.
pub fn split_mbox(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut prev_blank = true;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") && prev_blank {
            if let Some(m) = current.take() {
                messages.push(trim_separator_blank(m));
            }
            current = Some(Vec::new());
            prev_blank = false;
            continue;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        prev_blank = body.is_empty() || body == b"\r";
        let Some(m) = current.as_mut() else { continue };
        // mboxrd: ">From " -> "From ", ">>From " -> ">From ".
        let unquoted = match line.iter().position(|&b| b != b'>') {
            Some(n) if n > 0 && line[n..].starts_with(b"From ") => &line[1..],
            _ => line,
        };
        m.extend_from_slice(unquoted);
    }
    if let Some(m) = current {
        messages.push(trim_separator_blank(m));
    }
    messages
}

/// The blank line before the next `From ` belongs to the mbox format, not to the message.
fn trim_separator_blank(mut m: Vec<u8>) -> Vec<u8> {
    if m.ends_with(b"\r\n\r\n") {
        m.truncate(m.len() - 2);
    } else if m.ends_with(b"\n\n") {
        m.truncate(m.len() - 1);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_mbox_and_unquotes() {
        let mbox = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\n>From here\n\nFrom c@d Tue Jan  2 00:00:00 2024\nSubject: two\n\nbody\n";
        let msgs = split_mbox(mbox);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0], b"Subject: one\n\nFrom here\n");
        assert_eq!(msgs[1], b"Subject: two\n\nbody\n");
        assert!(is_mbox(mbox));
        assert!(!is_mbox(b"From: a@b\n"));
    }
}
