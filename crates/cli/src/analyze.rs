//! `unspoof analyze`: messages in, reports out.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use clap::Args;
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
    let format = if args.batch.is_some() {
        Format::Batch
    } else if args.json {
        Format::Json
    } else if args.ar {
        Format::Ar
    } else {
        Format::Report { colour }
    };

    // A few long-lived tasks take the messages in turn and put each one's output back in input
    // order themselves; this thread only writes what they hand over, a piece of about
    // OUTPUT_CHUNK at a time: no task spawned per message (each spawn moved the whole
    // evaluation future, ~22 KB, into a new task) and no thread woken per message.
    let total = jobs.len();
    let shared = Arc::new(Shared {
        jobs,
        taken: AtomicUsize::new(0),
        room: tokio::sync::Semaphore::new(2 * CONCURRENCY),
        output: Mutex::new(Output::new()),
        format,
        progress,
    });
    let (pieces, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY.min(total) {
        let shared = Arc::clone(&shared);
        let engine = engine.clone();
        let pieces = pieces.clone();
        workers.spawn(async move { shared.work(&engine, &pieces, total).await });
    }
    drop(pieces);
    let mut out = stdout.lock();
    let mut failed = None;
    loop {
        tokio::select! {
            piece = ready.recv() => {
                let Some((bytes, messages)) = piece else {
                    break; // every worker is done
                };
                if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
                    failed = Some(if e.kind() == std::io::ErrorKind::BrokenPipe {
                        shared.output.lock().map_or(exit::SOFTWARE, |o| exit_for(o.worst, o.deferred))
                    } else {
                        eprintln!("unspoof: cannot write output: {e}");
                        exit::SOFTWARE
                    });
                    shared.room.close(); // the workers stop
                    break;
                }
                shared.room.add_permits(messages);
            }
            Some(Err(e)) = workers.join_next() => {
                eprintln!("unspoof: internal error while analysing a message: {e}");
                return exit::SOFTWARE;
            }
        }
    }
    drop(ready);
    while let Some(done) = workers.join_next().await {
        if let Err(e) = done {
            eprintln!("unspoof: internal error while analysing a message: {e}");
            return exit::SOFTWARE;
        }
    }
    if let Some(p) = &shared.progress {
        p.finish_and_clear();
    }
    if let Some(code) = failed {
        return code;
    }
    if not_mail {
        return exit::NOT_MAIL;
    }
    match shared.output.lock() {
        Ok(output) => exit_for(output.worst, output.deferred),
        Err(_) => exit::SOFTWARE,
    }
}

/// Output bytes are handed to standard output in pieces of about this size (a write system
/// call, and a wake-up of the reader of a pipe, per piece rather than per message).
const OUTPUT_CHUNK: usize = 64 * 1024;

/// How each message's result is written.
#[derive(Clone, Copy)]
enum Format {
    Batch,
    Json,
    Ar,
    Report { colour: bool },
}

/// What the workers of one run share.
struct Shared {
    jobs: Vec<Job>,
    /// Index of the next job not yet taken by a worker.
    taken: AtomicUsize,
    /// One permit per message that may be taken before it is written: at most
    /// 2 x [`CONCURRENCY`] messages in evaluation, waiting for their turn or in a piece not
    /// yet written.
    room: tokio::sync::Semaphore,
    output: Mutex<Output>,
    format: Format,
    progress: Option<indicatif::ProgressBar>,
}

/// A piece of output in input order, and how many messages' results it holds.
type Piece = (Vec<u8>, usize);

/// One message's result, rendered.
struct Rendered {
    bytes: Vec<u8>,
    action: Action,
    deferred: bool,
}

/// The results on their way out, in input order.
struct Output {
    /// Index of the next message to put in order.
    next: usize,
    /// Messages finished before some earlier one.
    waiting: BTreeMap<usize, Rendered>,
    /// Results in order, not yet handed over, and how many.
    chunk: Vec<u8>,
    in_chunk: usize,
    worst: Action,
    // A message the doors would defer (DNS did not answer, the engine failed) has no final
    // verdict: never exit as if it had one.
    deferred: bool,
}

impl Shared {
    async fn work(
        &self,
        engine: &unspoof_engine::Engine,
        pieces: &tokio::sync::mpsc::UnboundedSender<Piece>,
        total: usize,
    ) {
        loop {
            let Ok(permit) = self.room.acquire().await else {
                return; // writing failed
            };
            permit.forget();
            let index = self.taken.fetch_add(1, Ordering::Relaxed);
            let Some(job) = self.jobs.get(index) else {
                return;
            };
            let analysis = engine.evaluate(&job.raw, &job.envelope).await;
            let mut bytes = Vec::with_capacity(4096);
            // Writing into a Vec cannot fail.
            let _ = render_one(&mut bytes, self.format, index, &job.name, &analysis);
            let rendered = Rendered {
                bytes,
                action: analysis.verdict.action,
                deferred: analysis.decision.disposition == Disposition::Defer,
            };
            drop(analysis);
            if let Some(p) = &self.progress {
                p.inc(1);
            }
            let Ok(mut output) = self.output.lock() else {
                return;
            };
            // Sent while the lock is held: pieces are made in order under the lock, and a
            // piece sent after it was released could overtake the one made just before it
            // by another worker. (No receiver: writing failed, and the room is closed.)
            if let Some(piece) = output.put(index, rendered, total) {
                let _ = pieces.send(piece);
            }
        }
    }
}

impl Output {
    fn new() -> Self {
        Output {
            next: 0,
            waiting: BTreeMap::new(),
            chunk: Vec::new(),
            in_chunk: 0,
            worst: Action::Accept,
            deferred: false,
        }
    }

    /// Takes message `index`'s result (of `total`) and puts every result now in order into the
    /// chunk; returns the chunk when it is full, holds the last result, or holds half of
    /// [`Shared::room`]'s messages (short results: the permits come back only once written,
    /// and the workers must not all wait for a chunk that never fills).
    fn put(&mut self, index: usize, rendered: Rendered, total: usize) -> Option<Piece> {
        if index != self.next {
            self.waiting.insert(index, rendered);
            return None;
        }
        self.append(rendered);
        while let Some(rendered) = self.waiting.remove(&self.next) {
            self.append(rendered);
        }
        let full = self.chunk.len() >= OUTPUT_CHUNK || self.in_chunk >= CONCURRENCY;
        (full || self.next == total).then(|| {
            let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(2 * OUTPUT_CHUNK));
            (chunk, std::mem::take(&mut self.in_chunk))
        })
    }

    fn append(&mut self, rendered: Rendered) {
        self.worst = self.worst.max(rendered.action);
        self.deferred |= rendered.deferred;
        self.chunk.extend_from_slice(&rendered.bytes);
        self.in_chunk += 1;
        self.next += 1;
    }
}

/// One message's output in `format`; `index` is its place in the input.
fn render_one(
    out: &mut Vec<u8>,
    format: Format,
    index: usize,
    name: &str,
    analysis: &Analysis,
) -> std::io::Result<()> {
    match format {
        Format::Batch => write_batch_line(out, name, analysis),
        Format::Json => write_json_line(out, name, analysis),
        Format::Ar => out.write_all(
            analysis
                .authentication_results(&analysis.authserv_id)
                .as_bytes(),
        ),
        Format::Report { colour } => {
            if index > 0 {
                writeln!(out)?;
            }
            render::report(out, name, analysis, colour)
        }
    }
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
