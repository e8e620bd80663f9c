//! Forged trust: headers that claim to come from us but sit below the trust boundary, where
//! anybody could have written them. They are never read for the decision (unspoof trusts only
//! its own checks); this module reports them, because their presence shows intent.
//!
//! - An Authentication-Results (or ARC-less AR-like) header whose authserv-id is our hostname or
//!   in a protected domain, outside the trusted top of the header section (RFC 8601 5: a border
//!   MTA must remove such headers; finding one means somebody forged our verdict):
//!   `trust.forged_auth_results`, action `forged_trust`.
//! - A Received header below the boundary whose `by` names our host or a protected domain:
//!   `trust.forged_received`, reported only (mail of ours that comes back through a mailing
//!   list legitimately carries such a line).

use super::Context;
use crate::verdict::{Action, Reason};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let boundary = trusted_region_end(ctx);
    for h in ctx.headers.all("Authentication-Results") {
        if h.offset < boundary {
            continue;
        }
        let value = h.value_unfolded();
        let id = authserv_id(&value);
        if is_ours(ctx, &id) {
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

/// The authserv-id: the first token of the value, before any version number or `;`.
fn authserv_id(value: &str) -> String {
    let first = value.split(';').next().unwrap_or("");
    let first = match first.find('(') {
        Some(i) => &first[..i],
        None => first,
    };
    first
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches('"')
        .to_ascii_lowercase()
}

fn is_ours(ctx: &Context<'_>, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == ctx.policy.hostname.to_ascii_lowercase() || ctx.policy.is_protected(&host)
}
