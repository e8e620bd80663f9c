//! DMARC (RFC 9989; reports RFC 9990): the policy that applies to the domain, found by the
//! DNS tree walk (4.10), its tags (4.7): `p`, `sp`, `np`, `t`, the alignment modes, the tags
//! RFC 9989 removed (`pct`, `rf`, `ri`), several records, a record on the wrong name,
//! `rua`/`ruf` destinations in other organisations without their authorisation record, and
//! the domain's known subdomains that send no mail yet are not covered by `sp`/`np`.
//!
//! The record is parsed by mail-auth; the tag list is also read as written, because mail-auth
//! fills in defaults (`sp` from `p`, `np` from `sp`) and drops the removed tags.

use hickory_proto::rr::RecordType;
use mail_auth::{
    common::parse::TxtRecordParser,
    dmarc::{Dmarc, Policy},
};
use serde::Serialize;

use crate::{
    Check, Finding, Fix, Options, Severity, dns::Resolver, entry::EntryReport, is_at_or_below,
};

/// RFC 9989 4.10: the tree walk asks at most this many names.
pub const MAX_TREE_WALK: usize = 8;

/// The DMARC part of a report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DmarcReport {
    /// The record that applies, as published.
    pub record: Option<String>,
    /// Where it was found (`_dmarc.<domain>` or a parent's on the tree walk).
    pub found_at: Option<String>,
    /// `none`, `quarantine` or `reject` (absent `p` reads as `none`).
    pub p: Option<String>,
    /// The subdomain policy in effect (`sp`, else `p`).
    pub sp: Option<String>,
    /// The policy for non-existent subdomains in effect (`np`, else `sp`, else `p`).
    pub np: Option<String>,
    /// `t=y`: the policy is applied one step weaker.
    pub testing: bool,
    pub adkim: Option<String>,
    pub aspf: Option<String>,
    pub rua: Vec<String>,
    pub ruf: Vec<String>,
    /// The policy for this domain is quarantine or reject, not in test mode.
    pub enforced: bool,
    /// The record every DMARC fix of this report proposes (one record for the name: p=reject,
    /// no removed tags, no t=y, sp/np no weaker than reject, rua kept or added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed: Option<String>,
    #[serde(skip)]
    pub findings: Vec<Finding>,
}

/// The tags as written, names lower case.
pub fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn word(p: Policy) -> &'static str {
    match p {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    }
}

fn strength(p: &str) -> u8 {
    match p {
        "reject" => 2,
        "quarantine" => 1,
        _ => 0,
    }
}

/// Whether a TXT record is a DMARC record (RFC 9989 4.8: `v=DMARC1` first).
fn is_dmarc(r: &[u8]) -> bool {
    let s = String::from_utf8_lossy(r);
    let first = s.split(';').next().unwrap_or("");
    first
        .split_once('=')
        .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("v") && v.trim() == "DMARC1")
}

/// The record this audit proposes when there is none or it must be replaced.
pub fn proposed(domain: &str, rua: &[String]) -> String {
    let rua = if rua.is_empty() {
        format!("mailto:dmarc-reports@{domain}")
    } else {
        rua.join(",")
    };
    format!("v=DMARC1; p=reject; rua={rua}")
}

