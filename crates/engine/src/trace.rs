//! The hop trace: `Received` headers in order, where our trust in them ends, the origin of the
//! message, and what in the trace (and in `Date` / `Message-ID`) looks wrong.
//!
//! [`build_trace`] takes the header fields as they stand on the wire ([`Headers`]), the SMTP
//! client address when the caller knows it, the [`TrustConfig`] and the time the message reached
//! us. It does no DNS: [`Origin::rdns`] is left for the engine to fill from a PTR lookup.
//!
//! # Hops
//!
//! Hop 0 is the topmost `Received` header (the newest, added last); higher indices are older.
//! At most [`MAX_RECEIVED`] headers are looked at. Each header is parsed with mail-parser's
//! Received parser plus a small scan of our own (see `trace/received.rs`) that only believes a
//! `from` or `by` clause outside comments and takes the date from after the last top-level `;`.
//! `from_helo` is the name the client gave (`(HELO x)`, `helo=x`, else the name after `from`),
//! `from_rdns` the name the receiver looked up (the domain in the comment, or Exim's name after
//! `from` when a separate `helo=` is given), `from_ip` the bracketed or commented address (or an
//! address literal after `from`). `delay_secs` is this hop's date minus the date of the hop below
//! it (the next older one), when both have a date.
//!
//! # Trust boundary
//!
//! Everybody can write `Received` headers; only those written by our own servers and by relays we
//! trust say anything true. The walk:
//!
//! 1. The first candidate origin is the envelope IP when given (the client that connected to us;
//!    the topmost header is then the one that client wrote, or our own if our MTA already
//!    prepended one). Without an envelope IP it is the from-IP of the topmost header, which our
//!    own server wrote: that header is `trusted`.
//! 2. While the candidate IP is in `internal_networks` or `trusted_relays` and there is a next
//!    (older) header, that header was written by the candidate, a trusted host: it is marked
//!    `trusted` and its from-IP becomes the new candidate.
//! 3. The first candidate outside both lists is the [`Origin`], with the HELO recorded next to
//!    that IP. Everything below the boundary is `trusted: false`: claims the sender could forge.
//!
//! Refinements:
//!
//! * A trusted header with neither a top-level `from` nor `by` clause (qmail's `(qmail 123
//!   invoked from network)`, Yahoo's `(EGP: ...)`) is a note its writer added next to its real
//!   trace line: the walk passes through it to the next header, written by the same host. qmail's
//!   `invoked by uid N` is not passed through (that is a local program submitting).
//!   A content scanner's line (`from user@example.com by host with qmail-scanner-1.10 ...`) is
//!   such a note too.
//! * A trusted header that names no client IP ends the walk. When it records a local submission
//!   (no top-level `from` clause, `with local`, qmail `invoked by uid`) the message started at the
//!   trusted host that wrote it, and the origin is that host's IP (the current candidate, an
//!   internal or trusted IP). Otherwise (a `from` clause without an address, or an unparseable
//!   header) the client is unknown and the origin is None: we do not guess. At the top without
//!   an envelope IP there is no candidate yet, so a client-less topmost header (Gmail's internal
//!   `Received: by 2002:a67:... with SMTP id ...`) gives no origin: pass the envelope IP.
//! * With an envelope IP, if the topmost header's from-IP equals it, that header's HELO is used as
//!   the origin's HELO. The header is not marked trusted for that: a client can write that line.
//! * Loopback is not implicitly trusted: put `127.0.0.0/8` and `::1/128` in `internal_networks`
//!   when local content filters reinject mail (amavis, fetchmail).
//! * IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are compared as the IPv4 address.
//!
//! With no `Received` headers and no envelope IP the origin is None.
//!
//! # Anomalies
//!
//! Stable codes; `hop` names the hop concerned where there is one.
//!
//! | code | when |
//! | --- | --- |
//! | `trace.time_backwards` | a hop is dated more than [`CLOCK_SKEW_SECS`] later than the nearest newer hop that has a date (mail travelled back in time). `hop` is the older hop. |
//! | `trace.future_date` | a hop is dated more than [`CLOCK_SKEW_SECS`] after the reference time: the caller's `reference_time` (when the message reached us), else the date of the topmost header; with neither, not checked. Can occur together with `trace.time_backwards` for the same hop. |
//! | `trace.chain_break` | a hop's `from` (HELO, rDNS name or IP) clearly does not match the `by` of the hop below it, i.e. the older host says it handed the message to somebody else. Names match case-insensitively when equal, when they share a registrable domain (Public Suffix List) or its first label (`t-online.de` / `t-online.com`), when their first labels are equal and not a role word like `mail` (one machine under two domains), or when both are in one provider's group of domains (Microsoft, Google, Yahoo, Mailgun). An IP `by` matches the from-IP; two different IPs only count when both are public and of one family. No finding when either side is missing, is a single-label, `localhost`, `*.local` or `unknown` name or a mailbox, or when the newer hop's client is loopback. On the sample corpora: 2 of 300 ham, 17 of 150 spam messages. |
//! | `trace.private_origin` | the origin IP is private, loopback, link-local, shared (CGNAT), reserved, multicast or documentation space although it is supposed to be the Internet origin: it is in neither `internal_networks` nor `trusted_relays`. |
//! | `trace.unparseable` | a `Received` header in which nothing at all could be recognised (`parsed: false`). |
//! | `trace.too_many_hops` | more than [`MAX_RECEIVED`] `Received` headers; only the topmost [`MAX_RECEIVED`] are in `hops` (a mail loop, or an attempt to make us work). |
//! | `header.message_id_missing` | no `Message-ID` field, or an empty one. |
//! | `header.message_id_unrelated` | the domain part of the Message-ID shares no registrable domain with the From domain. Registrable domains come from the Public Suffix List (`crate::domain::registrable`), falling back to the last two labels when the list has no answer (an address literal is compared as is). Weak on its own: mail sent through ESPs or hosted mail (Gmail, Outlook) often carries the provider's domain. Not checked when the From domain or the Message-ID domain part is missing. |
//! | `header.date_missing` | no `Date` field. |
//! | `header.date_unparseable` | the first `Date` field is not a valid RFC 5322 date. |
//! | `header.date_skewed` | the `Date` is more than [`DATE_SKEW_SECS`] (24 h) before or after the reference time (as for `trace.future_date`). |
//!
//! # Robustness
//!
//! Arbitrary bytes never panic here: no unchecked indexing or unwrap on message data, dates are
//! only used after mail-parser's validity check (years 1900-3000), timestamp arithmetic saturates,
//! and the mail-parser calls are additionally wrapped in `catch_unwind` (defence in depth against
//! a bug in the dependency; it only helps in builds with `panic = "unwind"`). Work is linear in the
//! header size and capped at [`MAX_RECEIVED`] hops.

