//! The `[milter]` section of `unspoof.toml`: every key, its default, and what happens when a
//! limit is reached. This is the one place the milter's limits are defined (docs/milter.md
//! copies the table).
//!
//! ```toml
//! [milter]
//! listen = "inet:127.0.0.1:8891"   # or "unix:/run/unspoof/milter.sock", or a list of both
//! on_error = "tempfail"            # or "accept": when we cannot decide (timeout, DNS outage)
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::MilterError;

/// The `[milter]` section. Unknown keys are an error, so a typo never silently means "default".
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MilterConfig {
    /// Where the MTA connects: `inet:HOST:PORT` (also Sendmail's `inet:PORT@HOST`) or
    /// `unix:/path` (also `local:/path`); one string or a list. Default `inet:127.0.0.1:8891`
    /// (OpenDKIM's customary port, so an existing `smtpd_milters` line keeps working).
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<Listen>,
    /// What the MTA is told when we cannot decide: the engine took longer than
    /// `eval_timeout`, failed, the DNS did not answer for the sender's DMARC/SPF/DKIM, or the
    /// message is over `max_message_size`. `tempfail` (default): `451 4.7.1`, the sending
    /// server keeps the message and retries. `accept`: deliver it, with our headers when
    /// there is an analysis. Logged either way.
    pub on_error: OnError,
    /// File mode of a unix socket, octal as a string. Default `"0660"`: the MTA's group must
    /// own the socket's directory or the socket (Postfix: put it under
    /// `/var/spool/postfix/` when smtpd runs chrooted).
    pub unix_mode: String,
    /// Mail from a client that logged in (SMTP AUTH, macro `{auth_authen}`) is the site's own
    /// users' outgoing mail, not forged inbound mail: it is accepted without a verdict, with
    /// `Authentication-Results: <id>; auth=pass smtp.auth=<user>`. The engine has no view of
    /// submissions (a user's own-domain From from a hotel network would read as a spoof).
    /// Default `true`; `false` judges it like any other mail.
    pub skip_authenticated: bool,
    /// One line per message on stderr (queue id, verdict, reason codes, time). Default `true`.
    pub log_verdicts: bool,
    /// Resource limits (see [`Limits`]).
    pub limits: Limits,
}

/// Every resource limit, with its default and what happens when it is reached. A limit never
/// leaves the MTA waiting: either it gets a reply, or the connection closes and the MTA
/// applies its own default action (`milter_default_action`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Simultaneous MTA connections (Postfix opens one per SMTP session). Over it the new
    /// connection is closed at once and logged. Default 1000.
    pub max_connections: usize,
    /// Largest packet in octets. The MTA sends body chunks of at most 65535 octets and a
    /// header field in one packet (Postfix: up to `header_size_limit`, 102400). Over it: the
    /// connection closes. Default 1048576 (1 MiB).
    pub max_packet_size: usize,
    /// Largest message we keep for analysis, headers and body. Over it we stop keeping it and
    /// answer `on_error` at end of message. Default 67108864 (64 MiB; Postfix's own
    /// `message_size_limit` defaults to 10 MB).
    pub max_message_size: usize,
    /// Seconds to wait for the MTA's next packet. Postfix keeps the connection open for the
    /// whole SMTP session, including the client's pauses between commands (its
    /// `smtpd_timeout` is 300 s per command). Over it: the connection closes. Default 1800.
    pub idle_timeout: u64,
    /// Seconds to write one reply. Over it: the connection closes. Default 60.
    pub write_timeout: u64,
    /// Seconds the engine may take for one message. Over it: `on_error`. Default 60 (Postfix
    /// waits `milter_content_timeout`, 300 s, and we send progress meanwhile).
    pub eval_timeout: u64,
    /// Seconds between SMFIR_PROGRESS packets while the engine works, so the MTA's per-reply
    /// timer does not run out on a slow DNS. Default 10.
    pub progress_interval: u64,
    /// Seconds shutdown waits for messages already inside a transaction; idle connections
    /// close at once. Default 30.
    pub drain_timeout: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1000,
            max_packet_size: 1024 * 1024,
            max_message_size: 64 * 1024 * 1024,
            idle_timeout: 1800,
            write_timeout: 60,
            eval_timeout: 60,
            progress_interval: 10,
            drain_timeout: 30,
        }
    }
}

impl Limits {
    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout.max(1))
    }
    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout.max(1))
    }
    pub(crate) fn eval_timeout(&self) -> Duration {
        Duration::from_secs(self.eval_timeout.max(1))
    }
    pub(crate) fn progress_interval(&self) -> Duration {
        Duration::from_secs(self.progress_interval.max(1))
    }
    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout)
    }
}

impl Default for MilterConfig {
    fn default() -> Self {
        MilterConfig {
            listen: vec![Listen::Inet(SocketAddr::from(([127, 0, 0, 1], 8891)))],
            on_error: OnError::Tempfail,
            unix_mode: "0660".into(),
            skip_authenticated: true,
            log_verdicts: true,
            limits: Limits::default(),
        }
    }
}

