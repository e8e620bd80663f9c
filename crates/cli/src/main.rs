//! `unspoof`: the command line front door. It maps arguments to calls into the engine and the
//! other front doors, and errors to exit codes; it decides nothing itself.

mod analyze;
mod audit;
mod config;
mod console;
mod dmarc;
mod dmarc_serve;
mod forensics;
mod inputs;
mod log;
mod milter;
mod quarantine;
mod render;
mod serve;
mod signals;
mod signatures;
mod store_adapter;
mod user_reports;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, CommandFactory, Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the engine allocates and frees hundreds of small
/// objects per message, and glibc's fastbin consolidation on every large allocation showed
/// up in the milter's profile.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes (documented in README.md).
pub mod exit {
    /// Every message was accepted (or the command succeeded).
    pub const ACCEPT: u8 = 0;
    /// The most severe verdict was `tag`.
    pub const TAG: u8 = 1;
    /// The most severe verdict was `quarantine`.
    pub const QUARANTINE: u8 = 2;
    /// The most severe verdict was `reject`.
    pub const REJECT: u8 = 3;
    /// `analyze`: a message would be deferred (`decision.disposition` `defer`: DNS did not
    /// answer for the checks DMARC rests on, or the engine failed), so its verdict is not
    /// final; takes precedence over 0 to 3.
    pub const DEFER: u8 = 4;
    /// Wrong arguments (sysexits EX_USAGE).
    pub const USAGE: u8 = 64;
    /// An input could not be read (EX_NOINPUT).
    pub const NO_INPUT: u8 = 66;
    /// Our own fault (EX_SOFTWARE).
    pub const SOFTWARE: u8 = 70;
    /// A report or input could not be understood (EX_DATAERR).
    pub const DATA: u8 = 65;
    /// `analyze`: an input is not an email message (empty, binary, plain text); EX_DATAERR.
    pub const NOT_MAIL: u8 = DATA;
    /// A policy or zone file is invalid (EX_CONFIG).
    pub const CONFIG: u8 = 78;
}

#[derive(Parser)]
#[command(
    name = "unspoof",
    version = env!("UNSPOOF_VERSION"),
    about = "Stop forged email: analyse, gate and report"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tell the truth about messages: hop trace, SPF, DKIM, DMARC, ARC and a verdict.
    Analyze(analyze::AnalyzeArgs),
    /// Run the SMTP gateway: the site's single point of entry, refusing spoofed mail.
    Serve(serve::ServeArgs),
    /// Run as a milter inside Postfix or Sendmail: the same verdicts as milter replies.
    Milter(milter::MilterArgs),
    /// DKIM keys for signing outgoing mail.
    Dkim {
        #[command(subcommand)]
        command: serve::DkimCommand,
    },
    /// Read a password on standard input and print its argon2id hash for `[[gateway.users]]`.
    HashPassword,
    /// Join a message with the mail server's logs: queue ids, the real client, deliveries.
    Trace(forensics::TraceArgs),
    /// Abuse and DMARC failure reports: build one for a forged message, or read one.
    Report {
        #[command(subcommand)]
        command: forensics::ReportCommand,
    },
    /// The session and message records: search them, show one with its trace.
    Log {
        #[command(subcommand)]
        command: log::LogCommand,
    },
    /// Quarantined messages: list, show, release (re-inject) or delete them.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCommand,
    },
    /// The web console: quarantine, search and message provenance in a browser (`serve`),
    /// and its accounts (`user`).
    Console {
        #[command(subcommand)]
        command: console::ConsoleCommand,
    },
    /// How spoofable a domain is, and whether the gateway is its single point of entry: SPF,
    /// DMARC, DKIM, MX, STARTTLS, MTA-STS, DANE, bulk-sender rules, lookalikes, a grade.
    Audit(audit::AuditArgs),
    /// DMARC aggregate reports (RFC 9990): ingest what receivers send, see who sends as a
    /// domain, send our own.
    Dmarc {
        #[command(subcommand)]
        command: dmarc::DmarcCommand,
    },
    /// Work with the policy file.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the completion script for a shell, e.g.
    /// `unspoof completions bash > /etc/bash_completion.d/unspoof`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `unspoof man > /usr/local/share/man/man1/unspoof.1`;
    /// `--out-dir DIR` writes the pages of every subcommand too.
    Man {
        /// Write `unspoof.1` and one page per subcommand into this folder.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file; errors name the line.
    Check(PolicyCheckArgs),
}

#[derive(Args)]
struct PolicyCheckArgs {
    file: PathBuf,
}

/// `unspoof policy check`: the policy and every front door's section of the same file,
/// `[store]` and `[console]`.
fn check_config(file: &std::path::Path) -> u8 {
    let checked = config::Config::load(file)
        .map(|_| ())
        .map_err(|e| e.to_string());
    match checked {
        Ok(()) => {
            println!("{}: ok", file.display());
            exit::ACCEPT
        }
        Err(e) => {
            eprintln!("{e}");
            exit::CONFIG
        }
    }
}

/// `unspoof man`: the page of `unspoof` itself on standard output, or with `--out-dir` every
/// page (`unspoof.1`, `unspoof-serve.1`, `unspoof-log-show.1`, ...) written into a folder.
fn man_page(out_dir: Option<PathBuf>) -> u8 {
    let command = Cli::command();
    let done = match &out_dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(command, dir))
            .map_err(|e| format!("{}: {e}", dir.display())),
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &page))
                .map_err(|e| e.to_string())
        }
    };
    match done {
        Ok(()) => exit::ACCEPT,
        Err(e) => {
            eprintln!("unspoof: {e}");
            exit::SOFTWARE
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::ACCEPT
            });
        }
    };
    let code = match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Milter(args) => milter::run(args),
        Command::Dkim { command } => serve::dkim(command),
        Command::HashPassword => serve::hash_password(),
        Command::Trace(args) => forensics::trace(args),
        Command::Report { command } => forensics::report(command),
        Command::Log { command } => log::run(command),
        Command::Quarantine { command } => quarantine::run(command),
        Command::Console { command } => console::run(command),
        Command::Audit(args) => audit::run(args),
        Command::Dmarc { command } => dmarc::run(command),
        Command::Policy {
            command: PolicyCommand::Check(args),
        } => check_config(&args.file),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "unspoof", &mut std::io::stdout());
            exit::ACCEPT
        }
        Command::Man { out_dir } => man_page(out_dir),
    };
    ExitCode::from(code)
}
