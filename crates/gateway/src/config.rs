//! The `[gateway]` section of `unspoof.toml`: every key, its default, and what it is for.
//!
//! Every limit lives in [`Limits`], with its default and its overload behaviour next to it, so
//! there is one place to read them (docs/gateway.md copies this table for administrators).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::GatewayError;

/// The mail domain of the embedded defaults: the demo site `unspoof serve` runs without a
/// configuration file. A name under `.localhost` (RFC 6761 6.3) never reaches another site,
/// and unlike `localhost` itself it has a dot, so the policy can protect it.
pub const DEFAULT_DOMAIN: &str = "example.localhost";

/// The `[gateway]` section. Unknown keys are an error, so a typo never silently means "default".
///
/// ```toml
/// [gateway]
/// data_dir = "./unspoof-data"          # Maildir, quarantine, sessions.jsonl, generated TLS key
/// hostname = "mx.example.org"          # greeting, Received, authserv-id of Authentication-Results
/// listen = "127.0.0.1:2525"            # inbound SMTP (port 25 in production)
/// submission = "127.0.0.1:5587"        # authenticated submission; "" disables it
/// metrics = "127.0.0.1:9425"           # Prometheus /metrics; "" disables it
/// downstream = "127.0.0.1:10025"       # the site's real MTA; absent = deliver to the Maildir
/// domains = ["example.org"]            # recipient domains we accept inbound mail for
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Directory for the Maildir (`maildir/`), the quarantine (`maildir/.Quarantine/`), the
    /// session log (`sessions.jsonl`) and the generated TLS certificate (`tls/`).
    /// Default `./unspoof-data`; created if missing.
    pub data_dir: PathBuf,
    /// Our name in the greeting, the EHLO reply, our Received header and as the authserv-id of
    /// Authentication-Results. Default: the machine's host name, else `localhost`.
    pub hostname: String,
    /// Inbound SMTP listener (unauthenticated mail for `domains`). Default `127.0.0.1:2525`.
    pub listen: SocketAddr,
    /// Submission listener (AUTH after STARTTLS, relays outward). Default `127.0.0.1:5587`;
    /// the empty string disables it.
    #[serde(deserialize_with = "opt_addr", serialize_with = "ser_opt_addr")]
    pub submission: Option<SocketAddr>,
    /// Prometheus metrics listener (`GET /metrics`). Default `127.0.0.1:9425`; the empty string
    /// disables it. Keep it on loopback: it has no authentication.
    #[serde(deserialize_with = "opt_addr", serialize_with = "ser_opt_addr")]
    pub metrics: Option<SocketAddr>,
    /// The site's real MTA, `host:port`, that accepted mail is relayed to in-line (the client
    /// gets 250 only after it accepted). Default: none, and accepted mail is delivered into the
    /// Maildir `<data_dir>/maildir` (fsynced before 250).
    pub downstream: Option<String>,
    /// The public names of the site's gateways (every `unspoof serve` of a fleet), as the MX
    /// records of `domains` should name them. `unspoof audit` checks that every MX is one of
    /// them: any other MX is a way around the gateway. Default: empty, read as `[hostname]`.
    pub gateway_names: Vec<String>,
    /// Where users report suspicious mail (`report-phish@` one of `domains`): mail to it is
    /// taken by the gateway, the reported message analysed, recorded and explained to the
    /// reporter (docs/reaction.md). Default: none.
    pub report_address: Option<String>,
    /// Who is told of each user report (the security team): the answer the reporter got, the
    /// original's record, the other mailboxes the same message reached, and for a forgery the
    /// `unspoof report abuse` command for the origin's contacts. Default: nobody.
    pub report_notify: Vec<String>,
    /// Recipient domains the inbound listener accepts mail for (exact match, case-insensitive).
    /// Any other recipient gets `550 5.7.1`: never an open relay. Default
    /// `[DEFAULT_DOMAIN]`.
    pub domains: Vec<String>,
    /// Client networks allowed to use our own `domains` in MAIL FROM on the inbound listener
    /// (e.g. an internal application server). Default empty.
    pub trusted_networks: Vec<IpNet>,
    /// Refuse, at MAIL, inbound (unauthenticated) mail whose MAIL FROM is in one of our own
    /// `domains` unless the client is in `trusted_networks`: our users send through submission.
    /// Default `true`.
    pub refuse_own_domain_senders: bool,
    /// Look up the client's PTR name for the Received header and the session log. Default `true`.
    pub reverse_dns: bool,
    /// PEM certificate chain for STARTTLS. Default: none, and a self-signed certificate for
    /// `hostname` is generated once into `<data_dir>/tls/`.
    pub tls_cert: Option<PathBuf>,
    /// PEM (PKCS#8, PKCS#1 or SEC1) private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Submission users. Default none (submission then refuses every AUTH).
    pub users: Vec<UserConfig>,
    /// DKIM keys for signing submission mail, one per domain. Default none.
    pub dkim: Vec<DkimKeyConfig>,
    /// Resource limits (see [`Limits`]).
    pub limits: Limits,
}

