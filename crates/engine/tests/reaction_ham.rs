//! No false positive of the reaction loop's findings on the legitimate mail of the shared
//! corpora: each ham message of SpamAssassin's corpus and of mailauth-fixtures is analysed
//! with a policy that protects its own From domain (so every message is "in our name" and
//! "for us"), and the site's gateways named: no `backscatter.forged` (none is a bounce of a
//! forgery), and no `hub.bypass` once the message's own receivers are the site's gateways.

use std::{path::PathBuf, time::Duration};

use unspoof_engine::{Dns, Engine, Envelope, Policy, contact::sender_domain, dns::Zone};

/// The shared test data (absent: a skip line, or a failure under `CI=true`).
fn testdata() -> Option<PathBuf> {
    unspoof_testkit::testdata("reaction ham", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ham_gives_no_backscatter_and_no_bypass_through_its_own_receivers() {
    let Some(root) = testdata() else {
        return;
    };
    let mut files = Vec::new();
    files.extend(unspoof_testkit::eml_files(
        &root.join("corpus-spamassassin/ham"),
    ));
    files.extend(unspoof_testkit::eml_files(&root.join("mailauth-fixtures")));
    assert!(files.len() >= 300, "{} files", files.len());
    let dns = Dns::zones(Zone::new(), Duration::from_secs(2))
        .await
        .unwrap();
    let engine = Engine::new(Policy::default(), dns);
    let mut found = Vec::new();
    let mut judged = 0;
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let Some(domain) = sender_domain(&raw, None).filter(|d| d.contains('.')) else {
            continue;
        };
        // The receivers that wrote the message's Received lines are "our gateways".
        let text = String::from_utf8_lossy(&raw);
        let mut gateways: Vec<String> = text
            .split("\n\tby ")
            .chain(text.split("\n        by "))
            .skip(1)
            .filter_map(|s| s.split_whitespace().next())
            .filter(|h| h.contains('.'))
            .map(str::to_string)
            .collect();
        gateways.sort();
        gateways.dedup();
        if gateways.is_empty() {
            gateways.push("mx.nowhere.example".into());
        }
        let policy = format!("protected_domains = [{domain:?}]\n");
        let Ok(mut policy) = Policy::parse(&policy, "ham policy") else {
            continue;
        };
        policy.gateway_names = gateways;
        if policy.validate().is_err() {
            continue;
        }
        engine.set_policy(policy);
        judged += 1;
        let a = engine.evaluate(&raw, &Envelope::default()).await;
        for r in &a.verdict.reasons {
            if r.code == "backscatter.forged" || r.code == "hub.bypass" {
                found.push(format!("{}: {}", f.display(), r.message));
            }
        }
    }
    println!("reaction ham: {judged} of {} messages judged", files.len());
    assert!(judged >= 290, "{judged}");
    assert!(found.is_empty(), "false positives:\n{}", found.join("\n"));
}
