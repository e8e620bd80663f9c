//! The zones the audit's tests serve from Knot: one per group of findings, and a clean one.

use super::*;

pub fn good_zone() -> String {
    format!(
        "$ORIGIN good.test.\n$TTL 300\n\
         @ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.1.9\n\
         @ MX 10 mx\nmx A 127.0.1.1\nmx TXT \"v=spf1 a -all\"\n\
         @ TXT \"v=spf1 mx -all\"\n\
         _dmarc TXT \"v=DMARC1; p=reject; sp=reject; rua=mailto:dmarc@good.test\"\n\
         s2026._domainkey TXT \"v=DKIM1; k=rsa; p={RSA_2048}\"\n\
         _mta-sts TXT \"v=STSv1; id=20260101\"\nmta-sts A 127.0.1.2\n\
         _smtp._tls TXT \"v=TLSRPTv1; rua=mailto:tls@good.test\"\n"
    )
}

pub const REVERSE: &str = "$ORIGIN 127.in-addr.arpa.\n$TTL 300\n@ SOA ns.good.test. hostmaster.good.test. 1 3600 600 86400 300\n@ NS ns.good.test.\n1.1.0 PTR mx.good.test.\n1.2.0 PTR nowhere.bypass.test.\n";

pub const POLICY_GOOD: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\nmax_age: 604800\r\n";

pub fn spf_limits_zone() -> String {
    let mut z = String::from(
        "$ORIGIN spf-limits.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.7.9\n\
         @ TXT \"v=spf1 ptr include:i1.spf-limits.test include:i2.spf-limits.test include:i3.spf-limits.test include:i4.spf-limits.test include:i5.spf-limits.test include:i6.spf-limits.test -all\"\n",
    );
    for i in 1..=3 {
        z.push_str(&format!(
            "i{i} TXT \"v=spf1 a:void{i}.spf-limits.test ip4:198.51.100.{i} -all\"\n"
        ));
    }
    for i in 4..=6 {
        z.push_str(&format!("i{i} TXT \"v=spf1 a:host{i}.spf-limits.test ip4:203.0.113.0/25 -all\"\nhost{i} A 192.0.2.{i}\n"));
    }
    z
}

pub const SPF_BROKEN: &str = "$ORIGIN spf-broken.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.8.9\n\
    @ TXT \"v=spf1 include:loop.spf-broken.test include:nospf.spf-broken.test include:bad.spf-broken.test +all\"\n\
    @ TXT \"v=spf1 -all\"\n\
    loop TXT \"v=spf1 include:loop.spf-broken.test -all\"\n\
    nospf TXT \"hello\"\n\
    bad TXT \"v=spf1 ip4:300.1.1.1 -all\"\n";

pub fn dmarc_weak_zone() -> String {
    format!(
        "$ORIGIN dmarc-weak.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.4.9\n\
         @ MX 10 mail\nmail CNAME host\nhost A 127.0.4.1\n\
         @ TXT \"v=spf1 mx ~all\"\n@ TXT \"v=DMARC1; p=reject\"\n\
         _dmarc TXT \"v=DMARC1; p=none; sp=none; pct=50; rf=afrf; ri=3600; t=y; adkim=s; rua=mailto:r@reports.other.test\"\n\
         weak._domainkey TXT \"v=DKIM1; k=rsa; p={RSA_512}\"\n\
         short._domainkey TXT \"v=DKIM1; k=rsa; t=y; p={RSA_1024}\"\n\
         old._domainkey TXT \"v=DKIM1; p=\"\n\
         default._bimi TXT \"v=BIMI1; l=http://dmarc-weak.test/logo.svg\"\n"
    )
}

pub const BYPASS: &str = "$ORIGIN bypass.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.2.9\n\
    @ MX 10 gw\n@ MX 20 backup\n@ MX 30 192.0.2.1.\ngw A 127.0.2.1\nbackup A 127.0.2.2\nmail A 127.0.2.3\n\
    @ TXT \"v=spf1 mx -all\"\n_dmarc TXT \"v=DMARC1; p=reject; rua=mailto:d@bypass.test\"\n";

pub const IMPLICIT: &str = "$ORIGIN implicit.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.3.9\n@ A 127.0.3.1\n";

pub const NULLMX: &str = "$ORIGIN nullmx.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.3.9\n@ MX 0 .\n@ MX 10 mx\nmx A 127.0.3.2\n";

pub fn sts_zone() -> String {
    "$ORIGIN sts.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.5.9\n\
     @ MX 10 mx\nmx A 127.0.5.1\n@ TXT \"v=spf1 mx -all\"\n_dmarc TXT \"v=DMARC1; p=reject; rua=mailto:d@sts.test\"\n\
     _mta-sts TXT \"v=STSv1; id=7\"\nmta-sts A 127.0.5.2\n\
     _smtp._tls TXT \"v=TLSRPTv1; rua=nonsense\"\n\
     _25._tcp.mx TLSA 3 1 1 0000000000000000000000000000000000000000000000000000000000000000\n"
        .to_string()
}
