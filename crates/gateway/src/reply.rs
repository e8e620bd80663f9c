//! Every fixed SMTP reply we send, with the rule it comes from. Reply texts stay generic: they
//! tell the client what to do, never how we are configured nor which check tripped.
//!
//! Enhanced status codes are RFC 3463 (registry: RFC 5248); basic codes RFC 5321 4.2.

pub const OK: &str = "250 2.0.0 Ok\r\n";
pub const SENDER_OK: &str = "250 2.1.0 Sender ok\r\n";
pub const RECIPIENT_OK: &str = "250 2.1.5 Recipient ok\r\n";
pub const RESET_OK: &str = "250 2.0.0 Reset\r\n";
pub const BYE: &str = "221 2.0.0 Bye\r\n";
/// RFC 5321 3.5.3: VRFY may answer 252 without verifying.
pub const VRFY: &str =
    "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n";
pub const HELP: &str = "214 2.0.0 See RFC 5321\r\n";
pub const START_DATA: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";
pub const READY_TLS: &str = "220 2.0.0 Ready to start TLS\r\n";
pub const AUTH_OK: &str = "235 2.7.0 Authentication successful\r\n";

// 4xx: the sender keeps the message and retries.
/// RFC 3463 4.3.2: system not accepting network messages (shutting down, full).
pub const SHUTTING_DOWN: &str = "421 4.3.2 Service shutting down, try again later\r\n";
pub const TOO_MANY_CONNECTIONS: &str = "421 4.3.2 Too many connections, try again later\r\n";
pub const TOO_MANY_FROM_IP: &str = "421 4.7.0 Too many connections from your address\r\n";
pub const TIMEOUT: &str = "421 4.4.2 Timeout, closing connection\r\n";
pub const TOO_MANY_ERRORS: &str = "421 4.7.0 Too many errors, closing connection\r\n";
/// Downstream MTA not reachable (RFC 3463 4.4.1: no answer from host).
pub const DOWNSTREAM_DOWN: &str = "451 4.4.1 Next hop unavailable, try again later\r\n";
/// Downstream MTA timed out or dropped the connection (RFC 3463 4.4.2: bad connection).
pub const DOWNSTREAM_LOST: &str = "451 4.4.2 Next hop connection lost, try again later\r\n";
pub const LOCAL_ERROR: &str = "451 4.3.0 Local error, try again later\r\n";
/// RFC 5321 4.5.3.1.10: too many recipients is 452, and the client sends the rest later.
pub const TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Too many recipients\r\n";
/// RFC 5321 4.2.2 / RFC 3463 4.3.1 (mail system full): the memory for messages in flight
/// (`max_inflight_memory`) is taken; the client keeps the message and retries.
pub const INSUFFICIENT_STORAGE: &str = "452 4.3.1 Insufficient system storage, try again later\r\n";
/// RFC 4954 6 (454 4.7.0, temporary authentication failure): this network or account failed
/// to log in too often (`auth_failures_per_ip`, `auth_failures_per_account`).
pub const AUTH_LOCKED: &str = "454 4.7.0 Too many failed logins, try again later\r\n";

// 5xx: refused for good.
pub const UNKNOWN_COMMAND: &str = "500 5.5.1 Command unrecognized\r\n";
pub const LINE_TOO_LONG: &str = "500 5.5.2 Line too long\r\n";
pub const NOT_IMPLEMENTED: &str = "502 5.5.1 Command not implemented\r\n";
pub const BAD_SEQUENCE: &str = "503 5.5.1 Bad sequence of commands\r\n";
pub const NEED_HELO: &str = "503 5.5.1 Send EHLO first\r\n";
pub const NESTED_MAIL: &str = "503 5.5.1 Sender already specified\r\n";
pub const NEED_MAIL: &str = "503 5.5.1 Send MAIL first\r\n";
pub const NEED_RCPT: &str = "503 5.5.1 Send RCPT first\r\n";
pub const ALREADY_TLS: &str = "503 5.5.1 TLS already active\r\n";
pub const ALREADY_AUTH: &str = "503 5.5.1 Already authenticated\r\n";
pub const AUTH_CANCELLED: &str = "501 5.7.0 Authentication cancelled\r\n";
pub const SYNTAX: &str = "501 5.5.4 Syntax error in parameters or arguments\r\n";
pub const PARAM_UNSUPPORTED: &str = "555 5.5.4 Parameter not supported\r\n";
/// RFC 4954 4: AUTH needs TLS here (5.7.11 is "encryption required for requested mechanism").
pub const AUTH_NEEDS_TLS: &str =
    "538 5.7.11 Encryption required for requested authentication mechanism\r\n";
