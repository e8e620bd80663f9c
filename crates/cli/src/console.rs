//! `unspoof console serve | user`: the web console (crates/console) on the store, and its
//! accounts.

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use unspoof_console::auth::Role;
use unspoof_console::{Console, ConsoleConfig};
use unspoof_store::console::ConsoleAccount;

use crate::exit;
use crate::log::{StoreArgs, format_time, open};
use crate::signals::{Running, Signals};

#[derive(Subcommand)]
pub enum ConsoleCommand {
    /// Serve the console: quarantine, search and message provenance in a browser.
    /// Loopback (127.0.0.1:8025) unless told otherwise.
    Serve(ServeArgs),
    /// Send the quarantine digests now (to every recipient with held mail since their last
    /// one), whether or not one is due.
    Digest(ServeArgs),
    /// Console accounts: add (password on standard input), list, remove.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// The store, and with `--config` (or `UNSPOOF_CONFIG`) the file's `[console]` section.
    #[command(flatten)]
    store: StoreArgs,
    /// Address and port to listen on (overrides `[console] listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Where released messages go, host:port (overrides `[console] downstream`); without
    /// one, into the Maildir.
    #[arg(long, value_name = "HOST:PORT")]
    downstream: Option<String>,
    /// The Maildir for release without a downstream. Default `<data-dir>/maildir`.
    #[arg(long, value_name = "DIR")]
    maildir: Option<PathBuf>,
    /// The DNS the abuse reports and the audit page ask (as `unspoof report abuse`).
    #[command(flatten)]
    dns: crate::analyze::DnsArgs,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account or replace one (its password is read from standard input).
    Add(AddArgs),
    /// Every account, its role and scope.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an account (its sessions end at their next request).
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
    },
}

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    store: StoreArgs,
    name: String,
    /// administrator, domain_administrator or recipient.
    #[arg(long)]
    role: String,
    /// A domain (domain administrator) or an address (recipient) whose mail the account may
    /// see; repeat for more.
    #[arg(long = "scope", value_name = "DOMAIN|ADDRESS")]
    scope: Vec<String>,
}

pub fn run(command: ConsoleCommand) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unspoof: cannot start the runtime: {e}");
            return exit::SOFTWARE;
        }
    };
    rt.block_on(async {
        match command {
            ConsoleCommand::Serve(a) => serve(a, false).await,
            ConsoleCommand::Digest(a) => serve(a, true).await,
            ConsoleCommand::User {
                command: UserCommand::Add(a),
            } => add(a).await,
            ConsoleCommand::User {
                command: UserCommand::List { store },
            } => list(store).await,
            ConsoleCommand::User {
                command: UserCommand::Remove { store, name },
            } => remove(store, name).await,
        }
    })
}

/// `[console]` of the file, and `[gateway] downstream` (where released mail goes unless
/// `[console]` names another).
fn console_config(args: &ServeArgs) -> Result<(ConsoleConfig, Option<String>), String> {
    crate::config::Config::load_or_default(args.store.config.as_deref())
        .map(|c| (c.console, c.gateway.downstream))
        .map_err(|e| e.to_string())
}

