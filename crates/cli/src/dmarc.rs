//! `unspoof dmarc`: DMARC aggregate reports (RFC 9990). `ingest` reads the reports receivers
//! send us (files, folders, mbox, Maildir, an IMAP mailbox) into the store; `sources` shows who
//! sends as a domain; `send` builds, signs and sends our own reports as a receiver; `status`
//! lists what was sent, refused and suppressed. The work is `unspoof-reports`'; this file maps
//! arguments to it and outcomes to exit codes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use unspoof_reports::DmarcConfig;
use unspoof_reports::send::{NoSigner, Signer};
use unspoof_store::{Store, StoreConfig};

use crate::config::Config;

use crate::analyze::{DnsArgs, dns_view};
use crate::exit;
use crate::log::{StoreArgs, format_time, parse_time, runtime};

#[derive(Subcommand)]
pub enum DmarcCommand {
    /// Read aggregate reports (XML, .gz, .zip, mails, mbox, Maildir, IMAP) into the store.
    Ingest(IngestArgs),
    /// Who sends as a domain: every source with volume, aligned pass rates and its class.
    Sources(SourcesArgs),
    /// Build, sign and send our aggregate reports for one day (one per policy domain).
    Send(SendArgs),
    /// Reports stored, inputs refused, reports sent and suppressed addresses.
    Status(StatusArgs),
}

/// The configuration file and the store, shared by every `dmarc` command.
#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// `--config unspoof.toml`: its `[dmarc]` section (limits, our report identity, relay),
    /// `[store]` and, for `send`, `[[gateway.dkim]]` keys.
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args)]
pub struct IngestArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// Files or folders: XML, .xml.gz, .zip, .eml, mbox files, Maildir folders.
    paths: Vec<PathBuf>,
    #[command(flatten)]
    imap: ImapArgs,
    /// One JSON object per input instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// An IMAP mailbox to read reports from.
#[derive(Args)]
pub struct ImapArgs {
    /// `imaps://user@host[:port]/mailbox` (`imap://` only to loopback).
    #[arg(long, value_name = "URL")]
    imap: Option<String>,
    /// File holding the IMAP password (else the environment's `UNSPOOF_IMAP_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    imap_password_file: Option<PathBuf>,
    /// PEM CA certificates to trust besides the public roots.
    #[arg(long, value_name = "FILE")]
    imap_ca: Option<PathBuf>,
    /// Folder that stored (and refused) report mails are moved to, after the commit.
    #[arg(long, value_name = "FOLDER", default_value = "unspoof-processed")]
    imap_move_to: String,
    /// Delete report mails after the commit instead of moving them.
    #[arg(long)]
    imap_delete: bool,
    /// Keep running: wait for new reports (IDLE, else polling), reconnect when the server
    /// goes away.
    #[arg(long)]
    imap_watch: bool,
    /// Seconds between polls and reconnect attempts with --imap-watch.
    #[arg(long, default_value_t = 60)]
    imap_poll: u64,
}

impl ImapArgs {
    fn settings(&self) -> Result<Option<unspoof_reports::imap::ImapSettings>, String> {
        let Some(url) = &self.imap else {
            return Ok(None);
        };
        let password = match &self.imap_password_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            None => std::env::var("UNSPOOF_IMAP_PASSWORD").map_err(|_| {
                "give the IMAP password in --imap-password-file or UNSPOOF_IMAP_PASSWORD"
                    .to_string()
            })?,
        };
        Ok(Some(unspoof_reports::imap::ImapSettings {
            url: url.clone(),
            password,
            ca_file: self.imap_ca.clone(),
            move_to: Some(self.imap_move_to.clone()),
            delete: self.imap_delete,
            watch: self.imap_watch,
            poll_secs: self.imap_poll,
        }))
    }
}

