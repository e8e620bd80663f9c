//! The trust material of `[signatures]` (unspoof.toml), read from disk for the engine: the
//! engine does no I/O of its own, so every front door that builds one (`analyze`, `serve`,
//! `milter`) loads the OpenPGP keyring folder and the S/MIME CA bundle here, once at start
//! and again on each reload (SIGHUP, [`reload_trust`]).

use std::path::Path;

use unspoof_engine::{Dns, Engine, Policy, policy::SYSTEM_CA_BUNDLE, signed::TrustStore};

/// The engine for `policy` with its signature trust loaded; the error names the file.
pub fn engine(policy: Policy, dns: Dns) -> Result<Engine, String> {
    let trust = load(&policy)?;
    Ok(Engine::new(policy, dns).with_signature_trust(trust))
}

/// The reload hook (SIGHUP): loads the trust `policy` names and hands it to `engine`, before the
/// caller installs `policy` itself. A file that cannot be read leaves the old trust (and, with
/// the error, the old policy) in force.
pub fn reload_trust(engine: &Engine, policy: &Policy) -> Result<(), String> {
    engine.set_signature_trust(load(policy)?);
    Ok(())
}

/// Reads `[signatures] openpgp_keyring` (every `.asc`, `.gpg`, `.pgp`, `.key` file in it) and
/// `smime_ca_bundle` (default: the system's bundle, none when it is missing).
pub fn load(policy: &Policy) -> Result<TrustStore, String> {
    let settings = &policy.signatures;
    let mut trust = TrustStore::default();
    if let Some(dir) = &settings.openpgp_keyring {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("[signatures] openpgp_keyring {}: {e}", dir.display()))?;
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "asc" | "gpg" | "pgp" | "key"))
            })
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            trust
                .openpgp
                .add(&data)
                .map_err(|e| format!("{}: not an OpenPGP public key: {e}", f.display()))?;
        }
    }
    let (bundle, required) = match &settings.smime_ca_bundle {
        Some(p) => (p.as_path(), true),
        None => (Path::new(SYSTEM_CA_BUNDLE), false),
    };
    match std::fs::read(bundle) {
        Ok(pem) => {
            trust
                .ca
                .add_pem(&pem)
                .map_err(|e| format!("[signatures] smime_ca_bundle {}: {e}", bundle.display()))?;
        }
        Err(e) if required => {
            return Err(format!(
                "[signatures] smime_ca_bundle {}: {e}",
                bundle.display()
            ));
        }
        Err(_) => {}
    }
    Ok(trust)
}