/// A submission user (`[[gateway.users]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name for AUTH PLAIN / LOGIN.
    pub name: String,
    /// Argon2 PHC string (`$argon2id$v=19$m=...`), e.g. from [`crate::auth::hash_password`].
    pub password_hash: String,
    /// Addresses this user may send as, in MAIL FROM and in the header From/Sender.
    /// `"@example.org"` allows every address at that domain.
    pub addresses: Vec<String>,
}

/// A DKIM signing key (`[[gateway.dkim]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// Signing domain (`d=`): submission mail whose header From is at this domain is signed.
    pub domain: String,
    /// Selector (`s=`); the public key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// PKCS#8 PEM private key, RSA or Ed25519 (see [`crate::dkim::keygen`]).
    pub key: PathBuf,
}

/// Every resource limit, with its default. Each one says what happens when it is reached.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message in octets, advertised as SIZE (RFC 1870). Over it: `552 5.3.4` after the
    /// data is read to its end. Default 26214400 (25 MiB).
    pub max_message_size: usize,
    /// Recipients per message. Over it: `452 4.5.3` for the extra RCPT (RFC 5321 4.5.3.1.10).
    /// Default 100 (the RFC 5321 4.5.3.1.8 minimum).
    pub max_recipients: usize,
    /// Longest command line in octets, CRLF included. Over it: `500 5.5.2`.
    /// Default 2048 (RFC 5321 4.5.3.1.4 allows 512 plus extension parameters).
    pub max_command_line: usize,
    /// Longest text line inside DATA in octets, CRLF included. Over it: `550 5.6.0` after the
    /// data is read to its end. Default 10000 (RFC 5322 2.1.1 says 1000; real mail exceeds it).
    pub max_line_length: usize,
    /// Header fields per message. Over it: `550 5.6.0`. Default 1000.
    pub max_header_fields: usize,
    /// Octets in the whole header section. Over it: `550 5.6.0`. Default 262144 (256 KiB).
    pub max_header_size: usize,
    /// Open SMTP connections in total (both listeners). Over it the new connection gets
    /// `421 4.3.2` and is closed at once. Default 2000.
    pub max_connections: usize,
    /// Open SMTP connections from one client IP. Over it: `421 4.7.0` and closed. Default 50.
    pub max_connections_per_ip: usize,
    /// Seconds to receive one complete command line (not one byte). Over it: `421 4.4.2` and
    /// closed. Default 300 (RFC 5321 4.5.3.2.7).
    pub command_timeout: u64,
    /// Seconds to receive the whole DATA content. Over it: `421 4.4.2` and closed, nothing kept.
    /// Default 600.
    pub data_timeout: u64,
    /// Seconds a session may last in total, so a client cannot hold a slot forever with NOOPs.
    /// Over it: `421 4.4.2` at the next command. Default 3600.
    pub session_timeout: u64,
    /// Refused commands (syntax, sequence, unknown, failed AUTH) before we hang up with
    /// `421 4.7.0`. Default 10.
    pub max_errors: u32,
    /// Seconds for the engine to decide. Over it: `451 4.3.0` (the sender retries). Default 120.
    pub decide_timeout: u64,
    /// Seconds for the downstream MTA to connect or answer any one command. Over it: `451 4.4.2`
    /// and the client retries. Default 60.
    pub downstream_timeout: u64,
    /// Seconds that shutdown (SIGTERM) waits for in-flight sessions. Default 60.
    pub drain_timeout: u64,
    /// Seconds in which a line, once its first octet arrived, must be complete (its LF
    /// received): a command line, an AUTH response, or a line inside DATA; and the TLS
    /// handshake after STARTTLS. A client that
    /// trickles a byte now and then is cut off here long before `command_timeout` or
    /// `data_timeout`. Over it: `421 4.4.2` and closed, nothing kept. Default 60.
    pub line_timeout: u64,
    /// Octets per second that DATA must keep up on average: after `t` seconds of DATA the
    /// client must have sent `min_data_rate * (t - line_timeout)` octets (Postfix's
    /// `smtpd_min_data_rate` works the same way). Under it: `421 4.4.2` and closed, nothing
    /// kept. 0 disables it. Default 1024.
    pub min_data_rate: u64,
    /// Octets of message data that all sessions together may hold in memory while messages are
    /// received and decided (each message counts for its size from its first octet until its
    /// final reply). A message that would go over it is read to its end, not kept, and answered
    /// `452 4.3.1` (the client retries later); a declared SIZE that does not fit gets the same
    /// at MAIL. Messages over 1 MiB may use only three quarters of it, so a few large messages
    /// never crowd out ordinary mail. Deciding and relaying a message make copies of it, so the
    /// process may hold up to about twice this. Default 134217728 (128 MiB).
    pub max_inflight_memory: usize,
    /// Milliseconds the reply to a failed AUTH is held back; each further failure from the same
    /// client IP (IPv6: its /64) or for the same account doubles it, up to
    /// `auth_failure_delay_max_ms`. The reply is `535 5.7.8` either way. Default 1000.
    pub auth_failure_delay_ms: u64,
    /// The longest delay of a failed AUTH, in milliseconds. Default 16000.
    pub auth_failure_delay_max_ms: u64,
    /// Failed AUTH attempts from one client IP (IPv6: its /64) within `auth_failure_window`
    /// before that IP is locked out for `auth_lockout` seconds: every AUTH from it then gets
    /// `454 4.7.0` without its password being checked. Default 10.
    pub auth_failures_per_ip: u32,
    /// Failed AUTH attempts for one account name (from anywhere) within
    /// `auth_failure_window` before the account is locked out for `auth_lockout` seconds:
    /// `454 4.7.0`, even with the right password. Higher than the per-IP limit, so an attacker
    /// spreading guesses over many addresses is stopped without locking out the user for
    /// every mistyped password. Default 30.
    pub auth_failures_per_account: u32,
    /// Seconds after which a failed AUTH is forgotten (the count starts again when the last
    /// failure is older than this). Default 900.
    pub auth_failure_window: u64,
    /// Seconds a locked-out client IP or account stays locked. Default 900.
    pub auth_lockout: u64,
    /// Transactions refused at MAIL FROM or RCPT TO (a spoof of our own domain from outside,
    /// relaying denied, a malformed or non-ASCII address, a sender the user does not own) that
    /// one connection puts on record: each is a searchable record with the `refused` action
    /// (`unspoof log search --action refused`). Past it, a connection's further refusals are
    /// only counted (`unspoof_refusals_unrecorded_total`), so a hostile client cannot flood the
    /// store; the client sees the same replies either way. Default 100.
    pub max_refusal_records: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 2048,
            max_line_length: 10_000,
            max_header_fields: 1000,
            max_header_size: 256 * 1024,
            max_connections: 2000,
            max_connections_per_ip: 50,
            command_timeout: 300,
            data_timeout: 600,
            session_timeout: 3600,
            max_errors: 10,
            decide_timeout: 120,
            downstream_timeout: 60,
            drain_timeout: 60,
            line_timeout: 60,
            min_data_rate: 1024,
            max_inflight_memory: 128 * 1024 * 1024,
            auth_failure_delay_ms: 1000,
            auth_failure_delay_max_ms: 16_000,
            auth_failures_per_ip: 10,
            auth_failures_per_account: 30,
            auth_failure_window: 900,
            auth_lockout: 900,
            max_refusal_records: 100,
        }
    }
}

