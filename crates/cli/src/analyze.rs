//! `unspoof analyze`: messages in, reports out.

use std::{
    io::{IsTerminal, Write},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;
use futures::StreamExt;
use serde::Deserialize;
use unspoof_engine::{Action, Analysis, Disposition, Dns, Envelope, Policy, dns::Zone};

use crate::{exit, inputs, render};

/// Messages analysed at once: enough to overlap DNS round trips on a cold cache.
const CONCURRENCY: usize = 32;

#[derive(Args)]
pub struct AnalyzeArgs {
    /// Messages: .eml files, mbox files, Maildir folders, or `-` for standard input.
    pub paths: Vec<PathBuf>,

    /// Connecting client IP (default: the origin hop of the Received trace).
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// HELO/EHLO name (default: the origin hop's).
    #[arg(long)]
    pub helo: Option<String>,
    /// MAIL FROM address, without angle brackets; empty for the null sender (default: the
    /// Return-Path header).
    #[arg(long = "mail-from")]
    pub mail_from: Option<String>,
    /// RCPT TO address; repeat for several.
    #[arg(long)]
    pub rcpt: Vec<String>,

    #[command(flatten)]
    pub dns: DnsArgs,

    /// Replay a manifest: one JSON object per line with `file` (relative to the manifest's
    /// folder), `ip`, `helo`, `mailfrom`, `rcpt`; writes one JSON result per line.
    #[arg(long, conflicts_with = "paths")]
    pub batch: Option<PathBuf>,
    /// Policy file (unspoof.toml).
    #[arg(long)]
    pub policy: Option<PathBuf>,

    /// Print the versioned JSON analysis (one object per line) instead of the report.
    #[arg(long, conflicts_with = "ar")]
    pub json: bool,
    /// Print only the RFC 8601 Authentication-Results header.
    #[arg(long)]
    pub ar: bool,
    /// Unix time the message arrived, for date checks (default: the topmost Received date).
    #[arg(long = "received-at")]
    pub received_at: Option<i64>,
    /// Whether the sender domain was new to the recipients (yes/no), as the gateway's or the
    /// milter's store answered; replays a stored verdict exactly (`contact.*` reasons).
    #[arg(long = "first-contact", value_name = "yes|no", value_parser = clap::builder::BoolishValueParser::new())]
    pub first_contact: Option<bool>,
    /// Whether the From address had written to this site before (yes/no), as the store
    /// answered; replays a stored verdict exactly (`impersonation.*` with memory).
    #[arg(long = "known-sender", value_name = "yes|no", value_parser = clap::builder::BoolishValueParser::new())]
    pub known_sender: Option<bool>,
    /// Whether the message a bounce or auto-reply answers is one we sent (yes/no), as the
    /// store answered; replays a stored verdict exactly (`backscatter.*` reasons).
    #[arg(long = "sent-by-us", value_name = "yes|no", value_parser = clap::builder::BoolishValueParser::new())]
    pub sent_by_us: Option<bool>,
    /// Whether the From address is on the allow list for every recipient (yes/no), as the
    /// store answered; replays a stored verdict exactly (`allow.sender`).
    #[arg(long = "allowed-sender", value_name = "yes|no", value_parser = clap::builder::BoolishValueParser::new())]
    pub allowed_sender: Option<bool>,
    /// The key fingerprints the From address signed with before, comma-separated (empty:
    /// never), as the store answered (trust on first use); replays `signature.key_changed` and
    /// `signature.first_use` exactly.
    #[arg(long = "signing-keys-seen", value_name = "FPR,...")]
    pub signing_keys_seen: Option<String>,
}

/// Where DNS answers come from; shared by every command that runs the engine.
#[derive(Args)]
pub struct DnsArgs {
    /// DNS resolver to ask, HOST:PORT (default: the system's).
    #[arg(long, conflicts_with_all = ["dns_zone", "offline"])]
    pub resolver: Option<SocketAddr>,
    /// Answer DNS only from this RFC 1035 master file (repeatable); every other name is
    /// NXDOMAIN.
    #[arg(long = "dns-zone", conflicts_with = "offline")]
    pub dns_zone: Vec<PathBuf>,
    /// No DNS at all: authentication is shown as not checked.
    #[arg(long)]
    pub offline: bool,
    /// Seconds one DNS query may take before its check becomes temperror.
    #[arg(long = "dns-timeout", default_value_t = 5.0)]
    pub dns_timeout: f64,
}

/// The policy of a whole `unspoof.toml` (its doors' sections checked too, and `[gateway]
/// gateway_names` handed to the policy), or the default policy; prints the error and returns
/// the exit code.
pub fn load_policy(path: Option<&Path>) -> Result<Policy, u8> {
    crate::config::Config::load_or_default(path)
        .map(|c| c.policy)
        .map_err(|e| {
            eprintln!("unspoof: {e}");
            exit::CONFIG
        })
}

/// One line of a batch manifest (the format of the bench kit's manifest.jsonl).
#[derive(Deserialize)]
struct ManifestEntry {
    file: String,
    ip: Option<IpAddr>,
    helo: Option<String>,
    mailfrom: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    rcpt: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// A message ready for the engine.
struct Job {
    name: String,
    raw: Vec<u8>,
    envelope: Envelope,
}

pub fn run(args: AnalyzeArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("unspoof: cannot start the runtime: {e}");
            return exit::SOFTWARE;
        }
    };
    runtime.block_on(run_async(args))
}

