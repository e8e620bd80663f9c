//! Bounces and auto-replies read as evidence (issue 19, item 3): what a delivery status
//! notification (RFC 3464), an auto-reply (RFC 3834) or a challenge says about the message it
//! answers.
//!
//! A forger who sends mail in our name makes the receivers of that mail bounce it, answer it
//! or challenge it back to our users: backscatter. The message returned inside (or named by
//! `In-Reply-To`) shows whether we sent it: our outbound mail carries our DKIM signature, passed
//! our own servers (a `Received` hop by our host names, or from our networks), and has its
//! Message-ID in our records. [`read`] takes the notification apart; the finding that judges it
//! is `findings/backscatter.rs`.
//!
//! Our records live in the front door's store, not here: the engine does no I/O beyond DNS.
//! So, as for first contact (`crate::contact`), the front door asks before it calls the engine
//! ([`sent_by_us`]) and passes the answer in [`Envelope::sent_by_us`](crate::Envelope).
//!
//! What is read:
//! - a DSN: a `multipart/report; report-type=delivery-status` message with a
//!   `message/delivery-status` part (RFC 3464, RFC 6522): its `Reporting-MTA`, each recipient's
//!   `Final-Recipient`, `Action` and `Status`, and the returned message (`message/rfc822`,
//!   `message/global`) or its headers (`text/rfc822-headers`, `message/global-headers`);
//! - an auto-reply: `Auto-Submitted: auto-replied` (RFC 3834), `X-Autoreply`, `X-Autorespond`,
//!   `Precedence: auto_reply`; the message it answers is its attached message when it has one
//!   (challenge-response systems attach it), else the Message-IDs in `In-Reply-To` and
//!   `References`.
//!
//! Not read: bounces in free text without a DSN part (qmail's "Hi. This is the qmail-send
//! program"): they carry the original inline, where nothing tells where it starts for sure.

use std::{future::Future, net::IpAddr, pin::Pin, time::Duration};

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;

use crate::{
    Headers, message,
    trace::{self, Trace, TrustConfig},
};

/// How long a front door waits for the store's answer to [`sent_by_us`]: a slow database must
/// not hold mail up; without the answer the returned headers alone decide.
pub const SENT_BY_US_BUDGET: Duration = Duration::from_millis(500);

/// Most Message-IDs of an auto-reply's `In-Reply-To` and `References` asked about.
pub const MAX_REFERENCES_ASKED: usize = 8;

/// Which kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A delivery status notification (RFC 3464).
    Dsn,
    /// An auto-reply or challenge (RFC 3834 `Auto-Submitted: auto-replied` and its older
    /// spellings).
    AutoReply,
}

impl Kind {
    /// Plain words for reports.
    pub fn words(self) -> &'static str {
        match self {
            Kind::Dsn => "a delivery status notification (bounce)",
            Kind::AutoReply => "an auto-reply",
        }
    }
}

/// One recipient's fields of a DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DsnRecipient {
    pub final_recipient: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
    pub remote_mta: Option<String>,
}

/// The message a notification returns, as far as it came back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Returned {
    /// Only its header section came back.
    pub headers_only: bool,
    /// Without angle brackets.
    pub message_id: Option<String>,
    /// The From address as the findings read it.
    pub from: Option<String>,
    pub from_domain: Option<String>,
    /// The domain of `Return-Path` (the MAIL FROM the bouncer saw).
    pub return_path_domain: Option<String>,
    /// The `d=` of each DKIM-Signature field, lower case.
    pub dkim_domains: Vec<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
    /// Its Received hops, read as if the notifier were us: the topmost hop was written by the
    /// receiver that bounced or answered it.
    #[serde(skip)]
    pub trace: Trace,
}

/// Where the returned message came from, as the receiver that bounced it recorded it: the
/// newest hop whose client has a public address (a receiver's own content filter on loopback
/// is passed over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReturnedOrigin {
    pub ip: IpAddr,
    pub helo: Option<String>,
    pub rdns: Option<String>,
    /// The receiver that wrote the hop.
    pub by: Option<String>,
    pub date: Option<String>,
    /// The whole Received value.
    pub received: String,
}

/// A notification taken apart.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub kind: Kind,
    pub reporting_mta: Option<String>,
    pub recipients: Vec<DsnRecipient>,
    /// Message-IDs the notification answers (`In-Reply-To`, `References`), without brackets.
    pub refers_to: Vec<String>,
    pub returned: Option<Returned>,
}

impl Notification {
    /// The Message-IDs our records are asked about: the returned message's, else the ones an
    /// auto-reply answers.
    pub fn asked_ids(&self) -> Vec<String> {
        match self.returned.as_ref().and_then(|r| r.message_id.clone()) {
            Some(id) => vec![id],
            None => self
                .refers_to
                .iter()
                .take(MAX_REFERENCES_ASKED)
                .cloned()
                .collect(),
        }
    }