#[derive(Args)]
pub struct SourcesArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// The domain (its subdomains included).
    #[arg(long)]
    domain: String,
    /// Days back from now.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// The whole picture as one JSON object.
    #[arg(long)]
    json: bool,
    /// No reverse DNS lookups of the sources.
    #[arg(long)]
    no_dns: bool,
    #[command(flatten)]
    dns: DnsArgs,
}

#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// The UTC day to report: YYYY-MM-DD, `yesterday` (default) or `today` (a day not over
    /// yet misses its later mail: it is reported once).
    #[arg(long, default_value = "yesterday")]
    day: String,
    /// Act as if it were this time (Unix seconds or 2026-12-07T10:00:00Z): retries due by then
    /// are sent. Default: now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// SMTP relay host:port (overrides `[dmarc] relay`).
    #[arg(long)]
    relay: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dns: DnsArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    common: ConfigArgs,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

pub fn run(command: DmarcCommand) -> u8 {
    let Some(rt) = runtime() else {
        return exit::SOFTWARE;
    };
    rt.block_on(async {
        match command {
            DmarcCommand::Ingest(a) => ingest(a).await,
            DmarcCommand::Sources(a) => sources(a).await,
            DmarcCommand::Send(a) => send(a).await,
            DmarcCommand::Status(a) => status(a).await,
        }
    })
}

/// The `[dmarc]` section, the store settings and the whole file (or the defaults).
fn load(common: &ConfigArgs) -> Result<(DmarcConfig, StoreConfig, Config), u8> {
    match common.store.resolve(false) {
        Ok(located) => Ok((located.file.dmarc.clone(), located.store, located.file)),
        Err((code, e)) => {
            eprintln!("unspoof: {e}");
            Err(code)
        }
    }
}

async fn open(config: StoreConfig) -> Result<Store, u8> {
    Store::open(config).await.map_err(|e| {
        eprintln!("unspoof: store: {e}");
        exit::SOFTWARE
    })
}

async fn ingest(args: IngestArgs) -> u8 {
    let (config, store_config, _) = match load(&args.common) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.paths.is_empty() && args.imap.imap.is_none() {
        eprintln!("unspoof: give files or folders to read, or --imap");
        return exit::USAGE;
    }
    let store = match open(store_config).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut ingestor = unspoof_reports::Ingestor::new(store.clone(), config);
    let mut code = exit::ACCEPT;
    if !args.paths.is_empty()
        && let Err(e) = ingestor.ingest_paths(&args.paths).await
    {
        eprintln!("unspoof: {e}");
        code = match e {
            unspoof_reports::ingest::IngestError::Input(_) => exit::NO_INPUT,
            unspoof_reports::ingest::IngestError::Store(_) => exit::SOFTWARE,
        };
    }
    print_outcomes(&ingestor.outcomes, args.json);
    if code == exit::ACCEPT {
        match args.imap.settings() {
            Ok(None) => {}
            Ok(Some(settings)) => {
                let json = args.json;
                let mut print =
                    |o: &[(String, unspoof_reports::InputOutcome)]| print_outcomes(o, json);
                if let Err(e) =
                    unspoof_reports::imap::ingest(&settings, &mut ingestor, &mut print).await
                {
                    eprintln!("unspoof: IMAP: {e}");
                    code = exit::NO_INPUT;
                }
            }
            Err(e) => {
                eprintln!("unspoof: {e}");
                code = exit::USAGE;
            }
        }
    }
    store.close().await;
    let refused = ingestor
        .outcomes
        .iter()
        .filter(|(_, o)| o.is_rejected())
        .count();
    if !args.json {
        eprintln!(
            "unspoof dmarc ingest: {} input(s), {} refused (kept aside: `unspoof dmarc status`)",
            ingestor.outcomes.len(),
            refused
        );
    }
    if code == exit::ACCEPT && refused > 0 {
        exit::DATA
    } else {
        code
    }
}