mod received;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mail_parser::{HeaderValue, parsers::MessageStream};
use serde::{Deserialize, Serialize};

use crate::message::Headers;

/// At most this many `Received` headers (from the top) are traced.
pub const MAX_RECEIVED: usize = 100;

/// Clock skew tolerated between hops, and between a hop and the reference time (5 minutes).
pub const CLOCK_SKEW_SECS: i64 = 5 * 60;

/// How far the `Date` header may be from the reference time, either way (24 hours).
pub const DATE_SKEW_SECS: i64 = 24 * 60 * 60;

/// Which networks are ours and which relays we believe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrustConfig {
    /// Our own networks (MTAs, content filters, internal relays). Add loopback if filters
    /// reinject through it.
    pub internal_networks: Vec<ipnet::IpNet>,
    /// Outside relays whose Received headers we believe (a smarthost, an inbound filtering
    /// service, a mailing list server we run elsewhere).
    pub trusted_relays: Vec<ipnet::IpNet>,
}

impl TrustConfig {
    /// The IP is in `internal_networks`.
    pub fn is_internal(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.internal_networks.iter().any(|n| n.contains(&ip))
    }

    /// The IP is in `internal_networks` or `trusted_relays`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.is_internal(ip) || self.trusted_relays.iter().any(|n| n.contains(&ip))
    }
}

/// The trace of one message.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trace {
    pub hops: Vec<Hop>,
    pub origin: Option<Origin>,
    pub anomalies: Vec<Anomaly>,
    /// The reference time the date checks used (unix seconds): the caller's, else the date of
    /// the topmost Received header; None when neither was available.
    pub reference_time: Option<i64>,
}

/// One `Received` header.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hop {
    /// 0 = topmost Received header (the newest).
    pub index: usize,
    /// Unfolded header value.
    pub raw: String,
    /// False when nothing in the line could be recognised.
    pub parsed: bool,
    pub from_helo: Option<String>,
    pub from_rdns: Option<String>,
    pub from_ip: Option<IpAddr>,
    pub by: Option<String>,
    pub via: Option<String>,
    pub with: Option<String>,
    pub id: Option<String>,
    pub for_addr: Option<String>,
    /// RFC 3339, in the offset the header was written with.
    pub date: Option<String>,
    /// Unix seconds.
    pub timestamp: Option<i64>,
    /// e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384", or "ESMTPS" when only the `with` keyword says so.
    pub tls: Option<String>,
    /// This hop's date minus the date of the hop below it (older).
    pub delay_secs: Option<i64>,
    /// Above or at the trust boundary: written by us or a trusted relay.
    pub trusted: bool,
}

/// Where the message entered the part of the trace we believe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub ip: IpAddr,
    pub helo: Option<String>,
    /// Left None by [`build_trace`]; the engine fills it from DNS (PTR).
    pub rdns: Option<String>,
    /// Index of the hop whose from-part named the origin; None when it is the envelope IP.
    pub hop: Option<usize>,
    pub source: OriginSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginSource {
    /// The SMTP client that connected to us.
    Envelope,
    /// A from-IP in a trusted Received header.
    Received,
}

/// Something in the trace or the date/id headers that looks wrong. Codes are listed in the
/// module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub code: &'static str,
    pub hop: Option<usize>,
    pub detail: String,
}

pub const TIME_BACKWARDS: &str = "trace.time_backwards";
pub const FUTURE_DATE: &str = "trace.future_date";
pub const CHAIN_BREAK: &str = "trace.chain_break";
pub const PRIVATE_ORIGIN: &str = "trace.private_origin";
pub const UNPARSEABLE: &str = "trace.unparseable";
pub const TOO_MANY_HOPS: &str = "trace.too_many_hops";
pub const MESSAGE_ID_MISSING: &str = "header.message_id_missing";
pub const MESSAGE_ID_UNRELATED: &str = "header.message_id_unrelated";
pub const DATE_MISSING: &str = "header.date_missing";
pub const DATE_UNPARSEABLE: &str = "header.date_unparseable";
pub const DATE_SKEWED: &str = "header.date_skewed";