impl Limits {
    pub(crate) fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout)
    }
    pub(crate) fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.data_timeout)
    }
    pub(crate) fn session_timeout(&self) -> Duration {
        Duration::from_secs(self.session_timeout)
    }
    pub(crate) fn decide_timeout(&self) -> Duration {
        Duration::from_secs(self.decide_timeout)
    }
    pub(crate) fn downstream_timeout(&self) -> Duration {
        Duration::from_secs(self.downstream_timeout)
    }
    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout)
    }
    pub(crate) fn line_timeout(&self) -> Duration {
        Duration::from_secs(self.line_timeout)
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            data_dir: PathBuf::from("./unspoof-data"),
            hostname: system_hostname(),
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            submission: Some(SocketAddr::from(([127, 0, 0, 1], 5587))),
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 9425))),
            downstream: None,
            domains: vec![DEFAULT_DOMAIN.to_string()],
            gateway_names: Vec::new(),
            report_address: None,
            report_notify: Vec::new(),
            trusted_networks: Vec::new(),
            refuse_own_domain_senders: true,
            reverse_dns: true,
            tls_cert: None,
            tls_key: None,
            users: Vec::new(),
            dkim: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// The whole `unspoof.toml`, of which the gateway reads only `[gateway]`.
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    gateway: GatewayConfig,
}

