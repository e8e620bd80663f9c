//! Findings: everything that turns facts about a message into reasons.
//!
//! Each module looks at one kind of evidence and pushes [`Reason`]s whose action comes from
//! the policy's `[actions]` for its class. [`collect`] runs them in a fixed order, so the
//! reasons of a verdict always come out in the same order.
//!
//! | module | codes |
//! | --- | --- |
//! | `authentication` | `dmarc.*`, `spf.*`, `dkim.*`, `arc.*`, `auth.*` |
//! | `own_domain` | `spoof.own_domain` |
//! | `signed_mail` | `spoof.own_domain_unsigned` |
//! | `signature` | `signature.*` (PGP/MIME, inline OpenPGP, S/MIME; last: it eases the DMARC-undecided reasons before it) |
//! | `ambiguity` | `ambiguity.*` |
//! | `impersonation` (+ `watched`, `correspondent`) | `impersonation.*` |
//! | `lookalike` | `lookalike.*` |
//! | `reply_to` | `reply_to.diversion` |
//! | `forged_trust` | `trust.*` |
//! | `section` | `header.malformed_section`, `header.from_missing` |
//! | `dkim_replay` | `dkim.old_signature`, `dkim.recipients_not_addressed`, `dkim.unsigned_field`, `dkim.body_extended` |
//! | `contact` | `contact.*` (reads the reasons before it) |
//! | `hub` | `hub.bypass` |
//! | `backscatter` | `backscatter.forged` |
//! | (trace) | `trace.*`, `header.*` |
//! | (verdict, not a finding) | `allow.sender`: the store's allow list lifted a quarantine or tag to accept (`Verdict::lift_for_allowed_sender`) |

mod ambiguity;
mod authentication;
mod backscatter;
mod confusables;
mod contact;
mod correspondent;
mod dkim_replay;
mod forged_trust;
mod hub;
mod impersonation;
mod lookalike;
mod names;
mod own_domain;
mod reply_to;
mod section;
mod signature;
mod signed_mail;
mod watched;

// For the audit's lookalike search (crates/audit): the same skeleton and the same rules the
// engine applies to a sender domain, so a registered lookalike it lists is one the gateway flags.
pub use confusables::{fold as confusable_fold, skeleton as confusable_skeleton};
pub use lookalike::lookalike_code;
// The reaction loop's codes, for `unspoof log search --kind` (crates/cli/src/log.rs).
pub use backscatter::BACKSCATTER_FORGED;
pub use hub::HUB_BYPASS;
// From and Reply-To as the common parsers read them: the message layer's reading.
pub use unspoof_message::mailbox::{Mailbox, read_addresses};

use std::sync::Arc;

use crate::{
    EnvelopeReport, Headers,
    auth::AuthResults,
    policy::Policy,
    trace::Trace,
    verdict::{Action, Reason},
};

/// What the findings derive from the policy alone, made once per policy
/// ([`PolicyData::of`]) instead of once per message.
#[derive(Debug)]
pub(crate) struct PolicyData {
    /// The protected domains and people's names it was made from.
    domains: Vec<String>,
    watched: Vec<String>,
    names: Vec<String>,
    /// The protected domains that can be compared with a lookalike.
    pub(crate) lookalike: Vec<lookalike::Protected>,
    /// Each protected person's name parsed, by index in `protected_people` (names that read as
    /// nothing left out).
    pub(crate) people: Vec<(usize, names::Name)>,
    /// The watched domains' names, as display names would show them.
    pub(crate) brands: Vec<watched::Brand>,
}

impl PolicyData {
    pub(crate) fn new(policy: &Policy) -> Self {
        PolicyData {
            domains: policy.protected_domains.clone(),
            watched: policy.watched_domains.clone(),
            names: policy
                .protected_people
                .iter()
                .map(|p| p.name.clone())
                .collect(),
            lookalike: lookalike::protected(&policy.protected_domains, &policy.watched_domains),
            brands: watched::brands(&policy.watched_domains),
            people: policy
                .protected_people
                .iter()
                .enumerate()
                .map(|(i, p)| (i, names::Name::parse(&p.name)))
                .filter(|(_, n)| !n.is_empty())
                .collect(),
        }
    }

    /// What the findings derive from `policy`'s protected domains and people: made on the
    /// first call and kept in the policy. The fields are public, so a policy changed after that
    /// gets data made afresh for it (the comparison costs far less than the making).
    pub(crate) fn of(policy: &Policy) -> Arc<PolicyData> {
        let made = policy
            .derived
            .get_or_init(|| Arc::new(PolicyData::new(policy)));
        match made.downcast::<PolicyData>() {
            Ok(data) if data.is_for(policy) => data,
            _ => Arc::new(PolicyData::new(policy)),
        }
    }

