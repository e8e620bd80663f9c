//! What is stored: one [`SessionRecord`] per SMTP connection, one [`MessageRecord`] per message,
//! one [`QuarantineEntry`] per quarantined message (with its raw bytes).
//!
//! Every record carries an id made where the record is made ([`new_id`], a UUIDv7: time-ordered,
//! unique across processes), so a record written twice (a replayed spool, a retried batch) is
//! stored once.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A new record id: a UUIDv7 in its 36-character text form. Ids made later sort later.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One SMTP connection (or milter connection), whether or not it carried a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Made at the source with [`new_id`]; [`MessageRecord::session_id`] points here.
    pub id: String,
    /// Unix time of the connect.
    pub started_at: i64,
    /// Unix time the connection ended, when it has.
    pub ended_at: Option<i64>,
    /// Which gateway or milter process wrote it (host name, or host name and instance).
    pub node: String,
    /// `inbound`, `submission`, `milter`.
    pub listener: String,
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    pub reverse_dns: Option<String>,
    pub helo: Option<String>,
    /// TLS version and cipher, e.g. `TLSv1.3 TLS_AES_256_GCM_SHA384`; `None` for plain text.
    pub tls: Option<String>,
    pub auth_user: Option<String>,
    /// Messages that reached end of DATA in this session.
    pub messages: u32,
    /// How it ended: `quit`, `timeout`, `dropped`, `limit`, ...
    pub outcome: String,
}

/// One message: the envelope, what the engine decided and why, and what happened downstream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Made at the source with [`new_id`].
    pub id: String,
    /// The [`SessionRecord`] this message came in, when the front door writes sessions.
    pub session_id: Option<String>,
    /// Unix time the DATA phase ended (or the milter saw end of message).
    pub received_at: i64,
    pub node: String,
    /// `inbound`, `submission`, `milter`.
    pub listener: String,
    /// Our queue id (gateway) or the MTA's (milter).
    pub queue_id: Option<String>,
    /// The Message-ID header without angle brackets.
    pub message_id: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    pub reverse_dns: Option<String>,
    pub helo: Option<String>,
    pub tls: Option<String>,
    pub auth_user: Option<String>,
    /// MAIL FROM without angle brackets; `Some("")` for the null sender.
    pub mail_from: Option<String>,
    /// RCPT TO addresses.
    pub recipients: Vec<String>,
    /// The From header's address (RFC5322.From), when the message had one.
    pub from: Option<String>,
    pub subject: Option<String>,
    /// Message size in bytes.
    pub size: u64,
    /// The front door's outcome (`unspoof_engine::Outcome`, one enum for every door): `accept`,
    /// `tag`, `quarantine`, `reject`, `defer` (the engine's), or the door's own `refused`,
    /// `tempfail`, `unchecked`, `skipped`.
    pub action: String,
    /// Reason codes, in the engine's order (`dmarc.reject`, ...).
    pub reasons: Vec<String>,
    /// What we answered the client.
    pub reply: Option<String>,
    /// The downstream MTA's reply to the relayed message.
    pub downstream_reply: Option<String>,
    /// Where a quarantined or locally delivered message went (a quarantine id, a Maildir path).
    pub stored_at: Option<String>,
    /// Microseconds from end of data to our reply.
    pub latency_us: Option<u64>,
    /// One line of authentication results, e.g. `spf=pass dkim=pass dmarc=fail arc=none`.
    pub auth_summary: Option<String>,
    /// One line of hop trace, e.g. `3 hops; origin 192.0.2.7 (mail.example.com); anomalies: ...`.
    pub trace_summary: Option<String>,
    /// The DNS answers the verdict used: the DNS view and every piece of DNS evidence
    /// (free-form JSON; [`MessageRecord::with_analysis`] fills it from the analysis).
    pub dns: Option<serde_json::Value>,
    /// The engine's whole `Analysis` (schema `unspoof.analysis/1`), verdict and trace included.
    pub analysis: Option<JsonText>,
}

impl MessageRecord {
    /// Fills the verdict, the From/Subject/Message-ID, the authentication and trace summaries,
    /// the DNS evidence and the whole analysis JSON from the engine's answer. The analysis is
    /// serialised once, straight to text (a busy gateway logs thousands a second), and the
    /// summaries are read from the typed analysis.
    pub fn with_analysis(self, analysis: &unspoof_engine::Analysis) -> Self {
        let mut record = self.summarise(analysis);
        record.analysis = serde_json::to_string(analysis).ok().map(JsonText);
        record
    }

    /// [`MessageRecord::with_analysis`] without the whole analysis: what a plainly accepted
    /// message keeps (`[store] full_analysis`), a tenth of the bytes and of the cost. It
    /// still keeps, under the analysis's own paths, what the DMARC aggregate report of the
    /// day counts (crates/reports `rows_from_verdicts`): most mail is plainly accepted, and a
    /// report without it would tell a domain owner a fraction of the truth.
    pub fn with_analysis_summary(mut self, analysis: &unspoof_engine::Analysis) -> Self {
        self.analysis = Some(JsonText(dmarc_evidence(analysis)));
        self.summarise(analysis)
    }

