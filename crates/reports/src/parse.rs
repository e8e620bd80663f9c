//! One aggregate report's XML to a checked report, in two readings:
//!
//! 1. **Ours** ([`check`], quick-xml): the document must be well-formed UTF-8 XML without a
//!    DOCTYPE, rooted at `feedback`, with the elements RFC 9990 (and RFC 7489 Appendix C)
//!    require, and every enumerated or numeric value spelled as the schema says. mail-auth
//!    0.13.3 reads leniently: an unknown word (`Pass`, an empty `<type>`) or a count that is no
//!    number silently becomes its default, which would put wrong numbers into the picture; we
//!    refuse such a report instead, with the element's path and the offending value. Our
//!    reading also takes what mail-auth 0.13.3 does not keep: the namespace (RFC 9990's
//!    `urn:ietf:params:xml:ns:dmarc-2.0`, which with the RFC 9990-only elements tells the
//!    [`Format`]), and RFC 7489's `pct`.
//! 2. **mail-auth's** (`mail_auth::report::Report::parse_xml`): the data itself. mail-auth
//!    0.13.3 already reads RFC 9990's `np`, `testing`, `discovery_method`, `generator`, the
//!    `pass` disposition and the `policy_test_mode` reason; it does not resolve namespace
//!    prefixes (`<dmarc:feedback>` is refused, with that reason).
//!
//! Both must agree on the number of records, or the report is refused.

use std::borrow::Cow;

use mail_auth::report::Report;
use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// RFC 9990's XML namespace.
pub const NAMESPACE_RFC9990: &str = "urn:ietf:params:xml:ns:dmarc-2.0";

/// Deepest element nesting accepted (a report needs 5; this guards the reader's stack).
const MAX_DEPTH: usize = 32;

/// Which format a report is written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 9990: the `dmarc-2.0` namespace, or elements only RFC 9990 has (`np`, `testing`,
    /// `discovery_method`, `generator`).
    Rfc9990,
    /// RFC 7489 Appendix C: a `<version>` and none of RFC 9990's elements.
    Rfc7489,
    /// The draft format before RFC 7489 (no `<version>`), still sent by some.
    #[default]
    Draft,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Rfc9990 => "rfc9990",
            Format::Rfc7489 => "rfc7489",
            Format::Draft => "draft",
        }
    }
}

/// A report both readings accepted.
#[derive(Debug, Clone)]
pub struct ParsedReport {
    /// mail-auth's reading: the data.
    pub report: Report,
    pub format: Format,
    /// The default namespace of `feedback`, if any.
    pub namespace: Option<String>,
    /// RFC 7489's `policy_published/pct` (RFC 9990 dropped it; mail-auth 0.13.3 does not keep
    /// it).
    pub pct: Option<u8>,
    /// Each record's `policy_evaluated/reason/type` words as written: mail-auth 0.13.3 reads
    /// RFC 7489's `forwarded` and `sampled_out` as `Other`.
    pub reason_types: Vec<Vec<String>>,
}

/// Reads one report. `Err` says what is wrong and where, in words for the person who looks at
/// the rejected input.
pub fn parse_xml(xml: &[u8]) -> Result<ParsedReport, String> {
    let checked = match check(xml) {
        Ok(c) => c,
        Err(e) => {
            // Some senders wrap the report in a stray element (ikea.com's reports open an
            // `<xs:schema>` they never close). When a whole `<feedback>` element is inside,
            // that element alone is read, by both readers; anything else stays refused.
            let Some(inner) = feedback_element(xml) else {
                return Err(e);
            };
            return parse_xml(inner).map_err(|_| e);
        }
    };
    let report = Report::parse_xml(xml).map_err(|e| {
        if checked.prefixed {
            format!("namespace prefixes are not read (mail-auth 0.13.3): {e}")
        } else {
            format!("mail-auth: {e}")
        }
    })?;
    if report.record.len() != checked.records {
        return Err(format!(
            "mail-auth read {} records where the XML has {}",
            report.record.len(),
            checked.records
        ));
    }
    Ok(ParsedReport {
        report,
        format: checked.format,
        namespace: checked.namespace,
        pct: checked.pct,
        reason_types: checked.reason_types,
    })
}

/// The bytes of the one `<feedback ...>...</feedback>` element inside `xml`, when the
/// document's root is something else.
fn feedback_element(xml: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(xml).ok()?;
    let root = text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .strip_prefix("<?xml")
        .and_then(|r| r.split_once("?>"))
        .map(|(_, r)| r)
        .unwrap_or(text)
        .trim_start();
    if root.starts_with("<feedback") {
        return None;
    }
    let start = text
        .find("<feedback>")
        .or_else(|| text.find("<feedback "))?;
    let end = text.rfind("</feedback>")? + "</feedback>".len();
    // No DTD before it: a DOCTYPE stays refused, wrapper or not.
    (start < end && !text[..start].contains("<!")).then(|| &xml[start..end])
}

