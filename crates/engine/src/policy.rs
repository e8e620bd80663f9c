//! The site's policy: `unspoof.toml`.
//!
//! One file, read once and shared; every key has a default that is safe for a site that sets
//! only its domains. `examples/unspoof.toml` documents every key.

use std::{
    any::Any,
    path::Path,
    sync::{Arc, OnceLock},
};

use ipnet::IpNet;
use serde::Deserialize;

use crate::{trace::TrustConfig, verdict::Action};

mod senders;
mod signatures;
pub use senders::{AuthorisedSender, DEFAULT_MAX_SIGNATURE_AGE_HOURS, DkimReplay, SignedMail};
pub use signatures::{SYSTEM_CA_BUNDLE, Signatures};

/// The policy key `dns_temperror`: what a DNS temperror on the checks DMARC rests on does to a
/// message the findings would deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsTempError {
    /// Answer 451 4.4.3: the sending server retries later, when DNS answers again (default).
    #[default]
    Defer,
    /// Deliver on what did answer (accept or tag, as the findings say).
    Decide,
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
    /// What a DNS temperror on the checks DMARC rests on does to a message the findings would
    /// deliver, in every front door: `defer` (default: 451 4.4.3, the sender retries) or
    /// `decide` (deliver on what did answer). See `crate::decision`.
    pub dns_temperror: DnsTempError,
    /// Where the keys and CAs for PGP and S/MIME signatures are (`[signatures]`).
    pub signatures: Signatures,
    /// The site's gateways, lower case without trailing dots (empty: the check is off): the
    /// hub every message for our domains must pass (`findings/hub.rs`). Not a key of the
    /// policy: the file says it in the gateway's section (`[gateway] gateway_names`), and
    /// whoever reads the whole file (the CLI's `Config`) sets it here, so the milter and
    /// `analyze` know the hub too.
    #[serde(skip)]
    pub gateway_names: Vec<String>,
    /// What the findings derive from the protected domains and people, made on first use
    /// (`findings::PolicyData::of`) instead of once per message.
    #[serde(skip)]
    pub(crate) derived: DerivedCache,
}

/// Data a layer above derives from a policy (the findings' `PolicyData`), made once and kept
/// here without the policy knowing its type: the findings import the policy, never the other
/// way round. A clone starts empty: it may be edited before use.
#[derive(Default)]
pub(crate) struct DerivedCache(OnceLock<Arc<dyn Any + Send + Sync>>);

impl DerivedCache {
    /// The data, made by `make` on the first call.
    pub(crate) fn get_or_init(
        &self,
        make: impl FnOnce() -> Arc<dyn Any + Send + Sync>,
    ) -> Arc<dyn Any + Send + Sync> {
        self.0.get_or_init(make).clone()
    }
}

impl Clone for DerivedCache {
    fn clone(&self) -> Self {
        DerivedCache::default()
    }
}

impl std::fmt::Debug for DerivedCache {
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
            dns_temperror: DnsTempError::default(),
            signatures: Signatures::default(),
            gateway_names: Vec::new(),
            derived: DerivedCache::default(),
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

/// A value of the policy that parses but cannot work: the key it is at and why. `key` is a
/// path into the file as people read it: `protected_domains`, `protected_people[1]` (the second
/// `[[protected_people]]`), so whoever holds the file's positions can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    pub key: String,
    pub message: String,
}

impl InvalidKey {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidKey {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Where the key is in `text`, found by its name (the `n`-th `[[name]]` for `name[n]`):
    /// for [`Policy::parse`], which has the text but not a parsed document's positions.
    fn offset_in(&self, text: &str) -> Option<usize> {
        match self.key.split_once('[') {
            Some((name, rest)) => {
                let n: usize = rest.trim_end_matches(']').parse().ok()?;
                let header = format!("[[{name}]]");
                text.match_indices(&header).nth(n).map(|(i, _)| i)
            }
            None => text.find(&self.key),
        }
    }
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

    /// Parses policy text (the policy's keys only: the doors' sections of `unspoof.toml` are
    /// unknown here, the CLI's `Config` reads the whole file); `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let invalid = |at: Option<usize>, message: String| {
            let at = at.unwrap_or(0).min(text.len());
            let line = text[..at].matches('\n').count() + 1;
            let column = at - text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            PolicyError::Invalid {
                path: origin.to_string(),
                line,
                column,
                message,
            }
        };
        let mut policy: Policy = toml::from_str(text)
            .map_err(|e| invalid(e.span().map(|r| r.start), e.message().to_string()))?;
        policy.validate().map_err(|e| {
            let message = format!("{}: {}", e.key, e.message);
            invalid(e.offset_in(text), message)
        })?;
        Ok(policy)
    }

    /// Normalises what serde read (domains lower case, without trailing dots) and checks what
    /// serde cannot: values that parse but cannot work. The error names the key.
    pub fn validate(&mut self) -> Result<(), InvalidKey> {
        for d in &mut self.protected_domains {
            *d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if d.is_empty() || !d.contains('.') {
                return Err(InvalidKey::new(
                    "protected_domains",
                    format!("protected domain {d:?} is not a domain name"),
                ));
            }
        }
        for d in &mut self.trusted_arc_sealers {
            *d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        }
        for n in &mut self.gateway_names {
            *n = n.trim().trim_end_matches('.').to_ascii_lowercase();
        }
        self.gateway_names.retain(|n| !n.is_empty());
        for (i, person) in self.protected_people.iter().enumerate() {
            if person.name.trim().is_empty() || person.addresses.iter().any(|a| !a.contains('@')) {
                return Err(InvalidKey::new(
                    format!("protected_people[{i}]"),
                    format!(
                        "protected person {:?} needs a name and full addresses",
                        person.name
                    ),
                ));
            }
        }
        self.check_senders()
    }

    /// Normalises and validates `watched_domains` and `[[signed_mail]]`.
    fn check_senders(&mut self) -> Result<(), InvalidKey> {
        for i in 0..self.watched_domains.len() {
            let d = senders::normalise_domain(&self.watched_domains[i]);
            if d.is_empty() || !d.contains('.') {
                return Err(InvalidKey::new(
                    "watched_domains",
                    format!("watched domain {d:?} is not a domain name"),
                ));
            }
            if self.is_protected(&d) {
                return Err(InvalidKey::new(
                    "watched_domains",
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
                return Err(InvalidKey::new(
                    format!("signed_mail[{i}]"),
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
                    return Err(InvalidKey::new(
                        format!("signed_mail[{i}]"),
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
