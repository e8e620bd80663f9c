//! SPF (RFC 7208): the domain's record and the whole include/redirect tree behind it, shown
//! past the limits, with the DNS-lookup cost of every include (4.6.4: at most 10), void lookups
//! (at most 2), loops, several records (4.5), syntax (the engine's judgement, the same as at
//! mail time), the `all` term, `ptr` (5.5), macros, the record's size (3.4), and, when the tree
//! breaks a limit, a flattened proposal that stays under them.
//!
//! Records are parsed by mail-auth and judged by `unspoof_engine::spf_record_problem`; nothing
//! here re-implements RFC 7208's grammar.

use std::{future::Future, net::IpAddr, pin::Pin};

use hickory_proto::rr::{RData, RecordType};
use ipnet::IpNet;
use mail_auth::{
    common::parse::TxtRecordParser,
    spf::{Macro, Mechanism, Qualifier, Spf},
};
use serde::Serialize;

use crate::{Check, Finding, Fix, Options, Severity, dns::Resolver};

/// RFC 7208 4.6.4: DNS-lookup terms (include, a, mx, ptr, exists, redirect) per evaluation.
pub const MAX_LOOKUPS: usize = 10;
/// RFC 7208 4.6.4: void lookups per evaluation.
pub const MAX_VOID_LOOKUPS: usize = 2;
/// RFC 7208 4.6.4: MX names looked up for one `mx` term.
pub const MAX_MX_NAMES: usize = 10;
/// RFC 7208 3.4: a record (with what it includes) should stay within a 512-octet UDP answer,
/// "about 450 octets of text".
pub const MAX_RECORD_OCTETS: usize = 450;

/// One SPF record in the tree.
#[derive(Debug, Clone, Serialize)]
pub struct SpfNode {
    pub domain: String,
    /// `record` (the audited domain's own), `include` or `redirect`.
    pub via: &'static str,
    pub record: Option<String>,
    /// Why this record fails, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// DNS-lookup terms in this record itself, besides the include and redirect terms it
    /// follows (those count in the cost of the record they lead to).
    pub own_lookups: usize,
    /// Lookups this record costs with everything below it; for an include or redirect
    /// target, the term that leads to it too: what including it costs.
    pub cost: usize,
    /// Names of this record's terms that answered nothing (RFC 7208 4.6.4 void lookups).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub voids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<SpfNode>,
}

/// The SPF part of a report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SpfReport {
    pub record: Option<String>,
    pub tree: Option<SpfNode>,
    /// DNS-lookup terms in the whole tree, as a receiver counts them.
    pub lookups: usize,
    pub void_lookups: usize,
    /// The `all` term of the domain's own record (`-all`, `~all`, ...), if any.
    pub all: Option<String>,
    /// A record set that says the same within the limits, when the tree breaks them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flattened: Vec<Fix>,
    /// Single addresses (ip4 /32, ip6 /128) of the domain's own record: sending hosts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub own_addresses: Vec<IpAddr>,
    /// Whether the record passes (exists, parses, within the limits).
    pub valid: bool,
    #[serde(skip)]
    pub findings: Vec<Finding>,
}

/// A term of the flattened proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keep {
    Net(IpNet),
    /// A term that cannot be flattened (macros, exists, ptr): kept as written, with its cost.
    Term(String, usize),
}

struct Walk<'a> {
    resolver: &'a Resolver,
    records: usize,
    max_records: usize,
    findings: Vec<Finding>,
    keep: Vec<Keep>,
    macros: bool,
    unresolved: bool,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = SpfNode> + Send + 'a>>;