    /// Whether this was made from `policy`'s protected domains and people's names.
    pub(crate) fn is_for(&self, policy: &Policy) -> bool {
        self.domains == policy.protected_domains
            && self.watched == policy.watched_domains
            && self.names.len() == policy.protected_people.len()
            && self
                .names
                .iter()
                .zip(&policy.protected_people)
                .all(|(n, p)| *n == p.name)
    }
}

/// What the finding modules look at.
pub struct Context<'a> {
    /// The message with CRLF line endings.
    pub raw: &'a [u8],
    pub headers: &'a Headers<'a>,
    pub envelope: &'a EnvelopeReport,
    pub auth: &'a AuthResults,
    pub trace: &'a Trace,
    pub policy: &'a Policy,
    /// The From mailboxes as the common parsers read them (first From header).
    pub from: Vec<Mailbox>,
    /// The Reply-To mailboxes.
    pub reply_to: Vec<Mailbox>,
    /// The person-level signature, when the message is signed (`crate::signed`).
    pub signature: Option<&'a crate::signed::SignatureReport>,
}

impl<'a> Context<'a> {
    pub fn new(
        raw: &'a [u8],
        headers: &'a Headers<'a>,
        envelope: &'a EnvelopeReport,
        auth: &'a AuthResults,
        trace: &'a Trace,
        policy: &'a Policy,
    ) -> Self {
        let addresses = read_addresses(headers);
        Self::with_addresses(raw, headers, envelope, auth, trace, policy, addresses)
    }

    /// [`Context::new`] with From and Reply-To already read ([`read_addresses`]): the engine
    /// reads them once, for DMARC and for the findings.
    pub(crate) fn with_addresses(
        raw: &'a [u8],
        headers: &'a Headers<'a>,
        envelope: &'a EnvelopeReport,
        auth: &'a AuthResults,
        trace: &'a Trace,
        policy: &'a Policy,
        (from, reply_to): (Vec<Mailbox>, Vec<Mailbox>),
    ) -> Self {
        Context {
            raw,
            headers,
            envelope,
            auth,
            trace,
            policy,
            from,
            reply_to,
            signature: None,
        }
    }

    /// The domain of the MAIL FROM address, lower case; `None` for the null sender.
    pub fn mail_from_domain(&self) -> Option<String> {
        let mf = self.envelope.mail_from.as_deref()?;
        mf.rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
    }

    /// Whether a From domain is protected.
    pub fn from_is_protected(&self) -> bool {
        self.from
            .iter()
            .any(|m| self.policy.is_protected(&m.domain))
    }
}

/// Every reason for one message, in a fixed order.
pub fn collect(ctx: &Context<'_>) -> Vec<Reason> {
    let mut out = Vec::new();
    authentication::check(ctx, &mut out);
    own_domain::check(ctx, &mut out);
    signed_mail::check(ctx, &mut out);
    ambiguity::check(ctx, &mut out);
    impersonation::check(ctx, &mut out);
    lookalike::check(ctx, &mut out);
    reply_to::check(ctx, &mut out);
    forged_trust::check(ctx, &mut out);
    section::check(ctx, &mut out);
    dkim_replay::check(ctx, &mut out);
    contact::check(ctx, &mut out);
    hub::check(ctx, &mut out);
    backscatter::check(ctx, &mut out);
    signature::check(ctx, &mut out);
    for a in &ctx.trace.anomalies {
        let mut r = Reason::new(a.code, Action::Accept, a.detail.clone());
        if let Some(hop) = a.hop.and_then(|i| ctx.trace.hops.get(i)) {
            r = r.with_evidence(format!("Received: {}", hop.raw));
        }
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_data_follows_a_changed_policy() {
        let mut policy = Policy::parse(
            "protected_domains = [\"example.com\"]\n[[protected_people]]\nname = \"Joe SixPack\"\naddresses = [\"joe@example.com\"]\n",
            "test policy",
        )
        .unwrap();
        assert_eq!(PolicyData::of(&policy).lookalike.len(), 1);
        assert_eq!(PolicyData::of(&policy).people.len(), 1);
        policy.protected_domains.push("example.org".into());
        policy.protected_people[0].name = "Dr.".into(); // reads as no name at all
        assert_eq!(PolicyData::of(&policy).lookalike.len(), 2);
        assert!(PolicyData::of(&policy).people.is_empty());
        assert_eq!(PolicyData::of(&policy.clone()).lookalike.len(), 2);
    }
}
