//! The gateway's DATA reader (`unspoof_gateway::data::DotReader`): dot-unstuffing, the end
//! marker, bare CR/LF and NUL refusal, the size limit, then `check_shape`'s line, field and
//! header-size limits. The first byte of the input picks the chunk size the octets arrive in;
//! the rest is what the client sends after DATA.
//!
//! Checked: chunking never changes the outcome (where DATA ends, the message or the defect), a
//! message it accepts has every line ending in CRLF and no NUL, and the end marker is within
//! what was fed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unspoof_gateway::data::{DotReader, check_shape};

const MAX_SIZE: usize = 1 << 20;

/// Feeds `input` in chunks of `chunk` octets: where the data ended (octets consumed, if it
/// did) and what it read.
fn read(input: &[u8], chunk: usize) -> (Option<usize>, String, Option<Vec<u8>>) {
    let mut reader = DotReader::new(MAX_SIZE);
    let mut consumed = 0;
    let mut ended = None;
    for part in input.chunks(chunk.max(1)) {
        match reader.feed(part) {
            Some(n) => {
                assert!(n <= part.len(), "end marker beyond the chunk");
                ended = Some(consumed + n);
                break;
            }
            None => consumed += part.len(),
        }
    }
    let done = reader.is_done();
    assert_eq!(done, ended.is_some());
    match reader.finish() {
        Ok(msg) => (ended, String::new(), Some(msg)),
        Err(d) => (ended, format!("{d:?}"), None),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let whole = read(input, input.len().max(1));
    let chunked = read(input, usize::from(first % 64) + 1);
    assert_eq!(whole, chunked, "chunking changed the outcome");
    if let (Some(_), _, Some(msg)) = &whole {
        assert!(!msg.contains(&0), "NUL kept");
        for (i, &b) in msg.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && msg[i - 1] == b'\r', "bare LF kept at {i}");
            }
            if b == b'\r' {
                assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR kept at {i}");
            }
        }
        let _ = check_shape(msg, 1000, 100, 64 * 1024);
    }
});
