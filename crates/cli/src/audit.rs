//! `unspoof audit DOMAIN...`: how spoofable each domain is and whether its single point of
//! entry is real (crates/audit decides; this file gathers what the site's configuration knows,
//! prints the report, and turns the worst finding into the exit code).

use std::{
    io::{IsTerminal, Write},
    net::IpAddr,
    path::PathBuf,
};

use clap::Args;
use unspoof_audit::{ConnectTo, Options, Report, Selector, Severity};

use crate::{analyze::DnsArgs, exit};

#[derive(Args)]
pub struct AuditArgs {
    /// The domains to audit (default: the configuration's `protected_domains`).
    pub domains: Vec<String>,
    /// Print one JSON object per domain (schema `unspoof.audit/1`) instead of the report.
    #[arg(long)]
    pub json: bool,
    /// unspoof.toml: the site's gateways (`[gateway] gateway_names`, else `hostname`), its DKIM
    /// keys (`[[gateway.dkim]]`) and its EHLO name.
    #[arg(long, alias = "policy", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A gateway name every MX must be (repeatable; adds to the configuration's).
    #[arg(long = "gateway", value_name = "HOST")]
    pub gateways: Vec<String>,
    /// A DKIM selector to look up (repeatable), besides the configured and common ones.
    #[arg(long = "selector", value_name = "NAME")]
    pub selectors: Vec<String>,
    /// An address the domain sends mail from (repeatable; default: the gateways' addresses).
    #[arg(long = "sending-ip", value_name = "IP")]
    pub sending_ips: Vec<IpAddr>,
    /// DNS only: connect to no host (no STARTTLS, MTA-STS policy or DANE match).
    #[arg(long = "no-probe")]
    pub no_probe: bool,
    /// Do not look for registered lookalike domains.
    #[arg(long = "no-lookalikes")]
    pub no_lookalikes: bool,
    /// DNS queries one domain's audit may send.
    #[arg(long = "max-queries", default_value_t = 150)]
    pub max_queries: u64,
    /// Connect to ADDRESS:PORT whenever HOST:PORT is meant, like curl's --connect-to
    /// (HOST:PORT:ADDRESS:PORT, repeatable): for a host DNS does not name yet, and for tests.
    #[arg(long = "connect-to", value_name = "HOST:PORT:ADDR:PORT")]
    pub connect_to: Vec<ConnectTo>,
    /// PEM file of extra trust anchors for the MTA-STS HTTPS server and the MX certificates
    /// (repeatable), besides the Mozilla roots: a private CA, or a test's.
    #[arg(long = "ca-file", value_name = "PEM")]
    pub ca_files: Vec<PathBuf>,
    /// The store whose recorded mail names DKIM selectors seen for the domain (URL, as for
    /// `unspoof log`); read only when given.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// The data directory of a SQLite store to read selectors from (with or without --store).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub dns: DnsArgs,
}

/// Exit code for the worst finding of all domains (README).
pub fn exit_code(worst: Severity) -> u8 {
    match worst {
        Severity::Info => exit::ACCEPT,
        Severity::Warning => exit::TAG,
        Severity::Error => exit::QUARANTINE,
        Severity::Critical => exit::REJECT,
    }
}

