//! Our aggregate reports, as a receiver (RFC 9990 section 3): from the verdicts of one UTC day in
//! the store, one report per policy domain, rows grouped by what RFC 9990 reports (source IP,
//! identifiers, disposition, aligned and raw results), written with mail-auth's RFC 9990 XML
//! writer, gzip'd, split when too large, and put in a mail with the RFC 9990 subject and file
//! name.
//!
//! Only messages whose DMARC check found a policy are reported (a domain without a DMARC
//! record asked for nothing). The policy domain is where the record was found, walking up the
//! From domain's labels (RFC 9989's tree walk, which mail-auth's check also does).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::Dmarc;
use mail_auth::report::{
    ActionDisposition, AuthResult, DKIMAuthResult, DkimResult, DmarcResult, Identifier,
    PolicyEvaluated, PolicyOverride, PolicyOverrideReason, PolicyPublished, Record, Report,
    ReportMetadata, Row, SPFAuthResult, SPFDomainScope, SpfResult,
};
use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::raw::Raw;
use serde_json::Value;
use unspoof_engine::Dns;
use unspoof_store::dmarc::DmarcVerdict;

use crate::DmarcConfig;

/// Most labels walked up from a From domain looking for its DMARC record (RFC 9989 4.10: the
/// tree walk stops after eight).
const MAX_TREE_WALK: usize = 8;

/// One row of a report before counting: everything RFC 9990 puts in a `<record>` but the count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub source_ip: Option<IpAddr>,
    pub header_from: String,
    pub envelope_from: String,
    pub envelope_to: Option<String>,
    /// none, quarantine, reject, pass.
    pub disposition: &'static str,
    pub dmarc_dkim: bool,
    pub dmarc_spf: bool,
    /// `local_policy`, `policy_test_mode`.
    pub reason: Option<&'static str>,
    /// (domain, selector, result).
    pub dkim: Vec<(String, String, String)>,
    /// (domain, scope, result).
    pub spf: Vec<(String, &'static str, String)>,
}

/// A From domain's counted rows for one day.
pub type DomainRows = BTreeMap<RowKey, u32>;