    fn summarise(mut self, analysis: &unspoof_engine::Analysis) -> Self {
        self.action = analysis.verdict.action.as_str().to_string();
        self.reasons = analysis
            .verdict
            .reasons
            .iter()
            .map(|r| r.code.clone())
            .collect();
        if self.message_id.is_none() {
            self.message_id = analysis
                .message
                .message_id
                .as_deref()
                .map(normalize_message_id);
        }
        if self.from.is_none() {
            self.from = analysis.message.from.clone();
        }
        if self.subject.is_none() {
            self.subject = analysis.message.subject.clone();
        }
        self.auth_summary = Some(auth_summary(&analysis.auth));
        self.trace_summary = Some(trace_summary(&analysis.trace));
        self.dns = Some(dns_evidence(analysis));
        self
    }
}

/// JSON kept as text: the engine's whole analysis, written and read back as it was made. It
/// serialises as the JSON it holds (not as a string), so `unspoof log show --json` prints an
/// object; [`JsonText::value`] parses it when a reader needs to walk it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(pub String);

impl JsonText {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed value (`Null` if the text is not JSON, which the store never writes).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(v: serde_json::Value) -> Self {
        JsonText(v.to_string())
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Ok(JsonText(raw.get().to_string()))
    }
}

/// `<abc@x>` → `abc@x`: Message-IDs are stored and searched without angle brackets.
pub fn normalize_message_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// The domain of an address (`a@Example.COM` → `example.com`), `None` without an `@`.
/// Takes the address out of a display form (`Name <a@b>`) first.
pub fn domain_of(address: &str) -> Option<String> {
    let addr = match (address.rfind('<'), address.rfind('>')) {
        (Some(a), Some(b)) if a < b => &address[a + 1..b],
        _ => address,
    };
    let (_, domain) = addr.trim().rsplit_once('@')?;
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    (!d.is_empty()).then_some(d)
}

/// `spf=pass dkim=pass(example.com),fail(other.example) dmarc=pass arc=none`.
fn auth_summary(auth: &unspoof_engine::AuthResults) -> String {
    let dkim = if auth.dkim.is_empty() {
        "none".to_string()
    } else {
        auth.dkim
            .iter()
            .map(|s| format!("{}({})", s.result, s.domain))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "spf={} dkim={} dmarc={} arc={}",
        auth.spf.result, dkim, auth.dmarc.result, auth.arc.result
    )
}

/// `3 hops; origin 192.0.2.7 (mail.example.com); anomalies: trace.private_origin`.
fn trace_summary(trace: &unspoof_engine::Trace) -> String {
    let hops = trace.hops.len();
    let mut s = format!("{hops} hop{}", if hops == 1 { "" } else { "s" });
    if let Some(origin) = &trace.origin {
        s.push_str(&format!("; origin {}", origin.ip));
        if let Some(r) = &origin.rdns {
            s.push_str(&format!(" ({r})"));
        }
    }
    if !trace.anomalies.is_empty() {
        let codes: Vec<&str> = trace.anomalies.iter().map(|a| a.code).collect();
        s.push_str(&format!("; anomalies: {}", codes.join(" ")));
    }
    s
}

/// The DNS view and what the verdict rests on from DNS: the SPF path, the DMARC policy, each
/// DKIM key's result and every reason's evidence.
/// The parts of an analysis a DMARC aggregate report row is made of, at their paths in the
/// whole analysis (`auth.checked`, `auth.dmarc`, each DKIM signature's domain, selector and
/// result, SPF's domain and result, the envelope), marked `"summary": true`.
fn dmarc_evidence(a: &unspoof_engine::Analysis) -> String {
    use unspoof_engine::Word;
    use unspoof_engine::auth::DmarcCheck;
    // Serialised straight from the analysis's own fields: going through a whole
    // `serde_json::Value` of `auth` first cost more than the rest of the record.
    #[derive(Serialize)]
    struct Evidence<'a> {
        summary: bool,
        auth: Auth<'a>,
        envelope: Envelope<'a>,
    }
    #[derive(Serialize)]
    struct Auth<'a> {
        checked: bool,
        dmarc: &'a DmarcCheck,
        dkim: Vec<Signature<'a>>,
        spf: Spf<'a>,
        spf_helo: Spf<'a>,
    }
    #[derive(Serialize)]
    struct Signature<'a> {
        domain: &'a str,
        selector: &'a str,
        result: Word,
    }
    #[derive(Serialize)]
    struct Spf<'a> {
        domain: &'a str,
        result: Word,
    }
    #[derive(Serialize)]
    struct Envelope<'a> {
        ip: Option<IpAddr>,
        mail_from: Option<&'a str>,
        helo: Option<&'a str>,
    }
    let auth = &a.auth;
    let evidence = Evidence {
        summary: true,
        auth: Auth {
            checked: auth.checked,
            dmarc: &auth.dmarc,
            dkim: auth
                .dkim
                .iter()
                .map(|s| Signature {
                    domain: &s.domain,
                    selector: &s.selector,
                    result: s.result,
                })
                .collect(),
            spf: Spf {
                domain: &auth.spf.domain,
                result: auth.spf.result,
            },
            spf_helo: Spf {
                domain: &auth.spf_helo.domain,
                result: auth.spf_helo.result,
            },
        },
        envelope: Envelope {
            ip: a.envelope.ip,
            mail_from: a.envelope.mail_from.as_deref(),
            helo: a.envelope.helo.as_deref(),
        },
    };
    // A struct of strings, numbers and the engine's own serialisable types: never fails.
    serde_json::to_string(&evidence).unwrap_or_default()
}

