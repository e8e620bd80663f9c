//! The HTML. maud escapes every interpolated string, and message-derived text only ever goes
//! into text nodes and quoted attribute values: a subject or a body cannot add markup.
//! No inline script or style anywhere (the CSP forbids both); no `style=` attributes either.

use mail_parser::MimeHeaders;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use unspoof_store::console::{ConsoleAction, Overview};
use unspoof_store::{MessageRecord, QuarantineEntry, QuarantineStatus, format_time};

use crate::auth::{Role, Session};
use crate::charts;
use crate::handlers::{Results, SearchParams};

/// Most characters of a message body shown in the text preview; the rest is in the .eml.
pub const PREVIEW_MAX_CHARS: usize = 20_000;
/// Most bytes of the header block shown.
pub const HEADERS_MAX_BYTES: usize = 64 * 1024;

/// htmx: no inline indicator styles (the CSP would refuse them), no eval, no script tags in
/// swapped content, requests only to this origin.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true,"historyCacheSize":0}"#;

fn page(session: Option<&Session>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (title) " · unspoof console" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/htmx.min.js" defer {}
            }
            body {
                header {
                    span.brand { "unspoof" }
                    @if let Some(s) = session {
                        nav {
                            a href="/" { "Overview" }
                            a href="/search" { "Search" }
                            a href="/quarantine" { "Quarantine" }
                            @if s.role != Role::Recipient { a href="/dmarc" { "DMARC sources" } }
                            @if s.role != Role::Recipient { a href="/allow" { "Allow list" } }
                            @if s.role == Role::Administrator { a href="/audit" { "Audit" } }
                            @if s.role == Role::Administrator { a href="/actions" { "Actions" } }
                        }
                        span.who { (s.name) " · " (role_words(s.role)) }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn role_words(r: Role) -> &'static str {
    match r {
        Role::Administrator => "administrator",
        Role::DomainAdministrator => "domain administrator",
        Role::Recipient => "recipient",
    }
}

pub fn problem(title: &str, why: &str) -> Markup {
    page(
        None,
        title,
        html! { p { (why) } p { a href="/" { "Back to the console" } } },
    )
}

pub fn login(token: &str, error: Option<&str>) -> Markup {
    page(
        None,
        "Log in",
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.login method="post" action="/login" {
                input type="hidden" name="csrf" value=(token);
                label { "Name" input type="text" name="name" autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Log in" }
            }
        },
    )
}

fn verdict_badge(action: &str) -> Markup {
    let class = match action {
        "accept" => "v accept",
        "tag" => "v tag",
        "quarantine" => "v quarantine",
        "reject" => "v reject",
        _ => "v other",
    };
    html! { span class=(class) { (action) } }
}

fn status_words(s: QuarantineStatus) -> &'static str {
    match s {
        QuarantineStatus::Held => "held",
        QuarantineStatus::Releasing => "being released",
        QuarantineStatus::Released => "released",
        QuarantineStatus::Deleted => "deleted",
    }
}

pub fn overview(
    session: &Session,
    days: u32,
    since: i64,
    until: i64,
    bucket: i64,
    o: &Overview,
) -> Markup {
    let total: i64 = o.per_bucket.iter().map(|(_, _, n)| n).sum();
    let count = |a: &str| -> i64 {
        o.per_bucket
            .iter()
            .filter(|(_, x, _)| x == a)
            .map(|(_, _, n)| n)
            .sum()
    };
    page(
        Some(session),
        "Overview",
        html! {
            p.period {
                "Last "
                @for d in [1u32, 7, 30] {
                    @if d == days { strong { (d) (if d == 1 { " day" } else { " days" }) } }
                    @else { a href={ "/?days=" (d) } { (d) (if d == 1 { " day" } else { " days" }) } }
                    " "
                }
                span.muted { "(" (format_time(since)) " to " (format_time(until)) " UTC)" }
            }
            section.numbers {
                div { strong { (total) } " messages" }
                div { strong { (count("accept")) } " accepted" }
                div { strong { (count("tag")) } " tagged" }
                div { strong { (count("quarantine")) } " quarantined" }
                div { strong { (count("reject")) } " rejected" }
                div { a href="/quarantine" { strong { (o.held) } " held now" } " (" (human_bytes(o.held_bytes)) ")" }
            }
            section {
                h2 { "Messages per verdict" }
                (charts::verdicts_over_time(&o.per_bucket, since, until, bucket))
            }
            div.columns {
                section {
                    h2 { "Top reasons" }
                    (charts::bar_list(&o.top_reasons, |k| format!("/search?reason={}", enc(k))))
                }
                section {
                    h2 { "Top forged From domains" }
                    (charts::bar_list(&o.top_forged_domains, |k| format!("/search?sender={}", enc(k))))
                }
                section {
                    h2 { "Top sources of refused mail" }
                    (charts::bar_list(&o.top_sources, |k| format!("/search?client={}", enc(k))))
                }
            }
        },
    )
}

fn human_bytes(b: i64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn search_link(p: &SearchParams, base: &str, page: u32) -> String {
    let mut q = vec![];
    for (k, v) in [
        ("sender", &p.sender),
        ("rcpt", &p.rcpt),
        ("subject", &p.subject),
        ("message_id", &p.message_id),
        ("queue_id", &p.queue_id),
        ("client", &p.client),
        ("reason", &p.reason),
        ("verdict", &p.verdict),
        ("since", &p.since),
        ("until", &p.until),
    ] {
        // The quarantine page sets the verdict itself.
        let implied = base == "/quarantine" && k == "verdict";
        if !v.trim().is_empty() && !implied {
            q.push(format!("{k}={}", enc(v.trim())));
        }
    }
    q.push(format!("page={page}"));
    format!("{base}?{}", q.join("&"))
}

fn search_form(p: &SearchParams, action: &str, with_verdict: bool) -> Markup {
    html! {
        form.search method="get" action=(action) hx-get=(action) hx-target="#results" hx-select="#results" hx-swap="outerHTML" hx-push-url="true" {
            label { "Sender" input type="text" name="sender" value=(p.sender) placeholder="address or domain"; }
            label { "Recipient" input type="text" name="rcpt" value=(p.rcpt) placeholder="address or @domain"; }
            label { "Subject contains" input type="text" name="subject" value=(p.subject); }
            label { "Message-ID" input type="text" name="message_id" value=(p.message_id); }
            label { "Queue id" input type="text" name="queue_id" value=(p.queue_id); }
            label { "Client IP or network" input type="text" name="client" value=(p.client) placeholder="192.0.2.0/24"; }
            label { "Reason code" input type="text" name="reason" value=(p.reason) placeholder="dmarc.reject"; }
            @if with_verdict {
                label { "Verdict"
                    select name="verdict" {
                        @for v in ["", "accept", "tag", "quarantine", "reject", "refused", "tempfail"] {
                            option value=(v) selected[p.verdict == v] { (if v.is_empty() { "any" } else { v }) }
                        }
                    }
                }
            }
            label { "From (UTC)" input type="date" name="since" value=(p.since); }
            label { "Until (UTC)" input type="date" name="until" value=(p.until); }
            button type="submit" { "Search" }
        }
    }
}

fn results_table(p: &SearchParams, r: &Results, base: &str, bulk: Option<&Session>) -> Markup {
    let table = html! {
            table.results {
                thead { tr { @if bulk.is_some() { th { "Select" } } th { "Time (UTC)" } th { "Verdict" } th { "From" } th { "To" } th { "Subject" } th { "Reasons" } th { "Quarantine" } } }
                tbody {
                    @for m in &r.records {
                        tr {
                            @if bulk.is_some() {
                                td { @if m.stored_at.as_ref().and_then(|q| r.states.get(q)) == Some(&QuarantineStatus::Held) {
                                    input type="checkbox" name="id" value=(m.id) aria-label="select";
                                } }
                            }
                            td.time { a href={ "/message/" (enc(&m.id)) } { (format_time(m.received_at)) } }
                            td { (verdict_badge(&m.action)) }
                            td.addr { (m.from.as_deref().or(m.mail_from.as_deref()).unwrap_or("")) }
                            td.addr { (m.recipients.join(", ")) }
                            td.subject { a href={ "/message/" (enc(&m.id)) } { (m.subject.as_deref().unwrap_or("(no subject)")) } }
                            td.codes { @for c in &m.reasons { code { (c) } " " } }
                            td { @if let Some(s) = m.stored_at.as_ref().and_then(|q| r.states.get(q)) { (status_words(*s)) } }
                        }
                    }
                }
            }
    };
    html! {
        div #results {
            p.count { (r.records.len()) " message" (if r.records.len() == 1 { "" } else { "s" }) ", page " (r.page) (if r.more { ", more older" } else { ", the last" }) }
            @if let Some(session) = bulk {
                form.bulk method="post" action="/quarantine/bulk" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    (table)
                    div.actions {
                        label { "With the selected: "
                            select name="do" {
                                option value="release" { "release" }
                                option value="delete" { "delete" }
                                option value="false_positive" { "report as false positive" }
                            }
                        }
                        (allow_select(session))
                        button type="submit" { "Apply" }
                    }
                }
            } @else {
                (table)
            }
            nav.pages {
                @if r.page > 1 { a rel="prev" href=(search_link(p, base, r.page - 1)) { "← newer" } " " }
                @if r.more { a rel="next" href=(search_link(p, base, r.page + 1)) { "older →" } }
            }
        }
    }
}

