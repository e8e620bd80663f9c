//! What the verdict targets share: the policy and how an input becomes envelope + message.

use std::net::{IpAddr, Ipv4Addr};

use unspoof_engine::{Analysis, Envelope};

/// Protects a domain and a person, so every finding module has something to compare with.
pub const POLICY: &str = r#"
hostname = "mx.example.net"
protected_domains = ["example.com", "example.net"]
internal_networks = ["10.0.0.0/8"]
trusted_relays = ["192.0.2.0/24"]
trusted_arc_sealers = ["example.org"]

[[protected_people]]
name = "Joe SixPack"
addresses = ["joe@example.com"]
"#;

/// The input is `MAIL FROM` up to the first newline, then the message. An empty first line
/// leaves the envelope to be reconstructed from the message, as `unspoof analyze` does.
pub fn split(data: &[u8]) -> (Envelope, &[u8]) {
    let (first, raw) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let mut envelope = Envelope::default();
    if let Some((&b, rest)) = first.split_first() {
        envelope.ip = Some(IpAddr::V4(Ipv4Addr::new(b, 51, 100, 7)));
        envelope.helo = Some("mail.example.org".into());
        envelope.mail_from = Some(String::from_utf8_lossy(rest).into_owned());
    }
    (envelope, raw)
}

/// What must hold for every analysis: it serialises, and its action is the strictest reason's.
pub fn check(analysis: &Analysis) {
    serde_json::to_string(analysis).unwrap();
    let strictest = analysis.verdict.reasons.iter().map(|r| r.action).max();
    assert_eq!(
        strictest.unwrap_or(unspoof_engine::Action::Accept),
        analysis.verdict.action
    );
    let _ = analysis.authentication_results("mx.example.net");
}
