//! Transport and brand: MTA-STS (RFC 8461: the TXT record, the policy over HTTPS, its MX
//! patterns against the real MX and the MX certificates), TLS-RPT (RFC 8460), DANE TLSA
//! (RFC 7672, RFC 6698) with DNSSEC (the resolver's AD bit), and BIMI (needs DMARC at
//! enforcement).

use hickory_proto::rr::{
    RData, RecordType,
    rdata::tlsa::{CertUsage, Matching, Selector},
};
use mail_auth::{
    common::parse::TxtRecordParser,
    mta_sts::{MtaSts, TlsRpt},
};
use serde::Serialize;

use crate::{
    Check, Finding, Fix, Options, Severity, dmarc::DmarcReport, dns::Resolver, entry::EntryReport,
    net::https_get,
};

/// RFC 8461 3.2: the largest max_age.
pub const MAX_STS_AGE: u64 = 31_557_600;
/// Below this max_age (a day) a policy protects little between two visits of a sender.
pub const SHORT_STS_AGE: u64 = 86_400;

/// A parsed MTA-STS policy file (RFC 8461 3.2).
#[derive(Debug, Clone, Serialize, Default)]
pub struct StsPolicy {
    pub version: Option<String>,
    pub mode: Option<String>,
    pub max_age: Option<u64>,
    pub mx: Vec<String>,
}

