//! Backscatter is evidence (issue 19, item 3): a bounce, auto-reply or challenge for one of
//! our users about a message in our name that we never sent (`crate::bounce` reads it).
//!
//! The returned message is ours when any of these holds, and the notification is then
//! delivered as usual:
//! - it carries a DKIM signature of one of our domains (our outbound mail is signed);
//! - one of its `Received` hops was written by one of our servers (`hostname`,
//!   `[gateway] gateway_names`) or names a client in `internal_networks` with a public
//!   address (private space is everybody's: the bouncing receiver's own inner hops use it);
//! - the front door's store has its Message-ID among the mail we sent
//!   ([`Envelope::sent_by_us`](crate::Envelope) is `Some(true)`).
//!
//! When none holds and the notification shows enough to tell (the returned headers came back,
//! or the store answered "not ours" for the Message-IDs an auto-reply answers), someone sent
//! mail in our name: `backscatter.forged`, with the action `[actions] backscatter` and the
//! forger's origin as the bouncing receiver recorded it. A notification that returns nothing
//! and names nothing the store knows gives no finding: nothing tells either way.
//!
//! Only notifications about mail in our name count: the returned From or Return-Path, or the
//! answered Message-ID's domain, is one of ours; and only for our users: with an envelope, a
//! recipient in our domains.

use super::Context;
use crate::{
    bounce::{self, Kind, Notification},
    trace,
    verdict::Reason,
};

/// The reason code.
pub const BACKSCATTER_FORGED: &str = "backscatter.forged";

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    if !ctx.envelope.rcpt.is_empty()
        && !ctx.envelope.rcpt.iter().any(|r| {
            r.rsplit_once('@')
                .is_some_and(|(_, d)| ctx.policy.is_protected(d))
        })
    {
        return;
    }
    if ctx.envelope.auth_user.is_some() {
        return;
    }
    let Some(n) = bounce::read(ctx.raw) else {
        return;
    };
    let Some(claimed) = claimed_domain(ctx, &n) else {
        return;
    };
    if ctx.envelope.sent_by_us == Some(true) || !ours(ctx, &n).is_empty() {
        return;
    }
    let looked = n.returned.is_some() || ctx.envelope.sent_by_us == Some(false);
    if !looked {
        return;
    }
    let mut how = Vec::new();
    if let Some(r) = &n.returned {
        how.push(if r.dkim_domains.is_empty() {
            "it carries no DKIM signature".to_string()
        } else {
            format!(
                "it is signed by {} but not by us",
                r.dkim_domains.join(", ")
            )
        });
        how.push("none of our servers handled it".to_string());
    }
    match ctx.envelope.sent_by_us {
        Some(false) => how.push("its Message-ID is not in our records of sent mail".into()),
        _ => how.push("our records of sent mail were not asked".into()),
    }
    let origin = n.returned_origin();
    let from_where = match &origin {
        Some(o) => format!(
            "; the forged message reached {} from {}{}",
            o.by.as_deref().unwrap_or("the receiver"),
            o.ip,
            o.helo
                .as_deref()
                .or(o.rdns.as_deref())
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    let about = n
        .returned
        .as_ref()
        .and_then(|r| r.message_id.clone())
        .or_else(|| n.refers_to.first().cloned())
        .map(|id| format!(" <{id}>"))
        .unwrap_or_default();
    let mut reason = Reason::new(
        BACKSCATTER_FORGED,
        ctx.policy.actions.backscatter,
        format!(
            "{} about a message{about} in the name of {claimed} that we never sent ({}): someone forges our domain{from_where}",
            capitalised(n.kind.words()),
            how.join(", ")
        ),
    );
    if let Some(o) = &origin {
        reason = reason.with_evidence(format!("returned Received: {}", o.received));
    }
    if let Some(r) = &n.returned {
        if let Some(f) = &r.from {
            reason = reason.with_evidence(format!("returned From: {f}"));
        }
        if let Some(s) = &r.subject {
            reason = reason.with_evidence(format!("returned Subject: {s}"));
        }
    }
    if n.kind == Kind::Dsn {
        for rcpt in &n.recipients {
            reason = reason.with_evidence(format!(
                "DSN: {} {} {}",
                rcpt.final_recipient.as_deref().unwrap_or("?"),
                rcpt.action.as_deref().unwrap_or("?"),
                rcpt.status.as_deref().unwrap_or("?")
            ));
        }
    }
    out.push(reason);
}

/// The one of our domains the answered message was sent in the name of, if any.
fn claimed_domain(ctx: &Context<'_>, n: &Notification) -> Option<String> {
    if let Some(r) = &n.returned {
        return [r.from_domain.as_ref(), r.return_path_domain.as_ref()]
            .into_iter()
            .flatten()
            .find(|d| ctx.policy.is_protected(d))
            .cloned();
    }
    n.refers_to
        .iter()
        .filter_map(|id| id.rsplit_once('@').map(|(_, d)| d.trim_end_matches('>')))
        .find(|d| ctx.policy.is_protected(d))
        .map(|d| d.to_ascii_lowercase())
}

/// What in the returned message says we sent it.
pub(crate) fn ours(ctx: &Context<'_>, n: &Notification) -> Vec<String> {
    let Some(r) = &n.returned else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for d in &r.dkim_domains {
        if ctx.policy.is_protected(d) {
            found.push(format!("DKIM signature d={d}"));
        }
    }
    let our_host = |h: &str| {
        let h = h.trim_end_matches('.');
        h.eq_ignore_ascii_case(&ctx.policy.hostname)
            || ctx
                .policy
                .gateway_names
                .iter()
                .any(|g| g.eq_ignore_ascii_case(h))
    };
    for hop in &r.trace.hops {
        if hop.by.as_deref().is_some_and(our_host) {
            found.push(format!("Received by our server: {}", hop.raw));
        } else if hop.from_ip.is_some_and(|ip| {
            // Private space is left out: the receiver's own inner hops use it too.
            ctx.policy.is_internal(ip) && trace::non_public_kind(ip).is_none()
        }) {
            found.push(format!("Received from our network: {}", hop.raw));
        }
    }
    found
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
