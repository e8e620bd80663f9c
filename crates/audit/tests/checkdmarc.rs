//! checkdmarc (PyPI) beside `unspoof audit` on the same Knot zones: every problem checkdmarc
//! reports, the audit reports too (each checkdmarc error and warning is mapped to the audit
//! codes that say the same thing; one without a counterpart fails the test). docs/audit.md
//! lists what the audit reports beyond it.
//!
//! checkdmarc takes name server addresses without ports, so Knot listens on port 53 of an
//! address of its own in 127/8 (the tests run as root, as CI does). checkdmarc fetches MTA-STS
//! policies with Python's requests: HTTPS_PROXY points it at a CONNECT proxy of the test on
//! loopback that reaches the test's HTTPS server, so nothing leaves the machine; its CA bundle
//! is the test CA.

mod support;

use std::{collections::BTreeSet, net::SocketAddr, process::Command, time::Duration};

use support::{zones::*, *};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use unspoof_audit::{ConnectTo, Options, Report, Selector, audit_with, dns::Resolver};

/// A CONNECT proxy that reaches `routes` (host:port -> address) and refuses the rest.
async fn connect_proxy(routes: Vec<(String, SocketAddr)>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let target = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let Some((_, to)) = routes.iter().find(|(h, _)| *h == target) else {
                    let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(to).await else {
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

const DOMAINS: &[&str] = &[
    "good.test",
    "spf-limits.test",
    "spf-broken.test",
    "dmarc-weak.test",
    "bypass.test",
    "implicit.test",
    "nullmx.test",
    "sts.test",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkdmarc_problem_is_ours_too() {
    require("checkdmarc", "checkdmarc from PyPI");
    let ca = Ca::new();
    let ca_file = temp_dir("ca").join("ca.pem");
    write(&ca_file, &ca.pem);
    let (good_tls, _) = ca.acceptor(&["mta-sts.good.test"]);
    let good_https = https_server(good_tls, 200, "text/plain", POLICY_GOOD).await;
    let (sts_tls, _) = ca.acceptor(&["mta-sts.sts.test"]);
    let sts_https = https_server(
        sts_tls,
        200,
        "text/html",
        "version: STSv1\nmode: testing\nmx: other.sts.test\nmax_age: 3600\n",
    )
    .await;
    let (mx_tls, _) = ca.acceptor(&["mx.good.test"]);
    let good_mx = smtp_server("mx.good.test", Some(mx_tls)).await;
    let proxy = connect_proxy(vec![
        ("mta-sts.good.test:443".into(), good_https),
        ("mta-sts.sts.test:443".into(), sts_https),
    ])
    .await;

    let ip = format!("127.53.{}.1", std::process::id() % 250 + 1);
    let zones = vec![
        ZoneSpec::new("good.test", &good_zone()),
        ZoneSpec::new("127.in-addr.arpa", REVERSE),
        ZoneSpec::new("spf-limits.test", &spf_limits_zone()),
        ZoneSpec::new("spf-broken.test", SPF_BROKEN),
        ZoneSpec::new("dmarc-weak.test", &dmarc_weak_zone()),
        ZoneSpec::new("bypass.test", BYPASS),
        ZoneSpec::new("implicit.test", IMPLICIT),
        ZoneSpec::new("nullmx.test", NULLMX),
        ZoneSpec::new("sts.test", &sts_zone()),
    ];
    let knot_ip = ip.clone();
    let knot = tokio::task::spawn_blocking(move || Knot::start(&zones, &knot_ip, Some(53)))
        .await
        .unwrap();

    let out = tokio::task::spawn_blocking({
        let ip = ip.clone();
        let ca_file = ca_file.clone();
        move || {
            Command::new("checkdmarc")
                .args(["-n", &ip, "-f", "json", "-t", "3"])
                .args(DOMAINS)
                .env("HTTPS_PROXY", format!("http://{proxy}"))
                .env("https_proxy", format!("http://{proxy}"))
                .env("NO_PROXY", "")
                .env("REQUESTS_CA_BUNDLE", &ca_file)
                .env("SSL_CERT_FILE", &ca_file)
                .env("PYTHONWARNINGS", "ignore")
                .output()
                .expect("checkdmarc runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "checkdmarc output is not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let results = json
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![json.clone()]);

    // The audit on the same server, the same domains.
    let mut ours = std::collections::BTreeMap::new();
    for d in DOMAINS {
        let gateways: &[&str] = match *d {
            "good.test" => &["mx.good.test"],
            "bypass.test" => &["gw.bypass.test"],
            "sts.test" => &["mx.sts.test"],
            "dmarc-weak.test" => &["host.dmarc-weak.test"],
            _ => &[],
        };
        let mut o = Options {
            gateway_names: gateways.iter().map(|s| s.to_string()).collect(),
            probe: true,
            lookalikes: false,
            helo_name: "audit.test".into(),
            extra_roots: vec![ca.der.clone()],
            connect_to: vec![
                ConnectTo {
                    host: "mx.good.test".into(),
                    port: 25,
                    addr: good_mx,
                },
                ConnectTo {
                    host: "mta-sts.good.test".into(),
                    port: 443,
                    addr: good_https,
                },
                ConnectTo {
                    host: "mta-sts.sts.test".into(),
                    port: 443,
                    addr: sts_https,
                },
            ],
            ..Default::default()
        };
        o.limits.connect_timeout = Duration::from_millis(500);
        if *d == "good.test" {
            o.selectors.push(Selector {
                name: "s2026".into(),
                source: "config",
                record: None,
            });
        }
        let resolver =
            Resolver::with_servers(vec![knot.addr], Duration::from_secs(2), 150, "knot".into());
        let report: Report = audit_with(&resolver, d, &o).await;
        ours.insert(d.to_string(), report);
    }

    // checkdmarc's words -> the audit codes that say the same. A capture group names the host,
    // address or tag the problem is about: one of our findings of those codes must name it too.
    let table: Vec<(&str, &[&str])> = vec![
        (r"A BIMI record does not exist", &["transport.no_bimi"]),
        (r"The l tag value must be", &["transport.bimi_logo_url"]),
        (
            r"An MTA-STS DNS record does not exist",
            &["transport.no_mta_sts"],
        ),
        (
            r"An SMTP TLS Reporting record does not exist",
            &["transport.no_tlsrpt"],
        ),
        (
            r"is not a valid SMTP TLS Reporting URI",
            &["transport.tlsrpt_syntax"],
        ),
        (
            r"Content-Type header should be text/plain",
            &["transport.mta_sts_content_type"],
        ),
        (
            r"^(\S+) is not included in the MTA-STS policy",
            &["transport.mta_sts_mx_mismatch"],
        ),
        (r"points at the IP address (\S+);", &["entry.mx_ip_literal"]),
        (
            r"points at (\S+), which is a CNAME alias",
            &["entry.mx_cname"],
        ),
        (
            r"^(\S+) does not have any reverse DNS",
            &["entry.no_reverse_dns", "entry.mx_no_reverse_dns"],
        ),
        (
            r"The reverse DNS of (\S+) is",
            &["entry.fcrdns_mismatch", "entry.mx_fcrdns_mismatch"],
        ),
        (
            r"has no MX records; mail could still be delivered",
            &["entry.implicit_mx", "entry.no_mx"],
        ),
        (
            r"null MX record \(0 \.\) alongside other MX",
            &["entry.null_mx_mixed"],
        ),
        (r"An SPF record does not exist", &["spf.missing"]),
        (r"multiple SPF TXT records", &["spf.multiple_records"]),
        (
            r"requires \d+/10 maximum DNS lookups",
            &["spf.too_many_lookups"],
        ),
        (r"A ptr mechanism", &["spf.ptr"]),
        (r"A DMARC record does not exist", &["dmarc.missing"]),
        (
            r"A DMARC record at the root of .* has no effect",
            &["dmarc.wrong_name"],
        ),
        (
            r"Support for the (\w+) tag was removed",
            &["dmarc.removed_tag"],
        ),
        (r"A p tag value of none", &["dmarc.not_enforced"]),
        (r"An sp tag value of none", &["dmarc.weak_subdomain_policy"]),
        (
            r"^(\S+) does not indicate that it accepts DMARC reports",
            &["dmarc.report_not_authorised"],
        ),
        // "The domain X does not exist", from the MX, SPF or PTR checks: whatever check met X.
        (
            r"The domain (\S+?)\.? does not exist",
            &[
                "entry.mx_ip_literal",
                "entry.mx_unresolvable",
                "entry.fcrdns_mismatch",
                "spf.void_lookups",
                "spf.include_missing",
            ],
        ),
    ];
    let table: Vec<(regex_lite::Regex, &[&str])> = table
        .into_iter()
        .map(|(r, c)| (regex_lite::Regex::new(r).unwrap(), c))
        .collect();
    let processing = regex_lite::Regex::new(r"^Error when processing [^:]+: ").unwrap();

    let mut unmatched = Vec::new();
    let mut compared = 0;
    for r in &results {
        let domain = r["domain"].as_str().unwrap_or("").to_string();
        let report = ours
            .get(&domain)
            .unwrap_or_else(|| panic!("checkdmarc audited {domain}, we did not"));
        let mut problems: Vec<(String, String)> = Vec::new();
        if let Some(obj) = r.as_object() {
            for (section, v) in obj {
                let mut collect = |v: &serde_json::Value, at: &str| {
                    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                        problems.push((at.to_string(), e.to_string()));
                    }
                    for w in v
                        .get("warnings")
                        .and_then(|w| w.as_array())
                        .into_iter()
                        .flatten()
                    {
                        if let Some(w) = w.as_str() {
                            problems.push((at.to_string(), w.to_string()));
                        }
                    }
                };
                collect(v, section);
                if let Some(inner) = v.as_object() {
                    for (k, v2) in inner {
                        if v2.is_object() {
                            collect(v2, &format!("{section}.{k}"));
                        }
                    }
                }
            }
        }
        for (section, text) in problems {
            compared += 1;
            // "Error when processing X: ..." names the record being walked; the rest is the problem.
            let problem = processing.replace(&text, "").to_string();
            let Some((re, codes)) = table.iter().find(|(re, _)| re.is_match(&problem)) else {
                unmatched.push(format!("{domain} [{section}] (no mapping) {text}"));
                continue;
            };
            let named = re
                .captures(&problem)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().trim_end_matches('.').to_string());
            let hit = report.findings.iter().any(|f| {
                codes.contains(&f.code)
                    && named.as_ref().is_none_or(|n| {
                        f.message.contains(n.as_str())
                            || f.evidence.iter().any(|e| e.contains(n.as_str()))
                    })
            });
            if !hit {
                let got: BTreeSet<&str> = report.findings.iter().map(|f| f.code).collect();
                unmatched.push(format!(
                    "{domain} [{section}] {text}\n    wanted one of {codes:?} naming {named:?}; we have {got:?}"
                ));
            }
        }
    }
    println!(
        "checkdmarc reported {compared} problems on {} domains",
        results.len()
    );
    assert!(
        compared > 30,
        "checkdmarc found too little to compare: {stdout}"
    );
    assert!(
        unmatched.is_empty(),
        "checkdmarc problems the audit does not report:\n{}",
        unmatched.join("\n")
    );
    drop(knot);
    if let Some(d) = ca_file.parent() {
        let _ = std::fs::remove_dir_all(d);
    }
}
