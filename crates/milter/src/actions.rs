//! The engine's decision (`Analysis::decision`, `unspoof_engine::decision`) as milter replies
//! at end of message, one to one. The milter decides nothing: the disposition, the reply and
//! the header edits are the engine's, the same as the gateway applies to its bytes.
//!
//! | decision | replies |
//! | --- | --- |
//! | `Remove { name, index }` | CHGHEADER `index` `name` with an empty value |
//! | `Change { name, index, value }` | CHGHEADER `index` `name` `value` |
//! | `Insert { name, value }` | INSHEADER at 0 (the top) |
//! | `Append { name, value }` | ADDHEADER |
//! | new body (banner) | REPLBODY chunks, after every header edit |
//! | accept, tag | the edits, ACCEPT |
//! | quarantine | the edits, QUARANTINE with the reason codes, ACCEPT |
//! | reject, defer | REPLYCODE with the engine's reply (`550 5.7.1`, `451 4.4.3`) and the MTA's queue id |
//!
//! Edits the MTA did not allow in OPTNEG are left out (a new body only with header changes,
//! or the MIME fields it needs are left out too); a quarantine the MTA cannot do becomes the
//! engine's refusal (never a silent delivery).

use unspoof_engine::decision::{self, Disposition, HeaderEdit};
use unspoof_engine::{Analysis, Reason};

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

/// Deletions of the fields only we may write, for the MTA's copy of a message it passes
/// unjudged (an authenticated submission, an error with `on_error = accept`): the engine's
/// removals (`unspoof_engine::decision::forged_removals`, the list every decided message starts
/// with), so forged results never reach a user. Empty when the MTA did not allow header changes.
pub fn forged_deletions(message: &Message, authserv_id: &str, caps: Caps) -> Vec<Reply> {
    if !caps.can(action::CHGHDRS) {
        return Vec::new();
    }
    decision::forged_removals(&message.headers(), authserv_id)
        .into_iter()
        .filter_map(|e| match e {
            HeaderEdit::Remove { name, index } => Some(Reply::ChangeHeader {
                index,
                name,
                value: String::new(),
            }),
            _ => None,
        })
        .collect()
}

/// The replies for a decided message, ending in the final one. `queue_id` is the MTA's (`i`
/// macro), for the reply text.
pub fn replies(
    analysis: &Analysis,
    caps: Caps,
    quarantine_note: Option<&str>,
    queue_id: &str,
) -> Vec<Reply> {
    let d = &analysis.decision;
    let qid = (queue_id != "-").then_some(queue_id);
    match d.disposition {
        Disposition::Reject | Disposition::Defer => {
            return vec![Reply::ReplyCode(d.reply.line(qid))];
        }
        Disposition::Quarantine if !caps.can(action::QUARANTINE) => {
            return vec![Reply::ReplyCode(decision::refusal(analysis).line(qid))];
        }
        _ => {}
    }
    let with_body = d.body.is_some() && caps.can(action::CHGBODY) && caps.can(action::CHGHDRS);
    // Without the new body, the MIME fields a banner changes stay as they were.
    let mime = |name: &str| {
        let n = name.to_ascii_lowercase();
        n.starts_with("content-") || n == "mime-version"
    };
    let mut out = Vec::new();
    for e in &d.edits {
        match e {
            HeaderEdit::Remove { name, index } if caps.can(action::CHGHDRS) => {
                out.push(Reply::ChangeHeader {
                    index: *index,
                    name: name.clone(),
                    value: String::new(),
                })
            }
            HeaderEdit::Change { name, index, value }
                if caps.can(action::CHGHDRS) && (with_body || !mime(name)) =>
            {
                out.push(Reply::ChangeHeader {
                    index: *index,
                    name: name.clone(),
                    value: caps.value(value),
                })
            }
            HeaderEdit::Insert { name, value } if caps.can(action::ADDHDRS) => {
                out.push(Reply::InsertHeader {
                    index: 0,
                    name: name.clone(),
                    value: caps.value(value),
                })
            }
            HeaderEdit::Append { name, value }
                if caps.can(action::ADDHDRS) && (with_body || !mime(name)) =>
            {
                out.push(Reply::AddHeader {
                    name: name.clone(),
                    value: caps.value(value),
                })
            }
            _ => {}
        }
    }
    // Body replacement comes after every header edit: Postfix ends a replacement at the first
    // packet of another kind (milter8.c).
    if let (true, Some(body)) = (with_body, &d.body) {
        for chunk in body.chunks(CHUNK_SIZE) {
            out.push(Reply::ReplaceBody(chunk.to_vec()));
        }
    }
    if d.disposition == Disposition::Quarantine {
        let mut reason = format!("unspoof: {}", deciding_codes(analysis));
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
}
