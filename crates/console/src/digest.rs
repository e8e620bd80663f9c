//! The quarantine digest: one mail per recipient with mail held for them since their last
//! digest, each message with a signed, expiring release link. Sent through the release path's
//! target (the downstream MTA, or the Maildir), like a released message.
//!
//! A link is `<public_url>/digest/release?m=<record>&r=<recipient>&e=<expiry>&s=<signature>`,
//! the signature an HMAC-SHA-256 over `m`, `r` and `e` with the key in
//! `<data_dir>/console-digest.key` (32 random bytes, made on first use, mode 0600). Opening the
//! link shows a page with one button (a GET never releases: mail scanners follow links); the
//! button's POST carries the same signed fields.

use std::collections::BTreeMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use unspoof_store::{MessageRecord, QuarantineStatus, Query, format_time, now};

use crate::Console;
use crate::release::ReleaseTarget;

/// Most held messages one digest run reads from the store.
pub const DIGEST_MAX_MESSAGES: u32 = 10_000;
/// Most messages listed in one recipient's digest (the rest: "and N more").
pub const DIGEST_MAX_LISTED: usize = 100;

/// The digest key, made on first use.
pub fn key(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = data_dir.join("console-digest.key");
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{}: shorter than 32 bytes",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    use rand_core::RngCore;
    let mut k = vec![0u8; 32];
    rand_core::OsRng.fill_bytes(&mut k);
    std::fs::create_dir_all(data_dir)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(&k)?;
            f.sync_all()?;
            Ok(k)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(&path),
        Err(e) => Err(e),
    }
}

fn mac(key: &[u8], record: &str, rcpt: &str, expires: i64) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    // Lengths first: no two field lists sign the same bytes.
    for f in [record, rcpt, &expires.to_string()] {
        m.update(&(f.len() as u64).to_be_bytes());
        m.update(f.as_bytes());
    }
    m
}

pub fn sign(key: &[u8], record: &str, rcpt: &str, expires: i64) -> String {
    data_encoding::BASE64URL_NOPAD.encode(&mac(key, record, rcpt, expires).finalize().into_bytes())
}

/// Whether `sig` signs these fields and `expires` is still ahead of `at`.
pub fn verify(key: &[u8], record: &str, rcpt: &str, expires: i64, sig: &str, at: i64) -> bool {
    let Ok(sig) = data_encoding::BASE64URL_NOPAD.decode(sig.as_bytes()) else {
        return false;
    };
    at < expires && mac(key, record, rcpt, expires).verify_slice(&sig).is_ok()
}

/// What one digest run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DigestRun {
    /// (recipient, messages listed, where it went).
    pub sent: Vec<(String, usize, String)>,
    /// (recipient, the error).
    pub failed: Vec<(String, String)>,
}

fn base_url(console: &Console) -> String {
    let u = console.config.public_url.trim().trim_end_matches('/');
    if u.is_empty() {
        let scheme = if console.config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", console.config.listen)
    } else {
        u.to_string()
    }
}