/// What our own reading found.
#[derive(Debug, Default)]
struct Checked {
    format_9990_elements: bool,
    has_version: bool,
    namespace: Option<String>,
    prefixed: bool,
    records: usize,
    pct: Option<u8>,
    format: Format,
    reason_types: Vec<Vec<String>>,
}

/// What a leaf element's value must be.
enum Rule {
    /// Any text, may be empty.
    Text,
    /// Text with something in it.
    NonEmpty,
    /// An unsigned integer up to the given maximum.
    Uint(u64),
    /// One of these words, exactly (the schemas' enumerations are lowercase).
    OneOf(&'static [&'static str]),
    /// An IPv4 or IPv6 address.
    Ip,
}

const DISPOSITIONS: &[&str] = &["none", "quarantine", "reject", "pass"];
const POLICIES: &[&str] = &["none", "quarantine", "reject"];
const DMARC_RESULTS: &[&str] = &["pass", "fail"];
const REASONS: &[&str] = &[
    "forwarded",
    "sampled_out",
    "trusted_forwarder",
    "mailing_list",
    "local_policy",
    "other",
    "policy_test_mode",
];
const DKIM_RESULTS: &[&str] = &[
    "none",
    "pass",
    "fail",
    "policy",
    "neutral",
    "temperror",
    "permerror",
];
const SPF_RESULTS: &[&str] = &[
    "none",
    "neutral",
    "pass",
    "fail",
    "softfail",
    "temperror",
    "permerror",
];

/// The rule for a leaf at `path` (local names, root first), `None` for elements we do not
/// check (extensions, unknown elements: both readers skip them).
fn rule(path: &[String]) -> Option<Rule> {
    let n = path.len();
    let name = path.last()?.as_str();
    let parent = if n >= 2 { path[n - 2].as_str() } else { "" };
    let grand = if n >= 3 { path[n - 3].as_str() } else { "" };
    Some(match (grand, parent, name) {
        ("feedback", "report_metadata", "report_id") => Rule::NonEmpty,
        ("feedback", "report_metadata", "org_name" | "email") => Rule::Text,
        ("report_metadata", "date_range", "begin" | "end") => Rule::Uint(i64::MAX as u64),
        ("feedback", "policy_published", "domain") => Rule::NonEmpty,
        ("feedback", "policy_published", "adkim" | "aspf") => Rule::OneOf(&["r", "s"]),
        ("feedback", "policy_published", "p" | "sp" | "np") => Rule::OneOf(POLICIES),
        ("feedback", "policy_published", "pct") => Rule::Uint(100),
        ("feedback", "policy_published", "testing") => Rule::OneOf(&["n", "y"]),
        ("feedback", "policy_published", "discovery_method") => Rule::OneOf(&["psl", "treewalk"]),
        ("record", "row", "source_ip") => Rule::Ip,
        ("record", "row", "count") => Rule::Uint(u64::from(u32::MAX)),
        ("row", "policy_evaluated", "disposition") => Rule::OneOf(DISPOSITIONS),
        ("row", "policy_evaluated", "dkim" | "spf") => Rule::OneOf(DMARC_RESULTS),
        ("policy_evaluated", "reason", "type") => Rule::OneOf(REASONS),
        ("record", "identifiers", "header_from") => Rule::NonEmpty,
        ("auth_results", "dkim", "result") => Rule::OneOf(DKIM_RESULTS),
        ("auth_results", "spf", "result") => Rule::OneOf(SPF_RESULTS),
        ("auth_results", "spf", "scope") => Rule::OneOf(&["helo", "mfrom"]),
        _ => return None,
    })
}

/// Children an element must have, by its (parent, name).
fn required(parent: &str, name: &str) -> &'static [&'static str] {
    match (parent, name) {
        ("", "feedback") => &["report_metadata", "policy_published"],
        ("feedback", "report_metadata") => &["report_id", "date_range"],
        ("report_metadata", "date_range") => &["begin", "end"],
        ("feedback", "policy_published") => &["domain"],
        ("feedback", "record") => &["row", "identifiers"],
        ("record", "row") => &["source_ip", "count", "policy_evaluated"],
        ("row", "policy_evaluated") => &["disposition"],
        ("policy_evaluated", "reason") => &["type"],
        ("record", "identifiers") => &["header_from"],
        ("auth_results", "dkim") => &["domain", "result"],
        ("auth_results", "spf") => &["domain", "result"],
        _ => &[],
    }
}

