//! User reports (issue 19, items 1 and 2): a message a user sent to the site's report address
//! (`[gateway] report_address`), the suspicious message taken out of it ([`extract`]), and the
//! answer in plain words once it is analysed ([`explain`]).
//!
//! The reported message comes either attached (`message/rfc822`: Thunderbird's "Forward As
//! Attachment", Outlook's "Forward as attachment" and its report buttons), whole with its
//! `Received` lines and signatures, or inline (the forward quotes the text under a
//! "Forwarded Message" line with a few header lines): then only those few fields are recovered
//! and the result is marked [`Form::Inline`]; its authentication cannot be checked again, so
//! the front door looks the original up in its records (by Message-ID, else by sender and
//! subject) and analyses that instead when it has it.
//!
//! No I/O here: the front door matches the store and sends the answer.

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;

use crate::{Analysis, Headers, auth::Word, bounce, message, trace, verdict::Action};

/// The reason code a user report is recorded with (`unspoof log search --kind report`).
pub const USER_REPORT: &str = "report.user";

/// How the reported message came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// Attached whole (`message/rfc822`).
    Attached,
    /// Quoted in the body of an inline forward: only a few header fields recovered.
    Inline,
}

/// The message a user reported.
#[derive(Debug, Clone, Serialize)]
pub struct Reported {
    pub form: Form,
    /// The reported message: the attachment's bytes, or (inline) the recovered header fields
    /// and the quoted text.
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// Its Message-ID without brackets, when it shows one.
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
}

/// The lines mail programs put above an inline forward.
const INLINE_MARKERS: [&str; 5] = [
    "-------- Forwarded Message --------",    // Thunderbird
    "---------- Forwarded message ---------", // Gmail
    "-----Original Message-----",             // Outlook
    "Begin forwarded message:",               // Apple Mail
    "-------- Original Message --------",     // Thunderbird (reply)
];

/// The header fields recovered from an inline forward.
const INLINE_FIELDS: [&str; 8] = [
    "From",
    "Sent",
    "Date",
    "Subject",
    "To",
    "Cc",
    "Reply-To",
    "Message-ID",
];

/// Takes the reported message out of a report mail; `None` when it holds none.
pub fn extract(raw: &[u8]) -> Option<Reported> {
    let raw = message::to_crlf(raw);
    let parsed = trace::guard(|| MessageParser::default().parse(&raw[..]))??;
    for part in parsed.parts.iter().skip(1) {
        let is_message = part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global")
                })
        });
        if let (true, PartType::Message(m)) = (is_message, &part.body) {
            return Some(reported(m.raw_message().to_vec(), Form::Attached));
        }
    }
    let text = parsed.body_text(0)?;
    inline(&text)
}

/// An inline forward: the fields under the marker, then the quoted text.
fn inline(text: &str) -> Option<Reported> {
    let text = text.replace("\r\n", "\n");
    let start = INLINE_MARKERS
        .iter()
        .filter_map(|m| text.find(m).map(|at| at + m.len()))
        .min()?;
    let rest = text[start..].trim_start_matches([' ', '\t', '\n']);
    let mut head = String::new();
    let mut lines = rest.split('\n');
    let mut body_from = rest.len();
    let mut offset = 0;
    for line in lines.by_ref() {
        let here = offset;
        offset += line.len() + 1;
        let l = line.trim_start_matches('>').trim();
        if l.is_empty() {
            if !head.is_empty() {
                body_from = offset.min(rest.len());
                break;
            }
            continue;
        }
        let Some((name, value)) = l.split_once(':') else {
            body_from = here;
            break;
        };
        let name = name.trim();
        let Some(field) = INLINE_FIELDS.iter().find(|f| f.eq_ignore_ascii_case(name)) else {
            body_from = here;
            break;
        };
        // Outlook writes "Sent:" for the date.
        let field = if *field == "Sent" { "Date" } else { field };
        head.push_str(&format!("{field}: {}\r\n", value.trim()));
    }
    if head.is_empty() {
        return None;
    }
    let body = rest[body_from.min(rest.len())..].replace('\n', "\r\n");
    Some(reported(
        format!("{head}\r\n{body}").into_bytes(),
        Form::Inline,
    ))
}

