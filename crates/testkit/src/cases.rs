//! The table of verdict cases: one folder, one `NAME.toml` per case beside its message.
//!
//! ```toml
//! message = "own-domain-spoof.eml"   # beside this file
//! policy = """                       # unspoof.toml's policy part (default: every default)
//! hostname = "mx.shop.example"
//! protected_domains = ["shop.example"]
//! """
//! gateway_names = []                 # [gateway] gateway_names of the site's file
//! zone = """                         # the DNS, a master file (default: every name absent)
//! shop.example. IN TXT "v=spf1 -all"
//! """
//! [envelope]                         # every key optional
//! ip = "203.0.113.9"
//! helo = "mail.elsewhere.example"
//! mail_from = "ceo@shop.example"
//! rcpt = ["bob@shop.example"]
//! received_at = 1765090000           # Unix time (default: the topmost Received date)
//! first_contact = true               # the store's answers, when the case needs them
//! [expect]
//! action = "reject"                  # accept, tag, quarantine or reject
//! codes = ["spoof.own_domain"]       # every reason code of the verdict, no more, no fewer
//! disposition = "defer"              # what the doors do, when not the action (a DNS outage)
//! ```
//!
//! A DNS outage is written in the zone: names whose CNAMEs loop are answered SERVFAIL.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use unspoof_engine::{Envelope, Policy};

/// One case of the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictCase {
    /// The case's name (its file name without `.toml`).
    #[serde(skip)]
    pub name: String,
    /// The message file, beside the case.
    pub message: PathBuf,
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub gateway_names: Vec<String>,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub envelope: CaseEnvelope,
    pub expect: Expect,
}

/// The envelope of a case, as the front doors would fill it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseEnvelope {
    pub ip: Option<std::net::IpAddr>,
    pub helo: Option<String>,
    pub mail_from: Option<String>,
    #[serde(default)]
    pub rcpt: Vec<String>,
    pub received_at: Option<i64>,
    pub auth_user: Option<String>,
    pub first_contact: Option<bool>,
    pub known_sender: Option<bool>,
    pub sent_by_us: Option<bool>,
    pub allowed_sender: Option<bool>,
}

/// What the engine must say.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub action: String,
    pub codes: Vec<String>,
    /// What the doors must do (`Decision::disposition`) where it is not the action: `defer`
    /// for a DNS outage under `dns_temperror = "defer"`. Absent: the action's word.
    #[serde(default)]
    pub disposition: Option<String>,
}

impl VerdictCase {
    /// The message's bytes.
    pub fn raw(&self) -> Vec<u8> {
        std::fs::read(&self.message)
            .unwrap_or_else(|e| panic!("{}: {}: {e}", self.name, self.message.display()))
    }

    /// The case's policy, with its gateway names, as the CLI's configuration hands it over.
    pub fn policy(&self) -> Policy {
        let mut policy = Policy::parse(&self.policy, &self.name)
            .unwrap_or_else(|e| panic!("{}: policy: {e}", self.name));
        policy.gateway_names = self.gateway_names.clone();
        policy
            .validate()
            .unwrap_or_else(|e| panic!("{}: policy: {e:?}", self.name));
        policy
    }

    pub fn envelope(&self) -> Envelope {
        let e = &self.envelope;
        Envelope {
            ip: e.ip,
            helo: e.helo.clone(),
            mail_from: e.mail_from.clone(),
            rcpt: e.rcpt.clone(),
            received_at: e.received_at,
            auth_user: e.auth_user.clone(),
            first_contact: e.first_contact,
            known_sender: e.known_sender,
            sent_by_us: e.sent_by_us,
            allowed_sender: e.allowed_sender,
            ..Envelope::default()
        }
    }
}

/// Every case of the folder `dir`, by name; panics on a case that cannot be read (a broken
/// table is a failure, not fewer cases).
pub fn verdict_cases(dir: &Path) -> Vec<VerdictCase> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut case: VerdictCase =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            case.name = path.file_stem().unwrap().to_string_lossy().into_owned();
            case.message = dir.join(&case.message);
            case
        })
        .collect()
}
