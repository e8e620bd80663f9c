//! The seam between the gateway and the engine: what the gateway asks ([`Envelope`] + raw
//! message) and what it gets back ([`Decision`]).
//!
//! **Boundary:** the gateway never judges a message itself beyond the SMTP rules it owns
//! (relay control, sender binding on submission, limits, smuggling); whether mail is forged is
//! the engine's answer, through [`Decide`].

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

/// The SMTP envelope of one message, as the engine sees it (mirrors `unspoof_engine::Envelope`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The connecting client's IP.
    pub ip: Option<IpAddr>,
    /// The EHLO/HELO argument.
    pub helo: Option<String>,
    /// MAIL FROM, without angle brackets; `Some("")` for the null reverse-path.
    pub mail_from: Option<String>,
    /// Accepted RCPT TO addresses.
    pub rcpt: Vec<String>,
    /// Unix time the message was received.
    pub received_at: Option<i64>,
    /// The authenticated submission user, if any.
    pub auth_user: Option<String>,
}

/// What to do with a message: the engine's disposition (accept and tag relay the edited
/// message, quarantine stores it and answers 250, reject answers 550 and defer 451 with the
/// engine's reply).
pub use unspoof_engine::Disposition as Action;
pub use unspoof_engine::{HeaderEdit, SmtpReply};

/// One reason for a decision: a stable machine code (`dmarc.fail`) and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: String,
    pub message: String,
}

/// The engine's answer for one message (`unspoof_engine::Decision` with the reasons in reply
/// order): the gateway applies it and decides nothing of its own.
#[derive(Debug, Clone)]
pub struct Decision {
    pub action: Action,
    pub reasons: Vec<Reason>,
    /// The reply for a reject or a defer (the gateway adds its queue id).
    pub reply: SmtpReply,
    /// Header edits for the relayed or stored copy, in order
    /// (`unspoof_engine::decision::apply`): forged results and stale verdicts out, our
    /// Authentication-Results and verdict field in, the tag's Subject.
    pub edits: Vec<HeaderEdit>,
    /// The new body when a banner was added; `None` relays the body as received.
    pub body: Option<Vec<u8>>,
    /// The engine's whole analysis, for the records (the store keeps it with the message);
    /// nothing in the gateway decides on it. `None` from test doubles.
    pub analysis: Option<Arc<unspoof_engine::Analysis>>,
}

/// The engine as the gateway uses it. Implemented by the adapter over `unspoof_engine::Engine`
/// (and by test doubles, in tests only).
pub trait Decide: Send + Sync + 'static {
    /// Decides one message. `authserv_id` is our host name, for Authentication-Results.
    fn decide(
        &self,
        raw: &[u8],
        envelope: &Envelope,
        authserv_id: &str,
    ) -> impl Future<Output = Decision> + Send;

    /// Reloads the policy (SIGHUP). Errors are reported and the old policy stays in force.
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
}