/// Runs `f`, turning a panic inside a dependency into None.
pub(crate) fn guard<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// Builds the trace. See the module documentation for the rules.
pub fn build_trace(
    headers: &Headers<'_>,
    envelope_ip: Option<IpAddr>,
    trust: &TrustConfig,
    reference_time: Option<i64>,
) -> Trace {
    let mut anomalies = Vec::new();
    let mut hops = Vec::new();
    // Parsed extras that are not part of the public Hop.
    let mut extra = Vec::new();
    let mut total = 0usize;
    for field in headers.all("Received") {
        total += 1;
        if hops.len() >= MAX_RECEIVED {
            continue;
        }
        let raw = field.value_unfolded();
        let mut p = received::parse(field.value, &raw);
        // The texts move into the hop; `walk_trust` reads only the flags left in `p`.
        hops.push(Hop {
            index: hops.len(),
            raw,
            parsed: p.parsed,
            from_helo: p.from_helo.take(),
            from_rdns: p.from_rdns.take(),
            from_ip: p.from_ip,
            by: p.by.take(),
            via: p.via.take(),
            with: p.with.take(),
            id: p.id.take(),
            for_addr: p.for_addr.take(),
            date: p.date.take(),
            timestamp: p.timestamp,
            tls: p.tls.take(),
            delay_secs: None,
            trusted: false,
        });
        extra.push(p);
    }
    if total > MAX_RECEIVED {
        anomalies.push(Anomaly {
            code: TOO_MANY_HOPS,
            hop: None,
            detail: format!("{total} Received headers; only the topmost {MAX_RECEIVED} traced"),
        });
    }
    for i in 0..hops.len() {
        let older = hops.get(i + 1).and_then(|h| h.timestamp);
        if let (Some(t), Some(o)) = (hops[i].timestamp, older) {
            hops[i].delay_secs = Some(t.saturating_sub(o));
        }
    }

    for h in &hops {
        if !h.parsed {
            anomalies.push(Anomaly {
                code: UNPARSEABLE,
                hop: Some(h.index),
                detail: format!("Received header {} could not be parsed", h.index),
            });
        }
    }

    let origin = walk_trust(&mut hops, &extra, envelope_ip, trust);
    if let Some(o) = &origin
        && !trust.is_trusted(o.ip)
        && let Some(kind) = non_public_kind(o.ip)
    {
        anomalies.push(Anomaly {
            code: PRIVATE_ORIGIN,
            hop: o.hop,
            detail: format!(
                "origin {} ({}) is {kind} address space, in neither internal_networks nor trusted_relays",
                o.ip,
                match o.source {
                    OriginSource::Envelope => "envelope",
                    OriginSource::Received => "Received",
                }
            ),
        });
    }

    check_times(&hops, &mut anomalies);
    let reference = reference_time.or_else(|| hops.first().and_then(|h| h.timestamp));
    if let Some(r) = reference {
        for h in &hops {
            if let Some(t) = h.timestamp
                && t > r.saturating_add(CLOCK_SKEW_SECS)
            {
                anomalies.push(Anomaly {
                    code: FUTURE_DATE,
                    hop: Some(h.index),
                    detail: format!(
                        "hop {} is dated {}, {} s after the reference time",
                        h.index,
                        h.date.as_deref().unwrap_or("?"),
                        t.saturating_sub(r)
                    ),
                });
            }
        }
    }
    check_chain(&hops, &mut anomalies);
    check_date_header(headers, reference, &mut anomalies);
    check_message_id(headers, &mut anomalies);

    Trace {
        hops,
        origin,
        anomalies,
        reference_time: reference,
    }
}

/// The trust-boundary walk (module documentation, "Trust boundary"). Marks hops trusted and
/// returns the origin. Each step consumes one hop, so it ends within `hops.len()` steps.
fn walk_trust(
    hops: &mut [Hop],
    extra: &[received::ParsedReceived],
    envelope_ip: Option<IpAddr>,
    trust: &TrustConfig,
) -> Option<Origin> {
    let n = hops.len();
    // The current candidate: its IP and the hop that named it (None = envelope).
    let mut cand: Option<(IpAddr, Option<usize>)> = envelope_ip.map(|ip| (ip, None));
    // `i` is the next header to look at; `writer_trusted` says it was written by a trusted host.
    let mut i = 0;
    let mut writer_trusted = envelope_ip.is_none() && n > 0;
    loop {
        if !writer_trusted {
            match cand {
                Some((ip, _)) if i < n && trust.is_trusted(ip) => writer_trusted = true,
                _ => break,
            }
        }
        let (Some(hop), Some(p)) = (hops.get_mut(i), extra.get(i)) else {
            break;
        };
        hop.trusted = true;
        let is_note = p.parsed
            && ((!p.has_from_clause && !p.has_by_clause && !p.invoked_by_uid)
                || (hop.from_ip.is_none() && p.content_scanner));
        if is_note && i + 1 < n {
            i += 1;
            continue;
        }
        match hop.from_ip {
            Some(ip) => {
                cand = Some((ip, Some(i)));
                i += 1;
                writer_trusted = false;
            }
            None => {
                let local =
                    p.parsed && (!p.has_from_clause || p.local_protocol || p.invoked_by_uid);
                if !local {
                    cand = None;
                }
                break;
            }
        }
    }
    let (ip, hop) = cand?;
    let (helo, source) = match hop {
        Some(h) => (
            hops.get(h).and_then(|x| x.from_helo.clone()),
            OriginSource::Received,
        ),
        None => {
            let top = hops
                .first()
                .filter(|h| h.from_ip.map(canonical) == Some(canonical(ip)));
            (
                top.and_then(|h| h.from_helo.clone()),
                OriginSource::Envelope,
            )
        }
    };
    Some(Origin {
        ip,
        helo,
        rdns: None,
        hop,
        source,
    })
}