impl GatewayConfig {
    /// Reads the `[gateway]` section from the text of an `unspoof.toml`, other sections
    /// ignored; a file without `[gateway]` gives the defaults. For tests and tools: `unspoof`
    /// reads the whole file once, with positions in its errors (crates/cli/src/config.rs).
    pub fn from_toml(text: &str) -> Result<Self, GatewayError> {
        let file: File = toml::from_str(text).map_err(|e| GatewayError::Config(e.to_string()))?;
        file.gateway.validated()
    }

    /// The site's gateway names: `gateway_names`, or this gateway's `hostname` alone.
    pub fn gateways(&self) -> Vec<String> {
        if self.gateway_names.is_empty() {
            vec![self.hostname.trim_end_matches('.').to_ascii_lowercase()]
        } else {
            self.gateway_names.clone()
        }
    }

    /// Checks what serde cannot: values that parse but cannot work.
    pub fn validated(mut self) -> Result<Self, GatewayError> {
        for d in self.domains.iter_mut().chain(self.gateway_names.iter_mut()) {
            *d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        }
        if let Some(bad) = self
            .gateway_names
            .iter()
            .find(|n| n.is_empty() || n.contains(char::is_whitespace))
        {
            return Err(GatewayError::Config(format!(
                "gateway_names: {bad:?} is not a host name"
            )));
        }
        if let Some(a) = self.report_address.as_mut() {
            *a = a.trim().to_ascii_lowercase();
            let domain = a.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if domain.is_empty() || a.contains(char::is_whitespace) || a.starts_with('@') {
                return Err(GatewayError::Config(format!(
                    "report_address: {a:?} is not an address"
                )));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(GatewayError::Config(
                "tls_cert and tls_key must be given together".into(),
            ));
        }
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err(GatewayError::Config(format!(
                "hostname {:?} is not a host name",
                self.hostname
            )));
        }
        let l = &self.limits;
        if l.max_recipients == 0 || l.max_connections == 0 || l.max_connections_per_ip == 0 {
            return Err(GatewayError::Config(
                "max_recipients, max_connections and max_connections_per_ip must be at least 1"
                    .into(),
            ));
        }
        if l.line_timeout == 0 || l.auth_failures_per_ip == 0 || l.auth_failures_per_account == 0 {
            return Err(GatewayError::Config(
                "line_timeout, auth_failures_per_ip and auth_failures_per_account must be at least 1"
                    .into(),
            ));
        }
        if l.max_inflight_memory < l.max_message_size.min(1 << 20) {
            return Err(GatewayError::Config(
                "max_inflight_memory must hold at least one message of 1 MiB (or max_message_size)"
                    .into(),
            ));
        }
        if l.max_command_line < 512 {
            return Err(GatewayError::Config(
                "max_command_line must be at least 512 (RFC 5321 4.5.3.1.4)".into(),
            ));
        }
        Ok(self)
    }

