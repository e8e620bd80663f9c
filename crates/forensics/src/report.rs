//! Reports to the sites involved (seed: "follow up with other sites involved ... contact the
//! postmaster"): an abuse report in the Abuse Reporting Format (RFC 5965, feedback type
//! `abuse`), or a DMARC failure report (RFC 6591 `auth-failure`, with the redaction RFC 9991
//! asks for), built with mail-auth's ARF support; and the reverse, reading a report someone
//! sent us.

use std::collections::BTreeSet;

use mail_auth::report::{
    AuthFailureType, DeliveryResult, Feedback, FeedbackType, IdentityAlignment,
};
use serde::Serialize;
use unspoof_engine::{Analysis, Word, domain::registrable};

use crate::join::{HopCheck, LogTrace};

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 5965 `Feedback-Type: abuse`.
    Abuse,
    /// RFC 6591 `Feedback-Type: auth-failure`, `Auth-Failure: dmarc`.
    DmarcFailure,
}

/// What to leave out of the original message (RFC 6590, RFC 9991 privacy considerations).
#[derive(Debug, Clone, Copy, Default)]
pub struct Redaction {
    /// Replace the local part of every address in the original's header with `redacted`.
    pub local_parts: bool,
    /// Attach only the original's header section (`text/rfc822-headers`), not its body.
    pub headers_only: bool,
}

/// Who sends the report and to whom.
#[derive(Debug, Clone)]
pub struct Addressing {
    pub from: String,
    pub to: Vec<String>,
    /// Our host name: Reporting-MTA.
    pub reporting_mta: String,
}

/// The `abuse@` and `postmaster@` (RFC 2142) addresses of the registrable domains involved: the
/// origin's reverse name, the From domain and the MAIL FROM domain, in that order, without
/// duplicates.
pub fn abuse_contacts(analysis: &Analysis) -> Vec<String> {
    let mut domains: Vec<String> = Vec::new();
    let mut push = |d: Option<String>| {
        if let Some(d) = d
            && !domains.contains(&d)
        {
            domains.push(d);
        }
    };
    push(
        analysis
            .trace
            .origin
            .as_ref()
            .and_then(|o| o.rdns.as_deref())
            .and_then(registrable),
    );
    push(from_domain(analysis).and_then(|d| registrable(&d)));
    push(
        analysis
            .envelope
            .mail_from
            .as_deref()
            .and_then(|m| m.rsplit_once('@'))
            .and_then(|(_, d)| registrable(d)),
    );
    domains
        .iter()
        .flat_map(|d| [format!("abuse@{d}"), format!("postmaster@{d}")])
        .collect()
}

fn from_domain(analysis: &Analysis) -> Option<String> {
    if !analysis.auth.dmarc.domain.is_empty() {
        return Some(analysis.auth.dmarc.domain.clone());
    }
    let from = analysis.message.from.as_deref()?;
    let addr = from
        .rsplit('<')
        .next()
        .unwrap_or(from)
        .trim_end_matches('>');
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim().to_ascii_lowercase())
}

