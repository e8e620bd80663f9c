//! The engine's verdict as milter replies at end of message.
//!
//! | verdict | replies |
//! | --- | --- |
//! | accept | Authentication-Results at the top, then ACCEPT |
//! | tag | AR and `X-Unspoof-Verdict`, the engine's rewrite (`unspoof_engine::tag`: subject prefix, banner) as CHGHEADER/INSHEADER and REPLBODY, ACCEPT |
//! | quarantine | AR and `X-Unspoof-Verdict`, QUARANTINE with the reason codes, ACCEPT |
//! | reject | REPLYCODE `550 5.7.1` with what the sender can fix and the MTA's queue id, never the codes (no edits) |
//!
//! On every delivered message, fields that claim to be ours but came from outside are removed
//! first: Authentication-Results with our authserv-id in any form RFC 8601 allows (read by
//! `unspoof_engine::message::auth_results`, the reader every door uses) and any
//! `X-Unspoof-Verdict` (for a tag, the rewrite removes those).
//!
//! Edits the MTA did not allow in OPTNEG are left out; a quarantine the MTA cannot do becomes
//! a reject (never a silent delivery).

use unspoof_engine::{Action, Analysis, Policy, Reason};

use crate::edits::{self, HeaderEdit};
use unspoof_engine::message::{RawHeader, auth_results};

use crate::message::Message;
use crate::wire::{CHUNK_SIZE, Reply, action};

/// Our verdict header.
pub const VERDICT_HEADER: &str = unspoof_engine::tag::VERDICT_HEADER;

/// What the MTA allowed in OPTNEG.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// `SMFIF_*` bits.
    pub actions: u32,
    /// Header values carry their leading space (SMFIP_HDR_LEADSPC).
    pub leadspc: bool,
}

impl Caps {
    fn can(&self, bit: u32) -> bool {
        self.actions & bit != 0
    }

    /// A value (after the colon, CRLF folds) in the form the MTA wants.
    fn value(&self, v: &str) -> String {
        let v = v.trim_end_matches(['\r', '\n']);
        let mut out = String::with_capacity(v.len() + 1);
        let v = match (self.leadspc, v.strip_prefix(' ')) {
            (true, None) => {
                out.push(' ');
                v
            }
            (false, Some(rest)) => rest,
            _ => v,
        };
        // Folds as LF, the way the MTA hands header values over.
        let mut rest = v;
        while let Some(i) = rest.find("\r\n") {
            out.push_str(&rest[..i]);
            out.push('\n');
            rest = &rest[i + 2..];
        }
        out.push_str(rest);
        out
    }
}

/// The reason codes behind the verdict (those asking for its action), safe for a reply line.
pub fn deciding_codes(analysis: &Analysis) -> String {
    let v = &analysis.verdict;
    let codes = unique_codes(v.reasons.iter().filter(|r| r.action == v.action));
    if codes.is_empty() {
        "policy".into()
    } else {
        codes.join(",")
    }
}

