//! `unspoof serve` (the SMTP gateway) and `unspoof dkim keygen`.
//!
//! One file, `unspoof.toml`, configures everything: the policy at the top level and the
//! gateway in `[gateway]`. Two values are shared so they are written once: the host name
//! (`hostname` at the top level is the gateway's too, unless `[gateway]` sets its own; the
//! engine's authserv-id is always the gateway's name) and the site's domains (`[gateway]
//! domains` defaults to `protected_domains`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use clap::{Args, Subcommand};
use unspoof_gateway::{EngineDecider, Gateway, JsonlLog, SessionLog, SessionLogs};

use crate::{
    analyze::{DnsArgs, dns_view},
    config::{Config, ConfigError},
    exit,
    signals::{Running, Signals},
    store_adapter::{
        GatewayStore, allow_list, contact_history, open_store, outbound_history, signer_history,
        store_config,
    },
};

#[derive(Args)]
pub struct ServeArgs {
    /// The configuration file (policy, `[gateway]` and `[store]`); without it, the embedded
    /// defaults: SMTP on 127.0.0.1:2525, submission on 127.0.0.1:5587, metrics on
    /// 127.0.0.1:9425, mail for `example.localhost` (protected: mail forged in its name is
    /// refused) delivered into ./unspoof-data/maildir, records and the quarantine in
    /// ./unspoof-data/unspoof.db (SQLite).
    #[arg(long, short, value_name = "FILE", env = "UNSPOOF_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides `[gateway] data_dir`).
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub dns: DnsArgs,
}

#[derive(Subcommand)]
pub enum DkimCommand {
    /// Generate a DKIM signing key and print the DNS TXT record to publish.
    Keygen(KeygenArgs),
}

#[derive(Args)]
pub struct KeygenArgs {
    #[arg(long)]
    pub domain: String,
    #[arg(long)]
    pub selector: String,
    /// rsa (2048 bits) or ed25519.
    #[arg(long, default_value = "rsa")]
    pub algorithm: String,
    /// Where to write the private key (PKCS#8 PEM, mode 0600; never overwritten).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The whole file as `unspoof serve` reads it (every default without one): the gateway's
/// host name is the authserv-id of the policy (the top-level `hostname` when `[gateway]` sets
/// none), and the gateway's domains and the protected domains default to each other. SIGHUP
/// reads it again the same way.
pub fn serve_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    let mut site = Config::load_or_default(path)?;
    if site.sets("hostname") && !site.sets("gateway.hostname") {
        site.gateway.hostname = site.policy.hostname.clone();
    }
    site.policy.hostname = site.gateway.hostname.clone();
    if !site.sets("gateway.domains") && !site.policy.protected_domains.is_empty() {
        site.gateway.domains = site.policy.protected_domains.clone();
    }
    // A site that names no domain at all is the demo site of the embedded defaults: it
    // protects its own mail domain, so a message forged in its name is refused.
    if !site.sets("gateway.domains") && site.policy.protected_domains.is_empty() {
        site.policy.protected_domains = site.gateway.domains.clone();
    }
    Ok(site)
}

/// The exit code for a configuration that cannot be used: no file, or a bad one.
pub fn config_exit(e: &ConfigError) -> u8 {
    match e {
        ConfigError::Read { .. } => exit::NO_INPUT,
        ConfigError::Invalid { .. } => exit::CONFIG,
    }
}

