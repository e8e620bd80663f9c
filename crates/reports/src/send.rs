//! Sending our reports: one per policy domain and UTC day for the whole fleet (a claim row in
//! the store: the node whose insert wins builds it; a claim left unfinished past
//! [`DmarcConfig::claim_lease_secs`] is taken over), to every `rua` address of the domain's
//! record (an address outside the domain only when `<domain>._report._dmarc.<its domain>`
//! says `v=DMARC1`, RFC 9990 section 3), DKIM-signed as our `from` domain, through the relay;
//! a destination that fails temporarily is retried on [`DmarcConfig::retry_minutes`], one that
//! fails permanently (5xx) is given up and its address suppressed for
//! [`DmarcConfig::suppress_days`].
//!
//! Each destination is a row of the store with its mail(s), so a retry (by any node) sends the
//! same bytes, and a crash between building and sending loses nothing.

use mail_auth::dmarc::URI;
use serde::Serialize;
use unspoof_engine::Dns;
use unspoof_store::dmarc::{DmarcDelivery, MESSAGE_SEPARATOR};
use unspoof_store::{Store, StoreError};

use crate::DmarcConfig;
use crate::generate::{
    FoundPolicy, Submitter, build_report, group_by_policy, report_mail, rows_from_verdicts, split,
};

/// Signs our report mails (the gateway's DKIM keys, `[[gateway.dkim]]`).
pub trait Signer: Send + Sync {
    /// A `DKIM-Signature:` field (ending in CRLF) for `message` as `domain`; `None` without a
    /// key for it.
    fn sign(&self, domain: &str, message: &[u8]) -> Option<Result<String, String>>;
}

/// No keys: reports go out unsigned (and fail DMARC at receivers unless SPF aligns).
pub struct NoSigner;

impl Signer for NoSigner {
    fn sign(&self, _: &str, _: &[u8]) -> Option<Result<String, String>> {
        None
    }
}

/// What one `send` run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Reports built by this node in this run.
    pub built: Vec<Built>,
    /// Policy domains another node of the fleet has claimed for the day.
    pub claimed_elsewhere: Vec<String>,
    /// From domains left out, and why (no record any more, DNS failure).
    pub skipped: Vec<(String, String)>,
    /// Delivery attempts made in this run: (address, policy domain, outcome).
    pub attempts: Vec<(String, String, String)>,
    /// Set when there is no relay: reports were queued, not sent.
    pub no_relay: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Built {
    pub domain: String,
    pub day: i64,
    pub report_id: String,
    pub records: usize,
    pub messages: u64,
    /// (address, what happened: `queued (N parts)`, `suppressed`, `not verified: ...`).
    pub destinations: Vec<(String, String)>,
    pub signed: bool,
}

