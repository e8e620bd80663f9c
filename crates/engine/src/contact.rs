//! First contact: "has this recipient ever been delivered mail from this sender domain?"
//!
//! The answer lives in the front door's store, not here: the engine does no I/O beyond DNS.
//! So the front door asks before it calls the engine ([`first_contact`]) and passes the answer
//! in [`Envelope::first_contact`](crate::Envelope::first_contact); the finding that uses it is
//! `findings/contact.rs`. The same message with the same answer always gets the same verdict.

use std::{future::Future, pin::Pin, time::Duration};

use crate::{Envelope, Headers, message};

/// How long a front door waits for the answer before it decides without it ("unknown"): a
/// slow database must not hold mail up.
pub const FIRST_CONTACT_BUDGET: Duration = Duration::from_millis(500);

/// Most recipients asked about per message: a message to a long list is a first contact as
/// soon as one of these has never heard from the sender.
pub const MAX_RECIPIENTS_ASKED: usize = 16;

/// Where delivered mail is remembered (the store). `None` from [`ContactHistory::has_seen`]
/// means "could not tell" (the database is down or slow), never a guess.
pub trait ContactHistory: Send + Sync {
    /// Has `recipient` ever been delivered mail whose sender domain was `sender_domain`?
    fn has_seen<'a>(
        &'a self,
        sender_domain: &'a str,
        recipient: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<bool>> + Send + 'a>>;
}

/// The sender domain first contact is keyed on: the domain of the first From mailbox, read as
/// the findings read it, else the MAIL FROM domain; lower case, without a trailing dot.
pub fn sender_domain(raw: &[u8], mail_from: Option<&str>) -> Option<String> {
    let raw = message::to_crlf(raw);
    let headers = Headers::parse(&raw);
    sender_keys(&headers, mail_from).0
}

/// The two keys the store is asked with, from one reading of the header section: the sender
/// domain of [`sender_domain`] and the From address of [`sender_address`].
fn sender_keys(headers: &Headers<'_>, mail_from: Option<&str>) -> (Option<String>, Option<String>) {
    let (from, _) = message::mailbox::read_addresses(headers);
    let address = from.first().and_then(|m| address_key(&m.address));
    let domain = from
        .into_iter()
        .map(|m| m.domain)
        .find(|d| !d.is_empty())
        .or_else(|| {
            let (_, d) = mail_from?.rsplit_once('@')?;
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            (!d.is_empty()).then_some(d)
        });
    (domain, address)
}

/// The first-contact answer for one message, as [`Envelope::first_contact`] wants it:
/// `Some(true)` if a recipient (of the first [`MAX_RECIPIENTS_ASKED`]) has never been
/// delivered mail from the sender domain, `Some(false)` if all have, `None` if there is no
/// sender domain, no recipient, or the history did not answer everything within `budget`.
pub async fn first_contact(
    history: &dyn ContactHistory,
    raw: &[u8],
    envelope: &Envelope,
    budget: Duration,
) -> Option<bool> {
    let domain = sender_domain(raw, envelope.mail_from.as_deref())?;
    first_contact_of(history, &domain, &envelope.rcpt, budget).await
}

async fn first_contact_of(
    history: &dyn ContactHistory,
    domain: &str,
    rcpt: &[String],
    budget: Duration,
) -> Option<bool> {
    if rcpt.is_empty() {
        return None;
    }
    let ask = async {
        for rcpt in rcpt.iter().take(MAX_RECIPIENTS_ASKED) {
            if !history.has_seen(domain, rcpt).await? {
                return Some(true);
            }
        }
        Some(false)
    };
    tokio::time::timeout(budget, ask).await.ok().flatten()
}

/// The recipient key under which the store remembers a From address site-wide: the
/// correspondent memory asks `has_seen(address, ANY_RECIPIENT)` (addresses hold an `@`, domains
/// never do, so the two kinds of key cannot meet).
pub const ANY_RECIPIENT: &str = "*";

/// The From address the correspondent memory is keyed on: the first From mailbox's address,
/// lower case; `None` without one.
pub fn sender_address(raw: &[u8]) -> Option<String> {
    let raw = message::to_crlf(raw);
    let headers = Headers::parse(&raw);
    sender_keys(&headers, None).1
}

/// The correspondent memory's key for a From field's value as written or decoded
/// (`"Ann" <ann@partner.example>`): its first mailbox's [`address_key`].
pub fn from_value_key(value: &str) -> Option<String> {
    let mut field = b"From: ".to_vec();
    field.extend_from_slice(value.replace(['\r', '\n'], " ").as_bytes());
    field.extend_from_slice(b"\r\n\r\n");
    sender_address(&field)
}