fn print_outcomes(outcomes: &[(String, unspoof_reports::InputOutcome)], json: bool) {
    for (source, outcome) in outcomes {
        if json {
            let (status, detail) = match outcome {
                unspoof_reports::InputOutcome::Stored { .. } => ("stored", outcome.to_string()),
                unspoof_reports::InputOutcome::Partly { .. } => ("stored", outcome.to_string()),
                unspoof_reports::InputOutcome::Duplicate { .. } => {
                    ("duplicate", outcome.to_string())
                }
                unspoof_reports::InputOutcome::Rejected(e)
                | unspoof_reports::InputOutcome::RejectedAgain(e) => ("refused", e.clone()),
            };
            println!(
                "{}",
                serde_json::json!({ "input": source, "status": status, "detail": detail })
            );
        } else {
            println!("{source}: {outcome}");
        }
    }
}

async fn sources(args: SourcesArgs) -> u8 {
    let (_, store_config, _) = match load(&args.common) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open(store_config).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let until = unspoof_store::now();
    let since = until - i64::from(args.days) * 86_400;
    let rows = store.dmarc_rows(&args.domain, since, until).await;
    store.close().await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            eprintln!("unspoof: store: {e}");
            return exit::SOFTWARE;
        }
    };
    let mut names: HashMap<IpAddr, String> = HashMap::new();
    if !args.no_dns && !rows.is_empty() {
        match dns_view(&args.dns).await {
            Ok(dns) => {
                if let Some(auth) = dns.authenticator() {
                    let mut ips: Vec<IpAddr> =
                        rows.iter().filter_map(|r| r.row.source_ip).collect();
                    ips.sort();
                    ips.dedup();
                    for ip in ips {
                        let q =
                            tokio::time::timeout(dns.timeout(), auth.resolver().reverse_lookup(ip));
                        if let Ok(Ok(found)) = q.await
                            && let Some(name) = found.answers().iter().find_map(|r| match &r.data {
                                mail_auth::hickory_resolver::proto::rr::RData::PTR(p) => {
                                    Some(p.to_string())
                                }
                                _ => None,
                            })
                        {
                            names.insert(ip, name.trim_end_matches('.').to_string());
                        }
                    }
                }
            }
            Err((_, msg)) => eprintln!("unspoof: no reverse names: {msg}"),
        }
    }
    let domain = args
        .domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let picture = unspoof_reports::sources::picture(
        &domain,
        since,
        until,
        &rows,
        &|ip| names.get(&ip).cloned(),
        &|day| format_time(day * 86_400)[..10].to_string(),
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&picture).unwrap_or_default()
        );
    } else {
        print!("{}", render_picture(&picture, args.days));
    }
    exit::ACCEPT
}

fn pct(t: &unspoof_reports::sources::Tally, part: u64) -> String {
    format!("{}%", t.percent(part))
}

