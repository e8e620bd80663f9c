//! Own-domain spoofing (seed 3.2.2): mail from outside that claims one of our own domains, in
//! From or MAIL FROM, and that nothing authenticates. Rejected whatever the domain's published
//! DMARC policy says: a site knows its own senders, so `p=none` on our own domain (common while
//! a site rolls DMARC out) must not let a forger through our own door.

use super::{Context, authentication::trusted_arc_voucher, section};
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
    // Without a From field, what readers are shown instead is judged as the From (issue 12).
    claimed.extend(
        section::stand_in_authors(ctx)
            .into_iter()
            .filter(|(_, d)| ctx.policy.is_protected(d)),
    );
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
    if ctx.envelope.ip.is_some_and(|ip| ctx.policy.is_internal(ip)) {
        return;
    }
    let came_from = match ctx.envelope.ip {
        Some(ip) => format!("{ip}, outside our networks"),
        None => "a client we cannot name (no client IP)".to_string(),
    };
    let auth = ctx.auth;
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
        let (code, action, tail) = if !auth.checked {
            // Nothing could be checked (DNS off): a claim of ours is not a clean accept.
            (
                "spoof.own_domain_unverified",
                Action::Tag.min(ctx.policy.actions.own_domain_spoof),
                "and authentication was not checked",
            )
        } else if unsure {
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
                    "{field} claims {domain}, one of our own domains, but the message came from {came_from}, {tail}"
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
