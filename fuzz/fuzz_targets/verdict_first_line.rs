//! Issue 12's property for cargo-fuzz: whatever the first line of the header section, a forgery
//! of a p=reject domain (examples/sample-spoof.eml, football.example.com, DNS from
//! examples/sample.zone) and of our own protected person is never accepted or only tagged.
//! The input is the first line (up to its first newline; the rest of the input is ignored);
//! it is put in front of each forgery, and also replaces the forgery's own first line (a
//! Received header, so From stays intact). `crates/engine/tests/fail_closed.rs` checks the
//! same property with generated mutations in every `cargo test`.
#![no_main]

use std::{sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use unspoof_engine::{Action, Dns, Engine, Envelope, Policy, dns::Zone};

// Only the policy and the checks: this target builds its own envelopes.
#[allow(dead_code)]
#[path = "common.rs"]
mod common;

const SPOOF: &[u8] = include_bytes!("../../examples/sample-spoof.eml");
const ZONE: &str = include_str!("../../examples/sample.zone");

/// Our own CEO, forged from outside (example.com is protected by common::POLICY).
const CEO: &[u8] = b"Received: from mail.attacker.example (unknown [203.0.113.66])\r\n\
\tby mail.attacker.example with ESMTP id X1; Sun, 8 Nov 2026 09:00:00 +0000\r\n\
From: Joe SixPack <joe@example.com>\r\nTo: accounts@example.com\r\nSubject: Wire today\r\n\
Date: Sun, 8 Nov 2026 09:00:00 +0000\r\n\r\nPlease wire the money today.\r\n";

fn forger(mail_from: &str) -> Envelope {
    Envelope {
        ip: Some("203.0.113.66".parse().unwrap()),
        helo: Some("mail.attacker.example".into()),
        mail_from: Some(mail_from.into()),
        ..Envelope::default()
    }
}

fuzz_target!(|data: &[u8]| {
    static STATE: OnceLock<(tokio::runtime::Runtime, Engine, Vec<u8>)> = OnceLock::new();
    let (rt, engine, spoof) = STATE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let policy = Policy::parse(common::POLICY, "fuzz policy").unwrap();
        let mut zone = Zone::new();
        zone.load_text(ZONE, None).unwrap();
        let dns = rt
            .block_on(Dns::zones(zone, Duration::from_millis(500)))
            .unwrap();
        let spoof = unspoof_engine::message::to_crlf(SPOOF).into_owned();
        (rt, Engine::new(policy, dns), spoof)
    });
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(i) => &data[..=i],
        None => data,
    };
    for (forgery, mail_from) in [
        (&spoof[..], "joe@football.example.com"),
        (&spoof[..], "bounce@attacker.example"),
        (CEO, "bounce@attacker.example"),
    ] {
        let rest_at = forgery.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        // The forgery's own Received header is folded over two lines: replacing its first line
        // leaves a continuation line first, which is itself a malformed section.
        for raw in [
            [line, forgery].concat(),
            [line, &forgery[rest_at..]].concat(),
        ] {
            let analysis = rt.block_on(engine.evaluate(&raw, &forger(mail_from)));
            common::check(&analysis);
            assert!(
                analysis.verdict.action >= Action::Quarantine,
                "accepted forgery ({}): {:?}",
                analysis.verdict.action,
                analysis.verdict.codes()
            );
        }
    }
});
