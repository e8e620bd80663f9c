//! The unspoof engine: one message, its SMTP envelope, a DNS view and a policy go in; a verdict
//! that explains itself comes out. It does no I/O of its own beyond the DNS interface in
//! [`dns`], so the same message and the same DNS answers always give the same verdict.

pub mod dns;
pub mod message;
pub mod trace;
