//! Own mail that must be signed (`[[signed_mail]]`): for a protected domain whose mail is
//! always DKIM-signed, only a passing signature of one of its named senders proves that mail
//! claiming it is ours.
//!
//! The own-domain check (`own_domain.rs`) accepts an aligned SPF pass as proof. For a domain
//! whose SPF record includes a shared ESP (`include:spf.esp.example`), every customer of that
//! ESP passes it: a forger with an account there sends as us, SPF-aligned and DMARC-passing.
//! A site that signs all of its mail says so here, and then:
//!
//! - `spoof.own_domain_unsigned` (action `actions.own_domain_spoof`): a From mailbox in such a
//!   domain, on mail from outside our networks, with no passing DKIM signature of an
//!   authorised sender (with `senders` empty: of the domain's organisation), and no trusted
//!   ARC chain that vouches for it. With a DKIM `temperror` the action is at most `tag` (the
//!   key did not answer in time; a retry could pass). Not added when the own-domain check
//!   already refused the same message as `spoof.own_domain`.
//!
//! [`proves_ours`] is what the other findings ask before they take DMARC pass as "ours".

use super::{Context, authentication::trusted_arc_voucher};
use crate::{
    auth::Word,
    domain::same_organisation,
    policy::SignedMail,
    verdict::{Action, Reason},
};

/// Whether the message carries a passing signature that `rule` accepts for `domain`: a DKIM
/// signature, or a proven person-level signature (PGP, S/MIME) of an address in the domain
/// (`findings/signature.rs`).
fn signed_as_required(ctx: &Context<'_>, rule: &SignedMail, domain: &str) -> bool {
    super::signature::proves_sender(ctx, domain)
        || ctx.auth.dkim.iter().any(|d| {
            d.result == Word::Pass
                && if rule.senders.is_empty() {
                    same_organisation(&d.domain, domain)
                } else {
                    rule.senders.iter().any(|s| s.signs(&d.domain, &d.selector))
                }
        })
}

/// For a From domain under `[[signed_mail]]`: whether a required signature proves the mail
/// ours (`Some(true)`) or not (`Some(false)`); `None` when the domain has no such rule and the
/// usual evidence (DMARC pass, aligned DKIM) decides.
pub(crate) fn proves_ours(ctx: &Context<'_>, domain: &str) -> Option<bool> {
    let rule = ctx.policy.signed_mail_for(domain)?;
    Some(signed_as_required(ctx, rule, domain))
}

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    if ctx.policy.signed_mail.is_empty() {
        return;
    }
    let Some(ip) = ctx.envelope.ip else { return };
    if ctx.policy.is_internal(ip) {
        return;
    }
    let mut domains: Vec<&str> = ctx.from.iter().map(|m| m.domain.as_str()).collect();
    domains.dedup();
    let refused = |out: &[Reason]| out.iter().any(|r| r.code == "spoof.own_domain");
    if refused(out) {
        return;
    }
    let voucher = trusted_arc_voucher(ctx);
    let mut unsigned: Vec<(&str, &SignedMail)> = Vec::new();
    for domain in domains {
        let Some(rule) = ctx.policy.signed_mail_for(domain) else {
            continue;
        };
        if voucher.is_some() || signed_as_required(ctx, rule, domain) {
            continue;
        }
        if !unsigned.iter().any(|(d, _)| *d == domain) {
            unsigned.push((domain, rule));
        }
    }
    let Some(&(first, _)) = unsigned.first() else {
        return;
    };
    let unsure = ctx.auth.dkim.iter().any(|d| d.result == Word::TempError);
    let action = if unsure {
        Action::Tag.min(ctx.policy.actions.own_domain_spoof)
    } else {
        ctx.policy.actions.own_domain_spoof
    };
    let names: Vec<&str> = unsigned.iter().map(|(d, _)| *d).collect();
    let signers: Vec<String> = unsigned
        .iter()
        .flat_map(|(_, r)| r.senders.iter().map(|s| s.describe()))
        .collect();
    let wanted = if signers.is_empty() {
        format!("a DKIM signature of {first}'s organisation")
    } else {
        format!(
            "a DKIM signature of an authorised sender ({})",
            signers.join(", ")
        )
    };
    let tail = if unsure {
        "; DNS did not answer in time for a signature, so this may change on a retry"
    } else {
        ""
    };
    let spf = &ctx.auth.spf;
    out.push(
        Reason::new(
            "spoof.own_domain_unsigned",
            action,
            format!(
                "From claims {}, our own mail that is always signed, but the message from {ip} carries no passing {wanted}; an SPF pass alone does not prove it ours{tail}",
                names.join(", ")
            ),
        )
        .with_evidence(format!(
            "spf={} smtp.mailfrom={}; dkim={}",
            spf.result,
            spf.sender,
            ctx.auth
                .dkim
                .iter()
                .map(|d| format!("{} (d={} s={})", d.result, d.domain, d.selector))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    );
}