    /// The forger's side: where the returned message came from.
    pub fn returned_origin(&self) -> Option<ReturnedOrigin> {
        let r = self.returned.as_ref()?;
        r.trace.hops.iter().find_map(|h| {
            let ip = h.from_ip?;
            // The receiver's own inner hops (content filters on loopback, private relays) are
            // passed over; documentation space counts as public (examples and tests use it).
            if matches!(trace::non_public_kind(ip), Some(kind) if kind != "documentation") {
                return None;
            }
            Some(ReturnedOrigin {
                ip,
                helo: h.from_helo.clone(),
                rdns: h.from_rdns.clone(),
                by: h.by.clone(),
                date: h.date.clone(),
                received: h.raw.clone(),
            })
        })
    }
}

/// Reads `raw` as a bounce or auto-reply; `None` when it is neither.
pub fn read(raw: &[u8]) -> Option<Notification> {
    let raw = message::to_crlf(raw);
    let headers = Headers::parse(&raw);
    read_parsed(&raw, &headers)
}

/// [`read`] of a message already in CRLF whose header section the caller has parsed.
pub fn read_parsed(raw: &[u8], headers: &Headers<'_>) -> Option<Notification> {
    let auto_reply = is_auto_reply(headers);
    let report_type = headers
        .first("Content-Type")
        .map(|h| h.value_unfolded().to_ascii_lowercase())
        .is_some_and(|ct| {
            ct.starts_with("multipart/report")
                && ct
                    .replace([' ', '"'], "")
                    .contains("report-type=delivery-status")
        });
    // Only what is a notification is parsed into parts (RFC 6522: a report is a top-level
    // multipart/report).
    if !auto_reply && !report_type {
        return None;
    }
    let parsed = trace::guard(|| MessageParser::default().parse(&raw[..]))??;
    let mut status_part = None;
    let mut returned = None;
    for part in parsed.parts.iter().skip(1) {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let ctype = ct.ctype().to_ascii_lowercase();
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        match (ctype.as_str(), sub.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") if status_part.is_none() => {
                status_part = Some(part.contents().to_vec());
            }
            ("message", "rfc822" | "global") if returned.is_none() => {
                if let PartType::Message(m) = &part.body {
                    returned = Some(returned_message(m.raw_message(), false));
                }
            }
            ("text" | "message", "rfc822-headers" | "global-headers") if returned.is_none() => {
                returned = Some(returned_message(part.contents(), true));
            }
            _ => {}
        }
    }
    let kind = if status_part.is_some() {
        Kind::Dsn
    } else if auto_reply {
        Kind::AutoReply
    } else {
        return None;
    };
    let (reporting_mta, recipients) = status_part
        .as_deref()
        .map(delivery_status)
        .unwrap_or_default();
    let mut refers_to = Vec::new();
    for name in ["In-Reply-To", "References"] {
        if let Some(h) = headers.first(name) {
            for id in message_ids(&h.value_unfolded()) {
                if !refers_to.contains(&id) {
                    refers_to.push(id);
                }
            }
        }
    }
    Some(Notification {
        kind,
        reporting_mta,
        recipients,
        refers_to,
        returned,
    })
}

/// RFC 3834 and the older spellings still written by vacation programs and Exchange.
fn is_auto_reply(headers: &Headers<'_>) -> bool {
    let value = |name: &str| {
        headers
            .first(name)
            .map(|h| h.value_unfolded().to_ascii_lowercase())
    };
    value("Auto-Submitted").is_some_and(|v| v.starts_with("auto-replied"))
        || headers.first("X-Autoreply").is_some()
        || headers.first("X-Autorespond").is_some()
        || value("Precedence").is_some_and(|v| v == "auto_reply")
}

/// The returned message's facts.
pub(crate) fn returned_message(raw: &[u8], headers_only: bool) -> Returned {
    let raw = message::to_crlf(raw);
    let headers = Headers::parse(&raw);
    let (from, _) = message::mailbox::read_addresses(&headers);
    let from = from.into_iter().find(|m| !m.address.is_empty());
    let domain_of = |a: &str| {
        a.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
    };
    let dkim_domains = headers
        .all("DKIM-Signature")
        .filter_map(|h| tag_value(&h.value_unfolded(), "d"))
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    Returned {
        headers_only,
        message_id: headers
            .first("Message-ID")
            .and_then(|h| message_ids(&h.value_unfolded()).into_iter().next()),
        from_domain: from
            .as_ref()
            .map(|m| m.domain.clone())
            .filter(|d| !d.is_empty()),
        from: from.map(|m| m.address),
        return_path_domain: headers
            .first("Return-Path")
            .and_then(|h| domain_of(&h.value_unfolded())),
        dkim_domains,
        subject: headers.first("Subject").map(|h| h.value_unfolded()),
        date: headers.first("Date").map(|h| h.value_unfolded()),
        trace: trace::build_trace(&headers, None, &TrustConfig::default(), None),
    }
}

/// The value of tag `name` in a DKIM tag list (`d=example.com; s=sel`).
fn tag_value(list: &str, name: &str) -> Option<String> {
    list.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.split_whitespace().collect::<String>())
    })
}

