//! The From and Reply-To mailboxes as the common parsers (mail-parser) read them: what DMARC
//! judges and what the findings compare, read once per message.

use crate::Headers;

/// One mailbox of the From header, as the common parsers (mail-parser) read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, decoded.
    pub name: Option<String>,
    /// The address, as written (case kept).
    pub address: String,
    /// The domain part, lower case; empty when the address has none.
    pub domain: String,
}

impl Mailbox {
    pub fn new(name: Option<String>, address: &str) -> Self {
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| {
                d.trim_end_matches('>')
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        Mailbox {
            name: name.filter(|n| !n.trim().is_empty()),
            address: address.to_string(),
            domain,
        }
    }
}

/// Reads From and Reply-To with mail-parser, the parser most mail software resembles.
pub fn read_addresses(headers: &Headers<'_>) -> (Vec<Mailbox>, Vec<Mailbox>) {
    let mut block = Vec::new();
    for name in ["From", "Reply-To"] {
        if let Some(h) = headers.first(name) {
            block.extend_from_slice(name.as_bytes());
            block.push(b':');
            block.extend_from_slice(h.value);
            block.extend_from_slice(b"\r\n");
        }
    }
    block.extend_from_slice(b"\r\n");
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(&block[..]) else {
        return (Vec::new(), Vec::new());
    };
    let list = |a: Option<&mail_parser::Address<'_>>| -> Vec<Mailbox> {
        a.map(|a| {
            a.iter()
                .filter_map(|m| {
                    let addr = m.address.as_deref()?;
                    Some(Mailbox::new(m.name.as_deref().map(str::to_string), addr))
                })
                .collect()
        })
        .unwrap_or_default()
    };
    (list(parsed.from()), list(parsed.reply_to()))
}
