//! DMARC aggregate reports (RFC 9990), in both roles: the reports the big receivers send about
//! our domains (ingest, then the picture of who sends as us), and the reports we send, as a
//! receiver, to the domains whose mail we judged.
//!
//! Trust level: parses untrusted report files and mails (every byte hostile: size-capped
//! decompression, no DTD, strict values) and reads/writes only the store; talks to an IMAP
//! server it is pointed at, to DNS (TXT, PTR) through the engine's view, and to the configured
//! SMTP relay when sending.
//!
//! Main parts:
//! - [`extract`]: an input (XML, .gz, .zip, or a mail carrying one) to the report XML inside.
//! - [`parse`]: the XML to a checked report: our strict reading of the RFC 9990 / RFC 7489
//!   schema (values, required elements, what mail-auth 0.13.3 lacks), then mail-auth's parser
//!   for the data.
//! - [`ingest`]: files, folders, mbox, Maildir into the store, deduplicated; broken inputs kept
//!   aside whole, never half-stored. [`imap`] does the same from an IMAP mailbox.
//! - [`sources`]: `unspoof dmarc sources`: every sending source, classified.
//! - [`generate`] and [`send`]: our own reports from the verdicts in the store, one per policy
//!   domain and day for the whole fleet, DKIM-signed, sent through the relay with retries.
//! - [`DmarcConfig`]: the `[dmarc]` section of `unspoof.toml`, every limit with its default.

pub mod config;
pub mod extract;
pub mod generate;
pub mod imap;
pub mod ingest;
pub mod parse;
pub mod send;
pub mod sources;

pub use config::DmarcConfig;
pub use extract::{Payload, extract};
pub use ingest::{Ingestor, InputOutcome};
pub use parse::{Format, ParsedReport, parse_xml};

/// The current Unix time in seconds.
pub fn now() -> i64 {
    unspoof_store::now()
}

/// The Unix day number (UTC) of a Unix time: reports cover whole UTC days.
pub fn day_of(t: i64) -> i64 {
    t.div_euclid(86_400)
}

/// Lowercase hex SHA-256 of `data` (the key of a rejected input).
pub fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