fn check_times(hops: &[Hop], anomalies: &mut Vec<Anomaly>) {
    // The nearest newer hop with a date.
    let mut newer: Option<(usize, i64)> = None;
    for h in hops {
        let Some(t) = h.timestamp else { continue };
        if let Some((ni, nt)) = newer
            && t > nt.saturating_add(CLOCK_SKEW_SECS)
        {
            anomalies.push(Anomaly {
                code: TIME_BACKWARDS,
                hop: Some(h.index),
                detail: format!(
                    "hop {} ({}) is {} s later than the newer hop {}",
                    h.index,
                    h.date.as_deref().unwrap_or("?"),
                    t.saturating_sub(nt),
                    ni
                ),
            });
        }
        newer = Some((h.index, t));
    }
}

fn check_chain(hops: &[Hop], anomalies: &mut Vec<Anomaly>) {
    for pair in hops.windows(2) {
        let [newer, older] = pair else { continue };
        let Some(by) = older.by.as_deref() else {
            continue;
        };
        if chain_matches(newer, by) == Some(false) {
            let from = [
                newer.from_helo.clone(),
                newer.from_rdns.clone(),
                newer.from_ip.map(|ip| ip.to_string()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" / ");
            anomalies.push(Anomaly {
                code: CHAIN_BREAK,
                hop: Some(newer.index),
                detail: format!(
                    "hop {} got the message from {from}, but hop {} says it was received by {by}",
                    newer.index, older.index
                ),
            });
        }
    }
}

/// A name that identifies nothing across hosts.
fn is_vague_name(n: &str) -> bool {
    n.is_empty()
        || !n.contains('.')
        || n == "unknown"
        || n.starts_with("localhost")
        || n.ends_with(".localdomain")
        || n.ends_with(".local")
}

/// Some(true) when `newer`'s from-part matches the older hop's `by`, Some(false) on a clear
/// mismatch, None when the two cannot be compared.
fn chain_matches(newer: &Hop, by: &str) -> Option<bool> {
    // A hand-off over loopback happens inside one machine, which may call itself anything.
    if newer.from_ip.is_some_and(|ip| canonical(ip).is_loopback()) {
        return None;
    }
    if let Some(by_ip) = received::parse_ip_literal(by) {
        let by_ip = canonical(by_ip);
        let ips: Vec<IpAddr> = newer
            .from_ip
            .into_iter()
            .chain(
                newer
                    .from_helo
                    .as_deref()
                    .and_then(received::parse_ip_literal),
            )
            .map(canonical)
            .collect();
        if ips.contains(&by_ip) {
            return Some(true);
        }
        // Only an address of the same family is comparable (hosts have v4 and v6 addresses),
        // and a host's inside address differs from its outside one: only flag public vs public.
        let comparable = ips.iter().any(|ip| {
            ip.is_ipv4() == by_ip.is_ipv4()
                && non_public_kind(*ip).is_none()
                && non_public_kind(by_ip).is_none()
        });
        return if comparable { Some(false) } else { None };
    }
    let by = received::norm_host(by);
    if is_vague_name(&by) {
        return None;
    }
    let mut names: Vec<String> = [newer.from_helo.as_deref(), newer.from_rdns.as_deref()]
        .into_iter()
        .flatten()
        .map(received::norm_host)
        .filter(|n| {
            !is_vague_name(n) && !n.contains('@') && received::parse_ip_literal(n).is_none()
        })
        .collect();
    // The HELO and the reverse name are often the same name: compare it once.
    names.dedup();
    if names.is_empty() {
        return None;
    }
    let by_org = org_domain(&by);
    let by_host = distinctive_host_label(&by);
    let by_label = org_label(&by_org);
    Some(names.iter().any(|n| {
        if *n == by {
            return true;
        }
        // The registrable domain (a PSL look-up) once per name, for the three rules that use it.
        let n_org = org_domain(n);
        n_org == by_org
            || (by_host.is_some() && distinctive_host_label(n) == by_host)
            || (by_label.is_some() && org_label(&n_org) == by_label)
            || same_provider(&n_org, &by_org)
    }))
}

/// Registrable domains that one provider uses for the hosts of one mail system, where a hand-off
/// between them is routine (Microsoft's outbound protection hands mail to `*.exchangelabs.com`,
/// Google's to `*.google.com`). A stopgap until per-provider knowledge lives in policy.
const PROVIDER_GROUPS: &[&[&str]] = &[
    &[
        "outlook.com",
        "office365.com",
        "exchangelabs.com",
        "microsoft.com",
        "hotmail.com",
    ],
    &["google.com", "gmail.com", "googlemail.com"],
    &["yahoo.com", "yahoodns.net", "yahoo.net"],
    &["mailgun.net", "mailgun.org", "postgun.com"],
];

fn same_provider(a: &str, b: &str) -> bool {
    PROVIDER_GROUPS
        .iter()
        .any(|g| g.contains(&a) && g.contains(&b))
}

/// Role words that many unrelated organisations use as the first label of a host name.
const ROLE_LABELS: &[&str] = &[
    "email",
    "exchange",
    "gateway",
    "host",
    "inbound",
    "localhost",
    "mail",
    "mail-in",
    "mail-out",
    "mailer",
    "mailgw",
    "mailhost",
    "mailin",
    "mailout",
    "mailserver",
    "outbound",
    "post",
    "relay",
    "server",
    "smtp",
    "smtp-in",
    "smtp-out",
    "smtpin",
    "smtpout",
    "unknown",
    "web",
    "www",
];

/// The first label of a name when it can name one machine (at least 3 characters, not a role
/// word like `mail`), with at least two labels after it. Providers and corpora name one
/// machine under several domains (Microsoft: `am6p194ca0105.eurp194.prod.outlook.com` and
/// `am6p194ca0105.outlook.office365.com`), so an equal such label counts as a match.
fn distinctive_host_label(name: &str) -> Option<&str> {
    let (label, rest) = name.split_once('.')?;
    let distinctive = rest.contains('.') && label.len() >= 3 && !ROLE_LABELS.contains(&label);
    distinctive.then_some(label)
}

/// The registrable domain without its public suffix (`t-online` for `t-online.de`), so one
/// organisation under several top-level domains matches. `org` is [`org_domain`] of the name.
fn org_label(org: &str) -> Option<&str> {
    let label = org.split('.').next()?;
    (label.len() >= 3 && label != org).then_some(label)
}

fn check_date_header(headers: &Headers<'_>, reference: Option<i64>, anomalies: &mut Vec<Anomaly>) {
    let Some(field) = headers.first("Date") else {
        anomalies.push(Anomaly {
            code: DATE_MISSING,
            hop: None,
            detail: "no Date header".into(),
        });
        return;
    };
    let value = field.value_unfolded();
    let Some(t) = received::parse_timestamp(&value) else {
        anomalies.push(Anomaly {
            code: DATE_UNPARSEABLE,
            hop: None,
            detail: format!("Date header {:?} is not a valid date", truncate(&value, 80)),
        });
        return;
    };
    if let Some(r) = reference {
        let diff = t.saturating_sub(r);
        if diff.saturating_abs() > DATE_SKEW_SECS {
            anomalies.push(Anomaly {
                code: DATE_SKEWED,
                hop: None,
                detail: format!(
                    "Date header {:?} is {} h {} the reference time",
                    truncate(&value, 80),
                    diff.saturating_abs() / 3600,
                    if diff > 0 { "after" } else { "before" }
                ),
            });
        }
    }
}

fn check_message_id(headers: &Headers<'_>, anomalies: &mut Vec<Anomaly>) {
    let id = headers
        .first("Message-ID")
        .map(|f| f.value_unfolded())
        .filter(|v| !v.is_empty());
    let Some(id) = id else {
        anomalies.push(Anomaly {
            code: MESSAGE_ID_MISSING,
            hop: None,
            detail: "no Message-ID header".into(),
        });
        return;
    };
    let Some(from_domain) = from_domain(headers) else {
        return;
    };
    // The id between the first '<' and the following '>', else the whole value.
    let inner = match id.split_once('<') {
        Some((_, rest)) => rest.split('>').next().unwrap_or(rest),
        None => id.as_str(),
    };
    let Some((_, id_domain)) = inner.rsplit_once('@') else {
        return;
    };
    let id_domain = received::norm_host(id_domain);
    if id_domain.is_empty() {
        return;
    }
    let (a, b) = (org_domain(&id_domain), org_domain(&from_domain));
    if a != b {
        anomalies.push(Anomaly {
            code: MESSAGE_ID_UNRELATED,
            hop: None,
            detail: format!(
                "Message-ID domain {id_domain} ({a}) is unrelated to the From domain {from_domain} ({b})"
            ),
        });
    }
}

/// The domain of the first address in the first From field, lowercased.
fn from_domain(headers: &Headers<'_>) -> Option<String> {
    let field = headers.first("From")?;
    let mut buf = Vec::with_capacity(field.value.len() + 1);
    buf.extend_from_slice(field.value);
    buf.push(b'\n');
    let parsed = guard(|| match MessageStream::new(&buf).parse_address() {
        HeaderValue::Address(a) => a
            .first()
            .and_then(|a| a.address.as_deref())
            .map(str::to_string),
        _ => None,
    })
    .flatten();
    let addr = parsed.or_else(|| {
        // Fallback: the last word with an '@'.
        let v = field.value_unfolded();
        v.split(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == ',')
            .rfind(|w| w.contains('@'))
            .map(str::to_string)
    })?;
    let (_, domain) = addr.rsplit_once('@')?;
    let d = received::norm_host(domain);
    if d.is_empty() { None } else { Some(d) }
}

/// The registrable domain ([`crate::domain::registrable`], Public Suffix List); falls back to the
/// last two labels (a name that is itself a public suffix), and an address literal or single
/// label is returned as is.
fn org_domain(name: &str) -> String {
    let name = received::norm_host(name);
    if received::parse_ip_literal(&name).is_some() {
        return name;
    }
    if let Some(d) = crate::domain::registrable(&name) {
        return d;
    }
    let labels: Vec<&str> = name.rsplitn(3, '.').collect();
    match labels.as_slice() {
        [tld, sld, ..] => format!("{sld}.{tld}"),
        _ => name,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// What kind of non-Internet address space the IP is in, or None for a global address.
pub fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let kind = match o {
        [0, ..] => "unspecified/this-network",
        [10, ..] => "private",
        [100, b, ..] if (64..128).contains(&b) => "shared (CGNAT)",
        [127, ..] => "loopback",
        [169, 254, ..] => "link-local",
        [172, b, ..] if (16..32).contains(&b) => "private",
        [192, 0, 0, _] => "reserved (IETF protocol assignments)",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [192, 168, ..] => "private",
        [198, b, ..] if b == 18 || b == 19 => "reserved (benchmarking)",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    };
    Some(kind)
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let kind = if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "private (unique local)"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "reserved (site-local)"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || s[0] & 0xfff0 == 0x3ff0 {
        "documentation"
    } else if s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0 {
        "reserved (discard)"
    } else if s[0] == 0 {
        // ::/8 outside ::1, :: and ::ffff:0:0/96 (mapped, handled by canonical()).
        "reserved"
    } else {
        return None;
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Headers;

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn codes(t: &Trace) -> Vec<&'static str> {
        t.anomalies.iter().map(|a| a.code).collect()
    }

    const CHAIN: &str = "Received: from mx1.example.net (mx1.example.net [10.0.0.2])\r\n\tby mail.example.net (Postfix) with ESMTP id A1; Mon, 26 Oct 2020 14:43:30 +0000\r\n\
Received: from sender.example.org (sender.example.org [198.51.100.20])\r\n\tby mx1.example.net (Postfix) with ESMTPS id B2; Mon, 26 Oct 2020 14:43:28 +0000\r\n\
Received: from [192.168.1.5] (helo=laptop) by sender.example.org with esmtpa; Mon, 26 Oct 2020 14:43:20 +0000\r\n\
From: A <a@example.org>\r\nDate: Mon, 26 Oct 2020 14:43:19 +0000\r\nMessage-ID: <x1@sender.example.org>\r\n\r\nbody\r\n";

    #[test]
    fn walks_internal_and_stops_outside() {
        let h = Headers::parse(CHAIN.as_bytes());
        let trust = TrustConfig {
            internal_networks: vec![net("10.0.0.0/8")],
            trusted_relays: vec![],
        };
        let t = build_trace(&h, None, &trust, None);
        assert_eq!(t.hops.len(), 3);
        assert_eq!(
            t.hops.iter().map(|h| h.trusted).collect::<Vec<_>>(),
            [true, true, false]
        );
        let o = t.origin.as_ref().unwrap();
        assert_eq!(o.ip, ip("198.51.100.20"));
        assert_eq!(o.hop, Some(1));
        assert_eq!(o.source, OriginSource::Received);
        assert_eq!(o.helo.as_deref(), Some("sender.example.org"));
        assert_eq!(t.hops[0].delay_secs, Some(2));
        assert_eq!(t.hops[1].delay_secs, Some(8));
        assert_eq!(t.hops[2].delay_secs, None);
        // The documentation address of the origin is flagged: 198.51.100.0/24 is not Internet.
        assert_eq!(codes(&t), [PRIVATE_ORIGIN]);
    }

    #[test]
    fn trusted_relay_extends_the_walk_and_envelope_starts_it() {
        let h = Headers::parse(CHAIN.as_bytes());
        let trust = TrustConfig {
            internal_networks: vec![net("10.0.0.0/8")],
            trusted_relays: vec![net("198.51.100.0/24")],
        };
        // Envelope = the internal relay: hop 0 was written by it.
        let t = build_trace(&h, Some(ip("10.0.0.2")), &trust, None);
        assert!(t.hops.iter().all(|h| h.trusted));
        let o = t.origin.unwrap();
        assert_eq!(o.ip, ip("192.168.1.5"));
        assert_eq!(o.hop, Some(2));
        assert_eq!(o.helo.as_deref(), Some("laptop"));
        assert!(
            t.anomalies
                .iter()
                .any(|a| a.code == PRIVATE_ORIGIN && a.hop == Some(2))
        );
    }

    #[test]
    fn envelope_outside_trusts_nothing() {
        let h = Headers::parse(CHAIN.as_bytes());
        let t = build_trace(&h, Some(ip("203.0.113.99")), &TrustConfig::default(), None);
        assert!(t.hops.iter().all(|h| !h.trusted));
        let o = t.origin.unwrap();
        assert_eq!(
            (o.ip, o.hop, o.source),
            (ip("203.0.113.99"), None, OriginSource::Envelope)
        );
        assert_eq!(o.helo, None);
    }

    #[test]
    fn no_headers_no_origin() {
        let h = Headers::parse(b"From: a@b.example\r\n\r\n");
        let t = build_trace(&h, None, &TrustConfig::default(), None);
        assert!(t.origin.is_none() && t.hops.is_empty());
        assert_eq!(codes(&t), [DATE_MISSING, MESSAGE_ID_MISSING]);
        let t = build_trace(&h, Some(ip("8.8.8.8")), &TrustConfig::default(), Some(0));
        assert_eq!(t.origin.unwrap().ip, ip("8.8.8.8"));
    }

    #[test]
    fn qmail_note_is_passed_through_and_local_submission_stops() {
        let raw = "Received: (qmail 1 invoked from network); 20 Aug 2002 10:00:05 -0000\r\n\
Received: from unknown (HELO client.example) (8.8.4.4) by mx.example.net with SMTP; 20 Aug 2002 10:00:04 -0000\r\n\r\n";
        let t = build_trace(
            &Headers::parse(raw.as_bytes()),
            None,
            &TrustConfig::default(),
            None,
        );
        let o = t.origin.unwrap();
        assert_eq!((o.ip, o.hop), (ip("8.8.4.4"), Some(1)));
        assert_eq!(o.helo.as_deref(), Some("client.example"));
        assert!(t.hops[0].trusted && t.hops[1].trusted);

        let raw = "Received: from relay.example.net (relay.example.net [10.1.1.1]) by mx.example.net with ESMTP; 20 Aug 2002 10:00:05 -0000\r\n\
Received: by relay.example.net (Postfix, from userid 1000) id 1; 20 Aug 2002 10:00:04 -0000\r\n\
Received: from forged.example ([8.8.8.8]) by relay.example.net; 20 Aug 2002 10:00:03 -0000\r\n\r\n";
        let trust = TrustConfig {
            internal_networks: vec![net("10.0.0.0/8")],
            ..Default::default()
        };
        let t = build_trace(&Headers::parse(raw.as_bytes()), None, &trust, None);
        let o = t.origin.unwrap();
        assert_eq!((o.ip, o.hop), (ip("10.1.1.1"), Some(0)));
        assert_eq!(
            t.hops.iter().map(|h| h.trusted).collect::<Vec<_>>(),
            [true, true, false]
        );
    }

    #[test]
    fn trusted_header_without_client_ip_gives_no_origin() {
        let raw = "Received: from somewhere.example by mx.example.net with SMTP; 20 Aug 2002 10:00:05 -0000\r\n\r\n";
        let t = build_trace(
            &Headers::parse(raw.as_bytes()),
            None,
            &TrustConfig::default(),
            None,
        );
        assert!(t.origin.is_none());
        assert!(t.hops[0].trusted);
    }

    #[test]
    fn time_checks() {
        let raw = "Received: from a.example.com ([8.8.8.8]) by b.example.com; Mon, 26 Oct 2020 10:00:00 +0000\r\n\
Received: from c.example.com ([8.8.4.4]) by a.example.com; Mon, 26 Oct 2020 10:04:00 +0000\r\n\
Received: from d.example.com ([9.9.9.9]) by c.example.com; Mon, 26 Oct 2020 12:00:00 +0000\r\n\
Received: garbage\r\n\
Date: Mon, 26 Oct 2020 09:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nFrom: x@example.com\r\n\r\n";
        let t = build_trace(
            &Headers::parse(raw.as_bytes()),
            None,
            &TrustConfig::default(),
            None,
        );
        assert_eq!(t.reference_time, Some(1603706400));
        assert_eq!(t.hops[0].delay_secs, Some(-240));
        let c = codes(&t);
        assert_eq!(c, [UNPARSEABLE, TIME_BACKWARDS, FUTURE_DATE]);
        assert_eq!(t.anomalies[1].hop, Some(2));
        assert_eq!(t.anomalies[2].hop, Some(2));
        // With a caller reference before everything, every hop is in the future and the Date
        // header (an hour earlier) is not skewed.
        let t = build_trace(
            &Headers::parse(raw.as_bytes()),
            None,
            &TrustConfig::default(),
            Some(1603706400 - 3600),
        );
        assert_eq!(
            t.anomalies.iter().filter(|a| a.code == FUTURE_DATE).count(),
            3
        );
        assert!(!codes(&t).contains(&DATE_SKEWED));
        let t = build_trace(
            &Headers::parse(raw.as_bytes()),
            None,
            &TrustConfig::default(),
            Some(1603706400 + 2 * DATE_SKEW_SECS),
        );
        assert!(codes(&t).contains(&DATE_SKEWED));
    }

    #[test]
    fn chain_break_rules() {
        let hop = |helo: Option<&str>, rdns: Option<&str>, ip_: Option<&str>| Hop {
            from_helo: helo.map(str::to_string),
            from_rdns: rdns.map(str::to_string),
            from_ip: ip_.map(ip),
            ..Default::default()
        };
        let h = hop(Some("mail.Example.com."), None, Some("8.8.8.8"));
        assert_eq!(chain_matches(&h, "MAIL.example.com"), Some(true));
        assert_eq!(chain_matches(&h, "out2.example.com"), Some(true));
        assert_eq!(chain_matches(&h, "mx.other.net"), Some(false));
        assert_eq!(chain_matches(&h, "8.8.8.8"), Some(true));
        assert_eq!(chain_matches(&h, "[8.8.4.4]"), Some(false));
        assert_eq!(chain_matches(&h, "2001:4860::1"), None);
        assert_eq!(chain_matches(&h, "localhost"), None);
        assert_eq!(chain_matches(&h, "mailhost"), None);
        let h = hop(None, None, Some("8.8.8.8"));
        assert_eq!(chain_matches(&h, "mx.other.net"), None);
        let h = hop(Some("pc1"), Some("unknown"), Some("10.0.0.1"));
        assert_eq!(chain_matches(&h, "mx.other.net"), None);
        assert_eq!(chain_matches(&h, "10.0.0.9"), None);
        let h = hop(Some("a.example.co.uk"), None, None);
        assert_eq!(chain_matches(&h, "b.example.co.uk"), Some(true));
        assert_eq!(chain_matches(&h, "b.other.co.uk"), Some(false));
        let h = hop(
            Some("am6p194ca0105.eurp194.prod.outlook.com"),
            None,
            Some("2603:10a6:209:8f::46"),
        );
        assert_eq!(
            chain_matches(&h, "am6p194ca0105.outlook.office365.com"),
            Some(true)
        );
        let h = hop(Some("mail.example.com"), None, None);
        assert_eq!(chain_matches(&h, "mail.other.example"), Some(false));
        assert_eq!(chain_matches(&h, "mx1.example.org"), Some(true));
        let h = hop(Some("fwd00.sul.t-online.de"), None, None);
        assert_eq!(chain_matches(&h, "fmrl00.sul.t-online.com"), Some(true));
        let h = hop(
            Some("apc01-tyz-obe.outbound.protection.outlook.com"),
            None,
            Some("40.107.117.115"),
        );
        assert_eq!(
            chain_matches(&h, "sg2pr01mb4170.apcprd01.prod.exchangelabs.com"),
            Some(true)
        );
        let h = hop(Some("user@example.com"), None, None);
        assert_eq!(chain_matches(&h, "mx.other.net"), None);
        let h = hop(Some("pmta14.mandrill.example"), None, Some("127.0.0.1"));
        assert_eq!(chain_matches(&h, "mandrillapp.com"), None);
    }

    #[test]
    fn message_id_checks() {
        let base = "Date: Mon, 26 Oct 2020 09:00:00 +0000\r\n";
        let run = |extra: &str| {
            let raw = format!("{base}{extra}\r\n");
            codes(&build_trace(
                &Headers::parse(raw.as_bytes()),
                None,
                &TrustConfig::default(),
                None,
            ))
        };
        assert_eq!(
            run("From: \"Bank\" <alerts@news.bank.co.uk>\r\nMessage-ID: <a.b@mail.bank.co.uk>\r\n"),
            Vec::<&str>::new()
        );
        assert_eq!(
            run("From: alerts@bank.example\r\nMessage-ID: <a.b@mx.cheap-host.example>\r\n"),
            [MESSAGE_ID_UNRELATED]
        );
        assert_eq!(
            run("From: alerts@bank.example\r\nMessage-ID:\r\n"),
            [MESSAGE_ID_MISSING]
        );
        assert_eq!(
            run("From: alerts@bank.example\r\nMessage-ID: <nodomain>\r\n"),
            Vec::<&str>::new()
        );
        assert_eq!(run("Message-ID: <a@b.example>\r\n"), Vec::<&str>::new());
    }

    #[test]
    fn date_header_checks() {
        let run = |date: &str| {
            let raw = format!("Message-ID: <1@a.example>\r\nFrom: x@a.example\r\n{date}\r\n");
            codes(&build_trace(
                &Headers::parse(raw.as_bytes()),
                None,
                &TrustConfig::default(),
                Some(1603706400),
            ))
        };
        assert_eq!(
            run("Date: Mon, 26 Oct 2020 10:00:00 +0000"),
            Vec::<&str>::new()
        );
        assert_eq!(
            run("Date: Mon, 26 Oct 2020 10:00:00 +2300"),
            Vec::<&str>::new()
        );
        assert_eq!(run("Date: Mon, 20 Oct 2020 10:00:00 +0000"), [DATE_SKEWED]);
        assert_eq!(run("Date: Mon, 26 Oct 2021 10:00:00 +0000"), [DATE_SKEWED]);
        assert_eq!(run("Date: yesterday"), [DATE_UNPARSEABLE]);
        assert_eq!(
            run("X-Date: Mon, 26 Oct 2020 10:00:00 +0000"),
            [DATE_MISSING]
        );
    }

    #[test]
    fn hop_cap_and_arbitrary_bytes() {
        let mut raw = String::new();
        for i in 0..(MAX_RECEIVED + 20) {
            raw.push_str(&format!("Received: from h{i}.example ([10.0.0.{}]) by h{}.example; Mon, 26 Oct 2020 10:00:00 +0000\r\n", i % 250, i + 1));
        }
        raw.push_str("\r\n");
        let trust = TrustConfig {
            internal_networks: vec![net("10.0.0.0/8")],
            ..Default::default()
        };
        let t = build_trace(&Headers::parse(raw.as_bytes()), None, &trust, None);
        assert_eq!(t.hops.len(), MAX_RECEIVED);
        assert!(codes(&t).contains(&TOO_MANY_HOPS));
        // Walked to the last traced hop and stopped there with an internal origin.
        assert_eq!(t.origin.unwrap().hop, Some(MAX_RECEIVED - 1));

        // A cheap deterministic byte soup.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let alphabet = b"Received: from by with id for via ([<>]);:@.-+\\\"\r\n\t 0123456789abcdefDateMessage-ID\xff\xc3";
        for _ in 0..2000 {
            let mut buf = Vec::new();
            for _ in 0..(x % 400) as usize {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let h = Headers::parse(&buf);
            let _ = build_trace(&h, Some(ip("::ffff:10.0.0.1")), &trust, Some(i64::MAX));
            let _ = build_trace(&h, None, &trust, Some(i64::MIN));
        }
    }

    #[test]
    fn large_inputs_stay_linear() {
        // One huge Received header (deep comments, brackets, quotes) and many small ones.
        let mut raw = b"Received: from ".to_vec();
        for i in 0..200_000 {
            raw.extend_from_slice(match i % 5 {
                0 => b"(",
                1 => b"[1.2.3.4]",
                2 => b"\"",
                3 => b" by x;",
                _ => b"\r\n\t",
            });
        }
        raw.extend_from_slice(b"\r\n");
        for _ in 0..20_000 {
            raw.extend_from_slice(
                b"Received: from a ([8.8.8.8]) by b; Mon, 26 Oct 2020 10:00:00 +0000\r\n",
            );
        }
        raw.extend_from_slice(b"\r\n");
        let start = std::time::Instant::now();
        let t = build_trace(&Headers::parse(&raw), None, &TrustConfig::default(), None);
        assert_eq!(t.hops.len(), MAX_RECEIVED);
        // Generous bound for debug builds on a shared machine; quadratic behaviour would take minutes.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn address_space() {
        for (a, public) in [
            ("8.8.8.8", true),
            ("10.1.2.3", false),
            ("100.64.0.1", false),
            ("100.128.0.1", true),
            ("172.31.255.255", false),
            ("172.32.0.1", true),
            ("192.0.2.1", false),
            ("255.255.255.255", false),
            ("::ffff:192.168.0.1", false),
            ("::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("2001:db8::1", false),
            ("2a00:1450::1", true),
        ] {
            assert_eq!(non_public_kind(ip(a)).is_none(), public, "{a}");
        }
    }

    #[test]
    fn serializes_source_lowercase() {
        let o = Origin {
            ip: ip("8.8.8.8"),
            helo: None,
            rdns: None,
            hop: None,
            source: OriginSource::Envelope,
        };
        assert!(
            serde_json::to_string(&o)
                .unwrap()
                .contains("\"source\":\"envelope\"")
        );
    }
}