/// One open element: its local name, the children seen, and its text.
struct Open {
    name: String,
    /// Children are noted only for elements that require some ([`required`]).
    wants_children: bool,
    children: Vec<String>,
    /// Text is kept only for the leaves we check ([`rule`]).
    checked: bool,
    text: String,
}

fn path_of(stack: &[Open]) -> String {
    stack
        .iter()
        .map(|o| o.name.as_str())
        .collect::<Vec<_>>()
        .join("/")
}

/// Our strict reading (see the module documentation).
fn check(xml: &[u8]) -> Result<Checked, String> {
    if let Err(e) = std::str::from_utf8(xml) {
        return Err(format!(
            "not UTF-8: invalid octets at byte {}",
            e.valid_up_to()
        ));
    }
    let mut reader = Reader::from_reader(xml);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = true;
    let mut c = Checked::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut root_seen = false;
    let mut date_range: (Option<u64>, Option<u64>) = (None, None);
    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| format!("not well-formed XML at byte {at}: {e}"))?;
        match event {
            Event::Start(e) => {
                let local = e.local_name();
                let local = local.as_ref().to_string();
                if e.name().as_ref().contains(':') {
                    c.prefixed = true;
                }
                if stack.is_empty() {
                    if root_seen {
                        return Err("more than one root element".into());
                    }
                    root_seen = true;
                    if local != "feedback" {
                        return Err(format!(
                            "not an aggregate report: the root element is <{local}>, not <feedback>"
                        ));
                    }
                    for a in e.attributes().with_checks(false).flatten() {
                        if a.key.as_ref() == "xmlns" {
                            c.namespace = Some(a.value.trim().to_string());
                        }
                    }
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                if let Some(parent) = stack.last_mut()
                    && parent.wants_children
                {
                    parent.children.push(local.clone());
                }
                match (stack.len(), local.as_str()) {
                    (1, "version") => c.has_version = true,
                    (1, "record") => {
                        c.records += 1;
                        c.reason_types.push(Vec::new());
                    }
                    (2, "np" | "testing" | "discovery_method" | "generator") => {
                        c.format_9990_elements = true
                    }
                    _ => {}
                }
                names.push(local.clone());
                let parent = stack.last().map(|p| p.name.as_str()).unwrap_or("");
                let wants_children = !required(parent, &local).is_empty()
                    || (parent, local.as_str()) == ("feedback", "report_metadata");
                stack.push(Open {
                    name: local,
                    wants_children,
                    children: Vec::new(),
                    checked: rule(&names).is_some(),
                    text: String::new(),
                });
            }
            Event::End(_) => {
                let open = stack.pop().ok_or("an end tag without its start")?;
                // The element's path, for an error only.
                let full = || {
                    let path = path_of(&stack);
                    if path.is_empty() {
                        open.name.clone()
                    } else {
                        format!("{path}/{}", open.name)
                    }
                };
                if let Some(rule) = open.checked.then(|| rule(&names)).flatten() {
                    let v = open.text.trim();
                    let value = check_value(&rule, v).map_err(|why| {
                        format!("{}: {why} (found {:?})", full(), truncate(v, 60))
                    })?;
                    match (names.len(), open.name.as_str()) {
                        (3, "pct") => c.pct = value.map(|v| v as u8),
                        (4, "begin") => date_range.0 = value,
                        (4, "end") => date_range.1 = value,
                        (5, "type") => {
                            if let Some(r) = c.reason_types.last_mut() {
                                r.push(v.to_string());
                            }
                        }
                        _ => {}
                    }
                }
                let parent = stack.last().map(|p| p.name.as_str()).unwrap_or("");
                for child in required(parent, &open.name) {
                    if !open.children.iter().any(|c| c == child) {
                        return Err(format!("{}: <{child}> is missing", full()));
                    }
                }
                if (parent, open.name.as_str()) == ("feedback", "report_metadata")
                    && !open
                        .children
                        .iter()
                        .any(|c| c == "org_name" || c == "email")
                {
                    return Err(format!("{}: neither <org_name> nor <email>", full()));
                }
                if (parent, open.name.as_str()) == ("report_metadata", "date_range")
                    && let (Some(b), Some(e)) = date_range
                    && b > e
                {
                    return Err(format!("{}: <begin> {b} is after <end> {e}", full()));
                }
                names.pop();
            }
            Event::Text(t) => {
                if let Some(open) = stack.last_mut() {
                    if open.checked {
                        open.text.push_str(&t.xml10_content());
                    }
                } else if !t.xml10_content().trim().is_empty() {
                    return Err("text outside the root element".into());
                }
            }
            Event::CData(t) => {
                if let Some(open) = stack.last_mut() {
                    let raw = t.into_inner();
                    open.text.push_str(&raw);
                }
            }
            Event::GeneralRef(r) => {
                let text: Cow<'_, str> = match r.resolve_char_ref() {
                    Ok(Some(ch)) => Cow::Owned(ch.to_string()),
                    Ok(None) => match r.as_ref() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "apos" => "'".into(),
                        "quot" => "\"".into(),
                        other => {
                            return Err(format!("{}: unknown entity &{other};", path_of(&stack)));
                        }
                    },
                    Err(e) => return Err(format!("{}: {e}", path_of(&stack))),
                };
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&text);
                }
            }
            Event::DocType(_) => {
                return Err("a DOCTYPE is not accepted in a report (entity expansion)".into());
            }
            Event::Eof => break,
            Event::Empty(_) => unreachable!("expand_empty_elements is on"),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(format!("the document ends inside <{}>", path_of(&stack)));
    }
    if !root_seen {
        return Err("no XML element in the input".into());
    }
    c.format = if c.namespace.as_deref() == Some(NAMESPACE_RFC9990) || c.format_9990_elements {
        Format::Rfc9990
    } else if c.has_version {
        Format::Rfc7489
    } else {
        Format::Draft
    };
    Ok(c)
}