/// Builds the report message (CRLF). `raw` is the original message.
pub fn build(
    kind: Kind,
    raw: &[u8],
    analysis: &Analysis,
    log: Option<&LogTrace>,
    addressing: &Addressing,
    redaction: Redaction,
) -> std::io::Result<Vec<u8>> {
    let original = redact(raw, redaction);
    let ar = analysis.authentication_results(&addressing.reporting_mta);
    let ar_value = ar
        .split_once(':')
        .map(|(_, v)| v.replace("\r\n\t", " "))
        .unwrap_or_default();

    let mut feedback = Feedback::new(match kind {
        Kind::Abuse => FeedbackType::Abuse,
        Kind::DmarcFailure => FeedbackType::AuthFailure,
    })
    .with_version(1)
    .with_user_agent(concat!("unspoof/", env!("CARGO_PKG_VERSION")))
    .with_reporting_mta(addressing.reporting_mta.clone())
    .with_authentication_results(ar_value.trim().to_string());
    if let Some(ip) = analysis
        .trace
        .origin
        .as_ref()
        .map(|o| o.ip)
        .or(analysis.envelope.ip)
    {
        feedback = feedback.with_source_ip(ip);
    }
    if let Some(mf) = &analysis.envelope.mail_from {
        let mf = if redaction.local_parts {
            redact_address(mf)
        } else {
            mf.clone()
        };
        feedback = feedback.with_original_mail_from(format!("<{mf}>"));
    }
    for rcpt in &analysis.envelope.rcpt {
        let r = if redaction.local_parts {
            redact_address(rcpt)
        } else {
            rcpt.clone()
        };
        feedback = feedback.with_original_rcpt_to(format!("<{r}>"));
    }
    let mut reported: BTreeSet<String> = BTreeSet::new();
    if let Some(d) = from_domain(analysis) {
        reported.insert(d);
    }
    for d in reported {
        feedback = feedback.with_reported_domain(d);
    }
    if kind == Kind::DmarcFailure {
        let aligned = &analysis.auth.dmarc.aligned;
        feedback = feedback
            .with_auth_failure(AuthFailureType::Dmarc)
            .with_delivery_result(match analysis.verdict.action {
                unspoof_engine::Action::Accept | unspoof_engine::Action::Tag => {
                    DeliveryResult::Delivered
                }
                unspoof_engine::Action::Quarantine => DeliveryResult::Spam,
                unspoof_engine::Action::Reject => DeliveryResult::Reject,
            })
            .with_identity_alignment(
                match (aligned.contains(&"dkim"), aligned.contains(&"spf")) {
                    (true, true) => IdentityAlignment::DkimSpf,
                    (true, false) => IdentityAlignment::Dkim,
                    (false, true) => IdentityAlignment::Spf,
                    (false, false) => IdentityAlignment::None,
                },
            );
        if let Some(d) = analysis
            .auth
            .dkim
            .iter()
            .find(|d| d.result != Word::Pass && !d.domain.is_empty())
        {
            feedback = feedback
                .with_dkim_domain(d.domain.clone())
                .with_dkim_selector(d.selector.clone());
        }
    }
    let arf = feedback.to_arf();

    let text = evidence(kind, analysis, log);
    let subject = match kind {
        Kind::Abuse => format!(
            "Abuse report: forged mail from {}",
            analysis
                .trace
                .origin
                .as_ref()
                .map(|o| o.ip.to_string())
                .unwrap_or_else(|| "unknown origin".into())
        ),
        Kind::DmarcFailure => format!(
            "DMARC failure report for {}",
            from_domain(analysis).unwrap_or_else(|| "unknown domain".into())
        ),
    };
    // Written by hand rather than with a MIME builder: RFC 2046 5.2.1 allows no transfer
    // encoding but 7bit/8bit/binary inside message/rfc822, and RFC 5965 wants the ARF part as
    // plain header-like text that any receiver can read.
    let boundary = format!("unspoof-report-{:016x}", fnv1a(raw));
    let cte = |bytes: &[u8]| if bytes.is_ascii() { "7bit" } else { "8bit" };
    let mut out: Vec<u8> = Vec::with_capacity(raw.len() + text.len() + arf.len() + 1024);
    let mut header = |name: &str, value: &str| {
        out.extend_from_slice(format!("{name}: {}\r\n", one_line(value)).as_bytes());
    };
    header("From", &format!("<{}>", addressing.from));
    header(
        "To",
        &addressing
            .to
            .iter()
            .map(|a| format!("<{a}>"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    header("Subject", &subject);
    header("Date", &rfc5322_date(now()));
    header(
        "Message-ID",
        &format!("<{boundary}@{}>", addressing.reporting_mta),
    );
    header("Auto-Submitted", "auto-generated");
    header("MIME-Version", "1.0");
    header(
        "Content-Type",
        &format!("multipart/report; report-type=feedback-report; boundary=\"{boundary}\""),
    );
    out.extend_from_slice(b"\r\nThis is a multipart report (RFC 6522).\r\n");
    let mut part = |content_type: &str, body: &[u8]| {
        out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        out.extend_from_slice(
            format!("Content-Transfer-Encoding: {}\r\n\r\n", cte(body)).as_bytes(),
        );
        out.extend_from_slice(&unspoof_engine::message::to_crlf(body));
        if !body.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    };
    part("text/plain; charset=utf-8", text.as_bytes());
    part("message/feedback-report", arf.as_bytes());
    if redaction.headers_only {
        part("text/rfc822-headers", &original);
    } else {
        part("message/rfc822", &original);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(out)
}

/// Removes line breaks from a header value.
fn one_line(v: &str) -> String {
    v.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// A stable boundary seed from the content (reports of the same message differ only in Date).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 5322 3.3 date in UTC.
fn rfc5322_date(t: i64) -> String {
    mail_parser::DateTime::from_timestamp(t).to_rfc822()
}

/// The plain-words part: what we saw and why we think it is forged.
fn evidence(kind: Kind, a: &Analysis, log: Option<&LogTrace>) -> String {
    let mut t = String::new();
    let mut line = |s: String| {
        t.push_str(&s);
        t.push_str("\r\n");
    };
    match kind {
        Kind::Abuse => {
            line("This is an abuse report (RFC 5965) for a forged message we received.".into())
        }
        Kind::DmarcFailure => line(
            "This is a DMARC failure report (RFC 6591, RFC 9991) for a message we received.".into(),
        ),
    }
    line(String::new());
    if let Some(o) = &a.trace.origin {
        line(format!(
            "Origin: {} (HELO {}, reverse DNS {}).",
            o.ip,
            o.helo.as_deref().unwrap_or("-"),
            o.rdns.as_deref().unwrap_or("none")
        ));
    }
    if let Some(m) = &a.message.message_id {
        line(format!("Message-ID: {m}"));
    }
    if let Some(f) = &a.message.from {
        line(format!("From: {f}"));
    }
    line(format!("Our verdict: {}.", a.verdict.action));
    for r in &a.verdict.reasons {
        line(format!("  - {} ({})", r.message, r.code));
    }
    line(String::new());
    line("Authentication:".into());
    line(format!(
        "  SPF {} for {} ({})",
        a.auth.spf.result,
        a.auth.spf.domain,
        a.auth.spf.mechanism.as_deref().unwrap_or("-")
    ));
    for d in &a.auth.dkim {
        line(format!(
            "  DKIM {} d={} s={} {}",
            d.result,
            d.domain,
            d.selector,
            d.reason.as_deref().unwrap_or("")
        ));
    }
    line(format!(
        "  DMARC {} for {} (policy {})",
        a.auth.dmarc.result,
        a.auth.dmarc.domain,
        a.auth.dmarc.policy.unwrap_or("-")
    ));
    line(format!("  ARC {}", a.auth.arc.result));
    line(String::new());
    line("Hops (newest first; trusted = written by us or a relay we trust):".into());
    for h in &a.trace.hops {
        line(format!(
            "  {} {} from {} [{}] by {} at {}",
            h.index,
            if h.trusted { "trusted" } else { "claimed" },
            h.from_helo.as_deref().unwrap_or("?"),
            h.from_ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "?".into()),
            h.by.as_deref().unwrap_or("?"),
            h.date.as_deref().unwrap_or("?")
        ));
    }
    if let Some(log) = log {
        line(String::new());
        line("Our mail server's log:".into());
        match &log.hop_check {
            HopCheck::Confirmed { ip } => line(format!("  The log confirms the client {ip}.")),
            HopCheck::Contradicted { detail, .. } => line(format!("  {detail}.")),
            HopCheck::Unknown { detail } => line(format!("  {detail}.")),
        }
        for l in &log.lines {
            line(format!("  {}", l.text));
        }
    }
    t
}

/// Applies the redaction to the original message.
fn redact(raw: &[u8], r: Redaction) -> Vec<u8> {
    let headers = unspoof_engine::Headers::parse(raw);
    let head_end = headers.body_offset.min(raw.len());
    let mut head = raw[..head_end].to_vec();
    if r.local_parts {
        head = redact_local_parts(&String::from_utf8_lossy(&head)).into_bytes();
    }
    if r.headers_only {
        return head;
    }
    head.extend_from_slice(&raw[head_end..]);
    head
}

/// Replaces the local part of every `local@domain` with `redacted` (RFC 6590 suggests a
/// reversible transformation; we choose the irreversible one: the report is for the domain).
fn redact_local_parts(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let is_local = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&c);
    for (i, &b) in bytes.iter().enumerate() {
        let at_address = b == b'@'
            && i > 0
            && is_local(bytes[i - 1])
            && bytes.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric());
        if at_address {
            while out.last().is_some_and(|&c| is_local(c)) {
                out.pop();
            }
            out.extend_from_slice(b"redacted@");
        } else {
            out.push(b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn redact_address(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((_, d)) => format!("redacted@{d}"),
        None => addr.to_string(),
    }
}

/// What a report someone sent us says.
#[derive(Debug, Clone, Serialize)]
pub struct ParsedReport {
    pub feedback_type: String,
    pub auth_failure: Option<String>,
    pub user_agent: Option<String>,
    pub reporting_mta: Option<String>,
    pub source_ip: Option<String>,
    pub arrival_date: Option<i64>,
    pub original_mail_from: Option<String>,
    pub original_rcpt_to: Option<String>,
    pub reported_domains: Vec<String>,
    pub authentication_results: Vec<String>,
    /// The reported message, as far as the report includes it.
    pub original: OriginalSummary,
}

/// The reported message's identity: which of our messages it is.
#[derive(Debug, Clone, Serialize, Default)]
pub struct OriginalSummary {
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
    /// `message` (whole message), `headers` (header section only) or `none`.
    pub included: &'static str,
}

/// Reads an ARF (RFC 5965) or DMARC failure (RFC 6591) report.
pub fn parse(raw: &[u8]) -> Result<ParsedReport, String> {
    let feedback = Feedback::parse_rfc5322(raw).map_err(|e| match e {
        mail_auth::report::Error::NoReportsFound => {
            "not an ARF report: no message/feedback-report part (a plain-text report cannot be read reliably)".to_string()
        }
        mail_auth::report::Error::MailParseError => "not a MIME message: it could not be parsed".to_string(),
        other => format!("cannot read the report: {other:?}"),
    })?;
    let (included, original_bytes) = match (feedback.message(), feedback.headers()) {
        (Some(m), _) => ("message", Some(m.as_bytes().to_vec())),
        (None, Some(h)) => ("headers", Some(format!("{h}\r\n\r\n").into_bytes())),
        (None, None) => ("none", None),
    };
    let mut original = OriginalSummary {
        included,
        ..Default::default()
    };
    if let Some(bytes) = original_bytes {
        let headers = unspoof_engine::Headers::parse(&bytes);
        let get = |n: &str| headers.first(n).map(|h| h.value_unfolded());
        original.message_id = get("Message-ID");
        original.from = get("From");
        original.to = get("To");
        original.subject = get("Subject");
        original.date = get("Date");
    }
    Ok(ParsedReport {
        feedback_type: feedback_type_name(feedback.feedback_type()).to_string(),
        auth_failure: (feedback.feedback_type() == FeedbackType::AuthFailure)
            .then(|| auth_failure_name(feedback.auth_failure()).to_string()),
        user_agent: feedback.user_agent().map(str::to_string),
        reporting_mta: feedback.reporting_mta().map(str::to_string),
        source_ip: feedback.source_ip().map(|i| i.to_string()),
        arrival_date: feedback.arrival_date(),
        original_mail_from: feedback.original_mail_from().map(str::to_string),
        original_rcpt_to: feedback.original_rcpt_to().map(str::to_string),
        reported_domains: feedback
            .reported_domain()
            .iter()
            .map(|d| d.to_string())
            .collect(),
        authentication_results: feedback
            .authentication_results()
            .iter()
            .map(|d| d.to_string())
            .collect(),
        original,
    })
}

/// The RFC 5965 word for a feedback type.
fn feedback_type_name(t: FeedbackType) -> &'static str {
    match t {
        FeedbackType::Abuse => "abuse",
        FeedbackType::AuthFailure => "auth-failure",
        FeedbackType::Fraud => "fraud",
        FeedbackType::NotSpam => "not-spam",
        FeedbackType::Other => "other",
        FeedbackType::Virus => "virus",
    }
}

/// The RFC 6591 word for an authentication failure type.
fn auth_failure_name(t: AuthFailureType) -> &'static str {
    match t {
        AuthFailureType::Adsp => "adsp",
        AuthFailureType::BodyHash => "bodyhash",
        AuthFailureType::Revoked => "revoked",
        AuthFailureType::Signature => "signature",
        AuthFailureType::Spf => "spf",
        AuthFailureType::Dmarc => "dmarc",
        AuthFailureType::Unspecified => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_parts_are_redacted() {
        assert_eq!(
            redact_local_parts("From: Joe <joe.s+x@example.com>\r\nTo: a@b.example\r\n"),
            "From: Joe <redacted@example.com>\r\nTo: redacted@b.example\r\n"
        );
    }
}
