//! The entry point: is the site's gateway the single point of entry?
//!
//! - every MX names one of the site's gateways (`[gateway] gateway_names`) or an address of
//!   one: a second MX is a way around the hub;
//! - no MX is a CNAME (RFC 2181 10.3, RFC 5321 5.1) nor an address (RFC 5321 5.1);
//! - a domain without MX receives mail at its address (implicit MX, RFC 5321 5.1): a domain
//!   that receives no mail says so with a null MX (RFC 7505);
//! - no other host of the domain (its own address, `mail.<domain>`) answers SMTP on port 25;
//! - STARTTLS is offered on each MX (RFC 3207);
//! - the sending IPs have forward-confirmed reverse DNS (RFC 8601 2.7.3 iprev; the bulk-sender
//!   rules of Google and Yahoo, 2024).

use std::net::IpAddr;

use hickory_proto::rr::{RData, RecordType};
use serde::Serialize;

use crate::{
    Check, Finding, Fix, Options, Severity,
    dns::{Resolver, plain},
    net::{TlsProbe, starttls_probe},
    spf::SpfReport,
};

/// One MX host.
#[derive(Debug, Clone, Serialize)]
pub struct MxHost {
    pub host: String,
    pub preference: u16,
    pub addresses: Vec<IpAddr>,
    /// The host is an alias (CNAME) of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
    /// Whether it is one of the site's gateways (`None`: the gateways are not known).
    pub gateway: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<TlsProbe>,
}

/// Reverse DNS of one sending address.
#[derive(Debug, Clone, Serialize)]
pub struct Reverse {
    pub ip: IpAddr,
    pub names: Vec<String>,
    /// A PTR name whose addresses include `ip` (forward-confirmed).
    pub confirmed: Option<String>,
    pub error: Option<String>,
}

/// The entry-point part of a report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EntryReport {
    pub mx: Vec<MxHost>,
    /// RFC 7505: the domain says it receives no mail.
    pub null_mx: bool,
    /// The resolver validated the MX answer (AD): DANE can apply (RFC 7672 2.2.1).
    pub mx_secure: bool,
    pub gateway_addresses: Vec<IpAddr>,
    /// Where the sending addresses came from: `options`, `gateways`, `mx` or `spf`.
    pub sending_source: &'static str,
    pub sending: Vec<Reverse>,
    #[serde(skip)]
    pub findings: Vec<Finding>,
}

async fn addresses(resolver: &Resolver, host: &str) -> (Vec<IpAddr>, Option<String>) {
    let a = resolver.ask(host, RecordType::A).await;
    let aaaa = resolver.ask(host, RecordType::AAAA).await;
    let mut out = a.addrs();
    out.extend(aaaa.addrs());
    let failure = a.failure().or(aaaa.failure()).map(str::to_string);
    (out, failure)
}

