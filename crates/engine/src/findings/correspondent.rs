//! Impersonation with memory: a borrowed name on an address that has written to the site
//! before is less likely a stranger's trick than the same name on an address never seen.
//!
//! The front door asks its store whether the From address has ever had mail delivered here
//! (`Envelope.known_sender`, see `crate::contact`). For a display-name impersonation
//! (`impersonation.display_name`, `impersonation.watched_brand`) of the first From mailbox:
//!
//! | the address | the name | result |
//! | --- | --- | --- |
//! | never written before, or nobody knows (no store, no answer in time) | any match | the finding's action (`actions.impersonation`, quarantine by default) |
//! | has written before | any match | the finding, at most `tag`: the reader is warned, the mail arrives |
//! | has written before, and the message is fully authenticated (DMARC pass for its From domain with an aligned DKIM signature) | exactly the name | `impersonation.namesake`, informational (`accept`): another person of the same name, a known correspondent |
//!
//! An address becomes known only through delivered mail (accept, tag, or a person's release
//! from quarantine), so an impersonator's quarantined first message does not make the second
//! one familiar.

use super::{Context, Mailbox};
use crate::{auth::Word, domain::same_organisation, verdict::Action};

/// What the memory makes of one display-name finding.
pub(crate) struct Judged {
    /// A code that replaces the finding's own (`impersonation.namesake`).
    pub code: Option<&'static str>,
    pub action: Action,
    /// Words appended to the finding's message.
    pub note: &'static str,
}

/// The action (and code) of a display-name finding on `mb` whose own action is `action`;
/// `exact`: the name matched exactly (not with role or other words).
pub(crate) fn judge(ctx: &Context<'_>, mb: &Mailbox, exact: bool, action: Action) -> Judged {
    if ctx.envelope.known_sender != Some(true) || action == Action::Accept {
        return Judged {
            code: None,
            action,
            note: "",
        };
    }
    if exact && fully_authenticated(ctx, mb) {
        return Judged {
            code: Some("impersonation.namesake"),
            action: Action::Accept,
            note: "; the address has written to us before and the message is fully authenticated (DMARC pass with an aligned DKIM signature), so it is taken for a namesake",
        };
    }
    Judged {
        code: None,
        action: action.min(Action::Tag),
        note: "; the address has written to us before, so the message is only tagged",
    }
}

/// DMARC passed for the mailbox's domain and a DKIM signature of its organisation passed.
fn fully_authenticated(ctx: &Context<'_>, mb: &Mailbox) -> bool {
    let auth = ctx.auth;
    auth.dmarc.result == Word::Pass
        && same_organisation(&auth.dmarc.domain, &mb.domain)
        && auth
            .dkim
            .iter()
            .any(|d| d.result == Word::Pass && same_organisation(&d.domain, &mb.domain))
}

/// Whether an earlier finding was judged by the memory as a known correspondent's, so that the
/// first-contact escalation (`contact.first_impersonation`) leaves it alone.
pub(crate) fn known(ctx: &Context<'_>) -> bool {
    ctx.envelope.known_sender == Some(true)
}