/// DANE for one MX.
#[derive(Debug, Clone, Serialize)]
pub struct Dane {
    pub host: String,
    pub tlsa: Vec<String>,
    pub secure: bool,
    /// Whether a TLSA record matches the certificate the MX presented (`None`: not probed).
    pub matches: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct TransportReport {
    pub mta_sts_record: Option<String>,
    pub mta_sts_policy: Option<StsPolicy>,
    pub tls_rpt: Option<String>,
    pub dane: Vec<Dane>,
    pub bimi: Option<String>,
    #[serde(skip)]
    pub findings: Vec<Finding>,
}

/// Parses the policy text: `key: value` lines, CRLF or LF.
pub fn parse_policy(text: &str) -> Result<StsPolicy, String> {
    let mut p = StsPolicy::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("line \"{line}\" is not key: value"))?;
        let v = v.trim();
        match k.trim() {
            "version" => p.version = Some(v.to_string()),
            "mode" => p.mode = Some(v.to_string()),
            "max_age" => {
                p.max_age = Some(
                    v.parse()
                        .map_err(|_| format!("max_age \"{v}\" is not a number"))?,
                )
            }
            "mx" => p.mx.push(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    match p.version.as_deref() {
        Some("STSv1") => {}
        other => return Err(format!("version is {other:?}, not STSv1")),
    }
    match p.mode.as_deref() {
        Some("enforce" | "testing" | "none") => {}
        other => return Err(format!("mode is {other:?}, not enforce, testing or none")),
    }
    match p.max_age {
        Some(a) if a <= MAX_STS_AGE => {}
        Some(a) => return Err(format!("max_age {a} is more than {MAX_STS_AGE}")),
        None => return Err("no max_age".into()),
    }
    if p.mx.is_empty() && p.mode.as_deref() != Some("none") {
        return Err("no mx line".into());
    }
    Ok(p)
}

/// RFC 8461 4.1: an MX matches a pattern exactly, or a `*.` pattern by its leftmost label only.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

fn sha(m: Matching, data: &[u8]) -> Option<Vec<u8>> {
    use ring::digest::{SHA256, SHA512, digest};
    match m {
        Matching::Raw => Some(data.to_vec()),
        Matching::Sha256 => Some(digest(&SHA256, data).as_ref().to_vec()),
        Matching::Sha512 => Some(digest(&SHA512, data).as_ref().to_vec()),
        _ => None,
    }
}

/// The SubjectPublicKeyInfo of a DER certificate.
fn spki(cert: &[u8]) -> Option<Vec<u8>> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(c.tbs_certificate.subject_pki.raw.to_vec())
}

/// The `3 1 1` TLSA record for a certificate.
pub fn tlsa_for(cert: &[u8]) -> Option<String> {
    let spki = spki(cert)?;
    let d = ring::digest::digest(&ring::digest::SHA256, &spki);
    Some(format!(
        "3 1 1 {}",
        data_encoding::HEXLOWER.encode(d.as_ref())
    ))
}

pub async fn check(
    resolver: &Resolver,
    domain: &str,
    options: &Options,
    entry: &EntryReport,
    dmarc: &DmarcReport,
) -> TransportReport {
    let mut report = TransportReport::default();
    let mut findings = Vec::new();

    // MTA-STS.
    let sts_name = format!("_mta-sts.{domain}");
    let sts = resolver.ask(&sts_name, RecordType::TXT).await;
    let sts_records: Vec<String> = sts
        .txt()
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .filter(|r| r.starts_with("v=STSv1"))
        .collect();
    let sts_fix = Fix::txt(&sts_name, "v=STSv1; id=1", "publish");
    if let Some(why) = sts.failure() {
        findings.push(Finding::new(
            "transport.temperror",
            Check::Transport,
            Severity::Error,
            "RFC 8461 3.1",
            format!("{sts_name} could not be read ({why})"),
        ));
    } else if sts_records.len() > 1 {
        let mut f = Finding::new(
            "transport.mta_sts_multiple",
            Check::Transport,
            Severity::Error,
            "RFC 8461 3.1",
            format!(
                "{} MTA-STS records at {sts_name}: senders treat it as no policy",
                sts_records.len()
            ),
        )
        .fix(Fix::txt(&sts_name, &sts_records[0], "replace"));
        for r in &sts_records {
            f = f.evidence(format!("{sts_name} TXT \"{r}\""));
        }
        findings.push(f);
    } else if let Some(record) = sts_records.first() {
        report.mta_sts_record = Some(record.clone());
        if let Err(e) = MtaSts::parse(record.as_bytes()) {
            findings.push(
                Finding::new(
                    "transport.mta_sts_syntax",
                    Check::Transport,
                    Severity::Error,
                    "RFC 8461 3.1",
                    format!("the MTA-STS record cannot be parsed ({e})"),
                )
                .evidence(format!("{sts_name} TXT \"{record}\""))
                .fix(sts_fix.clone()),
            );
        }
        if options.probe && !entry.mx.is_empty() {
            let host = format!("mta-sts.{domain}");
            let a = resolver.ask(&host, RecordType::A).await;
            let aaaa = resolver.ask(&host, RecordType::AAAA).await;
            let mut addrs = a.addrs();
            addrs.extend(aaaa.addrs());
            let fetched = https_get(
                &host,
                "/.well-known/mta-sts.txt",
                &addrs,
                &options.connect_to,
                &options.extra_roots,
                &options.limits,
            )
            .await;
            match fetched {
                Err(e) => findings.push(Finding::new("transport.mta_sts_policy_unavailable", Check::Transport, Severity::Error, "RFC 8461 3.3", format!("the policy at https://{host}/.well-known/mta-sts.txt cannot be fetched ({e}): senders that saw the TXT record cannot apply it"))),
                Ok(r) if r.status != 200 => findings.push(Finding::new("transport.mta_sts_policy_unavailable", Check::Transport, Severity::Error, "RFC 8461 3.3", format!("https://{host}/.well-known/mta-sts.txt answers HTTP {} (only 200 counts, redirects are not followed)", r.status))),
                Ok(r) => {
                    if r.content_type.as_deref().map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase()) != Some("text/plain".into()) {
                        findings.push(Finding::new("transport.mta_sts_content_type", Check::Transport, Severity::Warning, "RFC 8461 3.3", format!("the policy is served as {:?}, not text/plain", r.content_type.as_deref().unwrap_or("(none)"))));
                    }
                    let text = String::from_utf8_lossy(&r.body).into_owned();
                    match parse_policy(&text) {
                        Err(e) => findings.push(Finding::new("transport.mta_sts_policy_syntax", Check::Transport, Severity::Error, "RFC 8461 3.2", format!("the MTA-STS policy is invalid: {e}")).evidence(text.chars().take(200).collect::<String>())),
                        Ok(p) => {
                            let mode = p.mode.clone().unwrap_or_default();
                            if mode != "enforce" {
                                findings.push(Finding::new("transport.mta_sts_not_enforced", Check::Transport, Severity::Warning, "RFC 8461 5", format!("the MTA-STS policy is in mode {mode}: senders still deliver without TLS or to a forged MX")));
                            }
                            if p.max_age.is_some_and(|a| a < SHORT_STS_AGE) {
                                findings.push(Finding::new("transport.mta_sts_short_age", Check::Transport, Severity::Warning, "RFC 8461 3.2", format!("max_age {} is under a day: a sender forgets the policy between two deliveries (weeks are usual)", p.max_age.unwrap_or(0))));
                            }
                            for m in &entry.mx {
                                if !p.mx.iter().any(|pat| mx_matches(pat, &m.host)) {
                                    findings.push(Finding::new("transport.mta_sts_mx_mismatch", Check::Transport, Severity::Error, "RFC 8461 4.1", format!("MX {} matches no mx line of the MTA-STS policy ({}): senders that enforce it will not deliver there", m.host, p.mx.join(", "))));
                                }
                                if mode == "enforce"
                                    && let Some(Some(Err(why))) = m.probe.as_ref().map(|pr| pr.pkix.clone())
                                {
                                    findings.push(Finding::new("transport.mta_sts_certificate", Check::Transport, Severity::Error, "RFC 8461 4.2", format!("MX {} presents a certificate MTA-STS senders refuse ({why}): they will not deliver", m.host)));
                                }
                            }
                            report.mta_sts_policy = Some(p);
                        }
                    }
                }
            }
        }
    } else if !(entry.null_mx && entry.mx.is_empty()) {
        let severity = if entry.mx.is_empty() {
            Severity::Info
        } else {
            Severity::Warning
        };
        findings.push(Finding::new("transport.no_mta_sts", Check::Transport, severity, "RFC 8461", format!("{domain} publishes no MTA-STS policy: a network attacker can strip STARTTLS or redirect mail to it (also publish https://mta-sts.{domain}/.well-known/mta-sts.txt)")).fix(sts_fix));
    }

