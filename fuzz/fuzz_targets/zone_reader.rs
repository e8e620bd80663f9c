//! The zone reader (`unspoof_engine::dns::Zone::load_text`, our own RFC 1035 master-file
//! reader: `$ORIGIN`, `$TTL`, parentheses, quoted strings split over lines) and the loopback
//! zone server's answer to a query (`Zone::respond`, which reads a DNS message from whoever
//! sends one). The input is the zone text, then after the first NUL the query's octets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unspoof_engine::dns::Zone;

fuzz_target!(|data: &[u8]| {
    let (text, query) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let text = String::from_utf8_lossy(text);
    let mut zone = Zone::new();
    let _ = zone.load_text(&text, None);
    if let Some(answer) = zone.respond(query) {
        // An answer is a DNS message: at least its 12-octet header, with the query's id.
        assert!(answer.len() >= 12);
        assert_eq!(answer[..2], query[..2]);
    }
});