/// An address as the correspondent memory keys it: lower case, without angle brackets, spaces
/// or a trailing dot; `None` unless it has a local part and a domain. The store keys its rows
/// with this too.
pub fn address_key(address: &str) -> Option<String> {
    let address = address
        .trim()
        .trim_matches(['<', '>'])
        .trim()
        .trim_end_matches('.')
        .to_lowercase();
    let (local, domain) = address.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some(address)
}

/// The correspondent answer for one message, as [`Envelope::known_sender`] wants it: whether
/// mail from its From address was ever delivered to this site; `None` without a From address
/// or without an answer within `budget`.
pub async fn known_sender(
    history: &dyn ContactHistory,
    raw: &[u8],
    budget: Duration,
) -> Option<bool> {
    known_sender_of(history, &sender_address(raw)?, budget).await
}

async fn known_sender_of(
    history: &dyn ContactHistory,
    address: &str,
    budget: Duration,
) -> Option<bool> {
    tokio::time::timeout(budget, history.has_seen(address, ANY_RECIPIENT))
        .await
        .ok()
        .flatten()
}

/// How long the engine waits for the allow list before it decides without it: past it the
/// sender counts as unknown to the list and the verdict stands (fail closed).
pub const ALLOW_LIST_BUDGET: Duration = Duration::from_millis(500);

/// The reason code of a message whose quarantine or tag an allowed sender lifted (defined
/// with the verdict, which makes the lift; the layers import only downward).
pub use crate::verdict::ALLOWED_SENDER;

/// The senders people allowed (the console's "release and allow the sender"; the store keeps
/// them). `None` from [`SenderAllowList::allowed`] means "could not tell" (the store failed):
/// the verdict then stands, never a guess.
pub trait SenderAllowList: Send + Sync {
    /// Is mail from `from` (a From address as [`address_key`] writes it) allowed for every one
    /// of `rcpts`?
    fn allowed<'a>(
        &'a self,
        from: &'a str,
        rcpts: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Option<bool>> + Send + 'a>>;
}

pub(crate) async fn allowed_sender_of(
    allow: &dyn SenderAllowList,
    address: &str,
    rcpts: &[String],
    budget: Duration,
) -> Option<bool> {
    tokio::time::timeout(budget, allow.allowed(address, rcpts))
        .await
        .ok()
        .flatten()
}

/// The answers a front door's store gives the engine before the verdict
/// ([`ask_history`]): the contact history, the record of mail we sent and the allow list.
#[derive(Clone, Copy, Default)]
pub struct History<'a> {
    pub contacts: Option<&'a dyn ContactHistory>,
    pub outbound: Option<&'a dyn crate::bounce::OutboundHistory>,
    pub allow: Option<&'a dyn SenderAllowList>,
}

