//! The mail log reader (`unspoof_forensics::logs`): Postfix, Sendmail and Exim lines as
//! `unspoof trace` and `unspoof report` read them from a log file, whose contents a sender
//! partly writes (addresses, Message-IDs, HELO names, reply texts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use unspoof_forensics::logs::{exim_message_id, exim_sender, parse_line, read, sendmail_extra};

fuzz_target!(|data: &[u8]| {
    let lines = read(data, "fuzz.log", 2026).expect("reading from memory does not fail");
    let text = String::from_utf8_lossy(data);
    let mut parsed = 0;
    for line in text.lines() {
        if parse_line(line, "fuzz.log", 2026).is_some() {
            parsed += 1;
        }
        let _ = sendmail_extra(line);
        let _ = exim_sender(line);
        let _ = exim_message_id(line);
    }
    // The file reader finds no more events than its lines hold.
    assert!(lines.len() <= text.lines().count().max(1) || parsed > 0);
});
