//! Forensics: tie a message to the mail server's logs, and report it to the sites involved.
//!
//! Trust level: reads the log files and messages it is given; sends mail only when asked
//! (`--send`), to the configured relay; [`send::Client`] talks to whatever SMTP server its
//! caller names, whose replies are untrusted. The verdict itself comes from the engine.
//!
//! - [`logs`]: Postfix, Sendmail and Exim log lines (syslog, RFC 3339, journald short-iso,
//!   gzip) into events.
//! - [`join`]: a message's Message-ID and hop trace joined with those events: its queue ids,
//!   the client that really connected, its deliveries, and whether the log confirms or
//!   contradicts the Received headers.
//! - [`report`]: ARF abuse reports and DMARC failure reports (built), and reports that others
//!   send us (parsed).
//! - [`send`]: the one SMTP client: the gateway's relay, and every report or release sent.

pub mod join;
pub mod logs;
pub mod report;
pub mod send;
