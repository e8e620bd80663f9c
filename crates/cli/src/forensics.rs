//! `unspoof trace` (a message joined with the mail logs) and `unspoof report` (abuse and DMARC
//! failure reports out, reports from others in).

use std::{
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
};

use clap::{Args, Subcommand};
use unspoof_engine::{Analysis, Engine, Envelope};
use unspoof_forensics::{
    join::{HopCheck, LogTrace, join},
    logs,
    report::{self, Addressing, Kind, Redaction},
    send,
};

use crate::{
    analyze::{DnsArgs, dns_view, load_policy},
    exit,
};

#[derive(Args)]
pub struct TraceArgs {
    /// The message.
    pub message: PathBuf,
    /// A Postfix, Sendmail or Exim log (plain or gzip'd; `-` for stdin); repeatable.
    #[arg(long = "log", required = true)]
    pub logs: Vec<PathBuf>,
    /// Year of classic syslog timestamps, which carry none (default: the message's).
    #[arg(long)]
    pub year: Option<i32>,
    /// Policy file (trust boundary: internal networks, trusted relays).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Build an abuse report (RFC 5965 ARF) for a forged message.
    Abuse(AbuseArgs),
    /// Read an ARF or DMARC failure report that someone sent us.
    Parse(ParseArgs),
}

#[derive(Args)]
pub struct AbuseArgs {
    /// The forged message.
    pub message: PathBuf,
    /// Make a DMARC failure report (RFC 6591 auth-failure) instead of an abuse report.
    #[arg(long = "dmarc-failure")]
    pub dmarc_failure: bool,
    /// Replace the local part of every address in the attached original with `redacted`.
    #[arg(long = "redact-local-parts")]
    pub redact_local_parts: bool,
    /// Attach only the original's header section.
    #[arg(long = "headers-only")]
    pub headers_only: bool,
    /// Recipients (default: abuse@ and postmaster@ of the domains involved).
    #[arg(long)]
    pub to: Vec<String>,
    /// Our reporting address (default: postmaster@ our host name).
    #[arg(long)]
    pub from: Option<String>,
    /// Mail logs to quote as evidence; repeatable.
    #[arg(long = "log")]
    pub logs: Vec<PathBuf>,
    /// Where to write the report (default: MESSAGE.report.eml beside the message).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also send it through the relay.
    #[arg(long)]
    pub send: bool,
    /// SMTP relay for --send, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:25")]
    pub relay: String,
    /// Connecting client IP, when the message has no trustworthy Received header.
    #[arg(long)]
    pub ip: Option<IpAddr>,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub dns: DnsArgs,
}

#[derive(Args)]
pub struct ParseArgs {
    /// The report (an email with a message/feedback-report part).
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("unspoof: cannot start the runtime: {e}");
            exit::SOFTWARE
        })
}

fn read(path: &Path) -> Result<Vec<u8>, u8> {
    std::fs::read(path).map_err(|e| {
        eprintln!("unspoof: cannot read {}: {e}", path.display());
        exit::NO_INPUT
    })
}

/// Year of the message's newest Received date, for syslog lines without a year.
fn message_year(a: &Analysis) -> i32 {
    a.trace
        .hops
        .iter()
        .find_map(|h| h.date.as_deref())
        .and_then(|d| d.get(..4))
        .and_then(|y| y.parse().ok())
        .unwrap_or(1970)
}

fn read_logs(paths: &[PathBuf], year: i32) -> Result<Vec<logs::LogLine>, u8> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(logs::read_file(p, year).map_err(|e| {
            eprintln!("unspoof: cannot read log {}: {e}", p.display());
            exit::NO_INPUT
        })?);
    }
    Ok(all)
}

