//! The in-line relay to the site's real MTA (`downstream`), through the one SMTP client
//! (`unspoof_forensics::send::Client`).
//!
//! The downstream transaction runs in step with the client's: MAIL and each RCPT are forwarded
//! when the client sends them, so the client sees the downstream's own per-recipient replies;
//! after the engine has decided, the message is sent and the downstream's end-of-data reply
//! becomes ours. The client therefore gets 250 only once the downstream has accepted the
//! message, and any failure to reach it ([`RelayError`], either variant) is a 4xx that makes
//! the client retry: nothing is lost. The connection is kept across the client's transactions.

/// An open SMTP session with the downstream MTA.
pub use unspoof_forensics::send::Client as Downstream;
/// Why the downstream could not be used.
pub use unspoof_forensics::send::SendError as RelayError;