async fn run_async(args: AnalyzeArgs) -> u8 {
    let policy = match load_policy(args.policy.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let dns = match dns_view(&args.dns).await {
        Ok(d) => d,
        Err((code, msg)) => {
            eprintln!("unspoof: {msg}");
            return code;
        }
    };
    // An input that is not an email message has no verdict: the exit code says so instead.
    let mut not_mail = false;
    let jobs = match &args.batch {
        Some(manifest) => match batch_jobs(manifest) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("unspoof: {e}");
                return exit::NO_INPUT;
            }
        },
        None => {
            if args.paths.is_empty() {
                eprintln!("unspoof: name at least one message, folder, mbox or - (see --help)");
                return exit::USAGE;
            }
            let found = match inputs::read_all(&args.paths) {
                Ok(found) => found,
                Err(e) => {
                    eprintln!("unspoof: {e}");
                    return exit::NO_INPUT;
                }
            };
            let mut jobs = Vec::with_capacity(found.len());
            for input in found {
                match inputs::not_a_message(&input.raw) {
                    None => jobs.push(Job {
                        name: input.name,
                        raw: input.raw,
                        envelope: cli_envelope(&args),
                    }),
                    // A stray file in a folder of mail is passed over; one named on purpose
                    // is an error.
                    Some(why) if input.found_in_folder => {
                        eprintln!(
                            "unspoof: {}: skipped, not an email message: {why}",
                            input.name
                        )
                    }
                    Some(why) => {
                        eprintln!("unspoof: {}: not an email message: {why}", input.name);
                        not_mail = true;
                    }
                }
            }
            if jobs.is_empty() && !not_mail {
                eprintln!("unspoof: no email message found in the folders named");
                not_mail = true;
            }
            jobs
        }
    };

    let engine = match crate::signatures::engine(policy, dns) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("unspoof: {e}");
            return exit::CONFIG;
        }
    };
    let progress = progress_bar(jobs.len());
    let stdout = std::io::stdout();
    let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut worst = Action::Accept;
    // A message the doors would defer (DNS did not answer, the engine failed) has no final
    // verdict: never exit as if it had one.
    let mut deferred = false;

    // Each message on its own task, so a batch uses every core; `buffered` keeps input order.
    let mut results = futures::stream::iter(jobs.into_iter().map(|job| {
        let engine = engine.clone();
        tokio::spawn(async move {
            // Boxed: an `Analysis` is large, and the task's output is moved several times on
            // its way here (the task's cell, the join handle, `buffered`'s reordering heap).
            let analysis = Box::new(engine.evaluate(&job.raw, &job.envelope).await);
            (job.name, analysis)
        })
    }))
    .buffered(CONCURRENCY);

    let mut first = true;
    while let Some(done) = results.next().await {
        let (name, analysis) = match done {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("unspoof: internal error while analysing a message: {e}");
                return exit::SOFTWARE;
            }
        };
        worst = worst.max(analysis.verdict.action);
        deferred |= analysis.decision.disposition == Disposition::Defer;
        let written = if args.batch.is_some() {
            write_batch_line(&mut out, &name, &analysis)
        } else if args.json {
            write_json_line(&mut out, &name, &analysis)
        } else if args.ar {
            out.write_all(
                analysis
                    .authentication_results(&analysis.authserv_id)
                    .as_bytes(),
            )
        } else {
            if !first {
                let _ = writeln!(out);
            }
            render::report(&mut out, &name, &analysis, colour)
        };
        first = false;
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return exit_for(worst, deferred);
            }
            eprintln!("unspoof: cannot write output: {e}");
            return exit::SOFTWARE;
        }
        if let Some(p) = &progress {
            p.inc(1);
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let _ = out.flush();
    if not_mail {
        return exit::NOT_MAIL;
    }
    exit_for(worst, deferred)
}

