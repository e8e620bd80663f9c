//! Where messages come from: .eml files, mbox files, Maildir folders, stdin.

use unspoof_engine::message;

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
    if message::is_mbox(&raw) {
        for (i, msg) in message::split_mbox(&raw).into_iter().enumerate() {
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
