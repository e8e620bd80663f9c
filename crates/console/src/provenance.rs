//! What the message page adds from outside the store: the MTA log lines the message joins
//! (`unspoof trace`'s join, `unspoof_forensics::join`) and the ARF abuse report
//! (`unspoof report abuse`'s builder, `unspoof_forensics::report`). Nothing is sent: the report
//! is shown and downloaded.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use unspoof_engine::{Analysis, Engine, Envelope};
use unspoof_forensics::join::{LogTrace, join};
use unspoof_forensics::logs::{self, LogLine};
use unspoof_forensics::report::{self, Addressing, Kind, Redaction};
use unspoof_store::MessageRecord;

/// Most bytes read from the end of each configured mail log per message page: the join looks
/// at recent lines only, and a page view never reads a whole year of logs.
pub const MAIL_LOG_TAIL_BYTES: u64 = 16 * 1024 * 1024;

/// The analysis of a held message as `unspoof report abuse` makes it: the engine (with the
/// console's DNS view) evaluates the stored bytes with the recorded envelope.
pub async fn analyse(engine: &Engine, m: &MessageRecord, raw: &[u8]) -> Analysis {
    let envelope = Envelope {
        ip: m.client_ip,
        helo: m.helo.clone(),
        mail_from: m.mail_from.clone(),
        rcpt: m.recipients.clone(),
        received_at: Some(m.received_at),
        ..Default::default()
    };
    engine.evaluate(raw, &envelope).await
}

/// The last [`MAIL_LOG_TAIL_BYTES`] of `path`, as log lines (the first, partial line dropped).
fn read_tail(path: &Path, year: i32) -> std::io::Result<Vec<LogLine>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(MAIL_LOG_TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(MAIL_LOG_TAIL_BYTES).read_to_end(&mut buf)?;
    if start > 0 {
        let cut = buf
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |i| i + 1);
        buf.drain(..cut);
    }
    logs::read(&buf[..], &path.display().to_string(), year)
}

/// The message joined with the configured mail logs: `Ok(None)` when none is configured; a
/// log that cannot be read is an error the page shows (not an empty join).
pub fn log_trace(
    paths: &[std::path::PathBuf],
    analysis: &Analysis,
    received_at: i64,
) -> Result<Option<LogTrace>, String> {
    if paths.is_empty() {
        return Ok(None);
    }
    let year = unspoof_store::format_time(received_at)[..4]
        .parse::<i32>()
        .unwrap_or(1970);
    let mut lines = Vec::new();
    for p in paths {
        lines.extend(read_tail(p, year).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    Ok(Some(join(
        analysis.message.message_id.as_deref(),
        &analysis.trace,
        &lines,
    )))
}

/// The ARF abuse report (RFC 5965) for a held message, to the abuse contacts of the domains
/// involved, from `postmaster@<hostname>`; the local parts of addresses in the attached
/// original are redacted when `redact` (the report leaves the site when someone sends it).
pub fn abuse_report(
    raw: &[u8],
    analysis: &Analysis,
    log: Option<&LogTrace>,
    hostname: &str,
    redact: bool,
) -> Result<(Vec<String>, Vec<u8>), String> {
    let to = report::abuse_contacts(analysis);
    if to.is_empty() {
        return Err("no abuse contact found for this message".into());
    }
    let addressing = Addressing {
        from: format!("postmaster@{hostname}"),
        to: to.clone(),
        reporting_mta: hostname.to_string(),
    };
    let redaction = Redaction {
        local_parts: redact,
        headers_only: false,
    };
    report::build(Kind::Abuse, raw, analysis, log, &addressing, redaction)
        .map(|r| (to, r))
        .map_err(|e| e.to_string())
}
