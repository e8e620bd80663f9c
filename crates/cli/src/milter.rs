//! `unspoof milter`: the engine inside Postfix or Sendmail (crates/milter).
//!
//! One file, `unspoof.toml`, configures it: the policy at the top level and the milter in
//! `[milter]` (docs/milter.md). The authserv-id of our Authentication-Results is the policy's
//! `hostname`, or the machine's host name when the file sets none. SIGHUP re-reads the policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use unspoof_milter::OnError;

use unspoof_store::StoreConfig;

use crate::{
    analyze::{DnsArgs, dns_view},
    config::{Config, ConfigError},
    exit,
    serve::config_exit,
    signals::{self, Signals},
    store_adapter::{
        MilterStore, allow_list, contact_history, open_store, outbound_history, signer_history,
        store_config,
    },
};

/// `[store]` of the configuration file, if it has one (the spool goes under `./unspoof-data`
/// unless the section sets `data_dir`).
fn milter_store_config(file: &Config) -> Option<StoreConfig> {
    if !file.sets("store") {
        return None;
    }
    let default_dir = StoreConfig::default().data_dir;
    Some(store_config(file, &default_dir, &file.policy.hostname))
}

#[derive(Args)]
pub struct MilterArgs {
    /// The configuration file (policy and `[milter]`); without it the defaults: listen on
    /// inet:127.0.0.1:8891, tempfail when no verdict can be had.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the MTA connects: inet:HOST:PORT, inet:PORT@HOST or unix:/path (overrides
    /// `[milter] listen`).
    #[arg(long)]
    pub listen: Option<String>,
    /// tempfail or accept, when there is no verdict (overrides `[milter] on_error`).
    #[arg(long = "on-error")]
    pub on_error: Option<String>,
    #[command(flatten)]
    pub dns: DnsArgs,
}

/// The whole file as `unspoof milter` reads it (every default without one): the authserv-id
/// is the policy's `hostname`, or the machine's host name when the file sets none. SIGHUP
/// reads it again the same way.
fn milter_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    let mut file = Config::load_or_default(path)?;
    if !file.sets("hostname") {
        file.policy.hostname = machine_hostname().unwrap_or(file.policy.hostname);
    }
    Ok(file)
}

fn machine_hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

pub fn run(args: MilterArgs) -> u8 {
    let file = match milter_config(args.config.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("unspoof: {e}");
            return config_exit(&e);
        }
    };
    let policy = file.policy.clone();
    let mut config = file.milter.clone();
    if let Some(listen) = &args.listen {
        match listen.parse() {
            Ok(l) => config.listen = vec![l],
            Err(e) => {
                eprintln!("unspoof: {e}");
                return exit::USAGE;
            }
        }
    }
    if let Some(on_error) = &args.on_error {
        match on_error.parse::<OnError>() {
            Ok(o) => config.on_error = o,
            Err(e) => {
                eprintln!("unspoof: {e}");
                return exit::USAGE;
            }
        }
    }

    let store_config = milter_store_config(&file);

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
            "unspoof milter: authserv-id {}; on_error {:?}; DNS: {}",
            policy.hostname,
            config.on_error,
            dns.description()
        );
        // The store only when the file has a [store] section: a milter usually runs as an
        // unprivileged service beside an MTA that keeps its own logs and hold queue.
        let store = match &store_config {
            Some(c) => match open_store("unspoof milter", c.clone()).await {
                Ok(s) => Some(s),
                Err(code) => return code,
            },
            None => None,
        };
        let mut engine = match crate::signatures::engine(policy, dns) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("unspoof milter: {e}");
                return exit::CONFIG;
            }
        };
        if let Some(s) = &store {
            // The console's allow list lifts a quarantine or tag here as in `unspoof serve`.
            engine = engine.with_sender_allow_list(allow_list(s));
        }
        let mut milter = unspoof_milter::Milter::new(config, engine);
        if let Some(s) = &store {
            milter = milter
                .with_quarantine_store(Arc::new(MilterStore(s.clone())))
                .with_message_log(Arc::new(MilterStore(s.clone())))
                .with_contact_history(contact_history(s))
                .with_outbound_history(outbound_history(s))
                .with_signer_history(signer_history(s));
        }
        let code = match run_milter(milter, args.config.clone()).await {
            Ok(()) => exit::ACCEPT,
            Err(e) => {
                eprintln!("unspoof: {e}");
                exit::SOFTWARE
            }
        };
        if let Some(s) = store {
            s.close().await;
        }
        code
    })
}

/// Runs the milter under the one signal loop: SIGHUP re-reads the policy from `config`,
/// SIGTERM drains.
async fn run_milter(milter: unspoof_milter::Milter, config: Option<PathBuf>) -> Result<(), String> {
    let signals = Signals::install().map_err(|e| format!("signal handler: {e}"))?;
    let handle = milter.start().await.map_err(|e| e.to_string())?;
    let list: Vec<String> = handle.listening().iter().map(|l| l.to_string()).collect();
    eprintln!("unspoof milter: listening on {}", list.join(", "));
    signals
        .run("unspoof milter", Running { handle, config })
        .await;
    Ok(())
}

/// A started milter and the file SIGHUP re-reads.
struct Running {
    handle: unspoof_milter::MilterHandle,
    config: Option<PathBuf>,
}

impl signals::Running for Running {
    fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.config else {
            return Err("no --config file to re-read".into());
        };
        let policy = milter_config(Some(path)).map_err(|e| e.to_string())?.policy;
        // The trust first: a keyring or bundle that cannot be read keeps the old trust and
        // the old policy.
        crate::signatures::reload_trust(self.handle.engine(), &policy)?;
        self.handle.engine().set_policy(policy);
        Ok(())
    }

    async fn shutdown(self) -> bool {
        self.handle.shutdown().await
    }
}