pub async fn check(resolver: &Resolver, domain: &str, options: &Options) -> SpfReport {
    let mut walk = Walk {
        resolver,
        records: 0,
        max_records: options.limits.max_spf_records,
        findings: Vec::new(),
        keep: Vec::new(),
        macros: false,
        unresolved: false,
    };
    let tree = walk.node(domain.to_string(), "record", Vec::new()).await;
    let mut report = SpfReport {
        record: tree.record.clone(),
        lookups: tree.cost,
        void_lookups: count_voids(&tree),
        ..Default::default()
    };
    let mut findings = std::mem::take(&mut walk.findings);

    if let Some(text) = &tree.record {
        let terms: Vec<&str> = text.split_ascii_whitespace().collect();
        let all = terms
            .iter()
            .find(|t| {
                t.trim_start_matches(['+', '-', '~', '?'])
                    .eq_ignore_ascii_case("all")
            })
            .map(|t| {
                if t.eq_ignore_ascii_case("all") {
                    "+all".to_string()
                } else {
                    t.to_ascii_lowercase()
                }
            });
        let redirect = terms
            .iter()
            .any(|t| t.to_ascii_lowercase().starts_with("redirect="));
        report.all = all.clone();
        let strict = replace_all(text, "-all");
        match all.as_deref() {
            Some("+all") => findings.push(
                Finding::new(
                    "spf.pass_all",
                    Check::Spf,
                    Severity::Critical,
                    "RFC 7208 5.1, 8.3",
                    "\"+all\" authorises every host on the Internet to send as this domain",
                )
                .evidence(format!("{domain} TXT \"{text}\""))
                .fix(Fix::txt(domain, &strict, "replace")),
            ),
            Some("?all") => findings.push(
                Finding::new(
                    "spf.neutral_all",
                    Check::Spf,
                    Severity::Error,
                    "RFC 7208 5.1, 8.2",
                    "\"?all\" makes every other host neutral: SPF protects nothing",
                )
                .evidence(format!("{domain} TXT \"{text}\""))
                .fix(Fix::txt(domain, &strict, "replace")),
            ),
            Some("~all") => findings.push(
                Finding::new(
                    "spf.softfail_all",
                    Check::Spf,
                    Severity::Info,
                    "RFC 7208 5.1, 8.4",
                    "\"~all\" only softfails other hosts: receivers that do not apply DMARC still accept their mail; \"-all\" once every sender is listed",
                )
                .evidence(format!("{domain} TXT \"{text}\""))
                .fix(Fix::txt(domain, &strict, "replace")),
            ),
            None if !redirect => findings.push(
                Finding::new(
                    "spf.no_all",
                    Check::Spf,
                    Severity::Error,
                    "RFC 7208 4.7",
                    "the record has neither \"all\" nor \"redirect\": every host not listed gets neutral",
                )
                .evidence(format!("{domain} TXT \"{text}\""))
                .fix(Fix::txt(domain, &format!("{} -all", text.trim_end()), "replace")),
            ),
            _ => {}
        }
        if text.len() > MAX_RECORD_OCTETS {
            findings.push(
                Finding::new(
                    "spf.record_size",
                    Check::Spf,
                    Severity::Warning,
                    "RFC 7208 3.4",
                    format!(
                        "the record is {} octets, more than the {MAX_RECORD_OCTETS} that fit a 512-octet UDP answer: some receivers get it truncated or over TCP only",
                        text.len()
                    ),
                )
                .evidence(format!("{domain} TXT ({} octets)", text.len())),
            );
        }
        if let Ok(spf) = Spf::parse(text.as_bytes()) {
            report.own_addresses = spf
                .directives
                .iter()
                .filter(|d| d.qualifier == Qualifier::Pass)
                .filter_map(|d| match &d.mechanism {
                    Mechanism::Ip4 { addr, mask } if mask.count_ones() == 32 => {
                        Some(IpAddr::V4(*addr))
                    }
                    Mechanism::Ip6 { addr, mask } if mask.count_ones() == 128 => {
                        Some(IpAddr::V6(*addr))
                    }
                    _ => None,
                })
                .collect();
        }
    }

    if report.lookups > MAX_LOOKUPS {
        let mut f = Finding::new(
            "spf.too_many_lookups",
            Check::Spf,
            Severity::Error,
            "RFC 7208 4.6.4",
            format!(
                "the tree needs {} DNS lookups, more than {MAX_LOOKUPS}: receivers stop with permerror and SPF fails for all mail (the cost of each include is in the tree)",
                report.lookups
            ),
        );
        for c in &tree.children {
            f = f.evidence(format!("{} {} costs {}", c.via, c.domain, c.cost));
        }
        findings.push(f);
    }
    if report.void_lookups > MAX_VOID_LOOKUPS {
        findings.push(Finding::new(
            "spf.void_lookups",
            Check::Spf,
            Severity::Error,
            "RFC 7208 4.6.4",
            format!(
                "{} terms point at names that do not exist or have no address, more than {MAX_VOID_LOOKUPS}: receivers stop with permerror",
                report.void_lookups
            ),
        ).evidence(all_voids(&tree).join(", ")));
    }
    if walk.macros {
        findings.push(Finding::new(
            "spf.macros",
            Check::Spf,
            Severity::Info,
            "RFC 7208 7",
            "the tree uses macros: their targets depend on each message and are not followed here",
        ));
    }

    if (report.lookups > MAX_LOOKUPS || report.void_lookups > MAX_VOID_LOOKUPS)
        && let Some(text) = &tree.record
    {
        let all = report.all.clone().unwrap_or_else(|| "-all".into());
        let all = if matches!(all.as_str(), "+all" | "?all") {
            "-all".to_string()
        } else {
            all
        };
        match flatten(domain, &walk.keep, &all) {
            Some(fixes) if !walk.unresolved => {
                report.flattened = fixes.clone();
                if let Some(f) = findings.iter_mut().find(|f| {
                    matches!(f.code, "spf.too_many_lookups" | "spf.void_lookups")
                }) {
                    f.fix = fixes;
                }
            }
            _ => findings.push(Finding::new(
                "spf.cannot_flatten",
                Check::Spf,
                Severity::Info,
                "RFC 7208 4.6.4",
                format!("no flattened record is proposed for \"{text}\": terms that cannot be resolved here (macros, exists, ptr, failed lookups) already cost too much or are unknown"),
            )),
        }
    }

    report.valid = tree.record.is_some()
        && first_problem(&tree).is_none()
        && report.lookups <= MAX_LOOKUPS
        && report.void_lookups <= MAX_VOID_LOOKUPS;
    report.tree = Some(tree);
    report.findings = findings;
    report
}

