//! The Received/trace parser on arbitrary bytes: `build_trace` over the headers of the input,
//! with the envelope IP and reference time taken from its first bytes so both paths run.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use unspoof_engine::{
    message::{self, Headers},
    trace::{TrustConfig, build_trace},
};

fuzz_target!(|data: &[u8]| {
    let (ip, time, raw) = match data {
        [a, b, c, d, t0, t1, t2, t3, rest @ ..] => {
            let ip = (*a & 1 == 1).then(|| IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)));
            let t = i32::from_le_bytes([*t0, *t1, *t2, *t3]);
            let time = (t & 1 == 1).then_some(i64::from(t) * 64);
            (ip, time, rest)
        }
        _ => (None, None, data),
    };
    let raw = message::to_crlf(raw);
    let headers = Headers::parse(&raw);
    let trust = TrustConfig {
        internal_networks: vec!["10.0.0.0/8".parse().unwrap()],
        trusted_relays: vec!["192.0.2.0/24".parse().unwrap()],
    };
    let trace = build_trace(&headers, ip, &trust, time);
    // The trace ships in the JSON verdict.
    serde_json::to_string(&trace).unwrap();
});