fn exit_for(worst: Action, deferred: bool) -> u8 {
    if deferred {
        return exit::DEFER;
    }
    match worst {
        Action::Accept => exit::ACCEPT,
        Action::Tag => exit::TAG,
        Action::Quarantine => exit::QUARANTINE,
        Action::Reject => exit::REJECT,
    }
}

fn cli_envelope(args: &AnalyzeArgs) -> Envelope {
    Envelope {
        ip: args.ip,
        helo: args.helo.clone(),
        mail_from: args.mail_from.clone(),
        rcpt: args.rcpt.clone(),
        received_at: args.received_at,
        auth_user: None,
        first_contact: args.first_contact,
        known_sender: args.known_sender,
        sent_by_us: args.sent_by_us,
        allowed_sender: args.allowed_sender,
        signing_keys_seen: args.signing_keys_seen.as_deref().map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect()
        }),
    }
}

pub async fn dns_view(args: &DnsArgs) -> Result<Dns, (u8, String)> {
    if !(args.dns_timeout > 0.0 && args.dns_timeout <= 300.0) {
        return Err((
            exit::USAGE,
            "--dns-timeout must be between 0 and 300 seconds".into(),
        ));
    }
    let timeout = Duration::from_secs_f64(args.dns_timeout);
    if args.offline {
        return Ok(Dns::offline());
    }
    if !args.dns_zone.is_empty() {
        let mut zone = Zone::new();
        for path in &args.dns_zone {
            zone.load_file(path)
                .map_err(|e| (exit::CONFIG, e.to_string()))?;
        }
        return Dns::zones(zone, timeout)
            .await
            .map_err(|e| (exit::SOFTWARE, e.to_string()));
    }
    match args.resolver {
        Some(addr) => Dns::server(addr, timeout),
        None => Dns::system(timeout),
    }
    .map_err(|e| (exit::CONFIG, e.to_string()))
}

fn batch_jobs(manifest: &Path) -> Result<Vec<Job>, String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut jobs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: ManifestEntry = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: {e}", manifest.display(), n + 1))?;
        let path = base.join(&entry.file);
        let raw =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        jobs.push(Job {
            name: entry.file,
            raw,
            envelope: Envelope {
                ip: entry.ip,
                helo: entry.helo,
                mail_from: entry.mailfrom,
                rcpt: entry.rcpt,
                received_at: None,
                auth_user: None,
                first_contact: None,
                known_sender: None,
                sent_by_us: None,
                allowed_sender: None,
                signing_keys_seen: None,
            },
        });
    }
    Ok(jobs)
}

fn progress_bar(len: usize) -> Option<indicatif::ProgressBar> {
    if len < 2 || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} messages ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// `--json`: the analysis with the input's name.
fn write_json_line(out: &mut impl Write, name: &str, analysis: &Analysis) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        file: &'a str,
        #[serde(flatten)]
        analysis: &'a Analysis,
    }
    serde_json::to_writer(
        &mut *out,
        &Line {
            file: name,
            analysis,
        },
    )?;
    out.write_all(b"\n")
}

/// `--batch`: the bench kit's summary fields first, then the whole analysis.
fn write_batch_line(out: &mut impl Write, name: &str, analysis: &Analysis) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        file: &'a str,
        dkim: &'static str,
        dkim_pass_d: Vec<String>,
        spf: &'static str,
        dmarc: &'static str,
        arc: &'static str,
        analysis: &'a Analysis,
    }
    let a = &analysis.auth;
    let line = Line {
        file: name,
        dkim: a.dkim_summary().as_str(),
        dkim_pass_d: a.dkim_pass_domains(),
        spf: a.spf.result.as_str(),
        dmarc: a.dmarc.result.as_str(),
        arc: a.arc.result.as_str(),
        analysis,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}