/// Groups the day's verdicts by From domain. Verdicts without a DMARC policy, unchecked ones
/// (`--offline`) and records without an analysis are left out.
pub fn rows_from_verdicts(verdicts: &[DmarcVerdict]) -> BTreeMap<String, DomainRows> {
    let mut out: BTreeMap<String, DomainRows> = BTreeMap::new();
    for v in verdicts {
        let Some(text) = &v.analysis else { continue };
        let Ok(a) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let auth = &a["auth"];
        if auth["checked"] != Value::Bool(true) {
            continue;
        }
        let dmarc = &auth["dmarc"];
        let Some(policy) = dmarc["policy"].as_str() else {
            continue;
        };
        let from_domain = dmarc["domain"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if from_domain.is_empty() {
            continue;
        }
        let aligned: Vec<&str> = dmarc["aligned"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let pass = dmarc["result"].as_str() == Some("pass");
        let testing = dmarc["testing"].as_bool().unwrap_or(false);
        let disposition = if pass {
            "pass"
        } else {
            match v.action.as_str() {
                "reject" => "reject",
                "quarantine" => "quarantine",
                _ => "none",
            }
        };
        // The policy asked for more than we did: say why (RFC 9990 PolicyOverrideType).
        let reason = (!pass && policy != "none" && disposition == "none").then_some(if testing {
            "policy_test_mode"
        } else {
            "local_policy"
        });
        let mail_from = v
            .mail_from
            .clone()
            .or_else(|| a["envelope"]["mail_from"].as_str().map(str::to_string))
            .unwrap_or_default();
        let envelope_from = mail_from
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let mut dkim: Vec<(String, String, String)> = auth["dkim"]
            .as_array()
            .map(|sigs| {
                sigs.iter()
                    .map(|s| {
                        (
                            s["domain"].as_str().unwrap_or("").to_ascii_lowercase(),
                            s["selector"].as_str().unwrap_or("").to_string(),
                            s["result"].as_str().unwrap_or("none").to_string(),
                        )
                    })
                    .filter(|(d, _, _)| !d.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        dkim.sort();
        dkim.dedup();
        let mut spf = Vec::new();
        let mfrom = &auth["spf"];
        if let Some(d) = mfrom["domain"].as_str().filter(|d| !d.is_empty()) {
            spf.push((
                d.to_ascii_lowercase(),
                "mfrom",
                mfrom["result"].as_str().unwrap_or("none").to_string(),
            ));
        } else if let Some(d) = auth["spf_helo"]["domain"]
            .as_str()
            .filter(|d| !d.is_empty())
        {
            // The null sender: SPF checked the HELO identity (RFC 7208 2.4).
            spf.push((
                d.to_ascii_lowercase(),
                "helo",
                auth["spf_helo"]["result"]
                    .as_str()
                    .unwrap_or("none")
                    .to_string(),
            ));
        }
        let source_ip = v
            .client_ip
            .as_deref()
            .and_then(|s| s.parse().ok())
            .or_else(|| a["envelope"]["ip"].as_str().and_then(|s| s.parse().ok()));
        let key = RowKey {
            source_ip,
            header_from: from_domain.clone(),
            envelope_from,
            envelope_to: v
                .recipients
                .first()
                .and_then(|r| r.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase()),
            disposition,
            dmarc_dkim: aligned.contains(&"dkim"),
            dmarc_spf: aligned.contains(&"spf"),
            reason,
            dkim,
            spf,
        };
        *out.entry(from_domain).or_default().entry(key).or_insert(0) += 1;
    }
    out
}

/// A domain's DMARC record as found by the tree walk.
#[derive(Debug, Clone)]
pub struct FoundPolicy {
    /// Where the record is (the policy domain of the report).
    pub domain: String,
    pub record: Dmarc,
}

/// Looks up the DMARC record for `from_domain`: `_dmarc.<name>` for the domain, then each
/// parent, at most [`MAX_TREE_WALK`] names. `Err` for a DNS failure (try again later), `Ok(None)`
/// when no name has a record.
pub async fn find_policy(dns: &Dns, from_domain: &str) -> Result<Option<FoundPolicy>, String> {
    let Some(auth) = dns.authenticator() else {
        return Err("DNS is off (offline): no DMARC record can be read".into());
    };
    let labels: Vec<&str> = from_domain.split('.').filter(|l| !l.is_empty()).collect();
    for start in 0..labels.len().saturating_sub(1).min(MAX_TREE_WALK) {
        let name = labels[start..].join(".");
        let q = tokio::time::timeout(
            dns.timeout(),
            auth.txt_raw_lookup(format!("_dmarc.{name}.")),
        )
        .await;
        let txt = match q {
            Err(_) => return Err(format!("_dmarc.{name}: DNS timed out")),
            Ok(Err(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(_)))) => continue,
            Ok(Err(e)) => return Err(format!("_dmarc.{name}: {e}")),
            Ok(Ok(t)) => t,
        };
        if !txt.starts_with(b"v=DMARC1") {
            continue;
        }
        if let Ok(record) = Dmarc::parse(&txt) {
            return Ok(Some(FoundPolicy {
                domain: name,
                record,
            }));
        }
    }
    Ok(None)
}

/// Who we are in the reports we send.
#[derive(Debug, Clone)]
pub struct Submitter {
    pub org_name: String,
    pub email: String,
    pub contact: Option<String>,
}

impl Submitter {
    pub fn from_config(c: &DmarcConfig) -> Self {
        Submitter {
            org_name: c.org_name.clone(),
            email: c.from.clone(),
            contact: c.contact.clone(),
        }
    }
}

/// Builds mail-auth's report for one policy domain and day from the counted rows of every From
/// domain under it.
pub fn build_report(
    submitter: &Submitter,
    policy: &FoundPolicy,
    report_id: &str,
    day: i64,
    rows: &[(&RowKey, u32)],
) -> Report {
    let mut report = Report::new()
        .with_version(1.0)
        .with_org_name(submitter.org_name.clone())
        .with_email(submitter.email.clone())
        .with_report_id(report_id)
        .with_date_range_begin((day * 86_400) as u64)
        .with_date_range_end((day * 86_400 + 86_399) as u64)
        .with_generator(format!("unspoof {}", env!("CARGO_PKG_VERSION")))
        .with_policy_published(PolicyPublished::from_record(
            policy.domain.clone(),
            &policy.record,
        ));
    if let Some(c) = &submitter.contact {
        report = report.with_extra_contact_info(c.clone());
    }
    for (key, count) in rows {
        report.add_record(record(key, *count));
    }
    report
}

fn record(k: &RowKey, count: u32) -> Record {
    Record {
        row: Row {
            source_ip: k.source_ip,
            count,
            policy_evaluated: PolicyEvaluated {
                disposition: match k.disposition {
                    "pass" => ActionDisposition::Pass,
                    "reject" => ActionDisposition::Reject,
                    "quarantine" => ActionDisposition::Quarantine,
                    _ => ActionDisposition::None,
                },
                dkim: if k.dmarc_dkim {
                    DmarcResult::Pass
                } else {
                    DmarcResult::Fail
                },
                spf: if k.dmarc_spf {
                    DmarcResult::Pass
                } else {
                    DmarcResult::Fail
                },
                reason: k
                    .reason
                    .map(|r| PolicyOverrideReason {
                        type_: if r == "policy_test_mode" {
                            PolicyOverride::PolicyTestMode
                        } else {
                            PolicyOverride::LocalPolicy
                        },
                        comment: None,
                    })
                    .into_iter()
                    .collect(),
            },
        },
        identifiers: Identifier {
            envelope_to: k.envelope_to.clone(),
            envelope_from: k.envelope_from.clone(),
            header_from: k.header_from.clone(),
        },
        auth_results: AuthResult {
            dkim: k
                .dkim
                .iter()
                .map(|(d, s, r)| DKIMAuthResult {
                    domain: d.clone(),
                    selector: s.clone(),
                    result: match r.as_str() {
                        "pass" => DkimResult::Pass,
                        "fail" => DkimResult::Fail,
                        "neutral" => DkimResult::Neutral,
                        "temperror" => DkimResult::TempError,
                        "permerror" => DkimResult::PermError,
                        "policy" => DkimResult::Policy,
                        _ => DkimResult::None,
                    },
                    human_result: None,
                })
                .collect(),
            spf: k
                .spf
                .iter()
                .map(|(d, scope, r)| SPFAuthResult {
                    domain: d.clone(),
                    scope: if *scope == "helo" {
                        SPFDomainScope::Helo
                    } else {
                        SPFDomainScope::MailFrom
                    },
                    result: match r.as_str() {
                        "pass" => SpfResult::Pass,
                        "fail" => SpfResult::Fail,
                        "softfail" => SpfResult::SoftFail,
                        "neutral" => SpfResult::Neutral,
                        "temperror" => SpfResult::TempError,
                        "permerror" => SpfResult::PermError,
                        _ => SpfResult::None,
                    },
                    human_result: None,
                })
                .collect(),
        },
        extensions: Vec::new(),
    }
}

/// gzip at the default level (this copy goes over the wire).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// One report ready to mail: its XML gzip'd, and the file name RFC 9990 asks for.
#[derive(Debug, Clone)]
pub struct ReportPart {
    pub report_id: String,
    pub file_name: String,
    pub gz: Vec<u8>,
    pub records: usize,
    pub messages: u64,
}

/// The report as one or more parts each at most `max_bytes` gzip'd: when the whole is larger,
/// its records are split over several complete reports (same policy and date range, report ids
/// `<id>.1`, `<id>.2`, ...), halving the records per part until every part fits. A single
/// record that does not fit is an error.
pub fn split(
    report: &Report,
    submitter: &str,
    max_bytes: usize,
) -> Result<Vec<ReportPart>, String> {
    let part = |r: &Report, unique: Option<&str>| {
        let gz = gzip(r.to_xml().as_bytes());
        ReportPart {
            report_id: r.report_id().to_string(),
            // RFC 9990: receiver "!" policy-domain "!" begin "!" end [ "!" unique-id ] ".xml.gz"
            file_name: format!(
                "{submitter}!{}!{}!{}{}.xml.gz",
                r.domain(),
                r.date_range_begin(),
                r.date_range_end(),
                unique.map(|u| format!("!{u}")).unwrap_or_default()
            ),
            gz,
            records: r.records().len(),
            messages: r.records().iter().map(|x| u64::from(x.row.count)).sum(),
        }
    };
    let whole = part(report, None);
    if whole.gz.len() <= max_bytes {
        return Ok(vec![whole]);
    }
    let records = report.records();
    let mut per_part = records.len().div_ceil(2).max(1);
    loop {
        let chunks: Vec<&[Record]> = records.chunks(per_part).collect();
        let mut parts = Vec::with_capacity(chunks.len());
        let mut fits = true;
        for (i, chunk) in chunks.iter().enumerate() {
            let id = format!("{}.{}", report.report_id(), i + 1);
            let mut r = report.clone();
            r.record = chunk.to_vec();
            r.report_metadata = ReportMetadata {
                report_id: id.clone(),
                ..report.report_metadata.clone()
            };
            let p = part(&r, Some(&(i + 1).to_string()));
            if p.gz.len() > max_bytes {
                fits = false;
                break;
            }
            parts.push(p);
        }
        if fits {
            return Ok(parts);
        }
        if per_part == 1 {
            return Err(format!(
                "one record of the report is larger than {max_bytes} octets gzip'd"
            ));
        }
        per_part = per_part.div_ceil(2);
    }
}

/// The mail carrying one report part to `to` (RFC 9990 section 3.2.1: Subject
/// `Report Domain: <domain> Submitter: <submitter> Report-ID: <id>`, the gzip'd XML as
/// `application/gzip`, a text part for people), unsigned. Ends in CRLF.
pub fn report_mail(
    submitter: &Submitter,
    domain: &str,
    part: &ReportPart,
    to: &str,
    now: i64,
) -> Vec<u8> {
    let submitter_domain = submitter
        .email
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("localhost");
    MessageBuilder::new()
        .from(submitter.email.as_str())
        .to(to)
        // Raw, folded only at the spaces the ABNF allows (1*FWS): mail-builder's own Subject
        // would RFC 2047-encode it, and receivers match the plain words.
        .header(
            "Subject",
            HeaderType::Raw(Raw::new(format!(
                "Report Domain: {domain}\r\n Submitter: {}\r\n Report-ID: <{}>",
                submitter.org_name, part.report_id
            ))),
        )
        .date(now)
        .message_id(format!("{}@{submitter_domain}", uuid::Uuid::now_v7()))
        .header("Auto-Submitted", HeaderType::Text("auto-generated".into()))
        .text_body(format!(
            "DMARC aggregate report (RFC 9990) from {} for {domain}.\r\n\r\n\
             Report-ID: {}\r\nMessages: {}\r\nRecords: {}\r\n",
            submitter.org_name, part.report_id, part.messages, part.records
        ))
        .attachment("application/gzip", part.file_name.clone(), part.gz.clone())
        .write_to_vec()
        .unwrap_or_default()
}

/// Policy domain to its record and the counted rows of every From domain under it.
pub type ByPolicy<'a> = BTreeMap<String, (FoundPolicy, Vec<(&'a RowKey, u32)>)>;

/// From-domain rows grouped under the policy domains found for them, and the From domains
/// left out with why.
pub async fn group_by_policy<'a>(
    dns: &Dns,
    rows: &'a BTreeMap<String, DomainRows>,
) -> (ByPolicy<'a>, Vec<(String, String)>) {
    let mut by_policy: ByPolicy<'a> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut cache: HashMap<String, Option<FoundPolicy>> = HashMap::new();
    for (from_domain, counted) in rows {
        let found = match cache.get(from_domain) {
            Some(f) => f.clone(),
            None => match find_policy(dns, from_domain).await {
                Ok(f) => {
                    cache.insert(from_domain.clone(), f.clone());
                    f
                }
                Err(e) => {
                    problems.push((from_domain.clone(), e));
                    continue;
                }
            },
        };
        let Some(found) = found else {
            problems.push((
                from_domain.clone(),
                "no DMARC record any more: nothing to report to".into(),
            ));
            continue;
        };
        let entry = by_policy
            .entry(found.domain.clone())
            .or_insert_with(|| (found.clone(), Vec::new()));
        entry.1.extend(counted.iter().map(|(k, n)| (k, *n)));
    }
    (by_policy, problems)
}
