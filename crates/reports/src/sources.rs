//! The picture behind `unspoof dmarc sources`: from the stored report rows of a domain, every
//! sending source with its volume and aligned pass rates, classified, and the same numbers per
//! reporter, per day and per subdomain. Pure computation over rows; the reverse names come from
//! the caller (it owns the DNS).
//!
//! Classes, per report row (a source's class is the one most of its messages have):
//! - **ours (aligned)**: DMARC passed (aligned SPF or DKIM) and it is not forwarded mail.
//! - **forwarded**: an aligned DKIM pass while SPF authorised this IP for no domain at all (the
//!   mail left its sender and was passed on), or the reporter says so (`forwarded`,
//!   `trusted_forwarder`, `mailing_list`, or an `arc=pass` comment: a trusted ARC path).
//! - **legitimate but misaligned**: DMARC failed, but SPF or DKIM passed for some other domain:
//!   a service sending for you without alignment (fix its setup), or a forger with a domain of
//!   its own (look at the DKIM domains).
//! - **spoofing**: DMARC failed and nothing authenticated.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::Serialize;
use unspoof_store::dmarc::{DmarcRow, DmarcStoredRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Ours,
    Forwarded,
    Misaligned,
    Spoofing,
}

impl Class {
    /// In plain words, for the human report.
    pub fn words(self) -> &'static str {
        match self {
            Class::Ours => "ours (aligned)",
            Class::Forwarded => "forwarded",
            Class::Misaligned => "legitimate but misaligned",
            Class::Spoofing => "spoofing",
        }
    }
}

/// The class of one report row (see the module documentation).
pub fn classify(row: &DmarcRow) -> Class {
    let dkim_aligned = row.dmarc_dkim == "pass";
    let spf_aligned = row.dmarc_spf == "pass";
    let any_spf_pass = row.spf.iter().any(|s| s.result == "pass");
    let any_dkim_pass = row.dkim.iter().any(|d| d.result == "pass");
    let reporter_says_forwarded = row.reasons.iter().any(|r| {
        matches!(
            r.kind.as_str(),
            "forwarded" | "trusted_forwarder" | "mailing_list"
        ) || r
            .comment
            .as_deref()
            .is_some_and(|c| c.to_ascii_lowercase().contains("arc=pass"))
    });
    if reporter_says_forwarded || (dkim_aligned && !spf_aligned && !any_spf_pass) {
        Class::Forwarded
    } else if dkim_aligned || spf_aligned {
        Class::Ours
    } else if any_spf_pass || any_dkim_pass {
        Class::Misaligned
    } else {
        Class::Spoofing
    }
}

/// Messages by class, and the aligned pass counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub messages: u64,
    pub dmarc_pass: u64,
    pub dkim_aligned_pass: u64,
    pub spf_aligned_pass: u64,
    pub ours: u64,
    pub forwarded: u64,
    pub misaligned: u64,
    pub spoofing: u64,
}

impl Tally {
    fn add(&mut self, row: &DmarcRow, class: Class) {
        let n = row.count;
        self.messages += n;
        let dkim = row.dmarc_dkim == "pass";
        let spf = row.dmarc_spf == "pass";
        if dkim || spf {
            self.dmarc_pass += n;
        }
        if dkim {
            self.dkim_aligned_pass += n;
        }
        if spf {
            self.spf_aligned_pass += n;
        }
        match class {
            Class::Ours => self.ours += n,
            Class::Forwarded => self.forwarded += n,
            Class::Misaligned => self.misaligned += n,
            Class::Spoofing => self.spoofing += n,
        }
    }

    /// The class with the most messages.
    pub fn main_class(&self) -> Class {
        [
            (self.ours, Class::Ours),
            (self.forwarded, Class::Forwarded),
            (self.misaligned, Class::Misaligned),
            (self.spoofing, Class::Spoofing),
        ]
        .into_iter()
        .max_by_key(|(n, c)| (*n, std::cmp::Reverse(*c)))
        .map(|(_, c)| c)
        .unwrap_or(Class::Spoofing)
    }

    /// `part` of the messages in percent, one decimal.
    pub fn percent(&self, part: u64) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            (part as f64 * 1000.0 / self.messages as f64).round() / 10.0
        }
    }
}