/// Reason codes, each once, in order, reduced to `[a-z0-9._-]` (safe in a reply line and a
/// header field).
pub fn unique_codes<'a>(reasons: impl Iterator<Item = &'a Reason>) -> Vec<String> {
    let mut codes: Vec<String> = Vec::new();
    for r in reasons {
        let code: String = r
            .code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .collect();
        if !code.is_empty() && !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

/// Deletes (CHGHEADER with an empty value) every field named `name` for which `pick` holds,
/// last first so the indexes of the earlier ones stay right.
fn delete_where(
    fields: &[RawHeader<'_>],
    name: &str,
    pick: impl Fn(&RawHeader<'_>) -> bool,
    out: &mut Vec<Reply>,
) {
    let same: Vec<&RawHeader<'_>> = fields.iter().filter(|f| f.is(name)).collect();
    for (i, f) in same.iter().enumerate().rev() {
        if pick(f) {
            out.push(Reply::ChangeHeader {
                index: i as u32 + 1,
                name: String::from_utf8_lossy(f.name_trimmed()).into_owned(),
                value: String::new(),
            });
        }
    }
}

/// The reply text of a refused message (RFC 3463 5.7.1: delivery not authorized): what the
/// sender can fix (`unspoof_engine::verdict::sender_advice` of the deciding code) and the MTA's
/// queue id (`-`: unknown, left out). Never the reason codes, which would show a forger which
/// check to get past; they are in the log line and the record of that queue id.
pub fn refusal(analysis: &Analysis, queue_id: &str) -> String {
    let v = &analysis.verdict;
    let deciding = v.reasons.iter().find(|r| r.action == v.action);
    let advice = unspoof_engine::verdict::sender_advice(deciding.map_or("", |r| r.code.as_str()));
    // The queue id is the MTA's macro; only its plain characters go into a reply line.
    let id: String = queue_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    if id.is_empty() {
        format!("550 5.7.1 Message refused: {advice}")
    } else {
        format!("550 5.7.1 Message refused: {advice} (queue id {id})")
    }
}

/// Deletions of the fields only we may write, for the MTA's copy: every Authentication-Results
/// that claims `authserv_id` (the engine's RFC 8601 reader, the gateway's too) and, with
/// `verdicts`, every `X-Unspoof-Verdict`. Empty when the MTA did not allow header changes.
/// For a message no verdict was reached for too (an authenticated submission not judged, an
/// error with `on_error = accept`): forged results never reach a user.
pub fn forged_deletions(
    message: &Message,
    authserv_id: &str,
    verdicts: bool,
    caps: Caps,
) -> Vec<Reply> {
    let mut out = Vec::new();
    if !caps.can(action::CHGHDRS) {
        return out;
    }
    let headers = message.headers();
    delete_where(
        &headers.fields,
        auth_results::AUTHENTICATION_RESULTS,
        |f| auth_results::claims(f.value, authserv_id),
        &mut out,
    );
    if verdicts {
        delete_where(&headers.fields, VERDICT_HEADER, |_| true, &mut out);
    }
    out
}

/// The replies for a decided message, ending in the final one. `queue_id` is the MTA's (`i`
/// macro), for the refusal text.
pub fn replies(
    analysis: &Analysis,
    policy: &Policy,
    message: &Message,
    caps: Caps,
    quarantine_note: Option<&str>,
    queue_id: &str,
) -> Vec<Reply> {
    let action = analysis.verdict.action;
    let codes = deciding_codes(analysis);
    if action == Action::Reject || (action == Action::Quarantine && !caps.can(action::QUARANTINE)) {
        return vec![Reply::ReplyCode(refusal(analysis, queue_id))];
    }

    // Forged results out first; for a tag, the rewrite below removes stale verdict fields.
    let mut out = forged_deletions(message, &policy.hostname, action != Action::Tag, caps);

    let mut body = None;
    if action == Action::Tag {
        // What users see is the engine's (unspoof_engine::tag), the same as through the
        // gateway; here it becomes edits of the MTA's copy.
        let raw = message.bytes();
        let rewritten = unspoof_engine::tag::rewrite(raw, analysis, &policy.tag);
        let (header_edits, new_body) = edits::diff(raw, &rewritten);
        for e in header_edits {
            match e {
                HeaderEdit::Change { index, name, value } if caps.can(action::CHGHDRS) => {
                    let value = if value.is_empty() {
                        value
                    } else {
                        caps.value(&value)
                    };
                    out.push(Reply::ChangeHeader { index, name, value });
                }
                HeaderEdit::Insert { name, value } if caps.can(action::ADDHDRS) => {
                    out.push(Reply::InsertHeader {
                        index: 0,
                        name,
                        value: caps.value(&value),
                    });
                }
                _ => {}
            }
        }
        // A new body may need its new Content-* fields: only both, or neither.
        if caps.can(action::CHGBODY) && caps.can(action::CHGHDRS) {
            body = new_body;
        }
    }

    if caps.can(action::ADDHDRS) {
        if action != Action::Accept {
            let field = unspoof_engine::tag::verdict_header(analysis);
            if let Some((name, value)) = field.split_once(':') {
                out.push(Reply::InsertHeader {
                    index: 0,
                    name: name.to_string(),
                    value: caps.value(value),
                });
            }
        }
        // Inserted last at the top, so it ends up above our verdict field.
        let ar = analysis.authentication_results(&policy.hostname);
        if let Some((name, value)) = ar.split_once(':') {
            out.push(Reply::InsertHeader {
                index: 0,
                name: name.to_string(),
                value: caps.value(value),
            });
        }
    }

    // Body replacement comes after every header edit: Postfix ends a replacement at the first
    // packet of another kind (milter8.c).
    if let Some(body) = body {
        for chunk in body.chunks(CHUNK_SIZE) {
            out.push(Reply::ReplaceBody(chunk.to_vec()));
        }
    }
    if action == Action::Quarantine {
        let mut reason = format!("unspoof: {codes}");
        if let Some(note) = quarantine_note {
            reason.push_str("; ");
            reason.push_str(note);
        }
        out.push(Reply::Quarantine(reason));
    }
    out.push(Reply::Accept);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_leadspc() {
        let on = Caps {
            actions: 0,
            leadspc: true,
        };
        let off = Caps {
            actions: 0,
            leadspc: false,
        };
        assert_eq!(on.value(" a;\r\n\tb\r\n"), " a;\n\tb");
        assert_eq!(on.value("a"), " a");
        assert_eq!(off.value(" a;\r\n\tb\r\n"), "a;\n\tb");
        assert_eq!(off.value("a"), "a");
        assert_eq!(on.value(" a\r\n b\r\n\tc"), " a\n b\n\tc");
        assert_eq!(on.value(""), " ");
        assert_eq!(off.value(" "), "");
    }

    #[test]
    fn deletes_last_first() {
        let raw = b"Authentication-Results: mx; spf=pass\r\nReceived: x\r\nauthentication-results: other; spf=pass\r\nAuthentication-Results: mx; dkim=pass\r\n\r\n";
        let fields = unspoof_engine::message::Headers::parse(raw).fields;
        let mut out = Vec::new();
        delete_where(
            &fields,
            "Authentication-Results",
            |f| auth_results::claims(f.value, "mx"),
            &mut out,
        );
        let idx: Vec<u32> = out
            .iter()
            .map(|r| match r {
                Reply::ChangeHeader { index, .. } => *index,
                _ => 0,
            })
            .collect();
        assert_eq!(idx, vec![3, 1]);
    }
}