    /// Is `domain` one of the site's domains (exact, case-insensitive)?
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_string())
}

fn opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim().parse().map(Some).map_err(serde::de::Error::custom)
}

fn ser_opt_addr<S: serde::Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_str(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = GatewayConfig::from_toml("").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./unspoof-data"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:2525");
        assert_eq!(c.submission.unwrap().to_string(), "127.0.0.1:5587");
        assert_eq!(c.metrics.unwrap().to_string(), "127.0.0.1:9425");
        assert!(c.downstream.is_none());
        assert_eq!(c.limits.max_recipients, 100);
    }

    #[test]
    fn gateway_section_is_read_and_other_sections_ignored() {
        let c = GatewayConfig::from_toml(
            "[policy]\nwhatever = 1\n[gateway]\ndomains = [\"Example.ORG.\"]\nsubmission = \"\"\n\
             downstream = \"127.0.0.1:10025\"\n[gateway.limits]\nmax_recipients = 5\n",
        )
        .unwrap();
        assert!(c.is_local_domain("example.org"));
        assert!(c.is_local_domain("EXAMPLE.org"));
        assert!(!c.is_local_domain("sub.example.org"));
        assert!(c.submission.is_none());
        assert_eq!(c.limits.max_recipients, 5);
        assert_eq!(c.downstream.as_deref(), Some("127.0.0.1:10025"));
    }

    #[test]
    fn every_limit_is_in_the_example_and_the_docs_at_its_default() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let example = std::fs::read_to_string(root.join("examples/unspoof.toml")).unwrap();
        assert!(GatewayConfig::from_toml(&example).is_ok());
        let example: toml::Value = toml::from_str(&example).unwrap();
        let defaults = toml::Value::try_from(Limits::default()).unwrap();
        assert_eq!(example["gateway"]["limits"], defaults);
        let docs = std::fs::read_to_string(root.join("docs/gateway.md")).unwrap();
        for key in defaults.as_table().unwrap().keys() {
            assert!(
                docs.contains(&format!("| `{key}` |")),
                "{key} not in docs/gateway.md"
            );
        }
    }

    #[test]
    fn gateway_names_default_to_the_hostname() {
        let c = GatewayConfig::from_toml("[gateway]\nhostname = \"MX1.Example.org\"\n").unwrap();
        assert_eq!(c.gateways(), vec!["mx1.example.org".to_string()]);
        let c = GatewayConfig::from_toml(
            "[gateway]\nhostname = \"mx1.example.org\"\ngateway_names = [\"MX1.example.org.\", \"mx2.example.org\"]\n",
        )
        .unwrap();
        assert_eq!(c.gateways(), vec!["mx1.example.org", "mx2.example.org"]);
        assert!(GatewayConfig::from_toml("[gateway]\ngateway_names = [\"\"]\n").is_err());
    }

    #[test]
    fn the_report_address_is_an_address() {
        let c = GatewayConfig::from_toml(
            "[gateway]\nreport_address = \" Report-Phish@Example.org \"\n",
        )
        .unwrap();
        assert_eq!(
            c.report_address.as_deref(),
            Some("report-phish@example.org")
        );
        for bad in ["report-phish", "@example.org", "report phish@example.org"] {
            let toml = format!("[gateway]\nreport_address = {bad:?}\n");
            assert!(GatewayConfig::from_toml(&toml).is_err(), "{bad}");
        }
        assert_eq!(GatewayConfig::default().report_address, None);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(GatewayConfig::from_toml("[gateway]\nlisten_port = 25\n").is_err());
        assert!(GatewayConfig::from_toml("[gateway.limits]\nmax_rcpt = 5\n").is_err());
    }
}