pub async fn check(resolver: &Resolver, domain: &str) -> DmarcReport {
    let mut report = DmarcReport::default();
    let mut findings = Vec::new();
    let own = format!("_dmarc.{domain}");

    // The walk: the domain, then its parents down to the organisational domain (PSL).
    let org = unspoof_engine::domain::registrable(domain).unwrap_or_else(|| domain.to_string());
    let mut names = vec![domain.to_string()];
    let mut d = domain;
    while d != org && names.len() < MAX_TREE_WALK {
        match d.split_once('.') {
            Some((_, parent)) if is_at_or_below(parent, &org) => {
                names.push(parent.to_string());
                d = parent;
            }
            _ => break,
        }
    }
    let mut found: Option<(String, String)> = None;
    for name in &names {
        let at = format!("_dmarc.{name}");
        let answer = resolver.ask(&at, RecordType::TXT).await;
        if let Some(why) = answer.failure() {
            findings.push(Finding::new(
                "dmarc.temperror",
                Check::Dmarc,
                Severity::Error,
                "RFC 9989 4.10",
                format!("the DMARC record at {at} could not be read ({why}): receivers get temperror and may deliver"),
            ));
            report.findings = findings;
            return report;
        }
        let records: Vec<String> = answer
            .txt()
            .iter()
            .filter(|r| is_dmarc(r))
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        if records.len() > 1 {
            let mut f = Finding::new(
                "dmarc.multiple_records",
                Check::Dmarc,
                Severity::Critical,
                "RFC 9989 4.10",
                format!(
                    "{at} has {} DMARC records: receivers discard them all and apply no policy",
                    records.len()
                ),
            )
            .fix(Fix::txt(&at, &records[0], "replace"));
            for r in &records {
                f = f.evidence(format!("{at} TXT \"{r}\""));
            }
            findings.push(f);
            report.found_at = Some(at);
            report.findings = findings;
            return report;
        }
        if let Some(r) = records.into_iter().next() {
            // A record whose first tag is not v=DMARC1 is not a DMARC record; other TXT at
            // _dmarc is harmless but confusing.
            found = Some((at, r));
            break;
        }
        for other in answer.txt() {
            let text = String::from_utf8_lossy(&other).into_owned();
            if text.to_ascii_lowercase().contains("v=dmarc1")
                || text.starts_with(|c: char| c.is_whitespace())
            {
                findings.push(
                    Finding::new(
                        "dmarc.syntax",
                        Check::Dmarc,
                        Severity::Error,
                        "RFC 9989 4.8",
                        format!("a TXT record at {at} looks like DMARC but does not start with \"v=DMARC1\": receivers ignore it"),
                    )
                    .evidence(format!("{at} TXT \"{text}\""))
                    .fix(Fix::txt(&at, &proposed(domain, &[]), "replace")),
                );
            } else if text.to_ascii_lowercase().starts_with("v=spf1") {
                findings.push(
                    Finding::new(
                        "dmarc.spf_at_dmarc",
                        Check::Dmarc,
                        Severity::Warning,
                        "RFC 9989 4.8",
                        format!("an SPF record is published at {at}, where only DMARC belongs"),
                    )
                    .evidence(format!("{at} TXT \"{text}\""))
                    .fix(Fix::txt(&at, &text, "remove")),
                );
            }
        }
    }

    // A DMARC record at the domain itself (the wrong name): the SPF check already asked.
    let apex = resolver.ask(domain, RecordType::TXT).await;
    for r in apex.txt() {
        if is_dmarc(&r) {
            let text = String::from_utf8_lossy(&r).into_owned();
            findings.push(
                Finding::new(
                    "dmarc.wrong_name",
                    Check::Dmarc,
                    Severity::Error,
                    "RFC 9989 4.10",
                    format!("a DMARC record is published at {domain} itself; receivers only look at {own}"),
                )
                .evidence(format!("{domain} TXT \"{text}\""))
                .fix(Fix::txt(domain, &text, "remove"))
                .fix(Fix::txt(&own, &text, "publish")),
            );
        }
    }

    let Some((at, text)) = found else {
        findings.push(
            Finding::new(
                "dmarc.missing",
                Check::Dmarc,
                Severity::Critical,
                "RFC 9989 4.10",
                format!("no DMARC record at {own} or above: receivers apply no policy, and anyone can put {domain} in From"),
            )
            .fix(Fix::txt(&own, &proposed(domain, &[]), "publish")),
        );
        report.findings = findings;
        return report;
    };
    report.record = Some(text.clone());
    report.found_at = Some(at.clone());
    let evidence = format!("{at} TXT \"{text}\"");
    if at != own {
        findings.push(
            Finding::new(
                "dmarc.inherited",
                Check::Dmarc,
                Severity::Info,
                "RFC 9989 4.10",
                format!(
                    "{domain} has no record of its own; the tree walk finds {at}, whose sp/np apply"
                ),
            )
            .evidence(evidence.clone()),
        );
    }
    let t = tags(&text);
    let parsed = Dmarc::parse(text.as_bytes());
    let dmarc = match parsed {
        Ok(d) => d,
        Err(e) => {
            findings.push(
                Finding::new(
                    "dmarc.syntax",
                    Check::Dmarc,
                    Severity::Critical,
                    "RFC 9989 4.8",
                    format!("the DMARC record cannot be parsed ({e}): receivers apply no policy"),
                )
                .evidence(evidence)
                .fix(Fix::txt(&at, &proposed(domain, &[]), "replace")),
            );
            report.findings = findings;
            return report;
        }
    };
    let inherited = at != own;
    let p = word(dmarc.p);
    let sp = word(dmarc.sp);
    let np = word(dmarc.np);
    report.p = Some(p.into());
    report.sp = Some(sp.into());
    report.np = Some(np.into());
    report.testing = dmarc.t;
    report.adkim = tag(&t, "adkim").map(str::to_string);
    report.aspf = tag(&t, "aspf").map(str::to_string);
    report.rua = dmarc.rua.iter().map(|u| u.uri().to_string()).collect();
    report.ruf = dmarc.ruf.iter().map(|u| u.uri().to_string()).collect();
    let applies = if inherited { sp } else { p };
    let pct = tag(&t, "pct").and_then(|v| v.parse::<u8>().ok());
    report.enforced = strength(applies) > 0 && !dmarc.t && pct.is_none_or(|p| p == 100);

    let fixed = {
        let mut kept: Vec<String> = vec!["v=DMARC1".into(), "p=reject".into()];
        for (k, v) in &t {
            let dropped = matches!(k.as_str(), "v" | "p" | "pct" | "rf" | "ri" | "t")
                || (matches!(k.as_str(), "sp" | "np") && strength(v) < 2);
            if !dropped {
                kept.push(format!("{k}={v}"));
            }
        }
        if !t.iter().any(|(k, _)| k == "rua") {
            kept.push(format!("rua=mailto:dmarc-reports@{domain}"));
        }
        kept.join("; ")
    };
    let fix = Fix::txt(&at, &fixed, "replace");
    report.proposed = Some(fixed.clone());

    if tag(&t, "p").is_none() {
        findings.push(
            Finding::new(
                "dmarc.no_policy",
                Check::Dmarc,
                Severity::Error,
                "RFC 9989 4.7",
                "the record has no p= tag: it reads as p=none",
            )
            .evidence(evidence.clone())
            .fix(fix.clone()),
        );
    }
    match applies {
        "none" => findings.push(
            Finding::new(
                "dmarc.not_enforced",
                Check::Dmarc,
                Severity::Critical,
                "RFC 9989 4.7",
                format!("the policy for {domain} is none: mail that fails DMARC is delivered, so anyone can send as {domain}"),
            )
            .evidence(evidence.clone())
            .fix(fix.clone()),
        ),
        "quarantine" => findings.push(
            Finding::new(
                "dmarc.quarantine",
                Check::Dmarc,
                Severity::Warning,
                "RFC 9989 4.7",
                "the policy is quarantine: forged mail still reaches the spam folder; reject refuses it",
            )
            .evidence(evidence.clone())
            .fix(fix.clone()),
        ),
        _ => {}
    }
    if dmarc.t {
        findings.push(
            Finding::new(
                "dmarc.testing",
                Check::Dmarc,
                Severity::Warning,
                "RFC 9989 4.7",
                "t=y is left on: receivers apply the policy one step weaker (reject as quarantine, quarantine as none)",
            )
            .evidence(evidence.clone())
            .fix(fix.clone()),
        );
    }
    if !inherited && (strength(sp) < strength(p) || (strength(sp) == 0 && tag(&t, "sp").is_some()))
    {
        findings.push(
            Finding::new(
                "dmarc.weak_subdomain_policy",
                Check::Dmarc,
                Severity::Error,
                "RFC 9989 4.7",
                if strength(sp) < strength(p) {
                    format!("sp={sp} is weaker than p={p}: forgers use any subdomain of {domain} instead")
                } else {
                    format!("sp={sp}: mail that fails DMARC from any subdomain of {domain} is delivered")
                },
            )
            .evidence(evidence.clone())
            .fix(fix.clone()),
        );
    }
    if !inherited && strength(np) < strength(sp) {
        findings.push(
            Finding::new(
                "dmarc.weak_np",
                Check::Dmarc,
                Severity::Error,
                "RFC 9989 4.7",
                format!("np={np} is weaker than sp={sp}: names that do not exist under {domain} are the easiest to forge"),
            )
            .evidence(evidence.clone())
            .fix(fix.clone()),
        );
    }
    for removed in ["pct", "rf", "ri"] {
        if let Some(v) = tag(&t, removed) {
            let (severity, extra) = match (removed, pct) {
                ("pct", Some(n)) if n < 100 => (
                    Severity::Error,
                    format!(
                        "; with pct={n} receivers that still honour it apply the policy to {n}% of forged mail only"
                    ),
                ),
                _ => (Severity::Warning, String::new()),
            };
            findings.push(
                Finding::new(
                    "dmarc.removed_tag",
                    Check::Dmarc,
                    severity,
                    "RFC 9989 (removed tags pct, rf, ri)",
                    format!(
                        "{removed}={v} was removed from DMARC by RFC 9989 and is ignored{extra}"
                    ),
                )
                .evidence(evidence.clone())
                .fix(fix.clone()),
            );
        }
    }
    for (k, v) in [("adkim", &report.adkim), ("aspf", &report.aspf)] {
        if v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("s")) {
            findings.push(
                Finding::new(
                    "dmarc.strict_alignment",
                    Check::Dmarc,
                    Severity::Info,
                    "RFC 9989 4.7",
                    format!(
                        "{k}=s: mail signed or bounced by a subdomain of {domain} does not align"
                    ),
                )
                .evidence(evidence.clone()),
            );
        }
    }
    if report.rua.is_empty() {
        findings.push(
            Finding::new(
                "dmarc.no_rua",
                Check::Dmarc,
                Severity::Warning,
                "RFC 9990",
                "no rua= address: nobody receives the aggregate reports that show who sends as this domain",
            )
            .evidence(evidence.clone())
            .fix(fix.clone()),
        );
    }
    // External destinations must authorise the domain (RFC 9990: <domain>._report._dmarc.<host>).
    let org_domain = unspoof_engine::domain::registrable(domain);
    for (which, uris) in [("rua", &report.rua), ("ruf", &report.ruf)] {
        for uri in uris.iter() {
            // mail-auth keeps the address of a mailto: URI without its scheme.
            if uri.contains("://") {
                continue;
            }
            let addr = uri
                .strip_prefix("mailto:")
                .or_else(|| uri.strip_prefix("MAILTO:"))
                .unwrap_or(uri);
            let addr = addr.split('!').next().unwrap_or(addr);
            let Some((_, host)) = addr.rsplit_once('@') else {
                findings.push(
                    Finding::new(
                        "dmarc.bad_uri",
                        Check::Dmarc,
                        Severity::Error,
                        "RFC 9989 4.7",
                        format!("{which} address \"{uri}\" has no domain"),
                    )
                    .evidence(evidence.clone()),
                );
                continue;
            };
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let same_org = match (unspoof_engine::domain::registrable(&host), &org_domain) {
                (Some(a), Some(b)) => &a == b,
                _ => is_at_or_below(&host, domain),
            };
            if same_org {
                continue;
            }
            let name = format!("{domain}._report._dmarc.{host}");
            let answer = resolver.ask(&name, RecordType::TXT).await;
            if let Some(why) = answer.failure() {
                findings.push(Finding::new(
                    "dmarc.report_auth_unknown",
                    Check::Dmarc,
                    Severity::Error,
                    "RFC 9990",
                    format!("the authorisation of {host} to receive {which} reports could not be read ({why})"),
                ));
                continue;
            }
            if !answer.txt().iter().any(|r| is_dmarc(r)) {
                findings.push(
                    Finding::new(
                        "dmarc.report_not_authorised",
                        Check::Dmarc,
                        Severity::Error,
                        "RFC 9990",
                        format!("{which} sends reports to {host}, another organisation, which does not publish {name}: receivers send it nothing"),
                    )
                    .evidence(evidence.clone())
                    .fix(Fix::txt(&name, "v=DMARC1", "publish")),
                );
            }
        }
    }
    report.findings = findings;
    report
}