pub const AUTH_MECH_UNSUPPORTED: &str = "504 5.5.4 Unrecognized authentication type\r\n";
pub const AUTH_REQUIRED: &str = "530 5.7.0 Authentication required\r\n";
pub const AUTH_FAILED: &str = "535 5.7.8 Authentication credentials invalid\r\n";
/// RFC 3207 4: STARTTLS pipelined with more commands is an injection attempt.
pub const TLS_PIPELINED: &str = "554 5.5.1 Data after STARTTLS not allowed\r\n";
pub const TLS_UNAVAILABLE: &str = "454 4.7.0 TLS not available\r\n";
pub const BAD_SENDER_SYNTAX: &str = "553 5.1.7 Malformed sender address\r\n";
pub const BAD_RECIPIENT_SYNTAX: &str = "553 5.1.3 Malformed recipient address\r\n";
/// Never an open relay (RFC 5321 3.6.2, RFC 3463 5.7.1: delivery not authorized).
pub const RELAY_DENIED: &str = "550 5.7.1 Relaying denied\r\n";
/// Inbound mail using one of our own domains as sender from outside: a spoof on its face.
pub const OWN_DOMAIN_SENDER: &str =
    "550 5.7.1 Sender address rejected: not allowed from this host\r\n";
/// Submission: MAIL FROM is not an address of the logged-in user.
pub const SENDER_NOT_OWNED: &str = "553 5.7.1 Sender address not owned by authenticated user\r\n";
/// Submission: the header From (or Sender) is not an address of the logged-in user.
pub const HEADER_FROM_NOT_OWNED: &str = "550 5.7.1 Header From not owned by authenticated user\r\n";
pub const SIZE_EXCEEDED: &str = "552 5.3.4 Message size exceeds fixed maximum message size\r\n";
pub const NO_VALID_RECIPIENTS: &str = "554 5.5.1 No valid recipients\r\n";
/// RFC 5321 2.3.8: lines end in CRLF only. RFC 3463 5.6.0: other media error. Bare LF/CR in
/// DATA is refused so that no end-of-data other than CRLF.CRLF can ever be read by anyone.
pub const BARE_LINE_ENDING: &str =
    "550 5.6.0 Bare LF or CR in message not allowed; lines must end in CRLF\r\n";
pub const LINE_TOO_LONG_DATA: &str = "550 5.6.0 Message line too long\r\n";
pub const HEADER_TOO_BIG: &str = "550 5.6.0 Message header too large\r\n";
/// RFC 5322 2.2.3: a line starting with a space or a tab continues the field before it; the
/// first line of a message has none.
pub const FOLDED_FIRST_LINE: &str =
    "550 5.6.0 Message header section starts with a continuation line\r\n";
/// RFC 5321 4.1.1.4 / RFC 5322 2.1: no NUL in a message (software written in C stops reading
/// there, so each program would see another message).
pub const NUL_IN_MESSAGE: &str = "550 5.6.0 NUL characters in message not allowed\r\n";
/// RFC 6531 3.4 (5.6.7: non-ASCII addresses not permitted for that sender/recipient): a
/// non-ASCII address without SMTPUTF8 on MAIL.
pub const NON_ASCII_ADDRESS: &str = "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n";

// The replies to messages the engine decided (reject 550 5.7.1, defer 451 4.4.3) are the
// engine's (`unspoof_engine::decision`), the same in every door.