pub fn trace(args: TraceArgs) -> u8 {
    let result = (|| -> Result<u8, u8> {
        let raw = read(&args.message)?;
        let policy = load_policy(args.policy.as_deref())?;
        let rt = runtime()?;
        // The join needs the hop trace only: no DNS.
        let engine = Engine::new(policy, unspoof_engine::Dns::offline());
        let analysis = rt.block_on(engine.evaluate(&raw, &Envelope::default()));
        let year = args.year.unwrap_or_else(|| message_year(&analysis));
        let lines = read_logs(&args.logs, year)?;
        let message_id = analysis.message.message_id.clone();
        let joined = join(message_id.as_deref(), &analysis.trace, &lines);
        let mut out = std::io::stdout().lock();
        if args.json {
            let _ = serde_json::to_writer(&mut out, &joined);
            let _ = writeln!(out);
        } else {
            let _ = print_trace(&mut out, &joined);
        }
        Ok(match joined.hop_check {
            HopCheck::Contradicted { .. } => exit::TAG,
            _ => exit::ACCEPT,
        })
    })();
    result.unwrap_or_else(|code| code)
}

fn print_trace(out: &mut impl Write, j: &LogTrace) -> std::io::Result<()> {
    writeln!(
        out,
        "Message-ID: {}",
        j.message_id.as_deref().unwrap_or("(none)")
    )?;
    if j.queue_ids.is_empty() {
        writeln!(out, "No log line names this message.")?;
    } else {
        writeln!(out, "Queue ids: {}", j.queue_ids.join(", "))?;
    }
    for c in &j.clients {
        writeln!(
            out,
            "Client: {} [{}]{}{}{}  ({})",
            c.name,
            c.ip.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
            c.helo
                .as_deref()
                .map(|h| format!(" helo={h}"))
                .unwrap_or_default(),
            c.sasl_user
                .as_deref()
                .map(|u| format!(" sasl_user={u}"))
                .unwrap_or_default(),
            c.tls
                .as_deref()
                .map(|t| format!(" tls={t}"))
                .unwrap_or_default(),
            c.source
        )?;
    }
    for s in &j.senders {
        writeln!(out, "Envelope sender: <{s}>")?;
    }
    for d in &j.deliveries {
        writeln!(
            out,
            "Delivery: {} -> {} {} {}",
            d.recipient,
            d.relay.as_deref().unwrap_or("-"),
            d.status,
            d.detail
        )?;
    }
    for r in &j.rejections {
        writeln!(out, "Rejected: {r}")?;
    }
    match &j.hop_check {
        HopCheck::Confirmed { ip } => {
            writeln!(out, "The log confirms the Received header: client {ip}.")?
        }
        HopCheck::Contradicted { detail, .. } => writeln!(out, "CONTRADICTION: {detail}.")?,
        HopCheck::Unknown { detail } => writeln!(out, "Hop check: {detail}.")?,
    }
    if !j.neighbours.is_empty() {
        writeln!(out, "Other messages from the same client within an hour:")?;
        for n in &j.neighbours {
            writeln!(
                out,
                "  {} from=<{}> message-id={}",
                n.queue_id,
                n.sender.as_deref().unwrap_or(""),
                n.message_id.as_deref().unwrap_or("-")
            )?;
        }
    }
    writeln!(out, "Log lines:")?;
    for l in &j.lines {
        writeln!(out, "  {}: {} {}: {}", l.source, l.host, l.program, l.text)?;
    }
    Ok(())
}

pub fn report(command: ReportCommand) -> u8 {
    match command {
        ReportCommand::Abuse(args) => abuse(args).unwrap_or_else(|c| c),
        ReportCommand::Parse(args) => parse(args).unwrap_or_else(|c| c),
    }
}

