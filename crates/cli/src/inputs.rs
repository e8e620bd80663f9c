//! Where messages come from: .eml files, mbox files, Maildir folders (searched recursively),
//! stdin; and which inputs are not email messages at all.

use unspoof_engine::message::{self, Headers};

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
    /// Found while searching a folder, rather than named on the command line.
    pub found_in_folder: bool,
}

/// Reads every message named by `paths`, in order. A folder is searched recursively: a Maildir
/// (a folder with `cur/` or `new/`) gives the messages in those; any other folder every
/// regular file and every subfolder in it, sorted by name. Hidden files and folders (`.name`)
/// and symbolic links to folders are left out.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut raw = Vec::new();
            std::io::stdin()
                .read_to_end(&mut raw)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            push_file("-", raw, false, &mut out);
        } else if path.is_dir() {
            let mut files = Vec::new();
            folder_files(path, &mut files)?;
            for file in files {
                let raw = read(&file)?;
                push_file(&file.display().to_string(), raw, true, &mut out);
            }
        } else {
            let raw = read(path)?;
            push_file(&path.display().to_string(), raw, false, &mut out);
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn folder_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let maildir: Vec<PathBuf> = ["cur", "new"]
        .iter()
        .map(|s| dir.join(s))
        .filter(|p| p.is_dir())
        .collect();
    if !maildir.is_empty() {
        for d in maildir {
            let mut entries = entries(&d)?;
            entries.retain(|(_, is_dir)| !is_dir);
            files.extend(entries.into_iter().map(|(p, _)| p));
        }
        return Ok(());
    }
    for (path, is_dir) in entries(dir)? {
        if is_dir {
            folder_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// The visible regular files and real folders in `dir`, sorted by name; `true` for a folder.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>, String> {
    let read =
        fs::read_dir(dir).map_err(|e| format!("cannot read folder {}: {e}", dir.display()))?;
    let mut found = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // A symbolic link to a folder is not followed (it could lead back up); to a file, it is.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.push((path, true));
        } else if path.is_file() {
            found.push((path, false));
        }
    }
    found.sort();
    Ok(found)
}

/// Adds one file's messages: an mbox (first line `From `) is split, anything else is one
/// message.
fn push_file(name: &str, raw: Vec<u8>, found_in_folder: bool, out: &mut Vec<Input>) {
    if message::is_mbox(&raw) {
        for (i, msg) in message::split_mbox(&raw).into_iter().enumerate() {
            out.push(Input {
                name: format!("{name}#{}", i + 1),
                raw: msg,
                found_in_folder,
            });
        }
    } else {
        out.push(Input {
            name: name.to_string(),
            raw,
            found_in_folder,
        });
    }
}

/// Header fields of which an email message has at least one (RFC 5322 3.6, the trace fields of
/// RFC 5321 4.4, and what signers and MIME add). A text file whose first line happens to have
/// a colon has none of them.
const MESSAGE_FIELDS: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "received",
    "return-path",
    "mime-version",
    "dkim-signature",
    "arc-seal",
    "delivered-to",
    "reply-to",
];

/// Why `raw` is not an email message, or `None` when it may be one: empty, binary (a NUL octet
/// in its first line), or without any field a message has anywhere in its header section.
/// Only the header section is looked at, and only for its shape: a message with malformed
/// fields (a NUL octet in one, an empty From) or a malformed first line in front of its fields
/// is still a message, for the engine to judge.
pub fn not_a_message(raw: &[u8]) -> Option<&'static str> {
    if raw.trim_ascii().is_empty() {
        return Some("it is empty");
    }
    let headers = Headers::parse(raw);
    let first_line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    if first_line.contains(&0) {
        return Some("it is binary (NUL octets where header fields should be)");
    }
    // A first line that is no header field does not make it "not mail": forgers put one there
    // so that parsers give up (issue 12), and the engine judges such a section as malformed.
    let has_message_field = headers.fields.iter().any(|f| {
        let name = f.name_trimmed();
        MESSAGE_FIELDS
            .iter()
            .any(|m| name.eq_ignore_ascii_case(m.as_bytes()))
    });
    if !has_message_field {
        return Some("none of its header fields is one a message has (From, Date, Received, ...)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_message() {
        assert_eq!(not_a_message(b""), Some("it is empty"));
        assert_eq!(not_a_message(b" \r\n\n"), Some("it is empty"));
        assert!(not_a_message(b"\x7fELF\x02\x01\x01\0\0\0\0").is_some());
        assert!(not_a_message(b"# unspoof\n\nunspoof stops forged email.\n").is_some());
        assert!(not_a_message(b"Note: buy milk\nand eggs\n").is_some());
        assert!(not_a_message(b"\x93\xfa:\x01\x02\n").is_some());
        // Messages, even odd ones, are for the engine to judge.
        assert_eq!(not_a_message(b"From: a@b.example\r\n\r\nhi\r\n"), None);
        assert_eq!(not_a_message(b"Subject: no body"), None);
        assert_eq!(not_a_message(b"From: a@b.example\r\nX: \0\0\r\n\r\n"), None);
        // A malformed first line in front of real fields: mail, for the engine to judge.
        assert_eq!(not_a_message(b" \r\nFrom: a@b.example\r\n\r\nhi\r\n"), None);
        assert_eq!(
            not_a_message(b"junk\r\nFrom: a@b.example\r\n\r\nhi\r\n"),
            None
        );
        assert_eq!(
            not_a_message(b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nReceived: x\n\n"),
            None
        );
        assert_eq!(
            not_a_message(b"X-Spam: yes\nFrom: a@b\n\n\0\0binary body"),
            None
        );
    }
}
