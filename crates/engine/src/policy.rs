//! The site's policy: `unspoof.toml`.
//!
//! One file, read once and shared; every key has a default that is safe for a site that sets
//! only its domains. `examples/unspoof.toml` documents every key.

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use ipnet::IpNet;
use serde::Deserialize;

use crate::{findings::PolicyData, trace::TrustConfig, verdict::Action};

mod senders;
mod signatures;
pub use senders::{AuthorisedSender, DEFAULT_MAX_SIGNATURE_AGE_HOURS, DkimReplay, SignedMail};
pub use signatures::{SYSTEM_CA_BUNDLE, Signatures};

/// Offset of the `n`-th occurrence of `needle` in `text`.
fn nth_offset(text: &str, needle: &str, n: usize) -> Option<usize> {
    text.match_indices(needle).nth(n).map(|(i, _)| i)
}

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
    /// ARC sealers (d= of the ARC-Seal) whose word we take when mail they forwarded fails
    /// DMARC: mailing lists and forwarders we know (RFC 8617 7.2, RFC 9989 local policy).
    pub trusted_arc_sealers: Vec<String>,
    /// People whose names a forger would borrow: their display names and real addresses.
    pub protected_people: Vec<ProtectedPerson>,
    /// The action for each class of finding.
    pub actions: Actions,
    /// What users see on a tagged message.
    pub tag: TagSettings,
    /// Outside domains the site's people trust (their bank, partners, suppliers): the
    /// lookalike, display-name and address-in-name checks compare sender domains with them as
    /// with the protected domains, but they are not ours (no own-domain rules, no exemptions).
    pub watched_domains: Vec<String>,
    /// Protected domains whose mail is always DKIM-signed, with who signs it.
    pub signed_mail: Vec<SignedMail>,
    /// The DKIM replay and extension signals.
    pub dkim_replay: DkimReplay,
    /// Where the keys and CAs for PGP and S/MIME signatures are (`[signatures]`).
    pub signatures: Signatures,
    // The front doors' sections of the same file. The engine does not read them; each front
    // door reads its own section (`GatewayConfig::load`, ...), and they are accepted here so that
    // one `unspoof.toml` holds everything and unknown keys are still errors.
    #[serde(rename = "gateway")]
    _gateway: Option<toml::Table>,
    #[serde(rename = "milter")]
    _milter: Option<toml::Table>,
    #[serde(rename = "store")]
    _store: Option<toml::Table>,
    #[serde(rename = "dmarc")]
    _dmarc: Option<toml::Table>,
    /// The site's gateways (`[gateway] gateway_names`, as written there; empty when not set):
    /// the hub every message for our domains must pass (`findings/hub.rs`). Read from the
    /// gateway's section by [`Policy::parse`] so the milter and `analyze` know the hub too.
    #[serde(skip)]
    pub gateway_names: Vec<String>,
    /// What the findings derive from the protected domains and people, made on first use
    /// ([`Policy::findings_data`]) instead of once per message.
    #[serde(skip)]
    findings_data: FindingsCache,
}

/// A policy's [`PolicyData`], made once. A clone starts empty: it may be edited before use.
#[derive(Default)]
struct FindingsCache(OnceLock<Arc<PolicyData>>);

impl Clone for FindingsCache {
    fn clone(&self) -> Self {
        FindingsCache::default()
    }
}

impl std::fmt::Debug for FindingsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "made"
        } else {
            "not made yet"
        })
    }
}

/// A person whose name must not appear on mail from an address that is not theirs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedPerson {
    /// The name as people write it ("Joe SixPack"); matching ignores case, accents, titles,
    /// confusable characters and "Last, First" order.
    pub name: String,
    /// Their real addresses; the name on any other address is impersonation.
    pub addresses: Vec<String>,
}