/// Sends every recipient due a digest (none in the last `digest_hours`) the messages held for
/// them since their last one. `force`: whether or not one is due.
pub async fn send_digests(console: &Console, force: bool) -> Result<DigestRun, String> {
    let hours = console.config.digest_hours;
    if hours == 0 && !force {
        return Ok(DigestRun::default());
    }
    let period = (hours.max(1) * 3_600) as i64;
    let at = now();
    let key = key(&console.store.config().data_dir).map_err(|e| format!("digest key: {e}"))?;
    let q = Query {
        action: Some("quarantine".into()),
        since: Some(at - period.max(7 * 86_400)),
        limit: Some(DIGEST_MAX_MESSAGES),
        ..Default::default()
    };
    let records = console.store.search(&q).await.map_err(|e| e.to_string())?;
    let held_ids: Vec<String> = records.iter().filter_map(|r| r.stored_at.clone()).collect();
    let states: std::collections::HashMap<String, QuarantineStatus> = console
        .store
        .quarantine_states(&held_ids)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let mut per_rcpt: BTreeMap<String, Vec<&MessageRecord>> = BTreeMap::new();
    for r in &records {
        let held =
            r.stored_at.as_ref().and_then(|q| states.get(q)) == Some(&QuarantineStatus::Held);
        if !held {
            continue;
        }
        for rcpt in &r.recipients {
            per_rcpt
                .entry(rcpt.trim().to_ascii_lowercase())
                .or_default()
                .push(r);
        }
    }
    let mut run = DigestRun::default();
    let expires = at + (console.config.digest_link_hours.max(1) * 3_600) as i64;
    let base = base_url(console);
    for (rcpt, mut list) in per_rcpt {
        let last = console
            .store
            .digest_last(&rcpt)
            .await
            .map_err(|e| e.to_string())?;
        if let Some((sent_at, _)) = last
            && !force
            && at - sent_at < period
        {
            continue;
        }
        let after = last.map(|(_, until)| until).unwrap_or(i64::MIN);
        list.retain(|m| m.received_at >= after);
        if list.is_empty() {
            continue;
        }
        let mail = compose(console, &rcpt, &list, &key, expires, &base);
        let from = sender(console);
        let delivered = match &console.release_to {
            ReleaseTarget::Downstream(relay) => unspoof_forensics::send::send(
                relay,
                &console.hostname,
                &from,
                std::slice::from_ref(&rcpt),
                &mail,
            )
            .await
            .map(|r| format!("{relay}: {}", r.trim()))
            .map_err(|e| format!("{relay}: {e}")),
            ReleaseTarget::Maildir(dir) => crate::release::maildir_deliver(
                dir,
                &format!("digest.{}", unspoof_store::new_id()),
                &mail,
            )
            .map(|p| p.display().to_string())
            .map_err(|e| format!("{}: {e}", dir.display())),
        };
        match delivered {
            Ok(to) => {
                let until = list.iter().map(|m| m.received_at).max().unwrap_or(at) + 1;
                console
                    .store
                    .digest_mark(&rcpt, at, until)
                    .await
                    .map_err(|e| e.to_string())?;
                run.sent.push((rcpt, list.len(), to));
            }
            Err(e) => run.failed.push((rcpt, e)),
        }
    }
    Ok(run)
}

fn sender(console: &Console) -> String {
    let f = console.config.digest_from.trim();
    if f.is_empty() {
        format!("postmaster@{}", console.hostname)
    } else {
        f.to_string()
    }
}

/// Strips what could end a header line or fake a field from message-derived text.
fn one_line(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

fn compose(
    console: &Console,
    rcpt: &str,
    list: &[&MessageRecord],
    key: &[u8],
    expires: i64,
    base: &str,
) -> Vec<u8> {
    let mut body = format!(
        "{} message(s) to {} are held in the quarantine because they looked forged.\r\n\
         Release one only if you expected it; each link works until {} UTC.\r\n\r\n",
        list.len(),
        rcpt,
        format_time(expires)
    );
    for m in list.iter().take(DIGEST_MAX_LISTED) {
        let sig = sign(key, &m.id, rcpt, expires);
        body.push_str(&format!(
            "{} UTC\r\n  From: {}\r\n  Subject: {}\r\n  Why: {}\r\n  Release: {}/digest/release?m={}&r={}&e={}&s={}\r\n\r\n",
            format_time(m.received_at),
            one_line(m.from.as_deref().or(m.mail_from.as_deref()).unwrap_or(""), 200),
            one_line(m.subject.as_deref().unwrap_or("(no subject)"), 200),
            m.reasons.join(", "),
            base,
            crate::pages::enc(&m.id),
            crate::pages::enc(rcpt),
            expires,
            sig
        ));
    }
    if list.len() > DIGEST_MAX_LISTED {
        body.push_str(&format!(
            "... and {} more: see {}/quarantine\r\n",
            list.len() - DIGEST_MAX_LISTED,
            base
        ));
    }
    let id = unspoof_store::new_id();
    format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: Quarantine digest: {} held message(s)\r\n\
         Date: {}\r\nMessage-ID: <digest.{}@{}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\
         Auto-Submitted: auto-generated\r\n\r\n{}",
        sender(console),
        rcpt,
        list.len(),
        rfc2822_date(now()),
        id,
        console.hostname,
        body
    )
    .into_bytes()
}

fn rfc2822_date(t: i64) -> String {
    // format_time gives "YYYY-MM-DD HH:MM:SS"; RFC 5322 allows a numeric zone, no weekday.
    let s = format_time(t);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m: usize = s.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    format!(
        "{} {} {} {} +0000",
        s.get(8..10).unwrap_or("01").trim_start_matches('0'),
        months[(m.clamp(1, 12)) - 1],
        s.get(..4).unwrap_or("1970"),
        s.get(11..19).unwrap_or("00:00:00")
    )
}
