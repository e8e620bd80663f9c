//! Lookalike domains already registered: candidates made from the domain's registrable label
//! (the same TLD swapped for common ones, characters Unicode's confusables data says look the
//! same, a whole-script Cyrillic copy, omitted, swapped and doubled letters), kept only when
//! the engine's own lookalike rules (`unspoof_engine::findings::lookalike_code`, TR39
//! skeletons, edit distance, cousins) would flag them in From, then looked up: one MX query
//! each, and an A query for a name that exists without MX.
//!
//! What looks like what comes from the engine's fold (UTS #39 skeletons), never from a table
//! written here: the substitutions are found by folding every ASCII letter, digit and pair of
//! them, and the Cyrillic block, once.

use std::{collections::HashMap, sync::LazyLock};

use hickory_proto::rr::RecordType;
use serde::Serialize;
use unspoof_engine::findings::{confusable_fold, lookalike_code};

use crate::{Check, Finding, Severity, dns::Resolver};

/// Top-level domains tried in place of the domain's own.
pub const OTHER_TLDS: &[&str] = &["com", "net", "org", "co", "info"];

#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    pub domain: String,
    /// How it was made: `tld`, `confusable`, `homoglyph`, `omission`, `transposition`,
    /// `repetition`.
    pub kind: &'static str,
    /// The engine's reason code for it (`lookalike.confusable`, ...).
    pub engine_code: &'static str,
    pub mx: Vec<String>,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct LookalikeReport {
    pub checked: bool,
    pub candidates: usize,
    pub looked_up: usize,
    pub registered: Vec<Registered>,
    /// Candidates whose lookup failed.
    pub unknown: Vec<String>,
    #[serde(skip)]
    pub findings: Vec<Finding>,
}

impl LookalikeReport {
    pub fn skipped() -> Self {
        LookalikeReport::default()
    }
}

const ALNUM: &str = "abcdefghijklmnopqrstuvwxyz0123456789";

/// Fold -> the ASCII strings of one or two characters with that fold.
static ASCII_BY_FOLD: LazyLock<HashMap<String, Vec<String>>> = LazyLock::new(|| {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for a in ALNUM.chars() {
        m.entry(confusable_fold(&a.to_string()))
            .or_default()
            .push(a.to_string());
        for b in ALNUM.chars() {
            let s: String = [a, b].iter().collect();
            m.entry(confusable_fold(&s)).or_default().push(s);
        }
    }
    m
});

/// ASCII letter -> a Cyrillic letter with the same fold.
static CYRILLIC: LazyLock<HashMap<char, char>> = LazyLock::new(|| {
    let mut m = HashMap::new();
    for c in '\u{0400}'..='\u{052f}' {
        let f = confusable_fold(&c.to_string());
        if f.len() == 1 {
            let a = f.chars().next().unwrap_or(' ');
            if a.is_ascii_lowercase() {
                m.entry(a).or_insert(c);
            }
        }
    }
    m
});

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The candidates for `domain`, in the order they are looked up, each with its kind.
pub fn candidates(domain: &str) -> Vec<(String, &'static str)> {
    let Some(reg) = unspoof_engine::domain::registrable(domain) else {
        return Vec::new();
    };
    let Some(suffix) = psl::suffix_str(&reg) else {
        return Vec::new();
    };
    let Some(label) = reg.strip_suffix(suffix).and_then(|l| l.strip_suffix('.')) else {
        return Vec::new();
    };
    let chars: Vec<char> = label.chars().collect();
    let mut out: Vec<(String, &'static str)> = Vec::new();
    let mut push = |l: String, kind: &'static str, suffix: &str| {
        if (l != label || kind == "tld") && (kind == "homoglyph" || valid_label(&l)) {
            out.push((format!("{l}.{suffix}"), kind));
        }
    };
    for t in OTHER_TLDS {
        if *t != suffix {
            push(label.to_string(), "tld", t);
        }
    }
    // Confusable substitutions: one character for others that fold the same, and a pair of
    // characters for one ("rn" for "m" and back).
    for (i, c) in chars.iter().enumerate() {
        if let Some(alts) = ASCII_BY_FOLD.get(&confusable_fold(&c.to_string())) {
            for alt in alts {
                let mut l: String = chars[..i].iter().collect();
                l.push_str(alt);
                l.extend(&chars[i + 1..]);
                push(l, "confusable", suffix);
            }
        }
        if i + 1 < chars.len() {
            let pair: String = chars[i..i + 2].iter().collect();
            if let Some(alts) = ASCII_BY_FOLD.get(&confusable_fold(&pair)) {
                for alt in alts.iter().filter(|a| a.len() == 1) {
                    let mut l: String = chars[..i].iter().collect();
                    l.push_str(alt);
                    l.extend(&chars[i + 2..]);
                    push(l, "confusable", suffix);
                }
            }
        }
    }
    // The whole label in Cyrillic letters that look Latin (registries refuse mixed scripts,
    // so a homograph is registered whole-script).
    if chars.iter().all(|c| CYRILLIC.contains_key(c)) {
        let cyr: String = chars.iter().filter_map(|c| CYRILLIC.get(c)).collect();
        if let Ok(ascii) = idna::domain_to_ascii(&cyr) {
            push(ascii, "homoglyph", suffix);
        }
    }
    for i in 0..chars.len() {
        let l: String = chars
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, c)| c)
            .collect();
        push(l, "omission", suffix);
    }
    for i in 0..chars.len().saturating_sub(1) {
        if chars[i] != chars[i + 1] {
            let mut c = chars.clone();
            c.swap(i, i + 1);
            push(c.into_iter().collect(), "transposition", suffix);
        }
    }
    for i in 0..chars.len() {
        let mut c = chars.clone();
        c.insert(i, chars[i]);
        push(c.into_iter().collect(), "repetition", suffix);
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|(d, _)| seen.insert(d.clone()) && lookalike_code(d, domain).is_some());
    out
}