/// Builds and queues the reports of `day` (Unix day number) this node wins the claim for, then
/// delivers every destination that is due (this run's and earlier retries).
pub async fn send_day(
    store: &Store,
    dns: &Dns,
    config: &DmarcConfig,
    signer: &dyn Signer,
    day: i64,
    now: i64,
) -> Result<Summary, StoreError> {
    let mut summary = Summary::default();
    let verdicts = store
        .dmarc_verdicts(day * 86_400, (day + 1) * 86_400)
        .await?;
    let rows = rows_from_verdicts(&verdicts);
    let (by_policy, skipped) = group_by_policy(dns, &rows).await;
    summary.skipped = skipped;
    let submitter = Submitter::from_config(config);
    for (domain, (found, rows)) in &by_policy {
        let fresh_id = format!("{}.{day}.{}", domain, uuid::Uuid::now_v7().simple());
        let Some(report_id) = store
            .dmarc_claim(domain, day, &fresh_id, now, config.claim_lease_secs)
            .await?
        else {
            summary.claimed_elsewhere.push(domain.clone());
            continue;
        };
        let mut rows = rows.clone();
        rows.sort();
        let report = build_report(&submitter, found, &report_id, day, &rows);
        let mut built = Built {
            domain: domain.clone(),
            day,
            report_id: report_id.clone(),
            records: rows.len(),
            messages: rows.iter().map(|(_, n)| u64::from(*n)).sum(),
            destinations: Vec::new(),
            signed: false,
        };
        let uris: Vec<&URI> = found
            .record
            .rua
            .iter()
            .take(config.max_destinations)
            .collect();
        if uris.is_empty() {
            store
                .dmarc_outgoing_set(domain, day, "empty", Some("the record has no rua"))
                .await?;
            summary.built.push(built);
            continue;
        }
        for uri in uris {
            let address = uri.uri.trim_start_matches("mailto:").to_ascii_lowercase();
            let status = match queue(
                store,
                dns,
                config,
                signer,
                &submitter,
                found,
                &report,
                &address,
                uri.max_size,
                day,
                now,
            )
            .await?
            {
                Ok((parts, signed)) => {
                    built.signed = signed;
                    format!("queued ({parts} part{})", if parts == 1 { "" } else { "s" })
                }
                Err(why) => why,
            };
            built.destinations.push((address, status));
        }
        let detail = built
            .destinations
            .iter()
            .map(|(a, s)| format!("{a}: {s}"))
            .collect::<Vec<_>>()
            .join("; ");
        store
            .dmarc_outgoing_set(domain, day, "queued", Some(&detail))
            .await?;
        summary.built.push(built);
    }
    deliver_due(store, config, now, &mut summary).await?;
    Ok(summary)
}

/// Queues the report for one address: `Ok((parts, signed))`, or `Err(why not)`.
#[allow(clippy::too_many_arguments)]
async fn queue(
    store: &Store,
    dns: &Dns,
    config: &DmarcConfig,
    signer: &dyn Signer,
    submitter: &Submitter,
    found: &FoundPolicy,
    report: &mail_auth::report::Report,
    address: &str,
    uri_max: usize,
    day: i64,
    now: i64,
) -> Result<Result<(usize, bool), String>, StoreError> {
    let Some((_, host)) = address.rsplit_once('@') else {
        return Ok(Err("not an address".into()));
    };
    if let Some(s) = store.dmarc_suppressed(address, now).await? {
        return Ok(Err(format!("suppressed until {} ({})", s.until, s.reason)));
    }
    if !unspoof_engine::domain::same_organisation(host, &found.domain) {
        match verify_external(dns, &found.domain, host).await {
            Ok(()) => {}
            Err(why) => return Ok(Err(format!("not verified: {why}"))),
        }
    }
    let limit = match uri_max {
        0 => config.max_report_bytes,
        n => n.min(config.max_report_bytes),
    };
    let parts = match split(report, &submitter.org_name, limit) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let mut joined = Vec::new();
    let mut signed = true;
    for (i, part) in parts.iter().enumerate() {
        let mail = report_mail(submitter, &found.domain, part, address, now);
        let mail = match signer.sign(config.from_domain(), &mail) {
            Some(Ok(header)) => {
                let mut m = header.into_bytes();
                m.extend_from_slice(&mail);
                m
            }
            _ => {
                signed = false;
                mail
            }
        };
        if i > 0 {
            joined.extend_from_slice(MESSAGE_SEPARATOR);
        }
        joined.extend_from_slice(&mail);
    }
    store
        .dmarc_delivery_put(&DmarcDelivery {
            domain: found.domain.clone(),
            day,
            address: address.to_string(),
            status: "pending".into(),
            attempts: 0,
            next_try: now,
            last_error: None,
            message: joined,
        })
        .await?;
    Ok(Ok((parts.len(), signed)))
}