/// The record with its `all` term replaced by `all` (or `all` appended).
fn replace_all(text: &str, all: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut found = false;
    for t in text.split_ascii_whitespace() {
        if t.trim_start_matches(['+', '-', '~', '?'])
            .eq_ignore_ascii_case("all")
        {
            out.push(all.to_string());
            found = true;
        } else {
            out.push(t.to_string());
        }
    }
    if !found {
        out.push(all.to_string());
    }
    out.join(" ")
}

fn count_voids(node: &SpfNode) -> usize {
    node.voids.len() + node.children.iter().map(count_voids).sum::<usize>()
}

fn all_voids(node: &SpfNode) -> Vec<String> {
    let mut v = node.voids.clone();
    for c in &node.children {
        v.extend(all_voids(c));
    }
    v
}

fn first_problem(node: &SpfNode) -> Option<String> {
    node.problem
        .clone()
        .or_else(|| node.children.iter().find_map(first_problem))
}

/// The target of a term: a literal name, the current domain for an empty one, `None` for a
/// macro.
fn target(m: &Macro, domain: &str) -> Option<String> {
    match m {
        Macro::Literal(b) => Some(
            String::from_utf8_lossy(b)
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        ),
        Macro::None => Some(domain.to_string()),
        _ => None,
    }
}

