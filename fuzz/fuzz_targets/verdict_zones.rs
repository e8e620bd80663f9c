//! The whole verdict on arbitrary bytes with DNS answered from an empty zone
//! (`Dns::zones(Zone::new())`: every name is NXDOMAIN), so SPF, DKIM, DMARC and ARC run their
//! lookups. The zone server lives on a tokio runtime kept for the whole run.
#![no_main]

use std::{sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use unspoof_engine::{Dns, Engine, Envelope, Policy, dns::Zone};

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
        let dns = rt
            .block_on(Dns::zones(Zone::new(), Duration::from_millis(500)))
            .unwrap();
        (rt, Engine::new(policy, dns))
    });
    let (envelope, raw): (Envelope, &[u8]) = common::split(data);
    let analysis = rt.block_on(engine.evaluate(raw, &envelope));
    common::check(&analysis);
});
