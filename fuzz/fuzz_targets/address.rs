//! The address parser (`unspoof_engine::address`) on arbitrary bytes: address lists, RFC 5321
//! paths, every parser style's reading and the encoded-word decoder. Beyond "no panic", checks
//! that readings are normalised and that a defect-free mailbox survives a round trip through
//! `Mailbox::address`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unspoof_engine::address::{
    self, AddressList, addresses_in_text, decode_encoded_words, parse_address_list, parse_path,
};

fuzz_target!(|data: &[u8]| {
    let list = parse_address_list(data);
    check_list(&list);
    let path = parse_path(data);
    if let Some(m) = &path.mailbox {
        let _ = m.address();
    }
    assert!(!(path.null && path.mailbox.is_some()));
    for r in address::readings(data)
        .into_iter()
        .chain(address::path_readings(data))
    {
        assert!(!r.domain.is_empty());
        assert_eq!(r.domain, r.domain.to_ascii_lowercase());
        assert!(!r.domain.ends_with('.'));
    }
    for word in decode_encoded_words(data) {
        let _ = addresses_in_text(word.as_bytes());
    }
});

fn check_list(list: &AddressList) {
    // Each defect once.
    let mut seen = list.defects.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), list.defects.len());
    if !list.defects.is_empty() {
        for m in list.mailboxes() {
            let _ = m.address();
        }
        return;
    }
    // A clean parse: every mailbox reads back the same.
    for m in list.mailboxes() {
        let written = m.address();
        let again = parse_address_list(format!(" {written}").as_bytes());
        let back: Vec<_> = again.mailboxes().collect();
        assert_eq!(back.len(), 1, "{written:?} -> {again:?}");
        assert_eq!(back[0].local_part, m.local_part, "{written:?}");
        assert_eq!(back[0].domain_key(), m.domain_key(), "{written:?}");
    }
}
