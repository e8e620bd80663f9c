//! The hub cannot be bypassed unseen (issue 19, item 4): a message for one of our domains
//! whose trace shows it did not pass one of the site's gateways (`[gateway] gateway_names`).
//!
//! Mail sent straight to an inner server (an old MX, a mail server's public address) skips
//! every check the hub makes; it is how attackers get forged mail past a filtering gateway.
//! The milter on the inner server and `unspoof analyze` of a delivered message see it here.
//!
//! How "passed the hub" is read: the trace's trusted part (the hops written by our own
//! networks and trusted relays, `crate::trace`) holds a hop whose `by` names a gateway. Only
//! trusted hops count: a forger can write `by mx1.example.org` into a header of its own, but
//! it cannot make our inner server receive the message from the gateway's address. So the
//! gateways' addresses must be in `internal_networks` (or `trusted_relays`), as every host of
//! the site's own is.
//!
//! Not a bypass:
//! - no `gateway_names` in the policy (the check is off);
//! - the message reaches a gateway now: the envelope names a client and our `hostname` is a
//!   gateway name (`unspoof serve`, or a milter on the hub's own MTA);
//! - a submission (`auth_user`), or a message whose origin is in `internal_networks`: mail of
//!   our own users never passes the inbound hub;
//! - the origin is unknown (no client address anywhere): nothing to compare, and the other
//!   findings still run;
//! - a message for nobody in our domains.

use super::Context;
use crate::verdict::Reason;

/// The reason code.
pub const HUB_BYPASS: &str = "hub.bypass";

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let gateways = &ctx.policy.gateway_names;
    if gateways.is_empty() {
        return;
    }
    if ctx.envelope.ip.is_some() && is_gateway(gateways, &ctx.policy.hostname) {
        return;
    }
    if ctx.envelope.auth_user.is_some() {
        return;
    }
    let Some(origin) = ctx.trace.origin.as_ref() else {
        return;
    };
    if ctx.policy.is_internal(origin.ip) {
        return;
    }
    let Some(ours) = our_recipient(ctx) else {
        return;
    };
    let passed = ctx
        .trace
        .hops
        .iter()
        .filter(|h| h.trusted)
        .any(|h| h.by.as_deref().is_some_and(|b| is_gateway(gateways, b)));
    if passed {
        return;
    }
    // Where the message did enter: the newest trusted hop's writer, else our own MTA.
    let entered = ctx
        .trace
        .hops
        .iter()
        .filter(|h| h.trusted)
        .find_map(|h| h.by.clone())
        .unwrap_or_else(|| ctx.policy.hostname.clone());
    let mut reason = Reason::new(
        HUB_BYPASS,
        ctx.policy.actions.hub_bypass,
        format!(
            "the message for {ours} came from {} straight to {entered} without passing any of our gateways ({}): mail that skips the hub skips its checks",
            origin.ip,
            gateways.join(", ")
        ),
    );
    if let Some(hop) = origin.hop.and_then(|i| ctx.trace.hops.get(i)) {
        reason = reason.with_evidence(format!("Received: {}", hop.raw));
    } else {
        reason = reason.with_evidence(format!("SMTP client {}", origin.ip));
    }
    out.push(reason);
}

/// Whether `host` (a `by` name or our hostname) is one of the gateway names.
fn is_gateway(gateways: &[String], host: &str) -> bool {
    let host = host.trim().trim_end_matches('.');
    gateways.iter().any(|g| g.eq_ignore_ascii_case(host))
}

/// The first recipient in one of our domains: the envelope's, else (a stored message) the
/// `for` clauses of the trusted hops, else `Delivered-To`, `To` and `Cc`.
fn our_recipient(ctx: &Context<'_>) -> Option<String> {
    let ours = |a: &str| {
        let a = a.trim().trim_start_matches('<').trim_end_matches('>');
        a.rsplit_once('@')
            .filter(|(_, d)| ctx.policy.is_protected(d))
            .map(|_| a.to_string())
    };
    if !ctx.envelope.rcpt.is_empty() {
        return ctx.envelope.rcpt.iter().find_map(|r| ours(r));
    }
    if let Some(a) = ctx
        .trace
        .hops
        .iter()
        .filter(|h| h.trusted)
        .filter_map(|h| h.for_addr.as_deref())
        .find_map(ours)
    {
        return Some(a);
    }
    for name in ["Delivered-To", "To", "Cc"] {
        for h in ctx.headers.all(name) {
            let v = h.value_unfolded();
            for part in v.split(',') {
                let addr = match (part.rfind('<'), part.rfind('>')) {
                    (Some(s), Some(e)) if s < e => &part[s + 1..e],
                    _ => part,
                };
                if let Some(a) = ours(addr) {
                    return Some(a);
                }
            }
        }
    }
    None
}