/// One sending source (an IP address).
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub ip: Option<IpAddr>,
    pub reverse_name: Option<String>,
    /// The registrable domain of the reverse name, else of the DKIM domains that passed.
    pub organisation: Option<String>,
    pub class: Class,
    #[serde(flatten)]
    pub tally: Tally,
    /// DKIM `d=` domains seen, each with its selectors and how many messages passed.
    pub dkim: Vec<DkimSeen>,
    /// Header From domains it sent as.
    pub header_from: Vec<String>,
    pub reporters: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DkimSeen {
    pub domain: String,
    pub selectors: Vec<String>,
    pub pass: u64,
    pub fail: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Keyed {
    pub key: String,
    #[serde(flatten)]
    pub tally: Tally,
}

/// One header From domain: the domain itself or a subdomain.
#[derive(Debug, Clone, Serialize)]
pub struct Subdomain {
    pub name: String,
    #[serde(flatten)]
    pub tally: Tally,
    /// Nothing sent as it passed DMARC: only forgers use it.
    pub only_forged: bool,
}

/// The whole picture for one domain and window.
#[derive(Debug, Clone, Serialize)]
pub struct Picture {
    pub domain: String,
    pub since: i64,
    pub until: i64,
    pub reports: usize,
    pub totals: Tally,
    pub sources: Vec<Source>,
    pub reporters: Vec<Keyed>,
    /// Per UTC day of the reports' date ranges (their start), `YYYY-MM-DD` keys from the caller.
    pub days: Vec<Keyed>,
    pub subdomains: Vec<Subdomain>,
}

/// One source while the rows are read: tally, DKIM domains, From domains, reporters.
type Collecting = (Tally, BTreeMap<String, DkimSeen>, Vec<String>, Vec<String>);

/// Builds the picture. `reverse` names an IP (or not); `day_name` turns a Unix day number into
/// its display key.
pub fn picture(
    domain: &str,
    since: i64,
    until: i64,
    rows: &[DmarcStoredRow],
    reverse: &dyn Fn(IpAddr) -> Option<String>,
    day_name: &dyn Fn(i64) -> String,
) -> Picture {
    let mut totals = Tally::default();
    let mut sources: HashMap<Option<IpAddr>, Collecting> = HashMap::new();
    let mut reporters: BTreeMap<String, Tally> = BTreeMap::new();
    let mut days: BTreeMap<i64, Tally> = BTreeMap::new();
    let mut subs: BTreeMap<String, Tally> = BTreeMap::new();
    let mut reports = std::collections::HashSet::new();
    for r in rows {
        let class = classify(&r.row);
        reports.insert(r.report.as_str());
        totals.add(&r.row, class);
        let s = sources.entry(r.row.source_ip).or_default();
        s.0.add(&r.row, class);
        for d in &r.row.dkim {
            let seen = s.1.entry(d.domain.clone()).or_insert_with(|| DkimSeen {
                domain: d.domain.clone(),
                ..Default::default()
            });
            if !d.selector.is_empty() && !seen.selectors.contains(&d.selector) {
                seen.selectors.push(d.selector.clone());
            }
            if d.result == "pass" {
                seen.pass += r.row.count;
            } else {
                seen.fail += r.row.count;
            }
        }
        if !s.2.contains(&r.row.header_from) {
            s.2.push(r.row.header_from.clone());
        }
        if !s.3.contains(&r.reporter) {
            s.3.push(r.reporter.clone());
        }
        reporters
            .entry(r.reporter.clone())
            .or_default()
            .add(&r.row, class);
        days.entry(crate::day_of(r.begin_at))
            .or_default()
            .add(&r.row, class);
        subs.entry(r.row.header_from.clone())
            .or_default()
            .add(&r.row, class);
    }
    let mut sources: Vec<Source> = sources
        .into_iter()
        .map(|(ip, (tally, dkim, header_from, reporters))| {
            let reverse_name = ip.and_then(reverse);
            let dkim: Vec<DkimSeen> = dkim.into_values().collect();
            let organisation = reverse_name
                .as_deref()
                .and_then(unspoof_engine::domain::registrable)
                .or_else(|| {
                    dkim.iter()
                        .filter(|d| d.pass > 0)
                        .find_map(|d| unspoof_engine::domain::registrable(&d.domain))
                });
            Source {
                ip,
                reverse_name,
                organisation,
                class: tally.main_class(),
                tally,
                dkim,
                header_from,
                reporters,
            }
        })
        .collect();
    sources.sort_by(|a, b| {
        b.tally
            .messages
            .cmp(&a.tally.messages)
            .then_with(|| a.ip.cmp(&b.ip))
    });
    let keyed = |m: BTreeMap<String, Tally>| {
        let mut v: Vec<Keyed> = m
            .into_iter()
            .map(|(key, tally)| Keyed { key, tally })
            .collect();
        v.sort_by(|a, b| {
            b.tally
                .messages
                .cmp(&a.tally.messages)
                .then(a.key.cmp(&b.key))
        });
        v
    };
    Picture {
        domain: domain.to_string(),
        since,
        until,
        reports: reports.len(),
        totals,
        sources,
        reporters: keyed(reporters),
        days: days
            .into_iter()
            .map(|(d, tally)| Keyed {
                key: day_name(d),
                tally,
            })
            .collect(),
        subdomains: subs
            .into_iter()
            .map(|(name, tally)| Subdomain {
                only_forged: tally.dmarc_pass == 0,
                name,
                tally,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unspoof_store::dmarc::{DmarcDkim, DmarcReason, DmarcSpf};

    fn row(dkim_al: &str, spf_al: &str, dkim: &[&str], spf: &[&str]) -> DmarcRow {
        DmarcRow {
            count: 1,
            dmarc_dkim: dkim_al.into(),
            dmarc_spf: spf_al.into(),
            dkim: dkim
                .iter()
                .map(|r| DmarcDkim {
                    domain: "x.example".into(),
                    selector: "s".into(),
                    result: r.to_string(),
                })
                .collect(),
            spf: spf
                .iter()
                .map(|r| DmarcSpf {
                    domain: "x.example".into(),
                    scope: "mfrom".into(),
                    result: r.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn classes_in_plain_words() {
        assert_eq!(
            classify(&row("pass", "pass", &["pass"], &["pass"])),
            Class::Ours
        );
        // An ESP: DKIM aligned, SPF passes for its own bounce domain.
        assert_eq!(
            classify(&row("pass", "fail", &["pass"], &["pass"])),
            Class::Ours
        );
        // Forwarded: DKIM survived, SPF authorised this IP for nothing.
        assert_eq!(
            classify(&row("pass", "fail", &["pass"], &["fail"])),
            Class::Forwarded
        );
        assert_eq!(
            classify(&row("fail", "fail", &["pass"], &["none"])),
            Class::Misaligned
        );
        assert_eq!(
            classify(&row("fail", "fail", &["fail"], &["softfail"])),
            Class::Spoofing
        );
        let mut arc = row("fail", "fail", &["fail"], &["fail"]);
        arc.reasons.push(DmarcReason {
            kind: "local_policy".into(),
            comment: Some("arc=pass".into()),
        });
        assert_eq!(classify(&arc), Class::Forwarded);
    }
}
