//! Reports into the store: files and folders (XML, .gz, .zip, .eml), mbox files and Maildir
//! folders. An input is read whole before anything of it is stored; it is stored whole (every
//! report in it) or kept aside whole (the bytes and the error, in `dmarc_rejected`), never
//! half. Inputs go to the store in batches of [`DmarcConfig::batch_inputs`], one transaction
//! each, and the store skips a report it already has (same reporter, report id, policy domain,
//! date range) and an input it already kept aside (same bytes): ingesting twice stores once.

use std::io::Write;
use std::path::{Path, PathBuf};

use mail_auth::report::{
    ActionDisposition, Alignment, Discovery, Disposition, DkimResult, DmarcResult, PolicyOverride,
    SPFDomainScope, SpfResult,
};
use unspoof_store::dmarc::{
    DmarcDkim, DmarcReason, DmarcRejected, DmarcReport, DmarcRow, DmarcSpf,
};
use unspoof_store::{Store, StoreError};

use crate::parse::ParsedReport;
use crate::{DmarcConfig, extract, parse_xml, sha256_hex};

/// What became of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputOutcome {
    /// Its reports were stored now: how many, and the messages they count.
    Stored { reports: usize, messages: u64 },
    /// Every report in it was already stored.
    Duplicate { reports: usize },
    /// Some reports new, some already stored.
    Partly {
        stored: usize,
        duplicates: usize,
        messages: u64,
    },
    /// It could not be read; kept aside with this error.
    Rejected(String),
    /// It could not be read, and was already kept aside before.
    RejectedAgain(String),
}

impl InputOutcome {
    pub fn is_rejected(&self) -> bool {
        matches!(
            self,
            InputOutcome::Rejected(_) | InputOutcome::RejectedAgain(_)
        )
    }
}

impl std::fmt::Display for InputOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputOutcome::Stored { reports, messages } => {
                write!(f, "stored {reports} report(s), {messages} message(s)")
            }
            InputOutcome::Duplicate { reports } => {
                write!(f, "already stored ({reports} report(s))")
            }
            InputOutcome::Partly {
                stored,
                duplicates,
                messages,
            } => write!(
                f,
                "stored {stored} report(s), {messages} message(s); {duplicates} already stored"
            ),
            InputOutcome::Rejected(e) => write!(f, "refused, kept aside: {e}"),
            InputOutcome::RejectedAgain(e) => write!(f, "refused (kept aside before): {e}"),
        }
    }
}

/// One input read: its reports, or why it is refused.
#[derive(Debug)]
pub struct ReadInput {
    pub source: String,
    pub result: Result<Vec<DmarcReport>, DmarcRejected>,
}

