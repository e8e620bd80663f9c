//! The real engine behind the gateway (offline DNS): what `unspoof serve` runs.

mod common;

use std::sync::Arc;

use common::*;
use unspoof_engine::{Dns, Engine, Policy};
use unspoof_gateway::{EngineDecider, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_through_the_real_engine_lands_with_its_authentication_results() {
    let c = config("engine");
    let dir = c.data_dir.clone();
    // The authserv-id is the policy's hostname, which `unspoof serve` sets from the gateway's.
    let policy = Policy::parse("hostname = \"mx.test\"\n", "p.toml").unwrap();
    let decider = Arc::new(EngineDecider::new(
        Engine::new(policy, Dns::offline()),
        None,
    ));
    let handle = Gateway::new(c, decider.clone()).start().await.unwrap();
    let (code, out) = swaks(
        handle.inbound,
        &[
            "--from",
            "someone@remote.test",
            "--to",
            "postmaster@example.org",
            "--header",
            "Subject: via engine",
        ],
    )
    .await;
    let text = std::fs::read_to_string(dir.join("sessions.jsonl")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    // Whatever the verdict offline, the gateway did what it says for that verdict.
    match rec["outcome"].as_str().unwrap() {
        "accept" | "tag" => {
            assert_eq!(code, 0, "{out}");
            let m = &maildir_messages(&dir.join("maildir"))[0];
            assert!(m.contains("Authentication-Results: mx.test"), "{m}");
        }
        "quarantine" => {
            assert_eq!(code, 0, "{out}");
            assert_eq!(maildir_messages(&dir.join("maildir/.Quarantine")).len(), 1);
        }
        "reject" => assert!(out.contains("550 5.7.1 Message refused: "), "{out}"),
        other => panic!("unexpected outcome {other}: {text}"),
    }
    // Reload with no policy file is a no-op that succeeds.
    assert!(handle.reload().is_ok());
    assert!(handle.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reports_a_broken_policy_and_keeps_the_old_one() {
    let dir = temp_dir("policy");
    let path = dir.join("policy.toml");
    std::fs::write(&path, "hostname = \"mx.test\"\n").unwrap();
    let engine = Engine::new(Policy::load(&path).unwrap(), Dns::offline());
    let source = path.clone();
    let decider = EngineDecider::new(
        engine,
        Some(Box::new(move || {
            Policy::load(&source).map_err(|e| e.to_string())
        })),
    );
    std::fs::write(&path, "no_such_key = 1\n").unwrap();
    use unspoof_gateway::Decide;
    assert!(decider.reload().is_err());
    assert_eq!(decider.engine().policy().hostname, "mx.test");
    std::fs::write(&path, "hostname = \"mx2.test\"\n").unwrap();
    assert!(decider.reload().is_ok());
    assert_eq!(decider.engine().policy().hostname, "mx2.test");
}