fn dns_evidence(a: &unspoof_engine::Analysis) -> serde_json::Value {
    let auth = &a.auth;
    let evidence: Vec<serde_json::Value> = a
        .verdict
        .reasons
        .iter()
        .filter(|r| !r.evidence.is_empty())
        .map(|r| serde_json::json!({ "code": r.code, "evidence": r.evidence }))
        .collect();
    let dkim: Vec<serde_json::Value> = auth
        .dkim
        .iter()
        .map(|s| serde_json::json!({ "domain": s.domain, "selector": s.selector, "result": s.result }))
        .collect();
    serde_json::json!({
        "view": a.dns,
        "spf": { "domain": auth.spf.domain, "result": auth.spf.result,
                 "mechanism": auth.spf.mechanism },
        "dmarc": { "domain": auth.dmarc.domain, "result": auth.dmarc.result,
                   "policy": auth.dmarc.policy },
        "dkim": dkim,
        "reasons": evidence,
    })
}

/// A message to quarantine: the raw bytes (our headers already prepended) and what identifies
/// it in `unspoof quarantine list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewQuarantine {
    /// Made at the source with [`new_id`]; `quarantine show/release/delete` take it.
    pub id: String,
    /// The [`MessageRecord`] of the same message, when the front door writes one.
    pub message_record: Option<String>,
    pub quarantined_at: i64,
    pub node: String,
    pub queue_id: Option<String>,
    pub message_id: Option<String>,
    pub mail_from: Option<String>,
    pub recipients: Vec<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub reasons: Vec<String>,
    /// The message as it would have been delivered. In JSON (a journal line, a spool file)
    /// a hex string, see `hex_bytes`.
    #[serde(with = "hex_bytes")]
    pub raw: Vec<u8>,
}

/// Where a quarantined message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineStatus {
    /// Waiting for a person.
    Held,
    /// Claimed by `release`, being delivered.
    Releasing,
    /// Delivered on a person's word.
    Released,
    /// Thrown away on a person's word (the raw bytes are gone).
    Deleted,
}

impl QuarantineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineStatus::Held => "held",
            QuarantineStatus::Releasing => "releasing",
            QuarantineStatus::Released => "released",
            QuarantineStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "held" => QuarantineStatus::Held,
            "releasing" => QuarantineStatus::Releasing,
            "released" => QuarantineStatus::Released,
            "deleted" => QuarantineStatus::Deleted,
            _ => return None,
        })
    }
}

/// A stored quarantine entry. `raw` is empty in listings and after `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineEntry {
    #[serde(flatten)]
    pub message: NewQuarantine,
    pub size: u64,
    pub status: QuarantineStatus,
    /// Who released or deleted it (or is releasing it).
    pub actor: Option<String>,
    /// Unix time of the release or delete.
    pub acted_at: Option<i64>,
    /// The downstream's reply or the Maildir path of a release; the error of a failed one.
    pub result: Option<String>,
}

/// Raw bytes as a lowercase hex string in the JSON spool and journal: two octets a byte, so
/// a gateway's largest message (`max_message_size`, 25 MiB by default) is a 50 MiB line.
/// serde's default, an array of numbers (`[72,101,...]`), costs 3.6 octets a byte of text on
/// average; base64 (the message layer's `codec`, which the store already uses) would cost
/// 1.33, but it is a format change: the spool files and journal segments an earlier version
/// left (hex) must still read, so the reader would have to take both. Hex is exact for any
/// bytes (a JSON string of the raw text is not: mail need not be UTF-8) and one table lookup
/// a nibble to write.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(b.len() * 2);
        for &x in b {
            out.push(HEX[(x >> 4) as usize] as char);
            out.push(HEX[(x & 15) as usize] as char);
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        let val = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(serde::de::Error::custom("bad hex")),
        };
        let b = s.as_bytes();
        if b.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd hex length"));
        }
        b.chunks(2)
            .map(|p| Ok(val(p[0])? << 4 | val(p[1])?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_message_ids() {
        assert_eq!(domain_of("A@Example.COM").as_deref(), Some("example.com"));
        assert_eq!(domain_of("Bob <b@x.org.>").as_deref(), Some("x.org"));
        assert_eq!(domain_of(""), None);
        assert_eq!(normalize_message_id(" <a@b> "), "a@b");
    }

    #[test]
    fn quarantine_spools_exact_bytes() {
        let q = NewQuarantine {
            raw: (0..=255).collect(),
            ..Default::default()
        };
        let back: NewQuarantine =
            serde_json::from_str(&serde_json::to_string(&q).unwrap()).unwrap();
        assert_eq!(back.raw, q.raw);
    }
}
