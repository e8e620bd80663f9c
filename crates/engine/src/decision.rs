//! The whole decision as data: what every front door does with one message, so that none of
//! them decides anything of its own (issue 14).
//!
//! [`Decision`] is part of every [`Analysis`](crate::Analysis): the disposition (accept, tag,
//! quarantine, reject or **defer**), the SMTP reply (code, enhanced code, text) and the header
//! edits as a list, plus the new body when a banner was added. The gateway applies the edits to
//! its bytes ([`apply`]); the milter turns each edit into one milter action; `unspoof analyze
//! --json` prints them. The doors only translate.
//!
//! **Edits, in order.** Applied one after the other, each to the result of the ones before:
//! 1. [`HeaderEdit::Remove`] for every field only we may write (RFC 8601 5: an
//!    `Authentication-Results` that claims our authserv-id, read by
//!    [`crate::message::auth_results`], the one reader of every door; any `X-Unspoof-Verdict`),
//!    last first per name, so each index still counts the fields of the message as received;
//! 2. for a tag, [`HeaderEdit::Change`] of each Subject (and of the MIME fields a banner needs
//!    changed), [`HeaderEdit::Append`] of MIME fields a banner needs added;
//! 3. [`HeaderEdit::Insert`] at the top: a Subject when the message has none (tag), then our
//!    `X-Unspoof-Verdict` (every disposition but accept), then our `Authentication-Results`,
//!    which ends up first.
//!
//! A reject or a defer delivers nothing, so it has no edits.
//!
//! **DNS temperror.** When DNS did not answer for the checks DMARC rests on and the findings
//! would deliver the message (accept or tag), the policy's `dns_temperror` says what happens,
//! once for every door: `defer` (the default: 451 4.4.3, the sender's server retries, and a
//! forgery cannot slip through while DNS is down) or `decide` (deliver on what did answer).
//!
//! **Fail closed.** A panic inside the engine is caught by [`crate::Engine::evaluate`] and
//! becomes a defer with the reason `engine.panic`, in every door: never an accept.

use serde::{Deserialize, Serialize};

use crate::{
    Analysis, Word,
    message::{Headers, auth_results},
    policy::Policy,
    verdict::Action,
};

/// What a front door does with the message: the verdict's action, or `defer` (a temporary
/// failure: the sending server keeps the message and retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    Accept,
    Tag,
    Quarantine,
    Reject,
    Defer,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Accept => "accept",
            Disposition::Tag => "tag",
            Disposition::Quarantine => "quarantine",
            Disposition::Reject => "reject",
            Disposition::Defer => "defer",
        }
    }

    /// Whether the message goes on to a mailbox or the quarantine (the edits apply).
    pub fn delivers(self) -> bool {
        matches!(
            self,
            Disposition::Accept | Disposition::Tag | Disposition::Quarantine
        )
    }
}

impl From<Action> for Disposition {
    fn from(a: Action) -> Self {
        match a {
            Action::Accept => Disposition::Accept,
            Action::Tag => Disposition::Tag,
            Action::Quarantine => Disposition::Quarantine,
            Action::Reject => Disposition::Reject,
        }
    }
}

impl std::fmt::Display for Disposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// The policy key `dns_temperror` is the policy's type (the policy sits below the decision).
pub use crate::policy::DnsTempError;

/// How every front door ends a message, for metrics and records: a [`Disposition`] of the
/// engine, or what a door did without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accept,
    Tag,
    Quarantine,
    Reject,
    /// The engine deferred (DNS temperror with `dns_temperror = "defer"`, a panic).
    Defer,
    /// The gateway refused the transaction at MAIL or RCPT, or the message for an SMTP rule.
    Refused,
    /// The door could not get or carry out a decision (timeout, store down): 4xx.
    Tempfail,
    /// The milter passed the message unjudged (`on_error = "accept"`).
    Unchecked,
    /// The milter passed an authenticated submission unjudged (`skip_authenticated`).
    Skipped,
}