/// The action for each class of finding. `accept` makes a class log-only, for a trial rollout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Actions {
    /// From or MAIL FROM in a protected domain, from outside, with nothing authenticating it.
    pub own_domain_spoof: Action,
    /// DMARC fail where the domain publishes p=reject (or sp/np).
    pub dmarc_reject: Action,
    /// DMARC fail where the domain publishes p=quarantine.
    pub dmarc_quarantine: Action,
    /// Headers that parsers would read differently (several From, encoded addresses, ...).
    /// For a protected domain an ambiguity is always rejected.
    pub header_ambiguity: Action,
    /// A protected person's name on an address that is not theirs.
    pub impersonation: Action,
    /// A sender domain that looks like a protected one.
    pub lookalike: Action,
    /// Replies diverted to another organisation on mail that is protected or impersonated.
    pub reply_to_diversion: Action,
    /// Authentication-Results or Received headers that claim to be ours but are not.
    pub forged_trust: Action,
    /// SPF fail on MAIL FROM without a DMARC pass.
    pub spf_fail: Action,
    /// DMARC fail where the domain publishes p=none or tests its policy (t=y): the sender
    /// could not be verified, so readers are warned (as the large mailbox providers do).
    pub dmarc_fail_none: Action,
    /// A header section with lines that are neither a field nor a continuation, or with no
    /// field at all (`header.malformed_section`). For a protected domain it is always rejected.
    pub malformed_header: Action,
    /// No From field (`header.from_missing`, RFC 5322 3.6 requires one; DMARC cannot judge the
    /// message).
    pub missing_from: Action,
    /// A message for our domains that did not pass any of the site's gateways
    /// (`[gateway] gateway_names`): sent straight to an inner server.
    pub hub_bypass: Action,
    /// A bounce, auto-reply or challenge for one of our users about a message in our name
    /// that we never sent (backscatter of a forgery).
    pub backscatter: Action,
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            own_domain_spoof: Action::Reject,
            dmarc_reject: Action::Reject,
            dmarc_quarantine: Action::Quarantine,
            header_ambiguity: Action::Quarantine,
            impersonation: Action::Quarantine,
            lookalike: Action::Quarantine,
            reply_to_diversion: Action::Tag,
            forged_trust: Action::Tag,
            spf_fail: Action::Tag,
            dmarc_fail_none: Action::Tag,
            malformed_header: Action::Quarantine,
            missing_from: Action::Quarantine,
            hub_bypass: Action::Tag,
            backscatter: Action::Quarantine,
        }
    }
}

/// How a tagged message is marked for its readers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TagSettings {
    /// Put in front of the Subject (with a space), unless already there.
    pub subject_prefix: String,
    /// Prepend a short plain-words warning to the text and HTML parts.
    pub banner: bool,
}