fn render_picture(p: &unspoof_reports::sources::Picture, days: u32) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let t = &p.totals;
    let _ = writeln!(
        o,
        "Who sends as {} (last {days} days, {} to {}): {} messages in {} reports from {} reporters",
        p.domain,
        &format_time(p.since)[..10],
        &format_time(p.until)[..10],
        t.messages,
        p.reports,
        p.reporters.len()
    );
    if t.messages == 0 {
        let _ = writeln!(o, "No report covers this domain in that time.");
        return o;
    }
    let _ = writeln!(
        o,
        "  passed DMARC: {} ({}); aligned DKIM pass {}; aligned SPF pass {}",
        t.dmarc_pass,
        pct(t, t.dmarc_pass),
        pct(t, t.dkim_aligned_pass),
        pct(t, t.spf_aligned_pass)
    );
    let _ = writeln!(
        o,
        "  ours (aligned) {}, forwarded {}, legitimate but misaligned {}, spoofing {}",
        t.ours, t.forwarded, t.misaligned, t.spoofing
    );
    let _ = writeln!(o, "\nSources, most mail first:");
    for s in &p.sources {
        let ip =
            s.ip.map(|i| i.to_string())
                .unwrap_or_else(|| "(no IP)".into());
        let name = s.reverse_name.as_deref().unwrap_or("no reverse name");
        let org = s.organisation.as_deref().unwrap_or("organisation unknown");
        let _ = writeln!(
            o,
            "  {ip}  {name} ({org}): {} messages, {}; aligned DKIM pass {}, aligned SPF pass {}",
            s.tally.messages,
            s.class.words(),
            pct(&s.tally, s.tally.dkim_aligned_pass),
            pct(&s.tally, s.tally.spf_aligned_pass)
        );
        let dkim: Vec<String> = s
            .dkim
            .iter()
            .map(|d| {
                format!(
                    "d={} s={} ({} pass, {} fail)",
                    d.domain,
                    if d.selectors.is_empty() {
                        "?".into()
                    } else {
                        d.selectors.join(",")
                    },
                    d.pass,
                    d.fail
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "      as {}; DKIM: {}; reported by {}",
            s.header_from.join(", "),
            if dkim.is_empty() {
                "unsigned".into()
            } else {
                dkim.join("; ")
            },
            s.reporters.join(", ")
        );
    }
    let line = |o: &mut String, k: &str, t: &unspoof_reports::sources::Tally| {
        let _ = writeln!(
            o,
            "  {k}: {} messages, {} passed DMARC; spoofing {}, misaligned {}, forwarded {}",
            t.messages,
            pct(t, t.dmarc_pass),
            t.spoofing,
            t.misaligned,
            t.forwarded
        );
    };
    let _ = writeln!(o, "\nBy reporter:");
    for r in &p.reporters {
        line(&mut o, &r.key, &r.tally);
    }
    let _ = writeln!(o, "\nBy day:");
    for d in &p.days {
        line(&mut o, &d.key, &d.tally);
    }
    let _ = writeln!(o, "\nDomains in the From header:");
    for s in &p.subdomains {
        let _ = writeln!(
            o,
            "  {}: {} messages, {} passed DMARC{}",
            s.name,
            s.tally.messages,
            pct(&s.tally, s.tally.dmarc_pass),
            if s.only_forged {
                ": only forged, nothing of ours sends as it"
            } else {
                ""
            }
        );
    }
    o
}

/// Our DKIM keys (`[[gateway.dkim]]`) as the reports' signer.
struct GatewaySigner(unspoof_gateway::dkim::DkimSigners);

impl Signer for GatewaySigner {
    fn sign(&self, domain: &str, message: &[u8]) -> Option<Result<String, String>> {
        self.0.sign(domain, message)
    }
}

/// The signer from the file's `[[gateway.dkim]]`, or none.
pub(crate) fn signer(file: &Config) -> Result<Box<dyn Signer>, String> {
    if file.gateway.dkim.is_empty() {
        return Ok(Box::new(NoSigner));
    }
    let signers =
        unspoof_gateway::dkim::DkimSigners::load(&file.gateway.dkim).map_err(|e| e.to_string())?;
    Ok(Box::new(GatewaySigner(signers)))
}

fn parse_day(s: &str, now: i64) -> Result<i64, String> {
    let today = unspoof_reports::day_of(now);
    match s {
        "today" => Ok(today),
        "yesterday" => Ok(today - 1),
        other => parse_time(other, now).map(unspoof_reports::day_of),
    }
}

async fn send(args: SendArgs) -> u8 {
    let (mut config, store_config, table) = match load(&args.common) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(r) = args.relay {
        config.relay = Some(r);
    }
    let now = match args
        .at
        .as_deref()
        .map(|t| parse_time(t, unspoof_store::now()))
    {
        None => unspoof_store::now(),
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("unspoof: --at: {e}");
            return exit::USAGE;
        }
    };
    let day = match parse_day(&args.day, now) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("unspoof: --day: {e}");
            return exit::USAGE;
        }
    };
    let signer = match signer(&table) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("unspoof: DKIM keys: {e}");
            return exit::CONFIG;
        }
    };
    let dns = match dns_view(&args.dns).await {
        Ok(d) => d,
        Err((code, msg)) => {
            eprintln!("unspoof: {msg}");
            return code;
        }
    };
    let store = match open(store_config).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result =
        unspoof_reports::send::send_day(&store, &dns, &config, signer.as_ref(), day, now).await;
    store.close().await;
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("unspoof: store: {e}");
            return exit::SOFTWARE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        print_summary(&summary, day);
    }
    exit::ACCEPT
}