impl Outcome {
    /// Every outcome, in the order metrics list them.
    pub const ALL: [Outcome; 9] = [
        Outcome::Accept,
        Outcome::Tag,
        Outcome::Quarantine,
        Outcome::Reject,
        Outcome::Defer,
        Outcome::Refused,
        Outcome::Tempfail,
        Outcome::Unchecked,
        Outcome::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accept => "accept",
            Outcome::Tag => "tag",
            Outcome::Quarantine => "quarantine",
            Outcome::Reject => "reject",
            Outcome::Defer => "defer",
            Outcome::Refused => "refused",
            Outcome::Tempfail => "tempfail",
            Outcome::Unchecked => "unchecked",
            Outcome::Skipped => "skipped",
        }
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<Disposition> for Outcome {
    fn from(d: Disposition) -> Self {
        match d {
            Disposition::Accept => Outcome::Accept,
            Disposition::Tag => Outcome::Tag,
            Disposition::Quarantine => Outcome::Quarantine,
            Disposition::Reject => Outcome::Reject,
            Disposition::Defer => Outcome::Defer,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An SMTP reply (RFC 5321 4.2, enhanced code RFC 3463), the same from every door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmtpReply {
    pub code: u16,
    pub enhanced: String,
    /// What the sender can do about it; never the reason codes (they would show a forger
    /// which check to work around; they are in the record the queue id finds).
    pub text: String,
}

impl SmtpReply {
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        SmtpReply {
            code,
            enhanced: enhanced.into(),
            text: text.into(),
        }
    }

    /// The reply line without CRLF, with the door's queue id (only its letters and digits,
    /// at most 64; nothing when it has none): `250 2.0.0 Ok: queued as X`,
    /// `550 5.7.1 Message refused: ... (queue id X)`.
    pub fn line(&self, queue_id: Option<&str>) -> String {
        let id: String = queue_id
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(64)
            .collect();
        let head = format!("{} {} {}", self.code, self.enhanced, self.text);
        match (id.is_empty(), self.code < 400) {
            (true, _) => head,
            (false, true) => format!("{head}: queued as {id}"),
            (false, false) => format!("{head} (queue id {id})"),
        }
    }

    /// The reply of a door that could not get or carry out a decision (RFC 3463 4.3.0).
    pub fn local_error() -> Self {
        SmtpReply::new(451, "4.3.0", "Local error, try again later")
    }
}

/// One header edit; a value is what follows the colon (leading space kept, folds as CRLF).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum HeaderEdit {
    /// Remove the `index`-th (from 1) field called `name` (case-insensitive).
    Remove { name: String, index: u32 },
    /// Replace the value of the `index`-th (from 1) field called `name`.
    Change {
        name: String,
        index: u32,
        value: String,
    },
    /// Insert a field at the top of the header section.
    Insert { name: String, value: String },
    /// Add a field at the end of the header section.
    Append { name: String, value: String },
}

/// Everything a front door does with one message. See the module documentation.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub disposition: Disposition,
    pub reply: SmtpReply,
    pub edits: Vec<HeaderEdit>,
    /// The new body (after the blank line, CRLF) when a banner was added; `None` keeps the
    /// body as received. Not in the JSON (see `body_replaced`); a door takes it
    /// (`Option::take`) instead of copying it.
    #[serde(skip)]
    pub body: Option<Vec<u8>>,
    /// Whether the body is replaced (a banner was added).
    pub body_replaced: bool,
}

impl Decision {
    /// The defer of a message the engine could not judge: `engine.panic`.
    pub(crate) fn failed() -> Self {
        Decision {
            disposition: Disposition::Defer,
            reply: SmtpReply::local_error(),
            edits: Vec::new(),
            body: None,
            body_replaced: false,
        }
    }
}

/// Did DNS fail for the checks DMARC rests on, on a message the findings would deliver?
/// DMARC itself temperror, or no DMARC pass with SPF or a DKIM signature temperror (either
/// could have been the aligned pass).
pub fn dns_outage(a: &Analysis) -> bool {
    let auth = &a.auth;
    auth.checked
        && matches!(a.verdict.action, Action::Accept | Action::Tag)
        && (auth.dmarc.result == Word::TempError
            || (auth.dmarc.result != Word::Pass
                && (auth.spf.result == Word::TempError
                    || auth.dkim.iter().any(|d| d.result == Word::TempError))))
}

/// The decision for an analysed message (what [`crate::Engine::evaluate`] puts into
/// [`Analysis::decision`]). `raw` is the message with CRLF line ends.
pub fn decide(raw: &[u8], analysis: &Analysis, policy: &Policy) -> Decision {
    decide_parsed(raw, &Headers::parse(raw), analysis, policy)
}

/// [`decide`] with the header section the analysis read (parsed once per message).
pub(crate) fn decide_parsed(
    raw: &[u8],
    headers: &Headers<'_>,
    analysis: &Analysis,
    policy: &Policy,
) -> Decision {
    let mut disposition = Disposition::from(analysis.verdict.action);
    if policy.dns_temperror == DnsTempError::Defer && dns_outage(analysis) {
        disposition = Disposition::Defer;
    }
    let reply = reply_for(disposition, analysis);
    if !disposition.delivers() {
        return Decision {
            disposition,
            reply,
            edits: Vec::new(),
            body: None,
            body_replaced: false,
        };
    }
    let mut edits = forged_removals(headers, &policy.hostname);
    let mut body = None;
    let mut subject_added = None;
    if disposition == Disposition::Tag {
        let tag = crate::tag::field_changes(raw, headers, analysis, &policy.tag);
        edits.extend(tag.edits.into_iter().map(|c| match c {
            crate::tag::FieldChange::Change { name, index, value } => {
                HeaderEdit::Change { name, index, value }
            }
            crate::tag::FieldChange::Append { name, value } => HeaderEdit::Append { name, value },
        }));
        subject_added = tag.subject_added;
        body = tag.body;
    }
    if let Some(value) = subject_added {
        edits.push(HeaderEdit::Insert {
            name: "Subject".into(),
            value,
        });
    }
    if disposition != Disposition::Accept {
        edits.push(insert(&crate::tag::verdict_header(analysis)));
    }
    edits.push(insert(&analysis.authentication_results(&policy.hostname)));
    Decision {
        disposition,
        reply,
        edits,
        body_replaced: body.is_some(),
        body,
    }
}

/// The one text builder of the replies of every door.
fn reply_for(disposition: Disposition, analysis: &Analysis) -> SmtpReply {
    match disposition {
        Disposition::Accept | Disposition::Tag | Disposition::Quarantine => {
            SmtpReply::new(250, "2.0.0", "Ok")
        }
        Disposition::Reject => refusal(analysis),
        // RFC 3463 4.4.3: directory server failure (DNS).
        Disposition::Defer => SmtpReply::new(
            451,
            "4.4.3",
            "Message deferred: the sender's domain could not be checked because its DNS did not answer; try again later",
        ),
    }
}

/// The refusal of a message (RFC 3463 5.7.1: delivery not authorized): what the sender can
/// fix ([`crate::verdict::sender_advice`] of the code that decided). Also what a milter
/// answers for a quarantine its MTA cannot hold: never a silent delivery.
pub fn refusal(analysis: &Analysis) -> SmtpReply {
    let v = &analysis.verdict;
    let deciding = v.reasons.iter().find(|r| r.action == v.action);
    let advice = crate::verdict::sender_advice(deciding.map_or("", |r| r.code.as_str()));
    SmtpReply::new(550, "5.7.1", format!("Message refused: {advice}"))
}

/// Removals of every field only we may write ([`auth_results::is_forged`]), last first per
/// name: the first edits of every delivered message, and what the milter removes from a
/// message it passes unjudged (an authenticated submission, `on_error = "accept"`).
pub fn forged_removals(headers: &Headers<'_>, authserv_id: &str) -> Vec<HeaderEdit> {
    let mut out = Vec::new();
    for name in [
        auth_results::AUTHENTICATION_RESULTS,
        crate::tag::VERDICT_HEADER,
    ] {
        let same: Vec<_> = headers.fields.iter().filter(|f| f.is(name)).collect();
        for (i, f) in same.iter().enumerate().rev() {
            if auth_results::is_forged(f, authserv_id) {
                out.push(HeaderEdit::Remove {
                    name: String::from_utf8_lossy(f.name_trimmed()).into_owned(),
                    index: i as u32 + 1,
                });
            }
        }
    }
    out
}

/// An insertion at the top of a whole field (`Name: value\r\n`).
fn insert(field: &str) -> HeaderEdit {
    let field = field.strip_suffix("\r\n").unwrap_or(field);
    let (name, value) = field.split_once(':').unwrap_or((field, ""));
    HeaderEdit::Insert {
        name: name.to_string(),
        value: value.to_string(),
    }
}

/// The message as delivered: `raw` (CRLF or LF) with `edits` applied in order and the body
/// replaced by `body` when there is one. What the gateway relays; what the milter's actions
/// make of the MTA's copy.
pub fn apply(raw: &[u8], edits: &[HeaderEdit], body: Option<&[u8]>) -> Vec<u8> {
    let headers = Headers::parse(raw);
    // An mbox separator line stays first; the blank line and the body stay after.
    let start = if crate::message::is_mbox(raw) {
        memchr::memchr(b'\n', raw).map_or(raw.len(), |i| i + 1)
    } else {
        0
    };
    let body_at = headers.body_offset.min(raw.len());
    let end =
        if raw[..body_at].ends_with(b"\r\n\r\n") || body_at == 2 && raw.starts_with(b"\r\n") {
            body_at - 2
        } else if raw[..body_at].ends_with(b"\n\n") || body_at == 1 && raw.starts_with(b"\n") {
            body_at - 1
        } else {
            body_at
        }
        .max(start);
    // The section as segments: each field (lower-case name, bytes with line end) and, kept
    // byte for byte, any stray line between them (a malformed section).
    let mut segments: Vec<(Option<String>, Vec<u8>)> = Vec::new();
    let mut pos = start;
    for f in &headers.fields {
        if f.offset > pos {
            segments.push((None, raw[pos..f.offset].to_vec()));
        }
        let field_end = f.end(raw);
        let name = String::from_utf8_lossy(f.name_trimmed()).to_ascii_lowercase();
        segments.push((Some(name), raw[f.offset..field_end].to_vec()));
        pos = field_end;
    }
    if pos < end {
        segments.push((None, raw[pos..end].to_vec()));
    }
    let nth = |segments: &[(Option<String>, Vec<u8>)], name: &str, index: u32| {
        let name = name.to_ascii_lowercase();
        segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.0.as_deref() == Some(name.as_str()))
            .nth(index.saturating_sub(1) as usize)
            .map(|(i, _)| i)
    };
    let whole = |name: &str, value: &str| {
        let mut v = format!("{name}:{value}").into_bytes();
        v.extend_from_slice(b"\r\n");
        (Some(name.to_ascii_lowercase()), v)
    };
    for e in edits {
        match e {
            HeaderEdit::Remove { name, index } => {
                if let Some(i) = nth(&segments, name, *index) {
                    segments.remove(i);
                }
            }
            HeaderEdit::Change { name, index, value } => {
                if let Some(i) = nth(&segments, name, *index) {
                    segments[i] = whole(name, value);
                }
            }
            HeaderEdit::Insert { name, value } => segments.insert(0, whole(name, value)),
            HeaderEdit::Append { name, value } => {
                let at = segments
                    .iter()
                    .rposition(|s| s.0.is_some())
                    .map_or(segments.len(), |i| i + 1);
                segments.insert(at, whole(name, value));
            }
        }
    }
    let mut out = Vec::with_capacity(raw.len() + 1024);
    out.extend_from_slice(&raw[..start]);
    for (_, s) in &segments {
        out.extend_from_slice(s);
    }
    match body {
        Some(b) => {
            let blank = &raw[end..body_at];
            out.extend_from_slice(if blank.is_empty() { b"\r\n" } else { blank });
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&raw[end..]),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        let r = SmtpReply::new(550, "5.7.1", "Message refused: x");
        assert_eq!(
            r.line(Some("Q1-\r\n")),
            "550 5.7.1 Message refused: x (queue id Q1)"
        );
        assert_eq!(r.line(None), "550 5.7.1 Message refused: x");
        let ok = SmtpReply::new(250, "2.0.0", "Ok");
        assert_eq!(ok.line(Some("A1")), "250 2.0.0 Ok: queued as A1");
    }