impl Default for TagSettings {
    fn default() -> Self {
        TagSettings {
            subject_prefix: "[SUSPICIOUS]".into(),
            banner: true,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            hostname: "unspoof.localhost".into(),
            protected_domains: Vec::new(),
            internal_networks: Vec::new(),
            trusted_relays: Vec::new(),
            trusted_arc_sealers: Vec::new(),
            protected_people: Vec::new(),
            actions: Actions::default(),
            tag: TagSettings::default(),
            watched_domains: Vec::new(),
            signed_mail: Vec::new(),
            dkim_replay: DkimReplay::default(),
            signatures: Signatures::default(),
            _gateway: None,
            _milter: None,
            _store: None,
            _dmarc: None,
            gateway_names: Vec::new(),
            findings_data: FindingsCache::default(),
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
        policy.gateway_names = gateway_names(policy._gateway.as_ref());
        for d in &mut policy.trusted_arc_sealers {
            *d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        }
        for (i, person) in policy.protected_people.iter().enumerate() {
            if person.name.trim().is_empty() || person.addresses.iter().any(|a| !a.contains('@')) {
                let at = nth_offset(text, "[[protected_people]]", i).map(|s| s..s + 1);
                return Err(invalid(
                    at,
                    format!(
                        "protected person {:?} needs a name and full addresses",
                        person.name
                    ),
                ));
            }
        }
        policy.check_senders(text, &invalid)?;
        Ok(policy)
    }

    /// Normalises and validates `watched_domains` and `[[signed_mail]]`.
    fn check_senders(
        &mut self,
        text: &str,
        invalid: &dyn Fn(Option<std::ops::Range<usize>>, String) -> PolicyError,
    ) -> Result<(), PolicyError> {
        let key_at = |key: &str, n: usize| nth_offset(text, key, n).map(|s| s..s + 1);
        for i in 0..self.watched_domains.len() {
            let d = senders::normalise_domain(&self.watched_domains[i]);
            if d.is_empty() || !d.contains('.') {
                return Err(invalid(
                    key_at("watched_domains", 0),
                    format!("watched domain {d:?} is not a domain name"),
                ));
            }
            if self.is_protected(&d) {
                return Err(invalid(
                    key_at("watched_domains", 0),
                    format!(
                        "watched domain {d:?} is one of our protected domains: a domain is ours or watched, not both"
                    ),
                ));
            }
            self.watched_domains[i] = d;
        }
        for i in 0..self.signed_mail.len() {
            let d = senders::normalise_domain(&self.signed_mail[i].domain);
            if !self.is_protected(&d) {
                return Err(invalid(
                    key_at("[[signed_mail]]", i),
                    format!(
                        "signed_mail domain {d:?} is not one of protected_domains: only our own mail can be required to be signed"
                    ),
                ));
            }
            for s in &mut self.signed_mail[i].senders {
                s.dkim_domain = senders::normalise_domain(&s.dkim_domain);
                if s.dkim_domain.is_empty()
                    || s.selector.as_deref().is_some_and(|x| x.trim().is_empty())
                {
                    return Err(invalid(
                        key_at("[[signed_mail]]", i),
                        format!(
                            "a sender of signed_mail {d:?} needs a dkim_domain (and a selector, if given, that is not empty)"
                        ),
                    ));
                }
            }
            self.signed_mail[i].domain = d;
        }
        Ok(())
    }

    /// The watched domain that `domain` is, or is a subdomain of.
    pub fn watched(&self, domain: &str) -> Option<&str> {
        let domain = domain.trim_end_matches('.').as_bytes();
        self.watched_domains
            .iter()
            .find(|w| is_at_or_under(domain, w.as_bytes()))
            .map(String::as_str)
    }

    /// The `[[signed_mail]]` entry that covers `domain` (the most specific one), if any.
    pub fn signed_mail_for(&self, domain: &str) -> Option<&SignedMail> {
        let d = domain.trim_end_matches('.').as_bytes();
        self.signed_mail
            .iter()
            .filter(|s| is_at_or_under(d, s.domain.as_bytes()))
            .max_by_key(|s| s.domain.len())
    }

    /// Whether `sealer` (an ARC-Seal d=) is trusted, itself or as a parent domain.
    pub fn is_trusted_sealer(&self, sealer: &str) -> bool {
        let sealer = sealer.trim_end_matches('.').to_ascii_lowercase();
        self.trusted_arc_sealers.iter().any(|t| {
            sealer == *t
                || sealer
                    .strip_suffix(t.as_str())
                    .is_some_and(|s| s.ends_with('.'))
        })
    }

    /// What the findings derive from this policy's protected domains and people: made on the
    /// first call and kept. The fields are public, so a policy changed after that gets data
    /// made afresh for it (the comparison costs far less than the making).
    pub(crate) fn findings_data(&self) -> Arc<PolicyData> {
        let made = self
            .findings_data
            .0
            .get_or_init(|| Arc::new(PolicyData::new(self)));
        if made.is_for(self) {
            made.clone()
        } else {
            Arc::new(PolicyData::new(self))
        }
    }

    /// Whether `ip` is in the internal networks.
    pub fn is_internal(&self, ip: std::net::IpAddr) -> bool {
        self.internal_networks.iter().any(|n| n.contains(&ip))
    }

    /// The trust boundary settings for the hop trace.
    pub fn trust(&self) -> TrustConfig {
        TrustConfig {
            internal_networks: self.internal_networks.clone(),
            trusted_relays: self.trusted_relays.clone(),
        }
    }

    /// Whether `domain` is one of ours or a subdomain of one. Compares as if `domain` were
    /// ASCII-lower-cased (without making the lower-case copy: this runs for every domain every
    /// finding looks at).
    pub fn is_protected(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').as_bytes();
        self.protected_domains
            .iter()
            .any(|p| is_at_or_under(domain, p.as_bytes()))
    }
}

/// Whether `domain` (any case) is `parent` (lower case) or a subdomain of it.
fn is_at_or_under(domain: &[u8], parent: &[u8]) -> bool {
    let Some(split) = domain.len().checked_sub(parent.len()) else {
        return false;
    };
    lowercased_equals(&domain[split..], parent) && (split == 0 || domain[split - 1] == b'.')
}

/// `[gateway] gateway_names`, lower case without trailing dots; the gateway's own reading
/// (`GatewayConfig`) validates them, here a value that is not a list of strings is none.
fn gateway_names(section: Option<&toml::Table>) -> Vec<String> {
    let Some(list) = section
        .and_then(|g| g.get("gateway_names"))
        .and_then(|v| v.as_array())
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|v| v.as_str())
        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Whether `text` with its ASCII letters lower-cased equals `lower`, byte for byte.
fn lowercased_equals(text: &[u8], lower: &[u8]) -> bool {
    text.len() == lower.len()
        && text
            .iter()
            .zip(lower)
            .all(|(t, l)| t.to_ascii_lowercase() == *l)
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
        assert!(p.is_protected("Mail.EXAMPLE.com.."));
        assert!(!p.is_protected("com"));
        assert!(!p.is_protected(""));
        assert!(!p.is_protected(".example.co"));
    }
}