fn reported(raw: Vec<u8>, form: Form) -> Reported {
    let crlf = message::to_crlf(&raw);
    let headers = Headers::parse(&crlf);
    let field = |n: &str| headers.first(n).map(|h| h.value_unfolded());
    Reported {
        form,
        message_id: field("Message-ID").and_then(|v| bounce::message_ids(&v).into_iter().next()),
        from: field("From"),
        subject: field("Subject"),
        date: field("Date"),
        raw,
    }
}

/// What the site did with the original, from the front door's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The record's action (`accept`, `tag`, `quarantine`, `reject`, ...).
    Recorded(String),
    /// No record of it: it did not pass through us (or before the records began).
    NotFound,
}

/// Whether the analysis shows the sender forged or borrowed an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Judgement {
    Forged,
    Genuine,
    Unknown,
}

/// The judgement of an analysis: forged on any `spoof.` finding (our own domain from outside,
/// unauthenticated), or a finding about the sender's identity (`impersonation.`,
/// `lookalike.`, `dmarc.`, `ambiguity.`, `backscatter.`) that the site's policy acts on (tag
/// or more: a class the policy makes log-only does not count); genuine when DMARC passed, or
/// a DKIM signature of the From domain itself did; unknown else.
pub fn judge(a: &Analysis) -> Judgement {
    let identity = |code: &str| {
        [
            "impersonation.",
            "lookalike.",
            "dmarc.",
            "ambiguity.",
            "backscatter.",
            "contact.first_impersonation",
        ]
        .iter()
        .any(|p| code.starts_with(p))
    };
    if a.verdict
        .reasons
        .iter()
        .any(|r| r.code.starts_with("spoof.") || (identity(&r.code) && r.action >= Action::Tag))
    {
        return Judgement::Forged;
    }
    let from_domain = a
        .message
        .from
        .as_deref()
        .and_then(|f| f.rsplit_once('@'))
        .map(|(_, d)| d.trim_end_matches('>').trim().to_ascii_lowercase());
    let dkim_of_from = from_domain.as_deref().is_some_and(|d| {
        a.auth
            .dkim
            .iter()
            .any(|k| k.result == Word::Pass && k.domain.eq_ignore_ascii_case(d))
    });
    if a.auth.dmarc.result == Word::Pass || dkim_of_from {
        Judgement::Genuine
    } else {
        Judgement::Unknown
    }
}