fn pem_certificates(path: &PathBuf) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut inside = false;
    let mut b64 = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            inside = true;
            b64.clear();
        } else if line == "-----END CERTIFICATE-----" {
            inside = false;
            let der = data_encoding::BASE64
                .decode(b64.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            out.push(der);
        } else if inside {
            b64.push_str(line);
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(out)
}

/// The newest records of mail from a domain read for the selectors they were signed with.
const MAX_SEEN_RECORDS: u32 = 200;

/// Selectors seen in DKIM signatures of recorded mail from `domain`.
async fn seen_selectors(args: &AuditArgs, domain: &str) -> Result<Vec<String>, String> {
    if args.store.is_none() && args.data_dir.is_none() {
        return Ok(Vec::new());
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./unspoof-data"));
    let mut config =
        unspoof_store::StoreConfig::new(args.store.clone().unwrap_or_default(), &data_dir);
    config.retention_days = None;
    let store = unspoof_store::Store::open(config)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let query = unspoof_store::Query {
        from_domain: Some(domain.to_string()),
        limit: Some(MAX_SEEN_RECORDS),
        ..Default::default()
    };
    // A search lists records without their DNS evidence: each is read whole.
    let listed = store
        .search(&query)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let mut out: Vec<String> = Vec::new();
    for listed in listed {
        let Some(r) = store
            .message(&listed.id)
            .await
            .map_err(|e| format!("store: {e}"))?
        else {
            continue;
        };
        let Some(dkim) = r
            .dns
            .as_ref()
            .and_then(|d| d.get("dkim"))
            .and_then(|d| d.as_array())
        else {
            continue;
        };
        for sig in dkim {
            let d = sig.get("domain").and_then(|v| v.as_str()).unwrap_or("");
            let s = sig.get("selector").and_then(|v| v.as_str()).unwrap_or("");
            if unspoof_audit::same_name(d, domain) && !s.is_empty() && !out.iter().any(|x| x == s) {
                out.push(s.to_string());
            }
        }
    }
    store.close().await;
    Ok(out)
}

pub fn run(args: AuditArgs) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unspoof: {e}");
            return exit::SOFTWARE;
        }
    };
    rt.block_on(run_async(args))
}

async fn run_async(args: AuditArgs) -> u8 {
    let mut domains = args.domains.clone();
    let mut options = Options {
        probe: !args.no_probe,
        lookalikes: !args.no_lookalikes,
        sending_ips: args.sending_ips.clone(),
        connect_to: args.connect_to.clone(),
        helo_name: "localhost".into(),
        ..Default::default()
    };
    options.limits.max_queries = args.max_queries;
    let mut configured_keys: Vec<(String, Selector)> = Vec::new();
    if let Some(path) = &args.config {
        // As `unspoof serve` reads it: [gateway] hostname, else the top-level hostname.
        let site = match crate::serve::serve_config(Some(path)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("unspoof: {e}");
                return crate::serve::config_exit(&e);
            }
        };
        let gateway = &site.gateway;
        options.gateway_names = gateway.gateways();
        options.helo_name = gateway.hostname.clone();
        if domains.is_empty() && site.sets("protected_domains") {
            domains = site.policy.protected_domains.clone();
        }
        for k in &gateway.dkim {
            let record = match unspoof_gateway::dkim::public_record(k) {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!(
                        "unspoof: warning: {e}: the fix for selector {} cannot name its record",
                        k.selector
                    );
                    None
                }
            };
            configured_keys.push((
                k.domain.to_ascii_lowercase(),
                Selector {
                    name: k.selector.clone(),
                    source: "config",
                    record,
                },
            ));
        }
    }
    for g in &args.gateways {
        let g = g.trim_end_matches('.').to_ascii_lowercase();
        if !options.gateway_names.contains(&g) {
            options.gateway_names.push(g);
        }
    }
    for path in &args.ca_files {
        match pem_certificates(path) {
            Ok(certs) => options.extra_roots.extend(certs),
            Err(e) => {
                eprintln!("unspoof: {e}");
                return exit::NO_INPUT;
            }
        }
    }
    if domains.is_empty() {
        eprintln!("unspoof: name the domains to audit, or --config a file with protected_domains");
        return exit::USAGE;
    }
    let view = match crate::analyze::dns_view(&args.dns).await {
        Ok(v) => v,
        Err((code, e)) => {
            eprintln!("unspoof: {e}");
            return code;
        }
    };

    let mut worst = Severity::Info;
    let colour = !args.json && std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    for domain in &domains {
        let Some(d) = unspoof_audit::dns::normalise(domain) else {
            eprintln!("unspoof: {domain:?} is not a domain name");
            return exit::USAGE;
        };
        let mut o = options.clone();
        o.selectors = configured_keys
            .iter()
            .filter(|(kd, _)| *kd == d)
            .map(|(_, s)| s.clone())
            .collect();
        for s in &args.selectors {
            o.selectors.push(Selector {
                name: s.clone(),
                source: "config",
                record: None,
            });
        }
        match seen_selectors(&args, &d).await {
            Ok(seen) => o.selectors.extend(seen.into_iter().map(|name| Selector {
                name,
                source: "seen",
                record: None,
            })),
            Err(e) => {
                eprintln!("unspoof: {e}");
                return exit::CONFIG;
            }
        }
        let report = unspoof_audit::audit(&view, &d, &o).await;
        worst = worst.max(report.worst());
        let written = if args.json {
            serde_json::to_string(&report)
                .map_err(std::io::Error::other)
                .and_then(|j| writeln!(out, "{j}"))
        } else {
            render(&mut out, &report, colour)
        };
        if written.is_err() {
            return exit::SOFTWARE;
        }
    }
    exit_code(worst)
}

