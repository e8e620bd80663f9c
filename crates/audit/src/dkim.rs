//! DKIM keys (RFC 6376 3.6.1; key sizes RFC 8301 3.2): the selectors the site signs with (the
//! configuration), those seen in mail the store recorded, and a short list of names many
//! providers use ([`COMMON_SELECTORS`]). Selectors cannot be listed from DNS, so a key that is
//! not found under these names may still exist; the report says which names were tried.
//!
//! Before trying the common names, `_domainkey.<domain>` is asked once: NXDOMAIN there means no
//! selector exists below it (RFC 8020), and the common names cost nothing more.

use hickory_proto::rr::RecordType;
use mail_auth::common::{parse::TxtRecordParser, verify::DomainKey};
use rsa::{
    RsaPublicKey, pkcs1::DecodeRsaPublicKey, pkcs8::DecodePublicKey, traits::PublicKeyParts,
};
use serde::Serialize;

use crate::{Check, Finding, Fix, Options, Selector, Severity, dns::Resolver};

/// Selector names tried besides the configured and seen ones: Microsoft 365 (`selector1`,
/// `selector2`), Google Workspace (`google`), Mailchimp/Mandrill (`k1`), common defaults.
pub const COMMON_SELECTORS: &[&str] = &[
    "default",
    "dkim",
    "mail",
    "google",
    "selector1",
    "selector2",
    "k1",
    "s1",
    "s2",
    "smtp",
];

/// RFC 8301 3.2: verifiers MUST NOT accept RSA keys shorter than this.
pub const MIN_RSA_BITS: usize = 1024;
/// RFC 8301 3.2: signers SHOULD use at least this.
pub const GOOD_RSA_BITS: usize = 2048;

/// One selector looked up.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    pub selector: String,
    pub source: &'static str,
    pub name: String,
    /// `valid`, `revoked` (empty p=), `invalid`, `missing` or `unknown` (DNS failed).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<usize>,
    pub testing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The record we would publish for a configured key, when the caller knows it.
    #[serde(skip)]
    pub expected: Option<String>,
}

fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.split_whitespace().collect::<String>(),
            ))
        })
        .collect()
}

/// Bits of an RSA public key given as p= (SubjectPublicKeyInfo, or a bare RSAPublicKey as
/// some publish).
fn rsa_bits(der: &[u8]) -> Option<usize> {
    let key = RsaPublicKey::from_public_key_der(der)
        .or_else(|_| RsaPublicKey::from_pkcs1_der(der))
        .ok()?;
    Some(key.n().bits())
}

/// Judges one key record.
fn judge(mut k: KeyReport, record: &str) -> KeyReport {
    k.record = Some(record.to_string());
    let t = tags(record);
    let get = |n: &str| t.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    k.testing = get("t").is_some_and(|v| v.split(':').any(|f| f.trim().eq_ignore_ascii_case("y")));
    let key_type = get("k").unwrap_or("rsa").to_ascii_lowercase();
    k.key_type = Some(key_type.clone());
    if let Some(v) = get("v")
        && (v != "DKIM1" || t.first().map(|(n, _)| n.as_str()) != Some("v"))
    {
        k.status = "invalid";
        k.problem = Some(format!("v={v}: the version must be DKIM1 and come first"));
        return k;
    }
    match get("p") {
        None => {
            k.status = "invalid";
            k.problem = Some("no p= tag".into());
            return k;
        }
        Some("") => {
            k.status = "revoked";
            return k;
        }
        Some(p) => {
            let Ok(der) = data_encoding::BASE64.decode(p.as_bytes()) else {
                k.status = "invalid";
                k.problem = Some("p= is not base64".into());
                return k;
            };
            match key_type.as_str() {
                "rsa" => match rsa_bits(&der) {
                    Some(bits) => k.bits = Some(bits),
                    None => {
                        k.status = "invalid";
                        k.problem = Some("p= is not an RSA public key".into());
                        return k;
                    }
                },
                "ed25519" if der.len() == 32 => k.bits = Some(256),
                "ed25519" => {
                    k.status = "invalid";
                    k.problem = Some(format!(
                        "an Ed25519 key is 32 octets, this one {}",
                        der.len()
                    ));
                    return k;
                }
                other => {
                    k.status = "invalid";
                    k.problem = Some(format!("k={other} is not a key type verifiers know"));
                    return k;
                }
            }
        }
    }
    // mail-auth's own parse: what a verifier will make of it.
    match DomainKey::parse(record.as_bytes()) {
        Ok(_) => k.status = "valid",
        Err(e) => {
            k.status = "invalid";
            k.problem = Some(format!("verifiers cannot use it: {e}"));
        }
    }
    k
}

