//! The header splitter on arbitrary bytes: `Headers::parse`, with and without the CRLF
//! restoration the engine does first, plus the helpers that read its output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unspoof_engine::message::{self, Headers};

fuzz_target!(|data: &[u8]| {
    for raw in [data, &*message::to_crlf(data)] {
        let h = Headers::parse(raw);
        assert!(h.body_offset <= raw.len());
        for f in &h.fields {
            assert!(f.offset < raw.len());
            let _ = f.value_unfolded();
            let _ = f.is("From");
        }
        let _ = h.first("From");
        let _ = h.all("Received").count();
    }
    let _ = message::split_mbox(data);
});
