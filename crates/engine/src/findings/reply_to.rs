//! Reply-To diversion: a message that uses our name (a protected From domain, or an
//! impersonated person) but sends the replies to another organisation. This is how
//! payment-fraud mail keeps the conversation going after the first forged message.

use super::Context;
use crate::{domain::same_organisation, verdict::Reason};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let impersonated = out
        .iter()
        .any(|r| r.code.starts_with("impersonation.") || r.code.starts_with("lookalike."));
    if !(ctx.from_is_protected() || impersonated) {
        return;
    }
    // Mail that is provably ours (internal network, or DMARC pass for our domain) may send
    // replies anywhere its author likes; the check is for mail that only claims to be ours.
    let internal = ctx.envelope.ip.is_some_and(|ip| ctx.policy.is_internal(ip));
    if !impersonated && (internal || ctx.auth.dmarc.result == crate::auth::Word::Pass) {
        return;
    }
    let Some(from) = ctx.from.first() else { return };
    for rt in &ctx.reply_to {
        if rt.domain.is_empty()
            || same_organisation(&rt.domain, &from.domain)
            || ctx.policy.is_protected(&rt.domain)
        {
            continue;
        }
        out.push(
            Reason::new(
                "reply_to.diversion",
                ctx.policy.actions.reply_to_diversion,
                format!(
                    "replies go to {}, another organisation than the sender {} claims to be",
                    rt.domain, from.domain
                ),
            )
            .with_evidence(format!("Reply-To: {}", rt.address)),
        );
        return;
    }
}
