//! Own-domain spoofing (seed 3.2.2): mail from outside that claims one of our own domains, in
//! From or MAIL FROM, and that nothing authenticates. Rejected whatever the domain's published
//! DMARC policy says: a site knows its own senders, so `p=none` on our own domain (common while
//! a site rolls DMARC out) must not let a forger through our own door.

use super::{Context, authentication::trusted_arc_voucher};
use crate::{
    auth::Word,
    domain::same_organisation,
    verdict::{Action, Reason},
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let mut claimed: Vec<(&str, String)> = ctx
        .from
        .iter()
        .filter(|m| ctx.policy.is_protected(&m.domain))
        .map(|m| ("From", m.domain.clone()))
        .collect();
    if let Some(d) = ctx
        .mail_from_domain()
        .filter(|d| ctx.policy.is_protected(d))
    {
        claimed.push(("MAIL FROM", d));
    }
    claimed.dedup();
    if claimed.is_empty() {
        return;
    }
    let Some(ip) = ctx.envelope.ip else { return };
    if ctx.policy.is_internal(ip) {
        return;
    }
    let auth = ctx.auth;
    if !auth.checked {
        return;
    }
    let voucher = trusted_arc_voucher(ctx);
    for (field, domain) in claimed {
        let dkim_aligned = auth
            .dkim
            .iter()
            .any(|d| d.result == Word::Pass && same_organisation(&d.domain, &domain));
        let spf_aligned =
            auth.spf.result == Word::Pass && same_organisation(&auth.spf.domain, &domain);
        if dkim_aligned || spf_aligned || voucher.is_some() {
            continue;
        }
        let unsure = auth.spf.result == Word::TempError
            || auth.dkim.iter().any(|d| d.result == Word::TempError);
        let (code, action, tail) = if unsure {
            (
                "spoof.own_domain_unverified",
                Action::Tag.min(ctx.policy.actions.own_domain_spoof),
                "and DNS did not answer in time to check it",
            )
        } else {
            (
                "spoof.own_domain",
                ctx.policy.actions.own_domain_spoof,
                "and nothing authenticates it: no aligned DKIM signature, no SPF pass, no trusted ARC chain",
            )
        };
        out.push(
            Reason::new(
                code,
                action,
                format!(
                    "{field} claims {domain}, one of our own domains, but the message came from {ip}, outside our networks, {tail}"
                ),
            )
            .with_evidence(format!(
                "spf={} smtp.mailfrom={}; dkim={}; arc={}",
                auth.spf.result,
                auth.spf.sender,
                auth.dkim_summary(),
                auth.arc.result
            )),
        );
    }
}