/// The console inside `unspoof serve` (`[console] enabled = true`): served on its own
/// listener beside the gateway, on the gateway's store, engine and downstream, with the
/// digests scheduled. Returns what it spawned; nothing when not enabled.
pub async fn start_in_serve(
    mut config: ConsoleConfig,
    store: &unspoof_store::Store,
    engine: unspoof_engine::Engine,
    hostname: &str,
    gateway_downstream: Option<&str>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    if !config.enabled {
        return Ok(Vec::new());
    }
    if config.downstream.trim().is_empty()
        && let Some(d) = gateway_downstream
    {
        config.downstream = d.to_string();
    }
    let tls = unspoof_console::tls_acceptor(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("console: cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    warn_exposed(&config, &addr, tls.is_some());
    let console = Console::with_engine(store.clone(), config, engine, hostname);
    eprintln!(
        "unspoof serve: console on {}://{addr}/",
        if tls.is_some() { "https" } else { "http" }
    );
    let served = console.clone();
    let serving = tokio::spawn(async move {
        let r = match tls {
            Some(t) => unspoof_console::serve_tls(served, listener, t).await,
            None => unspoof_console::serve(served, listener).await,
        };
        if let Err(e) = r {
            eprintln!("unspoof serve: console: {e}");
        }
    });
    let digests = tokio::spawn(digest_schedule(console));
    Ok(vec![serving, digests])
}

/// How often the schedule looks for recipients due a digest (each is sent at most once per
/// `digest_hours`, however often this looks).
pub const DIGEST_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

async fn digest_schedule(console: std::sync::Arc<Console>) {
    loop {
        match unspoof_console::digest::send_digests(&console, false).await {
            Ok(run) => report_digests(&run),
            Err(e) => eprintln!("unspoof: digest: {e}"),
        }
        tokio::time::sleep(DIGEST_CHECK_EVERY).await;
    }
}

fn report_digests(run: &unspoof_console::digest::DigestRun) {
    for (rcpt, n, to) in &run.sent {
        eprintln!("unspoof: digest to {rcpt}: {n} held message(s), {to}");
    }
    for (rcpt, e) in &run.failed {
        eprintln!("unspoof: digest to {rcpt} failed: {e}");
    }
}

fn warn_exposed(config: &ConsoleConfig, addr: &str, tls: bool) {
    if !config.listen.ip().is_loopback() && !config.secure_cookies && !tls {
        eprintln!(
            "unspoof: console: listening on {addr}, not loopback, without TLS or secure_cookies: \
             set [console] tls_cert/tls_key, or put it behind HTTPS and set secure_cookies = true"
        );
    }
}

async fn serve(args: ServeArgs, digest_now: bool) -> u8 {
    let (mut config, gateway_downstream) = match console_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("unspoof: {e}");
            return exit::CONFIG;
        }
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = &args.downstream {
        config.downstream = d.clone();
    }
    // As inside `unspoof serve`: released mail and digests go to the gateway's downstream
    // unless [console] names another.
    if config.downstream.trim().is_empty()
        && let Some(d) = gateway_downstream
    {
        config.downstream = d;
    }
    if let Some(m) = &args.maildir {
        config.maildir = Some(m.clone());
    }
    let mut store_config = match args.store.locate() {
        Ok(located) => located.store,
        Err((code, e)) => {
            eprintln!("unspoof: {e}");
            return code;
        }
    };
    // The console reads and marks; the gateway prunes.
    store_config.retention_days = None;
    store_config.max_bytes = None;
    store_config.node = format!("{}/console", store_config.node.trim_end_matches("/cli"));
    let store = match unspoof_store::Store::open(store_config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("unspoof: store: {e}");
            return exit::SOFTWARE;
        }
    };
    store.flush().await;
    let policy = match crate::analyze::load_policy(args.store.config.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let hostname = policy.hostname.clone();
    let dns = match crate::analyze::dns_view(&args.dns).await {
        Ok(d) => d,
        Err((code, e)) => {
            eprintln!("unspoof: {e}");
            return code;
        }
    };
    let engine = unspoof_engine::Engine::new(policy, dns);
    if digest_now {
        let console = Console::with_engine(store.clone(), config, engine, &hostname);
        let run = unspoof_console::digest::send_digests(&console, true).await;
        store.close().await;
        return match run {
            Ok(run) => {
                report_digests(&run);
                println!(
                    "digests sent: {}, failed: {}",
                    run.sent.len(),
                    run.failed.len()
                );
                if run.failed.is_empty() {
                    exit::ACCEPT
                } else {
                    exit::SOFTWARE
                }
            }
            Err(e) => {
                eprintln!("unspoof: digest: {e}");
                exit::SOFTWARE
            }
        };
    }
    let tls = match unspoof_console::tls_acceptor(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("unspoof: {e}");
            return exit::CONFIG;
        }
    };
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("unspoof: console: signal handler: {e}");
            return exit::SOFTWARE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("unspoof: console: cannot listen on {}: {e}", config.listen);
            return exit::SOFTWARE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    warn_exposed(&config, &addr, tls.is_some());
    eprintln!(
        "unspoof: console listening on {}://{addr}/",
        if tls.is_some() { "https" } else { "http" }
    );
    let console = Console::with_engine(store.clone(), config, engine, &hostname);
    let mut serving = tokio::spawn(async move {
        match tls {
            Some(t) => unspoof_console::serve_tls(console, listener, t).await,
            None => unspoof_console::serve(console, listener).await,
        }
    });
    let stop = Serving(serving.abort_handle());
    let served = tokio::select! {
        r = &mut serving => r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        _ = signals.run("unspoof console", stop) => Ok(()),
    };
    store.close().await;
    match served {
        Ok(()) => exit::ACCEPT,
        Err(e) => {
            eprintln!("unspoof: console: {e}");
            exit::SOFTWARE
        }
    }
}