/// The `<...>` message ids of a header value, without brackets; a bare id when none is
/// bracketed.
pub(crate) fn message_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(s) = rest.find('<') {
        let Some(e) = rest[s..].find('>') else { break };
        let id = rest[s + 1..s + e].trim();
        if !id.is_empty() && id.contains('@') {
            out.push(id.to_string());
        }
        rest = &rest[s + e + 1..];
    }
    if out.is_empty() {
        let bare = value.trim();
        if bare.contains('@') && !bare.contains(char::is_whitespace) {
            out.push(bare.to_string());
        }
    }
    out
}

/// The per-message and per-recipient fields of a `message/delivery-status` body (RFC 3464 2.2,
/// 2.3): groups of header-like lines separated by blank lines; the first group is the
/// message's.
fn delivery_status(body: &[u8]) -> (Option<String>, Vec<DsnRecipient>) {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut groups = text.split("\n\n").filter(|g| !g.trim().is_empty());
    let field = |group: &str, name: &str| -> Option<String> {
        let mut value: Option<String> = None;
        for line in group.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    };
    // "rfc822; someone@example.org" -> the address.
    let typed = |v: Option<String>| {
        v.map(|v| match v.split_once(';') {
            Some((_, a)) => a.trim().to_string(),
            None => v,
        })
    };
    let reporting_mta = groups.next().and_then(|g| typed(field(g, "Reporting-MTA")));
    let recipients = groups
        .map(|g| DsnRecipient {
            final_recipient: typed(field(g, "Final-Recipient")),
            action: field(g, "Action").map(|a| a.to_ascii_lowercase()),
            status: field(g, "Status"),
            remote_mta: typed(field(g, "Remote-MTA")),
        })
        .filter(|r| r.final_recipient.is_some() || r.action.is_some())
        .collect();
    (reporting_mta, recipients)
}

/// Where outbound mail is remembered (the store). `None` means "could not tell".
pub trait OutboundHistory: Send + Sync {
    /// Did we send (accept from one of our users for delivery out) a message with this
    /// Message-ID (without angle brackets)?
    fn sent<'a>(
        &'a self,
        message_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<bool>> + Send + 'a>>;
}

/// The answer for [`Envelope::sent_by_us`](crate::Envelope): `None` when `raw` is not a
/// notification, names no Message-ID, or the history did not answer within `budget`;
/// `Some(true)` when one of the Message-IDs it answers is ours, `Some(false)` when none is.
pub async fn sent_by_us(
    history: &dyn OutboundHistory,
    raw: &[u8],
    budget: Duration,
) -> Option<bool> {
    sent_by_us_of(history, &read(raw)?, budget).await
}

/// [`sent_by_us`] for a notification already read.
pub(crate) async fn sent_by_us_of(
    history: &dyn OutboundHistory,
    notification: &Notification,
    budget: Duration,
) -> Option<bool> {
    let ids = notification.asked_ids();
    if ids.is_empty() {
        return None;
    }
    let ask = async {
        for id in &ids {
            if history.sent(id).await? {
                return Some(true);
            }
        }
        Some(false)
    };
    tokio::time::timeout(budget, ask).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_status_fields() {
        let body = b"Reporting-MTA: dns; mx.partner.example\r\nX-Postfix-Queue-ID: 4Z\r\n\r\nFinal-Recipient: rfc822; nobody@partner.example\r\nOriginal-Recipient: rfc822;nobody@partner.example\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; inner.partner.example\r\nDiagnostic-Code: smtp; 550 5.1.1 <nobody@partner.example>:\r\n    Recipient address rejected\r\n";
        let (mta, r) = delivery_status(body);
        assert_eq!(mta.as_deref(), Some("mx.partner.example"));
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].final_recipient.as_deref(),
            Some("nobody@partner.example")
        );
        assert_eq!(r[0].action.as_deref(), Some("failed"));
        assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(r[0].remote_mta.as_deref(), Some("inner.partner.example"));
    }

    #[test]
    fn message_ids_and_tags() {
        assert_eq!(
            message_ids("<a@x.example> (comment) <b@y.example>"),
            ["a@x.example", "b@y.example"]
        );
        assert_eq!(message_ids("bare@x.example"), ["bare@x.example"]);
        assert!(message_ids("<>").is_empty());
        assert_eq!(
            tag_value("v=1; a=rsa-sha256; d=Shop.Example; s=s1", "d").as_deref(),
            Some("Shop.Example")
        );
    }

    #[test]
    fn an_ordinary_message_is_no_notification() {
        assert!(read(b"From: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n").is_none());
        assert!(
            read(b"Auto-Submitted: auto-generated\r\nFrom: a@b.example\r\n\r\nx\r\n").is_none()
        );
        let vacation = read(b"Auto-Submitted: auto-replied\r\nIn-Reply-To: <m1@shop.example>\r\nFrom: a@b.example\r\n\r\nOut of office\r\n").unwrap();
        assert_eq!(vacation.kind, Kind::AutoReply);
        assert_eq!(vacation.asked_ids(), ["m1@shop.example"]);
    }
}
