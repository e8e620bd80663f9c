//! The bulk-sender rules of the large mailbox providers (Google's email sender guidelines and
//! Yahoo's sender requirements, both in force since February 2024) as a pass/fail table, from
//! what the other checks found. The rules that DNS cannot show (one-click unsubscribe, spam
//! rate) are listed as not checkable.

use serde::Serialize;

use crate::{
    Check, Finding, Severity, dkim::KeyReport, dmarc::DmarcReport, entry::EntryReport,
    spf::SpfReport,
};

/// The rule's source.
pub const RULE: &str = "Google/Yahoo bulk sender rules 2024";

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub requirement: &'static str,
    /// `pass`, `fail` or `unknown`.
    pub status: &'static str,
    pub detail: String,
}

fn row(requirement: &'static str, ok: Option<bool>, detail: String) -> Row {
    Row {
        requirement,
        status: match ok {
            Some(true) => "pass",
            Some(false) => "fail",
            None => "unknown",
        },
        detail,
    }
}

pub fn table(
    spf: &SpfReport,
    dmarc: &DmarcReport,
    dkim: &[KeyReport],
    entry: &EntryReport,
) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.push(row(
        "SPF record published and valid",
        Some(spf.valid),
        match &spf.record {
            Some(r) => format!("\"{r}\", {} lookups", spf.lookups),
            None => "none".into(),
        },
    ));
    let valid_keys: Vec<&KeyReport> = dkim
        .iter()
        .filter(|k| {
            k.status == "valid"
                && k.bits.is_none_or(|b| {
                    k.key_type.as_deref() != Some("rsa") || b >= crate::dkim::MIN_RSA_BITS
                })
        })
        .collect();
    rows.push(row(
        "DKIM key published (RSA at least 1024 bits)",
        if valid_keys.is_empty() {
            None
        } else {
            Some(true)
        },
        if valid_keys.is_empty() {
            "no key found under the selectors tried".into()
        } else {
            valid_keys
                .iter()
                .map(|k| k.selector.clone())
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    rows.push(row(
        "DMARC record published (p=none at least)",
        Some(dmarc.record.is_some() && dmarc.p.is_some()),
        dmarc.record.clone().unwrap_or_else(|| "none".into()),
    ));
    // Alignment: the keys found and the SPF record are those of the From domain itself, so
    // mail signed with them or sent from the SPF hosts aligns (relaxed or strict).
    rows.push(row(
        "From domain aligned with SPF or DKIM",
        if dmarc.record.is_none() {
            Some(false)
        } else if spf.valid || !valid_keys.is_empty() {
            Some(true)
        } else {
            None
        },
        "an aligned identity exists when the domain's own SPF passes or its own DKIM key signs"
            .into(),
    ));
    let reverse = if entry.sending.is_empty() {
        None
    } else {
        Some(entry.sending.iter().all(|r| r.confirmed.is_some()))
    };
    rows.push(row(
        "Forward and reverse DNS of the sending IPs",
        reverse,
        entry
            .sending
            .iter()
            .map(|r| {
                format!(
                    "{} -> {}",
                    r.ip,
                    r.confirmed
                        .clone()
                        .unwrap_or_else(|| "(not confirmed)".into())
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    ));
    let probed: Vec<_> = entry.mx.iter().filter_map(|m| m.probe.as_ref()).collect();
    rows.push(row(
        "TLS for transmitting mail (STARTTLS on the MX)",
        if probed.is_empty() {
            None
        } else {
            Some(probed.iter().all(|p| p.tls))
        },
        if probed.is_empty() {
            "not probed".into()
        } else {
            format!(
                "{} of {} MX with TLS",
                probed.iter().filter(|p| p.tls).count(),
                probed.len()
            )
        },
    ));
    rows.push(row(
        "One-click unsubscribe (RFC 8058) and spam rate under 0.3%",
        None,
        "not visible in DNS".into(),
    ));
    rows
}

/// Rows that fail and that no other check already reported as a finding of its own.
pub fn findings(rows: &[Row]) -> Vec<Finding> {
    rows.iter()
        .filter(|r| r.status == "fail" && r.requirement.starts_with("From domain aligned"))
        .map(|r| {
            Finding::new(
                "bulk.alignment",
                Check::Bulk,
                Severity::Error,
                RULE,
                format!("{}: fail ({})", r.requirement, r.detail),
            )
        })
        .chain(
            rows.iter()
                .filter(|r| r.status == "fail" && !r.requirement.starts_with("From domain aligned"))
                .map(|r| {
                    Finding::new(
                        "bulk.requirement",
                        Check::Bulk,
                        Severity::Info,
                        RULE,
                        format!("{}: fail (see the findings above)", r.requirement),
                    )
                }),
        )
        .collect()
}