/// The console's server under the one signal loop. It has nothing to reload (a new
/// `[console]` or policy takes a restart); SIGTERM stops it as Ctrl-C always did (requests in
/// flight are dropped), and the caller's `store.close` then writes what the store has queued.
struct Serving(tokio::task::AbortHandle);

impl Running for Serving {
    fn reload(&self) -> Result<(), String> {
        Err("the console reads its configuration only at start; restart it".into())
    }

    async fn shutdown(self) -> bool {
        self.0.abort();
        true
    }
}

async fn add(args: AddArgs) -> u8 {
    let Some(role) = Role::parse(&args.role) else {
        eprintln!("unspoof: --role: administrator, domain_administrator or recipient");
        return exit::USAGE;
    };
    let scope: Vec<String> = args
        .scope
        .iter()
        .map(|s| s.trim().trim_start_matches('@').to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    match role {
        Role::Administrator if !scope.is_empty() => {
            eprintln!("unspoof: an administrator sees everything: no --scope");
            return exit::USAGE;
        }
        Role::DomainAdministrator | Role::Recipient if scope.is_empty() => {
            eprintln!("unspoof: --scope: the domains or addresses this account may see");
            return exit::USAGE;
        }
        Role::DomainAdministrator if scope.iter().any(|s| s.contains('@')) => {
            eprintln!("unspoof: --scope of a domain administrator: domains, not addresses");
            return exit::USAGE;
        }
        Role::Recipient if scope.iter().any(|s| !s.contains('@')) => {
            eprintln!("unspoof: --scope of a recipient: addresses (user@domain)");
            return exit::USAGE;
        }
        _ => {}
    }
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err()
        || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        eprintln!("unspoof: give the password on standard input");
        return exit::USAGE;
    }
    let hash = unspoof_gateway::auth::hash_password(line.trim_end_matches(['\r', '\n']));
    if hash.is_empty() {
        eprintln!("unspoof: the password could not be hashed");
        return exit::SOFTWARE;
    }
    // The first account may well come before the first message: it makes the store.
    let store = match crate::log::open_or_create(&args.store).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let account = ConsoleAccount {
        name: args.name.trim().to_string(),
        password_hash: hash,
        role: role.as_str().to_string(),
        scope,
        created_at: unspoof_store::now(),
        disabled: false,
    };
    let put = store.console_account_put(&account).await;
    store.close().await;
    match put {
        Ok(()) => {
            println!("account {} ({})", account.name, account.role);
            exit::ACCEPT
        }
        Err(e) => {
            eprintln!("unspoof: {e}");
            exit::SOFTWARE
        }
    }
}

async fn list(args: StoreArgs) -> u8 {
    let store = match open(&args).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listed = store.console_accounts().await;
    store.close().await;
    match listed {
        Ok(accounts) => {
            for a in accounts {
                println!(
                    "{:<24} {:<21} {:<20} {}{}",
                    a.name,
                    a.role,
                    format_time(a.created_at),
                    a.scope.join(" "),
                    if a.disabled { " (disabled)" } else { "" }
                );
            }
            exit::ACCEPT
        }
        Err(e) => {
            eprintln!("unspoof: {e}");
            exit::SOFTWARE
        }
    }
}

async fn remove(args: StoreArgs, name: String) -> u8 {
    let store = match open(&args).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let removed = store.console_account_remove(&name).await;
    store.close().await;
    match removed {
        Ok(true) => {
            println!("removed {name}");
            exit::ACCEPT
        }
        Ok(false) => {
            eprintln!("unspoof: no account {name}");
            exit::NO_INPUT
        }
        Err(e) => {
            eprintln!("unspoof: {e}");
            exit::SOFTWARE
        }
    }
}