/// RFC 9990 section 3 (external destinations): the report address's domain must publish
/// `<policy domain>._report._dmarc.<its domain>` with `v=DMARC1`.
pub async fn verify_external(dns: &Dns, policy_domain: &str, host: &str) -> Result<(), String> {
    let Some(auth) = dns.authenticator() else {
        return Err("DNS is off".into());
    };
    let name = format!("{policy_domain}._report._dmarc.{host}.");
    match tokio::time::timeout(dns.timeout(), auth.txt_raw_lookup(name.clone())).await {
        Err(_) => Err(format!("{name}: DNS timed out")),
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Ok(Ok(txt)) if txt.starts_with(b"v=DMARC1") => Ok(()),
        Ok(Ok(_)) => Err(format!("{name} does not say v=DMARC1")),
    }
}

/// Sends every destination due at `now` through the relay (see the module documentation).
pub async fn deliver_due(
    store: &Store,
    config: &DmarcConfig,
    now: i64,
    summary: &mut Summary,
) -> Result<(), StoreError> {
    let Some(relay) = config.relay.clone() else {
        summary.no_relay = true;
        return Ok(());
    };
    let helo = config.from_domain().to_string();
    for mut d in store.dmarc_deliveries_due(now).await? {
        // Taken for ten minutes: another node sees it as not due while we send.
        if !store.dmarc_delivery_take(&d, now + 600).await? {
            continue;
        }
        d.attempts += 1;
        let outcome = if let Some(s) = store.dmarc_suppressed(&d.address, now).await? {
            d.status = "suppressed".into();
            d.last_error = Some(s.reason.clone());
            format!("suppressed ({})", s.reason)
        } else {
            let mut result = Ok(String::new());
            for mail in split_messages(&d.message) {
                result = unspoof_forensics::send::send(
                    &relay,
                    &helo,
                    &config.from,
                    std::slice::from_ref(&d.address),
                    mail,
                )
                .await;
                if result.is_err() {
                    break;
                }
            }
            match result {
                Ok(reply) => {
                    d.status = "sent".into();
                    d.last_error = None;
                    format!("sent: {reply}")
                }
                Err(e) if permanent(&e) => {
                    d.status = "failed".into();
                    d.last_error = Some(e.clone());
                    let until = now + i64::from(config.suppress_days) * 86_400;
                    store.dmarc_suppress(&d.address, now, until, &e).await?;
                    format!("failed for good, address suppressed: {e}")
                }
                Err(e) => {
                    d.last_error = Some(e.clone());
                    match config.retry_minutes.get(d.attempts as usize - 1) {
                        Some(m) => {
                            d.status = "pending".into();
                            d.next_try = now + (*m as i64) * 60;
                            format!("will retry in {m} min: {e}")
                        }
                        None => {
                            d.status = "failed".into();
                            format!("given up after {} attempts: {e}", d.attempts)
                        }
                    }
                }
            }
        };
        store.dmarc_delivery_put(&d).await?;
        summary
            .attempts
            .push((d.address.clone(), d.domain.clone(), outcome));
    }
    Ok(())
}

/// An SMTP refusal with a 5xx code (the minimal client says `the server refused: 550 ...`).
fn permanent(error: &str) -> bool {
    error
        .split_once("refused: ")
        .map(|(_, r)| r.starts_with('5'))
        .unwrap_or(false)
}

/// The mails of a delivery row (several for a split report).
pub fn split_messages(joined: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = joined;
    while let Some(at) = find(rest, MESSAGE_SEPARATOR) {
        out.push(&rest[..at]);
        rest = &rest[at + MESSAGE_SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_is_a_5xx_refusal() {
        assert!(permanent("the server refused: 550 5.1.1 no such user"));
        assert!(!permanent("the server refused: 451 4.3.0 try later"));
        assert!(!permanent("127.0.0.1:1: Connection refused (os error 111)"));
    }

    #[test]
    fn split_messages_round_trip() {
        let mut j = b"one\r\n".to_vec();
        j.extend_from_slice(MESSAGE_SEPARATOR);
        j.extend_from_slice(b"two\r\n");
        assert_eq!(split_messages(&j), vec![&b"one\r\n"[..], &b"two\r\n"[..]]);
        assert_eq!(split_messages(b"only"), vec![&b"only"[..]]);
    }
}