pub async fn check(
    resolver: &Resolver,
    domain: &str,
    options: &Options,
    spf: &SpfReport,
) -> EntryReport {
    let mut report = EntryReport::default();
    let mut findings = Vec::new();
    let gateways: Vec<String> = options
        .gateway_names
        .iter()
        .map(|g| g.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    for g in &gateways {
        let (a, _) = addresses(resolver, g).await;
        for ip in a {
            if !report.gateway_addresses.contains(&ip) {
                report.gateway_addresses.push(ip);
            }
        }
    }
    let publish_gateways = |f: Finding| -> Finding {
        gateways.iter().enumerate().fold(f, |f, (i, g)| {
            f.fix(Fix::record(
                domain,
                "MX",
                format!("{} {g}.", 10 * (i + 1)),
                "publish",
            ))
        })
    };

    let mx = resolver.ask(domain, RecordType::MX).await;
    report.mx_secure = mx.secure();
    if let Some(why) = mx.failure() {
        findings.push(Finding::new(
            "entry.temperror",
            Check::Entry,
            Severity::Error,
            "RFC 5321 5.1",
            format!("the MX records of {domain} could not be read ({why})"),
        ));
        report.findings = findings;
        return report;
    }
    let mut hosts: Vec<(u16, String)> = mx
        .records()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(m) => Some((m.preference, plain(&m.exchange))),
            _ => None,
        })
        .collect();
    hosts.sort();
    if hosts.iter().any(|(_, h)| h.is_empty()) {
        report.null_mx = true;
        if hosts.len() > 1 {
            findings.push(
                Finding::new(
                    "entry.null_mx_mixed",
                    Check::Entry,
                    Severity::Error,
                    "RFC 7505 3",
                    "a null MX (\"0 .\") is published beside other MX records: senders cannot tell whether the domain receives mail",
                )
                .fix(Fix::record(domain, "MX", "0 .", "replace")),
            );
        }
        hosts.retain(|(_, h)| !h.is_empty());
    }
    if hosts.is_empty() && !report.null_mx {
        let (addrs, _) = addresses(resolver, domain).await;
        if addrs.is_empty() {
            findings.push(
                Finding::new(
                    "entry.no_mx",
                    Check::Entry,
                    Severity::Info,
                    "RFC 7505 3",
                    format!("{domain} has no MX and no address: if it receives no mail, a null MX says so and senders stop retrying"),
                )
                .fix(Fix::record(domain, "MX", "0 .", "publish")),
            );
        } else {
            let mut f = Finding::new(
                "entry.implicit_mx",
                Check::Entry,
                Severity::Critical,
                "RFC 5321 5.1",
                format!(
                    "{domain} has no MX but has an address: mail goes straight to that host ({}), not through a gateway",
                    addrs
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            f = if gateways.is_empty() {
                f.fix(Fix::record(domain, "MX", "0 .", "publish"))
            } else {
                publish_gateways(f)
            };
            findings.push(f);
        }
    }

    for (preference, host) in &hosts {
        let mut entry = MxHost {
            host: host.clone(),
            preference: *preference,
            addresses: Vec::new(),
            cname: None,
            gateway: None,
            probe: None,
        };
        let mx_line = format!("{domain} MX {preference} {host}.");
        if host.parse::<IpAddr>().is_ok() {
            let mut f = Finding::new(
                "entry.mx_ip_literal",
                Check::Entry,
                Severity::Error,
                "RFC 5321 5.1",
                format!("MX {host} is an address, not a host name: senders look it up as a name and fail"),
            )
            .evidence(mx_line.clone())
            .fix(Fix::record(domain, "MX", format!("{preference} {host}."), "remove"));
            f = publish_gateways(f);
            findings.push(f);
            report.mx.push(entry);
            continue;
        }
        let cname = resolver.ask(host, RecordType::CNAME).await;
        if let Some(target) = cname.names().into_iter().next() {
            entry.cname = Some(target.clone());
            findings.push(
                Finding::new(
                    "entry.mx_cname",
                    Check::Entry,
                    Severity::Error,
                    "RFC 2181 10.3, RFC 5321 5.1",
                    format!("MX {host} is an alias of {target}: an MX must name the host itself, and some senders refuse it"),
                )
                .evidence(format!("{host} CNAME {target}."))
                .fix(Fix::record(domain, "MX", format!("{preference} {host}."), "remove"))
                .fix(Fix::record(domain, "MX", format!("{preference} {target}."), "publish")),
            );
        }
        let (addrs, failure) = addresses(resolver, host).await;
        entry.addresses = addrs.clone();
        if addrs.is_empty() {
            findings.push(
                Finding::new(
                    if failure.is_some() {
                        "entry.temperror"
                    } else {
                        "entry.mx_unresolvable"
                    },
                    Check::Entry,
                    Severity::Error,
                    "RFC 5321 5.1",
                    format!(
                        "MX {host} has no address{}",
                        failure.map(|f| format!(" ({f})")).unwrap_or_default()
                    ),
                )
                .evidence(mx_line.clone()),
            );
        }
        if !gateways.is_empty() {
            let by_name = gateways.iter().any(|g| crate::same_name(g, host));
            let by_address =
                !addrs.is_empty() && addrs.iter().all(|a| report.gateway_addresses.contains(a));
            let is_gateway = by_name || by_address;
            entry.gateway = Some(is_gateway);
            if !is_gateway {
                let f = Finding::new(
                    "entry.mx_bypasses_gateway",
                    Check::Entry,
                    Severity::Critical,
                    "unspoof single point of entry (RFC 5321 5.1: senders use every MX)",
                    format!("MX {host} is not one of the site's gateways ({}): mail delivered there never meets the gateway's checks", gateways.join(", ")),
                )
                .evidence(mx_line.clone())
                .fix(Fix::record(domain, "MX", format!("{preference} {host}."), "remove"));
                findings.push(f);
            }
        }
        if options.probe && !addrs.is_empty() {
            let probe = starttls_probe(
                host,
                &addrs,
                helo(options),
                &options.connect_to,
                &options.extra_roots,
                &options.limits,
            )
            .await;
            if !probe.reached {
                findings.push(
                    Finding::new(
                        "entry.mx_unreachable",
                        Check::Entry,
                        Severity::Error,
                        "RFC 5321 5.1",
                        format!(
                            "MX {host} does not answer on port 25 ({})",
                            probe.error.as_deref().unwrap_or("")
                        ),
                    )
                    .evidence(mx_line.clone()),
                );
            } else if !probe.starttls {
                findings.push(
                    Finding::new(
                        "entry.no_starttls",
                        Check::Entry,
                        Severity::Error,
                        "RFC 3207; Google/Yahoo bulk sender rules 2024 (TLS)",
                        format!(
                            "MX {host} does not offer STARTTLS{}: mail to it travels in clear text",
                            probe
                                .error
                                .as_ref()
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default()
                        ),
                    )
                    .evidence(mx_line.clone()),
                );
            } else if !probe.tls {
                findings.push(
                    Finding::new(
                        "entry.starttls_failed",
                        Check::Entry,
                        Severity::Error,
                        "RFC 3207",
                        format!(
                            "MX {host} offers STARTTLS but the TLS handshake fails ({})",
                            probe.error.as_deref().unwrap_or("")
                        ),
                    )
                    .evidence(mx_line.clone()),
                );
            }
            entry.probe = Some(probe);
        }
        report.mx.push(entry);
    }
    if gateways.is_empty() && !hosts.is_empty() {
        findings.push(Finding::new(
            "entry.gateways_unknown",
            Check::Entry,
            Severity::Warning,
            "unspoof single point of entry",
            format!("the site's gateway names are not configured ([gateway] gateway_names or --gateway): whether every MX of {domain} is a gateway was not checked"),
        ));
    } else if !gateways.is_empty()
        && !hosts.is_empty()
        && report.mx.iter().all(|m| m.gateway == Some(false))
    {
        // No MX is a gateway: say what the MX set should be.
        if let Some(f) = findings
            .iter_mut()
            .find(|f| f.code == "entry.mx_bypasses_gateway")
        {
            for (i, name) in gateways.iter().enumerate() {
                f.fix.push(Fix::record(
                    domain,
                    "MX",
                    format!("{} {name}.", 10 * (i + 1)),
                    "publish",
                ));
            }
        }
    }

    // Other hosts of the domain that take mail on port 25: a way around the hub.
    if options.probe && !gateways.is_empty() {
        let mx_addrs: Vec<IpAddr> = report.mx.iter().flat_map(|m| m.addresses.clone()).collect();
        for name in [domain.to_string(), format!("mail.{domain}")] {
            if hosts.iter().any(|(_, h)| h == &name) || gateways.contains(&name) {
                continue;
            }
            let (addrs, _) = addresses(resolver, &name).await;
            let others: Vec<IpAddr> = addrs
                .into_iter()
                .filter(|a| !report.gateway_addresses.contains(a) && !mx_addrs.contains(a))
                .collect();
            if others.is_empty() {
                continue;
            }
            let probe = starttls_probe(
                &name,
                &others,
                helo(options),
                &options.connect_to,
                &options.extra_roots,
                &options.limits,
            )
            .await;
            if probe.reached
                && probe
                    .banner
                    .as_deref()
                    .is_some_and(|b| b.starts_with("220"))
            {
                findings.push(
                    Finding::new(
                        "entry.other_smtp_host",
                        Check::Entry,
                        Severity::Critical,
                        "unspoof single point of entry",
                        format!("{name} ({}) answers SMTP on port 25 and is not a gateway: a sender can deliver there directly and skip the gateway; close port 25 to everyone but the gateways", others.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")),
                    )
                    .evidence(probe.banner.clone().unwrap_or_default()),
                );
            }
        }
    }

    // Forward-confirmed reverse DNS of the sending addresses.
    let (ips, source): (Vec<IpAddr>, &'static str) = if !options.sending_ips.is_empty() {
        (options.sending_ips.clone(), "options")
    } else if !report.gateway_addresses.is_empty() {
        (report.gateway_addresses.clone(), "gateways")
    } else if !spf.own_addresses.is_empty() {
        (spf.own_addresses.clone(), "spf")
    } else {
        let mut v: Vec<IpAddr> = report.mx.iter().flat_map(|m| m.addresses.clone()).collect();
        v.dedup();
        (v, "mx")
    };
    report.sending_source = source;
    for ip in ips.into_iter().take(options.limits.max_sending_ips) {
        let r = reverse(resolver, ip).await;
        let reverse_name = plain(&hickory_proto::rr::Name::from(ip));
        let suggested = gateways
            .first()
            .cloned()
            .or_else(|| r.names.first().cloned())
            .unwrap_or_else(|| format!("mail.{domain}"));
        if r.error.is_some() {
            findings.push(Finding::new(
                "entry.reverse_dns_unknown",
                Check::Entry,
                Severity::Error,
                "RFC 8601 2.7.3 (iprev); Google/Yahoo bulk sender rules 2024",
                format!(
                    "the reverse DNS of {ip} could not be read ({})",
                    r.error.as_deref().unwrap_or("")
                ),
            ));
        } else if r.names.is_empty() {
            findings.push(
                Finding::new(
                    "entry.no_reverse_dns",
                    Check::Entry,
                    Severity::Error,
                    "RFC 8601 2.7.3 (iprev); Google/Yahoo bulk sender rules 2024",
                    format!("the sending address {ip} ({source}) has no PTR record: large providers refuse or junk its mail"),
                )
                .fix(Fix::record(&reverse_name, "PTR", format!("{suggested}."), "publish")),
            );
        } else if r.confirmed.is_none() {
            let ty = if ip.is_ipv4() { "A" } else { "AAAA" };
            findings.push(
                Finding::new(
                    "entry.fcrdns_mismatch",
                    Check::Entry,
                    Severity::Error,
                    "RFC 8601 2.7.3 (iprev); Google/Yahoo bulk sender rules 2024",
                    format!(
                        "the PTR name of {ip} ({}) does not resolve back to it",
                        r.names.join(", ")
                    ),
                )
                .evidence(format!("{reverse_name} PTR {}", r.names.join(", ")))
                .fix(Fix::record(&r.names[0], ty, ip.to_string(), "publish")),
            );
        }
        report.sending.push(r);
    }
    let checked: Vec<IpAddr> = report.sending.iter().map(|r| r.ip).collect();
    let mut mx_addrs: Vec<(String, IpAddr)> = Vec::new();
    for m in &report.mx {
        for a in &m.addresses {
            if !checked.contains(a) && !mx_addrs.iter().any(|(_, x)| x == a) {
                mx_addrs.push((m.host.clone(), *a));
            }
        }
    }
    // The MX hosts' own reverse DNS (RFC 1912 2.1), for addresses not checked as senders.
    for (host, ip) in mx_addrs.into_iter().take(options.limits.max_sending_ips) {
        let r = reverse(resolver, ip).await;
        let reverse_name = plain(&hickory_proto::rr::Name::from(ip));
        if r.error.is_none() && r.names.is_empty() {
            findings.push(
                Finding::new(
                    "entry.mx_no_reverse_dns",
                    Check::Entry,
                    Severity::Info,
                    "RFC 1912 2.1",
                    format!("{ip}, the address of MX {host}, has no PTR record: if it also sends mail, receivers distrust it"),
                )
                .fix(Fix::record(&reverse_name, "PTR", format!("{host}."), "publish")),
            );
        } else if r.error.is_none() && r.confirmed.is_none() {
            findings.push(
                Finding::new(
                    "entry.mx_fcrdns_mismatch",
                    Check::Entry,
                    Severity::Info,
                    "RFC 1912 2.1",
                    format!("the PTR name of {ip}, the address of MX {host}, ({}) does not resolve back to it", r.names.join(", ")),
                )
                .fix(Fix::record(&reverse_name, "PTR", format!("{host}."), "replace")),
            );
        }
    }
    report.findings = findings;
    report
}

/// The PTR names of `ip` and the first of them whose addresses include it.
async fn reverse(resolver: &Resolver, ip: IpAddr) -> Reverse {
    let ptr = resolver.ptr(ip).await;
    let mut r = Reverse {
        ip,
        names: ptr.names(),
        confirmed: None,
        error: ptr.failure().map(str::to_string),
    };
    for n in r.names.clone() {
        let (a, _) = addresses(resolver, &n).await;
        if a.contains(&ip) {
            r.confirmed = Some(n);
            break;
        }
    }
    r
}

fn helo(options: &Options) -> &str {
    if options.helo_name.is_empty() {
        "localhost"
    } else {
        &options.helo_name
    }
}