pub(crate) fn print_summary(s: &unspoof_reports::send::Summary, day: i64) {
    let date = &format_time(day * 86_400)[..10];
    if s.built.is_empty() && s.claimed_elsewhere.is_empty() {
        println!("{date}: no report to build (no DMARC-checked mail of a domain with a policy)");
    }
    for b in &s.built {
        println!(
            "{date}: report {} for {}: {} messages in {} records{}",
            b.report_id,
            b.domain,
            b.messages,
            b.records,
            if b.signed {
                ", DKIM-signed"
            } else {
                ", NOT signed (no [[gateway.dkim]] key for the from domain)"
            }
        );
        for (addr, status) in &b.destinations {
            println!("  to {addr}: {status}");
        }
    }
    for d in &s.claimed_elsewhere {
        println!("{date}: {d}: another node of the fleet has this report");
    }
    for (d, why) in &s.skipped {
        println!("{date}: {d}: not reported: {why}");
    }
    for (addr, domain, outcome) in &s.attempts {
        println!("sending {domain} to {addr}: {outcome}");
    }
    if s.no_relay {
        println!("no relay configured ([dmarc] relay or --relay): reports are queued, not sent");
    }
}

async fn status(args: StatusArgs) -> u8 {
    let (_, store_config, _) = match load(&args.common) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open(store_config).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let all = async {
        Ok::<_, unspoof_store::StoreError>((
            store.dmarc_counts().await?,
            store.dmarc_reports(None, args.limit).await?,
            store.dmarc_rejected(args.limit).await?,
            store.dmarc_outgoing(args.limit).await?,
            store.dmarc_deliveries(args.limit).await?,
            store.dmarc_suppression_list().await?,
        ))
    }
    .await;
    store.close().await;
    let (counts, reports, rejected, outgoing, deliveries, suppressed) = match all {
        Ok(a) => a,
        Err(e) => {
            eprintln!("unspoof: store: {e}");
            return exit::SOFTWARE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "reports": counts.0, "rows": counts.1, "rejected": counts.2,
                "latest_reports": reports, "refused_inputs": rejected, "outgoing": outgoing,
                "deliveries": deliveries, "suppressed": suppressed,
            })
        );
        return exit::ACCEPT;
    }
    println!(
        "received: {} reports ({} rows); refused inputs kept aside: {}",
        counts.0, counts.1, counts.2
    );
    for r in &reports {
        println!(
            "  {} {} from {} for {} ({}): {} messages [{}]",
            &format_time(r.begin_at)[..10],
            r.report_id,
            r.reporter,
            r.domain,
            r.format,
            r.messages,
            r.source
        );
    }
    if !rejected.is_empty() {
        println!("refused:");
        for j in &rejected {
            println!("  {} {}: {}", format_time(j.received_at), j.source, j.error);
        }
    }
    if !outgoing.is_empty() {
        println!("sent (ours):");
        for o in &outgoing {
            println!(
                "  {} {} {} by {}: {}",
                &format_time(o.day * 86_400)[..10],
                o.domain,
                o.status,
                o.node,
                o.detail.as_deref().unwrap_or("")
            );
        }
        for d in &deliveries {
            println!(
                "    {} {}: {} after {} attempt(s){}",
                d.domain,
                d.address,
                d.status,
                d.attempts,
                d.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
    }
    if !suppressed.is_empty() {
        println!("suppressed addresses:");
        for s in &suppressed {
            println!(
                "  {} until {}: {}",
                s.address,
                format_time(s.until),
                s.reason
            );
        }
    }
    exit::ACCEPT
}
