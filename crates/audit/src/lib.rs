//! `unspoof audit`: how spoofable a domain is, and whether its single point of entry is real.
//!
//! Trust level: reads DNS through the engine's view and talks to the audited domain's own hosts
//! (port 25 of each MX for STARTTLS, HTTPS on `mta-sts.<domain>`); every byte they send is
//! untrusted and bounded by a named limit; it writes nothing.
//!
//! [`audit`] runs every check on one domain and returns a [`Report`]: findings, each naming
//! its RFC or provider rule and the DNS record to publish instead, the SPF tree, the bulk-sender
//! table, the registered lookalikes and a grade ([`grade`]). A check that cannot run (DNS
//! failure, query budget spent, host unreachable) is a finding of its own: nothing unchecked
//! reads as clean. docs/audit.md is the administrator's page.

pub mod bulk;
pub mod dkim;
pub mod dmarc;
pub mod dns;
pub mod entry;
pub mod grade;
pub mod lookalikes;
pub mod net;
pub mod spf;
pub mod transport;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use serde::Serialize;

pub use dns::Resolver;

/// Version of the JSON produced from [`Report`]s (`unspoof audit --json`). Bumped when a field
/// changes meaning or goes away.
pub const SCHEMA: &str = "unspoof.audit/1";

/// How bad a finding is. The exit code of `unspoof audit` is the worst one (README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; costs no points.
    Info,
    /// Weakens the protection or will break on some receivers.
    Warning,
    /// A check fails, or could not run: mail is at risk, or we cannot say it is not.
    Error,
    /// Anyone can send as the domain, or mail can go around the hub.
    Critical,
}

impl Severity {
    pub fn word(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// Which part of the audit a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Spf,
    Dmarc,
    Dkim,
    Entry,
    Transport,
    Bulk,
    Lookalike,
}

/// A DNS record to publish (or remove) instead of what is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// Owner name, absolute, with the final dot.
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    /// Record data in master-file form (TXT quoted, split at 255 octets).
    pub value: String,
    /// `publish`, `replace` (the record(s) of this type at this name) or `remove`.
    pub action: &'static str,
}

impl Fix {
    pub fn txt(name: &str, text: &str, action: &'static str) -> Self {
        Fix {
            name: absolute(name),
            rtype: "TXT".into(),
            value: quote_txt(text),
            action,
        }
    }

    pub fn record(name: &str, rtype: &str, value: impl Into<String>, action: &'static str) -> Self {
        Fix {
            name: absolute(name),
            rtype: rtype.into(),
            value: value.into(),
            action,
        }
    }

    /// The record as one master-file line.
    pub fn zone_line(&self) -> String {
        match self.action {
            "remove" => format!("; remove: {} IN {} {}", self.name, self.rtype, self.value),
            _ => format!("{} 3600 IN {} {}", self.name, self.rtype, self.value),
        }
    }
}

/// `name.` with one final dot.
pub fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// TXT data in master-file form: quoted character-strings of at most 255 octets.
pub fn quote_txt(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    for chunk in bytes.chunks(255) {
        let s = String::from_utf8_lossy(chunk)
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        parts.push(format!("\"{s}\""));
    }
    if parts.is_empty() {
        parts.push("\"\"".into());
    }
    parts.join(" ")
}

/// One thing the audit found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable code, `check.what` (docs/audit.md lists them all).
    pub code: &'static str,
    pub check: Check,
    pub severity: Severity,
    /// The RFC section or provider rule the check applies.
    pub rule: &'static str,
    /// What is wrong, in plain words.
    pub message: String,
    /// The DNS data it rests on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// What to publish instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<Fix>,
}

impl Finding {
    pub fn new(
        code: &'static str,
        check: Check,
        severity: Severity,
        rule: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            code,
            check,
            severity,
            rule,
            message: message.into(),
            evidence: Vec::new(),
            fix: Vec::new(),
        }
    }

    pub fn evidence(mut self, e: impl Into<String>) -> Self {
        self.evidence.push(e.into());
        self
    }

    pub fn fix(mut self, f: Fix) -> Self {
        self.fix.push(f);
        self
    }
}

/// Where to connect instead of where DNS points, like curl's `--connect-to`: `host:port` is
/// reached at `addr`. For tests and for auditing a host before DNS points at it; the TLS name
/// checked is still `host`.
#[derive(Debug, Clone)]
pub struct ConnectTo {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

impl std::str::FromStr for ConnectTo {
    type Err = String;
    /// `HOST:PORT:ADDR:PORT` (an IPv6 ADDR in brackets).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("\"{s}\" is not HOST:PORT:ADDRESS:PORT");
        let (host, rest) = s.split_once(':').ok_or_else(bad)?;
        let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
        Ok(ConnectTo {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
            addr,
        })
    }
}

/// A DKIM selector to look for, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selector {
    pub name: String,
    /// `config` (a key we sign with or the administrator named), `seen` (in mail the store
    /// recorded) or `common` (a name many providers use).
    pub source: &'static str,
    /// The key record this selector must publish, when the caller knows it (our own signing
    /// keys): the fix for a missing or wrong key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

