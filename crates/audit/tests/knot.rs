//! The audit against a real authoritative server: Knot DNS started by the test with zones that
//! exhibit each finding and a clean one; an HTTPS server on loopback for MTA-STS policies
//! (certificate from a test CA the audit is told to trust); SMTP listeners for STARTTLS; and,
//! for DANE, a zone Knot signs itself behind Unbound validating it (the AD bit). Every
//! connection goes to loopback; every name outside the zones is NXDOMAIN from Knot's root zone.

mod support;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use support::{zones::*, *};
use unspoof_audit::{ConnectTo, Options, Report, Selector, Severity, audit_with, dns::Resolver};

fn codes(r: &Report) -> BTreeSet<&'static str> {
    r.findings.iter().map(|f| f.code).collect()
}

fn assert_has(r: &Report, expected: &[&str]) {
    let got = codes(r);
    for e in expected {
        assert!(
            got.contains(e),
            "{}: {e} missing; got {got:?}\n{:#?}",
            r.domain,
            r.findings
        );
    }
}

fn options(gateways: &[&str]) -> Options {
    Options {
        gateway_names: gateways.iter().map(|s| s.to_string()).collect(),
        probe: true,
        lookalikes: true,
        helo_name: "audit.test".into(),
        ..Default::default()
    }
}

fn connect(host: &str, port: u16, addr: SocketAddr) -> ConnectTo {
    ConnectTo {
        host: host.into(),
        port,
        addr,
    }
}