/// Checks one value; returns the number for [`Rule::Uint`].
fn check_value(rule: &Rule, v: &str) -> Result<Option<u64>, String> {
    match rule {
        Rule::Text => Ok(None),
        Rule::NonEmpty if v.is_empty() => Err("empty".into()),
        Rule::NonEmpty => Ok(None),
        Rule::Uint(max) => match v.parse::<u64>() {
            Ok(n) if n <= *max => Ok(Some(n)),
            Ok(_) => Err(format!("more than {max}")),
            Err(_) => Err("not a whole number".into()),
        },
        Rule::OneOf(words) if words.contains(&v) => Ok(None),
        Rule::OneOf(words) => Err(format!("must be one of {}", words.join(", "))),
        Rule::Ip => v
            .parse::<std::net::IpAddr>()
            .map(|_| None)
            .map_err(|_| "not an IP address".into()),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"<?xml version="1.0"?>
<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0"><version>1.0</version>
<report_metadata><org_name>r.example</org_name><email>a@r.example</email>
<report_id>1</report_id><date_range><begin>1</begin><end>2</end></date_range></report_metadata>
<policy_published><domain>example.com</domain><p>reject</p></policy_published>
<record><row><source_ip>192.0.2.1</source_ip><count>3</count>
<policy_evaluated><disposition>pass</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated></row>
<identifiers><header_from>example.com</header_from></identifiers>
<auth_results><dkim><domain>example.com</domain><result>pass</result></dkim></auth_results></record>
</feedback>"#;

    #[test]
    fn a_good_rfc9990_report_reads_with_both_readers() {
        let p = parse_xml(GOOD.as_bytes()).unwrap();
        assert_eq!(p.format, Format::Rfc9990);
        assert_eq!(p.report.record.len(), 1);
        assert_eq!(p.report.record[0].row.count, 3);
    }

    #[test]
    fn wrong_words_and_numbers_are_refused_with_their_path() {
        for (from, to, expect) in [
            (
                "<dkim>pass</dkim><spf>",
                "<dkim>Pass</dkim><spf>",
                "feedback/record/row/policy_evaluated/dkim: must be one of pass, fail",
            ),
            (
                "<count>3</count>",
                "<count>-3</count>",
                "count: not a whole number",
            ),
            (
                "<count>3</count>",
                "<count></count>",
                "count: not a whole number",
            ),
            ("192.0.2.1", "192.0.2.999", "source_ip: not an IP address"),
            (
                "<begin>1</begin>",
                "<begin>5</begin>",
                "<begin> 5 is after <end> 2",
            ),
            ("<report_id>1</report_id>", "", "<report_id> is missing"),
        ] {
            let bad = GOOD.replace(from, to);
            let err = parse_xml(bad.as_bytes()).unwrap_err();
            assert!(err.contains(expect), "{to}: {err}");
        }
    }

    #[test]
    fn a_doctype_is_refused() {
        let bad = GOOD.replace(
            "<?xml version=\"1.0\"?>",
            "<?xml version=\"1.0\"?><!DOCTYPE feedback [<!ENTITY x \"y\">]>",
        );
        assert!(parse_xml(bad.as_bytes()).unwrap_err().contains("DOCTYPE"));
    }
}
