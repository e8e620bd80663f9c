//! The RFC 7208 SPF conformance suite (open-spf.org, `spf-rfc7208/rfc7208-tests.yml`, 203 cases)
//! run through `auth::authenticate`, DNS served from each scenario's `zonedata` by our own zone
//! server.
//!
//! What the suite tests is check_host() on one identity: MAIL FROM, or `postmaster@HELO` when
//! MAIL FROM is empty (RFC 7208 2.4). That is exactly `AuthResults::spf` (the MAIL FROM check,
//! which takes `postmaster@HELO` for the null sender), so that is what is compared, against
//! `result` (one word or a list of acceptable words). Where the case names an `explanation` and
//! we say `fail`, the exp= text must match too (`DEFAULT` meaning no exp= text).
//!
//! The zone is built the way the suite's reference driver (pyspf's testspf.py) builds it:
//! - `SPF` (type 99) records are also served as `TXT`, unless the name lists any `TXT` entry
//!   (`TXT: NONE` included, which otherwise adds nothing). Type 99 itself is not served: RFC 7208
//!   3.1 dropped it and mail-auth never asks for it;
//! - `TIMEOUT`: queries for a type the name has no record of time out. Our zone can only make a
//!   whole name time out, so a name with `TIMEOUT` and no record times out entirely, and a name
//!   with records (only `spftimeout.example.net`, whose TXT must be answered) answers what it has;
//! - TXT strings are bytes: the suite's `\xNN` escapes stand for single bytes, so characters up
//!   to U+00FF are written as one byte each.
//!
//! Case id: the test's name (unique in the file).

mod support;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{A, AAAA, CNAME, MX, PTR, TXT},
};
use unspoof_engine::{
    auth::{AuthInput, authenticate},
    dns::{Dns, Zone},
};
use yaml_rust2::{Yaml, YamlLoader};

const SUITE: &str = "spf-rfc7208";

/// Short, so the five temperror cases finish quickly.
const DNS_TIMEOUT: Duration = Duration::from_millis(300);

/// A message for `authenticate`: only SPF is compared, the rest must merely not get in the way.
const MESSAGE: &[u8] = b"From: <conformance@spf.test>\r\nSubject: SPF conformance\r\n\r\nbody\r\n";

#[tokio::test]
async fn rfc7208_spf_suite() {
    let Some(dir) = support::testdata(SUITE, "spf-rfc7208") else {
        return;
    };
    let text = support::read_text(&dir.join("rfc7208-tests.yml"));
    let docs = YamlLoader::load_from_str(&text).expect("rfc7208-tests.yml is YAML");
    let mut suite = support::Suite::new(SUITE);
    for doc in &docs {
        let description = doc["description"].as_str().unwrap_or("?");
        let zone = zone(&doc["zonedata"])
            .unwrap_or_else(|e| panic!("scenario {description:?}: zonedata: {e}"));
        let dns = Dns::zones(zone, DNS_TIMEOUT)
            .await
            .expect("zone server starts");
        let Some(tests) = doc["tests"].as_hash() else {
            panic!("scenario {description:?} has no tests");
        };
        for (name, case) in tests {
            let id = name.as_str().expect("test names are strings");
            run_case(&mut suite, &dns, id, case).await;
        }
    }
    suite.finish(Some(203));
}

async fn run_case(suite: &mut support::Suite, dns: &Dns, id: &str, case: &Yaml) {
    let field = |k: &str| -> String {
        match &case[k] {
            Yaml::String(s) => s.clone(),
            Yaml::BadValue | Yaml::Null => String::new(),
            other => panic!("{id}: {k} is not a string: {other:?}"),
        }
    };
    let host = field("host");
    let ip: IpAddr = host
        .parse()
        .unwrap_or_else(|e| panic!("{id}: host {host:?}: {e}"));
    let helo = field("helo");
    let mail_from = field("mailfrom");
    let expected: Vec<String> = match &case["result"] {
        Yaml::String(s) => vec![s.to_ascii_lowercase()],
        Yaml::Array(list) => list
            .iter()
            .map(|r| r.as_str().expect("result words").to_ascii_lowercase())
            .collect(),
        other => panic!("{id}: result {other:?}"),
    };
    let explanation = case["explanation"].as_str();

    let auth = authenticate(
        MESSAGE,
        AuthInput {
            ip: Some(ip),
            helo: &helo,
            mail_from: &mail_from,
            host_domain: "receiver.example",
        },
        dns,
    )
    .await;
    let word = auth.spf.result.as_str();
    let ours_exp = auth.spf.explanation.as_deref();
    let mut ok = expected.iter().any(|e| e == word);
    let mut ours = word.to_string();
    let mut theirs = expected.join("|");
    if let (Some(want), "fail") = (explanation, word) {
        let exp_ok = match want {
            "DEFAULT" => ours_exp.is_none(),
            want => ours_exp == Some(want),
        };
        ok &= exp_ok;
        ours = format!("{ours} exp={:?}", ours_exp.unwrap_or("DEFAULT"));
        theirs = format!("{theirs} exp={want:?}");
    }
    suite.record(id, ok, ours, theirs);
}