async fn run(dns: SocketAddr, domain: &str, options: &Options) -> (Report, u64) {
    let resolver = Resolver::with_servers(
        vec![dns],
        Duration::from_secs(2),
        options.limits.max_queries,
        format!("resolver {dns}"),
    );
    let report = audit_with(&resolver, domain, options).await;
    (report, resolver.queries())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_domain_grades_a_within_the_query_budget() {
    let ca = Ca::new();
    let (smtp_tls, _) = ca.acceptor(&["mx.good.test"]);
    let smtp = smtp_server("mx.good.test", Some(smtp_tls)).await;
    let (https_tls, _) = ca.acceptor(&["mta-sts.good.test"]);
    let https = https_server(https_tls, 200, "text/plain", POLICY_GOOD).await;
    let knot = tokio::task::spawn_blocking(|| {
        Knot::start(
            &[
                ZoneSpec::new("good.test", &good_zone()),
                ZoneSpec::new("127.in-addr.arpa", REVERSE),
            ],
            "127.0.0.1",
            None,
        )
    })
    .await
    .unwrap();
    let mut o = options(&["mx.good.test"]);
    o.selectors.push(Selector {
        name: "s2026".into(),
        source: "config",
        record: None,
    });
    o.connect_to = vec![
        connect("mx.good.test", 25, smtp),
        connect("mta-sts.good.test", 443, https),
    ];
    o.extra_roots = vec![ca.der.clone()];

    let before = knot.queries();
    let started = std::time::Instant::now();
    let (report, sent) = run(knot.addr, "good.test", &o).await;
    let elapsed = started.elapsed();
    let received = knot.queries() - before;
    println!(
        "cold audit of good.test: {sent} queries sent, {received} received by knot, {elapsed:?}"
    );

    let serious: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .collect();
    assert!(
        serious.is_empty(),
        "a clean domain has no finding above info: {serious:#?}"
    );
    assert_eq!(report.grade.letter, 'A', "{:?}", report.grade);
    assert_eq!(report.grade.score, 100);
    assert!(report.spf.valid);
    assert_eq!(report.dmarc.p.as_deref(), Some("reject"));
    assert!(
        report
            .dkim
            .iter()
            .any(|k| k.selector == "s2026" && k.status == "valid" && k.bits == Some(2048))
    );
    let mx = &report.entry.mx[0];
    assert_eq!(mx.gateway, Some(true));
    let probe = mx.probe.as_ref().unwrap();
    assert!(
        probe.starttls && probe.tls && matches!(probe.pkix, Some(Ok(()))),
        "{probe:?}"
    );
    assert_eq!(
        report
            .transport
            .mta_sts_policy
            .as_ref()
            .and_then(|p| p.mode.clone())
            .as_deref(),
        Some("enforce")
    );
    assert_eq!(
        report.entry.sending[0].confirmed.as_deref(),
        Some("mx.good.test")
    );
    for row in &report.bulk_sender {
        assert!(
            row.status == "pass" || row.requirement.starts_with("One-click"),
            "{row:?}"
        );
    }
    // The count is exact: every query we sent, Knot received, and a cold audit stays under 100.
    assert_eq!(sent, received, "{:#?}", report.dns.sent);
    assert!(sent < 100, "{sent} queries");
    assert!(report.lookalikes.looked_up > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_findings_and_a_flattened_record_that_fixes_them() {
    let zones = vec![
        ZoneSpec::new("spf-limits.test", &spf_limits_zone()),
        ZoneSpec::new("spf-broken.test", SPF_BROKEN),
    ];
    let knot = tokio::task::spawn_blocking(move || Knot::start(&zones, "127.0.0.1", None))
        .await
        .unwrap();
    let mut o = options(&[]);
    o.probe = false;
    o.lookalikes = false;

    let (r, _) = run(knot.addr, "spf-limits.test", &o).await;
    assert_has(&r, &["spf.too_many_lookups", "spf.void_lookups", "spf.ptr"]);
    assert_eq!(r.spf.lookups, 13, "{:#?}", r.spf.tree);
    assert_eq!(r.spf.void_lookups, 3);
    let tree = r.spf.tree.as_ref().unwrap();
    assert_eq!(tree.children.len(), 6);
    assert!(
        tree.children.iter().all(|c| c.cost == 2),
        "each include costs itself and its a:"
    );
    assert!(!r.spf.flattened.is_empty());
    let too_many = r
        .findings
        .iter()
        .find(|f| f.code == "spf.too_many_lookups")
        .unwrap();
    assert_eq!(too_many.fix, r.spf.flattened);

    let (b, _) = run(knot.addr, "spf-broken.test", &o).await;
    assert_has(
        &b,
        &[
            "spf.multiple_records",
            "spf.pass_all",
            "spf.loop",
            "spf.include_missing",
            "spf.syntax",
            "dmarc.missing",
        ],
    );
    assert!(b.grade.letter == 'F', "{:?}", b.grade);
    drop(knot);

    // Publish exactly the proposed records: the same audit finds the limits kept.
    let mut text = spf_limits_zone().replace(
        "@ TXT \"v=spf1 ptr include:i1.spf-limits.test include:i2.spf-limits.test include:i3.spf-limits.test include:i4.spf-limits.test include:i5.spf-limits.test include:i6.spf-limits.test -all\"\n",
        "",
    );
    for f in &r.spf.flattened {
        text.push_str(&format!("{} 300 IN TXT {}\n", f.name, f.value));
    }
    let zones = vec![ZoneSpec::new("spf-limits.test", &text)];
    let knot = tokio::task::spawn_blocking(move || Knot::start(&zones, "127.0.0.1", None))
        .await
        .unwrap();
    let (fixed, _) = run(knot.addr, "spf-limits.test", &o).await;
    let got = codes(&fixed);
    assert!(
        !got.contains("spf.too_many_lookups") && !got.contains("spf.void_lookups"),
        "{got:?}"
    );
    assert!(
        fixed.spf.lookups <= 10 && fixed.spf.valid,
        "{:#?}",
        fixed.spf
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_dkim_and_brand_findings() {
    let zones = vec![ZoneSpec::new("dmarc-weak.test", &dmarc_weak_zone())];
    let knot = tokio::task::spawn_blocking(move || Knot::start(&zones, "127.0.0.1", None))
        .await
        .unwrap();
    let mut o = options(&["host.dmarc-weak.test"]);
    o.probe = false;
    o.lookalikes = false;
    for s in ["weak", "short", "old", "gone"] {
        o.selectors.push(Selector {
            name: s.into(),
            source: "config",
            record: None,
        });
    }
    let (r, _) = run(knot.addr, "dmarc-weak.test", &o).await;
    assert_has(
        &r,
        &[
            "dmarc.not_enforced",
            "dmarc.testing",
            "dmarc.removed_tag",
            "dmarc.wrong_name",
            "dmarc.strict_alignment",
            "dmarc.report_not_authorised",
            "dmarc.subdomains_uncovered",
            "dkim.weak_key",
            "dkim.short_key",
            "dkim.testing",
            "dkim.revoked",
            "dkim.missing_key",
            "entry.mx_cname",
            "transport.bimi_without_enforcement",
            "transport.bimi_logo_url",
            "spf.softfail_all",
        ],
    );
    // Each finding comes with the exact record to publish.
    let auth = r
        .findings
        .iter()
        .find(|f| f.code == "dmarc.report_not_authorised")
        .unwrap();
    assert_eq!(
        auth.fix[0].zone_line(),
        "dmarc-weak.test._report._dmarc.reports.other.test. 3600 IN TXT \"v=DMARC1\""
    );
    let enforce = r
        .findings
        .iter()
        .find(|f| f.code == "dmarc.not_enforced")
        .unwrap();
    assert_eq!(
        enforce.fix[0].value,
        "\"v=DMARC1; p=reject; adkim=s; rua=mailto:r@reports.other.test\""
    );
    assert!(
        r.dkim
            .iter()
            .any(|k| k.selector == "weak" && k.bits == Some(512))
    );
    assert!(r.grade.letter == 'F', "{:?}", r.grade);
    assert!(
        r.grade
            .lost
            .iter()
            .any(|l| l.code == "dmarc.not_enforced" && l.points == 40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_point_findings() {
    let ca = Ca::new();
    let (gw_tls, _) = ca.acceptor(&["gw.bypass.test"]);
    let gw = smtp_server("gw.bypass.test", Some(gw_tls)).await;
    let backup = smtp_server("backup.bypass.test", None).await;
    let other = smtp_server("mail.bypass.test", None).await;
    let zones = vec![
        ZoneSpec::new("bypass.test", BYPASS),
        ZoneSpec::new("implicit.test", IMPLICIT),
        ZoneSpec::new("nullmx.test", NULLMX),
        ZoneSpec::new("127.in-addr.arpa", REVERSE),
    ];
    let knot = tokio::task::spawn_blocking(move || Knot::start(&zones, "127.0.0.1", None))
        .await
        .unwrap();
    let mut o = options(&["gw.bypass.test"]);
    o.lookalikes = false;
    o.extra_roots = vec![ca.der.clone()];
    o.connect_to = vec![
        connect("gw.bypass.test", 25, gw),
        connect("backup.bypass.test", 25, backup),
        connect("mail.bypass.test", 25, other),
    ];
    let (r, _) = run(knot.addr, "bypass.test", &o).await;
    assert_has(
        &r,
        &[
            "entry.mx_bypasses_gateway",
            "entry.mx_ip_literal",
            "entry.no_starttls",
            "entry.other_smtp_host",
            "entry.fcrdns_mismatch",
        ],
    );
    let bypass: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.code == "entry.mx_bypasses_gateway")
        .collect();
    assert_eq!(
        bypass.len(),
        1,
        "only backup bypasses; the literal is its own finding: {bypass:#?}"
    );
    assert!(bypass[0].message.contains("backup.bypass.test"));
    assert_eq!(
        bypass[0].fix[0].zone_line(),
        "; remove: bypass.test. IN MX 20 backup.bypass.test."
    );
    assert!(
        r.entry
            .mx
            .iter()
            .any(|m| m.host == "gw.bypass.test" && m.gateway == Some(true))
    );
    assert_eq!(r.worst(), Severity::Critical);

    let mut o2 = options(&["gw.bypass.test"]);
    o2.probe = false;
    o2.lookalikes = false;
    let (i, _) = run(knot.addr, "implicit.test", &o2).await;
    assert_has(&i, &["entry.implicit_mx"]);
    assert_eq!(
        i.findings
            .iter()
            .find(|f| f.code == "entry.implicit_mx")
            .unwrap()
            .fix[0]
            .zone_line(),
        "implicit.test. 3600 IN MX 10 gw.bypass.test."
    );
    let (n, _) = run(knot.addr, "nullmx.test", &o2).await;
    assert_has(&n, &["entry.null_mx_mixed"]);
    assert!(n.entry.null_mx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_findings() {
    let ca = Ca::new();
    // The MX presents a certificate for another name: MTA-STS senders refuse it.
    let (mx_tls, _) = ca.acceptor(&["wrong.sts.test"]);
    let mx = smtp_server("mx.sts.test", Some(mx_tls)).await;
    let (https_tls, _) = ca.acceptor(&["mta-sts.sts.test"]);
    let policy = "version: STSv1\nmode: testing\nmx: other.sts.test\nmax_age: 3600\n";
    let https = https_server(https_tls, 200, "text/html", policy).await;
    let zones = vec![ZoneSpec::new("sts.test", &sts_zone())];
    let knot = tokio::task::spawn_blocking(move || Knot::start(&zones, "127.0.0.1", None))
        .await
        .unwrap();
    let mut o = options(&["mx.sts.test"]);
    o.lookalikes = false;
    o.extra_roots = vec![ca.der.clone()];
    o.connect_to = vec![
        connect("mx.sts.test", 25, mx),
        connect("mta-sts.sts.test", 443, https),
    ];
    let (r, _) = run(knot.addr, "sts.test", &o).await;
    assert_has(
        &r,
        &[
            "transport.mta_sts_not_enforced",
            "transport.mta_sts_short_age",
            "transport.mta_sts_mx_mismatch",
            "transport.mta_sts_content_type",
            "transport.tlsrpt_syntax",
            "transport.tlsa_insecure",
        ],
    );
    let pkix = r.entry.mx[0].probe.as_ref().unwrap().pkix.clone();
    assert!(matches!(pkix, Some(Err(_))), "{pkix:?}");

    // Without the test CA the policy cannot be fetched at all (RFC 8461 3.3: a valid chain).
    let mut untrusted = o.clone();
    untrusted.extra_roots.clear();
    let (u, _) = run(knot.addr, "sts.test", &untrusted).await;
    assert_has(&u, &["transport.mta_sts_policy_unavailable"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_through_a_validating_resolver() {
    let ca = Ca::new();
    let (tls1, leaf1) = ca.acceptor(&["mx.signed.test"]);
    let (tls2, _) = ca.acceptor(&["mx2.signed.test"]);
    let mx1 = smtp_server("mx.signed.test", Some(tls1)).await;
    let mx2 = smtp_server("mx2.signed.test", Some(tls2)).await;
    let good_tlsa = unspoof_audit::transport::tlsa_for(&leaf1).unwrap();
    let zone = format!(
        "$ORIGIN signed.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.6.9\n\
         @ MX 10 mx\n@ MX 20 mx2\nmx A 127.0.6.1\nmx2 A 127.0.6.2\n@ TXT \"v=spf1 mx -all\"\n\
         _dmarc TXT \"v=DMARC1; p=reject; rua=mailto:d@signed.test\"\n\
         _25._tcp.mx TLSA {good_tlsa}\n_25._tcp.mx2 TLSA 3 1 1 {}\n",
        "ab".repeat(32)
    );
    let unsigned = "$ORIGIN plain.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.6.8\n@ MX 10 mx\nmx A 127.0.6.3\n_25._tcp.mx TLSA 3 1 1 0000000000000000000000000000000000000000000000000000000000000000\n";
    let zones = vec![
        ZoneSpec::signed("signed.test", &zone),
        ZoneSpec::new("plain.test", unsigned),
    ];
    let (knot, unbound) = tokio::task::spawn_blocking(move || {
        let knot = Knot::start(&zones, "127.0.0.1", None);
        let ds = knot.ds("signed.test");
        let unbound = Unbound::start(knot.addr, &[ds]);
        (knot, unbound)
    })
    .await
    .unwrap();
    let mut o = options(&["mx.signed.test", "mx2.signed.test"]);
    o.lookalikes = false;
    o.extra_roots = vec![ca.der.clone()];
    o.connect_to = vec![
        connect("mx.signed.test", 25, mx1),
        connect("mx2.signed.test", 25, mx2),
    ];
    let (r, _) = run(unbound.addr, "signed.test", &o).await;
    assert!(
        r.entry.mx_secure,
        "the validating resolver set AD on the MX answer"
    );
    let d1 = r
        .transport
        .dane
        .iter()
        .find(|d| d.host == "mx.signed.test")
        .unwrap();
    let d2 = r
        .transport
        .dane
        .iter()
        .find(|d| d.host == "mx2.signed.test")
        .unwrap();
    assert!(d1.secure && d1.matches == Some(true), "{d1:?}");
    assert!(d2.secure && d2.matches == Some(false), "{d2:?}");
    let mismatch: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.code == "transport.tlsa_mismatch")
        .collect();
    assert_eq!(mismatch.len(), 1, "{mismatch:#?}");
    assert!(mismatch[0].message.contains("mx2.signed.test"));
    assert!(!codes(&r).contains("transport.tlsa_insecure"));

    // The same signed zone asked of Knot directly (an authoritative server sets no AD): the
    // TLSA records are not trusted.
    let (direct, _) = run(knot.addr, "signed.test", &o).await;
    assert!(!direct.entry.mx_secure);
    assert_has(&direct, &["transport.tlsa_insecure"]);
    // An unsigned zone through the validating resolver: no AD, TLSA ignored.
    let (p, _) = run(unbound.addr, "plain.test", &o).await;
    assert_has(&p, &["transport.tlsa_insecure"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_lookalikes_are_found() {
    let soa = |o: &str| {
        format!(
            "$ORIGIN {o}.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.9.9\n"
        )
    };
    let zones = vec![
        ZoneSpec::new(
            "brand.test",
            &format!("{}@ MX 10 mx\nmx A 127.0.9.1\n", soa("brand.test")),
        ),
        ZoneSpec::new(
            "brand.com",
            &format!("{}@ MX 10 mail.evil.test.\n", soa("brand.com")),
        ),
        ZoneSpec::new(
            "barnd.test",
            &format!("{}@ A 192.0.2.77\n", soa("barnd.test")),
        ),
        ZoneSpec::new("brannd.test", &soa("brannd.test")),
    ];
    let knot = tokio::task::spawn_blocking(move || Knot::start(&zones, "127.0.0.1", None))
        .await
        .unwrap();
    let mut o = options(&[]);
    o.probe = false;
    let (r, _) = run(knot.addr, "brand.test", &o).await;
    let found: BTreeSet<&str> = r
        .lookalikes
        .registered
        .iter()
        .map(|l| l.domain.as_str())
        .collect();
    assert_eq!(
        found,
        BTreeSet::from(["barnd.test", "brand.com"]),
        "{:#?}",
        r.lookalikes
    );
    let com = r
        .lookalikes
        .registered
        .iter()
        .find(|l| l.domain == "brand.com")
        .unwrap();
    assert_eq!((com.kind, com.engine_code), ("tld", "lookalike.cousin"));
    assert_eq!(
        r.findings
            .iter()
            .filter(|f| f.code == "lookalike.registered")
            .count(),
        2
    );
    assert!(r.lookalikes.unknown.is_empty());
}