pub async fn check(resolver: &Resolver, domain: &str, options: &Options) -> Vec<KeyReport> {
    let mut selectors: Vec<Selector> = Vec::new();
    for s in &options.selectors {
        if !selectors
            .iter()
            .any(|x| x.name.eq_ignore_ascii_case(&s.name))
        {
            selectors.push(s.clone());
        }
    }
    let parent = resolver
        .ask(&format!("_domainkey.{domain}"), RecordType::TXT)
        .await;
    let nothing_below = parent.name_exists() == Some(false);
    if !nothing_below {
        for c in COMMON_SELECTORS {
            if !selectors.iter().any(|x| x.name.eq_ignore_ascii_case(c)) {
                selectors.push(Selector {
                    name: c.to_string(),
                    source: "common",
                    record: None,
                });
            }
        }
    }
    let mut out = Vec::new();
    for s in selectors {
        let name = format!("{}._domainkey.{domain}", s.name);
        let mut k = KeyReport {
            selector: s.name.clone(),
            source: s.source,
            name: name.clone(),
            status: "missing",
            record: None,
            key_type: None,
            bits: None,
            testing: false,
            problem: None,
            expected: s.record.clone(),
        };
        if nothing_below {
            out.push(k);
            continue;
        }
        let answer = resolver.ask(&name, RecordType::TXT).await;
        if let Some(why) = answer.failure() {
            k.status = "unknown";
            k.problem = Some(why.to_string());
            out.push(k);
            continue;
        }
        let records: Vec<String> = answer
            .txt()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .filter(|r| r.contains("p=") || r.starts_with("v=DKIM1"))
            .collect();
        match records.as_slice() {
            [] => {}
            [one] => k = judge(k, one),
            more => {
                k.record = Some(more.join(" | "));
                k.status = "invalid";
                k.problem = Some(format!(
                    "{} key records at one name: verifiers pick one at random",
                    more.len()
                ));
            }
        }
        // Common names that are not there are not worth a line.
        if k.source != "common" || k.status != "missing" {
            out.push(k);
        }
    }
    out
}