/// Control characters from DNS and from servers are neutralised: a hostile record cannot
/// rewrite the administrator's screen.
fn safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

fn paint(colour: bool, code: &str, text: &str) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn severity(colour: bool, s: Severity) -> String {
    let word = format!("{:<8}", s.word().to_ascii_uppercase());
    match s {
        Severity::Critical => paint(colour, "1;31", &word),
        Severity::Error => paint(colour, "31", &word),
        Severity::Warning => paint(colour, "33", &word),
        Severity::Info => paint(colour, "2", &word),
    }
}

fn render_node(
    out: &mut impl Write,
    n: &unspoof_audit::spf::SpfNode,
    depth: usize,
) -> std::io::Result<()> {
    let pad = "  ".repeat(depth + 1);
    let cost = if n.via == "record" {
        String::new()
    } else {
        format!("  [costs {}]", n.cost)
    };
    writeln!(out, "{pad}{} {}{cost}", n.via, safe(&n.domain))?;
    if let Some(r) = &n.record {
        writeln!(out, "{pad}  \"{}\"", safe(r))?;
    }
    if let Some(p) = &n.problem {
        writeln!(out, "{pad}  ! {}", safe(p))?;
    }
    if !n.voids.is_empty() {
        writeln!(out, "{pad}  void lookups: {}", safe(&n.voids.join(", ")))?;
    }
    for c in &n.children {
        render_node(out, c, depth + 1)?;
    }
    Ok(())
}