/// Reads one input into store records. No I/O: the caller stores them.
pub fn read_input(
    raw: &[u8],
    source: &str,
    config: &DmarcConfig,
    node: &str,
    now: i64,
) -> ReadInput {
    let result = extract(raw, config)
        .and_then(|payloads| {
            payloads
                .into_iter()
                .map(|p| {
                    let parsed = parse_xml(&p.xml).map_err(|e| {
                        if p.name == "input" {
                            e
                        } else {
                            format!("{}: {e}", p.name)
                        }
                    })?;
                    Ok(to_record(&parsed, &p.xml, p.gz, source, node, now))
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .map_err(|error| DmarcRejected {
            sha256: sha256_hex(raw),
            received_at: now,
            source: source.to_string(),
            error,
            raw: raw.to_vec(),
        });
    ReadInput {
        source: source.to_string(),
        result,
    }
}

/// Collects read inputs and stores them a batch at a time.
pub struct Ingestor {
    store: Store,
    config: DmarcConfig,
    node: String,
    pending: Vec<ReadInput>,
    /// Every input's outcome, in the order given.
    pub outcomes: Vec<(String, InputOutcome)>,
}

impl Ingestor {
    pub fn new(store: Store, config: DmarcConfig) -> Self {
        let node = store.config().node.clone();
        Ingestor {
            store,
            config,
            node,
            pending: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    pub fn config(&self) -> &DmarcConfig {
        &self.config
    }

    /// Reads an input and queues it; stores the batch when it is full. Returns the outcomes
    /// of the inputs stored by this call (empty while the batch fills).
    pub async fn add(
        &mut self,
        source: &str,
        raw: &[u8],
    ) -> Result<Vec<(String, InputOutcome)>, StoreError> {
        let read = read_input(raw, source, &self.config, &self.node, crate::now());
        self.pending.push(read);
        if self.pending.len() >= self.config.batch_inputs {
            return self.commit().await;
        }
        Ok(Vec::new())
    }

    /// Stores everything queued in one transaction. On `Err` nothing of the batch is stored
    /// and the batch stays queued (commit again to retry).
    pub async fn commit(&mut self) -> Result<Vec<(String, InputOutcome)>, StoreError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        // Moved out of the queue, not cloned (a report carries its XML and rows); the queue
        // keeps each input's source and how many reports it had, to answer per input.
        let mut reports = Vec::new();
        let mut rejected = Vec::new();
        let mut shape = Vec::with_capacity(self.pending.len());
        for r in self.pending.iter_mut() {
            match &mut r.result {
                Ok(rs) => {
                    shape.push(Ok(rs.len()));
                    reports.append(rs);
                }
                Err(j) => {
                    shape.push(Err(j.error.clone()));
                    rejected.push(std::mem::take(j));
                }
            }
        }
        let put = match self.store.dmarc_put(&reports, &rejected).await {
            Ok(p) => p,
            Err(e) => {
                // Put back, so that a retry of the commit stores the same batch.
                let mut reports = reports.into_iter();
                let mut rejected = rejected.into_iter();
                for (r, s) in self.pending.iter_mut().zip(&shape) {
                    match (&mut r.result, s) {
                        (Ok(rs), Ok(n)) => rs.extend(reports.by_ref().take(*n)),
                        (Err(j), Err(_)) => *j = rejected.next().unwrap_or_default(),
                        _ => {}
                    }
                }
                return Err(e);
            }
        };
        let (mut ri, mut ji) = (0, 0);
        let mut done = Vec::with_capacity(self.pending.len());
        for (r, s) in self.pending.drain(..).zip(shape) {
            let outcome = match s {
                Ok(n) => {
                    let rs = &reports[ri..ri + n];
                    let flags = &put.report_new[ri..ri + n];
                    ri += n;
                    let stored = flags.iter().filter(|f| **f).count();
                    let messages: u64 = rs
                        .iter()
                        .zip(flags)
                        .filter(|(_, f)| **f)
                        .map(|(r, _)| r.messages())
                        .sum();
                    match (stored, n - stored) {
                        (0, d) => InputOutcome::Duplicate { reports: d },
                        (s, 0) => InputOutcome::Stored {
                            reports: s,
                            messages,
                        },
                        (s, d) => InputOutcome::Partly {
                            stored: s,
                            duplicates: d,
                            messages,
                        },
                    }
                }
                Err(error) => {
                    let new = put.rejected_new[ji];
                    ji += 1;
                    if new {
                        InputOutcome::Rejected(error)
                    } else {
                        InputOutcome::RejectedAgain(error)
                    }
                }
            };
            done.push((r.source, outcome));
        }
        self.outcomes.extend(done.iter().cloned());
        Ok(done)
    }

    /// Ingests every input under `paths` (see [`inputs`]) and commits.
    pub async fn ingest_paths(&mut self, paths: &[PathBuf]) -> Result<(), IngestError> {
        for path in paths {
            for file in inputs(path).map_err(IngestError::Input)? {
                let raw = std::fs::read(&file)
                    .map_err(|e| IngestError::Input(format!("{}: {e}", file.display())))?;
                let name = file.display().to_string();
                if unspoof_engine::message::is_mbox(&raw) {
                    for (i, msg) in unspoof_engine::message::split_mbox(&raw)
                        .into_iter()
                        .enumerate()
                    {
                        self.add(&format!("{name}#{}", i + 1), &msg).await?;
                    }
                } else {
                    self.add(&name, &raw).await?;
                }
            }
        }
        self.commit().await?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Input(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The files an input path stands for: a file itself; a Maildir's `cur/` and `new/`; any other
/// folder's files, recursively, sorted by name (dot files skipped).
pub fn inputs(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let maildir: Vec<PathBuf> = ["cur", "new"]
        .iter()
        .map(|s| path.join(s))
        .filter(|p| p.is_dir())
        .collect();
    let mut out = Vec::new();
    if !maildir.is_empty() {
        for d in maildir {
            out.extend(files_in(&d, false)?);
        }
        return Ok(out);
    }
    files_in(path, true)
}

fn files_in(dir: &Path, recurse: bool) -> Result<Vec<PathBuf>, String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for p in entries {
        if p.is_dir() {
            if recurse {
                out.extend(files_in(&p, true)?);
            }
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(out)
}

/// A parsed report as the store keeps it.
/// `gz`: the gzip the XML came in, kept as it is (else the XML is compressed here).
pub fn to_record(
    parsed: &ParsedReport,
    xml: &[u8],
    gz: Option<Vec<u8>>,
    source: &str,
    node: &str,
    now: i64,
) -> DmarcReport {
    let r = &parsed.report;
    let meta = &r.report_metadata;
    let pp = &r.policy_published;
    let email = meta.email.trim();
    let mut reporter = meta.org_name.trim().to_ascii_lowercase();
    if reporter.is_empty() {
        reporter = email
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(email)
            .to_ascii_lowercase();
    }
    let policy = serde_json::json!({
        "domain": pp.domain,
        "adkim": alignment(pp.adkim),
        "aspf": alignment(pp.aspf),
        "p": disposition(pp.p),
        "sp": disposition(pp.sp),
        "np": disposition(pp.np),
        "pct": parsed.pct,
        "testing": pp.testing,
        "discovery_method": discovery(pp.discovery_method),
        "fo": pp.fo,
        "namespace": parsed.namespace,
    });
    let rows = r
        .record
        .iter()
        .enumerate()
        .map(|(n, rec)| {
            let pe = &rec.row.policy_evaluated;
            let id = &rec.identifiers;
            DmarcRow {
                source_ip: rec.row.source_ip,
                count: u64::from(rec.row.count),
                disposition: action(pe.disposition).to_string(),
                dmarc_dkim: dmarc_result(pe.dkim).to_string(),
                dmarc_spf: dmarc_result(pe.spf).to_string(),
                reasons: pe
                    .reason
                    .iter()
                    .enumerate()
                    .map(|(i, why)| DmarcReason {
                        kind: parsed
                            .reason_types
                            .get(n)
                            .and_then(|t| t.get(i))
                            .cloned()
                            .unwrap_or_else(|| reason(why.type_).to_string()),
                        comment: why.comment.clone().filter(|c| !c.trim().is_empty()),
                    })
                    .collect(),
                header_from: id.header_from.trim().to_ascii_lowercase(),
                envelope_from: Some(id.envelope_from.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty()),
                envelope_to: id
                    .envelope_to
                    .as_deref()
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty()),
                dkim: rec
                    .auth_results
                    .dkim
                    .iter()
                    .map(|d| DmarcDkim {
                        domain: d.domain.trim().to_ascii_lowercase(),
                        selector: d.selector.trim().to_string(),
                        result: dkim_result(d.result).to_string(),
                    })
                    .collect(),
                spf: rec
                    .auth_results
                    .spf
                    .iter()
                    .map(|s| DmarcSpf {
                        domain: s.domain.trim().to_ascii_lowercase(),
                        scope: match s.scope {
                            SPFDomainScope::Helo => "helo",
                            SPFDomainScope::MailFrom => "mfrom",
                            SPFDomainScope::Unspecified => "",
                        }
                        .to_string(),
                        result: spf_result(s.result).to_string(),
                    })
                    .collect(),
            }
        })
        .collect();
    DmarcReport {
        id: unspoof_store::new_id(),
        reporter,
        reporter_email: Some(email.to_string()).filter(|e| !e.is_empty()),
        report_id: meta.report_id.trim().to_string(),
        domain: pp.domain.trim().trim_end_matches('.').to_ascii_lowercase(),
        begin_at: meta.date_range.begin.min(i64::MAX as u64) as i64,
        end_at: meta.date_range.end.min(i64::MAX as u64) as i64,
        format: parsed.format.as_str().to_string(),
        generator: meta.generator.clone(),
        policy,
        errors: meta.error.clone(),
        source: source.to_string(),
        ingested_at: now,
        node: node.to_string(),
        xml_gz: gz.unwrap_or_else(|| gzip(xml)),
        rows,
    }
}

/// gzip at the fastest level: the copy kept for a person to read back, not for the wire.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn alignment(a: Alignment) -> Option<&'static str> {
    match a {
        Alignment::Relaxed => Some("r"),
        Alignment::Strict => Some("s"),
        Alignment::Unspecified => None,
    }
}

fn disposition(d: Disposition) -> Option<&'static str> {
    match d {
        Disposition::None => Some("none"),
        Disposition::Quarantine => Some("quarantine"),
        Disposition::Reject => Some("reject"),
        Disposition::Unspecified => None,
    }
}

fn discovery(d: Discovery) -> Option<&'static str> {
    match d {
        Discovery::Psl => Some("psl"),
        Discovery::Treewalk => Some("treewalk"),
        Discovery::Unspecified => None,
    }
}

fn action(a: ActionDisposition) -> &'static str {
    match a {
        ActionDisposition::None => "none",
        ActionDisposition::Pass => "pass",
        ActionDisposition::Quarantine => "quarantine",
        ActionDisposition::Reject => "reject",
        // Our reading refused a report without a known disposition.
        ActionDisposition::Unspecified => "none",
    }
}

fn dmarc_result(r: DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail | DmarcResult::Unspecified => "fail",
    }
}

fn reason(r: PolicyOverride) -> &'static str {
    match r {
        PolicyOverride::LocalPolicy => "local_policy",
        PolicyOverride::MailingList => "mailing_list",
        PolicyOverride::PolicyTestMode => "policy_test_mode",
        PolicyOverride::TrustedForwarder => "trusted_forwarder",
        // mail-auth 0.13.3 reads `forwarded` and `sampled_out` (RFC 7489) as `Other`.
        PolicyOverride::Other => "other",
    }
}

fn dkim_result(r: DkimResult) -> &'static str {
    match r {
        DkimResult::None => "none",
        DkimResult::Pass => "pass",
        DkimResult::Fail => "fail",
        DkimResult::Policy => "policy",
        DkimResult::Neutral => "neutral",
        DkimResult::TempError => "temperror",
        DkimResult::PermError => "permerror",
    }
}

fn spf_result(r: SpfResult) -> &'static str {
    match r {
        SpfResult::None => "none",
        SpfResult::Neutral => "neutral",
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
    }
}