/// Every answer a front door gets from its store before the verdict, put into `envelope`:
/// [`first_contact`], [`known_sender`], for a bounce or auto-reply
/// [`sent_by_us`](crate::bounce::sent_by_us), and whether the From address is on the allow
/// list for every recipient ([`Envelope::allowed_sender`](crate::Envelope::allowed_sender)).
/// The header section is read once and the questions are asked at the same time, so a slow
/// store costs one budget, not four.
pub async fn ask_history(history: History<'_>, raw: &[u8], envelope: &mut Envelope) {
    let History {
        contacts,
        outbound,
        allow,
    } = history;
    if contacts.is_none() && outbound.is_none() && allow.is_none() {
        return;
    }
    let raw = message::to_crlf(raw);
    let headers = Headers::parse(&raw);
    let (domain, address) = sender_keys(&headers, envelope.mail_from.as_deref());
    let notification = outbound.and_then(|_| crate::bounce::read_parsed(&raw, &headers));
    let first = async {
        match (contacts, &domain) {
            (Some(h), Some(d)) => {
                first_contact_of(h, d, &envelope.rcpt, FIRST_CONTACT_BUDGET).await
            }
            _ => None,
        }
    };
    let known = async {
        match (contacts, &address) {
            (Some(h), Some(a)) => known_sender_of(h, a, FIRST_CONTACT_BUDGET).await,
            _ => None,
        }
    };
    let sent = async {
        match (outbound, &notification) {
            (Some(h), Some(n)) => {
                crate::bounce::sent_by_us_of(h, n, crate::bounce::SENT_BY_US_BUDGET).await
            }
            _ => None,
        }
    };
    let allowed = async {
        match (allow, &address) {
            (Some(l), Some(a)) if !envelope.rcpt.is_empty() => {
                allowed_sender_of(l, a, &envelope.rcpt, ALLOW_LIST_BUDGET).await
            }
            _ => None,
        }
    };
    let (first, known, sent, allowed) = tokio::join!(first, known, sent, allowed);
    envelope.first_contact = first;
    envelope.known_sender = known;
    envelope.sent_by_us = sent;
    envelope.allowed_sender = allowed;
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    struct Seen(HashSet<(String, String)>, bool);

    impl ContactHistory for Seen {
        fn has_seen<'a>(
            &'a self,
            d: &'a str,
            r: &'a str,
        ) -> Pin<Box<dyn Future<Output = Option<bool>> + Send + 'a>> {
            let known = self.0.contains(&(d.to_string(), r.to_string()));
            let answers = self.1;
            Box::pin(async move {
                if answers {
                    Some(known)
                } else {
                    std::future::pending().await
                }
            })
        }
    }

    fn envelope(rcpt: &[&str]) -> Envelope {
        Envelope {
            mail_from: Some("bounce@esp.example".into()),
            rcpt: rcpt.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }

    const MSG: &[u8] = b"From: \"Ann\" <ann@Partner.Example.>\nSubject: x\n\nbody\n";

    #[test]
    fn keyed_on_the_from_domain_else_mail_from() {
        assert_eq!(
            sender_domain(MSG, Some("b@esp.example")).as_deref(),
            Some("partner.example")
        );
        assert_eq!(
            sender_domain(b"Subject: no from\r\n\r\n", Some("b@ESP.example")).as_deref(),
            Some("esp.example")
        );
        assert_eq!(sender_domain(b"Subject: x\r\n\r\n", Some("")), None);
    }

    #[tokio::test]
    async fn new_if_any_recipient_has_not_heard_from_the_domain() {
        let seen = Seen(
            [("partner.example".to_string(), "bob@us.example".to_string())].into(),
            true,
        );
        let t = Duration::from_secs(1);
        let one = envelope(&["bob@us.example"]);
        assert_eq!(first_contact(&seen, MSG, &one, t).await, Some(false));
        let two = envelope(&["bob@us.example", "carol@us.example"]);
        assert_eq!(first_contact(&seen, MSG, &two, t).await, Some(true));
        assert_eq!(first_contact(&seen, MSG, &envelope(&[]), t).await, None);
    }

    #[tokio::test]
    async fn known_sender_asks_for_the_from_address_site_wide() {
        let seen = Seen(
            [("ann@partner.example".to_string(), ANY_RECIPIENT.to_string())].into(),
            true,
        );
        let t = Duration::from_secs(1);
        assert_eq!(known_sender(&seen, MSG, t).await, Some(true));
        let other = b"From: Ann <ann2@partner.example>\r\n\r\nx";
        assert_eq!(known_sender(&seen, other, t).await, Some(false));
        assert_eq!(known_sender(&seen, b"Subject: x\r\n\r\n", t).await, None);
        let silent = Seen(HashSet::new(), false);
        assert_eq!(
            known_sender(&silent, MSG, Duration::from_millis(50)).await,
            None
        );
    }

    #[tokio::test]
    async fn a_history_that_does_not_answer_is_unknown_not_new() {
        let silent = Seen(HashSet::new(), false);
        let env = envelope(&["bob@us.example"]);
        let answer = first_contact(&silent, MSG, &env, Duration::from_millis(50)).await;
        assert_eq!(answer, None);
    }

    #[tokio::test]
    async fn ask_history_answers_both_questions_from_one_reading() {
        let seen = Seen(
            [
                ("partner.example".to_string(), "bob@us.example".to_string()),
                ("ann@partner.example".to_string(), ANY_RECIPIENT.to_string()),
            ]
            .into(),
            true,
        );
        let mut env = envelope(&["bob@us.example", "carol@us.example"]);
        ask_history(
            History {
                contacts: Some(&seen),
                ..History::default()
            },
            MSG,
            &mut env,
        )
        .await;
        assert_eq!(env.first_contact, Some(true), "carol never heard from it");
        assert_eq!(env.known_sender, Some(true));
        assert_eq!(
            env.sent_by_us, None,
            "no outbound history, and not a bounce"
        );
        // The same answers as the one-question functions give.
        assert_eq!(
            env.first_contact,
            first_contact(&seen, MSG, &env, Duration::from_secs(1)).await
        );
        let mut none = envelope(&["bob@us.example"]);
        ask_history(History::default(), MSG, &mut none).await;
        assert_eq!((none.first_contact, none.known_sender), (None, None));
    }
}
