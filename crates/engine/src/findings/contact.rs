//! First contact: mail from a sender domain that the recipient has never been delivered mail
//! from (the front door's store answers; see `crate::contact`).
//!
//! Alone it is informational (`contact.first`, accept): every correspondence starts with a
//! first message. Together with an impersonation or a lookalike domain it is the shape of
//! payment fraud (a stranger borrowing a name we trust), so the pair is more suspicious than
//! either alone: `contact.first_impersonation` asks for one step more than the most severe of
//! those findings (quarantine becomes reject). When the policy makes impersonation log-only
//! (`accept`, a trial rollout), the pair stays log-only too. When the From address itself has
//! written to the site before (`Envelope.known_sender`), the domain may be new to this
//! recipient but the sender is no stranger: no escalation.

use super::Context;
use crate::verdict::{Action, Reason};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    if ctx.envelope.first_contact != Some(true) {
        return;
    }
    let sender = ctx
        .from
        .iter()
        .map(|m| m.domain.as_str())
        .find(|d| !d.is_empty())
        .map(str::to_string)
        .or_else(|| ctx.mail_from_domain())
        .unwrap_or_else(|| "this sender".into());
    out.push(Reason::new(
        "contact.first",
        Action::Accept,
        format!("the first message from {sender} to its recipients"),
    ));
    if super::correspondent::known(ctx) {
        // The address has written here before: the stranger pattern does not apply (the
        // impersonation finding itself was already judged with that memory).
        return;
    }
    let borrowed = out
        .iter()
        .filter(|r| r.code.starts_with("impersonation.") || r.code.starts_with("lookalike."))
        .max_by_key(|r| r.action);
    let Some(borrowed) = borrowed else { return };
    let action = match borrowed.action {
        Action::Accept => Action::Accept,
        Action::Tag => Action::Quarantine,
        Action::Quarantine | Action::Reject => Action::Reject,
    };
    let code = borrowed.code.clone();
    out.push(
        Reason::new(
            "contact.first_impersonation",
            action,
            format!(
                "a sender never seen before by its recipients also borrows a trusted name ({code})"
            ),
        )
        .with_evidence(format!("{code}: {}", borrowed.message)),
    );
}
