//! `build_trace` on real messages (tests/fixtures/trace, see SOURCES.md there) and, when the
//! shared corpora are present, on every file of ../shared/testdata/corpus-*.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use unspoof_engine::message::Headers;
use unspoof_engine::trace::{
    CHAIN_BREAK, DATE_MISSING, DATE_SKEWED, DATE_UNPARSEABLE, FUTURE_DATE, MAX_RECEIVED,
    MESSAGE_ID_MISSING, MESSAGE_ID_UNRELATED, OriginSource, PRIVATE_ORIGIN, TIME_BACKWARDS,
    TOO_MANY_HOPS, Trace, TrustConfig, UNPARSEABLE, build_trace,
};

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/trace")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn run(name: &str, envelope: Option<&str>, trust: &TrustConfig, reference: Option<i64>) -> Trace {
    let raw = fixture(name);
    let t = build_trace(
        &Headers::parse(&raw),
        envelope.map(|s| s.parse().unwrap()),
        trust,
        reference,
    );
    // Every trace serialises (the engine ships it in its JSON verdict).
    serde_json::to_string(&t).unwrap();
    t
}

fn trust(internal: &[&str], relays: &[&str]) -> TrustConfig {
    TrustConfig {
        internal_networks: internal.iter().map(|s| s.parse().unwrap()).collect(),
        trusted_relays: relays.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// (code, hop) of every anomaly.
fn found(t: &Trace) -> Vec<(&'static str, Option<usize>)> {
    t.anomalies.iter().map(|a| (a.code, a.hop)).collect()
}

fn trusted(t: &Trace) -> Vec<bool> {
    t.hops.iter().map(|h| h.trusted).collect()
}

const LOOPBACK: &[&str] = &["127.0.0.0/8", "::1/128"];

#[test]
fn trust_boundary_walks_through_internal_and_trusted_relays() {
    // jmason's fetchmail setup: Postfix on phobos <- fetchmail over 127.0.0.1 <- dogma <- the
    // ILUG list server lugh.tuatha.org <- aculink <- the sender's own host.
    let f = "sa-ham-00199-clock-skew.eml";

    // Loopback internal: hops 0 and 1 (via 127.0.0.1) are ours, hop 2 was written by the
    // host our fetchmail talked to, and its client, lugh, is the first outside IP.
    let t = run(f, None, &trust(LOOPBACK, &[]), None);
    assert_eq!(trusted(&t), [true, true, true, false, false, false, false]);
    let o = t.origin.as_ref().unwrap();
    assert_eq!(
        (o.ip, o.hop, o.source),
        (ip("194.125.145.45"), Some(2), OriginSource::Received)
    );
    assert_eq!(o.helo.as_deref(), Some("lugh.tuatha.org"));
    assert_eq!(o.rdns, None);

    // Trusting the list server as a relay extends the walk through lugh's own loopback hop to
    // the host that handed the message to the list.
    let t = run(f, None, &trust(LOOPBACK, &["194.125.145.45/32"]), None);
    assert_eq!(trusted(&t), [true, true, true, true, true, false, false]);
    let o = t.origin.as_ref().unwrap();
    assert_eq!((o.ip, o.hop), (ip("65.173.158.7"), Some(4)));
    assert_eq!(o.helo.as_deref(), Some("mail.aculink.net"));
    assert!(!found(&t).iter().any(|(c, _)| *c == PRIVATE_ORIGIN));

    // Nothing configured: the topmost header is still ours, and its client (loopback) is the
    // origin, which is not Internet address space.
    let t = run(f, None, &TrustConfig::default(), None);
    assert_eq!(
        trusted(&t),
        [true, false, false, false, false, false, false]
    );
    assert_eq!(t.origin.as_ref().unwrap().ip, ip("127.0.0.1"));
    assert!(found(&t).contains(&(PRIVATE_ORIGIN, Some(0))));

    // The envelope IP starts the walk; an outside client means nothing below is believed.
    let t = run(f, Some("198.51.100.1"), &trust(LOOPBACK, &[]), None);
    assert!(trusted(&t).iter().all(|t| !t));
    let o = t.origin.unwrap();
    assert_eq!(
        (o.ip, o.hop, o.source),
        (ip("198.51.100.1"), None, OriginSource::Envelope)
    );
    // A loopback envelope (fetchmail injecting into Postfix) walks as before.
    let t = run(f, Some("127.0.0.1"), &trust(LOOPBACK, &[]), None);
    assert_eq!(t.origin.unwrap().ip, ip("194.125.145.45"));
}

#[test]
fn hop_fields_on_real_headers() {
    let t = run(
        "sa-ham-00199-clock-skew.eml",
        None,
        &TrustConfig::default(),
        None,
    );
    assert_eq!(t.hops.len(), 7);
    let h = &t.hops[0];
    assert_eq!(h.index, 0);
    assert!(h.parsed);
    // Unfolded: the line break is gone, the tab after it stays (RFC 5322 2.2.3).
    assert!(
        h.raw
            .starts_with("from localhost (localhost [127.0.0.1])\tby phobos")
    );
    assert_eq!(h.from_ip, Some(ip("127.0.0.1")));
    assert_eq!(h.by.as_deref(), Some("phobos.labs.netnoteinc.com"));
    assert_eq!(h.with.as_deref(), Some("ESMTP"));
    assert_eq!(h.id.as_deref(), Some("5D436440C9"));
    assert_eq!(h.for_addr.as_deref(), Some("jm@localhost"));
    assert_eq!(h.date.as_deref(), Some("2002-07-31T20:04:40-04:00"));
    assert_eq!(h.timestamp, Some(1028160280));
    assert_eq!(h.delay_secs, Some(0));
    assert_eq!(t.reference_time, Some(1028160280));
    let h = &t.hops[4];
    assert_eq!(h.from_helo.as_deref(), Some("mail.aculink.net"));
    assert_eq!(h.from_rdns.as_deref(), Some("65-173-158-7.aculink.net"));
    assert_eq!(h.delay_secs, Some(1028160190 - 1028160621));

    // Modern: TLS details from the Postfix comment.
    let t = run(
        "pp-sample-5330-no-message-id.eml",
        None,
        &TrustConfig::default(),
        None,
    );
    let h = &t.hops[0];
    assert_eq!(h.tls.as_deref(), Some("TLSv1.3 TLS_AES_256_GCM_SHA384"));
    assert_eq!(h.with.as_deref(), Some("ESMTPS"));
    assert_eq!(h.from_helo.as_deref(), Some("gogies.net"));
    assert_eq!(h.from_rdns.as_deref(), Some("mail.gogies.net"));
    assert_eq!(t.hops[1].with.as_deref(), Some("ESMTPA"));
    assert_eq!(t.hops[1].tls, None);
}

#[test]
fn time_backwards_and_future_date_on_a_skewed_clock() {
    // aculink's Merak server and the sender's sendmail both stamp times 7 and 30 minutes after
    // the list server that came later. Real 2002 ham: these findings are about clocks, not
    // forgery, which is why they are anomalies and not verdicts.
    let t = run(
        "sa-ham-00199-clock-skew.eml",
        None,
        &trust(LOOPBACK, &[]),
        None,
    );
    assert_eq!(
        found(&t),
        [
            (TIME_BACKWARDS, Some(5)),
            (TIME_BACKWARDS, Some(6)),
            (FUTURE_DATE, Some(5)),
            (FUTURE_DATE, Some(6)),
            (MESSAGE_ID_UNRELATED, None),
        ]
    );
    // A caller reference an hour later covers the skew; the back-in-time hops remain.
    let t = run(
        "sa-ham-00199-clock-skew.eml",
        None,
        &trust(LOOPBACK, &[]),
        Some(1028160280 + 3600),
    );
    let codes: Vec<_> = found(&t).into_iter().map(|(c, _)| c).collect();
    assert!(!codes.contains(&FUTURE_DATE));
    assert_eq!(codes.iter().filter(|c| **c == TIME_BACKWARDS).count(), 2);
}

#[test]
fn chain_break_and_unparseable_date_on_forged_spam() {
    // Spam from 2002: the two lowest headers are invented (their dates say year 0102), and the
    // hop dogma wrote says mail.com [200.178.101.130] handed the message over, while the forged
    // header below claims it was received by a host of another domain.
    let t = run(
        "sa-spam-00023-forged-chain.eml",
        None,
        &trust(LOOPBACK, &[]),
        None,
    );
    assert_eq!(
        found(&t),
        [
            (CHAIN_BREAK, Some(2)),
            (DATE_UNPARSEABLE, None),
            (MESSAGE_ID_UNRELATED, None)
        ]
    );
    assert!(
        t.anomalies[0]
            .detail
            .contains("da001d2020.loxi.pianstvu.net")
    );
    assert_eq!(t.hops[3].timestamp, None);
    assert_eq!(t.hops[4].timestamp, None);
    let o = t.origin.as_ref().unwrap();
    assert_eq!((o.ip, o.hop), (ip("200.178.101.130"), Some(2)));
    assert_eq!(o.helo.as_deref(), Some("mail.com"));
    assert_eq!(trusted(&t), [true, true, true, false, false]);
}

#[test]
fn unparseable_received_header() {
    // `Received: (qfscan 0.5. spam=2/0/0/0 remoteip=172.16.0.211): 29 Aug 2002 03:27:47 -0000`
    // has no clause keyword and no `;` before its date.
    let t = run("sa-ham-01379-qfscan.eml", None, &trust(LOOPBACK, &[]), None);
    assert_eq!(found(&t), [(UNPARSEABLE, Some(6))]);
    assert!(!t.hops[6].parsed);
    assert!(t.hops[6].raw.starts_with("(qfscan 0.5."));
    assert!(t.hops.iter().filter(|h| h.index != 6).all(|h| h.parsed));
    // qmail's "from unknown (HELO gor)" names no reverse DNS.
    assert_eq!(t.hops[7].from_helo.as_deref(), Some("gor"));
    assert_eq!(t.hops[7].from_rdns, None);
    assert_eq!(t.hops[4].tls.as_deref(), Some("TLSv1.0 DES-CBC3-SHA"));
    assert_eq!(t.origin.unwrap().ip, ip("216.136.171.252"));
}

#[test]
fn private_origin_depends_on_internal_networks() {
    // Nazario phishing (2004, forged PayPal): the recipient's relay mail2 (192.168.64.8) handed
    // the message to spanky. Without configuration the private relay is the origin...
    let f = "nazario-phishing0-0004.eml";
    let t = run(f, None, &TrustConfig::default(), None);
    assert_eq!(t.origin.as_ref().unwrap().ip, ip("192.168.64.8"));
    assert!(found(&t).contains(&(PRIVATE_ORIGIN, Some(0))));
    // ...configured as internal, the walk goes one further, to the sender.
    let t = run(f, None, &trust(&["192.168.0.0/16"], &[]), None);
    let o = t.origin.as_ref().unwrap();
    assert_eq!((o.ip, o.hop), (ip("147.46.216.209"), Some(1)));
    assert_eq!(o.helo.as_deref(), Some("paypal.com"));
    assert_eq!(trusted(&t), [true, true, false]);
    assert_eq!(
        found(&t),
        [(TIME_BACKWARDS, Some(2)), (MESSAGE_ID_UNRELATED, None)]
    );
    // Our header already on top and the envelope IP given: same result.
    let t = run(
        f,
        Some("192.168.64.8"),
        &trust(&["192.168.0.0/16"], &[]),
        None,
    );
    assert_eq!(t.origin.as_ref().unwrap().ip, ip("147.46.216.209"));
    // Trusting the forged sender too would make the link-local address in the phisher's own
    // header the origin, which is not where an Internet message comes from.
    let t = run(
        f,
        None,
        &trust(&["192.168.0.0/16"], &["147.46.216.209/32"]),
        None,
    );
    assert_eq!(t.origin.as_ref().unwrap().ip, ip("169.254.236.44"));
    assert!(found(&t).contains(&(PRIVATE_ORIGIN, Some(2))));
}

#[test]
fn message_id_missing_and_date_skewed() {
    // Phishing received by ProtonMail: no Message-ID at all, and a Date 27 h before the
    // receiving hop.
    let t = run(
        "pp-sample-5330-no-message-id.eml",
        None,
        &TrustConfig::default(),
        None,
    );
    assert_eq!(found(&t), [(DATE_SKEWED, None), (MESSAGE_ID_MISSING, None)]);
    // With the caller's time of arrival close to the Date, no skew.
    let t = run(
        "pp-sample-5330-no-message-id.eml",
        None,
        &TrustConfig::default(),
        Some(1744019406 + 3600),
    );
    assert!(!found(&t).iter().any(|(c, _)| *c == DATE_SKEWED));
}

#[test]
fn clean_modern_message_and_date_missing() {
    // A genuine Gmail-delivered message: nothing to report.
    let t = run("mailauth-authtest.eml", None, &TrustConfig::default(), None);
    assert_eq!(found(&t), []);
    assert_eq!(t.hops.len(), 3);
    // Gmail's topmost header is an internal hand-off with no client ("by 2002:a67:... with
    // SMTP"): without the envelope IP there is no origin we could stand behind.
    assert!(t.origin.is_none());
    assert_eq!(t.hops[0].by.as_deref(), Some("2002:a67:f8c8::"));
    assert_eq!(t.hops[1].from_ip, Some(ip("217.146.67.33")));
    assert_eq!(t.hops[1].by.as_deref(), Some("mx.google.com"));
    assert_eq!(
        t.hops[1].id.as_deref(),
        Some("d17si4550964ljc.260.2020.08.31.11.56.49")
    );
    assert_eq!(t.hops[2].from_helo.as_deref(), Some("turvaline.ekiri.ee"));
    assert_eq!(t.hops[2].delay_secs, None);
    assert_eq!(t.hops[1].delay_secs, Some(16));
    let t = run(
        "mailauth-authtest.eml",
        Some("217.146.67.33"),
        &TrustConfig::default(),
        None,
    );
    assert_eq!(t.origin.unwrap().source, OriginSource::Envelope);

    // The same message with its Date line removed.
    let t = run(
        "mailauth-authtest-no-date.eml",
        None,
        &TrustConfig::default(),
        None,
    );
    assert_eq!(found(&t), [(DATE_MISSING, None)]);
}

#[test]
fn too_many_hops_is_capped() {
    // A real message with its topmost Received header repeated 150 times (a mail loop).
    let raw = fixture("pp-sample-5330-no-message-id.eml");
    let h = Headers::parse(&raw);
    let first = h.first("Received").unwrap();
    let field = &raw[first.offset..first.offset + first.name.len() + 1 + first.value.len()];
    let mut looped = Vec::new();
    for _ in 0..150 {
        looped.extend_from_slice(field);
        looped.extend_from_slice(b"\n");
    }
    looped.extend_from_slice(&raw);
    let t = build_trace(
        &Headers::parse(&looped),
        None,
        &TrustConfig::default(),
        None,
    );
    assert_eq!(t.hops.len(), MAX_RECEIVED);
    assert!(found(&t).contains(&(TOO_MANY_HOPS, None)));
}

/// Every file under `dir`, with mbox files split into messages.
fn corpus_messages(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                let name = p.display().to_string();
                if name.ends_with(".mbox") {
                    for (i, m) in split_mbox(&bytes).into_iter().enumerate() {
                        out.push((format!("{name}#{}", i + 1), m));
                    }
                } else {
                    out.push((name, bytes));
                }
            }
        }
    }
    out
}