pub async fn check(resolver: &Resolver, domain: &str, limit: usize) -> LookalikeReport {
    let all = candidates(domain);
    let mut report = LookalikeReport {
        checked: true,
        candidates: all.len(),
        ..Default::default()
    };
    for (candidate, kind) in all.into_iter().take(limit) {
        report.looked_up += 1;
        let mx = resolver.ask(&candidate, RecordType::MX).await;
        if mx.failure().is_some() {
            report.unknown.push(candidate);
            continue;
        }
        if mx.name_exists() != Some(true) {
            continue;
        }
        let hosts: Vec<String> = mx
            .records()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::MX(m) => Some(format!(
                    "{} {}",
                    m.preference,
                    crate::dns::plain(&m.exchange)
                )),
                _ => None,
            })
            .collect();
        let addresses = if hosts.is_empty() {
            resolver
                .ask(&candidate, RecordType::A)
                .await
                .addrs()
                .iter()
                .map(|a| a.to_string())
                .collect()
        } else {
            Vec::new()
        };
        if hosts.is_empty() && addresses.is_empty() {
            continue;
        }
        let code = lookalike_code(&candidate, domain).unwrap_or("lookalike");
        let unicode = idna::domain_to_unicode(&candidate).0;
        let shown = if unicode != candidate {
            format!("{candidate} ({unicode})")
        } else {
            candidate.clone()
        };
        let mut f = Finding::new(
            "lookalike.registered",
            Check::Lookalike,
            Severity::Warning,
            "UTS #39 confusables; unspoof lookalike rules",
            format!(
                "{shown} ({kind}) is registered and {}: mail from it reads like {domain}",
                if hosts.is_empty() {
                    "resolves"
                } else {
                    "receives mail"
                }
            ),
        )
        .evidence(format!("engine: {code}"));
        for h in &hosts {
            f = f.evidence(format!("{candidate} MX {h}"));
        }
        for a in &addresses {
            f = f.evidence(format!("{candidate} A {a}"));
        }
        report.findings.push(f);
        report.registered.push(Registered {
            domain: candidate,
            kind,
            engine_code: code,
            mx: hosts,
            addresses,
        });
    }
    if !report.unknown.is_empty() {
        report.findings.push(Finding::new(
            "lookalike.unknown",
            Check::Lookalike,
            Severity::Warning,
            "unspoof lookalike rules",
            format!(
                "{} lookalike candidates could not be looked up: {}",
                report.unknown.len(),
                report.unknown.join(", ")
            ),
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_lookalikes_the_engine_flags() {
        let c = candidates("paypal.com");
        let names: Vec<&str> = c.iter().map(|(d, _)| d.as_str()).collect();
        for expected in [
            "paypal.net",
            "paypa1.com",
            "papal.com",
            "pyapal.com",
            "paypall.com",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(c.iter().any(|(_, k)| *k == "homoglyph"), "{names:?}");
        assert!(!names.contains(&"paypal.com"));
        let m = candidates("microsoft.com");
        assert!(m.iter().any(|(d, _)| d == "rnicrosoft.com"), "{m:?}");
        assert!(candidates("com").is_empty());
    }
}