impl<'a> Walk<'a> {
    fn node(&mut self, domain: String, via: &'static str, path: Vec<String>) -> Boxed<'_> {
        Box::pin(async move {
            let mut node = SpfNode {
                domain: domain.clone(),
                via,
                record: None,
                problem: None,
                own_lookups: 0,
                cost: usize::from(via != "record"),
                voids: Vec::new(),
                children: Vec::new(),
            };
            if path.contains(&domain) {
                let problem = format!("loop: {} -> {domain}", path.join(" -> "));
                self.findings.push(
                    Finding::new(
                        "spf.loop",
                        Check::Spf,
                        Severity::Error,
                        "RFC 7208 4.6.4, 5.2",
                        format!("the SPF tree includes itself ({problem}): receivers stop with permerror"),
                    )
                    .evidence(problem.clone()),
                );
                node.problem = Some(problem);
                self.unresolved = true;
                return node;
            }
            if self.records >= self.max_records {
                node.problem = Some(format!(
                    "not followed: more than {} records in the tree",
                    self.max_records
                ));
                self.unresolved = true;
                return node;
            }
            self.records += 1;
            let answer = self.resolver.ask(&domain, RecordType::TXT).await;
            if let Some(why) = answer.failure() {
                let problem = format!("TXT lookup failed: {why}");
                self.findings.push(
                    Finding::new(
                        "spf.temperror",
                        Check::Spf,
                        Severity::Error,
                        "RFC 7208 2.6.6",
                        format!("the SPF record of {domain} could not be read ({why}): receivers get temperror"),
                    ),
                );
                node.problem = Some(problem);
                self.unresolved = true;
                return node;
            }
            let txt = answer.txt();
            let mut spf_records: Vec<&Vec<u8>> = txt
                .iter()
                .filter(|r| unspoof_engine::is_spf_record_text(r))
                .collect();
            // Several records are a permerror whatever they say; the tree shows the one that
            // says most (the longest, then the first in byte order), so the walk does not
            // depend on the order the server returned them in.
            spf_records.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
            if spf_records.is_empty() {
                let (code, severity, rule, message) = if via == "record" {
                    (
                        "spf.missing",
                        Severity::Error,
                        "RFC 7208 4.5",
                        format!(
                            "{domain} publishes no SPF record: any host can claim it in MAIL FROM and get none"
                        ),
                    )
                } else {
                    (
                        "spf.include_missing",
                        Severity::Error,
                        "RFC 7208 5.2, 6.1",
                        format!(
                            "{via} target {domain} has no SPF record: receivers stop with permerror"
                        ),
                    )
                };
                let mut f = Finding::new(code, Check::Spf, severity, rule, message);
                if via == "record" {
                    f = f.fix(Fix::txt(&domain, "v=spf1 mx -all", "publish"));
                }
                self.findings.push(f);
                node.problem = Some("no SPF record".into());
                if answer.name_exists() == Some(false) {
                    node.voids.push(domain.clone());
                }
                self.unresolved |= via != "record";
                return node;
            }
            if let Some(problem) = unspoof_engine::spf_record_problem(&txt) {
                let code = if spf_records.len() > 1 {
                    "spf.multiple_records"
                } else {
                    "spf.syntax"
                };
                let rule = if spf_records.len() > 1 {
                    "RFC 7208 4.5"
                } else {
                    "RFC 7208 4.6, 12"
                };
                let mut f = Finding::new(
                    code,
                    Check::Spf,
                    Severity::Error,
                    rule,
                    format!("{domain}: {problem}: receivers stop with permerror"),
                );
                for r in &spf_records {
                    f = f.evidence(format!("{domain} TXT \"{}\"", String::from_utf8_lossy(r)));
                }
                if spf_records.len() > 1 && via == "record" {
                    let merged = merge_records(&spf_records);
                    f = f.fix(Fix::txt(&domain, &merged, "replace"));
                }
                self.findings.push(f);
                node.problem = Some(problem);
            }
            let text = String::from_utf8_lossy(spf_records[0]).into_owned();
            node.record = Some(text.clone());
            let spf = match Spf::parse(text.as_bytes()) {
                Ok(s) => s,
                Err(e) => {
                    if node.problem.is_none() {
                        node.problem = Some(format!("cannot be parsed: {e}"));
                        self.findings.push(Finding::new(
                            "spf.syntax",
                            Check::Spf,
                            Severity::Error,
                            "RFC 7208 4.6, 12",
                            format!("{domain}: the record cannot be parsed ({e}): receivers stop with permerror"),
                        ).evidence(format!("{domain} TXT \"{text}\"")));
                    }
                    self.unresolved = true;
                    return node;
                }
            };
            let mut path = path;
            path.push(domain.clone());
            // Terms a flattened record must keep as written: their targets depend on the
            // message (macros, exists, ptr).
            for term in text.split_ascii_whitespace().skip(1) {
                let bare = term.trim_start_matches('+');
                let lower = bare.to_ascii_lowercase();
                // RFC 7208 4.6.1: a name then "=" before any ":" or "/" is a modifier.
                let modifier = lower
                    .find('=')
                    .is_some_and(|e| lower.find([':', '/']).is_none_or(|c| e < c));
                if !bare.starts_with(['-', '~', '?'])
                    && !modifier
                    && (lower.contains('%')
                        || lower.starts_with("exists:")
                        || lower.starts_with("ptr"))
                {
                    self.keep.push(Keep::Term(bare.to_string(), 1));
                }
            }
            let has_all = spf.directives.iter().any(|d| d.mechanism == Mechanism::All);
            for d in spf.directives.iter() {
                let pass = d.qualifier == Qualifier::Pass;
                match &d.mechanism {
                    Mechanism::Include { macro_string } => match target(macro_string, &domain) {
                        Some(t) => {
                            let child = self.node(t, "include", path.clone()).await;
                            node.children.push(child);
                        }
                        None => {
                            node.own_lookups += 1;
                            self.macros = true;
                        }
                    },
                    Mechanism::A {
                        macro_string,
                        ip4_mask,
                        ip6_mask,
                    } => {
                        node.own_lookups += 1;
                        match target(macro_string, &domain) {
                            Some(t) => {
                                let addrs = self.addresses(&t).await;
                                match addrs {
                                    Some(a) if a.is_empty() => node.voids.push(t),
                                    Some(a) if pass => self.keep_addrs(&a, *ip4_mask, *ip6_mask),
                                    Some(_) => {}
                                    None => self.unresolved = true,
                                }
                            }
                            None => self.macros = true,
                        }
                    }
                    Mechanism::Mx {
                        macro_string,
                        ip4_mask,
                        ip6_mask,
                    } => {
                        node.own_lookups += 1;
                        match target(macro_string, &domain) {
                            Some(t) => {
                                self.mx_term(&mut node, &t, pass, *ip4_mask, *ip6_mask)
                                    .await
                            }
                            None => self.macros = true,
                        }
                    }
                    Mechanism::Ptr { macro_string } => {
                        node.own_lookups += 1;
                        self.findings.push(Finding::new(
                            "spf.ptr",
                            Check::Spf,
                            Severity::Warning,
                            "RFC 7208 5.5",
                            format!("{domain} uses \"ptr\", which RFC 7208 says SHOULD NOT be used: slow, unreliable, and many receivers ignore it"),
                        ).evidence(format!("{domain} TXT \"{text}\"")));
                        let _ = macro_string;
                    }
                    Mechanism::Exists { macro_string } => {
                        node.own_lookups += 1;
                        if !matches!(macro_string, Macro::Literal(_)) {
                            self.macros = true;
                        }
                    }
                    Mechanism::Ip4 { addr, mask } if pass => {
                        if let Ok(n) = ipnet::Ipv4Net::new(*addr, mask.count_ones() as u8) {
                            self.keep.push(Keep::Net(IpNet::V4(n.trunc())));
                        }
                    }
                    Mechanism::Ip6 { addr, mask } if pass => {
                        if let Ok(n) = ipnet::Ipv6Net::new(*addr, mask.count_ones() as u8) {
                            self.keep.push(Keep::Net(IpNet::V6(n.trunc())));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(redirect) = &spf.redirect {
                if has_all {
                    self.findings.push(Finding::new(
                        "spf.redirect_ignored",
                        Check::Spf,
                        Severity::Warning,
                        "RFC 7208 6.1",
                        format!("{domain} has both \"all\" and \"redirect\": the redirect is never used"),
                    ).evidence(format!("{domain} TXT \"{text}\"")));
                } else {
                    match target(redirect, &domain) {
                        Some(t) => {
                            let child = self.node(t, "redirect", path.clone()).await;
                            node.children.push(child);
                        }
                        None => {
                            node.own_lookups += 1;
                            self.macros = true;
                            self.unresolved = true;
                        }
                    }
                }
            }
            node.cost = usize::from(via != "record")
                + node.own_lookups
                + node.children.iter().map(|c| c.cost).sum::<usize>();
            node
        })
    }

    /// The addresses of `name` (A, then AAAA): `Some(empty)` for a void lookup, `None` when
    /// the lookup failed.
    async fn addresses(&self, name: &str) -> Option<Vec<IpAddr>> {
        let a = self.resolver.ask(name, RecordType::A).await;
        a.failure().map_or(Some(()), |_| None)?;
        let aaaa = self.resolver.ask(name, RecordType::AAAA).await;
        let mut out = a.addrs();
        out.extend(aaaa.addrs());
        if out.is_empty() && aaaa.failure().is_some() {
            return None;
        }
        Some(out)
    }

    async fn mx_term(&mut self, node: &mut SpfNode, name: &str, pass: bool, m4: u32, m6: u128) {
        let mx = self.resolver.ask(name, RecordType::MX).await;
        if mx.failure().is_some() {
            self.unresolved = true;
            return;
        }
        let hosts: Vec<String> = mx
            .records()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(m) if !m.exchange.is_root() => Some(crate::dns::plain(&m.exchange)),
                _ => None,
            })
            .collect();
        if hosts.is_empty() {
            node.voids.push(name.to_string());
            return;
        }
        if hosts.len() > MAX_MX_NAMES {
            self.findings.push(Finding::new(
                "spf.mx_too_many",
                Check::Spf,
                Severity::Error,
                "RFC 7208 4.6.4",
                format!("\"mx\" for {name} names {} hosts, more than {MAX_MX_NAMES}: receivers stop with permerror", hosts.len()),
            ));
        }
        for h in hosts.iter().take(MAX_MX_NAMES) {
            match self.addresses(h).await {
                Some(a) if pass => self.keep_addrs(&a, m4, m6),
                Some(_) => {}
                None => self.unresolved = true,
            }
        }
    }

    fn keep_addrs(&mut self, addrs: &[IpAddr], m4: u32, m6: u128) {
        for a in addrs {
            let net = match a {
                IpAddr::V4(v4) => ipnet::Ipv4Net::new(*v4, m4.count_ones() as u8)
                    .ok()
                    .map(|n| IpNet::V4(n.trunc())),
                IpAddr::V6(v6) => ipnet::Ipv6Net::new(*v6, m6.count_ones() as u8)
                    .ok()
                    .map(|n| IpNet::V6(n.trunc())),
            };
            if let Some(n) = net {
                self.keep.push(Keep::Net(n));
            }
        }
    }
}

/// Several `v=spf1` records merged into one (each term once, one `all` at the end).
fn merge_records(records: &[&Vec<u8>]) -> String {
    let mut terms: Vec<String> = Vec::new();
    let mut all: Option<String> = None;
    for r in records {
        for t in String::from_utf8_lossy(r).split_ascii_whitespace().skip(1) {
            if t.trim_start_matches(['+', '-', '~', '?'])
                .eq_ignore_ascii_case("all")
            {
                // The strictest all of them.
                let rank = |a: &str| match a.chars().next() {
                    Some('-') => 0,
                    Some('~') => 1,
                    Some('?') => 2,
                    _ => 3,
                };
                if all.as_deref().is_none_or(|a| rank(t) < rank(a)) {
                    all = Some(t.to_string());
                }
            } else if !terms.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                terms.push(t.to_string());
            }
        }
    }
    let mut s = String::from("v=spf1");
    for t in terms {
        s.push(' ');
        s.push_str(&t);
    }
    s.push(' ');
    s.push_str(all.as_deref().unwrap_or("-all"));
    s
}

/// The flattened record set: the domain's record with every address the tree allows, split
/// into `_spfN.<domain>` records chained by include when one record would pass
/// [`MAX_RECORD_OCTETS`]; `None` when it cannot stay under [`MAX_LOOKUPS`].
fn flatten(domain: &str, keep: &[Keep], all: &str) -> Option<Vec<Fix>> {
    let mut nets: Vec<IpNet> = keep
        .iter()
        .filter_map(|k| match k {
            Keep::Net(n) => Some(*n),
            Keep::Term(..) => None,
        })
        .collect();
    nets = IpNet::aggregate(&nets);
    let mut terms: Vec<String> = Vec::new();
    let mut cost = 0;
    for k in keep {
        if let Keep::Term(t, c) = k
            && !terms.contains(t)
        {
            terms.push(t.clone());
            cost += c;
        }
    }
    for n in nets {
        terms.push(match n {
            IpNet::V4(v4) if v4.prefix_len() == 32 => format!("ip4:{}", v4.addr()),
            IpNet::V6(v6) if v6.prefix_len() == 128 => format!("ip6:{}", v6.addr()),
            IpNet::V4(v4) => format!("ip4:{v4}"),
            IpNet::V6(v6) => format!("ip6:{v6}"),
        });
    }
    // Fill records of at most MAX_RECORD_OCTETS; every record past the first is included.
    let mut records: Vec<Vec<String>> = vec![Vec::new()];
    let budget = |n: usize| {
        MAX_RECORD_OCTETS - "v=spf1 ".len() - " include:_spfNN.".len() - domain.len() - n - 6
    };
    for t in terms {
        let current = records.last_mut()?;
        let len: usize = current.iter().map(|x| x.len() + 1).sum();
        if len + t.len() + 1 > budget(all.len()) && !current.is_empty() {
            records.push(vec![t]);
        } else {
            current.push(t);
        }
    }
    let includes = records.len() - 1;
    if cost + includes > MAX_LOOKUPS {
        return None;
    }
    let mut fixes = Vec::new();
    let name = |i: usize| format!("_spf{i}.{domain}");
    for (i, r) in records.iter().enumerate() {
        let mut text = String::from("v=spf1");
        for t in r {
            text.push(' ');
            text.push_str(t);
        }
        if i + 1 < records.len() {
            text.push_str(&format!(" include:{}", name(i + 1)));
        }
        if i == 0 {
            text.push(' ');
            text.push_str(all);
            fixes.push(Fix::txt(domain, &text, "replace"));
        } else {
            text.push_str(" -all");
            fixes.push(Fix::txt(&name(i), &text, "publish"));
        }
    }
    Some(fixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattening_stays_under_the_limits() {
        let keep: Vec<Keep> = (0..200u32)
            .map(|i| {
                Keep::Net(
                    format!("198.51.{}.{}/32", i / 100 * 2, (i % 100) * 2 + 1)
                        .parse()
                        .unwrap(),
                )
            })
            .collect();
        let fixes = flatten("example.com", &keep, "-all").unwrap();
        assert!(fixes.len() > 1);
        for f in &fixes {
            let text: String = f.value.split('"').skip(1).step_by(2).collect();
            assert!(text.len() <= MAX_RECORD_OCTETS, "{} octets", text.len());
            let spf = Spf::parse(text.as_bytes()).unwrap();
            assert!(!spf.directives.is_empty());
        }
        assert!(fixes.len() - 1 <= MAX_LOOKUPS);
        // Adjacent networks are merged.
        let keep = vec![
            Keep::Net("192.0.2.0/25".parse().unwrap()),
            Keep::Net("192.0.2.128/25".parse().unwrap()),
            Keep::Term("exists:%{i}.x.example".into(), 1),
        ];
        let fixes = flatten("example.com", &keep, "~all").unwrap();
        assert_eq!(
            fixes[0].value,
            "\"v=spf1 exists:%{i}.x.example ip4:192.0.2.0/24 ~all\""
        );
        // Terms that cannot be flattened and cost too much: no proposal.
        let keep: Vec<Keep> = (0..11)
            .map(|i| Keep::Term(format!("exists:%{{i}}.{i}.example"), 1))
            .collect();
        assert!(flatten("example.com", &keep, "-all").is_none());
    }

    #[test]
    fn merges_and_replaces_all() {
        let a = b"v=spf1 ip4:192.0.2.1 ~all".to_vec();
        let b = b"v=spf1 include:_spf.example.net -all".to_vec();
        assert_eq!(
            merge_records(&[&a, &b]),
            "v=spf1 ip4:192.0.2.1 include:_spf.example.net -all"
        );
        assert_eq!(replace_all("v=spf1 mx +all", "-all"), "v=spf1 mx -all");
        assert_eq!(replace_all("v=spf1 mx", "-all"), "v=spf1 mx -all");
    }
}