/// Subdomains of `domain` the audit has seen (MX hosts, gateways, mta-sts) that publish no SPF
/// of their own, hence send no mail: they must be covered by `sp` (and names that do not exist
/// by `np`), or a forger uses them.
pub async fn subdomains(
    resolver: &Resolver,
    domain: &str,
    dmarc: &DmarcReport,
    entry: &EntryReport,
    options: &Options,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if dmarc.record.is_none() {
        return out;
    }
    let sp = dmarc.sp.as_deref().unwrap_or("none");
    let mut names: Vec<String> = entry
        .mx
        .iter()
        .map(|m| m.host.clone())
        .chain(
            options
                .gateway_names
                .iter()
                .map(|g| g.trim_end_matches('.').to_ascii_lowercase()),
        )
        .filter(|n| n != domain && is_at_or_below(n, domain))
        .collect();
    names.sort();
    names.dedup();
    let mut silent = Vec::new();
    for n in names.iter().take(4) {
        let txt = resolver.ask(n, RecordType::TXT).await;
        if txt.failure().is_some() {
            continue;
        }
        let spf = txt
            .txt()
            .into_iter()
            .find(|r| unspoof_engine::is_spf_record_text(r));
        match spf {
            None => silent.push(n.clone()),
            Some(r) => {
                let text = String::from_utf8_lossy(&r).to_ascii_lowercase();
                if text.split_ascii_whitespace().collect::<Vec<_>>() == ["v=spf1", "-all"] {
                    continue;
                }
            }
        }
    }
    if strength(sp) < 2 && !names.is_empty() {
        let mut f = Finding::new(
            "dmarc.subdomains_uncovered",
            Check::Dmarc,
            Severity::Error,
            "RFC 9989 4.7",
            format!(
                "subdomains of {domain} that send no mail are covered only by sp={sp}: a forger can use them in From"
            ),
        );
        for n in &names {
            f = f.evidence(n.clone());
        }
        if let (Some(at), Some(proposed)) = (&dmarc.found_at, &dmarc.proposed) {
            f = f.fix(Fix::txt(at, proposed, "replace"));
        }
        out.push(f);
    }
    for n in silent {
        let gateway = options
            .gateway_names
            .iter()
            .any(|g| crate::same_name(g, &n));
        let (message, record) = if gateway {
            (
                format!("{n}, a gateway that sends mail, has no SPF record for its HELO name"),
                "v=spf1 a -all",
            )
        } else {
            (
                format!(
                    "{n} sends no mail but has no \"v=spf1 -all\": say so, so that SPF fails for forgers too"
                ),
                "v=spf1 -all",
            )
        };
        out.push(
            Finding::new(
                "spf.host_without_record",
                Check::Spf,
                Severity::Info,
                "RFC 7208 2.3, 10.1.2",
                message,
            )
            .fix(Fix::txt(&n, record, "publish")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn psl_of_test_names() {
        assert_eq!(
            unspoof_engine::domain::registrable("reports.other.test").as_deref(),
            Some("other.test")
        );
        assert_eq!(
            unspoof_engine::domain::registrable("dmarc-weak.test").as_deref(),
            Some("dmarc-weak.test")
        );
    }
}