fn abuse(args: AbuseArgs) -> Result<u8, u8> {
    let raw = read(&args.message)?;
    let policy = load_policy(args.policy.as_deref())?;
    let hostname = policy.hostname.clone();
    let rt = runtime()?;
    rt.block_on(async {
        let dns = dns_view(&args.dns).await.map_err(|(code, msg)| {
            eprintln!("unspoof: {msg}");
            code
        })?;
        let engine = Engine::new(policy, dns);
        let envelope = Envelope {
            ip: args.ip,
            ..Default::default()
        };
        let analysis = engine.evaluate(&raw, &envelope).await;
        let log = if args.logs.is_empty() {
            None
        } else {
            let lines = read_logs(&args.logs, message_year(&analysis))?;
            Some(join(
                analysis.message.message_id.as_deref(),
                &analysis.trace,
                &lines,
            ))
        };
        let to = if args.to.is_empty() {
            report::abuse_contacts(&analysis)
        } else {
            args.to.clone()
        };
        if to.is_empty() {
            eprintln!("unspoof: no abuse contact found for this message; name one with --to");
            return Err(exit::USAGE);
        }
        let addressing = Addressing {
            from: args
                .from
                .clone()
                .unwrap_or_else(|| format!("postmaster@{hostname}")),
            to: to.clone(),
            reporting_mta: hostname.clone(),
        };
        let kind = if args.dmarc_failure {
            Kind::DmarcFailure
        } else {
            Kind::Abuse
        };
        let redaction = Redaction {
            local_parts: args.redact_local_parts,
            headers_only: args.headers_only,
        };
        let message = report::build(kind, &raw, &analysis, log.as_ref(), &addressing, redaction)
            .map_err(|e| {
                eprintln!("unspoof: cannot build the report: {e}");
                exit::SOFTWARE
            })?;
        let out = args.out.clone().unwrap_or_else(|| {
            let mut p = args.message.clone().into_os_string();
            p.push(".report.eml");
            PathBuf::from(p)
        });
        std::fs::write(&out, &message).map_err(|e| {
            eprintln!("unspoof: cannot write {}: {e}", out.display());
            exit::SOFTWARE
        })?;
        println!("report written to {} for {}", out.display(), to.join(", "));
        if args.send {
            match send::send(&args.relay, &hostname, &addressing.from, &to, &message).await {
                Ok(reply) => println!("sent through {}: {reply}", args.relay),
                Err(e) => {
                    eprintln!("unspoof: sending through {} failed: {e}", args.relay);
                    return Err(exit::SOFTWARE);
                }
            }
        }
        Ok(exit::ACCEPT)
    })
}

fn parse(args: ParseArgs) -> Result<u8, u8> {
    let raw = read(&args.file)?;
    match report::parse(&raw) {
        Ok(r) => {
            let mut out = std::io::stdout().lock();
            if args.json {
                let _ = serde_json::to_writer(&mut out, &r);
                let _ = writeln!(out);
            } else {
                let _ = writeln!(out, "Feedback-Type: {}", r.feedback_type);
                if let Some(a) = &r.auth_failure {
                    let _ = writeln!(out, "Auth-Failure: {a}");
                }
                for (k, v) in [
                    ("Reporter", &r.reporting_mta),
                    ("User-Agent", &r.user_agent),
                    ("Source-IP", &r.source_ip),
                    ("Original-Mail-From", &r.original_mail_from),
                    ("Original-Rcpt-To", &r.original_rcpt_to),
                ] {
                    if let Some(v) = v {
                        let _ = writeln!(out, "{k}: {v}");
                    }
                }
                for d in &r.reported_domains {
                    let _ = writeln!(out, "Reported-Domain: {d}");
                }
                for a in &r.authentication_results {
                    let _ = writeln!(out, "Authentication-Results: {a}");
                }
                let o = &r.original;
                let _ = writeln!(out, "The reported message ({} included):", o.included);
                for (k, v) in [
                    ("Message-ID", &o.message_id),
                    ("From", &o.from),
                    ("To", &o.to),
                    ("Subject", &o.subject),
                    ("Date", &o.date),
                ] {
                    if let Some(v) = v {
                        let _ = writeln!(out, "  {k}: {v}");
                    }
                }
            }
            Ok(exit::ACCEPT)
        }
        Err(e) => {
            eprintln!("unspoof: {}: {e}", args.file.display());
            Err(exit::DATA)
        }
    }
}
