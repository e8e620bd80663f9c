//! Forged trust: headers that claim to come from us but sit below the trust boundary, where
//! anybody could have written them. They are never read for the decision (unspoof trusts only
//! its own checks); this module reports them, because their presence shows intent.
//!
//! - An Authentication-Results header whose authserv-id is our hostname or in a protected
//!   domain, outside the trusted top of the header section (RFC 8601 5: a border MTA must remove
//!   such headers; finding one means somebody forged our verdict):
//!   `trust.forged_auth_results`, action `forged_trust`.
//! - The same claim in an ARC-Authentication-Results (RFC 8617 4.1.2): an ARC set that says we
//!   checked the message before it ever reached us: `trust.forged_arc_results`, action
//!   `forged_trust`. The field is not removed by the front doors (that would break the ARC
//!   chain for every later verifier); the finding says it is false.
//!
//! Whose results a field claims is read by [`crate::message::auth_results`], the RFC 8601
//! reader every front door uses to remove forged fields, so a form the doors remove is a form
//! this module reports.
//! - A Received header below the boundary whose `by` names our host or a protected domain:
//!   `trust.forged_received`, reported only (mail of ours that comes back through a mailing
//!   list legitimately carries such a line).

use super::Context;
use crate::message::auth_results::{
    ARC_AUTHENTICATION_RESULTS, AUTHENTICATION_RESULTS, AuthservId, arc_authserv_id, authserv_id,
    normalize,
};
use crate::verdict::{Action, Reason};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let boundary = trusted_region_end(ctx);
    let below = |name: &'static str| ctx.headers.all(name).filter(move |h| h.offset >= boundary);
    for h in below(AUTHENTICATION_RESULTS) {
        if let Some(id) = claimed_ours(ctx, &authserv_id(h.value)) {
            let value = h.value_unfolded();
            out.push(
                Reason::new(
                    "trust.forged_auth_results",
                    ctx.policy.actions.forged_trust,
                    format!(
                        "an Authentication-Results header claims to be from {id} (us) but was in the message before it reached us; it was ignored"
                    ),
                )
                .with_evidence(format!("Authentication-Results: {value}")),
            );
        }
    }
    for h in below(ARC_AUTHENTICATION_RESULTS) {
        if let Some(id) = claimed_ours(ctx, &arc_authserv_id(h.value)) {
            let value = h.value_unfolded();
            out.push(
                Reason::new(
                    "trust.forged_arc_results",
                    ctx.policy.actions.forged_trust,
                    format!(
                        "an ARC-Authentication-Results header claims that {id} (us) checked this message before it reached us; it was ignored"
                    ),
                )
                .with_evidence(format!("ARC-Authentication-Results: {value}")),
            );
        }
    }
    for hop in ctx.trace.hops.iter().filter(|h| !h.trusted) {
        let Some(by) = hop.by.as_deref() else {
            continue;
        };
        if is_ours(ctx, by) {
            out.push(
                Reason::new(
                    "trust.forged_received",
                    Action::Accept,
                    format!(
                        "a Received header below the trust boundary claims our host {by}; it was not used"
                    ),
                )
                .with_evidence(format!("Received: {}", hop.raw)),
            );
        }
    }
}

/// The offset up to which header fields were written by us or hosts we trust: the end of the
/// Received field of the deepest trusted hop; 0 when no hop is trusted.
fn trusted_region_end(ctx: &Context<'_>) -> usize {
    let Some(deepest) = ctx
        .trace
        .hops
        .iter()
        .filter(|h| h.trusted)
        .map(|h| h.index)
        .max()
    else {
        return 0;
    };
    ctx.headers
        .all("Received")
        .nth(deepest)
        .map(|h| h.offset + h.name.len() + 1 + h.value.len())
        .unwrap_or(0)
}

/// The id of ours (our hostname or a protected domain) that a field claims, if any: the id the
/// grammar read, or, for a malformed value, any word a lenient reader could take for it.
fn claimed_ours(ctx: &Context<'_>, read: &AuthservId) -> Option<String> {
    match read {
        AuthservId::Id(id) => is_ours(ctx, id).then(|| id.clone()),
        AuthservId::Malformed(words) => words.iter().find(|w| is_ours(ctx, w)).cloned(),
    }
}

fn is_ours(ctx: &Context<'_>, host: &str) -> bool {
    let host = normalize(host);
    !host.is_empty() && (host == normalize(&ctx.policy.hostname) || ctx.policy.is_protected(&host))
}