pub fn findings(keys: &[KeyReport], domain: &str, options: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    for k in keys {
        let evidence = k.record.as_ref().map(|r| format!("{} TXT \"{r}\"", k.name));
        let ours = k.source != "common";
        let with_evidence = |f: Finding| match &evidence {
            Some(e) => f.evidence(e.clone()),
            None => f,
        };
        let expected_fix = |f: Finding| match &k.expected {
            Some(r) => f.fix(Fix::txt(&k.name, r, "publish")),
            None => f,
        };
        match k.status {
            "missing" if ours => out.push(expected_fix(Finding::new(
                "dkim.missing_key",
                Check::Dkim,
                Severity::Error,
                "RFC 6376 3.6.2.2, 6.1.2",
                format!(
                    "selector {} ({}) has no key at {}: mail signed with it fails DKIM",
                    k.selector, k.source, k.name
                ),
            ))),
            "unknown" => out.push(Finding::new(
                "dkim.temperror",
                Check::Dkim,
                Severity::Error,
                "RFC 6376 6.1.2",
                format!(
                    "the key at {} could not be read ({})",
                    k.name,
                    k.problem.as_deref().unwrap_or("")
                ),
            )),
            "invalid" => out.push(expected_fix(with_evidence(Finding::new(
                "dkim.syntax",
                Check::Dkim,
                Severity::Error,
                "RFC 6376 3.6.1",
                format!(
                    "the key at {} is unusable: {}",
                    k.name,
                    k.problem.as_deref().unwrap_or("")
                ),
            )))),
            "revoked" => out.push(with_evidence(Finding::new(
                "dkim.revoked",
                Check::Dkim,
                if ours {
                    Severity::Error
                } else {
                    Severity::Info
                },
                "RFC 6376 3.6.1",
                format!(
                    "the key at {} is revoked (empty p=){}",
                    k.name,
                    if ours {
                        ", yet this selector is configured for signing"
                    } else {
                        ""
                    }
                ),
            ))),
            _ => {}
        }
        if k.status == "valid" {
            if let Some(bits) = k.bits.filter(|_| k.key_type.as_deref() == Some("rsa")) {
                if bits < MIN_RSA_BITS {
                    out.push(expected_fix(with_evidence(Finding::new(
                        "dkim.weak_key",
                        Check::Dkim,
                        Severity::Error,
                        "RFC 8301 3.2",
                        format!("{}: a {bits}-bit RSA key; verifiers MUST NOT accept keys under {MIN_RSA_BITS} bits", k.name),
                    ))));
                } else if bits < GOOD_RSA_BITS {
                    out.push(expected_fix(with_evidence(Finding::new(
                        "dkim.short_key",
                        Check::Dkim,
                        Severity::Warning,
                        "RFC 8301 3.2",
                        format!("{}: a {bits}-bit RSA key; signers SHOULD use {GOOD_RSA_BITS} bits (`unspoof dkim keygen`)", k.name),
                    ))));
                }
            }
            if k.testing {
                let fixed = k.record.as_deref().map(|r| {
                    r.split(';')
                        .filter(|t| !t.trim().to_ascii_lowercase().starts_with("t="))
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                let mut f = with_evidence(Finding::new(
                    "dkim.testing",
                    Check::Dkim,
                    Severity::Warning,
                    "RFC 6376 3.6.1",
                    format!(
                        "{}: t=y is left on: verifiers may treat failures as passes and DMARC may ignore it",
                        k.name
                    ),
                ));
                if let Some(fixed) = fixed {
                    f = f.fix(Fix::txt(&k.name, &fixed, "replace"));
                }
                out.push(f);
            }
        }
    }
    if !keys.iter().any(|k| k.status == "valid") {
        let tried: Vec<String> = keys.iter().map(|k| k.selector.clone()).collect();
        let tried = if tried.is_empty() {
            format!("_domainkey.{domain} does not exist")
        } else {
            format!("tried: {}", tried.join(", "))
        };
        let _ = options;
        out.push(Finding::new(
            "dkim.none_found",
            Check::Dkim,
            Severity::Warning,
            "RFC 6376 3.6.2.1; Google/Yahoo bulk sender rules 2024",
            format!("no valid DKIM key found ({tried}); selectors cannot be listed from DNS: name yours with --selector or [[gateway.dkim]]"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> KeyReport {
        KeyReport {
            selector: "s".into(),
            source: "config",
            name: "s._domainkey.example.com".into(),
            status: "missing",
            record: None,
            key_type: None,
            bits: None,
            testing: false,
            problem: None,
            expected: None,
        }
    }

    #[test]
    fn judges_keys() {
        assert_eq!(judge(k(), "v=DKIM1; p=").status, "revoked");
        assert_eq!(judge(k(), "v=DKIM1; k=rsa; p=!!!").status, "invalid");
        assert_eq!(judge(k(), "k=dsa; p=AAAA").status, "invalid");
        assert_eq!(judge(k(), "p=AAAA; v=DKIM1").status, "invalid");
        let ed = data_encoding::BASE64.encode(&[7u8; 32]);
        let r = judge(k(), &format!("v=DKIM1; k=ed25519; t=y; p={ed}"));
        assert_eq!((r.status, r.bits, r.testing), ("valid", Some(256), true));
    }
}