    #[test]
    fn removals_last_first_with_the_one_reader() {
        let raw = b"Authentication-Results: mx; spf=pass\r\nReceived: x\r\nauthentication-results: other; spf=pass\r\nAuthentication-Results: (c) MX.; dkim=pass\r\nX-Unspoof-Verdict: accept\r\n\r\n";
        let r = forged_removals(&Headers::parse(raw), "mx");
        let got: Vec<(&str, u32)> = r
            .iter()
            .map(|e| match e {
                HeaderEdit::Remove { name, index } => (name.as_str(), *index),
                _ => ("", 0),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("Authentication-Results", 3),
                ("Authentication-Results", 1),
                ("X-Unspoof-Verdict", 1)
            ]
        );
    }

    #[test]
    fn edits_apply_in_order() {
        let raw = b"Authentication-Results: mx; spf=pass\r\nSubject: hi\r\nauthentication-results: other; spf=pass\r\nAuthentication-Results: mx; dkim=pass\r\n\r\nbody\r\n";
        let edits = vec![
            HeaderEdit::Remove {
                name: "Authentication-Results".into(),
                index: 3,
            },
            HeaderEdit::Remove {
                name: "Authentication-Results".into(),
                index: 1,
            },
            HeaderEdit::Change {
                name: "Subject".into(),
                index: 1,
                value: " [X] hi".into(),
            },
            HeaderEdit::Append {
                name: "MIME-Version".into(),
                value: " 1.0".into(),
            },
            HeaderEdit::Insert {
                name: "Authentication-Results".into(),
                value: " mx; dmarc=pass".into(),
            },
        ];
        let out = apply(raw, &edits, None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Authentication-Results: mx; dmarc=pass\r\nSubject: [X] hi\r\nauthentication-results: other; spf=pass\r\nMIME-Version: 1.0\r\n\r\nbody\r\n"
        );
        let out = apply(raw, &[], Some(b"new\r\n"));
        assert!(out.ends_with(b"dkim=pass\r\n\r\nnew\r\n"));
    }
}