/// What to tell the MTA when we cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// `451 4.7.1`: the sender keeps the message and retries later. Nothing is lost.
    Tempfail,
    /// Deliver the message (fail open).
    Accept,
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tempfail" => Ok(OnError::Tempfail),
            "accept" => Ok(OnError::Accept),
            _ => Err(format!(
                "on_error must be \"tempfail\" or \"accept\", not {s:?}"
            )),
        }
    }
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;

    /// `inet:127.0.0.1:8891`, `inet:[::1]:8891`, `inet:8891@127.0.0.1` (Sendmail/OpenDKIM
    /// style), `unix:/path`, `local:/path`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("listen {s:?}: expected inet:HOST:PORT, inet:PORT@HOST or unix:/path");
        if let Some(path) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        let rest = s.strip_prefix("inet6:").or_else(|| s.strip_prefix("inet:"));
        let rest = rest.ok_or_else(bad)?;
        if let Some((port, host)) = rest.split_once('@') {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let ip = host.parse().map_err(|_| bad())?;
            let port = port.parse().map_err(|_| bad())?;
            return Ok(Listen::Inet(SocketAddr::new(ip, port)));
        }
        rest.parse().map(Listen::Inet).map_err(|_| bad())
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Inet(a) => write!(f, "inet:{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Listen>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Listen),
        Many(Vec<Listen>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(l) => vec![l],
        OneOrMany::Many(v) => v,
    })
}

/// The whole `unspoof.toml`, of which the milter reads only `[milter]`.
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    milter: MilterConfig,
}

impl MilterConfig {
    /// Reads the `[milter]` section from the text of an `unspoof.toml`, other sections left to
    /// their owners; a missing section gives the defaults. For tests and tools: `unspoof` reads
    /// the whole file once, with positions in its errors (crates/cli/src/config.rs).
    pub fn from_toml(text: &str) -> Result<Self, MilterError> {
        let file: File = toml::from_str(text).map_err(|e| MilterError::Config(e.to_string()))?;
        file.milter.validated()
    }

    /// Checks values serde cannot: at least one listener, a valid socket mode, sane limits.
    pub fn validated(self) -> Result<Self, MilterError> {
        if self.listen.is_empty() {
            return Err(MilterError::Config("[milter] listen is empty".into()));
        }
        self.unix_mode()?;
        let l = &self.limits;
        if l.max_connections == 0 {
            return Err(MilterError::Config(
                "[milter.limits] max_connections must be at least 1".into(),
            ));
        }
        // Postfix and Sendmail send body chunks of up to 65535 octets plus the letter.
        if l.max_packet_size < 65536 {
            return Err(MilterError::Config(
                "[milter.limits] max_packet_size must be at least 65536".into(),
            ));
        }
        Ok(self)
    }

    /// `unix_mode` as a number.
    pub fn unix_mode(&self) -> Result<u32, MilterError> {
        u32::from_str_radix(self.unix_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                MilterError::Config(format!(
                    "[milter] unix_mode {:?} is not an octal file mode",
                    self.unix_mode
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_section_and_other_sections_ignored() {
        let c = MilterConfig::from_toml("hostname = \"mx\"\n[gateway]\nlisten = \"x\"\n").unwrap();
        assert_eq!(c.listen, vec!["inet:127.0.0.1:8891".parse().unwrap()]);
        assert_eq!(c.on_error, OnError::Tempfail);
        assert_eq!(c.limits.max_packet_size, 1 << 20);
    }

    #[test]
    fn listen_forms() {
        let p = |s: &str| s.parse::<Listen>();
        assert_eq!(
            p("inet:127.0.0.1:8891"),
            Ok(Listen::Inet("127.0.0.1:8891".parse().unwrap()))
        );
        assert_eq!(
            p("inet:8891@127.0.0.1"),
            Ok(Listen::Inet("127.0.0.1:8891".parse().unwrap()))
        );
        assert_eq!(
            p("inet6:8891@[::1]"),
            Ok(Listen::Inet("[::1]:8891".parse().unwrap()))
        );
        assert_eq!(
            p("inet:[::1]:25"),
            Ok(Listen::Inet("[::1]:25".parse().unwrap()))
        );
        assert_eq!(
            p("unix:/run/m.sock"),
            Ok(Listen::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            p("local:/run/m.sock"),
            Ok(Listen::Unix("/run/m.sock".into()))
        );
        assert!(p("127.0.0.1:8891").is_err());
        assert!(p("inet:localhost:8891").is_err());
        assert!(p("unix:").is_err());
    }

    #[test]
    fn section_is_read_and_checked() {
        let c = MilterConfig::from_toml(
            "[milter]\nlisten = [\"inet:127.0.0.1:9999\", \"unix:/tmp/x.sock\"]\non_error = \"accept\"\n[milter.limits]\neval_timeout = 5\n",
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.on_error, OnError::Accept);
        assert_eq!(c.limits.eval_timeout, 5);
        assert!(MilterConfig::from_toml("[milter]\nlisten_port = 1\n").is_err());
        assert!(MilterConfig::from_toml("[milter]\non_error = \"bounce\"\n").is_err());
        assert!(MilterConfig::from_toml("[milter]\nunix_mode = \"999\"\n").is_err());
        assert!(MilterConfig::from_toml("[milter.limits]\nmax_packet_size = 10\n").is_err());
    }
}