/// Splits an mbox on lines starting with "From ".
fn split_mbox(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(last) = out.last_mut() {
            last.extend_from_slice(line);
        }
    }
    out
}

fn corpus_dirs() -> Vec<PathBuf> {
    // The shared test data; absent: a skip line, or a failure under `CI=true`. (This used to
    // read "../shared/testdata" from the crate's folder, where it never is: it always skipped.)
    let Some(root) = unspoof_testkit::testdata("trace corpus sweep", "") else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("corpus-"))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// build_trace on every corpus file (mail or not), whole and mutated, must return.
/// `TRACE_FUZZ_ROUNDS=N` sets the number of mutations per file (default 3).
#[test]
fn never_panics_on_corpus_files_and_mutations() {
    let rounds: usize = std::env::var("TRACE_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dirs = corpus_dirs();
    if dirs.is_empty() {
        unspoof_testkit::say("trace corpus sweep: skipped: no corpus-* folders in the test data");
        return;
    }
    let trusts = [TrustConfig::default(), trust(&["0.0.0.0/0", "::/0"], &[])];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut n = 0;
    for dir in dirs {
        for (_name, bytes) in corpus_messages(&dir) {
            n += 1;
            let end = Headers::parse(&bytes).body_offset.min(bytes.len());
            let mut variants = vec![bytes.clone()];
            for _ in 0..rounds {
                let mut v = bytes[..end].to_vec();
                if v.is_empty() {
                    break;
                }
                // Truncate somewhere, then corrupt a few bytes.
                let cut = (next() as usize) % v.len() + 1;
                v.truncate(cut);
                for _ in 0..4 {
                    let i = (next() as usize) % v.len();
                    v[i] = (next() & 0xff) as u8;
                }
                variants.push(v);
            }
            for v in &variants {
                for t in &trusts {
                    let h = Headers::parse(v);
                    let _ = build_trace(&h, None, t, None);
                    let _ = build_trace(&h, Some(ip("10.0.0.1")), t, Some(i64::MAX));
                    let _ = build_trace(&h, Some(ip("::ffff:127.0.0.1")), t, Some(i64::MIN));
                }
            }
        }
    }
    println!("traced {n} corpus files (and mutations)");
    assert!(n > 0);
}

/// Anomaly rates over the corpora, for tuning: `cargo test -p unspoof-engine --test trace --
/// --ignored --nocapture survey`; `SHOW=trace.chain_break` prints each finding of that code.
#[test]
#[ignore]
fn survey() {
    let trust = trust(LOOPBACK, &[]);
    for dir in corpus_dirs() {
        let msgs = corpus_messages(&dir);
        let mut per_msg: BTreeMap<&str, usize> = BTreeMap::new();
        let (mut mail, mut origins) = (0, 0);
        for (name, m) in &msgs {
            if !(name.ends_with(".eml") || name.contains(".mbox#")) {
                continue;
            }
            mail += 1;
            let t = build_trace(&Headers::parse(m), None, &trust, None);
            origins += usize::from(t.origin.is_some());
            let mut seen = BTreeSet::new();
            for a in &t.anomalies {
                seen.insert(a.code);
                if std::env::var("SHOW").is_ok_and(|s| s == a.code) {
                    println!("{name} {:?} {}", a.hop, a.detail);
                }
            }
            for s in seen {
                *per_msg.entry(s).or_default() += 1;
            }
        }
        println!(
            "{}: {mail} messages, {origins} with origin; messages per code: {per_msg:?}",
            dir.display()
        );
    }
}