pub fn serve(args: ServeArgs) -> u8 {
    let site = match serve_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("unspoof: {e}");
            return config_exit(&e);
        }
    };
    let mut config = site.gateway.clone();
    let policy = site.policy.clone();
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    // The gateway's host name names it in the fleet's records unless [store] says otherwise.
    let store_config = store_config(&site, &config.data_dir, &config.hostname);
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        eprintln!("unspoof: {}: {e}", config.data_dir.display());
        return exit::SOFTWARE;
    }
    let jsonl = match JsonlLog::open(&config.data_dir.join("sessions.jsonl")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("unspoof: {}/sessions.jsonl: {e}", config.data_dir.display());
            return exit::SOFTWARE;
        }
    };

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
    runtime.block_on(async move {
        let dns = match dns_view(&args.dns).await {
            Ok(d) => d,
            Err((code, msg)) => {
                eprintln!("unspoof: {msg}");
                return code;
            }
        };
        eprintln!(
            "unspoof serve: SMTP on {} for {}; submission on {}; metrics on {}; {}; DNS: {}",
            config.listen,
            config.domains.join(", "),
            config
                .submission
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into()),
            config
                .metrics
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into()),
            match &config.downstream {
                Some(d) => format!("relaying to {d}"),
                None => format!(
                    "delivering into {}",
                    config.data_dir.join("maildir").display()
                ),
            },
            dns.description(),
        );
        // A PostgreSQL that is down does not stop the gateway: records are spooled and the
        // quarantine falls back to the spool until it answers.
        let store = match open_store("unspoof serve", store_config).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let engine = match crate::signatures::engine(policy, dns) {
            Ok(e) => e.with_sender_allow_list(allow_list(&store)),
            Err(e) => {
                eprintln!("unspoof serve: {e}");
                return exit::CONFIG;
            }
        };
        let rdns = Arc::new(unspoof_gateway::EngineReverseDns(engine.clone()));
        let desk = crate::user_reports::configured(&config.data_dir, &config)
            .map(|desk| crate::user_reports::start(desk, engine.clone(), store.clone()))
            .transpose();
        let desk = match desk {
            Ok(d) => d,
            Err(e) => {
                eprintln!("unspoof serve: report_address: {e}");
                return exit::CONFIG;
            }
        };
        let console = match crate::console::start_in_serve(
            site.console.clone(),
            &store,
            engine.clone(),
            &config.hostname,
            config.downstream.as_deref(),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("unspoof: {e}");
                return exit::CONFIG;
            }
        };
        let trust_engine = engine.clone();
        let reload_from: Option<unspoof_gateway::PolicySource> = args.config.clone().map(|path| {
            Box::new(move || {
                let policy = serve_config(Some(&path))
                    .map(|c| c.policy)
                    .map_err(|e| e.to_string())?;
                crate::signatures::reload_trust(&trust_engine, &policy)?;
                Ok(policy)
            }) as unspoof_gateway::PolicySource
        });
        let decider = EngineDecider::new(engine, reload_from)
            .with_contact_history(contact_history(&store))
            .with_outbound_history(outbound_history(&store))
            .with_signer_history(signer_history(&store));
        let logs: Vec<Arc<dyn SessionLog>> =
            vec![Arc::new(jsonl), Arc::new(GatewayStore(store.clone()))];
        let (data_dir, hostname) = (config.data_dir.clone(), config.hostname.clone());
        let mut gateway = Gateway::new(config, Arc::new(decider))
            .reverse_dns(rdns)
            .quarantine(Arc::new(GatewayStore(store.clone())))
            .session_log(Arc::new(SessionLogs(logs)));
        if let Some(desk) = desk {
            gateway = gateway.report_capture(Arc::new(desk));
        }
        let gateway = match crate::dmarc_serve::attach(
            gateway, &site, &store, &data_dir, &hostname, &args.dns,
        )
        .await
        {
            Ok(g) => g,
            Err(e) => {
                eprintln!("unspoof: [dmarc]: {e}");
                return exit::CONFIG;
            }
        };
        let code = match run_gateway(gateway).await {
            Ok(()) => exit::ACCEPT,
            Err(e) => {
                eprintln!("unspoof: {e}");
                exit::SOFTWARE
            }
        };
        for task in console {
            task.abort();
        }
        // Writes what is still queued (or spools it) before the process ends.
        store.close().await;
        code
    })
}

/// Runs the gateway under the one signal loop: SIGHUP reloads the policy, SIGTERM drains.
async fn run_gateway<D: unspoof_gateway::Decide>(gateway: Gateway<D>) -> Result<(), String> {
    let signals = Signals::install().map_err(|e| format!("signal handler: {e}"))?;
    let handle = gateway.start().await.map_err(|e| e.to_string())?;
    eprintln!(
        "unspoof: SMTP on {}, submission on {}, metrics on {}",
        handle.inbound,
        handle.submission.map_or("-".into(), |a| a.to_string()),
        handle.metrics.map_or("-".into(), |a| a.to_string()),
    );
    signals.run("unspoof", handle).await;
    Ok(())
}

impl Running for unspoof_gateway::ServeHandle {
    fn reload(&self) -> Result<(), String> {
        unspoof_gateway::ServeHandle::reload(self)
    }

    async fn shutdown(self) -> bool {
        unspoof_gateway::ServeHandle::shutdown(self).await
    }
}

pub fn dkim(command: DkimCommand) -> u8 {
    match command {
        DkimCommand::Keygen(args) => {
            let alg = match args.algorithm.parse::<unspoof_gateway::dkim::Algorithm>() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("unspoof: {e}");
                    return exit::USAGE;
                }
            };
            let out = args
                .out
                .unwrap_or_else(|| PathBuf::from(format!("{}.{}.key", args.selector, args.domain)));
            match unspoof_gateway::dkim::keygen(&args.domain, &args.selector, alg, &out) {
                Ok(key) => {
                    println!("private key written to {}", out.display());
                    println!("publish this TXT record:");
                    println!("{}. IN TXT {}", key.dns_name, quote_txt(&key.dns_txt));
                    exit::ACCEPT
                }
                Err(e) => {
                    eprintln!("unspoof: {e}");
                    exit::SOFTWARE
                }
            }
        }
    }
}

pub fn hash_password() -> u8 {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err()
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
    println!("{hash}");
    exit::ACCEPT
}

/// The TXT value as master-file character-strings of at most 255 bytes (RFC 1035 3.3.14).
fn quote_txt(value: &str) -> String {
    let chunks: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    if chunks.len() == 1 {
        chunks[0].clone()
    } else {
        format!("( {} )", chunks.join(" "))
    }
}
