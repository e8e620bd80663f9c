//! The site's policy: `unspoof.toml`.
//!
//! One file, read once and shared; every key has a default that is safe for a site that sets
//! only its domains. `examples/unspoof.toml` documents every key.

use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use crate::trace::TrustConfig;

/// The whole policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Our name in Authentication-Results (RFC 8601 authserv-id) and Received headers.
    pub hostname: String,
    /// The site's own domains: mail from outside that claims one of them must authenticate.
    pub protected_domains: Vec<String>,
    /// Networks whose hosts are ours (submission clients, internal relays).
    pub internal_networks: Vec<IpNet>,
    /// Relays outside our networks that we trust to write honest Received headers (a backup
    /// MX, a filtering service in front of us).
    pub trusted_relays: Vec<IpNet>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            hostname: "unspoof.localhost".into(),
            protected_domains: Vec::new(),
            internal_networks: Vec::new(),
            trusted_relays: Vec::new(),
        }
    }
}

/// A policy file that could not be used, with the line it fails on.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let invalid = |offset: Option<std::ops::Range<usize>>, message: String| {
            let at = offset.map(|r| r.start).unwrap_or(0).min(text.len());
            let line = text[..at].matches('\n').count() + 1;
            let column = at - text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            PolicyError::Invalid {
                path: origin.to_string(),
                line,
                column,
                message,
            }
        };
        let mut policy: Policy =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_string()))?;
        for d in &mut policy.protected_domains {
            *d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if d.is_empty() || !d.contains('.') {
                let at = text.find("protected_domains").map(|s| s..s + 1);
                return Err(invalid(
                    at,
                    format!("protected domain {d:?} is not a domain name"),
                ));
            }
        }
        Ok(policy)
    }

    /// The trust boundary settings for the hop trace.
    pub fn trust(&self) -> TrustConfig {
        TrustConfig {
            internal_networks: self.internal_networks.clone(),
            trusted_relays: self.trusted_relays.clone(),
        }
    }

    /// Whether `domain` is one of ours or a subdomain of one.
    pub fn is_protected(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.protected_domains.iter().any(|p| {
            domain == *p
                || domain
                    .strip_suffix(p.as_str())
                    .is_some_and(|s| s.ends_with('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let err = Policy::parse(
            "hostname = \"mx\"\ninternal_networks = [\"10.0.0.0/33\"]\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("p.toml:2:"), "{err}");
        let err = Policy::parse("hostname = \"mx\"\nbogus = 1\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.toml:2:"), "{err}");
    }

    #[test]
    fn protects_subdomains() {
        let p = Policy::parse("protected_domains = [\"Example.COM\"]", "p").unwrap();
        assert!(p.is_protected("example.com"));
        assert!(p.is_protected("mail.example.com."));
        assert!(!p.is_protected("notexample.com"));
    }
}