    // TLS-RPT.
    let rpt_name = format!("_smtp._tls.{domain}");
    let rpt = resolver.ask(&rpt_name, RecordType::TXT).await;
    let rpt_records: Vec<String> = rpt
        .txt()
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .filter(|r| r.starts_with("v=TLSRPTv1"))
        .collect();
    let rpt_fix = Fix::txt(
        &rpt_name,
        &format!("v=TLSRPTv1; rua=mailto:tls-reports@{domain}"),
        "publish",
    );
    if rpt.failure().is_some() {
        findings.push(Finding::new(
            "transport.temperror",
            Check::Transport,
            Severity::Error,
            "RFC 8460 3",
            format!("{rpt_name} could not be read"),
        ));
    } else if rpt_records.len() > 1 {
        findings.push(
            Finding::new(
                "transport.tlsrpt_multiple",
                Check::Transport,
                Severity::Error,
                "RFC 8460 3",
                format!(
                    "{} TLS-RPT records at {rpt_name}: senders treat it as none",
                    rpt_records.len()
                ),
            )
            .fix(Fix::txt(&rpt_name, &rpt_records[0], "replace")),
        );
    } else if let Some(r) = rpt_records.first() {
        report.tls_rpt = Some(r.clone());
        if let Err(e) = TlsRpt::parse(r.as_bytes()) {
            findings.push(
                Finding::new(
                    "transport.tlsrpt_syntax",
                    Check::Transport,
                    Severity::Error,
                    "RFC 8460 3",
                    format!("the TLS-RPT record cannot be parsed ({e})"),
                )
                .evidence(format!("{rpt_name} TXT \"{r}\""))
                .fix(rpt_fix),
            );
        }
    } else if !(entry.null_mx && entry.mx.is_empty()) {
        findings.push(
            Finding::new(
                "transport.no_tlsrpt",
                Check::Transport,
                Severity::Info,
                "RFC 8460 3",
                "no TLS-RPT record: nobody hears when senders fail to set up TLS to the MX",
            )
            .fix(rpt_fix),
        );
    }