pub fn render(out: &mut impl Write, r: &Report, colour: bool) -> std::io::Result<()> {
    let g = &r.grade;
    writeln!(
        out,
        "{}  grade {} ({}/100)   {} DNS queries via {}, {} ms",
        paint(colour, "1", &r.domain),
        paint(colour, "1", &g.letter.to_string()),
        g.score,
        r.dns.queries,
        safe(&r.dns.view),
        r.dns.elapsed_ms
    )?;
    writeln!(out)?;
    if r.findings.is_empty() {
        writeln!(out, "No findings.")?;
    } else {
        writeln!(out, "Findings")?;
    }
    let mut sorted: Vec<_> = r.findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    for f in sorted {
        writeln!(
            out,
            "  {} {}  {}  [{}]",
            severity(colour, f.severity),
            f.code,
            safe(&f.message),
            f.rule
        )?;
        for e in &f.evidence {
            writeln!(out, "           seen:     {}", safe(e))?;
        }
        for x in &f.fix {
            writeln!(
                out,
                "           {:<9} {}",
                format!("{}:", x.action),
                safe(&x.zone_line())
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "SPF    {} lookups (limit {}), {} void (limit {})",
        r.spf.lookups,
        unspoof_audit::spf::MAX_LOOKUPS,
        r.spf.void_lookups,
        unspoof_audit::spf::MAX_VOID_LOOKUPS
    )?;
    if let Some(t) = &r.spf.tree {
        render_node(out, t, 0)?;
    }
    let d = &r.dmarc;
    match &d.record {
        Some(rec) => writeln!(
            out,
            "DMARC  {}: p={} sp={} np={}{}  \"{}\"",
            d.found_at.as_deref().unwrap_or(""),
            d.p.as_deref().unwrap_or("-"),
            d.sp.as_deref().unwrap_or("-"),
            d.np.as_deref().unwrap_or("-"),
            if d.testing { " t=y" } else { "" },
            safe(rec)
        )?,
        None => writeln!(out, "DMARC  none")?,
    }
    for k in &r.dkim {
        writeln!(
            out,
            "DKIM   {} ({}): {}{}{}",
            safe(&k.selector),
            k.source,
            k.status,
            k.key_type
                .as_ref()
                .map(|t| format!(" {t}"))
                .unwrap_or_default(),
            k.bits.map(|b| format!(" {b} bits")).unwrap_or_default()
        )?;
    }
    if r.entry.null_mx {
        writeln!(out, "MX     null MX (receives no mail)")?;
    }
    for m in &r.entry.mx {
        let addrs: Vec<String> = m.addresses.iter().map(|a| a.to_string()).collect();
        let role = match m.gateway {
            Some(true) => "gateway",
            Some(false) => "NOT a gateway",
            None => "gateways unknown",
        };
        let tls = match &m.probe {
            None => String::new(),
            Some(p) if p.tls => format!(
                ", STARTTLS {}{}",
                p.tls_version.as_deref().unwrap_or(""),
                match &p.pkix {
                    Some(Ok(())) => ", certificate valid".to_string(),
                    Some(Err(e)) => format!(", certificate not valid: {}", safe(e)),
                    None => String::new(),
                }
            ),
            Some(p) if p.starttls => ", STARTTLS offered, TLS failed".into(),
            Some(p) if p.reached => ", no STARTTLS".into(),
            Some(_) => ", unreachable".into(),
        };
        writeln!(
            out,
            "MX     {} {} [{}] {role}{tls}",
            m.preference,
            safe(&m.host),
            addrs.join(", ")
        )?;
    }
    for s in &r.entry.sending {
        writeln!(
            out,
            "PTR    {} -> {} ({})",
            s.ip,
            safe(&s.names.join(", ")),
            match &s.confirmed {
                Some(n) => format!("confirmed by {}", safe(n)),
                None => "not forward-confirmed".into(),
            }
        )?;
    }
    let t = &r.transport;
    writeln!(
        out,
        "TLS    MTA-STS {}; TLS-RPT {}; DANE {}; BIMI {}",
        t.mta_sts_policy
            .as_ref()
            .and_then(|p| p.mode.clone())
            .or_else(|| t.mta_sts_record.as_ref().map(|_| "record only".into()))
            .unwrap_or_else(|| "none".into()),
        if t.tls_rpt.is_some() { "yes" } else { "none" },
        if t.dane.is_empty() {
            "none".to_string()
        } else {
            t.dane
                .iter()
                .map(|d| {
                    format!(
                        "{} {}",
                        safe(&d.host),
                        match d.matches {
                            Some(true) => "matches",
                            Some(false) => "MISMATCH",
                            None => "not probed",
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
        if t.bimi.is_some() { "yes" } else { "none" }
    )?;
    writeln!(out)?;
    writeln!(out, "Bulk-sender rules ({})", unspoof_audit::bulk::RULE)?;
    for row in &r.bulk_sender {
        writeln!(
            out,
            "  {:<8} {}: {}",
            row.status,
            row.requirement,
            safe(&row.detail)
        )?;
    }
    if r.lookalikes.checked {
        writeln!(
            out,
            "\nLookalikes: {} candidates, {} looked up, {} registered",
            r.lookalikes.candidates,
            r.lookalikes.looked_up,
            r.lookalikes.registered.len()
        )?;
        for l in &r.lookalikes.registered {
            writeln!(out, "  {} ({}, {})", safe(&l.domain), l.kind, l.engine_code)?;
        }
    }
    if !g.lost.is_empty() {
        writeln!(out, "\nGrade {}: 100 points less", g.letter)?;
        for l in &g.lost {
            writeln!(out, "  -{:<3} {}: {}", l.points, l.code, safe(&l.reason))?;
        }
    }
    writeln!(out)?;
    Ok(())
}