/// The scenario's DNS, built as described at the top of this file.
fn zone(zonedata: &Yaml) -> Result<Zone, String> {
    let mut zone = Zone::new();
    let Some(names) = zonedata.as_hash() else {
        return Ok(zone);
    };
    for (name, entries) in names {
        let name = name.as_str().ok_or("a zonedata name is not a string")?;
        let owner = owner(name)?;
        let mut records = Vec::new();
        let mut spf_as_txt = Vec::new();
        let mut has_txt = false;
        let mut timeout = false;
        for entry in entries
            .as_vec()
            .ok_or_else(|| format!("{name}: not a list"))?
        {
            match entry {
                Yaml::String(s) if s == "TIMEOUT" => timeout = true,
                Yaml::Hash(h) => {
                    for (rtype, value) in h {
                        let rtype = rtype.as_str().ok_or("record type")?;
                        match rtype {
                            "TXT" => {
                                has_txt = true;
                                if value.as_str() != Some("NONE") {
                                    records.push(txt(value)?);
                                }
                            }
                            "SPF" => spf_as_txt.push(txt(value)?),
                            _ => records
                                .push(rdata(rtype, value).map_err(|e| format!("{name}: {e}"))?),
                        }
                    }
                }
                other => return Err(format!("{name}: unknown entry {other:?}")),
            }
        }
        if !has_txt {
            records.extend(spf_as_txt);
        }
        if timeout && records.is_empty() {
            zone.add_timeout(name);
        }
        for rdata in records {
            zone.add(Record::from_rdata(owner.clone(), 3600, rdata));
        }
    }
    Ok(zone)
}

/// A name as the suite spells it, which may hold bytes a host name may not (spaces, `%`).
fn owner(name: &str) -> Result<Name, String> {
    Name::from_str_relaxed(name)
        .or_else(|_| Name::from_labels(name.split('.').map(str::as_bytes)))
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .map_err(|e| format!("{name}: {e}"))
}

/// The suite's strings as bytes: `\xNN` escapes arrive as U+00NN and stand for byte NN.
fn bytes(s: &str) -> Vec<u8> {
    if s.chars().all(|c| (c as u32) < 0x100) {
        s.chars().map(|c| c as u8).collect()
    } else {
        s.as_bytes().to_vec()
    }
}

fn txt(value: &Yaml) -> Result<RData, String> {
    let strings: Vec<Vec<u8>> = match value {
        Yaml::String(s) => vec![bytes(s)],
        Yaml::Array(list) => list
            .iter()
            .map(|v| v.as_str().map(bytes).ok_or("TXT list of strings"))
            .collect::<Result<_, _>>()?,
        other => return Err(format!("TXT value {other:?}")),
    };
    // A character-string holds at most 255 bytes.
    let chunks: Vec<&[u8]> = strings.iter().flat_map(|s| s.chunks(255)).collect();
    Ok(RData::TXT(TXT::from_bytes(chunks)))
}

fn rdata(rtype: &str, value: &Yaml) -> Result<RData, String> {
    let text = || value.as_str().ok_or(format!("{rtype} value {value:?}"));
    let name = |s: &str| owner(s);
    Ok(match rtype {
        "A" => RData::A(A(text()?
            .parse::<Ipv4Addr>()
            .map_err(|e| format!("A {value:?}: {e}"))?)),
        "AAAA" => RData::AAAA(AAAA(
            text()?
                .parse::<Ipv6Addr>()
                .map_err(|e| format!("AAAA {value:?}: {e}"))?,
        )),
        "PTR" => RData::PTR(PTR(name(text()?)?)),
        "CNAME" => RData::CNAME(CNAME(name(text()?)?)),
        "MX" => {
            let pair = value.as_vec().ok_or(format!("MX value {value:?}"))?;
            let (Some(pref), Some(host)) = (
                pair.first().and_then(Yaml::as_i64),
                pair.get(1).and_then(Yaml::as_str),
            ) else {
                return Err(format!("MX value {value:?}"));
            };
            let pref = u16::try_from(pref).map_err(|e| format!("MX preference: {e}"))?;
            RData::MX(MX::new(pref, name(host)?))
        }
        other => return Err(format!("unsupported record type {other}")),
    })
}
