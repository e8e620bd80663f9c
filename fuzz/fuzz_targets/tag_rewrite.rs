//! The tagging rewrite and its MIME walker (`unspoof_engine::tag`) on arbitrary messages: the
//! Subject prefix, the banner put into every text and HTML part however the parts nest or lie
//! about their boundaries, charsets and transfer encodings, and the stale verdict fields taken
//! out. The analysis is the engine's own of the same bytes (offline), with the action forced to
//! `tag` so the rewrite always runs.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use unspoof_engine::{Action, Dns, Engine, Policy, message::Headers, tag};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    static STATE: OnceLock<(tokio::runtime::Runtime, Engine)> = OnceLock::new();
    let (rt, engine) = STATE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let policy = Policy::parse(common::POLICY, "fuzz policy").unwrap();
        (rt, Engine::new(policy, Dns::offline()))
    });
    let (envelope, raw) = common::split(data);
    let mut analysis = rt.block_on(engine.evaluate(raw, &envelope));
    common::check(&analysis);
    analysis.verdict.action = Action::Tag;
    let policy = engine.policy();
    let rewritten = tag::rewrite(raw, &analysis, &policy.tag);
    // What comes out is a message again: its header section reads.
    let _ = Headers::parse(&rewritten);
    let delivered = tag::tag_message(raw, &analysis, &policy.tag, "mx.example.net");
    assert!(delivered.len() >= rewritten.len());
    // Tagging a tagged message again must not fail either (a message tagged by another gateway
    // of the site, or re-injected).
    let _ = tag::rewrite(&rewritten, &analysis, &policy.tag);
});
