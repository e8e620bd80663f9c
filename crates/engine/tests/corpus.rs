//! Every real message of the outside corpora (1,165: SpamAssassin ham and spam, Nazario's
//! phishing mbox, phishing_pot) goes through the whole engine without a panic, each within a
//! bounded time, and twice gives the same analysis.
//!
//! DNS is an empty zone served on loopback: every name is NXDOMAIN, so SPF, DKIM, DMARC and ARC
//! all run their real code paths (record parsing, key lookups) without the network.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use unspoof_engine::{Dns, Engine, Envelope, Policy, dns::Zone, message};

/// A message that takes longer than this is a hang, not a slow message.
const PER_MESSAGE_BOUND: Duration = Duration::from_secs(20);

/// The shared test data (absent: a skip line, or a failure under `CI=true`).
fn testdata() -> Option<PathBuf> {
    unspoof_testkit::testdata("corpus", "")
}

/// (name, raw) for every message of the corpora.
fn corpus(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in [
        "corpus-spamassassin",
        "corpus-nazario",
        "corpus-phishing-pot",
    ] {
        files.extend(unspoof_testkit::corpus_files(
            &root.join(dir),
            &["eml", "mbox"],
        ));
    }
    let mut messages = Vec::new();
    for f in files {
        let raw = std::fs::read(&f).unwrap();
        let name = f.strip_prefix(root).unwrap().display().to_string();
        if message::is_mbox(&raw) {
            for (i, m) in message::split_mbox(&raw).into_iter().enumerate() {
                messages.push((format!("{name}#{}", i + 1), m));
            }
        } else {
            messages.push((name, raw));
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_message_is_analysed() {
    let Some(root) = testdata() else {
        return;
    };
    let messages = corpus(&root);
    assert_eq!(
        messages.len(),
        1165,
        "the corpora should hold 1,165 messages"
    );

    let dns = Dns::zones(Zone::new(), Duration::from_secs(2))
        .await
        .unwrap();
    let engine = Engine::new(Policy::default(), dns);
    let mut actions = std::collections::BTreeMap::new();
    for (name, raw) in &messages {
        // Each message on its own task: a panic is caught and named instead of ending the run.
        let e = engine.clone();
        let r = raw.clone();
        let task = tokio::spawn(async move {
            let first = e.evaluate(&r, &Envelope::default()).await;
            let second = e.evaluate(&r, &Envelope::default()).await;
            (
                serde_json::to_string(&first).unwrap(),
                serde_json::to_string(&second).unwrap(),
            )
        });
        let (first, second) = match tokio::time::timeout(PER_MESSAGE_BOUND, task).await {
            Err(_) => panic!("{name}: no verdict within {PER_MESSAGE_BOUND:?}"),
            Ok(Err(e)) => panic!("{name}: the engine panicked: {e}"),
            Ok(Ok(pair)) => pair,
        };
        assert_eq!(
            first, second,
            "{name}: two analyses of the same message differ"
        );
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        *actions
            .entry(v["verdict"]["action"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    println!(
        "corpus: {} messages analysed; verdicts {actions:?}",
        messages.len()
    );
}