/// The answer to the reporter, in plain words: who really sent the message, whether the
/// sender was forged and how we know, what the site did with it, what to do next time.
pub fn explain(
    reported: &Reported,
    analysis: &Analysis,
    original: bool,
    outcome: &Outcome,
) -> String {
    let subject = reported
        .subject
        .clone()
        .or_else(|| analysis.message.subject.clone())
        .unwrap_or_else(|| "(no subject)".into());
    let claimed = analysis
        .message
        .from
        .clone()
        .unwrap_or_else(|| "nobody (no From line)".into());
    let mut out = format!(
        "Thank you for reporting the message \"{}\".\n\n",
        clean(&subject)
    );

    out.push_str("Who really sent it\n");
    match &analysis.trace.origin {
        Some(o) => {
            let name = o
                .rdns
                .as_deref()
                .or(o.helo.as_deref())
                .map(|n| format!(" ({})", clean(n)))
                .unwrap_or_default();
            out.push_str(&format!(
                "  It says it is from {}. It came from the computer at {}{name}",
                clean(&claimed),
                o.ip
            ));
            out.push_str(if o.source == trace::OriginSource::Envelope {
                ", which handed it to our mail gateway.\n"
            } else {
                ", as our servers recorded it.\n"
            });
        }
        None => out.push_str(&format!(
            "  It says it is from {}. Where it came from cannot be told from what we have.\n",
            clean(&claimed)
        )),
    }

    out.push_str("\nWas the sender forged?\n");
    let judgement = judge(analysis);
    match judgement {
        Judgement::Forged => {
            out.push_str("  Yes: this message is not from who it claims to be. How we know:\n");
            for r in analysis.verdict.reasons.iter().filter(|r| r.action > Action::Accept) {
                out.push_str(&format!("  - {}\n", clean(&r.message)));
            }
        }
        Judgement::Genuine => {
            let by = if analysis.auth.dmarc.result == Word::Pass {
                format!(
                    "its sender's domain {} vouches for it (DMARC passed: {})",
                    analysis.auth.dmarc.domain,
                    analysis.auth.dmarc.aligned.join(" and ")
                )
            } else {
                format!(
                    "it carries a valid signature of {}",
                    analysis.auth.dkim_pass_domains().join(", ")
                )
            };
            out.push_str(&format!(
                "  No: the sender is who it says: {by}. That does not make its content harmless: a real account can be misused, and a real company can send unwanted mail.\n"
            ));
        }
        Judgement::Unknown => out.push_str(
            "  We cannot confirm who sent it: nothing in it proves the sender (no valid signature of the sender's domain, no DMARC pass), and nothing proves a forgery either. Treat it with care.\n",
        ),
    }
    if reported.form == Form::Inline {
        out.push_str(if original {
            "  You forwarded it inline, which loses its original headers; we found the original in our records and checked that instead.\n"
        } else {
            "  You forwarded it inline, which loses its original headers, and we have no record of the original: we could only check what your forward kept.\n"
        });
    }

    out.push_str("\nWhat we did with it\n");
    out.push_str(&match outcome {
        Outcome::Recorded(action) => match action.as_str() {
            "accept" => "  It was delivered to you: our checks did not stop it. Your report has been recorded and the administrators will review it.\n".to_string(),
            "tag" => "  It was delivered with a warning ([SUSPICIOUS] in the subject and a notice at the top). Your report has been recorded.\n".to_string(),
            "quarantine" => "  It was held in quarantine; you received it only if an administrator released it. Your report has been recorded.\n".to_string(),
            "reject" => "  It was refused at our gateway; what you received must be another copy. Your report has been recorded.\n".to_string(),
            other => format!("  Our records show it as \"{}\". Your report has been recorded.\n", clean(other)),
        },
        Outcome::NotFound => "  We have no record of it passing through our gateway: it may have reached you another way (another account, or a path that skips our checks). Your report has been recorded and the administrators will look into it.\n".to_string(),
    });

    out.push_str("\nWhat to do next time\n");
    out.push_str(match judgement {
        Judgement::Forged => "  Do not reply to such a message, click its links or open its attachments. Report it as you did, best with \"Forward as attachment\", then delete it.\n",
        Judgement::Genuine => "  If you did not expect it, check with the sender through a channel you already know (a phone number you have, not one in the message). If it is only unwanted, you can unsubscribe or mark it as spam.\n",
        Judgement::Unknown => "  Do not act on what it asks until you have checked with the sender through a channel you already know. Report it as you did, best with \"Forward as attachment\".\n",
    });
    if reported.form == Form::Inline {
        out.push_str("  \"Forward as attachment\" keeps the evidence: in Thunderbird, Message > Forward As > Attachment; in Outlook, More actions > Forward as attachment.\n");
    }
    out
}

/// Message text is untrusted: no control characters in the answer.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inline_thunderbird_forward_is_recovered_and_marked() {
        let body = "Is this real?\n\n-------- Forwarded Message --------\nSubject: \tInvoice overdue\nDate: \tMon, 7 Dec 2026 07:31:00 +0000\nFrom: \tSuzie <suzie@shopping.example.net>\nTo: \tbob@shopping.example.net\n\nPlease pay today.\n";
        let r = inline(body).unwrap();
        assert_eq!(r.form, Form::Inline);
        assert_eq!(r.subject.as_deref(), Some("Invoice overdue"));
        assert_eq!(
            r.from.as_deref(),
            Some("Suzie <suzie@shopping.example.net>")
        );
        let text = String::from_utf8(r.raw).unwrap();
        assert!(text.ends_with("\r\n\r\nPlease pay today.\r\n"), "{text:?}");
        assert!(inline("no forward here\n").is_none());
    }
}