/// Every limit of one audit, with its default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// DNS queries one domain's audit may send; past it the remaining checks say they could
    /// not run. Default 150.
    pub max_queries: u64,
    /// Lookalike candidates looked up (one or two queries each). Default 30.
    pub max_lookalikes: usize,
    /// SPF records followed through include/redirect, the whole tree (RFC 7208 allows 10
    /// lookups; the tree is shown past that). Default 40.
    pub max_spf_records: usize,
    /// Seconds to connect to a host (port 25, HTTPS). Default 5.
    pub connect_timeout: Duration,
    /// Seconds for a whole SMTP or HTTPS exchange once connected. Default 10.
    pub io_timeout: Duration,
    /// Largest MTA-STS policy body in octets (RFC 8461 3.3 suggests 64 KiB). Default 65536.
    pub max_policy_size: usize,
    /// Sending IPs checked for forward-confirmed reverse DNS. Default 8.
    pub max_sending_ips: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queries: 150,
            max_lookalikes: 30,
            max_spf_records: 40,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            max_policy_size: 65536,
            max_sending_ips: 8,
        }
    }
}

/// What the audit knows besides DNS.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The site's gateways as MX records must name them (`[gateway] gateway_names`). Empty:
    /// the single-point-of-entry check cannot run and says so.
    pub gateway_names: Vec<String>,
    /// DKIM selectors to look up besides [`dkim::COMMON_SELECTORS`].
    pub selectors: Vec<Selector>,
    /// Addresses the domain sends from (FCrDNS, bulk-sender rules). Empty: the gateways'
    /// addresses, else the MX hosts'.
    pub sending_ips: Vec<IpAddr>,
    /// Connect to the MX hosts and to mta-sts.<domain> (STARTTLS, MTA-STS policy, DANE match).
    pub probe: bool,
    /// Look for registered lookalike domains.
    pub lookalikes: bool,
    pub connect_to: Vec<ConnectTo>,
    /// Extra trust anchors for HTTPS and STARTTLS certificates (DER), besides the Mozilla set.
    pub extra_roots: Vec<Vec<u8>>,
    /// Our name in EHLO when probing an MX (default `localhost`).
    pub helo_name: String,
    pub limits: Limits,
}

/// The audit of one domain.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub domain: String,
    pub grade: grade::Grade,
    pub findings: Vec<Finding>,
    pub spf: spf::SpfReport,
    pub dmarc: dmarc::DmarcReport,
    pub dkim: Vec<dkim::KeyReport>,
    pub entry: entry::EntryReport,
    pub transport: transport::TransportReport,
    pub bulk_sender: Vec<bulk::Row>,
    pub lookalikes: lookalikes::LookalikeReport,
    pub dns: DnsSummary,
}

impl Report {
    /// The worst severity among the findings (`Info` when there are none).
    pub fn worst(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Info)
    }
}

/// The DNS cost of the audit.
#[derive(Debug, Clone, Serialize)]
pub struct DnsSummary {
    pub view: String,
    pub queries: u64,
    pub budget: u64,
    /// Whether the resolver is on loopback, so its AD bit can be believed.
    pub resolver_on_loopback: bool,
    pub elapsed_ms: u128,
    pub sent: Vec<dns::Sent>,
}

/// Audits `domain` through `view`.
pub async fn audit(view: &unspoof_engine::Dns, domain: &str, options: &Options) -> Report {
    let resolver = Resolver::new(view, options.limits.max_queries);
    audit_with(&resolver, domain, options).await
}

/// Audits `domain` with a resolver the caller made (and can inspect afterwards).
pub async fn audit_with(resolver: &Resolver, domain: &str, options: &Options) -> Report {
    let started = Instant::now();
    let domain = dns::normalise(domain).unwrap_or_else(|| domain.trim().to_ascii_lowercase());
    let mut findings = Vec::new();

    // One check after the other: they share names (the domain's TXT), and asked at once both
    // would send the same query; in order, the second reads the first's answer and the queries
    // sent are the same on every run.
    let spf = spf::check(resolver, &domain, options).await;
    let dmarc = dmarc::check(resolver, &domain).await;
    let dkim = dkim::check(resolver, &domain, options).await;
    let entry = entry::check(resolver, &domain, options, &spf).await;
    let transport = transport::check(resolver, &domain, options, &entry, &dmarc).await;
    let dmarc_subdomains = dmarc::subdomains(resolver, &domain, &dmarc, &entry, options).await;
    let lookalikes = if options.lookalikes {
        lookalikes::check(resolver, &domain, options.limits.max_lookalikes).await
    } else {
        lookalikes::LookalikeReport::skipped()
    };

    findings.extend(spf.findings.iter().cloned());
    findings.extend(dmarc.findings.iter().cloned());
    findings.extend(dmarc_subdomains);
    findings.extend(dkim::findings(&dkim, &domain, options));
    findings.extend(entry.findings.iter().cloned());
    findings.extend(transport.findings.iter().cloned());
    findings.extend(lookalikes.findings.iter().cloned());
    let bulk_sender = bulk::table(&spf, &dmarc, &dkim, &entry);
    findings.extend(bulk::findings(&bulk_sender));
    let grade = grade::grade(&findings);

    Report {
        schema: SCHEMA,
        domain,
        grade,
        findings,
        spf,
        dmarc,
        dkim,
        entry,
        transport,
        bulk_sender,
        lookalikes,
        dns: DnsSummary {
            view: resolver.description().to_string(),
            queries: resolver.queries(),
            budget: resolver.budget(),
            resolver_on_loopback: resolver.servers_on_loopback(),
            elapsed_ms: started.elapsed().as_millis(),
            sent: resolver.sent(),
        },
    }
}

/// The same name, compared as DNS compares: case-insensitive, the root dot ignored.
pub fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Whether `name` is `domain` or below it.
pub fn is_at_or_below(name: &str, domain: &str) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    n == d || n.ends_with(&format!(".{d}"))
}