pub fn search(
    session: &Session,
    p: &SearchParams,
    results: Option<&Results>,
    error: Option<&str>,
    partial: bool,
) -> Markup {
    let body = html! {
        @if let Some(e) = error { div #results { p.error role="alert" { (e) } } }
        @if let Some(r) = results { (results_table(p, r, "/search", None)) }
    };
    if partial {
        return body;
    }
    page(
        Some(session),
        "Search",
        html! {
            (search_form(p, "/search", true))
            (body)
        },
    )
}

/// The scope choice of "release and allow the sender", only as wide as the account may allow.
fn allow_select(session: &Session) -> Markup {
    html! {
        label { "and allow the sender for "
            select name="allow" {
                option value="" { "no one (release only)" }
                option value="recipient" { "this recipient" }
                @if session.role != Role::Recipient { option value="domain" { "the recipient's domain" } }
                @if session.role == Role::Administrator { option value="everyone" { "everyone" } }
            }
        }
    }
}

pub fn quarantine(session: &Session, p: &SearchParams, r: &Results, may_act: bool) -> Markup {
    page(
        Some(session),
        "Quarantine",
        html! {
            p.muted { "Quarantined messages" @if session.role != Role::Administrator { " to " (session.scope.join(", ")) } ", newest first. Open one to release or delete it." }
            (search_form(p, "/quarantine", false))
            (results_table(p, r, "/quarantine", Some(session).filter(|_| may_act)))
        },
    )
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for k in path {
        v = v.get(k)?;
    }
    v.as_str().filter(|s| !s.is_empty())
}

fn result_word(w: Option<&str>) -> Markup {
    let w = w.unwrap_or("none");
    let class = match w {
        "pass" => "r pass",
        "fail" | "permerror" => "r fail",
        "softfail" | "temperror" | "neutral" => "r soft",
        _ => "r none",
    };
    html! { span class=(class) { (w) } }
}

pub fn message(
    session: &Session,
    m: &MessageRecord,
    held: Option<&QuarantineEntry>,
    history: &[ConsoleAction],
    may_act: bool,
    logs: Option<&Result<unspoof_forensics::join::LogTrace, String>>,
) -> Markup {
    let analysis = m
        .analysis
        .as_ref()
        .map(|a| a.value())
        .unwrap_or(Value::Null);
    let reasons = analysis
        .pointer("/verdict/reasons")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let title = m.subject.as_deref().unwrap_or("(no subject)");
    page(
        Some(session),
        title,
        html! {
            section.verdict {
                h2 { "Verdict: " (verdict_badge(&m.action)) }
                @if reasons.is_empty() && m.reasons.is_empty() {
                    p { "No finding: nothing in this message asked for more than acceptance." }
                }
                ul.reasons {
                    @if reasons.is_empty() {
                        @for c in &m.reasons { li { code { (c) } } }
                    }
                    @for r in &reasons {
                        li {
                            code { (s(r, &["code"]).unwrap_or("?")) }
                            @match s(r, &["action"]) {
                                Some("accept") | None => " (a note): ",
                                Some(a) => { " asks to " strong { (a) } ": " }
                            }
                            (s(r, &["message"]).unwrap_or(""))
                            @if let Some(ev) = r.get("evidence").and_then(Value::as_array) {
                                @if !ev.is_empty() {
                                    ul.evidence { @for e in ev { li { code { (e.as_str().unwrap_or("")) } } } }
                                }
                            }
                        }
                    }
                }
                @if let Some(reply) = &m.reply { p { "We answered the client: " code { (reply) } } }
            }
            @if let Some(q) = held { (quarantine_panel(session, m, q, may_act)) }
            section.envelope {
                h2 { "Envelope" }
                dl {
                    dt { "Received" } dd { (format_time(m.received_at)) " UTC by " (m.node) " (" (m.listener) ")" }
                    dt { "Client" } dd { (m.client_ip.map(|i| i.to_string()).unwrap_or_default()) @if let Some(r) = &m.reverse_dns { " (" (r) ")" } }
                    dt { "HELO" } dd { (m.helo.as_deref().unwrap_or("")) }
                    dt { "TLS" } dd { (m.tls.as_deref().unwrap_or("none")) }
                    dt { "MAIL FROM" } dd.addr { (m.mail_from.as_deref().unwrap_or("")) }
                    dt { "RCPT TO" } dd.addr { (m.recipients.join(", ")) }
                    dt { "From" } dd.addr { (m.from.as_deref().unwrap_or("")) }
                    dt { "Message-ID" } dd { (m.message_id.as_deref().unwrap_or("")) }
                    dt { "Queue id" } dd { (m.queue_id.as_deref().unwrap_or("")) }
                    dt { "Size" } dd { (m.size) " bytes" }
                    @if let Some(d) = &m.downstream_reply { dt { "Downstream" } dd { (d) } }
                }
            }
            (auth_section(m, &analysis))
            (trace_section(m, &analysis))
            @if let Some(l) = logs { (log_section(l)) }
            @if let Some(q) = held { (content_sections(q)) }
            @if !history.is_empty() {
                section.history {
                    h2 { "What people did" }
                    ul { @for a in history { li { (format_time(a.at)) " UTC · " (a.actor) " · " (a.action) @if let Some(d) = &a.detail { " · " (d) } } } }
                }
            }
        },
    )
}

fn quarantine_panel(
    session: &Session,
    m: &MessageRecord,
    q: &QuarantineEntry,
    may_act: bool,
) -> Markup {
    html! {
        section.quarantine {
            h2 { "Quarantine: " span.status { (status_words(q.status)) } }
            @if let (Some(actor), Some(at)) = (&q.actor, q.acted_at) {
                p { "By " (actor) " at " (format_time(at)) " UTC" @if let Some(r) = &q.result { ": " (r) } }
            }
            @if q.status == QuarantineStatus::Held && may_act {
                div.actions {
                    form method="post" action={ "/message/" (enc(&m.id)) "/release" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button.release type="submit" { "Release to the recipients" }
                    }
                    form.allow method="post" action={ "/message/" (enc(&m.id)) "/release" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label { "Allow the sender " (m.from.as_deref().unwrap_or("")) " for "
                            select name="allow" {
                                option value="recipient" { "this recipient" }
                                @if session.role != Role::Recipient { option value="domain" { "the recipient's domain" } }
                                @if session.role == Role::Administrator { option value="everyone" { "everyone" } }
                            }
                        }
                        button.release-allow type="submit" { "Release and allow" }
                    }
                    form method="post" action={ "/message/" (enc(&m.id)) "/delete" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button.delete type="submit" { "Delete" }
                    }
                }
            }
            form method="post" action={ "/message/" (enc(&m.id)) "/false-positive" } {
                input type="hidden" name="csrf" value=(session.csrf);
                button.false-positive type="submit" { "Report as a false positive" }
            }
            @if !q.message.raw.is_empty() {
                p {
                    a.download href={ "/message/" (enc(&m.id)) "/eml" } download { "Download the message (.eml)" }
                    @if session.role != Role::Recipient {
                        " · " a.arf href={ "/message/" (enc(&m.id)) "/abuse-report" } { "Abuse report (ARF)" }
                    }
                }
            }
        }
    }
}

fn auth_section(m: &MessageRecord, a: &Value) -> Markup {
    let auth = a.get("auth");
    html! {
        section.auth {
            h2 { "Authentication" }
            @match auth {
                None => p { (m.auth_summary.as_deref().unwrap_or("Not checked: the message was refused before its content.")) }
                Some(auth) => table {
                    tr { th { "SPF" } td { (result_word(s(auth, &["spf", "result"]))) } td {
                        (s(auth, &["spf", "domain"]).unwrap_or(""))
                        @if let Some(mech) = s(auth, &["spf", "mechanism"]) { " · " (mech) }
                        @if let Some(x) = s(auth, &["spf", "explanation"]) { " · the domain says: " (x) }
                    } }
                    tr { th { "SPF (HELO)" } td { (result_word(s(auth, &["spf_helo", "result"]))) } td { (s(auth, &["spf_helo", "domain"]).unwrap_or("")) } }
                    @let dkim = auth.get("dkim").and_then(Value::as_array).cloned().unwrap_or_default();
                    @if dkim.is_empty() { tr { th { "DKIM" } td { (result_word(None)) } td { "no signature" } } }
                    @for d in &dkim {
                        tr { th { "DKIM" } td { (result_word(s(d, &["result"]))) } td {
                            "d=" (s(d, &["domain"]).unwrap_or("?")) " s=" (s(d, &["selector"]).unwrap_or("?"))
                            @if let Some(r) = s(d, &["reason"]) { " · " (r) }
                        } }
                    }
                    tr { th { "DMARC" } td { (result_word(s(auth, &["dmarc", "result"]))) } td {
                        (s(auth, &["dmarc", "domain"]).unwrap_or(""))
                        @if let Some(p) = s(auth, &["dmarc", "policy"]) { " · policy " (p) }
                        @if let Some(r) = s(auth, &["dmarc", "reason"]) { " · " (r) }
                    } }
                    tr { th { "ARC" } td { (result_word(s(auth, &["arc", "result"]))) } td { (s(auth, &["arc", "reason"]).unwrap_or("")) } }
                }
            }
        }
    }
}

fn trace_section(m: &MessageRecord, a: &Value) -> Markup {
    let hops = a
        .pointer("/trace/hops")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let anomalies = a
        .pointer("/trace/anomalies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let origin_hop = a.pointer("/trace/origin/hop").and_then(Value::as_u64);
    html! {
        section.trace {
            h2 { "Hop trace" }
            @if hops.is_empty() { p { (m.trace_summary.as_deref().unwrap_or("No Received header.")) } }
            @if let Some(ip) = a.pointer("/trace/origin/ip").and_then(Value::as_str) {
                p { "Origin: " strong { (ip) }
                    @if let Some(r) = s(a, &["trace", "origin", "rdns"]) { " (" (r) ")" }
                    @if let Some(h) = s(a, &["trace", "origin", "helo"]) { ", HELO " (h) }
                }
            }
            ol.timeline {
                // Oldest first: the way the message travelled.
                @for h in hops.iter().rev() {
                    @let trusted = h.get("trusted").and_then(Value::as_bool).unwrap_or(false);
                    @let idx = h.get("index").and_then(Value::as_u64);
                    li class=(if trusted { "hop trusted" } else { "hop" }) {
                        span.when { (s(h, &["date"]).unwrap_or("no date")) }
                        @if let Some(d) = h.get("delay_secs").and_then(Value::as_i64) { span.delay { " +" (d) " s" } }
                        " from " strong { (s(h, &["from_rdns"]).or(s(h, &["from_helo"])).unwrap_or("?")) }
                        @if let Some(ip) = s(h, &["from_ip"]) { " [" (ip) "]" }
                        " by " (s(h, &["by"]).unwrap_or("?"))
                        @if let Some(w) = s(h, &["with"]) { " with " (w) }
                        @if let Some(t) = s(h, &["tls"]) { " · " (t) }
                        @if trusted { " · " em { "inside the trust boundary" } }
                        @if idx.is_some() && idx == origin_hop { " · " strong { "origin" } }
                        details { summary { "as written" } code { (s(h, &["raw"]).unwrap_or("")) } }
                    }
                }
            }
            @if !anomalies.is_empty() {
                h3 { "Anomalies" }
                ul { @for x in &anomalies { li { code { (s(x, &["code"]).unwrap_or("?")) } ": " (s(x, &["detail"]).unwrap_or("")) } } }
            }
        }
    }
}

/// The headers as written and a text-only preview. The HTML of a message is never rendered:
/// mail-parser turns it into text, shown in a `pre` as escaped text.
fn content_sections(q: &QuarantineEntry) -> Markup {
    let raw = &q.message.raw;
    if raw.is_empty() {
        return html! {};
    }
    let end = memchr_crlf2(raw).unwrap_or(raw.len());
    let head_end = end.min(HEADERS_MAX_BYTES);
    let headers = String::from_utf8_lossy(&raw[..head_end]);
    let parsed = mail_parser::MessageParser::default().parse(raw);
    let mut preview = parsed
        .as_ref()
        .and_then(|p| p.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default();
    let cut = preview.chars().count() > PREVIEW_MAX_CHARS;
    if cut {
        preview = preview.chars().take(PREVIEW_MAX_CHARS).collect();
    }
    let attachments: Vec<String> = parsed
        .as_ref()
        .map(|p| {
            p.attachments()
                .map(|a| a.attachment_name().unwrap_or("(unnamed)").to_string())
                .collect()
        })
        .unwrap_or_default();
    html! {
        section.preview {
            h2 { "Text preview" }
            p.muted { "Text only: HTML is shown as its text, nothing is loaded or run." }
            pre.body { (preview) }
            @if cut { p.muted { "(cut at " (PREVIEW_MAX_CHARS) " characters; the whole message is in the download)" } }
            @if !attachments.is_empty() {
                p { "Attachments (not opened): " @for (i, a) in attachments.iter().enumerate() { @if i > 0 { ", " } code { (a) } } }
            }
        }
        section.headers {
            h2 { "Headers" }
            pre.headers { (headers) }
        }
    }
}

/// The end of the header block (the first empty line), CRLF or bare LF.
fn memchr_crlf2(raw: &[u8]) -> Option<usize> {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
}

pub fn actions(session: &Session, list: &[ConsoleAction]) -> Markup {
    page(
        Some(session),
        "Actions",
        html! {
            p.muted { "Everything done through the console, newest first (the last 200)." }
            table.results {
                thead { tr { th { "Time (UTC)" } th { "Who" } th { "Action" } th { "On" } th { "From" } th { "Detail" } } }
                tbody {
                    @for a in list {
                        tr {
                            td.time { (format_time(a.at)) }
                            td { (a.actor) }
                            td { (a.action) }
                            td { (a.target.as_deref().unwrap_or("")) }
                            td { (a.client.as_deref().unwrap_or("")) }
                            td { (a.detail.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        },
    )
}

pub fn dmarc(
    session: &Session,
    domain: &str,
    days: u32,
    picture: Option<&unspoof_reports::sources::Picture>,
) -> Markup {
    page(
        Some(session),
        "DMARC sources",
        html! {
            p.muted { "Who sends mail as a domain, from the aggregate reports receivers sent us (as " code { "unspoof dmarc sources" } ", without reverse names)." }
            form.search method="get" action="/dmarc" {
                label { "Domain"
                    @if session.role == Role::DomainAdministrator {
                        select name="domain" {
                            @for d in &session.scope { option value=(d) selected[d == domain] { (d) } }
                        }
                    } @else {
                        input type="text" name="domain" value=(domain) placeholder="example.org" required;
                    }
                }
                label { "Days" input type="number" name="days" min="1" max="90" value=(days); }
                button type="submit" { "Show" }
            }
            @if let Some(p) = picture {
                @let t = &p.totals;
                section.numbers {
                    div { strong { (t.messages) } " messages in " (p.reports) " reports" }
                    div { strong { (t.percent(t.dmarc_pass)) "%" } " pass DMARC" }
                    div { strong { (t.ours) } " ours" }
                    div { strong { (t.forwarded) } " forwarded" }
                    div { strong { (t.misaligned) } " misaligned" }
                    div { strong { (t.spoofing) } " spoofing" }
                }
                section {
                    h2 { "Sources" }
                    @if p.sources.is_empty() { p.muted { "No report covers this domain in this period." } }
                    @else {
                        table.results {
                            thead { tr { th { "Address" } th { "Organisation" } th { "Class" } th { "Messages" } th { "DMARC pass" } th { "DKIM domains" } th { "Sent as" } th { "Reported by" } } }
                            tbody {
                                @for s in &p.sources {
                                    tr {
                                        td { @if let Some(ip) = s.ip { a href={ "/search?client=" (enc(&ip.to_string())) } { (ip) } } }
                                        td { (s.organisation.as_deref().unwrap_or("")) }
                                        td { (s.class.words()) }
                                        td { (s.tally.messages) }
                                        td { (s.tally.percent(s.tally.dmarc_pass)) "%" }
                                        td.addr { @for (i, d) in s.dkim.iter().enumerate() { @if i > 0 { ", " } (d.domain) " (" (d.pass) " pass, " (d.fail) " fail)" } }
                                        td.addr { (s.header_from.join(", ")) }
                                        td.addr { (s.reporters.join(", ")) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if !p.subdomains.is_empty() {
                    section {
                        h2 { "Domains sent as" }
                        table.results {
                            thead { tr { th { "Domain" } th { "Messages" } th { "DMARC pass" } th { "" } } }
                            tbody {
                                @for d in &p.subdomains {
                                    tr { td { (d.name) } td { (d.tally.messages) } td { (d.tally.percent(d.tally.dmarc_pass)) "%" } td { @if d.only_forged { strong { "only forgers use it" } } } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn allow_list(session: &Session, list: &[unspoof_store::console::AllowedSender]) -> Markup {
    use unspoof_store::console::AllowScope;
    page(
        Some(session),
        "Allow list",
        html! {
            p.muted { "Mail from these senders (the From address, or a whole domain written @domain) is delivered, not quarantined or tagged, for the recipients in scope. A reject stays a reject. Added by \"Release and allow\"." }
            @if list.is_empty() { p { "No sender is allowed." } }
            @else {
                table.results {
                    thead { tr { th { "Sender" } th { "For" } th { "Added (UTC)" } th { "By" } th { "From message" } th {} } }
                    tbody {
                        @for a in list {
                            tr {
                                td.addr { (a.sender) }
                                td.addr { @match &a.scope { AllowScope::Recipient(r) => (r), AllowScope::Domain(d) => { "@" (d) }, AllowScope::Everyone => "everyone" } }
                                td.time { (format_time(a.created_at)) }
                                td { (a.created_by) }
                                td { @if let Some(o) = &a.origin { a href={ "/message/" (enc(o)) } { "the message" } } }
                                td { form method="post" action={ "/allow/" (enc(&a.id)) "/remove" } {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" { "Remove" }
                                } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The MTA's log lines the message joins (`unspoof trace`).
fn log_section(l: &Result<unspoof_forensics::join::LogTrace, String>) -> Markup {
    use unspoof_forensics::join::HopCheck;
    html! {
        section.mta-log {
            h2 { "The mail log" }
            @match l {
                Err(e) => p.error { "The mail log could not be read: " (e) }
                Ok(t) => {
                    @if t.lines.is_empty() {
                        p { "No line of the configured mail logs belongs to this message." }
                    } @else {
                        p {
                            "Queue ids: " @for q in &t.queue_ids { code { (q) } " " }
                            @match &t.hop_check {
                                HopCheck::Confirmed { ip } => { " · the log confirms the client " code { (ip) } }
                                HopCheck::Contradicted { logged_ip, detail, .. } => { " · " strong { "the log contradicts the Received header" } ": it logged " code { (logged_ip) } " (" (detail) ")" }
                                HopCheck::Unknown { detail } => { " · " (detail) }
                            }
                        }
                        @if !t.deliveries.is_empty() {
                            ul { @for d in &t.deliveries { li { (d.recipient) " → " (d.relay.as_deref().unwrap_or("")) " " (d.status) } } }
                        }
                        pre.log { @for line in &t.lines {
                            (line.time.map(format_time).unwrap_or_default()) " " (line.host) " " (line.program) ": " (line.text) "\n"
                        } }
                    }
                }
            }
        }
    }
}

pub fn abuse_report(session: &Session, m: &MessageRecord, to: &[String], report: &str) -> Markup {
    page(
        Some(session),
        "Abuse report",
        html! {
            p { "An ARF abuse report (RFC 5965) for " a href={ "/message/" (enc(&m.id)) } { "this message" } ", addressed to " (to.join(", ")) ". The console does not send it: download it and send it from your mail, or run " code { "unspoof report abuse --send" } "." }
            p { a.download href={ "/message/" (enc(&m.id)) "/abuse-report?download=1" } download { "Download the report (.eml)" } }
            pre.report { (report) }
        },
    )
}

/// A digest link's page: the message in brief and the one button (the link alone releases
/// nothing).
pub fn digest_release(
    m: &MessageRecord,
    record: &str,
    rcpt: &str,
    expires: i64,
    sig: &str,
    done: Option<&str>,
) -> Markup {
    page(
        None,
        "Release a held message",
        html! {
            dl {
                dt { "Received" } dd { (format_time(m.received_at)) " UTC" }
                dt { "From" } dd.addr { (m.from.as_deref().or(m.mail_from.as_deref()).unwrap_or("")) }
                dt { "To" } dd.addr { (rcpt) }
                dt { "Subject" } dd { (m.subject.as_deref().unwrap_or("(no subject)")) }
                dt { "Why it was held" } dd.codes { @for c in &m.reasons { code { (c) } " " } }
            }
            @if let Some(d) = done {
                p.done role="status" { (d) }
            } @else {
                form method="post" action="/digest/release" {
                    input type="hidden" name="m" value=(record);
                    input type="hidden" name="r" value=(rcpt);
                    input type="hidden" name="e" value=(expires);
                    input type="hidden" name="s" value=(sig);
                    button.release type="submit" { "Release it to me" }
                }
            }
        },
    )
}

pub fn audit(session: &Session, domain: &str, report: Option<&unspoof_audit::Report>) -> Markup {
    page(
        Some(session),
        "Domain audit",
        html! {
            form.search method="get" action="/audit" {
                label { "Domain" input type="text" name="domain" value=(domain) placeholder="site.example"; }
                button type="submit" { "Audit" }
            }
            p.muted { "How spoofable the domain is (SPF, DKIM, DMARC, MX and transport), as " code { "unspoof audit" } " reports it. Each audit asks the DNS anew." }
            @if let Some(r) = report {
                h2 { "Grade " span.grade { (r.grade.letter) } " (" (r.grade.score) " of 100) for " (r.domain) }
                @if r.findings.is_empty() { p { "No finding." } }
                table.results {
                    thead { tr { th { "Severity" } th { "Finding" } th { "What" } th { "Rule" } th { "Publish instead" } } }
                    tbody {
                        @for f in &r.findings {
                            tr {
                                td { span class={ "sev " (f.severity.word()) } { (f.severity.word()) } }
                                td { code { (f.code) } }
                                td { (f.message) @if !f.evidence.is_empty() { ul.evidence { @for e in &f.evidence { li { code { (e) } } } } } }
                                td { (f.rule) }
                                td { @for x in &f.fix { div { code { (x.action) " " (x.name) " " (x.rtype) " " (x.value) } } } }
                            }
                        }
                    }
                }
                p.muted { (r.dns.queries) " DNS queries through " (r.dns.view) "." }
            }
        },
    )
}