    // DANE.
    for m in &entry.mx {
        let name = format!("_25._tcp.{}", m.host);
        let answer = resolver.ask(&name, RecordType::TLSA).await;
        let records: Vec<hickory_proto::rr::rdata::TLSA> = answer
            .records()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TLSA(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        let leaf = m.probe.as_ref().and_then(|p| p.chain.first().cloned());
        let proposed = leaf.as_deref().and_then(tlsa_for);
        if records.is_empty() {
            if answer.failure().is_none() && entry.mx_secure {
                let mut f = Finding::new(
                    "transport.no_dane",
                    Check::Transport,
                    Severity::Info,
                    "RFC 7672",
                    format!(
                        "the zone of {} is signed but publishes no TLSA for its MX: DANE senders would insist on TLS with this certificate",
                        m.host
                    ),
                );
                if let Some(p) = &proposed {
                    f = f.fix(Fix::record(&name, "TLSA", p.clone(), "publish"));
                }
                findings.push(f);
            }
            continue;
        }
        let shown: Vec<String> = records
            .iter()
            .map(|t| {
                format!(
                    "{} {} {} {}",
                    u8::from(t.cert_usage),
                    u8::from(t.selector),
                    u8::from(t.matching),
                    data_encoding::HEXLOWER.encode(&t.cert_data)
                )
            })
            .collect();
        let mut dane = Dane {
            host: m.host.clone(),
            tlsa: shown.clone(),
            secure: answer.secure(),
            matches: None,
        };
        if !answer.secure() {
            findings.push(Finding::new("transport.tlsa_insecure", Check::Transport, Severity::Error, "RFC 7672 2.2", format!("{name} has TLSA records but the resolver did not validate them (no AD bit): senders ignore TLSA without DNSSEC{}", if resolver.servers_on_loopback() { "" } else { " (the resolver is not on loopback: its AD bit is not trusted anyway)" })).evidence(shown.join("; ")));
        } else if !entry.mx_secure {
            findings.push(Finding::new("transport.dane_mx_insecure", Check::Transport, Severity::Warning, "RFC 7672 2.2.1", format!("{name} is signed but the MX records of {domain} are not validated: senders do not use DANE for this MX")));
        }
        for t in &records {
            if matches!(t.cert_usage, CertUsage::PkixTa | CertUsage::PkixEe) {
                findings.push(Finding::new("transport.tlsa_pkix_usage", Check::Transport, Severity::Warning, "RFC 7672 3.1.3", format!("{name} uses certificate usage {} (PKIX-TA/PKIX-EE), which SMTP senders SHOULD NOT use: DANE-EE (3) or DANE-TA (2)", u8::from(t.cert_usage))));
            }
        }
        if let Some(chain) = m.probe.as_ref().filter(|p| p.tls).map(|p| p.chain.clone()) {
            let matched = records.iter().any(|t| {
                let candidates: Vec<&Vec<u8>> = match t.cert_usage {
                    CertUsage::DaneEe | CertUsage::PkixEe => chain.iter().take(1).collect(),
                    _ => chain.iter().collect(),
                };
                candidates.iter().any(|c| {
                    let data = match t.selector {
                        Selector::Full => Some(c.to_vec()),
                        Selector::Spki => spki(c),
                        _ => None,
                    };
                    data.and_then(|d| sha(t.matching, &d))
                        .is_some_and(|h| h == t.cert_data)
                })
            });
            dane.matches = Some(matched);
            if !matched {
                let mut f = Finding::new("transport.tlsa_mismatch", Check::Transport, Severity::Critical, "RFC 7672 3", format!("no TLSA record at {name} matches the certificate MX {} presents: DANE senders will not deliver to it", m.host)).evidence(shown.join("; "));
                if let Some(p) = &proposed {
                    f = f.fix(Fix::record(&name, "TLSA", p.clone(), "replace"));
                }
                findings.push(f);
            }
        }
        report.dane.push(dane);
    }

    // BIMI (needs DMARC at enforcement).
    let bimi_name = format!("default._bimi.{domain}");
    let bimi = resolver.ask(&bimi_name, RecordType::TXT).await;
    if let Some(r) = bimi
        .txt()
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .find(|r| r.starts_with("v=BIMI1"))
    {
        report.bimi = Some(r.clone());
        if !dmarc.enforced {
            findings.push(Finding::new("transport.bimi_without_enforcement", Check::Transport, Severity::Error, "BIMI (draft-brand-indicators-for-message-identification); Google/Yahoo BIMI rules", "a BIMI record is published but DMARC is not at enforcement (p=quarantine or reject, no t=y or pct below 100): mailbox providers show no logo").evidence(format!("{bimi_name} TXT \"{r}\"")));
        }
        let l = crate::dmarc::tags(&r)
            .into_iter()
            .find(|(k, _)| k == "l")
            .map(|(_, v)| v);
        if l.as_deref()
            .is_some_and(|l| !l.is_empty() && !l.starts_with("https://"))
        {
            findings.push(
                Finding::new(
                    "transport.bimi_logo_url",
                    Check::Transport,
                    Severity::Warning,
                    "BIMI (draft-brand-indicators-for-message-identification)",
                    "the BIMI l= logo location is not an https:// URL",
                )
                .evidence(format!("{bimi_name} TXT \"{r}\"")),
            );
        }
    }

    if report.bimi.is_none() && bimi.failure().is_none() {
        findings.push(Finding::new(
            "transport.no_bimi",
            Check::Transport,
            Severity::Info,
            "BIMI (draft-brand-indicators-for-message-identification)",
            format!("no BIMI record at {bimi_name}: mailbox providers show no logo (it needs DMARC at enforcement, an SVG Tiny PS logo and usually a mark certificate)"),
        ));
    }
    report.findings = findings;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_patterns() {
        let p = parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n").unwrap();
        assert_eq!(p.mx.len(), 2);
        assert!(parse_policy("version: STSv1\nmode: enforce\nmax_age: 86400\n").is_err());
        assert!(parse_policy("version: STSv2\nmode: enforce\nmx: a\nmax_age: 86400\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999\n").is_err());
        assert!(mx_matches("*.example.net", "mx.example.net"));
        assert!(!mx_matches("*.example.net", "a.mx.example.net"));
        assert!(!mx_matches("*.example.net", "example.net"));
        assert!(mx_matches("MX1.example.com.", "mx1.example.com"));
    }
}
