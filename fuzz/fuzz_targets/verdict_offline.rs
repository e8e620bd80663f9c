//! The whole verdict on arbitrary bytes, without DNS (`Dns::offline`): every parser and every
//! finding the engine runs on a message, and the JSON it ships.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use unspoof_engine::{Dns, Engine, Envelope, Policy};

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
    let (envelope, raw): (Envelope, &[u8]) = common::split(data);
    let analysis = rt.block_on(engine.evaluate(raw, &envelope));
    common::check(&analysis);
});
